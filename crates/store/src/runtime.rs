//! The store's threads. Writes go to writer threads over bounded queues; each writer takes
//! whatever is queued (up to a cap), runs it in one transaction with a savepoint per request,
//! commits once, and only then answers every request of the batch (group commit). A request
//! that fails its checks is rolled back to its savepoint alone. Reads go to a pool of reader
//! threads, each with its own connection.

use crate::conn::{Conn, DbError, Dialect};
use crate::error::{Result, StoreError};
use crate::fence::Fence;
use crate::grouped::{Grouped, GroupedJob};
use crate::model::Balance;
use crate::model::PurchaseOutcome;
use crate::together::PurchaseJob;
use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};
use fidelis_core::ProgramSettings;
use fidelis_core::earn::MemberFacts;
use fidelis_core::event::MemberKey;
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
    /// Post a batch's plain purchases together with multi-row statements. Pays on
    /// PostgreSQL, where each statement is a round trip. On SQLite, where a statement costs
    /// little, it pays only for large groups (see `together_from`).
    pub post_together: bool,
    /// The fewest plain purchases a batch must hold for them to be posted together; a smaller
    /// group runs one by one. On SQLite the group's look-ups cost more than a few purchases'
    /// statements: with about 9 purchases a batch (64 connections over HTTP) posting together
    /// was 2 % slower, with hundreds (an import, the batch endpoint, 1,024 tasks in-process)
    /// 10 to 15 % faster (docs/PERFORMANCE.md, 2026-11-25 morning).
    pub together_from: usize,
    /// Read the members' facts that precede events and members' balances on a thread of their
    /// own, many requests' in one query (see `grouped`). Pays on PostgreSQL, where each read
    /// is a round trip to a server process.
    pub group_reads: bool,
}

impl StoreOptions {
    pub fn for_dialect(dialect: Dialect) -> StoreOptions {
        match dialect {
            // One reader per core, at least two (so one long read, a report or an export, does
            // not hold up the balance reads): more reader threads than cores only add hand-offs
            // between threads (on 2 cores, over HTTP: 2 readers against 4, +5 to +14 %
            // purchases/s and up to 17 % less server CPU per operation; reads paced at 5,000/s
            // had the same p99).
            Dialect::Sqlite => StoreOptions {
                writers: 1,
                readers: std::thread::available_parallelism()
                    .map_or(2, |n| n.get())
                    .clamp(2, 8),
                max_batch: 512,
                queue_len: 8192,
                post_together: true,
                together_from: 32,
                group_reads: false,
            },
            // One writer per two cores: more writers split the same requests into smaller
            // batches, and a batch's cost on PostgreSQL is mostly per statement, not per row
            // (on 2 cores, PostgreSQL on the same machine: 1 writer 7,000 purchases/s, 2: 5,400,
            // 4: 4,700).
            Dialect::Postgres => StoreOptions {
                writers: std::thread::available_parallelism()
                    .map_or(1, |n| n.get() / 2)
                    .clamp(1, 16),
                readers: 8,
                max_batch: 256,
                queue_len: 4096,
                post_together: true,
                together_from: 1,
                group_reads: true,
            },
        }
    }
}

/// One request to a writer. Its work may run twice: first without a savepoint, in a pass
/// that is kept only if every request of the batch succeeds, and, if one failed, again with a
/// savepoint of its own. Only the last run's effects and answer count.
trait WriteJob: Send {
    /// Runs the work; `true` when it succeeded.
    fn run(&mut self, c: &mut dyn Conn) -> bool;
    /// Answers with the last run's result once the batch's fate (`commit`) is known.
    fn answer(self: Box<Self>, commit: Result<()>);
    /// A purchase, which the writer may post together with the batch's other purchases.
    fn purchase(&self) -> Option<&PurchaseJob> {
        None
    }
    /// Takes the outcome of this purchase, posted together with others.
    fn posted(&mut self, _outcome: PurchaseOutcome) {}
}

/// A purchase in a writer's queue, with the place its answer goes.
struct PurchaseTask {
    job: PurchaseJob,
    result: Option<Result<(PurchaseOutcome, bool)>>,
    tx: oneshot::Sender<Result<(PurchaseOutcome, bool)>>,
}

