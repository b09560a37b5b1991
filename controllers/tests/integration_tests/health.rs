//! The health monitor under many heartbeats: etcd writes equal health
//! transitions, never one per heartbeat.

use std::time::Duration;

use bosh_api::agent::{Heartbeat, JobState};
use bosh_api::objects::{EventSpec, InstanceHealth, InstanceSpec};
use bosh_api::{Object, ObjectMeta};
use bosh_controllers::reconcilers::health::HealthConfig;
use bosh_controllers::server::daemon::{self, Options};
use bosh_controllers::testing::{Harness, HarnessOptions};
use bosh_test_utils::eventually;
use tokio_util::sync::CancellationToken;

async fn beat(nats: &async_nats::Client, agents: &[String]) {
    for a in agents {
        let hb =
            Heartbeat { agent_id: a.clone(), job_state: JobState::Running, ..Default::default() };
        let body = serde_json::to_vec(&hb).unwrap();
        nats.publish(format!("hm.agent.heartbeat.{a}"), body.into()).await.unwrap();
    }
    nats.flush().await.unwrap();
}

async fn count(h: &Harness, health: InstanceHealth) -> usize {
    let all = h.store.list::<InstanceSpec>("sim/").await.unwrap().items;
    all.iter().filter(|i| i.status.health == Some(health.clone())).count()
}

/// 200 agents heartbeat every second for 6 s: 200 writes (unknown →
/// running). Then 20 fall silent: 20 more status writes (→ unresponsive)
/// and their 20 alert events, while the other 180 keep beating and cause
/// none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_writes_equal_health_transitions() {
    let h =
        Harness::start(HarnessOptions { deploy: false, ..HarnessOptions::new() }).await.unwrap();
    let timeout = Duration::from_secs(3);
    let opts = Options {
        workers: 2,
        resync: Duration::from_secs(300),
        election: Default::default(),
        health: HealthConfig {
            agent_timeout: timeout,
            check_interval: Duration::from_millis(250),
            ..HealthConfig::default()
        },
        limits: Default::default(),
        render: Default::default(),
        orphan_vms: None,
        errand_timeout: Duration::from_secs(bosh_api::objects::DEFAULT_ERRAND_TIMEOUT_SECS),
        reflectors: Default::default(),
    };
    let agents: Vec<String> = (0..200).map(|i| format!("sim-{i:03}")).collect();
    for (i, a) in agents.iter().enumerate() {
        let mut o = Object::new(
            ObjectMeta::scoped("sim", format!("web/{a}")),
            InstanceSpec {
                group: "web".into(),
                id: a.clone(),
                index: i as u32,
                ..Default::default()
            },
        );
        o.status.vm_cid = Some(format!("vm-{a}"));
        o.status.agent_id = Some(a.clone());
        o.status.applied_hash = "sim".into();
        h.store.create(&o).await.unwrap();
    }
    let stop = CancellationToken::new();
    let monitor = tokio::spawn({
        let (d, s) = (h.director.clone(), stop.clone());
        async move { daemon::run_health(d, &opts, s).await }
    });
    let nats = h.director.agents.nats();
    // Counting starts once the monitor leads (taking the lead is a write).
    let store = h.store.clone();
    eventually(Duration::from_secs(10), "the monitor to lead", || {
        let store = store.clone();
        async move { store.leader("health-monitor").await.ok()?.map(|_| ()) }
    })
    .await
    .unwrap();
    let rev = h.store.revision().await.unwrap();
    for _ in 0..6 {
        beat(&nats, &agents).await;
        tokio::time::sleep(Duration::from_secs(1)).await; // the heartbeat interval
    }
    assert_eq!(count(&h, InstanceHealth::Running).await, 200);
    assert_eq!(h.store.revision().await.unwrap() - rev, 200, "one write per transition");

    let rev = h.store.revision().await.unwrap();
    let (silent, beating) = agents.split_at(20);
    let h2 = &h;
    let mut waited = 0;
    while count(h2, InstanceHealth::Unresponsive).await < 20 && waited < 20 {
        beat(&nats, beating).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        waited += 1;
    }
    beat(&nats, beating).await;
    assert_eq!(count(&h, InstanceHealth::Unresponsive).await, 20, "{silent:?} fell silent");
    assert_eq!(count(&h, InstanceHealth::Running).await, 180);
    // Each unresponsive agent also raises an alert: an event in task 0
    // (two writes: its sequence number and the event).
    let alerts = eventually(Duration::from_secs(5), "20 alert events", || async move {
        let n = h2.store.list::<EventSpec>("0000000000/").await.ok()?.items.len();
        (n == 20).then_some(n as i64)
    })
    .await
    .unwrap();
    eventually(Duration::from_secs(5), "the last writes", || async move {
        (h2.store.revision().await.ok()? - rev == 20 + 2 * alerts).then_some(())
    })
    .await
    .unwrap();
    stop.cancel();
    monitor.await.unwrap();
    h.stop().await.unwrap();
}

