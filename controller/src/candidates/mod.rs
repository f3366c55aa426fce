//! Candidates and snapshots: a recipe's inputs (the files a render reads, and the env) copied into the store as an immutable artifact named by the SHA-256 of its content, rendered from that copy only.
//!
//! - [`Snapshot`]: the artifact — every file of the recipe's tree but `.git` (paths and bytes)
//!   and the env overrides the run was started with. [`Snapshot::digest`] is the hash of that
//!   content: equal content, equal digest, whoever made it.
//! - [`Upload`]: what `hearth run start --candidate DIR` sends — the working tree's files as
//!   the CI job has them, and its git HEAD and dirtiness (read on the client: the daemon may
//!   not see the job's filesystem).
//! - [`Snapshots`]: the artifacts in the store (small named values `snapshot-<digest>`,
//!   written once, never changed) and their files written out once under
//!   `<data>/recipes/snapshots/<digest>/` for rendering.
//!
//! # Guarantees
//! - What a run tests cannot change under it: the artifact is taken at `run start` and every
//!   render of the run (and of a warm app promoted to it) reads the artifact, never the
//!   working tree or the tag again.
//! - An artifact whose stored bytes do not hash to its name is refused ([`Error::DigestMismatch`]).
//!
//! # Caveats
//! A snapshot holds at most [`MAX_SNAPSHOT_BYTES`] of files and [`MAX_FILES`] files; artifacts
//! are kept (never collected) — a recipe's tree is a few KiB.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crd::{Content, ContentKind};
use serde::{Deserialize, Serialize};
use state::Store;

use crate::catalogue::sources::{render_tree_as, Deployed};
use crate::catalogue::{self, InputDigest, RenderRequest, Rendered};

/// Largest snapshot (sum of file sizes).
pub const MAX_SNAPSHOT_BYTES: usize = 512 * 1024;
/// Most files in a snapshot.
pub const MAX_FILES: usize = 2000;
/// Prefix of the store value holding a snapshot (followed by its digest).
pub const VALUE_PREFIX: &str = "snapshot-";

