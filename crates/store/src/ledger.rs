//! Postings: journal transactions whose entries sum to zero, lots, and the cached balances on
//! the member row, all changed in one database transaction. Also adjustments, balances and a
//! member's history. Callers hold the member's row lock (see [`lock_member`]) before posting.

use crate::conn::{Conn, Param, Row};
use crate::error::{Result, StoreError};
use crate::model::{AdjustOutcome, Balance, BalanceNow, EntryView, Expiring, LedgerTxn, Page};
use fidelis_core::ledger::{
    Account, EXPIRING_KEPT, LotView, SoonestExpiring, head_decides, repay_debt, take_from_lots,
};
use fidelis_core::program::{ExpiryPolicy, ProgramSettings};
use fidelis_core::time::{add_months, format, from_micros};

pub(crate) fn ts(us: i64) -> String {
    format(from_micros(us))
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct MemberState {
    pub available: i64,
    pub pending: i64,
}

impl MemberState {
    pub fn now(&self) -> BalanceNow {
        BalanceNow {
            available: self.available,
            pending: self.pending,
        }
    }
}

/// Reads a member's balances and locks the row until the transaction ends (PostgreSQL).
pub(crate) fn lock_member(
    c: &mut dyn Conn,
    tenant: &str,
    member: &str,
) -> Result<Option<MemberState>> {
    let sql = format!(
        "SELECT available, pending FROM members WHERE tenant_id = $1 AND id = $2{}",
        c.dialect().for_update()
    );
    Ok(c.query_one(&sql, &[tenant.into(), member.into()])?
        .map(|r| MemberState {
            available: r.int(0),
            pending: r.int(1),
        }))
}

/// Like [`lock_member`], and notes the member's activity at `at` in the same statement (one
/// round trip on PostgreSQL instead of two): for jobs that are the member's own doing. A job
/// refused after it rolls the note back with the rest.
pub(crate) fn lock_active_member(
    c: &mut dyn Conn,
    tenant: &str,
    member: &str,
    at: i64,
    now: i64,
) -> Result<Option<MemberState>> {
    Ok(c.query_one(
        LOCK_ACTIVE_MEMBER,
        &[tenant.into(), member.into(), at.into(), now.into()],
    )?
    .as_ref()
    .map(member_state))
}

/// [`lock_active_member`]'s statement (parameters tenant, member, at, now), for a caller that
/// sends it with other reads ([`Conn::query_all`]); [`member_state`] reads its row.
pub(crate) const LOCK_ACTIVE_MEMBER: &str = "UPDATE members SET last_activity_at = CASE WHEN last_activity_at IS NULL OR last_activity_at < $3 THEN $3 ELSE last_activity_at END, updated_at = $4 WHERE tenant_id = $1 AND id = $2 RETURNING available, pending";

/// The balances of a row whose first columns are `available, pending`.
pub(crate) fn member_state(r: &Row) -> MemberState {
    MemberState {
        available: r.int(0),
        pending: r.int(1),
    }
}

#[derive(Debug, Clone)]
pub(crate) struct LotRow {
    pub id: i64,
    pub state: String,
    pub remaining: i64,
    pub expires_at: Option<i64>,
    pub order_id: Option<String>,
}

impl LotRow {
    pub fn view(&self) -> LotView {
        LotView {
            id: self.id,
            remaining: self.remaining,
            expires_at: self.expires_at,
        }
    }
}

/// The member's lots with points left, `l`, for a query's `FROM`: `$1` the tenant, `member`
/// the SQL that gives the member's id (`$2`, or a subquery). They are found through the
/// member's transactions from the member row's `open_lots_from` mark (no index of lots by
/// member: it cost a random page per purchase). A lot belongs to its transaction's member
/// (`verify` checks it), so the lot's own member is not tested again: on PostgreSQL that
/// redundant test made the generic plan expect one row and sort every open lot of the member
/// before taking the first or last few (members with 40 past purchases and 5 % of purchases
/// returned: PostgreSQL's CPU per operation ×0.80, purchases/s ×1.21–1.27); without it, the
/// plan walks the transactions in order and stops at the limit (an incremental sort).
pub(crate) fn open_lots_of(member: &str) -> String {
    format!(
        "members m JOIN txns t ON t.tenant_id = m.tenant_id AND t.member_id = m.id AND t.id >= m.open_lots_from JOIN lots l ON l.txn_id = t.id WHERE m.tenant_id = $1 AND m.id = {member} AND l.remaining > 0"
    )
}

/// Whether `takes` (lot id, points) empty any of the member's `open` lots: only then can the
/// mark move.
pub(crate) fn empties_a_lot(open: &[LotRow], takes: &[(i64, i64)]) -> bool {
    takes
        .iter()
        .any(|(id, n)| open.iter().any(|l| l.id == *id && l.remaining == *n))
}

/// Moves the member's mark past lots emptied since: called after lots were emptied. A mark
/// left behind is only slower, never wrong. The first transaction from the mark with an open
/// lot, walking the member's transactions in order and stopping there: `MIN(l.txn_id)` over the
/// join, the same value, made both databases read every transaction after the mark and its
/// lot (a redemption by a member with a hundred open lots read them all, 1 ms on SQLite).
pub(crate) fn advance_open_lots(c: &mut dyn Conn, tenant: &str, member: &str) -> Result<()> {
    c.defer(
        "UPDATE members SET open_lots_from = (SELECT t.id FROM txns t JOIN lots l ON l.txn_id = t.id WHERE t.tenant_id = $1 AND t.member_id = $2 AND t.id >= members.open_lots_from AND l.member_id = $2 AND l.remaining > 0 ORDER BY t.id LIMIT 1) WHERE tenant_id = $1 AND id = $2 AND open_lots_from IS NOT NULL",
        &[tenant.into(), member.into()],
    )?;
    Ok(())
}

/// Records a new lot with points left on its member's row: the mark never passes it, and an
/// available lot that expires joins the member's soonest expiry dates.
pub(crate) fn note_open_lot(
    c: &mut dyn Conn,
    tenant: &str,
    member: &str,
    txn_id: i64,
    lot: &NewLot<'_>,
) -> Result<()> {
    let expiring = expiring_with(c, tenant, member, lot)?;
    c.defer(
        &format!(
            "UPDATE members SET open_lots_from = {}, expiring = COALESCE($4, expiring) WHERE tenant_id = $1 AND id = $2",
            open_from("$3")
        ),
        &[tenant.into(), member.into(), txn_id.into(), expiring.as_deref().into()],
    )?;
    Ok(())
}

/// The member's soonest expiry dates with `lot` added, in their stored form, for the member
/// row's update; `None` (the row's list stays) when the lot is not available points that
/// expire. Reads the row's list: callers hold the member's lock.
pub(crate) fn expiring_with(
    c: &mut dyn Conn,
    tenant: &str,
    member: &str,
    lot: &NewLot<'_>,
) -> Result<Option<String>> {
    if lot_expiring(lot.expires_at, lot.remaining, lot.pending).is_none() {
        return Ok(None);
    }
    let row = c
        .query_one(
            "SELECT expiring FROM members WHERE tenant_id = $1 AND id = $2",
            &[tenant.into(), member.into()],
        )?
        .ok_or_else(|| StoreError::NotFound(format!("member `{member}`")))?;
    expiring_plus(&row.text(0), lot.expires_at, lot.remaining, lot.pending)
}

/// When a new lot joins the soonest expiry dates: its date, if it is available points that
/// expire.
fn lot_expiring(expires_at: Option<i64>, remaining: i64, pending: bool) -> Option<i64> {
    expires_at.filter(|_| lot_state(remaining, pending) == "available")
}

/// The stored list `stored` with a new lot added, in stored form; `None` (the row's list
/// stays) when the lot does not join it.
pub(crate) fn expiring_plus(
    stored: &str,
    expires_at: Option<i64>,
    remaining: i64,
    pending: bool,
) -> Result<Option<String>> {
    let Some(at) = lot_expiring(expires_at, remaining, pending) else {
        return Ok(None);
    };
    let mut list = stored_expiring(stored)?;
    list.add(at, remaining);
    Ok(Some(list.to_text()))
}

/// A member row's stored list.
pub(crate) fn stored_expiring(text: &str) -> Result<SoonestExpiring> {
    SoonestExpiring::parse(text).ok_or_else(|| {
        StoreError::Unprocessable(format!("stored record unreadable: expiry dates `{text}`"))
    })
}

/// The member's soonest expiry dates, listed from the lots with points left.
///
/// Pending lots are left out by the sum and `HAVING`, not by a `state` condition: with one,
/// the conditions would imply `lots_expiring`'s, and PostgreSQL, whose statistics saw the lots
/// while most were pending (a history posted at once, matured later), took that index for a
/// few rows and read all of it for each of the member's transactions (2-3 ms a call on the
/// demo's 21,000 lots, growing with the tenant's lots, against 0.2 ms through `lots_by_txn`).
pub fn expiring_from_lots_sql() -> String {
    format!(
        "SELECT l.expires_at, CAST(SUM(CASE WHEN l.state = 'available' THEN l.remaining ELSE 0 END) AS BIGINT) FROM {} AND l.expires_at IS NOT NULL GROUP BY l.expires_at HAVING SUM(CASE WHEN l.state = 'available' THEN l.remaining ELSE 0 END) > 0 ORDER BY l.expires_at LIMIT $3",
        open_lots_of("$2")
    )
}

pub(crate) fn expiring_from_lots(
    c: &mut dyn Conn,
    tenant: &str,
    member: &str,
) -> Result<SoonestExpiring> {
    let rows = c.query(
        &expiring_from_lots_sql(),
        &[tenant.into(), member.into(), (EXPIRING_KEPT as i64).into()],
    )?;
    Ok(SoonestExpiring(
        rows.iter().map(|r| (r.int(0), r.int(1))).collect(),
    ))
}

/// Lists the member's soonest expiry dates again from the lots and keeps them on the member
/// row: after points left lots (spent, clawed back, expired) or lots changed state.
pub(crate) fn relist_expiring(c: &mut dyn Conn, tenant: &str, member: &str) -> Result<()> {
    let list = expiring_from_lots(c, tenant, member)?;
    keep_expiring(c, tenant, member, &list)
}

/// Lists the member's soonest expiry dates again from the open lots in hand (every one of the
/// member's, as [`open_lots`] read them) less what `takes` took from available ones. The row
/// is written only when the list changed: not when no lot taken from expires (a programme
/// without expiry), which saves PostgreSQL a round trip per redemption and refund.
pub(crate) fn relist_expiring_after(
    c: &mut dyn Conn,
    tenant: &str,
    member: &str,
    open: &[LotRow],
    takes: &[(i64, i64)],
) -> Result<()> {
    let list = |takes: &[(i64, i64)]| {
        SoonestExpiring::from_pairs(open.iter().filter(|l| l.state == "available").filter_map(
            |l| {
                let taken: i64 = takes
                    .iter()
                    .filter(|(id, _)| *id == l.id)
                    .map(|(_, n)| n)
                    .sum();
                l.expires_at.map(|at| (at, l.remaining - taken))
            },
        ))
    };
    let after = list(takes);
    if after == list(&[]) {
        return Ok(());
    }
    keep_expiring(c, tenant, member, &after)
}

fn keep_expiring(
    c: &mut dyn Conn,
    tenant: &str,
    member: &str,
    list: &SoonestExpiring,
) -> Result<()> {
    c.defer(
        "UPDATE members SET expiring = $3 WHERE tenant_id = $1 AND id = $2",
        &[tenant.into(), member.into(), list.to_text().as_str().into()],
    )?;
    Ok(())
}

/// The member row's new mark after a lot with points left was added in the transaction given
/// by the parameter or column `txn` (NULL: no such lot was added).
pub(crate) fn open_from(txn: &str) -> String {
    format!(
        "CASE WHEN CAST({txn} AS BIGINT) IS NOT NULL AND (open_lots_from IS NULL OR open_lots_from > {txn}) THEN {txn} ELSE open_lots_from END"
    )
}

pub(crate) fn open_lots(c: &mut dyn Conn, tenant: &str, member: &str) -> Result<Vec<LotRow>> {
    let rows = c.query(&open_lots_sql(), &[tenant.into(), member.into()])?;
    Ok(lot_rows(&rows))
}

/// The member's open lots, oldest first; parameters tenant and member.
pub(crate) fn open_lots_sql() -> String {
    format!(
        "SELECT l.id, l.state, l.remaining, l.expires_at, l.order_id FROM {} ORDER BY l.id",
        open_lots_of("$2")
    )
}

/// How many of a member's open lots a debit reads first. A debit takes from the soonest
/// expiring lots, so it could only be planned from all of them, and a member who never redeems
/// keeps a lot per purchase: reading them all made a redemption's cost grow with the member's
/// history (17 % of the writer's time in the benchmark, for 5 % of its operations; with 40 past
/// purchases a member, 48 against 37 µs a write). The first lots earned, with the expiry dates
/// the member row keeps, nearly always decide the debit ([`head_decides`]); when they do not,
/// the debit reads more of them ([`wider_head`]), then, rarely, the rest. Eight: a redemption
/// mostly takes from the oldest lot or two, and a head that does not decide costs a second read.
pub const DEBIT_HEAD: usize = 8;

/// The member's first [`DEBIT_HEAD`] open lots in the order they were earned (their
/// transactions', then their own ids, which both grow), each row with the member row's soonest
/// expiry dates; parameters tenant and member. Both databases walk the member's transactions
/// from the mark in order and stop at the limit.
pub(crate) fn open_lots_head_sql() -> String {
    open_lots_end_sql("$2", "")
}

/// The first ([`open_lots_head_sql`]) or, with `desc` `" DESC"`, the last [`DEBIT_HEAD`] open
/// lots of the member `member` gives, with the member row's soonest expiry dates.
pub fn open_lots_end_sql(member: &str, desc: &str) -> String {
    open_lots_limit_sql(member, desc, DEBIT_HEAD)
}

/// [`open_lots_end_sql`] for `n` lots.
fn open_lots_limit_sql(member: &str, desc: &str, n: usize) -> String {
    format!(
        "SELECT l.id, l.state, l.remaining, l.expires_at, l.order_id, m.expiring FROM {} ORDER BY t.id{desc}, l.id{desc} LIMIT {n}",
        open_lots_of(member)
    )
}

/// How many first lots a debit reads next when the first [`DEBIT_HEAD`] (`head_len` of them
/// read) did not decide it: it took `taken` points from `lots_taken` lots of them, and needs
/// `points`. A reward that costs ten purchases' points needs more than the head holds, and a
/// loyal member may hold hundreds of open lots: reading every one of them made such a
/// redemption cost a hundred lots' pages, most of them cold. Twice the lots the rest would take
/// at the head's points per lot, and at least four heads, nearly always decide; when they do
/// not, the debit reads every lot.
pub(crate) fn wider_head(head_len: usize, lots_taken: usize, taken: i64, points: i64) -> usize {
    let per_lot = (taken / lots_taken.max(1) as i64).max(1);
    let short = (points - taken).max(0);
    let lots = short / per_lot + i64::from(short % per_lot != 0);
    let more = usize::try_from(lots).unwrap_or(usize::MAX);
    head_len
        .saturating_add(more.saturating_mul(2))
        .saturating_add(DEBIT_HEAD)
        .max(4 * DEBIT_HEAD)
}

/// A member's open lots as a debit reads them: all of them (`complete`), or the first
/// [`DEBIT_HEAD`] with the member row's soonest expiry dates (`list`: `None` when not read or
/// not readable).
pub(crate) struct OpenLots {
    pub lots: Vec<LotRow>,
    pub complete: bool,
    pub list: Option<SoonestExpiring>,
}

impl OpenLots {
    /// From [`open_lots_head_sql`]'s rows.
    pub(crate) fn of_head(rows: &[Row]) -> OpenLots {
        OpenLots::of_first(rows, DEBIT_HEAD)
    }

    /// From the rows of the first `n` open lots.
    fn of_first(rows: &[Row], n: usize) -> OpenLots {
        OpenLots {
            lots: lot_rows(rows),
            complete: rows.len() < n,
            list: rows
                .first()
                .and_then(|r| SoonestExpiring::parse(&r.text(5))),
        }
    }

    /// The first `n` open lots of the member, read now, with the member row's soonest expiry
    /// dates.
    pub(crate) fn first(
        c: &mut dyn Conn,
        tenant: &str,
        member: &str,
        n: usize,
    ) -> Result<OpenLots> {
        let rows = c.query(
            &open_lots_limit_sql("$2", "", n),
            &[tenant.into(), member.into()],
        )?;
        Ok(OpenLots::of_first(&rows, n))
    }

    /// Every open lot of the member, read now.
    pub(crate) fn all(c: &mut dyn Conn, tenant: &str, member: &str) -> Result<OpenLots> {
        Ok(OpenLots {
            lots: open_lots(c, tenant, member)?,
            complete: true,
            list: None,
        })
    }

    /// Lists the member's soonest expiry dates again after `takes` (lot id, points) left
    /// available lots of these: from the lots when all are in hand, else from the member row's
    /// list (or, when a full list loses a date, from the lots read again).
    pub(crate) fn relist_after(
        &self,
        c: &mut dyn Conn,
        tenant: &str,
        member: &str,
        takes: &[(i64, i64)],
    ) -> Result<()> {
        match (self.complete, &self.list) {
            (false, Some(list)) => {
                let dated: Vec<(i64, i64)> = takes
                    .iter()
                    .filter_map(|(id, n)| {
                        let lot = self.lots.iter().find(|l| l.id == *id)?;
                        lot.expires_at.map(|at| (at, *n))
                    })
                    .collect();
                if dated.is_empty() {
                    return Ok(());
                }
                match list.less(&dated) {
                    Some(after) => keep_expiring(c, tenant, member, &after),
                    None => relist_expiring(c, tenant, member),
                }
            }
            (false, None) => relist_expiring(c, tenant, member),
            (true, _) => relist_expiring_after(c, tenant, member, &self.lots, takes),
        }
    }

    /// The first open lots of the member, read now ([`open_lots_head_sql`]).
    pub(crate) fn head(c: &mut dyn Conn, tenant: &str, member: &str) -> Result<OpenLots> {
        let rows = c.query(&open_lots_head_sql(), &[tenant.into(), member.into()])?;
        Ok(OpenLots::of_head(&rows))
    }
}

/// The lots of [`open_lots_sql`]'s rows.
pub(crate) fn lot_rows(rows: &[Row]) -> Vec<LotRow> {
    rows.iter()
        .map(|r| LotRow {
            id: r.int(0),
            state: r.text(1),
            remaining: r.int(2),
            expires_at: r.opt_int(3),
            order_id: r.opt_text(4),
        })
        .collect()
}

/// The header of a journal transaction.
pub(crate) struct Txn<'a> {
    pub tenant: &'a str,
    pub member: &'a str,
    pub kind: &'a str,
    pub reason: &'a str,
    pub event_id: Option<i64>,
    pub order_id: Option<&'a str>,
    pub actor: Option<&'a str>,
    pub now: i64,
}

