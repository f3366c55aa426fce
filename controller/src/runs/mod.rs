//! Runs: desired state reconciled like warm apps — start (slot, deterministic names, deps, optional deploy), heartbeat, tier reports, finish with verified teardown.
//!
//! - [`decide`] (pure): teardown order, the phase after a teardown, tier parsing, output.
//! - [`reconcile`]: the run reconciler on the controller runtime — the only place a run's
//!   stacks are deployed or torn down.
//! - [`Runs`]: the API side (record a run, wait for its reconciler's report, heartbeats, tier
//!   reports) and the reconciler's steps over the store, the swarm, the slots and the catalogue.
//!
//! A run's life: `start` waits for a slot and records the Run (Deploying) in the same store
//! transaction that grants the slot (the lease names the run; nothing of the run is recorded
//! while it waits in line), then waits on the run's status until its reconciler reports it
//! Running (or failed). The reconciler resolves each dep — shared: the warm provider's `hp-`
//! stack; per run: rendered from the catalogue and deployed as `hd-<dep>-<hash>` — and with
//! `deploy` deploys its own `hr-` stack (else the CI harness deploys under that name and hearth
//! adopts it by its namespace label). Before anything is deployed under a deterministic name,
//! leftovers under that name are swept first (forced) and the sweep is recorded. `finish` sets
//! `spec.finish` and waits; the reconciler tears down gracefully — the run's stack, then its
//! per-run deps in reverse — verifies, computes the verdict and releases the slot in the same
//! store transaction that makes the run terminal; leftovers keep it in TeardownFailed, retried
//! with the runtime's backoff. A start an earlier process was cut off in is closed by the same
//! reconciler. A run whose owner dies is closed by the [sweeper](crate::sweeper).

pub mod decide;
pub mod reconcile;
pub mod tiers;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crd::names::{self, labels as keys, BaseDomain, StackRole};
use crd::run::{DeployTarget, LeaseSpec, SlotAssignment};
use crd::{
    Content, ContentKind, Kind, Owner, Run, RunPhase, RunSpec, TierOutcome, TierResult, Validate,
    WarmApp,
};
use metrics::Metrics;
use state::history::{NewEntry, ObjectRef};
use state::{Clock, Store, CONFLICT_ATTEMPTS};

use crate::candidates::{Snapshot, Snapshots, Upload};
use crate::catalogue::Catalogue;
use crate::slots::{SlotRequest, Slots};
use crate::stack::{self, ApplyOptions, TeardownOptions};
use crate::swarm::{Labels, Swarm};

pub use decide::{parse_tier, phase_after_teardown, teardown_order, Started};

/// History reason: leftovers under a deterministic name were swept before deploying.
pub const COLLISION_SWEPT: &str = "CollisionSwept";
/// History reason: a terminal run was replaced by a new start under the same run id.
pub const RUN_REPLACED: &str = "RunReplaced";
/// History reason: a start that an earlier daemon process was cut off in was closed.
pub const START_INTERRUPTED: &str = "StartInterrupted";

