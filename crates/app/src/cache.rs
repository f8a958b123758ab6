//! Short-lived caches of what every request reads: each tenant's programme settings, and the
//! API key behind each secret. Changes made through this node are seen at once; changes made
//! through another node are seen within [`TTL`]. They are only caches: the database stays the
//! truth.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

/// How long an entry is trusted without asking the database again.
pub const TTL: Duration = Duration::from_secs(2);

/// Entries a cache holds at most; past that it starts again empty (keys and tenants are few,
/// so this only bounds what a flood of made-up secrets could make it hold).
const MAX_ENTRIES: usize = 10_000;

pub struct TtlCache<V> {
    entries: RwLock<HashMap<String, (Instant, V)>>,
}

impl<V> Default for TtlCache<V> {
    fn default() -> Self {
        TtlCache {
            entries: RwLock::new(HashMap::new()),
        }
    }
}

impl<V: Clone> TtlCache<V> {
    /// The entry, if fresh. When it has just gone stale, the first caller gets `None` (and
    /// reads the database, then [`TtlCache::put`]s), while the entry is trusted for one more
    /// [`TTL`] by every other caller meanwhile: a thousand requests arriving during that one
    /// read used to read the database a thousand times.
    pub fn get(&self, key: &str) -> Option<V> {
        {
            let map = self.entries.read().ok()?;
            let (at, v) = map.get(key)?;
            if at.elapsed() < TTL {
                return Some(v.clone());
            }
        }
        let mut map = self.entries.write().ok()?;
        let (at, v) = map.get_mut(key)?;
        if at.elapsed() < TTL {
            // Another caller claimed the refresh meanwhile.
            return Some(v.clone());
        }
        *at = Instant::now();
        None
    }

    pub fn put(&self, key: &str, value: V) {
        if let Ok(mut map) = self.entries.write() {
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
            map.insert(key.to_string(), (Instant::now(), value));
        }
    }

    pub fn forget(&self, key: &str) {
        if let Ok(mut map) = self.entries.write() {
            map.remove(key);
        }
    }

    pub fn clear(&self) {
        if let Ok(mut map) = self.entries.write() {
            map.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_served_until_forgotten_or_cleared() {
        let c = TtlCache::default();
        assert_eq!(c.get("a"), None::<i32>);
        c.put("a", 1);
        c.put("b", 2);
        assert_eq!(c.get("a"), Some(1));
        c.forget("a");
        assert_eq!(c.get("a"), None);
        assert_eq!(c.get("b"), Some(2));
        c.clear();
        assert_eq!(c.get("b"), None);
    }

    #[test]
    fn a_stale_entry_is_read_again_by_one_caller_and_served_to_the_others() {
        let c = TtlCache::default();
        c.put("a", 1);
        if let Ok(mut map) = c.entries.write() {
            map.get_mut("a").expect("entry").0 -= TTL;
        }
        assert_eq!(c.get("a"), None, "the first caller reads the database");
        assert_eq!(c.get("a"), Some(1), "the others are served meanwhile");
        c.put("a", 2);
        assert_eq!(c.get("a"), Some(2));
    }

    #[test]
    fn a_full_cache_starts_again_rather_than_grow() {
        let c = TtlCache::default();
        for i in 0..MAX_ENTRIES + 5 {
            c.put(&i.to_string(), i);
        }
        assert!(c.entries.read().expect("cache lock").len() <= MAX_ENTRIES);
        assert_eq!(c.get(&(MAX_ENTRIES + 4).to_string()), Some(MAX_ENTRIES + 4));
    }
}
