//! How one shopper lives: enrolment, the thinned Poisson purchase process with BG dropout,
//! seasonality and opening hours, basket building around a gamma-gamma target, and returns.
//! Times are whole seconds since the Unix epoch here; `lib.rs` turns them into wire events.

use crate::catalogue::{CATEGORY_POPULARITY, Product};
use crate::people::{self, pick_weighted};
use crate::{Shopper, SimConfig};
use chrono::{DateTime, Datelike, Utc};
use fidelis_core::event::Channel;
use rand::Rng;
use rand_distr::{Beta, Distribution, Gamma, Poisson};
use std::collections::HashSet;

pub(crate) const DAY: i64 = 86_400;

/// Upper bound on a shopper's purchase rate (purchases per day); draws above it are clamped.
/// It only bounds the work per shopper: with the demo parameters no draw comes near it.
pub const MAX_RATE_PER_DAY: f64 = 5.0;
/// Most lines in one simulated order.
pub const MAX_ORDER_LINES: usize = 8;
/// Purchase intensity by weekday, Monday first (mean 1): Saturday busy, Sunday mostly closed.
pub const WEEKDAY_FACTOR: [f64; 7] = [0.9, 0.9, 0.95, 1.0, 1.15, 1.6, 0.5];
/// Purchase intensity by month, January first (mean 1): winter sales, August lull, December peak.
pub const MONTH_FACTOR: [f64; 12] = [
    1.1, 0.85, 0.9, 0.95, 0.95, 1.0, 1.05, 0.85, 0.95, 0.95, 1.05, 1.4,
];
const MAX_SEASON: f64 = 1.6 * 1.4;

/// Weight of each hour of the day (UTC) by channel. Stores open 09:00-20:00, Sunday mornings only.
const POS_HOURS: [u32; 24] = [
    0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 5, 7, 9, 8, 7, 8, 9, 10, 9, 6, 0, 0, 0, 0,
];
const POS_SUNDAY_HOURS: [u32; 24] = [
    0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 6, 7, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];
const WEB_HOURS: [u32; 24] = [
    2, 1, 1, 1, 1, 1, 2, 3, 4, 5, 5, 6, 7, 6, 6, 6, 6, 7, 8, 9, 11, 12, 10, 5,
];
const APP_HOURS: [u32; 24] = [
    1, 0, 0, 0, 0, 0, 1, 3, 5, 5, 5, 6, 8, 6, 5, 5, 6, 8, 9, 10, 11, 10, 7, 3,
];

/// The distributions, built once from a validated configuration.
pub(crate) struct Dists {
    rate: Gamma<f64>,
    dropout: Beta<f64>,
    /// ν, the shopper's spend "rate" (gamma-gamma): Gamma(shape q, rate γ).
    nu: Gamma<f64>,
    /// Gamma(p, 1): one order's value is this draw divided by ν.
    order: Gamma<f64>,
    /// Gamma(0.4, 1): category affinities (a Dirichlet, so most shoppers favour a few categories).
    affinity: Gamma<f64>,
    /// Poisson(1.5): lines an order plans beyond its first.
    extra_lines: Poisson<f64>,
    /// Per-shopper channel mix: Dirichlet with these Gamma parts (None for a share of zero).
    channel: [Option<Gamma<f64>>; 3],
}

/// How concentrated shoppers' channel mixes are around the configured shares (higher = closer).
const CHANNEL_CONCENTRATION: f64 = 3.0;

impl Dists {
    pub(crate) fn new(cfg: &SimConfig) -> Result<Dists, String> {
        let gamma = |what: &str, shape: f64, scale: f64| {
            Gamma::new(shape, scale).map_err(|e| format!("{what}: Gamma({shape}, {scale}): {e}"))
        };
        let pos_share = (1.0 - cfg.web_share - cfg.app_share).max(0.0);
        let part = |share: f64, what: &str| -> Result<Option<Gamma<f64>>, String> {
            if share > 0.0 {
                gamma(what, CHANNEL_CONCENTRATION * share, 1.0).map(Some)
            } else {
                Ok(None)
            }
        };
        Ok(Dists {
            rate: gamma(
                "rate_shape/rate_scale_days",
                cfg.rate_shape,
                cfg.rate_scale_days,
            )?,
            dropout: Beta::new(cfg.dropout_a, cfg.dropout_b).map_err(|e| {
                format!(
                    "dropout_a/dropout_b: Beta({}, {}): {e}",
                    cfg.dropout_a, cfg.dropout_b
                )
            })?,
            nu: gamma("spend_q/spend_gamma", cfg.spend_q, 1.0 / cfg.spend_gamma)?,
            order: gamma("spend_p", cfg.spend_p, 1.0)?,
            affinity: gamma("affinity", 0.4, 1.0)?,
            extra_lines: Poisson::new(1.5).map_err(|e| format!("extra lines: {e}"))?,
            channel: [
                part(pos_share, "pos share")?,
                part(cfg.web_share, "web_share")?,
                part(cfg.app_share, "app_share")?,
            ],
        })
    }
}