pub(crate) struct Entry {
    pub account: Account,
    pub lot_id: Option<i64>,
    pub amount: i64,
}

pub(crate) fn entry(account: Account, lot_id: Option<i64>, amount: i64) -> Entry {
    Entry {
        account,
        lot_id,
        amount,
    }
}

/// Ids taken ahead from PostgreSQL's sequences, with a job's first reads ([`NEXT_IDS`]), so the
/// rows that use them are inserted without waiting for an answer (`Conn::defer`): a round trip
/// less each. None on SQLite, where an insert costs no round trip: the rows are inserted and
/// their ids read back as usual. An id taken and not used (a job refused) is a gap, as a
/// rolled-back insert leaves.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct AheadIds {
    pub event: Option<i64>,
    pub txn: Option<i64>,
}

/// The next event's and transaction's ids (PostgreSQL), for [`AheadIds::of`].
pub(crate) const NEXT_IDS: &str = "SELECT nextval(pg_get_serial_sequence('events', 'id')), nextval(pg_get_serial_sequence('txns', 'id'))";

/// The next transaction's id only (PostgreSQL), for a job that records no event.
pub(crate) const NEXT_TXN_ID: &str = "SELECT NULL, nextval(pg_get_serial_sequence('txns', 'id'))";

impl AheadIds {
    /// From [`NEXT_IDS`]'s row (none: nothing taken ahead).
    pub(crate) fn of(rows: Option<&Vec<Row>>) -> AheadIds {
        let row = rows.and_then(|r| r.first());
        AheadIds {
            event: row.and_then(|r| r.opt_int(0)),
            txn: row.and_then(|r| r.opt_int(1)),
        }
    }
}

