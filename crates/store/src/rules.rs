//! Rules and campaigns: their versions (editing a rule writes a new immutable version; awards
//! name the version that gave them), statuses, campaign target lists, and a per-tenant version
//! counter that every change bumps, so each node's compiled copy knows when to reload.

use crate::conn::{Conn, Row};
use crate::error::{Result, StoreError};
use crate::idem::IdemKey;
use crate::ledger::ts;
use crate::model::Page;
use crate::runtime::Store;
use fidelis_core::rules::define::{
    CampaignDef, CampaignRecord, MAX_ACTIVE_RULES, MAX_CAMPAIGNS, MAX_RULES, MAX_TARGET_LIST,
    RuleDef, RuleRecord, Status,
};
use serde::{Deserialize, Serialize};

/// Migration 2.
pub(crate) const MIGRATION: &str = r#"
CREATE TABLE rules (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    version BIGINT NOT NULL,
    status TEXT NOT NULL,
    name TEXT NOT NULL,
    campaign_id TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX rules_by_status ON rules (tenant_id, status);
CREATE TABLE rule_versions (
    tenant_id TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    definition TEXT NOT NULL,
    actor TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, rule_id, version)
);
CREATE TABLE campaigns (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    version BIGINT NOT NULL,
    status TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE TABLE campaign_versions (
    tenant_id TEXT NOT NULL,
    campaign_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    definition TEXT NOT NULL,
    actor TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, campaign_id, version)
);
CREATE TABLE campaign_members (
    tenant_id TEXT NOT NULL,
    campaign_id TEXT NOT NULL,
    member_id TEXT NOT NULL,
    PRIMARY KEY (tenant_id, campaign_id, member_id)
);
CREATE TABLE rule_counters (
    tenant_id TEXT NOT NULL,
    counter TEXT NOT NULL,
    member_id TEXT NOT NULL,
    period TEXT NOT NULL,
    points BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, counter, member_id, period)
);
CREATE TABLE awards (
    id {ID},
    tenant_id TEXT NOT NULL,
    event_id BIGINT NOT NULL,
    order_id TEXT,
    member_id TEXT NOT NULL,
    source TEXT NOT NULL,
    rule_version BIGINT,
    campaign_id TEXT,
    points BIGINT NOT NULL,
    basis TEXT,
    basis_total BIGINT NOT NULL,
    basis_refunded BIGINT NOT NULL,
    clawed_back BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX awards_by_order ON awards (tenant_id, order_id);
CREATE INDEX awards_by_event ON awards (tenant_id, event_id);
CREATE INDEX awards_by_campaign ON awards (tenant_id, campaign_id);
CREATE INDEX awards_by_source ON awards (tenant_id, source, rule_version);
CREATE TABLE rule_grants (
    tenant_id TEXT NOT NULL,
    grant_key TEXT NOT NULL,
    result TEXT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, grant_key)
);
CREATE TABLE rules_state (
    tenant_id TEXT PRIMARY KEY,
    version BIGINT NOT NULL
);
"#;

fn to_json<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Unprocessable(e.to_string()))
}

fn from_json<T: serde::de::DeserializeOwned>(s: &str) -> Result<T> {
    serde_json::from_str(s)
        .map_err(|e| StoreError::Unprocessable(format!("stored definition unreadable: {e}")))
}

fn status(s: &str) -> Status {
    Status::parse(s).unwrap_or(Status::Ended)
}

/// Bumps the tenant's rules version: every node reloads its compiled rules when it sees it move.
fn bump(c: &mut dyn Conn, tenant: &str) -> Result<()> {
    c.execute(
        "INSERT INTO rules_state (tenant_id, version) VALUES ($1, 1) ON CONFLICT (tenant_id) DO UPDATE SET version = rules_state.version + 1",
        &[tenant.into()],
    )?;
    Ok(())
}

fn audit(
    c: &mut dyn Conn,
    tenant: &str,
    actor: &str,
    action: &str,
    subject: &str,
    detail: &str,
    now: i64,
) -> Result<()> {
    c.execute(
        "INSERT INTO audit_log (tenant_id, actor, action, subject, detail, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        &[tenant.into(), actor.into(), action.into(), subject.into(), detail.into(), now.into()],
    )?;
    Ok(())
}

