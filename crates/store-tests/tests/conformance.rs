//! Conformance scenarios: what every store must do, run on SQLite and on PostgreSQL. They drive
//! the store with explicit times (the injected clock's `now`), so maturation and expiry are
//! tested at their boundaries without sleeping. Every scenario ends by verifying the ledger.

use chrono::{DateTime, Duration, Utc};
use fidelis_core::ProgramSettings;
use fidelis_core::earn::{BaseEarner, EarnContext, Earner, MemberFacts, Trigger};
use fidelis_core::event::{Channel, LineInput, MemberKey, MemberRef, PurchaseInput, RefundInput};
use fidelis_core::program::{ExpiryPolicy, RefundPolicy};
use fidelis_store::model::MemberFields;
use fidelis_store::{IdemKey, LookupBy, Store, StoreError};
use fidelis_store_tests::{TestDb, on_both};

const T: &str = "acme";

fn t0() -> DateTime<Utc> {
    fidelis_core::time::parse("2026-03-10T12:00:00Z").expect("valid time")
}

fn us(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn settings(
    pending_days: u32,
    expiry: ExpiryPolicy,
    refund_policy: RefundPolicy,
) -> ProgramSettings {
    ProgramSettings {
        pending_days,
        expiry,
        refund_policy,
        ..ProgramSettings::default()
    }
}

async fn setup(db: &TestDb, s: &ProgramSettings) -> Store {
    let store = db.store(us(t0()));
    store
        .ensure_tenant(T, "Acme", s, us(t0()))
        .await
        .expect("tenant");
    store
}

async fn member(store: &Store, ext: &str) -> String {
    let f = MemberFields {
        external_id: Some(ext.into()),
        ..Default::default()
    };
    store
        .create_member(T, f, None, us(t0()))
        .await
        .expect("member")
        .0
        .id
}

fn purchase_input(member: &str, order: &str, total: &str, at: DateTime<Utc>) -> PurchaseInput {
    PurchaseInput {
        member: MemberRef {
            id: Some(member.into()),
            external_id: None,
        },
        order_id: order.into(),
        occurred_at: Some(fidelis_core::time::format(at)),
        channel: Channel::Pos,
        store_id: Some("paris-01".into()),
        currency: "EUR".into(),
        total: total.into(),
        lines: vec![
            LineInput {
                sku: "shoe-1".into(),
                category: Some("shoes".into()),
                quantity: 1,
                unit_price: "40.00".into(),
            },
            LineInput {
                sku: "sock-1".into(),
                category: Some("clothing".into()),
                quantity: 2,
                unit_price: "10.00".into(),
            },
        ],
    }
}

async fn buy(
    store: &Store,
    s: &ProgramSettings,
    member: &str,
    order: &str,
    total: &str,
    at: DateTime<Utc>,
) -> fidelis_store::model::PurchaseOutcome {
    buy_posted(store, s, member, order, total, at, at).await
}

/// A purchase dated `occurred` and posted at `now`.
async fn buy_posted(
    store: &Store,
    s: &ProgramSettings,
    member: &str,
    order: &str,
    total: &str,
    occurred: DateTime<Utc>,
    now: DateTime<Utc>,
) -> fidelis_store::model::PurchaseOutcome {
    let p = purchase_input(member, order, total, occurred)
        .validate(s, now)
        .expect("valid purchase");
    let awards = BaseEarner.awards(&EarnContext {
        program: s,
        event: Trigger::Purchase(&p),
        member: &MemberFacts::default(),
        now,
    });
    store
        .purchase(T, p, awards, s.clone(), None, us(now))
        .await
        .expect("purchase")
        .0
}

async fn refund(
    store: &Store,
    s: &ProgramSettings,
    order: &str,
    amount: &str,
    at: DateTime<Utc>,
) -> Result<fidelis_store::model::RefundOutcome, StoreError> {
    let r = RefundInput {
        order_id: order.into(),
        refund_id: None,
        amount: Some(amount.into()),
        lines: None,
        occurred_at: None,
    }
    .validate(s, at)
    .expect("valid refund");
    store
        .refund(T, r, s.clone(), None, us(at))
        .await
        .map(|(o, _)| o)
}

async fn balance(store: &Store, s: &ProgramSettings, member: &str) -> (i64, i64) {
    let b = store.balance(T, member, s.clone()).await.expect("balance");
    (b.available, b.pending)
}

async fn assert_ledger_ok(store: &Store) {
    let report = store.verify().await.expect("verify runs");
    assert!(report.ok(), "ledger invariants broken: {report:?}");
}

async fn pending_points_mature_exactly_at_the_end_of_the_return_window(db: TestDb) {
    let s = settings(14, ExpiryPolicy::None, RefundPolicy::AllowNegative);
    let store = setup(&db, &s).await;
    let m = member(&store, "c1").await;
    let out = buy(&store, &s, &m, "o1", "59.90", t0()).await;
    assert_eq!((out.points, out.status.as_str()), (59, "pending"));
    assert_eq!(out.matures_at.as_deref(), Some("2026-03-24T12:00:00Z"));
    let due = t0() + Duration::days(14);
    store
        .run_jobs(us(due - Duration::seconds(1)))
        .await
        .expect("jobs");
    assert_eq!(
        balance(&store, &s, &m).await,
        (0, 59),
        "a second before: still pending"
    );
    let r = store.run_jobs(us(due)).await.expect("jobs");
    assert_eq!((r.matured_lots, r.matured_points), (1, 59));
    assert_eq!(
        balance(&store, &s, &m).await,
        (59, 0),
        "at the boundary: available"
    );
    let r = store
        .run_jobs(us(due + Duration::seconds(1)))
        .await
        .expect("jobs");
    assert_eq!(r.matured_points, 0, "a second after: nothing left to do");
    assert_eq!(balance(&store, &s, &m).await, (59, 0));
    assert_ledger_ok(&store).await;
}

async fn points_expire_exactly_at_their_expiry_date(db: TestDb) {
    let s = settings(
        0,
        ExpiryPolicy::AfterEarning { months: 12 },
        RefundPolicy::AllowNegative,
    );
    let store = setup(&db, &s).await;
    let m = member(&store, "c1").await;
    let out = buy(&store, &s, &m, "o1", "100.00", t0()).await;
    assert_eq!((out.points, out.status.as_str()), (100, "available"));
    assert_eq!(out.expires_at.as_deref(), Some("2027-03-10T12:00:00Z"));
    let b = store.balance(T, &m, s.clone()).await.expect("balance");
    assert_eq!(b.expiring.len(), 1);
    assert_eq!(
        (b.expiring[0].points, b.expiring[0].expires_at.as_str()),
        (100, "2027-03-10T12:00:00Z")
    );
    let exp = fidelis_core::time::parse("2027-03-10T12:00:00Z").expect("time");
    store
        .run_jobs(us(exp - Duration::seconds(1)))
        .await
        .expect("jobs");
    assert_eq!(
        balance(&store, &s, &m).await,
        (100, 0),
        "a second before expiry"
    );
    let r = store.run_jobs(us(exp)).await.expect("jobs");
    assert_eq!((r.expired_lots, r.expired_points), (1, 100));
    assert_eq!(balance(&store, &s, &m).await, (0, 0), "at expiry");
    store
        .run_jobs(us(exp + Duration::seconds(1)))
        .await
        .expect("jobs");
    assert_eq!(balance(&store, &s, &m).await, (0, 0));
    let hist = store.history(T, &m, None, 10).await.expect("history");
    assert_eq!(hist.items[0].kind, "expire");
    assert_eq!(hist.items[0].available_delta, -100);
    assert_ledger_ok(&store).await;
}

/// The expiry job finds due lots through `lots_expiring`, which holds only lots that have a
/// date: a lot that never expires (a programme without expiry, or points earned before it had
/// one) is not an entry of it. Both databases must still see that the job's query can use it.
async fn the_expiry_index_serves_the_job_and_holds_only_lots_with_a_date(db: TestDb) {
    let s = settings(
        0,
        ExpiryPolicy::AfterEarning { months: 12 },
        RefundPolicy::AllowNegative,
    );
    let never = settings(0, ExpiryPolicy::None, RefundPolicy::AllowNegative);
    let store = setup(&db, &s).await;
    let m = member(&store, "c1").await;
    buy(&store, &never, &m, "o-never", "40.00", t0()).await;
    let out = buy(&store, &s, &m, "o-dated", "100.00", t0()).await;
    assert_eq!(out.expires_at.as_deref(), Some("2027-03-10T12:00:00Z"));
    let (plan, definition) = store
        .read(|c| {
            let sqlite = c.dialect() == fidelis_store::Dialect::Sqlite;
            let plan: Vec<String> = if sqlite {
                let sql = format!("EXPLAIN QUERY PLAN {}", fidelis_store::EXPIRY_DUE_LOTS);
                c.query(&sql, &[T.into(), 0i64.into(), 10i64.into()])?
                    .iter()
                    .map(|r| r.text(3))
                    .collect()
            } else {
                // Small tables are read whole when the planner may; forbidden that, it uses the
                // index only if the index answers the query.
                c.batch("SET enable_seqscan = off")?;
                let sql = format!("EXPLAIN {}", fidelis_store::EXPIRY_DUE_LOTS)
                    .replace("$1", &format!("'{T}'"))
                    .replace("$2", "0")
                    .replace("$3", "10");
                let plan = c.query(&sql, &[]);
                c.batch("RESET enable_seqscan")?;
                plan?.iter().map(|r| r.text(0)).collect()
            };
            let definition = if sqlite {
                "SELECT sql FROM sqlite_master WHERE name = 'lots_expiring'"
            } else {
                "SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() AND indexname = 'lots_expiring'"
            };
            let definition = c.query(definition, &[])?.first().map(|r| r.text(0));
            Ok((plan.join("\n"), definition.unwrap_or_default()))
        })
        .await
        .expect("plan");
    assert!(plan.contains("lots_expiring"), "the job's plan: {plan}");
    assert!(
        definition.contains("expires_at IS NOT NULL"),
        "the index: {definition}"
    );
    let exp = fidelis_core::time::parse("2027-03-10T12:00:00Z").expect("time");
    let r = store.run_jobs(us(exp)).await.expect("jobs");
    assert_eq!((r.expired_lots, r.expired_points), (1, 100));
    assert_eq!(
        balance(&store, &s, &m).await,
        (40, 0),
        "the lot without a date stays"
    );
    assert_ledger_ok(&store).await;
}

/// A till finds a member by phone through `members_by_phone`, not by reading the tenant's
/// members one by one; a phone two members share finds the lower id.
async fn a_member_is_found_by_phone_through_its_index(db: TestDb) {
    let s = settings(0, ExpiryPolicy::None, RefundPolicy::AllowNegative);
    let store = setup(&db, &s).await;
    let mut ids = Vec::new();
    for (ext, phone) in [
        ("p1", "+33600000001"),
        ("p2", "+33600000002"),
        ("p3", "+33600000002"),
    ] {
        let f = MemberFields {
            external_id: Some(ext.into()),
            phone: Some(phone.into()),
            ..Default::default()
        };
        ids.push(
            store
                .create_member(T, f, None, us(t0()))
                .await
                .expect("member")
                .0
                .id,
        );
    }
    let found = |phone: &'static str| {
        let store = store.clone();
        async move {
            store
                .find_member(T, LookupBy::Phone, phone)
                .await
                .expect("look-up")
                .map(|m| m.id)
        }
    };
    assert_eq!(found("+33600000001").await.as_ref(), Some(&ids[0]));
    let shared = ids[1].clone().min(ids[2].clone());
    assert_eq!(found("+33600000002").await, Some(shared));
    assert_eq!(found("+33699999999").await, None);
    let plan = store
        .read(|c| {
            let sql = fidelis_store::members::lookup_sql(c.dialect(), LookupBy::Phone);
            if c.dialect() == fidelis_store::Dialect::Sqlite {
                let rows = c.query(
                    &format!("EXPLAIN QUERY PLAN {sql}"),
                    &[T.into(), "x".into()],
                )?;
                return Ok(rows
                    .iter()
                    .map(|r| r.text(3))
                    .collect::<Vec<_>>()
                    .join("\n"));
            }
            // A small table is read whole when the planner may; forbidden that, it uses the
            // index only if the index answers the query.
            c.batch("SET enable_seqscan = off")?;
            let sql = sql.replace("$1", &format!("'{T}'")).replace("$2", "'x'");
            let plan = c.query(&format!("EXPLAIN {sql}"), &[]);
            c.batch("RESET enable_seqscan")?;
            Ok(plan?
                .iter()
                .map(|r| r.text(0))
                .collect::<Vec<_>>()
                .join("\n"))
        })
        .await
        .expect("plan");
    assert!(
        plan.contains("members_by_phone"),
        "the look-up's plan: {plan}"
    );
}

