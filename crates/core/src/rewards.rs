//! The rewards catalogue and coupons: what a reward is (a discount, a free product, free
//! shipping, store credit, a donation, an experience), the checks on its definition, the
//! redemption policy, coupon codes (generated from randomness the caller draws, checked with a
//! check symbol) and the decision whether a coupon is good for an order, and what it gives.

use crate::money::{Currency, MAX_MINOR, Money, format_minor, parse_minor};
use crate::program::SettingsError;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub const MAX_TITLE_LEN: usize = 120;
pub const MAX_DESCRIPTION_LEN: usize = 2000;
pub const MAX_URL_LEN: usize = 500;
pub const MAX_POINTS_COST: i64 = 1_000_000_000;
pub const MAX_STOCK: i64 = 1_000_000_000;
pub const MAX_PER_MEMBER_LIMIT: i64 = 10_000;
pub const MAX_COUPON_VALID_DAYS: u32 = 3650;
/// Rewards one tenant's catalogue may hold.
pub const MAX_REWARDS: i64 = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RewardKind {
    /// An amount off the order (`value`).
    FixedDiscount,
    /// A percentage off the order (`percent`).
    PercentDiscount,
    /// One unit of `sku` for free.
    FreeProduct,
    FreeShipping,
    /// `value` credited to the member's store credit at once.
    StoreCredit,
    /// The points go to `charity`; nothing to use at the till.
    CharityDonation,
    /// An experience or anything else the retailer honours by hand.
    Custom,
}

impl RewardKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            RewardKind::FixedDiscount => "fixed_discount",
            RewardKind::PercentDiscount => "percent_discount",
            RewardKind::FreeProduct => "free_product",
            RewardKind::FreeShipping => "free_shipping",
            RewardKind::StoreCredit => "store_credit",
            RewardKind::CharityDonation => "charity_donation",
            RewardKind::Custom => "custom",
        }
    }
    /// Kinds settled at redemption: their coupon is a receipt, already used.
    pub fn settled_at_once(&self) -> bool {
        matches!(self, RewardKind::StoreCredit | RewardKind::CharityDonation)
    }
}

fn yes() -> bool {
    true
}

/// A reward as an admin sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardInput {
    pub kind: RewardKind,
    pub title: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub image_url: Option<String>,
    pub points_cost: i64,
    /// Fixed discount, store credit: an amount ("10.00").
    #[serde(default)]
    pub value: Option<String>,
    /// Percent discount: "15" or "12.5".
    #[serde(default)]
    pub percent: Option<String>,
    /// Free product: the sku.
    #[serde(default)]
    pub sku: Option<String>,
    /// Charity donation: the charity's name.
    #[serde(default)]
    pub charity: Option<String>,
    /// The order total below which the coupon is refused at the till.
    #[serde(default)]
    pub min_order_total: Option<String>,
    /// Units left; absent means unlimited.
    #[serde(default)]
    pub stock: Option<i64>,
    /// Redemptions per member (cancelled ones do not count); absent means unlimited.
    #[serde(default)]
    pub per_member_limit: Option<i64>,
    /// Only members in this tier or a higher one may redeem it.
    #[serde(default)]
    pub min_tier: Option<String>,
    #[serde(default)]
    pub valid_from: Option<String>,
    #[serde(default)]
    pub valid_until: Option<String>,
    /// Days a coupon of this reward stays usable; the programme's default otherwise.
    #[serde(default)]
    pub coupon_valid_days: Option<u32>,
    #[serde(default = "yes")]
    pub active: bool,
}

/// A checked reward, as stored (amounts in minor units, times in micros).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RewardDef {
    pub kind: RewardKind,
    pub title: String,
    pub description: Option<String>,
    pub image_url: Option<String>,
    pub points_cost: i64,
    pub value_minor: Option<i64>,
    /// Hundredths of a percent (1550 = 15.5 %).
    pub percent_bp: Option<i64>,
    pub sku: Option<String>,
    pub charity: Option<String>,
    pub min_order_total_minor: Option<i64>,
    pub per_member_limit: Option<i64>,
    pub min_tier: Option<String>,
    pub valid_from: Option<i64>,
    pub valid_until: Option<i64>,
    pub coupon_valid_days: Option<u32>,
    pub active: bool,
}