pub(crate) fn rules_version(c: &mut dyn Conn, tenant: &str) -> Result<i64> {
    Ok(c.query_one(
        "SELECT version FROM rules_state WHERE tenant_id = $1",
        &[tenant.into()],
    )?
    .map_or(0, |r| r.int(0)))
}

const RULE_COLUMNS: &str = "r.id, v.version, r.status, v.definition, r.created_at, v.created_at";

fn rule_row(r: &Row) -> Result<RuleRecord> {
    Ok(RuleRecord {
        id: r.text(0),
        version: r.int(1),
        status: status(&r.text(2)),
        definition: from_json(&r.text(3))?,
        created_at: ts(r.int(4)),
        updated_at: ts(r.int(5)),
    })
}

/// A rule at its current version, or at `version`.
pub(crate) fn get_rule(
    c: &mut dyn Conn,
    tenant: &str,
    id: &str,
    version: Option<i64>,
) -> Result<RuleRecord> {
    let sql = format!(
        "SELECT {RULE_COLUMNS} FROM rules r JOIN rule_versions v ON v.tenant_id = r.tenant_id AND v.rule_id = r.id AND v.version = {} WHERE r.tenant_id = $1 AND r.id = $2",
        if version.is_some() { "$3" } else { "r.version" }
    );
    let mut params = vec![tenant.into(), id.into()];
    if let Some(v) = version {
        params.push(v.into());
    }
    let row = c.query_one(&sql, &params)?.ok_or_else(|| {
        StoreError::NotFound(match version {
            Some(v) => format!("version {v} of rule `{id}`"),
            None => format!("rule `{id}`"),
        })
    })?;
    rule_row(&row)
}

