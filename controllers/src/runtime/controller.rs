//! The controller loop: elect, reflect, queue, reconcile, repeat.
//!
//! Shaped like kube-runtime's `Controller`: a reconcile is
//! `async fn(Arc<Object<S>>, Arc<Ctx<C>>) -> Result<Action, E>` plus an
//! error policy. Reconciles read the object from the reflector cache at the
//! moment they run (never from the event that woke them), run on a bounded
//! number of workers, never run twice at once for one key, back off per key
//! with jitter on error, and are re-run for every key on a periodic resync
//! so that a missed event can only delay convergence, not prevent it. The
//! resync first relists (a fresh, consistent read of the kind replaces the
//! cache): re-running keys from a cache that missed an event would run
//! them on the very view that is wrong, and never see an object it missed
//! entirely (FAULT-MATRIX B3).
//!
//! The controller reads its kind through a [`Reflector`], its own or one
//! shared with the other controllers of the kind
//! ([`Controller::with_reflector`]), and may watch other kinds on behalf of
//! their owners ([`Controller::owns`], [`Controller::watches`]). A term
//! starts only once every cache it reads holds a listing made after the
//! term began, and then looks at every key once: a new leader does not
//! trust that its predecessor finished anything.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use bosh_api::store::{Fence, Store, WatchStats};
use bosh_api::{Kind, Object};
use futures::FutureExt;
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

use super::leader::{self, ElectionConfig};
use super::predicate::Predicate;
use super::queue::WorkQueue;
use super::reflector::Cache;
use super::secondary::{Secondary, Watch};
use super::shared::Reflector;

/// What to do with a key after a reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Action(ActionKind);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ActionKind {
    Requeue(Duration),
    AwaitChange,
    Backoff,
}

impl Action {
    /// Look again after `d` (the normal success return).
    pub fn requeue(d: Duration) -> Action {
        Action(ActionKind::Requeue(d))
    }

    /// Only look again when the object changes (or at resync).
    pub fn await_change() -> Action {
        Action(ActionKind::AwaitChange)
    }

    /// Retry after this key's next exponential backoff delay (the default
    /// error policy).
    pub fn backoff() -> Action {
        Action(ActionKind::Backoff)
    }

    /// The fixed delay this action asks for (`requeue`), if any: what a
    /// test computes a retry schedule from.
    pub fn delay(&self) -> Option<Duration> {
        match self.0 {
            ActionKind::Requeue(d) => Some(d),
            _ => None,
        }
    }

    /// Whether this action is the exponential backoff.
    pub fn is_backoff(&self) -> bool {
        matches!(self.0, ActionKind::Backoff)
    }
}

/// The error policy of most controllers: retry the key after its next
/// exponential backoff delay (which grows per key, with jitter, and starts
/// afresh after a success). A controller with errors that deserve another
/// schedule (the instance controller's permanent CPI failures) writes its
/// own.
pub fn default_error_policy<S: Kind, C, E>(_: Arc<Object<S>>, _: &E, _: Arc<Ctx<C>>) -> Action {
    Action::backoff()
}

/// What a reconcile sees besides its object.
pub struct Ctx<C> {
    /// The controller's name.
    pub controller: &'static str,
    /// A store whose every write carries this term's fence.
    pub store: Store,
    /// This term's fencing token, for side effects outside etcd: CPI
    /// mutations take it from here (`Director::fenced_cpi(&ctx.fence)`),
    /// and spawned work carries it by holding the `Ctx` or the handle.
    pub fence: Fence,
    /// Controller-specific state (clients, config).
    pub data: Arc<C>,
}

/// Tuning of one controller.
#[derive(Debug, Clone)]
pub struct Config {
    /// Concurrent reconciles (of different keys).
    pub workers: usize,
    /// Every key is reconciled at least this often (`None`: never).
    pub resync: Option<Duration>,
    /// First error backoff delay.
    pub backoff_min: Duration,
    /// Largest error backoff delay.
    pub backoff_max: Duration,
    /// Randomize backoff delays (up to double) so retries spread out.
    pub jitter: bool,
    /// Which changes wake the controller (see also
    /// [`Controller::wake_when`]).
    pub trigger: super::reflector::Trigger,
    /// Leader election.
    pub election: ElectionConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            workers: 4,
            resync: Some(Duration::from_secs(300)),
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(300),
            jitter: true,
            trigger: super::reflector::Trigger::Any,
            election: ElectionConfig::default(),
        }
    }
}

