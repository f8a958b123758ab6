//! Purchases, refunds and custom events: each is recorded as an event and posted to the ledger
//! in the same transaction. An order id is unique per tenant: a resend of an order has one
//! effect and answers with the first result, marked `duplicate`.

use crate::conn::{Conn, Dialect, Param};
use crate::error::{Result, StoreError};
use crate::ledger::{self, Entry, NewLot, Txn, entry, expiry_for, lock_member, ts};
use crate::model::{BalanceNow, CustomOutcome, PurchaseOutcome, RefundOutcome};
use fidelis_core::earn::{Award, with_tier_award};
use fidelis_core::event::{Custom, Line, Purchase, Refund, RefundWhat, refund_lines_amount};
use fidelis_core::ledger::{Account, clawback_target, head_decides, plan_clawback, repay_debt};
use fidelis_core::program::ProgramSettings;
use fidelis_core::time::add_days;

fn to_json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Unprocessable(e.to_string()))
}

fn from_json<T: serde::de::DeserializeOwned>(s: &str) -> Result<T> {
    serde_json::from_str(s)
        .map_err(|e| StoreError::Unprocessable(format!("stored record unreadable: {e}")))
}

/// A purchase's update of its member row: balances, counters, last activity and open lots
/// together. `$1` the tenant, `$2` the member, `$3`/`$4` the available and pending deltas,
/// `$5` the points earned, `$6` the total, `$7` when it occurred, `$8` now, `$9` the open
/// transaction (if any), `$10` the soonest expiry dates (`NULL` keeps the row's).
pub(crate) static PURCHASE_MEMBER_UPDATE: std::sync::LazyLock<String> = std::sync::LazyLock::new(
    || {
        format!(
            "UPDATE members SET available = available + $3, pending = pending + $4, lifetime_earned = lifetime_earned + $5, order_count = order_count + 1, lifetime_spend_minor = lifetime_spend_minor + $6, purchased_minor = purchased_minor + $6, last_activity_at = CASE WHEN last_activity_at IS NULL OR last_activity_at < $7 THEN $7 ELSE last_activity_at END, updated_at = $8, open_lots_from = {}, expiring = COALESCE($10, expiring) WHERE tenant_id = $1 AND id = $2",
            ledger::open_from("$9")
        )
    },
);

