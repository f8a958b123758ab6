//! SQLite behind Fidelis's store: one file in WAL mode, one writer connection (the store's
//! single writer thread) and read-only connections for readers. The writer's COMMIT writes its
//! frames to the WAL without syncing it, in one write through the `walbuf` VFS (with the
//! checkpointer's `sync_file_range` call below, the only `unsafe` code in Fidelis), and the
//! store syncs the WAL on another thread before it acknowledges anything (see
//! `Conn::durability`), so an acknowledged write survives a crash. Statements are prepared once
//! per connection and cached.

use fidelis_store::conn::WriteCount;
use fidelis_store::{Backend, Conn, DbError, DbErrorKind, Dialect, Param, Row, Value};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub mod floor;
mod walbuf;

/// How often the checkpointer copies committed WAL frames back into the database file while
/// writes come in, how often once the WAL is close to starting over, and how often it looks
/// when none came since its last copy. Each copy writes every page changed since the last one
/// and syncs the database file, so copying less often copies a page changed by several
/// commits once. Close to the restart (see [`RESTART_FRAMES`]) it copies as fast as it can,
/// which leaves the writer's own checkpoint only a short tail: when it copied every 50 ms all
/// along, that tail was the purchases' p99 (33-36 ms against 18-20 ms at every 5 ms over HTTP).
const CHECKPOINT_BUSY: Duration = Duration::from_millis(40);
const CHECKPOINT_CATCH_UP: Duration = Duration::from_millis(1);
const CHECKPOINT_IDLE: Duration = Duration::from_millis(50);

pub struct Sqlite {
    path: String,
    /// Set once a checkpointer thread runs for this database.
    checkpointer: std::sync::OnceLock<Arc<Checkpoints>>,
    /// The WAL's length in frames at which the writer starts it over ([`RESTART_FRAMES`]).
    restart_frames: i64,
}

/// What the checkpointer thread and the writer share.
#[derive(Default)]
struct Checkpoints {
    /// Cleared when the last handle on the database goes, which stops the thread.
    alive: AtomicBool,
    /// Held by whichever of the two checkpoints. SQLite runs one checkpoint at a time and
    /// fails another at once, without waiting: the writer's, made while the thread was
    /// copying, failed, and the WAL never started over under a steady load (an import of 1.4
    /// million orders left an 11 GB WAL beside a 2.4 GB database).
    running: std::sync::Mutex<()>,
    /// See [`Sqlite::restart_frames`].
    restart_frames: i64,
}

impl Drop for Sqlite {
    fn drop(&mut self) {
        if let Some(shared) = self.checkpointer.get() {
            shared.alive.store(false, Ordering::Relaxed);
        }
    }
}

impl Sqlite {
    /// `path` is a file path, or `:memory:`-like names are refused: the store needs several
    /// connections to one database.
    pub fn new(path: &str) -> Sqlite {
        Sqlite {
            path: path.to_string(),
            checkpointer: std::sync::OnceLock::new(),
            restart_frames: RESTART_FRAMES,
        }
    }

    /// Parses `sqlite://path` or `sqlite:path` (relative or absolute).
    pub fn from_url(url: &str) -> Option<Sqlite> {
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))?;
        let path = path.split('?').next().unwrap_or(path);
        (!path.is_empty()).then(|| Sqlite::new(path))
    }
}

fn db_err(e: rusqlite::Error) -> DbError {
    let kind = match &e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            rusqlite::ErrorCode::ConstraintViolation
                if f.extended_code == 2067 || f.extended_code == 1555 =>
            {
                DbErrorKind::Unique
            }
            rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked => {
                DbErrorKind::Retry
            }
            rusqlite::ErrorCode::CannotOpen => DbErrorKind::Connection,
            _ => DbErrorKind::Other,
        },
        _ => DbErrorKind::Other,
    };
    DbError {
        kind,
        message: e.to_string(),
    }
}

