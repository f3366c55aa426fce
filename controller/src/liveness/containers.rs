//! Container owners: whether the container a run names (`--owner container:ID`) still runs, kept current from Docker events.
//!
//! A CI step that runs as a container on the swarm's engine (Drone, Woodpecker, Actions with
//! a container job) owns its run as that container: the run lives while the container runs
//! and is orphaned from the moment Docker reports the container died or was removed.
//!
//! [`ContainerWatch`] is the cache the sweeper's and the slot reclaimer's liveness checks
//! read (they are synchronous and run every second or faster); [`WatchWorker`] keeps it
//! current: it holds one Docker events stream open and marks a watched container gone on its
//! `die` or `destroy` event, and it inspects every container it has not seen yet (a new
//! owner, or all of them again after the stream was reopened, since events may have been
//! missed meanwhile).
//!
//! # Caveats
//! A container that died stays dead for its runs even if a restart policy starts it again
//! (as a reused PID is not its owner). A container never seen running (unknown to the engine
//! for the moment, or the engine unreachable) is [`Liveness::Unknown`]: only a lease, if the
//! run has one, ends it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::Liveness;
use crate::runtime::workers::{Failure, Next, Worker};
use crate::swarm::{self, Container, ContainerState, Event, ObjectKind, Swarm};

/// How long a container nobody asked about stays in the cache.
const FORGET_AFTER: Duration = Duration::from_secs(600);

/// What is known of one watched container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// Not inspected yet (or to be inspected again after the events stream was reopened).
    Pending,
    /// Running (or created, paused, restarting: not exited) under this full ID and name.
    Running {
        /// Its full ID, as events name it.
        id: String,
        /// Its name.
        name: String,
    },
    /// Exited, dead or removed: its runs are orphaned.
    Gone,
}

impl Seen {
    /// The liveness of an owner in this state.
    pub fn liveness(&self) -> Liveness {
        match self {
            Seen::Pending => Liveness::Unknown,
            Seen::Running { .. } => Liveness::Alive,
            Seen::Gone => Liveness::Dead,
        }
    }
}

/// What an inspection says about a container: `None` when it says nothing (the engine failed
/// or was unreachable: ask again later).
pub fn judge_inspect(result: &swarm::Result<Container>) -> Option<Seen> {
    match result {
        Ok(c) => Some(match c.state {
            ContainerState::Created
            | ContainerState::Running
            | ContainerState::Paused
            | ContainerState::Restarting => Seen::Running {
                id: c.id.clone(),
                name: c.name.clone(),
            },
            ContainerState::Removing
            | ContainerState::Exited
            | ContainerState::Dead
            | ContainerState::Other(_) => Seen::Gone,
        }),
        Err(e) if e.is_not_found() => Some(Seen::Gone),
        Err(_) => None,
    }
}

/// Whether `event` ends the container it names: Docker sends `die` when its process exits
/// (killed, stopped or done) and `destroy` when it is removed.
pub fn is_death(event: &Event) -> bool {
    event.kind == ObjectKind::Container && matches!(event.action.as_str(), "die" | "destroy")
}

#[derive(Debug)]
struct Entry {
    seen: Seen,
    asked: Instant,
}

/// The liveness of container owners, as last seen. Cheap to ask (a map lookup); keyed by the
/// container reference the owner records (its full ID once hearth accepted the run).
#[derive(Debug, Default)]
pub struct ContainerWatch {
    entries: Mutex<BTreeMap<String, Entry>>,
    wake: Notify,
}

impl ContainerWatch {
    /// An empty watch.
    pub fn new() -> Arc<ContainerWatch> {
        Arc::new(ContainerWatch::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the container `reference` names runs. A reference not watched yet is
    /// [`Liveness::Unknown`] and is inspected at once by the [`WatchWorker`].
    pub fn check(&self, reference: &str) -> Liveness {
        let mut entries = self.lock();
        let now = Instant::now();
        if let Some(e) = entries.get_mut(reference) {
            e.asked = now;
            return e.seen.liveness();
        }
        entries.insert(
            reference.to_string(),
            Entry {
                seen: Seen::Pending,
                asked: now,
            },
        );
        drop(entries);
        self.wake.notify_one();
        Liveness::Unknown
    }

    /// Records what an inspection of `reference` found (a run start's check, or the
    /// worker's). A container already gone stays gone.
    pub fn record(&self, reference: &str, seen: Seen) {
        let mut entries = self.lock();
        let entry = entries.entry(reference.to_string()).or_insert(Entry {
            seen: Seen::Pending,
            asked: Instant::now(),
        });
        if entry.seen != Seen::Gone {
            entry.seen = seen;
        }
    }

    /// Applies one Docker event: a death marks every entry of that container gone. Returns
    /// whether any entry changed.
    pub fn apply(&self, event: &Event) -> bool {
        if !is_death(event) {
            return false;
        }
        let mut changed = false;
        for (reference, entry) in self.lock().iter_mut() {
            let named = match &entry.seen {
                Seen::Running { id, .. } => *id == event.id,
                // Not inspected yet: an ID prefix or the name the event carries.
                Seen::Pending => {
                    event.id.starts_with(reference.as_str())
                        || event.name.as_deref() == Some(reference.as_str())
                }
                Seen::Gone => false,
            };
            if named {
                entry.seen = Seen::Gone;
                changed = true;
            }
        }
        changed
    }

    /// The references to inspect: the pending ones, or (`all`) every one not gone.
    fn to_inspect(&self, all: bool) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, e)| match e.seen {
                Seen::Pending => true,
                Seen::Running { .. } => all,
                Seen::Gone => false,
            })
            .map(|(r, _)| r.clone())
            .collect()
    }

    /// Marks every entry not gone for inspection (the events stream was reopened).
    fn forget_running(&self) {
        for e in self.lock().values_mut() {
            if matches!(e.seen, Seen::Running { .. }) {
                e.seen = Seen::Pending;
            }
        }
    }

    /// Drops entries nobody asked about for [`FORGET_AFTER`] (their runs are over).
    fn prune(&self, now: Instant) {
        self.lock()
            .retain(|_, e| now.saturating_duration_since(e.asked) < FORGET_AFTER);
    }

    /// How many containers are watched.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no container is watched.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Keeps a [`ContainerWatch`] current from Docker events (one stream, reopened when it ends)
