//! Indexed object tables of the simulated swarm: rows by ID, found by name, stack namespace and owning service without scanning.
//!
//! Why: a list filtered by `com.docker.stack.namespace` scanned every object, so building a
//! world of 10,000 stacks (every apply lists its namespace) was quadratic in the simulator
//! (issue 7: 43 % of a 10,000-stack run in `LabelFilter::matches`). A [`Table`] keeps its rows
//! in a `BTreeMap` (iteration order, hence every answer, is unchanged) plus secondary indexes
//! that every mutation keeps in step. Rows are read through `Deref` to the map; they are
//! changed only through [`Table::insert`], [`Table::remove`], [`Table::update`] (which
//! re-indexes) and [`Table::get_mut`] (which must not change what the indexes are built from:
//! labels, name, owner).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Deref;

use crate::swarm::{LabelFilter, Labels};

/// The label every stack object carries; list calls filtered by it are answered from the index.
pub(super) use crate::swarm::labels::NAMESPACE as NAMESPACE_LABEL;

/// What a table indexes a row by.
pub(super) trait Row {
    /// The row's labels (indexed by their stack namespace).
    fn labels(&self) -> &Labels;
    /// The row's name, when it can be addressed by name.
    fn name(&self) -> Option<&str>;
    /// The ID of the row's owner (a task's service), if any.
    fn owner(&self) -> Option<&str> {
        None
    }
}

type Index = HashMap<String, BTreeSet<String>>;

/// Rows by ID with indexes by stack namespace, name and owner.
pub(super) struct Table<V> {
    rows: BTreeMap<String, V>,
    by_namespace: Index,
    by_name: Index,
    by_owner: Index,
    /// How many rows carry no stack namespace label: while none does, "has a namespace
    /// label" holds for every row without looking at its labels.
    unnamespaced: usize,
}

impl<V> Default for Table<V> {
    fn default() -> Self {
        Self {
            rows: BTreeMap::new(),
            by_namespace: HashMap::new(),
            by_name: HashMap::new(),
            by_owner: HashMap::new(),
            unnamespaced: 0,
        }
    }
}

impl<V> Deref for Table<V> {
    type Target = BTreeMap<String, V>;

    fn deref(&self) -> &Self::Target {
        &self.rows
    }
}

fn link(index: &mut Index, value: Option<&str>, key: &str) {
    if let Some(v) = value {
        index
            .entry(v.to_string())
            .or_default()
            .insert(key.to_string());
    }
}

fn unlink(index: &mut Index, value: Option<&str>, key: &str) {
    if let Some(v) = value {
        if let Some(keys) = index.get_mut(v) {
            keys.remove(key);
            if keys.is_empty() {
                index.remove(v);
            }
        }
    }
}

impl<V: Row> Table<V> {
    fn index(&mut self, key: &str) {
        if self.lacks_namespace(key) {
            self.unnamespaced += 1;
        }
        self.each_index(key, link);
    }

    fn unindex(&mut self, key: &str) {
        if self.lacks_namespace(key) {
            self.unnamespaced = self.unnamespaced.saturating_sub(1);
        }
        self.each_index(key, unlink);
    }

    /// Whether row `key` exists without a stack namespace label.
    fn lacks_namespace(&self, key: &str) -> bool {
        self.rows
            .get(key)
            .is_some_and(|r| !r.labels().contains_key(NAMESPACE_LABEL))
    }

    /// Applies `edit` (link or unlink) to row `key`'s entry in each index: by namespace label,
    /// by name, by owner.
    fn each_index(&mut self, key: &str, edit: fn(&mut Index, Option<&str>, &str)) {
        let Some(row) = self.rows.get(key) else {
            return;
        };
        let ns = row.labels().get(NAMESPACE_LABEL).cloned();
        let name = row.name().map(str::to_string);
        let owner = row.owner().map(str::to_string);
        edit(&mut self.by_namespace, ns.as_deref(), key);
        edit(&mut self.by_name, name.as_deref(), key);
        edit(&mut self.by_owner, owner.as_deref(), key);
    }

