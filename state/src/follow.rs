//! A follower store's change feed (private): what a following engine applied to its mirror, turned into change events.
//!
//! A standby follows the holder's writes through its engine ([`Engine::follow`]); this task
//! decodes each followed commit into the [`Change`]s the holder's store published and
//! publishes them on the follower's feed, in revision order.
//!
//! # Guarantees
//! - Every object whose stored value a followed commit changed yields exactly one change:
//!   `Created` (absent before), `Updated` (spec or labels differ), `StatusUpdated` (only the
//!   status differs) or `Deleted`; an object the commit did not change yields none. A put
//!   carries the object's own `resource_version`; the store revision then moves to the
//!   commit's revision counter.
//!
//! # Caveats
//! - A deletion leaves no object to read its revision from: deletions get the commit's
//!   revisions no put claimed, in key order. Exact for a single delete (the holder's engine
//!   never merges a batch that deletes an object with another batch); several deletions in one
//!   transaction may be numbered in another order than the holder's.
//! - Two writes to one object inside one holder transaction (or between two etcd revisions a
//!   compaction removed) reach the follower as one change, with the latest revision.

use std::collections::BTreeSet;
use std::sync::Weak;

use crd::ObjectMeta;
use tokio::sync::mpsc;

use crate::engine::{Followed, Keyspace};
use crate::gate::Gate;
use crate::keys;
use crate::watch::{Change, ChangeType};

/// Starts publishing what `followed` delivers on `gate`'s feed; the store is at `revision`.
pub(crate) fn spawn(followed: mpsc::UnboundedReceiver<Followed>, gate: Weak<Gate>, revision: u64) {
    let task = run(followed, gate, revision);
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            handle.spawn(task);
        }
        Err(_) => {
            std::thread::spawn(move || futures::executor::block_on(task));
        }
    }
}

async fn run(mut followed: mpsc::UnboundedReceiver<Followed>, gate: Weak<Gate>, mut revision: u64) {
    while let Some(commit) = followed.recv().await {
        let Some(gate) = gate.upgrade() else {
            return; // the store is gone
        };
        let (found, next) = changes(&commit, revision);
        for change in found {
            gate.publish(change);
        }
        gate.advance(next);
        revision = revision.max(next);
    }
}

/// What an object's stored JSON says about the write, for classifying it.
#[derive(serde::Deserialize)]
struct Head {
    metadata: ObjectMeta,
    #[serde(default)]
    spec: serde_json::Value,
}

fn head(bytes: &[u8]) -> Option<Head> {
    serde_json::from_slice(bytes).ok()
}

/// The changes of one followed commit, in revision order, and the store revision after it
/// (`revision` before).
pub(crate) fn changes(commit: &Followed, revision: u64) -> (Vec<Change>, u64) {
    let next = commit
        .keys
        .iter()
        .find(|k| k.space == Keyspace::Objects && k.key == keys::REVISION)
        .and_then(|k| k.after.as_deref())
        .filter(|v| v.len() == 8)
        .and_then(keys::trailing_u64)
        .unwrap_or(revision);
    let mut out = Vec::new();
    let mut deleted = Vec::new();
    for k in &commit.keys {
        if k.space != Keyspace::Objects {
            continue;
        }
        let Some((kind, name)) = keys::parse_object(&k.key) else {
            continue;
        };
        match (&k.before, &k.after) {
            (before, Some(after)) => {
                let Some(now) = head(after) else {
                    tracing::warn!(%kind, name, "followed an object that does not decode; no change published");
                    continue;
                };
                let change = match before.as_deref().map(head) {
                    None => ChangeType::Created,
                    Some(Some(was))
                        if was.spec == now.spec && was.metadata.labels == now.metadata.labels =>
                    {
                        ChangeType::StatusUpdated
                    }
                    Some(_) => ChangeType::Updated,
                };
                out.push(Change {
                    kind,
                    name,
                    resource_version: now.metadata.resource_version,
                    generation: now.metadata.generation,
                    change,
                });
            }
            (Some(before), None) => {
                let generation = head(before).map_or(0, |h| h.metadata.generation);
                deleted.push((kind, name, generation));
            }
            (None, None) => {}
        }
    }
    let claimed: BTreeSet<u64> = out.iter().map(|c| c.resource_version).collect();
    let mut free = (revision + 1..=next).filter(|r| !claimed.contains(r));
    for (kind, name, generation) in deleted {
        out.push(Change {
            kind,
            name,
            resource_version: free.next().unwrap_or(next),
            generation,
            change: ChangeType::Deleted,
        });
    }
    out.sort_by_key(|c| c.resource_version);
    (out, next)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use crd::Kind;

    use super::*;
    use crate::engine::FollowedKey;

    fn object(name: &str, rv: u64, generation: u64, spec: u32, status: u32) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "metadata": {"name": name, "generation": generation, "resourceVersion": rv},
            "spec": spec,
            "status": status,
        }))
        .unwrap()
    }

    fn key(name: &str, before: Option<Vec<u8>>, after: Option<Vec<u8>>) -> FollowedKey {
        FollowedKey {
            space: Keyspace::Objects,
            key: keys::object(Kind::Run, name),
            before,
            after,
        }
    }

    fn counter(before: u64, after: u64) -> FollowedKey {
        FollowedKey {
            space: Keyspace::Objects,
            key: keys::REVISION.to_vec(),
            before: Some(before.to_be_bytes().to_vec()),
            after: Some(after.to_be_bytes().to_vec()),
        }
    }

    #[test]
    fn a_followed_commit_should_classify_each_object_once_in_revision_order() {
        let commit = Followed {
            keys: vec![
                key("a", None, Some(object("a", 13, 1, 1, 0))),
                key(
                    "b",
                    Some(object("b", 2, 1, 1, 0)),
                    Some(object("b", 11, 2, 2, 0)),
                ),
                key(
                    "c",
                    Some(object("c", 3, 1, 1, 0)),
                    Some(object("c", 12, 1, 1, 5)),
                ),
                key("d", Some(object("d", 4, 3, 1, 0)), None),
                counter(10, 14),
            ],
        };
        let (found, next) = changes(&commit, 10);
        assert_eq!(next, 14);
        let got: Vec<(&str, u64, ChangeType, u64)> = found
            .iter()
            .map(|c| (c.name.as_str(), c.resource_version, c.change, c.generation))
            .collect();
        assert_eq!(
            got,
            [
                ("b", 11, ChangeType::Updated, 2),
                ("c", 12, ChangeType::StatusUpdated, 1),
                ("a", 13, ChangeType::Created, 1),
                ("d", 14, ChangeType::Deleted, 3),
            ]
        );
    }

    #[test]
    fn history_and_values_should_not_be_changes() {
        let commit = Followed {
            keys: vec![FollowedKey {
                space: Keyspace::History,
                key: keys::history_entry(1),
                before: None,
                after: Some(b"{}".to_vec()),
            }],
        };
        assert_eq!(changes(&commit, 7), (Vec::new(), 7));
    }
}
