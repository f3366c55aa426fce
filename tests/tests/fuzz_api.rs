//! Fuzz target of the HTTP API's request bodies: every JSON body the handlers accept, as mutated valid bodies, arbitrary JSON values and arbitrary bytes, through the real router of a daemon on the simulated swarm.
//!
//! Every answer must come within the case deadline, must not be a 5xx, and every 4xx must be
//! the API's JSON error with a message. Short in the normal suite (256 cases per property);
//! long with `scripts/fuzz.sh` (`PROPTEST_CASES`).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use controller::cli::ci::{Client, Method};
use hearth_tests::daemon::SimDaemon;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Map, Value};

const STATE: &str = "apiVersion: hearth/v1\nkind: WarmApp\nmetadata:\n  name: web\nspec:\n  \
recipe: webapp\n  version: 1.1.0\n  health:\n    http:\n      service: app\n      port: 8080\n      \
path: /healthz\n---\napiVersion: hearth/v1\nkind: SlotPool\nmetadata:\n  name: ci\nspec:\n  \
slots: 2\n  portBase: 20000\n  portsPerSlot: 10\n  waitTimeout: 1s\n";

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

fn case_limit() -> Duration {
    Duration::from_millis(
        std::env::var("HEARTH_FUZZ_CASE_LIMIT_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(5_000),
    )
}

fn owner() -> Value {
    json!({"pid": 4_000_000, "processStartTime": 1, "host": "fuzz-host", "bootId": "fuzz-boot"})
}

/// Every route that reads a JSON body (the route, with `{id}` for a run id, and a valid body).
/// `POST /api/v1/nightly`, run heartbeat/finish and the DELETEs read no body; `POST
/// /api/v1/apply` reads a state file as text and is fuzzed with the same bodies.
fn routes() -> Vec<(&'static str, Value)> {
    vec![
        (
            "/api/v1/runs",
            json!({"recipe": "webapp", "version": "1.1.0", "gitRef": "main", "deps": [],
                   "pool": "ci", "ttl": "10m", "owner": owner(), "deploy": false,
                   "requiredTiers": ["unit"]}),
        ),
        (
            "/api/v1/runs/{id}/report",
            json!({"tiers": ["unit=pass", "e2e=fail:flaky"]}),
        ),
        ("/api/v1/runs/{id}/heartbeat", json!({})),
        ("/api/v1/runs/{id}/finish", json!({})),
        ("/api/v1/runs/{id}/deploy", json!({"from": "canonical"})),
        (
            "/api/v1/slotpools/{pool}/acquire",
            json!({"owner": owner(), "run": "r", "ttl": "1m"}),
        ),
        (
            "/api/v1/slotpools/{pool}/heartbeat",
            json!({"slot": 0, "owner": owner(), "ttl": "1m"}),
        ),
        (
            "/api/v1/slotpools/{pool}/release",
            json!({"slot": 0, "owner": owner()}),
        ),
        ("/api/v1/sweep", json!({"dryRun": true})),
        (
            "/api/v1/warmapps/web/promote",
            json!({"to": "2.0.0", "allowDowngrade": false}),
        ),
        ("/api/v1/warmapps/web/rollback", json!({})),
        ("/api/v1/apply?dryRun=true", json!({})),
        ("/api/v1/apply?file=x.yml&prune=false", json!({})),
    ]
}

/// Field names the bodies use, so random objects often hit real fields.
const KEYS: &[&str] = &[
    "recipe",
    "version",
    "gitRef",
    "deps",
    "pool",
    "ttl",
    "owner",
    "deploy",
    "requiredTiers",
    "tiers",
    "run",
    "slot",
    "pid",
    "processStartTime",
    "host",
    "bootId",
    "dryRun",
    "to",
    "allowDowngrade",
    "apiVersion",
    "kind",
    "",
];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::sample::select(KEYS).prop_map(str::to_string),
        1 => ".{0,10}",
    ]
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop_oneof![
            Just("1.1.0".to_string()),
            Just("10m".to_string()),
            Just("-1s".to_string()),
            Just("99999999999h".to_string()),
            Just("unit=pass".to_string()),
            Just("=".to_string()),
            Just("web".to_string()),
            ".{0,16}",
            "[ -~]{200,300}",
        ]
        .prop_map(Value::String),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((key(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A request body.
#[derive(Debug, Clone)]
enum BodyCase {
    /// The route's valid body with fields removed, replaced or added.
    Mutated(Vec<(String, Option<Value>)>),
    /// Any JSON value.
    Json(Value),
    /// Any bytes.
    Bytes(Vec<u8>),
    /// More than the body limit.
    Oversized(usize),
}

fn body_case() -> impl Strategy<Value = BodyCase> {
    prop_oneof![
        4 => proptest::collection::vec((key(), proptest::option::of(value())), 0..4)
            .prop_map(BodyCase::Mutated),
        3 => value().prop_map(BodyCase::Json),
        2 => proptest::collection::vec(any::<u8>(), 0..300).prop_map(BodyCase::Bytes),
        1 => (0usize..3).prop_map(BodyCase::Oversized),
    ]
}

fn render(case: &BodyCase, valid: &Value) -> Vec<u8> {
    match case {
        BodyCase::Mutated(edits) => {
            let mut v = valid.clone();
            for (k, new) in edits {
                if let Some(obj) = v.as_object_mut() {
                    // Edit the owner's fields too when the key is one of them.
                    let target = match obj.get_mut("owner").and_then(Value::as_object_mut) {
                        Some(o) if o.contains_key(k) => o,
                        _ => obj,
                    };
                    match new {
                        Some(x) => target.insert(k.clone(), x.clone()),
                        None => target.remove(k),
                    };
                }
            }
            serde_json::to_vec(&v).unwrap()
        }
        BodyCase::Json(v) => serde_json::to_vec(v).unwrap(),
        BodyCase::Bytes(b) => b.clone(),
        // Just over 64 KiB (the JSON limit), 1 MiB (the state-file limit), or far over.
        BodyCase::Oversized(i) => {
            let n = [64 * 1024 + 1, 1024 * 1024 + 1, 3 * 1024 * 1024][*i];
            let mut b = b"{\"tiers\": [\"".to_vec();
            b.resize(n, b'a');
            b
        }
    }
}

const CONTENT_TYPES: &[&str] = &[
    "application/json",
    "application/json; charset=utf-8",
    "text/plain",
    "",
    "application/x-www-form-urlencoded",
    "application/jsonx",
];

const RUN_IDS: &[&str] = &["{real}", "nope", "%ff", "..", "a%2Fb", "%00"];

const POOLS: &[&str] = &["ci", "ci", "ci", "nope", "a%2Fb", "%0a"];

/// Sends one case and checks the answer.
async fn check(
    client: &Client,
    path: &str,
    body: Vec<u8>,
    content_type: &str,
) -> Result<(), TestCaseError> {
    let sent = tokio::time::timeout(
        case_limit(),
        client.send(Method::POST, path, body, content_type),
    )
    .await;
    let (status, bytes) = match sent {
        Err(_) => {
            return Err(TestCaseError::fail(format!(
                "{path}: no answer within the case deadline"
            )))
        }
        // A transport failure is a failure, an oversized body's included: the API drains what a
        // refusing handler left unread, so a client still writing a 3 MiB body gets its 413,
        // never a reset (docs/RELIABILITY.md, API bodies).
        Ok(Err(e)) => {
            return Err(TestCaseError::fail(format!(
                "{path}: transport failed: {e}"
            )))
        }
        Ok(Ok(answer)) => answer,
    };
    let text = String::from_utf8_lossy(&bytes);
    if status >= 500 {
        return Err(TestCaseError::fail(format!("{path}: {status} {text}")));
    }
    if status >= 400 {
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| {
            TestCaseError::fail(format!("{path}: {status} answer is not JSON ({e}): {text}"))
        })?;
        let message = v["error"]["message"].as_str().unwrap_or_default();
        let code = v["error"]["code"].as_str().unwrap_or_default();
        if message.is_empty() || code.is_empty() {
            return Err(TestCaseError::fail(format!(
                "{path}: {status} without an error code and message: {text}"
            )));
        }
    }
    Ok(())
}

#[test]
fn api_request_bodies_never_get_a_5xx_a_hang_or_a_non_json_error() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let daemon = rt.block_on(SimDaemon::start(STATE));
    rt.block_on(daemon.wait_ready(Duration::from_secs(30)));
    let client = daemon.client();
    // A real run, so report/heartbeat/finish reach their handlers' logic.
    let (status, bytes) = rt
        .block_on(client.send(
            Method::POST,
            "/api/v1/runs",
            serde_json::to_vec(&routes()[0].1).unwrap(),
            "application/json",
        ))
        .unwrap();
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&bytes));
    let run: Value = serde_json::from_slice(&bytes).unwrap();
    let run_id = run["run"].as_str().unwrap().to_string();
    let routes = routes();

    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        0..routes.len(),
        body_case(),
        proptest::sample::select(CONTENT_TYPES),
        proptest::sample::select(RUN_IDS),
        proptest::sample::select(POOLS),
    );
    let sent = std::cell::Cell::new(0u32);
    let result = runner.run(&strategy, |(route, case, content_type, id, pool)| {
        let (pattern, valid) = &routes[route];
        let id = if id == "{real}" { run_id.as_str() } else { id };
        let path = pattern.replace("{id}", id).replace("{pool}", pool);
        let body = render(&case, valid);
        sent.set(sent.get() + 1);
        rt.block_on(check(&client, &path, body, content_type))
    });
    rt.block_on(daemon.stop());
    println!("MEASURE fuzz_api cases={} requests={}", cases(), sent.get());
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn a_run_or_pool_name_with_a_slash_in_the_path_is_a_400_not_a_500() {
    // Regression: found by the fuzz target above (a store NameRejected answered 500).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let daemon = SimDaemon::start(STATE).await;
        let client = daemon.client();
        for (path, body) in [
            ("/api/v1/runs/a%2Fb/heartbeat", json!({})),
            ("/api/v1/runs/a%2Fb/finish", json!({})),
            ("/api/v1/slotpools/a%2Fb/acquire", json!({"owner": owner()})),
        ] {
            let (status, bytes) = client
                .send(
                    Method::POST,
                    path,
                    serde_json::to_vec(&body).unwrap(),
                    "application/json",
                )
                .await
                .unwrap();
            let text = String::from_utf8_lossy(&bytes).to_string();
            assert_eq!(status, 400, "{path}: {text}");
            assert!(text.contains("must not contain '/'"), "{path}: {text}");
        }
        daemon.stop().await;
    });
}