async fn inactivity_expires_the_whole_balance_after_n_months_without_activity(db: TestDb) {
    let s = settings(
        0,
        ExpiryPolicy::Inactivity { months: 6 },
        RefundPolicy::AllowNegative,
    );
    let store = setup(&db, &s).await;
    let m = member(&store, "c1").await;
    buy(&store, &s, &m, "o1", "30.00", t0()).await;
    let later = t0() + Duration::days(60);
    buy(&store, &s, &m, "o2", "20.00", later).await;
    let due = fidelis_core::time::add_months(later, 6);
    store
        .run_jobs(us(due - Duration::seconds(1)))
        .await
        .expect("jobs");
    assert_eq!(
        balance(&store, &s, &m).await,
        (50, 0),
        "activity 60 days in keeps the first points too"
    );
    store.run_jobs(us(due)).await.expect("jobs");
    assert_eq!(balance(&store, &s, &m).await, (0, 0));
    assert_ledger_ok(&store).await;
}

/// The members an inactivity expiry may concern are found on a reader, before the writer's
/// turn; a member who buys in between has been active since, and keeps their points. Without
/// the writer's own check of each member, the purchase's points went with the old ones.
async fn a_member_who_buys_after_the_inactivity_read_keeps_their_points(db: TestDb) {
    let s = settings(
        0,
        ExpiryPolicy::Inactivity { months: 6 },
        RefundPolicy::AllowNegative,
    );
    let store = setup(&db, &s).await;
    let (quiet, back) = (member(&store, "c1").await, member(&store, "c2").await);
    buy(&store, &s, &quiet, "o1", "30.00", t0()).await;
    buy(&store, &s, &back, "o2", "40.00", t0()).await;
    let due = fidelis_core::time::add_months(t0(), 6);
    let mut candidates = store
        .inactive_candidates(T, us(due))
        .await
        .expect("candidates");
    candidates.sort();
    let mut both = vec![quiet.clone(), back.clone()];
    both.sort();
    assert_eq!(
        candidates, both,
        "both were inactive when the reader looked"
    );
    buy(&store, &s, &back, "o3", "10.00", due).await;
    let report = store
        .expire_inactive(T, us(due), candidates)
        .await
        .expect("expire");
    assert_eq!(report.expired_points, 30, "only the quiet member's points");
    assert_eq!(balance(&store, &s, &quiet).await, (0, 0));
    assert_eq!(balance(&store, &s, &back).await, (50, 0));
    assert_ledger_ok(&store).await;
}

