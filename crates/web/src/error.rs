//! What a page handler's failure becomes: a redirect (to a sign-in page), or an error page in
//! the browser's language. The page itself is rendered by the layer in `lib.rs`, which knows
//! the language; a handler only says the status and the message.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use fidelis_app::AppError;

#[derive(Debug)]
pub enum WebError {
    /// 303 to this path.
    Redirect(String),
    /// A status and a message key of the catalogue.
    Status(StatusCode, &'static str),
    /// A status and a message in the words of the use case (validation, conflicts).
    Page(StatusCode, String),
}

impl WebError {
    pub fn status(code: StatusCode, key: &'static str) -> WebError {
        WebError::Status(code, key)
    }
    pub fn not_found() -> WebError {
        WebError::Status(StatusCode::NOT_FOUND, "err_not_found")
    }
}

/// Carried by an error response to the layer that renders it.
#[derive(Debug, Clone)]
pub enum ErrorMessage {
    Key(&'static str),
    Text(String),
}

impl From<AppError> for WebError {
    fn from(e: AppError) -> Self {
        match e {
            AppError::Unauthorized => {
                WebError::Status(StatusCode::UNAUTHORIZED, "err_unauthorized")
            }
            AppError::Forbidden(_) => WebError::Status(StatusCode::FORBIDDEN, "err_forbidden"),
            AppError::NotFound(_) => WebError::not_found(),
            AppError::Invalid { field, reason } => WebError::Page(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("{field}: {reason}"),
            ),
            AppError::Conflict(m) | AppError::IdempotencyConflict(m) => {
                WebError::Page(StatusCode::CONFLICT, m)
            }
            AppError::Unprocessable(m) => WebError::Page(StatusCode::UNPROCESSABLE_ENTITY, m),
            AppError::Busy(_) => WebError::Status(StatusCode::SERVICE_UNAVAILABLE, "err_busy"),
            AppError::TooManyRequests { detail, .. } => {
                WebError::Page(StatusCode::TOO_MANY_REQUESTS, detail)
            }
            AppError::Internal(m) => {
                tracing::error!(error = %m, "internal error on a page");
                WebError::Status(StatusCode::INTERNAL_SERVER_ERROR, "err_internal")
            }
        }
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        match self {
            WebError::Redirect(to) => redirect(&to),
            WebError::Status(code, key) => {
                let mut r = (code, key).into_response();
                r.extensions_mut().insert(ErrorMessage::Key(key));
                r
            }
            WebError::Page(code, text) => {
                let mut r = (code, text.clone()).into_response();
                r.extensions_mut().insert(ErrorMessage::Text(text));
                r
            }
        }
    }
}

/// 303 See Other: after a form, the browser GETs the next page.
pub fn redirect(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = header::HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}
