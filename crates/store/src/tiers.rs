//! Tiers in the database: the metric measured from stored events and postings, a member's tier
//! state on the member row (`tier`, `tier_since`, `tier_secured_until`), moves applied with
//! their history, the review job, and the member's tier view. Decisions are the core's
//! (`fidelis_core::tiers`); this module measures and records.

use crate::conn::Conn;
use crate::error::{Result, StoreError};
use crate::ledger::ts;
use crate::model::JobReport;
use crate::runtime::Store;
use fidelis_core::ProgramSettings;
use fidelis_core::event::MAX_FUTURE_SECS;
use fidelis_core::money::format_minor;
use fidelis_core::tiers::{Ladder, Metric, Move, Window};
use fidelis_core::time::{from_micros, to_micros};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Members one review round reads at most.
pub const REVIEWS_PER_RUN: i64 = 500;
/// History rows shown with a member's tier.
pub const HISTORY_SHOWN: i64 = 20;

#[derive(Debug, Clone, Default)]
pub(crate) struct TierState {
    pub tier: Option<String>,
    pub since: Option<i64>,
    pub secured_until: Option<i64>,
}

pub(crate) fn state(c: &mut dyn Conn, tenant: &str, member: &str) -> Result<Option<TierState>> {
    Ok(c.query_one(
        "SELECT tier, tier_since, tier_secured_until FROM members WHERE tenant_id = $1 AND id = $2",
        &[tenant.into(), member.into()],
    )?
    .map(|r| TierState {
        tier: r.opt_text(0),
        since: r.opt_int(1),
        secured_until: r.opt_int(2),
    }))
}

/// The metric's query over `(start, end]`: `$1` is the tenant; `member`, `start` and `end` are
/// the SQL expressions for the member's id and the window's bounds (parameters, or a
/// grouped query's columns).
/// `occurred_at + 0` keeps the planner on `events_by_member` (tenant, member): without
/// statistics (a new tenant, a fresh table) PostgreSQL otherwise picks `events_by_time` and
/// reads every event of the tenant in the window. A member's own events are few.
fn metric_sql(metric: Metric, member: &str, start: &str, end: &str) -> String {
    match metric {
        Metric::Spend => format!(
            "SELECT CAST(COALESCE(SUM(CASE WHEN ev.kind = 'purchase' THEN ev.amount_minor ELSE -ev.amount_minor END), 0) AS BIGINT) FROM events ev WHERE ev.tenant_id = $1 AND ev.member_id = {member} AND ev.tier_skip IS NULL AND ev.occurred_at + 0 > {start} AND ev.occurred_at + 0 <= {end} AND ev.kind IN ('purchase', 'refund')"
        ),
        Metric::Orders => format!(
            "SELECT COUNT(*) FROM events ev WHERE ev.tenant_id = $1 AND ev.member_id = {member} AND ev.tier_skip IS NULL AND ev.kind = 'purchase' AND ev.occurred_at + 0 > {start} AND ev.occurred_at + 0 <= {end} AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.tenant_id = ev.tenant_id AND o.order_id = ev.order_id AND o.total_minor > 0 AND o.refunded_minor >= o.total_minor)"
        ),
        Metric::PointsEarned => format!(
            "SELECT CAST(COALESCE(SUM(-en.amount), 0) AS BIGINT) FROM txns tx JOIN entries en ON en.txn_id = tx.id WHERE tx.tenant_id = $1 AND tx.member_id = {member} AND tx.kind IN ('earn', 'clawback') AND tx.created_at > {start} AND tx.created_at <= {end} AND en.account = 'issued'"
        ),
    }
}

/// The metric over `(start, end]` (start `None`: since the beginning). Refunds may take a
/// window below zero; it counts as zero.
pub(crate) fn measure(
    c: &mut dyn Conn,
    tenant: &str,
    member: &str,
    metric: Metric,
    start: Option<i64>,
    end: i64,
) -> Result<i64> {
    let params = [
        tenant.into(),
        member.into(),
        start.unwrap_or(i64::MIN).into(),
        end.into(),
    ];
    Ok(c.query_one(&metric_sql(metric, "$2", "$3", "$4"), &params)?
        .map_or(0, |r| r.int(0))
        .max(0))
}

