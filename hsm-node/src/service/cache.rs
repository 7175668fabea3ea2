//! An in-memory cache of unsealed, parsed keys, so that a crypto operation
//! touches neither the database nor AES-GCM nor a key parser.
//!
//! Invariant: the cache never serves a state older than the last committed
//! write that finished invalidating. Writers commit, bump `epoch`, then
//! remove the entry; readers note `epoch` before reading the store and
//! insert only if it has not moved (checked under the map lock), so a slow
//! reader cannot put back what a writer just invalidated.

use crate::keystore::Loaded;
use crate::store::VersionRecord;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// A key version ready for use.
pub struct CachedKey {
    pub version: String,
    pub record: VersionRecord,
    pub loaded: Loaded,
}

/// Cached entries of one key name: the current version and the versions
/// loaded so far.
#[derive(Default)]
struct NameEntry {
    current: Option<Arc<CachedKey>>,
    versions: HashMap<String, Arc<CachedKey>>,
}

pub struct KeyCache {
    max_names: usize,
    epoch: AtomicU64,
    map: RwLock<HashMap<String, NameEntry>>,
}

fn key(p: &str, name: &str) -> String {
    let mut k = String::with_capacity(p.len() + name.len() + 1);
    k.push_str(p);
    k.push('\0');
    k.push_str(name);
    k
}

impl KeyCache {
    pub fn new(max_names: usize) -> KeyCache {
        KeyCache {
            max_names,
            epoch: AtomicU64::new(0),
            map: RwLock::new(HashMap::new()),
        }
    }

    /// The epoch to pass to `insert` for data read from the store after now.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    pub fn get(&self, p: &str, name: &str, version: Option<&str>) -> Option<Arc<CachedKey>> {
        let m = self.map.read().ok()?;
        let e = m.get(&key(p, name))?;
        match version {
            None => e.current.clone(),
            Some(v) => e.versions.get(v).cloned(),
        }
    }

    /// Caches a key read at `epoch`; `is_current` when it was read as the
    /// name's current version.
    pub fn insert(&self, p: &str, name: &str, epoch: u64, is_current: bool, k: Arc<CachedKey>) {
        let Ok(mut m) = self.map.write() else { return };
        if self.epoch.load(Ordering::SeqCst) != epoch {
            return;
        }
        if m.len() >= self.max_names {
            // Crude but bounded: start over rather than track recency.
            m.clear();
        }
        let e = m.entry(key(p, name)).or_default();
        if is_current {
            e.current = Some(k.clone());
        }
        e.versions.insert(k.version.clone(), k);
    }

    /// Forgets a name after a committed change to it.
    pub fn invalidate(&self, p: &str, name: &str) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut m) = self.map.write() {
            m.remove(&key(p, name));
        }
    }

    /// Forgets everything (zeroization).
    pub fn clear(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut m) = self.map.write() {
            m.clear();
        }
    }
}
