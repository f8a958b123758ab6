//! Earning rules: the list, a form for the common shapes (a trigger, a condition checked as it
//! is typed, one effect, a priority), activation, and a dry-run of a sample purchase through
//! the rules (nothing written).

use super::base;
use crate::WebState;
use crate::error::{WebError, redirect};
use crate::render::{page_with, url_encode};
use crate::session::{Admin, Form};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use fidelis_app::AppError;
use fidelis_app::console::Permission;
use fidelis_app::rules::{SimEvent, SimulateInput};
use fidelis_core::event::{Channel, LineInput};
use fidelis_core::rules::define::{EffectDef, RuleDef, Stacking, Status, TriggerKind};
use minijinja::{Value, context};
use serde::Deserialize;

pub const RULES_PAGE: i64 = 25;

#[derive(Deserialize)]
pub struct ListQuery {
    cursor: Option<String>,
    status: Option<String>,
    done: Option<String>,
}

async fn list_page(
    st: &WebState,
    a: &Admin,
    q: ListQuery,
    extra: Value,
    status: StatusCode,
) -> Result<Response, WebError> {
    let lang = a.lang;
    let filter = q.status.filter(|s| Status::parse(s).is_some());
    let rows = st
        .app
        .list_rules(
            &a.s.principal,
            filter.as_deref(),
            None,
            q.cursor.clone(),
            RULES_PAGE,
        )
        .await?;
    let items: Vec<Value> = rows
        .items
        .iter()
        .map(|r| {
            let d = &r.definition;
            let effect = d.effects.first().map(|e| effect_text(e, lang)).unwrap_or_default();
            context! {
                id => r.id, name => d.name, trigger => lang.t(&format!("trigger_{}", d.trigger.as_str())),
                condition => d.condition, effect, priority => d.priority,
                status => lang.t(&format!("status_{}", status_name(r.status))), status_code => status_name(r.status),
                version => r.version,
            }
        })
        .collect();
    let next = rows.next_cursor.map(|c| {
        format!(
            "/admin/rules?status={}&cursor={}",
            url_encode(filter.as_deref().unwrap_or("")),
            url_encode(&c)
        )
    });
    let notice = match q.done.as_deref() {
        Some("created") => Some(lang.t("rule_created")),
        Some("status") => Some(lang.t("saved")),
        _ => None,
    };
    let filters: Vec<Value> = ["", "draft", "active", "paused", "ended"]
        .iter()
        .map(|s| {
            let label = if s.is_empty() {
                lang.t("filter_all_rules").to_string()
            } else {
                lang.t(&format!("status_{s}")).to_string()
            };
            context! { value => s, label, current => filter.as_deref().unwrap_or("") == *s }
        })
        .collect();
    page_with(
        status,
        "admin/rules.html",
        lang,
        context! {
            items, next, notice, filters, first_page => q.cursor.is_none(),
            ..minijinja::value::merge_maps([extra, base(a, "rules")])
        },
    )
}

fn status_name(s: Status) -> &'static str {
    match s {
        Status::Draft => "draft",
        Status::Active => "active",
        Status::Paused => "paused",
        Status::Ended => "ended",
    }
}

