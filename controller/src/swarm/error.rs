//! Errors of swarm calls, typed so callers can tell retryable from final failures.

use std::time::Duration;

use super::types::{Call, ObjectKind, Verb};

/// What went wrong with one call to the swarm. Every variant names the [`Call`].
///
/// Retryability ([`Error::is_retryable`]) means "the same call may succeed later without
/// changing it". Callers that hold a stale version ([`Error::OutOfSequence`]) must relist first.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object does not exist (HTTP 404). Not retryable; teardown counts it as done.
    #[error("{call}: {id} not found")]
    NotFound {
        /// The call.
        call: Call,
        /// The ID or name the call addressed.
        id: String,
    },
    /// An update carried a stale version index ("update out of sequence"). Not retryable as
    /// is: relist to get the current version, then decide again.
    #[error("{call}: {id} update out of sequence (version {version} is stale)")]
    OutOfSequence {
        /// The call.
        call: Call,
        /// The object updated.
        id: String,
        /// The version the caller passed.
        version: u64,
    },
    /// The object is still used by another (a volume by a container, a network or secret by a
    /// service). Retryable: it frees up once the user is gone.
    #[error("{call}: {id} is in use: {message}")]
    InUse {
        /// The call.
        call: Call,
        /// The object.
        id: String,
        /// The daemon's message (names the user).
        message: String,
    },
    /// An object with that name already exists (HTTP 409 on create). Not retryable.
    #[error("{call}: {name} already exists")]
    AlreadyExists {
        /// The call.
        call: Call,
        /// The name that collided.
        name: String,
    },
    /// The call did not finish within its deadline. Retryable; whether a write took effect is
    /// unknown, so relist before deciding again.
    #[error("{call}: timed out after {after:?}")]
    Timeout {
        /// The call.
        call: Call,
        /// The deadline.
        after: Duration,
    },
    /// The daemon could not be reached or the connection broke (socket missing, dockerd
    /// restarting). Retryable.
    #[error("{call}: docker unreachable")]
    Transport {
        /// The call.
        call: Call,
        /// The underlying I/O or HTTP error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The swarm cannot serve the call right now (HTTP 503: not a manager, no leader, swarm
    /// not initialised). Retryable.
    #[error("{call}: swarm unavailable: {message}")]
    Unavailable {
        /// The call.
        call: Call,
        /// The daemon's message.
        message: String,
    },
    /// The daemon refused the call (invalid spec, unknown image reference form, …). Not
    /// retryable: the same request fails the same way.
    #[error("{call}: rejected by docker (status {status}): {message}")]
    Rejected {
        /// The call.
        call: Call,
        /// HTTP status.
        status: u16,
        /// The daemon's message.
        message: String,
    },
    /// The daemon answered something hearth could not read (or, for a spec, hearth could not
    /// encode a field in the API's model). Not retryable.
    #[error("{call}: invalid payload: {message}")]
    Invalid {
        /// The call.
        call: Call,
        /// What did not fit.
        message: String,
    },
}

impl Error {
    /// Whether the same call may succeed if tried again later (see each variant).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::InUse { .. }
            | Error::Timeout { .. }
            | Error::Transport { .. }
            | Error::Unavailable { .. } => true,
            Error::NotFound { .. }
            | Error::OutOfSequence { .. }
            | Error::AlreadyExists { .. }
            | Error::Rejected { .. }
            | Error::Invalid { .. } => false,
        }
    }

    /// The error's kind as a short, closed-set name (`not_found`, `out_of_sequence`, `in_use`,
    /// `already_exists`, `timeout`, `transport`, `unavailable`, `rejected`, `invalid`): the
    /// `error` label of `hearth_docker_api_errors_total`, never anything per object.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::NotFound { .. } => "not_found",
            Error::OutOfSequence { .. } => "out_of_sequence",
            Error::InUse { .. } => "in_use",
            Error::AlreadyExists { .. } => "already_exists",
            Error::Timeout { .. } => "timeout",
            Error::Transport { .. } => "transport",
            Error::Unavailable { .. } => "unavailable",
            Error::Rejected { .. } => "rejected",
            Error::Invalid { .. } => "invalid",
        }
    }

    /// Whether the object was not there (teardown treats this as success).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    /// The call that failed.
    pub fn call(&self) -> Call {
        match self {
            Error::NotFound { call, .. }
            | Error::OutOfSequence { call, .. }
            | Error::InUse { call, .. }
            | Error::AlreadyExists { call, .. }
            | Error::Timeout { call, .. }
            | Error::Transport { call, .. }
            | Error::Unavailable { call, .. }
            | Error::Rejected { call, .. }
            | Error::Invalid { call, .. } => *call,
        }
    }

    /// Classifies a daemon error response (status + message) for `call` on object `id`.
    ///
    /// Docker reports several conditions only in the message text, with varying statuses:
    /// `update out of sequence` (500), `volume is in use` (409), `network … is in use by
    /// service` / `has active endpoints` (400/403), `secret … is in use by the following
    /// service` (400), name conflicts (409), `conflict: unable to delete … image is being used
    /// by running container` / `… has dependent child images` (409, image removal). These
    /// texts were measured on Engine 20.10.
    pub fn from_response(
        call: Call,
        id: &str,
        version: Option<u64>,
        status: u16,
        message: String,
    ) -> Self {
        let lower = message.to_ascii_lowercase();
        let id = id.to_string();
        if lower.contains("update out of sequence") {
            return Error::OutOfSequence {
                call,
                id,
                version: version.unwrap_or_default(),
            };
        }
        if lower.contains("in use")
            || lower.contains("active endpoints")
            || lower.contains("is being used by")
            || lower.contains("has dependent child images")
        {
            return Error::InUse { call, id, message };
        }
        if lower.contains("unable to delete") {
            // e.g. an image referenced in several repositories: not a name conflict
            return Error::Rejected {
                call,
                status,
                message,
            };
        }
        // Removing an overlay network whose node-local copy is going answers 500 "network
        // <name> not found" (Engine 20.10), not 404: the network is gone all the same. Only
        // networks: a volume's "plugin ... not found" is no such thing (and teardown's final
        // listing would name a network that is still there anyway).
        if status == 500
            && call.verb == Verb::Remove
            && call.kind == ObjectKind::Network
            && lower.starts_with("network ")
            && lower.ends_with(" not found")
        {
            return Error::NotFound { call, id };
        }
        match status {
            404 => Error::NotFound { call, id },
            409 if lower.contains("already exists") || lower.contains("conflict") => {
                Error::AlreadyExists { call, name: id }
            }
            503 => Error::Unavailable { call, message },
            _ => Error::Rejected {
                call,
                status,
                message,
            },
        }
    }
}

