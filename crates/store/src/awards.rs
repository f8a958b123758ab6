//! Rule awards inside the write transaction: caps and budgets are enforced against counters
//! (locked rows, so concurrent writers on several nodes never exceed them), every award is
//! recorded with its rule version and what it was computed on, and a refund claws back from
//! each award what it gave for the refunded lines or amount. Also the awards of events that are
//! not purchases (enrolment, birthday, refund bonuses), each granted once per key.

use crate::conn::{Conn, Dialect, Param, Row};
use crate::error::{Result, StoreError};
use crate::idem::IdemKey;
use crate::ledger::{self, NewLot, Txn, expiry_for};
use crate::model::BalanceNow;
use crate::runtime::Store;
use fidelis_core::earn::{Award, AwardBasis, BASE_SOURCE, MemberFacts};
use fidelis_core::event::{MemberKey, RefundWhat};
use fidelis_core::ledger::{Account, clawback_target};
use fidelis_core::program::ProgramSettings;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap, HashSet};

/// A counter's key within a tenant: the counter (`rule:<id>`, `campaign:<id>`), the member
/// (empty for a budget shared by everyone) and the period.
pub(crate) type CounterKey = (std::sync::Arc<str>, String, std::sync::Arc<str>);

/// Where settling reads counters and adds to them.
pub(crate) trait Counters {
    /// The points the counter holds, locked until the transaction ends.
    fn used(&mut self, c: &mut dyn Conn, key: &CounterKey) -> Result<i64>;
    /// Adds points to a counter [`Counters::used`] has locked.
    fn add(&mut self, c: &mut dyn Conn, key: &CounterKey, points: i64) -> Result<()>;
}

/// Counters read and written row by row: each created if missing and locked when first read.
pub(crate) struct RowCounters<'a> {
    pub tenant: &'a str,
}

impl Counters for RowCounters<'_> {
    fn used(&mut self, c: &mut dyn Conn, key: &CounterKey) -> Result<i64> {
        let (counter, who, period) = key;
        let params = [
            self.tenant.into(),
            (&**counter).into(),
            who.as_str().into(),
            (&**period).into(),
        ];
        c.execute(
            "INSERT INTO rule_counters (tenant_id, counter, member_id, period, points) VALUES ($1, $2, $3, $4, 0) ON CONFLICT DO NOTHING",
            &params,
        )?;
        Ok(c
            .query_one(
                &format!("SELECT points FROM rule_counters WHERE tenant_id = $1 AND counter = $2 AND member_id = $3 AND period = $4{}", c.dialect().for_update()),
                &params,
            )?
            .map_or(0, |r| r.int(0)))
    }

    fn add(&mut self, c: &mut dyn Conn, key: &CounterKey, points: i64) -> Result<()> {
        let (counter, who, period) = key;
        c.execute(
            "UPDATE rule_counters SET points = points + $5 WHERE tenant_id = $1 AND counter = $2 AND member_id = $3 AND period = $4",
            &[self.tenant.into(), (&**counter).into(), who.as_str().into(), (&**period).into(), points.into()],
        )?;
        Ok(())
    }
}

/// Rule counters on PostgreSQL, all locked at once in key order: created where missing,
/// locked and read with two statements before any purchase is settled, settled in memory
/// purchase by purchase (each seeing what the ones before it added), and written back with
/// one statement. Rows created here that no purchase reached (an Nth-order check or an
/// earlier cap left nothing to count) are removed again, so the rows are those counters
/// locked one by one would leave. A grouped write loads its chunk's counters; a purchase
/// posted alone, its own ([`settle`]). Both lock in key order, so two writers never each
/// hold a budget the other waits for.
#[derive(Default)]
pub(crate) struct LockedCounters {
    held: HashMap<CounterKey, i64>,
    added: HashMap<CounterKey, i64>,
    created: HashSet<CounterKey>,
    reached: HashSet<CounterKey>,
}