/// Errors of run operations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is invalid (field paths in the message). Not retryable.
    #[error("run rejected: {0}")]
    RequestRejected(String),
    /// A tier the run's pool or recipe does not declare (API 422 naming the declared ones).
    /// Not retryable until the operator declares it.
    #[error("run rejected: {0}")]
    TierUndeclared(#[from] tiers::Undeclared),
    /// No run of that name is recorded. Not retryable.
    #[error("run {0} was not found")]
    RunNotFound(String),
    /// A start reused the id of a run that is not over yet. Retryable once the earlier run
    /// is finished or swept.
    #[error("run {run} is still {phase:?}; finish it or wait for the sweeper")]
    RunStillActive {
        /// The run.
        run: String,
        /// Its phase.
        phase: RunPhase,
    },
    /// The run is already terminal. Not retryable.
    #[error("run {run} is already {phase:?}")]
    RunAlreadyOver {
        /// The run.
        run: String,
        /// Its phase.
        phase: RunPhase,
    },
    /// A requested dep is not usable (unknown provider, no catalogue, warm app missing). Not
    /// retryable until the operator fixes it.
    #[error("dep {dep} of run {run} is unavailable: {reason}")]
    DepUnavailable {
        /// The run.
        run: String,
        /// The dep.
        dep: String,
        /// Why.
        reason: String,
    },
    /// `deploy` was asked but the recipe could not be rendered. Not retryable.
    #[error("rendering {recipe} {version} failed")]
    RenderFailed {
        /// The recipe.
        recipe: String,
        /// The version.
        version: String,
        /// The cause.
        #[source]
        source: Box<crate::catalogue::Error>,
    },
    /// The content under test could not be snapshotted (a commit hearth has not fetched, an
    /// unreadable or oversized tree, a recipe without git history for `--commit`). Not
    /// retryable as is.
    #[error("cannot snapshot what run {run} tests: {reason}")]
    SnapshotFailed {
        /// The run (or recipe, before the run has a name).
        run: String,
        /// Why.
        reason: String,
    },
    /// `hearth run deploy` found nothing to deploy (no canonical and no older version). Not
    /// retryable until one exists.
    #[error("run {run}: {reason}")]
    NoDeployBase {
        /// The run.
        run: String,
        /// Why.
        reason: String,
    },
    /// The redeploy of a running run's stack failed (the run stays Running; its stack is as
    /// the failed apply left it). The cause is in `lastError`.
    #[error("deploying {what} into run {run} failed: {reason}")]
    DeployFailed {
        /// The run.
        run: String,
        /// What was asked.
        what: String,
        /// Why.
        reason: String,
    },
    /// `hearth run deploy` on a run that is not Running (still starting, or finishing). Not
    /// retryable as is.
    #[error("run {run} is {phase:?}; only a running run can be deployed into")]
    RunNotRunning {
        /// The run.
        run: String,
        /// Its phase.
        phase: RunPhase,
    },
    /// Taking a slot failed (pool unknown, wait timed out). See [`crate::slots::Error`].
    #[error(transparent)]
    SlotFailed(#[from] crate::slots::Error),
    /// Deploying or tearing down a stack failed. See [`stack::Error`] for retryability.
    #[error(transparent)]
    StackFailed(Box<stack::Error>),
    /// The store failed. See [`state::Error`].
    #[error(transparent)]
    StoreFailed(#[from] state::Error),
    /// A name could not be derived. Not retryable.
    #[error(transparent)]
    NameInvalid(#[from] names::Error),
    /// The run's `container:REF` owner does not run on the swarm's engine (or the engine could
    /// not tell); found by the run's reconciler before deploying, the run ended failed (API
    /// 422). Not retryable: start anew with a running container.
    #[error("owner of run {run} is unavailable: {reason}")]
    OwnerUnavailable {
        /// The run.
        run: String,
        /// Why (field path first).
        reason: String,
    },
    /// The run's start failed and what it deployed was torn down (the cause is in the run's
    /// `lastError`; a start in this process gets the cause itself). Not retryable: start anew.
    #[error("starting run {run} failed: {reason}")]
    StartFailed {
        /// The run.
        run: String,
        /// Its `lastError`.
        reason: String,
    },
    /// Closing a run the sweeper marked failed before anything was recorded. See
    /// [`crate::sweeper::Error`] for retryability.
    #[error(transparent)]
    SweepFailed(#[from] crate::sweeper::Error),
    /// A teardown left objects behind; the run stays TeardownFailed and the reconciler retries
    /// it with backoff. Retryable.
    #[error("teardown of run {run} left {left} object(s)")]
    TeardownIncomplete {
        /// The run.
        run: String,
        /// How many objects remained.
        left: usize,
    },
}

impl Error {
    /// Whether this is a store conflict (a read-modify-write to do again).
    fn is_store_conflict(&self) -> bool {
        matches!(self, Error::StoreFailed(e) if e.is_conflict())
    }
}

impl From<stack::Error> for Error {
    fn from(e: stack::Error) -> Self {
        Error::StackFailed(Box::new(e))
    }
}

/// `Result` of run operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What `hearth run start` asks for.
#[derive(Debug, Clone)]
pub struct StartRequest {
    /// The recipe under test.
    pub recipe: String,
    /// Its version.
    pub version: String,
    /// The commit under test (`--commit`, formerly `--ref`): a commit of the declared git
    /// recipe, snapshotted at start; also part of per-run dep names.
    pub git_ref: Option<String>,
    /// A candidate working tree under test (`--candidate DIR`), snapshotted at start.
    pub candidate: Option<crate::candidates::Upload>,
    /// Env overrides the run's stack is rendered with (part of the snapshot).
    pub env: BTreeMap<String, String>,
    /// DepProviders needed, in order.
    pub deps: Vec<String>,
    /// The slot pool, if any.
    pub pool: Option<String>,
    /// Lease TTL renewed by heartbeats (owners on other hosts need one).
    pub ttl: Option<Duration>,
    /// The owning process (`--owner-pid`, else the caller).
    pub owner: Owner,
    /// Whether hearth deploys the run's own stack from the catalogue.
    pub deploy: bool,
    /// Tiers that must pass.
    pub required_tiers: Vec<String>,
    /// Randomness (or a CI job id, for idempotent retries) for the run id.
    pub nonce: Vec<u8>,
}

/// Settings of the runs executor.
#[derive(Debug, Clone)]
pub struct Config {
    /// Base domain of run and dep domains.
    pub base_domain: BaseDomain,
    /// Extra labels on every object hearth deploys for runs (e.g. `hearth.test=1`).
    pub extra_labels: Labels,
    /// How stacks are applied.
    pub apply: ApplyOptions,
    /// How a finishing run's stacks are torn down (graceful).
    pub teardown: TeardownOptions,
    /// How leftovers under a deterministic name are swept before deploying (forced).
    pub collision_teardown: TeardownOptions,
}

impl Config {
    /// Defaults under `base_domain`.
    pub fn new(base_domain: BaseDomain) -> Config {
        Config {
            base_domain,
            extra_labels: Labels::new(),
            apply: ApplyOptions::default(),
            teardown: TeardownOptions::graceful(),
            collision_teardown: TeardownOptions::forced(),
        }
    }
}

/// The runs executor.
#[derive(Clone)]
pub struct Runs {
    store: Store,
    swarm: Arc<dyn Swarm>,
    slots: Slots,
    catalogue: Option<Arc<dyn Catalogue>>,
    snapshots: Snapshots,
    clock: Arc<dyn Clock>,
    config: Config,
    metrics: Option<Metrics>,
    promoter: Option<crate::promote::Promoter>,
    /// Starts this process is answering (name → waiting requests): the reconciler brings up
    /// only these; any other run found starting was cut off in an earlier process.
    starting: Arc<Mutex<HashMap<String, usize>>>,
    /// Why a start of this process failed, for its waiting request (taken by it).
    start_errors: Arc<Mutex<HashMap<String, Error>>>,
    /// Who asked for a run's start or finish (the request's token name), so the history
    /// entries its reconcile writes on that request's behalf name them, as they did when the
    /// request did the work itself. In memory: after a restart the daemon's own closing of a
    /// run carries no actor, like any other work it does on its own.
    actors: Arc<Mutex<HashMap<String, String>>>,
    /// Closes runs the sweeper marked (owner dead, lease expired).
    sweeper: Option<crate::sweeper::Sweeper>,
}

/// A start of this process, registered while its request waits (see [`Runs::starting`]).
struct Starting {
    starting: Arc<Mutex<HashMap<String, usize>>>,
    name: String,
}

impl Drop for Starting {
    fn drop(&mut self) {
        let mut map = self.starting.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.name) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.name);
            }
        }
    }
}