async fn debits_consume_the_earliest_expiring_lots_first(db: TestDb) {
    let s = settings(
        0,
        ExpiryPolicy::AfterEarning { months: 12 },
        RefundPolicy::AllowNegative,
    );
    let store = setup(&db, &s).await;
    let m = member(&store, "c1").await;
    buy(&store, &s, &m, "late", "50.00", t0() + Duration::days(30)).await;
    buy(&store, &s, &m, "early", "30.00", t0()).await;
    store
        .adjust(
            T,
            &m,
            -40,
            "goodwill reversal",
            "test",
            s.clone(),
            None,
            us(t0() + Duration::days(31)),
        )
        .await
        .expect("debit");
    let b = store.balance(T, &m, s.clone()).await.expect("balance");
    assert_eq!(b.available, 40);
    // The early lot (30) is gone entirely; 10 came from the later one.
    assert_eq!(b.expiring.len(), 1);
    assert_eq!(b.expiring[0].points, 40);
    assert_eq!(b.expiring[0].expires_at, "2027-04-09T12:00:00Z");
    let err = store
        .adjust(T, &m, -41, "too much", "test", s.clone(), None, us(t0()))
        .await;
    assert!(matches!(err, Err(StoreError::Conflict(_))), "{err:?}");
    assert_eq!(
        balance(&store, &s, &m).await,
        (40, 0),
        "a refused debit changes nothing"
    );
    assert_ledger_ok(&store).await;
}

/// The lots of `member` with points left, oldest first: (order, remaining).
async fn lots_left(store: &Store, member: &str) -> Vec<(String, i64)> {
    let m = member.to_string();
    store
        .read(move |c| {
            Ok(c.query(
                "SELECT order_id, remaining FROM lots WHERE tenant_id = $1 AND member_id = $2 AND remaining > 0 ORDER BY id",
                &[T.into(), m.as_str().into()],
            )?
            .iter()
            .map(|r| (r.opt_text(0).unwrap_or_default(), r.int(1)))
            .collect())
        })
        .await
        .expect("lots")
}

/// A programme whose points expire 12 months after earning (pending for `pending_days`),
/// and one member of it.
async fn a_member_whose_points_expire(
    db: &TestDb,
    pending_days: u32,
) -> (ProgramSettings, Store, String) {
    let s = settings(
        pending_days,
        ExpiryPolicy::AfterEarning { months: 12 },
        RefundPolicy::AllowNegative,
    );
    let store = setup(db, &s).await;
    let m = member(&store, "c1").await;
    (s, store, m)
}

/// `n` purchases of 10.00 (10 points each) by `member`, orders `{prefix}0`, `{prefix}1`, ...,
/// dated a day apart from `from_day` days after `t0` and posted in date order at `now`.
async fn purchases_a_day_apart(
    store: &Store,
    s: &ProgramSettings,
    member: &str,
    prefix: &str,
    n: usize,
    from_day: i64,
    now: DateTime<Utc>,
) {
    for i in 0..n {
        let at = t0() + Duration::days(from_day + i as i64);
        buy_posted(store, s, member, &format!("{prefix}{i}"), "10.00", at, now).await;
    }
}

/// A debit reads the member's first open lots (`DEBIT_HEAD`, in the order they were earned)
/// and the rest only when those do not decide it: a lot earned last that expires first (a
/// purchase dated back) is still the first debited, a debit larger than the first lots hold
/// reads on, and the soonest expiry dates the member row keeps follow the lots throughout. In a
/// programme without expiry the oldest lots go first. The first lots are read without sorting.
async fn a_debit_reads_the_first_lots_and_the_rest_when_they_do_not_decide(db: TestDb) {
    let (s, store, m) = a_member_whose_points_expire(&db, 0).await;
    let now = t0() + Duration::days(100);
    let head = fidelis_store::DEBIT_HEAD;
    // More lots than the head, each 10 points, dated a day apart and posted in date order.
    purchases_a_day_apart(&store, &s, &m, "o", head + 8, 10, now).await;
    // Earned last, expiring first.
    buy_posted(&store, &s, &m, "back", "10.00", t0(), now).await;
    assert_expiring_follows_the_lots(&store, &s, &m, "purchases").await;
    let debit = |points: i64| {
        let (store, s) = (store.clone(), s.clone());
        let m = m.clone();
        async move {
            store
                .adjust(T, &m, -points, "reversal", "test", s, None, us(now))
                .await
                .expect("debit");
        }
    };
    debit(4).await;
    let lots = lots_left(&store, &m).await;
    assert_eq!(lots.last(), Some(&("back".to_string(), 6)), "{lots:?}");
    assert_eq!(lots[0], ("o0".to_string(), 10));
    assert_expiring_follows_the_lots(&store, &s, &m, "a debit of the lot earned last").await;
    // The rest of that lot, then the oldest.
    debit(11).await;
    let lots = lots_left(&store, &m).await;
    assert_eq!(lots[0], ("o0".to_string(), 5), "{lots:?}");
    assert!(lots.iter().all(|(o, _)| o != "back"));
    assert_expiring_follows_the_lots(&store, &s, &m, "a debit of the first lots").await;
    // Decided by the first lots and the row's dates; then emptying the first two lots, which
    // takes two of the twelve dates the row keeps: listed again from the lots.
    debit(3).await;
    assert_eq!(lots_left(&store, &m).await[0], ("o0".to_string(), 2));
    assert_expiring_follows_the_lots(&store, &s, &m, "a debit the first lots decide").await;
    debit(12).await;
    assert_eq!(lots_left(&store, &m).await[0], ("o2".to_string(), 10));
    assert_expiring_follows_the_lots(&store, &s, &m, "a debit of two dates").await;
    // More than the first lots hold.
    let before = balance(&store, &s, &m).await.0;
    let more = 10 * head as i64 + 5;
    debit(more).await;
    assert_eq!(balance(&store, &s, &m).await.0, before - more);
    let lots = lots_left(&store, &m).await;
    assert_eq!(lots.len(), 6, "{lots:?}");
    assert_eq!(lots[0], (format!("o{}", head + 2), 5), "{lots:?}");
    assert_expiring_follows_the_lots(&store, &s, &m, "a debit past the first lots").await;
    assert_ledger_ok(&store).await;

    // No expiry: the oldest lots go first, however many there are.
    let s = settings(0, ExpiryPolicy::None, RefundPolicy::AllowNegative);
    let n = member(&store, "c2").await;
    purchases_a_day_apart(&store, &s, &n, "n", head + 8, 0, now).await;
    store
        .adjust(T, &n, -25, "reversal", "test", s.clone(), None, us(now))
        .await
        .expect("debit");
    let lots = lots_left(&store, &n).await;
    assert_eq!(lots[0], ("n2".to_string(), 5), "{lots:?}");
    assert_eq!(lots.len(), head + 6);
    assert_ledger_ok(&store).await;

    // A debit of many lots' points (a reward worth twenty purchases): more of the first lots
    // than the head, and fewer than all, decide it.
    let k = member(&store, "c3").await;
    purchases_a_day_apart(&store, &s, &k, "k", 6 * head, 0, now).await;
    store
        .adjust(T, &k, -205, "reversal", "test", s.clone(), None, us(now))
        .await
        .expect("debit");
    let lots = lots_left(&store, &k).await;
    assert_eq!(lots[0], ("k20".to_string(), 5), "{lots:?}");
    assert_eq!(lots.len(), 6 * head - 20);
    assert_ledger_ok(&store).await;

    // Beyond what the wider read holds, a lot dated back that expires first: every lot is read.
    let (s, w) = (
        settings(
            0,
            ExpiryPolicy::AfterEarning { months: 12 },
            RefundPolicy::AllowNegative,
        ),
        member(&store, "c4").await,
    );
    purchases_a_day_apart(&store, &s, &w, "w", 6 * head, 1, now).await;
    buy_posted(&store, &s, &w, "wback", "10.00", t0(), now).await;
    store
        .adjust(T, &w, -4, "reversal", "test", s.clone(), None, us(now))
        .await
        .expect("debit");
    let lots = lots_left(&store, &w).await;
    assert_eq!(lots.last(), Some(&("wback".to_string(), 6)), "{lots:?}");
    assert_eq!(lots[0], ("w0".to_string(), 10));
    assert_expiring_follows_the_lots(&store, &s, &w, "a debit past the wider read").await;
    assert_ledger_ok(&store).await;

    // SQLite walks the member's transactions in order (backwards for a refund's last lots)
    // and stops at the limit: no sort.
    let plan = store
        .read(|c| {
            if c.dialect() != fidelis_store::Dialect::Sqlite {
                return Ok(String::new());
            }
            let mut plan = String::new();
            for desc in ["", " DESC"] {
                let sql = fidelis_store::open_lots_end_sql("$2", desc);
                for r in c.query(
                    &format!("EXPLAIN QUERY PLAN {sql}"),
                    &[T.into(), "x".into()],
                )? {
                    plan.push_str(&r.text(3));
                    plan.push('\n');
                }
            }
            Ok(plan)
        })
        .await
        .expect("plan");
    assert!(
        !plan.contains("TEMP B-TREE"),
        "the first and last lots' plans: {plan}"
    );
}