impl LockedCounters {
    pub(crate) fn load(
        c: &mut dyn Conn,
        tenant: &str,
        keys: BTreeSet<CounterKey>,
    ) -> Result<LockedCounters> {
        let mut out = LockedCounters::default();
        if keys.is_empty() {
            return Ok(out);
        }
        // In key order, so writers lock shared counters (budgets) in one order.
        let counters: Vec<Option<&str>> = keys.iter().map(|k| Some(&*k.0)).collect();
        let members: Vec<Option<&str>> = keys.iter().map(|k| Some(k.1.as_str())).collect();
        let periods: Vec<Option<&str>> = keys.iter().map(|k| Some(&*k.2)).collect();
        let params = [
            tenant.into(),
            Param::Texts(&counters),
            Param::Texts(&members),
            Param::Texts(&periods),
        ];
        let key_of = |r: &crate::conn::Row| -> CounterKey {
            (r.text(0).into(), r.text(1), r.text(2).into())
        };
        for r in c.query(
            "INSERT INTO rule_counters (tenant_id, counter, member_id, period, points) SELECT $1, k.c, k.m, k.p, 0 FROM unnest($2::text[], $3::text[], $4::text[]) WITH ORDINALITY AS k(c, m, p, o) ORDER BY k.o ON CONFLICT DO NOTHING RETURNING counter, member_id, period",
            &params,
        )? {
            out.created.insert(key_of(&r));
        }
        for r in c.query(
            "SELECT r.counter, r.member_id, r.period, r.points FROM rule_counters r JOIN unnest($2::text[], $3::text[], $4::text[]) AS k(c, m, p) ON r.tenant_id = $1 AND r.counter = k.c AND r.member_id = k.m AND r.period = k.p ORDER BY r.counter, r.member_id, r.period FOR UPDATE OF r",
            &params,
        )? {
            out.held.insert(key_of(&r), r.int(3));
        }
        Ok(out)
    }

    /// Adds what was counted, and removes the rows created for nothing.
    pub(crate) fn write(self, c: &mut dyn Conn, tenant: &str) -> Result<()> {
        let mut added: Vec<(&CounterKey, i64)> = self.added.iter().map(|(k, n)| (k, *n)).collect();
        added.sort();
        let mut unused: Vec<&CounterKey> = self.created.difference(&self.reached).collect();
        unused.sort();
        if added.is_empty() && unused.is_empty() {
            return Ok(());
        }
        let texts = |keys: &[&CounterKey], f: fn(&CounterKey) -> &str| -> Vec<Option<String>> {
            keys.iter().map(|k| Some(f(k).to_string())).collect()
        };
        let added_keys: Vec<&CounterKey> = added.iter().map(|(k, _)| *k).collect();
        let cols = [
            texts(&added_keys, |k| &k.0),
            texts(&added_keys, |k| &k.1),
            texts(&added_keys, |k| &k.2),
            texts(&unused, |k| &k.0),
            texts(&unused, |k| &k.1),
            texts(&unused, |k| &k.2),
        ];
        let cols: Vec<Vec<Option<&str>>> = cols
            .iter()
            .map(|col| col.iter().map(|v| v.as_deref()).collect())
            .collect();
        let points: Vec<Option<i64>> = added.iter().map(|(_, n)| Some(*n)).collect();
        c.execute(
            "WITH up AS (UPDATE rule_counters r SET points = r.points + u.n FROM unnest($2::text[], $3::text[], $4::text[], $5::bigint[]) AS u(c, m, p, n) WHERE r.tenant_id = $1 AND r.counter = u.c AND r.member_id = u.m AND r.period = u.p RETURNING 1),
             gone AS (DELETE FROM rule_counters r USING unnest($6::text[], $7::text[], $8::text[]) AS u(c, m, p) WHERE r.tenant_id = $1 AND r.counter = u.c AND r.member_id = u.m AND r.period = u.p RETURNING 1)
             SELECT (SELECT COUNT(*) FROM up) + (SELECT COUNT(*) FROM gone)",
            &[
                tenant.into(),
                Param::Texts(&cols[0]),
                Param::Texts(&cols[1]),
                Param::Texts(&cols[2]),
                Param::Ints(&points),
                Param::Texts(&cols[3]),
                Param::Texts(&cols[4]),
                Param::Texts(&cols[5]),
            ],
        )?;
        Ok(())
    }
}

