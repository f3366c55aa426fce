//! Progress while a stack converges: each service's ready/desired tasks and every task that
//! fails, shown live on a terminal (indicatif) or as one line per change (CI logs).
//!
//! Deciding is pure ([`look`], [`Tracker::update`], [`Tracker::verdict`]); showing is one of
//! two [`Display`]s. `hearth stack deploy` waits with them unless `--detach` is given.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal, Write};
use std::time::{Duration, SystemTime};

use clap::{Args, ValueEnum};

use crate::stack::{status, Observed};
use crate::swarm::{Health, ServiceMode, TaskState};

/// How many failed or rejected tasks per wanted task of one service, since the wait began and
/// with the service still not ready, end the wait as failed before the timeout. Swarm replaces
/// a failed task (after the restart delay, 5 s by default), so three failures per replica mean
/// it tried and kept failing: a missing image, a command that exits, a health check that never
/// passes.
pub const FAILURES_TO_GIVE_UP: usize = 3;

/// How progress is shown (`--progress`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Live on a terminal, else plain.
    Auto,
    /// Bars redrawn in place (on stderr).
    Tty,
    /// One line per change (for logs).
    Plain,
}

impl Mode {
    /// Resolves `Auto` by whether stderr is a terminal.
    pub fn resolve(self) -> Mode {
        match self {
            Mode::Auto if std::io::stderr().is_terminal() => Mode::Tty,
            Mode::Auto => Mode::Plain,
            m => m,
        }
    }
}

/// The waiting flags of commands that wait for an outcome (`promote`, `rollback`).
#[derive(Debug, Clone, Args)]
pub struct WaitArgs {
    /// Return once the daemon accepted the request, without waiting for the outcome.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// How progress is shown while waiting: `tty` (live, on stderr), `plain` (a line per
    /// change), `auto` (`tty` when stderr is a terminal).
    #[arg(long, value_enum, default_value_t = Mode::Auto)]
    pub progress: Mode,
    /// How long to wait for the outcome, e.g. `90s`, `10m`.
    #[arg(long = "wait-timeout", value_parser = humantime::parse_duration, default_value = "10m")]
    pub timeout: Duration,
}

impl WaitArgs {
    /// `--detach`: return at once (what the commands did before waiting became the default).
    pub fn detached() -> WaitArgs {
        WaitArgs {
            detach: true,
            progress: Mode::Plain,
            timeout: Duration::from_secs(600),
        }
    }

    /// The display these flags ask for, lines going to `err`.
    pub fn display<'a>(&self, err: &'a mut dyn Write) -> Box<dyn Display + 'a> {
        match self.progress.resolve() {
            Mode::Tty => Box::new(Live::new()),
            _ => Box::new(Lines::new(err)),
        }
    }
}

/// One service as the progress shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceView {
    /// Service name.
    pub name: String,
    /// Tasks running (and healthy where checked).
    pub ready: u64,
    /// Tasks wanted.
    pub desired: u64,
    /// What the first task that is not ready is doing (`task is preparing`, `health:
    /// starting`), none when every task is ready.
    pub note: Option<String>,
}

/// A task that failed or was rejected, with its error as `docker service ps --no-trunc` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFailure {
    /// Its service's name.
    pub service: String,
    /// `service.slot` (or the service name for global tasks), as docker's NAME column.
    pub task_name: String,
    /// Task ID.
    pub task_id: String,
    /// `rejected`, `failed`, or `complete` (exited while wanted running).
    pub state: String,
    /// The task's error (`Status.Err`), else its message.
    pub error: String,
}

impl std::fmt::Display for TaskFailure {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            out,
            "{} ({}) {}: {}",
            self.task_name, self.task_id, self.state, self.error
        )
    }
}

