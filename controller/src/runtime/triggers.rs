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
use super::{Config, Error, ObjectRef, Ticket};
use crate::swarm::{LabelFilter, Labels, Network, Service, Swarm, Volume};

/// A failed [`Survey`].
pub type SurveyError = Box<dyn std::error::Error + Send + Sync>;

/// Where a relist finds the stacks on the swarm and their owners, so an orphan (a stack whose
/// object was deleted) gets its `cleanup`.
///
/// [`ListSurvey`] (the default) lists the swarm's services, networks and volumes for it; a
/// reconciler that observes every stack at once anyway answers from that one listing instead
/// ([`super::Reconciler::survey`]), so a resync lists each kind once, not twice.
pub trait Survey: Send + Sync {
    /// The owners (of every kind) of the hearth-managed stacks on the swarm, from listings
    /// that started after `since` (the relist's ticket, which its triggers carry).
    fn owners(
        &self,
        since: Ticket,
    ) -> futures::future::BoxFuture<'_, Result<Vec<ObjectRef>, SurveyError>>;
}

/// The default [`Survey`]: lists the swarm's hearth-managed services and networks and its
/// stack volumes (3 calls).
pub struct ListSurvey(pub Arc<dyn Swarm>);

impl Survey for ListSurvey {
    fn owners(
        &self,
        _since: Ticket,
    ) -> futures::future::BoxFuture<'_, Result<Vec<ObjectRef>, SurveyError>> {
        Box::pin(async move { Ok(listed_owners(self.0.as_ref()).await?) })
    }
}

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
    let mut out: Vec<ObjectRef> = labelled_owners(labels)
        .map(|(kind, owner)| ObjectRef::new(kind, owner))
        .collect();
    if out.is_empty() {
        out.extend(owner_of_swarm_name(name));
    }
    out
}

/// The owners a listed object's labels name ([`owners_of_listed`]), borrowed from them.
fn labelled_owners(labels: &crate::swarm::Labels) -> impl Iterator<Item = (Kind, &str)> {
    let kind = labels.get(labels::KIND).and_then(|k| Kind::parse(k));
    let named = kind.zip(labels.get(labels::NAME).map(String::as_str));
    let run = labels
        .get(labels::PARENT_RUN)
        .map(|run| (Kind::Run, run.as_str()));
    named.into_iter().chain(run)
}

/// Every key of kind `K` worth reconciling: the objects in the store plus, when a swarm is
/// given, the owners of the hearth-managed services it runs (so an orphan whose object was
/// deleted gets its `cleanup`).
///
/// # Errors
/// [`Error::RelistFailed`] when the store cannot be listed. A failing swarm list is only
/// logged: the store's keys are still worth reconciling (see [`send_relist`] for the retry).
pub async fn relist<K: Resource>(
    store: &Store,
    swarm: Option<&dyn Swarm>,
) -> Result<Vec<ObjectRef>, Error> {
    let mut keys = store_keys::<K>(store)?;
    if let Some(swarm) = swarm {
        match swarm_owners::<K>(swarm).await {
            Ok(owners) => keys.extend(owners),
            Err(e) => tracing::warn!(error = %e, "relist: listing swarm services failed"),
        }
    }
    keys.sort_by(|a, b| a.name.cmp(&b.name));
    keys.dedup();
    Ok(keys)
}

/// The keys of every `K` in the store.
fn store_keys<K: Resource>(store: &Store) -> Result<Vec<ObjectRef>, Error> {
    Ok(store
        .names::<K>()
        .map_err(|e| Error::RelistFailed {
            what: "store",
            message: e.to_string(),
        })?
        .into_iter()
        .map(|name| ObjectRef::new(K::KIND, name))
        .collect())
}

/// The owners of kind `K` of the hearth-managed stacks on the swarm ([`listed_owners`]).
async fn swarm_owners<K: Resource>(swarm: &dyn Swarm) -> crate::swarm::Result<Vec<ObjectRef>> {
    let mut owners = listed_owners(swarm).await?;
    owners.retain(|k| k.kind == K::KIND);
    Ok(owners)
}

