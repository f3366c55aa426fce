//! `DirCatalogue`: recipes read from `<dir>/<recipe>/recipe.yml` and compose files, on every call; renders cached while those files are unchanged.

mod cache;

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

pub use cache::CacheStats;
use cache::{Input, Key, RecordingFiles, RenderCache};

use crd::names::MAX_RECIPE_NAME_LEN;
use crd::validation::{check_dns_label, check_env_key};
use crd::RecipeVersion;

use super::{
    variables, Catalogue, Error, Recipe, RecipeFile, RenderRequest, Rendered, Result,
    BUILTIN_VARIABLES, RECIPE_FILE,
};
use crate::compose;
use crate::runtime::Ticket;

/// Largest `recipe.yml` accepted.
const MAX_RECIPE_FILE_BYTES: usize = 256 * 1024;

/// A catalogue in a directory: one sub-directory per recipe.
///
/// # Guarantees
/// Files are read on every call, so edits take effect without a restart; a recipe whose
/// `recipe.yml` is broken fails alone, with every problem and its location. A render is
/// computed again only when a file it read (`recipe.yml`, a compose file, a side file) changed
/// its content: unchanged ones are answered from a cache shared by clones (at most 256 renders,
/// least recently used dropped first).
#[derive(Debug, Clone)]
pub struct DirCatalogue {
    dir: PathBuf,
    /// For a single-recipe catalogue ([`DirCatalogue::single`]): the one recipe's name, and
    /// `dir` is that recipe's directory.
    only: Option<String>,
    cache: Arc<RenderCache>,
}

impl DirCatalogue {
    /// A catalogue rooted at `dir`.
    ///
    /// # Errors
    /// [`Error::DirectoryUnreadable`] when `dir` is not a readable directory.
    pub fn open(dir: impl Into<PathBuf>) -> Result<DirCatalogue> {
        let dir = dir.into();
        std::fs::read_dir(&dir).map_err(|source| Error::DirectoryUnreadable {
            path: dir.clone(),
            source,
        })?;
        Ok(DirCatalogue {
            dir,
            only: None,
            cache: Arc::new(RenderCache::default()),
        })
    }

    /// A catalogue of the one recipe in `dir` (its `recipe.yml` and compose files), served
    /// under `name` (a `Recipe` with `spec.path`). Nothing is read until used: a missing
    /// directory is [`Error::RecipeNotFound`] then.
    pub fn single(name: &str, dir: PathBuf) -> DirCatalogue {
        DirCatalogue {
            dir,
            only: Some(name.to_string()),
            cache: Arc::new(RenderCache::default()),
        }
    }

    fn recipe_dir(&self, name: &str) -> Option<PathBuf> {
        match &self.only {
            Some(only) if only == name => Some(self.dir.clone()),
            Some(_) => None,
            None => Some(self.dir.join(name)),
        }
    }

    /// How often [`Catalogue::render`] was answered from the cache and how often computed.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// How many renders the cache keeps.
    pub fn cached_renders(&self) -> usize {
        self.cache.len()
    }

    /// [`Catalogue::recipe`], and what its `recipe.yml` held.
    fn recipe_and_input(&self, name: &str) -> Result<(Recipe, Input)> {
        let not_found = || -> Result<(Recipe, Input)> {
            Err(Error::RecipeNotFound {
                recipe: name.to_string(),
                dir: self.dir.clone(),
                known: self.recipes().map(|r| r.join(", ")).unwrap_or_default(),
            })
        };
        // The name becomes a path component: only DNS labels, never `..` or `/`.
        if check_dns_label(name, MAX_RECIPE_NAME_LEN).is_err() {
            return not_found();
        }
        let Some(dir) = self.recipe_dir(name) else {
            return not_found();
        };
        let path = dir.join(RECIPE_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return not_found(),
            Err(source) => return Err(Error::DirectoryUnreadable { path, source }),
        };
        let input = Input::read(&path, &bytes);
        Ok((load_recipe(name, dir, &path, &bytes)?, input))
    }

    /// The catalogue directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Loads every recipe and renders its every version with placeholder built-ins (what
    /// `hearth catalogue check` would run); returns the problems, empty when all is well.
    pub fn check_all(&self) -> Vec<Error> {
        let names = match self.recipes() {
            Ok(names) => names,
            Err(e) => return vec![e],
        };
        let mut problems = Vec::new();
        for name in names {
            let recipe = match self.recipe(&name) {
                Ok(r) => r,
                Err(e) => {
                    problems.push(e);
                    continue;
                }
            };
            let env = recipe
                .file
                .variables
                .iter()
                .filter(|(_, v)| v.required)
                .map(|(k, _)| (k.clone(), "check".to_string()))
                .collect();
            for version in &recipe.versions {
                let stack = format!("hw-{name}");
                let request = RenderRequest {
                    recipe: &name,
                    version: version.as_str(),
                    stack: &stack,
                    domain: "check.invalid",
                    env: &env,
                };
                if let Err(e) = self.render(&request) {
                    problems.push(e);
                }
            }
        }
        problems
    }
}

