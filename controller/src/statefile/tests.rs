#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use crd::{Kind, SlotPool, WarmApp};
use state::history::{reason, Query};
use state::Store;

use super::*;

const GOOD: &str = "\
apiVersion: hearth/v1
kind: WarmApp
metadata:
  name: web
spec:
  recipe: webapp
  version: 1.0.0
---
apiVersion: hearth/v1
kind: SlotPool
metadata:
  name: ci
spec:
  slots: 2
  portBase: 20000
";

fn problems(text: &str) -> (String, Vec<Problem>) {
    match parse("state.yml", text, None) {
        Err(e @ Error::FileRejected { .. }) => {
            let shown = e.to_string();
            let Error::FileRejected { problems, .. } = e else {
                unreachable!()
            };
            (shown, problems)
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
}

fn lines(text: &str) -> Vec<String> {
    let (shown, _) = problems(text);
    shown
        .lines()
        .skip(1)
        .map(|l| l.trim().to_string())
        .collect()
}

#[test]
fn a_redacted_diff_should_hide_env_values_and_keep_everything_else() {
    let app = |version: &str, env: &[(&str, &str)]| {
        let mut a: WarmApp = serde_json::from_value(serde_json::json!({
            "apiVersion": "hearth/v1", "kind": "WarmApp", "metadata": {"name": "w"},
            "spec": {"recipe": "webapp", "version": version}
        }))
        .unwrap();
        for (k, v) in env {
            a.spec.env.insert((*k).into(), (*v).into());
        }
        AnyResource::WarmApp(a)
    };
    let first = diff(
        &[app("1.0.0", &[])],
        &[app("1.1.0", &[("PW", "s3cret-a")])],
        false,
    );
    let second = diff(
        &[app("1.0.0", &[("PW", "s3cret-a")])],
        &[app("1.0.0", &[("PW", "s3cret-b")])],
        false,
    );
    for d in [&first, &second] {
        let plain = d.to_string();
        assert!(plain.contains("s3cret"), "{plain}");
        let shown = d.redacted().to_string();
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }
    assert!(first
        .redacted()
        .to_string()
        .contains("spec.version: \"1.0.0\" -> \"1.1.0\""));
}

#[test]
fn the_example_state_file_should_validate() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/state.yml");
    let set = load(&path, None).unwrap();
    let kinds: Vec<(Kind, &str)> = set.resources.iter().map(|r| (r.kind(), r.name())).collect();
    assert_eq!(
        kinds,
        vec![
            (Kind::WarmApp, "webapp"),
            (Kind::WarmApp, "sso"),
            (Kind::DepProvider, "sso"),
            (Kind::SlotPool, "ci"),
        ]
    );
    let providers = set
        .resources
        .iter()
        .filter(|r| matches!(r, AnyResource::WarmApp(w) if w.spec.provider))
        .count();
    assert_eq!(providers, 1);
}

#[test]
fn a_multi_document_file_should_parse_every_document() {
    let set = parse(
        "state.yml",
        &format!("# leading comment\n---\n{GOOD}---\n# only a comment\n"),
        None,
    )
    .unwrap();
    assert_eq!(set.resources.len(), 2);
    assert_eq!(set.resources[1].name(), "ci");
}

#[test]
fn malformed_yaml_should_be_rejected_with_its_position() {
    let text = "apiVersion: hearth/v1\nkind: WarmApp\nmetadata:\n  name: [web\nspec: {}\n";
    let l = lines(text);
    // The unclosed `[` of line 4 swallows line 5 up to its `:`, where the parser gives up.
    assert_eq!(
        l,
        vec!["state.yml:5:5: illegal placement of ':' indicator".to_string()]
    );
}

#[test]
fn an_unknown_field_should_be_rejected_with_its_position_and_path() {
    let text = "apiVersion: hearth/v1\nkind: WarmApp\nmetadata:\n  name: web\nspec:\n  recipe: webapp\n  versoin: 1.0.0\n";
    let l = lines(text);
    assert_eq!(l.len(), 1, "{l:?}");
    assert!(
        l[0].starts_with("state.yml:7:3: WarmApp/web: spec.versoin: unknown field `versoin`"),
        "{l:?}"
    );
}

#[test]
fn an_invalid_value_should_be_rejected_with_its_position_and_path() {
    let text = "\
apiVersion: hearth/v1
kind: WarmApp
metadata:
  name: web
spec:
  recipe: webapp
  version: 1.0.0
  health:
    http: { path: /healthz, expectedCodes: [200, 700] }
  env:
    STACK_NAME: x
";
    let l = lines(text);
    assert_eq!(
        l,
        vec![
            "state.yml:9:50: WarmApp/web: spec.health.http.expectedCodes[1]: must be an HTTP status code 100-599 (got 700)".to_string(),
            "state.yml:11:17: WarmApp/web: spec.env[\"STACK_NAME\"]: is set by hearth and cannot be overridden".to_string(),
        ]
    );
}

#[test]
fn problems_in_later_documents_should_carry_file_line_numbers() {
    let text = format!("{GOOD}---\napiVersion: hearth/v1\nkind: SlotPool\nmetadata:\n  name: Bad_Name\nspec:\n  slots: 0\n  portBase: 20000\n");
    let (shown, found) = problems(&text);
    let at: Vec<(u64, &str)> = found.iter().map(|p| (p.line, p.path.as_str())).collect();
    assert_eq!(
        at,
        vec![(20, "metadata.name"), (22, "spec.slots")],
        "{shown}"
    );
}

#[test]
fn a_bad_declared_tier_should_be_rejected_with_its_position_and_path() {
    let text = "\
apiVersion: hearth/v1
kind: SlotPool
metadata:
  name: ci
spec:
  slots: 1
  portBase: 20000
  tiers: [install, install, Up_grade]
---
apiVersion: hearth/v1
kind: Recipe
metadata:
  name: webapp
spec:
  path: /srv/recipes/webapp
  tiers:
    - install
    - \"no space\"
";
    let l = lines(text);
    assert_eq!(l.len(), 3, "{l:?}");
    assert!(
        l[0].starts_with("state.yml:8:20: SlotPool/ci: spec.tiers[1]: duplicate tier"),
        "{l:?}"
    );
    assert!(
        l[1].starts_with("state.yml:8:29: SlotPool/ci: spec.tiers[2]: "),
        "{l:?}"
    );
    assert!(
        l[2].starts_with("state.yml:18:7: Recipe/webapp: spec.tiers[1]: "),
        "{l:?}"
    );
}

#[test]
fn a_wrongly_typed_value_should_be_rejected_with_its_path() {
    let text = "apiVersion: hearth/v1\nkind: SlotPool\nmetadata:\n  name: ci\nspec:\n  slots: many\n  portBase: 20000\n";
    let (shown, found) = problems(text);
    assert_eq!(found.len(), 1, "{shown}");
    assert_eq!(
        (found[0].line, found[0].path.as_str()),
        (6, "spec.slots"),
        "{shown}"
    );
}

#[test]
fn duplicate_names_should_be_rejected_at_the_second_one() {
    let text = format!("{GOOD}---\napiVersion: hearth/v1\nkind: WarmApp\nmetadata:\n  name: web\nspec:\n  recipe: other\n  version: 2.0.0\n");
    let l = lines(&text);
    assert_eq!(l.len(), 1, "{l:?}");
    assert!(
        l[0].starts_with("state.yml:20:9: WarmApp/web: metadata.name: duplicate WarmApp name"),
        "{l:?}"
    );
}

#[test]
fn a_run_or_an_unknown_kind_should_be_rejected() {
    let text = "apiVersion: hearth/v1\nkind: Run\nmetadata: { name: r }\nspec: {}\n---\napiVersion: hearth/v2\nkind: WarmApp\n---\nkind: Gadget\napiVersion: hearth/v1\n";
    let (shown, found) = problems(text);
    let at: Vec<(u64, u64, &str)> = found
        .iter()
        .map(|p| (p.line, p.column, p.path.as_str()))
        .collect();
    assert_eq!(
        at,
        vec![(2, 7, "kind"), (6, 13, "apiVersion"), (9, 7, "kind")],
        "{shown}"
    );
    assert!(shown.contains("a Run cannot be declared in an operator state file"));
}

#[test]
fn status_and_store_owned_metadata_should_be_rejected() {
    let text = "apiVersion: hearth/v1\nkind: SlotPool\nmetadata:\n  name: ci\n  resourceVersion: 9\nspec:\n  slots: 1\n  portBase: 20000\nstatus: {}\n";
    let (shown, found) = problems(text);
    let paths: Vec<&str> = found.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, vec!["metadata.resourceVersion", "status"], "{shown}");
}

