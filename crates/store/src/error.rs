//! Storage errors, classified once: the application maps each kind to its answer.

use crate::conn::{DbError, DbErrorKind};

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The thing named does not exist for this tenant.
    #[error("{0} not found")]
    NotFound(String),
    /// The request conflicts with what is stored (idempotency key reused with another body,
    /// a unique e-mail taken, not enough points).
    #[error("{0}")]
    Conflict(String),
    /// The request is well formed but breaks a business rule (refund above the order).
    #[error("{0}")]
    Unprocessable(String),
    /// Too much work queued, or the database asked to retry: try again shortly.
    #[error("busy: {0}")]
    Busy(String),
    #[error("database error: {0}")]
    Db(DbError),
}

impl From<DbError> for StoreError {
    fn from(e: DbError) -> Self {
        match e.kind {
            DbErrorKind::Retry => {
                // The database's own words stay in the log; clients are told to retry.
                tracing::warn!(error = %e.message, "the database asked to retry");
                StoreError::Busy(
                    "the database was contended (a deadlock or serialization conflict); retry"
                        .into(),
                )
            }
            _ => StoreError::Db(e),
        }
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;
