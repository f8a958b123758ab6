//! Calendar arithmetic on UTC instants. Callers always pass `now`; nothing here reads a clock.

use chrono::{DateTime, Months, Utc};

/// `t` plus `months` calendar months, clamped to the month's last day (31 Jan + 1 = 28/29 Feb).
pub fn add_months(t: DateTime<Utc>, months: u32) -> DateTime<Utc> {
    t.checked_add_months(Months::new(months))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

pub fn add_days(t: DateTime<Utc>, days: u32) -> DateTime<Utc> {
    t.checked_add_signed(chrono::Duration::days(i64::from(days)))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Microseconds since the Unix epoch: how instants are stored.
pub fn to_micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

pub fn from_micros(us: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_micros(us).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// RFC 3339 with a `Z`, second precision unless sub-second parts exist.
pub fn format(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

pub fn parse(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn month_arithmetic_clamps_to_the_end_of_short_months() {
        let t = parse("2026-01-31T10:00:00Z").expect("valid");
        assert_eq!(format(add_months(t, 1)), "2026-02-28T10:00:00Z");
        assert_eq!(format(add_months(t, 12)), "2027-01-31T10:00:00Z");
    }

    #[test]
    fn micros_round_trip() {
        let t = parse("2026-11-22T20:08:09.123456Z").expect("valid");
        assert_eq!(from_micros(to_micros(t)), t);
    }
}
