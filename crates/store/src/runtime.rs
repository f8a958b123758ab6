//! The store's threads. Writes go to writer threads over bounded queues; each writer takes
//! whatever is queued (up to a cap), runs it in one transaction with a savepoint per request,
//! commits once, and only then answers every request of the batch (group commit). A request
//! that fails its checks is rolled back to its savepoint alone. Reads go to a pool of reader
//! threads, each with its own connection.

use crate::conn::{Conn, DbError, DbErrorKind, Dialect};
use crate::error::{Result, StoreError};
use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tokio::sync::oneshot;

/// Opens connections of one database.
pub trait Backend: Send + Sync {
    fn dialect(&self) -> Dialect;
    fn connect(&self, read_only: bool) -> std::result::Result<Box<dyn Conn>, DbError>;
}

#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Writer threads. SQLite allows one writer; PostgreSQL takes several, each with a
    /// connection, jobs partitioned by member so one member's events stay in order.
    pub writers: usize,
    pub readers: usize,
    /// Jobs a writer takes into one transaction at most.
    pub max_batch: usize,
    /// Jobs waiting per writer before new ones are refused as busy (503).
    pub queue_len: usize,
}

impl StoreOptions {
    pub fn for_dialect(dialect: Dialect) -> StoreOptions {
        match dialect {
            Dialect::Sqlite => StoreOptions {
                writers: 1,
                readers: 4,
                max_batch: 512,
                queue_len: 8192,
            },
            Dialect::Postgres => StoreOptions {
                writers: 12,
                readers: 8,
                max_batch: 256,
                queue_len: 4096,
            },
        }
    }
}

type Deliver = Box<dyn FnOnce(Result<()>) + Send>;
type WriteJob = Box<dyn FnOnce(&mut dyn Conn) -> (bool, Deliver) + Send>;
type ReadJob = Box<dyn FnOnce(&mut dyn Conn) + Send>;

/// Counters the metrics endpoint and the benchmark print.
#[derive(Debug, Default)]
pub struct StoreMetrics {
    pub batches: AtomicU64,
    pub jobs: AtomicU64,
    pub jobs_failed: AtomicU64,
    pub commit_micros_total: AtomicU64,
    pub commits_failed: AtomicU64,
    pub busy_refusals: AtomicU64,
    pub max_batch_seen: AtomicU64,
}

struct Inner {
    dialect: Dialect,
    writers: Vec<Sender<WriteJob>>,
    readers: Sender<ReadJob>,
    metrics: Arc<StoreMetrics>,
}

