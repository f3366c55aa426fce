//! `Sources`: the catalogue of declared `Recipe` resources — git repositories whose tags are versions, rendered the way the recipe's authors mean it — with the `--catalogue` directory behind them.
//!
//! # Rendering a git recipe at a version (as abra does)
//! 1. The files are those of the version's tag commit, written once into
//!    `<data>/recipes/trees/<commit>/` (at most [`Limits::max_trees`] trees are kept, the least
//!    recently used removed first).
//! 2. The env is the recipe's `.env.sample` ([`envfile`] semantics), then the caller's `env`
//!    (the app's env file edits; values may use `$COMPOSE_FILE`-style references to what came
//!    before), then `abra.sh`'s `export` lines (the recipe's config versions win, as abra
//!    merges them last), then `STACK_NAME` and `DOMAIN`, set by hearth.
//! 3. The compose files are `COMPOSE_FILE`, split at `:` (default `compose.yml`), merged in
//!    order and translated by [`crate::compose`] with that env.
//! 4. The recipe's service `app` (else the first service) carries
//!    `coop-cloud.<stack>.version=<version>`; its `coop-cloud.<stack>.timeout` label (seconds)
//!    is [`Rendered::timeout`].
//! 5. Every external secret named under the stack (`<stack>_<name>_<version>`) is to be
//!    generated ([`StackSpec::generated_secrets`]): its length is the `length=N` modifier of
//!    its `SECRET_<NAME>_VERSION` line, [`DEFAULT_SECRET_LENGTH`] otherwise; `generate=false`
//!    leaves it external (the operator creates it).
//!
//! A render's inputs — recipe, commit, version, stack, domain and env — are digested
//! ([`Rendered::digest`]); a tag's files cannot change, so equal digests are answered from a
//! cache and never rendered twice.
//!
//! [`StackSpec::generated_secrets`]: crate::swarm::spec::StackSpec::generated_secrets

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crd::recipe::{order_tags, IgnoredTag, PublishedVersion};
use crd::{RecipeSpec, RecipeVersion};

use super::envfile::{self, Entry};
use super::git::{self, Mirror};
use super::{
    Catalogue, DirCatalogue, Error, InputDigest, Recipe, RecipeFile, RenderRequest, Rendered,
    Result, SourceTree,
};
use crate::compose;
use crate::runtime::Ticket;
use crate::swarm::spec::GeneratedSecret;

/// Length of a generated secret whose `SECRET_*_VERSION` line has no `length=N` modifier.
pub const DEFAULT_SECRET_LENGTH: usize = 32;
/// Longest generated secret.
pub const MAX_SECRET_LENGTH: usize = 4096;
/// The env file of a recipe.
pub const ENV_SAMPLE: &str = ".env.sample";
/// The recipe's shell file whose `export` lines are read.
pub const ABRA_SH: &str = "abra.sh";
/// The compose file when `COMPOSE_FILE` is not set.
pub const DEFAULT_COMPOSE_FILE: &str = "compose.yml";
/// Renders kept in memory.
const RENDER_CACHE: usize = 256;

/// Bounds of the on-disk cache and of a fetch.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most commit trees kept on disk.
    pub max_trees: usize,
    /// Largest repository accepted (packed size).
    pub max_repo_bytes: u64,
    /// Longest a fetch may take.
    pub fetch_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_trees: 64,
            max_repo_bytes: 256 * 1024 * 1024,
            fetch_timeout: Duration::from_secs(120),
        }
    }
}

/// What a good fetch found (the content in force until the next good fetch).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Published {
    /// The followed (or default) branch's commit.
    pub head: Option<String>,
    /// Published versions, oldest first.
    pub versions: Vec<PublishedVersion>,
    /// Tags that are not versions.
    pub ignored: Vec<IgnoredTag>,
}

impl Published {
    /// The newest version.
    pub fn newest(&self) -> Option<&PublishedVersion> {
        self.versions.last()
    }
}

#[derive(Debug, Clone)]
enum Source {
    Git {
        spec: Box<RecipeSpec>,
        published: Option<Published>,
    },
    Dir(DirCatalogue),
    /// A Co-op Cloud checkout read in place (`spec.path` without a `recipe.yml`).
    Checkout(PathBuf),
}

/// How often a render was answered from the cache and how often computed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SourceStats {
    /// Renders answered from the cache (same inputs digest).
    pub hits: u64,
    /// Renders computed.
    pub renders: u64,
}

#[derive(Debug, Default)]
struct RenderCache {
    entries: BTreeMap<String, (Rendered, u64)>,
    tick: u64,
    stats: SourceStats,
}

