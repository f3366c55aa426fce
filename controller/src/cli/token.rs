//! `hearth token create|list|revoke`: the operator's side of the tokens file (issue 19).
//!
//! These commands edit the file directly (whoever may write it is the daemon's admin); a
//! running daemon follows the file and puts every change in force within a second.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::access::{tokens_file, Scope};

/// `hearth token`.
#[derive(Debug, Clone, Subcommand)]
pub enum TokenCommand {
    /// Create a named token with a scope and print it — the only time it is shown (the file
    /// keeps its SHA-256 only).
    Create(CreateArgs),
    /// List the tokens' names and scopes (never a token).
    List(FileArgs),
    /// Revoke a token: the daemon refuses it (401) within a second.
    Revoke(RevokeArgs),
}

/// Where the tokens file is.
#[derive(Debug, Clone, Args)]
pub struct FileArgs {
    /// The tokens file (default: `<data-dir>/tokens`, the file `hearth serve` follows).
    #[arg(long, env = "HEARTH_TOKENS_FILE", value_name = "FILE")]
    pub tokens_file: Option<PathBuf>,
    /// Data directory (default: $HEARTH_DATA_DIR, $XDG_DATA_HOME/hearth, /var/lib/hearth for
    /// root, else ~/.local/share/hearth).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

impl FileArgs {
    /// The tokens file these arguments name.
    pub fn path(&self) -> PathBuf {
        self.tokens_file.clone().unwrap_or_else(|| {
            tokens_file::default_path(
                &self
                    .data_dir
                    .clone()
                    .unwrap_or_else(crate::serve::default_data_dir),
            )
        })
    }
}

/// `hearth token create NAME --scope SCOPE`.
#[derive(Debug, Clone, Args)]
pub struct CreateArgs {
    /// The token's name (recorded in the history of every change it makes).
    pub name: String,
    /// What it may do: `read` (every GET), `ci` (runs and slots, and reads), `admin`
    /// (everything).
    #[arg(long, value_enum)]
    pub scope: Scope,
    /// The tokens file.
    #[command(flatten)]
    pub file: FileArgs,
}

/// `hearth token revoke NAME`.
#[derive(Debug, Clone, Args)]
pub struct RevokeArgs {
    /// The token's name.
    pub name: String,
    /// The tokens file.
    #[command(flatten)]
    pub file: FileArgs,
}

/// Runs a `token` command: `create` prints the token on `out` (and nothing else there), the
/// notes go to `err`.
///
/// # Errors
/// [`tokens_file::Error`]: an invalid or taken name, an unreadable, too open or unwritable file.
pub fn run(
    command: &TokenCommand,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), super::Error> {
    match command {
        TokenCommand::Create(a) => {
            let path = a.file.path();
            let token = tokens_file::create(&path, &a.name, a.scope)?;
            writeln!(out, "{}", token.secret())?;
            writeln!(
                err,
                "created token {:?} with scope {} in {} — shown once, store it now (a running daemon accepts it within a second)",
                a.name,
                a.scope,
                path.display()
            )?;
        }
        TokenCommand::List(f) => {
            let entries = tokens_file::read(&f.path())?.unwrap_or_default();
            let rows: Vec<Vec<String>> = entries
                .iter()
                .map(|e| vec![e.name.clone(), e.scope.to_string()])
                .collect();
            super::table(out, &["NAME", "SCOPE"], &rows)?;
        }
        TokenCommand::Revoke(a) => {
            let path = a.file.path();
            tokens_file::revoke(&path, &a.name)?;
            writeln!(
                err,
                "revoked token {:?} in {} (a running daemon refuses it within a second)",
                a.name,
                path.display()
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn token_create_prints_the_token_once_and_list_shows_names_and_scopes_only() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens");
        let f = file.to_str().unwrap();
        let cli = crate::cli::Cli::try_parse_from([
            "hearth",
            "token",
            "create",
            "ci-github",
            "--scope",
            "ci",
            "--tokens-file",
            f,
        ])
        .unwrap();
        let crate::cli::Command::Token(command) = cli.command else {
            panic!()
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        run(&command, &mut out, &mut err).unwrap();
        let token = String::from_utf8(out).unwrap().trim().to_string();
        assert_eq!(token.len(), 64);
        assert!(!String::from_utf8(err).unwrap().contains(&token));
        let set = crate::access::TokenSet::new(tokens_file::read(&file).unwrap().unwrap());
        assert_eq!(set.find(&token), Some(("ci-github", Scope::Ci)));

        let list = TokenCommand::List(FileArgs {
            tokens_file: Some(file.clone()),
            data_dir: None,
        });
        let mut out = Vec::new();
        run(&list, &mut out, &mut Vec::new()).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text, "NAME        SCOPE\nci-github   ci\n");
        assert!(crate::cli::Cli::try_parse_from([
            "hearth", "token", "create", "x", "--scope", "root"
        ])
        .is_err());
    }
}
