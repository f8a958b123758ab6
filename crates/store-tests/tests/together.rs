//! Purchases posted together (several per multi-row statement) must leave exactly the rows
//! the one-by-one path leaves. The same purchases go to two tenants: to one all at once, so
//! the writer finds them in one batch, to the other one at a time through a store that never
//! posts together (`events::purchase`); then every ledger row, member row, stored answer, kept
//! idempotency key and rule counter is compared, member by member.

use chrono::{DateTime, Duration, Utc};
use fidelis_core::ProgramSettings;
use fidelis_core::earn::{
    Award, AwardLimit, AwardTerms, BaseEarner, EarnContext, Earner, MemberFacts, Trigger,
};
use fidelis_core::event::{Channel, LineInput, MemberRef, PurchaseInput, RefundInput};
use fidelis_core::program::{ExpiryPolicy, RefundPolicy};
use fidelis_core::tiers::{
    Downgrade, Metric, OnRefund, Review, Threshold, Tier, TierConfig, Window,
};
use fidelis_store::model::MemberFields;
use fidelis_store::{IdemKey, Store, StoreOptions, Value};
use fidelis_store_tests::{TestDb, on_both};
use std::sync::atomic::Ordering;

fn t0() -> DateTime<Utc> {
    fidelis_core::time::parse("2026-03-10T12:00:00Z").expect("valid time")
}

fn input(key: MemberRef, order: &str, cents: i64, at: DateTime<Utc>) -> PurchaseInput {
    PurchaseInput {
        member: key,
        order_id: order.into(),
        occurred_at: Some(fidelis_core::time::format(at)),
        channel: Channel::Web,
        store_id: None,
        currency: "EUR".into(),
        total: format!("{}.{:02}", cents / 100, cents % 100),
        lines: vec![LineInput {
            sku: format!("sku-{}", cents % 7),
            category: Some("shoes".into()),
            quantity: 1,
            unit_price: format!("{}.{:02}", cents / 100, cents % 100),
        }],
    }
}

/// The purchases of the scenario: 24 members, some twice, one order id sent twice, keys by
/// id and by external id, one unknown member (enrolled by the purchase); some with an
/// idempotency key (`post`).
fn purchases(ids: &[String]) -> Vec<PurchaseInput> {
    let mut out = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let key = if i % 3 == 0 {
            MemberRef {
                id: None,
                external_id: Some(format!("c{i}")),
            }
        } else {
            MemberRef {
                id: Some(id.clone()),
                external_id: None,
            }
        };
        let at = t0() + Duration::minutes(i as i64);
        out.push(input(
            key.clone(),
            &format!("o{i}"),
            1_000 + 137 * i as i64,
            at,
        ));
        if i % 5 == 0 {
            out.push(input(key, &format!("o{i}-b"), 250 + i as i64, at));
        }
    }
    let again = out[3].clone();
    out.push(again);
    out.push(input(
        MemberRef {
            id: None,
            external_id: Some("newcomer".into()),
        },
        "o-new",
        4_200,
        t0(),
    ));
    out
}

async fn tenant(store: &Store, t: &str, s: &ProgramSettings) -> Vec<String> {
    store.ensure_tenant(t, t, s, 0).await.expect("tenant");
    let mut ids = Vec::new();
    for i in 0..24 {
        let f = MemberFields {
            external_id: Some(format!("c{i}")),
            ..Default::default()
        };
        ids.push(
            store
                .create_member(t, f, None, 0)
                .await
                .expect("member")
                .0
                .id,
        );
    }
    // Some members hold points already (one lot more for later debits to choose from).
    for id in ids.iter().step_by(4) {
        store
            .adjust(t, id, 30, "welcome", "test", s.clone(), None, 0)
            .await
            .expect("welcome points");
    }
    ids
}

