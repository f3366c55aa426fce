//! Secrets and tokens never appear in logs (issue 7, item 6), on the real swarm with the real
//! `hearth` binary.
//!
//! For each log format (text, then JSON) the test writes a random API token and a recipe whose
//! compose file holds a file-based secret with a random value, starts `hearth serve` with
//! `RUST_LOG=debug` and that token file, and then:
//!
//! - drives the API over raw HTTP: a read without a token, mutations with a wrong token, with
//!   malformed `Authorization` headers (several of which *contain* the real token: a longer
//!   token, another scheme, no scheme, the token in base64, non-UTF-8 bytes) — each must be
//!   refused with 401 — and a mutation with the right token and a body of the wrong shape (422);
//! - runs the CLI at debug level against it: `hearth run start --deploy` (the daemon deploys
//!   the stack with the secret), a `run start` of an unknown recipe (fails), `hearth run
//!   finish` (verified teardown);
//! - runs `hearth stack deploy` and `hearth stack rm` directly (the CLI itself creates the
//!   secret), with an environment value read from an env file;
//!
//! and finally searches all of it — the daemon's log and every CLI command's stdout and
//! stderr — for the token, the secret value and the environment value, raw and in base64 (at
//! each of the three byte alignments, since base64 of a longer text holds them shifted).
//!
//! So that the search can fail, it also checks that the logs are not trivial: the daemon's log
//! holds debug lines, the paths of accepted and refused requests and the run's id, and the
//! CLI's output names the secret object (its name; never its value). Before the fix in
//! `runtime::logging::may_log` this test found bollard's debug log writing every Engine API
//! request body, i.e. the secret's data in base64.
//!
//! Docker objects: the run's stack `hr-<run>` and the CLI's stack `hearth-test-sec-…`, each
//! labelled `hearth.test=1` and removed (verified) by the test.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use controller::swarm::spec::base64_encode;
use controller::swarm::{LabelFilter, Swarm};
use hearth_tests::ci_kill::{inventory, NAMESPACE_LABEL};
use hearth_tests::leaks::{find_leaks, needles, random_hex, raw_request};
use hearth_tests::process::{free_addr, ServeProcess};
use hearth_tests::support::{eventually, hearth_bin, real_swarm, unique_name};

/// What one CLI command printed.
struct Captured {
    what: String,
    success: bool,
    stdout: String,
    stderr: String,
}

/// Runs the `hearth` CLI with `args` at debug level in `format`, with `env`.
fn hearth(what: &str, format: &str, args: &[&str], env: &[(&str, &Path)]) -> Captured {
    let out = Command::new(hearth_bin())
        .args(["--log-format", format])
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, *v)))
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Captured {
        what: what.to_string(),
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    }
}

/// Writes the recipe `sectest` (a service using a file-based secret) into `catalogue`.
fn write_recipe(catalogue: &Path, secret: &str) -> PathBuf {
    let recipe = catalogue.join("sectest");
    std::fs::create_dir_all(&recipe).unwrap();
    std::fs::write(
        recipe.join("recipe.yml"),
        "description: a service with a secret (security test)\ncomposeFiles: [compose.yml]\n\
         versions:\n  - 1.0.0\n",
    )
    .unwrap();
    std::fs::write(
        recipe.join("compose.yml"),
        "version: \"3.8\"\n\
         services:\n\
        \x20 app:\n\
        \x20   image: hearth-fixture/webapp:1.0.0\n\
        \x20   command: [\"/bin/sleep\", \"100000\"]\n\
        \x20   environment:\n\
        \x20     API_KEY: \"${API_KEY:-none}\"\n\
        \x20   secrets: [creds]\n\
        \x20   stop_grace_period: 1s\n\
        \x20   deploy:\n\
        \x20     endpoint_mode: dnsrr\n\
        \x20     labels: { hearth.test: \"1\" }\n\
         secrets:\n\
        \x20 creds:\n\
        \x20   file: ./secret.txt\n\
        \x20   labels: { hearth.test: \"1\" }\n",
    )
    .unwrap();
    // No trailing newline: the secret's data is exactly the value.
    std::fs::write(recipe.join("secret.txt"), secret).unwrap();
    recipe
}