/// A refund reads the member's first and last open lots, not all of them: the pending points
/// it claws back first are among the last lots (all of them, when their points are the
/// member's pending balance), the available points it takes next are decided by the first
/// lots as a debit's are, and anything else reads every lot: a lot dated back, earned last
/// and expiring first, and pending lots older than the last lots.
async fn a_refund_reads_the_first_and_last_lots_and_the_rest_when_needed(db: TestDb) {
    let (s, store, m) = a_member_whose_points_expire(&db, 14).await;
    let now = t0() + Duration::days(100);
    let head = fidelis_store::DEBIT_HEAD;
    // Available lots, more than the first and last lots together, then two pending ones.
    purchases_a_day_apart(&store, &s, &m, "a", head + 4, 10, now).await;
    for o in ["p0", "p1"] {
        buy_posted(&store, &s, &m, o, "10.00", now - Duration::days(1), now).await;
    }
    let left = |order: &'static str| {
        let (store, m) = (store.clone(), m.clone());
        async move {
            lots_left(&store, &m)
                .await
                .into_iter()
                .find(|(o, _)| o == order)
                .map_or(0, |(_, n)| n)
        }
    };
    let check = |step: &'static str| {
        let (store, s, m) = (store.clone(), s.clone(), m.clone());
        async move {
            assert_expiring_follows_the_lots(&store, &s, &m, step).await;
            assert_ledger_ok(&store).await;
        }
    };
    // The order's own pending lot.
    refund(&store, &s, "p0", "10.00", now)
        .await
        .expect("refund");
    assert_eq!((left("p0").await, left("p1").await), (0, 10));
    check("a refund of a pending order").await;
    // Another order's: pending points first, then the soonest expiring available ones.
    refund(&store, &s, "a3", "5.00", now).await.expect("refund");
    assert_eq!(left("p1").await, 5);
    refund(&store, &s, "a4", "10.00", now)
        .await
        .expect("refund");
    assert_eq!((left("p1").await, left("a0").await), (0, 5));
    check("refunds of available orders").await;
    // A lot dated back expires first though it is the last: every lot is read.
    buy_posted(&store, &s, &m, "back", "10.00", t0(), now).await;
    refund(&store, &s, "a5", "10.00", now)
        .await
        .expect("refund");
    assert_eq!((left("back").await, left("a0").await), (0, 5));
    check("a refund past the first lots").await;
    // Pending lots older than the last lots: every lot is read.
    for o in ["q0", "q1"] {
        buy_posted(&store, &s, &m, o, "10.00", now - Duration::days(1), now).await;
    }
    purchases_a_day_apart(&store, &s, &m, "r", head + 1, 50, now).await;
    refund(&store, &s, "q0", "10.00", now)
        .await
        .expect("refund");
    assert_eq!((left("q0").await, left("q1").await), (0, 10));
    assert_eq!(balance(&store, &s, &m).await.1, 10);
    check("a refund of a pending order behind the last lots").await;
}

async fn refunds_claw_back_proportionally_and_never_more_than_was_bought(db: TestDb) {
    let s = settings(30, ExpiryPolicy::None, RefundPolicy::AllowNegative);
    let store = setup(&db, &s).await;
    let m = member(&store, "c1").await;
    buy(&store, &s, &m, "o1", "59.90", t0()).await;
    let r1 = refund(&store, &s, "o1", "20.00", t0())
        .await
        .expect("partial refund");
    assert_eq!((r1.points_clawed_back, r1.from_pending), (19, 19));
    let r2 = refund(&store, &s, "o1", "39.90", t0())
        .await
        .expect("the rest");
    assert_eq!(
        r2.points_clawed_back, 40,
        "two partial refunds take back exactly the 59 awarded"
    );
    assert_eq!(balance(&store, &s, &m).await, (0, 0));
    let over = refund(&store, &s, "o1", "0.01", t0()).await;
    assert!(
        matches!(over, Err(StoreError::Unprocessable(_))),
        "{over:?}"
    );
    let unknown = refund(&store, &s, "nope", "1.00", t0()).await;
    assert!(
        matches!(unknown, Err(StoreError::NotFound(_))),
        "{unknown:?}"
    );
    assert_ledger_ok(&store).await;
}

async fn a_refund_takes_pending_then_available_then_follows_the_refund_policy(db: TestDb) {
    for (policy, expect_available, expect_forgiven) in [
        (RefundPolicy::AllowNegative, -20, 0),
        (RefundPolicy::WithinBalance, 0, 20),
        (RefundPolicy::PendingOnly, 30, 50),
    ] {
        let s = settings(0, ExpiryPolicy::None, policy);
        let store = setup(&db, &s).await;
        let m = member(&store, &format!("c-{policy:?}")).await;
        buy(&store, &s, &m, &format!("o-{policy:?}"), "100.00", t0()).await;
        store
            .adjust(
                T,
                &m,
                -70,
                "spent on a reward",
                "test",
                s.clone(),
                None,
                us(t0()),
            )
            .await
            .expect("debit");
        let r = refund(&store, &s, &format!("o-{policy:?}"), "50.00", t0())
            .await
            .expect("refund");
        assert_eq!(r.forgiven, expect_forgiven, "{policy:?}");
        assert_eq!(
            balance(&store, &s, &m).await.0,
            expect_available,
            "{policy:?}"
        );
        assert_eq!(
            (r.balance.available, r.balance.pending),
            balance(&store, &s, &m).await,
            "the refund answers the balance it left: {policy:?}"
        );
        if policy == RefundPolicy::AllowNegative {
            // The next earning repays the debt first.
            let next = buy(&store, &s, &m, "o-next", "25.00", t0()).await;
            assert_eq!((next.debt_repaid, next.balance.available), (20, 5));
        }
        assert_ledger_ok(&store).await;
        store
            .ensure_tenant("other", "x", &s, 0)
            .await
            .expect("noop");
    }
}

