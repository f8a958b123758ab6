//! Tests of the whole simulation: reproducibility, event invariants (order, bounds, wire
//! validity, refunds), and that the generated history matches what the parameters imply.

use super::*;
use chrono::{Datelike, TimeZone, Timelike};
use fidelis_core::Money;
use fidelis_core::ProgramSettings;
use fidelis_core::event::{RefundWhat, refund_lines_amount};
use std::collections::HashMap;
use std::sync::OnceLock;

fn end() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 22, 14, 37, 12)
        .single()
        .expect("valid date")
}

fn demo() -> &'static Simulation {
    static SIM: OnceLock<Simulation> = OnceLock::new();
    SIM.get_or_init(|| simulate(&SimConfig::demo(end())).expect("demo config is valid"))
}

/// Purchases by order id, with the index of the purchase event.
fn orders(sim: &Simulation) -> HashMap<&str, (usize, &SimEvent)> {
    sim.events
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match e {
            SimEvent::Purchase { input, .. } => Some((input.order_id.as_str(), (i, e))),
            _ => None,
        })
        .collect()
}

#[test]
fn demo_size_is_in_the_intended_range() {
    let sim = demo();
    let (purchases, refunds) = (sim.purchase_count(), sim.refund_count());
    assert!(
        (25_000..=60_000).contains(&purchases),
        "{purchases} purchases"
    );
    // About return_rate of the orders, less those whose return would fall after the end.
    let ratio = refunds as f64 / purchases as f64;
    assert!(
        (0.045..0.065).contains(&ratio),
        "{refunds} refunds for {purchases} purchases"
    );
    assert_eq!(sim.shoppers.len(), 2000);
    assert_eq!(sim.stores.len(), 8);
    assert_eq!(sim.catalogue.len(), 120);
    assert_eq!(sim.events.len(), 2000 + purchases + refunds);
}

#[test]
fn same_seed_gives_identical_output_and_another_seed_does_not() {
    let mut cfg = SimConfig::demo(end());
    cfg.members = 300;
    let a = simulate(&cfg).expect("valid");
    let b = simulate(&cfg).expect("valid");
    assert_eq!(a, b);
    cfg.seed = 1;
    let c = simulate(&cfg).expect("valid");
    assert_ne!(a.events, c.events);
    assert_ne!(a.shoppers, c.shoppers);
}

#[test]
fn shoppers_do_not_depend_on_how_many_others_there_are() {
    let mut cfg = SimConfig::demo(end());
    cfg.members = 50;
    let small = simulate(&cfg).expect("valid");
    cfg.members = 120;
    let large = simulate(&cfg).expect("valid");
    assert_eq!(small.shoppers[..], large.shoppers[..50]);
}

#[test]
fn events_are_sorted_and_inside_the_history() {
    let sim = demo();
    let start = SimConfig::demo(end()).start().expect("valid");
    assert!(sim.start >= start && sim.start - start < chrono::Duration::seconds(1));
    assert!(
        sim.events
            .windows(2)
            .all(|w| (w[0].at(), w[0].rank()) <= (w[1].at(), w[1].rank()))
    );
    assert!(
        sim.events
            .iter()
            .all(|e| e.at() >= sim.start && e.at() <= end())
    );
    // Each shopper enrols exactly once, before anything else they do.
    let mut enrolled = vec![false; sim.shoppers.len()];
    for e in &sim.events {
        match e {
            SimEvent::Enrol { shopper, at } => {
                assert!(!enrolled[*shopper]);
                assert_eq!(*at, sim.shoppers[*shopper].enrolled_at);
                enrolled[*shopper] = true;
            }
            other => assert!(
                enrolled[other.shopper()],
                "event before enrolment: {other:?}"
            ),
        }
    }
    assert!(enrolled.iter().all(|&e| e));
    let at_start = sim
        .shoppers
        .iter()
        .filter(|s| s.enrolled_at == sim.start)
        .count();
    assert!(
        (700..900).contains(&at_start),
        "{at_start} enrolled at the start (expect ~40 %)"
    );
}

