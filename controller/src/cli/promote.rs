//! `hearth promote APP --to V [--allow-downgrade]` and `hearth rollback APP`: clients of the daemon's promotion endpoints.

use std::io::Write;

use clap::Args;

use super::ci::{Error, ServerArg};

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
    /// The daemon.
    #[command(flatten)]
    pub server: ServerArg,
}

/// `hearth rollback`.
#[derive(Debug, Clone, Args)]
pub struct RollbackArgs {
    /// The WarmApp.
    pub app: String,
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

/// `hearth promote APP --to V`.
///
/// # Errors
/// [`Error::DaemonUnreachable`], [`Error::RequestRefused`] (with the daemon's message naming
/// the field at fault), [`Error::AnswerUnreadable`], [`Error::OutputFailed`].
pub async fn promote(args: &PromoteArgs, out: &mut dyn Write) -> Result<(), Error> {
    let answer: serde_json::Value = args
        .server
        .client()?
        .post(
            &format!("/api/v1/warmapps/{}/promote", args.app),
            &serde_json::json!({"to": args.to, "allowDowngrade": args.allow_downgrade}),
        )
        .await?;
    print(out, &answer)?;
    Ok(())
}

/// `hearth rollback APP`: back to the version before the app's last promotion that became
/// Ready.
///
/// # Errors
/// As [`promote`].
pub async fn rollback(args: &RollbackArgs, out: &mut dyn Write) -> Result<(), Error> {
    let answer: serde_json::Value = args
        .server
        .client()?
        .post(
            &format!("/api/v1/warmapps/{}/rollback", args.app),
            &serde_json::json!({}),
        )
        .await?;
    print(out, &answer)?;
    Ok(())
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
