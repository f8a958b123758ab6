//! Conformance scenarios of member value on SQLite and PostgreSQL: tiers moving at their
//! boundaries, redemptions under concurrency, coupons at the till, store credit, transfers,
//! donations and paid membership. Every scenario ends with the ledger verified.

use chrono::{DateTime, Duration, Utc};
use fidelis_core::ProgramSettings;
use fidelis_core::credit::CreditSettings;
use fidelis_core::earn::{BaseEarner, EarnContext, Earner, MemberFacts, Trigger};
use fidelis_core::event::{Channel, LineInput, MemberKey, MemberRef, PurchaseInput, RefundInput};
use fidelis_core::membership::{PlanInput, SubscriptionEvent};
use fidelis_core::program::{ExpiryPolicy, RefundPolicy};
use fidelis_core::rewards::{OrderView, RewardInput, RewardKind, normalize_code};
use fidelis_core::tiers::{
    Downgrade, Metric, OnRefund, Review, Threshold, Tier, TierConfig, Window,
};
use fidelis_core::transfers::TransferSettings;
use fidelis_store::model::MemberFields;
use fidelis_store::rewards::CouponQuery;
use fidelis_store::{IdemKey, Store, StoreError};
use fidelis_store_tests::{TestDb, on_both};
use std::sync::atomic::Ordering;

const T: &str = "acme";

fn t0() -> DateTime<Utc> {
    fidelis_core::time::parse("2026-03-10T12:00:00Z").expect("valid time")
}

