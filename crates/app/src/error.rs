//! The use cases' errors: each says what went wrong in words a client developer can act on.

use fidelis_store::StoreError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum AppError {
    #[error("missing or invalid API key")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0} not found")]
    NotFound(String),
    /// A field of the request is invalid.
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("{0}")]
    Conflict(String),
    /// Same Idempotency-Key, different request.
    #[error("{0}")]
    IdempotencyConflict(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    Busy(String),
    /// Too many attempts (e.g. unknown coupon codes) from one key; retry after the delay.
    #[error("{detail}")]
    TooManyRequests {
        detail: String,
        retry_after_secs: u64,
    },
    /// Not shown to clients; logged.
    #[error("internal error: {0}")]
    Internal(String),
}

impl AppError {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> AppError {
        AppError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => AppError::NotFound(what),
            StoreError::Conflict(m) if m.contains("Idempotency-Key") => {
                AppError::IdempotencyConflict(m)
            }
            StoreError::Conflict(m) => AppError::Conflict(m),
            StoreError::Unprocessable(m) => AppError::Unprocessable(m),
            StoreError::Busy(m) => AppError::Busy(m),
            StoreError::Db(e) => AppError::Internal(e.to_string()),
        }
    }
}

impl From<fidelis_core::event::EventError> for AppError {
    fn from(e: fidelis_core::event::EventError) -> Self {
        AppError::Invalid {
            field: e.field,
            reason: e.reason,
        }
    }
}
