//! One instance's problems (BOSH's cloud check, `cck`): a scan for them
//! when the spec's scan token moves, and the resolutions chosen for them,
//! carried out with the same VM and disk steps the rest of the controller
//! uses. The deployment gathers what its instances found
//! ([`crate::reconcilers::deployment::problems`]).
//!
//! Both are asked for through the spec (`spec.cloudCheck`, from the
//! Deployment's `spec.cloudCheck`) and answered in the status, so nothing
//! here runs unless someone asked: a resync of a checked instance compares
//! two tokens and stops. The spec change does not make the instance
//! unconverged: when the rest of the spec is the one `Ready` was reached
//! on (`status.convergedDigest`) and no resolution needs the VM rebuilt,
//! `Ready` is carried over to the new generation.

use std::time::Duration;

use bosh_api::meta::{find_condition, set_condition};
use bosh_api::objects::{
    ConditionType, DesiredState, DiskSpec, EventState, InstancePhase, InstanceSpec, Problem,
    ProblemType, Reason, Resolution,
};
use bosh_api::{Condition, Object};
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use super::{Error, Instances, Options, disk, display, event, jobs, patch, vm};
use crate::runtime::Ctx;

/// How long a scan waits for an agent to answer ping.
const PROBE: Duration = Duration::from_secs(3);

/// The stage resolutions are recorded under (BOSH's).
const STAGE: &str = "Applying problem resolutions";

fn cpi(method: &'static str) -> impl FnOnce(crate::world::cpi::CpiError) -> Error {
    move |source| Error::Cpi { method, source }
}

