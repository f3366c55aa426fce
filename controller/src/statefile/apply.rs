//! Applying a validated state file to the store, and recording the outcome in its history.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use crd::names::BaseDomain;
use crd::promotion::VersionIntent;
use crd::{AnyResource, DepProvider, Kind, Resource, SlotPool, WarmApp};
use state::history::{reason, NewEntry, ObjectRef};
use state::{Store, Transaction};

use super::diff::{diff, Diff, Op};
use super::{load, DesiredSet, Error, Problem};
use crate::yaml::Loc;

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

/// Attempts at a whole apply when a concurrent write made what it read stale.
const APPLY_ATTEMPTS: u32 = 10;

/// Applies `set` to `store`: creates, updates and (with `prune`) deletes WarmApps,
/// DepProviders and SlotPools so the store holds what the file says, and appends an `Applied`
/// history entry — all in one store transaction. Returns the diff.
///
/// # Guarantees
/// - Nothing is written before everything is checked: the file was validated when parsed, and
///   the set that results (file plus objects kept without `prune`) is checked for consistency
///   here; a problem rejects the whole file ([`Error::FileRejected`]) and writes nothing.
/// - One transaction (issue 14): every create, update and delete, the promotion records a
///   declared version clears, and their history entries (`VersionDeclared`, `Applied`) commit
///   together or not at all — also when the process dies mid-apply. A failed apply leaves the
///   previous desired state in force, whole.
/// - Writes are guarded by the resourceVersions the diff read. A concurrent write in between
///   (the controller's status writes, typically) fails the transaction, and the apply starts
///   again from a fresh read, up to 10 times in all: the file owns labels and spec of operator
///   kinds (last writer wins for those), the store keeps the status written meanwhile.
/// - Without `prune` nothing is deleted. With `dry_run` nothing is written at all.
///
/// # Errors
/// [`Error::FileRejected`], [`Error::StoreFailed`] (nothing written then; a conflict after the
/// last attempt is one).
pub async fn apply(store: &Store, set: &DesiredSet, options: ApplyOptions) -> Result<Diff, Error> {
    apply_with(store, set, options, &|_| std::future::ready(())).await
}

/// [`apply`], calling `before_commit(attempt)` between reading the store and committing (tests
/// let a concurrent writer in there).
pub(super) async fn apply_with<F, Fut>(
    store: &Store,
    set: &DesiredSet,
    options: ApplyOptions,
    before_commit: &F,
) -> Result<Diff, Error>
where
    F: Fn(u32) -> Fut + Sync,
    Fut: std::future::Future<Output = ()> + Send,
{
    let attempt = AtomicU32::new(0);
    let plan = state::retry_conflicts(APPLY_ATTEMPTS, is_stale, || async {
        let attempt = attempt.fetch_add(1, Ordering::Relaxed) + 1;
        let current = current(store)?;
        let plan = diff(&current, &set.resources, options.prune);
        if !options.prune {
            check_result(set, &plan)?;
        }
        if options.dry_run {
            return Ok(plan);
        }
        let mut tx = store.transaction();
        record(&mut tx, &plan, &current, &set.source);
        before_commit(attempt).await;
        match tx.commit().await {
            Ok(_) => Ok(plan),
            Err(e) => {
                if is_stale_store(&e) {
                    tracing::debug!(attempt, error = %e, "state file apply met a concurrent write; reading again");
                }
                Err(Error::StoreFailed(e))
            }
        }
    })
    .await?;
    if !plan.is_noop() && !options.dry_run {
        tracing::info!(file = %set.source, summary = %plan.summary(), "state file applied");
    }
    Ok(plan)
}

/// Whether an apply failed only because the store changed after it was read.
fn is_stale(e: &Error) -> bool {
    matches!(e, Error::StoreFailed(e) if is_stale_store(e))
}

/// A write planned from a read that a concurrent writer made stale: a changed
/// resourceVersion, an object created or deleted meanwhile.
fn is_stale_store(e: &state::Error) -> bool {
    matches!(
        e,
        state::Error::ResourceVersionMismatched { .. }
            | state::Error::ObjectAlreadyExists { .. }
            | state::Error::ObjectNotFound { .. }
    )
}