/// Everything a shopper's life needs that is the same for all shoppers.
pub(crate) struct World<'a> {
    pub cfg: &'a SimConfig,
    pub start: i64,
    pub end: i64,
    pub minor_per_unit: i64,
    pub store_weights: Vec<f64>,
    pub products: &'a [Product],
    pub by_category: Vec<Vec<usize>>,
    pub dists: Dists,
}

/// One purchase before it gets its order id.
#[derive(Debug, Clone)]
pub(crate) struct RawOrder {
    pub at: i64,
    pub shopper: usize,
    pub channel: Channel,
    pub store: Option<usize>,
    /// (product index, quantity); one line per product.
    pub lines: Vec<(usize, i64)>,
    pub total: i64,
    pub refund: Option<RawRefund>,
}

/// A return: the whole order (`line: None`) or one unit of one line.
#[derive(Debug, Clone)]
pub(crate) struct RawRefund {
    pub at: i64,
    pub line: Option<usize>,
}

pub(crate) fn to_time(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Monday = 0.
fn weekday(secs: i64) -> usize {
    // 1970-01-01 was a Thursday.
    (secs.div_euclid(DAY) + 3).rem_euclid(7) as usize
}

/// The seasonal multiplier of the purchase rate at `secs` (mean about 1 over a year).
pub(crate) fn season(secs: i64) -> f64 {
    let month = to_time(secs).month0() as usize;
    WEEKDAY_FACTOR[weekday(secs)] * MONTH_FACTOR[month % 12]
}

fn hours_for(channel: Channel, secs: i64) -> &'static [u32; 24] {
    match channel {
        Channel::Pos if weekday(secs) == 6 => &POS_SUNDAY_HOURS,
        Channel::Pos => &POS_HOURS,
        Channel::Web => &WEB_HOURS,
        Channel::App => &APP_HOURS,
    }
}

/// Moves `raw` to a believable time of its own UTC day for the channel, staying within
/// `[lo, hi]`; keeps `raw` itself when no such time turns up (first or last day of a window).
fn place<R: Rng>(rng: &mut R, raw: i64, channel: Channel, lo: i64, hi: i64) -> i64 {
    let day_start = raw - raw.rem_euclid(DAY);
    let hours = hours_for(channel, raw);
    for _ in 0..6 {
        let hour = pick_weighted(rng, hours.iter().map(|&w| f64::from(w))) as i64;
        let t = day_start + hour * 3600 + rng.random_range(0..3600);
        if (lo..=hi).contains(&t) {
            return t;
        }
    }
    raw
}

fn quantity<R: Rng>(rng: &mut R, unit_price: i64, minor_per_unit: i64) -> i64 {
    let x: f64 = rng.random();
    let (two, three) = if unit_price < 15 * minor_per_unit {
        (0.65, 0.90)
    } else {
        (0.90, 0.98)
    };
    if x < two {
        1
    } else if x < three {
        2
    } else {
        3
    }
}

/// How far `value` is from `aim`, counting overshoot at 1.5 times (a basket that is over its
/// target cannot be brought back, one that is under can take another line).
fn miss(aim: i64, value: i64) -> i64 {
    let d = value.saturating_sub(aim);
    if d > 0 {
        d.saturating_add(d / 2)
    } else {
        d.saturating_abs()
    }
}

