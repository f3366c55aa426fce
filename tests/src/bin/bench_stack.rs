//! Benchmark: `hearth stack deploy|rm` against `docker stack deploy|rm` on the real swarm.
//!
//! Run once, in release mode, on the test bed (see `BENCHMARKS.md`, "How to reproduce"):
//!
//! ```text
//! cargo build --release -p hearth-controller --bin hearth -p hearth-tests --bin bench_stack
//! target/release/bench_stack [--runs N] [--hearth PATH] [--docker PATH] [--only forced]
//! ```
//!
//! Every measurement is repeated `--runs` times (default 5), hearth and docker alternating so
//! that drifting background load hits both alike, and reported as median and min–max with the
//! ratio of the medians (hearth / docker):
//!
//! - **deploy**: the deploy command, then polling (50 ms, one task listing per poll, the same
//!   poller for both) until every service has as many running tasks as it wants; stacks of 3
//!   and 10 services;
//! - **forced rm**: `hearth stack rm --force` (exits once its final listing finds nothing)
//!   against the fastest docker-CLI script that removes a stack by force now (the fair peer,
//!   [`FORCED_SCRIPT`]): `docker service rm` of its services and `docker rm -f` of its
//!   containers at once, then its networks, secrets, configs and volumes (and any container
//!   left) removed and listed again, each kind in parallel, until nothing with the namespace
//!   label is left;
//! - **floor of a forced rm** (with the fair-peer row, between its samples): how long dockerd
//!   itself needs to remove the same stack however fast the client is ([`floor_rm`]): an
//!   in-process client that knows every object beforehand sends every removal at once and
//!   retries each every 5 ms; timed from the first request to the last object's disappearance
//!   as dockerd's events report it. Three variants, by when the overlay network goes: at once,
//!   on the last container's `disconnect` event, on its `destroy` event. Printed against the
//!   fair peer's median of the same run (floor / peer: above 0.5, no client meets ≤ 0.5);
//! - **forced rm vs graceful docker**: the same forced hearth rm against `docker stack rm`
//!   followed by what a script must do to get the same result: retrying `docker volume rm`
//!   and listing networks every 100 ms until the stack's volumes and networks are gone
//!   (docker's own command has no forced mode);
//! - **graceful rm**: `hearth stack rm` against the same docker procedure;
//! - **no-op re-apply**: the API calls (and writes) of applying an unchanged stack, counted by
//!   a wrapper around the bollard adapter (the library call `hearth stack deploy` makes).
//!
//! Stacks are named `hearth-test-bench-…`; every object carries `hearth.test=1`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use controller::compose;
use controller::stack::{self, ApplyOptions, Owner, TeardownOptions, NAMESPACE_LABEL};
use controller::swarm::{DockerOptions, DockerSwarm, LabelFilter, ServiceMode, Swarm, TaskState};
use futures::StreamExt;
use hearth_tests::counting::Counting;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Settings from the command line.
struct Settings {
    runs: usize,
    /// Instead of the benchmarks: trace `--trace-rm N` forced teardowns in-process, call by
    /// call (where the time of a forced rm goes).
    trace_rm: usize,
    hearth: PathBuf,
    docker: PathBuf,
    /// `--only forced`: only the two forced-rm rows.
    only_forced: bool,
    /// `--only floor`: only the floor, the network on `disconnect` against on `destroy`,
    /// alternating, `--runs` samples each (is one moment better than the other?).
    only_floor: bool,
}