pub(crate) fn purchase(
    c: &mut dyn Conn,
    tenant: &str,
    p: &Purchase,
    texts: &crate::together::PurchaseTexts,
    awards: &[Award],
    settings: &ProgramSettings,
    now: i64,
) -> Result<PurchaseOutcome> {
    // The member's row is locked first (and its balances read), then the order id looked up:
    // a concurrent resend waits on the member, then finds the order. The order's row is
    // written once, at the end, with its answer.
    let crate::members::Locked {
        id: member,
        state,
        expiring: stored_expiring,
        tier,
        enrolled,
    } = crate::members::resolve_locked(c, tenant, &p.member, settings.auto_enroll, now)?;
    let recorded = c.query_one(
        "SELECT result, member_id, total_minor FROM orders WHERE tenant_id = $1 AND order_id = $2",
        &[tenant.into(), (&p.order_id).into()],
    )?;
    if let Some(row) = recorded {
        // A resend is the same order again; the same id with another member or total is a
        // mistake the till should hear about, not a silent success.
        if row.text(1) != member || row.int(2) != p.total.minor {
            return Err(StoreError::Conflict(format!(
                "order `{}` was already recorded with another member or total",
                p.order_id
            )));
        }
        let mut first: PurchaseOutcome = from_json(&row.text(0))?;
        first.duplicate = true;
        return Ok(first);
    }
    let occurred = p.occurred_at.timestamp_micros();
    let event_id = c.insert_id(
            &format!("INSERT INTO events (tenant_id, member_id, kind, type, order_id, occurred_at, recorded_at, channel, store_id, amount_minor, currency, payload, tier_skip) VALUES ($1, $2, 'purchase', 'purchase', $3, $4, $5, $6, $7, $8, $9, $10, {}) RETURNING id", crate::tiers::tier_skip_sql(c.dialect())),
            &[tenant.into(), member.as_str().into(), (&p.order_id).into(), occurred.into(), now.into(), p.channel.as_str().into(), p.store_id.as_ref().into(), p.total.minor.into(), p.total.currency.code().into(), texts.payload.as_str().into()],
    )?;
    // The tier multiplier earns at the tier read under the member's lock. Rule awards are cut
    // to their caps and budgets here, under the member's lock and the counters' row locks, then
    // recorded with what each was computed on.
    let awards = with_tier_award(awards, settings, tier.as_deref(), p.total.minor);
    let settled = crate::awards::settle(c, tenant, &member, &awards)?;
    let awards = settled.as_slice();
    crate::awards::record(
        c,
        tenant,
        event_id,
        Some(&p.order_id),
        &member,
        awards,
        p.total.minor,
        now,
    )?;
    let points: i64 = awards.iter().map(|a| a.points).sum::<i64>().max(0);
    let matures = add_days(p.occurred_at, settings.pending_days).timestamp_micros();
    let pending = settings.pending_days > 0 && matures > now;
    let expires_at = expiry_for(settings, occurred);
    let (mut debt_repaid, mut d_avail, mut d_pending) = (0, 0, 0);
    // The transaction of a lot with points left, noted on the member row with the balances.
    let mut open_txn: Option<i64> = None;
    // The member's soonest expiry dates with this purchase's lot, when it joins them.
    let mut expiring: Option<String> = None;
    if points > 0 {
        let reason = format!("purchase {}", p.order_id);
        let t = Txn {
            tenant,
            member: &member,
            kind: "earn",
            reason: &reason,
            event_id: Some(event_id),
            order_id: Some(&p.order_id),
            actor: None,
            now,
        };
        let txn_id = ledger::insert_txn(c, &t)?;
        // Points credited to `available` repay a debt (negative balance) before they become a
        // lot; pending points repay it when they mature.
        let (repaid, keep) = if pending {
            (0, points)
        } else {
            repay_debt(points, state.available)
        };
        debt_repaid = repaid;
        let lot = NewLot {
            order_id: Some(&p.order_id),
            pending,
            amount: points,
            remaining: keep,
            earned_at: occurred,
            matures_at: Some(matures),
            expires_at,
        };
        let lot_id = ledger::insert_lot_row(c, &t, txn_id, &lot)?;
        open_txn = (keep > 0).then_some(txn_id);
        expiring = ledger::expiring_plus(&stored_expiring, lot.expires_at, keep, pending)?;
        let account = if pending {
            Account::Pending
        } else {
            Account::Available
        };
        (d_avail, d_pending) = ledger::insert_entries(
            c,
            &t,
            txn_id,
            &[
                entry(account, Some(lot_id), points),
                entry(Account::Issued, None, -points),
            ],
        )?;
    }
    // One update of the member row: balances, counters, last activity and open lots together.
    c.defer(
        &PURCHASE_MEMBER_UPDATE,
        &[
            tenant.into(),
            member.as_str().into(),
            d_avail.into(),
            d_pending.into(),
            points.into(),
            p.total.minor.into(),
            occurred.into(),
            now.into(),
            open_txn.into(),
            expiring.as_deref().into(),
        ],
    )?;
    crate::member_value::after_purchase(c, tenant, &member, p, settings, now)?;
    let outcome = PurchaseOutcome {
        event_id,
        member_id: member.clone(),
        order_id: p.order_id.clone(),
        points,
        status: if pending { "pending" } else { "available" }.into(),
        matures_at: pending.then(|| ts(matures)),
        expires_at: expires_at.filter(|_| points > 0).map(ts),
        breakdown: crate::awards::public(awards),
        debt_repaid,
        enrolled,
        duplicate: false,
        balance: BalanceNow {
            available: state.available + d_avail,
            pending: state.pending + d_pending,
        },
    };
    // Only a resend of this order through another writer (the same member named another way)
    // can have recorded it since the look-up above; its client is asked to retry, and the
    // retry answers as a duplicate.
    c.execute(
        "INSERT INTO orders (tenant_id, order_id, member_id, event_id, total_minor, lines, awarded, refunded_minor, clawed_back, refunded_lines, result) VALUES ($1, $2, $3, $4, $5, $6, $7, 0, 0, '[]', $8)",
        &[tenant.into(), (&p.order_id).into(), member.as_str().into(), event_id.into(), p.total.minor.into(), texts.lines.as_str().into(), points.into(), to_json(&outcome)?.as_str().into()],
    )
    .map_err(|e| match e.kind {
        crate::conn::DbErrorKind::Unique => StoreError::Busy(format!(
            "order `{}` is being recorded by another request; retry",
            p.order_id
        )),
        _ => e.into(),
    })?;
    Ok(outcome)
}

