//! Points moving between members and to charities, and the programme's totals. A transfer is
//! two journal transactions (the sender's `transfer_out`, the receiver's `transfer_in`) through
//! the `transfer` clearing account, which therefore always sums to zero; the receiver's lots
//! keep the expiry dates of the sender's lots they came from, so a transfer never extends
//! points' life. Both members are locked in id order, so two opposite transfers cannot
//! deadlock each other.

use crate::conn::Conn;
use crate::error::{Result, StoreError};
use crate::idem::IdemKey;
use crate::ledger::{self, Txn, lock_member};
use crate::model::BalanceNow;
use crate::runtime::Store;
use chrono::{Datelike, TimeZone, Utc};
use fidelis_core::ProgramSettings;
use fidelis_core::ledger::Account;
use fidelis_core::time::from_micros;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferOutcome {
    pub from_member_id: String,
    pub to_member_id: String,
    pub points: i64,
    pub reason: String,
    pub out_txn_id: i64,
    pub in_txn_id: i64,
    pub from_balance: BalanceNow,
    pub to_balance: BalanceNow,
}

fn month_start(now: i64) -> i64 {
    let t = from_micros(now);
    Utc.with_ymd_and_hms(t.year(), t.month(), 1, 0, 0, 0)
        .single()
        .map_or(i64::MIN, |m| m.timestamp_micros())
}

/// Points `member` sent since the start of the calendar month of `now`.
fn sent_this_month(c: &mut dyn Conn, tenant: &str, member: &str, now: i64) -> Result<i64> {
    Ok(c.query_one(
        "SELECT CAST(COALESCE(SUM(e.amount), 0) AS BIGINT) FROM txns t JOIN entries e ON e.txn_id = t.id WHERE t.tenant_id = $1 AND t.member_id = $2 AND t.kind = 'transfer_out' AND t.created_at >= $3 AND e.account = 'transfer'",
        &[tenant.into(), member.into(), month_start(now).into()],
    )?
    .map_or(0, |r| r.int(0)))
}

