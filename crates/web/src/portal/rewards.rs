//! The member's rewards: the catalogue with what they can afford first, redemption (points
//! debited, a coupon issued), their coupons, and one coupon with its QR code for the till.

use super::brand;
use crate::WebState;
use crate::error::{WebError, redirect};
use crate::render::{page, url_encode};
use crate::session::{Form, Member};
use axum::extract::{Path, State};
use axum::response::Response;
use fidelis_app::AppError;
use fidelis_app::rewards::RedemptionInput;
use minijinja::{Value, context};
use serde::Deserialize;

/// Rewards shown in the catalogue, and coupons in the list, at most.
pub const CATALOGUE_MAX: i64 = 100;
pub const COUPONS_MAX: i64 = 50;

fn base(m: &Member, section: &str) -> Value {
    context! { csrf => m.s.csrf, signed_in => true, section }
}

pub async fn list(
    State(st): State<WebState>,
    Path(tenant): Path<String>,
    m: Member,
) -> Result<Response, WebError> {
    let b = brand(&st.app, &tenant).await?;
    let lang = m.lang;
    let balance = st.app.balance(&m.s.principal, &m.s.member_id).await?;
    let now = st.app.clock.now();
    let mut rewards: Vec<_> = st
        .app
        .list_rewards(&m.s.principal, None, CATALOGUE_MAX)
        .await?
        .items
        .into_iter()
        .filter(|r| fidelis_core::rewards::redeemable(&r.def, now).is_ok() && r.stock != Some(0))
        .collect();
    // What the member can afford first, cheapest first within each group.
    rewards.sort_by_key(|r| (r.def.points_cost > balance.available, r.def.points_cost));
    let items: Vec<Value> = rewards
        .iter()
        .map(|r| {
            let affordable = r.def.points_cost <= balance.available;
            context! {
                id => r.id, title => r.def.title, description => r.def.description, image => r.def.image_url,
                cost => lang.number(r.def.points_cost), affordable,
                missing => (!affordable).then(|| lang.number(r.def.points_cost - balance.available)),
            }
        })
        .collect();
    let coupons: Vec<Value> = st
        .app
        .member_coupons(&m.s.principal, &m.s.member_id, None, COUPONS_MAX)
        .await?
        .items
        .iter()
        .filter(|c| c.status == "issued")
        .map(|c| context! { code => c.code, title => c.reward_title, expires => lang.date(&c.expires_at, false) })
        .collect();
    page(
        "portal/rewards.html",
        lang,
        context! {
            items, coupons, available => lang.number(balance.available),
            ..minijinja::value::merge_maps([base(&m, "rewards"), b])
        },
    )
}

#[derive(Deserialize)]
pub struct RedeemForm {
    reward_id: String,
}

pub async fn redeem(
    State(st): State<WebState>,
    Path(tenant): Path<String>,
    m: Member,
    Form(f): Form<RedeemForm>,
) -> Result<Response, WebError> {
    let input = RedemptionInput {
        reward_id: f.reward_id,
    };
    match st
        .app
        .redeem_reward(&m.s.principal, &m.s.member_id, input, None)
        .await
    {
        Ok((out, _)) => Ok(redirect(&format!(
            "/m/{}/coupons/{}",
            url_encode(&tenant),
            url_encode(&out.coupon.code)
        ))),
        Err(AppError::Conflict(msg) | AppError::Unprocessable(msg)) => Err(WebError::Page(
            axum::http::StatusCode::CONFLICT,
            format!("{} ({msg})", m.lang.t("redeem_refused")),
        )),
        Err(e) => Err(e.into()),
    }
}

/// One of the member's own coupons, with its QR code; another member's code is a 404.
pub async fn coupon(
    State(st): State<WebState>,
    Path((tenant, code)): Path<(String, String)>,
    m: Member,
) -> Result<Response, WebError> {
    let b = brand(&st.app, &tenant).await?;
    let lang = m.lang;
    let wanted: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_uppercase();
    let mine = st
        .app
        .member_coupons(
            &m.s.principal,
            &m.s.member_id,
            None,
            fidelis_store::MAX_PAGE,
        )
        .await?
        .items
        .into_iter()
        .find(|c| {
            c.code
                .chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .collect::<String>()
                .to_uppercase()
                == wanted
        })
        .ok_or_else(WebError::not_found)?;
    let qr = crate::qr::svg(&mine.code, lang.t("coupon_qr")).unwrap_or_default();
    page(
        "portal/coupon.html",
        lang,
        context! {
            code => mine.code, title => mine.reward_title, status => mine.status,
            status_label => lang.t(&format!("coupon_status_{}", mine.status)),
            points => lang.number(mine.points), expires => lang.date(&mine.expires_at, false),
            qr => Value::from_safe_string(qr),
            ..minijinja::value::merge_maps([base(&m, "rewards"), b])
        },
    )
}
