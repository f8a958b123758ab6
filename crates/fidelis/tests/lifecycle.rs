//! Black-box tests of points over time and of refunds beyond the balance: the server runs on a
//! manual clock, so the return window and expiry pass without waiting. Each scenario runs on
//! SQLite and PostgreSQL (see `on_both!`).

mod common;

use common::*;
use fidelis_app::ManualClock;
use fidelis_store_tests::TestDb;
use reqwest::Method;
use serde_json::{Value, json};
use std::sync::Arc;

fn at(t: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(t)
        .expect("RFC 3339")
        .with_timezone(&chrono::Utc)
}

async fn run_jobs(s: &Server) -> Value {
    let r = s
        .send(Method::POST, "/api/v1/jobs/run", Some(&s.admin), None, None)
        .await;
    r.expect(200);
    r.body
}

fn kinds(ledger: &[Value]) -> Vec<&str> {
    ledger.iter().filter_map(|t| t["kind"].as_str()).collect()
}

async fn pending_points_become_available_when_the_return_window_closes(db: TestDb) {
    let clock = Arc::new(ManualClock::new(at("2026-01-15T10:00:00Z")));
    let s = start_with_clock(db, clock.clone()).await;
    let id = s
        .create_member(&s.pos, json!({ "external_id": "mature-1" }))
        .await;
    let r = s
        .purchase(&s.pos, &purchase_by_id(&id, "mat-o-1", "59.90"))
        .await;
    r.expect(201);
    assert_eq!(r.body["status"], json!("pending"));
    assert_eq!(r.body["matures_at"], json!("2026-02-14T10:00:00Z"));
    assert_eq!(r.body["expires_at"], json!("2027-01-15T10:00:00Z"));

    clock.set(at("2026-02-14T09:59:59Z"));
    let report = run_jobs(&s).await;
    assert_eq!(report["matured_points"], json!(0), "{report}");
    assert_eq!(s.points(&s.pos, &id).await, (0, 59, 59));

    clock.set(at("2026-02-14T10:00:00Z"));
    let report = run_jobs(&s).await;
    assert_eq!(report["matured_points"], json!(59), "{report}");
    assert_eq!(report["matured_lots"], json!(1), "{report}");
    let bal = s.balance(&s.pos, &id).await;
    assert_eq!(
        bal,
        json!({
            "available": 59,
            "pending": 0,
            "lifetime_earned": 59,
            "expiring": [{ "points": 59, "expires_at": "2027-01-15T10:00:00Z" }]
        })
    );
    let ledger = s.ledger(&s.pos, &id).await;
    assert_eq!(kinds(&ledger), vec!["mature", "earn"]);
    assert_eq!(ledger[0]["available_delta"], json!(59));
    assert_eq!(ledger[0]["pending_delta"], json!(-59));
    // Running again finds nothing more to do.
    let report = run_jobs(&s).await;
    assert_eq!(report["matured_points"], json!(0), "{report}");
    assert_eq!(s.points(&s.pos, &id).await, (59, 0, 59));

    // A refund after the window claws back from the available points.
    let r = s
        .refund(&s.pos, &json!({ "order_id": "mat-o-1", "amount": "59.90" }))
        .await;
    r.expect(201);
    assert_eq!(r.body["from_available"], json!(59));
    assert_eq!(r.body["from_pending"], json!(0));
    assert_eq!(s.points(&s.pos, &id).await, (0, 0, 0));
}

async fn points_expire_twelve_months_after_they_were_earned(db: TestDb) {
    let clock = Arc::new(ManualClock::new(at("2026-01-15T10:00:00Z")));
    let s = start_with_clock(db, clock.clone()).await;
    s.instant_points(&s.admin).await;
    let id = s
        .create_member(&s.pos, json!({ "external_id": "expire-1" }))
        .await;
    s.purchase(&s.pos, &purchase_by_id(&id, "exp-o-1", "59.90"))
        .await
        .expect(201);
    clock.set(at("2026-03-01T09:00:00Z"));
    s.purchase(&s.pos, &purchase_by_id(&id, "exp-o-2", "20.00"))
        .await
        .expect(201);
    // Spending takes the points that expire first.
    clock.set(at("2026-04-01T09:00:00Z"));
    s.adjust(&s.admin, &id, -50, "redeemed a voucher")
        .await
        .expect(201);
    let bal = s.balance(&s.pos, &id).await;
    assert_eq!(
        bal["expiring"],
        json!([
            { "points": 9, "expires_at": "2027-01-15T10:00:00Z" },
            { "points": 20, "expires_at": "2027-03-01T09:00:00Z" }
        ])
    );

    clock.set(at("2027-01-15T09:59:59Z"));
    let report = run_jobs(&s).await;
    assert_eq!(report["expired_points"], json!(0), "{report}");
    assert_eq!(s.points(&s.pos, &id).await, (29, 0, 79));

    clock.set(at("2027-01-15T10:00:00Z"));
    let report = run_jobs(&s).await;
    assert_eq!(report["expired_points"], json!(9), "{report}");
    assert_eq!(s.points(&s.pos, &id).await, (20, 0, 79));
    let ledger = s.ledger(&s.pos, &id).await;
    assert_eq!(ledger[0]["kind"], json!("expire"));
    assert_eq!(ledger[0]["available_delta"], json!(-9));

    clock.set(at("2027-06-01T00:00:00Z"));
    let report = run_jobs(&s).await;
    assert_eq!(report["expired_points"], json!(20), "{report}");
    let bal = s.balance(&s.pos, &id).await;
    assert_eq!(
        bal,
        json!({ "available": 0, "pending": 0, "lifetime_earned": 79, "expiring": [] })
    );
    assert_eq!(
        kinds(&s.ledger(&s.pos, &id).await),
        vec!["expire", "expire", "adjust", "earn", "earn"]
    );
    let verify = s.get("/api/v1/verify", &s.admin).await;
    verify.expect(200);
    assert_eq!(verify.body["ok"], json!(true), "{}", verify.text);
}

