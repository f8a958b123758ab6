//! `fidelis bench --storage-floor` on PostgreSQL: what the server allows, on this machine, for
//! the narrowest purchase a ledger could write, with none of Fidelis's logic. The tables are
//! those of SQLite's floor (`fidelis_store_sqlite::floor`): an order key, one append-only row
//! with an index by member, the member's balances. A commit of N purchases is one statement in
//! one round trip, its columns sent as arrays and spread by `unnest`, as the store posts a
//! batch's purchases together (`store/src/together.rs`); each is its own transaction, so every
//! purchase counted is durable (`synchronous_commit` as the server has it, on by default). The
//! tables live in a schema of their own, dropped at the end.

use fidelis_store::{Conn, Param};
use fidelis_store_sqlite::floor;
use std::time::{Duration, Instant};

/// One step: purchases written N per statement (and commit).
#[derive(Clone, Debug)]
pub struct PgStep {
    pub per_commit: usize,
    pub purchases: u64,
    pub commits: u64,
    pub seconds: f64,
    pub per_second: f64,
    /// The server process's CPU per purchase (None off Linux, or with the server elsewhere).
    pub postgres_cpu_us: Option<f64>,
    /// Mean time of a commit's statement, round trip and commit included.
    pub commit_ms_mean: f64,
}

const SCHEMA: &str = r#"
CREATE TABLE members (id BIGINT PRIMARY KEY, external_id TEXT NOT NULL, points BIGINT NOT NULL,
  spend_minor BIGINT NOT NULL, last_purchase BIGINT);
CREATE TABLE orders (order_id TEXT COLLATE "C" PRIMARY KEY, purchase_id BIGINT NOT NULL);
CREATE TABLE purchases (id BIGSERIAL PRIMARY KEY, member_id BIGINT NOT NULL, order_id TEXT NOT NULL,
  occurred_at BIGINT NOT NULL, total_minor BIGINT NOT NULL, points BIGINT NOT NULL,
  remaining BIGINT NOT NULL, expires_at BIGINT, payload TEXT NOT NULL);
CREATE INDEX purchases_by_member ON purchases (member_id, id);
"#;

/// A commit's purchases: rows in, order keys in, members' balances up (a member twice in one
/// commit is summed first).
const POST: &str = "WITH p AS (
  INSERT INTO purchases (member_id, order_id, occurred_at, total_minor, points, remaining, expires_at, payload)
  SELECT m, o, t, tot, pts, pts, t + 94608000000, pl
  FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::text[]) AS u(m, o, t, tot, pts, pl)
  RETURNING id, member_id, order_id, total_minor, points),
o AS (INSERT INTO orders (order_id, purchase_id) SELECT order_id, id FROM p)
UPDATE members SET points = members.points + s.pts, spend_minor = members.spend_minor + s.tot, last_purchase = s.last
FROM (SELECT member_id, SUM(points) AS pts, SUM(total_minor) AS tot, MAX(id) AS last FROM p GROUP BY member_id) s
WHERE members.id = s.member_id";

