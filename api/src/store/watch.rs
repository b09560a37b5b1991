//! Watches of one kind that survive etcd restarts and compaction.
//!
//! A [`Watcher`] keeps the raw spec and status values of every object of
//! its kind, so it can hand out whole objects when only one half changed.
//! It resumes a broken watch from the revision after the last event it
//! saw, and when that revision has been compacted away it relists and says so
//! with [`WatchEvent::Relisted`]: consumers replace their cache rather than
//! trusting a history that no longer exists. A consumer may also ask for a
//! relist at any time ([`RelistHandle`]): a controller's periodic resync
//! does, so that events lost on the way (FAULT-MATRIX B3) cannot leave its
//! cache wrong for longer than one resync period. [`WatchStats`] counts
//! what happened (relists, compactions, broken sessions).
//!
//! A watch that goes quiet is asked for a progress report, and one that
//! does not answer (or does not open) in time is taken as broken and
//! resumed: a stream that hangs silently would otherwise freeze its
//! controllers' caches until the next resync, or for good where there is
//! none. A progress report's revision is not taken as the resume point:
//! etcd before 3.4.25 (Debian bookworm ships 3.4.23) answers a progress
//! request with its current revision even while the watcher still has
//! events to deliver (etcd issue 15220), so resuming from it could skip them.
//!
//! A value that cannot be used as an object (see [`Quarantined`]) never
//! stops the watch: it is logged, reported with [`WatchEvent::Quarantined`]
//! (or in the relist), and consumers drop whatever they knew of the object.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use etcd_client::{EventType, KeyValue, WatchOptions};
use futures::Stream;
use tokio::sync::{Notify, mpsc};
use tracing::{debug, warn};

use super::{Quarantined, Result, Side, Store, decode_object, failpoints};
use crate::objects::{Kind, Object};

/// One change seen by a [`Watcher`].
#[derive(Debug, Clone)]
pub enum WatchEvent<S: Kind> {
    /// A complete listing at `revision`: replace whatever was known.
    Relisted {
        /// Every object of the kind.
        objects: Vec<Object<S>>,
        /// Objects of the kind that cannot be used, left out of `objects`.
        quarantined: Vec<Quarantined>,
        /// The revision listed at.
        revision: i64,
    },
    /// An object was created or its spec or status changed.
    Applied(Box<Object<S>>),
    /// An object was written with a spec or status that cannot be used:
    /// forget it (it is not deleted; it is left alone until fixed).
    Quarantined(Quarantined),
    /// An object is gone.
    Deleted {
        /// Its key name (`name`, or `deployment/name`).
        name: String,
        /// The revision of the deletion.
        revision: i64,
    },
}

/// What happened to a watch (or to the successive watches of one
/// controller, which share one set): for tests, benchmarks and metrics.
#[derive(Debug, Default)]
pub struct WatchStats {
    /// Full listings announced ([`WatchEvent::Relisted`]), the first included.
    pub relists: AtomicU64,
    /// Sessions etcd ended because their start revision was compacted
    /// (`ErrCompacted`), each followed by a relist.
    pub compacted: AtomicU64,
    /// Sessions that broke (connection lost, etcd restarted) and resumed.
    pub broken: AtomicU64,
    /// Relists asked for through a [`RelistHandle`].
    pub requested: AtomicU64,
}

impl WatchStats {
    /// Full listings so far.
    pub fn relists(&self) -> u64 {
        self.relists.load(Ordering::Relaxed)
    }

    /// `ErrCompacted` answers so far.
    pub fn compacted(&self) -> u64 {
        self.compacted.load(Ordering::Relaxed)
    }

    /// Broken sessions so far.
    pub fn broken(&self) -> u64 {
        self.broken.load(Ordering::Relaxed)
    }

    /// Relists asked for so far.
    pub fn requested(&self) -> u64 {
        self.requested.load(Ordering::Relaxed)
    }
}