async fn inactivity_expiry_takes_the_whole_balance_after_months_without_activity(db: TestDb) {
    let clock = Arc::new(ManualClock::new(at("2026-01-15T10:00:00Z")));
    let s = start_with_clock(db, clock.clone()).await;
    s.set_program(
        &s.admin,
        json!({ "pending_days": 0, "expiry": { "kind": "inactivity", "months": 6 } }),
    )
    .await;
    let id = s
        .create_member(&s.pos, json!({ "external_id": "idle-1" }))
        .await;
    s.purchase(&s.pos, &purchase_by_id(&id, "idle-o-1", "59.90"))
        .await
        .expect(201);
    let bal = s.balance(&s.pos, &id).await;
    assert_eq!(
        bal["expiring"],
        json!([{ "points": 59, "expires_at": "2026-07-15T10:00:00Z" }])
    );
    // Activity three months later pushes the expiry back.
    clock.set(at("2026-04-15T10:00:00Z"));
    s.purchase(&s.pos, &purchase_by_id(&id, "idle-o-2", "10.00"))
        .await
        .expect(201);
    clock.set(at("2026-07-15T10:00:00Z"));
    let report = run_jobs(&s).await;
    assert_eq!(report["expired_points"], json!(0), "{report}");
    assert_eq!(s.points(&s.pos, &id).await, (69, 0, 69));
    clock.set(at("2026-10-15T10:00:00Z"));
    let report = run_jobs(&s).await;
    assert_eq!(report["expired_points"], json!(69), "{report}");
    assert_eq!(s.points(&s.pos, &id).await, (0, 0, 69));
}

async fn clawback_beyond_the_balance_follows_the_refund_policy(db: TestDb) {
    let s = start(db).await;
    s.instant_points(&s.admin).await;

    // allow_negative (the default): the balance goes negative, the next earnings repay it.
    let a = s
        .create_member(&s.pos, json!({ "external_id": "debt-a" }))
        .await;
    s.purchase(&s.pos, &purchase_by_id(&a, "debt-o-1", "59.90"))
        .await
        .expect(201);
    s.adjust(&s.admin, &a, -50, "spent").await.expect(201);
    let r = s
        .refund(
            &s.pos,
            &json!({ "order_id": "debt-o-1", "amount": "59.90" }),
        )
        .await;
    r.expect(201);
    assert_eq!(r.body["points_clawed_back"], json!(59));
    assert_eq!(r.body["from_available"], json!(59));
    assert_eq!(r.body["forgiven"], json!(0));
    assert_eq!(r.body["balance"], json!({ "available": -50, "pending": 0 }));
    let r = s
        .purchase(&s.pos, &purchase_by_id(&a, "debt-o-2", "80.00"))
        .await;
    r.expect(201);
    assert_eq!(r.body["points"], json!(80));
    assert_eq!(r.body["debt_repaid"], json!(50));
    assert_eq!(r.body["balance"], json!({ "available": 30, "pending": 0 }));
    assert_eq!(s.points(&s.pos, &a).await, (30, 0, 80));
    // The 30 left are spendable, and no more.
    s.adjust(&s.admin, &a, -31, "too much").await.problem(409);
    s.adjust(&s.admin, &a, -30, "all").await.expect(201);

    // within_balance: what is not there is forgiven.
    s.set_program(&s.admin, json!({ "refund_policy": "within_balance" }))
        .await;
    let b = s
        .create_member(&s.pos, json!({ "external_id": "debt-b" }))
        .await;
    s.purchase(&s.pos, &purchase_by_id(&b, "debt-o-3", "59.90"))
        .await
        .expect(201);
    s.adjust(&s.admin, &b, -50, "spent").await.expect(201);
    let r = s
        .refund(
            &s.pos,
            &json!({ "order_id": "debt-o-3", "amount": "59.90" }),
        )
        .await;
    r.expect(201);
    assert_eq!(r.body["points_clawed_back"], json!(9));
    assert_eq!(r.body["forgiven"], json!(50));
    assert_eq!(r.body["balance"], json!({ "available": 0, "pending": 0 }));

    // pending_only: available points are never taken back.
    s.set_program(&s.admin, json!({ "refund_policy": "pending_only" }))
        .await;
    let c = s
        .create_member(&s.pos, json!({ "external_id": "debt-c" }))
        .await;
    s.purchase(&s.pos, &purchase_by_id(&c, "debt-o-4", "59.90"))
        .await
        .expect(201);
    let r = s
        .refund(
            &s.pos,
            &json!({ "order_id": "debt-o-4", "amount": "59.90" }),
        )
        .await;
    r.expect(201);
    assert_eq!(r.body["points_clawed_back"], json!(0));
    assert_eq!(r.body["forgiven"], json!(59));
    assert_eq!(s.points(&s.pos, &c).await, (59, 0, 59));

    let verify = s.get("/api/v1/verify", &s.admin).await;
    verify.expect(200);
    assert_eq!(verify.body["ok"], json!(true), "{}", verify.text);
}

