//! The signed-in member's pages: balance, history, profile and consents, data export,
//! deletion request; and the tenant's logo.

use super::brand;
use crate::AnonCsrf;
use crate::WebState;
use crate::admin::history_rows;
use crate::error::{WebError, redirect};
use crate::i18n::Lang;
use crate::render::{page, url_encode};
use crate::session::{Form, MEMBER_COOKIE, Member, cookie};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use fidelis_app::portal::MemberSession;
use minijinja::{Value, context};
use serde::Deserialize;

/// Ledger lines on the home page and per page of the history.
pub const RECENT_LINES: i64 = 5;
pub const HISTORY_PAGE: i64 = 20;

fn member_base(m: &Member, section: &str) -> Value {
    context! { csrf => m.s.csrf, signed_in => true, section }
}

async fn current_member(st: &WebState, tenant: &str, headers: &HeaderMap) -> Option<MemberSession> {
    let token = cookie(headers, MEMBER_COOKIE)?;
    st.app.member_session(tenant, &token).await.ok()
}

pub async fn home(
    State(st): State<WebState>,
    Path(tenant): Path<String>,
    AnonCsrf(csrf): AnonCsrf,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    let lang = Lang::from_headers(&headers);
    let b = brand(&st.app, &tenant).await?;
    let Some(s) = current_member(&st, &tenant, &headers).await else {
        return page("portal/landing.html", lang, context! { csrf, ..b });
    };
    let member = st.app.my_member(&s).await?;
    let balance = st.app.balance(&s.principal, &s.member_id).await?;
    let recent = st
        .app
        .history(&s.principal, &s.member_id, None, RECENT_LINES)
        .await?;
    let tier = crate::portal::tier(&st.app, &s.principal, &s.member_id, lang).await;
    let expiring: Vec<Value> = balance
        .expiring
        .iter()
        .take(3)
        .map(
            |e| context! { points => lang.number(e.points), at => lang.date(&e.expires_at, false) },
        )
        .collect();
    page(
        "portal/home.html",
        lang,
        context! {
            name => member.name,
            available => lang.number(balance.available),
            pending => lang.number(balance.pending),
            has_pending => balance.pending != 0,
            expiring, tier,
            recent => history_rows(&recent.items, lang),
            csrf => s.csrf, signed_in => true, section => "home",
            ..b
        },
    )
}

#[derive(Deserialize)]
pub struct CursorQuery {
    cursor: Option<String>,
}

pub async fn history(
    State(st): State<WebState>,
    Path(tenant): Path<String>,
    m: Member,
    Query(q): Query<CursorQuery>,
) -> Result<Response, WebError> {
    let b = brand(&st.app, &tenant).await?;
    let s = &m.s;
    let page_ = st
        .app
        .history(
            &s.principal,
            &s.member_id,
            q.cursor.as_deref(),
            HISTORY_PAGE,
        )
        .await?;
    let next = page_.next_cursor.map(|c| {
        format!(
            "/m/{}/history?cursor={}",
            url_encode(&tenant),
            url_encode(&c)
        )
    });
    page(
        "portal/history.html",
        m.lang,
        context! {
            items => history_rows(&page_.items, m.lang), next, first_page => q.cursor.is_none(),
            ..minijinja::value::merge_maps([member_base(&m, "history"), b])
        },
    )
}

#[derive(Deserialize)]
pub struct ProfileQuery {
    done: Option<String>,
}

pub async fn profile(
    State(st): State<WebState>,
    Path(tenant): Path<String>,
    m: Member,
    Query(q): Query<ProfileQuery>,
) -> Result<Response, WebError> {
    let b = brand(&st.app, &tenant).await?;
    let lang = m.lang;
    let member = st.app.my_member(&m.s).await?;
    let consent =
        |purpose: &str| {
            member.consents.iter().find(|c| c.purpose == purpose).map(|c| {
            context! { granted => c.granted, at => lang.date(&c.at, true), source => c.source }
        })
        };
    let deletion = st
        .app
        .store
        .deletion_requests(&tenant, Some(&m.s.member_id))
        .await
        .map_err(fidelis_app::AppError::from)?;
    let notice = match q.done.as_deref() {
        Some("saved") => Some(lang.t("profile_saved")),
        Some("deletion") => Some(lang.t("deletion_done")),
        _ => None,
    };
    page(
        "portal/profile.html",
        lang,
        context! {
            name => member.name, email => member.email,
            marketing => consent("marketing_email"), analytics => consent("analytics"),
            deletion_requested => deletion.iter().any(|d| !d.handled),
            notice,
            ..minijinja::value::merge_maps([member_base(&m, "profile"), b])
        },
    )
}

#[derive(Deserialize)]
pub struct ProfileForm {
    name: String,
    marketing_email: Option<String>,
    analytics: Option<String>,
}

pub async fn save_profile(
    State(st): State<WebState>,
    Path(tenant): Path<String>,
    m: Member,
    Form(f): Form<ProfileForm>,
) -> Result<Response, WebError> {
    st.app
        .update_my_profile(
            &m.s,
            &f.name,
            f.marketing_email.is_some(),
            f.analytics.is_some(),
        )
        .await?;
    Ok(redirect(&format!(
        "/m/{}/profile?done=saved",
        url_encode(&tenant)
    )))
}

/// Everything held on the member, as a JSON file to download.
pub async fn export(State(st): State<WebState>, m: Member) -> Result<Response, WebError> {
    let data = st.app.export_my_data(&m.s).await?;
    let body = serde_json::to_string_pretty(&data).unwrap_or_else(|_| "{}".into());
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"my-data.json\""),
    );
    Ok(r)
}

#[derive(Deserialize)]
pub struct Empty {}

pub async fn delete(
    State(st): State<WebState>,
    Path(tenant): Path<String>,
    m: Member,
    Form(_): Form<Empty>,
) -> Result<Response, WebError> {
    st.app.request_my_deletion(&m.s).await?;
    Ok(redirect(&format!(
        "/m/{}/profile?done=deletion",
        url_encode(&tenant)
    )))
}

/// The tenant's logo, decoded from its stored data URL.
pub async fn logo(
    State(st): State<WebState>,
    Path(tenant): Path<String>,
) -> Result<Response, WebError> {
    let b = st.app.branding(&tenant).await?;
    let (mime, bytes) = b
        .logo
        .as_deref()
        .and_then(|l| l.strip_prefix("data:"))
        .and_then(|l| l.split_once(";base64,"))
        .and_then(|(mime, data)| decode_base64(data).map(|b| (mime.to_string(), b)))
        .ok_or_else(WebError::not_found)?;
    let ct = HeaderValue::from_str(&mime).map_err(|_| WebError::not_found())?;
    Ok((
        [
            (header::CONTENT_TYPE, ct),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            ),
        ],
        bytes,
    )
        .into_response())
}

/// Standard base64 (with padding); `None` on anything else.
pub fn decode_base64(s: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let s = s.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= val(*c)? << (18 - 6 * i);
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        match chunk.len() {
            4 => out.extend_from_slice(&bytes),
            3 => out.extend_from_slice(&bytes[..2]),
            2 => out.push(bytes[0]),
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_decodes_with_and_without_padding() {
        assert_eq!(
            super::decode_base64("aGVsbG8=").as_deref(),
            Some(&b"hello"[..])
        );
        assert_eq!(super::decode_base64("aGk").as_deref(), Some(&b"hi"[..]));
        assert_eq!(super::decode_base64("YWJj").as_deref(), Some(&b"abc"[..]));
        assert_eq!(super::decode_base64("a"), None);
        assert_eq!(super::decode_base64("a*bc"), None);
    }
}