fn settings() -> Result<Settings, BoxError> {
    let exe = std::env::current_exe()?;
    let mut s = Settings {
        runs: 5,
        trace_rm: 0,
        hearth: exe.with_file_name("hearth"),
        docker: PathBuf::from("/usr/bin/docker"),
        only_forced: false,
        only_floor: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--runs" => s.runs = value()?.parse()?,
            "--trace-rm" => s.trace_rm = value()?.parse()?,
            "--hearth" => s.hearth = PathBuf::from(value()?),
            "--docker" => s.docker = PathBuf::from(value()?),
            "--only" => match value()?.as_str() {
                "forced" => s.only_forced = true,
                "floor" => s.only_floor = true,
                other => {
                    return Err(
                        format!("--only {other:?}: only `forced` and `floor` are known").into(),
                    )
                }
            },
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    if s.runs == 0 {
        return Err("--runs must be at least 1".into());
    }
    if s.runs < 5 {
        eprintln!("--runs {}: a smoke run; medians need at least 5", s.runs);
    }
    if !s.hearth.exists() {
        return Err(format!(
            "{} missing: cargo build --release -p hearth-controller --bin hearth",
            s.hearth.display()
        )
        .into());
    }
    Ok(s)
}

/// A compose file of `services` fixture services sharing one overlay network, one volume,
/// one secret and one config; `stop_grace_period` as given.
fn compose_file(services: usize, grace: &str) -> String {
    let mut out = String::from("version: \"3.8\"\nservices:\n");
    for i in 1..=services {
        out.push_str(&format!(
            "  web{i}:\n    image: hearth-fixture/webapp:1.0.0\n    command: [\"/bin/serve\"]\n    \
             stop_grace_period: {grace}\n    networks: [net]\n    volumes: [\"data:/data\"]\n    \
             secrets: [token]\n    configs: [{{source: conf, target: /etc/conf}}]\n    \
             deploy:\n      replicas: 1\n      endpoint_mode: dnsrr\n      labels: {{hearth.test: \"1\"}}\n"
        ));
    }
    out.push_str(
        "networks:\n  net:\n    driver: overlay\n    labels: {hearth.test: \"1\"}\n\
         volumes:\n  data:\n    labels: {hearth.test: \"1\"}\n\
         secrets:\n  token:\n    file: ./token\n    labels: {hearth.test: \"1\"}\n\
         configs:\n  conf:\n    file: ./conf\n    labels: {hearth.test: \"1\"}\n",
    );
    out
}

/// Runs a command; its failure (with stderr) is an error.
fn run(program: &Path, args: &[&str], dir: &Path) -> Result<(), BoxError> {
    let out = Command::new(program).args(args).current_dir(dir).output()?;
    if !out.status.success() {
        return Err(format!(
            "{} {args:?} failed: {}",
            program.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    Ok(())
}

fn ns_filter(namespace: &str) -> LabelFilter {
    LabelFilter::eq(NAMESPACE_LABEL, namespace)
}

/// Polls every 50 ms until every service of the stack has its replicas running.
async fn wait_running(swarm: &dyn Swarm, namespace: &str, services: usize) -> Result<(), BoxError> {
    let deadline = Instant::now() + Duration::from_secs(180);
    let filter = ns_filter(namespace);
    loop {
        let listed = swarm.list_services(&filter).await?;
        if listed.len() == services {
            let tasks = swarm.list_tasks(&filter).await?;
            let all = listed.iter().all(|s| {
                let want = match s.mode {
                    ServiceMode::Replicated(replicas) => replicas as usize,
                    _ => 1,
                };
                let running = tasks
                    .iter()
                    .filter(|t| t.service_id == s.meta.id && t.state == TaskState::Running)
                    .count();
                running >= want
            });
            if all {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(format!("{namespace}: tasks not running within 180 s").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether nothing of the stack is left (every kind listed by the namespace label).
async fn gone(swarm: &dyn Swarm, namespace: &str) -> Result<bool, BoxError> {
    let f = ns_filter(namespace);
    Ok(swarm.list_services(&f).await?.is_empty()
        && swarm.list_networks(&f).await?.is_empty()
        && swarm.list_volumes(&f).await?.is_empty()
        && swarm.list_secrets(&f).await?.is_empty()
        && swarm.list_configs(&f).await?.is_empty())
}

/// `docker stack rm`, then what a script does: every 100 ms remove the stack's volumes (they
/// fail while containers stop) and list its networks, until both are gone.
async fn docker_rm(
    swarm: &dyn Swarm,
    docker: &Path,
    namespace: &str,
    dir: &Path,
) -> Result<(), BoxError> {
    run(docker, &["stack", "rm", namespace], dir)?;
    let deadline = Instant::now() + Duration::from_secs(180);
    let f = ns_filter(namespace);
    loop {
        let volumes = swarm.list_volumes(&f).await?;
        for v in &volumes {
            // In use while containers stop: try again next round.
            let _ = Command::new(docker)
                .args(["volume", "rm", &v.name])
                .output()?;
        }
        let networks = swarm.list_networks(&f).await?;
        if networks.is_empty() && swarm.list_volumes(&f).await?.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{namespace}: docker stack rm left objects after 180 s").into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The fair peer of a forced rm: the fastest docker-CLI script that removes a stack by force
/// now. `$1` the docker CLI, `$2` the stack. Services and containers are removed at once
/// (`docker rm -f` kills them without waiting for swarm); then each kind is listed by the
/// namespace label and removed, in parallel, again until its listing is empty (networks and
/// volumes are in use until the containers are gone; a task still being prepared may create a
/// container after its service went).
const FORCED_SCRIPT: &str = r#"
d=$1; f="label=com.docker.stack.namespace=$2"
s=$($d service ls -q --filter "$f"); [ -z "$s" ] || $d service rm $s >/dev/null &
c=$($d ps -aq --filter "$f"); [ -z "$c" ] || $d rm -f $c >/dev/null &
wait
gone() {
    while ids=$($d "$@" --filter "$f") && [ -n "$ids" ]; do
        case "$1" in ps) $d rm -f $ids ;; *) $d "$1" rm $ids ;; esac >/dev/null 2>&1 || sleep 0.05
    done
}
gone ps -aq & gone network ls -q & gone secret ls -q & gone config ls -q & gone volume ls -q &
wait
"#;

/// [`FORCED_SCRIPT`], until it exits; then checks that nothing of the stack is left.
async fn docker_forced_rm(
    swarm: &dyn Swarm,
    docker: &Path,
    namespace: &str,
    dir: &Path,
) -> Result<(), BoxError> {
    let docker = docker.to_string_lossy();
    run(
        Path::new("/bin/bash"),
        &["-c", FORCED_SCRIPT, "forced-rm", &docker, namespace],
        dir,
    )?;
    if !gone(swarm, namespace).await? {
        return Err(format!("{namespace}: the forced docker script left objects").into());
    }
    Ok(())
}

/// When a floor run removes the stack's overlay network.
#[derive(Debug, Clone, Copy, PartialEq)]
enum NetworkAt {
    /// At once with everything else, retried until the cluster takes it.
    Eager,
    /// As soon as dockerd reports every container disconnected from it (events).
    Disconnected,
    /// As soon as dockerd reports every container destroyed (events).
    Destroyed,
}

impl NetworkAt {
    fn describe(self) -> &'static str {
        match self {
            NetworkAt::Eager => "network at once with the rest",
            NetworkAt::Disconnected => "network on the last container's `disconnect` event",
            NetworkAt::Destroyed => "network on the last container's `destroy` event",
        }
    }
}

/// One floor sample: dockerd's time, and when (ms from the first request) the last container
/// and the network's node-local copy were destroyed.
#[derive(Debug, Clone, Copy)]
struct FloorSample {
    secs: f64,
    containers_ms: f64,
    network_ms: f64,
}

/// Removes an object until dockerd answers done or "not found": every error is retried after
/// 5 ms (in use, not yet allowed), for up to 20 s.
async fn until_gone<F, Fut>(what: String, mut remove: F) -> Result<(), BoxError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = controller::swarm::Result<()>>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match remove().await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) if Instant::now() > deadline => return Err(format!("{what}: {e}").into()),
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

/// The floor of a forced rm: how long dockerd itself takes to remove the stack however fast
/// its client is. The client knows every object beforehand (listed before the clock starts,
/// events connected); at the clock's start it sends every removal at once — services,
/// containers (force), volumes, secrets, configs, each retried every 5 ms until dockerd takes
/// it — and the network when `at` says. The time is dockerd's own: from the first request to
/// the last object's disappearance as its events report it (`destroy` of the containers, the
/// network's node-local copy and the volume; `remove` of services, secrets and configs).
/// Then a listing of every kind must find nothing.
async fn floor_rm(
    swarm: &DockerSwarm,
    namespace: &str,
    at: NetworkAt,
) -> Result<FloorSample, BoxError> {
    use std::collections::{HashMap, HashSet};
    let f = ns_filter(namespace);
    let (services, containers, networks, volumes, secrets, configs) = futures::try_join!(
        swarm.list_services(&f),
        swarm.list_containers(&f),
        swarm.list_networks(&f),
        swarm.list_volumes(&f),
        swarm.list_secrets(&f),
        swarm.list_configs(&f),
    )?;
    // The event that ends each object, by ID (a volume's ID is its name).
    let mut awaited: HashMap<String, &str> = HashMap::new();
    awaited.extend(services.iter().map(|s| (s.meta.id.clone(), "remove")));
    awaited.extend(containers.iter().map(|c| (c.id.clone(), "destroy")));
    awaited.extend(networks.iter().map(|n| (n.id.clone(), "destroy")));
    awaited.extend(volumes.iter().map(|v| (v.name.clone(), "destroy")));
    awaited.extend(secrets.iter().map(|s| (s.meta.id.clone(), "remove")));
    awaited.extend(configs.iter().map(|c| (c.meta.id.clone(), "remove")));
    let container_ids: HashSet<String> = containers.iter().map(|c| c.id.clone()).collect();
    let network_ids: HashSet<String> = networks.iter().map(|n| n.id.clone()).collect();
    if container_ids.len() != 3 || network_ids.len() != 1 {
        return Err(format!(
            "{namespace}: expected 3 containers and 1 network, found {} and {}",
            container_ids.len(),
            network_ids.len()
        )
        .into());
    }
    // The events stream connects on its first poll: connected before the clock starts.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut events = swarm.events();
    let pump = tokio::spawn(async move {
        while let Some(Ok(event)) = events.next().await {
            if tx.send(event).is_err() {
                return;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    while rx.try_recv().is_ok() {}

    let (network_go, network_ready) = tokio::sync::watch::channel(at == NetworkAt::Eager);
    let t0 = SystemTime::now();
    let watch = async {
        // Dropped when the watch ends, so a network still waiting for its turn gives up.
        let network_go = network_go;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let mut seen: HashMap<String, SystemTime> = HashMap::new();
        let (mut disconnected, mut destroyed) = (0, 0);
        let mut last_destroy = t0;
        while seen.len() < awaited.len() {
            let Ok(Some(event)) = tokio::time::timeout_at(deadline, rx.recv()).await else {
                let missing: Vec<&String> = awaited
                    .keys()
                    .filter(|id| !seen.contains_key(*id))
                    .collect();
                return Err::<_, BoxError>(
                    format!("{namespace}: no removal event within 20 s for {missing:?}").into(),
                );
            };
            let time = event.time.unwrap_or_else(SystemTime::now);
            if network_ids.contains(&event.id) && event.action == "disconnect" {
                disconnected += 1;
                if at == NetworkAt::Disconnected && disconnected == container_ids.len() {
                    let _ = network_go.send(true);
                }
            }
            if container_ids.contains(&event.id) && event.action == "destroy" {
                destroyed += 1;
                last_destroy = last_destroy.max(time);
                if at == NetworkAt::Destroyed && destroyed == container_ids.len() {
                    let _ = network_go.send(true);
                }
            }
            if awaited.get(&event.id) == Some(&event.action.as_str()) {
                seen.insert(event.id.clone(), time);
            }
        }
        let network = networks
            .iter()
            .filter_map(|n| seen.get(&n.id))
            .max()
            .copied()
            .unwrap_or(t0);
        let last = seen.values().max().copied().unwrap_or(t0);
        let secs = |t: SystemTime| t.duration_since(t0).unwrap_or_default().as_secs_f64();
        Ok(FloorSample {
            secs: secs(last),
            containers_ms: secs(last_destroy) * 1e3,
            network_ms: secs(network) * 1e3,
        })
    };
    let remove = async {
        let mut jobs: Vec<futures::future::BoxFuture<'_, Result<(), BoxError>>> = Vec::new();
        for s in &services {
            jobs.push(Box::pin(until_gone(
                format!("service {}", s.meta.name),
                || swarm.remove_service(&s.meta.id),
            )));
        }
        for c in &containers {
            jobs.push(Box::pin(until_gone(
                format!("container {}", c.name),
                || swarm.remove_container(&c.id),
            )));
        }
        for v in &volumes {
            jobs.push(Box::pin(until_gone(format!("volume {}", v.name), || {
                swarm.remove_volume(&v.name)
            })));
        }
        for s in &secrets {
            jobs.push(Box::pin(until_gone(
                format!("secret {}", s.meta.name),
                || swarm.remove_secret(&s.meta.id),
            )));
        }
        for c in &configs {
            jobs.push(Box::pin(until_gone(
                format!("config {}", c.meta.name),
                || swarm.remove_config(&c.meta.id),
            )));
        }
        for n in &networks {
            let mut ready = network_ready.clone();
            jobs.push(Box::pin(async move {
                ready
                    .wait_for(|go| *go)
                    .await
                    .map_err(|_| "the event watch ended before the network's turn")?;
                until_gone(format!("network {}", n.name), || {
                    swarm.remove_network(&n.id)
                })
                .await
            }));
        }
        futures::future::try_join_all(jobs).await
    };
    let (watched, removed) = tokio::join!(watch, remove);
    pump.abort();
    removed?;
    let sample = watched?;
    let left = swarm.list_containers(&f).await?;
    if !left.is_empty() || !gone(swarm, namespace).await? {
        return Err(format!("{namespace}: the floor run left objects").into());
    }
    Ok(sample)
}

/// Median, min and max of durations in seconds.
fn stats(samples: &[f64]) -> (f64, f64, f64) {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let median = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    (median, s[0], s[n - 1])
}

struct Row {
    what: String,
    hearth: Vec<f64>,
    docker: Vec<f64>,
    target: &'static str,
}

impl Row {
    fn print(&self) {
        let (hm, hmin, hmax) = stats(&self.hearth);
        let (dm, dmin, dmax) = stats(&self.docker);
        println!(
            "| {} | {hm:.2} s ({hmin:.2}–{hmax:.2}) | {dm:.2} s ({dmin:.2}–{dmax:.2}) | {:.3} | {} |",
            self.what,
            hm / dm,
            self.target
        );
    }
}

struct Bench {
    settings: Settings,
    swarm: DockerSwarm,
    dir: PathBuf,
    seq: usize,
}

impl Bench {
    fn name(&mut self, side: &str, what: &str) -> String {
        self.seq += 1;
        format!("hearth-test-bench-{side}-{what}-{}", self.seq)
    }

    fn file(&self, services: usize) -> PathBuf {
        self.dir.join(format!("stack-{services}.yml"))
    }

    async fn deploy(
        &self,
        hearth: bool,
        services: usize,
        namespace: &str,
    ) -> Result<f64, BoxError> {
        let file = self.file(services);
        let file = file.to_string_lossy();
        let started = Instant::now();
        if hearth {
            run(
                &self.settings.hearth,
                // --detach: like docker 20.10's stack deploy, return once the objects exist;
                // both are then waited for by the same `wait_running`.
                &["stack", "deploy", "--detach", "-c", &file, namespace],
                &self.dir,
            )?;
        } else {
            run(
                &self.settings.docker,
                &[
                    "stack",
                    "deploy",
                    "--resolve-image",
                    "never",
                    "-c",
                    &file,
                    namespace,
                ],
                &self.dir,
            )?;
        }
        wait_running(&self.swarm, namespace, services).await?;
        Ok(started.elapsed().as_secs_f64())
    }

    /// Times a removal of a freshly deployed, running stack: hearth's (forced or graceful),
    /// or docker's (the forced script when `force`, `docker stack rm` and volume retries
    /// otherwise).
    async fn rm(&mut self, hearth: bool, force: bool, services: usize) -> Result<f64, BoxError> {
        let side = if hearth { "hth" } else { "ref" };
        let namespace = self.name(side, if force { "frm" } else { "grm" });
        // Deployed by the same tool that removes it.
        self.deploy(hearth, services, &namespace).await?;
        let started = Instant::now();
        if hearth {
            let mut args = vec!["stack", "rm"];
            if force {
                args.push("--force");
            }
            args.push(&namespace);
            run(&self.settings.hearth, &args, &self.dir)?;
        } else if force {
            docker_forced_rm(&self.swarm, &self.settings.docker, &namespace, &self.dir).await?;
        } else {
            docker_rm(&self.swarm, &self.settings.docker, &namespace, &self.dir).await?;
        }
        let elapsed = started.elapsed().as_secs_f64();
        self.clean(&namespace).await?;
        Ok(elapsed)
    }

    /// The floor of a forced rm ([`floor_rm`]) on a freshly deployed, running stack (deployed
    /// by hearth, as for hearth's samples).
    async fn floor(&mut self, at: NetworkAt) -> Result<FloorSample, BoxError> {
        let namespace = self.name("flr", "frm");
        self.deploy(true, 3, &namespace).await?;
        let sample = floor_rm(&self.swarm, &namespace, at).await?;
        self.clean(&namespace).await?;
        Ok(sample)
    }

    /// Removes whatever is left of a stack (not timed) and checks nothing is.
    async fn clean(&self, namespace: &str) -> Result<(), BoxError> {
        if !gone(&self.swarm, namespace).await? {
            stack::teardown(&self.swarm, namespace, &TeardownOptions::forced()).await?;
        }
        Ok(())
    }
}

/// Deploys the 3-service stack with hearth and tears it down forced, in-process, printing
/// every call with its start and duration, `--trace-rm` times; then how long the CLI takes to
/// start and connect (`hearth stack ls`).
async fn trace_rm(bench: &mut Bench) -> Result<(), BoxError> {
    let timed = Counting::timed(bench.swarm.clone());
    for _ in 0..bench.settings.trace_rm {
        let namespace = bench.name("hth", "trace");
        bench.deploy(true, 3, &namespace).await?;
        let mut events = bench.swarm.events();
        timed.take_log();
        let started = Instant::now();
        let report = stack::teardown(&timed, &namespace, &TeardownOptions::forced()).await?;
        let elapsed = started.elapsed();
        let origin = SystemTime::now() - elapsed;
        let mut lines: Vec<(Duration, String)> = timed
            .take_log()
            .into_iter()
            .map(|c| {
                let line = format!(
                    "+{:>6.1} ms {}{}",
                    c.took.as_secs_f64() * 1e3,
                    c.call,
                    if c.failed { " (failed)" } else { "" }
                );
                (c.started, line)
            })
            .collect();
        // The events the daemon sent meanwhile (the stream replays from its opening).
        while let Ok(Some(Ok(event))) =
            tokio::time::timeout(Duration::from_millis(100), events.next()).await
        {
            let Some(at) = event.time.and_then(|t| t.duration_since(origin).ok()) else {
                continue;
            };
            if at > elapsed {
                break;
            }
            let name = event.name.unwrap_or_default();
            lines.push((
                at,
                format!("  event {} {} {name}", event.kind, event.action),
            ));
        }
        lines.sort_by_key(|(at, _)| *at);
        for (at, line) in lines {
            println!("{:>7.1} ms {line}", at.as_secs_f64() * 1e3);
        }
        println!(
            "teardown {namespace}: {:.1} ms (containers wait {:.1} ms)\n",
            elapsed.as_secs_f64() * 1e3,
            report.containers_wait.as_secs_f64() * 1e3
        );
        bench.clean(&namespace).await?;
    }
    let started = Instant::now();
    run(&bench.settings.hearth, &["stack", "ls"], &bench.dir)?;
    println!(
        "hearth stack ls (start, connect, one list): {:.1} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    std::fs::remove_dir_all(&bench.dir)?;
    Ok(())
}

/// `--only floor`: the floor with the network removed on the last `disconnect` against on the
/// last `destroy`, alternating (ABBA), `--runs` samples each.
async fn floor_ab(bench: &mut Bench, load_before: &str) -> Result<(), BoxError> {
    let variants = [NetworkAt::Disconnected, NetworkAt::Destroyed];
    let mut samples: [Vec<FloorSample>; 2] = [Vec::new(), Vec::new()];
    for i in 0..bench.settings.runs {
        let order = if i % 2 == 0 { [0, 1] } else { [1, 0] };
        for k in order {
            let sample = bench.floor(variants[k]).await?;
            eprintln!(
                "floor ({}): {:.3} s (containers {:.0} ms, network {:.0} ms)",
                variants[k].describe(),
                sample.secs,
                sample.containers_ms,
                sample.network_ms
            );
            samples[k].push(sample);
        }
    }
    let load_after = std::fs::read_to_string("/proc/loadavg")?;
    println!(
        "floor A/B, {} samples each; /proc/loadavg before: {}; after: {}",
        bench.settings.runs,
        load_before.trim(),
        load_after.trim()
    );
    println!("| floor | median (min–max) | last container destroyed | network's local copy destroyed | copy after the last container |");
    println!("|---|---|---|---|---|");
    for (at, samples) in variants.iter().zip(&samples) {
        let t: Vec<f64> = samples.iter().map(|s| s.secs).collect();
        let c: Vec<f64> = samples.iter().map(|s| s.containers_ms).collect();
        let n: Vec<f64> = samples.iter().map(|s| s.network_ms).collect();
        let gap: Vec<f64> = samples
            .iter()
            .map(|s| s.network_ms - s.containers_ms)
            .collect();
        let (m, min, max) = stats(&t);
        println!(
            "| {} | {m:.3} s ({min:.3}–{max:.3}) | {:.0} ms | {:.0} ms | {:.0} ms |",
            at.describe(),
            stats(&c).0,
            stats(&n).0,
            stats(&gap).0
        );
    }
    std::fs::remove_dir_all(&bench.dir)?;
    Ok(())
}

async fn main_async() -> Result<(), BoxError> {
    let settings = settings()?;
    let swarm = DockerSwarm::connect(DockerOptions::default()).await?;
    let dir = std::env::temp_dir().join(format!("hearth-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("token"), "bench-secret\n")?;
    std::fs::write(dir.join("conf"), "bench-config\n")?;
    for n in [3, 10] {
        std::fs::write(dir.join(format!("stack-{n}.yml")), compose_file(n, "10s"))?;
    }
    let runs = settings.runs;
    let load_before = std::fs::read_to_string("/proc/loadavg")?;
    let started = Instant::now();
    let mut bench = Bench {
        settings,
        swarm,
        dir,
        seq: 0,
    };
    if bench.settings.trace_rm > 0 {
        return trace_rm(&mut bench).await;
    }
    if bench.settings.only_floor {
        return floor_ab(&mut bench, &load_before).await;
    }
    let mut rows = Vec::new();

    let sizes: &[usize] = if bench.settings.only_forced {
        &[]
    } else {
        &[3, 10]
    };
    for &services in sizes {
        let mut row = Row {
            what: format!("deploy, {services} services, to all tasks running"),
            hearth: Vec::new(),
            docker: Vec::new(),
            target: "≤ 1.0",
        };
        for i in 0..runs {
            for hearth in [i % 2 == 0, i % 2 != 0] {
                let namespace = bench.name(if hearth { "hth" } else { "ref" }, "dep");
                let t = bench.deploy(hearth, services, &namespace).await?;
                eprintln!("deploy {services} {namespace}: {t:.2} s");
                if hearth {
                    &mut row.hearth
                } else {
                    &mut row.docker
                }
                .push(t);
                bench.clean(&namespace).await?;
            }
        }
        rows.push(row);
    }
    // (hearth forced, docker forced, what, target): the fair peer of a forced rm is the
    // forced docker script; "forced vs graceful docker" is kept as it was measured before.
    let rms = [
        (
            true,
            true,
            "forced rm vs the forced docker-CLI script (fair peer), 3 services, until nothing is left",
            "≤ 0.5",
        ),
        (
            true,
            false,
            "forced rm vs graceful docker stack rm (forced vs graceful docker), 3 services, until volumes and networks are gone",
            "≤ 0.1",
        ),
        (
            false,
            false,
            "graceful rm, 3 services, until volumes and networks are gone",
            "≤ 1.0",
        ),
    ];
    // The floor (fair-peer row only): dockerd alone, by when the network goes.
    const FLOORS: [NetworkAt; 3] = [
        NetworkAt::Disconnected,
        NetworkAt::Destroyed,
        NetworkAt::Eager,
    ];
    let mut floors: Vec<(NetworkAt, Vec<FloorSample>)> =
        FLOORS.iter().map(|at| (*at, Vec::new())).collect();
    let mut floor_peer: Vec<f64> = Vec::new();
    for (force, docker_force, what, target) in rms {
        if bench.settings.only_forced && !force {
            continue;
        }
        let mut row = Row {
            what: what.to_string(),
            hearth: Vec::new(),
            docker: Vec::new(),
            target,
        };
        for i in 0..runs {
            for hearth in [i % 2 == 0, i % 2 != 0] {
                let t = bench
                    .rm(hearth, if hearth { force } else { docker_force }, 3)
                    .await?;
                eprintln!("rm force={force}/{docker_force} hearth={hearth}: {t:.2} s");
                if hearth {
                    &mut row.hearth
                } else {
                    &mut row.docker
                }
                .push(t);
            }
            if force && docker_force {
                // The floor of the same stack, measured between the samples of the pair.
                for k in 0..floors.len() {
                    let (at, samples) = &mut floors[(i + k) % FLOORS.len()];
                    let sample = bench.floor(*at).await?;
                    eprintln!(
                        "floor ({}): {:.3} s (last container destroyed at {:.0} ms, network's \
                         local copy at {:.0} ms)",
                        at.describe(),
                        sample.secs,
                        sample.containers_ms,
                        sample.network_ms
                    );
                    samples.push(sample);
                }
                floor_peer.clone_from(&row.docker);
            }
        }
        rows.push(row);
    }

    // No-op re-apply through the library call `hearth stack deploy` makes, counted.
    let counting = Counting::new(bench.swarm.clone());
    let mut noop = Vec::new();
    for &services in sizes {
        let namespace = bench.name("hth", "noop");
        let env = std::collections::BTreeMap::new();
        let translation = compose::translate_paths(&[bench.file(services)], &namespace, &env)?;
        let owner = Owner::operator(&namespace);
        let options = ApplyOptions::default();
        stack::apply(&counting, &translation.stack, &owner, &options).await?;
        let (first_calls, first_writes) = counting.take();
        let mut calls = Vec::new();
        let mut times = Vec::new();
        let mut writes = 0;
        for _ in 0..runs {
            let started = Instant::now();
            let report = stack::apply(&counting, &translation.stack, &owner, &options).await?;
            times.push(started.elapsed().as_secs_f64());
            let (c, w) = counting.take();
            if !report.is_noop() {
                return Err(format!("re-apply of {namespace} was not a no-op").into());
            }
            calls.push(c);
            writes += w;
        }
        let (tm, tmin, tmax) = stats(&times);
        noop.push(format!(
            "| no-op re-apply, {services} services | first apply: {first_calls} calls, \
             {first_writes} writes | re-apply (×{runs}): {} calls each, {writes} writes in total | \
             {:.1} ms ({:.1}–{:.1}) | 0 writes |",
            calls
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("/"),
            tm * 1e3,
            tmin * 1e3,
            tmax * 1e3
        ));
        bench.clean(&namespace).await?;
    }

    let load_after = std::fs::read_to_string("/proc/loadavg")?;
    println!(
        "runs: {runs}; took {:.0} s; /proc/loadavg before: {}; after: {}",
        started.elapsed().as_secs_f64(),
        load_before.trim(),
        load_after.trim()
    );
    println!();
    println!(
        "| measurement | hearth median (min–max) | docker median (min–max) | ratio | target |"
    );
    println!("|---|---|---|---|---|");
    for row in &rows {
        row.print();
    }
    if !floor_peer.is_empty() {
        let (pm, pmin, pmax) = stats(&floor_peer);
        println!();
        println!(
            "| floor: dockerd alone, every removal sent at once (in-process) | floor median \
             (min–max) | fair peer median (min–max) | floor / peer | last container destroyed \
             (median) | network's local copy destroyed (median) |"
        );
        println!("|---|---|---|---|---|---|");
        for (at, samples) in &floors {
            let t: Vec<f64> = samples.iter().map(|s| s.secs).collect();
            let destroyed: Vec<f64> = samples.iter().map(|s| s.containers_ms).collect();
            let network: Vec<f64> = samples.iter().map(|s| s.network_ms).collect();
            let (fm, fmin, fmax) = stats(&t);
            println!(
                "| {} | {fm:.3} s ({fmin:.3}–{fmax:.3}) | {pm:.2} s ({pmin:.2}–{pmax:.2}) | \
                 {:.3} | {:.0} ms | {:.0} ms |",
                at.describe(),
                fm / pm,
                stats(&destroyed).0,
                stats(&network).0
            );
        }
    }
    println!();
    println!("| measurement | first apply | re-apply | re-apply time | target |");
    println!("|---|---|---|---|---|");
    for line in &noop {
        println!("{line}");
    }
    std::fs::remove_dir_all(&bench.dir)?;
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::process::ExitCode {
    match main_async().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_stack: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
