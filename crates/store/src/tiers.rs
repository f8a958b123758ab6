//! Tiers in the database: the metric measured from stored events and postings, a member's tier
//! state on the member row (`tier`, `tier_since`, `tier_secured_until`), moves applied with
//! their history, the review job, and the member's tier view. Decisions are the core's
//! (`fidelis_core::tiers`); this module measures and records.

use crate::conn::Conn;
use crate::error::{Result, StoreError};
use crate::ledger::ts;
use crate::model::JobReport;
use crate::runtime::Store;
use fidelis_core::ProgramSettings;
use fidelis_core::event::MAX_FUTURE_SECS;
use fidelis_core::money::format_minor;
use fidelis_core::tiers::{Ladder, Metric, Move, Window};
use fidelis_core::time::{from_micros, to_micros};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Members one review round reads at most.
pub const REVIEWS_PER_RUN: i64 = 500;
/// History rows shown with a member's tier.
pub const HISTORY_SHOWN: i64 = 20;

#[derive(Debug, Clone, Default)]
pub(crate) struct TierState {
    pub tier: Option<String>,
    pub since: Option<i64>,
    pub secured_until: Option<i64>,
}

pub(crate) fn state(c: &mut dyn Conn, tenant: &str, member: &str) -> Result<Option<TierState>> {
    Ok(c.query_one(
        "SELECT tier, tier_since, tier_secured_until FROM members WHERE tenant_id = $1 AND id = $2",
        &[tenant.into(), member.into()],
    )?
    .map(|r| TierState {
        tier: r.opt_text(0),
        since: r.opt_int(1),
        secured_until: r.opt_int(2),
    }))
}

/// The metric's query over `(start, end]`: `$1` tenant, `$2` member, `$3` start, `$4` end.
/// `occurred_at + 0` keeps the planner on `events_by_member` (tenant, member): without
/// statistics (a new tenant, a fresh table) PostgreSQL otherwise picks `events_by_time` and
/// reads every event of the tenant in the window. A member's own events are few.
fn metric_sql(metric: Metric) -> &'static str {
    match metric {
        Metric::Spend => {
            "SELECT CAST(COALESCE(SUM(CASE WHEN ev.kind = 'purchase' THEN ev.amount_minor ELSE -ev.amount_minor END), 0) AS BIGINT) FROM events ev WHERE ev.tenant_id = $1 AND ev.member_id = $2 AND ev.occurred_at + 0 > $3 AND ev.occurred_at + 0 <= $4 AND ev.kind IN ('purchase', 'refund')"
        }
        Metric::Orders => {
            "SELECT COUNT(*) FROM events ev WHERE ev.tenant_id = $1 AND ev.member_id = $2 AND ev.kind = 'purchase' AND ev.occurred_at + 0 > $3 AND ev.occurred_at + 0 <= $4 AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.tenant_id = ev.tenant_id AND o.order_id = ev.order_id AND o.total_minor > 0 AND o.refunded_minor >= o.total_minor)"
        }
        Metric::PointsEarned => {
            "SELECT CAST(COALESCE(SUM(-en.amount), 0) AS BIGINT) FROM txns tx JOIN entries en ON en.txn_id = tx.id WHERE tx.tenant_id = $1 AND tx.member_id = $2 AND tx.kind IN ('earn', 'clawback') AND tx.created_at > $3 AND tx.created_at <= $4 AND en.account = 'issued'"
        }
    }
}

/// The metric over `(start, end]` (start `None`: since the beginning). Refunds may take a
/// window below zero; it counts as zero.
pub(crate) fn measure(
    c: &mut dyn Conn,
    tenant: &str,
    member: &str,
    metric: Metric,
    start: Option<i64>,
    end: i64,
) -> Result<i64> {
    let params = [
        tenant.into(),
        member.into(),
        start.unwrap_or(i64::MIN).into(),
        end.into(),
    ];
    Ok(c.query_one(metric_sql(metric), &params)?
        .map_or(0, |r| r.int(0))
        .max(0))
}

