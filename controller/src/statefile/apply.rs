//! Applying a validated state file to the store, and recording the outcome in its history.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crd::names::BaseDomain;
use crd::promotion::VersionIntent;
use crd::{AnyResource, DepProvider, Kind, Resource, SlotPool, WarmApp};
use state::history::{reason, NewEntry, ObjectRef};
use state::Store;

use super::diff::{diff, Diff, Op};
use super::located::Pos;
use super::{load, DesiredSet, Error, Problem};

/// History reason of an applied state file.
pub const APPLIED: &str = "Applied";

/// History reason: a state file declared a WarmApp version other than the one hearth had
/// promoted; the operator's explicit intent won (or adopted the promoted version).
pub const VERSION_DECLARED: &str = "VersionDeclared";

/// How to apply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyOptions {
    /// Delete objects that are in the store but not in the file.
    pub prune: bool,
    /// Compute and return the diff; write nothing.
    pub dry_run: bool,
}

/// Applies `set` to `store`: creates, updates and (with `prune`) deletes WarmApps,
/// DepProviders and SlotPools so the store holds what the file says, then appends an
/// `Applied` history entry. Returns the diff.
///
/// # Guarantees
/// - Nothing is written before everything is checked: the file was validated when parsed, and
///   the set that results (file plus objects kept without `prune`) is checked for consistency
///   here; a problem rejects the whole file ([`Error::FileRejected`]) and writes nothing.
/// - Writes are guarded by resourceVersion; a version made stale by a concurrent write (the
///   controller's status writes, typically) is retried at the current version, because the
///   file owns labels and spec of operator kinds (last writer wins for those).
/// - Without `prune` nothing is deleted. With `dry_run` nothing is written at all.
///
/// # Errors
/// [`Error::FileRejected`], [`Error::StoreFailed`].
///
/// # Caveats
/// The store has no multi-object transaction: a store failure (I/O, or a concurrent write
/// detected by resourceVersion) after some writes leaves those in place. The error says so;
/// applying again converges.
pub async fn apply(store: &Store, set: &DesiredSet, options: ApplyOptions) -> Result<Diff, Error> {
    let current = current(store)?;
    let plan = diff(&current, &set.resources, options.prune);
    if !options.prune {
        check_result(set, &plan)?;
    }
    if options.dry_run {
        return Ok(plan);
    }
    for entry in &plan.entries {
        match &entry.op {
            Op::Create(r) => create(store, r).await?,
            Op::Update {
                current, desired, ..
            } => update(store, current, desired).await?,
            Op::Delete(r) => delete(store, r).await?,
            Op::Unchanged | Op::Kept(_) => {}
        }
    }
    for entry in &plan.entries {
        if let Some(
            intent @ (VersionIntent::AdoptedPromoted { .. } | VersionIntent::Overridden { .. }),
        ) = &entry.version
        {
            declared_wins(store, &entry.key.name, intent, &set.source).await?;
        }
    }
    if !plan.is_noop() {
        tracing::info!(file = %set.source, summary = %plan.summary(), "state file applied");
    }
    let changes: Vec<serde_json::Value> = plan
        .entries
        .iter()
        .filter(|e| !matches!(e.op, Op::Unchanged))
        .map(|e| {
            let op = match e.op {
                Op::Create(_) => "create",
                Op::Update { .. } => "update",
                Op::Delete(_) => "delete",
                Op::Kept(_) => "kept",
                Op::Unchanged => "unchanged",
            };
            serde_json::json!({ "kind": e.key.kind, "name": e.key.name, "op": op })
        })
        .collect();
    store
        .append_history(
            NewEntry::new(
                APPLIED,
                format!("state file {} applied: {}", set.source, plan.summary()),
            )
            .details(serde_json::json!({ "file": set.source, "changes": changes })),
        )
        .await
        .map_err(Error::StoreFailed)?;
    Ok(plan)
}

/// Loads the state file at `path` and applies it. A file that does not load is recorded as
/// `Rejected` in the history (unless `dry_run`) and changes nothing else.
///
/// # Errors
/// As [`load`] and [`apply`].
pub async fn apply_file(
    store: &Store,
    path: &Path,
    base: Option<&BaseDomain>,
    options: ApplyOptions,
) -> Result<Diff, Error> {
    let result = match load(path, base) {
        Ok(set) => apply(store, &set, options).await,
        Err(e) => Err(e),
    };
    if let Err(e @ (Error::FileRejected { .. } | Error::FileUnreadable { .. })) = &result {
        tracing::warn!(error = %e, "state file rejected; the desired state in force is unchanged");
        if !options.dry_run {
            record_rejection(store, e).await?;
        }
    }
    result
}

