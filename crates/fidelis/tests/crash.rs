//! Durability, black box: the real binary serves a database, acknowledges purchases, and is
//! killed with SIGKILL at once; a new process on the same database must still have every
//! acknowledged purchase. Runs on SQLite and on PostgreSQL (see `on_both!`).

mod common;

use common::*;
use fidelis_store_tests::TestDb;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_fidelis");

/// A running `fidelis serve`, killed (SIGKILL) when dropped, even when an assertion failed;
/// its log is printed then, to explain the failure.
struct Serve {
    child: Child,
    api: Api,
    log: PathBuf,
}

impl Drop for Serve {
    fn drop(&mut self) {
        // Already gone after `kill`; nothing to do then.
        let _ = self.child.start_kill();
        let log = std::thread::panicking()
            .then(|| std::fs::read_to_string(&self.log).ok())
            .flatten();
        if let Some(log) = log {
            eprintln!(
                "--- log of fidelis serve ({}) ---\n{log}",
                self.log.display()
            );
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

impl Serve {
    async fn start(url: &str) -> Serve {
        let log = std::env::temp_dir().join(format!(
            "fidelis-crash-{}.log",
            fidelis_store_tests::fidelis_store::random_id("", 12)
        ));
        let log_file = std::fs::File::create(&log).expect("a log file");
        let mut child = Command::new(BIN)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--database-url",
                url,
                "--jobs-interval-secs",
                "0",
            ])
            .env_remove("FIDELIS_LISTEN")
            .env_remove("FIDELIS_DATABASE_URL")
            .env_remove("FIDELIS_LOG_FORMAT")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true)
            .spawn()
            .expect("fidelis serve starts");
        let stdout = child.stdout.take().expect("piped stdout");
        // The guard exists before waiting, so a server that never gets ready is killed too.
        let mut serve = Serve {
            child,
            api: Api::new(String::new()),
            log,
        };
        let mut lines = BufReader::new(stdout).lines();
        let base = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await.expect("readable stdout") {
                if let Some(addr) = line.trim().strip_prefix("listening on ") {
                    return Some(addr.to_string());
                }
            }
            None
        })
        .await
        .expect("fidelis serve gets ready within a minute")
        .expect("fidelis serve prints `listening on http://ADDR` before exiting");
        // Keep reading stdout so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        serve.api = Api::new(base);
        serve
    }

    /// SIGKILL, no goodbye.
    async fn kill_9(mut self) {
        self.child.kill().await.expect("SIGKILL delivered");
    }
}

