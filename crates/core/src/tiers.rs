//! Tiers: a ladder of levels (Silver, Gold, Platinum) a member climbs by a qualification metric
//! over a window, the benefits each level gives, and the decisions about moving between them:
//! upgrade at once on a qualifying event, re-evaluation at a review date (yearly or on the tier
//! anniversary) with an optional grace period, `one_down` or `recompute` downgrades, and what a
//! refund does. Pure: callers pass the metric they measured and `now`.
//!
//! Time conventions: a window is half-open at its start, `(start, end]`, so a purchase exactly
//! twelve months before a review no longer counts at that review. A member due for review at
//! `secured_until` keeps the tier for `grace_days` more; the review happens at
//! `secured_until + grace_days` over the window that closes at `secured_until`, extended to the
//! end of the grace period (activity during grace counts).

use crate::money::{Currency, format_minor, parse_minor};
use crate::program::{RATE_SCALE, SettingsError};
use crate::time::{add_days, add_months};
use chrono::{DateTime, Datelike, Months, TimeZone, Utc};
use serde::{Deserialize, Serialize};

pub const MAX_TIERS: usize = 10;
pub const MAX_TIER_NAME_LEN: usize = 40;
pub const MAX_PERKS: usize = 20;
pub const MAX_PERK_LEN: usize = 200;
pub const MAX_WINDOW_MONTHS: u32 = 120;
pub const MAX_GRACE_DAYS: u32 = 365;
/// The largest earning multiplier a tier or a plan may give (×10), in millionths.
pub const MAX_MULTIPLIER_MICRO: i64 = 10 * RATE_SCALE;
/// The largest threshold of any metric (points, orders, or minor units of spend).
pub const MAX_THRESHOLD: i64 = crate::money::MAX_MINOR;

/// What qualifies a member for a tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Points earned (purchases and events, net of claw-backs; not adjustments or transfers).
    PointsEarned,
    /// Money spent, net of refunds, in the programme's currency.
    Spend,
    /// Purchases, not counting fully refunded orders.
    Orders,
}

/// Over which period the metric is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Window {
    /// The `months` months that end at the evaluation.
    Rolling { months: u32 },
    /// The calendar year (UTC) the evaluation closes.
    CalendarYear,
    /// Everything since enrolment.
    Lifetime,
}

/// When a member's tier is re-evaluated (and may go down).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Review {
    /// Every `months` months after the member reached the tier.
    Anniversary { months: u32 },
    /// Every year on `month`/`day` at 00:00 UTC (day 1 to 28, so every year has it).
    Yearly { month: u32, day: u32 },
}

/// How far a member below their tier's threshold goes down at a review.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Downgrade {
    /// One tier down per review, at most.
    #[default]
    OneDown,
    /// Straight to the tier the metric qualifies for (possibly none).
    Recompute,
}

/// What a refund that drops the metric below the member's tier does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnRefund {
    /// Nothing now: the refund lowers the metric, and the next review sees it.
    #[default]
    AtReview,
    /// The tier is recomputed at once (a purchase returned to reach a tier does not keep it).
    Immediate,
}

/// A threshold as configured: an integer (points, orders) or, for spend, a decimal amount
/// string in the programme's currency ("500.00").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Threshold {
    Int(i64),
    Text(String),
}

fn one() -> String {
    "1".into()
}

fn is_one(s: &String) -> bool {
    s == "1"
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    pub name: String,
    /// The metric's value from which a member is in this tier.
    pub threshold: Threshold,
    /// Points earned on purchases are multiplied by this ("1.5": 50 % bonus), as a decimal.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub earn_multiplier: String,
    /// Named benefits shown to the member and the till ("free shipping", "15 % off shoes").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub perks: Vec<String>,
}

