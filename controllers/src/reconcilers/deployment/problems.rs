//! A deployment's problems (BOSH's cloud check, `cck`) at the deployment
//! level: gathering what its instances found, and what no single instance
//! can see.
//!
//! Each Instance scans itself when its share of `spec.cloudCheck` asks
//! ([`crate::reconcilers::instance::problems`]); this step gathers their problems into the
//! Deployment's status, looks for orphaned VMs (tagged with the
//! deployment, owned by no instance) once every instance has scanned, and
//! deletes the orphans an operator chose `delete_vm` for. It writes only
//! when something changed and calls the CPI only for a scan or a chosen
//! resolution, so a checked deployment at rest costs nothing.

use std::collections::BTreeSet;

use bosh_api::Object;
use bosh_api::objects::{
    DeploymentSpec, EventState, InstanceSpec, Problem, ProblemType, Reason, Resolution,
};
use tracing::{info, warn};

use super::{Deployer, event};
use crate::libs::lookup::{Blocked, Failure};
use crate::runtime::Ctx;
use crate::world::cpi::CpiError;

/// Where the deployment's cloud check stands after a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Every scan and resolution asked for is done.
    Settled,
    /// Waiting for instances (what for, for the condition's message).
    Waiting(String),
}

/// The id of the problem "VM `cid` is orphaned".
pub fn orphan_id(cid: &str) -> String {
    format!("{}/{cid}", ProblemType::OrphanedVm)
}

/// VMs tagged with `deployment` that no instance owns. Instances must have
/// been read after the listing: a VM is tagged only once its instance
/// records its cid, so a VM being created is never taken for an orphan.
pub fn orphans(
    deployment: &str,
    listed: &[crate::world::cpi::ListedVm],
    instances: &[Object<InstanceSpec>],
) -> Vec<Problem> {
    let owned: BTreeSet<&str> =
        instances.iter().filter_map(|i| i.status.vm_cid.as_deref()).collect();
    listed
        .iter()
        .filter(|vm| vm.metadata.get("deployment").map(String::as_str) == Some(deployment))
        .filter(|vm| !owned.contains(vm.cid.as_str()))
        .map(|vm| {
            let was = match (vm.metadata.get("name"), vm.metadata.get("index")) {
                (Some(n), Some(i)) => format!(" (tagged {n} ({i}))"),
                (Some(n), None) => format!(" (tagged {n})"),
                _ => String::new(),
            };
            let mut p = Problem::new(
                orphan_id(&vm.cid),
                ProblemType::OrphanedVm,
                format!("VM {} of deployment {deployment} is owned by no instance{was}", vm.cid),
            );
            p.vm_cid = Some(vm.cid.clone());
            p
        })
        .collect()
}

/// One step: orphan resolutions, the orphan scan once instances scanned,
/// and the problems gathered into `dep`'s status.
pub async fn step(
    ctx: &Ctx<Deployer>,
    dep: &mut Object<DeploymentSpec>,
    instances: &[Object<InstanceSpec>],
) -> Result<Progress, Failure> {
    let store = &ctx.store;
    let name = dep.metadata.name.clone();
    let want = dep.spec.cloud_check.clone();
    if want.is_empty() && dep.status.cloud_check == Default::default() {
        return Ok(Progress::Settled);
    }
    let task = dep.spec.task;
    let live: Vec<&Object<InstanceSpec>> =
        instances.iter().filter(|i| !i.metadata.is_deleting()).collect();

    // Orphaned VMs the operator chose to delete (or ignore).
    let prefix = format!("{}/", ProblemType::OrphanedVm);
    for (id, req) in &want.resolutions {
        let Some(cid) = id.strip_prefix(&prefix) else { continue };
        if dep.status.cloud_check.resolved.get(id) == Some(&req.token) {
            continue;
        }
        let open = dep.status.cloud_check.problems.iter().any(|p| &p.id == id);
        if open && req.resolution == Resolution::DeleteVm {
            let object = format!("orphaned VM {cid}: delete_vm");
            let stage = "Applying problem resolutions";
            event(store, task, stage, &object, EventState::Started, "").await;
            store.check_fence().await?;
            match delete_orphan(ctx, cid).await {
                Ok(()) => info!(deployment = %name, vm = %cid, "orphaned VM deleted"),
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    let msg = format!("deleting orphaned VM {cid}: {e}");
                    event(store, task, stage, &object, EventState::Failed, &msg).await;
                    return Err(Failure::Blocked(Blocked::new(Reason::CloudCheckFailed, msg)));
                }
            }
            event(store, task, stage, &object, EventState::Finished, "").await;
        }
        let (id, token) = (id.clone(), req.token);
        let deleted = open && req.resolution == Resolution::DeleteVm;
        crate::runtime::status::patch(store, dep, |s| {
            s.cloud_check.resolved.insert(id.clone(), token);
            if deleted {
                s.cloud_check.problems.retain(|p| p.id != id);
            }
        })
        .await?;
    }

    // Instances answer the scan and their resolutions first.
    // (Their specs carry the request once the deployment controller wrote it.)
    let behind = live
        .iter()
        .filter(|i| {
            i.spec.cloud_check != super::desired::cloud_check_of(&want, &i.metadata.name)
                || crate::reconcilers::instance::problems::pending(i)
        })
        .count();
    if behind > 0 {
        return Ok(Progress::Waiting(format!(
            "cloud check: waiting for {behind} instance(s) to scan or resolve"
        )));
    }

    // The orphan scan, once per scan token.
    let mut orphaned: Vec<Problem> = dep
        .status
        .cloud_check
        .problems
        .iter()
        .filter(|p| p.type_ == ProblemType::OrphanedVm)
        .cloned()
        .collect();
    let mut notes = dep.status.cloud_check.notes.clone();
    if dep.status.cloud_check.scanned != want.scan {
        notes.clear();
        match list_all_of(ctx).await {
            Ok(listed) => {
                // Read the instances again, after the listing (see `orphans`).
                let fresh = store.list::<InstanceSpec>(&format!("{name}/")).await?.items;
                orphaned = orphans(&name, &listed, &fresh);
            }
            Err(CpiError::NotSupported { .. }) => {
                orphaned.clear();
                notes.push(
                    "orphaned VMs not checked: this CPI cannot list its VMs (list_vms)".into(),
                );
            }
            Err(e) => {
                warn!(deployment = %name, error = %e, "could not list VMs");
                orphaned.clear();
                notes.push(format!("orphaned VMs not checked: {e}"));
            }
        }
    }
    let mut problems: Vec<Problem> =
        live.iter().flat_map(|i| i.status.cloud_check.problems.iter().cloned()).collect();
    problems.sort_by(|a, b| a.id.cmp(&b.id));
    problems.extend(orphaned);
    let scan = want.scan;
    crate::runtime::status::patch(store, dep, |s| {
        s.cloud_check.scanned = scan;
        s.cloud_check.problems = problems.clone();
        s.cloud_check.notes = notes.clone();
    })
    .await?;
    Ok(Progress::Settled)
}