impl Backend for Sqlite {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn connect(&self, read_only: bool) -> Result<Box<dyn Conn>, DbError> {
        let flags = if read_only {
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI
        } else {
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI
        };
        // The writer's WAL frames go out in one write per commit (see `walbuf`); readers and
        // the checkpointer keep SQLite's own VFS.
        let gathered = !read_only && walbuf::register();
        let conn = if gathered {
            Connection::open_with_flags_and_vfs(&self.path, flags, walbuf::NAME)
        } else {
            Connection::open_with_flags(&self.path, flags)
        }
        .map_err(db_err)?;
        // WAL lets readers read while the writer writes; the writer's COMMIT does not sync the
        // WAL, the store does before acknowledging (`durability`). Other processes (the CLI)
        // wait up to 5 s.
        // The writer's page cache is kept small on purpose: SQLite scans the whole cache's
        // hash table at every COMMIT whose B-tree splits renumbered a page (most of them, under
        // load), so a 64 MB cache cost 12 % of the writer's time; pages it misses come from the
        // operating system's cache. 8 MB measured best (docs/PERFORMANCE.md).
        // Through `walbuf`, `synchronous = FULL` makes SQLite hand over each commit's frames
        // before it publishes the commit, and `checkpoint_fullfsync` marks the syncs that must
        // reach the disk; without it (SQLite has no `unix` VFS), `NORMAL`. The sync of a
        // commit to disk is the store's either way.
        let pragmas = match (read_only, gathered) {
            (true, _) => {
                "PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON; PRAGMA cache_size = -16000;"
            }
            (false, true) => {
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA checkpoint_fullfsync = ON; PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON; PRAGMA cache_size = -8000; PRAGMA wal_autocheckpoint = 0; PRAGMA temp_store = MEMORY;"
            }
            (false, false) => {
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON; PRAGMA cache_size = -8000; PRAGMA wal_autocheckpoint = 0; PRAGMA temp_store = MEMORY;"
            }
        };
        conn.execute_batch(pragmas).map_err(db_err)?;
        if !read_only {
            conn.execute_batch(&format!("PRAGMA journal_size_limit = {WAL_SIZE_LIMIT};"))
                .map_err(db_err)?;
            // After the pragmas: `wal_autocheckpoint` sets a WAL hook of its own.
            conn.wal_hook(Some(note_wal_frames));
        }
        let checkpoints = (!read_only).then(|| self.start_checkpointer());
        conn.set_prepared_statement_cache_capacity(256);
        Ok(Box::new(SqliteConn {
            conn,
            checkpoints,
            wal: (!read_only).then(|| format!("{}-wal", self.path)),
            written: WriteCount::default(),
        }))
    }
}

impl Sqlite {
    /// Writers do not checkpoint (SQLite would do it inside a commit, on the writer's time):
    /// one thread per database does, with a connection of its own, in PASSIVE mode so it never
    /// waits for or blocks the writer or the readers.
    fn start_checkpointer(&self) -> Arc<Checkpoints> {
        let mut started = false;
        let shared = self.checkpointer.get_or_init(|| {
            started = true;
            Arc::new(Checkpoints {
                alive: AtomicBool::new(true),
                restart_frames: self.restart_frames,
                ..Checkpoints::default()
            })
        });
        if !started {
            return shared.clone();
        }
        let (shared, path) = (shared.clone(), self.path.clone());
        let ours = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("fidelis-checkpoint".into())
            .spawn(move || {
                let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
                let conn = match Connection::open_with_flags(&path, flags) {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!(error = %e, "the checkpointer cannot open the database; the WAL will grow");
                        return;
                    }
                };
                let _ = conn.execute_batch("PRAGMA busy_timeout = 5000; PRAGMA synchronous = FULL;");
                // The WAL's length in frames at the last look: a change means writes came in.
                let mut last_log = -1;
                let mut pause = CHECKPOINT_IDLE;
                // The database file, to start writing back what each copy wrote (see
                // `start_writeback`); without it the copies are only left to the writer's sync.
                let database = std::fs::File::open(&path).ok();
                // Frames copied back at the last look: a change means this pass wrote pages.
                let mut last_copied = -1;
                while shared.alive.load(Ordering::Relaxed) {
                    std::thread::sleep(pause);
                    let copied = {
                        let _running = shared.running.lock().unwrap_or_else(|p| p.into_inner());
                        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                            Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
                        })
                    };
                    match copied {
                        Ok((log, copied)) => {
                            if copied != last_copied
                                && let Some(file) = &database
                                && let Err(e) = start_writeback(file)
                            {
                                tracing::debug!(error = %e, "cannot start writing the database file back");
                            }
                            last_copied = copied;
                            pause = if log == last_log {
                                CHECKPOINT_IDLE
                            } else if catching_up(log, shared.restart_frames) {
                                CHECKPOINT_CATCH_UP
                            } else {
                                CHECKPOINT_BUSY
                            };
                            last_log = log;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "checkpoint failed; will try again");
                            pause = CHECKPOINT_IDLE;
                        }
                    }
                }
                // A last full copy, so a stopped server leaves a small WAL behind.
                let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get::<_, i64>(0));
                // The connection goes before the plain file: closing any descriptor of the
                // database file drops every POSIX lock this process holds on it, and SQLite
                // locks through them, so the file closed first would leave the connection
                // unlocked for its last moment (another process could then think nobody uses
                // the database and delete its WAL).
                drop(conn);
                drop(database);
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the checkpointer; the WAL will grow");
        }
        ours
    }
}

