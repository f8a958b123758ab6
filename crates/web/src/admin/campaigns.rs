//! Campaigns: the list (filtered by status), a form for a new campaign (a budget, dates and a
//! target — everyone or an expression over the member, checked as it is typed), status changes,
//! and a backtest over past events (nothing written).

use super::base;
use crate::WebState;
use crate::error::{WebError, redirect};
use crate::i18n::Lang;
use crate::render::{page_with, url_encode};
use crate::session::{Admin, Form};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use fidelis_app::AppError;
use fidelis_app::console::Permission;
use fidelis_app::rules::BacktestInput;
use fidelis_core::rules::define::{CampaignDef, CampaignRecord, Status, TargetDef};
use minijinja::{Value, context};
use serde::Deserialize;

/// Campaigns shown per page.
pub const CAMPAIGNS_PAGE: usize = 25;
/// Campaigns read from the store per round while filling a filtered page.
const SCAN_BATCH: i64 = 100;
/// Rounds of [`SCAN_BATCH`] read at most for one filtered page; the pager continues after.
const SCAN_ROUNDS: usize = 10;

#[derive(Deserialize)]
pub struct ListQuery {
    cursor: Option<String>,
    status: Option<String>,
    done: Option<String>,
}

fn target_kind(t: &TargetDef) -> &'static str {
    match t {
        TargetDef::All => "all",
        TargetDef::Expression { .. } => "expression",
        TargetDef::List => "list",
    }
}

fn day(lang: Lang, v: &Option<String>) -> String {
    v.as_deref()
        .map(|s| lang.date(s, false))
        .unwrap_or_default()
}

fn row(r: &CampaignRecord, lang: Lang) -> Value {
    let d = &r.definition;
    let status = r.status.as_str();
    context! {
        id => r.id, name => d.name, version => r.version,
        status => lang.t(&format!("status_{status}")), status_code => status,
        starts => day(lang, &d.starts_at), ends => day(lang, &d.ends_at),
        budget => d.budget_points.map(|b| lang.number(b)),
        spent => lang.number(r.spent_points),
        remaining => d.budget_points.map(|b| lang.number((b - r.spent_points).max(0))),
        target => lang.t(&format!("target_{}", target_kind(&d.target))),
        target_code => target_kind(&d.target),
        expression => match &d.target { TargetDef::Expression { expression } => Some(expression.clone()), _ => None },
        list_size => r.list_size,
    }
}

/// One page of campaigns with `filter`'s status: the store lists by id, so the page is
/// filled from successive batches; the next cursor is the last campaign read.
async fn filtered(
    st: &WebState,
    a: &Admin,
    filter: Option<Status>,
    mut cursor: Option<String>,
) -> Result<(Vec<CampaignRecord>, Option<String>), WebError> {
    let mut out = Vec::new();
    for _ in 0..SCAN_ROUNDS {
        let page = st
            .app
            .list_campaigns(&a.s.principal, cursor.clone(), SCAN_BATCH)
            .await?;
        for r in page.items {
            cursor = Some(r.id.clone());
            if filter.is_none_or(|f| f == r.status) {
                out.push(r);
                if out.len() == CAMPAIGNS_PAGE {
                    return Ok((out, cursor));
                }
            }
        }
        if page.next_cursor.is_none() {
            return Ok((out, None));
        }
    }
    Ok((out, cursor))
}

