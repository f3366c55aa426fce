//! The pipelines of `deploy/ci/` executed against a real `hearth serve` on the real swarm, on a
//! `file://` clone of the test bed's git fixture recipe declared as a `Recipe`, with one warm
//! app (issue 16's first done-when item and build item 5). One daemon and one warm app serve
//! every case, in order:
//!
//! 1. The shell job (`deploy/ci/recipe-ci.sh`, run as shipped with `sh`, the built `hearth`
//!    first in `PATH`) — processes on this host, but the last one a container:
//!    - `release 1.0.0+1.0.0`, the version the canonical serves: nothing older to upgrade from,
//!      so the upgrade tier is skipped → the job exits non-zero, the run is Failed, the warm app
//!      is untouched (same record, same service ID and spec version);
//!    - `candidate PR` (a "pull request" commit checked out in a temp dir: version 1.2.0, image
//!      1.1.0) → install on the candidate, upgrade from the canonical (1.0.0) to it, green; the
//!      canonical does not move (`promoteCandidates` is off);
//!    - the change released (tag 1.2.0+1.2.0), `release` with a failing check → non-zero,
//!      nothing promoted, the warm app untouched;
//!    - `release 1.2.0+1.2.0`, the job run as one container on the swarm's engine owning its
//!      run (`OWNER=container:NAME`: `--owner container:ID`) → green, and the warm app
//!      serves exactly that tag's commit and digest, as tested by that run (from the API).
//! 2. Each pipeline file (`.drone.yml`, `woodpecker.yml`, `actions.yml`) parsed, and each
//!    step's commands run as its CI would: in its own container on the swarm's engine (the
//!    fixture image, `sh -e`, with the built `hearth`, `docker` and `git` bind-mounted, host
//!    network to reach the daemon, the checkout as the shared workspace), later steps skipped
//!    after a failure except the always-run `finish`:
//!    - Drone, a pull request (version 1.3.0, image 2.0.0) → green, canonical unmoved;
//!    - Woodpecker, its release (tag 1.3.0+1.3.0) → green, promoted to exactly that tag;
//!    - with `promoteCandidates: true`, Actions on a pull request (version 1.4.0, image 1.1.0)
//!      with a failing check → install fails, upgrade is skipped, `finish` runs: red, nothing
//!      promoted, the warm app untouched; then green and promoted: the warm app serves the
//!      candidate's snapshot (digest, run).
//!
//! The test bed has no ingress, so `CHECK` (the tiers' check; `curl
//! http://$HEARTH_DOMAIN/healthz` in the files) is overridden by a script that asks the run's
//! stack's running containers directly on their `docker_gwbridge` addresses; the secrets and
//! the server address (`HEARTH_TOKEN`, `HEARTH_SERVER`) and `RECIPE` are overridden as a CI's
//! settings would set them. Nothing else of the files is changed.
//!
//! Needs `scripts/testbed.sh` and the built `hearth` binary. Under `CI=true` an unreachable
//! Docker or a missing fixture repository fails this test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use controller::access::admin_token as auth;
use controller::cli::ci::Client;
use controller::serve::Running;
use crd::{RunPhase, WarmApp};
use hearth_tests::gitrecipe::{clone_fixture, fixture_recipe_present, git, set_version};
use hearth_tests::real_serve::{
    self, app_image, app_service_version, ready_at, wait_app, wait_app_service_settled, write_state,
};
use hearth_tests::support::{hearth_bin, real_swarm, short_name, RemoveOnDrop, RUN_LABEL};
use serde_json::Value;

