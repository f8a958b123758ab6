//! Checks on what clients send about members and adjustments; the store only ever gets
//! values that passed them.

use crate::error::AppError;
use chrono::{DateTime, NaiveDate, Utc};
use fidelis_store::model::{Consent, MemberFields};
use serde::Deserialize;

pub const MAX_ATTRIBUTES_BYTES: usize = 16 * 1024;
pub const MAX_CONSENTS: usize = 50;
pub const MAX_ADJUSTMENT_POINTS: i64 = 1_000_000_000;
pub const MAX_REASON_LEN: usize = 500;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentInput {
    pub purpose: String,
    pub granted: bool,
    #[serde(default)]
    pub at: Option<String>,
    pub source: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberInput {
    pub external_id: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub name: Option<String>,
    pub birth_date: Option<String>,
    pub attributes: Option<serde_json::Map<String, serde_json::Value>>,
    pub consents: Option<Vec<ConsentInput>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdjustmentInput {
    pub points: i64,
    pub reason: String,
}

fn text(field: &str, v: &Option<String>, max: usize) -> Result<Option<String>, AppError> {
    let Some(v) = v else { return Ok(None) };
    let t = v.trim();
    if t.is_empty() || t.chars().count() > max || t.chars().any(char::is_control) {
        return Err(AppError::invalid(
            field,
            format!("must be 1 to {max} printable characters"),
        ));
    }
    Ok(Some(t.to_string()))
}

impl MemberInput {
    pub fn validate(&self, now: DateTime<Utc>) -> Result<MemberFields, AppError> {
        let email = text("email", &self.email, 254)?.map(|e| e.to_lowercase());
        if let Some(e) = &email {
            let ok = e.split_once('@').is_some_and(|(l, d)| {
                !l.is_empty() && d.contains('.') && !d.starts_with('.') && !d.ends_with('.')
            }) && !e.contains(char::is_whitespace);
            if !ok {
                return Err(AppError::invalid("email", "is not an e-mail address"));
            }
        }
        let phone = text("phone", &self.phone, 32)?;
        if let Some(p) = &phone {
            let digits = p.chars().filter(char::is_ascii_digit).count();
            if digits < 4
                || !p
                    .chars()
                    .all(|c| c.is_ascii_digit() || " +-().".contains(c))
            {
                return Err(AppError::invalid(
                    "phone",
                    "must be digits with optional + - ( ) . and spaces",
                ));
            }
        }
        let birth_date = text("birth_date", &self.birth_date, 10)?;
        if let Some(b) = &birth_date {
            match NaiveDate::parse_from_str(b, "%Y-%m-%d") {
                Ok(d)
                    if d <= now.date_naive()
                        && d.format("%Y").to_string().parse::<i32>().unwrap_or(0) >= 1900 => {}
                _ => {
                    return Err(AppError::invalid(
                        "birth_date",
                        "must be a past date YYYY-MM-DD after 1900",
                    ));
                }
            }
        }
        if let Some(a) = &self.attributes {
            let size = serde_json::to_string(a)
                .map(|s| s.len())
                .unwrap_or(usize::MAX);
            if size > MAX_ATTRIBUTES_BYTES {
                return Err(AppError::invalid(
                    "attributes",
                    format!("must be at most {MAX_ATTRIBUTES_BYTES} bytes of JSON"),
                ));
            }
        }
        let consents = match &self.consents {
            None => None,
            Some(list) if list.len() > MAX_CONSENTS => {
                return Err(AppError::invalid(
                    "consents",
                    format!("at most {MAX_CONSENTS} consents"),
                ));
            }
            Some(list) => {
                let mut out = Vec::with_capacity(list.len());
                for (i, c) in list.iter().enumerate() {
                    let purpose_ok = !c.purpose.is_empty()
                        && c.purpose.len() <= 64
                        && c.purpose
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                    if !purpose_ok {
                        return Err(AppError::invalid(
                            format!("consents[{i}].purpose"),
                            "must be 1 to 64 characters of a-z, 0-9 and _ (e.g. marketing_email)",
                        ));
                    }
                    let source = text(
                        &format!("consents[{i}].source"),
                        &Some(c.source.clone()),
                        64,
                    )?
                    .unwrap_or_default();
                    let at = match &c.at {
                        None => now,
                        Some(t) => fidelis_core::time::parse(t)
                            .filter(|t| *t <= now + chrono::Duration::hours(24))
                            .ok_or_else(|| {
                                AppError::invalid(
                                    format!("consents[{i}].at"),
                                    "must be an RFC 3339 time, not in the future",
                                )
                            })?,
                    };
                    out.push(Consent {
                        purpose: c.purpose.clone(),
                        granted: c.granted,
                        at: fidelis_core::time::format(at),
                        source,
                    });
                }
                Some(out)
            }
        };
        Ok(MemberFields {
            external_id: text(
                "external_id",
                &self.external_id,
                fidelis_core::event::MAX_ID_LEN,
            )?,
            email,
            phone,
            name: text("name", &self.name, 200)?,
            birth_date,
            attributes: self.attributes.clone(),
            consents,
        })
    }
}

impl AdjustmentInput {
    pub fn validate(&self) -> Result<(i64, String), AppError> {
        if self.points == 0 || self.points.abs() > MAX_ADJUSTMENT_POINTS {
            return Err(AppError::invalid(
                "points",
                format!("must be non-zero and at most {MAX_ADJUSTMENT_POINTS} either way"),
            ));
        }
        let reason = text("reason", &Some(self.reason.clone()), MAX_REASON_LEN)
            .map_err(|_| {
                AppError::invalid(
                    "reason",
                    format!("is required: 1 to {MAX_REASON_LEN} printable characters saying why"),
                )
            })?
            .unwrap_or_default();
        Ok((self.points, reason))
    }
}
