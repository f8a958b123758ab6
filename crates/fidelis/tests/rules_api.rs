//! The rules and campaigns API over HTTP, on SQLite and PostgreSQL: validation errors as
//! problem documents (with line and column for expressions) that write nothing, versions and
//! statuses, simulations and backtests that write nothing.

mod common;

use common::*;
use serde_json::{Value, json};

fn rule(condition: &str) -> Value {
    json!({
        "name": "Shoes on the web",
        "trigger": "purchase",
        "condition": condition,
        "effects": [{"type": "multiplier", "factor": "2", "lines": "line.category == 'shoes'"}],
    })
}

/// Asserts a 422 validation problem naming `field`, whose detail contains `says`.
#[track_caller]
fn refused(r: &Resp, field: &str, says: &str) {
    r.problem(422);
    assert_eq!(r.error_fields(), vec![field.to_string()], "{}", r.text);
    let detail = r.body["detail"].as_str().unwrap_or("");
    assert!(detail.contains(says), "{detail:?} does not say {says:?}");
}

async fn bad_rules_are_refused_with_a_clear_problem_and_nothing_is_written(
    db: fidelis_store_tests::TestDb,
) {
    let s = start(db).await;
    let cases = [
        // A syntax error points at its line and column.
        (
            rule("event.channel == \"web\" &&\n  event.total >"),
            "condition",
            "line 2, column 16: the expression ends too early",
        ),
        (
            rule("event.channel = \"web\""),
            "condition",
            "line 1, column 15: `=` is not an operator here",
        ),
        // A wrong type.
        (
            rule("event.total == \"50\""),
            "condition",
            "line 1, column 13: `==` cannot compare double with string",
        ),
        (
            rule("event.total + 1"),
            "condition",
            "must be true or false",
        ),
        // An unknown field, with a suggestion.
        (
            rule("event.chanel == \"web\""),
            "condition",
            "line 1, column 7: unknown field `chanel` on `event` (did you mean `channel`?)",
        ),
        (
            rule("member.tier in [\"gold\"] && membr.age > 18"),
            "condition",
            "unknown name `membr` (did you mean `member`?)",
        ),
        // Over the length and depth limits.
        (
            rule(&format!(
                "event.total > 1 || {}",
                "true || ".repeat(600) + "true"
            )),
            "condition",
            "the limit is 4096",
        ),
        (
            rule(&format!("{}true{}", "(".repeat(40), ")".repeat(40))),
            "condition",
            "nests deeper than 32 levels",
        ),
        // And the other fields of a rule.
        (
            json!({"name": "x", "trigger": "purchase", "effects": [{"type": "multiplier", "factor": "2", "lines": "line.colour == 'red'"}]}),
            "effects[0].lines",
            "unknown field `colour` on `line`",
        ),
        (
            json!({"name": "x", "trigger": "purchase", "effects": []}),
            "effects",
            "1 to 10 effects",
        ),
        (
            json!({"name": "x", "trigger": "purchase", "schedule": [{"days": ["funday"]}], "effects": [{"type": "points", "points": 5}]}),
            "schedule[0].days[0]",
            "not a day",
        ),
        (
            json!({"name": "x", "trigger": "purchase", "campaign_id": "cmp_nope", "effects": [{"type": "points", "points": 5}]}),
            "campaign_id",
            "there is no campaign",
        ),
        (
            json!({"name": "x", "trigger": "sometimes", "effects": [{"type": "points", "points": 5}]}),
            "trigger",
            "unknown variant `sometimes`",
        ),
    ];
    for (body, field, says) in &cases {
        let r = s.post("/api/v1/rules", &s.admin, body).await;
        refused(&r, field, says);
    }
    let list = s.get("/api/v1/rules", &s.admin).await;
    list.expect(200);
    assert_eq!(list.body["items"], json!([]), "no refused rule was saved");
    // Only admin keys manage rules.
    let r = s.post("/api/v1/rules", &s.pos, &rule("true")).await;
    r.problem(403);
    let r = s.get("/api/v1/rules", &s.analytics).await;
    r.problem(403);
    // A campaign's target expression is checked the same way.
    let r = s
        .post("/api/v1/campaigns", &s.admin, &json!({"name": "Gold", "target": {"kind": "expression", "expression": "member.tierr == 'gold'"}}))
        .await;
    refused(
        &r,
        "target.expression",
        "unknown field `tierr` on `member` (did you mean `tier`?)",
    );
}

