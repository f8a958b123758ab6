//! Members: search and filter, a member's profile (balances, expiring points, consents,
//! ledger history), and audited point adjustments.

use super::base;
use crate::WebState;
use crate::error::{WebError, redirect};
use crate::i18n::Lang;
use crate::render::{page, url_encode};
use crate::session::{Admin, Form};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use fidelis_app::AdjustmentInput;
use fidelis_app::console::Permission;
use fidelis_store::dashboard::MemberFilter;
use fidelis_store::model::LedgerTxn;
use minijinja::{Value, context};
use serde::Deserialize;

/// Members per page of the list, and ledger lines per page of a profile.
pub const MEMBERS_PAGE: i64 = 25;
pub const HISTORY_PAGE: i64 = 20;

#[derive(Deserialize)]
pub struct ListQuery {
    q: Option<String>,
    filter: Option<String>,
    cursor: Option<String>,
}

fn parse_filter(s: Option<&str>) -> MemberFilter {
    match s {
        Some("active") => MemberFilter::Active,
        Some("dormant") => MemberFilter::Dormant,
        Some("debt") => MemberFilter::InDebt,
        _ => MemberFilter::All,
    }
}

pub async fn list(
    State(st): State<WebState>,
    a: Admin,
    Query(q): Query<ListQuery>,
    headers: axum::http::HeaderMap,
) -> Result<Response, WebError> {
    let query = q.q.unwrap_or_default();
    let filter_name = q.filter.unwrap_or_else(|| "all".into());
    let filter = parse_filter(Some(&filter_name));
    let rows = st
        .app
        .search_members(&a.s, &query, filter, q.cursor.as_deref(), MEMBERS_PAGE)
        .await?;
    let lang = a.lang;
    let items: Vec<Value> = rows
        .items
        .iter()
        .map(|m| {
            context! {
                id => m.id, name => m.name, email => m.email, external_id => m.external_id,
                available => lang.number(m.available), pending => lang.number(m.pending),
                negative => m.available < 0, orders => m.order_count,
                last_activity => m.last_activity_at.as_deref().map(|t| lang.date(t, false)),
            }
        })
        .collect();
    let next = rows.next_cursor.map(|c| {
        format!(
            "/admin/members?q={}&filter={}&cursor={}",
            url_encode(&query),
            url_encode(&filter_name),
            url_encode(&c)
        )
    });
    let filters: Vec<Value> = ["all", "active", "dormant", "debt"]
        .iter()
        .map(|f| context! { value => f, label => lang.t(&format!("filter_{f}")), current => *f == filter_name })
        .collect();
    // htmx asks for the results only while the user types.
    let partial = headers.contains_key("hx-request");
    page(
        "admin/members.html",
        lang,
        context! {
            query, items, next, filters, partial, first_page => q.cursor.is_none(),
            ..base(&a, "members")
        },
    )
}

/// Ledger lines as people read them: what happened, and how each balance moved.
pub fn history_rows(items: &[LedgerTxn], lang: Lang) -> Vec<Value> {
    items
        .iter()
        .map(|t| {
            let what = match (t.kind.as_str(), &t.order_id) {
                ("adjust", _) => t.reason.clone(),
                (_, Some(order)) => format!("{} {order}", lang.t("order")),
                _ => t.reason.clone(),
            };
            let kind_key = format!("kind_{}", t.kind);
            let kind = match lang.t(&kind_key) {
                "" => t.kind.clone(),
                k => k.to_string(),
            };
            let signed = |v: i64| {
                if v > 0 {
                    format!("+{}", lang.number(v))
                } else {
                    lang.number(v)
                }
            };
            context! {
                date => lang.date(&t.created_at, true), kind, what, actor => t.actor,
                available => (t.available_delta != 0).then(|| signed(t.available_delta)),
                pending => (t.pending_delta != 0).then(|| signed(t.pending_delta)),
                up => t.available_delta + t.pending_delta > 0,
            }
        })
        .collect()
}

