//! The daemon's HTTP API: the route table, the access layer (who may do what), JSON errors and body limits; handlers in a file per resource.
//!
//! # Guarantees
//! - Every request passes [`access::check`] first — one router-wide layer, deciding from the
//!   access the matched route was registered with (every registration states it), so a route
//!   added later is covered without doing anything. Missing or unknown credentials are a 401
//!   JSON error with a `WWW-Authenticate` challenge (Bearer, and Basic so a browser asks for
//!   the token); a token whose scope does not cover the route is a 403. No token is logged.
//! - Reads are open without credentials only on a loopback listen address or with
//!   `--public-reads`; `/healthz`, `/readyz` and `/metrics` are always open.
//! - Every request passed with a token runs inside [`state::history::acting_as`] its name, so
//!   the history entries a mutation writes name the token that asked.
//! - Warm apps answered to a caller that is not `admin` have their env values redacted.
//! - Every error is `{"error": {"code", "message", "field"?}}` with a fitting status:
//!   handlers answer [`ApiError`]s, and a second layer turns axum's own plain-text rejections
//!   (malformed JSON, wrong content type, unknown route, wrong method, too large a body)
//!   into the same shape.
//! - Bodies are limited: [`BODY_LIMIT`] by default, [`APPLY_BODY_LIMIT`] for a state file. A
//!   body an error answer left unread (413) is drained first (up to [`DRAIN_LIMIT`]), so the
//!   client reads the answer instead of a connection reset.
//! - When [`serve`] returns after a stop, every connection is closed (in-flight requests get
//!   [`SHUTDOWN_GRACE`]): nothing holds the store any longer.
//!
//! Routes are registered through [`Routes`], which records each (method, path, access): the
//! API tests take every route from [`routes_with_access`] and send each with no token, a wrong
//! one and each scope; [`MUTATIONS`] is checked against the recorded mutations.
//!
//! One file per resource, each with its `routes()`: `health` (`/healthz`, `/readyz`,
//! `/metrics`), `warmapps`, `recipes`, `history`, `apply`, `runs`, `slots`, `sweep`,
//! `promote`, `nightly`, [`status_page`] (`/`); `error` holds [`ApiError`] and the JSON
//! [`Body`] extractor.

mod apply;
mod error;
mod health;
mod history;
mod nightly;
mod promote;
mod recipes;
mod runs;
mod slots;
pub mod status_page;
mod sweep;
mod warmapps;
mod workers;

pub(crate) use apply::diff_json;
pub(crate) use error::{field_of, get_or_404, store_error, ApiError, Body};
pub(crate) use history::record_delete;
pub use history::{parse_kind, DELETED};

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State as AxumState};
use axum::handler::Handler;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use crd::names::BaseDomain;
use metrics::Metrics;
use state::Store;
use tokio_util::sync::CancellationToken;

use crate::access::{self, Access, Keyring, Scope};
use crate::runtime::Handle;
use crate::swarm::Swarm;

/// The largest accepted request body, except for a state file.
pub const BODY_LIMIT: usize = 64 * 1024;

/// The largest accepted state file (`POST /api/v1/apply`).
pub const APPLY_BODY_LIMIT: usize = 1024 * 1024;

/// The most history entries one request returns.
pub const HISTORY_LIMIT_MAX: usize = 1000;

/// Every mutating route (method, path pattern). The API test checks this list against the
/// routes [`route_table`] records and sends each without and with a wrong token: add a new
/// mutating route here.
pub const MUTATIONS: &[(&str, &str)] = &[
    ("POST", "/api/v1/apply"),
    ("DELETE", "/api/v1/warmapps/{name}"),
    ("POST", "/api/v1/warmapps/{name}/promote"),
    ("POST", "/api/v1/warmapps/{name}/rollback"),
    ("POST", "/api/v1/runs"),
    ("DELETE", "/api/v1/runs/{id}"),
    ("POST", "/api/v1/runs/{id}/heartbeat"),
    ("POST", "/api/v1/runs/{id}/report"),
    ("POST", "/api/v1/runs/{id}/finish"),
    ("POST", "/api/v1/runs/{id}/deploy"),
    ("DELETE", "/api/v1/slotpools/{pool}"),
    ("POST", "/api/v1/slotpools/{pool}/acquire"),
    ("POST", "/api/v1/slotpools/{pool}/heartbeat"),
    ("POST", "/api/v1/slotpools/{pool}/release"),
    ("POST", "/api/v1/sweep"),
    ("POST", "/api/v1/nightly"),
];

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
    pub swarm: Arc<dyn Swarm>,
    pub handle: Handle,
    pub workers: crate::runtime::workers::Board,
}