impl Counters for LockedCounters {
    fn used(&mut self, _: &mut dyn Conn, key: &CounterKey) -> Result<i64> {
        let Some(held) = self.held.get(key) else {
            return Err(StoreError::Busy(format!(
                "the counter {} was not locked before settling",
                key.0
            )));
        };
        self.reached.insert(key.clone());
        Ok(held + self.added.get(key).copied().unwrap_or(0))
    }

    fn add(&mut self, _: &mut dyn Conn, key: &CounterKey, points: i64) -> Result<()> {
        *self.added.entry(key.clone()).or_insert(0) += points;
        Ok(())
    }
}

/// The counters an award's limits name for `member`, in the order settling visits them.
pub(crate) fn counter_keys<'a>(
    member: &'a str,
    a: &'a Award,
) -> impl Iterator<Item = CounterKey> + 'a {
    a.terms.iter().flat_map(move |t| {
        t.limits.iter().map(move |l| {
            let who = if l.per_member { member } else { "" };
            (l.counter.clone(), who.to_string(), l.period.clone())
        })
    })
}

/// Cuts each award to what its caps, budgets and Nth-order check allow, and counts what it
/// keeps. The member's row must already be locked. On PostgreSQL, where several writers share
/// budgets, the counters the awards name are locked at once in key order, as a grouped write
/// locks its chunk's ([`LockedCounters`]): locked one by one in the awards' order, a purchase
/// posted alone could hold one budget while waiting for another that a grouped write on
/// another writer held while waiting for the first. SQLite has one writer: counters are
/// locked row by row.
pub(crate) fn settle(
    c: &mut dyn Conn,
    tenant: &str,
    member: &str,
    awards: &[Award],
) -> Result<Vec<Award>> {
    if c.dialect() == Dialect::Postgres {
        let keys: BTreeSet<CounterKey> = awards
            .iter()
            .flat_map(|a| counter_keys(member, a))
            .collect();
        if !keys.is_empty() {
            let mut counters = LockedCounters::load(c, tenant, keys)?;
            let settled = settle_with(c, &mut counters, tenant, member, None, awards)?;
            counters.write(c, tenant)?;
            return Ok(settled);
        }
    }
    settle_with(c, &mut RowCounters { tenant }, tenant, member, None, awards)
}

/// [`settle`] against `counters`; `order_count` is the member's orders before this one when
/// the caller has it (else it is read when an Nth-order check needs it).
pub(crate) fn settle_with(
    c: &mut dyn Conn,
    counters: &mut dyn Counters,
    tenant: &str,
    member: &str,
    mut order_count: Option<i64>,
    awards: &[Award],
) -> Result<Vec<Award>> {
    let mut out = Vec::with_capacity(awards.len());
    for a in awards {
        let mut a = a.clone();
        let Some(terms) = a.terms.as_deref() else {
            out.push(a);
            continue;
        };
        let asked = a.capped_from.unwrap_or(a.points);
        let mut allowed = a.points.max(0);
        if let Some((n, every)) = terms.nth_order {
            let count = match order_count {
                Some(k) => k,
                None => {
                    let k = c
                        .query_one(
                            "SELECT order_count FROM members WHERE tenant_id = $1 AND id = $2",
                            &[tenant.into(), member.into()],
                        )?
                        .map_or(0, |r| r.int(0));
                    order_count = Some(k);
                    k
                }
            };
            let k = count + 1;
            if !(if every { n > 0 && k % n == 0 } else { k == n }) {
                allowed = 0;
            }
        }
        let keys: Vec<CounterKey> = counter_keys(member, &a).collect();
        for (l, key) in terms.limits.iter().zip(&keys) {
            if allowed == 0 {
                break;
            }
            let used = counters.used(c, key)?;
            allowed = allowed.min((l.max - used).max(0));
        }
        if allowed > 0 {
            for key in &keys {
                counters.add(c, key, allowed)?;
            }
        }
        if allowed < a.points {
            a.capped_from = Some(asked);
        }
        a.points = allowed;
        out.push(a);
    }
    Ok(out)
}

