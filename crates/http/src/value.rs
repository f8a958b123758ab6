//! `/api/v1/tiers` and a member's `/tier`; store credit, transfers and donations of a member;
//! `/api/v1/program/totals`; `/api/v1/plans` and a member's subscription.

use crate::AppState;
use crate::extract::{Auth, Q, Write};
use crate::members::PageQuery;
use crate::problem::Problem;
use crate::rewards::IdemOnly;
use crate::wire::{money, to_value, written};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use fidelis_app::Principal;
use fidelis_app::value::{CreditSpendInput, DonationInput, SubscriptionInput, TransferInput};
use fidelis_core::membership::PlanInput;
use fidelis_core::tiers::TierConfig;
use serde_json::{Value, json};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/tiers",
            get(tiers).put(put_tiers).delete(delete_tiers),
        )
        .route("/api/v1/members/{id}/tier", get(member_tier))
        .route("/api/v1/members/{id}/credit", get(credit))
        .route("/api/v1/members/{id}/credit/spend", post(spend))
        .route("/api/v1/members/{id}/transfers", post(transfer))
        .route("/api/v1/members/{id}/donations", post(donate))
        .route("/api/v1/program/totals", get(totals))
        .route("/api/v1/plans", get(plans).post(create_plan))
        .route("/api/v1/plans/{id}", get(plan).put(update_plan))
        .route("/api/v1/members/{id}/subscriptions", post(subscribe))
        .route("/api/v1/members/{id}/subscription", get(subscription))
}

async fn currency(s: &AppState, p: &Principal) -> Result<fidelis_core::Currency, Problem> {
    Ok(s.app.program(p).await?.0.currency)
}

async fn tiers(State(s): State<AppState>, Auth(p): Auth) -> Result<Json<Value>, Problem> {
    let t = s.app.tiers(&p).await?;
    Ok(Json(json!({ "tiers": t })))
}

async fn put_tiers(
    State(s): State<AppState>,
    Auth(p): Auth,
    w: Write<TierConfig>,
) -> Result<Response, Problem> {
    let (t, version, replayed) = s.app.put_tiers(&p, Some(w.body), w.idem).await?;
    Ok(written(
        StatusCode::OK,
        json!({ "tiers": t, "program_version": version }),
        replayed,
    ))
}

async fn delete_tiers(
    State(s): State<AppState>,
    Auth(p): Auth,
    IdemOnly(idem): IdemOnly,
) -> Result<Response, Problem> {
    let (t, version, replayed) = s.app.put_tiers(&p, None, idem).await?;
    Ok(written(
        StatusCode::OK,
        json!({ "tiers": t, "program_version": version }),
        replayed,
    ))
}

async fn member_tier(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, Problem> {
    Ok(Json(to_value(&s.app.member_tier(&p, &id).await?)))
}

async fn credit(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    Q(q): Q<PageQuery>,
) -> Result<Json<Value>, Problem> {
    let limit = q.limit()?;
    let v = s
        .app
        .member_credit(&p, &id, q.cursor.as_deref(), limit)
        .await?;
    Ok(Json(money(to_value(&v), currency(&s, &p).await?)))
}

async fn spend(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    w: Write<CreditSpendInput>,
) -> Result<Response, Problem> {
    let (out, replayed) = s.app.spend_credit(&p, &id, w.body, w.idem).await?;
    let cur = currency(&s, &p).await?;
    Ok(written(
        StatusCode::CREATED,
        money(to_value(&out), cur),
        replayed,
    ))
}

async fn transfer(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    w: Write<TransferInput>,
) -> Result<Response, Problem> {
    let (out, replayed) = s.app.transfer_points(&p, &id, w.body, w.idem).await?;
    Ok(written(StatusCode::CREATED, to_value(&out), replayed))
}

async fn donate(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    w: Write<DonationInput>,
) -> Result<Response, Problem> {
    let (out, replayed) = s.app.donate_points(&p, &id, w.body, w.idem).await?;
    Ok(written(StatusCode::CREATED, to_value(&out), replayed))
}

async fn totals(State(s): State<AppState>, Auth(p): Auth) -> Result<Json<Value>, Problem> {
    let t = s.app.program_totals(&p).await?;
    Ok(Json(money(to_value(&t), currency(&s, &p).await?)))
}

async fn plans(State(s): State<AppState>, Auth(p): Auth) -> Result<Json<Value>, Problem> {
    let page = s.app.plans(&p).await?;
    Ok(Json(money(to_value(&page), currency(&s, &p).await?)))
}

async fn plan(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, Problem> {
    let plan = s.app.plan(&p, &id).await?;
    Ok(Json(money(to_value(&plan), currency(&s, &p).await?)))
}

async fn create_plan(
    State(s): State<AppState>,
    Auth(p): Auth,
    w: Write<PlanInput>,
) -> Result<Response, Problem> {
    let (plan, replayed) = s.app.put_plan(&p, None, w.body, w.idem).await?;
    let cur = currency(&s, &p).await?;
    Ok(written(
        StatusCode::CREATED,
        money(to_value(&plan), cur),
        replayed,
    ))
}

async fn update_plan(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    w: Write<PlanInput>,
) -> Result<Response, Problem> {
    let (plan, replayed) = s.app.put_plan(&p, Some(&id), w.body, w.idem).await?;
    let cur = currency(&s, &p).await?;
    Ok(written(
        StatusCode::OK,
        money(to_value(&plan), cur),
        replayed,
    ))
}

async fn subscribe(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    w: Write<SubscriptionInput>,
) -> Result<Response, Problem> {
    let (sub, replayed) = s.app.subscription_event(&p, &id, w.body, w.idem).await?;
    Ok(written(StatusCode::OK, to_value(&sub), replayed))
}

async fn subscription(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, Problem> {
    let sub = s.app.subscription(&p, &id).await?;
    Ok(Json(json!({ "subscription": sub })))
}
