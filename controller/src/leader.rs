//! Leader election over the etcd store: a replica stands by (answering `/healthz`, `/readyz` and forwarding the API to the leader) until it holds the store.
//!
//! Any number of `hearth serve --store etcd://…` replicas run; the one holding the etcd
//! holder key ([`state::EtcdEngine::campaign`]) is the leader and runs the daemon (store
//! writes, reconcilers, sweeper, nightly). The others wait here:
//! - `/healthz` answers 200 (the process is alive), `/readyz` 503 with `"role": "standby"` and
//!   the leader's host, pid and API address, so a load balancer sends traffic to the leader;
//! - every other request is forwarded unchanged (method, path, headers — the bearer token
//!   too — and body) to the leader's API address as written into the holder key, so CI
//!   clients can talk to any replica; without a known leader it answers 503.
//!
//! Fencing lives in the engine: every write of the leader is conditioned on its holder key,
//! and the engine gives up at half the lease after its last renewal — before anyone else can
//! take over. The daemon stops at once when that happens ([`crate::serve`]).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use state::etcd_engine::{Config, Defer, Holder};
use state::EtcdEngine;
use tokio_util::sync::CancellationToken;

use crate::swarm::{DockerOptions, DockerSwarm, LabelFilter, Swarm};

/// The named value in which the leader records itself (absent with sled): `/readyz` and the
/// status page read it.
pub const LEADER_KEY: &str = "serve.leader";

/// The leader as a standby last saw it.
type Seen = Arc<Mutex<Option<Holder>>>;

/// What the standby endpoint knows: the leader it last saw and its own API address.
#[derive(Clone)]
struct Standby {
    seen: Seen,
    /// This replica's advertised API address: a holder record naming it is a previous run of
    /// this replica (killed, its lease not yet expired), never a leader to forward to.
    own_api: Option<String>,
}

/// Set on a forwarded request: a replica never forwards a request twice (no loops).
const FORWARDED: &str = "x-hearth-forwarded-by";

/// Errors of standing by.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The standby endpoint could not listen. Not retryable.
    #[error("cannot listen on {addr}")]
    ListenFailed {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// etcd refused the campaign (TLS files unreadable). Not retryable.
    #[error("cannot campaign for the etcd store")]
    CampaignFailed(#[source] state::engine::Error),
}

/// Waits until this process holds the store, serving the standby endpoint on `listen`
/// meanwhile. Returns `None` when `stop` fired first. The endpoint is closed (its port free
/// again) when this returns.
///
/// # Errors
/// [`Error::ListenFailed`], [`Error::CampaignFailed`].
pub async fn campaign(
    config: Config,
    listen: Option<SocketAddr>,
    stop: CancellationToken,
    defer: Defer,
) -> Result<Option<EtcdEngine>, Error> {
    let seen: Seen = Arc::new(Mutex::new(None));
    let standby = CancellationToken::new();
    let server = match listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| Error::ListenFailed { addr, source })?;
            let app = router(Standby {
                seen: seen.clone(),
                own_api: config.api.clone(),
            });
            let done = standby.clone();
            tracing::info!(%addr, "standby endpoint listening (forwards the API to the leader)");
            Some(tokio::spawn(async move {
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async move { done.cancelled().await })
                    .await;
            }))
        }
        None => None,
    };
    let observer = {
        let seen = seen.clone();
        Box::new(move |h: Option<Holder>| {
            *seen.lock().unwrap_or_else(PoisonError::into_inner) = h;
        })
    };
    let result = tokio::select! {
        r = EtcdEngine::campaign_deferring(config, observer, defer) => r.map(Some).map_err(Error::CampaignFailed),
        () = stop.cancelled() => Ok(None),
    };
    standby.cancel();
    if let Some(server) = server {
        let _ = server.await;
    }
    result
}

/// Whether this replica's own node leads Swarm's raft, asked of its Docker engine every second
/// while it stands by ([`RaftLeaderWatch::defer`]).
///
/// Stopping the node that leads Swarm's raft leaves the surviving managers without a Swarm
/// leader until Swarm's own election ends (about 10 s: its election tick; measured in
/// BENCHMARKS.md, "Failover"), and no replica can act on the swarm meanwhile. If hearth's
/// leader ran on that node too, its takeover would wait for that election on top. So a
/// standby on the node leading Swarm's raft leaves a free store to a replica on another
/// manager for a moment ([`EtcdEngine::campaign_deferring`]), and then losing one node costs
/// one of the two elections, not both in a row. Only when the swarm has another ready manager;
/// a Docker engine that does not answer within 2 s counts as "not leading".
pub struct RaftLeaderWatch {
    /// [`UNKNOWN`] until the first answer, then [`LEADS`] or [`DOES_NOT_LEAD`].
    leads: Arc<AtomicU8>,
    task: tokio::task::JoinHandle<()>,
}

