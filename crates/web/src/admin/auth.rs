//! Console sign-in and sign-out.

use crate::error::{WebError, redirect};
use crate::i18n::Lang;
use crate::render::{page, page_with, safe_next};
use crate::session::{ADMIN_COOKIE, Admin, Form, set_cookie};
use crate::{AnonCsrf, WebState};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use fidelis_app::AppError;
use fidelis_app::console::ADMIN_SESSION_HOURS;
use minijinja::context;
use serde::Deserialize;

#[derive(Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
    tenant: Option<String>,
}

pub async fn form(
    State(st): State<WebState>,
    Query(q): Query<LoginQuery>,
    AnonCsrf(csrf): AnonCsrf,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    let lang = Lang::from_headers(&headers);
    // With one tenant on the server (the demo), its name is filled in.
    let tenant = match q.tenant {
        Some(t) => t,
        None => {
            let ids = st.app.store.tenant_ids().await.map_err(AppError::from)?;
            if ids.len() == 1 {
                ids[0].clone()
            } else {
                String::new()
            }
        }
    };
    page(
        "admin/login.html",
        lang,
        context! { csrf, tenant, next => safe_next(q.next.as_deref(), "/admin") },
    )
}

#[derive(Deserialize)]
pub struct LoginForm {
    tenant: String,
    email: String,
    password: String,
    next: Option<String>,
}

pub async fn sign_in(
    State(st): State<WebState>,
    AnonCsrf(csrf): AnonCsrf,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Result<Response, WebError> {
    let lang = Lang::from_headers(&headers);
    match st.app.admin_sign_in(&f.tenant, &f.email, &f.password).await {
        Ok((token, _)) => {
            let mut r = redirect(&safe_next(f.next.as_deref(), "/admin"));
            let c = set_cookie(
                &headers,
                ADMIN_COOKIE,
                &token,
                "/admin",
                "Strict",
                true,
                ADMIN_SESSION_HOURS * 3600,
            );
            r.headers_mut().append(header::SET_COOKIE, c);
            Ok(r)
        }
        Err(AppError::Unauthorized) => page_with(
            StatusCode::UNAUTHORIZED,
            "admin/login.html",
            lang,
            context! {
                csrf, tenant => f.tenant, email => f.email, error => lang.t("login_wrong"),
                next => safe_next(f.next.as_deref(), "/admin"),
            },
        ),
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
pub struct Empty {}

pub async fn sign_out(
    State(st): State<WebState>,
    a: Admin,
    headers: HeaderMap,
    Form(_): Form<Empty>,
) -> Result<Response, WebError> {
    st.app.end_session(&a.token).await?;
    let mut r = redirect("/admin/login");
    let c = set_cookie(&headers, ADMIN_COOKIE, "", "/admin", "Strict", true, 0);
    r.headers_mut().append(header::SET_COOKIE, c);
    Ok(r)
}