#[test]
fn a_dangling_reference_should_be_rejected_at_its_field() {
    let text = "apiVersion: hearth/v1\nkind: DepProvider\nmetadata:\n  name: sso\nspec:\n  mode: shared\n  warmApp: nowhere\n";
    let l = lines(text);
    assert_eq!(l.len(), 1);
    assert!(
        l[0].starts_with(
            "state.yml:7:12: DepProvider/sso: spec.warmApp: no WarmApp named \"nowhere\""
        ),
        "{l:?}"
    );
}

fn set(text: &str) -> DesiredSet {
    parse("state.yml", text, None).unwrap()
}

async fn snapshot(store: &Store) -> String {
    let w = store.list::<WarmApp>().unwrap().items;
    let s = store.list::<SlotPool>().unwrap().items;
    let d = store.list::<crd::DepProvider>().unwrap().items;
    serde_json::to_string(&(w, s, d)).unwrap()
}

#[tokio::test]
async fn applying_should_create_then_update_and_report_unchanged() {
    let store = Store::in_memory().await.unwrap();
    let diff = apply(&store, &set(GOOD), ApplyOptions::default())
        .await
        .unwrap();
    assert_eq!(diff.counts(), (2, 0, 0, 0, 0));
    assert_eq!(store.get::<WarmApp>("web").unwrap().spec.version, "1.0.0");

    let again = apply(&store, &set(GOOD), ApplyOptions::default())
        .await
        .unwrap();
    assert!(again.is_noop());
    assert_eq!(again.counts(), (0, 0, 0, 2, 0));

    // The controller wrote a status meanwhile: an update keeps it.
    let mut web = store.get::<WarmApp>("web").unwrap();
    web.status.observed_generation = 1;
    store.update_status(&web).await.unwrap();
    let bumped = GOOD.replace("version: 1.0.0", "version: 1.1.0");
    let diff = apply(&store, &set(&bumped), ApplyOptions::default())
        .await
        .unwrap();
    assert_eq!(diff.counts(), (0, 1, 0, 1, 0));
    let shown = diff.to_string();
    assert!(
        shown.contains("~ WarmApp/web (update)\n    spec.version: \"1.0.0\" -> \"1.1.0\""),
        "{shown}"
    );
    let web = store.get::<WarmApp>("web").unwrap();
    assert_eq!(
        (web.spec.version.as_str(), web.metadata.generation),
        ("1.1.0", 2)
    );
    assert_eq!(web.status.observed_generation, 1, "status kept");

    let applied = store
        .history(&Query::newest(10))
        .unwrap()
        .into_iter()
        .filter(|e| e.reason == APPLIED)
        .count();
    assert_eq!(applied, 3);
}

