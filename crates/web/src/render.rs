//! Templates: embedded in the binary, parsed once into one shared environment, rendered with a
//! context the handlers build (view models only: no business logic in templates). Filters
//! format numbers and dates in the page's language.

use crate::error::WebError;
use crate::i18n::Lang;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use minijinja::{Environment, State, Value, context};
use std::sync::LazyLock;

macro_rules! templates {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_str!(concat!("../templates/", $name)))),*]
    };
}

pub const TEMPLATES: &[(&str, &str)] = templates![
    "error.html",
    "macros.html",
    "admin/base.html",
    "admin/login.html",
    "admin/dashboard.html",
    "admin/members.html",
    "admin/member.html",
    "admin/settings.html",
    "admin/keys.html",
    "admin/branding.html",
    "admin/users.html",
    "admin/deletions.html",
    "portal/base.html",
    "portal/landing.html",
    "portal/signup.html",
    "portal/login.html",
    "portal/message.html",
    "portal/home.html",
    "portal/history.html",
    "portal/profile.html",
    "portal/_lines.html",
    "admin/rewards.html",
    "admin/coupons.html",
    "admin/rules.html",
    "admin/dry_run.html",
    "portal/rewards.html",
    "portal/coupon.html",
    "admin/tiers.html",
    "admin/campaigns.html",
    "admin/campaign.html",
    "admin/backtest.html",
];

static ENV: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    for (name, source) in TEMPLATES {
        // A template that does not parse is caught by `every_template_parses`; at run time
        // its pages answer 500 and the error is logged.
        if let Err(e) = env.add_template(name, source) {
            tracing::error!(template = name, error = %e, "template does not parse");
        }
    }
    env.add_filter("num", |state: &State, v: i64| lang_of(state).number(v));
    env.add_filter("date", |state: &State, v: String| {
        lang_of(state).date(&v, false)
    });
    env.add_filter("datetime", |state: &State, v: String| {
        lang_of(state).date(&v, true)
    });
    env.add_filter("urlencode", |v: String| url_encode(&v));
    env
});

fn lang_of(state: &State) -> Lang {
    state
        .lookup("lang")
        .and_then(|v| v.as_str().and_then(Lang::parse))
        .unwrap_or_default()
}

/// Renders `name` with `ctx` plus the language and its catalogue.
pub fn render(name: &str, lang: Lang, ctx: Value) -> Result<String, WebError> {
    let full = context! { lang => lang.code(), tr => lang.catalog(), ..ctx };
    ENV.get_template(name)
        .and_then(|t| t.render(full))
        .map_err(|e| {
            tracing::error!(template = name, error = %e, "rendering failed");
            WebError::status(StatusCode::INTERNAL_SERVER_ERROR, "err_internal")
        })
}

/// A rendered page as a response.
pub fn page(name: &str, lang: Lang, ctx: Value) -> Result<Response, WebError> {
    Ok(Html(render(name, lang, ctx)?).into_response())
}

/// The same with another status (a form shown again with its errors).
pub fn page_with(
    status: StatusCode,
    name: &str,
    lang: Lang,
    ctx: Value,
) -> Result<Response, WebError> {
    let mut r = page(name, lang, ctx)?;
    *r.status_mut() = status;
    Ok(r)
}

/// The error page, in `lang`.
pub fn error_page(status: StatusCode, lang: Lang, message: &str) -> Response {
    let portal = false;
    let html = render(
        "error.html",
        lang,
        context! { status => status.as_u16(), message => message, portal => portal },
    )
    .unwrap_or_else(|_| format!("<!doctype html><title>{status}</title><p>{status}</p>"));
    let mut r = (status, Html(html)).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Percent-encodes everything but unreserved characters (for query values and paths).
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A local path to go back to after signing in; anything else (another site) is refused.
pub fn safe_next(next: Option<&str>, default: &str) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_string(),
        _ => default.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses() {
        let mut env = Environment::new();
        for (name, source) in TEMPLATES {
            if let Err(e) = env.add_template(name, source) {
                panic!("{name}: {e}");
            }
        }
    }

    #[test]
    fn next_paths_stay_on_this_site() {
        assert_eq!(
            safe_next(Some("/admin/members?q=a"), "/admin"),
            "/admin/members?q=a"
        );
        assert_eq!(safe_next(Some("//evil.example"), "/admin"), "/admin");
        assert_eq!(safe_next(Some("https://evil.example"), "/admin"), "/admin");
        assert_eq!(safe_next(None, "/admin"), "/admin");
    }
}
