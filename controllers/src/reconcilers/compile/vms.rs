//! Compile VMs: claim an address and record the intent, create or adopt,
//! wait for the agent, delete.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use bosh_api::agent::NetworkSettings;
use bosh_api::agent::bosh_env::VmGroup;
use bosh_api::manifest::Subnet;
use bosh_api::objects::{
    CompileWorker, CompiledPackageSpec, InstanceNetwork, InstanceSpec, Reason,
};
use bosh_api::store::{Fence, Store};
use tracing::info;

use super::{Compiler, Error, plan};
use crate::failpoints as fp;
use crate::world::cpi::{CreateVm, FencedCpi, VmNetwork};
use crate::world::director::DIRECTOR_NAME;

/// A compile VM at work, and the package whose status records it.
#[derive(Debug, Clone)]
pub struct Worker {
    /// The CompiledPackage whose status holds the record.
    pub key: String,
    /// The record.
    pub worker: CompileWorker,
}

/// Where and how compile VMs of one deployment are made.
#[derive(Debug, Clone)]
pub struct CompileEnv {
    /// The deployment compiling.
    pub deployment: String,
    /// The CPI compile VMs are made in: the compilation AZ's (`None`: the
    /// default CPI).
    pub cpi: Option<String>,
    /// The stemcell's cid in that CPI.
    pub stemcell_cid: String,
    /// vm_type (and az, and legacy compilation) cloud properties, merged.
    pub cloud_properties: serde_json::Value,
    /// The compilation network's name.
    pub network: String,
    /// The subnet addresses come from.
    pub subnet: Subnet,
    /// `compilation.env`.
    pub env: serde_json::Value,
    /// At most this many compile VMs at once.
    pub workers: usize,
    /// Keep VMs for the next package of this walk.
    pub reuse: bool,
    /// How long a new VM's agent may take to answer ping.
    pub agent_wait: Duration,
    /// The deployment's task, whose event log records each compile.
    pub task: Option<u64>,
}

/// Claims a free address for a new compile VM of `key` and records the
/// worker (agent id, request id, address) in the package's status before
/// any VM exists. The claim is made under the director's address book,
/// against the addresses every recorded worker and every instance holds and
/// every deployment has planned. `None`: another
/// deployment's compile VM claimed the package first.
pub async fn claim(
    store: &Store,
    c: &Compiler,
    env: &CompileEnv,
    key: &str,
) -> Result<Option<CompileWorker>, Error> {
    let book = c.director.addresses.lock().await;
    let all = store.list::<CompiledPackageSpec>("").await?;
    let instances = store.list::<InstanceSpec>("").await?;
    let in_use: BTreeSet<Ipv4Addr> = all
        .items
        .iter()
        .filter_map(|o| o.status.worker.as_ref())
        .map(|w| w.ip.as_str())
        .chain(instances.items.iter().flat_map(|i| i.spec.networks.iter().map(|n| n.ip.as_str())))
        .filter_map(|ip| ip.parse().ok())
        .chain(book.others(""))
        .collect();
    let ip = plan::pick_ip(&env.subnet, &in_use)
        .map_err(|message| Error::Config {
            deployment: env.deployment.clone(),
            reason: Reason::NoCompilation,
            message,
        })?
        .ok_or_else(|| Error::Config {
            deployment: env.deployment.clone(),
            reason: Reason::NoCompileAddress,
            message: format!("no free address for a compile VM on network {}", env.network),
        })?;
    let id = uuid::Uuid::new_v4();
    let worker = CompileWorker {
        deployment: env.deployment.clone(),
        agent_id: format!("compile-{id}"),
        request_id: format!("compile-{id}"),
        ip: ip.to_string(),
        vm_cid: String::new(),
        cpi: env.cpi.clone(),
    };
    // The status write is a compare-and-swap: a claim racing this one
    // fails here rather than overwriting it.
    let mut obj = store.get::<CompiledPackageSpec>(None, key).await?;
    if obj.status.worker.is_some() {
        return Ok(None);
    }
    obj.status.worker = Some(worker.clone());
    store.update_status(&obj).await?;
    Ok(Some(worker))
}

/// Writes `worker` into the status of CompiledPackage `key`.
pub async fn record(store: &Store, key: &str, worker: Option<CompileWorker>) -> Result<(), Error> {
    let mut obj = store.get::<CompiledPackageSpec>(None, key).await?;
    if obj.status.worker != worker {
        obj.status.worker = worker;
        store.update_status(&obj).await?;
    }
    Ok(())
}

/// The CPI that makes (made) `worker`'s VM, in the term of `fence`.
async fn cpi_of(c: &Compiler, fence: &Fence, worker: &CompileWorker) -> Result<FencedCpi, Error> {
    c.director
        .fenced_cpi_named(worker.cpi.as_deref(), fence)
        .await
        .map_err(|source| Error::Cpi { agent: worker.agent_id.clone(), source })
}

