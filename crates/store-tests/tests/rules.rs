//! Rules engine scenarios on SQLite and PostgreSQL, through the use cases with an injected
//! clock: caps and budgets under concurrency, schedules at their boundaries in the programme's
//! zone, versioning, per-rule claw-back, and the triggers that are not purchases. Every
//! scenario ends with the ledger verified.

use chrono::{DateTime, Utc};
use fidelis_app::{App, ManualClock, Principal, Scope};
use fidelis_core::ProgramSettings;
use fidelis_core::event::{CustomInput, PurchaseInput, RefundInput};
use fidelis_core::ledger::clawback_target;
use fidelis_core::program::ExpiryPolicy;
use fidelis_core::rules::define::{CampaignDef, RuleDef, Status};
use fidelis_store::awards::RecordedAward;
use fidelis_store::model::PurchaseOutcome;
use fidelis_store_tests::{TestDb, on_both};
use serde_json::{Value, json};
use std::sync::Arc;

fn t(s: &str) -> DateTime<Utc> {
    fidelis_core::time::parse(s).expect("valid time")
}

struct Env {
    app: App,
    admin: Principal,
    clock: Arc<ManualClock>,
    _db: TestDb,
}

async fn env(db: TestDb, now: &str) -> Env {
    let clock = Arc::new(ManualClock::new(t(now)));
    let store = db.store(t(now).timestamp_micros());
    let app = App::new(store, clock.clone());
    let (_, secret) = app
        .bootstrap_key("acme", Scope::Admin, None)
        .await
        .expect("key");
    let admin = app.authenticate(&secret).await.expect("principal");
    let settings = ProgramSettings {
        pending_days: 0,
        expiry: ExpiryPolicy::None,
        timezone: "Europe/Paris".into(),
        ..ProgramSettings::default()
    };
    app.put_program(&admin, settings, None)
        .await
        .expect("programme");
    Env {
        app,
        admin,
        clock,
        _db: db,
    }
}

impl Env {
    async fn rule(&self, def: Value) -> String {
        let def: RuleDef = serde_json::from_value(def).expect("a rule definition");
        let (r, _) = self
            .app
            .create_rule(&self.admin, def, None)
            .await
            .expect("rule saved");
        self.app
            .set_rule_status(&self.admin, &r.id, Status::Active, None)
            .await
            .expect("activated");
        r.id
    }

    async fn campaign(&self, def: Value) -> String {
        let def: CampaignDef = serde_json::from_value(def).expect("a campaign definition");
        let (c, _) = self
            .app
            .create_campaign(&self.admin, def, None)
            .await
            .expect("campaign saved");
        self.app
            .set_campaign_status(&self.admin, &c.id, Status::Active, None)
            .await
            .expect("activated");
        c.id
    }

    async fn buy(&self, member: &str, order: &str, lines: Value, total: &str) -> PurchaseOutcome {
        let input: PurchaseInput = serde_json::from_value(json!({
            "member": {"external_id": member}, "order_id": order, "channel": "web",
            "currency": "EUR", "total": total, "lines": lines,
        }))
        .expect("a purchase");
        self.app
            .purchase(&self.admin, input, None)
            .await
            .expect("purchase")
            .0
    }

    async fn refund(&self, order: &str, body: Value) -> fidelis_store::model::RefundOutcome {
        let mut b = body;
        b["order_id"] = json!(order);
        let input: RefundInput = serde_json::from_value(b).expect("a refund");
        self.app
            .refund(&self.admin, input, None)
            .await
            .expect("refund")
            .0
    }

    async fn available(&self, member_id: &str) -> i64 {
        self.app
            .balance(&self.admin, member_id)
            .await
            .expect("balance")
            .available
    }

    /// The event's awards as the store shows them.
    async fn shown(&self, event_id: i64) -> Vec<RecordedAward> {
        self.app
            .store
            .event_awards("acme", event_id)
            .await
            .expect("awards")
    }

    /// How many award rows the event has.
    async fn award_rows(&self, event_id: i64) -> i64 {
        self.app
            .store
            .read(move |c| {
                Ok(c.query_one(
                    "SELECT COUNT(*) FROM awards WHERE tenant_id = 'acme' AND event_id = $1",
                    &[event_id.into()],
                )?
                .map_or(0, |r| r.int(0)))
            })
            .await
            .expect("award rows counted")
    }

    async fn verified(&self) {
        let r = self.app.store.verify().await.expect("verify runs");
        assert!(r.ok(), "ledger invariants broken: {r:?}");
    }
}