/// The router under construction, with a record of every (method, path) it serves.
///
/// Register routes through [`Routes::get`], [`Routes::post`], [`Routes::delete`] (and merge
/// groups with [`Routes::merge`]), never on the inner axum router: the record is what the API
/// test checks against [`MUTATIONS`].
pub(crate) struct Routes {
    router: Router<State>,
    table: Vec<(Method, &'static str, Access)>,
}

impl Routes {
    /// No routes.
    pub(crate) fn new() -> Routes {
        Routes {
            router: Router::new(),
            table: Vec::new(),
        }
    }

    fn add<H, T>(
        mut self,
        method: Method,
        path: &'static str,
        access: Access,
        handler: H,
        limit: usize,
    ) -> Routes
    where
        H: Handler<T, State>,
        T: 'static,
    {
        let filter = match method {
            Method::GET => axum::routing::MethodFilter::GET,
            Method::DELETE => axum::routing::MethodFilter::DELETE,
            Method::PUT => axum::routing::MethodFilter::PUT,
            Method::PATCH => axum::routing::MethodFilter::PATCH,
            _ => axum::routing::MethodFilter::POST,
        };
        let route = axum::routing::on(filter, handler).layer(DefaultBodyLimit::max(limit));
        self.router = self.router.route(path, route);
        self.table.push((method, path, access));
        self
    }

    /// `GET path`, needing a `read` token (or none where reads are open).
    pub(crate) fn get<H: Handler<T, State>, T: 'static>(
        self,
        path: &'static str,
        handler: H,
    ) -> Routes {
        let read = Access::Needs(Scope::Read);
        self.add(Method::GET, path, read, handler, BODY_LIMIT)
    }

    /// `GET path`, open to everyone (health, readiness, metrics).
    pub(crate) fn open<H: Handler<T, State>, T: 'static>(
        self,
        path: &'static str,
        handler: H,
    ) -> Routes {
        self.add(Method::GET, path, Access::Open, handler, BODY_LIMIT)
    }

    /// `POST path` for tokens of `scope` and above, with bodies up to [`BODY_LIMIT`].
    pub(crate) fn post<H: Handler<T, State>, T: 'static>(
        self,
        path: &'static str,
        scope: Scope,
        handler: H,
    ) -> Routes {
        self.add(
            Method::POST,
            path,
            Access::Needs(scope),
            handler,
            BODY_LIMIT,
        )
    }

    /// `POST path` for tokens of `scope` and above, with bodies up to `limit` bytes.
    pub(crate) fn post_limited<H: Handler<T, State>, T: 'static>(
        self,
        path: &'static str,
        scope: Scope,
        handler: H,
        limit: usize,
    ) -> Routes {
        self.add(Method::POST, path, Access::Needs(scope), handler, limit)
    }

    /// `DELETE path` for tokens of `scope` and above.
    pub(crate) fn delete<H: Handler<T, State>, T: 'static>(
        self,
        path: &'static str,
        scope: Scope,
        handler: H,
    ) -> Routes {
        self.add(
            Method::DELETE,
            path,
            Access::Needs(scope),
            handler,
            BODY_LIMIT,
        )
    }

    /// Adds another group's routes.
    pub(crate) fn merge(mut self, other: Routes) -> Routes {
        self.router = self.router.merge(other.router);
        self.table.extend(other.table);
        self
    }
}

/// Every route of the API.
fn routes() -> Routes {
    Routes::new()
        .get("/", status_page::page)
        .merge(health::routes())
        .merge(warmapps::routes())
        .merge(recipes::routes())
        .merge(history::routes())
        .merge(apply::routes())
        .merge(runs::routes())
        .merge(slots::routes())
        .merge(sweep::routes())
        .merge(promote::routes())
        .merge(nightly::routes())
        .merge(workers::routes())
}

/// Every (method, path) the API serves, in registration order.
pub fn route_table() -> Vec<(String, String)> {
    routes()
        .table
        .into_iter()
        .map(|(m, p, _)| (m.to_string(), p.to_string()))
        .collect()
}

/// Every (method, path, access) the API serves, in registration order: what the access layer
/// decides from, and what the access tests send.
pub fn routes_with_access() -> Vec<(String, String, Access)> {
    routes()
        .table
        .into_iter()
        .map(|(m, p, a)| (m.to_string(), p.to_string(), a))
        .collect()
}

