#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use crd::recipe::GitSource;

use super::*;

pub(crate) fn sh(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "tag.gpgSign=false",
            "-c",
            "commit.gpgSign=false",
        ])
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const COMPOSE: &str = r#"version: "3.8"
services:
  app:
    image: nginx:${APP_VERSION:-1.0}
    environment:
      - LOG_LEVEL
    secrets: [api_key, salt]
    configs:
      - source: entry
        target: /entry.sh
    deploy:
      labels:
        - "coop-cloud.${STACK_NAME}.timeout=${TIMEOUT:-120}"
        - "coop-cloud.${STACK_NAME}.version=0.0.0-stale"
        - "traefik.http.routers.${STACK_NAME}.rule=Host(`${DOMAIN}`)"
configs:
  entry:
    name: ${STACK_NAME}_entry_${ENTRY_VERSION}
    file: entry.sh
secrets:
  api_key:
    external: true
    name: ${STACK_NAME}_api_key_${SECRET_API_KEY_VERSION:-v1}
  salt:
    external: true
    name: ${STACK_NAME}_salt_${SECRET_SALT_VERSION}
"#;

const OVERLAY: &str = r#"version: "3.8"
services:
  worker:
    image: busybox:${WORKER_VERSION:-1}
"#;

/// A recipe repository with tags 1.0.0+1.0, 1.1.0+1.1 and garbage, on branch main.
pub(crate) fn repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    sh(p, &["init", "-q", "-b", "main"]);
    std::fs::write(p.join("compose.yml"), COMPOSE).unwrap();
    std::fs::write(p.join("compose.worker.yml"), OVERLAY).unwrap();
    std::fs::write(p.join("entry.sh"), "#!/bin/sh\n").unwrap();
    std::fs::write(
        p.join(".env.sample"),
        "TYPE=demo\nDOMAIN=demo.example.com\nCOMPOSE_FILE=\"compose.yml\"\n#COMPOSE_FILE=\"$COMPOSE_FILE:compose.worker.yml\"\nLOG_LEVEL=info # the app's log level\nSECRET_API_KEY_VERSION=v1 # length=48\nSECRET_SALT_VERSION=v2\nENTRY_VERSION=v0\n",
    )
    .unwrap();
    std::fs::write(
        p.join("abra.sh"),
        "export ENTRY_VERSION=v3\nfoo() {\n  echo hi\n}\n",
    )
    .unwrap();
    sh(p, &["add", "-A"]);
    sh(p, &["commit", "-q", "-m", "one"]);
    sh(p, &["tag", "1.0.0+1.0"]);
    sh(p, &["tag", "not-a-version"]);
    std::fs::write(p.join("compose.yml"), COMPOSE.replace("1.0}", "1.1}")).unwrap();
    sh(p, &["commit", "-q", "-am", "two"]);
    sh(p, &["tag", "-a", "-m", "annotated", "1.1.0+1.1"]);
    dir
}

pub(crate) fn declared(url: &str) -> crd::Recipe {
    crd::Recipe::new(
        "demo",
        RecipeSpec {
            git: Some(GitSource {
                url: url.into(),
                ..GitSource::default()
            }),
            ..RecipeSpec::default()
        },
    )
}

fn request<'a>(version: &'a str, env: &'a BTreeMap<String, String>) -> RenderRequest<'a> {
    RenderRequest {
        recipe: "demo",
        version,
        stack: "hw-demo",
        domain: "hw-demo.test",
        env,
    }
}

async fn fetched() -> (tempfile::TempDir, tempfile::TempDir, Sources) {
    let repo = repo();
    let data = tempfile::tempdir().unwrap();
    let sources = Sources::new(data.path().join("recipes"), None, Limits::default());
    sources.declare(&[declared(&format!("file://{}", repo.path().display()))]);
    sources.fetch("demo").await.unwrap();
    (repo, data, sources)
}

#[tokio::test]
async fn a_fetch_lists_the_tags_as_versions_newest_last_and_ignores_garbage() {
    let (_repo, _data, sources) = fetched().await;
    let p = sources.published("demo").unwrap();
    let versions: Vec<_> = p.versions.iter().map(|v| v.version.as_str()).collect();
    assert_eq!(versions, ["1.0.0+1.0", "1.1.0+1.1"]);
    assert_eq!(p.ignored.len(), 1);
    assert_eq!(p.ignored[0].tag, "not-a-version");
    assert_eq!(p.head.as_deref().map(str::len), Some(40));
    assert_eq!(
        p.versions[1].commit,
        p.head.clone().unwrap(),
        "the annotated tag is peeled to its commit"
    );
    assert_eq!(sources.newest("demo", false).unwrap().as_str(), "1.1.0+1.1");
}

