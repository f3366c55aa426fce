//! Image pruning in the nightly sweep: which dangling images go (pure) and removing them.
//!
//! [`plan`] decides: an image is removed only if it is dangling (no tag), matches the
//! configured label filter (`--nightly-prune-label KEY=VALUE`), and no service spec or
//! container (running or stopped: Docker refuses those too) names it. [`busy_reason`] decides
//! whether a deploy is in progress — a promotion under way, a warm app deploying, upgrading or
//! rolling back, a run deploying — in which case nothing is pruned: a deploy may be about to
//! start a container from an image that is dangling right now. [`prune`] is the thin adapter.
//!
//! # Caveats
//! The busy check runs right before the removals; a deploy that starts during them can still
//! race, but then Docker refuses to remove an image a container uses ([`swarm::Error::InUse`]),
//! which is reported, never a failure of the sweep.

use std::collections::BTreeSet;

use crd::{Run, RunPhase, WarmApp, WarmAppPhase};
use serde::{Deserialize, Serialize};

use crate::swarm::{self, Container, Image, ImageFilter, LabelFilter, Service, Swarm};

/// What [`plan`] decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Images to remove.
    pub remove: Vec<Image>,
    /// Dangling images kept because a service or container uses them (ID).
    pub in_use: Vec<String>,
}

/// Decides which of `images` to remove (see the module docs). `images` may hold any images:
/// tagged ones and those not matching `filter` are never chosen.
pub fn plan(
    images: &[Image],
    services: &[Service],
    containers: &[Container],
    filter: &LabelFilter,
) -> Plan {
    let running: BTreeSet<&str> = containers
        .iter()
        .filter_map(|c| c.image_id.as_deref())
        .collect();
    let mut out = Plan::default();
    for image in images {
        if !image.is_dangling() || !filter.matches(&image.labels) {
            continue;
        }
        let used_by_container = running.contains(image.id.as_str());
        let used_by_service = services
            .iter()
            .filter_map(|s| s.image.as_deref())
            .any(|r| image.is_named_by(r));
        if used_by_container || used_by_service {
            out.in_use.push(image.id.clone());
        } else {
            out.remove.push(image.clone());
        }
    }
    out
}

/// Why pruning must wait, if a deploy is in progress: `promotions` (a promotion is under
/// way), a warm app `Deploying`, `Upgrading` or `RollingBack`, a run `Deploying`.
pub fn busy_reason(promotions: bool, apps: &[WarmApp], runs: &[Run]) -> Option<String> {
    if promotions {
        return Some("a promotion is under way".into());
    }
    let deploying_apps: Vec<&str> = apps
        .iter()
        .filter(|a| {
            matches!(
                a.status.phase,
                WarmAppPhase::Deploying | WarmAppPhase::Upgrading | WarmAppPhase::RollingBack
            )
        })
        .map(|a| a.metadata.name.as_str())
        .collect();
    if !deploying_apps.is_empty() {
        return Some(format!(
            "warm app(s) {} are deploying",
            deploying_apps.join(", ")
        ));
    }
    let deploying_runs: Vec<&str> = runs
        .iter()
        .filter(|r| r.status.phase == RunPhase::Deploying)
        .map(|r| r.metadata.name.as_str())
        .collect();
    if !deploying_runs.is_empty() {
        return Some(format!(
            "run(s) {} are deploying",
            deploying_runs.join(", ")
        ));
    }
    None
}

/// What [`prune`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// IDs of the images removed.
    pub pruned: Vec<String>,
    /// Bytes reclaimed (the removed images' sizes as Docker reports them).
    pub bytes_reclaimed: u64,
    /// Dangling images kept because something uses them (decided, or refused by Docker).
    pub in_use: Vec<String>,
    /// Removals that failed otherwise (`id: error`).
    pub failed: Vec<String>,
}

