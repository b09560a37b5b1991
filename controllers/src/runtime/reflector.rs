//! The reflector: a read cache of one kind, fed by a store watch and
//! replaced wholesale on every relist.
//!
//! Reconcilers read from this cache, never from watch events (they take no
//! hints): an event only says "look at this key again". After a relist the
//! cache is diffed against what it held, and only keys that changed or
//! vanished are woken, so a relist of 10,000 unchanged objects costs no
//! reconcile at all.
//!
//! An object whose stored value cannot be used is quarantined: dropped from
//! the cache (so no reconcile acts on it; a key that is not cached is left
//! alone) and kept in [`Cache::quarantined`] until it is fixed or deleted.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use bosh_api::store::{Quarantined, WatchEvent, Watcher};
use bosh_api::{Kind, Object};
use futures::StreamExt;
use tokio::sync::watch;

/// Which changes wake a controller.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Trigger {
    /// Any change of spec or status (and deletion).
    #[default]
    Any,
    /// Only spec changes (generation) and deletion: for controllers that
    /// write the status themselves and need not hear their own writes.
    Generation,
}

impl Trigger {
    fn changed<S: Kind>(self, old: &Object<S>, new: &Object<S>) -> bool {
        let spec = old.metadata.resource_version != new.metadata.resource_version;
        match self {
            Trigger::Generation => spec,
            Trigger::Any => spec || old.metadata.status_revision != new.metadata.status_revision,
        }
    }
}

/// A read cache of every object of kind `S`, keyed by key name.
pub struct Cache<S: Kind> {
    map: RwLock<BTreeMap<String, Arc<Object<S>>>>,
    quarantined: RwLock<BTreeMap<String, Quarantined>>,
    revision: AtomicI64,
    relists: AtomicU64,
    /// How many relists were reflected (0: not synced yet).
    relisted: watch::Sender<u64>,
}

impl<S: Kind> Default for Cache<S> {
    fn default() -> Self {
        Cache {
            map: RwLock::default(),
            quarantined: RwLock::default(),
            revision: AtomicI64::new(0),
            relists: AtomicU64::new(0),
            relisted: watch::channel(0).0,
        }
    }
}

impl<S: Kind> Cache<S> {
    /// The object under `key`, if cached.
    pub fn get(&self, key: &str) -> Option<Arc<Object<S>>> {
        self.map.read().unwrap().get(key).cloned()
    }

    /// Every cached object, in key order.
    pub fn list(&self) -> Vec<Arc<Object<S>>> {
        self.map.read().unwrap().values().cloned().collect()
    }

    /// Every cached key, in order.
    pub fn keys(&self) -> Vec<String> {
        self.map.read().unwrap().keys().cloned().collect()
    }

    /// Objects of the kind that cannot be used, by key: left out of the
    /// cache until their stored value is fixed or deleted.
    pub fn quarantined(&self) -> Vec<Quarantined> {
        self.quarantined.read().unwrap().values().cloned().collect()
    }

