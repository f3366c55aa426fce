//! Compose files → swarm stack specs, as `docker stack deploy -c a.yml -c b.yml NAME` reads them.
//!
//! The pipeline follows docker/cli's `cli/compose` packages step by step, per file:
//! parse (`read`, into the located tree of [`crate::yaml`]) → interpolate (`interpolate`) → validate (`schema`) →
//! normalise (short syntaxes to long ones, `env_file` and bind paths resolved); then the files
//! are merged in order (`merge`) and converted to Engine API specs (`convert`).
//!
//! # Guarantees
//! - Pure: the environment and every side file (env files, secret and config files) come in
//!   through [`Options`]; nothing reads the process environment.
//! - Every error names the file, line, column and key path; every key that docker stack deploy
//!   ignores becomes a [`Warning`] with the same position. Nothing is dropped silently.
//!
//! # What is translated
//! Everything docker stack deploy (docker 28.2) turns into swarm objects: services (image,
//! command/entrypoint incl. shell splitting, environment incl. `env_file` and pass-through,
//! labels, deploy: mode incl. jobs, replicas, labels, resources incl. generic resources,
//! placement incl. preferences and max replicas, restart_policy, update/rollback_config,
//! endpoint_mode; healthcheck incl. disable; networks with aliases and driver_opts; volumes in
//! short and long syntax incl. bind/tmpfs/npipe and docker's Windows-drive reading of `d:/x`;
//! secrets and configs in short and long syntax; ports in short syntax incl. ranges and IPs and
//! long syntax incl. `mode: host`; stop_grace_period, stop_signal, user, working_dir, hostname,
//! cap_add/cap_drop, extra_hosts, dns/dns_search, sysctls, ulimits, init, logging, tty,
//! stdin_open, read_only, isolation, credential_spec file/registry) and top-level networks,
//! volumes, secrets and configs (external incl. legacy `external: {name:}`, name, driver,
//! driver_opts, labels, ipam, attachable, internal, template_driver, file).
//!
//! Keys docker accepts but stack deploy ignores (`build`, `links`, `restart`, `depends_on`,
//! service-level `tmpfs`, …) become [`Warning`]s; keys docker refuses (`extends`,
//! `volumes_from`, …), unknown keys, `type: cluster` volumes and `credential_spec.config` are
//! errors.
//!
//! # Caveats
//! - One schema (v3.13 plus docker's forbidden and unsupported keys) serves every `3.x`
//!   version, with each key's first version recorded: a key newer than the declared version is
//!   rejected, as docker's per-version schemas do. Type differences between the versions'
//!   schemas are not modelled.
//! - Known differences from docker 28.2 (deliberate or not worth mimicking): an unquoted YAML
//!   timestamp (`2001-12-14`) stays as written, where go-yaml makes it
//!   `2001-12-14 00:00:00 +0000 UTC`; `.inf`/`.nan` values are rejected with another message
//!   (docker fails too); unknown keys are rejected everywhere, also in the few places docker's
//!   schema does not check (secret/config references).
//! - See `CORPUS.md` next to this file for per-file results on the shared corpus.

mod convert;
mod image;
mod interpolate;
mod merge;
mod normalize;
mod read;
mod schema;
mod units;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::swarm::spec::StackSpec;

pub use convert::{LABEL_IMAGE, LABEL_NAMESPACE};

/// Where in which compose file something is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The compose file, as given.
    pub file: String,
    /// 1-based line (0 when unknown).
    pub line: u64,
    /// 1-based column (0 when unknown).
    pub column: u64,
    /// Dotted key path (`services.web.deploy.replicas`, list items as `[i]`); may be empty.
    pub path: String,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)?;
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        Ok(())
    }
}

