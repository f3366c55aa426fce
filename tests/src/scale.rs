//! Scale worlds on the simulated swarm: N warm apps converged, a controller running, and one full resync pass measured (calls, writes, wall time).
//!
//! Used by the CI test `tests/scale.rs` (paused time, counts only) and by the benchmark binary
//! `bench_scale` (real time, wall clock). Stacks are deployed straight into the simulated swarm
//! (render, plan against nothing, execute: no listing per stack), so building a world of
//! 10,000 apps does not itself cost O(N²).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use controller::catalogue::{self, Catalogue, DirCatalogue, RenderRequest, Rendered};
use controller::runtime::{self, Controller, Handle, Shutdown, Stopped, Ticket};
use controller::stack::{self, ApplyOptions, ObservationCache, Observed, TeardownOptions};
use controller::swarm::sim::{SimConfig, SimSwarm};
use controller::swarm::Labels;
use controller::warmapp::probe::FixedProber;
use controller::warmapp::{self, Context, TokioClock, WarmAppReconciler};
use crd::names::BaseDomain;
use crd::{Resource, WarmApp};
use state::Store;
use tokio::task::JoinHandle;

/// Errors building or measuring a scale world.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The example catalogue could not be opened or rendered.
    #[error("catalogue: {0}")]
    CatalogueFailed(String),
    /// A store call failed.
    #[error("store: {0}")]
    StoreFailed(#[from] state::Error),
    /// Deploying a stack into the simulated swarm failed.
    #[error("deploying {stack}: {message}")]
    DeployFailed {
        /// The stack.
        stack: String,
        /// Why.
        message: String,
    },
    /// A pass did not finish in time.
    #[error("{0}")]
    PassTimedOut(String),
}

/// The example recipes (`deploy/examples/catalogue`).
pub fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/catalogue")
}

/// Name of warm app `i`.
pub fn app_name(i: usize) -> String {
    format!("app-{i:05}")
}

/// A warm app of the example `webapp` recipe at 1.0.0, without a probe.
pub fn warm_app(name: &str) -> Result<WarmApp, Error> {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "hearth/v1", "kind": "WarmApp",
        "metadata": {"name": name},
        "spec": {"recipe": "webapp", "version": "1.0.0"}
    }))
    .map_err(|e| Error::CatalogueFailed(e.to_string()))
}

/// A running warm-app controller over `n` converged apps on a simulated swarm.
pub struct World {
    /// The simulated swarm (call log).
    pub swarm: Arc<SimSwarm>,
    /// The store.
    pub store: Store,
    /// The controller's handle (gauges, resync).
    pub handle: Handle,
    /// The reconcile context (its observation cache counts listings).
    pub ctx: Arc<Context>,
    /// The catalogue the reconciler renders through (counts renders).
    pub catalogue: Arc<CountingCatalogue>,
    /// How many apps.
    pub apps: usize,
    shutdown: Shutdown,
    task: JoinHandle<Stopped>,
}

/// What one full resync pass cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    /// Docker API calls.
    pub calls: usize,
    /// Of which writes.
    pub writes: usize,
    /// Reconciles run.
    pub reconciles: u64,
    /// Listings of every stack by the observation cache.
    pub refreshes: u64,
    /// Listings of one stack.
    pub stack_reads: u64,
    /// Wall time (tokio's clock) from the resync to the last reconcile's end.
    pub elapsed: Duration,
    /// Renders asked of the catalogue ([`CountingCatalogue`]).
    pub renders: u64,
    /// Store revisions written (status, history).
    pub store_writes: u64,
}

/// A catalogue that counts the renders asked of it (and answers everything from `inner`).
pub struct CountingCatalogue {
    inner: Arc<dyn Catalogue>,
    renders: AtomicU64,
}

impl CountingCatalogue {
    /// Counts the renders asked of `inner`.
    pub fn new(inner: Arc<dyn Catalogue>) -> Self {
        Self {
            inner,
            renders: AtomicU64::new(0),
        }
    }

    /// Renders asked so far.
    pub fn renders(&self) -> u64 {
        self.renders.load(Ordering::Relaxed)
    }
}

impl Catalogue for CountingCatalogue {
    fn recipes(&self) -> catalogue::Result<Vec<String>> {
        self.inner.recipes()
    }

    fn recipe(&self, name: &str) -> catalogue::Result<catalogue::Recipe> {
        self.inner.recipe(name)
    }