#[tokio::test]
async fn a_rejected_file_should_leave_the_store_exactly_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.yml");
    let store = Store::in_memory().await.unwrap();
    std::fs::write(&path, GOOD).unwrap();
    apply_file(&store, &path, None, ApplyOptions::default())
        .await
        .unwrap();
    let before = snapshot(&store).await;

    // Valid first document (a change), invalid second one: nothing may be applied.
    let bad = GOOD
        .replace("version: 1.0.0", "version: 2.0.0")
        .replace("slots: 2", "slots: 0");
    std::fs::write(&path, bad).unwrap();
    let err = apply_file(
        &store,
        &path,
        None,
        ApplyOptions {
            prune: true,
            dry_run: false,
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::FileRejected { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("state.yml:14:10: SlotPool/ci: spec.slots"),
        "{err}"
    );
    assert_eq!(snapshot(&store).await, before);

    let rejected = store
        .history(&Query::newest(10))
        .unwrap()
        .into_iter()
        .find(|e| e.reason == reason::REJECTED)
        .expect("a Rejected history entry");
    assert!(rejected.details["problems"][0]
        .as_str()
        .unwrap()
        .contains("spec.slots"));
}

#[tokio::test]
async fn objects_missing_from_the_file_should_be_deleted_only_with_prune() {
    let store = Store::in_memory().await.unwrap();
    apply(&store, &set(GOOD), ApplyOptions::default())
        .await
        .unwrap();
    let only_web = GOOD.split("---").next().unwrap();

    let diff = apply(&store, &set(only_web), ApplyOptions::default())
        .await
        .unwrap();
    assert_eq!(diff.counts(), (0, 0, 0, 1, 1));
    assert!(diff
        .to_string()
        .contains("! SlotPool/ci (not in the file; kept without --prune)"));
    assert!(store.get_opt::<SlotPool>("ci").unwrap().is_some());

    let dry = apply(
        &store,
        &set(only_web),
        ApplyOptions {
            prune: true,
            dry_run: true,
        },
    )
    .await
    .unwrap();
    assert_eq!(dry.counts(), (0, 0, 1, 1, 0));
    assert!(
        store.get_opt::<SlotPool>("ci").unwrap().is_some(),
        "dry run writes nothing"
    );

    let diff = apply(
        &store,
        &set(only_web),
        ApplyOptions {
            prune: true,
            dry_run: false,
        },
    )
    .await
    .unwrap();
    assert_eq!(diff.counts(), (0, 0, 1, 1, 0));
    assert!(store.get_opt::<SlotPool>("ci").unwrap().is_none());
}

#[tokio::test]
async fn a_file_that_strands_a_kept_object_should_be_rejected_without_prune() {
    let store = Store::in_memory().await.unwrap();
    let with_provider = "apiVersion: hearth/v1\nkind: WarmApp\nmetadata:\n  name: sso\nspec:\n  recipe: sso\n  version: 1.0.0\n  provider: true\n---\napiVersion: hearth/v1\nkind: DepProvider\nmetadata:\n  name: sso\nspec:\n  mode: shared\n  warmApp: sso\n";
    apply(&store, &set(with_provider), ApplyOptions::default())
        .await
        .unwrap();
    let before = snapshot(&store).await;
    // The file keeps the WarmApp but no longer as a provider, and drops the DepProvider: without
    // prune the DepProvider stays and would point at a WarmApp that is no provider.
    let not_a_provider = set(&with_provider
        .split("---")
        .next()
        .unwrap()
        .replace("  provider: true\n", ""));
    let err = apply(&store, &not_a_provider, ApplyOptions::default())
        .await
        .unwrap_err();
    let shown = err.to_string();
    assert!(
        shown.contains("DepProvider/sso (kept in the store, not in the file): spec.warmApp"),
        "{shown}"
    );
    assert_eq!(snapshot(&store).await, before);
    // With prune the DepProvider goes, which is consistent.
    apply(
        &store,
        &not_a_provider,
        ApplyOptions {
            prune: true,
            dry_run: false,
        },
    )
    .await
    .unwrap();
    assert!(store.get_opt::<crd::DepProvider>("sso").unwrap().is_none());
    assert!(!store.get::<WarmApp>("sso").unwrap().spec.provider);
}

async fn next_change(watch: &mut watch::FileWatch) -> bool {
    tokio::time::timeout(Duration::from_secs(10), watch.changed())
        .await
        .unwrap_or(false)
}

#[tokio::test]
async fn the_watcher_should_see_a_rename_replace_and_ignore_reads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.yml");
    std::fs::write(&path, GOOD).unwrap();
    let mut watch = watch::FileWatch::new(&path, Duration::from_millis(100)).unwrap();

    // What editors do: write a temporary file, rename it over the original.
    let tmp = dir.path().join(".state.yml.swp");
    std::fs::write(&tmp, GOOD.replace("1.0.0", "1.1.0")).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    assert!(next_change(&mut watch).await, "rename-replace noticed");

    // Reading the file (as a reload does) is not a change.
    let _ = std::fs::read_to_string(&path).unwrap();
    let quiet = tokio::time::timeout(Duration::from_millis(800), watch.changed()).await;
    assert!(quiet.is_err(), "a read must not count as a change");

    // Plain in-place writes count too.
    std::fs::write(&path, GOOD).unwrap();
    assert!(next_change(&mut watch).await);
}

