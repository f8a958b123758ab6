//! Paid membership: plans (a price per period and perks such as an earning multiplier or a
//! monthly coupon), and a member's subscription as the retailer's billing reports it
//! (subscribe, renew, cancel, lapse). Perks apply only while the subscription is active and its
//! paid period has not ended. Payment itself is the retailer's.

use crate::money::Currency;
use crate::money::Money;
use crate::program::SettingsError;
use chrono::{DateTime, Datelike, Utc};
use serde::{Deserialize, Serialize};

pub const MAX_PLAN_NAME_LEN: usize = 80;
pub const MAX_PLAN_PERKS: usize = 20;
pub const MAX_PERIOD_MONTHS: u32 = 36;
/// Plans one tenant may hold.
pub const MAX_PLANS: i64 = 100;

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanInput {
    pub name: String,
    /// The price per period, as a decimal amount in the programme's currency.
    pub price: String,
    /// Months per billing period (1: monthly, 12: yearly).
    pub period_months: u32,
    /// Points earned on purchases are multiplied by this while subscribed ("2").
    #[serde(default)]
    pub earn_multiplier: Option<String>,
    /// A reward whose coupon every subscriber gets once a month, free (e.g. free shipping).
    #[serde(default)]
    pub monthly_reward_id: Option<String>,
    #[serde(default)]
    pub perks: Vec<String>,
    #[serde(default = "yes")]
    pub active: bool,
}

/// A checked plan, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanDef {
    pub name: String,
    pub price_minor: i64,
    pub period_months: u32,
    pub earn_multiplier: Option<String>,
    pub monthly_reward_id: Option<String>,
    pub perks: Vec<String>,
    pub active: bool,
}

impl PlanInput {
    pub fn validate(&self, currency: Currency) -> Result<PlanDef, SettingsError> {
        let bad = |field: &'static str, reason: String| Err(SettingsError { field, reason });
        let name = self.name.trim();
        if name.is_empty()
            || name.chars().count() > MAX_PLAN_NAME_LEN
            || name.chars().any(char::is_control)
        {
            return bad(
                "name",
                format!("must be 1 to {MAX_PLAN_NAME_LEN} printable characters"),
            );
        }
        let price = Money::parse(&self.price, currency).map_err(|e| SettingsError {
            field: "price",
            reason: e.to_string(),
        })?;
        if self.period_months == 0 || self.period_months > MAX_PERIOD_MONTHS {
            return bad("period_months", format!("must be 1 to {MAX_PERIOD_MONTHS}"));
        }
        if let Some(m) = &self.earn_multiplier {
            crate::tiers::parse_multiplier("earn_multiplier", m)?;
        }
        if self.perks.len() > MAX_PLAN_PERKS
            || self
                .perks
                .iter()
                .any(|p| p.trim().is_empty() || p.chars().count() > crate::tiers::MAX_PERK_LEN)
        {
            return bad(
                "perks",
                format!("at most {MAX_PLAN_PERKS} perks of 1 to 200 characters"),
            );
        }
        if let Some(r) = &self.monthly_reward_id
            && (r.trim().is_empty() || r.len() > crate::event::MAX_ID_LEN)
        {
            return bad("monthly_reward_id", "must name a reward".into());
        }
        Ok(PlanDef {
            name: name.to_string(),
            price_minor: price.minor,
            period_months: self.period_months,
            earn_multiplier: self.earn_multiplier.clone(),
            monthly_reward_id: self.monthly_reward_id.clone(),
            perks: self.perks.clone(),
            active: self.active,
        })
    }
}

/// What the retailer's billing reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionEvent {
    Subscribe,
    Renew,
    /// The member stopped the subscription: perks end now.
    Cancel,
    /// Billing failed or the period ran out unpaid: perks end now.
    Lapse,
}

impl SubscriptionEvent {
    pub fn as_str(&self) -> &'static str {
        match self {
            SubscriptionEvent::Subscribe => "subscribe",
            SubscriptionEvent::Renew => "renew",
            SubscriptionEvent::Cancel => "cancel",
            SubscriptionEvent::Lapse => "lapse",
        }
    }
}

/// A subscription's state: `active`, `cancelled` or `lapsed`, and the end of the paid period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubState {
    pub plan_id: String,
    pub status: String,
    pub period_end: DateTime<Utc>,
}

