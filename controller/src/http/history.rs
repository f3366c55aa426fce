//! `/api/v1/history`: what happened, newest first, filtered by kind and name; and the entry a delete through the API writes.

use axum::extract::{Query, State as AxumState};
use axum::Json;
use crd::Kind;
use serde::Deserialize;
use state::history::{Entry, NewEntry, ObjectRef, Query as HistoryQuery};
use state::Store;

use super::{store_error, ApiError, Routes, State, HISTORY_LIMIT_MAX};

/// The history route.
pub(crate) fn routes() -> Routes {
    Routes::new().get("/api/v1/history", history)
}

/// Reason of the history entry a delete through the API writes.
pub const DELETED: &str = "Deleted";

/// Records that `subject` was deleted through the API (a failure is logged: the delete stands).
pub(crate) async fn record_delete(store: &Store, subject: ObjectRef) {
    let entry =
        NewEntry::new(DELETED, format!("{subject} deleted through the API")).subject(subject);
    if let Err(e) = store.append_history(entry).await {
        tracing::warn!(error = %e, "recording a delete in the history failed");
    }
}

/// Parses a kind as the CLI and the API accept it: `WarmApp`, `warmapp`, `warmapps`, `wa`, …
pub fn parse_kind(s: &str) -> Option<Kind> {
    let lower = s.to_ascii_lowercase();
    match lower.as_str() {
        "warmapp" | "warmapps" | "wa" => Some(Kind::WarmApp),
        "run" | "runs" => Some(Kind::Run),
        "slotpool" | "slotpools" | "pool" | "pools" | "sp" => Some(Kind::SlotPool),
        "depprovider" | "depproviders" | "dep" | "deps" => Some(Kind::DepProvider),
        "recipe" | "recipes" | "rc" => Some(Kind::Recipe),
        _ => None,
    }
}

/// `GET /api/v1/history` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryParams {
    kind: Option<String>,
    name: Option<String>,
    limit: Option<usize>,
}

/// `GET /api/v1/history?kind=&name=&limit=`: entries newest first (default 50, at most
/// [`HISTORY_LIMIT_MAX`]). With kind and name the object's index is used; otherwise the
/// newest entries are scanned and filtered.
async fn history(
    AxumState(s): AxumState<State>,
    Query(params): Query<HistoryParams>,
) -> Result<Json<Vec<Entry>>, ApiError> {
    let limit = params.limit.unwrap_or(50);
    if limit == 0 || limit > HISTORY_LIMIT_MAX {
        return Err(ApiError::invalid(
            "limit",
            format!("limit must be between 1 and {HISTORY_LIMIT_MAX} (got {limit})"),
        ));
    }
    let kind = match params.kind.as_deref() {
        None => None,
        Some(k) => Some(parse_kind(k).ok_or_else(|| {
            ApiError::invalid(
                "kind",
                format!("unknown kind {k:?} (one of WarmApp, Run, SlotPool, DepProvider)"),
            )
        })?),
    };
    let entries = match (kind, params.name) {
        (Some(kind), Some(name)) => s
            .store
            .history(&HistoryQuery::newest(limit).about(ObjectRef::new(kind, name)))
            .map_err(|e| store_error(&e))?,
        (kind, name) => {
            let keep = |e: &Entry| {
                e.subject.as_ref().is_some_and(|subject| {
                    kind.is_none_or(|k| subject.kind == k)
                        && name.as_ref().is_none_or(|n| subject.name == *n)
                }) || (kind.is_none() && name.is_none())
            };
            // Page through the newest entries; bounded so a rare filter stays cheap.
            let mut out = Vec::new();
            let mut before = None;
            for _ in 0..20 {
                let mut q = HistoryQuery::newest(500);
                q.before = before;
                let page = s.store.history(&q).map_err(|e| store_error(&e))?;
                let Some(last) = page.last() else { break };
                before = Some(last.seq);
                let full = page.len() == 500;
                out.extend(page.into_iter().filter(keep));
                if out.len() >= limit || !full {
                    break;
                }
            }
            out.truncate(limit);
            out
        }
    };
    Ok(Json(entries))
}
