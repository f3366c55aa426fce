//! Sweeper safety on the simulated swarm (issue 7, item 6): the real sweep pass, against random
//! worlds of objects of every kind, never removes an object that is not hearth's to remove and
//! removes everything that is.
//!
//! Each case builds a world on a fresh simulated swarm and store (virtual time): recorded runs
//! whose owner is alive or dead, whose lease is absent, valid or expired, some already finished;
//! and services (with their task containers), networks, volumes, secrets and configs, each of
//! one class — foreign (no hearth label, some in a stack namespace nobody recorded), only some
//! of hearth's labels, another hearth instance's, this instance's of a recorded run, adopted (no
//! hearth label, in a recorded run's stack namespace), this instance's of an unrecorded run (old,
//! or younger than the creation guard), a warm app's. The swarm has two nodes: tasks run on
//! both, and every other volume is on the second node, which the sweeper reaches through a
//! node endpoint. One sweep pass runs with the daemon's scope (this instance's label) and must
//! report no failure. Then, from the simulated swarm's log of remove calls and its
//! listings:
//!
//! - every remove call named an object hearth must remove (or a task container of such a
//!   service), nothing else;
//! - every object hearth must remove is gone (with its service's containers), every other
//!   object is still there;
//! - every recorded run that was still open and whose owner died or lease expired is closed.
//!
//! "Hearth's to remove" is the spec, not the decision's code: this instance's object of a run
//! that is over (finished, owner dead, lease expired) or of a run recorded nowhere and older
//! than the creation guard; or any object in the stack namespace hearth assigned to a recorded
//! run that is over.
//!
//! `PROPTEST_CASES` sets the number of cases (default 256, a few seconds; the long run in
//! docs/RELIABILITY.md uses 20000).
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use crd::names::labels as keys;
use crd::run::LeaseSpec;
use crd::{Owner, Run, RunPhase, RunSpec};
use proptest::prelude::*;
use state::{Clock, Store};

use crate::liveness::{Checker, Liveness};
use crate::stack::NAMESPACE_LABEL;
use crate::swarm::sim::{SimConfig, SimSwarm};
use crate::swarm::{spec, LabelFilter, ObjectKind, Swarm};
use crate::sweeper::{Config, Sweeper};
use crate::warmapp::INSTANCE_LABEL;

/// This daemon's instance.
const OURS: &str = "inst-ours";
/// The label every swarm task container carries, naming its service.
const SERVICE_ID: &str = "com.docker.swarm.service.id";

/// The simulated swarm's wall clock, so creation times and lease expiry agree.
#[derive(Debug)]
struct SimClock(tokio::time::Instant);

impl Clock for SimClock {
    fn now_ms(&self) -> u64 {
        1_800_000_000_000 + u64::try_from(self.0.elapsed().as_millis()).unwrap()
    }
}

/// Owners whose PID is in the set are dead.
#[derive(Debug)]
struct DeadPids(BTreeSet<u32>);

impl Checker for DeadPids {
    fn check(&self, owner: &Owner) -> Liveness {
        if self.0.contains(&owner.pid) {
            Liveness::Dead
        } else {
            Liveness::Alive
        }
    }
}

/// A recorded run.
#[derive(Debug, Clone)]
struct RunShape {
    /// Its owner is dead.
    dead: bool,
    /// 0: no lease; 1: a valid lease; 2: an expired lease.
    lease: u8,
    /// Already finished (Succeeded) before the sweep.
    finished: bool,
}

impl RunShape {
    /// Whether the run is over: its objects are hearth's to remove.
    fn over(&self) -> bool {
        self.finished || self.dead || self.lease == 2
    }
}

