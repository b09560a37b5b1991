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
    /// Listings ([`Store::list`](super::Store::list)) by kind plural and
    /// whether they listed the whole kind (no prefix), each counted once
    /// however many pages it took. Watch relists are counted in their
    /// [`WatchStats`](super::WatchStats), not here.
    lists: Mutex<BTreeMap<(&'static str, bool), u64>>,
}

impl StoreStats {
    /// Read requests so far.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// Listings of kind `plural` so far (whole or under a prefix).
    pub fn lists(&self, plural: &str) -> u64 {
        let lists = self.lists.lock().unwrap_or_else(|p| p.into_inner());
        lists.iter().filter(|((k, _), _)| *k == plural).map(|(_, n)| n).sum()
    }

    /// Listings of every object of kind `plural` (no prefix) so far.
    pub fn whole_lists(&self, plural: &str) -> u64 {
        let lists = self.lists.lock().unwrap_or_else(|p| p.into_inner());
        lists.get(&(plural, true)).copied().unwrap_or(0)
    }

    pub(crate) fn read(&self) {
        self.reads.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn listed(&self, plural: &'static str, whole: bool) {
        let mut lists = self.lists.lock().unwrap_or_else(|p| p.into_inner());
        *lists.entry((plural, whole)).or_default() += 1;
    }
}
