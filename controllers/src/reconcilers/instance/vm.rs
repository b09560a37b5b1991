//! The instance's VM: intent recorded, then created or adopted; deleted
//! with its bus credentials.

use std::collections::BTreeMap;
use std::time::Duration;

use bosh_api::Object;
use bosh_api::agent::NetworkSettings;
use bosh_api::agent::bosh_env::VmGroup;
use bosh_api::objects::{
    DeploymentSpec, InstancePhase, InstanceSpec, InstanceStatus, StemcellSpec,
};
use tracing::info;

use super::{Error, Instances, patch};
use crate::failpoints as fp;
use crate::runtime::Ctx;
use crate::world::cpi::{CreateVm, VmNetwork};
use crate::world::director::DIRECTOR_NAME;

fn cpi(method: &'static str) -> impl FnOnce(crate::world::cpi::CpiError) -> Error {
    move |source| Error::Cpi { method, source }
}

/// Creates the instance's VM, or adopts the one a lost reply left behind.
pub async fn create(ctx: &Ctx<Instances>, cur: &mut Object<InstanceSpec>) -> Result<(), Error> {
    let d = &ctx.data.director;
    let spec = cur.spec.clone();
    // A retry of a create whose reply was lost (or whose director died)
    // looks for the VM first; a first attempt has nothing to find.
    let retry = cur.status.pending_create.is_some();
    // The AZ's CPI, or (a retry) the one the intent names.
    let cpi_name = if retry { cur.status.cpi.clone() } else { spec.cpi.clone() };
    let vm_cpi = d.cpi_named(cpi_name.as_deref()).await.map_err(cpi("cpi_config"))?;
    let sc = ctx.store.try_get::<StemcellSpec>(None, &spec.stemcell).await?;
    let stemcell_cid = sc
        .as_ref()
        .and_then(|sc| crate::reconcilers::stemcell::cid_in(sc, vm_cpi.name()))
        .ok_or_else(|| {
            Error::Missing(format!(
                "stemcell {} is not imported into CPI {}",
                spec.stemcell,
                vm_cpi.name()
            ))
        })?
        .to_string();
    // Intent first: the agent id and the request id the VM will carry.
    let agent_id = cur.status.agent_id.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let request_id =
        cur.status.pending_create.clone().unwrap_or_else(|| format!("vm-{}", uuid::Uuid::new_v4()));
    let (a, r) = (agent_id.clone(), request_id.clone());
    let (vm_hash, token) = (spec.vm_hash.clone(), spec.recreate_token);
    patch(&ctx.store, cur, |s| {
        s.agent_id = Some(a.clone());
        s.pending_create = Some(r.clone());
        s.cpi = cpi_name.clone();
        // The intent names the spec it is for, so a retry on the same spec
        // (after a crash or a lost reply) is not taken for a stale VM and
        // deleted, but adopts the VM by request id (FAULT-MATRIX D1).
        s.vm_hash = vm_hash.clone();
        s.recreate_token = token;
        s.phase = Some(InstancePhase::Creating);
    })
    .await?;
    // How long a retry gives the agent of a VM a stock CPI may have made:
    // long enough for a VM that booted while the reply was lost, short
    // enough that retries after a failed create do not stall.
    let wait = if retry { ctx.data.agent_wait.min(ADOPT_WAIT) } else { Duration::ZERO };
    let fenced = crate::world::cpi::FencedCpi::new(vm_cpi, ctx.fence.clone());
    let cid = match find_vm(ctx, &fenced, &request_id, &agent_id, wait).await? {
        Some(cid) => {
            info!(instance = %cur.metadata.name, %cid, "adopting VM");
            cid
        }
        None => {
            let creds = d.bus.issue(&ctx.store, &agent_id).await?;
            let settings_nets: BTreeMap<String, NetworkSettings> =
                spec.networks.iter().map(|n| (n.name.clone(), n.into())).collect();
            let vm_nets: BTreeMap<String, VmNetwork> =
                spec.networks.iter().map(|n| (n.name.clone(), n.into())).collect();
            let deployment = cur.metadata.deployment.clone().unwrap_or_default();
            // The manifest's top-level tags, for BOSH's `env.bosh.tags`.
            let tags = match ctx.store.try_get::<DeploymentSpec>(None, &deployment).await? {
                Some(dep) => dep.spec.manifest.get("tags").cloned().unwrap_or_default(),
                None => serde_json::Value::Null,
            };
            // The spec holds `env`'s placeholders (and the manifest its
            // tags'); the values go to the CPI and the agent's settings
            // only (FAULT-MATRIX G5).
            let raw = serde_json::json!({"env": spec.env, "tags": tags});
            let resolved = if spec.env.is_null() && tags.is_null() {
                raw
            } else {
                crate::libs::variables::substitute(&ctx.store, &deployment, &raw).await?
            };
            let env = match &resolved["env"] {
                serde_json::Value::Null => serde_json::json!({}),
                e => e.clone(),
            };
            let group = VmGroup {
                director: DIRECTOR_NAME.to_string(),
                deployment,
                instance_group: spec.group.clone(),
                tags: resolved["tags"].as_object().cloned().unwrap_or_default(),
            };
            let stemcell_api_version = sc.as_ref().map(|sc| sc.spec.api_version).filter(|v| *v > 0);
            let settings = d.agent_settings(&agent_id, creds, settings_nets, env.clone());
            let req = CreateVm {
                request_id: request_id.clone(),
                agent_id: agent_id.clone(),
                stemcell_cid,
                cloud_properties: spec.cloud_properties.clone(),
                networks: vm_nets,
                disk_cids: cur.status.disk_cid.iter().cloned().collect(),
                settings,
                env,
                group: Some(group),
                stemcell_api_version,
            };
            ctx.store.check_fence().await?;
            let cid = fenced.create_vm(&req).await.map_err(cpi("create_vm"))?;
            crate::failpoint!(
                fp::CPI_AFTER_CREATE_VM,
                Err(cpi("create_vm")(fp::lost_reply("create_vm")))
            );
            info!(instance = %cur.metadata.name, %cid, "VM created");
            cid
        }
    };
    // Tagged before the cid is recorded: once the status names the VM no
    // later reconcile comes this way, so a lost reply of that write
    // (FAULT-MATRIX B5) would leave the VM untagged for good; a retry
    // before it adopts the VM by request id and tags it again.
    let mut meta = BTreeMap::new();
    meta.insert("deployment".to_string(), cur.metadata.deployment.clone().unwrap_or_default());
    meta.insert("instance_group".to_string(), spec.group.clone());
    meta.insert("index".to_string(), spec.index.to_string());
    meta.insert("id".to_string(), spec.id.clone());
    meta.insert("name".to_string(), format!("{}/{}", spec.group, spec.id));
    ctx.store.check_fence().await?;
    match fenced.set_vm_metadata(&cid, &meta).await {
        Ok(()) | Err(crate::world::cpi::CpiError::NotSupported { .. }) => {}
        Err(e) => return Err(cpi("set_vm_metadata")(e)),
    }
    crate::failpoint!(
        fp::CPI_AFTER_SET_VM_METADATA,
        Err(cpi("set_vm_metadata")(fp::lost_reply("set_vm_metadata")))
    );
    patch(&ctx.store, cur, |s| {
        s.vm_cid = Some(cid.clone());
        s.pending_create = None;
        s.vm_hash = vm_hash.clone();
        s.recreate_token = token;
        s.applied_hash.clear();
        s.processes.clear();
        s.phase = Some(InstancePhase::Created);
    })
    .await?;
    Ok(())
}

