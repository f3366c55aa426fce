//! The recipe fetcher: keeps the declared `Recipe`s in [`Sources`], fetches git recipes on their interval (and on demand: the nightly, `hearth sweep --now`), and records each fetch in the Recipe's status, the history and a metric.
//!
//! # Guarantees
//! - A failed fetch keeps the last good content in force: the versions in [`Sources`] and in
//!   `status.versions` are unchanged; `status.lastFetchError`, the `Fetched=False` condition,
//!   a `RecipeFetchFailed` history entry (once per failure streak, not per retry) and
//!   `hearth_recipe_fetch_failing{recipe}=1` say so. The warm apps keep rendering.
//! - A recipe is fetched when declared (or its spec changed), then every `spec.interval`;
//!   after a failure it is retried on the interval too (at least every [`RETRY_AFTER_FAILURE`]).

use std::sync::Arc;
use std::time::Duration;

use crd::condition::{set_condition, types, Condition, ConditionStatus};
use crd::recipe::FETCHED;
use crd::{Kind, Recipe};
use metrics::Metrics;
use state::history::NewEntry;
use state::{Clock, Store};
use tracing::{info, warn};

use crate::catalogue::{Published, Sources};
use crate::errors::chain;
use crate::runtime::ObjectRef;

/// History reason: a fetch found new content (new commit or versions).
pub const FETCHED_REASON: &str = "RecipeFetched";
/// History reason: a fetch failed; the last good content stays in force.
pub const FETCH_FAILED: &str = "RecipeFetchFailed";
/// How soon a failed fetch is tried again, at most.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(60);
/// How often the loop looks for due fetches.
const TICK: Duration = Duration::from_secs(1);

/// The fetcher.
#[derive(Debug, Clone)]
pub struct Fetcher {
    store: Store,
    sources: Arc<Sources>,
    metrics: Metrics,
    clock: Arc<dyn Clock>,
    /// The WarmApp controller: apps of a recipe whose content changed are reconciled at once.
    handle: Arc<std::sync::OnceLock<crate::runtime::Handle>>,
}