/// The member's tier state and the metric, in one round trip (the write path's hook).
fn state_and_measure(
    c: &mut dyn Conn,
    tenant: &str,
    member: &str,
    metric: Metric,
    start: Option<i64>,
    end: i64,
) -> Result<Option<(TierState, i64)>> {
    let sql = format!(
        "SELECT m.tier, m.tier_since, m.tier_secured_until, ({}) FROM members m WHERE m.tenant_id = $1 AND m.id = $2",
        metric_sql(metric, "$2", "$3", "$4")
    );
    let params = [
        tenant.into(),
        member.into(),
        start.unwrap_or(i64::MIN).into(),
        end.into(),
    ];
    Ok(c.query_one(&sql, &params)?.map(|r| {
        (
            TierState {
                tier: r.opt_text(0),
                since: r.opt_int(1),
                secured_until: r.opt_int(2),
            },
            r.int(3).max(0),
        )
    }))
}

/// A move as written: the member row's new tier state and its history row.
struct Written {
    member: String,
    from: Option<String>,
    to: Option<String>,
    since: Option<i64>,
    until: Option<i64>,
    reason: &'static str,
    value: i64,
    effective: i64,
    now: i64,
    changed: bool,
}

/// What a move writes (`None` for [`Move::Stay`]).
#[allow(clippy::too_many_arguments)]
fn written(
    member: &str,
    ladder: &Ladder,
    st: &TierState,
    mv: Move,
    reason: &'static str,
    value: i64,
    now: i64,
) -> Option<Written> {
    let name = |r: Option<usize>| r.and_then(|r| ladder.levels.get(r)).map(|l| l.name.clone());
    let (to, since, until, changed) = match mv {
        Move::Stay => return None,
        Move::Renew { secured_until } => (
            st.tier.clone(),
            st.since,
            Some(to_micros(secured_until)),
            false,
        ),
        Move::Change {
            to,
            since,
            secured_until,
        } => {
            let to = name(to);
            let changed = to != st.tier;
            (
                to.clone(),
                to.as_ref().map(|_| to_micros(since)),
                secured_until.filter(|_| to.is_some()).map(to_micros),
                changed,
            )
        }
    };
    Some(Written {
        member: member.to_string(),
        from: st.tier.clone(),
        effective: if changed { since.unwrap_or(now) } else { now },
        to,
        since,
        until,
        reason,
        value,
        now,
        changed,
    })
}

/// Writes moves: on PostgreSQL all of them with one statement (member rows, and history rows
/// in the moves' order), elsewhere one by one.
fn write_moves(c: &mut dyn Conn, tenant: &str, moves: &[Written]) -> Result<()> {
    if moves.is_empty() {
        return Ok(());
    }
    if c.dialect() == crate::conn::Dialect::Postgres {
        use crate::conn::Param;
        let texts = |f: &dyn Fn(&Written) -> Option<&str>| -> Vec<Option<&str>> {
            moves.iter().map(f).collect()
        };
        let ints = |f: &dyn Fn(&Written) -> Option<i64>| -> Vec<Option<i64>> {
            moves.iter().map(f).collect()
        };
        let (members, from, to, reason) = (
            texts(&|m| Some(m.member.as_str())),
            texts(&|m| m.from.as_deref()),
            texts(&|m| m.to.as_deref()),
            texts(&|m| Some(m.reason)),
        );
        let (since, until, value, effective, now) = (
            ints(&|m| m.since),
            ints(&|m| m.until),
            ints(&|m| Some(m.value)),
            ints(&|m| Some(m.effective)),
            ints(&|m| Some(m.now)),
        );
        c.execute(
            "WITH u AS (SELECT * FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[]) WITH ORDINALITY AS t(id, from_tier, to_tier, reason, since, until, value, effective, now, k)),
             up AS (UPDATE members m SET tier = u.to_tier, tier_since = u.since, tier_secured_until = u.until FROM u WHERE m.tenant_id = $1 AND m.id = u.id)
             INSERT INTO tier_history (tenant_id, member_id, from_tier, to_tier, reason, metric_value, secured_until, effective_at, recorded_at) SELECT $1, id, from_tier, to_tier, reason, value, until, effective, now FROM u ORDER BY k",
            &[
                tenant.into(), Param::Texts(&members), Param::Texts(&from), Param::Texts(&to), Param::Texts(&reason),
                Param::Ints(&since), Param::Ints(&until), Param::Ints(&value), Param::Ints(&effective), Param::Ints(&now),
            ],
        )?;
        return Ok(());
    }
    for m in moves {
        c.execute(
            "UPDATE members SET tier = $3, tier_since = $4, tier_secured_until = $5 WHERE tenant_id = $1 AND id = $2",
            &[tenant.into(), m.member.as_str().into(), m.to.as_deref().into(), m.since.into(), m.until.into()],
        )?;
        c.execute(
            "INSERT INTO tier_history (tenant_id, member_id, from_tier, to_tier, reason, metric_value, secured_until, effective_at, recorded_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[tenant.into(), m.member.as_str().into(), m.from.as_deref().into(), m.to.as_deref().into(), m.reason.into(), m.value.into(), m.until.into(), m.effective.into(), m.now.into()],
        )?;
    }
    Ok(())
}