/// [`insert_txn`], under the id taken ahead if there is one (then deferred).
pub(crate) fn insert_txn_as(c: &mut dyn Conn, t: &Txn<'_>, id: Option<i64>) -> Result<i64> {
    let Some(id) = id else {
        return insert_txn(c, t);
    };
    c.defer(
        "INSERT INTO txns (tenant_id, member_id, kind, reason, event_id, order_id, actor, created_at, id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[t.tenant.into(), t.member.into(), t.kind.into(), t.reason.into(), t.event_id.into(), t.order_id.into(), t.actor.into(), t.now.into(), id.into()],
    )?;
    Ok(id)
}

pub(crate) fn insert_txn(c: &mut dyn Conn, t: &Txn<'_>) -> Result<i64> {
    Ok(c.insert_id(
            "INSERT INTO txns (tenant_id, member_id, kind, reason, event_id, order_id, actor, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
            &[t.tenant.into(), t.member.into(), t.kind.into(), t.reason.into(), t.event_id.into(), t.order_id.into(), t.actor.into(), t.now.into()],
    )?)
}

/// Writes the entries of transaction `txn_id`, refusing any set that does not sum to zero, and
/// moves the member's cached balances by the member accounts' totals.
pub(crate) fn write_entries(
    c: &mut dyn Conn,
    t: &Txn<'_>,
    txn_id: i64,
    entries: &[Entry],
) -> Result<()> {
    let (d_avail, d_pending) = insert_entries(c, t, txn_id, entries)?;
    if d_avail != 0 || d_pending != 0 {
        c.defer(
            "UPDATE members SET available = available + $3, pending = pending + $4 WHERE tenant_id = $1 AND id = $2",
            &[t.tenant.into(), t.member.into(), d_avail.into(), d_pending.into()],
        )?;
    }
    Ok(())
}

