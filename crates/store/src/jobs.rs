//! Background jobs: pending lots mature after the return window; lots expire per the
//! programme's policy. A run reads a bounded number of due lots, groups them by member, and
//! claims each member (on PostgreSQL with `FOR UPDATE SKIP LOCKED`, so several nodes share the
//! work without waiting on each other). Lot updates are conditional on the state that was read,
//! so a lot another node handled in between is skipped, never posted twice.

use crate::conn::Conn;
use crate::error::Result;
use crate::ledger::{self, Entry, Txn, entry};
use crate::model::JobReport;
use chrono::Months;
use fidelis_core::ledger::{Account, repay_debt};
use fidelis_core::program::{ExpiryPolicy, ProgramSettings};
use fidelis_core::time::{add_months, from_micros};
use std::collections::BTreeMap;

/// Lots one run reads at most, per job kind and tenant.
pub const LOTS_PER_RUN: i64 = 2000;

/// Claims a member for a job: locks the row, or skips it when another node holds it.
fn claim(c: &mut dyn Conn, tenant: &str, member: &str) -> Result<Option<ledger::MemberState>> {
    let sql = format!(
        "SELECT available, pending FROM members WHERE tenant_id = $1 AND id = $2{}",
        c.dialect().skip_locked()
    );
    Ok(c.query_one(&sql, &[tenant.into(), member.into()])?
        .map(|r| ledger::MemberState {
            available: r.int(0),
            pending: r.int(1),
        }))
}

/// Lots to act on, by member: `member → [(lot id, remaining)]`.
type LotsByMember = BTreeMap<String, Vec<(i64, i64)>>;

/// Due lots by member, and whether the read was cut at the limit.
fn due_lots(c: &mut dyn Conn, sql: &str, tenant: &str, now: i64) -> Result<(LotsByMember, bool)> {
    let rows = c.query(sql, &[tenant.into(), now.into(), LOTS_PER_RUN.into()])?;
    let full = rows.len() as i64 == LOTS_PER_RUN;
    let mut by_member: BTreeMap<String, Vec<(i64, i64)>> = BTreeMap::new();
    for r in &rows {
        by_member
            .entry(r.text(1))
            .or_default()
            .push((r.int(0), r.int(2)));
    }
    Ok((by_member, full))
}

/// Matures the pending lots due at `now`; true when more may be due.
pub(crate) fn mature(
    c: &mut dyn Conn,
    tenant: &str,
    now: i64,
    report: &mut JobReport,
) -> Result<bool> {
    let (due, full) = due_lots(
        c,
        "SELECT id, member_id, remaining FROM lots WHERE tenant_id = $1 AND state = 'pending' AND matures_at <= $2 LIMIT $3",
        tenant,
        now,
    )?;
    for (member, lots) in due {
        let Some(state) = claim(c, tenant, &member)? else {
            continue;
        };
        let mut entries: Vec<Entry> = Vec::with_capacity(lots.len() * 2);
        let mut available = state.available;
        let mut emptied = false;
        for (id, n) in lots {
            // A debt (negative balance) is repaid before the lot becomes spendable.
            let (_, keep) = repay_debt(n, available);
            let next_state = if keep == 0 { "spent" } else { "available" };
            let moved = c.execute(
                "UPDATE lots SET state = $3, remaining = $4 WHERE id = $1 AND state = 'pending' AND remaining = $2",
                &[id.into(), n.into(), next_state.into(), keep.into()],
            )?;
            if moved == 0 {
                continue;
            }
            emptied |= keep == 0;
            available += n;
            entries.push(entry(Account::Pending, Some(id), -n));
            entries.push(entry(Account::Available, Some(id), n));
            report.matured_lots += 1;
            report.matured_points += n;
        }
        if entries.is_empty() {
            continue;
        }
        let t = Txn {
            tenant,
            member: &member,
            kind: "mature",
            reason: "return window closed",
            event_id: None,
            order_id: None,
            actor: None,
            now,
        };
        let txn_id = ledger::insert_txn(c, &t)?;
        ledger::write_entries(c, &t, txn_id, &entries)?;
        if emptied {
            ledger::advance_open_lots(c, tenant, &member)?;
        }
        ledger::relist_expiring(c, tenant, &member)?;
        report.members_touched += 1;
    }
    Ok(full)
}

