//! The API's error answers: [`ApiError`] (`{"error": {"code", "message", "field"?}}` with a fitting status), how a store failure maps to one, and the JSON [`Body`] extractor whose rejections are API errors too.

use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// An error answer: `{"error": {"code", "message", "field"?}}` with `status`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
    pub(super) field: Option<String>,
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

/// The stored `R` named `name`; 404 `Kind/name was not found` when there is none.
///
/// # Errors
/// 404, or the store's error as [`store_error`] maps it.
pub(crate) fn get_or_404<R: crd::Resource>(
    store: &state::Store,
    name: &str,
) -> Result<R, ApiError> {
    match store.get_opt::<R>(name) {
        Ok(Some(obj)) => Ok(obj),
        Ok(None) => Err(ApiError::not_found(format!(
            "{}/{name} was not found",
            R::KIND.as_str()
        ))),
        Err(e) => Err(store_error(&e)),
    }
}

/// A JSON body whose rejections (malformed, wrong fields, wrong content type, too large) are
/// the API's JSON errors, naming the field at fault when serde does.
pub(crate) struct Body<T>(pub T);

impl<T, S> axum::extract::FromRequest<S> for Body<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(r) => {
                let message = r.body_text();
                let field = field_of(&message);
                let error = ApiError::new(r.status(), message);
                Err(match field {
                    Some(f) => error.with_field(f),
                    None => error,
                })
            }
        }
    }
}

/// Parses a humantime duration field.
pub(crate) fn duration(field: &str, text: Option<&str>) -> Result<Option<Duration>, ApiError> {
    text.map(|t| {
        humantime::parse_duration(t)
            .map_err(|e| ApiError::invalid(field, format!("{field}: invalid duration {t:?}: {e}")))
    })
    .transpose()
}