async fn post(store: &Store, t: &str, s: &ProgramSettings, p: PurchaseInput) -> String {
    let at = t0();
    let p = p.validate(s, at).expect("valid");
    let mut awards = BaseEarner.awards(&EarnContext {
        program: s,
        event: Trigger::Purchase(&p),
        member: &MemberFacts::default(),
        now: at,
    });
    // A member's first order (not the `-b` ones) also earns a rule's bonus of 3 points,
    // capped at 2 per member and day: settled, and cut, under the counter's lock.
    if !p.order_id.ends_with("-b") {
        awards.push(Award {
            source: "rule:capped".into(),
            rule_version: Some(1),
            points: 3,
            description: "capped bonus".into(),
            campaign: None,
            capped_from: None,
            terms: Some(Box::new(AwardTerms {
                limits: std::sync::Arc::from(vec![AwardLimit {
                    counter: "rule:capped".into(),
                    per_member: true,
                    period: "d:2026-03-10".into(),
                    max: 2,
                    label: "rule per member per day",
                }]),
                nth_order: None,
                basis: None,
            })),
        });
    }
    // Every order earns 1 point from a campaign's budget shared by all members (never used
    // up here, so which purchase comes first does not matter: the counter must hold one per
    // order, the adds of a whole group included). Members who buy once are offered a
    // second-order bonus their only order cannot have: its counter must be left without a row,
    // as the one-by-one path, which never reaches it, leaves it.
    let limit = |counter: &str, per_member: bool, period: &str, max: i64| AwardLimit {
        counter: counter.into(),
        per_member,
        period: period.into(),
        max,
        label: "test limit",
    };
    awards.push(Award {
        source: "campaign:budget".into(),
        rule_version: Some(1),
        points: 1,
        description: "budgeted bonus".into(),
        campaign: None,
        capped_from: None,
        terms: Some(Box::new(AwardTerms {
            limits: std::sync::Arc::from(vec![limit("campaign:budget", false, "budget", 1_000)]),
            nth_order: None,
            basis: None,
        })),
    });
    let buys_once = p
        .order_id
        .strip_prefix('o')
        .and_then(|i| i.parse::<usize>().ok())
        .is_some_and(|i| i % 5 != 0);
    awards.extend(buys_once.then(|| Award {
        source: "rule:second".into(),
        rule_version: Some(1),
        points: 4,
        description: "second order bonus".into(),
        campaign: None,
        capped_from: None,
        terms: Some(Box::new(AwardTerms {
            limits: std::sync::Arc::from(vec![limit("rule:second", true, "life", 100)]),
            nth_order: Some((2, false)),
            basis: None,
        })),
    }));
    // Orders whose number starts with an odd digit come with an idempotency key (the resent
    // one, o3, with the same key and request: it replays).
    let keyed = p
        .order_id
        .trim_start_matches('o')
        .starts_with(['1', '3', '5', '7', '9']);
    let key = keyed.then(|| IdemKey {
        key: format!("k-{}", p.order_id),
        request_hash: format!("{}/{}", p.order_id, p.total.minor),
    });
    let (mut o, _) = store
        .purchase(t, p, awards, s.clone(), key, at.timestamp_micros())
        .await
        .expect("purchase");
    // Ids and whether a resend came first differ between the two runs by design.
    o.event_id = 0;
    o.member_id = String::new();
    o.duplicate = false;
    serde_json::to_string(&o).expect("json")
}

/// Spend over 12 rolling months: every member reaches Silver with a first purchase, those
/// spending 38.00 at once (i from 21 on) Gold at once, c20 Gold with its second purchase
/// whichever runs first, and other second purchases stay on the bound: each of the tier
/// step's ways is taken (measured, stayed without measuring, moved).
fn ladder() -> TierConfig {
    let tier = |name: &str, threshold: &str| Tier {
        name: name.into(),
        threshold: Threshold::Text(threshold.into()),
        earn_multiplier: "1".into(),
        perks: vec![],
    };
    TierConfig {
        metric: Metric::Spend,
        window: Window::Rolling { months: 12 },
        review: Review::Anniversary { months: 12 },
        downgrade: Downgrade::OneDown,
        grace_days: 0,
        on_refund: OnRefund::AtReview,
        tiers: vec![tier("Silver", "0"), tier("Gold", "38.00")],
    }
}

