//! `/api/v1/program` (the programme's settings) and `/api/v1/keys` (API keys).

use crate::AppState;
use crate::extract::{Auth, Write};
use crate::problem::Problem;
use crate::wire::{to_value, written};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{delete, get};
use axum::{Json, Router};
use fidelis_core::ProgramSettings;
use serde::Deserialize;
use serde_json::{Value, json};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/program", get(show).put(update))
        .route("/api/v1/keys", get(list_keys).post(create_key))
        .route("/api/v1/keys/{id}", delete(revoke_key))
}

async fn show(State(s): State<AppState>, Auth(p): Auth) -> Result<Json<Value>, Problem> {
    let (settings, version) = s.app.program(&p).await?;
    Ok(Json(json!({ "settings": settings, "version": version })))
}

async fn update(
    State(s): State<AppState>,
    Auth(p): Auth,
    w: Write<ProgramSettings>,
) -> Result<Response, Problem> {
    let (settings, version, replayed) = s.app.put_program(&p, w.body, w.idem).await?;
    Ok(written(
        StatusCode::OK,
        json!({ "settings": settings, "version": version }),
        replayed,
    ))
}

async fn list_keys(State(s): State<AppState>, Auth(p): Auth) -> Result<Json<Value>, Problem> {
    Ok(Json(to_value(&s.app.list_keys(&p).await?)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    scope: String,
    label: Option<String>,
}

async fn create_key(
    State(s): State<AppState>,
    Auth(p): Auth,
    w: Write<NewKey>,
) -> Result<Response, Problem> {
    let (record, secret) = s
        .app
        .create_key(&p, &w.body.scope, w.body.label.as_deref())
        .await?;
    let mut body = to_value(&record);
    body["key"] = Value::String(secret);
    // Key creation is not replayed: a stored answer would keep the secret.
    Ok(written(StatusCode::CREATED, body, false))
}

async fn revoke_key(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    s.app.revoke_key(&p, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
