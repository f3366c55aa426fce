//! Commands about the binary itself: `hearth completions` and `hearth healthcheck`.

use std::io::Write;
use std::time::Duration;

use clap::{Args, CommandFactory, ValueEnum};

use super::{ci, Cli, Error};

/// `hearth --version`: the crate's version and the commit it was built from (`build.rs`).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("HEARTH_GIT_COMMIT"),
    ")"
);

/// A shell `hearth completions` writes a script for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    /// bash: `hearth completions bash > /etc/bash_completion.d/hearth`.
    Bash,
    /// zsh: `hearth completions zsh > "${fpath[1]}/_hearth"`.
    Zsh,
    /// fish: `hearth completions fish > ~/.config/fish/completions/hearth.fish`.
    Fish,
}

/// `hearth completions`.
#[derive(Debug, Clone, Args)]
pub struct CompletionsArgs {
    /// The shell.
    pub shell: Shell,
}

/// `hearth healthcheck`.
#[derive(Debug, Clone, Args)]
pub struct HealthcheckArgs {
    /// The daemon's address.
    #[arg(long, env = "HEARTH_SERVER", default_value = crate::serve::DEFAULT_LISTEN)]
    pub server: std::net::SocketAddr,
    /// How long to wait for the answer.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// Writes the completion script for `args.shell`, generated from the command tree.
///
/// # Errors
/// [`Error::OutputFailed`].
pub fn completions(args: &CompletionsArgs, out: &mut dyn Write) -> Result<(), Error> {
    let shell = match args.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "hearth", &mut buf);
    out.write_all(&buf)?;
    Ok(())
}

/// `GET /healthz` of the daemon: Ok when it answers 200 within the timeout. The image's
/// health check (`deploy/Dockerfile`), which has no shell and no wget.
///
/// # Errors
/// [`Error::Unhealthy`] naming what failed.
pub async fn healthcheck(args: &HealthcheckArgs, out: &mut dyn Write) -> Result<(), Error> {
    let client = ci::Client::new(args.server);
    let unhealthy = |why: String| Error::Unhealthy {
        addr: args.server.to_string(),
        why,
    };
    let sent = tokio::time::timeout(
        args.timeout,
        client.send(hyper::Method::GET, "/healthz", Vec::new(), "text/plain"),
    )
    .await
    .map_err(|_| unhealthy(format!("no answer within {:?}", args.timeout)))?;
    let (status, body) = sent.map_err(|e| unhealthy(crate::errors::chain(&e)))?;
    if status != 200 {
        return Err(unhealthy(format!(
            "status {status}: {}",
            String::from_utf8_lossy(&body).trim()
        )));
    }
    writeln!(out, "{}", String::from_utf8_lossy(&body).trim())?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn version_names_the_crate_version_and_a_commit() {
        assert!(VERSION.starts_with(env!("CARGO_PKG_VERSION")));
        let commit = VERSION
            .split("(commit ")
            .nth(1)
            .unwrap()
            .trim_end_matches(')');
        assert!(
            commit == "unknown"
                || (commit.len() >= 7 && commit.chars().all(|c| c.is_ascii_hexdigit())),
            "{VERSION}"
        );
    }

    #[test]
    fn completions_are_generated_for_every_shell_and_know_the_commands() {
        for (shell, marker) in [
            (Shell::Bash, "complete -F"),
            (Shell::Zsh, "#compdef hearth"),
            (Shell::Fish, "complete -c hearth"),
        ] {
            let mut out = Vec::new();
            completions(&CompletionsArgs { shell }, &mut out).unwrap();
            let text = String::from_utf8(out).unwrap();
            assert!(text.contains(marker), "{shell:?}");
            for command in ["stack", "serve", "promote", "completions", "healthcheck"] {
                assert!(text.contains(command), "{shell:?} lacks {command}");
            }
        }
    }

    #[tokio::test]
    async fn healthcheck_fails_naming_the_address_when_nothing_listens() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let args = HealthcheckArgs {
            server: addr,
            timeout: Duration::from_secs(2),
        };
        let e = healthcheck(&args, &mut Vec::new()).await.unwrap_err();
        assert!(e.to_string().contains(&addr.to_string()), "{e}");
    }
}