/// Holds the store's writer for `ms` milliseconds, once it has started to: what is sent
/// meanwhile queues, and the writer finds it in one batch. Await the handle after sending.
async fn hold_writer(
    store: &Store,
    ms: u64,
) -> tokio::task::JoinHandle<fidelis_store::error::Result<()>> {
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let blocker = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .write("", move |_| {
                    let _ = started_tx.send(());
                    std::thread::sleep(std::time::Duration::from_millis(ms));
                    Ok(())
                })
                .await
        })
    };
    tokio::task::spawn_blocking(move || started_rx.recv())
        .await
        .expect("task")
        .expect("the writer took the blocker");
    blocker
}

/// Every row a purchase leaves, with member ids replaced by external ids and row ids left out.
async fn rows(store: &Store, t: &str) -> Vec<String> {
    let t = t.to_string();
    let queries = [
        "SELECT 'member', m.external_id, m.available, m.pending, m.lifetime_earned, m.order_count, m.lifetime_spend_minor, m.last_activity_at, CASE WHEN COALESCE(m.open_lots_from, -1) = COALESCE((SELECT MIN(l.txn_id) FROM lots l WHERE l.tenant_id = m.tenant_id AND l.member_id = m.id AND l.remaining > 0), -1) THEN 'mark exact' ELSE 'mark off' END, m.tier, m.tier_since, m.tier_secured_until, m.purchased_minor, m.tier_floor, m.tier_floor_of FROM members m WHERE m.tenant_id = $1",
        // The metric a move saw depends on which of a member's two purchases ran first.
        "SELECT 'tier', m.external_id, x.from_tier, x.to_tier, x.reason, CASE WHEN m.order_count > 1 THEN -1 ELSE x.metric_value END, x.secured_until, x.effective_at FROM tier_history x JOIN members m ON m.tenant_id = x.tenant_id AND m.id = x.member_id WHERE x.tenant_id = $1",
        "SELECT 'txn', m.external_id, x.kind, x.reason, x.order_id, x.created_at FROM txns x JOIN members m ON m.tenant_id = x.tenant_id AND m.id = x.member_id WHERE x.tenant_id = $1",
        "SELECT 'entry', m.external_id, x.account, x.amount, CASE WHEN x.lot_id IS NULL THEN 0 ELSE 1 END FROM entries x JOIN members m ON m.tenant_id = x.tenant_id AND m.id = x.member_id WHERE x.tenant_id = $1",
        "SELECT 'lot', m.external_id, x.order_id, x.state, x.amount, x.remaining, x.earned_at, x.matures_at, x.expires_at FROM lots x JOIN members m ON m.tenant_id = x.tenant_id AND m.id = x.member_id WHERE x.tenant_id = $1",
        "SELECT 'event', m.external_id, x.kind, x.order_id, x.occurred_at, x.channel, x.amount_minor, x.currency, x.payload FROM events x JOIN members m ON m.tenant_id = x.tenant_id AND m.id = x.member_id WHERE x.tenant_id = $1",
        "SELECT 'award', m.external_id, x.order_id, x.source, x.points, x.basis, x.basis_total FROM awards x JOIN members m ON m.tenant_id = x.tenant_id AND m.id = x.member_id WHERE x.tenant_id = $1",
        "SELECT 'order', m.external_id, x.order_id, x.total_minor, x.lines, x.awarded, x.refunded_minor, CASE WHEN x.event_id IS NULL THEN 0 ELSE 1 END FROM orders x JOIN members m ON m.tenant_id = x.tenant_id AND m.id = x.member_id WHERE x.tenant_id = $1",
        "SELECT 'counter', x.counter, m.external_id, x.period, x.points FROM rule_counters x JOIN members m ON m.tenant_id = x.tenant_id AND m.id = x.member_id WHERE x.tenant_id = $1",
        "SELECT 'budget', x.counter, x.period, x.points FROM rule_counters x WHERE x.tenant_id = $1 AND x.member_id = ''",
        "SELECT 'key', x.key, x.request_hash, x.created_at, CASE WHEN x.response = o.result THEN 'the order''s answer' ELSE 'another answer' END FROM idempotency x LEFT JOIN orders o ON o.tenant_id = x.tenant_id AND 'k-' || o.order_id = x.key WHERE x.tenant_id = $1",
    ];
    let mut out = store
        .read(move |c| {
            let mut out = Vec::new();
            for q in queries {
                for r in c.query(q, &[t.as_str().into()])? {
                    let cells: Vec<String> =
                        r.0.iter()
                            .map(|v| match v {
                                Value::Null => "∅".to_string(),
                                Value::Int(i) => i.to_string(),
                                Value::Text(s) => s.clone(),
                            })
                            .collect();
                    out.push(cells.join("|"));
                }
            }
            Ok(out)
        })
        .await
        .expect("rows");
    out.sort();
    out
}

