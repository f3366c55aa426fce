//! The kube-like envelope every hearth resource shares: kind, metadata and the `Resource` trait.

use std::collections::BTreeMap;

use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// The only API version hearth speaks today.
pub const API_VERSION: &str = "hearth/v1";

/// Every kind of resource hearth stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    /// A long-lived canonical deployment of a recipe at its last known-good version.
    WarmApp,
    /// One CI run: its stack, owner, lease, slot and tier results.
    Run,
    /// A dependency provider runs may request (shared warm app or deployed per run).
    DepProvider,
    /// A pool of slots capping how many runs share the host.
    SlotPool,
}

impl Kind {
    /// All kinds, in a stable order.
    pub const ALL: [Kind; 4] = [Kind::WarmApp, Kind::Run, Kind::DepProvider, Kind::SlotPool];

    /// The kind's name as written in `kind:` fields.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::WarmApp => "WarmApp",
            Kind::Run => "Run",
            Kind::DepProvider => "DepProvider",
            Kind::SlotPool => "SlotPool",
        }
    }

    /// Parses a `kind:` value; `None` for kinds hearth does not know.
    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Metadata every resource carries.
///
/// `generation` and `resource_version` are owned by the store: callers never set them
/// (the store ignores incoming values and assigns its own).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    /// The resource's name: a DNS label, unique per kind.
    pub name: String,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Bumped by the store whenever `spec` changes (never on status-only writes).
    #[serde(default)]
    pub generation: u64,
    /// The store's revision at the last write of this object; used for optimistic concurrency.
    #[serde(default)]
    pub resource_version: u64,
    /// When the store first saw this object (unix milliseconds); 0 until stored.
    #[serde(default)]
    pub creation_timestamp_ms: u64,
}

impl ObjectMeta {
    /// Metadata with just a name.
    pub fn named(name: impl Into<String>) -> Self {
        ObjectMeta {
            name: name.into(),
            ..ObjectMeta::default()
        }
    }
}

/// What the store and the controller need to know about a resource type.
///
/// Implemented by each kind (`WarmApp`, `Run`, `DepProvider`, `SlotPool`).
pub trait Resource: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    /// The kind tag.
    const KIND: Kind;
    /// The desired state. A change to it (by `PartialEq`) bumps `metadata.generation`.
    type Spec: Serialize + DeserializeOwned + Clone + PartialEq + Send + Sync;
    /// The observed state, written by the controller.
    type Status: Serialize + DeserializeOwned + Clone + Default + PartialEq + Send + Sync;

    /// The metadata.
    fn meta(&self) -> &ObjectMeta;
    /// The metadata, mutably (the store uses it to assign generation and resourceVersion).
    fn meta_mut(&mut self) -> &mut ObjectMeta;
    /// The desired state.
    fn spec(&self) -> &Self::Spec;
    /// The observed state.
    fn status(&self) -> &Self::Status;
    /// The observed state, mutably.
    fn status_mut(&mut self) -> &mut Self::Status;

    /// The object's name.
    fn name(&self) -> &str {
        &self.meta().name
    }
}
