//! The console and the portal through their router (`oneshot`, no socket), on SQLite and
//! PostgreSQL: who may see and change what, forgery protection, sign-in, session expiry, and
//! the pages an owner and a member use. Each scenario ends with the ledger verified.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use chrono::{DateTime, Duration, Utc};
use fidelis_app::console::Role;
use fidelis_app::portal::SignUp;
use fidelis_app::{App, ManualClock, Principal, Scope};
use fidelis_store_tests::{TestDb, on_both};
use std::collections::BTreeMap;
use std::sync::Arc;
use tower::ServiceExt;

const T: &str = "shop";
const PASSWORD: &str = "correct horse battery";

fn t0() -> DateTime<Utc> {
    fidelis_core::time::parse("2026-05-04T09:00:00Z").expect("time")
}

struct Env {
    app: App,
    clock: Arc<ManualClock>,
    router: Router,
    _db: TestDb,
}

async fn env(db: TestDb) -> Env {
    let clock = Arc::new(ManualClock::new(t0()));
    let store = db.store(t0().timestamp_micros());
    let app = App::new(store, clock.clone());
    let router = fidelis_web::router::<()>(app.clone());
    Env {
        app,
        clock,
        router,
        _db: db,
    }
}

impl Env {
    fn admin_principal(&self) -> Principal {
        Principal {
            tenant: T.into(),
            key_id: "test".into(),
            scope: Scope::Admin,
        }
    }

    async fn user(&self, email: &str, role: Role) {
        self.app
            .create_admin_user(T, email, role, Some(PASSWORD), false, "test")
            .await
            .expect("admin user");
    }

    async fn verify(&self) {
        let r = self.app.store.verify().await.expect("verify");
        assert!(r.ok(), "ledger invariants broken: {r:?}");
    }
}

/// A browser: a cookie jar over the router.
struct Browser<'a> {
    router: &'a Router,
    cookies: BTreeMap<String, String>,
    host: &'static str,
}

struct Page {
    status: StatusCode,
    location: Option<String>,
    set_cookies: Vec<String>,
    body: String,
}

impl Page {
    fn csrf(&self) -> String {
        let marker = "name=\"csrf\" value=\"";
        let i = self
            .body
            .find(marker)
            .unwrap_or_else(|| panic!("no csrf field in {}", self.body));
        self.body[i + marker.len()..]
            .split('"')
            .next()
            .unwrap_or("")
            .to_string()
    }
}