/// The declared recipes, and the `--catalogue` directory for names no `Recipe` declares.
///
/// # Guarantees
/// - A failed fetch changes nothing: the last good tags stay the recipe's versions.
/// - Rendering never touches the network: it reads the mirror fetched earlier.
/// - A recipe named by a `Recipe` resource hides a directory recipe of the same name.
#[derive(Debug)]
pub struct Sources {
    root: PathBuf,
    fallback: Option<DirCatalogue>,
    limits: Limits,
    declared: Mutex<BTreeMap<String, Source>>,
    cache: Mutex<RenderCache>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update is a single insert or replace: a poisoned lock still holds a usable map.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// No git `Recipe` of that name is declared.
    #[error("no git recipe {0:?} is declared")]
    RecipeUndeclared(String),
    /// git failed (see the source). Retryable.
    #[error(transparent)]
    GitFailed(#[from] git::Error),
}

impl Sources {
    /// Sources caching under `root` (`<data dir>/recipes`), with `fallback` for names no
    /// `Recipe` declares.
    pub fn new(root: impl Into<PathBuf>, fallback: Option<DirCatalogue>, limits: Limits) -> Self {
        Sources {
            root: root.into(),
            fallback,
            limits,
            declared: Mutex::new(BTreeMap::new()),
            cache: Mutex::new(RenderCache::default()),
        }
    }

    /// The `--catalogue` directory catalogue, if any.
    pub fn fallback(&self) -> Option<&DirCatalogue> {
        self.fallback.as_ref()
    }

    /// Render cache hits and computed renders so far.
    pub fn stats(&self) -> SourceStats {
        lock(&self.cache).stats
    }

    fn mirror(&self, name: &str) -> Mirror {
        Mirror::new(self.root.join(name).join("mirror.git"))
    }

    /// Makes the declared set `recipes`: new ones are added (a git recipe whose status lists
    /// versions from an earlier process is usable at once from its mirror: the last good
    /// content stays in force across restarts), removed ones dropped, changed specs reset
    /// (until their next fetch).
    pub fn declare(&self, recipes: &[crd::Recipe]) {
        let mut declared = lock(&self.declared);
        let mut next = BTreeMap::new();
        for r in recipes {
            let name = r.metadata.name.clone();
            let source = match (&r.spec.path, declared.remove(&name)) {
                (Some(path), _) if Path::new(path).join(super::RECIPE_FILE).is_file() => {
                    Source::Dir(DirCatalogue::single(&name, PathBuf::from(path)))
                }
                (Some(path), _) => Source::Checkout(PathBuf::from(path)),
                (None, Some(Source::Git { spec, published })) if *spec == r.spec => {
                    Source::Git { spec, published }
                }
                (None, _) => {
                    let restored = (!r.status.versions.is_empty()
                        && r.status.observed_generation == r.metadata.generation
                        && self.mirror(&name).dir().join("HEAD").is_file())
                    .then(|| Published {
                        head: r.status.commit.clone(),
                        versions: r.status.versions.clone(),
                        ignored: r.status.ignored.clone(),
                    });
                    Source::Git {
                        spec: Box::new(r.spec.clone()),
                        published: restored,
                    }
                }
            };
            next.insert(name, source);
        }
        *declared = next;
    }