/// Writes the entries only, refusing any set that does not sum to zero; returns how much the
/// member's available and pending balances must move. The caller moves them (in the same
/// transaction), so a hot path can fold that into one update of the member row.
pub(crate) fn insert_entries(
    c: &mut dyn Conn,
    t: &Txn<'_>,
    txn_id: i64,
    entries: &[Entry],
) -> Result<(i64, i64)> {
    let sum: i64 = entries.iter().map(|e| e.amount).sum();
    if sum != 0 {
        return Err(StoreError::Unprocessable(format!(
            "internal: transaction {txn_id} does not balance ({sum})"
        )));
    }
    let (mut d_avail, mut d_pending) = (0i64, 0i64);
    // One statement for the transaction's entries: on PostgreSQL each statement is a round
    // trip. The transaction, tenant and member are shared; each entry adds three parameters.
    let mut params: Vec<Param<'_>> = vec![t.tenant.into(), txn_id.into(), t.member.into()];
    let mut rows = Vec::with_capacity(entries.len());
    for e in entries.iter().filter(|e| e.amount != 0) {
        let k = params.len() + 1;
        rows.push(format!("($1, $2, $3, ${k}, ${}, ${})", k + 1, k + 2));
        params.extend::<[Param<'_>; 3]>([
            e.account.as_str().into(),
            e.lot_id.into(),
            e.amount.into(),
        ]);
        match e.account {
            Account::Available => d_avail += e.amount,
            Account::Pending => d_pending += e.amount,
            _ => {}
        }
    }
    if !rows.is_empty() {
        c.defer(
            &format!(
                "INSERT INTO entries (tenant_id, txn_id, member_id, account, lot_id, amount) VALUES {}",
                rows.join(", ")
            ),
            &params,
        )?;
    }
    Ok((d_avail, d_pending))
}

