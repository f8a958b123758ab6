//! `/api/v1/rewards` (the catalogue), `/api/v1/members/{id}/redemptions` and `/coupons`, and
//! `/api/v1/coupons` for the till and the web shop: validate, redeem, cancel.

use crate::AppState;
use crate::extract::{Auth, MAX_IDEMPOTENCY_KEY_LEN, Q, Write};
use crate::members::PageQuery;
use crate::problem::Problem;
use crate::wire::{money, to_value, written};
use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use fidelis_app::Principal;
use fidelis_app::rewards::{CouponCheckInput, CouponRedeemInput, RedemptionInput};
use fidelis_core::rewards::RewardInput;
use fidelis_store::IdemKey;
use serde_json::Value;
use sha2::{Digest, Sha256};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/rewards", get(list).post(create))
        .route("/api/v1/rewards/{id}", get(show).put(update))
        .route("/api/v1/members/{id}/redemptions", post(redeem))
        .route("/api/v1/members/{id}/coupons", get(member_coupons))
        .route(
            "/api/v1/members/{id}/coupons/{code}/cancel",
            post(cancel_member_coupon),
        )
        .route("/api/v1/coupons/validate", post(validate))
        .route("/api/v1/coupons/{code}/redeem", post(redeem_coupon))
        .route("/api/v1/coupons/{code}/cancel", post(cancel_coupon))
}

/// An `Idempotency-Key` on a request without a body, bound to its method and path.
pub struct IdemOnly(pub Option<IdemKey>);

impl FromRequestParts<AppState> for IdemOnly {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, Self::Rejection> {
        let Some(v) = parts.headers.get("idempotency-key") else {
            return Ok(IdemOnly(None));
        };
        let key = v
            .to_str()
            .map_err(|_| Problem::invalid("Idempotency-Key", "must be printable ASCII"))?
            .trim()
            .to_string();
        if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN {
            return Err(Problem::invalid(
                "Idempotency-Key",
                format!("must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} characters"),
            ));
        }
        let mut h = Sha256::new();
        h.update(parts.method.as_str().as_bytes());
        h.update(b" ");
        h.update(parts.uri.path().as_bytes());
        Ok(IdemOnly(Some(IdemKey {
            key,
            request_hash: hex::encode(h.finalize()),
        })))
    }
}

async fn currency(s: &AppState, p: &Principal) -> Result<fidelis_core::Currency, Problem> {
    Ok(s.app.program(p).await?.0.currency)
}

async fn list(
    State(s): State<AppState>,
    Auth(p): Auth,
    Q(q): Q<PageQuery>,
) -> Result<Json<Value>, Problem> {
    let limit = q.limit()?;
    let page = s.app.list_rewards(&p, q.cursor.clone(), limit).await?;
    Ok(Json(money(to_value(&page), currency(&s, &p).await?)))
}

async fn create(
    State(s): State<AppState>,
    Auth(p): Auth,
    w: Write<RewardInput>,
) -> Result<Response, Problem> {
    let (r, replayed) = s.app.create_reward(&p, w.body, w.idem).await?;
    let cur = currency(&s, &p).await?;
    Ok(written(
        StatusCode::CREATED,
        money(to_value(&r), cur),
        replayed,
    ))
}

async fn show(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, Problem> {
    let r = s.app.reward(&p, &id).await?;
    Ok(Json(money(to_value(&r), currency(&s, &p).await?)))
}

async fn update(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    w: Write<RewardInput>,
) -> Result<Response, Problem> {
    let (r, replayed) = s.app.update_reward(&p, &id, w.body, w.idem).await?;
    let cur = currency(&s, &p).await?;
    Ok(written(StatusCode::OK, money(to_value(&r), cur), replayed))
}

async fn redeem(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    w: Write<RedemptionInput>,
) -> Result<Response, Problem> {
    let (out, replayed) = s.app.redeem_reward(&p, &id, w.body, w.idem).await?;
    let cur = currency(&s, &p).await?;
    Ok(written(
        StatusCode::CREATED,
        money(to_value(&out), cur),
        replayed,
    ))
}

async fn member_coupons(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    Q(q): Q<PageQuery>,
) -> Result<Json<Value>, Problem> {
    let limit = q.limit()?;
    let page = s
        .app
        .member_coupons(&p, &id, q.cursor.clone(), limit)
        .await?;
    Ok(Json(to_value(&page)))
}

async fn validate(
    State(s): State<AppState>,
    Auth(p): Auth,
    w: Write<CouponCheckInput>,
) -> Result<Json<Value>, Problem> {
    let check = s.app.validate_coupon(&p, w.body).await?;
    Ok(Json(money(to_value(&check), currency(&s, &p).await?)))
}

async fn redeem_coupon(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(code): Path<String>,
    w: Write<CouponRedeemInput>,
) -> Result<Response, Problem> {
    let (out, replayed) = s.app.redeem_coupon(&p, &code, w.body, w.idem).await?;
    let cur = currency(&s, &p).await?;
    Ok(written(
        StatusCode::OK,
        money(to_value(&out), cur),
        replayed,
    ))
}

async fn cancel_coupon(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(code): Path<String>,
    IdemOnly(idem): IdemOnly,
) -> Result<Response, Problem> {
    let (out, replayed) = s.app.cancel_coupon(&p, &code, None, idem).await?;
    Ok(written(StatusCode::OK, &out, replayed))
}

async fn cancel_member_coupon(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path((id, code)): Path<(String, String)>,
    IdemOnly(idem): IdemOnly,
) -> Result<Response, Problem> {
    let (out, replayed) = s.app.cancel_coupon(&p, &code, Some(&id), idem).await?;
    Ok(written(StatusCode::OK, &out, replayed))
}
