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
    pub fn get(&self, key: &str) -> Option<V> {
        let map = self.entries.read().ok()?;
        let (at, v) = map.get(key)?;
        (at.elapsed() < TTL).then(|| v.clone())
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
    fn a_full_cache_starts_again_rather_than_grow() {
        let c = TtlCache::default();
        for i in 0..MAX_ENTRIES + 5 {
            c.put(&i.to_string(), i);
        }
        assert!(c.entries.read().expect("cache lock").len() <= MAX_ENTRIES);
        assert_eq!(c.get(&(MAX_ENTRIES + 4).to_string()), Some(MAX_ENTRIES + 4));
    }
}
