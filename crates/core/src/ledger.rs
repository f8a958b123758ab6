//! The ledger's planning, as pure functions over the state a store loaded: which lots a debit
//! consumes (earliest expiry first), how much of a refund's claw-back comes from pending points,
//! from available points, from a debt, or is forgiven, and how much of a credit repays a debt.
//! Stores turn a plan into journal entries that sum to zero.

use crate::program::RefundPolicy;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// Ledger accounts. Member accounts hold a member's points; programme accounts are the other
/// side of every movement, so each journal transaction sums to zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Account {
    Available,
    Pending,
    Issued,
    Redeemed,
    Expired,
    Adjusted,
    /// Points members gave to charities.
    Donated,
    /// The clearing account of transfers between members: each transfer's two legs cancel.
    Transfer,
}

impl Account {
    pub fn as_str(&self) -> &'static str {
        match self {
            Account::Available => "available",
            Account::Pending => "pending",
            Account::Issued => "issued",
            Account::Redeemed => "redeemed",
            Account::Expired => "expired",
            Account::Adjusted => "adjusted",
            Account::Donated => "donated",
            Account::Transfer => "transfer",
        }
    }
    pub fn parse(s: &str) -> Option<Account> {
        [
            Account::Available,
            Account::Pending,
            Account::Issued,
            Account::Redeemed,
            Account::Expired,
            Account::Adjusted,
            Account::Donated,
            Account::Transfer,
        ]
        .into_iter()
        .find(|a| a.as_str() == s)
    }
    pub fn is_member(&self) -> bool {
        matches!(self, Account::Available | Account::Pending)
    }
}

/// A lot as the planner needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LotView {
    pub id: i64,
    pub remaining: i64,
    /// Micros since epoch; `None` never expires and is consumed last.
    pub expires_at: Option<i64>,
}

/// Takes up to `amount` from `lots`, earliest expiry first (ties by age). Returns the takes and
/// the total taken, which is less than `amount` only when the lots hold less.
pub fn take_from_lots(lots: &[LotView], amount: i64) -> (Vec<(i64, i64)>, i64) {
    let mut order: Vec<&LotView> = lots.iter().filter(|l| l.remaining > 0).collect();
    order.sort_by_key(|l| (l.expires_at.is_none(), l.expires_at, l.id));
    let mut left = amount.max(0);
    let mut takes = Vec::new();
    for lot in order {
        if left == 0 {
            break;
        }
        let take = lot.remaining.min(left);
        takes.push((lot.id, take));
        left -= take;
    }
    (takes, amount.max(0) - left)
}

/// Whether a debit planned from the first of a member's available lots (`head`: a prefix in
/// the order they were earned, the rest having later ids) takes what the same debit planned from
/// all of them would: [`take_from_lots`] gave `takes` and `taken` from `head` for `amount`, and
/// `list` is the member's soonest expiry dates as kept on the member row.
///
/// The lots the debit passes over come first in its order; one outside the head could only come
/// before the last lot taken by expiring sooner, or on the same date with a smaller id. So every
/// listed date up to and including the last taken lot's must have all its points in the head,
/// and the list must reach that date: a full list (the first [`EXPIRING_KEPT`] dates) says
/// nothing of later ones, and when the last lot taken never expires, every expiring lot comes
/// before it, so the list must be complete (shorter than full) and wholly in the head. Lots
/// that never expire are not listed: among them the head relies on later lots having larger
/// ids. Were one not to (two writers taking ids at once, on PostgreSQL), the debit would take
/// another never-expiring lot than the oldest: the same points, neither ever expiring. When
/// this answers `false` the caller reads every lot.
pub fn head_decides(
    head: &[LotView],
    takes: &[(i64, i64)],
    taken: i64,
    amount: i64,
    list: &SoonestExpiring,
) -> bool {
    if taken < amount.max(0) {
        return false;
    }
    let Some(&(last_id, _)) = takes.last() else {
        return true;
    };
    let Some(last) = head.iter().find(|l| l.id == last_id) else {
        return false;
    };
    let full = list.0.len() >= EXPIRING_KEPT;
    match (last.expires_at, list.0.last()) {
        (None, _) if full => return false,
        (Some(d), Some(&(end, _))) if full && d > end => return false,
        _ => {}
    }
    list.0
        .iter()
        .filter(|(d, _)| last.expires_at.is_none_or(|b| *d <= b))
        .all(|&(d, points)| {
            head.iter()
                .filter(|l| l.expires_at == Some(d))
                .map(|l| l.remaining.max(0))
                .sum::<i64>()
                == points
        })
}