/// How the access layer decides: the live tokens, and whether anonymous reads are open.
#[derive(Debug, Clone)]
pub(crate) struct Gate {
    /// The tokens in force (reloaded when the tokens file changes).
    pub keyring: Arc<Keyring>,
    /// Anonymous reads pass (a loopback listen address, or `--public-reads`).
    pub reads_open: bool,
}

/// The whole API: routes, then the access layer, then the JSON error layer, then the drain of
/// unread bodies, then the access log (outermost).
pub(crate) fn router(state: State, gate: Gate) -> Router {
    let gate = Arc::new(gate);
    routes()
        .router
        .layer(axum::middleware::from_fn_with_state(gate, require_access))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(json_errors))
        .layer(axum::middleware::from_fn(drain_unread_bodies))
        .layer(axum::middleware::from_fn(access_log))
        .with_state(state)
}

/// What `method` on the route `pattern` requires: the registered access; an unknown route or
/// method needs a `read` token (the router then answers 404/405), so nothing is reachable
/// anonymously off loopback and no mutation anonymously anywhere.
fn access_of(method: &Method, pattern: Option<&str>) -> Access {
    static TABLE: std::sync::OnceLock<Vec<(String, String, Access)>> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(routes_with_access);
    let method = if *method == Method::HEAD {
        &Method::GET
    } else {
        method
    };
    pattern
        .and_then(|p| {
            table
                .iter()
                .find(|(m, path, _)| m == method.as_str() && path == p)
        })
        .map_or(Access::Needs(Scope::Read), |(_, _, a)| *a)
}

/// Logs every request at debug with its method, path and status, and how long it took. Never
/// the query, a header or a body: they may carry the token or a secret.
async fn access_log(request: Request, next: Next) -> Response {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return next.run(request).await;
    }
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    tracing::debug!(
        %method,
        %path,
        status = response.status().as_u16(),
        took = ?started.elapsed(),
        "served a request"
    );
    response
}

/// Lets a request through when [`access::check`] passes it — as its [`Principal`], and inside
/// [`state::history::acting_as`] the token's name — else answers 401 (with the challenges) or
/// 403 as JSON.
async fn require_access(
    AxumState(gate): AxumState<Arc<Gate>>,
    mut request: Request,
    next: Next,
) -> Response {
    let pattern = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string());
    let access = access_of(request.method(), pattern.as_deref());
    let is_read = *request.method() == Method::GET || *request.method() == Method::HEAD;
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    let verdict = access::check(
        &gate.keyring.tokens(),
        access,
        is_read,
        header,
        gate.reads_open,
    );
    let (status, message) = match verdict {
        access::Verdict::Pass(principal) => {
            let actor = principal.name().map(str::to_string);
            request.extensions_mut().insert(principal);
            return match actor {
                Some(name) => state::history::acting_as(name, next.run(request)).await,
                None => next.run(request).await,
            };
        }
        access::Verdict::Missing if is_read => (
            StatusCode::UNAUTHORIZED,
            "this daemon listens off loopback: reads need a token too \
             (`Authorization: Bearer <token>`, or HTTP Basic with the token as the password)"
                .to_string(),
        ),
        access::Verdict::Missing => (
            StatusCode::UNAUTHORIZED,
            "this request changes state and needs `Authorization: Bearer <token>` \
             (the CLI reads it from --token-file, $HEARTH_TOKEN_FILE or $HEARTH_TOKEN)"
                .to_string(),
        ),
        access::Verdict::Wrong => (
            StatusCode::UNAUTHORIZED,
            "the token is not one of this daemon's tokens (revoked, mistyped, or another daemon's)"
                .to_string(),
        ),
        access::Verdict::Forbidden { name, scope, needs } => (
            StatusCode::FORBIDDEN,
            format!("the token {name:?} has scope {scope}; this request needs {needs}"),
        ),
    };
    tracing::info!(method = %request.method(), path = %request.uri().path(), status = status.as_u16(), "refused a request without the right token");
    let mut response = ApiError::new(status, message).into_response();
    if status == StatusCode::UNAUTHORIZED {
        let headers = response.headers_mut();
        headers.append(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"hearth\""),
        );
        headers.append(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"hearth\", charset=\"UTF-8\""),
        );
    }
    response
}

/// Turns every error answer that is not JSON (axum's own rejections, an unknown route, a
/// wrong method) into the API's JSON error, keeping status and headers.
async fn json_errors(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 16 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = match status {
        StatusCode::NOT_FOUND if text.is_empty() => format!("no route for {method} {path}"),
        StatusCode::METHOD_NOT_ALLOWED => {
            // axum adds its `Allow` header outside this layer: the route table says it too.
            let allowed = allowed_methods(&path).join(", ");
            format!("{method} is not allowed on {path} (allowed: {allowed})")
        }
        StatusCode::PAYLOAD_TOO_LARGE => {
            format!("the request body is too large for {method} {path}: {text}")
        }
        _ if text.is_empty() => status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_lowercase(),
        _ => text,
    };
    let field = field_of(&message);
    let mut error = ApiError::new(status, message);
    error.field = field;
    let mut out = error.into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}