    /// The names of the declared git recipes.
    pub fn git_recipes(&self) -> Vec<String> {
        lock(&self.declared)
            .iter()
            .filter(|(_, s)| matches!(s, Source::Git { .. }))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// What the last good fetch of `name` found.
    pub fn published(&self, name: &str) -> Option<Published> {
        match lock(&self.declared).get(name) {
            Some(Source::Git { published, .. }) => published.clone(),
            _ => None,
        }
    }

    /// Fetches git recipe `name` and, when that succeeds, makes what it found the recipe's
    /// content.
    ///
    /// # Errors
    /// [`FetchError`]; the content in force is unchanged then.
    pub async fn fetch(&self, name: &str) -> Result<Published, FetchError> {
        let spec = match lock(&self.declared).get(name) {
            Some(Source::Git { spec, .. }) => (**spec).clone(),
            _ => return Err(FetchError::RecipeUndeclared(name.into())),
        };
        let Some(git) = &spec.git else {
            return Err(FetchError::RecipeUndeclared(name.into()));
        };
        let dir = self.root.join(name);
        let url_file = dir.join("url");
        // A new URL is a new repository: start its mirror afresh.
        if std::fs::read_to_string(&url_file).is_ok_and(|u| u != git.url) {
            let _ = std::fs::remove_dir_all(dir.join("mirror.git"));
        }
        let fetched = self
            .mirror(name)
            .fetch(git, self.limits.fetch_timeout, self.limits.max_repo_bytes)
            .await?;
        std::fs::write(&url_file, &git.url).map_err(|source| git::Error::CacheUnusable {
            path: url_file.clone(),
            source,
        })?;
        let range = spec
            .versions
            .as_deref()
            .and_then(|r| semver::VersionReq::parse(r).ok());
        let (versions, ignored) = order_tags(&fetched.tags, range.as_ref(), spec.prerelease);
        let published = Published {
            head: fetched.head,
            versions,
            ignored,
        };
        if let Some(Source::Git {
            spec: now,
            published: slot,
        }) = lock(&self.declared).get_mut(name)
        {
            // Only if the spec did not change while fetching.
            if **now == spec {
                *slot = Some(published.clone());
            }
        }
        Ok(published)
    }

    fn tree(&self, commit: &str, mirror: &Mirror) -> Result<PathBuf> {
        let trees = self.root.join("trees");
        let dir = trees.join(commit);
        if !dir.is_dir() {
            mirror
                .write_tree(commit, &dir)
                .map_err(|e| Error::DirectoryUnreadable {
                    path: dir.clone(),
                    source: std::io::Error::other(e.to_string()),
                })?;
            self.evict_trees(&trees, &dir);
        } else if let Ok(f) = std::fs::File::open(&dir) {
            let _ = f.set_modified(std::time::SystemTime::now());
        }
        Ok(dir)
    }

    fn evict_trees(&self, trees: &Path, keep: &Path) {
        let Ok(entries) = std::fs::read_dir(trees) else {
            return;
        };
        let mut all: Vec<(std::time::SystemTime, PathBuf)> = entries
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        if all.len() <= self.limits.max_trees {
            return;
        }
        all.sort();
        let excess = all.len() - self.limits.max_trees;
        for (_, path) in all.into_iter().filter(|(_, p)| p != keep).take(excess) {
            let _ = std::fs::remove_dir_all(path);
        }
    }

    fn render_git(
        &self,
        request: &RenderRequest<'_>,
        published: Option<Published>,
    ) -> Result<Rendered> {
        let Some(published) = published else {
            return Err(Error::RecipeNotFetched {
                recipe: request.recipe.to_string(),
            });
        };
        let version = find_version(&published, request.version).ok_or_else(|| {
            Error::VersionNotPublished {
                recipe: request.recipe.to_string(),
                version: request.version.to_string(),
                published: published
                    .versions
                    .iter()
                    .map(|v| v.version.clone())
                    .collect(),
            }
        })?;
        self.render_commit(
            request,
            &self.mirror(request.recipe),
            &version.commit,
            Deployed::Release(&version.version),
        )
    }

    /// Renders the tree of `commit` (read from `mirror`), from the cache when the inputs'
    /// digest was rendered before.
    fn render_commit(
        &self,
        request: &RenderRequest<'_>,
        mirror: &Mirror,
        commit: &str,
        deployed: Deployed<'_>,
    ) -> Result<Rendered> {
        let digest = digest(request, commit, &deployed.to_string());
        if let Some(hit) = self.cached(&digest) {
            return Ok(hit);
        }
        let tree = self.tree(commit, mirror)?;
        let rendered = render_tree_as(&tree, request, deployed, digest)?;
        self.remember(&rendered);
        Ok(rendered)
    }

    /// A render of these inputs, counting a hit or (when absent) a render to come.
    fn cached(&self, digest: &str) -> Option<Rendered> {
        let mut cache = lock(&self.cache);
        cache.tick += 1;
        let tick = cache.tick;
        if let Some((rendered, used)) = cache.entries.get_mut(digest) {
            *used = tick;
            let rendered = rendered.clone();
            cache.stats.hits += 1;
            return Some(rendered);
        }
        cache.stats.renders += 1;
        None
    }

    fn remember(&self, rendered: &Rendered) {
        let mut cache = lock(&self.cache);
        cache.tick += 1;
        let tick = cache.tick;
        cache
            .entries
            .insert(rendered.digest.clone(), (rendered.clone(), tick));
        while cache.entries.len() > RENDER_CACHE {
            let oldest = cache
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => cache.entries.remove(&k),
                None => break,
            };
        }
    }

    /// A git recipe's content at `at` — its followed branch (`HEAD` or the branch's name), a
    /// commit SHA or a tag in the mirror: a chaos deploy unless it is the tag commit of the
    /// requested version.
    fn render_git_at(
        &self,
        request: &RenderRequest<'_>,
        published: Option<Published>,
        spec: &RecipeSpec,
        at: &str,
    ) -> Result<Rendered> {
        if published.is_none() {
            return Err(Error::RecipeNotFetched {
                recipe: request.recipe.to_string(),
            });
        }
        let mirror = self.mirror(request.recipe);
        let commit = resolve_at(&mirror, request.recipe, spec, at)?;
        self.render_at_commit(request, published.as_ref(), &mirror, &commit)
    }

    /// `commit` as a release when it is the requested version's tag commit, else as a chaos
    /// deploy of that commit.
    fn render_at_commit(
        &self,
        request: &RenderRequest<'_>,
        published: Option<&Published>,
        mirror: &Mirror,
        commit: &str,
    ) -> Result<Rendered> {
        match published.and_then(|p| find_version(p, request.version)) {
            Some(v) if v.commit == commit => {
                self.render_commit(request, mirror, commit, Deployed::Release(&v.version))
            }
            _ => {
                let chaos = chaos_version(commit, false);
                self.render_commit(request, mirror, commit, Deployed::Chaos(&chaos))
            }
        }
    }

