//! Black-box tests of what members get, over HTTP on SQLite and PostgreSQL: tiers on a manual
//! clock, the rewards catalogue, redemptions under concurrency, coupons at the till (and the
//! limit on guessing them), store credit, transfers, donations and paid plans. Every scenario
//! ends with the ledger verified through the API.

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

async fn assert_verified(s: &Server) {
    let r = s.get("/api/v1/verify", &s.admin).await;
    r.expect(200);
    assert_eq!(r.body["ok"], json!(true), "ledger: {}", r.text);
}

/// Spend over 12 rolling months, anniversary reviews: Silver 0, Gold 500.00 (×1.5).
fn spend_tiers(on_refund: &str) -> Value {
    json!({
        "metric": "spend",
        "window": { "kind": "rolling", "months": 12 },
        "review": { "kind": "anniversary", "months": 12 },
        "downgrade": "one_down",
        "on_refund": on_refund,
        "tiers": [
            { "name": "Silver", "threshold": "0" },
            { "name": "Gold", "threshold": "500.00", "earn_multiplier": "1.5", "perks": ["free shipping"] }
        ]
    })
}

async fn reward(s: &Server, body: Value) -> String {
    let r = s.post("/api/v1/rewards", &s.admin, &body).await;
    r.expect(201);
    r.body["id"].as_str().expect("reward id").to_string()
}

fn ten_off(cost: i64) -> Value {
    json!({ "kind": "fixed_discount", "title": "10 EUR off", "points_cost": cost, "value": "10.00",
            "description": "On any order", "image_url": "https://cdn.example.com/ten.png" })
}

async fn member_with_points(s: &Server, ext: &str, points: i64) -> String {
    let id = s.create_member(&s.pos, json!({ "external_id": ext })).await;
    s.adjust(&s.admin, &id, points, "opening balance")
        .await
        .expect(201);
    id
}

async fn redeem(s: &Server, key: &str, member: &str, reward: &str) -> Resp {
    s.post(
        &format!("/api/v1/members/{member}/redemptions"),
        key,
        &json!({ "reward_id": reward }),
    )
    .await
}

// ---------------------------------------------------------------------------------------------

async fn a_hundred_concurrent_redemptions_over_http_give_exactly_ten_and_ninety_409s(db: TestDb) {
    let s = start(db).await;
    let m = member_with_points(&s, "r-100", 1000).await;
    let r = reward(&s, ten_off(100)).await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let (api, key, m, r) = (s.api.clone(), s.pos.clone(), m.clone(), r.clone());
        tasks.spawn(async move { redeem_with(&api, &key, &m, &r).await });
    }
    let (mut ok, mut conflicts) = (0, 0);
    while let Some(res) = tasks.join_next().await {
        let resp = res.expect("task");
        match resp.status {
            201 => ok += 1,
            409 => {
                let body = resp.problem(409);
                assert!(
                    body["detail"]
                        .as_str()
                        .unwrap_or("")
                        .contains("not enough available points"),
                    "{}",
                    resp.text
                );
                conflicts += 1;
            }
            other => panic!("unexpected {other}: {}", resp.text),
        }
    }
    assert_eq!((ok, conflicts), (10, 90));
    assert_eq!(s.points(&s.pos, &m).await.0, 0);
    let coupons = s
        .get(&format!("/api/v1/members/{m}/coupons?limit=200"), &s.pos)
        .await;
    coupons.expect(200);
    assert_eq!(coupons.body["items"].as_array().map(Vec::len), Some(10));
    assert_verified(&s).await;
}

async fn redeem_with(api: &Api, key: &str, member: &str, reward: &str) -> Resp {
    api.post(
        &format!("/api/v1/members/{member}/redemptions"),
        key,
        &json!({ "reward_id": reward }),
    )
    .await
}

