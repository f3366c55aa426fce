//! Recipe differential: every real recipe (`../shared/recipes/*.bundle`) at every tag, rendered
//! by hearth and deployed by hearth, against `docker stack deploy` of the same files and env, on
//! the real swarm, compared on raw specs (`hearth_tests::differential`, the normaliser of the
//! compose-corpus differential).
//!
//! Cases: every tag of every recipe with its `.env.sample` as it is, and at each recipe's newest
//! version every option its `.env.sample` documents in comments (a commented `COMPOSE_FILE=`
//! line and the commented assignments of its block — traefik's host-mode ports overlay,
//! bonfire's 17 additive overlays, …), enabled one at a time as an operator would: uncommented
//! in docker's env file, given to hearth as the app's `env` overrides. Cases run concurrently
//! (four at once); those publishing ports (traefik's 80 and 443) take turns. Per case, docker's
//! side is deployed and removed before hearth's.
//!
//! 1. **Fetch as hearth does.** The bundle is cloned bare into a temporary directory and declared
//!    as a `Recipe` on its `file://` URL; `Sources::fetch` mirrors it with the git CLI and lists
//!    the versions. Every tag of the bundle must be a version (none ignored). A recipe without a
//!    tag (`mayel/lemp`) is compared at its branch head, an unreleased commit.
//! 2. **hearth's side.** `Sources::render` at the tag (for the head: the same `render_tree` on the
//!    commit's tree written from the mirror) with no env overrides — `.env.sample`, its
//!    `COMPOSE_FILE` overlays, `abra.sh` exports, `STACK_NAME` and `DOMAIN` — then `stack::apply`
//!    as a per-run stack is applied (owner labels plus `hearth.test=1`), which also generates the
//!    recipe's external versioned secrets.
//! 3. **docker's side.** A plain `git clone` checked out at the same commit; the env is what the
//!    recipe ecosystem's shell reading gives: `bash` with `set -a` sourcing `.env.sample`, then
//!    `abra.sh`'s `export` lines, then `STACK_NAME` and `DOMAIN` (the same domain as hearth's).
//!    The secrets hearth generates are created first under the same names (docker's namespace,
//!    random values, labelled `hearth.test=1`, no stack label — as abra creates them). Then
//!    `/usr/bin/docker stack deploy --resolve-image never -c <each COMPOSE_FILE entry>` with
//!    exactly that env and `DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1`. The images cannot be pulled
//!    here; specs are compared, tasks need not run.
//! 4. **Compare.** The differences must be exactly the expected delta, no more and no less:
//!    `coop-cloud.<stack>.version=<version>` on the `app` service's labels (unless the recipe's
//!    own label already says the same), and each generated secret present on hearth's side only,
//!    with the stack label and nothing else (hearth removes it with the stack).
//!
//! Everything is removed (hearth's verified teardown per namespace, the pre-created secrets and
//! the shared external network by name) and a final listing must find nothing. Needs Docker (a
//! swarm manager) and the bundles: under `CI=true` either missing fails the test.
//! `HEARTH_RECIPES_DIR` overrides where the bundles are (a worktree has no `../shared`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use controller::catalogue::sources::{self, Limits};
use controller::catalogue::{git::Mirror, Catalogue, RenderRequest, Rendered, Sources};
use controller::stack::{self, ApplyOptions, Owner};
use controller::swarm::spec::PublishMode;
use controller::swarm::DockerSwarm;
use controller::warmapp;
use crd::names::labels::WARM_VERSION;
use crd::recipe::{GitSource, RecipeSpec};
use hearth_tests::differential::{
    chain, compare, docker, docker_ok, flatten, leftovers_of, remove, snapshot, Difference,
    Snapshot, DOCKER, STACK,
};
use hearth_tests::support::{in_ci, real_swarm, unique_name, RUN_LABEL, TEST_LABEL};
use serde_json::{json, Value};

/// Run label value of the objects this test creates itself.
const RUN: &str = "recipe-differential";

/// Current docker/cli (28.2.2), for the merge order of allowed difference A.
const DOCKER_CURRENT: &str = "/usr/local/bin/docker";

/// Versions compared at once.
const CONCURRENCY: usize = 4;

/// The stack namespace label.
const NAMESPACE_LABEL: &str = "com.docker.stack.namespace";

fn recipes_dir() -> PathBuf {
    std::env::var_os("HEARTH_RECIPES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/recipes"))
}