impl std::fmt::Debug for Runs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runs")
            .field("config", &self.config)
            .finish()
    }
}

impl Runs {
    /// An executor; `catalogue` is needed for per-run deps and `deploy`.
    pub fn new(
        store: Store,
        swarm: Arc<dyn Swarm>,
        catalogue: Option<Arc<dyn Catalogue>>,
        clock: Arc<dyn Clock>,
        config: Config,
    ) -> Runs {
        let slots = Slots::with_clock(store.clone(), clock.clone());
        let snapshot_dir = catalogue.as_ref().map_or_else(
            || std::env::temp_dir().join("hearth-snapshots"),
            |c| c.snapshot_dir(),
        );
        Runs {
            snapshots: Snapshots::new(store.clone(), snapshot_dir),
            store,
            swarm,
            slots,
            catalogue,
            clock,
            config,
            metrics: None,
            promoter: None,
            starting: Arc::default(),
            start_errors: Arc::default(),
            actors: Arc::default(),
            sweeper: None,
        }
    }

    /// Records the actor of the request being served (if any) as the one `name`'s next
    /// reconciles act for.
    fn note_actor(&self, name: &str) {
        if let Some(actor) = state::history::current_actor() {
            self.actors
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(name.to_string(), actor);
        }
    }

    /// Forgets `name`'s actor (its run is over).
    pub(crate) fn forget_actor(&self, name: &str) {
        self.actors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }

    /// The actor `name`'s reconciles act for, if a request of this process asked for them.
    pub(crate) fn actor_of(&self, name: &str) -> Option<String> {
        self.actors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// The slots its starts take (their cancelled waits leave the line in tasks of their own:
    /// see [`Slots::settle`]).
    pub fn slots(&self) -> &Slots {
        &self.slots
    }

    /// Closes the runs `sweeper` marks (owner dead, lease expired) in the run reconciler,
    /// with `sweeper`'s scope and node endpoints ([`crate::sweeper::Sweeper::close`]).
    pub fn with_sweeper(mut self, sweeper: crate::sweeper::Sweeper) -> Runs {
        self.sweeper = Some(sweeper);
        self
    }

    /// Registers a start of this process until the returned guard drops.
    fn register_start(&self, name: &str) -> Starting {
        let mut map = self.starting.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry(name.to_string()).or_default() += 1;
        Starting {
            starting: Arc::clone(&self.starting),
            name: name.to_string(),
        }
    }

    /// Whether a request of this process is waiting for `name`'s start.
    fn is_starting_here(&self, name: &str) -> bool {
        self.starting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(name)
    }

    /// Waits on the run's status (the store's change feed for runs) until `done` holds.
    ///
    /// # Errors
    /// [`Error::RunNotFound`] when the run is deleted meanwhile; [`Error::StoreFailed`].
    async fn wait_for(&self, name: &str, done: impl Fn(&Run) -> bool) -> Result<Run> {
        loop {
            // The revision first: a write after it wakes the wait below.
            let seen = self.store.revision();
            let run = self.get(name)?;
            if done(&run) {
                return Ok(run);
            }
            self.store.changed(Kind::Run, seen).await;
        }
    }

    /// Records tier results (`hearth_tier_results_total`) and slot waits
    /// (`hearth_slot_wait_seconds`) in `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Runs {
        self.slots = self.slots.with_metrics(metrics.clone());
        self.metrics = Some(metrics);
        self
    }

    /// Promotes the version of every run that finishes green to the WarmApps of its recipe
    /// with `promote: onGreen` (see [`crate::promote`]).
    pub fn with_promoter(mut self, promoter: crate::promote::Promoter) -> Runs {
        self.promoter = Some(promoter);
        self
    }