async fn a_reward_with_stock_five_and_fifty_members_at_once_gives_exactly_five_coupons(db: TestDb) {
    let s = start(db).await;
    let mut members = Vec::new();
    for i in 0..50 {
        members.push(member_with_points(&s, &format!("stock-{i}"), 100).await);
    }
    let mut body = ten_off(100);
    body["stock"] = json!(5);
    let r = reward(&s, body).await;
    let mut tasks = tokio::task::JoinSet::new();
    for m in &members {
        let (api, key, m, r) = (s.api.clone(), s.pos.clone(), m.clone(), r.clone());
        tasks.spawn(async move { redeem_with(&api, &key, &m, &r).await });
    }
    let mut statuses = Vec::new();
    while let Some(res) = tasks.join_next().await {
        let resp = res.expect("task");
        if resp.status == 409 {
            assert!(
                resp.problem(409)["detail"]
                    .as_str()
                    .unwrap_or("")
                    .contains("out of stock")
            );
        }
        statuses.push(resp.status);
    }
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 5);
    assert_eq!(statuses.iter().filter(|s| **s == 409).count(), 45);
    let got = s.get(&format!("/api/v1/rewards/{r}"), &s.pos).await;
    assert_eq!(got.body["stock"], json!(0));
    assert_verified(&s).await;
}

async fn a_coupon_redeemed_twice_at_the_till_is_refused_and_its_retry_replays(db: TestDb) {
    let s = start(db).await;
    let m = member_with_points(&s, "till-1", 500).await;
    let r = reward(&s, ten_off(200)).await;
    let out = redeem(&s, &s.pos, &m, &r).await;
    out.expect(201);
    let code = out.body["coupon"]["code"]
        .as_str()
        .expect("code")
        .to_string();
    assert_eq!(out.body["coupon"]["status"], json!("issued"));
    assert_eq!(out.body["balance"]["available"], json!(300));
    let body = json!({ "order_id": "pos-77", "order_total": "59.90" });
    let path = format!("/api/v1/coupons/{code}/redeem");
    let first = s.post_idem(&path, &s.pos, &body, "till-9-burn-1").await;
    first.expect(200);
    assert_eq!(first.body["benefit"]["discount"], json!("10.00"));
    assert_eq!(first.body["coupon"]["status"], json!("redeemed"));
    let retry = s.post_idem(&path, &s.pos, &body, "till-9-burn-1").await;
    retry.expect(200);
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    assert_eq!(retry.body, first.body);
    let second = s
        .post(&path, &s.pos, &json!({ "order_id": "pos-78" }))
        .await;
    let p = second.problem(409);
    assert!(
        p["detail"]
            .as_str()
            .unwrap_or("")
            .contains("already redeemed at"),
        "{}",
        second.text
    );
    // Typed in lower case without dashes, it is the same coupon.
    let loose = code.replace('-', "").to_lowercase();
    let v = s
        .post(
            "/api/v1/coupons/validate",
            &s.pos,
            &json!({ "code": loose }),
        )
        .await;
    v.expect(200);
    assert_eq!(v.body["reason"], json!("already_redeemed"));
    assert_verified(&s).await;
}

async fn coupon_validation_answers_valid_or_the_reason_and_guessing_is_limited(db: TestDb) {
    let clock = Arc::new(ManualClock::new(at("2026-03-10T12:00:00Z")));
    let s = start_with_clock(db, clock.clone()).await;
    let m = member_with_points(&s, "val-1", 1000).await;
    let mut body = ten_off(100);
    body["min_order_total"] = json!("50.00");
    body["coupon_valid_days"] = json!(7);
    let r = reward(&s, body).await;
    let code = redeem(&s, &s.pos, &m, &r).await.body["coupon"]["code"]
        .as_str()
        .expect("code")
        .to_string();
    let check = |order_total: &str| json!({ "code": code, "order_total": order_total });
    let v = s
        .post("/api/v1/coupons/validate", &s.pos, &check("49.99"))
        .await;
    v.expect(200);
    assert_eq!(
        (v.body["valid"].clone(), v.body["reason"].clone()),
        (json!(false), json!("below_minimum"))
    );
    let v = s
        .post("/api/v1/coupons/validate", &s.pos, &check("80.00"))
        .await;
    assert_eq!(v.body["valid"], json!(true), "{}", v.text);
    assert_eq!(v.body["benefit"]["discount"], json!("10.00"));
    clock.set(at("2026-03-17T12:00:00Z"));
    let v = s
        .post("/api/v1/coupons/validate", &s.pos, &check("80.00"))
        .await;
    assert_eq!(v.body["reason"], json!("expired"), "{}", v.text);
    // An analytics key may not use coupons.
    s.post("/api/v1/coupons/validate", &s.analytics, &check("80.00"))
        .await
        .problem(403);
    // Unknown codes: a burst of 20 answers, then 429 with Retry-After for this key only.
    for i in 0..20 {
        let v = s
            .post(
                "/api/v1/coupons/validate",
                &s.pos,
                &json!({ "code": format!("NOPE-{i}") }),
            )
            .await;
        v.expect(200);
        assert_eq!(v.body["reason"], json!("malformed"));
    }
    let limited = s
        .post("/api/v1/coupons/validate", &s.pos, &check("80.00"))
        .await;
    limited.problem(429);
    assert_eq!(limited.header("retry-after"), Some("6"));
    let redeem_too = s
        .post(
            &format!("/api/v1/coupons/{code}/redeem"),
            &s.pos,
            &json!({}),
        )
        .await;
    redeem_too.problem(429);
    let other_key = s
        .post("/api/v1/coupons/validate", &s.admin, &check("80.00"))
        .await;
    other_key.expect(200);
    clock.set(at("2026-03-17T12:00:06Z"));
    s.post("/api/v1/coupons/validate", &s.pos, &check("80.00"))
        .await
        .expect(200);
    assert_verified(&s).await;
}

