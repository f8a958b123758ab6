//! `/api/v1/events`: purchases, refunds and custom events.

use crate::AppState;
use crate::extract::{Auth, Write};
use crate::problem::Problem;
use crate::wire::{money, to_value, written};
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;
use fidelis_core::event::{CustomInput, PurchaseInput, RefundInput};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/events/purchase", post(purchase))
        .route("/api/v1/events/refund", post(refund))
        .route("/api/v1/events/custom", post(custom))
        .route(
            "/api/v1/events/batch",
            post(crate::batch::batch).layer(DefaultBodyLimit::max(crate::MAX_BATCH_BODY_BYTES)),
        )
}

/// A first recording answers 201; a resend of a known order or refund id answers 200.
fn status(duplicate: bool) -> StatusCode {
    if duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    }
}

async fn purchase(
    State(s): State<AppState>,
    Auth(p): Auth,
    w: Write<PurchaseInput>,
) -> Result<Response, Problem> {
    let (out, replayed) = s.app.purchase(&p, w.body, w.idem).await?;
    Ok(written(status(out.duplicate), &out, replayed))
}

async fn refund(
    State(s): State<AppState>,
    Auth(p): Auth,
    w: Write<RefundInput>,
) -> Result<Response, Problem> {
    let (out, replayed) = s.app.refund(&p, w.body, w.idem).await?;
    let (settings, _) = s.app.program(&p).await?;
    Ok(written(
        status(out.duplicate),
        money(to_value(&out), settings.currency),
        replayed,
    ))
}

async fn custom(
    State(s): State<AppState>,
    Auth(p): Auth,
    w: Write<CustomInput>,
) -> Result<Response, Problem> {
    let (out, replayed) = s.app.custom(&p, w.body, w.idem).await?;
    Ok(written(StatusCode::CREATED, &out, replayed))
}
