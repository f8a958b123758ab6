//! Purchases written together: the purchases a writer finds in one batch are posted with a
//! handful of multi-row statements (one per table) instead of nine statements each. Rows are
//! the same as [`crate::events::purchase`] writes, field for field; only the number of
//! statements (and, on PostgreSQL, of round trips) changes.
//!
//! Only the plain case goes this way: a known member, no idempotency key, no capped or
//! budgeted award, an order id not seen before, and one purchase per member and per order in
//! the group. Every other purchase is left to run alone, after the group, through the same
//! path as ever, so anything unusual (enrolment, duplicates, conflicts, caps) keeps exactly one
//! implementation. If a statement of the group fails, the writer rolls the whole batch back and
//! runs every request alone (see `runtime::run_batch`).

use crate::conn::{Conn, Param, Row};
use crate::error::{Result, StoreError};
use crate::idem::{self, IdemKey};
use crate::ledger::{expiry_for, ts};
use crate::model::{BalanceNow, PurchaseOutcome};
use fidelis_core::earn::Award;
use fidelis_core::event::{MemberKey, Purchase};
use fidelis_core::ledger::{Account, repay_debt};
use fidelis_core::program::ProgramSettings;
use fidelis_core::time::add_days;
use std::collections::{HashMap, HashSet};

/// Rows per multi-row statement at most. Groups are cut into chunks of 64, 32, 16, ... rows,
/// so each table has a few statement shapes, each prepared once per connection.
const CHUNK: usize = 64;