/// The API part of the malformed-input table (controller/src/malformed.rs holds the files'):
/// (what, path, content type, body, expected status, `error.message`, `error.field`).
type ApiCase = (
    &'static str,
    &'static str,
    &'static str,
    Vec<u8>,
    u16,
    &'static str,
    Option<&'static str>,
);

fn api_table() -> Vec<ApiCase> {
    let start = |v: Value| serde_json::to_vec(&v).unwrap();
    vec![
        (
            "wrong type",
            "/api/v1/runs",
            "application/json",
            start(json!({"recipe": 5, "version": "1.1.0", "owner": owner()})),
            422,
            "Failed to deserialize the JSON body into the target type: recipe: invalid type: integer `5`, expected a string at line 1 column 96",
            Some("recipe"),
        ),
        (
            "missing field",
            "/api/v1/runs",
            "application/json",
            start(json!({"recipe": "webapp", "owner": owner()})),
            422,
            "Failed to deserialize the JSON body into the target type: missing field `version` at line 1 column 104",
            Some("version"),
        ),
        (
            "unknown field",
            "/api/v1/slotpools/ci/acquire",
            "application/json",
            start(json!({"owner": owner(), "tll": "1m"})),
            422,
            "Failed to deserialize the JSON body into the target type: tll: unknown field `tll`, expected one of `owner`, `run`, `ttl` at line 1 column 91",
            Some("tll"),
        ),
        (
            "bad duration",
            "/api/v1/slotpools/ci/acquire",
            "application/json",
            start(json!({"owner": owner(), "ttl": "soon"})),
            400,
            "ttl: invalid duration \"soon\": expected number at 0",
            Some("ttl"),
        ),
        (
            "not JSON",
            "/api/v1/runs/{id}/report",
            "application/json",
            b"{\"tiers\": [".to_vec(),
            400,
            "Failed to parse the request body as JSON: tiers: EOF while parsing a list at line 1 column 11",
            None,
        ),
        (
            "too large",
            "/api/v1/runs/{id}/report",
            "application/json",
            vec![b' '; 64 * 1024 + 1],
            413,
            "Failed to buffer the request body: length limit exceeded",
            None,
        ),
        (
            "wrong content type",
            "/api/v1/sweep",
            "text/plain",
            b"{}".to_vec(),
            415,
            "Expected request with `Content-Type: application/json`",
            None,
        ),
        (
            "bad state file",
            "/api/v1/apply?file=bad.yml",
            "text/plain",
            // A valid change (the version) next to an invalid one: neither may apply.
            STATE
                .replace("version: 1.1.0", "version: 2.0.0")
                .replace("slots: 2", "slots: -1")
                .into_bytes(),
            422,
            "state file bad.yml rejected (1 problem); nothing was applied\n  bad.yml:19:10: SlotPool/ci: spec.slots: invalid u32",
            None,
        ),
    ]
}

