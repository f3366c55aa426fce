//! The in-memory engine: identical semantics to sled through the shared store layer, no durability.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};

use futures::future::BoxFuture;
use futures::FutureExt;

use crate::engine::{Engine, Entries, Error, KeyRange, Keyspace, Op, Order};

type Tree = BTreeMap<Vec<u8>, Vec<u8>>;

/// An engine that keeps everything in process memory.
///
/// Cloning shares the data, so a test can drop a [`Store`](crate::Store) and build a new one
/// over the same engine to exercise the store's recovery path ("reopen"). Unlike sled there is
/// no exclusive open: never run two stores over clones of one engine at the same time.
#[derive(Debug, Clone, Default)]
pub struct MemoryEngine {
    trees: Arc<RwLock<BTreeMap<Keyspace, Tree>>>,
}

impl MemoryEngine {
    /// An empty engine.
    pub fn new() -> Self {
        MemoryEngine::default()
    }
}

impl Engine for MemoryEngine {
    fn location(&self) -> String {
        "memory".to_string()
    }

    fn get(&self, space: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        let trees = self.trees.read().unwrap_or_else(PoisonError::into_inner);
        Ok(trees.get(&space).and_then(|t| t.get(key)).cloned())
    }

    fn scan(
        &self,
        space: Keyspace,
        range: &KeyRange,
        order: Order,
        limit: usize,
    ) -> Result<Entries, Error> {
        let trees = self.trees.read().unwrap_or_else(PoisonError::into_inner);
        let Some(tree) = trees.get(&space) else {
            return Ok(Vec::new());
        };
        let iter = tree.range::<Vec<u8>, _>((range.start.clone(), range.end.clone()));
        let pick = |(k, v): (&Vec<u8>, &Vec<u8>)| (k.clone(), v.clone());
        Ok(match order {
            Order::Ascending => iter.take(limit).map(pick).collect(),
            Order::Descending => iter.rev().take(limit).map(pick).collect(),
        })
    }

    fn apply_all(&self, batches: Vec<(Keyspace, Vec<Op>)>) -> Result<(), Error> {
        // One write lock for every batch: readers see all of them or none.
        let mut trees = self.trees.write().unwrap_or_else(PoisonError::into_inner);
        for (space, ops) in batches {
            let tree = trees.entry(space).or_default();
            for op in ops {
                match op {
                    Op::Put(k, v) => {
                        tree.insert(k, v);
                    }
                    Op::Delete(k) => {
                        tree.remove(&k);
                    }
                }
            }
        }
        Ok(())
    }

    fn flush(&self) -> BoxFuture<'static, Result<(), Error>> {
        futures::future::ready(Ok(())).boxed()
    }

    fn size_on_disk(&self) -> Result<u64, Error> {
        let trees = self.trees.read().unwrap_or_else(PoisonError::into_inner);
        let bytes: usize = trees
            .values()
            .flat_map(|t| t.iter())
            .map(|(k, v)| k.len() + v.len())
            .sum();
        Ok(u64::try_from(bytes).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn scan_should_honour_range_order_and_limit() {
        let e = MemoryEngine::new();
        let ops = ["a/1", "a/2", "a/3", "b/1"]
            .iter()
            .map(|k| Op::Put(k.as_bytes().to_vec(), b"v".to_vec()))
            .collect();
        e.apply(Keyspace::Objects, ops).unwrap();
        let range = KeyRange::prefix(b"a/");
        let asc = e
            .scan(Keyspace::Objects, &range, Order::Ascending, 2)
            .unwrap();
        assert_eq!(
            asc.iter().map(|(k, _)| k.as_slice()).collect::<Vec<_>>(),
            [b"a/1", b"a/2"]
        );
        let desc = e
            .scan(Keyspace::Objects, &range, Order::Descending, 10)
            .unwrap();
        assert_eq!(desc.len(), 3);
        assert_eq!(desc[0].0, b"a/3");
        assert!(e
            .scan(Keyspace::History, &range, Order::Ascending, 10)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn clones_should_share_data() {
        let e = MemoryEngine::new();
        let twin = e.clone();
        e.apply(Keyspace::Meta, vec![Op::Put(b"k".to_vec(), b"v".to_vec())])
            .unwrap();
        assert_eq!(twin.get(Keyspace::Meta, b"k").unwrap(), Some(b"v".to_vec()));
        e.apply(Keyspace::Meta, vec![Op::Delete(b"k".to_vec())])
            .unwrap();
        assert_eq!(twin.get(Keyspace::Meta, b"k").unwrap(), None);
        assert_eq!(twin.size_on_disk().unwrap(), 0);
    }
}
