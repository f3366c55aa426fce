//! Bounded labels (issue 16): tier names are declared per slot pool or recipe (an undeclared one is a 422 naming the declared ones), and no client-chosen string — 10,000 distinct ones through every client input of the API — grows the number of exported metric series (`/metrics`, per family).
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use controller::access::admin_token::Token;
use controller::cli::ci::{Client, Method};
use futures::stream::{self, StreamExt};
use hearth_tests::daemon::{example_catalogue, SimDaemon};
use serde_json::{json, Value};

/// A pool and a recipe that declare tiers, a pool that declares none, and a warm app.
fn state() -> String {
    let webapp = example_catalogue().join("webapp");
    format!(
        "apiVersion: hearth/v1\nkind: WarmApp\nmetadata:\n  name: web\nspec:\n  recipe: webapp\n  \
         version: 1.1.0\n---\napiVersion: hearth/v1\nkind: SlotPool\nmetadata:\n  name: ci\nspec:\n  \
         slots: 2\n  portBase: 20000\n  portsPerSlot: 10\n  waitTimeout: 1s\n  tiers: [install, upgrade]\n\
         ---\napiVersion: hearth/v1\nkind: SlotPool\nmetadata:\n  name: open\nspec:\n  slots: 1\n  \
         portBase: 21000\n  waitTimeout: 1s\n---\napiVersion: hearth/v1\nkind: Recipe\nmetadata:\n  \
         name: webapp\nspec:\n  path: {}\n  tiers: [install, backup]\n",
        webapp.display()
    )
}