#[tokio::test]
async fn a_version_renders_at_its_tag_with_the_recipes_env_labels_and_generated_secrets() {
    let (_repo, _data, sources) = fetched().await;
    let env = BTreeMap::new();
    let old = sources.render(&request("1.0.0+1.0", &env)).unwrap();
    let new = sources.render(&request("1.1.0+1.1", &env)).unwrap();
    let image = |r: &Rendered| {
        r.stack.services[0]
            .task_template
            .as_ref()
            .unwrap()
            .container_spec
            .as_ref()
            .unwrap()
            .image
            .clone()
            .unwrap()
    };
    assert_eq!(image(&old), "nginx:1.0", "files are read at the tag");
    assert_eq!(image(&new), "nginx:1.1");
    let labels = new.stack.services[0].labels.clone().unwrap();
    assert_eq!(labels["coop-cloud.hw-demo.version"], "1.1.0+1.1");
    assert_eq!(
        labels["traefik.http.routers.hw-demo.rule"],
        "Host(`hw-demo.test`)"
    );
    assert_eq!(new.timeout, Some(Duration::from_secs(120)));
    assert_eq!(new.variables["ENTRY_VERSION"], "v3", "abra.sh exports win");
    assert_eq!(new.variables["LOG_LEVEL"], "info");
    assert_eq!(
        new.variables["DOMAIN"], "hw-demo.test",
        "hearth sets DOMAIN"
    );
    assert_eq!(new.stack.configs[0].name, "hw-demo_entry_v3");
    assert_eq!(
        new.stack.generated_secrets,
        [
            GeneratedSecret {
                name: "hw-demo_api_key_v1".into(),
                length: 48
            },
            GeneratedSecret {
                name: "hw-demo_salt_v2".into(),
                length: DEFAULT_SECRET_LENGTH
            },
        ]
    );
    assert!(new.stack.externals.secrets.is_empty());
    assert_ne!(old.digest, new.digest);
}

#[tokio::test]
async fn the_apps_env_overrides_and_accumulates_compose_file() {
    let (_repo, _data, sources) = fetched().await;
    let env = BTreeMap::from([
        (
            "COMPOSE_FILE".to_string(),
            "$COMPOSE_FILE:compose.worker.yml".to_string(),
        ),
        ("SECRET_SALT_VERSION".to_string(), "v3".to_string()),
        ("TIMEOUT".to_string(), "600".to_string()),
    ]);
    let r = sources.render(&request("1.1.0+1.1", &env)).unwrap();
    assert_eq!(
        r.variables["COMPOSE_FILE"],
        "compose.yml:compose.worker.yml"
    );
    let names: Vec<_> = r
        .stack
        .services
        .iter()
        .map(|s| s.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["hw-demo_app", "hw-demo_worker"]);
    assert_eq!(
        r.stack.generated_secrets[1].name, "hw-demo_salt_v3",
        "a version bump is a new secret"
    );
    assert_eq!(r.timeout, Some(Duration::from_secs(600)));
}

#[tokio::test]
async fn the_same_inputs_are_rendered_once() {
    let (_repo, _data, sources) = fetched().await;
    let env = BTreeMap::new();
    let a = sources.render(&request("1.1.0+1.1", &env)).unwrap();
    let b = sources.render(&request("1.1.0+1.1", &env)).unwrap();
    assert_eq!(a, b);
    assert_eq!(
        sources.stats(),
        SourceStats {
            hits: 1,
            renders: 1
        }
    );
    let other = BTreeMap::from([("LOG_LEVEL".to_string(), "debug".to_string())]);
    sources.render(&request("1.1.0+1.1", &other)).unwrap();
    assert_eq!(sources.stats().renders, 2);
}

#[tokio::test]
async fn a_failed_fetch_keeps_the_last_good_versions_and_a_restart_restores_them() {
    let (repo, data, sources) = fetched().await;
    let before = sources.published("demo").unwrap();
    std::fs::remove_dir_all(repo.path()).unwrap();
    let err = sources.fetch("demo").await.unwrap_err();
    assert!(err.to_string().contains("git fetch failed"), "{err}");
    assert_eq!(sources.published("demo").unwrap(), before);
    let env = BTreeMap::new();
    sources.render(&request("1.0.0+1.0", &env)).unwrap();

    // A new process: the status written after the good fetch brings the content back
    // without any fetch.
    let mut r = declared("file:///nowhere");
    r.spec = sources_spec(&sources);
    r.status.versions = before.versions.clone();
    r.status.commit = before.head.clone();
    let again = Sources::new(data.path().join("recipes"), None, Limits::default());
    again.declare(&[r]);
    assert_eq!(again.published("demo").unwrap().versions, before.versions);
    std::fs::remove_dir_all(data.path().join("recipes/trees")).unwrap();
    again.render(&request("1.0.0+1.0", &env)).unwrap();
}

