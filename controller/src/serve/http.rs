//! The daemon's local HTTP endpoint: read warm apps, apply a state file, metrics, liveness (issue 6 grows it into the full API).

use axum::extract::{Path, Query, State as AxumState};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use crd::names::BaseDomain;
use crd::WarmApp;
use metrics::Metrics;
use serde::Deserialize;
use state::Store;
use tokio_util::sync::CancellationToken;

use crate::statefile;

/// What the handlers share.
#[derive(Clone)]
pub(crate) struct State {
    pub store: Store,
    pub metrics: Metrics,
    pub base_domain: BaseDomain,
    pub runs: crate::runs::Runs,
    pub slots: crate::slots::Slots,
    pub sweeper: crate::sweeper::Sweeper,
    pub promoter: crate::promote::Promoter,
    pub nightly: std::sync::Arc<crate::nightly::Nightly>,
}

/// One error answer per failure kind.
enum ApiError {
    /// No such object: 404.
    NotFound(String),
    /// The state file was rejected: 422 with every problem.
    Rejected(String),
    /// The store or metrics failed: 500.
    Internal(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (code, message) = match self {
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, m),
            ApiError::Rejected(m) => (StatusCode::UNPROCESSABLE_ENTITY, m),
            ApiError::Internal(m) => (StatusCode::INTERNAL_SERVER_ERROR, m),
        };
        (code, Json(serde_json::json!({ "error": message }))).into_response()
    }
}

fn router(state: State) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics_text))
        .route("/api/v1/warmapps", get(list_warmapps))
        .route("/api/v1/warmapps/{name}", get(get_warmapp))
        .route("/api/v1/apply", post(apply))
        .merge(super::http_ci::routes())
        .merge(super::http_promote::routes())
        .merge(super::http_nightly::routes())
        .with_state(state)
}

/// Serves until `stop`.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    state: State,
    stop: CancellationToken,
) {
    let result = axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "http endpoint failed");
    }
}

async fn metrics_text(AxumState(s): AxumState<State>) -> Result<Response, ApiError> {
    let text = s
        .metrics
        .encode()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, s.metrics.content_type())], text).into_response())
}

async fn list_warmapps(AxumState(s): AxumState<State>) -> Result<Json<Vec<WarmApp>>, ApiError> {
    let list = s
        .store
        .list::<WarmApp>()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(list.items))
}

async fn get_warmapp(
    AxumState(s): AxumState<State>,
    Path(name): Path<String>,
) -> Result<Json<WarmApp>, ApiError> {
    match s.store.get_opt::<WarmApp>(&name) {
        Ok(Some(app)) => Ok(Json(app)),
        Ok(None) => Err(ApiError::NotFound(format!("WarmApp/{name} was not found"))),
        Err(e) => Err(ApiError::Internal(e.to_string())),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApplyParams {
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    prune: bool,
    #[serde(default)]
    file: Option<String>,
}

/// `POST /api/v1/apply?dryRun=&prune=&file=NAME` with the state file's text as the body:
/// the diff as text, or 422 with every problem (file:line:col, field path).
async fn apply(
    AxumState(s): AxumState<State>,
    Query(params): Query<ApplyParams>,
    body: String,
) -> Result<String, ApiError> {
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
        Ok(diff) => Ok(format!("{diff}\n")),
        Err(e @ statefile::Error::FileRejected { .. }) => {
            if !params.dry_run {
                s.metrics.record_state_file_rejection();
                if let Err(h) = statefile::record_rejection(&s.store, &e).await {
                    tracing::warn!(error = %h, "recording the rejection failed");
                }
            }
            Err(ApiError::Rejected(e.to_string()))
        }
        Err(e) => Err(ApiError::Internal(e.to_string())),
    }
}