/// Asks the kernel to start writing the file's dirty pages to disk, without waiting for it
/// and without a sync. SQLite syncs the database file only after a copy that reached the WAL's
/// end, which a copy beside a busy writer seldom does, so the pages copied over a whole cycle
/// of the WAL used to wait in the page cache for the writer's sync when it starts the WAL
/// over, the one sync that holds the writer (a trace: 12-31 ms, every other part of the pause
/// well under 1 ms). Started after every copy, most of them are on disk by then: paced at
/// 10,000 purchases/s for 45 s, that pause went from 20-25 to 14-19 ms on average and the p99
/// from 38-45 to 27-36 ms; the WAL's syncs, sharing the disk, from 0.4 to 0.55-0.65 ms and the
/// p50 from 1.5 to 1.9-2.9 ms. Started at most every 250 ms instead (fewer rewrites of the same
/// hot pages reach the disk: 7 KB a purchase instead of 10), the pause was 20-26 ms again and
/// the p99 39-58 ms against 31-36 (docs/PERFORMANCE.md). Durability is unchanged: this
/// only starts writes that the sync SQLite makes would have made anyway.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn start_writeback(file: &std::fs::File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    unsafe extern "C" {
        fn sync_file_range(fd: i32, offset: i64, nbytes: i64, flags: u32) -> i32;
    }
    /// Start writing back dirty pages not already being written; do not wait.
    const SYNC_FILE_RANGE_WRITE: u32 = 2;
    // SAFETY: a system call on a descriptor `file` keeps open; offset 0 and length 0 mean
    // the whole file, and it reads or writes no memory of ours.
    let r = unsafe { sync_file_range(file.as_raw_fd(), 0, 0, SYNC_FILE_RANGE_WRITE) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Elsewhere the pages wait for SQLite's sync, as they always did.
#[cfg(not(target_os = "linux"))]
fn start_writeback(_: &std::fs::File) -> std::io::Result<()> {
    Ok(())
}

/// Whether the WAL (`frames` long) is close enough to the writer's restart for the
/// checkpointer to keep right behind the writer: from three quarters of the way. A WAL already
/// well past the restart (a long reader holds it off) is copied at the usual pace.
fn catching_up(frames: i64, restart_frames: i64) -> bool {
    frames >= restart_frames / 4 * 3 && frames < restart_frames / 4 * 5
}

thread_local! {
    /// The WAL's length in frames after the last commit made on this thread, as SQLite tells
    /// the writer's connection (its WAL hook). A checkpointer's count would lag: read just
    /// after the WAL was started over, it still gives the old length until the next commit.
    static WAL_FRAMES: std::cell::Cell<i64> = const { std::cell::Cell::new(0) };
}

fn note_wal_frames(_: &rusqlite::hooks::Wal, frames: std::ffi::c_int) -> rusqlite::Result<()> {
    WAL_FRAMES.set(frames.into());
    Ok(())
}

struct SqliteConn {
    conn: Connection,
    /// Shared with the database's checkpointer thread (writers only).
    checkpoints: Option<Arc<Checkpoints>>,
    /// The write-ahead log a writer's commits go to.
    wal: Option<String>,
    /// Statements that may have written (`Conn::may_have_written`).
    written: WriteCount,
}

/// The WAL starts over (the next commit writes it from its first frame) only when everything
/// in it is copied back and no reader still reads from it: a checkpointer running beside a
/// busy writer never quite gets there alone, so once the WAL holds this many frames (128 MiB of
/// 4 KiB pages) the writer copies the rest itself, after handing the committed batch on
/// (`Conn::after_commit`), and waits, briefly, for the readers. Each time costs the writer the copy of what the checkpointer had not reached and
/// a sync of the database file (9 ms on average under the benchmark's load, 25 ms in an
/// import's large commits): at every 64 commits, as before, that was 6 % of the writer's time
/// over HTTP; at 128 MiB it is not seen in the rate (docs/PERFORMANCE.md).
const RESTART_FRAMES: i64 = 32768;

/// A WAL file longer than this (the restart was held up by a long reader) is cut back to it
/// when the WAL starts over, so the disk it takes stays bounded.
const WAL_SIZE_LIMIT: i64 = 256 << 20;

/// How long the writer waits, at most, for readers still reading older frames before the WAL
/// can start over; a reader still there (a long export) makes it try again later.
const RESTART_WAIT: Duration = Duration::from_millis(2);

/// The busy timeout of every connection: another process (the CLI) waits up to this long.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// `$1` → `?1`: SQLite's numbered parameters, so the same SQL text serves both databases.
fn translate(sql: &str) -> String {
    sql.replace('$', "?")
}

fn bind(stmt: &mut rusqlite::CachedStatement<'_>, params: &[Param<'_>]) -> Result<(), DbError> {
    for (i, p) in params.iter().enumerate() {
        let r = match p {
            Param::Null => stmt.raw_bind_parameter(i + 1, rusqlite::types::Null),
            Param::Int(v) => stmt.raw_bind_parameter(i + 1, v),
            Param::Text(t) => stmt.raw_bind_parameter(i + 1, t),
            Param::Ints(_) | Param::Texts(_) => {
                return Err(DbError {
                    kind: DbErrorKind::Other,
                    message: "SQLite has no array parameters".into(),
                });
            }
        };
        r.map_err(db_err)?;
    }
    Ok(())
}

