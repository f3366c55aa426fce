//! The sweeper never removes an object that is not hearth's (issue 7, item 6), on the real swarm
//! with the real `hearth serve` binary.
//!
//! The daemon (child process, fixture catalogue, one slot pool, its sweeper every second, scoped
//! to its own instance label as in production) gets a run of its own whose owner is then
//! SIGKILLed (the CI-kill scenario of `hearth_tests::ci_kill`, `--deploy`: the run's full stack
//! of every kind). Around it the test creates, with the docker CLI, one foreign object of every
//! kind — a service (with its task container), a plain `docker run` container, an overlay and a
//! bridge network, a volume, a secret, a config — in each ownership class that makes sense on
//! the real swarm (the classes of `controller/src/runs/sweep_safety_tests.rs`):
//!
//! - `bare`: no label at all (found by name only);
//! - `nsonly`: in a run-like stack namespace no run has (`hr-fullstack-<hash>`), no hearth label;
//! - `parent`: hearth's parent-run label alone, naming the dead run;
//! - `other`: every label hearth put on the dead run's service, but another instance's and in
//!   another run-like namespace;
//! - `unmgd`: the dead run's labels with this instance's ID, but `hearth.managed-by=Hearth`
//!   (the value is case-sensitive) and no namespace — inside the sweeper's scope;
//! - `ghost`: this instance's ID and a run-like namespace of a run recorded nowhere, without
//!   `hearth.managed-by` — inside the scope, and older than the creation guard at the end.
//!
//! After the kill it waits (deadline) until every object of the dead run is gone and the run is
//! closed as Orphaned, then for the objects that could pass for an unrecorded run's to be older
//! than the sweeper's 30 s creation guard, then asks for an orphan sweep and a full nightly
//! sweep through the API (`hearth sweep`, `hearth sweep --now`). Every foreign object must
//! still be there, unchanged: its ID, labels and version (services, secrets, configs), its
//! creation time (volumes), its start time (containers) and, for services, the same task
//! container.
//!
//! Objects are named `hearth-test-fx…`; all but the `bare` ones carry `hearth.test=1`. A drop
//! guard removes every foreign object by name, also when the test fails. Every docker command
//! runs under `timeout`, and every wait has a deadline and says what it waited for.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use controller::cli::ci::Client;
use crd::names::labels as keys;
use hearth_tests::ci_kill::{self, NAMESPACE_LABEL};
use hearth_tests::process::{free_addr, ServeProcess};
use hearth_tests::support::{hearth_bin, real_swarm, unique_name, RUN_LABEL, TEST_LABEL};

/// hearth's instance label (`controller::warmapp::INSTANCE_LABEL`).
const INSTANCE: &str = controller::warmapp::INSTANCE_LABEL;
/// The label swarm puts on a task's container naming its service.
const SERVICE_ID: &str = "com.docker.swarm.service.id";
/// The sweeper's creation guard (`sweeper::decide::Config::default`), plus a margin.
const CREATION_GUARD: Duration = Duration::from_secs(31);

/// Runs `docker <args>` (under `timeout 30`, stdin from `input` or nothing); its stdout.
fn docker(args: &[&str], input: Option<&Path>) -> Result<String, String> {
    let stdin = match input {
        Some(p) => Stdio::from(std::fs::File::open(p).map_err(|e| e.to_string())?),
        None => Stdio::null(),
    };
    let out = Command::new("timeout")
        .args(["30", "docker"])
        .args(args)
        .stdin(stdin)
        .output()
        .map_err(|e| format!("docker {args:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "docker {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The kinds of foreign object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Service,
    Container,
    Overlay,
    Bridge,
    Volume,
    Secret,
    Config,
}

impl Kind {
    const ALL: [Kind; 7] = [
        Kind::Service,
        Kind::Container,
        Kind::Overlay,
        Kind::Bridge,
        Kind::Volume,
        Kind::Secret,
        Kind::Config,
    ];

    fn short(self) -> &'static str {
        match self {
            Kind::Service => "svc",
            Kind::Container => "ctr",
            Kind::Overlay => "ovl",
            Kind::Bridge => "brg",
            Kind::Volume => "vol",
            Kind::Secret => "sec",
            Kind::Config => "cfg",
        }
    }

    /// `docker inspect --type`.
    fn docker_type(self) -> &'static str {
        match self {
            Kind::Service => "service",
            Kind::Container => "container",
            Kind::Overlay | Kind::Bridge => "network",
            Kind::Volume => "volume",
            Kind::Secret => "secret",
            Kind::Config => "config",
        }
    }
}

/// The ownership classes (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    Bare,
    NamespaceOnly,
    ParentRunOnly,
    OtherInstance,
    Unmanaged,
    Ghost,
}