/// The lots a refund's claw-back plans from, and its plan. A claw-back takes the member's
/// pending points (the order's own first), then available points soonest expiring first; a
/// member who never redeems keeps a lot per purchase, so reading every open lot made a
/// refund's cost grow with the member's history. It reads the first and the last
/// [`ledger::DEBIT_HEAD`] open lots instead (`head_rows`, `tail_rows`): pending lots are the
/// newest, and the last ones hold all of them when their points are the member's pending
/// balance (`pending`); the available points it takes are decided by the first lots as a
/// debit's are ([`head_decides`]). When either is not so, every open lot is read.
#[allow(clippy::too_many_arguments)]
fn refund_lots(
    c: &mut dyn Conn,
    tenant: &str,
    member: &str,
    order_id: &str,
    claw: i64,
    policy: fidelis_core::program::RefundPolicy,
    pending: i64,
    head_rows: &[crate::conn::Row],
    tail_rows: &[crate::conn::Row],
) -> Result<(ledger::OpenLots, fidelis_core::ledger::ClawbackPlan)> {
    let plan = |lots: &[ledger::LotRow], available_from: &[ledger::LotRow]| {
        // The pending lots of this order (`own`) or of others.
        let pending = |own: bool| {
            lots.iter()
                .filter(|l| {
                    l.state == "pending" && (l.order_id.as_deref() == Some(order_id)) == own
                })
                .map(ledger::LotRow::view)
                .collect::<Vec<_>>()
        };
        let available: Vec<_> = available_from
            .iter()
            .filter(|l| l.state == "available")
            .map(ledger::LotRow::view)
            .collect();
        let p = plan_clawback(claw, &pending(true), &pending(false), &available, policy);
        (p, available)
    };
    let head = ledger::OpenLots::of_head(head_rows);
    if head.complete {
        let (p, _) = plan(&head.lots, &head.lots);
        return Ok((head, p));
    }
    let mut known = head.lots.clone();
    for l in ledger::lot_rows(tail_rows) {
        if !known.iter().any(|k| k.id == l.id) {
            known.push(l);
        }
    }
    let pending_known: i64 = known
        .iter()
        .filter(|l| l.state == "pending")
        .map(|l| l.remaining)
        .sum();
    let (p, head_available) = plan(&known, &head.lots);
    let from_available: i64 = p.from_available.iter().map(|(_, n)| n).sum();
    let needed = claw - p.pending_total();
    let decided = pending_known == pending
        && (needed == 0
            || policy == fidelis_core::program::RefundPolicy::PendingOnly
            || head.list.as_ref().is_some_and(|list| {
                head_decides(
                    &head_available,
                    &p.from_available,
                    from_available,
                    needed,
                    list,
                )
            }));
    if decided {
        let open = ledger::OpenLots {
            lots: known,
            complete: false,
            list: head.list,
        };
        return Ok((open, p));
    }
    let open = ledger::OpenLots::all(c, tenant, member)?;
    let (p, _) = plan(&open.lots, &open.lots);
    Ok((open, p))
}

/// The member an order was recorded for (`$1` the tenant, `$2` the order id).
const MEMBER_OF_ORDER: &str = "SELECT member_id FROM orders WHERE tenant_id = $1 AND order_id = $2";

