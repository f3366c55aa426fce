//! The operator state file: YAML documents of WarmApps, DepProviders and SlotPools, validated as a whole and applied to the store.
//!
//! - [`parse`] / [`load`]: text → [`DesiredSet`], or [`Error::FileRejected`] listing *every*
//!   problem as `file:line:col: Kind/name: field.path: message` (parse errors, unknown fields,
//!   invalid values, a `Run` in the file, problems across resources).
//! - [`diff()`]: pure — (what the store holds, what the file says) → create / update /
//!   unchanged / delete (only with prune), printable like a short `kubectl diff`.
//! - [`apply()`]: validates everything before the first write, writes, and records `Applied` in
//!   the store's history; [`apply_file`] also records `Rejected` for a file that did not load.
//! - [`watch`]: notices edits of the file, including editors that replace it by rename.
//!
//! # Guarantees
//! A file that does not parse or validate changes nothing: no object is written.
//! Nothing is deleted unless pruning is asked for.

mod apply;
mod diff;
pub mod watch;

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};

use crd::names::BaseDomain;
use crd::{AnyResource, Kind, TypeMeta, Validate};
use serde::de::DeserializeOwned;

pub use apply::{apply, apply_file, record_rejection, ApplyOptions, APPLIED, VERSION_DECLARED};
pub use diff::{diff, Diff, DiffEntry, Op};

use crate::yaml::{self, Keys, Loc, Node};

/// Largest state file accepted, in bytes.
pub const MAX_FILE_BYTES: usize = 1024 * 1024;
/// Most documents in one state file.
pub const MAX_DOCUMENTS: usize = 1000;

/// The kinds an operator state file may declare.
pub const OPERATOR_KINDS: [Kind; 4] = [
    Kind::WarmApp,
    Kind::DepProvider,
    Kind::SlotPool,
    Kind::Recipe,
];

/// A validated state file.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredSet {
    /// The file, as named in messages.
    pub source: String,
    /// Its resources, in file order.
    pub resources: Vec<AnyResource>,
}

/// One problem in a state file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line (0 when unknown).
    pub line: u64,
    /// 1-based column (0 when unknown).
    pub column: u64,
    /// The resource, `Kind/name`, when known.
    pub resource: Option<String>,
    /// The field path (`spec.health.http.port`); empty for the document itself.
    pub path: String,
    /// What is wrong, lowercase.
    pub message: String,
}

impl Problem {
    fn at(
        pos: Loc,
        resource: Option<String>,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Problem {
        Problem {
            line: pos.line,
            column: pos.col,
            resource,
            path: path.into(),
            message: message.into(),
        }
    }

    /// `file:line:col: Kind/name: path: message`.
    pub fn display_in<'a>(&'a self, file: &'a str) -> impl fmt::Display + 'a {
        struct In<'a>(&'a Problem, &'a str);
        impl fmt::Display for In<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let p = self.0;
                write!(f, "{}:{}:{}: ", self.1, p.line, p.column)?;
                if let Some(r) = &p.resource {
                    write!(f, "{r}: ")?;
                }
                if !p.path.is_empty() {
                    write!(f, "{}: ", p.path)?;
                }
                f.write_str(&p.message)
            }
        }
        In(self, file)
    }
}

