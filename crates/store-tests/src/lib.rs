//! Test support shared by every crate's tests: a fresh database per test on SQLite (a
//! temporary file) or PostgreSQL (a schema of its own in `FIDELIS_TEST_DATABASE_URL`, dropped
//! afterwards), and [`on_both!`], which turns one async scenario into a test per database.
//!
//! The conformance scenarios themselves are in `tests/conformance.rs`.

use fidelis_store::conn::{RowWatch, Sync};
use fidelis_store::{Backend, Conn, DbError, Dialect, Param, Row, Store, StoreOptions};
use std::sync::Arc;

pub use fidelis_store;

/// The database a test owns, removed when dropped.
pub struct TestDb {
    pub url: String,
    pub kind: &'static str,
    cleanup: Cleanup,
}

enum Cleanup {
    File(std::path::PathBuf),
    Schema { base: String, schema: String },
}

impl TestDb {
    pub fn sqlite() -> TestDb {
        let dir = std::env::temp_dir().join("fidelis-tests");
        // Already there or not creatable: opening the file will say which.
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join(format!("{}.db", fidelis_store::random_id("t", 16)));
        TestDb {
            url: format!("sqlite://{}", path.display()),
            kind: "sqlite",
            cleanup: Cleanup::File(path),
        }
    }

    /// `None` when `FIDELIS_TEST_DATABASE_URL` is unset; panics then if
    /// `FIDELIS_REQUIRE_POSTGRES=1`, so CI cannot skip PostgreSQL by accident.
    pub fn postgres() -> Option<TestDb> {
        let Ok(base) = std::env::var("FIDELIS_TEST_DATABASE_URL") else {
            assert!(
                std::env::var("FIDELIS_REQUIRE_POSTGRES").map_or(true, |v| v != "1"),
                "FIDELIS_REQUIRE_POSTGRES=1 but FIDELIS_TEST_DATABASE_URL is not set"
            );
            return None;
        };
        let schema = fidelis_store::random_id("t_", 16);
        let sep = if base.contains('?') { '&' } else { '?' };
        Some(TestDb {
            url: format!("{base}{sep}schema={schema}"),
            kind: "postgres",
            cleanup: Cleanup::Schema { base, schema },
        })
    }

    /// The dialect of this database.
    pub fn kind_dialect(&self) -> fidelis_store::Dialect {
        backend(&self.url).dialect()
    }

    /// A store on this database, migrated, with the usual options.
    pub fn store(&self, now_micros: i64) -> Store {
        let b = backend(&self.url);
        let mut opts = StoreOptions::for_dialect(b.dialect());
        // Several writers on PostgreSQL whatever the machine's default, so the partitioning of
        // writes by member and the locking between writers stay exercised.
        if b.dialect() == fidelis_store::Dialect::Postgres {
            opts.writers = 4;
        }
        self.store_with(opts, now_micros)
    }

    /// A store on this database with `opts`.
    pub fn store_with(&self, opts: StoreOptions, now_micros: i64) -> Store {
        let b = backend(&self.url);
        match Store::start(b, opts, now_micros) {
            Ok(s) => s,
            Err(e) => panic!("cannot open test store {}: {e}", self.url),
        }
    }
}

pub fn backend(url: &str) -> Arc<dyn Backend> {
    if url.starts_with("sqlite:") {
        Arc::new(
            fidelis_store_sqlite::Sqlite::from_url(url)
                .unwrap_or_else(|| panic!("bad sqlite url {url}")),
        )
    } else {
        Arc::new(
            fidelis_store_pg::Postgres::from_url(url)
                .unwrap_or_else(|e| panic!("bad postgres url {url}: {e}")),
        )
    }
}

/// A valid purchase of one 42.00 EUR shoe at a till, by member id; the same each time for an
/// order id, so sending it again is a replay.
pub fn shoe_purchase(
    member: &str,
    order: &str,
    s: &fidelis_core::ProgramSettings,
) -> fidelis_core::event::Purchase {
    use fidelis_core::event::{Channel, LineInput, MemberRef, PurchaseInput};
    PurchaseInput {
        member: MemberRef {
            id: Some(member.into()),
            external_id: None,
        },
        order_id: order.into(),
        occurred_at: None,
        channel: Channel::Pos,
        store_id: None,
        currency: "EUR".into(),
        total: "42.00".into(),
        lines: vec![LineInput {
            sku: "shoe-1".into(),
            category: None,
            quantity: 1,
            unit_price: "42.00".into(),
        }],
    }
    .validate(s, chrono::Utc::now())
    .expect("valid purchase")
}

