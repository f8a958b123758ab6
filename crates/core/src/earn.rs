//! What a purchase earns. Base earning (the programme's rate) is here; the rules engine plugs in
//! through [`Earner`]: it sees the same context and returns more awards, each naming its source,
//! so refunds can later claw back exactly what each source gave.

use crate::event::{Custom, Purchase};
use crate::program::{ProgramSettings, RATE_SCALE, Rounding};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

/// One line of a purchase's breakdown: who gave how many points, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Award {
    /// `base` for the programme's rate; a rule's id for rule awards.
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_version: Option<i64>,
    pub points: i64,
    pub description: String,
    /// The campaign of the rule that gave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
    /// What the rule computed before a cap or a budget cut it to `points`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capped_from: Option<i64>,
    /// What the store checks and records with the award (caps, budgets, what it was computed
    /// on). The store consumes it in the write, so it is never part of an answer.
    #[serde(skip)]
    pub terms: Option<Box<AwardTerms>>,
}

impl Award {
    /// An award with no campaign, cap or terms.
    pub fn plain(source: impl Into<String>, points: i64, description: impl Into<String>) -> Award {
        Award {
            source: source.into(),
            rule_version: None,
            points,
            description: description.into(),
            campaign: None,
            capped_from: None,
            terms: None,
        }
    }
}

/// The conditions of a rule's award, checked and recorded inside the write transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AwardTerms {
    /// Counters the award must fit under (caps per member and period, budgets); shared by the
    /// awards of one rule.
    pub limits: std::sync::Arc<[AwardLimit]>,
    /// `(n, every)`: the award stands only if this is the member's `n`th order (every `n`th),
    /// counted in the transaction.
    pub nth_order: Option<(i64, bool)>,
    /// What the award was computed on, so a refund claws back what it gave for the refunded
    /// lines. `None`: the whole order.
    pub basis: Option<AwardBasis>,
}

/// A counter an award adds to, and the most it may hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwardLimit {
    /// `rule:<id>` or `campaign:<id>`.
    pub counter: std::sync::Arc<str>,
    /// Per member (else one counter for everyone: a budget).
    pub per_member: bool,
    /// `d:2026-03-14`, `w:2026-W11`, `m:2026-03` (the programme's zone), `life`, `budget`.
    pub period: std::sync::Arc<str>,
    pub max: i64,
    /// How the cap reads in an explanation ("rule per member per month").
    pub label: &'static str,
}

/// The order lines (by sku) an award was computed on, at the price paid.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AwardBasis {
    pub total_minor: i64,
    pub lines: Vec<BasisLine>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BasisLine {
    pub sku: String,
    pub quantity: i64,
    pub paid_minor: i64,
}

/// What is known of the member when an event is evaluated: a snapshot read before the write,
/// so earning rules run outside the write transaction. A member enrolled by this very event
/// has the default (empty) facts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemberFacts {
    pub id: Option<String>,
    pub tier: Option<String>,
    pub attributes: serde_json::Map<String, serde_json::Value>,
    pub order_count: i64,
    pub lifetime_spend_minor: i64,
    pub enrolled_at: Option<DateTime<Utc>>,
    pub birth_date: Option<NaiveDate>,
    /// The member's paid-membership plan, if subscribed (check `active_at(now)`).
    #[serde(default)]
    pub plan: Option<crate::membership::ActivePlan>,
}

/// The event an earner evaluates.
#[derive(Debug, Clone, Copy)]
pub enum Trigger<'a> {
    Purchase(&'a Purchase),
    Custom(&'a Custom),
}

/// What an earner sees. Later capabilities add fields here, not to the earner signature.
pub struct EarnContext<'a> {
    pub program: &'a ProgramSettings,
    pub event: Trigger<'a>,
    pub member: &'a MemberFacts,
    pub now: DateTime<Utc>,
}

