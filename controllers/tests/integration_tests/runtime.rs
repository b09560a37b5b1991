//! The controller runtime: queue semantics, backoff, resync, relist.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bosh_api::Object;
use bosh_api::objects::ConfigSpec;
use bosh_api::store::Store;
use bosh_controllers::runtime::{Action, Cache, Config, Controller, Ctx, ElectionConfig, Trigger};
use bosh_test_utils::eventually;
use tokio_util::sync::CancellationToken;

use super::{DEADLINE, config, setup};

fn cfg(workers: usize) -> Config {
    Config {
        workers,
        resync: None,
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_secs(10),
        jitter: true,
        trigger: Trigger::Any,
        election: ElectionConfig { ttl: Duration::from_secs(5), holder: "test".into() },
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct TestError(String);

fn default_policy<C>(_: Arc<Object<ConfigSpec>>, _: &TestError, _: Arc<Ctx<C>>) -> Action {
    Action::backoff()
}

#[derive(Default)]
struct Overlap {
    in_flight: Mutex<HashSet<String>>,
    overlapped: AtomicBool,
    /// Highest generation each key was reconciled at.
    seen: Mutex<HashMap<String, i64>>,
}

/// Under a storm of updates, no key is ever reconciled twice at once and every key converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_never_reconciles_one_key_twice_at_once() {
    let (_env, store) = setup().await;
    for i in 0..10 {
        store.create(&config(&format!("cloud/k{i}"), 0)).await.unwrap();
    }
    let state = Arc::new(Overlap::default());
    let ctl = Controller::new(
        "overlap",
        store.clone(),
        state.clone(),
        cfg(4),
        |obj: Arc<Object<ConfigSpec>>, ctx: Arc<Ctx<Overlap>>| async move {
            let key = obj.key_name();
            if !ctx.data.in_flight.lock().unwrap().insert(key.clone()) {
                ctx.data.overlapped.store(true, Ordering::SeqCst);
            }
            // Simulated work, long enough for updates to pile up meanwhile.
            tokio::time::sleep(Duration::from_millis(15)).await;
            ctx.data.in_flight.lock().unwrap().remove(&key);
            let mut seen = ctx.data.seen.lock().unwrap();
            let g = seen.entry(key).or_default();
            *g = (*g).max(obj.metadata.generation);
            Ok::<_, TestError>(Action::await_change())
        },
        default_policy,
    );
    let stats = ctl.stats();
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(ctl.run(shutdown.clone()));

    let mut writes = 0u64;
    for round in 1..=20 {
        for i in 0..10 {
            let mut o: Object<ConfigSpec> = store.get(None, &format!("cloud/k{i}")).await.unwrap();
            o.spec.content = serde_json::json!({ "n": round });
            store.update_spec(&o).await.unwrap();
            writes += 1;
        }
    }
    let truth = store.list::<ConfigSpec>("").await.unwrap().items;
    eventually(DEADLINE, "every key reconciled at its latest generation", || {
        let seen = state.seen.lock().unwrap().clone();
        let done = truth.iter().all(|o| seen.get(&o.key_name()) == Some(&o.metadata.generation));
        async move { done.then_some(()) }
    })
    .await
    .unwrap();
    assert!(!state.overlapped.load(Ordering::SeqCst), "a key was reconciled concurrently");
    // At most one reconcile per change plus the initial one per key: a
    // change never causes two. (How many changes coalesce depends on
    // timing; the queue's unit tests pin the coalescing itself down.)
    assert!(
        stats.reconciles() <= writes + 10,
        "{} reconciles for {writes} writes to 10 keys: some change was reconciled twice",
        stats.reconciles()
    );
    shutdown.cancel();
    run.await.unwrap();
}

#[derive(Default)]
struct Flaky {
    calls: Mutex<Vec<(Instant, i64)>>,
    /// Fail while the call count is below this.
    fail_until: Mutex<usize>,
}

/// Error backoff grows exponentially per key and resets after a success.
#[tokio::test]
async fn backoff_grows_and_resets_after_success() {
    let (_env, store) = setup().await;
    store.create(&config("cloud/flaky", 0)).await.unwrap();
    let state = Arc::new(Flaky { fail_until: Mutex::new(5), ..Default::default() });
    // Without jitter the delays double exactly, so scheduling noise on a
    // loaded machine cannot make two successive gaps look out of order.
    let mut c = cfg(1);
    c.jitter = false;
    let ctl = Controller::new(
        "flaky",
        store.clone(),
        state.clone(),
        c,
        |obj: Arc<Object<ConfigSpec>>, ctx: Arc<Ctx<Flaky>>| async move {
            let n = {
                let mut calls = ctx.data.calls.lock().unwrap();
                calls.push((Instant::now(), obj.metadata.generation));
                calls.len()
            };
            if n <= *ctx.data.fail_until.lock().unwrap() {
                Err(TestError(format!("failure {n}")))
            } else {
                Ok(Action::await_change())
            }
        },
        default_policy,
    );
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(ctl.run(shutdown.clone()));
    // 5 failures then a success.
    eventually(DEADLINE, "six reconciles", || {
        let n = state.calls.lock().unwrap().len();
        async move { (n >= 6).then_some(()) }
    })
    .await
    .unwrap();
    let gaps: Vec<Duration> = {
        let calls = state.calls.lock().unwrap();
        calls.windows(2).map(|w| w[1].0 - w[0].0).collect()
    };
    for (i, g) in gaps.iter().enumerate() {
        let min = Duration::from_millis(50) * 2u32.pow(i as u32);
        assert!(*g >= min, "gap {i} was {g:?}, expected at least {min:?}: {gaps:?}");
    }
    assert!(gaps.windows(2).all(|w| w[1] > w[0]), "backoff must grow: {gaps:?}");

    // Now fail twice more after a spec change: the first retry comes after
    // the minimum delay again, not after the grown one.
    *state.fail_until.lock().unwrap() = 8;
    let mut o: Object<ConfigSpec> = store.get(None, "cloud/flaky").await.unwrap();
    o.spec.content = serde_json::json!({ "n": 1 });
    store.update_spec(&o).await.unwrap();
    eventually(DEADLINE, "the failures after the change", || {
        let n = state.calls.lock().unwrap().len();
        async move { (n >= 8).then_some(()) }
    })
    .await
    .unwrap();
    let calls = state.calls.lock().unwrap().clone();
    let reset_gap = calls[7].0 - calls[6].0;
    assert!(
        reset_gap < gaps[3],
        "backoff must restart from the minimum after a success: {reset_gap:?} vs last grown {:?}",
        gaps[4]
    );
    shutdown.cancel();
    run.await.unwrap();
}

/// A reconcile that reports its own failure and answers `Ok(backoff)`
/// (the deployment controller's failed deploy) is retried with growing
/// delays too, not at the minimum forever (issue 12: a failed deploy must
/// not be redone in a tight loop).
#[tokio::test]
async fn handled_failures_that_ask_for_backoff_back_off_more_each_time() {
    let (_env, store) = setup().await;
    store.create(&config("cloud/failed", 0)).await.unwrap();
    let state = Arc::new(Flaky::default());
    let mut c = cfg(1);
    c.jitter = false;
    let ctl = Controller::new(
        "failed",
        store.clone(),
        state.clone(),
        c,
        |obj: Arc<Object<ConfigSpec>>, ctx: Arc<Ctx<Flaky>>| async move {
            ctx.data.calls.lock().unwrap().push((Instant::now(), obj.metadata.generation));
            Ok::<_, TestError>(Action::backoff())
        },
        default_policy,
    );
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(ctl.run(shutdown.clone()));
    eventually(DEADLINE, "five reconciles", || {
        let n = state.calls.lock().unwrap().len();
        async move { (n >= 5).then_some(()) }
    })
    .await
    .unwrap();
    let gaps: Vec<Duration> = {
        let calls = state.calls.lock().unwrap();
        calls.windows(2).map(|w| w[1].0 - w[0].0).collect()
    };
    for (i, g) in gaps.iter().take(4).enumerate() {
        let min = Duration::from_millis(50) * 2u32.pow(i as u32);
        assert!(*g >= min, "gap {i} was {g:?}, expected at least {min:?}: {gaps:?}");
    }
    shutdown.cancel();
    run.await.unwrap();
}

#[derive(Default)]
struct Counts(Mutex<HashMap<String, u32>>);

/// A periodic resync reconciles every key again although nothing changed, and writes nothing.
#[tokio::test]
async fn resync_reruns_every_key_without_writes() {
    let (_env, store) = setup().await;
    for i in 0..30 {
        store.create(&config(&format!("cloud/r{i:02}"), i)).await.unwrap();
    }
    let state = Arc::new(Counts::default());
    let mut c = cfg(2);
    c.resync = Some(Duration::from_millis(400));
    let ctl = Controller::new(
        "resync",
        store.clone(),
        state.clone(),
        c,
        |obj: Arc<Object<ConfigSpec>>, ctx: Arc<Ctx<Counts>>| async move {
            *ctx.data.0.lock().unwrap().entry(obj.key_name()).or_default() += 1;
            Ok::<_, TestError>(Action::await_change())
        },
        default_policy,
    );
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(ctl.run(shutdown.clone()));
    eventually(DEADLINE, "first reconcile of all 30", || {
        let n = state.0.lock().unwrap().len();
        async move { (n == 30).then_some(()) }
    })
    .await
    .unwrap();
    let rev = store.revision().await.unwrap();
    eventually(DEADLINE, "every key reconciled twice", || {
        let all = state.0.lock().unwrap().values().all(|n| *n >= 2);
        async move { all.then_some(()) }
    })
    .await
    .unwrap();
    // Only the leader key's lease refreshes could touch etcd, and those do
    // not create revisions.
    assert_eq!(store.revision().await.unwrap(), rev, "resync must not write");
    shutdown.cancel();
    run.await.unwrap();
}

/// A cache that resumes from a compacted revision relists and ends equal to etcd.
#[tokio::test]
async fn compaction_forces_a_relist_and_the_cache_matches_etcd() {
    let (_env, store) = setup().await;
    for i in 0..10 {
        store.create(&config(&format!("cloud/c{i}"), i)).await.unwrap();
    }
    let cache: Arc<Cache<ConfigSpec>> = Arc::default();
    let synced = sync_cache(&store, &cache, None).await;
    assert_eq!(cache.len(), 10);
    let seen_rev = cache.revision();
    synced.abort();

    // While "disconnected": deletes, updates, creates, then compaction.
    for i in 0..3 {
        store.delete::<ConfigSpec>(None, &format!("cloud/c{i}"), None).await.unwrap();
    }
    for i in 3..6 {
        let mut o: Object<ConfigSpec> = store.get(None, &format!("cloud/c{i}")).await.unwrap();
        o.spec.content = serde_json::json!({ "n": 100 + i });
        store.update_spec(&o).await.unwrap();
    }
    for i in 10..14 {
        store.create(&config(&format!("cloud/c{i}"), i)).await.unwrap();
    }
    store.compact(store.revision().await.unwrap()).await.unwrap();

    let woken = Arc::new(Mutex::new(Vec::new()));
    let w = woken.clone();
    let watcher = store.watch::<ConfigSpec>(Some(seen_rev + 1));
    let task = tokio::spawn(bosh_controllers::runtime::reflector::reflect(
        watcher,
        cache.clone(),
        Trigger::Any,
        move |k| w.lock().unwrap().push(k.to_string()),
    ));
    eventually(DEADLINE, "a second relist", || {
        let n = cache.relists();
        async move { (n >= 2).then_some(()) }
    })
    .await
    .unwrap();
    let truth = store.list::<ConfigSpec>("").await.unwrap().items;
    let cached: Vec<Object<ConfigSpec>> = cache.list().iter().map(|o| (**o).clone()).collect();
    assert_eq!(cached, truth);
    let mut woken = woken.lock().unwrap().clone();
    woken.sort();
    let expected: Vec<String> =
        [0, 1, 10, 11, 12, 13, 2, 3, 4, 5].iter().map(|i| format!("cloud/c{i}")).collect();
    assert_eq!(woken, expected, "only changed and deleted keys are woken");
    task.abort();
}

async fn sync_cache(
    store: &Store,
    cache: &Arc<Cache<ConfigSpec>>,
    from: Option<i64>,
) -> tokio::task::JoinHandle<()> {
    let task = tokio::spawn(bosh_controllers::runtime::reflector::reflect(
        store.watch::<ConfigSpec>(from),
        cache.clone(),
        Trigger::Any,
        |_| {},
    ));
    tokio::time::timeout(DEADLINE, cache.wait_synced()).await.unwrap();
    task
}

#[derive(Default)]
struct Slow {
    started: AtomicBool,
    finished: AtomicBool,
}

/// Shutdown lets a running reconcile finish before run returns.
#[tokio::test]
async fn shutdown_waits_for_running_reconciles() {
    let (_env, store) = setup().await;
    store.create(&config("cloud/slow", 0)).await.unwrap();
    let state = Arc::new(Slow::default());
    let ctl = Controller::new(
        "slow",
        store.clone(),
        state.clone(),
        cfg(1),
        |_obj: Arc<Object<ConfigSpec>>, ctx: Arc<Ctx<Slow>>| async move {
            ctx.data.started.store(true, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(300)).await;
            ctx.data.finished.store(true, Ordering::SeqCst);
            Ok::<_, TestError>(Action::await_change())
        },
        default_policy,
    );
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(ctl.run(shutdown.clone()));
    eventually(DEADLINE, "the reconcile to start", || {
        let s = state.started.load(Ordering::SeqCst);
        async move { s.then_some(()) }
    })
    .await
    .unwrap();
    shutdown.cancel();
    run.await.unwrap();
    assert!(state.finished.load(Ordering::SeqCst), "run returned before the reconcile finished");
    assert!(store.leader("slow").await.unwrap().is_none(), "shutdown must resign");
}
