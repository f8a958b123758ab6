//! `fidelis bench`, black box: a short run over HTTP (the server as a child process) and one
//! in-process, paced, on SQLite. What is checked is that the command does what
//! docs/PERFORMANCE.md says it does — members loaded, every operation driven (purchases, balance reads, redemptions), nothing failed,
//! the ledger verified, the JSON report written — never how fast: speed is read from the
//! figures it prints.

use serde_json::Value;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_fidelis");

fn bench(extra: &[&str]) -> Value {
    let dir = std::env::temp_dir().join(format!(
        "fidelis-bench-test-{}",
        fidelis_store_tests::fidelis_store::random_id("", 12)
    ));
    std::fs::create_dir_all(&dir).expect("a temp folder");
    let json = dir.join("report.json");
    let db = format!("sqlite://{}", dir.join("bench.db").display());
    let mut args = vec![
        "bench",
        "--database-url",
        &db,
        "--members",
        "200",
        "--connections",
        "8",
        "--duration-secs",
        "2",
        "--json",
        json.to_str().expect("a UTF-8 path"),
    ];
    args.extend_from_slice(extra);
    let out = Command::new(BIN)
        .args(&args)
        .env_remove("FIDELIS_LISTEN")
        .output()
        .expect("fidelis bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "fidelis bench failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("purchase") || stdout.contains("healthz"),
        "the table names the operations:\n{stdout}"
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("the JSON report"))
            .expect("the report is JSON");
    let _ = std::fs::remove_dir_all(&dir);
    report
}

/// `fidelis bench` with these arguments exits with an error saying `says`.
fn refused(args: &[&str], says: &str) {
    let out = Command::new(BIN)
        .arg("bench")
        .args(args)
        .output()
        .expect("fidelis bench runs");
    assert!(!out.status.success(), "{args:?} was accepted");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(says), "{args:?}: {err}");
}

fn operation<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["operations"]
        .as_array()
        .and_then(|ops| ops.iter().find(|o| o["operation"] == name))
        .unwrap_or_else(|| panic!("no `{name}` in {report}"))
}

fn check(report: &Value, mode: &str) {
    assert_eq!(report["mode"], mode);
    assert_eq!(report["database"], "sqlite");
    assert_eq!(report["members"], 200);
    assert_eq!(report["ledger_ok"], true, "{report}");
    for name in ["purchase", "balance", "redemption"] {
        let op = operation(report, name);
        assert!(op["ok"].as_u64().unwrap_or(0) > 0, "{name} ran: {op}");
        assert_eq!(op["failed"], 0, "{name} had failures: {op}");
        let (p50, p99) = (op["p50_ms"].as_f64(), op["p99_ms"].as_f64());
        assert!(p50.is_some_and(|a| a > 0.0) && p99 >= p50, "{name}: {op}");
    }
    // Every purchase posted is in the ledger (an earning purchase is one transaction).
    assert!(
        report["ledger_entries"].as_u64().unwrap_or(0) > 0,
        "{report}"
    );
    let ok = |name| operation(report, name)["ok"].as_u64().unwrap_or(0);
    let refunds = report["operations"]
        .as_array()
        .and_then(|ops| ops.iter().find(|o| o["operation"] == "refund"))
        .map_or(0, |o| o["ok"].as_u64().unwrap_or(0));
    assert_eq!(
        report["write_path"]["writes"].as_f64().map(|w| w as u64),
        Some(ok("purchase") + ok("redemption") + refunds),
        "one write per purchase, redemption and refund: {report}"
    );
    assert!(
        ok("redemption") <= ok("purchase"),
        "a redemption follows a purchase for the same member: {report}"
    );
}

#[test]
fn bench_over_http_paced_drives_every_operation_and_verifies_the_ledger() {
    let report = bench(&["--rate", "200", "--redeem-share", "0.2"]);
    check(&report, "http");
    assert_eq!(report["rate_target"], 200);
    assert!(
        report["server_rss_mb"].as_f64().is_some_and(|m| m > 0.0),
        "{report}"
    );
}