fn sources_spec(s: &Sources) -> RecipeSpec {
    match s.source("demo").unwrap() {
        Source::Git { spec, .. } => *spec,
        Source::Dir(_) | Source::Checkout(_) => unreachable!(),
    }
}

#[tokio::test]
async fn a_recipe_not_fetched_yet_or_an_unknown_version_is_a_clear_error() {
    let data = tempfile::tempdir().unwrap();
    let sources = Sources::new(data.path(), None, Limits::default());
    sources.declare(&[declared("file:///nowhere")]);
    let env = BTreeMap::new();
    let err = sources.render(&request("1.0.0", &env)).unwrap_err();
    assert!(matches!(err, Error::RecipeNotFetched { .. }), "{err}");
    let (_repo, _data, sources) = fetched().await;
    let err = sources.render(&request("9.0.0", &env)).unwrap_err();
    assert!(
        err.to_string()
            .contains("does not publish version \"9.0.0\""),
        "{err}"
    );
}

#[test]
fn the_tree_cache_keeps_at_most_its_limit() {
    let data = tempfile::tempdir().unwrap();
    let trees = data.path().join("trees");
    for i in 0..5 {
        std::fs::create_dir_all(trees.join(format!("c{i}"))).unwrap();
        std::thread::sleep(Duration::from_millis(10));
    }
    let sources = Sources::new(
        data.path(),
        None,
        Limits {
            max_trees: 3,
            ..Limits::default()
        },
    );
    sources.evict_trees(&trees, &trees.join("c0"));
    let mut left: Vec<_> = std::fs::read_dir(&trees)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left, ["c0", "c3", "c4"]);
}

fn labels(r: &Rendered) -> BTreeMap<String, String> {
    r.stack.services[0].labels.clone().unwrap_or_default()
}

fn image(r: &Rendered) -> String {
    r.stack.services[0]
        .task_template
        .as_ref()
        .unwrap()
        .container_spec
        .as_ref()
        .unwrap()
        .image
        .clone()
        .unwrap()
}

fn head(dir: &Path) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["rev-parse", "HEAD"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test]
async fn a_followed_branch_commit_renders_as_a_chaos_deploy_with_abras_labels() {
    let repo = repo();
    // Unreleased work on main after the last tag.
    std::fs::write(
        repo.path().join("compose.yml"),
        COMPOSE.replace("1.0}", "1.2-dev}"),
    )
    .unwrap();
    sh(repo.path(), &["commit", "-q", "-am", "wip"]);
    let tip = head(repo.path());
    let data = tempfile::tempdir().unwrap();
    let sources = Sources::new(data.path(), None, Limits::default());
    let mut r = declared(&format!("file://{}", repo.path().display()));
    r.spec.git.as_mut().unwrap().git_ref = Some(crd::recipe::GitRef {
        branch: "main".into(),
    });
    sources.declare(&[r]);
    sources.fetch("demo").await.unwrap();
    let env = BTreeMap::new();

    for at in ["HEAD", "main", &tip[..12]] {
        let chaos = sources.render_at(&request("1.1.0+1.1", &env), at).unwrap();
        assert_eq!(image(&chaos), "nginx:1.2-dev", "the branch commit's files");
        let l = labels(&chaos);
        assert_eq!(l["coop-cloud.hw-demo.chaos"], "true");
        assert_eq!(l["coop-cloud.hw-demo.chaos-version"], tip[..8]);
        assert_eq!(
            l["coop-cloud.hw-demo.version"], "0.0.0-stale",
            "abra keeps the compose file's version label on a chaos deploy"
        );
    }
    // The tag commit of the requested version is a release, not chaos.
    let tag_commit = sources.published("demo").unwrap().versions[1]
        .commit
        .clone();
    for rendered in [
        sources.render(&request("1.1.0+1.1", &env)).unwrap(),
        sources
            .render_at(&request("1.1.0+1.1", &env), &tag_commit)
            .unwrap(),
    ] {
        let l = labels(&rendered);
        assert_eq!(l["coop-cloud.hw-demo.version"], "1.1.0+1.1");
        assert!(!l.contains_key("coop-cloud.hw-demo.chaos"), "{l:?}");
        assert!(!l.contains_key("coop-cloud.hw-demo.chaos-version"), "{l:?}");
    }
    let err = sources
        .render_at(&request("1.1.0+1.1", &env), "0123456789abcdef")
        .unwrap_err();
    assert!(matches!(err, Error::CommitNotFetched { .. }), "{err}");
}

