//! What the WarmApp reconciler remembers of its renders: each app's stack per version, rendered and labelled for its owner, used again while the catalogue says the render's inputs are unchanged.
//!
//! A render reads and translates the recipe's compose files, and labelling the result hashes
//! every object: together most of a reconcile of an unchanged app. A resync pass reconciles
//! every app, so the reconciler keeps each app's last render per version with the render's
//! inputs digest ([`crate::catalogue::Rendered::digest`]) and asks the catalogue for the
//! digest a render would carry now ([`crate::catalogue::Catalogue::inputs_digest`]): equal,
//! the kept stack is used as it is (#14: a pass over unchanged apps renders nothing).
//!
//! # Caveats
//! At most [`VERSIONS_PER_APP`] versions are kept per app (the one it runs and the one it
//! moves to or from); an app's entries go when it is deleted ([`Renders::forget`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::stack::{Owner, StackSpec};

/// Versions kept per app: the one it runs and the one it is upgrading to or rolling back to.
pub const VERSIONS_PER_APP: usize = 2;

/// One version of an app's stack, as the reconciler plans against it.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    /// The render made fit for health-gated upgrades ([`super::prepare`]) and labelled for
    /// its owner ([`crate::stack::render`]): what [`crate::stack::plan_rendered`] takes.
    pub rendered: StackSpec,
    /// How long the recipe says convergence may take (its `coop-cloud.<stack>.timeout`).
    pub timeout: Option<Duration>,
}

#[derive(Debug)]
struct Entry {
    stack: String,
    version: String,
    owner: Owner,
    digest: String,
    desired: Arc<Desired>,
}

/// Counters of [`Renders`] (for tests and benchmarks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RenderStats {
    /// Stacks used again (inputs digest unchanged).
    pub reused: u64,
    /// Renders asked of the catalogue.
    pub rendered: u64,
}

/// Each app's remembered stacks (see the module docs).
#[derive(Debug, Default)]
pub struct Renders {
    apps: Mutex<HashMap<String, Vec<Entry>>>,
    reused: AtomicU64,
    rendered: AtomicU64,
}

impl Renders {
    /// Nothing remembered.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Vec<Entry>>> {
        // Every update replaces whole entries: a poisoned lock still holds consistent data.
        self.apps.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The stack remembered for `app` at `version`, if it was rendered from inputs with
    /// `digest`, into `stack`, for `owner`.
    pub fn get(
        &self,
        app: &str,
        stack: &str,
        version: &str,
        owner: &Owner,
        digest: &str,
    ) -> Option<Arc<Desired>> {
        let apps = self.lock();
        let found = apps.get(app)?.iter().find(|e| {
            e.version == version && e.digest == digest && e.stack == stack && e.owner == *owner
        })?;
        self.reused.fetch_add(1, Ordering::Relaxed);
        Some(Arc::clone(&found.desired))
    }

    /// Remembers a fresh render of `app` at `version` (replacing the one kept for that
    /// version; the least recently rendered other version goes beyond [`VERSIONS_PER_APP`]).
    pub fn put(
        &self,
        app: &str,
        stack: &str,
        version: &str,
        owner: &Owner,
        digest: String,
        desired: Arc<Desired>,
    ) {
        self.rendered.fetch_add(1, Ordering::Relaxed);
        let mut apps = self.lock();
        let entries = apps.entry(app.to_string()).or_default();
        entries.retain(|e| e.version != version);
        entries.insert(
            0,
            Entry {
                stack: stack.to_string(),
                version: version.to_string(),
                owner: owner.clone(),
                digest,
                desired,
            },
        );
        entries.truncate(VERSIONS_PER_APP);
    }

    /// Forgets a deleted app.
    pub fn forget(&self, app: &str) {
        self.lock().remove(app);
    }

    /// Counters since the memory was made.
    pub fn stats(&self) -> RenderStats {
        RenderStats {
            reused: self.reused.load(Ordering::Relaxed),
            rendered: self.rendered.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn desired(ns: &str) -> Arc<Desired> {
        Arc::new(Desired {
            rendered: StackSpec {
                namespace: ns.into(),
                ..StackSpec::default()
            },
            timeout: None,
        })
    }

    #[test]
    fn a_stack_is_used_again_only_for_the_same_version_digest_stack_and_owner() {
        let renders = Renders::new();
        let owner = Owner::new("WarmApp", "web");
        renders.put("web", "s", "1.0.0", &owner, "d1".into(), desired("s"));
        assert!(renders.get("web", "s", "1.0.0", &owner, "d1").is_some());
        assert!(renders.get("web", "s", "1.0.0", &owner, "d2").is_none());
        assert!(renders.get("web", "s", "1.1.0", &owner, "d1").is_none());
        assert!(renders.get("web", "t", "1.0.0", &owner, "d1").is_none());
        let other = Owner::new("WarmApp", "web").with_label("k", "v");
        assert!(renders.get("web", "s", "1.0.0", &other, "d1").is_none());
        assert!(renders.get("api", "s", "1.0.0", &owner, "d1").is_none());
        assert_eq!(
            renders.stats(),
            RenderStats {
                reused: 1,
                rendered: 1
            }
        );
    }

    #[test]
    fn two_versions_are_kept_per_app_and_a_deleted_app_is_forgotten() {
        let renders = Renders::new();
        let owner = Owner::new("WarmApp", "web");
        for v in ["1.0.0", "1.1.0", "2.0.0"] {
            renders.put("web", "s", v, &owner, format!("d{v}"), desired("s"));
        }
        assert!(renders.get("web", "s", "1.0.0", &owner, "d1.0.0").is_none());
        assert!(renders.get("web", "s", "1.1.0", &owner, "d1.1.0").is_some());
        assert!(renders.get("web", "s", "2.0.0", &owner, "d2.0.0").is_some());
        renders.forget("web");
        assert!(renders.get("web", "s", "2.0.0", &owner, "d2.0.0").is_none());
    }
}