#[test]
fn bench_in_process_drives_every_operation_and_verifies_the_ledger() {
    let report = bench(&["--inprocess", "--redeem-share", "0.2"]);
    check(&report, "inprocess");
    assert_eq!(report["baskets"], "simulated", "{report}");
}

/// The fixed baskets of the figures before 2026-11-25 are still there to compare with them.
#[test]
fn simple_baskets_are_kept_for_comparing_with_earlier_figures() {
    let report = bench(&["--inprocess", "--simple-baskets", "--refund-share", "0.1"]);
    check(&report, "inprocess");
    assert_eq!(report["baskets"], "simple", "{report}");
    assert_eq!(operation(&report, "refund")["failed"], 0, "{report}");
}

#[test]
fn reads_only_leave_no_room_for_the_default_redemptions() {
    let report = bench(&["--read-share", "1", "--rate", "200"]);
    assert_eq!(operation(&report, "purchase")["ok"], 0, "{report}");
    assert_eq!(operation(&report, "redemption")["ok"], 0, "{report}");
    assert!(operation(&report, "balance")["ok"].as_u64().unwrap_or(0) > 0);
}

#[test]
fn the_ceiling_sends_only_health_checks_through_the_same_server() {
    let report = bench(&["--ceiling", "--rate", "400"]);
    assert_eq!(report["ceiling"], true, "{report}");
    assert_eq!(report["mode"], "http", "{report}");
    assert_eq!(
        report["operations"].as_array().map(Vec::len),
        Some(1),
        "{report}"
    );
    let health = operation(&report, "healthz");
    assert!(health["ok"].as_u64().unwrap_or(0) > 0, "{report}");
    assert_eq!(health["failed"], 0, "{report}");
    assert_eq!(
        report["write_path"]["writes"], 0.0,
        "nothing written: {report}"
    );
    refused(
        &["--ceiling", "--inprocess"],
        "--ceiling measures HTTP alone",
    );
    refused(
        &["--ceiling", "--batch-size=10"],
        "--ceiling measures HTTP alone",
    );
}

#[test]
fn shares_of_operations_beyond_the_whole_are_refused() {
    for shares in [
        ["--redeem-share", "1.5", "--read-share", "0"],
        ["--redeem-share", "0.2", "--read-share", "0.9"],
    ] {
        refused(&shares, "--redeem-share must be between 0 and 1");
    }
}

#[test]
fn refused_redemptions_fail_alone_and_send_no_batch_round_again() {
    let report = bench(&[
        "--inprocess",
        "--redeem-share",
        "0.2",
        "--reward-points",
        "1000000",
    ]);
    let redemptions = operation(&report, "redemption");
    assert_eq!(redemptions["ok"], 0, "nobody can afford it: {report}");
    assert!(redemptions["failed"].as_u64().unwrap_or(0) > 0, "{report}");
    purchases_kept_and_no_batch_replayed(&report);
    refused(
        &["--reward-points", "0"],
        "--reward-points must be at least 1",
    );
}

/// Every purchase went through, no batch ran twice, and the ledger verifies.
fn purchases_kept_and_no_batch_replayed(report: &Value) {
    let purchases = operation(report, "purchase");
    assert!(purchases["ok"].as_u64().unwrap_or(0) > 0, "{report}");
    assert_eq!(purchases["failed"], 0, "{report}");
    assert_eq!(report["write_path"]["batches_replayed"], 0.0, "{report}");
    assert_eq!(report["ledger_ok"], true, "{report}");
}

