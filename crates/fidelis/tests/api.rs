//! Black-box tests of the HTTP API: a real server on a real database (SQLite and PostgreSQL),
//! spoken to over HTTP only. Each scenario runs once per database (see `on_both!`).

mod common;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::BTreeSet;

/// Percent-encodes a query value.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn in_days(days: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::days(days))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn kinds(ledger: &[Value]) -> Vec<&str> {
    ledger.iter().filter_map(|t| t["kind"].as_str()).collect()
}

// ---------------------------------------------------------------------------------------------
// 1. Authentication, scopes, tenants
// ---------------------------------------------------------------------------------------------

async fn requests_without_a_valid_key_are_401(db: fidelis_store_tests::TestDb) {
    let s = start(db).await;
    let body = purchase_by_external("x-1", "o-1", "10.00");
    // No key at all.
    let r = s
        .send(Method::GET, "/api/v1/members", None, None, None)
        .await;
    r.problem(401);
    let r = s
        .send(
            Method::POST,
            "/api/v1/events/purchase",
            None,
            Some(&body),
            None,
        )
        .await;
    r.problem(401);
    // A key that was never issued, and one far too long.
    let r = s
        .send(Method::GET, "/api/v1/members", Some("garbage"), None, None)
        .await;
    r.problem(401);
    let long = "k".repeat(500);
    let r = s
        .send(Method::GET, "/api/v1/program", Some(&long), None, None)
        .await;
    r.problem(401);
    let r = s
        .send(
            Method::POST,
            "/api/v1/events/purchase",
            Some("fk_not_a_real_key"),
            Some(&body),
            None,
        )
        .await;
    r.problem(401);
    // A real key sent in the wrong scheme.
    let r = s
        .client
        .get(s.url("/api/v1/members"))
        .header("authorization", format!("Basic {}", s.admin))
        .send()
        .await
        .expect("an answer");
    Resp::read(r).await.problem(401);
    // Nothing was written by the refused purchases.
    let r = s
        .get("/api/v1/members/lookup?external_id=x-1", &s.admin)
        .await;
    r.problem(404);
    let r = s.purchase(&s.admin, &body).await;
    r.expect(201);
    assert_eq!(r.body["duplicate"], json!(false));
}

async fn keys_without_the_scope_are_403(db: fidelis_store_tests::TestDb) {
    let s = start(db).await;
    let member = s
        .create_member(&s.pos, json!({ "external_id": "scoped-1" }))
        .await;
    let before_program = s.get("/api/v1/program", &s.pos).await;
    before_program.expect(200);
    let before = s.snapshot(&s.admin, &member).await;

    let mut settings = before_program.body["settings"].clone();
    settings["earn_rate"] = json!("5");
    let r = s.put("/api/v1/program", &s.pos, &settings).await;
    r.problem(403);
    assert_eq!(r.kind(), "/problems/forbidden");

    let r = s.adjust(&s.pos, &member, 100, "goodwill").await;
    r.problem(403);
    let r = s.adjust(&s.analytics, &member, 100, "goodwill").await;
    r.problem(403);
    let r = s
        .purchase(&s.analytics, &purchase_by_id(&member, "o-an-1", "10.00"))
        .await;
    r.problem(403);
    let r = s.get("/api/v1/keys", &s.pos).await;
    r.problem(403);
    let r = s
        .post("/api/v1/keys", &s.pos, &json!({ "scope": "admin" }))
        .await;
    r.problem(403);

    let after_program = s.get("/api/v1/program", &s.admin).await;
    assert_eq!(after_program.body, before_program.body);
    assert_eq!(s.snapshot(&s.admin, &member).await, before);
    // The refused purchase left no order behind.
    let r = s
        .purchase(&s.pos, &purchase_by_id(&member, "o-an-1", "10.00"))
        .await;
    r.expect(201);
    assert_eq!(r.body["duplicate"], json!(false));
}

async fn revoked_key_is_401(db: fidelis_store_tests::TestDb) {
    let s = start(db).await;
    let r = s
        .post(
            "/api/v1/keys",
            &s.admin,
            &json!({ "scope": "pos", "label": "till 7" }),
        )
        .await;
    r.expect(201);
    let id = r.body["id"].as_str().expect("key id").to_string();
    let secret = r.body["key"].as_str().expect("key secret").to_string();
    assert_eq!(r.body["scope"], json!("pos"));
    assert_eq!(r.body["revoked"], json!(false));

    s.get("/api/v1/program", &secret).await.expect(200);
    let r = s.delete(&format!("/api/v1/keys/{id}"), &s.admin).await;
    r.expect(204);

    s.get("/api/v1/program", &secret).await.problem(401);
    s.purchase(&secret, &purchase_by_external("rv-1", "o-rv-1", "5.00"))
        .await
        .problem(401);
    let keys = s.get("/api/v1/keys", &s.admin).await;
    keys.expect(200);
    let listed = keys
        .body
        .as_array()
        .expect("a list of keys")
        .iter()
        .find(|k| k["id"] == json!(id))
        .expect("the revoked key is listed")
        .clone();
    assert_eq!(listed["revoked"], json!(true));
    assert!(
        !keys.text.contains(&secret),
        "the key list must not show secrets"
    );
    // Revoking twice: the key is no longer live.
    s.delete(&format!("/api/v1/keys/{id}"), &s.admin)
        .await
        .problem(404);
}

async fn other_tenants_members_are_404_and_untouched(db: fidelis_store_tests::TestDb) {
    let s = start(db).await;
    s.instant_points(&s.admin_b).await;
    let theirs = s
        .create_member(
            &s.admin_b,
            json!({ "external_id": "b-ext-1", "email": "shared@example.com", "phone": "0611223344" }),
        )
        .await;
    s.purchase(&s.pos_b, &purchase_by_id(&theirs, "b-order-1", "59.90"))
        .await
        .expect(201);
    let before = s.snapshot(&s.admin_b, &theirs).await;
    assert_eq!(before["balance"]["available"], json!(59));

    let a = &s.admin;
    s.get(&format!("/api/v1/members/{theirs}"), a)
        .await
        .problem(404);
    s.get(&format!("/api/v1/members/{theirs}/balance"), a)
        .await
        .problem(404);
    s.get(&format!("/api/v1/members/{theirs}/ledger"), a)
        .await
        .problem(404);
    s.patch(
        &format!("/api/v1/members/{theirs}"),
        a,
        &json!({ "name": "Mallory", "attributes": { "x": 1 } }),
    )
    .await
    .problem(404);
    s.adjust(a, &theirs, 1000, "steal").await.problem(404);
    s.adjust(a, &theirs, -10, "steal").await.problem(404);
    s.purchase(a, &purchase_by_id(&theirs, "a-order-1", "100.00"))
        .await
        .problem(404);
    s.refund(a, &json!({ "order_id": "b-order-1", "amount": "59.90" }))
        .await
        .problem(404);
    s.get("/api/v1/members/lookup?email=shared%40example.com", a)
        .await
        .problem(404);
    s.get("/api/v1/members/lookup?external_id=b-ext-1", a)
        .await
        .problem(404);
    s.get("/api/v1/members/lookup?phone=0611223344", a)
        .await
        .problem(404);
    let list = s.get("/api/v1/members", a).await;
    list.expect(200);
    assert_eq!(
        list.body["items"],
        json!([]),
        "tenant A sees no member of B"
    );

    assert_eq!(s.snapshot(&s.admin_b, &theirs).await, before);

    // Tenant A's identifiers live in their own space.
    let ours = s
        .create_member(
            a,
            json!({ "external_id": "b-ext-1", "email": "shared@example.com" }),
        )
        .await;
    assert_ne!(ours, theirs);
    for order in ["a-order-1", "b-order-1"] {
        let r = s.purchase(a, &purchase_by_id(&ours, order, "10.00")).await;
        r.expect(201);
        assert_eq!(r.body["duplicate"], json!(false));
    }
    assert_eq!(s.snapshot(&s.admin_b, &theirs).await, before);
}

// ---------------------------------------------------------------------------------------------
// 2. Members
// ---------------------------------------------------------------------------------------------

