//! Browser sessions and forgery protection. Session cookies are HttpOnly, SameSite (Strict for
//! the console, Lax for the portal so links from e-mails work) and Secure unless the request
//! came to localhost. Every POST carries a `csrf` field: a signed-in browser's must equal its
//! session's token (synchronizer); an anonymous one's (sign-in, sign-up) must equal the
//! `fidelis_csrf` cookie (double submit). A post without it changes nothing and gets a 403.

use crate::WebState;
use crate::error::WebError;
use crate::i18n::Lang;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use fidelis_app::AppError;
use fidelis_app::console::AdminSession;
use fidelis_app::portal::MemberSession;
use serde::de::DeserializeOwned;

pub const ADMIN_COOKIE: &str = "fidelis_admin";
pub const MEMBER_COOKIE: &str = "fidelis_member";
pub const CSRF_COOKIE: &str = "fidelis_csrf";

/// The value of cookie `name`, if the request has it.
pub fn cookie(h: &HeaderMap, name: &str) -> Option<String> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_string())
}

/// True when the browser talks to this machine itself (the Secure flag would lose the cookie
/// over plain HTTP there).
pub fn is_local(h: &HeaderMap) -> bool {
    let host = h
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let name = if host.starts_with('[') {
        host.split(']')
            .next()
            .map(|s| format!("{s}]"))
            .unwrap_or_default()
    } else {
        host.split(':').next().unwrap_or("").to_string()
    };
    matches!(name.as_str(), "localhost" | "127.0.0.1" | "[::1]")
}

/// A `Set-Cookie` value. `max_age_secs: 0` deletes the cookie.
pub fn set_cookie(
    h: &HeaderMap,
    name: &str,
    value: &str,
    path: &str,
    same_site: &str,
    http_only: bool,
    max_age_secs: i64,
) -> HeaderValue {
    let mut c =
        format!("{name}={value}; Path={path}; SameSite={same_site}; Max-Age={max_age_secs}");
    if http_only {
        c.push_str("; HttpOnly");
    }
    if !is_local(h) {
        c.push_str("; Secure");
    }
    // Tokens and paths are our own ASCII; a failure would only drop the cookie.
    HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static("invalid=1"))
}

/// Constant-time comparison of two tokens.
pub fn same_token(a: &str, b: &str) -> bool {
    if a.len() != b.len() || a.is_empty() {
        return false;
    }
    a.bytes()
        .zip(b.bytes())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// The token a form of this request must carry, put there by the session extractors.
#[derive(Clone)]
pub struct ExpectedCsrf(pub String);

/// A signed-in console user; without a live session, a redirect to the sign-in page.
pub struct Admin {
    pub s: AdminSession,
    pub lang: Lang,
    pub token: String,
}

impl FromRequestParts<WebState> for Admin {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, st: &WebState) -> Result<Self, WebError> {
        let lang = Lang::from_headers(&parts.headers);
        let to_login = || {
            let next = parts.uri.path_and_query().map_or("/admin", |p| p.as_str());
            WebError::Redirect(format!(
                "/admin/login?next={}",
                crate::render::url_encode(next)
            ))
        };
        let Some(token) = cookie(&parts.headers, ADMIN_COOKIE) else {
            return Err(to_login());
        };
        match st.app.admin_session(&token).await {
            Ok(s) => {
                parts.extensions.insert(ExpectedCsrf(s.csrf.clone()));
                Ok(Admin { s, lang, token })
            }
            Err(AppError::Unauthorized) => Err(to_login()),
            Err(e) => Err(e.into()),
        }
    }
}

/// The tenant named by a portal path `/m/{tenant}/...`.
pub fn portal_tenant(parts: &Parts) -> String {
    parts.uri.path().split('/').nth(2).unwrap_or("").to_string()
}

/// A signed-in member of the tenant in the path; otherwise a redirect to its sign-in page.
pub struct Member {
    pub s: MemberSession,
    pub lang: Lang,
    pub token: String,
}

impl FromRequestParts<WebState> for Member {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, st: &WebState) -> Result<Self, WebError> {
        let lang = Lang::from_headers(&parts.headers);
        let tenant = portal_tenant(parts);
        let login = WebError::Redirect(format!("/m/{}/login", crate::render::url_encode(&tenant)));
        let Some(token) = cookie(&parts.headers, MEMBER_COOKIE) else {
            return Err(login);
        };
        match st.app.member_session(&tenant, &token).await {
            Ok(s) => {
                parts.extensions.insert(ExpectedCsrf(s.csrf.clone()));
                Ok(Member { s, lang, token })
            }
            Err(AppError::Unauthorized) => Err(login),
            Err(e) => Err(e.into()),
        }
    }
}

/// A posted form whose `csrf` field matched; `T` is the rest of the form.
pub struct Form<T>(pub T);

impl<T: DeserializeOwned> FromRequest<WebState> for Form<T> {
    type Rejection = WebError;

    async fn from_request(req: Request, st: &WebState) -> Result<Self, WebError> {
        let expected = match req.extensions().get::<ExpectedCsrf>() {
            Some(e) => Some(e.0.clone()),
            None => cookie(req.headers(), CSRF_COOKIE),
        };
        let form_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        let body = Bytes::from_request(req, st).await.map_err(|_| {
            WebError::status(axum::http::StatusCode::PAYLOAD_TOO_LARGE, "err_too_large")
        })?;
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
        let sent = pairs
            .iter()
            .find(|(k, _)| k == "csrf")
            .map(|(_, v)| v.as_str());
        let ok = form_type
            && matches!((expected.as_deref(), sent), (Some(e), Some(s)) if same_token(e, s));
        if !ok {
            return Err(WebError::status(
                axum::http::StatusCode::FORBIDDEN,
                "err_csrf",
            ));
        }
        serde_urlencoded::from_bytes::<T>(&body)
            .map(Form)
            .map_err(|e| {
                WebError::Page(axum::http::StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_read_by_exact_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; fidelis_admin=tok; b=2"),
        );
        assert_eq!(cookie(&h, "fidelis_admin").as_deref(), Some("tok"));
        assert_eq!(cookie(&h, "admin"), None);
    }

    #[test]
    fn cookies_are_secure_except_on_this_machine() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        let local = set_cookie(&h, "x", "v", "/", "Lax", true, 60);
        assert!(!local.to_str().unwrap_or("").contains("Secure"));
        h.insert(header::HOST, HeaderValue::from_static("shop.example.com"));
        let public = set_cookie(&h, "x", "v", "/", "Strict", true, 60);
        let s = public.to_str().unwrap_or("");
        assert!(s.contains("Secure") && s.contains("HttpOnly") && s.contains("SameSite=Strict"));
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abc", "abd"));
        assert!(!same_token("abc", "ab"));
        assert!(!same_token("", ""));
    }
}
