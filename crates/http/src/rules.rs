//! `/api/v1/rules` and `/api/v1/campaigns`: CRUD (editing saves a new version), status changes,
//! a campaign's target list, simulations and backtests (which write nothing).

use crate::AppState;
use crate::extract::{Auth, MAX_IDEMPOTENCY_KEY_LEN, Q, Write};
use crate::members::DEFAULT_PAGE;
use crate::problem::Problem;
use crate::wire::{to_value, written};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use fidelis_app::rules::{BacktestInput, SimulateInput};
use fidelis_core::rules::define::{CampaignDef, CampaignRecord, RuleDef, RuleRecord, Status};
use fidelis_store::IdemKey;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/rules", get(list_rules).post(create_rule))
        .route("/api/v1/rules/simulate", post(simulate))
        .route("/api/v1/rules/{id}", get(show_rule).put(update_rule))
        .route("/api/v1/rules/{id}/versions", get(rule_versions))
        .route("/api/v1/rules/{id}/{action}", post(rule_action))
        .route(
            "/api/v1/campaigns",
            get(list_campaigns).post(create_campaign),
        )
        .route(
            "/api/v1/campaigns/{id}",
            get(show_campaign).put(update_campaign),
        )
        .route("/api/v1/campaigns/{id}/members", post(upload_members))
        .route("/api/v1/campaigns/{id}/backtest", post(backtest))
        .route("/api/v1/campaigns/{id}/{action}", post(campaign_action))
}

/// A rule as the API shows it: its record with the definition's fields at the top level.
fn rule_json(r: &RuleRecord) -> Value {
    let mut v = to_value(&r.definition);
    v["id"] = json!(r.id);
    v["version"] = json!(r.version);
    v["status"] = json!(r.status);
    v["created_at"] = json!(r.created_at);
    v["updated_at"] = json!(r.updated_at);
    v
}

fn campaign_json(c: &CampaignRecord) -> Value {
    let mut v = to_value(&c.definition);
    v["id"] = json!(c.id);
    v["version"] = json!(c.version);
    v["status"] = json!(c.status);
    v["spent_points"] = json!(c.spent_points);
    v["remaining_points"] = json!(
        c.definition
            .budget_points
            .map(|b| (b - c.spent_points).max(0))
    );
    v["list_size"] = json!(c.list_size);
    v["created_at"] = json!(c.created_at);
    v["updated_at"] = json!(c.updated_at);
    v
}

fn action(a: &str) -> Result<Status, Problem> {
    match a {
        "activate" => Ok(Status::Active),
        "pause" => Ok(Status::Paused),
        "end" => Ok(Status::Ended),
        _ => Err(Problem::not_found(
            "no such endpoint: the actions are activate, pause and end",
        )),
    }
}

/// The idempotency key of a request without a body (status changes), bound to its method and
/// path.
fn idem(method: &Method, uri: &Uri, headers: &HeaderMap) -> Result<Option<IdemKey>, Problem> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = v
        .to_str()
        .map_err(|_| Problem::invalid("Idempotency-Key", "must be printable ASCII"))?
        .trim();
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN {
        return Err(Problem::invalid(
            "Idempotency-Key",
            format!("must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} characters"),
        ));
    }
    let mut h = Sha256::new();
    h.update(method.as_str().as_bytes());
    h.update(b" ");
    h.update(uri.path().as_bytes());
    Ok(Some(IdemKey {
        key: key.to_string(),
        request_hash: hex::encode(h.finalize()),
    }))
}

#[derive(Deserialize)]
struct RuleQuery {
    status: Option<String>,
    campaign_id: Option<String>,
    cursor: Option<String>,
    limit: Option<i64>,
}

fn limit(l: Option<i64>) -> Result<i64, Problem> {
    match l {
        None => Ok(DEFAULT_PAGE),
        Some(l) if (1..=fidelis_store::MAX_PAGE).contains(&l) => Ok(l),
        Some(_) => Err(Problem::invalid(
            "limit",
            format!("must be 1 to {}", fidelis_store::MAX_PAGE),
        )),
    }
}

