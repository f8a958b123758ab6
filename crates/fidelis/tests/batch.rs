//! The batch endpoint and the programme's currency lock, over HTTP on both databases.

mod common;

use common::*;
use serde_json::json;

/// A batch's answers, checked to have these statuses in order.
fn answers(r: &Resp, statuses: &[i64]) -> Vec<serde_json::Value> {
    r.expect(200);
    let results = r.body["results"].as_array().expect("results").clone();
    let got: Vec<i64> = results
        .iter()
        .map(|x| x["status"].as_i64().unwrap_or(0))
        .collect();
    assert_eq!(got, statuses, "{}", r.text);
    results
}

async fn a_batch_answers_each_event_on_its_own(db: fidelis_store_tests::TestDb) {
    let s = start(db).await;
    s.instant_points(&s.admin).await;
    let mut first = purchase_by_external("batch-1", "b-o-1", "10.00");
    first["type"] = json!("purchase");
    let mut bad = purchase_by_external("batch-1", "b-o-2", "10.999");
    bad["type"] = json!("purchase");
    let mut second = purchase_by_external("batch-2", "b-o-3", "25.00");
    second["type"] = json!("purchase");
    let refund = json!({ "type": "refund", "order_id": "b-o-1", "amount": "10.00" });
    let custom = json!({ "type": "review_written", "member": { "external_id": "batch-2" }, "properties": { "stars": 5 } });
    let body = json!({ "events": [first, bad, second, json!({ "order_id": "x" }), custom] });
    let r = s
        .post_idem("/api/v1/events/batch", &s.pos, &body, "batch-key-1")
        .await;
    let results = answers(&r, &[201, 422, 201, 422, 201]);
    assert_eq!(r.body["failed"], json!(2));
    assert_eq!(results[1]["body"]["type"], json!("/problems/validation"));
    assert_eq!(results[2]["body"]["points"], json!(25));
    // Retried with the same key: every recorded event replays, nothing is counted twice.
    let again = s
        .post_idem("/api/v1/events/batch", &s.pos, &body, "batch-key-1")
        .await;
    again.expect(200);
    assert_eq!(again.body["results"][2]["body"], results[2]["body"]);
    let m = s
        .get("/api/v1/members/lookup?external_id=batch-2", &s.pos)
        .await;
    m.expect(200);
    let id = m.body["id"].as_str().expect("id").to_string();
    assert_eq!(s.points(&s.pos, &id).await.0, 25);
    // A refund in its own batch, after the purchase it refunds.
    let r = s
        .post(
            "/api/v1/events/batch",
            &s.pos,
            &json!({ "events": [refund] }),
        )
        .await;
    assert_eq!(r.body["results"][0]["status"], json!(201), "{}", r.text);
    let verify = s.get("/api/v1/verify", &s.admin).await;
    assert_eq!(verify.body["ok"], json!(true), "{}", verify.text);
}

/// A batch event's fault is named by its field's path, as a single event's is; the event's
/// `type` is the batch's, never an unknown field of its input.
async fn a_batch_event_s_fault_names_its_field(db: fidelis_store_tests::TestDb) {
    let s = start(db).await;
    s.instant_points(&s.admin).await;
    let mut extra = purchase_by_external("batch-f", "f-o-1", "10.00");
    extra["type"] = json!("purchase");
    extra["colour"] = json!("red");
    let mut line = purchase_by_external("batch-f", "f-o-2", "10.00");
    line["type"] = json!("purchase");
    line["lines"] = json!([{ "sku": "a", "quantity": "two", "unit_price": "5.00" }]);
    let mut fine = purchase_by_external("batch-f", "f-o-3", "10.00");
    fine["type"] = json!("purchase");
    let refund = json!({ "type": "refund", "order_id": "f-o-3", "amount": 3 });
    let custom = json!({ "type": "review_written", "member": { "external_id": "batch-f" }, "properties": 5 });
    let body = json!({ "events": [extra, line, fine, 42, { "type": 7 }, refund, custom] });
    let r = s.post("/api/v1/events/batch", &s.pos, &body).await;
    let results = answers(&r, &[422, 422, 201, 422, 422, 422, 422]);
    let field = |i: usize| results[i]["body"]["errors"][0]["field"].clone();
    assert!(
        results[0]["body"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("unknown field `colour`")),
        "{}",
        r.text
    );
    assert_eq!(field(1), json!("lines[0].quantity"), "{}", r.text);
    assert_eq!(field(3), json!("type"), "{}", r.text);
    assert_eq!(field(4), json!("type"), "{}", r.text);
    assert_eq!(field(5), json!("amount"), "{}", r.text);
    assert_eq!(field(6), json!("properties"), "{}", r.text);
}

