//! Snapshot tests of the status page at a fixed `now`, and its escaping.

#![allow(clippy::unwrap_used)]

use super::*;

/// 2026-11-22T12:00:00Z.
const NOW: u64 = 1_795_348_800_000;
const MIN: u64 = 60_000;

fn owner() -> serde_json::Value {
    serde_json::json!({"pid": 4242, "processStartTime": 99, "host": "ci-1", "bootId": "b00t"})
}

fn warmapps() -> Vec<WarmApp> {
    let ready: WarmApp = serde_json::from_value(serde_json::json!({
        "apiVersion": "hearth/v1", "kind": "WarmApp",
        "metadata": {"name": "webapp", "generation": 3,
                     "creationTimestampMs": NOW - 3 * 86_400_000},
        "spec": {"recipe": "webapp", "version": "1.1.0", "promote": "onGreen"},
        "status": {"phase": "Ready", "observedGeneration": 3, "observedVersion": "1.1.0",
                   "previousKnownGood": "1.0.0", "stackName": "hw-webapp",
                   "conditions": [{"type": "Ready", "status": "True", "reason": "Healthy",
                                   "message": "1/1 tasks healthy, probe passed",
                                   "lastTransitionTimeMs": NOW - 42 * MIN, "observedGeneration": 3}],
                   "promotion": {"declaredVersion": "1.0.0", "version": "1.1.0",
                                 "last": {"source": "greenRun", "run": "r-webapp-0002",
                                          "from": "1.0.0", "to": "1.1.0", "generation": 3,
                                          "atMs": NOW - 45 * MIN, "result": "ready"}}}
    }))
    .unwrap();
    let degraded: WarmApp = serde_json::from_value(serde_json::json!({
        "apiVersion": "hearth/v1", "kind": "WarmApp",
        "metadata": {"name": "sso", "generation": 2, "creationTimestampMs": NOW - 95_000},
        "spec": {"recipe": "sso", "version": "1.0.0"},
        "status": {"phase": "Degraded", "observedGeneration": 2, "observedVersion": "1.0.0",
                   "stackName": "hw-sso",
                   "lastError": "upgrade to 2.1.0-broken failed: not healthy within 2m; rolled back to 1.0.0",
                   "conditions": [{"type": "Ready", "status": "False", "reason": "RolledBack",
                                   "message": "serving 1.0.0", "lastTransitionTimeMs": NOW - 30_000,
                                   "observedGeneration": 2}],
                   "promotion": {"declaredVersion": "1.0.0", "version": "2.1.0-broken",
                                 "last": {"source": "operator", "from": "1.0.0",
                                          "to": "2.1.0-broken", "generation": 2,
                                          "atMs": NOW - 3 * MIN, "result": "rolledBack"}}}
    }))
    .unwrap();
    vec![ready, degraded]
}

fn runs() -> Vec<Run> {
    let running: Run = serde_json::from_value(serde_json::json!({
        "apiVersion": "hearth/v1", "kind": "Run",
        "metadata": {"name": "r-webapp-7f3a", "creationTimestampMs": NOW - 5 * MIN - 30_000},
        "spec": {"recipe": "webapp", "version": "2.0.0", "owner": owner(), "slotPool": "ci",
                 "requiredTiers": ["install", "e2e"], "deploy": true},
        "status": {"phase": "Running", "stackName": "hr-r-webapp-7f3a",
                   "slot": {"pool": "ci", "index": 1, "portBase": 20010, "ports": 10},
                   "tiers": [{"name": "install", "result": "pass", "required": true},
                             {"name": "lint", "result": "pass"}]}
    }))
    .unwrap();
    let green: Run = serde_json::from_value(serde_json::json!({
        "apiVersion": "hearth/v1", "kind": "Run",
        "metadata": {"name": "r-webapp-0002", "creationTimestampMs": NOW - 50 * MIN},
        "spec": {"recipe": "webapp", "version": "1.1.0", "owner": owner(),
                 "requiredTiers": ["install"]},
        "status": {"phase": "Succeeded",
                   "tiers": [{"name": "install", "result": "pass"},
                             {"name": "perf", "result": "skip", "reason": "no runner"}],
                   "verdict": {"green": true}}
    }))
    .unwrap();
    let failed: Run = serde_json::from_value(serde_json::json!({
        "apiVersion": "hearth/v1", "kind": "Run",
        "metadata": {"name": "r-webapp-0001", "creationTimestampMs": NOW - 26 * 3_600_000},
        "spec": {"recipe": "webapp", "version": "1.2.0", "owner": owner(),
                 "requiredTiers": ["install", "e2e", "upgrade"]},
        "status": {"phase": "Failed", "lastError": "required tiers did not pass",
                   "tiers": [{"name": "install", "result": "fail", "reason": "exit 1"},
                             {"name": "e2e", "result": "skip", "reason": "sso not ready"}],
                   "verdict": {"green": false, "problems": [
                       {"problem": "requiredTierSkipped", "tier": "e2e", "reason": "sso not ready"}]}}
    }))
    .unwrap();
    vec![running, green, failed]
}

