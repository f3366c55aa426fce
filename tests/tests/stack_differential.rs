//! Differential test: `hearth stack deploy` against `docker stack deploy` on the real swarm.
//!
//! For every corpus group (`../shared/compose-corpus/`, grouped as in `compose/CORPUS.md`:
//! `01+02`, `04+05`, every other file alone) the test
//!
//! 1. copies the corpus into a temporary directory and writes the side files the translation
//!    reads (placeholder content; `rabbitmq.env` as published) — `PWD` is that directory;
//! 2. creates the external networks, secrets, configs and volumes the group names (with their
//!    real names, as `SOURCES.md` lists them, labelled `hearth.test=1`) and, for every image
//!    that is not on the machine, tags the fixture image under the published name so tasks get
//!    containers (docker creates a stack's volumes only then) — the same images on both sides;
//! 3. deploys with `/usr/bin/docker stack deploy --resolve-image never` (the 20.10 CLI that
//!    matches the engine) as `hearth-test-ref-NN`, snapshots, removes; then deploys with hearth
//!    as `hearth-test-hth-NN` — the library calls `hearth stack deploy` makes
//!    (`compose::translate_paths` + `stack::apply`, owner `Stack/<name>` plus `hearth.test=1`;
//!    the binary belongs to another package, so its path is not known to this crate) —
//!    snapshots, removes. The two sides run one after the other because several files create
//!    objects with fixed names (`proxy`, `esnet`, configs with `name:`);
//! 4. compares the raw snapshots (`hearth_tests::differential`): every service, secret and
//!    config `Spec` and every network and volume inspect object as the daemon stores them —
//!    `null`s, empty maps and field presence included — after normalising the stack name,
//!    IDs (mapped to names), hearth's own labels (`hearth.*`, on objects' top-level labels),
//!    and the content-hash suffix of hearth's secrets and configs *without* an explicit
//!    `name:` (explicit names are compared exactly). Only daemon-assigned fields (IDs, times,
//!    subnets, mount points, VXLAN IDs) are left out. Remaining differences must be on the
//!    allow-list below, each documented in `docs/DIFFERENTIAL.md`;
//! 5. requires both sides to agree on the outcome: both deploy, or both refuse.
//!
//! Both stacks are removed with hearth's verified forced teardown (a residual fails the test).
//! Needs `scripts/testbed.sh`; under `CI=true` an unreachable Docker fails the test.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use controller::compose::{self, Files, Options, Source};
use controller::stack::{self, ApplyOptions, Owner};
use controller::swarm::spec::StackSpec;
use controller::swarm::DockerSwarm;
use hearth_tests::differential::{
    chain, compare, docker, docker_ok, leftovers_of, remove, snapshot, Allowed, Snapshot, DOCKER,
};
use hearth_tests::support::{fixtures, real_swarm, RUN_LABEL, TEST_LABEL};

/// Run label value of the externals this test creates.
const RUN: &str = "differential";

const ALLOWED: &[Allowed] = &[Allowed {
    groups: &["01"],
    kind: "service",
    path: ".TaskTemplate.ContainerSpec.Mounts[]*",
    values: |_, _| true,
    why: "docker/cli 20.10 keeps file order when merging -c 01 -c 02; current docker/cli \
          (28.2.2, the compose reference) sorts merged volumes by target, as hearth does",
}];

/// Groups docker 20.10 cannot read: 12 has no `version:` key, which the 20.10 CLI rejects
/// ("unsupported Compose file version: 1.0") and current docker/cli reads as 3.x, as hearth
/// does. These are deployed with the newer CLI (28.2.2 at /usr/local/bin/docker).
const NEWER_CLI: &[&str] = &["12"];
/// The newer docker CLI.
const DOCKER_NEWER: &str = "/usr/local/bin/docker";

fn corpus_dir() -> PathBuf {
    std::env::var_os("HEARTH_CORPUS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/compose-corpus")
        })
}