/// One look at the stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Look {
    /// Each service, by name.
    pub services: Vec<ServiceView>,
    /// Failed or rejected tasks created at or after the wait began, oldest first.
    pub failures: Vec<TaskFailure>,
    /// Every service is ready (a stack without services counts as ready: nothing to wait for).
    pub ready: bool,
}

/// Reads progress from an observation made with tasks (`Depth::WithTasks`): readiness as
/// [`status`] judges it, and the tasks that failed since `since`.
pub fn look(observed: &Observed, since: SystemTime) -> Look {
    let st = status(observed);
    let services: Vec<ServiceView> = st
        .services
        .iter()
        .map(|s| ServiceView {
            name: s.name.clone(),
            ready: s.ready_tasks,
            desired: s.desired,
            note: s.problems.first().map(|p| p.message.clone()).or_else(|| {
                // Swarm has not (yet, or again: a restart delay) created the missing tasks.
                (s.ready_tasks < s.desired).then(|| "waiting for a task".to_string())
            }),
        })
        .collect();
    let names: BTreeMap<&str, &str> = observed
        .services
        .iter()
        .map(|s| (s.meta.id.as_str(), s.meta.name.as_str()))
        .collect();
    // Jobs complete by design; a replicated or global service's task that completes exited
    // while wanted running (e.g. killed for failing its health check and exiting 0, which
    // Swarm reports as `complete` without an error).
    let long_running: BTreeSet<&str> = observed
        .services
        .iter()
        .filter(|s| s.mode != ServiceMode::Other)
        .map(|s| s.meta.id.as_str())
        .collect();
    let mut failed: Vec<_> = observed
        .tasks
        .iter()
        .filter(|t| match t.state {
            TaskState::Failed | TaskState::Rejected => true,
            TaskState::Complete => long_running.contains(t.service_id.as_str()),
            _ => false,
        })
        .filter(|t| t.created_at.is_some_and(|c| c >= since))
        .collect();
    failed.sort_by_key(|t| t.created_at);
    let failures = failed
        .into_iter()
        .map(|t| {
            let service = names
                .get(t.service_id.as_str())
                .map_or_else(|| t.service_id.clone(), |n| (*n).to_string());
            TaskFailure {
                task_name: match t.slot {
                    Some(slot) => format!("{service}.{slot}"),
                    None => service.clone(),
                },
                service,
                task_id: t.id.clone(),
                state: format!("{:?}", t.state).to_lowercase(),
                error: {
                    let said = t.error.clone().or_else(|| t.message.clone());
                    let unhealthy = t.container_id.as_deref().is_some_and(|id| {
                        observed
                            .containers
                            .iter()
                            .any(|c| c.id == id && c.health == Some(Health::Unhealthy))
                    });
                    match (said, unhealthy) {
                        (Some(s), true) => format!("{s} (its health check failed)"),
                        (None, true) => "its health check failed".to_string(),
                        (Some(s), false) => s,
                        (None, false) => "exited".to_string(),
                    }
                },
            }
        })
        .collect();
    Look {
        ready: st.ready || observed.services.is_empty(),
        services,
        failures,
    }
}

/// What changed since the previous look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A service's counts or note changed (or it was seen for the first time).
    Service(ServiceView),
    /// A task failed (each once).
    Failed(TaskFailure),
}

/// How the wait stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every service is ready.
    Converged,
    /// Keep waiting.
    Waiting,
    /// A service that is not ready had [`FAILURES_TO_GIVE_UP`] failed tasks per wanted task:
    /// stop waiting.
    Failing {
        /// The service.
        service: String,
    },
}

/// Remembers what was shown, so each look yields only what changed.
#[derive(Debug, Default)]
pub struct Tracker {
    views: BTreeMap<String, ServiceView>,
    seen: BTreeSet<String>,
    failures: Vec<TaskFailure>,
    last: Option<Look>,
}

