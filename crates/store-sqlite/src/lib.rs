//! SQLite behind Fidelis's store: one file in WAL mode, `synchronous=FULL` so an acknowledged
//! write survives a crash, one writer connection (the store's single writer thread) and
//! read-only connections for readers. Statements are prepared once per connection and cached.

use fidelis_store::{Backend, Conn, DbError, DbErrorKind, Dialect, Param, Row, Value};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};

pub struct Sqlite {
    path: String,
}

impl Sqlite {
    /// `path` is a file path, or `:memory:`-like names are refused: the store needs several
    /// connections to one database.
    pub fn new(path: &str) -> Sqlite {
        Sqlite {
            path: path.to_string(),
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
        let conn = Connection::open_with_flags(&self.path, flags).map_err(db_err)?;
        // WAL lets readers read while the writer writes; FULL syncs the WAL on every commit, so
        // an acknowledged write is on disk. Other processes (the CLI) wait up to 5 s.
        let pragmas = if read_only {
            "PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON; PRAGMA cache_size = -16000;"
        } else {
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON; PRAGMA cache_size = -64000; PRAGMA wal_autocheckpoint = 4000; PRAGMA temp_store = MEMORY;"
        };
        conn.execute_batch(pragmas).map_err(db_err)?;
        conn.set_prepared_statement_cache_capacity(256);
        Ok(Box::new(SqliteConn { conn }))
    }
}

struct SqliteConn {
    conn: Connection,
}

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
        };
        r.map_err(db_err)?;
    }
    Ok(())
}

impl Conn for SqliteConn {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, DbError> {
        let mut stmt = self.conn.prepare_cached(&translate(sql)).map_err(db_err)?;
        bind(&mut stmt, params)?;
        Ok(stmt.raw_execute().map_err(db_err)? as u64)
    }

    fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, DbError> {
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

    fn batch(&mut self, sql: &str) -> Result<(), DbError> {
        self.conn.execute_batch(sql).map_err(db_err)
    }
}
