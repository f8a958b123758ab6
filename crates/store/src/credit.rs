//! Store credit in the database: money kept apart from points. Its own journal
//! (`credit_txns`, `credit_entries`: every transaction sums to zero), its own cached balance
//! (`members.credit_minor`, changed under the member's row lock in the same transaction), and
//! programme accounts `cashback`, `rewards` (credit given by rewards) and `spent`. Also the
//! invariants the verifier checks for it.

use crate::conn::{Conn, Row};
use crate::error::{Result, StoreError};
use crate::idem::IdemKey;
use crate::ledger::{lock_member, ts};
use crate::model::Page;
use crate::runtime::Store;
use fidelis_core::ProgramSettings;
use fidelis_core::credit::cashback_minor;
use fidelis_core::ledger::clawback_target;
use fidelis_core::program::RefundPolicy;
use serde::{Deserialize, Serialize};

/// The header of a store-credit transaction.
pub(crate) struct CreditTxn<'a> {
    pub tenant: &'a str,
    pub member: &'a str,
    /// `cashback`, `cashback_clawback`, `reward`, `spend`.
    pub kind: &'a str,
    pub reason: &'a str,
    pub order_id: Option<&'a str>,
    pub actor: Option<&'a str>,
    pub currency: &'a str,
    pub now: i64,
}

/// Posts `amount_minor` to the member's credit (negative: taken) against `counter`; the
/// caller holds the member's row lock. Returns the transaction id.
pub(crate) fn post(
    c: &mut dyn Conn,
    t: &CreditTxn<'_>,
    amount_minor: i64,
    counter: &str,
) -> Result<i64> {
    let id = c.insert_id(
            "INSERT INTO credit_txns (tenant_id, member_id, kind, reason, order_id, currency, actor, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
            &[t.tenant.into(), t.member.into(), t.kind.into(), t.reason.into(), t.order_id.into(), t.currency.into(), t.actor.into(), t.now.into()],
    )?;
    // Both legs in one statement: the member's `credit` and the programme's counter account.
    c.execute(
        "INSERT INTO credit_entries (tenant_id, txn_id, member_id, account, amount_minor) VALUES ($1, $2, $3, 'credit', $4), ($1, $2, NULL, $5, $6)",
        &[t.tenant.into(), id.into(), t.member.into(), amount_minor.into(), counter.into(), (-amount_minor).into()],
    )?;
    c.execute(
        "UPDATE members SET credit_minor = credit_minor + $3 WHERE tenant_id = $1 AND id = $2",
        &[t.tenant.into(), t.member.into(), amount_minor.into()],
    )?;
    Ok(id)
}

fn credit_balance(c: &mut dyn Conn, tenant: &str, member: &str) -> Result<Option<i64>> {
    Ok(c.query_one(
        "SELECT credit_minor FROM members WHERE tenant_id = $1 AND id = $2",
        &[tenant.into(), member.into()],
    )?
    .map(|r| r.int(0)))
}

/// Cashback on a purchase, per the programme's percentage (in the purchase's transaction).
pub(crate) fn cashback(
    c: &mut dyn Conn,
    tenant: &str,
    member: &str,
    order_id: &str,
    total_minor: i64,
    settings: &ProgramSettings,
    now: i64,
) -> Result<()> {
    // Settings are checked when saved; an unreadable rate gives no cashback.
    let bp = settings.credit.cashback_bp().unwrap_or(0);
    let amount = cashback_minor(total_minor, bp);
    if amount == 0 {
        return Ok(());
    }
    let reason = format!("cashback on order {order_id}");
    post(
        c,
        &CreditTxn {
            tenant,
            member,
            kind: "cashback",
            reason: &reason,
            order_id: Some(order_id),
            actor: None,
            currency: settings.currency.code(),
            now,
        },
        amount,
        "cashback",
    )?;
    Ok(())
}

/// The cashback an order's member was given for it and what was taken back since (one row:
/// given, taken back, entries), for [`claw_back_cashback`]; parameters tenant and order id.
/// The refund reads it with the order, in one round trip on PostgreSQL.
pub(crate) const CASHBACK_OF_ORDER: &str = "SELECT CAST(COALESCE(SUM(CASE WHEN t.kind = 'cashback' THEN e.amount_minor ELSE 0 END), 0) AS BIGINT), CAST(COALESCE(SUM(CASE WHEN t.kind = 'cashback_clawback' THEN -e.amount_minor ELSE 0 END), 0) AS BIGINT), COUNT(*) FROM credit_txns t JOIN credit_entries e ON e.txn_id = t.id WHERE t.tenant_id = $1 AND t.order_id = $2 AND t.member_id = (SELECT member_id FROM orders WHERE tenant_id = $1 AND order_id = $2) AND e.account = 'credit'";