async fn cancelling_an_unused_coupon_gives_the_points_back(db: TestDb) {
    let s = start(db).await;
    let m = member_with_points(&s, "cancel-1", 300).await;
    let r = reward(&s, ten_off(250)).await;
    let code = redeem(&s, &s.pos, &m, &r).await.body["coupon"]["code"]
        .as_str()
        .expect("code")
        .to_string();
    assert_eq!(s.points(&s.pos, &m).await.0, 50);
    let c = s
        .send(
            Method::POST,
            &format!("/api/v1/members/{m}/coupons/{code}/cancel"),
            Some(&s.pos),
            None,
            None,
        )
        .await;
    c.expect(200);
    assert_eq!(c.body["points_returned"], json!(250));
    assert_eq!(s.points(&s.pos, &m).await.0, 300);
    let again = s
        .send(
            Method::POST,
            &format!("/api/v1/coupons/{code}/cancel"),
            Some(&s.pos),
            None,
            None,
        )
        .await;
    again.problem(409);
    assert_verified(&s).await;
}

async fn tiers_upgrade_on_purchase_multiply_earning_and_move_down_at_the_review(db: TestDb) {
    let clock = Arc::new(ManualClock::new(at("2026-03-10T12:00:00Z")));
    let s = start_with_clock(db, clock.clone()).await;
    s.instant_points(&s.admin).await;
    s.put("/api/v1/tiers", &s.pos, &spend_tiers("at_review"))
        .await
        .problem(403);
    let mut bad = spend_tiers("at_review");
    bad["tiers"][1]["threshold"] = json!("-5");
    let r = s.put("/api/v1/tiers", &s.admin, &bad).await;
    r.problem(422);
    assert_eq!(r.error_fields(), vec!["tiers.tiers.threshold".to_string()]);
    let r = s
        .put("/api/v1/tiers", &s.admin, &spend_tiers("at_review"))
        .await;
    r.expect(200);
    assert_eq!(
        s.get("/api/v1/tiers", &s.pos).await.body["tiers"]["tiers"][1]["name"],
        json!("Gold")
    );
    let id = s
        .create_member(&s.pos, json!({ "external_id": "tier-1" }))
        .await;
    s.purchase(&s.pos, &purchase_by_id(&id, "t-1", "180.00"))
        .await
        .expect(201);
    let t = s.get(&format!("/api/v1/members/{id}/tier"), &s.pos).await;
    t.expect(200);
    assert_eq!(t.body["tier"], json!("Silver"));
    assert_eq!(t.body["message"], json!("320.00 EUR more to Gold"));
    let p = s
        .purchase(&s.pos, &purchase_by_id(&id, "t-2", "320.00"))
        .await;
    p.expect(201);
    assert_eq!(
        p.body["points"],
        json!(320),
        "earned at the Silver rate: {}",
        p.text
    );
    let t = s.get(&format!("/api/v1/members/{id}/tier"), &s.pos).await;
    assert_eq!(t.body["tier"], json!("Gold"));
    assert_eq!(t.body["secured_until"], json!("2027-03-10T12:00:00Z"));
    assert_eq!(
        t.body["benefits"],
        json!({ "earn_multiplier": "1.5", "perks": ["free shipping"] })
    );
    // As Gold, purchases earn 50 % more, as an award of its own.
    let p = s
        .purchase(&s.pos, &purchase_by_id(&id, "t-3", "100.00"))
        .await;
    p.expect(201);
    assert_eq!(p.body["points"], json!(150), "{}", p.text);
    let sources: Vec<&str> = p.body["breakdown"]
        .as_array()
        .expect("breakdown")
        .iter()
        .filter_map(|a| a["source"].as_str())
        .collect();
    assert_eq!(sources, vec!["base", "tier:Gold"]);
    // Half a year later the member spends enough to keep Gold at the review.
    clock.set(at("2026-09-10T12:00:00Z"));
    s.purchase(&s.pos, &purchase_by_id(&id, "t-4", "600.00"))
        .await
        .expect(201);
    clock.set(at("2027-03-10T12:00:00Z") - chrono::Duration::seconds(1));
    assert_eq!(
        run_jobs(&s).await["tier_reviews"],
        json!(0),
        "a second before the review"
    );
    clock.set(at("2027-03-10T12:00:00Z"));
    let report = run_jobs(&s).await;
    assert_eq!(
        (report["tier_reviews"].clone(), report["tier_moves"].clone()),
        (json!(1), json!(0)),
        "600.00 in the window keeps Gold: {report}"
    );
    let t = s.get(&format!("/api/v1/members/{id}/tier"), &s.pos).await;
    assert_eq!(t.body["secured_until"], json!("2028-03-10T12:00:00Z"));
    clock.set(at("2028-03-10T12:00:00Z"));
    let report = run_jobs(&s).await;
    assert_eq!(report["tier_moves"], json!(1), "{report}");
    let t = s.get(&format!("/api/v1/members/{id}/tier"), &s.pos).await;
    assert_eq!(t.body["tier"], json!("Silver"));
    assert_eq!(t.body["history"][0]["reason"], json!("review"));
    let removed = s.delete("/api/v1/tiers", &s.admin).await;
    removed.expect(200);
    assert_eq!(
        s.get("/api/v1/tiers", &s.pos).await.body["tiers"],
        Value::Null
    );
    s.get(&format!("/api/v1/members/{id}/tier"), &s.pos)
        .await
        .problem(404);
    assert_verified(&s).await;
}