async fn posted_together_leave_the_rows_of_one_by_one(db: TestDb) {
    for pending_days in [0, 14] {
        let s = ProgramSettings {
            pending_days,
            expiry: ExpiryPolicy::AfterEarning { months: 12 },
            refund_policy: RefundPolicy::AllowNegative,
            auto_enroll: true,
            tiers: Some(ladder()),
            ..ProgramSettings::default()
        };
        // Posting together is PostgreSQL's default; it must hold on SQLite too.
        let opts = StoreOptions {
            post_together: true,
            together_from: 1,
            ..StoreOptions::for_dialect(fidelis_store_tests::backend(&db.url).dialect())
        };
        let store = db.store_with(opts, 0);
        let (a, b) = (format!("all{pending_days}"), format!("one{pending_days}"));
        let ids_a = tenant(&store, &a, &s).await;
        let ids_b = tenant(&store, &b, &s).await;
        let before = store.metrics().posted_together.load(Ordering::Relaxed);
        // All at once: the writer finds many of them in one batch.
        let mut set = tokio::task::JoinSet::new();
        for (k, p) in purchases(&ids_a).into_iter().enumerate() {
            let (store, a, s) = (store.clone(), a.clone(), s.clone());
            set.spawn(async move { (k, post(&store, &a, &s, p).await) });
        }
        let mut answers_a = vec![String::new(); set.len()];
        while let Some(r) = set.join_next().await {
            let (k, answer) = r.expect("task");
            answers_a[k] = answer;
        }
        let together = store.metrics().posted_together.load(Ordering::Relaxed) - before;
        assert!(together > 1, "no purchase was posted together ({together})");
        // One at a time, through a store that never posts together: each purchase takes
        // `events::purchase`, the reference the grouped rows must match.
        let alone = db.store_with(
            StoreOptions {
                post_together: false,
                ..StoreOptions::for_dialect(fidelis_store_tests::backend(&db.url).dialect())
            },
            0,
        );
        let mut answers_b = Vec::new();
        for p in purchases(&ids_b) {
            answers_b.push(post(&alone, &b, &s, p).await);
        }
        assert_eq!(
            alone.metrics().posted_together.load(Ordering::Relaxed),
            0,
            "the reference posted nothing together"
        );
        // Balances in answers depend on the order purchases of one member ran; the rows must
        // not. Members buying once answer the same either way.
        assert_eq!(answers_a.len(), answers_b.len());
        let rows_a = rows(&store, &a).await;
        assert_eq!(rows_a, rows(&store, &b).await);
        let capped: Vec<&String> = rows_a
            .iter()
            .filter(|r| r.starts_with("award|") && r.contains("|rule:capped|"))
            .collect();
        assert!(
            !capped.is_empty() && capped.iter().all(|r| r.contains("|rule:capped|2|")),
            "the bonus is cut to its cap: {capped:?}"
        );
        let budget: Vec<&String> = rows_a.iter().filter(|r| r.starts_with("budget|")).collect();
        assert_eq!(budget.len(), 1, "one budget counter: {budget:?}");
        let second: Vec<&String> = rows_a
            .iter()
            .filter(|r| r.starts_with("counter|rule:second|"))
            .collect();
        assert!(second.is_empty(), "no second order, no counter: {second:?}");
        let keys: Vec<&String> = rows_a.iter().filter(|r| r.starts_with("key|")).collect();
        assert_eq!(keys.len(), 18, "{keys:?}");
        assert!(
            keys.iter().all(|r| r.ends_with("|the order's answer")),
            "a key keeps its purchase's answer: {keys:?}"
        );
        // A refund of an order posted together claws back like any other.
        for t in [&a, &b] {
            let r = RefundInput {
                order_id: "o7".into(),
                refund_id: Some("r1".into()),
                amount: Some("5.00".into()),
                lines: None,
                occurred_at: None,
            }
            .validate(&s, t0())
            .expect("refund");
            store
                .refund(t, r, s.clone(), None, t0().timestamp_micros())
                .await
                .expect("refund");
        }
        assert_eq!(rows(&store, &a).await, rows(&store, &b).await);
        let report = store.verify().await.expect("verify");
        assert!(report.ok(), "{report:?}");
    }
}