    fn get(&self, name: &str) -> Result<Run> {
        self.store
            .get_opt::<Run>(name)?
            .ok_or_else(|| Error::RunNotFound(name.into()))
    }

    /// Re-reads `name`, applies `f` to its status and writes it, retrying on conflicts.
    async fn edit_status(&self, name: &str, f: impl Fn(&mut Run)) -> Result<Run> {
        state::retry_conflicts(CONFLICT_ATTEMPTS, Error::is_store_conflict, || async {
            let mut run = self.get(name)?;
            f(&mut run);
            Ok(self.store.update_status(&run).await?)
        })
        .await
    }

    fn stack_owner(&self, kind: &str, name: &str, role: StackRole, run: &str) -> stack::Owner {
        let mut owner = stack::Owner::new(kind, name);
        owner.role = Some(role);
        owner.run = Some(run.to_string());
        owner.extra = self.config.extra_labels.clone();
        owner
    }

    /// Starts a run (see the module docs) and returns what the CI job needs: records it (with
    /// its slot), then waits until its reconciler reports it Running or failed. Nothing is
    /// deployed here; the reconciler (see [`reconcile`]) does it.
    ///
    /// # Errors
    /// [`Error::RequestRejected`] before anything is recorded; after the run is recorded, a
    /// failed bring-up (what was deployed is torn down by then, the run ended Failed or left
    /// TeardownFailed) is returned as the reconciler met it.
    pub async fn start(&self, req: &StartRequest) -> Result<Started> {
        let name = names::run_id(&req.recipe, &req.nonce)?;
        // A `container:REF` owner is recorded as given (its syntax checked below); the run's
        // reconciler resolves it on the engine before deploying (no Docker call here).
        let owner = req.owner.clone();
        let source = if let Some(upload) = &req.candidate {
            ContentSource::Candidate(upload)
        } else if let Some(commit) = &req.git_ref {
            ContentSource::Commit(commit)
        } else {
            ContentSource::Version
        };
        let (version, content) = self
            .resolve_content(&req.recipe, &req.version, source, &req.env)
            .await
            .map_err(|reason| Error::SnapshotFailed {
                run: name.clone(),
                reason,
            })?;
        let mut run = Run::new(
            &name,
            RunSpec {
                recipe: req.recipe.clone(),
                version,
                git_ref: req.git_ref.clone(),
                owner,
                lease: req.ttl.map(|ttl| LeaseSpec { ttl }),
                slot_pool: req.pool.clone(),
                deps: req.deps.clone(),
                required_tiers: req.required_tiers.clone(),
                deploy: req.deploy,
                finish: false,
                failure: None,
                content,
                target: None,
            },
        );
        run.validate()
            .map_err(|e| Error::RequestRejected(e.to_string()))?;
        if let Some(declared) = tiers::Declared::of(&self.store, &req.recipe, req.pool.as_deref())?
        {
            declared.check(
                "requiredTiers",
                req.required_tiers.iter().map(String::as_str),
            )?;
        }
        let stack = run.stack_name()?;
        run.status.stack_name = Some(stack.to_string());
        run.status.domain = Some(names::domain(&stack, &self.config.base_domain));
        run.status.last_heartbeat_ms = Some(self.clock.now_ms());
        // Registered before the record exists, so the reconciler never takes it for a start
        // cut off in an earlier process.
        let _starting = self.register_start(&name);
        self.note_actor(&name);
        self.record(run).await?;
        let run = self
            .wait_for(&name, |r| {
                r.status.deployed_at_ms.is_some()
                    || r.status.phase.is_terminal()
                    || r.status.phase == RunPhase::TeardownFailed
            })
            .await?;
        let failure = self
            .start_errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&name);
        if run.status.deployed_at_ms.is_some() {
            return Ok(Started::from_run(&run));
        }
        Err(failure.unwrap_or_else(|| Error::StartFailed {
            run: name.clone(),
            reason: run.status.last_error.clone().unwrap_or_default(),
        }))
    }

    /// Records a new run together with its slot: the slot is granted (waiting in line if
    /// need be) and the run created — already Deploying, its slot in its status — in one store
    /// transaction, so a crash never leaves a run without its slot nor a lease without its run.
    /// A run without a pool is created Deploying at once.
    ///
    /// A terminal run of the same name (a retried CI job reusing its nonce) is replaced, and the
    /// replacement recorded; a live one is an error.
    async fn record(&self, mut run: Run) -> Result<()> {
        let name = run.metadata.name.clone();
        self.make_room(&name).await?;
        let still_active = |e: state::Error| match e {
            state::Error::ObjectAlreadyExists { .. } => match self.get(&name) {
                Ok(old) => Error::RunStillActive {
                    run: name.clone(),
                    phase: old.status.phase,
                },
                Err(e) => e,
            },
            e => e.into(),
        };
        let Some(pool) = run.spec.slot_pool.clone() else {
            run.status.phase = RunPhase::Deploying;
            run.status.started_at_ms = Some(self.clock.now_ms());
            self.store.create(&run).await.map_err(still_active)?;
            return Ok(());
        };
        let request = SlotRequest {
            pool,
            owner: run.spec.owner.clone(),
            run: Some(name.clone()),
            ttl: None,
        };
        let clock = self.clock.clone();
        let with_run = |grant: &crate::slots::Grant, tx: &mut state::Transaction| {
            let mut r = run.clone();
            r.status.slot = Some(SlotAssignment {
                pool: grant.pool.clone(),
                index: grant.slot,
                port_base: grant.port_base,
                ports: grant.ports,
            });
            r.status.phase = RunPhase::Deploying;
            r.status.started_at_ms = Some(clock.now_ms());
            tx.create(&r);
            Ok(())
        };
        match self.slots.acquire_with(&request, &with_run).await {
            Ok(_) => Ok(()),
            Err(crate::slots::Error::StoreFailed(e)) => Err(still_active(e)),
            Err(e) => Err(e.into()),
        }
    }

    /// Refuses a start whose run id belongs to a live run; deletes a terminal one (recorded).
    async fn make_room(&self, name: &str) -> Result<()> {
        let Some(old) = self.store.get_opt::<Run>(name)? else {
            return Ok(());
        };
        if !old.status.phase.is_terminal() {
            return Err(Error::RunStillActive {
                run: name.into(),
                phase: old.status.phase,
            });
        }
        self.store
            .delete::<Run>(name, Some(old.metadata.resource_version))
            .await?;
        self.store
            .append_history(
                NewEntry::new(
                    RUN_REPLACED,
                    format!(
                        "run {name} ({:?}) replaced by a new start",
                        old.status.phase
                    ),
                )
                .subject(ObjectRef::new(Kind::Run, name)),
            )
            .await?;
        Ok(())
    }

    /// What a run tests, snapshotted: the version it is (a candidate without `--version` takes
    /// the version its compose file's `coop-cloud.${STACK_NAME}.version` label names) and its
    /// content, stored ([`Snapshots::put`]). `None` content for a published version of a
    /// recipe hearth cannot snapshot (a `recipe.yml` directory): rendered by version then.
    ///
    /// # Errors
    /// A lowercase reason: the snapshot failed, or no version was given nor found.
    async fn resolve_content(
        &self,
        recipe: &str,
        version: &str,
        source: ContentSource<'_>,
        env: &BTreeMap<String, String>,
    ) -> std::result::Result<(String, Option<Content>), String> {
        let chain = crate::errors::chain;
        let (snapshot, kind, tag, commit, dirty) = match source {
            ContentSource::Candidate(upload) => {
                let snapshot = Snapshot {
                    files: upload.files.clone(),
                    env: env.clone(),
                };
                snapshot.check().map_err(|e| chain(&e))?;
                (
                    snapshot,
                    ContentKind::WorkTree,
                    None,
                    upload.commit.clone(),
                    upload.dirty,
                )
            }
            ContentSource::Commit(_) | ContentSource::Version => {
                let at = match source {
                    ContentSource::Commit(c) => Some(c),
                    _ => None,
                };
                let unsnapshotted = || {
                    if version.is_empty() {
                        Err("--version is required for a recipe hearth cannot snapshot".to_string())
                    } else {
                        Ok((version.to_string(), None))
                    }
                };
                let Some(catalogue) = &self.catalogue else {
                    return unsnapshotted();
                };
                let tree = match catalogue.source_tree(recipe, version, at) {
                    Ok(t) => t,
                    // A recipe without git history (a `recipe.yml` directory): rendered by
                    // version, as before; a ref is only part of per-run dep names there.
                    Err(crate::catalogue::Error::SnapshotUnsupported { .. }) => {
                        return unsnapshotted()
                    }
                    // A published version that does not render now fails at deploy, as before.
                    Err(_) if at.is_none() => return unsnapshotted(),
                    Err(e) => return Err(chain(&e)),
                };
                let snapshot = Snapshot::of_dir(&tree.dir, env.clone()).map_err(|e| chain(&e))?;
                let kind = if tree.tag.is_some() {
                    ContentKind::Release
                } else {
                    ContentKind::Commit
                };
                (snapshot, kind, tree.tag, Some(tree.commit), false)
            }
        };
        let version = if version.is_empty() {
            snapshot_version(&snapshot).ok_or_else(|| {
                "no version given and the compose.yml names none (coop-cloud.${STACK_NAME}.version=…); pass --version".to_string()
            })?
        } else {
            version.to_string()
        };
        let digest = self.snapshots.put(&snapshot).await.map_err(|e| chain(&e))?;
        Ok((
            version,
            Some(Content {
                kind,
                tag,
                commit,
                dirty,
                digest,
                run: None,
            }),
        ))
    }

    /// `hearth run deploy`: (re)deploys the running run's stack in place with `source` — a
    /// version, a candidate, a commit, the warm canonical's exact content, or the run's own
    /// content again — and waits until its reconciler has done it. The target is snapshotted
    /// here and recorded as `spec.target`; the reconciler renders it from the snapshot and
    /// applies it (nothing of Docker is touched by this call).
    ///
    /// # Errors
    /// [`Error::RunNotFound`], [`Error::RunAlreadyOver`], [`Error::RunNotRunning`],
    /// [`Error::SnapshotFailed`], [`Error::NoDeployBase`], [`Error::DeployFailed`] (the run
    /// stays Running), [`Error::StoreFailed`].
    pub async fn deploy(&self, name: &str, source: DeploySource) -> Result<Run> {
        let run = self.get(name)?;
        if run.status.phase.is_terminal() {
            return Err(Error::RunAlreadyOver {
                run: name.into(),
                phase: run.status.phase,
            });
        }
        if run.status.phase != RunPhase::Running || run.spec.finish {
            return Err(Error::RunNotRunning {
                run: name.into(),
                phase: run.status.phase,
            });
        }
        let target = self.resolve_target(&run, &source).await?;
        self.note_actor(name);
        let written = state::retry_conflicts(CONFLICT_ATTEMPTS, Error::is_store_conflict, || {
            let target = target.clone();
            async move {
                let mut run = self.get(name)?;
                run.spec.target = Some(target);
                Ok(self.store.update(&run).await?)
            }
        })
        .await?;
        let generation = written.metadata.generation;
        let run = self
            .wait_for(name, |r| {
                r.status.observed_generation >= generation
                    || r.spec.finish
                    || r.status.phase != RunPhase::Running
            })
            .await?;
        if run.status.deployed.as_ref() == Some(&target)
            && run.status.observed_generation >= generation
        {
            return Ok(run);
        }
        Err(Error::DeployFailed {
            run: name.into(),
            what: describe_target(&target),
            reason: run
                .status
                .last_error
                .clone()
                .unwrap_or_else(|| format!("the run became {:?}", run.status.phase)),
        })
    }

    /// What `source` means for `run`, snapshotted.
    /// `Err` (why) when the catalogue knows `recipe` and `version` is not one of its published
    /// versions. Without a catalogue, or for a recipe it cannot list, the deploy decides.
    fn check_published(&self, recipe: &str, version: &str) -> std::result::Result<(), String> {
        let Some(catalogue) = &self.catalogue else {
            return Ok(());
        };
        let Ok(found) = catalogue.recipe(recipe) else {
            return Ok(());
        };
        if found.published(version).is_some() {
            return Ok(());
        }
        let published: Vec<String> = found.versions.iter().map(|v| v.to_string()).collect();
        Err(format!(
            "recipe {recipe} has no published version {version:?} (published: {})",
            published.join(", ")
        ))
    }

    async fn resolve_target(&self, run: &Run, source: &DeploySource) -> Result<DeployTarget> {
        let name = run.metadata.name.as_str();
        let failed = |reason: String| Error::SnapshotFailed {
            run: name.to_string(),
            reason,
        };
        let env = run
            .spec
            .content
            .as_ref()
            .and_then(|c| self.snapshots.get(&c.digest).ok())
            .map(|s| s.env)
            .unwrap_or_default();
        let recipe = run.spec.recipe.as_str();
        let (from, version, content) = match source {
            DeploySource::Run => ("run", run.spec.version.clone(), run.spec.content.clone()),
            DeploySource::Version(v) => {
                let (v, c) = self
                    .resolve_content(recipe, v, ContentSource::Version, &env)
                    .await
                    .map_err(failed)?;
                if c.is_none() {
                    // Not snapshotted (a recipe without git history): the version is checked
                    // here, so an unpublished one is the request's 422, not a failed deploy.
                    self.check_published(recipe, &v).map_err(failed)?;
                }
                ("version", v, c)
            }
            DeploySource::Commit(commit) => {
                // The version the commit's compose file names, else the run's.
                let labelled = self
                    .resolve_content(recipe, "", ContentSource::Commit(commit), &env)
                    .await;
                let (v, c) = match labelled {
                    Ok(found) => found,
                    Err(_) => self
                        .resolve_content(
                            recipe,
                            &run.spec.version,
                            ContentSource::Commit(commit),
                            &env,
                        )
                        .await
                        .map_err(failed)?,
                };
                ("commit", v, c)
            }
            DeploySource::Candidate(upload) => {
                let (v, c) = self
                    .resolve_content(recipe, "", ContentSource::Candidate(upload), &env)
                    .await
                    .map_err(failed)?;
                ("candidate", v, c)
            }
            DeploySource::Canonical => return self.canonical_target(run, &env).await,
        };
        Ok(DeployTarget {
            version,
            content,
            from: from.to_string(),
        })
    }

    /// The warm canonical's exact content (its promoted content, else the version it serves),
    /// falling back — no canonical, or it is what the run tests — to the newest published
    /// version older than the run's.
    async fn canonical_target(
        &self,
        run: &Run,
        env: &BTreeMap<String, String>,
    ) -> Result<DeployTarget> {
        let name = run.metadata.name.as_str();
        let recipe = run.spec.recipe.as_str();
        let failed = |reason: String| Error::SnapshotFailed {
            run: name.to_string(),
            reason,
        };
        let mut apps: Vec<WarmApp> = self
            .store
            .list::<WarmApp>()?
            .items
            .into_iter()
            .filter(|a| a.spec.recipe == recipe && !a.spec.provider)
            .collect();
        apps.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        let same = |c: &Option<Content>| match (c, &run.spec.content) {
            (Some(a), Some(b)) => a.same_as(b),
            _ => false,
        };
        if let Some(app) = apps.first() {
            let pinned = app.spec.content.clone().filter(|_| {
                app.status.observed_version.as_deref() == Some(app.spec.version.as_str())
            });
            let target = match pinned {
                Some(c) => DeployTarget {
                    version: app.spec.version.clone(),
                    content: Some(c),
                    from: "canonical".into(),
                },
                None => {
                    let serving = app
                        .status
                        .observed_version
                        .clone()
                        .unwrap_or_else(|| app.spec.version.clone());
                    let (version, content) = self
                        .resolve_content(recipe, &serving, ContentSource::Version, env)
                        .await
                        .map_err(failed)?;
                    DeployTarget {
                        version,
                        content,
                        from: "canonical".into(),
                    }
                }
            };
            if !same(&target.content) && target.version != run.spec.version {
                return Ok(target);
            }
        }
        let catalogue = self
            .catalogue
            .as_ref()
            .ok_or_else(|| Error::RequestRejected("no recipe catalogue configured".into()))?;
        let mine = crd::RecipeVersion::parse(&run.spec.version).ok();
        let older = catalogue
            .versions(recipe)
            .map_err(|e| failed(crate::errors::chain(&e)))?
            .into_iter()
            .rfind(|v| mine.as_ref().is_some_and(|m| v < m))
            .ok_or_else(|| Error::NoDeployBase {
                run: name.to_string(),
                reason: format!(
                    "no warm canonical of {recipe} to upgrade from, and no published version older than {}",
                    run.spec.version
                ),
            })?
            .to_string();
        let (version, content) = self
            .resolve_content(recipe, &older, ContentSource::Version, env)
            .await
            .map_err(failed)?;
        Ok(DeployTarget {
            version,
            content,
            from: "published".into(),
        })
    }

    /// Renews the run's lease.
    ///
    /// # Errors
    /// [`Error::RunNotFound`], [`Error::RunAlreadyOver`], [`Error::StoreFailed`].
    pub async fn heartbeat(&self, name: &str) -> Result<Run> {
        let run = self.get(name)?;
        if run.status.phase.is_terminal() {
            return Err(Error::RunAlreadyOver {
                run: name.into(),
                phase: run.status.phase,
            });
        }
        let now = self.clock.now_ms();
        self.edit_status(name, |r| r.status.last_heartbeat_ms = Some(now))
            .await
    }

    /// Records tier results (a new report of a tier replaces the old one).
    ///
    /// # Errors
    /// [`Error::RequestRejected`] for an invalid tier; as [`Runs::heartbeat`].
    pub async fn report(&self, name: &str, tiers: &[TierResult]) -> Result<Run> {
        let run = self.get(name)?;
        if run.status.phase.is_terminal() {
            return Err(Error::RunAlreadyOver {
                run: name.into(),
                phase: run.status.phase,
            });
        }
        let mut check = run.clone();
        for t in tiers {
            let mut t = t.clone();
            t.required |= run.spec.required_tiers.contains(&t.name);
            check.status.record_tier(t);
        }
        check
            .validate()
            .map_err(|e| Error::RequestRejected(e.to_string()))?;
        let declared =
            tiers::Declared::of(&self.store, &run.spec.recipe, run.spec.slot_pool.as_deref())?;
        if let Some(d) = &declared {
            d.check("tiers", tiers.iter().map(|t| t.name.as_str()))?;
        }
        let run = self
            .edit_status(name, |r| {
                for t in tiers {
                    let mut t = t.clone();
                    t.required |= r.spec.required_tiers.contains(&t.name);
                    r.status.record_tier(t);
                }
            })
            .await?;
        if let Some(m) = &self.metrics {
            // Labels bounded by the state file (see [`tiers`]): a declared recipe and tier
            // name, else `_undeclared`; never the run.
            let recipe =
                tiers::recipe_label(&self.store, self.catalogue.as_deref(), &run.spec.recipe);
            for t in tiers {
                let tier = tiers::tier_label(declared.as_ref(), &t.name);
                m.record_tier(recipe, tier, outcome_label(t.result));
            }
        }
        Ok(run)
    }

    /// Finishes a run: sets `spec.finish` and waits until its reconciler has torn it down —
    /// graceful teardown of its stack, then its per-run deps in reverse, verified; then the
    /// verdict and, in the same transaction, the slot release. Leftovers leave it
    /// TeardownFailed (with `status.residuals`), retried by the reconciler with backoff.
    ///
    /// # Errors
    /// [`Error::RunNotFound`], [`Error::RunAlreadyOver`], [`Error::StoreFailed`]. A teardown
    /// with leftovers is not an error of this call: the run's phase says it.
    pub async fn finish(&self, name: &str) -> Result<Run> {
        self.finish_with(name, None).await
    }

    /// [`Runs::finish`], recording that the job itself failed (`failure`: why, e.g. `hearth
    /// run exec`'s command exited non-zero) in `spec.failure`: the run is then not green,
    /// whatever its tiers reported.
    ///
    /// # Errors
    /// As [`Runs::finish`]; [`Error::RequestRejected`] for a failure text that is not one
    /// line of at most 1024 characters.
    pub async fn finish_with(&self, name: &str, failure: Option<String>) -> Result<Run> {
        let run = self.get(name)?;
        if run.status.phase.is_terminal() {
            return Err(Error::RunAlreadyOver {
                run: name.into(),
                phase: run.status.phase,
            });
        }
        self.note_actor(name);
        if let Some(f) = failure {
            crd::validation::check_text(&f, 1024)
                .map_err(|m| Error::RequestRejected(format!("failure: {m}")))?;
            if run.spec.failure.is_none() {
                state::retry_conflicts(CONFLICT_ATTEMPTS, Error::is_store_conflict, || async {
                    let mut run = self.get(name)?;
                    run.spec.failure = Some(f.clone());
                    Ok(self.store.update(&run).await?)
                })
                .await?;
            }
        }
        self.mark_finish(name).await?;
        self.wait_for(name, |r| {
            r.status.phase.is_terminal() || r.status.phase == RunPhase::TeardownFailed
        })
        .await
    }

    /// Records that the run is to be torn down (`spec.finish`, phase Finishing).
    async fn mark_finish(&self, name: &str) -> Result<Run> {
        let run = self.get(name)?;
        if !run.spec.finish {
            state::retry_conflicts(CONFLICT_ATTEMPTS, Error::is_store_conflict, || async {
                let mut run = self.get(name)?;
                run.spec.finish = true;
                Ok(self.store.update(&run).await?)
            })
            .await?;
        }
        self.edit_status(name, |r| {
            if !r.status.phase.is_terminal() {
                r.status.phase = RunPhase::Finishing;
            }
        })
        .await
    }

    /// Closes a start an earlier daemon process was cut off in (recorded, still Pending or
    /// Deploying, no request of this process waiting for it): `start` answers only once its
    /// run is Running (or has ended it), so no client ever got this run's id and nobody will
    /// use it — the client retried with a new start (a new run, or — same nonce — the same id,
    /// which stays refused while this one is live). Records why (history and `lastError`) and
    /// marks it to be finished as a failed start is: what it deployed (its stack, its per-run
    /// deps) torn down and verified, its slot released with the terminal phase (Failed: no
    /// tier was reported) or kept in TeardownFailed and retried.
    async fn close_interrupted(&self, name: &str) -> Result<Run> {
        let run = self.get(name)?;
        let why = format!(
            "start interrupted: hearth stopped while starting this run ({:?}), before it answered; the client never got its id",
            run.status.phase
        );
        self.edit_status(name, |r| r.status.last_error = Some(why.clone()))
            .await?;
        self.store
            .append_history(
                NewEntry::new(START_INTERRUPTED, why.clone())
                    .subject(ObjectRef::new(Kind::Run, name)),
            )
            .await?;
        self.mark_finish(name).await
    }
}

