//! Counters of the read requests a [`Store`](super::Store) sends to etcd:
//! what benchmarks and tests read to tell a controller that reads its
//! caches from one that lists etcd on every pass.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Read requests sent through one store and all its clones (a fenced copy
/// counts into the same set).
#[derive(Debug, Default)]
pub struct StoreStats {
    /// Read requests: every range request (each page of a listing, each
    /// count-only revision read, leader and counter reads) and every
    /// read-only transaction (an object's get reads spec and status in
    /// one).
    reads: AtomicU64,
    /// Listings ([`Store::list`](super::Store::list)) by kind plural, each
    /// counted once however many pages it took. Watch relists are counted
    /// in their [`WatchStats`](super::WatchStats), not here.
    lists: Mutex<BTreeMap<&'static str, u64>>,
}

impl StoreStats {
    /// Read requests so far.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// Listings of kind `plural` so far.
    pub fn lists(&self, plural: &str) -> u64 {
        self.lists.lock().unwrap_or_else(|p| p.into_inner()).get(plural).copied().unwrap_or(0)
    }

    pub(crate) fn read(&self) {
        self.reads.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn listed(&self, plural: &'static str) {
        *self.lists.lock().unwrap_or_else(|p| p.into_inner()).entry(plural).or_default() += 1;
    }
}