/// Errors of compose translation. None is retryable: the same input fails the same way.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No compose file was given.
    #[error("no compose file given")]
    FilesMissing,
    /// The stack name is not usable as a docker stack namespace.
    #[error("invalid stack name {0:?}: {1}")]
    StackNameRejected(String, &'static str),
    /// A compose file, env file, secret or config file could not be read.
    #[error("{at}: cannot read {path}")]
    FileUnreadable {
        /// The key that refers to the file (or the compose file itself).
        at: Position,
        /// The path that was read.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The text is not valid YAML, or not a mapping, or exceeded the parser's budget.
    #[error("{at}: {message}")]
    YamlRejected {
        /// Where the parser stopped.
        at: Position,
        /// The parser's message.
        message: String,
    },
    /// A key the compose schema does not know.
    #[error("{at}: unknown field")]
    FieldUnknown {
        /// The key.
        at: Position,
    },
    /// A value of the wrong type.
    #[error("{at}: {message}")]
    TypeMismatched {
        /// The value.
        at: Position,
        /// What was expected.
        message: String,
    },
    /// A value of the right type that cannot be used (bad duration, port, mode…).
    #[error("{at}: {message}")]
    ValueRejected {
        /// The value.
        at: Position,
        /// Why.
        message: String,
    },
    /// `${VAR}` interpolation failed: bad syntax or a required variable is missing.
    #[error("{at}: {message}")]
    InterpolationFailed {
        /// The value holding the template.
        at: Position,
        /// Why.
        message: String,
    },
    /// The `version:` is not a compose 3.x version, or two files declare different versions.
    #[error("{at}: {message}")]
    VersionRejected {
        /// The version value.
        at: Position,
        /// Why.
        message: String,
    },
    /// A service refers to a network, volume, secret or config the files do not define.
    #[error("{at}: {message}")]
    ReferenceUndefined {
        /// The reference.
        at: Position,
        /// What is missing.
        message: String,
    },
    /// A key docker refuses ("forbidden properties"), e.g. `extends`, `volumes_from`.
    #[error("{at}: forbidden: {message}")]
    PropertyForbidden {
        /// The key.
        at: Position,
        /// docker's explanation.
        message: String,
    },
}

/// Why a key was not translated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WarningKind {
    /// docker stack deploy prints "Ignoring unsupported options" for it.
    Unsupported,
    /// docker stack deploy prints a deprecation notice for it.
    Deprecated,
    /// docker stack deploy drops it without a word (e.g. `depends_on`).
    IgnoredByStackDeploy,
    /// docker accepts it but prints a warning and changes it (e.g. a host IP on a port).
    Adjusted,
}

/// A key that was accepted but not (fully) translated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// Where it is.
    pub at: Position,
    /// Why it was not translated.
    pub kind: WarningKind,
    /// Human explanation.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

/// One compose file's text and the name used in messages.
#[derive(Debug, Clone)]
pub struct Source {
    /// Name for messages (usually the path given on the command line).
    pub name: String,
    /// The file's content.
    pub text: String,
}

/// Reads side files (env files, secret and config files). The translator never touches the
/// filesystem itself.
pub trait Files {
    /// Reads the whole file.
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>>;
}

/// [`Files`] on the real filesystem.
#[derive(Debug, Clone, Copy, Default)]
pub struct FsFiles;

impl Files for FsFiles {
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        std::fs::read(path)
    }
}

/// Inputs besides the compose files.
pub struct Options<'a> {
    /// Stack name (`docker stack deploy NAME`).
    pub stack: &'a str,
    /// Variables for interpolation, env-file pass-through and `- KEY` environment entries.
    pub env: &'a BTreeMap<String, String>,
    /// Directory relative paths are resolved against: docker uses the absolute directory of
    /// the first compose file.
    pub working_dir: PathBuf,
    /// Side-file reader.
    pub files: &'a dyn Files,
}

/// The result of a translation.
#[derive(Debug, Clone, PartialEq)]
pub struct Translation {
    /// What to create.
    pub stack: StackSpec,
    /// Keys that were accepted but not translated, in file order.
    pub warnings: Vec<Warning>,
}

