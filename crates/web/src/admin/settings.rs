//! Programme settings, branding, API keys and console users. Everyone may look at the
//! programme and the branding; changing them needs the programme permission (owners,
//! marketers); keys and users are the owner's.

use super::base;
use crate::WebState;
use crate::error::{WebError, redirect};
use crate::render::{page, page_with};
use crate::session::{Admin, Form};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use fidelis_app::AppError;
use fidelis_app::console::{Permission, Role};
use fidelis_core::ProgramSettings;
use fidelis_core::program::{ExpiryPolicy, RefundPolicy, Rounding};
use fidelis_store::web::BrandingSettings;
use minijinja::{Value, context};
use serde::Deserialize;

fn program_view(s: &ProgramSettings) -> Value {
    let (expiry_kind, expiry_months) = match s.expiry {
        ExpiryPolicy::None => ("none", 12),
        ExpiryPolicy::AfterEarning { months } => ("after_earning", months),
        ExpiryPolicy::Inactivity { months } => ("inactivity", months),
    };
    let rounding = match s.rounding {
        Rounding::Floor => "floor",
        Rounding::Nearest => "nearest",
        Rounding::Ceil => "ceil",
    };
    let refund = match s.refund_policy {
        RefundPolicy::PendingOnly => "pending_only",
        RefundPolicy::WithinBalance => "within_balance",
        RefundPolicy::AllowNegative => "allow_negative",
    };
    context! {
        points_name => s.points_name, earn_rate => s.earn_rate, rounding, pending_days => s.pending_days,
        expiry_kind, expiry_months, refund_policy => refund, auto_enroll => s.auto_enroll,
        currency => s.currency.code(),
    }
}

pub async fn program(State(st): State<WebState>, a: Admin) -> Result<Response, WebError> {
    let (s, version) = st.app.program(&a.s.principal).await?;
    page(
        "admin/settings.html",
        a.lang,
        context! { p => program_view(&s), version, saved => false, ..base(&a, "settings") },
    )
}

#[derive(Deserialize)]
pub struct ProgramForm {
    points_name: String,
    earn_rate: String,
    rounding: String,
    pending_days: String,
    expiry_kind: String,
    expiry_months: String,
    refund_policy: String,
    auto_enroll: Option<String>,
}

fn apply(mut s: ProgramSettings, f: &ProgramForm) -> Result<ProgramSettings, AppError> {
    let int = |field: &str, v: &str| {
        v.trim()
            .parse::<u32>()
            .map_err(|_| AppError::invalid(field, "must be a whole number"))
    };
    s.points_name = f.points_name.trim().to_string();
    s.earn_rate = f.earn_rate.trim().replace(',', ".");
    s.rounding = match f.rounding.as_str() {
        "nearest" => Rounding::Nearest,
        "ceil" => Rounding::Ceil,
        _ => Rounding::Floor,
    };
    s.pending_days = int("pending_days", &f.pending_days)?;
    s.expiry = match f.expiry_kind.as_str() {
        "after_earning" => ExpiryPolicy::AfterEarning {
            months: int("expiry.months", &f.expiry_months)?,
        },
        "inactivity" => ExpiryPolicy::Inactivity {
            months: int("expiry.months", &f.expiry_months)?,
        },
        _ => ExpiryPolicy::None,
    };
    s.refund_policy = match f.refund_policy.as_str() {
        "pending_only" => RefundPolicy::PendingOnly,
        "within_balance" => RefundPolicy::WithinBalance,
        _ => RefundPolicy::AllowNegative,
    };
    s.auto_enroll = f.auto_enroll.is_some();
    Ok(s)
}