/// Counters for tests, benchmarks and `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Reconciles run.
    pub reconciles: AtomicU64,
    /// Reconciles that returned an error or panicked.
    pub errors: AtomicU64,
    /// Leadership terms started.
    pub terms: AtomicU64,
    /// Whether this replica leads now.
    pub leading: AtomicBool,
}

impl Stats {
    /// Reconciles run so far.
    pub fn reconciles(&self) -> u64 {
        self.reconciles.load(Ordering::Relaxed)
    }

    /// Whether this replica leads now.
    pub fn is_leading(&self) -> bool {
        self.leading.load(Ordering::Relaxed)
    }
}

type ReconcileFn<S, C, E> =
    Arc<dyn Fn(Arc<Object<S>>, Arc<Ctx<C>>) -> BoxFuture<'static, Result<Action, E>> + Send + Sync>;
type ErrorPolicyFn<S, C, E> = Arc<dyn Fn(Arc<Object<S>>, &E, Arc<Ctx<C>>) -> Action + Send + Sync>;

/// A controller of kind `S` with context data `C` and error type `E`.
pub struct Controller<S: Kind, C, E> {
    name: &'static str,
    store: Store,
    data: Arc<C>,
    cfg: Config,
    reconcile: ReconcileFn<S, C, E>,
    error_policy: ErrorPolicyFn<S, C, E>,
    reflector: Reflector<S>,
    predicate: Predicate<S>,
    secondaries: Vec<Box<dyn Secondary>>,
    stats: Arc<Stats>,
}

