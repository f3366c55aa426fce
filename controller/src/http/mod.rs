//! The daemon's HTTP API: routes, the access layer (who may do what), JSON errors and body limits, health, readiness, warm apps, history.
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
//! - Bodies are limited: [`BODY_LIMIT`] by default, [`APPLY_BODY_LIMIT`] for a state file.
//!
//! Routes are registered through [`Routes`], which records each (method, path, access): the
//! API tests take every route from [`routes_with_access`] and send each with no token, a wrong
//! one and each scope; [`MUTATIONS`] is checked against the recorded mutations.

mod nightly;
mod promote;
mod runs;
pub mod status_page;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{
    DefaultBodyLimit, Extension, MatchedPath, Path, Query, Request, State as AxumState,
};
use axum::handler::Handler;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use crd::names::BaseDomain;
use crd::{Kind, WarmApp};
use metrics::Metrics;
use serde::Deserialize;
use state::history::{Entry, NewEntry, ObjectRef, Query as HistoryQuery};
use state::Store;
use tokio_util::sync::CancellationToken;

use crate::access::{self, Access, Keyring, Principal, Scope};
use crate::runtime::Handle;
use crate::statefile;
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
}

/// An error answer: `{"error": {"code", "message", "field"?}}` with `status`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
    field: Option<String>,
}

impl ApiError {
    /// An error with `status` and `message`.
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            field: None,
        }
    }

    /// 400 naming the field at fault.
    pub(crate) fn invalid(field: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message).with_field(field)
    }

    /// 404.
    pub(crate) fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    /// 500.
    pub(crate) fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// Names the field at fault.
    pub(crate) fn with_field(mut self, field: impl Into<String>) -> ApiError {
        self.field = Some(field.into());
        self
    }
}

/// The machine-readable code of a status.
pub(crate) fn code_of(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        408 => "Timeout",
        409 => "Conflict",
        413 => "PayloadTooLarge",
        415 => "UnsupportedMediaType",
        422 => "Invalid",
        502 => "BadGateway",
        503 => "Unavailable",
        s if s >= 500 => "Internal",
        _ => "Error",
    }
}

/// The field a serde or axum rejection message names, if any: the path before the first
/// `: ` after axum's prefix (`… target type: spec.version: invalid type …`), or the name in
/// ``missing field `x` `` / ``unknown field `x` ``.
pub(crate) fn field_of(message: &str) -> Option<String> {
    for marker in ["missing field `", "unknown field `"] {
        if let Some(i) = message.find(marker) {
            let rest = &message[i + marker.len()..];
            if let Some(end) = rest.find('`') {
                return Some(rest[..end].to_string());
            }
        }
    }
    for prefix in [
        "into the target type: ",
        "Failed to deserialize query string: ",
    ] {
        if let Some(i) = message.find(prefix) {
            let rest = &message[i + prefix.len()..];
            if let Some((path, _)) = rest.split_once(": ") {
                let plausible = !path.is_empty()
                    && path
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '[' | ']'));
                if plausible && path != "." {
                    return Some(path.to_string());
                }
            }
        }
    }
    None
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = serde_json::json!({
            "code": code_of(self.status),
            "message": self.message,
        });
        if let Some(field) = self.field {
            error["field"] = serde_json::Value::String(field);
        }
        (self.status, Json(serde_json::json!({ "error": error }))).into_response()
    }
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
        .open("/healthz", healthz)
        .open("/readyz", readyz)
        .open("/metrics", metrics_text)
        .get("/api/v1/warmapps", list_warmapps)
        .get("/api/v1/warmapps/{name}", get_warmapp)
        .delete("/api/v1/warmapps/{name}", Scope::Admin, delete_warmapp)
        .get("/api/v1/recipes", list_recipes)
        .get("/api/v1/recipes/{name}", get_recipe)
        .get("/api/v1/history", history)
        .post_limited("/api/v1/apply", Scope::Admin, apply, APPLY_BODY_LIMIT)
        .merge(runs::routes())
        .merge(promote::routes())
        .merge(nightly::routes())
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