impl Tracker {
    /// The changes `look` brings, and it becomes the current look.
    pub fn update(&mut self, look: Look) -> Vec<Change> {
        let mut changes = Vec::new();
        for view in &look.services {
            if self.views.get(&view.name) != Some(view) {
                self.views.insert(view.name.clone(), view.clone());
                changes.push(Change::Service(view.clone()));
            }
        }
        for failure in &look.failures {
            if self.seen.insert(failure.task_id.clone()) {
                self.failures.push(failure.clone());
                changes.push(Change::Failed(failure.clone()));
            }
        }
        self.last = Some(look);
        changes
    }

    /// Every failure seen since the wait began, oldest first.
    pub fn failures(&self) -> &[TaskFailure] {
        &self.failures
    }

    /// The last five failures, oldest first, joined with `; `: what an error message repeats
    /// (the whole list was shown as it happened). Empty when there were none.
    pub fn last_failures(&self) -> String {
        let from = self.failures.len().saturating_sub(5);
        let shown: Vec<String> = self.failures[from..]
            .iter()
            .map(|f| f.to_string())
            .collect();
        shown.join("; ")
    }

    /// The last look's services that are not ready, as `web 0/2 (task is rejected: …)`.
    pub fn not_ready(&self) -> Vec<String> {
        let Some(look) = &self.last else {
            return vec!["the stack was never observed".to_string()];
        };
        look.services
            .iter()
            .filter(|s| s.note.is_some() || s.ready < s.desired)
            .map(service_line)
            .collect()
    }

    /// Converged, still waiting, or failing (see [`FAILURES_TO_GIVE_UP`]).
    pub fn verdict(&self) -> Verdict {
        let Some(look) = &self.last else {
            return Verdict::Waiting;
        };
        if look.ready {
            return Verdict::Converged;
        }
        for s in &look.services {
            let not_ready = s.note.is_some() || s.ready < s.desired;
            let failed = self.failures.iter().filter(|f| f.service == s.name).count();
            let limit = FAILURES_TO_GIVE_UP * usize::try_from(s.desired.max(1)).unwrap_or(1);
            if not_ready && failed >= limit {
                return Verdict::Failing {
                    service: s.name.clone(),
                };
            }
        }
        Verdict::Waiting
    }
}

/// Shows changes as they happen.
pub trait Display {
    /// Shows `changes` (the tracker already holds them).
    ///
    /// # Errors
    /// Writing failed.
    fn show(&mut self, changes: &[Change]) -> std::io::Result<()>;
    /// Shows a line about the whole (a phase change).
    ///
    /// # Errors
    /// Writing failed.
    fn note(&mut self, line: &str) -> std::io::Result<()>;
    /// The wait is over (`failed`: the service whose tasks kept failing): leaves the final
    /// state on screen.
    fn finish(&mut self, failed: Option<&str>);
}

/// One line per change, for logs: `web 1/2 ready (health: starting)`, `web.1 (id) rejected: …`.
pub struct Lines<'a> {
    out: &'a mut dyn Write,
}

impl<'a> Lines<'a> {
    /// Lines written to `out`.
    pub fn new(out: &'a mut dyn Write) -> Lines<'a> {
        Lines { out }
    }
}

/// A service's line: `web 1/2 ready (health: starting)`.
pub fn service_line(v: &ServiceView) -> String {
    let note = v
        .note
        .as_deref()
        .map(|n| format!(" ({n})"))
        .unwrap_or_default();
    format!("{} {}/{} ready{note}", v.name, v.ready, v.desired)
}

impl Display for Lines<'_> {
    fn show(&mut self, changes: &[Change]) -> std::io::Result<()> {
        for change in changes {
            match change {
                Change::Service(v) => writeln!(self.out, "{}", service_line(v))?,
                Change::Failed(f) => writeln!(self.out, "{f}")?,
            }
        }
        self.out.flush()
    }

    fn note(&mut self, line: &str) -> std::io::Result<()> {
        writeln!(self.out, "{line}")?;
        self.out.flush()
    }

    fn finish(&mut self, _failed: Option<&str>) {}
}

