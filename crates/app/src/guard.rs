//! A limit on guessing coupon codes: refusals that guessing produces (an unknown or malformed
//! code) are counted per API key in a token bucket (GCRA: a burst, then a steady rate). Over
//! the limit, every coupon request of that key is refused with 429 and a `Retry-After` until
//! the bucket refills, and the event is logged.
//!
//! The bucket lives in this node's memory: with several nodes a key gets the burst on each
//! node. That is acceptable for its purpose (codes carry 64 random bits, so even many nodes
//! times the rate leaves guessing hopeless); it is not a billing-grade quota.

use std::collections::HashMap;
use std::sync::Mutex;

/// Guessing refusals a key may make at once.
pub const GUESS_BURST: i64 = 20;
/// One more refusal is allowed every this many seconds (10 a minute).
pub const GUESS_INTERVAL_SECS: i64 = 6;
/// Keys tracked at most; beyond it, refilled buckets are dropped first.
pub const MAX_TRACKED_KEYS: usize = 10_000;

const INTERVAL_US: i64 = GUESS_INTERVAL_SECS * 1_000_000;

#[derive(Default)]
pub struct GuessLimiter {
    /// Per key: the theoretical arrival time (micros) of the next refusal at the steady rate.
    tat: Mutex<HashMap<String, i64>>,
}

impl GuessLimiter {
    /// `Err(seconds)` when `key` is over the limit at `now_us`: seconds until it may try again.
    pub fn check(&self, key: &str, now_us: i64) -> Result<(), u64> {
        let Ok(map) = self.tat.lock() else {
            return Ok(());
        };
        let Some(&tat) = map.get(key) else {
            return Ok(());
        };
        let ahead = tat - now_us;
        let allowed = (GUESS_BURST - 1) * INTERVAL_US;
        if ahead > allowed {
            let wait_us = ahead - allowed;
            return Err(u64::try_from((wait_us + 999_999) / 1_000_000)
                .unwrap_or(1)
                .max(1));
        }
        Ok(())
    }

    /// Counts one guessing refusal of `key` at `now_us`.
    pub fn record(&self, key: &str, now_us: i64) {
        let Ok(mut map) = self.tat.lock() else {
            return;
        };
        if map.len() >= MAX_TRACKED_KEYS && !map.contains_key(key) {
            map.retain(|_, t| *t > now_us);
            if map.len() >= MAX_TRACKED_KEYS {
                // Every tracked key is mid-burst: forget them rather than grow without bound.
                map.clear();
            }
        }
        let t = map.entry(key.to_string()).or_insert(now_us);
        *t = (*t).max(now_us) + INTERVAL_US;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_one_guess_per_interval() {
        let g = GuessLimiter::default();
        let t0 = 1_000_000_000;
        for _ in 0..GUESS_BURST {
            assert_eq!(g.check("k", t0), Ok(()));
            g.record("k", t0);
        }
        assert_eq!(g.check("k", t0), Err(GUESS_INTERVAL_SECS as u64));
        assert_eq!(g.check("other", t0), Ok(()), "keys are counted apart");
        assert!(g.check("k", t0 + INTERVAL_US - 1).is_err());
        assert_eq!(g.check("k", t0 + INTERVAL_US), Ok(()));
    }

    #[test]
    fn tracked_keys_are_bounded() {
        let g = GuessLimiter::default();
        for i in 0..(MAX_TRACKED_KEYS + 5) {
            g.record(&format!("k{i}"), 0);
        }
        let n = g.tat.lock().map(|m| m.len()).unwrap_or(0);
        assert!(n <= MAX_TRACKED_KEYS);
    }
}