#[tokio::test]
async fn follow_should_apply_at_start_and_after_every_change() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.yml");
    std::fs::write(&path, GOOD).unwrap();
    let store = Store::in_memory().await.unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let mut workers = crate::runtime::workers::Supervisor::new(
        stop.clone(),
        crate::runtime::workers::DEFAULT_POLICY,
        None,
    );
    workers.spawn(
        watch::Follower::new(
            store.clone(),
            path.clone(),
            None,
            ApplyOptions::default(),
            Duration::from_millis(50),
            None,
        )
        .unwrap(),
    );
    let wait_for = |want: &'static str| {
        let store = store.clone();
        async move {
            for _ in 0..200 {
                if store
                    .get_opt::<WarmApp>("web")
                    .unwrap()
                    .is_some_and(|w| w.spec.version == want)
                {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            false
        }
    };
    assert!(wait_for("1.0.0").await, "applied at start");
    let tmp = dir.path().join("state.yml.new");
    std::fs::write(&tmp, "not: [valid").unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    std::fs::write(&tmp, GOOD.replace("1.0.0", "2.0.0")).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    assert!(wait_for("2.0.0").await, "applied after the change");
    stop.cancel();
    workers.join().await;
}

#[test]
fn a_missing_field_should_point_at_the_mapping_that_lacks_it() {
    let text = "apiVersion: hearth/v1\nkind: WarmApp\nmetadata:\n  name: web\nspec:\n  recipe: a\n";
    let l = lines(text);
    assert_eq!(
        l,
        vec!["state.yml:6:3: WarmApp/web: spec: missing field `version`".to_string()]
    );
}

