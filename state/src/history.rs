//! The append-only history: what happened, when, to what — listed newest first, with retention.

use std::time::Duration;

use crd::{Kind, Resource};
use serde::{Deserialize, Serialize};

/// Well-known reasons (an open set: any string is accepted). Use these for consistency.
pub mod reason {
    /// Orphans were swept.
    pub const SWEPT: &str = "Swept";
    /// A run's version was promoted to a warm app.
    pub const PROMOTED: &str = "Promoted";
    /// A promotion or an operator state file was rejected.
    pub const REJECTED: &str = "Rejected";
    /// A stack was deployed or upgraded.
    pub const DEPLOYED: &str = "Deployed";
    /// An upgrade failed and the previous version was restored.
    pub const ROLLED_BACK: &str = "RolledBack";
    /// A teardown was verified complete.
    pub const TORN_DOWN: &str = "TornDown";
    /// A teardown left residual objects behind.
    pub const TEARDOWN_FAILED: &str = "TeardownFailed";
}

/// The object an entry is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ObjectRef {
    /// The kind.
    pub kind: Kind,
    /// The name.
    pub name: String,
}

impl ObjectRef {
    /// A reference to `kind`/`name`.
    pub fn new(kind: Kind, name: impl Into<String>) -> Self {
        ObjectRef {
            kind,
            name: name.into(),
        }
    }

    /// A reference to `obj`.
    pub fn to<R: Resource>(obj: &R) -> Self {
        ObjectRef::new(R::KIND, obj.name())
    }
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}

/// An entry to append; the store assigns `seq` and `time_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEntry {
    /// What happened, CamelCase (see [`reason`]).
    pub reason: String,
    /// The object it happened to, if any (a rejected state file has none).
    pub subject: Option<ObjectRef>,
    /// A human-readable sentence.
    pub message: String,
    /// Structured details (what was removed, from/to versions, ...). `null` when none.
    pub details: serde_json::Value,
}

impl NewEntry {
    /// An entry with a reason and message, no subject and no details.
    pub fn new(reason: impl Into<String>, message: impl Into<String>) -> Self {
        NewEntry {
            reason: reason.into(),
            subject: None,
            message: message.into(),
            details: serde_json::Value::Null,
        }
    }

    /// Sets the subject.
    pub fn subject(mut self, subject: ObjectRef) -> Self {
        self.subject = Some(subject);
        self
    }

    /// Sets the structured details.
    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }
}

/// A stored history entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// Position in the history: strictly increasing, never reused.
    pub seq: u64,
    /// When it was appended (unix milliseconds, from the store's clock).
    pub time_ms: u64,
    /// What happened.
    pub reason: String,
    /// The object it happened to.
    pub subject: Option<ObjectRef>,
    /// A human-readable sentence.
    pub message: String,
    /// Structured details.
    pub details: serde_json::Value,
    /// The name of the API token whose request wrote the entry (never the token itself);
    /// absent for what the daemon did on its own (issue 19).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
}

tokio::task_local! {
    /// The token name of the request being served (see [`acting_as`]).
    static ACTOR: String;
}

/// Runs `fut` with `actor` recorded on every history entry it appends (directly, on this
/// task): the HTTP layer wraps each authenticated request in it, so a mutation's entries name
/// the token that asked for it without every handler passing it down.
///
/// # Caveats
/// Work handed to another task (a spawned promotion, a background teardown) is the daemon's
/// own: its entries carry no actor.
pub async fn acting_as<F: std::future::Future>(actor: String, fut: F) -> F::Output {
    ACTOR.scope(actor, fut).await
}

/// The actor of the request this task serves, if any (to hand to work another task does on
/// the request's behalf, which then runs in [`acting_as`] it).
pub fn current_actor() -> Option<String> {
    ACTOR.try_with(Clone::clone).ok()
}

/// Which entries to list, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// Only entries about this object (served from an index: cost proportional to the result).
    pub subject: Option<ObjectRef>,
    /// Only entries with this reason (a filtered scan, newest first).
    pub reason: Option<String>,
    /// Only entries with `seq` below this (paging: pass the last `seq` you saw).
    pub before: Option<u64>,
    /// At most this many entries.
    pub limit: usize,
}