/// The seam for earning beyond the base rate (rules, tier multipliers, campaigns). The
/// application chains earners and records every award with its source.
pub trait Earner: Send + Sync {
    fn awards(&self, ctx: &EarnContext<'_>) -> Vec<Award>;

    /// Whether this earner's awards for the event may depend on the member
    /// ([`EarnContext::member`]). When no earner's may, the event is earned on with the default
    /// facts and the member is not read first (a read per event saved; the writer still finds
    /// the member, or refuses the event). `true` is always correct, and is the default.
    fn reads_member(&self, _scope: &EarnScope<'_>) -> bool {
        true
    }
}

/// What is known of an event before its member is read: enough for each earner to say whether
/// it needs the member ([`Earner::reads_member`]).
#[derive(Debug, Clone, Copy)]
pub struct EarnScope<'a> {
    pub program: &'a ProgramSettings,
    pub event: Trigger<'a>,
    /// Whether the tenant has any paid-membership plan (a member can only hold one then).
    pub plans_offered: bool,
}

/// The source of the programme's base-rate award.
pub const BASE_SOURCE: &str = "base";

/// The programme's base rate on purchases, and nothing else.
pub struct BaseEarner;

impl Earner for BaseEarner {
    /// The base rate is the programme's, the same for every member.
    fn reads_member(&self, _scope: &EarnScope<'_>) -> bool {
        false
    }

    fn awards(&self, ctx: &EarnContext<'_>) -> Vec<Award> {
        let Trigger::Purchase(purchase) = ctx.event else {
            return Vec::new();
        };
        let points = base_points(ctx.program, purchase.total.minor);
        vec![Award::plain(
            BASE_SOURCE,
            points,
            format!(
                "{} {} per {} on {}",
                ctx.program.earn_rate,
                ctx.program.points_name,
                ctx.program.currency,
                purchase.total.to_decimal()
            ),
        )]
    }
}

/// Points for `total_minor` at the programme's rate, rounded as the programme says.
pub fn base_points(program: &ProgramSettings, total_minor: i64) -> i64 {
    let rate = program.earn_rate_micro().unwrap_or(0);
    let denom = i128::from(program.currency.minor_per_unit()) * i128::from(RATE_SCALE);
    let num = i128::from(total_minor) * i128::from(rate);
    let points = match program.rounding {
        Rounding::Floor => num.div_euclid(denom),
        Rounding::Ceil => (num + denom - 1).div_euclid(denom),
        Rounding::Nearest => (num * 2 + denom).div_euclid(denom * 2),
    };
    i64::try_from(points).unwrap_or(i64::MAX)
}

/// The bonus of a multiplier `micro` (millionths) on `base` points, rounded down: what a tier or
/// a plan adds over the base rate.
pub fn multiplier_bonus(base: i64, micro: i64) -> i64 {
    let extra =
        i128::from(base.max(0)) * i128::from((micro - RATE_SCALE).max(0)) / i128::from(RATE_SCALE);
    i64::try_from(extra).unwrap_or(0)
}