#[test]
fn a_duplicate_key_should_be_rejected_at_the_second_one() {
    let text = "apiVersion: hearth/v1\nkind: SlotPool\nmetadata:\n  name: ci\n  name: cd\nspec: { slots: 1, portBase: 20000 }\n";
    let l = lines(text);
    assert_eq!(
        l,
        vec!["state.yml:5:3: duplicate mapping key: name".to_string()]
    );
}

#[tokio::test]
async fn a_status_write_between_diff_and_write_should_not_fail_the_apply() {
    let store = Store::in_memory().await.unwrap();
    apply(&store, &set(GOOD), ApplyOptions::default())
        .await
        .unwrap();
    // The controller writes a status after apply read the store, before it commits.
    let bumped = set(&GOOD.replace("version: 1.0.0", "version: 1.1.0"));
    let status_write = |attempt: u32| {
        let store = store.clone();
        async move {
            if attempt == 1 {
                let mut web = store.get::<WarmApp>("web").unwrap();
                web.status.observed_generation = 1;
                store.update_status(&web).await.unwrap();
            }
        }
    };
    apply::apply_with(&store, &bumped, ApplyOptions::default(), &status_write)
        .await
        .unwrap();
    let web = store.get::<WarmApp>("web").unwrap();
    assert_eq!(web.spec.version, "1.1.0");
    assert_eq!(
        web.status.observed_generation, 1,
        "the status write is kept"
    );
}

