//! Portal sign-up, sign-in (password or magic link) and sign-out. Without a mail server the
//! magic link is written to the log, as the demo and tests read it.

use super::brand;
use crate::error::{WebError, redirect};
use crate::i18n::Lang;
use crate::render::{page, page_with, url_encode};
use crate::session::{Form, MEMBER_COOKIE, Member, is_local, set_cookie};
use crate::{AnonCsrf, WebState};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use fidelis_app::AppError;
use fidelis_app::portal::{MEMBER_SESSION_DAYS, SignUp};
use minijinja::{Value, context};
use serde::Deserialize;

fn signed_in(headers: &HeaderMap, tenant: &str, token: &str) -> Response {
    let mut r = redirect(&format!("/m/{}", url_encode(tenant)));
    let path = format!("/m/{}", url_encode(tenant));
    let c = set_cookie(
        headers,
        MEMBER_COOKIE,
        token,
        &path,
        "Lax",
        true,
        MEMBER_SESSION_DAYS * 86_400,
    );
    r.headers_mut().append(header::SET_COOKIE, c);
    r
}

pub async fn signup_form(
    State(st): State<WebState>,
    Path(tenant): Path<String>,
    AnonCsrf(csrf): AnonCsrf,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    let lang = Lang::from_headers(&headers);
    let b = brand(&st.app, &tenant).await?;
    page(
        "portal/signup.html",
        lang,
        context! { csrf, f => context! {}, ..b },
    )
}

#[derive(Deserialize, serde::Serialize)]
pub struct SignUpForm {
    name: String,
    email: String,
    #[serde(default)]
    password: String,
    marketing_email: Option<String>,
    analytics: Option<String>,
}

pub async fn sign_up(
    State(st): State<WebState>,
    Path(tenant): Path<String>,
    AnonCsrf(csrf): AnonCsrf,
    headers: HeaderMap,
    Form(f): Form<SignUpForm>,
) -> Result<Response, WebError> {
    let lang = Lang::from_headers(&headers);
    let b = brand(&st.app, &tenant).await?;
    let input = SignUp {
        name: f.name.clone(),
        email: f.email.clone(),
        password: (!f.password.is_empty()).then(|| f.password.clone()),
        marketing_email: f.marketing_email.is_some(),
        analytics: f.analytics.is_some(),
    };
    match st.app.member_sign_up(&tenant, input).await {
        Ok((token, _, _)) => Ok(signed_in(&headers, &tenant, &token)),
        Err(e @ (AppError::Invalid { .. } | AppError::Conflict(_))) => {
            let (status, error) = match e {
                AppError::Invalid { field, .. } => {
                    let key = format!("signup_bad_{}", field.split('.').next().unwrap_or(""));
                    let msg = match lang.t(&key) {
                        "" => lang.t("signup_bad"),
                        m => m,
                    };
                    (StatusCode::UNPROCESSABLE_ENTITY, msg)
                }
                _ => (StatusCode::CONFLICT, lang.t("signup_taken")),
            };
            let f = Value::from_serialize(SignUpForm {
                password: String::new(),
                ..f
            });
            page_with(
                status,
                "portal/signup.html",
                lang,
                context! { csrf, error, f, ..b },
            )
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
pub struct LoginQuery {
    sent: Option<String>,
}

pub async fn login_form(
    State(st): State<WebState>,
    Path(tenant): Path<String>,
    AnonCsrf(csrf): AnonCsrf,
    Query(q): Query<LoginQuery>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    let lang = Lang::from_headers(&headers);
    let b = brand(&st.app, &tenant).await?;
    page(
        "portal/login.html",
        lang,
        context! { csrf, sent => q.sent.is_some(), ..b },
    )
}

#[derive(Deserialize)]
pub struct LoginForm {
    email: String,
    password: String,
}

pub async fn sign_in(
    State(st): State<WebState>,
    Path(tenant): Path<String>,
    AnonCsrf(csrf): AnonCsrf,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Result<Response, WebError> {
    let lang = Lang::from_headers(&headers);
    let b = brand(&st.app, &tenant).await?;
    match st.app.member_sign_in(&tenant, &f.email, &f.password).await {
        Ok((token, _)) => Ok(signed_in(&headers, &tenant, &token)),
        Err(AppError::Unauthorized) => page_with(
            StatusCode::UNAUTHORIZED,
            "portal/login.html",
            lang,
            context! { csrf, email => f.email, error => lang.t("login_wrong"), ..b },
        ),
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
pub struct LinkForm {
    email: String,
}

/// Makes a sign-in link and "sends" it: no mail server is configured, so it is logged. The
/// page says the same whether or not the e-mail is known.
pub async fn send_link(
    State(st): State<WebState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    Form(f): Form<LinkForm>,
) -> Result<Response, WebError> {
    brand(&st.app, &tenant).await?;
    if let Some((member, token)) = st.app.request_magic_link(&tenant, &f.email).await? {
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("localhost");
        let scheme = if is_local(&headers) { "http" } else { "https" };
        let link = format!(
            "{scheme}://{host}/m/{}/magic?token={token}",
            url_encode(&tenant)
        );
        tracing::info!(tenant = %tenant, member = %member.id, %link, "magic sign-in link (no mail server configured)");
    }
    Ok(redirect(&format!(
        "/m/{}/login?sent=1",
        url_encode(&tenant)
    )))
}

#[derive(Deserialize)]
pub struct MagicQuery {
    token: Option<String>,
}

pub async fn magic(
    State(st): State<WebState>,
    Path(tenant): Path<String>,
    Query(q): Query<MagicQuery>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    let lang = Lang::from_headers(&headers);
    let b = brand(&st.app, &tenant).await?;
    match st
        .app
        .use_magic_link(&tenant, q.token.as_deref().unwrap_or(""))
        .await
    {
        Ok((token, _)) => Ok(signed_in(&headers, &tenant, &token)),
        Err(AppError::Unauthorized) => page_with(
            StatusCode::UNAUTHORIZED,
            "portal/message.html",
            lang,
            context! { title => lang.t("link_bad_title"), message => lang.t("link_bad"), ..b },
        ),
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
pub struct Empty {}

pub async fn sign_out(
    State(st): State<WebState>,
    Path(tenant): Path<String>,
    m: Member,
    headers: HeaderMap,
    Form(_): Form<Empty>,
) -> Result<Response, WebError> {
    st.app.end_session(&m.token).await?;
    let path = format!("/m/{}", url_encode(&tenant));
    let mut r = redirect(&path);
    let c = set_cookie(&headers, MEMBER_COOKIE, "", &path, "Lax", true, 0);
    r.headers_mut().append(header::SET_COOKIE, c);
    Ok(r)
}