fn pools() -> Vec<SlotPool> {
    let pool: SlotPool = serde_json::from_value(serde_json::json!({
        "apiVersion": "hearth/v1", "kind": "SlotPool",
        "metadata": {"name": "ci", "creationTimestampMs": NOW - 9 * 86_400_000},
        "spec": {"slots": 3, "portBase": 20000, "portsPerSlot": 10, "waitTimeout": "10m"},
        "status": {"phase": "Available",
                   "leases": [{"slot": 2, "owner": owner(), "acquiredAtMs": NOW - 20_000},
                              {"slot": 1, "owner": owner(), "run": "r-webapp-7f3a",
                               "acquiredAtMs": NOW - 5 * MIN, "expiresAtMs": NOW + 5 * MIN}],
                   "waiters": [{"owner": owner(), "run": "r-webapp-7f3b",
                                "enqueuedAtMs": NOW - 3_000, "deadlineMs": NOW + 597_000}]}
    }))
    .unwrap();
    let idle: SlotPool = serde_json::from_value(serde_json::json!({
        "apiVersion": "hearth/v1", "kind": "SlotPool",
        "metadata": {"name": "nightly", "creationTimestampMs": NOW - 800 * 86_400_000},
        "spec": {"slots": 1, "portBase": 31000}
    }))
    .unwrap();
    vec![pool, idle]
}

fn history() -> Vec<Entry> {
    serde_json::from_value(serde_json::json!([
        {"seq": 13, "timeMs": NOW - 30_000, "reason": "RolledBack",
         "subject": {"kind": "WarmApp", "name": "sso"},
         "message": "sso: 2.1.0-broken was not healthy; rolled back to 1.0.0", "details": null},
        {"seq": 12, "timeMs": NOW - 45 * MIN, "reason": "Promoted",
         "subject": {"kind": "WarmApp", "name": "webapp"},
         "message": "webapp promoted 1.0.0 → 1.1.0 by green run r-webapp-0002", "details": null},
        {"seq": 11, "timeMs": NOW - 3 * 3_600_000, "reason": "Swept",
         "subject": {"kind": "Run", "name": "r-webapp-dead"},
         "message": "swept run r-webapp-dead: owner pid 77 is gone", "details": null},
        {"seq": 10, "timeMs": NOW - 2 * 86_400_000, "reason": "Rejected", "subject": null,
         "message": "state file state.yml rejected (1 problem)\n  state.yml:3:1: kind: unknown",
         "details": null}
    ]))
    .unwrap()
}

fn full() -> Snapshot {
    let runs = runs();
    Snapshot {
        warmapps: warmapps(),
        runs_total: runs.len(),
        runs: pick_runs(runs, RUNS_SHOWN),
        pools: pools(),
        history: history(),
        instance: "7c1e9a".into(),
        leader: String::new(),
    }
}

/// The page from `<body>` on: the head holds the style sheet, which the snapshots leave out.
fn body(html: &str) -> &str {
    let at = html.find("<body>").expect("a body");
    &html[at..]
}

#[test]
fn the_page_shows_warm_apps_runs_slot_pools_and_history() {
    let html = render(&full(), NOW);
    insta::assert_snapshot!(body(&html));
    for needle in [
        "webapp",
        "1.1.0",
        "Ready",
        "Degraded",
        "r-webapp-0002",
        "Succeeded",
        "Failed",
        "install fail",
        "e2e skipped",
        "upgrade missing",
        "perf skipped <small>optional</small>",
        "<b>2 / 3</b> in use",
        "r-webapp-7f3b",
        "Promoted",
        "Swept",
    ] {
        assert!(html.contains(needle), "the page shows {needle:?}");
    }
}

#[test]
fn the_page_is_a_pure_function_of_snapshot_and_time() {
    assert_eq!(render(&full(), NOW), render(&full(), NOW));
    assert_ne!(render(&full(), NOW), render(&full(), NOW + 3_600_000));
}

#[test]
fn the_head_refreshes_and_carries_no_script_and_no_external_asset() {
    let html = render(&full(), NOW);
    assert!(html.contains("<meta http-equiv=\"refresh\" content=\"10\">"));
    assert!(!html.contains("<script"), "no script on the page");
    assert!(!html.contains("src="), "no external asset");
    assert!(!html.contains("<link"), "no external style sheet");
}