    /// Inserts (or replaces) the row `key`.
    pub(super) fn insert(&mut self, key: String, row: V) {
        self.unindex(&key);
        self.rows.insert(key.clone(), row);
        self.index(&key);
    }

    /// Removes the row `key`.
    pub(super) fn remove(&mut self, key: &str) -> Option<V> {
        self.unindex(key);
        self.rows.remove(key)
    }

    /// Changes the row `key` with `f` (which may change its labels, name or owner) and
    /// re-indexes it. Returns `f`'s result, or `None` without the row.
    pub(super) fn update<T>(&mut self, key: &str, f: impl FnOnce(&mut V) -> T) -> Option<T> {
        if !self.rows.contains_key(key) {
            return None;
        }
        self.unindex(key);
        let out = self.rows.get_mut(key).map(f);
        self.index(key);
        out
    }

    /// The row `key`, mutably. The caller must not change its labels, name or owner (use
    /// [`Table::update`]).
    pub(super) fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        self.rows.get_mut(key)
    }

    /// The key of the row addressed by `id_or_name`: an exact key first, else the smallest
    /// key of the rows named so.
    pub(super) fn find(&self, id_or_name: &str) -> Option<String> {
        if self.rows.contains_key(id_or_name) {
            return Some(id_or_name.to_string());
        }
        self.by_name
            .get(id_or_name)
            .and_then(|keys| keys.first())
            .cloned()
    }

    /// Keys of the rows addressed by `id_or_name`: the exact key (if any), then the rows named
    /// so, in key order.
    pub(super) fn candidates(&self, id_or_name: &str) -> Vec<String> {
        let exact = self
            .rows
            .contains_key(id_or_name)
            .then(|| id_or_name.to_string());
        let named = self.by_name.get(id_or_name).into_iter().flatten().cloned();
        exact.into_iter().chain(named).collect()
    }

    /// Whether a row is named `name`.
    pub(super) fn has_name(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// Keys of the rows owned by `owner`, in key order.
    pub(super) fn owned_by(&self, owner: &str) -> Vec<String> {
        self.by_owner
            .get(owner)
            .map(|keys| keys.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The rows whose labels match `filter`, in key order. A filter naming a stack namespace
    /// (`com.docker.stack.namespace=…`) visits only that namespace's rows; "has a namespace
    /// label" alone, while every row has one, takes every row without reading labels (a
    /// resync lists every stack so: checking 50,000 rows' labels was ~30 % of its listing at
    /// 10,000 stacks, issue 14).
    pub(super) fn select<'a>(
        &'a self,
        filter: &'a LabelFilter,
    ) -> Box<dyn Iterator<Item = &'a V> + 'a> {
        let namespace = filter
            .conditions()
            .iter()
            .find_map(|(k, v)| (k == NAMESPACE_LABEL).then_some(v.as_deref()).flatten());
        match namespace {
            Some(ns) => Box::new(
                self.by_namespace
                    .get(ns)
                    .into_iter()
                    .flatten()
                    .filter_map(|k| self.rows.get(k))
                    .filter(|r| filter.matches(r.labels())),
            ),
            None if self.unnamespaced == 0
                && matches!(filter.conditions(), [(k, None)] if k == NAMESPACE_LABEL) =>
            {
                Box::new(self.rows.values())
            }
            None => Box::new(self.rows.values().filter(|r| filter.matches(r.labels()))),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    struct R {
        labels: Labels,
        name: String,
        owner: Option<String>,
    }

    impl Row for R {
        fn labels(&self) -> &Labels {
            &self.labels
        }
        fn name(&self) -> Option<&str> {
            Some(&self.name)
        }
        fn owner(&self) -> Option<&str> {
            self.owner.as_deref()
        }
    }

    fn row(ns: Option<&str>, name: &str, owner: Option<&str>) -> R {
        let mut labels = Labels::new();
        if let Some(ns) = ns {
            labels.insert(NAMESPACE_LABEL.into(), ns.into());
        }
        labels.insert("k".into(), name.into());
        R {
            labels,
            name: name.into(),
            owner: owner.map(str::to_string),
        }
    }

    fn keys<'a>(t: &'a Table<R>, f: &'a LabelFilter) -> Vec<&'a str> {
        t.select(f).map(|r| r.name.as_str()).collect()
    }

    #[test]
    fn a_namespace_filter_selects_the_same_rows_in_the_same_order_as_a_scan() {
        let mut t = Table::default();
        for (k, ns) in [("c", "a"), ("a", "a"), ("b", "b"), ("d", "a"), ("e", "")] {
            let ns = (!ns.is_empty()).then_some(ns);
            t.insert(k.into(), row(ns, k, None));
        }
        for f in [
            LabelFilter::eq(NAMESPACE_LABEL, "a"),
            LabelFilter::eq(NAMESPACE_LABEL, "a").and_eq("k", "d"),
            LabelFilter::eq("k", "d").and_eq(NAMESPACE_LABEL, "a"),
            LabelFilter::eq(NAMESPACE_LABEL, "zz"),
            LabelFilter::all().and_has(NAMESPACE_LABEL),
            LabelFilter::all(),
        ] {
            let scan: Vec<&str> = t
                .values()
                .filter(|r| f.matches(&r.labels))
                .map(|r| r.name.as_str())
                .collect();
            assert_eq!(keys(&t, &f), scan, "{f:?}");
        }
        assert_eq!(
            keys(&t, &LabelFilter::eq(NAMESPACE_LABEL, "a")),
            ["a", "c", "d"]
        );
    }

    #[test]
    fn has_a_namespace_selects_what_a_scan_does_as_rows_gain_and_lose_their_namespace() {
        let mut t = Table::default();
        let has = LabelFilter::all().and_has(NAMESPACE_LABEL);
        let scan = |t: &Table<R>| -> Vec<String> {
            t.values()
                .filter(|r| has.matches(&r.labels))
                .map(|r| r.name.clone())
                .collect()
        };
        for (k, ns) in [("c", "a"), ("a", "a"), ("b", "b")] {
            t.insert(k.into(), row(Some(ns), k, None));
        }
        assert_eq!(keys(&t, &has), ["a", "b", "c"]);
        t.insert("d".into(), row(None, "d", None));
        assert_eq!(keys(&t, &has), scan(&t));
        assert_eq!(keys(&t, &has), ["a", "b", "c"]);
        t.update("a", |r| *r = row(None, "a", None));
        assert_eq!(keys(&t, &has), ["b", "c"]);
        t.update("d", |r| *r = row(Some("x"), "d", None));
        t.remove("a");
        assert_eq!(t.unnamespaced, 0);
        assert_eq!(keys(&t, &has), scan(&t));
        assert_eq!(keys(&t, &has), ["b", "c", "d"]);
    }

    #[test]
    fn updates_and_removals_keep_every_index_in_step() {
        let mut t = Table::default();
        t.insert("1".into(), row(Some("a"), "one", Some("s1")));
        t.insert("2".into(), row(Some("a"), "two", Some("s1")));
        t.update("1", |r| *r = row(Some("b"), "uno", Some("s2")));
        assert_eq!(keys(&t, &LabelFilter::eq(NAMESPACE_LABEL, "a")), ["two"]);
        assert_eq!(keys(&t, &LabelFilter::eq(NAMESPACE_LABEL, "b")), ["uno"]);
        assert_eq!(t.find("uno").as_deref(), Some("1"));
        assert_eq!(t.find("one"), None);
        assert_eq!(t.owned_by("s1"), ["2"]);
        assert_eq!(t.owned_by("s2"), ["1"]);
        t.remove("2");
        assert!(!t.has_name("two"));
        assert!(t.owned_by("s1").is_empty());
        assert!(keys(&t, &LabelFilter::eq(NAMESPACE_LABEL, "a")).is_empty());
        assert_eq!(t.find("2"), None);
        // Replacing a row re-indexes it.
        t.insert("1".into(), row(None, "eins", None));
        assert!(keys(&t, &LabelFilter::eq(NAMESPACE_LABEL, "b")).is_empty());
        assert_eq!(t.find("eins").as_deref(), Some("1"));
        assert!(t.by_namespace.is_empty() && t.by_owner.is_empty());
        assert_eq!(t.unnamespaced, 1, "the one row left has no namespace");
    }
}
