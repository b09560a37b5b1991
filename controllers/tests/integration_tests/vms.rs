//! Local VMs with real agents on a secured bus: create, ping, die, delete.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bosh_api::agent::{BlobstoreSettings, MbusSettings, NetworkSettings, Settings};
use bosh_controllers::agent_client::{AgentClient, Timeouts};
use bosh_controllers::bus::{Bus, BusConfig};
use bosh_controllers::cpi::local::{self, LocalCpi};
use bosh_controllers::cpi::{Cpi, CreateVm, VmNetwork};
use bosh_test_utils::{Nats, eventually};

use super::{DEADLINE, setup};

/// A director's view of a private world: bus, blobstore, local CPI.
pub struct World {
    pub _env: bosh_test_utils::TestEnv,
    /// The test's nats-server picks its own port (overriding the config's).
    pub nats: Nats,
    pub bus: Bus,
    pub cpi: LocalCpi,
    pub stemcell: String,
    pub agents: AgentClient,
    pub blobstore_url: String,
    pub blobstore_token: String,
}

impl World {
    pub async fn start() -> World {
        let (env, store) = setup().await;
        let dir = env.dir().to_path_buf();
        let cfg = BusConfig::generate(
            dir.join("nats.conf"),
            dir.join("nats.pid"),
            "127.0.0.1:4222".into(),
        );
        let bus = Bus::new(store.clone(), cfg.clone());
        bus.sync().await.unwrap();
        let (conf, pid) = (dir.join("nats.conf"), dir.join("nats.pid"));
        let nats =
            Nats::start_in(&dir, &["-c", conf.to_str().unwrap(), "-P", pid.to_str().unwrap()])
                .await
                .unwrap();
        let director = async_nats::ConnectOptions::with_user_and_password(
            cfg.director.user.clone(),
            cfg.director.password.clone(),
        )
        .connect(nats.url())
        .await
        .unwrap();
        let agents = AgentClient::new(director)
            .with_timeouts(Timeouts { request: Duration::from_secs(2), ..Timeouts::default() });

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let blobstore_url = format!("http://{}", listener.local_addr().unwrap());
        let blobstore_token = "blob-token".to_string();
        let storage = Arc::new(bosh_blobstore::LocalStorage::new(dir.join("blobs")));
        tokio::spawn(bosh_blobstore::server::serve(
            listener,
            storage,
            blobstore_token.clone(),
            std::future::pending(),
        ));

        let cpi = LocalCpi::open(&dir.join("cpi")).unwrap();
        let agent = bosh_test_utils::agent::agent_binary().unwrap();
        let image = dir.join("image.tgz");
        local::build_image(&agent, &image).unwrap();
        let stemcell = cpi.create_stemcell(&image, &serde_json::json!({})).await.unwrap();
        World { _env: env, nats, bus, cpi, stemcell, agents, blobstore_url, blobstore_token }
    }

    /// Creates a VM whose agent has its own bus credentials.
    pub async fn create_vm(&self, agent_id: &str, ip: &str) -> String {
        let creds = self.bus.issue(agent_id).await.unwrap();
        let mut networks = BTreeMap::new();
        networks.insert(
            "default".to_string(),
            NetworkSettings { type_: "manual".into(), ip: ip.into(), ..Default::default() },
        );
        let settings = Settings {
            agent_id: agent_id.into(),
            mbus: MbusSettings { url: self.nats.url(), user: creds.user, password: creds.password },
            blobstore: BlobstoreSettings {
                url: self.blobstore_url.clone(),
                token: self.blobstore_token.clone(),
            },
            networks,
            heartbeat_interval_secs: 1,
            ..Default::default()
        };
        let mut vm_networks = BTreeMap::new();
        vm_networks
            .insert("default".to_string(), VmNetwork { ip: ip.into(), ..Default::default() });
        self.cpi
            .create_vm(&CreateVm {
                request_id: format!("req-{agent_id}"),
                agent_id: agent_id.into(),
                stemcell_cid: self.stemcell.clone(),
                networks: vm_networks,
                settings,
                ..Default::default()
            })
            .await
            .unwrap()
    }
}

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
    let w = World::start().await;
    let start = Instant::now();
    let mut vms = Vec::new();
    for i in 0..20 {
        let id = format!("agent-{i:02}");
        let vm = w.create_vm(&id, &format!("127.77.0.{}", 10 + i)).await;
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