/// The storage of Fidelis. Cheap to clone; all clones share the same threads.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl Store {
    /// Connects, migrates, and starts the writer and reader threads.
    pub fn start(backend: Arc<dyn Backend>, opts: StoreOptions, now_micros: i64) -> Result<Store> {
        let dialect = backend.dialect();
        let mut first = connect(&backend, false)?;
        {
            let mut c = first;
            let (migrated, c) = std::thread::scope(|s| {
                s.spawn(move || (crate::schema::migrate(c.as_mut(), now_micros), c))
                    .join()
            })
            .map_err(|_| StoreError::Busy("migration thread panicked".into()))?;
            migrated?;
            first = c;
        }
        let metrics = Arc::new(StoreMetrics::default());
        let mut writers = Vec::new();
        let mut first = Some(first);
        for i in 0..opts.writers.max(1) {
            let conn = match first.take() {
                Some(c) => c,
                None => connect(&backend, false)?,
            };
            let (tx, rx) = bounded::<WriteJob>(opts.queue_len);
            let metrics = metrics.clone();
            let max_batch = opts.max_batch.max(1);
            std::thread::Builder::new()
                .name(format!("fidelis-writer-{i}"))
                .spawn({
                    let backend = backend.clone();
                    move || writer_loop(conn, &backend, rx, max_batch, &metrics)
                })
                .map_err(|e| StoreError::Busy(format!("cannot start writer: {e}")))?;
            writers.push(tx);
        }
        let (rtx, rrx) = bounded::<ReadJob>(opts.queue_len);
        for i in 0..opts.readers.max(1) {
            let conn = connect(&backend, true)?;
            let rrx = rrx.clone();
            std::thread::Builder::new()
                .name(format!("fidelis-reader-{i}"))
                .spawn({
                    let backend = backend.clone();
                    move || reader_loop(conn, &backend, rrx)
                })
                .map_err(|e| StoreError::Busy(format!("cannot start reader: {e}")))?;
        }
        Ok(Store {
            inner: Arc::new(Inner {
                dialect,
                writers,
                readers: rtx,
                metrics,
            }),
        })
    }

    /// How many writer threads (and so write partitions) there are.
    pub fn writer_count(&self) -> usize {
        self.inner.writers.len()
    }

    pub fn dialect(&self) -> Dialect {
        self.inner.dialect
    }

    pub fn metrics(&self) -> &StoreMetrics {
        &self.inner.metrics
    }

    /// Runs `f` inside the next group-committed transaction of the writer `partition` maps to;
    /// answers once that transaction has committed. An `Err` from `f` undoes only `f`'s work.
    pub async fn write<T, F>(&self, partition: &str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut dyn Conn) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<T>>();
        let job: WriteJob = Box::new(move |c: &mut dyn Conn| {
            let r = f(c);
            let ok = r.is_ok();
            let deliver: Deliver = Box::new(move |commit: Result<()>| {
                let answer = match (r, commit) {
                    (Ok(v), Ok(())) => Ok(v),
                    (Ok(_), Err(e)) => Err(e),
                    (Err(e), _) => Err(e),
                };
                // The caller may have gone away (client disconnected); the effect stands.
                let _ = tx.send(answer);
            });
            (ok, deliver)
        });
        let n = self.inner.writers.len();
        let idx = if n == 1 {
            0
        } else {
            (fnv1a(partition) % n as u64) as usize
        };
        match self.inner.writers[idx].try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.inner
                    .metrics
                    .busy_refusals
                    .fetch_add(1, Ordering::Relaxed);
                return Err(StoreError::Busy("the write queue is full".into()));
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(StoreError::Busy("the writer has stopped".into()));
            }
        }
        rx.await.unwrap_or_else(|_| {
            Err(StoreError::Busy(
                "the writer stopped before answering".into(),
            ))
        })
    }

    /// Runs `f` on a reader connection (a snapshot of what has been committed).
    pub async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut dyn Conn) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<T>>();
        let job: ReadJob = Box::new(move |c: &mut dyn Conn| {
            // See `write`: a caller that left does not need its answer.
            let _ = tx.send(f(c));
        });
        match self.inner.readers.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.inner
                    .metrics
                    .busy_refusals
                    .fetch_add(1, Ordering::Relaxed);
                return Err(StoreError::Busy("the read queue is full".into()));
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(StoreError::Busy("the readers have stopped".into()));
            }
        }
        rx.await.unwrap_or_else(|_| {
            Err(StoreError::Busy(
                "the reader stopped before answering".into(),
            ))
        })
    }
}

/// Connects on a thread of its own: a blocking client (PostgreSQL's) must not start its I/O
/// inside the async runtime that may be calling us.
fn connect(backend: &Arc<dyn Backend>, read_only: bool) -> Result<Box<dyn Conn>> {
    let b = backend.clone();
    std::thread::spawn(move || b.connect(read_only))
        .join()
        .map_err(|_| StoreError::Busy("connection thread panicked".into()))?
        .map_err(StoreError::from)
}

fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn reader_loop(mut conn: Box<dyn Conn>, backend: &Arc<dyn Backend>, rx: Receiver<ReadJob>) {
    while let Ok(job) = rx.recv() {
        revive(&mut conn, backend, true);
        job(conn.as_mut());
    }
}

/// Replaces a connection the database dropped (a restart, a failover). If the database is
/// still away the old one stays, and the next request fails and tries again.
fn revive(conn: &mut Box<dyn Conn>, backend: &Arc<dyn Backend>, read_only: bool) {
    if !conn.is_broken() {
        return;
    }
    match backend.connect(read_only) {
        Ok(fresh) => {
            tracing::warn!("a database connection was lost; reconnected");
            *conn = fresh;
        }
        Err(e) => {
            tracing::error!(error = %e, "a database connection was lost; reconnecting failed")
        }
    }
}

