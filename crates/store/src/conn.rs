//! The small connection trait the store's SQL runs on. SQL is written once with `$1`-style
//! parameters and only BIGINT and TEXT columns, so both databases read it the same way; the
//! few differences (row locks) go through [`Dialect`].

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// Row-lock suffix for a SELECT that a write will follow. SQLite has one writer, so it
    /// needs none; PostgreSQL locks the rows until the transaction ends.
    pub fn for_update(&self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE",
        }
    }
    /// A shared row lock where the dialect has row locks (SQLite's one writer serializes).
    pub fn for_share(&self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR SHARE",
        }
    }
    /// A row's id as [`Conn::watch_rows`] reports it (SQLite's `rowid`); PostgreSQL watches
    /// no rows, and reads a constant.
    pub fn row_id(&self) -> &'static str {
        match self {
            Dialect::Sqlite => "rowid",
            Dialect::Postgres => "0",
        }
    }
    /// Like [`Dialect::for_update`], but rows another node holds are skipped (job claims).
    pub fn skip_locked(&self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
        }
    }
}

/// A query parameter.
#[derive(Debug, Clone, Copy)]
pub enum Param<'a> {
    Null,
    Int(i64),
    Text(&'a str),
    /// Arrays, for PostgreSQL's `unnest` (a whole batch's column in one parameter). SQLite has
    /// none: its connection refuses them.
    Ints(&'a [Option<i64>]),
    Texts(&'a [Option<&'a str>]),
}

impl From<i64> for Param<'_> {
    fn from(v: i64) -> Self {
        Param::Int(v)
    }
}
impl<'a> From<&'a str> for Param<'a> {
    fn from(v: &'a str) -> Self {
        Param::Text(v)
    }
}
impl<'a> From<&'a String> for Param<'a> {
    fn from(v: &'a String) -> Self {
        Param::Text(v)
    }
}
impl<'a, T: Into<Param<'a>>> From<Option<T>> for Param<'a> {
    fn from(v: Option<T>) -> Self {
        v.map_or(Param::Null, Into::into)
    }
}

/// A value read back.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
}

#[derive(Debug, Clone, Default)]
pub struct Row(pub Vec<Value>);

impl Row {
    pub fn int(&self, i: usize) -> i64 {
        match self.0.get(i) {
            Some(Value::Int(v)) => *v,
            Some(Value::Text(t)) => t.parse().unwrap_or(0),
            _ => 0,
        }
    }
    pub fn opt_int(&self, i: usize) -> Option<i64> {
        match self.0.get(i) {
            Some(Value::Int(v)) => Some(*v),
            _ => None,
        }
    }
    pub fn text(&self, i: usize) -> String {
        self.opt_text(i).unwrap_or_default()
    }
    pub fn opt_text(&self, i: usize) -> Option<String> {
        match self.0.get(i) {
            Some(Value::Text(t)) => Some(t.clone()),
            Some(Value::Int(v)) => Some(v.to_string()),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbErrorKind {
    /// A unique constraint refused the row.
    Unique,
    /// The database asks to retry: deadlock, serialization failure, busy.
    Retry,
    /// The connection is gone.
    Connection,
    Other,
}

#[derive(Debug, Clone)]
pub struct DbError {
    pub kind: DbErrorKind,
    pub message: String,
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.message)
    }
}

impl std::error::Error for DbError {}

/// Makes committed work durable (see [`Conn::durability`]).
pub type Sync = Box<dyn FnMut() -> Result<(), DbError> + Send>;

/// Told the row id of each row changed in a watched table (see [`Conn::watch_rows`]).
pub type RowWatch = Box<dyn FnMut(i64) + Send>;

/// One database connection, used by one thread at a time.
pub trait Conn: Send {
    fn dialect(&self) -> Dialect;
    /// Runs one statement; returns the rows it changed.
    fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, DbError>;
    fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, DbError>;
    /// Runs statements without parameters (schema, BEGIN, COMMIT, SAVEPOINT).
    fn batch(&mut self, sql: &str) -> Result<(), DbError>;