/// Measures on `c`, a connection whose schema is fresh and empty; returns the steps and the
/// purchases in the table at the end.
pub fn measure(
    c: &mut dyn Conn,
    members: usize,
    per_commit: &[usize],
    step: Duration,
) -> anyhow::Result<(Vec<PgStep>, u64)> {
    anyhow::ensure!(members > 0, "the storage floor needs at least one member");
    anyhow::ensure!(
        !per_commit.contains(&0),
        "purchases per commit must be at least 1"
    );
    c.batch(SCHEMA)?;
    c.execute(
        "INSERT INTO members (id, external_id, points, spend_minor) SELECT i, 'member-' || i, 0, 0 FROM generate_series(1, $1::bigint) AS i",
        &[(members as i64).into()],
    )?;
    c.batch("ANALYZE members")?;
    let backend = c
        .query_one("SELECT CAST(pg_backend_pid() AS BIGINT)", &[])?
        .map(|r| r.int(0).to_string());
    let cpu = || backend.as_deref().and_then(crate::bench::cpu_ticks);
    let mut draw = floor::Draw::for_members(members);
    let payload = floor::PAYLOAD;
    let mut steps = Vec::new();
    let mut written = 0u64;
    for &n in per_commit {
        let before = cpu();
        let start = Instant::now();
        let (mut purchases, mut commits) = (0u64, 0u64);
        let mut in_statements = Duration::ZERO;
        while start.elapsed() < step {
            let mut cols: [Vec<Option<i64>>; 4] = Default::default();
            let mut orders = Vec::with_capacity(n);
            for _ in 0..n {
                let p = draw.purchase(members);
                cols[0].push(Some(p.member_id));
                cols[1].push(Some(floor::occurred_at(written + purchases)));
                cols[2].push(Some(p.total_minor));
                cols[3].push(Some(p.points));
                orders.push(p.order_id);
                purchases += 1;
            }
            let order_ids: Vec<Option<&str>> = orders.iter().map(|o| Some(o.as_str())).collect();
            let payloads = vec![Some(payload); n];
            let t = Instant::now();
            c.execute(
                POST,
                &[
                    Param::Ints(&cols[0]),
                    Param::Texts(&order_ids),
                    Param::Ints(&cols[1]),
                    Param::Ints(&cols[2]),
                    Param::Ints(&cols[3]),
                    Param::Texts(&payloads),
                ],
            )?;
            in_statements += t.elapsed();
            commits += 1;
        }
        let seconds = start.elapsed().as_secs_f64();
        let postgres_cpu_us = match (before, cpu()) {
            (Some(a), Some(b)) => Some(
                b.saturating_sub(a) as f64 / crate::bench::TICKS_PER_SECOND * 1e6
                    / purchases.max(1) as f64,
            ),
            _ => None,
        };
        written += purchases;
        steps.push(PgStep {
            per_commit: n,
            purchases,
            commits,
            seconds,
            per_second: purchases as f64 / seconds,
            postgres_cpu_us,
            commit_ms_mean: in_statements.as_secs_f64() * 1e3 / commits.max(1) as f64,
        });
    }
    let count = c
        .query_one("SELECT COUNT(*) FROM purchases", &[])?
        .map_or(0, |r| r.int(0));
    Ok((steps, count as u64))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn the_postgresql_floor_writes_every_purchase_it_counts() {
        let Some(db) = fidelis_store_tests::TestDb::postgres() else {
            return;
        };
        let backend = crate::db::backend(&db.url).expect("a PostgreSQL URL");
        let mut c = backend.connect(false).expect("connects");
        let refused = super::measure(c.as_mut(), 0, &[1], Duration::from_millis(10));
        assert!(refused.is_err_and(|e| e.to_string().contains("at least one member")));
        let (steps, purchases) =
            super::measure(c.as_mut(), 40, &[1, 7], Duration::from_millis(200)).expect("measures");
        assert_eq!(steps.len(), 2);
        assert_eq!(steps[1].purchases, steps[1].commits * 7);
        assert!(steps[0].purchases > 0 && steps[1].purchases > 0);
        assert_eq!(purchases, steps.iter().map(|s| s.purchases).sum::<u64>());
        // 40 members, 7 purchases a commit: members come twice in a commit, and their
        // balances must still take every purchase.
        let sums = c
            .query_one(
                "SELECT CAST((SELECT SUM(points) FROM members) AS BIGINT), CAST((SELECT SUM(points) FROM purchases) AS BIGINT), CAST((SELECT COUNT(*) FROM orders) AS BIGINT)",
                &[],
            )
            .expect("sums")
            .expect("a row");
        assert_eq!(sums.int(0), sums.int(1));
        assert_eq!(sums.int(2) as u64, purchases);
    }
}
