//! Earning multipliers of member value: a tier's and a paid plan's. Each turns the purchase's
//! base award (the programme's rate) into a bonus award of its own source (`tier:<name>`,
//! `plan:<id>`), so a refund claws back exactly what each gave. The tier and the plan are the
//! ones the member held before the event (the snapshot earning sees): the purchase that lifts a
//! member to Gold earns at the old tier's rate.

use fidelis_core::earn::{Award, EarnContext, Earner, Trigger, base_points};
use fidelis_core::program::RATE_SCALE;

/// The bonus of a multiplier `micro` (millionths) on `base` points, rounded down.
pub fn bonus(base: i64, micro: i64) -> i64 {
    let extra =
        i128::from(base.max(0)) * i128::from((micro - RATE_SCALE).max(0)) / i128::from(RATE_SCALE);
    i64::try_from(extra).unwrap_or(0)
}

fn base(ctx: &EarnContext<'_>) -> Option<i64> {
    match ctx.event {
        Trigger::Purchase(p) => Some(base_points(ctx.program, p.total.minor)),
        _ => None,
    }
}

/// The member's tier multiplier on purchases.
pub struct TierEarner;

impl Earner for TierEarner {
    fn awards(&self, ctx: &EarnContext<'_>) -> Vec<Award> {
        let (Some(base), Some(tier), Some(ladder)) =
            (base(ctx), &ctx.member.tier, ctx.program.ladder())
        else {
            return Vec::new();
        };
        let Some(level) = ladder.rank_of(tier).and_then(|r| ladder.levels.get(r)) else {
            return Vec::new();
        };
        let points = bonus(base, level.multiplier_micro);
        if points == 0 {
            return Vec::new();
        }
        vec![Award::plain(
            format!("tier:{}", level.name),
            points,
            format!(
                "{} tier: ×{} on {base} base {}",
                level.name,
                multiplier_text(level.multiplier_micro),
                ctx.program.points_name
            ),
        )]
    }
}

/// The member's paid plan multiplier on purchases, while the plan is active.
pub struct PlanEarner;

impl Earner for PlanEarner {
    fn awards(&self, ctx: &EarnContext<'_>) -> Vec<Award> {
        let (Some(base), Some(plan)) = (base(ctx), &ctx.member.plan) else {
            return Vec::new();
        };
        if !plan.active_at(ctx.now) {
            return Vec::new();
        }
        let Some(micro) = plan
            .earn_multiplier
            .as_deref()
            .and_then(|m| fidelis_core::tiers::parse_multiplier("earn_multiplier", m).ok())
        else {
            return Vec::new();
        };
        let points = bonus(base, micro);
        if points == 0 {
            return Vec::new();
        }
        vec![Award::plain(
            format!("plan:{}", plan.id),
            points,
            format!(
                "{} plan: ×{} on {base} base {}",
                plan.name,
                multiplier_text(micro),
                ctx.program.points_name
            ),
        )]
    }
}

fn multiplier_text(micro: i64) -> String {
    let s = fidelis_core::money::format_minor(micro, 6);
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_multiplier_gives_the_extra_over_the_base_rounded_down() {
        assert_eq!(bonus(59, 1_500_000), 29);
        assert_eq!(bonus(59, 1_000_000), 0);
        assert_eq!(bonus(59, 2_000_000), 59);
        assert_eq!(multiplier_text(1_500_000), "1.5");
        assert_eq!(multiplier_text(2_000_000), "2");
    }
}