#[tokio::test]
async fn an_apply_that_keeps_meeting_concurrent_writes_should_give_up_and_write_nothing() {
    let store = Store::in_memory().await.unwrap();
    apply(&store, &set(GOOD), ApplyOptions::default())
        .await
        .unwrap();
    let pool_before = store.get::<SlotPool>("ci").unwrap();
    let history_before = store.history(&Query::newest(100)).unwrap().len();
    let attempts = std::sync::atomic::AtomicU32::new(0);
    // A status write after every read: each commit finds a stale resourceVersion.
    let always = |_: u32| {
        attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let store = store.clone();
        async move {
            let mut web = store.get::<WarmApp>("web").unwrap();
            web.status.observed_generation += 1;
            store.update_status(&web).await.unwrap();
        }
    };
    let bumped = set(&GOOD
        .replace("version: 1.0.0", "version: 1.1.0")
        .replace("slots: 2", "slots: 3"));
    let err = apply::apply_with(&store, &bumped, ApplyOptions::default(), &always)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::StoreFailed(e) if e.is_conflict()),
        "{err}"
    );
    assert_eq!(attempts.load(std::sync::atomic::Ordering::Relaxed), 10);
    // Nothing of the file is in force (the pool's change neither), and no Applied entry.
    let web = store.get::<WarmApp>("web").unwrap();
    assert_eq!(
        (web.spec.version.as_str(), web.metadata.generation),
        ("1.0.0", 1)
    );
    assert_eq!(store.get::<SlotPool>("ci").unwrap(), pool_before);
    assert_eq!(
        store.history(&Query::newest(100)).unwrap().len(),
        history_before
    );
}

/// Promotes `web` to `to` through the real promoter (no reconciler: the spec write is what
/// the state file meets).
async fn promote_web(store: &Store, to: &str) {
    let promoter = crate::promote::Promoter::new(
        store.clone(),
        metrics::Metrics::new().unwrap(),
        std::sync::Arc::new(state::ManualClock::new(0)),
        None,
        crate::promote::Config::default(),
    );
    promoter
        .submit(crate::promote::Request {
            app: "web".into(),
            to: to.into(),
            source: crd::promotion::PromotionSource::Operator,
            run: None,
            allow_downgrade: false,
            content: None,
        })
        .await
        .unwrap();
    for _ in 0..200 {
        if store.get::<WarmApp>("web").unwrap().spec.version == to {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("promotion to {to} not written");
}

#[tokio::test]
async fn reapplying_or_editing_something_else_never_reverts_a_promotion() {
    let store = Store::in_memory().await.unwrap();
    apply(&store, &set(GOOD), ApplyOptions::default())
        .await
        .unwrap();
    promote_web(&store, "1.1.0").await;

    // The unchanged file: nothing written, the promoted version stays in force.
    let again = apply(&store, &set(GOOD), ApplyOptions::default())
        .await
        .unwrap();
    assert!(again.is_noop(), "{again}");
    assert!(
        again.to_string().contains(
            "spec.version: promoted 1.1.0 stays in force (the file still declares 1.0.0)"
        ),
        "{again}"
    );
    let web = store.get::<WarmApp>("web").unwrap();
    assert_eq!(web.spec.version, "1.1.0");
    assert_eq!(
        web.version_view(),
        crd::promotion::VersionView {
            declared: "1.0.0".into(),
            promoted: Some("1.1.0".into()),
            in_force: crd::promotion::InForce::Promoted
        }
    );

    // An unrelated edit: applied, the promotion kept.
    let edited = GOOD.replace(
        "  version: 1.0.0\n",
        "  version: 1.0.0\n  env:\n    LOG: debug\n",
    );
    let diff = apply(&store, &set(&edited), ApplyOptions::default())
        .await
        .unwrap();
    assert_eq!(diff.counts().1, 1, "{diff}");
    assert!(!diff.to_string().contains("\"1.0.0\""), "{diff}");
    let web = store.get::<WarmApp>("web").unwrap();
    assert_eq!(web.spec.version, "1.1.0");
    assert_eq!(web.spec.env.get("LOG").map(String::as_str), Some("debug"));
    assert_eq!(web.declared_version(), "1.0.0");
}

#[tokio::test]
async fn promoted_content_stays_with_its_version_and_goes_with_a_declared_one() {
    let store = Store::in_memory().await.unwrap();
    apply(&store, &set(GOOD), ApplyOptions::default())
        .await
        .unwrap();
    // A promotion of exact content (issue 16) at the declared version, as a green candidate
    // with the same version label writes it.
    let mut web = store.get::<WarmApp>("web").unwrap();
    web.spec.content = Some(crd::Content {
        kind: crd::ContentKind::WorkTree,
        tag: None,
        commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
        dirty: true,
        digest: "ab".repeat(32),
        run: Some("web-1".into()),
    });
    store.update(&web).await.unwrap();
    let again = apply(&store, &set(GOOD), ApplyOptions::default())
        .await
        .unwrap();
    assert!(
        again.is_noop(),
        "the unchanged file keeps the content: {again}"
    );
    assert!(store.get::<WarmApp>("web").unwrap().spec.content.is_some());
    // A declared new version renders that version from the catalogue: the content goes.
    let explicit = GOOD.replace("version: 1.0.0", "version: 1.2.0");
    apply(&store, &set(&explicit), ApplyOptions::default())
        .await
        .unwrap();
    let web = store.get::<WarmApp>("web").unwrap();
    assert_eq!(web.spec.version, "1.2.0");
    assert_eq!(web.spec.content, None);
}

#[tokio::test]
async fn a_changed_version_in_the_file_wins_over_a_promotion_and_is_recorded() {
    let store = Store::in_memory().await.unwrap();
    apply(&store, &set(GOOD), ApplyOptions::default())
        .await
        .unwrap();
    promote_web(&store, "1.1.0").await;
    let explicit = GOOD.replace("version: 1.0.0", "version: 0.9.0");
    let diff = apply(&store, &set(&explicit), ApplyOptions::default())
        .await
        .unwrap();
    let shown = diff.to_string();
    assert!(
        shown.contains("spec.version: \"1.1.0\" -> \"0.9.0\""),
        "{shown}"
    );
    assert!(
        shown.contains("the file's 0.9.0 overrides promoted 1.1.0"),
        "{shown}"
    );
    let web = store.get::<WarmApp>("web").unwrap();
    assert_eq!(web.spec.version, "0.9.0");
    assert!(web.status.promotion.is_none());
    assert_eq!(
        web.version_view().in_force,
        crd::promotion::InForce::Declared
    );
    let entries = store
        .history(&Query::newest(10).reason(VERSION_DECLARED))
        .unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].details["promoted"], "1.1.0");
    assert_eq!(entries[0].details["declared"], "0.9.0");

    // Declaring exactly the promoted version adopts it: nothing to write to the spec.
    let store = Store::in_memory().await.unwrap();
    apply(&store, &set(GOOD), ApplyOptions::default())
        .await
        .unwrap();
    promote_web(&store, "1.1.0").await;
    let adopted = GOOD.replace("version: 1.0.0", "version: 1.1.0");
    let diff = apply(&store, &set(&adopted), ApplyOptions::default())
        .await
        .unwrap();
    assert!(diff.is_noop(), "{diff}");
    let web = store.get::<WarmApp>("web").unwrap();
    assert_eq!(web.spec.version, "1.1.0");
    assert!(web.status.promotion.is_none());
    assert_eq!(web.declared_version(), "1.1.0");
}