/// Expires what the policy says is due at `now`; true when more may be due. Under an
/// inactivity policy, `inactive` is what [`inactive_candidates`] read before, on a reader.
pub(crate) fn expire(
    c: &mut dyn Conn,
    tenant: &str,
    settings: &ProgramSettings,
    now: i64,
    inactive: &Candidates,
    report: &mut JobReport,
) -> Result<bool> {
    let (due, full) = match settings.expiry {
        ExpiryPolicy::None => return Ok(false),
        ExpiryPolicy::AfterEarning { .. } => due_lots(c, EXPIRY_DUE_LOTS, tenant, now)?,
        ExpiryPolicy::Inactivity { months } => (
            inactive_lots(c, tenant, months, now, &inactive.0)?,
            inactive.1,
        ),
    };
    let reason = match settings.expiry {
        ExpiryPolicy::Inactivity { months } => format!("no activity for {months} months"),
        _ => "points reached their expiry date".to_string(),
    };
    for (member, lots) in due {
        if claim(c, tenant, &member)?.is_none() {
            continue;
        }
        let mut entries: Vec<Entry> = Vec::with_capacity(lots.len() + 1);
        let mut total = 0;
        for (id, n) in lots {
            let taken = c.execute(
                "UPDATE lots SET remaining = 0, state = 'expired' WHERE id = $1 AND state = 'available' AND remaining = $2",
                &[id.into(), n.into()],
            )?;
            if taken == 0 {
                continue;
            }
            entries.push(entry(Account::Available, Some(id), -n));
            total += n;
            report.expired_lots += 1;
        }
        if total == 0 {
            continue;
        }
        entries.push(entry(Account::Expired, None, total));
        let t = Txn {
            tenant,
            member: &member,
            kind: "expire",
            reason: &reason,
            event_id: None,
            order_id: None,
            actor: None,
            now,
        };
        let txn_id = ledger::insert_txn(c, &t)?;
        ledger::write_entries(c, &t, txn_id, &entries)?;
        ledger::advance_open_lots(c, tenant, &member)?;
        ledger::relist_expiring(c, tenant, &member)?;
        report.expired_points += total;
        report.members_touched += 1;
    }
    Ok(full)
}

/// The lots whose expiry date has come (`$1` the tenant, `$2` now, `$3` how many): found
/// through `lots_expiring`, which holds only lots with a date (its predicate is implied by
/// `expires_at <= $2`; a conformance test checks that both databases use it).
pub const EXPIRY_DUE_LOTS: &str = "SELECT id, member_id, remaining FROM lots WHERE tenant_id = $1 AND state = 'available' AND remaining > 0 AND expires_at <= $2 LIMIT $3";

/// Members who may have been inactive long enough, and whether the read was cut at the limit.
pub(crate) type Candidates = (Vec<String>, bool);

/// The members whose last activity is about `months` or more before `now` and who have points
/// available: a walk over the tenant's members (no index holds the last activity, which every
/// purchase changes), so it is made on a reader, never inside the writer's transaction — it
/// took 145–240 ms at a million members, each minute the jobs ran, while purchases waited.
/// [`expire`] checks each one again, exactly, on the writer.
pub(crate) fn inactive_candidates(
    c: &mut dyn Conn,
    tenant: &str,
    months: u32,
    now: i64,
) -> Result<Candidates> {
    // A coarse cut (a few days of slack for month lengths) picks candidates; the exact test,
    // last activity + months <= now, is made per member.
    let cutoff = from_micros(now)
        .checked_sub_months(Months::new(months))
        .map_or(i64::MIN, |t| t.timestamp_micros() + 4 * 86_400_000_000);
    let candidates = c.query(
        "SELECT id FROM members WHERE tenant_id = $1 AND available > 0 AND last_activity_at IS NOT NULL AND last_activity_at <= $2 ORDER BY last_activity_at LIMIT $3",
        &[tenant.into(), cutoff.into(), LOTS_PER_RUN.into()],
    )?;
    let full = candidates.len() as i64 == LOTS_PER_RUN;
    Ok((candidates.iter().map(|r| r.text(0)).collect(), full))
}

/// The available lots of those `candidates` who, read again now, have been inactive for
/// `months` or more at `now` and still have points available. Each member's row is locked as
/// it is read again (PostgreSQL; one writer on SQLite), so the test holds until the expiry is
/// written: a purchase on another writer either commits first and is seen, or waits. Read
/// without the lock, a purchase committed between the test and [`expire`]'s claim would have
/// had its member's points expired all the same.
fn inactive_lots(
    c: &mut dyn Conn,
    tenant: &str,
    months: u32,
    now: i64,
    candidates: &[String],
) -> Result<LotsByMember> {
    let mut by_member = BTreeMap::new();
    for member in candidates {
        let Some(m) = c.query_one(
            &format!(
                "SELECT last_activity_at FROM members WHERE tenant_id = $1 AND id = $2 AND available > 0{}",
                c.dialect().skip_locked()
            ),
            &[tenant.into(), member.as_str().into()],
        )?
        else {
            continue;
        };
        let Some(last) = m.opt_int(0) else {
            continue;
        };
        if add_months(from_micros(last), months).timestamp_micros() > now {
            continue;
        }
        let lots: Vec<(i64, i64)> = c
            .query(
                &format!(
                    "SELECT l.id, l.remaining FROM {} AND l.state = 'available' ORDER BY l.id",
                    crate::ledger::open_lots_of("$2")
                ),
                &[tenant.into(), member.as_str().into()],
            )?
            .iter()
            .map(|r| (r.int(0), r.int(1)))
            .collect();
        by_member.insert(member.clone(), lots);
    }
    Ok(by_member)
}
