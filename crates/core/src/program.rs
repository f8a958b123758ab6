//! A programme's settings: the points' name, earn rate and rounding, pending (return) period,
//! expiry policy and what a refund may take. Validated once when saved; the rest of the code
//! only ever holds valid settings.

use crate::money::Currency;
use serde::{Deserialize, Serialize};

/// How fractional points are turned into whole ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Rounding {
    #[default]
    Floor,
    Nearest,
    Ceil,
}

/// When points stop being spendable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ExpiryPolicy {
    /// Points never expire.
    #[default]
    None,
    /// Each credit expires `months` after it was earned (the event's time).
    AfterEarning { months: u32 },
    /// The whole available balance expires after `months` without any activity (purchase,
    /// refund, custom event or adjustment).
    Inactivity { months: u32 },
}

/// What a refund may take back when the points it claws back are no longer there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RefundPolicy {
    /// Take only pending points; what cannot be taken is forgiven.
    PendingOnly,
    /// Take pending, then available points down to zero; the rest is forgiven.
    WithinBalance,
    /// Take pending, then available points, and let the balance go negative: the next
    /// earnings repay the debt first.
    #[default]
    AllowNegative,
}

/// Limits on settings, named so tests and docs can refer to them.
pub const MAX_PENDING_DAYS: u32 = 365;
pub const MAX_EXPIRY_MONTHS: u32 = 120;
/// Earn rate precision: rates are kept in millionths of a point per currency unit.
pub const RATE_SCALE: i64 = 1_000_000;
pub const MAX_RATE_MICRO: i64 = 1_000 * RATE_SCALE;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgramSettings {
    /// What members call the points ("points", "stars", "étoiles").
    pub points_name: String,
    /// The programme's currency; purchases in another currency are refused.
    pub currency: Currency,
    /// Points per major currency unit, as a decimal string ("1", "2.5", "0.1").
    pub earn_rate: String,
    #[serde(default)]
    pub rounding: Rounding,
    /// Days a purchase's points stay pending (the return window) before they can be spent.
    #[serde(default)]
    pub pending_days: u32,
    #[serde(default)]
    pub expiry: ExpiryPolicy,
    #[serde(default)]
    pub refund_policy: RefundPolicy,
    /// What a purchase that names an unknown `external_id` does: enrol that member at once
    /// (`true`), or refuse with 404 so the till enrols first (`false`).
    #[serde(default = "yes")]
    pub auto_enroll: bool,
    /// The programme's IANA time zone ("Europe/Paris"): rule schedules, local-time fields of
    /// conditions, per-day/week/month caps and birthdays are reckoned in it. Default "UTC"
    /// (not written out when it is the default).
    #[serde(default = "utc", skip_serializing_if = "is_utc")]
    pub timezone: String,
    /// The tier ladder (see `tiers`); managed through `/api/v1/tiers`, absent when none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tiers: Option<crate::tiers::TierConfig>,
    /// Coupon validity and what cancelling a redemption returns.
    #[serde(
        default,
        skip_serializing_if = "crate::rewards::RedemptionPolicy::is_default"
    )]
    pub redemption: crate::rewards::RedemptionPolicy,
    /// Store credit: the cashback percentage.
    #[serde(
        default,
        skip_serializing_if = "crate::credit::CreditSettings::is_default"
    )]
    pub credit: crate::credit::CreditSettings,
    /// Transfers of points between members, and their limits.
    #[serde(
        default,
        skip_serializing_if = "crate::transfers::TransferSettings::is_default"
    )]
    pub transfers: crate::transfers::TransferSettings,
}

fn yes() -> bool {
    true
}

fn utc() -> String {
    "UTC".into()
}

fn is_utc(tz: &str) -> bool {
    tz == "UTC"
}

impl Default for ProgramSettings {
    fn default() -> Self {
        ProgramSettings {
            points_name: "points".into(),
            currency: Currency::parse("EUR")
                .unwrap_or_else(|_| unreachable!("EUR is in the table")),
            earn_rate: "1".into(),
            rounding: Rounding::Floor,
            pending_days: 30,
            expiry: ExpiryPolicy::AfterEarning { months: 12 },
            refund_policy: RefundPolicy::AllowNegative,
            auto_enroll: true,
            timezone: utc(),
            tiers: None,
            redemption: Default::default(),
            credit: Default::default(),
            transfers: Default::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct SettingsError {
    pub field: &'static str,
    pub reason: String,
}

impl ProgramSettings {
    /// Checks every field; the first problem is reported with the field's name.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let err = |field, reason: &str| {
            Err(SettingsError {
                field,
                reason: reason.to_string(),
            })
        };
        let name = self.points_name.trim();
        if name.is_empty() || name.chars().count() > 40 {
            return err("points_name", "must be 1 to 40 characters");
        }
        self.earn_rate_micro()?;
        if self.pending_days > MAX_PENDING_DAYS {
            return err("pending_days", "must be at most 365");
        }
        self.tz()?;
        self.check_member_value()?;
        match self.expiry {
            ExpiryPolicy::AfterEarning { months } | ExpiryPolicy::Inactivity { months }
                if months == 0 || months > MAX_EXPIRY_MONTHS =>
            {
                err("expiry.months", "must be 1 to 120")
            }
            _ => Ok(()),
        }
    }

    /// The programme's time zone.
    pub fn tz(&self) -> Result<chrono_tz::Tz, SettingsError> {
        self.timezone.parse().map_err(|_| SettingsError {
            field: "timezone",
            reason: format!(
                "`{}` is not an IANA time zone name such as Europe/Paris or UTC",
                self.timezone.chars().take(64).collect::<String>()
            ),
        })
    }

    /// The earn rate in millionths of a point per major currency unit.
    pub fn earn_rate_micro(&self) -> Result<i64, SettingsError> {
        let micro = crate::money::parse_minor(&self.earn_rate, 6).map_err(|e| SettingsError {
            field: "earn_rate",
            reason: format!("{e} (at most 6 decimals)"),
        })?;
        if micro > MAX_RATE_MICRO {
            return Err(SettingsError {
                field: "earn_rate",
                reason: "must be at most 1000".into(),
            });
        }
        Ok(micro)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_rates_parse() {
        let s = ProgramSettings::default();
        assert_eq!(s.validate(), Ok(()));
        assert_eq!(s.earn_rate_micro(), Ok(RATE_SCALE));
        let half = ProgramSettings {
            earn_rate: "0.5".into(),
            ..s.clone()
        };
        assert_eq!(half.earn_rate_micro(), Ok(RATE_SCALE / 2));
    }

    #[test]
    fn invalid_settings_name_their_field() {
        let s = ProgramSettings {
            earn_rate: "-1".into(),
            ..Default::default()
        };
        assert_eq!(s.validate().map_err(|e| e.field), Err("earn_rate"));
        let s = ProgramSettings {
            expiry: ExpiryPolicy::AfterEarning { months: 0 },
            ..Default::default()
        };
        assert_eq!(s.validate().map_err(|e| e.field), Err("expiry.months"));
        let s = ProgramSettings {
            pending_days: 1000,
            ..Default::default()
        };
        assert_eq!(s.validate().map_err(|e| e.field), Err("pending_days"));
    }
}
