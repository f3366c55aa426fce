//! The `git` CLI, as hearth uses it: a bare mirror per recipe fetched from its URL, its tags listed with their commits' times, and a commit's tree written out for rendering.
//!
//! Why the CLI and not a Rust git library: fetching over `file://`, `https://` and `ssh://`
//! with the operator's ssh setup, credential helpers and proxies is what `git` does every day;
//! the maintained pure-Rust option (gix) adds a large dependency tree for the same calls.
//! hearth runs four plumbing commands with a fixed environment (no prompts, no system or
//! global config, no automatic gc) and a timeout on the network one.
//!
//! # Caveats
//! `git` (≥ 2.20) must be on the daemon's `PATH`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crd::recipe::{GitSource, Tag};

/// Where the followed branch (or the remote's default branch) is kept in a mirror.
pub const FOLLOWED_REF: &str = "refs/hearth/followed";

/// git errors. All are retryable unless noted (the next fetch tries again).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `git` could not be started (not installed?). Not retryable without an operator.
    #[error("cannot run git")]
    GitUnstartable(#[source] std::io::Error),
    /// A git command failed; `stderr` is its last lines.
    #[error("git {command} failed: {stderr}")]
    CommandFailed {
        /// The subcommand.
        command: String,
        /// What git said (last lines, trimmed).
        stderr: String,
    },
    /// The fetch did not finish in time.
    #[error("git fetch did not finish within {0:?}")]
    FetchTimedOut(Duration),
    /// A file of the cache could not be written or read.
    #[error("cannot use the recipe cache at {path}")]
    CacheUnusable {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The repository is larger than the cache allows. Not retryable until it shrinks or the
    /// limit is raised.
    #[error("the repository takes {size_mib} MiB, more than the {limit_mib} MiB limit")]
    RepositoryTooLarge {
        /// Its packed size.
        size_mib: u64,
        /// The limit.
        limit_mib: u64,
    },
}

/// A bare mirror of one recipe repository.
#[derive(Debug, Clone)]
pub struct Mirror {
    dir: PathBuf,
}

/// What a fetch found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The followed branch's (or default branch's) commit; `None` for a repository with no
    /// branch.
    pub head: Option<String>,
    /// Every tag, peeled to its commit.
    pub tags: Vec<Tag>,
}

fn git(dir: &Path) -> Command {
    let mut c = Command::new("git");
    c.arg("--git-dir")
        .arg(dir)
        // safe.directory: a `spec.path` checkout owned by another user is read all the same
        // (the operator declared it); hooks never run, config from the system never applies.
        .args([
            "-c",
            "gc.auto=0",
            "-c",
            "core.hooksPath=/dev/null",
            "-c",
            "safe.directory=*",
        ])
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_ASKPASS", "/bin/false")
        .env("SSH_ASKPASS", "/bin/false")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE")
        .stdin(Stdio::null());
    c
}

fn last_lines(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(3)..].join(" / ")
}

fn run(mut c: Command, what: &str) -> Result<Vec<u8>, Error> {
    let out = c.output().map_err(Error::GitUnstartable)?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(Error::CommandFailed {
            command: what.into(),
            stderr: last_lines(&out.stderr),
        })
    }
}