fn bad<T>(field: &'static str, reason: impl Into<String>) -> Result<T, SettingsError> {
    Err(SettingsError {
        field,
        reason: reason.into(),
    })
}

fn text(field: &'static str, v: &str, max: usize) -> Result<String, SettingsError> {
    let t = v.trim();
    if t.is_empty() || t.chars().count() > max || t.chars().any(char::is_control) {
        return bad(field, format!("must be 1 to {max} printable characters"));
    }
    Ok(t.to_string())
}

fn opt_text(
    field: &'static str,
    v: &Option<String>,
    max: usize,
) -> Result<Option<String>, SettingsError> {
    v.as_deref().map(|s| text(field, s, max)).transpose()
}

fn amount(field: &'static str, v: &str, currency: Currency) -> Result<i64, SettingsError> {
    Money::parse(v, currency)
        .map(|m| m.minor)
        .map_err(|e| SettingsError {
            field,
            reason: e.to_string(),
        })
}

fn instant(field: &'static str, v: &Option<String>) -> Result<Option<i64>, SettingsError> {
    v.as_deref()
        .map(|s| {
            crate::time::parse(s)
                .map(|t| t.timestamp_micros())
                .ok_or_else(|| SettingsError {
                    field,
                    reason: "must be an RFC 3339 time such as 2026-12-01T00:00:00Z".into(),
                })
        })
        .transpose()
}

impl RewardInput {
    /// Checks the reward; `tiers` are the programme's tier names (for `min_tier`).
    pub fn validate(
        &self,
        currency: Currency,
        tiers: &[String],
    ) -> Result<RewardDef, SettingsError> {
        let title = text("title", &self.title, MAX_TITLE_LEN)?;
        let description = opt_text("description", &self.description, MAX_DESCRIPTION_LEN)?;
        let image_url = opt_text("image_url", &self.image_url, MAX_URL_LEN)?;
        if let Some(u) = &image_url
            && !(u.starts_with("https://") || u.starts_with("http://"))
        {
            return bad("image_url", "must be an http(s) URL");
        }
        if !(0..=MAX_POINTS_COST).contains(&self.points_cost) {
            return bad("points_cost", format!("must be 0 to {MAX_POINTS_COST}"));
        }
        let value_minor = self
            .value
            .as_deref()
            .map(|v| amount("value", v, currency))
            .transpose()?;
        let percent_bp = self
            .percent
            .as_deref()
            .map(|p| {
                parse_minor(p, 2).map_err(|e| SettingsError {
                    field: "percent",
                    reason: format!("{e} (a percentage such as \"15\" or \"12.5\")"),
                })
            })
            .transpose()?;
        let sku = opt_text("sku", &self.sku, crate::event::MAX_LABEL_LEN)?;
        let charity = opt_text("charity", &self.charity, MAX_TITLE_LEN)?;
        let need = |field: &'static str, present: bool| {
            if present {
                Ok(())
            } else {
                bad(
                    field,
                    format!("is required for a {} reward", self.kind.as_str()),
                )
            }
        };
        match self.kind {
            RewardKind::FixedDiscount | RewardKind::StoreCredit => {
                need("value", value_minor.is_some_and(|v| v > 0))?
            }
            RewardKind::PercentDiscount => {
                need("percent", percent_bp.is_some())?;
                if !percent_bp.is_some_and(|p| p > 0 && p <= 10_000) {
                    return bad("percent", "must be more than 0 and at most 100");
                }
            }
            RewardKind::FreeProduct => need("sku", sku.is_some())?,
            RewardKind::CharityDonation => need("charity", charity.is_some())?,
            RewardKind::FreeShipping | RewardKind::Custom => {}
        }
        let min_order_total_minor = self
            .min_order_total
            .as_deref()
            .map(|v| amount("min_order_total", v, currency))
            .transpose()?;
        if self.stock.is_some_and(|s| !(0..=MAX_STOCK).contains(&s)) {
            return bad("stock", format!("must be 0 to {MAX_STOCK}"));
        }
        if self
            .per_member_limit
            .is_some_and(|l| !(1..=MAX_PER_MEMBER_LIMIT).contains(&l))
        {
            return bad(
                "per_member_limit",
                format!("must be 1 to {MAX_PER_MEMBER_LIMIT}"),
            );
        }
        if let Some(t) = &self.min_tier
            && !tiers.iter().any(|n| n == t)
        {
            return bad(
                "min_tier",
                if tiers.is_empty() {
                    "the programme has no tiers".to_string()
                } else {
                    format!("must be one of the programme's tiers: {}", tiers.join(", "))
                },
            );
        }
        let valid_from = instant("valid_from", &self.valid_from)?;
        let valid_until = instant("valid_until", &self.valid_until)?;
        if let (Some(a), Some(b)) = (valid_from, valid_until)
            && a >= b
        {
            return bad("valid_until", "must be after valid_from");
        }
        if self
            .coupon_valid_days
            .is_some_and(|d| d == 0 || d > MAX_COUPON_VALID_DAYS)
        {
            return bad(
                "coupon_valid_days",
                format!("must be 1 to {MAX_COUPON_VALID_DAYS}"),
            );
        }
        Ok(RewardDef {
            kind: self.kind,
            title,
            description,
            image_url,
            points_cost: self.points_cost,
            value_minor,
            percent_bp,
            sku,
            charity,
            min_order_total_minor,
            per_member_limit: self.per_member_limit,
            min_tier: self.min_tier.clone(),
            valid_from,
            valid_until,
            coupon_valid_days: self.coupon_valid_days,
            active: self.active,
        })
    }
}

