//! Extractors: the caller's key ([`Auth`]), and a write's JSON body with its idempotency key
//! ([`Write`]). Every rejection is a problem document.

use crate::AppState;
use crate::problem::Problem;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use fidelis_app::Principal;
use fidelis_store::IdemKey;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

pub struct Auth(pub Principal);

impl FromRequestParts<AppState> for Auth {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let secret = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or_else(|| Problem::from(fidelis_app::AppError::Unauthorized))?;
        Ok(Auth(state.app.authenticate(secret).await?))
    }
}

/// Longest `Idempotency-Key` accepted.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// A write: its parsed JSON body and, when sent, its idempotency key bound to a hash of the
/// method, path and exact body.
pub struct Write<T> {
    pub body: T,
    pub idem: Option<IdemKey>,
}

impl<T: DeserializeOwned> FromRequest<AppState> for Write<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !content_type.starts_with("application/json") {
            return Err(Problem::new(
                axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
                "send the body as JSON with `Content-Type: application/json`",
            ));
        }
        let key = match req.headers().get("idempotency-key") {
            None => None,
            Some(v) => {
                let k = v
                    .to_str()
                    .map_err(|_| Problem::invalid("Idempotency-Key", "must be printable ASCII"))?
                    .trim();
                if k.is_empty() || k.len() > MAX_IDEMPOTENCY_KEY_LEN {
                    return Err(Problem::invalid(
                        "Idempotency-Key",
                        format!("must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} characters"),
                    ));
                }
                Some(k.to_string())
            }
        };
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            let status = e.status();
            if status == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                let limit = if path == "/api/v1/events/batch" {
                    crate::MAX_BATCH_BODY_BYTES
                } else {
                    crate::MAX_BODY_BYTES
                };
                Problem::new(
                    status,
                    "payload-too-large",
                    "Payload too large",
                    format!("the body is over {limit} bytes"),
                )
            } else {
                Problem::malformed(e.body_text())
            }
        })?;
        let body: T = parse_json(&bytes)?;
        let idem = key.map(|key| {
            let mut h = Sha256::new();
            h.update(method.as_str().as_bytes());
            h.update(b" ");
            h.update(path.as_bytes());
            h.update(b"\n");
            h.update(&bytes);
            IdemKey {
                key,
                request_hash: hex::encode(h.finalize()),
            }
        });
        Ok(Write { body, idem })
    }
}

/// Query parameters; a query that does not parse is a 422 problem naming it.
pub struct Q<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<AppState> for Q<T> {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Q(q.0))
            .map_err(|e| Problem::invalid("query", e.body_text()))
    }
}

/// Parses a JSON body; a value of the wrong shape is a 422 naming the field's path
/// (`lines[0].quantity`), text that is not JSON a 400.
///
/// The body is parsed by serde alone first, and again with the path tracked only when that
/// fails: tracking it allocated a string per member read, 8 % of the HTTP side's samples for
/// a purchase, and a body that parses needs no path.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    if let Ok(parsed) = serde_json::from_slice(bytes) {
        return Ok(parsed);
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed: Result<T, _> = serde_path_to_error::deserialize(&mut de);
    if parsed.is_ok() {
        // Trailing characters after the JSON value are malformed input too.
        de.end()
            .map_err(|e| Problem::malformed(format!("the body is not valid JSON: {e}")))?;
    }
    parsed.map_err(json_problem)
}

/// The problem a JSON value of the wrong shape (a 422 naming the field's path, or `body`) or
/// text that is not JSON (a 400) makes.
pub(crate) fn json_problem(e: serde_path_to_error::Error<serde_json::Error>) -> Problem {
    let path = e.path().to_string();
    let inner = e.into_inner();
    match inner.classify() {
        serde_json::error::Category::Data => {
            let field = if path == "." || path.is_empty() {
                "body".to_string()
            } else {
                path
            };
            Problem::invalid(field, inner.to_string())
        }
        _ => Problem::malformed(format!("the body is not valid JSON: {inner}")),
    }
}