/// The state after `event`, or why the event does not apply.
pub fn transition(
    current: Option<&SubState>,
    event: SubscriptionEvent,
    plan_id: &str,
    period_end: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<SubState, String> {
    let needs_end = || {
        period_end
            .filter(|e| *e > now)
            .ok_or_else(|| format!("`{}` needs a period_end in the future", event.as_str()))
    };
    match (event, current) {
        (SubscriptionEvent::Subscribe, Some(c))
            if c.status == "active" && c.plan_id == plan_id && c.period_end > now =>
        {
            Err("the member is already subscribed to this plan; send `renew` to extend it".into())
        }
        (SubscriptionEvent::Subscribe, _) => Ok(SubState {
            plan_id: plan_id.to_string(),
            status: "active".into(),
            period_end: needs_end()?,
        }),
        (SubscriptionEvent::Renew, None) => Err("the member has no subscription to renew".into()),
        (SubscriptionEvent::Renew, Some(c)) => {
            if c.plan_id != plan_id {
                return Err(format!(
                    "the member's subscription is to plan `{}`; send `subscribe` to change plans",
                    c.plan_id
                ));
            }
            Ok(SubState {
                plan_id: c.plan_id.clone(),
                status: "active".into(),
                period_end: needs_end()?.max(c.period_end),
            })
        }
        (SubscriptionEvent::Cancel | SubscriptionEvent::Lapse, Some(c)) if c.status == "active" => {
            Ok(SubState {
                plan_id: c.plan_id.clone(),
                status: if event == SubscriptionEvent::Cancel {
                    "cancelled"
                } else {
                    "lapsed"
                }
                .into(),
                period_end: c.period_end,
            })
        }
        (SubscriptionEvent::Cancel | SubscriptionEvent::Lapse, _) => {
            Err(format!("`{}` needs an active subscription", event.as_str()))
        }
    }
}

/// Whether a subscription's perks apply at `now`.
pub fn perks_active(status: &str, period_end: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    status == "active" && period_end > now
}

/// The member's plan as earning sees it (in `MemberFacts`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivePlan {
    pub id: String,
    pub name: String,
    pub status: String,
    pub earn_multiplier: Option<String>,
    pub period_end: DateTime<Utc>,
}

impl ActivePlan {
    pub fn active_at(&self, now: DateTime<Utc>) -> bool {
        perks_active(&self.status, self.period_end, now)
    }
}

/// The monthly perk's period: the calendar month (UTC) of `now`, as `2026-03`.
pub fn perk_period(now: DateTime<Utc>) -> String {
    format!("{:04}-{:02}", now.year(), now.month())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        crate::time::parse(s).expect("valid")
    }

    #[test]
    fn billing_events_move_the_subscription() {
        let now = t("2026-03-10T00:00:00Z");
        let end = t("2026-04-10T00:00:00Z");
        let s = transition(None, SubscriptionEvent::Subscribe, "p1", Some(end), now)
            .expect("subscribed");
        assert_eq!(s.status, "active");
        assert!(transition(Some(&s), SubscriptionEvent::Subscribe, "p1", Some(end), now).is_err());
        assert!(transition(None, SubscriptionEvent::Renew, "p1", Some(end), now).is_err());
        let later = t("2026-05-10T00:00:00Z");
        let r = transition(Some(&s), SubscriptionEvent::Renew, "p1", Some(later), now)
            .expect("renewed");
        assert_eq!(r.period_end, later);
        let c =
            transition(Some(&r), SubscriptionEvent::Cancel, "p1", None, now).expect("cancelled");
        assert!(!perks_active(&c.status, c.period_end, now));
        assert!(transition(Some(&c), SubscriptionEvent::Lapse, "p1", None, now).is_err());
        assert!(
            transition(None, SubscriptionEvent::Subscribe, "p1", Some(now), now).is_err(),
            "period_end must be in the future"
        );
    }

    #[test]
    fn perks_apply_only_while_active_and_paid() {
        let end = t("2026-04-10T00:00:00Z");
        assert!(perks_active("active", end, t("2026-04-09T23:59:59Z")));
        assert!(!perks_active("active", end, end));
        assert!(!perks_active("cancelled", end, t("2026-03-01T00:00:00Z")));
        assert_eq!(perk_period(t("2026-03-31T23:59:59Z")), "2026-03");
    }
}