#[test]
fn every_malformed_api_body_is_refused_with_its_listed_error_and_changes_nothing() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let daemon = SimDaemon::start(STATE).await;
        daemon.wait_ready(Duration::from_secs(30)).await;
        let client = daemon.client();
        let snapshot = || async {
            let mut out = String::new();
            for path in ["/api/v1/warmapps", "/api/v1/slotpools", "/api/v1/runs"] {
                let (_, b) = client
                    .send(Method::GET, path, Vec::new(), "")
                    .await
                    .unwrap();
                let mut v: Value = serde_json::from_slice(&b).unwrap();
                assert!(
                    v.as_array().is_some_and(|a| !a.is_empty()) || path.ends_with("runs"),
                    "{path}: {v}"
                );
                // Only the desired state: statuses (and resource versions) move on their own.
                let desired: Vec<Value> = v
                    .as_array_mut()
                    .into_iter()
                    .flatten()
                    .map(|item| {
                        json!([
                            item["metadata"]["name"],
                            item["metadata"]["generation"],
                            item["spec"]
                        ])
                    })
                    .collect();
                out.push_str(&Value::Array(desired).to_string());
            }
            out
        };
        let before = snapshot().await;
        let mut mismatches = Vec::new();
        for (what, path, ct, body, status, message, field) in api_table() {
            let path = path.replace("{id}", "nope");
            let (got_status, bytes) = client.send(Method::POST, &path, body, ct).await.unwrap();
            let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let got = (
                got_status,
                v["error"]["message"]
                    .as_str()
                    .unwrap_or("<no message>")
                    .to_string(),
                v["error"]["field"].as_str().map(str::to_string),
            );
            let want = (status, message.to_string(), field.map(str::to_string));
            if got != want {
                mismatches.push(format!("{what}:\n  expected {want:?}\n  got      {got:?}"));
            }
        }
        if snapshot().await != before {
            mismatches.push("the desired state changed".into());
        }
        daemon.stop().await;
        assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    });
}
