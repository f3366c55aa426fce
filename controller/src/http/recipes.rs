//! `/api/v1/recipes`: list and read the recipes the catalogue knows.

use axum::extract::{Path, State as AxumState};
use axum::Json;

use super::{store_error, ApiError, Routes, State};

/// The recipe routes (read only: recipes come from the state file).
pub(crate) fn routes() -> Routes {
    Routes::new()
        .get("/api/v1/recipes", list_recipes)
        .get("/api/v1/recipes/{name}", get_recipe)
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
