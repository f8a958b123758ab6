//! Tiers: the ladder as a table, and its definition edited as JSON (the same document as
//! `PUT /api/v1/tiers`), checked by the programme's own validation when saved.

use super::base;
use crate::WebState;
use crate::error::WebError;
use crate::render::page_with;
use crate::session::{Admin, Form};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use fidelis_app::AppError;
use fidelis_app::console::Permission;
use fidelis_core::tiers::TierConfig;
use minijinja::{Value, context};
use serde::Deserialize;

/// The largest tiers document accepted from the form.
pub const MAX_TIERS_JSON: usize = 32 * 1024;

pub const EXAMPLE: &str = r#"{
  "metric": "points_earned",
  "window": { "kind": "rolling", "months": 12 },
  "review": { "kind": "anniversary", "months": 12 },
  "tiers": [
    { "name": "Silver", "threshold": 0 },
    { "name": "Gold", "threshold": 1000, "earn_multiplier": "1.25", "perks": ["free shipping"] }
  ]
}"#;

fn view(
    a: &Admin,
    cfg: Option<&TierConfig>,
    json: String,
    extra: Value,
    status: StatusCode,
) -> Result<Response, WebError> {
    let rows: Vec<Value> = cfg
        .map(|c| {
            c.tiers
                .iter()
                .map(|t| {
                    context! {
                        name => t.name,
                        threshold => serde_json::to_string(&t.threshold).unwrap_or_default().trim_matches('"').to_string(),
                        multiplier => t.earn_multiplier, perks => t.perks.join(", "),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let metric = cfg.map(|c| {
        serde_json::to_string(&c.metric)
            .unwrap_or_default()
            .trim_matches('"')
            .to_string()
    });
    page_with(
        status,
        "admin/tiers.html",
        a.lang,
        context! { rows, metric, json, ..minijinja::value::merge_maps([extra, base(a, "tiers")]) },
    )
}

pub async fn show(State(st): State<WebState>, a: Admin) -> Result<Response, WebError> {
    let cfg = st.app.tiers(&a.s.principal).await?;
    let json = match &cfg {
        Some(c) => serde_json::to_string_pretty(c).unwrap_or_default(),
        None => EXAMPLE.to_string(),
    };
    view(
        &a,
        cfg.as_ref(),
        json,
        context! { saved => false },
        StatusCode::OK,
    )
}

#[derive(Deserialize)]
pub struct TiersForm {
    json: String,
}

pub async fn save(
    State(st): State<WebState>,
    a: Admin,
    Form(f): Form<TiersForm>,
) -> Result<Response, WebError> {
    a.s.require(Permission::ManageProgramme)?;
    let parsed: Result<Option<TierConfig>, AppError> = if f.json.len() > MAX_TIERS_JSON {
        Err(AppError::invalid(
            "tiers",
            format!("must be at most {MAX_TIERS_JSON} bytes"),
        ))
    } else if f.json.trim().is_empty() || f.json.trim() == "null" {
        Ok(None)
    } else {
        serde_json::from_str(&f.json)
            .map(Some)
            .map_err(|e| AppError::invalid("tiers", e.to_string()))
    };
    let result = match parsed {
        Ok(cfg) => st
            .app
            .put_tiers(&a.s.principal, cfg, None)
            .await
            .map(|(c, _, _)| c),
        Err(e) => Err(e),
    };
    match result {
        Ok(cfg) => {
            let json = cfg
                .as_ref()
                .map(|c| serde_json::to_string_pretty(c).unwrap_or_default())
                .unwrap_or_default();
            view(
                &a,
                cfg.as_ref(),
                json,
                context! { saved => true },
                StatusCode::OK,
            )
        }
        Err(AppError::Invalid { field, reason }) => {
            let cfg = st.app.tiers(&a.s.principal).await?;
            view(
                &a,
                cfg.as_ref(),
                f.json,
                context! { error => format!("{field}: {reason}") },
                StatusCode::UNPROCESSABLE_ENTITY,
            )
        }
        Err(e) => Err(e.into()),
    }
}