pub(crate) struct NewLot<'a> {
    pub order_id: Option<&'a str>,
    pub pending: bool,
    pub amount: i64,
    pub remaining: i64,
    pub earned_at: i64,
    pub matures_at: Option<i64>,
    pub expires_at: Option<i64>,
}

/// The state a new lot starts in.
pub(crate) fn lot_state(remaining: i64, pending: bool) -> &'static str {
    if remaining == 0 {
        "spent"
    } else if pending {
        "pending"
    } else {
        "available"
    }
}

pub(crate) fn insert_lot(
    c: &mut dyn Conn,
    t: &Txn<'_>,
    txn_id: i64,
    lot: &NewLot<'_>,
) -> Result<i64> {
    let id = insert_lot_row(c, t, txn_id, lot)?;
    if lot.remaining > 0 {
        note_open_lot(c, t.tenant, t.member, txn_id, lot)?;
    }
    Ok(id)
}

/// [`insert_lot`] without noting the lot on the member row: for callers that update the row
/// anyway and note it there ([`open_from`]).
pub(crate) fn insert_lot_row(
    c: &mut dyn Conn,
    t: &Txn<'_>,
    txn_id: i64,
    lot: &NewLot<'_>,
) -> Result<i64> {
    let state = lot_state(lot.remaining, lot.pending);
    Ok(c.insert_id(
            "INSERT INTO lots (tenant_id, member_id, txn_id, order_id, state, amount, remaining, earned_at, matures_at, expires_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
            &[t.tenant.into(), t.member.into(), txn_id.into(), lot.order_id.into(), state.into(), lot.amount.into(), lot.remaining.into(), lot.earned_at.into(), lot.matures_at.into(), lot.expires_at.into(), t.now.into()],
    )?)
}