pub async fn save_program(
    State(st): State<WebState>,
    a: Admin,
    Form(f): Form<ProgramForm>,
) -> Result<Response, WebError> {
    a.s.require(Permission::ManageProgramme)?;
    let (current, version) = st.app.program(&a.s.principal).await?;
    let result = match apply(current.clone(), &f) {
        Ok(next) => st
            .app
            .put_program(&a.s.principal, next, None)
            .await
            .map(|(s, v, _)| (s, v)),
        Err(e) => Err(e),
    };
    match result {
        Ok((s, v)) => page(
            "admin/settings.html",
            a.lang,
            context! { p => program_view(&s), version => v, saved => true, ..base(&a, "settings") },
        ),
        Err(AppError::Invalid { field, reason }) => {
            let shown = apply(current.clone(), &f).unwrap_or(current);
            page_with(
                StatusCode::UNPROCESSABLE_ENTITY,
                "admin/settings.html",
                a.lang,
                context! {
                    p => program_view(&shown), version, saved => false,
                    error => format!("{field}: {reason}"), ..base(&a, "settings")
                },
            )
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn branding(State(st): State<WebState>, a: Admin) -> Result<Response, WebError> {
    let b = st.app.branding(a.s.tenant()).await?;
    let (program, _) = st.app.program(&a.s.principal).await?;
    page(
        "admin/branding.html",
        a.lang,
        context! {
            b => Value::from_serialize(&b.settings), logo => b.logo, points_name => program.points_name,
            saved => false, ..base(&a, "branding")
        },
    )
}

#[derive(Deserialize)]
pub struct BrandingForm {
    display_name: String,
    points_name: String,
    primary_color: String,
    accent_color: String,
    welcome_title: String,
    welcome_text: String,
    footer_text: String,
    logo: Option<String>,
    remove_logo: Option<String>,
}

pub async fn save_branding(
    State(st): State<WebState>,
    a: Admin,
    Form(f): Form<BrandingForm>,
) -> Result<Response, WebError> {
    a.s.require(Permission::ManageProgramme)?;
    let settings = BrandingSettings {
        display_name: f.display_name,
        primary_color: f.primary_color,
        accent_color: f.accent_color,
        welcome_title: f.welcome_title,
        welcome_text: f.welcome_text,
        footer_text: f.footer_text,
    };
    st.app
        .put_branding(&a.s, settings, f.logo, f.remove_logo.is_some())
        .await?;
    let (mut program, _) = st.app.program(&a.s.principal).await?;
    if program.points_name != f.points_name.trim() {
        program.points_name = f.points_name.trim().to_string();
        st.app.put_program(&a.s.principal, program, None).await?;
    }
    let b = st.app.branding(a.s.tenant()).await?;
    let (program, _) = st.app.program(&a.s.principal).await?;
    page(
        "admin/branding.html",
        a.lang,
        context! {
            b => Value::from_serialize(&b.settings), logo => b.logo, points_name => program.points_name,
            saved => true, ..base(&a, "branding")
        },
    )
}

async fn keys_page(st: &WebState, a: &Admin, created: Option<Value>) -> Result<Response, WebError> {
    a.s.require(Permission::ManageKeys)?;
    let lang = a.lang;
    let keys: Vec<Value> = st
        .app
        .list_keys(&a.s.principal)
        .await?
        .iter()
        .rev()
        .map(|k| {
            context! {
                id => k.id, prefix => k.prefix, scope => k.scope, label => k.label,
                created => lang.date(&k.created_at, true), revoked => k.revoked,
            }
        })
        .collect();
    page(
        "admin/keys.html",
        lang,
        context! { keys, created, ..base(a, "keys") },
    )
}

pub async fn keys(State(st): State<WebState>, a: Admin) -> Result<Response, WebError> {
    keys_page(&st, &a, None).await
}

#[derive(Deserialize)]
pub struct KeyForm {
    scope: String,
    label: Option<String>,
}

pub async fn create_key(
    State(st): State<WebState>,
    a: Admin,
    Form(f): Form<KeyForm>,
) -> Result<Response, WebError> {
    let label = f.label.as_deref().map(str::trim).filter(|l| !l.is_empty());
    let (record, secret) = st.app.console_create_key(&a.s, &f.scope, label).await?;
    let created = context! { secret, scope => record.scope, label => record.label };
    keys_page(&st, &a, Some(created)).await
}

#[derive(Deserialize)]
pub struct Empty {}

pub async fn revoke_key(
    State(st): State<WebState>,
    a: Admin,
    Path(id): Path<String>,
    Form(_): Form<Empty>,
) -> Result<Response, WebError> {
    st.app.console_revoke_key(&a.s, &id).await?;
    Ok(redirect("/admin/keys"))
}

async fn users_page(
    st: &WebState,
    a: &Admin,
    created: Option<Value>,
) -> Result<Response, WebError> {
    let lang = a.lang;
    let users: Vec<Value> = st
        .app
        .admin_users(&a.s)
        .await?
        .iter()
        .map(|u| context! { email => u.email, role => u.role, created => lang.date(&u.created_at, false) })
        .collect();
    page(
        "admin/users.html",
        lang,
        context! { users, created, ..base(a, "users") },
    )
}

pub async fn users(State(st): State<WebState>, a: Admin) -> Result<Response, WebError> {
    users_page(&st, &a, None).await
}

#[derive(Deserialize)]
pub struct UserForm {
    email: String,
    role: String,
    password: Option<String>,
}

pub async fn add_user(
    State(st): State<WebState>,
    a: Admin,
    Form(f): Form<UserForm>,
) -> Result<Response, WebError> {
    let role = Role::parse(&f.role).ok_or_else(|| AppError::invalid("role", "is not a role"))?;
    let password = f.password.as_deref().filter(|p| !p.is_empty());
    let (user, generated) = st
        .app
        .add_admin_user(&a.s, &f.email, role, password)
        .await?;
    let created = context! { email => user.email, password => generated };
    users_page(&st, &a, Some(created)).await
}
