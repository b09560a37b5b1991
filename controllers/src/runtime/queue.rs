//! The work queue: de-duplicated keys, never one key twice at once, with
//! delayed requeues.
//!
//! Like client-go's workqueue: a key added while it is queued is not added
//! again; a key added while a worker runs it is marked dirty and queued
//! again the moment that worker finishes, so the change that arrived
//! mid-reconcile is never lost and never reconciled concurrently. Delayed
//! requeues keep only the earliest deadline per key; an immediate add
//! supersedes a pending delay. Time is `tokio::time`, so tests can pause it.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

#[derive(Default)]
struct State {
    ready: VecDeque<String>,
    /// Keys in `ready`.
    queued: HashSet<String>,
    /// Keys a worker holds.
    running: HashSet<String>,
    /// Running keys that were added again meanwhile.
    dirty: HashSet<String>,
    /// Delayed keys ordered by deadline (the `u64` breaks ties).
    delayed: BTreeSet<(Instant, u64, String)>,
    /// Each delayed key's entry in `delayed`.
    deadline: HashMap<String, (Instant, u64)>,
    seq: u64,
    shutdown: bool,
}

impl State {
    fn cancel_delay(&mut self, key: &str) {
        if let Some((at, seq)) = self.deadline.remove(key) {
            self.delayed.remove(&(at, seq, key.to_string()));
        }
    }

    fn push_ready(&mut self, key: String) {
        self.cancel_delay(&key);
        if self.queued.insert(key.clone()) {
            self.ready.push_back(key);
        }
    }

    fn promote_due(&mut self, now: Instant) {
        while let Some((at, _, _)) = self.delayed.first() {
            if *at > now {
                break;
            }
            let (_, _, key) = self.delayed.pop_first().expect("first exists");
            self.deadline.remove(&key);
            if self.running.contains(&key) {
                self.dirty.insert(key);
            } else {
                self.push_ready(key);
            }
        }
    }
}

/// A de-duplicating, delay-capable work queue of object keys.
#[derive(Default)]
pub struct WorkQueue {
    state: Mutex<State>,
    notify: Notify,
}