impl Query {
    /// The newest `limit` entries.
    pub fn newest(limit: usize) -> Self {
        Query {
            subject: None,
            reason: None,
            before: None,
            limit,
        }
    }

    /// Restricts to one object.
    pub fn about(mut self, subject: ObjectRef) -> Self {
        self.subject = Some(subject);
        self
    }

    /// Restricts to one reason.
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// Pages below `seq`.
    pub fn before(mut self, seq: u64) -> Self {
        self.before = Some(seq);
        self
    }

    /// Whether `entry` passes the non-index filters.
    pub(crate) fn matches(&self, entry: &Entry) -> bool {
        self.reason.as_ref().is_none_or(|r| *r == entry.reason)
            && self
                .subject
                .as_ref()
                .is_none_or(|s| entry.subject.as_ref() == Some(s))
    }
}

/// How much history to keep. Applied on every append (bounded work per append) and fully by
/// [`Store::maintenance`](crate::Store::maintenance). The oldest entries go first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Keep at most this many entries (at least 1 is always kept).
    pub max_entries: Option<u64>,
    /// Drop entries older than this.
    pub max_age: Option<Duration>,
}

impl Default for Retention {
    /// 100,000 entries and 90 days.
    fn default() -> Self {
        Retention {
            max_entries: Some(100_000),
            max_age: Some(Duration::from_secs(90 * 24 * 3600)),
        }
    }
}

impl Retention {
    /// Whether an entry appended at `entry_ms` has expired at `now_ms`.
    pub(crate) fn expired(&self, entry_ms: u64, now_ms: u64) -> bool {
        self.max_age.is_some_and(|age| {
            let age_ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
            now_ms.saturating_sub(entry_ms) > age_ms
        })
    }

    /// How many of `count` entries exceed the entry limit.
    pub(crate) fn excess(&self, count: u64) -> u64 {
        self.max_entries
            .map_or(0, |max| count.saturating_sub(max.max(1)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn retention_should_expire_only_entries_older_than_max_age() {
        let r = Retention {
            max_entries: None,
            max_age: Some(Duration::from_secs(10)),
        };
        assert!(!r.expired(1_000, 11_000));
        assert!(r.expired(1_000, 11_001));
        assert!(!Retention {
            max_entries: None,
            max_age: None
        }
        .expired(0, u64::MAX));
    }

    #[test]
    fn retention_should_always_keep_one_entry() {
        let r = Retention {
            max_entries: Some(0),
            max_age: None,
        };
        assert_eq!(r.excess(5), 4);
        assert_eq!(Retention::default().excess(10), 0);
    }

    #[test]
    fn query_should_filter_by_reason_and_subject() {
        let entry = Entry {
            seq: 1,
            time_ms: 0,
            reason: reason::SWEPT.into(),
            subject: Some(ObjectRef::new(Kind::Run, "r1")),
            message: String::new(),
            details: serde_json::Value::Null,
            actor: None,
        };
        assert!(Query::newest(1).matches(&entry));
        assert!(Query::newest(1).reason("Swept").matches(&entry));
        assert!(!Query::newest(1).reason("Promoted").matches(&entry));
        assert!(!Query::newest(1)
            .about(ObjectRef::new(Kind::Run, "r2"))
            .matches(&entry));
    }

    #[tokio::test]
    async fn the_actor_is_known_inside_acting_as_and_only_there() {
        assert_eq!(current_actor(), None);
        let inside = acting_as("ci-bot".into(), async { current_actor() }).await;
        assert_eq!(inside.as_deref(), Some("ci-bot"));
        assert_eq!(current_actor(), None);
    }

    #[test]
    fn an_entry_without_actor_reads_as_before_and_omits_it() {
        let old =
            r#"{"seq":1,"timeMs":2,"reason":"Swept","subject":null,"message":"m","details":null}"#;
        let e: Entry = serde_json::from_str(old).unwrap();
        assert_eq!(e.actor, None);
        assert_eq!(serde_json::to_string(&e).unwrap(), old);
    }
}