impl<'a> Browser<'a> {
    fn new(env: &'a Env) -> Browser<'a> {
        Browser {
            router: &env.router,
            cookies: BTreeMap::new(),
            host: "127.0.0.1:8080",
        }
    }

    async fn send(&mut self, req: Request<Body>) -> Page {
        let resp = self
            .router
            .clone()
            .oneshot(req)
            .await
            .expect("router answers");
        let status = resp.status();
        let location = resp
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let set_cookies: Vec<String> = resp
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect();
        for c in &set_cookies {
            let pair = c.split(';').next().unwrap_or("");
            if let Some((k, v)) = pair.split_once('=') {
                if c.contains("Max-Age=0") {
                    self.cookies.remove(k);
                } else {
                    self.cookies.insert(k.to_string(), v.to_string());
                }
            }
        }
        let bytes = axum::body::to_bytes(resp.into_body(), 4 << 20)
            .await
            .expect("body");
        Page {
            status,
            location,
            set_cookies,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn get(&mut self, path: &str) -> Page {
        let req = Request::get(path)
            .header(header::HOST, self.host)
            .header(header::COOKIE, self.cookie_header())
            .header(header::ACCEPT_LANGUAGE, "en")
            .body(Body::empty())
            .expect("request");
        self.send(req).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let body = serde_urlencoded::to_string(form).expect("form");
        let req = Request::post(path)
            .header(header::HOST, self.host)
            .header(header::COOKIE, self.cookie_header())
            .header(header::ACCEPT_LANGUAGE, "en")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(body))
            .expect("request");
        self.send(req).await
    }

    /// Signs in to the console; returns the dashboard page.
    async fn admin_login(&mut self, email: &str, password: &str) -> Page {
        let form = self.get("/admin/login").await;
        let csrf = form.csrf();
        let r = self
            .post(
                "/admin/login",
                &[
                    ("csrf", &csrf),
                    ("tenant", T),
                    ("email", email),
                    ("password", password),
                    ("next", "/admin"),
                ],
            )
            .await;
        if r.status == StatusCode::SEE_OTHER {
            return self.get("/admin").await;
        }
        r
    }
}

async fn member(env: &Env, name: &str, email: &str) -> (String, String) {
    let (token, s, _) = env
        .app
        .member_sign_up(
            T,
            SignUp {
                name: name.into(),
                email: email.into(),
                password: Some(PASSWORD.into()),
                marketing_email: true,
                analytics: false,
            },
        )
        .await
        .expect("sign-up");
    (token, s.member_id)
}

async fn a_member_session_never_reads_another_member(db: TestDb) {
    let env = env(db).await;
    env.user("owner@shop.example", Role::Owner).await;
    let (token_a, id_a) = member(&env, "Alice Martin", "alice@example.com").await;
    let (_, id_b) = member(&env, "Bob Durand", "bob@example.com").await;
    env.app
        .adjust(
            &env.admin_principal(),
            &id_b,
            fidelis_app::AdjustmentInput {
                points: 777,
                reason: "bob only".into(),
            },
            None,
        )
        .await
        .expect("adjust");
    let mut alice = Browser::new(&env);
    alice
        .cookies
        .insert("fidelis_member".into(), token_a.clone());
    let home = alice.get(&format!("/m/{T}")).await;
    assert_eq!(home.status, StatusCode::OK);
    assert!(
        home.body.contains("Alice Martin") && !home.body.contains("Bob"),
        "home shows only Alice"
    );
    let history = alice.get(&format!("/m/{T}/history")).await;
    assert!(!history.body.contains("bob only") && !history.body.contains("777"));
    let export = alice.get(&format!("/m/{T}/export")).await;
    assert_eq!(export.status, StatusCode::OK);
    assert!(
        export.body.contains(&id_a) && !export.body.contains(&id_b),
        "export holds only Alice"
    );
    // Alice's cookie is no key to another tenant's portal.
    env.app
        .create_admin_user(
            "other",
            "o@other.example",
            Role::Owner,
            Some(PASSWORD),
            false,
            "test",
        )
        .await
        .expect("tenant");
    let elsewhere = alice.get("/m/other/export").await;
    assert_eq!(elsewhere.status, StatusCode::SEE_OTHER);
    assert_eq!(elsewhere.location.as_deref(), Some("/m/other/login"));
    // Nor is it a console session.
    let console = alice.get("/admin/members").await;
    assert_eq!(console.status, StatusCode::SEE_OTHER);
    env.verify().await;
}

async fn a_support_user_cannot_change_settings(db: TestDb) {
    let env = env(db).await;
    env.user("support@shop.example", Role::Support).await;
    let (_, version_before) = env
        .app
        .program(&env.admin_principal())
        .await
        .expect("program");
    let mut b = Browser::new(&env);
    let dash = b.admin_login("support@shop.example", PASSWORD).await;
    assert_eq!(dash.status, StatusCode::OK);
    let settings = b.get("/admin/settings").await;
    assert_eq!(settings.status, StatusCode::OK, "support may look");
    let csrf = settings.csrf();
    let form = [
        ("csrf", csrf.as_str()),
        ("points_name", "stars"),
        ("earn_rate", "5"),
        ("rounding", "floor"),
        ("pending_days", "0"),
        ("expiry_kind", "none"),
        ("expiry_months", "12"),
        ("refund_policy", "allow_negative"),
    ];
    let r = b.post("/admin/settings", &form).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let brand = b
        .post(
            "/admin/branding",
            &[
                ("csrf", &csrf),
                ("display_name", "Hacked"),
                ("points_name", "x"),
                ("primary_color", "#000000"),
                ("accent_color", "#000000"),
                ("welcome_title", ""),
                ("welcome_text", ""),
                ("footer_text", ""),
            ],
        )
        .await;
    assert_eq!(brand.status, StatusCode::FORBIDDEN);
    assert_eq!(b.get("/admin/keys").await.status, StatusCode::FORBIDDEN);
    let campaigns = b.get("/admin/campaigns").await;
    assert_eq!(campaigns.status, StatusCode::OK, "support may look");
    assert!(!campaigns.body.contains("action=\"/admin/campaigns\""));
    let r = b
        .post(
            "/admin/campaigns",
            &[("csrf", &csrf), ("name", "Sneaky"), ("target", "all")],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(
        env.app
            .list_campaigns(&env.admin_principal(), None, 10)
            .await
            .expect("campaigns")
            .items
            .is_empty(),
        "no campaign was created"
    );
    let (s, version_after) = env
        .app
        .program(&env.admin_principal())
        .await
        .expect("program");
    assert_eq!(version_after, version_before, "nothing changed");
    assert_eq!(s.points_name, "points");
    assert_eq!(
        env.app
            .branding(T)
            .await
            .expect("branding")
            .settings
            .display_name,
        T
    );
    env.verify().await;
}

async fn an_analyst_cannot_adjust_points(db: TestDb) {
    let env = env(db).await;
    env.user("analyst@shop.example", Role::Analyst).await;
    let (_, id) = member(&env, "Alice Martin", "alice@example.com").await;
    let mut b = Browser::new(&env);
    b.admin_login("analyst@shop.example", PASSWORD).await;
    let page = b.get(&format!("/admin/members/{id}")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        !page.body.contains("/adjust\""),
        "no adjustment form for analysts"
    );
    let csrf = page.csrf();
    let r = b
        .post(
            &format!("/admin/members/{id}/adjust"),
            &[("csrf", &csrf), ("points", "100"), ("reason", "nope")],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let bal = env
        .app
        .balance(&env.admin_principal(), &id)
        .await
        .expect("balance");
    assert_eq!(bal.available, 0);
    env.verify().await;
}

async fn form_posts_without_the_csrf_token_are_refused(db: TestDb) {
    let env = env(db).await;
    env.user("owner@shop.example", Role::Owner).await;
    let (token, _) = member(&env, "Alice Martin", "alice@example.com").await;
    let (_, version_before) = env
        .app
        .program(&env.admin_principal())
        .await
        .expect("program");
    let mut b = Browser::new(&env);
    b.admin_login("owner@shop.example", PASSWORD).await;
    let fields = [
        ("points_name", "stars"),
        ("earn_rate", "5"),
        ("rounding", "floor"),
        ("pending_days", "0"),
        ("expiry_kind", "none"),
        ("expiry_months", "12"),
        ("refund_policy", "allow_negative"),
    ];
    let none = b.post("/admin/settings", &fields).await;
    assert_eq!(none.status, StatusCode::FORBIDDEN);
    let mut wrong = vec![("csrf", "not-the-token-of-this-session-at-all-000000")];
    wrong.extend_from_slice(&fields);
    assert_eq!(
        b.post("/admin/settings", &wrong).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        env.app
            .program(&env.admin_principal())
            .await
            .expect("program")
            .1,
        version_before
    );
    // With the session's token it goes through: the refusals were about the token alone.
    let csrf = b.get("/admin/settings").await.csrf();
    let mut right = vec![("csrf", csrf.as_str())];
    right.extend_from_slice(&fields);
    assert_eq!(
        b.post("/admin/settings", &right).await.status,
        StatusCode::OK
    );
    assert_eq!(
        env.app
            .program(&env.admin_principal())
            .await
            .expect("program")
            .0
            .points_name,
        "stars"
    );
    // The portal too: a profile change or a deletion request without the token does nothing.
    let mut m = Browser::new(&env);
    m.cookies.insert("fidelis_member".into(), token);
    let r = m
        .post(&format!("/m/{T}/profile"), &[("name", "Mallory")])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = m.post(&format!("/m/{T}/delete"), &[]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(
        env.app
            .store
            .deletion_requests(T, None)
            .await
            .expect("requests")
            .is_empty()
    );
    // And an anonymous form (sign-in) without the cookie's token is refused before any check.
    let mut anon = Browser::new(&env);
    let r = anon
        .post(
            "/admin/login",
            &[
                ("tenant", T),
                ("email", "owner@shop.example"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(
        r.set_cookies
            .iter()
            .all(|c| !c.starts_with("fidelis_admin="))
    );
    env.verify().await;
}

async fn a_wrong_password_is_refused(db: TestDb) {
    let env = env(db).await;
    env.user("owner@shop.example", Role::Owner).await;
    member(&env, "Alice Martin", "alice@example.com").await;
    let mut b = Browser::new(&env);
    let r = b
        .admin_login("owner@shop.example", "not the password")
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.body.contains("Wrong e-mail or password"));
    assert!(!b.cookies.contains_key("fidelis_admin"));
    let r = b.admin_login("nobody@shop.example", PASSWORD).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(b.get("/admin").await.status, StatusCode::SEE_OTHER);
    let form = b.get(&format!("/m/{T}/login")).await;
    let csrf = form.csrf();
    let r = b
        .post(
            &format!("/m/{T}/login"),
            &[
                ("csrf", &csrf),
                ("email", "alice@example.com"),
                ("password", "wrong password!"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(!b.cookies.contains_key("fidelis_member"));
    let r = b
        .post(
            &format!("/m/{T}/login"),
            &[
                ("csrf", &csrf),
                ("email", "alice@example.com"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(b.cookies.contains_key("fidelis_member"));
    env.verify().await;
}

async fn sessions_and_links_expire(db: TestDb) {
    let env = env(db).await;
    env.user("owner@shop.example", Role::Owner).await;
    let (member_token, _) = member(&env, "Alice Martin", "alice@example.com").await;
    let mut b = Browser::new(&env);
    assert_eq!(
        b.admin_login("owner@shop.example", PASSWORD).await.status,
        StatusCode::OK
    );
    env.clock.set(t0() + Duration::hours(11));
    assert_eq!(
        b.get("/admin").await.status,
        StatusCode::OK,
        "still signed in after 11 hours"
    );
    env.clock.set(t0() + Duration::hours(13));
    let r = b.get("/admin/members").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "signed out after 12 hours");
    assert!(
        r.location
            .unwrap_or_default()
            .starts_with("/admin/login?next=/admin/members")
    );
    let mut m = Browser::new(&env);
    m.cookies.insert("fidelis_member".into(), member_token);
    assert_eq!(
        m.get(&format!("/m/{T}/history")).await.status,
        StatusCode::OK
    );
    env.clock.set(t0() + Duration::days(31));
    assert_eq!(
        m.get(&format!("/m/{T}/history")).await.status,
        StatusCode::SEE_OTHER
    );
    // A magic link works once, within 15 minutes.
    let (_, link) = env
        .app
        .request_magic_link(T, "ALICE@example.com")
        .await
        .expect("link")
        .expect("known e-mail");
    let mut l = Browser::new(&env);
    let r = l.get(&format!("/m/{T}/magic?token={link}")).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(l.cookies.contains_key("fidelis_member"));
    let mut again = Browser::new(&env);
    assert_eq!(
        again
            .get(&format!("/m/{T}/magic?token={link}"))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let (_, late) = env
        .app
        .request_magic_link(T, "alice@example.com")
        .await
        .expect("link")
        .expect("known");
    env.clock
        .set(t0() + Duration::days(31) + Duration::minutes(16));
    assert_eq!(
        again
            .get(&format!("/m/{T}/magic?token={late}"))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert!(
        env.app
            .request_magic_link(T, "nobody@example.com")
            .await
            .expect("link")
            .is_none()
    );
    env.verify().await;
}

async fn an_owner_works_through_the_console(db: TestDb) {
    let env = env(db).await;
    env.user("owner@shop.example", Role::Owner).await;
    let (_, id) = member(&env, "Alice Martin", "alice@example.com").await;
    let mut b = Browser::new(&env);
    let dash = b.admin_login("owner@shop.example", PASSWORD).await;
    assert_eq!(dash.status, StatusCode::OK);
    assert!(dash.body.contains("<svg class=\"chart\""));
    let list = b.get("/admin/members?q=ALICE").await;
    assert!(list.body.contains(&format!("/admin/members/{id}")));
    let none = b.get("/admin/members?q=zzz%25").await;
    assert!(!none.body.contains(&format!("/admin/members/{id}")));
    let profile = b.get(&format!("/admin/members/{id}")).await;
    let csrf = profile.csrf();
    let r = b
        .post(
            &format!("/admin/members/{id}/adjust"),
            &[
                ("csrf", &csrf),
                ("points", "+250"),
                ("reason", "welcome gift"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let profile = b.get(&format!("/admin/members/{id}")).await;
    assert!(profile.body.contains("welcome gift") && profile.body.contains("250"));
    let bad = b
        .post(
            &format!("/admin/members/{id}/adjust"),
            &[("csrf", &csrf), ("points", "lots"), ("reason", "x")],
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    let keys = b
        .post(
            "/admin/keys",
            &[("csrf", &csrf), ("scope", "pos"), ("label", "till 1")],
        )
        .await;
    assert_eq!(keys.status, StatusCode::OK);
    let secret = keys
        .body
        .split("data-key-secret>")
        .nth(1)
        .and_then(|s| s.split('<').next())
        .unwrap_or("")
        .to_string();
    assert!(
        env.app.authenticate(&secret).await.is_ok(),
        "the shown key works"
    );
    let key_id = env
        .app
        .list_keys(&env.admin_principal())
        .await
        .expect("keys")[0]
        .id
        .clone();
    assert_eq!(
        b.post(&format!("/admin/keys/{key_id}/revoke"), &[("csrf", &csrf)])
            .await
            .status,
        StatusCode::SEE_OTHER
    );
    assert!(env.app.authenticate(&secret).await.is_err(), "revoked");
    let logo = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";
    let r = b
        .post(
            "/admin/branding",
            &[
                ("csrf", &csrf),
                ("display_name", "Maison Lumière"),
                ("points_name", "étoiles"),
                ("primary_color", "#7a1f3d"),
                ("accent_color", "#f0b429"),
                ("welcome_title", "Bienvenue"),
                ("welcome_text", "Vos étoiles"),
                ("footer_text", "Maison Lumière"),
                ("logo", logo),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let portal = b.get(&format!("/m/{T}")).await;
    assert!(portal.body.contains("Maison Lumière") && portal.body.contains("--brand: #7a1f3d"));
    let campaigns = b.get("/admin/campaigns").await;
    assert_eq!(campaigns.status, StatusCode::OK, "{}", campaigns.body);
    let csrf = campaigns.csrf();
    let bad = b
        .post(
            "/admin/campaigns",
            &[
                ("csrf", &csrf),
                ("name", "Broken target"),
                ("target", "expression"),
                ("expression", "member.tier =="),
            ],
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad.body.contains("target.expression"), "{}", bad.body);
    let r = b
        .post(
            "/admin/campaigns",
            &[
                ("csrf", &csrf),
                ("name", "Winter sale"),
                ("budget_points", "50000"),
                ("valid_from", "2026-12-01"),
                ("valid_to", "2027-01-15"),
                ("target", "expression"),
                ("expression", "member.order_count >= 0"),
                ("activate", "on"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let at = r.location.clone().unwrap_or_default();
    assert!(at.starts_with("/admin/campaigns/"), "{at}");
    let campaign = b.get(&at).await;
    assert_eq!(campaign.status, StatusCode::OK, "{}", campaign.body);
    assert!(campaign.body.contains("Winter sale") && campaign.body.contains("50,000"));
    let cid = env
        .app
        .list_campaigns(&env.admin_principal(), None, 10)
        .await
        .expect("campaigns")
        .items[0]
        .id
        .clone();
    assert_eq!(
        env.app
            .campaign(&env.admin_principal(), &cid)
            .await
            .expect("campaign")
            .status,
        fidelis_core::rules::define::Status::Active
    );
    let active = b.get("/admin/campaigns?status=active").await;
    assert!(active.body.contains("Winter sale"));
    let drafts = b.get("/admin/campaigns?status=draft").await;
    assert!(!drafts.body.contains("Winter sale"));
    let bt = b
        .get(&format!(
            "/admin/campaigns/{cid}/backtest?from=2026-10-01&to=2026-11-01"
        ))
        .await;
    assert_eq!(bt.status, StatusCode::OK, "{}", bt.body);
    assert!(bt.body.contains("points earned"), "{}", bt.body);
    let bt_bad = b
        .get(&format!(
            "/admin/campaigns/{cid}/backtest?from=2026-11-01&to=2026-10-01"
        ))
        .await;
    assert!(bt_bad.body.contains("alert-error"), "{}", bt_bad.body);
    let ended = b
        .post(
            "/admin/campaigns/status",
            &[("csrf", &csrf), ("id", &cid), ("status", "ended")],
        )
        .await;
    assert_eq!(ended.status, StatusCode::SEE_OTHER);
    assert_eq!(
        env.app
            .campaign(&env.admin_principal(), &cid)
            .await
            .expect("campaign")
            .status,
        fidelis_core::rules::define::Status::Ended
    );
    for path in [
        "/admin/campaigns",
        "/admin/campaigns?status=ended",
        "/admin/campaigns/check?expression=member.order_count",
        "/admin",
        "/admin?days=7",
        "/admin/members",
        "/admin/members?filter=debt",
        "/admin/settings",
        "/admin/branding",
        "/admin/keys",
        "/admin/users",
        "/admin/deletion-requests",
        "/admin/rewards",
        "/admin/rules",
        "/admin/rules?status=active",
        "/admin/coupons",
        "/admin/coupons?code=ABCD-EFGH",
        "/admin/rules/dry-run?total=80",
        "/admin/tiers",
        "/admin/rules/check?condition=event.total",
    ] {
        let page = b.get(path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}: {}", page.body);
    }
    let csrf = b.get("/admin/tiers").await.csrf();
    let r = b
        .post(
            "/admin/tiers",
            &[
                ("csrf", &csrf),
                ("json", fidelis_web::admin::tiers::EXAMPLE),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let tiers = env
        .app
        .tiers(&env.admin_principal())
        .await
        .expect("tiers")
        .expect("a ladder");
    assert_eq!(tiers.tiers.len(), 2);
    let bad = b
        .post(
            "/admin/tiers",
            &[("csrf", &csrf), ("json", "{\"metric\": \"vibes\"}")],
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    let home = b.get(&format!("/admin/members/{id}")).await;
    assert!(
        home.body.contains("Silver") || home.body.contains("Gold"),
        "the member's tier or the next one shows"
    );
    let img = b.get(&format!("/m/{T}/logo")).await;
    assert_eq!(img.status, StatusCode::OK);
    assert!(img.body.starts_with("\u{fffd}PNG"));
    env.verify().await;
}

async fn a_shopper_signs_up_with_consents_and_manages_their_data(db: TestDb) {
    let env = env(db).await;
    let mut b = Browser::new(&env);
    env.user("owner@shop.example", Role::Owner).await;
    let form = b.get(&format!("/m/{T}/signup")).await;
    assert_eq!(form.status, StatusCode::OK);
    let csrf = form.csrf();
    let r = b
        .post(
            &format!("/m/{T}/signup"),
            &[
                ("csrf", &csrf),
                ("name", "Chloé Petit"),
                ("email", "Chloe@Example.com"),
                ("password", ""),
                ("marketing_email", "on"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    let cookie = r
        .set_cookies
        .iter()
        .find(|c| c.starts_with("fidelis_member="))
        .cloned()
        .unwrap_or_default();
    assert!(
        cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Lax")
            && cookie.contains("Path=/m/shop")
    );
    let m = env
        .app
        .lookup_member(
            &env.admin_principal(),
            fidelis_store::LookupBy::Email,
            "chloe@example.com",
        )
        .await
        .expect("member");
    let consents: Vec<(String, bool, String)> = m
        .consents
        .iter()
        .map(|c| (c.purpose.clone(), c.granted, c.source.clone()))
        .collect();
    assert_eq!(
        consents,
        vec![
            ("marketing_email".into(), true, "portal".into()),
            ("analytics".into(), false, "portal".into())
        ]
    );
    assert!(m.consents.iter().all(|c| c.at == "2026-05-04T09:00:00Z"));
    let again = b
        .post(
            &format!("/m/{T}/signup"),
            &[
                ("csrf", &csrf),
                ("name", "Chloé"),
                ("email", "chloe@example.com"),
            ],
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    let profile = b.get(&format!("/m/{T}/profile")).await;
    let csrf = profile.csrf();
    let r = b
        .post(
            &format!("/m/{T}/profile"),
            &[("csrf", &csrf), ("name", "Chloé P."), ("analytics", "on")],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let m = env
        .app
        .member(&env.admin_principal(), &m.id)
        .await
        .expect("member");
    assert_eq!(m.name.as_deref(), Some("Chloé P."));
    assert!(
        m.consents
            .iter()
            .any(|c| c.purpose == "analytics" && c.granted)
    );
    assert!(
        m.consents
            .iter()
            .any(|c| c.purpose == "marketing_email" && !c.granted)
    );
    let r = b.post(&format!("/m/{T}/delete"), &[("csrf", &csrf)]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let requests = env
        .app
        .store
        .deletion_requests(T, None)
        .await
        .expect("requests");
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].member_id, m.id);
    // French from the browser, and the switch.
    let req = Request::get(format!("/m/{T}/profile"))
        .header(header::HOST, "127.0.0.1")
        .header(header::COOKIE, b.cookie_header())
        .header(header::ACCEPT_LANGUAGE, "fr-FR,fr;q=0.9")
        .body(Body::empty())
        .expect("request");
    let fr = b.send(req).await;
    assert!(fr.body.contains("lang=\"fr\"") && fr.body.contains("Télécharger mes données"));
    let r = b.get(&format!("/ui/lang/fr?next=/m/{T}")).await;
    assert_eq!(r.location.as_deref(), Some("/m/shop"));
    assert!(b.get(&format!("/m/{T}")).await.body.contains("Votre solde"));
    assert_eq!(b.get("/m/nosuchshop").await.status, StatusCode::NOT_FOUND);
    env.verify().await;
}

async fn cookies_are_secure_away_from_localhost(db: TestDb) {
    let env = env(db).await;
    env.user("owner@shop.example", Role::Owner).await;
    let mut b = Browser::new(&env);
    b.host = "loyalty.shop.example";
    let r = b.admin_login("owner@shop.example", PASSWORD).await;
    assert_eq!(r.status, StatusCode::OK);
    let mut b2 = Browser::new(&env);
    b2.host = "loyalty.shop.example";
    let form = b2.get("/admin/login").await;
    let csrf = form.csrf();
    let r = b2
        .post(
            "/admin/login",
            &[
                ("csrf", &csrf),
                ("tenant", T),
                ("email", "owner@shop.example"),
                ("password", PASSWORD),
            ],
        )
        .await;
    let c = r
        .set_cookies
        .iter()
        .find(|c| c.starts_with("fidelis_admin="))
        .cloned()
        .unwrap_or_default();
    assert!(
        c.contains("Secure")
            && c.contains("HttpOnly")
            && c.contains("SameSite=Strict")
            && c.contains("Path=/admin"),
        "{c}"
    );
    env.verify().await;
}

on_both!(
    a_member_session_never_reads_another_member,
    a_support_user_cannot_change_settings,
    an_analyst_cannot_adjust_points,
    form_posts_without_the_csrf_token_are_refused,
    a_wrong_password_is_refused,
    sessions_and_links_expire,
    an_owner_works_through_the_console,
    a_shopper_signs_up_with_consents_and_manages_their_data,
    cookies_are_secure_away_from_localhost,
);

async fn a_member_cannot_open_another_members_coupon(db: TestDb) {
    let env = env(db).await;
    env.user("owner@shop.example", Role::Owner).await;
    let (token_a, id_a) = member(&env, "Alice Martin", "alice@example.com").await;
    let (_, id_b) = member(&env, "Bob Durand", "bob@example.com").await;
    let admin = env.admin_principal();
    let reward: fidelis_core::rewards::RewardInput = serde_json::from_value(serde_json::json!({
        "kind": "fixed_discount", "title": "10 euros off", "points_cost": 100, "value": "10.00"
    }))
    .expect("reward input");
    let (reward, _) = env
        .app
        .create_reward(&admin, reward, None)
        .await
        .expect("reward");
    for id in [&id_a, &id_b] {
        let input = fidelis_app::AdjustmentInput {
            points: 150,
            reason: "gift".into(),
        };
        env.app
            .adjust(&admin, id, input, None)
            .await
            .expect("adjust");
    }
    let redeem = |id: String| {
        let app = env.app.clone();
        let admin = admin.clone();
        let reward_id = reward.id.clone();
        async move {
            let input = fidelis_app::rewards::RedemptionInput { reward_id };
            app.redeem_reward(&admin, &id, input, None)
                .await
                .expect("redeem")
                .0
                .coupon
                .code
        }
    };
    let code_b = redeem(id_b.clone()).await;
    let mut alice = Browser::new(&env);
    alice.cookies.insert("fidelis_member".into(), token_a);
    let page = alice.get(&format!("/m/{T}/coupons/{code_b}")).await;
    assert_eq!(
        page.status,
        StatusCode::NOT_FOUND,
        "Bob's coupon is not Alice's to see"
    );
    let rewards = alice.get(&format!("/m/{T}/rewards")).await;
    assert!(rewards.body.contains("10 euros off") && !rewards.body.contains(&code_b));
    let csrf = rewards.csrf();
    let r = alice
        .post(
            &format!("/m/{T}/rewards/redeem"),
            &[("csrf", &csrf), ("reward_id", &reward.id)],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let own = alice.get(r.location.as_deref().unwrap_or("/")).await;
    assert_eq!(own.status, StatusCode::OK);
    assert!(own.body.contains("<svg class=\"qr\""));
    let bal = env.app.balance(&admin, &id_a).await.expect("balance");
    assert_eq!(bal.available, 50);
    env.verify().await;
}

on_both!(a_member_cannot_open_another_members_coupon);