/// An order of 59.90 at list price sold for 50.00: refunding every line refunds the 50.00
/// paid, and takes back all 50 points, however the lines are grouped.
async fn refunding_every_line_of_a_discounted_order_claws_back_all_its_points(db: TestDb) {
    let s = start(db).await;
    let id = s
        .create_member(&s.pos, json!({ "external_id": "disc-1" }))
        .await;
    let r = s
        .purchase(
            &s.pos,
            &json!({
                "member": { "id": id },
                "order_id": "disc-o-1",
                "channel": "pos",
                "currency": "EUR",
                "total": "50.00",
                "lines": [
                    { "sku": "SOCKS", "quantity": 2, "unit_price": "10.00" },
                    { "sku": "SHOES", "quantity": 1, "unit_price": "39.90" }
                ]
            }),
        )
        .await;
    r.expect(201);
    assert_eq!(r.body["points"], json!(50));
    s.refund(
        &s.pos,
        &json!({ "order_id": "disc-o-1", "lines": [{ "sku": "SHOES", "quantity": 1 }] }),
    )
    .await
    .expect(201);
    let last = s
        .refund(
            &s.pos,
            &json!({ "order_id": "disc-o-1", "lines": [{ "sku": "SOCKS", "quantity": 2 }] }),
        )
        .await;
    last.expect(201);
    assert_eq!(
        last.body["order_refunded"],
        json!("50.00"),
        "every line refunded: the whole amount paid is refunded ({})",
        last.text
    );
    assert_eq!(
        s.points(&s.pos, &id).await,
        (0, 0, 0),
        "every line refunded: every point is taken back"
    );
}

/// One sku sold at two prices (1 at 1.00, 2 at 2.00, total 5.00): refunding the 3 units one
/// by one refunds 5.00 and takes back all 5 points.
async fn refunding_every_unit_of_a_sku_sold_at_two_prices_claws_back_all_its_points(db: TestDb) {
    let s = start(db).await;
    let id = s
        .create_member(&s.pos, json!({ "external_id": "avg-1" }))
        .await;
    s.purchase(
        &s.pos,
        &json!({
            "member": { "id": id },
            "order_id": "avg-o-1",
            "channel": "pos",
            "currency": "EUR",
            "total": "5.00",
            "lines": [
                { "sku": "PEN", "quantity": 1, "unit_price": "1.00" },
                { "sku": "PEN", "quantity": 2, "unit_price": "2.00" }
            ]
        }),
    )
    .await
    .expect(201);
    let mut last = None;
    for _ in 0..3 {
        let r = s
            .refund(
                &s.pos,
                &json!({ "order_id": "avg-o-1", "lines": [{ "sku": "PEN", "quantity": 1 }] }),
            )
            .await;
        r.expect(201);
        last = Some(r);
    }
    let last = last.expect("three refunds");
    assert_eq!(
        last.body["order_refunded"],
        json!("5.00"),
        "every unit refunded: the whole order is refunded ({})",
        last.text
    );
    assert_eq!(s.points(&s.pos, &id).await, (0, 0, 0));
}

fidelis_store_tests::on_both!(
    pending_points_become_available_when_the_return_window_closes,
    points_expire_twelve_months_after_they_were_earned,
    inactivity_expiry_takes_the_whole_balance_after_months_without_activity,
    clawback_beyond_the_balance_follows_the_refund_policy,
    refunding_every_line_of_a_discounted_order_claws_back_all_its_points,
    refunding_every_unit_of_a_sku_sold_at_two_prices_claws_back_all_its_points,
);