    /// A Co-op Cloud checkout (see [`checkout_content`]): a version is rendered from its tag
    /// commit; unreleased content (`at` naming the checked-out commit, or a checkout without
    /// tags) from the files as they are, as a chaos deploy (`+U` when uncommitted).
    fn render_checkout(
        &self,
        request: &RenderRequest<'_>,
        dir: &Path,
        at: Option<&str>,
    ) -> Result<Rendered> {
        let content = checkout_content(dir)?;
        let unpublished = || Error::VersionNotPublished {
            recipe: request.recipe.to_string(),
            version: request.version.to_string(),
            published: content.versions.iter().map(|v| v.to_string()).collect(),
        };
        let Some(mirror) = &content.mirror else {
            // Not a git work tree: the files are all there is.
            if at.is_none() && content.unreleased.as_deref() != Some(request.version) {
                return Err(unpublished());
            }
            return self.render_work_tree(request, dir, None);
        };
        let head = git::work_tree_state(dir);
        let Some(at) = at else {
            if let Some(v) = find_version(&content.published, request.version) {
                return self.render_commit(
                    request,
                    mirror,
                    &v.commit,
                    Deployed::Release(&v.version),
                );
            }
            if content.published.versions.is_empty()
                && content.unreleased.as_deref() == Some(request.version)
            {
                return self.render_work_tree(request, dir, head);
            }
            return Err(unpublished());
        };
        let commit = mirror.resolve(at).map_err(|_| Error::CommitNotFetched {
            recipe: request.recipe.to_string(),
            reference: at.to_string(),
            fetched: format!("the checkout {}", dir.display()),
        })?;
        match head {
            Some((h, dirty)) if h == commit => {
                self.render_work_tree(request, dir, Some((h, dirty)))
            }
            _ => self.render_at_commit(request, Some(&content.published), mirror, &commit),
        }
    }

    /// The files of `dir` as they are, as a chaos deploy: `head` is the checked-out commit and
    /// whether the tree has changes; without one (not a git work tree) the first 8 hex digits
    /// of the files' digest stand for the commit, with `+U` (nothing of it is committed).
    fn render_work_tree(
        &self,
        request: &RenderRequest<'_>,
        dir: &Path,
        head: Option<(String, bool)>,
    ) -> Result<Rendered> {
        let files = files_digest(dir)?;
        let chaos = match head {
            Some((commit, dirty)) => chaos_version(&commit, dirty),
            None => chaos_version(&files, true),
        };
        let digest = digest(request, &files, &Deployed::Chaos(&chaos).to_string());
        if let Some(hit) = self.cached(&digest) {
            return Ok(hit);
        }
        let rendered = render_tree_as(dir, request, Deployed::Chaos(&chaos), digest)?;
        self.remember(&rendered);
        Ok(rendered)
    }

    /// The tree of `commit` in `mirror`, as a release when it is `version`'s tag commit.
    fn commit_tree(
        &self,
        mirror: &Mirror,
        published: Option<&Published>,
        version: &str,
        commit: String,
    ) -> Result<SourceTree> {
        let tag = published
            .and_then(|p| find_version(p, version))
            .filter(|v| v.commit == commit)
            .map(|v| v.tag);
        Ok(SourceTree {
            dir: self.tree(&commit, mirror)?,
            commit,
            tag,
        })
    }

    fn source(&self, name: &str) -> Option<Source> {
        lock(&self.declared).get(name).cloned()
    }
}

/// What a render deploys, as the labels abra writes on the `app` service say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deployed<'a> {
    /// A published version: `coop-cloud.<stack>.version=<version>`.
    Release(&'a str),
    /// Unreleased content, a chaos deploy: `coop-cloud.<stack>.chaos=true` and
    /// `coop-cloud.<stack>.chaos-version=<short SHA>[+U]`; the version label the compose file
    /// carries is kept as it is (abra keeps the non-chaos version label on chaos deploys).
    Chaos(&'a str),
}

impl std::fmt::Display for Deployed<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Deployed::Release(v) => write!(f, "{v}"),
            Deployed::Chaos(c) => write!(f, "chaos:{c}"),
        }
    }
}

/// The chaos version abra writes: the commit's first 8 hex digits, `+U` when the tree had
/// uncommitted changes.
pub fn chaos_version(commit: &str, dirty: bool) -> String {
    let short: String = commit.chars().take(8).collect();
    if dirty {
        format!("{short}+U")
    } else {
        short
    }
}

