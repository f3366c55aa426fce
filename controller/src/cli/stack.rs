//! `hearth stack deploy|rm|ls|ps`: docker's stack commands, done natively through the Engine API.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use tokio::time::Instant;

use super::progress::{self, Verdict};
use super::{table, Error};
use crate::stack::{
    self, observe, teardown, Action, ApplyOptions, Depth, Mode, Owner, TeardownOptions,
    NAMESPACE_LABEL,
};
use crate::swarm::{LabelFilter, ServiceMode, Swarm, TaskState};

/// `hearth stack …`
#[derive(Debug, Subcommand)]
pub enum StackCommand {
    /// Deploy a new stack or update an existing one from compose files.
    Deploy(DeployArgs),
    /// Remove stacks, verified: fails naming anything left behind.
    #[command(alias = "remove", alias = "down")]
    Rm(RmArgs),
    /// List stacks.
    #[command(alias = "list")]
    Ls,
    /// List the tasks of a stack.
    Ps(PsArgs),
}

/// `hearth stack deploy`
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// Compose file; repeat to merge several in order, as `docker stack deploy -c` does.
    #[arg(
        short = 'c',
        long = "compose-file",
        value_name = "FILE",
        required = true
    )]
    pub compose_files: Vec<PathBuf>,
    /// File of `KEY=VALUE` lines for interpolation; the process environment wins over it (as
    /// in docker compose).
    #[arg(long, value_name = "FILE")]
    pub env_file: Option<PathBuf>,
    /// Extra label `KEY=VALUE` on every object of the stack (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Wait until every task runs (and is healthy where a healthcheck exists): the default
    /// now; kept for scripts written when returning at once was.
    #[arg(long, conflicts_with = "detach")]
    pub wait: bool,
    /// Return as soon as the objects are created or updated, without waiting for the tasks.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// How progress is shown while waiting: `tty` (live, on stderr), `plain` (a line per
    /// change), `auto` (`tty` when stderr is a terminal).
    #[arg(long, value_enum, default_value_t = progress::Mode::Auto)]
    pub progress: progress::Mode,
    /// Deadline of the deploy and of the wait, e.g. `90s`, `5m`. A service whose tasks fail
    /// three times per replica ends the wait earlier.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5m")]
    pub timeout: Duration,
    /// Stack name.
    pub name: String,
}

/// `hearth stack rm`
#[derive(Debug, Args)]
pub struct RmArgs {
    /// Kill and remove the containers at once instead of waiting for their stop grace periods.
    #[arg(short, long)]
    pub force: bool,
    /// Deadline per stack (default 3m graceful, 1m forced), e.g. `90s`.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
    /// The Engine endpoint of a swarm node, `<node-id-or-hostname>=unix:///path/docker.sock`
    /// (repeatable): teardown removes the stack's containers and volumes on every node where
    /// its tasks ran; a node without an endpoint is an error naming it.
    #[arg(long = "node-endpoint", value_name = "NODE=unix:///PATH")]
    pub node_endpoints: Vec<String>,
    /// Stack names.
    #[arg(required = true)]
    pub names: Vec<String>,
}

/// `hearth stack ps`
#[derive(Debug, Args)]
pub struct PsArgs {
    /// Do not truncate IDs.
    #[arg(long)]
    pub no_trunc: bool,
    /// Stack name.
    pub name: String,
}

/// Runs one stack command against `swarm`.
///
/// # Errors
/// See [`Error`]; each command's function documents its own.
pub async fn run(
    swarm: &dyn Swarm,
    command: StackCommand,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), Error> {
    match command {
        StackCommand::Deploy(args) => {
            let mut env = match &args.env_file {
                Some(path) => read_env_file(path)?,
                None => BTreeMap::new(),
            };
            env.extend(std::env::vars());
            deploy(swarm, &args, &env, out, err).await
        }
        StackCommand::Rm(args) => rm(swarm, &args, out, err).await,
        StackCommand::Ls => ls(swarm, out).await,
        StackCommand::Ps(args) => ps(swarm, &args, out).await,
    }
}

/// Reads an env file: `KEY=VALUE` lines, `#` comments and blank lines ignored, an optional
/// `export ` prefix, values optionally in matching single or double quotes.
///
/// # Errors
/// [`Error::EnvFileUnreadable`], [`Error::EnvFileRejected`] with the line.
pub fn read_env_file(path: &std::path::Path) -> Result<BTreeMap<String, String>, Error> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| Error::EnvFileUnreadable {
        path: name.clone(),
        source,
    })?;
    parse_env(&name, &text)
}