    fn render(&self, r: &RenderRequest<'_>) -> catalogue::Result<Rendered> {
        self.renders.fetch_add(1, Ordering::Relaxed);
        self.inner.render(r)
    }

    fn inputs_digest(&self, r: &RenderRequest<'_>, fresh_since: Ticket) -> Option<String> {
        self.inner.inputs_digest(r, fresh_since)
    }
}

/// How recipes are rendered in a world.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renders {
    /// Every reconcile renders through the directory catalogue (reads and parses the recipe
    /// and compose files), as `hearth serve` does.
    Catalogue,
    /// Each distinct request is rendered once and remembered ([`MemoCatalogue`]): for tests
    /// that count calls, where rendering 1,000 stacks per pass in a debug build would only
    /// cost time.
    Memoized,
}

/// A catalogue that renders each distinct request once (tests only: it never sees recipe
/// edits).
pub struct MemoCatalogue {
    inner: DirCatalogue,
    renders: Mutex<HashMap<String, Rendered>>,
}

impl MemoCatalogue {
    /// Remembers the renders of `inner`.
    pub fn new(inner: DirCatalogue) -> Self {
        MemoCatalogue {
            inner,
            renders: Mutex::default(),
        }
    }
}

impl Catalogue for MemoCatalogue {
    fn recipes(&self) -> catalogue::Result<Vec<String>> {
        self.inner.recipes()
    }

    fn recipe(&self, name: &str) -> catalogue::Result<catalogue::Recipe> {
        self.inner.recipe(name)
    }

    fn render(&self, r: &RenderRequest<'_>) -> catalogue::Result<Rendered> {
        let key = format!(
            "{}\0{}\0{}\0{}\0{:?}",
            r.recipe, r.version, r.stack, r.domain, r.env
        );
        let mut memo = self.renders.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(hit) = memo.get(&key) {
            return Ok(hit.clone());
        }
        let rendered = self.inner.render(r)?;
        memo.insert(key, rendered.clone());
        Ok(rendered)
    }
}

/// Builds a world: `n` warm apps in `store`, their stacks deployed and healthy in a fresh
/// simulated swarm, a controller running (resync only on demand) and its first pass done
/// (which records every app Ready).
///
/// # Errors
/// [`Error`] when the catalogue, the store or a deploy fails, or the first pass times out.
pub async fn world(n: usize, store: Store, renders: Renders) -> Result<World, Error> {
    world_from(&examples(), n, store, renders).await
}

/// [`world`] with the recipes of the catalogue directory `dir` (rendered as `hearth serve`
/// does), to see what an edit of a recipe file does.
///
/// # Errors
/// As [`world`].
pub async fn world_in(dir: &Path, n: usize, store: Store) -> Result<World, Error> {
    world_from(dir, n, store, Renders::Catalogue).await
}

async fn world_from(dir: &Path, n: usize, store: Store, renders: Renders) -> Result<World, Error> {
    let swarm = Arc::new(SimSwarm::new(SimConfig {
        start_delay: Duration::from_millis(100),
        ..SimConfig::default()
    }));
    let dir = DirCatalogue::open(dir).map_err(|e| Error::CatalogueFailed(e.to_string()))?;
    let counting = Arc::new(CountingCatalogue::new(match renders {
        Renders::Catalogue => Arc::new(dir),
        Renders::Memoized => Arc::new(MemoCatalogue::new(dir)),
    }));
    let catalogue: Arc<dyn Catalogue> = counting.clone();
    let base =
        BaseDomain::parse("hearth.test").map_err(|e| Error::CatalogueFailed(e.to_string()))?;
    let extra: Labels = [("hearth.test".to_string(), "1".to_string())].into();
    for i in 0..n {
        let name = app_name(i);
        let app = warm_app(&name)?;
        store.create(&app).await?;
        deploy(&swarm, catalogue.as_ref(), &base, &extra, &app).await?;
    }
    // Tasks start after 100 ms and the recipe's healthcheck passes after one 2 s interval.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let ctx = Arc::new(Context {
        swarm: swarm.clone(),
        store: store.clone(),
        catalogue,
        prober: Arc::new(FixedProber::passing()),
        metrics: metrics::Metrics::new().map_err(|e| Error::CatalogueFailed(e.to_string()))?,
        clock: Arc::new(TokioClock::new()),
        base_domain: base,
        extra_labels: extra,
        apply: ApplyOptions::default(),
        teardown: TeardownOptions::graceful(),
        observations: ObservationCache::new(),
        renders: Default::default(),
    });
    let config = runtime::Config {
        resync_period: Duration::from_secs(24 * 3600),
        resync_jitter: 0.0,
        seed: Some(7),
        ..runtime::Config::default()
    };
    let controller = Controller::<WarmAppReconciler>::new(store.clone(), ctx.clone(), config)
        .with_swarm(swarm.clone());
    let handle = controller.handle();
    let shutdown = Shutdown::new();
    let task = tokio::spawn(controller.run(shutdown.clone()));
    let world = World {
        swarm,
        store,
        handle,
        ctx,
        catalogue: counting,
        apps: n,
        shutdown,
        task,
    };
    world.settle(0).await?;
    Ok(world)
}