/// Asks a [`Watcher`] to relist: its current session ends and a full,
/// consistent listing replaces whatever it had (its consumers get a
/// [`WatchEvent::Relisted`] and diff their cache against it). Asking while
/// a relist is pending asks once.
#[derive(Debug, Clone)]
pub struct RelistHandle(Arc<Notify>);

impl RelistHandle {
    /// Asks for a relist.
    pub fn relist(&self) {
        self.0.notify_one();
    }
}

/// A stream of [`WatchEvent`]s for one kind. Dropping it stops the watch.
pub struct Watcher<S: Kind> {
    rx: mpsc::Receiver<WatchEvent<S>>,
    task: tokio::task::JoinHandle<()>,
    relist: RelistHandle,
    stats: Arc<WatchStats>,
}

impl<S: Kind> Watcher<S> {
    /// A handle that makes this watch relist (usable after the watcher
    /// has moved into its consumer).
    pub fn relist_handle(&self) -> RelistHandle {
        self.relist.clone()
    }

    /// What happened to this watch so far.
    pub fn stats(&self) -> Arc<WatchStats> {
        self.stats.clone()
    }
}

impl<S: Kind> Drop for Watcher<S> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<S: Kind> Stream for Watcher<S> {
    type Item = WatchEvent<S>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl Store {
    /// Watches every object of kind `S`. With `from_revision: None` the
    /// stream starts with a [`WatchEvent::Relisted`]; with `Some(rev)` it
    /// replays changes from `rev` on (relisting if `rev` was compacted).
    pub fn watch<S: Kind>(&self, from_revision: Option<i64>) -> Watcher<S> {
        self.watch_counted(from_revision, Arc::default())
    }

    /// Like [`Store::watch`], counting into `stats` (which successive
    /// watches may share).
    pub fn watch_counted<S: Kind>(
        &self,
        from_revision: Option<i64>,
        stats: Arc<WatchStats>,
    ) -> Watcher<S> {
        let (tx, rx) = mpsc::channel(1024);
        let relist = RelistHandle(Arc::new(Notify::new()));
        let state = WatchState::<S> {
            store: self.clone(),
            root: self.kind_root::<S>(),
            spec_prefix: self.kind_prefix::<S>(Side::Spec),
            status_prefix: self.kind_prefix::<S>(Side::Status),
            specs: BTreeMap::new(),
            statuses: BTreeMap::new(),
            next_revision: from_revision,
            tx,
            relist: relist.clone(),
            stats: stats.clone(),
        };
        Watcher { rx, task: tokio::spawn(state.run()), relist, stats }
    }
}

/// Why one watch session ended.
enum SessionEnd {
    /// The start revision was compacted: relist.
    Compacted,
    /// The connection broke or etcd restarted: resume.
    Broken(String),
    /// A relist was asked for.
    Relist,
    /// Nobody listens any more.
    Closed,
}

struct WatchState<S: Kind> {
    store: Store,
    root: String,
    spec_prefix: String,
    status_prefix: String,
    specs: BTreeMap<String, KeyValue>,
    statuses: BTreeMap<String, KeyValue>,
    /// Where to resume; `None` means relist first.
    next_revision: Option<i64>,
    tx: mpsc::Sender<WatchEvent<S>>,
    relist: RelistHandle,
    stats: Arc<WatchStats>,
}

/// How long opening a watch may take before the attempt counts as broken.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a watch may be silent before it is asked for a progress
/// report; with no answer within as long again it is taken as broken.
const QUIET: Duration = Duration::from_secs(15);

fn reconnect_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(2))
        .with_jitter()
        .without_max_times()
        .build()
}