impl WriteJob for PurchaseTask {
    fn run(&mut self, c: &mut dyn Conn) -> bool {
        let r = self.job.run_alone(c);
        let r = finished(c, r);
        let ok = r.is_ok();
        self.result = Some(r);
        ok
    }

    fn answer(self: Box<Self>, commit: Result<()>) {
        let _ = self.tx.send(settle(self.result, commit));
    }

    fn purchase(&self) -> Option<&PurchaseJob> {
        Some(&self.job)
    }

    fn posted(&mut self, outcome: PurchaseOutcome) {
        self.result = Some(Ok((outcome, false)));
    }
}

/// A job's result once the statements it deferred (`Conn::defer`) have run: their error, if
/// any, is the job's, so its savepoint undoes it alone. A job that failed keeps its own error
/// (what it deferred is undone with it).
fn finished<T>(c: &mut dyn Conn, r: Result<T>) -> Result<T> {
    let flushed = c.flush();
    let v = r?;
    flushed?;
    Ok(v)
}

/// A request's answer: its result if the batch committed, else the commit's error.
fn settle<T>(result: Option<Result<T>>, commit: Result<()>) -> Result<T> {
    match (result, commit) {
        (Some(Ok(v)), Ok(())) => Ok(v),
        (Some(Err(e)), _) | (_, Err(e)) => Err(e),
        (None, Ok(())) => Err(StoreError::Busy("the request was not run".into())),
    }
}

struct Pending<T, F> {
    f: F,
    result: Option<Result<T>>,
    tx: oneshot::Sender<Result<T>>,
}

impl<T, F> WriteJob for Pending<T, F>
where
    T: Send + 'static,
    F: FnMut(&mut dyn Conn) -> Result<T> + Send + 'static,
{
    fn run(&mut self, c: &mut dyn Conn) -> bool {
        let r = (self.f)(c);
        let r = finished(c, r);
        let ok = r.is_ok();
        self.result = Some(r);
        ok
    }

    fn answer(self: Box<Self>, commit: Result<()>) {
        // The caller may have gone away (client disconnected); the effect stands.
        let _ = self.tx.send(settle(self.result, commit));
    }
}

type ReadJob = Box<dyn FnOnce(&mut dyn Conn) + Send>;

/// Counters the metrics endpoint and the benchmark print.
#[derive(Debug, Default)]
pub struct StoreMetrics {
    pub batches: AtomicU64,
    pub jobs: AtomicU64,
    pub jobs_failed: AtomicU64,
    pub commit_micros_total: AtomicU64,
    /// Time the writers spent running batches (BEGIN to the last statement, before COMMIT):
    /// with `commit_micros_total`, the writer's own cost per write, which a busy machine
    /// disturbs less than throughput.
    pub run_micros_total: AtomicU64,
    pub commits_failed: AtomicU64,
    pub busy_refusals: AtomicU64,
    pub max_batch_seen: AtomicU64,
    /// Batches run a second time, with a savepoint per job, because one of their jobs failed.
    pub replays: AtomicU64,
    /// Syncs of committed batches to disk (SQLite) and the time they took.
    pub syncs: AtomicU64,
    pub sync_micros_total: AtomicU64,
    /// Purchases posted together with others of their batch (multi-row statements).
    pub posted_together: AtomicU64,
    /// Reads held until what they saw was durable (SQLite, see `fence`), and how long.
    pub reads_held: AtomicU64,
    pub read_hold_micros_total: AtomicU64,
    /// Times a writer stopped to start SQLite's WAL over (`Conn::after_commit`), and how long
    /// it was held in all and at most: it copies what the checkpointer had not yet, syncs the
    /// database file and waits for readers of older frames, and runs no batch meanwhile. A try
    /// that a reader still reading older frames put off counts too: the writer was held all
    /// the same.
    pub wal_restarts: AtomicU64,
    pub wal_restart_micros_total: AtomicU64,
    pub wal_restart_micros_max: AtomicU64,
}