/// The owners of the hearth-managed stacks on the swarm: found through their services, and
/// through their networks and volumes, so a stack whose services are gone (a teardown cut off
/// after removing them) is still found and its owner's `cleanup` runs (issue 14). Volumes
/// made by tasks carry only the stack namespace label (#13): they are listed by it and owned
/// by their stack's name. 3 list calls.
async fn listed_owners(swarm: &dyn Swarm) -> crate::swarm::Result<Vec<ObjectRef>> {
    let managed = LabelFilter::eq(labels::MANAGED_BY, labels::MANAGED_BY_VALUE);
    let services = swarm.list_services(&managed).await?;
    let networks = swarm.list_networks(&managed).await?;
    let in_a_stack = LabelFilter::all().and_has(crate::swarm::labels::NAMESPACE);
    let volumes = swarm.list_volumes(&in_a_stack).await?;
    Ok(stack_owners(&services, &networks, &volumes))
}

/// The owners of the stacks these listed objects belong to, by the rule of
/// [`listed_owners`]: services and networks managed by hearth (`hearth.managed-by`), volumes
/// of any stack. Sorted, without duplicates.
pub fn stack_owners<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    networks: impl IntoIterator<Item = &'a Network>,
    volumes: impl IntoIterator<Item = &'a Volume>,
) -> Vec<ObjectRef> {
    let managed = |l: &Labels| {
        l.get(labels::MANAGED_BY).map(String::as_str) == Some(labels::MANAGED_BY_VALUE)
    };
    let in_a_stack = |l: &Labels| l.contains_key(crate::swarm::labels::NAMESPACE);
    let listed = services
        .into_iter()
        .filter(|s| managed(&s.meta.labels))
        .map(|s| (s.meta.name.as_str(), &s.meta.labels))
        .chain(
            networks
                .into_iter()
                .filter(|n| managed(&n.labels))
                .map(|n| (n.name.as_str(), &n.labels)),
        )
        .chain(
            volumes
                .into_iter()
                .filter(|v| in_a_stack(&v.labels))
                .map(|v| (v.name.as_str(), &v.labels)),
        );
    // A stack's objects name the same owner: deduplicated borrowed, each owner copied once
    // (10,000 stacks list ~30,000 objects).
    let mut labelled: Vec<(Kind, &str)> = Vec::new();
    let mut named = Vec::new();
    for (name, l) in listed {
        let mut found = false;
        for owner in labelled_owners(l) {
            found = true;
            if labelled.last() != Some(&owner) {
                labelled.push(owner);
            }
        }
        if !found {
            named.extend(owner_of_swarm_name(name));
        }
    }
    labelled.sort_unstable_by(|a, b| (a.0.as_str(), a.1).cmp(&(b.0.as_str(), b.1)));
    labelled.dedup();
    let mut owners: Vec<ObjectRef> = labelled
        .into_iter()
        .map(|(kind, name)| ObjectRef::new(kind, name))
        .collect();
    if !named.is_empty() {
        owners.extend(named);
        owners.sort_by(|a, b| (a.kind.as_str(), &a.name).cmp(&(b.kind.as_str(), &b.name)));
        owners.dedup();
    }
    owners
}

/// The owners of kind `K` a survey found.
async fn surveyed<K: Resource>(
    survey: &dyn Survey,
    since: Ticket,
) -> Result<Vec<ObjectRef>, SurveyError> {
    let mut owners = survey.owners(since).await?;
    owners.retain(|k| k.kind == K::KIND);
    Ok(owners)
}

/// How a relist went (see [`send_relist`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Relisted {
    /// Every key was sent, the swarm's owners included (or there is no swarm).
    Complete,
    /// The store's keys were sent, but listing the swarm failed: orphans are still unknown.
    SwarmMissing,
    /// Listing the store failed: nothing was sent (logged; the next resync lists again).
    Failed,
    /// The runner is gone.
    Closed,
}

/// Sends every key of a relist: the store's keys at once, and the swarm's owners when
/// listing the swarm works.
///
/// # Caveats
/// A failed swarm listing leaves orphans (stacks whose object was deleted) unknown:
/// [`Relisted::SwarmMissing`]; callers retry with [`send_swarm_owners`] instead of waiting a
/// whole resync period.
pub(crate) async fn send_relist<K: Resource>(
    store: &Store,
    survey: Option<&dyn Survey>,
    tx: &mpsc::UnboundedSender<Trigger>,
    why: &str,
) -> Relisted {
    // Taken before the survey lists: a reconcile may use that listing (it started after).
    let ticket = Ticket::next();
    let keys = match store_keys::<K>(store) {
        Ok(keys) => keys,
        Err(e) => {
            tracing::warn!(error = %e, why, "relist failed");
            return if tx.is_closed() {
                Relisted::Closed
            } else {
                Relisted::Failed
            };
        }
    };
    // The store's keys go out before the survey lists the swarm: the runner queues them while
    // the swarm is listed (its first reconciles wait for that listing and share it), and the
    // orphans the survey finds follow (issue 14: the queueing of 10,000 keys no longer waits
    // for the listing).
    tracing::debug!(count = keys.len(), why, "relisting");
    if !send_all(keys.iter().cloned(), ticket, tx) {
        return Relisted::Closed;
    }
    let Some(survey) = survey else {
        return Relisted::Complete;
    };
    match surveyed::<K>(survey, ticket).await {
        Ok(owners) => {
            // Names are unique within a kind, and the store's are sorted.
            let orphans = owners
                .into_iter()
                .filter(|o| keys.binary_search_by(|k| k.name.cmp(&o.name)).is_err());
            if send_all(orphans, ticket, tx) {
                Relisted::Complete
            } else {
                Relisted::Closed
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, why, "relist: listing swarm services failed; retrying with backoff");
            Relisted::SwarmMissing
        }
    }
}

