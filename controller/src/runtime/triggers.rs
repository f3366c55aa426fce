//! Triggers: what makes a key due — the change feed, Docker events, the periodic resync and relists.
//!
//! Each source is a task that sends keys into the runner's queue; the scheduler dedupes them.
//! Docker events are hints: service events carry no labels, so an event is mapped to its owner
//! by name alone ([`owner_of_swarm_name`]); when the stream ends (dockerd restarted, or it
//! dropped events) the task reopens it with backoff and relists everything.

use std::sync::Arc;

use crd::names::{labels, StackName, StackRole};
use crd::{Kind, Resource};
use futures::StreamExt;
use rand::rngs::StdRng;
use state::watch::{self, ChangeType};
use state::Store;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::backoff::{self, Backoff};
use super::{Config, Error, ObjectRef};
use crate::swarm::{LabelFilter, Swarm};

/// A request to reconcile `key` at `at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    /// The key.
    pub key: ObjectRef,
    /// When it is due.
    pub at: Instant,
    /// When it was asked for (see [`super::fresh_since`]).
    pub ticket: super::Ticket,
}

impl Trigger {
    /// `key`, due now.
    pub fn now(key: ObjectRef) -> Trigger {
        Trigger {
            key,
            at: Instant::now(),
            ticket: super::Ticket::next(),
        }
    }
}

/// The resource owning a swarm object named `name`, decided from the name alone.
///
/// Swarm names objects of stack `S` `S_<name>` (services, networks, volumes, secrets,
/// configs) and task containers `S_<service>.<slot>.<task id>`, so the stack is the part
/// before the first `_`. Stack names map to owners by role prefix: `hw-X`/`hp-X` → WarmApp X,
/// `hr-X` → Run X, `hs-P-I` → SlotPool P.
///
/// # Caveats
/// A per-run dep stack (`hd-<dep>-<hash>`) hashes its parent run, so its owner cannot be
/// recovered from the name: `None` (the resync covers it). Names hearth did not assign: `None`.
pub fn owner_of_swarm_name(name: &str) -> Option<ObjectRef> {
    let (stack, _) = name.trim_start_matches('/').split_once('_')?;
    owner_of_stack(stack)
}

/// The resource owning stack `stack` (see [`owner_of_swarm_name`]).
pub fn owner_of_stack(stack: &str) -> Option<ObjectRef> {
    let stack = StackName::recognise(stack)?;
    let rest = stack.as_str().get(stack.role().prefix().len()..)?;
    match stack.role() {
        StackRole::WarmCanonical | StackRole::WarmProvider => {
            Some(ObjectRef::new(Kind::WarmApp, rest))
        }
        StackRole::Run => Some(ObjectRef::new(Kind::Run, rest)),
        StackRole::SlotNamespace => rest
            .rsplit_once('-')
            .map(|(pool, _)| ObjectRef::new(Kind::SlotPool, pool)),
        StackRole::RunDep => None,
    }
}

/// The resources owning a listed swarm object: listed objects carry hearth's labels
/// (`hearth.kind` + `hearth.name`, and `hearth.parent-run` for a run's stacks), which also
/// resolve the per-run dep stacks a name cannot; without labels, [`owner_of_swarm_name`].
pub fn owners_of_listed(name: &str, labels: &crate::swarm::Labels) -> Vec<ObjectRef> {
    let mut out = Vec::new();
    let kind = labels.get(labels::KIND).and_then(|k| Kind::parse(k));
    if let (Some(kind), Some(owner)) = (kind, labels.get(labels::NAME)) {
        out.push(ObjectRef::new(kind, owner.clone()));
    }
    if let Some(run) = labels.get(labels::PARENT_RUN) {
        out.push(ObjectRef::new(Kind::Run, run.clone()));
    }
    if out.is_empty() {
        out.extend(owner_of_swarm_name(name));
    }
    out
}

