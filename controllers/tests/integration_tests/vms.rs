//! Local VMs with real agents on a secured bus: create, ping, die, delete.

use std::path::Path;
use std::time::Instant;

use bosh_controllers::agent_client::AgentClient;
use bosh_controllers::cpi::Cpi;
use bosh_controllers::testing::LocalWorld;
use bosh_test_utils::eventually;

use super::DEADLINE;

async fn ping_until_up(agents: &AgentClient, agent_id: &str) {
    let a = agents.for_agent(agent_id);
    eventually(DEADLINE, &format!("{agent_id} to answer ping"), || {
        let a = a.clone();
        async move { a.ping().await.ok() }
    })
    .await
    .unwrap();
}

fn log_tail(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .rev()
        .take(20)
        .collect::<Vec<_>>()
        .join("\n")
}

/// 20 local VMs boot real agents that authenticate with their own credentials and all answer ping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_local_vms_answer_ping() {
    let w = LocalWorld::start().await.unwrap();
    let start = Instant::now();
    let mut vms = Vec::new();
    for i in 0..20 {
        let id = format!("agent-{i:02}");
        let vm = w.create_vm(&id, &format!("127.77.0.{}", 10 + i)).await.unwrap();
        vms.push((id, vm));
    }
    let pings = vms.iter().map(|(id, _)| ping_until_up(&w.agents, id));
    futures::future::join_all(pings).await;
    println!("20 VMs created and answering ping in {:?}", start.elapsed());

    // A VM whose agent died is a VM whose machine died.
    let (dead_id, dead_vm) = &vms[0];
    w.cpi.vm_process(dead_vm).await.unwrap().kill_tree();
    eventually(DEADLINE, "has_vm to turn false", || {
        let (cpi, vm) = (&w.cpi, dead_vm.clone());
        async move { (!cpi.has_vm(&vm).await.unwrap()).then_some(()) }
    })
    .await
    .unwrap();
    assert!(w.agents.for_agent(dead_id.as_str()).ping().await.is_err());
    for (id, vm) in &vms[1..] {
        assert!(
            w.cpi.has_vm(vm).await.unwrap(),
            "{vm}: {}",
            log_tail(&w.cpi.vm_dir(vm).join("agent.log"))
        );
        w.agents.for_agent(id.as_str()).ping().await.unwrap();
    }
    for (id, vm) in &vms {
        w.cpi.delete_vm(vm).await.unwrap();
        w.bus.revoke(id).await.unwrap();
    }
    assert!(w.agents.for_agent(vms[1].0.as_str()).ping().await.is_err(), "a deleted VM answered");
}
