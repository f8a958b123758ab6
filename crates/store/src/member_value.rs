//! What members get, wired into the spine: the schema of tiers, rewards and coupons, store
//! credit, donations and paid membership (migration 3), the hooks the purchase, refund and
//! custom-event write paths call in their own transaction, and the background jobs (tier
//! reviews, monthly plan perks).

use crate::conn::{Conn, Row};
use crate::error::Result;
use crate::model::JobReport;
use crate::runtime::Store;
use fidelis_core::ProgramSettings;
use fidelis_core::event::Purchase;

pub(crate) const MEMBER_VALUE: &str = r#"
ALTER TABLE members ADD COLUMN tier TEXT;
ALTER TABLE members ADD COLUMN tier_since BIGINT;
ALTER TABLE members ADD COLUMN tier_secured_until BIGINT;
ALTER TABLE members ADD COLUMN credit_minor BIGINT NOT NULL DEFAULT 0;
CREATE INDEX members_by_tier_review ON members (tenant_id, tier_secured_until) WHERE tier IS NOT NULL;
CREATE TABLE tier_history (
    id {ID},
    tenant_id TEXT NOT NULL,
    member_id TEXT NOT NULL,
    from_tier TEXT,
    to_tier TEXT,
    reason TEXT NOT NULL,
    metric_value BIGINT NOT NULL,
    secured_until BIGINT,
    effective_at BIGINT NOT NULL,
    recorded_at BIGINT NOT NULL
);
CREATE INDEX tier_history_by_member ON tier_history (tenant_id, member_id, id);
CREATE TABLE rewards (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    definition TEXT NOT NULL,
    stock BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE TABLE coupons (
    tenant_id TEXT NOT NULL,
    code TEXT NOT NULL,
    member_id TEXT NOT NULL,
    reward_id TEXT NOT NULL,
    source TEXT NOT NULL,
    points BIGINT NOT NULL,
    txn_id BIGINT,
    status TEXT NOT NULL,
    issued_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    redeemed_at BIGINT,
    redeemed_order_id TEXT,
    redeemed_by TEXT,
    cancelled_at BIGINT,
    PRIMARY KEY (tenant_id, code)
);
CREATE INDEX coupons_by_member ON coupons (tenant_id, member_id, reward_id);
CREATE TABLE credit_txns (
    id {ID},
    tenant_id TEXT NOT NULL,
    member_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    reason TEXT NOT NULL,
    order_id TEXT,
    currency TEXT NOT NULL,
    actor TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX credit_txns_by_member ON credit_txns (tenant_id, member_id, id);
CREATE INDEX credit_txns_by_order ON credit_txns (tenant_id, order_id);
CREATE TABLE credit_entries (
    id {ID},
    tenant_id TEXT NOT NULL,
    txn_id BIGINT NOT NULL,
    member_id TEXT,
    account TEXT NOT NULL,
    amount_minor BIGINT NOT NULL
);
CREATE INDEX credit_entries_by_txn ON credit_entries (txn_id);
CREATE INDEX credit_entries_by_member ON credit_entries (tenant_id, member_id, account);
CREATE TABLE donations (
    id {ID},
    tenant_id TEXT NOT NULL,
    member_id TEXT NOT NULL,
    charity TEXT NOT NULL,
    points BIGINT NOT NULL,
    txn_id BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX donations_by_charity ON donations (tenant_id, charity);
CREATE TABLE plans (
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    definition TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE TABLE subscriptions (
    tenant_id TEXT NOT NULL,
    member_id TEXT NOT NULL,
    plan_id TEXT NOT NULL,
    status TEXT NOT NULL,
    period_end BIGINT NOT NULL,
    started_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    perk_period TEXT,
    PRIMARY KEY (tenant_id, member_id)
);
CREATE INDEX subscriptions_active ON subscriptions (tenant_id, period_end) WHERE status = 'active';
CREATE TABLE subscription_events (
    id {ID},
    tenant_id TEXT NOT NULL,
    member_id TEXT NOT NULL,
    plan_id TEXT NOT NULL,
    event TEXT NOT NULL,
    status TEXT NOT NULL,
    period_end BIGINT NOT NULL,
    actor TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX subscription_events_by_member ON subscription_events (tenant_id, member_id, id);
"#;

/// After a purchase is posted (same transaction, member row locked): cashback, then an
/// upgrade if the purchase qualifies the member for a higher tier.
pub(crate) fn after_purchase(
    c: &mut dyn Conn,
    tenant: &str,
    member: &str,
    p: &Purchase,
    settings: &ProgramSettings,
    now: i64,
) -> Result<()> {
    crate::credit::cashback(c, tenant, member, &p.order_id, p.total.minor, settings, now)?;
    crate::tiers::after_event(c, tenant, member, settings, now, false)
}

/// After a refund is posted (the order's refunded amount already updated): cashback is
/// clawed back in proportion, and the tier follows the programme's refund policy.
pub(crate) fn after_refund(
    c: &mut dyn Conn,
    tenant: &str,
    member: &str,
    order_id: &str,
    cashback: Option<&Row>,
    settings: &ProgramSettings,
    now: i64,
) -> Result<()> {
    crate::credit::claw_back_cashback(c, tenant, member, order_id, cashback, settings, now)?;
    crate::tiers::after_event(c, tenant, member, settings, now, true)
}

/// After a custom event earned points: it may qualify the member on a points metric.
pub(crate) fn after_custom(
    c: &mut dyn Conn,
    tenant: &str,
    member: &str,
    settings: &ProgramSettings,
    now: i64,
) -> Result<()> {
    crate::tiers::after_event(c, tenant, member, settings, now, false)
}

/// Rounds of one member-value job per run at most (each handles a bounded batch).
const MAX_ROUNDS: usize = 10_000;

impl Store {
    /// Tier reviews and monthly plan perks due at `now`, for one tenant.
    pub(crate) async fn member_value_jobs(
        &self,
        tenant: &str,
        settings: &ProgramSettings,
        now: i64,
        report: &mut JobReport,
    ) -> Result<()> {
        for kind in ["tiers", "perks"] {
            for _ in 0..MAX_ROUNDS {
                let (t, s) = (tenant.to_string(), settings.clone());
                let (more, part) = self
                    .write("", move |c| {
                        let mut r = JobReport::default();
                        let more = if kind == "tiers" {
                            crate::tiers::review_due(c, &t, &s, now, &mut r)?
                        } else {
                            crate::membership::issue_monthly_perks(c, &t, &s, now, &mut r)?
                        };
                        Ok((more, r))
                    })
                    .await?;
                let progressed = part.tier_reviews + part.perk_coupons + part.members_touched > 0;
                report.add(&part);
                if !more || !progressed {
                    break;
                }
            }
        }
        Ok(())
    }
}