/// Stands in for `curl -fsS http://$HEARTH_DOMAIN/PATH` where there is no ingress: some running
/// container of the run's stack (`$HEARTH_STACK`) answers PATH with a 2xx on its
/// `docker_gwbridge` address, as hearth's own probe reaches it (5 tries, 1 s apart: a task may
/// be starting or stopping).
const CHECK: &str = r#"set -u
path=${1:-/healthz}
docker=${DOCKER:-/usr/bin/docker}
i=0
while [ "$i" -lt 5 ]; do
  for id in $($docker ps -q --no-trunc --filter "label=com.docker.stack.namespace=$HEARTH_STACK" --filter status=running); do
    ip=$($docker network inspect docker_gwbridge --format "{{with index .Containers \"$id\"}}{{.IPv4Address}}{{end}}")
    ip=${ip%%/*}
    if [ -n "$ip" ] && wget -q -O /dev/null "http://$ip:8080$path"; then
      echo "check: $HEARTH_STACK answers $path"
      exit 0
    fi
  done
  i=$((i + 1))
  sleep 1
done
echo "check: no running container of $HEARTH_STACK answers $path" >&2
exit 1
"#;

fn state(name: &str, url: &str, promote_candidates: bool) -> String {
    format!(
        "apiVersion: hearth/v1\nkind: Recipe\nmetadata:\n  name: {name}\nspec:\n  git:\n    url: {url}\n  interval: 10s\n  tiers: [install, upgrade]\n---\n\
         apiVersion: hearth/v1\nkind: SlotPool\nmetadata:\n  name: ci\nspec:\n  slots: 2\n  portBase: 31000\n  portsPerSlot: 10\n  waitTimeout: 5m\n---\n\
         apiVersion: hearth/v1\nkind: WarmApp\nmetadata:\n  name: {name}\nspec:\n  recipe: {name}\n  version: 1.0.0+1.0.0\n  promote: onGreen\n  promoteCandidates: {promote_candidates}\n  health:\n    http:\n      service: app\n      port: 8080\n      path: /healthz\n    readyTimeout: 30s\n"
    )
}

/// The daemon, the warm app and what the jobs need to reach them.
struct Bed {
    running: Running,
    client: Client,
    name: String,
    stack: String,
    dir: PathBuf,
    server: String,
    token: String,
    token_file: PathBuf,
    check: PathBuf,
}

/// What a job did: its exit status, its output, the run it started.
#[derive(Debug)]
struct Job {
    ok: bool,
    log: String,
    run: String,
}

impl Bed {
    async fn app(&self) -> Value {
        self.client
            .get(&format!("/api/v1/warmapps/{}", self.name))
            .await
            .unwrap()
    }

    async fn run(&self, id: &str) -> Value {
        self.client
            .get(&format!("/api/v1/runs/{id}"))
            .await
            .unwrap()
    }

    /// The warm app as nothing may change it: its record's spec and its service's ID and spec
    /// version.
    async fn untouched(&self) -> (Value, String) {
        wait_app_service_settled(&self.stack).await;
        (
            self.app().await["spec"].clone(),
            app_service_version(&self.stack),
        )
    }

    /// `sh deploy/ci/recipe-ci.sh KIND WHAT` with `check_path` as the check's path.
    async fn shell_job(&self, kind: &str, what: &str, check_path: &str) -> Job {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/ci/recipe-ci.sh");
        let bin_dir = hearth_bin().parent().unwrap().to_path_buf();
        let path = format!(
            "{}:{}",
            bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut cmd = Command::new("sh");
        cmd.arg(script)
            .args([kind, what])
            .env("PATH", path)
            .env("RECIPE", &self.name)
            .env("HEARTH_SERVER", &self.server)
            .env("HEARTH_TOKEN_FILE", &self.token_file)
            .env("CHECK", format!("sh {} {check_path}", self.check.display()))
            .env_remove("HEARTH_TOKEN");
        let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap();
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("--- recipe-ci.sh {kind} {what}: {}\n{log}", out.status);
        Job {
            ok: out.status.success(),
            run: started(&log),
            log,
        }
    }

    /// The shell job run as one container on the swarm's engine (as a CI whose whole job is a
    /// container would run it), owning its run as that container:
    /// `OWNER=container:$HOSTNAME sh recipe-ci.sh KIND WHAT`.
    async fn shell_job_in_container(&self, kind: &str, what: &str) -> Job {
        let env = BTreeMap::from([
            ("RECIPE".to_string(), self.name.clone()),
            ("HEARTH_SERVER".to_string(), self.server.clone()),
            ("HEARTH_TOKEN".to_string(), self.token.clone()),
            ("CHECK".to_string(), "sh /check.sh /healthz".to_string()),
        ]);
        // On the host network $HOSTNAME is the host's: name the container instead.
        let container = format!("{}-job", self.name);
        let script = format!("OWNER=container:{container} exec sh /ci/recipe-ci.sh {kind} {what}");
        let (ok, log) = self
            .step_in_container(&script, &env, &self.dir, Some(&container))
            .await;
        eprintln!("--- recipe-ci.sh {kind} {what} in a container: {ok}\n{log}");
        Job {
            ok,
            run: started(&log),
            log,
        }
    }

    /// Runs `pipeline`'s steps for `event` with `workspace` as the checkout.
    async fn pipeline(&self, file: &str, event: &Event, workspace: &Path, check_path: &str) -> Job {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/ci")
            .join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        let doc: Value =
            serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let pipeline = Pipeline::parse(file, &doc);
        let mut env = BTreeMap::from([
            ("CI".to_string(), "true".to_string()),
            ("RECIPE".to_string(), self.name.clone()),
            ("HEARTH_SERVER".to_string(), self.server.clone()),
            ("HEARTH_TOKEN".to_string(), self.token.clone()),
            ("CHECK".to_string(), format!("sh /check.sh {check_path}")),
        ]);
        for key in ["RECIPE", "HEARTH_SERVER", "HEARTH_TOKEN", "CHECK"] {
            assert!(
                pipeline.env.contains(key),
                "{file}: {key} is not set by the pipeline ({:?}); the test overrides it",
                pipeline.env
            );
        }
        env.extend(event.env(file));
        let mut log = String::new();
        let mut failed = false;
        for step in &pipeline.steps {
            if failed && !step.always {
                log.push_str(&format!("--- {file} step {}: skipped\n", step.name));
                continue;
            }
            let (ok, out) = self
                .step_in_container(&step.script, &env, workspace, None)
                .await;
            log.push_str(&format!(
                "--- {file} step {}: {}\n{out}",
                step.name,
                if ok { "ok" } else { "FAILED" }
            ));
            failed |= !ok;
        }
        eprintln!("{log}");
        let vars = std::fs::read_to_string(workspace.join(".hearth-run"))
            .unwrap_or_else(|e| panic!("{file}: no .hearth-run ({e}): {log}"));
        let run = vars
            .lines()
            .find_map(|l| l.strip_prefix("HEARTH_RUN_ID='")?.strip_suffix('\''))
            .unwrap()
            .to_string();
        Job {
            ok: !failed,
            log,
            run,
        }
    }

    /// One step: `sh -e -c SCRIPT` in its own container of the fixture image on the swarm's
    /// engine, removed when it exits.
    async fn step_in_container(
        &self,
        script: &str,
        env: &BTreeMap<String, String>,
        workspace: &Path,
        name: Option<&str>,
    ) -> (bool, String) {
        let mount = |from: &Path, to: &str, ro: bool| {
            format!(
                "type=bind,source={},target={to}{}",
                from.display(),
                if ro { ",readonly" } else { "" }
            )
        };
        let mut cmd = Command::new("/usr/bin/docker");
        cmd.args(["run", "--rm", "--network", "host", "--entrypoint", "sh"])
            .args(name.map(|n| ["--name", n]).into_iter().flatten())
            .args(["--label", "hearth.test=1", "--label"])
            .arg(format!("{RUN_LABEL}={}", self.name))
            .args(["--workdir", "/workspace", "--mount"])
            .arg(mount(workspace, "/workspace", false))
            .arg("--mount")
            .arg(mount(&hearth_bin(), "/usr/local/bin/hearth", true))
            .arg("--mount")
            .arg(mount(Path::new("/usr/bin/docker"), "/usr/bin/docker", true))
            .arg("--mount")
            .arg(mount(Path::new("/usr/bin/git"), "/usr/bin/git", true))
            .arg("--mount")
            .arg(mount(&self.check, "/check.sh", true))
            .arg("--mount")
            .arg(mount(
                &Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/ci"),
                "/ci",
                true,
            ))
            .arg("--mount")
            .arg(mount(
                Path::new("/var/run/docker.sock"),
                "/var/run/docker.sock",
                false,
            ));
        // The dynamically linked binaries' libraries (the fixture image is a static busybox).
        for lib in ["/lib/x86_64-linux-gnu", "/lib64"] {
            cmd.arg("--mount").arg(mount(Path::new(lib), lib, true));
        }
        // The image's PATH is /bin only.
        cmd.args(["--env", "PATH=/usr/local/bin:/usr/bin:/bin"]);
        for (k, v) in env {
            cmd.arg("--env").arg(format!("{k}={v}"));
        }
        cmd.args(["hearth-fixture/webapp:1.0.0", "-e", "-c", script]);
        let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// Waits until the recipe has fetched `tag`.
    async fn fetched(&self, tag: &str) {
        real_serve::wait_fetched(&self.running, &self.name, tag).await;
    }
}

/// The run `hearth run exec` said it started (`hearth: run ID started`) in `log`.
fn started(log: &str) -> String {
    log.lines()
        .find_map(|l| l.strip_prefix("hearth: run ")?.strip_suffix(" started"))
        .unwrap_or_else(|| panic!("no run started: {log}"))
        .to_string()
}

/// A CI event: a pull request or a tag.
enum Event {
    PullRequest,
    Tag(String),
}

impl Event {
    /// The variables each CI sets for the event (the ones the pipelines read).
    fn env(&self, file: &str) -> Vec<(String, String)> {
        let Event::Tag(tag) = self else {
            return Vec::new();
        };
        let pairs: &[(&str, &str)] = match file {
            ".drone.yml" => &[("DRONE_TAG", tag)],
            "woodpecker.yml" => &[("CI_COMMIT_TAG", tag)],
            "actions.yml" => &[("GITHUB_REF_TYPE", "tag"), ("GITHUB_REF_NAME", tag)],
            other => panic!("no CI for {other}"),
        };
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }
}

/// One step of a pipeline: its commands as one script, and whether it runs after a failure.
#[derive(Debug)]
struct Step {
    name: String,
    script: String,
    always: bool,
}

/// A pipeline file's steps and the environment variables it sets (anywhere).
#[derive(Debug)]
struct Pipeline {
    steps: Vec<Step>,
    env: std::collections::BTreeSet<String>,
}

impl Pipeline {
    fn parse(file: &str, doc: &Value) -> Pipeline {
        let str_of = |v: &Value| v.as_str().map(str::to_string);
        let steps: Vec<Step> = match file {
            // Drone and Woodpecker: `steps: [{name, commands: [..], when: {status: [..]}}]`
            // (Woodpecker's `when` is a list of such maps).
            ".drone.yml" | "woodpecker.yml" => doc["steps"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    let when: Vec<&Value> = match &s["when"] {
                        Value::Array(a) => a.iter().collect(),
                        Value::Null => Vec::new(),
                        w => vec![w],
                    };
                    Step {
                        name: str_of(&s["name"]).unwrap(),
                        script: s["commands"]
                            .as_array()
                            .unwrap_or_else(|| panic!("{file}: a step without commands: {s}"))
                            .iter()
                            .map(|c| str_of(c).unwrap())
                            .collect::<Vec<_>>()
                            .join("\n"),
                        always: when.iter().any(|w| {
                            w["status"]
                                .as_array()
                                .is_some_and(|st| st.iter().any(|x| x == "failure"))
                        }),
                    }
                })
                .collect(),
            // Actions: `jobs.*.steps: [{name, run, if}]`; `uses:` steps (the checkout) are
            // the runner's, done here by the test.
            "actions.yml" => {
                let jobs = doc["jobs"].as_object().unwrap();
                assert_eq!(jobs.len(), 1, "{file}: one job");
                jobs.values().next().unwrap()["steps"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|s| s.get("uses").is_none())
                    .map(|s| Step {
                        name: str_of(&s["name"]).unwrap(),
                        script: str_of(&s["run"]).unwrap(),
                        always: s["if"] == "always()",
                    })
                    .collect()
            }
            other => panic!("no CI for {other}"),
        };
        let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["start", "install", "upgrade", "finish"],
            "{file}: the steps"
        );
        assert!(
            steps.iter().all(|s| s.always == (s.name == "finish")),
            "{file}: only finish runs after a failure: {steps:?}"
        );
        let mut env = std::collections::BTreeSet::new();
        collect_env(doc, &mut env);
        Pipeline { steps, env }
    }
}

/// The keys of every `environment:`/`env:` map anywhere in `v`.
fn collect_env(v: &Value, into: &mut std::collections::BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "environment" || k == "env" {
                    if let Some(e) = x.as_object() {
                        into.extend(e.keys().cloned());
                    }
                }
                collect_env(x, into);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_env(x, into)),
        _ => {}
    }
}

/// A "pull request": the fixture recipe at `base`'s HEAD checked out in `dir`, with the change
/// (`version`, `image`) committed on a branch.
fn pull_request(base: &Path, dir: &Path, version: &str, image: &str) -> String {
    let out = Command::new("git")
        .args(["clone", "-q"])
        .arg(base)
        .arg(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    git(dir, &["checkout", "-q", "-b", "change"]);
    set_version(dir, version, image);
    git(
        dir,
        &[
            "commit",
            "-q",
            "-am",
            &format!("chore: upgrade to {version}"),
        ],
    );
    git(dir, &["rev-parse", "HEAD"])
}

/// Releases a pull request's change in the declared recipe `repo`: merge it, tag it. Returns the
/// tag's commit.
fn release(repo: &Path, pr: &Path, tag: &str) -> String {
    git(repo, &["fetch", "-q", &pr.display().to_string(), "change"]);
    git(repo, &["merge", "-q", "--ff-only", "FETCH_HEAD"]);
    git(repo, &["tag", tag]);
    git(repo, &["rev-parse", "HEAD"])
}

/// The run's history messages (its `Deployed` entries name what each deploy put in).
async fn deployed(bed: &Bed, run: &str) -> Vec<String> {
    let history: Vec<Value> = bed
        .client
        .get(&format!("/api/v1/history?kind=Run&name={run}"))
        .await
        .unwrap();
    let mut out: Vec<String> = history
        .iter()
        .filter(|e| e["reason"] == "Deployed")
        .map(|e| e["message"].as_str().unwrap_or_default().to_string())
        .collect();
    out.reverse();
    out
}

/// A green run of a candidate or release: both tiers passed, the upgrade went from the warm
/// canonical (`base`) to what the run tests.
async fn assert_green(bed: &Bed, job: &Job, base: &str) -> Value {
    assert!(job.ok, "the job failed:\n{}", job.log);
    let run = bed.run(&job.run).await;
    assert_eq!(run["status"]["phase"], "Succeeded", "{run}");
    let tiers: Vec<(String, String)> = run["status"]["tiers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_string(),
                t["result"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        tiers,
        [
            ("install".to_string(), "pass".to_string()),
            ("upgrade".to_string(), "pass".to_string())
        ]
    );
    let deploys = deployed(bed, &job.run).await;
    assert!(
        deploys
            .iter()
            .any(|d| d.contains(&format!("canonical {base}"))),
        "the upgrade's base is the canonical {base}: {deploys:?}"
    );
    assert!(
        deploys.last().is_some_and(|d| d.contains(": run ")),
        "the change deployed over it last: {deploys:?}"
    );
    run
}

/// A job that must fail and change nothing: non-zero exit, the run not green, the warm app as
/// `before` (record and service), and no promotion recorded for the run.
async fn assert_red(bed: &Bed, job: &Job, before: &(Value, String), why: &str) {
    assert!(!job.ok, "{why}: the job exited 0:\n{}", job.log);
    let run = bed.run(&job.run).await;
    assert_eq!(run["status"]["phase"], "Failed", "{why}: {run}");
    // A promotion (if one were wrongly offered) starts right after the finish: give it time.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        &bed.untouched().await,
        before,
        "{why}: the warm app changed"
    );
    let history: Vec<Value> = bed
        .client
        .get(&format!(
            "/api/v1/history?kind=WarmApp&name={}&limit=500",
            bed.name
        ))
        .await
        .unwrap();
    assert!(
        !history.iter().any(|e| e["reason"] == "Promoted"
            && e["message"].as_str().unwrap_or_default().contains(&job.run)),
        "{why}: promoted: {history:?}"
    );
}

/// The warm app serves exactly what `run` tested: version, content (kind, commit, digest) and
/// the run, from the API; its service runs `image`.
async fn assert_serves(bed: &Bed, run: &Value, image: &str) {
    let id = run["metadata"]["name"].as_str().unwrap();
    let version = run["spec"]["version"].as_str().unwrap().to_string();
    let tested = run["spec"]["content"].clone();
    let digest = tested["digest"].as_str().unwrap().to_string();
    wait_app(
        &bed.running,
        &bed.name,
        "serving what the run tested",
        Duration::from_secs(120),
        |a: &WarmApp| {
            ready_at(&version)(a)
                && a.status.observed_generation == a.metadata.generation
                && a.spec.content.as_ref().is_some_and(|c| c.digest == digest)
        },
    )
    .await;
    let app = bed.app().await;
    let content = &app["spec"]["content"];
    assert_eq!(app["spec"]["version"], version.as_str(), "{app}");
    assert_eq!(app["status"]["observedVersion"], version.as_str(), "{app}");
    assert_eq!(content["digest"], tested["digest"], "{app}");
    assert_eq!(content["kind"], tested["kind"], "{app}");
    assert_eq!(content["commit"], tested["commit"], "{app}");
    assert_eq!(content["run"], id, "{app}");
    assert!(
        app_image(&bed.stack).ends_with(image),
        "{}",
        app_image(&bed.stack)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shell_job_and_each_pipeline_test_a_change_and_promote_exactly_what_went_green() {
    let Some(docker) = real_swarm("pipelines_real").await else {
        return;
    };
    if !fixture_recipe_present("pipelines_real") {
        return;
    }
    let t0 = Instant::now();
    let name = short_name("pl");
    // Declared before the daemon: dropped after it, so a failing test leaves no stack (nor a
    // step container) behind.
    let mut cleanup = RemoveOnDrop::new(&name);
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    clone_fixture(&repo);
    let url = format!("file://{}", repo.display());
    std::fs::write(dir.path().join("state.yml"), state(&name, &url, false)).unwrap();
    let check = dir.path().join("check.sh");
    std::fs::write(&check, CHECK).unwrap();
    let (running, shutdown) = real_serve::start(
        real_serve::options(dir.path(), &name),
        Arc::new(docker.clone()),
        &docker,
    )
    .await;
    cleanup.stop_first(shutdown.clone());
    let token_file = running.token_file.clone().unwrap();
    let token = auth::read(&token_file).unwrap();
    let addr = running.http_addr.unwrap();
    let bed = Bed {
        client: Client::new(addr).with_token(Some(token.clone())),
        server: addr.to_string(),
        token: std::fs::read_to_string(&token_file)
            .unwrap()
            .trim()
            .to_string(),
        token_file,
        check,
        stack: format!("hw-{name}"),
        dir: dir.path().to_path_buf(),
        name: name.clone(),
        running,
    };
    wait_app(
        &bed.running,
        &name,
        "Ready at 1.0.0",
        Duration::from_secs(120),
        ready_at("1.0.0+1.0.0"),
    )
    .await;
    eprintln!("timing: warm app ready {:?}", t0.elapsed());

    // 1a. The shell job on the release the canonical serves: no base, upgrade skipped.
    let before = bed.untouched().await;
    let job = bed.shell_job("release", "1.0.0+1.0.0", "/healthz").await;
    assert_red(&bed, &job, &before, "a skipped upgrade tier").await;
    let run = bed.run(&job.run).await;
    assert!(
        run["status"]["tiers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "upgrade" && t["result"] == "skip"),
        "{run}"
    );
    assert!(job.log.contains("Failed"), "{}", job.log);
    eprintln!("timing: skipped tier {:?}", t0.elapsed());

    // 1b. A pull request: install the candidate, upgrade from the canonical to it; green, but
    //     the canonical does not move.
    let pr = bed.dir.join("pr");
    let pr_commit = pull_request(&repo, &pr, "1.2.0+1.2.0", "1.1.0");
    let before = bed.untouched().await;
    let job = bed
        .shell_job("candidate", &pr.display().to_string(), "/healthz")
        .await;
    let run = assert_green(&bed, &job, "1.0.0+1.0.0").await;
    assert_eq!(run["spec"]["content"]["kind"], "workTree");
    assert_eq!(run["spec"]["content"]["commit"], pr_commit.as_str());
    assert_eq!(run["spec"]["version"], "1.2.0+1.2.0");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(bed.untouched().await, before, "a candidate is not promoted");
    eprintln!("timing: candidate green {:?}", t0.elapsed());

    // 1c. The change released: tag 1.2.0+1.2.0. Its run with a failing check promotes nothing.
    let tag_commit = release(&repo, &pr, "1.2.0+1.2.0");
    bed.fetched("1.2.0+1.2.0").await;
    let job = bed
        .shell_job("release", "1.2.0+1.2.0", "/no-such-page")
        .await;
    assert_red(&bed, &job, &before, "a failing install tier").await;
    eprintln!("timing: failing check {:?}", t0.elapsed());

    // 1d. Its green run — the job as one container owning its run — : the warm app serves
    //     exactly that tag's commit and digest.
    let job = bed.shell_job_in_container("release", "1.2.0+1.2.0").await;
    let run = assert_green(&bed, &job, "1.0.0+1.0.0").await;
    let owner = run["spec"]["owner"]["kind"]["container"]
        .as_str()
        .unwrap_or_default();
    assert!(
        owner.len() == 64 && owner.bytes().all(|b| b.is_ascii_hexdigit()),
        "owned by the job's container (its full ID): {run}"
    );
    assert_eq!(run["spec"]["content"]["kind"], "release");
    assert_eq!(run["spec"]["content"]["commit"], tag_commit.as_str());
    assert_eq!(run["spec"]["content"]["tag"], "1.2.0+1.2.0");
    assert_serves(&bed, &run, "webapp:1.1.0").await;
    eprintln!("timing: release promoted {:?}", t0.elapsed());

    // 2a. Drone on a pull request (each step its own container): green, canonical unmoved.
    let pr2 = bed.dir.join("pr2");
    pull_request(&repo, &pr2, "1.3.0+1.3.0", "2.0.0");
    let before = bed.untouched().await;
    let job = bed
        .pipeline(".drone.yml", &Event::PullRequest, &pr2, "/healthz")
        .await;
    let run = assert_green(&bed, &job, "1.2.0+1.2.0").await;
    assert_eq!(run["spec"]["content"]["kind"], "workTree");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(bed.untouched().await, before, "a candidate is not promoted");
    eprintln!("timing: drone pull request {:?}", t0.elapsed());

    // 2b. Woodpecker on its release: promoted to exactly the tag.
    let tag_commit = release(&repo, &pr2, "1.3.0+1.3.0");
    bed.fetched("1.3.0+1.3.0").await;
    let checkout = bed.dir.join("tag-1.3.0");
    clone_fixture(&checkout);
    let job = bed
        .pipeline(
            "woodpecker.yml",
            &Event::Tag("1.3.0+1.3.0".into()),
            &checkout,
            "/healthz",
        )
        .await;
    let run = assert_green(&bed, &job, "1.2.0+1.2.0").await;
    assert_eq!(run["spec"]["content"]["commit"], tag_commit.as_str());
    assert_serves(&bed, &run, "webapp:2.0.0").await;
    eprintln!("timing: woodpecker release {:?}", t0.elapsed());

    // 2c. promoteCandidates: true; Actions on a pull request: the candidate is promoted.
    write_state(&bed.dir.join("state.yml"), &state(&name, &url, true));
    wait_app(
        &bed.running,
        &name,
        "promoteCandidates on",
        Duration::from_secs(30),
        |a| a.spec.promote_candidates,
    )
    .await;
    // The pull request with a failing check first (its own fresh checkout, as a CI gives):
    // install fails, upgrade is skipped, finish still runs; red, nothing promoted.
    let pr3_red = bed.dir.join("pr3-red");
    pull_request(&repo, &pr3_red, "1.4.0+1.4.0", "1.1.0");
    let before = bed.untouched().await;
    let job = bed
        .pipeline(
            "actions.yml",
            &Event::PullRequest,
            &pr3_red,
            "/no-such-page",
        )
        .await;
    assert!(
        job.log.contains("step install: FAILED")
            && job.log.contains("step upgrade: skipped")
            && job.log.contains("step finish: ok"),
        "{}",
        job.log
    );
    assert_red(&bed, &job, &before, "actions: a failing install tier").await;
    eprintln!("timing: actions failing check {:?}", t0.elapsed());
    let pr3 = bed.dir.join("pr3");
    pull_request(&repo, &pr3, "1.4.0+1.4.0", "1.1.0");
    let job = bed
        .pipeline("actions.yml", &Event::PullRequest, &pr3, "/healthz")
        .await;
    let run = assert_green(&bed, &job, "1.3.0+1.3.0").await;
    assert_eq!(run["spec"]["content"]["kind"], "workTree");
    assert_serves(&bed, &run, "webapp:1.1.0").await;
    eprintln!("timing: actions candidate promoted {:?}", t0.elapsed());

    // No run left behind: every job finished its run.
    let runs: Vec<crd::Run> = bed.client.get("/api/v1/runs").await.unwrap();
    for r in &runs {
        assert!(
            r.status.phase.is_terminal() && r.status.phase != RunPhase::Orphaned,
            "{} is {:?}",
            r.metadata.name,
            r.status.phase
        );
    }
    shutdown.stop_gracefully();
    bed.running.wait().await;
    controller::stack::teardown(
        &docker,
        &bed.stack,
        &controller::stack::TeardownOptions::forced(),
    )
    .await
    .unwrap();
    eprintln!("timing: whole test {:?}", t0.elapsed());
}
