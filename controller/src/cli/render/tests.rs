//! Snapshot tests of every output format of every kind, at a fixed `now`.

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
        "metadata": {"name": "webapp", "generation": 3, "resourceVersion": 17,
                     "creationTimestampMs": NOW - 3 * 86_400_000 - 4 * 3_600_000},
        "spec": {"recipe": "webapp", "version": "1.1.0", "promote": "onGreen"},
        "status": {"phase": "Ready", "observedGeneration": 3, "observedVersion": "1.1.0",
                   "previousKnownGood": "1.0.0", "stackName": "hw-webapp",
                   "domain": "hw-webapp.hearth.localhost",
                   "conditions": [{"type": "Ready", "status": "True", "reason": "Healthy",
                                   "message": "2/2 tasks healthy, probe passed",
                                   "lastTransitionTimeMs": NOW - 42 * MIN, "observedGeneration": 3}]}
    }))
    .unwrap();
    let degraded: WarmApp = serde_json::from_value(serde_json::json!({
        "apiVersion": "hearth/v1", "kind": "WarmApp",
        "metadata": {"name": "sso", "generation": 2, "creationTimestampMs": NOW - 95_000},
        "spec": {"recipe": "sso", "version": "2.1.0-broken", "provider": true},
        "status": {"phase": "Degraded", "observedGeneration": 2, "observedVersion": "1.0.0",
                   "stackName": "hp-sso",
                   "lastError": "upgrade to 2.1.0-broken failed: not healthy within 2m; rolled back to 1.0.0",
                   "conditions": [{"type": "Ready", "status": "False", "reason": "RolledBack",
                                   "message": "serving 1.0.0", "lastTransitionTimeMs": NOW - 30_000,
                                   "observedGeneration": 2}]}
    }))
    .unwrap();
    vec![ready, degraded]
}

fn runs() -> Vec<Run> {
    let running: Run = serde_json::from_value(serde_json::json!({
        "apiVersion": "hearth/v1", "kind": "Run",
        "metadata": {"name": "r-webapp-7f3a", "creationTimestampMs": NOW - 5 * MIN - 30_000},
        "spec": {"recipe": "webapp", "version": "2.0.0", "ref": "refs/heads/main", "owner": owner(),
                 "lease": {"ttl": "10m"}, "slotPool": "ci", "deps": ["sso"],
                 "requiredTiers": ["install", "e2e"], "deploy": true},
        "status": {"phase": "Running", "stackName": "hr-r-webapp-7f3a",
                   "slot": {"pool": "ci", "index": 1, "portBase": 20010, "ports": 10},
                   "tiers": [{"name": "install", "result": "pass", "required": true},
                             {"name": "lint", "result": "pass"}]}
    }))
    .unwrap();
    let failed: Run = serde_json::from_value(serde_json::json!({
        "apiVersion": "hearth/v1", "kind": "Run",
        "metadata": {"name": "r-webapp-0001", "creationTimestampMs": NOW - 26 * 3_600_000},
        "spec": {"recipe": "webapp", "version": "1.2.0", "owner": owner(),
                 "requiredTiers": ["install", "e2e"]},
        "status": {"phase": "Failed", "lastError": "required tiers did not pass",
                   "tiers": [{"name": "install", "result": "pass"},
                             {"name": "e2e", "result": "skip", "reason": "sso not ready"}],
                   "verdict": {"green": false, "problems": [
                       {"problem": "requiredTierSkipped", "tier": "e2e", "reason": "sso not ready"}]},
                   "residuals": ["volume hr-r-webapp-0001_data"]}
    }))
    .unwrap();
    vec![running, failed]
}

fn pools() -> Vec<SlotPool> {
    let pool: SlotPool = serde_json::from_value(serde_json::json!({
        "apiVersion": "hearth/v1", "kind": "SlotPool",
        "metadata": {"name": "ci", "creationTimestampMs": NOW - 9 * 86_400_000},
        "spec": {"slots": 3, "portBase": 20000, "portsPerSlot": 10, "waitTimeout": "10m"},
        "status": {"phase": "Available",
                   "leases": [{"slot": 1, "owner": owner(), "run": "r-webapp-7f3a",
                               "acquiredAtMs": NOW - 5 * MIN, "expiresAtMs": NOW + 5 * MIN},
                              {"slot": 2, "owner": owner(), "acquiredAtMs": NOW - 20_000}],
                   "waiters": [{"owner": owner(), "enqueuedAtMs": NOW - 3_000,
                                "deadlineMs": NOW + 597_000}]}
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
        {"seq": 12, "timeMs": NOW - 30_000, "reason": "RolledBack",
         "subject": {"kind": "WarmApp", "name": "sso"},
         "message": "sso: 2.1.0-broken was not healthy; rolled back to 1.0.0", "details": null},
        {"seq": 11, "timeMs": NOW - 42 * MIN, "reason": "Deployed",
         "subject": {"kind": "WarmApp", "name": "webapp"},
         "message": "webapp 1.1.0 deployed (hw-webapp)", "details": {"to": "1.1.0"}},
        {"seq": 10, "timeMs": NOW - 2 * 86_400_000, "reason": "Rejected", "subject": null,
         "message": "state file state.yml rejected (1 problem)\n  state.yml:3:1: kind: unknown",
         "details": null},
        {"seq": 9, "timeMs": NOW - 3 * 86_400_000, "reason": "Deleted",
         "subject": {"kind": "SlotPool", "name": "old"},
         "message": "SlotPool/old deleted through the API", "details": null, "actor": "alice"}
    ]))
    .unwrap()
}

