//! The admin console under `/admin`: sign-in, dashboard, members, programme settings, API
//! keys, branding, users. Each handler checks the role's permission through the use case it
//! calls (or [`AdminSession::require`] first when a page is only for some roles).

mod auth;
mod campaigns;
mod catalog;
mod dashboard;
mod members;
mod rules;
mod settings;
pub mod tiers;

pub use members::history_rows;

use crate::WebState;
use crate::session::Admin;
use axum::Router;
use axum::routing::{get, post};
use fidelis_app::console::Permission;
use minijinja::{Value, context};

pub fn routes() -> Router<WebState> {
    Router::new()
        .route("/admin", get(dashboard::show))
        .route("/admin/", get(dashboard::show))
        .route("/admin/login", get(auth::form).post(auth::sign_in))
        .route("/admin/logout", post(auth::sign_out))
        .route("/admin/members", get(members::list))
        .route("/admin/members/{id}", get(members::show))
        .route("/admin/members/{id}/adjust", post(members::adjust))
        .route("/admin/deletion-requests", get(members::deletions))
        .route(
            "/admin/settings",
            get(settings::program).post(settings::save_program),
        )
        .route(
            "/admin/branding",
            get(settings::branding).post(settings::save_branding),
        )
        .route(
            "/admin/keys",
            get(settings::keys).post(settings::create_key),
        )
        .route("/admin/keys/{id}/revoke", post(settings::revoke_key))
        .route(
            "/admin/users",
            get(settings::users).post(settings::add_user),
        )
        .route("/admin/rewards", get(catalog::list).post(catalog::create))
        .route("/admin/tiers", get(tiers::show).post(tiers::save))
        .route("/admin/coupons", get(catalog::coupon))
        .route("/admin/rules", get(rules::list).post(rules::create))
        .route("/admin/rules/status", post(rules::set_status))
        .route("/admin/rules/check", get(rules::check))
        .route("/admin/rules/dry-run", get(rules::dry_run))
        .route(
            "/admin/campaigns",
            get(campaigns::list).post(campaigns::create),
        )
        .route("/admin/campaigns/status", post(campaigns::set_status))
        .route("/admin/campaigns/check", get(campaigns::check))
        .route("/admin/campaigns/{id}", get(campaigns::show))
        .route("/admin/campaigns/{id}/backtest", get(campaigns::backtest))
}

/// What every console page shows: who is signed in, what they may do, the anti-forgery token.
pub fn base(a: &Admin, section: &str) -> Value {
    let s = &a.s;
    context! {
        section => section,
        csrf => s.csrf,
        tenant => s.tenant(),
        me => context! { email => s.user.email, role => s.role.as_str() },
        can => context! {
            adjust => s.role.can(Permission::AdjustPoints),
            programme => s.role.can(Permission::ManageProgramme),
            keys => s.role.can(Permission::ManageKeys),
            users => s.role.can(Permission::ManageUsers),
        },
    }
}