/// The window an event at `now` is measured over: (exclusive start, inclusive end). An event
/// may be dated a little ahead of the server's clock (a till's clock); it counts.
fn event_window(ladder: &Ladder, now: i64) -> (Option<i64>, i64) {
    let end = now.saturating_add(MAX_FUTURE_SECS * 1_000_000);
    (ladder.window_start(from_micros(now)).map(to_micros), end)
}

/// Member columns that bound a spend or orders metric without reading the member's events.
///
/// `purchased_minor` (every purchase adds its total; refunds take nothing off) and
/// `order_count` (every purchase adds one) only grow. When a purchase's tier step measures
/// the metric, it also sums the purchases alone over the window (started
/// [`BOUND_MARGIN_MICROS`] earlier) and keeps `tier_floor` = counter − that sum, with
/// `tier_floor_of` naming the metric and window. Later, counter − floor is at least the
/// purchases in any window that starts no earlier, and so at least the metric: purchases
/// recorded since are in the counter, purchases only leave a window as time passes, and
/// refunds only lower it (a refund leaving the window raises the metric, but never above the
/// purchases still in it). A purchase whose bound reaches no tier above the member's, and
/// whose member is not due to requalify, stays where it is without reading events; the
/// others measure as before. Points earned are measured every time (grants and custom events
/// earn too).
///
/// The measure itself reads the member's events through `events_by_member`, which now carries
/// each event's kind and amount: a spend measure reads the index alone (a member's events are
/// otherwise each on a table page of its own, with their payloads).
pub(crate) const TIER_BOUNDS: &str = "
ALTER TABLE members ADD COLUMN purchased_minor BIGINT NOT NULL DEFAULT 0;
ALTER TABLE members ADD COLUMN tier_floor BIGINT;
ALTER TABLE members ADD COLUMN tier_floor_of TEXT;
DROP INDEX events_by_member;
CREATE INDEX events_by_member ON events (tenant_id, member_id, occurred_at, kind, amount_minor);
";

/// A purchase wrote an entry into `events_by_member` whatever the programme, and only the
/// spend and orders metrics read it: in-process, a quarter of the writer's time per purchase
/// (21,000 against 26,000 purchases/s, docs/PERFORMANCE.md). Now the entry is written only
/// while the tenant's programme has such a ladder (`programs.tier_facts`); a purchase or refund
/// recorded without one is marked `tier_skip = 1`, left out of the index, and unmarked when a
/// spend or orders ladder is set ([`set_tier_facts`]). Tenants already here keep their facts.
/// Older rows are unmarked (`NULL`) and stay in the index.
pub(crate) const MEMBER_EVENTS_FOR_TIERS: &str = "
ALTER TABLE programs ADD COLUMN tier_facts BIGINT NOT NULL DEFAULT 1;
ALTER TABLE events ADD COLUMN tier_skip BIGINT;
DROP INDEX events_by_member;
CREATE INDEX events_by_member ON events (tenant_id, member_id, occurred_at, kind, amount_minor) WHERE tier_skip IS NULL;
";

/// True when the programme's ladder measures what a member's purchase and refund events hold
/// (spend, orders), which is read through `events_by_member`.
pub(crate) fn needs_member_events(settings: &ProgramSettings) -> bool {
    settings
        .tiers
        .as_ref()
        .is_some_and(|t| matches!(t.metric, Metric::Spend | Metric::Orders))
}

/// The `tier_skip` of a purchase or refund event being written, as an SQL expression read in
/// the writing transaction (`$1` the tenant): 1 while the tenant's programme needs no member
/// events. On PostgreSQL the programme's row is share-locked until the transaction ends, so a
/// programme update that turns the facts on ([`set_tier_facts`]) waits for the events being
/// written and then finds them; one that committed first is seen.
pub(crate) fn tier_skip_sql(dialect: crate::conn::Dialect) -> String {
    format!(
        "(SELECT CASE WHEN tier_facts = 0 THEN 1 END FROM programs WHERE tenant_id = $1{})",
        dialect.for_share()
    )
}