/// The awards of an event that are recorded as rows: those with points, except a purchase's
/// lone award of the programme's base rate on the whole order. That award is what the order
/// row already holds (`awarded` points on `total_minor`, with the order's `refunded_minor` and
/// `clawed_back`), and a refund of an order without award rows claws back in proportion to
/// the order, which for that award is the same sum as its row would give. Most purchases earn
/// the base rate and nothing else; a row per purchase was a table row and two index entries
/// on the write path for nothing. [`Store::event_awards`] shows such an order's award again.
pub(crate) fn recorded(awards: &[Award]) -> impl Iterator<Item = &Award> {
    let earning = || awards.iter().filter(|a| a.points > 0);
    let base_alone = earning().count() == 1 && earning().all(is_whole_order_base);
    earning().filter(move |_| !base_alone)
}

/// The programme's base rate, on the whole order, with no rule, campaign or terms.
fn is_whole_order_base(a: &Award) -> bool {
    a.source == BASE_SOURCE && a.rule_version.is_none() && a.campaign.is_none() && a.terms.is_none()
}

/// Records the awards an event gave ([`recorded`]), with what each was computed on: its line
/// basis, or the whole `total_minor`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn record(
    c: &mut dyn Conn,
    tenant: &str,
    event_id: i64,
    order_id: Option<&str>,
    member: &str,
    awards: &[Award],
    total_minor: i64,
    now: i64,
) -> Result<()> {
    for a in recorded(awards) {
        let basis = a.terms.as_deref().and_then(|t| t.basis.as_ref());
        let basis_json = basis.map(serde_json::to_string).transpose()?;
        let basis_total = basis.map_or(total_minor, |b| b.total_minor);
        c.defer(
            "INSERT INTO awards (tenant_id, event_id, order_id, member_id, source, rule_version, campaign_id, points, basis, basis_total, basis_refunded, clawed_back, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 0, 0, $11)",
            &[
                tenant.into(), event_id.into(), order_id.into(), member.into(), a.source.as_str().into(), a.rule_version.into(),
                a.campaign.as_ref().into(), a.points.into(), basis_json.as_ref().into(), basis_total.into(), now.into(),
            ],
        )?;
    }
    Ok(())
}

/// The awards as an answer shows them: without the terms the store consumed.
pub(crate) fn public(awards: &[Award]) -> Vec<Award> {
    awards
        .iter()
        .map(|a| Award {
            terms: None,
            ..a.clone()
        })
        .collect()
}

/// An order's award rows as [`clawback`] takes them; parameters tenant and order id.
pub(crate) const AWARDS_OF_ORDER: &str = "SELECT id, points, basis, basis_total, basis_refunded, clawed_back FROM awards WHERE tenant_id = $1 AND event_id = (SELECT event_id FROM orders WHERE tenant_id = $1 AND order_id = $2) ORDER BY id";

