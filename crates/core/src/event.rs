//! Events as they arrive (wire shapes) and as the ledger sees them once checked. Every limit an
//! event can hit is a named constant here, and every refusal says which field and why.

use crate::money::{Currency, Money, MoneyError};
use crate::program::ProgramSettings;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt::Display;

pub const MAX_LINES: usize = 500;
pub const MAX_QUANTITY: i64 = 100_000;
pub const MAX_ID_LEN: usize = 128;
pub const MAX_LABEL_LEN: usize = 100;
pub const MAX_PROPERTIES_BYTES: usize = 16 * 1024;
/// How far in the future an event's `occurred_at` may be (clock skew of tills).
pub const MAX_FUTURE_SECS: i64 = 24 * 3600;

/// Who an event is about: an enrolled member's id, or the retailer's own identifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct MemberRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberKey {
    Id(String),
    ExternalId(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Pos,
    Web,
    App,
}

impl Channel {
    pub fn as_str(&self) -> &'static str {
        match self {
            Channel::Pos => "pos",
            Channel::Web => "web",
            Channel::App => "app",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineInput {
    pub sku: String,
    #[serde(default)]
    pub category: Option<String>,
    pub quantity: i64,
    pub unit_price: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurchaseInput {
    pub member: MemberRef,
    pub order_id: String,
    #[serde(default)]
    pub occurred_at: Option<String>,
    pub channel: Channel,
    #[serde(default)]
    pub store_id: Option<String>,
    pub currency: String,
    pub total: String,
    #[serde(default)]
    pub lines: Vec<LineInput>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub sku: String,
    pub category: Option<String>,
    pub quantity: i64,
    pub unit_price_minor: i64,
}

/// A purchase that passed every check; the ledger takes only these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purchase {
    pub member: MemberKey,
    pub order_id: String,
    pub occurred_at: DateTime<Utc>,
    pub channel: Channel,
    pub store_id: Option<String>,
    pub total: Money,
    pub lines: Vec<Line>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefundLineInput {
    pub sku: String,
    pub quantity: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefundInput {
    pub order_id: String,
    #[serde(default)]
    pub refund_id: Option<String>,
    #[serde(default)]
    pub amount: Option<String>,
    #[serde(default)]
    pub lines: Option<Vec<RefundLineInput>>,
    #[serde(default)]
    pub occurred_at: Option<String>,
}

/// What a refund takes back: an amount, or lines of the original order (priced as sold).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundWhat {
    Amount(i64),
    Lines(Vec<(String, i64)>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refund {
    pub order_id: String,
    pub refund_id: Option<String>,
    pub what: RefundWhat,
    pub occurred_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomInput {
    pub member: MemberRef,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub properties: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub occurred_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Custom {
    pub member: MemberKey,
    pub kind: String,
    pub properties: serde_json::Map<String, serde_json::Value>,
    pub occurred_at: DateTime<Utc>,
}

/// A refused event: which field, and why, in words a developer can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct EventError {
    pub field: String,
    pub reason: String,
}

fn bad<T>(field: impl Into<String>, reason: impl Into<String>) -> Result<T, EventError> {
    Err(EventError {
        field: field.into(),
        reason: reason.into(),
    })
}

/// Checks a text field. `field` is written out only for a fault: naming each field of each
/// line up front was a few `format!`s per purchase.
fn check_text(field: impl Display, value: &str, max: usize) -> Result<(), EventError> {
    if value.trim().is_empty() {
        return bad(field.to_string(), "must not be empty");
    }
    if value.chars().count() > max {
        return bad(
            field.to_string(),
            format!("must be at most {max} characters"),
        );
    }
    if value.chars().any(char::is_control) {
        return bad(field.to_string(), "must not contain control characters");
    }
    Ok(())
}

impl MemberRef {
    pub fn key(&self, field: &str) -> Result<MemberKey, EventError> {
        match (&self.id, &self.external_id) {
            (Some(id), None) => {
                check_text(format_args!("{field}.id"), id, MAX_ID_LEN)?;
                Ok(MemberKey::Id(id.clone()))
            }
            (None, Some(ext)) => {
                check_text(format_args!("{field}.external_id"), ext, MAX_ID_LEN)?;
                Ok(MemberKey::ExternalId(ext.clone()))
            }
            _ => bad(field, "give exactly one of `id` or `external_id`"),
        }
    }
}

fn occurred_at(value: &Option<String>, now: DateTime<Utc>) -> Result<DateTime<Utc>, EventError> {
    let Some(text) = value else { return Ok(now) };
    let Some(t) = crate::time::parse(text) else {
        return bad(
            "occurred_at",
            "must be an RFC 3339 time such as 2026-11-22T10:00:00Z",
        );
    };
    if (t - now).num_seconds() > MAX_FUTURE_SECS {
        return bad("occurred_at", "is more than 24 hours in the future");
    }
    Ok(t)
}

fn money(field: impl Display, value: &str, currency: Currency) -> Result<Money, EventError> {
    Money::parse(value, currency).map_err(|e: MoneyError| EventError {
        field: field.to_string(),
        reason: e.to_string(),
    })
}

impl PurchaseInput {
    /// Checks the purchase against the programme; `now` bounds `occurred_at` and fills it in.
    pub fn validate(
        &self,
        program: &ProgramSettings,
        now: DateTime<Utc>,
    ) -> Result<Purchase, EventError> {
        let member = self.member.key("member")?;
        check_text("order_id", &self.order_id, MAX_ID_LEN)?;
        if let Some(store) = &self.store_id {
            check_text("store_id", store, MAX_LABEL_LEN)?;
        }
        let currency = Currency::parse(&self.currency).map_err(|e| EventError {
            field: "currency".into(),
            reason: e.to_string(),
        })?;
        if currency != program.currency {
            return bad(
                "currency",
                format!(
                    "the programme's currency is {}, got {currency}",
                    program.currency
                ),
            );
        }
        let total = money("total", &self.total, currency)?;
        if self.lines.len() > MAX_LINES {
            return bad(
                "lines",
                format!(
                    "at most {MAX_LINES} lines per order, got {}",
                    self.lines.len()
                ),
            );
        }
        let mut lines = Vec::with_capacity(self.lines.len());
        for (i, l) in self.lines.iter().enumerate() {
            check_text(format_args!("lines[{i}].sku"), &l.sku, MAX_LABEL_LEN)?;
            if let Some(c) = &l.category {
                check_text(format_args!("lines[{i}].category"), c, MAX_LABEL_LEN)?;
            }
            if l.quantity <= 0 || l.quantity > MAX_QUANTITY {
                return bad(
                    format!("lines[{i}].quantity"),
                    format!("must be 1 to {MAX_QUANTITY}, got {}", l.quantity),
                );
            }
            let price = money(
                format_args!("lines[{i}].unit_price"),
                &l.unit_price,
                currency,
            )?;
            lines.push(Line {
                sku: l.sku.clone(),
                category: l.category.clone(),
                quantity: l.quantity,
                unit_price_minor: price.minor,
            });
        }
        Ok(Purchase {
            member,
            order_id: self.order_id.clone(),
            occurred_at: occurred_at(&self.occurred_at, now)?,
            channel: self.channel,
            store_id: self.store_id.clone(),
            total,
            lines,
        })
    }
}

impl RefundInput {
    pub fn validate(
        &self,
        program: &ProgramSettings,
        now: DateTime<Utc>,
    ) -> Result<Refund, EventError> {
        check_text("order_id", &self.order_id, MAX_ID_LEN)?;
        if let Some(id) = &self.refund_id {
            check_text("refund_id", id, MAX_ID_LEN)?;
        }
        let what = match (&self.amount, &self.lines) {
            (Some(a), None) => {
                let m = money("amount", a, program.currency)?;
                if m.minor == 0 {
                    return bad("amount", "must be greater than zero");
                }
                RefundWhat::Amount(m.minor)
            }
            (None, Some(lines)) => {
                if lines.is_empty() {
                    return bad("lines", "must name at least one line");
                }
                if lines.len() > MAX_LINES {
                    return bad("lines", format!("at most {MAX_LINES} lines per refund"));
                }
                let mut out = Vec::with_capacity(lines.len());
                for (i, l) in lines.iter().enumerate() {
                    check_text(format_args!("lines[{i}].sku"), &l.sku, MAX_LABEL_LEN)?;
                    if l.quantity <= 0 || l.quantity > MAX_QUANTITY {
                        return bad(
                            format!("lines[{i}].quantity"),
                            format!("must be 1 to {MAX_QUANTITY}"),
                        );
                    }
                    out.push((l.sku.clone(), l.quantity));
                }
                RefundWhat::Lines(out)
            }
            _ => return bad("amount", "give exactly one of `amount` or `lines`"),
        };
        Ok(Refund {
            order_id: self.order_id.clone(),
            refund_id: self.refund_id.clone(),
            what,
            occurred_at: occurred_at(&self.occurred_at, now)?,
        })
    }
}

impl CustomInput {
    pub fn validate(&self, now: DateTime<Utc>) -> Result<Custom, EventError> {
        let member = self.member.key("member")?;
        let kind_ok = !self.kind.is_empty()
            && self.kind.len() <= 64
            && self
                .kind
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
        if !kind_ok {
            return bad(
                "type",
                "must be 1 to 64 characters of a-z, 0-9, `_`, `.` or `-` (e.g. review_written)",
            );
        }
        let size = serde_json::to_string(&self.properties)
            .map(|s| s.len())
            .unwrap_or(usize::MAX);
        if size > MAX_PROPERTIES_BYTES {
            return bad(
                "properties",
                format!("must be at most {MAX_PROPERTIES_BYTES} bytes of JSON"),
            );
        }
        Ok(Custom {
            member,
            kind: self.kind.clone(),
            properties: self.properties.clone(),
            occurred_at: occurred_at(&self.occurred_at, now)?,
        })
    }
}

/// What the customer paid for `wanted` lines of an order of `total_minor` (lines priced as sold,
/// then in proportion to what the order actually cost when it was discounted), given the lines
/// `already` refunded. Computed cumulatively, per sku, so that refunding every unit (in any
/// number of refunds) comes to exactly the order's total. Fails when a line names a sku the
/// order did not have, or more units than are left of it.
pub fn refund_lines_amount(
    order: &[Line],
    total_minor: i64,
    wanted: &[(String, i64)],
    already: &[(String, i64)],
) -> Result<i64, EventError> {
    let qty_of = |set: &[(String, i64)], sku: &str| -> i64 {
        set.iter().filter(|(s, _)| s == sku).map(|(_, q)| q).sum()
    };
    for (i, (sku, qty)) in wanted.iter().enumerate() {
        let sold_qty: i64 = order
            .iter()
            .filter(|l| &l.sku == sku)
            .map(|l| l.quantity)
            .sum();
        if sold_qty == 0 {
            return bad(
                format!("lines[{i}].sku"),
                format!("the order has no line with sku `{sku}`"),
            );
        }
        let before = qty_of(already, sku) + qty_of(&wanted[..i], sku);
        if before + qty > sold_qty {
            return bad(
                format!("lines[{i}].quantity"),
                format!(
                    "the order sold {sold_qty} of `{sku}` and {before} are already refunded or named earlier"
                ),
            );
        }
    }
    // List value of a set of refunded lines: per sku, its sold value times the refunded share
    // of its units (so lines of one sku at several prices are refunded at their average price).
    let value = |set: &[(String, i64)]| -> i128 {
        let mut skus: Vec<&str> = set.iter().map(|(s, _)| s.as_str()).collect();
        skus.sort_unstable();
        skus.dedup();
        skus.iter()
            .map(|sku| {
                let sold: Vec<&Line> = order.iter().filter(|l| l.sku == *sku).collect();
                let sold_qty: i128 = sold.iter().map(|l| i128::from(l.quantity)).sum();
                let sold_minor: i128 = sold
                    .iter()
                    .map(|l| i128::from(l.unit_price_minor) * i128::from(l.quantity))
                    .sum();
                if sold_qty == 0 {
                    0
                } else {
                    sold_minor * i128::from(qty_of(set, sku)) / sold_qty
                }
            })
            .sum()
    };
    let list_total: i128 = order
        .iter()
        .map(|l| i128::from(l.unit_price_minor) * i128::from(l.quantity))
        .sum();
    let paid = |v: i128| -> i128 {
        if list_total <= 0 {
            0
        } else {
            v * i128::from(total_minor) / list_total
        }
    };
    let after: Vec<(String, i64)> = already.iter().chain(wanted.iter()).cloned().collect();
    let amount = paid(value(&after)) - paid(value(already));
    Ok(i64::try_from(amount).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn line(sku: &str, quantity: i64, unit_price_minor: i64) -> Line {
        Line {
            sku: sku.into(),
            category: None,
            quantity,
            unit_price_minor,
        }
    }

    #[test]
    fn refunding_every_line_of_a_discounted_order_refunds_its_total() {
        let order = [line("socks", 2, 1000), line("shoes", 1, 3990)];
        let a = refund_lines_amount(&order, 5000, &[("shoes".into(), 1)], &[]).expect("ok");
        let b = refund_lines_amount(&order, 5000, &[("socks".into(), 2)], &[("shoes".into(), 1)])
            .expect("ok");
        assert_eq!(a + b, 5000);
    }

    #[test]
    fn units_of_one_sku_at_two_prices_add_up_to_what_was_paid() {
        let order = [line("pen", 1, 100), line("pen", 2, 200)];
        let mut done: Vec<(String, i64)> = vec![];
        let mut sum = 0;
        for _ in 0..3 {
            sum += refund_lines_amount(&order, 500, &[("pen".into(), 1)], &done).expect("ok");
            done.push(("pen".into(), 1));
        }
        assert_eq!(sum, 500);
        assert!(
            refund_lines_amount(&order, 500, &[("pen".into(), 1)], &done).is_err(),
            "nothing left to refund"
        );
    }

    /// Each fault names its field, down to the line: the names are written only for a fault.
    #[test]
    fn a_purchase_s_fault_names_its_field() {
        let good = || PurchaseInput {
            member: MemberRef {
                id: None,
                external_id: Some("c-1".into()),
            },
            order_id: "o-1".into(),
            occurred_at: None,
            channel: Channel::Pos,
            store_id: None,
            currency: "EUR".into(),
            total: "12.00".into(),
            lines: vec![
                LineInput {
                    sku: "a".into(),
                    category: None,
                    quantity: 1,
                    unit_price: "2.00".into(),
                },
                LineInput {
                    sku: "b".into(),
                    category: Some("shoes".into()),
                    quantity: 1,
                    unit_price: "10.00".into(),
                },
            ],
        };
        let program = ProgramSettings::default();
        let now = Utc::now();
        let field = |p: PurchaseInput| p.validate(&program, now).err().map(|e| e.field);
        assert_eq!(field(good()), None);
        let mut p = good();
        p.member.external_id = Some(" ".into());
        assert_eq!(field(p).as_deref(), Some("member.external_id"));
        let mut p = good();
        p.lines[1].sku = String::new();
        assert_eq!(field(p).as_deref(), Some("lines[1].sku"));
        let mut p = good();
        p.lines[1].category = Some("\u{7}".into());
        assert_eq!(field(p).as_deref(), Some("lines[1].category"));
        let mut p = good();
        p.lines[0].unit_price = "2.001".into();
        assert_eq!(field(p).as_deref(), Some("lines[0].unit_price"));
        let mut p = good();
        p.lines[0].quantity = 0;
        assert_eq!(field(p).as_deref(), Some("lines[0].quantity"));
    }

    proptest! {
        #[test]
        fn line_refunds_in_any_split_add_up_to_the_total(
            prices in proptest::collection::vec((1i64..5, 1i64..100_000), 1..6),
            total in 0i64..1_000_000,
            seed in 0u64..1000,
        ) {
            let order: Vec<Line> = prices.iter().enumerate().map(|(i, (q, p))| line(&format!("s{}", i % 3), *q, *p)).collect();
            // Refund every unit one at a time, in an order drawn from the seed.
            let mut units: Vec<String> = order.iter().flat_map(|l| std::iter::repeat_n(l.sku.clone(), l.quantity as usize)).collect();
            let n = units.len();
            for i in 0..n { units.swap(i, (seed as usize + i * 7) % n); }
            let mut done: Vec<(String, i64)> = vec![];
            let mut sum = 0i64;
            for sku in units {
                let a = refund_lines_amount(&order, total, &[(sku.clone(), 1)], &done).expect("units left");
                prop_assert!(a >= 0);
                sum += a;
                done.push((sku, 1));
            }
            prop_assert_eq!(sum, total);
        }
    }
}