/// What a Co-op Cloud checkout publishes.
#[derive(Debug, Default)]
struct CheckoutContent {
    /// Its git directory, when it is a git work tree.
    mirror: Option<Mirror>,
    /// Its tags as versions (none when it is not a git work tree).
    published: Published,
    /// Without tags: the version its compose file's `coop-cloud.${STACK_NAME}.version` label
    /// names — unreleased content, rendered as a chaos deploy.
    unreleased: Option<String>,
    /// Every version, oldest first.
    versions: Vec<RecipeVersion>,
}

/// Reads what the checkout at `dir` publishes: the tags of its git repository (ordered as a git
/// recipe's are), else the version label of its `compose.yml` as unreleased content.
fn checkout_content(dir: &Path) -> Result<CheckoutContent> {
    if !dir.join(DEFAULT_COMPOSE_FILE).is_file() && !dir.join(ENV_SAMPLE).is_file() {
        return Err(Error::DirectoryUnreadable {
            path: dir.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "neither recipe.yml, compose.yml nor .env.sample is there",
            ),
        });
    }
    let mut content = CheckoutContent {
        mirror: git::checkout_mirror(dir),
        ..CheckoutContent::default()
    };
    if let Some(m) = &content.mirror {
        let tags = m.tags().map_err(|e| Error::DirectoryUnreadable {
            path: dir.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let (versions, ignored) = order_tags(&tags, None, false);
        content.published = Published {
            head: git::work_tree_state(dir).map(|(h, _)| h),
            versions,
            ignored,
        };
    }
    if content.published.versions.is_empty() {
        content.unreleased = read_optional(&dir.join(DEFAULT_COMPOSE_FILE))?
            .as_deref()
            .and_then(compose_version_label)
            .filter(|v| RecipeVersion::parse(v).is_ok());
        content.versions = content
            .unreleased
            .iter()
            .filter_map(|v| RecipeVersion::parse(v).ok())
            .collect();
    } else {
        content.versions = content
            .published
            .versions
            .iter()
            .filter_map(|v| RecipeVersion::parse(&v.version).ok())
            .collect();
    }
    Ok(content)
}

/// The value of the `coop-cloud.${STACK_NAME}.version=` label in a compose file's text (what
/// `abra recipe sync` writes).
pub(crate) fn compose_version_label(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (_, rest) = line.split_once("coop-cloud.${STACK_NAME}.version=")?;
        let value = rest.trim().trim_end_matches(['"', '\'']).trim();
        (!value.is_empty()).then(|| value.to_string())
    })
}