fn one_line(total: &str) -> Value {
    json!([{"sku": "x", "category": "misc", "quantity": 1, "unit_price": total}])
}

fn rule_points(out: &PurchaseOutcome, rule: &str) -> i64 {
    out.breakdown
        .iter()
        .filter(|a| a.source == rule)
        .map(|a| a.points)
        .sum()
}

/// A rule activated through one node applies on another within [`RULES_RECHECK`]: the other
/// node's compiled set is checked against the database's version once it is that old (by the
/// first event to find it so; the others meanwhile keep the set they have).
async fn a_rule_activated_on_one_node_applies_on_another_within_the_recheck(db: TestDb) {
    let e = env(db, "2026-03-10T12:00:00Z").await;
    let other = App::new(
        e._db.store(t("2026-03-10T12:00:00Z").timestamp_micros()),
        e.clock.clone(),
    );
    let buy_there = |order: &'static str| {
        let (other, admin) = (&other, &e.admin);
        async move {
            let input: PurchaseInput = serde_json::from_value(json!({
                "member": {"external_id": "c1"}, "order_id": order, "channel": "web",
                "currency": "EUR", "total": "10.00", "lines": one_line("10.00"),
            }))
            .expect("a purchase");
            other
                .purchase(admin, input, None)
                .await
                .expect("purchase")
                .0
        }
    };
    let before = buy_there("o-1").await;
    assert_eq!(before.points, 10, "no rule yet");
    let rule = e
        .rule(json!({"name": "Bonus", "trigger": "purchase", "effects": [{"type": "points", "points": 5}]}))
        .await;
    tokio::time::sleep(fidelis_app::rules::RULES_RECHECK + std::time::Duration::from_millis(50))
        .await;
    let after = buy_there("o-2").await;
    assert_eq!(
        rule_points(&after, &rule),
        5,
        "the other node's rule applies"
    );
    let again = buy_there("o-3").await;
    assert_eq!(rule_points(&again, &rule), 5);
}

async fn caps_hold_under_50_concurrent_events_for_one_member(db: TestDb) {
    let e = Arc::new(env(db, "2026-03-10T12:00:00Z").await);
    let rule = e
        .rule(json!({"name": "100 a purchase", "trigger": "purchase", "effects": [{"type": "points", "points": 100}],
            "caps": {"per_member_day": 1000, "per_member_month": 5000}}))
        .await;
    let first = e.buy("c1", "o-0", one_line("10.00"), "10.00").await;
    assert_eq!(rule_points(&first, &rule), 100);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 1..=50 {
        let e = e.clone();
        let rule = rule.clone();
        tasks.spawn(async move {
            rule_points(
                &e.buy("c1", &format!("o-{i}"), one_line("10.00"), "10.00")
                    .await,
                &rule,
            )
        });
    }
    let mut total = 100;
    while let Some(r) = tasks.join_next().await {
        total += r.expect("task");
    }
    assert_eq!(total, 1000, "the daily cap holds exactly");
    // 51 purchases of 10 points base, and 1000 from the rule.
    assert_eq!(e.available(&first.member_id).await, 51 * 10 + 1000);
    // The next day (Paris time) the cap starts again.
    e.clock.set(t("2026-03-10T23:00:00Z"));
    let next = e.buy("c1", "o-next", one_line("10.00"), "10.00").await;
    assert_eq!(
        rule_points(&next, &rule),
        100,
        "23:00 UTC is the next day in Paris"
    );
    let capped = e.buy("c1", "o-next-2", one_line("10.00"), "10.00").await;
    assert_eq!(rule_points(&capped, &rule), 100);
    e.verified().await;
}

