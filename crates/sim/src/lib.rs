//! A simulated retailer and its shoppers' purchase history, seeded and reproducible: the same
//! [`SimConfig`] (seed included) always gives the same [`Simulation`], event for event.
//! It owns the configuration, the public truth types and the assembly of events in time order.
//!
//! # What it is for
//!
//! The demo fills a programme with it, a benchmark replays it, and analytics can be checked
//! against it: every shopper's true purchase rate, dropout probability and mean order value are
//! in [`Shopper`], so a model fitted on the events can be compared with the truth that made them.
//! Events are the wire types of `fidelis_core::event` ([`PurchaseInput`], [`RefundInput`]), so
//! they go through the same validation as live API events.
//!
//! # The model, in plain words
//!
//! This is a "buy till you die" model, the family behind Pareto/NBD and BG/NBD customer-value
//! analytics, with the gamma-gamma model for spend:
//!
//! * **Enrolment.** A share `initial_share` (40 %) of shoppers is already a member when the
//!   history starts (their enrolment is recorded at the start); the others join at uniformly
//!   random moments during the history. Nobody buys before enrolling.
//! * **How often a shopper buys.** While active, each shopper buys as a Poisson process with
//!   their own rate λ (purchases per day). Across shoppers λ follows a Gamma distribution with
//!   shape `rate_shape` and scale `rate_scale_days` (so the average λ is
//!   `rate_shape × rate_scale_days` per day). A shape below 1 means strong heterogeneity: most
//!   shoppers buy rarely and a few buy very often. Demo: shape 0.7, scale 0.1, i.e. 0.07
//!   purchases a day (about 2.1 a month) for the average shopper while active; with dropout
//!   this comes to about 1.6 purchases per member-month over the history. Individual rates are
//!   clamped at [`MAX_RATE_PER_DAY`].
//! * **Seasonality** (`seasonality`, on by default). The rate is multiplied by a weekday factor
//!   ([`WEEKDAY_FACTOR`]: busy Saturdays, quiet Sundays) and a month factor ([`MONTH_FACTOR`]:
//!   January sales, August lull, December peak). Both average 1, so over a whole year a
//!   shopper still buys λ × 365 times on average. Purchases are then placed at believable hours
//!   of their day (UTC): stores sell 09:00–20:00 (Sunday mornings only), web orders come at any
//!   hour with an evening peak, the app from early morning to late evening.
//! * **When a shopper stops for good (dropout).** Right after each purchase a shopper becomes
//!   inactive forever with probability p (as in BG/NBD). Across shoppers p follows a
//!   Beta(`dropout_a`, `dropout_b`) distribution, whose mean is `a / (a + b)`. Demo: Beta(0.5,
//!   25), mean 2 %; p varies a lot between shoppers, so many stay for years while some leave
//!   after one or two purchases (about one shopper in five leaves within the demo's 13
//!   months). Without seasonality, a shopper with rate λ and dropout p is expected to make
//!   `(1 − e^(−λ·p·t)) / p` purchases in `t` days.
//! * **How much they spend (gamma-gamma).** Each shopper has a spend parameter ν drawn from
//!   Gamma(shape `spend_q`, rate `spend_gamma`); each of their orders is worth a draw from
//!   Gamma(shape `spend_p`, rate ν), whose mean is `spend_p / ν` (that is the shopper's
//!   [`Shopper::mean_order_minor`]). Across shoppers the mean order value is
//!   `spend_p × spend_gamma / (spend_q − 1)` in major units (e.g. euros). Demo: p = 6, q = 4,
//!   γ = 25, i.e. €50 on average; a shopper's orders vary by about ±40 % around their own
//!   mean, and shoppers' means vary by about ±70 % around €50.
//! * **What is in the basket.** The drawn value is a target: lines are taken from the
//!   120-product catalogue, favouring the shopper's preferred categories
//!   ([`Shopper::affinity`]). The basket plans 1 + Poisson(1.5) lines and picks each as the
//!   closest of three candidates to an equal share of what remains, taking further lines only
//!   while they bring the total closer to the target (1 to [`MAX_ORDER_LINES`] lines, about
//!   2.3 on average; quantity mostly 1, 2 or 3 for cheap items). The order total is the exact
//!   sum of its lines, so it lands near, not on, the draw: on average about 4 % above it with
//!   the demo parameters. Targets beyond what 8 lines of the catalogue can hold are not
//!   reached.
//! * **Where.** Each purchase picks a channel from the shopper's own mix, drawn around
//!   `web_share` / `app_share` (the rest is in-store, `pos`). In-store purchases happen at the
//!   shopper's home store 85 % of the time, otherwise at any store; web and app purchases have
//!   no `store_id`.
//! * **Returns.** Each order is returned with probability `return_rate`, 1 to 25 days later
//!   (dropped if that falls after the end): the whole order (`amount` = total) or, for orders
//!   of more than one unit and 60 % of the time, one unit of one line (dearer lines are more
//!   likely to be the one returned).
//!
//! Events never fall before the start (`end` minus `months`, rounded up to the second) nor
//! after `end`; they are sorted by time, enrolments before purchases before refunds at the same
//! second. Order ids (`ord-0000000001`, …) follow time order; refund ids are `rfd-<order id>`.
//!
//! # Reproducibility
//!
//! All randomness comes from `ChaCha8Rng::seed_from_u64(seed)`: shopper *i* uses stream *i + 1*
//! of that generator, so shopper *i* is the same whatever `members` is (only order ids, which
//! are numbered across everyone, change). Nothing depends on the clock or on hash ordering.
//!
//! ```
//! use chrono::{TimeZone, Utc};
//! let end = Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 0).unwrap();
//! let sim = fidelis_sim::simulate(&fidelis_sim::SimConfig::demo(end)).unwrap();
//! assert!(sim.events.iter().all(|e| e.at() <= end));
//! ```

