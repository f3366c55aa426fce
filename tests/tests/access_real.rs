//! Who may do what (issue 19), on the real swarm with the real `hearth` binary listening off
//! loopback (`0.0.0.0`, reached through 127.0.0.1) at `RUST_LOG=debug`:
//!
//! - tokens are made with `hearth token create` (a `read` and a `ci` one) before the start;
//!   the daemon's token file is the `admin` token;
//! - a `ci` token cannot delete a warm app, apply a state file, promote, roll back, sweep or
//!   run the nightly sweep — over raw HTTP (403 each) and through the CLI (each command fails
//!   naming the 403) — and the warm app is still there; it can start and finish a run; a
//!   `read` token cannot start one;
//! - redaction: the state file gives the warm app an env value drawn at random; every GET
//!   route answered to the `read` and the `ci` token, the status page (HTTP Basic, read
//!   token), `hearth get warmapps -o yaml`, `hearth describe warmapp` (table and YAML) and
//!   `hearth get history` with the read token, every CLI command's output and the daemon's
//!   whole debug log are searched for it (raw and base64 at three alignments) and for every
//!   token; so that the search can fail, the admin answer must hold the value, the non-admin
//!   answers the env name and the redaction marker;
//! - audit: history entries of mutations name their token (`ci-bot`, `admin`), and `hearth
//!   get history` shows the name;
//! - revocation: `hearth token revoke ci-bot` while the daemon runs; the time until the token
//!   gets 401 is measured and must be under a second.
//!
//! Docker objects: the warm app's stack `hw-<name>` (labelled `hearth.test=1` and
//! `hearth.test.run=<name>`), deleted through the API by the test and checked gone; removed by
//! label if the test fails before that.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hearth_tests::ci_kill::inventory;
use hearth_tests::daemon::example_catalogue;
use hearth_tests::leaks::{find_leaks, needles, random_hex, raw_exchange};
use hearth_tests::process::{free_addr, ServeProcess};
use hearth_tests::support::{
    eventually, hearth_bin, real_swarm, unique_name, RemoveOnDrop, RUN_LABEL, TEST_LABEL,
};

/// What one CLI command printed.
struct Captured {
    what: String,
    success: bool,
    stdout: String,
    stderr: String,
}

/// Runs the `hearth` CLI at debug level with `args`, sending `token` (if any) as
/// `$HEARTH_TOKEN`.
fn hearth(what: &str, args: &[&str], token: Option<&str>) -> Captured {
    let mut cmd = Command::new(hearth_bin());
    cmd.args(args)
        .env("RUST_LOG", "debug")
        .env_remove("HEARTH_TOKEN")
        .env_remove("HEARTH_TOKEN_FILE")
        .stdin(Stdio::null());
    if let Some(t) = token {
        cmd.env("HEARTH_TOKEN", t);
    }
    let out = cmd.output().unwrap();
    Captured {
        what: what.to_string(),
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    }
}

