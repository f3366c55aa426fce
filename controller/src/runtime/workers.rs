//! Background workers: one small trait, one supervisor that runs, retries and stops them, and the status each one shows.
//!
//! Everything hearth does in the background besides reconciling (the orphan sweep, slot
//! reclaim, the nightly job, the gauges, following the state and tokens files, fetching git
//! recipes) is a [`Worker`]: a name, a `step` that does one unit of work and says when the
//! next is due ([`Next`]), and optionally a trigger that makes it due early (a store change,
//! a file edit). A [`Supervisor`] runs each worker in its own task:
//!
//! - a step that fails or panics is recorded (status, `hearth_worker_errors_total`, the log)
//!   and retried after the shared exponential backoff ([`super::backoff::Policy`]); a worker
//!   never silently dies;
//! - a graceful stop lets a running step finish (up to [`Worker::grace`]), then the worker
//!   ends; [`Supervisor::join`] awaits every worker by name;
//! - each worker's [`Status`] (last run, last error, next run, counts) is on the [`Board`]
//!   that `/readyz`, `GET /api/v1/workers` and `hearth get workers` read, and in the
//!   `hearth_worker_*` metrics.
//!
//! Like garage's background workers: the worker says what one unit of work is; retrying,
//! status and shutdown live in one place.

use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::FutureExt;
use metrics::Metrics;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::backoff::Policy;

/// When a worker's next step is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// After this long, or earlier when the worker's trigger fires.
    After(Duration),
    /// When the worker's trigger fires.
    OnTrigger,
    /// Never: the worker has finished for good (shown as [`State::Done`]).
    Done,
}

/// Why a step (or a trigger) failed: the error with every cause, as the status shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure(String);

impl Failure {
    /// A failure described by `message`.
    pub fn msg(message: impl Into<String>) -> Failure {
        Failure(message.into())
    }

    /// The text shown in the status and the log.
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl<E: std::error::Error> From<E> for Failure {
    fn from(e: E) -> Failure {
        Failure(crate::errors::chain(&e))
    }
}

/// One background job.
///
/// # Guarantees (given by the [`Supervisor`])
/// - `step` and `triggered` are never called at once; after a step the supervisor waits as
///   its [`Next`] says (the trigger is awaited only then).
/// - A failed or panicking step is retried after the backoff; the trigger is not awaited
///   during a backoff.
/// - On a graceful stop no new step starts; a running one gets [`Worker::grace`] to finish,
///   then it is dropped (cancelled at its next `.await`).
pub trait Worker: Send + 'static {
    /// A short fixed name (`orphan-sweep`): the status key and the metrics label.
    fn name(&self) -> &'static str;

    /// What makes it run, for people: `every 1s`, `on change of /etc/hearth/state.yaml`.
    fn schedule(&self) -> String;

    /// When the first step is due. Default: at once.
    fn first(&self) -> Next {
        Next::After(Duration::ZERO)
    }

    /// Does one unit of work; says when the next is due.
    fn step(&mut self) -> impl Future<Output = Result<Next, Failure>> + Send;

    /// Resolves when something makes the next step due early (a store change, a file edit).
    /// An error (the trigger's source ended) is recorded like a failed step. Default: never.
    fn triggered(&mut self) -> impl Future<Output = Result<(), Failure>> + Send {
        std::future::pending()
    }

    /// How long a running step may go on after a graceful stop. Default: 5 s.
    fn grace(&self) -> Duration {
        Duration::from_secs(5)
    }
}

/// What a worker is doing now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum State {
    /// A step is running.
    Running,
    /// Waiting for its next step (timer or trigger).
    Idle,
    /// Its last step failed; waiting out the backoff before retrying.
    Backoff,
    /// Stopped by the daemon's shutdown.
    Stopped,
    /// Finished for good ([`Next::Done`]).
    Done,
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            State::Running => "Running",
            State::Idle => "Idle",
            State::Backoff => "Backoff",
            State::Stopped => "Stopped",
            State::Done => "Done",
        })
    }
}