/// SHA-256 (hex) of every file under `dir` but `.git`: relative paths and contents, sorted.
fn files_digest(dir: &Path) -> Result<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) -> Result<()> {
        let unreadable = |source| Error::DirectoryUnreadable {
            path: dir.to_path_buf(),
            source,
        };
        for entry in std::fs::read_dir(dir).map_err(unreadable)? {
            let entry = entry.map_err(unreadable)?;
            let path = entry.path();
            if entry.file_name() == ".git" {
                continue;
            }
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .display()
                .to_string();
            let kind = entry.file_type().map_err(unreadable)?;
            if kind.is_dir() {
                walk(root, &path, out)?;
            } else if kind.is_symlink() {
                let target = std::fs::read_link(&path).map_err(unreadable)?;
                out.push((rel, target.display().to_string().into_bytes()));
            } else {
                out.push((rel, std::fs::read(&path).map_err(unreadable)?));
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(dir, dir, &mut files)?;
    files.sort();
    Ok(files
        .iter()
        .fold(InputDigest::new(), |d, (path, bytes)| d.file(path, bytes))
        .hex())
}

/// The commit `at` names in a git recipe's mirror: its followed branch (`HEAD` or the
/// branch's name), a commit SHA or a tag.
///
/// # Errors
/// [`Error::CommitNotFetched`] when the mirror does not have it.
fn resolve_at(mirror: &Mirror, recipe: &str, spec: &RecipeSpec, at: &str) -> Result<String> {
    let branch = spec
        .git
        .as_ref()
        .and_then(|g| g.git_ref.as_ref())
        .map(|r| r.branch.as_str());
    let reference = if at == "HEAD" || Some(at) == branch {
        git::FOLLOWED_REF
    } else {
        at
    };
    mirror
        .resolve(reference)
        .map_err(|_| Error::CommitNotFetched {
            recipe: recipe.to_string(),
            reference: at.to_string(),
            fetched: branch.unwrap_or("the default branch").to_string(),
        })
}

/// The published version `wanted` names: its version or its tag, compared as recipe
/// versions (`1.0.0+1.29` is `1.0.0+1.29.0`).
fn find_version(published: &Published, wanted: &str) -> Option<PublishedVersion> {
    let parsed = RecipeVersion::parse(wanted).ok();
    published
        .versions
        .iter()
        .rev()
        .find(|v| {
            v.tag == wanted
                || v.version == wanted
                || parsed
                    .as_ref()
                    .is_some_and(|p| RecipeVersion::parse(&v.version).ok().as_ref() == Some(p))
        })
        .cloned()
}

fn digest(request: &RenderRequest<'_>, commit: &str, version: &str) -> String {
    InputDigest::new()
        .fields([
            "git-recipe/1",
            request.recipe,
            commit,
            version,
            request.stack,
            request.domain,
        ])
        .env(request.env)
        .hex()
}

fn read_optional(path: &Path) -> Result<Option<String>> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::DirectoryUnreadable {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The env a recipe at `tree` is rendered with (see the module docs), and the `.env.sample`
/// entries (for their modifiers).
///
/// # Errors
/// [`Error::RecipeRejected`] for a malformed `.env.sample`.
pub fn recipe_env(
    tree: &Path,
    request: &RenderRequest<'_>,
) -> Result<(BTreeMap<String, String>, Vec<Entry>)> {
    let sample_path = tree.join(ENV_SAMPLE);
    let mut entries = match read_optional(&sample_path)? {
        Some(text) => {
            envfile::parse(&text, &sample_path.display().to_string()).map_err(|problems| {
                Error::RecipeRejected {
                    path: sample_path.clone(),
                    problems,
                }
            })?
        }
        None => Vec::new(),
    };
    let sample = entries.clone();
    for (k, v) in request.env {
        let value = envfile::expand(v, &entries);
        entries.push(Entry {
            key: k.clone(),
            value,
            line: 0,
            modifiers: BTreeMap::new(),
        });
    }
    if let Some(text) = read_optional(&tree.join(ABRA_SH))? {
        entries.extend(envfile::abra_sh_exports(&text));
    }
    let mut env = envfile::to_map(&entries);
    env.insert("STACK_NAME".into(), request.stack.to_string());
    env.insert("DOMAIN".into(), request.domain.to_string());
    Ok((env, sample))
}

/// The compose files `COMPOSE_FILE` names, as paths inside `tree`.
///
/// # Errors
/// [`Error::RecipeRejected`] for a path outside the tree or a file that does not exist.
pub fn compose_paths(tree: &Path, env: &BTreeMap<String, String>) -> Result<Vec<PathBuf>> {
    let list = env
        .get("COMPOSE_FILE")
        .map(String::as_str)
        .filter(|s| !s.trim().is_empty())
        .unwrap_or(DEFAULT_COMPOSE_FILE);
    let mut problems = Vec::new();
    let mut paths = Vec::new();
    for f in list.split(':').map(str::trim).filter(|f| !f.is_empty()) {
        let rel = Path::new(f);
        if rel.is_absolute()
            || rel
                .components()
                .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            problems.push(format!(
                "COMPOSE_FILE: {f:?} must be a path inside the recipe"
            ));
        } else if !tree.join(rel).is_file() {
            problems.push(format!("COMPOSE_FILE: {f} does not exist in the recipe"));
        } else {
            paths.push(tree.join(rel));
        }
    }
    if problems.is_empty() {
        Ok(paths)
    } else {
        Err(Error::RecipeRejected {
            path: tree.to_path_buf(),
            problems,
        })
    }
}

/// Renders the recipe whose files are at `tree` as the published `version` (see the module
/// docs).
///
/// # Errors
/// [`Error::RecipeRejected`], [`Error::ComposeRejected`].
pub fn render_tree(
    tree: &Path,
    request: &RenderRequest<'_>,
    version: &str,
    digest: String,
) -> Result<Rendered> {
    render_tree_as(tree, request, Deployed::Release(version), digest)
}

/// Renders the recipe whose files are at `tree`, labelled as `deployed` says.
///
/// # Errors
/// [`Error::RecipeRejected`], [`Error::ComposeRejected`].
pub fn render_tree_as(
    tree: &Path,
    request: &RenderRequest<'_>,
    deployed: Deployed<'_>,
    digest: String,
) -> Result<Rendered> {
    let version = deployed.to_string();
    let (env, sample) = recipe_env(tree, request)?;
    let paths = compose_paths(tree, &env)?;
    let rejected = |source| Error::ComposeRejected {
        recipe: request.recipe.to_string(),
        version: version.clone(),
        source: Box::new(source),
    };
    let (mut sources, working_dir) = compose::read_sources(&paths).map_err(rejected)?;
    // Messages name the file as the recipe does, not the cache path.
    for (s, p) in sources.iter_mut().zip(&paths) {
        if let Ok(rel) = p.strip_prefix(tree) {
            s.name = rel.display().to_string();
        }
    }
    let translation = compose::translate(
        &sources,
        &compose::Options {
            stack: request.stack,
            env: &env,
            working_dir,
            files: &compose::FsFiles,
        },
    )
    .map_err(rejected)?;
    let mut stack = translation.stack;
    let timeout = label_ecosystem(&mut stack, request.stack, deployed);
    stack.generated_secrets =
        generated_secrets(&mut stack.externals.secrets, request.stack, &sample, &env);
    Ok(Rendered {
        stack,
        warnings: translation.warnings,
        variables: env,
        digest,
        timeout,
    })
}

/// Sets the labels abra writes on the recipe's `app` service (else its first): for a release
/// `coop-cloud.<stack>.version=<version>`; for a chaos deploy `coop-cloud.<stack>.chaos=true`
/// and `coop-cloud.<stack>.chaos-version=<short SHA>[+U]`. Returns its
/// `coop-cloud.<stack>.timeout` (seconds).
fn label_ecosystem(
    stack: &mut crate::swarm::spec::StackSpec,
    namespace: &str,
    deployed: Deployed<'_>,
) -> Option<Duration> {
    let app_name = format!("{namespace}_app");
    let index = stack
        .services
        .iter()
        .position(|s| s.name.as_deref() == Some(app_name.as_str()))
        .or(if stack.services.is_empty() {
            None
        } else {
            Some(0)
        })?;
    let labels = stack.services[index]
        .labels
        .get_or_insert_with(Default::default);
    match deployed {
        Deployed::Release(version) => {
            labels.insert(
                format!("coop-cloud.{namespace}.version"),
                version.to_string(),
            );
        }
        Deployed::Chaos(chaos) => {
            labels.insert(format!("coop-cloud.{namespace}.chaos"), "true".into());
            labels.insert(
                format!("coop-cloud.{namespace}.chaos-version"),
                chaos.to_string(),
            );
        }
    }
    labels
        .get(&format!("coop-cloud.{namespace}.timeout"))
        .and_then(|t| t.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// Moves the external secrets named under the stack out of `externals` into the list of
/// secrets hearth generates, with their lengths.
fn generated_secrets(
    externals: &mut Vec<String>,
    namespace: &str,
    sample: &[Entry],
    env: &BTreeMap<String, String>,
) -> Vec<GeneratedSecret> {
    let prefix = format!("{namespace}_");
    let mut generated = Vec::new();
    externals.retain(|name| {
        let Some(rest) = name.strip_prefix(&prefix) else {
            return true;
        };
        // `<name>_<version>`: the variable is SECRET_<NAME>_VERSION.
        let line = env
            .iter()
            .filter_map(|(k, v)| {
                let secret = k.strip_prefix("SECRET_")?.strip_suffix("_VERSION")?;
                (format!("{}_{v}", secret.to_lowercase()) == rest).then_some(k)
            })
            .next()
            .and_then(|k| sample.iter().rev().find(|e| &e.key == k));
        let modifiers = line.map(|e| &e.modifiers);
        if modifiers
            .and_then(|m| m.get("generate"))
            .map(String::as_str)
            == Some("false")
        {
            return true;
        }
        let length = modifiers
            .and_then(|m| m.get("length"))
            .and_then(|l| l.parse::<usize>().ok())
            .filter(|l| (1..=MAX_SECRET_LENGTH).contains(l))
            .unwrap_or(DEFAULT_SECRET_LENGTH);
        generated.push(GeneratedSecret {
            name: name.clone(),
            length,
        });
        false
    });
    generated
}

impl Catalogue for Sources {
    fn recipes(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = lock(&self.declared).keys().cloned().collect();
        if let Some(f) = &self.fallback {
            names.extend(f.recipes()?);
        }
        names.sort();
        names.dedup();
        Ok(names)
    }

    fn recipe(&self, name: &str) -> Result<Recipe> {
        match self.source(name) {
            Some(Source::Dir(d)) => d.recipe(name),
            Some(Source::Git { published, spec }) => {
                let published = published.ok_or_else(|| Error::RecipeNotFetched {
                    recipe: name.to_string(),
                })?;
                let versions: Vec<RecipeVersion> = published
                    .versions
                    .iter()
                    .filter_map(|v| RecipeVersion::parse(&v.version).ok())
                    .collect();
                Ok(Recipe {
                    name: name.to_string(),
                    dir: self.mirror(name).dir().to_path_buf(),
                    file: RecipeFile {
                        description: spec.git.map(|g| g.url).unwrap_or_default(),
                        compose_files: Vec::new(),
                        versions: versions.iter().map(ToString::to_string).collect(),
                        variables: BTreeMap::new(),
                    },
                    versions,
                })
            }
            Some(Source::Checkout(dir)) => {
                let content = checkout_content(&dir)?;
                Ok(Recipe {
                    name: name.to_string(),
                    file: RecipeFile {
                        description: format!("Co-op Cloud checkout {}", dir.display()),
                        compose_files: Vec::new(),
                        versions: content.versions.iter().map(ToString::to_string).collect(),
                        variables: BTreeMap::new(),
                    },
                    dir,
                    versions: content.versions,
                })
            }
            None => match &self.fallback {
                Some(f) => f.recipe(name),
                None => Err(Error::RecipeNotFound {
                    recipe: name.to_string(),
                    dir: self.root.clone(),
                    known: self.recipes().map(|r| r.join(", ")).unwrap_or_default(),
                }),
            },
        }
    }

    fn newest(&self, recipe: &str, include_prerelease: bool) -> Result<RecipeVersion> {
        match self.source(recipe) {
            // The tags were filtered by spec.prerelease when fetched, and are in the
            // ecosystem's order (build metadata does not order): the last one is the newest.
            Some(Source::Git { published, .. }) => {
                let published = published.ok_or_else(|| Error::RecipeNotFetched {
                    recipe: recipe.to_string(),
                })?;
                published
                    .newest()
                    .and_then(|v| RecipeVersion::parse(&v.version).ok())
                    .ok_or_else(|| Error::VersionNotPublished {
                        recipe: recipe.to_string(),
                        version: "any".into(),
                        published: Vec::new(),
                    })
            }
            _ => {
                let r = self.recipe(recipe)?;
                r.newest(include_prerelease)
                    .cloned()
                    .ok_or_else(|| Error::VersionNotPublished {
                        recipe: recipe.to_string(),
                        version: "any release".into(),
                        published: r.versions.iter().map(|v| v.to_string()).collect(),
                    })
            }
        }
    }

    fn inputs_digest(&self, request: &RenderRequest<'_>, fresh_since: Ticket) -> Option<String> {
        match self.source(request.recipe) {
            Some(Source::Dir(d)) => d.inputs_digest(request, fresh_since),
            // A tag's files cannot change: the digest is the commit's and the request's.
            Some(Source::Git { published, .. }) => {
                let version = find_version(&published?, request.version)?;
                Some(digest(request, &version.commit, &version.version))
            }
            // A checkout's files change in place: render to know.
            Some(Source::Checkout(_)) => None,
            None => self.fallback.as_ref()?.inputs_digest(request, fresh_since),
        }
    }

    fn render(&self, request: &RenderRequest<'_>) -> Result<Rendered> {
        match self.source(request.recipe) {
            Some(Source::Dir(d)) => d.render(request),
            Some(Source::Git { published, .. }) => self.render_git(request, published),
            Some(Source::Checkout(dir)) => self.render_checkout(request, &dir, None),
            None => match &self.fallback {
                Some(f) => f.render(request),
                None => Err(Error::RecipeNotFound {
                    recipe: request.recipe.to_string(),
                    dir: self.root.clone(),
                    known: self.recipes().map(|r| r.join(", ")).unwrap_or_default(),
                }),
            },
        }
    }

    fn snapshot_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    fn source_tree(&self, recipe: &str, version: &str, at: Option<&str>) -> Result<SourceTree> {
        let unpublished = |published: &Published| Error::VersionNotPublished {
            recipe: recipe.to_string(),
            version: version.to_string(),
            published: published
                .versions
                .iter()
                .map(|v| v.version.clone())
                .collect(),
        };
        match self.source(recipe) {
            Some(Source::Git { published, spec }) => {
                let published = published.ok_or_else(|| Error::RecipeNotFetched {
                    recipe: recipe.to_string(),
                })?;
                let mirror = self.mirror(recipe);
                let commit = match at {
                    None => {
                        find_version(&published, version)
                            .ok_or_else(|| unpublished(&published))?
                            .commit
                    }
                    Some(at) => resolve_at(&mirror, recipe, &spec, at)?,
                };
                self.commit_tree(&mirror, Some(&published), version, commit)
            }
            Some(Source::Checkout(dir)) => {
                let content = checkout_content(&dir)?;
                let Some(mirror) = &content.mirror else {
                    return Err(Error::SnapshotUnsupported {
                        recipe: recipe.to_string(),
                    });
                };
                let commit = match at {
                    None => {
                        find_version(&content.published, version)
                            .ok_or_else(|| unpublished(&content.published))?
                            .commit
                    }
                    Some(at) => mirror.resolve(at).map_err(|_| Error::CommitNotFetched {
                        recipe: recipe.to_string(),
                        reference: at.to_string(),
                        fetched: format!("the checkout {}", dir.display()),
                    })?,
                };
                self.commit_tree(mirror, Some(&content.published), version, commit)
            }
            Some(Source::Dir(_)) | None => Err(Error::SnapshotUnsupported {
                recipe: recipe.to_string(),
            }),
        }
    }

    fn render_at(&self, request: &RenderRequest<'_>, at: &str) -> Result<Rendered> {
        match self.source(request.recipe) {
            Some(Source::Dir(d)) => d.render_at(request, at),
            Some(Source::Git { published, spec }) => {
                self.render_git_at(request, published, &spec, at)
            }
            Some(Source::Checkout(dir)) => self.render_checkout(request, &dir, Some(at)),
            None => match &self.fallback {
                Some(f) => f.render_at(request, at),
                None => self.render(request),
            },
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
