//! Earning multipliers of member value: a paid plan's, here, and a tier's, which the writer
//! applies (`fidelis_core::earn::tier_award`) with the tier it reads as it locks the member.
//! Each turns the purchase's base award (the programme's rate) into a bonus award of its own
//! source (`tier:<name>`, `plan:<id>`), so a refund claws back exactly what each gave. The tier
//! and the plan are the ones the member held before the event: the purchase that lifts a
//! member to Gold earns at the old tier's rate.

use fidelis_core::earn::{
    Award, EarnContext, EarnScope, Earner, Trigger, base_points, multiplier_bonus, multiplier_text,
};

fn base(ctx: &EarnContext<'_>) -> Option<i64> {
    match ctx.event {
        Trigger::Purchase(p) => Some(base_points(ctx.program, p.total.minor)),
        _ => None,
    }
}

/// The member's paid plan multiplier on purchases, while the plan is active.
pub struct PlanEarner;

impl Earner for PlanEarner {
    /// Only purchases are multiplied, and a member can hold a plan only where the tenant offers one.
    fn reads_member(&self, scope: &EarnScope<'_>) -> bool {
        matches!(scope.event, Trigger::Purchase(_)) && scope.plans_offered
    }

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
        let points = multiplier_bonus(base, micro);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_multiplier_gives_the_extra_over_the_base_rounded_down() {
        assert_eq!(multiplier_bonus(59, 1_500_000), 29);
        assert_eq!(multiplier_bonus(59, 1_000_000), 0);
        assert_eq!(multiplier_bonus(59, 2_000_000), 59);
        assert_eq!(multiplier_text(1_500_000), "1.5");
        assert_eq!(multiplier_text(2_000_000), "2");
    }

    /// A programme of a base rate alone earns without reading the member, and so does one with
    /// a tier ladder (the writer applies the tier); a plan offered makes purchases read them.
    #[test]
    fn earning_reads_the_member_only_where_something_uses_them() {
        use fidelis_core::earn::BaseEarner;
        use fidelis_core::event::{Channel, Custom, MemberKey, Purchase};
        use fidelis_core::money::{Currency, Money};
        let at = chrono::DateTime::from_timestamp(1_790_000_000, 0).expect("valid");
        let purchase = Purchase {
            member: MemberKey::Id("mem_1".into()),
            order_id: "o1".into(),
            occurred_at: at,
            channel: Channel::Pos,
            store_id: None,
            total: Money::new(1000, Currency::parse("EUR").expect("known")),
            lines: Vec::new(),
        };
        let custom = Custom {
            member: MemberKey::Id("mem_1".into()),
            kind: "review".into(),
            properties: Default::default(),
            occurred_at: at,
        };
        let plain = fidelis_core::ProgramSettings::default();
        let mut tiered = plain.clone();
        tiered.tiers = Some(
            serde_json::from_value(serde_json::json!({
                "metric": "spend",
                "window": { "kind": "rolling", "months": 12 },
                "review": { "kind": "anniversary", "months": 12 },
                "tiers": [{ "name": "Silver", "threshold": "0" }, { "name": "Gold", "threshold": "500.00", "earn_multiplier": "1.5" }]
            }))
            .expect("a ladder"),
        );
        let reads = |e: &dyn Earner, program, event, plans_offered| {
            e.reads_member(&EarnScope {
                program,
                event,
                plans_offered,
            })
        };
        let (p, c) = (Trigger::Purchase(&purchase), Trigger::Custom(&custom));
        for (program, event, plans) in [(&plain, p, false), (&tiered, p, true), (&plain, c, true)] {
            assert!(!reads(&BaseEarner, program, event, plans));
        }
        assert!(!reads(&PlanEarner, &tiered, p, false));
        assert!(reads(&PlanEarner, &plain, p, true));
        assert!(!reads(&PlanEarner, &plain, c, true));
    }
}