mod behaviour;
mod catalogue;
mod people;
#[cfg(test)]
mod tests;

pub use behaviour::{MAX_ORDER_LINES, MAX_RATE_PER_DAY, MONTH_FACTOR, WEEKDAY_FACTOR};
pub use catalogue::{CATEGORIES, Product, SimStore};

use behaviour::{Dists, RawOrder, World, to_time};
use chrono::{DateTime, Months, NaiveDate, Utc};
use fidelis_core::Currency;
use fidelis_core::event::{
    Channel, LineInput, MemberRef, PurchaseInput, RefundInput, RefundLineInput,
};
use fidelis_core::money::format_minor;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// Most shoppers one simulation may have.
pub const MAX_MEMBERS: usize = 1_000_000;
/// Longest history, in months.
pub const MAX_MONTHS: u32 = 120;
/// Most stores.
pub const MAX_STORES: usize = 1_000;
/// Most purchases a configuration may be expected to produce (before dropout), to keep a
/// mistyped parameter from eating the machine's memory.
pub const MAX_EXPECTED_PURCHASES: f64 = 20_000_000.0;

/// What to simulate. [`SimConfig::demo`] gives the defaults; the crate documentation explains
/// the model and every parameter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimConfig {
    pub seed: u64,
    /// Shoppers to create (default 2,000).
    pub members: usize,
    /// History length in calendar months (default 13); it starts `months` before `end`.
    pub months: u32,
    /// The history ends here (the caller passes "now"); no event is later.
    pub end: DateTime<Utc>,
    /// Physical stores (default 8), ids like `store-paris-01`, in several French cities.
    pub stores: usize,
    /// ISO 4217 code (default "EUR"). Catalogue prices are the EUR list reused as nominal
    /// amounts, rounded to the currency's decimals.
    pub currency: String,
    /// Shape r of the Gamma distribution of purchase rates λ (per day) across shoppers; below 1
    /// means most shoppers buy rarely and a few often. Default 0.7.
    pub rate_shape: f64,
    /// Scale of that Gamma distribution, in purchases per day: the mean λ is
    /// `rate_shape × rate_scale_days`. Default 0.1 (0.07 a day, about 2.1 a month).
    pub rate_scale_days: f64,
    /// Beta(a, b) of the per-purchase dropout probability p: after each purchase a shopper
    /// becomes inactive forever with probability p. Mean p = a / (a + b). Defaults 0.5 and 25.
    pub dropout_a: f64,
    pub dropout_b: f64,
    /// Gamma-gamma spend: an order is worth Gamma(shape p, rate ν) major units, with ν drawn per
    /// shopper from Gamma(shape q, rate γ). Mean order = p·γ / (q − 1); q must exceed 1.
    /// Defaults p = 6, q = 4, γ = 25 (€50).
    pub spend_p: f64,
    pub spend_q: f64,
    pub spend_gamma: f64,
    /// Probability an order is (partly) returned, default 0.06.
    pub return_rate: f64,
    /// Channel mix: the average shares of web and app purchases (the rest is in store).
    /// Defaults 0.25 and 0.15. Each shopper's own mix is drawn around these.
    pub web_share: f64,
    pub app_share: f64,
    /// Share of shoppers already enrolled when the history starts (default 0.4); the others
    /// enrol at uniformly random moments during it.
    pub initial_share: f64,
    /// Weekday and month patterns in the purchase rate (default true). Off, each shopper's
    /// purchases form a plain Poisson process, handy when checking estimators.
    pub seasonality: bool,
}