/// A programme's tiers, kept in the programme's settings (`tiers`), managed through
/// `GET/PUT /api/v1/tiers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierConfig {
    pub metric: Metric,
    pub window: Window,
    pub review: Review,
    #[serde(default)]
    pub downgrade: Downgrade,
    #[serde(default)]
    pub grace_days: u32,
    #[serde(default)]
    pub on_refund: OnRefund,
    /// From the lowest to the highest; thresholds strictly increase.
    pub tiers: Vec<Tier>,
}

/// One tier, checked and resolved: threshold in the metric's unit, multiplier in millionths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Level {
    pub name: String,
    pub threshold: i64,
    pub multiplier_micro: i64,
    pub perks: Vec<String>,
}

/// A checked [`TierConfig`]: what the decisions below work on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ladder {
    pub metric: Metric,
    pub window: Window,
    pub review: Review,
    pub downgrade: Downgrade,
    pub grace_days: u32,
    pub on_refund: OnRefund,
    pub levels: Vec<Level>,
}

fn err<T>(field: &'static str, reason: impl Into<String>) -> Result<T, SettingsError> {
    Err(SettingsError {
        field,
        reason: reason.into(),
    })
}

/// Parses a multiplier such as "1.5" into millionths (1 to 10).
pub fn parse_multiplier(field: &'static str, s: &str) -> Result<i64, SettingsError> {
    let micro = parse_minor(s, 6).map_err(|e| SettingsError {
        field,
        reason: format!("{e} (a decimal such as \"1.5\", at most 6 decimals)"),
    })?;
    if !(RATE_SCALE..=MAX_MULTIPLIER_MICRO).contains(&micro) {
        return err(field, "must be from 1 to 10");
    }
    Ok(micro)
}

impl TierConfig {
    /// Checks every field and resolves thresholds in `currency` (for spend).
    pub fn resolve(&self, currency: Currency) -> Result<Ladder, SettingsError> {
        if self.tiers.is_empty() || self.tiers.len() > MAX_TIERS {
            return err("tiers.tiers", format!("give 1 to {MAX_TIERS} tiers"));
        }
        match self.window {
            Window::Rolling { months } if months == 0 || months > MAX_WINDOW_MONTHS => {
                return err("tiers.window.months", "must be 1 to 120");
            }
            _ => {}
        }
        match self.review {
            Review::Anniversary { months } if months == 0 || months > MAX_WINDOW_MONTHS => {
                return err("tiers.review.months", "must be 1 to 120");
            }
            Review::Yearly { month, .. } if !(1..=12).contains(&month) => {
                return err("tiers.review.month", "must be 1 to 12");
            }
            Review::Yearly { day, .. } if !(1..=28).contains(&day) => {
                return err(
                    "tiers.review.day",
                    "must be 1 to 28 (so that every year has it)",
                );
            }
            _ => {}
        }
        if self.grace_days > MAX_GRACE_DAYS {
            return err("tiers.grace_days", "must be at most 365");
        }
        let mut levels: Vec<Level> = Vec::with_capacity(self.tiers.len());
        for t in &self.tiers {
            let name = t.name.trim();
            if name.is_empty()
                || name.chars().count() > MAX_TIER_NAME_LEN
                || name.chars().any(char::is_control)
            {
                return err("tiers.tiers.name", "must be 1 to 40 printable characters");
            }
            if levels.iter().any(|l| l.name.eq_ignore_ascii_case(name)) {
                return err("tiers.tiers.name", format!("`{name}` appears twice"));
            }
            let threshold = match (&t.threshold, self.metric) {
                (Threshold::Int(n), Metric::PointsEarned | Metric::Orders) => *n,
                (Threshold::Text(s), Metric::Spend) => parse_minor(s, currency.exponent())
                    .map_err(|e| SettingsError {
                        field: "tiers.tiers.threshold",
                        reason: format!("{e} (an amount in {currency})"),
                    })?,
                (Threshold::Text(s), _) => s.parse::<i64>().map_err(|_| SettingsError {
                    field: "tiers.tiers.threshold",
                    reason: format!("`{s}` is not a whole number"),
                })?,
                (Threshold::Int(n), Metric::Spend) => {
                    // A bare number for spend means major units ("500" = 500.00).
                    n.checked_mul(currency.minor_per_unit())
                        .ok_or_else(|| SettingsError {
                            field: "tiers.tiers.threshold",
                            reason: "is too large".into(),
                        })?
                }
            };
            if !(0..=MAX_THRESHOLD).contains(&threshold) {
                return err("tiers.tiers.threshold", "must be 0 or more, and not huge");
            }
            if levels.last().is_some_and(|l| l.threshold >= threshold) {
                return err(
                    "tiers.tiers.threshold",
                    "thresholds must strictly increase from the first tier to the last",
                );
            }
            if t.perks.len() > MAX_PERKS
                || t.perks
                    .iter()
                    .any(|p| p.trim().is_empty() || p.chars().count() > MAX_PERK_LEN)
            {
                return err(
                    "tiers.tiers.perks",
                    format!("at most {MAX_PERKS} perks of 1 to {MAX_PERK_LEN} characters"),
                );
            }
            levels.push(Level {
                name: name.to_string(),
                threshold,
                multiplier_micro: parse_multiplier(
                    "tiers.tiers.earn_multiplier",
                    &t.earn_multiplier,
                )?,
                perks: t.perks.clone(),
            });
        }
        Ok(Ladder {
            metric: self.metric,
            window: self.window,
            review: self.review,
            downgrade: self.downgrade,
            grace_days: self.grace_days,
            on_refund: self.on_refund,
            levels,
        })
    }
}