impl Conn for SqliteConn {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    /// A writer's COMMIT writes its frames to the WAL and returns without syncing it (see
    /// `walbuf`); this syncs the WAL file, after which every frame written before is on disk
    /// (what SQLite's `FULL` would have done inside COMMIT, but off the writer's thread).
    ///
    /// The first sync also syncs the directory: SQLite syncs a new WAL's directory entry at
    /// the WAL's first sync through its own VFS, which the commits synced here never make (the
    /// writer's first restart of the WAL would, 128 MiB later). Without it a file system that does
    /// not order a new file's name before its data could lose the whole WAL, acknowledged
    /// commits with it, in a power cut right after a fresh start.
    fn after_commit(&mut self) -> bool {
        self.restart_wal_when_due()
    }

    fn durability(&self) -> Option<fidelis_store::conn::Sync> {
        let wal = self.wal.clone()?;
        let mut directory_synced = false;
        Some(Box::new(move || {
            let io = |e: std::io::Error| DbError {
                kind: DbErrorKind::Other,
                message: format!("syncing {wal}: {e}"),
            };
            std::fs::File::open(&wal)
                .map_err(io)?
                .sync_data()
                .map_err(io)?;
            if !directory_synced {
                // As SQLite does: a file system that cannot sync a directory (some network and
                // FUSE ones refuse) is not a reason to fail the commits.
                if let Err(e) = sync_directory_of(std::path::Path::new(&wal)) {
                    tracing::warn!(error = %e, wal = %wal, "cannot sync the WAL's directory");
                }
                directory_synced = true;
            }
            Ok(())
        }))
    }

    fn watch_rows(
        &mut self,
        table: &'static str,
        mut changed: fidelis_store::conn::RowWatch,
    ) -> bool {
        self.conn.update_hook(Some(
            move |_: rusqlite::hooks::Action, _: &str, t: &str, rowid: i64| {
                if t == table {
                    changed(rowid);
                }
            },
        ));
        true
    }

    fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, DbError> {
        let changed = self.run(sql, params);
        self.written.executed(sql, changed.as_ref().ok().copied());
        changed
    }

    /// SQLite answers `RETURNING` through a temporary table built and dropped per statement;
    /// the row id of the insert just made is free.
    fn insert_id(&mut self, sql: &str, params: &[Param<'_>]) -> Result<i64, DbError> {
        let Some(plain) = sql.strip_suffix(" RETURNING id") else {
            return Err(DbError {
                kind: DbErrorKind::Other,
                message: format!("insert_id needs `... RETURNING id`: {sql}"),
            });
        };
        if self.execute(plain, params)? != 1 {
            return Err(DbError {
                kind: DbErrorKind::Other,
                message: "an insert returned no id".into(),
            });
        }
        Ok(self.conn.last_insert_rowid())
    }

    fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, DbError> {
        let rows = self.rows(sql, params);
        self.written.queried(sql, rows.is_ok());
        rows
    }

    fn may_have_written(&self) -> Option<u64> {
        Some(self.written.get())
    }

    fn writes_undone_since(&mut self, mark: u64) {
        self.written.rewind(mark);
    }

    fn batch(&mut self, sql: &str) -> Result<(), DbError> {
        self.written.executed(sql, None);
        self.statements(sql)
    }
}

impl SqliteConn {
    /// After a commit: when due, copies what the checkpointer has not yet and waits (briefly)
    /// for the readers of older frames, so that the next commit writes the WAL from its start
    /// again. Skipped while the checkpointer copies (tried again after the next commit); a
    /// failure only leaves the WAL longer for a while. True when it ran.
    fn restart_wal_when_due(&mut self) -> bool {
        let Some(shared) = &self.checkpoints else {
            return false;
        };
        if WAL_FRAMES.get() < shared.restart_frames {
            return false;
        }
        let Ok(_running) = shared.running.try_lock() else {
            return false;
        };
        WAL_FRAMES.set(0);
        let _ = self.conn.busy_timeout(RESTART_WAIT);
        let _ = self
            .conn
            .query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| r.get::<_, i64>(0));
        let _ = self.conn.busy_timeout(BUSY_TIMEOUT);
        true
    }