/// One purchase waiting in a writer's queue.
pub(crate) struct PurchaseJob {
    pub tenant: String,
    pub purchase: Purchase,
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
                &self.awards,
                &self.settings,
                self.now,
            )
        })
    }

    /// True when nothing about this purchase needs the single path's special cases.
    fn plain(&self) -> bool {
        self.idem.is_none()
            && self.awards.iter().all(|a| {
                a.terms
                    .as_deref()
                    .is_none_or(|t| t.limits.is_empty() && t.nth_order.is_none())
            })
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
    let Some(first) = jobs.iter().find(|j| j.plain()) else {
        return Ok(out);
    };
    let tenant = first.tenant.as_str();
    // One purchase per member and per order in a group: a second one runs alone, after,
    // and sees the first as any later request would.
    let (mut members, mut orders) = (HashSet::new(), HashSet::new());
    let picked: Vec<usize> = (0..jobs.len())
        .filter(|&i| {
            let j = jobs[i];
            j.plain()
                && j.tenant == tenant
                && members.insert(j.key())
                && orders.insert(j.purchase.order_id.as_str())
        })
        .collect();
    let mut rest = picked.as_slice();
    while !rest.is_empty() {
        let n = chunk_len(rest.len());
        let (chunk, more) = rest.split_at(n);
        let group: Vec<&PurchaseJob> = chunk.iter().map(|&i| jobs[i]).collect();
        for (k, outcome) in write_chunk(c, tenant, &group)?.into_iter().enumerate() {
            out[chunk[k]] = outcome;
        }
        rest = more;
    }
    Ok(out)
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

/// Inserts `rows` (each `cols.len()` values) into `table`, in chunks; returns the rows of
/// `returning` (in no promised order: callers match them by a column they know).
fn insert_rows(
    c: &mut dyn Conn,
    table: &str,
    cols: &[&str],
    rows: &[Vec<Param<'_>>],
    returning: Option<&str>,
) -> Result<Vec<Row>> {
    let mut back = Vec::new();
    let mut rest = rows;
    while !rest.is_empty() {
        let n = chunk_len(rest.len());
        let (chunk, more) = rest.split_at(n);
        let sql = format!(
            "INSERT INTO {table} ({}) VALUES {}{}",
            cols.join(", "),
            tuples(n, cols.len(), 1),
            returning
                .map(|r| format!(" RETURNING {r}"))
                .unwrap_or_default()
        );
        let params: Vec<Param<'_>> = chunk.iter().flatten().copied().collect();
        if returning.is_some() {
            back.extend(c.query(&sql, &params)?);
        } else {
            c.execute(&sql, &params)?;
        }
        rest = more;
    }
    Ok(back)
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
    lines_json: String,
    payload: String,
    reason: String,
    event_id: i64,
    txn_id: i64,
    lot_id: i64,
}

fn write_chunk(
    c: &mut dyn Conn,
    tenant: &str,
    group: &[&PurchaseJob],
) -> Result<Vec<Option<PurchaseOutcome>>> {
    let n = group.len();
    // The members, locked (in id order, so two writers never wait on each other in a cycle):
    // those named by id, then those named by external id. Each list has the group's size,
    // padded with NULLs (which match nothing), so each query keeps one shape per size.
    let mut by_id: HashMap<String, (String, i64, i64)> = HashMap::new();
    let mut by_ext: HashMap<String, String> = HashMap::new();
    for (column, pick) in [("id", 1usize), ("external_id", 2)] {
        let keys: Vec<Option<&str>> = group
            .iter()
            .map(|j| if pick == 1 { j.key().1 } else { j.key().2 })
            .collect();
        if keys.iter().all(Option::is_none) {
            continue;
        }
        let mut params: Vec<Param<'_>> = vec![tenant.into()];
        params.extend(keys.into_iter().map(Param::from));
        let sql = format!(
            "SELECT id, external_id, available, pending FROM members WHERE tenant_id = $1 AND {column} IN ({}) AND {column} IS NOT NULL ORDER BY id{}",
            list(n, 2),
            c.dialect().for_update()
        );
        for r in c.query(&sql, &params)? {
            let id = r.text(0);
            if let Some(ext) = r.opt_text(1) {
                by_ext.insert(ext, id.clone());
            }
            by_id.insert(id.clone(), (id, r.int(2), r.int(3)));
        }
    }
    // Orders already recorded run alone (they answer as duplicates or conflicts).
    let mut params: Vec<Param<'_>> = vec![tenant.into()];
    params.extend(group.iter().map(|j| Param::from(&j.purchase.order_id)));
    let sql = format!(
        "SELECT order_id FROM orders WHERE tenant_id = $1 AND order_id IN ({})",
        list(n, 2)
    );
    let seen: HashSet<String> = c.query(&sql, &params)?.iter().map(|r| r.text(0)).collect();

    let mut plans: Vec<Option<Plan<'_>>> = Vec::with_capacity(n);
    let mut taken = HashSet::new();
    for j in group {
        let member = match &j.purchase.member {
            MemberKey::Id(id) => by_id.get(id).map(|m| m.0.clone()),
            MemberKey::ExternalId(e) => by_ext.get(e).cloned(),
        };
        // Two keys (an id and an external id) may name one member: the second runs alone.
        let member =
            member.filter(|m| !seen.contains(&j.purchase.order_id) && taken.insert(m.clone()));
        let Some(member) = member else {
            plans.push(None);
            continue;
        };
        let (_, available, pending_balance) = by_id[&member];
        let p = &j.purchase;
        let occurred = p.occurred_at.timestamp_micros();
        let points: i64 = j.awards.iter().map(|a| a.points).sum::<i64>().max(0);
        let matures = add_days(p.occurred_at, j.settings.pending_days).timestamp_micros();
        let pending = j.settings.pending_days > 0 && matures > j.now;
        let (repaid, keep) = if pending {
            (0, points)
        } else {
            repay_debt(points, available)
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
            expires_at: expiry_for(&j.settings, occurred),
            repaid: if points > 0 { repaid } else { 0 },
            keep,
            lines_json: serde_json::to_string(&p.lines)?,
            payload: serde_json::json!({ "lines": p.lines, "total": p.total.to_decimal() })
                .to_string(),
            reason: format!("purchase {}", p.order_id),
            event_id: 0,
            txn_id: 0,
            lot_id: 0,
        }));
    }
    let mut live: Vec<&mut Plan<'_>> = plans.iter_mut().flatten().collect();
    if live.is_empty() {
        return Ok((0..n).map(|_| None).collect());
    }

    // Events, matched back by order id.
    let rows: Vec<Vec<Param<'_>>> = live
        .iter()
        .map(|pl| {
            let p = &pl.job.purchase;
            vec![
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
                pl.payload.as_str().into(),
            ]
        })
        .collect();
    let ids = insert_rows(
        c,
        "events",
        &[
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
        ],
        &rows,
        Some("id, order_id"),
    )?;
    let ids: HashMap<String, i64> = ids.iter().map(|r| (r.text(1), r.int(0))).collect();
    for pl in live.iter_mut() {
        pl.event_id = *ids
            .get(&pl.job.purchase.order_id)
            .ok_or_else(|| StoreError::Busy("an event id went missing".into()))?;
    }

    // Awards, as `awards::record` writes them.
    let mut award_rows: Vec<Vec<Param<'_>>> = Vec::new();
    let mut bases: Vec<Option<String>> = Vec::new();
    for pl in live.iter() {
        for a in pl.job.awards.iter().filter(|a| a.points > 0) {
            let basis = a.terms.as_deref().and_then(|t| t.basis.as_ref());
            bases.push(basis.map(serde_json::to_string).transpose()?);
        }
    }
    let mut b = bases.iter();
    for pl in live.iter() {
        for a in pl.job.awards.iter().filter(|a| a.points > 0) {
            let basis = a.terms.as_deref().and_then(|t| t.basis.as_ref());
            let basis_total = basis.map_or(pl.job.purchase.total.minor, |b| b.total_minor);
            award_rows.push(vec![
                tenant.into(),
                pl.event_id.into(),
                (&pl.job.purchase.order_id).into(),
                pl.member.as_str().into(),
                a.source.as_str().into(),
                a.rule_version.into(),
                a.campaign.as_ref().into(),
                a.points.into(),
                b.next().and_then(|s| s.as_ref()).into(),
                basis_total.into(),
                0i64.into(),
                0i64.into(),
                pl.job.now.into(),
            ]);
        }
    }
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
        &award_rows,
        None,
    )?;

    // Journal transactions (matched by event id), lots (by transaction id), entries.
    let earning: Vec<usize> = (0..live.len()).filter(|&k| live[k].points > 0).collect();
    let rows: Vec<Vec<Param<'_>>> = earning
        .iter()
        .map(|&k| {
            let pl = &live[k];
            vec![
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
    let back = insert_rows(
        c,
        "txns",
        &[
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
        Some("id, event_id"),
    )?;
    let txn_of: HashMap<i64, i64> = back.iter().map(|r| (r.int(1), r.int(0))).collect();
    for &k in &earning {
        let pl = &mut live[k];
        pl.txn_id = *txn_of
            .get(&pl.event_id)
            .ok_or_else(|| StoreError::Busy("a transaction id went missing".into()))?;
    }
    let rows: Vec<Vec<Param<'_>>> = earning
        .iter()
        .map(|&k| {
            let pl = &live[k];
            let state = crate::ledger::lot_state(pl.keep, pl.pending);
            vec![
                tenant.into(),
                pl.member.as_str().into(),
                pl.txn_id.into(),
                (&pl.job.purchase.order_id).into(),
                state.into(),
                pl.points.into(),
                pl.keep.into(),
                pl.occurred.into(),
                pl.matures.into(),
                pl.expires_at.into(),
                pl.job.now.into(),
            ]
        })
        .collect();
    let back = insert_rows(
        c,
        "lots",
        &[
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
        Some("id, txn_id"),
    )?;
    let lot_of: HashMap<i64, i64> = back.iter().map(|r| (r.int(1), r.int(0))).collect();
    for &k in &earning {
        let pl = &mut live[k];
        pl.lot_id = *lot_of
            .get(&pl.txn_id)
            .ok_or_else(|| StoreError::Busy("a lot id went missing".into()))?;
    }
    let mut rows: Vec<Vec<Param<'_>>> = Vec::with_capacity(earning.len() * 2);
    for &k in &earning {
        let pl = &live[k];
        let account = if pl.pending {
            Account::Pending
        } else {
            Account::Available
        };
        for (account, lot, amount) in [
            (account, Some(pl.lot_id), pl.points),
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
        None,
    )?;

    // One update of all the members' rows: balances, counters and last activity.
    let deltas: Vec<(i64, i64)> = live
        .iter()
        .map(|pl| match (pl.points > 0, pl.pending) {
            (false, _) => (0, 0),
            (true, true) => (0, pl.points),
            (true, false) => (pl.points, 0),
        })
        .collect();
    let mut params: Vec<Param<'_>> = vec![tenant.into()];
    for (pl, (da, dp)) in live.iter().zip(&deltas) {
        params.extend::<[Param<'_>; 7]>([
            pl.member.as_str().into(),
            (*da).into(),
            (*dp).into(),
            pl.points.into(),
            pl.job.purchase.total.minor.into(),
            pl.occurred.into(),
            pl.job.now.into(),
        ]);
    }
    let values: Vec<String> = (0..live.len())
        .map(|r| {
            let k = 2 + r * 7;
            format!(
                "(CAST(${k} AS TEXT), CAST(${} AS BIGINT), CAST(${} AS BIGINT), CAST(${} AS BIGINT), CAST(${} AS BIGINT), CAST(${} AS BIGINT), CAST(${} AS BIGINT))",
                k + 1,
                k + 2,
                k + 3,
                k + 4,
                k + 5,
                k + 6
            )
        })
        .collect();
    let sql = format!(
        "UPDATE members SET available = available + d.column2, pending = pending + d.column3, lifetime_earned = lifetime_earned + d.column4, order_count = order_count + 1, lifetime_spend_minor = lifetime_spend_minor + d.column5, last_activity_at = CASE WHEN last_activity_at IS NULL OR last_activity_at < d.column6 THEN d.column6 ELSE last_activity_at END, updated_at = d.column7 FROM (VALUES {}) AS d WHERE members.tenant_id = $1 AND members.id = d.column1",
        values.join(", ")
    );
    let changed = c.execute(&sql, &params)?;
    if changed != live.len() as u64 {
        return Err(StoreError::Busy(format!(
            "{changed} of {} member rows updated",
            live.len()
        )));
    }

    // The orders, each with the answer a resend gets.
    let mut outcomes: Vec<(String, PurchaseOutcome)> = Vec::with_capacity(live.len());
    for (pl, (da, dp)) in live.iter().zip(&deltas) {
        let p = &pl.job.purchase;
        let outcome = PurchaseOutcome {
            event_id: pl.event_id,
            member_id: pl.member.clone(),
            order_id: p.order_id.clone(),
            points: pl.points,
            status: if pl.pending { "pending" } else { "available" }.into(),
            matures_at: pl.pending.then(|| ts(pl.matures)),
            expires_at: pl.expires_at.filter(|_| pl.points > 0).map(ts),
            breakdown: crate::awards::public(&pl.job.awards),
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
    let rows: Vec<Vec<Param<'_>>> = live
        .iter()
        .zip(&outcomes)
        .map(|(pl, (json, _))| {
            let p = &pl.job.purchase;
            vec![
                tenant.into(),
                (&p.order_id).into(),
                pl.member.as_str().into(),
                pl.event_id.into(),
                p.total.minor.into(),
                pl.lines_json.as_str().into(),
                pl.points.into(),
                0i64.into(),
                0i64.into(),
                "[]".into(),
                json.as_str().into(),
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
        None,
    )?;
    // What the programme adds after a purchase (cashback, tier moves), member by member.
    for pl in live.iter() {
        crate::member_value::after_purchase(
            c,
            tenant,
            &pl.member,
            &pl.job.purchase,
            &pl.job.settings,
            pl.job.now,
        )?;
    }
    let mut outcomes = outcomes.into_iter().map(|(_, o)| o);
    Ok(plans
        .iter()
        .map(|pl| pl.as_ref().and_then(|_| outcomes.next()))
        .collect())
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

    #[test]
    fn tuples_number_parameters_row_by_row() {
        assert_eq!(tuples(2, 3, 2), "($2, $3, $4), ($5, $6, $7)");
        assert_eq!(tuples(1, 2, 1), "($1, $2)");
    }
}