/// `fidelis keys create`: the new key is the last line of stdout.
async fn create_key(url: &str, tenant: &str, scope: &str) -> String {
    let out = Command::new(BIN)
        .args([
            "keys",
            "create",
            "--database-url",
            url,
            "--tenant",
            tenant,
            "--scope",
            scope,
        ])
        .env_remove("FIDELIS_DATABASE_URL")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("fidelis keys create runs");
    assert!(
        out.status.success(),
        "fidelis keys create failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("UTF-8 output")
        .lines()
        .rfind(|l| !l.trim().is_empty())
        .expect("a key on the last line")
        .trim()
        .to_string()
}

async fn acknowledged_purchases_survive_kill_9(db: TestDb) {
    let admin = create_key(&db.url, "crash", "admin").await;
    let pos = create_key(&db.url, "crash", "pos").await;
    assert_ne!(admin, pos);

    let first = Serve::start(&db.url).await;
    let api = first.api.clone();
    // One purchase, acknowledged, then 20 at once over 4 members (all enrolled on the fly).
    let mut orders: Vec<(String, Value, Value)> = Vec::new();
    let body = purchase_by_external("crash-m-0", "crash-o-0", "59.90");
    let r = api.purchase(&pos, &body).await;
    r.expect(201);
    assert_eq!(r.body["enrolled"], json!(true));
    orders.push(("crash-o-0".into(), body, r.body.clone()));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 1..=20 {
        let (api, pos) = (api.clone(), pos.clone());
        let order = format!("crash-o-{i}");
        let minor = 1000 + i * 111;
        let body = purchase_by_external(
            &format!("crash-m-{}", i % 4),
            &order,
            &format!("{}.{:02}", minor / 100, minor % 100),
        );
        tasks.spawn(async move {
            let r = api.purchase(&pos, &body).await;
            (order, body, r)
        });
    }
    while let Some(done) = tasks.join_next().await {
        let (order, body, r) = done.expect("the task ran");
        assert_eq!(r.status, 201, "{order}: {}", r.text);
        orders.push((order, body, r.body));
    }
    // Every purchase is acknowledged: pull the plug now.
    first.kill_9().await;

    let second = Serve::start(&db.url).await;
    let api = &second.api;
    // What the acknowledgements promised, per member.
    let mut promised: std::collections::BTreeMap<String, (i64, Vec<String>)> = Default::default();
    for (order, _, ack) in &orders {
        let member = ack["member_id"].as_str().expect("member_id").to_string();
        let e = promised.entry(member).or_default();
        e.0 += ack["points"].as_i64().expect("points");
        e.1.push(order.clone());
    }
    assert_eq!(promised.len(), 4, "four members were enrolled");
    for (member, (points, member_orders)) in &promised {
        assert_eq!(
            api.points(&admin, member).await,
            (0, *points, *points),
            "member {member}: balance after the crash"
        );
        let ledger = api.ledger(&admin, member).await;
        let mut seen: Vec<String> = ledger
            .iter()
            .filter(|t| t["kind"] == json!("earn"))
            .filter_map(|t| t["order_id"].as_str().map(str::to_string))
            .collect();
        seen.sort();
        let mut want = member_orders.clone();
        want.sort();
        assert_eq!(seen, want, "member {member}: ledger after the crash");
    }
    // The orders themselves were kept: each resend is a duplicate of the first answer.
    for (order, body, ack) in &orders {
        let r = api.purchase(&pos, body).await;
        assert_eq!(r.status, 200, "{order} resent: {}", r.text);
        assert_eq!(r.body["duplicate"], json!(true), "{order}");
        assert_eq!(r.body["event_id"], ack["event_id"], "{order}");
    }
    let verify = api.get("/api/v1/verify", &admin).await;
    verify.expect(200);
    assert_eq!(verify.body["ok"], json!(true), "{}", verify.text);
    drop(second);
}

/// Kill mid-traffic: whatever was acknowledged before the kill is there after it, and nothing
/// is half-written (a purchase is all there or not at all).
async fn kill_9_during_traffic_keeps_every_acknowledged_purchase(db: TestDb) {
    let pos = create_key(&db.url, "crash", "pos").await;
    let admin = create_key(&db.url, "crash", "admin").await;
    let first = Serve::start(&db.url).await;
    let member = first
        .api
        .create_member(&admin, json!({ "external_id": "busy-1" }))
        .await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, i64)>();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..4 {
        let (api, pos, member, tx) = (first.api.clone(), pos.clone(), member.clone(), tx.clone());
        tasks.spawn(async move {
            for i in 0.. {
                let order = format!("busy-{w}-{i}");
                let body = purchase_by_id(&member, &order, "12.34");
                let sent = api
                    .client
                    .post(api.url("/api/v1/events/purchase"))
                    .bearer_auth(&pos)
                    .json(&body)
                    .send()
                    .await;
                let Ok(resp) = sent else { break };
                if resp.status().as_u16() != 201 {
                    break;
                }
                let Ok(v) = resp.json::<Value>().await else {
                    break;
                };
                let _ = tx.send((order, v["points"].as_i64().unwrap_or(-1)));
            }
        });
    }
    drop(tx);
    // Let traffic flow, then kill while requests are in flight.
    let mut acked = Vec::new();
    while acked.len() < 40 {
        match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
            Ok(Some(a)) => acked.push(a),
            other => panic!("purchases stopped being acknowledged: {other:?}"),
        }
    }
    first.kill_9().await;
    while let Some(done) = tasks.join_next().await {
        done.expect("the task ran");
    }
    while let Ok(a) = rx.try_recv() {
        acked.push(a);
    }
    assert!(acked.iter().all(|(_, p)| *p == 12));

    let second = Serve::start(&db.url).await;
    let ledger = second.api.ledger(&admin, &member).await;
    let recorded: std::collections::BTreeSet<String> = ledger
        .iter()
        .filter_map(|t| t["order_id"].as_str().map(str::to_string))
        .collect();
    for (order, _) in &acked {
        assert!(
            recorded.contains(order),
            "{order} was acknowledged but is gone"
        );
    }
    assert_eq!(recorded.len(), ledger.len(), "one earn per order");
    // The member's cached balance agrees with its ledger (no half-written purchase).
    let n = recorded.len() as i64;
    assert_eq!(
        second.api.points(&admin, &member).await,
        (0, 12 * n, 12 * n)
    );
    let m = second
        .api
        .get(&format!("/api/v1/members/{member}"), &admin)
        .await;
    assert_eq!(m.body["order_count"], json!(n));
    let verify = second.api.get("/api/v1/verify", &admin).await;
    verify.expect(200);
    assert_eq!(verify.body["ok"], json!(true), "{}", verify.text);
}

fidelis_store_tests::on_both!(
    acknowledged_purchases_survive_kill_9,
    kill_9_during_traffic_keeps_every_acknowledged_purchase,
);
