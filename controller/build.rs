//! Build script: records the git commit the binary is built from, for `hearth --version`.
//!
//! `HEARTH_GIT_COMMIT` is the short hash of the commit HEAD names when the script runs (no
//! `-dirty` mark: the script re-runs when HEAD moves, not on every edit, so it could not keep
//! one honest), or `unknown` when there is no git or no repository (a source tarball). Set
//! `HEARTH_GIT_COMMIT` in the build's environment to override it (e.g. a packager's build).

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    Some(text.trim().to_owned())
}

fn main() {
    println!("cargo:rerun-if-env-changed=HEARTH_GIT_COMMIT");
    let commit = match std::env::var("HEARTH_GIT_COMMIT") {
        Ok(c) if !c.is_empty() => c,
        _ => {
            // Re-run when HEAD moves: HEAD itself (branch switch, detached commits), the
            // branch's ref and packed-refs (commits, rebases). Paths come from git, so they
            // are right in a worktree too.
            for path in ["HEAD", "packed-refs"] {
                if let Some(p) = git(&["rev-parse", "--git-path", path]) {
                    println!("cargo:rerun-if-changed={p}");
                }
            }
            if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
                if let Some(p) = git(&["rev-parse", "--git-path", &r]) {
                    println!("cargo:rerun-if-changed={p}");
                }
            }
            git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".to_owned())
        }
    };
    println!("cargo:rustc-env=HEARTH_GIT_COMMIT={commit}");
}