/// Digest of what the instance converges on: the spec without its
/// cloud-check requests.
pub fn digest(spec: &InstanceSpec) -> String {
    let mut s = spec.clone();
    s.cloud_check = Default::default();
    let bytes = serde_json::to_vec(&s).expect("specs serialize");
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether the spec asks for a scan or a resolution not yet carried out.
pub fn pending(obj: &Object<InstanceSpec>) -> bool {
    let (want, done) = (&obj.spec.cloud_check, &obj.status.cloud_check);
    want.scan != done.scanned
        || want.resolutions.iter().any(|(t, r)| done.resolved.get(t) != Some(&r.token))
}

/// Carries out what the spec asks (resolutions, then a scan), then carries
/// `Ready` over to the current generation when nothing else changed.
pub async fn run(
    ctx: &Ctx<Instances>,
    cur: &mut Object<InstanceSpec>,
    o: &Options,
) -> Result<(), Error> {
    let store = &ctx.store;
    let what = display(cur);
    let dep = cur.metadata.deployment.clone().unwrap_or_default();
    let generation = cur.metadata.generation;
    let mut rebuild = false;
    let mut acted = false;
    let mut resolved = Vec::new();
    let todo: Vec<_> = cur
        .spec
        .cloud_check
        .resolutions
        .iter()
        .filter(|(t, r)| cur.status.cloud_check.resolved.get(*t) != Some(&r.token))
        .map(|(t, r)| (*t, *r))
        .collect();
    for (t, req) in todo {
        let object = format!("{t} of {what}: {}", req.resolution);
        let open = cur.status.cloud_check.problems.iter().any(|p| p.type_ == t);
        let outcome = if !open {
            // Found fixed (or never found): acting now could do harm.
            info!(deployment = %dep, instance = %what, problem = %t, "problem no longer open; nothing to resolve");
            Ok(false)
        } else if !t.resolutions().contains(&req.resolution) {
            let allowed: Vec<&str> = t.resolutions().iter().map(|r| r.as_str()).collect();
            Err(Error::Missing(format!(
                "{} does not resolve {t} (allowed: {})",
                req.resolution,
                allowed.join(", ")
            )))
        } else {
            event(o, STAGE, &object, EventState::Started, "", store).await;
            info!(deployment = %dep, instance = %what, problem = %t, resolution = %req.resolution, "resolving");
            acted = true;
            apply_resolution(ctx, cur, t, req.resolution, o).await
        };
        match outcome {
            Ok(r) => {
                rebuild |= r;
                if open {
                    event(o, STAGE, &object, EventState::Finished, "", store).await;
                }
                resolved.push((t, req.token));
            }
            Err(e) => {
                let msg = format!("resolving {t}: {}", e.chain());
                warn!(deployment = %dep, instance = %what, error = %msg, "resolution failed");
                event(o, STAGE, &object, EventState::Failed, &msg, store).await;
                let _ = patch(store, cur, |s| {
                    s.cloud_check.resolved.extend(resolved.iter().copied());
                    set_condition(
                        &mut s.conditions,
                        Condition::ready(false, Reason::UpdateFailed, msg.clone(), generation),
                    );
                    s.observed_revision = generation;
                })
                .await;
                return Err(e);
            }
        }
    }
    let problems = if acted || cur.spec.cloud_check.scan != cur.status.cloud_check.scanned {
        let problems = scan(ctx, cur).await?;
        info!(deployment = %dep, instance = %what, problems = problems.len(), "scanned");
        Some(problems)
    } else {
        None
    };
    let was_ready =
        find_condition(&cur.status.conditions, ConditionType::Ready).is_some_and(|c| c.is_true());
    let restamp = !rebuild && was_ready && cur.status.converged_digest == digest(&cur.spec);
    // One write for all of it: a reconcile that reads it sees either
    // nothing done or everything, never "scanned but not ready".
    let token = cur.spec.cloud_check.scan;
    patch(store, cur, |s| {
        s.cloud_check.resolved.extend(resolved.iter().copied());
        if let Some(p) = &problems {
            s.cloud_check.problems = p.clone();
            s.cloud_check.scanned = token;
        }
        if restamp {
            if let Some(c) = s.conditions.iter_mut().find(|c| c.type_ == ConditionType::Ready) {
                c.observed_revision = generation;
            }
            s.observed_revision = generation;
        }
    })
    .await?;
    Ok(())
}

/// Carries out `r` for problem `t`; true when the instance must then be
/// driven again (its VM or disk is gone and is to be made anew).
async fn apply_resolution(
    ctx: &Ctx<Instances>,
    cur: &mut Object<InstanceSpec>,
    t: ProblemType,
    r: Resolution,
    o: &Options,
) -> Result<bool, Error> {
    let store = &ctx.store;
    match r {
        Resolution::Ignore => Ok(false),
        Resolution::RecreateVm | Resolution::RecreateVmWithoutWait | Resolution::DeleteVm => {
            // A missing or silent VM cannot be drained; a live one is.
            if !matches!(t, ProblemType::MissingVm | ProblemType::UnresponsiveAgent) {
                jobs::quiesce(ctx, cur, o, jobs::NextState::VM_DELETED).await?;
            }
            vm::delete(ctx, cur).await?;
            patch(store, cur, |s| s.health = None).await?;
            Ok(cur.spec.desired_state != DesiredState::Detached)
        }
        Resolution::DeleteVmReference => {
            let d = &ctx.data.director;
            if let Some(vm) = cur.status.vm_cid.clone() {
                // The forgotten VM may still hold the disk in the CPI's
                // books; free it, or the new VM could not attach it.
                if let Some((mut disk, cid)) = disk_of(ctx, cur).await? {
                    ctx.store.check_fence().await?;
                    if let Err(e) = disk_cpi(ctx, &disk).await?.detach_disk(&vm, &cid).await {
                        warn!(instance = %cur.metadata.name, disk = %cid, error = %e, "could not detach the disk from the forgotten VM");
                    }
                    crate::runtime::status::patch(store, &mut disk, |s| {
                        s.attached_to = None;
                        s.phase = bosh_api::objects::DiskPhase::Detached;
                    })
                    .await?;
                }
            }
            if let Some(agent) = cur.status.agent_id.clone() {
                d.bus.revoke(&ctx.store, &agent).await?;
            }
            patch(store, cur, |s| {
                vm::forget(s);
                s.disk_cid = None;
                s.health = None;
            })
            .await?;
            Ok(cur.spec.desired_state != DesiredState::Detached)
        }
        Resolution::RebootVm => {
            reboot(ctx, cur, o).await?;
            Ok(false)
        }
        Resolution::ReattachDisk | Resolution::ActivateDisk => {
            reattach(ctx, cur).await?;
            Ok(false)
        }
        Resolution::ReattachDiskAndReboot => {
            reattach(ctx, cur).await?;
            reboot(ctx, cur, o).await?;
            Ok(false)
        }
        Resolution::DeleteDiskReference => {
            if let Some((disk, _)) = disk_of(ctx, cur).await? {
                // The create request id is the Disk's uid: a new Disk
                // object, so the forgotten disk is never adopted again.
                let dep = cur.metadata.deployment.clone().unwrap_or_default();
                store.delete::<DiskSpec>(Some(&dep), &disk.metadata.name, None).await?;
            }
            patch(store, cur, |s| s.disk_cid = None).await?;
            Ok(true)
        }
        Resolution::DeleteDisk => {
            if let Some((disk, cid)) = disk_of(ctx, cur).await? {
                if let Some(vm) = disk.status.attached_to.clone() {
                    ctx.store.check_fence().await?;
                    match disk_cpi(ctx, &disk).await?.detach_disk(&vm, &cid).await {
                        Ok(()) => {}
                        Err(e) if e.is_not_found() => {}
                        Err(e) => return Err(cpi("detach_disk")(e)),
                    }
                }
                ctx.store.check_fence().await?;
                match disk_cpi(ctx, &disk).await?.delete_disk(&cid).await {
                    Ok(()) => info!(instance = %cur.metadata.name, disk = %cid, "disk deleted"),
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(cpi("delete_disk")(e)),
                }
                let dep = cur.metadata.deployment.clone().unwrap_or_default();
                store.delete::<DiskSpec>(Some(&dep), &disk.metadata.name, None).await?;
            }
            patch(store, cur, |s| s.disk_cid = None).await?;
            Ok(true)
        }
    }
}

/// The CPI that made the instance's VM.
async fn vm_cpi(
    ctx: &Ctx<Instances>,
    cur: &Object<InstanceSpec>,
) -> Result<crate::world::cpi::FencedCpi, Error> {
    let d = &ctx.data.director;
    d.fenced_cpi_named(cur.status.cpi.as_deref(), &ctx.fence).await.map_err(cpi("cpi_config"))
}

/// The CPI that made `disk`.
async fn disk_cpi(
    ctx: &Ctx<Instances>,
    disk: &Object<DiskSpec>,
) -> Result<crate::world::cpi::FencedCpi, Error> {
    let d = &ctx.data.director;
    d.fenced_cpi_named(disk.status.cpi.as_deref(), &ctx.fence).await.map_err(cpi("cpi_config"))
}

/// The instance's Disk object and its cid, when it has one.
async fn disk_of(
    ctx: &Ctx<Instances>,
    cur: &Object<InstanceSpec>,
) -> Result<Option<(Object<DiskSpec>, String)>, Error> {
    let dep = cur.metadata.deployment.clone().unwrap_or_default();
    let disk = ctx.store.try_get::<DiskSpec>(Some(&dep), &cur.metadata.name).await?;
    Ok(disk.and_then(|d| d.status.cid.clone().map(|c| (d, c))))
}

fn vm_of(cur: &Object<InstanceSpec>) -> Result<String, Error> {
    cur.status.vm_cid.clone().ok_or_else(|| Error::Missing(format!("{} has no VM", display(cur))))
}

/// Unmounts (best effort) and detaches the disk, then attaches and mounts
/// it again with the controller's own disk step.
async fn reattach(ctx: &Ctx<Instances>, cur: &mut Object<InstanceSpec>) -> Result<(), Error> {
    let vm = vm_of(cur)?;
    let d = &ctx.data.director;
    if let Some((mut disk, cid)) = disk_of(ctx, cur).await? {
        if let Some(agent) = cur.status.agent_id.clone() {
            let _ = d.agents.for_agent(agent).unmount_disk(&cid).await;
        }
        ctx.store.check_fence().await?;
        match disk_cpi(ctx, &disk).await?.detach_disk(&vm, &cid).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(cpi("detach_disk")(e)),
        }
        crate::runtime::status::patch(&ctx.store, &mut disk, |s| {
            s.attached_to = None;
            s.phase = bosh_api::objects::DiskPhase::Detached;
        })
        .await?;
    }
    disk::ensure(ctx, cur).await
}

