//! Atomic multi-object writes: all of a transaction's writes land in one durable batch, or none.

use crd::Resource;

use crate::engine::Op;
use crate::error::{Error, Result};
use crate::history::NewEntry;
use crate::keys;
use crate::store::{
    check_name, plan_create, plan_delete, plan_update, plan_update_all, plan_update_status, step,
    Planner, Stamp, Store,
};
use crate::watch::Change;

/// One recorded write: its object key and how to plan it against the stored bytes.
pub(crate) struct PendingOp {
    pub(crate) key: Vec<u8>,
    pub(crate) run: RunOp,
}

/// Plans one write against the current bytes: the engine op and change event, or nothing.
pub(crate) type RunOp =
    Box<dyn FnOnce(Option<&[u8]>, Stamp) -> Result<Option<(Op, Change)>> + Send>;

/// A set of object writes committed atomically, from [`Store::transaction`].
///
/// Each write has the same semantics (and errors) as the single-object method of the same
/// name, is checked against the store as left by the writes recorded before it, and gets its
/// own revision. Use it where a crash between two writes would leave a half-done operation,
/// e.g. creating a Run together with its slot lease in the SlotPool's status. History entries
/// recorded with [`Transaction::append_history`] commit together with the object writes.
///
/// # Guarantees
/// - `commit` either applies every write and history entry (one engine batch, durable before
///   it returns; across a crash, all of it or none) or, when any write fails its checks, none.
/// - Change events of a committed transaction are published together, in recorded order.
#[must_use = "a transaction does nothing until committed"]
pub struct Transaction {
    store: Store,
    ops: Vec<PendingOp>,
    history: Vec<NewEntry>,
    rejected: Option<Error>,
}

impl std::fmt::Debug for Transaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction")
            .field("ops", &self.ops.len())
            .field("history", &self.history.len())
            .field("rejected", &self.rejected)
            .finish()
    }
}

impl Transaction {
    pub(crate) fn new(store: Store) -> Self {
        Transaction {
            store,
            ops: Vec::new(),
            history: Vec::new(),
            rejected: None,
        }
    }

    fn push<R: Resource>(&mut self, name: &str, plan: impl Planner<R>) -> &mut Self {
        if let Err(e) = check_name(name) {
            self.rejected.get_or_insert(e);
            return self;
        }
        let owned = name.to_string();
        self.ops.push(PendingOp {
            key: keys::object(R::KIND, name),
            run: Box::new(move |current, stamp| {
                step::<R>(&owned, current, stamp, plan).map(|(_, write)| write)
            }),
        });
        self
    }

    /// Records a create (see [`Store::create`]).
    pub fn create<R: Resource>(&mut self, obj: &R) -> &mut Self {
        self.push(obj.name(), plan_create(obj.clone()))
    }

    /// Records a spec/labels update (see [`Store::update`]).
    pub fn update<R: Resource>(&mut self, obj: &R) -> &mut Self {
        self.push(obj.name(), plan_update(obj.clone()))
    }

    /// Records a status update (see [`Store::update_status`]).
    pub fn update_status<R: Resource>(&mut self, obj: &R) -> &mut Self {
        self.push(obj.name(), plan_update_status(obj.clone()))
    }

    /// Records an update of labels, spec *and* status in one write, guarded by `obj`'s
    /// resourceVersion like [`Store::update`] (generation bumped only when the spec changed).
    /// For a change of spec and status decided from one read of the object, e.g. a state
    /// file's version that overrides a promotion also clears the promotion record.
    pub fn update_with_status<R: Resource>(&mut self, obj: &R) -> &mut Self {
        self.push(obj.name(), plan_update_all(obj.clone()))
    }

    /// Records a delete (see [`Store::delete`]).
    pub fn delete<R: Resource>(
        &mut self,
        name: &str,
        expected_resource_version: Option<u64>,
    ) -> &mut Self {
        self.push(
            name,
            plan_delete::<R>(name.to_string(), expected_resource_version),
        )
    }

    /// Records a history entry (see [`Store::append_history`]), appended only if the
    /// transaction commits, after the entries recorded before it.
    pub fn append_history(&mut self, entry: NewEntry) -> &mut Self {
        if let Some(subject) = &entry.subject {
            if let Err(e) = check_name(&subject.name) {
                self.rejected.get_or_insert(e);
                return self;
            }
        }
        self.history.push(entry);
        self
    }

    /// Commits every recorded write atomically and durably.
    ///
    /// Returns one [`Change`] per write that changed something, in recorded order (writes that
    /// change nothing are skipped, as with the single-object methods); read the objects back
    /// for their new state.
    ///
    /// # Errors
    /// The first failing write's error ([`Error::ResourceVersionMismatched`],
    /// [`Error::ObjectNotFound`], [`Error::ObjectAlreadyExists`], [`Error::NameRejected`]);
    /// nothing is written then. [`Error::FlushFailed`], [`Error::EngineFailed`].
    pub async fn commit(self) -> Result<Vec<Change>> {
        if let Some(e) = self.rejected {
            return Err(e);
        }
        self.store.commit(self.ops, self.history).await
    }
}
