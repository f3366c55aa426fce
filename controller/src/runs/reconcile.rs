//! The run reconciler: brings a recorded run up, tears a finishing one down, retries failed teardowns and closes starts an earlier process was cut off in — the only caller of stack apply and teardown for runs.
//!
//! A [`Run`] is desired state like a `WarmApp`: the API records it (`Runs::start`) or marks it
//! finished (`Runs::finish`) and waits on its status; this reconciler, on the controller
//! runtime (one reconcile per key at a time, backoff, requeues), does the work:
//!
//! | state                                   | step                                               |
//! |-----------------------------------------|----------------------------------------------------|
//! | terminal                                | nothing                                            |
//! | `spec.finish`                           | graceful teardown, verdict, slot release, promotion |
//! | Pending/Deploying, a request waits here | deps, then the run's stack; Running (or failed: teardown) |
//! | Pending/Deploying, no request waits     | cut off in an earlier process: closed (StartInterrupted, teardown) |
//! | Running with a `spec.target` not yet observed | redeploy the stack in place (`hearth run deploy`) |
//! | Running, Finishing/TeardownFailed without `spec.finish` | nothing (the sweeper's)            |
//!
//! A teardown that leaves objects ends the reconcile with [`Error::TeardownIncomplete`]: the
//! run stays TeardownFailed and the runtime retries it after the key's backoff
//! ([`config`]: 1 s doubling to [`TEARDOWN_RETRY_MAX`]).

use std::sync::Arc;
use std::time::Duration;

use crd::{Run, RunPhase};

use super::{Error, Result, Runs};
use crate::runtime::{self, Action, Controller, Reconciler};

/// The controller name of run reconciles in `hearth_reconciles_total` and its siblings.
pub const CONTROLLER: &str = "runs";

/// Longest wait between retries of a teardown that left objects behind.
pub const TEARDOWN_RETRY_MAX: Duration = Duration::from_secs(10);

/// The run reconciler (see the module docs).
#[derive(Debug)]
pub struct RunReconciler;

impl Reconciler for RunReconciler {
    type Object = Run;
    type Context = Runs;
    type Error = Error;

    async fn reconcile(run: Arc<Run>, runs: Arc<Runs>) -> Result<Action> {
        let timer = runs.metrics.as_ref().map(|m| m.reconcile_timer(CONTROLLER));
        let result = match runs.actor_of(&run.metadata.name) {
            Some(actor) => state::history::acting_as(actor, runs.reconcile(&run)).await,
            None => runs.reconcile(&run).await,
        };
        if run.status.phase.is_terminal() {
            runs.forget_actor(&run.metadata.name);
        }
        if let Some(timer) = timer {
            timer.finish(result.is_ok());
        }
        result
    }
}

/// The runtime settings of the run controller: many runs at once (a start or teardown takes
/// seconds of Docker work; the API waits on them), teardown retries from 1 s up to
/// [`TEARDOWN_RETRY_MAX`], and a resync every minute as the safety net.
pub fn config() -> runtime::Config {
    runtime::Config {
        concurrency: 64,
        resync_period: Duration::from_secs(60),
        backoff_base: Duration::from_secs(1),
        backoff_max: TEARDOWN_RETRY_MAX,
        ..runtime::Config::default()
    }
}

/// The run controller over `runs`' store, with `config`. Run it with [`Controller::run`];
/// `Runs::start` and `Runs::finish` wait for it.
pub fn controller(runs: Runs, config: runtime::Config) -> Controller<RunReconciler> {
    let store = runs.store.clone();
    Controller::new(store, Arc::new(runs), config)
}

/// What one reconcile of a run does, from its recorded state and whether a request of this
/// process waits for its start (pure; see the table in the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Over: nothing to do.
    Nothing,
    /// Tear down (graceful), then verdict, slot release, promotion.
    TearDown,
    /// Deploy its deps and stack.
    BringUp,
    /// A start cut off in an earlier process: record it, then tear down.
    CloseInterrupted,
    /// `hearth run deploy` asked for other content in the running stack: redeploy in place.
    Redeploy,
}

/// The step for `run` (see [`Step`]).
pub fn step(run: &Run, starting_here: bool) -> Step {
    match run.status.phase {
        // Terminal: everything of it is gone.
        RunPhase::Succeeded | RunPhase::Failed | RunPhase::Expired | RunPhase::Orphaned => {
            Step::Nothing
        }
        // Finish asked (by the CI job, or after a failed or cut-off start): tear down, retried
        // while objects remain.
        _ if run.spec.finish => Step::TearDown,
        // A start this process answers.
        RunPhase::Pending | RunPhase::Deploying if starting_here => Step::BringUp,
        // Recorded by an earlier process that never answered: nobody has its id.
        RunPhase::Pending | RunPhase::Deploying => Step::CloseInterrupted,
        // Up, and `hearth run deploy` asked for a target not yet deployed (issue 16).
        RunPhase::Running
            if run.spec.target.is_some()
                && run.status.observed_generation < run.metadata.generation =>
        {
            Step::Redeploy
        }
        // Up: the CI job runs its tiers.
        RunPhase::Running => Step::Nothing,
        // Left by the sweeper's forced teardown of an orphaned run: its next pass retries.
        RunPhase::Finishing | RunPhase::TeardownFailed => Step::Nothing,
    }
}