/// Appends a `Rejected` history entry for a state file that was not applied.
///
/// # Errors
/// [`Error::StoreFailed`].
pub async fn record_rejection(store: &Store, error: &Error) -> Result<(), Error> {
    let (file, problems): (String, Vec<String>) = match error {
        Error::FileRejected { file, problems } => (
            file.clone(),
            problems
                .iter()
                .map(|p| p.display_in(file).to_string())
                .collect(),
        ),
        Error::FileUnreadable { path, source } => (
            path.display().to_string(),
            vec![format!("cannot read: {source}")],
        ),
        other => ("<unknown>".into(), vec![other.to_string()]),
    };
    store
        .append_history(
            NewEntry::new(
                reason::REJECTED,
                format!(
                    "state file {file} rejected ({} problem{}); the desired state in force is unchanged",
                    problems.len(),
                    if problems.len() == 1 { "" } else { "s" }
                ),
            )
            .details(serde_json::json!({ "file": file, "problems": problems })),
        )
        .await
        .map_err(Error::StoreFailed)?;
    Ok(())
}

/// The operator kinds in the store.
fn current(store: &Store) -> Result<Vec<AnyResource>, Error> {
    let mut all: Vec<AnyResource> = Vec::new();
    all.extend(
        list::<WarmApp>(store)?
            .into_iter()
            .map(AnyResource::WarmApp),
    );
    all.extend(
        list::<DepProvider>(store)?
            .into_iter()
            .map(AnyResource::DepProvider),
    );
    all.extend(
        list::<SlotPool>(store)?
            .into_iter()
            .map(AnyResource::SlotPool),
    );
    all.extend(
        list::<crd::Recipe>(store)?
            .into_iter()
            .map(AnyResource::Recipe),
    );
    Ok(all)
}

fn list<R: Resource>(store: &Store) -> Result<Vec<R>, Error> {
    Ok(store.list::<R>().map_err(Error::StoreFailed)?.items)
}

/// Rejects a file whose resources, together with the objects kept without prune, do not
/// hang together (e.g. a kept DepProvider naming a WarmApp the file dropped).
fn check_result(set: &DesiredSet, plan: &Diff) -> Result<(), Error> {
    let kept: Vec<AnyResource> = plan
        .entries
        .iter()
        .filter_map(|e| match &e.op {
            Op::Kept(r) => Some(r.clone()),
            _ => None,
        })
        .collect();
    if kept.is_empty() {
        return Ok(());
    }
    let mut all = set.resources.clone();
    all.extend(kept);
    match crd::consistency::check_set(&all, None) {
        Ok(()) => Ok(()),
        Err(found) => Err(Error::FileRejected {
            file: set.source.clone(),
            problems: found
                .problems
                .into_iter()
                .map(|p| {
                    let origin = if p.index >= set.resources.len() {
                        "kept in the store, not in the file"
                    } else {
                        "with the objects kept in the store"
                    };
                    Problem::at(
                        Pos::default(),
                        Some(format!("{}/{} ({origin})", p.kind, p.name)),
                        p.path,
                        format!(
                            "{}; add what is missing to the file, or apply with --prune",
                            p.message
                        ),
                    )
                })
                .collect(),
        }),
    }
}

async fn create(store: &Store, r: &AnyResource) -> Result<(), Error> {
    let result = match r {
        AnyResource::WarmApp(o) => store.create(o).await.map(drop),
        AnyResource::DepProvider(o) => store.create(o).await.map(drop),
        AnyResource::SlotPool(o) => store.create(o).await.map(drop),
        AnyResource::Recipe(o) => store.create(o).await.map(drop),
        AnyResource::Run(o) => store.create(o).await.map(drop),
    };
    result.map_err(Error::StoreFailed)
}

/// Attempts at a write whose resourceVersion went stale meanwhile.
const WRITE_ATTEMPTS: u32 = 5;

/// Writes `desired`'s labels and spec over `current`.
pub(super) async fn update(
    store: &Store,
    current: &AnyResource,
    desired: &AnyResource,
) -> Result<(), Error> {
    let result = match (current, desired) {
        (AnyResource::WarmApp(c), AnyResource::WarmApp(d)) => update_typed(store, c, d).await,
        (AnyResource::DepProvider(c), AnyResource::DepProvider(d)) => {
            update_typed(store, c, d).await
        }
        (AnyResource::SlotPool(c), AnyResource::SlotPool(d)) => update_typed(store, c, d).await,
        (AnyResource::Recipe(c), AnyResource::Recipe(d)) => update_typed(store, c, d).await,
        (AnyResource::Run(c), AnyResource::Run(d)) => update_typed(store, c, d).await,
        // The diff pairs objects by (kind, name), so kinds always match.
        _ => Ok(()),
    };
    result.map_err(Error::StoreFailed)
}