/// The VM of `worker`: adopted if its CPI has one for its request id (a
/// reply lost to a crash), else created there in the term of `fence`.
/// Records the cid.
pub async fn ensure_vm(
    store: &Store,
    fence: &Fence,
    c: &Compiler,
    env: &CompileEnv,
    key: &str,
    worker: &mut CompileWorker,
) -> Result<(), Error> {
    let d = &c.director;
    let cpi = cpi_of(c, fence, worker).await?;
    let cpi_err = |source| Error::Cpi { agent: worker.agent_id.clone(), source };
    let found = cpi.find_vm_by_request(&worker.request_id).await;
    let cid = match crate::world::cpi::unsupported_as_none(found).map_err(cpi_err)? {
        Some(cid) => {
            info!(agent = %worker.agent_id, %cid, "adopting compile VM");
            cid
        }
        None => {
            let creds = d
                .bus
                .issue(store, &worker.agent_id)
                .await
                .map_err(|source| Error::Bus { agent: worker.agent_id.clone(), source })?;
            let range = env.subnet.range.clone().unwrap_or_default();
            let net = InstanceNetwork {
                name: env.network.clone(),
                type_: "manual".into(),
                ip: worker.ip.clone(),
                netmask: crate::libs::ipam::netmask(&range),
                gateway: env.subnet.gateway.clone().unwrap_or_default(),
                dns: env.subnet.dns.clone(),
                default: vec!["dns".into(), "gateway".into()],
                // As the subnet has them: `{}` when it has none, unlike an
                // instance's network (null), as before.
                cloud_properties: serde_json::to_value(&env.subnet.cloud_properties)
                    .unwrap_or_default(),
            };
            let settings = d.agent_settings(
                &worker.agent_id,
                creds,
                BTreeMap::from([(net.name.clone(), NetworkSettings::from(&net))]),
                env.env.clone(),
            );
            let vm_net = VmNetwork::from(&net);
            let req = CreateVm {
                request_id: worker.request_id.clone(),
                agent_id: worker.agent_id.clone(),
                stemcell_cid: env.stemcell_cid.clone(),
                cloud_properties: env.cloud_properties.clone(),
                networks: BTreeMap::from([(env.network.clone(), vm_net)]),
                settings,
                env: env.env.clone(),
                // As BOSH names a compilation VM's instance group.
                group: Some(VmGroup {
                    director: DIRECTOR_NAME.to_string(),
                    deployment: env.deployment.clone(),
                    instance_group: format!("compilation-{}", worker.agent_id),
                    tags: Default::default(),
                }),
                ..Default::default()
            };
            store.check_fence().await?;
            let cid = cpi.create_vm(&req).await.map_err(cpi_err)?;
            crate::failpoint!(
                fp::CPI_AFTER_CREATE_COMPILE_VM,
                Err(cpi_err(fp::lost_reply("create_vm")))
            );
            info!(agent = %worker.agent_id, %cid, ip = %worker.ip, "compile VM created");
            cid
        }
    };
    worker.vm_cid = cid;
    record(store, key, Some(worker.clone())).await
}

/// Waits until the worker's agent answers ping, up to `env.agent_wait`.
pub async fn wait_for_agent(
    c: &Compiler,
    env: &CompileEnv,
    worker: &CompileWorker,
) -> Result<(), Error> {
    // One try per ping: this loop is the retry.
    let agent = c.director.agents.for_agent(worker.agent_id.clone()).once();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let pinged = tokio::time::timeout(env.agent_wait, async {
        loop {
            tick.tick().await;
            if agent.ping().await.is_ok() {
                return;
            }
        }
    })
    .await;
    pinged.map_err(|_| Error::AgentUnresponsive {
        agent: worker.agent_id.clone(),
        waited: env.agent_wait,
    })
}

/// Deletes the worker's VM (by cid, or found by request id) through the
/// CPI that made it, in the term of `fence`, and revokes its bus
/// credentials. Idempotent.
pub async fn delete(
    store: &Store,
    fence: &Fence,
    c: &Compiler,
    worker: &CompileWorker,
) -> Result<(), Error> {
    let d = &c.director;
    let cpi = cpi_of(c, fence, worker).await?;
    let cpi_err = |source| Error::Cpi { agent: worker.agent_id.clone(), source };
    let cid = if worker.vm_cid.is_empty() {
        let found = cpi.find_vm_by_request(&worker.request_id).await;
        crate::world::cpi::unsupported_as_none(found).map_err(cpi_err)?
    } else {
        Some(worker.vm_cid.clone())
    };
    if let Some(cid) = cid {
        store.check_fence().await?;
        match cpi.delete_vm(&cid).await {
            Ok(()) => info!(agent = %worker.agent_id, %cid, "compile VM deleted"),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(cpi_err(e)),
        }
        crate::failpoint!(
            fp::CPI_AFTER_DELETE_COMPILE_VM,
            Err(cpi_err(fp::lost_reply("delete_vm")))
        );
    }
    d.bus
        .revoke(store, &worker.agent_id)
        .await
        .map_err(|source| Error::Bus { agent: worker.agent_id.clone(), source })
}