impl Class {
    fn short(self) -> &'static str {
        match self {
            Class::Bare => "bare",
            Class::NamespaceOnly => "nsonly",
            Class::ParentRunOnly => "parent",
            Class::OtherInstance => "other",
            Class::Unmanaged => "unmgd",
            Class::Ghost => "ghost",
        }
    }
}

/// One foreign object.
#[derive(Debug, Clone)]
struct Foreign {
    kind: Kind,
    class: Class,
    name: String,
    labels: BTreeMap<String, String>,
}

/// Removes every foreign object by name when dropped (errors ignored: most are already gone or
/// were never created when a test fails early).
struct Cleanup {
    names: Vec<(Kind, String)>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for kind in Kind::ALL {
            let names: Vec<&str> = self
                .names
                .iter()
                .filter(|(k, _)| *k == kind)
                .map(|(_, n)| n.as_str())
                .collect();
            if names.is_empty() {
                continue;
            }
            let mut args: Vec<&str> = match kind {
                Kind::Service => vec!["service", "rm"],
                Kind::Container => vec!["rm", "-f", "-v"],
                Kind::Overlay | Kind::Bridge => vec!["network", "rm"],
                Kind::Volume => vec!["volume", "rm", "-f"],
                Kind::Secret => vec!["secret", "rm"],
                Kind::Config => vec!["config", "rm"],
            };
            args.extend(names);
            let _ = docker(&args, None);
        }
    }
}

/// Kills the CI job (the run's owner) when dropped, so a failed test leaves no owner alive
/// for ten minutes; its stack carries `hearth.test=1` for the test bed.
struct JobGuard(ci_kill::Job);

impl Drop for JobGuard {
    fn drop(&mut self) {
        let _ = self.0.child.kill();
        let _ = self.0.child.wait();
    }
}

/// A random lowercase hex string of `n` characters.
fn hex(n: usize) -> String {
    (0..n)
        .map(|_| char::from_digit(rand::random::<u32>() % 16, 16).unwrap())
        .collect()
}

/// Creates `f` with the docker CLI.
fn create(f: &Foreign, data: &Path) -> Result<(), String> {
    let label_args: Vec<String> = f
        .labels
        .iter()
        .flat_map(|(k, v)| ["--label".to_string(), format!("{k}={v}")])
        .collect();
    let labels: Vec<&str> = label_args.iter().map(String::as_str).collect();
    let image = hearth_tests::support::fixtures::WEBAPP_1_0_0;
    let mut args: Vec<&str> = Vec::new();
    match f.kind {
        Kind::Service => {
            args.extend([
                "service",
                "create",
                "--detach",
                "--quiet",
                "--no-resolve-image",
                "--endpoint-mode",
                "dnsrr",
                "--replicas",
                "1",
                "--name",
                &f.name,
            ]);
            args.extend(&labels);
            // The task container carries the test label too (the test bed's cleanup), except
            // in the class without any label.
            if f.class != Class::Bare {
                args.extend(["--container-label", "hearth.test=1"]);
            }
            args.extend([image, "/bin/sleep", "100000"]);
        }
        Kind::Container => {
            args.extend(["run", "--detach", "--name", &f.name]);
            args.extend(&labels);
            args.extend([image, "/bin/sleep", "100000"]);
        }
        Kind::Overlay | Kind::Bridge => {
            let driver = if f.kind == Kind::Overlay {
                "overlay"
            } else {
                "bridge"
            };
            args.extend(["network", "create", "--driver", driver]);
            args.extend(&labels);
            args.push(&f.name);
        }
        Kind::Volume => {
            args.extend(["volume", "create"]);
            args.extend(&labels);
            args.push(&f.name);
        }
        Kind::Secret | Kind::Config => {
            args.extend([f.kind.docker_type(), "create"]);
            args.extend(&labels);
            args.extend([f.name.as_str(), "-"]);
        }
    }
    let input = matches!(f.kind, Kind::Secret | Kind::Config).then_some(data);
    docker(&args, input).map(drop)
}