/// The points a refund claws back in all, award by award: each award gives back what it gave
/// for the refunded part of what it was computed on (its lines, or the whole order). `None`
/// when the order has no award rows (recorded before awards were), and the caller claws back
/// in proportion to the order as before. `amount` is what the refund is worth, at the price
/// paid; `total` the order's total.
/// `rows` are the order's award rows ([`AWARDS_OF_ORDER`]), read with the order's lock held.
pub(crate) fn clawback(
    c: &mut dyn Conn,
    rows: &[Row],
    what: &RefundWhat,
    amount: i64,
    total: i64,
) -> Result<Option<i64>> {
    if rows.is_empty() {
        return Ok(None);
    }
    let mut claw = 0;
    for r in rows {
        let (id, points, basis_total, refunded_before, clawed_before) =
            (r.int(0), r.int(1), r.int(3), r.int(4), r.int(5));
        let basis: Option<AwardBasis> = match r.opt_text(2) {
            Some(s) => Some(serde_json::from_str(&s)?),
            None => None,
        };
        let share = match (&basis, what) {
            // An award on some lines gives back its part of the refunded units of those lines.
            (Some(b), RefundWhat::Lines(wanted)) => wanted
                .iter()
                .filter_map(|(sku, qty)| {
                    let line = b.lines.iter().find(|l| &l.sku == sku)?;
                    let part = i128::from(line.paid_minor) * i128::from((*qty).min(line.quantity))
                        / i128::from(line.quantity.max(1));
                    i64::try_from(part).ok()
                })
                .sum::<i64>(),
            // A refund by amount is spread over the order: an award on some lines takes its
            // share of it.
            (Some(b), RefundWhat::Amount(_)) if total > 0 => {
                i64::try_from(i128::from(amount) * i128::from(b.total_minor) / i128::from(total))
                    .unwrap_or(0)
            }
            (Some(_), RefundWhat::Amount(_)) => 0,
            // An award on the whole order follows the order's refunded amount.
            (None, _) => amount,
        };
        let refunded = refunded_before.saturating_add(share).min(basis_total);
        let target = clawback_target(points, basis_total, refunded).max(clawed_before);
        claw += target - clawed_before;
        c.defer(
            "UPDATE awards SET basis_refunded = $2, clawed_back = $3 WHERE id = $1",
            &[id.into(), refunded.into(), target.into()],
        )?;
    }
    Ok(Some(claw))
}

/// What an award of an event that is not a purchase is for: the member, a key that makes it
/// happen once (`enrolment:<member>`, `birthday:<member>:<year>`, `refund:<event id>`), and
/// the event it records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grant {
    pub member_id: String,
    pub key: String,
    /// `enrolment`, `birthday` or `refund`.
    pub kind: String,
    pub occurred_at: i64,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantOutcome {
    pub event_id: i64,
    pub member_id: String,
    pub kind: String,
    pub points: i64,
    pub breakdown: Vec<Award>,
    /// True when the key had already been granted: nothing changed.
    pub duplicate: bool,
    pub balance: BalanceNow,
}

pub(crate) fn grant(
    c: &mut dyn Conn,
    tenant: &str,
    g: &Grant,
    awards: &[Award],
    settings: &ProgramSettings,
    now: i64,
) -> Result<GrantOutcome> {
    let claimed = c.execute(
        "INSERT INTO rule_grants (tenant_id, grant_key, result, created_at) VALUES ($1, $2, NULL, $3) ON CONFLICT DO NOTHING",
        &[tenant.into(), g.key.as_str().into(), now.into()],
    )?;
    if claimed == 0 {
        let row = c
            .query_one(
                "SELECT result FROM rule_grants WHERE tenant_id = $1 AND grant_key = $2",
                &[tenant.into(), g.key.as_str().into()],
            )?
            .ok_or_else(|| StoreError::Busy("grant vanished; retry".into()))?;
        let mut first: GrantOutcome = serde_json::from_str(&row.text(0))?;
        first.duplicate = true;
        return Ok(first);
    }
    let state = ledger::lock_member(c, tenant, &g.member_id)?
        .ok_or_else(|| StoreError::NotFound(format!("member `{}`", g.member_id)))?;
    let payload = serde_json::json!({ "grant": g.key }).to_string();
    let event_id = c.insert_id(
            "INSERT INTO events (tenant_id, member_id, kind, type, occurred_at, recorded_at, payload) VALUES ($1, $2, 'rule', $3, $4, $5, $6) RETURNING id",
            &[tenant.into(), g.member_id.as_str().into(), g.kind.as_str().into(), g.occurred_at.into(), now.into(), payload.as_str().into()],
    )?;
    let settled = settle(c, tenant, &g.member_id, awards)?;
    let points: i64 = settled.iter().map(|a| a.points).sum::<i64>().max(0);
    let mut balance = state.now();
    if points > 0 {
        let t = Txn {
            tenant,
            member: &g.member_id,
            kind: "earn",
            reason: &g.reason,
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
            earned_at: g.occurred_at,
            matures_at: None,
            expires_at: expiry_for(settings, g.occurred_at),
        };
        ledger::credit_available(c, &t, txn_id, state, points, Account::Issued, lot)?;
        c.execute(
            "UPDATE members SET lifetime_earned = lifetime_earned + $3 WHERE tenant_id = $1 AND id = $2",
            &[tenant.into(), g.member_id.as_str().into(), points.into()],
        )?;
        balance.available += points;
    }
    record(c, tenant, event_id, None, &g.member_id, &settled, 0, now)?;
    let outcome = GrantOutcome {
        event_id,
        member_id: g.member_id.clone(),
        kind: g.kind.clone(),
        points,
        breakdown: public(&settled),
        duplicate: false,
        balance,
    };
    c.execute(
        "UPDATE rule_grants SET result = $3 WHERE tenant_id = $1 AND grant_key = $2",
        &[
            tenant.into(),
            g.key.as_str().into(),
            serde_json::to_string(&outcome)?.as_str().into(),
        ],
    )?;
    Ok(outcome)
}