/// Records whether the tenant's programme needs member events (its row already locked by the
/// settings' update); turning them on puts the tenant's events recorded without them back in
/// `events_by_member`, so the ladder measures every purchase and refund.
pub(crate) fn set_tier_facts(
    c: &mut dyn Conn,
    tenant: &str,
    settings: &ProgramSettings,
) -> Result<()> {
    let needed = needs_member_events(settings);
    let had = c
        .query_one(
            "SELECT tier_facts FROM programs WHERE tenant_id = $1",
            &[tenant.into()],
        )?
        .is_some_and(|r| r.int(0) != 0);
    if needed == had {
        return Ok(());
    }
    if needed {
        c.execute(
            "UPDATE events SET tier_skip = NULL WHERE tenant_id = $1 AND tier_skip IS NOT NULL",
            &[tenant.into()],
        )?;
    }
    c.execute(
        "UPDATE programs SET tier_facts = $2 WHERE tenant_id = $1",
        &[tenant.into(), i64::from(needed).into()],
    )?;
    Ok(())
}

/// How much earlier than its window a bound's sum of purchases starts: windows move with each
/// writer's clock, and a start a little behind an earlier one must still be covered.
const BOUND_MARGIN_MICROS: i64 = 3_600 * 1_000_000;

/// The member columns a purchase's tier step reads, in [`TierRow::of`]'s order.
pub(crate) const TIER_COLUMNS: &str =
    "tier, tier_since, tier_secured_until, purchased_minor, order_count, tier_floor, tier_floor_of";

/// A member's tier state and bound, as read with [`TIER_COLUMNS`].
#[derive(Debug, Clone, Default)]
pub(crate) struct TierRow {
    pub st: TierState,
    pub purchased: i64,
    pub orders: i64,
    pub floor: Option<i64>,
    pub floor_of: Option<String>,
}

impl TierRow {
    pub(crate) fn of(r: &crate::conn::Row, at: usize) -> TierRow {
        TierRow {
            st: TierState {
                tier: r.opt_text(at),
                since: r.opt_int(at + 1),
                secured_until: r.opt_int(at + 2),
            },
            purchased: r.int(at + 3),
            orders: r.int(at + 4),
            floor: r.opt_int(at + 5),
            floor_of: r.opt_text(at + 6),
        }
    }

    /// The row as a purchase of `total_minor` leaves it (read before the purchase wrote).
    pub(crate) fn after_purchase(mut self, total_minor: i64) -> TierRow {
        self.purchased += total_minor;
        self.orders += 1;
        self
    }

    fn counter(&self, metric: Metric) -> i64 {
        match metric {
            Metric::Spend => self.purchased,
            _ => self.orders,
        }
    }
}

/// What a bound is kept for: the metric and window it bounds (`None`: points earned, which
/// has no bound).
fn bound_of(ladder: &Ladder) -> Option<String> {
    let metric = match ladder.metric {
        Metric::Spend => "spend",
        Metric::Orders => "orders",
        Metric::PointsEarned => return None,
    };
    Some(match ladder.window {
        Window::Rolling { months } => format!("{metric} rolling {months}"),
        Window::CalendarYear => format!("{metric} calendar_year"),
        Window::Lifetime => format!("{metric} lifetime"),
    })
}

/// The purchases alone, over the window from `start` on: what a bound is kept from.
fn purchases_sql(metric: Metric, member: &str, start: &str) -> String {
    let what = match metric {
        Metric::Spend => "CAST(COALESCE(SUM(ev.amount_minor), 0) AS BIGINT)",
        _ => "COUNT(*)",
    };
    format!(
        "SELECT {what} FROM events ev WHERE ev.tenant_id = $1 AND ev.member_id = {member} AND ev.tier_skip IS NULL AND ev.kind = 'purchase' AND ev.occurred_at + 0 > {start}"
    )
}

/// True when the purchase surely leaves the tier as it is: the bound qualifies for no tier
/// above the member's, and the member is not due to requalify (which [`Ladder::on_event`]
/// decides on the metric itself).
fn surely_stays(ladder: &Ladder, row: &TierRow, bound: i64, now: i64) -> bool {
    let current = row.st.tier.as_deref().and_then(|t| ladder.rank_of(t));
    let due = current.is_some()
        && row.st.since.is_some()
        && row.st.secured_until.is_some_and(|until| now >= until);
    ladder.qualifies_for(bound) <= current && !due
}