/// Runs `c` to completion, killing it when `timeout` (wall-clock) passes.
fn run_with_deadline(mut c: Command, timeout: Duration) -> Result<std::process::Output, Error> {
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(Error::GitUnstartable)?;
    // Drain both pipes on threads so a chatty git cannot block on a full pipe.
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = std::time::Instant::now() + timeout;
    let status = loop {
        match child.try_wait().map_err(Error::GitUnstartable)? {
            Some(status) => break status,
            None if std::time::Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::FetchTimedOut(timeout));
            }
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    };
    Ok(std::process::Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

impl Mirror {
    /// The mirror at `dir` (created on first fetch).
    pub fn new(dir: impl Into<PathBuf>) -> Mirror {
        Mirror { dir: dir.into() }
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn init(&self) -> Result<(), Error> {
        if self.dir.join("HEAD").is_file() {
            return Ok(());
        }
        std::fs::create_dir_all(&self.dir).map_err(|source| Error::CacheUnusable {
            path: self.dir.clone(),
            source,
        })?;
        let mut c = git(&self.dir);
        c.args(["init", "--quiet", "--bare"]);
        run(c, "init").map(|_| ())
    }

    /// Fetches the tags and the followed branch (the remote's `HEAD` when `source` names
    /// none) from `source.url`, pruning tags that are gone, then lists them.
    ///
    /// # Guarantees
    /// Objects are never garbage-collected, so a commit listed by an earlier fetch stays
    /// readable ([`Mirror::write_tree`]) after its tag is removed upstream.
    ///
    /// # Errors
    /// [`Error::CommandFailed`] (unreachable URL, authentication, no such branch),
    /// [`Error::FetchTimedOut`], [`Error::RepositoryTooLarge`] (checked after the fetch),
    /// [`Error::GitUnstartable`], [`Error::CacheUnusable`].
    pub async fn fetch(
        &self,
        source: &GitSource,
        timeout: Duration,
        max_bytes: u64,
    ) -> Result<Fetched, Error> {
        self.init()?;
        let followed = match &source.git_ref {
            Some(r) => format!("+refs/heads/{}:{FOLLOWED_REF}", r.branch),
            None => format!("+HEAD:{FOLLOWED_REF}"),
        };
        let mut c = git(&self.dir);
        if let Some(key) = &source.ssh_key_file {
            c.env(
                "GIT_SSH_COMMAND",
                format!(
                    "ssh -i {} -o IdentitiesOnly=yes -o BatchMode=yes",
                    shell_quote(key)
                ),
            );
        }
        if let Some(token) = &source.token_file {
            // The helper reads the token from the file when git asks: the token is in no
            // command line and no environment variable.
            c.env("HEARTH_GIT_TOKEN_FILE", token)
                .env(
                    "HEARTH_GIT_USERNAME",
                    source.username.as_deref().unwrap_or("git"),
                )
                .args([
                    "-c",
                    "credential.helper=",
                    "-c",
                    "credential.helper=!f() { echo \"username=$HEARTH_GIT_USERNAME\"; printf 'password=%s\\n' \"$(head -n1 \"$HEARTH_GIT_TOKEN_FILE\")\"; }; f",
                ]);
        }
        c.args(["fetch", "--quiet", "--prune", "--force", "--no-tags"])
            .arg(&source.url)
            .arg("+refs/tags/*:refs/tags/*")
            .arg(&followed);
        // A blocking task with a wall-clock deadline: a subprocess's time is real time, and
        // tokio's paused test clock does not run ahead while a blocking task is under way (a
        // `tokio::time::timeout` around a child's IO would fire at once in virtual time).
        let out = tokio::task::spawn_blocking(move || run_with_deadline(c, timeout))
            .await
            .map_err(|e| Error::GitUnstartable(std::io::Error::other(e.to_string())))??;
        if !out.status.success() {
            return Err(Error::CommandFailed {
                command: "fetch".into(),
                stderr: last_lines(&out.stderr),
            });
        }
        let size = self.size_bytes()?;
        if size > max_bytes {
            return Err(Error::RepositoryTooLarge {
                size_mib: size / (1024 * 1024),
                limit_mib: max_bytes / (1024 * 1024),
            });
        }
        Ok(Fetched {
            head: self.resolve(FOLLOWED_REF).ok(),
            tags: self.tags()?,
        })
    }

    /// The commit a ref points at.
    ///
    /// # Errors
    /// [`Error::CommandFailed`] when it does not exist.
    pub fn resolve(&self, reference: &str) -> Result<String, Error> {
        let mut c = git(&self.dir);
        c.args(["rev-parse", "--verify", "--quiet"])
            .arg(format!("{reference}^{{commit}}"));
        let out = run(c, "rev-parse")?;
        Ok(String::from_utf8_lossy(&out).trim().to_string())
    }

    /// Every tag with the commit it points at (annotated tags peeled) and that commit's time.
    ///
    /// # Errors
    /// [`Error::CommandFailed`], [`Error::GitUnstartable`].
    pub fn tags(&self) -> Result<Vec<Tag>, Error> {
        let mut c = git(&self.dir);
        c.args([
            "for-each-ref",
            "--format=%(refname:strip=2)%09%(objectname)%09%(*objectname)%09%(committerdate:unix)%09%(*committerdate:unix)",
            "refs/tags",
        ]);
        let out = run(c, "for-each-ref")?;
        let text = String::from_utf8_lossy(&out);
        let mut tags = Vec::new();
        for line in text.lines() {
            let f: Vec<&str> = line.split('\t').collect();
            let [name, object, peeled, time, peeled_time] = f[..] else {
                continue;
            };
            let (commit, time) = if peeled.is_empty() {
                (object, time)
            } else {
                (peeled, peeled_time)
            };
            tags.push(Tag {
                name: name.to_string(),
                commit: commit.to_string(),
                commit_time: time.parse().unwrap_or(0),
            });
        }
        Ok(tags)
    }

    /// The mirror's packed and loose size, in bytes.
    fn size_bytes(&self) -> Result<u64, Error> {
        let mut c = git(&self.dir);
        c.args(["count-objects", "-v"]);
        let out = run(c, "count-objects")?;
        let kib: u64 = String::from_utf8_lossy(&out)
            .lines()
            .filter_map(|l| l.split_once(": "))
            .filter(|(k, _)| *k == "size" || *k == "size-pack")
            .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
            .sum();
        Ok(kib * 1024)
    }

    /// Writes the tree of `commit` into the new directory `into` (which must not exist): a
    /// temporary sibling is filled, then renamed, so a reader never sees half a tree.
    ///
    /// # Errors
    /// [`Error::CommandFailed`] for an unknown commit, [`Error::CacheUnusable`].
    pub fn write_tree(&self, commit: &str, into: &Path) -> Result<(), Error> {
        let unusable = |path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::CacheUnusable { path, source }
        };
        let parent = into.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(unusable(parent))?;
        let tmp = parent.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            into.file_name().and_then(|n| n.to_str()).unwrap_or("tree")
        ));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(unusable(&tmp))?;
        let index = tmp.with_extension("index");
        let mut c = git(&self.dir);
        c.env("GIT_INDEX_FILE", &index)
            .arg("--work-tree")
            .arg(&tmp)
            .args(["checkout", "--quiet", "--force"])
            .arg(commit)
            .args(["--", "."]);
        let result = run(c, "checkout");
        let _ = std::fs::remove_file(&index);
        if let Err(e) = result {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        match std::fs::rename(&tmp, into) {
            Ok(()) => Ok(()),
            // Another render wrote it first: theirs is the same tree.
            Err(_) if into.is_dir() => {
                let _ = std::fs::remove_dir_all(&tmp);
                Ok(())
            }
            Err(source) => Err(Error::CacheUnusable {
                path: into.to_path_buf(),
                source,
            }),
        }
    }
}

