//! A power cut, modelled on SQLite: after it, the write-ahead log holds what it held when the
//! last completed sync began, and nothing written after. Every purchase acknowledged before
//! the next sync began must be in that log.
//!
//! The writer's commits reach the WAL file through the `walbuf` VFS (frames gathered in
//! memory, written at COMMIT) and are synced by the store's syncer, which acknowledges the
//! commits it received before its `fdatasync`. If frames stayed in memory past their commit,
//! or the syncer answered a commit that came in during its sync, a cut would lose an
//! acknowledged purchase; the crash test (`kill -9`) cannot see either, because the kernel
//! keeps what a killed process wrote.
//!
//! How: a reader pins the database file (a read transaction that started with the WAL empty,
//! so no checkpoint may copy pages into the file) and the file is copied once. The syncer then
//! copies the WAL before each sync. Each copy, beside the pinned database file, is the disk
//! after a cut at that moment; a new store opens it, and every purchase acknowledged by then
//! must answer as a duplicate with its first answer, and the ledger must verify.

use fidelis_core::ProgramSettings;
use fidelis_core::earn::{BaseEarner, EarnContext, Earner, MemberFacts, Trigger};
use fidelis_store::model::{MemberFields, PurchaseOutcome};
use fidelis_store::{Dialect, Store, StoreOptions};
use fidelis_store_tests::{BeforeSync, TestDb, shoe_purchase};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

const T: &str = "acme";
const TASKS: usize = 8;
const PER_TASK: usize = 25;

fn settings() -> ProgramSettings {
    ProgramSettings {
        pending_days: 0,
        ..ProgramSettings::default()
    }
}

/// The same purchase every time for one order id (a replay must be recognised by it).
async fn buy(store: &Store, member: &str, order: &str) -> PurchaseOutcome {
    let s = settings();
    let p = shoe_purchase(member, order, &s);
    let awards = BaseEarner.awards(&EarnContext {
        program: &s,
        event: Trigger::Purchase(&p),
        member: &MemberFacts::default(),
        now: chrono::Utc::now(),
    });
    let now = chrono::Utc::now().timestamp_micros();
    let (outcome, _) = store
        .purchase(T, p, awards, s, None, now)
        .await
        .expect("purchase");
    outcome
}

/// What the WAL held when each sync began, from the moment `armed` is set.
struct Copies {
    wal: PathBuf,
    dir: PathBuf,
    armed: AtomicBool,
    /// Syncs begun since armed; copy `k` is `{k}.db-wal` in `dir`.
    begun: AtomicU64,
    errors: Mutex<Vec<String>>,
}

impl Copies {
    fn before_sync(&self) {
        if !self.armed.load(Ordering::SeqCst) {
            return;
        }
        let k = self.begun.fetch_add(1, Ordering::SeqCst) + 1;
        let to = self.dir.join(format!("{k}.db-wal"));
        if let Err(e) = std::fs::copy(&self.wal, &to) {
            self.errors
                .lock()
                .expect("errors")
                .push(format!("copying the WAL to {}: {e}", to.display()));
        }
    }
}