#[allow(clippy::too_many_arguments)]
fn transfer(
    c: &mut dyn Conn,
    tenant: &str,
    from: &str,
    to: &str,
    points: i64,
    reason: &str,
    actor: &str,
    settings: &ProgramSettings,
    now: i64,
) -> Result<TransferOutcome> {
    if from == to {
        return Err(StoreError::Unprocessable(
            "a member cannot transfer points to themselves".into(),
        ));
    }
    let (first, second) = if from < to { (from, to) } else { (to, from) };
    for m in [first, second] {
        lock_member(c, tenant, m)?.ok_or_else(|| StoreError::NotFound(format!("member `{m}`")))?;
    }
    let sent = sent_this_month(c, tenant, from, now)?;
    settings
        .transfers
        .check(points, sent)
        .map_err(StoreError::Unprocessable)?;
    let out_reason = format!("transfer to {to}: {reason}");
    let t_out = Txn {
        tenant,
        member: from,
        kind: "transfer_out",
        reason: &out_reason,
        event_id: None,
        order_id: None,
        actor: Some(actor),
        now,
    };
    let out_id = ledger::insert_txn(c, &t_out)?;
    ledger::debit_available(c, &t_out, out_id, points, Account::Transfer, "spent")?;
    let parts = crate::rewards::taken_by_expiry(c, out_id)?;
    let in_reason = format!("transfer from {from}: {reason}");
    let t_in = Txn {
        tenant,
        member: to,
        kind: "transfer_in",
        reason: &in_reason,
        event_id: None,
        order_id: None,
        actor: Some(actor),
        now,
    };
    let in_id = ledger::insert_txn(c, &t_in)?;
    crate::rewards::credit_parts(c, &t_in, in_id, &parts, Account::Transfer)?;
    ledger::touch_activity(c, tenant, from, now, now)?;
    ledger::touch_activity(c, tenant, to, now, now)?;
    let balance = |c: &mut dyn Conn, m: &str| -> Result<BalanceNow> {
        lock_member(c, tenant, m)?
            .map(|s| s.now())
            .ok_or_else(|| StoreError::NotFound(format!("member `{m}`")))
    };
    Ok(TransferOutcome {
        from_member_id: from.to_string(),
        to_member_id: to.to_string(),
        points,
        reason: reason.to_string(),
        out_txn_id: out_id,
        in_txn_id: in_id,
        from_balance: balance(c, from)?,
        to_balance: balance(c, to)?,
    })
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DonationOutcome {
    pub member_id: String,
    pub charity: String,
    pub points: i64,
    pub txn_id: i64,
    pub balance: BalanceNow,
}

fn donate(
    c: &mut dyn Conn,
    tenant: &str,
    member: &str,
    points: i64,
    charity: &str,
    actor: &str,
    now: i64,
) -> Result<DonationOutcome> {
    let state = ledger::lock_active_member(c, tenant, member, now, now)?
        .ok_or_else(|| StoreError::NotFound(format!("member `{member}`")))?;
    let reason = format!("donation to {charity}");
    let t = Txn {
        tenant,
        member,
        kind: "donate",
        reason: &reason,
        event_id: None,
        order_id: None,
        actor: Some(actor),
        now,
    };
    let txn_id = ledger::insert_txn(c, &t)?;
    ledger::debit_available(c, &t, txn_id, points, Account::Donated, "spent")?;
    c.execute(
        "INSERT INTO donations (tenant_id, member_id, charity, points, txn_id, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        &[tenant.into(), member.into(), charity.into(), points.into(), txn_id.into(), now.into()],
    )?;
    // The debit moved `available` only, under the member's lock: no need to read it back.
    Ok(DonationOutcome {
        member_id: member.to_string(),
        charity: charity.to_string(),
        points,
        txn_id,
        balance: BalanceNow {
            available: state.available - points,
            pending: state.pending,
        },
    })
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CharityTotal {
    pub charity: String,
    pub points: i64,
    pub donations: i64,
}

/// The programme's totals, from the journal: points issued (net of claw-backs), redeemed,
/// expired, donated, adjusted (net), and what members hold (the outstanding liability); the
/// same for store credit, in minor units.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgramTotals {
    pub issued: i64,
    pub redeemed: i64,
    pub expired: i64,
    pub donated: i64,
    pub adjusted: i64,
    /// Always 0: every transfer's two legs cancel.
    pub in_transfer: i64,
    pub outstanding_available: i64,
    pub outstanding_pending: i64,
    pub outstanding: i64,
    pub donations_by_charity: Vec<CharityTotal>,
    pub credit_cashback_minor: i64,
    pub credit_rewards_minor: i64,
    pub credit_spent_minor: i64,
    pub credit_outstanding_minor: i64,
    pub currency: String,
}

/// Charities listed in the totals at most.
const CHARITIES_SHOWN: i64 = 100;

fn totals(c: &mut dyn Conn, tenant: &str, settings: &ProgramSettings) -> Result<ProgramTotals> {
    let mut t = ProgramTotals {
        currency: settings.currency.code().to_string(),
        ..Default::default()
    };
    for r in c.query(
        "SELECT account, CAST(SUM(amount) AS BIGINT) FROM entries WHERE tenant_id = $1 GROUP BY account",
        &[tenant.into()],
    )? {
        let v = r.int(1);
        match Account::parse(&r.text(0)) {
            Some(Account::Issued) => t.issued = -v,
            Some(Account::Redeemed) => t.redeemed = v,
            Some(Account::Expired) => t.expired = v,
            Some(Account::Donated) => t.donated = v,
            Some(Account::Adjusted) => t.adjusted = -v,
            Some(Account::Transfer) => t.in_transfer = v,
            Some(Account::Available) => t.outstanding_available = v,
            Some(Account::Pending) => t.outstanding_pending = v,
            None => {}
        }
    }
    t.outstanding = t.outstanding_available + t.outstanding_pending;
    t.donations_by_charity = c
        .query(
            "SELECT charity, CAST(SUM(points) AS BIGINT), COUNT(*) FROM donations WHERE tenant_id = $1 GROUP BY charity ORDER BY charity LIMIT $2",
            &[tenant.into(), CHARITIES_SHOWN.into()],
        )?
        .iter()
        .map(|r| CharityTotal {
            charity: r.text(0),
            points: r.int(1),
            donations: r.int(2),
        })
        .collect();
    for r in c.query(
        "SELECT account, CAST(SUM(amount_minor) AS BIGINT) FROM credit_entries WHERE tenant_id = $1 GROUP BY account",
        &[tenant.into()],
    )? {
        let v = r.int(1);
        match r.text(0).as_str() {
            "cashback" => t.credit_cashback_minor = -v,
            "rewards" => t.credit_rewards_minor = -v,
            "spent" => t.credit_spent_minor = v,
            "credit" => t.credit_outstanding_minor = v,
            _ => {}
        }
    }
    Ok(t)
}

impl Store {
    /// Moves points from one member to another, within the programme's limits.
    #[allow(clippy::too_many_arguments)]
    pub async fn transfer_points(
        &self,
        tenant: &str,
        from: &str,
        to: &str,
        points: i64,
        reason: &str,
        actor: &str,
        settings: ProgramSettings,
        idem: Option<IdemKey>,
        now: i64,
    ) -> Result<(TransferOutcome, bool)> {
        let (tenant, from, to, reason, actor) = (
            tenant.to_string(),
            from.to_string(),
            to.to_string(),
            reason.to_string(),
            actor.to_string(),
        );
        let part = from.clone();
        self.write_idem(&part, &tenant, idem, now, move |c, tenant| {
            transfer(
                c, tenant, &from, &to, points, &reason, &actor, &settings, now,
            )
        })
        .await
    }

    /// Gives a member's points to a charity (the programme's `donated` account).
    #[allow(clippy::too_many_arguments)]
    pub async fn donate_points(
        &self,
        tenant: &str,
        member: &str,
        points: i64,
        charity: &str,
        actor: &str,
        idem: Option<IdemKey>,
        now: i64,
    ) -> Result<(DonationOutcome, bool)> {
        let (tenant, member, charity, actor) = (
            tenant.to_string(),
            member.to_string(),
            charity.to_string(),
            actor.to_string(),
        );
        let part = member.clone();
        self.write_idem(&part, &tenant, idem, now, move |c, tenant| {
            donate(c, tenant, &member, points, &charity, &actor, now)
        })
        .await
    }

    /// The programme's totals (a scan of the tenant's journal: an admin read, not a hot path).
    pub async fn program_totals(
        &self,
        tenant: &str,
        settings: ProgramSettings,
    ) -> Result<ProgramTotals> {
        let tenant = tenant.to_string();
        self.read(move |c| totals(c, &tenant, &settings)).await
    }
}
