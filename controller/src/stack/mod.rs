//! Stacks: plan, apply, observe and tear down a whole `docker stack` through the [`Swarm`] trait.
//!
//! A stack is everything carrying `com.docker.stack.namespace=<name>`, exactly as `docker stack
//! deploy` marks it, so `docker stack ls/ps/rm` work on hearth's stacks and hearth can adopt
//! stacks deployed by docker. The module is split the usual way:
//!
//! - [`plan()`] (pure): desired [`StackSpec`] + what was observed → ordered [`Action`]s. Drift is
//!   the `hearth.spec-hash` label, never a deep diff of the daemon's defaulted spec.
//! - [`execute`] / [`apply`]: runs a plan through `&dyn Swarm`, with retries and version-index
//!   conflict handling.
//! - [`observe`] / [`observe_all`] / [`status`]: one list call per kind (for one stack, or for
//!   every stack at once in a resync) and readiness; [`cache`]: one snapshot of every stack
//!   shared by the reconciles of a resync.
//! - [`teardown`]: services first, wait for their containers, then networks, secrets, configs,
//!   volumes; verified by a final listing, leftovers are [`Error::Residuals`].
//!
//! # Decisions
//! - Labels: every object (and each service's container spec, and the mounts that create the
//!   stack's volumes) carries the namespace label, the owner's labels ([`Owner`]) and
//!   `hearth.spec-hash` = content hash of the object before owner labels were added.
//! - Secrets and configs are immutable in Swarm, so they are named `<name>-<hash10>` after
//!   their content; services refer to the new name; superseded ones in the namespace are removed
//!   after the services were updated. (This differs from `docker stack deploy`, which keeps the
//!   name `<stack>_<key>` and fails on changed content.)
//! - Networks and volumes are create-if-missing; hearth creates the stack's volumes itself
//!   (docker lets the first task create them) so they carry hearth's labels from the start. A
//!   changed network is recreated only while the stack has no services, otherwise it is
//!   [`Error::ImmutableChanged`]; a changed volume is always that error (it holds data).
//! - Teardown waits for the services' containers and for tasks that may still create one
//!   (a task being prepared when its service goes creates its container afterwards). It looks
//!   again on each container event of the stack and otherwise after a short poll (50 ms growing
//!   to 250 ms): events are hints that Docker drops after 256, and task states have none.
//!
//! # Caveats
//! Containers and volumes are read and removed on the node hearth talks to; on a multi-node
//! swarm, teardown reaches the other nodes where the stack's tasks ran through their configured
//! endpoints, and names each node it cannot reach as a residual ([`nodes`], [`teardown`]).
//!
//! [`Swarm`]: crate::swarm::Swarm

mod apply;
pub mod cache;
mod forced;
pub mod nodes;
mod observe;
mod plan;
pub(crate) mod retry;
mod teardown;

use std::fmt;
use std::time::Duration;

use crd::names::{labels as keys, StackRole};

use crate::swarm::{self, Labels, ObjectKind};

pub use apply::{apply, execute, execute_observed, ApplyOptions, ApplyReport};
pub use cache::ObservationCache;
pub use forced::{remove_forced, Target};
pub use nodes::{NodeDaemons, NodeReport};
pub use observe::{
    observe, observe_all, status, Depth, Observed, ServiceStatus, StackStatus, TaskProblem,
};
pub use plan::{plan, plan_rendered, render, Action, Plan, NAMESPACE_LABEL};
pub use teardown::{teardown, Mode, TeardownOptions, TeardownReport};

pub use crate::swarm::spec::StackSpec;

/// Who a stack belongs to; becomes hearth's labels on every object of the stack.
///
/// The labels are compared on every apply (an owner change is drift), but they are not part of
/// the spec hash: the hash says what runs, the owner labels say for whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// Kind of the owning resource (`WarmApp`, `Run`, `DepProvider`; `Stack` for a stack an
    /// operator deployed with `hearth stack deploy`).
    pub kind: String,
    /// Name of the owning resource.
    pub name: String,
    /// The stack's role, when hearth assigned the name ([`StackRole::as_str`] → `hearth.role`).
    pub role: Option<StackRole>,
    /// The run this stack belongs to, where there is one (`hearth.parent-run`).
    pub run: Option<String>,
    /// Further labels put on every object (e.g. `hearth.test=1` in tests). Keys must not be
    /// hearth's own label keys.
    pub extra: Labels,
}