async fn member_with_every_field_reads_back_and_is_found_by_each_identifier(
    db: fidelis_store_tests::TestDb,
) {
    let s = start(db).await;
    let r = s
        .post(
            "/api/v1/members",
            &s.pos,
            &json!({
                "external_id": "cust-0042",
                "email": "Ada.Lovelace@Example.COM",
                "phone": "+33 6 12 34 56 78",
                "name": "Ada Lovelace",
                "birth_date": "1990-12-10",
                "attributes": { "favourite_store": "lyon-1", "shoe_size": 38, "vip": true },
                "consents": [
                    { "purpose": "marketing_email", "granted": true, "at": "2025-01-02T03:04:05Z", "source": "pos" },
                    { "purpose": "analytics", "granted": false, "source": "web" }
                ]
            }),
        )
        .await;
    r.expect(201);
    let m = r.body.clone();
    let id = m["id"].as_str().expect("id").to_string();
    assert!(id.starts_with("mem_"), "member id {id}");
    assert_eq!(m["external_id"], json!("cust-0042"));
    assert_eq!(m["email"], json!("ada.lovelace@example.com"));
    assert_eq!(m["phone"], json!("+33 6 12 34 56 78"));
    assert_eq!(m["name"], json!("Ada Lovelace"));
    assert_eq!(m["birth_date"], json!("1990-12-10"));
    assert_eq!(
        m["attributes"],
        json!({ "favourite_store": "lyon-1", "shoe_size": 38, "vip": true })
    );
    let consents = m["consents"].as_array().expect("consents");
    assert_eq!(consents.len(), 2, "{}", r.text);
    assert_eq!(
        consents[0],
        json!({ "purpose": "marketing_email", "granted": true, "at": "2025-01-02T03:04:05Z", "source": "pos" })
    );
    assert_eq!(consents[1]["purpose"], json!("analytics"));
    assert_eq!(consents[1]["granted"], json!(false));
    assert_eq!(consents[1]["source"], json!("web"));
    assert!(
        consents[1]["at"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .is_some(),
        "a consent without `at` is dated now: {}",
        consents[1]
    );
    assert_eq!(m["order_count"], json!(0));
    assert_eq!(m["lifetime_spend"], json!("0.00"));
    assert_eq!(m["currency"], json!("EUR"));

    let got = s.get(&format!("/api/v1/members/{id}"), &s.analytics).await;
    got.expect(200);
    assert_eq!(got.body, m);

    for query in [
        "external_id=cust-0042".to_string(),
        "email=ada.lovelace%40example.com".to_string(),
        "email=ADA.LOVELACE%40EXAMPLE.COM".to_string(),
        format!("email={}", enc("Ada.Lovelace@example.com")),
        format!("phone={}", enc("+33 6 12 34 56 78")),
    ] {
        let r = s
            .get(&format!("/api/v1/members/lookup?{query}"), &s.pos)
            .await;
        assert_eq!(r.status, 200, "lookup by {query}: {}", r.text);
        assert_eq!(r.body, m, "lookup by {query}");
    }
    s.get("/api/v1/members/lookup?external_id=cust-0043", &s.pos)
        .await
        .problem(404);
    s.get("/api/v1/members/lookup?email=nobody%40example.com", &s.pos)
        .await
        .problem(404);
    s.get(
        "/api/v1/members/lookup?external_id=cust-0042&email=ada.lovelace%40example.com",
        &s.pos,
    )
    .await
    .problem(422);
    s.get("/api/v1/members/lookup", &s.pos).await.problem(422);
    s.get("/api/v1/members/mem_doesnotexist", &s.pos)
        .await
        .problem(404);
}

async fn member_patch_merges_attributes_and_replaces_the_consent_of_the_same_purpose(
    db: fidelis_store_tests::TestDb,
) {
    let s = start(db).await;
    let id = s
        .create_member(
            &s.pos,
            json!({
                "external_id": "p-1",
                "email": "patch@example.com",
                "name": "Before",
                "attributes": { "a": 1, "b": "x", "c": true },
                "consents": [
                    { "purpose": "marketing_email", "granted": true, "at": "2025-01-01T00:00:00Z", "source": "pos" },
                    { "purpose": "marketing_sms", "granted": true, "at": "2025-01-01T00:00:00Z", "source": "pos" }
                ]
            }),
        )
        .await;
    let r = s
        .patch(
            &format!("/api/v1/members/{id}"),
            &s.pos,
            &json!({
                "name": "After",
                "attributes": { "a": 2, "b": null, "d": "new" },
                "consents": [
                    { "purpose": "marketing_email", "granted": false, "at": "2025-06-01T12:00:00Z", "source": "web" }
                ]
            }),
        )
        .await;
    r.expect(200);
    let check = |m: &Value| {
        assert_eq!(m["id"], json!(id));
        assert_eq!(m["name"], json!("After"));
        assert_eq!(
            m["email"],
            json!("patch@example.com"),
            "untouched fields stay"
        );
        assert_eq!(m["external_id"], json!("p-1"));
        assert_eq!(m["attributes"], json!({ "a": 2, "c": true, "d": "new" }));
        let consents = m["consents"].as_array().expect("consents");
        assert_eq!(consents.len(), 2, "one answer per purpose: {m}");
        let by = |p: &str| {
            consents
                .iter()
                .find(|c| c["purpose"] == json!(p))
                .unwrap_or_else(|| panic!("consent {p} in {m}"))
                .clone()
        };
        assert_eq!(
            by("marketing_email"),
            json!({ "purpose": "marketing_email", "granted": false, "at": "2025-06-01T12:00:00Z", "source": "web" })
        );
        assert_eq!(
            by("marketing_sms"),
            json!({ "purpose": "marketing_sms", "granted": true, "at": "2025-01-01T00:00:00Z", "source": "pos" })
        );
    };
    check(&r.body);
    let got = s.get(&format!("/api/v1/members/{id}"), &s.pos).await;
    got.expect(200);
    check(&got.body);
    assert_eq!(got.body, r.body);

    // An empty patch changes nothing but the update time.
    let r = s
        .patch(&format!("/api/v1/members/{id}"), &s.pos, &json!({}))
        .await;
    r.expect(200);
    check(&r.body);
    s.patch(
        "/api/v1/members/mem_nobody",
        &s.pos,
        &json!({ "name": "x" }),
    )
    .await
    .problem(404);
}

async fn duplicate_email_is_409(db: fidelis_store_tests::TestDb) {
    let s = start(db).await;
    let first = s
        .create_member(&s.pos, json!({ "email": "dup@example.com" }))
        .await;
    let r = s
        .post(
            "/api/v1/members",
            &s.pos,
            &json!({ "email": "DUP@example.com", "external_id": "dup-2" }),
        )
        .await;
    r.problem(409);
    let second = s
        .create_member(
            &s.pos,
            json!({ "email": "other@example.com", "external_id": "dup-3" }),
        )
        .await;
    let before = s.get(&format!("/api/v1/members/{second}"), &s.pos).await;
    s.patch(
        &format!("/api/v1/members/{second}"),
        &s.pos,
        &json!({ "email": "dup@example.com" }),
    )
    .await
    .problem(409);
    let after = s.get(&format!("/api/v1/members/{second}"), &s.pos).await;
    assert_eq!(after.body, before.body);
    // A duplicate external id is refused too.
    s.post(
        "/api/v1/members",
        &s.pos,
        &json!({ "external_id": "dup-3" }),
    )
    .await
    .problem(409);
    let list = s.get("/api/v1/members", &s.pos).await;
    let ids: BTreeSet<&str> = list.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(
        ids,
        BTreeSet::from([first.as_str(), second.as_str()]),
        "the refused members were not created"
    );
    // The refused creation left its external id free.
    s.create_member(&s.pos, json!({ "external_id": "dup-2" }))
        .await;
}

async fn member_list_walks_every_member_exactly_once(db: fidelis_store_tests::TestDb) {
    let s = start(db).await;
    let mut created = BTreeSet::new();
    for i in 0..7 {
        created.insert(
            s.create_member(&s.pos, json!({ "external_id": format!("walk-{i}") }))
                .await,
        );
    }
    // Another tenant's member never shows.
    s.create_member(&s.pos_b, json!({ "external_id": "walk-b" }))
        .await;

    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => "/api/v1/members?limit=3".to_string(),
            Some(c) => format!("/api/v1/members?limit=3&cursor={}", enc(c)),
        };
        let r = s.get(&path, &s.analytics).await;
        r.expect(200);
        let items = r.body["items"].as_array().expect("items");
        sizes.push(items.len());
        seen.extend(
            items
                .iter()
                .map(|m| m["id"].as_str().expect("id").to_string()),
        );
        match &r.body["next_cursor"] {
            Value::String(c) => cursor = Some(c.clone()),
            Value::Null => break,
            other => panic!("next_cursor must be a string or null, got {other}"),
        }
        assert!(sizes.len() < 10, "the walk does not end");
    }
    assert_eq!(sizes, vec![3, 3, 1]);
    assert_eq!(seen.len(), 7, "each member once: {seen:?}");
    assert_eq!(seen.iter().cloned().collect::<BTreeSet<_>>(), created);

    // Exactly a page's worth: the last full page says there is no more.
    let r = s.get("/api/v1/members?limit=7", &s.analytics).await;
    r.expect(200);
    assert_eq!(r.body["items"].as_array().map(Vec::len), Some(7));
    assert_eq!(r.body["next_cursor"], Value::Null);
    let r = s.get("/api/v1/members", &s.analytics).await;
    assert_eq!(r.body["items"].as_array().map(Vec::len), Some(7));
    assert_eq!(r.body["next_cursor"], Value::Null);
}

async fn member_list_limit_out_of_range_is_422(db: fidelis_store_tests::TestDb) {
    let s = start(db).await;
    s.create_member(&s.pos, json!({ "external_id": "l-1" }))
        .await;
    for limit in ["0", "500", "201", "-1"] {
        let r = s
            .get(&format!("/api/v1/members?limit={limit}"), &s.pos)
            .await;
        if let Err(e) = r.check_problem(422) {
            panic!("limit={limit}: {e}");
        }
        assert_eq!(r.error_fields(), vec!["limit".to_string()]);
    }
    s.get("/api/v1/members?limit=200", &s.pos).await.expect(200);
    s.get("/api/v1/members?limit=1", &s.pos).await.expect(200);
}