/// Sends `keys` as one request with `ticket` (so their reconciles can share one observation);
/// `false` once the runner is gone.
fn send_all(
    keys: impl IntoIterator<Item = ObjectRef>,
    ticket: Ticket,
    tx: &mpsc::UnboundedSender<Trigger>,
) -> bool {
    let at = Instant::now();
    keys.into_iter()
        .all(|key| tx.send(Trigger { key, at, ticket }).is_ok())
}

/// Completes a relist whose swarm listing failed ([`Relisted::SwarmMissing`]): surveys the
/// swarm again after `policy`'s backoff until a listing works, then sends the owners it
/// found. Returns `false` once the runner is gone.
///
/// Why: with the swarm failing at the wrong moment (a daemon start while dockerd restarts, or
/// a failing call in the fault matrix), a relist used to leave the stacks of deleted objects
/// alone until the next periodic resync, 5 minutes later by default.
pub(crate) async fn send_swarm_owners<K: Resource>(
    survey: &dyn Survey,
    policy: backoff::Policy,
    rng: &mut StdRng,
    tx: &mpsc::UnboundedSender<Trigger>,
) -> bool {
    let mut attempts = Backoff::new(policy);
    loop {
        let delay = attempts.failed((), rng);
        tokio::time::sleep(delay).await;
        if tx.is_closed() {
            return false;
        }
        let ticket = Ticket::next();
        match surveyed::<K>(survey, ticket).await {
            Ok(owners) => {
                tracing::debug!(
                    count = owners.len(),
                    "relist: swarm services listed on retry"
                );
                return send_all(owners, ticket, tx);
            }
            Err(e) => tracing::warn!(error = %e, "relist: listing swarm services failed again"),
        }
    }
}

/// Follows the store's change feed: every write to a `K` (except status-only writes, which are
/// the controller's own) triggers its key; a lagging subscription relists.
pub(crate) async fn store_feed<K: Resource>(
    store: Store,
    survey: Option<Arc<dyn Survey>>,
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
                // Docker is not the problem here; the next resync covers a failed listing.
                if send_relist::<K>(&store, survey.as_deref(), &tx, "change feed lagged").await
                    == Relisted::Closed
                {
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
    survey: Arc<dyn Survey>,
    config: Config,
    mut rng: StdRng,
    tx: mpsc::UnboundedSender<Trigger>,
) {
    let mut reconnects = Backoff::new(config.reconnect_policy());
    let mut first = true;
    loop {
        let mut events = swarm.events();
        // A failed listing here is retried by this loop: the stream fails too and is reopened.
        if !first
            && send_relist::<K>(&store, Some(survey.as_ref()), &tx, "events stream reopened").await
                == Relisted::Closed
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
    survey: Option<Arc<dyn Survey>>,
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
        if !complete_relist::<K>(
            &store,
            survey.as_deref(),
            &config,
            &mut rng,
            &tx,
            "periodic resync",
        )
        .await
        {
            return;
        }
    }
}

/// [`send_relist`], then [`send_swarm_owners`] until the swarm was listed; `false` once the
/// runner is gone.
pub(crate) async fn complete_relist<K: Resource>(
    store: &Store,
    survey: Option<&dyn Survey>,
    config: &Config,
    rng: &mut StdRng,
    tx: &mpsc::UnboundedSender<Trigger>,
    why: &str,
) -> bool {
    match send_relist::<K>(store, survey, tx, why).await {
        Relisted::Closed => false,
        Relisted::Complete | Relisted::Failed => true,
        Relisted::SwarmMissing => match survey {
            Some(survey) => {
                send_swarm_owners::<K>(survey, config.reconnect_policy(), rng, tx).await
            }
            None => true,
        },
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