/// One worker's status. Times are unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// The worker's name.
    pub name: String,
    /// What makes it run ([`Worker::schedule`]).
    pub schedule: String,
    /// What it is doing now.
    pub state: State,
    /// Steps started.
    pub runs: u64,
    /// Steps (and triggers) that failed or panicked.
    pub errors: u64,
    /// Failures since the last successful step.
    pub consecutive_errors: u32,
    /// When the last step started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_ms: Option<u64>,
    /// How long the last finished step took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_duration_ms: Option<u64>,
    /// When the last successful step finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_ms: Option<u64>,
    /// The last failure, with every cause (kept after a later success).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When the last failure happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_ms: Option<u64>,
    /// When the next step is due at the latest (`None`: on a trigger only, or not at all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run_ms: Option<u64>,
}

impl Status {
    fn new(name: &str, schedule: String) -> Status {
        Status {
            name: name.to_string(),
            schedule,
            state: State::Idle,
            runs: 0,
            errors: 0,
            consecutive_errors: 0,
            last_run_ms: None,
            last_duration_ms: None,
            last_success_ms: None,
            last_error: None,
            last_error_ms: None,
            next_run_ms: None,
        }
    }
}

/// Every supervised worker's status (cheap to clone; shared by the supervisor and readers).
#[derive(Debug, Clone, Default)]
pub struct Board {
    inner: Arc<Mutex<BTreeMap<&'static str, Status>>>,
}

impl Board {
    /// Every worker's status, by name.
    pub fn list(&self) -> Vec<Status> {
        self.lock().values().cloned().collect()
    }

