//! PostgreSQL behind Fidelis's store. Every store thread owns one connection, so no pool is
//! needed, and statements are prepared once per connection. `synchronous_commit` stays on:
//! PostgreSQL already shares WAL flushes between concurrent committers.
//!
//! The connection is tokio-postgres driven by a current-thread runtime of its own, blocking
//! the store's thread while it waits (what the blocking `postgres` client does), so that a
//! statement whose answer the store does not need ([`Conn::defer`]) can be held and sent with
//! the next one: tokio-postgres writes a request when its future is first polled, so the held
//! statements and the next one leave in one write and their answers come back in order — one
//! round trip instead of several (a refund's writes, a redemption's).
//!
//! A URL may carry `schema=NAME` (Fidelis's own parameter): the store then works in that
//! schema, created if missing. Tests use it to give every test its own database.

use fidelis_store::conn::WriteCount;
use fidelis_store::{Backend, Conn, DbError, DbErrorKind, Dialect, Param, Row, Value};
use std::collections::HashMap;
use std::error::Error;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::task::Poll;
use tokio::runtime::Runtime;
use tokio_postgres::types::{IsNull, Kind, ToSql, Type, to_sql_checked};
use tokio_postgres::{Client, NoTls, Statement};

pub struct Postgres {
    config: tokio_postgres::Config,
    schema: Option<String>,
}

impl Postgres {
    /// Parses `postgres://` or `postgresql://` URLs; `schema=NAME` is taken out and used.
    pub fn from_url(url: &str) -> Result<Postgres, String> {
        let (base, query) = url.split_once('?').map_or((url, ""), |(b, q)| (b, q));
        let mut schema = None;
        let mut rest = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("schema", v)) => schema = Some(v.to_string()),
                _ => rest.push(pair),
            }
        }
        if let Some(s) = &schema {
            let ok = !s.is_empty()
                && s.len() <= 63
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !ok {
                return Err(format!(
                    "schema `{s}` must be 1 to 63 characters of a-z, 0-9 and _"
                ));
            }
        }
        let url = if rest.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", rest.join("&"))
        };
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| format!("invalid PostgreSQL URL: {e}"))?;
        Ok(Postgres { config, schema })
    }
}

fn db_err(e: tokio_postgres::Error) -> DbError {
    let kind = match e.code().map(|c| c.code()) {
        Some("23505") => DbErrorKind::Unique,
        Some("40001" | "40P01" | "55P03") => DbErrorKind::Retry,
        Some(c) if c.starts_with("08") => DbErrorKind::Connection,
        None if e.is_closed() => DbErrorKind::Connection,
        _ => DbErrorKind::Other,
    };
    let message = match e.as_db_error() {
        Some(db) => format!(
            "{}: {}{}",
            db.code().code(),
            db.message(),
            db.constraint()
                .map(|c| format!(" ({c})"))
                .unwrap_or_default()
        ),
        None => e.to_string(),
    };
    DbError { kind, message }
}

impl Backend for Postgres {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn connect(&self, _read_only: bool) -> Result<Box<dyn Conn>, DbError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| DbError {
                kind: DbErrorKind::Connection,
                message: format!("cannot start the connection's runtime: {e}"),
            })?;
        let (client, connection) = rt.block_on(self.config.connect(NoTls)).map_err(db_err)?;
        // Runs whenever the thread blocks on the runtime, which is whenever it waits for the
        // server; it ends when the client is dropped or the server goes away.
        rt.spawn(connection);
        let mut conn = PgConn {
            rt,
            client,
            statements: HashMap::new(),
            replan: Replan::default(),
            written: WriteCount::default(),
            held: Vec::new(),
        };
        if let Some(schema) = &self.schema {
            // The name was checked to be [a-z0-9_]+, so quoting it is enough.
            let create = format!(
                "CREATE SCHEMA IF NOT EXISTS \"{schema}\"; SET search_path TO \"{schema}\""
            );
            let set = format!("SET search_path TO \"{schema}\"");
            conn.simple(&create)
                .or_else(|e| {
                    // Two connections creating the schema at once: one loses the race; set the path.
                    if e.code().map(|c| c.code()) == Some("23505") {
                        conn.simple(&set)
                    } else {
                        Err(e)
                    }
                })
                .map_err(db_err)?;
        }
        Ok(Box::new(conn))
    }
}