    /// Called by the writer once a committed batch is on its way to being acknowledged:
    /// upkeep that must run on the writing connection but need not hold up that batch's
    /// answers (SQLite starts its WAL over here). True when that upkeep ran (the writer's time
    /// it took is counted as a pause, `StoreMetrics::wal_restarts`). Nothing by default.
    fn after_commit(&mut self) -> bool {
        false
    }

    /// For a connection whose COMMIT returns before the commit is on disk: a function that
    /// makes everything committed so far durable, called from another thread before any of
    /// it is acknowledged. `None` (the default): COMMIT itself is durable.
    fn durability(&self) -> Option<Sync> {
        None
    }

    /// Calls `changed` with the row id of every row this connection's writes insert, update
    /// or delete in `table`, as each statement runs; false when the database offers no such
    /// hook (PostgreSQL, which needs none: see the store's `fence`).
    fn watch_rows(&mut self, _table: &'static str, _changed: RowWatch) -> bool {
        false
    }

    /// True when the connection is gone for good and must be replaced.
    fn is_broken(&self) -> bool {
        false
    }

    /// A count of the statements this connection has run that may have changed something in
    /// its transaction: every statement but a successful `SELECT` (a failed one counts too:
    /// PostgreSQL aborts the transaction of any statement that fails). The same count before
    /// and after some work means the work left the transaction as it found it, so a job that
    /// failed without writing needs no rollback. `None` (the default): unknown, always undo.
    fn may_have_written(&self) -> Option<u64> {
        None
    }

    /// Tells the connection that every write since `mark` (a [`Conn::may_have_written`]
    /// count) has been undone by the caller, row for row: the count goes back to `mark`. For a
    /// caller that took something it gave back (`idem::run` releasing a key whose request was
    /// refused). The default does nothing, which only means a rollback that was not needed.
    fn writes_undone_since(&mut self, _mark: u64) {}

