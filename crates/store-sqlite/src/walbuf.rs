#![allow(unsafe_code)]
//! The writer's VFS: SQLite's own `unix` VFS, except that a commit's WAL frames reach the file
//! in one write instead of two per frame.
//!
//! SQLite writes each WAL frame as two `pwrite`s (its 24-byte header, then the page, which
//! straddles two of the kernel's pages). A commit of a batch of purchases writes a hundred or
//! more frames, and those system calls were over a third of the writer thread's time. Here the
//! WAL file's writes are gathered in memory while they run on from one another, and written
//! together when SQLite syncs the WAL at the end of the commit, before it publishes the commit
//! to readers (the WAL index is updated after that sync). SQLite reads, truncations, size
//! queries and closing flush first, so SQLite never sees the file without its own writes.
//!
//! The writer runs with `synchronous = FULL`, so SQLite syncs the WAL at every commit; here that
//! sync writes the gathered frames (an error fails the commit, which SQLite then rolls back) but
//! does not `fdatasync`: the store's syncer does, once for every commit since its last, before
//! any of them is acknowledged (`Conn::durability`). The WAL syncs that order a checkpoint (the
//! WAL on disk before its frames are copied into the database, and a restarted WAL's header)
//! stay real: the writer sets `checkpoint_fullfsync`, so SQLite asks for those with
//! `SQLITE_SYNC_FULL` and for a commit's with `SQLITE_SYNC_NORMAL` (on Linux both are the same
//! `fdatasync`). The database file, and every other connection (readers, the checkpointer, which
//! keep the `unix` VFS), are untouched.

use rusqlite::ffi;
use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::OnceLock;

/// The name connections open with to use it.
pub const NAME: &CStr = c"fidelis-walbuf";

/// Gathered bytes written at once even without a sync (a transaction spilling pages).
const FLUSH_AT: usize = 8 << 20;

/// The underlying `unix` VFS, found once.
struct Real(*mut ffi::sqlite3_vfs);
// SAFETY: SQLite's VFS objects are immutable once registered and safe to use from any thread.
unsafe impl Send for Real {}
unsafe impl Sync for Real {}

static REAL: OnceLock<Option<Real>> = OnceLock::new();

/// Registers the VFS (once per process); false when SQLite has no `unix` VFS to wrap.
pub fn register() -> bool {
    REAL.get_or_init(|| {
        // SAFETY: looking up a VFS by name; the pointer lives as long as the process.
        let real = unsafe { ffi::sqlite3_vfs_find(c"unix".as_ptr()) };
        if real.is_null() {
            return None;
        }
        // SAFETY: `real` is a valid, registered VFS; ours copies it and is leaked, so it
        // outlives every connection. Copied methods see the same `pAppData` as the original
        // (the unix VFS reads it), only `xOpen` is ours.
        unsafe {
            let mut vfs: ffi::sqlite3_vfs = *real;
            vfs.szOsFile = (*real).szOsFile + HEADER as c_int;
            vfs.zName = NAME.as_ptr();
            vfs.pNext = std::ptr::null_mut();
            vfs.xOpen = Some(open);
            let vfs = Box::leak(Box::new(vfs));
            if ffi::sqlite3_vfs_register(vfs, 0) != ffi::SQLITE_OK {
                return None;
            }
        }
        Some(Real(real))
    })
    .is_some()
}

/// A WAL file opened through this VFS: SQLite's handle first, the real file after it.
#[repr(C)]
struct WalFile {
    base: ffi::sqlite3_file,
    real: *mut ffi::sqlite3_file,
    /// Bytes written but not yet passed on, and the file offset of the first.
    pending: *mut Vec<u8>,
    start: i64,
}

const HEADER: usize = std::mem::size_of::<WalFile>().next_multiple_of(16);

static WAL_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 1,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: None,
    xShmLock: None,
    xShmBarrier: None,
    xShmUnmap: None,
    xFetch: None,
    xUnfetch: None,
};

unsafe extern "C" fn open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let Some(Some(Real(real))) = REAL.get() else {
        return ffi::SQLITE_ERROR;
    };
    let real = *real;
    // SAFETY: SQLite gives `file` with our `szOsFile` bytes; every other file than the WAL
    // is the real VFS's own, opened in place.
    unsafe {
        let Some(real_open) = (*real).xOpen else {
            return ffi::SQLITE_ERROR;
        };
        if flags & ffi::SQLITE_OPEN_WAL == 0 {
            return real_open(real, name, file, flags, out_flags);
        }
        let inner = file.cast::<u8>().add(HEADER).cast::<ffi::sqlite3_file>();
        let rc = real_open(real, name, inner, flags, out_flags);
        if rc != ffi::SQLITE_OK {
            // No methods: SQLite will not call close on a file that failed to open.
            (*file).pMethods = std::ptr::null();
            return rc;
        }
        file.cast::<WalFile>().write(WalFile {
            base: ffi::sqlite3_file {
                pMethods: &WAL_METHODS,
            },
            real: inner,
            pending: Box::into_raw(Box::default()),
            start: 0,
        });
        ffi::SQLITE_OK
    }
}