/// Translates compose files (merged in the given order) into a stack spec.
///
/// # Errors
/// The first problem found, with its file:line:col and key path; see [`Error`].
pub fn translate(sources: &[Source], options: &Options<'_>) -> Result<Translation, Error> {
    if sources.is_empty() {
        return Err(Error::FilesMissing);
    }
    check_stack_name(options.stack)?;
    let ctx = Ctx {
        names: sources.iter().map(|s| s.name.clone()).collect(),
        options,
    };
    let mut warnings = Vec::new();
    let mut version: Option<(String, Position)> = None;
    let mut merged: Option<crate::yaml::Node> = None;
    for (index, source) in sources.iter().enumerate() {
        let mut root = read::parse(&source.text, index).map_err(|e| Error::YamlRejected {
            at: Position {
                file: source.name.clone(),
                line: e.at.line,
                column: e.at.col,
                path: String::new(),
            },
            message: e.message,
        })?;
        let declared = check_version(&ctx, &root)?;
        match &version {
            None => version = Some(declared),
            Some((first, _)) if *first != declared.0 => {
                return Err(Error::VersionRejected {
                    at: declared.1,
                    message: format!(
                        "version mismatched between two composefiles : {} and {}",
                        first, declared.0
                    ),
                })
            }
            Some(_) => {}
        }
        interpolate::interpolate_tree(&mut root, options.env).map_err(|e| {
            Error::InterpolationFailed {
                at: ctx.pos(e.node.at, &e.path),
                message: e.message,
            }
        })?;
        let mut notices = Vec::new();
        let minor = version
            .as_ref()
            .and_then(|(v, _)| v.strip_prefix("3.").and_then(|m| m.parse::<u8>().ok()))
            .unwrap_or(LATEST_MINOR);
        schema::validate(&root, &schema::TOP, "", minor, &mut notices).map_err(|v| {
            let at = ctx.pos(v.at, &v.path);
            match v.kind {
                schema::ViolationKind::Unknown => Error::FieldUnknown { at },
                schema::ViolationKind::Type(message) => Error::TypeMismatched { at, message },
                schema::ViolationKind::Forbidden(why) => Error::PropertyForbidden {
                    at,
                    message: why.to_string(),
                },
                schema::ViolationKind::TooNew { since, declared } => Error::VersionRejected {
                    at,
                    message: format!(
                        "needs compose file version 3.{since} or later; the file declares 3.{declared}"
                    ),
                },
                schema::ViolationKind::NameInvalid => Error::ValueRejected {
                    at,
                    message: "invalid name: use only letters, digits, '.', '_' and '-'".into(),
                },
            }
        })?;
        warnings.extend(notices.into_iter().map(|n| ctx.notice_warning(n)));
        let normalized = normalize::normalize(&ctx, root, &mut warnings)?;
        merged = Some(match merged {
            None => normalized,
            Some(base) => merge::merge(base, normalized),
        });
    }
    let merged = merged.ok_or(Error::FilesMissing)?;
    let stack = convert::convert(&ctx, &merged, &mut warnings)?;
    Ok(Translation { stack, warnings })
}

/// Reads compose files from disk and translates them, resolving paths as docker does (against
/// the absolute directory of the first file).
///
/// # Errors
/// [`Error::FileUnreadable`] for a compose file that cannot be read, else as [`translate`].
pub fn translate_paths(
    paths: &[PathBuf],
    stack: &str,
    env: &BTreeMap<String, String>,
) -> Result<Translation, Error> {
    let (sources, working_dir) = read_sources(paths)?;
    translate(
        &sources,
        &Options {
            stack,
            env,
            working_dir,
            files: &FsFiles,
        },
    )
}

/// Reads compose files from disk: their sources, and the directory relative paths resolve
/// against (docker's: the absolute directory of the first file).
///
/// # Errors
/// [`Error::FilesMissing`] for no path, [`Error::FileUnreadable`] for a file that cannot be
/// read.
pub fn read_sources(paths: &[PathBuf]) -> Result<(Vec<Source>, PathBuf), Error> {
    let first = paths.first().ok_or(Error::FilesMissing)?;
    let mut sources = Vec::with_capacity(paths.len());
    for path in paths {
        let bytes = std::fs::read(path).map_err(|source| Error::FileUnreadable {
            at: Position {
                file: path.display().to_string(),
                line: 0,
                column: 0,
                path: String::new(),
            },
            path: path.clone(),
            source,
        })?;
        sources.push(Source {
            name: path.display().to_string(),
            text: String::from_utf8_lossy(&bytes).into_owned(),
        });
    }
    let absolute = std::path::absolute(first).unwrap_or_else(|_| first.clone());
    let working_dir = absolute
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    Ok((sources, working_dir))
}

