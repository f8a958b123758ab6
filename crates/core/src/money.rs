//! Money as integer minor units of an ISO 4217 currency; decimal strings on the wire.

use serde::{Deserialize, Serialize};
use std::fmt;

/// An ISO 4217 currency Fidelis knows, with its number of decimals (its exponent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency {
    code: &'static str,
    exponent: u8,
}

/// The currencies accepted on the wire. Anything else is refused as unknown, so a typo never
/// turns into money of a currency nobody can settle.
const CURRENCIES: &[(&str, u8)] = &[
    ("AED", 2),
    ("AUD", 2),
    ("BGN", 2),
    ("BHD", 3),
    ("BRL", 2),
    ("CAD", 2),
    ("CHF", 2),
    ("CLP", 0),
    ("CNY", 2),
    ("CZK", 2),
    ("DKK", 2),
    ("DZD", 2),
    ("EUR", 2),
    ("GBP", 2),
    ("HKD", 2),
    ("HUF", 2),
    ("IDR", 2),
    ("ILS", 2),
    ("INR", 2),
    ("ISK", 0),
    ("JOD", 3),
    ("JPY", 0),
    ("KRW", 0),
    ("KWD", 3),
    ("MAD", 2),
    ("MXN", 2),
    ("MYR", 2),
    ("NOK", 2),
    ("NZD", 2),
    ("OMR", 3),
    ("PHP", 2),
    ("PLN", 2),
    ("QAR", 2),
    ("RON", 2),
    ("SAR", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("THB", 2),
    ("TND", 3),
    ("TRY", 2),
    ("TWD", 2),
    ("UAH", 2),
    ("USD", 2),
    ("VND", 0),
    ("XAF", 0),
    ("XOF", 0),
    ("XPF", 0),
    ("ZAR", 2),
];

impl Currency {
    pub fn parse(code: &str) -> Result<Currency, MoneyError> {
        CURRENCIES
            .iter()
            .find(|(c, _)| *c == code)
            .map(|&(code, exponent)| Currency { code, exponent })
            .ok_or_else(|| MoneyError::UnknownCurrency(code.chars().take(16).collect()))
    }
    pub fn code(&self) -> &'static str {
        self.code
    }
    pub fn exponent(&self) -> u8 {
        self.exponent
    }
    /// 10^exponent: how many minor units make one major unit.
    pub fn minor_per_unit(&self) -> i64 {
        10i64.pow(u32::from(self.exponent))
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code)
    }
}

impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code)
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Currency::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("unknown currency `{0}` (expected an ISO 4217 code such as EUR)")]
    UnknownCurrency(String),
    #[error("`{value}` has more decimals than {currency} allows ({exponent} at most)")]
    TooManyDecimals {
        value: String,
        currency: &'static str,
        exponent: u8,
    },
    #[error("`{0}` is not a decimal amount such as \"59.90\"")]
    NotDecimal(String),
    #[error("`{0}` is too large")]
    TooLarge(String),
    #[error("amount must not be negative, got `{0}`")]
    Negative(String),
}

/// The largest amount accepted anywhere: 10^15 minor units (10 trillion euros). Sums of many
/// such amounts still fit in i64, and products with a rate fit in i128.
pub const MAX_MINOR: i64 = 1_000_000_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    pub minor: i64,
    pub currency: Currency,
}

impl Money {
    pub fn new(minor: i64, currency: Currency) -> Money {
        Money { minor, currency }
    }

    /// Parses a non-negative decimal string ("59.90", "60", "0.5") in `currency`.
    pub fn parse(value: &str, currency: Currency) -> Result<Money, MoneyError> {
        parse_minor(value, currency.exponent)
            .map(|minor| Money { minor, currency })
            .map_err(|e| match e {
                MoneyError::TooManyDecimals {
                    value, exponent, ..
                } => MoneyError::TooManyDecimals {
                    value,
                    currency: currency.code,
                    exponent,
                },
                other => other,
            })
    }

    /// The decimal string of this amount, with exactly the currency's number of decimals.
    pub fn to_decimal(&self) -> String {
        format_minor(self.minor, self.currency.exponent)
    }
}