/// A budget shared by all members, smaller than what a group of purchases asks of it: each
/// purchase of the group must see what the ones before it took (the grouped write settles
/// them in memory against the counter it locked once), so exactly the budget is given.
async fn a_budget_shared_by_a_group_is_never_overspent(db: TestDb) {
    let (store, s) = budget_store(&db, true);
    let ids = tenant(&store, "budget", &s).await;
    let before = store.metrics().posted_together.load(Ordering::Relaxed);
    let mut set = tokio::task::JoinSet::new();
    for (i, id) in ids.iter().enumerate() {
        let member = MemberRef {
            id: Some(id.clone()),
            external_id: None,
        };
        let p = input(member, &format!("b{i}"), 2_000, t0())
            .validate(&s, t0())
            .expect("valid");
        let mut awards = BaseEarner.awards(&EarnContext {
            program: &s,
            event: Trigger::Purchase(&p),
            member: &MemberFacts::default(),
            now: t0(),
        });
        awards.push(budget_award("launch", 40));
        let (store, s) = (store.clone(), s.clone());
        set.spawn(async move {
            store
                .purchase("budget", p, awards, s, None, t0().timestamp_micros())
                .await
                .expect("purchase")
        });
    }
    while let Some(r) = set.join_next().await {
        r.expect("task");
    }
    let together = store.metrics().posted_together.load(Ordering::Relaxed) - before;
    assert!(together > 1, "no purchase was posted together ({together})");
    let (given, counter) = store
        .read(|c| {
            let given = c
                .query_one(
                    "SELECT CAST(COALESCE(SUM(points), 0) AS BIGINT) FROM awards WHERE tenant_id = 'budget' AND source = 'campaign:launch'",
                    &[],
                )?
                .map_or(-1, |r| r.int(0));
            let counter = c
                .query_one(
                    "SELECT points FROM rule_counters WHERE tenant_id = 'budget' AND counter = 'campaign:launch'",
                    &[],
                )?
                .map_or(-1, |r| r.int(0));
            Ok((given, counter))
        })
        .await
        .expect("totals");
    // 24 purchases ask 3 points each (72) of a budget of 40: 13 get 3, one gets 1.
    assert_eq!((given, counter), (40, 40));
    let report = store.verify().await.expect("verify");
    assert!(report.ok(), "{report:?}");
}

