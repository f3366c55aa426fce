//! The recipe catalogue: which recipes and versions exist, and how a version renders to a stack spec.
//!
//! [`Catalogue`] is the seam; [`DirCatalogue`] reads a directory:
//!
//! ```text
//! <dir>/<recipe>/recipe.yml     what the recipe publishes (see [`RecipeFile`])
//! <dir>/<recipe>/compose.yml    compose file(s), `${VAR}`-interpolated at render time
//! ```
//!
//! ```yaml
//! # recipe.yml
//! description: the fixture web app
//! composeFiles: [compose.yml]          # merged in order, as `docker stack deploy -c a -c b`
//! versions: [1.0.0, 1.1.0, 2.0.0]      # published versions, any order
//! variables:                           # what the compose files read besides the built-ins
//!   PORT: { default: "8080", description: port the app listens on }
//!   ADMIN_EMAIL: { required: true }
//! ```
//!
//! Rendering sets the built-in variables `VERSION`, `STACK_NAME` and `DOMAIN`, then the
//! recipe's defaults, then the caller's overrides, and translates the compose files with
//! [`crate::compose`].

mod digest;
mod dir;
pub mod envfile;
pub mod git;
pub mod sources;

use std::collections::BTreeMap;
use std::path::PathBuf;

use crd::RecipeVersion;
use serde::{Deserialize, Serialize};

use crate::compose;
use crate::runtime::Ticket;
use crate::swarm::spec::StackSpec;

pub(crate) use digest::InputDigest;
pub use dir::{CacheStats, DirCatalogue};
pub use sources::{Published, SourceStats, Sources};

/// Name of the file describing a recipe inside its directory.
pub const RECIPE_FILE: &str = "recipe.yml";

/// Variables every render sets; a recipe may use them but not declare them.
pub const BUILTIN_VARIABLES: [&str; 3] = ["VERSION", "STACK_NAME", "DOMAIN"];

/// The contents of a `recipe.yml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RecipeFile {
    /// One line for humans.
    #[serde(default)]
    pub description: String,
    /// Compose files relative to the recipe directory, merged in order.
    pub compose_files: Vec<String>,
    /// Published versions (recipe versions such as `1.11.0+1.29.0`).
    pub versions: Vec<String>,
    /// Variables the compose files read besides the built-ins.
    #[serde(default)]
    pub variables: BTreeMap<String, Variable>,
}

/// One declared variable.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Variable {
    /// The value when the caller gives none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// The caller must give a value (no default may be set then).
    #[serde(default)]
    pub required: bool,
    /// What it is for.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// A loaded, checked recipe.
#[derive(Debug, Clone)]
pub struct Recipe {
    /// The recipe name (its directory name).
    pub name: String,
    /// Its directory.
    pub dir: PathBuf,
    /// What `recipe.yml` says.
    pub file: RecipeFile,
    /// The published versions, oldest first (recipe-version order).
    pub versions: Vec<RecipeVersion>,
}

impl Recipe {
    /// The newest published version; pre-releases (such as `2.1.0-broken`) only when
    /// `include_prerelease`.
    pub fn newest(&self, include_prerelease: bool) -> Option<&RecipeVersion> {
        self.versions
            .iter()
            .rev()
            .find(|v| include_prerelease || is_release(v))
    }

    /// The published version equal to `version` (in recipe-version order: `1.0.0+1.29`
    /// equals `1.0.0+1.29.0`).
    pub fn published(&self, version: &str) -> Option<&RecipeVersion> {
        let wanted = RecipeVersion::parse(version).ok()?;
        self.versions.iter().find(|v| **v == wanted)
    }

    /// The compose files' paths.
    pub fn compose_paths(&self) -> Vec<PathBuf> {
        self.file
            .compose_files
            .iter()
            .map(|f| self.dir.join(f))
            .collect()
    }
}

fn is_release(v: &RecipeVersion) -> bool {
    v.recipe().pre.is_empty() && v.upstream().is_none_or(|u| u.pre.is_empty())
}

/// What to render.
#[derive(Debug, Clone, Copy)]
pub struct RenderRequest<'a> {
    /// The recipe.
    pub recipe: &'a str,
    /// A published version.
    pub version: &'a str,
    /// The stack name (`STACK_NAME`, and the namespace of the stack spec).
    pub stack: &'a str,
    /// The domain the stack serves (`DOMAIN`).
    pub domain: &'a str,
    /// Overrides of declared variables.
    pub env: &'a BTreeMap<String, String>,
}

