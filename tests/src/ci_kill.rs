//! The CI-kill scenario shared by `tests/cli_runs_real.rs` and the `bench_sweep` benchmark: a CI-like shell script starts a run owned by its own PID, its full stack comes up, the script is SIGKILLed, and an independent poller times how long the run's objects survive.
//!
//! The stack is the `fullstack` recipe of `tests/fixtures/catalogue` (two services, two
//! volumes, a secret, a config, an overlay network). With [`Deploy::Hearth`] the script asks
//! hearth to deploy it (`--deploy`); with [`Deploy::Harness`] the script deploys it itself
//! with `docker stack deploy` under the stack name hearth assigned (adoption: no hearth label
//! on anything).
//!
//! The poller is independent of hearth: it lists every kind (services, containers, networks,
//! volumes, secrets, configs) by the stack's namespace label and by hearth's parent-run label,
//! straight from Docker.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use controller::swarm::{LabelFilter, Swarm};

/// The stack-namespace label `docker stack deploy` and hearth put on every object.
pub const NAMESPACE_LABEL: &str = "com.docker.stack.namespace";
/// hearth's label naming the run an object belongs to.
pub const PARENT_RUN_LABEL: &str = "hearth.parent-run";
/// The recipe of the scenario's stack.
pub const RECIPE: &str = "fullstack";
/// Its version.
pub const VERSION: &str = "1.0.0";

/// The fixture catalogue (holds [`RECIPE`]).
pub fn catalogue_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/catalogue")
}

/// Who deploys the run's stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deploy {
    /// `hearth run start --deploy`.
    Hearth,
    /// The script, with `docker stack deploy -c fullstack/compose.yml $HEARTH_STACK`.
    Harness,
}

/// Every object of one run, by kind (names).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    /// Services.
    pub services: BTreeSet<String>,
    /// Containers (any state).
    pub containers: BTreeSet<String>,
    /// Networks.
    pub networks: BTreeSet<String>,
    /// Volumes.
    pub volumes: BTreeSet<String>,
    /// Secrets.
    pub secrets: BTreeSet<String>,
    /// Configs.
    pub configs: BTreeSet<String>,
}

impl Inventory {
    /// Whether nothing is left.
    pub fn is_empty(&self) -> bool {
        self.total() == 0
    }

    /// How many objects in all.
    pub fn total(&self) -> usize {
        self.services.len()
            + self.containers.len()
            + self.networks.len()
            + self.volumes.len()
            + self.secrets.len()
            + self.configs.len()
    }

    /// Whether the full stack is there: both services with a container each, both volumes,
    /// the network, the secret and the config.
    pub fn is_complete(&self) -> bool {
        self.services.len() >= 2
            && self.containers.len() >= 2
            && !self.networks.is_empty()
            && self.volumes.len() >= 2
            && !self.secrets.is_empty()
            && !self.configs.is_empty()
    }
}

/// Lists every object of a run: by `namespace`, and by hearth's parent-run label `run`.
///
/// # Errors
/// The first failed list call, as text.
pub async fn inventory(swarm: &dyn Swarm, namespace: &str, run: &str) -> Result<Inventory, String> {
    let mut out = Inventory::default();
    for filter in [
        LabelFilter::eq(NAMESPACE_LABEL, namespace),
        LabelFilter::eq(PARENT_RUN_LABEL, run),
    ] {
        let (services, containers, networks, volumes, secrets, configs) = futures::try_join!(
            swarm.list_services(&filter),
            swarm.list_containers(&filter),
            swarm.list_networks(&filter),
            swarm.list_volumes(&filter),
            swarm.list_secrets(&filter),
            swarm.list_configs(&filter),
        )
        .map_err(|e| format!("listing the objects of {namespace}: {e}"))?;
        out.services
            .extend(services.into_iter().map(|s| s.meta.name));
        out.containers
            .extend(containers.into_iter().map(|c| c.name));
        out.networks.extend(networks.into_iter().map(|n| n.name));
        out.volumes.extend(volumes.into_iter().map(|v| v.name));
        out.secrets.extend(secrets.into_iter().map(|s| s.meta.name));
        out.configs.extend(configs.into_iter().map(|c| c.meta.name));
    }
    Ok(out)
}

/// Polls [`inventory`] every `every` until it is empty or `within` passed; returns the time
/// from `since` to the first empty listing.
///
/// # Errors
/// What is still there at the deadline, or a failed list call.
pub async fn wait_until_gone(
    swarm: &dyn Swarm,
    namespace: &str,
    run: &str,
    since: Instant,
    within: Duration,
    every: Duration,
) -> Result<Duration, String> {
    loop {
        let left = inventory(swarm, namespace, run).await?;
        if left.is_empty() {
            return Ok(since.elapsed());
        }
        if since.elapsed() > within {
            return Err(format!(
                "still present {:?} after the kill: {left:?}",
                since.elapsed()
            ));
        }
        tokio::time::sleep(every).await;
    }
}