#[test]
fn every_purchase_passes_the_api_validation() {
    let sim = demo();
    let settings = ProgramSettings::default();
    let store_ids: Vec<&str> = sim.stores.iter().map(|s| s.id.as_str()).collect();
    let mut ids = HashSet::new();
    for e in &sim.events {
        let SimEvent::Purchase { at, shopper, input } = e else {
            continue;
        };
        let p = input
            .validate(&settings, end())
            .unwrap_or_else(|err| panic!("{input:?}: {err}"));
        assert_eq!(p.occurred_at, *at);
        assert!(
            ids.insert(input.order_id.clone()),
            "duplicate {}",
            input.order_id
        );
        assert_eq!(
            input.member.external_id.as_deref(),
            Some(sim.shoppers[*shopper].external_id.as_str())
        );
        assert!(input.member.id.is_none());
        assert!((1..=MAX_ORDER_LINES).contains(&p.lines.len()));
        let sum: i64 = p
            .lines
            .iter()
            .map(|l| l.unit_price_minor * l.quantity)
            .sum();
        assert_eq!(sum, p.total.minor, "{}", input.order_id);
        for l in &p.lines {
            let product = sim
                .catalogue
                .iter()
                .find(|c| c.sku == l.sku)
                .expect("sku in the catalogue");
            assert_eq!(l.unit_price_minor, product.unit_price_minor);
            assert_eq!(l.category.as_deref(), Some(product.category.as_str()));
        }
        match input.channel {
            Channel::Pos => assert!(
                input
                    .store_id
                    .as_deref()
                    .is_some_and(|s| store_ids.contains(&s))
            ),
            Channel::Web | Channel::App => assert_eq!(input.store_id, None),
        }
    }
    assert_eq!(ids.len(), sim.purchase_count());
}

#[test]
fn every_refund_takes_back_part_of_an_earlier_order_of_the_same_shopper() {
    let sim = demo();
    let settings = ProgramSettings::default();
    let orders = orders(sim);
    let mut refund_ids = HashSet::new();
    let (mut full, mut partial) = (0, 0);
    for (i, e) in sim.events.iter().enumerate() {
        let SimEvent::Refund { at, shopper, input } = e else {
            continue;
        };
        let r = input
            .validate(&settings, end())
            .unwrap_or_else(|err| panic!("{input:?}: {err}"));
        assert_eq!(r.occurred_at, *at);
        assert!(
            refund_ids.insert(input.refund_id.clone()),
            "refund twice: {input:?}"
        );
        assert_eq!(input.refund_id, Some(format!("rfd-{}", input.order_id)));
        let Some(&(
            j,
            SimEvent::Purchase {
                at: bought,
                shopper: buyer,
                input: order,
            },
        )) = orders.get(input.order_id.as_str())
        else {
            panic!("refund of an unknown order: {input:?}");
        };
        assert!(j < i && bought < at, "refund before its order");
        assert_eq!(buyer, shopper);
        let days = (at.date_naive() - bought.date_naive()).num_days();
        assert!(
            (1..=25).contains(&days),
            "refund {days} days after the order"
        );
        let order = order.validate(&settings, end()).expect("valid order");
        let amount = match r.what {
            RefundWhat::Amount(a) => {
                full += 1;
                assert_eq!(a, order.total.minor, "full refunds give back the total");
                a
            }
            RefundWhat::Lines(lines) => {
                partial += 1;
                assert_eq!(lines.len(), 1);
                refund_lines_amount(&order.lines, order.total.minor, &lines, &[])
                    .expect("lines of the order")
            }
        };
        assert!(amount > 0 && amount <= order.total.minor);
    }
    assert!(
        full > 100 && partial > 100,
        "{full} full and {partial} partial refunds"
    );
}