/// The disk after a cut at copy `k`: the pinned database file and that WAL, in a directory of
/// their own; a store on them.
fn cut_at(copies: &Copies, base: &Path, k: u64) -> (Store, PathBuf) {
    let dir = copies.dir.join(format!("cut-{k}"));
    std::fs::create_dir_all(&dir).expect("cut directory");
    let db = dir.join("fidelis.db");
    std::fs::copy(base, &db).expect("database copy");
    std::fs::copy(
        copies.dir.join(format!("{k}.db-wal")),
        dir.join("fidelis.db-wal"),
    )
    .expect("WAL copy");
    let backend = fidelis_store_tests::backend(&format!("sqlite://{}", db.display()));
    let now = chrono::Utc::now().timestamp_micros();
    let store = Store::start(backend, StoreOptions::for_dialect(Dialect::Sqlite), now)
        .unwrap_or_else(|e| panic!("the store does not open after a cut at sync {k}: {e}"));
    (store, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_purchase_survives_a_power_cut_after_its_sync() {
    let db = TestDb::sqlite();
    let path = db
        .url
        .strip_prefix("sqlite://")
        .expect("a SQLite test database")
        .to_string();
    let copies = Arc::new(Copies {
        wal: PathBuf::from(format!("{path}-wal")),
        dir: std::env::temp_dir()
            .join("fidelis-tests")
            .join(fidelis_store::random_id("cut-", 12)),
        armed: AtomicBool::new(false),
        begun: AtomicU64::new(0),
        errors: Mutex::new(Vec::new()),
    });
    std::fs::create_dir_all(&copies.dir).expect("copies directory");
    let backend = Arc::new(BeforeSync {
        inner: fidelis_store_tests::backend(&db.url),
        hook: Arc::new({
            let copies = copies.clone();
            move || copies.before_sync()
        }),
    });
    let now = chrono::Utc::now().timestamp_micros();
    let store = Store::start(backend, StoreOptions::for_dialect(Dialect::Sqlite), now)
        .expect("store starts");
    store
        .ensure_tenant(T, "Acme", &settings(), now)
        .await
        .expect("tenant");
    let mut members = Vec::new();
    for i in 0..TASKS {
        let fields = MemberFields {
            external_id: Some(format!("c{i}")),
            ..Default::default()
        };
        let (m, _) = store
            .create_member(T, fields, None, now)
            .await
            .expect("member");
        members.push(m.id);
    }

    // Everything into the database file, then pin it: a read that began with the WAL empty
    // reads the file alone, and no checkpoint may write into the file while it lasts.
    let pin = rusqlite::Connection::open(&path).expect("pinning connection");
    pin.busy_timeout(std::time::Duration::from_secs(5))
        .expect("busy timeout");
    let mut truncated = false;
    for _ in 0..50 {
        let busy: i64 = pin
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
            .expect("checkpoint");
        if busy == 0 {
            truncated = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(truncated, "the WAL could not be emptied before the pin");
    pin.execute_batch("BEGIN").expect("begin");
    let enrolled: i64 = pin
        .query_row("SELECT count(*) FROM members", [], |r| r.get(0))
        .expect("pinned read");
    assert_eq!(enrolled as usize, TASKS);
    let base = copies.dir.join("base.db");
    std::fs::copy(&path, &base).expect("database file copy");
    copies.armed.store(true, Ordering::SeqCst);

    // Purchases from several tasks at once, so syncs cover several commits and commits
    // arrive during syncs. Each acknowledgement notes how many syncs had begun when it came.
    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for (t, member) in members.iter().enumerate() {
        let (store, member, copies, acked) =
            (store.clone(), member.clone(), copies.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            for n in 0..PER_TASK {
                let order = format!("o-{t}-{n}");
                let outcome = buy(&store, &member, &order).await;
                let begun = copies.begun.load(Ordering::SeqCst);
                acked
                    .lock()
                    .expect("acked")
                    .push((begun, member.clone(), order, outcome));
            }
        }));
    }
    for t in tasks {
        t.await.expect("purchases");
    }
    copies.armed.store(false, Ordering::SeqCst);
    drop(pin);
    let errors = copies.errors.lock().expect("errors").clone();
    assert!(errors.is_empty(), "{errors:?}");
    let mut acked = acked.lock().expect("acked").clone();
    acked.sort_by_key(|(begun, ..)| *begun);
    assert_eq!(acked.len(), TASKS * PER_TASK);
    let last = acked.last().expect("acknowledged purchases").0;
    assert!(
        last >= 8,
        "only {last} syncs for {} purchases: too few to cut between",
        acked.len()
    );

    // A cut at every sync an acknowledgement was counted at. The purchases acknowledged
    // since the previous such sync are the ones at risk there; a tenth of the earlier ones
    // are checked again (the WAL only grows, so they stay).
    let mut cuts: Vec<u64> = acked.iter().map(|(begun, ..)| *begun).collect();
    cuts.dedup();
    for (i, &k) in cuts.iter().enumerate() {
        let (cut, dir) = cut_at(&copies, &base, k);
        let earlier = i.checked_sub(1).map_or(0, |j| cuts[j]);
        let expected = acked
            .iter()
            .enumerate()
            .filter(|(n, (begun, ..))| {
                *begun > earlier && *begun <= k || *begun <= earlier && n % 10 == 0
            })
            .map(|(_, a)| a);
        for (_, member, order, first) in expected {
            let again = buy(&cut, member, order).await;
            assert!(
                again.duplicate,
                "order {order}, acknowledged before sync {} began, is lost after a cut there",
                k + 1
            );
            assert_eq!(again.event_id, first.event_id, "order {order}");
            assert_eq!(again.points, first.points, "order {order}");
        }
        if i == 0 {
            // The model cuts: a purchase acknowledged well after this sync is not there yet.
            if let Some((_, member, order, _)) = acked.iter().rev().find(|(b, ..)| *b >= k + 2) {
                assert!(
                    !buy(&cut, member, order).await.duplicate,
                    "order {order} is in a WAL copied before it was written: the copies do not cut"
                );
            }
        }
        let report = cut.verify_tenant(T).await.expect("verify");
        assert!(report.ok(), "after a cut at sync {k}: {report:?}");
        drop(cut);
        let _ = std::fs::remove_dir_all(dir);
    }
    let _ = std::fs::remove_dir_all(&copies.dir);
}