/// Whether `path` matches the route `pattern` (`{param}` matches one segment).
fn path_matches(pattern: &str, path: &str) -> bool {
    let (p, q): (Vec<&str>, Vec<&str>) = (pattern.split('/').collect(), path.split('/').collect());
    p.len() == q.len()
        && p.iter()
            .zip(&q)
            .all(|(a, b)| a == b || (a.starts_with('{') && !b.is_empty()))
}

/// The methods the API serves on `path`.
fn allowed_methods(path: &str) -> Vec<String> {
    static TABLE: std::sync::OnceLock<Vec<(String, String)>> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(route_table);
    let mut methods: Vec<String> = table
        .iter()
        .filter(|(_, pattern)| path_matches(pattern, path))
        .map(|(m, _)| m.clone())
        .collect();
    methods.dedup();
    methods
}

/// How long in-flight requests may go on after a graceful stop before their connections are
/// closed.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves `state` behind `gate` on `listener` until `stop`, then lets in-flight requests
/// finish (idle keep-alive connections close at once) for up to [`SHUTDOWN_GRACE`] and closes
/// what is left.
///
/// # Guarantees
/// When this returns, no connection task is left: nothing holds the router's [`State`] (and
/// its store) any longer. (axum's own `serve` spawns connection tasks it does not track, so a
/// client's idle keep-alive connection kept the store open after the daemon stopped.)
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    state: State,
    gate: Gate,
    stop: CancellationToken,
) {
    let app = router(state, gate);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (io, _) = tokio::select! {
            () = stop.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let stop = stop.clone();
        connections.spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(io), service)
                .with_upgrades();
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                () = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = connections.len(),
            grace = ?SHUTDOWN_GRACE,
            "requests still running after the grace period; closing their connections"
        );
        connections.shutdown().await;
    }
}

/// How much of a body a handler left unread is read and dropped before an error answer.
pub const DRAIN_LIMIT: u64 = 16 * 1024 * 1024;

/// How long reading a body a handler left unread may take before an error answer.
pub const DRAIN_TIME: Duration = Duration::from_secs(5);

/// A request body that hands what is left of it back when the handler drops it.
struct Returning {
    stream: Option<axum::body::BodyDataStream>,
    slot: Arc<std::sync::Mutex<Option<axum::body::BodyDataStream>>>,
}

impl futures::Stream for Returning {
    type Item = Result<axum::body::Bytes, axum::Error>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        match self.stream.as_mut() {
            Some(s) => std::pin::Pin::new(s).poll_next(cx),
            None => std::task::Poll::Ready(None),
        }
    }
}

impl Drop for Returning {
    fn drop(&mut self) {
        if let Some(s) = self.stream.take() {
            *self
                .slot
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(s);
        }
    }
}