/// The WAL file behind SQLite's handle, and its real file's methods.
///
/// # Safety
/// `file` must be a handle this VFS opened for a WAL (its methods are `WAL_METHODS`).
unsafe fn parts<'a>(
    file: *mut ffi::sqlite3_file,
) -> (&'a mut WalFile, &'a ffi::sqlite3_io_methods) {
    // SAFETY: per the contract, `file` starts with a `WalFile` whose `real` was opened.
    unsafe {
        let w = &mut *file.cast::<WalFile>();
        let m = &*(*w.real).pMethods;
        (w, m)
    }
}

/// The most the `unix` VFS writes in one call: it keeps only the low 17 bits of a length
/// (SQLite itself never writes more than a page and a header at once).
const MAX_WRITE: usize = 0x1f000;

/// Passes the gathered bytes on to the real file, in as few writes as it takes.
fn flush(w: &mut WalFile, m: &ffi::sqlite3_io_methods) -> c_int {
    // SAFETY: `pending` is the box made at open, freed only at close.
    let pending = unsafe { &mut *w.pending };
    let Some(real_write) = m.xWrite else {
        return ffi::SQLITE_IOERR_WRITE;
    };
    let mut done = 0;
    for chunk in pending.chunks(MAX_WRITE) {
        // SAFETY: the real file is open; `chunk` holds its length (under MAX_WRITE) in bytes.
        let rc = unsafe {
            real_write(
                w.real,
                chunk.as_ptr().cast(),
                chunk.len() as c_int,
                w.start + done as i64,
            )
        };
        if rc != ffi::SQLITE_OK {
            // What was written stays written; the rest is tried again at the next flush.
            pending.drain(..done);
            w.start += done as i64;
            return rc;
        }
        done += chunk.len();
    }
    w.start += done as i64;
    pending.clear();
    ffi::SQLITE_OK
}

/// Flushes, then runs `then` on the real file (what every call that looks at the file does).
///
/// # Safety
/// As [`parts`].
unsafe fn flushed(
    file: *mut ffi::sqlite3_file,
    then: impl FnOnce(*mut ffi::sqlite3_file, &ffi::sqlite3_io_methods) -> c_int,
) -> c_int {
    // SAFETY: per the contract.
    let (w, m) = unsafe { parts(file) };
    match flush(w, m) {
        ffi::SQLITE_OK => then(w.real, m),
        rc => rc,
    }
}

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: called once by SQLite on a WAL handle this VFS opened.
    unsafe {
        let (w, m) = parts(file);
        let flushed = flush(w, m);
        let closed = m.xClose.map_or(ffi::SQLITE_OK, |f| f(w.real));
        drop(Box::from_raw(w.pending));
        w.pending = std::ptr::null_mut();
        if flushed != ffi::SQLITE_OK {
            flushed
        } else {
            closed
        }
    }
}

unsafe extern "C" fn read(
    file: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    // SAFETY: a WAL handle this VFS opened; arguments passed on as SQLite gave them.
    unsafe {
        flushed(file, |real, m| {
            m.xRead
                .map_or(ffi::SQLITE_IOERR_READ, |f| f(real, buf, amount, offset))
        })
    }
}

unsafe extern "C" fn write(
    file: *mut ffi::sqlite3_file,
    data: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    // SAFETY: a WAL handle this VFS opened; `data` holds `amount` bytes.
    unsafe {
        let (w, m) = parts(file);
        let Ok(n) = usize::try_from(amount) else {
            return ffi::SQLITE_IOERR_WRITE;
        };
        let pending = &mut *w.pending;
        if !pending.is_empty() && offset != w.start + pending.len() as i64 {
            // Not the continuation (a frame written again in place): what came before goes
            // first, so writes reach the file in SQLite's order.
            let rc = flush(w, m);
            if rc != ffi::SQLITE_OK {
                return rc;
            }
        }
        let pending = &mut *w.pending;
        if pending.is_empty() {
            w.start = offset;
        }
        pending.extend_from_slice(std::slice::from_raw_parts(data.cast::<u8>(), n));
        if pending.len() >= FLUSH_AT {
            return flush(w, m);
        }
        ffi::SQLITE_OK
    }
}

unsafe extern "C" fn truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    // SAFETY: a WAL handle this VFS opened.
    unsafe {
        flushed(file, |real, m| {
            m.xTruncate
                .map_or(ffi::SQLITE_IOERR_TRUNCATE, |f| f(real, size))
        })
    }
}