/// Bars redrawn in place on stderr, one per service; failures printed above them.
pub struct Live {
    multi: indicatif::MultiProgress,
    bars: BTreeMap<String, indicatif::ProgressBar>,
    style: indicatif::ProgressStyle,
}

impl Live {
    /// A live display on stderr, redrawn at most 10 times a second.
    pub fn new() -> Live {
        let multi = indicatif::MultiProgress::with_draw_target(
            indicatif::ProgressDrawTarget::stderr_with_hz(10),
        );
        let style = indicatif::ProgressStyle::with_template(
            "{spinner:.cyan} {prefix:.bold} [{bar:20.green/white}] {pos}/{len} {wide_msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> ");
        Live {
            multi,
            bars: BTreeMap::new(),
            style,
        }
    }
}

impl Default for Live {
    fn default() -> Self {
        Live::new()
    }
}

impl Display for Live {
    fn show(&mut self, changes: &[Change]) -> std::io::Result<()> {
        // Names padded to the longest of the batch (the first look names every service).
        let width = changes
            .iter()
            .filter_map(|c| match c {
                Change::Service(v) => Some(v.name.chars().count()),
                Change::Failed(_) => None,
            })
            .max()
            .unwrap_or(0);
        for change in changes {
            match change {
                Change::Service(v) => {
                    let bar = self.bars.entry(v.name.clone()).or_insert_with(|| {
                        let bar = self.multi.add(indicatif::ProgressBar::new(v.desired));
                        bar.set_style(self.style.clone());
                        bar.set_prefix(format!("{:<width$}", v.name));
                        bar.enable_steady_tick(Duration::from_millis(120));
                        bar
                    });
                    bar.set_length(v.desired);
                    bar.set_position(v.ready);
                    let done = v.note.is_none() && v.ready >= v.desired;
                    bar.set_message(match (&v.note, done) {
                        (_, true) => "ready".to_string(),
                        (Some(n), false) => n.clone(),
                        (None, false) => "waiting for a task".to_string(),
                    });
                }
                Change::Failed(f) => self.multi.println(format!("✗ {f}"))?,
            }
        }
        Ok(())
    }

    fn note(&mut self, line: &str) -> std::io::Result<()> {
        self.multi.println(line)
    }

