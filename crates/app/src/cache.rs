//! A short-lived cache of each tenant's programme settings, read on every event. Settings
//! changed through this node are seen at once; changes made through another node are seen
//! within [`PROGRAM_TTL`]. It is only a cache: the database stays the truth.

use fidelis_core::ProgramSettings;
use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

pub const PROGRAM_TTL: Duration = Duration::from_secs(2);

#[derive(Default)]
pub struct ProgramCache {
    entries: RwLock<HashMap<String, (Instant, ProgramSettings)>>,
}

impl ProgramCache {
    pub fn get(&self, tenant: &str) -> Option<ProgramSettings> {
        let map = self.entries.read().ok()?;
        let (at, s) = map.get(tenant)?;
        (at.elapsed() < PROGRAM_TTL).then(|| s.clone())
    }

    pub fn put(&self, tenant: &str, settings: ProgramSettings) {
        if let Ok(mut map) = self.entries.write() {
            map.insert(tenant.to_string(), (Instant::now(), settings));
        }
    }

    pub fn forget(&self, tenant: &str) {
        if let Ok(mut map) = self.entries.write() {
            map.remove(tenant);
        }
    }
}
