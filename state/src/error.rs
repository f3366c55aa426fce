//! The store's error type: one enum, variants named for what happened, retryability on each.

use crd::Kind;

use crate::engine;

/// Result alias for store operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors returned by [`Store`](crate::Store) operations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No object of that kind and name exists. Not retryable as is.
    #[error("{kind}/{name} was not found")]
    ObjectNotFound {
        /// The kind asked for.
        kind: Kind,
        /// The name asked for.
        name: String,
    },
    /// `create` found an object with that name already. Not retryable as is.
    #[error("{kind}/{name} already exists")]
    ObjectAlreadyExists {
        /// The kind.
        kind: Kind,
        /// The name.
        name: String,
    },
    /// The caller's copy is stale (optimistic concurrency). Retryable: read again, re-apply
    /// the change, write again.
    #[error(
        "{kind}/{name} was modified concurrently: expected resourceVersion {expected}, \
         but the store holds {actual}"
    )]
    ResourceVersionMismatched {
        /// The kind.
        kind: Kind,
        /// The name.
        name: String,
        /// The resourceVersion the caller based its write on.
        expected: u64,
        /// The resourceVersion currently stored.
        actual: u64,
    },
    /// The name cannot be stored (empty, too long, or holds `/` or control characters).
    /// Not retryable.
    #[error("name {name:?} was rejected: {reason}")]
    NameRejected {
        /// The name.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// A value could not be serialised. Not retryable (a bug in the resource type).
    #[error("could not encode {what}")]
    EncodeFailed {
        /// What was being encoded.
        what: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
    /// Stored bytes could not be decoded (corruption, or a type that changed incompatibly).
    /// Not retryable.
    #[error("could not decode stored {what}")]
    DecodeFailed {
        /// What was being decoded.
        what: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
    /// The data directory was written by a build with a different store schema. Not retryable:
    /// run a hearth build that supports that version.
    #[error(
        "data directory {location} holds store schema version {found}, \
         but this build supports version {supported}"
    )]
    SchemaVersionUnsupported {
        /// The engine's location.
        location: String,
        /// The version found on disk.
        found: u32,
        /// The version this build reads and writes.
        supported: u32,
    },
    /// Store metadata is unreadable or inconsistent (e.g. data without a schema version).
    /// Not retryable.
    #[error("store metadata at {location} is corrupted: {detail}")]
    MetadataCorrupted {
        /// The engine's location.
        location: String,
        /// What is wrong.
        detail: String,
    },
    /// The engine failed. See [`engine::Error`] for retryability; an in-use data directory
    /// shows up here as [`engine::Error::DirectoryInUse`].
    #[error(transparent)]
    EngineFailed(#[from] engine::Error),
    /// The write was applied but the flush that would make it durable failed, so it may or
    /// may not survive a crash. Retryable in the sense that re-reading shows the current state.
    #[error("write could not be made durable: {message}")]
    FlushFailed {
        /// The flush error.
        message: String,
    },
}

impl Error {
    /// Whether this is a stale-resourceVersion conflict (retry after re-reading).
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::ResourceVersionMismatched { .. })
    }

    /// Whether the object did not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::ObjectNotFound { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_message_should_name_expected_and_actual() {
        let err = Error::ResourceVersionMismatched {
            kind: Kind::Run,
            name: "r1".into(),
            expected: 3,
            actual: 5,
        };
        assert!(err.is_conflict());
        assert_eq!(
            err.to_string(),
            "Run/r1 was modified concurrently: expected resourceVersion 3, but the store holds 5"
        );
    }

    #[test]
    fn schema_message_should_name_found_and_supported_versions() {
        let err = Error::SchemaVersionUnsupported {
            location: "/x".into(),
            found: 9,
            supported: 1,
        };
        assert_eq!(
            err.to_string(),
            "data directory /x holds store schema version 9, but this build supports version 1"
        );
    }
}