/// `Result` of swarm calls.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn call(verb: Verb, kind: ObjectKind) -> Call {
        Call::new(verb, kind)
    }

    #[test]
    fn daemon_messages_map_to_typed_errors() {
        let e = Error::from_response(
            call(Verb::Update, ObjectKind::Service),
            "s",
            Some(3),
            500,
            "rpc error: code = Unknown desc = update out of sequence".into(),
        );
        assert!(matches!(e, Error::OutOfSequence { version: 3, .. }));
        let e = Error::from_response(
            call(Verb::Remove, ObjectKind::Volume),
            "v",
            None,
            409,
            "remove v: volume is in use - [260dad]".into(),
        );
        assert!(matches!(e, Error::InUse { .. }) && e.is_retryable());
        let e = Error::from_response(
            call(Verb::Remove, ObjectKind::Secret),
            "s",
            None,
            400,
            "rpc error: code = InvalidArgument desc = secret 's' is in use by the following service: x"
                .into(),
        );
        assert!(matches!(e, Error::InUse { .. }));
        let e = Error::from_response(
            call(Verb::Remove, ObjectKind::Service),
            "nope",
            None,
            404,
            "service nope not found".into(),
        );
        assert!(e.is_not_found() && !e.is_retryable());
        let e = Error::from_response(
            call(Verb::Remove, ObjectKind::Network),
            "n1",
            None,
            500,
            "network hth-s_default not found".into(),
        );
        assert!(e.is_not_found(), "{e}");
        let e = Error::from_response(
            call(Verb::Remove, ObjectKind::Volume),
            "v",
            None,
            500,
            "network hth-s_default not found".into(),
        );
        assert!(!e.is_not_found(), "{e}");
        let e = Error::from_response(
            call(Verb::Create, ObjectKind::Secret),
            "s",
            None,
            409,
            "rpc error: code = AlreadyExists desc = secret s already exists".into(),
        );
        assert!(matches!(e, Error::AlreadyExists { .. }));
        let e = Error::from_response(
            call(Verb::Create, ObjectKind::Service),
            "s",
            None,
            400,
            "mismatched Runtime and *Spec fields".into(),
        );
        assert!(matches!(e, Error::Rejected { status: 400, .. }) && !e.is_retryable());
        let e = Error::from_response(
            call(Verb::List, ObjectKind::Service),
            "",
            None,
            503,
            "This node is not a swarm manager.".into(),
        );
        assert!(matches!(e, Error::Unavailable { .. }) && e.is_retryable());
        let e = Error::from_response(
            call(Verb::Remove, ObjectKind::Image),
            "sha256:2ab0",
            None,
            409,
            "conflict: unable to delete 2ab0d1f3 (cannot be forced) - image is being used by running container 7f2c".into(),
        );
        assert!(matches!(e, Error::InUse { .. }));
        let e = Error::from_response(
            call(Verb::Remove, ObjectKind::Image),
            "sha256:2ab0",
            None,
            409,
            "conflict: unable to delete 2ab0d1f3 (must be forced) - image is referenced in multiple repositories".into(),
        );
        assert!(matches!(e, Error::Rejected { status: 409, .. }));
    }

    #[test]
    fn errors_name_the_call_in_lowercase() {
        let e = Error::Timeout {
            call: call(Verb::Remove, ObjectKind::Network),
            after: Duration::from_secs(30),
        };
        assert_eq!(e.to_string(), "remove network: timed out after 30s");
        assert_eq!(e.call(), call(Verb::Remove, ObjectKind::Network));
    }
}