/// Re-evaluates the member's tier after an event (`refund`: after a refund), in the event's
/// transaction. The caller holds the member's row lock. Does nothing without tiers.
pub(crate) fn after_event(
    c: &mut dyn Conn,
    tenant: &str,
    member: &str,
    settings: &ProgramSettings,
    now: i64,
    refund: bool,
) -> Result<()> {
    let Some(ladder) = settings.ladder() else {
        return Ok(());
    };
    if !refund {
        let row = c
            .query_one(
                &format!("SELECT {TIER_COLUMNS} FROM members WHERE tenant_id = $1 AND id = $2"),
                &[tenant.into(), member.into()],
            )?
            .map(|r| TierRow::of(&r, 0));
        return match row {
            Some(row) => after_purchases(c, tenant, &ladder, &[(member, now, row)]),
            None => Ok(()),
        };
    }
    if ladder.on_refund == fidelis_core::tiers::OnRefund::AtReview {
        return Ok(());
    }
    let (start, end) = event_window(&ladder, now);
    let Some((st, value)) = state_and_measure(c, tenant, member, ladder.metric, start, end)? else {
        return Ok(());
    };
    match decision(member, &ladder, &st, value, now, refund) {
        Some(w) => write_moves(c, tenant, std::slice::from_ref(&w)),
        None => Ok(()),
    }
}

/// The core's decision after an event, as what it writes (`None`: the member stays).
fn decision(
    member: &str,
    ladder: &Ladder,
    st: &TierState,
    value: i64,
    now: i64,
    refund: bool,
) -> Option<Written> {
    let at = from_micros(now);
    let current = st.tier.as_deref().and_then(|t| ladder.rank_of(t));
    let (mv, reason) = if refund {
        (ladder.on_refund(current, value, at), "refund")
    } else {
        let mv = ladder.on_event(
            current,
            st.since.map(from_micros),
            st.secured_until.map(from_micros),
            value,
            at,
        );
        let reason = if matches!(mv, Move::Renew { .. }) {
            "requalified"
        } else {
            "qualified"
        };
        (mv, reason)
    };
    written(member, ladder, st, mv, reason, value, now)
}

/// The tier step of purchases already written, each member once, rows locked, under one
/// ladder: `posted` gives each member, the purchase's `now`, and the member's [`TierRow`] as
/// the purchase left it. Members whose bound shows they stay are done without reading their
/// events; the others are measured (on PostgreSQL with one query for all, their windows as
/// array parameters; on SQLite, where a statement costs no round trip, one by one), their
/// bounds kept, and their moves written (on PostgreSQL, one statement measures and keeps
/// the bounds, one writes the moves, whatever their number).
pub(crate) fn after_purchases(
    c: &mut dyn Conn,
    tenant: &str,
    ladder: &Ladder,
    posted: &[(&str, i64, TierRow)],
) -> Result<()> {
    let of = bound_of(ladder);
    let measure: Vec<&(&str, i64, TierRow)> = posted
        .iter()
        .filter(|(_, now, row)| {
            let bound = match (&of, row.floor, &row.floor_of) {
                (Some(of), Some(floor), Some(kept)) if of == kept => {
                    row.counter(ladder.metric).saturating_sub(floor)
                }
                _ => return true,
            };
            !surely_stays(ladder, row, bound, *now)
        })
        .collect();
    if measure.is_empty() {
        return Ok(());
    }
    // Per member: the metric, and the purchases alone from a little before the window.
    let windows: Vec<(i64, i64, i64)> = measure
        .iter()
        .map(|(_, now, _)| {
            let (start, end) = event_window(ladder, *now);
            let start = start.unwrap_or(i64::MIN);
            (start, end, start.saturating_sub(BOUND_MARGIN_MICROS))
        })
        .collect();
    let purchases = |member: &str, start: &str| match of {
        Some(_) => purchases_sql(ladder.metric, member, start),
        None => "SELECT 0".into(),
    };
    let mut measured: Vec<(i64, i64)> = Vec::with_capacity(measure.len());
    if c.dialect() == crate::conn::Dialect::Postgres {
        // One statement: each member's metric and purchases, and the floor kept from them.
        let members: Vec<Option<&str>> = measure.iter().map(|(m, _, _)| Some(*m)).collect();
        let starts: Vec<Option<i64>> = windows.iter().map(|w| Some(w.0)).collect();
        let ends: Vec<Option<i64>> = windows.iter().map(|w| Some(w.1)).collect();
        let earlier: Vec<Option<i64>> = windows.iter().map(|w| Some(w.2)).collect();
        let counters: Vec<Option<i64>> = measure
            .iter()
            .map(|(_, _, row)| Some(row.counter(ladder.metric)))
            .collect();
        let keep = match &of {
            Some(_) => {
                "UPDATE members m SET tier_floor = v.c - v.bought, tier_floor_of = $7 FROM v WHERE m.tenant_id = $1 AND m.id = v.id"
            }
            None => "SELECT 1 WHERE $7::text IS NULL",
        };
        let sql = format!(
            "WITH u AS (SELECT * FROM unnest($2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[]) WITH ORDINALITY AS t(id, s, e, b, c, k)),
             v AS MATERIALIZED (SELECT u.id, u.k, u.c, ({}) AS value, ({}) AS bought FROM u),
             kept AS ({keep})
             SELECT value, bought FROM v ORDER BY k",
            metric_sql(ladder.metric, "u.id", "u.s", "u.e"),
            purchases("u.id", "u.b"),
        );
        let params = [
            tenant.into(),
            crate::conn::Param::Texts(&members),
            crate::conn::Param::Ints(&starts),
            crate::conn::Param::Ints(&ends),
            crate::conn::Param::Ints(&earlier),
            crate::conn::Param::Ints(&counters),
            of.as_deref().into(),
        ];
        for r in c.query(&sql, &params)? {
            measured.push((r.int(0), r.int(1)));
        }
    } else {
        let sql = format!(
            "SELECT ({}), ({})",
            metric_sql(ladder.metric, "$2", "$3", "$4"),
            purchases("$2", "$5")
        );
        for ((member, _, _), &(s, e, b)) in measure.iter().zip(&windows) {
            let mut params = vec![tenant.into(), (*member).into(), s.into(), e.into()];
            if of.is_some() {
                params.push(b.into());
            }
            let r = c
                .query_one(&sql, &params)?
                .ok_or_else(|| StoreError::Busy("a tier measure returned no row".into()))?;
            measured.push((r.int(0), r.int(1)));
        }
        if let Some(of) = &of {
            keep_floors(c, tenant, of, &measure, &measured)?;
        }
    }
    if measured.len() != measure.len() {
        return Err(StoreError::Busy("a tier measure missed members".into()));
    }
    let moves: Vec<Written> = measure
        .iter()
        .zip(measured)
        .filter_map(|((member, now, row), (value, _))| {
            decision(member, ladder, &row.st, value.max(0), *now, false)
        })
        .collect();
    write_moves(c, tenant, &moves)
}