struct Inner {
    dialect: Dialect,
    writers: Vec<Sender<Box<dyn WriteJob>>>,
    readers: Sender<ReadJob>,
    metrics: Arc<StoreMetrics>,
    /// The writers whose commits are shown to readers before they are durable (SQLite): a
    /// read is answered once what it saw is (see `fence`).
    fences: Arc<[Arc<Fence>]>,
    /// Where the members' facts are asked for, when they are read many at a time.
    grouped: Option<Sender<GroupedJob>>,
    /// Dropped with the store, which stops the statistics thread (PostgreSQL).
    _statistics: Option<Sender<()>>,
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
            // Migrations are on disk before the store answers anything (on SQLite the writer's
            // commits are synced by the store, not by COMMIT).
            if let Some(mut sync) = c.durability() {
                sync()?;
            }
            first = c;
        }
        let statistics = (dialect == Dialect::Postgres).then(|| keep_statistics(&backend));
        let metrics = Arc::new(StoreMetrics::default());
        let mut writers = Vec::new();
        let mut fences = Vec::new();
        let mut first = Some(first);
        for i in 0..opts.writers.max(1) {
            let mut conn = match first.take() {
                Some(c) => c,
                None => connect(&backend, false)?,
            };
            let (tx, rx) = bounded::<Box<dyn WriteJob>>(opts.queue_len);
            let metrics = metrics.clone();
            let max_batch = opts.max_batch.max(1);
            let synced = match conn.durability() {
                Some(sync) => {
                    let fence = Arc::new(Fence::new());
                    fence.watch(conn.as_mut());
                    fences.push(fence.clone());
                    Some(start_syncer(i, sync, fence, metrics.clone())?)
                }
                None => None,
            };
            std::thread::Builder::new()
                .name(format!("fidelis-writer-{i}"))
                .spawn({
                    let backend = backend.clone();
                    let w = Writer {
                        max_batch,
                        together_from: if opts.post_together {
                            opts.together_from.max(1)
                        } else {
                            usize::MAX
                        },
                        synced,
                    };
                    move || writer_loop(conn, &backend, rx, &w, &metrics)
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
        let grouped = if opts.group_reads {
            let (gtx, grx) = bounded::<GroupedJob>(opts.queue_len);
            let conn = connect(&backend, true)?;
            std::thread::Builder::new()
                .name("fidelis-grouped".into())
                .spawn({
                    let backend = backend.clone();
                    move || crate::grouped::grouped_loop(conn, &backend, grx)
                })
                .map_err(|e| StoreError::Busy(format!("cannot start the grouped reader: {e}")))?;
            Some(gtx)
        } else {
            None
        };
        Ok(Store {
            inner: Arc::new(Inner {
                dialect,
                writers,
                readers: rtx,
                grouped,
                metrics,
                fences: fences.into(),
                _statistics: statistics,
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
    /// `f` may be called twice (see `run_batch`); only the last call's effects are kept, so
    /// it must not act outside the transaction.
    pub async fn write<T, F>(&self, partition: &str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnMut(&mut dyn Conn) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<T>>();
        let job: Box<dyn WriteJob> = Box::new(Pending {
            f,
            result: None,
            tx,
        });
        self.enqueue(partition, job)?;
        rx.await.unwrap_or_else(|_| {
            Err(StoreError::Busy(
                "the writer stopped before answering".into(),
            ))
        })
    }

    /// [`Store::write`] under an idempotency key (if any): the key is claimed, `f` runs, and its
    /// answer is stored with the key in the same transaction; a replay answers `(first, true)`.
    /// `f` gets the tenant.
    pub(crate) async fn write_idem<T, F>(
        &self,
        partition: &str,
        tenant: &str,
        idem: Option<crate::idem::IdemKey>,
        now: i64,
        mut f: F,
    ) -> Result<(T, bool)>
    where
        T: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
        F: FnMut(&mut dyn Conn, &str) -> Result<T> + Send + 'static,
    {
        let tenant = tenant.to_string();
        self.write(partition, move |c| {
            with_retry(c, |c| {
                crate::idem::run(c, &tenant, idem.as_ref(), now, |c| f(c, &tenant))
            })
        })
        .await
    }

    /// Posts a purchase in the next group commit of its member's writer, together with the
    /// other plain purchases of the batch where it can be (see `together`).
    pub(crate) async fn write_purchase(
        &self,
        partition: &str,
        job: PurchaseJob,
    ) -> Result<(PurchaseOutcome, bool)> {
        let (tx, rx) = oneshot::channel();
        self.enqueue(
            partition,
            Box::new(PurchaseTask {
                job,
                result: None,
                tx,
            }),
        )?;
        rx.await.unwrap_or_else(|_| {
            Err(StoreError::Busy(
                "the writer stopped before answering".into(),
            ))
        })
    }

    fn enqueue(&self, partition: &str, job: Box<dyn WriteJob>) -> Result<()> {
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
        Ok(())
    }

    /// What earning may know of the member `key` names (None: not enrolled); many events'
    /// in one query where the store groups reads (`StoreOptions::group_reads`).
    pub async fn member_facts(&self, tenant: &str, key: &MemberKey) -> Result<Option<MemberFacts>> {
        let Some(grouped) = &self.inner.grouped else {
            let (tenant, key) = (tenant.to_string(), key.clone());
            // Not held by the fences: the event's answer waits for a sync that covers this.
            return self
                .read_unfenced(move |c| crate::members::facts(c, &tenant, &key))
                .await;
        };
        let (reply, rx) = oneshot::channel();
        let key = key.clone();
        self.ask_grouped(grouped, tenant, Grouped::Facts { key, reply }, rx)
            .await
    }

    /// A member's balance, with the points that expire next; many members' in one query where
    /// the store groups reads (`StoreOptions::group_reads`).
    pub async fn balance(
        &self,
        tenant: &str,
        member: &str,
        settings: ProgramSettings,
    ) -> Result<Balance> {
        let Some(grouped) = &self.inner.grouped else {
            let (tenant, member) = (tenant.to_string(), member.to_string());
            // Held only for the commits that changed this member's row (see `fence`).
            return self
                .read_row(move |c| {
                    crate::ledger::balance_of_row(c, &tenant, &member, &settings)
                        .map(|(b, row)| (b, Some(row)))
                })
                .await;
        };
        let (reply, rx) = oneshot::channel();
        let (member, settings) = (member.to_string(), Box::new(settings));
        let read = Grouped::Balance {
            member,
            settings,
            reply,
        };
        let balance = self.ask_grouped(grouped, tenant, read, rx).await?;
        // Numbered after the answer, which is later than the read: never too little.
        self.hold(self.seen()).await?;
        Ok(balance)
    }

    async fn ask_grouped<T>(
        &self,
        queue: &Sender<GroupedJob>,
        tenant: &str,
        read: Grouped,
        answer: oneshot::Receiver<Result<T>>,
    ) -> Result<T> {
        let tenant = tenant.to_string();
        self.ask_reader(queue, GroupedJob { tenant, read }, answer)
            .await
    }

    /// Runs `f` on a reader connection (a snapshot of what has been committed) and answers
    /// once what it read is durable (see `fence`).
    pub async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut dyn Conn) -> Result<T> + Send + 'static,
    {
        if self.inner.fences.is_empty() {
            return self.read_unfenced(f).await;
        }
        let fences = self.inner.fences.clone();
        self.read_held(move |c| {
            let value = f(c);
            // After the read: every commit it saw was numbered by then.
            (value, fences.iter().map(|f| f.seen()).collect())
        })
        .await
    }

    /// Runs `f` on a reader and holds its answer, an error too (a member "not found" because
    /// of an erasure not yet durable), until what `f` says it may have seen (one number per
    /// fence) is durable.
    async fn read_held<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut dyn Conn) -> (Result<T>, Vec<u64>) + Send + 'static,
    {
        let (value, seen) = self.read_unfenced(move |c| Ok(f(c))).await?;
        self.hold(seen).await?;
        value
    }

    /// Runs `f`, a read of one member's row (its id as `f` answers it; None: no row found),
    /// and holds its answer only for the commits that changed that row (see `fence`).
    pub(crate) async fn read_row<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut dyn Conn) -> Result<(T, Option<i64>)> + Send + 'static,
    {
        let fences = self.inner.fences.clone();
        self.read_held(move |c| {
            let (value, row) = match f(c) {
                Ok((value, row)) => (Ok(value), row),
                Err(e) => (Err(e), None),
            };
            (value, fences.iter().map(|f| f.seen_row(row)).collect())
        })
        .await
    }

    /// Numbers published so far, one per fence: what a read that has run may have seen.
    fn seen(&self) -> Vec<u64> {
        self.inner.fences.iter().map(|f| f.seen()).collect()
    }

    /// Holds a read's answer until what it may have seen (`seen`, one number per fence) is
    /// durable.
    async fn hold(&self, seen: Vec<u64>) -> Result<()> {
        let started = Instant::now();
        let mut held = false;
        for (fence, seen) in self.inner.fences.iter().zip(seen) {
            held |= fence.wait(seen).await?;
        }
        if held {
            let m = &self.inner.metrics;
            m.reads_held.fetch_add(1, Ordering::Relaxed);
            m.read_hold_micros_total
                .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    /// [`Store::read`] answered at once, even with what is not yet durable: only for reads
    /// that prepare a write, whose own answer waits for a sync covering what they saw.
    async fn read_unfenced<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut dyn Conn) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<T>>();
        let job: ReadJob = Box::new(move |c: &mut dyn Conn| {
            // See `write`: a caller that left does not need its answer.
            let _ = tx.send(f(c));
        });
        self.ask_reader(&self.inner.readers, job, rx).await
    }

    /// Queues a read job (a full queue answers busy at once) and waits for its answer.
    async fn ask_reader<J, T>(
        &self,
        queue: &Sender<J>,
        job: J,
        answer: oneshot::Receiver<Result<T>>,
    ) -> Result<T> {
        match queue.try_send(job) {
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
        answer.await.unwrap_or_else(|_| {
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

/// The tables every purchase reads and writes.
const HOT_TABLES: &str =
    "members, orders, events, txns, entries, lots, awards, idempotency, rule_counters";

/// The hot tables looked up by key on the write path (a batch's members and orders, a
/// request's idempotency key, a chunk's rule counters): those whose statistics are kept as
/// they grow. Analyzing the others (events, with their payloads, most) cost 9 % of the
/// machine's CPU under the benchmark, for plans that do not depend on their size. Without
/// them a capped campaign's counters, looked up a chunk at a time by an array of keys, were
/// found by reading every counter of the tenant (the plan made while the table was empty).
const KEYED_TABLES: &str = "members, orders, idempotency, rule_counters";

/// How often the statistics thread looks for hot tables that have grown.
const STATISTICS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Keeps PostgreSQL's statistics of the hot tables up to date, off the request path: all of
/// them at start, then each one looked up by key ([`KEYED_TABLES`]) whose live rows have
/// doubled (and grown by 1,000) since its last `ANALYZE`. Without them (a new database, a new tenant, rows loaded in bulk a moment
/// ago) the planner takes a tenant for a handful of rows, and a prepared statement's generic
/// plan, made then and kept, reads every order of the tenant to find the few of a batch: the
/// orders check of a new database's first batches took 3 ms for 30 orders. `ANALYZE` also
/// makes every connection plan its statements again. Autovacuum does the same, but looks once
/// a minute and only after a tenth of the table has changed (the members' balance updates
/// count, so it analyzes the members table often and the growing tables late). Runs until
/// the returned sender (kept by the store) is dropped.
fn keep_statistics(backend: &Arc<dyn Backend>) -> Sender<()> {
    let (stop, stopped) = bounded::<()>(0);
    let backend = backend.clone();
    let spawned = std::thread::Builder::new()
        .name("fidelis-analyze".into())
        .spawn(move || {
            let mut conn: Option<Box<dyn Conn>> = None;
            let mut first = true;
            loop {
                let c = match conn.as_mut() {
                    Some(c) => c,
                    None => match backend.connect(false) {
                        Ok(c) => conn.insert(c),
                        Err(e) => {
                            tracing::warn!(error = %e, "the statistics thread cannot connect; autovacuum will keep them");
                            return;
                        }
                    },
                };
                let done = if first {
                    c.batch(&format!("ANALYZE {HOT_TABLES}"))
                } else {
                    analyze_grown(c.as_mut())
                };
                first = false;
                if let Err(e) = done {
                    tracing::warn!(error = %e, "updating the planner's statistics failed; autovacuum will");
                    conn = None;
                }
                if stopped.recv_timeout(STATISTICS_EVERY)
                    != Err(crossbeam_channel::RecvTimeoutError::Timeout)
                {
                    return;
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the statistics thread; autovacuum will keep them");
    }
    stop
}

/// Analyzes the [`KEYED_TABLES`] whose live rows have doubled, and grown by 1,000, since their last
/// `ANALYZE` (never analyzed counts as none).
fn analyze_grown(c: &mut dyn Conn) -> std::result::Result<(), DbError> {
    let names: Vec<String> = KEYED_TABLES.split(", ").map(|t| format!("'{t}'")).collect();
    let grown = c.query(
        &format!(
            "SELECT s.relname::text FROM pg_stat_user_tables s JOIN pg_class k ON k.oid = s.relid WHERE s.schemaname = current_schema() AND s.relname IN ({}) AND s.n_live_tup > 2 * GREATEST(k.reltuples, 0) + 1000 ORDER BY 1",
            names.join(", ")
        ),
        &[],
    )?;
    if grown.is_empty() {
        return Ok(());
    }
    let tables: Vec<String> = grown.iter().map(|r| r.text(0)).collect();
    tracing::debug!(tables = %tables.join(", "), "hot tables grew; analyzing them");
    c.batch(&format!("ANALYZE {}", tables.join(", ")))
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
/// still away the old one stays, and the next request fails and tries again. True when the
/// connection was replaced.
pub(crate) fn revive(
    conn: &mut Box<dyn Conn>,
    backend: &Arc<dyn Backend>,
    read_only: bool,
) -> bool {
    if !conn.is_broken() {
        return false;
    }
    match backend.connect(read_only) {
        Ok(fresh) => {
            tracing::warn!("a database connection was lost; reconnected");
            *conn = fresh;
            true
        }
        Err(e) => {
            tracing::error!(error = %e, "a database connection was lost; reconnecting failed");
            false
        }
    }
}

/// How a writer thread works.
struct Writer {
    max_batch: usize,
    /// The fewest plain purchases posted together (`usize::MAX`: never).
    together_from: usize,
    /// Where committed batches wait for their commit to be made durable (SQLite), if COMMIT
    /// alone is not.
    synced: Option<Syncer>,
}

/// A writer's syncer: committed batches go to it with the number the writer took from the
/// fence before their COMMIT, and it settles the fence once they are on disk.
struct Syncer {
    committed: Sender<Committed>,
    fence: Arc<Fence>,
}

/// A committed batch and its number (no jobs: a batch rolled back or a COMMIT that failed,
/// whose number must still be passed so the fence moves past it).
type Committed = (u64, Vec<Box<dyn WriteJob>>);

/// Starts the thread that makes a writer's commits durable and only then answers them: it
/// takes every batch committed since its last sync, syncs once, and answers them all. The
/// writer meanwhile runs the next batch, so the disk's flush and the next batch's work
/// overlap (a pipelined group commit).
fn start_syncer(
    i: usize,
    mut sync: crate::conn::Sync,
    fence: Arc<Fence>,
    metrics: Arc<StoreMetrics>,
) -> Result<Syncer> {
    let (tx, rx) = bounded::<Committed>(64);
    let marks = fence.clone();
    std::thread::Builder::new()
        .name(format!("fidelis-sync-{i}"))
        .spawn(move || {
            while let Ok((mut upto, first)) = rx.recv() {
                let mut batches = vec![first];
                while let Ok((n, more)) = rx.try_recv() {
                    upto = upto.max(n);
                    batches.push(more);
                }
                let started = Instant::now();
                let synced = sync().map_err(StoreError::from);
                metrics.syncs.fetch_add(1, Ordering::Relaxed);
                metrics
                    .sync_micros_total
                    .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                if let Err(e) = &synced {
                    // Committed but not known to be on disk: nobody is told it succeeded.
                    tracing::error!(error = %e, "syncing committed writes failed; their requests are answered with the error");
                }
                // Readers first, so a client told of its write reads it without waiting.
                marks.settle(upto, synced.is_ok());
                for job in batches.into_iter().flatten() {
                    job.answer(synced.clone());
                }
            }
        })
        .map_err(|e| StoreError::Busy(format!("cannot start the syncer: {e}")))?;
    Ok(Syncer {
        committed: tx,
        fence,
    })
}

fn writer_loop(
    mut conn: Box<dyn Conn>,
    backend: &Arc<dyn Backend>,
    rx: Receiver<Box<dyn WriteJob>>,
    w: &Writer,
    metrics: &StoreMetrics,
) {
    let (max_batch, together_from) = (w.max_batch, w.together_from);
    let begin = match conn.dialect() {
        Dialect::Sqlite => "BEGIN IMMEDIATE",
        Dialect::Postgres => "BEGIN",
    };
    while let Ok(first) = rx.recv() {
        if revive(&mut conn, backend, false)
            && let Some(s) = &w.synced
        {
            s.fence.watch(conn.as_mut());
        }
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
        let ran = Instant::now();
        let outcome = run_batch(c, begin, &mut jobs, together_from, metrics);
        metrics
            .run_micros_total
            .fetch_add(ran.elapsed().as_micros() as u64, Ordering::Relaxed);
        // Numbered before COMMIT shows the batch to readers (see `fence`); a batch rolled
        // back is numbered too, as rows it changed were marked with the number.
        let number = w.synced.as_ref().map(|s| s.fence.publish());
        let commit = match outcome {
            Ok(()) => {
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
            Err(e) => {
                let _ = c.batch("ROLLBACK"); // Only tidies up: nothing of the batch is kept.
                Err(StoreError::from(e))
            }
        };
        let committed = commit.is_ok();
        match (&w.synced, number, commit) {
            // Answered once the commit is on disk.
            (Some(s), Some(n), Ok(())) => {
                if let Err(e) = s.committed.send((n, jobs)) {
                    for job in e.into_inner().1 {
                        job.answer(Err(StoreError::Busy("the syncer has stopped".into())));
                    }
                }
            }
            (s, n, commit) => {
                // A numbered batch that did not commit showed nothing; its number goes through
                // the syncer all the same, in order, so the fence moves past it.
                if let (Some(s), Some(n)) = (s, n) {
                    let _ = s.committed.send((n, Vec::new()));
                }
                for job in jobs {
                    job.answer(commit.clone());
                }
            }
        }
        if committed {
            let started = Instant::now();
            if c.after_commit() {
                let micros = started.elapsed().as_micros() as u64;
                metrics.wal_restarts.fetch_add(1, Ordering::Relaxed);
                metrics
                    .wal_restart_micros_total
                    .fetch_add(micros, Ordering::Relaxed);
                metrics
                    .wal_restart_micros_max
                    .fetch_max(micros, Ordering::Relaxed);
            }
        }
    }
}

/// Runs the batch, its plain purchases posted together first, the other purchases bare and
/// every other job under a savepoint of its own; `None` when a purchase failed after writing
/// (or the purchases' group, or a savepoint failed) and the pass must be undone. Answers how
/// many purchases were posted together.
fn fast_pass(
    c: &mut dyn Conn,
    jobs: &mut [Box<dyn WriteJob>],
    together_from: usize,
    metrics: &StoreMetrics,
) -> Option<u64> {
    let mut done = vec![false; jobs.len()];
    let (at, group): (Vec<usize>, Vec<&PurchaseJob>) = jobs
        .iter()
        .enumerate()
        .filter_map(|(i, j)| j.purchase().map(|p| (i, p)))
        .unzip();
    if !group.is_empty() && group.len() >= together_from {
        // What the group deferred is sent now, so its error is the group's.
        let posted = crate::together::write_together(c, &group)
            .and_then(|outcomes| c.flush().map(|()| outcomes).map_err(Into::into));
        match posted {
            Ok(outcomes) => {
                for (k, outcome) in outcomes.into_iter().enumerate() {
                    if let Some(o) = outcome {
                        jobs[at[k]].posted(o);
                        done[at[k]] = true;
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "purchases posted together failed; the batch runs again one by one");
                return None;
            }
        }
    }
    let together = done.iter().filter(|d| **d).count() as u64;
    // Purchases nearly always succeed and run bare. Other jobs (redemptions, refunds, coupon
    // burns, adjustments...) are refused often enough (points short, a coupon already used)
    // that each runs under a savepoint: one refused is undone alone and the pass goes on, where
    // it used to send the whole batch round again. SQLite copies every page first written
    // while a savepoint is open, so there it is released at once; on PostgreSQL, where it
    // costs a round trip and nothing else, it is released with the next one's opening, the
    // last by the commit.
    let release_at_once = c.dialect() == crate::conn::Dialect::Sqlite;
    let mut open = false;
    for (j, done) in jobs.iter_mut().zip(done) {
        if done {
            continue;
        }
        if j.purchase().is_some() {
            let before = c.may_have_written();
            if !j.run(c) {
                // Refused before it wrote anything (most refusals are: an order id recorded
                // with another member or total, a member who may not earn), the purchase left
                // the transaction as it found it, and the pass goes on without it.
                if before.is_some() && c.may_have_written() == before {
                    metrics.jobs_failed.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                return None;
            }
            continue;
        }
        // On PostgreSQL the opening is held and sent with the job's first statement (a
        // round trip less per job); an error in it then fails the job and its tidying.
        let opening: &[&str] = if open {
            &["RELEASE SAVEPOINT job", "SAVEPOINT job"]
        } else {
            &["SAVEPOINT job"]
        };
        if release_at_once {
            c.batch(opening[0]).ok()?;
        } else {
            for s in opening {
                c.defer(s, &[]).ok()?;
            }
        }
        open = j.run(c);
        if !open {
            metrics.jobs_failed.fetch_add(1, Ordering::Relaxed);
            c.batch("ROLLBACK TO SAVEPOINT job; RELEASE SAVEPOINT job")
                .ok()?;
        } else if release_at_once {
            c.batch("RELEASE SAVEPOINT job").ok()?;
            open = false;
        }
    }
    Some(together)
}

/// Runs a batch inside one transaction and leaves it ready to commit; an `Err` means the
/// transaction is unusable and nothing of the batch may be kept.
///
/// The fast pass runs the purchases back to back without savepoints: a savepoint per job costs
/// a statement and a copy of every page the job touches, and purchases nearly always succeed;
/// the other jobs, refused more often, run under a savepoint each (see `fast_pass`). A purchase
/// refused before it wrote anything is simply left out. If a purchase fails after writing, the
/// pass is rolled back and the batch runs again with a savepoint per job, so the failing job is
/// undone alone and its neighbours go on.
fn run_batch(
    c: &mut dyn Conn,
    begin: &str,
    jobs: &mut [Box<dyn WriteJob>],
    together_from: usize,
    metrics: &StoreMetrics,
) -> std::result::Result<(), DbError> {
    // On PostgreSQL BEGIN is held and sent with the batch's first statement (a round trip
    // less per batch); SQLite takes its write lock here, before anything runs.
    let began = match c.dialect() {
        Dialect::Postgres => c.defer(begin, &[]),
        Dialect::Sqlite => c.batch(begin),
    };
    began.inspect_err(|e| tracing::error!(error = %e, "cannot begin a write transaction"))?;
    if let Some(together) = fast_pass(c, jobs, together_from, metrics) {
        metrics
            .posted_together
            .fetch_add(together, Ordering::Relaxed);
        return Ok(());
    }
    metrics.replays.fetch_add(1, Ordering::Relaxed);
    c.batch("ROLLBACK")?;
    // The savepoint of the first job opens with the transaction, and each job's release
    // travels with the next job's savepoint: one round trip per job on PostgreSQL.
    c.batch(&format!("{begin}; SAVEPOINT job"))?;
    let n = jobs.len();
    for (i, job) in jobs.iter_mut().enumerate() {
        let ok = job.run(c);
        if !ok {
            metrics.jobs_failed.fetch_add(1, Ordering::Relaxed);
        }
        let tidy = match (ok, i + 1 == n) {
            (true, false) => "RELEASE SAVEPOINT job; SAVEPOINT job",
            (true, true) => "RELEASE SAVEPOINT job",
            (false, false) => "ROLLBACK TO SAVEPOINT job; RELEASE SAVEPOINT job; SAVEPOINT job",
            (false, true) => "ROLLBACK TO SAVEPOINT job; RELEASE SAVEPOINT job",
        };
        // A savepoint that cannot be tidied leaves the transaction's state unknown: none of
        // the batch is kept, and every job is answered with the error.
        c.batch(tidy).inspect_err(
            |e| tracing::error!(error = %e, "a savepoint failed; the whole batch is rolled back"),
        )?;
    }
    Ok(())
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