#[test]
fn truth_matches_the_events() {
    let sim = demo();
    let mut count = vec![0u32; sim.shoppers.len()];
    let mut refunds = vec![0u32; sim.shoppers.len()];
    let mut last: Vec<Option<DateTime<Utc>>> = vec![None; sim.shoppers.len()];
    for e in &sim.events {
        match e {
            SimEvent::Purchase { at, shopper, .. } => {
                count[*shopper] += 1;
                last[*shopper] = Some(*at);
            }
            SimEvent::Refund { shopper, .. } => refunds[*shopper] += 1,
            SimEvent::Enrol { .. } => {}
        }
    }
    let mut emails = HashSet::new();
    for (i, s) in sim.shoppers.iter().enumerate() {
        assert_eq!(s.orders, count[i], "{}", s.external_id);
        assert_eq!(s.refunds, refunds[i], "{}", s.external_id);
        assert_eq!(s.external_id, format!("cust-{:06}", i + 1));
        assert!(
            emails.insert(s.email.as_str()),
            "duplicate e-mail {}",
            s.email
        );
        assert!(s.home_store < sim.stores.len());
        assert!((s.affinity.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert!(s.rate_per_day > 0.0 && s.rate_per_day <= MAX_RATE_PER_DAY);
        assert!((0.0..=1.0).contains(&s.dropout_p));
        if let Some(at) = s.dropped_out_at {
            // Dropping out happens right after a purchase, and nothing follows it.
            assert_eq!(Some(at), last[i], "{}", s.external_id);
        }
        if let Some(b) = s.birth_date {
            let age = (end().date_naive() - b).num_days() / 365;
            assert!((17..=85).contains(&age), "age {age}");
        }
    }
}

#[test]
fn some_shoppers_drop_out_and_some_never_buy() {
    let sim = demo();
    let dropped = sim
        .shoppers
        .iter()
        .filter(|s| s.dropped_out_at.is_some())
        .count();
    let never = sim.shoppers.iter().filter(|s| s.orders == 0).count();
    assert!(
        (200..1400).contains(&dropped),
        "{dropped} of 2000 dropped out"
    );
    assert!(never > 50 && never < 1000, "{never} never bought");
}

#[test]
fn shoppers_with_a_higher_rate_buy_more() {
    // Among shoppers present from the start, compare the quartiles of λ.
    let sim = demo();
    let mut from_start: Vec<&Shopper> = sim
        .shoppers
        .iter()
        .filter(|s| s.enrolled_at == sim.start)
        .collect();
    from_start.sort_by(|a, b| a.rate_per_day.total_cmp(&b.rate_per_day));
    let q = from_start.len() / 4;
    let mean = |s: &[&Shopper]| s.iter().map(|s| f64::from(s.orders)).sum::<f64>() / s.len() as f64;
    let (low, high) = (
        mean(&from_start[..q]),
        mean(&from_start[from_start.len() - q..]),
    );
    assert!(
        high > 4.0 * low,
        "top quartile {high:.1} orders, bottom {low:.1}"
    );
    let mid = mean(&from_start[q..2 * q]);
    assert!(low < mid && mid < high);
}

/// BG/NBD: a shopper with rate λ and dropout p makes (1 − e^(−λpt)) / p purchases in t days.
fn expected_orders(sim: &Simulation) -> f64 {
    sim.shoppers
        .iter()
        .map(|s| {
            let t = (sim.end - s.enrolled_at).num_seconds() as f64 / 86_400.0;
            let (l, p) = (s.rate_per_day, s.dropout_p);
            if p > 1e-12 {
                (1.0 - (-l * p * t).exp()) / p
            } else {
                l * t
            }
        })
        .sum()
}

#[test]
fn order_counts_match_the_model_without_seasonality() {
    let mut cfg = SimConfig::demo(end());
    cfg.seasonality = false;
    let sim = simulate(&cfg).expect("valid");
    let (actual, expected) = (sim.purchase_count() as f64, expected_orders(&sim));
    assert!(
        (actual / expected - 1.0).abs() < 0.05,
        "{actual} purchases, {expected:.0} expected"
    );
}

#[test]
fn parameters_are_reflected_in_the_population() {
    let cfg = SimConfig::demo(end());
    let sim = demo();
    let n = sim.shoppers.len() as f64;
    let mean_rate = sim.shoppers.iter().map(|s| s.rate_per_day).sum::<f64>() / n;
    assert!(
        (mean_rate / cfg.mean_rate_per_day() - 1.0).abs() < 0.1,
        "mean λ {mean_rate}"
    );
    let mean_p = sim.shoppers.iter().map(|s| s.dropout_p).sum::<f64>() / n;
    assert!(
        (mean_p / cfg.mean_dropout() - 1.0).abs() < 0.15,
        "mean p {mean_p}"
    );
    let mean_spend = sim
        .shoppers
        .iter()
        .map(|s| s.mean_order_minor as f64)
        .sum::<f64>()
        / n;
    assert!(
        (mean_spend / (cfg.mean_order_major() * 100.0) - 1.0).abs() < 0.1,
        "mean order {mean_spend}"
    );
    // Seasonality changes when people buy, not (much) how much: within 10 % of the plain model.
    let (actual, expected) = (sim.purchase_count() as f64, expected_orders(sim));
    assert!(
        (actual / expected - 1.0).abs() < 0.1,
        "{actual} purchases, {expected:.0} expected"
    );
}

#[test]
fn order_values_follow_the_gamma_gamma_draws() {
    let sim = demo();
    let (mut sum, mut n, mut truth) = (0i64, 0usize, 0f64);
    let mut lines = 0usize;
    for e in &sim.events {
        if let SimEvent::Purchase { shopper, input, .. } = e {
            let total = Money::parse(&input.total, sim_currency(sim))
                .expect("decimal")
                .minor;
            sum += total;
            n += 1;
            lines += input.lines.len();
            truth += sim.shoppers[*shopper].mean_order_minor as f64;
        }
    }
    let (actual, implied) = (sum as f64 / n as f64, truth / n as f64);
    assert!(
        (actual / implied - 1.0).abs() < 0.12,
        "mean order {actual:.0}, draws imply {implied:.0}"
    );
    let per_order = lines as f64 / n as f64;
    assert!(
        (1.3..5.0).contains(&per_order),
        "{per_order:.2} lines per order"
    );
    // Shoppers who spend more per order in truth do so in the events too.
    let mut by_shopper: Vec<(i64, f64)> = Vec::new();
    for (i, s) in sim
        .shoppers
        .iter()
        .enumerate()
        .filter(|(_, s)| s.orders >= 10)
    {
        let totals: Vec<i64> = sim
            .events
            .iter()
            .filter_map(|e| match e {
                SimEvent::Purchase { shopper, input, .. } if *shopper == i => {
                    Money::parse(&input.total, sim_currency(sim))
                        .ok()
                        .map(|m| m.minor)
                }
                _ => None,
            })
            .collect();
        by_shopper.push((
            s.mean_order_minor,
            totals.iter().sum::<i64>() as f64 / totals.len() as f64,
        ));
    }
    by_shopper.sort_by_key(|(truth, _)| *truth);
    let q = by_shopper.len() / 4;
    let mean = |s: &[(i64, f64)]| s.iter().map(|x| x.1).sum::<f64>() / s.len() as f64;
    assert!(mean(&by_shopper[by_shopper.len() - q..]) > 2.0 * mean(&by_shopper[..q]));
}

fn sim_currency(sim: &Simulation) -> Currency {
    Currency::parse(&sim.currency).expect("known currency")
}

#[test]
fn channels_and_hours_look_like_a_retailer() {
    let sim = demo();
    let mut by_channel: HashMap<&str, usize> = HashMap::new();
    let (mut pos, mut pos_in_hours, mut at_home, mut sunday_afternoon) = (0, 0, 0, 0);
    for e in &sim.events {
        let SimEvent::Purchase { at, shopper, input } = e else {
            continue;
        };
        *by_channel.entry(input.channel.as_str()).or_default() += 1;
        if input.channel == Channel::Pos {
            pos += 1;
            if (9..20).contains(&at.hour()) {
                pos_in_hours += 1;
            }
            if at.weekday() == chrono::Weekday::Sun && at.hour() >= 13 {
                sunday_afternoon += 1;
            }
            if input.store_id.as_deref()
                == Some(sim.stores[sim.shoppers[*shopper].home_store].id.as_str())
            {
                at_home += 1;
            }
        }
    }
    let total = sim.purchase_count() as f64;
    let share = |c: &str| by_channel.get(c).copied().unwrap_or(0) as f64 / total;
    // Shoppers' own mixes vary, so the realised shares only approximate 0.60 / 0.25 / 0.15.
    assert!((0.5..0.7).contains(&share("pos")), "pos {}", share("pos"));
    assert!((0.17..0.33).contains(&share("web")), "web {}", share("web"));
    assert!((0.09..0.21).contains(&share("app")), "app {}", share("app"));
    assert!(
        pos_in_hours as f64 > 0.995 * pos as f64,
        "{pos_in_hours} of {pos} in opening hours"
    );
    assert!(sunday_afternoon as f64 <= 0.005 * pos as f64);
    let home = at_home as f64 / pos as f64;
    assert!((0.8..0.95).contains(&home), "{home} at the home store");
}

#[test]
fn december_is_busier_than_august() {
    let sim = demo();
    let mut per_month = [0usize; 12];
    for e in &sim.events {
        if let SimEvent::Purchase { at, .. } = e {
            per_month[at.month0() as usize] += 1;
        }
    }
    // The history runs Oct 2025 to Nov 2026, so both months are complete; December has fewer
    // shoppers enrolled than August but a much higher intensity.
    assert!(per_month[11] > per_month[7], "{per_month:?}");
}

#[test]
fn events_survive_the_wire() {
    let sim = demo();
    for e in sim.events.iter().take(500) {
        let json = serde_json::to_string(e).expect("serialises");
        let back: SimEvent = serde_json::from_str(&json).expect("parses back");
        assert_eq!(&back, e);
        match e {
            SimEvent::Purchase { input, .. } => {
                let wire = serde_json::to_string(input).expect("serialises");
                let parsed: PurchaseInput = serde_json::from_str(&wire).expect("API shape");
                assert_eq!(&parsed, input);
            }
            SimEvent::Refund { input, .. } => {
                let wire = serde_json::to_string(input).expect("serialises");
                let parsed: RefundInput = serde_json::from_str(&wire).expect("API shape");
                assert_eq!(&parsed, input);
            }
            SimEvent::Enrol { .. } => assert!(json.contains("\"kind\":\"enrol\"")),
        }
    }
}

#[test]
fn other_currencies_use_their_own_decimals() {
    let mut cfg = SimConfig::demo(end());
    cfg.members = 100;
    cfg.currency = "JPY".into();
    let sim = simulate(&cfg).expect("valid");
    let settings = ProgramSettings {
        currency: Currency::parse("JPY").expect("known"),
        ..ProgramSettings::default()
    };
    let mut n = 0;
    for e in &sim.events {
        if let SimEvent::Purchase { input, .. } = e {
            assert!(!input.total.contains('.'));
            input
                .validate(&settings, end())
                .expect("valid JPY purchase");
            n += 1;
        }
    }
    assert!(n > 0);
    // A EUR programme refuses them: the currency is carried, not assumed.
    let first = sim.events.iter().find_map(|e| match e {
        SimEvent::Purchase { input, .. } => Some(input),
        _ => None,
    });
    let err = first.map(|p| p.validate(&ProgramSettings::default(), end()));
    assert!(matches!(err, Some(Err(e)) if e.field == "currency"));
}

#[test]
fn bad_configurations_are_refused_without_panicking() {
    let base = SimConfig::demo(end());
    let cases: Vec<(&str, SimConfig)> = vec![
        (
            "rate_shape",
            SimConfig {
                rate_shape: 0.0,
                ..base.clone()
            },
        ),
        (
            "rate_shape",
            SimConfig {
                rate_shape: f64::NAN,
                ..base.clone()
            },
        ),
        (
            "rate_scale_days",
            SimConfig {
                rate_scale_days: -1.0,
                ..base.clone()
            },
        ),
        (
            "dropout_a",
            SimConfig {
                dropout_a: 0.0,
                ..base.clone()
            },
        ),
        (
            "dropout_b",
            SimConfig {
                dropout_b: f64::INFINITY,
                ..base.clone()
            },
        ),
        (
            "spend_p",
            SimConfig {
                spend_p: -2.0,
                ..base.clone()
            },
        ),
        (
            "spend_q",
            SimConfig {
                spend_q: 1.0,
                ..base.clone()
            },
        ),
        (
            "spend_gamma",
            SimConfig {
                spend_gamma: 0.0,
                ..base.clone()
            },
        ),
        (
            "return_rate",
            SimConfig {
                return_rate: 1.5,
                ..base.clone()
            },
        ),
        (
            "web_share",
            SimConfig {
                web_share: -0.1,
                ..base.clone()
            },
        ),
        (
            "app_share",
            SimConfig {
                app_share: f64::NAN,
                ..base.clone()
            },
        ),
        (
            "web_share + app_share",
            SimConfig {
                web_share: 0.7,
                app_share: 0.5,
                ..base.clone()
            },
        ),
        (
            "initial_share",
            SimConfig {
                initial_share: 2.0,
                ..base.clone()
            },
        ),
        (
            "currency",
            SimConfig {
                currency: "XXX".into(),
                ..base.clone()
            },
        ),
        (
            "months",
            SimConfig {
                months: 0,
                ..base.clone()
            },
        ),
        (
            "months",
            SimConfig {
                months: 1000,
                ..base.clone()
            },
        ),
        (
            "stores",
            SimConfig {
                stores: 0,
                ..base.clone()
            },
        ),
        (
            "members",
            SimConfig {
                members: MAX_MEMBERS + 1,
                ..base.clone()
            },
        ),
        (
            "purchases",
            SimConfig {
                members: 1_000_000,
                rate_scale_days: 10.0,
                ..base.clone()
            },
        ),
        (
            "months",
            SimConfig {
                end: DateTime::<Utc>::MIN_UTC,
                ..base.clone()
            },
        ),
    ];
    for (field, cfg) in cases {
        let err = simulate(&cfg).expect_err(field);
        assert!(err.contains(field), "{field}: {err}");
        assert_eq!(cfg.validate(), Err(err));
    }
}

#[test]
fn edge_configurations_still_work() {
    let base = SimConfig {
        members: 200,
        ..SimConfig::demo(end())
    };
    // Web only, everyone enrolled at the start, every order returned, one store, one month.
    let cfg = SimConfig {
        web_share: 1.0,
        app_share: 0.0,
        initial_share: 1.0,
        return_rate: 1.0,
        ..base.clone()
    };
    let sim = simulate(&cfg).expect("valid");
    assert!(sim.events.iter().all(|e| match e {
        SimEvent::Purchase { input, .. } => input.channel == Channel::Web,
        _ => true,
    }));
    assert!(sim.refund_count() > sim.purchase_count() / 2);
    let sim = simulate(&SimConfig {
        stores: 1,
        months: 1,
        members: 0,
        ..base.clone()
    })
    .expect("valid");
    assert!(sim.events.is_empty());
    let sim = simulate(&SimConfig {
        stores: 60,
        months: 1,
        ..base
    })
    .expect("valid");
    assert!(
        sim.events
            .iter()
            .all(|e| e.at() >= sim.start && e.at() <= end())
    );
    // An end with sub-second precision: events stay whole seconds inside the window.
    let end_ns = end() + chrono::Duration::nanoseconds(123_456_789);
    let sim = simulate(&SimConfig {
        end: end_ns,
        members: 100,
        ..SimConfig::demo(end_ns)
    })
    .expect("valid");
    assert!(
        sim.events
            .iter()
            .all(|e| e.at() >= sim.start && e.at() <= end_ns && e.at().nanosecond() == 0)
    );
}

#[test]
fn line_refunds_name_a_line_of_the_order() {
    let sim = demo();
    let orders = orders(sim);
    for e in &sim.events {
        let SimEvent::Refund { input, .. } = e else {
            continue;
        };
        let Some(lines) = &input.lines else { continue };
        let Some((_, SimEvent::Purchase { input: order, .. })) =
            orders.get(input.order_id.as_str())
        else {
            panic!("unknown order");
        };
        let sold: Vec<&str> = order.lines.iter().map(|l| l.sku.as_str()).collect();
        assert!(
            lines
                .iter()
                .all(|l| l.quantity == 1 && sold.contains(&l.sku.as_str()))
        );
    }
}