/// Extra: every error is a problem document, even a query string that is not a number.
async fn member_list_with_a_non_numeric_limit_is_a_problem_document(
    db: fidelis_store_tests::TestDb,
) {
    let s = start(db).await;
    let r = s.get("/api/v1/members?limit=ten", &s.pos).await;
    assert!(
        r.status == 400 || r.status == 422,
        "limit=ten: {} {}",
        r.status,
        r.text
    );
    r.problem(r.status);
}

// ---------------------------------------------------------------------------------------------
// 3. Purchases
// ---------------------------------------------------------------------------------------------

async fn purchase_earns_base_points_rounded_down(db: fidelis_store_tests::TestDb) {
    let s = start(db).await;
    let id = s
        .create_member(&s.pos, json!({ "external_id": "earn-1" }))
        .await;
    // Default programme: one point per euro, rounded down, pending 30 days.
    let r = s
        .purchase(&s.pos, &purchase_by_id(&id, "earn-o-1", "59.90"))
        .await;
    r.expect(201);
    let b = &r.body;
    assert_eq!(b["points"], json!(59));
    assert_eq!(b["status"], json!("pending"));
    assert_eq!(b["member_id"], json!(id));
    assert_eq!(b["order_id"], json!("earn-o-1"));
    assert_eq!(b["duplicate"], json!(false));
    assert_eq!(b["enrolled"], json!(false));
    assert_eq!(b["debt_repaid"], json!(0));
    assert_eq!(b["balance"], json!({ "available": 0, "pending": 59 }));
    let breakdown = b["breakdown"].as_array().expect("breakdown");
    assert_eq!(breakdown.len(), 1, "{}", r.text);
    assert_eq!(breakdown[0]["source"], json!("base"));
    assert_eq!(breakdown[0]["points"], json!(59));
    assert!(b["matures_at"].is_string(), "{}", r.text);
    assert!(b["expires_at"].is_string(), "{}", r.text);

    let bal = s.balance(&s.pos, &id).await;
    assert_eq!(bal["available"], json!(0));
    assert_eq!(bal["pending"], json!(59));
    assert_eq!(bal["lifetime_earned"], json!(59));
    assert_eq!(
        bal["expiring"],
        json!([]),
        "pending points are not expiring yet"
    );

    let m = s.get(&format!("/api/v1/members/{id}"), &s.pos).await;
    assert_eq!(m.body["order_count"], json!(1));
    assert_eq!(m.body["lifetime_spend"], json!("59.90"));

    let ledger = s.ledger(&s.pos, &id).await;
    assert_eq!(kinds(&ledger), vec!["earn"]);
    assert_eq!(ledger[0]["pending_delta"], json!(59));
    assert_eq!(ledger[0]["available_delta"], json!(0));
    assert_eq!(ledger[0]["order_id"], json!("earn-o-1"));

    // With no return window the points are available at once, and expire a year later.
    s.instant_points(&s.admin).await;
    let r = s
        .purchase(&s.pos, &purchase_by_id(&id, "earn-o-2", "10.99"))
        .await;
    r.expect(201);
    assert_eq!(r.body["points"], json!(10));
    assert_eq!(r.body["status"], json!("available"));
    assert_eq!(r.body["balance"], json!({ "available": 10, "pending": 59 }));
    let bal = s.balance(&s.pos, &id).await;
    assert_eq!(bal["lifetime_earned"], json!(69));
    let expiring = bal["expiring"].as_array().expect("expiring");
    assert_eq!(expiring.len(), 1, "{bal}");
    assert_eq!(expiring[0]["points"], json!(10));
    assert_eq!(expiring[0]["expires_at"], r.body["expires_at"]);
    let expires = chrono::DateTime::parse_from_rfc3339(
        expiring[0]["expires_at"].as_str().expect("expires_at"),
    )
    .expect("RFC 3339");
    let days = (expires.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_days();
    assert!((363..=366).contains(&days), "expires in {days} days");
    // A purchase too small for a point still counts as an order.
    let r = s
        .purchase(&s.pos, &purchase_by_id(&id, "earn-o-3", "0.99"))
        .await;
    r.expect(201);
    assert_eq!(r.body["points"], json!(0));
    let m = s.get(&format!("/api/v1/members/{id}"), &s.pos).await;
    assert_eq!(m.body["order_count"], json!(3));
    assert_eq!(m.body["lifetime_spend"], json!("71.88"));
}

async fn purchase_by_unknown_external_id_enrols_the_member(db: fidelis_store_tests::TestDb) {
    let s = start(db).await;
    let r = s
        .purchase(
            &s.pos,
            &purchase_by_external("walk-in-1", "en-o-1", "25.00"),
        )
        .await;
    r.expect(201);
    assert_eq!(r.body["enrolled"], json!(true));
    assert_eq!(r.body["points"], json!(25));
    let id = r.body["member_id"].as_str().expect("member_id").to_string();
    let found = s
        .get("/api/v1/members/lookup?external_id=walk-in-1", &s.pos)
        .await;
    found.expect(200);
    assert_eq!(found.body["id"], json!(id));
    assert_eq!(found.body["order_count"], json!(1));
    assert_eq!(found.body["lifetime_spend"], json!("25.00"));

    let r = s
        .purchase(&s.pos, &purchase_by_external("walk-in-1", "en-o-2", "5.00"))
        .await;
    r.expect(201);
    assert_eq!(r.body["enrolled"], json!(false));
    assert_eq!(r.body["member_id"], json!(id));
    assert_eq!(s.points(&s.pos, &id).await, (0, 30, 30));
    let list = s.get("/api/v1/members", &s.pos).await;
    assert_eq!(list.body["items"].as_array().map(Vec::len), Some(1));
}

async fn purchase_by_unknown_external_id_is_404_without_auto_enroll(
    db: fidelis_store_tests::TestDb,
) {
    let s = start(db).await;
    let program = s
        .set_program(&s.admin, json!({ "auto_enroll": false }))
        .await;
    assert_eq!(program["settings"]["auto_enroll"], json!(false));
    let body = purchase_by_external("stranger-1", "ae-o-1", "25.00");
    // A programme of a base rate alone earns without reading the member first: the writer
    // finds no member and refuses the purchase, with the answer a read first would give.
    let refused = s.purchase(&s.pos, &body).await.problem(404).clone();
    assert!(
        refused["detail"]
            .as_str()
            .is_some_and(|d| d.contains("external_id `stranger-1` (enrol them first")),
        "{refused}"
    );
    let refused = s
        .purchase(&s.pos, &purchase_by_id("mem_nobody", "ae-o-2", "25.00"))
        .await
        .problem(404)
        .clone();
    assert!(
        refused["detail"]
            .as_str()
            .is_some_and(|d| d.contains("member `mem_nobody`")),
        "{refused}"
    );
    // With an Idempotency-Key too: the key is not written for a member who is not there.
    for (body, idem) in [
        (
            purchase_by_external("stranger-1", "ae-o-3", "25.00"),
            "ae-k-3",
        ),
        (purchase_by_id("mem_nobody", "ae-o-4", "25.00"), "ae-k-4"),
    ] {
        s.post_idem("/api/v1/events/purchase", &s.pos, &body, idem)
            .await
            .problem(404);
    }
    // Refused before they wrote: no group commit had to run again without them.
    let metrics = s.send(Method::GET, "/metrics", None, None, None).await;
    assert!(
        metrics.text.contains("fidelis_store_batch_replays_total 0"),
        "{}",
        metrics.text
    );
    // A handful of writes leaves the write-ahead log far from its restart: no writer paused.
    for line in [
        "fidelis_store_wal_restarts_total 0",
        "fidelis_store_wal_restart_micros_total 0",
        "fidelis_store_wal_restart_micros_max 0",
    ] {
        assert!(metrics.text.contains(line), "{line}: {}", metrics.text);
    }
    s.get("/api/v1/members/lookup?external_id=stranger-1", &s.pos)
        .await
        .problem(404);
    let list = s.get("/api/v1/members", &s.pos).await;
    assert_eq!(list.body["items"], json!([]));

    // Enrolled first, the same order then goes through as a first recording.
    let id = s
        .create_member(&s.pos, json!({ "external_id": "stranger-1" }))
        .await;
    let r = s.purchase(&s.pos, &body).await;
    r.expect(201);
    assert_eq!(r.body["duplicate"], json!(false));
    assert_eq!(r.body["enrolled"], json!(false));
    assert_eq!(r.body["member_id"], json!(id));
    assert_eq!(r.body["points"], json!(25));
}

async fn same_order_id_twice_counts_once(db: fidelis_store_tests::TestDb) {
    let s = start(db).await;
    s.instant_points(&s.admin).await;
    let id = s
        .create_member(&s.pos, json!({ "external_id": "twice-1" }))
        .await;
    let body = purchase_by_id(&id, "twice-o-1", "59.90");
    let first = s.purchase(&s.pos, &body).await;
    first.expect(201);
    assert_eq!(first.body["duplicate"], json!(false));
    let again = s.purchase(&s.pos, &body).await;
    again.expect(200);
    assert_eq!(again.body["duplicate"], json!(true));
    assert_eq!(again.body["points"], json!(59));
    assert_eq!(again.body["event_id"], first.body["event_id"]);
    assert_eq!(again.body["member_id"], json!(id));
    assert!(
        again.header("idempotent-replayed").is_none(),
        "a resend without Idempotency-Key is not a replay"
    );
    // Sent again by the external id, the order still counts once.
    let by_ext = purchase_by_external("twice-1", "twice-o-1", "59.90");
    let r = s.purchase(&s.pos, &by_ext).await;
    r.expect(200);
    assert_eq!(r.body["duplicate"], json!(true));
    assert_eq!(r.body["points"], json!(59));
    // The same order id with another total is a mistake: 409, and nothing changes.
    let other = purchase_by_external("twice-1", "twice-o-1", "99.00");
    let r = s.purchase(&s.pos, &other).await;
    if let Err(e) = r.check_problem(409) {
        panic!("another total under a recorded order id: {e}");
    }

    assert_eq!(s.points(&s.pos, &id).await, (59, 0, 59));
    let m = s.get(&format!("/api/v1/members/{id}"), &s.pos).await;
    assert_eq!(m.body["order_count"], json!(1));
    assert_eq!(m.body["lifetime_spend"], json!("59.90"));
    assert_eq!(kinds(&s.ledger(&s.pos, &id).await), vec!["earn"]);
}

// ---------------------------------------------------------------------------------------------
// 4. Idempotency
// ---------------------------------------------------------------------------------------------

async fn idempotent_purchase_replays_the_first_answer_once(db: fidelis_store_tests::TestDb) {
    let s = start(db).await;
    s.instant_points(&s.admin).await;
    let id = s
        .create_member(&s.pos, json!({ "external_id": "idem-p" }))
        .await;
    let body = purchase_by_id(&id, "idem-o-1", "59.90");
    let first = s
        .post_idem("/api/v1/events/purchase", &s.pos, &body, "key-purchase-1")
        .await;
    first.expect(201);
    assert!(first.header("idempotent-replayed").is_none());
    let again = s
        .post_idem("/api/v1/events/purchase", &s.pos, &body, "key-purchase-1")
        .await;
    again.expect(201);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.body, first.body);
    assert_eq!(again.body["duplicate"], json!(false));
    assert_eq!(s.points(&s.pos, &id).await, (59, 0, 59));
    assert_eq!(kinds(&s.ledger(&s.pos, &id).await), vec!["earn"]);
}

