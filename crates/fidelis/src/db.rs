//! Opens a store from a database URL. The URL must name its scheme: `sqlite://path` for the
//! embedded file, `postgres://...` for PostgreSQL.

use anyhow::{Context, bail};
use fidelis_store::{Backend, Store, StoreOptions};
use std::sync::Arc;

pub fn backend(url: &str) -> anyhow::Result<Arc<dyn Backend>> {
    if url.starts_with("sqlite:") {
        let b = fidelis_store_sqlite::Sqlite::from_url(url)
            .context("a SQLite URL looks like sqlite://fidelis.db")?;
        return Ok(Arc::new(b));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let b = fidelis_store_pg::Postgres::from_url(url).map_err(anyhow::Error::msg)?;
        return Ok(Arc::new(b));
    }
    bail!(
        "database URL must start with sqlite:// or postgres:// (got `{}`)",
        url.split(':').next().unwrap_or("")
    )
}

pub fn open(url: &str, now_micros: i64) -> anyhow::Result<Store> {
    let b = backend(url)?;
    let mut opts = StoreOptions::for_dialect(b.dialect());
    // PostgreSQL takes several writer threads (SQLite has one writer whatever is asked).
    if let Some(n) = threads_from_env("FIDELIS_PG_WRITERS")?
        && b.dialect() == fidelis_store::Dialect::Postgres
    {
        opts.writers = n;
    }
    if let Some(n) = threads_from_env("FIDELIS_READERS")? {
        opts.readers = n;
    }
    // The fewest purchases a batch needs to be posted together (1: always; a number above the
    // largest batch: never), to compare the two paths on one build.
    if let Some(n) = number(
        "FIDELIS_TOGETHER_FROM",
        std::env::var("FIDELIS_TOGETHER_FROM").ok(),
        100_000,
    )? {
        opts.together_from = n;
    }
    Store::start(b, opts, now_micros)
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", redact(url)))
}

/// A number of threads set in the environment variable `name`, if set.
fn threads_from_env(name: &str) -> anyhow::Result<Option<usize>> {
    threads(name, std::env::var(name).ok())
}

fn threads(name: &str, value: Option<String>) -> anyhow::Result<Option<usize>> {
    number(name, value, 256)
}

/// `value` (of the environment variable `name`) as a number from 1 to `max`, if set.
fn number(name: &str, value: Option<String>, max: usize) -> anyhow::Result<Option<usize>> {
    let Some(n) = value else {
        return Ok(None);
    };
    let n = n
        .parse()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .with_context(|| format!("{name} must be a number from 1 to {max}"))?;
    Ok(Some(n))
}

/// The URL without its password, for messages and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::{number, threads};

    #[test]
    fn the_together_bound_from_the_environment_is_checked() {
        let v = |s: &str| number("FIDELIS_TOGETHER_FROM", Some(s.into()), 100_000);
        assert_eq!(v("32").expect("32 is fine"), Some(32));
        assert_eq!(v("100000").expect("the largest is fine"), Some(100_000));
        for bad in ["0", "100001", "many", ""] {
            let Err(e) = v(bad) else {
                panic!("{bad} is refused");
            };
            assert!(
                e.to_string()
                    .contains("FIDELIS_TOGETHER_FROM must be a number from 1 to 100000"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn thread_counts_from_the_environment_are_checked() {
        assert_eq!(
            threads("FIDELIS_READERS", None).expect("unset is fine"),
            None
        );
        assert_eq!(
            threads("FIDELIS_READERS", Some("4".into())).expect("4 is fine"),
            Some(4)
        );
        for bad in ["0", "257", "four", "-1", ""] {
            let Err(e) = threads("FIDELIS_READERS", Some(bad.into())) else {
                panic!("{bad} is refused");
            };
            assert!(
                e.to_string()
                    .contains("FIDELIS_READERS must be a number from 1 to 256"),
                "{bad}: {e}"
            );
        }
    }
}