/// After a refund: takes back the order's cashback in proportion to what is refunded so far
/// (cumulatively, like points). Under `allow_negative` the credit may go negative (later
/// cashback repays it); otherwise what the balance cannot cover is forgiven. `sums` is the
/// order's row of [`CASHBACK_OF_ORDER`], read before the refund wrote anything.
pub(crate) fn claw_back_cashback(
    c: &mut dyn Conn,
    tenant: &str,
    member: &str,
    order_id: &str,
    sums: Option<&Row>,
    settings: &ProgramSettings,
    now: i64,
) -> Result<()> {
    let Some(sums) = sums else { return Ok(()) };
    let (awarded, clawed) = (sums.int(0), sums.int(1));
    if awarded == 0 {
        return Ok(());
    }
    let order = c
        .query_one(
            "SELECT total_minor, refunded_minor FROM orders WHERE tenant_id = $1 AND order_id = $2",
            &[tenant.into(), order_id.into()],
        )?
        .ok_or_else(|| StoreError::NotFound(format!("order `{order_id}`")))?;
    let target = clawback_target(awarded, order.int(0), order.int(1));
    let due = (target - clawed).max(0);
    let balance = credit_balance(c, tenant, member)?.unwrap_or(0);
    let take = if settings.refund_policy == RefundPolicy::AllowNegative {
        due
    } else {
        due.min(balance.max(0))
    };
    if take == 0 {
        return Ok(());
    }
    let reason = format!("cashback taken back: refund of order {order_id}");
    post(
        c,
        &CreditTxn {
            tenant,
            member,
            kind: "cashback_clawback",
            reason: &reason,
            order_id: Some(order_id),
            actor: None,
            currency: settings.currency.code(),
            now,
        },
        -take,
        "cashback",
    )?;
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditSpent {
    pub txn_id: i64,
    pub member_id: String,
    pub order_id: Option<String>,
    pub amount_minor: i64,
    pub balance_minor: i64,
    pub currency: String,
}

#[allow(clippy::too_many_arguments)]
fn spend(
    c: &mut dyn Conn,
    tenant: &str,
    member: &str,
    amount_minor: i64,
    order_id: Option<&str>,
    actor: &str,
    settings: &ProgramSettings,
    now: i64,
) -> Result<CreditSpent> {
    lock_member(c, tenant, member)?
        .ok_or_else(|| StoreError::NotFound(format!("member `{member}`")))?;
    let balance = credit_balance(c, tenant, member)?.unwrap_or(0);
    let cur = settings.currency;
    if balance < amount_minor {
        let f = |m: i64| fidelis_core::money::format_minor(m.max(0), cur.exponent());
        return Err(StoreError::Conflict(format!(
            "not enough store credit: {} {cur} available, {} {cur} needed",
            f(balance),
            f(amount_minor)
        )));
    }
    let reason = match order_id {
        Some(o) => format!("spent on order {o}"),
        None => "spent".to_string(),
    };
    let txn_id = post(
        c,
        &CreditTxn {
            tenant,
            member,
            kind: "spend",
            reason: &reason,
            order_id,
            actor: Some(actor),
            currency: cur.code(),
            now,
        },
        -amount_minor,
        "spent",
    )?;
    crate::ledger::touch_activity(c, tenant, member, now, now)?;
    Ok(CreditSpent {
        txn_id,
        member_id: member.to_string(),
        order_id: order_id.map(str::to_string),
        amount_minor,
        balance_minor: balance - amount_minor,
        currency: cur.code().to_string(),
    })
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditMovement {
    pub id: i64,
    pub kind: String,
    pub reason: String,
    pub order_id: Option<String>,
    pub amount_minor: i64,
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreditView {
    pub member_id: String,
    pub balance_minor: i64,
    pub currency: String,
    /// Newest first.
    pub movements: Page<CreditMovement>,
}

fn view(
    c: &mut dyn Conn,
    tenant: &str,
    member: &str,
    settings: &ProgramSettings,
    cursor: Option<i64>,
    limit: i64,
) -> Result<CreditView> {
    let balance = credit_balance(c, tenant, member)?
        .ok_or_else(|| StoreError::NotFound(format!("member `{member}`")))?;
    let limit = limit.clamp(1, crate::ledger::MAX_PAGE);
    let rows = c.query(
        "SELECT t.id, t.kind, t.reason, t.order_id, e.amount_minor, t.created_at FROM credit_txns t JOIN credit_entries e ON e.txn_id = t.id AND e.account = 'credit' WHERE t.tenant_id = $1 AND t.member_id = $2 AND t.id < $3 ORDER BY t.id DESC LIMIT $4",
        &[tenant.into(), member.into(), cursor.unwrap_or(i64::MAX).into(), (limit + 1).into()],
    )?;
    let Page { items, next_cursor } = Page::from_rows(
        &rows,
        limit,
        |r| {
            Ok(CreditMovement {
                id: r.int(0),
                kind: r.text(1),
                reason: r.text(2),
                order_id: r.opt_text(3),
                amount_minor: r.int(4),
                created_at: ts(r.int(5)),
            })
        },
        |m| m.id.to_string(),
    )?;
    Ok(CreditView {
        member_id: member.to_string(),
        balance_minor: balance,
        currency: settings.currency.code().to_string(),
        movements: Page { items, next_cursor },
    })
}

/// Store-credit invariants: every credit transaction sums to zero, and every cached credit
/// balance equals its entries. Returns (unbalanced transaction ids, mismatches), at most
/// `samples` of each.
pub(crate) fn verify(
    c: &mut dyn Conn,
    tenant: &str,
    samples: i64,
) -> Result<(Vec<i64>, Vec<String>)> {
    let unbalanced = c
        .query(
            "SELECT txn_id FROM credit_entries WHERE ($2 = '' OR tenant_id = $2) GROUP BY txn_id HAVING SUM(amount_minor) <> 0 ORDER BY txn_id LIMIT $1",
            &[samples.into(), tenant.into()],
        )?
        .iter()
        .map(|r| r.int(0))
        .collect();
    let mismatches = c
        .query(
            "SELECT m.tenant_id, m.id, m.credit_minor, CAST(COALESCE(e.credit, 0) AS BIGINT)
             FROM members m LEFT JOIN (
                SELECT tenant_id, member_id, SUM(amount_minor) AS credit FROM credit_entries
                WHERE account = 'credit' GROUP BY tenant_id, member_id) e
             ON e.tenant_id = m.tenant_id AND e.member_id = m.id
             WHERE ($2 = '' OR m.tenant_id = $2) AND m.credit_minor <> COALESCE(e.credit, 0)
             ORDER BY m.tenant_id, m.id LIMIT $1",
            &[samples.into(), tenant.into()],
        )?
        .iter()
        .map(|r| {
            format!(
                "{}/{}: cached store credit {}, entries say {}",
                r.text(0),
                r.text(1),
                r.int(2),
                r.int(3)
            )
        })
        .collect();
    Ok((unbalanced, mismatches))
}

impl Store {
    pub async fn member_credit(
        &self,
        tenant: &str,
        member: &str,
        settings: ProgramSettings,
        cursor: Option<i64>,
        limit: i64,
    ) -> Result<CreditView> {
        let (tenant, member) = (tenant.to_string(), member.to_string());
        self.read(move |c| view(c, &tenant, &member, &settings, cursor, limit))
            .await
    }

    /// Spends store credit at the till; refused (409) beyond the balance.
    #[allow(clippy::too_many_arguments)]
    pub async fn spend_credit(
        &self,
        tenant: &str,
        member: &str,
        amount_minor: i64,
        order_id: Option<String>,
        actor: &str,
        settings: ProgramSettings,
        idem: Option<IdemKey>,
        now: i64,
    ) -> Result<(CreditSpent, bool)> {
        let (tenant, member, actor) = (tenant.to_string(), member.to_string(), actor.to_string());
        let part = member.clone();
        self.write_idem(&part, &tenant, idem, now, move |c, tenant| {
            spend(
                c,
                tenant,
                &member,
                amount_minor,
                order_id.as_deref(),
                &actor,
                &settings,
                now,
            )
        })
        .await
    }
}