/// Statements run on a connection before its prepared statements are first dropped and
/// prepared again; each later round waits four times longer, up to [`LAST_REPLAN`].
///
/// PostgreSQL settles on a generic plan for a prepared statement after a few runs and keeps
/// it. Made while a table is still small (a new database, a new tenant), that plan may look
/// rows up by tenant alone and filter the rest: the orders check of a batch then read every
/// order of the tenant, and throughput fell as the table grew. Preparing again lets the
/// planner see the tables as they are now.
const FIRST_REPLAN: u64 = 1_000;
const LAST_REPLAN: u64 = 4_096_000;

struct PgConn {
    rt: Runtime,
    client: Client,
    statements: HashMap<String, Statement>,
    replan: Replan,
    /// Statements that may have written (`Conn::may_have_written`).
    written: WriteCount,
    /// Statements [`Conn::defer`] holds until the next one is sent.
    held: Vec<Held>,
}

/// A statement held to be sent with the next, with its own copy of its parameters.
struct Held {
    statement: Statement,
    params: Vec<Owned>,
}

/// When a connection's prepared statements are next dropped (see [`FIRST_REPLAN`]).
struct Replan {
    /// Statements run since the connection opened.
    runs: u64,
    at: u64,
    every: u64,
}

impl Default for Replan {
    fn default() -> Self {
        Replan {
            runs: 0,
            at: FIRST_REPLAN,
            every: FIRST_REPLAN,
        }
    }
}

impl Replan {
    /// Counts one statement run; true when the statements are to be prepared again.
    fn due(&mut self) -> bool {
        self.runs += 1;
        if self.runs < self.at {
            return false;
        }
        self.every = (self.every * 4).min(LAST_REPLAN);
        self.at = self.runs + self.every;
        true
    }
}

