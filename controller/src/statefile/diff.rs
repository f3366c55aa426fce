//! The pure diff between the desired objects in the store and a state file.

use std::collections::BTreeMap;
use std::fmt;

use crd::promotion::{version_intent, VersionIntent};
use crd::{AnyResource, Kind};
use serde_json::Value;

use super::OPERATOR_KINDS;
use crate::runtime::ObjectRef;

/// What applying does to one object.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Not in the store: created from the file.
    Create(AnyResource),
    /// In both, labels or spec differ: updated (the store keeps its status).
    Update {
        /// What the store holds (its resourceVersion guards the write).
        current: Box<AnyResource>,
        /// What the file says.
        desired: Box<AnyResource>,
        /// The differing fields: (path, old, new) as JSON text.
        fields: Vec<(String, String, String)>,
    },
    /// In both and equal.
    Unchanged,
    /// In the store, not in the file, and pruning was asked for: deleted.
    Delete(AnyResource),
    /// In the store, not in the file, pruning not asked for: kept.
    Kept(AnyResource),
}

/// One object's entry in a [`Diff`].
#[derive(Debug, Clone, PartialEq)]
pub struct DiffEntry {
    /// The object.
    pub key: ObjectRef,
    /// What happens to it.
    pub op: Op,
    /// For a WarmApp with a promotion in force: what the file's version means for it (see
    /// [`crd::promotion::version_intent`]); `None` otherwise.
    pub version: Option<VersionIntent>,
}

/// What applying a state file does, object by object (sorted by kind, then name).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Diff {
    /// One entry per object in the store or the file.
    pub entries: Vec<DiffEntry>,
}

impl Diff {
    /// Whether applying writes anything.
    pub fn is_noop(&self) -> bool {
        self.entries
            .iter()
            .all(|e| matches!(e.op, Op::Unchanged | Op::Kept(_)))
    }

    /// Counts: (created, updated, deleted, unchanged, kept).
    pub fn counts(&self) -> (usize, usize, usize, usize, usize) {
        let mut c = (0, 0, 0, 0, 0);
        for e in &self.entries {
            match e.op {
                Op::Create(_) => c.0 += 1,
                Op::Update { .. } => c.1 += 1,
                Op::Delete(_) => c.2 += 1,
                Op::Unchanged => c.3 += 1,
                Op::Kept(_) => c.4 += 1,
            }
        }
        c
    }

    /// The same diff with the old and new values of env fields (`spec.env…`) replaced by
    /// [`crd::warmapp::REDACTED_VALUE`]: what the daemon logs (issue 19: env values may be secrets).
    pub fn redacted(&self) -> Diff {
        let mut out = self.clone();
        for e in &mut out.entries {
            if let Op::Update { fields, .. } = &mut e.op {
                for (path, old, new) in fields.iter_mut() {
                    if path == "spec.env" || path.starts_with("spec.env.") {
                        let hide = |v: &mut String| {
                            if v != "null" {
                                *v = crd::warmapp::REDACTED_VALUE.to_string();
                            }
                        };
                        hide(old);
                        hide(new);
                    }
                }
            }
        }
        out
    }

    /// One line: `2 created, 1 updated, 0 deleted, 3 unchanged, 1 kept (not in the file)`.
    pub fn summary(&self) -> String {
        let (c, u, d, n, k) = self.counts();
        let mut s = format!("{c} created, {u} updated, {d} deleted, {n} unchanged");
        if k > 0 {
            s.push_str(&format!(
                ", {k} kept (not in the file; --prune deletes them)"
            ));
        }
        s
    }
}

impl fmt::Display for Diff {
    /// A short `kubectl diff`: one line per object, changed fields indented below.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.entries {
            match &e.op {
                Op::Create(_) => writeln!(f, "+ {} (create)", e.key)?,
                Op::Update { fields, .. } => {
                    writeln!(f, "~ {} (update)", e.key)?;
                    for (path, old, new) in fields {
                        writeln!(f, "    {path}: {old} -> {new}")?;
                    }
                }
                Op::Unchanged => writeln!(f, "= {} (unchanged)", e.key)?,
                Op::Delete(_) => writeln!(f, "- {} (delete)", e.key)?,
                Op::Kept(_) => writeln!(f, "! {} (not in the file; kept without --prune)", e.key)?,
            }
            match &e.version {
                Some(VersionIntent::KeepPromoted { declared, promoted }) => writeln!(
                    f,
                    "    spec.version: promoted {promoted} stays in force (the file still declares {declared})"
                )?,
                Some(VersionIntent::AdoptedPromoted { version }) => writeln!(
                    f,
                    "    spec.version: the file now declares the promoted {version}"
                )?,
                Some(VersionIntent::Overridden { promoted, declared }) => writeln!(
                    f,
                    "    spec.version: the file's {declared} overrides promoted {promoted}"
                )?,
                Some(VersionIntent::Declared) | None => {}
            }
        }
        write!(f, "{}", self.summary())
    }
}