/// `(status, JSON body)` of one request.
async fn call(client: &Client, method: Method, path: &str, body: &Value) -> (u16, Value) {
    let (status, bytes) = client
        .send(
            method,
            path,
            serde_json::to_vec(body).unwrap(),
            "application/json",
        )
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// This test process as a run's owner (alive for the whole test).
fn owner() -> Value {
    serde_json::to_value(controller::liveness::current_owner().unwrap()).unwrap()
}

fn start(recipe: &str, pool: Option<&str>, required: &[&str]) -> Value {
    json!({"recipe": recipe, "version": "1.1.0", "owner": owner(), "pool": pool,
           "requiredTiers": required})
}

/// Waits until the daemon's API answers.
async fn daemon() -> SimDaemon {
    let d = SimDaemon::start(&state()).await;
    d.wait_ready(Duration::from_secs(30)).await;
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undeclared_tier_is_a_422_naming_the_declared_ones() {
    let d = daemon().await;
    let c = d.client();
    // Required at start, in a pool that declares tiers (with a recipe that declares others).
    let a = call(
        &c,
        Method::POST,
        "/api/v1/runs",
        &start("webapp", Some("ci"), &["install", "e2e"]),
    )
    .await;
    assert_eq!(a.0, 422, "{a:?}");
    assert_eq!(a.1["error"]["field"], "requiredTiers", "{a:?}");
    let message = a.1["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(
            "tier \"e2e\" is not declared (declared by SlotPool/ci and Recipe/webapp: backup, install, upgrade)"
        ),
        "{message}"
    );
    // Nothing was recorded and no slot taken.
    let runs = call(&c, Method::GET, "/api/v1/runs", &Value::Null).await;
    assert_eq!(runs.1, json!([]), "{runs:?}");
    // The recipe's declaration alone binds a run in a pool that declares none.
    let a = call(
        &c,
        Method::POST,
        "/api/v1/runs",
        &start("webapp", Some("open"), &["upgrade"]),
    )
    .await;
    assert_eq!(a.0, 422, "{a:?}");
    assert!(
        a.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("(declared by Recipe/webapp: backup, install)"),
        "{a:?}"
    );
    // Reported tiers: a declared one is recorded, an undeclared one refused (nothing of that
    // report recorded).
    let a = call(
        &c,
        Method::POST,
        "/api/v1/runs",
        &start("webapp", Some("ci"), &["install"]),
    )
    .await;
    assert_eq!(a.0, 201, "{a:?}");
    let run = a.1["run"].as_str().unwrap().to_string();
    let report = format!("/api/v1/runs/{run}/report");
    let a = call(
        &c,
        Method::POST,
        &report,
        &json!({"tiers": ["backup=pass", "custom=pass"]}),
    )
    .await;
    assert_eq!(a.0, 422, "{a:?}");
    assert_eq!(a.1["error"]["field"], "tiers", "{a:?}");
    assert!(
        a.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tier \"custom\" is not declared"),
        "{a:?}"
    );
    let a = call(
        &c,
        Method::POST,
        &report,
        &json!({"tiers": ["install=pass", "backup=skip:no store"]}),
    )
    .await;
    assert_eq!(a.0, 200, "{a:?}");
    let names: Vec<&str> = a.1["status"]["tiers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["install", "backup"], "{a:?}");
    let text = d.running.metrics.encode().unwrap();
    assert!(
        text.contains(
            r#"hearth_tier_results_total{recipe="webapp",result="skip",tier="backup"} 1"#
        ),
        "{text}"
    );
    let a = call(
        &c,
        Method::POST,
        &format!("/api/v1/runs/{run}/finish"),
        &json!({}),
    )
    .await;
    assert_eq!(a.0, 200, "{a:?}");
    d.stop().await;
}

/// Every client-chosen string fed below contains this (in any case); no series may, once the
/// objects that declared such names are gone.
const MARK: &str = "zqx";
/// How many requests are in flight at once.
const IN_FLIGHT: usize = 16;
/// Distinct client-chosen strings fed, at least, over all inputs.
const DISTINCT: usize = 10_000;
/// Accepted run starts (30 strings each) and tier reports (13 strings each): most of the
/// strings, packed into few requests (each costs a few ms in a debug build on 2 cores).
const RUNS: usize = 210;
/// Requests through each other input (1 string each).
const EACH: usize = 40;
/// State files applied through the API, each declaring a new recipe, pool, warm app and tiers.
const APPLIES: usize = 4;

/// Answers with a status the input did not expect (one per input), checked at the end.
static UNEXPECTED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// The series of `/metrics` after the warm-up: what every feed is compared with.
static BEFORE: std::sync::OnceLock<BTreeMap<String, BTreeSet<String>>> = std::sync::OnceLock::new();

/// The distinct strings fed so far.
#[derive(Default)]
struct Fed(std::sync::Mutex<std::collections::BTreeSet<String>>);

impl Fed {
    /// A new client-chosen string for `input` (a DNS label: lowercase, digits, `-`).
    fn s(&self, input: &str, i: usize) -> String {
        let s = format!("{MARK}{i:04}-{input}");
        assert!(
            self.0.lock().unwrap().insert(s.clone()),
            "not distinct: {s}"
        );
        s
    }

    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

/// Runs `send(i)` for `i` in `0..n`, `IN_FLIGHT` at a time; every status must be one of
/// `expect`. Returns the answers.
async fn feed<F, Fut>(
    c: &Client,
    input: &str,
    n: usize,
    expect: &[u16],
    send: F,
) -> Vec<(u16, Value)>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = (u16, Value)>,
{
    let started = Instant::now();
    let answers: Vec<(u16, Value)> = stream::iter(0..n)
        .map(send)
        .buffered(IN_FLIGHT)
        .collect()
        .await;
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    for a in &answers {
        *statuses.entry(a.0).or_default() += 1;
    }
    eprintln!(
        "{input}: {n} requests in {:.2} s, statuses {statuses:?}",
        started.elapsed().as_secs_f64()
    );
    for a in &answers {
        if !expect.contains(&a.0) {
            UNEXPECTED.lock().unwrap().push(format!("{input}: {a:?}"));
            break;
        }
    }
    // Bounded at once, not only after a cleanup: nothing this input did may have added a
    // series (the gauges worker's cleanup, `gauges::bound_labels`, is for names the state
    // file stopped declaring, and must not be what keeps client strings out).
    let diff = differences(BEFORE.get().unwrap(), &scrape(c).await);
    if !diff.is_empty() {
        let n = diff.len();
        let shown: Vec<_> = diff.into_iter().take(5).collect();
        UNEXPECTED.lock().unwrap().push(format!(
            "after {input}, {n} differences: {}",
            shown.join("\n")
        ));
    }
    answers
}

/// `GET /metrics`, as the scraper sees it: per family (`# TYPE` name), its series (the sample
/// line without its value; every histogram bucket, `_sum` and `_count` is one).
async fn scrape(c: &Client) -> BTreeMap<String, BTreeSet<String>> {
    let (status, bytes) = c
        .send(Method::GET, "/metrics", Vec::new(), "text/plain")
        .await
        .unwrap();
    assert_eq!(status, 200);
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut family = String::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            family = rest.split(' ').next().unwrap().to_string();
            out.entry(family.clone()).or_default();
        } else if !line.starts_with('#') && !line.is_empty() {
            let series = line.rsplit_once(' ').unwrap().0;
            out.get_mut(&family).unwrap().insert(series.to_string());
        }
    }
    out
}