/// Why a reward cannot be redeemed now (before any points move).
pub fn redeemable(def: &RewardDef, now: DateTime<Utc>) -> Result<(), String> {
    let now = now.timestamp_micros();
    if !def.active {
        return Err("this reward is not available (inactive)".into());
    }
    if def.valid_from.is_some_and(|f| now < f) {
        return Err(format!(
            "this reward is not available before {}",
            crate::time::format(crate::time::from_micros(def.valid_from.unwrap_or(now)))
        ));
    }
    if def.valid_until.is_some_and(|u| now >= u) {
        return Err("this reward is no longer available (its validity ended)".into());
    }
    Ok(())
}

/// What cancelling a coupon's redemption gives back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ReturnedExpiry {
    /// Returned points keep the expiry dates of the lots they were taken from.
    #[default]
    Original,
    /// Returned points are a fresh credit, expiring as newly earned points do.
    Fresh,
}

pub const DEFAULT_COUPON_VALID_DAYS: u32 = 90;

fn default_days() -> u32 {
    DEFAULT_COUPON_VALID_DAYS
}

/// The programme's redemption policy (`redemption` in the settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedemptionPolicy {
    /// Days a coupon stays usable unless its reward says otherwise.
    #[serde(default = "default_days")]
    pub coupon_valid_days: u32,
    /// Whether cancelling an unused coupon returns its points (and its unit of stock).
    #[serde(default = "yes")]
    pub cancel_returns_points: bool,
    #[serde(default)]
    pub returned_points_expiry: ReturnedExpiry,
}

impl Default for RedemptionPolicy {
    fn default() -> Self {
        RedemptionPolicy {
            coupon_valid_days: DEFAULT_COUPON_VALID_DAYS,
            cancel_returns_points: true,
            returned_points_expiry: ReturnedExpiry::Original,
        }
    }
}