/// The whole API: routes, then the access layer, then the JSON error layer, then the access
/// log (outermost).
pub(crate) fn router(state: State, gate: Gate) -> Router {
    let gate = Arc::new(gate);
    routes()
        .router
        .layer(axum::middleware::from_fn_with_state(gate, require_access))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(json_errors))
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

/// Serves `state` behind `gate` on `listener` until `stop`.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    state: State,
    gate: Gate,
    stop: CancellationToken,
) {
    let result = axum::serve(listener, router(state, gate))
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "http endpoint failed");
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: 200 when the store reads, Docker answers a ping and the warm-app controller
/// finished its first pass; else 503. The body names each check.
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

/// A store failure: 404 for a missing object, 409 for a lost race, else 500.
pub(crate) fn store_error(e: &state::Error) -> ApiError {
    let status = match e {
        state::Error::ObjectNotFound { .. } => StatusCode::NOT_FOUND,
        state::Error::ResourceVersionMismatched { .. }
        | state::Error::ObjectAlreadyExists { .. } => StatusCode::CONFLICT,
        state::Error::NameRejected { .. } => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(status, crate::errors::chain(e))
}

/// `app` as `caller` may see it: env values redacted unless the caller is `admin` (a request
/// without a principal — never from the router — is redacted too).
pub(crate) fn shown(mut app: WarmApp, caller: Option<&Principal>) -> WarmApp {
    if !caller.is_some_and(Principal::sees_env_values) {
        access::redact_warmapp(&mut app);
    }
    app
}

async fn list_warmapps(
    AxumState(s): AxumState<State>,
    caller: Option<Extension<Principal>>,
) -> Result<Json<Vec<WarmApp>>, ApiError> {
    let list = s.store.list::<WarmApp>().map_err(|e| store_error(&e))?;
    let caller = caller.map(|Extension(p)| p);
    Ok(Json(
        list.items
            .into_iter()
            .map(|a| shown(a, caller.as_ref()))
            .collect(),
    ))
}

async fn get_warmapp(
    AxumState(s): AxumState<State>,
    caller: Option<Extension<Principal>>,
    Path(name): Path<String>,
) -> Result<Json<WarmApp>, ApiError> {
    match s.store.get_opt::<WarmApp>(&name) {
        Ok(Some(app)) => Ok(Json(shown(app, caller.map(|Extension(p)| p).as_ref()))),
        Ok(None) => Err(ApiError::not_found(format!("WarmApp/{name} was not found"))),
        Err(e) => Err(store_error(&e)),
    }
}

async fn list_recipes(AxumState(s): AxumState<State>) -> Result<Json<Vec<crd::Recipe>>, ApiError> {
    let list = s.store.list::<crd::Recipe>().map_err(|e| store_error(&e))?;
    Ok(Json(list.items))
}

async fn get_recipe(
    AxumState(s): AxumState<State>,
    Path(name): Path<String>,
) -> Result<Json<crd::Recipe>, ApiError> {
    match s.store.get_opt::<crd::Recipe>(&name) {
        Ok(Some(r)) => Ok(Json(r)),
        Ok(None) => Err(ApiError::not_found(format!("Recipe/{name} was not found"))),
        Err(e) => Err(store_error(&e)),
    }
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

/// `DELETE /api/v1/warmapps/{name}`: removes the warm app; the controller then tears down
/// the stack it deployed (as `--prune` does). Answers the deleted object.
async fn delete_warmapp(
    AxumState(s): AxumState<State>,
    Path(name): Path<String>,
) -> Result<Json<WarmApp>, ApiError> {
    // Admin only (the route's access): the answer keeps its env values.
    let app = s
        .store
        .delete::<WarmApp>(&name, None)
        .await
        .map_err(|e| store_error(&e))?;
    record_delete(&s.store, ObjectRef::new(Kind::WarmApp, &name)).await;
    Ok(Json(app))
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

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
