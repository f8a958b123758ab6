//! The one place errors become HTTP answers: RFC 9457 problem documents with a stable `type`,
//! a `title`, the `status` and a `detail` a developer can act on. Internal errors are logged
//! and never echoed.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use fidelis_app::AppError;
use serde_json::json;

#[derive(Debug, Clone)]
pub struct Problem {
    pub status: StatusCode,
    pub kind: &'static str,
    pub title: &'static str,
    pub detail: String,
    pub field: Option<String>,
    /// Seconds for `Retry-After` (429); 503 always says 1.
    pub retry_after: Option<u64>,
}

impl Problem {
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Problem {
        Problem {
            status,
            kind,
            title,
            detail: detail.into(),
            field: None,
            retry_after: None,
        }
    }
    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }
    pub fn malformed(detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed-request",
            "Malformed request",
            detail,
        )
    }
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Problem {
        let (field, reason) = (field.into(), reason.into());
        Problem {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            kind: "validation",
            title: "Invalid request",
            detail: format!("{field}: {reason}"),
            field: Some(field),
            retry_after: None,
        }
    }
}

impl From<AppError> for Problem {
    fn from(e: AppError) -> Self {
        match e {
            AppError::Unauthorized => Problem::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Unauthorized",
                "send a valid API key as `Authorization: Bearer <key>`",
            ),
            AppError::Forbidden(m) => {
                Problem::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden", m)
            }
            AppError::NotFound(what) => Problem::not_found(format!("{what} not found")),
            AppError::Invalid { field, reason } => Problem::invalid(field, reason),
            AppError::Conflict(m) => Problem::new(StatusCode::CONFLICT, "conflict", "Conflict", m),
            AppError::IdempotencyConflict(m) => Problem::new(
                StatusCode::CONFLICT,
                "idempotency-conflict",
                "Idempotency key reused",
                m,
            ),
            AppError::Unprocessable(m) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unprocessable",
                "Not possible",
                m,
            ),
            AppError::TooManyRequests {
                detail,
                retry_after_secs,
            } => Problem {
                retry_after: Some(retry_after_secs),
                ..Problem::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too-many-requests",
                    "Too many requests",
                    detail,
                )
            },
            AppError::Busy(m) => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "Busy, retry shortly",
                m,
            ),
            AppError::Internal(m) => {
                tracing::error!(error = %m, "internal error");
                Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "Internal error",
                    "an internal error occurred; it has been logged",
                )
            }
        }
    }
}

impl Problem {
    /// The problem document itself (also embedded in batch answers).
    pub fn to_json(&self) -> serde_json::Value {
        let mut body = json!({
            "type": format!("/problems/{}", self.kind),
            "title": self.title,
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        if let Some(field) = &self.field {
            body["errors"] = json!([{ "field": field, "reason": self.detail.split_once(": ").map_or(self.detail.as_str(), |(_, r)| r) }]);
        }
        body
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = self.to_json();
        let mut resp = (self.status, body.to_string()).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}