/// Lists dangling images matching `filter`, the services and containers, [`plan`]s, asks
/// `busy` right before removing, and removes the chosen images one by one.
///
/// # Errors
/// The list calls' errors ([`swarm::Error`]); `Ok(Err(reason))` when `busy` answered a
/// reason (nothing was removed).
pub async fn prune(
    swarm: &dyn Swarm,
    filter: &LabelFilter,
    busy: impl FnOnce() -> Option<String>,
) -> Result<Result<Report, String>, swarm::Error> {
    let images = swarm
        .list_images(&ImageFilter::dangling(filter.clone()))
        .await?;
    let services = swarm.list_services(&LabelFilter::all()).await?;
    let containers = swarm.list_containers(&LabelFilter::all()).await?;
    let plan = plan(&images, &services, &containers, filter);
    if let Some(reason) = busy() {
        return Ok(Err(reason));
    }
    let mut report = Report {
        in_use: plan.in_use,
        ..Report::default()
    };
    for image in plan.remove {
        match swarm.remove_image(&image.id).await {
            Ok(()) => {
                report.bytes_reclaimed = report.bytes_reclaimed.saturating_add(image.size);
                report.pruned.push(image.id);
            }
            // gone meanwhile: nothing reclaimed by us
            Err(e) if e.is_not_found() => {}
            Err(swarm::Error::InUse { .. }) => report.in_use.push(image.id),
            Err(e) => report.failed.push(format!("{}: {e}", image.id)),
        }
    }
    Ok(Ok(report))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::swarm::{ContainerState, Labels, Meta, ServiceMode};

    fn image(id: &str, tags: &[&str], labels: &[(&str, &str)]) -> Image {
        Image {
            id: id.into(),
            repo_tags: tags.iter().map(|t| t.to_string()).collect(),
            repo_digests: Vec::new(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            size: 100,
            created_at: None,
        }
    }

    fn service(image: &str) -> Service {
        Service {
            meta: Meta {
                id: "s".into(),
                name: "s".into(),
                version: 1,
                labels: Labels::new(),
                created_at: None,
                updated_at: None,
            },
            image: Some(image.into()),
            mode: ServiceMode::Replicated(1),
            volume_sources: Vec::new(),
            template_digest: None,
        }
    }

    fn container(image_id: &str) -> Container {
        Container {
            id: "c".into(),
            name: "c".into(),
            labels: Labels::new(),
            image_id: Some(image_id.into()),
            state: ContainerState::Exited,
            health: None,
            status: String::new(),
            created_at: None,
        }
    }

    const A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const C: &str = "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";
    const D: &str = "sha256:dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd";

    #[test]
    fn only_unused_dangling_images_matching_the_filter_are_removed() {
        let t = [("hearth.test", "1")];
        let images = [
            image(A, &[], &t),                // dangling, unused: goes
            image(B, &["<none>:<none>"], &t), // dangling, used by a stopped container
            image(C, &["app:1"], &t),         // tagged: stays
            image(D, &[], &[("other", "x")]), // not matching the filter
        ];
        let filter = LabelFilter::eq("hearth.test", "1");
        let p = plan(&images, &[], &[container(B)], &filter);
        assert_eq!(
            p.remove.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
            [A]
        );
        assert_eq!(p.in_use, [B]);
        // without a filter, D goes too
        let p = plan(&images, &[], &[container(B)], &LabelFilter::all());
        assert_eq!(
            p.remove.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
            [A, D]
        );
    }

    #[test]
    fn a_dangling_image_named_by_a_service_spec_is_kept() {
        let images = [image(A, &[], &[]), image(B, &[], &[])];
        let by_id = service(&A[7..19]);
        let by_digest = service(&format!("app:1@{B}"));
        let p = plan(&images, &[by_id, by_digest], &[], &LabelFilter::all());
        assert!(p.remove.is_empty(), "{p:?}");
        assert_eq!(p.in_use, [A, B]);
    }

    fn test_labels() -> Labels {
        Labels::from([("hearth.test".to_string(), "1".to_string())])
    }

    /// A sim swarm with: `used` (dangling now, its tag moved on, but a service's running
    /// container still runs it), `unused` (dangling, labelled), `foreign` (dangling, no test
    /// label) and the two tagged successors.
    async fn images_on_sim() -> (crate::swarm::sim::SimSwarm, [String; 3]) {
        use crate::swarm::sim::{SimConfig, SimSwarm};
        use crate::swarm::spec;
        let sim = SimSwarm::new(SimConfig::default());
        let used = sim.add_image(Some("hearth-test-app:1"), test_labels(), 1_000);
        let service = spec::ServiceSpec {
            name: Some("hearth-test-app".into()),
            task_template: Some(spec::TaskSpec {
                container_spec: Some(spec::ContainerSpec {
                    image: Some("hearth-test-app:1".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        sim.create_service(&service).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_secs(10)).await;
        let running = sim.list_containers(&LabelFilter::all()).await.unwrap();
        assert_eq!(running[0].image_id.as_deref(), Some(used.as_str()));
        sim.add_image(Some("hearth-test-app:1"), test_labels(), 1_000);
        let unused = sim.add_image(Some("hearth-test-old:1"), test_labels(), 700);
        sim.add_image(Some("hearth-test-old:1"), test_labels(), 700);
        let foreign = sim.add_image(Some("someone-else:1"), Labels::new(), 500);
        sim.add_image(Some("someone-else:1"), Labels::new(), 500);
        (sim, [used, unused, foreign])
    }

    #[tokio::test(start_paused = true)]
    async fn the_sim_prunes_the_unused_labelled_dangling_image_only() {
        let (sim, [used, unused, foreign]) = images_on_sim().await;
        let filter = LabelFilter::eq("hearth.test", "1");
        let report = prune(&sim, &filter, || None).await.unwrap().unwrap();
        assert_eq!(report.pruned, std::slice::from_ref(&unused));
        assert_eq!(report.bytes_reclaimed, 700);
        assert_eq!(report.in_use, std::slice::from_ref(&used));
        assert!(report.failed.is_empty());
        let left: Vec<String> = sim
            .list_images(&ImageFilter::default())
            .await
            .unwrap()
            .into_iter()
            .map(|i| i.id)
            .collect();
        assert!(left.contains(&used) && left.contains(&foreign) && !left.contains(&unused));
        assert_eq!(left.len(), 5);
        // Docker itself refuses the used one: typed, retryable in-use
        let err = sim.remove_image(&used).await.unwrap_err();
        assert!(matches!(err, swarm::Error::InUse { .. }), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_deploy_in_progress_skips_the_prune_before_any_removal() {
        let (sim, _) = images_on_sim().await;
        sim.clear_calls();
        let skipped = prune(&sim, &LabelFilter::all(), || {
            Some("a promotion is under way".into())
        })
        .await
        .unwrap();
        assert_eq!(skipped, Err("a promotion is under way".to_string()));
        assert_eq!(sim.write_count(), 0, "{:?}", sim.calls());
        assert_eq!(
            sim.list_images(&ImageFilter::dangling(LabelFilter::all()))
                .await
                .unwrap()
                .len(),
            3
        );
    }

    #[test]
    fn any_deploy_in_progress_makes_pruning_wait() {
        assert_eq!(busy_reason(false, &[], &[]), None);
        assert!(busy_reason(true, &[], &[]).unwrap().contains("promotion"));
        let mut app: WarmApp = serde_json::from_value(serde_json::json!({
            "apiVersion": "hearth/v1", "kind": "WarmApp", "metadata": {"name": "shop"},
            "spec": {"recipe": "shop", "version": "1.0.0"}
        }))
        .unwrap();
        app.status.phase = WarmAppPhase::Ready;
        assert_eq!(busy_reason(false, std::slice::from_ref(&app), &[]), None);
        for phase in [
            WarmAppPhase::Deploying,
            WarmAppPhase::Upgrading,
            WarmAppPhase::RollingBack,
        ] {
            app.status.phase = phase;
            let reason = busy_reason(false, std::slice::from_ref(&app), &[]).unwrap();
            assert!(reason.contains("shop"), "{reason}");
        }
        let mut run: Run = serde_json::from_value(serde_json::json!({
            "apiVersion": "hearth/v1", "kind": "Run", "metadata": {"name": "r-1"},
            "spec": {"recipe": "shop", "version": "1.0.0", "owner": {
                "pid": 1, "processStartTime": 1, "host": "h", "bootId": "b"
            }}
        }))
        .unwrap();
        run.status.phase = RunPhase::Running;
        assert_eq!(busy_reason(false, &[], std::slice::from_ref(&run)), None);
        run.status.phase = RunPhase::Deploying;
        assert!(busy_reason(false, &[], &[run]).unwrap().contains("r-1"));
    }
}