async fn list_page(
    st: &WebState,
    a: &Admin,
    q: ListQuery,
    extra: Value,
    status: StatusCode,
) -> Result<Response, WebError> {
    let lang = a.lang;
    let filter = q.status.as_deref().and_then(Status::parse);
    let code = filter.map(|s| s.as_str()).unwrap_or("");
    let (rows, next) = filtered(st, a, filter, q.cursor.clone()).await?;
    let items: Vec<Value> = rows.iter().map(|r| row(r, lang)).collect();
    let next = next.map(|c| {
        format!(
            "/admin/campaigns?status={}&cursor={}",
            url_encode(code),
            url_encode(&c)
        )
    });
    let notice = match q.done.as_deref() {
        Some("status") => Some(lang.t("saved")),
        _ => None,
    };
    let filters: Vec<Value> = ["", "draft", "active", "paused", "ended"]
        .iter()
        .map(|s| {
            let label = if s.is_empty() {
                lang.t("filter_all_campaigns").to_string()
            } else {
                lang.t(&format!("status_{s}")).to_string()
            };
            context! { value => s, label, current => code == *s }
        })
        .collect();
    page_with(
        status,
        "admin/campaigns.html",
        lang,
        context! {
            items, next, notice, filters, first_page => q.cursor.is_none(),
            ..minijinja::value::merge_maps([extra, base(a, "campaigns")])
        },
    )
}

pub async fn list(
    State(st): State<WebState>,
    a: Admin,
    Query(q): Query<ListQuery>,
) -> Result<Response, WebError> {
    list_page(&st, &a, q, context! { f => context! {} }, StatusCode::OK).await
}

#[derive(Deserialize, serde::Serialize, Default)]
#[serde(default)]
pub struct CampaignForm {
    name: String,
    budget_points: String,
    valid_from: String,
    valid_to: String,
    target: String,
    expression: String,
    activate: Option<String>,
}

/// A date field (`YYYY-MM-DD`, from `<input type="date">`) as the start of that day in UTC.
fn date_field(field: &str, v: &str) -> Result<Option<String>, AppError> {
    let v = v.trim();
    if v.is_empty() {
        return Ok(None);
    }
    chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d")
        .map(|d| Some(format!("{d}T00:00:00Z")))
        .map_err(|_| AppError::invalid(field, "must be a date YYYY-MM-DD"))
}

fn to_def(f: &CampaignForm) -> Result<CampaignDef, AppError> {
    let budget = f
        .budget_points
        .trim()
        .replace([' ', '\u{202f}', '\u{a0}'], "");
    let budget_points =
        match budget.as_str() {
            "" => None,
            b => Some(b.parse().map_err(|_| {
                AppError::invalid("budget_points", "must be a whole number of points")
            })?),
        };
    let target = match f.target.as_str() {
        "" | "all" => TargetDef::All,
        "expression" => TargetDef::Expression {
            expression: f.expression.trim().to_string(),
        },
        _ => return Err(AppError::invalid("target", "is not a target")),
    };
    Ok(CampaignDef {
        name: f.name.trim().to_string(),
        description: None,
        starts_at: date_field("valid_from", &f.valid_from)?,
        ends_at: date_field("valid_to", &f.valid_to)?,
        budget_points,
        caps: Default::default(),
        target,
    })
}

