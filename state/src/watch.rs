//! The change feed: one event per durable write, in revision order; lag means "relist".

use crd::Kind;
use tokio::sync::broadcast;

/// What a write did to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ChangeType {
    /// The object was created.
    Created,
    /// Labels or spec changed (a spec change also bumped `generation`).
    Updated,
    /// Only the status changed (`generation` unchanged).
    StatusUpdated,
    /// The object was deleted.
    Deleted,
}

/// One write, as seen by subscribers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Change {
    /// The object's kind.
    pub kind: Kind,
    /// The object's name.
    pub name: String,
    /// The store revision of this write (the object's new resourceVersion; for deletes the
    /// revision of the deletion).
    pub resource_version: u64,
    /// The object's generation after the write (for deletes: its last generation). Lets a
    /// controller ignore its own status writes (kube's `predicates::generation`).
    pub generation: u64,
    /// What happened.
    pub change: ChangeType,
}

/// A subscription to the change feed, from [`Store::subscribe`](crate::Store::subscribe).
///
/// # Guarantees
/// - Delivers every write made after subscribing, in increasing `resource_version`, and only
///   once the write is durable (a writer's call returns only after its event was sent).
///
/// # Caveats
/// - The buffer is bounded ([`Config::feed_capacity`](crate::Config)). A subscriber that falls
///   behind gets [`Error::Lagged`] once and then continues with newer events; it must then
///   relist (`Store::list`) because it missed writes.
#[derive(Debug)]
pub struct Subscription {
    rx: broadcast::Receiver<Change>,
}

impl Subscription {
    pub(crate) fn new(rx: broadcast::Receiver<Change>) -> Self {
        Subscription { rx }
    }

    /// The next change.
    ///
    /// # Errors
    /// [`Error::Lagged`] (relist, then keep receiving) or [`Error::Closed`] (store dropped).
    pub async fn recv(&mut self) -> Result<Change, Error> {
        self.rx.recv().await.map_err(|e| match e {
            broadcast::error::RecvError::Lagged(missed) => Error::Lagged { missed },
            broadcast::error::RecvError::Closed => Error::Closed,
        })
    }

    /// The next change if one is ready, without waiting.
    ///
    /// # Errors
    /// As [`Subscription::recv`].
    pub fn try_recv(&mut self) -> Result<Option<Change>, Error> {
        match self.rx.try_recv() {
            Ok(change) => Ok(Some(change)),
            Err(broadcast::error::TryRecvError::Empty) => Ok(None),
            Err(broadcast::error::TryRecvError::Lagged(missed)) => Err(Error::Lagged { missed }),
            Err(broadcast::error::TryRecvError::Closed) => Err(Error::Closed),
        }
    }
}

/// Why a subscription could not deliver the next change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The subscriber fell behind and `missed` changes were dropped. Recoverable: relist,
    /// then keep receiving (the subscription stays usable).
    #[error("change feed subscriber lagged and missed {missed} changes; relist")]
    Lagged {
        /// How many changes were dropped.
        missed: u64,
    },
    /// The store was dropped. Not retryable.
    #[error("change feed closed")]
    Closed,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn change(rv: u64) -> Change {
        Change {
            kind: Kind::Run,
            name: "r".into(),
            resource_version: rv,
            generation: 1,
            change: ChangeType::Created,
        }
    }

    #[tokio::test]
    async fn a_lagging_subscriber_should_be_told_to_relist_and_then_continue() {
        let (tx, rx) = broadcast::channel(2);
        let mut sub = Subscription::new(rx);
        for rv in 1..=4 {
            tx.send(change(rv)).unwrap();
        }
        assert_eq!(sub.recv().await, Err(Error::Lagged { missed: 2 }));
        assert_eq!(sub.recv().await.unwrap().resource_version, 3);
        assert_eq!(sub.try_recv().unwrap().unwrap().resource_version, 4);
        assert_eq!(sub.try_recv(), Ok(None));
        drop(tx);
        assert_eq!(sub.recv().await, Err(Error::Closed));
    }
}