/// Members whose birthday is `month_day` (`MM-DD`; also `02-29` when `leap_too`) and who have
/// no grant under `birthday:<id>:<year>` yet, after `cursor`, as earning facts.
pub(crate) fn birthday_members(
    c: &mut dyn Conn,
    tenant: &str,
    month_day: &str,
    leap_too: bool,
    year: i32,
    cursor: &str,
    limit: i64,
) -> Result<Vec<MemberFacts>> {
    let also = if leap_too { "02-29" } else { month_day };
    let rows = c.query(
        "SELECT id FROM members m WHERE m.tenant_id = $1 AND m.birth_date IS NOT NULL AND (substr(m.birth_date, 6, 5) = $2 OR substr(m.birth_date, 6, 5) = $3) AND m.id > $4 AND NOT EXISTS (SELECT 1 FROM rule_grants g WHERE g.tenant_id = m.tenant_id AND g.grant_key = 'birthday:' || m.id || ':' || $5) ORDER BY m.id LIMIT $6",
        &[tenant.into(), month_day.into(), also.into(), cursor.into(), year.to_string().as_str().into(), limit.into()],
    )?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        if let Some(f) = crate::members::facts(c, tenant, &MemberKey::Id(r.text(0)))? {
            out.push(f);
        }
    }
    Ok(out)
}

/// A stored event, as a backtest replays it.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub id: i64,
    pub member_id: String,
    pub kind: String,
    pub event_type: String,
    pub order_id: Option<String>,
    pub occurred_at: i64,
    pub channel: Option<String>,
    pub store_id: Option<String>,
    pub amount_minor: i64,
    pub payload: String,
}

/// Purchases, refunds and custom events in `[from, to)` after `(after_at, after_id)`, oldest
/// first.
pub(crate) fn events_between(
    c: &mut dyn Conn,
    tenant: &str,
    from: i64,
    to: i64,
    after: (i64, i64),
    limit: i64,
) -> Result<Vec<StoredEvent>> {
    let rows = c.query(
        "SELECT id, member_id, kind, type, order_id, occurred_at, channel, store_id, amount_minor, payload FROM events WHERE tenant_id = $1 AND occurred_at >= $2 AND occurred_at < $3 AND kind IN ('purchase', 'refund', 'custom') AND (occurred_at > $4 OR (occurred_at = $4 AND id > $5)) ORDER BY occurred_at, id LIMIT $6",
        &[tenant.into(), from.into(), to.into(), after.0.into(), after.1.into(), limit.into()],
    )?;
    Ok(rows
        .iter()
        .map(|r| StoredEvent {
            id: r.int(0),
            member_id: r.text(1),
            kind: r.text(2),
            event_type: r.text(3),
            order_id: r.opt_text(4),
            occurred_at: r.int(5),
            channel: r.opt_text(6),
            store_id: r.opt_text(7),
            amount_minor: r.int(8),
            payload: r.text(9),
        })
        .collect())
}

