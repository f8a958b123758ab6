//! The member portal under `/m/{tenant}`, white-labelled from the tenant's branding: sign-up
//! with consents, sign-in by password or e-mailed link, balance, history, profile and consents,
//! export of one's data and deletion requests. The member always comes from the session.

mod account;
mod auth;
mod rewards;

use crate::WebState;
use crate::error::WebError;
use crate::render::url_encode;
use axum::Router;
use axum::routing::{get, post};
use fidelis_app::App;
use minijinja::{Value, context};

pub fn routes() -> Router<WebState> {
    Router::new()
        .route("/m/{tenant}", get(account::home))
        .route("/m/{tenant}/", get(account::home))
        .route(
            "/m/{tenant}/signup",
            get(auth::signup_form).post(auth::sign_up),
        )
        .route(
            "/m/{tenant}/login",
            get(auth::login_form).post(auth::sign_in),
        )
        .route("/m/{tenant}/login/link", post(auth::send_link))
        .route("/m/{tenant}/magic", get(auth::magic))
        .route("/m/{tenant}/logout", post(auth::sign_out))
        .route("/m/{tenant}/history", get(account::history))
        .route(
            "/m/{tenant}/profile",
            get(account::profile).post(account::save_profile),
        )
        .route("/m/{tenant}/export", get(account::export))
        .route("/m/{tenant}/delete", post(account::delete))
        .route("/m/{tenant}/logo", get(account::logo))
        .route("/m/{tenant}/rewards", get(rewards::list))
        .route("/m/{tenant}/rewards/redeem", post(rewards::redeem))
        .route("/m/{tenant}/coupons/{code}", get(rewards::coupon))
}

/// The tenant's look and the programme's points name, for every portal page.
pub async fn brand(app: &App, tenant: &str) -> Result<Value, WebError> {
    if !app.tenant_exists(tenant).await? {
        return Err(WebError::not_found());
    }
    let b = app.branding(tenant).await?;
    let points_name = app
        .store
        .program(tenant)
        .await
        .map(|(p, _)| p.points_name)
        .unwrap_or_else(|_| "points".into());
    let s = b.settings;
    Ok(context! {
        tenant => tenant,
        base_path => format!("/m/{}", url_encode(tenant)),
        points_name,
        brand => context! {
            name => s.display_name, primary => s.primary_color, accent => s.accent_color,
            welcome_title => s.welcome_title, welcome_text => s.welcome_text, footer => s.footer_text,
            logo => b.logo.is_some().then(|| format!("/m/{}/logo", url_encode(tenant))),
        },
    })
}

/// The member's tier and the progress to the next, when the programme has tiers.
pub async fn tier(
    app: &App,
    p: &fidelis_app::Principal,
    member: &str,
    lang: crate::i18n::Lang,
) -> Option<Value> {
    // No ladder, no tier block; a member the ladder has not placed yet shows the way up.
    app.tiers(p).await.ok().flatten()?;
    let v = app.member_tier(p, member).await.ok()?;
    let name = v.tier.clone();
    let num = |x: &serde_json::Value| {
        x.as_f64()
            .or_else(|| x.as_str().and_then(|s| s.parse::<f64>().ok()))
    };
    let progress = match (num(&v.value), v.next_threshold.as_ref().and_then(num)) {
        (Some(now), Some(next)) if next > 0.0 => ((now / next) * 100.0).clamp(0.0, 100.0) as i64,
        _ => 100,
    };
    let to_next = v.to_next.as_ref().map(|x| match x.as_i64() {
        Some(n) => lang.number(n),
        None => x.as_str().map(str::to_string).unwrap_or_default(),
    });
    Some(context! {
        name, next => v.next_tier, progress, to_next,
    })
}
