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
    if let Ok(n) = std::env::var("FIDELIS_PG_WRITERS") {
        let n: usize = n
            .parse()
            .ok()
            .filter(|n| (1..=256).contains(n))
            .context("FIDELIS_PG_WRITERS must be a number from 1 to 256")?;
        if b.dialect() == fidelis_store::Dialect::Postgres {
            opts.writers = n;
        }
    }
    Store::start(b, opts, now_micros)
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", redact(url)))
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