fn parse_env(name: &str, text: &str) -> Result<BTreeMap<String, String>, Error> {
    let mut env = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let rejected = |message: &str| Error::EnvFileRejected {
            path: name.to_string(),
            line: i + 1,
            message: message.to_string(),
        };
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| rejected("expected KEY=VALUE"))?;
        let key = key.trim();
        if key.is_empty()
            || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            || key.starts_with(|c: char| c.is_ascii_digit())
        {
            return Err(rejected(&format!("invalid variable name {key:?}")));
        }
        let value = value.trim();
        let unquoted = ['"', '\'']
            .iter()
            .find_map(|q| {
                value
                    .strip_prefix(*q)
                    .and_then(|v| v.strip_suffix(*q))
                    .filter(|_| value.len() >= 2)
            })
            .unwrap_or(value);
        env.insert(key.to_string(), unquoted.to_string());
    }
    Ok(env)
}

fn parse_labels(labels: &[String]) -> Result<Vec<(String, String)>, Error> {
    labels
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| {
                    Error::ArgumentRejected(format!("--label {kv:?}: expected KEY=VALUE"))
                })
        })
        .collect()
}

/// Past-tense-free docker wording of an action: `Creating service s_web`.
fn narrate(action: &Action) -> String {
    let object = action.object();
    let verb = match action.verb() {
        "create" => "Creating",
        "update" => "Updating",
        _ => "Removing",
    };
    match action {
        Action::UpdateService { id, .. } => format!("{verb} service {} (id: {id})", object.name),
        _ => format!("{verb} {} {}", object.kind, object.name),
    }
}

/// `hearth stack deploy`: translates the compose files, applies the stack (owner `Stack/NAME`),
/// and unless `--detach` waits for convergence, showing progress on `err` (or live on the
/// terminal).
///
/// # Errors
/// [`Error::ComposeRejected`] with file:line:col, [`Error::StackFailed`], [`Error::NotReady`]
/// (the timeout passed), [`Error::ConvergenceFailed`] (tasks kept failing), each naming the
/// failed tasks' errors.
pub async fn deploy(
    swarm: &dyn Swarm,
    args: &DeployArgs,
    env: &BTreeMap<String, String>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), Error> {
    let translation = crate::compose::translate_paths(&args.compose_files, &args.name, env)?;
    for warning in &translation.warnings {
        writeln!(err, "warning: {warning}")?;
    }
    let mut owner = Owner::operator(&args.name);
    for (k, v) in parse_labels(&args.labels)? {
        owner = owner.with_label(k, v);
    }
    let started = Instant::now();
    let since = std::time::SystemTime::now();
    let options = ApplyOptions {
        deadline: args.timeout,
        ..ApplyOptions::default()
    };
    let report = stack::apply(swarm, &translation.stack, &owner, &options).await?;
    for action in &report.done {
        writeln!(out, "{}", narrate(action))?;
    }
    if report.is_noop() {
        writeln!(out, "Stack {} is up to date", args.name)?;
    }
    if args.detach {
        return Ok(());
    }
    out.flush()?;
    let deadline = started + args.timeout;
    let display: Box<dyn progress::Display + '_> = match args.progress.resolve() {
        progress::Mode::Tty => Box::new(progress::Live::new()),
        _ => Box::new(progress::Lines::new(err)),
    };
    wait_converged(swarm, &args.name, since, (started, deadline), display, out).await
}

/// Waits until the stack converges, its tasks keep failing, or `deadline` passes; shows every
/// change on `display` and the verdict on `out`. Also `run start --deploy`'s wait.
///
/// # Errors
/// [`Error::NotReady`], [`Error::ConvergenceFailed`], [`Error::StackFailed`] when observing
/// failed.
pub(crate) async fn wait_converged(
    swarm: &dyn Swarm,
    namespace: &str,
    since: std::time::SystemTime,
    (started, deadline): (Instant, Instant),
    mut display: Box<dyn progress::Display + '_>,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let mut tracker = progress::Tracker::default();
    let mut pause = Duration::from_millis(100);
    loop {
        let seen = observe(swarm, namespace, Depth::WithTasks).await?;
        let changes = tracker.update(progress::look(&seen, since));
        display.show(&changes)?;
        let after = humantime::format_duration(Duration::from_millis(
            started.elapsed().as_millis() as u64 / 100 * 100,
        ))
        .to_string();
        match tracker.verdict() {
            Verdict::Converged => {
                display.finish(None);
                writeln!(out, "Stack {namespace} is ready")?;
                return Ok(());
            }
            Verdict::Failing { service } => {
                display.finish(Some(&service));
                return Err(Error::ConvergenceFailed {
                    namespace: namespace.to_string(),
                    after,
                    service,
                    failures: tracker.last_failures(),
                });
            }
            Verdict::Waiting if Instant::now() >= deadline => {
                display.finish(None);
                let mut why = tracker.not_ready().join(", ");
                if !tracker.failures().is_empty() {
                    why = format!("{why}; failed tasks: {}", tracker.last_failures());
                }
                return Err(Error::NotReady {
                    namespace: namespace.to_string(),
                    after,
                    why,
                });
            }
            Verdict::Waiting => {}
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 3 / 2).min(Duration::from_secs(1));
    }
}

