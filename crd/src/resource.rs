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
    /// Where a recipe comes from (a git repository whose tags are versions, or a directory).
    Recipe,
}

impl Kind {
    /// All kinds, in a stable order.
    pub const ALL: [Kind; 5] = [
        Kind::WarmApp,
        Kind::Run,
        Kind::DepProvider,
        Kind::SlotPool,
        Kind::Recipe,
    ];

    /// The kind's name as written in `kind:` fields.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::WarmApp => "WarmApp",
            Kind::Run => "Run",
            Kind::DepProvider => "DepProvider",
            Kind::SlotPool => "SlotPool",
            Kind::Recipe => "Recipe",
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

/// Whether a value equals its default (used to omit empty statuses when serialising).
pub(crate) fn is_default<T: Default + PartialEq>(t: &T) -> bool {
    *t == T::default()
}

/// Checks the envelope every kind shares: `apiVersion`, `kind`, `metadata.name` (a DNS label
/// of at most `max_name_len`) and `metadata.labels` keys.
pub(crate) fn validate_envelope(
    errs: &mut crate::validation::ValidationErrors,
    api_version: &str,
    kind: Kind,
    expected: Kind,
    meta: &ObjectMeta,
    max_name_len: usize,
) {
    use crate::validation::{check_dns_label, check_label_key, check_text};
    if api_version != API_VERSION {
        errs.push(
            "apiVersion",
            format!("must be {API_VERSION:?} (got {api_version:?})"),
        );
    }
    if kind != expected {
        errs.push("kind", format!("must be {expected:?} (got {kind:?})"));
    }
    errs.check("metadata.name", check_dns_label(&meta.name, max_name_len));
    for (k, v) in &meta.labels {
        errs.check(format!("metadata.labels[{k:?}]"), check_label_key(k));
        errs.check(format!("metadata.labels[{k:?}]"), check_text(v, 1024));
    }
}

/// Implements [`Resource`] and a `new` constructor for a kind struct with the standard
/// `api_version, kind, metadata, spec, status` fields.
macro_rules! impl_resource {
    ($ty:ident, $spec:ty, $status:ty) => {
        impl $crate::resource::Resource for $ty {
            const KIND: $crate::resource::Kind = $crate::resource::Kind::$ty;
            type Spec = $spec;
            type Status = $status;

            fn meta(&self) -> &$crate::resource::ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut $crate::resource::ObjectMeta {
                &mut self.metadata
            }
            fn spec(&self) -> &Self::Spec {
                &self.spec
            }
            fn status(&self) -> &Self::Status {
                &self.status
            }
            fn status_mut(&mut self) -> &mut Self::Status {
                &mut self.status
            }
        }

        impl $ty {
            /// A new object with `apiVersion`/`kind` filled in, the given name and spec, and an
            /// empty status.
            pub fn new(name: impl Into<String>, spec: $spec) -> Self {
                $ty {
                    api_version: $crate::resource::API_VERSION.to_string(),
                    kind: $crate::resource::Kind::$ty,
                    metadata: $crate::resource::ObjectMeta::named(name),
                    spec,
                    status: <$status>::default(),
                }
            }
        }
    };
}
pub(crate) use impl_resource;
