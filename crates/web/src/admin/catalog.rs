//! The rewards catalogue (list, create, with an image URL each) and the coupon look-up.

use super::base;
use crate::WebState;
use crate::error::{WebError, redirect};
use crate::render::{page, page_with, url_encode};
use crate::session::{Admin, Form};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use fidelis_app::AppError;
use fidelis_app::console::Permission;
use fidelis_app::rewards::CouponCheckInput;
use fidelis_core::rewards::{RewardInput, RewardKind};
use minijinja::{Value, context};
use serde::Deserialize;

pub const REWARDS_PAGE: i64 = 25;
pub const KINDS: [&str; 7] = [
    "fixed_discount",
    "percent_discount",
    "free_product",
    "free_shipping",
    "store_credit",
    "charity_donation",
    "custom",
];

#[derive(Deserialize)]
pub struct ListQuery {
    cursor: Option<String>,
    done: Option<String>,
}

async fn list_page(
    st: &WebState,
    a: &Admin,
    cursor: Option<String>,
    extra: Value,
    status: StatusCode,
) -> Result<Response, WebError> {
    let lang = a.lang;
    let first_page = cursor.is_none();
    let (program, _) = st.app.program(&a.s.principal).await?;
    let rows = st
        .app
        .list_rewards(&a.s.principal, cursor, REWARDS_PAGE)
        .await?;
    let items: Vec<Value> = rows
        .items
        .iter()
        .map(|r| {
            context! {
                id => r.id, title => r.def.title, kind => lang.t(&format!("reward_{}", r.def.kind.as_str())),
                cost => lang.number(r.def.points_cost), image => r.def.image_url,
                stock => r.stock.map(|s| lang.number(s)), active => r.def.active,
            }
        })
        .collect();
    let next = rows
        .next_cursor
        .map(|c| format!("/admin/rewards?cursor={}", url_encode(&c)));
    let kinds: Vec<Value> = KINDS
        .iter()
        .map(|k| context! { value => k, label => lang.t(&format!("reward_{k}")) })
        .collect();
    page_with(
        status,
        "admin/rewards.html",
        lang,
        context! {
            items, next, first_page, kinds, points_name => program.points_name, currency => program.currency.code(),
            ..minijinja::value::merge_maps([extra, base(a, "rewards")])
        },
    )
}

pub async fn list(
    State(st): State<WebState>,
    a: Admin,
    Query(q): Query<ListQuery>,
) -> Result<Response, WebError> {
    let notice = (q.done.as_deref() == Some("created")).then(|| a.lang.t("reward_created"));
    list_page(
        &st,
        &a,
        q.cursor,
        context! { notice, f => context! {} },
        StatusCode::OK,
    )
    .await
}

#[derive(Deserialize, serde::Serialize, Default)]
#[serde(default)]
pub struct RewardForm {
    kind: String,
    title: String,
    description: String,
    image_url: String,
    points_cost: String,
    value: String,
    percent: String,
    sku: String,
    charity: String,
    stock: String,
    per_member_limit: String,
}

fn opt(s: &str) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_string())
}

fn to_input(f: &RewardForm) -> Result<RewardInput, AppError> {
    let kind: RewardKind = serde_json::from_value(serde_json::Value::String(f.kind.clone()))
        .map_err(|_| AppError::invalid("kind", "is not a kind of reward"))?;
    let int = |field: &str, v: &str| -> Result<Option<i64>, AppError> {
        opt(v)
            .map(|v| {
                v.replace([' ', '\u{202f}'], "")
                    .parse::<i64>()
                    .map_err(|_| AppError::invalid(field, "must be a whole number"))
            })
            .transpose()
    };
    Ok(RewardInput {
        kind,
        title: f.title.trim().to_string(),
        description: opt(&f.description),
        image_url: opt(&f.image_url),
        points_cost: int("points_cost", &f.points_cost)?
            .ok_or_else(|| AppError::invalid("points_cost", "is required"))?,
        value: opt(&f.value).map(|v| v.replace(',', ".")),
        percent: opt(&f.percent).map(|v| v.replace(',', ".")),
        sku: opt(&f.sku),
        charity: opt(&f.charity),
        min_order_total: None,
        stock: int("stock", &f.stock)?,
        per_member_limit: int("per_member_limit", &f.per_member_limit)?,
        min_tier: None,
        valid_from: None,
        valid_until: None,
        coupon_valid_days: None,
        active: true,
    })
}

pub async fn create(
    State(st): State<WebState>,
    a: Admin,
    Form(f): Form<RewardForm>,
) -> Result<Response, WebError> {
    a.s.require(Permission::ManageProgramme)?;
    let result = match to_input(&f) {
        Ok(input) => st.app.create_reward(&a.s.principal, input, None).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(_) => Ok(redirect("/admin/rewards?done=created")),
        Err(AppError::Invalid { field, reason }) => {
            let extra =
                context! { error => format!("{field}: {reason}"), f => Value::from_serialize(&f) };
            list_page(&st, &a, None, extra, StatusCode::UNPROCESSABLE_ENTITY).await
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
pub struct CouponQuery {
    code: Option<String>,
}

pub async fn coupon(
    State(st): State<WebState>,
    a: Admin,
    Query(q): Query<CouponQuery>,
) -> Result<Response, WebError> {
    let lang = a.lang;
    let code = q.code.unwrap_or_default();
    let found = if code.trim().is_empty() {
        None
    } else {
        a.s.require(Permission::AdjustPoints)?;
        let input = CouponCheckInput {
            code: code.clone(),
            member_id: None,
            order_total: None,
            lines: vec![],
        };
        let check = st.app.validate_coupon(&a.s.principal, input).await?;
        Some(context! {
            valid => check.valid,
            reason => check.reason.as_deref().map(|r| match lang.t(&format!("coupon_{r}")) { "" => r.to_string(), t => t.to_string() }),
            coupon => check.coupon.as_ref().map(|c| context! {
                code => c.code, title => c.reward_title, member_id => c.member_id, status => c.status,
                points => lang.number(c.points), issued => lang.date(&c.issued_at, true),
                expires => lang.date(&c.expires_at, false),
                redeemed => c.redeemed_at.as_deref().map(|t| lang.date(t, true)), order => c.redeemed_order_id,
            }),
        })
    };
    page(
        "admin/coupons.html",
        lang,
        context! { code, found, ..base(&a, "coupons") },
    )
}