/// `01+02`, `03`, `04+05`, `06`, …: the groups `compose/CORPUS.md` lists.
fn corpus_groups() -> Vec<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(corpus_dir())
        .expect("the corpus directory ../shared/compose-corpus must exist")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yml"))
        .collect();
    names.sort();
    assert_eq!(names.len(), 25, "the corpus has 25 files");
    let mut groups = Vec::new();
    for name in &names {
        match &name[..2] {
            "02" | "05" => continue,
            "01" => groups.push(vec![name.clone(), names[1].clone()]),
            "04" => groups.push(vec![name.clone(), names[4].clone()]),
            _ => groups.push(vec![name.clone()]),
        }
    }
    groups
}

/// The variables `SOURCES.md` lists per file; `STACK_NAME` is the stack's own name.
fn corpus_env(prefix: &str, stack: &str, pwd: &Path) -> BTreeMap<String, String> {
    let pwd = pwd.display().to_string();
    let vars: Vec<(&str, &str)> = match prefix {
        "01" => vec![
            ("DOMAIN", "traefik.example.com"),
            ("LETS_ENCRYPT_ENV", "production"),
            ("TRAEFIK_YML_VERSION", "v1"),
            ("FILE_PROVIDER_YML_VERSION", "v1"),
            ("ENTRYPOINT_VERSION", "v1"),
            ("DASHBOARD_ENABLED", "false"),
            ("LOG_LEVEL", "WARN"),
        ],
        "03" => vec![
            ("DOMAIN", "room.example.com"),
            ("LETS_ENCRYPT_ENV", "production"),
        ],
        "04" => vec![
            ("DOMAIN", "bonfire.example.com"),
            ("LETS_ENCRYPT_ENV", "production"),
            ("EXTRA_DOMAINS", ""),
            ("PG_BACKUP_VERSION", "v1"),
        ],
        "06" => vec![
            ("DOMAIN", "site.example.com"),
            ("EXTRA_DOMAINS", ""),
            ("LETS_ENCRYPT_ENV", "production"),
            ("SECRET_DB_ROOT_PASSWORD_VERSION", "v1"),
            ("SECRET_DB_PASSWORD_VERSION", "v1"),
            ("ENTRYPOINT_CONF_VERSION", "v1"),
            ("NGINX_DEFAULT_CONF_VERSION", "v1"),
            ("PHP_UPLOADS_CONF_VERSION", "v1"),
            ("PHP_EXTENSIONS_TO_DISABLE", "calendar"),
        ],
        "11" => vec![
            ("DOMAIN", "traefik.example.com"),
            ("USERNAME", "admin"),
            ("HASHED_PASSWORD", "not-a-real-hash"),
            ("EMAIL", "admin@example.com"),
        ],
        "16" => vec![("DOMAIN", "localhost")],
        "17" => vec![
            ("PWD", pwd.as_str()),
            ("ELASTICSEARCH_USERNAME", "elastic"),
            ("ELASTICSEARCH_PASSWORD", "changeme"),
        ],
        "18" => vec![("PWD", pwd.as_str())],
        "21" => vec![
            ("DOMAIN", "traefik.example.com"),
            ("USERS", "admin:not-a-real-hash"),
        ],
        "25" => vec![
            ("JOB_SERVICE_DB_HOST", "db.example.internal"),
            ("JOB_SERVICE_DB_PORT", "5432"),
            ("JOB_SERVICE_DOCKER_HOST", "localhost"),
            ("JOB_SERVICE_PORT", "9411"),
            ("CAF_DATABASE_USERNAME", "postgres"),
            ("CAF_DATABASE_PASSWORD", "postgres"),
            ("CAF_RABBITMQ_HOST", "rabbit"),
            ("CAF_RABBITMQ_PORT", "5672"),
            ("CAF_RABBITMQ_USERNAME", "guest"),
            ("CAF_RABBITMQ_PASSWORD", "guest"),
        ],
        _ => vec![],
    };
    let mut env: BTreeMap<String, String> = vars
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    env.insert("STACK_NAME".into(), stack.into());
    env
}

/// Records the side files a translation reads and serves a placeholder for each.
#[derive(Default)]
struct Recorder {
    read: std::sync::Mutex<Vec<PathBuf>>,
}

impl Files for Recorder {
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        self.read.lock().unwrap().push(path.to_path_buf());
        Ok(side_file_content(path))
    }
}