/// Reads and drops what a handler left of the request body before an error answer goes out
/// (a lingering close), up to [`DRAIN_LIMIT`] bytes and [`DRAIN_TIME`].
///
/// Why: a handler that refuses a body (413 over the limit) stops reading it; hyper then
/// closes the connection, and a client still sending gets a reset instead of the answer (6
/// in 50,000 fuzzed requests of 3 MiB, docs/RELIABILITY.md). Drained, the client's send
/// completes and it reads the JSON error; the connection stays usable.
async fn drain_unread_bodies(request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let slot = Arc::new(std::sync::Mutex::new(None));
    let body = axum::body::Body::from_stream(Returning {
        stream: Some(body.into_data_stream()),
        slot: Arc::clone(&slot),
    });
    let response = next.run(Request::from_parts(parts, body)).await;
    if !response.status().is_client_error() {
        return response;
    }
    let left = slot
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    if let Some(mut left) = left {
        use futures::StreamExt;
        let drain = async {
            let mut read = 0u64;
            while let Some(Ok(chunk)) = left.next().await {
                read += chunk.len() as u64;
                if read > DRAIN_LIMIT {
                    return false;
                }
            }
            true
        };
        if !matches!(tokio::time::timeout(DRAIN_TIME, drain).await, Ok(true)) {
            tracing::debug!("an unread request body was too large or too slow to drain");
        }
    }
    response
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::error::code_of;
    use super::*;
    use crd::Kind;

    #[test]
    fn every_status_has_a_code_and_rejections_name_their_field() {
        assert_eq!(code_of(StatusCode::PAYLOAD_TOO_LARGE), "PayloadTooLarge");
        assert_eq!(code_of(StatusCode::UNAUTHORIZED), "Unauthorized");
        assert_eq!(
            field_of("Failed to deserialize the JSON body into the target type: owner.pid: invalid type: string \"x\", expected u32 at line 1 column 20"),
            Some("owner.pid".into())
        );
        assert_eq!(
            field_of("Failed to deserialize the JSON body into the target type: missing field `recipe` at line 1 column 2"),
            Some("recipe".into())
        );
        assert_eq!(
            field_of(
                "Failed to deserialize query string: unknown field `foo`, expected one of `kind`"
            ),
            Some("foo".into())
        );
        assert_eq!(
            field_of("Failed to deserialize query string: limit: invalid digit found in string"),
            Some("limit".into())
        );
        assert_eq!(field_of("no route for GET /x"), None);
    }

    #[test]
    fn the_allowed_methods_of_a_path_come_from_the_route_table() {
        assert_eq!(allowed_methods("/api/v1/apply"), ["POST"]);
        assert_eq!(allowed_methods("/api/v1/runs/r1"), ["GET", "DELETE"]);
        assert!(allowed_methods("/api/v1/runs/r1/x").is_empty());
        assert!(!path_matches("/api/v1/runs/{id}", "/api/v1/runs/"));
    }

    #[test]
    fn kinds_parse_in_every_spelling_the_cli_accepts() {
        assert_eq!(parse_kind("warmapps"), Some(Kind::WarmApp));
        assert_eq!(parse_kind("WarmApp"), Some(Kind::WarmApp));
        assert_eq!(parse_kind("runs"), Some(Kind::Run));
        assert_eq!(parse_kind("slotpool"), Some(Kind::SlotPool));
        assert_eq!(parse_kind("pods"), None);
    }

    #[test]
    fn every_route_states_its_access_and_the_issue_19_scopes_hold() {
        let table = routes_with_access();
        let access = |m: &str, p: &str| {
            table
                .iter()
                .find(|(tm, tp, _)| tm == m && tp == p)
                .map(|(_, _, a)| *a)
                .unwrap_or_else(|| panic!("{m} {p} is not routed"))
        };
        for p in ["/healthz", "/readyz", "/metrics"] {
            assert_eq!(access("GET", p), Access::Open);
        }
        for (m, p, _) in &table {
            if m == "GET" && !["/healthz", "/readyz", "/metrics"].contains(&p.as_str()) {
                assert_eq!(access(m, p), Access::Needs(Scope::Read), "{p}");
            }
        }
        for p in [
            "/api/v1/runs",
            "/api/v1/runs/{id}/heartbeat",
            "/api/v1/runs/{id}/report",
            "/api/v1/runs/{id}/finish",
            "/api/v1/runs/{id}/deploy",
            "/api/v1/slotpools/{pool}/acquire",
            "/api/v1/slotpools/{pool}/heartbeat",
            "/api/v1/slotpools/{pool}/release",
        ] {
            assert_eq!(access("POST", p), Access::Needs(Scope::Ci), "{p}");
        }
        for (m, p) in [
            ("POST", "/api/v1/apply"),
            ("DELETE", "/api/v1/warmapps/{name}"),
            ("POST", "/api/v1/warmapps/{name}/promote"),
            ("POST", "/api/v1/warmapps/{name}/rollback"),
            ("POST", "/api/v1/sweep"),
            ("POST", "/api/v1/nightly"),
            ("DELETE", "/api/v1/runs/{id}"),
            ("DELETE", "/api/v1/slotpools/{pool}"),
        ] {
            assert_eq!(access(m, p), Access::Needs(Scope::Admin), "{m} {p}");
        }
        assert_eq!(access_of(&Method::HEAD, Some("/healthz")), Access::Open);
        assert_eq!(
            access_of(&Method::PUT, Some("/healthz")),
            Access::Needs(Scope::Read)
        );
        assert_eq!(access_of(&Method::GET, None), Access::Needs(Scope::Read));
    }

    #[test]
    fn the_mutation_list_matches_the_recorded_routes() {
        let recorded: std::collections::BTreeSet<(String, String)> = route_table()
            .into_iter()
            .filter(|(m, _)| m != "GET" && m != "HEAD")
            .collect();
        let listed: std::collections::BTreeSet<(String, String)> = MUTATIONS
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        assert_eq!(recorded, listed, "add new mutating routes to MUTATIONS");
    }
}