/// A member's purchases that meet in one batch are posted together, a round each (the first
/// of every member, then the second...; a member's fifth and later run alone), and leave the
/// rows the one-by-one path leaves. The writer is held while they queue, so they meet.
async fn a_members_purchases_in_one_batch_are_posted_together_in_rounds(db: TestDb) {
    let s = ProgramSettings {
        pending_days: 0,
        expiry: ExpiryPolicy::AfterEarning { months: 12 },
        tiers: Some(ladder()),
        ..ProgramSettings::default()
    };
    let opts = StoreOptions {
        post_together: true,
        together_from: 1,
        writers: 1,
        ..StoreOptions::for_dialect(db.kind_dialect())
    };
    let store = db.store_with(opts, 0);
    let (a, b) = ("rounds", "alone");
    let ids_a = tenant(&store, a, &s).await;
    let ids_b = tenant(&store, b, &s).await;
    // Member 0 buys six times, members 1 to 5 three times. Orders ending in `-b` earn what
    // does not depend on which of a member's orders is posted first.
    let orders = |ids: &[String]| {
        let mut out = Vec::new();
        for (m, id) in ids.iter().take(6).enumerate() {
            for k in 0..if m == 0 { 6 } else { 3 } {
                let key = MemberRef {
                    id: Some(id.clone()),
                    external_id: None,
                };
                let at = t0() + Duration::minutes(k);
                out.push(input(
                    key,
                    &format!("o{m}x{k}-b"),
                    1_000 + 100 * k + m as i64,
                    at,
                ));
            }
        }
        out
    };
    let blocker = hold_writer(&store, 400).await;
    let before = store.metrics().posted_together.load(Ordering::Relaxed);
    let mut set = tokio::task::JoinSet::new();
    for p in orders(&ids_a) {
        let (store, s) = (store.clone(), s.clone());
        set.spawn(async move { post(&store, a, &s, p).await });
    }
    blocker.await.expect("task").expect("blocker");
    while let Some(r) = set.join_next().await {
        r.expect("task");
    }
    let together = store.metrics().posted_together.load(Ordering::Relaxed) - before;
    assert_eq!(together, 4 + 5 * 3, "member 0's fifth and sixth run alone");
    let alone = db.store_with(
        StoreOptions {
            post_together: false,
            ..StoreOptions::for_dialect(db.kind_dialect())
        },
        0,
    );
    for p in orders(&ids_b) {
        post(&alone, b, &s, p).await;
    }
    assert_eq!(rows(&store, a).await, rows(&store, b).await);
    let report = store.verify().await.expect("verify");
    assert!(report.ok(), "{report:?}");
}

