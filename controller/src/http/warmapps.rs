//! `/api/v1/warmapps`: list, read (env values redacted unless the caller is `admin`) and delete warm apps.

use axum::extract::{Extension, Path, State as AxumState};
use axum::Json;
use crd::{Kind, WarmApp};
use state::history::ObjectRef;

use super::history::record_delete;
use super::{get_or_404, store_error, ApiError, Routes, State};
use crate::access::{self, Principal, Scope};

/// The warm-app routes.
pub(crate) fn routes() -> Routes {
    Routes::new()
        .get("/api/v1/warmapps", list_warmapps)
        .get("/api/v1/warmapps/{name}", get_warmapp)
        .delete("/api/v1/warmapps/{name}", Scope::Admin, delete_warmapp)
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
    let app = get_or_404(&s.store, &name)?;
    Ok(Json(shown(app, caller.map(|Extension(p)| p).as_ref())))
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