async fn list_rules(
    State(s): State<AppState>,
    Auth(p): Auth,
    Q(q): Q<RuleQuery>,
) -> Result<Json<Value>, Problem> {
    let page = s
        .app
        .list_rules(
            &p,
            q.status.as_deref(),
            q.campaign_id,
            q.cursor,
            limit(q.limit)?,
        )
        .await?;
    Ok(Json(json!({
        "items": page.items.iter().map(rule_json).collect::<Vec<_>>(),
        "next_cursor": page.next_cursor,
    })))
}

async fn create_rule(
    State(s): State<AppState>,
    Auth(p): Auth,
    w: Write<RuleDef>,
) -> Result<Response, Problem> {
    let (r, replayed) = s.app.create_rule(&p, w.body, w.idem).await?;
    Ok(written(StatusCode::CREATED, rule_json(&r), replayed))
}

#[derive(Deserialize)]
struct VersionQuery {
    version: Option<i64>,
}

async fn show_rule(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    Q(q): Q<VersionQuery>,
) -> Result<Json<Value>, Problem> {
    Ok(Json(rule_json(&s.app.rule(&p, &id, q.version).await?)))
}

async fn update_rule(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    w: Write<RuleDef>,
) -> Result<Response, Problem> {
    let (r, replayed) = s.app.update_rule(&p, &id, w.body, w.idem).await?;
    Ok(written(StatusCode::OK, rule_json(&r), replayed))
}

async fn rule_versions(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, Problem> {
    let versions = s.app.rule_versions(&p, &id).await?;
    Ok(Json(
        json!({ "items": versions.iter().map(rule_json).collect::<Vec<_>>() }),
    ))
}

async fn rule_action(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path((id, a)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let to = action(&a)?;
    let key = idem(&method, &uri, &headers)?;
    let (r, replayed) = s.app.set_rule_status(&p, &id, to, key).await?;
    Ok(written(StatusCode::OK, rule_json(&r), replayed))
}

async fn simulate(
    State(s): State<AppState>,
    Auth(p): Auth,
    w: Write<SimulateInput>,
) -> Result<Json<Value>, Problem> {
    let sim = s.app.simulate(&p, w.body).await?;
    Ok(Json(to_value(&sim)))
}

async fn list_campaigns(
    State(s): State<AppState>,
    Auth(p): Auth,
    Q(q): Q<RuleQuery>,
) -> Result<Json<Value>, Problem> {
    let page = s.app.list_campaigns(&p, q.cursor, limit(q.limit)?).await?;
    Ok(Json(json!({
        "items": page.items.iter().map(campaign_json).collect::<Vec<_>>(),
        "next_cursor": page.next_cursor,
    })))
}

async fn create_campaign(
    State(s): State<AppState>,
    Auth(p): Auth,
    w: Write<CampaignDef>,
) -> Result<Response, Problem> {
    let (c, replayed) = s.app.create_campaign(&p, w.body, w.idem).await?;
    Ok(written(StatusCode::CREATED, campaign_json(&c), replayed))
}

async fn show_campaign(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, Problem> {
    Ok(Json(campaign_json(&s.app.campaign(&p, &id).await?)))
}

async fn update_campaign(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    w: Write<CampaignDef>,
) -> Result<Response, Problem> {
    let (c, replayed) = s.app.update_campaign(&p, &id, w.body, w.idem).await?;
    Ok(written(StatusCode::OK, campaign_json(&c), replayed))
}

async fn campaign_action(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path((id, a)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let to = action(&a)?;
    let key = idem(&method, &uri, &headers)?;
    let (c, replayed) = s.app.set_campaign_status(&p, &id, to, key).await?;
    Ok(written(StatusCode::OK, campaign_json(&c), replayed))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListInput {
    /// Member ids or the retailer's external ids.
    members: Vec<String>,
    #[serde(default)]
    replace: bool,
}

async fn upload_members(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    w: Write<ListInput>,
) -> Result<Response, Problem> {
    let (out, replayed) = s
        .app
        .upload_campaign_list(&p, &id, w.body.members, w.body.replace, w.idem)
        .await?;
    Ok(written(StatusCode::OK, to_value(&out), replayed))
}

async fn backtest(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    w: Write<BacktestInput>,
) -> Result<Json<Value>, Problem> {
    Ok(Json(to_value(&s.app.backtest(&p, &id, w.body).await?)))
}