/// What should happen to a member's tier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Move {
    /// Nothing changes.
    Stay,
    /// Same tier, secured until a later date (re-qualified in grace, or passed a review).
    Renew { secured_until: DateTime<Utc> },
    /// A new tier (`None`: no tier), from `since`, secured until `secured_until`.
    Change {
        to: Option<usize>,
        since: DateTime<Utc>,
        secured_until: Option<DateTime<Utc>>,
    },
}

/// The progress shown to a member: how far to the next tier, and how far to keep this one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub value: i64,
    pub next_tier: Option<String>,
    pub next_threshold: Option<i64>,
    /// What is missing to reach the next tier (0 when already there).
    pub to_next: Option<i64>,
    /// What is missing, in this window, to keep the current tier at its review.
    pub to_keep: Option<i64>,
}

impl Ladder {
    pub fn rank_of(&self, name: &str) -> Option<usize> {
        self.levels.iter().position(|l| l.name == name)
    }

    /// The highest tier whose threshold `value` reaches.
    pub fn qualifies_for(&self, value: i64) -> Option<usize> {
        self.levels.iter().rposition(|l| value >= l.threshold)
    }

    /// Where the window that ends at `end` starts (exclusive); `None` for a lifetime window.
    pub fn window_start(&self, end: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self.window {
            Window::Lifetime => None,
            Window::Rolling { months } => Some(
                end.checked_sub_months(Months::new(months))
                    .unwrap_or(DateTime::<Utc>::MIN_UTC),
            ),
            Window::CalendarYear => {
                // The year the instant just before `end` falls in: a review at 1 January
                // 00:00 closes the year that just ended. The window is exclusive at its start,
                // so it starts a microsecond before the year does.
                let last = end - chrono::Duration::microseconds(1);
                Utc.with_ymd_and_hms(last.year(), 1, 1, 0, 0, 0)
                    .single()
                    .map(|t| t - chrono::Duration::microseconds(1))
            }
        }
    }

    /// The window a review due at `secured_until` measures: it closes at `secured_until` and
    /// is extended by the grace period. Returns (exclusive start, inclusive end).
    pub fn review_window(
        &self,
        secured_until: DateTime<Utc>,
    ) -> (Option<DateTime<Utc>>, DateTime<Utc>) {
        (
            self.window_start(secured_until),
            add_days(secured_until, self.grace_days),
        )
    }