impl RaftLeaderWatch {
    /// Starts watching through the Docker engine at `socket`.
    pub fn start(socket: &Path) -> RaftLeaderWatch {
        let leads = Arc::new(AtomicU8::new(UNKNOWN));
        let flag = leads.clone();
        let socket = socket.to_path_buf();
        let task = tokio::spawn(async move {
            let mut swarm = None;
            let mut said = String::new();
            loop {
                let outcome =
                    tokio::time::timeout(Duration::from_secs(2), leads_raft(&mut swarm, &socket))
                        .await
                        .unwrap_or_else(|_| Err("Docker did not answer within 2s".to_string()));
                let now = if matches!(outcome, Ok(true)) {
                    LEADS
                } else {
                    DOES_NOT_LEAD
                };
                flag.store(now, Ordering::Relaxed);
                let says = match &outcome {
                    Ok(true) => "this node leads Swarm's raft and another manager is ready: a free store is left to the other replicas for a moment".to_string(),
                    Ok(false) => "this node does not lead Swarm's raft (or is its only ready manager)".to_string(),
                    Err(e) => format!("cannot tell whether this node leads Swarm's raft: {e}"),
                };
                if says != said {
                    tracing::info!("{says}");
                    said = says;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        RaftLeaderWatch { leads, task }
    }

    /// For the campaign: `true` while this node leads Swarm's raft, and until the first
    /// answer (a replica starting with the others does not take the store before it knows;
    /// the engine defers 2 s at most).
    pub fn defer(&self) -> Defer {
        let leads = self.leads.clone();
        Box::new(move || leads.load(Ordering::Relaxed) != DOES_NOT_LEAD)
    }
}

const UNKNOWN: u8 = 0;
const LEADS: u8 = 1;
const DOES_NOT_LEAD: u8 = 2;

impl Drop for RaftLeaderWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Whether the engine at `socket` is the swarm node leading Swarm's raft while another ready
/// manager exists; why it cannot tell.
async fn leads_raft(swarm: &mut Option<DockerSwarm>, socket: &Path) -> Result<bool, String> {
    if swarm.is_none() {
        *swarm = Some(
            DockerSwarm::connect(DockerOptions {
                socket: socket.to_path_buf(),
                ..DockerOptions::default()
            })
            .await
            .map_err(|e| e.to_string())?,
        );
    }
    let Some(engine) = swarm.as_ref() else {
        return Err("not connected".to_string());
    };
    let info = engine.info().await.map_err(|e| e.to_string())?;
    let nodes = engine
        .list_nodes(&LabelFilter::all())
        .await
        .map_err(|e| e.to_string())?;
    let others_ready = nodes
        .iter()
        .filter(|n| n.meta.id != info.node_id && n.role == "manager" && n.state == "ready")
        .count();
    Ok(others_ready > 0 && nodes.iter().any(|n| n.leader && n.meta.id == info.node_id))
}

fn router(standby: Standby) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .fallback(forward)
        .with_state(standby)
}

fn leader_json(holder: Option<&Holder>) -> serde_json::Value {
    match holder {
        Some(h) => serde_json::json!({
            "host": h.host,
            "pid": h.pid,
            "api": h.api,
            "self": false,
        }),
        None => serde_json::Value::Null,
    }
}

/// `GET /readyz` on a standby: 503, naming the leader.
async fn readyz(State(standby): State<Standby>) -> Response {
    let leader = standby
        .seen
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let body = serde_json::json!({
        "ready": false,
        "role": "standby",
        "leader": leader_json(leader.as_ref()),
        "checks": { "leadership": "standing by: another replica holds the store" },
    });
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

fn unavailable(message: String) -> Response {
    let body = serde_json::json!({"error": {"code": 503, "message": message}});
    let mut response = (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// Any other request: forwarded to the leader's API.
async fn forward(State(standby): State<Standby>, request: Request) -> Response {
    let leader = standby
        .seen
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    if request.headers().contains_key(FORWARDED) {
        return unavailable(
            "this replica stands by and does not forward a forwarded request again".to_string(),
        );
    }
    if leader.as_ref().and_then(|h| h.api.as_ref()) == standby.own_api.as_ref()
        && standby.own_api.is_some()
    {
        return unavailable(
            "this replica stands by; the store is still held under its own address by a \
             previous run of it, whose lease has not expired yet"
                .to_string(),
        );
    }
    let Some(api) = leader.as_ref().and_then(|h| h.api.clone()) else {
        return unavailable(match leader {
            Some(h) => {
                format!("this replica stands by; the leader ({h}) did not say where its API is")
            }
            None => "this replica stands by and knows no leader yet".to_string(),
        });
    };
    match proxy(&api, request).await {
        Ok(response) => response,
        Err(reason) => unavailable(format!(
            "this replica stands by; forwarding to the leader at {api} failed: {reason}"
        )),
    }
}

async fn proxy(api: &str, request: Request) -> Result<Response, String> {
    let authority: Uri = api.parse().map_err(|e| format!("bad API address: {e}"))?;
    let host = authority
        .authority()
        .ok_or_else(|| "the API address has no host".to_string())?
        .to_string();
    let stream = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::net::TcpStream::connect(&host),
    )
    .await
    .map_err(|_| "connect timed out".to_string())?
    .map_err(|e| e.to_string())?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let (mut parts, body) = request.into_parts();
    parts.uri = parts
        .uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .parse()
        .map_err(|e: axum::http::uri::InvalidUri| e.to_string())?;
    parts.headers.insert(
        header::HOST,
        HeaderValue::from_str(&host).map_err(|e| e.to_string())?,
    );
    parts
        .headers
        .insert(FORWARDED, HeaderValue::from_static("standby"));
    let response = sender
        .send_request(Request::from_parts(parts, body))
        .await
        .map_err(|e| e.to_string())?;
    let (mut parts, body) = response.into_parts();
    parts.headers.insert(
        "x-hearth-forwarded-to",
        HeaderValue::from_str(api).map_err(|e| e.to_string())?,
    );
    Ok(Response::from_parts(parts, Body::new(body)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_leader_should_be_described_without_secrets() {
        let h = Holder {
            host: "m1".into(),
            pid: 7,
            api: Some("http://10.0.0.1:7777".into()),
        };
        let v = leader_json(Some(&h));
        assert_eq!(v["host"], "m1");
        assert_eq!(v["api"], "http://10.0.0.1:7777");
        assert_eq!(leader_json(None), serde_json::Value::Null);
    }
}