impl<S, C, E> Controller<S, C, E>
where
    S: Kind,
    C: Send + Sync + 'static,
    E: fmt::Display + Send + 'static,
{
    /// A controller named `name` (also its election name), with a
    /// reflector of its own, woken as `cfg.trigger` says.
    pub fn new<R, Fut, P>(
        name: &'static str,
        store: Store,
        data: Arc<C>,
        cfg: Config,
        reconcile: R,
        error_policy: P,
    ) -> Self
    where
        R: Fn(Arc<Object<S>>, Arc<Ctx<C>>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Action, E>> + Send + 'static,
        P: Fn(Arc<Object<S>>, &E, Arc<Ctx<C>>) -> Action + Send + Sync + 'static,
    {
        Controller {
            reflector: Reflector::new(&store),
            predicate: cfg.trigger.into(),
            name,
            store,
            data,
            cfg,
            reconcile: Arc::new(move |o, c| reconcile(o, c).boxed()),
            error_policy: Arc::new(error_policy),
            secondaries: Vec::new(),
            stats: Arc::default(),
        }
    }

    /// Reads the kind through `reflector` (shared with other controllers)
    /// instead of a reflector of its own.
    pub fn with_reflector(mut self, reflector: Reflector<S>) -> Self {
        self.reflector = reflector;
        self
    }

    /// Wakes on the changes `predicate` passes instead of those
    /// `cfg.trigger` names.
    pub fn wake_when(mut self, predicate: Predicate<S>) -> Self {
        self.predicate = predicate;
        self
    }

    /// Wakes the owner of each child of kind `K` that changes as `when`
    /// says (or appears, or goes): `owner` gives the owner's key from the
    /// child (kube-runtime's `Controller::owns`).
    pub fn owns<K: Kind>(
        self,
        children: &Reflector<K>,
        when: Predicate<K>,
        owner: impl Fn(&Object<K>) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.watches(children, when, move |o| owner(o).into_iter().collect())
    }

    /// Wakes the keys `mapper` gives for each object of kind `K` that
    /// changes as `when` says (or appears, or goes): kube-runtime's
    /// `Controller::watches`, for objects related without owning.
    pub fn watches<K: Kind>(
        mut self,
        related: &Reflector<K>,
        when: Predicate<K>,
        mapper: impl Fn(&Object<K>) -> Vec<String> + Send + Sync + 'static,
    ) -> Self {
        self.secondaries.push(Box::new(Watch {
            reflector: related.clone(),
            when,
            mapper: Some(Arc::new(mapper)),
        }));
        self
    }

    /// Keeps `reflector`'s cache filled (and listed after the term began)
    /// while this controller leads, for a reconcile that reads it; its
    /// changes wake nothing.
    pub fn reads<K: Kind>(mut self, reflector: &Reflector<K>) -> Self {
        self.secondaries.push(Box::new(Watch {
            reflector: reflector.clone(),
            when: Predicate::any(),
            mapper: None,
        }));
        self
    }

    /// The controller's counters.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// What happened to the watches of the controller's reflector:
    /// relists, compactions, broken sessions.
    pub fn watch_stats(&self) -> Arc<WatchStats> {
        self.reflector.stats()
    }

    /// The reflector cache (filled while leading).
    pub fn cache(&self) -> Arc<Cache<S>> {
        self.reflector.cache()
    }

    /// The controller's reflector.
    pub fn reflector(&self) -> Reflector<S> {
        self.reflector.clone()
    }

    /// Runs until `shutdown`: campaigns, and while leading, reconciles.
    /// On shutdown it stops taking keys, lets running reconciles finish,
    /// and resigns so another replica takes over at once.
    pub async fn run(self, shutdown: CancellationToken) {
        let this = Arc::new(self);
        loop {
            let Some(term) =
                leader::acquire(&this.store, this.name, &this.cfg.election, &shutdown).await
            else {
                return;
            };
            this.stats.terms.fetch_add(1, Ordering::Relaxed);
            this.stats.leading.store(true, Ordering::Relaxed);
            let stop = CancellationToken::new();
            let watcher = {
                let (stop, lost, shutdown) = (stop.clone(), term.lost.clone(), shutdown.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        _ = lost.cancelled() => {}
                        _ = shutdown.cancelled() => {}
                    }
                    stop.cancel();
                })
            };
            this.clone().lead(term.fence.clone(), stop).await;
            watcher.abort();
            this.stats.leading.store(false, Ordering::Relaxed);
            if shutdown.is_cancelled() {
                term.resign(&this.store).await;
                info!(controller = this.name, "stopped");
                return;
            }
            term.resign(&this.store).await;
        }
    }

    /// One leadership term: reflectors, resync and workers until `stop`.
    async fn lead(self: Arc<Self>, fence: Fence, stop: CancellationToken) {
        let queue = Arc::new(WorkQueue::new());
        let ctx = Arc::new(Ctx {
            controller: self.name,
            store: self.store.with_fence(fence.clone()),
            fence: fence.clone(),
            data: self.data.clone(),
        });
        let cache = self.reflector.cache();
        let term_began = fence.revision;
        // Subscribe before holding, so that no change between the listing
        // and the subscription goes unheard. Changes the cache saw before
        // a listing made in this term are left to the look at every key
        // below: they may come from a view older than the term.
        let _subscriptions: Vec<_> = std::iter::once({
            let (queue, predicate, cache) = (queue.clone(), self.predicate.clone(), cache.clone());
            self.reflector.subscribe(move |c| {
                if cache.listed_revision() >= term_began && predicate.matches(c) {
                    queue.add(&c.key);
                }
            })
        })
        .chain(self.secondaries.iter().map(|s| s.subscribe(queue.clone())))
        .collect();
        let _holds: Vec<_> = std::iter::once(self.reflector.hold())
            .chain(self.secondaries.iter().map(|s| s.hold()))
            .collect();
        // Workers take keys only from this term's view of the kind. Other
        // kinds a reconcile reads must be listed in this term too before
        // any key runs; without them, keys run while the listing is still
        // being reflected (as a fresh watch's first relist wakes them).
        let spawn_workers = || -> Vec<_> {
            let backoffs: Arc<Mutex<HashMap<String, ExponentialBackoff>>> = Arc::default();
            (0..self.cfg.workers.max(1))
                .map(|_| {
                    let (this, queue, ctx, backoffs) =
                        (self.clone(), queue.clone(), ctx.clone(), backoffs.clone());
                    tokio::spawn(async move {
                        while let Some(key) = queue.next().await {
                            let after = this.process(&key, &ctx, &backoffs).await;
                            queue.done(&key, after);
                        }
                    })
                })
                .collect()
        };
        let mut workers = if self.secondaries.is_empty() { spawn_workers() } else { Vec::new() };
        // Decide on listings made after this term began (see `shared`),
        // then look at every key once.
        let listed = async {
            self.reflector.listed_since(term_began).await;
            for s in &self.secondaries {
                s.listed_since(term_began).await;
            }
        };
        tokio::select! {
            _ = listed => {}
            _ = stop.cancelled() => {}
        }
        if !stop.is_cancelled() {
            for k in cache.keys() {
                queue.add(&k);
            }
            if workers.is_empty() {
                workers = spawn_workers();
            }
        }
        let resync = self.cfg.resync.filter(|_| !stop.is_cancelled()).map(|period| {
            let (queue, reflector) = (queue.clone(), self.reflector.clone());
            tokio::spawn(async move {
                let cache = reflector.cache();
                let mut tick =
                    tokio::time::interval_at(tokio::time::Instant::now() + period, period);
                loop {
                    tick.tick().await;
                    // Relist, then run every key on the fresh view. If
                    // etcd cannot be listed within a period, run them on
                    // the cache as it is.
                    let seen = cache.relists();
                    reflector.relist();
                    let _ = tokio::time::timeout(period, cache.wait_relisted_after(seen)).await;
                    for k in cache.keys() {
                        queue.add_resync(&k);
                    }
                }
            })
        });
        stop.cancelled().await;
        queue.shutdown();
        if let Some(r) = resync {
            r.abort();
        }
        for w in workers {
            let _ = w.await;
        }
    }

    /// Reconciles one key; returns when to look at it again.
    async fn process(
        &self,
        key: &str,
        ctx: &Arc<Ctx<C>>,
        backoffs: &Mutex<HashMap<String, ExponentialBackoff>>,
    ) -> Option<Duration> {
        let Some(obj) = self.reflector.cache().get(key) else {
            // Gone: clean-up of deleted objects runs through finalizers
            // while the object still exists, so there is nothing to do.
            backoffs.lock().unwrap().remove(key);
            return None;
        };
        let span = info_span!(
            "reconcile",
            controller = self.name,
            object = %key,
            generation = obj.metadata.generation,
        );
        let fut = (self.reconcile)(obj.clone(), ctx.clone());
        let result =
            watchdog(AssertUnwindSafe(fut).catch_unwind(), &span).instrument(span.clone()).await;
        self.stats.reconciles.fetch_add(1, Ordering::Relaxed);
        let action = match result {
            Ok(Ok(action)) => {
                // A failure the reconcile handled itself (reported in
                // status) and answered with `backoff` keeps growing its
                // delay; any other outcome starts the key's backoff afresh.
                if !matches!(action.0, ActionKind::Backoff) {
                    backoffs.lock().unwrap().remove(key);
                }
                action
            }
            Ok(Err(e)) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                span.in_scope(|| warn!(error = %e, "reconcile failed"));
                (self.error_policy)(obj, &e, ctx.clone())
            }
            Err(_) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                span.in_scope(|| warn!("reconcile panicked"));
                Action::backoff()
            }
        };
        match action.0 {
            ActionKind::Requeue(d) => Some(d),
            ActionKind::AwaitChange => None,
            ActionKind::Backoff => {
                let mut map = backoffs.lock().unwrap();
                let b = map.entry(key.to_string()).or_insert_with(|| self.backoff());
                b.next()
            }
        }
    }

    fn backoff(&self) -> ExponentialBackoff {
        self.cfg.backoff_delays()
    }
}

