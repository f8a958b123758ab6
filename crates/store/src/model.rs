//! What the store returns, in domain terms. These are serialisable because write results are
//! kept with their idempotency key and replayed as they were.

use fidelis_core::earn::Award;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consent {
    /// What the member agreed to or refused (`marketing_email`, `analytics`, ...).
    pub purpose: String,
    pub granted: bool,
    /// RFC 3339; when the member gave this answer.
    pub at: String,
    /// Where the answer was given (`pos`, `web`, `app`, `portal`, `import`, ...).
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub id: String,
    pub external_id: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub name: Option<String>,
    pub birth_date: Option<String>,
    pub attributes: serde_json::Map<String, serde_json::Value>,
    pub consents: Vec<Consent>,
    pub order_count: i64,
    pub lifetime_spend_minor: i64,
    pub created_at: String,
    pub updated_at: String,
    pub last_activity_at: Option<String>,
}

/// What a new member or a change to one carries; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemberFields {
    pub external_id: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub name: Option<String>,
    pub birth_date: Option<String>,
    pub attributes: Option<serde_json::Map<String, serde_json::Value>>,
    pub consents: Option<Vec<Consent>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalanceNow {
    pub available: i64,
    pub pending: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expiring {
    pub points: i64,
    pub expires_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    pub available: i64,
    pub pending: i64,
    pub lifetime_earned: i64,
    pub expiring: Vec<Expiring>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurchaseOutcome {
    pub event_id: i64,
    pub member_id: String,
    pub order_id: String,
    /// Points this purchase earned, in all.
    pub points: i64,
    /// `pending` until the return window closes, else `available`.
    pub status: String,
    pub matures_at: Option<String>,
    pub expires_at: Option<String>,
    pub breakdown: Vec<Award>,
    /// Points of this purchase that repaid an earlier debt (negative balance).
    pub debt_repaid: i64,
    /// True when this purchase enrolled the member (unknown `external_id`, auto-enrol on).
    pub enrolled: bool,
    /// True when this answer is the first one again: the order id was already recorded.
    pub duplicate: bool,
    pub balance: BalanceNow,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundOutcome {
    pub event_id: i64,
    pub member_id: String,
    pub order_id: String,
    pub refund_id: Option<String>,
    /// Amount refunded by this refund, in minor units of the programme's currency.
    pub refunded_minor: i64,
    /// Amount refunded on the order so far, this refund included.
    pub order_refunded_minor: i64,
    pub points_clawed_back: i64,
    pub from_pending: i64,
    pub from_available: i64,
    /// Points the programme's refund policy let the member keep.
    pub forgiven: i64,
    pub duplicate: bool,
    pub balance: BalanceNow,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomOutcome {
    pub event_id: i64,
    pub member_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub points: i64,
    pub breakdown: Vec<Award>,
    pub balance: BalanceNow,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdjustOutcome {
    pub txn_id: i64,
    pub member_id: String,
    pub points: i64,
    pub reason: String,
    pub balance: BalanceNow,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryView {
    pub account: String,
    pub points: i64,
    pub lot_id: Option<i64>,
}

/// One journal transaction as a member's history shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerTxn {
    pub id: i64,
    /// `earn`, `clawback`, `mature`, `expire`, `adjust`.
    pub kind: String,
    pub reason: String,
    pub event_id: Option<i64>,
    pub order_id: Option<String>,
    pub actor: Option<String>,
    pub created_at: String,
    /// Net change of the member's available and pending points.
    pub available_delta: i64,
    pub pending_delta: i64,
    pub entries: Vec<EntryView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    pub id: String,
    pub tenant_id: String,
    pub prefix: String,
    pub scope: String,
    pub label: Option<String>,
    pub created_at: String,
    pub revoked: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobReport {
    pub matured_lots: i64,
    pub matured_points: i64,
    pub expired_lots: i64,
    pub expired_points: i64,
    pub members_touched: i64,
    /// Tier reviews made, and how many changed a tier.
    #[serde(default)]
    pub tier_reviews: i64,
    #[serde(default)]
    pub tier_moves: i64,
    /// Plan perk coupons issued.
    #[serde(default)]
    pub perk_coupons: i64,
}

impl JobReport {
    pub fn add(&mut self, other: &JobReport) {
        self.matured_lots += other.matured_lots;
        self.matured_points += other.matured_points;
        self.expired_lots += other.expired_lots;
        self.expired_points += other.expired_points;
        self.members_touched += other.members_touched;
        self.tier_reviews += other.tier_reviews;
        self.tier_moves += other.tier_moves;
        self.perk_coupons += other.perk_coupons;
    }
}

/// A page of a list, and the cursor of the next page when there is one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// A page from rows read with `LIMIT limit + 1` (the extra row only says another page
    /// follows): the first `limit` rows mapped, and the cursor of the last one when more follow.
    pub(crate) fn from_rows(
        rows: &[crate::conn::Row],
        limit: i64,
        mut map: impl FnMut(&crate::conn::Row) -> crate::error::Result<T>,
        cursor_of: impl Fn(&T) -> String,
    ) -> crate::error::Result<Page<T>> {
        let more = rows.len() as i64 > limit;
        let items = rows
            .iter()
            .take(usize::try_from(limit).unwrap_or(0))
            .map(&mut map)
            .collect::<crate::error::Result<Vec<T>>>()?;
        let next_cursor = if more {
            items.last().map(cursor_of)
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }
}