impl SimConfig {
    /// The demo defaults: 2,000 shoppers over 13 months ending at `end`, 8 stores, EUR.
    /// They make about 29,000 purchases and 1,650 refunds.
    pub fn demo(end: DateTime<Utc>) -> SimConfig {
        SimConfig {
            seed: 0,
            members: 2000,
            months: 13,
            end,
            stores: 8,
            currency: "EUR".to_string(),
            rate_shape: 0.7,
            rate_scale_days: 0.1,
            dropout_a: 0.5,
            dropout_b: 25.0,
            spend_p: 6.0,
            spend_q: 4.0,
            spend_gamma: 25.0,
            return_rate: 0.06,
            web_share: 0.25,
            app_share: 0.15,
            initial_share: 0.4,
            seasonality: true,
        }
    }

    /// When the history starts: `months` calendar months before `end`.
    pub fn start(&self) -> Result<DateTime<Utc>, String> {
        self.end
            .checked_sub_months(Months::new(self.months))
            .ok_or_else(|| format!("months: {} months before end is out of range", self.months))
    }

    /// The average purchase rate (per day) of an active shopper the parameters imply.
    pub fn mean_rate_per_day(&self) -> f64 {
        self.rate_shape * self.rate_scale_days
    }

    /// The average per-purchase dropout probability the parameters imply.
    pub fn mean_dropout(&self) -> f64 {
        self.dropout_a / (self.dropout_a + self.dropout_b)
    }

    /// The average order value the parameters imply, in major units (e.g. euros).
    pub fn mean_order_major(&self) -> f64 {
        self.spend_p * self.spend_gamma / (self.spend_q - 1.0)
    }

    /// Checks every field; the first problem is reported with the field's name.
    pub fn validate(&self) -> Result<(), String> {
        fn positive(name: &str, v: f64) -> Result<(), String> {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(format!("{name} must be a positive number, got {v}"))
            }
        }
        fn share(name: &str, v: f64) -> Result<(), String> {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(format!("{name} must be between 0 and 1, got {v}"))
            }
        }
        if self.members > MAX_MEMBERS {
            return Err(format!(
                "members must be at most {MAX_MEMBERS}, got {}",
                self.members
            ));
        }
        if !(1..=MAX_MONTHS).contains(&self.months) {
            return Err(format!(
                "months must be 1 to {MAX_MONTHS}, got {}",
                self.months
            ));
        }
        if !(1..=MAX_STORES).contains(&self.stores) {
            return Err(format!(
                "stores must be 1 to {MAX_STORES}, got {}",
                self.stores
            ));
        }
        Currency::parse(&self.currency).map_err(|e| format!("currency: {e}"))?;
        positive("rate_shape", self.rate_shape)?;
        positive("rate_scale_days", self.rate_scale_days)?;
        positive("dropout_a", self.dropout_a)?;
        positive("dropout_b", self.dropout_b)?;
        positive("spend_p", self.spend_p)?;
        positive("spend_q", self.spend_q)?;
        positive("spend_gamma", self.spend_gamma)?;
        if self.spend_q <= 1.0 {
            return Err(format!(
                "spend_q must be greater than 1 (else the mean order value is infinite), got {}",
                self.spend_q
            ));
        }
        share("return_rate", self.return_rate)?;
        share("web_share", self.web_share)?;
        share("app_share", self.app_share)?;
        share("initial_share", self.initial_share)?;
        if self.web_share + self.app_share > 1.0 {
            return Err(format!(
                "web_share + app_share must be at most 1, got {}",
                self.web_share + self.app_share
            ));
        }
        let start = self.start()?;
        let days = (self.end - start).num_seconds() as f64 / 86_400.0;
        let expected = self.members as f64 * self.mean_rate_per_day().min(MAX_RATE_PER_DAY) * days;
        if expected.is_nan() || expected > MAX_EXPECTED_PURCHASES {
            return Err(format!(
                "these parameters would make about {expected:.0} purchases, more than the \
                 {MAX_EXPECTED_PURCHASES} allowed: lower members, months or the purchase rate"
            ));
        }
        Dists::new(self).map(|_| ())
    }
}