    /// Runs `asks` (statement, parameters) in order and answers each one's rows; the first
    /// error stops them. For statements that do not need each other's answers: a backend whose
    /// every statement is a round trip (PostgreSQL) sends them at once, with what `defer`
    /// holds. The default runs them one by one.
    fn query_all(&mut self, asks: &[(&str, &[Param<'_>])]) -> Result<Vec<Vec<Row>>, DbError> {
        asks.iter()
            .map(|(sql, params)| self.query(sql, params))
            .collect()
    }

    /// Runs a statement whose answer (the rows it changed) the caller does not need. A backend
    /// whose every statement is a round trip (PostgreSQL) may hold it and send it with the next
    /// statement; an error it meets then comes back from that next statement (or `flush`),
    /// never lost. The default runs it now.
    fn defer(&mut self, sql: &str, params: &[Param<'_>]) -> Result<(), DbError> {
        self.execute(sql, params).map(|_| ())
    }

    /// Sends what [`Conn::defer`] holds and answers its first error. The writer calls it at
    /// the end of each request, so an error is the request's that caused it.
    fn flush(&mut self) -> Result<(), DbError> {
        Ok(())
    }

    fn query_one(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Option<Row>, DbError> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    /// Runs a one-row `INSERT ... RETURNING id` and answers the new row's id. A backend may
    /// get the id its cheaper way (SQLite builds a temporary table for every RETURNING).
    fn insert_id(&mut self, sql: &str, params: &[Param<'_>]) -> Result<i64, DbError> {
        match self.query_one(sql, params)? {
            Some(row) => Ok(row.int(0)),
            None => Err(DbError {
                kind: DbErrorKind::Other,
                message: "an insert returned no id".into(),
            }),
        }
    }
}

/// Counts, for [`Conn::may_have_written`], the statements that may have written: the backends
/// call it with each statement's text and what came of it.
#[derive(Debug, Default)]
pub struct WriteCount(u64);

impl WriteCount {
    /// Notes a statement run for its rows: only a successful `SELECT` leaves the count alone.
    pub fn queried(&mut self, sql: &str, ok: bool) {
        if !(ok && first_word_is(sql, &["select"])) {
            self.0 += 1;
        }
    }

    /// Notes a statement run for its effect (`changed`: the rows it changed, `None` if it
    /// failed). A successful `INSERT`, `UPDATE` or `DELETE` that changed no row (an insert that
    /// met its `ON CONFLICT DO NOTHING`, an update that matched nothing) leaves the
    /// transaction as it was, as does a `SELECT`; anything else counts. The schema has no
    /// triggers, so a statement's changed rows are all it wrote.
    pub fn executed(&mut self, sql: &str, changed: Option<u64>) {
        let unchanged = match changed {
            Some(0) => first_word_is(sql, &["insert", "update", "delete", "select"]),
            Some(_) => first_word_is(sql, &["select"]),
            None => false,
        };
        if !unchanged {
            self.0 += 1;
        }
    }

    pub fn get(&self) -> u64 {
        self.0
    }

    /// Back to `mark`, every write since undone (`Conn::writes_undone_since`).
    pub fn rewind(&mut self, mark: u64) {
        self.0 = self.0.min(mark);
    }
}

/// True when `sql`'s first word is one of `words` (lower case), in any case.
fn first_word_is(sql: &str, words: &[&str]) -> bool {
    let first = sql
        .trim_start()
        .split(|c: char| !c.is_ascii_alphabetic())
        .next();
    first.is_some_and(|w| words.iter().any(|k| w.eq_ignore_ascii_case(k)))
}

#[cfg(test)]
mod tests {
    use super::WriteCount;

    #[test]
    fn only_a_successful_select_leaves_the_count_of_queries_alone() {
        let mut w = WriteCount::default();
        for sql in [
            "SELECT 1",
            "  select id FROM members",
            "Select x",
            "SELECT(1)",
        ] {
            w.queried(sql, true);
        }
        assert_eq!(w.get(), 0);
        // A failed SELECT counts (PostgreSQL aborts its transaction), as does anything else,
        // whatever it starts with.
        let others = [
            ("SELECT 1", false),
            ("INSERT INTO t VALUES (1) RETURNING id", true),
            ("WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x", true),
            ("UPDATE t SET v = 1 RETURNING id", true),
            ("SAVEPOINT job", true),
            ("", true),
            ("SELÉCT", true),
            ("SELEC", true),
            ("SELECTED", true),
        ];
        for (i, (sql, ok)) in others.into_iter().enumerate() {
            w.queried(sql, ok);
            assert_eq!(w.get(), i as u64 + 1, "{sql}");
        }
    }

    #[test]
    fn only_statements_that_changed_nothing_leave_the_count_of_executions_alone() {
        let mut w = WriteCount::default();
        for (sql, changed) in [
            ("INSERT INTO k VALUES (1) ON CONFLICT DO NOTHING", Some(0)),
            ("update t SET v = 1 WHERE id = 2", Some(0)),
            ("DELETE FROM t WHERE id = 2", Some(0)),
            ("SELECT 1", Some(0)),
            ("SELECT 1", Some(1)),
        ] {
            w.executed(sql, changed);
        }
        assert_eq!(w.get(), 0);
        let others = [
            ("INSERT INTO t VALUES (1)", Some(1)),
            ("UPDATE t SET v = 1", Some(3)),
            ("INSERT INTO t VALUES (1)", None),
            ("SELECT 1", None),
            // Statements whose changed-row count means nothing (SQLite answers the last
            // insert's): whatever they answer, they count.
            ("CREATE TABLE x (a INT)", Some(0)),
            ("PRAGMA user_version = 3", Some(0)),
            ("WITH x AS (SELECT 1) DELETE FROM t", Some(0)),
        ];
        for (i, (sql, changed)) in others.into_iter().enumerate() {
            w.executed(sql, changed);
            assert_eq!(w.get(), i as u64 + 1, "{sql}");
        }
    }
}
