//! `/api/v1/members`: enrol, look up, change, list; balances, ledger history, adjustments.

use crate::AppState;
use crate::extract::{Auth, Q, Write};
use crate::problem::Problem;
use crate::wire::{money, to_value, written};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use fidelis_app::{AdjustmentInput, MemberInput, Principal};
use fidelis_store::LookupBy;
use serde::Deserialize;
use serde_json::Value;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/members", post(create).get(list))
        .route("/api/v1/members/lookup", get(lookup))
        .route("/api/v1/members/{id}", get(show).patch(patch))
        .route("/api/v1/members/{id}/balance", get(balance))
        .route("/api/v1/members/{id}/ledger", get(ledger))
        .route("/api/v1/members/{id}/adjustments", post(adjust))
}

/// Default and largest page sizes of lists.
pub const DEFAULT_PAGE: i64 = 50;

#[derive(Deserialize)]
pub struct PageQuery {
    pub cursor: Option<String>,
    pub limit: Option<i64>,
}

impl PageQuery {
    pub fn limit(&self) -> Result<i64, Problem> {
        match self.limit {
            None => Ok(DEFAULT_PAGE),
            Some(l) if (1..=fidelis_store::MAX_PAGE).contains(&l) => Ok(l),
            Some(_) => Err(Problem::invalid(
                "limit",
                format!("must be 1 to {}", fidelis_store::MAX_PAGE),
            )),
        }
    }
}

async fn with_money(s: &AppState, p: &Principal, v: Value) -> Result<Value, Problem> {
    let (settings, _) = s.app.program(p).await?;
    Ok(money(v, settings.currency))
}

async fn create(
    State(s): State<AppState>,
    Auth(p): Auth,
    w: Write<MemberInput>,
) -> Result<Response, Problem> {
    let (m, replayed) = s.app.create_member(&p, w.body, w.idem).await?;
    Ok(written(
        StatusCode::CREATED,
        with_money(&s, &p, to_value(&m)).await?,
        replayed,
    ))
}

async fn patch(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    w: Write<MemberInput>,
) -> Result<Response, Problem> {
    let (m, replayed) = s.app.patch_member(&p, &id, w.body, w.idem).await?;
    Ok(written(
        StatusCode::OK,
        with_money(&s, &p, to_value(&m)).await?,
        replayed,
    ))
}

async fn show(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, Problem> {
    let m = s.app.member(&p, &id).await?;
    Ok(Json(with_money(&s, &p, to_value(&m)).await?))
}

#[derive(Deserialize)]
struct LookupQuery {
    external_id: Option<String>,
    email: Option<String>,
    phone: Option<String>,
}

async fn lookup(
    State(s): State<AppState>,
    Auth(p): Auth,
    Q(q): Q<LookupQuery>,
) -> Result<Json<Value>, Problem> {
    let (by, value) = match (q.external_id, q.email, q.phone) {
        (Some(v), None, None) => (LookupBy::ExternalId, v),
        (None, Some(v), None) => (LookupBy::Email, v),
        (None, None, Some(v)) => (LookupBy::Phone, v),
        _ => {
            return Err(Problem::invalid(
                "query",
                "give exactly one of external_id, email or phone",
            ));
        }
    };
    let m = s.app.lookup_member(&p, by, &value).await?;
    Ok(Json(with_money(&s, &p, to_value(&m)).await?))
}

async fn list(
    State(s): State<AppState>,
    Auth(p): Auth,
    Q(q): Q<PageQuery>,
) -> Result<Json<Value>, Problem> {
    let limit = q.limit()?;
    let page = s.app.list_members(&p, q.cursor, limit).await?;
    Ok(Json(with_money(&s, &p, to_value(&page)).await?))
}

async fn balance(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, Problem> {
    Ok(Json(to_value(&s.app.balance(&p, &id).await?)))
}

async fn ledger(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    Q(q): Q<PageQuery>,
) -> Result<Json<Value>, Problem> {
    let limit = q.limit()?;
    Ok(Json(to_value(
        &s.app.history(&p, &id, q.cursor.as_deref(), limit).await?,
    )))
}

async fn adjust(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    w: Write<AdjustmentInput>,
) -> Result<Response, Problem> {
    let (out, replayed) = s.app.adjust(&p, &id, w.body, w.idem).await?;
    Ok(written(StatusCode::CREATED, &out, replayed))
}