/// Waits until the VM's agent answers ping, up to `wait`.
pub async fn wait_for_agent(
    ctx: &Ctx<Instances>,
    cur: &Object<InstanceSpec>,
    wait: Duration,
) -> Result<(), Error> {
    let agent_id = cur.status.agent_id.clone().unwrap_or_default();
    if responsive(ctx, &agent_id, wait).await {
        Ok(())
    } else {
        Err(Error::Unresponsive { agent: agent_id, waited: wait })
    }
}

/// Whether the agent answers ping within `wait`.
pub async fn responsive(ctx: &Ctx<Instances>, agent_id: &str, wait: Duration) -> bool {
    // One try per ping: this loop is the retry.
    let agent = ctx.data.director.agents.for_agent(agent_id.to_string()).once();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tokio::time::timeout(wait, async {
        loop {
            tick.tick().await;
            if agent.ping().await.is_ok() {
                return;
            }
        }
    })
    .await
    .is_ok()
}

/// See [`create`]: a retry's wait for the agent of a VM to adopt, with a
/// CPI that cannot look VMs up by request id.
const ADOPT_WAIT: Duration = Duration::from_secs(30);

/// The VM created for `request_id`. The CPI is asked first; one without
/// the lookup (BOSH's protocol has none: every stock CPI) is answered by
/// the VM's agent, `agent_id`, recorded before `create_vm`: the CPI gave
/// the VM its cid in the agent's settings, and the agent reports it in
/// `get_state`. The agent gets `wait` to answer (zero: a first attempt,
/// nothing to find); silence means no VM to adopt.
async fn find_vm(
    ctx: &Ctx<Instances>,
    vm_cpi: &crate::world::cpi::FencedCpi,
    request_id: &str,
    agent_id: &str,
    wait: Duration,
) -> Result<Option<String>, Error> {
    let d = &ctx.data.director;
    match vm_cpi.find_vm_by_request(request_id).await {
        Ok(found) => Ok(found),
        Err(e @ crate::world::cpi::CpiError::NotSupported { .. }) => {
            if wait.is_zero() || agent_id.is_empty() {
                return Ok(None);
            }
            tracing::debug!(%request_id, error = %e, "asking the agent for its VM instead");
            let agent = d.agents.for_agent(agent_id.to_string());
            let deadline = tokio::time::Instant::now() + wait;
            match agent.get_state_by(false, deadline).await {
                Ok(state) if !state.vm_cid.is_empty() => Ok(Some(state.vm_cid)),
                _ => Ok(None),
            }
        }
        Err(e) => Err(cpi("find_vm_by_request")(e)),
    }
}