/// The tier multiplier is the writer's to add (earning sends only the base rate here): a
/// member's first purchase earns at no tier and lifts them to Gold (×1.5); their next earns
/// half its base again as `tier:Gold`, posted together or alone, and both ways leave the same
/// rows.
async fn a_purchase_earns_the_tier_the_writer_reads(db: TestDb) {
    let mut ladder = ladder();
    ladder.tiers[1].earn_multiplier = "1.5".into();
    let s = ProgramSettings {
        pending_days: 0,
        tiers: Some(ladder),
        ..ProgramSettings::default()
    };
    let store = db.store_with(
        StoreOptions {
            post_together: true,
            together_from: 1,
            writers: 1,
            ..StoreOptions::for_dialect(db.kind_dialect())
        },
        0,
    );
    let alone = db.store_with(
        StoreOptions {
            post_together: false,
            ..StoreOptions::for_dialect(db.kind_dialect())
        },
        0,
    );
    // A purchase by each of the first six members: order `o<m><suffix>` of `cents` + the
    // member's step, at `minutes` past t0.
    let each = |ids: &[String], suffix: &str, cents: i64, step: i64, minutes: i64| {
        ids.iter()
            .take(6)
            .enumerate()
            .map(|(m, id)| {
                let key = MemberRef {
                    id: Some(id.clone()),
                    external_id: None,
                };
                let at = t0() + Duration::minutes(minutes);
                input(key, &format!("o{m}{suffix}"), cents + step * m as i64, at)
            })
            .collect::<Vec<PurchaseInput>>()
    };
    let first = |ids: &[String]| each(ids, "-b", 4_000, 1, 0);
    let second = |ids: &[String]| each(ids, "x-b", 2_000, 100, 1);
    let breakdown = |answer: &str| -> Vec<(String, i64)> {
        let v: serde_json::Value = serde_json::from_str(answer).expect("json");
        v["breakdown"]
            .as_array()
            .expect("a breakdown")
            .iter()
            .map(|a| {
                (
                    a["source"].as_str().expect("source").to_string(),
                    a["points"].as_i64().expect("points"),
                )
            })
            .collect()
    };
    let (a, b) = ("gold-together", "gold-alone");
    let ids_a = tenant(&store, a, &s).await;
    let ids_b = tenant(&alone, b, &s).await;
    for p in first(&ids_a) {
        let answer = post(&store, a, &s, p).await;
        assert_eq!(breakdown(&answer)[0], ("base".to_string(), 40), "{answer}");
        assert!(!answer.contains("tier:"), "no tier before: {answer}");
    }
    for p in first(&ids_b) {
        post(&alone, b, &s, p).await;
    }
    // The second purchases meet in one batch behind a held writer.
    let blocker = hold_writer(&store, 300).await;
    let before = store.metrics().posted_together.load(Ordering::Relaxed);
    let mut set = tokio::task::JoinSet::new();
    for (m, p) in second(&ids_a).into_iter().enumerate() {
        let (store, s) = (store.clone(), s.clone());
        set.spawn(async move { (m, post(&store, a, &s, p).await) });
    }
    blocker.await.expect("task").expect("blocker");
    let mut answers = Vec::new();
    while let Some(r) = set.join_next().await {
        answers.push(r.expect("task"));
    }
    answers.sort();
    assert_eq!(
        store.metrics().posted_together.load(Ordering::Relaxed) - before,
        6,
        "the second purchases were posted together"
    );
    for p in second(&ids_b) {
        post(&alone, b, &s, p).await;
    }
    for (m, answer) in &answers {
        let base = 20 + *m as i64;
        let got = breakdown(answer);
        assert_eq!(
            &got[..2],
            &[
                ("base".to_string(), base),
                ("tier:Gold".to_string(), base / 2)
            ],
            "{answer}"
        );
    }
    let rows_a = rows(&store, a).await;
    assert_eq!(
        rows_a
            .iter()
            .filter(|r| r.starts_with("award|") && r.contains("|tier:Gold|"))
            .count(),
        6,
        "{rows_a:?}"
    );
    assert_eq!(rows_a, rows(&alone, b).await);
}

/// A store posting purchases together or not, and a programme whose points are available at
/// once and never expire.
fn budget_store(db: &TestDb, together: bool) -> (Store, ProgramSettings) {
    let s = ProgramSettings {
        pending_days: 0,
        expiry: ExpiryPolicy::None,
        ..ProgramSettings::default()
    };
    let opts = StoreOptions {
        post_together: together,
        together_from: 1,
        ..StoreOptions::for_dialect(db.kind_dialect())
    };
    (db.store_with(opts, 0), s)
}

/// A campaign bonus of 3 points under a budget of `max` shared by all members
/// (`campaign:<name>`).
fn budget_award(name: &str, max: i64) -> Award {
    let counter = format!("campaign:{name}");
    Award {
        source: counter.clone(),
        rule_version: Some(1),
        points: 3,
        description: format!("{name} bonus"),
        campaign: None,
        capped_from: None,
        terms: Some(Box::new(AwardTerms {
            limits: std::sync::Arc::from(vec![AwardLimit {
                counter: counter.into(),
                per_member: false,
                period: "budget".into(),
                max,
                label: "campaign budget",
            }]),
            nth_order: None,
            basis: None,
        })),
    }
}