fn alert(n: u32) -> bosh_controllers::reconcilers::health::alerts::Alert {
    bosh_controllers::reconcilers::health::alerts::Alert {
        source: format!("agent a{n}"),
        severity: 2,
        title: "process is not running".into(),
        summary: format!("web {n} stopped"),
        created_at: 0,
    }
}

/// Every replica hears every agent alert; only the health monitor's
/// leader records it, and a leader whose lease is gone records nothing.
#[tokio::test]
async fn only_the_leading_replica_records_alerts() {
    use bosh_controllers::reconcilers::health::alerts::Sinks;
    let (_env, store) = super::setup().await;
    let events = || async { store.list::<EventSpec>("0000000000/").await.unwrap().items.len() };
    let follower = Sinks::new(None);
    follower.send(alert(1)).await;
    assert_eq!(events().await, 0, "a replica that never led records nothing");

    let lease = store.grant_lease(30).await.unwrap();
    let fence = store.try_acquire("health-monitor", "r0", lease).await.unwrap().unwrap();
    let leader = Sinks::new(None);
    leader.lead(&store.with_fence(fence));
    leader.send(alert(2)).await;
    assert_eq!(events().await, 1, "the leader records it");

    store.revoke_lease(lease).await.unwrap();
    leader.send(alert(3)).await;
    assert_eq!(events().await, 1, "a deposed leader records nothing");
}

/// Issue 12: an agent that falls silent is marked unresponsive within agent_timeout + one check interval of its last heartbeat (plus a little slack for the write and this test's polling), not the ~1.8 × timeout seen before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_agent_is_unresponsive_within_timeout_plus_one_check_interval() {
    let h =
        Harness::start(HarnessOptions { deploy: false, ..HarnessOptions::new() }).await.unwrap();
    let (timeout, interval) = (Duration::from_secs(3), Duration::from_millis(500));
    let opts = Options {
        workers: 2,
        resync: Duration::from_secs(300),
        election: Default::default(),
        health: HealthConfig {
            agent_timeout: timeout,
            check_interval: interval,
            ..HealthConfig::default()
        },
        limits: Default::default(),
        render: Default::default(),
        orphan_vms: None,
        errand_timeout: Duration::from_secs(bosh_api::objects::DEFAULT_ERRAND_TIMEOUT_SECS),
        reflectors: Default::default(),
    };
    let agents = vec!["quiet-0".to_string()];
    let mut o = Object::new(
        ObjectMeta::scoped("sim", "web/quiet-0"),
        InstanceSpec { group: "web".into(), id: "quiet-0".into(), ..Default::default() },
    );
    o.status.vm_cid = Some("vm-quiet-0".into());
    o.status.agent_id = Some(agents[0].clone());
    o.status.applied_hash = "sim".into();
    h.store.create(&o).await.unwrap();
    let stop = CancellationToken::new();
    let monitor = tokio::spawn({
        let (d, s) = (h.director.clone(), stop.clone());
        async move { daemon::run_health(d, &opts, s).await }
    });
    let nats = h.director.agents.nats();
    let h2 = &h;
    let beating = async {
        loop {
            beat(&nats, &agents).await;
            tokio::time::sleep(Duration::from_millis(500)).await; // the heartbeat interval
        }
    };
    tokio::select! {
        _ = beating => unreachable!(),
        r = eventually(Duration::from_secs(20), "the agent seen running", || async move {
            (count(h2, InstanceHealth::Running).await == 1).then_some(())
        }) => r.unwrap(),
    }
    beat(&nats, &agents).await; // the last heartbeat
    let silent = std::time::Instant::now();
    eventually(timeout * 4, "the agent seen unresponsive", || async move {
        (count(h2, InstanceHealth::Unresponsive).await == 1).then_some(())
    })
    .await
    .unwrap();
    let took = silent.elapsed();
    println!(
        "unresponsive {took:?} after the last heartbeat (timeout {timeout:?}, interval {interval:?})"
    );
    assert!(took >= timeout, "not before the timeout: {took:?}");
    let bound = timeout + interval + Duration::from_millis(500);
    assert!(took <= bound, "{took:?} > agent_timeout + check interval + slack ({bound:?})");
    stop.cancel();
    monitor.await.unwrap();
    h.stop().await.unwrap();
}