/// Errors of snapshots. None is retryable unless noted.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file of the tree could not be read.
    #[error("cannot read {path}")]
    TreeUnreadable {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The tree is larger than a snapshot may be.
    #[error("the recipe tree is too large to snapshot: {what} (limit {limit})")]
    TreeTooLarge {
        /// What exceeded.
        what: String,
        /// The limit.
        limit: usize,
    },
    /// An uploaded path is not a plain relative path inside the tree.
    #[error("files.{0}: must be a relative path inside the recipe (no `..`, no leading `/`)")]
    PathRejected(String),
    /// An uploaded file's content is not valid hex.
    #[error("files.{0}: content is not hex")]
    ContentRejected(String),
    /// No artifact of that digest is in the store.
    #[error("no snapshot {0} in the store")]
    SnapshotMissing(String),
    /// The stored artifact does not hash to its name (store corruption).
    #[error("snapshot {name} hashes to {actual}")]
    DigestMismatch {
        /// Its name.
        name: String,
        /// What its content hashes to.
        actual: String,
    },
    /// The store failed. Retryable.
    #[error(transparent)]
    StoreFailed(#[from] state::Error),
    /// Writing the files out for rendering failed. Retryable.
    #[error("cannot write snapshot files under {path}")]
    CacheUnusable {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Rendering the snapshot failed.
    #[error(transparent)]
    RenderFailed(#[from] Box<catalogue::Error>),
}

/// `Result` of snapshot operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One file of a snapshot: its bytes as hex (JSON-safe whatever they are).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct File {
    /// The bytes, hex-encoded.
    pub hex: String,
}

/// The artifact: the recipe tree's files and the env overrides.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Snapshot {
    /// Relative path (`/`-separated) → content.
    pub files: BTreeMap<String, File>,
    /// Env overrides the render uses (after `.env.sample`, before `abra.sh`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

impl Snapshot {
    /// SHA-256 (hex) of the content: each file's path, length and bytes in path order, then
    /// each env entry.
    ///
    /// # Errors
    /// [`Error::ContentRejected`] for a file whose hex does not decode.
    pub fn digest(&self) -> Result<String> {
        let mut digest = InputDigest::new().fields(["hearth-snapshot/1"]);
        for (path, file) in &self.files {
            let bytes = hex::decode(&file.hex).map_err(|_| Error::ContentRejected(path.clone()))?;
            digest = digest.file(path, &bytes);
        }
        Ok(digest.fields(["env"]).env(&self.env).hex())
    }

    /// Checks every path (relative, inside the tree) and the size limits.
    ///
    /// # Errors
    /// [`Error::PathRejected`], [`Error::ContentRejected`], [`Error::TreeTooLarge`].
    pub fn check(&self) -> Result<()> {
        if self.files.len() > MAX_FILES {
            return Err(Error::TreeTooLarge {
                what: format!("{} files", self.files.len()),
                limit: MAX_FILES,
            });
        }
        let mut total = 0usize;
        for (path, file) in &self.files {
            check_path(path)?;
            if file.hex.len() % 2 != 0 || !file.hex.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(Error::ContentRejected(path.clone()));
            }
            total += file.hex.len() / 2;
        }
        if total > MAX_SNAPSHOT_BYTES {
            return Err(Error::TreeTooLarge {
                what: format!("{total} bytes"),
                limit: MAX_SNAPSHOT_BYTES,
            });
        }
        Ok(())
    }

    /// The files of `dir` (every file but `.git`; symlinks as their target text).
    ///
    /// # Errors
    /// [`Error::TreeUnreadable`], [`Error::TreeTooLarge`].
    pub fn of_dir(dir: &Path, env: BTreeMap<String, String>) -> Result<Snapshot> {
        let mut files = BTreeMap::new();
        let mut total = 0usize;
        walk(dir, dir, &mut files, &mut total)?;
        let snapshot = Snapshot { files, env };
        snapshot.check()?;
        Ok(snapshot)
    }

    /// Writes the files under `dir` (which must not exist yet).
    fn write_to(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        for (path, file) in &self.files {
            let target = dir.join(path);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let bytes = hex::decode(&file.hex).map_err(std::io::Error::other)?;
            std::fs::write(target, bytes)?;
        }
        Ok(())
    }
}

fn check_path(path: &str) -> Result<()> {
    let p = Path::new(path);
    let plain = !path.is_empty()
        && !p.is_absolute()
        && p.components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
        && !path.contains('\\')
        && !path.chars().any(char::is_control);
    if plain {
        Ok(())
    } else {
        Err(Error::PathRejected(path.to_string()))
    }
}

fn walk(
    root: &Path,
    dir: &Path,
    out: &mut BTreeMap<String, File>,
    total: &mut usize,
) -> Result<()> {
    let unreadable = |source| Error::TreeUnreadable {
        path: dir.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(unreadable)? {
        let entry = entry.map_err(unreadable)?;
        if entry.file_name() == ".git" {
            continue;
        }
        let path = entry.path();
        let rel = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/");
        let kind = entry.file_type().map_err(unreadable)?;
        let bytes = if kind.is_dir() {
            walk(root, &path, out, total)?;
            continue;
        } else if kind.is_symlink() {
            std::fs::read_link(&path)
                .map_err(unreadable)?
                .display()
                .to_string()
                .into_bytes()
        } else {
            std::fs::read(&path).map_err(unreadable)?
        };
        *total += bytes.len();
        if *total > MAX_SNAPSHOT_BYTES {
            return Err(Error::TreeTooLarge {
                what: format!("more than {MAX_SNAPSHOT_BYTES} bytes"),
                limit: MAX_SNAPSHOT_BYTES,
            });
        }
        if out.len() >= MAX_FILES {
            return Err(Error::TreeTooLarge {
                what: format!("more than {MAX_FILES} files"),
                limit: MAX_FILES,
            });
        }
        out.insert(
            rel,
            File {
                hex: hex::encode(bytes),
            },
        );
    }
    Ok(())
}

/// A candidate working tree as `hearth run start|deploy --candidate DIR` uploads it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Upload {
    /// The tree's files.
    pub files: BTreeMap<String, File>,
    /// Its git HEAD commit, when it is a git checkout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Whether it had uncommitted changes.
    #[serde(default)]
    pub dirty: bool,
}

impl Upload {
    /// Reads the working tree at `dir` (on the CI job's side).
    ///
    /// # Errors
    /// [`Error::TreeUnreadable`], [`Error::TreeTooLarge`].
    pub fn of_dir(dir: &Path) -> Result<Upload> {
        let snapshot = Snapshot::of_dir(dir, BTreeMap::new())?;
        let head = catalogue::git::work_tree_state(dir);
        Ok(Upload {
            files: snapshot.files,
            commit: head.as_ref().map(|(c, _)| c.clone()),
            dirty: head.is_none_or(|(_, dirty)| dirty),
        })
    }
}

/// The snapshots in a store, and where their files are written out for rendering.
#[derive(Debug, Clone)]
pub struct Snapshots {
    store: Store,
    dir: PathBuf,
}

impl Snapshots {
    /// Snapshots in `store`, written out under `dir` (e.g. `<data>/recipes/snapshots`).
    pub fn new(store: Store, dir: impl Into<PathBuf>) -> Snapshots {
        Snapshots {
            store,
            dir: dir.into(),
        }
    }

    /// Stores `snapshot` (once: an artifact of that digest is never rewritten) and returns its
    /// digest.
    ///
    /// # Errors
    /// As [`Snapshot::check`], [`Error::StoreFailed`].
    pub async fn put(&self, snapshot: &Snapshot) -> Result<String> {
        snapshot.check()?;
        let digest = snapshot.digest()?;
        let key = format!("{VALUE_PREFIX}{digest}");
        if self.store.get_value::<Snapshot>(&key)?.is_none() {
            self.store.put_value(&key, snapshot).await?;
        }
        Ok(digest)
    }

    /// The snapshot named `digest`, checked against its name.
    ///
    /// # Errors
    /// [`Error::SnapshotMissing`], [`Error::DigestMismatch`], [`Error::StoreFailed`].
    pub fn get(&self, digest: &str) -> Result<Snapshot> {
        let snapshot = self
            .store
            .get_value::<Snapshot>(&format!("{VALUE_PREFIX}{digest}"))?
            .ok_or_else(|| Error::SnapshotMissing(digest.to_string()))?;
        let actual = snapshot.digest()?;
        if actual != digest {
            return Err(Error::DigestMismatch {
                name: digest.to_string(),
                actual,
            });
        }
        Ok(snapshot)
    }

    /// The directory holding the files of snapshot `digest`, written out on first use.
    fn tree(&self, digest: &str, snapshot: &Snapshot) -> Result<PathBuf> {
        let dir = self.dir.join(digest);
        if dir.is_dir() {
            return Ok(dir);
        }
        let cache = |source| Error::CacheUnusable {
            path: self.dir.clone(),
            source,
        };
        let tmp = self
            .dir
            .join(format!(".{digest}.{}", rand::random::<u32>()));
        snapshot.write_to(&tmp).map_err(cache)?;
        match std::fs::rename(&tmp, &dir) {
            Ok(()) => Ok(dir),
            // Another render wrote it first: same digest, same files.
            Err(_) if dir.is_dir() => {
                let _ = std::fs::remove_dir_all(&tmp);
                Ok(dir)
            }
            Err(e) => Err(cache(e)),
        }
    }

    /// The digest a render of `content` for `request` carries (the snapshot's digest, how it
    /// is labelled, and the request): equal, the render is the same.
    pub fn render_digest(content: &Content, request: &RenderRequest<'_>) -> String {
        InputDigest::new()
            .fields([
                "snapshot-render/1",
                &content.digest,
                &deployed_label(content, request.version),
                request.recipe,
                request.version,
                request.stack,
                request.domain,
            ])
            .env(request.env)
            .hex()
    }

    /// Renders `content` (its snapshot's files, never anything else) for `request`: a release
    /// labelled with `request.version`, a candidate as a chaos deploy of its commit. The env is
    /// the snapshot's overrides, then `request.env` (a warm app's own env).
    ///
    /// # Errors
    /// [`Error::SnapshotMissing`], [`Error::DigestMismatch`], [`Error::CacheUnusable`],
    /// [`Error::RenderFailed`].
    pub fn render(&self, content: &Content, request: &RenderRequest<'_>) -> Result<Rendered> {
        let snapshot = self.get(&content.digest)?;
        let tree = self.tree(&content.digest, &snapshot)?;
        let mut env = snapshot.env.clone();
        env.extend(request.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        let with_env = RenderRequest {
            env: &env,
            ..*request
        };
        let chaos = content.chaos_version();
        let deployed = match content.kind {
            ContentKind::Release => Deployed::Release(request.version),
            ContentKind::Commit | ContentKind::WorkTree => Deployed::Chaos(&chaos),
        };
        render_tree_as(
            &tree,
            &with_env,
            deployed,
            Self::render_digest(content, request),
        )
        .map_err(|e| Error::RenderFailed(Box::new(e)))
    }
}

fn deployed_label(content: &Content, version: &str) -> String {
    match content.kind {
        ContentKind::Release => version.to_string(),
        ContentKind::Commit | ContentKind::WorkTree => format!("chaos:{}", content.chaos_version()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("compose.yml"),
            "version: \"3.8\"\nservices:\n  app:\n    image: nginx:1.0\n",
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("conf")).unwrap();
        std::fs::write(dir.path().join("conf/a.tmpl"), [0u8, 159, 146, 150]).unwrap();
        std::fs::create_dir_all(dir.path().join(".git")).unwrap();
        std::fs::write(dir.path().join(".git/HEAD"), "ref").unwrap();
        dir
    }

    #[test]
    fn a_tree_snapshots_every_file_but_git_and_its_digest_is_its_content() {
        let dir = tree();
        let a = Snapshot::of_dir(dir.path(), BTreeMap::new()).unwrap();
        assert_eq!(
            a.files.keys().collect::<Vec<_>>(),
            ["compose.yml", "conf/a.tmpl"]
        );
        let b = Snapshot::of_dir(dir.path(), BTreeMap::new()).unwrap();
        assert_eq!(a.digest().unwrap(), b.digest().unwrap());
        std::fs::write(dir.path().join("conf/a.tmpl"), "changed").unwrap();
        let c = Snapshot::of_dir(dir.path(), BTreeMap::new()).unwrap();
        assert_ne!(a.digest().unwrap(), c.digest().unwrap());
        let env = BTreeMap::from([("A".to_string(), "1".to_string())]);
        let d = Snapshot::of_dir(dir.path(), env).unwrap();
        assert_ne!(c.digest().unwrap(), d.digest().unwrap());
    }

    #[test]
    fn uploads_with_paths_outside_the_tree_or_bad_hex_are_refused() {
        for bad in ["../x", "/etc/passwd", "a/../../b", ""] {
            let s = Snapshot {
                files: BTreeMap::from([(bad.to_string(), File { hex: "00".into() })]),
                env: BTreeMap::new(),
            };
            assert!(matches!(s.check(), Err(Error::PathRejected(_))), "{bad}");
        }
        let s = Snapshot {
            files: BTreeMap::from([("a".to_string(), File { hex: "zz".into() })]),
            env: BTreeMap::new(),
        };
        assert!(matches!(s.check(), Err(Error::ContentRejected(_))));
        let big = Snapshot {
            files: BTreeMap::from([(
                "a".to_string(),
                File {
                    hex: "00".repeat(MAX_SNAPSHOT_BYTES + 1),
                },
            )]),
            env: BTreeMap::new(),
        };
        assert!(matches!(big.check(), Err(Error::TreeTooLarge { .. })));
    }

    #[tokio::test]
    async fn a_stored_snapshot_renders_from_its_copy_after_the_tree_changes() {
        let dir = tree();
        let store = Store::in_memory().await.unwrap();
        let cache = tempfile::tempdir().unwrap();
        let snapshots = Snapshots::new(store, cache.path());
        let snapshot = Snapshot::of_dir(dir.path(), BTreeMap::new()).unwrap();
        let digest = snapshots.put(&snapshot).await.unwrap();
        assert_eq!(snapshots.put(&snapshot).await.unwrap(), digest);
        // The working tree changes after the snapshot: nothing of it reaches the render.
        std::fs::write(
            dir.path().join("compose.yml"),
            "version: \"3.8\"\nservices:\n  app:\n    image: nginx:9.9\n",
        )
        .unwrap();
        let content = Content {
            kind: ContentKind::WorkTree,
            tag: None,
            commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
            dirty: true,
            digest: digest.clone(),
            run: None,
        };
        let env = BTreeMap::new();
        let request = RenderRequest {
            recipe: "web",
            version: "1.0.0",
            stack: "hr-web-1",
            domain: "hr-web-1.test",
            env: &env,
        };
        let rendered = snapshots.render(&content, &request).unwrap();
        let app = &rendered.stack.services[0];
        assert_eq!(
            app.task_template
                .as_ref()
                .and_then(|t| t.container_spec.as_ref())
                .and_then(|c| c.image.as_deref()),
            Some("nginx:1.0")
        );
        let labels = app.labels.as_ref().unwrap();
        assert_eq!(
            labels
                .get("coop-cloud.hr-web-1.chaos-version")
                .map(String::as_str),
            Some("01234567+U")
        );
        assert!(matches!(
            snapshots.get(&"0".repeat(64)),
            Err(Error::SnapshotMissing(_))
        ));
    }
}
