//! Renders each console and portal page N times against a database (the demo's, typically)
//! through the router, without a socket, and prints milliseconds per page. A benchmark, not a
//! test: it asserts nothing.
//!
//! cargo run --release -p fidelis-web --example page_bench -- sqlite://fidelis-demo.db demo 50
//!
//! It adds (or resets) a console user `bench@fidelis.invalid` to the tenant and opens sessions.

use axum::body::Body;
use axum::http::{Request, header};
use fidelis_app::console::Role;
use fidelis_app::secrets::{new_token, token_hash};
use fidelis_app::{App, SystemClock};
use fidelis_store::dashboard::MemberFilter;
use fidelis_store::web::WebSession;
use fidelis_store::{Store, StoreOptions};
use std::sync::Arc;
use std::time::Instant;
use tower::ServiceExt;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "sqlite://fidelis-demo.db".into());
    let tenant = args.get(2).cloned().unwrap_or_else(|| "demo".into());
    let n: usize = args.get(3).and_then(|v| v.parse().ok()).unwrap_or(30);
    let backend = fidelis_store_tests::backend(&url);
    let opts = StoreOptions::for_dialect(backend.dialect());
    let now = chrono::Utc::now().timestamp_micros();
    let store = match Store::start(backend, opts, now) {
        Ok(s) => s,
        Err(e) => panic!("cannot open {url}: {e}"),
    };
    let app = App::new(store.clone(), Arc::new(SystemClock));
    let password = "page-bench-password";
    let (_, _) = app
        .create_admin_user(
            &tenant,
            "bench@fidelis.invalid",
            Role::Owner,
            Some(password),
            true,
            "bench",
        )
        .await
        .expect("a console user");
    let (admin_token, session) = app
        .admin_sign_in(&tenant, "bench@fidelis.invalid", password)
        .await
        .expect("sign-in");
    // The member with the most orders among the newest page: a long history to render.
    let rows = app
        .search_members(&session, "", MemberFilter::Active, None, 100)
        .await
        .expect("members");
    let member = rows
        .items
        .iter()
        .max_by_key(|m| m.order_count)
        .map(|m| m.id.clone())
        .unwrap_or_default();
    let member_token = new_token();
    let ws = WebSession {
        tenant_id: tenant.clone(),
        kind: "member".into(),
        subject: member.clone(),
        csrf: new_token(),
        expires_at: now + 3_600_000_000,
    };
    store
        .create_session(&token_hash(&member_token), ws, now)
        .await
        .expect("member session");
    let router = fidelis_web::router::<()>(app);
    let admin_pages = [
        "/admin".to_string(),
        "/admin?days=90".into(),
        "/admin/members".into(),
        "/admin/members?q=a".into(),
        "/admin/members?filter=dormant".into(),
        format!("/admin/members/{member}"),
        "/admin/settings".into(),
        "/admin/branding".into(),
        "/admin/rewards".into(),
        "/admin/rules".into(),
        "/admin/keys".into(),
        "/admin/deletion-requests".into(),
    ];
    let portal_pages = [
        format!("/m/{tenant}"),
        format!("/m/{tenant}/history"),
        format!("/m/{tenant}/rewards"),
        format!("/m/{tenant}/profile"),
    ];
    println!("{n} renders per page, {url}, tenant {tenant}, member {member}");
    println!(
        "{:<40} {:>9} {:>9} {:>9}",
        "page", "mean ms", "p95 ms", "max ms"
    );
    let pages = admin_pages
        .iter()
        .map(|p| (p.clone(), format!("fidelis_admin={admin_token}")))
        .chain(
            portal_pages
                .iter()
                .map(|p| (p.clone(), format!("fidelis_member={member_token}"))),
        );
    for (path, cookie) in pages {
        let mut times = Vec::with_capacity(n);
        for i in 0..n + 2 {
            let req = Request::get(&path)
                .header(header::HOST, "127.0.0.1")
                .header(header::COOKIE, &cookie)
                .body(Body::empty())
                .expect("request");
            let t = Instant::now();
            let resp = router.clone().oneshot(req).await.expect("answer");
            let status = resp.status();
            let _ = axum::body::to_bytes(resp.into_body(), 16 << 20).await;
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            assert!(status.is_success(), "{path}: {status}");
            if i >= 2 {
                times.push(ms);
            }
        }
        times.sort_by(f64::total_cmp);
        let mean = times.iter().sum::<f64>() / times.len().max(1) as f64;
        let p95 = times[(times.len() * 95 / 100).min(times.len() - 1)];
        let max = times.last().copied().unwrap_or(0.0);
        println!("{path:<40} {mean:>9.2} {p95:>9.2} {max:>9.2}");
    }
}
