//! Purchases written together: the purchases a writer finds in one batch are posted with a
//! few statements for the whole group instead of nine statements each. Rows are the same as
//! [`crate::events::purchase`] writes, field for field; only the number of statements (and, on
//! PostgreSQL, of round trips) changes.
//!
//! The group's members are locked and its order ids (and keys) checked first; ids are taken
//! for every row (sequences on PostgreSQL, with the look-ups, in one round trip:
//! `Conn::query_all`; the next row ids on SQLite's single writer), so each row can name its
//! neighbours and nothing has to be read back. PostgreSQL then writes every table in one
//! statement whose columns arrive as arrays (`unnest`): two round trips for any number of
//! purchases, three with keys (stored after). SQLite, where a statement costs no round trip, writes one multi-row
//! statement per table and each member's row with the one-by-one path's update; there the
//! group's look-ups cost more than a few purchases' statements, so a batch posts together only
//! from `StoreOptions::together_from` purchases (32).
//!
//! Only the plain case goes this way: a known member, an order id not seen before, an
//! idempotency key (if any) not seen before, and one purchase per member, per order and per
//! key in a round (a member's second purchase goes in the next round, up to [`ROUNDS`]). A key is stored with the purchase's answer, as `idem::run` stores it;
//! capped and budgeted awards are settled (`awards::settle_with`, the one-by-one path's own
//! function) as each purchase of the group is planned — on PostgreSQL against the chunk's
//! counters, locked at once before planning (`awards::LockedCounters`); then the tier step runs for
//! the whole chunk (`tiers::after_purchases`). Every
//! other purchase is left to run alone, after the group, through the same path as ever, so
//! anything unusual (enrolment, duplicates, conflicts, replayed keys) keeps exactly one
//! implementation. If a statement of the group fails, the writer rolls the whole batch back and
//! runs every request alone (see `runtime::run_batch`). `store-tests/tests/together.rs` posts
//! the same purchases both ways on both databases and compares every row.

use crate::conn::{Conn, Dialect, Param, Row};
use crate::error::{Result, StoreError};
use crate::idem::{self, IdemKey};
use crate::ledger::{expiry_for, ts};
use crate::model::{BalanceNow, PurchaseOutcome};
use crate::tiers::TierRow;
use fidelis_core::earn::Award;
use fidelis_core::event::{MemberKey, Purchase};
use fidelis_core::ledger::{Account, repay_debt};
use fidelis_core::program::ProgramSettings;
use fidelis_core::time::add_days;
use std::collections::{HashMap, HashSet};

/// Rows per multi-row statement at most. Groups are cut into chunks of 64, 32, 16, ... rows,
/// so each table has a few statement shapes, each prepared once per connection.
const CHUNK: usize = 64;

/// A purchase's texts as stored: its lines (the order's) and the event's payload. The
/// request's task makes them before it queues, so the single writer does not serialize them.
pub(crate) struct PurchaseTexts {
    pub lines: String,
    pub payload: String,
}

impl PurchaseTexts {
    pub(crate) fn of(p: &Purchase) -> Result<PurchaseTexts> {
        let lines = serde_json::to_string(&p.lines)?;
        // The payload is `{"lines": [...], "total": "12.34"}`, with the lines' text reused.
        let total = serde_json::to_string(&p.total.to_decimal())?;
        let payload = format!("{{\"lines\":{lines},\"total\":{total}}}");
        Ok(PurchaseTexts { lines, payload })
    }
}

/// One purchase waiting in a writer's queue.
pub(crate) struct PurchaseJob {
    pub tenant: String,
    pub purchase: Purchase,
    pub texts: PurchaseTexts,
    pub awards: Vec<Award>,
    pub settings: ProgramSettings,
    pub idem: Option<IdemKey>,
    pub now: i64,
}

impl PurchaseJob {
    /// Posts this purchase on its own: the path every purchase can take.
    pub(crate) fn run_alone(&self, c: &mut dyn Conn) -> Result<(PurchaseOutcome, bool)> {
        idem::run(c, &self.tenant, self.idem.as_ref(), self.now, |c| {
            crate::events::purchase(
                c,
                &self.tenant,
                &self.purchase,
                &self.texts,
                &self.awards,
                &self.settings,
                self.now,
            )
        })
    }

    fn idem_key(&self) -> Option<&str> {
        self.idem.as_ref().map(|k| k.key.as_str())
    }

    fn key(&self) -> (&str, Option<&str>, Option<&str>) {
        match &self.purchase.member {
            MemberKey::Id(id) => (id.as_str(), Some(id.as_str()), None),
            MemberKey::ExternalId(e) => (e.as_str(), None, Some(e.as_str())),
        }
    }
}

/// Posts what it can of `jobs` together; answers, per job, the outcome of those it posted and
/// `None` for those left to run alone.
pub(crate) fn write_together(
    c: &mut dyn Conn,
    jobs: &[&PurchaseJob],
) -> Result<Vec<Option<PurchaseOutcome>>> {
    let mut out: Vec<Option<PurchaseOutcome>> = (0..jobs.len()).map(|_| None).collect();
    let Some(first) = jobs.first() else {
        return Ok(out);
    };
    let tenant = first.tenant.as_str();
    // Rounds of one purchase per member and per order: a member's second purchase goes in
    // the next round, once the first's rows are written, and sees them as any later request
    // would (it used to run alone, six round trips on PostgreSQL against a share of one). What
    // a round leaves out (an unknown member, an order or key recorded before) runs alone after
    // the group, as does what is left after the last round.
    let mut waiting: Vec<usize> = (0..jobs.len())
        .filter(|&i| jobs[i].tenant == tenant)
        .collect();
    for _ in 0..ROUNDS {
        if waiting.is_empty() {
            break;
        }
        let (mut members, mut orders) = (HashSet::new(), HashSet::new());
        let (picked, later): (Vec<usize>, Vec<usize>) = waiting.iter().partition(|&&i| {
            let j = jobs[i];
            members.insert(j.key()) && orders.insert(j.purchase.order_id.as_str())
        });
        let mut rest = picked.as_slice();
        while !rest.is_empty() {
            let n = match c.dialect() {
                Dialect::Postgres => rest.len().min(PG_CHUNK),
                Dialect::Sqlite => chunk_len(rest.len()),
            };
            let (chunk, more) = rest.split_at(n);
            let group: Vec<&PurchaseJob> = chunk.iter().map(|&i| jobs[i]).collect();
            for (k, outcome) in write_chunk(c, tenant, &group)?.into_iter().enumerate() {
                out[chunk[k]] = outcome;
            }
            rest = more;
        }
        waiting = later;
    }
    Ok(out)
}

