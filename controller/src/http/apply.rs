//! `POST /api/v1/apply`: a state file sent by `hearth apply`, applied (or only diffed) by the daemon that holds the store.

use crate::access::Scope;
use crate::statefile;
use axum::extract::{Query, State as AxumState};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

use super::{ApiError, Routes, State, APPLY_BODY_LIMIT};

/// The apply route: admin only, with the larger body limit of a state file.
pub(crate) fn routes() -> Routes {
    Routes::new().post_limited("/api/v1/apply", Scope::Admin, apply, APPLY_BODY_LIMIT)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ApplyParams {
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    prune: bool,
    #[serde(default)]
    file: Option<String>,
}

/// `POST /api/v1/apply?dryRun=&prune=&file=NAME` with the state file's text as the body:
/// the diff as JSON (`summary`, `changes`, `text`), or 422 with every problem
/// (file:line:col, field path).
async fn apply(
    AxumState(s): AxumState<State>,
    Query(params): Query<ApplyParams>,
    body: String,
) -> Result<Json<serde_json::Value>, ApiError> {
    let name = params.file.unwrap_or_else(|| "<request>".into());
    let options = statefile::ApplyOptions {
        prune: params.prune,
        dry_run: params.dry_run,
    };
    let result = match statefile::parse(&name, &body, Some(&s.base_domain)) {
        Ok(set) => statefile::apply(&s.store, &set, options).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(diff) => Ok(Json(diff_json(&diff, params.dry_run))),
        Err(e @ statefile::Error::FileRejected { .. }) => {
            if !params.dry_run {
                s.metrics.record_state_file_rejection();
                if let Err(h) = statefile::record_rejection(&s.store, &e).await {
                    tracing::warn!(error = %h, "recording the rejection failed");
                }
            }
            Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                e.to_string(),
            ))
        }
        Err(e) => Err(ApiError::internal(crate::errors::chain(&e))),
    }
}

/// A diff as the API answers it: `{dryRun, summary, changes: [{op, kind, name, fields}], text}`.
pub(crate) fn diff_json(diff: &statefile::Diff, dry_run: bool) -> serde_json::Value {
    use statefile::Op;
    let changes: Vec<serde_json::Value> = diff
        .entries
        .iter()
        .map(|e| {
            let (op, fields) = match &e.op {
                Op::Create(_) => ("create", Vec::new()),
                Op::Update { fields, .. } => (
                    "update",
                    fields
                        .iter()
                        .map(|(p, old, new)| serde_json::json!({"path": p, "old": old, "new": new}))
                        .collect(),
                ),
                Op::Unchanged => ("unchanged", Vec::new()),
                Op::Delete(_) => ("delete", Vec::new()),
                Op::Kept(_) => ("kept", Vec::new()),
            };
            serde_json::json!({
                "op": op,
                "kind": e.key.kind.as_str(),
                "name": e.key.name,
                "fields": fields,
            })
        })
        .collect();
    serde_json::json!({
        "dryRun": dry_run,
        "summary": diff.summary(),
        "changes": changes,
        "text": diff.to_string(),
    })
}