/// Two budgets named by a purchase's awards in the order opposite to their keys'. A purchase
/// posted alone must lock them in key order, as a grouped write on another writer does:
/// holding the later while waiting for the earlier, it would deadlock with a grouped write
/// holding the earlier and asking for the later (PostgreSQL would break the deadlock after a
/// second by failing one of them). Here another connection plays that grouped write: it
/// holds `campaign:a` while the purchase waits, and `campaign:b` must still be free. SQLite
/// has one writer: there the purchases are only settled.
async fn a_purchase_posted_alone_locks_budgets_in_key_order(db: TestDb) {
    let (store, s) = budget_store(&db, false);
    store
        .ensure_tenant("order", "order", &s, 0)
        .await
        .expect("tenant");
    let member = store
        .create_member("order", MemberFields::default(), None, 0)
        .await
        .expect("member")
        .0
        .id;
    let post = |order: &'static str| {
        let (store, s, member) = (store.clone(), s.clone(), member.clone());
        async move {
            let key = MemberRef {
                id: Some(member),
                external_id: None,
            };
            let p = input(key, order, 2_000, t0())
                .validate(&s, t0())
                .expect("valid");
            let awards = vec![budget_award("b", 1_000), budget_award("a", 1_000)];
            store
                .purchase("order", p, awards, s, None, t0().timestamp_micros())
                .await
                .expect("purchase")
        }
    };
    // The first purchase creates both counters.
    post("first").await;
    if db.kind_dialect() == fidelis_store::Dialect::Postgres {
        // The other connection is synchronous: it runs on a thread of its own, step by step.
        let url = db.url.clone();
        let (step_tx, step_rx) = std::sync::mpsc::channel::<()>();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<String>();
        let other = std::thread::spawn(move || {
            let lock = |counter: &str| {
                format!(
                    "SELECT points FROM rule_counters WHERE tenant_id = 'order' AND counter = '{counter}' FOR UPDATE"
                )
            };
            let mut other = fidelis_store_tests::backend(&url)
                .connect(false)
                .expect("another connection");
            other.batch("BEGIN").expect("begin");
            other.query(&lock("campaign:a"), &[]).expect("lock a");
            done_tx.send("a locked".into()).expect("send");
            step_rx.recv().expect("step");
            other
                .batch("SET LOCAL lock_timeout = '500ms'")
                .expect("lock timeout");
            let b = other.query(&lock("campaign:b"), &[]);
            other.batch("COMMIT").expect("commit");
            done_tx.send(format!("{:?}", b.map(|_| ()))).expect("send");
        });
        let recv = |rx: std::sync::mpsc::Receiver<String>| async move {
            tokio::task::spawn_blocking(move || (rx.recv().expect("the other connection"), rx))
                .await
                .expect("blocking task")
        };
        let (said, done_rx) = recv(done_rx).await;
        assert_eq!(said, "a locked");
        let waiting = tokio::spawn(post("second"));
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(
            !waiting.is_finished(),
            "the purchase did not wait for campaign:a"
        );
        step_tx.send(()).expect("step");
        let (b, _) = recv(done_rx).await;
        assert_eq!(
            b, "Ok(())",
            "the purchase held campaign:b while it waited for campaign:a"
        );
        other.join().expect("the other connection's thread");
        waiting.await.expect("the purchase");
    } else {
        post("second").await;
    }
    let counters = store
        .read(|c| {
            Ok(c.query(
                "SELECT counter, points FROM rule_counters WHERE tenant_id = 'order' ORDER BY counter",
                &[],
            )?
            .iter()
            .map(|r| (r.text(0), r.int(1)))
            .collect::<Vec<_>>())
        })
        .await
        .expect("counters");
    assert_eq!(
        counters,
        vec![("campaign:a".to_string(), 6), ("campaign:b".to_string(), 6)]
    );
    let report = store.verify().await.expect("verify");
    assert!(report.ok(), "{report:?}");
}

on_both!(
    posted_together_leave_the_rows_of_one_by_one,
    a_members_purchases_in_one_batch_are_posted_together_in_rounds,
    a_budget_shared_by_a_group_is_never_overspent,
    a_purchase_posted_alone_locks_budgets_in_key_order,
    a_purchase_earns_the_tier_the_writer_reads
);