fn effect_text(e: &EffectDef, lang: crate::i18n::Lang) -> String {
    match e {
        EffectDef::Points { points } => format!(
            "+{} {}",
            lang.number(*points),
            lang.t("effect_points_short")
        ),
        EffectDef::PerAmount { rate, .. } => {
            format!("{rate} {}", lang.t("effect_per_amount_short"))
        }
        EffectDef::Multiplier { factor, .. } => format!("× {factor}"),
        EffectDef::NthOrder { n, points, .. } => format!("+{points} @ {n}"),
        EffectDef::Extension { kind, .. } => kind.clone(),
    }
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
pub struct RuleForm {
    name: String,
    trigger: String,
    event_type: String,
    condition: String,
    effect: String,
    amount: String,
    priority: String,
    activate: Option<String>,
}

fn to_def(f: &RuleForm) -> Result<RuleDef, AppError> {
    let trigger: TriggerKind = serde_json::from_value(serde_json::Value::String(f.trigger.clone()))
        .map_err(|_| AppError::invalid("trigger", "is not a trigger"))?;
    let amount = f.amount.trim().replace(',', ".");
    let effect = match f.effect.as_str() {
        "points" => EffectDef::Points {
            points: amount
                .parse()
                .map_err(|_| AppError::invalid("amount", "must be a whole number of points"))?,
        },
        "per_amount" => EffectDef::PerAmount {
            rate: amount,
            lines: None,
        },
        "multiplier" => EffectDef::Multiplier {
            factor: amount,
            lines: None,
        },
        _ => return Err(AppError::invalid("effect", "is not an effect")),
    };
    let condition = match f.condition.trim() {
        "" => "true".to_string(),
        c => c.to_string(),
    };
    Ok(RuleDef {
        name: f.name.trim().to_string(),
        description: None,
        trigger,
        event_type: (!f.event_type.trim().is_empty()).then(|| f.event_type.trim().to_string()),
        condition,
        effects: vec![effect],
        priority: f.priority.trim().parse().unwrap_or(100),
        valid_from: None,
        valid_to: None,
        schedule: vec![],
        stacking: Stacking::Stackable,
        caps: Default::default(),
        campaign_id: None,
    })
}

pub async fn create(
    State(st): State<WebState>,
    a: Admin,
    Form(f): Form<RuleForm>,
) -> Result<Response, WebError> {
    a.s.require(Permission::ManageProgramme)?;
    let created = match to_def(&f) {
        Ok(def) => st.app.create_rule(&a.s.principal, def, None).await,
        Err(e) => Err(e),
    };
    match created {
        Ok((rule, _)) => {
            if f.activate.is_some() {
                st.app
                    .set_rule_status(&a.s.principal, &rule.id, Status::Active, None)
                    .await?;
            }
            Ok(redirect("/admin/rules?done=created"))
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
        .set_rule_status(&a.s.principal, &f.id, to, None)
        .await?;
    Ok(redirect("/admin/rules?done=status"))
}

#[derive(Deserialize)]
pub struct CheckQuery {
    condition: Option<String>,
}

/// The condition as it is typed (htmx): `ok`, or where and why it does not compile.
pub async fn check(_a: Admin, Query(q): Query<CheckQuery>) -> Response {
    check_html(q.condition.unwrap_or_default())
}

/// `ok`, or where and why the expression `src` (empty: `true`) does not compile.
pub(super) fn check_html(src: String) -> Response {
    let src = if src.trim().is_empty() {
        "true".to_string()
    } else {
        src
    };
    let html = match fidelis_core::rules::compile_condition(&src) {
        Ok(_) => "<span class=\"check-ok\" role=\"status\">✓</span>".to_string(),
        Err(e) => format!(
            "<span class=\"check-err\" role=\"alert\">{}</span>",
            e.to_string()
                .replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
        ),
    };
    Html(html).into_response()
}

#[derive(Deserialize)]
pub struct DryRunQuery {
    total: Option<String>,
    category: Option<String>,
    drafts: Option<String>,
}

/// What a sample purchase would earn under the rules, written nowhere.
pub async fn dry_run(
    State(st): State<WebState>,
    a: Admin,
    Query(q): Query<DryRunQuery>,
) -> Result<Response, WebError> {
    let lang = a.lang;
    let total = q.total.unwrap_or_else(|| "50.00".into()).replace(',', ".");
    let category = q.category.unwrap_or_default();
    let input = SimulateInput {
        event: SimEvent::Purchase {
            channel: Channel::Pos,
            total: total.clone(),
            lines: vec![LineInput {
                sku: "sample".into(),
                category: (!category.trim().is_empty()).then(|| category.trim().to_string()),
                quantity: 1,
                unit_price: total.clone(),
            }],
            store_id: None,
            order_id: None,
            occurred_at: None,
        },
        member: None,
        include_drafts: q.drafts.is_some(),
        rule_ids: None,
    };
    let out = match st.app.simulate(&a.s.principal, input).await {
        Ok(sim) => {
            let rules: Vec<Value> = sim
                .rules
                .iter()
                .map(|r| context! { name => r.name, matched => r.matched, reason => r.reason, points => r.points })
                .collect();
            context! { points => lang.number(sim.points), rules }
        }
        Err(AppError::Invalid { field, reason }) => {
            context! { error => format!("{field}: {reason}") }
        }
        Err(e) => return Err(e.into()),
    };
    crate::render::page("admin/dry_run.html", lang, context! { r => out })
}