/// The member's tier state and the metric, in one round trip (the write path's hook).
fn state_and_measure(
    c: &mut dyn Conn,
    tenant: &str,
    member: &str,
    metric: Metric,
    start: Option<i64>,
    end: i64,
) -> Result<Option<(TierState, i64)>> {
    let sql = format!(
        "SELECT m.tier, m.tier_since, m.tier_secured_until, ({}) FROM members m WHERE m.tenant_id = $1 AND m.id = $2",
        metric_sql(metric)
    );
    let params = [
        tenant.into(),
        member.into(),
        start.unwrap_or(i64::MIN).into(),
        end.into(),
    ];
    Ok(c.query_one(&sql, &params)?.map(|r| {
        (
            TierState {
                tier: r.opt_text(0),
                since: r.opt_int(1),
                secured_until: r.opt_int(2),
            },
            r.int(3).max(0),
        )
    }))
}

/// Applies a move; returns true when the tier changed.
#[allow(clippy::too_many_arguments)]
fn apply(
    c: &mut dyn Conn,
    tenant: &str,
    member: &str,
    ladder: &Ladder,
    st: &TierState,
    mv: Move,
    reason: &str,
    value: i64,
    now: i64,
) -> Result<bool> {
    let name = |r: Option<usize>| r.and_then(|r| ladder.levels.get(r)).map(|l| l.name.clone());
    let (to, since, until, changed) = match mv {
        Move::Stay => return Ok(false),
        Move::Renew { secured_until } => (
            st.tier.clone(),
            st.since,
            Some(to_micros(secured_until)),
            false,
        ),
        Move::Change {
            to,
            since,
            secured_until,
        } => {
            let to = name(to);
            let changed = to != st.tier;
            (
                to.clone(),
                to.as_ref().map(|_| to_micros(since)),
                secured_until.filter(|_| to.is_some()).map(to_micros),
                changed,
            )
        }
    };
    c.execute(
        "UPDATE members SET tier = $3, tier_since = $4, tier_secured_until = $5 WHERE tenant_id = $1 AND id = $2",
        &[tenant.into(), member.into(), to.as_ref().into(), since.into(), until.into()],
    )?;
    let effective = if changed { since.unwrap_or(now) } else { now };
    c.execute(
        "INSERT INTO tier_history (tenant_id, member_id, from_tier, to_tier, reason, metric_value, secured_until, effective_at, recorded_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[tenant.into(), member.into(), st.tier.as_ref().into(), to.as_ref().into(), reason.into(), value.into(), until.into(), effective.into(), now.into()],
    )?;
    Ok(changed)
}

/// Re-evaluates the member's tier after an event (`refund`: after a refund), in the event's
/// transaction. The caller holds the member's row lock. Does nothing without tiers.
pub(crate) fn after_event(
    c: &mut dyn Conn,
    tenant: &str,
    member: &str,
    settings: &ProgramSettings,
    now: i64,
    refund: bool,
) -> Result<()> {
    let Some(ladder) = settings.ladder() else {
        return Ok(());
    };
    if refund && ladder.on_refund == fidelis_core::tiers::OnRefund::AtReview {
        return Ok(());
    }
    let at = from_micros(now);
    // An event may be dated a little ahead of the server's clock (a till's clock); it counts.
    let end = now.saturating_add(MAX_FUTURE_SECS * 1_000_000);
    let start = ladder.window_start(at).map(to_micros);
    let Some((st, value)) = state_and_measure(c, tenant, member, ladder.metric, start, end)? else {
        return Ok(());
    };
    let current = st.tier.as_deref().and_then(|t| ladder.rank_of(t));
    let (mv, reason) = if refund {
        (ladder.on_refund(current, value, at), "refund")
    } else {
        let mv = ladder.on_event(
            current,
            st.since.map(from_micros),
            st.secured_until.map(from_micros),
            value,
            at,
        );
        let reason = if matches!(mv, Move::Renew { .. }) {
            "requalified"
        } else {
            "qualified"
        };
        (mv, reason)
    };
    apply(c, tenant, member, &ladder, &st, mv, reason, value, now)?;
    Ok(())
}

