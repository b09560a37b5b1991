//! One reflector per kind, shared by every controller that reads the kind.
//!
//! boshd runs several controllers over Deployments (validator, compiler,
//! deployer, orphan scan) and several over Instances (instance controller,
//! health monitor, and the deployment controller, which waits on its
//! instances). Each used to hold its own watch of the same etcd prefix and
//! its own copy of every object. A [`Reflector`] is one watch and one
//! [`Cache`] that all of them read; what changed is handed to each
//! subscriber ([`Reflector::subscribe`]), which decides for itself whether
//! and whom to wake (a primary controller by its predicate, a secondary
//! watch by mapping the object to its owner's key).
//!
//! The watch runs only while someone needs it ([`Reflector::hold`]: the
//! controllers hold it while they lead), so a replica that leads nothing
//! watches nothing, as before. A controller that begins a term asks for a
//! listing read after the term began ([`Reflector::listed_since`]): the
//! term then decides on a view at least as new as the last write of any
//! earlier term (fencing rejects those after it), whether the watch has
//! run for hours or just started.
//!
//! [`Reflectors`] hands out one reflector per kind, for boshd's wiring.

use std::any::{Any, TypeId};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use bosh_api::Kind;
use bosh_api::store::{RelistHandle, Store, WatchEvent, WatchStats};
use futures::StreamExt;

use super::reflector::{Cache, Change};

type Subscriber<S> = Arc<dyn Fn(&Change<S>) + Send + Sync>;

/// A watch of kind `S` feeding one cache, shared by its consumers. Clones
/// are handles to the same reflector.
pub struct Reflector<S: Kind>(Arc<Inner<S>>);

impl<S: Kind> Clone for Reflector<S> {
    fn clone(&self) -> Self {
        Reflector(self.0.clone())
    }
}

impl<S: Kind> fmt::Debug for Reflector<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reflector").field("kind", &S::KIND).finish()
    }
}

struct Inner<S: Kind> {
    /// `None` only in unit tests, which feed events by hand.
    store: Option<Store>,
    cache: Arc<Cache<S>>,
    stats: Arc<WatchStats>,
    subscribers: Mutex<BTreeMap<u64, Subscriber<S>>>,
    next_id: AtomicU64,
    run: Mutex<Running>,
}

/// The watch, while held.
#[derive(Default)]
struct Running {
    holders: usize,
    task: Option<tokio::task::JoinHandle<()>>,
    relist: Option<RelistHandle>,
    /// [`Cache::relists`] when the current watch started: a listing after
    /// this is the watch's own initial one.
    started_at: u64,
}

impl<S: Kind> Reflector<S> {
    /// A reflector of kind `S` over `store` (not watching until held).
    pub fn new(store: &Store) -> Self {
        Self::with_store(Some(store.clone()))
    }

    /// A reflector that never watches, fed with [`Reflector::dispatch`].
    #[cfg(test)]
    pub(crate) fn detached() -> Self {
        Self::with_store(None)
    }

    fn with_store(store: Option<Store>) -> Self {
        Reflector(Arc::new(Inner {
            store,
            cache: Arc::default(),
            stats: Arc::default(),
            subscribers: Mutex::default(),
            next_id: AtomicU64::new(0),
            run: Mutex::default(),
        }))
    }

    /// The cache (filled while the reflector is held).
    pub fn cache(&self) -> Arc<Cache<S>> {
        self.0.cache.clone()
    }

    /// What happened to the reflector's watches: relists, compactions,
    /// broken sessions.
    pub fn stats(&self) -> Arc<WatchStats> {
        self.0.stats.clone()
    }

    /// Hands every change the cache sees to `f`, until the subscription is
    /// dropped. `f` runs on the reflector's task: it must be quick (queue
    /// a key, never wait).
    pub fn subscribe(&self, f: impl Fn(&Change<S>) + Send + Sync + 'static) -> Subscription {
        let id = self.0.next_id.fetch_add(1, Ordering::Relaxed);
        self.0.subscribers.lock().unwrap().insert(id, Arc::new(f));
        let inner: Weak<Inner<S>> = Arc::downgrade(&self.0);
        Subscription(Some(Box::new(move || {
            if let Some(inner) = inner.upgrade() {
                inner.subscribers.lock().unwrap().remove(&id);
            }
        })))
    }

    /// Keeps the watch running until the hold is dropped; the first hold
    /// starts it (with a fresh listing), the last one stops it.
    pub fn hold(&self) -> Hold {
        let mut run = self.0.run.lock().unwrap();
        run.holders += 1;
        if run.task.is_none()
            && let Some(store) = &self.0.store
        {
            let watcher = store.watch_counted::<S>(None, self.0.stats.clone());
            run.relist = Some(watcher.relist_handle());
            run.started_at = self.0.cache.relists();
            let this = self.clone();
            run.task = Some(tokio::spawn(async move {
                let mut watcher = watcher;
                while let Some(ev) = watcher.next().await {
                    this.dispatch(ev);
                }
            }));
        }
        let inner: Weak<Inner<S>> = Arc::downgrade(&self.0);
        Hold(Some(Box::new(move || {
            let Some(inner) = inner.upgrade() else { return };
            let mut run = inner.run.lock().unwrap();
            run.holders -= 1;
            if run.holders == 0 {
                if let Some(t) = run.task.take() {
                    t.abort();
                }
                run.relist = None;
            }
        })))
    }