/// State-file errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read. Retryable when the cause is transient.
    #[error("cannot read state file {path}")]
    FileUnreadable {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file did not parse or validate; nothing was applied. Not retryable: fix the file.
    #[error("{}", rejected(file, problems))]
    FileRejected {
        /// The file, as named in messages.
        file: String,
        /// Every problem found.
        problems: Vec<Problem>,
    },
    /// Reading or writing the store failed. Retryable: applying again converges (a failure
    /// after some writes leaves those in place; see [`apply()`]).
    #[error("applying the state file to the store failed")]
    StoreFailed(#[source] state::Error),
    /// The file watcher could not be set up. Retryable if the directory appears later.
    #[error("cannot watch {path}")]
    WatchFailed {
        /// The directory watched.
        path: PathBuf,
        /// Why.
        #[source]
        source: notify::Error,
    },
}

fn rejected(file: &str, problems: &[Problem]) -> String {
    let mut out = format!(
        "state file {file} rejected ({} problem{}); nothing was applied",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    for p in problems {
        out.push_str(&format!("\n  {}", p.display_in(file)));
    }
    out
}

/// Reads and parses the state file at `path` (named as given in messages).
///
/// # Errors
/// [`Error::FileUnreadable`], [`Error::FileRejected`].
pub fn load(path: &Path, base: Option<&BaseDomain>) -> Result<DesiredSet, Error> {
    let bytes = std::fs::read(path).map_err(|source| Error::FileUnreadable {
        path: path.to_path_buf(),
        source,
    })?;
    let name = path.display().to_string();
    match String::from_utf8(bytes) {
        Ok(text) => parse(&name, &text, base),
        Err(e) => Err(Error::FileRejected {
            file: name,
            problems: vec![Problem::at(
                Loc::default(),
                None,
                "",
                format!("not UTF-8: {}", e.utf8_error()),
            )],
        }),
    }
}

/// Parses and validates a state file's text: every document, then the set as a whole
/// (`crd::consistency::check_set`, with derived domains when `base` is given).
///
/// # Errors
/// [`Error::FileRejected`] with every problem found, each with its line, column and field path.
pub fn parse(name: &str, text: &str, base: Option<&BaseDomain>) -> Result<DesiredSet, Error> {
    let reject = |problems| Error::FileRejected {
        file: name.to_string(),
        problems,
    };
    let whole_file = |message| reject(vec![Problem::at(Loc::start(0), None, "", message)]);
    if let Some(message) = yaml::too_large(text, MAX_FILE_BYTES) {
        return Err(whole_file(message));
    }
    let documents = split_documents(text);
    if documents.len() > MAX_DOCUMENTS {
        return Err(whole_file(format!("more than {MAX_DOCUMENTS} documents")));
    }
    let mut problems = Vec::new();
    let mut resources = Vec::new();
    let mut trees = Vec::new();
    for doc in &documents {
        if let Some((resource, tree)) = read_document(doc, &mut problems) {
            resources.push(resource);
            trees.push(tree);
        }
    }
    if problems.is_empty() {
        if let Err(found) = crd::consistency::check_set(&resources, base) {
            for p in found.problems {
                let pos = trees
                    .get(p.index)
                    .map(|t| t.locate(&p.path))
                    .unwrap_or_default();
                problems.push(Problem::at(
                    pos,
                    Some(format!("{}/{}", p.kind, p.name)),
                    p.path,
                    p.message,
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(DesiredSet {
            source: name.to_string(),
            resources,
        })
    } else {
        problems.sort_by_key(|p| (p.line, p.column));
        Err(reject(problems))
    }
}

/// One document: the text with every line outside it blanked, so positions are the file's.
struct Document {
    text: String,
    first_line: u64,
}

/// Splits at `---` lines (and drops `...` end markers), keeping line numbers.
fn split_documents(text: &str) -> Vec<Document> {
    let lines: Vec<&str> = text.split('\n').collect();
    let is_marker = |l: &str, m: &str| {
        l.strip_prefix(m)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r']))
    };
    let mut docs = Vec::new();
    let mut start = 0usize;
    let mut push = |from: usize, to: usize, marker_first: bool| {
        let mut body = String::new();
        for _ in 0..from {
            body.push('\n');
        }
        for (i, l) in lines[from..to].iter().enumerate() {
            if i == 0 && marker_first {
                // Keep the columns of anything after the marker on the same line.
                body.push_str(&" ".repeat(3));
                body.push_str(l.get(3..).unwrap_or_default());
            } else if is_marker(l, "...") {
                // A document end marker: nothing of it is content.
            } else {
                body.push_str(l);
            }
            body.push('\n');
        }
        let has_content = lines[from..to].iter().enumerate().any(|(i, l)| {
            let l = if i == 0 && marker_first {
                l.get(3..).unwrap_or_default()
            } else {
                l
            };
            let t = l.trim();
            !t.is_empty() && !t.starts_with('#') && !is_marker(l, "...")
        });
        if has_content {
            docs.push(Document {
                text: body,
                first_line: from as u64 + 1,
            });
        }
    };
    let mut marker_first = false;
    for (i, l) in lines.iter().enumerate() {
        if is_marker(l, "---") {
            push(start, i, marker_first);
            start = i;
            marker_first = true;
        }
    }
    push(start, lines.len(), marker_first);
    docs
}

/// Reads one document; records its problems and returns the resource when it has none.
fn read_document(doc: &Document, problems: &mut Vec<Problem>) -> Option<(AnyResource, Node)> {
    let doc_start = Loc {
        file: 0,
        line: doc.first_line,
        col: 1,
    };
    let before = problems.len();
    let tree = match yaml::parse(&doc.text, options(), 0, Keys::Scalars) {
        Ok(tree) => tree,
        Err(e) => {
            problems.push(Problem::at(e.at, None, "", e.message));
            return None;
        }
    };
    if !tree.is_map() {
        problems.push(Problem::at(
            tree.at,
            None,
            "",
            "a document must be a mapping (a resource)",
        ));
        return None;
    }
    let scalar = |key: &str| tree.get(key).and_then(Node::scalar_string);
    let type_meta = TypeMeta {
        api_version: scalar("apiVersion"),
        kind: scalar("kind"),
    };
    let kind = match type_meta.kind() {
        Ok(kind) => kind,
        Err(message) => {
            let (path, message) = message.split_once(": ").unwrap_or(("", &message));
            let pos = if tree.get(path).is_some() {
                tree.locate(path)
            } else {
                doc_start
            };
            problems.push(Problem::at(pos, None, path, message));
            return None;
        }
    };
    let name = tree
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Node::scalar_string)
        .map(|n| format!("{kind}/{n}"));
    if !OPERATOR_KINDS.contains(&kind) {
        problems.push(Problem::at(
            tree.locate("kind"),
            name,
            "kind",
            format!(
                "a {kind} cannot be declared in an operator state file (runs are created by `hearth run`); allowed kinds: WarmApp, DepProvider, SlotPool, Recipe"
            ),
        ));
        return None;
    }
    if let Some((key, _)) = tree.entry("status") {
        problems.push(Problem::at(
            key.at,
            name.clone(),
            "status",
            "is written by hearth; remove it",
        ));
    }
    if let Some(meta) = tree.get("metadata") {
        for field in ["generation", "resourceVersion", "creationTimestampMs"] {
            if let Some((key, _)) = meta.entry(field) {
                problems.push(Problem::at(
                    key.at,
                    name.clone(),
                    format!("metadata.{field}"),
                    "is assigned by the store; remove it",
                ));
            }
        }
    }
    let typed = match kind {
        Kind::WarmApp => typed::<crd::WarmApp>(doc, &tree).map(AnyResource::WarmApp),
        Kind::DepProvider => typed::<crd::DepProvider>(doc, &tree).map(AnyResource::DepProvider),
        Kind::SlotPool => typed::<crd::SlotPool>(doc, &tree).map(AnyResource::SlotPool),
        Kind::Recipe => typed::<crd::Recipe>(doc, &tree).map(AnyResource::Recipe),
        Kind::Run => return None,
    };
    let resource = match typed {
        Ok(r) => r,
        Err(p) => {
            problems.push(Problem {
                resource: name,
                ..p
            });
            return None;
        }
    };
    if let Err(errors) = resource.validate() {
        for e in errors.errors {
            problems.push(Problem::at(
                tree.locate(&e.path),
                name.clone(),
                e.path,
                e.message,
            ));
        }
    }
    (problems.len() == before).then_some((resource, tree))
}

/// Deserialises the document as `R`, locating a failure by position and field path.
fn typed<R: DeserializeOwned>(doc: &Document, tree: &Node) -> Result<R, Problem> {
    serde_saphyr::from_str_with_options::<R>(&doc.text, options()).map_err(|e| {
        let pos = yaml::error_loc(&e, 0);
        let message = yaml::error_message(&e);
        let mut path = tree.path_at(pos);
        // serde reports a missing field at the mapping that lacks it, which starts where its
        // first key does: name the mapping, not that key.
        if message.starts_with("missing field") {
            path = yaml::parent(&path).to_string();
        }
        Problem::at(pos, None, path, message)
    })
}

/// Parser settings: one document at a time, tight input budgets, duplicate keys rejected.
fn options() -> serde_saphyr::Options {
    yaml::strict_options(yaml::Limits {
        events: 200_000,
        aliases: 1_000,
        nodes: 100_000,
        scalar_bytes: 4 * MAX_FILE_BYTES,
    })
}
