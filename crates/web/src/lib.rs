//! Fidelis's pages: the admin console under `/admin` and the member portal under
//! `/m/{tenant}`, server-rendered from embedded templates (minijinja), with embedded assets
//! (one stylesheet, a small script, vendored htmx) under `/ui/assets`. Handlers call the same
//! use cases as the API (`fidelis_app::App`); sessions and forgery protection are in
//! [`session`], messages in French and English in [`i18n`].

pub mod admin;
pub mod chart;
pub mod error;
pub mod i18n;
mod messages;
pub mod portal;
pub mod qr;
pub mod render;
pub mod session;

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use error::ErrorMessage;
use fidelis_app::App;
use i18n::Lang;
use serde::Deserialize;

/// The pages' state, cloned per request: one `Arc` to count.
#[derive(Clone)]
pub struct WebState {
    pub app: std::sync::Arc<App>,
}

/// The console and the portal, for merging into the service's router.
pub fn router<S: Clone + Send + Sync + 'static>(app: App) -> Router<S> {
    Router::new()
        .merge(admin::routes())
        .merge(portal::routes())
        .route("/ui/assets/{name}", get(asset))
        .route("/ui/lang/{code}", get(switch_lang))
        .layer(axum::middleware::from_fn(layer))
        .with_state(WebState {
            app: std::sync::Arc::new(app),
        })
}

/// The anonymous forms' anti-forgery token (the `fidelis_csrf` cookie's value).
#[derive(Clone)]
pub struct AnonCsrf(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for AnonCsrf {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<AnonCsrf>()
            .cloned()
            .unwrap_or(AnonCsrf(String::new())))
    }
}

const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Around every page: the anonymous anti-forgery cookie, error pages in the browser's
/// language, and security headers.
async fn layer(mut req: Request, next: Next) -> Response {
    let lang = Lang::from_headers(req.headers());
    let headers = req.headers().clone();
    let existing = session::cookie(&headers, session::CSRF_COOKIE).filter(|c| c.len() == 43);
    let fresh = match (&existing, req.method() == Method::GET) {
        (None, true) => Some(fidelis_app::secrets::new_token()),
        _ => None,
    };
    if let Some(t) = existing.as_ref().or(fresh.as_ref()) {
        req.extensions_mut().insert(AnonCsrf(t.clone()));
    }
    let mut resp = next.run(req).await;
    if let Some(msg) = resp.extensions().get::<ErrorMessage>().cloned() {
        let text = match msg {
            ErrorMessage::Key(k) => lang.t(k).to_string(),
            ErrorMessage::Text(t) => t,
        };
        let cookies: Vec<HeaderValue> = resp
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .cloned()
            .collect();
        resp = render::error_page(resp.status(), lang, &text);
        for c in cookies {
            resp.headers_mut().append(header::SET_COOKIE, c);
        }
    }
    let h = resp.headers_mut();
    if let Some(t) = fresh {
        let c = session::set_cookie(
            &headers,
            session::CSRF_COOKIE,
            &t,
            "/",
            "Lax",
            true,
            86_400 * 30,
        );
        h.append(header::SET_COOKIE, c);
    }
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

const CSS: &str = include_str!("../assets/app.css");
const JS: &str = include_str!("../assets/app.js");
const HTMX: &str = include_str!("../assets/htmx.min.js");

async fn asset(Path(name): Path<String>) -> Response {
    let (ct, body) = match name.as_str() {
        "app.css" => ("text/css; charset=utf-8", CSS),
        "app.js" => ("text/javascript; charset=utf-8", JS),
        "htmx.min.js" => ("text/javascript; charset=utf-8", HTMX),
        _ => return error::WebError::not_found().into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, ct),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

#[derive(Deserialize)]
struct Next_ {
    next: Option<String>,
}

/// Switches the language (a cookie for a year) and goes back where the switch was clicked.
async fn switch_lang(
    State(_): State<WebState>,
    Path(code): Path<String>,
    Query(q): Query<Next_>,
    headers: axum::http::HeaderMap,
) -> Response {
    let back = render::safe_next(q.next.as_deref(), "/admin");
    let mut r = error::redirect(&back);
    if let Some(l) = Lang::parse(&code) {
        let c = session::set_cookie(&headers, "lang", l.code(), "/", "Lax", false, 31_536_000);
        r.headers_mut().append(header::SET_COOKIE, c);
    }
    r
}
