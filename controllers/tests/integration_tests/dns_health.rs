//! BOSH DNS follows real health (issue 15): a deployed job whose process
//! dies (and cannot come back) leaves the smart group query `q-s0` as soon
//! as its agent's heartbeat says `failing` and the health monitor writes
//! it, stays in `q-s4` (all), and returns once the process runs again.
//! Real agents in container VMs, the real health monitor, boshd's DNS.

use std::net::SocketAddr;
use std::time::Duration;

use bosh_api::Object;
use bosh_api::objects::{InstanceHealth, InstanceSpec, TaskState};
use bosh_controllers::runtime::Reflectors;
use bosh_controllers::server::daemon;
use bosh_controllers::server::dns::{self, DnsConfig};
use bosh_controllers::testing::{Harness, WebManifest};
use bosh_test_utils::eventually;
use tokio_util::sync::CancellationToken;

use super::compile::example_release;
use super::deploy::{DeployHarness, world};

/// A failure is heard at once (the agent beats on a process failure); a
/// restart waits out the supervisor's backoff (at most 30 s) on a loaded
/// machine.
const DEADLINE: Duration = Duration::from_secs(120);

/// The A records `name` answers (sorted), or `None` without an answer.
async fn a_records(server: SocketAddr, name: &str) -> Option<Vec<String>> {
    super::dns::ask(server, name, true).await.map(|m| super::dns::ips(&m))
}

async fn until_answers(server: SocketAddr, name: &str, want: &[String]) {
    eventually(DEADLINE, &format!("{name} to answer {want:?}"), || async {
        a_records(server, name).await.filter(|ips| ips == want).map(|_| ())
    })
    .await
    .unwrap();
}

fn ip(i: &Object<InstanceSpec>) -> String {
    i.spec.networks[0].ip.clone()
}

/// Runs `script` in instance `i`'s VM through its agent.
async fn sh(h: &Harness, i: &Object<InstanceSpec>, script: &str) {
    let agent = h.director.agents.for_agent(i.status.agent_id.clone().unwrap());
    let r = agent.exec(&["sh".into(), "-c".into(), script.into()], Some(20)).await.unwrap();
    assert_eq!(r.exit_code, 0, "{script}: {}", r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_job_leaves_healthy_answers_and_returns() {
    let h = world().await;
    let tmp = tempfile::tempdir().unwrap();
    h.upload_release(&example_release(tmp.path())).await.unwrap();
    h.upload_stemcell().await.unwrap();
    let t = h.apply("hello", WebManifest::hello("hello", 2).value()).await;
    assert_eq!(h.task_end(t).await.0, TaskState::Done);
    let (udp, tcp) = dns::bind(&["127.0.0.1:0".parse().unwrap()]).unwrap();
    let server = udp[0].local_addr().unwrap();
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let store = h.store.clone();
    tokio::spawn(async move {
        daemon::run_dns(store, Reflectors::default(), DnsConfig::default(), udp, tcp, stop).await
    });

    let instances = h.instances("hello").await;
    let mut all: Vec<String> = instances.iter().map(ip).collect();
    all.sort();
    let (victim, other) = (&instances[0], &instances[1]);
    let (smart, every) = ("q-s0.web.default.hello.bosh.", "q-s4.web.default.hello.bosh.");
    until_answers(server, smart, &all).await;

    // The job's binary goes and its process dies: the supervisor's restarts
    // fail, the instance is failing.
    let bin = "/var/vcap/packages/hello/bin/hello";
    let pid = "/var/vcap/sys/run/hello/hello.pid";
    sh(&h, victim, &format!("mv {bin} {bin}.off && kill -9 $(cat {pid})")).await;
    let failing_at = std::time::Instant::now();
    until_answers(server, smart, &[ip(other)]).await;
    println!("dropped out of q-s0 after {:?}", failing_at.elapsed());
    let health = h.store.get::<InstanceSpec>(Some("hello"), &victim.metadata.name).await.unwrap();
    assert_eq!(health.status.health, Some(InstanceHealth::Failing));
    assert_eq!(a_records(server, every).await.unwrap(), all, "q-s4 answers every instance");
    let id_name = format!("{}.web.default.hello.bosh.", victim.spec.id);
    assert_eq!(a_records(server, &id_name).await.unwrap(), [ip(victim)], "its own name stays");

    // Back: the next restart finds the binary; the instance answers again.
    sh(&h, victim, &format!("mv {bin}.off {bin}")).await;
    until_answers(server, smart, &all).await;
    let health = h.store.get::<InstanceSpec>(Some("hello"), &victim.metadata.name).await.unwrap();
    assert_eq!(health.status.health, Some(InstanceHealth::Running));
    h.stop().await.unwrap();
}
