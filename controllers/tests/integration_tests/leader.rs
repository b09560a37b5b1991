//! Leader election between two runtimes on one etcd.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bosh_api::Object;
use bosh_api::objects::ConfigSpec;
use bosh_api::store::{Error, Fence, Store};
use bosh_controllers::runtime::{Action, Config, Controller, Ctx, ElectionConfig, Stats, Trigger};
use bosh_test_utils::eventually;
use tokio_util::sync::CancellationToken;

use super::{DEADLINE, config, setup};

const TTL: Duration = Duration::from_secs(2);

#[derive(Default)]
struct Seen {
    /// (replica, fence) of every reconcile.
    fences: Mutex<Vec<(String, Fence)>>,
}

fn replica(
    store: &Store,
    holder: &str,
    seen: Arc<Seen>,
) -> (Arc<Stats>, CancellationToken, tokio::task::JoinHandle<()>) {
    let cfg = Config {
        workers: 1,
        resync: Some(Duration::from_millis(200)),
        trigger: Trigger::Any,
        election: ElectionConfig { ttl: TTL, holder: holder.to_string() },
        ..Config::default()
    };
    let me = holder.to_string();
    let ctl = Controller::new(
        "elected",
        store.clone(),
        seen,
        cfg,
        move |_obj: Arc<Object<ConfigSpec>>, ctx: Arc<Ctx<Seen>>| {
            let me = me.clone();
            async move {
                ctx.data.fences.lock().unwrap().push((me, ctx.fence.clone()));
                Ok::<_, std::io::Error>(Action::await_change())
            }
        },
        |_, _, _| Action::backoff(),
    );
    let stats = ctl.stats();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(ctl.run(shutdown.clone()));
    (stats, shutdown, task)
}

/// Two runtimes elect exactly one leader; when its lease is lost the other takes over within the TTL and the old fence is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_and_takeover_within_ttl_after_lease_loss() {
    let (_env, store) = setup().await;
    store.create(&config("cloud/x", 0)).await.unwrap();
    let seen = Arc::new(Seen::default());
    let (a, _stop_a, _ta) = replica(&store, "replica-a", seen.clone());
    let (b, _stop_b, _tb) = replica(&store, "replica-b", seen.clone());

    eventually(DEADLINE, "a leader", || {
        let one = a.is_leading() || b.is_leading();
        async move { one.then_some(()) }
    })
    .await
    .unwrap();
    // Let several resyncs pass: still exactly one leader, and only it reconciles.
    let leader = store.leader("elected").await.unwrap().unwrap();
    eventually(DEADLINE, "a few reconciles", || {
        let n = seen.fences.lock().unwrap().len();
        async move { (n >= 3).then_some(()) }
    })
    .await
    .unwrap();
    assert!(a.is_leading() ^ b.is_leading(), "exactly one replica leads");
    let (old_holder, old_fence) = seen.fences.lock().unwrap()[0].clone();
    assert_eq!(old_holder, leader.holder);
    assert!(seen.fences.lock().unwrap().iter().all(|(h, f)| *h == old_holder && *f == old_fence));

    // The leader loses its lease (as after a pause or partition).
    let lost_at = Instant::now();
    store.revoke_lease(leader.lease).await.unwrap();
    let new_leader = eventually(DEADLINE, "another replica to lead", || {
        let s = store.clone();
        let old = old_holder.clone();
        async move { s.leader("elected").await.ok().flatten().filter(|l| l.holder != old) }
    })
    .await
    .unwrap();
    let took = lost_at.elapsed();
    assert!(took < TTL, "takeover took {took:?}, more than the TTL {TTL:?}");
    assert!(new_leader.fence.revision > old_fence.revision);

    // The old fence is refused for every write.
    let err =
        store.with_fence(old_fence.clone()).create(&config("cloud/stale", 1)).await.unwrap_err();
    assert!(matches!(err, Error::Fenced { .. }), "{err}");
    // And the old leader stops (its keeper sees the lease gone).
    let (old_stats, new_stats) = if old_holder == "replica-a" { (&a, &b) } else { (&b, &a) };
    eventually(DEADLINE, "the old leader to step down", || {
        let done = !old_stats.is_leading() && new_stats.is_leading();
        async move { done.then_some(()) }
    })
    .await
    .unwrap();
    // Reconciles from now on carry the new fence only.
    let before = seen.fences.lock().unwrap().len();
    eventually(DEADLINE, "reconciles under the new leader", || {
        let n = seen.fences.lock().unwrap().len();
        async move { (n >= before + 2).then_some(()) }
    })
    .await
    .unwrap();
    let last = seen.fences.lock().unwrap().last().unwrap().clone();
    assert_eq!(last.0, new_leader.holder);
    assert_eq!(last.1, new_leader.fence);
}

/// When the leading replica dies without resigning, the other leads within the TTL plus one poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_after_leader_crash() {
    let (_env, store) = setup().await;
    let seen = Arc::new(Seen::default());
    let (a, _stop_a, task_a) = replica(&store, "replica-a", seen.clone());
    eventually(DEADLINE, "a to lead", || {
        let l = a.is_leading();
        async move { l.then_some(()) }
    })
    .await
    .unwrap();
    let (b, _stop_b, _tb) = replica(&store, "replica-b", seen.clone());
    // "Crash": the task is dropped mid-term; nothing resigns or revokes.
    task_a.abort();
    let crashed_at = Instant::now();
    eventually(DEADLINE, "b to lead", || {
        let l = b.is_leading();
        async move { l.then_some(()) }
    })
    .await
    .unwrap();
    let took = crashed_at.elapsed();
    assert!(took <= TTL + Duration::from_secs(1), "takeover after a crash took {took:?}");
}
