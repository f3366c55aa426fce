//! `hearth promote APP --to V [--allow-downgrade]` and `hearth rollback APP`: clients of the daemon's promotion endpoints.

use std::io::Write;
use std::time::{Duration, SystemTime};

use clap::Args;
use tokio::time::Instant;

use super::ci::{Client, Error, ServerArg};
use super::progress::{self, WaitArgs};
use crate::stack::{observe, Depth};
use crate::swarm::{DockerSwarm, Swarm};

/// `hearth promote`.
#[derive(Debug, Clone, Args)]
pub struct PromoteArgs {
    /// The WarmApp.
    pub app: String,
    /// The version to promote to.
    #[arg(long)]
    pub to: String,
    /// Allow going backwards in version order.
    #[arg(long)]
    pub allow_downgrade: bool,
    /// Waiting for the outcome (the default) or not (`--detach`).
    #[command(flatten)]
    pub wait: WaitArgs,
    /// The daemon.
    #[command(flatten)]
    pub server: ServerArg,
}

/// `hearth rollback`.
#[derive(Debug, Clone, Args)]
pub struct RollbackArgs {
    /// The WarmApp.
    pub app: String,
    /// Waiting for the outcome (the default) or not (`--detach`).
    #[command(flatten)]
    pub wait: WaitArgs,
    /// The daemon.
    #[command(flatten)]
    pub server: ServerArg,
}

fn print(out: &mut dyn Write, answer: &serde_json::Value) -> std::io::Result<()> {
    let get = |k: &str| answer.get(k).and_then(|v| v.as_str()).unwrap_or("?");
    match get("state") {
        "alreadyCurrent" => writeln!(out, "{} already runs {}", get("app"), get("to")),
        state => writeln!(
            out,
            "{} {} -> {}: {state}; the health-gated upgrade decides (`hearth get warmapps`, history)",
            get("app"),
            get("from"),
            get("to")
        ),
    }
}

/// `hearth promote`: asks the daemon, prints its answer, then (unless `--detach`) follows
/// the health-gated upgrade until the promotion's result: the app's phase from the daemon and,
/// when Docker is reachable from here, its stack's services and failed tasks.
///
/// # Errors
/// [`Error::RequestRefused`] and the other client errors; [`Error::WaitFailed`] when the
/// promotion was rolled back, superseded or timed out, or the wait's timeout passed.
pub async fn promote(
    args: &PromoteArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), Error> {
    let (server, app) = (&args.server, &args.app);
    let body = serde_json::json!({"to": args.to, "allowDowngrade": args.allow_downgrade});
    ask_and_follow(server, app, "promote", body, &args.wait, out, err).await
}

/// `hearth rollback`: as [`promote`], to the version before the last promotion.
///
/// # Errors
/// As [`promote`].
pub async fn rollback(
    args: &RollbackArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), Error> {
    let (server, app, body) = (&args.server, &args.app, serde_json::json!({}));
    ask_and_follow(server, app, "rollback", body, &args.wait, out, err).await
}