/// A shopper as the simulation made them: who they are, and the truth behind their behaviour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shopper {
    /// The retailer's identifier, `cust-000001` for shopper 0; purchases carry it in `member`.
    pub external_id: String,
    /// Unique within the simulation, on reserved `example.*` domains.
    pub email: String,
    /// "First Last".
    pub name: String,
    pub first_name: String,
    pub last_name: String,
    /// E.164, from a block kept for fiction; distinct for the first 10,000 shoppers.
    pub phone: String,
    /// `None` for the one in five shoppers who did not give it.
    pub birth_date: Option<NaiveDate>,
    pub enrolled_at: DateTime<Utc>,
    /// Index into [`Simulation::stores`].
    pub home_store: usize,
    /// λ: purchases per day while active (before seasonality).
    pub rate_per_day: f64,
    /// p: probability of leaving for good right after each purchase.
    pub dropout_p: f64,
    /// The mean of this shopper's order-value distribution (`spend_p / ν`), in minor units.
    pub mean_order_minor: i64,
    /// Preference for each of [`CATEGORIES`] (same order), summing to 1.
    pub affinity: Vec<f64>,
    /// This shopper's own channel mix (the rest is in store).
    pub web_share: f64,
    pub app_share: f64,
    /// When they left for good: the time of their last purchase, if they dropped out before
    /// the end. `None` means still active at the end.
    pub dropped_out_at: Option<DateTime<Utc>>,
    /// Purchases they made in the history.
    pub orders: u32,
    /// How many of those purchases were (partly) refunded.
    pub refunds: u32,
}

/// One thing that happened, in the shape the API receives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SimEvent {
    /// The shopper joined the programme (at their `enrolled_at`); `shopper` indexes
    /// [`Simulation::shoppers`].
    Enrol { at: DateTime<Utc>, shopper: usize },
    Purchase {
        at: DateTime<Utc>,
        shopper: usize,
        input: PurchaseInput,
    },
    Refund {
        at: DateTime<Utc>,
        shopper: usize,
        input: RefundInput,
    },
}

impl SimEvent {
    pub fn at(&self) -> DateTime<Utc> {
        match self {
            SimEvent::Enrol { at, .. }
            | SimEvent::Purchase { at, .. }
            | SimEvent::Refund { at, .. } => *at,
        }
    }

    /// Index into [`Simulation::shoppers`] of who the event is about.
    pub fn shopper(&self) -> usize {
        match self {
            SimEvent::Enrol { shopper, .. }
            | SimEvent::Purchase { shopper, .. }
            | SimEvent::Refund { shopper, .. } => *shopper,
        }
    }

    /// Orders events that share a second: enrolments, then purchases, then refunds.
    fn rank(&self) -> u8 {
        match self {
            SimEvent::Enrol { .. } => 0,
            SimEvent::Purchase { .. } => 1,
            SimEvent::Refund { .. } => 2,
        }
    }
}

/// A simulated retailer and everything its shoppers did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Simulation {
    /// First instant of the history (`end` minus `months`, rounded up to the second).
    pub start: DateTime<Utc>,
    /// Last instant of the history (the configured `end`).
    pub end: DateTime<Utc>,
    pub currency: String,
    pub stores: Vec<SimStore>,
    pub catalogue: Vec<Product>,
    pub shoppers: Vec<Shopper>,
    /// Every event, sorted by time (ties: enrolments, purchases, refunds, then creation order).
    pub events: Vec<SimEvent>,
}

impl Simulation {
    pub fn purchase_count(&self) -> usize {
        self.events
            .iter()
            .filter(|e| matches!(e, SimEvent::Purchase { .. }))
            .count()
    }