    /// One worker's status.
    pub fn get(&self, name: &str) -> Option<Status> {
        self.lock().get(name).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, Status>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn update(&self, name: &'static str, f: impl FnOnce(&mut Status)) {
        if let Some(s) = self.lock().get_mut(name) {
            f(s);
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn after_ms(d: Duration) -> u64 {
    now_ms().saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The backoff of failed steps: 1 s doubling to 30 s, with jitter. Capped lower than the
/// reconcile backoff: a worker that recovers (Docker back, the store writable again) should
/// resume within half a minute.
pub const DEFAULT_POLICY: Policy = Policy {
    base: Duration::from_secs(1),
    max: Duration::from_secs(30),
    jitter: 0.2,
};

/// Runs workers, each in its own task, until the stop token fires.
pub struct Supervisor {
    board: Board,
    metrics: Option<Metrics>,
    policy: Policy,
    stop: CancellationToken,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("workers", &self.tasks.len())
            .finish_non_exhaustive()
    }
}

impl Supervisor {
    /// No workers yet; they stop when `stop` fires and back off failures by `policy`.
    pub fn new(stop: CancellationToken, policy: Policy, metrics: Option<Metrics>) -> Self {
        Supervisor {
            board: Board::default(),
            metrics,
            policy,
            stop,
            tasks: Vec::new(),
        }
    }

    /// The status board (every worker spawned so far and later).
    pub fn board(&self) -> Board {
        self.board.clone()
    }

    /// Starts supervising `worker`.
    ///
    /// # Caveats
    /// Names must be unique: a second worker with a taken name shares (and garbles) the
    /// first one's status.
    pub fn spawn<W: Worker>(&mut self, worker: W) {
        let name = worker.name();
        self.board
            .lock()
            .insert(name, Status::new(name, worker.schedule()));
        if let Some(m) = &self.metrics {
            m.set_worker_up(name, true);
        }
        let run = Run {
            name,
            board: self.board.clone(),
            metrics: self.metrics.clone(),
            policy: self.policy,
            stop: self.stop.clone(),
        };
        self.tasks.push((name, tokio::spawn(run.supervise(worker))));
    }

    /// Waits until every worker has stopped (they stop when the stop token fires), each
    /// awaited by name.
    pub async fn join(self) {
        for (name, task) in self.tasks {
            match task.await {
                Ok(()) => tracing::info!(worker = name, "stopped"),
                Err(e) => tracing::warn!(worker = name, error = %e, "worker task ended abnormally"),
            }
        }
    }
}

/// One supervised worker's bookkeeping.
struct Run {
    name: &'static str,
    board: Board,
    metrics: Option<Metrics>,
    policy: Policy,
    stop: CancellationToken,
}

/// What to wait for before the next step.
enum Wait {
    Timer(Duration),
    Trigger,
    Backoff(Duration),
}

/// How a wait ended.
enum Woken {
    Due,
    Stopped,
    TriggerFailed(Failure),
}

impl Run {
    async fn supervise<W: Worker>(self, mut worker: W) {
        let mut rng = StdRng::from_os_rng();
        let mut failures = 0u32;
        let mut wait = match worker.first() {
            Next::After(d) => Wait::Timer(d),
            Next::OnTrigger => Wait::Trigger,
            Next::Done => return self.finish(State::Done),
        };
        loop {
            match self.wait(&mut worker, &wait).await {
                Woken::Due => {}
                Woken::Stopped => return self.finish(State::Stopped),
                Woken::TriggerFailed(f) => {
                    failures = failures.saturating_add(1);
                    let delay = self.policy.jittered(failures, &mut rng);
                    self.failed(&f, delay, "the worker's trigger failed");
                    wait = Wait::Backoff(delay);
                    continue;
                }
            }
            let Some(outcome) = self.step(&mut worker).await else {
                return self.finish(State::Stopped);
            };
            wait = match outcome {
                Ok(next) => {
                    failures = 0;
                    match next {
                        Next::After(d) => Wait::Timer(d),
                        Next::OnTrigger => Wait::Trigger,
                        Next::Done => return self.finish(State::Done),
                    }
                }
                Err(f) => {
                    failures = failures.saturating_add(1);
                    let delay = self.policy.jittered(failures, &mut rng);
                    self.failed(&f, delay, "worker step failed");
                    Wait::Backoff(delay)
                }
            };
            if self.stop.is_cancelled() {
                return self.finish(State::Stopped);
            }
        }
    }

    /// Waits as `wait` says, or until the stop token fires.
    async fn wait<W: Worker>(&self, worker: &mut W, wait: &Wait) -> Woken {
        let (state, timer, trigger) = match wait {
            Wait::Timer(d) => (State::Idle, Some(*d), true),
            Wait::Trigger => (State::Idle, None, true),
            Wait::Backoff(d) => (State::Backoff, Some(*d), false),
        };
        self.board.update(self.name, |s| {
            s.state = state;
            s.next_run_ms = timer.map(after_ms);
        });
        let timer = async {
            match timer {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        let triggered = async {
            if !trigger {
                return std::future::pending().await;
            }
            match AssertUnwindSafe(worker.triggered()).catch_unwind().await {
                Ok(r) => r,
                Err(panic) => Err(Failure::msg(format!(
                    "its trigger panicked: {}",
                    panic_message(panic.as_ref())
                ))),
            }
        };
        tokio::select! {
            biased;
            () = self.stop.cancelled() => Woken::Stopped,
            () = timer => Woken::Due,
            r = triggered => match r {
                Ok(()) => Woken::Due,
                Err(f) => Woken::TriggerFailed(f),
            },
        }
    }

    /// Runs one step, catching a panic; `None` when a stop cut it off after its grace.
    async fn step<W: Worker>(&self, worker: &mut W) -> Option<Result<Next, Failure>> {
        let started = std::time::Instant::now();
        self.board.update(self.name, |s| {
            s.state = State::Running;
            s.runs += 1;
            s.last_run_ms = Some(now_ms());
            s.next_run_ms = None;
        });
        if let Some(m) = &self.metrics {
            m.record_worker_run(self.name);
        }
        let grace = worker.grace();
        let step = AssertUnwindSafe(worker.step()).catch_unwind();
        tokio::pin!(step);
        let outcome = tokio::select! {
            out = &mut step => out,
            () = self.stop.cancelled() => match tokio::time::timeout(grace, &mut step).await {
                Ok(out) => out,
                Err(_) => {
                    tracing::warn!(worker = self.name, ?grace, "step still running after the grace period; stopped");
                    return None;
                }
            },
        };
        let took = started.elapsed();
        let outcome = outcome.unwrap_or_else(|panic| {
            Err(Failure::msg(format!(
                "panicked: {}",
                panic_message(panic.as_ref())
            )))
        });
        self.board.update(self.name, |s| {
            s.last_duration_ms = Some(u64::try_from(took.as_millis()).unwrap_or(u64::MAX));
            if outcome.is_ok() {
                s.consecutive_errors = 0;
                s.last_success_ms = Some(now_ms());
            }
        });
        if outcome.is_ok() {
            if let Some(m) = &self.metrics {
                m.record_worker_success(self.name, now_ms());
            }
        }
        Some(outcome)
    }

    /// Records a failure (step or trigger) and the backoff before the retry.
    fn failed(&self, failure: &Failure, delay: Duration, what: &str) {
        tracing::warn!(worker = self.name, error = failure.message(), retry_in = ?delay, "{what}");
        let at = now_ms();
        self.board.update(self.name, |s| {
            s.errors += 1;
            s.consecutive_errors = s.consecutive_errors.saturating_add(1);
            s.last_error = Some(failure.message().to_string());
            s.last_error_ms = Some(at);
        });
        if let Some(m) = &self.metrics {
            m.record_worker_error(self.name);
        }
    }

    fn finish(&self, state: State) {
        self.board.update(self.name, |s| {
            s.state = state;
            s.next_run_ms = None;
        });
        if let Some(m) = &self.metrics {
            m.set_worker_up(self.name, false);
        }
    }
}

/// A panic's message, when it was a string.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-string panic payload".to_string()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Counts its steps; fails or panics on the steps it is told to.
    struct Probe {
        steps: Arc<AtomicU32>,
        fail_on: Vec<u32>,
        panic_on: Vec<u32>,
        every: Duration,
        trigger: Option<tokio::sync::mpsc::Receiver<()>>,
    }

    impl Probe {
        fn new(every: Duration) -> (Probe, Arc<AtomicU32>) {
            let steps = Arc::new(AtomicU32::new(0));
            (
                Probe {
                    steps: steps.clone(),
                    fail_on: Vec::new(),
                    panic_on: Vec::new(),
                    every,
                    trigger: None,
                },
                steps,
            )
        }
    }

    impl Worker for Probe {
        fn name(&self) -> &'static str {
            "probe"
        }
        fn schedule(&self) -> String {
            format!("every {:?}", self.every)
        }
        async fn step(&mut self) -> Result<Next, Failure> {
            let n = self.steps.fetch_add(1, Ordering::SeqCst) + 1;
            if self.panic_on.contains(&n) {
                panic!("step {n} blew up");
            }
            if self.fail_on.contains(&n) {
                return Err(Failure::msg(format!("step {n} failed")));
            }
            Ok(Next::After(self.every))
        }
        async fn triggered(&mut self) -> Result<(), Failure> {
            match &mut self.trigger {
                Some(rx) => match rx.recv().await {
                    Some(()) => Ok(()),
                    None => Err(Failure::msg("the trigger's channel closed")),
                },
                None => std::future::pending().await,
            }
        }
    }

    fn supervisor(metrics: Option<Metrics>) -> (Supervisor, CancellationToken) {
        let stop = CancellationToken::new();
        (Supervisor::new(stop.clone(), DEFAULT_POLICY, metrics), stop)
    }

    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_worker_should_step_on_its_interval_and_stop_gracefully() {
        let (mut sup, stop) = supervisor(None);
        let (probe, steps) = Probe::new(Duration::from_secs(10));
        sup.spawn(probe);
        let board = sup.board();
        settle().await;
        assert_eq!(
            steps.load(Ordering::SeqCst),
            1,
            "the first step runs at once"
        );
        tokio::time::sleep(Duration::from_secs(25)).await;
        assert_eq!(steps.load(Ordering::SeqCst), 3);
        let s = board.get("probe").unwrap();
        assert_eq!((s.state, s.runs, s.errors), (State::Idle, 3, 0));
        assert!(s.next_run_ms.is_some() && s.last_success_ms.is_some());
        stop.cancel();
        sup.join().await;
        let s = board.get("probe").unwrap();
        assert_eq!((s.state, s.next_run_ms), (State::Stopped, None));
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_step_should_be_restarted_after_the_backoff_and_its_error_shown() {
        let metrics = Metrics::new().unwrap();
        let (mut sup, stop) = supervisor(Some(metrics.clone()));
        let (mut probe, steps) = Probe::new(Duration::from_secs(60));
        probe.panic_on = vec![1, 2];
        sup.spawn(probe);
        let board = sup.board();
        settle().await;
        let s = board.get("probe").unwrap();
        assert_eq!(s.state, State::Backoff, "{s:?}");
        assert_eq!(s.last_error.as_deref(), Some("panicked: step 1 blew up"));
        assert_eq!((s.errors, s.consecutive_errors), (1, 1));
        // The shared backoff: 1 s (+ jitter < 20 %) after the first failure, 2 s (+ < 20 %) after
        // the second. So step 2 runs in [1.0, 1.2) s and step 3 in [3.0, 3.6) s: the checks sit
        // outside those windows (at 1.25, 2.95 and 3.65 s), whatever the jitter draws.
        tokio::time::sleep(Duration::from_millis(1250)).await;
        assert_eq!(steps.load(Ordering::SeqCst), 2);
        assert_eq!(board.get("probe").unwrap().consecutive_errors, 2);
        tokio::time::sleep(Duration::from_millis(1700)).await;
        assert_eq!(
            steps.load(Ordering::SeqCst),
            2,
            "the second delay is longer"
        );
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(
            steps.load(Ordering::SeqCst),
            3,
            "restarted after the backoff"
        );
        let s = board.get("probe").unwrap();
        assert_eq!(
            (s.state, s.errors, s.consecutive_errors),
            (State::Idle, 2, 0)
        );
        assert_eq!(
            s.last_error.as_deref(),
            Some("panicked: step 2 blew up"),
            "the last error stays visible after a success"
        );
        let text = metrics.encode().unwrap();
        for series in [
            "hearth_worker_runs_total{worker=\"probe\"} 3",
            "hearth_worker_errors_total{worker=\"probe\"} 2",
            "hearth_worker_up{worker=\"probe\"} 1",
        ] {
            assert!(text.contains(series), "missing {series} in\n{text}");
        }
        stop.cancel();
        sup.join().await;
        assert!(metrics
            .encode()
            .unwrap()
            .contains("hearth_worker_up{worker=\"probe\"} 0"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_step_should_back_off_longer_each_time_and_reset_on_success() {
        let (mut sup, stop) = supervisor(None);
        let (mut probe, steps) = Probe::new(Duration::from_secs(1));
        probe.fail_on = (1..=6).collect();
        sup.spawn(probe);
        let board = sup.board();
        // 1 + 2 + 4 + 8 + 16 + 30 s of backoff (each stretched by < 20 %) before step 7.
        tokio::time::sleep(Duration::from_secs(61)).await;
        assert_eq!(steps.load(Ordering::SeqCst), 6);
        let s = board.get("probe").unwrap();
        assert_eq!((s.state, s.consecutive_errors), (State::Backoff, 6));
        assert_eq!(s.last_error.as_deref(), Some("step 6 failed"));
        tokio::time::sleep(Duration::from_secs(36)).await;
        assert!(steps.load(Ordering::SeqCst) >= 7);
        assert_eq!(board.get("probe").unwrap().consecutive_errors, 0);
        stop.cancel();
        sup.join().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_trigger_should_make_the_next_step_due_early_and_its_end_be_an_error() {
        let (mut sup, stop) = supervisor(None);
        let (mut probe, steps) = Probe::new(Duration::from_secs(3600));
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        probe.trigger = Some(rx);
        sup.spawn(probe);
        let board = sup.board();
        settle().await;
        assert_eq!(steps.load(Ordering::SeqCst), 1);
        tx.send(()).await.unwrap();
        settle().await;
        assert_eq!(
            steps.load(Ordering::SeqCst),
            2,
            "triggered long before the hour"
        );
        drop(tx);
        settle().await;
        let s = board.get("probe").unwrap();
        assert_eq!(s.state, State::Backoff);
        assert_eq!(
            s.last_error.as_deref(),
            Some("the trigger's channel closed")
        );
        stop.cancel();
        sup.join().await;
    }

    /// A step that takes `took` and ignores the stop.
    struct Slow {
        took: Duration,
        finished: Arc<AtomicU32>,
    }

    impl Worker for Slow {
        fn name(&self) -> &'static str {
            "slow"
        }
        fn schedule(&self) -> String {
            "once".into()
        }
        async fn step(&mut self) -> Result<Next, Failure> {
            tokio::time::sleep(self.took).await;
            self.finished.fetch_add(1, Ordering::SeqCst);
            Ok(Next::Done)
        }
        fn grace(&self) -> Duration {
            Duration::from_secs(5)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_should_let_a_running_step_finish_within_its_grace_and_no_longer() {
        for (took, finishes) in [(Duration::from_secs(3), 1), (Duration::from_secs(60), 0)] {
            let (mut sup, stop) = supervisor(None);
            let finished = Arc::new(AtomicU32::new(0));
            sup.spawn(Slow {
                took,
                finished: finished.clone(),
            });
            let board = sup.board();
            settle().await;
            assert_eq!(board.get("slow").unwrap().state, State::Running);
            let start = tokio::time::Instant::now();
            stop.cancel();
            sup.join().await;
            assert!(start.elapsed() <= Duration::from_secs(5));
            assert_eq!(finished.load(Ordering::SeqCst), finishes, "{took:?}");
        }
    }
}