/// What `hearth run deploy` deploys into a running run's stack.
#[derive(Debug, Clone)]
pub enum DeploySource {
    /// A published version (`--version V`).
    Version(String),
    /// A candidate working tree (`--candidate DIR`).
    Candidate(Upload),
    /// A commit of the declared git recipe (`--commit SHA`).
    Commit(String),
    /// The warm canonical's exact content (`--from canonical`).
    Canonical,
    /// What the run tests, as recorded at its start (`--from run`).
    Run,
}

/// Where the content a run tests (or deploys) comes from.
#[derive(Debug, Clone, Copy)]
enum ContentSource<'a> {
    /// A published version.
    Version,
    /// A commit (or tag, or `HEAD`) of the declared git recipe.
    Commit(&'a str),
    /// An uploaded working tree.
    Candidate(&'a Upload),
}

/// The version the snapshot's `compose.yml` labels itself with (what `abra recipe sync`
/// writes), if any.
fn snapshot_version(snapshot: &Snapshot) -> Option<String> {
    let file = snapshot
        .files
        .get(crate::catalogue::sources::DEFAULT_COMPOSE_FILE)?;
    let bytes = hex::decode(&file.hex).ok()?;
    let text = String::from_utf8_lossy(&bytes);
    crate::catalogue::sources::compose_version_label(&text)
        .filter(|v| crd::RecipeVersion::parse(v).is_ok())
}

/// One line for history and messages: `version 1.0.0`, `candidate (working tree @ …)`.
pub fn describe_target(target: &DeployTarget) -> String {
    match &target.content {
        Some(c) => format!("{} {} ({})", target.from, target.version, c.summary()),
        None => format!("{} {}", target.from, target.version),
    }
}

/// The `result` label of a tier outcome.
fn outcome_label(outcome: TierOutcome) -> &'static str {
    match outcome {
        TierOutcome::Pass => "pass",
        TierOutcome::Fail => "fail",
        TierOutcome::Skip => "skip",
    }
}

/// Whether `labels` mark an object as hearth-managed (for callers that list objects).
pub fn is_managed(labels: &Labels) -> bool {
    labels.get(keys::MANAGED_BY).map(String::as_str) == Some(keys::MANAGED_BY_VALUE)
}

#[cfg(test)]
mod sweep_safety_tests;
#[cfg(test)]
mod sweep_tests;