    fn run(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, DbError> {
        let mut stmt = self.conn.prepare_cached(&translate(sql)).map_err(db_err)?;
        bind(&mut stmt, params)?;
        Ok(stmt.raw_execute().map_err(db_err)? as u64)
    }

    fn rows(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, DbError> {
        let mut stmt = self.conn.prepare_cached(&translate(sql)).map_err(db_err)?;
        bind(&mut stmt, params)?;
        let n = stmt.column_count();
        let mut rows = stmt.raw_query();
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(db_err)? {
            let mut values = Vec::with_capacity(n);
            for i in 0..n {
                values.push(match row.get_ref(i).map_err(db_err)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(v) => Value::Int(v),
                    ValueRef::Real(f) => Value::Int(f as i64),
                    ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Blob(b) => Value::Text(String::from_utf8_lossy(b).into_owned()),
                });
            }
            out.push(Row(values));
        }
        Ok(out)
    }

    fn statements(&mut self, sql: &str) -> Result<(), DbError> {
        // The writer's BEGIN and COMMIT come often: one statement is prepared once and cached.
        if !sql.contains(';') {
            {
                let mut stmt = self.conn.prepare_cached(sql).map_err(db_err)?;
                stmt.raw_execute().map_err(db_err)?;
            }
            return Ok(());
        }
        self.conn.execute_batch(sql).map_err(db_err)
    }
}

/// Syncs the directory holding `file`, so that its entry for the file is on disk.
fn sync_directory_of(file: &std::path::Path) -> std::io::Result<()> {
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    /// The checkpointer keeps right behind the writer from three quarters of the way to the
    /// restart; before, and well past it (a long reader holding the restart off), it copies at
    /// its usual pace.
    #[test]
    fn the_checkpointer_catches_up_only_close_to_the_restart() {
        let restart = super::RESTART_FRAMES;
        assert!(!super::catching_up(0, restart));
        assert!(!super::catching_up(restart / 2, restart));
        assert!(!super::catching_up(restart / 4 * 3 - 1, restart));
        assert!(super::catching_up(restart / 4 * 3, restart));
        assert!(super::catching_up(restart, restart));
        assert!(super::catching_up(restart / 4 * 5 - 1, restart));
        assert!(!super::catching_up(restart / 4 * 5, restart));
        assert!(!super::catching_up(restart * 4, restart));
    }

    /// A WAL named with or without a directory: its directory is found and synced.
    #[test]
    fn the_directory_of_a_wal_is_synced_wherever_it_is() {
        let dir = std::env::temp_dir();
        super::sync_directory_of(&dir.join("fidelis-x.db-wal")).expect("absolute path");
        super::sync_directory_of(std::path::Path::new("fidelis-x.db-wal")).expect("bare name");
        let missing = dir.join("fidelis-no-such-directory").join("x.db-wal");
        assert!(super::sync_directory_of(&missing).is_err());
    }

    /// Writing back starts on the database file as the checkpointer opens it (read-only):
    /// an error there would only be logged, and the writer's pauses would quietly grow again.
    #[test]
    fn writing_back_starts_on_a_read_only_database_file() {
        let path = std::env::temp_dir().join(format!("fidelis-writeback-{}", std::process::id()));
        std::fs::write(&path, vec![7u8; 1 << 16]).expect("a file with dirty pages");
        let file = std::fs::File::open(&path).expect("read-only");
        super::start_writeback(&file).expect("writing back starts");
        let _ = std::fs::remove_file(&path);
    }

    /// Large commits under steady reads, as in an import: the WAL starts over each time it
    /// holds the restart length, so its file stays near that length instead of growing with
    /// everything written (before, 80 MB here, as an import of 1.4 million orders left 11 GB).
    #[test]
    fn the_wal_starts_over_under_large_commits_and_steady_reads() {
        use fidelis_store::Backend;
        use std::sync::atomic::{AtomicBool, Ordering};
        let dir = std::env::temp_dir().join(format!("fidelis-restart-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("t.db");
        let mut db = super::Sqlite::new(path.to_str().expect("utf-8 path"));
        db.restart_frames = 256;
        let db = std::sync::Arc::new(db);
        let mut w = db.connect(false).expect("writer");
        w.batch("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB)")
            .expect("schema");
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let reading = {
            let (db, stop) = (db.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut r = db.connect(true).expect("reader");
                let mut reads = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    r.query("SELECT MAX(k) FROM t", &[]).expect("read");
                    reads += 1;
                }
                reads
            })
        };
        // 200 commits of 100 rows of 4,000 bytes: about 80 MB of frames in all.
        let mut restarts = 0;
        for _ in 0..200 {
            w.batch("BEGIN").expect("begin");
            w.execute("WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 100) INSERT INTO t (v) SELECT randomblob(4000) FROM g", &[])
                .expect("insert");
            w.batch("COMMIT").expect("commit");
            restarts += u32::from(w.after_commit());
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        stop.store(true, Ordering::Relaxed);
        assert!(reading.join().expect("reader thread") > 0);
        let wal = std::fs::metadata(dir.join("t.db-wal")).expect("WAL").len();
        assert!(wal < 32 << 20, "the WAL grew to {wal} bytes");
        // Each restart is a pause of the writer, counted as one (`Conn::after_commit`): about
        // one commit in three here (100 frames a commit, 256 to a restart), never every one.
        assert!((10..150).contains(&restarts), "{restarts} restarts");
        drop((w, db));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The repository's `.cargo/config.toml` builds SQLite without the global page cache and
    /// memory statistics (docs/PERFORMANCE.md); a build that lost those flags is slower, not
    /// wrong, and only this says so.
    #[test]
    fn sqlite_is_built_without_its_global_mutexes() {
        let conn = rusqlite::Connection::open_in_memory().expect("in-memory database");
        let mut stmt = conn.prepare("PRAGMA compile_options").expect("pragma");
        let options: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .expect("compile options")
            .collect::<Result<_, _>>()
            .expect("compile options");
        assert!(
            !options.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT"),
            "{options:?}"
        );
        assert!(
            options.iter().any(|o| o == "OMIT_SHARED_CACHE"),
            "{options:?}"
        );
        assert!(
            options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"),
            "{options:?}"
        );
    }
}
