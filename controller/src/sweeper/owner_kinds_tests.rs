//! The sweeper's decisions with the daemon's owner checker, for every owner kind (issue 16).

#![allow(clippy::unwrap_used)]

/// The sweeper's decision over virtual time with the daemon's checker, for each owner
/// kind: none is closed while its owner lives; each is closed once it is gone.
#[tokio::test(start_paused = true)]
async fn the_sweeper_closes_runs_of_every_owner_kind_only_once_their_owner_is_gone() {
    use crate::liveness::{
        owner_of, Checker, ContainerWatch, Liveness, Owners, ProcLiveness, WatchWorker,
    };
    use crate::sweeper::{decide, Reason};
    use crd::OwnerKind;
    use std::sync::Arc;
    let sim = crate::swarm::sim::SimSwarm::new(crate::swarm::sim::SimConfig::default());
    let step = sim.run_container("ci-step");
    let watch = ContainerWatch::new();
    let owners = Owners::new(ProcLiveness::new().unwrap(), watch.clone());
    let stop = tokio_util::sync::CancellationToken::new();
    let mut workers = crate::runtime::workers::Supervisor::new(
        stop.clone(),
        crate::runtime::workers::DEFAULT_POLICY,
        None,
    );
    workers.spawn(WatchWorker::new(Arc::new(sim.clone()), watch.clone()));
    // The creating process of every run: a child that exits at once.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let creator = owner_of(child.id()).unwrap();
    child.wait().unwrap();
    let run = |name: &str, kind: OwnerKind, ttl: Option<&str>| {
        let mut spec = serde_json::json!({
            "recipe": "app", "version": "1.0.0",
            "owner": creator.clone().with_kind(kind),
        });
        if let Some(ttl) = ttl {
            spec["lease"] = serde_json::json!({ "ttl": ttl });
        }
        let mut r = crd::Run::new(name, serde_json::from_value(spec).unwrap());
        r.metadata.creation_timestamp_ms = 1_000;
        r.status.phase = crd::RunPhase::Running;
        r
    };
    let runs = [
        run("by-pid", OwnerKind::Pid, None),
        run("by-container", OwnerKind::Container(step.clone()), None),
        run("by-lease", OwnerKind::Lease, Some("30s")),
    ];
    let closed = |now_ms: u64| {
        let d = decide(
            &[],
            &runs,
            now_ms,
            &|o| owners.check(o),
            &Default::default(),
        );
        d.close
            .iter()
            .map(|c| (c.run.clone(), c.reason))
            .collect::<Vec<_>>()
    };
    // The creator is gone: the pid-owned run is closed; the container's is not known yet.
    assert_eq!(closed(2_000), [("by-pid".to_string(), Reason::OwnerDead)]);
    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    assert_eq!(watch.check(&step), Liveness::Alive);
    // 29 s in, no heartbeat: the lease still holds, the container still runs.
    assert_eq!(closed(30_000), [("by-pid".to_string(), Reason::OwnerDead)]);
    sim.kill_container(&step);
    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    assert_eq!(
        closed(30_000),
        [
            ("by-pid".to_string(), Reason::OwnerDead),
            ("by-container".to_string(), Reason::OwnerDead),
        ]
    );
    // 30 s after creation without a heartbeat: the lease expired.
    assert_eq!(
        closed(31_000).last().unwrap(),
        &("by-lease".to_string(), Reason::LeaseExpired)
    );
    stop.cancel();
    workers.join().await;
}
