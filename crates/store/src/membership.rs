//! Paid membership in the database: plans, each member's subscription (one at a time) as the
//! retailer's billing reports it, its history, the plan earning sees, and the job that issues
//! each active subscriber's monthly perk coupon once per calendar month.

use crate::conn::{Conn, Row};
use crate::error::{Result, StoreError};
use crate::idem::IdemKey;
use crate::ledger::{lock_member, ts};
use crate::model::{JobReport, Page};
use crate::runtime::Store;
use fidelis_core::ProgramSettings;
use fidelis_core::membership::{
    ActivePlan, PlanDef, SubState, SubscriptionEvent, perk_period, perks_active, transition,
};
use fidelis_core::time::from_micros;
use serde::{Deserialize, Serialize};

/// Subscriptions one perk round reads at most.
pub const PERKS_PER_RUN: i64 = 500;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanRecord {
    pub id: String,
    #[serde(flatten)]
    pub def: PlanDef,
    pub created_at: String,
    pub updated_at: String,
}

fn plan_record(r: &Row) -> Result<PlanRecord> {
    Ok(PlanRecord {
        id: r.text(0),
        def: serde_json::from_str(&r.text(1))?,
        created_at: ts(r.int(2)),
        updated_at: ts(r.int(3)),
    })
}

fn get_plan(c: &mut dyn Conn, tenant: &str, id: &str) -> Result<PlanRecord> {
    let row = c
        .query_one(
            "SELECT id, definition, created_at, updated_at FROM plans WHERE tenant_id = $1 AND id = $2",
            &[tenant.into(), id.into()],
        )?
        .ok_or_else(|| StoreError::NotFound(format!("plan `{id}`")))?;
    plan_record(&row)
}

fn put_plan(
    c: &mut dyn Conn,
    tenant: &str,
    id: Option<&str>,
    def: &PlanDef,
    now: i64,
) -> Result<PlanRecord> {
    let json = serde_json::to_string(def)?;
    match id {
        Some(id) => {
            let n = c.execute(
                "UPDATE plans SET definition = $3, updated_at = $4 WHERE tenant_id = $1 AND id = $2",
                &[tenant.into(), id.into(), json.as_str().into(), now.into()],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("plan `{id}`")));
            }
            get_plan(c, tenant, id)
        }
        None => {
            let count = c
                .query_one(
                    "SELECT COUNT(*) FROM plans WHERE tenant_id = $1",
                    &[tenant.into()],
                )?
                .map_or(0, |r| r.int(0));
            if count >= fidelis_core::membership::MAX_PLANS {
                return Err(StoreError::Unprocessable(format!(
                    "a programme holds at most {} plans",
                    fidelis_core::membership::MAX_PLANS
                )));
            }
            let id = crate::random_id("plan_", 12);
            c.execute(
                "INSERT INTO plans (tenant_id, id, definition, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)",
                &[tenant.into(), id.as_str().into(), json.as_str().into(), now.into()],
            )?;
            get_plan(c, tenant, &id)
        }
    }
}