impl RedemptionPolicy {
    pub fn is_default(&self) -> bool {
        *self == RedemptionPolicy::default()
    }
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.coupon_valid_days == 0 || self.coupon_valid_days > MAX_COUPON_VALID_DAYS {
            return bad("redemption.coupon_valid_days", "must be 1 to 3650");
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Coupon codes
// ---------------------------------------------------------------------------------------------

/// 31 symbols without look-alikes (no 0/O, 1/I/L). 31 is prime, which makes the weighted check
/// symbol catch every single wrong symbol and every swap of two neighbours.
pub const COUPON_ALPHABET: &[u8; 31] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ";
/// Random symbols per code: 31^13 ≈ 2^64.4, so at least 64 bits of randomness.
pub const COUPON_RANDOM_SYMBOLS: usize = 13;
/// Symbols of a code: the random ones and a check symbol.
pub const COUPON_LEN: usize = COUPON_RANDOM_SYMBOLS + 1;
/// Longest text accepted as a code before normalisation (spaces, dashes).
pub const MAX_CODE_INPUT_LEN: usize = 64;

fn check_symbol(values: &[u8]) -> u8 {
    let sum: u32 = values
        .iter()
        .enumerate()
        .map(|(i, v)| (i as u32 + 1) * u32::from(*v))
        .sum();
    (sum % 31) as u8
}

/// A new code (14 symbols, no separators) from 16 random bytes the caller drew from a
/// cryptographic generator. The bytes are read as one 128-bit number and cut into base-31
/// digits; 31^13 is far below 2^128, so the digits are uniform to within 2^-60.
pub fn coupon_code(random: [u8; 16]) -> String {
    let mut n = u128::from_le_bytes(random);
    let mut values = [0u8; COUPON_RANDOM_SYMBOLS];
    for v in values.iter_mut() {
        *v = (n % 31) as u8;
        n /= 31;
    }
    let mut s = String::with_capacity(COUPON_LEN);
    for v in values.iter().chain(std::iter::once(&check_symbol(&values))) {
        s.push(char::from(COUPON_ALPHABET[usize::from(*v)]));
    }
    s
}

/// A code as shown to people: groups of four, `K7QX-M2PD-9HTF-RC`.
pub fn display_code(code: &str) -> String {
    code.as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("-")
}

/// Why a typed code is not a code at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeError {
    Length,
    Symbol(char),
    Check,
}

/// Reads a code as typed: case, spaces and dashes do not matter. Refuses, without looking
/// anything up, a wrong length, a symbol outside the alphabet, or a wrong check symbol.
pub fn normalize_code(input: &str) -> Result<String, CodeError> {
    if input.len() > MAX_CODE_INPUT_LEN {
        return Err(CodeError::Length);
    }
    let mut values = Vec::with_capacity(COUPON_LEN);
    let mut out = String::with_capacity(COUPON_LEN);
    for ch in input.chars().filter(|c| *c != '-' && !c.is_whitespace()) {
        let up = ch.to_ascii_uppercase();
        let v = COUPON_ALPHABET
            .iter()
            .position(|a| char::from(*a) == up)
            .ok_or(CodeError::Symbol(ch))?;
        values.push(v as u8);
        out.push(up);
    }
    if values.len() != COUPON_LEN {
        return Err(CodeError::Length);
    }
    if check_symbol(&values[..COUPON_RANDOM_SYMBOLS]) != values[COUPON_RANDOM_SYMBOLS] {
        return Err(CodeError::Check);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Coupons at the till
// ---------------------------------------------------------------------------------------------

/// Why a coupon is refused; `code()` is stable for clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Malformed,
    Unknown,
    Expired {
        at: String,
    },
    AlreadyRedeemed {
        at: String,
        order_id: Option<String>,
    },
    Cancelled,
    TierRestricted {
        needs: String,
    },
    BelowMinimum {
        minimum_minor: i64,
        total_minor: i64,
    },
    ProductNotInOrder {
        sku: String,
    },
    WrongMember,
}

impl Refusal {
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::Unknown => "unknown",
            Refusal::Expired { .. } => "expired",
            Refusal::AlreadyRedeemed { .. } => "already_redeemed",
            Refusal::Cancelled => "cancelled",
            Refusal::TierRestricted { .. } => "tier_restricted",
            Refusal::BelowMinimum { .. } => "below_minimum",
            Refusal::ProductNotInOrder { .. } => "product_not_in_order",
            Refusal::WrongMember => "wrong_member",
        }
    }

