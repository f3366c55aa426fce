//! The run reconciler: brings a recorded run up, tears a finishing one down, retries failed teardowns, closes runs the sweeper marked and starts an earlier process was cut off in — the only caller of stack apply and teardown for runs.
//!
//! A [`Run`] is desired state like a `WarmApp`: the API records it (`Runs::start`) or marks it
//! finished (`Runs::finish`) and waits on its status; this reconciler, on the controller
//! runtime (one reconcile per key at a time, backoff, requeues), does the work:
//!
//! | state                                   | step                                               |
//! |-----------------------------------------|----------------------------------------------------|
//! | terminal                                | nothing                                            |
//! | marked by the sweeper ([`sweeper::CLOSING`]) | forced teardown of what hearth owns of it, Orphaned/Expired ([`Sweeper::close`](crate::sweeper::Sweeper::close)) |
//! | `spec.finish`                           | graceful teardown, verdict, slot release, promotion |
//! | Pending/Deploying, a request waits here | deps, then the run's stack; Running (or failed: teardown) |
//! | Pending/Deploying, no request waits     | cut off in an earlier process: closed (StartInterrupted, teardown) |
//! | Running with a `spec.target` not yet observed | redeploy the stack in place (`hearth run deploy`) |
//! | Running                                 | nothing (the CI job runs its tiers)                |
//!
//! A teardown that leaves objects ends the reconcile with [`Error::TeardownIncomplete`]: the
//! run stays TeardownFailed and the runtime retries it after the key's backoff
//! ([`config`]: 1 s doubling to [`TEARDOWN_RETRY_MAX`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crd::names::{self, StackRole};
use crd::run::{DepBinding, DeployTarget};
use crd::{DepProvider, DepProviderSpec, Kind, OwnerKind, Run, RunPhase, WarmApp, WarmAppPhase};
use state::history::{reason, NewEntry, ObjectRef};
use state::CONFLICT_ATTEMPTS;

use super::{
    describe_target, phase_after_teardown, teardown_order, Error, Result, Runs, COLLISION_SWEPT,
};
use crate::catalogue::RenderRequest;
use crate::errors::chain;
use crate::runtime::{self, Action, Controller, Reconciler};
use crate::stack::{self, Depth};
use crate::swarm::ContainerState;
use crate::sweeper::{self, Reason};

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
/// `runs`' sweeper (if any) is told to trigger this controller for every run it marks.
pub fn controller(runs: Runs, config: runtime::Config) -> Controller<RunReconciler> {
    let store = runs.store.clone();
    let sweeper = runs.sweeper.clone();
    let controller = Controller::new(store, Arc::new(runs), config);
    if let Some(sweeper) = sweeper {
        sweeper.close_through(controller.handle());
    }
    controller
}

/// What one reconcile of a run does, from its recorded state and whether a request of this
/// process waits for its start (pure; see the table in the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Over: nothing to do.
    Nothing,
    /// Marked by the sweeper (owner dead, lease expired): forced teardown of what hearth owns
    /// of it, then Orphaned/Expired.
    Close(Reason),
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
    if run.status.phase.is_terminal() {
        return Step::Nothing;
    }
    // Before a finish: a dead owner's run is removed forced, whatever it was doing.
    if let Some(why) = sweeper::closing_reason(run) {
        return Step::Close(why);
    }
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
        // Not marked finished nor closing: nothing asked it (no phase of hearth's own leads
        // here; the resync looks again).
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
            Step::Close(why) => {
                let Some(sweeper) = &self.sweeper else {
                    tracing::warn!(
                        run = name,
                        "marked for closing, but no sweeper is configured"
                    );
                    return Ok(Action::await_change());
                };
                let closure = sweeper.close(name, why).await?;
                if !closure.remained.is_empty() {
                    return Err(Error::TeardownIncomplete {
                        run: name.to_string(),
                        left: closure.remained.len(),
                    });
                }
                Ok(Action::await_change())
            }
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

/// The reconciler's Docker steps: the only calls of `stack::apply` and `stack::teardown` for
/// runs.
impl Runs {
    /// Sweeps leftovers under `namespace` (forced) before hearth deploys there, recording it.
    ///
    /// # Errors
    /// [`Error::StackFailed`] when the leftovers cannot be removed (nothing is deployed then).
    async fn clear_leftovers(&self, namespace: &str, run: &str) -> Result<usize> {
        let observed = self.observe(namespace).await?;
        if observed.is_empty() {
            return Ok(0);
        }
        let report = stack::teardown(
            self.swarm.as_ref(),
            namespace,
            &self.config.collision_teardown,
        )
        .await?;
        let removed: Vec<String> = report.removed.iter().map(ToString::to_string).collect();
        self.store
            .append_history(
                NewEntry::new(
                    COLLISION_SWEPT,
                    format!(
                        "leftovers under {namespace} swept before deploying: {} object(s)",
                        removed.len()
                    ),
                )
                .subject(ObjectRef::new(Kind::Run, run))
                .details(serde_json::json!({"namespace": namespace, "removed": removed})),
            )
            .await?;
        Ok(removed.len())
    }