async fn a_rule_is_versioned_and_moves_through_its_statuses(db: fidelis_store_tests::TestDb) {
    let s = start(db).await;
    let r = s
        .post("/api/v1/rules", &s.admin, &rule("event.channel == \"web\""))
        .await;
    r.expect(201);
    let id = r.body["id"].as_str().expect("an id").to_string();
    assert_eq!(
        (r.body["version"].clone(), r.body["status"].clone()),
        (json!(1), json!("draft"))
    );
    assert_eq!(r.body["condition"], json!("event.channel == \"web\""));
    let r = s
        .put(
            &format!("/api/v1/rules/{id}"),
            &s.admin,
            &rule("event.channel == \"app\""),
        )
        .await;
    r.expect(200);
    assert_eq!(r.body["version"], json!(2));
    let v1 = s
        .get(&format!("/api/v1/rules/{id}?version=1"), &s.admin)
        .await;
    v1.expect(200);
    assert_eq!(v1.body["condition"], json!("event.channel == \"web\""));
    let versions = s
        .get(&format!("/api/v1/rules/{id}/versions"), &s.admin)
        .await;
    versions.expect(200);
    assert_eq!(versions.body["items"].as_array().map(Vec::len), Some(2));
    for (action, status) in [
        ("activate", "active"),
        ("pause", "paused"),
        ("activate", "active"),
        ("end", "ended"),
    ] {
        let r = s
            .post(
                &format!("/api/v1/rules/{id}/{action}"),
                &s.admin,
                &json!({}),
            )
            .await;
        r.expect(200);
        assert_eq!(r.body["status"], json!(status));
    }
    let r = s
        .post(
            &format!("/api/v1/rules/{id}/activate"),
            &s.admin,
            &json!({}),
        )
        .await;
    r.problem(409);
    let r = s
        .put(&format!("/api/v1/rules/{id}"), &s.admin, &rule("true"))
        .await;
    r.problem(409);
    let r = s.get("/api/v1/rules/rul_nope", &s.admin).await;
    r.problem(404);
    let r = s.get("/api/v1/rules?status=ended", &s.admin).await;
    r.expect(200);
    assert_eq!(r.body["items"].as_array().map(Vec::len), Some(1));
    // Another tenant sees none of it.
    let r = s.get(&format!("/api/v1/rules/{id}"), &s.admin_b).await;
    r.problem(404);
}

