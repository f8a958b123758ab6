//! Local time in the programme's zone: the schedule windows of rules (days of the week and
//! hours), and the day/week/month keys of per-member caps. An instant is turned into local time
//! once per event; nothing here reads a clock.

use super::define::{DefError, WindowDef};
use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc};
use chrono_tz::Tz;

/// An instant as seen in the programme's zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Local {
    pub date: NaiveDate,
    /// ISO weekday, 1 = Monday … 7 = Sunday.
    pub weekday: u32,
    pub hour: u32,
    pub minute: u32,
}

impl Local {
    pub fn of(t: DateTime<Utc>, tz: Tz) -> Local {
        let l = t.with_timezone(&tz);
        Local {
            date: l.date_naive(),
            weekday: l.weekday().number_from_monday(),
            hour: l.hour(),
            minute: l.minute(),
        }
    }

    pub fn minute_of_day(&self) -> u32 {
        self.hour * 60 + self.minute
    }

    pub fn day_name(&self) -> &'static str {
        DAY_NAMES
            .get(self.weekday.saturating_sub(1) as usize)
            .copied()
            .unwrap_or("monday")
    }

    /// `YYYY-MM-DD` (written by hand: chrono's formatter reads its pattern on every call).
    pub fn date_text(&self) -> String {
        format!(
            "{:04}-{:02}-{:02}",
            self.date.year(),
            self.date.month(),
            self.date.day()
        )
    }

    /// The counter keys of per-member caps: local day, ISO week and month.
    pub fn day_key(&self) -> String {
        format!(
            "d:{:04}-{:02}-{:02}",
            self.date.year(),
            self.date.month(),
            self.date.day()
        )
    }
    pub fn week_key(&self) -> String {
        let w = self.date.iso_week();
        format!("w:{}-W{:02}", w.year(), w.week())
    }
    pub fn month_key(&self) -> String {
        format!("m:{:04}-{:02}", self.date.year(), self.date.month())
    }
}

pub const DAY_NAMES: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

/// A checked window: a set of days (bit 0 = Monday) and minutes of the day `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub days: u8,
    pub from_minute: u32,
    pub to_minute: u32,
}

impl Window {
    pub fn contains(&self, l: &Local) -> bool {
        let day_bit = 1u8 << (l.weekday.clamp(1, 7) - 1);
        let m = l.minute_of_day();
        self.days & day_bit != 0 && m >= self.from_minute && m < self.to_minute
    }

    pub fn describe(&self) -> String {
        let days: Vec<&str> = (0..7)
            .filter(|i| self.days & (1 << i) != 0)
            .map(|i| &DAY_NAMES[i][..3])
            .collect();
        format!(
            "{} {:02}:{:02}–{:02}:{:02}",
            days.join(","),
            self.from_minute / 60,
            self.from_minute % 60,
            self.to_minute / 60,
            self.to_minute % 60
        )
    }
}

fn day_bits(field: &str, name: &str) -> Result<u8, DefError> {
    let lower = name.trim().to_ascii_lowercase();
    match lower.as_str() {
        "weekdays" => return Ok(0b0001_1111),
        "weekend" => return Ok(0b0110_0000),
        _ => {}
    }
    DAY_NAMES
        .iter()
        .position(|d| *d == lower || (lower.len() == 3 && d.starts_with(&lower)))
        .map(|i| 1u8 << i)
        .ok_or_else(|| {
            DefError::new(
                field,
                format!(
                    "`{name}` is not a day: use mon … sun, monday … sunday, weekdays or weekend"
                ),
            )
        })
}

fn minute(field: &str, v: &Option<String>, default: u32) -> Result<u32, DefError> {
    let Some(s) = v else { return Ok(default) };
    let bad = || DefError::new(field, "must be a time HH:MM between 00:00 and 24:00");
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if m > 59 || h > 24 || (h == 24 && m != 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

impl WindowDef {
    pub fn check(&self, field: &str) -> Result<Window, DefError> {
        if self.days.is_empty() || self.days.len() > 7 {
            return Err(DefError::new(
                format!("{field}.days"),
                "must name 1 to 7 days",
            ));
        }
        let mut days = 0u8;
        for (i, d) in self.days.iter().enumerate() {
            days |= day_bits(&format!("{field}.days[{i}]"), d)?;
        }
        let from_minute = minute(&format!("{field}.from"), &self.from, 0)?;
        let to_minute = minute(&format!("{field}.to"), &self.to, 24 * 60)?;
        if to_minute <= from_minute {
            return Err(DefError::new(
                format!("{field}.to"),
                "must be after `from` (split a window that crosses midnight into two)",
            ));
        }
        Ok(Window {
            days,
            from_minute,
            to_minute,
        })
    }
}

/// The date of `t` in the programme's zone.
pub fn local_date(settings: &crate::program::ProgramSettings, t: DateTime<Utc>) -> NaiveDate {
    t.with_timezone(&settings.tz().unwrap_or(chrono_tz::UTC))
        .date_naive()
}

/// Whole years between `birth` and `on`.
pub fn age(birth: NaiveDate, on: NaiveDate) -> i64 {
    let mut years = i64::from(on.year() - birth.year());
    if (on.month(), on.day()) < (birth.month(), birth.day()) {
        years -= 1;
    }
    years
}

/// Whether `on` is the birthday of someone born on `birth`; 29 February is celebrated on
/// 28 February in other years.
pub fn is_birthday(birth: NaiveDate, on: NaiveDate) -> bool {
    if (birth.month(), birth.day()) == (on.month(), on.day()) {
        return true;
    }
    let leap = NaiveDate::from_ymd_opt(on.year(), 2, 29).is_some();
    birth.month() == 2 && birth.day() == 29 && !leap && on.month() == 2 && on.day() == 28
}