/// Compares what the store holds (`current`, operator kinds only are considered) with the
/// file (`desired`). Objects only in the store are deleted with `prune`, else kept.
///
/// # Guarantees
/// Pure. Only labels and spec are compared: status and store-owned metadata never cause an
/// update. A WarmApp whose promoted version is in force keeps it while the file still
/// declares the version declared when hearth promoted (an unchanged or unrelated edit never
/// reverts a promotion); a file that declares another version wins (explicit intent), see
/// [`crd::promotion::version_intent`].
pub fn diff(current: &[AnyResource], desired: &[AnyResource], prune: bool) -> Diff {
    let key = |r: &AnyResource| (r.kind(), r.name().to_string());
    let current: BTreeMap<(Kind, String), &AnyResource> = current
        .iter()
        .filter(|r| OPERATOR_KINDS.contains(&r.kind()))
        .map(|r| (key(r), r))
        .collect();
    let desired: BTreeMap<(Kind, String), &AnyResource> =
        desired.iter().map(|r| (key(r), r)).collect();
    let mut entries = Vec::new();
    for ((kind, name), want) in &desired {
        let mut version = None;
        let op = match current.get(&(*kind, name.clone())) {
            None => Op::Create((*want).clone()),
            Some(have) => {
                let mut want = (*want).clone();
                // A promotion in force survives a file that still declares what it declared.
                if let (AnyResource::WarmApp(h), AnyResource::WarmApp(w)) = (have, &mut want) {
                    let intent = version_intent(h, &w.spec.version);
                    if let VersionIntent::KeepPromoted { promoted, .. } = &intent {
                        w.spec.version = promoted.clone();
                    }
                    version = (intent != VersionIntent::Declared).then_some(intent);
                    // The promoted content stays with the version it was promoted with: a file
                    // that declares no content and this version never undoes it (issue 16).
                    if w.spec.content.is_none() && w.spec.version == h.spec.version {
                        w.spec.content = h.spec.content.clone();
                    }
                }
                let fields = changed_fields(have, &want);
                if fields.is_empty() {
                    Op::Unchanged
                } else {
                    Op::Update {
                        current: Box::new((*have).clone()),
                        desired: Box::new(want),
                        fields,
                    }
                }
            }
        };
        entries.push(DiffEntry {
            key: ObjectRef::new(*kind, name.clone()),
            op,
            version,
        });
    }
    for ((kind, name), have) in &current {
        if !desired.contains_key(&(*kind, name.clone())) {
            let op = if prune {
                Op::Delete((*have).clone())
            } else {
                Op::Kept((*have).clone())
            };
            entries.push(DiffEntry {
                key: ObjectRef::new(*kind, name.clone()),
                op,
                version: None,
            });
        }
    }
    entries.sort_by(|a, b| (a.key.kind, &a.key.name).cmp(&(b.key.kind, &b.key.name)));
    Diff { entries }
}

/// The labels and spec of `r` as JSON.
fn comparable(r: &AnyResource) -> Value {
    let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
    let labels = v
        .pointer("/metadata/labels")
        .cloned()
        .unwrap_or_else(|| Value::Object(Default::default()));
    let spec = v.get_mut("spec").map(Value::take).unwrap_or(Value::Null);
    serde_json::json!({ "metadata": { "labels": labels }, "spec": spec })
}

fn changed_fields(have: &AnyResource, want: &AnyResource) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    leaf_diff("", &comparable(have), &comparable(want), &mut out);
    out
}

fn leaf_diff(path: &str, a: &Value, b: &Value, out: &mut Vec<(String, String, String)>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let child = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                let none = Value::Null;
                leaf_diff(
                    &child,
                    x.get(k).unwrap_or(&none),
                    y.get(k).unwrap_or(&none),
                    out,
                );
            }
        }
        _ if a == b => {}
        _ => out.push((path.to_string(), a.to_string(), b.to_string())),
    }
}