fn side_file_content(path: &Path) -> Vec<u8> {
    if path.file_name().is_some_and(|n| n == "rabbitmq.env") {
        // As published: comments and bare names taken from the environment.
        b"# RabbitMQ\nCAF_RABBITMQ_HOST\nCAF_RABBITMQ_PORT\nCAF_RABBITMQ_USERNAME\nCAF_RABBITMQ_PASSWORD\n"
            .to_vec()
    } else {
        format!("hearth differential placeholder for {}\n", path.display()).into_bytes()
    }
}

fn sources(dir: &Path, files: &[String]) -> Vec<Source> {
    files
        .iter()
        .map(|f| Source {
            name: dir.join(f).display().to_string(),
            text: std::fs::read_to_string(dir.join(f)).unwrap(),
        })
        .collect()
}

/// Writes the side files `files` reads (inside `dir` only).
fn write_side_files(dir: &Path, files: &[String], env: &BTreeMap<String, String>) {
    let recorder = Recorder::default();
    let result = compose::translate(
        &sources(dir, files),
        &Options {
            stack: "st",
            env,
            working_dir: dir.to_path_buf(),
            files: &recorder,
        },
    );
    if let Err(e) = result {
        panic!("{files:?}: hearth cannot translate the group: {e}");
    }
    for path in recorder.read.lock().unwrap().iter() {
        assert!(
            path.starts_with(dir),
            "{files:?} reads {} outside the copy",
            path.display()
        );
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, side_file_content(path)).unwrap();
    }
}