/// Takes `n` points out of a lot; a lot left empty is marked spent (or `final_state`).
pub(crate) fn take_lot(c: &mut dyn Conn, lot_id: i64, n: i64, empty_state: &str) -> Result<()> {
    c.defer(
        "UPDATE lots SET remaining = remaining - $2, state = CASE WHEN remaining - $2 = 0 THEN $3 ELSE state END WHERE id = $1",
        &[lot_id.into(), n.into(), empty_state.into()],
    )?;
    Ok(())
}

/// When a credit earned at `earned_at` expires under the programme's policy.
pub(crate) fn expiry_for(settings: &ProgramSettings, earned_at: i64) -> Option<i64> {
    match settings.expiry {
        ExpiryPolicy::AfterEarning { months } => {
            Some(add_months(from_micros(earned_at), months).timestamp_micros())
        }
        ExpiryPolicy::None | ExpiryPolicy::Inactivity { .. } => None,
    }
}

/// Credits `points` to `available` in transaction `txn_id` against `counter`: repays a debt
/// first, keeps the rest as a lot. Returns the points that repaid a debt.
pub(crate) fn credit_available(
    c: &mut dyn Conn,
    t: &Txn<'_>,
    txn_id: i64,
    member: MemberState,
    points: i64,
    counter: Account,
    lot: NewLot<'_>,
) -> Result<i64> {
    let (repaid, keep) = repay_debt(points, member.available);
    let lot_id = insert_lot(
        c,
        t,
        txn_id,
        &NewLot {
            remaining: keep,
            pending: false,
            ..lot
        },
    )?;
    write_entries(
        c,
        t,
        txn_id,
        &[
            entry(Account::Available, Some(lot_id), points),
            entry(counter, None, -points),
        ],
    )?;
    Ok(repaid)
}

/// Debits `points` from available lots (earliest expiry first) into `counter`. Fails, changing
/// nothing, when the lots hold less.
pub(crate) fn debit_available(
    c: &mut dyn Conn,
    t: &Txn<'_>,
    txn_id: i64,
    points: i64,
    counter: Account,
    empty_state: &str,
) -> Result<()> {
    let open = OpenLots::head(c, t.tenant, t.member)?;
    debit_from_lots(c, t, txn_id, points, counter, empty_state, open)
}