fn writer_loop(
    mut conn: Box<dyn Conn>,
    backend: &Arc<dyn Backend>,
    rx: Receiver<WriteJob>,
    max_batch: usize,
    metrics: &StoreMetrics,
) {
    let begin = match conn.dialect() {
        Dialect::Sqlite => "BEGIN IMMEDIATE",
        Dialect::Postgres => "BEGIN",
    };
    while let Ok(first) = rx.recv() {
        revive(&mut conn, backend, false);
        let c = conn.as_mut();
        let mut jobs = vec![first];
        while jobs.len() < max_batch {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        metrics.batches.fetch_add(1, Ordering::Relaxed);
        metrics.jobs.fetch_add(jobs.len() as u64, Ordering::Relaxed);
        metrics
            .max_batch_seen
            .fetch_max(jobs.len() as u64, Ordering::Relaxed);
        // The savepoint of the first job opens with the transaction, and each job's release
        // travels with the next job's savepoint: one round trip per job on PostgreSQL.
        if let Err(e) = c.batch(&format!("{begin}; SAVEPOINT job")) {
            tracing::error!(error = %e, "cannot begin a write transaction");
            // Whatever half-began is undone; the jobs are answered with the error.
            let _ = c.batch("ROLLBACK");
            fail_all(jobs, &e, c.dialect());
            continue;
        }
        let n = jobs.len();
        let mut delivers = Vec::with_capacity(n);
        let mut broken: Option<DbError> = None;
        let mut jobs = jobs.into_iter();
        for (i, job) in jobs.by_ref().enumerate() {
            let (ok, deliver) = job(c);
            delivers.push(deliver);
            if !ok {
                metrics.jobs_failed.fetch_add(1, Ordering::Relaxed);
            }
            let tidy = match (ok, i + 1 == n) {
                (true, false) => "RELEASE SAVEPOINT job; SAVEPOINT job",
                (true, true) => "RELEASE SAVEPOINT job",
                (false, false) => "ROLLBACK TO SAVEPOINT job; RELEASE SAVEPOINT job; SAVEPOINT job",
                (false, true) => "ROLLBACK TO SAVEPOINT job; RELEASE SAVEPOINT job",
            };
            if let Err(e) = c.batch(tidy) {
                broken = Some(e);
                break;
            }
        }
        let commit = match broken {
            // A savepoint could not be tidied: the transaction's state is unknown, so none of
            // the batch is kept, and the jobs not run yet are answered with the error too.
            Some(e) => {
                tracing::error!(error = %e, "a savepoint failed; the whole batch is rolled back");
                let _ = c.batch("ROLLBACK"); // Only tidies up: nothing of the batch is kept.
                fail_all(jobs.collect(), &e, c.dialect());
                Err(StoreError::from(e))
            }
            None => {
                let started = Instant::now();
                let commit = c.batch("COMMIT").map_err(StoreError::from);
                metrics
                    .commit_micros_total
                    .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                if let Err(e) = &commit {
                    metrics.commits_failed.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %e, "a group commit failed; no job of its batch is acknowledged");
                    let _ = c.batch("ROLLBACK"); // Already failed; the rollback only tidies up.
                }
                commit
            }
        };
        for d in delivers {
            d(commit.clone());
        }
    }
}

/// Answers jobs that cannot run with `e`.
fn fail_all(jobs: Vec<WriteJob>, e: &DbError, dialect: Dialect) {
    for job in jobs {
        let (_, deliver) = job(&mut FailingConn(e.clone(), dialect));
        deliver(Err(e.clone().into()));
    }
}

/// Runs one write closure that may meet lock contention on PostgreSQL.
///
/// A deadlock victim cannot usefully retry inside its own transaction (it still holds the
/// locks the other side waits for), so nothing is retried here: writes are partitioned by
/// member so one member's writes never meet on two writers, and a request that still loses a
/// deadlock is answered 503 with `Retry-After` for its client to retry. Kept as the one place
/// to change that policy.
pub(crate) fn with_retry<T>(
    c: &mut dyn Conn,
    mut f: impl FnMut(&mut dyn Conn) -> Result<T>,
) -> Result<T> {
    f(c)
}

/// A connection that fails every call: lets a job produce its error answer when the
/// transaction could not even start.
struct FailingConn(DbError, Dialect);

impl Conn for FailingConn {
    fn dialect(&self) -> Dialect {
        self.1
    }
    fn execute(
        &mut self,
        _: &str,
        _: &[crate::conn::Param<'_>],
    ) -> std::result::Result<u64, DbError> {
        Err(self.0.clone())
    }
    fn query(
        &mut self,
        _: &str,
        _: &[crate::conn::Param<'_>],
    ) -> std::result::Result<Vec<crate::conn::Row>, DbError> {
        Err(self.0.clone())
    }
    fn batch(&mut self, _: &str) -> std::result::Result<(), DbError> {
        Err(DbError {
            kind: DbErrorKind::Connection,
            message: self.0.message.clone(),
        })
    }
}