/// Polls [`inventory`] every 100 ms until the full stack is there ([`Inventory::is_complete`])
/// or `within` passed. `docker stack deploy` returns before swarm has created the tasks'
/// containers, so a snapshot taken at once can miss some.
///
/// # Errors
/// What is there at the deadline, or a failed list call.
pub async fn wait_until_complete(
    swarm: &dyn Swarm,
    namespace: &str,
    run: &str,
    within: Duration,
) -> Result<Inventory, String> {
    let since = Instant::now();
    loop {
        let found = inventory(swarm, namespace, run).await?;
        if found.is_complete() {
            return Ok(found);
        }
        if since.elapsed() > within {
            return Err(format!(
                "{namespace} not complete after {:?}: {found:?}",
                since.elapsed()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One scenario's settings.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The `hearth` binary (the CLI client).
    pub hearth: PathBuf,
    /// The daemon's address (`--server`).
    pub server: String,
    /// The slot pool the run takes a slot of.
    pub pool: String,
    /// Who deploys the stack.
    pub deploy: Deploy,
    /// A scratch directory for the script's output.
    pub work: PathBuf,
    /// Extra environment of the script (e.g. `HEARTH_TOKEN_FILE`).
    pub env: Vec<(String, String)>,
}

/// A started, fully deployed CI job.
#[derive(Debug)]
pub struct Job {
    /// The `sh` running the CI script (the run's owner).
    pub child: Child,
    /// The run id.
    pub run: String,
    /// The run's stack name.
    pub stack: String,
    /// What was deployed (complete).
    pub deployed: Inventory,
}

/// Starts the CI script and waits (up to `within`) until the run's whole stack is up.
///
/// # Errors
/// The script ended early, timed out, or the stack did not come up completely; the script is
/// killed then (hearth's sweeper removes what was deployed).
pub async fn start_job(swarm: &dyn Swarm, s: &Scenario, within: Duration) -> Result<Job, String> {
    std::fs::create_dir_all(&s.work).map_err(|e| format!("{}: {e}", s.work.display()))?;
    let ids = s.work.join("run-ids");
    let _ = std::fs::remove_file(&ids);
    let deploy_flag = match s.deploy {
        // --detach: this harness waits for the whole stack itself (below), as it did before
        // `run start` waited by default.
        Deploy::Hearth => "--deploy --detach",
        Deploy::Harness => "",
    };
    let harness_deploy = match s.deploy {
        Deploy::Hearth => String::new(),
        Deploy::Harness => format!(
            "VERSION={VERSION} docker stack deploy -c {} \"$HEARTH_STACK\" >/dev/null\n",
            catalogue_dir().join(RECIPE).join("compose.yml").display()
        ),
    };
    // `exec sleep`: the owner stays this very process (same PID, same start time) until the kill.
    let script = format!(
        "set -e\n\
         eval \"$({hearth} run start --server {server} --recipe {RECIPE} --version {VERSION} \
         --pool {pool} --owner-pid $$ {deploy_flag} -o env)\"\n\
         : \"${{HEARTH_RUN_ID:?run start failed}}\"\n\
         {harness_deploy}\
         echo \"$HEARTH_RUN_ID $HEARTH_STACK\" > {ids}.tmp && mv {ids}.tmp {ids}\n\
         exec sleep 600\n",
        hearth = s.hearth.display(),
        server = s.server,
        pool = s.pool,
        ids = ids.display(),
    );
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .envs(s.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("spawning the CI script: {e}"))?;
    let until = Instant::now() + within;
    let fail = |child: &mut Child, why: String| {
        let _ = child.kill();
        let _ = child.wait();
        Err(why)
    };
    let (run, stack) = loop {
        if let Ok(text) = std::fs::read_to_string(&ids) {
            let mut words = text.split_whitespace();
            if let (Some(run), Some(stack)) = (words.next(), words.next()) {
                break (run.to_string(), stack.to_string());
            }
        }
        match child.try_wait() {
            Ok(None) => {}
            Ok(Some(status)) => return Err(format!("the CI script ended early: {status}")),
            Err(e) => return fail(&mut child, format!("waiting for the CI script: {e}")),
        }
        if Instant::now() > until {
            return fail(&mut child, "run start did not finish in time".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let deployed = loop {
        let now = match inventory(swarm, &stack, &run).await {
            Ok(i) => i,
            Err(e) => return fail(&mut child, e),
        };
        if now.is_complete() {
            break now;
        }
        if Instant::now() > until {
            return fail(
                &mut child,
                format!("the run's stack {stack} did not come up completely: {now:?}"),
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    Ok(Job {
        child,
        run,
        stack,
        deployed,
    })
}

/// SIGKILLs the job and returns the instant of the kill.
///
/// # Errors
/// The kill or the reaping failed.
pub fn kill(job: &mut Job) -> Result<Instant, String> {
    job.child
        .kill()
        .map_err(|e| format!("SIGKILL of the CI script: {e}"))?;
    let at = Instant::now();
    job.child
        .wait()
        .map_err(|e| format!("reaping the CI script: {e}"))?;
    Ok(at)
}
