//! The storage floor: what this machine's disk and SQLite allow for a purchase written as
//! narrowly as a ledger could write it, with none of Fidelis's logic (`fidelis bench
//! --storage-floor`).
//!
//! A purchase here is three statements: its order id into a key-only table (the duplicate
//! check), one row into an append-only table with one index by member (the member's history),
//! and its member's balances updated. That is four B-tree writes, against the dozen and a half
//! the ledger makes (event, order, transaction, two entries, lot, award, their indexes, and the
//! member row; see docs/PERFORMANCE.md). The file is set up as the store sets up its own: WAL,
//! `synchronous = FULL` (each COMMIT syncs the WAL before it returns, so every purchase counted
//! is durable), an 8 MB page cache, copies back into the database file on a thread of their
//! own, and the WAL started over by the writer once it holds the store's `RESTART_FRAMES`.
//!
//! The figures bound what a narrower ledger could reach on this machine: the engine's writer
//! can be no faster per purchase than this with the same number of purchases per commit.

use rusqlite::{Connection, OpenFlags, params};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often the copying thread checkpoints while purchases come in (the store's pace).
const COPY_EVERY: Duration = Duration::from_millis(40);

/// What to measure.
#[derive(Clone, Debug)]
pub struct FloorOptions {
    /// A folder for the measuring files (removed at the end).
    pub dir: PathBuf,
    /// Members whose rows purchases update, at random.
    pub members: usize,
    /// Purchases per commit, one step each, run in this order on one growing database.
    pub per_commit: Vec<usize>,
    /// How long each step (and the sync measurement) runs.
    pub step: Duration,
}

/// `fdatasync` after an overwrite of one 4 KiB page.
#[derive(Clone, Debug)]
pub struct SyncFigures {
    pub syncs: u64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

/// What the disk takes in a second, written as the store writes: appends synced every MiB (a
/// WAL's commits), and 4 KiB pages at random places synced every 256 (a checkpoint's copies
/// into the database file).
#[derive(Clone, Debug)]
pub struct WriteFigures {
    pub sequential_mb_s: f64,
    pub random_pages_s: f64,
}

/// One step: purchases written N per durable commit.
#[derive(Clone, Debug)]
pub struct FloorStep {
    pub per_commit: usize,
    pub purchases: u64,
    pub commits: u64,
    pub seconds: f64,
    pub per_second: f64,
    /// The writing thread's CPU per purchase (None off Linux).
    pub writer_cpu_us: Option<f64>,
    /// The copying thread's CPU per purchase (None off Linux).
    pub copier_cpu_us: Option<f64>,
    /// Mean time of a COMMIT, which includes its WAL sync.
    pub commit_ms_mean: f64,
    /// Times the writer started the WAL over.
    pub wal_restarts: u64,
}

#[derive(Clone, Debug)]
pub struct Floor {
    pub sync: SyncFigures,
    pub writes: WriteFigures,
    pub steps: Vec<FloorStep>,
    /// Purchases in the table at the end.
    pub purchases: u64,
    pub database_mb: f64,
}

/// Measures; the folder's measuring files are removed whatever the outcome.
pub fn measure(o: &FloorOptions) -> Result<Floor, String> {
    if o.members == 0 {
        return Err("the storage floor needs at least one member".into());
    }
    if o.per_commit.contains(&0) {
        return Err("purchases per commit must be at least 1".into());
    }
    std::fs::create_dir_all(&o.dir).map_err(|e| format!("{}: {e}", o.dir.display()))?;
    let db = o
        .dir
        .join(format!("fidelis-floor-{}.db", std::process::id()));
    let sync_file = o
        .dir
        .join(format!("fidelis-floor-{}.sync", std::process::id()));
    let result = measure_sync(&sync_file, o.step).and_then(|sync| {
        let writes = measure_writes(&sync_file, o.step)?;
        let (steps, purchases, size) = measure_steps(&db, o)?;
        Ok(Floor {
            sync,
            writes,
            steps,
            purchases,
            database_mb: size as f64 / (1 << 20) as f64,
        })
    });
    for f in [
        sync_file,
        db.clone(),
        suffixed(&db, "-wal"),
        suffixed(&db, "-shm"),
    ] {
        let _ = std::fs::remove_file(f);
    }
    result
}

fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// A measuring file, empty.
fn scratch(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(path)
}

/// Overwrites pages of a 1 MiB file in turn, each followed by `fdatasync`, as a WAL that has
/// started over is written.
fn measure_sync(path: &Path, how_long: Duration) -> Result<SyncFigures, String> {
    use std::io::{Seek, SeekFrom, Write};
    let io = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut f = scratch(path).map_err(io)?;
    let page = [0x5au8; 4096];
    for _ in 0..256 {
        f.write_all(&page).map_err(io)?;
    }
    f.sync_all().map_err(io)?;
    let mut times = Vec::new();
    let start = Instant::now();
    while start.elapsed() < how_long || times.len() < 10 {
        let i = times.len() as u64 % 256;
        f.seek(SeekFrom::Start(i * 4096)).map_err(io)?;
        f.write_all(&page).map_err(io)?;
        let t = Instant::now();
        f.sync_data().map_err(io)?;
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    Ok(SyncFigures {
        syncs: times.len() as u64,
        mean_us: times.iter().sum::<f64>() / times.len() as f64,
        p50_us: at(0.5),
        p99_us: at(0.99),
    })
}

/// The file [`measure_writes`] writes in, at most (it wraps around).
const WRITE_SPAN: u64 = 256 << 20;

/// Half of `how_long` appending 1 MiB at a time with a sync after each (wrapping at
/// [`WRITE_SPAN`]), then half writing 4 KiB pages at random places of what was written, 256
/// between syncs.
fn measure_writes(path: &Path, how_long: Duration) -> Result<WriteFigures, String> {
    use std::io::{Seek, SeekFrom, Write};
    let io = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut f = scratch(path).map_err(io)?;
    let chunk = vec![0xa5u8; 1 << 20];
    let half = how_long / 2;
    let (mut written, mut at) = (0u64, 0u64);
    let start = Instant::now();
    while start.elapsed() < half || written < 8 << 20 {
        f.seek(SeekFrom::Start(at)).map_err(io)?;
        f.write_all(&chunk).map_err(io)?;
        f.sync_data().map_err(io)?;
        written += chunk.len() as u64;
        at = (at + chunk.len() as u64) % WRITE_SPAN;
    }
    let sequential_mb_s = written as f64 / (1 << 20) as f64 / start.elapsed().as_secs_f64();
    let pages_in_file = written.min(WRITE_SPAN) / 4096;
    let page = [0x3cu8; 4096];
    let mut draw = Draw(0xC0FF_EE00 ^ written);
    let mut pages = 0u64;
    let start = Instant::now();
    while start.elapsed() < half || pages < 256 {
        for _ in 0..256 {
            f.seek(SeekFrom::Start(draw.next() % pages_in_file * 4096))
                .map_err(io)?;
            f.write_all(&page).map_err(io)?;
        }
        f.sync_data().map_err(io)?;
        pages += 256;
    }
    Ok(WriteFigures {
        sequential_mb_s,
        random_pages_s: pages as f64 / start.elapsed().as_secs_f64(),
    })
}

const SCHEMA: &str = "
CREATE TABLE members (id INTEGER PRIMARY KEY, external_id TEXT NOT NULL, points INTEGER NOT NULL,
  spend_minor INTEGER NOT NULL, last_purchase INTEGER);
CREATE TABLE orders (order_id TEXT PRIMARY KEY, purchase_id INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE purchases (id INTEGER PRIMARY KEY, member_id INTEGER NOT NULL, order_id TEXT NOT NULL,
  occurred_at INTEGER NOT NULL, total_minor INTEGER NOT NULL, points INTEGER NOT NULL,
  remaining INTEGER NOT NULL, expires_at INTEGER, payload TEXT NOT NULL);
CREATE INDEX purchases_by_member ON purchases (member_id, id);
";

/// About what an event's payload and lines take in the ledger.
pub const PAYLOAD: &str = r#"{"channel":"store","store_id":"paris-11","lines":[{"sku":"SKU-10442","qty":2,"unit_minor":1299,"category":"grocery"},{"sku":"SKU-20917","qty":1,"unit_minor":4599,"category":"home"}]}"#;

fn open(db: &Path) -> Result<Connection, String> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(db, flags).map_err(|e| e.to_string())?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000;
         PRAGMA cache_size = -8000; PRAGMA wal_autocheckpoint = 0;",
    )
    .map_err(|e| e.to_string())?;
    Ok(conn)
}

/// A small generator, so the floor needs no dependency: splitmix64. PostgreSQL's floor
/// (`fidelis::floor_pg`) draws its purchases from it too, so both write the same ones.
pub struct Draw(u64);

/// One purchase of the floor's: a member among `1..=members`, a random order id, a total of
/// 1.00 to 200.99, a point per 1.00.
pub struct DrawnPurchase {
    pub member_id: i64,
    pub order_id: String,
    pub total_minor: i64,
    pub points: i64,
}

impl Draw {
    /// The same sequence for the same number of members.
    pub fn for_members(members: usize) -> Draw {
        Draw(0x5EED_F100_u64 ^ members as u64)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn purchase(&mut self, members: usize) -> DrawnPurchase {
        let r = self.next();
        let total_minor = (r >> 40) as i64 % 20_000 + 100;
        DrawnPurchase {
            member_id: (r % members.max(1) as u64) as i64 + 1,
            order_id: format!("{:016x}", self.next()),
            total_minor,
            points: total_minor / 100,
        }
    }
}

/// A purchase's time in the floor: the `n`th purchase, a millisecond after the one before.
pub fn occurred_at(n: u64) -> i64 {
    1_790_000_000_000 + n as i64
}

/// Points expire three years after they were earned (PostgreSQL's statement says the same).
const EXPIRES_AFTER_MS: i64 = 3 * 365 * 86_400_000;

fn measure_steps(db: &Path, o: &FloorOptions) -> Result<(Vec<FloorStep>, u64, u64), String> {
    let e = |e: rusqlite::Error| e.to_string();
    let conn = open(db)?;
    conn.execute_batch(SCHEMA).map_err(e)?;
    // The WAL's length after each commit, as the store's writer learns it.
    conn.wal_hook(Some(super::note_wal_frames));
    {
        let tx = conn.unchecked_transaction().map_err(e)?;
        let mut add = tx
            .prepare(
                "INSERT INTO members (id, external_id, points, spend_minor) VALUES (?1, ?2, 0, 0)",
            )
            .map_err(e)?;
        for id in 1..=o.members as i64 {
            add.execute(params![id, format!("member-{id:08}")])
                .map_err(e)?;
        }
        drop(add);
        tx.commit().map_err(e)?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let copier_tid = Arc::new(AtomicU64::new(0));
    let copier = {
        let (stop, db, tid) = (stop.clone(), db.to_path_buf(), copier_tid.clone());
        std::thread::Builder::new()
            .name("floor-copier".into())
            .spawn(move || copy_until(&db, &stop, &tid))
            .map_err(|e| e.to_string())?
    };
    // Its CPU is read from its first step on: wait, briefly, for it to say which thread it is.
    let waiting = Instant::now();
    while copier_tid.load(Ordering::Relaxed) == 0 && waiting.elapsed() < Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let copier_cpu_ns = || match copier_tid.load(Ordering::Relaxed) {
        0 => None,
        tid => schedstat_ns(&format!("/proc/self/task/{tid}/schedstat")),
    };
    let mut draw = Draw::for_members(o.members);
    let mut steps: Vec<FloorStep> = Vec::new();
    let mut outcome = Ok(());
    for &n in &o.per_commit {
        let copier_before = copier_cpu_ns();
        let written = steps.iter().map(|s| s.purchases).sum();
        match step(&conn, n, o, &mut draw, written) {
            Ok(mut s) => {
                if let (Some(a), Some(b)) = (copier_before, copier_cpu_ns()) {
                    s.copier_cpu_us =
                        Some(b.saturating_sub(a) as f64 / 1e3 / s.purchases.max(1) as f64);
                }
                steps.push(s);
            }
            Err(err) => {
                outcome = Err(err);
                break;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = copier.join();
    outcome?;
    let purchases: i64 = conn
        .query_row("SELECT COUNT(*) FROM purchases", [], |r| r.get(0))
        .map_err(e)?;
    let size = std::fs::metadata(db).map(|m| m.len()).unwrap_or(0);
    Ok((steps, purchases as u64, size))
}

fn step(
    conn: &Connection,
    per_commit: usize,
    o: &FloorOptions,
    draw: &mut Draw,
    written: u64,
) -> Result<FloorStep, String> {
    let e = |e: rusqlite::Error| e.to_string();
    let cpu_before = thread_cpu_ns();
    let start = Instant::now();
    let (mut purchases, mut commits, mut restarts) = (0u64, 0u64, 0u64);
    let mut commit_time = Duration::ZERO;
    while start.elapsed() < o.step {
        conn.execute_batch("BEGIN").map_err(e)?;
        {
            let mut order = conn
                .prepare_cached("INSERT INTO orders (order_id, purchase_id) VALUES (?1, ?2)")
                .map_err(e)?;
            let mut row = conn
                .prepare_cached(
                    "INSERT INTO purchases (member_id, order_id, occurred_at, total_minor, points, remaining, expires_at, payload) VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6, ?7)",
                )
                .map_err(e)?;
            let mut member = conn
                .prepare_cached(
                    "UPDATE members SET points = points + ?1, spend_minor = spend_minor + ?2, last_purchase = ?3 WHERE id = ?4",
                )
                .map_err(e)?;
            for _ in 0..per_commit {
                let p = draw.purchase(o.members);
                let at = occurred_at(written + purchases);
                row.execute(params![
                    p.member_id,
                    p.order_id,
                    at,
                    p.total_minor,
                    p.points,
                    at + EXPIRES_AFTER_MS,
                    PAYLOAD
                ])
                .map_err(e)?;
                let id = conn.last_insert_rowid();
                order.execute(params![p.order_id, id]).map_err(e)?;
                member
                    .execute(params![p.points, p.total_minor, id, p.member_id])
                    .map_err(e)?;
                purchases += 1;
            }
        }
        let t = Instant::now();
        conn.execute_batch("COMMIT").map_err(e)?;
        commit_time += t.elapsed();
        commits += 1;
        if super::WAL_FRAMES.get() >= super::RESTART_FRAMES {
            // Busy (1) while the copying thread holds the checkpoint: tried again next commit.
            let busy: i64 = conn
                .query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| r.get(0))
                .map_err(e)?;
            restarts += u64::from(busy == 0);
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let writer_cpu_us = match (cpu_before, thread_cpu_ns()) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / 1e3 / purchases.max(1) as f64),
        _ => None,
    };
    Ok(FloorStep {
        per_commit,
        purchases,
        commits,
        seconds,
        per_second: purchases as f64 / seconds,
        writer_cpu_us,
        copier_cpu_us: None,
        commit_ms_mean: commit_time.as_secs_f64() * 1e3 / commits.max(1) as f64,
        wal_restarts: restarts,
    })
}

/// The copying thread: a PASSIVE checkpoint every [`COPY_EVERY`], off the writer's path, as
/// the store's checkpointer. It gives its thread id, so its CPU can be read.
fn copy_until(db: &Path, stop: &AtomicBool, tid: &AtomicU64) {
    tid.store(thread_id(), Ordering::Relaxed);
    let Ok(conn) = open(db) else { return };
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(COPY_EVERY);
        let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(0));
    }
}

/// This thread's time on a CPU, from `/proc` (Linux only).
fn thread_cpu_ns() -> Option<u64> {
    schedstat_ns("/proc/thread-self/schedstat")
}

fn schedstat_ns(path: &str) -> Option<u64> {
    std::fs::read_to_string(path)
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The calling thread's id as `/proc` names it (its `/proc/thread-self` link), 0 elsewhere.
fn thread_id() -> u64 {
    std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name()?.to_str()?.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_writes_every_purchase_it_counts_and_cleans_up() {
        let dir = std::env::temp_dir().join(format!("fidelis-floor-test-{}", std::process::id()));
        let floor = measure(&FloorOptions {
            dir: dir.clone(),
            members: 50,
            per_commit: vec![1, 7],
            step: Duration::from_millis(150),
        })
        .expect("the floor measures");
        assert_eq!(floor.steps.len(), 2);
        assert_eq!(floor.steps[1].per_commit, 7);
        assert_eq!(floor.steps[1].purchases, floor.steps[1].commits * 7);
        let counted: u64 = floor.steps.iter().map(|s| s.purchases).sum();
        assert!(counted > 0);
        assert_eq!(
            floor.purchases, counted,
            "every purchase counted is in the table"
        );
        assert!(floor.sync.syncs >= 10 && floor.sync.p50_us > 0.0);
        assert!(floor.sync.p50_us <= floor.sync.p99_us);
        assert!(floor.writes.sequential_mb_s > 0.0 && floor.writes.random_pages_s > 0.0);
        if cfg!(target_os = "linux") {
            assert!(
                floor
                    .steps
                    .iter()
                    .all(|s| s.writer_cpu_us.is_some_and(|c| c > 0.0))
            );
        }
        let left: Vec<_> = std::fs::read_dir(&dir)
            .expect("the folder")
            .flatten()
            .collect();
        assert!(left.is_empty(), "measuring files left behind: {left:?}");
        std::fs::remove_dir(&dir).expect("empty");
    }

    #[test]
    fn bad_options_are_refused_before_anything_is_written() {
        let dir = std::env::temp_dir().join(format!("fidelis-floor-bad-{}", std::process::id()));
        for (members, per_commit) in [(0, vec![1]), (10, vec![4, 0])] {
            let err = measure(&FloorOptions {
                dir: dir.clone(),
                members,
                per_commit,
                step: Duration::from_millis(10),
            })
            .expect_err("refused");
            assert!(err.contains("at least"), "{err}");
        }
        assert!(!dir.exists());
    }

    #[test]
    fn a_thread_s_cpu_time_grows_as_it_works() {
        let Some(before) = thread_cpu_ns() else {
            return; // not Linux
        };
        let mut x = 0u64;
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(30) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        assert!(thread_cpu_ns().expect("read before") > before + 10_000_000);
    }
}