/// Whose an object is.
#[derive(Debug, Clone, Copy)]
enum Class {
    /// No hearth label; with `namespaced`, in a stack namespace nobody recorded.
    Foreign { namespaced: bool },
    /// Some of hearth's labels naming recorded run `run`, but not `managed-by=hearth`, and not
    /// in a namespace hearth assigned (`variant` picks which labels).
    Partial { run: usize, variant: u8 },
    /// Every label hearth puts on a run's object, of another instance (whose runs are not
    /// recorded here).
    OtherInstance,
    /// This instance's object of recorded run `run`.
    Ours { run: usize },
    /// No hearth label, in recorded run `run`'s stack namespace (a stack the harness deployed).
    Adopted { run: usize },
    /// This instance's object of a run recorded nowhere; `young`: created just before the sweep.
    Unrecorded { young: bool },
    /// This instance's warm app's object.
    WarmApp,
}

fn run_name(i: usize) -> String {
    format!("app-run{i}")
}

fn run_shape() -> impl Strategy<Value = RunShape> {
    (any::<bool>(), 0u8..3, prop::bool::weighted(0.2)).prop_map(|(dead, lease, finished)| {
        RunShape {
            dead,
            lease,
            finished,
        }
    })
}

fn kind() -> impl Strategy<Value = ObjectKind> {
    prop_oneof![
        Just(ObjectKind::Service),
        Just(ObjectKind::Network),
        Just(ObjectKind::Volume),
        Just(ObjectKind::Secret),
        Just(ObjectKind::Config),
    ]
}

fn class(runs: usize) -> impl Strategy<Value = Class> {
    prop_oneof![
        any::<bool>().prop_map(|namespaced| Class::Foreign { namespaced }),
        (0..runs, 0u8..5).prop_map(|(run, variant)| Class::Partial { run, variant }),
        Just(Class::OtherInstance),
        (0..runs).prop_map(|run| Class::Ours { run }),
        (0..runs).prop_map(|run| Class::Adopted { run }),
        any::<bool>().prop_map(|young| Class::Unrecorded { young }),
        Just(Class::WarmApp),
    ]
}

fn world() -> impl Strategy<Value = (Vec<RunShape>, Vec<(ObjectKind, Class)>)> {
    (1usize..5).prop_flat_map(|n| {
        (
            prop::collection::vec(run_shape(), n),
            prop::collection::vec((kind(), class(n)), 1..28),
        )
    })
}

/// The labels of object `j` of `class`, and whether hearth must remove it.
fn labels_of(j: usize, class: Class, runs: &[RunShape]) -> (BTreeMap<String, String>, bool) {
    let mut l = BTreeMap::from([("team".to_string(), "payments".to_string())]);
    let mut set = |k: &str, v: String| {
        l.insert(k.to_string(), v);
    };
    let ours = |set: &mut dyn FnMut(&str, String), run: &str| {
        set(keys::MANAGED_BY, keys::MANAGED_BY_VALUE.into());
        set(INSTANCE_LABEL, OURS.into());
        set(keys::PARENT_RUN, run.into());
        set(NAMESPACE_LABEL, format!("hr-{run}"));
    };
    let remove = match class {
        Class::Foreign { namespaced } => {
            if namespaced {
                set(NAMESPACE_LABEL, format!("shop{}", j % 3));
            }
            false
        }
        Class::Partial { run, variant } => {
            let r = run_name(run);
            match variant {
                0 => set(keys::PARENT_RUN, r),
                1 => {
                    set(keys::KIND, "Run".into());
                    set(keys::NAME, r);
                }
                2 => {
                    set(keys::MANAGED_BY, "someone-else".into());
                    set(keys::PARENT_RUN, r);
                    set(NAMESPACE_LABEL, "shop0".into());
                }
                3 => {
                    // The value is case-sensitive.
                    set(keys::MANAGED_BY, "Hearth".into());
                    set(INSTANCE_LABEL, OURS.into());
                    set(keys::PARENT_RUN, r);
                }
                _ => {
                    // A run-stack namespace of a run recorded nowhere, without managed-by.
                    set(INSTANCE_LABEL, OURS.into());
                    set(keys::PARENT_RUN, format!("ghost{j}"));
                    set(NAMESPACE_LABEL, format!("hr-ghost{j}"));
                }
            }
            false
        }
        Class::OtherInstance => {
            set(keys::MANAGED_BY, keys::MANAGED_BY_VALUE.into());
            set(INSTANCE_LABEL, "inst-other".into());
            set(keys::PARENT_RUN, format!("other{j}"));
            set(NAMESPACE_LABEL, format!("hr-other{j}"));
            false
        }
        Class::Ours { run } => {
            ours(&mut set, &run_name(run));
            runs[run].over()
        }
        Class::Adopted { run } => {
            set(NAMESPACE_LABEL, format!("hr-{}", run_name(run)));
            runs[run].over()
        }
        Class::Unrecorded { young } => {
            ours(&mut set, &format!("ghost{j}"));
            !young
        }
        Class::WarmApp => {
            set(keys::MANAGED_BY, keys::MANAGED_BY_VALUE.into());
            set(INSTANCE_LABEL, OURS.into());
            set(keys::KIND, "WarmApp".into());
            set(keys::NAME, "web".into());
            set(NAMESPACE_LABEL, "hw-web".into());
            false
        }
    };
    (l, remove)
}