impl<S: Kind> WatchState<S> {
    async fn run(mut self) {
        let mut backoff = reconnect_backoff();
        loop {
            if self.next_revision.is_none() {
                match self.relist().await {
                    Ok(true) => backoff = reconnect_backoff(),
                    Ok(false) => return,
                    Err(e) => {
                        warn!(kind = S::KIND, error = %e, "relist failed; retrying");
                        tokio::time::sleep(backoff.next().unwrap_or_default()).await;
                        continue;
                    }
                }
            }
            match self.session().await {
                SessionEnd::Closed => return,
                SessionEnd::Compacted => {
                    debug!(kind = S::KIND, "watch revision compacted; relisting");
                    self.stats.compacted.fetch_add(1, Ordering::Relaxed);
                    self.next_revision = None;
                }
                SessionEnd::Relist => {
                    debug!(kind = S::KIND, "relist asked for");
                    self.stats.requested.fetch_add(1, Ordering::Relaxed);
                    self.next_revision = None;
                }
                SessionEnd::Broken(why) => {
                    self.stats.broken.fetch_add(1, Ordering::Relaxed);
                    warn!(kind = S::KIND, error = %why, next_revision = ?self.next_revision, "watch broken; resuming");
                    tokio::time::sleep(backoff.next().unwrap_or_default()).await;
                }
            }
        }
    }

    /// Reads everything and announces it. Returns false when the receiver is gone.
    async fn relist(&mut self) -> Result<bool> {
        let (kvs, revision) = self.store.range_all(&self.root, None).await?;
        self.specs.clear();
        self.statuses.clear();
        for kv in kvs {
            self.remember(kv);
        }
        let mut objects = Vec::with_capacity(self.specs.len());
        let mut quarantined = Vec::new();
        for name in self.specs.keys() {
            match self.compose(name) {
                Some(Ok(o)) => objects.push(o),
                Some(Err(q)) => quarantined.push(q),
                None => {}
            }
        }
        self.next_revision = Some(revision + 1);
        self.stats.relists.fetch_add(1, Ordering::Relaxed);
        let ev = WatchEvent::Relisted { objects, quarantined, revision };
        Ok(self.tx.send(ev).await.is_ok())
    }

    /// Stores a key-value in the spec or status map.
    fn remember(&mut self, kv: KeyValue) -> Option<String> {
        let key = kv.key();
        if let Some(name) = key.strip_prefix(self.spec_prefix.as_bytes()) {
            let name = String::from_utf8_lossy(name).into_owned();
            self.specs.insert(name.clone(), kv);
            Some(name)
        } else if let Some(name) = key.strip_prefix(self.status_prefix.as_bytes()) {
            let name = String::from_utf8_lossy(name).into_owned();
            self.statuses.insert(name.clone(), kv);
            Some(name)
        } else {
            None
        }
    }

    fn forget(&mut self, key: &[u8]) -> Option<(String, Side)> {
        if let Some(name) = key.strip_prefix(self.spec_prefix.as_bytes()) {
            let name = String::from_utf8_lossy(name).into_owned();
            self.specs.remove(&name);
            Some((name, Side::Spec))
        } else if let Some(name) = key.strip_prefix(self.status_prefix.as_bytes()) {
            let name = String::from_utf8_lossy(name).into_owned();
            self.statuses.remove(&name);
            Some((name, Side::Status))
        } else {
            None
        }
    }

    /// The whole object if its spec is known: decoded, or quarantined.
    fn compose(&self, name: &str) -> Option<Result<Object<S>, Quarantined>> {
        let spec = self.specs.get(name)?;
        let status = self.statuses.get(name);
        Some(decode_object::<S>(name, spec, status).map_err(|e| {
            // A bad value written by hand must not stop the watch for
            // everything else; it is reported and left alone.
            let revision = spec.mod_revision().max(status.map_or(0, |s| s.mod_revision()));
            warn!(kind = S::KIND, name, revision, error = %e, "quarantined an object that cannot be used");
            Quarantined { name: name.to_string(), revision, reason: e.to_string() }
        }))
    }