/// An update guarded by resourceVersion. The controller writes statuses all the time, which
/// makes the version the diff saw stale without touching what the file owns (labels and
/// spec), so a stale version is retried at the current one: for operator kinds the file is
/// the source of truth.
async fn update_typed<R: Resource>(store: &Store, current: &R, desired: &R) -> state::Result<()> {
    let version = AtomicU64::new(current.meta().resource_version);
    state::retry_conflicts(WRITE_ATTEMPTS, state::Error::is_conflict, || async {
        let mut next = desired.clone();
        next.meta_mut().resource_version = version.load(Ordering::Relaxed);
        match store.update(&next).await {
            Err(e @ state::Error::ResourceVersionMismatched { actual, .. }) => {
                tracing::debug!(object = %desired.name(), actual, "stale resourceVersion; retrying");
                version.store(actual, Ordering::Relaxed);
                Err(e)
            }
            other => other.map(drop),
        }
    })
    .await
}

async fn delete(store: &Store, r: &AnyResource) -> Result<(), Error> {
    let version = r.meta().resource_version;
    let result = match r {
        AnyResource::WarmApp(o) => delete_typed::<WarmApp>(store, o.name(), version).await,
        AnyResource::DepProvider(o) => delete_typed::<DepProvider>(store, o.name(), version).await,
        AnyResource::SlotPool(o) => delete_typed::<SlotPool>(store, o.name(), version).await,
        AnyResource::Recipe(o) => delete_typed::<crd::Recipe>(store, o.name(), version).await,
        AnyResource::Run(o) => delete_typed::<crd::Run>(store, o.name(), version).await,
    };
    result.map_err(Error::StoreFailed)
}

/// A delete guarded by resourceVersion, retried like [`update_typed`]; an object already gone
/// is fine.
async fn delete_typed<R: Resource>(store: &Store, name: &str, version: u64) -> state::Result<()> {
    let version = AtomicU64::new(version);
    state::retry_conflicts(WRITE_ATTEMPTS, state::Error::is_conflict, || async {
        match store
            .delete::<R>(name, Some(version.load(Ordering::Relaxed)))
            .await
        {
            Err(e @ state::Error::ResourceVersionMismatched { actual, .. }) => {
                version.store(actual, Ordering::Relaxed);
                Err(e)
            }
            Err(state::Error::ObjectNotFound { .. }) => Ok(()),
            other => other.map(drop),
        }
    })
    .await
}

/// The file's version won over a promotion (or adopted it): the promotion record is cleared
/// (declared and in force agree again) and the decision recorded.
async fn declared_wins(
    store: &Store,
    name: &str,
    intent: &VersionIntent,
    file: &str,
) -> Result<(), Error> {
    let (promoted, declared, message) = match intent {
        VersionIntent::Overridden { promoted, declared } => (
            promoted,
            declared,
            format!("state file {file} declares {declared}: explicit intent overrides promoted {promoted}"),
        ),
        VersionIntent::AdoptedPromoted { version } => (
            version,
            version,
            format!("state file {file} now declares the promoted {version}"),
        ),
        VersionIntent::Declared | VersionIntent::KeepPromoted { .. } => return Ok(()),
    };
    for _ in 0..WRITE_ATTEMPTS {
        let Some(mut app) = store.get_opt::<WarmApp>(name).map_err(Error::StoreFailed)? else {
            return Ok(());
        };
        if app.status.promotion.as_ref().map(|p| &p.version) != Some(promoted) {
            break;
        }
        app.status.promotion = None;
        match store.update_status(&app).await {
            Ok(_) => break,
            Err(e) if e.is_conflict() => continue,
            Err(e) => return Err(Error::StoreFailed(e)),
        }
    }
    store
        .append_history(
            NewEntry::new(VERSION_DECLARED, message)
                .subject(ObjectRef::new(Kind::WarmApp, name))
                .details(
                    serde_json::json!({ "file": file, "promoted": promoted, "declared": declared }),
                ),
        )
        .await
        .map_err(Error::StoreFailed)?;
    Ok(())
}