/// The bundles, sorted; `None` (a loud skip) when there are none outside CI.
fn bundles() -> Option<Vec<PathBuf>> {
    let dir = recipes_dir();
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "bundle"))
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    if found.is_empty() {
        let why = format!(
            "no recipe bundles in {} (set HEARTH_RECIPES_DIR to ../shared/recipes)",
            dir.display()
        );
        assert!(!in_ci(), "CI=true and {why}");
        eprintln!("\n!!!!!! SKIPPING recipe_differential: {why}\n");
        return None;
    }
    Some(found)
}

/// `owner__repo.bundle` → a recipe name (a DNS label of ≤ 28 characters).
fn recipe_name(bundle: &Path) -> String {
    let stem = bundle.file_stem().unwrap().to_string_lossy();
    let repo = stem.rsplit("__").next().unwrap_or(&stem);
    let name: String = repo
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(28)
        .collect();
    name.trim_matches('-').to_string()
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One version of one recipe to compare.
#[derive(Debug, Clone)]
struct Case {
    recipe: String,
    /// The tag, or `None` for the branch head (an unreleased commit).
    tag: Option<String>,
    /// The version hearth renders: the published version, or the head's short SHA.
    version: String,
    commit: String,
    /// An option the `.env.sample` documents in comments, enabled; `None`: the file as it is.
    option: Option<EnvOption>,
    /// Also deploy the stack as a `WarmApp` deploys it (`warmapp::prepare`) and compare.
    warm: bool,
}

impl Case {
    fn label(&self) -> String {
        let base = match &self.tag {
            Some(t) => format!("{} {t}", self.recipe),
            None => format!("{} {} (unreleased head)", self.recipe, self.version),
        };
        match &self.option {
            Some(o) => format!("{base} +{}", o.name),
            None => base,
        }
    }

    /// The operator's edits of the env file: the option's lines, as `env` overrides.
    fn overrides(&self) -> BTreeMap<String, String> {
        let Some(o) = &self.option else {
            return BTreeMap::new();
        };
        o.lines
            .iter()
            .map(|(_, line)| {
                let (key, value) = line.split_once('=').unwrap();
                (key.trim().to_string(), unquote(value))
            })
            .collect()
    }
}

/// An option documented in an `.env.sample`: a commented `COMPOSE_FILE=` line and the commented
/// assignments of its block (up to a blank line or the next `COMPOSE_FILE`), which an operator
/// uncomments to enable it.
#[derive(Debug, Clone)]
struct EnvOption {
    /// The overlays it adds (the last entries of its `COMPOSE_FILE`).
    name: String,
    /// (0-based line, the line uncommented).
    lines: Vec<(usize, String)>,
}

/// `# KEY=value` → `KEY=value`, for a commented assignment.
fn commented_assignment(line: &str) -> Option<String> {
    let rest = line.trim_start().strip_prefix('#')?;
    let rest = rest.trim_start_matches('#').trim_start();
    let (key, _) = rest.split_once('=')?;
    let valid = key
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    valid.then(|| rest.trim_end().to_string())
}

/// The options an `.env.sample` documents (see [`EnvOption`]).
fn documented_options(sample: &str) -> Vec<EnvOption> {
    let lines: Vec<&str> = sample.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(first) = commented_assignment(line) else {
            continue;
        };
        if !first.starts_with("COMPOSE_FILE=") {
            continue;
        }
        let files = unquote(&first["COMPOSE_FILE=".len()..]);
        let name = files
            .split(':')
            .filter(|f| !f.starts_with('$') && *f != "compose.yml")
            .collect::<Vec<_>>()
            .join("+");
        let mut option = EnvOption {
            name,
            lines: vec![(i, first)],
        };
        for (j, next) in lines.iter().enumerate().skip(i + 1) {
            if next.trim().is_empty() || !next.trim_start().starts_with('#') {
                break;
            }
            match commented_assignment(next) {
                Some(a) if a.starts_with("COMPOSE_FILE=") => break,
                Some(a) => option.lines.push((j, a)),
                None => {}
            }
        }
        out.push(option);
    }
    out
}

/// A dotenv value without its quotes and trailing comment (the options' values are plain).
fn unquote(value: &str) -> String {
    let v = value.trim();
    for q in ['"', '\''] {
        if let Some(inner) = v.strip_prefix(q).and_then(|r| r.split_once(q)) {
            return inner.0.to_string();
        }
    }
    match v.find(" #") {
        Some(at) => v[..at].trim().to_string(),
        None => v.to_string(),
    }
}