/// One fetch's outcome, for the nightly step and the CLI.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    /// The recipe.
    pub recipe: String,
    /// The newest version after the fetch (the last good one when it failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub newest: Option<String>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Fetcher {
    /// A fetcher of the Recipes in `store` into `sources`.
    pub fn new(
        store: Store,
        sources: Arc<Sources>,
        metrics: Metrics,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Fetcher {
            store,
            sources,
            metrics,
            clock,
            handle: Arc::default(),
        }
    }

    /// Reconciles the warm apps of a recipe through `handle` whenever its content changes.
    pub fn set_handle(&self, handle: crate::runtime::Handle) {
        let _ = self.handle.set(handle);
    }

    fn trigger_apps_of(&self, recipe: &str) {
        let Some(h) = self.handle.get() else {
            return;
        };
        if let Ok(apps) = self.store.list::<crd::WarmApp>() {
            for app in apps.items.iter().filter(|a| a.spec.recipe == recipe) {
                h.trigger(ObjectRef::new(Kind::WarmApp, &app.metadata.name));
            }
        }
    }

    /// The sources it fills.
    pub fn sources(&self) -> &Arc<Sources> {
        &self.sources
    }

    /// Reads the declared Recipes and makes them [`Sources`]' declared set.
    ///
    /// # Errors
    /// The store's listing error.
    pub fn sync(&self) -> Result<Vec<Recipe>, state::Error> {
        let recipes = self.store.list::<Recipe>()?.items;
        self.sources.declare(&recipes);
        Ok(recipes)
    }

    /// Fetches every declared git recipe now (the nightly, `hearth sweep --now`).
    pub async fn fetch_all(&self) -> Vec<Outcome> {
        let recipes = match self.sync() {
            Ok(r) => r,
            Err(e) => {
                return vec![Outcome {
                    recipe: "*".into(),
                    newest: None,
                    error: Some(format!("cannot list recipes: {e}")),
                }]
            }
        };
        let mut out = Vec::new();
        for r in recipes.iter().filter(|r| r.spec.git.is_some()) {
            out.push(self.fetch_one(r).await);
        }
        out
    }

    /// Fetches `recipe` and records the result.
    pub async fn fetch_one(&self, recipe: &Recipe) -> Outcome {
        let name = recipe.metadata.name.clone();
        let result = self.sources.fetch(&name).await;
        let now = self.clock.now_ms();
        self.metrics.record_recipe_fetch(&name, result.is_ok());
        let before = recipe.status.clone();
        let mut status = before.clone();
        status.last_fetch_ms = Some(now);
        status.observed_generation = recipe.metadata.generation;
        let mut entry = None;
        match &result {
            Ok(p) => {
                let changed = status.commit != p.head
                    || status.versions != p.versions
                    || status.ignored != p.ignored;
                write_published(&mut status, p);
                status.last_success_ms = Some(now);
                status.last_fetch_error = None;
                let message = format!(
                    "{} version(s), newest {}",
                    p.versions.len(),
                    p.newest().map(|v| v.version.as_str()).unwrap_or("none")
                );
                conditions(&mut status, true, "FetchSucceeded", &message, now, recipe);
                if changed {
                    info!(recipe = %name, newest = ?status.newest, "recipe fetched: new content");
                    entry = Some(
                        NewEntry::new(FETCHED_REASON, format!("recipe {name} fetched: {message}"))
                            .details(serde_json::json!({
                                "commit": p.head,
                                "versions": p.versions.iter().map(|v| &v.version).collect::<Vec<_>>(),
                                "ignored": p.ignored,
                            })),
                    );
                }
            }
            Err(e) => {
                let text = chain(e);
                warn!(recipe = %name, error = %text, "recipe fetch failed; the last good content stays in force");
                let streak = before.last_fetch_error.is_some();
                status.last_fetch_error = Some(text.clone());
                let in_force = match self.sources.published(&name) {
                    Some(p) => format!(
                        "the last good content stays in force ({} version(s), newest {})",
                        p.versions.len(),
                        p.newest().map(|v| v.version.as_str()).unwrap_or("none")
                    ),
                    None => "no content fetched yet".into(),
                };
                let message = format!("fetch failed: {text}; {in_force}");
                conditions(&mut status, false, "FetchFailed", &message, now, recipe);
                if !streak {
                    entry = Some(
                        NewEntry::new(FETCH_FAILED, format!("recipe {name}: {message}"))
                            .details(serde_json::json!({ "error": text })),
                    );
                }
            }
        }
        if status != before {
            if let Err(e) = self.write_status(&name, status.clone()).await {
                warn!(recipe = %name, error = %e, "cannot write the recipe's status");
            }
        }
        if result.is_ok() && status.versions != before.versions {
            self.trigger_apps_of(&name);
        }
        if let Some(entry) = entry {
            let entry = entry.subject(ObjectRef::new(Kind::Recipe, &name));
            if let Err(e) = self.store.append_history(entry).await {
                warn!(recipe = %name, error = %e, "cannot record the fetch in the history");
            }
        }
        Outcome {
            recipe: name.clone(),
            newest: self
                .sources
                .published(&name)
                .and_then(|p| p.newest().map(|v| v.version.clone())),
            error: result.err().map(|e| chain(&e)),
        }
    }

    /// Writes `status` on the current object (re-read, so a spec change in between is kept).
    async fn write_status(
        &self,
        name: &str,
        status: crd::RecipeStatus,
    ) -> Result<(), state::Error> {
        state::retry_conflicts(
            state::CONFLICT_ATTEMPTS,
            state::Error::is_conflict,
            || async {
                let Some(mut current) = self.store.get_opt::<Recipe>(name)? else {
                    return Ok(());
                };
                current.status = status.clone();
                self.store.update_status(&current).await.map(drop)
            },
        )
        .await
    }

    /// Whether `recipe` is due for a fetch at `now_ms`.
    fn due(&self, recipe: &Recipe, now_ms: u64) -> bool {
        if recipe.spec.git.is_none() {
            return false;
        }
        let s = &recipe.status;
        if s.observed_generation != recipe.metadata.generation {
            return true;
        }
        let Some(last) = s.last_fetch_ms else {
            return true;
        };
        let mut every = recipe.spec.interval();
        if s.last_fetch_error.is_some() {
            every = every.min(RETRY_AFTER_FAILURE);
        }
        now_ms.saturating_sub(last) >= u64::try_from(every.as_millis()).unwrap_or(u64::MAX)
    }
}