/// Records every write of `plan` (made from `current`, the store as read) in `tx`, then the
/// history entries.
fn record(tx: &mut Transaction, plan: &Diff, current: &[AnyResource], file: &str) {
    for entry in &plan.entries {
        let declared = entry
            .version
            .as_ref()
            .and_then(|intent| declared_wins(intent, file));
        if let Some((promoted, declared, message)) = declared {
            // The file's version wins over a promotion (or adopts it): its labels and spec and
            // the cleared promotion record in one write, from the read the diff was made of.
            let desired = match &entry.op {
                Op::Update { desired, .. } => match desired.as_ref() {
                    AnyResource::WarmApp(d) => Some(d),
                    _ => None,
                },
                _ => None,
            };
            if let Some(stored) = stored_warm_app(current, &entry.key.name) {
                let mut next = desired.unwrap_or(stored).clone();
                next.metadata.resource_version = stored.metadata.resource_version;
                next.status = stored.status.clone();
                next.status.promotion = None;
                tx.update_with_status(&next);
            }
            tx.append_history(
                NewEntry::new(VERSION_DECLARED, message)
                    .subject(ObjectRef::new(Kind::WarmApp, &entry.key.name))
                    .details(serde_json::json!({ "file": file, "promoted": promoted, "declared": declared })),
            );
            continue;
        }
        match &entry.op {
            Op::Create(r) => create(tx, r),
            Op::Update {
                current, desired, ..
            } => update(tx, current, desired),
            Op::Delete(r) => delete(tx, r),
            Op::Unchanged | Op::Kept(_) => {}
        }
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
    tx.append_history(
        NewEntry::new(
            APPLIED,
            format!("state file {file} applied: {}", plan.summary()),
        )
        .details(serde_json::json!({ "file": file, "changes": changes })),
    );
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
                        Loc::default(),
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

fn create(tx: &mut Transaction, r: &AnyResource) {
    match r {
        AnyResource::WarmApp(o) => tx.create(o),
        AnyResource::DepProvider(o) => tx.create(o),
        AnyResource::SlotPool(o) => tx.create(o),
        AnyResource::Recipe(o) => tx.create(o),
        AnyResource::Run(o) => tx.create(o),
    };
}

/// Records writing `desired`'s labels and spec over `current`, guarded by its resourceVersion.
fn update(tx: &mut Transaction, current: &AnyResource, desired: &AnyResource) {
    fn at<R: Resource>(tx: &mut Transaction, current: &R, desired: &R) {
        let mut next = desired.clone();
        next.meta_mut().resource_version = current.meta().resource_version;
        tx.update(&next);
    }
    match (current, desired) {
        (AnyResource::WarmApp(c), AnyResource::WarmApp(d)) => at(tx, c, d),
        (AnyResource::DepProvider(c), AnyResource::DepProvider(d)) => at(tx, c, d),
        (AnyResource::SlotPool(c), AnyResource::SlotPool(d)) => at(tx, c, d),
        (AnyResource::Recipe(c), AnyResource::Recipe(d)) => at(tx, c, d),
        (AnyResource::Run(c), AnyResource::Run(d)) => at(tx, c, d),
        // The diff pairs objects by (kind, name), so kinds always match.
        _ => {}
    }
}

/// Records deleting `r`, guarded by the resourceVersion it was read at.
fn delete(tx: &mut Transaction, r: &AnyResource) {
    let version = Some(r.meta().resource_version);
    match r {
        AnyResource::WarmApp(o) => tx.delete::<WarmApp>(o.name(), version),
        AnyResource::DepProvider(o) => tx.delete::<DepProvider>(o.name(), version),
        AnyResource::SlotPool(o) => tx.delete::<SlotPool>(o.name(), version),
        AnyResource::Recipe(o) => tx.delete::<crd::Recipe>(o.name(), version),
        AnyResource::Run(o) => tx.delete::<crd::Run>(o.name(), version),
    };
}

/// The stored WarmApp `name` among `current`.
fn stored_warm_app<'a>(current: &'a [AnyResource], name: &str) -> Option<&'a WarmApp> {
    current.iter().find_map(|r| match r {
        AnyResource::WarmApp(w) if w.name() == name => Some(w),
        _ => None,
    })
}

/// When the file's version wins over a promotion (or adopts it), the promotion record is
/// cleared (declared and in force agree again): (promoted, declared, history message).
fn declared_wins(intent: &VersionIntent, file: &str) -> Option<(String, String, String)> {
    match intent {
        VersionIntent::Overridden { promoted, declared } => Some((
            promoted.clone(),
            declared.clone(),
            format!("state file {file} declares {declared}: explicit intent overrides promoted {promoted}"),
        )),
        VersionIntent::AdoptedPromoted { version } => Some((
            version.clone(),
            version.clone(),
            format!("state file {file} now declares the promoted {version}"),
        )),
        VersionIntent::Declared | VersionIntent::KeepPromoted { .. } => None,
    }
}
