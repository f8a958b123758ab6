//! The rules engine's speed on one core: 100 active rules of the kinds retailers write,
//! evaluated against a 10-line order. Prints condition evaluations per second, and what the
//! whole earn path (views, schedules, conditions, effects, caps) adds per event over the base
//! rate alone. A benchmark, not a test: run it with
//!
//! ```sh
//! cargo run --release -p fidelis-core --example rules_bench
//! ```

use fidelis_core::ProgramSettings;
use fidelis_core::earn::{BaseEarner, EarnContext, Earner, MemberFacts, Trigger};
use fidelis_core::event::{Channel, LineInput, MemberRef, PurchaseInput};
use fidelis_core::rules::engine::{CompiledRule, Extensions, Input, RuleEvent, RuleSet};
use fidelis_core::rules::{RuleRecord, Status};
use serde_json::json;
use std::hint::black_box;
use std::time::Instant;

const RULES: usize = 100;

/// Conditions of the shapes the issue and the market describe, varied by `i`.
fn condition(i: usize) -> String {
    match i % 10 {
        0 => r#"event.channel == "web" && event.lines.exists(l, l.category == "shoes") && member.tier in ["gold", "platinum"]"#.into(),
        1 => format!("event.total >= {}", 20 + i),
        2 => r#"member.tier in ["gold", "platinum"]"#.into(),
        3 => format!(r#"event.lines.exists(l, l.category == "cat{}" && l.amount > 20)"#, i % 7),
        4 => "event.hour >= 18 && event.weekday <= 5".into(),
        5 => "has(member.attributes.vip) && member.attributes.vip == true && event.total > 100".into(),
        6 => "event.lines.filter(l, l.price > 10).size() >= 2".into(),
        7 => r#"event.store == "paris-01" || event.channel == "app""#.into(),
        8 => "member.order_count == 0 || member.days_since_enrolment < 30".into(),
        _ => "event.lines.all(l, l.quantity < 10) && event.quantity > 3".into(),
    }
}

fn effect(i: usize) -> serde_json::Value {
    match i % 4 {
        0 => json!({"type": "points", "points": 50}),
        1 => {
            json!({"type": "multiplier", "factor": "2", "lines": format!("line.category == \"cat{}\"", i % 7)})
        }
        2 => json!({"type": "per_amount", "rate": "0.5"}),
        _ => json!({"type": "multiplier", "factor": "1.5"}),
    }
}

fn rule_set() -> RuleSet {
    let rules = (0..RULES)
        .map(|i| {
            let def = json!({
                "name": format!("rule {i}"),
                "trigger": "purchase",
                "condition": condition(i),
                "effects": [effect(i)],
                "priority": i,
                "schedule": if i % 5 == 0 { json!([{"days": ["weekdays", "sat"], "from": "08:00", "to": "22:00"}]) } else { json!([]) },
                "caps": if i % 3 == 0 { json!({"per_member_month": 2000, "per_order": 500}) } else { json!({}) },
            });
            let rec = RuleRecord {
                id: format!("rul_{i:03}"),
                version: 1,
                status: Status::Active,
                definition: serde_json::from_value(def).expect("a valid rule"),
                created_at: String::new(),
                updated_at: String::new(),
            };
            CompiledRule::compile(&rec, None, &Extensions::default()).expect("compiles")
        })
        .collect();
    RuleSet::new(rules, 1)
}

fn main() {
    let settings = ProgramSettings {
        timezone: "Europe/Paris".into(),
        ..ProgramSettings::default()
    };
    let lines: Vec<LineInput> = (0..10)
        .map(|i| LineInput {
            sku: format!("sku-{i}"),
            category: Some(if i == 3 {
                "shoes".into()
            } else {
                format!("cat{i}")
            }),
            quantity: 1 + i % 3,
            unit_price: format!("{}.90", 5 + i * 3),
        })
        .collect();
    let total: i64 = lines
        .iter()
        .map(|l| l.quantity * (l.unit_price.replace('.', "").parse::<i64>().unwrap_or(0)))
        .sum();
    let purchase = PurchaseInput {
        member: MemberRef {
            id: Some("mem_bench".into()),
            external_id: None,
        },
        order_id: "bench-1".into(),
        occurred_at: Some("2026-03-12T17:30:00Z".into()),
        channel: Channel::Web,
        store_id: Some("paris-01".into()),
        currency: "EUR".into(),
        total: format!("{}.{:02}", total / 100, total % 100),
        lines,
    }
    .validate(
        &settings,
        fidelis_core::time::parse("2026-03-12T18:00:00Z").expect("time"),
    )
    .expect("a valid purchase");
    let mut attributes = serde_json::Map::new();
    attributes.insert("vip".into(), json!(true));
    let member = MemberFacts {
        id: Some("mem_bench".into()),
        tier: Some("gold".into()),
        attributes,
        order_count: 4,
        lifetime_spend_minor: 120_000,
        enrolled_at: fidelis_core::time::parse("2025-01-01T00:00:00Z"),
        ..MemberFacts::default()
    };
    let set = rule_set();
    let input = Input {
        program: &settings,
        event: RuleEvent::Purchase(&purchase),
        member: &member,
        any_status: false,
        ignore_dates: false,
    };

    // The machine is shared: each figure is the best of BATCHES batches (the run least
    // disturbed by other work), with the median beside it.
    const BATCHES: usize = 9;
    let best_and_median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[0], v[v.len() / 2])
    };

    // 1. Conditions alone.
    black_box(set.evaluate_conditions(&input, 1_000));
    let rounds = 5_000;
    let mut per_eval = Vec::new();
    let mut hits = 0;
    for _ in 0..BATCHES {
        let started = Instant::now();
        hits = black_box(set.evaluate_conditions(&input, rounds));
        per_eval.push(started.elapsed().as_secs_f64() / (rounds * RULES) as f64);
    }
    let (secs, median) = best_and_median(per_eval);
    let evals = 1.0;
    println!("rules: {RULES} active, order of 10 lines, one core");
    println!(
        "condition evaluations: {:.0} per second ({:.1} ns each; median batch {:.0} per second; {} of {} true)",
        evals / secs,
        secs * 1e9 / evals,
        evals / median,
        hits / rounds,
        RULES
    );

    // 2. The earn path: base rate alone, then base rate and the rules.
    let ctx = EarnContext {
        program: &settings,
        event: Trigger::Purchase(&purchase),
        member: &member,
        now: purchase.occurred_at,
    };
    let events = 2_000;
    let time = |f: &dyn Fn() -> usize| {
        for _ in 0..1_000 {
            black_box(f());
        }
        let mut batches = Vec::new();
        let mut n = 0;
        for _ in 0..BATCHES {
            let started = Instant::now();
            for _ in 0..events {
                n = black_box(f());
            }
            batches.push(started.elapsed().as_secs_f64() * 1e6 / events as f64);
        }
        let (best, median) = best_and_median(batches);
        (best, median, n)
    };
    let (base_us, base_median, _) = time(&|| BaseEarner.awards(black_box(&ctx)).len());
    let (all_us, all_median, awards) = time(&|| {
        let mut a = BaseEarner.awards(black_box(&ctx));
        a.extend(set.awards(&ctx));
        a.len()
    });
    println!(
        "earn path: base rate alone {base_us:.2} µs per event; with the rules {all_us:.2} µs ({awards} awards)"
    );
    println!(
        "the rules add {:.2} µs per event (median batch {:.2} µs)",
        all_us - base_us,
        all_median - base_median
    );
    // 2b. A more typical event: a till order by a member with no tier, at 10:00, where far
    //     fewer rules match.
    let mut till = purchase.clone();
    till.channel = Channel::Pos;
    till.store_id = Some("lyon-02".into());
    till.occurred_at = fidelis_core::time::parse("2026-03-12T09:00:00Z").expect("time");
    let plain = MemberFacts {
        id: Some("mem_plain".into()),
        order_count: 12,
        enrolled_at: fidelis_core::time::parse("2024-01-01T00:00:00Z"),
        ..MemberFacts::default()
    };
    let till_ctx = EarnContext {
        program: &settings,
        event: Trigger::Purchase(&till),
        member: &plain,
        now: till.occurred_at,
    };
    let (till_base, _, _) = time(&|| BaseEarner.awards(black_box(&till_ctx)).len());
    let (till_all, till_median, till_awards) = time(&|| {
        let mut a = BaseEarner.awards(black_box(&till_ctx));
        a.extend(set.awards(&till_ctx));
        a.len()
    });
    println!(
        "a typical till order ({} rules award): the rules add {:.2} µs per event (median batch {:.2} µs)",
        till_awards - 1,
        till_all - till_base,
        till_median - till_base
    );

    // 3. Each shape of condition alone (best of the batches).
    println!("per condition shape (ns per evaluation):");
    for i in 0..10 {
        let rec = RuleRecord {
            id: format!("shape_{i}"),
            version: 1,
            status: Status::Active,
            definition: serde_json::from_value(json!({
                "name": "shape", "trigger": "purchase", "condition": condition(i),
                "effects": [{"type": "points", "points": 1}],
            }))
            .expect("a valid rule"),
            created_at: String::new(),
            updated_at: String::new(),
        };
        let one = RuleSet::new(
            vec![CompiledRule::compile(&rec, None, &Extensions::default()).expect("compiles")],
            1,
        );
        let mut runs = Vec::new();
        for _ in 0..BATCHES {
            let started = Instant::now();
            black_box(one.evaluate_conditions(&input, 20_000));
            runs.push(started.elapsed().as_secs_f64() * 1e9 / 20_000.0);
        }
        let (best, _) = best_and_median(runs);
        println!("  {best:7.1}  {}", condition(i));
    }
    let explain = Instant::now();
    let ev = set.evaluate(&input, true);
    println!(
        "a simulation with an explanation of every rule: {:.1} µs ({} traces)",
        explain.elapsed().as_secs_f64() * 1e6,
        ev.traces.len()
    );
}