/// The git recipe fetcher as a background worker: fetches the due recipes when a Recipe is
/// declared or changed (the store feed), and checks every second which are due on their
/// interval. A failed listing is the worker's error; a failed fetch is the recipe's (its
/// status, history and metrics), not the worker's.
#[derive(Debug)]
pub struct FetchWorker {
    fetcher: Arc<Fetcher>,
    declared: Vec<String>,
    seen: u64,
}

impl FetchWorker {
    /// The worker of `fetcher`.
    pub fn new(fetcher: Arc<Fetcher>) -> Self {
        FetchWorker {
            fetcher,
            declared: Vec::new(),
            seen: 0,
        }
    }
}

impl crate::runtime::workers::Worker for FetchWorker {
    fn name(&self) -> &'static str {
        "recipe-fetch"
    }

    fn schedule(&self) -> String {
        format!(
            "on Recipe changes, and each recipe on its interval (checked every {})",
            humantime::format_duration(TICK)
        )
    }

    async fn step(
        &mut self,
    ) -> Result<crate::runtime::workers::Next, crate::runtime::workers::Failure> {
        let f = &self.fetcher;
        self.seen = f.store.revision();
        let recipes = f.sync()?;
        let names: Vec<String> = recipes.iter().map(|r| r.metadata.name.clone()).collect();
        for gone in self.declared.iter().filter(|n| !names.contains(n)) {
            f.metrics.remove_recipe(gone);
        }
        self.declared = names;
        let now = f.clock.now_ms();
        for r in recipes.iter().filter(|r| f.due(r, now)) {
            f.fetch_one(r).await;
        }
        Ok(crate::runtime::workers::Next::After(TICK))
    }

    async fn triggered(&mut self) -> Result<(), crate::runtime::workers::Failure> {
        self.seen = self.fetcher.store.changed(Kind::Recipe, self.seen).await;
        Ok(())
    }
}

fn write_published(status: &mut crd::RecipeStatus, p: &Published) {
    status.commit = p.head.clone();
    status.versions = p.versions.clone();
    status.ignored = p.ignored.clone();
    status.newest = p.newest().map(|v| v.version.clone());
}

fn conditions(
    status: &mut crd::RecipeStatus,
    ok: bool,
    reason: &str,
    message: &str,
    now: u64,
    recipe: &Recipe,
) {
    let g = recipe.metadata.generation;
    let fetched = if ok {
        ConditionStatus::True
    } else {
        ConditionStatus::False
    };
    set_condition(
        &mut status.conditions,
        Condition::new(FETCHED, fetched, reason, message, now, g),
    );
    // Ready: some content is in force (a failed fetch after a good one keeps it Ready).
    let ready = !status.versions.is_empty() || status.commit.is_some();
    set_condition(
        &mut status.conditions,
        Condition::new(
            types::READY,
            if ready {
                ConditionStatus::True
            } else {
                ConditionStatus::False
            },
            if ready {
                "ContentInForce"
            } else {
                "NeverFetched"
            },
            "",
            now,
            g,
        ),
    );
}

#[cfg(test)]
mod tests;