async fn a_campaign_budget_holds_under_50_concurrent_events_across_members(db: TestDb) {
    let e = Arc::new(env(db, "2026-03-10T12:00:00Z").await);
    let campaign = e
        .campaign(json!({"name": "Spring", "budget_points": 1000}))
        .await;
    let rule = e
        .rule(
            json!({"name": "30 a purchase", "trigger": "purchase", "campaign_id": campaign,
            "effects": [{"type": "points", "points": 30}]}),
        )
        .await;
    let solo = e
        .rule(json!({"name": "rule budget", "trigger": "purchase", "effects": [{"type": "points", "points": 7}],
            "caps": {"budget_points": 100}}))
        .await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50 {
        let e = e.clone();
        let (rule, solo) = (rule.clone(), solo.clone());
        tasks.spawn(async move {
            let out = e
                .buy(
                    &format!("m{i}"),
                    &format!("o-{i}"),
                    one_line("10.00"),
                    "10.00",
                )
                .await;
            (rule_points(&out, &rule), rule_points(&out, &solo))
        });
    }
    let (mut spent, mut solo_spent) = (0, 0);
    while let Some(r) = tasks.join_next().await {
        let (a, b) = r.expect("task");
        spent += a;
        solo_spent += b;
    }
    assert_eq!(
        spent, 1000,
        "the campaign's budget is spent exactly, never more"
    );
    assert_eq!(solo_spent, 100, "the rule's own budget too");
    let c = e.app.campaign(&e.admin, &campaign).await.expect("campaign");
    assert_eq!(c.spent_points, 1000, "the spent budget is visible");
    e.verified().await;
}

async fn a_weekend_rule_starts_at_saturday_midnight_in_the_programmes_zone(db: TestDb) {
    // Friday 13 March 2026, 23:59:59 in Paris (UTC+1) is 22:59:59 UTC.
    let e = env(db, "2026-03-13T22:59:59Z").await;
    let rule = e
        .rule(json!({"name": "Weekend double", "trigger": "purchase", "schedule": [{"days": ["sat", "sun"]}],
            "effects": [{"type": "multiplier", "factor": "2"}]}))
        .await;
    let friday = e.buy("c1", "fri", one_line("25.00"), "25.00").await;
    assert_eq!(
        rule_points(&friday, &rule),
        0,
        "Friday 23:59:59 local is not the weekend"
    );
    e.clock.set(t("2026-03-13T23:00:00Z"));
    let saturday = e.buy("c1", "sat", one_line("25.00"), "25.00").await;
    assert_eq!(
        rule_points(&saturday, &rule),
        25,
        "Saturday 00:00:00 local is"
    );
    assert_eq!(saturday.points, 50);
    e.verified().await;
}

async fn editing_a_rule_never_changes_past_awards(db: TestDb) {
    let e = env(db, "2026-03-10T12:00:00Z").await;
    let def = |factor: &str| json!({"name": "Boost", "trigger": "purchase", "effects": [{"type": "multiplier", "factor": factor}]});
    let rule = e.rule(def("2")).await;
    let first = e.buy("c1", "o1", one_line("10.00"), "10.00").await;
    let v1: Vec<_> = first
        .breakdown
        .iter()
        .filter(|a| a.source == rule)
        .collect();
    assert_eq!((v1[0].points, v1[0].rule_version), (10, Some(1)));
    let def3: RuleDef = serde_json::from_value(def("3")).expect("def");
    let (edited, _) = e
        .app
        .update_rule(&e.admin, &rule, def3, None)
        .await
        .expect("edit");
    assert_eq!(
        (edited.version, edited.status),
        (2, Status::Active),
        "an edit is a new version; the status stays"
    );
    let second = e.buy("c1", "o2", one_line("10.00"), "10.00").await;
    let v2: Vec<_> = second
        .breakdown
        .iter()
        .filter(|a| a.source == rule)
        .collect();
    assert_eq!((v2[0].points, v2[0].rule_version), (20, Some(2)));
    let recorded = e
        .app
        .store
        .event_awards("acme", first.event_id)
        .await
        .expect("awards");
    assert!(
        recorded
            .iter()
            .any(|a| a.source == rule && a.rule_version == Some(1) && a.points == 10),
        "{recorded:?}"
    );
    let old = e
        .app
        .rule(&e.admin, &rule, Some(1))
        .await
        .expect("version 1 kept");
    assert!(
        matches!(&old.definition.effects[0], fidelis_core::rules::EffectDef::Multiplier { factor, .. } if factor == "2")
    );
    // Refunding the first order takes back what version 1 gave (10 + 10), not version 2's.
    let r = e.refund("o1", json!({"amount": "10.00"})).await;
    assert_eq!(r.points_clawed_back, 20);
    assert_eq!(e.available(&first.member_id).await, 30);
    e.verified().await;
}