/// A backend whose connections run `hook` before each sync of the writes they committed (on
/// SQLite, in the store's syncer thread, before the WAL's `fdatasync`): tests hold the sync
/// there, or look at the files as the sync finds them. Everything else is `inner`'s.
pub struct BeforeSync {
    pub inner: Arc<dyn Backend>,
    pub hook: Arc<dyn Fn() + Send + std::marker::Sync>,
}

impl Backend for BeforeSync {
    fn dialect(&self) -> Dialect {
        self.inner.dialect()
    }
    fn connect(&self, read_only: bool) -> Result<Box<dyn Conn>, DbError> {
        Ok(Box::new(BeforeSyncConn {
            inner: self.inner.connect(read_only)?,
            hook: self.hook.clone(),
        }))
    }
}

struct BeforeSyncConn {
    inner: Box<dyn Conn>,
    hook: Arc<dyn Fn() + Send + std::marker::Sync>,
}

impl Conn for BeforeSyncConn {
    fn dialect(&self) -> Dialect {
        self.inner.dialect()
    }
    fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, DbError> {
        self.inner.execute(sql, params)
    }
    fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, DbError> {
        self.inner.query(sql, params)
    }
    fn batch(&mut self, sql: &str) -> Result<(), DbError> {
        self.inner.batch(sql)
    }
    fn query_all(&mut self, asks: &[(&str, &[Param<'_>])]) -> Result<Vec<Vec<Row>>, DbError> {
        self.inner.query_all(asks)
    }
    fn defer(&mut self, sql: &str, params: &[Param<'_>]) -> Result<(), DbError> {
        self.inner.defer(sql, params)
    }
    fn flush(&mut self) -> Result<(), DbError> {
        self.inner.flush()
    }
    fn insert_id(&mut self, sql: &str, params: &[Param<'_>]) -> Result<i64, DbError> {
        self.inner.insert_id(sql, params)
    }
    fn watch_rows(&mut self, table: &'static str, changed: RowWatch) -> bool {
        self.inner.watch_rows(table, changed)
    }
    fn may_have_written(&self) -> Option<u64> {
        self.inner.may_have_written()
    }
    fn writes_undone_since(&mut self, mark: u64) {
        self.inner.writes_undone_since(mark)
    }
    fn durability(&self) -> Option<Sync> {
        let mut sync = self.inner.durability()?;
        let hook = self.hook.clone();
        Some(Box::new(move || {
            hook();
            sync()
        }))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match &self.cleanup {
            Cleanup::File(p) => {
                for suffix in ["", "-wal", "-shm"] {
                    // A file that is not there is already clean.
                    let _ = std::fs::remove_file(format!("{}{suffix}", p.display()));
                }
            }
            Cleanup::Schema { base, schema } => {
                // Best effort in a thread of its own (the postgres client must not run inside
                // an async runtime's worker): a schema left behind only costs disk.
                let (base, schema) = (base.clone(), schema.clone());
                let _ = std::thread::spawn(move || {
                    if let Ok(mut c) = postgres::Client::connect(&base, postgres::NoTls) {
                        let _ =
                            c.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"));
                    }
                })
                .join();
            }
        }
    }
}

/// Runs one async scenario `fn(TestDb)` as two tests, `sqlite` and `postgres`, in a module
/// named after the scenario. The PostgreSQL test is skipped (with a note) when no test
/// database is configured.
#[macro_export]
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                super::$name($crate::TestDb::sqlite()).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                match $crate::TestDb::postgres() {
                    Some(db) => super::$name(db).await,
                    None => eprintln!("skipped: set FIDELIS_TEST_DATABASE_URL to run on PostgreSQL"),
                }
            }
        }
    )*};
}