/// A rendered version: the stack to deploy.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// The stack spec.
    pub stack: StackSpec,
    /// Compose keys docker stack deploy would ignore or adjust.
    pub warnings: Vec<compose::Warning>,
    /// Every variable the compose files were interpolated with.
    pub variables: BTreeMap<String, String>,
    /// SHA-256 (hex) of the render's inputs: the recipe, its files (or, for a git recipe, the
    /// commit) and the request. Equal inputs, equal digest.
    pub digest: String,
    /// How long the recipe says convergence may take (`coop-cloud.<stack>.timeout`).
    pub timeout: Option<std::time::Duration>,
}

/// Where recipes come from.
///
/// # Caveats
/// Calls read files (or a remote index): run them off the async executor's hot path
/// (`spawn_blocking`) when the catalogue is large.
pub trait Catalogue: Send + Sync {
    /// Recipe names, sorted.
    ///
    /// # Errors
    /// [`Error::DirectoryUnreadable`].
    fn recipes(&self) -> Result<Vec<String>>;

    /// One recipe, loaded and checked.
    ///
    /// # Errors
    /// [`Error::RecipeNotFound`], [`Error::RecipeRejected`], [`Error::DirectoryUnreadable`].
    fn recipe(&self, name: &str) -> Result<Recipe>;

    /// The published versions of `recipe`, oldest first.
    ///
    /// # Errors
    /// As [`Catalogue::recipe`].
    fn versions(&self, recipe: &str) -> Result<Vec<RecipeVersion>> {
        Ok(self.recipe(recipe)?.versions)
    }

    /// The newest published version of `recipe` (pre-releases only when asked).
    ///
    /// # Errors
    /// As [`Catalogue::recipe`], and [`Error::VersionNotPublished`] when none qualifies.
    fn newest(&self, recipe: &str, include_prerelease: bool) -> Result<RecipeVersion> {
        let r = self.recipe(recipe)?;
        r.newest(include_prerelease)
            .cloned()
            .ok_or_else(|| Error::VersionNotPublished {
                recipe: recipe.to_string(),
                version: if include_prerelease {
                    "any".into()
                } else {
                    "any release".into()
                },
                published: r.versions.iter().map(|v| v.to_string()).collect(),
            })
    }

    /// Renders a published version to a stack spec.
    ///
    /// # Errors
    /// As [`Catalogue::recipe`], [`Error::VersionNotPublished`], [`Error::VariableMissing`],
    /// [`Error::VariableUndeclared`], [`Error::ComposeRejected`].
    fn render(&self, request: &RenderRequest<'_>) -> Result<Rendered>;

    /// Renders the recipe's content at `at` — a commit (SHA), a tag, or `HEAD` (a git
    /// recipe's followed branch, a checkout's checked-out files) — for a run testing unreleased
    /// work: unless `at` is the requested version's own tag commit, the render is a chaos
    /// deploy, labelled as abra labels one (see [`sources::Deployed`]). A recipe without git
    /// history (a `recipe.yml` directory) renders `request.version` as [`Catalogue::render`]
    /// does.
    ///
    /// # Errors
    /// As [`Catalogue::render`], and [`Error::CommitNotFetched`] when `at` names no commit
    /// hearth has.
    fn render_at(&self, request: &RenderRequest<'_>, at: &str) -> Result<Rendered> {
        let _ = at;
        self.render(request)
    }

    /// The [`Rendered::digest`] a render of `request` would carry now, when the catalogue can
    /// tell it without rendering: a caller that kept an earlier render with this digest may
    /// use it as it is (#14: a resync of unchanged warm apps renders nothing). `None`: it
    /// cannot tell (say, `request` was never rendered); render to know.
    ///
    /// `fresh_since`: what the caller serves ([`crate::runtime::fresh_since`]); a file read to
    /// answer a request that came earlier may be used again, one read before it may not. So
    /// the calls of one resync pass read each recipe file once, however many apps use it.
    fn inputs_digest(&self, request: &RenderRequest<'_>, fresh_since: Ticket) -> Option<String> {
        let _ = (request, fresh_since);
        None
    }

    /// The files of `recipe` at `version`'s tag commit (`at` `None`) or at `at` (a commit, a
    /// tag, `HEAD`), written out in a directory, for a snapshot ([`crate::candidates`]).
    ///
    /// # Errors
    /// [`Error::SnapshotUnsupported`] for a recipe without git history (a `recipe.yml`
    /// directory, the default); as [`Catalogue::render_at`] otherwise.
    fn source_tree(&self, recipe: &str, version: &str, at: Option<&str>) -> Result<SourceTree> {
        let _ = (version, at);
        Err(Error::SnapshotUnsupported {
            recipe: recipe.to_string(),
        })
    }

    /// Where snapshots' files are written out for rendering; a temporary directory when the
    /// catalogue keeps no data directory.
    fn snapshot_dir(&self) -> PathBuf {
        std::env::temp_dir().join("hearth-snapshots")
    }
}

/// A recipe's files at one commit, written out ([`Catalogue::source_tree`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceTree {
    /// The directory holding the files.
    pub dir: PathBuf,
    /// The full commit SHA.
    pub commit: String,
    /// The tag, when the commit is the asked version's tag commit (a release).
    pub tag: Option<String>,
}