impl Owner {
    /// An owner with no role, run or extra labels.
    pub fn new(kind: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            name: name.into(),
            role: None,
            run: None,
            extra: Labels::new(),
        }
    }

    /// The owner of a stack deployed by an operator with `hearth stack deploy NAME`.
    pub fn operator(stack: &str) -> Self {
        Self::new("Stack", stack)
    }

    /// Adds one extra label.
    pub fn with_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra.insert(key.into(), value.into());
        self
    }

    /// The labels this owner puts on objects (without the spec hash). Absent optional labels
    /// map to `None` so a stale value on an observed object is noticed.
    pub fn labels(&self) -> Vec<(String, Option<String>)> {
        self.label_refs()
            .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
            .collect()
    }

    /// [`Owner::labels`], borrowed.
    fn label_refs(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        [
            (keys::MANAGED_BY, Some(keys::MANAGED_BY_VALUE)),
            (keys::KIND, Some(self.kind.as_str())),
            (keys::NAME, Some(self.name.as_str())),
            (keys::ROLE, self.role.map(StackRole::as_str)),
            (keys::PARENT_RUN, self.run.as_deref()),
        ]
        .into_iter()
        .chain(
            self.extra
                .iter()
                .map(|(k, v)| (k.as_str(), Some(v.as_str()))),
        )
    }

    /// Whether `labels` carry exactly this owner's labels (copies nothing: every reconcile
    /// of a resync asks it of each of its stack's services).
    pub fn is_on(&self, labels: &Labels) -> bool {
        self.label_refs()
            .all(|(k, v)| labels.get(k).map(String::as_str) == v)
    }

    /// Adds this owner's labels to `labels`.
    pub(crate) fn stamp(&self, labels: &mut std::collections::BTreeMap<String, String>) {
        for (k, v) in self.labels() {
            match v {
                Some(v) => {
                    labels.insert(k, v);
                }
                None => {
                    labels.remove(&k);
                }
            }
        }
    }
}

/// One object of a stack, as reports and errors name it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjectRef {
    /// Its kind.
    pub kind: ObjectKind,
    /// Its name.
    pub name: String,
    /// Its ID (a volume's ID is its name).
    pub id: String,
}

impl ObjectRef {
    /// A reference.
    pub fn new(kind: ObjectKind, name: impl Into<String>, id: impl Into<String>) -> Self {
        Self {
            kind,
            name: name.into(),
            id: id.into(),
        }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.id == self.name || self.id.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            let short: String = self.id.chars().take(12).collect();
            write!(f, "{} {} ({short})", self.kind, self.name)
        }
    }
}

/// Formats a list of objects for an error message.
fn list(objects: &[ObjectRef]) -> String {
    objects
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Errors of stack operations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The desired stack cannot be planned as given (a name too long for Docker, two objects
    /// with one name, a spec that does not serialise). Not retryable: fix the input.
    #[error("stack {namespace}: plan rejected: {message}")]
    PlanRejected {
        /// The stack.
        namespace: String,
        /// Why.
        message: String,
    },
    /// A network or volume of the stack exists with a different spec; Docker cannot update
    /// either in place. A network is recreated only while the stack has no services (hearth
    /// never takes a running version's network away); a volume is never recreated (it holds
    /// data). Not retryable until the stack (or the object) is removed.
    #[error("stack {namespace}: {object} exists with a different spec and cannot be changed in place; remove the stack (or the {}) first", object.kind)]
    ImmutableChanged {
        /// The stack.
        namespace: String,
        /// The object.
        object: ObjectRef,
    },
    /// An explicitly named secret or config (compose `name:`) exists under that name with
    /// other content. Swarm cannot change a secret's or config's data, and the name is the
    /// file's (recipes put a version variable in it to rotate). Not retryable: bump the
    /// version in the name.
    #[error("stack {namespace}: {object} exists with different content; a {} cannot change under the same name: bump the version in its name (the variable its `name:` uses) to rotate it", object.kind)]
    ContentChanged {
        /// The stack.
        namespace: String,
        /// The secret or config.
        object: ObjectRef,
    },
    /// A swarm call failed while observing. Retryable when the source is.
    #[error("stack {namespace}: observing failed")]
    ObserveFailed {
        /// The stack (`*` for a resync of every stack).
        namespace: String,
        /// The call's error.
        #[source]
        source: swarm::Error,
    },
    /// An action of the plan failed (after its retries). Actions before it took effect; the
    /// next apply re-plans from what it observes. Retryable when the source is.
    #[error("stack {namespace}: {action} failed after {done} completed action(s); {rollback}")]
    ActionFailed {
        /// The stack.
        namespace: String,
        /// The action, described.
        action: String,
        /// Actions completed before it.
        done: usize,
        /// The call's error.
        #[source]
        source: swarm::Error,
        /// What the apply had created, and what of it was removed again.
        rollback: Box<Rollback>,
    },
    /// A service update kept meeting a newer version (someone else updates it concurrently).
    /// Retryable.
    #[error("stack {namespace}: service {service} kept changing under {attempts} update attempts; {rollback}")]
    ConflictPersisted {
        /// The stack.
        namespace: String,
        /// The service.
        service: String,
        /// Attempts made.
        attempts: u32,
        /// What the apply had created, and what of it was removed again.
        rollback: Box<Rollback>,
    },
    /// Teardown ended with objects of the stack still present. Each is named; `failures` holds
    /// the last error of each removal that failed. Retryable (forced mode frees most causes).
    #[error(
        "stack {namespace}: teardown left {} object(s): {}{}",
        residuals.len(),
        list(residuals),
        if failures.is_empty() { String::new() } else { format!("; failures: {}", failures.join("; ")) }
    )]
    Residuals {
        /// The stack.
        namespace: String,
        /// What is still there.
        residuals: Vec<ObjectRef>,
        /// Errors met on the way (object: error).
        failures: Vec<String>,
        /// What was removed before giving up.
        report: Box<TeardownReport>,
    },
}