/// Every key of kind `K` worth reconciling: the objects in the store plus, when a swarm is
/// given, the owners of the hearth-managed services it runs (so an orphan whose object was
/// deleted gets its `cleanup`).
///
/// # Errors
/// [`Error::RelistFailed`] when the store cannot be listed. A failing swarm list is only
/// logged: the store's keys are still worth reconciling.
pub async fn relist<K: Resource>(
    store: &Store,
    swarm: Option<&dyn Swarm>,
) -> Result<Vec<ObjectRef>, Error> {
    let mut keys: Vec<ObjectRef> = store
        .list::<K>()
        .map_err(|e| Error::RelistFailed {
            what: "store",
            message: e.to_string(),
        })?
        .items
        .iter()
        .map(|o| ObjectRef::new(K::KIND, o.name()))
        .collect();
    if let Some(swarm) = swarm {
        let filter = LabelFilter::eq(labels::MANAGED_BY, labels::MANAGED_BY_VALUE);
        match swarm.list_services(&filter).await {
            Ok(services) => keys.extend(
                services
                    .iter()
                    .flat_map(|s| owners_of_listed(&s.meta.name, &s.meta.labels))
                    .filter(|k| k.kind == K::KIND),
            ),
            Err(e) => tracing::warn!(error = %e, "relist: listing swarm services failed"),
        }
    }
    keys.sort_by(|a, b| a.name.cmp(&b.name));
    keys.dedup();
    Ok(keys)
}

/// Sends every key of a relist; returns `false` once the runner is gone.
pub(crate) async fn send_relist<K: Resource>(
    store: &Store,
    swarm: Option<&dyn Swarm>,
    tx: &mpsc::UnboundedSender<Trigger>,
    why: &str,
) -> bool {
    match relist::<K>(store, swarm).await {
        Ok(keys) => {
            tracing::debug!(count = keys.len(), why, "relisting");
            // One request for the whole relist, so its reconciles can share one observation.
            let (at, ticket) = (Instant::now(), super::Ticket::next());
            keys.into_iter()
                .all(|key| tx.send(Trigger { key, at, ticket }).is_ok())
        }
        Err(e) => {
            tracing::warn!(error = %e, why, "relist failed");
            !tx.is_closed()
        }
    }
}

/// Follows the store's change feed: every write to a `K` (except status-only writes, which are
/// the controller's own) triggers its key; a lagging subscription relists.
pub(crate) async fn store_feed<K: Resource>(
    store: Store,
    swarm: Option<Arc<dyn Swarm>>,
    mut feed: state::watch::Subscription,
    tx: mpsc::UnboundedSender<Trigger>,
) {
    loop {
        match feed.recv().await {
            Ok(change) => {
                if change.kind != K::KIND || change.change == ChangeType::StatusUpdated {
                    continue;
                }
                if tx
                    .send(Trigger::now(ObjectRef::new(change.kind, change.name)))
                    .is_err()
                {
                    return;
                }
            }
            Err(watch::Error::Lagged { missed }) => {
                tracing::warn!(missed, "change feed lagged; relisting");
                if !send_relist::<K>(&store, swarm.as_deref(), &tx, "change feed lagged").await {
                    return;
                }
            }
            Err(watch::Error::Closed) => {
                tracing::info!("change feed closed");
                return;
            }
        }
    }
}