impl WorkQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues `key` now (or marks it dirty if a worker holds it).
    pub fn add(&self, key: &str) {
        {
            let mut st = self.state.lock().unwrap();
            if st.running.contains(key) {
                st.cancel_delay(key);
                st.dirty.insert(key.to_string());
                return;
            }
            st.push_ready(key.to_string());
        }
        self.notify.notify_waiters();
    }

    /// Queues `key` for a periodic resync: now, unless a worker holds it
    /// (it is being looked at) or it is already queued or scheduled. A
    /// resync exists to catch missed events, and a scheduled key will be
    /// looked at anyway: it must not cut a key's error backoff short, or a
    /// permanently failing object is retried every resync period whatever
    /// its backoff says (FAULT-MATRIX D4).
    pub fn add_resync(&self, key: &str) {
        {
            let mut st = self.state.lock().unwrap();
            if st.running.contains(key) || st.deadline.contains_key(key) {
                return;
            }
            st.push_ready(key.to_string());
        }
        self.notify.notify_waiters();
    }

    /// Queues `key` after `delay`, unless it is due sooner already.
    pub fn add_after(&self, key: &str, delay: Duration) {
        if delay.is_zero() {
            return self.add(key);
        }
        {
            let mut st = self.state.lock().unwrap();
            if st.queued.contains(key) || st.dirty.contains(key) {
                return;
            }
            let at = Instant::now() + delay;
            if let Some((cur, _)) = st.deadline.get(key)
                && *cur <= at
            {
                return;
            }
            st.cancel_delay(key);
            st.seq += 1;
            let seq = st.seq;
            st.delayed.insert((at, seq, key.to_string()));
            st.deadline.insert(key.to_string(), (at, seq));
        }
        self.notify.notify_waiters();
    }

    /// Waits for the next key and hands it to the caller, who must call
    /// [`WorkQueue::done`] with it. `None` once the queue is shut down.
    pub async fn next(&self) -> Option<String> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let wake_at = {
                let mut st = self.state.lock().unwrap();
                if st.shutdown {
                    return None;
                }
                st.promote_due(Instant::now());
                if let Some(key) = st.ready.pop_front() {
                    st.queued.remove(&key);
                    st.running.insert(key.clone());
                    return Some(key);
                }
                st.delayed.first().map(|(at, _, _)| *at)
            };
            match wake_at {
                Some(at) => {
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Releases `key`. If it was added while running it is queued again
    /// at once; otherwise `requeue_after` schedules it.
    pub fn done(&self, key: &str, requeue_after: Option<Duration>) {
        let again = {
            let mut st = self.state.lock().unwrap();
            st.running.remove(key);
            if st.dirty.remove(key) {
                st.push_ready(key.to_string());
                true
            } else {
                false
            }
        };
        if again {
            self.notify.notify_waiters();
        } else if let Some(d) = requeue_after {
            self.add_after(key, d);
        }
    }

    /// Stops handing out keys; waiting workers get `None`.
    pub fn shutdown(&self) {
        self.state.lock().unwrap().shutdown = true;
        self.notify.notify_waiters();
    }

    /// Keys waiting to run now.
    pub fn len(&self) -> usize {
        self.state.lock().unwrap().ready.len()
    }

    /// Whether nothing waits to run now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keys scheduled for later.
    pub fn delayed_len(&self) -> usize {
        self.state.lock().unwrap().delayed.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A resync neither cuts a scheduled key's delay short nor marks a
    /// running key dirty; it queues an idle key at once.
    #[tokio::test(start_paused = true)]
    async fn a_resync_leaves_scheduled_and_running_keys_alone() {
        let q = WorkQueue::new();
        q.add_after("backing-off", Duration::from_secs(300));
        q.add_resync("backing-off");
        assert_eq!((q.len(), q.delayed_len()), (0, 1));
        q.add("busy");
        assert_eq!(q.next().await.as_deref(), Some("busy"));
        q.add_resync("busy");
        q.done("busy", None);
        assert!(q.is_empty(), "the resync did not mark the running key dirty");
        q.add_resync("idle");
        assert_eq!(q.next().await.as_deref(), Some("idle"));
    }

    /// Adding a queued key again does not queue it twice.
    #[tokio::test]
    async fn add_deduplicates_queued_keys() {
        let q = WorkQueue::new();
        q.add("a");
        q.add("b");
        q.add("a");
        assert_eq!(q.len(), 2);
        assert_eq!(q.next().await.as_deref(), Some("a"));
        assert_eq!(q.next().await.as_deref(), Some("b"));
        assert!(q.is_empty());
    }

    /// A key added while running is handed out again only after done, never concurrently.
    #[tokio::test]
    async fn running_key_is_not_handed_out_twice() {
        let q = WorkQueue::new();
        q.add("a");
        let k = q.next().await.unwrap();
        q.add("a");
        q.add("a");
        assert!(q.is_empty(), "a running key must not be queued");
        let second = tokio::time::timeout(Duration::from_millis(50), q.next()).await;
        assert!(second.is_err(), "no second copy while the first runs");
        q.done(&k, None);
        assert_eq!(q.len(), 1, "the dirty key is queued once on done");
        assert_eq!(q.next().await.as_deref(), Some("a"));
    }

    /// Delayed keys become ready at their deadline, keeping the earliest.
    #[tokio::test(start_paused = true)]
    async fn add_after_keeps_the_earliest_deadline() {
        let q = Arc::new(WorkQueue::new());
        let start = Instant::now();
        q.add_after("a", Duration::from_secs(10));
        q.add_after("a", Duration::from_secs(3));
        q.add_after("a", Duration::from_secs(7));
        assert_eq!(q.delayed_len(), 1);
        assert_eq!(q.next().await.as_deref(), Some("a"));
        assert_eq!(start.elapsed(), Duration::from_secs(3));
    }

    /// An immediate add supersedes a pending delay.
    #[tokio::test(start_paused = true)]
    async fn add_supersedes_a_pending_delay() {
        let q = WorkQueue::new();
        q.add_after("a", Duration::from_secs(60));
        q.add("a");
        assert_eq!(q.delayed_len(), 0);
        let start = Instant::now();
        assert_eq!(q.next().await.as_deref(), Some("a"));
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    /// done with a requeue delay schedules the key again.
    #[tokio::test(start_paused = true)]
    async fn done_with_requeue_schedules_the_key() {
        let q = WorkQueue::new();
        q.add("a");
        let k = q.next().await.unwrap();
        let start = Instant::now();
        q.done(&k, Some(Duration::from_secs(5)));
        assert_eq!(q.next().await.as_deref(), Some("a"));
        assert_eq!(start.elapsed(), Duration::from_secs(5));
    }

    /// Shutdown wakes waiting workers with None.
    #[tokio::test]
    async fn shutdown_wakes_waiters() {
        let q = Arc::new(WorkQueue::new());
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { q2.next().await });
        tokio::task::yield_now().await;
        q.shutdown();
        assert_eq!(waiter.await.unwrap(), None);
    }
}