impl Config {
    /// The delays of one key's error backoff, in order, as the runtime
    /// draws them (with jitter when [`Config::jitter`]): tests compute a
    /// retry schedule from it instead of waiting it out.
    pub fn backoff_delays(&self) -> ExponentialBackoff {
        let mut b = ExponentialBuilder::default()
            .with_min_delay(self.backoff_min)
            .with_max_delay(self.backoff_max)
            .with_factor(2.0)
            .without_max_times();
        if self.jitter {
            b = b.with_jitter();
        }
        b.build()
    }
}

/// How long a reconcile runs before the runtime says so.
const SLOW_RECONCILE: Duration = Duration::from_secs(60);

/// Awaits `fut`, logging a warning in `span` (controller, object) each
/// [`SLOW_RECONCILE`] it is still running. Nothing is cancelled — a slow
/// step may be legitimate (a long drain) — but a reconcile that never
/// returns holds its key for good, and without this an operator sees only
/// a rollout that stopped moving.
async fn watchdog<F: Future>(fut: F, span: &tracing::Span) -> F::Output {
    let started = tokio::time::Instant::now();
    tokio::pin!(fut);
    let mut tick = tokio::time::interval_at(started + SLOW_RECONCILE, SLOW_RECONCILE);
    loop {
        tokio::select! {
            out = &mut fut => return out,
            _ = tick.tick() => {
                let secs = started.elapsed().as_secs();
                span.in_scope(|| warn!(running_secs = secs, "reconcile still running"));
            }
        }
    }
}
