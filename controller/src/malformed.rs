//! The table of hand-written malformed inputs (issue 7, item 5): each compose file, state file and nightly schedule below is refused with exactly the error text it lists.
//!
//! Each entry asserts the whole message, so file:line:col and the field path are checked
//! where the input has them. A rejected state file is applied over a store that holds a good
//! one, and the store must be unchanged afterwards (the desired state in force stays).
//! The API bodies' table is in tests/tests/fuzz_api.rs (it needs a running daemon).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crd::{DepProvider, SlotPool, WarmApp};
use state::Store;

use crate::{compose, nightly, statefile};

struct NoFiles;

impl compose::Files for NoFiles {
    fn read(&self, _path: &Path) -> std::io::Result<Vec<u8>> {
        Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no such file",
        ))
    }
}

fn compose_error(text: &str) -> String {
    let env = BTreeMap::from([("SET".to_string(), "1".to_string())]);
    let sources = [compose::Source {
        name: "c.yml".into(),
        text: text.into(),
    }];
    match compose::translate(
        &sources,
        &compose::Options {
            stack: "st",
            env: &env,
            working_dir: PathBuf::from("/w"),
            files: &NoFiles,
        },
    ) {
        Ok(_) => "accepted".into(),
        Err(e) => e.to_string(),
    }
}

/// `depth` nested flow sequences.
fn nested(depth: usize) -> String {
    format!(
        "services:\n  web:\n    image: a\n    labels: {}{}\n",
        "[".repeat(depth),
        "]".repeat(depth)
    )
}