/// Translation context shared by the steps.
pub(crate) struct Ctx<'a> {
    names: Vec<String>,
    options: &'a Options<'a>,
}

impl Ctx<'_> {
    pub(crate) fn pos(&self, at: crate::yaml::Loc, path: &str) -> Position {
        Position {
            file: self.names.get(at.file).cloned().unwrap_or_default(),
            line: at.line,
            column: at.col,
            path: path.to_string(),
        }
    }

    pub(crate) fn value_err(
        &self,
        at: crate::yaml::Loc,
        path: &str,
        message: impl Into<String>,
    ) -> Error {
        Error::ValueRejected {
            at: self.pos(at, path),
            message: message.into(),
        }
    }

    pub(crate) fn env(&self) -> &BTreeMap<String, String> {
        self.options.env
    }

    pub(crate) fn stack(&self) -> &str {
        self.options.stack
    }

    pub(crate) fn working_dir(&self) -> &Path {
        &self.options.working_dir
    }

    pub(crate) fn read_file(
        &self,
        at: crate::yaml::Loc,
        path_key: &str,
        file: &Path,
    ) -> Result<Vec<u8>, Error> {
        self.options
            .files
            .read(file)
            .map_err(|source| Error::FileUnreadable {
                at: self.pos(at, path_key),
                path: file.to_path_buf(),
                source,
            })
    }

    fn notice_warning(&self, n: schema::Notice) -> Warning {
        let (kind, message) = match n.use_ {
            schema::Use::IgnoredUnsupported => (
                WarningKind::Unsupported,
                "ignored: docker stack deploy does not support this option".to_string(),
            ),
            schema::Use::IgnoredDeprecated(why) => (
                WarningKind::Deprecated,
                format!("ignored (deprecated): {why}"),
            ),
            schema::Use::IgnoredSilently(why) => {
                (WarningKind::IgnoredByStackDeploy, format!("ignored: {why}"))
            }
            // Used and Forbidden never become notices.
            schema::Use::Used | schema::Use::Forbidden(_) => {
                (WarningKind::IgnoredByStackDeploy, "ignored".to_string())
            }
        };
        Warning {
            at: self.pos(n.at, &n.path),
            kind,
            message,
        }
    }
}

/// docker/cli's `validateStackName`-equivalent checks: non-empty, no characters that break
/// object names. (docker rejects names with `:`/`/` via the daemon; we reject early.)
fn check_stack_name(name: &str) -> Result<(), Error> {
    if name.is_empty() {
        return Err(Error::StackNameRejected(name.into(), "it is empty"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
    {
        return Err(Error::StackNameRejected(
            name.into(),
            "only letters, digits, '_', '-' and '.' are allowed",
        ));
    }
    Ok(())
}

/// The declared version, normalised as docker/cli's `schema.Version`: absent or "3" → the
/// latest 3.x; anything that is not 3.x is rejected.
/// The newest compose file version docker 28.2 knows (`3.13`).
const LATEST_MINOR: u8 = 13;

fn check_version(ctx: &Ctx<'_>, root: &crate::yaml::Node) -> Result<(String, Position), Error> {
    const LATEST: &str = "3.13";
    let Some(node) = root.get("version") else {
        return Ok((LATEST.into(), ctx.pos(root.at, "version")));
    };
    let at = ctx.pos(node.at, "version");
    let crate::yaml::V::Str(v) = &node.v else {
        return Err(Error::TypeMismatched {
            at,
            message: format!("must be a string, not {}", node.kind()),
        });
    };
    let normalized = if v == "3" {
        LATEST.to_string()
    } else {
        v.clone()
    };
    let ok = normalized
        .strip_prefix("3.")
        .and_then(|minor| minor.parse::<u8>().ok())
        .is_some_and(|minor| minor <= LATEST_MINOR && !normalized.contains('+'));
    if !ok {
        return Err(Error::VersionRejected {
            at,
            message: format!(
                "unsupported Compose file version: {v}; docker stack deploy reads versions 3.0 to 3.13"
            ),
        });
    }
    Ok((normalized, at))
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod reference;
#[cfg(test)]
mod tests;
