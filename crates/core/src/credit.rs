//! Store credit: a second asset next to points, in money (minor units of the programme's
//! currency). Members earn it as cashback (a percentage of what they spend) or by redeeming a
//! store-credit reward, and spend it at the till. It never mixes with points: its own journal,
//! its own cached balance.

use crate::money::parse_minor;
use crate::program::SettingsError;
use serde::{Deserialize, Serialize};

/// The largest cashback percentage.
pub const MAX_CASHBACK_BP: i64 = 10_000;

fn zero() -> String {
    "0".into()
}

/// Store-credit settings of a programme (`credit` in the settings).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreditSettings {
    /// Percent of each purchase's total credited as store credit ("2", "1.5"); "0" is off.
    #[serde(default = "zero")]
    pub cashback_percent: String,
}

impl Default for CreditSettings {
    fn default() -> Self {
        CreditSettings {
            cashback_percent: zero(),
        }
    }
}

impl CreditSettings {
    pub fn is_default(&self) -> bool {
        *self == CreditSettings::default()
    }

    /// The cashback rate in hundredths of a percent (150 = 1.5 %).
    pub fn cashback_bp(&self) -> Result<i64, SettingsError> {
        let bp = parse_minor(&self.cashback_percent, 2).map_err(|e| SettingsError {
            field: "credit.cashback_percent",
            reason: format!("{e} (a percentage such as \"2\" or \"1.5\")"),
        })?;
        if bp > MAX_CASHBACK_BP {
            return Err(SettingsError {
                field: "credit.cashback_percent",
                reason: "must be at most 100".into(),
            });
        }
        Ok(bp)
    }
}

/// Cashback on a purchase of `total_minor` at `bp` hundredths of a percent, rounded down.
pub fn cashback_minor(total_minor: i64, bp: i64) -> i64 {
    let v = i128::from(total_minor.max(0)) * i128::from(bp.clamp(0, MAX_CASHBACK_BP)) / 10_000;
    i64::try_from(v).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cashback_is_a_percentage_of_the_total_rounded_down() {
        let s = CreditSettings {
            cashback_percent: "1.5".into(),
        };
        assert_eq!(s.cashback_bp(), Ok(150));
        assert_eq!(cashback_minor(5990, 150), 89);
        assert_eq!(cashback_minor(5990, 0), 0);
        let bad = CreditSettings {
            cashback_percent: "101".into(),
        };
        assert!(bad.cashback_bp().is_err());
    }

    proptest! {
        #[test]
        fn cashback_never_exceeds_the_total(total in 0i64..=crate::money::MAX_MINOR, bp in 0i64..=MAX_CASHBACK_BP) {
            let c = cashback_minor(total, bp);
            prop_assert!(c >= 0 && c <= total);
        }
    }
}