    fn render(
        &self,
        recipe: &str,
        version: &str,
        stack: &str,
        domain: &str,
        env: &std::collections::BTreeMap<String, String>,
        at: Option<&str>,
    ) -> Result<crate::swarm::spec::StackSpec> {
        let catalogue = self
            .catalogue
            .as_ref()
            .ok_or_else(|| Error::RequestRejected("no recipe catalogue configured".into()))?;
        let request = RenderRequest {
            recipe,
            version,
            stack,
            domain,
            env,
        };
        // A run's `ref` names the recipe commit under test: for a git recipe (or a checkout)
        // that is not the version's tag, a chaos deploy of it (issue 15).
        match at {
            Some(at) => catalogue.render_at(&request, at),
            None => catalogue.render(&request),
        }
        .map(|r| r.stack)
        .map_err(|source| Error::RenderFailed {
            recipe: recipe.into(),
            version: version.into(),
            source: Box::new(source),
        })
    }

    /// Lists a stack's objects, retrying retryable failures for up to 30 s (the shared Docker
    /// retry, [`stack::retry::until`]).
    async fn observe(&self, namespace: &str) -> Result<stack::Observed> {
        let until = tokio::time::Instant::now() + Duration::from_secs(30);
        let retried = std::sync::atomic::AtomicBool::new(false);
        stack::retry::until(until, stack::Error::is_retryable, &retried, || {
            stack::observe(self.swarm.as_ref(), namespace, Depth::Objects)
        })
        .await
        .map_err(Error::from)
    }

    async fn bring_up(&self, name: &str) -> Result<Run> {
        let run = self.resolve_owner(name).await?;
        // 1. Deps, in order (the slot came with the run's record).
        for dep in &run.spec.deps {
            self.bring_up_dep(name, dep).await?;
        }
        // 2. The run's own stack.
        let stack_name = run.stack_name()?.into_string();
        self.clear_leftovers(&stack_name, name).await?;
        let mut deployed = None;
        if run.spec.deploy {
            let target = DeployTarget {
                version: run.spec.version.clone(),
                content: run.spec.content.clone(),
                from: "run".into(),
            };
            self.deploy_target(&run, &target).await?;
            deployed = Some(target);
        }
        let now = self.clock.now_ms();
        self.edit_status(name, |r| {
            r.status.phase = RunPhase::Running;
            r.status.deployed_at_ms = Some(now);
            r.status.deployed = deployed.clone();
        })
        .await
    }

    /// Renders `target` (from its snapshot when it has content, else the catalogue's version
    /// as before snapshots) and applies it as the run's stack, recording it in the history.
    async fn deploy_target(&self, run: &Run, target: &DeployTarget) -> Result<()> {
        let name = run.metadata.name.as_str();
        let stack_name = run.stack_name()?.into_string();
        let domain = run.status.domain.clone().unwrap_or_default();
        let spec = match &target.content {
            Some(content) => {
                let env = BTreeMap::new();
                let request = RenderRequest {
                    recipe: &run.spec.recipe,
                    version: &target.version,
                    stack: &stack_name,
                    domain: &domain,
                    env: &env,
                };
                self.snapshots
                    .render(content, &request)
                    .map_err(|e| Error::SnapshotFailed {
                        run: name.to_string(),
                        reason: crate::errors::chain(&e),
                    })?
                    .stack
            }
            None => self.render(
                &run.spec.recipe,
                &target.version,
                &stack_name,
                &domain,
                &Default::default(),
                run.spec.git_ref.as_deref().filter(|_| target.from == "run"),
            )?,
        };
        let owner = self.stack_owner("Run", name, StackRole::Run, name);
        stack::apply(self.swarm.as_ref(), &spec, &owner, &self.config.apply).await?;
        let what = describe_target(target);
        self.store
            .append_history(
                NewEntry::new(
                    reason::DEPLOYED,
                    format!("run stack {stack_name} deployed: {what}"),
                )
                .subject(ObjectRef::new(Kind::Run, name))
                .details(serde_json::json!({
                    "version": target.version,
                    "from": target.from,
                    "content": target.content,
                })),
            )
            .await?;
        Ok(())
    }