impl Catalogue for DirCatalogue {
    fn recipes(&self) -> Result<Vec<String>> {
        if let Some(only) = &self.only {
            return Ok(if self.dir.join(RECIPE_FILE).is_file() {
                vec![only.clone()]
            } else {
                Vec::new()
            });
        }
        let unreadable = |source| Error::DirectoryUnreadable {
            path: self.dir.clone(),
            source,
        };
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(unreadable)? {
            let entry = entry.map_err(unreadable)?;
            if entry.path().join(RECIPE_FILE).is_file() {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    fn recipe(&self, name: &str) -> Result<Recipe> {
        self.recipe_and_input(name).map(|(recipe, _)| recipe)
    }

    fn inputs_digest(&self, request: &RenderRequest<'_>, fresh_since: Ticket) -> Option<String> {
        self.cache.inputs_digest(&Key::of(request), fresh_since)
    }

    fn render(&self, request: &RenderRequest<'_>) -> Result<Rendered> {
        let key = Key::of(request);
        if let Some(rendered) = self.cache.get(&key) {
            return Ok(rendered);
        }
        self.cache.computed();
        let (recipe, recipe_input) = self.recipe_and_input(request.recipe)?;
        if recipe.published(request.version).is_none() {
            return Err(Error::VersionNotPublished {
                recipe: recipe.name.clone(),
                version: request.version.to_string(),
                published: recipe.versions.iter().map(|v| v.to_string()).collect(),
            });
        }
        let vars = variables(&recipe, request)?;
        let rejected = |source| Error::ComposeRejected {
            recipe: recipe.name.clone(),
            version: request.version.to_string(),
            source: Box::new(source),
        };
        let paths = recipe.compose_paths();
        let (sources, working_dir) = compose::read_sources(&paths).map_err(rejected)?;
        let files = RecordingFiles::default();
        let translation = compose::translate(
            &sources,
            &compose::Options {
                stack: request.stack,
                env: &vars,
                working_dir,
                files: &files,
            },
        )
        .map_err(rejected)?;
        let mut inputs = vec![recipe_input];
        inputs.extend(
            paths
                .iter()
                .zip(&sources)
                .map(|(path, source)| Input::source(path, source)),
        );
        inputs.extend(files.into_inputs());
        let rendered = Rendered {
            stack: translation.stack,
            warnings: translation.warnings,
            variables: vars,
            digest: cache::digest(&key, &inputs),
            timeout: None,
        };
        self.cache.put(key, inputs, rendered.clone());
        Ok(rendered)
    }
}

/// Parses and checks a `recipe.yml`, reporting every problem with the file's path.
fn load_recipe(name: &str, dir: PathBuf, path: &Path, bytes: &[u8]) -> Result<Recipe> {
    let shown = path.display().to_string();
    let rejected = |problems: Vec<String>| Error::RecipeRejected {
        path: path.to_path_buf(),
        problems,
    };
    if bytes.len() > MAX_RECIPE_FILE_BYTES {
        return Err(rejected(vec![format!(
            "{shown}: file is {} bytes, more than the {MAX_RECIPE_FILE_BYTES}-byte limit",
            bytes.len()
        )]));
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|e| rejected(vec![format!("{shown}: not UTF-8: {e}")]))?;
    let file: RecipeFile = serde_saphyr::from_str_with_options(text, yaml_options())
        .map_err(|e| rejected(vec![located(&shown, &e)]))?;

    let mut problems = Vec::new();
    let mut problem = |field: &str, message: String| {
        problems.push(format!("{shown}: {field}: {message}"));
    };
    if let Err(m) = check_dns_label(name, MAX_RECIPE_NAME_LEN) {
        problem("(directory name)", format!("recipe name {name:?} {m}"));
    }
    if file.compose_files.is_empty() {
        problem("composeFiles", "must list at least one compose file".into());
    }
    for (i, f) in file.compose_files.iter().enumerate() {
        let rel = Path::new(f);
        if f.is_empty()
            || rel.is_absolute()
            || rel.components().any(|c| !matches!(c, Component::Normal(_)))
        {
            problem(
                &format!("composeFiles[{i}]"),
                format!("{f:?} must be a path inside the recipe directory"),
            );
        } else if !dir.join(rel).is_file() {
            problem(
                &format!("composeFiles[{i}]"),
                format!("{} does not exist", dir.join(rel).display()),
            );
        }
    }
    if file.versions.is_empty() {
        problem("versions", "must list at least one version".into());
    }
    let mut versions: Vec<RecipeVersion> = Vec::new();
    for (i, v) in file.versions.iter().enumerate() {
        match RecipeVersion::parse(v) {
            Ok(parsed) => match versions.iter().find(|p| **p == parsed) {
                Some(same) => problem(
                    &format!("versions[{i}]"),
                    format!("{v:?} is listed twice (same as {:?})", same.as_str()),
                ),
                None => versions.push(parsed),
            },
            Err(e) => problem(&format!("versions[{i}]"), e.to_string()),
        }
    }
    for (k, var) in &file.variables {
        let field = format!("variables.{k}");
        if let Err(m) = check_env_key(k) {
            problem(&field, m);
        }
        if BUILTIN_VARIABLES.contains(&k.as_str()) || k.starts_with("HEARTH_") {
            problem(&field, "is set by hearth and cannot be declared".into());
        }
        if var.required && var.default.is_some() {
            problem(&field, "a required variable cannot have a default".into());
        }
    }
    if !problems.is_empty() {
        return Err(rejected(problems));
    }
    versions.sort();
    Ok(Recipe {
        name: name.to_string(),
        dir,
        file,
        versions,
    })
}

/// Parser settings for small hand-written files: tight input budgets, duplicate keys rejected.
pub(crate) fn yaml_options() -> serde_saphyr::Options {
    crate::yaml::strict_options(crate::yaml::Limits {
        events: 100_000,
        aliases: 100,
        nodes: 50_000,
        scalar_bytes: 4 * MAX_RECIPE_FILE_BYTES,
    })
}

/// `file:line:col: message` for a parse error (`file: message` when it has no location).
fn located(file: &str, e: &serde_saphyr::Error) -> String {
    let message = e
        .to_string()
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    match e.location() {
        Some(l) if l.line() > 0 => format!("{file}:{}:{}: {message}", l.line(), l.column()),
        _ => format!("{file}: {message}"),
    }
}

#[cfg(test)]
mod tests;