fn list_plans(c: &mut dyn Conn, tenant: &str) -> Result<Vec<PlanRecord>> {
    c.query(
        "SELECT id, definition, created_at, updated_at FROM plans WHERE tenant_id = $1 ORDER BY id",
        &[tenant.into()],
    )?
    .iter()
    .map(plan_record)
    .collect()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionRecord {
    pub member_id: String,
    pub plan_id: String,
    pub plan_name: String,
    /// `active`, `cancelled` or `lapsed`.
    pub status: String,
    pub period_end: String,
    /// Whether the plan's perks apply now (active and within the paid period).
    pub perks_active: bool,
    pub started_at: String,
    pub updated_at: String,
    /// The last month (`2026-03`) whose perk coupon was issued.
    pub perk_period: Option<String>,
}

fn subscription(
    c: &mut dyn Conn,
    tenant: &str,
    member: &str,
    now: i64,
) -> Result<Option<SubscriptionRecord>> {
    let Some(r) = c.query_one(
        "SELECT s.plan_id, s.status, s.period_end, s.started_at, s.updated_at, s.perk_period, p.definition FROM subscriptions s JOIN plans p ON p.tenant_id = s.tenant_id AND p.id = s.plan_id WHERE s.tenant_id = $1 AND s.member_id = $2",
        &[tenant.into(), member.into()],
    )?
    else {
        return Ok(None);
    };
    let def: PlanDef = serde_json::from_str(&r.text(6))?;
    Ok(Some(SubscriptionRecord {
        member_id: member.to_string(),
        plan_id: r.text(0),
        plan_name: def.name,
        status: r.text(1),
        period_end: ts(r.int(2)),
        perks_active: perks_active(&r.text(1), from_micros(r.int(2)), from_micros(now)),
        started_at: ts(r.int(3)),
        updated_at: ts(r.int(4)),
        perk_period: r.opt_text(5),
    }))
}

/// The member's plan as earning sees it (read with the member's facts, before the write).
/// Joins a member's active subscription and its plan to `members m` (nothing when the member
/// has none), so what earning knows of a member is read in one query; [`active_plan`] reads
/// the plan back from the columns [`ACTIVE_PLAN_COLUMNS`] names.
pub(crate) const ACTIVE_PLAN_JOIN: &str = "LEFT JOIN subscriptions s ON s.tenant_id = m.tenant_id AND s.member_id = m.id AND s.status = 'active' LEFT JOIN plans p ON p.tenant_id = s.tenant_id AND p.id = s.plan_id";
pub(crate) const ACTIVE_PLAN_COLUMNS: &str = "s.plan_id, s.status, s.period_end, p.definition";

/// The member's active plan from the [`ACTIVE_PLAN_COLUMNS`] starting at column `at`.
pub(crate) fn active_plan(r: &Row, at: usize) -> Result<Option<ActivePlan>> {
    let (Some(id), Some(definition)) = (r.opt_text(at), r.opt_text(at + 3)) else {
        return Ok(None);
    };
    let def: PlanDef = serde_json::from_str(&definition)?;
    Ok(Some(ActivePlan {
        id,
        name: def.name,
        status: r.text(at + 1),
        earn_multiplier: def.earn_multiplier,
        period_end: from_micros(r.int(at + 2)),
    }))
}

#[allow(clippy::too_many_arguments)]
fn record_event(
    c: &mut dyn Conn,
    tenant: &str,
    member: &str,
    plan_id: &str,
    event: SubscriptionEvent,
    period_end: Option<i64>,
    actor: &str,
    now: i64,
) -> Result<SubscriptionRecord> {
    lock_member(c, tenant, member)?
        .ok_or_else(|| StoreError::NotFound(format!("member `{member}`")))?;
    let plan = get_plan(c, tenant, plan_id)?;
    if event == SubscriptionEvent::Subscribe && !plan.def.active {
        return Err(StoreError::Conflict(format!(
            "plan `{plan_id}` is not open to new subscriptions"
        )));
    }
    let current = c
        .query_one(
            "SELECT plan_id, status, period_end FROM subscriptions WHERE tenant_id = $1 AND member_id = $2",
            &[tenant.into(), member.into()],
        )?
        .map(|r| SubState {
            plan_id: r.text(0),
            status: r.text(1),
            period_end: from_micros(r.int(2)),
        });
    let next = transition(
        current.as_ref(),
        event,
        plan_id,
        period_end.map(from_micros),
        from_micros(now),
    )
    .map_err(StoreError::Conflict)?;
    let end = next.period_end.timestamp_micros();
    let updated = c.execute(
        "UPDATE subscriptions SET plan_id = $3, status = $4, period_end = $5, updated_at = $6, started_at = CASE WHEN $7 = 1 THEN $6 ELSE started_at END WHERE tenant_id = $1 AND member_id = $2",
        &[tenant.into(), member.into(), next.plan_id.as_str().into(), next.status.as_str().into(), end.into(), now.into(), i64::from(event == SubscriptionEvent::Subscribe).into()],
    )?;
    if updated == 0 {
        c.execute(
            "INSERT INTO subscriptions (tenant_id, member_id, plan_id, status, period_end, started_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6)",
            &[tenant.into(), member.into(), next.plan_id.as_str().into(), next.status.as_str().into(), end.into(), now.into()],
        )?;
    }
    c.execute(
        "INSERT INTO subscription_events (tenant_id, member_id, plan_id, event, status, period_end, actor, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[tenant.into(), member.into(), plan_id.into(), event.as_str().into(), next.status.as_str().into(), end.into(), actor.into(), now.into()],
    )?;
    subscription(c, tenant, member, now)?
        .ok_or_else(|| StoreError::Busy("subscription vanished; retry".into()))
}

/// Issues the monthly perk coupon of every active subscriber not served this month; true when
/// more may be due.
pub(crate) fn issue_monthly_perks(
    c: &mut dyn Conn,
    tenant: &str,
    settings: &ProgramSettings,
    now: i64,
    report: &mut JobReport,
) -> Result<bool> {
    let period = perk_period(from_micros(now));
    let rows = c.query(
        "SELECT member_id FROM subscriptions WHERE tenant_id = $1 AND status = 'active' AND period_end > $2 AND (perk_period IS NULL OR perk_period <> $3) ORDER BY member_id LIMIT $4",
        &[tenant.into(), now.into(), period.as_str().into(), PERKS_PER_RUN.into()],
    )?;
    let full = rows.len() as i64 == PERKS_PER_RUN;
    let claim = format!(
        "SELECT plan_id FROM subscriptions WHERE tenant_id = $1 AND member_id = $2 AND status = 'active' AND period_end > $3 AND (perk_period IS NULL OR perk_period <> $4){}",
        c.dialect().skip_locked()
    );
    for row in &rows {
        let member = row.text(0);
        let Some(sub) = c.query_one(
            &claim,
            &[
                tenant.into(),
                member.as_str().into(),
                now.into(),
                period.as_str().into(),
            ],
        )?
        else {
            continue;
        };
        let plan = get_plan(c, tenant, &sub.text(0))?;
        if let Some(reward_id) = &plan.def.monthly_reward_id {
            let source = format!("plan:{}", plan.id);
            if crate::rewards::issue_perk_coupon(
                c, tenant, &member, reward_id, &source, settings, now,
            )?
            .is_some()
            {
                report.perk_coupons += 1;
            }
        }
        c.execute(
            "UPDATE subscriptions SET perk_period = $3 WHERE tenant_id = $1 AND member_id = $2",
            &[
                tenant.into(),
                member.as_str().into(),
                period.as_str().into(),
            ],
        )?;
        report.members_touched += 1;
    }
    Ok(full)
}

impl Store {
    /// Creates a plan (`id` None) or replaces one.
    pub async fn put_plan(
        &self,
        tenant: &str,
        id: Option<&str>,
        def: PlanDef,
        idem: Option<IdemKey>,
        now: i64,
    ) -> Result<(PlanRecord, bool)> {
        let (tenant, id) = (tenant.to_string(), id.map(str::to_string));
        self.write_idem("", &tenant, idem, now, move |c, tenant| {
            put_plan(c, tenant, id.as_deref(), &def, now)
        })
        .await
    }

    pub async fn plan(&self, tenant: &str, id: &str) -> Result<PlanRecord> {
        let (tenant, id) = (tenant.to_string(), id.to_string());
        self.read(move |c| get_plan(c, &tenant, &id)).await
    }

    /// Whether the tenant has any plan: where it has none, no member holds one, and earning
    /// need not read the member for a plan's multiplier.
    pub async fn offers_plans(&self, tenant: &str) -> Result<bool> {
        let tenant = tenant.to_string();
        self.read(move |c| {
            Ok(c.query_one(
                "SELECT 1 FROM plans WHERE tenant_id = $1 LIMIT 1",
                &[tenant.as_str().into()],
            )?
            .is_some())
        })
        .await
    }

    pub async fn plans(&self, tenant: &str) -> Result<Page<PlanRecord>> {
        let tenant = tenant.to_string();
        self.read(move |c| {
            Ok(Page {
                items: list_plans(c, &tenant)?,
                next_cursor: None,
            })
        })
        .await
    }

    /// Records a billing event of a member's subscription.
    #[allow(clippy::too_many_arguments)]
    pub async fn subscription_event(
        &self,
        tenant: &str,
        member: &str,
        plan_id: &str,
        event: SubscriptionEvent,
        period_end: Option<i64>,
        actor: &str,
        idem: Option<IdemKey>,
        now: i64,
    ) -> Result<(SubscriptionRecord, bool)> {
        let (tenant, member, plan_id, actor) = (
            tenant.to_string(),
            member.to_string(),
            plan_id.to_string(),
            actor.to_string(),
        );
        let part = member.clone();
        self.write_idem(&part, &tenant, idem, now, move |c, tenant| {
            record_event(c, tenant, &member, &plan_id, event, period_end, &actor, now)
        })
        .await
    }

    pub async fn subscription(
        &self,
        tenant: &str,
        member: &str,
        now: i64,
    ) -> Result<Option<SubscriptionRecord>> {
        let (tenant, member) = (tenant.to_string(), member.to_string());
        self.read(move |c| {
            if c.query_one(
                "SELECT 1 FROM members WHERE tenant_id = $1 AND id = $2",
                &[tenant.as_str().into(), member.as_str().into()],
            )?
            .is_none()
            {
                return Err(StoreError::NotFound(format!("member `{member}`")));
            }
            subscription(c, &tenant, &member, now)
        })
        .await
    }
}