impl PgConn {
    fn run(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, DbError> {
        let stmt = self.statement(sql)?;
        let ps: Vec<P<'_>> = params.iter().map(|p| P(*p)).collect();
        let refs: Vec<&(dyn ToSql + Sync)> = ps.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        let held = std::mem::take(&mut self.held);
        pipelined(
            &self.rt,
            &held,
            &self.client,
            self.client.execute(&stmt, &refs),
        )
    }

    fn rows(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, DbError> {
        let stmt = self.statement(sql)?;
        let ps: Vec<P<'_>> = params.iter().map(|p| P(*p)).collect();
        let refs: Vec<&(dyn ToSql + Sync)> = ps.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        let held = std::mem::take(&mut self.held);
        let rows = pipelined(
            &self.rt,
            &held,
            &self.client,
            self.client.query(&stmt, &refs),
        )?;
        Ok(rows.iter().map(values).collect())
    }

    /// Statements without parameters, by the simple protocol (several may share the text).
    fn simple(&mut self, sql: &str) -> Result<(), tokio_postgres::Error> {
        self.rt.block_on(self.client.batch_execute(sql))
    }

    fn statement(&mut self, sql: &str) -> Result<Statement, DbError> {
        if self.replan.due() {
            self.statements.clear();
        }
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        // Preparing is a round trip of its own: what is held goes first, so a held
        // statement's error is the one reported (the transaction is aborted after it).
        self.flush()?;
        let s = self.rt.block_on(self.client.prepare(sql)).map_err(db_err)?;
        self.statements.insert(sql.to_string(), s.clone());
        Ok(s)
    }
}

/// Sends the `held` statements, then `next`, in one write, and waits for all their answers:
/// `next`'s, or the first held statement's error (PostgreSQL then refuses the rest of the
/// transaction, so `next`'s own error would only say that).
fn pipelined<T>(
    rt: &Runtime,
    held: &[Held],
    client: &Client,
    next: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, DbError> {
    let refs: Vec<Vec<&(dyn ToSql + Sync)>> = held
        .iter()
        .map(|h| h.params.iter().map(|p| p as &(dyn ToSql + Sync)).collect())
        .collect();
    let sent = in_order(
        held.iter()
            .zip(&refs)
            .map(|(h, r)| Box::pin(client.execute(&h.statement, r)) as Sent<'_, u64>)
            .collect(),
    );
    let (held, answer) = rt.block_on(in_order_both(sent, next));
    match held.into_iter().find_map(Result::err) {
        Some(e) => Err(db_err(e)),
        None => answer.map_err(db_err),
    }
}

type Answered<T> = Result<T, tokio_postgres::Error>;
type Sent<'a, T> = Pin<Box<dyn Future<Output = Answered<T>> + 'a>>;
/// A request on its way, then its answer.
type Slot<'a, T> = (Option<Sent<'a, T>>, Option<Answered<T>>);

/// Polls the futures in order every time (tokio-postgres writes a request when its future is
/// first polled, so the requests leave in this order, together) and answers every result, in
/// the same order, once all are in.
fn in_order<'a, T: 'a>(futures: Vec<Sent<'a, T>>) -> impl Future<Output = Vec<Answered<T>>> + 'a {
    let mut slots: Vec<Slot<'a, T>> = futures.into_iter().map(|f| (Some(f), None)).collect();
    poll_fn(move |cx| {
        for (future, out) in slots.iter_mut() {
            if let Some(f) = future
                && let Poll::Ready(r) = f.as_mut().poll(cx)
            {
                *out = Some(r);
                *future = None;
            }
        }
        if slots.iter().any(|(future, _)| future.is_some()) {
            return Poll::Pending;
        }
        Poll::Ready(slots.iter_mut().filter_map(|(_, out)| out.take()).collect())
    })
}

/// `first` then `second`, polled in that order, both answered.
async fn in_order_both<A, B>(
    first: impl Future<Output = A>,
    second: impl Future<Output = B>,
) -> (A, B) {
    let (mut first, mut second) = (pin!(first), pin!(second));
    let (mut a, mut b) = (None, None);
    poll_fn(|cx| {
        if a.is_none()
            && let Poll::Ready(v) = first.as_mut().poll(cx)
        {
            a = Some(v);
        }
        if b.is_none()
            && let Poll::Ready(v) = second.as_mut().poll(cx)
        {
            b = Some(v);
        }
        match (a.take(), b.take()) {
            (Some(x), Some(y)) => Poll::Ready((x, y)),
            (x, y) => {
                (a, b) = (x, y);
                Poll::Pending
            }
        }
    })
    .await
}

#[derive(Debug)]
struct P<'a>(Param<'a>);

impl ToSql for P<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut tokio_postgres::types::private::BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        encode(self.0, ty, out)
    }
    fn accepts(_: &Type) -> bool {
        true
    }
    to_sql_checked!();
}

fn encode(
    p: Param<'_>,
    ty: &Type,
    out: &mut tokio_postgres::types::private::BytesMut,
) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
    match p {
        Param::Null => Ok(IsNull::Yes),
        Param::Int(v) if *ty == Type::INT4 => i32::try_from(v)?.to_sql(ty, out),
        Param::Int(v) if *ty == Type::INT2 => i16::try_from(v)?.to_sql(ty, out),
        Param::Int(v) if *ty == Type::TEXT || *ty == Type::VARCHAR => v.to_string().to_sql(ty, out),
        Param::Int(v) => v.to_sql(ty, out),
        Param::Text(t) => t.to_sql(ty, out),
        // An array where the statement wants something else is a mistake in our SQL; the
        // array encoder would panic on it, so it is refused here.
        Param::Ints(_) | Param::Texts(_) if !matches!(ty.kind(), Kind::Array(_)) => {
            Err(format!("an array parameter given where {ty} is expected").into())
        }
        Param::Ints(v) => v.to_sql(ty, out),
        Param::Texts(v) => v.to_sql(ty, out),
    }
}

/// A parameter of a held statement: its own copy, as the caller's borrow ends before it is
/// sent.
#[derive(Debug)]
enum Owned {
    Null,
    Int(i64),
    Text(String),
    Ints(Vec<Option<i64>>),
    Texts(Vec<Option<String>>),
}

impl Owned {
    fn of(p: &Param<'_>) -> Owned {
        match *p {
            Param::Null => Owned::Null,
            Param::Int(v) => Owned::Int(v),
            Param::Text(t) => Owned::Text(t.to_string()),
            Param::Ints(v) => Owned::Ints(v.to_vec()),
            Param::Texts(v) => Owned::Texts(v.iter().map(|t| t.map(str::to_string)).collect()),
        }
    }
}

impl ToSql for Owned {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut tokio_postgres::types::private::BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        match self {
            Owned::Null => encode(Param::Null, ty, out),
            Owned::Int(v) => encode(Param::Int(*v), ty, out),
            Owned::Text(t) => encode(Param::Text(t), ty, out),
            Owned::Ints(v) => encode(Param::Ints(v), ty, out),
            Owned::Texts(v) => {
                let texts: Vec<Option<&str>> = v.iter().map(Option::as_deref).collect();
                encode(Param::Texts(&texts), ty, out)
            }
        }
    }
    fn accepts(_: &Type) -> bool {
        true
    }
    to_sql_checked!();
}