/// `hearth stack rm`: verified teardown of each stack (graceful, or forced with `--force`).
///
/// The stacks are torn down at once (`hearth stack rm a b` takes as long as the slower of
/// the two, not the sum: #14); what each did is printed in the order they were named.
///
/// # Errors
/// The first named stack's failure ([`Error::StackFailed`] with the residuals named); the
/// other stacks are still torn down and their failures printed to `err`.
pub async fn rm(
    swarm: &dyn Swarm,
    args: &RmArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), Error> {
    let mut options = if args.force {
        TeardownOptions::forced()
    } else {
        TeardownOptions::graceful()
    };
    if let Some(timeout) = args.timeout {
        options.deadline = timeout;
    }
    options.nodes = super::node_daemons(&args.node_endpoints)?;
    let options = &options;
    let outcomes = futures::future::join_all(
        args.names
            .iter()
            .map(|name| async move { (name, teardown(swarm, name, options).await) }),
    )
    .await;
    let mut first_failure = None;
    for (name, outcome) in outcomes {
        match outcome {
            Ok(report) => {
                for object in report.removed.iter().chain(&report.already_gone) {
                    writeln!(out, "Removing {} {}", object.kind, object.name)?;
                }
                for node in &report.nodes {
                    let via = node.endpoint.as_deref().unwrap_or("-");
                    for object in node.containers_removed.iter().chain(&node.volumes_removed) {
                        writeln!(
                            out,
                            "Removing {} {} on node {} ({}) via {via}",
                            object.kind, object.name, node.hostname, node.id
                        )?;
                    }
                }
                if report.removed.is_empty() && report.already_gone.is_empty() {
                    writeln!(err, "Nothing found in stack: {name}")?;
                } else if options.mode == Mode::Forced {
                    writeln!(
                        out,
                        "Removed stack {name} in {:.1?} ({} container(s) killed)",
                        report.elapsed,
                        report.containers_removed.len()
                    )?;
                } else {
                    writeln!(out, "Removed stack {name} in {:.1?}", report.elapsed)?;
                }
            }
            Err(e) => {
                writeln!(err, "error: {}", crate::errors::chain(&e))?;
                first_failure.get_or_insert(e);
            }
        }
    }
    match first_failure {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// `hearth stack ls`: stacks with services (one list call), and their hearth owner.
///
/// # Errors
/// [`Error::SwarmFailed`].
pub async fn ls(swarm: &dyn Swarm, out: &mut dyn Write) -> Result<(), Error> {
    let services = swarm
        .list_services(&LabelFilter::all().and_has(NAMESPACE_LABEL))
        .await?;
    let mut stacks: BTreeMap<String, (usize, String)> = BTreeMap::new();
    for s in &services {
        let Some(ns) = s.meta.labels.get(NAMESPACE_LABEL) else {
            continue;
        };
        let owner = match (
            s.meta.labels.get(crd::names::labels::KIND),
            s.meta.labels.get(crd::names::labels::NAME),
        ) {
            (Some(kind), Some(name)) => format!("{kind}/{name}"),
            _ => "-".to_string(),
        };
        let entry = stacks.entry(ns.clone()).or_insert((0, owner));
        entry.0 += 1;
    }
    let rows: Vec<Vec<String>> = stacks
        .into_iter()
        .map(|(name, (n, owner))| vec![name, n.to_string(), owner])
        .collect();
    table(out, &["NAME", "SERVICES", "HEARTH OWNER"], &rows)?;
    Ok(())
}

fn short(id: &str, no_trunc: bool) -> String {
    if no_trunc {
        id.to_string()
    } else {
        id.chars().take(12).collect()
    }
}

fn state_word(state: &TaskState) -> String {
    let text = format!("{state:?}");
    match state {
        TaskState::Other(s) => s.clone(),
        _ => text,
    }
}

/// `hearth stack ps NAME`: the stack's tasks (7 list calls plus one for node names).
///
/// # Errors
/// [`Error::StackNotFound`] when the stack has no services; [`Error::StackFailed`].
pub async fn ps(swarm: &dyn Swarm, args: &PsArgs, out: &mut dyn Write) -> Result<(), Error> {
    let (seen, nodes) = futures::try_join!(
        async {
            observe(swarm, &args.name, Depth::WithTasks)
                .await
                .map_err(Error::from)
        },
        async {
            swarm
                .list_nodes(&LabelFilter::all())
                .await
                .map_err(Error::from)
        },
    )?;
    if seen.services.is_empty() {
        return Err(Error::StackNotFound(args.name.clone()));
    }
    let node_names: BTreeMap<&str, &str> = nodes
        .iter()
        .map(|n| (n.meta.id.as_str(), n.meta.name.as_str()))
        .collect();
    let mut tasks: Vec<_> = seen
        .tasks
        .iter()
        .filter_map(|t| {
            let service = seen.services.iter().find(|s| s.meta.id == t.service_id)?;
            Some((service, t))
        })
        .collect();
    tasks.sort_by(|(a, t), (b, u)| {
        (&a.meta.name, t.slot, u.created_at).cmp(&(&b.meta.name, u.slot, t.created_at))
    });
    let mut rows = Vec::new();
    let mut previous: Option<(String, Option<u64>)> = None;
    for (service, t) in tasks {
        let slot = match service.mode {
            ServiceMode::Global => t.node_id.clone().unwrap_or_default(),
            _ => t.slot.map(|s| s.to_string()).unwrap_or_default(),
        };
        let key = (service.meta.name.clone(), t.slot);
        let name = if previous.as_ref() == Some(&key) && service.mode != ServiceMode::Global {
            format!(" \\_ {}.{slot}", service.meta.name)
        } else {
            format!("{}.{slot}", service.meta.name)
        };
        previous = Some(key);
        let health = t
            .container_id
            .as_deref()
            .and_then(|id| seen.containers.iter().find(|c| c.id == id))
            .and_then(|c| c.health)
            .map(|h| format!(" ({})", format!("{h:?}").to_lowercase()))
            .unwrap_or_default();
        let node = t
            .node_id
            .as_deref()
            .map(|n| node_names.get(n).copied().unwrap_or(n).to_string())
            .unwrap_or_default();
        rows.push(vec![
            short(&t.id, args.no_trunc),
            name,
            service.image.clone().unwrap_or_default(),
            node,
            state_word(&t.desired_state),
            format!("{}{health}", state_word(&t.state)),
            t.error.clone().unwrap_or_default(),
        ]);
    }
    table(
        out,
        &[
            "ID",
            "NAME",
            "IMAGE",
            "NODE",
            "DESIRED STATE",
            "CURRENT STATE",
            "ERROR",
        ],
        &rows,
    )?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::swarm::sim::{SimConfig, SimSwarm};

    const COMPOSE: &str = r#"
version: "3.8"
services:
  web:
    image: img:1
    command: ["/bin/serve"]
    healthcheck:
      test: ["CMD", "/bin/healthcheck"]
      interval: 1s
    deploy:
      replicas: ${REPLICAS:-1}
      endpoint_mode: dnsrr
    secrets: [token]
    volumes: [data:/data]
secrets:
  token:
    file: ./token.txt
volumes:
  data: {}
"#;

    fn files() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("stack.yml"), COMPOSE).unwrap();
        std::fs::write(dir.path().join("token.txt"), "s3cret").unwrap();
        dir
    }

    fn deploy_args(dir: &tempfile::TempDir, wait: bool) -> DeployArgs {
        DeployArgs {
            compose_files: vec![dir.path().join("stack.yml")],
            env_file: None,
            labels: vec!["hearth.test=1".into()],
            wait,
            detach: !wait,
            progress: progress::Mode::Plain,
            timeout: Duration::from_secs(60),
            name: "demo".into(),
        }
    }

    fn text(buf: &[u8]) -> String {
        String::from_utf8(buf.to_vec()).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn deploy_ls_ps_and_rm_work_like_docker_stack() {
        let swarm = SimSwarm::new(SimConfig::default());
        let dir = files();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let env = BTreeMap::from([("REPLICAS".to_string(), "2".to_string())]);
        deploy(&swarm, &deploy_args(&dir, true), &env, &mut out, &mut err)
            .await
            .unwrap();
        let printed = text(&out);
        assert!(
            printed.contains("Creating network demo_default"),
            "{printed}"
        );
        assert!(printed.contains("Creating service demo_web"), "{printed}");
        assert!(printed.contains("Stack demo is ready"), "{printed}");

        let mut again = Vec::new();
        deploy(
            &swarm,
            &deploy_args(&dir, false),
            &env,
            &mut again,
            &mut err,
        )
        .await
        .unwrap();
        assert_eq!(text(&again), "Stack demo is up to date\n");

        let mut out = Vec::new();
        ls(&swarm, &mut out).await.unwrap();
        assert_eq!(
            text(&out),
            "NAME   SERVICES   HEARTH OWNER\ndemo   1          Stack/demo\n"
        );

        let mut out = Vec::new();
        ps(
            &swarm,
            &PsArgs {
                no_trunc: false,
                name: "demo".into(),
            },
            &mut out,
        )
        .await
        .unwrap();
        let table = text(&out);
        assert_eq!(table.lines().count(), 3, "{table}");
        assert!(table.contains("demo_web.1"), "{table}");
        assert!(table.contains("Running (healthy)"), "{table}");

        let mut out = Vec::new();
        rm(
            &swarm,
            &RmArgs {
                force: true,
                timeout: None,
                node_endpoints: Vec::new(),
                names: vec!["demo".into()],
            },
            &mut out,
            &mut err,
        )
        .await
        .unwrap();
        let printed = text(&out);
        assert!(printed.contains("Removing service demo_web"), "{printed}");
        assert!(printed.contains("Removing volume demo_data"), "{printed}");
        let missing = ps(
            &swarm,
            &PsArgs {
                no_trunc: false,
                name: "demo".into(),
            },
            &mut Vec::new(),
        )
        .await
        .unwrap_err();
        assert!(matches!(missing, Error::StackNotFound(_)));
    }

    /// Deploys the sample stack as `name` and waits until it is ready.
    async fn deployed(swarm: &SimSwarm, dir: &tempfile::TempDir, name: &str) {
        let args = DeployArgs {
            name: name.into(),
            ..deploy_args(dir, true)
        };
        deploy(
            swarm,
            &args,
            &BTreeMap::new(),
            &mut Vec::new(),
            &mut Vec::new(),
        )
        .await
        .unwrap();
    }

    fn rm_args(names: &[&str]) -> RmArgs {
        RmArgs {
            force: false,
            timeout: None,
            node_endpoints: Vec::new(),
            names: names.iter().map(|n| n.to_string()).collect(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn rm_of_two_stacks_removes_both_at_once_and_reports_them_in_order() {
        let swarm = SimSwarm::new(SimConfig::default());
        swarm.set_latency(Duration::from_millis(20));
        let dir = files();
        for name in ["solo", "aa", "bb"] {
            deployed(&swarm, &dir, name).await;
        }
        // One graceful teardown alone, in virtual time: its containers' stop takes most of it.
        let started = Instant::now();
        rm(
            &swarm,
            &rm_args(&["solo"]),
            &mut Vec::new(),
            &mut Vec::new(),
        )
        .await
        .unwrap();
        let one = started.elapsed();
        assert!(one >= Duration::from_secs(1), "{one:?}");

        let (mut out, mut err) = (Vec::new(), Vec::new());
        let started = Instant::now();
        rm(&swarm, &rm_args(&["bb", "aa"]), &mut out, &mut err)
            .await
            .unwrap();
        let both = started.elapsed();
        // At once: the pair takes about as long as one, not the sum (6 s + 6 s before #14).
        assert!(both < one * 3 / 2, "one {one:?}, both {both:?}");
        let printed = text(&out);
        let bb = printed.find("Removed stack bb").unwrap();
        let aa = printed.find("Removed stack aa").unwrap();
        assert!(bb < aa, "reported in the order named: {printed}");
        for name in ["aa", "bb"] {
            let gone = observe(&swarm, name, Depth::WithTasks).await.unwrap();
            assert!(gone.is_empty(), "{name}: {gone:?}");
        }
        assert!(text(&err).is_empty(), "{}", text(&err));
    }

    #[test]
    fn env_files_parse_and_report_bad_lines() {
        let env = parse_env(
            "x.env",
            "# comment\n\nA=1\nexport B=\"two words\"\nC='q'\nD=\n",
        )
        .unwrap();
        assert_eq!(env["A"], "1");
        assert_eq!(env["B"], "two words");
        assert_eq!(env["C"], "q");
        assert_eq!(env["D"], "");
        let err = parse_env("x.env", "A=1\nnot a pair\n").unwrap_err();
        assert_eq!(err.to_string(), "x.env:2: expected KEY=VALUE");
        let err = parse_env("x.env", "1A=1\n").unwrap_err();
        assert!(err.to_string().contains("invalid variable name"), "{err}");
    }
}