/// Creates every object of `objects`, one thread per class.
fn create_all(objects: &[Foreign], data: &Path) {
    let mut by_class: BTreeMap<Class, Vec<&Foreign>> = BTreeMap::new();
    for f in objects {
        by_class.entry(f.class).or_default().push(f);
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = by_class
            .values()
            .map(|group| {
                s.spawn(move || {
                    group
                        .iter()
                        .map(|f| create(f, data).map_err(|e| format!("creating {}: {e}", f.name)))
                        .collect::<Result<Vec<()>, String>>()
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap().unwrap();
        }
    });
}

/// What must not change about an object: identity, labels, version / creation / start time,
/// and a service's task containers.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Print {
    /// Its labels (none: empty).
    labels: BTreeMap<String, String>,
    /// Identity and version fields, `path=value` each.
    fields: String,
    /// A service's task containers: (ID, state).
    containers: Vec<(String, String)>,
}

impl std::fmt::Display for Print {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} labels={:?} containers={:?}",
            self.fields, self.labels, self.containers
        )
    }
}

/// Inspects `f` with the docker CLI.
fn fingerprint(f: &Foreign) -> Result<Print, String> {
    let text = docker(&["inspect", "--type", f.kind.docker_type(), &f.name], None)?;
    let all: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let v = &all[0];
    let at = |path: &str| path.split('.').fold(v, |at, key| &at[key]);
    let pick = |paths: &[&str]| -> String {
        paths
            .iter()
            .map(|p| format!("{p}={}", at(p)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let (fields, labels) = match f.kind {
        Kind::Service | Kind::Secret | Kind::Config => (
            pick(&["ID", "Spec.Name", "Version.Index", "CreatedAt", "UpdatedAt"]),
            "Spec.Labels",
        ),
        Kind::Container => (
            pick(&[
                "Id",
                "Name",
                "State.Running",
                "State.StartedAt",
                "RestartCount",
            ]),
            "Config.Labels",
        ),
        Kind::Overlay | Kind::Bridge => (pick(&["Id", "Name", "Driver", "Created"]), "Labels"),
        Kind::Volume => (pick(&["Name", "CreatedAt"]), "Labels"),
    };
    let labels: BTreeMap<String, String> = match at(labels) {
        serde_json::Value::Null => BTreeMap::new(),
        l => serde_json::from_value(l.clone()).map_err(|e| format!("labels {l}: {e}"))?,
    };
    let mut containers = Vec::new();
    if f.kind == Kind::Service {
        let id = v["ID"].as_str().unwrap_or_default();
        let tasks = docker(
            &[
                "ps",
                "--all",
                "--no-trunc",
                "--format",
                "{{.ID}} {{.State}}",
                "--filter",
                &format!("label={SERVICE_ID}={id}"),
            ],
            None,
        )?;
        containers = tasks
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(id, state)| (id.to_string(), state.to_string()))
            .collect();
        containers.sort_unstable();
    }
    Ok(Print {
        labels,
        fields,
        containers,
    })
}

/// Waits (up to `within`) until every foreign service has exactly one task container and it
/// runs, so the snapshot taken then is stable; the prints of all objects.
async fn settled(objects: &[Foreign], within: Duration) -> BTreeMap<String, Print> {
    let since = Instant::now();
    loop {
        let prints: BTreeMap<String, Print> = objects
            .iter()
            .map(|f| (f.name.clone(), fingerprint(f).unwrap()))
            .collect();
        let pending: Vec<&String> = objects
            .iter()
            .filter(|f| f.kind == Kind::Service)
            .filter(|f| {
                let c = &prints[&f.name].containers;
                !(c.len() == 1 && c[0].1 == "running")
            })
            .map(|f| &f.name)
            .collect();
        if pending.is_empty() {
            return prints;
        }
        assert!(
            since.elapsed() < within,
            "foreign services without exactly one running container after {within:?}: {pending:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The labels of a service of `stack` (hearth-deployed: every label hearth puts on a run's
/// object).
fn labels_of_a_service_of(stack: &str) -> BTreeMap<String, String> {
    let ids = docker(
        &[
            "service",
            "ls",
            "--quiet",
            "--filter",
            &format!("label={NAMESPACE_LABEL}={stack}"),
        ],
        None,
    )
    .unwrap();
    let id = ids.lines().next().expect("the run's stack has a service");
    let text = docker(&["inspect", "--type", "service", id], None).unwrap();
    let all: serde_json::Value = serde_json::from_str(&text).unwrap();
    serde_json::from_value(all[0]["Spec"]["Labels"].clone()).unwrap()
}

/// This daemon's instance ID, from its start-up log line (`… hearth.instance=<id>; …`).
async fn instance_of(daemon: &ServeProcess, within: Duration) -> String {
    let marker = format!("labelled {INSTANCE}=");
    let since = Instant::now();
    loop {
        let log = std::fs::read_to_string(daemon.log_path()).unwrap_or_default();
        if let Some(rest) = log.split(&marker).nth(1) {
            let id: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            if !id.is_empty() {
                return id;
            }
        }
        assert!(
            since.elapsed() < within,
            "no instance ID in the daemon's log after {within:?}:\n{}",
            daemon.log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `hearth sweep <extra>` against the daemon; its JSON answer.
fn hearth_sweep(server: &str, token_file: &Path, extra: &[&str]) -> serde_json::Value {
    let out = Command::new("timeout")
        .arg("90")
        .arg(hearth_bin())
        .args(["sweep", "--server", server])
        .args(extra)
        .env("HEARTH_TOKEN_FILE", token_file)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "hearth sweep {extra:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The phase of run `id`, as the API reports it.
async fn phase(client: &Client, id: &str) -> crd::RunPhase {
    let run: crd::Run = tokio::time::timeout(
        Duration::from_secs(10),
        client.get(&format!("/api/v1/runs/{id}")),
    )
    .await
    .expect("the API answers within 10 s")
    .unwrap();
    run.status.phase
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweeper_of_the_real_daemon_removes_a_dead_runs_stack_and_no_foreign_object_of_any_kind_or_class(
) {
    let test_run = unique_name("fx");
    let Some(swarm) = real_swarm(&test_run).await else {
        return;
    };
    let started = Instant::now();
    let tag = hex(6);
    let name = |class: Class, kind: Kind| {
        format!("hearth-test-fx{tag}-{}-{}", class.short(), kind.short())
    };
    let mut cleanup = Cleanup { names: Vec::new() };
    for class in [
        Class::Bare,
        Class::NamespaceOnly,
        Class::ParentRunOnly,
        Class::OtherInstance,
        Class::Unmanaged,
        Class::Ghost,
    ] {
        for kind in Kind::ALL {
            cleanup.names.push((kind, name(class, kind)));
        }
    }

    // The daemon: fixture catalogue, one slot pool, test labels on what it deploys.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("state.yml"),
        "apiVersion: hearth/v1\nkind: SlotPool\nmetadata:\n  name: hearth-test-fx\nspec:\n  \
         slots: 1\n  portBase: 31500\n  portsPerSlot: 10\n  waitTimeout: 1m\n",
    )
    .unwrap();
    let data = dir.path().join("data.txt");
    std::fs::write(&data, "not-a-secret\n").unwrap();
    let addr = free_addr();
    let server = addr.to_string();
    let mut daemon = ServeProcess::new(
        dir.path(),
        addr,
        vec![
            "--state".into(),
            dir.path().join("state.yml").into(),
            "--catalogue".into(),
            ci_kill::catalogue_dir().into(),
            "--base-domain".into(),
            "hearth.test".into(),
            "--label".into(),
            format!("{}={}", TEST_LABEL.0, TEST_LABEL.1).into(),
            "--label".into(),
            format!("{RUN_LABEL}={test_run}").into(),
            // `sweep --now` prunes dangling images: only this test's (there are none).
            "--nightly-prune-label".into(),
            format!("{RUN_LABEL}={test_run}").into(),
        ],
    );
    daemon.spawn();
    daemon.ready(Duration::from_secs(30)).await;
    let instance = instance_of(&daemon, Duration::from_secs(10)).await;
    let token_file = dir.path().join("data").join("token");
    let test_labels = BTreeMap::from([
        (TEST_LABEL.0.to_string(), TEST_LABEL.1.to_string()),
        (RUN_LABEL.to_string(), test_run.clone()),
    ]);
    let ghost_run = format!("fullstack-{}", hex(10));

    // First the classes that could pass for an unrecorded run's objects, so that they are
    // older than the creation guard by the last sweep.
    let mut early = Vec::new();
    for kind in Kind::ALL {
        early.push(Foreign {
            kind,
            class: Class::Bare,
            name: name(Class::Bare, kind),
            labels: BTreeMap::new(),
        });
        let mut l = test_labels.clone();
        l.insert(NAMESPACE_LABEL.into(), format!("hr-fullstack-{}", hex(10)));
        early.push(Foreign {
            kind,
            class: Class::NamespaceOnly,
            name: name(Class::NamespaceOnly, kind),
            labels: l,
        });
        let mut l = test_labels.clone();
        l.insert(INSTANCE.into(), instance.clone());
        l.insert(keys::PARENT_RUN.into(), ghost_run.clone());
        l.insert(NAMESPACE_LABEL.into(), format!("hr-{ghost_run}"));
        early.push(Foreign {
            kind,
            class: Class::Ghost,
            name: name(Class::Ghost, kind),
            labels: l,
        });
    }
    create_all(&early, &data);
    let early_created = Instant::now();

    // A run of the daemon's own, deployed by it, owned by a CI script.
    let scenario = ci_kill::Scenario {
        hearth: hearth_bin(),
        server: server.clone(),
        pool: "hearth-test-fx".into(),
        deploy: ci_kill::Deploy::Hearth,
        work: dir.path().join("job"),
        env: vec![("HEARTH_TOKEN_FILE".into(), token_file.display().to_string())],
    };
    let job = ci_kill::start_job(&swarm, &scenario, Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "the run's stack did not come up: {e}\n{}",
                daemon.log_tail(40)
            )
        });
    let mut job = JobGuard(job);
    let client = daemon.client();
    assert_eq!(phase(&client, &job.0.run).await, crd::RunPhase::Running);

    // Then the classes that name the run (recorded: no creation guard applies to them).
    let run_labels = labels_of_a_service_of(&job.0.stack);
    assert_eq!(
        run_labels.get(keys::MANAGED_BY).map(String::as_str),
        Some(keys::MANAGED_BY_VALUE),
        "the run's service carries hearth's labels: {run_labels:?}"
    );
    assert_eq!(run_labels.get(INSTANCE), Some(&instance), "{run_labels:?}");
    assert_eq!(
        run_labels.get(keys::PARENT_RUN),
        Some(&job.0.run),
        "{run_labels:?}"
    );
    let mut late = Vec::new();
    for kind in Kind::ALL {
        let mut l = test_labels.clone();
        l.insert(keys::PARENT_RUN.into(), job.0.run.clone());
        late.push(Foreign {
            kind,
            class: Class::ParentRunOnly,
            name: name(Class::ParentRunOnly, kind),
            labels: l,
        });
        let mut l = run_labels.clone();
        l.insert(INSTANCE.into(), hex(32));
        l.insert(NAMESPACE_LABEL.into(), format!("hr-fullstack-{}", hex(10)));
        late.push(Foreign {
            kind,
            class: Class::OtherInstance,
            name: name(Class::OtherInstance, kind),
            labels: l,
        });
        let mut l = run_labels.clone();
        l.insert(keys::MANAGED_BY.into(), "Hearth".into());
        l.remove(NAMESPACE_LABEL);
        late.push(Foreign {
            kind,
            class: Class::Unmanaged,
            name: name(Class::Unmanaged, kind),
            labels: l,
        });
    }
    create_all(&late, &data);
    let objects: Vec<Foreign> = early.into_iter().chain(late).collect();
    let before = settled(&objects, Duration::from_secs(30)).await;
    for f in &objects {
        // The labels are exactly what the class says (the no-label class has none at all).
        // A container also shows its image's labels (`hearth.fixture.*`, none of hearth's).
        let own: BTreeMap<String, String> = before[&f.name]
            .labels
            .iter()
            .filter(|(k, _)| !(f.kind == Kind::Container && k.starts_with("hearth.fixture.")))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert_eq!(
            own, f.labels,
            "{} does not carry the labels of its class {:?}",
            f.name, f.class
        );
    }
    println!(
        "{} foreign objects in place after {:?}",
        objects.len(),
        started.elapsed()
    );

    // The owner dies: the sweeper removes the run's stack and closes the run.
    let killed = ci_kill::kill(&mut job.0).unwrap();
    // The poller lists by namespace and by parent-run label, which some foreign objects carry:
    // those are left out here (and checked below).
    let prefix = format!("hearth-test-fx{tag}-");
    let took = loop {
        let mut left = ci_kill::inventory(&swarm, &job.0.stack, &job.0.run)
            .await
            .unwrap();
        for names in [
            &mut left.services,
            &mut left.containers,
            &mut left.networks,
            &mut left.volumes,
            &mut left.secrets,
            &mut left.configs,
        ] {
            names.retain(|n| !n.starts_with(&prefix));
        }
        if left.is_empty() {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "the dead run's stack stayed 60 s after the kill: {left:?}\n{}",
            daemon.log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("the dead run's stack was gone {took:?} after the kill");
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let p = phase(&client, &job.0.run).await;
        if p == crd::RunPhase::Orphaned {
            break;
        }
        assert!(
            Instant::now() < until,
            "the dead run is not closed as Orphaned after 20 s: {p:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Past the creation guard, two more passes by hand (the periodic ones run every second).
    let guard_over = early_created + CREATION_GUARD;
    tokio::time::sleep(guard_over.saturating_duration_since(Instant::now())).await;
    let report = hearth_sweep(&server, &token_file, &[]);
    let removed = report["removed"].as_array().map_or(0, Vec::len);
    let selected = report["decision"]["remove"].as_array().map_or(0, Vec::len);
    assert_eq!(
        (removed, selected),
        (0, 0),
        "the last orphan sweep removed something: {report:#}"
    );
    let nightly = hearth_sweep(&server, &token_file, &["--now"]);
    println!("nightly sweep: {nightly}");

    // Every foreign object is still there, unchanged.
    let mut changed = Vec::new();
    for f in &objects {
        match fingerprint(f) {
            Ok(now) if now == before[&f.name] => {}
            Ok(now) => changed.push(format!(
                "{} ({:?}) changed:\n  before {}\n  after  {now}",
                f.name, f.class, before[&f.name]
            )),
            Err(e) => changed.push(format!("{} ({:?}) is gone: {e}", f.name, f.class)),
        }
    }
    println!(
        "{} foreign objects checked after {:?}",
        objects.len(),
        started.elapsed()
    );
    assert!(
        changed.is_empty(),
        "the sweeper touched foreign objects:\n{}\n{}",
        changed.join("\n"),
        daemon.log_tail(40)
    );
    drop(cleanup);
    drop(daemon);
}
