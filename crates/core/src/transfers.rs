//! Points moving between members (family pooling) and to charities: the programme's limits
//! and the checks against them.

use crate::program::SettingsError;
use serde::{Deserialize, Serialize};

pub const DEFAULT_MAX_PER_TRANSFER: i64 = 10_000;
pub const DEFAULT_MAX_PER_MONTH: i64 = 50_000;
pub const MAX_TRANSFER_LIMIT: i64 = 1_000_000_000;
/// The largest donation in one request.
pub const MAX_DONATION_POINTS: i64 = 1_000_000_000;

/// Transfer limits of a programme (`transfers` in the settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferSettings {
    /// Transfers are off unless the programme turns them on.
    #[serde(default)]
    pub enabled: bool,
    #[serde(default = "per_transfer")]
    pub max_points_per_transfer: i64,
    /// Points one member may send per calendar month (UTC).
    #[serde(default = "per_month")]
    pub max_points_per_month: i64,
}

fn per_transfer() -> i64 {
    DEFAULT_MAX_PER_TRANSFER
}

fn per_month() -> i64 {
    DEFAULT_MAX_PER_MONTH
}

impl Default for TransferSettings {
    fn default() -> Self {
        TransferSettings {
            enabled: false,
            max_points_per_transfer: DEFAULT_MAX_PER_TRANSFER,
            max_points_per_month: DEFAULT_MAX_PER_MONTH,
        }
    }
}

impl TransferSettings {
    pub fn is_default(&self) -> bool {
        *self == TransferSettings::default()
    }

    pub fn validate(&self) -> Result<(), SettingsError> {
        for (field, v) in [
            (
                "transfers.max_points_per_transfer",
                self.max_points_per_transfer,
            ),
            ("transfers.max_points_per_month", self.max_points_per_month),
        ] {
            if !(1..=MAX_TRANSFER_LIMIT).contains(&v) {
                return Err(SettingsError {
                    field,
                    reason: format!("must be 1 to {MAX_TRANSFER_LIMIT}"),
                });
            }
        }
        Ok(())
    }

    /// Whether sending `points` now is allowed after `sent_this_month` this month.
    pub fn check(&self, points: i64, sent_this_month: i64) -> Result<(), String> {
        if !self.enabled {
            return Err("transfers of points are not enabled in this programme".into());
        }
        if points > self.max_points_per_transfer {
            return Err(format!(
                "at most {} points per transfer",
                self.max_points_per_transfer
            ));
        }
        if sent_this_month.saturating_add(points) > self.max_points_per_month {
            return Err(format!(
                "at most {} points per month may be transferred; {} already sent this month",
                self.max_points_per_month, sent_this_month
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfers_are_off_by_default_and_limited_per_transfer_and_month() {
        let mut s = TransferSettings::default();
        assert!(s.check(10, 0).is_err());
        s.enabled = true;
        s.max_points_per_transfer = 100;
        s.max_points_per_month = 150;
        assert_eq!(s.check(100, 0), Ok(()));
        assert!(s.check(101, 0).is_err());
        assert_eq!(s.check(50, 100), Ok(()));
        assert!(s.check(51, 100).is_err());
    }
}