/// Keeps each measured member's floor: its counter less the purchases just summed (one
/// statement each; PostgreSQL keeps them in the measuring statement).
fn keep_floors(
    c: &mut dyn Conn,
    tenant: &str,
    of: &str,
    measure: &[&(&str, i64, TierRow)],
    measured: &[(i64, i64)],
) -> Result<()> {
    let metric = if of.starts_with("spend") {
        Metric::Spend
    } else {
        Metric::Orders
    };
    for ((member, _, row), (_, bought)) in measure.iter().zip(measured) {
        let floor = row.counter(metric).saturating_sub(*bought);
        c.execute(
            "UPDATE members SET tier_floor = $3, tier_floor_of = $4 WHERE tenant_id = $1 AND id = $2",
            &[tenant.into(), (*member).into(), floor.into(), of.into()],
        )?;
    }
    Ok(())
}

/// Reviews members whose review is due at `now` (secured until + grace); true when more may
/// be due. Members are claimed with `SKIP LOCKED`, so nodes share the work.
pub(crate) fn review_due(
    c: &mut dyn Conn,
    tenant: &str,
    settings: &ProgramSettings,
    now: i64,
    report: &mut JobReport,
) -> Result<bool> {
    let Some(ladder) = settings.ladder() else {
        return Ok(false);
    };
    let cutoff = to_micros(from_micros(now) - chrono::Duration::days(i64::from(ladder.grace_days)));
    let due = c.query(
        "SELECT id FROM members WHERE tenant_id = $1 AND tier IS NOT NULL AND tier_secured_until <= $2 ORDER BY tier_secured_until LIMIT $3",
        &[tenant.into(), cutoff.into(), REVIEWS_PER_RUN.into()],
    )?;
    let full = due.len() as i64 == REVIEWS_PER_RUN;
    let claim = format!(
        "SELECT tier, tier_since, tier_secured_until FROM members WHERE tenant_id = $1 AND id = $2 AND tier IS NOT NULL AND tier_secured_until <= $3{}",
        c.dialect().skip_locked()
    );
    for row in &due {
        let member = row.text(0);
        let Some(r) = c.query_one(
            &claim,
            &[tenant.into(), member.as_str().into(), cutoff.into()],
        )?
        else {
            continue;
        };
        let st = TierState {
            tier: r.opt_text(0),
            since: r.opt_int(1),
            secured_until: r.opt_int(2),
        };
        let until = from_micros(st.secured_until.unwrap_or(now));
        let since = st.since.map_or(until, from_micros);
        let (start, end) = ladder.review_window(until);
        let value = measure(
            c,
            tenant,
            &member,
            ladder.metric,
            start.map(to_micros),
            to_micros(end),
        )?;
        let mv = match st.tier.as_deref().and_then(|t| ladder.rank_of(t)) {
            Some(rank) => ladder.on_review(Some(rank), since, until, value),
            // The tier was removed from the ladder: straight to what the metric reaches.
            None => {
                let to = ladder.qualifies_for(value);
                let due = ladder.review_due(until);
                Move::Change {
                    to,
                    since: due,
                    secured_until: to.map(|_| ladder.next_review(due, due)),
                }
            }
        };
        let reason = match &mv {
            Move::Renew { .. } => "review_passed",
            _ => "review",
        };
        if let Some(w) = written(&member, &ladder, &st, mv, reason, value, now) {
            write_moves(c, tenant, std::slice::from_ref(&w))?;
            report.tier_moves += i64::from(w.changed);
        }
        report.tier_reviews += 1;
    }
    Ok(full)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TierHistoryItem {
    pub from_tier: Option<String>,
    pub to_tier: Option<String>,
    /// `qualified`, `requalified`, `review`, `review_passed`, `refund`.
    pub reason: String,
    pub metric_value: Value,
    pub secured_until: Option<String>,
    pub effective_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TierBenefits {
    pub earn_multiplier: String,
    pub perks: Vec<String>,
}

/// A member's tier, as the portal and the till show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TierView {
    pub member_id: String,
    pub tier: Option<String>,
    pub since: Option<String>,
    /// The tier is kept at least until then (the next review).
    pub secured_until: Option<String>,
    /// When the review happens: `secured_until` plus the grace period.
    pub review_at: Option<String>,
    /// True between `secured_until` and `review_at`.
    pub in_grace: bool,
    pub metric: Metric,
    pub window: Window,
    /// The metric over the current window: points, orders, or an amount for spend.
    pub value: Value,
    pub benefits: Option<TierBenefits>,
    pub next_tier: Option<String>,
    pub next_threshold: Option<Value>,
    pub to_next: Option<Value>,
    /// What is missing in this window to keep the tier at the review.
    pub to_keep: Option<Value>,
    /// The tier the metric reaches now (a member's tier is recorded at qualifying events).
    pub qualifies_for: Option<String>,
    /// "320 more points to Gold".
    pub message: Option<String>,
    pub history: Vec<TierHistoryItem>,
}

fn metric_value(metric: Metric, settings: &ProgramSettings, v: i64) -> Value {
    match metric {
        Metric::Spend => Value::String(format_minor(v, settings.currency.exponent())),
        _ => Value::from(v),
    }
}

pub(crate) fn view(
    c: &mut dyn Conn,
    tenant: &str,
    member: &str,
    settings: &ProgramSettings,
    now: i64,
) -> Result<TierView> {
    let ladder = settings
        .ladder()
        .ok_or_else(|| StoreError::NotFound("tiers (the programme has none)".into()))?;
    let st = state(c, tenant, member)?
        .ok_or_else(|| StoreError::NotFound(format!("member `{member}`")))?;
    let start = ladder.window_start(from_micros(now)).map(to_micros);
    let value = measure(c, tenant, member, ladder.metric, start, now)?;
    let rank = st.tier.as_deref().and_then(|t| ladder.rank_of(t));
    // A member without a recorded tier is recorded at their next qualifying event; progress is
    // shown from the tier the metric already reaches.
    let reaches = ladder.qualifies_for(value);
    let p = ladder.progress(rank.or(reaches), value);
    let mv = |v: i64| metric_value(ladder.metric, settings, v);
    let message = match (&p.next_tier, p.to_next) {
        (Some(next), Some(n)) if n > 0 => Some(format!(
            "{} to {next}",
            ladder.describe(n, &settings.points_name, settings.currency)
        )),
        (Some(next), Some(_)) => Some(format!("{next} is reached")),
        _ => None,
    };
    let review_at = st
        .secured_until
        .map(|u| to_micros(ladder.review_due(from_micros(u))));
    let history = c
        .query(
            "SELECT from_tier, to_tier, reason, metric_value, secured_until, effective_at FROM tier_history WHERE tenant_id = $1 AND member_id = $2 ORDER BY id DESC LIMIT $3",
            &[tenant.into(), member.into(), HISTORY_SHOWN.into()],
        )?
        .iter()
        .map(|r| TierHistoryItem {
            from_tier: r.opt_text(0),
            to_tier: r.opt_text(1),
            reason: r.text(2),
            metric_value: mv(r.int(3)),
            secured_until: r.opt_int(4).map(ts),
            effective_at: ts(r.int(5)),
        })
        .collect();
    Ok(TierView {
        member_id: member.to_string(),
        tier: st.tier.clone(),
        since: st.since.map(ts),
        secured_until: st.secured_until.map(ts),
        review_at: review_at.map(ts),
        in_grace: st.secured_until.is_some_and(|u| now >= u),
        metric: ladder.metric,
        window: ladder.window,
        value: mv(value),
        benefits: rank
            .and_then(|r| ladder.levels.get(r))
            .map(|l| TierBenefits {
                earn_multiplier: format_minor(l.multiplier_micro, 6)
                    .trim_end_matches('0')
                    .trim_end_matches('.')
                    .to_string(),
                perks: l.perks.clone(),
            }),
        next_tier: p.next_tier.clone(),
        next_threshold: p.next_threshold.map(mv),
        to_next: p.to_next.map(mv),
        to_keep: rank.and(p.to_keep).map(mv),
        qualifies_for: reaches
            .and_then(|r| ladder.levels.get(r))
            .map(|l| l.name.clone()),
        message,
        history,
    })
}

/// A member's tier rank under `ladder` (None: no tier, or a tier the ladder no longer has).
pub(crate) fn rank(
    c: &mut dyn Conn,
    tenant: &str,
    member: &str,
    ladder: Option<&Ladder>,
) -> Result<Option<usize>> {
    let Some(ladder) = ladder else {
        return Ok(None);
    };
    Ok(state(c, tenant, member)?
        .and_then(|s| s.tier)
        .and_then(|t| ladder.rank_of(&t)))
}

/// Event ids whose marks [`Store::unmark_member_events`] takes off in one writer transaction.
/// Each event's entry goes to a random leaf of `events_by_member`, so the smaller the chunk, the
/// more often a leaf is written again and the longer it all takes. Measured on SQLite, a tenant
/// of 806,289 events (a 1.2 GB database) and 16 connections buying meanwhile: in one
/// transaction, 4.0 s with every purchase held up to 4.5 s; in chunks of 50,000 ids 5.2 s (the
/// longest purchase 724 ms), of 20,000 6.7 s (427 ms), of 5,000 13.9 s (213 ms), of 1,000
/// 36.6 s (103 ms).
pub const UNMARK_CHUNK: i64 = 20_000;

impl Store {
    /// Puts the tenant's events recorded without member events back in `events_by_member`, in
    /// chunks of `chunk` event ids, each its own writer transaction; answers how many. A
    /// programme update that turns member events on ([`set_tier_facts`]) did it all in its own
    /// transaction, about 5 s a million events on SQLite during which every write waited (and
    /// requests were refused once the writer's queue was full); run first, it leaves that
    /// update only what was recorded meanwhile. An event unmarked early only costs its index
    /// entry: while the programme needs no member events nothing reads them, and events
    /// recorded meanwhile are still marked. Nothing to do when the programme already has them.
    pub async fn unmark_member_events(&self, tenant: &str, chunk: i64) -> Result<u64> {
        let t = tenant.to_string();
        let span = self
            .read(move |c| {
                let on = c
                    .query_one(
                        "SELECT tier_facts FROM programs WHERE tenant_id = $1",
                        &[t.as_str().into()],
                    )?
                    .is_none_or(|r| r.int(0) != 0);
                if on {
                    return Ok(None);
                }
                // Every tenant's ids, from the primary key (no index finds marked events).
                Ok(c.query_one("SELECT MIN(id), MAX(id) FROM events", &[])?
                    .and_then(|r| Some((r.opt_int(0)?, r.opt_int(1)?))))
            })
            .await?;
        let Some((first, last)) = span else {
            return Ok(0);
        };
        let chunk = chunk.max(1);
        let mut unmarked = 0;
        let mut from = first;
        while from <= last {
            let (t, to) = (tenant.to_string(), from.saturating_add(chunk));
            unmarked += self
                .write("", move |c| {
                    Ok(c.execute(
                        "UPDATE events SET tier_skip = NULL WHERE id >= $2 AND id < $3 AND tenant_id = $1 AND tier_skip IS NOT NULL",
                        &[t.as_str().into(), from.into(), to.into()],
                    )?)
                })
                .await?;
            if to == from {
                break; // the last possible id
            }
            from = to;
        }
        Ok(unmarked)
    }

    /// A member's tier, progress and history, measured at `now`.
    pub async fn member_tier(
        &self,
        tenant: &str,
        member: &str,
        settings: ProgramSettings,
        now: i64,
    ) -> Result<TierView> {
        let (tenant, member) = (tenant.to_string(), member.to_string());
        self.read(move |c| view(c, &tenant, &member, &settings, now))
            .await
    }
}