    /// When a member secured until `secured_until` is reviewed.
    pub fn review_due(&self, secured_until: DateTime<Utc>) -> DateTime<Utc> {
        add_days(secured_until, self.grace_days)
    }

    /// The first review strictly after `after`, for a tier held since `since`.
    pub fn next_review(&self, since: DateTime<Utc>, after: DateTime<Utc>) -> DateTime<Utc> {
        match self.review {
            Review::Anniversary { months } => {
                let mut k: u32 = 1;
                loop {
                    let t = add_months(since, months.saturating_mul(k));
                    // Bounded: months ≥ 1, so 12,000 steps cover a thousand years.
                    if t > after || k >= 12_000 || t == DateTime::<Utc>::MAX_UTC {
                        return t;
                    }
                    k += 1;
                }
            }
            Review::Yearly { month, day } => {
                let at = |year: i32| {
                    Utc.with_ymd_and_hms(year, month, day, 0, 0, 0)
                        .single()
                        .unwrap_or(DateTime::<Utc>::MAX_UTC)
                };
                let this_year = at(after.year());
                if this_year > after {
                    this_year
                } else {
                    at(after.year() + 1)
                }
            }
        }
    }

    /// A qualifying event: `value` is the metric over the window ending now. Upgrades at once;
    /// a member in their grace period who qualifies again keeps the tier for another period.
    pub fn on_event(
        &self,
        current: Option<usize>,
        since: Option<DateTime<Utc>>,
        secured_until: Option<DateTime<Utc>>,
        value: i64,
        now: DateTime<Utc>,
    ) -> Move {
        let target = self.qualifies_for(value);
        if target > current {
            return Move::Change {
                to: target,
                since: now,
                secured_until: Some(self.next_review(now, now)),
            };
        }
        match (current, since, secured_until) {
            (Some(_), Some(since), Some(until)) if target == current && now >= until => {
                Move::Renew {
                    secured_until: self.next_review(since, now),
                }
            }
            _ => Move::Stay,
        }
    }

    /// A refund: under [`OnRefund::Immediate`] a member whose metric (over the window ending
    /// now) no longer reaches their tier goes to the tier it reaches.
    pub fn on_refund(&self, current: Option<usize>, value: i64, now: DateTime<Utc>) -> Move {
        let target = self.qualifies_for(value);
        if self.on_refund == OnRefund::Immediate && target < current {
            Move::Change {
                to: target,
                since: now,
                secured_until: target.map(|_| self.next_review(now, now)),
            }
        } else {
            Move::Stay
        }
    }

    /// A review of a member secured until `secured_until` (now due: `review_due` has passed),
    /// with `value` measured over [`Ladder::review_window`].
    pub fn on_review(
        &self,
        current: Option<usize>,
        since: DateTime<Utc>,
        secured_until: DateTime<Utc>,
        value: i64,
    ) -> Move {
        let target = self.qualifies_for(value);
        let due = self.review_due(secured_until);
        if target > current {
            return Move::Change {
                to: target,
                since: due,
                secured_until: Some(self.next_review(due, due)),
            };
        }
        if target == current {
            // Reviews are passed in order: the next one after this review's due time.
            let mut next = self.next_review(since, secured_until);
            if next <= due {
                next = self.next_review(since, due);
            }
            return Move::Renew {
                secured_until: next,
            };
        }
        let to = match self.downgrade {
            Downgrade::Recompute => target,
            Downgrade::OneDown => match current {
                Some(0) | None => None,
                Some(r) => Some(r - 1).max(target),
            },
        };
        Move::Change {
            to,
            since: due,
            secured_until: to.map(|_| self.next_review(due, due)),
        }
    }