/// Deploys `app`'s stack as the reconciler would (same render, labels and preparation),
/// without listing anything first (the namespace must be empty).
///
/// # Errors
/// [`Error::CatalogueFailed`], [`Error::DeployFailed`].
pub async fn deploy(
    swarm: &SimSwarm,
    catalogue: &dyn Catalogue,
    base: &BaseDomain,
    extra: &Labels,
    app: &WarmApp,
) -> Result<(), Error> {
    let stack = app
        .stack_name()
        .map_err(|e| Error::CatalogueFailed(e.to_string()))?;
    let domain = app
        .domain(base)
        .map_err(|e| Error::CatalogueFailed(e.to_string()))?;
    let version = app.spec.version.clone();
    let rendered = catalogue
        .render(&RenderRequest {
            recipe: &app.spec.recipe,
            version: &version,
            stack: stack.as_str(),
            domain: &domain,
            env: &app.spec.env,
        })
        .map_err(|e| Error::CatalogueFailed(e.to_string()))?;
    let desired = warmapp::prepare(rendered.stack, &version);
    let owner = warmapp::owner(app.name(), &stack, extra);
    let failed = |message: String| Error::DeployFailed {
        stack: stack.to_string(),
        message,
    };
    let plan =
        stack::plan(&desired, &owner, &Observed::default()).map_err(|e| failed(e.to_string()))?;
    stack::execute(swarm, &plan, &ApplyOptions::default())
        .await
        .map_err(|e| failed(e.to_string()))?;
    Ok(())
}

impl World {
    /// Waits until at least `after + apps` reconciles started and none is running or queued.
    async fn settle(&self, after: u64) -> Result<(), Error> {
        let limit = tokio::time::Instant::now() + Duration::from_secs(600);
        loop {
            let h = &self.handle;
            if h.reconciles_started() >= after + self.apps as u64
                && h.active_workers() == 0
                && h.queue_depth() == 0
            {
                return Ok(());
            }
            if tokio::time::Instant::now() > limit {
                return Err(Error::PassTimedOut(format!(
                    "{} of {} reconciles after 600 s; {} active, {} queued",
                    h.reconciles_started() - after,
                    self.apps,
                    h.active_workers(),
                    h.queue_depth()
                )));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Runs one full resync pass (every app reconciled once) and reports its cost.
    ///
    /// # Errors
    /// [`Error::PassTimedOut`].
    pub async fn pass(&self) -> Result<Pass, Error> {
        self.swarm.clear_calls();
        let before = self.ctx.observations.stats();
        let (renders, revision) = (self.catalogue.renders(), self.store.revision());
        let started = self.handle.reconciles_started();
        let t0 = tokio::time::Instant::now();
        self.handle.resync_now();
        self.settle(started).await?;
        let elapsed = t0.elapsed();
        let after = self.ctx.observations.stats();
        Ok(Pass {
            calls: self.swarm.call_count(),
            writes: self.swarm.write_count(),
            reconciles: self.handle.reconciles_started() - started,
            refreshes: after.refreshes - before.refreshes,
            stack_reads: after.stack_reads - before.stack_reads,
            elapsed,
            renders: self.catalogue.renders() - renders,
            store_writes: self.store.revision() - revision,
        })
    }

    /// Whether every app is Ready at 1.0.0.
    ///
    /// # Errors
    /// [`Error::StoreFailed`].
    pub fn all_ready(&self) -> Result<bool, Error> {
        let apps = self.store.list::<WarmApp>()?.items;
        Ok(apps.len() == self.apps
            && apps.iter().all(|a| {
                a.status.phase == crd::WarmAppPhase::Ready
                    && a.status.observed_version.as_deref() == Some("1.0.0")
            }))
    }

    /// Stops the controller gracefully.
    pub async fn stop(self) -> Option<Stopped> {
        self.shutdown.graceful.cancel();
        self.task.await.ok()
    }
}