#[derive(Deserialize)]
pub struct ShowQuery {
    cursor: Option<String>,
    done: Option<String>,
}

pub async fn show(
    State(st): State<WebState>,
    a: Admin,
    Path(id): Path<String>,
    Query(q): Query<ShowQuery>,
) -> Result<Response, WebError> {
    let p = &a.s.principal;
    let lang = a.lang;
    let member = st.app.member(p, &id).await?;
    let balance = st.app.balance(p, &id).await?;
    let history = st
        .app
        .history(p, &id, q.cursor.as_deref(), HISTORY_PAGE)
        .await?;
    let (program, _) = st.app.program(p).await?;
    let deletion = st.app.deletion_requests(&a.s, Some(&id)).await?;
    let tier = crate::portal::tier(&st.app, p, &id, lang).await;
    let coupons: Vec<Value> = st
        .app
        .member_coupons(p, &id, None, 20)
        .await
        .map(|page| page.items)
        .unwrap_or_default()
        .iter()
        .map(|c| context! { code => c.code, title => c.reward_title, status => c.status })
        .collect();
    let expiring: Vec<Value> = balance
        .expiring
        .iter()
        .take(5)
        .map(
            |e| context! { points => lang.number(e.points), at => lang.date(&e.expires_at, false) },
        )
        .collect();
    let consents: Vec<Value> = member
        .consents
        .iter()
        .map(|c| {
            let label = match lang.t(&format!("consent_{}", c.purpose)) {
                "" => c.purpose.clone(),
                l => l.to_string(),
            };
            context! { label, granted => c.granted, at => lang.date(&c.at, true), source => c.source }
        })
        .collect();
    let next = history.next_cursor.map(|c| {
        format!(
            "/admin/members/{}?cursor={}",
            url_encode(&id),
            url_encode(&c)
        )
    });
    let notice = match q.done.as_deref() {
        Some("adjusted") => Some(lang.t("adjusted_done")),
        _ => None,
    };
    page(
        "admin/member.html",
        lang,
        context! {
            member => Value::from_serialize(&member),
            available => lang.number(balance.available),
            pending => lang.number(balance.pending),
            lifetime => lang.number(balance.lifetime_earned),
            spend => fidelis_core::money::format_minor(member.lifetime_spend_minor, program.currency.exponent()),
            currency => program.currency.code(),
            points_name => program.points_name,
            since => lang.date(&member.created_at, false),
            expiring, consents, next, notice, tier, coupons,
            deletion_requested => deletion.iter().any(|d| !d.handled),
            history => history_rows(&history.items, lang),
            first_page => q.cursor.is_none(),
            ..base(&a, "members")
        },
    )
}

#[derive(Deserialize)]
pub struct AdjustForm {
    points: String,
    reason: String,
}

pub async fn adjust(
    State(st): State<WebState>,
    a: Admin,
    Path(id): Path<String>,
    Form(f): Form<AdjustForm>,
) -> Result<Response, WebError> {
    a.s.require(Permission::AdjustPoints)?;
    let points: i64 = f
        .points
        .trim()
        .replace(['+', ' '], "")
        .parse()
        .map_err(|_| {
            WebError::Page(
                StatusCode::UNPROCESSABLE_ENTITY,
                a.lang.t("adjust_points_invalid").into(),
            )
        })?;
    let input = AdjustmentInput {
        points,
        reason: f.reason,
    };
    st.app.adjust(&a.s.principal, &id, input, None).await?;
    Ok(redirect(&format!(
        "/admin/members/{}?done=adjusted",
        url_encode(&id)
    )))
}

pub async fn deletions(State(st): State<WebState>, a: Admin) -> Result<Response, WebError> {
    let lang = a.lang;
    let items: Vec<Value> = st
        .app
        .deletion_requests(&a.s, None)
        .await?
        .iter()
        .map(|d| context! { member_id => d.member_id, at => lang.date(&d.requested_at, true), source => d.source })
        .collect();
    page(
        "admin/deletions.html",
        lang,
        context! { items, ..base(&a, "deletions") },
    )
}