async fn idempotent_member_creation_replays_the_first_answer_once(db: fidelis_store_tests::TestDb) {
    let s = start(db).await;
    let body = json!({ "email": "idem@example.com", "name": "Idem", "attributes": { "k": 1 } });
    let first = s
        .post_idem("/api/v1/members", &s.pos, &body, "key-member-1")
        .await;
    first.expect(201);
    assert!(first.header("idempotent-replayed").is_none());
    let again = s
        .post_idem("/api/v1/members", &s.pos, &body, "key-member-1")
        .await;
    again.expect(201);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.body, first.body);
    let list = s.get("/api/v1/members", &s.pos).await;
    assert_eq!(list.body["items"].as_array().map(Vec::len), Some(1));
    // Without the key the same request is a second enrolment, refused for its e-mail.
    s.post("/api/v1/members", &s.pos, &body).await.problem(409);
}

async fn idempotent_adjustment_replays_the_first_answer_once(db: fidelis_store_tests::TestDb) {
    let s = start(db).await;
    let id = s
        .create_member(&s.pos, json!({ "external_id": "idem-a" }))
        .await;
    let path = format!("/api/v1/members/{id}/adjustments");
    let body = json!({ "points": 25, "reason": "welcome gift" });
    let first = s.post_idem(&path, &s.admin, &body, "key-adjust-1").await;
    first.expect(201);
    assert_eq!(first.body["points"], json!(25));
    assert_eq!(first.body["reason"], json!("welcome gift"));
    assert_eq!(
        first.body["balance"],
        json!({ "available": 25, "pending": 0 })
    );
    let again = s.post_idem(&path, &s.admin, &body, "key-adjust-1").await;
    again.expect(201);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.body, first.body);
    assert_eq!(s.points(&s.admin, &id).await, (25, 0, 25));
    assert_eq!(kinds(&s.ledger(&s.admin, &id).await), vec!["adjust"]);
}

async fn idempotency_key_reused_with_another_request_is_409(db: fidelis_store_tests::TestDb) {
    let s = start(db).await;
    s.instant_points(&s.admin).await;
    let id = s
        .create_member(&s.pos, json!({ "external_id": "idem-c" }))
        .await;
    let first = s
        .post_idem(
            "/api/v1/events/purchase",
            &s.pos,
            &purchase_by_id(&id, "idc-o-1", "59.90"),
            "key-c",
        )
        .await;
    first.expect(201);
    let before = s.snapshot(&s.admin, &id).await;

    let conflict = |r: &Resp| {
        r.problem(409);
        assert!(
            r.kind().ends_with("idempotency-conflict"),
            "type {} ({})",
            r.kind(),
            r.text
        );
    };
    // Same path, other body.
    conflict(
        &s.post_idem(
            "/api/v1/events/purchase",
            &s.pos,
            &purchase_by_id(&id, "idc-o-2", "10.00"),
            "key-c",
        )
        .await,
    );
    // Other endpoints.
    conflict(
        &s.post_idem(
            &format!("/api/v1/members/{id}/adjustments"),
            &s.admin,
            &json!({ "points": 5, "reason": "x" }),
            "key-c",
        )
        .await,
    );
    conflict(
        &s.post_idem(
            "/api/v1/members",
            &s.pos,
            &json!({ "external_id": "idc-new" }),
            "key-c",
        )
        .await,
    );
    assert_eq!(s.snapshot(&s.admin, &id).await, before);
    s.get("/api/v1/members/lookup?external_id=idc-new", &s.pos)
        .await
        .problem(404);
    let r = s
        .purchase(&s.pos, &purchase_by_id(&id, "idc-o-2", "10.00"))
        .await;
    r.expect(201);
    assert_eq!(r.body["duplicate"], json!(false));
    // The first request still replays.
    let again = s
        .post_idem(
            "/api/v1/events/purchase",
            &s.pos,
            &purchase_by_id(&id, "idc-o-1", "59.90"),
            "key-c",
        )
        .await;
    again.expect(201);
    assert_eq!(again.body, first.body);
    // The same key in another tenant is another key.
    let theirs = s
        .post_idem(
            "/api/v1/members",
            &s.pos_b,
            &json!({ "external_id": "idc-b" }),
            "key-c",
        )
        .await;
    theirs.expect(201);
    assert!(theirs.header("idempotent-replayed").is_none());
}

async fn idempotency_key_longer_than_255_characters_is_422(db: fidelis_store_tests::TestDb) {
    let s = start(db).await;
    let body = json!({ "external_id": "long-key" });
    let r = s
        .post_idem("/api/v1/members", &s.pos, &body, &"k".repeat(256))
        .await;
    r.problem(422);
    assert_eq!(r.error_fields(), vec!["Idempotency-Key".to_string()]);
    s.get("/api/v1/members/lookup?external_id=long-key", &s.pos)
        .await
        .problem(404);
    s.post_idem("/api/v1/members", &s.pos, &body, &"k".repeat(255))
        .await
        .expect(201);
}

async fn custom_event_is_recorded_without_base_points(db: fidelis_store_tests::TestDb) {
    let s = start(db).await;
    let id = s
        .create_member(&s.pos, json!({ "external_id": "custom-1" }))
        .await;
    let r = s
        .post(
            "/api/v1/events/custom",
            &s.pos,
            &json!({ "member": { "id": id }, "type": "review_written", "properties": { "stars": 5 } }),
        )
        .await;
    r.expect(201);
    assert_eq!(r.body["type"], json!("review_written"));
    assert_eq!(r.body["points"], json!(0));
    assert_eq!(r.body["member_id"], json!(id));
    assert_eq!(r.body["balance"], json!({ "available": 0, "pending": 0 }));
    assert!(s.ledger(&s.pos, &id).await.is_empty());
    let r = s
        .post(
            "/api/v1/events/custom",
            &s.pos,
            &json!({ "member": { "id": id }, "type": "Review Written" }),
        )
        .await;
    r.problem(422);
    assert_eq!(r.error_fields(), vec!["type".to_string()]);
    s.post(
        "/api/v1/events/custom",
        &s.pos,
        &json!({ "member": { "id": "mem_nobody" }, "type": "x" }),
    )
    .await
    .problem(404);
}

/// Extra: the OpenAPI document says every PUT accepts an Idempotency-Key.
async fn idempotent_programme_put_replays_without_a_second_version(
    db: fidelis_store_tests::TestDb,
) {
    let s = start(db).await;
    let current = s.get("/api/v1/program", &s.admin).await;
    let mut settings = current.body["settings"].clone();
    settings["points_name"] = json!("stars");
    let put = || {
        s.send(
            Method::PUT,
            "/api/v1/program",
            Some(&s.admin),
            Some(&settings),
            Some("key-program-1"),
        )
    };
    let first = put().await;
    first.expect(200);
    let again = put().await;
    again.expect(200);
    assert_eq!(
        again.body, first.body,
        "a replayed PUT answers as the first did"
    );
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    let now = s.get("/api/v1/program", &s.admin).await;
    assert_eq!(now.body["version"], first.body["version"]);
}