async fn a_simulation_explains_every_rule_and_writes_nothing(db: fidelis_store_tests::TestDb) {
    let s = start(db).await;
    s.instant_points(&s.admin).await;
    let member = s
        .create_member(&s.admin, json!({"external_id": "sim-1"}))
        .await;
    let shoes = s
        .post(
            "/api/v1/rules",
            &s.admin,
            &rule("event.channel == \"web\" && event.lines.exists(l, l.category == \"shoes\")"),
        )
        .await;
    shoes.expect(201);
    let shoes = shoes.body["id"].as_str().expect("id").to_string();
    s.post(
        &format!("/api/v1/rules/{shoes}/activate"),
        &s.admin,
        &json!({}),
    )
    .await
    .expect(200);
    let pos = s
        .post("/api/v1/rules", &s.admin, &json!({"name": "Till bonus", "trigger": "purchase", "condition": "event.channel == 'pos'",
            "effects": [{"type": "points", "points": 100}], "caps": {"per_member_day": 100}}))
        .await;
    pos.expect(201);
    let pos = pos.body["id"].as_str().expect("id").to_string();
    s.post(
        &format!("/api/v1/rules/{pos}/activate"),
        &s.admin,
        &json!({}),
    )
    .await
    .expect(200);
    let before = s.snapshot(&s.admin, &member).await;
    let body = json!({
        "event": {"trigger": "purchase", "channel": "web", "total": "59.90", "lines": [
            {"sku": "shoe-42", "category": "shoes", "quantity": 1, "unit_price": "49.90"},
            {"sku": "sock-7", "category": "socks", "quantity": 2, "unit_price": "5.00"}]},
        "member": {"id": member},
    });
    for _ in 0..3 {
        let r = s.post("/api/v1/rules/simulate", &s.admin, &body).await;
        r.expect(200);
        assert_eq!(r.body["points"], json!(59 + 49), "{}", r.text);
        let traces = r.body["rules"].as_array().expect("rules");
        let find = |id: &str| {
            traces
                .iter()
                .find(|t| t["rule_id"] == json!(id))
                .cloned()
                .unwrap_or_default()
        };
        assert_eq!(find(&shoes)["matched"], json!(true));
        assert_eq!(find(&pos)["matched"], json!(false));
        assert_eq!(find(&pos)["reason"], json!("the condition is false"));
    }
    // A till purchase would get the capped bonus: the simulation says which cap applies.
    let mut till = body.clone();
    till["event"]["channel"] = json!("pos");
    let r = s.post("/api/v1/rules/simulate", &s.admin, &till).await;
    r.expect(200);
    let traces = r.body["rules"].as_array().expect("rules");
    let t = traces
        .iter()
        .find(|t| t["rule_id"] == json!(pos))
        .expect("trace");
    assert_eq!(t["limits"], json!(["rule per member per day (100)"]));
    let shoe_trace = traces
        .iter()
        .find(|t| t["rule_id"] == json!(shoes))
        .expect("trace");
    assert_eq!(
        shoe_trace["reason"],
        json!("the condition is false: `event.channel == \"web\"` is false")
    );
    // Nothing was written: the member, the balance and the ledger are as they were, and the
    // cap is untouched (a real till purchase still gets the whole bonus).
    assert_eq!(s.snapshot(&s.admin, &member).await, before);
    let real = s
        .purchase(&s.admin, &json!({"member": {"id": member}, "order_id": "o-1", "channel": "pos", "currency": "EUR", "total": "10.00",
            "lines": [{"sku": "x", "quantity": 1, "unit_price": "10.00"}]}))
        .await;
    real.expect(201);
    assert_eq!(real.body["points"], json!(110));
    let award = real.body["breakdown"]
        .as_array()
        .and_then(|b| b.iter().find(|a| a["source"] == json!(pos)).cloned())
        .expect("award");
    assert_eq!(award["rule_version"], json!(1));
    assert!(award.get("terms").is_none(), "no internals on the wire");
    // Drafts can be simulated on request.
    let draft = s.post("/api/v1/rules", &s.admin, &json!({"name": "Draft", "trigger": "purchase", "effects": [{"type": "points", "points": 7}]})).await;
    let draft = draft.body["id"].as_str().expect("id").to_string();
    let mut with_drafts = body.clone();
    with_drafts["include_drafts"] = json!(true);
    let r = s
        .post("/api/v1/rules/simulate", &s.admin, &with_drafts)
        .await;
    r.expect(200);
    assert!(
        r.body["rules"]
            .as_array()
            .expect("rules")
            .iter()
            .any(|t| t["rule_id"] == json!(draft) && t["matched"] == json!(true))
    );
    let r = s
        .post(
            "/api/v1/rules/simulate",
            &s.admin,
            &json!({"event": {"trigger": "purchase", "channel": "web", "total": "1.999"}}),
        )
        .await;
    refused(&r, "event.total", "more decimals than EUR allows");
    // A tier's multiplier, which the writer adds to a purchase, shows in a simulation too,
    // after the base rate.
    s.put(
        "/api/v1/tiers",
        &s.admin,
        &json!({"metric": "spend", "window": {"kind": "rolling", "months": 12},
            "review": {"kind": "anniversary", "months": 12},
            "tiers": [{"name": "Silver", "threshold": "0"},
                      {"name": "Gold", "threshold": "500.00", "earn_multiplier": "1.5"}]}),
    )
    .await
    .expect(200);
    let r = s
        .post(
            "/api/v1/rules/simulate",
            &s.admin,
            &json!({"event": {"trigger": "purchase", "channel": "web", "total": "10.00"},
                "member": {"tier": "Gold"}}),
        )
        .await;
    r.expect(200);
    let awards: Vec<(String, i64)> = r.body["awards"]
        .as_array()
        .expect("awards")
        .iter()
        .map(|a| {
            (
                a["source"].as_str().unwrap_or_default().to_string(),
                a["points"].as_i64().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        &awards[..2],
        &[("base".to_string(), 10), ("tier:Gold".to_string(), 5)],
        "{}",
        r.text
    );
}

async fn a_backtest_replays_stored_events_and_writes_nothing(db: fidelis_store_tests::TestDb) {
    let s = start(db).await;
    s.instant_points(&s.admin).await;
    let mut members = Vec::new();
    for i in 0..4 {
        let m = s
            .create_member(&s.admin, json!({"external_id": format!("bt-{i}")}))
            .await;
        for (k, (day, channel)) in [
            ("2026-01-10", "web"),
            ("2026-01-17", "pos"),
            ("2026-01-24", "web"),
        ]
        .iter()
        .enumerate()
        {
            let r = s
                .purchase(&s.admin, &json!({"member": {"id": m}, "order_id": format!("bt-{i}-{k}"), "channel": channel, "currency": "EUR",
                    "total": "20.00", "occurred_at": format!("{day}T12:00:00Z"),
                    "lines": [{"sku": "shoe", "category": "shoes", "quantity": 1, "unit_price": "20.00"}]}))
                .await;
            r.expect(201);
        }
        members.push(m);
    }
    let c = s
        .post(
            "/api/v1/campaigns",
            &s.admin,
            &json!({"name": "January web", "budget_points": 100}),
        )
        .await;
    c.expect(201);
    let campaign = c.body["id"].as_str().expect("id").to_string();
    let r = s
        .post(
            "/api/v1/rules",
            &s.admin,
            &json!({"name": "Web bonus", "trigger": "purchase", "campaign_id": campaign,
            "condition": "event.channel == 'web'", "effects": [{"type": "points", "points": 15}]}),
        )
        .await;
    r.expect(201);
    let before: Vec<Value> = futures_snapshots(&s, &members).await;
    let r = s
        .post(
            &format!("/api/v1/campaigns/{campaign}/backtest"),
            &s.admin,
            &json!({"from": "2026-01-01T00:00:00Z", "to": "2026-02-01T00:00:00Z"}),
        )
        .await;
    r.expect(200);
    // 8 web purchases × 15 = 120, cut to the budget of 100, across 4 members.
    assert_eq!(r.body["events_scanned"], json!(12), "{}", r.text);
    assert_eq!(r.body["points"], json!(100));
    assert_eq!(r.body["capped_points"], json!(20));
    assert_eq!(r.body["members"], json!(4));
    assert_eq!(r.body["budget_used_percent"], json!(100.0));
    assert!(
        r.body["budget_exhausted_at"]
            .as_str()
            .is_some_and(|t| t.starts_with("2026-01-24"))
    );
    // Nothing was written.
    assert_eq!(futures_snapshots(&s, &members).await, before);
    let c = s
        .get(&format!("/api/v1/campaigns/{campaign}"), &s.admin)
        .await;
    c.expect(200);
    assert_eq!(
        (
            c.body["spent_points"].clone(),
            c.body["remaining_points"].clone()
        ),
        (json!(0), json!(100))
    );
    let r = s
        .post(
            &format!("/api/v1/campaigns/{campaign}/backtest"),
            &s.admin,
            &json!({"from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}),
        )
        .await;
    refused(&r, "to", "after `from`");
    let r = s
        .post(
            &format!("/api/v1/campaigns/{campaign}/backtest"),
            &s.admin,
            &json!({"from": "2020-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}),
        )
        .await;
    refused(&r, "to", "at most 400 days");
}

async fn futures_snapshots(s: &Server, members: &[String]) -> Vec<Value> {
    let mut out = Vec::new();
    for m in members {
        out.push(s.snapshot(&s.admin, m).await);
    }
    out
}

async fn a_campaign_list_targets_its_members(db: fidelis_store_tests::TestDb) {
    let s = start(db).await;
    s.instant_points(&s.admin).await;
    let a = s
        .create_member(&s.admin, json!({"external_id": "list-a"}))
        .await;
    let b = s
        .create_member(&s.admin, json!({"external_id": "list-b"}))
        .await;
    // Named on the list by Fidelis's own id rather than the external one.
    let by_id = s
        .create_member(&s.admin, json!({"external_id": "list-c"}))
        .await;
    let c = s
        .post(
            "/api/v1/campaigns",
            &s.admin,
            &json!({"name": "VIP list", "target": {"kind": "list"}}),
        )
        .await;
    let campaign = c.body["id"].as_str().expect("id").to_string();
    let r = s
        .post(
            &format!("/api/v1/campaigns/{campaign}/members"),
            &s.admin,
            &json!({"members": ["list-a", "nobody", by_id]}),
        )
        .await;
    r.expect(200);
    assert_eq!(
        (r.body["list_size"].clone(), r.body["unknown"].clone()),
        (json!(2), json!(["nobody"]))
    );
    s.post(
        &format!("/api/v1/campaigns/{campaign}/activate"),
        &s.admin,
        &json!({}),
    )
    .await
    .expect(200);
    let r = s
        .post("/api/v1/rules", &s.admin, &json!({"name": "VIP", "trigger": "purchase", "campaign_id": campaign, "effects": [{"type": "points", "points": 40}]}))
        .await;
    let id = r.body["id"].as_str().expect("id").to_string();
    s.post(
        &format!("/api/v1/rules/{id}/activate"),
        &s.admin,
        &json!({}),
    )
    .await
    .expect(200);
    let pa = s
        .purchase(&s.admin, &purchase_by_id(&a, "la-1", "10.00"))
        .await;
    let pb = s
        .purchase(&s.admin, &purchase_by_id(&b, "lb-1", "10.00"))
        .await;
    let pc = s
        .purchase(&s.admin, &purchase_by_id(&by_id, "lc-1", "10.00"))
        .await;
    assert_eq!(
        (
            pa.body["points"].clone(),
            pb.body["points"].clone(),
            pc.body["points"].clone()
        ),
        (json!(50), json!(10), json!(50))
    );
    let c = s
        .get(&format!("/api/v1/campaigns/{campaign}"), &s.admin)
        .await;
    assert_eq!(
        (c.body["spent_points"].clone(), c.body["list_size"].clone()),
        (json!(80), json!(2))
    );
}

fidelis_store_tests::on_both!(
    bad_rules_are_refused_with_a_clear_problem_and_nothing_is_written,
    a_rule_is_versioned_and_moves_through_its_statuses,
    a_simulation_explains_every_rule_and_writes_nothing,
    a_backtest_replays_stored_events_and_writes_nothing,
    a_campaign_list_targets_its_members,
);