pub async fn create(
    State(st): State<WebState>,
    a: Admin,
    Form(f): Form<CampaignForm>,
) -> Result<Response, WebError> {
    a.s.require(Permission::ManageProgramme)?;
    let created = match to_def(&f) {
        Ok(def) => st.app.create_campaign(&a.s.principal, def, None).await,
        Err(e) => Err(e),
    };
    match created {
        Ok((c, _)) => {
            if f.activate.is_some() {
                st.app
                    .set_campaign_status(&a.s.principal, &c.id, Status::Active, None)
                    .await?;
            }
            Ok(redirect(&format!(
                "/admin/campaigns/{}?done=created",
                url_encode(&c.id)
            )))
        }
        Err(AppError::Invalid { field, reason }) => {
            let q = ListQuery {
                cursor: None,
                status: None,
                done: None,
            };
            let extra =
                context! { error => format!("{field}: {reason}"), f => Value::from_serialize(&f) };
            list_page(&st, &a, q, extra, StatusCode::UNPROCESSABLE_ENTITY).await
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
pub struct ShowQuery {
    done: Option<String>,
}

/// One campaign: its figures, the status changes allowed from where it is, the backtest form.
pub async fn show(
    State(st): State<WebState>,
    a: Admin,
    Path(id): Path<String>,
    Query(q): Query<ShowQuery>,
) -> Result<Response, WebError> {
    let lang = a.lang;
    let c = st.app.campaign(&a.s.principal, &id).await?;
    let moves: Vec<Value> = [Status::Active, Status::Paused, Status::Ended]
        .into_iter()
        .filter(|to| c.status.can_become(*to))
        .map(|to| {
            let label = match to {
                Status::Active => "activate",
                Status::Paused => "pause",
                _ => "end",
            };
            context! { to => to.as_str(), label => lang.t(label) }
        })
        .collect();
    let notice = match q.done.as_deref() {
        Some("created") => Some(lang.t("campaign_created")),
        Some("status") => Some(lang.t("saved")),
        _ => None,
    };
    let today = chrono::Utc::now().date_naive();
    page_with(
        StatusCode::OK,
        "admin/campaign.html",
        lang,
        context! {
            c => row(&c, lang), moves, notice,
            bt_from => (today - chrono::Duration::days(30)).to_string(),
            bt_to => today.to_string(),
            ..base(&a, "campaigns")
        },
    )
}

#[derive(Deserialize)]
pub struct StatusForm {
    id: String,
    status: String,
}

pub async fn set_status(
    State(st): State<WebState>,
    a: Admin,
    Form(f): Form<StatusForm>,
) -> Result<Response, WebError> {
    a.s.require(Permission::ManageProgramme)?;
    let to =
        Status::parse(&f.status).ok_or_else(|| AppError::invalid("status", "is not a status"))?;
    st.app
        .set_campaign_status(&a.s.principal, &f.id, to, None)
        .await?;
    Ok(redirect(&format!(
        "/admin/campaigns/{}?done=status",
        url_encode(&f.id)
    )))
}

#[derive(Deserialize)]
pub struct CheckQuery {
    expression: Option<String>,
}

/// The target expression as it is typed (htmx): `ok`, or where and why it does not compile.
pub async fn check(_a: Admin, Query(q): Query<CheckQuery>) -> Response {
    super::rules::check_html(q.expression.unwrap_or_default())
}

#[derive(Deserialize)]
pub struct BacktestQuery {
    from: Option<String>,
    to: Option<String>,
}

/// What the campaign's rules would have issued over past events, written nowhere.
pub async fn backtest(
    State(st): State<WebState>,
    a: Admin,
    Path(id): Path<String>,
    Query(q): Query<BacktestQuery>,
) -> Result<Response, WebError> {
    let lang = a.lang;
    let input = date_field("from", q.from.as_deref().unwrap_or("")).and_then(|from| {
        let to = date_field("to", q.to.as_deref().unwrap_or(""))?;
        match (from, to) {
            (Some(from), Some(to)) => Ok(BacktestInput { from, to }),
            (None, _) => Err(AppError::invalid("from", "is required")),
            (_, None) => Err(AppError::invalid("to", "is required")),
        }
    });
    let result = match input {
        Ok(input) => st.app.backtest(&a.s.principal, &id, input).await,
        Err(e) => Err(e),
    };
    let out = match result {
        Ok(b) => {
            let by_rule: Vec<Value> = b
                .by_rule
                .iter()
                .map(|r| context! { name => r.name, points => lang.number(r.points), awards => lang.number(r.awards) })
                .collect();
            context! {
                points => lang.number(b.points), members => lang.number(b.members),
                share => b.budget_used_percent.map(|p| format!("{p:.1}")),
                exhausted => b.budget_exhausted_at.as_deref().map(|t| lang.date(t, true)),
                capped => lang.number(b.capped_points), events => lang.number(b.events_scanned),
                truncated => b.truncated, by_rule,
            }
        }
        Err(AppError::Invalid { field, reason }) => {
            context! { error => format!("{field}: {reason}") }
        }
        Err(e) => return Err(e.into()),
    };
    crate::render::page("admin/backtest.html", lang, context! { r => out, id => id })
}