// ---------------------------------------------------------------------------------------------
// 5. Refunds
// ---------------------------------------------------------------------------------------------

async fn full_refund_claws_back_every_point(db: fidelis_store_tests::TestDb) {
    let s = start(db).await;
    let id = s
        .create_member(&s.pos, json!({ "external_id": "rf-1" }))
        .await;
    s.purchase(&s.pos, &purchase_by_id(&id, "rf-o-1", "59.90"))
        .await
        .expect(201);
    let r = s
        .refund(&s.pos, &json!({ "order_id": "rf-o-1", "amount": "59.90" }))
        .await;
    r.expect(201);
    let b = &r.body;
    assert_eq!(b["points_clawed_back"], json!(59));
    assert_eq!(b["from_pending"], json!(59));
    assert_eq!(b["from_available"], json!(0));
    assert_eq!(b["forgiven"], json!(0));
    assert_eq!(b["refunded"], json!("59.90"));
    assert_eq!(b["order_refunded"], json!("59.90"));
    assert_eq!(b["member_id"], json!(id));
    assert_eq!(b["duplicate"], json!(false));
    assert_eq!(b["balance"], json!({ "available": 0, "pending": 0 }));
    assert_eq!(s.points(&s.pos, &id).await, (0, 0, 0));
    let ledger = s.ledger(&s.pos, &id).await;
    assert_eq!(kinds(&ledger), vec!["clawback", "earn"]);
    assert_eq!(ledger[0]["pending_delta"], json!(-59));
    let m = s.get(&format!("/api/v1/members/{id}"), &s.pos).await;
    assert_eq!(m.body["lifetime_spend"], json!("0.00"));

    // Points already spendable are clawed back from the available balance.
    s.instant_points(&s.admin).await;
    s.purchase(&s.pos, &purchase_by_id(&id, "rf-o-2", "59.90"))
        .await
        .expect(201);
    assert_eq!(s.points(&s.pos, &id).await, (59, 0, 59));
    let r = s
        .refund(&s.pos, &json!({ "order_id": "rf-o-2", "amount": "59.90" }))
        .await;
    r.expect(201);
    assert_eq!(r.body["points_clawed_back"], json!(59));
    assert_eq!(r.body["from_available"], json!(59));
    assert_eq!(s.points(&s.pos, &id).await, (0, 0, 0));
}

async fn two_partial_refunds_claw_back_the_whole_purchase(db: fidelis_store_tests::TestDb) {
    let s = start(db).await;
    let id = s
        .create_member(&s.pos, json!({ "external_id": "rp-1" }))
        .await;
    s.purchase(&s.pos, &purchase_by_id(&id, "rp-o-1", "59.90"))
        .await
        .expect(201);
    let r = s
        .refund(&s.pos, &json!({ "order_id": "rp-o-1", "amount": "20.00" }))
        .await;
    r.expect(201);
    assert_eq!(r.body["points_clawed_back"], json!(19));
    assert_eq!(r.body["refunded"], json!("20.00"));
    assert_eq!(r.body["order_refunded"], json!("20.00"));
    assert_eq!(r.body["balance"], json!({ "available": 0, "pending": 40 }));
    let r = s
        .refund(&s.pos, &json!({ "order_id": "rp-o-1", "amount": "39.90" }))
        .await;
    r.expect(201);
    assert_eq!(r.body["points_clawed_back"], json!(40));
    assert_eq!(r.body["refunded"], json!("39.90"));
    assert_eq!(r.body["order_refunded"], json!("59.90"));
    assert_eq!(r.body["balance"], json!({ "available": 0, "pending": 0 }));
    assert_eq!(s.points(&s.pos, &id).await, (0, 0, 0));
    let ledger = s.ledger(&s.pos, &id).await;
    assert_eq!(kinds(&ledger), vec!["clawback", "clawback", "earn"]);
    let clawed: i64 = ledger
        .iter()
        .filter(|t| t["kind"] == json!("clawback"))
        .map(|t| {
            t["pending_delta"].as_i64().unwrap_or(0) + t["available_delta"].as_i64().unwrap_or(0)
        })
        .sum();
    assert_eq!(clawed, -59);
    // Nothing is left to refund.
    s.refund(&s.pos, &json!({ "order_id": "rp-o-1", "amount": "0.01" }))
        .await
        .problem(422);
}

async fn refund_by_lines_claws_back_their_share(db: fidelis_store_tests::TestDb) {
    let s = start(db).await;
    let id = s
        .create_member(&s.pos, json!({ "external_id": "rl-1" }))
        .await;
    let r = s
        .purchase(
            &s.pos,
            &json!({
                "member": { "id": id },
                "order_id": "rl-o-1",
                "channel": "pos",
                "currency": "EUR",
                "total": "59.90",
                "lines": [
                    { "sku": "SOCKS", "category": "accessories", "quantity": 2, "unit_price": "10.00" },
                    { "sku": "SHOES", "category": "shoes", "quantity": 1, "unit_price": "39.90" }
                ]
            }),
        )
        .await;
    r.expect(201);
    assert_eq!(r.body["points"], json!(59));

    let r = s
        .refund(
            &s.pos,
            &json!({ "order_id": "rl-o-1", "lines": [{ "sku": "SOCKS", "quantity": 1 }] }),
        )
        .await;
    r.expect(201);
    assert_eq!(r.body["refunded"], json!("10.00"));
    assert_eq!(r.body["points_clawed_back"], json!(9));
    assert_eq!(r.body["balance"], json!({ "available": 0, "pending": 50 }));

    // A sku the order does not have, or more units than are left, is refused.
    let before = s.snapshot(&s.pos, &id).await;
    s.refund(
        &s.pos,
        &json!({ "order_id": "rl-o-1", "lines": [{ "sku": "HAT", "quantity": 1 }] }),
    )
    .await
    .problem(422);
    s.refund(
        &s.pos,
        &json!({ "order_id": "rl-o-1", "lines": [{ "sku": "SOCKS", "quantity": 2 }] }),
    )
    .await
    .problem(422);
    assert_eq!(s.snapshot(&s.pos, &id).await, before);

    let r = s
        .refund(
            &s.pos,
            &json!({ "order_id": "rl-o-1", "lines": [
                { "sku": "SOCKS", "quantity": 1 },
                { "sku": "SHOES", "quantity": 1 }
            ] }),
        )
        .await;
    r.expect(201);
    assert_eq!(r.body["refunded"], json!("49.90"));
    assert_eq!(r.body["order_refunded"], json!("59.90"));
    assert_eq!(r.body["points_clawed_back"], json!(50));
    assert_eq!(s.points(&s.pos, &id).await, (0, 0, 0));
}

async fn refund_of_unknown_order_is_404(db: fidelis_store_tests::TestDb) {
    let s = start(db).await;
    let id = s
        .create_member(&s.pos, json!({ "external_id": "ru-1" }))
        .await;
    s.purchase(&s.pos, &purchase_by_id(&id, "ru-o-1", "59.90"))
        .await
        .expect(201);
    let before = s.snapshot(&s.pos, &id).await;
    s.refund(
        &s.pos,
        &json!({ "order_id": "no-such-order", "amount": "1.00" }),
    )
    .await
    .problem(404);
    s.refund(
        &s.pos,
        &json!({ "order_id": "no-such-order", "refund_id": "ru-r-1", "amount": "1.00" }),
    )
    .await
    .problem(404);
    assert_eq!(s.snapshot(&s.pos, &id).await, before);
    // The refused refund id was not kept: it serves a real refund afterwards.
    let r = s
        .refund(
            &s.pos,
            &json!({ "order_id": "ru-o-1", "refund_id": "ru-r-1", "amount": "59.90" }),
        )
        .await;
    r.expect(201);
    assert_eq!(r.body["duplicate"], json!(false));
    assert_eq!(r.body["points_clawed_back"], json!(59));
}

async fn refund_above_the_purchase_is_422_and_changes_nothing(db: fidelis_store_tests::TestDb) {
    let s = start(db).await;
    let id = s
        .create_member(&s.pos, json!({ "external_id": "ro-1" }))
        .await;
    s.purchase(&s.pos, &purchase_by_id(&id, "ro-o-1", "59.90"))
        .await
        .expect(201);
    let before = s.snapshot(&s.pos, &id).await;
    s.refund(&s.pos, &json!({ "order_id": "ro-o-1", "amount": "59.91" }))
        .await
        .problem(422);
    s.refund(
        &s.pos,
        &json!({ "order_id": "ro-o-1", "lines": [{ "sku": "SKU-1", "quantity": 2 }] }),
    )
    .await
    .problem(422);
    assert_eq!(s.snapshot(&s.pos, &id).await, before);

    s.refund(&s.pos, &json!({ "order_id": "ro-o-1", "amount": "20.00" }))
        .await
        .expect(201);
    let before = s.snapshot(&s.pos, &id).await;
    s.refund(&s.pos, &json!({ "order_id": "ro-o-1", "amount": "40.00" }))
        .await
        .problem(422);
    assert_eq!(s.snapshot(&s.pos, &id).await, before);
    let r = s
        .refund(&s.pos, &json!({ "order_id": "ro-o-1", "amount": "39.90" }))
        .await;
    r.expect(201);
    assert_eq!(r.body["points_clawed_back"], json!(40));
    assert_eq!(s.points(&s.pos, &id).await, (0, 0, 0));
}