fn us(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn base_settings() -> ProgramSettings {
    ProgramSettings {
        pending_days: 0,
        expiry: ExpiryPolicy::AfterEarning { months: 12 },
        refund_policy: RefundPolicy::AllowNegative,
        ..ProgramSettings::default()
    }
}

fn tier(name: &str, threshold: &str) -> Tier {
    Tier {
        name: name.into(),
        threshold: Threshold::Text(threshold.into()),
        earn_multiplier: "1".into(),
        perks: vec![],
    }
}

/// Spend over a rolling 12 months, reviewed on the anniversary: Silver from 0, Gold from
/// 500.00, Platinum from 2000.00.
fn spend_tiers(downgrade: Downgrade, grace_days: u32, on_refund: OnRefund) -> TierConfig {
    TierConfig {
        metric: Metric::Spend,
        window: Window::Rolling { months: 12 },
        review: Review::Anniversary { months: 12 },
        downgrade,
        grace_days,
        on_refund,
        tiers: vec![
            tier("Silver", "0"),
            tier("Gold", "500.00"),
            tier("Platinum", "2000.00"),
        ],
    }
}

async fn setup(db: &TestDb, s: &ProgramSettings) -> Store {
    assert_eq!(s.validate(), Ok(()), "test settings are valid");
    let store = db.store(us(t0()));
    store
        .ensure_tenant(T, "Acme", s, us(t0()))
        .await
        .expect("tenant");
    store
}

async fn member(store: &Store, ext: &str) -> String {
    let f = MemberFields {
        external_id: Some(ext.into()),
        ..Default::default()
    };
    store
        .create_member(T, f, None, us(t0()))
        .await
        .expect("member")
        .0
        .id
}

async fn give(store: &Store, s: &ProgramSettings, m: &str, points: i64, at: DateTime<Utc>) {
    store
        .adjust(
            T,
            m,
            points,
            "opening balance",
            "test",
            s.clone(),
            None,
            us(at),
        )
        .await
        .expect("adjustment");
}

async fn buy(
    store: &Store,
    s: &ProgramSettings,
    member: &str,
    order: &str,
    total: &str,
    at: DateTime<Utc>,
) -> fidelis_store::model::PurchaseOutcome {
    try_buy(store, s, member, order, total, at, None)
        .await
        .expect("purchase")
}

/// A purchase at the till, as the HTTP layer posts it; its answer, refusals included.
async fn try_buy(
    store: &Store,
    s: &ProgramSettings,
    member: &str,
    order: &str,
    total: &str,
    at: DateTime<Utc>,
    idem: Option<IdemKey>,
) -> Result<fidelis_store::model::PurchaseOutcome, StoreError> {
    let p = PurchaseInput {
        member: MemberRef {
            id: Some(member.into()),
            external_id: None,
        },
        order_id: order.into(),
        occurred_at: Some(fidelis_core::time::format(at)),
        channel: Channel::Pos,
        store_id: None,
        currency: "EUR".into(),
        total: total.into(),
        lines: vec![LineInput {
            sku: "sku-1".into(),
            category: None,
            quantity: 1,
            unit_price: total.into(),
        }],
    }
    .validate(s, at)
    .expect("valid purchase");
    let awards = BaseEarner.awards(&EarnContext {
        program: s,
        event: Trigger::Purchase(&p),
        member: &MemberFacts::default(),
        now: at,
    });
    store
        .purchase(T, p, awards, s.clone(), idem, us(at))
        .await
        .map(|(outcome, _)| outcome)
}

async fn refund(store: &Store, s: &ProgramSettings, order: &str, amount: &str, at: DateTime<Utc>) {
    let r = RefundInput {
        order_id: order.into(),
        refund_id: None,
        amount: Some(amount.into()),
        lines: None,
        occurred_at: Some(fidelis_core::time::format(at)),
    }
    .validate(s, at)
    .expect("valid refund");
    store
        .refund(T, r, s.clone(), None, us(at))
        .await
        .expect("refund");
}

async fn available(store: &Store, s: &ProgramSettings, m: &str) -> i64 {
    store
        .balance(T, m, s.clone())
        .await
        .expect("balance")
        .available
}

async fn tier_of(store: &Store, s: &ProgramSettings, m: &str, at: DateTime<Utc>) -> Option<String> {
    store
        .member_tier(T, m, s.clone(), us(at))
        .await
        .expect("tier view")
        .tier
}

fn reward(kind: RewardKind, cost: i64, stock: Option<i64>) -> RewardInput {
    RewardInput {
        kind,
        title: "Ten euros off".into(),
        description: Some("On any order".into()),
        image_url: None,
        points_cost: cost,
        value: matches!(kind, RewardKind::FixedDiscount | RewardKind::StoreCredit)
            .then(|| "10.00".into()),
        percent: None,
        sku: None,
        charity: (kind == RewardKind::CharityDonation).then(|| "Red Cross".into()),
        min_order_total: None,
        stock,
        per_member_limit: None,
        min_tier: None,
        valid_from: None,
        valid_until: None,
        coupon_valid_days: Some(30),
        active: true,
    }
}

async fn add_reward(store: &Store, s: &ProgramSettings, input: RewardInput) -> String {
    let tiers: Vec<String> = s
        .ladder()
        .map(|l| l.levels.into_iter().map(|l| l.name).collect())
        .unwrap_or_default();
    let def = input.validate(s.currency, &tiers).expect("valid reward");
    store
        .create_reward(T, def, input.stock, None, us(t0()))
        .await
        .expect("reward")
        .0
        .id
}

async fn assert_ledger_ok(store: &Store) {
    let report = store.verify().await.expect("verify runs");
    assert!(report.ok(), "ledger invariants broken: {report:?}");
}

fn query(code: &str) -> CouponQuery {
    CouponQuery {
        code: normalize_code(code).expect("a well-formed code"),
        member_id: None,
        order: OrderView::default(),
    }
}

// ---------------------------------------------------------------------------------------------
// Redemptions under concurrency
// ---------------------------------------------------------------------------------------------

async fn a_hundred_concurrent_redemptions_by_a_member_whose_balance_covers_ten_give_exactly_ten(
    db: TestDb,
) {
    let s = base_settings();
    let store = setup(&db, &s).await;
    let m = member(&store, "c1").await;
    give(&store, &s, &m, 1000, t0()).await;
    let r = add_reward(&store, &s, reward(RewardKind::FixedDiscount, 100, None)).await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let (store, s, m, r) = (store.clone(), s.clone(), m.clone(), r.clone());
        tasks.spawn(async move { store.redeem_reward(T, &m, &r, s, None, us(t0())).await });
    }
    let (mut ok, mut refused) = (0, 0);
    while let Some(res) = tasks.join_next().await {
        match res.expect("task") {
            Ok(_) => ok += 1,
            Err(StoreError::Conflict(reason)) => {
                assert!(reason.contains("not enough available points"), "{reason}");
                refused += 1;
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!((ok, refused), (10, 90));
    assert_eq!(
        available(&store, &s, &m).await,
        0,
        "exactly 1000 - 10 × 100"
    );
    let coupons = store
        .member_coupons(T, &m, None, 200)
        .await
        .expect("coupons");
    assert_eq!(coupons.items.len(), 10);
    assert_ledger_ok(&store).await;
}

async fn a_reward_with_stock_five_redeemed_by_fifty_members_at_once_gives_exactly_five_coupons(
    db: TestDb,
) {
    let s = base_settings();
    let store = setup(&db, &s).await;
    let mut members = Vec::new();
    for i in 0..50 {
        let m = member(&store, &format!("c{i}")).await;
        give(&store, &s, &m, 100, t0()).await;
        members.push(m);
    }
    let r = add_reward(&store, &s, reward(RewardKind::FreeShipping, 100, Some(5))).await;
    let mut tasks = tokio::task::JoinSet::new();
    for m in &members {
        let (store, s, m, r) = (store.clone(), s.clone(), m.clone(), r.clone());
        tasks.spawn(async move { store.redeem_reward(T, &m, &r, s, None, us(t0())).await });
    }
    let (mut ok, mut refused) = (0, 0);
    while let Some(res) = tasks.join_next().await {
        match res.expect("task") {
            Ok(_) => ok += 1,
            Err(StoreError::Conflict(reason)) => {
                assert!(reason.contains("out of stock"), "{reason}");
                refused += 1;
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!((ok, refused), (5, 45));
    assert_eq!(store.reward(T, &r).await.expect("reward").stock, Some(0));
    let mut spent = 0;
    for m in &members {
        spent += 100 - available(&store, &s, m).await;
    }
    assert_eq!(spent, 500, "only the five winners paid");
    assert_ledger_ok(&store).await;
}

/// A write answered `answered` for member `m` at `at`: that is the balance stored, and the
/// write is the member's last activity.
async fn answered_as_stored_and_active(
    store: &Store,
    s: &ProgramSettings,
    m: &str,
    answered: &fidelis_store::model::BalanceNow,
    at: DateTime<Utc>,
    what: &str,
) {
    let balance = store.balance(T, m, s.clone()).await.expect("balance");
    assert_eq!(
        (answered.available, answered.pending),
        (balance.available, balance.pending),
        "{what}"
    );
    let seen = store.member(T, m).await.expect("member").last_activity_at;
    let seen = seen.and_then(|t| DateTime::parse_from_rfc3339(&t).ok());
    assert_eq!(
        seen.map(|t| t.with_timezone(&Utc)),
        Some(at),
        "{what} is the member's activity"
    );
}

/// A redemption answers with the coupon and the balance as they are stored (it builds them
/// from what it wrote rather than reading them back): for a coupon to use later and for one
/// settled at once, taking points from two lots (three entries in one statement).
async fn a_redemption_answers_the_coupon_and_balance_as_stored(db: TestDb) {
    let s = base_settings();
    let store = setup(&db, &s).await;
    let m = member(&store, "as-stored").await;
    give(&store, &s, &m, 150, t0()).await;
    give(&store, &s, &m, 150, t0() + Duration::hours(1)).await;
    for (kind, cost) in [
        (RewardKind::FixedDiscount, 200),
        (RewardKind::CharityDonation, 60),
    ] {
        let r = add_reward(&store, &s, reward(kind, cost, Some(3))).await;
        let at = t0() + Duration::hours(2);
        let (out, _) = store
            .redeem_reward(T, &m, &r, s.clone(), None, us(at))
            .await
            .expect("redeemed");
        let stored = store
            .member_coupons(T, &m, None, 50)
            .await
            .expect("coupons")
            .items
            .into_iter()
            .find(|c| c.code == out.coupon.code)
            .expect("the coupon is stored");
        assert_eq!(out.coupon, stored, "{kind:?}");
        answered_as_stored_and_active(&store, &s, &m, &out.balance, at, &format!("{kind:?}")).await;
    }
    // A refused redemption (short of points) leaves the member as it was, activity too.
    let before = store.member(T, &m).await.expect("member");
    let dear = add_reward(&store, &s, reward(RewardKind::FixedDiscount, 1_000, None)).await;
    let refused = store
        .redeem_reward(T, &m, &dear, s.clone(), None, us(t0() + Duration::days(3)))
        .await;
    assert!(
        matches!(refused, Err(StoreError::Conflict(_))),
        "{refused:?}"
    );
    assert_eq!(store.member(T, &m).await.expect("member"), before);
    assert_eq!(available(&store, &s, &m).await, 300 - 200 - 60);
    assert_ledger_ok(&store).await;
}

/// An adjustment, credit or debit, answers the balance as stored and is the member's
/// activity (it notes it through the member's lock, with redemptions and donations); a debit
/// past the balance is refused and changes nothing.
async fn an_adjustment_answers_the_stored_balance_and_is_the_members_activity(db: TestDb) {
    let s = base_settings();
    let store = setup(&db, &s).await;
    let m = member(&store, "adjusted").await;
    for (points, hours) in [(120, 1), (-45, 2), (-75, 3)] {
        let at = t0() + Duration::hours(hours);
        let (out, _) = store
            .adjust(T, &m, points, "goodwill", "test", s.clone(), None, us(at))
            .await
            .expect("adjusted");
        answered_as_stored_and_active(
            &store,
            &s,
            &m,
            &out.balance,
            at,
            &format!("adjustment of {points}"),
        )
        .await;
    }
    let before = store.member(T, &m).await.expect("member");
    let later = us(t0() + Duration::hours(4));
    let refused = store
        .adjust(T, &m, -1, "too much", "test", s.clone(), None, later)
        .await;
    assert!(
        matches!(refused, Err(StoreError::Conflict(_))),
        "{refused:?}"
    );
    assert_eq!(store.member(T, &m).await.expect("member"), before);
    assert_eq!(available(&store, &s, &m).await, 0);
    assert_ledger_ok(&store).await;
}

/// `n` members, `buyer-0` on.
async fn buyers(store: &Store, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(member(store, &format!("buyer-{i}")).await);
    }
    out
}

/// A 20.00 purchase by each buyer (order `o-<round>-<i>`), each task answering `done`.
fn spawn_buys<T: Clone + Send + 'static>(
    tasks: &mut tokio::task::JoinSet<T>,
    store: &Store,
    s: &ProgramSettings,
    buyers: &[String],
    round: usize,
    done: T,
) {
    for (i, b) in buyers.iter().enumerate() {
        let (store, s, b, done) = (store.clone(), s.clone(), b.clone(), done.clone());
        let order = format!("o-{round}-{i}");
        tasks.spawn(async move {
            buy(&store, &s, &b, &order, "20.00", t0()).await;
            done
        });
    }
}

/// A redemption refused in a batch of purchases is undone alone: its neighbours are kept and the
/// batch is not sent round again (it used to be, with a savepoint per job, for every refusal).
async fn a_refused_redemption_does_not_send_its_batch_round_again(db: TestDb) {
    let s = base_settings();
    let store = setup(&db, &s).await;
    let poor = member(&store, "poor").await;
    give(&store, &s, &poor, 10, t0()).await;
    let r = add_reward(&store, &s, reward(RewardKind::FixedDiscount, 100, None)).await;
    let buyers = buyers(&store, 30).await;
    let replays = store.metrics().replays.load(Ordering::Relaxed);
    let mut tasks = tokio::task::JoinSet::new();
    for round in 0..2 {
        spawn_buys(&mut tasks, &store, &s, &buyers, round, true);
        for _ in 0..3 {
            let (store, s, m, r) = (store.clone(), s.clone(), poor.clone(), r.clone());
            tasks.spawn(async move {
                let refused = store.redeem_reward(T, &m, &r, s, None, us(t0())).await;
                assert!(
                    matches!(refused, Err(StoreError::Conflict(_))),
                    "{refused:?}"
                );
                false
            });
        }
    }
    let (mut bought, mut refused) = (0, 0);
    while let Some(done) = tasks.join_next().await {
        if done.expect("task") {
            bought += 1;
        } else {
            refused += 1;
        }
    }
    assert_eq!((bought, refused), (60, 6));
    assert_eq!(
        store.metrics().replays.load(Ordering::Relaxed),
        replays,
        "no batch ran twice"
    );
    for b in &buyers {
        assert_eq!(available(&store, &s, b).await, 40);
    }
    assert_eq!(available(&store, &s, &poor).await, 10);
    assert_ledger_ok(&store).await;
}

/// A statement a request defers (on PostgreSQL held and sent with the next one, in the same
/// round trip) runs in order with the request's other statements, and one that fails refuses
/// that request alone, with the statement's own error: its neighbours in the batch are kept
/// and the batch is not sent round again.
async fn a_deferred_statement_that_fails_refuses_its_own_request_alone(db: TestDb) {
    let s = base_settings();
    let store = setup(&db, &s).await;
    let buyers = buyers(&store, 30).await;
    let replays = store.metrics().replays.load(Ordering::Relaxed);
    let mut tasks = tokio::task::JoinSet::new();
    for round in 0..2 {
        spawn_buys(&mut tasks, &store, &s, &buyers, round, "bought");
        for (k, b) in buyers.iter().enumerate().take(4) {
            // Deferred, then read back: the read sees it.
            let (store2, id) = (store.clone(), format!("shop-{round}-{k}"));
            let part = b.clone();
            tasks.spawn(async move {
                let seen = store2
                    .write(&part, move |c| {
                        c.defer(
                            "INSERT INTO tenants (id, name, created_at) VALUES ($1, 'a shop', 0)",
                            &[id.as_str().into()],
                        )?;
                        let n = c
                            .query_one(
                                "SELECT COUNT(*) FROM tenants WHERE id = $1",
                                &[id.as_str().into()],
                            )?
                            .map_or(0, |r| r.int(0));
                        Ok(n)
                    })
                    .await;
                assert_eq!(seen.expect("a deferred insert"), 1);
                "read back"
            });
            // Deferred and failing, the request's last statement (sent by the writer's
            // flush) or followed by a read (sent with it): refused with the insert's error.
            for then_read in [false, true] {
                let (store2, part) = (store.clone(), b.clone());
                tasks.spawn(async move {
                    let refused = store2
                        .write(&part, move |c| {
                            c.defer(
                                "INSERT INTO tenants (id, name, created_at) VALUES ($1, 'again', 0)",
                                &[T.into()],
                            )?;
                            if then_read {
                                c.query_one("SELECT COUNT(*) FROM tenants", &[])?;
                            }
                            Ok(())
                        })
                        .await;
                    match refused {
                        Err(StoreError::Db(e)) => assert_eq!(
                            e.kind,
                            fidelis_store::DbErrorKind::Unique,
                            "the insert's own error, not the aborted transaction's: {e}"
                        ),
                        other => panic!("a duplicate tenant was not refused: {other:?}"),
                    }
                    "refused"
                });
            }
        }
    }
    let mut seen = std::collections::BTreeMap::new();
    while let Some(done) = tasks.join_next().await {
        *seen.entry(done.expect("task")).or_insert(0) += 1;
    }
    assert_eq!(
        seen,
        [("bought", 60), ("read back", 8), ("refused", 16)].into()
    );
    assert_eq!(
        store.metrics().replays.load(Ordering::Relaxed),
        replays,
        "no batch ran twice"
    );
    for b in &buyers {
        assert_eq!(available(&store, &s, b).await, 40, "{b}");
    }
    assert_ledger_ok(&store).await;
}

/// Reads sent together (`Conn::query_all`, one round trip on PostgreSQL) answer each its own
/// rows, in order, after what the request deferred; the first that fails is the error.
async fn reads_sent_together_answer_in_order(db: TestDb) {
    let s = base_settings();
    let store = setup(&db, &s).await;
    let m = member(&store, "reader").await;
    let answers = store
        .write(&m, |c| {
            c.defer(
                "INSERT INTO tenants (id, name, created_at) VALUES ('shop-b', 'b', 7)",
                &[],
            )?;
            let rows = c.query_all(&[
                (
                    "SELECT created_at FROM tenants WHERE id = $1",
                    &["shop-b".into()],
                ),
                (
                    "SELECT COUNT(*) FROM tenants WHERE id = $1",
                    &["nowhere".into()],
                ),
                (
                    "SELECT id FROM tenants WHERE id IN ($1, $2) ORDER BY id",
                    &[T.into(), "shop-b".into()],
                ),
            ])?;
            Ok(rows
                .iter()
                .map(|r| r.iter().map(|r| r.text(0)).collect::<Vec<_>>())
                .collect::<Vec<_>>())
        })
        .await
        .expect("reads");
    assert_eq!(answers, [vec!["7"], vec!["0"], vec![T, "shop-b"]]);
    let failed = store
        .write(&m, |c| {
            c.query_all(&[
                ("SELECT 1", &[]),
                ("SELECT nothing FROM no_such_table", &[]),
                ("SELECT 2", &[]),
            ])?;
            Ok(())
        })
        .await;
    match failed {
        Err(StoreError::Db(e)) => assert!(e.message.contains("no_such_table"), "{e}"),
        other => panic!("a read of a missing table did not fail: {other:?}"),
    }
}

/// A purchase refused before it wrote anything (its order id already recorded with another
/// total, under no key or a new one, or its Idempotency-Key already used for another request)
/// is left out of its batch:
/// its neighbours are kept and the batch is not sent round again with a savepoint per job (it
/// was, for every such refusal).
async fn a_purchase_refused_before_writing_does_not_send_its_batch_round_again(db: TestDb) {
    let s = base_settings();
    let store = setup(&db, &s).await;
    let buyers = buyers(&store, 30).await;
    // Orders the tills will send again with another total, and keys they will use again for
    // another order.
    let key = |i: usize, hash: &str| IdemKey {
        key: format!("key-{i}"),
        request_hash: hash.into(),
    };
    for (i, b) in buyers.iter().take(4).enumerate() {
        buy(&store, &s, b, &format!("first-{i}"), "10.00", t0()).await;
        let keyed = Some(key(i, "a"));
        try_buy(&store, &s, b, &format!("keyed-{i}"), "5.00", t0(), keyed)
            .await
            .expect("a keyed purchase");
    }
    let replays = store.metrics().replays.load(Ordering::Relaxed);
    let mut tasks = tokio::task::JoinSet::new();
    let mut send = |b: &str, order: String, total: &'static str, k: Option<IdemKey>| {
        let (store, s, b) = (store.clone(), s.clone(), b.to_string());
        tasks.spawn(async move { try_buy(&store, &s, &b, &order, total, t0(), k).await });
    };
    for round in 0..2 {
        for (i, b) in buyers.iter().enumerate() {
            send(b, format!("o-{round}-{i}"), "20.00", None);
        }
        for (i, b) in buyers.iter().take(4).enumerate() {
            send(b, format!("first-{i}"), "99.00", None);
            send(b, format!("other-{round}-{i}"), "7.00", Some(key(i, "b")));
            let fresh = IdemKey {
                key: format!("fresh-{round}-{i}"),
                request_hash: "c".into(),
            };
            send(b, format!("first-{i}"), "98.00", Some(fresh));
        }
    }
    let (mut bought, mut refused) = (0, 0);
    while let Some(done) = tasks.join_next().await {
        match done.expect("task") {
            Ok(outcome) => {
                assert!(!outcome.duplicate, "{outcome:?}");
                bought += 1;
            }
            Err(StoreError::Conflict(_)) => refused += 1,
            Err(e) => panic!("unexpected refusal: {e:?}"),
        }
    }
    assert_eq!((bought, refused), (60, 24));
    assert_eq!(
        store.metrics().replays.load(Ordering::Relaxed),
        replays,
        "no batch ran twice"
    );
    for (i, b) in buyers.iter().enumerate() {
        let first = if i < 4 { 10 + 5 } else { 0 };
        assert_eq!(available(&store, &s, b).await, first + 40, "{b}");
    }
    // A key whose request was refused was given back: it serves a new request.
    let fresh = IdemKey {
        key: "fresh-0-0".into(),
        request_hash: "d".into(),
    };
    let again = try_buy(&store, &s, &buyers[0], "after", "1.00", t0(), Some(fresh)).await;
    assert!(again.is_ok_and(|o| !o.duplicate && o.points == 1));
    assert_ledger_ok(&store).await;
}

// ---------------------------------------------------------------------------------------------
// Coupons at the till
// ---------------------------------------------------------------------------------------------

async fn a_coupon_redeemed_twice_is_refused_and_a_retry_with_its_key_replays_the_first_answer(
    db: TestDb,
) {
    let s = base_settings();
    let store = setup(&db, &s).await;
    let m = member(&store, "c1").await;
    give(&store, &s, &m, 500, t0()).await;
    let r = add_reward(&store, &s, reward(RewardKind::FixedDiscount, 200, None)).await;
    let (out, _) = store
        .redeem_reward(T, &m, &r, s.clone(), None, us(t0()))
        .await
        .expect("redeemed");
    let code = out.coupon.code.clone();
    assert_eq!(code.len(), 17, "14 symbols in groups of four: {code}");
    let key = IdemKey {
        key: "till-1-receipt-9".into(),
        request_hash: "h1".into(),
    };
    let at = t0() + Duration::hours(1);
    let (first, replayed) = store
        .redeem_coupon(
            T,
            query(&code),
            Some("o-1".into()),
            "key:till",
            s.clone(),
            Some(key.clone()),
            us(at),
        )
        .await
        .expect("burnt");
    assert!(!replayed);
    assert_eq!(first.coupon.status, "redeemed");
    assert_eq!(first.benefit.discount_minor, Some(1000));
    let (again, replayed) = store
        .redeem_coupon(
            T,
            query(&code),
            Some("o-1".into()),
            "key:till",
            s.clone(),
            Some(key),
            us(at + Duration::seconds(5)),
        )
        .await
        .expect("replayed");
    assert!(replayed);
    assert_eq!(again, first);
    let second = store
        .redeem_coupon(
            T,
            query(&code),
            Some("o-2".into()),
            "key:till",
            s.clone(),
            None,
            us(at + Duration::seconds(9)),
        )
        .await;
    match second {
        Err(StoreError::Conflict(reason)) => {
            assert!(reason.contains("already redeemed at"), "{reason}");
            assert!(reason.contains("o-1"), "{reason}");
        }
        other => panic!("a second redeem must be refused, got {other:?}"),
    }
    assert_ledger_ok(&store).await;
}

async fn coupon_validation_gives_the_reason_a_coupon_is_refused(db: TestDb) {
    let mut s = base_settings();
    s.tiers = Some(spend_tiers(Downgrade::OneDown, 0, OnRefund::Immediate));
    let store = setup(&db, &s).await;
    let m = member(&store, "c1").await;
    give(&store, &s, &m, 5000, t0()).await;
    let plain = add_reward(&store, &s, reward(RewardKind::FixedDiscount, 100, None)).await;
    let with_min = add_reward(
        &store,
        &s,
        RewardInput {
            min_order_total: Some("50.00".into()),
            ..reward(RewardKind::FixedDiscount, 100, None)
        },
    )
    .await;
    let gold_only = add_reward(
        &store,
        &s,
        RewardInput {
            min_tier: Some("Gold".into()),
            ..reward(RewardKind::FreeShipping, 100, None)
        },
    )
    .await;
    let redeem = |r: String| {
        let (store, s, m) = (store.clone(), s.clone(), m.clone());
        async move {
            store
                .redeem_reward(T, &m, &r, s, None, us(t0()))
                .await
                .map(|(o, _)| o.coupon.code)
        }
    };
    // Tier restricted at redemption: the member is not Gold yet.
    match redeem(gold_only.clone()).await {
        Err(StoreError::Conflict(reason)) => assert!(reason.contains("Gold"), "{reason}"),
        other => panic!("a Gold-only reward must be refused, got {other:?}"),
    }
    buy(&store, &s, &m, "o-gold", "600.00", t0()).await;
    assert_eq!(tier_of(&store, &s, &m, t0()).await.as_deref(), Some("Gold"));
    let gold_code = redeem(gold_only).await.expect("a Gold member redeems it");
    let expired = redeem(plain.clone()).await.expect("redeemed");
    let used = redeem(plain).await.expect("redeemed");
    let min_code = redeem(with_min).await.expect("redeemed");
    let check = |code: String, order: OrderView, at: DateTime<Utc>| {
        let (store, s) = (store.clone(), s.clone());
        async move {
            let mut q = query(&code);
            q.order = order;
            store
                .validate_coupon(T, q, s, us(at))
                .await
                .expect("validated")
        }
    };
    let soon = t0() + Duration::days(1);
    store
        .redeem_coupon(T, query(&used), None, "key:till", s.clone(), None, us(soon))
        .await
        .expect("used once");
    let c = check(used.clone(), OrderView::default(), soon).await;
    assert_eq!(
        (c.valid, c.reason.as_deref()),
        (false, Some("already_redeemed"))
    );
    let c = check(expired, OrderView::default(), t0() + Duration::days(30)).await;
    assert_eq!((c.valid, c.reason.as_deref()), (false, Some("expired")));
    let unknown = fidelis_core::rewards::display_code(&fidelis_core::rewards::coupon_code([9; 16]));
    let c = check(unknown, OrderView::default(), soon).await;
    assert_eq!((c.valid, c.reason.as_deref()), (false, Some("unknown")));
    let small = OrderView {
        total_minor: Some(4999),
        lines: vec![],
    };
    let c = check(min_code.clone(), small, soon).await;
    assert_eq!(
        (c.valid, c.reason.as_deref()),
        (false, Some("below_minimum"))
    );
    assert!(c.detail.unwrap_or_default().contains("50.00 EUR"));
    let big = OrderView {
        total_minor: Some(5000),
        lines: vec![],
    };
    let c = check(min_code, big, soon).await;
    assert!(c.valid, "at the minimum the coupon is good: {c:?}");
    // The member drops below Gold (a refund under the immediate policy): the Gold coupon is
    // refused at the till.
    refund(&store, &s, "o-gold", "600.00", soon).await;
    assert_eq!(
        tier_of(&store, &s, &m, soon).await.as_deref(),
        Some("Silver")
    );
    let c = check(gold_code, OrderView::default(), soon).await;
    assert_eq!(
        (c.valid, c.reason.as_deref()),
        (false, Some("tier_restricted"))
    );
    assert_ledger_ok(&store).await;
}

async fn cancelling_an_unused_coupon_returns_its_points_with_their_expiry_and_its_stock(
    db: TestDb,
) {
    let s = base_settings();
    let store = setup(&db, &s).await;
    let m = member(&store, "c1").await;
    give(&store, &s, &m, 300, t0()).await;
    let r = add_reward(&store, &s, reward(RewardKind::FixedDiscount, 250, Some(3))).await;
    let (out, _) = store
        .redeem_reward(T, &m, &r, s.clone(), None, us(t0()))
        .await
        .expect("redeemed");
    assert_eq!(available(&store, &s, &m).await, 50);
    assert_eq!(store.reward(T, &r).await.expect("reward").stock, Some(2));
    let code = normalize_code(&out.coupon.code).expect("code");
    let later = t0() + Duration::days(2);
    let (cancelled, _) = store
        .cancel_coupon(T, &code, Some(&m), "key:admin", s.clone(), None, us(later))
        .await
        .expect("cancelled");
    assert_eq!(cancelled.points_returned, 250);
    assert_eq!(cancelled.coupon.status, "cancelled");
    assert_eq!(available(&store, &s, &m).await, 300);
    assert_eq!(store.reward(T, &r).await.expect("reward").stock, Some(3));
    // The returned points keep the expiry of the lot they came from (a year after t0).
    let b = store.balance(T, &m, s.clone()).await.expect("balance");
    assert_eq!(b.expiring.len(), 1, "{b:?}");
    assert_eq!(b.expiring[0].expires_at, "2027-03-10T12:00:00Z");
    // Cancelled once is cancelled: a second cancel and a redeem at the till are refused.
    let again = store
        .cancel_coupon(T, &code, Some(&m), "key:admin", s.clone(), None, us(later))
        .await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    let till = store
        .redeem_coupon(
            T,
            query(&code),
            None,
            "key:till",
            s.clone(),
            None,
            us(later),
        )
        .await;
    assert!(matches!(till, Err(StoreError::Conflict(_))), "{till:?}");
    assert_ledger_ok(&store).await;
}

async fn per_member_limits_and_validity_dates_bound_redemptions(db: TestDb) {
    let s = base_settings();
    let store = setup(&db, &s).await;
    let m = member(&store, "c1").await;
    give(&store, &s, &m, 1000, t0()).await;
    let limited = add_reward(
        &store,
        &s,
        RewardInput {
            per_member_limit: Some(2),
            valid_from: Some("2026-03-01T00:00:00Z".into()),
            valid_until: Some("2026-04-01T00:00:00Z".into()),
            ..reward(RewardKind::FixedDiscount, 10, None)
        },
    )
    .await;
    let redeem = |at: DateTime<Utc>| {
        let (store, s, m, r) = (store.clone(), s.clone(), m.clone(), limited.clone());
        async move {
            store
                .redeem_reward(T, &m, &r, s, None, us(at))
                .await
                .map(|(o, _)| o)
        }
    };
    let early = fidelis_core::time::parse("2026-02-28T23:59:59Z").expect("valid");
    assert!(
        matches!(redeem(early).await, Err(StoreError::Conflict(r)) if r.contains("not available before"))
    );
    let first = redeem(t0()).await.expect("first");
    redeem(t0()).await.expect("second");
    assert!(
        matches!(redeem(t0()).await, Err(StoreError::Conflict(r)) if r.contains("2 time(s) per member"))
    );
    // A cancelled redemption no longer counts against the limit.
    let code = normalize_code(&first.coupon.code).expect("code");
    store
        .cancel_coupon(T, &code, None, "key:admin", s.clone(), None, us(t0()))
        .await
        .expect("cancelled");
    redeem(t0()).await.expect("a third after a cancel");
    let late = fidelis_core::time::parse("2026-04-01T00:00:00Z").expect("valid");
    assert!(
        matches!(redeem(late).await, Err(StoreError::Conflict(r)) if r.contains("no longer available"))
    );
    assert_eq!(available(&store, &s, &m).await, 1000 - 20);
    assert_ledger_ok(&store).await;
}

async fn the_cancel_policy_may_keep_the_points_or_give_them_a_fresh_expiry(db: TestDb) {
    let mut s = base_settings();
    s.redemption.returned_points_expiry = fidelis_core::rewards::ReturnedExpiry::Fresh;
    let store = setup(&db, &s).await;
    let m = member(&store, "c1").await;
    give(&store, &s, &m, 100, t0()).await;
    let r = add_reward(&store, &s, reward(RewardKind::FreeShipping, 100, None)).await;
    let code = |o: fidelis_store::rewards::RedemptionOutcome| {
        normalize_code(&o.coupon.code).expect("code")
    };
    let (out, _) = store
        .redeem_reward(T, &m, &r, s.clone(), None, us(t0()))
        .await
        .expect("redeemed");
    let later = t0() + Duration::days(20);
    store
        .cancel_coupon(T, &code(out), None, "key:admin", s.clone(), None, us(later))
        .await
        .expect("cancelled");
    let b = store.balance(T, &m, s.clone()).await.expect("balance");
    assert_eq!(
        b.expiring[0].expires_at, "2027-03-30T12:00:00Z",
        "a year after the cancel"
    );
    s.redemption.cancel_returns_points = false;
    let (out, _) = store
        .redeem_reward(T, &m, &r, s.clone(), None, us(later))
        .await
        .expect("redeemed");
    let (c, _) = store
        .cancel_coupon(T, &code(out), None, "key:admin", s.clone(), None, us(later))
        .await
        .expect("cancelled");
    assert_eq!(c.points_returned, 0);
    assert_eq!(available(&store, &s, &m).await, 0);
    assert_ledger_ok(&store).await;
}

// ---------------------------------------------------------------------------------------------
// Tiers
// ---------------------------------------------------------------------------------------------

async fn a_purchase_that_reaches_a_threshold_upgrades_at_once(db: TestDb) {
    let mut s = base_settings();
    s.tiers = Some(spend_tiers(Downgrade::OneDown, 0, OnRefund::AtReview));
    let store = setup(&db, &s).await;
    let m = member(&store, "c1").await;
    assert_eq!(tier_of(&store, &s, &m, t0()).await, None);
    buy(&store, &s, &m, "o1", "180.00", t0()).await;
    let v = store
        .member_tier(T, &m, s.clone(), us(t0()))
        .await
        .expect("view");
    assert_eq!(v.tier.as_deref(), Some("Silver"));
    assert_eq!(v.message.as_deref(), Some("320.00 EUR more to Gold"));
    let at = t0() + Duration::days(3);
    buy(&store, &s, &m, "o2", "320.00", at).await;
    let v = store
        .member_tier(T, &m, s.clone(), us(at))
        .await
        .expect("view");
    assert_eq!(v.tier.as_deref(), Some("Gold"));
    assert_eq!(v.since.as_deref(), Some("2026-03-13T12:00:00Z"));
    assert_eq!(v.secured_until.as_deref(), Some("2027-03-13T12:00:00Z"));
    assert_eq!(v.history.len(), 2);
    assert_eq!(v.history[0].from_tier.as_deref(), Some("Silver"));
    assert_eq!(v.history[0].to_tier.as_deref(), Some("Gold"));
    let facts = store
        .member_facts(T, &MemberKey::Id(m.clone()))
        .await
        .expect("facts")
        .expect("enrolled");
    assert_eq!(facts.tier.as_deref(), Some("Gold"), "earning sees the tier");
    assert_ledger_ok(&store).await;
}

/// How many of the tenant's events are left out of `events_by_member` (written while the
/// programme had no spend or orders ladder).
async fn skipped_events(store: &Store) -> i64 {
    store
        .read(|c| {
            Ok(c.query_one(
                "SELECT COUNT(*) FROM events WHERE tenant_id = $1 AND tier_skip IS NOT NULL",
                &[T.into()],
            )?
            .map_or(0, |r| r.int(0)))
        })
        .await
        .expect("counted")
}

async fn put_program(store: &Store, s: &ProgramSettings, at: DateTime<Utc>) {
    store
        .put_program(T, s, "test", None, us(at))
        .await
        .expect("programme saved");
}

/// A programme without a spend or orders ladder writes no member-events index entries for its
/// purchases and refunds; setting such a ladder later puts them back, so it measures them, and
/// so does setting it again after it was taken away.
async fn a_spend_ladder_set_after_purchases_measures_them(db: TestDb) {
    let plain = base_settings();
    let store = setup(&db, &plain).await;
    let m = member(&store, "c1").await;
    buy(&store, &plain, &m, "o1", "180.00", t0()).await;
    buy(&store, &plain, &m, "o2", "100.00", t0()).await;
    refund(&store, &plain, "o2", "40.00", t0() + Duration::days(1)).await;
    assert_eq!(skipped_events(&store).await, 3);
    let mut tiered = plain.clone();
    tiered.tiers = Some(spend_tiers(Downgrade::OneDown, 0, OnRefund::AtReview));
    put_program(&store, &tiered, t0() + Duration::days(2)).await;
    assert_eq!(skipped_events(&store).await, 0);
    // 180 + 100 − 40 + 260 = 500.00: Gold.
    let at = t0() + Duration::days(3);
    buy(&store, &tiered, &m, "o3", "260.00", at).await;
    assert_eq!(
        tier_of(&store, &tiered, &m, at).await.as_deref(),
        Some("Gold")
    );
    // Taken away, a purchase is left out again; set again, it counts.
    put_program(&store, &plain, at).await;
    buy(&store, &plain, &m, "o4", "50.00", t0() + Duration::days(4)).await;
    assert_eq!(skipped_events(&store).await, 1);
    let at = t0() + Duration::days(5);
    put_program(&store, &tiered, at).await;
    assert_eq!(skipped_events(&store).await, 0);
    let v = store
        .member_tier(T, &m, tiered.clone(), us(at))
        .await
        .expect("view");
    assert_eq!(v.message.as_deref(), Some("1450.00 EUR more to Platinum"));
    assert_ledger_ok(&store).await;
}

/// Setting a spend ladder puts the tenant's history back in the member-events index a chunk of
/// ids per writer transaction, not all in the programme update's: the writer takes other
/// writes between chunks. Until the ladder is set, new events are still left out.
async fn the_history_is_put_back_a_chunk_per_transaction(db: TestDb) {
    use std::sync::atomic::Ordering;
    let plain = base_settings();
    let store = setup(&db, &plain).await;
    let m = member(&store, "c1").await;
    for (i, total) in ["10.00", "20.00", "30.00", "40.00", "50.00"]
        .iter()
        .enumerate()
    {
        buy(&store, &plain, &m, &format!("o{i}"), total, t0()).await;
    }
    assert_eq!(skipped_events(&store).await, 5);
    let commits = store.metrics().batches.load(Ordering::Relaxed);
    let unmarked = store.unmark_member_events(T, 2).await.expect("unmarked");
    assert_eq!(unmarked, 5);
    assert_eq!(skipped_events(&store).await, 0);
    assert!(
        store.metrics().batches.load(Ordering::Relaxed) - commits >= 3,
        "five ids, two a transaction"
    );
    // The programme still has no ladder: a purchase is left out, and the ladder's update
    // puts it back.
    buy(&store, &plain, &m, "o5", "60.00", t0()).await;
    assert_eq!(skipped_events(&store).await, 1);
    let mut tiered = plain.clone();
    tiered.tiers = Some(spend_tiers(Downgrade::OneDown, 0, OnRefund::AtReview));
    let at = t0() + Duration::days(1);
    put_program(&store, &tiered, at).await;
    assert_eq!(skipped_events(&store).await, 0);
    assert_eq!(
        store.unmark_member_events(T, 2).await.expect("nothing"),
        0,
        "nothing to do once the programme has member events"
    );
    // 10 + 20 + 30 + 40 + 50 + 60 + 290 = 500.00: Gold, every purchase measured.
    buy(&store, &tiered, &m, "o6", "290.00", at).await;
    assert_eq!(
        tier_of(&store, &tiered, &m, at).await.as_deref(),
        Some("Gold")
    );
    assert_ledger_ok(&store).await;
}

/// A spend ladder set while purchases are being written still finds every one of them: a
/// purchase either sees the ladder or is written before the programme's update fills the
/// index (on PostgreSQL the update waits for the purchases that read the programme without it).
async fn a_spend_ladder_set_during_purchases_misses_none(db: TestDb) {
    let plain = base_settings();
    let store = setup(&db, &plain).await;
    let mut tiered = plain.clone();
    tiered.tiers = Some(spend_tiers(Downgrade::OneDown, 0, OnRefund::AtReview));
    let people = buyers(&store, 40).await;
    let mut tasks = tokio::task::JoinSet::new();
    for round in 0..3 {
        spawn_buys(&mut tasks, &store, &plain, &people, round, ());
    }
    tokio::task::yield_now().await;
    put_program(&store, &tiered, t0()).await;
    while let Some(done) = tasks.join_next().await {
        done.expect("a purchase task");
    }
    assert_eq!(skipped_events(&store).await, 0);
    for b in &people {
        let v = store
            .member_tier(T, b, tiered.clone(), us(t0()))
            .await
            .expect("view");
        assert_eq!(v.message.as_deref(), Some("440.00 EUR more to Gold"), "{b}");
    }
    assert_ledger_ok(&store).await;
}

/// A ladder over a short rolling window, so events leave it often: Silver from 0, Gold from
/// 150.00 (or 4 orders), Platinum from 400.00 (or 9 orders), reviewed every 2 months.
fn short_window(metric: Metric) -> TierConfig {
    let (gold, platinum) = match metric {
        Metric::Orders => (Threshold::Int(4), Threshold::Int(9)),
        _ => (
            Threshold::Text("150.00".into()),
            Threshold::Text("400.00".into()),
        ),
    };
    let mut silver = tier("Silver", "0");
    if metric == Metric::Orders {
        silver.threshold = Threshold::Int(0);
    }
    TierConfig {
        metric,
        window: Window::Rolling { months: 3 },
        review: Review::Anniversary { months: 2 },
        downgrade: Downgrade::OneDown,
        grace_days: 0,
        on_refund: OnRefund::AtReview,
        tiers: vec![
            silver,
            Tier {
                threshold: gold,
                ..tier("Gold", "0")
            },
            Tier {
                threshold: platinum,
                ..tier("Platinum", "0")
            },
        ],
    }
}

/// The member's tier, its dates and every move, as a comparable text.
async fn tier_rows(store: &Store, m: &str) -> Vec<String> {
    let m = m.to_string();
    store
        .read(move |c| {
            let mut out = Vec::new();
            for q in [
                "SELECT 'now', tier, tier_since, tier_secured_until, 0, 0 FROM members WHERE tenant_id = $1 AND id = $2",
                "SELECT 'move', from_tier, to_tier, reason, metric_value, effective_at FROM tier_history WHERE tenant_id = $1 AND member_id = $2 ORDER BY id",
            ] {
                for r in c.query(q, &[T.into(), m.as_str().into()])? {
                    out.push(format!("{:?}", r.0));
                }
            }
            Ok(out)
        })
        .await
        .expect("tier rows")
}

/// Forgets the member's bound, so its next purchase measures the metric from its events.
async fn forget_bound(store: &Store, m: &str) {
    let m = m.to_string();
    store
        .write(&m.clone(), move |c| {
            c.execute(
                "UPDATE members SET tier_floor = NULL, tier_floor_of = NULL WHERE tenant_id = $1 AND id = $2",
                &[T.into(), m.as_str().into()],
            )?;
            Ok(())
        })
        .await
        .expect("bound forgotten");
}

/// A refund leaving the window raises the metric with no new event: the bound must count the
/// purchases in the window, not the metric. 90.00 bought, then 5.00, then the 90.00 refunded
/// (2.5 months in); at 3.2 months the first purchase has left the window and the metric is
/// 5 + 10 − 90 < 0 (kept as a bound, 20.00 would later say no tier is in reach); at 5.6
/// months the refund has left it too, and 10 + 95 reaches Gold.
async fn a_refund_leaving_the_window_is_not_missed_by_the_tier_bound(db: TestDb) {
    let mut s = base_settings();
    s.tiers = Some(TierConfig {
        tiers: vec![tier("Silver", "0"), tier("Gold", "100.00")],
        review: Review::Anniversary { months: 12 },
        ..short_window(Metric::Spend)
    });
    let store = setup(&db, &s).await;
    let m = member(&store, "c1").await;
    let day = |d: i64| t0() + Duration::days(d);
    buy(&store, &s, &m, "o1", "90.00", day(0)).await;
    buy(&store, &s, &m, "o2", "5.00", day(60)).await;
    refund(&store, &s, "o1", "90.00", day(75)).await;
    buy(&store, &s, &m, "o3", "10.00", day(96)).await;
    assert_eq!(
        tier_of(&store, &s, &m, day(96)).await.as_deref(),
        Some("Silver")
    );
    buy(&store, &s, &m, "o4", "95.00", day(168)).await;
    assert_eq!(
        tier_of(&store, &s, &m, day(168)).await.as_deref(),
        Some("Gold"),
        "10.00 + 95.00 in the window: {:?}",
        tier_rows(&store, &m).await
    );
    assert_ledger_ok(&store).await;
}

/// The tier step stays without reading events when the member's bound allows it. Two members
/// get the same purchases and refunds over 30 months (a pseudo-random walk: amounts, gaps
/// past the review date, refunds of earlier orders); one of them has its bound forgotten
/// before every purchase, so each of its purchases measures. Their tiers, dates and moves
/// must match after every step, for a spend and an orders metric.
async fn a_tier_decided_on_the_bound_is_the_tier_measured_every_time(db: TestDb) {
    for metric in [Metric::Spend, Metric::Orders] {
        let mut s = base_settings();
        s.tiers = Some(short_window(metric));
        let store = setup(&db, &s).await;
        let tag = format!("{metric:?}");
        let (a, b) = (
            member(&store, &format!("{tag}-a")).await,
            member(&store, &format!("{tag}-b")).await,
        );
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: u64| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % n
        };
        let mut at = t0();
        let mut orders: Vec<(usize, i64)> = Vec::new();
        for step in 0..140 {
            at += Duration::hours(1 + next(24 * 12) as i64);
            if next(20) == 0 {
                at += Duration::days(40 + next(40) as i64);
            }
            if next(5) == 0 && !orders.is_empty() {
                let k = next(orders.len() as u64) as usize;
                let (o, left) = orders[k];
                if left > 0 {
                    let cents = if next(2) == 0 {
                        left
                    } else {
                        1 + next(left as u64) as i64
                    };
                    let amount = format!("{}.{:02}", cents / 100, cents % 100);
                    for who in ["a", "b"] {
                        refund(&store, &s, &format!("{tag}-{who}-{o}"), &amount, at).await;
                    }
                    orders[k].1 -= cents;
                }
            } else {
                let cents = 500 + next(11_500) as i64;
                let total = format!("{}.{:02}", cents / 100, cents % 100);
                buy(&store, &s, &a, &format!("{tag}-a-{step}"), &total, at).await;
                forget_bound(&store, &b).await;
                buy(&store, &s, &b, &format!("{tag}-b-{step}"), &total, at).await;
                orders.push((step, cents));
            }
            let (ra, rb) = (tier_rows(&store, &a).await, tier_rows(&store, &b).await);
            assert_eq!(ra, rb, "{tag}, step {step} at {at}");
        }
        assert!(
            tier_rows(&store, &a).await.len() > 4,
            "{tag}: the walk moved the member: {:?}",
            tier_rows(&store, &a).await
        );
        assert_ledger_ok(&store).await;
    }
}

async fn a_points_metric_counts_what_was_earned_net_of_claw_backs(db: TestDb) {
    let mut s = base_settings();
    s.tiers = Some(TierConfig {
        metric: Metric::PointsEarned,
        tiers: vec![
            Tier {
                threshold: Threshold::Int(0),
                ..tier("Member", "0")
            },
            Tier {
                threshold: Threshold::Int(300),
                ..tier("Gold", "0")
            },
        ],
        ..spend_tiers(Downgrade::OneDown, 0, OnRefund::Immediate)
    });
    let store = setup(&db, &s).await;
    let m = member(&store, "points").await;
    give(&store, &s, &m, 5000, t0()).await;
    assert_eq!(
        tier_of(&store, &s, &m, t0()).await,
        None,
        "adjustments do not qualify"
    );
    buy(&store, &s, &m, "p1", "299.00", t0()).await;
    assert_eq!(
        tier_of(&store, &s, &m, t0()).await.as_deref(),
        Some("Member")
    );
    buy(&store, &s, &m, "p2", "1.00", t0()).await;
    assert_eq!(tier_of(&store, &s, &m, t0()).await.as_deref(), Some("Gold"));
    refund(&store, &s, "p2", "1.00", t0()).await;
    assert_eq!(
        tier_of(&store, &s, &m, t0()).await.as_deref(),
        Some("Member"),
        "claw-backs count"
    );
    assert_ledger_ok(&store).await;
}

async fn an_orders_metric_does_not_count_fully_refunded_orders(db: TestDb) {
    let mut o = base_settings();
    o.tiers = Some(TierConfig {
        metric: Metric::Orders,
        tiers: vec![Tier {
            threshold: Threshold::Int(2),
            ..tier("Regular", "0")
        }],
        ..spend_tiers(Downgrade::OneDown, 0, OnRefund::Immediate)
    });
    let store2 = setup(&db, &o).await;
    let n = member(&store2, "orders").await;
    buy(&store2, &o, &n, "q1", "5.00", t0()).await;
    assert_eq!(tier_of(&store2, &o, &n, t0()).await, None);
    buy(&store2, &o, &n, "q2", "5.00", t0()).await;
    assert_eq!(
        tier_of(&store2, &o, &n, t0()).await.as_deref(),
        Some("Regular")
    );
    refund(&store2, &o, "q2", "5.00", t0()).await;
    assert_eq!(
        tier_of(&store2, &o, &n, t0()).await,
        None,
        "a fully refunded order does not count"
    );
    assert_ledger_ok(&store2).await;
}

async fn a_tier_is_reviewed_at_its_boundary_and_not_a_second_before(db: TestDb) {
    let mut s = base_settings();
    s.tiers = Some(spend_tiers(Downgrade::OneDown, 0, OnRefund::AtReview));
    let store = setup(&db, &s).await;
    let m = member(&store, "c1").await;
    buy(&store, &s, &m, "o1", "2500.00", t0()).await;
    assert_eq!(
        tier_of(&store, &s, &m, t0()).await.as_deref(),
        Some("Platinum")
    );
    let review = t0() + chrono::Months::new(12);
    let r = store
        .run_jobs_for(T, us(review - Duration::seconds(1)))
        .await
        .expect("jobs");
    assert_eq!(r.tier_reviews, 0);
    assert_eq!(
        tier_of(&store, &s, &m, review).await.as_deref(),
        Some("Platinum"),
        "a second before"
    );
    let r = store.run_jobs_for(T, us(review)).await.expect("jobs");
    assert_eq!((r.tier_reviews, r.tier_moves), (1, 1));
    // The purchase is exactly twelve months old: out of the window; one tier down.
    let v = store
        .member_tier(T, &m, s.clone(), us(review))
        .await
        .expect("view");
    assert_eq!(v.tier.as_deref(), Some("Gold"), "at the review: one down");
    assert_eq!(v.since.as_deref(), Some("2027-03-10T12:00:00Z"));
    assert_eq!(v.secured_until.as_deref(), Some("2028-03-10T12:00:00Z"));
    let r = store
        .run_jobs_for(T, us(review + Duration::seconds(1)))
        .await
        .expect("jobs");
    assert_eq!(r.tier_reviews, 0, "reviewed once");
    assert_ledger_ok(&store).await;
}

async fn a_member_who_qualifies_again_keeps_the_tier_at_the_review(db: TestDb) {
    let mut s = base_settings();
    s.tiers = Some(spend_tiers(Downgrade::Recompute, 0, OnRefund::AtReview));
    let store = setup(&db, &s).await;
    let m = member(&store, "c1").await;
    buy(&store, &s, &m, "o1", "600.00", t0()).await;
    buy(
        &store,
        &s,
        &m,
        "o2",
        "550.00",
        t0() + chrono::Months::new(6),
    )
    .await;
    let review = t0() + chrono::Months::new(12);
    store.run_jobs_for(T, us(review)).await.expect("jobs");
    let v = store
        .member_tier(T, &m, s.clone(), us(review))
        .await
        .expect("view");
    assert_eq!(v.tier.as_deref(), Some("Gold"));
    assert_eq!(
        v.since.as_deref(),
        Some("2026-03-10T12:00:00Z"),
        "kept, not re-reached"
    );
    assert_eq!(v.secured_until.as_deref(), Some("2028-03-10T12:00:00Z"));
    assert_eq!(v.history[0].reason, "review_passed");
    assert_ledger_ok(&store).await;
}

async fn a_grace_period_delays_the_downgrade_and_a_purchase_in_grace_keeps_the_tier(db: TestDb) {
    let mut s = base_settings();
    s.tiers = Some(spend_tiers(Downgrade::Recompute, 30, OnRefund::AtReview));
    let store = setup(&db, &s).await;
    let keeps = member(&store, "keeps").await;
    let drops = member(&store, "drops").await;
    buy(&store, &s, &keeps, "k1", "600.00", t0()).await;
    buy(&store, &s, &drops, "d1", "600.00", t0()).await;
    let secured = t0() + chrono::Months::new(12);
    let due = secured + Duration::days(30);
    store
        .run_jobs_for(T, us(secured + Duration::days(1)))
        .await
        .expect("jobs");
    let v = store
        .member_tier(T, &drops, s.clone(), us(secured + Duration::days(1)))
        .await
        .expect("view");
    assert_eq!(v.tier.as_deref(), Some("Gold"), "kept during grace");
    assert!(v.in_grace);
    assert_eq!(v.review_at.as_deref(), Some("2027-04-09T12:00:00Z"));
    // In grace, `keeps` spends enough again: the tier is secured for another year.
    buy(
        &store,
        &s,
        &keeps,
        "k2",
        "500.00",
        secured + Duration::days(10),
    )
    .await;
    let v = store
        .member_tier(T, &keeps, s.clone(), us(secured + Duration::days(10)))
        .await
        .expect("view");
    assert_eq!(v.secured_until.as_deref(), Some("2028-03-10T12:00:00Z"));
    assert!(!v.in_grace);
    store
        .run_jobs_for(T, us(due - Duration::seconds(1)))
        .await
        .expect("jobs");
    assert_eq!(
        tier_of(&store, &s, &drops, due).await.as_deref(),
        Some("Gold"),
        "a second before the end of grace"
    );
    store.run_jobs_for(T, us(due)).await.expect("jobs");
    assert_eq!(
        tier_of(&store, &s, &drops, due).await.as_deref(),
        Some("Silver"),
        "recomputed at the end of grace"
    );
    assert_eq!(
        tier_of(&store, &s, &keeps, due).await.as_deref(),
        Some("Gold")
    );
    assert_ledger_ok(&store).await;
}

async fn a_calendar_year_review_measures_the_year_that_ended(db: TestDb) {
    let mut s = base_settings();
    s.tiers = Some(TierConfig {
        window: Window::CalendarYear,
        review: Review::Yearly { month: 1, day: 1 },
        ..spend_tiers(Downgrade::OneDown, 0, OnRefund::AtReview)
    });
    let store = setup(&db, &s).await;
    let steady = member(&store, "steady").await;
    let lapsed = member(&store, "lapsed").await;
    buy(&store, &s, &steady, "s1", "600.00", t0()).await;
    buy(&store, &s, &lapsed, "l1", "600.00", t0()).await;
    let jan1 = fidelis_core::time::parse("2027-01-01T00:00:00Z").expect("valid");
    assert_eq!(
        store
            .member_tier(T, &steady, s.clone(), us(t0()))
            .await
            .expect("view")
            .secured_until
            .as_deref(),
        Some("2027-01-01T00:00:00Z")
    );
    store.run_jobs_for(T, us(jan1)).await.expect("jobs");
    assert_eq!(
        tier_of(&store, &s, &steady, jan1).await.as_deref(),
        Some("Gold"),
        "2026 qualifies for 2027"
    );
    buy(
        &store,
        &s,
        &steady,
        "s2",
        "700.00",
        jan1 + chrono::Months::new(5),
    )
    .await;
    let jan2 = fidelis_core::time::parse("2028-01-01T00:00:00Z").expect("valid");
    store.run_jobs_for(T, us(jan2)).await.expect("jobs");
    assert_eq!(
        tier_of(&store, &s, &steady, jan2).await.as_deref(),
        Some("Gold")
    );
    assert_eq!(
        tier_of(&store, &s, &lapsed, jan2).await.as_deref(),
        Some("Silver"),
        "nothing in 2027"
    );
    assert_ledger_ok(&store).await;
}

async fn a_refund_below_the_threshold_keeps_the_tier_until_the_review_by_default(db: TestDb) {
    let mut s = base_settings();
    s.tiers = Some(spend_tiers(Downgrade::Recompute, 0, OnRefund::AtReview));
    let store = setup(&db, &s).await;
    let m = member(&store, "c1").await;
    buy(&store, &s, &m, "o1", "600.00", t0()).await;
    let later = t0() + Duration::days(5);
    refund(&store, &s, "o1", "200.00", later).await;
    let v = store
        .member_tier(T, &m, s.clone(), us(later))
        .await
        .expect("view");
    assert_eq!(v.tier.as_deref(), Some("Gold"), "kept until the review");
    assert_eq!(v.to_keep, Some(serde_json::json!("100.00")));
    let review = t0() + chrono::Months::new(12);
    store
        .run_jobs_for(T, us(review - Duration::days(1)))
        .await
        .expect("jobs");
    assert_eq!(
        tier_of(&store, &s, &m, review).await.as_deref(),
        Some("Gold")
    );
    store.run_jobs_for(T, us(review)).await.expect("jobs");
    assert_eq!(
        tier_of(&store, &s, &m, review).await.as_deref(),
        Some("Silver")
    );
    assert_ledger_ok(&store).await;
}

async fn a_refund_below_the_threshold_downgrades_at_once_under_the_immediate_policy(db: TestDb) {
    let mut s = base_settings();
    s.tiers = Some(spend_tiers(Downgrade::OneDown, 0, OnRefund::Immediate));
    let store = setup(&db, &s).await;
    let m = member(&store, "c1").await;
    buy(&store, &s, &m, "o1", "2100.00", t0()).await;
    assert_eq!(
        tier_of(&store, &s, &m, t0()).await.as_deref(),
        Some("Platinum")
    );
    let later = t0() + Duration::days(5);
    refund(&store, &s, "o1", "50.00", later).await;
    assert_eq!(
        tier_of(&store, &s, &m, later).await.as_deref(),
        Some("Platinum"),
        "2050.00 still reaches Platinum"
    );
    refund(&store, &s, "o1", "100.00", later).await;
    let v = store
        .member_tier(T, &m, s.clone(), us(later))
        .await
        .expect("view");
    assert_eq!(
        v.tier.as_deref(),
        Some("Gold"),
        "1950.00: straight to the tier it reaches"
    );
    assert_eq!(v.history[0].reason, "refund");
    assert_eq!(v.since.as_deref(), Some("2026-03-15T12:00:00Z"));
    assert_ledger_ok(&store).await;
}

// ---------------------------------------------------------------------------------------------
// Store credit, transfers, donations
// ---------------------------------------------------------------------------------------------

async fn cashback_is_credited_spent_within_the_balance_and_clawed_back_on_refund(db: TestDb) {
    let mut s = base_settings();
    s.credit = CreditSettings {
        cashback_percent: "2".into(),
    };
    let store = setup(&db, &s).await;
    let m = member(&store, "c1").await;
    buy(&store, &s, &m, "o1", "100.00", t0()).await;
    let v = store
        .member_credit(T, &m, s.clone(), None, 50)
        .await
        .expect("credit");
    assert_eq!(v.balance_minor, 200);
    assert_eq!(
        available(&store, &s, &m).await,
        100,
        "points are apart from credit"
    );
    store
        .spend_credit(
            T,
            &m,
            150,
            Some("o2".into()),
            "key:till",
            s.clone(),
            None,
            us(t0()),
        )
        .await
        .expect("spent");
    let over = store
        .spend_credit(
            T,
            &m,
            51,
            Some("o3".into()),
            "key:till",
            s.clone(),
            None,
            us(t0()),
        )
        .await;
    match over {
        Err(StoreError::Conflict(reason)) => {
            assert!(
                reason.contains("not enough store credit: 0.50 EUR available, 0.51 EUR needed"),
                "{reason}"
            )
        }
        other => panic!("spending more than the balance must be refused, got {other:?}"),
    }
    // Half the order comes back: half the cashback (1.00) is taken back; the balance
    // (0.50) goes negative under `allow_negative`, and the next cashback repays it.
    refund(&store, &s, "o1", "50.00", t0() + Duration::days(1)).await;
    let v = store
        .member_credit(T, &m, s.clone(), None, 50)
        .await
        .expect("credit");
    assert_eq!(v.balance_minor, -50);
    buy(&store, &s, &m, "o4", "10.00", t0() + Duration::days(2)).await;
    let v = store
        .member_credit(T, &m, s.clone(), None, 50)
        .await
        .expect("credit");
    assert_eq!(v.balance_minor, -30);
    assert_eq!(v.movements.items[0].kind, "cashback");
    let totals = store.program_totals(T, s.clone()).await.expect("totals");
    assert_eq!(totals.credit_outstanding_minor, -30);
    assert_eq!(totals.credit_spent_minor, 150);
    assert_ledger_ok(&store).await;
}

async fn transfers_move_points_within_the_programmes_limits_and_keep_their_expiry(db: TestDb) {
    let mut s = base_settings();
    let store = setup(&db, &s).await;
    let a = member(&store, "a").await;
    let b = member(&store, "b").await;
    give(&store, &s, &a, 1000, t0()).await;
    let send = |points: i64, at: DateTime<Utc>, s: ProgramSettings| {
        let (store, a, b) = (store.clone(), a.clone(), b.clone());
        async move {
            store
                .transfer_points(T, &a, &b, points, "family pot", "key:app", s, None, us(at))
                .await
        }
    };
    let off = send(10, t0(), s.clone()).await;
    assert!(
        matches!(off, Err(StoreError::Unprocessable(ref r)) if r.contains("not enabled")),
        "{off:?}"
    );
    s.transfers = TransferSettings {
        enabled: true,
        max_points_per_transfer: 300,
        max_points_per_month: 500,
    };
    let (out, _) = send(300, t0(), s.clone()).await.expect("within limits");
    assert_eq!(
        (out.from_balance.available, out.to_balance.available),
        (700, 300)
    );
    let too_big = send(301, t0(), s.clone()).await;
    assert!(
        matches!(too_big, Err(StoreError::Unprocessable(ref r)) if r.contains("per transfer")),
        "{too_big:?}"
    );
    send(200, t0(), s.clone())
        .await
        .expect("up to the monthly limit");
    let over_month = send(1, t0(), s.clone()).await;
    assert!(
        matches!(over_month, Err(StoreError::Unprocessable(ref r)) if r.contains("per month")),
        "{over_month:?}"
    );
    let next_month = fidelis_core::time::parse("2026-04-01T00:00:00Z").expect("valid");
    send(100, next_month, s.clone()).await.expect("a new month");
    assert_eq!(available(&store, &s, &a).await, 400);
    assert_eq!(available(&store, &s, &b).await, 600);
    // Received points expire when the sender's would have.
    let bb = store.balance(T, &b, s.clone()).await.expect("balance");
    assert_eq!(
        bb.expiring
            .iter()
            .map(|e| e.expires_at.as_str())
            .collect::<Vec<_>>(),
        vec!["2027-03-10T12:00:00Z"]
    );
    let to_self = store
        .transfer_points(
            T,
            &a,
            &a,
            1,
            "me",
            "key:app",
            s.clone(),
            None,
            us(next_month),
        )
        .await;
    assert!(matches!(to_self, Err(StoreError::Unprocessable(_))));
    let totals = store.program_totals(T, s.clone()).await.expect("totals");
    assert_eq!(totals.in_transfer, 0);
    assert_eq!(totals.outstanding, 1000);
    assert_ledger_ok(&store).await;
}

async fn donations_show_in_the_programme_totals(db: TestDb) {
    let s = base_settings();
    let store = setup(&db, &s).await;
    let a = member(&store, "a").await;
    give(&store, &s, &a, 1000, t0()).await;
    let (first, _) = store
        .donate_points(T, &a, 150, "Red Cross", "key:app", None, us(t0()))
        .await
        .expect("donated");
    assert_eq!(
        first.balance.available,
        available(&store, &s, &a).await,
        "the answered balance is the stored one"
    );
    assert_eq!(first.balance.available, 850);
    store
        .donate_points(T, &a, 50, "Food Bank", "key:app", None, us(t0()))
        .await
        .expect("donated");
    let r = add_reward(&store, &s, reward(RewardKind::CharityDonation, 100, None)).await;
    let (out, _) = store
        .redeem_reward(T, &a, &r, s.clone(), None, us(t0()))
        .await
        .expect("a charity reward");
    assert_eq!(out.coupon.status, "redeemed", "nothing to use at the till");
    let over = store
        .donate_points(T, &a, 10_000, "Red Cross", "key:app", None, us(t0()))
        .await;
    assert!(matches!(over, Err(StoreError::Conflict(_))));
    let t = store.program_totals(T, s.clone()).await.expect("totals");
    assert_eq!(
        (t.donated, t.redeemed, t.adjusted, t.outstanding),
        (300, 0, 1000, 700)
    );
    let by: Vec<(String, i64)> = t
        .donations_by_charity
        .iter()
        .map(|c| (c.charity.clone(), c.points))
        .collect();
    assert_eq!(
        by,
        vec![
            ("Food Bank".to_string(), 50),
            ("Red Cross".to_string(), 250)
        ]
    );
    assert_ledger_ok(&store).await;
}

// ---------------------------------------------------------------------------------------------
// Paid membership
// ---------------------------------------------------------------------------------------------

async fn plan_perks_apply_only_while_the_subscription_is_active(db: TestDb) {
    let s = base_settings();
    let store = setup(&db, &s).await;
    let m = member(&store, "c1").await;
    let shipping = add_reward(&store, &s, reward(RewardKind::FreeShipping, 0, None)).await;
    let plan = PlanInput {
        name: "Plus".into(),
        price: "4.99".into(),
        period_months: 1,
        earn_multiplier: Some("2".into()),
        monthly_reward_id: Some(shipping),
        perks: vec!["free returns".into()],
        active: true,
    }
    .validate(s.currency)
    .expect("valid plan");
    let (plan, _) = store
        .put_plan(T, None, plan, None, us(t0()))
        .await
        .expect("plan");
    let end = t0() + chrono::Months::new(1);
    let (sub, _) = store
        .subscription_event(
            T,
            &m,
            &plan.id,
            SubscriptionEvent::Subscribe,
            Some(us(end)),
            "key:billing",
            None,
            us(t0()),
        )
        .await
        .expect("subscribed");
    assert!(sub.perks_active);
    let facts = store
        .member_facts(T, &MemberKey::Id(m.clone()))
        .await
        .expect("facts")
        .expect("member");
    let active = facts.plan.expect("earning sees the plan");
    assert!(active.active_at(t0()));
    assert!(!active.active_at(end), "not after the paid period");
    // The monthly perk: once per member per month, however often the jobs run.
    let r = store.run_jobs_for(T, us(t0())).await.expect("jobs");
    assert_eq!(r.perk_coupons, 1);
    let r = store
        .run_jobs_for(T, us(t0() + Duration::days(5)))
        .await
        .expect("jobs");
    assert_eq!(r.perk_coupons, 0, "already issued this month");
    let april = fidelis_core::time::parse("2026-04-02T00:00:00Z").expect("valid");
    let r = store.run_jobs_for(T, us(april)).await.expect("jobs");
    assert_eq!(r.perk_coupons, 1, "a new month");
    let coupons = store
        .member_coupons(T, &m, None, 50)
        .await
        .expect("coupons");
    assert_eq!(coupons.items.len(), 2);
    assert!(
        coupons
            .items
            .iter()
            .all(|c| c.source == format!("plan:{}", plan.id) && c.points == 0)
    );
    // Past the paid period, no perk; renewing brings it back.
    let may = fidelis_core::time::parse("2026-05-02T00:00:00Z").expect("valid");
    let r = store.run_jobs_for(T, us(may)).await.expect("jobs");
    assert_eq!(r.perk_coupons, 0, "the period ended without renewal");
    let renew = store
        .subscription_event(
            T,
            &m,
            &plan.id,
            SubscriptionEvent::Renew,
            Some(us(may + chrono::Months::new(1))),
            "key:billing",
            None,
            us(may),
        )
        .await;
    assert!(renew.is_ok(), "{renew:?}");
    let r = store.run_jobs_for(T, us(may)).await.expect("jobs");
    assert_eq!(r.perk_coupons, 1);
    let (sub, _) = store
        .subscription_event(
            T,
            &m,
            &plan.id,
            SubscriptionEvent::Cancel,
            None,
            "key:billing",
            None,
            us(may),
        )
        .await
        .expect("cancelled");
    assert!(!sub.perks_active);
    let facts = store
        .member_facts(T, &MemberKey::Id(m.clone()))
        .await
        .expect("facts")
        .expect("member");
    assert!(
        facts.plan.is_none(),
        "a cancelled plan gives earning nothing"
    );
    let lapse = store
        .subscription_event(
            T,
            &m,
            &plan.id,
            SubscriptionEvent::Lapse,
            None,
            "key:billing",
            None,
            us(may),
        )
        .await;
    assert!(matches!(lapse, Err(StoreError::Conflict(_))), "{lapse:?}");
    let june = fidelis_core::time::parse("2026-06-02T00:00:00Z").expect("valid");
    let r = store.run_jobs_for(T, us(june)).await.expect("jobs");
    assert_eq!(r.perk_coupons, 0);
    assert_ledger_ok(&store).await;
}

on_both!(
    a_spend_ladder_set_after_purchases_measures_them,
    the_history_is_put_back_a_chunk_per_transaction,
    a_spend_ladder_set_during_purchases_misses_none,
    a_redemption_answers_the_coupon_and_balance_as_stored,
    an_adjustment_answers_the_stored_balance_and_is_the_members_activity,
    a_refused_redemption_does_not_send_its_batch_round_again,
    a_deferred_statement_that_fails_refuses_its_own_request_alone,
    reads_sent_together_answer_in_order,
    a_purchase_refused_before_writing_does_not_send_its_batch_round_again,
    a_hundred_concurrent_redemptions_by_a_member_whose_balance_covers_ten_give_exactly_ten,
    a_reward_with_stock_five_redeemed_by_fifty_members_at_once_gives_exactly_five_coupons,
    a_coupon_redeemed_twice_is_refused_and_a_retry_with_its_key_replays_the_first_answer,
    coupon_validation_gives_the_reason_a_coupon_is_refused,
    cancelling_an_unused_coupon_returns_its_points_with_their_expiry_and_its_stock,
    per_member_limits_and_validity_dates_bound_redemptions,
    the_cancel_policy_may_keep_the_points_or_give_them_a_fresh_expiry,
    a_points_metric_counts_what_was_earned_net_of_claw_backs,
    an_orders_metric_does_not_count_fully_refunded_orders,
    a_purchase_that_reaches_a_threshold_upgrades_at_once,
    a_refund_leaving_the_window_is_not_missed_by_the_tier_bound,
    a_tier_decided_on_the_bound_is_the_tier_measured_every_time,
    a_tier_is_reviewed_at_its_boundary_and_not_a_second_before,
    a_member_who_qualifies_again_keeps_the_tier_at_the_review,
    a_grace_period_delays_the_downgrade_and_a_purchase_in_grace_keeps_the_tier,
    a_calendar_year_review_measures_the_year_that_ended,
    a_refund_below_the_threshold_keeps_the_tier_until_the_review_by_default,
    a_refund_below_the_threshold_downgrades_at_once_under_the_immediate_policy,
    cashback_is_credited_spent_within_the_balance_and_clawed_back_on_refund,
    transfers_move_points_within_the_programmes_limits_and_keep_their_expiry,
    donations_show_in_the_programme_totals,
    plan_perks_apply_only_while_the_subscription_is_active,
);