/// Rounds of a group at most (see `write_together`): a member's fifth purchase in one batch
/// runs alone.
const ROUNDS: usize = 4;

/// Purchases per chunk on PostgreSQL, whose statements take a chunk's keys and columns as
/// arrays: one statement text whatever the chunk's size, so no need to cut it in powers of two.
const PG_CHUNK: usize = 1_024;

/// "`column` is one of `keys`": the condition and the parameters of a query whose `$1` is the
/// tenant. The keys are one array parameter on PostgreSQL (one statement text for any number
/// of keys), a list of parameters on SQLite.
pub(crate) fn one_of<'a>(
    c: &dyn Conn,
    tenant: &'a str,
    column: &str,
    keys: &'a [Option<&'a str>],
) -> (String, Vec<Param<'a>>) {
    let mut params: Vec<Param<'a>> = vec![tenant.into()];
    let condition = match c.dialect() {
        Dialect::Postgres => {
            params.push(Param::Texts(keys));
            format!("{column} = ANY($2::text[])")
        }
        Dialect::Sqlite => {
            params.extend(keys.iter().map(|k| Param::from(*k)));
            format!("{column} IN ({})", list(keys.len(), 2))
        }
    };
    (condition, params)
}

/// The largest power of two not above `n`, at most [`CHUNK`].
fn chunk_len(n: usize) -> usize {
    let n = n.min(CHUNK);
    1 << (usize::BITS - 1 - n.leading_zeros())
}

/// `($k, $k+1, ...)` lists: `rows` tuples of `width` numbered parameters after `first`.
fn tuples(rows: usize, width: usize, first: usize) -> String {
    let mut s = String::with_capacity(rows * width * 5);
    for r in 0..rows {
        if r > 0 {
            s.push_str(", ");
        }
        s.push('(');
        for w in 0..width {
            if w > 0 {
                s.push_str(", ");
            }
            s.push('$');
            s.push_str(&(first + r * width + w).to_string());
        }
        s.push(')');
    }
    s
}