/// Lines whose sum lands near `target` (minor units). The basket plans 1 + Poisson(1.5) lines
/// (at most [`MAX_ORDER_LINES`]) and aims each at an equal share of what remains, choosing the
/// closest of three candidates from the shopper's categories. After the first, a line is only
/// taken when it brings the total closer to the target; two refusals end the basket.
/// Products drawn twice add to the same line.
fn basket<R: Rng>(rng: &mut R, w: &World, affinity: &[f64], target: i64) -> Vec<(usize, i64)> {
    let planned = (1 + w.dists.extra_lines.sample(rng) as usize).min(MAX_ORDER_LINES);
    let mut lines: Vec<(usize, i64)> = Vec::new();
    let mut sum: i64 = 0;
    let mut refused = 0;
    while lines.len() < MAX_ORDER_LINES && refused < 2 {
        let remaining = target.saturating_sub(sum);
        let left = planned.saturating_sub(lines.len()).max(1) as i64;
        let aim = remaining / left;
        let mut best: Option<(usize, i64, i64)> = None;
        for _ in 0..3 {
            let cat = if rng.random::<f64>() < 0.85 {
                pick_weighted(rng, affinity.iter().copied())
            } else {
                pick_weighted(rng, CATEGORY_POPULARITY.iter().copied())
            };
            let Some(list) = w.by_category.get(cat).filter(|l| !l.is_empty()) else {
                continue;
            };
            let product = list[rng.random_range(0..list.len())];
            let price = w.products[product].unit_price_minor;
            let qty = quantity(rng, price, w.minor_per_unit);
            let m = miss(aim, price.saturating_mul(qty));
            if best.is_none_or(|(_, _, b)| m < b) {
                best = Some((product, qty, m));
            }
        }
        let Some((product, qty, _)) = best else { break };
        let value = w.products[product].unit_price_minor.saturating_mul(qty);
        if !lines.is_empty() && miss(remaining, value) >= miss(remaining, 0) {
            refused += 1;
            continue;
        }
        match lines.iter_mut().find(|(p, _)| *p == product) {
            Some(line) => line.1 += qty,
            None => lines.push((product, qty)),
        }
        sum = sum.saturating_add(value);
    }
    lines
}