    /// The reconciler's redeploy of `spec.target` (see [`Runs::deploy`]): applied, or the
    /// failure recorded; either way the generation is marked observed, so the waiting request
    /// answers and a failed deploy is not retried on its own.
    async fn redeploy(&self, run: &Run) -> Result<()> {
        let name = run.metadata.name.as_str();
        let generation = run.metadata.generation;
        let Some(target) = run.spec.target.clone() else {
            return Ok(());
        };
        match self.deploy_target(run, &target).await {
            Ok(()) => {
                self.edit_status(name, |r| {
                    r.status.deployed = Some(target.clone());
                    r.status.observed_generation = generation;
                    r.status.last_error = None;
                })
                .await?;
            }
            Err(e) => {
                let msg = crate::errors::chain(&e).to_lowercase();
                tracing::warn!(run = name, error = %msg, "redeploy failed");
                self.edit_status(name, |r| {
                    r.status.observed_generation = generation;
                    r.status.last_error = Some(msg.clone());
                })
                .await?;
            }
        }
        Ok(())
    }

    /// A `container:REF` owner must name a container that runs on the swarm's engine now; it
    /// is recorded by its full ID (what Docker's events name) before anything is deployed.
    /// Other owners are left as they are.
    ///
    /// # Errors
    /// [`Error::OwnerUnavailable`] when the container does not exist or does not run, or the
    /// engine could not tell.
    async fn resolve_owner(&self, name: &str) -> Result<Run> {
        let run = self.get(name)?;
        let OwnerKind::Container(reference) = &run.spec.owner.kind else {
            return Ok(run);
        };
        let unavailable = |why: String| Error::OwnerUnavailable {
            run: name.to_string(),
            reason: format!("spec.owner.kind.container: {why}"),
        };
        let found = self
            .swarm
            .inspect_container(reference)
            .await
            .map_err(|e| match e {
                e if e.is_not_found() => unavailable(format!(
                    "no container {reference:?} on the swarm's engine (a container owner must run on the engine hearth manages)"
                )),
                e => unavailable(format!("cannot inspect container {reference:?}: {}", chain(&e))),
            })?;
        if found.state != ContainerState::Running {
            return Err(unavailable(format!(
                "container {reference:?} is not running (state {:?})",
                found.state
            )));
        }
        if *reference == found.id {
            return Ok(run);
        }
        let owner = run
            .spec
            .owner
            .clone()
            .with_kind(OwnerKind::Container(found.id));
        state::retry_conflicts(CONFLICT_ATTEMPTS, Error::is_store_conflict, || async {
            let mut run = self.get(name)?;
            run.spec.owner = owner.clone();
            Ok(self.store.update(&run).await?)
        })
        .await
    }

    async fn bring_up_dep(&self, run_name: &str, dep: &str) -> Result<()> {
        let run = self.get(run_name)?;
        let unavailable = |reason: String| Error::DepUnavailable {
            run: run_name.into(),
            dep: dep.into(),
            reason,
        };
        let provider = self
            .store
            .get_opt::<DepProvider>(dep)?
            .ok_or_else(|| unavailable("no DepProvider of that name".into()))?;
        let stack = provider.stack_for_run(&run)?;
        let domain = names::domain(&stack, &self.config.base_domain);
        let mut binding = DepBinding {
            name: dep.into(),
            mode: provider.spec.mode(),
            stack_name: stack.to_string(),
            domain: Some(domain.clone()),
            ready: false,
        };
        match &provider.spec {
            DepProviderSpec::Shared { warm_app } => {
                let app = self
                    .store
                    .get_opt::<WarmApp>(warm_app)?
                    .ok_or_else(|| unavailable(format!("warm app {warm_app} is not declared")))?;
                if !app.spec.provider {
                    return Err(unavailable(format!(
                        "warm app {warm_app} is not a provider"
                    )));
                }
                binding.ready = app.status.phase == WarmAppPhase::Ready;
                self.record_dep(run_name, binding).await?;
            }
            DepProviderSpec::PerRun {
                recipe,
                version,
                env,
            } => {
                // Record the binding first: from now on the stack name is assigned to this
                // run, so its objects are hearth's even before they carry labels.
                self.record_dep(run_name, binding.clone()).await?;
                self.clear_leftovers(stack.as_str(), run_name).await?;
                let spec = self.render(recipe, version, stack.as_str(), &domain, env, None)?;
                let owner = self.stack_owner("DepProvider", dep, StackRole::RunDep, run_name);
                stack::apply(self.swarm.as_ref(), &spec, &owner, &self.config.apply).await?;
                binding.ready = true;
                self.record_dep(run_name, binding).await?;
            }
        }
        Ok(())
    }