/// Deletes the VM (by cid, or found by request id), detaching the disk
/// first, and revokes the agent's credentials. Idempotent.
pub async fn delete(ctx: &Ctx<Instances>, cur: &mut Object<InstanceSpec>) -> Result<(), Error> {
    let d = &ctx.data.director;
    // The CPI that made the VM, whatever the AZ's is now.
    let vm_cpi = match (&cur.status.vm_cid, &cur.status.pending_create) {
        (None, None) => None,
        _ => Some(
            d.fenced_cpi_named(cur.status.cpi.as_deref(), &ctx.fence)
                .await
                .map_err(cpi("cpi_config"))?,
        ),
    };
    let cid = match (&cur.status.vm_cid, &cur.status.pending_create, &vm_cpi) {
        (Some(cid), _, _) => Some(cid.clone()),
        (None, Some(req), Some(vm_cpi)) => {
            let agent = cur.status.agent_id.clone().unwrap_or_default();
            find_vm(ctx, vm_cpi, req, &agent, ctx.data.agent_grace).await?
        }
        _ => None,
    };
    if let (Some(cid), Some(vm_cpi)) = (&cid, &vm_cpi) {
        super::disk::detach(ctx, cur, cid).await?;
        patch(&ctx.store, cur, |s| s.phase = Some(InstancePhase::Deleting)).await?;
        ctx.store.check_fence().await?;
        match vm_cpi.delete_vm(cid).await {
            Ok(()) => info!(instance = %cur.metadata.name, %cid, "VM deleted"),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(cpi("delete_vm")(e)),
        }
        crate::failpoint!(
            fp::CPI_AFTER_DELETE_VM,
            Err(cpi("delete_vm")(fp::lost_reply("delete_vm")))
        );
    }
    if let Some(agent) = cur.status.agent_id.clone() {
        d.bus.revoke(&ctx.store, &agent).await?;
    }
    patch(&ctx.store, cur, forget).await
}

/// Clears what the status says about a VM (it is gone, or forgotten).
pub fn forget(s: &mut InstanceStatus) {
    s.vm_cid = None;
    s.pending_create = None;
    s.cpi = None;
    s.agent_id = None;
    s.vm_hash.clear();
    s.applied_hash.clear();
    s.processes.clear();
    s.phase = Some(InstancePhase::Detached);
}
