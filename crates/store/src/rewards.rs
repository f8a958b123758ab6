//! The rewards catalogue and coupons in the database. A redemption runs in one write job: the
//! member's row is locked, the reward's limits checked, a unit of stock taken with a
//! conditional update (so concurrent redemptions never oversell), the points debited from the
//! earliest-expiring lots, and a coupon with an unguessable code inserted. Coupons are burnt at
//! the till with a conditional update on their status, so a code is used once.

use crate::conn::{Conn, Dialect, Param, Row};
use crate::error::{Result, StoreError};
use crate::idem::IdemKey;
use crate::ledger::{self, NewLot, Txn, lock_member, ts};
use crate::model::{BalanceNow, Page};
use crate::runtime::Store;
use fidelis_core::ProgramSettings;
use fidelis_core::ledger::Account;
use fidelis_core::rewards::{
    Benefit, CouponView, OrderView, Refusal, ReturnedExpiry, RewardDef, RewardKind, check_coupon,
    coupon_code, display_code, redeemable,
};
use fidelis_core::time::{add_days, from_micros};
use serde::{Deserialize, Serialize};

/// Attempts at drawing a code not yet used (a clash of 64-bit codes is already unlikely).
const CODE_ATTEMPTS: usize = 4;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RewardRecord {
    pub id: String,
    #[serde(flatten)]
    pub def: RewardDef,
    /// Units left; `None` is unlimited.
    pub stock: Option<i64>,
    pub created_at: String,
    pub updated_at: String,
}

fn reward_record(r: &Row) -> Result<RewardRecord> {
    Ok(RewardRecord {
        id: r.text(0),
        def: serde_json::from_str(&r.text(1))?,
        stock: r.opt_int(2),
        created_at: ts(r.int(3)),
        updated_at: ts(r.int(4)),
    })
}

const REWARD_COLUMNS: &str = "id, definition, stock, created_at, updated_at";

pub(crate) fn get_reward(c: &mut dyn Conn, tenant: &str, id: &str) -> Result<RewardRecord> {
    let row = c
        .query_one(
            &format!("SELECT {REWARD_COLUMNS} FROM rewards WHERE tenant_id = $1 AND id = $2"),
            &[tenant.into(), id.into()],
        )?
        .ok_or_else(|| StoreError::NotFound(format!("reward `{id}`")))?;
    reward_record(&row)
}

fn create_reward(
    c: &mut dyn Conn,
    tenant: &str,
    def: &RewardDef,
    stock: Option<i64>,
    now: i64,
) -> Result<RewardRecord> {
    let n = c
        .query_one(
            "SELECT COUNT(*) FROM rewards WHERE tenant_id = $1",
            &[tenant.into()],
        )?
        .map_or(0, |r| r.int(0));
    if n >= fidelis_core::rewards::MAX_REWARDS {
        return Err(StoreError::Unprocessable(format!(
            "the catalogue holds at most {} rewards",
            fidelis_core::rewards::MAX_REWARDS
        )));
    }
    let id = crate::random_id("rwd_", 16);
    let json = serde_json::to_string(def)?;
    c.execute(
        "INSERT INTO rewards (tenant_id, id, definition, stock, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5)",
        &[tenant.into(), id.as_str().into(), json.as_str().into(), stock.into(), now.into()],
    )?;
    get_reward(c, tenant, &id)
}

fn update_reward(
    c: &mut dyn Conn,
    tenant: &str,
    id: &str,
    def: &RewardDef,
    stock: Option<i64>,
    now: i64,
) -> Result<RewardRecord> {
    let json = serde_json::to_string(def)?;
    let n = c.execute(
        "UPDATE rewards SET definition = $3, stock = $4, updated_at = $5 WHERE tenant_id = $1 AND id = $2",
        &[tenant.into(), id.into(), json.as_str().into(), stock.into(), now.into()],
    )?;
    if n == 0 {
        return Err(StoreError::NotFound(format!("reward `{id}`")));
    }
    get_reward(c, tenant, id)
}