async fn a_debt_is_repaid_when_pending_points_mature(db: TestDb) {
    let s = settings(10, ExpiryPolicy::None, RefundPolicy::AllowNegative);
    let store = setup(&db, &s).await;
    let m = member(&store, "c1").await;
    store
        .adjust(T, &m, 30, "welcome", "test", s.clone(), None, us(t0()))
        .await
        .expect("credit");
    buy(&store, &s, &m, "o1", "50.00", t0()).await;
    store
        .run_jobs(us(t0() + Duration::days(10)))
        .await
        .expect("jobs");
    store
        .adjust(
            T,
            &m,
            -80,
            "reward",
            "test",
            s.clone(),
            None,
            us(t0() + Duration::days(10)),
        )
        .await
        .expect("debit all");
    let r = refund(&store, &s, "o1", "50.00", t0() + Duration::days(11))
        .await
        .expect("refund");
    assert_eq!((r.from_available, r.forgiven), (50, 0));
    assert_eq!(balance(&store, &s, &m).await, (-50, 0));
    buy(&store, &s, &m, "o2", "80.00", t0() + Duration::days(12)).await;
    assert_eq!(balance(&store, &s, &m).await, (-50, 80));
    store
        .run_jobs(us(t0() + Duration::days(22)))
        .await
        .expect("jobs");
    assert_eq!(balance(&store, &s, &m).await, (30, 0));
    assert_ledger_ok(&store).await;
}

async fn an_order_id_is_recorded_once_per_tenant(db: TestDb) {
    let s = settings(0, ExpiryPolicy::None, RefundPolicy::AllowNegative);
    let store = setup(&db, &s).await;
    let m = member(&store, "c1").await;
    let first = buy(&store, &s, &m, "o1", "10.00", t0()).await;
    let again = buy(&store, &s, &m, "o1", "10.00", t0()).await;
    assert!(!first.duplicate && again.duplicate);
    assert_eq!(again.event_id, first.event_id);
    assert_eq!(balance(&store, &s, &m).await, (10, 0));
    assert_eq!(store.member(T, &m).await.expect("member").order_count, 1);
    assert_ledger_ok(&store).await;
}

async fn an_idempotency_key_replays_its_first_answer_and_refuses_another_request(db: TestDb) {
    let s = settings(0, ExpiryPolicy::None, RefundPolicy::AllowNegative);
    let store = setup(&db, &s).await;
    let m = member(&store, "c1").await;
    let key = |h: &str| {
        Some(IdemKey {
            key: "k1".into(),
            request_hash: h.into(),
        })
    };
    let (a, replayed_a) = store
        .adjust(T, &m, 5, "gift", "test", s.clone(), key("h1"), us(t0()))
        .await
        .expect("first");
    let (b, replayed_b) = store
        .adjust(T, &m, 5, "gift", "test", s.clone(), key("h1"), us(t0()))
        .await
        .expect("replay");
    assert!(!replayed_a && replayed_b);
    assert_eq!(a, b);
    let other = store
        .adjust(T, &m, 7, "gift", "test", s.clone(), key("h2"), us(t0()))
        .await;
    assert!(matches!(other, Err(StoreError::Conflict(_))), "{other:?}");
    assert_eq!(balance(&store, &s, &m).await, (5, 0));
    assert_ledger_ok(&store).await;
}

async fn concurrent_purchases_and_adjustments_on_one_member_end_exact(db: TestDb) {
    let s = settings(
        0,
        ExpiryPolicy::AfterEarning { months: 12 },
        RefundPolicy::AllowNegative,
    );
    let store = setup(&db, &s).await;
    let m = member(&store, "c1").await;
    store
        .adjust(T, &m, 1000, "opening", "test", s.clone(), None, us(t0()))
        .await
        .expect("credit");
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50 {
        let (store, s, m) = (store.clone(), s.clone(), m.clone());
        tasks.spawn(async move {
            match i % 3 {
                0 => {
                    buy(&store, &s, &m, &format!("o{i}"), "12.34", t0())
                        .await
                        .points
                }
                1 => {
                    store
                        .adjust(T, &m, 7, "plus", "test", s, None, us(t0()))
                        .await
                        .expect("plus")
                        .0
                        .points
                }
                _ => {
                    store
                        .adjust(T, &m, -11, "minus", "test", s, None, us(t0()))
                        .await
                        .expect("minus")
                        .0
                        .points
                }
            }
        });
    }
    let mut expected = 1000;
    while let Some(r) = tasks.join_next().await {
        expected += r.expect("task");
    }
    assert_eq!(expected, 1000 + 17 * 12 + 17 * 7 - 16 * 11);
    assert_eq!(balance(&store, &s, &m).await, (expected, 0));
    assert_ledger_ok(&store).await;
}

async fn a_tenant_never_sees_another_tenants_members(db: TestDb) {
    let s = settings(0, ExpiryPolicy::None, RefundPolicy::AllowNegative);
    let store = setup(&db, &s).await;
    store
        .ensure_tenant("rival", "Rival", &s, 0)
        .await
        .expect("tenant");
    let m = member(&store, "c1").await;
    assert!(matches!(
        store.member("rival", &m).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.balance("rival", &m, s.clone()).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store
            .adjust("rival", &m, 5, "x", "t", s.clone(), None, 0)
            .await,
        Err(StoreError::NotFound(_))
    ));
    assert!(
        store
            .list_members("rival", None, 50)
            .await
            .expect("list")
            .items
            .is_empty()
    );
    assert_ledger_ok(&store).await;
}

/// Array parameters serve PostgreSQL's `unnest`; SQLite has none and says so. A misplaced
/// array is an error on both, never a panic of the connection's thread.
async fn array_parameters_bind_on_postgresql_and_are_refused_on_sqlite(db: TestDb) {
    let store = db.store(0);
    let postgres = store.dialect() == fidelis_store::Dialect::Postgres;
    let got = store
        .read(|c| {
            let ids = [Some(3i64), None, Some(5)];
            let names = [Some("a"), Some("b"), None];
            let rows = c.query(
                "SELECT CAST(COUNT(*) AS BIGINT), CAST(COALESCE(SUM(n), 0) AS BIGINT) FROM unnest($1::bigint[], $2::text[]) AS t(n, s)",
                &[fidelis_store::Param::Ints(&ids), fidelis_store::Param::Texts(&names)],
            )?;
            Ok(rows.first().map(|r| (r.int(0), r.int(1))))
        })
        .await;
    if postgres {
        assert_eq!(got.expect("arrays bind"), Some((3, 8)));
    } else {
        assert!(got.is_err(), "SQLite must refuse array parameters");
    }
    let misplaced = store
        .read(|c| {
            let ids = [Some(1i64)];
            Ok(c.query(
                "SELECT CAST($1 AS BIGINT)",
                &[fidelis_store::Param::Ints(&ids)],
            )?)
        })
        .await;
    assert!(
        misplaced.is_err(),
        "an array where a number is expected is an error"
    );
    // The connection is still usable afterwards.
    let one = store
        .read(|c| {
            Ok(c.query_one("SELECT CAST(1 AS BIGINT)", &[])?
                .map(|r| r.int(0)))
        })
        .await
        .expect("the reader still answers");
    assert_eq!(one, Some(1));
}