async fn a_full_batch_of_ordinary_purchases_is_accepted(db: fidelis_store_tests::TestDb) {
    let s = start(db).await;
    s.instant_points(&s.admin).await;
    // 1,000 purchases of three lines: about 400 KiB, over the 256 KiB of other endpoints.
    let events: Vec<_> = (0..fidelis_http::MAX_BATCH_EVENTS)
        .map(|i| {
            json!({
                "type": "purchase",
                "member": { "external_id": format!("full-{}", i % 50) },
                "order_id": format!("full-order-{i:04}"),
                "channel": "pos",
                "store_id": "paris-rivoli-01",
                "currency": "EUR",
                "total": "42.50",
                "lines": [
                    { "sku": "SHOE-RUN-42", "category": "shoes", "quantity": 1, "unit_price": "30.00" },
                    { "sku": "SOCK-PACK-3", "category": "clothing", "quantity": 1, "unit_price": "10.00" },
                    { "sku": "BAG-PAPER", "category": "accessories", "quantity": 1, "unit_price": "2.50" },
                ],
            })
        })
        .collect();
    let body = json!({ "events": events });
    assert!(body.to_string().len() > fidelis_http::MAX_BODY_BYTES);
    let r = s.post("/api/v1/events/batch", &s.pos, &body).await;
    r.expect(200);
    assert_eq!(
        r.body["failed"],
        json!(0),
        "{}",
        &r.text[..r.text.len().min(2000)]
    );
    assert_eq!(
        r.body["results"].as_array().map(Vec::len),
        Some(fidelis_http::MAX_BATCH_EVENTS)
    );
    let verify = s.get("/api/v1/verify", &s.admin).await;
    assert_eq!(verify.body["ok"], json!(true), "{}", verify.text);
}

async fn a_batch_over_the_limit_or_empty_is_refused(db: fidelis_store_tests::TestDb) {
    let s = start(db).await;
    let one = purchase_by_external("x", "o", "1.00");
    let many: Vec<_> = (0..=fidelis_http::MAX_BATCH_EVENTS)
        .map(|_| one.clone())
        .collect();
    for events in [json!([]), json!(many)] {
        let r = s
            .post("/api/v1/events/batch", &s.pos, &json!({ "events": events }))
            .await;
        if let Err(e) = r.check_problem(422) {
            panic!("{e}");
        }
    }
    let r = s
        .post(
            "/api/v1/events/batch",
            &s.analytics,
            &json!({ "events": [one] }),
        )
        .await;
    if let Err(e) = r.check_problem(403) {
        panic!("{e}");
    }
}

async fn the_currency_cannot_change_once_events_exist(db: fidelis_store_tests::TestDb) {
    let s = start(db).await;
    // Before any event, a retailer may still pick its currency.
    let program = s.get("/api/v1/program", &s.admin).await;
    let mut settings = program.body["settings"].clone();
    settings["currency"] = json!("CHF");
    s.put("/api/v1/program", &s.admin, &settings)
        .await
        .expect(200);
    let mut p = purchase_by_external("cur-1", "cur-o-1", "10.00");
    p["currency"] = json!("CHF");
    s.purchase(&s.pos, &p).await.expect(201);
    settings["currency"] = json!("EUR");
    let r = s.put("/api/v1/program", &s.admin, &settings).await;
    if let Err(e) = r.check_problem(422) {
        panic!("{e}");
    }
    let after = s.get("/api/v1/program", &s.admin).await;
    assert_eq!(after.body["settings"]["currency"], json!("CHF"));
}

fidelis_store_tests::on_both!(
    a_full_batch_of_ordinary_purchases_is_accepted,
    a_batch_answers_each_event_on_its_own,
    a_batch_over_the_limit_or_empty_is_refused,
    a_batch_event_s_fault_names_its_field,
    the_currency_cannot_change_once_events_exist,
);