/// What this test created outside the stacks; removed on drop (also after a failure).
#[derive(Default)]
struct Leftovers {
    /// (kind, name) of externals.
    externals: Vec<(&'static str, String)>,
    /// Image tags made from the fixture image.
    tags: BTreeSet<String>,
}

impl Leftovers {
    /// Removes the externals and waits (≤ 10 s each) until inspecting them fails: a removed
    /// swarm network stays visible on the node for a moment, and the next group must not
    /// mistake it for one that exists.
    fn remove_externals(&mut self) {
        for (kind, name) in self.externals.drain(..).rev() {
            let out = docker(&[kind, "rm", &name]);
            if !out.status.success() {
                eprintln!(
                    "differential: cannot remove external {kind} {name}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                continue;
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while docker(&[kind, "inspect", &name]).status.success() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        self.remove_externals();
        for tag in std::mem::take(&mut self.tags) {
            let _ = docker(&["image", "rm", "--no-prune", &tag]);
        }
    }
}

/// Creates the externals `stack` needs that do not exist yet (labelled as test objects).
fn prepare_externals(stack: &StackSpec, leftovers: &mut Leftovers) {
    let labels = [
        "--label".to_string(),
        format!("{}={}", TEST_LABEL.0, TEST_LABEL.1),
        "--label".to_string(),
        format!("{RUN_LABEL}={RUN}"),
    ];
    let label_args: Vec<&str> = labels.iter().map(String::as_str).collect();
    let ext = &stack.externals;
    let wanted = ext
        .networks
        .iter()
        .map(|n| ("network", n))
        .chain(ext.volumes.iter().map(|n| ("volume", n)))
        .chain(ext.secrets.iter().map(|n| ("secret", n)))
        .chain(ext.configs.iter().map(|n| ("config", n)));
    for (kind, name) in wanted {
        if docker(&[kind, "inspect", name]).status.success() {
            continue;
        }
        let mut args: Vec<&str> = vec![kind, "create"];
        args.extend(&label_args);
        if kind == "network" {
            args.extend(["--driver", "overlay", "--attachable", name.as_str()]);
            docker_ok(&args);
        } else if kind == "volume" {
            args.push(name);
            docker_ok(&args);
        } else {
            args.extend([name.as_str(), "-"]);
            let mut child = Command::new(DOCKER)
                .args(&args)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap();
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(b"hearth differential external\n")
                .unwrap();
            assert!(
                child.wait().unwrap().success(),
                "{kind} create {name} failed"
            );
        }
        leftovers.externals.push((kind, name.clone()));
    }
}

/// Tags the fixture image under every image of `stack` that is not on the machine.
fn prepare_images(stack: &StackSpec, leftovers: &mut Leftovers) {
    for s in &stack.services {
        let image = s
            .task_template
            .as_ref()
            .and_then(|t| t.container_spec.as_ref())
            .and_then(|c| c.image.clone());
        let Some(image) = image else { continue };
        if leftovers.tags.contains(&image) || image.contains('@') {
            continue;
        }
        if docker(&["image", "inspect", &image]).status.success() {
            continue;
        }
        docker_ok(&["tag", fixtures::WEBAPP_1_0_0, &image]);
        leftovers.tags.insert(image);
    }
}

/// Waits (bounded, 8 s) until the tasks of a stack created its volumes (on both sides: neither
/// docker nor hearth creates them up front; a task that cannot be scheduled here never does).
fn wait_for_volumes(namespace: &str, expected: usize) {
    let deadline = Instant::now() + Duration::from_secs(8);
    while Instant::now() < deadline {
        let filter = format!("label=com.docker.stack.namespace={namespace}");
        let have = docker_ok(&["volume", "ls", "-q", "--filter", &filter])
            .split_whitespace()
            .count();
        if have >= expected {
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// One side's result: a snapshot, or the error that stopped the deploy.
type Outcome = Result<Snapshot, String>;

#[allow(clippy::too_many_arguments)]
async fn deploy_docker(
    swarm: &DockerSwarm,
    exact: &BTreeSet<String>,
    dir: &Path,
    files: &[String],
    namespace: &str,
    env: &BTreeMap<String, String>,
    volumes: usize,
) -> Outcome {
    let cli = if NEWER_CLI.iter().any(|p| files[0].starts_with(p)) {
        DOCKER_NEWER
    } else {
        DOCKER
    };
    let mut cmd = Command::new(cli);
    cmd.current_dir(dir)
        .env_clear()
        .envs(env)
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .args(["stack", "deploy", "--resolve-image", "never"]);
    for f in files {
        cmd.arg("-c").arg(dir.join(f));
    }
    let out = cmd.arg(namespace).output().unwrap();
    let outcome = if out.status.success() {
        wait_for_volumes(namespace, volumes);
        Ok(snapshot(namespace, exact))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    };
    remove(swarm, namespace).await;
    outcome
}

async fn deploy_hearth(
    swarm: &DockerSwarm,
    exact: &BTreeSet<String>,
    volumes: usize,
    translation: Result<compose::Translation, compose::Error>,
    namespace: &str,
) -> Outcome {
    let outcome = match translation {
        Err(e) => Err(format!("translation rejected: {e}")),
        Ok(t) => {
            let owner = Owner::operator(namespace).with_label(TEST_LABEL.0, TEST_LABEL.1);
            match stack::apply(swarm, &t.stack, &owner, &ApplyOptions::default()).await {
                Ok(_) => {
                    wait_for_volumes(namespace, volumes);
                    Ok(snapshot(namespace, exact))
                }
                Err(e) => Err(format!("apply failed: {}", chain(&e))),
            }
        }
    };
    remove(swarm, namespace).await;
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hearth_deploys_every_corpus_stack_as_docker_stack_deploy_does() {
    let Some(swarm) = real_swarm("stack_differential").await else {
        return;
    };
    // One differential run at a time on this machine (several test runs share the daemon):
    // stack names and the externals the corpus names (`proxy`, …) are fixed. Released on exit.
    let lock = std::fs::File::create(std::env::temp_dir().join("hearth-stack-differential.lock"))
        .expect("create the lock file");
    lock.lock().expect("lock the lock file");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    for entry in std::fs::read_dir(corpus_dir()).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name().to_string_lossy().ends_with(".yml") {
            std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
        }
    }
    let only = std::env::var("HEARTH_DIFFERENTIAL_ONLY").ok();
    let mut leftovers = Leftovers::default();
    let mut report = Vec::new();
    let mut failures = Vec::new();
    let mut late_objects = Vec::new();
    for files in corpus_groups() {
        let prefix = files[0][..2].to_string();
        if only
            .as_deref()
            .is_some_and(|o| !o.split(',').any(|p| p == prefix))
        {
            continue;
        }
        let started = Instant::now();
        let reference = format!("hearth-test-ref-{prefix}");
        let ours = format!("hearth-test-hth-{prefix}");
        let ref_env = corpus_env(&prefix, &reference, dir);
        let our_env = corpus_env(&prefix, &ours, dir);
        write_side_files(dir, &files, &ref_env);
        let paths: Vec<PathBuf> = files.iter().map(|f| dir.join(f)).collect();
        let ref_translation = compose::translate_paths(&paths, &reference, &ref_env);
        let our_translation = compose::translate_paths(&paths, &ours, &our_env);
        let mut volumes = 0;
        // Names given with `name:`, in both namespaces: compared exactly.
        let mut exact = BTreeSet::new();
        for t in [&ref_translation, &our_translation].into_iter().flatten() {
            prepare_externals(&t.stack, &mut leftovers);
            prepare_images(&t.stack, &mut leftovers);
            volumes = t.stack.volumes.len();
            exact.extend(t.stack.exact_names.secrets.iter().cloned());
            exact.extend(t.stack.exact_names.configs.iter().cloned());
        }

        // Leftovers of an earlier run would show up in the snapshots.
        remove(&swarm, &reference).await;
        remove(&swarm, &ours).await;
        let docker_side =
            deploy_docker(&swarm, &exact, dir, &files, &reference, &ref_env, volumes).await;
        let hearth_side = deploy_hearth(&swarm, &exact, volumes, our_translation, &ours).await;
        // A task whose container was being created while its service was removed can create
        // its volume again after the teardown's final listing (see docs/DIFFERENTIAL.md).
        tokio::time::sleep(Duration::from_secs(1)).await;
        for namespace in [&reference, &ours] {
            let late = leftovers_of(namespace);
            if !late.is_empty() {
                eprintln!("differential: {namespace} reappeared after teardown: {late:?}");
                late_objects.push(format!("{namespace}: {}", late.join(", ")));
                remove(&swarm, namespace).await;
            }
        }
        leftovers.remove_externals();

        let group = files.join(" + ");
        let line = match (&docker_side, &hearth_side) {
            (Ok(d), Ok(h)) => {
                let diffs = compare(d, h);
                let (allowed, denied): (Vec<_>, Vec<_>) = diffs
                    .into_iter()
                    .partition(|d| d.allowed(&prefix, ALLOWED).is_some());
                for d in &denied {
                    failures.push(format!("{group}: {d}"));
                }
                let counts = |kind: &str| d.keys().filter(|(k, _)| k == kind).count();
                format!(
                    "{prefix}: both deployed; docker created {} services, {} networks, {} volumes, \
                     {} secrets, {} configs; {} differences allowed ({}), {} not",
                    counts("service"),
                    counts("network"),
                    counts("volume"),
                    counts("secret"),
                    counts("config"),
                    allowed.len(),
                    allowed
                        .iter()
                        .map(|d| format!("{} {} {}", d.kind, d.name, d.path))
                        .collect::<Vec<_>>()
                        .join(", "),
                    denied.len()
                )
            }
            // No corpus group is expected to be refused by both: that would be a broken test
            // bed (a missing external, image or side file), not agreement.
            (Err(d), Err(h)) => {
                failures.push(format!("{group}: both refused; docker: {d}; hearth: {h}"));
                format!("{prefix}: both refused; docker: {d}; hearth: {h}")
            }
            (Ok(_), Err(h)) => {
                failures.push(format!("{group}: docker deployed, hearth refused: {h}"));
                format!("{prefix}: docker deployed, hearth refused: {h}")
            }
            (Err(d), Ok(_)) => {
                failures.push(format!("{group}: hearth deployed, docker refused: {d}"));
                format!("{prefix}: hearth deployed, docker refused: {d}")
            }
        };
        eprintln!("{line} [{:.1?}]", started.elapsed());
        report.push(line);
    }
    drop(leftovers);
    eprintln!("\n{}", report.join("\n"));
    if !late_objects.is_empty() {
        eprintln!(
            "objects that reappeared after a successful teardown (removed again):\n{}",
            late_objects.join("\n")
        );
    }
    assert!(
        failures.is_empty(),
        "{} unexplained difference(s) between docker stack deploy and hearth:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
