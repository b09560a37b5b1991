//! Local VMs with real agents on a secured bus: create, ping, die, delete.

use std::path::Path;
use std::time::Instant;

use bosh_controllers::testing::LocalWorld;
use bosh_controllers::world::agent_client::AgentClient;
use bosh_controllers::world::cpi::Cpi;
use bosh_test_utils::{SubnetLease, eventually};

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
    let subnet = SubnetLease::acquire();
    let start = Instant::now();
    let mut vms = Vec::new();
    for i in 0..20 {
        let id = format!("agent-{i:02}");
        let vm = w.create_vm(&id, &subnet.ip(10 + i).to_string()).await.unwrap();
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
        w.cpi.delete_vm(None, vm).await.unwrap();
        w.bus.revoke(&w.store, id).await.unwrap();
    }
    assert!(w.agents.for_agent(vms[1].0.as_str()).ping().await.is_err(), "a deleted VM answered");
}

/// The API lists a VM recorded by an Instance with its agent's live state, runs a command on it, and refuses unknown agents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_lists_vms_and_runs_commands_through_agents() {
    use bosh_api::objects::{InstanceNetwork, InstanceSpec};
    use bosh_api::{Object, ObjectMeta};
    use std::sync::Arc;

    let w = LocalWorld::start().await.unwrap();
    let subnet = SubnetLease::acquire();
    let vm = w.create_vm("agent-web-0", &subnet.ip(20).to_string()).await.unwrap();
    ping_until_up(&w.agents, "agent-web-0").await;
    let (director, rest) = w.director();
    let store = director.store.clone();
    let mut inst = Object::new(
        ObjectMeta::scoped("web", "web/0e6b"),
        InstanceSpec {
            group: "web".into(),
            az: Some("z1".into()),
            networks: vec![InstanceNetwork {
                name: "default".into(),
                ip: subnet.ip(20).to_string(),
                ..Default::default()
            }],
            ..Default::default()
        },
    );
    inst = store.create(&inst).await.unwrap();
    inst.status.vm_cid = Some(vm.clone());
    inst.status.agent_id = Some("agent-web-0".into());
    store.update_status(&inst).await.unwrap();

    let state = bosh_controllers::server::api::ApiState::new(store.clone(), "t")
        .with_director(director.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let router = bosh_controllers::server::api::router(Arc::new(state));
    tokio::spawn(bosh_controllers::server::api::serve(listener, router, std::future::pending()));
    let http = reqwest::Client::new();

    let vms: serde_json::Value = http
        .get(format!("{url}/v1/vms?deployment=web&vitals=true"))
        .bearer_auth("t")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(vms.as_array().unwrap().len(), 1, "{vms}");
    assert_eq!(vms[0]["vm_cid"], vm.as_str());
    assert_eq!(vms[0]["instance"], "web/0e6b");
    assert_ne!(vms[0]["state"], "unresponsive agent", "{vms}");
    assert!(vms[0]["vitals"].is_object(), "vitals were asked for: {vms}");

    let r: serde_json::Value = http
        .post(format!("{url}/v1/vms/agent-web-0/exec"))
        .bearer_auth("t")
        .json(&serde_json::json!({"command": ["/bin/sh", "-c", "echo hi from $BOSH_JOB_NAME; exit 4"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["exit_code"], 4, "{r}");
    assert!(r["stdout"].as_str().unwrap().starts_with("hi from"), "{r}");
    let r = http
        .post(format!("{url}/v1/vms/agent-nobody/exec"))
        .bearer_auth("t")
        .json(&serde_json::json!({"command": ["true"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "only VMs the director recorded can be reached");
    director.cpi.delete_vm(None, &vm).await.unwrap();
    drop(rest);
}

/// A `kill -9`ed agent is started again by its VM's init, as runit does on
/// a stemcell: the VM lives on (has_vm stays true) and the new agent answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agent_is_restarted_on_its_vm() {
    use bosh_controllers::world::cpi::local::process::agent_pid;

    let w = LocalWorld::start().await.unwrap();
    let subnet = SubnetLease::acquire();
    let vm = w.create_vm("agent-crash", &subnet.ip(30).to_string()).await.unwrap();
    ping_until_up(&w.agents, "agent-crash").await;
    let settings = w.cpi.vm_dir(&vm).join("settings.json");
    let first = agent_pid(&settings).expect("the agent runs");
    // SAFETY: a signal to the agent process found above.
    assert_eq!(unsafe { libc::kill(first, libc::SIGKILL) }, 0);
    let second = eventually(DEADLINE, "a new agent process", || {
        let s = settings.clone();
        async move { agent_pid(&s).filter(|p| *p != first) }
    })
    .await
    .unwrap();
    assert!(w.cpi.has_vm(&vm).await.unwrap(), "the VM outlives its agent");
    ping_until_up(&w.agents, "agent-crash").await;
    println!("agent {first} killed; {second} answers");
    w.cpi.delete_vm(None, &vm).await.unwrap();
    eventually(DEADLINE, "deleting the VM to end its agent for good", || {
        let s = settings.clone();
        async move { agent_pid(&s).is_none().then_some(()) }
    })
    .await
    .unwrap();
}
