//! Operational endpoints: health, Prometheus metrics, the OpenAPI document and its docs page.

use crate::AppState;
use crate::extract::Auth;
use crate::problem::Problem;
use crate::wire::to_value;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::Value;

const OPENAPI: &str = include_str!("../assets/openapi.json");
const DOCS: &str = include_str!("../assets/docs.html");

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/healthz",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    r#"{"status":"ok"}"#,
                )
            }),
        )
        .route("/metrics", get(metrics))
        .route("/api/v1/verify", get(verify))
        .route("/api/v1/jobs/run", post(run_jobs))
        .route(
            "/api/v1/openapi.json",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }),
        )
        .route(
            "/api/docs",
            get(|| async { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], DOCS) }),
        )
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(s.app.store.metrics()),
    )
}

async fn verify(State(s): State<AppState>, Auth(p): Auth) -> Result<Json<Value>, Problem> {
    let report = s.app.verify(&p).await?;
    let mut v = to_value(&report);
    v["ok"] = Value::Bool(report.ok());
    Ok(Json(v))
}

/// Runs maturation and expiry for the caller's tenant now; takes no body.
async fn run_jobs(State(s): State<AppState>, Auth(p): Auth) -> Result<Json<Value>, Problem> {
    Ok(Json(to_value(&s.app.run_jobs_as(&p).await?)))
}
