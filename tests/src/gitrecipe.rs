//! The test bed's git fixture recipe as a test uses it: a `file://` clone to declare as a `Recipe`, and the edits `abra recipe upgrade`/`sync`/`release` make to it.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the test bed builds the fixture recipe repository (`scripts/testbed.sh`).
pub fn fixture_recipe() -> PathBuf {
    std::env::var_os("HEARTH_FIXTURE_RECIPE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/hearth-testbed/webapp-recipe"))
}

/// Whether the fixture recipe repository is there for `test`; when it is not, that fails the
/// test under `CI=true` and is a loud skip elsewhere (as [`crate::support::real_swarm`]).
pub fn fixture_recipe_present(test: &str) -> bool {
    let base = fixture_recipe();
    if base.join(".git").is_dir() {
        return true;
    }
    assert!(
        !crate::support::in_ci(),
        "the fixture recipe repository {} is missing: run scripts/testbed.sh",
        base.display()
    );
    eprintln!(
        "SKIP {test}: no fixture recipe repository at {}",
        base.display()
    );
    false
}

/// Runs `git -C dir args…` with a fixed identity and no global config.
///
/// # Panics
/// When git fails.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=hearth-test",
            "-c",
            "user.email=test@hearth.invalid",
            "-c",
            "commit.gpgSign=false",
            "-c",
            "tag.gpgSign=false",
        ])
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Clones the fixture recipe into `into`.
///
/// # Panics
/// When git fails.
pub fn clone_fixture(into: &Path) {
    let out = Command::new("git")
        .args(["clone", "-q"])
        .arg(fixture_recipe())
        .arg(into)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Edits `compose.yml` in `repo` as `abra recipe upgrade` + `sync` would: the app's image tag
/// and the version label. Commits nothing.
///
/// # Panics
/// When the file cannot be read or written.
pub fn set_version(repo: &Path, version: &str, image: &str) {
    let path = repo.join("compose.yml");
    let text = std::fs::read_to_string(&path).expect("compose.yml");
    let mut out = String::new();
    for line in text.lines() {
        if line
            .trim_start()
            .starts_with("image: hearth-fixture/webapp:")
        {
            out.push_str(&format!("    image: hearth-fixture/webapp:{image}"));
        } else if line.contains("coop-cloud.${STACK_NAME}.version=") {
            out.push_str(&format!(
                "        - \"coop-cloud.${{STACK_NAME}}.version={version}\""
            ));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    std::fs::write(&path, out).expect("compose.yml written");
}

/// Publishes `version` (image `image`) in `repo`: [`set_version`], commit, tag. Returns the
/// tag's commit.
pub fn publish(repo: &Path, version: &str, image: &str) -> String {
    set_version(repo, version, image);
    git(
        repo,
        &["commit", "-q", "-am", &format!("chore: publish {version}")],
    );
    git(repo, &["tag", version]);
    git(repo, &["rev-parse", "HEAD"])
}