/// The member row's mark and the first transaction holding a lot with points left; the mark
/// is where a member's open lots are looked for (no index of lots by member).
async fn open_lots_mark(store: &Store, member: &str) -> (Option<i64>, Option<i64>) {
    let m = member.to_string();
    store
        .read(move |c| {
            let r = c
                .query_one(
                    "SELECT open_lots_from, (SELECT MIN(l.txn_id) FROM lots l WHERE l.tenant_id = $1 AND l.member_id = $2 AND l.remaining > 0) FROM members WHERE tenant_id = $1 AND id = $2",
                    &[T.into(), m.as_str().into()],
                )?
                .expect("member row");
            Ok((r.opt_int(0), r.opt_int(1)))
        })
        .await
        .expect("mark")
}

/// Moves the member's mark by `by` transactions, as a broken write would.
async fn shift_mark(store: &Store, member: &str, by: i64) {
    let m = member.to_string();
    store
        .write(&m.clone(), move |c| {
            c.execute(
                "UPDATE members SET open_lots_from = open_lots_from + $3 WHERE tenant_id = $1 AND id = $2",
                &[T.into(), m.as_str().into(), by.into()],
            )?;
            Ok(())
        })
        .await
        .expect("mark moved");
}

/// Lots are found from the member row's mark: it starts at the first lot with points left,
/// moves past lots emptied by a debit, a refund and expiry, and clears when none is left; a
/// mark moved past a lot with points (which would hide the lot) is what verify reports.
async fn open_lots_are_found_from_the_members_mark_and_verify_checks_it(db: TestDb) {
    let s = settings(
        0,
        ExpiryPolicy::AfterEarning { months: 12 },
        RefundPolicy::AllowNegative,
    );
    let store = setup(&db, &s).await;
    let m = member(&store, "c1").await;
    assert_eq!(open_lots_mark(&store, &m).await, (None, None));
    buy(&store, &s, &m, "o1", "10.00", t0()).await;
    buy(&store, &s, &m, "o2", "20.00", t0() + Duration::days(1)).await;
    buy(&store, &s, &m, "o3", "30.00", t0() + Duration::days(2)).await;
    let (mark, first) = open_lots_mark(&store, &m).await;
    assert!(mark.is_some());
    assert_eq!(mark, first, "the mark is the first open lot's transaction");
    // A debit that leaves points in o1's lot keeps the mark; one that empties it (earliest
    // expiry first) moves the mark to o2's.
    for (points, at) in [(-3, 3), (-7, 4)] {
        store
            .adjust(
                T,
                &m,
                points,
                "reversal",
                "test",
                s.clone(),
                None,
                us(t0() + Duration::days(at)),
            )
            .await
            .expect("debit");
        if points == -3 {
            assert_eq!(
                open_lots_mark(&store, &m).await,
                (mark, mark),
                "o1 still holds 7"
            );
        }
    }
    let (after_debit, first) = open_lots_mark(&store, &m).await;
    assert!(after_debit > mark, "{after_debit:?} must pass {mark:?}");
    assert_eq!(after_debit, first);
    // A full refund of o2 claws its lot back: the mark moves to o3's.
    refund(&store, &s, "o2", "20.00", t0() + Duration::days(3))
        .await
        .expect("refund");
    let (after_refund, first) = open_lots_mark(&store, &m).await;
    assert!(after_refund > after_debit);
    assert_eq!(after_refund, first);
    let b = store.balance(T, &m, s.clone()).await.expect("balance");
    assert_eq!((b.available, b.expiring.len()), (30, 1));
    assert_eq!(
        b.expiring[0].points, 30,
        "the expiring list reads the open lots"
    );
    assert_ledger_ok(&store).await;
    // A mark moved past a lot that still holds points hides it: verify says so.
    shift_mark(&store, &m, 1000).await;
    let report = store.verify().await.expect("verify runs");
    assert!(
        report
            .lot_mismatches
            .iter()
            .any(|l| l.contains("not reachable")),
        "{report:?}"
    );
    shift_mark(&store, &m, -1000).await;
    // Expiry takes the last lot: no open lot is left and the mark clears.
    let r = store
        .run_jobs(us(t0() + Duration::days(2) + Duration::days(366)))
        .await
        .expect("jobs");
    assert_eq!(r.expired_points, 30);
    assert_eq!(open_lots_mark(&store, &m).await, (None, None));
    buy(&store, &s, &m, "o4", "5.00", t0() + Duration::days(400)).await;
    let (mark, first) = open_lots_mark(&store, &m).await;
    assert!(mark.is_some());
    assert_eq!(mark, first, "a new lot sets the mark again");
    assert_ledger_ok(&store).await;
}

/// A member's soonest expiry dates as the lots say: every available lot with points left and
/// an expiry date, by date, the first 12 (read without the member row or its mark).
async fn expiring_from_the_lots(store: &Store, member: &str) -> Vec<(String, i64)> {
    let m = member.to_string();
    store
        .read(move |c| {
            Ok(c.query(
                "SELECT expires_at, CAST(SUM(remaining) AS BIGINT) FROM lots WHERE tenant_id = $1 AND member_id = $2 AND state = 'available' AND remaining > 0 AND expires_at IS NOT NULL GROUP BY expires_at ORDER BY expires_at LIMIT 12",
                &[T.into(), m.as_str().into()],
            )?
            .iter()
            .map(|r| (fidelis_core::time::format(fidelis_core::time::from_micros(r.int(0))), r.int(1)))
            .collect())
        })
        .await
        .expect("lots")
}

async fn expiring_listed(store: &Store, s: &ProgramSettings, member: &str) -> Vec<(String, i64)> {
    let b = store.balance(T, member, s.clone()).await.expect("balance");
    b.expiring
        .into_iter()
        .map(|e| (e.expires_at, e.points))
        .collect()
}

async fn assert_expiring_follows_the_lots(store: &Store, s: &ProgramSettings, m: &str, step: &str) {
    let lots = expiring_from_the_lots(store, m).await;
    assert_eq!(expiring_listed(store, s, m).await, lots, "after {step}");
}

