//! The dashboard: members, activity, points issued, redeemed and expired over a window, the
//! outstanding liability, and a daily chart.

use super::base;
use crate::WebState;
use crate::chart::{Series, line_chart};
use crate::error::WebError;
use crate::render::page;
use crate::session::Admin;
use axum::extract::{Query, State};
use axum::response::Response;
use fidelis_store::dashboard::DAY_MICROS;
use minijinja::{Value, context};
use serde::Deserialize;

/// Windows the dashboard offers, in days.
pub const WINDOWS: [i64; 3] = [7, 30, 90];

#[derive(Deserialize)]
pub struct DashQuery {
    days: Option<i64>,
}

pub async fn show(
    State(st): State<WebState>,
    a: Admin,
    Query(q): Query<DashQuery>,
) -> Result<Response, WebError> {
    let days = q.days.filter(|d| WINDOWS.contains(d)).unwrap_or(30);
    let lang = a.lang;
    let f = st.app.dashboard(&a.s, days).await?;
    let (program, _) = st.app.program(&a.s.principal).await?;
    let deletions = st.app.deletion_requests(&a.s, None).await?.len();
    let pct = |n: i64, d: i64| {
        if d > 0 {
            format!("{} %", n * 100 / d)
        } else {
            "–".into()
        }
    };
    let card = |label: &str, value: i64, hint: String| {
        context! { label => label, value => lang.number(value), hint => hint }
    };
    let cards = vec![
        card(
            lang.t("dash_members"),
            f.members,
            format!("+{} {}", lang.number(f.new_members), lang.t("dash_new")),
        ),
        card(
            lang.t("dash_active"),
            f.active,
            format!(
                "{} · {}",
                pct(f.active, f.members),
                lang.t("dash_of_members")
            ),
        ),
        card(
            lang.t("dash_active_90"),
            f.active_90,
            pct(f.active_90, f.members),
        ),
        card(lang.t("dash_issued"), f.issued, program.points_name.clone()),
        card(
            lang.t("dash_redeemed"),
            f.redeemed,
            pct(f.redeemed, f.issued) + " " + lang.t("dash_of_issued"),
        ),
        card(
            lang.t("dash_expired"),
            f.expired,
            pct(f.expired, f.issued) + " " + lang.t("dash_of_issued"),
        ),
        card(
            lang.t("dash_liability"),
            f.liability_available + f.liability_pending,
            format!(
                "{} {} · {} {}",
                lang.number(f.liability_pending),
                lang.t("pending").to_lowercase(),
                lang.number(f.adjusted),
                lang.t("dash_adjusted")
            ),
        ),
    ];
    let labels: Vec<String> = f
        .daily
        .iter()
        .map(|d| {
            let t = fidelis_core::time::from_micros(d.day * DAY_MICROS);
            match lang {
                crate::i18n::Lang::Fr => t.format("%d/%m").to_string(),
                crate::i18n::Lang::En => t.format("%b %d").to_string(),
            }
        })
        .collect();
    let series = [
        Series {
            label: lang.t("dash_issued"),
            values: f.daily.iter().map(|d| d.issued).collect(),
        },
        Series {
            label: lang.t("dash_redeemed"),
            values: f.daily.iter().map(|d| d.redeemed).collect(),
        },
        Series {
            label: lang.t("dash_expired"),
            values: f.daily.iter().map(|d| d.expired).collect(),
        },
    ];
    let chart = line_chart(lang.t("dash_chart"), &labels, &series, |v| lang.number(v));
    let legend: Vec<&str> = series.iter().map(|s| s.label).collect();
    let windows: Vec<Value> = WINDOWS
        .iter()
        .map(|w| context! { days => w, current => *w == days })
        .collect();
    page(
        "admin/dashboard.html",
        lang,
        context! {
            days, cards, windows, legend, deletions,
            chart => Value::from_safe_string(chart),
            ..base(&a, "dashboard")
        },
    )
}