/// Reviews members whose review is due at `now` (secured until + grace); true when more may
/// be due. Members are claimed with `SKIP LOCKED`, so nodes share the work.
pub(crate) fn review_due(
    c: &mut dyn Conn,
    tenant: &str,
    settings: &ProgramSettings,
    now: i64,
    report: &mut JobReport,
) -> Result<bool> {
    let Some(ladder) = settings.ladder() else {
        return Ok(false);
    };
    let cutoff = to_micros(from_micros(now) - chrono::Duration::days(i64::from(ladder.grace_days)));
    let due = c.query(
        "SELECT id FROM members WHERE tenant_id = $1 AND tier IS NOT NULL AND tier_secured_until <= $2 ORDER BY tier_secured_until LIMIT $3",
        &[tenant.into(), cutoff.into(), REVIEWS_PER_RUN.into()],
    )?;
    let full = due.len() as i64 == REVIEWS_PER_RUN;
    let claim = format!(
        "SELECT tier, tier_since, tier_secured_until FROM members WHERE tenant_id = $1 AND id = $2 AND tier IS NOT NULL AND tier_secured_until <= $3{}",
        c.dialect().skip_locked()
    );
    for row in &due {
        let member = row.text(0);
        let Some(r) = c.query_one(
            &claim,
            &[tenant.into(), member.as_str().into(), cutoff.into()],
        )?
        else {
            continue;
        };
        let st = TierState {
            tier: r.opt_text(0),
            since: r.opt_int(1),
            secured_until: r.opt_int(2),
        };
        let until = from_micros(st.secured_until.unwrap_or(now));
        let since = st.since.map_or(until, from_micros);
        let (start, end) = ladder.review_window(until);
        let value = measure(
            c,
            tenant,
            &member,
            ladder.metric,
            start.map(to_micros),
            to_micros(end),
        )?;
        let mv = match st.tier.as_deref().and_then(|t| ladder.rank_of(t)) {
            Some(rank) => ladder.on_review(Some(rank), since, until, value),
            // The tier was removed from the ladder: straight to what the metric reaches.
            None => {
                let to = ladder.qualifies_for(value);
                let due = ladder.review_due(until);
                Move::Change {
                    to,
                    since: due,
                    secured_until: to.map(|_| ladder.next_review(due, due)),
                }
            }
        };
        let reason = match &mv {
            Move::Renew { .. } => "review_passed",
            _ => "review",
        };
        if apply(c, tenant, &member, &ladder, &st, mv, reason, value, now)? {
            report.tier_moves += 1;
        }
        report.tier_reviews += 1;
    }
    Ok(full)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TierHistoryItem {
    pub from_tier: Option<String>,
    pub to_tier: Option<String>,
    /// `qualified`, `requalified`, `review`, `review_passed`, `refund`.
    pub reason: String,
    pub metric_value: Value,
    pub secured_until: Option<String>,
    pub effective_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TierBenefits {
    pub earn_multiplier: String,
    pub perks: Vec<String>,
}

/// A member's tier, as the portal and the till show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TierView {
    pub member_id: String,
    pub tier: Option<String>,
    pub since: Option<String>,
    /// The tier is kept at least until then (the next review).
    pub secured_until: Option<String>,
    /// When the review happens: `secured_until` plus the grace period.
    pub review_at: Option<String>,
    /// True between `secured_until` and `review_at`.
    pub in_grace: bool,
    pub metric: Metric,
    pub window: Window,
    /// The metric over the current window: points, orders, or an amount for spend.
    pub value: Value,
    pub benefits: Option<TierBenefits>,
    pub next_tier: Option<String>,
    pub next_threshold: Option<Value>,
    pub to_next: Option<Value>,
    /// What is missing in this window to keep the tier at the review.
    pub to_keep: Option<Value>,
    /// The tier the metric reaches now (a member's tier is recorded at qualifying events).
    pub qualifies_for: Option<String>,
    /// "320 more points to Gold".
    pub message: Option<String>,
    pub history: Vec<TierHistoryItem>,
}

fn metric_value(metric: Metric, settings: &ProgramSettings, v: i64) -> Value {
    match metric {
        Metric::Spend => Value::String(format_minor(v, settings.currency.exponent())),
        _ => Value::from(v),
    }
}

pub(crate) fn view(
    c: &mut dyn Conn,
    tenant: &str,
    member: &str,
    settings: &ProgramSettings,
    now: i64,
) -> Result<TierView> {
    let ladder = settings
        .ladder()
        .ok_or_else(|| StoreError::NotFound("tiers (the programme has none)".into()))?;
    let st = state(c, tenant, member)?
        .ok_or_else(|| StoreError::NotFound(format!("member `{member}`")))?;
    let start = ladder.window_start(from_micros(now)).map(to_micros);
    let value = measure(c, tenant, member, ladder.metric, start, now)?;
    let rank = st.tier.as_deref().and_then(|t| ladder.rank_of(t));
    // A member without a recorded tier is recorded at their next qualifying event; progress is
    // shown from the tier the metric already reaches.
    let reaches = ladder.qualifies_for(value);
    let p = ladder.progress(rank.or(reaches), value);
    let mv = |v: i64| metric_value(ladder.metric, settings, v);
    let message = match (&p.next_tier, p.to_next) {
        (Some(next), Some(n)) if n > 0 => Some(format!(
            "{} to {next}",
            ladder.describe(n, &settings.points_name, settings.currency)
        )),
        (Some(next), Some(_)) => Some(format!("{next} is reached")),
        _ => None,
    };
    let review_at = st
        .secured_until
        .map(|u| to_micros(ladder.review_due(from_micros(u))));
    let history = c
        .query(
            "SELECT from_tier, to_tier, reason, metric_value, secured_until, effective_at FROM tier_history WHERE tenant_id = $1 AND member_id = $2 ORDER BY id DESC LIMIT $3",
            &[tenant.into(), member.into(), HISTORY_SHOWN.into()],
        )?
        .iter()
        .map(|r| TierHistoryItem {
            from_tier: r.opt_text(0),
            to_tier: r.opt_text(1),
            reason: r.text(2),
            metric_value: mv(r.int(3)),
            secured_until: r.opt_int(4).map(ts),
            effective_at: ts(r.int(5)),
        })
        .collect();
    Ok(TierView {
        member_id: member.to_string(),
        tier: st.tier.clone(),
        since: st.since.map(ts),
        secured_until: st.secured_until.map(ts),
        review_at: review_at.map(ts),
        in_grace: st.secured_until.is_some_and(|u| now >= u),
        metric: ladder.metric,
        window: ladder.window,
        value: mv(value),
        benefits: rank
            .and_then(|r| ladder.levels.get(r))
            .map(|l| TierBenefits {
                earn_multiplier: format_minor(l.multiplier_micro, 6)
                    .trim_end_matches('0')
                    .trim_end_matches('.')
                    .to_string(),
                perks: l.perks.clone(),
            }),
        next_tier: p.next_tier.clone(),
        next_threshold: p.next_threshold.map(mv),
        to_next: p.to_next.map(mv),
        to_keep: rank.and(p.to_keep).map(mv),
        qualifies_for: reaches
            .and_then(|r| ladder.levels.get(r))
            .map(|l| l.name.clone()),
        message,
        history,
    })
}

/// A member's tier rank under `ladder` (None: no tier, or a tier the ladder no longer has).
pub(crate) fn rank(
    c: &mut dyn Conn,
    tenant: &str,
    member: &str,
    ladder: Option<&Ladder>,
) -> Result<Option<usize>> {
    let Some(ladder) = ladder else {
        return Ok(None);
    };
    Ok(state(c, tenant, member)?
        .and_then(|s| s.tier)
        .and_then(|t| ladder.rank_of(&t)))
}

impl Store {
    /// A member's tier, progress and history, measured at `now`.
    pub async fn member_tier(
        &self,
        tenant: &str,
        member: &str,
        settings: ProgramSettings,
        now: i64,
    ) -> Result<TierView> {
        let (tenant, member) = (tenant.to_string(), member.to_string());
        self.read(move |c| view(c, &tenant, &member, &settings, now))
            .await
    }
}
