//! French and English: the message catalogues, the language a request gets (the `lang` cookie
//! the switch sets, else the browser's Accept-Language, else English), and number and date
//! formats. Templates read messages as `tr.key`; a key missing from a catalogue is a test
//! failure (see the tests below), never a blank at run time.

use axum::http::HeaderMap;
use minijinja::Value;
use minijinja::value::{Object, ObjectRepr};
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lang {
    Fr,
    #[default]
    En,
}

impl Lang {
    pub fn code(&self) -> &'static str {
        match self {
            Lang::Fr => "fr",
            Lang::En => "en",
        }
    }
    pub fn parse(s: &str) -> Option<Lang> {
        match s {
            "fr" => Some(Lang::Fr),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    /// The `lang` cookie if set, else the first of French or English the browser lists.
    pub fn from_headers(h: &HeaderMap) -> Lang {
        if let Some(l) = crate::session::cookie(h, "lang").and_then(|v| Lang::parse(&v)) {
            return l;
        }
        let accept = h
            .get(axum::http::header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let mut tags: Vec<(f32, usize, &str)> = accept
            .split(',')
            .enumerate()
            .filter_map(|(i, part)| {
                let mut it = part.split(';');
                let tag = it.next()?.trim();
                let q = it
                    .find_map(|p| p.trim().strip_prefix("q="))
                    .and_then(|q| q.parse::<f32>().ok())
                    .unwrap_or(1.0);
                Some((q, i, tag))
            })
            .collect();
        tags.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        for (_, _, tag) in tags {
            let primary = tag.split('-').next().unwrap_or("").to_ascii_lowercase();
            if let Some(l) = Lang::parse(&primary) {
                return l;
            }
        }
        Lang::En
    }

    pub fn t(&self, key: &str) -> &'static str {
        let map = match self {
            Lang::Fr => &*FR_MAP,
            Lang::En => &*EN_MAP,
        };
        map.get(key).copied().unwrap_or("")
    }

    /// The catalogue as a template object (`tr.key`).
    pub fn catalog(&self) -> Value {
        Value::from_object(Catalog(*self))
    }

    /// `1234567` → `1 234 567` (French, narrow no-break spaces) or `1,234,567`.
    pub fn number(&self, n: i64) -> String {
        let digits = n.unsigned_abs().to_string();
        let sep = match self {
            Lang::Fr => "\u{202f}",
            Lang::En => ",",
        };
        let mut out = String::new();
        for (i, ch) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push_str(sep);
            }
            out.push(ch);
        }
        if n < 0 { format!("-{out}") } else { out }
    }

    /// An RFC 3339 time as a date (`12 mars 2026`, `12 Mar 2026`); with `time`, plus `14:05 UTC`.
    pub fn date(&self, rfc3339: &str, time: bool) -> String {
        let Some(t) = fidelis_core::time::parse(rfc3339) else {
            return rfc3339.to_string();
        };
        use chrono::Datelike;
        const FR: [&str; 12] = [
            "janv.", "févr.", "mars", "avr.", "mai", "juin", "juil.", "août", "sept.", "oct.",
            "nov.", "déc.",
        ];
        const EN: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let month = t.month0() as usize;
        let m = match self {
            Lang::Fr => FR[month],
            Lang::En => EN[month],
        };
        let d = format!("{} {m} {}", t.day(), t.year());
        if time {
            format!("{d}, {} UTC", t.format("%H:%M"))
        } else {
            d
        }
    }
}

#[derive(Debug)]
struct Catalog(Lang);

impl Object for Catalog {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let text = self.0.t(key.as_str()?);
        (!text.is_empty()).then(|| Value::from(text))
    }
}

static FR_MAP: LazyLock<HashMap<&'static str, &'static str>> =
    LazyLock::new(|| crate::messages::FR.iter().copied().collect());
static EN_MAP: LazyLock<HashMap<&'static str, &'static str>> =
    LazyLock::new(|| crate::messages::EN.iter().copied().collect());

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::{EN, FR};
    use std::collections::BTreeSet;

    #[test]
    fn both_catalogues_have_the_same_keys_and_no_duplicates() {
        let fr: BTreeSet<&str> = FR.iter().map(|(k, _)| *k).collect();
        let en: BTreeSet<&str> = EN.iter().map(|(k, _)| *k).collect();
        assert_eq!(fr.len(), FR.len(), "a key appears twice in FR");
        assert_eq!(en.len(), EN.len(), "a key appears twice in EN");
        let only_fr: Vec<_> = fr.difference(&en).collect();
        let only_en: Vec<_> = en.difference(&fr).collect();
        assert!(
            only_fr.is_empty() && only_en.is_empty(),
            "FR only: {only_fr:?}; EN only: {only_en:?}"
        );
    }

    #[test]
    fn every_message_a_template_uses_exists() {
        let en: BTreeSet<&str> = EN.iter().map(|(k, _)| *k).collect();
        let mut missing = Vec::new();
        for (name, source) in crate::render::TEMPLATES {
            let mut rest = *source;
            while let Some(i) = rest.find("tr.") {
                let key: String = rest[i + 3..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !key.is_empty() && !en.contains(key.as_str()) {
                    missing.push(format!("{name}: {key}"));
                }
                rest = &rest[i + 3..];
            }
        }
        assert!(
            missing.is_empty(),
            "messages missing from the catalogues: {missing:?}"
        );
    }

    fn headers(accept: &str, cookie: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("accept-language", accept.parse().expect("header"));
        if let Some(c) = cookie {
            h.insert("cookie", c.parse().expect("header"));
        }
        h
    }

    #[test]
    fn the_language_comes_from_the_cookie_then_the_browser() {
        assert_eq!(
            Lang::from_headers(&headers("fr-FR,fr;q=0.9,en;q=0.8", None)),
            Lang::Fr
        );
        assert_eq!(
            Lang::from_headers(&headers("de-DE,en;q=0.5,fr;q=0.4", None)),
            Lang::En
        );
        assert_eq!(
            Lang::from_headers(&headers("en;q=0.3,fr-CA;q=0.7", None)),
            Lang::Fr
        );
        assert_eq!(Lang::from_headers(&headers("de", None)), Lang::En);
        assert_eq!(
            Lang::from_headers(&headers("fr", Some("lang=en"))),
            Lang::En
        );
    }

    #[test]
    fn numbers_and_dates_follow_the_language() {
        assert_eq!(Lang::En.number(1_234_567), "1,234,567");
        assert_eq!(Lang::Fr.number(-1234), "-1\u{202f}234");
        assert_eq!(Lang::En.number(12), "12");
        assert_eq!(Lang::Fr.date("2026-03-10T12:05:00Z", false), "10 mars 2026");
        assert_eq!(
            Lang::En.date("2026-03-10T12:05:00Z", true),
            "10 Mar 2026, 12:05 UTC"
        );
    }
}