/// Draws shopper `index` and their whole history. `taken` holds the e-mails already given out.
pub(crate) fn live<R: Rng>(
    rng: &mut R,
    index: usize,
    w: &World,
    taken: &mut HashSet<String>,
) -> (Shopper, Vec<RawOrder>) {
    let cfg = w.cfg;
    let (first_name, last_name) = people::name(rng);
    let email = people::email(rng, &first_name, &last_name, taken);
    let birth_date = people::birth_date(rng, to_time(w.end).date_naive());

    let enrolled = if rng.random::<f64>() < cfg.initial_share {
        w.start
    } else {
        let raw = rng.random_range(w.start..=w.end);
        let channel = if rng.random::<f64>() < 0.65 {
            Channel::Pos
        } else {
            Channel::Web
        };
        place(rng, raw, channel, w.start, w.end)
    };
    let home_store = pick_weighted(rng, w.store_weights.iter().copied());

    let rate_per_day = w.dists.rate.sample(rng).min(MAX_RATE_PER_DAY);
    let dropout_p = w.dists.dropout.sample(rng).clamp(0.0, 1.0);
    let nu = w.dists.nu.sample(rng);
    let mean_order_major = cfg.spend_p / nu;
    let mpu = w.minor_per_unit as f64;

    let raw_affinity: Vec<f64> = CATEGORY_POPULARITY
        .iter()
        .map(|p| p * w.dists.affinity.sample(rng))
        .collect();
    let affinity = normalise(&raw_affinity, &CATEGORY_POPULARITY);
    let parts: Vec<f64> = w
        .dists
        .channel
        .iter()
        .map(|g| g.as_ref().map_or(0.0, |g| g.sample(rng)))
        .collect();
    let configured = [
        (1.0 - cfg.web_share - cfg.app_share).max(0.0),
        cfg.web_share,
        cfg.app_share,
    ];
    let channel_mix = normalise(&parts, &configured);

    // The purchase process: a Poisson process of rate λ·season(t), drawn by thinning a process
    // of rate λ·max(season); after each purchase the shopper leaves for good with probability p.
    let smax = if cfg.seasonality { MAX_SEASON } else { 1.0 };
    let per_sec = rate_per_day * smax / DAY as f64;
    let mut orders = Vec::new();
    let mut t = enrolled as f64;
    let horizon = w.end as f64;
    let mut dropped = false;
    while per_sec > 0.0 && t <= horizon {
        let u: f64 = rng.random();
        t += -(1.0 - u).ln() / per_sec;
        if t.is_nan() || t > horizon {
            break;
        }
        let raw = t as i64;
        if cfg.seasonality && rng.random::<f64>() * smax >= season(raw) {
            continue;
        }
        let channel = [Channel::Pos, Channel::Web, Channel::App]
            [pick_weighted(rng, channel_mix.iter().copied())];
        let at = place(rng, raw, channel, enrolled, w.end);
        let store = match channel {
            Channel::Pos if rng.random::<f64>() < 0.85 => Some(home_store),
            Channel::Pos => Some(pick_weighted(rng, w.store_weights.iter().copied())),
            _ => None,
        };
        let value_major = w.dists.order.sample(rng) / nu;
        let target = (value_major * mpu).round().clamp(1.0, 1e12) as i64;
        let lines = basket(rng, w, &affinity, target);
        if lines.is_empty() {
            continue; // only with an empty catalogue
        }
        let total = lines
            .iter()
            .map(|&(p, q)| w.products[p].unit_price_minor.saturating_mul(q))
            .fold(0i64, i64::saturating_add);
        orders.push(RawOrder {
            at,
            shopper: index,
            channel,
            store,
            lines,
            total,
            refund: None,
        });
        if rng.random::<f64>() < dropout_p {
            dropped = true;
            break;
        }
    }
    // Placing purchases in opening hours can swap two on the same day; keep them in time order.
    orders.sort_by_key(|o| o.at);
    let dropped_out_at = if dropped {
        orders.last().map(|o| to_time(o.at))
    } else {
        None
    };

    let mut refunds = 0;
    for order in &mut orders {
        if rng.random::<f64>() >= cfg.return_rate {
            continue;
        }
        let delay_days: i64 = rng.random_range(1..=25);
        let raw = order.at + delay_days * DAY;
        let single_unit = order.lines.len() == 1 && order.lines.first().is_some_and(|l| l.1 == 1);
        let line = if single_unit || rng.random::<f64>() < 0.4 {
            None
        } else {
            // Dearer items are the ones people bring back.
            Some(pick_weighted(
                rng,
                order
                    .lines
                    .iter()
                    .map(|&(p, _)| w.products[p].unit_price_minor as f64),
            ))
        };
        if raw > w.end {
            continue;
        }
        let at = place(rng, raw, order.channel, order.at + 1, w.end);
        order.refund = Some(RawRefund { at, line });
        refunds += 1;
    }

    let shopper = Shopper {
        external_id: format!("cust-{:06}", index + 1),
        name: format!("{first_name} {last_name}"),
        first_name,
        last_name,
        email,
        phone: people::phone(index),
        birth_date,
        enrolled_at: to_time(enrolled),
        home_store,
        rate_per_day,
        dropout_p,
        mean_order_minor: (mean_order_major * mpu).round().clamp(0.0, 1e15) as i64,
        affinity,
        web_share: channel_mix[1],
        app_share: channel_mix[2],
        dropped_out_at,
        orders: u32::try_from(orders.len()).unwrap_or(u32::MAX),
        refunds,
    };
    (shopper, orders)
}

/// `weights` scaled to sum to 1, or `fallback` when they sum to nothing usable.
fn normalise(weights: &[f64], fallback: &[f64]) -> Vec<f64> {
    let sum: f64 = weights.iter().sum();
    if sum.is_finite() && sum > 0.0 {
        weights.iter().map(|w| w / sum).collect()
    } else {
        let total: f64 = fallback.iter().sum();
        fallback
            .iter()
            .map(|w| if total > 0.0 { w / total } else { 0.0 })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seasonal_factors_average_one() {
        assert!((WEEKDAY_FACTOR.iter().sum::<f64>() / 7.0 - 1.0).abs() < 1e-9);
        assert!((MONTH_FACTOR.iter().sum::<f64>() / 12.0 - 1.0).abs() < 1e-9);
        let max_w = WEEKDAY_FACTOR.iter().copied().fold(0.0, f64::max);
        let max_m = MONTH_FACTOR.iter().copied().fold(0.0, f64::max);
        assert!((max_w * max_m - MAX_SEASON).abs() < 1e-9);
    }

    #[test]
    fn weekdays_are_counted_from_monday() {
        // 2026-11-22 is a Sunday, 2026-11-23 a Monday.
        let sunday = DateTime::parse_from_rfc3339("2026-11-22T10:00:00Z").map(|t| t.timestamp());
        assert_eq!(sunday.map(weekday), Ok(6));
        assert_eq!(sunday.map(|s| weekday(s + DAY)), Ok(0));
    }
}