/// Renders `case` for `stack` through hearth's recipe path.
///
/// # Errors
/// hearth's refusal, as text.
fn render(
    sources: &Sources,
    trees: &Path,
    case: &Case,
    stack: &str,
    domain: &str,
) -> Result<Rendered, String> {
    let env = case.overrides();
    let request = RenderRequest {
        recipe: &case.recipe,
        version: case.tag.as_deref().unwrap_or(&case.version),
        stack,
        domain,
        env: &env,
    };
    match &case.tag {
        Some(_) => sources
            .render(&request)
            .map_err(|e| format!("render failed: {}", chain(&e))),
        // An unreleased commit: the render of a tag, on the head commit's tree.
        None => {
            let tree = trees.join(&case.commit);
            if !tree.is_dir() {
                let mirror = Mirror::new(sources.recipe(&case.recipe).unwrap().dir);
                mirror.write_tree(&case.commit, &tree).unwrap();
            }
            sources::render_tree(&tree, &request, &case.version, case.commit.clone())
                .map_err(|e| format!("render failed: {}", chain(&e)))
        }
    }
}

/// The env the recipe ecosystem's shell reading gives: `set -a`, `.env.sample` sourced, then
/// `abra.sh`'s `export NAME=value` lines, then `STACK_NAME` and `DOMAIN`.
fn ecosystem_env(dir: &Path, stack: &str, domain: &str) -> BTreeMap<String, String> {
    // Test data is sourced by a shell: refuse anything but plain assignments.
    if let Ok(text) = std::fs::read_to_string(dir.join(".env.sample")) {
        for (i, line) in text.lines().enumerate() {
            let line = line.trim_start();
            assert!(
                line.starts_with('#') || !(line.contains("$(") || line.contains('`')),
                "{}/.env.sample:{}: a command substitution; not sourcing it",
                dir.display(),
                i + 1
            );
        }
    }
    if let Ok(text) = std::fs::read_to_string(dir.join("abra.sh")) {
        for line in text.lines().filter(|l| l.starts_with("export ")) {
            let (name, value) = line["export ".len()..].split_once('=').unwrap();
            assert!(
                name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && value
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)),
                "abra.sh: {line:?} is not a plain export; not evaluating it"
            );
        }
    }
    let script = r#"set -a
[ -f .env.sample ] && . ./.env.sample
[ -f abra.sh ] && eval "$(grep -E '^export [A-Za-z_][A-Za-z0-9_]*=' abra.sh)"
STACK_NAME="$1"
DOMAIN="$2"
set +a
exec env -0"#;
    let out = Command::new("bash")
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .args(["--noprofile", "--norc", "-c", script, "bash", stack, domain])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sourcing {}/.env.sample: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .split('\0')
        .filter_map(|kv| kv.split_once('='))
        // The shell's own variables are not the recipe's.
        .filter(|(k, _)| !["PWD", "OLDPWD", "SHLVL", "_"].contains(k))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Creates a secret with a random value, labelled as this test's.
