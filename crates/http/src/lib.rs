//! Fidelis's HTTP API: one router per resource, the one mapping from errors to
//! `application/problem+json`, the extractors that authenticate, parse JSON and read
//! `Idempotency-Key`, and the operational endpoints (`/healthz`, `/metrics`, OpenAPI, docs).
//! Handlers parse, call one use case of `fidelis_app::App`, and shape the answer.

mod batch;
mod events;
mod extract;
mod members;
mod metrics;
mod ops;
mod problem;
mod program;
mod rewards;
mod rules;
mod value;
mod wire;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use fidelis_app::App;
use std::sync::Arc;

pub use batch::MAX_BATCH_EVENTS;
pub use metrics::Metrics;
pub use problem::Problem;

/// Largest request body accepted (a 500-line order is about 60 KiB).
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// Largest body of `POST /api/v1/events/batch`: room for its 1,000 events of several lines each.
pub const MAX_BATCH_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Handlers' state. Every request clones it: the application sits behind one `Arc`, so that
/// is one count and not one per cache and service it holds.
#[derive(Clone)]
pub struct AppState {
    pub app: Arc<App>,
    pub metrics: Arc<Metrics>,
}

/// The whole HTTP surface. Tests call it with `oneshot`; `serve` binds it to a listener.
pub fn router(app: App) -> Router {
    let state = AppState {
        app: Arc::new(app),
        metrics: Arc::new(Metrics::default()),
    };
    Router::new()
        .merge(members::routes())
        .merge(events::routes())
        .merge(program::routes())
        .merge(ops::routes())
        // The admin console (/admin) and the member portal (/m/{tenant}).
        .merge(fidelis_web::router(App::clone(&state.app)))
        .merge(rewards::routes())
        .merge(rules::routes())
        .merge(value::routes())
        .fallback(|| async { Problem::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async {
            Problem::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
                "this endpoint does not accept that method; see /api/v1/openapi.json",
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}