async fn retried_refund_id_has_one_effect(db: fidelis_store_tests::TestDb) {
    let s = start(db).await;
    let id = s
        .create_member(&s.pos, json!({ "external_id": "rr-1" }))
        .await;
    s.purchase(&s.pos, &purchase_by_id(&id, "rr-o-1", "59.90"))
        .await
        .expect(201);
    s.purchase(&s.pos, &purchase_by_id(&id, "rr-o-2", "10.00"))
        .await
        .expect(201);
    let body = json!({ "order_id": "rr-o-1", "refund_id": "rr-r-1", "amount": "20.00" });
    let first = s.refund(&s.pos, &body).await;
    first.expect(201);
    assert_eq!(first.body["points_clawed_back"], json!(19));
    assert_eq!(first.body["duplicate"], json!(false));
    let again = s.refund(&s.pos, &body).await;
    again.expect(200);
    assert_eq!(again.body["duplicate"], json!(true));
    assert_eq!(again.body["event_id"], first.body["event_id"]);
    assert_eq!(again.body["points_clawed_back"], json!(19));
    assert_eq!(again.body["refunded"], json!("20.00"));
    assert_eq!(s.points(&s.pos, &id).await, (0, 50, 50));
    let ledger = s.ledger(&s.pos, &id).await;
    assert_eq!(kinds(&ledger), vec!["clawback", "earn", "earn"]);
    // The same refund id for another order is a conflict, and changes nothing.
    let before = s.snapshot(&s.pos, &id).await;
    s.refund(
        &s.pos,
        &json!({ "order_id": "rr-o-2", "refund_id": "rr-r-1", "amount": "10.00" }),
    )
    .await
    .problem(409);
    assert_eq!(s.snapshot(&s.pos, &id).await, before);
    // Only 20.00 of the order was refunded: the other 39.90 still can be.
    let r = s
        .refund(&s.pos, &json!({ "order_id": "rr-o-1", "amount": "39.90" }))
        .await;
    r.expect(201);
    assert_eq!(r.body["order_refunded"], json!("59.90"));
    assert_eq!(r.body["points_clawed_back"], json!(40));
    assert_eq!(s.points(&s.pos, &id).await, (0, 10, 10));
}

// ---------------------------------------------------------------------------------------------
// 6. Bad input
// ---------------------------------------------------------------------------------------------