    pub fn progress(&self, current: Option<usize>, value: i64) -> Progress {
        let next = match current {
            None => self.levels.first(),
            Some(r) => self.levels.get(r + 1),
        };
        Progress {
            value,
            next_tier: next.map(|l| l.name.clone()),
            next_threshold: next.map(|l| l.threshold),
            to_next: next.map(|l| (l.threshold - value).max(0)),
            to_keep: current
                .and_then(|r| self.levels.get(r))
                .map(|l| (l.threshold - value).max(0)),
        }
    }

    /// "320 more points to Gold", "3 more orders to Gold", "120.00 EUR more to Gold".
    pub fn describe(&self, amount: i64, points_name: &str, currency: Currency) -> String {
        match self.metric {
            Metric::PointsEarned => format!("{amount} more {points_name}"),
            Metric::Orders if amount == 1 => "1 more order".to_string(),
            Metric::Orders => format!("{amount} more orders"),
            Metric::Spend => format!(
                "{} {currency} more",
                format_minor(amount, currency.exponent())
            ),
        }
    }
}

impl crate::program::ProgramSettings {
    /// Checks the member-value parts of the settings: tiers, redemption, credit, transfers.
    pub(crate) fn check_member_value(&self) -> Result<(), SettingsError> {
        if let Some(t) = &self.tiers {
            t.resolve(self.currency)?;
        }
        self.redemption.validate()?;
        self.credit.cashback_bp()?;
        self.transfers.validate()
    }