/// Posts `body` to warm app `app`'s `action` endpoint (`promote`, `rollback`) on `server`,
/// prints the daemon's answer, then follows the upgrade it started (see [`promote`]).
async fn ask_and_follow(
    server: &ServerArg,
    app: &str,
    action: &str,
    body: serde_json::Value,
    wait: &WaitArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), Error> {
    let client = server.client()?;
    let asked = SystemTime::now();
    let answer: serde_json::Value = client
        .post(&format!("/api/v1/warmapps/{app}/{action}"), &body)
        .await?;
    print(out, &answer)?;
    follow(&client, app, &answer, asked, wait, out, err).await
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Follows a submitted promotion to its result (see [`promote`]).
async fn follow(
    client: &Client,
    app: &str,
    answer: &serde_json::Value,
    asked: SystemTime,
    wait: &WaitArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), Error> {
    let get = |k: &str| {
        answer
            .get(k)
            .and_then(|v| v.as_str())
            .unwrap_or("?")
            .to_string()
    };
    let (from, to) = (get("from"), get("to"));
    if wait.detach || get("state") == "alreadyCurrent" {
        return Ok(());
    }
    let what = format!("{app} {from} -> {to}");
    // The stack's tasks are read straight from Docker when this user can; the daemon's phase
    // is followed either way.
    let docker = tokio::time::timeout(Duration::from_secs(3), DockerSwarm::connect_local())
        .await
        .ok()
        .and_then(Result::ok);
    let mut display = wait.display(err);
    if docker.is_none() {
        display.note("(Docker not reachable from here: following the daemon's phase only)")?;
    }
    let deadline = Instant::now() + wait.timeout;
    let mut tracker = progress::Tracker::default();
    let mut shown = String::new();
    let path = format!("/api/v1/warmapps/{app}");
    loop {
        let object: serde_json::Value = client.get(&path).await?;
        let status = |p: &str| {
            object
                .pointer(&format!("/status/{p}"))
                .and_then(|v| v.as_str())
                .map(String::from)
        };
        let phase = status("phase").unwrap_or_else(|| "?".into());
        let running = status("observedVersion").unwrap_or_else(|| "-".into());
        let line = format!("{app}: {phase}, running {running}");
        if line != shown {
            display.note(&line)?;
            shown = line;
        }
        if let (Some(docker), Some(stack)) = (&docker, status("stackName")) {
            if let Ok(seen) = observe(docker as &dyn Swarm, &stack, Depth::WithTasks).await {
                display.show(&tracker.update(progress::look(&seen, asked)))?;
            }
        }
        // Ours: the last promotion to this version made since we asked (a queued one is made
        // when its turn comes, later).
        let last = object.pointer("/status/promotion/last");
        let field = |k: &str| last.and_then(|l| l.get(k)).and_then(|v| v.as_str());
        let at = last
            .and_then(|l| l.get("atMs"))
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        let ours = field("to") == Some(to.as_str()) && at + 2000 >= ms(asked);
        match (ours, field("result")) {
            (true, Some("ready")) => {
                display.finish(None);
                writeln!(out, "{what}: ready")?;
                return Ok(());
            }
            (true, Some(result)) if result != "pending" => {
                display.finish(None);
                // The promotion's own account: the app's newest `Promoted` history entry.
                let history: Vec<serde_json::Value> = client
                    .get(&format!("/api/v1/history?kind=WarmApp&name={app}&limit=10"))
                    .await
                    .unwrap_or_default();
                let told = history
                    .iter()
                    .find(|e| e.get("reason").and_then(|r| r.as_str()) == Some("Promoted"))
                    .and_then(|e| e.get("message").and_then(|m| m.as_str()))
                    .map(String::from);
                return Err(Error::WaitFailed {
                    what,
                    why: why(result, told.or(status("lastError")), &tracker),
                });
            }
            _ => {}
        }
        if Instant::now() >= deadline {
            display.finish(None);
            return Err(Error::WaitFailed {
                what,
                why: why(
                    &format!(
                        "no result within {} (phase {phase})",
                        humantime::format_duration(wait.timeout)
                    ),
                    status("lastError"),
                    &tracker,
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `rolledBack: <last error>; failed tasks: …`.
fn why(result: &str, last_error: Option<String>, tracker: &progress::Tracker) -> String {
    let mut why = result.to_string();
    if let Some(e) = last_error {
        why = format!("{why}: {e}");
    }
    let failed = tracker.last_failures();
    if !failed.is_empty() {
        why = format!("{why}; failed tasks: {failed}");
    }
    why
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    #[test]
    fn promote_takes_an_app_a_version_and_allow_downgrade() {
        let cli = Cli::try_parse_from([
            "hearth",
            "promote",
            "web",
            "--to",
            "2.0.0",
            "--allow-downgrade",
            "--server",
            "127.0.0.1:9",
        ])
        .unwrap();
        let Command::Promote(a) = cli.command else {
            panic!()
        };
        assert_eq!((a.app.as_str(), a.to.as_str()), ("web", "2.0.0"));
        assert!(a.allow_downgrade);
        assert!(Cli::try_parse_from(["hearth", "promote", "web"]).is_err());
        let cli = Cli::try_parse_from(["hearth", "rollback", "web"]).unwrap();
        assert!(matches!(cli.command, Command::Rollback(r) if r.app == "web"));
    }

    #[test]
    fn answers_are_printed_in_one_line() {
        let mut out = Vec::new();
        print(
            &mut out,
            &serde_json::json!({"app": "web", "from": "1.0.0", "to": "1.1.0", "state": "queued"}),
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "web 1.0.0 -> 1.1.0: queued; the health-gated upgrade decides (`hearth get warmapps`, history)\n"
        );
    }
}