impl Runs {
    /// One reconcile of `run` (see the module docs).
    async fn reconcile(&self, run: &Run) -> Result<Action> {
        let name = run.metadata.name.as_str();
        match step(run, self.is_starting_here(name)) {
            Step::Nothing => Ok(Action::await_change()),
            Step::TearDown => self.tear_down_step(name).await,
            Step::BringUp => match self.bring_up(name).await {
                Ok(_) => Ok(Action::await_change()),
                Err(e) => {
                    let msg = e.to_string().to_lowercase();
                    tracing::warn!(run = name, error = %crate::errors::chain(&e), "start failed; tearing down what it deployed");
                    self.start_errors
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(name.to_string(), e);
                    self.edit_status(name, |r| r.status.last_error = Some(msg.clone()))
                        .await?;
                    self.mark_finish(name).await?;
                    self.tear_down_step(name).await
                }
            },
            Step::Redeploy => {
                self.redeploy(run).await?;
                Ok(Action::await_change())
            }
            Step::CloseInterrupted => {
                tracing::info!(
                    run = name,
                    "closing a start an earlier process was cut off in"
                );
                self.close_interrupted(name).await?;
                self.tear_down_step(name).await
            }
        }
    }

    /// Tears down and records the outcome; objects left are an error, so the runtime retries.
    async fn tear_down_step(&self, name: &str) -> Result<Action> {
        let run = self.teardown(name).await?;
        if run.status.phase == RunPhase::TeardownFailed {
            return Err(Error::TeardownIncomplete {
                run: name.to_string(),
                left: run.status.residuals.len(),
            });
        }
        Ok(Action::await_change())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crd::{Owner, RunSpec};

    fn run(phase: RunPhase, finish: bool) -> Run {
        let mut r = Run::new(
            "web-0123456789",
            RunSpec {
                recipe: "web".into(),
                version: "1.0.0".into(),
                git_ref: None,
                owner: Owner::default(),
                lease: None,
                slot_pool: None,
                deps: vec![],
                required_tiers: vec![],
                deploy: true,
                finish,
                content: None,
                target: None,
            },
        );
        r.status.phase = phase;
        r
    }

    #[test]
    fn a_start_is_brought_up_only_by_the_process_answering_it() {
        assert_eq!(step(&run(RunPhase::Deploying, false), true), Step::BringUp);
        assert_eq!(
            step(&run(RunPhase::Deploying, false), false),
            Step::CloseInterrupted
        );
        assert_eq!(
            step(&run(RunPhase::Pending, false), false),
            Step::CloseInterrupted
        );
    }

    #[test]
    fn finish_tears_down_until_terminal_whatever_the_phase() {
        for phase in [
            RunPhase::Deploying,
            RunPhase::Running,
            RunPhase::Finishing,
            RunPhase::TeardownFailed,
        ] {
            assert_eq!(step(&run(phase, true), true), Step::TearDown, "{phase:?}");
            assert_eq!(step(&run(phase, true), false), Step::TearDown, "{phase:?}");
        }
        for phase in [
            RunPhase::Succeeded,
            RunPhase::Failed,
            RunPhase::Expired,
            RunPhase::Orphaned,
        ] {
            assert_eq!(step(&run(phase, true), false), Step::Nothing, "{phase:?}");
        }
    }

    #[test]
    fn a_running_run_with_a_new_target_is_redeployed_once() {
        let mut r = run(RunPhase::Running, false);
        r.spec.target = Some(crd::run::DeployTarget {
            version: "1.0.0".into(),
            content: None,
            from: "version".into(),
        });
        r.metadata.generation = 2;
        r.status.observed_generation = 1;
        assert_eq!(step(&r, false), Step::Redeploy);
        r.status.observed_generation = 2;
        assert_eq!(step(&r, false), Step::Nothing);
        // Finishing wins over a pending redeploy.
        r.spec.finish = true;
        r.status.observed_generation = 1;
        assert_eq!(step(&r, false), Step::TearDown);
    }

    #[test]
    fn a_running_run_is_left_to_its_ci_job() {
        assert_eq!(step(&run(RunPhase::Running, false), false), Step::Nothing);
        assert_eq!(step(&run(RunPhase::Running, false), true), Step::Nothing);
    }
}