thread_local! {
    /// Syncs of the WAL passed on to the disk (the checkpoints') by this thread; the tests read
    /// it. Per thread: a test's count is not moved by another test's writer running beside it.
    pub static REAL_SYNCS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Writes what was gathered. A commit's sync (`SQLITE_SYNC_NORMAL`) stops there, the store's
/// syncer does the `fdatasync`; a checkpoint's (`SQLITE_SYNC_FULL`) goes to the disk.
unsafe extern "C" fn sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    // SAFETY: a WAL handle this VFS opened.
    unsafe {
        let (w, m) = parts(file);
        let rc = flush(w, m);
        if rc != ffi::SQLITE_OK || flags & 0x0f != ffi::SQLITE_SYNC_FULL {
            return rc;
        }
        REAL_SYNCS.with(|n| n.set(n.get() + 1));
        m.xSync
            .map_or(ffi::SQLITE_IOERR_FSYNC, |f| f(w.real, flags))
    }
}

unsafe extern "C" fn file_size(file: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    // SAFETY: a WAL handle this VFS opened; `size` is SQLite's out-parameter.
    unsafe {
        flushed(file, |real, m| {
            m.xFileSize
                .map_or(ffi::SQLITE_IOERR_FSTAT, |f| f(real, size))
        })
    }
}

unsafe extern "C" fn lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: a WAL handle this VFS opened.
    unsafe {
        let (w, m) = parts(file);
        m.xLock.map_or(ffi::SQLITE_OK, |f| f(w.real, level))
    }
}

unsafe extern "C" fn unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: a WAL handle this VFS opened.
    unsafe {
        let (w, m) = parts(file);
        m.xUnlock.map_or(ffi::SQLITE_OK, |f| f(w.real, level))
    }
}

unsafe extern "C" fn check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    // SAFETY: a WAL handle this VFS opened; `out` is SQLite's out-parameter.
    unsafe {
        let (w, m) = parts(file);
        m.xCheckReservedLock
            .map_or(ffi::SQLITE_OK, |f| f(w.real, out))
    }
}

unsafe extern "C" fn file_control(
    file: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    // SAFETY: a WAL handle this VFS opened; the real file sees what SQLite asked, after the
    // gathered bytes.
    unsafe {
        flushed(file, |real, m| {
            m.xFileControl
                .map_or(ffi::SQLITE_NOTFOUND, |f| f(real, op, arg))
        })
    }
}

unsafe extern "C" fn sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: a WAL handle this VFS opened.
    unsafe {
        let (w, m) = parts(file);
        m.xSectorSize.map_or(4096, |f| f(w.real))
    }
}

unsafe extern "C" fn device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: a WAL handle this VFS opened.
    unsafe {
        let (w, m) = parts(file);
        m.xDeviceCharacteristics.map_or(0, |f| f(w.real))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::{Connection, OpenFlags};

    /// Every commit made through the VFS is in the file for a reader on SQLite's own VFS at
    /// once: small ones, one larger than the gathering limit and the real VFS's largest write,
    /// and one after a checkpoint started the WAL over; the file is sound when reopened.
    #[test]
    fn commits_gathered_are_seen_by_other_connections_and_survive_reopening() {
        assert!(register());
        let dir = std::env::temp_dir().join(format!("fidelis-walbuf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("t.db");
        let rw = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE;
        let w = Connection::open_with_flags_and_vfs(&path, rw, NAME).expect("writer");
        w.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA checkpoint_fullfsync = ON; PRAGMA wal_autocheckpoint = 0; PRAGMA cache_size = -2000; CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB); CREATE INDEX t_v ON t (v);")
            .expect("schema");
        let r =
            Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).expect("reader");
        let count = |c: &Connection| -> i64 {
            c.query_row("SELECT COUNT(*) FROM t", [], |row| row.get(0))
                .expect("count")
        };
        let real_syncs = || REAL_SYNCS.with(|n| n.get());
        let before = real_syncs();
        for i in 0..50 {
            w.execute("INSERT INTO t (v) VALUES (randomblob(500))", [])
                .expect("small commit");
            assert_eq!(count(&r), i + 1, "a reader sees each commit at once");
        }
        assert_eq!(real_syncs(), before, "a commit's sync is left to the store");
        let _: i64 = w
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| row.get(0))
            .expect("checkpoint");
        assert!(
            real_syncs() > before,
            "a checkpoint syncs the WAL before copying it"
        );
        // About 30 MB of frames in one transaction, with a small cache so pages spill.
        w.execute_batch("BEGIN; WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 20000) INSERT INTO t (v) SELECT randomblob(700) FROM g; COMMIT;")
            .expect("large commit");
        assert_eq!(count(&r), 20_050);
        let _: i64 = w
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get(0))
            .expect("checkpoint");
        w.execute("DELETE FROM t WHERE k % 2 = 0", [])
            .expect("commit after the WAL started over");
        assert_eq!(count(&r), 10_025);
        drop((w, r));
        let again = Connection::open_with_flags(&path, rw).expect("reopen");
        assert_eq!(count(&again), 10_025);
        let ok: String = again
            .query_row("PRAGMA integrity_check", [], |row| row.get(0))
            .expect("integrity check");
        assert_eq!(ok, "ok");
        drop(again);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