fn formats() -> [(Output, &'static str); 3] {
    [
        (Output::Table, "table"),
        (Output::Json, "json"),
        (Output::Yaml, "yaml"),
    ]
}

fn list<T: Serialize>(items: &[T], output: Output, table: fn(&[T], u64) -> String) -> String {
    match output {
        Output::Table => table(items, NOW),
        other => structured(&items, other).unwrap(),
    }
}

#[test]
fn get_prints_every_kind_in_every_format() {
    for (output, name) in formats() {
        insta::assert_snapshot!(
            format!("get_warmapps_{name}"),
            list(&warmapps(), output, warmapps_table)
        );
        insta::assert_snapshot!(
            format!("get_runs_{name}"),
            list(&runs(), output, runs_table)
        );
        insta::assert_snapshot!(
            format!("get_slotpools_{name}"),
            list(&pools(), output, slotpools_table)
        );
        insta::assert_snapshot!(
            format!("get_history_{name}"),
            list(&history(), output, history_table)
        );
    }
}

/// Issue 14 (a new user's trip): after an upgrade to 1.1.0 turned Ready, describe said
/// `Known good: 1.0.0`, read as "1.1.0 is not known good".
#[test]
fn describe_names_the_version_before_the_current_one_as_the_previous_good() {
    let text = describe_warmapp(&warmapps()[0], &[], NOW);
    assert!(text.contains("Previous good:      1.0.0\n"), "{text}");
    assert!(!text.contains("Known good"), "{text}");
}

#[test]
fn describe_prints_every_kind_in_every_format() {
    let h = history();
    for (output, name) in formats() {
        let app = &warmapps()[1];
        let run = &runs()[1];
        let pool = &pools()[0];
        let (a, r, p) = match output {
            Output::Table => (
                describe_warmapp(app, &h[..1], NOW),
                describe_run(run, &[], NOW),
                describe_slotpool(pool, &[], NOW),
            ),
            other => (
                structured(
                    &serde_json::json!({"object": app, "history": &h[..1]}),
                    other,
                )
                .unwrap(),
                structured(&serde_json::json!({"object": run, "history": []}), other).unwrap(),
                structured(&serde_json::json!({"object": pool, "history": []}), other).unwrap(),
            ),
        };
        insta::assert_snapshot!(format!("describe_warmapp_{name}"), a);
        insta::assert_snapshot!(format!("describe_run_{name}"), r);
        insta::assert_snapshot!(format!("describe_slotpool_{name}"), p);
    }
}

#[test]
fn describe_shows_a_running_run_with_a_missing_required_tier() {
    insta::assert_snapshot!(describe_run(&runs()[0], &[], NOW));
}

#[test]
fn ages_read_like_kubectl() {
    let cases = [
        (0, "0s"),
        (45, "45s"),
        (119, "119s"),
        (200, "3m20s"),
        (240, "4m"),
        (42 * 60, "42m"),
        (5 * 3600 + 3 * 60, "5h3m"),
        (20 * 3600, "20h"),
        (3 * 86_400 + 4 * 3600, "3d4h"),
        (45 * 86_400, "45d"),
        (800 * 86_400, "2y70d"),
    ];
    for (secs, text) in cases {
        assert_eq!(age(NOW, NOW - secs * 1000), text, "{secs}s");
    }
    assert_eq!(age(NOW, 0), "<unknown>");
    assert_eq!(age(NOW, NOW + 5000), "0s");
}

#[test]
fn tables_align_columns_without_trailing_spaces() {
    let t = table(
        &["A", "LONGER"],
        &[vec!["xx".into(), "".into()], vec!["y".into(), "z".into()]],
    );
    assert_eq!(t, "A    LONGER\nxx\ny    z\n");
}

fn recipes() -> Vec<crd::Recipe> {
    serde_json::from_value(serde_json::json!([
        {"apiVersion": "hearth/v1", "kind": "Recipe",
         "metadata": {"name": "bonfire", "generation": 1, "creationTimestampMs": NOW - 2 * 86_400_000},
         "spec": {"git": {"url": "https://git.coopcloud.tech/coop-cloud/bonfire.git"}, "interval": "1h"},
         "status": {
            "observedGeneration": 1,
            "commit": "48e7e26bb0a004b443655449264331f49612f0f6",
            "versions": [
                {"version": "1.0.0+1.0.5-social-amd64", "tag": "1.0.0+1.0.5-social-amd64",
                 "commit": "79a43dbadc54e1d3abc24f379f39ac2e8d2f8ebc", "commitTime": 1_783_506_931},
                {"version": "2.0.0+1.0.5-social-amd64", "tag": "2.0.0+1.0.5-social-amd64",
                 "commit": "ead44b7103ec0665d3df83d9a489c7e9ad158b8d", "commitTime": 1_785_851_770},
                {"version": "2.0.1+1.0.6-social-amd64", "tag": "2.0.1+1.0.6-social-amd64",
                 "commit": "a49cdecfd89f8aed6426694b85644e3b2a46714b", "commitTime": 1_785_852_196}],
            "ignored": [{"tag": "latest", "reason": "not a semver version (unexpected character 'l' while parsing major version number)"}],
            "newest": "2.0.1+1.0.6-social-amd64",
            "lastFetchMs": NOW - 2 * MIN, "lastSuccessMs": NOW - 62 * MIN,
            "lastFetchError": "git fetch failed: fatal: unable to access 'https://git.coopcloud.tech/coop-cloud/bonfire.git/': Could not resolve host: git.coopcloud.tech",
            "conditions": [
                {"type": "Fetched", "status": "False", "reason": "FetchFailed",
                 "message": "fetch failed; the last good content stays in force (3 version(s), newest 2.0.1+1.0.6-social-amd64)",
                 "lastTransitionTimeMs": NOW - 2 * MIN, "observedGeneration": 1},
                {"type": "Ready", "status": "True", "reason": "ContentInForce",
                 "lastTransitionTimeMs": NOW - 2 * 86_400_000, "observedGeneration": 1}]}},
        {"apiVersion": "hearth/v1", "kind": "Recipe",
         "metadata": {"name": "webapp", "creationTimestampMs": NOW - 5 * MIN},
         "spec": {"path": "/srv/recipes/webapp"}}
    ]))
    .unwrap()
}

fn recipe_history() -> Vec<Entry> {
    serde_json::from_value(serde_json::json!([
        {"seq": 31, "timeMs": NOW - 2 * MIN, "reason": "RecipeFetchFailed",
         "subject": {"kind": "Recipe", "name": "bonfire"},
         "message": "recipe bonfire: fetch failed: could not resolve host; the last good content stays in force", "details": null},
        {"seq": 30, "timeMs": NOW - 2 * 86_400_000, "reason": "RecipeFetched",
         "subject": {"kind": "Recipe", "name": "bonfire"},
         "message": "recipe bonfire fetched: 3 version(s), newest 2.0.1+1.0.6-social-amd64", "details": null}
    ]))
    .unwrap()
}

#[test]
fn get_and_describe_recipes_in_every_format() {
    let all = recipes();
    for (output, name) in formats() {
        insta::assert_snapshot!(
            format!("get_recipes_{name}"),
            list(&all, output, recipes_table)
        );
        let text = match output {
            Output::Table => describe_recipe(&all[0], &recipe_history(), NOW),
            other => structured(
                &serde_json::json!({"object": all[0], "history": recipe_history()}),
                other,
            )
            .unwrap(),
        };
        insta::assert_snapshot!(format!("describe_recipe_{name}"), text);
    }
    insta::assert_snapshot!(
        "describe_recipe_directory_table",
        describe_recipe(&all[1], &[], NOW)
    );
}

fn workers() -> Vec<crate::runtime::workers::Status> {
    serde_json::from_value(serde_json::json!([
        {"name": "gauges", "schedule": "every 2s", "state": "Idle", "runs": 1800,
         "errors": 0, "consecutiveErrors": 0, "lastRunMs": NOW - 1_000, "lastDurationMs": 3,
         "lastSuccessMs": NOW - 1_000, "nextRunMs": NOW + 1_000},
        {"name": "nightly", "schedule": "cron 0 3 * * * (Europe/Berlin)", "state": "Idle",
         "runs": 2, "errors": 0, "consecutiveErrors": 0, "lastRunMs": NOW - 9 * 3_600_000,
         "lastSuccessMs": NOW - 9 * 3_600_000 + 90_000, "nextRunMs": NOW + 14 * 3_600_000},
        {"name": "orphan-sweep", "schedule": "every 1s", "state": "Backoff", "runs": 3600,
         "errors": 3, "consecutiveErrors": 2, "lastRunMs": NOW - 4_000,
         "lastSuccessMs": NOW - 7 * MIN,
         "lastError": "listing the swarm's objects failed: docker did not answer within 30s",
         "lastErrorMs": NOW - 4_000, "nextRunMs": NOW},
        {"name": "state-file", "schedule": "on change of /etc/hearth/state.yaml",
         "state": "Idle", "runs": 0, "errors": 0, "consecutiveErrors": 0}
    ]))
    .unwrap()
}

#[test]
fn get_workers_in_every_format() {
    for (output, name) in formats() {
        insta::assert_snapshot!(
            format!("get_workers_{name}"),
            list(&workers(), output, workers_table)
        );
    }
}
