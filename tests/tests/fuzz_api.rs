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