    /// How many objects are cached.
    pub fn len(&self) -> usize {
        self.map.read().unwrap().len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The latest etcd revision reflected.
    pub fn revision(&self) -> i64 {
        self.revision.load(Ordering::Acquire)
    }

    /// How many relists replaced the cache (1 after the initial list).
    pub fn relists(&self) -> u64 {
        self.relists.load(Ordering::Acquire)
    }

    /// Waits until the first listing has been reflected.
    pub async fn wait_synced(&self) {
        self.wait_relisted_after(0).await;
    }

    /// Waits until more than `n` relists have been reflected (`n` read
    /// from [`Cache::relists`] before asking for one).
    pub async fn wait_relisted_after(&self, n: u64) {
        let mut rx = self.relisted.subscribe();
        let _ = rx.wait_for(|r| *r > n).await;
    }

    /// Applies one watch event; calls `wake` for every key that needs a look.
    pub fn apply(&self, event: WatchEvent<S>, trigger: Trigger, mut wake: impl FnMut(&str)) {
        match event {
            WatchEvent::Relisted { objects, quarantined, revision } => {
                let mut fresh = BTreeMap::new();
                for o in objects {
                    fresh.insert(o.key_name(), Arc::new(o));
                }
                *self.quarantined.write().unwrap() =
                    quarantined.into_iter().map(|q| (q.name.clone(), q)).collect();
                let old = std::mem::replace(&mut *self.map.write().unwrap(), fresh);
                {
                    let map = self.map.read().unwrap();
                    for (k, o) in map.iter() {
                        if old.get(k).is_none_or(|prev| trigger.changed(prev, o)) {
                            wake(k);
                        }
                    }
                    for k in old.keys().filter(|k| !map.contains_key(*k)) {
                        wake(k);
                    }
                }
                self.revision.store(revision, Ordering::Release);
                let n = self.relists.fetch_add(1, Ordering::AcqRel) + 1;
                self.relisted.send_replace(n);
            }
            WatchEvent::Applied(o) => {
                let o = *o;
                let k = o.key_name();
                let rev = o.metadata.resource_version.max(o.metadata.status_revision);
                let o = Arc::new(o);
                let prev = self.map.write().unwrap().insert(k.clone(), o.clone());
                self.quarantined.write().unwrap().remove(&k);
                self.revision.fetch_max(rev, Ordering::AcqRel);
                if prev.is_none_or(|p| trigger.changed(&p, &o)) {
                    wake(&k);
                }
            }
            WatchEvent::Quarantined(q) => {
                let name = q.name.clone();
                self.revision.fetch_max(q.revision, Ordering::AcqRel);
                self.quarantined.write().unwrap().insert(name.clone(), q);
                // Woken to find nothing: the reconcile drops its backoff.
                if self.map.write().unwrap().remove(&name).is_some() {
                    wake(&name);
                }
            }
            WatchEvent::Deleted { name, revision } => {
                self.map.write().unwrap().remove(&name);
                self.quarantined.write().unwrap().remove(&name);
                self.revision.fetch_max(revision, Ordering::AcqRel);
                wake(&name);
            }
        }
    }
}

/// Feeds `cache` from `watcher` until the watch ends, waking keys via `wake`.
pub async fn reflect<S: Kind>(
    mut watcher: Watcher<S>,
    cache: Arc<Cache<S>>,
    trigger: Trigger,
    wake: impl Fn(&str),
) {
    while let Some(ev) = watcher.next().await {
        cache.apply(ev, trigger, &wake);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bosh_api::ObjectMeta;
    use bosh_api::objects::DeploymentSpec;

    fn obj(name: &str, spec_rev: i64, status_rev: i64) -> Object<DeploymentSpec> {
        let mut o = Object::new(ObjectMeta::named(name), DeploymentSpec::default());
        o.metadata.resource_version = spec_rev;
        o.metadata.status_revision = status_rev;
        o
    }

    fn relist(objects: Vec<Object<DeploymentSpec>>, revision: i64) -> WatchEvent<DeploymentSpec> {
        WatchEvent::Relisted { objects, quarantined: Vec::new(), revision }
    }

    /// A relist wakes only keys that changed or vanished.
    #[test]
    fn relist_wakes_only_changed_and_vanished_keys() {
        let cache = Cache::default();
        let mut woken = Vec::new();
        cache.apply(
            relist(vec![obj("a", 1, 0), obj("b", 2, 0), obj("c", 3, 0)], 3),
            Trigger::Any,
            |k| woken.push(k.to_string()),
        );
        assert_eq!(woken, ["a", "b", "c"]);
        woken.clear();
        cache.apply(
            relist(vec![obj("a", 1, 0), obj("b", 5, 0), obj("d", 6, 0)], 6),
            Trigger::Any,
            |k| woken.push(k.to_string()),
        );
        assert_eq!(woken, ["b", "d", "c"]);
        assert_eq!(cache.keys(), ["a", "b", "d"]);
        assert_eq!(cache.relists(), 2);
        assert_eq!(cache.revision(), 6);
    }

    /// A quarantined object leaves the cache (its key is woken to find
    /// nothing) and is listed until it is written back whole or deleted.
    #[test]
    fn quarantine_drops_the_object_until_it_is_fixed() {
        let cache = Cache::default();
        cache.apply(relist(vec![obj("a", 1, 0), obj("b", 2, 0)], 2), Trigger::Any, |_| {});
        let q = |name: &str| Quarantined { name: name.into(), revision: 3, reason: "bad".into() };
        let mut woken = Vec::new();
        cache.apply(WatchEvent::Quarantined(q("a")), Trigger::Any, |k| woken.push(k.to_string()));
        cache.apply(WatchEvent::Quarantined(q("z")), Trigger::Any, |k| woken.push(k.to_string()));
        assert_eq!(woken, ["a"], "only a cached key is woken");
        assert_eq!(cache.keys(), ["b"]);
        assert_eq!(cache.quarantined(), [q("a"), q("z")]);
        assert_eq!(cache.revision(), 3);
        cache.apply(WatchEvent::Applied(Box::new(obj("a", 4, 0))), Trigger::Any, |_| {});
        cache.apply(WatchEvent::Deleted { name: "z".into(), revision: 5 }, Trigger::Any, |_| {});
        assert_eq!(cache.keys(), ["a", "b"]);
        assert!(cache.quarantined().is_empty());
        let relisted =
            WatchEvent::Relisted { objects: vec![], quarantined: vec![q("b")], revision: 6 };
        cache.apply(relisted, Trigger::Any, |_| {});
        assert!(cache.is_empty());
        assert_eq!(cache.quarantined(), [q("b")]);
    }

    /// Generation triggering ignores status-only changes; Any does not.
    #[test]
    fn generation_trigger_ignores_status_changes() {
        let cache = Cache::default();
        cache.apply(relist(vec![obj("a", 1, 0)], 1), Trigger::Any, |_| {});
        let mut n = 0;
        cache.apply(WatchEvent::Applied(Box::new(obj("a", 1, 2))), Trigger::Generation, |_| n += 1);
        assert_eq!(n, 0);
        cache.apply(WatchEvent::Applied(Box::new(obj("a", 1, 3))), Trigger::Any, |_| n += 1);
        assert_eq!(n, 1);
        cache.apply(WatchEvent::Applied(Box::new(obj("a", 4, 3))), Trigger::Generation, |_| n += 1);
        assert_eq!(n, 2);
        cache.apply(
            WatchEvent::Deleted { name: "a".into(), revision: 5 },
            Trigger::Generation,
            |_| n += 1,
        );
        assert_eq!(n, 3);
        assert!(cache.is_empty());
    }
}