/// `$first, $first+1, ...`: `n` numbered parameters.
fn list(n: usize, first: usize) -> String {
    (first..first + n)
        .map(|k| format!("${k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Inserts `rows` (each `cols.len()` values) into `table`, with multi-row statements of
/// [`chunk_len`] rows each (SQLite only).
///
/// `OR FAIL`: a statement that writes several rows and may abort makes SQLite copy every page
/// it touches into a statement journal, to undo that statement alone (5 % of the writer's time
/// in an import). A failing statement here fails the whole batch, which is rolled back and runs
/// again one by one, so nothing needs undoing statement by statement.
fn insert_rows(
    c: &mut dyn Conn,
    table: &str,
    cols: &[&str],
    rows: &[Vec<Param<'_>>],
) -> Result<()> {
    let mut rest = rows;
    while !rest.is_empty() {
        let n = chunk_len(rest.len());
        let (chunk, more) = rest.split_at(n);
        let sql = format!(
            "INSERT OR FAIL INTO {table} ({}) VALUES {}",
            cols.join(", "),
            tuples(n, cols.len(), 1)
        );
        let params: Vec<Param<'_>> = chunk.iter().flatten().copied().collect();
        c.execute(&sql, &params)?;
        rest = more;
    }
    Ok(())
}

/// What one purchase of a chunk writes, worked out before any row is.
struct Plan<'a> {
    job: &'a PurchaseJob,
    member: String,
    available: i64,
    pending_balance: i64,
    occurred: i64,
    points: i64,
    pending: bool,
    matures: i64,
    expires_at: Option<i64>,
    repaid: i64,
    keep: i64,
    reason: String,
    event_id: i64,
    txn_id: i64,
    lot_id: i64,
    /// The purchase's awards, cut to their caps and budgets (`awards::settle`).
    awards: Vec<Award>,
    /// The member's tier state and bound, as this purchase leaves them.
    tier_row: TierRow,
    /// The member's soonest expiry dates with this purchase's lot, stored form (`None`: the
    /// lot does not join them and the row's list stays).
    expiring: Option<String>,
}

fn write_chunk(
    c: &mut dyn Conn,
    tenant: &str,
    group: &[&PurchaseJob],
) -> Result<Vec<Option<PurchaseOutcome>>> {
    let n = group.len();
    // The members, locked (in id order, so two writers never wait on each other in a cycle):
    // those named by id, then those named by external id. Each list has the group's size,
    // padded with NULLs (which match nothing), so each query keeps one shape per size (one in
    // all on PostgreSQL).
    let mut by_id: HashMap<String, (String, i64, i64, TierRow, String)> = HashMap::new();
    let mut by_ext: HashMap<String, String> = HashMap::new();
    let ids: Vec<Option<&str>> = group.iter().map(|j| j.key().1).collect();
    let exts: Vec<Option<&str>> = group.iter().map(|j| j.key().2).collect();
    // Orders already recorded run alone (they answer as duplicates or conflicts).
    let order_ids: Vec<Option<&str>> = group
        .iter()
        .map(|j| Some(j.purchase.order_id.as_str()))
        .collect();
    // Keys already used run alone (they replay their answer, or conflict).
    let keys: Vec<Option<&str>> = group.iter().map(|j| j.idem_key()).collect();
    // The look-ups need nothing of each other: sent together (one round trip on PostgreSQL).
    let mut asks: Vec<(String, Vec<Param<'_>>)> = Vec::new();
    let mut member_asks = 0;
    for (column, keys) in [("id", &ids), ("external_id", &exts)] {
        if keys.iter().all(Option::is_none) {
            continue;
        }
        let (condition, params) = one_of(c, tenant, column, keys);
        // The id order matters only where rows are locked. On SQLite (one writer, no row
        // locks) it would also make the planner walk the tenant's members in key order rather
        // than look the external ids up: every member read for each chunk.
        let order = match c.dialect() {
            Dialect::Postgres => " ORDER BY id FOR UPDATE",
            Dialect::Sqlite => "",
        };
        asks.push((
            format!(
                "SELECT id, external_id, available, pending, expiring, {} FROM members WHERE tenant_id = $1 AND {condition} AND {column} IS NOT NULL{order}",
                crate::tiers::TIER_COLUMNS,
            ),
            params,
        ));
        member_asks += 1;
    }
    let (condition, params) = one_of(c, tenant, "order_id", &order_ids);
    asks.push((
        format!("SELECT order_id FROM orders WHERE tenant_id = $1 AND {condition}"),
        params,
    ));
    let any_key = keys.iter().any(Option::is_some);
    if any_key {
        let (condition, params) = one_of(c, tenant, "key", &keys);
        asks.push((
            format!("SELECT key FROM idempotency WHERE tenant_id = $1 AND {condition}"),
            params,
        ));
    }
    // On PostgreSQL the row ids come from the sequences with the look-ups, for every purchase
    // of the chunk (those not posted leave a gap, as a rolled-back insert would).
    let n_ids = n as i64;
    if c.dialect() == Dialect::Postgres {
        asks.push((PG_IDS.to_string(), vec![n_ids.into(), n_ids.into()]));
    }
    let asked: Vec<(&str, &[Param<'_>])> = asks
        .iter()
        .map(|(sql, params)| (sql.as_str(), params.as_slice()))
        .collect();
    let mut answers = c.query_all(&asked)?.into_iter();
    for _ in 0..member_asks {
        for r in answers.next().unwrap_or_default() {
            let id = r.text(0);
            if let Some(ext) = r.opt_text(1) {
                by_ext.insert(ext, id.clone());
            }
            by_id.insert(
                id.clone(),
                (id, r.int(2), r.int(3), TierRow::of(&r, 5), r.text(4)),
            );
        }
    }
    let seen: HashSet<String> = answers
        .next()
        .unwrap_or_default()
        .iter()
        .map(|r| r.text(0))
        .collect();
    let used: HashSet<String> = if any_key {
        answers
            .next()
            .unwrap_or_default()
            .iter()
            .map(|r| r.text(0))
            .collect()
    } else {
        HashSet::new()
    };
    let pg_ids = answers.next();
    let mut keys_taken = HashSet::new();

    // Which purchases the group posts, and for which member.
    let mut taken = HashSet::new();
    let chosen: Vec<Option<String>> = group
        .iter()
        .map(|j| {
            let member = match &j.purchase.member {
                MemberKey::Id(id) => by_id.get(id).map(|m| m.0.clone()),
                MemberKey::ExternalId(e) => by_ext.get(e).cloned(),
            };
            // Two keys (an id and an external id) may name one member: the second runs alone;
            // so does a second purchase under one idempotency key.
            let fresh_key = j
                .idem_key()
                .is_none_or(|k| !used.contains(k) && keys_taken.insert(k));
            member.filter(|m| {
                fresh_key && !seen.contains(&j.purchase.order_id) && taken.insert(m.clone())
            })
        })
        .collect();
    // Capped and budgeted awards are settled under their counters' locks, after the members'
    // (the one-by-one path's order), purchase by purchase in the group's order. On PostgreSQL
    // the chunk's counters are created, locked and read at once, and written back at the end.
    let mut chunk_counters = match c.dialect() {
        Dialect::Postgres => {
            let keys = group
                .iter()
                .zip(&chosen)
                .filter_map(|(j, m)| m.as_deref().map(|m| (j, m)))
                .flat_map(|(j, m)| {
                    j.awards
                        .iter()
                        .flat_map(move |a| crate::awards::counter_keys(m, a))
                })
                .collect();
            Some(crate::awards::LockedCounters::load(c, tenant, keys)?)
        }
        Dialect::Sqlite => None,
    };
    let mut plans: Vec<Option<Plan<'_>>> = Vec::with_capacity(n);
    for (j, member) in group.iter().zip(chosen) {
        let Some(member) = member else {
            plans.push(None);
            continue;
        };
        let (_, available, pending_balance, ref tier_row, ref expiring) = by_id[&member];
        let orders_before = tier_row.orders;
        // The tier multiplier earns at the tier the member held before (as read, locked).
        let job_awards = fidelis_core::earn::with_tier_award(
            &j.awards,
            &j.settings,
            tier_row.st.tier.as_deref(),
            j.purchase.total.minor,
        );
        let tier_row = tier_row.clone().after_purchase(j.purchase.total.minor);
        let awards = match chunk_counters.as_mut() {
            Some(counters) => crate::awards::settle_with(
                c,
                counters,
                tenant,
                &member,
                Some(orders_before),
                &job_awards,
            )?,
            None => crate::awards::settle(c, tenant, &member, &job_awards)?,
        };
        let p = &j.purchase;
        let occurred = p.occurred_at.timestamp_micros();
        let points: i64 = awards.iter().map(|a| a.points).sum::<i64>().max(0);
        let matures = add_days(p.occurred_at, j.settings.pending_days).timestamp_micros();
        let pending = j.settings.pending_days > 0 && matures > j.now;
        let (repaid, keep) = if pending {
            (0, points)
        } else {
            repay_debt(points, available)
        };
        let expires_at = expiry_for(&j.settings, occurred);
        // One purchase per member in a chunk: the row's list is this purchase's to add to.
        let expiring = if points > 0 {
            crate::ledger::expiring_plus(expiring, expires_at, keep, pending)?
        } else {
            None
        };
        plans.push(Some(Plan {
            job: j,
            member,
            available,
            pending_balance,
            occurred,
            points,
            pending,
            matures,
            expires_at,
            repaid: if points > 0 { repaid } else { 0 },
            keep,
            reason: format!("purchase {}", p.order_id),
            event_id: 0,
            txn_id: 0,
            lot_id: 0,
            awards,
            tier_row,
            expiring,
        }));
    }
    if let Some(counters) = chunk_counters {
        counters.write(c, tenant)?;
    }
    let mut live: Vec<&mut Plan<'_>> = plans.iter_mut().flatten().collect();
    if live.is_empty() {
        return Ok((0..n).map(|_| None).collect());
    }

    // Row ids first, so every row can name its neighbours and each table is written in one
    // statement without reading ids back.
    let earning = live.iter().filter(|pl| pl.points > 0).count();
    let ids = match c.dialect() {
        Dialect::Postgres => Ids::of_pg_rows(&pg_ids.unwrap_or_default(), live.len(), earning)?,
        Dialect::Sqlite => sqlite_ids(c, live.len(), earning)?,
    };
    let mut next_ledger = ids.ledger.into_iter();
    for (pl, event_id) in live.iter_mut().zip(ids.events) {
        pl.event_id = event_id;
        if pl.points > 0 {
            (pl.txn_id, pl.lot_id) = next_ledger
                .next()
                .ok_or_else(|| StoreError::Busy("too few ids were taken".into()))?;
        }
    }

    // What each purchase answers (kept on its order for resends), and what it moves on the
    // member's row.
    let mut outcomes: Vec<(String, PurchaseOutcome)> = Vec::with_capacity(live.len());
    for pl in live.iter() {
        let p = &pl.job.purchase;
        let (da, dp) = pl.deltas();
        let outcome = PurchaseOutcome {
            event_id: pl.event_id,
            member_id: pl.member.clone(),
            order_id: p.order_id.clone(),
            points: pl.points,
            status: if pl.pending { "pending" } else { "available" }.into(),
            matures_at: pl.pending.then(|| ts(pl.matures)),
            expires_at: pl.expires_at.filter(|_| pl.points > 0).map(ts),
            breakdown: crate::awards::public(&pl.awards),
            debt_repaid: pl.repaid,
            enrolled: false,
            duplicate: false,
            balance: BalanceNow {
                available: pl.available + da,
                pending: pl.pending_balance + dp,
            },
        };
        outcomes.push((serde_json::to_string(&outcome)?, outcome));
    }
    let posted: Vec<&Plan<'_>> = live.iter().map(|pl| &**pl).collect();
    let results: Vec<&str> = outcomes.iter().map(|(json, _)| json.as_str()).collect();
    let awards = award_rows(&posted)?;
    let changed = match c.dialect() {
        Dialect::Postgres => write_rows_unnest(c, tenant, &posted, &awards, &results)?,
        Dialect::Sqlite => write_rows_multi(c, tenant, &posted, &awards, &results)?,
    };
    if changed != posted.len() as u64 {
        return Err(StoreError::Busy(format!(
            "{changed} of {} member rows updated",
            posted.len()
        )));
    }
    write_keys(c, tenant, &posted, &results)?;

    // What the programme adds after a purchase: cashback, member by member, then tier moves,
    // measured for the whole chunk at once where the purchases share a ladder (as
    // `member_value::after_purchase` does one by one).
    for pl in posted.iter() {
        let p = &pl.job.purchase;
        let s = &pl.job.settings;
        crate::credit::cashback(
            c,
            tenant,
            &pl.member,
            &p.order_id,
            p.total.minor,
            s,
            pl.job.now,
        )?;
    }
    let ladder = posted.iter().find_map(|pl| pl.job.settings.ladder());
    if let Some(ladder) = ladder {
        let mut same = Vec::with_capacity(posted.len());
        for pl in posted.iter() {
            if pl.job.settings.ladder().as_ref() == Some(&ladder) {
                same.push((pl.member.as_str(), pl.job.now, pl.tier_row.clone()));
            } else {
                crate::tiers::after_event(
                    c,
                    tenant,
                    &pl.member,
                    &pl.job.settings,
                    pl.job.now,
                    false,
                )?;
            }
        }
        crate::tiers::after_purchases(c, tenant, &ladder, &same)?;
    }
    let mut outcomes = outcomes.into_iter().map(|(_, o)| o);
    Ok(plans
        .iter()
        .map(|pl| pl.as_ref().and_then(|_| outcomes.next()))
        .collect())
}

impl Plan<'_> {
    /// The purchase's transaction when its lot keeps points (the member row notes it).
    fn open_txn(&self) -> Option<i64> {
        (self.points > 0 && self.keep > 0).then_some(self.txn_id)
    }

    /// What the purchase moves on the member's `available` and `pending` balances.
    fn deltas(&self) -> (i64, i64) {
        match (self.points > 0, self.pending) {
            (false, _) => (0, 0),
            (true, true) => (0, self.points),
            (true, false) => (self.points, 0),
        }
    }

    /// The member account the purchase's points go to.
    fn account(&self) -> Account {
        if self.pending {
            Account::Pending
        } else {
            Account::Available
        }
    }
}

/// Ids for a chunk's rows: an event per purchase, a journal transaction and a lot per earning
/// purchase.
struct Ids {
    events: Vec<i64>,
    ledger: Vec<(i64, i64)>,
}

/// Ids from the sequences (PostgreSQL): a row per purchase `g` up to `$1`, its event's id,
/// and, for `g <= $2`, its transaction's and lot's. Sequences hand out ids no other writer
/// will; ids left unused (purchases not posted, or not earning) are a gap, as a rolled-back
/// insert would leave. The sequences' names are looked up once per statement: without
/// MATERIALIZED PostgreSQL inlines the CTE and looks them up in the catalogue for every row
/// (11 % of its time).
const PG_IDS: &str = "WITH s AS MATERIALIZED (SELECT pg_get_serial_sequence('events', 'id') AS e, pg_get_serial_sequence('txns', 'id') AS t, pg_get_serial_sequence('lots', 'id') AS l) SELECT nextval(s.e), CASE WHEN g <= $2 THEN nextval(s.t) END, CASE WHEN g <= $2 THEN nextval(s.l) END FROM s, generate_series(1, $1) AS g ORDER BY g";

impl Ids {
    /// The first `purchases` event ids and `earning` ledger ids of [`PG_IDS`]'s rows.
    fn of_pg_rows(rows: &[Row], purchases: usize, earning: usize) -> Result<Ids> {
        if rows.len() < purchases || rows.iter().take(earning).any(|r| r.opt_int(1).is_none()) {
            return Err(StoreError::Busy("the database gave too few ids".into()));
        }
        Ok(Ids {
            events: rows.iter().take(purchases).map(|r| r.int(0)).collect(),
            ledger: rows
                .iter()
                .take(earning)
                .map(|r| (r.int(1), r.int(2)))
                .collect(),
        })
    }
}

/// One writer: the next ids are the largest so far plus one, as SQLite would choose.
fn sqlite_ids(c: &mut dyn Conn, purchases: usize, earning: usize) -> Result<Ids> {
    let r = c
        .query_one(
            "SELECT (SELECT COALESCE(MAX(id), 0) FROM events), (SELECT COALESCE(MAX(id), 0) FROM txns), (SELECT COALESCE(MAX(id), 0) FROM lots)",
            &[],
        )?
        .ok_or_else(|| StoreError::Busy("the database gave no ids".into()))?;
    let (e, t, l) = (r.int(0), r.int(1), r.int(2));
    Ok(Ids {
        events: (1..=purchases as i64).map(|k| e + k).collect(),
        ledger: (1..=earning as i64).map(|k| (t + k, l + k)).collect(),
    })
}

/// One award row, as `awards::record` writes it.
struct AwardRow<'a> {
    plan: &'a Plan<'a>,
    award: &'a Award,
    basis: Option<String>,
    basis_total: i64,
}

fn award_rows<'a>(plans: &[&'a Plan<'a>]) -> Result<Vec<AwardRow<'a>>> {
    let mut rows = Vec::new();
    for pl in plans {
        for a in crate::awards::recorded(&pl.awards) {
            let basis = a.terms.as_deref().and_then(|t| t.basis.as_ref());
            rows.push(AwardRow {
                plan: pl,
                award: a,
                basis: basis.map(serde_json::to_string).transpose()?,
                basis_total: basis.map_or(pl.job.purchase.total.minor, |b| b.total_minor),
            });
        }
    }
    Ok(rows)
}

/// PostgreSQL: the chunk's rows in one statement (one round trip), each column of the chunk
/// passed as one array and spread back into rows by `unnest`; one statement text whatever the
/// chunk's size. Answers how many member rows were updated.
fn write_rows_unnest(
    c: &mut dyn Conn,
    tenant: &str,
    plans: &[&Plan<'_>],
    awards: &[AwardRow<'_>],
    results: &[&str],
) -> Result<u64> {
    fn ints<T>(of: &[T], f: impl Fn(&T) -> Option<i64>) -> Vec<Option<i64>> {
        of.iter().map(f).collect()
    }
    fn texts<'a, T>(of: &'a [T], f: impl Fn(&'a T) -> Option<&'a str>) -> Vec<Option<&'a str>> {
        of.iter().map(f).collect()
    }
    let earns = |pl: &Plan<'_>| pl.points > 0;
    let p_ints = [
        ints(plans, |pl| Some(pl.event_id)),
        ints(plans, |pl| Some(pl.occurred)),
        ints(plans, |pl| Some(pl.job.now)),
        ints(plans, |pl| Some(pl.job.purchase.total.minor)),
        ints(plans, |pl| Some(pl.points)),
        ints(plans, |pl| earns(pl).then_some(pl.txn_id)),
        ints(plans, |pl| earns(pl).then_some(pl.lot_id)),
        ints(plans, |pl| Some(pl.keep)),
        ints(plans, |pl| Some(pl.matures)),
        ints(plans, |pl| pl.expires_at),
        ints(plans, |pl| Some(pl.deltas().0)),
        ints(plans, |pl| Some(pl.deltas().1)),
    ];
    let p_texts = [
        texts(plans, |pl| Some(pl.member.as_str())),
        texts(plans, |pl| Some(pl.job.purchase.order_id.as_str())),
        texts(plans, |pl| Some(pl.job.purchase.channel.as_str())),
        texts(plans, |pl| pl.job.purchase.store_id.as_deref()),
        texts(plans, |pl| Some(pl.job.purchase.total.currency.code())),
        texts(plans, |pl| Some(pl.job.texts.payload.as_str())),
        texts(plans, |pl| Some(pl.job.texts.lines.as_str())),
        texts(results, |r| Some(*r)),
        texts(plans, |pl| Some(pl.reason.as_str())),
        texts(plans, |pl| {
            Some(crate::ledger::lot_state(pl.keep, pl.pending))
        }),
        texts(plans, |pl| Some(pl.account().as_str())),
    ];
    let a_ints = [
        ints(awards, |a| Some(a.plan.event_id)),
        ints(awards, |a| a.award.rule_version),
        ints(awards, |a| Some(a.award.points)),
        ints(awards, |a| Some(a.basis_total)),
        ints(awards, |a| Some(a.plan.job.now)),
    ];
    let a_texts = [
        texts(awards, |a| Some(a.plan.job.purchase.order_id.as_str())),
        texts(awards, |a| Some(a.plan.member.as_str())),
        texts(awards, |a| Some(a.award.source.as_str())),
        texts(awards, |a| a.award.campaign.as_deref()),
        texts(awards, |a| a.basis.as_deref()),
    ];
    let mut params: Vec<Param<'_>> = vec![tenant.into()];
    params.extend(p_ints.iter().map(|v| Param::Ints(v)));
    params.extend(p_texts.iter().map(|v| Param::Texts(v)));
    params.extend(a_ints.iter().map(|v| Param::Ints(v)));
    params.extend(a_texts.iter().map(|v| Param::Texts(v)));
    let expiring = texts(plans, |pl| pl.expiring.as_deref());
    params.push(Param::Texts(&expiring));
    let row = c
        .query_one(&POST_UNNEST, &params)?
        .ok_or_else(|| StoreError::Busy("the chunk's statement answered nothing".into()))?;
    Ok(row.int(0).max(0) as u64)
}

/// The statement of [`write_rows_unnest`]: `$1` the tenant, `$2`–`$13` the purchases' integer
/// columns, `$14`–`$24` and `$35` their text columns, `$25`–`$29` and `$30`–`$34` the awards'. Every
/// sub-statement runs once, to completion, whether or not the last SELECT reads it. An event's
/// `tier_skip` is [`crate::tiers::tier_skip_sql`], the one-by-one path's expression.
static POST_UNNEST: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    POST_UNNEST_TEXT.replace(
        "{TIER_SKIP}",
        &crate::tiers::tier_skip_sql(crate::conn::Dialect::Postgres),
    )
});
const POST_UNNEST_TEXT: &str = "WITH p AS (
  SELECT * FROM unnest($2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[], $13::bigint[],
    $14::text[], $15::text[], $16::text[], $17::text[], $18::text[], $19::text[], $20::text[], $21::text[], $22::text[], $23::text[], $24::text[], $35::text[]) WITH ORDINALITY
    AS t(event_id, occurred_at, now, total_minor, points, txn_id, lot_id, keep, matures_at, expires_at, d_available, d_pending,
         member_id, order_id, channel, store_id, currency, payload, lines, result, reason, lot_state, account, expiring, ord)
), a AS (
  SELECT * FROM unnest($25::bigint[], $26::bigint[], $27::bigint[], $28::bigint[], $29::bigint[],
    $30::text[], $31::text[], $32::text[], $33::text[], $34::text[]) WITH ORDINALITY
    AS t(event_id, rule_version, points, basis_total, now, order_id, member_id, source, campaign_id, basis, ord)
), ev AS (
  INSERT INTO events (id, tenant_id, member_id, kind, type, order_id, occurred_at, recorded_at, channel, store_id, amount_minor, currency, payload, tier_skip)
  SELECT event_id, $1, member_id, 'purchase', 'purchase', order_id, occurred_at, now, channel, store_id, total_minor, currency, payload,
    {TIER_SKIP} FROM p ORDER BY ord
), aw AS (
  INSERT INTO awards (tenant_id, event_id, order_id, member_id, source, rule_version, campaign_id, points, basis, basis_total, basis_refunded, clawed_back, created_at)
  SELECT $1, event_id, order_id, member_id, source, rule_version, campaign_id, points, basis, basis_total, 0, 0, now FROM a ORDER BY ord
), tx AS (
  INSERT INTO txns (id, tenant_id, member_id, kind, reason, event_id, order_id, actor, created_at)
  SELECT txn_id, $1, member_id, 'earn', reason, event_id, order_id, NULL, now FROM p WHERE txn_id IS NOT NULL ORDER BY ord
), lo AS (
  INSERT INTO lots (id, tenant_id, member_id, txn_id, order_id, state, amount, remaining, earned_at, matures_at, expires_at, created_at)
  SELECT lot_id, $1, member_id, txn_id, order_id, lot_state, points, keep, occurred_at, matures_at, expires_at, now FROM p WHERE txn_id IS NOT NULL ORDER BY ord
), en AS (
  INSERT INTO entries (tenant_id, txn_id, member_id, account, lot_id, amount)
  SELECT $1, p.txn_id, p.member_id, e.account, e.lot_id, e.amount FROM p
    CROSS JOIN LATERAL (VALUES (1, p.account, p.lot_id, p.points), (2, 'issued', NULL, -p.points)) AS e(k, account, lot_id, amount)
    WHERE p.txn_id IS NOT NULL ORDER BY p.ord, e.k
), od AS (
  INSERT INTO orders (tenant_id, order_id, member_id, event_id, total_minor, lines, awarded, refunded_minor, clawed_back, refunded_lines, result)
  SELECT $1, order_id, member_id, event_id, total_minor, lines, points, 0, 0, '[]', result FROM p ORDER BY ord
), up AS (
  UPDATE members m SET available = m.available + p.d_available, pending = m.pending + p.d_pending,
    lifetime_earned = m.lifetime_earned + p.points, order_count = m.order_count + 1,
    lifetime_spend_minor = m.lifetime_spend_minor + p.total_minor, purchased_minor = m.purchased_minor + p.total_minor,
    last_activity_at = CASE WHEN m.last_activity_at IS NULL OR m.last_activity_at < p.occurred_at THEN p.occurred_at ELSE m.last_activity_at END,
    updated_at = p.now,
    open_lots_from = CASE WHEN p.keep > 0 AND (m.open_lots_from IS NULL OR m.open_lots_from > p.txn_id) THEN p.txn_id ELSE m.open_lots_from END,
    expiring = COALESCE(p.expiring, m.expiring)
  FROM p WHERE m.tenant_id = $1 AND m.id = p.member_id RETURNING 1
)
SELECT COUNT(*) FROM up";

/// The idempotency keys of the keyed purchases, each with its purchase's answer (what
/// `idem::run` stores). A key another writer stored meanwhile fails the statement on the
/// unique index, and the batch runs again one by one, where that key replays.
fn write_keys(c: &mut dyn Conn, tenant: &str, plans: &[&Plan<'_>], results: &[&str]) -> Result<()> {
    let keyed: Vec<(&IdemKey, &str, i64)> = plans
        .iter()
        .zip(results)
        .filter_map(|(pl, r)| pl.job.idem.as_ref().map(|k| (k, *r, pl.job.now)))
        .collect();
    if keyed.is_empty() {
        return Ok(());
    }
    let cols = ["tenant_id", "key", "request_hash", "response", "created_at"];
    match c.dialect() {
        Dialect::Postgres => {
            let keys: Vec<Option<&str>> = keyed.iter().map(|k| Some(k.0.key.as_str())).collect();
            let hashes: Vec<Option<&str>> = keyed
                .iter()
                .map(|k| Some(k.0.request_hash.as_str()))
                .collect();
            let answers: Vec<Option<&str>> = keyed.iter().map(|k| Some(k.1)).collect();
            let at: Vec<Option<i64>> = keyed.iter().map(|k| Some(k.2)).collect();
            let sql = format!(
                "INSERT INTO idempotency ({}) SELECT $1, k, h, r, t FROM unnest($2::text[], $3::text[], $4::text[], $5::bigint[]) AS x(k, h, r, t)",
                cols.join(", ")
            );
            let params = [
                tenant.into(),
                Param::Texts(&keys),
                Param::Texts(&hashes),
                Param::Texts(&answers),
                Param::Ints(&at),
            ];
            c.execute(&sql, &params)?;
        }
        Dialect::Sqlite => {
            let rows: Vec<Vec<Param<'_>>> = keyed
                .iter()
                .map(|(k, r, at)| {
                    vec![
                        tenant.into(),
                        k.key.as_str().into(),
                        k.request_hash.as_str().into(),
                        (*r).into(),
                        (*at).into(),
                    ]
                })
                .collect();
            insert_rows(c, "idempotency", &cols, &rows)?;
        }
    }
    Ok(())
}

/// SQLite (and the reference for the statement above): one multi-row statement per table.
/// Answers how many member rows were updated.
fn write_rows_multi(
    c: &mut dyn Conn,
    tenant: &str,
    plans: &[&Plan<'_>],
    awards: &[AwardRow<'_>],
    results: &[&str],
) -> Result<u64> {
    // SQLite's one writer: the programme's facts cannot change during the transaction.
    let tier_skip: Option<i64> = c
        .query_one(
            &format!("SELECT {}", crate::tiers::tier_skip_sql(c.dialect())),
            &[tenant.into()],
        )?
        .and_then(|r| r.opt_int(0));
    let rows: Vec<Vec<Param<'_>>> = plans
        .iter()
        .map(|pl| {
            let p = &pl.job.purchase;
            vec![
                pl.event_id.into(),
                tenant.into(),
                pl.member.as_str().into(),
                "purchase".into(),
                "purchase".into(),
                (&p.order_id).into(),
                pl.occurred.into(),
                pl.job.now.into(),
                p.channel.as_str().into(),
                p.store_id.as_ref().into(),
                p.total.minor.into(),
                p.total.currency.code().into(),
                pl.job.texts.payload.as_str().into(),
                tier_skip.into(),
            ]
        })
        .collect();
    insert_rows(
        c,
        "events",
        &[
            "id",
            "tenant_id",
            "member_id",
            "kind",
            "type",
            "order_id",
            "occurred_at",
            "recorded_at",
            "channel",
            "store_id",
            "amount_minor",
            "currency",
            "payload",
            "tier_skip",
        ],
        &rows,
    )?;
    let rows: Vec<Vec<Param<'_>>> = awards
        .iter()
        .map(|a| {
            vec![
                tenant.into(),
                a.plan.event_id.into(),
                (&a.plan.job.purchase.order_id).into(),
                a.plan.member.as_str().into(),
                a.award.source.as_str().into(),
                a.award.rule_version.into(),
                a.award.campaign.as_ref().into(),
                a.award.points.into(),
                a.basis.as_ref().into(),
                a.basis_total.into(),
                0i64.into(),
                0i64.into(),
                a.plan.job.now.into(),
            ]
        })
        .collect();
    insert_rows(
        c,
        "awards",
        &[
            "tenant_id",
            "event_id",
            "order_id",
            "member_id",
            "source",
            "rule_version",
            "campaign_id",
            "points",
            "basis",
            "basis_total",
            "basis_refunded",
            "clawed_back",
            "created_at",
        ],
        &rows,
    )?;
    let earning: Vec<&Plan<'_>> = plans.iter().copied().filter(|pl| pl.points > 0).collect();
    let rows: Vec<Vec<Param<'_>>> = earning
        .iter()
        .map(|pl| {
            vec![
                pl.txn_id.into(),
                tenant.into(),
                pl.member.as_str().into(),
                "earn".into(),
                pl.reason.as_str().into(),
                pl.event_id.into(),
                (&pl.job.purchase.order_id).into(),
                Param::Null,
                pl.job.now.into(),
            ]
        })
        .collect();
    insert_rows(
        c,
        "txns",
        &[
            "id",
            "tenant_id",
            "member_id",
            "kind",
            "reason",
            "event_id",
            "order_id",
            "actor",
            "created_at",
        ],
        &rows,
    )?;
    let rows: Vec<Vec<Param<'_>>> = earning
        .iter()
        .map(|pl| {
            vec![
                pl.lot_id.into(),
                tenant.into(),
                pl.member.as_str().into(),
                pl.txn_id.into(),
                (&pl.job.purchase.order_id).into(),
                crate::ledger::lot_state(pl.keep, pl.pending).into(),
                pl.points.into(),
                pl.keep.into(),
                pl.occurred.into(),
                pl.matures.into(),
                pl.expires_at.into(),
                pl.job.now.into(),
            ]
        })
        .collect();
    insert_rows(
        c,
        "lots",
        &[
            "id",
            "tenant_id",
            "member_id",
            "txn_id",
            "order_id",
            "state",
            "amount",
            "remaining",
            "earned_at",
            "matures_at",
            "expires_at",
            "created_at",
        ],
        &rows,
    )?;
    let mut rows: Vec<Vec<Param<'_>>> = Vec::with_capacity(earning.len() * 2);
    for pl in &earning {
        for (account, lot, amount) in [
            (pl.account(), Some(pl.lot_id), pl.points),
            (Account::Issued, None, -pl.points),
        ] {
            rows.push(vec![
                tenant.into(),
                pl.txn_id.into(),
                pl.member.as_str().into(),
                account.as_str().into(),
                lot.into(),
                amount.into(),
            ]);
        }
    }
    insert_rows(
        c,
        "entries",
        &[
            "tenant_id",
            "txn_id",
            "member_id",
            "account",
            "lot_id",
            "amount",
        ],
        &rows,
    )?;
    let rows: Vec<Vec<Param<'_>>> = plans
        .iter()
        .zip(results)
        .map(|(pl, result)| {
            let p = &pl.job.purchase;
            vec![
                tenant.into(),
                (&p.order_id).into(),
                pl.member.as_str().into(),
                pl.event_id.into(),
                p.total.minor.into(),
                pl.job.texts.lines.as_str().into(),
                pl.points.into(),
                0i64.into(),
                0i64.into(),
                "[]".into(),
                (*result).into(),
            ]
        })
        .collect();
    insert_rows(
        c,
        "orders",
        &[
            "tenant_id",
            "order_id",
            "member_id",
            "event_id",
            "total_minor",
            "lines",
            "awarded",
            "refunded_minor",
            "clawed_back",
            "refunded_lines",
            "result",
        ],
        &rows,
    )?;
    // Each member's row updated by the one-by-one path's own statement (prepared once). One
    // `UPDATE ... FROM (VALUES ...)` for the chunk was planned by SQLite 3.50 as a walk of
    // every member of the tenant, probing the values through an automatic index: 47 % of the
    // writer's time with 10,000 members, and more the more members.
    let mut updated = 0;
    for pl in plans {
        let (da, dp) = pl.deltas();
        updated += c.execute(
            &crate::events::PURCHASE_MEMBER_UPDATE,
            &[
                tenant.into(),
                pl.member.as_str().into(),
                da.into(),
                dp.into(),
                pl.points.into(),
                pl.job.purchase.total.minor.into(),
                pl.occurred.into(),
                pl.job.now.into(),
                pl.open_txn().into(),
                pl.expiring.as_deref().into(),
            ],
        )?;
    }
    Ok(updated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_powers_of_two_up_to_the_cap() {
        assert_eq!(chunk_len(1), 1);
        assert_eq!(chunk_len(3), 2);
        assert_eq!(chunk_len(64), 64);
        assert_eq!(chunk_len(100), 64);
        assert_eq!(chunk_len(63), 32);
    }

    proptest::proptest! {
        /// The payload made from the lines' text is the JSON of the whole (its lines' keys in
        /// the struct's order, as the order's lines have always been, where a `json!` value
        /// sorted them: readers parse it, none compares texts).
        #[test]
        fn purchase_texts_are_what_serde_json_writes(
            lines in proptest::collection::vec(
                (".{0,12}", proptest::option::of(".{0,8}"), -5i64..1000, 0i64..10_000_000),
                0..4,
            ),
            total in 0i64..i64::MAX,
            yen in proptest::bool::ANY,
        ) {
            use fidelis_core::event::{Channel, Line};
            use fidelis_core::money::{Currency, Money};
            let currency = Currency::parse(if yen { "JPY" } else { "EUR" }).expect("known");
            let p = Purchase {
                member: MemberKey::Id("m".into()),
                order_id: "o".into(),
                occurred_at: chrono::DateTime::from_timestamp(0, 0).expect("epoch"),
                channel: Channel::Pos,
                store_id: None,
                total: Money::new(total, currency),
                lines: lines
                    .into_iter()
                    .map(|(sku, category, quantity, unit_price_minor)| Line { sku, category, quantity, unit_price_minor })
                    .collect(),
            };
            let texts = PurchaseTexts::of(&p).expect("serializes");
            let whole = serde_json::json!({ "lines": p.lines, "total": p.total.to_decimal() });
            let payload: serde_json::Value = serde_json::from_str(&texts.payload).expect("JSON");
            proptest::prop_assert_eq!(payload, whole);
            proptest::prop_assert_eq!(texts.lines, serde_json::to_string(&p.lines).expect("lines"));
        }
    }

    #[test]
    fn tuples_number_parameters_row_by_row() {
        assert_eq!(tuples(2, 3, 2), "($2, $3, $4), ($5, $6, $7)");
        assert_eq!(tuples(1, 2, 1), "($1, $2)");
    }
}