/// [`debit_available`] from the member's open lots, read by the caller with the member's lock
/// held: the first of them, and the rest read here when those do not decide the debit.
pub(crate) fn debit_from_lots(
    c: &mut dyn Conn,
    t: &Txn<'_>,
    txn_id: i64,
    points: i64,
    counter: Account,
    empty_state: &str,
    mut open: OpenLots,
) -> Result<()> {
    let plan = |open: &OpenLots| {
        let lots: Vec<LotView> = open
            .lots
            .iter()
            .filter(|l| l.state == "available")
            .map(LotRow::view)
            .collect();
        let (takes, taken) = take_from_lots(&lots, points);
        let decided = open.complete
            || open
                .list
                .as_ref()
                .is_some_and(|list| head_decides(&lots, &takes, taken, points, list));
        (takes, taken, decided)
    };
    let (mut takes, mut taken, mut decided) = plan(&open);
    if !decided {
        // More of the first lots, then (rarely) every lot.
        let n = wider_head(open.lots.len(), takes.len(), taken, points);
        open = OpenLots::first(c, t.tenant, t.member, n)?;
        (takes, taken, decided) = plan(&open);
    }
    if !decided {
        open = OpenLots::all(c, t.tenant, t.member)?;
        (takes, taken, _) = plan(&open);
    }
    if taken < points {
        return Err(StoreError::Conflict(format!(
            "not enough available points: {taken} available, {points} needed"
        )));
    }
    let mut entries = Vec::with_capacity(takes.len() + 1);
    for (lot_id, n) in &takes {
        take_lot(c, *lot_id, *n, empty_state)?;
        entries.push(entry(Account::Available, Some(*lot_id), -n));
    }
    if empties_a_lot(&open.lots, &takes) {
        advance_open_lots(c, t.tenant, t.member)?;
    }
    open.relist_after(c, t.tenant, t.member, &takes)?;
    entries.push(entry(counter, None, points));
    write_entries(c, t, txn_id, &entries)
}