enum Sent {
    Json(Value),
    Raw(Option<&'static str>, Vec<u8>),
}

async fn bad_purchases_are_refused_and_write_nothing(db: fidelis_store_tests::TestDb) {
    let s = start(db).await;
    s.instant_points(&s.admin).await;
    let id = s
        .create_member(&s.pos, json!({ "external_id": "bad-1" }))
        .await;
    s.purchase(&s.pos, &purchase_by_id(&id, "bad-ok-0", "10.00"))
        .await
        .expect(201);
    let before = s.snapshot(&s.admin, &id).await;

    let valid = |order: &str| purchase_by_id(&id, order, "59.90");
    let with = |order: &str, f: &dyn Fn(&mut Value)| {
        let mut v = valid(order);
        f(&mut v);
        v
    };
    let mut many_lines = valid("bad-lines");
    many_lines["lines"] = Value::Array(
        (0..501)
            .map(|i| json!({ "sku": format!("S{i}"), "quantity": 1, "unit_price": "0.10" }))
            .collect(),
    );
    many_lines["total"] = json!("50.10");
    let mut huge = valid("bad-huge");
    huge["lines"][0]["sku"] = json!("x".repeat(300 * 1024));
    let cases: Vec<(&str, &str, Sent, u16, Option<&str>)> = vec![
        (
            "malformed JSON",
            "bad-json",
            Sent::Raw(
                Some("application/json"),
                br#"{"member": {"id": "x"}, "order_id": "bad-json", "total": "#.to_vec(),
            ),
            400,
            None,
        ),
        (
            "no content type",
            "bad-ct",
            Sent::Raw(None, serde_json::to_vec(&valid("bad-ct")).expect("json")),
            415,
            None,
        ),
        (
            "text/plain content type",
            "bad-ct2",
            Sent::Raw(
                Some("text/plain"),
                serde_json::to_vec(&valid("bad-ct2")).expect("json"),
            ),
            415,
            None,
        ),
        (
            "negative quantity",
            "bad-qty",
            Sent::Json(with("bad-qty", &|v| v["lines"][0]["quantity"] = json!(-1))),
            422,
            Some("lines[0].quantity"),
        ),
        (
            "unknown currency",
            "bad-eux",
            Sent::Json(with("bad-eux", &|v| v["currency"] = json!("EUX"))),
            422,
            Some("currency"),
        ),
        (
            "currency other than the programme's",
            "bad-usd",
            Sent::Json(with("bad-usd", &|v| v["currency"] = json!("USD"))),
            422,
            Some("currency"),
        ),
        (
            "three decimals in EUR",
            "bad-dec",
            Sent::Json(with("bad-dec", &|v| v["total"] = json!("59.999"))),
            422,
            Some("total"),
        ),
        (
            "501 lines",
            "bad-lines",
            Sent::Json(many_lines),
            422,
            Some("lines"),
        ),
        (
            "a body over 256 KiB",
            "bad-huge",
            Sent::Json(huge),
            413,
            None,
        ),
        (
            "an unknown field",
            "bad-field",
            Sent::Json(with("bad-field", &|v| v["coupon"] = json!("SUMMER"))),
            422,
            None,
        ),
        (
            "occurred_at three days ahead",
            "bad-future",
            Sent::Json(with("bad-future", &|v| {
                v["occurred_at"] = json!(in_days(3))
            })),
            422,
            Some("occurred_at"),
        ),
    ];
    let mut failures = Vec::new();
    for (what, _, sent, status, field) in &cases {
        let r = match sent {
            Sent::Json(v) => s.purchase(&s.pos, v).await,
            Sent::Raw(ct, bytes) => {
                s.send_raw(
                    Method::POST,
                    "/api/v1/events/purchase",
                    Some(&s.pos),
                    *ct,
                    bytes.clone(),
                )
                .await
            }
        };
        if let Err(e) = r.check_problem(*status) {
            failures.push(format!("{what}: {e}"));
            continue;
        }
        if field.is_some_and(|f| !r.error_fields().iter().any(|x| x == f)) {
            failures.push(format!(
                "{what}: the problem does not name `{}`: {}",
                field.unwrap_or_default(),
                r.text
            ));
        }
        if *what == "an unknown field"
            && !r.body["detail"].as_str().unwrap_or("").contains("coupon")
        {
            failures.push(format!(
                "{what}: the detail does not name `coupon`: {}",
                r.text
            ));
        }
    }
    let after = s.snapshot(&s.admin, &id).await;
    if after != before {
        failures.push(format!(
            "refused purchases changed the member:\nbefore {before}\nafter  {after}"
        ));
    }
    // None of the refused order ids was recorded.
    for (what, order, ..) in &cases {
        let r = s.purchase(&s.pos, &valid(order)).await;
        if r.status != 201 || r.body["duplicate"] != json!(false) {
            failures.push(format!(
                "{what}: order {order} posted validly afterwards got {} {}",
                r.status, r.text
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let n = cases.len() as i64;
    assert_eq!(s.points(&s.pos, &id).await, (10 + 59 * n, 0, 10 + 59 * n));
}

async fn bad_member_bodies_are_refused_and_write_nothing(db: fidelis_store_tests::TestDb) {
    let s = start(db).await;
    let cases: Vec<(&str, Value, &str)> = vec![
        ("bad email", json!({ "email": "not-an-email" }), "email"),
        ("bad phone", json!({ "phone": "call me" }), "phone"),
        (
            "future birth date",
            json!({ "birth_date": in_days(30)[..10] }),
            "birth_date",
        ),
        (
            "bad consent purpose",
            json!({ "consents": [{ "purpose": "Marketing Email", "granted": true, "source": "pos" }] }),
            "consents[0].purpose",
        ),
        ("unknown field", json!({ "nickname": "Bob" }), "nickname"),
    ];
    for (what, body, field) in cases {
        let r = s.post("/api/v1/members", &s.pos, &body).await;
        if let Err(e) = r.check_problem(422) {
            panic!("{what}: {e}");
        }
        assert!(
            r.error_fields().iter().any(|f| f == field),
            "{what}: expected field {field}: {}",
            r.text
        );
    }
    let list = s.get("/api/v1/members", &s.pos).await;
    assert_eq!(list.body["items"], json!([]));
}

async fn bad_adjustments_are_refused_and_write_nothing(db: fidelis_store_tests::TestDb) {
    let s = start(db).await;
    let id = s
        .create_member(&s.pos, json!({ "external_id": "badj-1" }))
        .await;
    s.adjust(&s.admin, &id, 30, "opening balance")
        .await
        .expect(201);
    let before = s.snapshot(&s.admin, &id).await;
    let path = format!("/api/v1/members/{id}/adjustments");
    let cases: Vec<(&str, Value, u16)> = vec![
        ("empty reason", json!({ "points": 10, "reason": "" }), 422),
        (
            "blank reason",
            json!({ "points": 10, "reason": "   " }),
            422,
        ),
        ("no reason", json!({ "points": 10 }), 422),
        (
            "zero points",
            json!({ "points": 0, "reason": "nothing" }),
            422,
        ),
        (
            "fractional points",
            json!({ "points": 1.5, "reason": "half" }),
            422,
        ),
        (
            "more than available",
            json!({ "points": -31, "reason": "too much" }),
            409,
        ),
    ];
    for (what, body, status) in cases {
        let r = s.post(&path, &s.admin, &body).await;
        if let Err(e) = r.check_problem(status) {
            panic!("{what}: {e}");
        }
    }
    assert_eq!(s.snapshot(&s.admin, &id).await, before);
    let r = s.adjust(&s.admin, &id, -30, "spend it all").await;
    r.expect(201);
    assert_eq!(r.body["balance"], json!({ "available": 0, "pending": 0 }));
    s.adjust(&s.admin, &id, -1, "one more").await.problem(409);
    s.adjust(&s.admin, "mem_nobody", 5, "x").await.problem(404);
}

// ---------------------------------------------------------------------------------------------
// 7. Concurrency
// ---------------------------------------------------------------------------------------------

async fn concurrent_writes_on_one_member_end_at_the_exact_balance(db: fidelis_store_tests::TestDb) {
    let s = start(db).await;
    s.instant_points(&s.admin).await;
    let id = s
        .create_member(&s.pos, json!({ "external_id": "hot-1" }))
        .await;
    s.adjust(&s.admin, &id, 1000, "opening balance")
        .await
        .expect(201);

    // 30 purchases, 10 credits, 10 debits (550 points in all, always covered by the 1000).
    let (mut earned, mut credited, mut debited, mut orders) = (0i64, 0i64, 0i64, 0i64);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50i64 {
        let api = s.api.clone();
        let (pos, admin, id) = (s.pos.clone(), s.admin.clone(), id.clone());
        match i % 5 {
            0..=2 => {
                let minor = (i + 1) * 137;
                earned += minor / 100;
                orders += 1;
                let total = format!("{}.{:02}", minor / 100, minor % 100);
                tasks.spawn(async move {
                    let r = api
                        .purchase(&pos, &purchase_by_id(&id, &format!("hot-o-{i}"), &total))
                        .await;
                    (format!("purchase {i}"), r)
                });
            }
            3 => {
                credited += i + 1;
                tasks.spawn(async move {
                    (
                        format!("credit {i}"),
                        api.adjust(&admin, &id, i + 1, "goodwill").await,
                    )
                });
            }
            _ => {
                debited += (i + 1) * 2;
                tasks.spawn(async move {
                    (
                        format!("debit {i}"),
                        api.adjust(&admin, &id, -(i + 1) * 2, "redemption").await,
                    )
                });
            }
        }
    }
    let mut failures = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (what, r) = done.expect("the task ran");
        if r.status != 201 {
            failures.push(format!("{what}: {} {}", r.status, r.text));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(debited, 550);
    let expected = 1000 + earned + credited - debited;
    assert_eq!(
        s.points(&s.admin, &id).await,
        (expected, 0, 1000 + earned + credited)
    );
    let m = s.get(&format!("/api/v1/members/{id}"), &s.pos).await;
    assert_eq!(m.body["order_count"], json!(orders));
    let ledger = s.ledger(&s.admin, &id).await;
    assert_eq!(ledger.len(), 51);
    let sum: i64 = ledger
        .iter()
        .map(|t| t["available_delta"].as_i64().expect("available_delta"))
        .sum();
    assert_eq!(sum, expected, "the ledger adds up to the balance");
}

async fn concurrent_purchases_across_ten_members_end_exact_per_member(
    db: fidelis_store_tests::TestDb,
) {
    let s = start(db).await;
    s.instant_points(&s.admin).await;
    let mut ids = Vec::new();
    for m in 0..10 {
        ids.push(
            s.create_member(&s.pos, json!({ "external_id": format!("crowd-{m}") }))
                .await,
        );
    }
    let mut expected = [0i64; 10];
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..100usize {
        let m = i % 10;
        let minor = 500 + (i as i64) * 73;
        expected[m] += minor / 100;
        let total = format!("{}.{:02}", minor / 100, minor % 100);
        // Half by id, half by the retailer's identifier.
        let body = if i % 2 == 0 {
            purchase_by_id(&ids[m], &format!("crowd-o-{i}"), &total)
        } else {
            purchase_by_external(&format!("crowd-{m}"), &format!("crowd-o-{i}"), &total)
        };
        let (api, pos) = (s.api.clone(), s.pos.clone());
        tasks.spawn(async move { (i, api.purchase(&pos, &body).await) });
    }
    let mut failures = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (i, r) = done.expect("the task ran");
        if r.status != 201 || r.body["duplicate"] != json!(false) {
            failures.push(format!("purchase {i}: {} {}", r.status, r.text));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    for (m, id) in ids.iter().enumerate() {
        assert_eq!(
            s.points(&s.pos, id).await,
            (expected[m], 0, expected[m]),
            "member {m}"
        );
        let r = s.get(&format!("/api/v1/members/{id}"), &s.pos).await;
        assert_eq!(r.body["order_count"], json!(10), "member {m}");
        assert_eq!(s.ledger(&s.pos, id).await.len(), 10, "member {m}");
    }
    let list = s.get("/api/v1/members?limit=200", &s.pos).await;
    assert_eq!(
        list.body["items"].as_array().map(Vec::len),
        Some(10),
        "no member was enrolled twice"
    );
}

async fn concurrent_resends_of_one_order_record_it_once(db: fidelis_store_tests::TestDb) {
    let s = start(db).await;
    s.instant_points(&s.admin).await;
    let id = s
        .create_member(&s.pos, json!({ "external_id": "resend-1" }))
        .await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        // Tills resend by id and by the retailer's identifier alike.
        let body = if i % 2 == 0 {
            purchase_by_id(&id, "resend-o-1", "59.90")
        } else {
            purchase_by_external("resend-1", "resend-o-1", "59.90")
        };
        let (api, pos) = (s.api.clone(), s.pos.clone());
        tasks.spawn(async move { api.purchase(&pos, &body).await });
    }
    let (mut created, mut duplicates, mut other) = (0, 0, Vec::new());
    let mut event_ids = BTreeSet::new();
    while let Some(done) = tasks.join_next().await {
        let r = done.expect("the task ran");
        match (r.status, &r.body["duplicate"]) {
            (201, Value::Bool(false)) => created += 1,
            (200, Value::Bool(true)) => duplicates += 1,
            _ => other.push(format!("{} {}", r.status, r.text)),
        }
        event_ids.insert(r.body["event_id"].to_string());
    }
    assert!(other.is_empty(), "{}", other.join("\n"));
    assert_eq!((created, duplicates), (1, 19));
    assert_eq!(event_ids.len(), 1, "every answer is about one event");
    assert_eq!(s.points(&s.pos, &id).await, (59, 0, 59));
    assert_eq!(kinds(&s.ledger(&s.pos, &id).await), vec!["earn"]);
}

async fn concurrent_refunds_and_purchases_across_members_end_exact(
    db: fidelis_store_tests::TestDb,
) {
    const MEMBERS: i64 = 4;
    const ORDERS: i64 = 4;
    let s = start(db).await;
    s.instant_points(&s.admin).await;
    let mut ids = Vec::new();
    for m in 0..MEMBERS {
        let id = s
            .create_member(&s.pos, json!({ "external_id": format!("mix-{m}") }))
            .await;
        for o in 0..ORDERS {
            s.purchase(
                &s.pos,
                &purchase_by_id(&id, &format!("mix-{m}-old-{o}"), "10.00"),
            )
            .await
            .expect(201);
        }
        ids.push(id);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for m in 0..MEMBERS {
        for o in 0..ORDERS {
            let (api, pos) = (s.api.clone(), s.pos.clone());
            let refund = json!({ "order_id": format!("mix-{m}-old-{o}"), "amount": "5.00" });
            tasks
                .spawn(async move { (format!("refund {m}/{o}"), api.refund(&pos, &refund).await) });
            let body = if o % 2 == 0 {
                purchase_by_id(&ids[m as usize], &format!("mix-{m}-new-{o}"), "10.00")
            } else {
                purchase_by_external(&format!("mix-{m}"), &format!("mix-{m}-new-{o}"), "10.00")
            };
            let (api, pos) = (s.api.clone(), s.pos.clone());
            tasks.spawn(
                async move { (format!("purchase {m}/{o}"), api.purchase(&pos, &body).await) },
            );
        }
    }
    let started = std::time::Instant::now();
    let mut failures = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (what, r) = done.expect("the task ran");
        if r.status != 201 {
            failures.push(format!("{what}: {} {}", r.status, r.text));
        }
    }
    let secs = started.elapsed().as_secs_f64();
    assert!(
        failures.is_empty(),
        "after {secs:.1}s:\n{}",
        failures.join("\n")
    );
    for (m, id) in ids.iter().enumerate() {
        // ORDERS × 10 earned, ORDERS × 5 clawed back, ORDERS × 10 earned again.
        let want = ORDERS * 15;
        assert_eq!(s.points(&s.pos, id).await, (want, 0, want), "member {m}");
    }
    assert!(
        secs < 10.0,
        "{} writes took {secs:.1}s",
        2 * MEMBERS * ORDERS
    );
}

// ---------------------------------------------------------------------------------------------
// 8. Programme
// ---------------------------------------------------------------------------------------------

async fn invalid_programme_is_422_naming_the_field(db: fidelis_store_tests::TestDb) {
    let s = start(db).await;
    let before = s.get("/api/v1/program", &s.admin).await;
    before.expect(200);
    let base = before.body["settings"].clone();
    let cases: Vec<(&str, &str, Value)> = vec![
        ("earn_rate", "earn_rate", json!("-1")),
        ("earn_rate", "earn_rate", json!("abc")),
        (
            "expiry",
            "expiry.months",
            json!({ "kind": "after_earning", "months": 0 }),
        ),
        (
            "expiry",
            "expiry.months",
            json!({ "kind": "inactivity", "months": 121 }),
        ),
        ("pending_days", "pending_days", json!(366)),
        ("points_name", "points_name", json!("  ")),
    ];
    for (key, field, value) in cases {
        let mut settings = base.clone();
        settings[key] = value.clone();
        let r = s.put("/api/v1/program", &s.admin, &settings).await;
        if let Err(e) = r.check_problem(422) {
            panic!("{key} = {value}: {e}");
        }
        assert_eq!(
            r.error_fields(),
            vec![field.to_string()],
            "{key} = {value}: {}",
            r.text
        );
        assert!(
            r.body["detail"].as_str().unwrap_or("").contains(field),
            "{key} = {value}: {}",
            r.text
        );
    }
    let after = s.get("/api/v1/program", &s.admin).await;
    assert_eq!(after.body, before.body, "refused settings change nothing");
}

async fn programme_with_an_unknown_rounding_is_422_naming_rounding(
    db: fidelis_store_tests::TestDb,
) {
    let s = start(db).await;
    let before = s.get("/api/v1/program", &s.admin).await;
    let mut settings = before.body["settings"].clone();
    settings["rounding"] = json!("sideways");
    let r = s.put("/api/v1/program", &s.admin, &settings).await;
    r.problem(422);
    let names_it = r.error_fields().iter().any(|f| f == "rounding")
        || r.body["detail"].as_str().unwrap_or("").contains("rounding");
    assert!(names_it, "the problem should name `rounding`: {}", r.text);
    let after = s.get("/api/v1/program", &s.admin).await;
    assert_eq!(after.body, before.body);
}

async fn valid_programme_put_bumps_the_version_and_reads_back(db: fidelis_store_tests::TestDb) {
    let s = start(db).await;
    let before = s.get("/api/v1/program", &s.analytics).await;
    before.expect(200);
    assert_eq!(
        before.body["settings"],
        json!({
            "points_name": "points",
            "currency": "EUR",
            "earn_rate": "1",
            "rounding": "floor",
            "pending_days": 30,
            "expiry": { "kind": "after_earning", "months": 12 },
            "refund_policy": "allow_negative",
            "auto_enroll": true
        }),
        "the default programme"
    );
    let version = before.body["version"].as_i64().expect("version");
    let settings = json!({
        "points_name": "stars",
        "currency": "EUR",
        "earn_rate": "2.5",
        "rounding": "nearest",
        "pending_days": 7,
        "expiry": { "kind": "inactivity", "months": 18 },
        "refund_policy": "within_balance",
        "auto_enroll": false
    });
    let r = s.put("/api/v1/program", &s.admin, &settings).await;
    r.expect(200);
    assert_eq!(
        r.body,
        json!({ "settings": settings, "version": version + 1 })
    );
    let got = s.get("/api/v1/program", &s.pos).await;
    assert_eq!(got.body, r.body);
    let r2 = s.put("/api/v1/program", &s.admin, &settings).await;
    assert_eq!(r2.body["version"], json!(version + 2));

    // The new rate applies: 59.90 at 2.5 per euro is 149.75, rounded to 150.
    let id = s
        .create_member(&s.pos, json!({ "external_id": "prog-1" }))
        .await;
    let p = s
        .purchase(&s.pos, &purchase_by_id(&id, "prog-o-1", "59.90"))
        .await;
    p.expect(201);
    assert_eq!(p.body["points"], json!(150));
    assert_eq!(p.body["status"], json!("pending"));
    assert!(
        p.body["breakdown"][0]["description"]
            .as_str()
            .unwrap_or("")
            .contains("stars"),
        "{}",
        p.text
    );
}

// ---------------------------------------------------------------------------------------------
// 9. Operations
// ---------------------------------------------------------------------------------------------

async fn operational_endpoints_answer(db: fidelis_store_tests::TestDb) {
    let s = start(db).await;
    let r = s.send(Method::GET, "/healthz", None, None, None).await;
    r.expect(200);
    assert_eq!(r.body, json!({ "status": "ok" }));

    s.get("/api/v1/program", &s.admin).await.expect(200);
    let r = s.send(Method::GET, "/metrics", None, None, None).await;
    r.expect(200);
    assert!(r.text.contains("fidelis_http_requests_total"), "{}", r.text);
    assert!(
        r.text.contains("route=\"/api/v1/program\""),
        "requests are counted by route: {}",
        r.text
    );

    let r = s
        .send(Method::GET, "/api/v1/openapi.json", None, None, None)
        .await;
    r.expect(200);
    assert!(r.content_type().starts_with("application/json"));
    let doc: Value = serde_json::from_str(&r.text).expect("the OpenAPI document is JSON");
    assert!(doc.get("openapi").is_some_and(Value::is_string));
    assert!(doc["paths"].get("/api/v1/events/purchase").is_some());

    let r = s.send(Method::GET, "/api/docs", None, None, None).await;
    r.expect(200);
    assert!(
        r.content_type().starts_with("text/html"),
        "{}",
        r.content_type()
    );
    assert!(!r.text.is_empty());

    s.send(Method::GET, "/api/v1/nope", None, None, None)
        .await
        .problem(404);
    s.get("/api/v1/nope", &s.admin).await.problem(404);
    s.send(Method::GET, "/nothing/here", None, None, None)
        .await
        .problem(404);
}

/// Extra: a method a route does not have is answered with a problem document too.
async fn wrong_method_is_405_problem_document(db: fidelis_store_tests::TestDb) {
    let s = start(db).await;
    let r = s.delete("/api/v1/program", &s.admin).await;
    r.problem(405);
}

fidelis_store_tests::on_both!(
    requests_without_a_valid_key_are_401,
    keys_without_the_scope_are_403,
    revoked_key_is_401,
    other_tenants_members_are_404_and_untouched,
    member_with_every_field_reads_back_and_is_found_by_each_identifier,
    member_patch_merges_attributes_and_replaces_the_consent_of_the_same_purpose,
    duplicate_email_is_409,
    member_list_walks_every_member_exactly_once,
    member_list_limit_out_of_range_is_422,
    member_list_with_a_non_numeric_limit_is_a_problem_document,
    purchase_earns_base_points_rounded_down,
    purchase_by_unknown_external_id_enrols_the_member,
    purchase_by_unknown_external_id_is_404_without_auto_enroll,
    same_order_id_twice_counts_once,
    idempotent_purchase_replays_the_first_answer_once,
    idempotent_member_creation_replays_the_first_answer_once,
    idempotent_adjustment_replays_the_first_answer_once,
    idempotency_key_reused_with_another_request_is_409,
    idempotent_programme_put_replays_without_a_second_version,
    idempotency_key_longer_than_255_characters_is_422,
    custom_event_is_recorded_without_base_points,
    full_refund_claws_back_every_point,
    two_partial_refunds_claw_back_the_whole_purchase,
    refund_by_lines_claws_back_their_share,
    refund_of_unknown_order_is_404,
    refund_above_the_purchase_is_422_and_changes_nothing,
    retried_refund_id_has_one_effect,
    bad_purchases_are_refused_and_write_nothing,
    bad_member_bodies_are_refused_and_write_nothing,
    bad_adjustments_are_refused_and_write_nothing,
    concurrent_writes_on_one_member_end_at_the_exact_balance,
    concurrent_purchases_across_ten_members_end_exact_per_member,
    concurrent_resends_of_one_order_record_it_once,
    concurrent_refunds_and_purchases_across_members_end_exact,
    invalid_programme_is_422_naming_the_field,
    programme_with_an_unknown_rounding_is_422_naming_rounding,
    valid_programme_put_bumps_the_version_and_reads_back,
    operational_endpoints_answer,
    wrong_method_is_405_problem_document,
);