/// Reboots the VM, waits for its agent, mounts the disk and starts the jobs.
async fn reboot(
    ctx: &Ctx<Instances>,
    cur: &mut Object<InstanceSpec>,
    o: &Options,
) -> Result<(), Error> {
    let vm = vm_of(cur)?;
    ctx.store.check_fence().await?;
    vm_cpi(ctx, cur).await?.reboot_vm(&vm).await.map_err(cpi("reboot_vm"))?;
    info!(instance = %cur.metadata.name, %vm, "VM rebooted");
    patch(&ctx.store, cur, |s| {
        s.phase = Some(InstancePhase::Stopped);
        s.processes.clear();
        s.health = None;
    })
    .await?;
    vm::wait_for_agent(ctx, cur, ctx.data.agent_wait).await?;
    if cur.spec.persistent_disk_mb > 0 {
        disk::ensure(ctx, cur).await?;
    }
    jobs::converge(ctx, cur, o).await
}

/// Looks at the instance's VM, agent and disk; one problem per thing wrong.
pub async fn scan(ctx: &Ctx<Instances>, cur: &Object<InstanceSpec>) -> Result<Vec<Problem>, Error> {
    let d = &ctx.data.director;
    let name = cur.metadata.name.clone();
    let what = display(cur);
    let mut found = Vec::new();
    let mut problem = |t: ProblemType, vm: Option<&str>, disk: Option<&str>, desc: String| {
        let mut p = Problem::new(Problem::instance_id(&name, t), t, desc);
        p.instance = Some(name.clone());
        p.vm_cid = vm.map(str::to_string);
        p.disk_cid = disk.map(str::to_string);
        found.push(p);
    };
    let vm = cur.status.vm_cid.clone();
    let (mut vm_alive, mut agent_ok) = (false, false);
    if let Some(vm) = &vm {
        if vm_cpi(ctx, cur).await?.has_vm(vm).await.map_err(cpi("has_vm"))? {
            vm_alive = true;
            let agent = cur.status.agent_id.clone().unwrap_or_default();
            agent_ok = !cur.status.is_unresponsive() && vm::responsive(ctx, &agent, PROBE).await;
            if !agent_ok {
                problem(
                    ProblemType::UnresponsiveAgent,
                    Some(vm),
                    None,
                    format!("{what} (VM {vm}) is not responding"),
                );
            }
        } else {
            problem(
                ProblemType::MissingVm,
                Some(vm),
                None,
                format!("VM {vm} of {what} is missing"),
            );
        }
    }
    if let Some((disk, cid)) = disk_of(ctx, cur).await? {
        if !disk_cpi(ctx, &disk).await?.has_disk(&cid).await.map_err(cpi("has_disk"))? {
            problem(
                ProblemType::MissingDisk,
                vm.as_deref(),
                Some(&cid),
                format!("Disk {cid} of {what} is missing"),
            );
        } else if let Some(vm) = vm.as_deref().filter(|_| vm_alive) {
            let attached = match vm_cpi(ctx, cur).await?.get_disks(vm).await {
                Ok(disks) => disks.contains(&cid),
                Err(crate::world::cpi::CpiError::NotSupported { .. }) => {
                    disk.status.attached_to.as_deref() == Some(vm)
                }
                Err(e) => return Err(cpi("get_disks")(e)),
            };
            if !attached {
                problem(
                    ProblemType::InactiveDisk,
                    Some(vm),
                    Some(&cid),
                    format!("Disk {cid} of {what} is not attached to VM {vm}"),
                );
            } else if agent_ok {
                let agent = d.agents.for_agent(cur.status.agent_id.clone().unwrap_or_default());
                match agent.list_disk().await {
                    Ok(mounted) if !mounted.contains(&cid) => problem(
                        ProblemType::MountInfoMismatch,
                        Some(vm),
                        Some(&cid),
                        format!(
                            "Disk {cid} of {what} is attached to VM {vm} but the agent reports {} mounted",
                            if mounted.is_empty() {
                                "no disk".to_string()
                            } else {
                                mounted.join(", ")
                            }
                        ),
                    ),
                    Ok(_) => {}
                    Err(e) => {
                        warn!(instance = %name, error = %e, "list_disk failed; mount not checked")
                    }
                }
            }
        }
    }
    Ok(found)
}