/// The variables a render of `recipe` at `version` uses: the recipe's defaults, then `env`,
/// then the built-ins.
///
/// # Errors
/// [`Error::VariableUndeclared`] for an override the recipe does not declare (or a built-in),
/// [`Error::VariableMissing`] for a required variable without a value.
pub fn variables(recipe: &Recipe, request: &RenderRequest<'_>) -> Result<BTreeMap<String, String>> {
    let mut vars = BTreeMap::new();
    for (name, var) in &recipe.file.variables {
        if let Some(default) = &var.default {
            vars.insert(name.clone(), default.clone());
        }
    }
    for (name, value) in request.env {
        if !recipe.file.variables.contains_key(name) {
            return Err(Error::VariableUndeclared {
                recipe: recipe.name.clone(),
                name: name.clone(),
                declared: recipe.file.variables.keys().cloned().collect(),
            });
        }
        vars.insert(name.clone(), value.clone());
    }
    for (name, var) in &recipe.file.variables {
        if var.required && !vars.contains_key(name) {
            return Err(Error::VariableMissing {
                recipe: recipe.name.clone(),
                name: name.clone(),
            });
        }
    }
    vars.insert("VERSION".into(), request.version.to_string());
    vars.insert("STACK_NAME".into(), request.stack.to_string());
    vars.insert("DOMAIN".into(), request.domain.to_string());
    Ok(vars)
}

/// The catalogue's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Catalogue errors. None is retryable unless noted: the catalogue or the request must change.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A directory or file could not be read. Retryable if the cause is transient.
    #[error("cannot read {path}")]
    DirectoryUnreadable {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No recipe of that name.
    #[error("recipe {recipe:?} not found in {dir} (known: {known})")]
    RecipeNotFound {
        /// The name asked for.
        recipe: String,
        /// The catalogue directory.
        dir: PathBuf,
        /// The recipes that exist, comma-separated.
        known: String,
    },
    /// A `recipe.yml` did not parse or broke a rule; every problem is listed.
    #[error("{}", problems.join("\n"))]
    RecipeRejected {
        /// The file.
        path: PathBuf,
        /// Each problem as `file:line:col: message` or `file: field: message`.
        problems: Vec<String>,
    },
    /// The version is not published by the recipe.
    #[error("recipe {recipe:?} does not publish version {version:?} (published: {})", published.join(", "))]
    VersionNotPublished {
        /// The recipe.
        recipe: String,
        /// The version asked for.
        version: String,
        /// What it publishes, oldest first.
        published: Vec<String>,
    },
    /// A git recipe has not been fetched successfully yet. Retryable: the next fetch.
    #[error("recipe {recipe:?} has not been fetched yet")]
    RecipeNotFetched {
        /// The recipe.
        recipe: String,
    },
    /// A run asked for a commit the recipe's mirror (or checkout) does not have. Retryable
    /// after a fetch that brings it (follow its branch with `spec.git.ref`).
    #[error("recipe {recipe:?} has no commit {reference:?} (hearth fetched {fetched}); follow its branch with spec.git.ref")]
    CommitNotFetched {
        /// The recipe.
        recipe: String,
        /// What was asked for.
        reference: String,
        /// What hearth fetched (the followed branch, or the checkout).
        fetched: String,
    },
    /// The recipe has no git history to snapshot a commit of (a `recipe.yml` directory).
    #[error("recipe {recipe:?} is not a git recipe or checkout: it has no commits to snapshot")]
    SnapshotUnsupported {
        /// The recipe.
        recipe: String,
    },
    /// A required variable has no value.
    #[error("recipe {recipe:?} requires variable {name} and none was given")]
    VariableMissing {
        /// The recipe.
        recipe: String,
        /// The variable.
        name: String,
    },
    /// An override names a variable the recipe does not declare.
    #[error("recipe {recipe:?} declares no variable {name} (declared: {})", declared.join(", "))]
    VariableUndeclared {
        /// The recipe.
        recipe: String,
        /// The variable.
        name: String,
        /// What it declares.
        declared: Vec<String>,
    },
    /// The compose files did not translate.
    #[error("recipe {recipe:?} version {version}: {source}")]
    ComposeRejected {
        /// The recipe.
        recipe: String,
        /// The version.
        version: String,
        /// The translator's error, with file:line:col (boxed: it is large).
        #[source]
        source: Box<compose::Error>,
    },
}