/// Follows Docker events, mapping each to its owner; reopens the stream with backoff when it
/// ends or fails, and relists after every reopen (events sent meanwhile were lost).
pub(crate) async fn docker_events<K: Resource>(
    store: Store,
    swarm: Arc<dyn Swarm>,
    config: Config,
    mut rng: StdRng,
    tx: mpsc::UnboundedSender<Trigger>,
) {
    let mut reconnects = Backoff::new(config.reconnect_policy());
    let mut first = true;
    loop {
        let mut events = swarm.events();
        if !first
            && !send_relist::<K>(&store, Some(swarm.as_ref()), &tx, "events stream reopened").await
        {
            return;
        }
        first = false;
        let mut failure = None;
        while let Some(item) = events.next().await {
            match item {
                Ok(event) => {
                    reconnects.succeeded(&());
                    let owner = event.name.as_deref().and_then(owner_of_swarm_name);
                    if let Some(key) = owner.filter(|k| k.kind == K::KIND) {
                        if tx.send(Trigger::now(key)).is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        let delay = reconnects.failed((), &mut rng);
        match failure {
            Some(e) => tracing::warn!(error = %e, ?delay, "docker events failed; reopening"),
            None => tracing::warn!(
                ?delay,
                "docker events stream ended; reopening and relisting"
            ),
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(delay).await;
    }
}

/// Relists every `resync_period` (stretched by jitter), or at once when `now` is notified:
/// the safety net for missed triggers.
pub(crate) async fn resync<K: Resource>(
    store: Store,
    swarm: Option<Arc<dyn Swarm>>,
    config: Config,
    mut rng: StdRng,
    now: Arc<tokio::sync::Notify>,
    tx: mpsc::UnboundedSender<Trigger>,
) {
    loop {
        let wait = backoff::stretch(config.resync_period, config.resync_jitter, &mut rng);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = now.notified() => {}
        }
        if !send_relist::<K>(&store, swarm.as_deref(), &tx, "periodic resync").await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kind: Kind, name: &str) -> Option<ObjectRef> {
        Some(ObjectRef::new(kind, name))
    }

    #[test]
    fn swarm_names_should_map_to_their_owning_resource() {
        assert_eq!(owner_of_swarm_name("hw-web_app"), key(Kind::WarmApp, "web"));
        assert_eq!(owner_of_swarm_name("hp-sso_idp"), key(Kind::WarmApp, "sso"));
        assert_eq!(
            owner_of_swarm_name("hw-web_app.1.x2k3j4"),
            key(Kind::WarmApp, "web")
        );
        assert_eq!(
            owner_of_swarm_name("/hw-my-app_default"),
            key(Kind::WarmApp, "my-app")
        );
        assert_eq!(
            owner_of_swarm_name("hr-web-0123456789_app"),
            key(Kind::Run, "web-0123456789")
        );
        assert_eq!(
            owner_of_swarm_name("hs-ci-pool-3_x"),
            key(Kind::SlotPool, "ci-pool")
        );
    }

    #[test]
    fn listed_objects_should_map_by_their_labels_first() {
        let labels: crate::swarm::Labels = [
            (labels::KIND.to_string(), "DepProvider".to_string()),
            (labels::NAME.to_string(), "sso".to_string()),
            (labels::PARENT_RUN.to_string(), "web-0123456789".to_string()),
        ]
        .into();
        assert_eq!(
            owners_of_listed("hd-sso-0123456789ab_idp", &labels),
            vec![
                ObjectRef::new(Kind::DepProvider, "sso"),
                ObjectRef::new(Kind::Run, "web-0123456789")
            ]
        );
        let none = crate::swarm::Labels::new();
        assert_eq!(
            owners_of_listed("hw-web_app", &none),
            vec![ObjectRef::new(Kind::WarmApp, "web")]
        );
    }

    #[test]
    fn names_hearth_did_not_assign_should_map_to_nothing() {
        assert_eq!(owner_of_swarm_name("web_app"), None);
        assert_eq!(owner_of_swarm_name("hw-web"), None, "no stack separator");
        assert_eq!(owner_of_swarm_name("hw-_app"), None, "empty rest");
        assert_eq!(
            owner_of_swarm_name("hd-sso-0123456789ab_idp"),
            None,
            "dep owner is hashed"
        );
        assert_eq!(owner_of_swarm_name("HW-web_app"), None);
        assert_eq!(owner_of_swarm_name(""), None);
    }
}