fn list_rewards(
    c: &mut dyn Conn,
    tenant: &str,
    cursor: Option<&str>,
    limit: i64,
) -> Result<Page<RewardRecord>> {
    let limit = limit.clamp(1, crate::ledger::MAX_PAGE);
    let rows = c.query(
        &format!("SELECT {REWARD_COLUMNS} FROM rewards WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3"),
        &[tenant.into(), cursor.unwrap_or("").into(), (limit + 1).into()],
    )?;
    Page::from_rows(&rows, limit, reward_record, |r| r.id.clone())
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CouponRecord {
    /// As shown to people: `K7QX-M2PD-9HTF-RC`.
    pub code: String,
    pub member_id: String,
    pub reward_id: String,
    pub reward_title: String,
    pub kind: RewardKind,
    /// `redemption`, or `plan:<id>` for a plan's monthly perk.
    pub source: String,
    pub points: i64,
    /// `issued`, `redeemed` or `cancelled` (an issued coupon past `expires_at` is expired).
    pub status: String,
    pub issued_at: String,
    pub expires_at: String,
    pub redeemed_at: Option<String>,
    pub redeemed_order_id: Option<String>,
    pub cancelled_at: Option<String>,
}

const COUPON_COLUMNS: &str = "c.code, c.member_id, c.reward_id, c.source, c.points, c.status, c.issued_at, c.expires_at, c.redeemed_at, c.redeemed_order_id, c.cancelled_at, c.txn_id, r.definition";

fn coupon_select() -> String {
    format!(
        "SELECT {COUPON_COLUMNS} FROM coupons c JOIN rewards r ON r.tenant_id = c.tenant_id AND r.id = c.reward_id"
    )
}

struct CouponRow {
    record: CouponRecord,
    view: CouponView,
    def: RewardDef,
    txn_id: Option<i64>,
}

fn coupon_row(r: &Row) -> Result<CouponRow> {
    let def: RewardDef = serde_json::from_str(&r.text(12))?;
    Ok(CouponRow {
        record: CouponRecord {
            code: display_code(&r.text(0)),
            member_id: r.text(1),
            reward_id: r.text(2),
            reward_title: def.title.clone(),
            kind: def.kind,
            source: r.text(3),
            points: r.int(4),
            status: r.text(5),
            issued_at: ts(r.int(6)),
            expires_at: ts(r.int(7)),
            redeemed_at: r.opt_int(8).map(ts),
            redeemed_order_id: r.opt_text(9),
            cancelled_at: r.opt_int(10).map(ts),
        },
        view: CouponView {
            status: r.text(5),
            expires_at: r.int(7),
            redeemed_at: r.opt_int(8),
            redeemed_order_id: r.opt_text(9),
        },
        def,
        txn_id: r.opt_int(11),
    })
}

fn find_coupon(
    c: &mut dyn Conn,
    tenant: &str,
    code: &str,
    lock: bool,
) -> Result<Option<CouponRow>> {
    // The coupon's row only: the reward's row is not locked by a till.
    let lock = match c.dialect() {
        Dialect::Postgres if lock => " FOR UPDATE OF c",
        _ => "",
    };
    let sql = format!(
        "{} WHERE c.tenant_id = $1 AND c.code = $2{lock}",
        coupon_select()
    );
    c.query_one(&sql, &[tenant.into(), code.into()])?
        .map(|r| coupon_row(&r))
        .transpose()
}

/// Inserts a coupon under a fresh code; returns the code (normalised).
#[allow(clippy::too_many_arguments)]
pub(crate) fn insert_coupon(
    c: &mut dyn Conn,
    tenant: &str,
    member: &str,
    reward_id: &str,
    source: &str,
    points: i64,
    txn_id: Option<i64>,
    status: &str,
    expires_at: i64,
    now: i64,
) -> Result<String> {
    use rand::RngCore;
    for _ in 0..CODE_ATTEMPTS {
        let mut bytes = [0u8; 16];
        rand::rng().fill_bytes(&mut bytes);
        let code = coupon_code(bytes);
        let redeemed_at = (status == "redeemed").then_some(now);
        let n = c.execute(
            "INSERT INTO coupons (tenant_id, code, member_id, reward_id, source, points, txn_id, status, issued_at, expires_at, redeemed_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT DO NOTHING",
            &[tenant.into(), code.as_str().into(), member.into(), reward_id.into(), source.into(), points.into(), txn_id.into(), status.into(), now.into(), expires_at.into(), redeemed_at.into()],
        )?;
        if n == 1 {
            return Ok(code);
        }
    }
    Err(StoreError::Busy(
        "could not draw an unused coupon code; retry".into(),
    ))
}

fn coupon_expiry(def: &RewardDef, settings: &ProgramSettings, now: i64) -> i64 {
    let days = def
        .coupon_valid_days
        .unwrap_or(settings.redemption.coupon_valid_days);
    add_days(from_micros(now), days).timestamp_micros()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RedemptionOutcome {
    pub coupon: CouponRecord,
    pub points: i64,
    pub txn_id: Option<i64>,
    /// Store credit credited (store-credit rewards), in minor units.
    pub credit_minor: Option<i64>,
    pub balance: BalanceNow,
}

/// Redeems `reward_id` for `member`: see the module's notes for the order of the steps.
fn redeem(
    c: &mut dyn Conn,
    tenant: &str,
    member: &str,
    reward_id: &str,
    settings: &ProgramSettings,
    now: i64,
) -> Result<RedemptionOutcome> {
    // The member, locked and noted active, the reward and the member's open lots (read after
    // the lock): one round trip on PostgreSQL.
    let reward_sql =
        format!("SELECT {REWARD_COLUMNS} FROM rewards WHERE tenant_id = $1 AND id = $2");
    let lock: &[Param<'_>] = &[tenant.into(), member.into(), now.into(), now.into()];
    let by_reward: &[Param<'_>] = &[tenant.into(), reward_id.into()];
    let by_member: &[Param<'_>] = &[tenant.into(), member.into()];
    let lots_sql = ledger::open_lots_head_sql();
    let mut asks: Vec<(&str, &[Param<'_>])> = vec![
        (ledger::LOCK_ACTIVE_MEMBER, lock),
        (&reward_sql, by_reward),
        (&lots_sql, by_member),
    ];
    if c.dialect() == Dialect::Postgres {
        asks.push((ledger::NEXT_TXN_ID, &[]));
    }
    let answers = c.query_all(&asks)?;
    let ahead = ledger::AheadIds::of(answers.get(3));
    let first = |i: usize| answers.get(i).and_then(|rows| rows.first());
    let state = first(0)
        .map(ledger::member_state)
        .ok_or_else(|| StoreError::NotFound(format!("member `{member}`")))?;
    let reward = reward_record(
        first(1).ok_or_else(|| StoreError::NotFound(format!("reward `{reward_id}`")))?,
    )?;
    let open = ledger::OpenLots::of_head(answers.get(2).map_or(&[], |rows| rows.as_slice()));
    let def = &reward.def;
    redeemable(def, from_micros(now)).map_err(StoreError::Conflict)?;
    if let Some(min_tier) = &def.min_tier {
        let ladder = settings.ladder();
        let required = ladder.as_ref().and_then(|l| l.rank_of(min_tier));
        let have = crate::tiers::rank(c, tenant, member, ladder.as_ref())?;
        if required.is_none() || have < required {
            return Err(StoreError::Conflict(format!(
                "this reward is for {min_tier} members and above"
            )));
        }
    }
    if let Some(limit) = def.per_member_limit {
        let used = c
            .query_one(
                "SELECT COUNT(*) FROM coupons WHERE tenant_id = $1 AND member_id = $2 AND reward_id = $3 AND status <> 'cancelled'",
                &[tenant.into(), member.into(), reward_id.into()],
            )?
            .map_or(0, |r| r.int(0));
        if used >= limit {
            return Err(StoreError::Conflict(format!(
                "this reward may be redeemed {limit} time(s) per member, and this member already has"
            )));
        }
    }
    // Checked before the stock is touched, so a member short of points never holds the
    // reward's row; the debit below checks again against the lots.
    if state.available < def.points_cost {
        return Err(StoreError::Conflict(format!(
            "not enough available points: {} available, {} needed",
            state.available.max(0),
            def.points_cost
        )));
    }
    if reward.stock.is_some() {
        let taken = c.execute(
            "UPDATE rewards SET stock = stock - 1 WHERE tenant_id = $1 AND id = $2 AND stock > 0",
            &[tenant.into(), reward_id.into()],
        )?;
        if taken == 0 {
            return Err(StoreError::Conflict(format!(
                "reward `{reward_id}` is out of stock"
            )));
        }
    }
    let mut txn_id = None;
    if def.points_cost > 0 {
        let reason = format!("redeemed {}", def.title);
        let t = Txn {
            tenant,
            member,
            kind: if def.kind == RewardKind::CharityDonation {
                "donate"
            } else {
                "redeem"
            },
            reason: &reason,
            event_id: None,
            order_id: None,
            actor: None,
            now,
        };
        let id = ledger::insert_txn_as(c, &t, ahead.txn)?;
        let counter = if def.kind == RewardKind::CharityDonation {
            Account::Donated
        } else {
            Account::Redeemed
        };
        ledger::debit_from_lots(c, &t, id, def.points_cost, counter, "spent", open)?;
        txn_id = Some(id);
        if def.kind == RewardKind::CharityDonation {
            c.execute(
                "INSERT INTO donations (tenant_id, member_id, charity, points, txn_id, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
                &[tenant.into(), member.into(), def.charity.as_deref().unwrap_or(&def.title).into(), def.points_cost.into(), id.into(), now.into()],
            )?;
        }
    }
    let mut credit_minor = None;
    if def.kind == RewardKind::StoreCredit {
        let value = def.value_minor.unwrap_or(0);
        let reason = format!("reward {}", def.title);
        crate::credit::post(
            c,
            &crate::credit::CreditTxn {
                tenant,
                member,
                kind: "reward",
                reason: &reason,
                order_id: None,
                actor: None,
                currency: settings.currency.code(),
                now,
            },
            value,
            "rewards",
        )?;
        credit_minor = Some(value);
    }
    let status = if def.kind.settled_at_once() {
        "redeemed"
    } else {
        "issued"
    };
    let expires_at = coupon_expiry(def, settings, now);
    let code = insert_coupon(
        c,
        tenant,
        member,
        reward_id,
        "redemption",
        def.points_cost,
        txn_id,
        status,
        expires_at,
        now,
    )?;
    // The coupon as inserted and the balance after the debit, without reading either back
    // (the member's row is locked: nothing else moved it).
    let coupon = CouponRecord {
        code: display_code(&code),
        member_id: member.to_string(),
        reward_id: reward_id.to_string(),
        reward_title: def.title.clone(),
        kind: def.kind,
        source: "redemption".into(),
        points: def.points_cost,
        status: status.into(),
        issued_at: ts(now),
        expires_at: ts(expires_at),
        redeemed_at: (status == "redeemed").then(|| ts(now)),
        redeemed_order_id: None,
        cancelled_at: None,
    };
    let debited = if txn_id.is_some() { def.points_cost } else { 0 };
    Ok(RedemptionOutcome {
        coupon,
        points: def.points_cost,
        txn_id,
        credit_minor,
        balance: BalanceNow {
            available: state.available - debited,
            pending: state.pending,
        },
    })
}

/// A perk's coupon (no points, no stock): e.g. a plan's monthly free shipping.
pub(crate) fn issue_perk_coupon(
    c: &mut dyn Conn,
    tenant: &str,
    member: &str,
    reward_id: &str,
    source: &str,
    settings: &ProgramSettings,
    now: i64,
) -> Result<Option<String>> {
    let reward = match get_reward(c, tenant, reward_id) {
        Ok(r) => r,
        // A plan naming a reward that was never created gives nothing (and says so in logs).
        Err(StoreError::NotFound(_)) => {
            tracing::warn!(tenant, reward_id, "a plan's monthly reward does not exist");
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let expires = coupon_expiry(&reward.def, settings, now);
    insert_coupon(
        c, tenant, member, reward_id, source, 0, None, "issued", expires, now,
    )
    .map(Some)
}

/// Points a debit took, grouped by the expiry of the lots they came from.
pub(crate) fn taken_by_expiry(c: &mut dyn Conn, txn_id: i64) -> Result<Vec<(Option<i64>, i64)>> {
    Ok(c.query(
        "SELECT l.expires_at, CAST(SUM(-e.amount) AS BIGINT) FROM entries e JOIN lots l ON l.id = e.lot_id WHERE e.txn_id = $1 AND e.account = 'available' GROUP BY l.expires_at ORDER BY l.expires_at",
        &[txn_id.into()],
    )?
    .iter()
    .map(|r| (r.opt_int(0), r.int(1)))
    .filter(|(_, n)| *n > 0)
    .collect())
}

/// Credits points back to `member` in transaction `t`, one lot per expiry in `parts`.
pub(crate) fn credit_parts(
    c: &mut dyn Conn,
    t: &Txn<'_>,
    txn_id: i64,
    parts: &[(Option<i64>, i64)],
    counter: Account,
) -> Result<()> {
    for (expires_at, n) in parts {
        // Each part may repay a debt; the balance is read again before the next.
        let state = lock_member(c, t.tenant, t.member)?
            .ok_or_else(|| StoreError::NotFound(format!("member `{}`", t.member)))?;
        let lot = NewLot {
            order_id: None,
            pending: false,
            amount: *n,
            remaining: *n,
            earned_at: t.now,
            matures_at: None,
            expires_at: *expires_at,
        };
        ledger::credit_available(c, t, txn_id, state, *n, counter, lot)?;
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CancelOutcome {
    pub coupon: CouponRecord,
    pub points_returned: i64,
    pub balance: BalanceNow,
}

fn cancel(
    c: &mut dyn Conn,
    tenant: &str,
    code: &str,
    member_scope: Option<&str>,
    actor: &str,
    settings: &ProgramSettings,
    now: i64,
) -> Result<CancelOutcome> {
    let found = find_coupon(c, tenant, code, false)?
        .filter(|cp| member_scope.is_none_or(|m| cp.record.member_id == m))
        .ok_or_else(|| StoreError::NotFound("coupon".into()))?;
    let member = found.record.member_id.clone();
    let state = lock_member(c, tenant, &member)?
        .ok_or_else(|| StoreError::NotFound(format!("member `{member}`")))?;
    if now >= found.view.expires_at && found.view.status == "issued" {
        return Err(StoreError::Conflict(format!(
            "the coupon expired at {}; an expired coupon is not cancelled",
            found.record.expires_at
        )));
    }
    let n = c.execute(
        "UPDATE coupons SET status = 'cancelled', cancelled_at = $3 WHERE tenant_id = $1 AND code = $2 AND status = 'issued'",
        &[tenant.into(), code.into(), now.into()],
    )?;
    if n == 0 {
        let reason = check_coupon(
            &found.view,
            &found.def,
            None,
            None,
            &OrderView::default(),
            from_micros(now),
        )
        .err()
        .map_or_else(
            || "the coupon cannot be cancelled now".to_string(),
            |r| r.message(settings.currency),
        );
        return Err(StoreError::Conflict(reason));
    }
    let mut returned = 0;
    if settings.redemption.cancel_returns_points && found.record.points > 0 {
        if let Some(orig) = found.txn_id {
            let reason = format!("cancelled coupon for {}", found.def.title);
            let t = Txn {
                tenant,
                member: &member,
                kind: "redeem_cancel",
                reason: &reason,
                event_id: None,
                order_id: None,
                actor: Some(actor),
                now,
            };
            let txn_id = ledger::insert_txn(c, &t)?;
            let parts = match settings.redemption.returned_points_expiry {
                ReturnedExpiry::Original => taken_by_expiry(c, orig)?,
                ReturnedExpiry::Fresh => {
                    vec![(ledger::expiry_for(settings, now), found.record.points)]
                }
            };
            credit_parts(c, &t, txn_id, &parts, Account::Redeemed)?;
            returned = parts.iter().map(|(_, n)| n).sum();
        }
        c.execute(
            "UPDATE rewards SET stock = stock + 1 WHERE tenant_id = $1 AND id = $2 AND stock IS NOT NULL",
            &[tenant.into(), found.record.reward_id.as_str().into()],
        )?;
    }
    let detail =
        serde_json::json!({ "code": found.record.code, "points_returned": returned }).to_string();
    c.execute(
        "INSERT INTO audit_log (tenant_id, actor, action, subject, detail, created_at) VALUES ($1, $2, 'coupon.cancel', $3, $4, $5)",
        &[tenant.into(), actor.into(), member.as_str().into(), detail.as_str().into(), now.into()],
    )?;
    let coupon = find_coupon(c, tenant, code, false)?
        .ok_or_else(|| StoreError::Busy("coupon vanished; retry".into()))?;
    let after = lock_member(c, tenant, &member)?.unwrap_or(state);
    Ok(CancelOutcome {
        coupon: coupon.record,
        points_returned: returned,
        balance: after.now(),
    })
}

/// What the till asks about a coupon, and what it gets back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CouponQuery {
    /// The normalised code.
    pub code: String,
    pub member_id: Option<String>,
    pub order: OrderView,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CouponCheck {
    pub valid: bool,
    /// Why not: `unknown`, `expired`, `already_redeemed`, `cancelled`, `tier_restricted`,
    /// `below_minimum`, `product_not_in_order`, `wrong_member` (and `malformed`, decided before
    /// any look-up).
    pub reason: Option<String>,
    pub detail: Option<String>,
    pub coupon: Option<CouponRecord>,
    pub benefit: Option<Benefit>,
}

fn decide(
    c: &mut dyn Conn,
    tenant: &str,
    q: &CouponQuery,
    found: &CouponRow,
    settings: &ProgramSettings,
    now: i64,
) -> Result<std::result::Result<Benefit, Refusal>> {
    if q.member_id
        .as_ref()
        .is_some_and(|m| *m != found.record.member_id)
    {
        return Ok(Err(Refusal::WrongMember));
    }
    let ladder = settings.ladder();
    let required = found.def.min_tier.as_ref().map(|t| {
        ladder
            .as_ref()
            .and_then(|l| l.rank_of(t))
            .unwrap_or(usize::MAX)
    });
    let have = if required.is_some() {
        crate::tiers::rank(c, tenant, &found.record.member_id, ladder.as_ref())?
    } else {
        None
    };
    Ok(check_coupon(
        &found.view,
        &found.def,
        have,
        required,
        &q.order,
        from_micros(now),
    ))
}

fn validate(
    c: &mut dyn Conn,
    tenant: &str,
    q: &CouponQuery,
    settings: &ProgramSettings,
    now: i64,
) -> Result<CouponCheck> {
    let Some(found) = find_coupon(c, tenant, &q.code, false)? else {
        return Ok(CouponCheck {
            valid: false,
            reason: Some(Refusal::Unknown.code().into()),
            detail: Some(Refusal::Unknown.message(settings.currency)),
            coupon: None,
            benefit: None,
        });
    };
    let decision = decide(c, tenant, q, &found, settings, now)?;
    Ok(match decision {
        Ok(benefit) => CouponCheck {
            valid: true,
            reason: None,
            detail: None,
            coupon: Some(found.record),
            benefit: Some(benefit),
        },
        Err(r) => CouponCheck {
            valid: false,
            reason: Some(r.code().into()),
            detail: Some(r.message(settings.currency)),
            // A coupon of another member is not described to whoever holds its code.
            coupon: (r != Refusal::WrongMember).then_some(found.record),
            benefit: None,
        },
    })
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CouponRedeemed {
    pub coupon: CouponRecord,
    pub benefit: Benefit,
    pub order_id: Option<String>,
}

fn burn(
    c: &mut dyn Conn,
    tenant: &str,
    q: &CouponQuery,
    order_id: Option<&str>,
    actor: &str,
    settings: &ProgramSettings,
    now: i64,
) -> Result<CouponRedeemed> {
    let found = find_coupon(c, tenant, &q.code, true)?
        .ok_or_else(|| StoreError::NotFound("coupon".into()))?;
    let benefit = match decide(c, tenant, q, &found, settings, now)? {
        Ok(b) => b,
        Err(
            r @ (Refusal::AlreadyRedeemed { .. } | Refusal::Expired { .. } | Refusal::Cancelled),
        ) => {
            return Err(StoreError::Conflict(r.message(settings.currency)));
        }
        Err(Refusal::WrongMember | Refusal::Unknown) => {
            return Err(StoreError::NotFound("coupon".into()));
        }
        Err(r) => return Err(StoreError::Unprocessable(r.message(settings.currency))),
    };
    let n = c.execute(
        "UPDATE coupons SET status = 'redeemed', redeemed_at = $3, redeemed_order_id = $4, redeemed_by = $5 WHERE tenant_id = $1 AND code = $2 AND status = 'issued' AND expires_at > $3",
        &[tenant.into(), q.code.as_str().into(), now.into(), order_id.into(), actor.into()],
    )?;
    if n == 0 {
        return Err(StoreError::Conflict(
            "the coupon was redeemed by another request at the same moment".into(),
        ));
    }
    let coupon = find_coupon(c, tenant, &q.code, false)?
        .ok_or_else(|| StoreError::Busy("coupon vanished; retry".into()))?;
    Ok(CouponRedeemed {
        coupon: coupon.record,
        benefit,
        order_id: order_id.map(str::to_string),
    })
}

fn member_coupons(
    c: &mut dyn Conn,
    tenant: &str,
    member: &str,
    cursor: Option<&str>,
    limit: i64,
) -> Result<Page<CouponRecord>> {
    if c.query_one(
        "SELECT 1 FROM members WHERE tenant_id = $1 AND id = $2",
        &[tenant.into(), member.into()],
    )?
    .is_none()
    {
        return Err(StoreError::NotFound(format!("member `{member}`")));
    }
    let limit = limit.clamp(1, crate::ledger::MAX_PAGE);
    // Newest first; the cursor is "issued_at:code" of the last item.
    let (before_at, before_code) = match cursor.and_then(|s| s.split_once(':')) {
        Some((a, b)) => (a.parse::<i64>().unwrap_or(i64::MAX), b.to_string()),
        None => (i64::MAX, String::new()),
    };
    let rows = c.query(
        &format!(
            "{} WHERE c.tenant_id = $1 AND c.member_id = $2 AND (c.issued_at < $3 OR (c.issued_at = $3 AND c.code < $4)) ORDER BY c.issued_at DESC, c.code DESC LIMIT $5",
            coupon_select()
        ),
        &[tenant.into(), member.into(), before_at.into(), before_code.as_str().into(), (limit + 1).into()],
    )?;
    let more = rows.len() as i64 > limit;
    let mut items = Vec::new();
    let mut last = None;
    for r in rows.iter().take(limit as usize) {
        last = Some(format!("{}:{}", r.int(6), r.text(0)));
        items.push(coupon_row(r)?.record);
    }
    Ok(Page {
        items,
        next_cursor: if more { last } else { None },
    })
}

impl Store {
    pub async fn create_reward(
        &self,
        tenant: &str,
        def: RewardDef,
        stock: Option<i64>,
        idem: Option<IdemKey>,
        now: i64,
    ) -> Result<(RewardRecord, bool)> {
        let tenant = tenant.to_string();
        self.write_idem("", &tenant, idem, now, move |c, tenant| {
            create_reward(c, tenant, &def, stock, now)
        })
        .await
    }

    pub async fn update_reward(
        &self,
        tenant: &str,
        id: &str,
        def: RewardDef,
        stock: Option<i64>,
        idem: Option<IdemKey>,
        now: i64,
    ) -> Result<(RewardRecord, bool)> {
        let (tenant, id) = (tenant.to_string(), id.to_string());
        self.write_idem("", &tenant, idem, now, move |c, tenant| {
            update_reward(c, tenant, &id, &def, stock, now)
        })
        .await
    }

    pub async fn reward(&self, tenant: &str, id: &str) -> Result<RewardRecord> {
        let (tenant, id) = (tenant.to_string(), id.to_string());
        self.read(move |c| get_reward(c, &tenant, &id)).await
    }

    pub async fn list_rewards(
        &self,
        tenant: &str,
        cursor: Option<String>,
        limit: i64,
    ) -> Result<Page<RewardRecord>> {
        let tenant = tenant.to_string();
        self.read(move |c| list_rewards(c, &tenant, cursor.as_deref(), limit))
            .await
    }

    /// Redeems a reward for a member: points debited, stock taken, coupon issued, at once.
    pub async fn redeem_reward(
        &self,
        tenant: &str,
        member: &str,
        reward_id: &str,
        settings: ProgramSettings,
        idem: Option<IdemKey>,
        now: i64,
    ) -> Result<(RedemptionOutcome, bool)> {
        let (tenant, member, reward_id) = (
            tenant.to_string(),
            member.to_string(),
            reward_id.to_string(),
        );
        // By reward, not by member: on PostgreSQL a stock-limited reward's row is locked by
        // every redemption until its batch commits, so its redemptions share one writer (one
        // batch, one commit) instead of queueing behind each other's commits across writers.
        // One member's redemptions of one reward stay in order; of different rewards they
        // meet on the member's row lock.
        let part = format!("reward:{reward_id}");
        self.write_idem(&part, &tenant, idem, now, move |c, tenant| {
            redeem(c, tenant, &member, &reward_id, &settings, now)
        })
        .await
    }

    /// Cancels an unused coupon (of `member`, when given); returns its points per the policy.
    #[allow(clippy::too_many_arguments)]
    pub async fn cancel_coupon(
        &self,
        tenant: &str,
        code: &str,
        member: Option<&str>,
        actor: &str,
        settings: ProgramSettings,
        idem: Option<IdemKey>,
        now: i64,
    ) -> Result<(CancelOutcome, bool)> {
        let (tenant, code, actor) = (tenant.to_string(), code.to_string(), actor.to_string());
        let member = member.map(str::to_string);
        let part = member.clone().unwrap_or_else(|| code.clone());
        self.write_idem(&part, &tenant, idem, now, move |c, tenant| {
            cancel(c, tenant, &code, member.as_deref(), &actor, &settings, now)
        })
        .await
    }

    /// Whether a coupon is good for an order, and why not. Writes nothing.
    pub async fn validate_coupon(
        &self,
        tenant: &str,
        q: CouponQuery,
        settings: ProgramSettings,
        now: i64,
    ) -> Result<CouponCheck> {
        let tenant = tenant.to_string();
        self.read(move |c| validate(c, &tenant, &q, &settings, now))
            .await
    }

    /// Burns a coupon at the till: once only; the same Idempotency-Key replays the answer.
    #[allow(clippy::too_many_arguments)]
    pub async fn redeem_coupon(
        &self,
        tenant: &str,
        q: CouponQuery,
        order_id: Option<String>,
        actor: &str,
        settings: ProgramSettings,
        idem: Option<IdemKey>,
        now: i64,
    ) -> Result<(CouponRedeemed, bool)> {
        let (tenant, actor) = (tenant.to_string(), actor.to_string());
        let part = q.code.clone();
        self.write_idem(&part, &tenant, idem, now, move |c, tenant| {
            burn(c, tenant, &q, order_id.as_deref(), &actor, &settings, now)
        })
        .await
    }

    pub async fn member_coupons(
        &self,
        tenant: &str,
        member: &str,
        cursor: Option<String>,
        limit: i64,
    ) -> Result<Page<CouponRecord>> {
        let (tenant, member) = (tenant.to_string(), member.to_string());
        self.read(move |c| member_coupons(c, &tenant, &member, cursor.as_deref(), limit))
            .await
    }
}