fn values(row: &tokio_postgres::Row) -> Row {
    let mut out = Vec::with_capacity(row.len());
    for (i, col) in row.columns().iter().enumerate() {
        let t = col.type_();
        let v = if *t == Type::INT8 {
            row.get::<_, Option<i64>>(i).map_or(Value::Null, Value::Int)
        } else if *t == Type::INT4 {
            row.get::<_, Option<i32>>(i)
                .map_or(Value::Null, |v| Value::Int(i64::from(v)))
        } else if *t == Type::INT2 {
            row.get::<_, Option<i16>>(i)
                .map_or(Value::Null, |v| Value::Int(i64::from(v)))
        } else if *t == Type::BOOL {
            row.get::<_, Option<bool>>(i)
                .map_or(Value::Null, |v| Value::Int(i64::from(v)))
        } else if *t == Type::TEXT || *t == Type::VARCHAR || *t == Type::NAME || *t == Type::BPCHAR
        {
            row.get::<_, Option<String>>(i)
                .map_or(Value::Null, Value::Text)
        } else {
            Value::Null
        };
        out.push(v);
    }
    Row(out)
}

impl Conn for PgConn {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, DbError> {
        let changed = self.run(sql, params);
        self.written.executed(sql, changed.as_ref().ok().copied());
        changed
    }

    fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, DbError> {
        let rows = self.rows(sql, params);
        self.written.queried(sql, rows.is_ok());
        rows
    }

    fn batch(&mut self, sql: &str) -> Result<(), DbError> {
        self.written.executed(sql, None);
        let held = std::mem::take(&mut self.held);
        pipelined(
            &self.rt,
            &held,
            &self.client,
            self.client.batch_execute(sql),
        )
    }

    fn query_all(&mut self, asks: &[(&str, &[Param<'_>])]) -> Result<Vec<Vec<Row>>, DbError> {
        let mut statements = Vec::with_capacity(asks.len());
        for (sql, _) in asks {
            statements.push(self.statement(sql)?);
        }
        let ps: Vec<Vec<P<'_>>> = asks
            .iter()
            .map(|(_, params)| params.iter().map(|p| P(*p)).collect())
            .collect();
        let refs: Vec<Vec<&(dyn ToSql + Sync)>> = ps
            .iter()
            .map(|v| v.iter().map(|p| p as &(dyn ToSql + Sync)).collect())
            .collect();
        let client = &self.client;
        let queries = in_order(
            statements
                .iter()
                .zip(&refs)
                .map(|(s, r)| Box::pin(client.query(s, r)) as Sent<'_, Vec<tokio_postgres::Row>>)
                .collect(),
        );
        let held = std::mem::take(&mut self.held);
        let answers = pipelined(&self.rt, &held, client, async {
            queries.await.into_iter().collect::<Result<Vec<_>, _>>()
        });
        for (sql, _) in asks {
            self.written.queried(sql, answers.is_ok());
        }
        Ok(answers?
            .iter()
            .map(|rows| rows.iter().map(values).collect())
            .collect())
    }

    fn defer(&mut self, sql: &str, params: &[Param<'_>]) -> Result<(), DbError> {
        let statement = self.statement(sql)?;
        // Counted as a write whatever it does: its outcome is not known yet.
        self.written.executed(sql, None);
        self.held.push(Held {
            statement,
            params: params.iter().map(Owned::of).collect(),
        });
        Ok(())
    }

    fn flush(&mut self) -> Result<(), DbError> {
        if self.held.is_empty() {
            return Ok(());
        }
        let held = std::mem::take(&mut self.held);
        pipelined(&self.rt, &held, &self.client, std::future::ready(Ok(())))
    }

    fn may_have_written(&self) -> Option<u64> {
        Some(self.written.get())
    }

    fn writes_undone_since(&mut self, mark: u64) {
        self.written.rewind(mark);
    }

    fn is_broken(&self) -> bool {
        self.client.is_closed()
    }
}

impl Drop for PgConn {
    /// What is still held is sent: a caller that ends with a deferred statement outside a
    /// transaction still gets it run. (In a transaction nothing is left: COMMIT sends it.)
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_prepared_again_at_growing_intervals_up_to_the_cap() {
        let mut r = Replan::default();
        let due: Vec<u64> = (1..=30_000_000u64).filter(|_| r.due()).collect();
        assert_eq!(&due[..5], &[1_000, 5_000, 21_000, 85_000, 341_000]);
        // Past the cap the rounds stay the cap's length.
        let gaps: Vec<u64> = due.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.iter().all(|&g| g <= LAST_REPLAN));
        assert_eq!(gaps.last(), Some(&LAST_REPLAN));
    }
}
