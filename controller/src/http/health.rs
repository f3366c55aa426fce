//! The open routes: `/healthz` (the process answers), `/readyz` (store, Docker and the first reconcile pass) and `/metrics` (Prometheus text).

use std::time::Duration;

use axum::extract::State as AxumState;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::{ApiError, Routes, State};

/// The health, readiness and metrics routes: open to everyone.
pub(crate) fn routes() -> Routes {
    Routes::new()
        .open("/healthz", healthz)
        .open("/readyz", readyz)
        .open("/metrics", metrics_text)
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: 200 when the store reads, Docker answers a ping and the warm-app controller
/// finished its first pass; else 503. The body names each check, and gives every background
/// worker's status under `workers` (details: a failing worker does not make the daemon
/// unready — it keeps serving, and the worker is retried).
async fn readyz(AxumState(s): AxumState<State>) -> Response {
    let store = match s.store.get_value::<String>(crate::warmapp::INSTANCE_KEY) {
        Ok(_) => Ok(()),
        Err(e) => Err(format!("store unreadable: {e}")),
    };
    let docker = match tokio::time::timeout(Duration::from_secs(5), s.swarm.ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("docker unreachable: {e}")),
        Err(_) => Err("docker did not answer a ping within 5s".to_string()),
    };
    let first = if s.handle.first_pass_done() {
        Ok(())
    } else {
        Err("the first reconcile pass is not done yet".to_string())
    };
    let checks = [
        ("store", store),
        ("docker", docker),
        ("firstReconcile", first),
    ];
    let ready = checks.iter().all(|(_, r)| r.is_ok());
    // With the etcd store this replica leads (standbys answer from crate::leader).
    let leader = match s
        .store
        .get_value::<serde_json::Value>(crate::leader::LEADER_KEY)
    {
        Ok(Some(mut holder)) => {
            holder["self"] = serde_json::Value::Bool(true);
            holder
        }
        _ => serde_json::Value::Null,
    };
    let mut body = serde_json::json!({
        "ready": ready,
        "checks": checks
            .iter()
            .map(|(name, r)| (name.to_string(), match r {
                Ok(()) => serde_json::Value::String("ok".into()),
                Err(e) => serde_json::Value::String(e.clone()),
            }))
            .collect::<serde_json::Map<_, _>>(),
        "workers": s.workers.list(),
    });
    if !leader.is_null() {
        body["role"] = serde_json::Value::String("leader".into());
        body["leader"] = leader;
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn metrics_text(AxumState(s): AxumState<State>) -> Result<Response, ApiError> {
    let text = s
        .metrics
        .encode()
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, s.metrics.content_type())], text).into_response())
}