/// A concrete path for a route pattern: the warm app's name, the run's id, a made-up pool or
/// recipe (the state file holds none).
fn concrete(pattern: &str, app: &str, run: &str) -> String {
    let name = if pattern.starts_with("/api/v1/warmapps/") {
        app
    } else {
        "hearth-test-nothing"
    };
    pattern
        .split('/')
        .map(|seg| match seg {
            "{name}" => name,
            "{id}" => run,
            s if s.starts_with('{') => "hearth-test-nothing",
            s => s,
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn bearer(token: &str) -> Vec<u8> {
    format!("Bearer {token}").into_bytes()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ci_token_cannot_administer_non_admins_never_see_env_values_and_a_revoked_token_fails_within_a_second(
) {
    let Some(swarm) = real_swarm("access").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let data_arg = data.to_str().unwrap().to_string();
    let app = unique_name("acc");
    let stack = format!("hw-{app}");
    // Dropped after the daemon (declared before it): removes the stack if an assertion fails.
    let _leftovers = RemoveOnDrop::new(&app);
    let env_value = format!("hearth-env-{}", random_hex(24));
    let state = format!(
        "apiVersion: hearth/v1\nkind: WarmApp\nmetadata:\n  name: {app}\nspec:\n  recipe: webapp\n  \
         version: 1.0.0\n  health:\n    http:\n      service: app\n      port: 8080\n      \
         path: /healthz\n  env:\n    SMTP_PASSWORD: \"{env_value}\"\n"
    );
    let state_file = dir.path().join("state.yml");
    std::fs::write(&state_file, &state).unwrap();
    // The example webapp recipe with one more variable, passed to the service's environment
    // (a recipe must declare what a warm app may override).
    let catalogue = dir.path().join("catalogue");
    let recipe = catalogue.join("webapp");
    std::fs::create_dir_all(&recipe).unwrap();
    let example = example_catalogue().join("webapp");
    let recipe_yml = std::fs::read_to_string(example.join("recipe.yml")).unwrap();
    std::fs::write(
        recipe.join("recipe.yml"),
        format!(
            "{recipe_yml}\n  SMTP_PASSWORD:\n    default: \"none\"\n    description: a secret\n"
        ),
    )
    .unwrap();
    let compose = std::fs::read_to_string(example.join("compose.yml")).unwrap();
    assert!(compose.contains("      PORT: \"${PORT}\"\n"), "{compose}");
    std::fs::write(
        recipe.join("compose.yml"),
        compose.replace(
            "      PORT: \"${PORT}\"\n",
            "      PORT: \"${PORT}\"\n      SMTP_PASSWORD: \"${SMTP_PASSWORD}\"\n",
        ),
    )
    .unwrap();

    // Tokens made before the start, as an operator would.
    let mut captured = Vec::new();
    let mut token = |name: &str, scope: &str| {
        let c = hearth(
            &format!("token create {name}"),
            &[
                "token",
                "create",
                name,
                "--scope",
                scope,
                "--data-dir",
                &data_arg,
            ],
            None,
        );
        assert!(c.success, "token create failed: {}", c.stderr);
        let secret = c.stdout.trim().to_string();
        assert_eq!(secret.len(), 64, "{}", c.stdout);
        captured.push(c);
        secret
    };
    let reader = token("reader", "read");
    let ci = token("ci-bot", "ci");

    let addr = free_addr();
    let server = addr.to_string();
    let mut daemon = ServeProcess::new(
        dir.path(),
        addr,
        vec![
            "--state".into(),
            state_file.clone().into(),
            "--catalogue".into(),
            catalogue.clone().into(),
            "--label".into(),
            format!("{}={}", TEST_LABEL.0, TEST_LABEL.1).into(),
            "--label".into(),
            format!("{RUN_LABEL}={app}").into(),
        ],
    )
    .listening_on(format!("0.0.0.0:{}", addr.port()))
    .with_env("RUST_LOG", "debug");
    daemon.spawn();
    daemon.ready(Duration::from_secs(60)).await;
    let admin = controller::access::admin_token::read(&data.join("token"))
        .unwrap()
        .secret()
        .to_string();

    // Off loopback, reads need a token too.
    let (status, _) = raw_exchange(addr, "GET", "/api/v1/warmapps", None, b"").await;
    assert_eq!(status, 401, "an anonymous read off loopback");
    let (status, _) = raw_exchange(addr, "GET", "/healthz", None, b"").await;
    assert_eq!(status, 200, "/healthz is always open");

    // The warm app deploys.
    let history_path = format!("/api/v1/history?kind=warmapp&name={app}");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (_, text) = raw_exchange(addr, "GET", &history_path, Some(&bearer(&admin)), b"").await;
        if text.contains("\"Deployed\"") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the warm app was not deployed within 90 s: {text}\n{}",
            std::fs::read_to_string(daemon.log_path())
                .unwrap_or_default()
                .lines()
                .filter(|l| !l.contains("served a request") && !l.contains("DEBUG"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // A ci token cannot administer: raw HTTP…
    let promote = br#"{"to": "1.1.0"}"#;
    for (method, path, body) in [
        ("DELETE", format!("/api/v1/warmapps/{app}"), b"".as_slice()),
        (
            "POST",
            "/api/v1/apply?file=state.yml".to_string(),
            state.as_bytes(),
        ),
        (
            "POST",
            format!("/api/v1/warmapps/{app}/promote"),
            promote.as_slice(),
        ),
        (
            "POST",
            format!("/api/v1/warmapps/{app}/rollback"),
            b"".as_slice(),
        ),
        ("POST", "/api/v1/sweep".to_string(), b"{}".as_slice()),
        ("POST", "/api/v1/nightly".to_string(), b"".as_slice()),
    ] {
        let (status, text) = raw_exchange(addr, method, &path, Some(&bearer(&ci)), body).await;
        assert_eq!(status, 403, "{method} {path} with the ci token: {text}");
        assert!(text.contains("\"Forbidden\""), "{text}");
    }
    // …and through the CLI.
    let state_arg = state_file.to_str().unwrap().to_string();
    for (what, args) in [
        (
            "delete",
            vec!["delete", "warmapp", &app, "--server", &server],
        ),
        (
            "apply",
            vec!["apply", "-f", &state_arg, "--server", &server],
        ),
        (
            "promote",
            vec!["promote", &app, "--to", "1.1.0", "--server", &server],
        ),
        ("rollback", vec!["rollback", &app, "--server", &server]),
        ("sweep", vec!["sweep", "--server", &server]),
        ("sweep --now", vec!["sweep", "--now", "--server", &server]),
    ] {
        let c = hearth(&format!("{what} with the ci token"), &args, Some(&ci));
        assert!(
            !c.success,
            "{what} with the ci token must fail: {}",
            c.stdout
        );
        assert!(
            c.stderr.contains("403") || c.stderr.contains("needs admin"),
            "{what}: {}",
            c.stderr
        );
        captured.push(c);
    }
    let (status, _) = raw_exchange(
        addr,
        "GET",
        &format!("/api/v1/warmapps/{app}"),
        Some(&bearer(&admin)),
        b"",
    )
    .await;
    assert_eq!(status, 200, "the warm app is still there");

    // What a ci token is for: a run, started and finished through the CLI; a read token
    // cannot start one.
    let owner = std::process::id().to_string();
    let start = [
        "run",
        "start",
        "--server",
        &server,
        "--recipe",
        "webapp",
        "--version",
        "1.0.0",
        "--owner-pid",
        &owner,
        "-o",
        "json",
    ];
    let refused = hearth("run start with the read token", &start, Some(&reader));
    assert!(
        !refused.success && refused.stderr.contains("403"),
        "{}",
        refused.stderr
    );
    captured.push(refused);
    let started = hearth("run start with the ci token", &start, Some(&ci));
    assert!(started.success, "{}", started.stderr);
    let run = serde_json::from_str::<serde_json::Value>(&started.stdout).unwrap()["run"]
        .as_str()
        .unwrap()
        .to_string();
    captured.push(started);
    let finished = hearth(
        "run finish with the ci token",
        &["run", "finish", &run, "--server", &server],
        Some(&ci),
    );
    assert!(finished.success, "{}", finished.stderr);
    captured.push(finished);

    // Redaction: every GET route as read and as ci, the status page in a browser's way.
    let mut texts: Vec<(String, String)> = Vec::new();
    for (method, pattern, _) in controller::http::routes_with_access() {
        if method != "GET" {
            continue;
        }
        let path = concrete(&pattern, &app, &run);
        for (who, secret) in [("read", &reader), ("ci", &ci)] {
            let (status, text) = raw_exchange(addr, "GET", &path, Some(&bearer(secret)), b"").await;
            // The state file holds no pool and no recipe object: a made-up one is 404;
            // everything else exists.
            let made_up = pattern.contains("{pool}") || pattern.starts_with("/api/v1/recipes/");
            let want = if made_up { 404 } else { 200 };
            assert_eq!(status, want, "GET {path} with the {who} token: {text}");
            texts.push((format!("GET {path} answered to the {who} token"), text));
        }
    }
    let basic = controller::swarm::spec::base64_encode(format!("me:{reader}").as_bytes());
    let (status, page) = raw_exchange(
        addr,
        "GET",
        "/",
        Some(format!("Basic {basic}").as_bytes()),
        b"",
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains(&app), "the status page shows the app: {page}");
    texts.push(("the status page (Basic, read token)".into(), page));
    let warmapp_path = format!("/api/v1/warmapps/{app}");
    let (_, as_reader) =
        raw_exchange(addr, "GET", &warmapp_path, Some(&bearer(&reader)), b"").await;
    assert!(
        as_reader.contains("SMTP_PASSWORD") && as_reader.contains("<redacted>"),
        "a reader sees the env name, redacted: {as_reader}"
    );
    let (_, as_admin) = raw_exchange(addr, "GET", &warmapp_path, Some(&bearer(&admin)), b"").await;
    assert!(
        as_admin.contains(&env_value),
        "admin sees the value (else the search proves nothing): {as_admin}"
    );
    for (what, args) in [
        (
            "get warmapps -o yaml",
            vec!["get", "warmapps", "-o", "yaml", "--server", &server],
        ),
        (
            "describe warmapp",
            vec!["describe", "warmapp", &app, "--server", &server],
        ),
        (
            "describe warmapp -o yaml",
            vec![
                "describe", "warmapp", &app, "-o", "yaml", "--server", &server,
            ],
        ),
        (
            "get history",
            vec!["get", "history", "--limit", "50", "--server", &server],
        ),
    ] {
        let c = hearth(&format!("{what} with the read token"), &args, Some(&reader));
        assert!(c.success, "{what}: {}", c.stderr);
        captured.push(c);
    }
    let yaml = &captured
        .iter()
        .find(|c| c.what.starts_with("get warmapps"))
        .unwrap()
        .stdout;
    assert!(yaml.contains("SMTP_PASSWORD: <redacted>"), "{yaml}");

    // An edit of the env value: the daemon logs the diff of the state file, values redacted.
    let env_value_2 = format!("hearth-env-{}", random_hex(24));
    std::fs::write(&state_file, state.replace(&env_value, &env_value_2)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, text) = raw_exchange(addr, "GET", &warmapp_path, Some(&bearer(&admin)), b"").await;
        if text.contains(&env_value_2) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the edit was not applied: {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Audit: the run's entries name ci-bot; `hearth get history` shows it.
    let (_, history) = raw_exchange(
        addr,
        "GET",
        &format!("/api/v1/history?kind=run&name={run}"),
        Some(&bearer(&reader)),
        b"",
    )
    .await;
    assert!(history.contains("\"actor\":\"ci-bot\""), "{history}");
    let table = &captured
        .iter()
        .find(|c| c.what.starts_with("get history"))
        .unwrap()
        .stdout;
    assert!(
        table.lines().next().unwrap_or_default().contains(" BY "),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.contains(&run) && l.contains("ci-bot")),
        "{table}"
    );

    // Revocation without a restart: the ci token gets 401 within a second.
    let (status, _) = raw_exchange(addr, "GET", "/api/v1/runs", Some(&bearer(&ci)), b"").await;
    assert_eq!(status, 200);
    let revoked = hearth(
        "token revoke ci-bot",
        &["token", "revoke", "ci-bot", "--data-dir", &data_arg],
        None,
    );
    let since = Instant::now();
    assert!(revoked.success, "{}", revoked.stderr);
    captured.push(revoked);
    let took = loop {
        let (status, _) = raw_exchange(addr, "GET", "/api/v1/runs", Some(&bearer(&ci)), b"").await;
        if status == 401 {
            break since.elapsed();
        }
        assert_eq!(status, 200);
        assert!(
            since.elapsed() < Duration::from_secs(5),
            "the revoked token still passes after 5 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    println!("revoked token refused {took:?} after `hearth token revoke` returned");
    assert!(took < Duration::from_secs(1), "revocation took {took:?}");
    let (status, _) = raw_exchange(addr, "GET", "/api/v1/runs", Some(&bearer(&reader)), b"").await;
    assert_eq!(status, 200, "the other tokens stay");

    // Clean up through the API as admin: the Deleted entry names `admin`; the stack goes.
    let (status, text) =
        raw_exchange(addr, "DELETE", &warmapp_path, Some(&bearer(&admin)), b"").await;
    assert_eq!(status, 200, "{text}");
    let (_, history) = raw_exchange(addr, "GET", &history_path, Some(&bearer(&admin)), b"").await;
    assert!(
        history.contains("\"reason\":\"Deleted\"") && history.contains("\"actor\":\"admin\""),
        "{history}"
    );
    eventually(
        &format!("{stack} is gone"),
        Duration::from_secs(60),
        Duration::from_millis(300),
        || async {
            let left = inventory(&swarm, &stack, &stack).await.unwrap();
            left.is_empty().then_some(())
        },
    )
    .await;

    // Everything written: no env value, no token.
    daemon.kill();
    let log = std::fs::read_to_string(daemon.log_path()).unwrap();
    for (what, marker) in [
        ("debug lines", "DEBUG"),
        ("served requests", "served a request"),
        (
            "refused requests",
            "refused a request without the right token",
        ),
        ("the warm app", app.as_str()),
        ("the tokens file reload", "tokens file reloaded"),
        (
            "the env edit's diff",
            "spec.env.SMTP_PASSWORD: <redacted> -> <redacted>",
        ),
    ] {
        assert!(
            log.contains(marker),
            "the daemon's log has no {what} ({marker:?}), so searching it proves nothing:\n{log}"
        );
    }
    texts.push((
        format!("the daemon's log {}", daemon.log_path().display()),
        log,
    ));
    for c in captured {
        texts.push((format!("stdout of `hearth {}`", c.what), c.stdout));
        texts.push((format!("stderr of `hearth {}`", c.what), c.stderr));
    }
    let mut all = needles("the env value", &env_value);
    all.extend(needles("the edited env value", &env_value_2));
    let tokens_only: Vec<(String, String)> = [
        ("the read token", &reader),
        ("the ci token", &ci),
        ("the admin token", &admin),
    ]
    .iter()
    .flat_map(|(what, t)| needles(what, t))
    .collect();
    all.extend(tokens_only.iter().cloned());
    // `token create` prints its token on stdout once, by design: only its stderr is searched.
    let texts: Vec<(String, String)> = texts
        .into_iter()
        .filter(|(source, _)| !source.starts_with("stdout of `hearth token create"))
        .collect();
    let leaks = find_leaks(&texts, &all);
    assert!(leaks.is_empty(), "leaks:\n{}", leaks.join("\n"));
    let tokens_text = std::fs::read_to_string(data.join("tokens")).unwrap();
    assert!(
        find_leaks(&[("the tokens file".into(), tokens_text)], &tokens_only).is_empty(),
        "the tokens file holds hashes only"
    );
    drop(dir);
}