/// The soonest expiry dates a balance lists are kept on the member row (no lot is read): they
/// follow purchases in any order of dates (two on one date are added together, a 13th date is
/// left out until an earlier one goes), pending points when they mature, debits, refunds,
/// credits and expiry; purchases posted together keep them too; verify reports a row whose
/// list is wrong, and the migration lists them again for rows that have none.
async fn the_soonest_expiry_dates_are_kept_on_the_member_row(db: TestDb) {
    let s = settings(
        7,
        ExpiryPolicy::AfterEarning { months: 12 },
        RefundPolicy::AllowNegative,
    );
    let store = setup(&db, &s).await;
    let m = member(&store, "c1").await;
    let now = t0() + Duration::days(60);
    // Sixteen purchases on fourteen dates, out of order, all past their return window.
    for (i, day) in [21, 3, 45, 9, 9, 30, 0, 36, 12, 48, 27, 6, 18, 39, 24, 24]
        .iter()
        .enumerate()
    {
        let total = format!("{}.00", 10 + i);
        buy_posted(
            &store,
            &s,
            &m,
            &format!("o{i}"),
            &total,
            t0() + Duration::days(*day),
            now,
        )
        .await;
        assert_expiring_follows_the_lots(&store, &s, &m, &format!("purchase {i}")).await;
    }
    assert_eq!(expiring_listed(&store, &s, &m).await.len(), 12);
    // Two purchases inside the return window: pending, not listed yet.
    buy_posted(&store, &s, &m, "p1", "50.00", now, now).await;
    buy_posted(&store, &s, &m, "p2", "60.00", now - Duration::days(2), now).await;
    assert_expiring_follows_the_lots(&store, &s, &m, "pending purchases").await;
    // A debit empties the earliest lots: later dates come into the list.
    store
        .adjust(T, &m, -100, "reversal", "test", s.clone(), None, us(now))
        .await
        .expect("debit");
    assert_expiring_follows_the_lots(&store, &s, &m, "a debit").await;
    // A credit is a lot of its own, expiring a year after it.
    store
        .adjust(T, &m, 25, "goodwill", "test", s.clone(), None, us(now))
        .await
        .expect("credit");
    assert_expiring_follows_the_lots(&store, &s, &m, "a credit").await;
    // The pending lots mature; then the earliest lots expire.
    let r = store
        .run_jobs(us(now + Duration::days(8)))
        .await
        .expect("jobs");
    assert_eq!(r.matured_lots, 2);
    assert_expiring_follows_the_lots(&store, &s, &m, "maturity").await;
    // A refund claws back from available lots (no points are pending any more).
    let before = expiring_listed(&store, &s, &m).await;
    refund(&store, &s, "o9", "19.00", now + Duration::days(8))
        .await
        .expect("refund");
    assert_ne!(expiring_listed(&store, &s, &m).await, before);
    assert_expiring_follows_the_lots(&store, &s, &m, "a refund").await;
    let r = store
        .run_jobs(us(t0() + Duration::days(365 + 40)))
        .await
        .expect("jobs");
    assert!(r.expired_lots > 0);
    assert_expiring_follows_the_lots(&store, &s, &m, "expiry").await;
    assert_ledger_ok(&store).await;

    // Purchases of several members at once (posted together on PostgreSQL).
    let mut others = Vec::new();
    for i in 0..8 {
        others.push(member(&store, &format!("g{i}")).await);
    }
    let later = t0() + Duration::days(400);
    for round in 0..3 {
        let mut set = tokio::task::JoinSet::new();
        for (i, o) in others.iter().enumerate() {
            let (store, s, o) = (store.clone(), s.clone(), o.clone());
            set.spawn(async move {
                let at = later - Duration::days(30 + (i as i64 * 7 + round * 3) % 20);
                buy_posted(&store, &s, &o, &format!("g{i}-{round}"), "33.00", at, later).await;
            });
        }
        while let Some(r) = set.join_next().await {
            r.expect("purchase task");
        }
    }
    for o in &others {
        assert_eq!(expiring_listed(&store, &s, o).await.len(), 3);
        assert_expiring_follows_the_lots(&store, &s, o, "purchases together").await;
    }
    assert_ledger_ok(&store).await;

    // A wrong list on the row is what verify reports.
    let listed = expiring_listed(&store, &s, &m).await;
    let who = m.clone();
    store
        .write(&m.clone(), move |c| {
            c.execute(
                "UPDATE members SET expiring = '[[1,1]]' WHERE tenant_id = $1 AND id = $2",
                &[T.into(), who.as_str().into()],
            )?;
            Ok(())
        })
        .await
        .expect("row changed");
    let report = store.verify().await.expect("verify runs");
    assert_eq!(report.expiring_mismatches.len(), 1, "{report:?}");
    // Rows without a list (a database from before the column) get theirs from the migration.
    store
        .write(&m.clone(), move |c| {
            c.execute(
                "UPDATE members SET expiring = '[]' WHERE tenant_id = $1",
                &[T.into()],
            )?;
            c.execute("DELETE FROM fidelis_migrations WHERE version = 11", &[])?;
            Ok(())
        })
        .await
        .expect("lists removed");
    drop(store);
    let store = db.store(us(later));
    assert_eq!(expiring_listed(&store, &s, &m).await, listed);
    for o in &others {
        assert_expiring_follows_the_lots(&store, &s, o, "the migration").await;
    }
    assert_ledger_ok(&store).await;
}

/// Reads grouped many at a time (as PostgreSQL's store does) answer each request with its own
/// member's facts or balance: by id or external id, once or several times in a group, in the
/// right tenant, and nothing (or not found) for a member not enrolled.
async fn reads_grouped_together_are_each_members_own(db: TestDb) {
    // Points available at once, expiring a year after they are earned.
    let s = ProgramSettings {
        pending_days: 0,
        ..ProgramSettings::default()
    };
    let mut opts = fidelis_store::StoreOptions::for_dialect(db.kind_dialect());
    opts.group_reads = true;
    let store = db.store_with(opts, us(t0()));
    store
        .ensure_tenant(T, "Acme", &s, us(t0()))
        .await
        .expect("tenant");
    store
        .ensure_tenant("other", "Other", &s, us(t0()))
        .await
        .expect("tenant");
    let mut ids = Vec::new();
    for i in 0..10 {
        let id = member(&store, &format!("g-{i}")).await;
        for k in 0..i {
            buy(&store, &s, &id, &format!("g-{i}-{k}"), "10.00", t0()).await;
        }
        ids.push(id);
    }
    let elsewhere = store
        .create_member(
            "other",
            MemberFields {
                external_id: Some("g-3".into()),
                ..Default::default()
            },
            None,
            us(t0()),
        )
        .await
        .expect("member")
        .0
        .id;
    // What each member row holds, read on the reader pool.
    let mut available = Vec::new();
    for id in &ids {
        let id = id.clone();
        let a = store
            .read(move |c| {
                Ok(c.query_one(
                    "SELECT available FROM members WHERE tenant_id = $1 AND id = $2",
                    &[T.into(), id.as_str().into()],
                )?
                .map(|r| r.int(0)))
            })
            .await
            .expect("row")
            .expect("member row");
        available.push(a);
    }
    assert!(available[9] > 0, "purchases earned points");
    enum Asked {
        Facts(Option<MemberFacts>),
        Balance(Result<fidelis_store::model::Balance, StoreError>),
    }
    let mut asked = tokio::task::JoinSet::new();
    for round in 0..25 {
        for (i, id) in ids.iter().enumerate() {
            let (tenant, key) = match (round + i) % 5 {
                0 => (T, MemberKey::Id(id.clone())),
                1 => (T, MemberKey::ExternalId(format!("g-{i}"))),
                2 if i == 3 => ("other", MemberKey::ExternalId("g-3".into())),
                2 => (T, MemberKey::ExternalId(format!("nobody-{i}"))),
                3 => (T, MemberKey::Id(format!("mem_missing_{i}"))),
                // Balances: every member's, and one not enrolled.
                _ if i == 5 => (T, MemberKey::Id("mem_missing_balance".into())),
                _ => (T, MemberKey::Id(id.clone())),
            };
            let balance = (round + i) % 5 == 4;
            let (store, s) = (store.clone(), s.clone());
            asked.spawn(async move {
                let answer = match (&key, balance) {
                    (MemberKey::Id(m), true) => Asked::Balance(store.balance(tenant, m, s).await),
                    _ => Asked::Facts(store.member_facts(tenant, &key).await.expect("facts")),
                };
                (tenant, key, i, answer)
            });
        }
    }
    let mut answered = 0;
    while let Some(done) = asked.join_next().await {
        let (tenant, key, i, answer) = done.expect("asked");
        answered += 1;
        match (answer, tenant, &key) {
            (Asked::Balance(b), _, MemberKey::Id(k)) if k.starts_with("mem_missing") => {
                assert!(matches!(b, Err(StoreError::NotFound(_))), "{b:?}");
            }
            (Asked::Balance(b), _, _) => {
                let b = b.expect("balance");
                assert_eq!(b.available, available[i], "{key:?}");
                assert_eq!(b.pending, 0);
                let expiring: i64 = b.expiring.iter().map(|e| e.points).sum();
                assert_eq!(expiring, available[i], "every point earned expires once");
            }
            (Asked::Facts(facts), "other", _) => {
                let f = facts.expect("enrolled in the other tenant");
                assert_eq!(f.id.as_deref(), Some(elsewhere.as_str()));
                assert_eq!(f.order_count, 0);
            }
            (Asked::Facts(facts), _, MemberKey::Id(k)) if k.starts_with("mem_missing") => {
                assert!(facts.is_none());
            }
            (Asked::Facts(facts), _, MemberKey::ExternalId(k)) if k.starts_with("nobody") => {
                assert!(facts.is_none());
            }
            (Asked::Facts(facts), _, _) => {
                let f = facts.unwrap_or_else(|| panic!("{key:?} is enrolled"));
                assert_eq!(f.id.as_deref(), Some(ids[i].as_str()), "{key:?}");
                assert_eq!(f.order_count, i as i64, "{key:?}");
                assert_eq!(f.lifetime_spend_minor, 1_000 * i as i64, "{key:?}");
                assert!(f.enrolled_at.is_some() && f.plan.is_none() && f.tier.is_none());
            }
        }
    }
    assert_eq!(answered, 250);
}