/// Each member's purchases and net spend before `t`: the order count and lifetime spend a
/// backtest starts from.
pub(crate) fn spend_before(
    c: &mut dyn Conn,
    tenant: &str,
    t: i64,
) -> Result<Vec<(String, i64, i64)>> {
    Ok(c.query(
        "SELECT member_id, CAST(SUM(CASE WHEN kind = 'purchase' THEN 1 ELSE 0 END) AS BIGINT), CAST(SUM(CASE WHEN kind = 'purchase' THEN amount_minor ELSE -amount_minor END) AS BIGINT) FROM events WHERE tenant_id = $1 AND occurred_at < $2 AND kind IN ('purchase', 'refund') GROUP BY member_id",
        &[tenant.into(), t.into()],
    )?
    .iter()
    .map(|r| (r.text(0), r.int(1), r.int(2)))
    .collect())
}

impl Store {
    /// Grants the awards of an event that is not a purchase, once per `grant.key`.
    pub async fn grant_awards(
        &self,
        tenant: &str,
        g: Grant,
        awards: Vec<Award>,
        settings: ProgramSettings,
        idem: Option<IdemKey>,
        now: i64,
    ) -> Result<(GrantOutcome, bool)> {
        let tenant = tenant.to_string();
        let part = g.member_id.clone();
        self.write_idem(&part, &tenant, idem, now, move |c, tenant| {
            grant(c, tenant, &g, &awards, &settings, now)
        })
        .await
    }

    pub async fn birthday_members(
        &self,
        tenant: &str,
        month_day: &str,
        leap_too: bool,
        year: i32,
        cursor: &str,
        limit: i64,
    ) -> Result<Vec<MemberFacts>> {
        let (tenant, month_day, cursor) = (
            tenant.to_string(),
            month_day.to_string(),
            cursor.to_string(),
        );
        self.read(move |c| birthday_members(c, &tenant, &month_day, leap_too, year, &cursor, limit))
            .await
    }

    pub async fn events_between(
        &self,
        tenant: &str,
        from: i64,
        to: i64,
        after: (i64, i64),
        limit: i64,
    ) -> Result<Vec<StoredEvent>> {
        let tenant = tenant.to_string();
        self.read(move |c| events_between(c, &tenant, from, to, after, limit))
            .await
    }

    pub async fn spend_before(&self, tenant: &str, t: i64) -> Result<Vec<(String, i64, i64)>> {
        let tenant = tenant.to_string();
        self.read(move |c| spend_before(c, &tenant, t)).await
    }

    /// The awards recorded for an event: (source, rule version, campaign, points, clawed back).
    pub async fn event_awards(&self, tenant: &str, event_id: i64) -> Result<Vec<RecordedAward>> {
        let tenant = tenant.to_string();
        self.read(move |c| {
            let by_event: &[Param<'_>] = &[tenant.as_str().into(), event_id.into()];
            let mut rows = c.query(
                "SELECT source, rule_version, campaign_id, points, clawed_back FROM awards WHERE tenant_id = $1 AND event_id = $2 ORDER BY id",
                by_event,
            )?;
            if rows.is_empty() {
                // A purchase that earned the base rate alone has no award row (`recorded`):
                // its order holds the award.
                rows = c.query(
                    &format!("SELECT CAST('{BASE_SOURCE}' AS TEXT), CAST(NULL AS BIGINT), CAST(NULL AS TEXT), o.awarded, o.clawed_back FROM events e JOIN orders o ON o.tenant_id = e.tenant_id AND o.order_id = e.order_id WHERE e.tenant_id = $1 AND e.id = $2 AND e.kind = 'purchase' AND o.event_id = e.id AND o.awarded > 0"),
                    by_event,
                )?;
            }
            Ok(rows
                .iter()
                .map(|r| RecordedAward {
                    source: r.text(0),
                    rule_version: r.opt_int(1),
                    campaign_id: r.opt_text(2),
                    points: r.int(3),
                    clawed_back: r.int(4),
                })
                .collect())
        })
        .await
    }
}

/// An award as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedAward {
    pub source: String,
    pub rule_version: Option<i64>,
    pub campaign_id: Option<String>,
    pub points: i64,
    pub clawed_back: i64,
}