async fn a_refund_claws_back_exactly_what_each_rule_gave_for_the_refunded_lines(db: TestDb) {
    let e = env(db, "2026-03-10T12:00:00Z").await;
    let shoes = e
        .rule(json!({"name": "Shoes x3", "trigger": "purchase",
            "effects": [{"type": "multiplier", "factor": "3", "lines": "line.category == 'shoes'"}]}))
        .await;
    let bonus = e.rule(json!({"name": "Order bonus", "trigger": "purchase", "effects": [{"type": "points", "points": 90}]})).await;
    let lines = json!([
        {"sku": "shoe", "category": "shoes", "quantity": 1, "unit_price": "40.00"},
        {"sku": "sock", "category": "socks", "quantity": 2, "unit_price": "10.00"},
    ]);
    let out = e.buy("c1", "o1", lines, "60.00").await;
    // Base 60, shoes 40 × 2 extra = 80, bonus 90.
    assert_eq!(
        (
            rule_points(&out, &shoes),
            rule_points(&out, &bonus),
            out.points
        ),
        (80, 90, 230)
    );
    // The socks go back: the base and the order bonus give back a third, the shoes rule nothing.
    let r = e
        .refund("o1", json!({"lines": [{"sku": "sock", "quantity": 2}]}))
        .await;
    assert_eq!(r.points_clawed_back, 20 + 30);
    let awards = e
        .app
        .store
        .event_awards("acme", out.event_id)
        .await
        .expect("awards");
    let clawed = |src: &str| {
        awards
            .iter()
            .find(|a| a.source == src)
            .map(|a| a.clawed_back)
    };
    assert_eq!(
        (clawed("base"), clawed(&shoes), clawed(&bonus)),
        (Some(20), Some(0), Some(30))
    );
    // Then the shoes: each rule has given back all it gave.
    let r = e
        .refund("o1", json!({"lines": [{"sku": "shoe", "quantity": 1}]}))
        .await;
    assert_eq!(r.points_clawed_back, 40 + 80 + 60);
    assert_eq!(e.available(&out.member_id).await, 0);
    e.verified().await;
}

async fn a_first_order_bonus_is_given_once_under_concurrency(db: TestDb) {
    let e = Arc::new(env(db, "2026-03-10T12:00:00Z").await);
    let first = e.rule(json!({"name": "First order", "trigger": "purchase", "effects": [{"type": "nth_order", "n": 1, "points": 500}]})).await;
    let m = e
        .app
        .create_member(
            &e.admin,
            serde_json::from_value(json!({"external_id": "c1"})).expect("member"),
            None,
        )
        .await
        .expect("member")
        .0;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let (e, first) = (e.clone(), first.clone());
        tasks.spawn(async move {
            rule_points(
                &e.buy("c1", &format!("o-{i}"), one_line("10.00"), "10.00")
                    .await,
                &first,
            )
        });
    }
    let mut total = 0;
    while let Some(r) = tasks.join_next().await {
        total += r.expect("task");
    }
    assert_eq!(
        total, 500,
        "every purchase saw order_count 0, the transaction gave the bonus once"
    );
    assert_eq!(e.available(&m.id).await, 500 + 20 * 10);
    e.verified().await;
}

async fn enrolment_and_birthday_rules_award_once(db: TestDb) {
    let e = env(db, "2026-06-14T22:30:00Z").await;
    e.rule(json!({"name": "Welcome", "trigger": "enrolment", "effects": [{"type": "points", "points": 50}]})).await;
    e.rule(json!({"name": "Birthday", "trigger": "birthday", "condition": "member.birthday_today", "effects": [{"type": "points", "points": 200}]})).await;
    e.rule(json!({"name": "Review", "trigger": "custom", "event_type": "review_written", "effects": [{"type": "points", "points": 25}],
        "caps": {"per_member_day": 25}})).await;
    // 22:30 UTC on 14 June is 15 June in Paris: the member born on 15 June has a birthday.
    let m = e
        .app
        .create_member(
            &e.admin,
            serde_json::from_value(json!({"external_id": "c1", "birth_date": "1990-06-15"}))
                .expect("member"),
            None,
        )
        .await
        .expect("member")
        .0;
    assert_eq!(e.available(&m.id).await, 50, "enrolment through the API");
    let auto = e.buy("c2", "o1", one_line("10.00"), "10.00").await;
    assert!(auto.enrolled);
    assert_eq!(
        e.available(&auto.member_id).await,
        10 + 50,
        "enrolment by a first purchase"
    );
    e.app.run_jobs().await.expect("jobs");
    e.app.run_jobs().await.expect("jobs again");
    assert_eq!(
        e.available(&m.id).await,
        250,
        "one birthday award, however often the jobs run"
    );
    assert_eq!(
        e.available(&auto.member_id).await,
        60,
        "no birthday for a member without one"
    );
    for _ in 0..2 {
        let input: CustomInput =
            serde_json::from_value(json!({"member": {"id": m.id}, "type": "review_written"}))
                .expect("event");
        e.app.custom(&e.admin, input, None).await.expect("custom");
    }
    assert_eq!(
        e.available(&m.id).await,
        275,
        "25 points a review, capped at one a day"
    );
    e.verified().await;
}