/// Creates object `j` and returns its identity (ID; a volume's name).
/// Creates object `j`; volumes of odd `j` on the second node (`sim` is its view then).
async fn create(sim: &SimSwarm, j: usize, kind: ObjectKind, labels: spec::Map) -> String {
    let second = sim.node_view(&sim.node_ids()[1]);
    let sim = if kind == ObjectKind::Volume && j % 2 == 1 {
        &second
    } else {
        sim
    };
    match kind {
        ObjectKind::Service => sim
            .create_service(&spec::ServiceSpec {
                name: Some(format!("svc{j}")),
                labels: Some(labels),
                task_template: Some(spec::TaskSpec {
                    container_spec: Some(spec::ContainerSpec {
                        image: Some("hearth-fixture/webapp:1.0.0".into()),
                        args: Some(vec!["/bin/serve".into()]),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                mode: Some(spec::ServiceMode::replicated(Some(1))),
                ..Default::default()
            })
            .await
            .unwrap(),
        ObjectKind::Network => sim
            .create_network(&spec::NetworkSpec {
                name: format!("net{j}"),
                driver: Some("overlay".into()),
                labels: Some(labels),
                ..Default::default()
            })
            .await
            .unwrap(),
        ObjectKind::Volume => {
            // A volume's identity is its name (the sweeper removes it by name).
            sim.create_volume(&spec::VolumeSpec {
                name: format!("vol{j}"),
                labels: Some(labels),
                ..Default::default()
            })
            .await
            .unwrap();
            format!("vol{j}")
        }
        ObjectKind::Secret => sim
            .create_secret(&spec::SecretSpec {
                name: format!("sec{j}"),
                labels: Some(labels),
                data: Some(spec::base64_encode(b"s3cret")),
                ..Default::default()
            })
            .await
            .unwrap(),
        _ => sim
            .create_config(&spec::ConfigSpec {
                name: format!("cfg{j}"),
                labels: Some(labels),
                data: Some(spec::base64_encode(b"conf")),
                ..Default::default()
            })
            .await
            .unwrap(),
    }
}

/// Every object in the swarm: (kind, identity) → its name. Containers with their service ID.
async fn inventory(
    sim: &SimSwarm,
) -> (
    BTreeMap<(ObjectKind, String), String>,
    BTreeMap<String, String>,
) {
    let all = LabelFilter::all();
    let mut out = BTreeMap::new();
    let second = sim.node_view(&sim.node_ids()[1]);
    for s in sim.list_services(&all).await.unwrap() {
        out.insert((ObjectKind::Service, s.meta.id), s.meta.name);
    }
    for n in sim.list_networks(&all).await.unwrap() {
        out.insert((ObjectKind::Network, n.id), n.name);
    }
    // Volume names are unique across both nodes (`vol{j}`).
    for node in [sim, &second] {
        for v in node.list_volumes(&all).await.unwrap() {
            out.insert((ObjectKind::Volume, v.name.clone()), v.name);
        }
    }
    for s in sim.list_secrets(&all).await.unwrap() {
        out.insert((ObjectKind::Secret, s.meta.id), s.meta.name);
    }
    for c in sim.list_configs(&all).await.unwrap() {
        out.insert((ObjectKind::Config, c.meta.id), c.meta.name);
    }
    let mut containers = BTreeMap::new();
    for node in [sim, &second] {
        containers.extend(
            node.list_containers(&all)
                .await
                .unwrap()
                .into_iter()
                .map(|c| {
                    let service = c.labels.get(SERVICE_ID).cloned().unwrap_or_default();
                    (c.id, service)
                }),
        );
    }
    (out, containers)
}

/// One case: build the world, sweep once, check. Returns a description of the first
/// violation.
async fn case(runs: Vec<RunShape>, objects: Vec<(ObjectKind, Class)>) -> Result<(), String> {
    // Two nodes: tasks run on both; odd volumes are on the second, reached via an endpoint.
    let sim = SimSwarm::with_nodes(SimConfig::default(), 2);
    let clock: Arc<dyn Clock> = Arc::new(SimClock(tokio::time::Instant::now()));
    let store = Store::with_engine(
        Arc::new(state::MemoryEngine::new()),
        state::Config {
            clock: clock.clone(),
            ..state::Config::default()
        },
    )
    .await
    .unwrap();
    let mut dead = BTreeSet::new();
    for (i, shape) in runs.iter().enumerate() {
        let pid = 1000 + u32::try_from(i).unwrap();
        if shape.dead {
            dead.insert(pid);
        }
        let lease = match shape.lease {
            0 => None,
            1 => Some(LeaseSpec {
                ttl: Duration::from_secs(3600),
            }),
            _ => Some(LeaseSpec {
                ttl: Duration::from_secs(10),
            }),
        };
        let run = Run::new(
            run_name(i),
            RunSpec {
                recipe: "app".into(),
                version: "1.0.0".into(),
                git_ref: None,
                owner: Owner {
                    kind: crd::OwnerKind::Pid,
                    pid,
                    process_start_time: 7,
                    host: "ci-host".into(),
                    boot_id: "boot-1".into(),
                },
                lease,
                slot_pool: None,
                deps: vec![],
                required_tiers: vec![],
                deploy: true,
                finish: false,
                failure: None,
                content: None,
                target: None,
            },
        );
        let mut run = store.create(&run).await.unwrap();
        run.status.phase = if shape.finished {
            RunPhase::Succeeded
        } else {
            RunPhase::Running
        };
        run.status.stack_name = Some(format!("hr-{}", run_name(i)));
        store.update_status(&run).await.unwrap();
    }
    // Old objects, then 60 s (past the creation guard and the short lease), then young ones.
    let mut must_remove: BTreeSet<(ObjectKind, String)> = BTreeSet::new();
    let mut must_stay: BTreeSet<(ObjectKind, String)> = BTreeSet::new();
    let mut young = Vec::new();
    for (j, (kind, class)) in objects.iter().enumerate() {
        if matches!(class, Class::Unrecorded { young: true }) {
            young.push(j);
            continue;
        }
        let (labels, remove) = labels_of(j, *class, &runs);
        let id = create(&sim, j, *kind, labels).await;
        if remove {
            must_remove.insert((*kind, id));
        } else {
            must_stay.insert((*kind, id));
        }
    }
    tokio::time::sleep(Duration::from_secs(60)).await;
    for j in young {
        let (kind, class) = objects[j];
        let (labels, remove) = labels_of(j, class, &runs);
        let id = create(&sim, j, kind, labels).await;
        if remove {
            must_remove.insert((kind, id));
        } else {
            must_stay.insert((kind, id));
        }
    }
    let (before, containers_before) = inventory(&sim).await;
    let removable_services: BTreeSet<&String> = must_remove
        .iter()
        .filter(|(k, _)| *k == ObjectKind::Service)
        .map(|(_, id)| id)
        .collect();

    let sweeper = Sweeper::new(
        Arc::new(sim.clone()),
        store.clone(),
        Arc::new(DeadPids(dead)),
        clock,
        Config {
            scope: LabelFilter::eq(INSTANCE_LABEL, OURS),
            nodes: {
                let mut nodes = crate::stack::NodeDaemons::new();
                let second = sim.node_ids()[1].clone();
                let view = Arc::new(sim.node_view(&second));
                nodes.add_swarm(second, "sim://second", view);
                nodes
            },
            ..Config::default()
        },
    );
    // The run reconciler closes the runs the sweeper marks (as in `hearth serve`).
    let executor = crate::runs::Runs::new(
        store.clone(),
        Arc::new(sim.clone()),
        None,
        Arc::new(state::SystemClock),
        crate::runs::Config::new(crd::names::BaseDomain::parse("ci.test").unwrap()),
    )
    .with_sweeper(sweeper.clone());
    let stop = crate::runtime::Shutdown::new();
    tokio::spawn(
        crate::runs::reconcile::controller(executor, crate::runs::reconcile::config())
            .run(stop.clone()),
    );
    sim.clear_calls();
    let report = sweeper
        .sweep()
        .await
        .map_err(|e| format!("sweep failed: {e}"))?;
    if !report.failures.is_empty() {
        return Err(format!("the pass failed: {:?}", report.failures));
    }

    // 1. Every remove call named an object hearth must remove.
    for (kind, target) in sim.removals() {
        let allowed = if kind == ObjectKind::Container {
            containers_before
                .get(&target)
                .is_some_and(|service| removable_services.contains(service))
        } else {
            must_remove.contains(&(kind, target.clone()))
                || must_remove
                    .iter()
                    .any(|(k, id)| *k == kind && before.get(&(*k, id.clone())) == Some(&target))
        };
        if !allowed {
            let name = before
                .get(&(kind, target.clone()))
                .cloned()
                .unwrap_or_default();
            return Err(format!(
                "removed {kind} {target} ({name}), which is not hearth's to remove"
            ));
        }
    }
    // 2. What must go is gone; what must stay is there.
    let (after, containers_after) = inventory(&sim).await;
    for key in &must_remove {
        if after.contains_key(key) {
            return Err(format!(
                "{} {} ({}) should have been removed; report: {report:?}",
                key.0, key.1, before[key]
            ));
        }
    }
    for key in &must_stay {
        if !after.contains_key(key) {
            return Err(format!("{} {} ({}) was removed", key.0, key.1, before[key]));
        }
    }
    for (container, service) in &containers_before {
        let gone = !containers_after.contains_key(container);
        if gone != removable_services.contains(service) && !service.is_empty() {
            return Err(format!(
                "container {container} of service {service}: gone={gone}, but its service \
                 should{} be removed",
                if gone { " not" } else { "" }
            ));
        }
    }
    // 3. Open runs whose owner died or lease expired are closed.
    for (i, shape) in runs.iter().enumerate() {
        let run: Run = store.get(&run_name(i)).unwrap();
        let should_close = !shape.finished && (shape.dead || shape.lease == 2);
        if should_close && !run.status.phase.is_terminal() {
            return Err(format!(
                "{} was not closed: {:?}",
                run_name(i),
                run.status.phase
            ));
        }
        if !shape.over() && run.status.phase.is_terminal() {
            return Err(format!("{} was closed though alive", run_name(i)));
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn the_sweeper_removes_exactly_what_is_hearths_to_remove_and_never_anything_else(
        (runs, objects) in world()
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        let outcome = rt.block_on(case(runs, objects));
        prop_assert!(outcome.is_ok(), "{}", outcome.unwrap_err());
    }
}