/// Labels whose values hearth's code spells (`&'static str` in `metrics`: closed sets, such
/// as the Docker operations or error kinds met so far) and the histogram bucket bound.
const CODE_LABELS: [&str; 8] = [
    "controller",
    "phase",
    "result",
    "kind",
    "operation",
    "error",
    "worker",
    "le",
];

/// The label names of a series line (`name{a="x",b="y"}`).
fn label_names(series: &str) -> Vec<String> {
    let Some((_, labels)) = series.split_once('{') else {
        return Vec::new();
    };
    let mut names = Vec::new();
    let mut rest = labels;
    while let Some((name, value)) = rest.split_once("=\"") {
        names.push(name.trim_start_matches(',').to_string());
        // Skip the value: up to the first quote not escaped.
        let mut escaped = false;
        let end = value
            .char_indices()
            .find(|&(_, ch)| {
                let close = ch == '"' && !escaped;
                escaped = ch == '\\' && !escaped;
                close
            })
            .map_or(value.len(), |(i, _)| i + 1);
        rest = &value[end..];
    }
    names
}

/// What differs between two scrapes: families with an operator-named label (`app`,
/// `version`, `recipe`, `tier`, `pool`) whose series count changed (with up to 3 of the
/// series added), and series that carry a fed string. Families labelled only by hearth's
/// code may gain values of their closed sets (a Docker operation first called during the
/// feed); a client string in them is still found by the marker check.
fn differences(
    before: &BTreeMap<String, BTreeSet<String>>,
    now: &BTreeMap<String, BTreeSet<String>>,
) -> Vec<String> {
    let empty = BTreeSet::new();
    let mut out = Vec::new();
    for family in before.keys().chain(now.keys()).collect::<BTreeSet<_>>() {
        let (b, n) = (
            before.get(family).unwrap_or(&empty),
            now.get(family).unwrap_or(&empty),
        );
        let operator_named = b
            .iter()
            .chain(n)
            .flat_map(|s| label_names(s))
            .any(|l| !CODE_LABELS.contains(&l.as_str()));
        if operator_named && b.len() != n.len() {
            let added: Vec<_> = n.difference(b).take(3).collect();
            out.push(format!(
                "{family}: {} series, {} before; e.g. {added:?}",
                n.len(),
                b.len()
            ));
        }
    }
    for series in now.values().flatten() {
        if series.to_lowercase().contains(MARK) {
            out.push(format!("carries a client string: {series}"));
        }
    }
    out
}

/// An extra recipe, pool (with tiers each) and warm app, named by client strings, for apply `k`.
fn extras(fed: &Fed, k: usize) -> (String, [String; 5]) {
    let names = [
        "apply-recipe",
        "apply-tier",
        "apply-pool",
        "apply-pooltier",
        "apply-app",
    ]
    .map(|n| fed.s(n, k));
    let [r, t, p, u, a] = &names;
    let text = format!(
        "---\napiVersion: hearth/v1\nkind: Recipe\nmetadata:\n  name: {r}\nspec:\n  path: {}\n  \
         tiers: [{t}]\n---\napiVersion: hearth/v1\nkind: SlotPool\nmetadata:\n  name: {p}\nspec:\n  \
         slots: 1\n  portBase: {}\n  portsPerSlot: 10\n  waitTimeout: 1s\n  tiers: [{u}]\n---\n\
         apiVersion: hearth/v1\nkind: WarmApp\nmetadata:\n  name: {a}\nspec:\n  recipe: webapp\n  \
         version: 1.1.0\n",
        example_catalogue().join("webapp").display(),
        22_000 + 100 * k,
    );
    (text, names)
}