    fn finish(&mut self, failed: Option<&str>) {
        if let Some(bar) = failed.and_then(|name| self.bars.get(name)) {
            bar.set_message("✗ its tasks keep failing");
        }
        for bar in self.bars.values() {
            bar.disable_steady_tick();
            bar.tick();
            bar.abandon();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::swarm::{Container, ContainerState, Meta, Service, Task};

    fn service(id: &str, name: &str, replicas: u64) -> Service {
        Service {
            meta: Meta {
                id: id.into(),
                name: name.into(),
                version: 1,
                labels: Default::default(),
                created_at: None,
                updated_at: None,
            },
            image: None,
            mode: ServiceMode::Replicated(replicas),
            volume_sources: Vec::new(),
            template_digest: None,
        }
    }

    fn task(
        id: &str,
        service: &str,
        state: TaskState,
        error: Option<&str>,
        at: SystemTime,
    ) -> Task {
        Task {
            id: id.into(),
            service_id: service.into(),
            slot: Some(1),
            desired_state: if matches!(state, TaskState::Rejected | TaskState::Failed) {
                TaskState::Shutdown
            } else {
                TaskState::Running
            },
            state,
            error: error.map(String::from),
            created_at: Some(at),
            version: 1,
            node_id: None,
            message: None,
            container_id: None,
            labels: Default::default(),
            template_digest: None,
            container_labels: Default::default(),
        }
    }

    #[test]
    fn a_rejected_task_is_shown_once_with_its_error_and_three_end_the_wait() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let at = |s| t0 + Duration::from_secs(s);
        let mut observed = Observed {
            services: vec![service("s1", "ns_web", 1)],
            tasks: vec![
                // Before the wait began: not this deploy's failure.
                task(
                    "old",
                    "s1",
                    TaskState::Rejected,
                    Some("old error"),
                    at(0) - Duration::from_secs(5),
                ),
                task(
                    "t1",
                    "s1",
                    TaskState::Rejected,
                    Some("No such image: x:1"),
                    at(1),
                ),
                task("t2", "s1", TaskState::Pending, None, at(6)),
            ],
            ..Observed::default()
        };
        let mut tracker = Tracker::default();
        let changes = tracker.update(look(&observed, t0));
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert!(matches!(&changes[0], Change::Service(v) if v.ready == 0 && v.desired == 1));
        let Change::Failed(f) = &changes[1] else {
            panic!("{changes:?}")
        };
        assert_eq!(f.to_string(), "ns_web.1 (t1) rejected: No such image: x:1");
        assert_eq!(tracker.verdict(), Verdict::Waiting);
        // The same look again changes nothing.
        assert!(tracker.update(look(&observed, t0)).is_empty());
        observed.tasks[2] = task(
            "t2",
            "s1",
            TaskState::Rejected,
            Some("No such image: x:1"),
            at(6),
        );
        observed.tasks.push(task(
            "t3",
            "s1",
            TaskState::Rejected,
            Some("No such image: x:1"),
            at(11),
        ));
        let changes = tracker.update(look(&observed, t0));
        assert_eq!(
            changes
                .iter()
                .filter(|c| matches!(c, Change::Failed(_)))
                .count(),
            2
        );
        assert_eq!(
            tracker.verdict(),
            Verdict::Failing {
                service: "ns_web".into()
            }
        );
        assert_eq!(tracker.failures().len(), 3);
        assert_eq!(tracker.not_ready().len(), 1);
    }

    #[test]
    fn a_running_service_without_healthcheck_converges_and_lines_say_so() {
        let t0 = SystemTime::UNIX_EPOCH;
        let mut t = task("t1", "s1", TaskState::Running, None, t0);
        t.container_id = Some("c1".into());
        let observed = Observed {
            services: vec![service("s1", "ns_web", 1)],
            tasks: vec![t],
            containers: vec![Container {
                id: "c1".into(),
                name: "ns_web.1".into(),
                labels: Default::default(),
                image_id: None,
                state: ContainerState::Running,
                health: None,
                status: "Up".into(),
                created_at: None,
            }],
            ..Observed::default()
        };
        let mut tracker = Tracker::default();
        let changes = tracker.update(look(&observed, t0));
        assert_eq!(tracker.verdict(), Verdict::Converged);
        let mut out = Vec::new();
        Lines::new(&mut out).show(&changes).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "ns_web 1/1 ready\n");
    }

    #[test]
    fn a_completed_task_is_a_failure_of_a_service_but_not_of_a_job() {
        let t0 = SystemTime::UNIX_EPOCH;
        let mut job = service("s2", "ns_job", 1);
        job.mode = ServiceMode::Other;
        let mut done = task("t1", "s1", TaskState::Complete, None, t0);
        done.message = Some("finished".into());
        let observed = Observed {
            services: vec![service("s1", "ns_web", 1), job],
            tasks: vec![done, task("t2", "s2", TaskState::Complete, None, t0)],
            ..Observed::default()
        };
        let seen = look(&observed, t0);
        assert_eq!(seen.failures.len(), 1, "{:?}", seen.failures);
        assert_eq!(
            seen.failures[0].to_string(),
            "ns_web.1 (t1) complete: finished"
        );
    }

    #[test]
    fn a_stack_without_services_has_nothing_to_wait_for() {
        let mut tracker = Tracker::default();
        tracker.update(look(&Observed::default(), SystemTime::UNIX_EPOCH));
        assert_eq!(tracker.verdict(), Verdict::Converged);
    }
}