    async fn record_dep(&self, run: &str, binding: DepBinding) -> Result<()> {
        self.edit_status(run, |r| {
            match r.status.deps.iter_mut().find(|d| d.name == binding.name) {
                Some(d) => *d = binding.clone(),
                None => r.status.deps.push(binding.clone()),
            }
        })
        .await?;
        Ok(())
    }

    /// Tears a finishing run down and records the outcome.
    async fn teardown(&self, name: &str) -> Result<Run> {
        let run = self.get(name)?;
        let mut residuals = Vec::new();
        let mut errors = Vec::new();
        let mut removed = Vec::new();
        // Nodes a previous attempt could not reach stay required: the services that told
        // where tasks ran are gone by now.
        let mut options = self.config.teardown.clone();
        options.required_nodes = run
            .status
            .residuals
            .iter()
            .filter_map(|r| r.strip_prefix("node/"))
            .map(str::to_string)
            .collect();
        for namespace in teardown_order(&run) {
            match stack::teardown(self.swarm.as_ref(), &namespace, &options).await {
                Ok(report) => removed.extend(report.removed.iter().map(ToString::to_string)),
                Err(stack::Error::Residuals {
                    residuals: left,
                    failures,
                    report,
                    ..
                }) => {
                    removed.extend(report.removed.iter().map(ToString::to_string));
                    residuals.extend(left.iter().map(|o| format!("{}/{}", o.kind, o.name)));
                    errors.extend(failures);
                }
                Err(e) => {
                    // Not verified: count the whole stack as remaining.
                    residuals.push(format!("stack/{namespace}"));
                    errors.push(e.to_string());
                }
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        residuals.retain(|r| seen.insert(r.clone()));
        let phase = phase_after_teardown(&run, &residuals);
        let now = self.clock.now_ms();
        state::retry_conflicts(CONFLICT_ATTEMPTS, Error::is_store_conflict, || async {
            let mut r = self.get(name)?;
            r.status.phase = phase;
            r.status.residuals = residuals.clone();
            let mut tx = self.store.transaction();
            if residuals.is_empty() {
                r.status.verdict = Some(r.compute_verdict());
                r.status.finished_at_ms = Some(now);
                if let Some(pool) = crate::slots::release_run_slot(&self.store, &r)? {
                    tx.update_status(&pool);
                }
            } else {
                r.status.last_error = Some(format!(
                    "teardown left {} object(s): {}",
                    residuals.len(),
                    errors.join("; ")
                ));
            }
            tx.update_status(&r);
            Ok(tx.commit().await?)
        })
        .await?;
        let entry = if residuals.is_empty() {
            NewEntry::new(
                reason::TORN_DOWN,
                format!("run {name} finished {phase:?}; teardown verified"),
            )
        } else {
            NewEntry::new(
                reason::TEARDOWN_FAILED,
                format!("run {name}: teardown left {} object(s)", residuals.len()),
            )
        };
        self.store
            .append_history(entry.subject(ObjectRef::new(Kind::Run, name)).details(
                serde_json::json!({
                    "removed": removed, "remained": residuals, "failures": errors
                }),
            ))
            .await?;
        let run = self.get(name)?;
        if let Some(promoter) = &self.promoter {
            // Only a verified teardown with a green verdict reaches Succeeded.
            if run.status.phase == RunPhase::Succeeded {
                if let Err(e) = promoter.run_succeeded(&run).await {
                    tracing::warn!(run = name, error = %e, "promoting the green run failed");
                }
            }
        }
        Ok(run)
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
                failure: None,
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
    fn a_run_the_sweeper_marked_is_closed_before_anything_else_unless_it_is_over() {
        let marked = |phase, finish| {
            let mut r = run(phase, finish);
            crd::condition::set_condition(
                &mut r.status.conditions,
                crd::Condition::new(
                    sweeper::CLOSING,
                    crd::ConditionStatus::True,
                    Reason::OwnerDead.code(),
                    "owner dead",
                    0,
                    1,
                ),
            );
            r
        };
        for phase in [
            RunPhase::Deploying,
            RunPhase::Running,
            RunPhase::Finishing,
            RunPhase::TeardownFailed,
        ] {
            for finish in [false, true] {
                assert_eq!(
                    step(&marked(phase, finish), true),
                    Step::Close(Reason::OwnerDead),
                    "{phase:?}"
                );
            }
        }
        assert_eq!(
            step(&marked(RunPhase::Orphaned, false), false),
            Step::Nothing
        );
    }

    #[test]
    fn a_running_run_is_left_to_its_ci_job() {
        assert_eq!(step(&run(RunPhase::Running, false), false), Step::Nothing);
        assert_eq!(step(&run(RunPhase::Running, false), true), Step::Nothing);
    }
}