fn in_work_tree(dir: &Path) -> Command {
    let mut c = Command::new("git");
    c.arg("-C")
        .arg(dir)
        .args(["-c", "safe.directory=*", "-c", "core.fsmonitor=false"])
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE")
        .stdin(Stdio::null());
    c
}

/// The git directory of the work tree `dir` (a Co-op Cloud checkout), as a [`Mirror`] to read
/// its tags and commits from; `None` when `dir` is not the top of a git work tree.
pub fn checkout_mirror(dir: &Path) -> Option<Mirror> {
    let mut c = in_work_tree(dir);
    c.args(["rev-parse", "--show-toplevel", "--absolute-git-dir"]);
    let out = String::from_utf8_lossy(&run(c, "rev-parse").ok()?).into_owned();
    let mut lines = out.lines();
    let top = lines.next()?;
    let git_dir = lines.next()?;
    // A recipe in a subdirectory of some other repository is not a checkout of its own.
    let same = std::fs::canonicalize(top).ok()? == std::fs::canonicalize(dir).ok()?;
    same.then(|| Mirror::new(git_dir))
}

/// Whether a work tree has changes against its `HEAD` — modified, staged or untracked files
/// (abra counts an untracked compose overlay as unstaged changes) — for `+U` chaos versions,
/// and its `HEAD` commit; `None` when `dir` is not a git work tree or has no commit.
pub fn work_tree_state(dir: &Path) -> Option<(String, bool)> {
    let mut c = in_work_tree(dir);
    c.args(["rev-parse", "--verify", "--quiet", "HEAD^{commit}"]);
    let head = String::from_utf8_lossy(&run(c, "rev-parse").ok()?)
        .trim()
        .to_string();
    let mut c = in_work_tree(dir);
    c.args(["status", "--porcelain", "--untracked-files=normal"]);
    let dirty = !run(c, "status").ok()?.is_empty();
    Some((head, dirty))
}