impl Error {
    /// Whether trying the same operation again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::PlanRejected { .. }
            | Error::ImmutableChanged { .. }
            | Error::ContentChanged { .. } => false,
            Error::ObserveFailed { source, .. } | Error::ActionFailed { source, .. } => {
                source.is_retryable() || matches!(source, swarm::Error::OutOfSequence { .. })
            }
            Error::ConflictPersisted { .. } | Error::Residuals { .. } => true,
        }
    }
}

/// How a failed apply undid what it had created ([`Error::ActionFailed`], [`Error::ConflictPersisted`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rollback {
    /// What the apply had created and removed again.
    pub removed: Vec<ObjectRef>,
    /// What the apply had created and kept: a service it had updated refers to it.
    pub kept: Vec<ObjectRef>,
    /// What is still there, each with why (`object: error`).
    pub left: Vec<String>,
}

impl fmt::Display for Rollback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.removed.is_empty() {
            write!(f, "nothing had been created")?;
        } else {
            write!(
                f,
                "removed the {} object(s) this apply had created: {}",
                self.removed.len(),
                list(&self.removed)
            )?;
        }
        if !self.kept.is_empty() {
            write!(
                f,
                "; kept what the services it had updated use: {}",
                list(&self.kept)
            )?;
        }
        if !self.left.is_empty() {
            write!(f, "; could not remove: {}", self.left.join("; "))?;
        }
        Ok(())
    }
}

/// `Result` of stack operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How many independent swarm calls of one apply or teardown step run at once.
pub(crate) const CONCURRENCY: usize = 16;

/// Default deadline of one apply (all its retries included).
pub const DEFAULT_APPLY_DEADLINE: Duration = Duration::from_secs(120);

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn owner_labels_include_absent_optionals_so_stale_values_are_noticed() {
        let owner = Owner::new("Run", "r1").with_label("hearth.test", "1");
        let mut labels = Labels::new();
        owner.stamp(labels.make_mut());
        assert!(owner.is_on(&labels));
        assert_eq!(labels.get("hearth.managed-by").unwrap(), "hearth");
        assert_eq!(labels.get("hearth.test").unwrap(), "1");
        labels.insert("hearth.parent-run".into(), "old".into());
        assert!(!owner.is_on(&labels));
        owner.stamp(labels.make_mut());
        assert!(owner.is_on(&labels));
    }

    #[test]
    fn residuals_name_every_leftover_object() {
        let err = Error::Residuals {
            namespace: "s".into(),
            residuals: vec![
                ObjectRef::new(ObjectKind::Network, "s_default", "abcdef0123456789"),
                ObjectRef::new(ObjectKind::Volume, "s_data", "s_data"),
            ],
            failures: vec!["remove network s_default: timed out".into()],
            report: Box::default(),
        };
        let text = err.to_string();
        assert!(text.contains("network s_default (abcdef012345)"), "{text}");
        assert!(text.contains("volume s_data"), "{text}");
        assert!(text.contains("timed out"), "{text}");
        assert!(err.is_retryable());
    }
}