pub(crate) fn touch_activity(
    c: &mut dyn Conn,
    tenant: &str,
    member: &str,
    at: i64,
    now: i64,
) -> Result<()> {
    c.defer(
        "UPDATE members SET last_activity_at = CASE WHEN last_activity_at IS NULL OR last_activity_at < $3 THEN $3 ELSE last_activity_at END, updated_at = $4 WHERE tenant_id = $1 AND id = $2",
        &[tenant.into(), member.into(), at.into(), now.into()],
    )?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn adjust(
    c: &mut dyn Conn,
    tenant: &str,
    member: &str,
    points: i64,
    reason: &str,
    actor: &str,
    settings: &ProgramSettings,
    now: i64,
) -> Result<AdjustOutcome> {
    let state = lock_active_member(c, tenant, member, now, now)?
        .ok_or_else(|| StoreError::NotFound(format!("member `{member}`")))?;
    let t = Txn {
        tenant,
        member,
        kind: "adjust",
        reason,
        event_id: None,
        order_id: None,
        actor: Some(actor),
        now,
    };
    let txn_id = insert_txn(c, &t)?;
    if points > 0 {
        let lot = NewLot {
            order_id: None,
            pending: false,
            amount: points,
            remaining: points,
            earned_at: now,
            matures_at: None,
            expires_at: expiry_for(settings, now),
        };
        credit_available(c, &t, txn_id, state, points, Account::Adjusted, lot)?;
        c.defer("UPDATE members SET lifetime_earned = lifetime_earned + $3 WHERE tenant_id = $1 AND id = $2", &[tenant.into(), member.into(), points.into()])?;
    } else {
        debit_available(c, &t, txn_id, -points, Account::Adjusted, "spent")?;
    }
    let detail =
        serde_json::json!({ "points": points, "reason": reason, "txn_id": txn_id }).to_string();
    c.defer(
        "INSERT INTO audit_log (tenant_id, actor, action, subject, detail, created_at) VALUES ($1, $2, 'points.adjust', $3, $4, $5)",
        &[tenant.into(), actor.into(), member.into(), detail.as_str().into(), now.into()],
    )?;
    let after = lock_member(c, tenant, member)?.unwrap_or(state);
    Ok(AdjustOutcome {
        txn_id,
        member_id: member.to_string(),
        points,
        reason: reason.to_string(),
        balance: after.now(),
    })
}

/// A member row's balances, as a balance read answers them.
pub(crate) struct BalanceRow {
    available: i64,
    pending: i64,
    lifetime_earned: i64,
    last_activity_at: Option<i64>,
    /// The soonest expiry dates, as stored.
    expiring: String,
}

const BALANCE_COLUMNS: &str = "available, pending, lifetime_earned, last_activity_at, expiring";

impl BalanceRow {
    fn at(r: &Row, i: usize) -> BalanceRow {
        BalanceRow {
            available: r.int(i),
            pending: r.int(i + 1),
            lifetime_earned: r.int(i + 2),
            last_activity_at: r.opt_int(i + 3),
            expiring: r.text(i + 4),
        }
    }
}

/// A member's balance, and the id of the member's row (SQLite's `rowid`, see the store's
/// `fence`; 0 on PostgreSQL).
pub(crate) fn balance_of_row(
    c: &mut dyn Conn,
    tenant: &str,
    member: &str,
    settings: &ProgramSettings,
) -> Result<(Balance, i64)> {
    let row = c
        .query_one(
            &format!(
                "SELECT {BALANCE_COLUMNS}, {} FROM members WHERE tenant_id = $1 AND id = $2",
                c.dialect().row_id()
            ),
            &[tenant.into(), member.into()],
        )?
        .ok_or_else(|| StoreError::NotFound(format!("member `{member}`")))?;
    let balance = balance_of(c, tenant, member, &BalanceRow::at(&row, 0), settings)?;
    Ok((balance, row.int(5)))
}

/// The balance rows of the members whose id is one of `ids`, by id: one query for many
/// balance reads (see `runtime::grouped_loop`).
pub(crate) fn balance_rows(
    c: &mut dyn Conn,
    tenant: &str,
    ids: &[Option<&str>],
) -> Result<std::collections::HashMap<String, BalanceRow>> {
    let (condition, params) = crate::together::one_of(c, tenant, "id", ids);
    Ok(c.query(
        &format!("SELECT id, {BALANCE_COLUMNS} FROM members WHERE tenant_id = $1 AND {condition}"),
        &params,
    )?
    .iter()
    .map(|r| (r.text(0), BalanceRow::at(r, 1)))
    .collect())
}

/// A member's balance from their row, with the points that expire next.
pub(crate) fn balance_of(
    c: &mut dyn Conn,
    tenant: &str,
    member: &str,
    row: &BalanceRow,
    settings: &ProgramSettings,
) -> Result<Balance> {
    let BalanceRow {
        available,
        pending,
        lifetime_earned,
        last_activity_at,
        ref expiring,
    } = *row;
    let expiring = match settings.expiry {
        ExpiryPolicy::None => vec![],
        ExpiryPolicy::Inactivity { months } => match last_activity_at {
            Some(last) if available > 0 => vec![Expiring {
                points: available,
                expires_at: ts(add_months(from_micros(last), months).timestamp_micros()),
            }],
            _ => vec![],
        },
        // Kept on the member row (`SoonestExpiring`): no lot is read. A list the row cannot
        // give is listed from the lots.
        ExpiryPolicy::AfterEarning { .. } => match SoonestExpiring::parse(expiring) {
            Some(list) => list,
            None => expiring_from_lots(c, tenant, member)?,
        }
        .0
        .into_iter()
        .map(|(at, points)| Expiring {
            points,
            expires_at: ts(at),
        })
        .collect(),
    };
    Ok(Balance {
        available,
        pending,
        lifetime_earned,
        expiring,
    })
}

pub const MAX_PAGE: i64 = 200;

/// A member's journal transactions, newest first; `cursor` is the last id of the previous page.
pub(crate) fn history(
    c: &mut dyn Conn,
    tenant: &str,
    member: &str,
    cursor: Option<i64>,
    limit: i64,
) -> Result<Page<LedgerTxn>> {
    if c.query_one(
        "SELECT 1 FROM members WHERE tenant_id = $1 AND id = $2",
        &[tenant.into(), member.into()],
    )?
    .is_none()
    {
        return Err(StoreError::NotFound(format!("member `{member}`")));
    }
    let limit = limit.clamp(1, MAX_PAGE);
    let rows = c.query(
        "SELECT id, kind, reason, event_id, order_id, actor, created_at FROM txns WHERE tenant_id = $1 AND member_id = $2 AND id < $3 ORDER BY id DESC LIMIT $4",
        &[tenant.into(), member.into(), cursor.unwrap_or(i64::MAX).into(), (limit + 1).into()],
    )?;
    Page::from_rows(&rows, limit, |r| txn_view(c, r), |t| t.id.to_string())
}

fn txn_view(c: &mut dyn Conn, r: &Row) -> Result<LedgerTxn> {
    let id = r.int(0);
    let entries: Vec<EntryView> = c
        .query(
            "SELECT account, amount, lot_id FROM entries WHERE txn_id = $1 ORDER BY id",
            &[id.into()],
        )?
        .iter()
        .map(|e| EntryView {
            account: e.text(0),
            points: e.int(1),
            lot_id: e.opt_int(2),
        })
        .collect();
    let sum = |a: &str| {
        entries
            .iter()
            .filter(|e| e.account == a)
            .map(|e| e.points)
            .sum()
    };
    Ok(LedgerTxn {
        id,
        kind: r.text(1),
        reason: r.text(2),
        event_id: r.opt_int(3),
        order_id: r.opt_text(4),
        actor: r.opt_text(5),
        created_at: ts(r.int(6)),
        available_delta: sum("available"),
        pending_delta: sum("pending"),
        entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wider read asks for twice the lots the rest of the debit needs at the head's points
    /// per lot, and never fewer than four heads.
    #[test]
    fn the_wider_read_is_twice_what_the_rest_needs() {
        // A 500-point reward, 80 taken from eight lots of 10: 42 more lots at 10 each.
        assert_eq!(wider_head(8, 8, 80, 500), 8 + 2 * 42 + 8);
        // Decided by amount but not by the dates: four heads.
        assert_eq!(wider_head(8, 2, 15, 15), 4 * DEBIT_HEAD);
        // No available lot in the head (all pending): a point a lot, at most.
        assert_eq!(wider_head(8, 0, 0, 100), 8 + 200 + 8);
        // No overflow, whatever the debit.
        assert_eq!(wider_head(8, 1, 1, i64::MAX), usize::MAX);
    }
}