/// How many of a member's soonest expiry dates a balance lists, and the member row keeps.
pub const EXPIRING_KEPT: usize = 12;

/// A member's available points by expiry date, soonest first: exactly the first
/// [`EXPIRING_KEPT`] dates of the member's available lots that expire (or all of them, when
/// fewer), each with the points its lots hold. Kept on the member row so a balance read never
/// reads lots: a new lot is added here ([`SoonestExpiring::add`]); whatever takes points from
/// lots or changes their state lists them again from the lots.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SoonestExpiring(pub Vec<(i64, i64)>);

impl SoonestExpiring {
    /// From `(expires_at, points)` pairs in any order (dates repeated are added together).
    pub fn from_pairs(pairs: impl IntoIterator<Item = (i64, i64)>) -> SoonestExpiring {
        let mut list = SoonestExpiring::default();
        for (at, points) in pairs {
            list.add(at, points);
        }
        list
    }

    /// A new available lot of `points` expiring at `at`. The list stays the first dates: a
    /// date later than the last of a full list is not among them, and one before it pushes
    /// the last out. Only correct while no lot has lost points since the list was made.
    pub fn add(&mut self, at: i64, points: i64) {
        if points <= 0 {
            return;
        }
        match self.0.binary_search_by_key(&at, |(d, _)| *d) {
            Ok(i) => self.0[i].1 += points,
            Err(i) if i < EXPIRING_KEPT => {
                self.0.insert(i, (at, points));
                self.0.truncate(EXPIRING_KEPT);
            }
            Err(_) => {}
        }
    }

    /// The list after `taken` (`(expires_at, points)` pairs) left available lots, told from the
    /// list alone; `None` when it cannot be: a date not listed, more taken than listed, or a full
    /// list losing a date (the next date is not in it). The caller then lists the dates again
    /// from the lots.
    pub fn less(&self, taken: &[(i64, i64)]) -> Option<SoonestExpiring> {
        let mut out = self.clone();
        for &(at, n) in taken {
            let i = out.0.binary_search_by_key(&at, |(d, _)| *d).ok()?;
            out.0[i].1 -= n;
        }
        if out.0.iter().any(|(_, p)| *p < 0) {
            return None;
        }
        out.0.retain(|(_, p)| *p > 0);
        if out.0.len() < self.0.len() && self.0.len() >= EXPIRING_KEPT {
            return None;
        }
        Some(out)
    }

    /// The stored form: `[[expires_at, points], ...]`.
    pub fn to_text(&self) -> String {
        let mut out = String::with_capacity(2 + self.0.len() * 24);
        out.push('[');
        for (i, (at, points)) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            // Into the string itself: a `format!` per pair was most of a purchase's cost here.
            let _ = write!(out, "[{at},{points}]");
        }
        out.push(']');
        out
    }

    /// Reads the stored form; `None` when it is not one.
    pub fn parse(text: &str) -> Option<SoonestExpiring> {
        let pairs: Vec<(i64, i64)> = serde_json::from_str(text).ok()?;
        Some(SoonestExpiring(pairs))
    }
}

/// How much of a credit to `available` goes to repaying a debt (a negative balance), and how
/// much is left for the new lot.
pub fn repay_debt(credit: i64, available_before: i64) -> (i64, i64) {
    let debt = (-available_before).max(0);
    let repaid = credit.min(debt);
    (repaid, credit - repaid)
}

/// Points a refund claws back, cumulatively: after refunding `refunded_minor` of an order of
/// `total_minor` that awarded `awarded` points, `clawback_target` points in all should have
/// been taken back. Computing the cumulative target (not each refund's share) means partial
/// refunds that add up to the whole take back exactly what was awarded.
pub fn clawback_target(awarded: i64, total_minor: i64, refunded_minor: i64) -> i64 {
    if total_minor <= 0 || refunded_minor >= total_minor {
        return awarded;
    }
    let v = i128::from(awarded) * i128::from(refunded_minor.max(0)) / i128::from(total_minor);
    i64::try_from(v).unwrap_or(awarded)
}