fn check_campaign_exists(c: &mut dyn Conn, tenant: &str, def: &RuleDef) -> Result<()> {
    if let Some(cid) = &def.campaign_id {
        let row = c.query_one(
            "SELECT status FROM campaigns WHERE tenant_id = $1 AND id = $2",
            &[tenant.into(), cid.into()],
        )?;
        match row {
            None => {
                return Err(StoreError::Unprocessable(format!(
                    "campaign_id: there is no campaign `{cid}`"
                )));
            }
            Some(r) if r.text(0) == "ended" => {
                return Err(StoreError::Unprocessable(format!(
                    "campaign_id: campaign `{cid}` has ended"
                )));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

pub(crate) fn create_rule(
    c: &mut dyn Conn,
    tenant: &str,
    def: &RuleDef,
    actor: &str,
    now: i64,
) -> Result<RuleRecord> {
    let count = c
        .query_one(
            "SELECT COUNT(*) FROM rules WHERE tenant_id = $1",
            &[tenant.into()],
        )?
        .map_or(0, |r| r.int(0));
    if count >= MAX_RULES {
        return Err(StoreError::Unprocessable(format!(
            "a tenant holds at most {MAX_RULES} rules"
        )));
    }
    check_campaign_exists(c, tenant, def)?;
    let id = crate::random_id("rul_", 16);
    let json = to_json(def)?;
    c.execute(
        "INSERT INTO rules (tenant_id, id, version, status, name, campaign_id, created_at, updated_at) VALUES ($1, $2, 1, 'draft', $3, $4, $5, $5)",
        &[tenant.into(), id.as_str().into(), def.name.as_str().into(), def.campaign_id.as_ref().into(), now.into()],
    )?;
    c.execute(
        "INSERT INTO rule_versions (tenant_id, rule_id, version, definition, actor, created_at) VALUES ($1, $2, 1, $3, $4, $5)",
        &[tenant.into(), id.as_str().into(), json.as_str().into(), actor.into(), now.into()],
    )?;
    audit(c, tenant, actor, "rule.create", &id, &json, now)?;
    bump(c, tenant)?;
    get_rule(c, tenant, &id, None)
}

pub(crate) fn update_rule(
    c: &mut dyn Conn,
    tenant: &str,
    id: &str,
    def: &RuleDef,
    actor: &str,
    now: i64,
) -> Result<RuleRecord> {
    let row = c
        .query_one(
            &format!(
                "SELECT version, status FROM rules WHERE tenant_id = $1 AND id = $2{}",
                c.dialect().for_update()
            ),
            &[tenant.into(), id.into()],
        )?
        .ok_or_else(|| StoreError::NotFound(format!("rule `{id}`")))?;
    if row.text(1) == "ended" {
        return Err(StoreError::Conflict(format!(
            "rule `{id}` has ended and can no longer change"
        )));
    }
    check_campaign_exists(c, tenant, def)?;
    let version = row.int(0) + 1;
    let json = to_json(def)?;
    c.execute(
        "INSERT INTO rule_versions (tenant_id, rule_id, version, definition, actor, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        &[tenant.into(), id.into(), version.into(), json.as_str().into(), actor.into(), now.into()],
    )?;
    c.execute(
        "UPDATE rules SET version = $3, name = $4, campaign_id = $5, updated_at = $6 WHERE tenant_id = $1 AND id = $2",
        &[tenant.into(), id.into(), version.into(), def.name.as_str().into(), def.campaign_id.as_ref().into(), now.into()],
    )?;
    audit(c, tenant, actor, "rule.update", id, &json, now)?;
    bump(c, tenant)?;
    get_rule(c, tenant, id, None)
}

pub(crate) fn set_rule_status(
    c: &mut dyn Conn,
    tenant: &str,
    id: &str,
    to: Status,
    actor: &str,
    now: i64,
) -> Result<RuleRecord> {
    let row = c
        .query_one(
            &format!(
                "SELECT status FROM rules WHERE tenant_id = $1 AND id = $2{}",
                c.dialect().for_update()
            ),
            &[tenant.into(), id.into()],
        )?
        .ok_or_else(|| StoreError::NotFound(format!("rule `{id}`")))?;
    let from = status(&row.text(0));
    if from == to {
        return get_rule(c, tenant, id, None);
    }
    if !from.can_become(to) {
        return Err(StoreError::Conflict(format!(
            "rule `{id}` is {} and cannot become {}",
            from.as_str(),
            to.as_str()
        )));
    }
    if to == Status::Active {
        let active = c
            .query_one(
                "SELECT COUNT(*) FROM rules WHERE tenant_id = $1 AND status = 'active'",
                &[tenant.into()],
            )?
            .map_or(0, |r| r.int(0));
        if active >= MAX_ACTIVE_RULES {
            return Err(StoreError::Unprocessable(format!(
                "at most {MAX_ACTIVE_RULES} rules may be active at once; pause or end one first"
            )));
        }
    }
    c.execute(
        "UPDATE rules SET status = $3, updated_at = $4 WHERE tenant_id = $1 AND id = $2",
        &[tenant.into(), id.into(), to.as_str().into(), now.into()],
    )?;
    audit(
        c,
        tenant,
        actor,
        &format!("rule.{}", to.as_str()),
        id,
        "{}",
        now,
    )?;
    bump(c, tenant)?;
    get_rule(c, tenant, id, None)
}

/// Filters of a rule list.
#[derive(Debug, Clone, Default)]
pub struct RuleFilter {
    pub status: Option<Status>,
    pub campaign_id: Option<String>,
}

pub(crate) fn list_rules(
    c: &mut dyn Conn,
    tenant: &str,
    f: &RuleFilter,
    cursor: Option<&str>,
    limit: i64,
) -> Result<Page<RuleRecord>> {
    let limit = limit.clamp(1, crate::ledger::MAX_PAGE);
    let rows = c.query(
        &format!(
            "SELECT {RULE_COLUMNS} FROM rules r JOIN rule_versions v ON v.tenant_id = r.tenant_id AND v.rule_id = r.id AND v.version = r.version WHERE r.tenant_id = $1 AND r.id > $2 AND ($3 = '' OR r.status = $3) AND ($4 = '' OR r.campaign_id = $4) ORDER BY r.id LIMIT $5"
        ),
        &[
            tenant.into(),
            cursor.unwrap_or("").into(),
            f.status.map_or("", Status::as_str).into(),
            f.campaign_id.as_deref().unwrap_or("").into(),
            (limit + 1).into(),
        ],
    )?;
    Page::from_rows(&rows, limit, rule_row, |r| r.id.clone())
}

pub(crate) fn rule_versions(c: &mut dyn Conn, tenant: &str, id: &str) -> Result<Vec<RuleRecord>> {
    let rows = c.query(
        &format!("SELECT {RULE_COLUMNS} FROM rules r JOIN rule_versions v ON v.tenant_id = r.tenant_id AND v.rule_id = r.id WHERE r.tenant_id = $1 AND r.id = $2 ORDER BY v.version"),
        &[tenant.into(), id.into()],
    )?;
    if rows.is_empty() {
        return Err(StoreError::NotFound(format!("rule `{id}`")));
    }
    rows.iter().map(rule_row).collect()
}

const CAMPAIGN_COLUMNS: &str = "k.id, v.version, k.status, v.definition, k.created_at, v.created_at, (SELECT CAST(COALESCE(SUM(a.points), 0) AS BIGINT) FROM awards a WHERE a.tenant_id = k.tenant_id AND a.campaign_id = k.id), (SELECT COUNT(*) FROM campaign_members m WHERE m.tenant_id = k.tenant_id AND m.campaign_id = k.id)";

fn campaign_row(r: &Row) -> Result<CampaignRecord> {
    Ok(CampaignRecord {
        id: r.text(0),
        version: r.int(1),
        status: status(&r.text(2)),
        definition: from_json(&r.text(3))?,
        created_at: ts(r.int(4)),
        updated_at: ts(r.int(5)),
        spent_points: r.int(6),
        list_size: r.int(7),
    })
}

pub(crate) fn get_campaign(c: &mut dyn Conn, tenant: &str, id: &str) -> Result<CampaignRecord> {
    let row = c
        .query_one(
            &format!("SELECT {CAMPAIGN_COLUMNS} FROM campaigns k JOIN campaign_versions v ON v.tenant_id = k.tenant_id AND v.campaign_id = k.id AND v.version = k.version WHERE k.tenant_id = $1 AND k.id = $2"),
            &[tenant.into(), id.into()],
        )?
        .ok_or_else(|| StoreError::NotFound(format!("campaign `{id}`")))?;
    campaign_row(&row)
}

pub(crate) fn create_campaign(
    c: &mut dyn Conn,
    tenant: &str,
    def: &CampaignDef,
    actor: &str,
    now: i64,
) -> Result<CampaignRecord> {
    let count = c
        .query_one(
            "SELECT COUNT(*) FROM campaigns WHERE tenant_id = $1",
            &[tenant.into()],
        )?
        .map_or(0, |r| r.int(0));
    if count >= MAX_CAMPAIGNS {
        return Err(StoreError::Unprocessable(format!(
            "a tenant holds at most {MAX_CAMPAIGNS} campaigns"
        )));
    }
    let id = crate::random_id("cmp_", 16);
    let json = to_json(def)?;
    c.execute(
        "INSERT INTO campaigns (tenant_id, id, version, status, name, created_at, updated_at) VALUES ($1, $2, 1, 'draft', $3, $4, $4)",
        &[tenant.into(), id.as_str().into(), def.name.as_str().into(), now.into()],
    )?;
    c.execute(
        "INSERT INTO campaign_versions (tenant_id, campaign_id, version, definition, actor, created_at) VALUES ($1, $2, 1, $3, $4, $5)",
        &[tenant.into(), id.as_str().into(), json.as_str().into(), actor.into(), now.into()],
    )?;
    audit(c, tenant, actor, "campaign.create", &id, &json, now)?;
    bump(c, tenant)?;
    get_campaign(c, tenant, &id)
}

pub(crate) fn update_campaign(
    c: &mut dyn Conn,
    tenant: &str,
    id: &str,
    def: &CampaignDef,
    actor: &str,
    now: i64,
) -> Result<CampaignRecord> {
    let row = c
        .query_one(
            &format!(
                "SELECT version, status FROM campaigns WHERE tenant_id = $1 AND id = $2{}",
                c.dialect().for_update()
            ),
            &[tenant.into(), id.into()],
        )?
        .ok_or_else(|| StoreError::NotFound(format!("campaign `{id}`")))?;
    if row.text(1) == "ended" {
        return Err(StoreError::Conflict(format!(
            "campaign `{id}` has ended and can no longer change"
        )));
    }
    let version = row.int(0) + 1;
    let json = to_json(def)?;
    c.execute(
        "INSERT INTO campaign_versions (tenant_id, campaign_id, version, definition, actor, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        &[tenant.into(), id.into(), version.into(), json.as_str().into(), actor.into(), now.into()],
    )?;
    c.execute(
        "UPDATE campaigns SET version = $3, name = $4, updated_at = $5 WHERE tenant_id = $1 AND id = $2",
        &[tenant.into(), id.into(), version.into(), def.name.as_str().into(), now.into()],
    )?;
    audit(c, tenant, actor, "campaign.update", id, &json, now)?;
    bump(c, tenant)?;
    get_campaign(c, tenant, id)
}

pub(crate) fn set_campaign_status(
    c: &mut dyn Conn,
    tenant: &str,
    id: &str,
    to: Status,
    actor: &str,
    now: i64,
) -> Result<CampaignRecord> {
    let row = c
        .query_one(
            &format!(
                "SELECT status FROM campaigns WHERE tenant_id = $1 AND id = $2{}",
                c.dialect().for_update()
            ),
            &[tenant.into(), id.into()],
        )?
        .ok_or_else(|| StoreError::NotFound(format!("campaign `{id}`")))?;
    let from = status(&row.text(0));
    if from == to {
        return get_campaign(c, tenant, id);
    }
    if !from.can_become(to) {
        return Err(StoreError::Conflict(format!(
            "campaign `{id}` is {} and cannot become {}",
            from.as_str(),
            to.as_str()
        )));
    }
    c.execute(
        "UPDATE campaigns SET status = $3, updated_at = $4 WHERE tenant_id = $1 AND id = $2",
        &[tenant.into(), id.into(), to.as_str().into(), now.into()],
    )?;
    audit(
        c,
        tenant,
        actor,
        &format!("campaign.{}", to.as_str()),
        id,
        "{}",
        now,
    )?;
    bump(c, tenant)?;
    get_campaign(c, tenant, id)
}

pub(crate) fn list_campaigns(
    c: &mut dyn Conn,
    tenant: &str,
    cursor: Option<&str>,
    limit: i64,
) -> Result<Page<CampaignRecord>> {
    let limit = limit.clamp(1, crate::ledger::MAX_PAGE);
    let rows = c.query(
        &format!("SELECT {CAMPAIGN_COLUMNS} FROM campaigns k JOIN campaign_versions v ON v.tenant_id = k.tenant_id AND v.campaign_id = k.id AND v.version = k.version WHERE k.tenant_id = $1 AND k.id > $2 ORDER BY k.id LIMIT $3"),
        &[tenant.into(), cursor.unwrap_or("").into(), (limit + 1).into()],
    )?;
    Page::from_rows(&rows, limit, campaign_row, |r| r.id.clone())
}

/// What an upload of a campaign's target list did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListUpload {
    /// Members now in the list.
    pub list_size: i64,
    pub added: i64,
    /// Entries that named no member (the first 100).
    pub unknown: Vec<String>,
    pub unknown_count: i64,
}

/// Adds members (by id, or by the retailer's external id) to a campaign's target list;
/// `replace` empties the list first.
pub(crate) fn upload_list(
    c: &mut dyn Conn,
    tenant: &str,
    id: &str,
    entries: &[String],
    replace: bool,
    actor: &str,
    now: i64,
) -> Result<ListUpload> {
    c.query_one(
        &format!(
            "SELECT 1 FROM campaigns WHERE tenant_id = $1 AND id = $2{}",
            c.dialect().for_update()
        ),
        &[tenant.into(), id.into()],
    )?
    .ok_or_else(|| StoreError::NotFound(format!("campaign `{id}`")))?;
    if replace {
        c.execute(
            "DELETE FROM campaign_members WHERE tenant_id = $1 AND campaign_id = $2",
            &[tenant.into(), id.into()],
        )?;
    }
    let (mut added, mut unknown, mut unknown_count) = (0, Vec::new(), 0);
    for e in entries {
        let member = c.query_one(
            // An id first, then an external id: two index look-ups (with `OR` and an order,
            // SQLite walked every member of the tenant for each entry of the list).
            "SELECT id FROM members WHERE tenant_id = $1 AND id = $2 UNION ALL SELECT id FROM members WHERE tenant_id = $1 AND external_id = $2 LIMIT 1",
            &[tenant.into(), e.as_str().into()],
        )?;
        match member {
            Some(m) => {
                added += c.execute(
                    "INSERT INTO campaign_members (tenant_id, campaign_id, member_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                    &[tenant.into(), id.into(), m.text(0).as_str().into()],
                )? as i64;
            }
            None => {
                unknown_count += 1;
                if unknown.len() < 100 {
                    unknown.push(e.clone());
                }
            }
        }
    }
    let list_size = c
        .query_one(
            "SELECT COUNT(*) FROM campaign_members WHERE tenant_id = $1 AND campaign_id = $2",
            &[tenant.into(), id.into()],
        )?
        .map_or(0, |r| r.int(0));
    if list_size as usize > MAX_TARGET_LIST {
        return Err(StoreError::Unprocessable(format!(
            "a campaign's list holds at most {MAX_TARGET_LIST} members; this upload would make it {list_size}"
        )));
    }
    let detail = serde_json::json!({ "added": added, "replace": replace, "list_size": list_size })
        .to_string();
    audit(c, tenant, actor, "campaign.list", id, &detail, now)?;
    bump(c, tenant)?;
    Ok(ListUpload {
        list_size,
        added,
        unknown,
        unknown_count,
    })
}

/// Everything a node compiles for a tenant: active rules, the campaigns they name, and those
/// campaigns' lists. With `all`, every rule that has not ended (simulations of drafts).
#[derive(Debug, Clone, Default)]
pub struct RuleSource {
    pub version: i64,
    pub rules: Vec<RuleRecord>,
    pub campaigns: Vec<(CampaignRecord, Vec<String>)>,
}

pub(crate) fn load_source(
    c: &mut dyn Conn,
    tenant: &str,
    all: bool,
    campaign: Option<&str>,
) -> Result<RuleSource> {
    let version = rules_version(c, tenant)?;
    let rows = c.query(
        &format!(
            "SELECT {RULE_COLUMNS} FROM rules r JOIN rule_versions v ON v.tenant_id = r.tenant_id AND v.rule_id = r.id AND v.version = r.version WHERE r.tenant_id = $1 AND (r.status = 'active' OR ($2 = 1 AND r.status <> 'ended')) AND ($3 = '' OR r.campaign_id = $3) ORDER BY r.id"
        ),
        &[tenant.into(), i64::from(all).into(), campaign.unwrap_or("").into()],
    )?;
    let rules = rows.iter().map(rule_row).collect::<Result<Vec<_>>>()?;
    let mut ids: Vec<String> = rules
        .iter()
        .filter_map(|r| r.definition.campaign_id.clone())
        .collect();
    ids.sort();
    ids.dedup();
    let mut campaigns = Vec::with_capacity(ids.len());
    for id in ids {
        let rec = get_campaign(c, tenant, &id)?;
        let list = if matches!(rec.definition.target, fidelis_core::rules::TargetDef::List) {
            c.query(
                "SELECT member_id FROM campaign_members WHERE tenant_id = $1 AND campaign_id = $2",
                &[tenant.into(), id.as_str().into()],
            )?
            .iter()
            .map(|r| r.text(0))
            .collect()
        } else {
            Vec::new()
        };
        campaigns.push((rec, list));
    }
    Ok(RuleSource {
        version,
        rules,
        campaigns,
    })
}

impl Store {
    pub async fn rules_version(&self, tenant: &str) -> Result<i64> {
        let tenant = tenant.to_string();
        self.read(move |c| rules_version(c, &tenant)).await
    }

    /// What to compile for a tenant (see [`RuleSource`]); `campaign` keeps one campaign's rules.
    pub async fn rule_source(
        &self,
        tenant: &str,
        all: bool,
        campaign: Option<&str>,
    ) -> Result<RuleSource> {
        let (tenant, campaign) = (tenant.to_string(), campaign.map(str::to_string));
        self.read(move |c| load_source(c, &tenant, all, campaign.as_deref()))
            .await
    }

    pub async fn create_rule(
        &self,
        tenant: &str,
        def: RuleDef,
        actor: &str,
        idem: Option<IdemKey>,
        now: i64,
    ) -> Result<(RuleRecord, bool)> {
        let (tenant, actor) = (tenant.to_string(), actor.to_string());
        self.write_idem("", &tenant, idem, now, move |c, tenant| {
            create_rule(c, tenant, &def, &actor, now)
        })
        .await
    }

    pub async fn update_rule(
        &self,
        tenant: &str,
        id: &str,
        def: RuleDef,
        actor: &str,
        idem: Option<IdemKey>,
        now: i64,
    ) -> Result<(RuleRecord, bool)> {
        let (tenant, id, actor) = (tenant.to_string(), id.to_string(), actor.to_string());
        self.write_idem("", &tenant, idem, now, move |c, tenant| {
            update_rule(c, tenant, &id, &def, &actor, now)
        })
        .await
    }

    pub async fn set_rule_status(
        &self,
        tenant: &str,
        id: &str,
        to: Status,
        actor: &str,
        idem: Option<IdemKey>,
        now: i64,
    ) -> Result<(RuleRecord, bool)> {
        let (tenant, id, actor) = (tenant.to_string(), id.to_string(), actor.to_string());
        self.write_idem("", &tenant, idem, now, move |c, tenant| {
            set_rule_status(c, tenant, &id, to, &actor, now)
        })
        .await
    }

    pub async fn rule(&self, tenant: &str, id: &str, version: Option<i64>) -> Result<RuleRecord> {
        let (tenant, id) = (tenant.to_string(), id.to_string());
        self.read(move |c| get_rule(c, &tenant, &id, version)).await
    }

    pub async fn rule_versions(&self, tenant: &str, id: &str) -> Result<Vec<RuleRecord>> {
        let (tenant, id) = (tenant.to_string(), id.to_string());
        self.read(move |c| rule_versions(c, &tenant, &id)).await
    }

    pub async fn list_rules(
        &self,
        tenant: &str,
        filter: RuleFilter,
        cursor: Option<String>,
        limit: i64,
    ) -> Result<Page<RuleRecord>> {
        let tenant = tenant.to_string();
        self.read(move |c| list_rules(c, &tenant, &filter, cursor.as_deref(), limit))
            .await
    }

    pub async fn create_campaign(
        &self,
        tenant: &str,
        def: CampaignDef,
        actor: &str,
        idem: Option<IdemKey>,
        now: i64,
    ) -> Result<(CampaignRecord, bool)> {
        let (tenant, actor) = (tenant.to_string(), actor.to_string());
        self.write_idem("", &tenant, idem, now, move |c, tenant| {
            create_campaign(c, tenant, &def, &actor, now)
        })
        .await
    }

    pub async fn update_campaign(
        &self,
        tenant: &str,
        id: &str,
        def: CampaignDef,
        actor: &str,
        idem: Option<IdemKey>,
        now: i64,
    ) -> Result<(CampaignRecord, bool)> {
        let (tenant, id, actor) = (tenant.to_string(), id.to_string(), actor.to_string());
        self.write_idem("", &tenant, idem, now, move |c, tenant| {
            update_campaign(c, tenant, &id, &def, &actor, now)
        })
        .await
    }

    pub async fn set_campaign_status(
        &self,
        tenant: &str,
        id: &str,
        to: Status,
        actor: &str,
        idem: Option<IdemKey>,
        now: i64,
    ) -> Result<(CampaignRecord, bool)> {
        let (tenant, id, actor) = (tenant.to_string(), id.to_string(), actor.to_string());
        self.write_idem("", &tenant, idem, now, move |c, tenant| {
            set_campaign_status(c, tenant, &id, to, &actor, now)
        })
        .await
    }

    pub async fn campaign(&self, tenant: &str, id: &str) -> Result<CampaignRecord> {
        let (tenant, id) = (tenant.to_string(), id.to_string());
        self.read(move |c| get_campaign(c, &tenant, &id)).await
    }

    pub async fn list_campaigns(
        &self,
        tenant: &str,
        cursor: Option<String>,
        limit: i64,
    ) -> Result<Page<CampaignRecord>> {
        let tenant = tenant.to_string();
        self.read(move |c| list_campaigns(c, &tenant, cursor.as_deref(), limit))
            .await
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn upload_campaign_list(
        &self,
        tenant: &str,
        id: &str,
        entries: Vec<String>,
        replace: bool,
        actor: &str,
        idem: Option<IdemKey>,
        now: i64,
    ) -> Result<(ListUpload, bool)> {
        let (tenant, id, actor) = (tenant.to_string(), id.to_string(), actor.to_string());
        self.write_idem("", &tenant, idem, now, move |c, tenant| {
            upload_list(c, tenant, &id, &entries, replace, &actor, now)
        })
        .await
    }
}
