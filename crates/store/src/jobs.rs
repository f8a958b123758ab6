//! Background jobs: pending lots mature after the return window; lots expire per the
//! programme's policy. Each run claims members one at a time (on PostgreSQL with
//! `FOR UPDATE SKIP LOCKED`, so several nodes share the work without waiting on each other),
//! and does a bounded amount of work so a run never holds the writer for long.

use crate::conn::Conn;
use crate::error::Result;
use crate::ledger::{self, Entry, Txn, entry};
use crate::model::JobReport;
use chrono::Months;
use fidelis_core::ledger::{Account, repay_debt};
use fidelis_core::program::{ExpiryPolicy, ProgramSettings};
use fidelis_core::time::{add_months, from_micros};

/// Members one job run handles at most, per job kind and tenant.
pub const MEMBERS_PER_RUN: i64 = 500;

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

/// Matures the pending lots due at `now` of up to [`MEMBERS_PER_RUN`] members.
pub(crate) fn mature(
    c: &mut dyn Conn,
    tenant: &str,
    now: i64,
    report: &mut JobReport,
) -> Result<bool> {
    let members: Vec<String> = c
        .query(
            "SELECT DISTINCT member_id FROM lots WHERE tenant_id = $1 AND state = 'pending' AND matures_at <= $2 ORDER BY member_id LIMIT $3",
            &[tenant.into(), now.into(), MEMBERS_PER_RUN.into()],
        )?
        .iter()
        .map(|r| r.text(0))
        .collect();
    let full = members.len() as i64 == MEMBERS_PER_RUN;
    for member in members {
        let Some(state) = claim(c, tenant, &member)? else {
            continue;
        };
        let lots = c.query(
            "SELECT id, remaining FROM lots WHERE tenant_id = $1 AND member_id = $2 AND state = 'pending' AND matures_at <= $3 ORDER BY id",
            &[tenant.into(), member.as_str().into(), now.into()],
        )?;
        if lots.is_empty() {
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
        let mut entries: Vec<Entry> = Vec::with_capacity(lots.len() * 2);
        let mut available = state.available;
        for lot in &lots {
            let (id, n) = (lot.int(0), lot.int(1));
            // A debt (negative balance) is repaid before the lot becomes spendable.
            let (_, keep) = repay_debt(n, available);
            available += n;
            c.execute(
                "UPDATE lots SET state = CASE WHEN $2 = 0 THEN 'spent' ELSE 'available' END, remaining = $2 WHERE id = $1",
                &[id.into(), keep.into()],
            )?;
            entries.push(entry(Account::Pending, Some(id), -n));
            entries.push(entry(Account::Available, Some(id), n));
            report.matured_lots += 1;
            report.matured_points += n;
        }
        ledger::write_entries(c, &t, txn_id, &entries)?;
        report.members_touched += 1;
    }
    Ok(full)
}

/// Expires what the policy says is due at `now`, for up to [`MEMBERS_PER_RUN`] members.
pub(crate) fn expire(
    c: &mut dyn Conn,
    tenant: &str,
    settings: &ProgramSettings,
    now: i64,
    report: &mut JobReport,
) -> Result<bool> {
    let members: Vec<String> = match settings.expiry {
        ExpiryPolicy::None => return Ok(false),
        ExpiryPolicy::AfterEarning { .. } => c.query(
            "SELECT DISTINCT member_id FROM lots WHERE tenant_id = $1 AND state = 'available' AND expires_at <= $2 AND remaining > 0 ORDER BY member_id LIMIT $3",
            &[tenant.into(), now.into(), MEMBERS_PER_RUN.into()],
        )?,
        ExpiryPolicy::Inactivity { months } => {
            // A coarse cut (a few days of slack for month lengths) picks candidates; the
            // exact test, last activity + months <= now, is made per member below.
            let cutoff = from_micros(now)
                .checked_sub_months(Months::new(months))
                .map_or(i64::MIN, |t| t.timestamp_micros() + 4 * 86_400_000_000);
            c.query(
                "SELECT id FROM members WHERE tenant_id = $1 AND available > 0 AND last_activity_at IS NOT NULL AND last_activity_at <= $2 ORDER BY last_activity_at LIMIT $3",
                &[tenant.into(), cutoff.into(), (MEMBERS_PER_RUN * 4).into()],
            )?
        }
    }
    .iter()
    .map(|r| r.text(0))
    .collect();
    let full = members.len() as i64 >= MEMBERS_PER_RUN;
    let mut handled = 0;
    for member in members {
        if handled >= MEMBERS_PER_RUN {
            break;
        }
        let Some(_) = claim(c, tenant, &member)? else {
            continue;
        };
        let lots = match settings.expiry {
            ExpiryPolicy::AfterEarning { .. } => c.query(
                "SELECT id, remaining FROM lots WHERE tenant_id = $1 AND member_id = $2 AND state = 'available' AND expires_at <= $3 AND remaining > 0 ORDER BY id",
                &[tenant.into(), member.as_str().into(), now.into()],
            )?,
            ExpiryPolicy::Inactivity { months } => {
                let last = c
                    .query_one("SELECT last_activity_at FROM members WHERE tenant_id = $1 AND id = $2", &[tenant.into(), member.as_str().into()])?
                    .and_then(|r| r.opt_int(0));
                let due = last.is_some_and(|l| add_months(from_micros(l), months).timestamp_micros() <= now);
                if !due {
                    continue;
                }
                c.query(
                    "SELECT id, remaining FROM lots WHERE tenant_id = $1 AND member_id = $2 AND state = 'available' AND remaining > 0 ORDER BY id",
                    &[tenant.into(), member.as_str().into()],
                )?
            }
            ExpiryPolicy::None => vec![],
        };
        if lots.is_empty() {
            continue;
        }
        handled += 1;
        let reason = match settings.expiry {
            ExpiryPolicy::Inactivity { months } => format!("no activity for {months} months"),
            _ => "points reached their expiry date".to_string(),
        };
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
        let mut entries: Vec<Entry> = Vec::with_capacity(lots.len() + 1);
        let mut total = 0;
        for lot in &lots {
            let (id, n) = (lot.int(0), lot.int(1));
            ledger::take_lot(c, id, n, "expired")?;
            entries.push(entry(Account::Available, Some(id), -n));
            total += n;
            report.expired_lots += 1;
        }
        entries.push(entry(Account::Expired, None, total));
        ledger::write_entries(c, &t, txn_id, &entries)?;
        report.expired_points += total;
        report.members_touched += 1;
    }
    Ok(full)
}