/// and inspections of containers not seen yet.
pub struct WatchWorker {
    swarm: Arc<dyn Swarm>,
    watch: Arc<ContainerWatch>,
    events: Option<BoxStream<'static, swarm::Result<Event>>>,
}

impl WatchWorker {
    /// A worker keeping `watch` current from `swarm`.
    pub fn new(swarm: Arc<dyn Swarm>, watch: Arc<ContainerWatch>) -> WatchWorker {
        WatchWorker {
            swarm,
            watch,
            events: None,
        }
    }
}

/// Inspects `references` and records what was found in `watch`; the first engine failure.
async fn inspect(
    swarm: &dyn Swarm,
    watch: &ContainerWatch,
    references: Vec<String>,
) -> Result<(), Failure> {
    let mut failure = None;
    for reference in references {
        let result = swarm.inspect_container(&reference).await;
        match judge_inspect(&result) {
            Some(seen) => watch.record(&reference, seen),
            None => {
                if let Err(e) = result {
                    failure.get_or_insert(Failure::from(e));
                }
            }
        }
    }
    failure.map_or(Ok(()), Err)
}

impl Worker for WatchWorker {
    fn name(&self) -> &'static str {
        "container-owners"
    }

    fn schedule(&self) -> String {
        "on Docker container events and new container owners".into()
    }

    async fn step(&mut self) -> Result<Next, Failure> {
        let reopened = self.events.is_none();
        if reopened {
            // Opened before inspecting, so a death between the two is not lost.
            self.events = Some(self.swarm.events());
            self.watch.forget_running();
        }
        self.watch.prune(Instant::now());
        let (swarm, watch) = (self.swarm.clone(), self.watch.clone());
        inspect(swarm.as_ref(), &watch, watch.to_inspect(reopened)).await?;
        Ok(Next::OnTrigger)
    }

    async fn triggered(&mut self) -> Result<(), Failure> {
        let Some(events) = self.events.as_mut() else {
            return Ok(());
        };
        loop {
            tokio::select! {
                event = events.next() => match event {
                    Some(Ok(e)) => {
                        if self.watch.apply(&e) {
                            tracing::info!(container = %e.id, action = %e.action, "container owner gone");
                        }
                    }
                    Some(Err(e)) => {
                        self.events = None;
                        return Err(Failure::from(e));
                    }
                    None => {
                        self.events = None;
                        return Err(Failure::msg("the Docker events stream ended (daemon restarted?)"));
                    }
                },
                () = self.watch.wake.notified() => return Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::runtime::workers::{Supervisor, DEFAULT_POLICY};
    use crate::swarm::sim::{SimConfig, SimSwarm};

    fn event(action: &str, id: &str) -> Event {
        Event {
            kind: ObjectKind::Container,
            action: action.into(),
            id: id.into(),
            name: None,
            time: None,
        }
    }

    #[test]
    fn only_die_and_destroy_end_a_container() {
        assert!(is_death(&event("die", "a")));
        assert!(is_death(&event("destroy", "a")));
        for action in ["start", "kill", "stop", "health_status: healthy", "oom"] {
            assert!(!is_death(&event(action, "a")), "{action}");
        }
        let mut service = event("die", "a");
        service.kind = ObjectKind::Service;
        assert!(!is_death(&service));
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_reference_is_unknown_until_inspected_and_a_death_is_final() {
        let w = ContainerWatch::new();
        assert_eq!(w.check("abc"), Liveness::Unknown);
        w.record(
            "abc",
            Seen::Running {
                id: "abcdef".into(),
                name: "step".into(),
            },
        );
        assert_eq!(w.check("abc"), Liveness::Alive);
        assert!(!w.apply(&event("die", "other")));
        assert!(w.apply(&event("die", "abcdef")));
        assert_eq!(w.check("abc"), Liveness::Dead);
        // A restart policy starting it again does not bring the owner back.
        w.record(
            "abc",
            Seen::Running {
                id: "abcdef".into(),
                name: "step".into(),
            },
        );
        assert_eq!(w.check("abc"), Liveness::Dead);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pending_reference_dies_by_id_prefix_or_name() {
        let w = ContainerWatch::new();
        w.check("abc");
        w.check("step-1");
        let mut named = event("die", "ffff");
        named.name = Some("step-1".into());
        assert!(w.apply(&named));
        assert!(w.apply(&event("destroy", "abc123")));
        assert_eq!(w.check("abc"), Liveness::Dead);
        assert_eq!(w.check("step-1"), Liveness::Dead);
    }

    #[tokio::test(start_paused = true)]
    async fn entries_nobody_asks_about_are_forgotten() {
        let w = ContainerWatch::new();
        w.check("abc");
        tokio::time::advance(FORGET_AFTER / 2).await;
        w.check("def");
        tokio::time::advance(FORGET_AFTER / 2).await;
        w.prune(Instant::now());
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn inspections_judge_exited_and_missing_containers_gone_and_failures_unknown() {
        let c = |state| Container {
            id: "full".into(),
            name: "n".into(),
            labels: Default::default(),
            image_id: None,
            state,
            health: None,
            status: String::new(),
            created_at: None,
        };
        assert!(matches!(
            judge_inspect(&Ok(c(ContainerState::Running))),
            Some(Seen::Running { id, .. }) if id == "full"
        ));
        assert_eq!(
            judge_inspect(&Ok(c(ContainerState::Exited))),
            Some(Seen::Gone)
        );
        let call = swarm::Call::new(swarm::Verb::Inspect, ObjectKind::Container);
        let missing = Err(swarm::Error::NotFound {
            call,
            id: "x".into(),
        });
        assert_eq!(judge_inspect(&missing), Some(Seen::Gone));
        let down = Err(swarm::Error::Timeout {
            call,
            after: Duration::from_secs(1),
        });
        assert_eq!(judge_inspect(&down), None);
    }

    /// The worker against the simulated engine, in virtual time: a container owner is seen
    /// alive once inspected and dead as soon as its `die` event arrives.
    #[tokio::test(start_paused = true)]
    async fn the_worker_sees_a_container_owner_live_and_die_within_milliseconds() {
        let sim = SimSwarm::new(SimConfig::default());
        let step = sim.run_container("ci-step");
        let other = sim.run_container("other-step");
        let watch = ContainerWatch::new();
        let stop = tokio_util::sync::CancellationToken::new();
        let mut workers = Supervisor::new(stop.clone(), DEFAULT_POLICY, None);
        workers.spawn(WatchWorker::new(Arc::new(sim.clone()), watch.clone()));
        // Asked by its short ID, as `$HOSTNAME` gives it inside the container.
        let short = &step[..12];
        assert_eq!(watch.check(short), Liveness::Unknown);
        let seen_alive = wait_for(&watch, short, Liveness::Alive).await;
        assert!(seen_alive < Duration::from_millis(50), "{seen_alive:?}");
        assert_eq!(watch.check(&other), Liveness::Unknown);
        wait_for(&watch, &other, Liveness::Alive).await;
        sim.kill_container(&step);
        let seen_dead = wait_for(&watch, short, Liveness::Dead).await;
        assert!(seen_dead < Duration::from_millis(50), "{seen_dead:?}");
        // The other owner is untouched.
        assert_eq!(watch.check(&other), Liveness::Alive);
        // A reference to no container is dead once inspected.
        watch.check("nosuchcontainer");
        wait_for(&watch, "nosuchcontainer", Liveness::Dead).await;
        stop.cancel();
        workers.join().await;
    }

    #[tokio::test(start_paused = true)]
    async fn after_the_events_stream_ends_every_owner_is_inspected_again() {
        let sim = SimSwarm::new(SimConfig::default());
        let step = sim.run_container("ci-step");
        let watch = ContainerWatch::new();
        let stop = tokio_util::sync::CancellationToken::new();
        let mut workers = Supervisor::new(stop.clone(), DEFAULT_POLICY, None);
        workers.spawn(WatchWorker::new(Arc::new(sim.clone()), watch.clone()));
        watch.check(&step);
        wait_for(&watch, &step, Liveness::Alive).await;
        // The daemon restarts and the container dies while no stream is open: the reopened
        // stream cannot tell, the inspection after it does.
        sim.restart_daemon();
        sim.kill_container(&step);
        let seen = wait_for(&watch, &step, Liveness::Dead).await;
        assert!(seen < Duration::from_secs(30), "{seen:?}");
        stop.cancel();
        workers.join().await;
    }

    async fn wait_for(watch: &ContainerWatch, reference: &str, want: Liveness) -> Duration {
        let start = Instant::now();
        for _ in 0..10_000 {
            if watch.check(reference) == want {
                return start.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("{reference} never became {want:?}");
    }
}