    /// Asks the running watch for a fresh listing (nothing when not held).
    pub fn relist(&self) {
        if let Some(r) = &self.0.run.lock().unwrap().relist {
            r.relist();
        }
    }

    /// Waits until the cache reflects a listing read at or after etcd
    /// revision `revision`, asking for one when the latest is older. The
    /// caller holds the reflector.
    pub async fn listed_since(&self, revision: i64) {
        let cache = &self.0.cache;
        loop {
            let seen = cache.relists();
            let started_at = self.0.run.lock().unwrap().started_at;
            if seen > started_at {
                if cache.listed_revision() >= revision {
                    return;
                }
                self.relist();
            }
            // Otherwise the watch's initial listing is on its way.
            cache.wait_relisted_after(seen).await;
        }
    }

    /// Applies one watch event to the cache and hands what changed to
    /// every subscriber.
    pub(crate) fn dispatch(&self, ev: WatchEvent<S>) {
        let mut changes = Vec::new();
        self.0.cache.apply_changes(ev, |c| changes.push(c));
        if changes.is_empty() {
            return;
        }
        let subscribers: Vec<Subscriber<S>> =
            self.0.subscribers.lock().unwrap().values().cloned().collect();
        for c in &changes {
            for s in &subscribers {
                s(c);
            }
        }
    }
}

/// Keeps a subscriber subscribed; dropping it unsubscribes.
#[must_use = "dropping a subscription unsubscribes at once"]
pub struct Subscription(Option<Box<dyn FnOnce() + Send + Sync>>);

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

/// Keeps a reflector's watch running; dropping it lets the watch stop.
#[must_use = "dropping a hold lets the watch stop at once"]
pub struct Hold(Option<Box<dyn FnOnce() + Send + Sync>>);

impl Drop for Hold {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

/// One [`Reflector`] per kind, created on first use. Every reflector
/// watches the store it was first asked with: one registry serves one etcd
/// root. Clones share the registry.
#[derive(Clone, Default)]
pub struct Reflectors(Arc<Mutex<HashMap<TypeId, Box<dyn Any + Send + Sync>>>>);

impl fmt::Debug for Reflectors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.lock().unwrap().len();
        f.debug_struct("Reflectors").field("kinds", &n).finish()
    }
}

impl Reflectors {
    /// The reflector of kind `S`, created over `store` if there is none yet.
    pub fn get<S: Kind>(&self, store: &Store) -> Reflector<S> {
        let mut map = self.0.lock().unwrap();
        map.entry(TypeId::of::<S>())
            .or_insert_with(|| Box::new(Reflector::<S>::new(store)))
            .downcast_ref::<Reflector<S>>()
            .expect("the registry holds each kind's reflector under its TypeId")
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use bosh_api::objects::{DeploymentSpec, InstanceSpec};
    use bosh_api::{Object, ObjectMeta};

    use super::*;

    fn instance(dep: &str, name: &str, rev: i64) -> Object<InstanceSpec> {
        let mut o = Object::new(ObjectMeta::scoped(dep, name), InstanceSpec::default());
        o.metadata.resource_version = rev;
        o
    }

    /// Every subscriber sees every change; a dropped subscription sees no more.
    #[test]
    fn subscribers_see_changes_until_they_unsubscribe() {
        let r = Reflector::<DeploymentSpec>::detached();
        let (a, b) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(Vec::new())));
        let sa = {
            let a = a.clone();
            r.subscribe(move |c| a.lock().unwrap().push(c.key.clone()))
        };
        let sb = {
            let b = b.clone();
            r.subscribe(move |c| b.lock().unwrap().push(c.key.clone()))
        };
        let d = |n: &str, rev| {
            let mut o = Object::new(ObjectMeta::named(n), DeploymentSpec::default());
            o.metadata.resource_version = rev;
            WatchEvent::Applied(Box::new(o))
        };
        r.dispatch(d("x", 1));
        drop(sb);
        r.dispatch(d("y", 2));
        r.dispatch(d("y", 2));
        assert_eq!(*a.lock().unwrap(), ["x", "y"], "the same revision again is no change");
        assert_eq!(*b.lock().unwrap(), ["x"]);
        drop(sa);
        assert_eq!(r.cache().keys(), ["x", "y"]);
    }

    /// A registry hands out one reflector per kind.
    #[test]
    fn the_registry_shares_one_reflector_per_kind() {
        let r = Reflector::<InstanceSpec>::detached();
        let reg = Reflectors::default();
        reg.0.lock().unwrap().insert(TypeId::of::<InstanceSpec>(), Box::new(r.clone()));
        r.dispatch(WatchEvent::Applied(Box::new(instance("d", "web/a", 1))));
        // No store is needed to fetch a kind that is registered already.
        let map = reg.0.lock().unwrap();
        let got = map[&TypeId::of::<InstanceSpec>()].downcast_ref::<Reflector<InstanceSpec>>();
        assert_eq!(got.unwrap().cache().keys(), ["d/web/a"]);
    }
}