/// Where a claw-back comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClawbackPlan {
    pub from_pending: Vec<(i64, i64)>,
    pub from_available: Vec<(i64, i64)>,
    /// Taken from `available` beyond its lots: the balance goes (further) negative.
    pub into_debt: i64,
    /// Not taken at all, as the programme's policy says.
    pub forgiven: i64,
}

impl ClawbackPlan {
    pub fn pending_total(&self) -> i64 {
        self.from_pending.iter().map(|(_, n)| n).sum()
    }
    pub fn available_total(&self) -> i64 {
        self.from_available.iter().map(|(_, n)| n).sum::<i64>() + self.into_debt
    }
}

/// Plans a claw-back of `amount`: the order's own pending lots first, then other pending lots,
/// then available lots (earliest expiry first), then a debt or forgiveness per `policy`.
pub fn plan_clawback(
    amount: i64,
    own_pending: &[LotView],
    other_pending: &[LotView],
    available: &[LotView],
    policy: RefundPolicy,
) -> ClawbackPlan {
    let mut plan = ClawbackPlan::default();
    let (own, n1) = take_from_lots(own_pending, amount);
    let (other, n2) = take_from_lots(other_pending, amount - n1);
    plan.from_pending = own.into_iter().chain(other).collect();
    let mut left = amount - n1 - n2;
    if policy != RefundPolicy::PendingOnly {
        let (avail, n3) = take_from_lots(available, left);
        plan.from_available = avail;
        left -= n3;
    }
    if policy == RefundPolicy::AllowNegative {
        plan.into_debt = left;
    } else {
        plan.forgiven = left;
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lot(id: i64, remaining: i64, expires_at: Option<i64>) -> LotView {
        LotView {
            id,
            remaining,
            expires_at,
        }
    }

    #[test]
    fn debits_take_the_earliest_expiring_lots_first() {
        let lots = [
            lot(1, 50, Some(300)),
            lot(2, 30, Some(100)),
            lot(3, 40, None),
            lot(4, 10, Some(200)),
        ];
        let (takes, taken) = take_from_lots(&lots, 75);
        assert_eq!(takes, vec![(2, 30), (4, 10), (1, 35)]);
        assert_eq!(taken, 75);
        let (takes, taken) = take_from_lots(&lots, 500);
        assert_eq!(taken, 130);
        assert_eq!(takes.last(), Some(&(3, 40)));
    }

    #[test]
    fn clawback_takes_pending_then_available_then_follows_the_policy() {
        let own = [lot(1, 20, None)];
        let avail = [lot(2, 30, Some(10))];
        let p = plan_clawback(100, &own, &[], &avail, RefundPolicy::AllowNegative);
        assert_eq!(
            (
                p.pending_total(),
                p.from_available.clone(),
                p.into_debt,
                p.forgiven
            ),
            (20, vec![(2, 30)], 50, 0)
        );
        let p = plan_clawback(100, &own, &[], &avail, RefundPolicy::WithinBalance);
        assert_eq!(
            (p.pending_total(), p.available_total(), p.forgiven),
            (20, 30, 50)
        );
        let p = plan_clawback(100, &own, &[], &avail, RefundPolicy::PendingOnly);
        assert_eq!(
            (p.pending_total(), p.available_total(), p.forgiven),
            (20, 0, 80)
        );
    }

    #[test]
    fn partial_refunds_add_up_to_the_whole_award() {
        let mut clawed = 0;
        for refunded in [1000, 2500, 5990] {
            clawed = clawback_target(59, 5990, refunded).max(clawed);
        }
        assert_eq!(clawed, 59);
        assert_eq!(clawback_target(59, 5990, 2995), 29);
    }

    #[test]
    fn credits_repay_debt_first() {
        assert_eq!(repay_debt(100, -30), (30, 70));
        assert_eq!(repay_debt(10, -30), (10, 0));
        assert_eq!(repay_debt(10, 5), (0, 10));
    }

    proptest! {
        #[test]
        fn a_take_never_exceeds_the_lots_or_the_amount(
            rems in proptest::collection::vec((0i64..1000, proptest::option::of(0i64..50)), 0..20),
            amount in 0i64..20_000,
        ) {
            let lots: Vec<LotView> = rems.iter().enumerate().map(|(i, (r, e))| lot(i as i64, *r, *e)).collect();
            let (takes, taken) = take_from_lots(&lots, amount);
            let held: i64 = lots.iter().map(|l| l.remaining).sum();
            prop_assert_eq!(taken, amount.min(held));
            prop_assert_eq!(takes.iter().map(|(_, n)| n).sum::<i64>(), taken);
            for (id, n) in &takes {
                prop_assert!(*n > 0 && *n <= lots[*id as usize].remaining);
            }
        }

        #[test]
        fn a_clawback_plan_accounts_for_every_point(
            amount in 0i64..5000, own in 0i64..1000, other in 0i64..1000, avail in 0i64..1000, policy in 0u8..3,
        ) {
            let policy = [RefundPolicy::PendingOnly, RefundPolicy::WithinBalance, RefundPolicy::AllowNegative][policy as usize];
            let p = plan_clawback(amount, &[lot(1, own, None)], &[lot(2, other, Some(5))], &[lot(3, avail, Some(1))], policy);
            prop_assert_eq!(p.pending_total() + p.available_total() + p.forgiven, amount);
            prop_assert!(p.into_debt >= 0 && p.forgiven >= 0);
        }

        #[test]
        fn soonest_expiring_stays_the_first_dates_of_every_lot_added(
            lots in proptest::collection::vec((0i64..40, 1i64..500), 0..60),
        ) {
            let mut kept = SoonestExpiring::default();
            let mut all = std::collections::BTreeMap::new();
            for (at, points) in &lots {
                kept.add(*at, *points);
                *all.entry(*at).or_insert(0i64) += points;
                let first: Vec<(i64, i64)> = all.iter().take(EXPIRING_KEPT).map(|(a, p)| (*a, *p)).collect();
                prop_assert_eq!(&kept.0, &first);
            }
            prop_assert_eq!(SoonestExpiring::parse(&kept.to_text()), Some(kept.clone()));
        }

        /// The stored form is JSON's for any dates and points, negative and extreme included.
        #[test]
        fn the_stored_form_is_json_for_any_pairs(
            pairs in proptest::collection::vec((any::<i64>(), any::<i64>()), 0..14),
        ) {
            let text = SoonestExpiring(pairs.clone()).to_text();
            prop_assert_eq!(&text, &serde_json::to_string(&pairs).expect("serializable"));
            prop_assert_eq!(SoonestExpiring::parse(&text), Some(SoonestExpiring(pairs)));
        }

        #[test]
        fn a_debit_the_head_decides_is_the_debit_of_every_lot(
            rems in proptest::collection::vec((1i64..60, proptest::option::of(0i64..20)), 0..40),
            head_len in 0usize..40,
            amount in 0i64..1_500,
        ) {
            // Every lot of the member, oldest first, and the first `head_len` of them.
            let lots: Vec<LotView> = rems.iter().enumerate().map(|(i, (r, e))| lot(i as i64, *r, *e)).collect();
            let head = &lots[..head_len.min(lots.len())];
            let list = SoonestExpiring::from_pairs(lots.iter().filter_map(|l| l.expires_at.map(|at| (at, l.remaining))));
            let (takes, taken) = take_from_lots(head, amount);
            let whole = take_from_lots(&lots, amount);
            if head.len() == lots.len() {
                prop_assert_eq!((&takes, taken), (&whole.0, whole.1));
            }
            if head_decides(head, &takes, taken, amount, &list) {
                prop_assert_eq!(&takes, &whole.0);
                // And the list after the debit, from the list alone, where it can be told.
                let dated: Vec<(i64, i64)> = takes.iter().filter_map(|(id, n)| lots[*id as usize].expires_at.map(|at| (at, *n))).collect();
                let after = SoonestExpiring::from_pairs(lots.iter().filter_map(|l| {
                    let t: i64 = takes.iter().filter(|(id, _)| *id == l.id).map(|(_, n)| n).sum();
                    l.expires_at.map(|at| (at, l.remaining - t))
                }));
                if let Some(told) = list.less(&dated) {
                    prop_assert_eq!(told, after);
                }
            }
        }

        #[test]
        fn cumulative_clawback_is_monotone_and_bounded(awarded in 0i64..1_000_000, total in 1i64..10_000_000, a in 0i64..10_000_000, b in 0i64..10_000_000) {
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            let (x, y) = (clawback_target(awarded, total, lo), clawback_target(awarded, total, hi));
            prop_assert!(x <= y && y <= awarded && x >= 0);
        }
    }
}