/// Parses a non-negative decimal with at most `exponent` decimals into minor units.
pub fn parse_minor(value: &str, exponent: u8) -> Result<i64, MoneyError> {
    let not_decimal = || MoneyError::NotDecimal(value.chars().take(40).collect());
    if value.starts_with('-') {
        return Err(MoneyError::Negative(value.chars().take(40).collect()));
    }
    let (int, frac) = match value.split_once('.') {
        Some((i, f)) => (i, f),
        None => (value, ""),
    };
    if int.is_empty() || int.len() > 19 || !int.bytes().all(|b| b.is_ascii_digit()) {
        return Err(not_decimal());
    }
    if value.contains('.') && frac.is_empty() {
        return Err(not_decimal());
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(not_decimal());
    }
    let significant = frac.trim_end_matches('0');
    if significant.len() > usize::from(exponent) {
        return Err(MoneyError::TooManyDecimals {
            value: value.chars().take(40).collect(),
            currency: "",
            exponent,
        });
    }
    let too_large = || MoneyError::TooLarge(value.chars().take(40).collect());
    let int_value: i64 = int.parse().map_err(|_| too_large())?;
    let mut frac_value: i64 = 0;
    for i in 0..usize::from(exponent) {
        let digit = significant
            .as_bytes()
            .get(i)
            .map_or(0, |b| i64::from(b - b'0'));
        frac_value = frac_value * 10 + digit;
    }
    let minor = int_value
        .checked_mul(10i64.pow(u32::from(exponent)))
        .and_then(|v| v.checked_add(frac_value))
        .ok_or_else(too_large)?;
    if minor > MAX_MINOR {
        return Err(too_large());
    }
    Ok(minor)
}

/// Formats minor units with `exponent` decimals; negative values keep their sign.
pub fn format_minor(minor: i64, exponent: u8) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    if exponent == 0 {
        return format!("{sign}{abs}");
    }
    let unit = 10u64.pow(u32::from(exponent));
    format!(
        "{sign}{}.{:0width$}",
        abs / unit,
        abs % unit,
        width = usize::from(exponent)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn eur() -> Currency {
        Currency::parse("EUR").expect("EUR is known")
    }

    #[test]
    fn parses_amounts_with_the_currency_decimals() {
        assert_eq!(Money::parse("59.90", eur()).map(|m| m.minor), Ok(5990));
        assert_eq!(Money::parse("60", eur()).map(|m| m.minor), Ok(6000));
        assert_eq!(Money::parse("0.5", eur()).map(|m| m.minor), Ok(50));
        assert_eq!(Money::parse("1.500", eur()).map(|m| m.minor), Ok(150));
        let jpy = Currency::parse("JPY").expect("JPY is known");
        assert_eq!(Money::parse("1200", jpy).map(|m| m.minor), Ok(1200));
        assert!(matches!(
            Money::parse("1.5", jpy),
            Err(MoneyError::TooManyDecimals { .. })
        ));
    }

    #[test]
    fn refuses_what_is_not_a_plain_decimal() {
        for bad in [
            "",
            ".",
            "1.",
            ".5",
            "1e3",
            "1,50",
            " 1",
            "0x10",
            "+1",
            "1.2.3",
            "12345678901234567890",
        ] {
            assert!(Money::parse(bad, eur()).is_err(), "{bad:?} was accepted");
        }
        assert!(matches!(
            Money::parse("-1.00", eur()),
            Err(MoneyError::Negative(_))
        ));
        assert!(matches!(
            Money::parse("1.999", eur()),
            Err(MoneyError::TooManyDecimals { .. })
        ));
        assert!(matches!(
            Money::parse("10000000000000.01", eur()),
            Err(MoneyError::TooLarge(_))
        ));
    }

    #[test]
    fn unknown_currencies_are_refused() {
        assert!(Currency::parse("EUX").is_err());
        assert!(Currency::parse("eur").is_err());
    }

    proptest! {
        #[test]
        fn format_then_parse_is_identity(minor in 0i64..=MAX_MINOR, exp in 0u8..=3) {
            let text = format_minor(minor, exp);
            prop_assert_eq!(parse_minor(&text, exp), Ok(minor));
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,30}") {
            let _ = parse_minor(&s, 2);
        }
    }
}