on_both!(
    pending_points_mature_exactly_at_the_end_of_the_return_window,
    points_expire_exactly_at_their_expiry_date,
    the_expiry_index_serves_the_job_and_holds_only_lots_with_a_date,
    a_member_is_found_by_phone_through_its_index,
    inactivity_expires_the_whole_balance_after_n_months_without_activity,
    a_member_who_buys_after_the_inactivity_read_keeps_their_points,
    debits_consume_the_earliest_expiring_lots_first,
    a_debit_reads_the_first_lots_and_the_rest_when_they_do_not_decide,
    a_refund_reads_the_first_and_last_lots_and_the_rest_when_needed,
    refunds_claw_back_proportionally_and_never_more_than_was_bought,
    a_refund_takes_pending_then_available_then_follows_the_refund_policy,
    a_debt_is_repaid_when_pending_points_mature,
    an_order_id_is_recorded_once_per_tenant,
    an_idempotency_key_replays_its_first_answer_and_refuses_another_request,
    concurrent_purchases_and_adjustments_on_one_member_end_exact,
    a_tenant_never_sees_another_tenants_members,
    array_parameters_bind_on_postgresql_and_are_refused_on_sqlite,
    open_lots_are_found_from_the_members_mark_and_verify_checks_it,
    reads_grouped_together_are_each_members_own,
    the_soonest_expiry_dates_are_kept_on_the_member_row,
);

/// PostgreSQL: every text column in an index's key compares byte by byte (`COLLATE "C"`), as
/// on SQLite: ids sort the same on both databases, and the hot indexes' comparisons do not go
/// through the locale. A new migration's indexed text column must say so (`{KEY}`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_keys_compare_byte_by_byte() {
    let Some(db) = TestDb::postgres() else {
        return;
    };
    let store = setup(&db, &ProgramSettings::default()).await;
    let (keys, not_bytes) = store
        .read(|c| {
            let count = |c: &mut dyn fidelis_store::conn::Conn, collated: &str| {
                let sql = format!(
                    "SELECT c.relname || '.' || a.attname FROM pg_class c \
                     JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = current_schema() \
                     JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
                     WHERE c.relkind = 'r' AND a.atttypid = 'text'::regtype {collated} \
                     AND EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND a.attnum = ANY (i.indkey)) \
                     ORDER BY 1"
                );
                c.query(&sql, &[]).map(|rows| rows.iter().map(|r| r.text(0)).collect::<Vec<_>>())
            };
            Ok((
                count(c, "")?,
                count(c, "AND a.attcollation <> 'pg_catalog.\"C\"'::regcollation")?,
            ))
        })
        .await
        .expect("catalogue");
    assert!(
        keys.iter().any(|k| k == "members.external_id") && keys.len() > 20,
        "the indexed text columns were found: {keys:?}"
    );
    assert!(
        not_bytes.is_empty(),
        "keys on the locale's order: {not_bytes:?}"
    );
}

/// PostgreSQL: a member's soonest expiry dates are read through the member's transactions,
/// whatever the statistics say of the lots. Analyzed while the lots were pending (a history
/// posted at once, matured later), they look nearly all pending, and a query whose conditions
/// implied the expiry index's took that index for a few rows and read all of it for each of
/// the member's transactions (2-3 ms a call on the demo's data, growing with the tenant's lots).
/// The query no longer implies them: with the index by transaction gone and sequential scans
/// discouraged, it still does not use the expiry index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_expiry_dates_are_listed_through_the_members_transactions() {
    let Some(db) = TestDb::postgres() else {
        return;
    };
    let s = settings(
        14,
        ExpiryPolicy::AfterEarning { months: 12 },
        RefundPolicy::AllowNegative,
    );
    let store = setup(&db, &s).await;
    let mut members = Vec::new();
    for i in 0..20 {
        let m = member(&store, &format!("c{i}")).await;
        buy(&store, &s, &m, &format!("o{i}"), "30.00", t0()).await;
        members.push(m);
    }
    let matured = store
        .run_jobs(us(t0() + Duration::days(15)))
        .await
        .expect("jobs");
    assert_eq!(matured.matured_lots, 20);
    let m = members[0].clone();
    // Inside a write job that fails, so that dropping the index is undone with it.
    let tried = store
        .write("plan", move |c| {
            c.batch("DROP INDEX lots_by_txn; SET LOCAL enable_seqscan = off")?;
            c.batch(&format!(
                "PREPARE listed(text, text, bigint) AS {}",
                fidelis_store::expiring_from_lots_sql()
            ))?;
            let plan = c.query(&format!("EXPLAIN EXECUTE listed('{T}', '{m}', 12)"), &[]);
            c.batch("DEALLOCATE listed")?;
            let plan = plan?
                .iter()
                .map(|r| r.text(0))
                .collect::<Vec<_>>()
                .join("\n");
            Err::<(), _>(StoreError::Conflict(plan))
        })
        .await;
    let Err(StoreError::Conflict(plan)) = tried else {
        panic!("the plan: {tried:?}");
    };
    assert!(!plan.contains("lots_expiring"), "{plan}");
    let b = store
        .balance(T, &members[0], s.clone())
        .await
        .expect("balance");
    assert_eq!(
        b.expiring.iter().map(|e| e.points).collect::<Vec<_>>(),
        vec![30],
        "the index by transaction is back, and the dates are listed"
    );
}

/// PostgreSQL: the store keeps the planner's statistics of the hot tables as they grow (a
/// generic plan made on a table it takes for empty reads every order of the tenant), long
/// before autovacuum's first look a minute later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_statistics_follow_the_hot_tables_as_they_grow() {
    let Some(db) = TestDb::postgres() else {
        return;
    };
    let store = setup(&db, &ProgramSettings::default()).await;
    let analyzed = |store: Store| async move {
        store
            .read(|c| {
                Ok(c.query_one(
                    "SELECT CAST(reltuples AS BIGINT) FROM pg_class WHERE oid = to_regclass('members')",
                    &[],
                )?
                .map_or(-1, |r| r.int(0)))
            })
            .await
            .expect("pg_class")
    };
    // Analyzed at start, empty.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while analyzed(store.clone()).await < 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(analyzed(store.clone()).await, 0, "analyzed at start");
    let mut enrolled = tokio::task::JoinSet::new();
    for i in 0..1_200 {
        let store = store.clone();
        enrolled.spawn(async move { member(&store, &format!("grow-{i}")).await });
    }
    while let Some(done) = enrolled.join_next().await {
        done.expect("enrolled");
    }
    let mut seen = 0;
    while std::time::Instant::now() < deadline {
        seen = analyzed(store.clone()).await;
        if seen >= 1_200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(
        seen, 1_200,
        "the members table is analyzed again once it has grown"
    );
}