#[tokio::test]
async fn a_coop_cloud_checkout_renders_its_tags_like_the_git_recipe_and_its_work_tree_as_chaos() {
    let (repo, _data, git) = fetched().await;
    let data = tempfile::tempdir().unwrap();
    let path = Sources::new(data.path(), None, Limits::default());
    let mut r = declared("file:///unused");
    r.spec.git = None;
    r.spec.path = Some(repo.path().display().to_string());
    path.declare(&[r]);
    let env = BTreeMap::new();

    assert_eq!(path.newest("demo", false).unwrap().as_str(), "1.1.0+1.1");
    let versions: Vec<String> = path
        .versions("demo")
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(versions, ["1.0.0+1.0", "1.1.0+1.1"]);
    for v in ["1.0.0+1.0", "1.1.0+1.1"] {
        let a = git.render(&request(v, &env)).unwrap();
        let b = path.render(&request(v, &env)).unwrap();
        assert_eq!(
            a.stack, b.stack,
            "{v}: a checkout renders like the git recipe"
        );
        assert_eq!(a.variables, b.variables);
    }

    // The checked-out commit, clean: chaos with its short SHA.
    let tip = head(repo.path());
    let clean = path.render_at(&request("1.1.0+1.1", &env), "HEAD").unwrap();
    assert_eq!(labels(&clean)["coop-cloud.hw-demo.chaos-version"], tip[..8]);
    // Uncommitted changes: the files as they are, `+U`.
    std::fs::write(
        repo.path().join("compose.yml"),
        COMPOSE.replace("1.0}", "9.9}"),
    )
    .unwrap();
    let dirty = path.render_at(&request("1.1.0+1.1", &env), "HEAD").unwrap();
    assert_eq!(image(&dirty), "nginx:9.9");
    assert_eq!(
        labels(&dirty)["coop-cloud.hw-demo.chaos-version"],
        format!("{}+U", &tip[..8])
    );
    assert_eq!(labels(&dirty)["coop-cloud.hw-demo.chaos"], "true");
    // A published version is still its tag's files, whatever the work tree holds.
    assert_eq!(
        image(&path.render(&request("1.1.0+1.1", &env)).unwrap()),
        "nginx:1.1"
    );
}

#[tokio::test]
async fn a_checkout_without_git_is_unreleased_content_rendered_with_chaos_labels() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(
        p.join("compose.yml"),
        COMPOSE.replace("0.0.0-stale", "2.0.0+1.0"),
    )
    .unwrap();
    std::fs::write(p.join("entry.sh"), "#!/bin/sh\n").unwrap();
    std::fs::write(
        p.join(".env.sample"),
        "SECRET_SALT_VERSION=v1\nENTRY_VERSION=v1\n",
    )
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    let sources = Sources::new(data.path(), None, Limits::default());
    let mut r = declared("file:///unused");
    r.spec.git = None;
    r.spec.path = Some(p.display().to_string());
    sources.declare(&[r]);
    let env = BTreeMap::new();

    assert_eq!(sources.newest("demo", false).unwrap().as_str(), "2.0.0+1.0");
    let a = sources.render(&request("2.0.0+1.0", &env)).unwrap();
    let l = labels(&a);
    assert_eq!(l["coop-cloud.hw-demo.chaos"], "true");
    let chaos = l["coop-cloud.hw-demo.chaos-version"].clone();
    assert_eq!(chaos.len(), 10, "{chaos}");
    assert!(chaos.ends_with("+U"), "{chaos}");
    assert_eq!(l["coop-cloud.hw-demo.version"], "2.0.0+1.0");
    // Same files, same inputs: answered from the cache; a changed file is a new render.
    let before = sources.stats();
    assert_eq!(sources.render(&request("2.0.0+1.0", &env)).unwrap(), a);
    assert_eq!(sources.stats().hits, before.hits + 1);
    std::fs::write(p.join("entry.sh"), "#!/bin/sh\necho changed\n").unwrap();
    let b = sources.render(&request("2.0.0+1.0", &env)).unwrap();
    assert_ne!(b.digest, a.digest);
    assert_ne!(labels(&b)["coop-cloud.hw-demo.chaos-version"], chaos);
    let err = sources.render(&request("1.0.0", &env)).unwrap_err();
    assert!(matches!(err, Error::VersionNotPublished { .. }), "{err}");
}

#[test]
fn a_path_to_a_recipe_yml_directory_keeps_working() {
    let data = tempfile::tempdir().unwrap();
    let sources = Sources::new(data.path(), None, Limits::default());
    let mut r = declared("file:///unused");
    r.spec.git = None;
    r.spec.path = Some(
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/examples/catalogue/webapp")
            .display()
            .to_string(),
    );
    r.metadata.name = "webapp".into();
    sources.declare(&[r]);
    let env = BTreeMap::new();
    let rendered = sources
        .render(&RenderRequest {
            recipe: "webapp",
            version: "1.1.0",
            stack: "hw-web",
            domain: "hw-web.test",
            env: &env,
        })
        .unwrap();
    assert_eq!(image(&rendered), "hearth-fixture/webapp:1.1.0");
}