    pub fn refund_count(&self) -> usize {
        self.events
            .iter()
            .filter(|e| matches!(e, SimEvent::Refund { .. }))
            .count()
    }
}

/// Runs the simulation. Fails only when `cfg` does not pass [`SimConfig::validate`], with the
/// same message; never panics.
pub fn simulate(cfg: &SimConfig) -> Result<Simulation, String> {
    cfg.validate()?;
    let currency = Currency::parse(&cfg.currency).map_err(|e| format!("currency: {e}"))?;
    let start = cfg.start()?;
    // Whole seconds inside [start, end].
    let start_s = start.timestamp() + i64::from(start.timestamp_subsec_nanos() > 0);
    let end_s = cfg.end.timestamp();
    if start_s >= end_s {
        return Err("the history is empty: start is not before end".to_string());
    }

    let stores = catalogue::stores(cfg.stores);
    let products = catalogue::catalogue(currency.minor_per_unit());
    let world = World {
        cfg,
        start: start_s,
        end: end_s,
        minor_per_unit: currency.minor_per_unit(),
        store_weights: stores.iter().map(catalogue::store_weight).collect(),
        products: &products,
        by_category: catalogue::by_category(&products),
        dists: Dists::new(cfg)?,
    };

    let mut shoppers = Vec::with_capacity(cfg.members);
    let mut orders: Vec<RawOrder> = Vec::new();
    let mut emails = HashSet::with_capacity(cfg.members);
    for i in 0..cfg.members {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        rng.set_stream(i as u64 + 1);
        let (shopper, own) = behaviour::live(&mut rng, i, &world, &mut emails);
        shoppers.push(shopper);
        orders.extend(own);
    }
    // Order ids follow time order; the sort is stable, so ties keep shopper order.
    orders.sort_by_key(|o| (o.at, o.shopper));

    let exponent = currency.exponent();
    let mut events = Vec::with_capacity(shoppers.len() + orders.len() * 107 / 100);
    for (i, s) in shoppers.iter().enumerate() {
        events.push(SimEvent::Enrol {
            at: s.enrolled_at,
            shopper: i,
        });
    }
    let mut refunds = Vec::new();
    for (n, o) in orders.iter().enumerate() {
        let order_id = format!("ord-{:010}", n + 1);
        let external_id = shoppers.get(o.shopper).map(|s| s.external_id.clone());
        let lines: Vec<LineInput> = o
            .lines
            .iter()
            .map(|&(p, quantity)| LineInput {
                sku: products[p].sku.clone(),
                category: Some(products[p].category.clone()),
                quantity,
                unit_price: format_minor(products[p].unit_price_minor, exponent),
            })
            .collect();
        if let Some(r) = &o.refund {
            let (amount, refund_lines) = match r.line.and_then(|l| o.lines.get(l)) {
                Some(&(p, _)) => (
                    None,
                    Some(vec![RefundLineInput {
                        sku: products[p].sku.clone(),
                        quantity: 1,
                    }]),
                ),
                None => (Some(format_minor(o.total, exponent)), None),
            };
            refunds.push(SimEvent::Refund {
                at: to_time(r.at),
                shopper: o.shopper,
                input: RefundInput {
                    order_id: order_id.clone(),
                    refund_id: Some(format!("rfd-{order_id}")),
                    amount,
                    lines: refund_lines,
                    occurred_at: Some(fidelis_core::time::format(to_time(r.at))),
                },
            });
        }
        events.push(SimEvent::Purchase {
            at: to_time(o.at),
            shopper: o.shopper,
            input: PurchaseInput {
                member: MemberRef {
                    id: None,
                    external_id,
                },
                order_id,
                occurred_at: Some(fidelis_core::time::format(to_time(o.at))),
                channel: o.channel,
                store_id: match o.channel {
                    Channel::Pos => o.store.and_then(|s| stores.get(s)).map(|s| s.id.clone()),
                    Channel::Web | Channel::App => None,
                },
                currency: cfg.currency.clone(),
                total: format_minor(o.total, exponent),
                lines,
            },
        });
    }
    events.extend(refunds);
    events.sort_by_key(|e| (e.at(), e.rank()));

    Ok(Simulation {
        start: to_time(start_s),
        end: cfg.end,
        currency: cfg.currency.clone(),
        stores,
        catalogue: products,
        shoppers,
        events,
    })
}