/// A "billion laughs" alias bomb under `key:`.
fn alias_bomb(prefix: &str) -> String {
    let mut s = format!("{prefix}a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let p = i - 1;
        s.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    s
}

/// (what, compose file); the expected errors are in [`COMPOSE_EXPECTED`].
fn compose_table() -> Vec<(&'static str, String)> {
    vec![
        (
            "yaml syntax error",
            "services:\n  web:\n    image: [a\n".into(),
        ),
        (
            "wrong type",
            "services:\n  web:\n    image: a\n    deploy:\n      replicas: two\n".into(),
        ),
        (
            "unknown field",
            "services:\n  web:\n    image: a\n    imagee: b\n".into(),
        ),
        (
            "bad duration",
            "services:\n  web:\n    image: a\n    stop_grace_period: 10 parsecs\n".into(),
        ),
        (
            "bad version",
            "version: '2.4'\nservices:\n  web:\n    image: a\n".into(),
        ),
        (
            "duplicate key",
            "services:\n  web:\n    image: a\n    image: b\n".into(),
        ),
        (
            "oversized file",
            format!("services: {{}}\n{}", "# padding\n".repeat(450_000)),
        ),
        ("deeply nested", nested(200)),
        (
            "alias bomb",
            alias_bomb("services:\n  web:\n    image: a\nx-bomb:\n  ").replace("\na", "\n  a"),
        ),
        (
            "unsupported feature: extends",
            "services:\n  web:\n    image: a\n    extends: base\n".into(),
        ),
        (
            "unsupported feature: cluster volume",
            "services:\n  web:\n    image: a\n    volumes:\n      - type: cluster\n        source: v\n        target: /v\nvolumes:\n  v: {}\n".into(),
        ),
        (
            "required variable unset",
            "services:\n  web:\n    image: a\n    environment:\n      PW: ${DB_PASSWORD:?set the db password}\n".into(),
        ),
        (
            "bad interpolation syntax",
            "services:\n  web:\n    image: \"a:${SET\"\n".into(),
        ),
        (
            "undefined reference",
            "services:\n  web:\n    image: a\n    networks: [back]\n".into(),
        ),
        (
            "bad port",
            "services:\n  web:\n    image: a\n    ports: ['80:80:80:80']\n".into(),
        ),
    ]
}

const GOOD_STATE: &str = "\
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

/// (what, state file); the expected errors are in [`STATE_EXPECTED`].
fn state_table() -> Vec<(&'static str, String)> {
    let pool = |spec: &str| {
        format!("apiVersion: hearth/v1\nkind: SlotPool\nmetadata:\n  name: ci\nspec:\n{spec}")
    };
    vec![
        (
            "yaml syntax error",
            "apiVersion: hearth/v1\nkind: WarmApp\nmetadata: {name: web\n".into(),
        ),
        ("wrong type", pool("  slots: many\n  portBase: 20000\n")),
        (
            "unknown field",
            GOOD_STATE.replace("  recipe: webapp", "  recpie: webapp"),
        ),
        (
            "bad duration",
            pool("  slots: 2\n  portBase: 20000\n  waitTimeout: soon\n"),
        ),
        (
            "bad version",
            GOOD_STATE.replace("version: 1.0.0", "version: not-a-version"),
        ),
        (
            "duplicate names",
            format!(
                "{GOOD_STATE}---\n{}",
                pool("  slots: 3\n  portBase: 21000\n")
            ),
        ),
        (
            "duplicate key",
            pool("  slots: 2\n  slots: 3\n  portBase: 20000\n"),
        ),
        (
            "oversized file",
            format!("{GOOD_STATE}{}", "# padding\n".repeat(110_000)),
        ),
        (
            "deeply nested",
            format!(
                "apiVersion: hearth/v1\nkind: WarmApp\nmetadata:\n  name: web\n  labels: {}{}\n",
                "[".repeat(200),
                "]".repeat(200)
            ),
        ),
        ("alias bomb", alias_bomb("")),
        (
            "a Run in the state file",
            "apiVersion: hearth/v1\nkind: Run\nmetadata:\n  name: r\nspec: {}\n".into(),
        ),
        ("not a mapping", "- just\n- a list\n".into()),
    ]
}

/// The whole error each state file of [`state_table`] gets.
const STATE_EXPECTED: &[(&str, &str)] = &[
    (
        "yaml syntax error",
        "state file state.yml rejected (1 problem); nothing was applied\n  state.yml:3:11: unclosed bracket '{'",
    ),
    (
        "wrong type",
        "state file state.yml rejected (1 problem); nothing was applied\n  state.yml:6:10: SlotPool/ci: spec.slots: invalid u32",
    ),
    (
        "unknown field",
        "state file state.yml rejected (1 problem); nothing was applied\n  state.yml:6:3: WarmApp/web: spec.recpie: unknown field `recpie`, expected one of recipe, version, domain, health, provider, promote, allowDowngrade, refresh, env, promoteCandidates, content",
    ),
    (
        "bad duration",
        "state file state.yml rejected (1 problem); nothing was applied\n  state.yml:8:16: SlotPool/ci: spec.waitTimeout: invalid duration \"soon\": expected number at 0 (write e.g. \"90s\" or \"2h 30m\")",
    ),
    (
        "bad version",
        "state file state.yml rejected (1 problem); nothing was applied\n  state.yml:7:12: WarmApp/web: spec.version: version \"not-a-version\": recipe part \"not-a-version\" is not a semver version like 1.2.3 (unexpected character 'n' while parsing major version number)",
    ),
    (
        "duplicate names",
        "state file state.yml rejected (1 problem); nothing was applied\n  state.yml:20:9: SlotPool/ci: metadata.name: duplicate SlotPool name (first at resource 2)",
    ),
    (
        "duplicate key",
        "state file state.yml rejected (1 problem); nothing was applied\n  state.yml:7:3: duplicate mapping key: slots",
    ),
    (
        "oversized file",
        "state file state.yml rejected (1 problem); nothing was applied\n  state.yml:1:1: file is 1100195 bytes, more than the 1048576-byte limit",
    ),
    (
        "deeply nested",
        "state file state.yml rejected (1 problem); nothing was applied\n  state.yml:5:41: budget breached: Depth { depth: 33 }",
    ),
    (
        "alias bomb",
        "state file state.yml rejected (1 problem); nothing was applied\n  state.yml:5:45: budget breached: Nodes { nodes: 100001 } at line 1, column 22 (defined at line 4, column 9) (used at line 5, column 45)",
    ),
    (
        "a Run in the state file",
        "state file state.yml rejected (1 problem); nothing was applied\n  state.yml:2:7: Run/r: kind: a Run cannot be declared in an operator state file (runs are created by `hearth run`); allowed kinds: WarmApp, DepProvider, SlotPool, Recipe",
    ),
    (
        "not a mapping",
        "state file state.yml rejected (1 problem); nothing was applied\n  state.yml:1:1: a document must be a mapping (a resource)",
    ),
];

/// The whole error each compose file of [`compose_table`] gets.
const COMPOSE_EXPECTED: &[(&str, &str)] = &[
    (
        "yaml syntax error",
        "c.yml:3:12: unclosed bracket '['",
    ),
    (
        "wrong type",
        "c.yml:5:17: services.web.deploy.replicas: must be an integer, not string",
    ),
    (
        "unknown field",
        "c.yml:4:5: services.web.imagee: unknown field",
    ),
    (
        "bad duration",
        "c.yml:4:24: services.web.stop_grace_period: unknown unit \" parsecs\" in duration \"10 parsecs\"",
    ),
    (
        "bad version",
        "c.yml:1:10: version: unsupported Compose file version: 2.4; docker stack deploy reads versions 3.0 to 3.13",
    ),
    (
        "duplicate key",
        "c.yml:4:5: duplicate mapping key: image",
    ),
    (
        "oversized file",
        "c.yml:1:1: file is 4500013 bytes, more than the 4194304-byte limit",
    ),
    (
        "deeply nested",
        "c.yml:4:42: budget breached: Depth { depth: 33 }",
    ),
    (
        "alias bomb",
        "c.yml:9:27: budget breached: Nodes { nodes: 50001 } at line 5, column 30 (defined at line 8, column 11)",
    ),
    (
        "unsupported feature: extends",
        "c.yml:4:5: services.web.extends: forbidden: Support for `extends` is not implemented yet.",
    ),
    (
        "unsupported feature: cluster volume",
        "c.yml:5:9: services.web.volumes[0].type: cluster volumes need Engine API 1.42; hearth targets 1.41 and does not support them",
    ),
    (
        "required variable unset",
        "c.yml:5:11: services.web.environment.PW: required variable DB_PASSWORD is missing a value: set the db password",
    ),
    (
        "bad interpolation syntax",
        "c.yml:3:12: services.web.image: invalid interpolation format: \"a:${SET\"; you may need to escape any $ with another $",
    ),
    (
        "undefined reference",
        "c.yml:4:16: services.web.networks.back: undefined network \"back\"",
    ),
    (
        "bad port",
        "c.yml:4:13: services.web.ports[0]: invalid IP address: 80:80",
    ),
];

async fn snapshot(store: &Store) -> String {
    let w = store.list::<WarmApp>().unwrap().items;
    let s = store.list::<SlotPool>().unwrap().items;
    let d = store.list::<DepProvider>().unwrap().items;
    serde_json::to_string(&(w, s, d)).unwrap()
}

fn expected(table: &[(&str, &'static str)], what: &str) -> &'static str {
    table
        .iter()
        .find(|(w, _)| *w == what)
        .map(|(_, e)| *e)
        .unwrap_or("<no expected error listed>")
}

/// Collects every mismatch, so one run shows them all.
fn report(mismatches: &[String]) {
    assert!(
        mismatches.is_empty(),
        "{} malformed inputs were not refused as listed:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

#[test]
fn every_malformed_compose_file_is_refused_with_its_listed_error() {
    let mut mismatches = Vec::new();
    for (what, text) in compose_table() {
        let expected = expected(COMPOSE_EXPECTED, what);
        // On its own thread (a 2 MiB stack, as tokio's workers have) with a deadline.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(compose_error(&text)));
        let got = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|e| format!("no answer within 30 s ({e})"));
        if got != expected {
            mismatches.push(format!(
                "{what}:\n  expected {expected:?}\n  got      {got:?}"
            ));
        }
    }
    report(&mismatches);
}

#[tokio::test]
async fn every_malformed_state_file_is_refused_with_its_listed_error_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.yml");
    let store = Store::in_memory().await.unwrap();
    std::fs::write(&path, GOOD_STATE).unwrap();
    statefile::apply_file(&store, &path, None, statefile::ApplyOptions::default())
        .await
        .unwrap();
    let before = snapshot(&store).await;
    let mut mismatches = Vec::new();
    for (what, text) in state_table() {
        let expected = expected(STATE_EXPECTED, what);
        std::fs::write(&path, &text).unwrap();
        let options = statefile::ApplyOptions {
            prune: true,
            dry_run: false,
        };
        let got = match tokio::time::timeout(
            Duration::from_secs(10),
            statefile::apply_file(&store, &path, None, options),
        )
        .await
        {
            Ok(Ok(_)) => "accepted".to_string(),
            Ok(Err(e)) => e
                .to_string()
                .replace(&path.display().to_string(), "state.yml"),
            Err(_) => "no answer within 10 s".to_string(),
        };
        if got != expected {
            mismatches.push(format!(
                "{what}:\n  expected {expected:?}\n  got      {got:?}"
            ));
        }
        if snapshot(&store).await != before {
            mismatches.push(format!("{what}: the store changed"));
        }
    }
    report(&mismatches);
}

#[test]
fn a_malformed_nightly_schedule_is_refused_with_its_listed_error() {
    let table = [
        ("bad cron", "61 * * * *", "Europe/Berlin", "nightly schedule \"61 * * * *\" rejected: Component error: Number out of bounds."),
        ("cron with too few fields", "0 3 *", "Europe/Berlin", "nightly schedule \"0 3 *\" rejected: Invalid pattern: Pattern must have between 5 and 7 fields."),
        ("unknown time zone", "0 3 * * *", "Mars/Olympus", "nightly time zone \"Mars/Olympus\" is not an IANA time zone name (e.g. Europe/Berlin, UTC)"),
    ];
    let mut mismatches = Vec::new();
    for (what, cron, tz, expected) in table {
        let got = match nightly::Schedule::parse(cron, tz, Duration::ZERO, 0) {
            Ok(_) => "accepted".to_string(),
            Err(e) => e.to_string(),
        };
        if got != expected {
            mismatches.push(format!(
                "{what}:\n  expected {expected:?}\n  got      {got:?}"
            ));
        }
    }
    report(&mismatches);
}
