//! Shared support of the black-box API tests: an in-process server on its own database with
//! keys for two tenants, a small HTTP client that keeps status, headers and body together, and
//! assertions on problem documents.

#![allow(dead_code)]

use fidelis_app::{App, Clock, Scope, SystemClock};
use fidelis_store_tests::TestDb;
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// A client bound to one server's base URL.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub client: reqwest::Client,
}

/// One answer: status, headers, the raw body and the body as JSON (`Null` when not JSON).
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
    pub body: Value,
}

impl Resp {
    pub async fn read(r: reqwest::Response) -> Resp {
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.expect("a readable body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            text,
            body,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn content_type(&self) -> &str {
        self.header("content-type").unwrap_or("")
    }

    /// Asserts the status, showing the body when it differs.
    #[track_caller]
    pub fn expect(&self, status: u16) -> &Resp {
        assert_eq!(
            self.status, status,
            "expected {status}, got {} with body {}",
            self.status, self.text
        );
        self
    }

    /// Checks that this is a problem document of `status` with a non-empty detail.
    pub fn check_problem(&self, status: u16) -> Result<(), String> {
        let mut errors = Vec::new();
        if self.status != status {
            errors.push(format!("status {} instead of {status}", self.status));
        }
        if !self.content_type().starts_with("application/problem+json") {
            errors.push(format!(
                "content-type {:?} instead of application/problem+json",
                self.content_type()
            ));
        }
        if self.body["status"] != json!(self.status) {
            errors.push("body.status does not repeat the status".into());
        }
        for field in ["type", "title", "detail"] {
            if self.body[field]
                .as_str()
                .is_none_or(|t| t.trim().is_empty())
            {
                errors.push(format!("no `{field}`"));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(format!("{} (body: {})", errors.join("; "), self.text))
        }
    }

    /// Asserts a problem document of `status` with a non-empty detail; returns its body.
    #[track_caller]
    pub fn problem(&self, status: u16) -> &Value {
        if let Err(e) = self.check_problem(status) {
            panic!("expected a {status} problem document: {e}");
        }
        &self.body
    }

    /// The fields a validation problem names.
    pub fn error_fields(&self) -> Vec<String> {
        self.body["errors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e["field"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The problem's `type`.
    pub fn kind(&self) -> &str {
        self.body["type"].as_str().unwrap_or("")
    }
}

pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("an HTTP client")
}

impl Api {
    pub fn new(base: impl Into<String>) -> Api {
        Api {
            base: base.into(),
            client: http_client(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a request; `body` is sent as JSON (with its content type) when given.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<&Value>,
        idem: Option<&str>,
    ) -> Resp {
        let mut rb = self.client.request(method, self.url(path));
        if let Some(k) = key {
            rb = rb.bearer_auth(k);
        }
        if let Some(b) = body {
            rb = rb
                .header("content-type", "application/json")
                .body(serde_json::to_vec(b).expect("serialisable body"));
        }
        if let Some(i) = idem {
            rb = rb.header("idempotency-key", i);
        }
        Resp::read(rb.send().await.expect("the server answers")).await
    }

    /// Sends raw bytes with the given content type (or none).
    pub async fn send_raw(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Resp {
        let mut rb = self.client.request(method, self.url(path)).body(body);
        if let Some(k) = key {
            rb = rb.bearer_auth(k);
        }
        if let Some(ct) = content_type {
            rb = rb.header("content-type", ct);
        }
        Resp::read(rb.send().await.expect("the server answers")).await
    }

    pub async fn get(&self, path: &str, key: &str) -> Resp {
        self.send(Method::GET, path, Some(key), None, None).await
    }

    pub async fn post(&self, path: &str, key: &str, body: &Value) -> Resp {
        self.send(Method::POST, path, Some(key), Some(body), None)
            .await
    }

    pub async fn post_idem(&self, path: &str, key: &str, body: &Value, idem: &str) -> Resp {
        self.send(Method::POST, path, Some(key), Some(body), Some(idem))
            .await
    }

    pub async fn put(&self, path: &str, key: &str, body: &Value) -> Resp {
        self.send(Method::PUT, path, Some(key), Some(body), None)
            .await
    }

    pub async fn patch(&self, path: &str, key: &str, body: &Value) -> Resp {
        self.send(Method::PATCH, path, Some(key), Some(body), None)
            .await
    }

    pub async fn delete(&self, path: &str, key: &str) -> Resp {
        self.send(Method::DELETE, path, Some(key), None, None).await
    }

    /// Enrols a member; returns its id.
    pub async fn create_member(&self, key: &str, body: Value) -> String {
        let r = self.post("/api/v1/members", key, &body).await;
        r.expect(201);
        r.body["id"].as_str().expect("a member id").to_string()
    }

    pub async fn balance(&self, key: &str, member: &str) -> Value {
        let r = self
            .get(&format!("/api/v1/members/{member}/balance"), key)
            .await;
        r.expect(200);
        r.body
    }

    /// (available, pending, lifetime_earned)
    pub async fn points(&self, key: &str, member: &str) -> (i64, i64, i64) {
        let b = self.balance(key, member).await;
        (
            b["available"].as_i64().expect("available"),
            b["pending"].as_i64().expect("pending"),
            b["lifetime_earned"].as_i64().expect("lifetime_earned"),
        )
    }

    /// The member's whole ledger, newest first, walking every page.
    pub async fn ledger(&self, key: &str, member: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                None => format!("/api/v1/members/{member}/ledger?limit=200"),
                Some(c) => format!("/api/v1/members/{member}/ledger?limit=200&cursor={c}"),
            };
            let r = self.get(&path, key).await;
            r.expect(200);
            out.extend(r.body["items"].as_array().expect("items").iter().cloned());
            match r.body["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return out,
            }
        }
    }

    /// Everything a client can see of a member: its record, balance and ledger.
    pub async fn snapshot(&self, key: &str, member: &str) -> Value {
        let m = self.get(&format!("/api/v1/members/{member}"), key).await;
        m.expect(200);
        json!({
            "member": m.body,
            "balance": self.balance(key, member).await,
            "ledger": self.ledger(key, member).await,
        })
    }

    /// Changes the programme: `change` is merged into the current settings.
    pub async fn set_program(&self, admin: &str, change: Value) -> Value {
        let current = self.get("/api/v1/program", admin).await;
        current.expect(200);
        let mut settings = current.body["settings"].clone();
        for (k, v) in change.as_object().expect("an object of settings") {
            settings[k] = v.clone();
        }
        let r = self.put("/api/v1/program", admin, &settings).await;
        r.expect(200);
        r.body
    }

    /// Points are spendable at once (no return window).
    pub async fn instant_points(&self, admin: &str) {
        self.set_program(admin, json!({ "pending_days": 0 })).await;
    }

    pub async fn purchase(&self, key: &str, body: &Value) -> Resp {
        self.post("/api/v1/events/purchase", key, body).await
    }

    pub async fn refund(&self, key: &str, body: &Value) -> Resp {
        self.post("/api/v1/events/refund", key, body).await
    }

    pub async fn adjust(&self, admin: &str, member: &str, points: i64, reason: &str) -> Resp {
        self.post(
            &format!("/api/v1/members/{member}/adjustments"),
            admin,
            &json!({ "points": points, "reason": reason }),
        )
        .await
    }
}

/// A purchase of one line worth `total` in EUR by member id.
pub fn purchase_by_id(member: &str, order_id: &str, total: &str) -> Value {
    json!({
        "member": { "id": member },
        "order_id": order_id,
        "channel": "pos",
        "store_id": "store-1",
        "currency": "EUR",
        "total": total,
        "lines": [{ "sku": "SKU-1", "category": "shoes", "quantity": 1, "unit_price": total }],
    })
}

/// The same by the retailer's own identifier.
pub fn purchase_by_external(external_id: &str, order_id: &str, total: &str) -> Value {
    json!({
        "member": { "external_id": external_id },
        "order_id": order_id,
        "channel": "web",
        "currency": "EUR",
        "total": total,
        "lines": [{ "sku": "SKU-1", "quantity": 1, "unit_price": total }],
    })
}

/// An in-process server on its own database, with keys for two tenants.
pub struct Server {
    pub api: Api,
    pub app: App,
    /// Tenant `tenant-a`.
    pub admin: String,
    pub pos: String,
    pub analytics: String,
    /// Tenant `tenant-b`.
    pub admin_b: String,
    pub pos_b: String,
    // Last: the database goes once the test is done with it.
    pub db: TestDb,
}

impl std::ops::Deref for Server {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

pub async fn start(db: TestDb) -> Server {
    start_with_clock(db, Arc::new(SystemClock)).await
}

/// The same, on a clock of the test's choosing (e.g. a `ManualClock` to move time).
pub async fn start_with_clock(db: TestDb, clock: Arc<dyn Clock>) -> Server {
    let store = db.store(clock.now().timestamp_micros());
    let app = App::new(store, clock);
    let router = fidelis_http::router(app.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    let addr = listener.local_addr().expect("a bound address");
    tokio::spawn(axum::serve(listener, router).into_future());
    let key = |tenant: &'static str, scope: Scope| {
        let app = app.clone();
        async move {
            app.bootstrap_key(tenant, scope, None)
                .await
                .expect("a bootstrap key")
                .1
        }
    };
    let admin = key("tenant-a", Scope::Admin).await;
    let pos = key("tenant-a", Scope::Pos).await;
    let analytics = key("tenant-a", Scope::Analytics).await;
    let admin_b = key("tenant-b", Scope::Admin).await;
    let pos_b = key("tenant-b", Scope::Pos).await;
    Server {
        api: Api::new(format!("http://{addr}")),
        app,
        admin,
        pos,
        analytics,
        admin_b,
        pos_b,
        db,
    }
}