async fn store_credit_is_spent_at_the_till_and_overspending_is_409(db: TestDb) {
    let s = start(db).await;
    s.set_program(&s.admin, json!({ "credit": { "cashback_percent": "5" } }))
        .await;
    let id = s
        .create_member(&s.pos, json!({ "external_id": "credit-1" }))
        .await;
    s.purchase(&s.pos, &purchase_by_id(&id, "c-1", "40.00"))
        .await
        .expect(201);
    let c = s.get(&format!("/api/v1/members/{id}/credit"), &s.pos).await;
    c.expect(200);
    assert_eq!(
        (c.body["balance"].clone(), c.body["currency"].clone()),
        (json!("2.00"), json!("EUR"))
    );
    let path = format!("/api/v1/members/{id}/credit/spend");
    let spent = s
        .post(
            &path,
            &s.pos,
            &json!({ "amount": "1.50", "order_id": "pos-1" }),
        )
        .await;
    spent.expect(201);
    assert_eq!(spent.body["balance"], json!("0.50"));
    let over = s
        .post(
            &path,
            &s.pos,
            &json!({ "amount": "0.51", "order_id": "pos-2" }),
        )
        .await;
    let p = over.problem(409);
    assert!(
        p["detail"]
            .as_str()
            .unwrap_or("")
            .contains("not enough store credit"),
        "{}",
        over.text
    );
    s.post(&path, &s.pos, &json!({ "amount": "0" }))
        .await
        .problem(422);
    s.post(&path, &s.analytics, &json!({ "amount": "0.10" }))
        .await
        .problem(403);
    s.post(
        &path,
        &s.pos,
        &json!({ "amount": "0.10", "currency": "USD" }),
    )
    .await
    .problem(422);
    assert_eq!(
        s.points(&s.pos, &id).await.0,
        0,
        "points (pending here) and credit never mix"
    );
    assert_verified(&s).await;
}