pub(crate) fn refund(
    c: &mut dyn Conn,
    tenant: &str,
    r: &Refund,
    settings: &ProgramSettings,
    now: i64,
) -> Result<RefundOutcome> {
    if let Some(refund_id) = &r.refund_id {
        let claimed = c.execute(
            "INSERT INTO refunds (tenant_id, refund_id, order_id, result) VALUES ($1, $2, $3, NULL) ON CONFLICT DO NOTHING",
            &[tenant.into(), refund_id.into(), (&r.order_id).into()],
        )?;
        if claimed == 0 {
            let row = c
                .query_one(
                    "SELECT result, order_id FROM refunds WHERE tenant_id = $1 AND refund_id = $2",
                    &[tenant.into(), refund_id.into()],
                )?
                .ok_or_else(|| StoreError::Busy("refund vanished; retry".into()))?;
            if row.text(1) != r.order_id {
                return Err(StoreError::Conflict(format!(
                    "refund_id `{refund_id}` was already used for order `{}`",
                    row.text(1)
                )));
            }
            let mut first: RefundOutcome = from_json(&row.text(0))?;
            first.duplicate = true;
            return Ok(first);
        }
    }
    // The order, locked, with its awards and its cashback, then the order's member, locked,
    // and the member's open lots: one round trip on PostgreSQL. Each read runs after the locks
    // before it, so it sees what the last refund of the order, and the member's last write,
    // committed. The order is locked before its member, as a second refund of it does.
    let for_update = c.dialect().for_update();
    let order_sql = format!(
        "SELECT member_id, total_minor, lines, awarded, refunded_minor, clawed_back, refunded_lines FROM orders WHERE tenant_id = $1 AND order_id = $2 AND result IS NOT NULL{for_update}"
    );
    let member_sql = format!(
        "SELECT available, pending FROM members WHERE tenant_id = $1 AND id = ({MEMBER_OF_ORDER}){for_update}"
    );
    // The member's first and last open lots, not all of them (see `refund_lots`).
    let of_order = format!("({MEMBER_OF_ORDER})");
    let head_sql = ledger::open_lots_end_sql(&of_order, "");
    let tail_sql = ledger::open_lots_end_sql(&of_order, " DESC");
    let by_order: &[Param<'_>] = &[tenant.into(), (&r.order_id).into()];
    let mut asks: Vec<(&str, &[Param<'_>])> = vec![
        (&order_sql, by_order),
        (crate::awards::AWARDS_OF_ORDER, by_order),
        (crate::credit::CASHBACK_OF_ORDER, by_order),
        (&member_sql, by_order),
        (&head_sql, by_order),
        (&tail_sql, by_order),
    ];
    if c.dialect() == Dialect::Postgres {
        asks.push((ledger::NEXT_IDS, &[]));
    }
    let mut answers = c.query_all(&asks)?.into_iter();
    let mut next = || answers.next().unwrap_or_default();
    let (order, award_rows, cashback) = (next(), next(), next());
    let (member_rows, head_rows, tail_rows, ids) = (next(), next(), next(), next());
    let ahead = ledger::AheadIds::of(Some(&ids));
    let order = order
        .into_iter()
        .next()
        .ok_or_else(|| StoreError::NotFound(format!("order `{}`", r.order_id)))?;
    let member = order.text(0);
    let (total, awarded, refunded_before, clawed_before) =
        (order.int(1), order.int(3), order.int(4), order.int(5));
    let lines: Vec<Line> = from_json(&order.text(2))?;
    let mut refunded_lines: Vec<(String, i64)> = from_json(&order.text(6))?;
    let amount = match &r.what {
        RefundWhat::Amount(a) => *a,
        RefundWhat::Lines(wanted) => {
            let amount = refund_lines_amount(&lines, total, wanted, &refunded_lines)
                .map_err(|e| StoreError::Unprocessable(e.to_string()))?;
            refunded_lines.extend(wanted.iter().cloned());
            amount
        }
    };
    if refunded_before + amount > total {
        return Err(StoreError::Unprocessable(format!(
            "refund of {amount} (minor units) exceeds what is left of order `{}`: {} of {} already refunded",
            r.order_id, refunded_before, total
        )));
    }
    let state = member_rows
        .first()
        .map(ledger::member_state)
        .ok_or_else(|| StoreError::NotFound(format!("member `{member}`")))?;
    let occurred = r.occurred_at.timestamp_micros();
    let payload =
        serde_json::json!({ "refund_id": r.refund_id, "amount_minor": amount }).to_string();
    let event: [Param<'_>; 8] = [
        tenant.into(),
        member.as_str().into(),
        (&r.order_id).into(),
        occurred.into(),
        now.into(),
        amount.into(),
        settings.currency.code().into(),
        payload.as_str().into(),
    ];
    let event_id = match ahead.event {
        Some(id) => {
            let mut params = event.to_vec();
            params.push(id.into());
            c.defer(
                &format!("INSERT INTO events (tenant_id, member_id, kind, type, order_id, occurred_at, recorded_at, amount_minor, currency, payload, id, tier_skip) VALUES ($1, $2, 'refund', 'refund', $3, $4, $5, $6, $7, $8, $9, {})", crate::tiers::tier_skip_sql(c.dialect())),
                &params,
            )?;
            id
        }
        None => c.insert_id(
            &format!("INSERT INTO events (tenant_id, member_id, kind, type, order_id, occurred_at, recorded_at, amount_minor, currency, payload, tier_skip) VALUES ($1, $2, 'refund', 'refund', $3, $4, $5, $6, $7, $8, {}) RETURNING id", crate::tiers::tier_skip_sql(c.dialect())),
            &event,
        )?,
    };
    // Each recorded award gives back what it gave for the refunded lines or amount; orders
    // recorded before awards were claw back in proportion to the order.
    let claw = match crate::awards::clawback(c, &award_rows, &r.what, amount, total)? {
        Some(n) => n,
        None => (clawback_target(awarded, total, refunded_before + amount) - clawed_before).max(0),
    };
    let target = clawed_before + claw;
    let (open, plan) = refund_lots(
        c,
        tenant,
        &member,
        &r.order_id,
        claw,
        settings.refund_policy,
        state.pending,
        &head_rows,
        &tail_rows,
    )?;
    let lots = &open.lots;
    let taken = plan.pending_total() + plan.available_total();
    // What the clawback moves on the member's balances, written with the counters below.
    let (mut d_avail, mut d_pending) = (0, 0);
    if taken > 0 {
        let reason = format!("refund of order {}", r.order_id);
        let t = Txn {
            tenant,
            member: &member,
            kind: "clawback",
            reason: &reason,
            event_id: Some(event_id),
            order_id: Some(&r.order_id),
            actor: None,
            now,
        };
        let txn_id = ledger::insert_txn_as(c, &t, ahead.txn)?;
        let mut entries: Vec<Entry> = Vec::new();
        for (lot, n) in &plan.from_pending {
            ledger::take_lot(c, *lot, *n, "clawed_back")?;
            entries.push(entry(Account::Pending, Some(*lot), -n));
        }
        for (lot, n) in &plan.from_available {
            ledger::take_lot(c, *lot, *n, "clawed_back")?;
            entries.push(entry(Account::Available, Some(*lot), -n));
        }
        if plan.into_debt > 0 {
            entries.push(entry(Account::Available, None, -plan.into_debt));
        }
        entries.push(entry(Account::Issued, None, taken));
        (d_avail, d_pending) = ledger::insert_entries(c, &t, txn_id, &entries)?;
        if ledger::empties_a_lot(lots, &plan.from_pending)
            || ledger::empties_a_lot(lots, &plan.from_available)
        {
            ledger::advance_open_lots(c, tenant, &member)?;
        }
        if !plan.from_available.is_empty() {
            open.relist_after(c, tenant, &member, &plan.from_available)?;
        }
    }
    c.defer(
        "UPDATE orders SET refunded_minor = refunded_minor + $3, clawed_back = $4, refunded_lines = $5 WHERE tenant_id = $1 AND order_id = $2",
        &[tenant.into(), (&r.order_id).into(), amount.into(), target.into(), to_json(&refunded_lines)?.as_str().into()],
    )?;
    // Balances, counters and the member's activity in one update (one round trip on
    // PostgreSQL). The member's row is locked, so the balances after are those before plus
    // what moved (the member-value step after moves no points).
    c.defer(
        "UPDATE members SET available = available + $7, pending = pending + $8, lifetime_earned = lifetime_earned - $3, lifetime_spend_minor = lifetime_spend_minor - $4, last_activity_at = CASE WHEN last_activity_at IS NULL OR last_activity_at < $5 THEN $5 ELSE last_activity_at END, updated_at = $6 WHERE tenant_id = $1 AND id = $2",
        &[tenant.into(), member.as_str().into(), taken.into(), amount.into(), occurred.into(), now.into(), d_avail.into(), d_pending.into()],
    )?;
    crate::member_value::after_refund(
        c,
        tenant,
        &member,
        &r.order_id,
        cashback.first(),
        settings,
        now,
    )?;
    let after = ledger::MemberState {
        available: state.available + d_avail,
        pending: state.pending + d_pending,
    };
    let outcome = RefundOutcome {
        event_id,
        member_id: member,
        order_id: r.order_id.clone(),
        refund_id: r.refund_id.clone(),
        refunded_minor: amount,
        order_refunded_minor: refunded_before + amount,
        points_clawed_back: taken,
        from_pending: plan.pending_total(),
        from_available: plan.available_total(),
        forgiven: plan.forgiven,
        duplicate: false,
        balance: after.now(),
    };
    if let Some(refund_id) = &r.refund_id {
        c.defer(
            "UPDATE refunds SET result = $3 WHERE tenant_id = $1 AND refund_id = $2",
            &[
                tenant.into(),
                refund_id.into(),
                to_json(&outcome)?.as_str().into(),
            ],
        )?;
    }
    Ok(outcome)
}

pub(crate) fn custom(
    c: &mut dyn Conn,
    tenant: &str,
    e: &Custom,
    awards: &[Award],
    settings: &ProgramSettings,
    now: i64,
) -> Result<CustomOutcome> {
    let (member, _) = crate::members::resolve(c, tenant, &e.member, settings.auto_enroll, now)?;
    let state = lock_member(c, tenant, &member)?
        .ok_or_else(|| StoreError::NotFound(format!("member `{member}`")))?;
    let occurred = e.occurred_at.timestamp_micros();
    let payload = to_json(&e.properties)?;
    let event_id = c.insert_id(
            "INSERT INTO events (tenant_id, member_id, kind, type, occurred_at, recorded_at, payload) VALUES ($1, $2, 'custom', $3, $4, $5, $6) RETURNING id",
            &[tenant.into(), member.as_str().into(), e.kind.as_str().into(), occurred.into(), now.into(), payload.as_str().into()],
    )?;
    let settled = crate::awards::settle(c, tenant, &member, awards)?;
    let awards = settled.as_slice();
    crate::awards::record(c, tenant, event_id, None, &member, awards, 0, now)?;
    let points: i64 = awards.iter().map(|a| a.points).sum::<i64>().max(0);
    if points > 0 {
        let reason = format!("event {}", e.kind);
        let t = Txn {
            tenant,
            member: &member,
            kind: "earn",
            reason: &reason,
            event_id: Some(event_id),
            order_id: None,
            actor: None,
            now,
        };
        let txn_id = ledger::insert_txn(c, &t)?;
        let lot = NewLot {
            order_id: None,
            pending: false,
            amount: points,
            remaining: points,
            earned_at: occurred,
            matures_at: None,
            expires_at: expiry_for(settings, occurred),
        };
        ledger::credit_available(c, &t, txn_id, state, points, Account::Issued, lot)?;
        c.execute("UPDATE members SET lifetime_earned = lifetime_earned + $3 WHERE tenant_id = $1 AND id = $2", &[tenant.into(), member.as_str().into(), points.into()])?;
    }
    ledger::touch_activity(c, tenant, &member, occurred, now)?;
    crate::member_value::after_custom(c, tenant, &member, settings, now)?;
    let after = lock_member(c, tenant, &member)?.unwrap_or(state);
    Ok(CustomOutcome {
        event_id,
        member_id: member,
        kind: e.kind.clone(),
        points,
        breakdown: crate::awards::public(awards),
        balance: after.now(),
    })
}