/// `POST /api/v1/apply?prune=true` of a state file's text.
async fn apply(c: &Client, text: &str) {
    let (status, body) = c
        .send(
            Method::POST,
            "/api/v1/apply?prune=true",
            text.as_bytes().to_vec(),
            "application/yaml",
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
}

/// Every input a client chooses strings for, and which metric each could reach:
///
/// | input | metric label it could reach | bound |
/// |---|---|---|
/// | run start `recipe` | `tier_results_total{recipe}` | a declared Recipe or catalogue recipe, else `_undeclared` |
/// | run start `requiredTiers`, report `tiers` (names, reasons) | `tier_results_total{tier}` | tiers the run's pool or recipe declares, else `_undeclared` (or 422) |
/// | run start `pool`, slot acquire/heartbeat/release path | `slot_wait_seconds{pool}`, `slots_*{pool}` | declared pools (else 404) |
/// | apply (admin): Recipe, SlotPool, WarmApp names, their `tiers` | `recipe`, `tier`, `pool`, `app` | what the state file in force declares: series of names it no longer declares are removed |
/// | promote `to` | `warm_app_info{version}` | catalogue versions (else 422); one series per app |
/// | run start `version`, `commit`, `env` keys and values, `deps`, `ttl`, owner host and `container:ID`; run ids in paths; report/heartbeat/finish/deploy/delete bodies; warm app, pool and recipe names in paths; history queries; unrouted paths; methods; bearer tokens | none | — |
///
/// `controller`, `phase`, `result`, `kind`, `operation`, `error` and `worker` are spelled by
/// hearth's code (`&'static str` in `metrics`): no client string reaches them, which the
/// marker check below also sees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_distinct_client_strings_through_every_input_leave_the_series_count_bounded() {
    let test_started = Instant::now();
    let d = daemon().await;
    let client = d.client();
    let c = &client;
    let fed = Fed::default();
    // Warm-up: every path the inputs below take is taken once with fixed strings, so the
    // series that exist by design exist now.
    let a = call(
        c,
        Method::POST,
        "/api/v1/runs",
        &start("webapp", Some("ci"), &["install"]),
    )
    .await;
    assert_eq!(a.0, 201, "{a:?}");
    let declared_run = a.1["run"].as_str().unwrap().to_string();
    let a = call(
        c,
        Method::POST,
        &format!("/api/v1/runs/{declared_run}/report"),
        &json!({"tiers": ["install=pass", "upgrade=fail:x", "install=skip:y"]}),
    )
    .await;
    assert_eq!(a.0, 200, "{a:?}");
    let a = call(
        c,
        Method::POST,
        "/api/v1/runs",
        &start("warm-up", None, &["warm-up"]),
    )
    .await;
    assert_eq!(a.0, 201, "{a:?}");
    let open_run = a.1["run"].as_str().unwrap().to_string();
    for result in ["pass", "fail", "skip"] {
        let a = call(
            c,
            Method::POST,
            &format!("/api/v1/runs/{open_run}/report"),
            &json!({ "tiers": [format!("warm-up={result}")] }),
        )
        .await;
        assert_eq!(a.0, 200, "{a:?}");
    }
    // A slot lease of the `open` pool for an owner with a client-chosen host (one naming a
    // run that does not exist is reclaimed at once, so no run name here).
    let acquire_release = |host: String| async move {
        let mut o = owner();
        o["host"] = json!(host);
        let a = call(
            c,
            Method::POST,
            "/api/v1/slotpools/open/acquire",
            &json!({ "owner": o }),
        )
        .await;
        if a.0 != 200 {
            return a;
        }
        call(
            c,
            Method::POST,
            "/api/v1/slotpools/open/release",
            &json!({"slot": a.1["slot"], "owner": a.1["owner"]}),
        )
        .await
    };
    let a = acquire_release("warm-up".into()).await;
    assert_eq!(a.0, 204, "{a:?}");
    // The warm app is up and the gauges worker has run (every REFRESH, 2 s).
    let until = Instant::now() + Duration::from_secs(20);
    while d.running.metrics.label_values("warm_app_info", "app") != ["web"]
        || d.running.metrics.label_values("slots_capacity", "pool") != ["ci", "open"]
    {
        assert!(
            Instant::now() < until,
            "{}",
            d.running.metrics.encode().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        label_names(r#"x_bucket{recipe="a,b=\"c\"",le="1"}"#),
        ["recipe", "le"]
    );
    let before = scrape(c).await;
    BEFORE.set(before.clone()).unwrap();
    let m = &d.running.metrics;
    assert_eq!(
        m.label_values("tier_results_total", "tier"),
        ["_undeclared", "install", "upgrade"]
    );
    assert_eq!(
        m.label_values("tier_results_total", "recipe"),
        ["_undeclared", "webapp"]
    );
    let feeding = Instant::now();

    // Accepted run starts: recipe, version, owner host, env keys and values and required
    // tiers, all client-chosen, in no pool and of no declared recipe (so any tier is taken);
    // each run then reports client-chosen tiers and reasons.
    let started = feed(c, "start", RUNS, &[201], |i| {
        let mut o = owner();
        o["host"] = json!(fed.s("host", i));
        let env: serde_json::Map<String, Value> = (0..10)
            .map(|k| {
                let key = fed.s(&format!("envkey{k}"), i).to_uppercase().replace('-', "_");
                (key, json!(fed.s(&format!("envvalue{k}"), i)))
            })
            .collect();
        let required: Vec<String> = (0..7).map(|k| fed.s(&format!("required{k}"), i)).collect();
        let body = json!({"recipe": fed.s("recipe", i), "version": format!("1.{i}.0-{}", fed.s("v", i)),
                          "env": env, "ttl": format!("{}s", 3600 + i), "owner": o,
                          "requiredTiers": required});
        async move { call(c, Method::POST, "/api/v1/runs", &body).await }
    })
    .await;
    let runs: Vec<String> = started
        .iter()
        .map(|a| a.1["run"].as_str().unwrap().to_string())
        .collect();
    feed(c, "report", RUNS, &[200], |i| {
        let tiers: Vec<String> = (0..8)
            .map(|k| {
                let t = fed.s(&format!("tier{k}"), i);
                match k % 3 {
                    0 => format!("{t}=pass"),
                    1 => format!("{t}=fail:{}", fed.s(&format!("reason{k}"), i)),
                    _ => format!("{t}=skip:{}", fed.s(&format!("reason{k}"), i)),
                }
            })
            .collect();
        let body = json!({ "tiers": tiers });
        let path = format!("/api/v1/runs/{}/report", runs[i]);
        async move { call(c, Method::POST, &path, &body).await }
    })
    .await;
    // Run start fields that are refused or resolved against the store: a commit of a
    // recipe that declares none, dependency providers, owner containers, pools, candidates.
    let refused_start = |field: &'static str, expect: &'static [u16]| {
        let fed = &fed;
        async move {
            feed(c, field, EACH, expect, |i| {
                let mut body = start("webapp", None, &[]);
                let s = fed.s(field, i);
                match field {
                    "commit" => body["commit"] = json!(s),
                    "dep" => body["deps"] = json!([s]),
                    "container" => body["owner"]["kind"] = json!({ "container": s }),
                    "pool" => body["pool"] = json!(s),
                    "candidate" => {
                        body["version"] = json!("");
                        body["candidate"] =
                            json!({"files": {s.clone(): {"hex": "00"}}, "commit": s});
                    }
                    _ => unreachable!(),
                }
                async move { call(c, Method::POST, "/api/v1/runs", &body).await }
            })
            .await
        }
    };
    refused_start("commit", &[201]).await;
    refused_start("dep", &[422]).await;
    refused_start("container", &[422]).await;
    refused_start("pool", &[404]).await;
    refused_start("candidate", &[422]).await;
    // Tiers refused where the pool declares tiers: required at start, and reported.
    feed(c, "required-undeclared", EACH, &[422], |i| {
        let body = start("webapp", Some("ci"), &[&fed.s("required-undeclared", i)]);
        async move { call(c, Method::POST, "/api/v1/runs", &body).await }
    })
    .await;
    feed(c, "reported-undeclared", EACH, &[422], |i| {
        let body = json!({ "tiers": [format!("{}=pass", fed.s("reported-undeclared", i))] });
        let path = format!("/api/v1/runs/{declared_run}/report");
        async move { call(c, Method::POST, &path, &body).await }
    })
    .await;
    // Slot leases of client-chosen owner hosts (the one slot is contended: 408 when one
    // waited out the pool's 1 s).
    feed(c, "slot-owner", EACH, &[204, 408], |i| {
        acquire_release(fed.s("slot-owner", i))
    })
    .await;
    // Bodies and queries: a promotion target, a redeploy target, history filters.
    feed(c, "promote-to", EACH, &[422], |i| {
        let body = json!({ "to": fed.s("promote-to", i) });
        async move { call(c, Method::POST, "/api/v1/warmapps/web/promote", &body).await }
    })
    .await;
    // An unpublished version is the request's 422 (it was a 502: a recipe without git history
    // found it unpublished only when the reconciler rendered it).
    feed(c, "deploy-version", EACH, &[422], |i| {
        let body = json!({ "version": fed.s("deploy-version", i) });
        let path = format!("/api/v1/runs/{declared_run}/deploy");
        async move { call(c, Method::POST, &path, &body).await }
    })
    .await;
    feed(c, "history", EACH, &[200], |i| {
        let path = format!(
            "/api/v1/history?kind=Run&name={}&limit=1",
            fed.s("history", i)
        );
        async move { call(c, Method::GET, &path, &Value::Null).await }
    })
    .await;
    // Every path parameter: run ids, pools, warm apps, recipes; unrouted paths. Each with a
    // body its route accepts, so the name is looked up (and not found).
    let lease = json!({"slot": 0, "owner": owner(), "ttl": "30s"});
    for (input, method, path, body) in [
        ("run-get", Method::GET, "/api/v1/runs/{}", Value::Null),
        ("run-delete", Method::DELETE, "/api/v1/runs/{}", Value::Null),
        (
            "run-heartbeat",
            Method::POST,
            "/api/v1/runs/{}/heartbeat",
            json!({}),
        ),
        (
            "run-report",
            Method::POST,
            "/api/v1/runs/{}/report",
            json!({"tiers": ["install=pass"]}),
        ),
        (
            "run-finish",
            Method::POST,
            "/api/v1/runs/{}/finish",
            json!({}),
        ),
        (
            "run-deploy",
            Method::POST,
            "/api/v1/runs/{}/deploy",
            json!({"version": "1.1.0"}),
        ),
        ("pool-get", Method::GET, "/api/v1/slotpools/{}", Value::Null),
        (
            "pool-delete",
            Method::DELETE,
            "/api/v1/slotpools/{}",
            Value::Null,
        ),
        (
            "pool-acquire",
            Method::POST,
            "/api/v1/slotpools/{}/acquire",
            json!({"owner": owner()}),
        ),
        (
            "pool-heartbeat",
            Method::POST,
            "/api/v1/slotpools/{}/heartbeat",
            lease.clone(),
        ),
        (
            "pool-release",
            Method::POST,
            "/api/v1/slotpools/{}/release",
            lease.clone(),
        ),
        ("app-get", Method::GET, "/api/v1/warmapps/{}", Value::Null),
        (
            "app-delete",
            Method::DELETE,
            "/api/v1/warmapps/{}",
            Value::Null,
        ),
        (
            "app-promote",
            Method::POST,
            "/api/v1/warmapps/{}/promote",
            json!({"to": "1.1.0"}),
        ),
        (
            "app-rollback",
            Method::POST,
            "/api/v1/warmapps/{}/rollback",
            json!({}),
        ),
        ("recipe-get", Method::GET, "/api/v1/recipes/{}", Value::Null),
        ("unrouted", Method::GET, "/api/v1/{}", Value::Null),
    ] {
        feed(c, input, EACH, &[404], |i| {
            let path = path.replace("{}", &fed.s(input, i));
            let (method, body) = (method.clone(), body.clone());
            async move { call(c, method, &path, &body).await }
        })
        .await;
    }
    feed(c, "method", EACH, &[405], |i| {
        let method = Method::from_bytes(fed.s("method", i).to_uppercase().as_bytes()).unwrap();
        async move { call(c, method, "/api/v1/runs", &json!({})).await }
    })
    .await;
    // Bearer tokens: client-chosen ones on a mutation.
    feed(c, "token", EACH, &[401], |i| {
        let client = Client::new(d.addr).with_token(Some(Token::new(&fed.s("token", i))));
        async move {
            call(
                &client,
                Method::POST,
                "/api/v1/sweep",
                &json!({"dryRun": true}),
            )
            .await
        }
    })
    .await;
    // State files through the API (admin): each declares a recipe, a pool (with client-named
    // tiers) and a warm app of client-chosen names, used by a run; the next apply replaces
    // them. While declared they are label values; once no longer declared, their series go.
    for k in 0..APPLIES {
        let (text, [r, t, p, u, a]) = extras(&fed, k);
        apply(c, &format!("{}{text}", state())).await;
        let mut body = start(&r, Some(&p), &[&t]);
        body["version"] = json!("1.1.0");
        let s = call(c, Method::POST, "/api/v1/runs", &body).await;
        assert_eq!(s.0, 201, "{s:?}");
        let run = s.1["run"].as_str().unwrap();
        let tiers = json!({"tiers": [format!("{t}=pass"), format!("{u}=fail:x")]});
        let rep = call(
            c,
            Method::POST,
            &format!("/api/v1/runs/{run}/report"),
            &tiers,
        )
        .await;
        assert_eq!(rep.0, 200, "{rep:?}");
        let fin = call(
            c,
            Method::POST,
            &format!("/api/v1/runs/{run}/finish"),
            &json!({}),
        )
        .await;
        assert_eq!(fin.0, 200, "{fin:?}");
        // Declared, so counted under their own names (the test would see a leak of them).
        assert!(m.label_values("tier_results_total", "recipe").contains(&r));
        assert!(m.label_values("tier_results_total", "tier").contains(&u));
        assert!(m.label_values("slot_wait_seconds", "pool").contains(&p));
        if k + 1 == APPLIES {
            // The last app is up before it is removed (its series exist, then must go).
            let until = Instant::now() + Duration::from_secs(20);
            while !m.label_values("warm_app_ready", "app").contains(&a) {
                assert!(Instant::now() < until, "warm app {a} never reported");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    apply(c, &state()).await;
    let unexpected = UNEXPECTED.lock().unwrap().clone();
    assert!(unexpected.is_empty(), "{}", unexpected.join("\n"));
    let fed_n = fed.len();
    assert!(fed_n >= DISTINCT, "only {fed_n} distinct strings fed");
    eprintln!(
        "{fed_n} distinct strings fed in {:.1} s",
        feeding.elapsed().as_secs_f64()
    );

    // Bounded: per family, as many series as before the feed (the removed objects' series
    // go within a gauges refresh, 2 s), none carrying a fed string, and the labels that
    // operators name hold only what the state file declares.
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let diff = differences(&before, &scrape(c).await);
        if diff.is_empty() {
            break;
        }
        assert!(
            Instant::now() < until,
            "series grew with client-chosen strings ({fed_n} fed):\n{}",
            diff.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let declared_tiers = ["_undeclared", "backup", "install", "upgrade"];
    for t in m.label_values("tier_results_total", "tier") {
        assert!(declared_tiers.contains(&t.as_str()), "{t}");
    }
    for r in m.label_values("tier_results_total", "recipe") {
        assert!(
            ["_undeclared", "sso", "webapp"].contains(&r.as_str()),
            "{r}"
        );
    }
    for family in ["slots_in_use", "slots_capacity", "slot_wait_seconds"] {
        assert_eq!(m.label_values(family, "pool"), ["ci", "open"], "{family}");
    }
    for family in ["warm_app_ready", "warm_app_info"] {
        assert_eq!(m.label_values(family, "app"), ["web"], "{family}");
    }
    eprintln!(
        "{} series in {} families, as before; test took {:.1} s",
        before.values().map(BTreeSet::len).sum::<usize>(),
        before.len(),
        test_started.elapsed().as_secs_f64()
    );
    d.stop().await;
}