/// A multiplier as people write it: `1.5`, `2`.
pub fn multiplier_text(micro: i64) -> String {
    let s = crate::money::format_minor(micro, 6);
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The award (source `tier:<name>`) of the tier multiplier on a purchase of `total_minor` by
/// a member holding `tier` before it (`None`: no ladder, a tier the ladder no longer has, or
/// nothing to add).
///
/// The writer applies it ([`with_tier_award`]), with the tier it reads as it locks the member
/// for the purchase, so earning need not read the member beforehand for it.
pub fn tier_award(program: &ProgramSettings, tier: &str, total_minor: i64) -> Option<Award> {
    let ladder = program.ladder()?;
    let level = ladder.levels.get(ladder.rank_of(tier)?)?;
    let base = base_points(program, total_minor);
    let points = multiplier_bonus(base, level.multiplier_micro);
    (points != 0).then(|| {
        Award::plain(
            format!("tier:{}", level.name),
            points,
            format!(
                "{} tier: ×{} on {base} base {}",
                level.name,
                multiplier_text(level.multiplier_micro),
                program.points_name
            ),
        )
    })
}

/// A purchase's awards with its tier's award (if any), put after the base rate's.
pub fn with_tier_award<'a>(
    awards: &'a [Award],
    program: &ProgramSettings,
    tier: Option<&str>,
    total_minor: i64,
) -> std::borrow::Cow<'a, [Award]> {
    let Some(award) = tier.and_then(|t| tier_award(program, t, total_minor)) else {
        return std::borrow::Cow::Borrowed(awards);
    };
    let at = awards
        .iter()
        .position(|a| a.source == BASE_SOURCE)
        .map_or(0, |i| i + 1);
    let mut all = awards.to_vec();
    all.insert(at, award);
    std::borrow::Cow::Owned(all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The tier's award goes right after the base rate's, at the multiplier's bonus over the
    /// base, rounded down; no ladder, a tier the ladder lost, or no tier add nothing.
    #[test]
    fn a_purchase_earns_its_tier_multiplier_after_the_base_rate() {
        let mut program = with("1", Rounding::Floor);
        let awards = vec![
            Award::plain(BASE_SOURCE, 59, "base"),
            Award::plain("rule_1", 10, "a rule"),
        ];
        let same = |tier: Option<&str>, program: &ProgramSettings| {
            matches!(
                with_tier_award(&awards, program, tier, 5_999),
                std::borrow::Cow::Borrowed(_)
            )
        };
        assert!(same(Some("Gold"), &program), "no ladder");
        program.tiers = Some(
            serde_json::from_value(serde_json::json!({
                "metric": "spend",
                "window": { "kind": "rolling", "months": 12 },
                "review": { "kind": "anniversary", "months": 12 },
                "tiers": [
                    { "name": "Silver", "threshold": "0" },
                    { "name": "Gold", "threshold": "500.00", "earn_multiplier": "1.5" }
                ]
            }))
            .expect("a ladder"),
        );
        assert!(same(None, &program), "no tier");
        assert!(same(Some("Silver"), &program), "a multiplier of 1");
        assert!(
            same(Some("Platinum"), &program),
            "a tier no longer on the ladder"
        );
        let all = with_tier_award(&awards, &program, Some("Gold"), 5_999);
        let sources: Vec<&str> = all.iter().map(|a| a.source.as_str()).collect();
        assert_eq!(sources, ["base", "tier:Gold", "rule_1"]);
        assert_eq!(all[1].points, 29, "half of 59, rounded down");
        assert_eq!(all[1].description, "Gold tier: ×1.5 on 59 base points");
        let rules_only = [Award::plain("rule_1", 10, "a rule")];
        let all = with_tier_award(&rules_only, &program, Some("Gold"), 5_999);
        assert_eq!(
            all[0].source, "tier:Gold",
            "first where there is no base award"
        );
    }

    fn with(rate: &str, rounding: Rounding) -> ProgramSettings {
        ProgramSettings {
            earn_rate: rate.into(),
            rounding,
            ..Default::default()
        }
    }

    #[test]
    fn base_rate_rounds_as_configured() {
        assert_eq!(base_points(&with("1", Rounding::Floor), 5990), 59);
        assert_eq!(base_points(&with("1", Rounding::Nearest), 5990), 60);
        assert_eq!(base_points(&with("1", Rounding::Nearest), 5949), 59);
        assert_eq!(base_points(&with("1", Rounding::Nearest), 5950), 60);
        assert_eq!(base_points(&with("1", Rounding::Ceil), 5901), 60);
        assert_eq!(base_points(&with("1", Rounding::Ceil), 5900), 59);
        assert_eq!(base_points(&with("2.5", Rounding::Floor), 1000), 25);
        assert_eq!(base_points(&with("0.1", Rounding::Floor), 999), 0);
    }

    proptest! {
        #[test]
        fn floor_le_nearest_le_ceil(total in 0i64..=crate::money::MAX_MINOR, rate in 0i64..=1000 * RATE_SCALE) {
            let r = crate::money::format_minor(rate, 6);
            let f = base_points(&with(&r, Rounding::Floor), total);
            let n = base_points(&with(&r, Rounding::Nearest), total);
            let c = base_points(&with(&r, Rounding::Ceil), total);
            prop_assert!(f <= n && n <= c && c - f <= 1 && f >= 0);
        }
    }
}