async fn transfers_and_donations_move_points_and_show_in_the_totals(db: TestDb) {
    let s = start(db).await;
    let a = member_with_points(&s, "fam-a", 1000).await;
    let b = s
        .create_member(&s.pos, json!({ "external_id": "fam-b" }))
        .await;
    let path = format!("/api/v1/members/{a}/transfers");
    let send = json!({ "to_member_id": b, "points": 200, "reason": "family pot" });
    let off = s.post(&path, &s.pos, &send).await;
    off.problem(422);
    s.set_program(&s.admin, json!({ "transfers": { "enabled": true, "max_points_per_transfer": 500, "max_points_per_month": 600 } })).await;
    let ok = s.post(&path, &s.pos, &send).await;
    ok.expect(201);
    assert_eq!(ok.body["to_balance"]["available"], json!(200));
    let big = s
        .post(
            &path,
            &s.pos,
            &json!({ "to_member_id": b, "points": 501, "reason": "x" }),
        )
        .await;
    assert!(
        big.problem(422)["detail"]
            .as_str()
            .unwrap_or("")
            .contains("per transfer")
    );
    let unknown = s
        .post(
            &path,
            &s.pos,
            &json!({ "to_member_id": "mem_nobody", "points": 1, "reason": "x" }),
        )
        .await;
    unknown.problem(404);
    let d = s
        .post(
            &format!("/api/v1/members/{a}/donations"),
            &s.pos,
            &json!({ "points": 300, "charity": "Red Cross" }),
        )
        .await;
    d.expect(201);
    assert_eq!(d.body["balance"]["available"], json!(500));
    s.post(
        &format!("/api/v1/members/{a}/donations"),
        &s.pos,
        &json!({ "points": 0, "charity": "Red Cross" }),
    )
    .await
    .problem(422);
    s.get("/api/v1/program/totals", &s.pos).await.problem(403);
    let t = s.get("/api/v1/program/totals", &s.analytics).await;
    t.expect(200);
    assert_eq!(t.body["donated"], json!(300));
    assert_eq!(t.body["outstanding"], json!(700));
    assert_eq!(t.body["in_transfer"], json!(0));
    assert_eq!(
        t.body["donations_by_charity"],
        json!([{ "charity": "Red Cross", "points": 300, "donations": 1 }])
    );
    assert_verified(&s).await;
}

async fn plan_perks_multiply_earning_only_while_the_subscription_is_active(db: TestDb) {
    let clock = Arc::new(ManualClock::new(at("2026-03-10T12:00:00Z")));
    let s = start_with_clock(db, clock.clone()).await;
    s.instant_points(&s.admin).await;
    // A purchase before the tenant offers any plan is earned on without reading the member,
    // and that is remembered: the plan created next must end it at once (below).
    let early = s
        .create_member(&s.pos, json!({ "external_id": "early-1" }))
        .await;
    let p = s
        .purchase(&s.pos, &purchase_by_id(&early, "early-o1", "10.00"))
        .await;
    assert_eq!(p.body["points"], json!(10), "{}", p.text);
    let shipping = reward(&s, json!({ "kind": "free_shipping", "title": "Free shipping", "points_cost": 0, "active": false })).await;
    let bad = s
        .post("/api/v1/plans", &s.admin, &json!({ "name": "Plus", "price": "4.99", "period_months": 1, "monthly_reward_id": "rwd_missing" }))
        .await;
    assert_eq!(
        bad.problem(422)["errors"][0]["field"],
        json!("monthly_reward_id")
    );
    let plan = s
        .post(
            "/api/v1/plans",
            &s.admin,
            &json!({ "name": "Plus", "price": "4.99", "period_months": 1, "earn_multiplier": "2", "monthly_reward_id": shipping, "perks": ["free returns"] }),
        )
        .await;
    plan.expect(201);
    assert_eq!(plan.body["price"], json!("4.99"));
    let plan_id = plan.body["id"].as_str().expect("plan id").to_string();
    let id = s
        .create_member(&s.pos, json!({ "external_id": "plus-1" }))
        .await;
    let sub = |event: &str, end: Option<&str>| {
        let mut b = json!({ "plan_id": plan_id, "event": event });
        if let Some(e) = end {
            b["period_end"] = json!(e);
        }
        b
    };
    let path = format!("/api/v1/members/{id}/subscriptions");
    let r = s
        .post(
            &path,
            &s.pos,
            &sub("subscribe", Some("2026-04-10T12:00:00Z")),
        )
        .await;
    r.expect(200);
    assert_eq!(r.body["perks_active"], json!(true));
    let p = s
        .purchase(&s.pos, &purchase_by_id(&id, "plus-o1", "10.00"))
        .await;
    assert_eq!(
        p.body["points"],
        json!(20),
        "×2 while subscribed: {}",
        p.text
    );
    assert_eq!(
        p.body["breakdown"][1]["source"],
        json!(format!("plan:{plan_id}"))
    );
    let report = run_jobs(&s).await;
    assert_eq!(report["perk_coupons"], json!(1), "{report}");
    assert_eq!(
        run_jobs(&s).await["perk_coupons"],
        json!(0),
        "once per month"
    );
    // Past the paid period without a renewal: no multiplier.
    clock.set(at("2026-04-10T12:00:00Z"));
    let p = s
        .purchase(&s.pos, &purchase_by_id(&id, "plus-o2", "10.00"))
        .await;
    assert_eq!(p.body["points"], json!(10), "{}", p.text);
    s.post(&path, &s.pos, &sub("renew", Some("2026-05-10T12:00:00Z")))
        .await
        .expect(200);
    let p = s
        .purchase(&s.pos, &purchase_by_id(&id, "plus-o3", "10.00"))
        .await;
    assert_eq!(p.body["points"], json!(20), "{}", p.text);
    s.post(&path, &s.pos, &sub("cancel", None))
        .await
        .expect(200);
    let p = s
        .purchase(&s.pos, &purchase_by_id(&id, "plus-o4", "10.00"))
        .await;
    assert_eq!(p.body["points"], json!(10), "{}", p.text);
    let g = s
        .get(&format!("/api/v1/members/{id}/subscription"), &s.pos)
        .await;
    assert_eq!(g.body["subscription"]["status"], json!("cancelled"));
    s.post(&path, &s.pos, &sub("lapse", None))
        .await
        .problem(409);
    s.post(
        &path,
        &s.pos,
        &sub("subscribe", Some("2020-01-01T00:00:00Z")),
    )
    .await
    .problem(409);
    s.post(
        &path,
        &s.pos,
        &json!({ "plan_id": plan_id, "event": "pause" }),
    )
    .await
    .problem(422);
    assert_verified(&s).await;
}