/// Every VM of every CPI the director has (the default and the CPI
/// config's): orphans may be in any. Not supported only when no CPI can
/// list; a CPI that cannot is left out of the listing.
pub async fn list_all(
    director: &crate::world::director::Director,
) -> Result<Vec<crate::world::cpi::ListedVm>, CpiError> {
    let mut all = Vec::new();
    let mut listed_any = false;
    for (_, cpi) in director.all_cpis().await? {
        match cpi.list_vms().await {
            Ok(vms) => {
                listed_any = true;
                all.extend(vms);
            }
            Err(CpiError::NotSupported { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    if listed_any { Ok(all) } else { Err(CpiError::NotSupported { method: "list_vms" }) }
}

/// Deletes orphaned VM `cid` (no record says which CPI made it) through
/// the first CPI that has it; not found when none does.
pub async fn delete_orphan_in(
    director: &crate::world::director::Director,
    fence: &bosh_api::store::Fence,
    cid: &str,
) -> Result<(), CpiError> {
    for (_, cpi) in director.all_cpis().await? {
        if matches!(cpi.has_vm(cid).await, Ok(true)) {
            return crate::world::cpi::FencedCpi::new(cpi, fence.clone()).delete_vm(cid).await;
        }
    }
    Err(CpiError::NotFound { what: "vm", cid: cid.to_string() })
}

async fn delete_orphan(ctx: &Ctx<Deployer>, cid: &str) -> Result<(), CpiError> {
    delete_orphan_in(&ctx.data.director, &ctx.fence, cid).await
}

async fn list_all_of(ctx: &Ctx<Deployer>) -> Result<Vec<crate::world::cpi::ListedVm>, CpiError> {
    list_all(&ctx.data.director).await
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bosh_api::objects::InstanceStatus;
    use bosh_api::{Object, ObjectMeta};

    use super::*;
    use crate::world::cpi::ListedVm;

    fn listed(cid: &str, dep: &str) -> ListedVm {
        let mut metadata = BTreeMap::new();
        metadata.insert("deployment".to_string(), dep.to_string());
        metadata.insert("name".to_string(), format!("web/{cid}"));
        ListedVm { cid: cid.into(), metadata }
    }

    /// Only VMs tagged with this deployment and owned by no instance are orphans.
    #[test]
    fn orphans_are_this_deployments_vms_no_instance_owns() {
        let mut owner = Object::new(ObjectMeta::scoped("d", "web/a"), InstanceSpec::default());
        owner.status = InstanceStatus { vm_cid: Some("vm-1".into()), ..Default::default() };
        let vms = [
            listed("vm-1", "d"),
            listed("vm-2", "d"),
            listed("vm-3", "other"),
            ListedVm { cid: "vm-4".into(), metadata: BTreeMap::new() },
        ];
        let found = orphans("d", &vms, &[owner]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].id, "orphaned_vm/vm-2");
        assert_eq!(found[0].type_, ProblemType::OrphanedVm);
        assert_eq!(found[0].vm_cid.as_deref(), Some("vm-2"));
        assert_eq!(found[0].resolutions, [Resolution::Ignore, Resolution::DeleteVm]);
        assert!(found[0].description.contains("vm-2"), "{}", found[0].description);
    }
}