fn create_secret(name: &str) {
    let mut child = Command::new(DOCKER)
        .args(["secret", "create", "--label"])
        .arg(format!("{}={}", TEST_LABEL.0, TEST_LABEL.1))
        .arg("--label")
        .arg(format!("{RUN_LABEL}={RUN}"))
        .args([name, "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let value: String = (0..32)
        .map(|_| char::from(b'a' + rand::random::<u8>() % 26))
        .collect();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(value.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "secret create {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A recipe option that docker itself cannot deploy: both sides must refuse it, docker's error
/// containing `docker`, hearth's containing `hearth` (see docs/DIFFERENTIAL.md).
struct Refusal {
    recipe: &'static str,
    /// The option (its overlays, as [`EnvOption::name`]).
    option: &'static str,
    docker: &'static str,
    hearth: &'static str,
    why: &'static str,
}

const EXPECTED_REFUSALS: &[Refusal] = &[Refusal {
    recipe: "bonfire-coop-cloud",
    option: "compose.auth.github.yml",
    docker: "undefined secret \"github_client_secret\"",
    hearth: "undefined secret \"github_client_secret\"",
    why: "the overlay's service uses secret github_client_secret but declares it as oauth_client_secret",
}];

/// What one version gave.
struct Outcome {
    line: String,
    failures: Vec<String>,
    namespaces: [String; 3],
}

/// The differences hearth means to have, as `kind name path docker hearth` lines.
fn expected_delta(
    docker_side: &Snapshot,
    ours: &Rendered,
    namespace: &str,
    version: &str,
) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let app = ("service".to_string(), format!("{STACK}_app"));
    let path = format!(".Labels.coop-cloud.{STACK}.version");
    let mut lines = BTreeMap::new();
    if let Some(spec) = docker_side.get(&app) {
        flatten(spec, String::new(), &mut lines);
    }
    let theirs = lines.get(&path).cloned().unwrap_or_else(|| "absent".into());
    let want = Value::String(version.into()).to_string();
    if theirs != want {
        out.insert(format!(
            "service {STACK}_app {path}: docker {theirs} / hearth {want}"
        ));
    }
    for g in &ours.stack.generated_secrets {
        let name = g.name.replace(namespace, STACK);
        out.insert(format!(
            "secret {name} (exists): docker absent / hearth present"
        ));
    }
    out
}

async fn run_case(
    swarm: &DockerSwarm,
    sources: &Sources,
    work: &Path,
    bare: &Path,
    case: &Case,
) -> Outcome {
    let started = Instant::now();
    let id = unique_name("rdiff");
    let (theirs_ns, ours_ns) = (format!("{id}-d"), format!("{id}-h"));
    let domain = format!("{}.example.com", case.recipe);
    let trees = work.join("trees");
    let ours = render(sources, &trees, case, &ours_ns, &domain);
    let theirs = render(sources, &trees, case, &theirs_ns, &domain);
    let generated: Vec<String> = theirs
        .iter()
        .flat_map(|r| r.stack.generated_secrets.iter().map(|g| g.name.clone()))
        .collect();
    let mut exact = BTreeSet::new();
    for r in [&ours, &theirs].into_iter().flatten() {
        exact.extend(r.stack.exact_names.secrets.iter().cloned());
        exact.extend(r.stack.exact_names.configs.iter().cloned());
    }
    let mut failures = Vec::new();

    // docker's side: a checkout at the commit, the shell's env, the generated secrets made.
    let checkout = work.join("checkouts").join(&id);
    std::fs::create_dir_all(checkout.parent().unwrap()).unwrap();
    git(
        work,
        &[
            "clone",
            "--quiet",
            "--no-checkout",
            &bare.display().to_string(),
            &checkout.display().to_string(),
        ],
    );
    git(
        &checkout,
        &[
            "-c",
            "advice.detachedHead=false",
            "checkout",
            "--quiet",
            &case.commit,
        ],
    );
    if let Some(o) = &case.option {
        // The operator's edit: the option's lines uncommented in place.
        let path = checkout.join(".env.sample");
        let mut lines: Vec<String> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        for (i, line) in &o.lines {
            lines[*i] = line.clone();
        }
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    }
    let env = ecosystem_env(&checkout, &theirs_ns, &domain);
    let files: Vec<String> = env
        .get("COMPOSE_FILE")
        .map(String::as_str)
        .unwrap_or("compose.yml")
        .split(':')
        .filter(|f| !f.is_empty())
        .map(str::to_string)
        .collect();
    for name in &generated {
        create_secret(name);
    }
    let mut cmd = Command::new(DOCKER);
    cmd.current_dir(&checkout)
        .env_clear()
        .envs(&env)
        .env("DOCKER_SERVICE_PREFER_OFFLINE_IMAGE", "1")
        .args(["stack", "deploy", "--resolve-image", "never"]);
    if let Some(host) = std::env::var_os("DOCKER_HOST") {
        cmd.env("DOCKER_HOST", host);
    }
    for f in &files {
        cmd.arg("-c").arg(f);
    }
    let out = cmd.arg(&theirs_ns).output().unwrap();
    // The volume order current docker/cli gives, for allowed difference A.
    let current_order = current_cli_volume_order(&checkout, &env, &files);
    let docker_side = if out.status.success() {
        Ok(snapshot(&theirs_ns, &exact))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    };
    remove(swarm, &theirs_ns).await;
    for name in &generated {
        let out = docker(&["secret", "rm", name]);
        if !out.status.success() {
            failures.push(format!(
                "{}: cannot remove pre-created secret {}: {}",
                case.label(),
                name,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }

    // hearth's side: the rendered stack, applied as hearth applies a run's stack.
    let owner = Owner::operator(&ours_ns)
        .with_label(TEST_LABEL.0, TEST_LABEL.1)
        .with_label(RUN_LABEL, RUN);
    let hearth_side = match &ours {
        Err(e) => Err(e.clone()),
        Ok(r) => match stack::apply(swarm, &r.stack, &owner, &ApplyOptions::default()).await {
            Ok(_) => Ok(snapshot(&ours_ns, &exact)),
            Err(e) => Err(format!("apply failed: {}", chain(&e))),
        },
    };
    remove(swarm, &ours_ns).await;

    // The same render as a WarmApp applies it (its version label in every task template, and
    // start-first updates where the recipe chose no order), in a third namespace.
    let warm_ns = format!("{id}-w");
    let warm_side = match render(sources, &trees, case, &warm_ns, &domain) {
        Ok(r) if case.warm => {
            let spec = warmapp::prepare(r.stack.clone(), &case.version);
            let owner = Owner::operator(&warm_ns)
                .with_label(TEST_LABEL.0, TEST_LABEL.1)
                .with_label(RUN_LABEL, RUN);
            let side = match stack::apply(swarm, &spec, &owner, &ApplyOptions::default()).await {
                Ok(_) => Ok(snapshot(&warm_ns, &exact)),
                Err(e) => Err(format!("apply failed: {}", chain(&e))),
            };
            remove(swarm, &warm_ns).await;
            Some((r, side))
        }
        _ => None,
    };

    let label = case.label();
    if let Some(dir) = std::env::var_os("HEARTH_DIFFERENTIAL_DUMP") {
        // Both raw snapshots, for reading what was compared.
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir).unwrap();
        let file = label.replace([' ', '/', '(', ')'], "_");
        for (side, snap) in [("docker", &docker_side), ("hearth", &hearth_side)] {
            if let Ok(snap) = snap {
                let as_json: BTreeMap<String, &Value> = snap
                    .iter()
                    .map(|((k, n), v)| (format!("{k} {n}"), v))
                    .collect();
                let text = serde_json::to_string_pretty(&as_json).unwrap();
                std::fs::write(dir.join(format!("{file}.{side}.json")), text).unwrap();
            }
        }
    }
    let refusal = EXPECTED_REFUSALS.iter().find(|r| {
        r.recipe == case.recipe && Some(r.option) == case.option.as_ref().map(|o| o.name.as_str())
    });
    let line = match (&docker_side, &hearth_side, &ours) {
        (Ok(d), Ok(h), Ok(ours)) => {
            let expected = expected_delta(d, ours, &ours_ns, &case.version);
            let differences = compare(d, h);
            let reordered = mount_order_allowed(d, h, &current_order);
            let (allowed, differences): (Vec<_>, Vec<_>) = differences.into_iter().partition(|x| {
                x.kind == "service"
                    && reordered.contains(&x.name)
                    && x.path.starts_with(".TaskTemplate.ContainerSpec.Mounts[")
            });
            let allowed: BTreeSet<String> = allowed.iter().map(|x| x.name.clone()).collect();
            let found: BTreeSet<String> = differences.iter().map(Difference::to_string).collect();
            for extra in found.difference(&expected) {
                failures.push(format!("{label}: unexpected difference: {extra}"));
            }
            for missing in expected.difference(&found) {
                failures.push(format!("{label}: expected difference not found: {missing}"));
            }
            // A generated secret: its name and the stack label, nothing else (no value in
            // the spec, no hearth label left after the normaliser's top-level drop).
            for g in &ours.stack.generated_secrets {
                let name = g.name.replace(&ours_ns, STACK);
                let want = json!({"Name": name, "Labels": {NAMESPACE_LABEL: STACK}});
                let have = h.get(&("secret".to_string(), name.clone()));
                if have != Some(&want) {
                    failures.push(format!(
                        "{label}: generated secret {name} is {have:?}, expected {want}"
                    ));
                }
            }
            let mut warm_note = String::new();
            if let Some((warm, side)) = &warm_side {
                match side {
                    Ok(w) => {
                        let mut expected = expected_delta(d, warm, &warm_ns, &case.version);
                        expected.extend(warm_delta(d, warm, &warm_ns, &case.version));
                        let found: BTreeSet<String> =
                            compare(d, w).iter().map(Difference::to_string).collect();
                        for extra in found.difference(&expected) {
                            failures.push(format!(
                                "{label} as a WarmApp: unexpected difference: {extra}"
                            ));
                        }
                        for missing in expected.difference(&found) {
                            failures.push(format!(
                                "{label} as a WarmApp: expected difference not found: {missing}"
                            ));
                        }
                        warm_note =
                            format!("; as a WarmApp: expected delta {} line(s)", expected.len());
                    }
                    Err(e) => failures.push(format!("{label} as a WarmApp: hearth refused: {e}")),
                }
            }
            let count = |kind: &str| d.keys().filter(|(k, _)| k == kind).count();
            format!(
                "{label}: -c {}; docker created {} services, {} networks, {} volumes, {} configs \
                 (+{} pre-created secrets); expected delta {} line(s); mount order (A) of {:?}; \
                 other differences {}{warm_note}",
                files.join(" -c "),
                count("service"),
                count("network"),
                count("volume"),
                count("config"),
                generated.len(),
                expected.len(),
                allowed,
                found.difference(&expected).count(),
            )
        }
        (Err(d), Err(h), _) => match refusal {
            Some(r) if d.contains(r.docker) && h.contains(r.hearth) => {
                format!(
                    "{label}: both refused, as expected ({}); docker: {d}; hearth: {h}",
                    r.why
                )
            }
            _ => {
                failures.push(format!("{label}: both refused; docker: {d}; hearth: {h}"));
                format!("{label}: both refused")
            }
        },
        (Ok(_), Err(h), _) | (Ok(_), Ok(_), Err(h)) => {
            failures.push(format!("{label}: docker deployed, hearth refused: {h}"));
            format!("{label}: hearth refused")
        }
        (Err(d), Ok(_), _) => {
            failures.push(format!("{label}: hearth deployed, docker refused: {d}"));
            format!("{label}: docker refused")
        }
    };
    eprintln!("{line} [{:.1?}]", started.elapsed());
    Outcome {
        line,
        failures,
        namespaces: [theirs_ns, ours_ns, warm_ns],
    }
}

/// What `warmapp::prepare` adds to `rendered` (in `namespace`), as `kind name path docker hearth`
/// lines: on every service the container label `hearth.warm-version=<version>`, and where the
/// recipe chose no order and the service publishes no host-mode port, `start-first` updates and
/// rollbacks (Docker's stored default being `stop-first`). Nothing else.
fn warm_delta(
    docker_side: &Snapshot,
    rendered: &Rendered,
    namespace: &str,
    version: &str,
) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let version = Value::String(version.into()).to_string();
    for s in &rendered.stack.services {
        let name = s.name.clone().unwrap_or_default().replace(namespace, STACK);
        out.insert(format!(
            "service {name} .TaskTemplate.ContainerSpec.Labels.{WARM_VERSION}: docker absent / hearth {version}"
        ));
        let host_ports = s
            .endpoint_spec
            .as_ref()
            .and_then(|e| e.ports.as_ref())
            .is_some_and(|p| p.iter().any(|p| p.publish_mode == Some(PublishMode::Host)));
        let mut lines = BTreeMap::new();
        if let Some(spec) = docker_side.get(&("service".to_string(), name.clone())) {
            flatten(spec, String::new(), &mut lines);
        }
        for (config, given) in [
            ("UpdateConfig", &s.update_config),
            ("RollbackConfig", &s.rollback_config),
        ] {
            if host_ports || given.as_ref().is_some_and(|c| c.order.is_some()) {
                continue;
            }
            let path = format!(".{config}.Order");
            let theirs = lines.get(&path).cloned().unwrap_or_else(|| "absent".into());
            out.insert(format!(
                "service {name} {path}: docker {theirs} / hearth \"start-first\""
            ));
        }
    }
    out
}

/// Per service (`<STACK>_<name>`), the volume targets in the order current docker/cli (28.2.2,
/// `/usr/local/bin/docker stack config`) gives after merging `files` with `env`.
fn current_cli_volume_order(
    dir: &Path,
    env: &BTreeMap<String, String>,
    files: &[String],
) -> BTreeMap<String, Vec<String>> {
    let mut cmd = Command::new(DOCKER_CURRENT);
    cmd.current_dir(dir)
        .env_clear()
        .envs(env)
        .args(["stack", "config"]);
    for f in files {
        cmd.arg("-c").arg(f);
    }
    let out = cmd.output().unwrap();
    if !out.status.success() {
        // Only used to allow a reordering; without it, none is allowed.
        eprintln!(
            "recipe_differential: {DOCKER_CURRENT} stack config failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return BTreeMap::new();
    }
    let config: Value = serde_saphyr::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap();
    let mut order = BTreeMap::new();
    for (name, service) in config["services"].as_object().into_iter().flatten() {
        let targets = service["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v["target"].as_str().map(str::to_string))
            .collect();
        order.insert(format!("{STACK}_{name}"), targets);
    }
    order
}

/// Allowed difference A (docs/DIFFERENTIAL.md): the services whose mounts differ in order only —
/// the same mounts on both sides — with hearth's order the one current docker/cli gives.
fn mount_order_allowed(
    docker_side: &Snapshot,
    hearth_side: &Snapshot,
    current: &BTreeMap<String, Vec<String>>,
) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for ((kind, name), d) in docker_side {
        let Some(h) = hearth_side.get(&(kind.clone(), name.clone())) else {
            continue;
        };
        let mounts = |v: &Value| -> Vec<Value> {
            v["TaskTemplate"]["ContainerSpec"]["Mounts"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        };
        let (dm, hm) = (mounts(d), mounts(h));
        if kind != "service" || dm == hm {
            continue;
        }
        let sorted = |m: &[Value]| {
            let mut m: Vec<String> = m.iter().map(Value::to_string).collect();
            m.sort();
            m
        };
        let targets: Vec<String> = hm
            .iter()
            .filter_map(|m| m["Target"].as_str().map(str::to_string))
            .collect();
        if sorted(&dm) == sorted(&hm) && current.get(name) == Some(&targets) {
            out.insert(name.clone());
        }
    }
    out
}

/// Every object labelled as this test's, by kind and name.
fn own_objects() -> Vec<String> {
    let filter = format!("label={RUN_LABEL}={RUN}");
    let mut out = Vec::new();
    for kind in ["service", "network", "volume", "secret", "config"] {
        let mut args = vec![kind, "ls", "--filter", &filter, "--format", "{{.Name}}"];
        if kind == "volume" {
            args = vec![kind, "ls", "-q", "--filter", &filter];
        }
        for name in docker_ok(&args).split_whitespace() {
            out.push(format!("{kind} {name}"));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 6)]
async fn hearth_deploys_every_recipe_at_every_tag_as_docker_stack_deploy_does() {
    let started = Instant::now();
    let Some(swarm) = real_swarm("recipe_differential").await else {
        return;
    };
    let Some(bundles) = bundles() else {
        return;
    };
    // The corpus differential and this test both create the external network `proxy`: one at a
    // time on this machine (also across test runs sharing the daemon).
    let lock = std::fs::File::create(std::env::temp_dir().join("hearth-stack-differential.lock"))
        .expect("create the lock file");
    lock.lock().expect("lock the lock file");
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().to_path_buf();

    // Fetch every recipe as hearth does: a `Recipe` on a file:// URL, mirrored by the git CLI.
    let sources = Arc::new(Sources::new(
        work.join("data/recipes"),
        None,
        Limits::default(),
    ));
    let mut declared = Vec::new();
    let mut bares = BTreeMap::new();
    for bundle in &bundles {
        let name = recipe_name(bundle);
        let bare = work.join("remotes").join(format!("{name}.git"));
        let out = Command::new("git")
            .args(["clone", "--quiet", "--bare"])
            .arg(bundle)
            .arg(&bare)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "clone {}: {}",
            bundle.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        declared.push(crd::Recipe::new(
            name.clone(),
            RecipeSpec {
                git: Some(GitSource {
                    url: format!("file://{}", bare.display()),
                    ..GitSource::default()
                }),
                ..RecipeSpec::default()
            },
        ));
        bares.insert(name, bare);
    }
    sources.declare(&declared);
    let mut cases: Vec<Case> = Vec::new();
    for (name, bare) in &bares {
        let published = sources
            .fetch(name)
            .await
            .unwrap_or_else(|e| panic!("fetching {name}: {}", chain(&e)));
        let tags: BTreeSet<String> = git(bare, &["tag"]).lines().map(str::to_string).collect();
        let versions: BTreeSet<String> = published.versions.iter().map(|v| v.tag.clone()).collect();
        assert_eq!(
            versions, tags,
            "{name}: every tag is a version (ignored: {:?})",
            published.ignored
        );
        let mut list: Vec<Case> = published
            .versions
            .iter()
            .map(|v| Case {
                recipe: name.clone(),
                tag: Some(v.tag.clone()),
                version: v.version.clone(),
                commit: v.commit.clone(),
                option: None,
                warm: false,
            })
            .collect();
        if list.is_empty() {
            let head = published.head.clone().expect("a fetched recipe has a head");
            list.push(Case {
                recipe: name.clone(),
                tag: None,
                version: head[..8].to_string(),
                commit: head,
                option: None,
                warm: false,
            });
        }
        // At the newest version, also every option its `.env.sample` documents, one at a time.
        let newest = list.last_mut().unwrap();
        newest.warm = true;
        let newest = newest.clone();
        let sample = git(bare, &["show", &format!("{}:.env.sample", newest.commit)]);
        for option in documented_options(&sample) {
            list.push(Case {
                option: Some(option),
                warm: false,
                ..newest.clone()
            });
        }
        cases.extend(list);
    }

    if let Ok(only) = std::env::var("HEARTH_RECIPE_DIFFERENTIAL_ONLY") {
        // A subset, by a part of the case's label (for working on one difference).
        cases.retain(|c| c.label().contains(&only));
    }

    // The external networks the recipes name (`proxy`): fixed names, shared by every stack.
    // Which versions publish ports: they take turns (two stacks cannot publish one port).
    let mut networks = BTreeSet::new();
    let mut publishes = Vec::new();
    for case in &cases {
        let Ok(r) = render(
            &sources,
            &work.join("trees"),
            case,
            "hearth-test-rdiff-probe",
            "x.example.com",
        ) else {
            publishes.push(false);
            continue;
        };
        networks.extend(r.stack.externals.networks.iter().cloned());
        assert!(
            r.stack.externals.volumes.is_empty()
                && r.stack.externals.configs.is_empty()
                && r.stack.externals.secrets.is_empty(),
            "{}: externals besides networks and generated secrets: {:?}",
            case.label(),
            r.stack.externals
        );
        publishes.push(r.stack.services.iter().any(|s| {
            s.endpoint_spec
                .as_ref()
                .and_then(|e| e.ports.as_ref())
                .is_some_and(|p| !p.is_empty())
        }));
    }
    let mut created_networks = Vec::new();
    for n in &networks {
        if docker(&["network", "inspect", n]).status.success() {
            continue;
        }
        docker_ok(&[
            "network",
            "create",
            "--driver",
            "overlay",
            "--attachable",
            "--label",
            &format!("{}={}", TEST_LABEL.0, TEST_LABEL.1),
            "--label",
            &format!("{RUN_LABEL}={RUN}"),
            n,
        ]);
        created_networks.push(n.clone());
    }

    // Versions concurrently (at most CONCURRENCY at once); those publishing ports one at a time.
    let slots = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    let ports = Arc::new(tokio::sync::Mutex::new(()));
    let mut handles = Vec::new();
    for (case, publishes) in cases.iter().cloned().zip(publishes) {
        let (swarm, sources, work) = (swarm.clone(), Arc::clone(&sources), work.clone());
        let bare = bares[&case.recipe].clone();
        let (slots, ports) = (Arc::clone(&slots), Arc::clone(&ports));
        handles.push(tokio::spawn(async move {
            let _port_turn = if publishes {
                Some(ports.lock().await)
            } else {
                None
            };
            let _slot = slots.acquire().await.unwrap();
            run_case(&swarm, &sources, &work, &bare, &case).await
        }));
    }
    let mut outcomes = Vec::new();
    for h in handles {
        outcomes.push(h.await.expect("a version's task panicked"));
    }

    // A removed swarm network stays visible on the node for a moment: wait until it is gone.
    for n in created_networks.iter().rev() {
        let out = docker(&["network", "rm", n]);
        if !out.status.success() {
            eprintln!(
                "recipe_differential: cannot remove network {n}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            continue;
        }
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        while docker(&["network", "inspect", n]).status.success() && Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    let mut failures: Vec<String> = outcomes.iter().flat_map(|o| o.failures.clone()).collect();
    let mut residual: Vec<String> = own_objects();
    for o in &outcomes {
        for ns in &o.namespaces {
            residual.extend(leftovers_of(ns));
        }
    }
    if !residual.is_empty() {
        failures.push(format!("left behind: {}", residual.join(", ")));
    }
    let covered: Vec<String> = cases.iter().map(Case::label).collect();
    eprintln!(
        "\n{}\n{} recipe versions ({}) in {:.1} s",
        outcomes
            .iter()
            .map(|o| o.line.as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        covered.len(),
        covered.join(", "),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(outcomes.len(), covered.len());
    assert!(
        failures.is_empty(),
        "{} failure(s) between docker stack deploy and hearth:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