/// Waits (up to 60 s) until nothing of `namespace` (or of hearth's run `run`) is left.
async fn assert_gone(swarm: &dyn Swarm, namespace: &str, run: &str) {
    eventually(
        &format!("{namespace} is gone"),
        Duration::from_secs(60),
        Duration::from_millis(200),
        || async {
            let left = inventory(swarm, namespace, run).await.unwrap();
            left.is_empty().then_some(())
        },
    )
    .await;
}

/// One pass of the scenario with the daemon and the CLI logging in `format`.
async fn scenario(swarm: &dyn Swarm, format: &str) {
    let dir = tempfile::tempdir().unwrap();
    let token = random_hex(32);
    let secret = format!("hearth-secret-{}", random_hex(24));
    let env_value = format!("hearth-env-{}", random_hex(24));
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let catalogue = dir.path().join("catalogue");
    let recipe = write_recipe(&catalogue, &secret);
    let env_file = dir.path().join("app.env");
    std::fs::write(&env_file, format!("API_KEY={env_value}\n")).unwrap();

    let addr = free_addr();
    let server = addr.to_string();
    let mut daemon = ServeProcess::new(
        dir.path(),
        addr,
        vec![
            "--catalogue".into(),
            catalogue.clone().into(),
            "--token-file".into(),
            token_file.clone().into(),
            "--label".into(),
            "hearth.test=1".into(),
            "--log-format".into(),
            format.into(),
        ],
    )
    .with_env("RUST_LOG", "debug");
    daemon.spawn();
    daemon.ready(Duration::from_secs(60)).await;

    // The API: reads pass, every mutation without the exact token is refused.
    assert_eq!(
        raw_request(addr, "GET", "/api/v1/runs", None, b"").await,
        200
    );
    let start_body = br#"{"recipe": "sectest", "version": "1.0.0"}"#;
    let wrong: Vec<(&str, Vec<u8>)> = vec![
        (
            "a wrong token",
            format!("Bearer {}", random_hex(32)).into_bytes(),
        ),
        (
            "the token with a suffix",
            format!("Bearer {token}0").into_bytes(),
        ),
        (
            "the token with a prefix",
            format!("Bearer 0{token}").into_bytes(),
        ),
        ("another scheme", format!("Token {token}").into_bytes()),
        ("no scheme", token.clone().into_bytes()),
        (
            "basic auth",
            format!("Basic {}", base64_encode(format!("ci:{token}").as_bytes())).into_bytes(),
        ),
        (
            "the token in base64",
            format!("Bearer {}", base64_encode(token.as_bytes())).into_bytes(),
        ),
        ("a bare scheme", b"Bearer".to_vec()),
        (
            "not UTF-8",
            [b"Bearer \xff\xfe".as_slice(), token.as_bytes()].concat(),
        ),
    ];
    for (what, header) in &wrong {
        let status = raw_request(addr, "POST", "/api/v1/runs", Some(header), start_body).await;
        // hyper may refuse a header with non-UTF-8 bytes itself (400); refused either way.
        let refused = status == 401 || (*what == "not UTF-8" && status == 400);
        assert!(refused, "{what} must be refused, got {status}");
    }
    let missing = raw_request(addr, "POST", "/api/v1/runs", None, start_body).await;
    assert_eq!(missing, 401, "a mutation without a token must be refused");
    let bearer = format!("Bearer {token}");
    let bad_body = raw_request(
        addr,
        "POST",
        "/api/v1/runs",
        Some(bearer.as_bytes()),
        br#"{"recipe": 5}"#,
    )
    .await;
    assert_eq!(
        bad_body, 422,
        "a body of the wrong shape with the right token is a 422"
    );

    // The CLI through the daemon, at debug level: deploy the run's stack, fail once, finish.
    let env = [("HEARTH_TOKEN_FILE", token_file.as_path())];
    let owner = std::process::id().to_string();
    let mut captured = Vec::new();
    let started = hearth(
        "run start --deploy",
        format,
        &[
            "run",
            "start",
            "--server",
            &server,
            "--recipe",
            "sectest",
            "--version",
            "1.0.0",
            "--owner-pid",
            &owner,
            "--deploy",
            // As before waiting became the default: this test is about secrets in output.
            "--detach",
            "-o",
            "json",
        ],
        &env,
    );
    assert!(
        started.success,
        "run start failed:\n{}\n{}",
        started.stdout, started.stderr
    );
    let answer: serde_json::Value = serde_json::from_str(&started.stdout).unwrap();
    let run = answer["run"].as_str().unwrap().to_string();
    let stack = answer["stack"].as_str().unwrap().to_string();
    captured.push(started);
    eventually(
        "the run's stack has its secret",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || async {
            let secrets = swarm
                .list_secrets(&LabelFilter::eq(NAMESPACE_LABEL, &stack))
                .await
                .unwrap();
            (secrets.len() == 1).then_some(())
        },
    )
    .await;
    let unknown = hearth(
        "run start of an unknown recipe",
        format,
        &[
            "run",
            "start",
            "--server",
            &server,
            "--recipe",
            "nosuchrecipe",
            "--version",
            "1.0.0",
            "--owner-pid",
            &owner,
            "--deploy",
        ],
        &env,
    );
    assert!(
        !unknown.success,
        "an unknown recipe must fail: {}",
        unknown.stdout
    );
    captured.push(unknown);
    let finished = hearth(
        "run finish",
        format,
        &["run", "finish", &run, "--server", &server],
        &env,
    );
    assert!(
        finished.success,
        "run finish failed:\n{}\n{}",
        finished.stdout, finished.stderr
    );
    captured.push(finished);
    assert_gone(swarm, &stack, &run).await;

    // The CLI on its own: it creates the secret itself.
    let name = unique_name("sec");
    let compose = recipe.join("compose.yml");
    let deployed = hearth(
        "stack deploy",
        format,
        &[
            "stack",
            "deploy",
            // Returns once the objects exist, as before waiting became the default: this test
            // is about what is printed and logged, not about convergence.
            "--detach",
            "-c",
            compose.to_str().unwrap(),
            "--env-file",
            env_file.to_str().unwrap(),
            "--label",
            "hearth.test=1",
            &name,
        ],
        &[],
    );
    let deploy_ok = deployed.success;
    let deploy_text = format!("{}\n{}", deployed.stdout, deployed.stderr);
    captured.push(deployed);
    let removed = hearth("stack rm", format, &["stack", "rm", "--force", &name], &[]);
    let rm_ok = removed.success;
    let rm_text = format!("{}\n{}", removed.stdout, removed.stderr);
    captured.push(removed);
    assert!(deploy_ok, "stack deploy failed:\n{deploy_text}");
    assert!(rm_ok, "stack rm failed:\n{rm_text}");
    assert_gone(swarm, &name, &name).await;
    assert!(
        deploy_text.contains(&format!("{name}_creds")),
        "stack deploy's output names the secret it created:\n{deploy_text}"
    );

    // Everything that was written.
    daemon.kill();
    let log_path = daemon.log_path();
    let serve_log = std::fs::read_to_string(&log_path).unwrap();
    let debug_marker = if format == "json" {
        "\"level\":\"DEBUG\""
    } else {
        "DEBUG"
    };
    for (what, marker) in [
        ("debug lines", debug_marker),
        ("accepted requests", "served a request"),
        (
            "refused requests",
            "refused a request without the right token",
        ),
        ("the request paths", "/api/v1/runs"),
        ("the run", run.as_str()),
    ] {
        assert!(
            serve_log.contains(marker),
            "the daemon's {format} log has no {what} ({marker:?}), so searching it proves \
             nothing:\n{serve_log}"
        );
    }
    let mut texts = vec![(
        format!("the daemon's log {}", log_path.display()),
        serve_log,
    )];
    for c in captured {
        texts.push((format!("stdout of `hearth {}`", c.what), c.stdout));
        texts.push((format!("stderr of `hearth {}`", c.what), c.stderr));
    }
    let mut all_needles = needles("the token", &token);
    all_needles.extend(needles("the secret", &secret));
    all_needles.extend(needles("the environment value", &env_value));
    let leaks = find_leaks(&texts, &all_needles);
    assert!(
        leaks.is_empty(),
        "{format} logs leak:\n{}",
        leaks.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_and_tokens_never_appear_in_the_logs_of_the_daemon_or_the_cli() {
    let Some(swarm) = real_swarm("security_logs").await else {
        return;
    };
    for format in ["text", "json"] {
        scenario(&swarm, format).await;
    }
}