#[test]
fn resent_orders_are_refused_alone_and_send_no_batch_round_again() {
    // With keys, each resend comes under a new key, which it must give back.
    let modes = [
        &["--inprocess"][..],
        &["--rate", "300"],
        &["--inprocess", "--idempotency-keys"],
    ];
    for mode in modes {
        let mut args = vec!["--resend-share", "0.2"];
        args.extend_from_slice(mode);
        let report = bench(&args);
        let resends = operation(&report, "resend");
        assert!(
            resends["ok"].as_u64().unwrap_or(0) > 0,
            "each resend answered 409: {report}"
        );
        assert_eq!(resends["failed"], 0, "{report}");
        purchases_kept_and_no_batch_replayed(&report);
    }
    refused(
        &["--resend-share", "1.5"],
        "--resend-share must be between 0 and 1",
    );
    refused(
        &["--resend-share=-0.1"],
        "--resend-share must be between 0 and 1",
    );
    refused(
        &["--resend-share", "0.1", "--batch-size", "10"],
        "--resend-share resends single purchases",
    );
}

#[test]
fn keyed_requests_are_recorded_once_with_their_keys() {
    for (mode, name) in [
        (&["--inprocess"][..], "inprocess"),
        (&["--rate", "300"], "http"),
    ] {
        let mut args = vec!["--idempotency-keys", "--redeem-share", "0.2"];
        args.extend_from_slice(mode);
        let report = bench(&args);
        check(&report, name);
        assert_eq!(report["idempotency_keys"], true, "{report}");
    }
    refused(
        &["--idempotency-keys", "--batch-size", "10"],
        "--idempotency-keys keys single requests",
    );
    refused(
        &["--idempotency-keys", "--ceiling"],
        "--idempotency-keys keys single requests",
    );
    refused(
        &["--refund-share", "0.1", "--batch-size", "10"],
        "--refund-share refunds single purchases",
    );
    refused(
        &["--refund-share", "1.5"],
        "--refund-share must be between 0 and 1",
    );
}

#[test]
fn a_capped_rule_is_settled_on_every_purchase_without_failures() {
    let report = bench(&["--inprocess", "--capped-rule", "--redeem-share", "0.2"]);
    check(&report, "inprocess");
    assert_eq!(report["capped_rule"], true, "{report}");
}

#[test]
fn a_tier_ladder_and_a_history_are_loaded_and_members_move_during_the_run() {
    let report = bench(&["--inprocess", "--tiers", "--history", "2"]);
    check(&report, "inprocess");
    assert_eq!(report["tiers"], true, "{report}");
    assert_eq!(report["history"], 2, "{report}");
    // Two past purchases per member, each an earning transaction of two entries, before the
    // run's own.
    assert!(
        report["ledger_entries"].as_i64().unwrap_or(0) > 200 * 2 * 2,
        "{report}"
    );
    let tiers = report["tier_members"]
        .as_object()
        .expect("members per tier");
    let placed: i64 = tiers.values().filter_map(Value::as_i64).sum();
    assert_eq!(placed, 200, "every member counted once: {report}");
    assert!(
        !tiers.contains_key("none"),
        "a purchase places every member: {report}"
    );
    assert!(
        report["tier_moves"].as_i64().unwrap_or(0) > 0,
        "members cross thresholds during the run: {report}"
    );
}

#[test]
fn points_expiring_after_earning_are_listed_from_the_member_row_and_verify() {
    let report = bench(&[
        "--inprocess",
        "--expiry-months",
        "36",
        "--history",
        "2",
        "--redeem-share",
        "0.2",
    ]);
    // `check` verifies the ledger, which compares every member row's expiry dates with its
    // lots after purchases and redemptions.
    check(&report, "inprocess");
    assert_eq!(report["expiry_months"], 36, "{report}");
}

#[test]
fn returned_items_are_refunded_by_line_without_failures() {
    for mode in ["inprocess", "http"] {
        let mut args = vec!["--refund-share", "0.2", "--redeem-share", "0.2"];
        if mode == "inprocess" {
            args.push("--inprocess");
        }
        let report = bench(&args);
        check(&report, mode);
        let refund = operation(&report, "refund");
        assert!(refund["ok"].as_u64().unwrap_or(0) > 0, "{report}");
        assert_eq!(refund["failed"], 0, "{report}");
        assert_eq!(report["refund_share"], 0.2, "{report}");
    }
}
