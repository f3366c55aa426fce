//! `/api/v1/recipes`: list and read the recipes the catalogue knows.

use axum::extract::{Path, State as AxumState};
use axum::Json;

use super::{get_or_404, store_error, ApiError, Routes, State};

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
    get_or_404(&s.store, &name).map(Json)
}
