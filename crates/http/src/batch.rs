//! `POST /api/v1/events/batch`: up to [`MAX_BATCH_EVENTS`] purchases, refunds and custom events
//! in one request, each with its own answer. The events run concurrently, so they share the
//! store's group commits; one refused event never affects the others.
//!
//! With an `Idempotency-Key`, each event is recorded under `KEY#INDEX` with a hash of its own
//! body: a retried batch replays every event that was recorded and runs the rest.
//!
//! Each event's answer is written as JSON text once, straight from its outcome, and the
//! answers are joined into the response: building them as `serde_json::Value` trees first and
//! serializing those was a quarter of the request's CPU with 100 purchases a request.

use crate::AppState;
use crate::extract::{Auth, Write};
use crate::problem::Problem;
use crate::wire::{money, to_value};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use fidelis_app::{App, AppError, Principal};
use fidelis_core::event::{CustomInput, PurchaseInput, RefundInput};
use fidelis_store::IdemKey;
use serde::Deserialize;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::task::JoinSet;

/// Events accepted in one batch request.
pub const MAX_BATCH_EVENTS: usize = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchInput {
    events: Vec<Value>,
}

/// `v` as JSON text. Serializing our own plain structs cannot fail; `null` would show it did.
fn text<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

/// One event's answer: `(status, body as JSON text)`.
async fn one(
    app: std::sync::Arc<App>,
    p: Principal,
    event: Value,
    idem: Option<IdemKey>,
) -> (StatusCode, String) {
    let mut event = event;
    let kind = event
        .as_object_mut()
        .and_then(|o| o.remove("type"))
        .and_then(|t| t.as_str().map(str::to_string));
    let parse_err = |e: serde_json::Error| Problem::invalid("body", e.to_string());
    let result: Result<(StatusCode, String), Problem> = async {
        match kind.as_deref() {
            Some("purchase") => {
                let input: PurchaseInput = serde_json::from_value(event).map_err(parse_err)?;
                let (out, _) = app.purchase(&p, input, idem).await?;
                let status = if out.duplicate {
                    StatusCode::OK
                } else {
                    StatusCode::CREATED
                };
                Ok((status, text(&out)))
            }
            Some("refund") => {
                let input: RefundInput = serde_json::from_value(event).map_err(parse_err)?;
                let (out, _) = app.refund(&p, input, idem).await?;
                let (settings, _) = app.program(&p).await?;
                let status = if out.duplicate {
                    StatusCode::OK
                } else {
                    StatusCode::CREATED
                };
                Ok((status, text(&money(to_value(&out), settings.currency))))
            }
            Some(custom) => {
                // Any other type is a custom event of that type.
                if let Some(o) = event.as_object_mut() {
                    o.insert("type".into(), Value::String(custom.to_string()));
                }
                let input: CustomInput = serde_json::from_value(event).map_err(parse_err)?;
                let (out, _) = app.custom(&p, input, idem).await?;
                Ok((StatusCode::CREATED, text(&out)))
            }
            None => Err(Problem::invalid(
                "type",
                "each event needs a `type`: purchase, refund, or a custom event type",
            )),
        }
    }
    .await;
    match result {
        Ok(r) => r,
        Err(problem) => (problem.status, text(&problem.to_json())),
    }
}

pub async fn batch(
    State(s): State<AppState>,
    Auth(p): Auth,
    w: Write<BatchInput>,
) -> Result<Response, Problem> {
    let events = w.body.events;
    if events.is_empty() || events.len() > MAX_BATCH_EVENTS {
        return Err(Problem::invalid(
            "events",
            format!("give 1 to {MAX_BATCH_EVENTS} events, got {}", events.len()),
        ));
    }
    // Refuse a key without the right to write events before running anything.
    if p.scope == fidelis_app::Scope::Analytics {
        return Err(AppError::Forbidden(
            "recording events needs a key with scope admin, pos or ecommerce".into(),
        )
        .into());
    }
    let mut set = JoinSet::new();
    for (i, event) in events.into_iter().enumerate() {
        let idem = w.idem.as_ref().map(|k| {
            let mut h = Sha256::new();
            h.update(b"batch-event\n");
            h.update(event.to_string().as_bytes());
            IdemKey {
                key: format!("{}#{i}", k.key),
                request_hash: hex::encode(h.finalize()),
            }
        });
        let (app, p) = (s.app.clone(), p.clone());
        set.spawn(async move { (i, one(app, p, event, idem).await) });
    }
    let mut results: Vec<(usize, StatusCode, String)> = Vec::with_capacity(set.len());
    while let Some(done) = set.join_next().await {
        match done {
            Ok((i, (status, body))) => results.push((i, status, body)),
            Err(e) => {
                return Err(AppError::Internal(format!("a batch event's task failed: {e}")).into());
            }
        }
    }
    results.sort_by_key(|r| r.0);
    let failed = results.iter().filter(|r| !r.1.is_success()).count();
    // `{"results": [{"index": I, "status": S, "body": ...}, ...], "failed": N}`, each body
    // already JSON text.
    let mut body =
        String::with_capacity(results.iter().map(|r| r.2.len() + 40).sum::<usize>() + 32);
    body.push_str("{\"results\":[");
    for (k, (i, status, answer)) in results.iter().enumerate() {
        if k > 0 {
            body.push(',');
        }
        body.push_str(&format!(
            "{{\"index\":{i},\"status\":{},\"body\":",
            status.as_u16()
        ));
        body.push_str(answer);
        body.push('}');
    }
    body.push_str(&format!("],\"failed\":{failed}}}"));
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}