    /// A code that does not exist (or is not even well formed): what guessing produces.
    pub fn is_guess(&self) -> bool {
        matches!(self, Refusal::Malformed | Refusal::Unknown)
    }

    pub fn message(&self, currency: Currency) -> String {
        let money = |m: i64| format!("{} {currency}", format_minor(m, currency.exponent()));
        match self {
            Refusal::Malformed => {
                "this is not a coupon code (wrong length, symbol or check symbol)".into()
            }
            Refusal::Unknown => "no coupon has this code".into(),
            Refusal::Expired { at } => format!("the coupon expired at {at}"),
            Refusal::AlreadyRedeemed { at, order_id } => match order_id {
                Some(o) => format!("the coupon was already redeemed at {at} (order {o})"),
                None => format!("the coupon was already redeemed at {at}"),
            },
            Refusal::Cancelled => "the coupon was cancelled".into(),
            Refusal::TierRestricted { needs } => {
                format!("the coupon's reward is for {needs} members and above")
            }
            Refusal::BelowMinimum {
                minimum_minor,
                total_minor,
            } => format!(
                "the order total {} is below the coupon's minimum of {}",
                money(*total_minor),
                money(*minimum_minor)
            ),
            Refusal::ProductNotInOrder { sku } => {
                format!("the order has no line with the free product `{sku}`")
            }
            Refusal::WrongMember => "the coupon belongs to another member".into(),
        }
    }
}

/// The order a coupon is checked against (all optional: a till may only have the code).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderView {
    pub total_minor: Option<i64>,
    /// (sku, quantity, unit price in minor units)
    pub lines: Vec<(String, i64, i64)>,
}

/// A coupon as stored, for the check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CouponView {
    pub status: String,
    pub expires_at: i64,
    pub redeemed_at: Option<i64>,
    pub redeemed_order_id: Option<String>,
}

/// What a good coupon gives on this order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Benefit {
    pub kind: RewardKind,
    /// The amount off this order, when it can be computed.
    pub discount_minor: Option<i64>,
    pub sku: Option<String>,
    pub free_shipping: bool,
    pub description: String,
}