/// Issue 14 (a new user's trip): the page counted a Degraded app that serves as not ready
/// while `hearth get warmapps` said `READY True`.
#[test]
fn a_degraded_app_that_still_serves_counts_as_ready_in_the_header() {
    let mut apps = warmapps();
    let sso = &mut apps[1];
    assert_eq!(sso.status.phase, WarmAppPhase::Degraded);
    sso.status.conditions[0].status = ConditionStatus::True;
    let s = Snapshot {
        warmapps: apps,
        ..Snapshot::default()
    };
    let html = render(&s, NOW);
    assert!(
        html.contains("<b>2/2</b> warm apps ready"),
        "{}",
        body(&html)
    );
}

#[test]
fn an_empty_store_says_so_in_every_section() {
    let html = render(&Snapshot::default(), NOW);
    insta::assert_snapshot!(body(&html));
    for text in [
        "No warm apps.",
        "No runs.",
        "No slot pools.",
        "Nothing happened yet.",
    ] {
        assert!(html.contains(text), "{text}");
    }
}

#[test]
fn names_and_messages_with_markup_are_escaped() {
    assert_eq!(
        escape("<script>alert('x')</script> & \"q\""),
        "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
    );
    let evil = "<script>alert(1)</script>";
    let mut s = full();
    s.warmapps[0].metadata.name = evil.into();
    s.warmapps[0].status.last_error = Some(format!("{evil} <b>boom</b>"));
    s.runs[0].metadata.name = evil.into();
    s.runs[0].status.tiers[0].reason = Some("\" onmouseover=\"alert(1)".into());
    s.pools[0].status.leases[0].run = Some(evil.into());
    s.history[0].message = evil.into();
    s.instance = evil.into();
    let html = render(&s, NOW);
    assert!(!html.contains("<script"), "no script on the page");
    assert!(!html.contains("<b>boom</b>"));
    assert!(!html.contains("\" onmouseover"), "attributes stay closed");
    assert_eq!(
        html.matches("&lt;script&gt;alert(1)&lt;/script&gt;")
            .count(),
        6,
        "each injected name is shown, escaped"
    );
}

#[test]
fn active_runs_come_first_then_the_newest_finished() {
    let run = |name: &str, phase: &str, created: u64| -> Run {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "hearth/v1", "kind": "Run",
            "metadata": {"name": name, "creationTimestampMs": created},
            "spec": {"recipe": "webapp", "version": "1.0.0", "owner": owner()},
            "status": {"phase": phase}
        }))
        .unwrap()
    };
    let picked = pick_runs(
        vec![
            run("old-done", "Succeeded", 1),
            run("new-done", "Failed", 5),
            run("old-active", "Running", 2),
            run("new-active", "Pending", 4),
        ],
        3,
    );
    let names: Vec<&str> = picked.iter().map(|r| r.metadata.name.as_str()).collect();
    assert_eq!(names, ["new-active", "old-active", "new-done"]);
}

#[test]
fn a_store_with_more_runs_than_shown_says_how_many() {
    let mut s = full();
    s.runs_total = 40;
    let html = render(&s, NOW);
    assert!(html.contains("showing 3 of 40 runs"));
}

#[tokio::test]
async fn the_snapshot_reads_everything_from_the_store() {
    let store = Store::in_memory().await.unwrap();
    for app in warmapps() {
        store.create(&app).await.unwrap();
    }
    for run in runs() {
        store.create(&run).await.unwrap();
    }
    store.create(&pools()[0]).await.unwrap();
    store
        .append_history(state::history::NewEntry::new("Swept", "swept something"))
        .await
        .unwrap();
    let s = snapshot(&store).unwrap();
    assert_eq!(s.warmapps.len(), 2);
    assert_eq!((s.runs.len(), s.runs_total), (3, 3));
    assert_eq!(
        s.runs[0].metadata.name, "r-webapp-7f3a",
        "the active run first"
    );
    assert_eq!(s.pools[0].status.leases.len(), 2, "statuses as stored");
    assert_eq!(s.history.len(), 1);
    assert_eq!(s.history[0].reason, "Swept");
}

#[test]
fn a_history_entry_names_the_token_that_asked_escaped() {
    let entry = |actor: Option<&str>| Entry {
        seq: 1,
        time_ms: 0,
        reason: "Deleted".into(),
        subject: None,
        message: "deleted through the API".into(),
        details: serde_json::Value::Null,
        actor: actor.map(String::from),
    };
    let html = history_html(&[entry(Some("<alice>"))], 1_000);
    assert!(
        html.contains("<span class=\"by\">by &lt;alice&gt;</span>"),
        "{html}"
    );
    let html = history_html(&[entry(None)], 1_000);
    assert!(!html.contains("class=\"by\""), "{html}");
}
