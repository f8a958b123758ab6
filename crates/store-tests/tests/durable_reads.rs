//! Reads never show what is not yet durable. On SQLite the writer's COMMIT shows a batch to
//! readers before the syncer has synced the WAL; here the syncer is held at a gate between
//! the two, and a balance read must wait for the gate like the purchase's own answer does.
//! (PostgreSQL, with `synchronous_commit = on`, shows a commit only once it is flushed, so it
//! has no such window and no gate to hold.)

use fidelis_core::ProgramSettings;
use fidelis_core::earn::{BaseEarner, EarnContext, Earner, MemberFacts, Trigger};
use fidelis_core::event::MemberKey;
use fidelis_store::model::MemberFields;
use fidelis_store::{Dialect, LookupBy, Store, StoreOptions};
use fidelis_store_tests::{BeforeSync, TestDb, shoe_purchase};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

const T: &str = "acme";

/// Where the writer's syncs wait while it is closed.
#[derive(Default)]
struct Gate {
    closed: Mutex<bool>,
    opened: Condvar,
    /// Syncs waiting at the gate now.
    waiting: AtomicU64,
}

impl Gate {
    fn set(&self, closed: bool) {
        *self.closed.lock().expect("gate") = closed;
        self.opened.notify_all();
    }

    fn pass(&self) {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let mut closed = self.closed.lock().expect("gate");
        while *closed {
            closed = self.opened.wait(closed).expect("gate");
        }
        self.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what} did not happen within 5 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_waits_until_what_it_shows_is_durable() {
    let db = TestDb::sqlite();
    let gate = Arc::new(Gate::default());
    let backend = Arc::new(BeforeSync {
        inner: fidelis_store_tests::backend(&db.url),
        hook: Arc::new({
            let gate = gate.clone();
            move || gate.pass()
        }),
    });
    let now = chrono::Utc::now().timestamp_micros();
    let store = Store::start(backend, StoreOptions::for_dialect(Dialect::Sqlite), now)
        .expect("store starts");
    // Points available at once, so the balance shows the purchase.
    let s = ProgramSettings {
        pending_days: 0,
        ..ProgramSettings::default()
    };
    store
        .ensure_tenant(T, "Acme", &s, now)
        .await
        .expect("tenant");
    let enrol = |ext: &'static str| {
        let store = store.clone();
        async move {
            let fields = MemberFields {
                external_id: Some(ext.into()),
                ..Default::default()
            };
            let (m, _) = store
                .create_member(T, fields, None, now)
                .await
                .expect("member");
            m
        }
    };
    let (m, other) = (enrol("c1").await, enrol("c2").await);
    let held_before = store.metrics().reads_held.load(Ordering::Relaxed);
    let b = store.balance(T, &m.id, s.clone()).await.expect("balance");
    assert_eq!(b.available, 0);
    assert_eq!(
        store.metrics().reads_held.load(Ordering::Relaxed),
        held_before,
        "with every commit synced, a read is not held"
    );

    // The purchase commits; its sync waits at the closed gate.
    gate.set(true);
    let p = shoe_purchase(&m.id, "o-1", &s);
    let awards = BaseEarner.awards(&EarnContext {
        program: &s,
        event: Trigger::Purchase(&p),
        member: &MemberFacts::default(),
        now: chrono::Utc::now(),
    });
    let bought = tokio::spawn({
        let (store, s) = (store.clone(), s.clone());
        async move { store.purchase(T, p, awards, s, None, now).await }
    });
    wait_until("the purchase's commit", || {
        gate.waiting.load(Ordering::SeqCst) > 0
    })
    .await;

    // Committed and visible to a reader's snapshot, but not on disk: the balance read waits.
    let read = tokio::spawn({
        let (store, s, id) = (store.clone(), s.clone(), m.id.clone());
        async move { store.balance(T, &id, s).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !read.is_finished(),
        "a balance read answered with a commit that is not yet durable"
    );
    assert!(
        !bought.is_finished(),
        "the purchase was answered before its sync"
    );
    // A read that only prepares a write (the facts an event's rules see) is not held: the
    // write's answer waits for a later sync.
    let key = MemberKey::Id(m.id.clone());
    let facts = tokio::time::timeout(Duration::from_secs(2), store.member_facts(T, &key))
        .await
        .expect("the facts read is not held")
        .expect("facts")
        .expect("enrolled");
    assert_eq!(facts.order_count, 1, "it sees the committed purchase");
    // Another member's balance and profile did not change in that commit: not held either.
    let b = tokio::time::timeout(
        Duration::from_secs(2),
        store.balance(T, &other.id, s.clone()),
    )
    .await
    .expect("another member's balance is not held")
    .expect("balance");
    assert_eq!(b.available, 0);
    let found = tokio::time::timeout(
        Duration::from_secs(2),
        store.find_member(T, LookupBy::ExternalId, "c2"),
    )
    .await
    .expect("another member's look-up is not held")
    .expect("look-up");
    assert_eq!(found.map(|f| f.id), Some(other.id.clone()));
    // The buyer's profile changed in it (order count, activity): held. So is a read not
    // keyed by one member's row (a page of members), for every commit it may have seen.
    let profile = tokio::spawn({
        let (store, id) = (store.clone(), m.id.clone());
        async move { store.member(T, &id).await }
    });
    let page = tokio::spawn({
        let store = store.clone();
        async move { store.list_members(T, None, 10).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !profile.is_finished(),
        "the buyer's profile answered before the sync"
    );
    assert!(
        !page.is_finished(),
        "a page of members answered before the sync"
    );

    gate.set(false);
    let (out, _) = bought.await.expect("task").expect("purchase");
    let profile = profile.await.expect("task").expect("member");
    assert_eq!(profile.order_count, 1);
    page.await.expect("task").expect("members");
    assert_eq!(out.points, 42);
    let b = read.await.expect("task").expect("balance");
    assert_eq!(
        b.available, 42,
        "the held read answers what it saw, once durable"
    );
    assert_eq!(
        store.metrics().reads_held.load(Ordering::Relaxed),
        held_before + 3,
        "the balance, the profile and the page were held"
    );
    let b = store.balance(T, &m.id, s.clone()).await.expect("balance");
    assert_eq!(b.available, 42);
    assert_eq!(
        store.metrics().reads_held.load(Ordering::Relaxed),
        held_before + 3,
        "once synced, reads are not held"
    );
}