/// Decides whether a coupon is good for `order` at `now`. `member_rank` and `required_rank`
/// are tier ranks (required `None`: no restriction; a required tier that no longer exists is
/// passed as `Some(usize::MAX)`).
pub fn check_coupon(
    coupon: &CouponView,
    reward: &RewardDef,
    member_rank: Option<usize>,
    required_rank: Option<usize>,
    order: &OrderView,
    now: DateTime<Utc>,
) -> Result<Benefit, Refusal> {
    let ts = |us: i64| crate::time::format(crate::time::from_micros(us));
    match coupon.status.as_str() {
        "redeemed" => {
            return Err(Refusal::AlreadyRedeemed {
                at: ts(coupon.redeemed_at.unwrap_or(0)),
                order_id: coupon.redeemed_order_id.clone(),
            });
        }
        "cancelled" => return Err(Refusal::Cancelled),
        _ => {}
    }
    if now.timestamp_micros() >= coupon.expires_at {
        return Err(Refusal::Expired {
            at: ts(coupon.expires_at),
        });
    }
    if let Some(req) = required_rank
        && member_rank.is_none_or(|r| r < req)
    {
        return Err(Refusal::TierRestricted {
            needs: reward.min_tier.clone().unwrap_or_default(),
        });
    }
    if let (Some(min), Some(total)) = (reward.min_order_total_minor, order.total_minor)
        && total < min
    {
        return Err(Refusal::BelowMinimum {
            minimum_minor: min,
            total_minor: total,
        });
    }
    let mut benefit = Benefit {
        kind: reward.kind,
        discount_minor: None,
        sku: None,
        free_shipping: false,
        description: reward.title.clone(),
    };
    match reward.kind {
        RewardKind::FixedDiscount => {
            let v = reward.value_minor.unwrap_or(0);
            benefit.discount_minor = Some(order.total_minor.map_or(v, |t| v.min(t)));
        }
        RewardKind::PercentDiscount => {
            benefit.discount_minor = order.total_minor.map(|t| {
                let d = i128::from(t) * i128::from(reward.percent_bp.unwrap_or(0)) / 10_000;
                i64::try_from(d).unwrap_or(MAX_MINOR)
            });
        }
        RewardKind::FreeProduct => {
            let sku = reward.sku.clone().unwrap_or_default();
            if !order.lines.is_empty() {
                let price = order
                    .lines
                    .iter()
                    .filter(|(s, q, _)| *s == sku && *q > 0)
                    .map(|(_, _, p)| *p)
                    .min()
                    .ok_or_else(|| Refusal::ProductNotInOrder { sku: sku.clone() })?;
                benefit.discount_minor = Some(price);
            }
            benefit.sku = Some(sku);
        }
        RewardKind::FreeShipping => benefit.free_shipping = true,
        RewardKind::StoreCredit | RewardKind::CharityDonation | RewardKind::Custom => {}
    }
    Ok(benefit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn eur() -> Currency {
        Currency::parse("EUR").expect("known")
    }

    fn input(kind: RewardKind) -> RewardInput {
        RewardInput {
            kind,
            title: "Ten off".into(),
            description: None,
            image_url: None,
            points_cost: 500,
            value: Some("10.00".into()),
            percent: None,
            sku: None,
            charity: None,
            min_order_total: Some("50.00".into()),
            stock: Some(5),
            per_member_limit: None,
            min_tier: None,
            valid_from: None,
            valid_until: None,
            coupon_valid_days: None,
            active: true,
        }
    }

    fn now() -> DateTime<Utc> {
        crate::time::parse("2026-05-01T10:00:00Z").expect("valid")
    }

    fn coupon(status: &str) -> CouponView {
        CouponView {
            status: status.into(),
            expires_at: now().timestamp_micros() + 1_000_000,
            redeemed_at: Some(0),
            redeemed_order_id: Some("o-1".into()),
        }
    }

    #[test]
    fn a_reward_needs_the_fields_of_its_kind() {
        let mut r = input(RewardKind::PercentDiscount);
        assert_eq!(r.validate(eur(), &[]).map_err(|e| e.field), Err("percent"));
        r.percent = Some("150".into());
        assert_eq!(r.validate(eur(), &[]).map_err(|e| e.field), Err("percent"));
        r.percent = Some("12.5".into());
        assert_eq!(r.validate(eur(), &[]).map(|d| d.percent_bp), Ok(Some(1250)));
        let mut f = input(RewardKind::FreeProduct);
        assert_eq!(f.validate(eur(), &[]).map_err(|e| e.field), Err("sku"));
        f.sku = Some("sock-1".into());
        f.min_tier = Some("Gold".into());
        assert_eq!(f.validate(eur(), &[]).map_err(|e| e.field), Err("min_tier"));
        assert!(f.validate(eur(), &["Gold".into()]).is_ok());
        let mut d = input(RewardKind::FixedDiscount);
        d.valid_from = Some("2026-02-01T00:00:00Z".into());
        d.valid_until = Some("2026-01-01T00:00:00Z".into());
        assert_eq!(
            d.validate(eur(), &[]).map_err(|e| e.field),
            Err("valid_until")
        );
        d.valid_until = None;
        d.points_cost = -1;
        assert_eq!(
            d.validate(eur(), &[]).map_err(|e| e.field),
            Err("points_cost")
        );
    }

    #[test]
    fn codes_have_fourteen_symbols_from_the_alphabet_and_read_back_however_typed() {
        let code = coupon_code([7u8; 16]);
        assert_eq!(code.len(), COUPON_LEN);
        let shown = display_code(&code);
        assert_eq!(shown.len(), COUPON_LEN + 3);
        assert_eq!(normalize_code(&shown), Ok(code.clone()));
        assert_eq!(
            normalize_code(&format!(" {} ", shown.to_lowercase())),
            Ok(code.clone())
        );
        assert_eq!(normalize_code("ABC"), Err(CodeError::Length));
        assert_eq!(
            normalize_code("0000-0000-0000-00"),
            Err(CodeError::Symbol('0'))
        );
    }

    #[test]
    fn the_check_symbol_catches_a_swap_of_neighbours() {
        let code = coupon_code([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]);
        let b = code.as_bytes();
        let i = (0..COUPON_RANDOM_SYMBOLS - 1)
            .find(|&i| b[i] != b[i + 1])
            .expect("two different neighbours");
        let mut swapped = b.to_vec();
        swapped.swap(i, i + 1);
        let swapped = String::from_utf8(swapped).expect("ascii");
        assert_eq!(normalize_code(&swapped), Err(CodeError::Check));
    }

    #[test]
    fn coupons_are_refused_with_a_reason() {
        let def = input(RewardKind::FixedDiscount)
            .validate(eur(), &[])
            .expect("valid");
        let order = |t: i64| OrderView {
            total_minor: Some(t),
            lines: vec![],
        };
        assert!(matches!(
            check_coupon(&coupon("redeemed"), &def, None, None, &order(9000), now()),
            Err(Refusal::AlreadyRedeemed { .. })
        ));
        assert_eq!(
            check_coupon(&coupon("cancelled"), &def, None, None, &order(9000), now()),
            Err(Refusal::Cancelled)
        );
        let mut old = coupon("issued");
        old.expires_at = now().timestamp_micros();
        assert!(matches!(
            check_coupon(&old, &def, None, None, &order(9000), now()),
            Err(Refusal::Expired { .. })
        ));
        assert_eq!(
            check_coupon(
                &coupon("issued"),
                &def,
                Some(0),
                Some(1),
                &order(9000),
                now()
            )
            .map_err(|r| r.code()),
            Err("tier_restricted")
        );
        assert_eq!(
            check_coupon(&coupon("issued"), &def, None, None, &order(4999), now())
                .map_err(|r| r.code()),
            Err("below_minimum")
        );
        let ok = check_coupon(&coupon("issued"), &def, None, None, &order(9000), now());
        assert_eq!(ok.map(|b| b.discount_minor), Ok(Some(1000)));
    }

    proptest! {
        #[test]
        fn every_generated_code_normalises_to_itself(bytes in proptest::array::uniform16(0u8..)) {
            let code = coupon_code(bytes);
            prop_assert_eq!(normalize_code(&display_code(&code)), Ok(code.clone()));
            prop_assert!(code.bytes().all(|b| COUPON_ALPHABET.contains(&b)));
        }

        #[test]
        fn a_single_wrong_symbol_is_always_caught(bytes in proptest::array::uniform16(0u8..), pos in 0usize..COUPON_LEN, sym in 0usize..31) {
            let code = coupon_code(bytes);
            let mut b = code.clone().into_bytes();
            prop_assume!(b[pos] != COUPON_ALPHABET[sym]);
            b[pos] = COUPON_ALPHABET[sym];
            let typo = String::from_utf8(b).expect("ascii");
            prop_assert_eq!(normalize_code(&typo), Err(CodeError::Check));
        }

        #[test]
        fn normalising_never_panics(s in "\\PC{0,80}") {
            let _ = normalize_code(&s);
        }
    }
}