async fn refund_rules_apply_once_per_refund(db: TestDb) {
    let e = env(db, "2026-03-10T12:00:00Z").await;
    e.rule(
        json!({"name": "Sorry for the return", "trigger": "refund", "condition": "event.total >= 5",
        "effects": [{"type": "points", "points": 15}]}),
    )
    .await;
    let out = e.buy("c1", "o1", one_line("20.00"), "20.00").await;
    let r = e
        .refund("o1", json!({"amount": "10.00", "refund_id": "r-1"}))
        .await;
    assert_eq!(r.points_clawed_back, 10);
    assert_eq!(e.available(&out.member_id).await, 10 + 15);
    // A resend of the same refund changes nothing, and its rules do not run again.
    let again = e
        .refund("o1", json!({"amount": "10.00", "refund_id": "r-1"}))
        .await;
    assert!(again.duplicate);
    assert_eq!(e.available(&out.member_id).await, 25);
    // A small refund does not match the condition.
    e.refund("o1", json!({"amount": "1.00", "refund_id": "r-2"}))
        .await;
    assert_eq!(e.available(&out.member_id).await, 24);
    e.verified().await;
}

/// A purchase that earns the base rate alone leaves no award row: its order holds that award
/// (points, total, refunded, clawed back). It is still shown as the base award, and its refunds
/// claw back what a row would have given, as they do from the base award of an order whose
/// awards have rows.
async fn a_purchase_earning_the_base_rate_alone_keeps_its_award_on_the_order(db: TestDb) {
    let e = env(db, "2026-03-10T12:00:00Z").await;
    let lines = json!([
        {"sku": "shirt", "category": "clothes", "quantity": 2, "unit_price": "10.00"},
        {"sku": "cap", "category": "clothes", "quantity": 1, "unit_price": "13.00"},
    ]);
    let plain = e.buy("c1", "o1", lines.clone(), "33.00").await;
    assert_eq!(plain.points, 33);
    assert_eq!(e.award_rows(plain.event_id).await, 0);
    let base = |points, clawed_back| RecordedAward {
        source: "base".into(),
        rule_version: None,
        campaign_id: None,
        points,
        clawed_back,
    };
    assert_eq!(e.shown(plain.event_id).await, vec![base(33, 0)]);
    // Beside a rule's award, the base rate's has its row too.
    e.rule(json!({"name": "Order bonus", "trigger": "purchase", "effects": [{"type": "points", "points": 5}]}))
        .await;
    let ruled = e.buy("c1", "o2", lines, "33.00").await;
    assert_eq!((ruled.points, e.award_rows(ruled.event_id).await), (38, 2));
    // One shirt back by line, then 3.33 by amount, from each order.
    for order in ["o1", "o2"] {
        e.refund(order, json!({"lines": [{"sku": "shirt", "quantity": 1}]}))
            .await;
        e.refund(order, json!({"amount": "3.33"})).await;
    }
    let clawed = clawback_target(33, 3300, 1333);
    assert_eq!(clawed, 13);
    assert_eq!(e.shown(plain.event_id).await, vec![base(33, clawed)]);
    let ruled_base: Vec<_> = e
        .shown(ruled.event_id)
        .await
        .into_iter()
        .filter(|a| a.source == "base")
        .collect();
    assert_eq!(ruled_base, vec![base(33, clawed)]);
    e.verified().await;
}

on_both!(
    a_purchase_earning_the_base_rate_alone_keeps_its_award_on_the_order,
    refund_rules_apply_once_per_refund,
    a_rule_activated_on_one_node_applies_on_another_within_the_recheck,
    caps_hold_under_50_concurrent_events_for_one_member,
    a_campaign_budget_holds_under_50_concurrent_events_across_members,
    a_weekend_rule_starts_at_saturday_midnight_in_the_programmes_zone,
    editing_a_rule_never_changes_past_awards,
    a_refund_claws_back_exactly_what_each_rule_gave_for_the_refunded_lines,
    a_first_order_bonus_is_given_once_under_concurrency,
    enrolment_and_birthday_rules_award_once,
);