    /// One watch from `next_revision` until it breaks.
    async fn session(&mut self) -> SessionEnd {
        let start = self.next_revision.unwrap_or(1);
        let opts =
            WatchOptions::new().with_prefix().with_start_revision(start).with_progress_notify();
        let mut client = self.store.watch_client();
        let open = client.watch(self.root.clone(), Some(opts));
        let mut stream = match tokio::time::timeout(OPEN_TIMEOUT, open).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return SessionEnd::Broken(e.to_string()),
            Err(_) => return SessionEnd::Broken(format!("no watch opened in {OPEN_TIMEOUT:?}")),
        };
        let mut asked = false;
        loop {
            let message = tokio::select! {
                m = tokio::time::timeout(QUIET, stream.message()) => m,
                _ = self.relist.0.notified() => return SessionEnd::Relist,
            };
            let message = match message {
                Ok(m) => {
                    asked = false;
                    m
                }
                Err(_) if !asked => {
                    if let Err(e) = stream.request_progress().await {
                        return SessionEnd::Broken(e.to_string());
                    }
                    asked = true;
                    continue;
                }
                Err(_) => {
                    return SessionEnd::Broken(format!(
                        "no answer to a progress request in {QUIET:?}"
                    ));
                }
            };
            let resp = match message {
                Ok(Some(r)) => r,
                Ok(None) => return SessionEnd::Broken("watch stream ended".into()),
                Err(e) => return SessionEnd::Broken(e.to_string()),
            };
            if resp.compact_revision() > 0 {
                return SessionEnd::Compacted;
            }
            if resp.canceled() {
                return SessionEnd::Broken(format!("watch cancelled: {}", resp.cancel_reason()));
            }
            if resp.events().is_empty() {
                // Created, or a progress report: the stream is alive. Its
                // revision is not a safe resume point (see the module doc).
                continue;
            }
            if failpoints::fires(|| failpoints::for_kind(failpoints::WATCH_BREAK, S::PLURAL)) {
                return SessionEnd::Broken("failpoint: the watch connection broke".into());
            }
            if failpoints::fires(|| failpoints::for_kind(failpoints::WATCH_DROP_EVENTS, S::PLURAL))
            {
                debug!(kind = S::KIND, events = resp.events().len(), "failpoint: events dropped");
                continue;
            }
            if !self.apply_events(resp.events()).await {
                return SessionEnd::Closed;
            }
        }
    }

    /// Applies a response's events revision by revision, announcing each
    /// changed object once per revision. Returns false when the receiver is gone.
    async fn apply_events(&mut self, events: &[etcd_client::Event]) -> bool {
        let mut i = 0;
        while i < events.len() {
            let rev = events[i].kv().map(|kv| kv.mod_revision()).unwrap_or_default();
            // name -> whether its spec was deleted in this revision
            let mut changed: BTreeMap<String, bool> = BTreeMap::new();
            while i < events.len()
                && events[i].kv().map(|kv| kv.mod_revision()).unwrap_or_default() == rev
            {
                let ev = &events[i];
                i += 1;
                let Some(kv) = ev.kv() else { continue };
                match ev.event_type() {
                    EventType::Put => {
                        if let Some(name) = self.remember(kv.clone()) {
                            changed.entry(name).or_insert(false);
                        }
                    }
                    EventType::Delete => {
                        if let Some((name, side)) = self.forget(kv.key()) {
                            *changed.entry(name).or_insert(false) |= side == Side::Spec;
                        }
                    }
                }
            }
            for (name, spec_deleted) in changed {
                let ev = if spec_deleted {
                    WatchEvent::Deleted { name, revision: rev }
                } else {
                    match self.compose(&name) {
                        Some(Ok(o)) => WatchEvent::Applied(Box::new(o)),
                        Some(Err(q)) => WatchEvent::Quarantined(q),
                        // A status for an object we do not have.
                        None => continue,
                    }
                };
                if self.tx.send(ev).await.is_err() {
                    return false;
                }
            }
            self.next_revision = Some(rev + 1);
        }
        true
    }
}