#[test]
fn every_warm_app_of_the_example_state_file_should_render_from_the_example_catalogue() {
    let state = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/state.yml");
    let set = load(&state, None).unwrap();
    let catalogue = crate::catalogue::DirCatalogue::open(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/catalogue"),
    )
    .unwrap();
    let mut rendered = Vec::new();
    for resource in &set.resources {
        let crd::AnyResource::WarmApp(app) = resource else {
            continue;
        };
        let stack = app.stack_name().unwrap();
        let request = crate::catalogue::RenderRequest {
            recipe: &app.spec.recipe,
            version: &app.spec.version,
            stack: stack.as_str(),
            domain: "example.localhost",
            env: &app.spec.env,
        };
        let out = crate::catalogue::Catalogue::render(&catalogue, &request).unwrap();
        // Every probe names a service the recipe has.
        let probe_service = app
            .spec
            .health
            .http
            .as_ref()
            .and_then(|p| p.service.clone())
            .or_else(|| app.spec.health.tcp.as_ref().and_then(|p| p.service.clone()))
            .unwrap();
        let full = format!("{stack}_{probe_service}");
        assert!(
            out.stack
                .services
                .iter()
                .any(|s| s.name.as_deref() == Some(full.as_str())),
            "{full} not rendered"
        );
        rendered.push(out.stack.namespace);
    }
    assert_eq!(rendered, vec!["hw-webapp", "hp-sso"]);
}