    /// The programme's tier ladder, if it has tiers (settings are checked when saved).
    pub fn ladder(&self) -> Option<Ladder> {
        self.tiers
            .as_ref()
            .and_then(|t| t.resolve(self.currency).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::parse;
    use proptest::prelude::*;

    fn eur() -> Currency {
        Currency::parse("EUR").expect("known")
    }

    fn t(s: &str) -> DateTime<Utc> {
        parse(s).expect("valid time")
    }

    fn tier(name: &str, threshold: i64, mult: &str) -> Tier {
        Tier {
            name: name.into(),
            threshold: Threshold::Int(threshold),
            earn_multiplier: mult.into(),
            perks: vec![],
        }
    }

    fn ladder(window: Window, review: Review, downgrade: Downgrade, grace: u32) -> Ladder {
        TierConfig {
            metric: Metric::PointsEarned,
            window,
            review,
            downgrade,
            grace_days: grace,
            on_refund: OnRefund::AtReview,
            tiers: vec![
                tier("Silver", 0, "1"),
                tier("Gold", 1000, "1.5"),
                tier("Platinum", 5000, "2"),
            ],
        }
        .resolve(eur())
        .expect("valid")
    }

    fn yearly() -> Ladder {
        ladder(
            Window::CalendarYear,
            Review::Yearly { month: 1, day: 1 },
            Downgrade::OneDown,
            0,
        )
    }

    #[test]
    fn thresholds_must_increase_and_names_be_unique() {
        let mut c = TierConfig {
            metric: Metric::PointsEarned,
            window: Window::Lifetime,
            review: Review::Anniversary { months: 12 },
            downgrade: Downgrade::OneDown,
            grace_days: 0,
            on_refund: OnRefund::AtReview,
            tiers: vec![tier("Gold", 1000, "1"), tier("Silver", 100, "1")],
        };
        assert_eq!(
            c.resolve(eur()).map_err(|e| e.field),
            Err("tiers.tiers.threshold")
        );
        c.tiers = vec![tier("Gold", 100, "1"), tier("gold", 1000, "1")];
        assert_eq!(
            c.resolve(eur()).map_err(|e| e.field),
            Err("tiers.tiers.name")
        );
        c.tiers = vec![tier("Gold", 100, "11")];
        assert_eq!(
            c.resolve(eur()).map_err(|e| e.field),
            Err("tiers.tiers.earn_multiplier")
        );
        c.tiers = vec![tier("Gold", 100, "0.5")];
        assert!(c.resolve(eur()).is_err(), "a multiplier below 1 is refused");
        c.tiers = vec![];
        assert_eq!(c.resolve(eur()).map_err(|e| e.field), Err("tiers.tiers"));
        c.tiers = vec![tier("Gold", 100, "1")];
        c.review = Review::Yearly { month: 2, day: 29 };
        assert_eq!(
            c.resolve(eur()).map_err(|e| e.field),
            Err("tiers.review.day")
        );
    }

    #[test]
    fn spend_thresholds_are_amounts_in_the_programme_currency() {
        let c = TierConfig {
            metric: Metric::Spend,
            window: Window::Rolling { months: 12 },
            review: Review::Anniversary { months: 12 },
            downgrade: Downgrade::Recompute,
            grace_days: 0,
            on_refund: OnRefund::Immediate,
            tiers: vec![
                Tier {
                    threshold: Threshold::Text("500.00".into()),
                    ..tier("Gold", 0, "1")
                },
                Tier {
                    threshold: Threshold::Int(2000),
                    ..tier("Platinum", 0, "1")
                },
            ],
        };
        let l = c.resolve(eur()).expect("valid");
        assert_eq!(l.levels[0].threshold, 50_000);
        assert_eq!(l.levels[1].threshold, 200_000);
        assert_eq!(l.describe(12_050, "points", eur()), "120.50 EUR more");
    }

    #[test]
    fn a_qualifying_event_upgrades_at_once_and_secures_until_the_next_review() {
        let l = yearly();
        let now = t("2026-11-20T10:00:00Z");
        assert_eq!(
            l.on_event(Some(0), Some(now), None, 1200, now),
            Move::Change {
                to: Some(1),
                since: now,
                secured_until: Some(t("2027-01-01T00:00:00Z"))
            }
        );
        assert_eq!(
            l.on_event(Some(1), Some(now), Some(now), 999, now),
            Move::Stay
        );
        assert_eq!(
            l.on_event(None, None, None, 6000, now),
            Move::Change {
                to: Some(2),
                since: now,
                secured_until: Some(t("2027-01-01T00:00:00Z"))
            }
        );
    }

    #[test]
    fn anniversary_reviews_follow_the_date_the_tier_was_reached() {
        let l = ladder(
            Window::Rolling { months: 12 },
            Review::Anniversary { months: 12 },
            Downgrade::OneDown,
            0,
        );
        let since = t("2026-01-31T09:00:00Z");
        assert_eq!(l.next_review(since, since), t("2027-01-31T09:00:00Z"));
        assert_eq!(
            l.next_review(since, t("2027-01-31T09:00:00Z")),
            t("2028-01-31T09:00:00Z")
        );
        assert_eq!(
            l.window_start(t("2027-01-31T09:00:00Z")),
            Some(t("2026-01-31T09:00:00Z"))
        );
    }

    #[test]
    fn a_review_keeps_downgrades_one_step_or_recomputes() {
        let l = yearly();
        let since = t("2025-06-01T00:00:00Z");
        let until = t("2027-01-01T00:00:00Z");
        assert_eq!(
            l.on_review(Some(2), since, until, 5000),
            Move::Renew {
                secured_until: t("2028-01-01T00:00:00Z")
            }
        );
        assert_eq!(
            l.on_review(Some(2), since, until, 10),
            Move::Change {
                to: Some(1),
                since: until,
                secured_until: Some(t("2028-01-01T00:00:00Z"))
            }
        );
        let r = ladder(
            Window::CalendarYear,
            Review::Yearly { month: 1, day: 1 },
            Downgrade::Recompute,
            0,
        );
        assert_eq!(
            r.on_review(Some(2), since, until, 10),
            Move::Change {
                to: Some(0),
                since: until,
                secured_until: Some(t("2028-01-01T00:00:00Z"))
            }
        );
    }

    #[test]
    fn a_calendar_year_review_measures_the_year_that_just_ended() {
        let l = yearly();
        let (start, end) = l.review_window(t("2027-01-01T00:00:00Z"));
        let start = start.expect("bounded");
        assert!(start < t("2026-01-01T00:00:00Z"));
        assert!(start > t("2025-12-31T23:59:59Z"));
        assert_eq!(end, t("2027-01-01T00:00:00Z"));
    }

    #[test]
    fn grace_moves_the_review_and_lets_a_member_requalify() {
        let l = ladder(
            Window::Rolling { months: 12 },
            Review::Anniversary { months: 12 },
            Downgrade::OneDown,
            30,
        );
        let since = t("2026-01-10T00:00:00Z");
        let until = t("2027-01-10T00:00:00Z");
        assert_eq!(l.review_due(until), t("2027-02-09T00:00:00Z"));
        assert_eq!(l.review_window(until).1, t("2027-02-09T00:00:00Z"));
        // In grace, a qualifying event renews the tier.
        assert_eq!(
            l.on_event(
                Some(1),
                Some(since),
                Some(until),
                1000,
                t("2027-01-20T00:00:00Z")
            ),
            Move::Renew {
                secured_until: t("2028-01-10T00:00:00Z")
            }
        );
    }

    #[test]
    fn an_immediate_refund_policy_recomputes_at_once() {
        let mut l = yearly();
        let now = t("2026-05-01T00:00:00Z");
        assert_eq!(l.on_refund(Some(1), 10, now), Move::Stay);
        l.on_refund = OnRefund::Immediate;
        assert_eq!(
            l.on_refund(Some(1), 10, now),
            Move::Change {
                to: Some(0),
                since: now,
                secured_until: Some(t("2027-01-01T00:00:00Z"))
            }
        );
        assert_eq!(l.on_refund(Some(1), 1000, now), Move::Stay);
    }

    #[test]
    fn progress_says_how_far_the_next_tier_is() {
        let l = yearly();
        let p = l.progress(Some(0), 680);
        assert_eq!(p.next_tier.as_deref(), Some("Gold"));
        assert_eq!(p.to_next, Some(320));
        assert_eq!(p.to_keep, Some(0));
        assert_eq!(
            format!("{} to Gold", l.describe(320, "points", eur())),
            "320 more points to Gold"
        );
        let top = l.progress(Some(2), 4000);
        assert_eq!((top.next_tier, top.to_keep), (None, Some(1000)));
    }

    proptest! {
        #[test]
        fn next_review_is_always_after(after_s in 0i64..4_000_000_000, since_back in 0i64..400_000_000, month in 1u32..=12, day in 1u32..=28, months in 1u32..=36) {
            let after = DateTime::<Utc>::from_timestamp(after_s, 0).expect("in range");
            let since = after - chrono::Duration::seconds(since_back);
            for review in [Review::Yearly { month, day }, Review::Anniversary { months }] {
                let mut l = yearly();
                l.review = review;
                let next = l.next_review(since, after);
                prop_assert!(next > after);
            }
        }

        #[test]
        fn a_review_never_moves_up_past_what_the_metric_reaches(value in 0i64..10_000, current in 0usize..3, recompute in proptest::bool::ANY) {
            let mut l = yearly();
            l.downgrade = if recompute { Downgrade::Recompute } else { Downgrade::OneDown };
            let since = t("2025-06-01T00:00:00Z");
            let until = t("2027-01-01T00:00:00Z");
            match l.on_review(Some(current), since, until, value) {
                Move::Change { to, .. } => {
                    let target = l.qualifies_for(value);
                    prop_assert!(to != Some(current));
                    if to < Some(current) {
                        prop_assert!(to >= target);
                        if !recompute { prop_assert!(to.map_or(0, |r| r + 1) == current); }
                    } else {
                        prop_assert_eq!(to, target);
                    }
                }
                Move::Renew { secured_until } => prop_assert!(secured_until > until),
                Move::Stay => prop_assert!(false, "a review always decides"),
            }
        }
    }
}