async fn bad_rewards_are_refused_naming_the_field_and_write_nothing(db: TestDb) {
    let s = start(db).await;
    let cases = vec![
        (
            json!({ "kind": "fixed_discount", "title": "x", "points_cost": 10 }),
            "value",
        ),
        (
            json!({ "kind": "percent_discount", "title": "x", "points_cost": 10, "percent": "120" }),
            "percent",
        ),
        (
            json!({ "kind": "free_product", "title": "x", "points_cost": 10 }),
            "sku",
        ),
        (
            json!({ "kind": "custom", "title": "", "points_cost": 10 }),
            "title",
        ),
        (
            json!({ "kind": "custom", "title": "x", "points_cost": -1 }),
            "points_cost",
        ),
        (
            json!({ "kind": "custom", "title": "x", "points_cost": 1, "min_tier": "Gold" }),
            "min_tier",
        ),
        (
            json!({ "kind": "custom", "title": "x", "points_cost": 1, "valid_until": "soon" }),
            "valid_until",
        ),
    ];
    for (body, field) in cases {
        let r = s.post("/api/v1/rewards", &s.admin, &body).await;
        r.problem(422);
        assert_eq!(
            r.error_fields(),
            vec![field.to_string()],
            "{body}: {}",
            r.text
        );
    }
    s.post("/api/v1/rewards", &s.pos, &ten_off(1))
        .await
        .problem(403);
    let list = s.get("/api/v1/rewards", &s.pos).await;
    assert_eq!(list.body["items"], json!([]));
    let m = member_with_points(&s, "nobody-redeems", 10).await;
    redeem(&s, &s.pos, &m, "rwd_missing").await.problem(404);
    redeem(&s, &s.analytics, &m, "rwd_missing")
        .await
        .problem(403);
    assert_verified(&s).await;
}

fidelis_store_tests::on_both!(
    a_hundred_concurrent_redemptions_over_http_give_exactly_ten_and_ninety_409s,
    a_reward_with_stock_five_and_fifty_members_at_once_gives_exactly_five_coupons,
    a_coupon_redeemed_twice_at_the_till_is_refused_and_its_retry_replays,
    coupon_validation_answers_valid_or_the_reason_and_guessing_is_limited,
    cancelling_an_unused_coupon_gives_the_points_back,
    tiers_upgrade_on_purchase_multiply_earning_and_move_down_at_the_review,
    store_credit_is_spent_at_the_till_and_overspending_is_409,
    transfers_and_donations_move_points_and_show_in_the_totals,
    plan_perks_multiply_earning_only_while_the_subscription_is_active,
    bad_rewards_are_refused_naming_the_field_and_write_nothing,
);
