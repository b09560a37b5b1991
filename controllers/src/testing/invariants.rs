//! The fault matrix's invariant checker (FAULT-MATRIX.md, I1–I6), in the
//! spirit of etcd's model validation: it reads what etcd says (Instances,
//! Disks, Deployments, CompiledPackages, now and at past revisions) and
//! what the local CPI holds (its records and its audit log), and lists
//! every way they disagree with the director's promises.
//!
//! Run it at quiescent points (after convergence): I1–I3 compare current
//! state and would flag the half-done states in the middle of a step.
//!
//! What each invariant checks, exactly:
//!
//! - **I1** every VM in the CPI inventory (running or not: a VM whose
//!   process died still exists in the IaaS) carries instance tags
//!   (`deployment` and `id`, set by `set_vm_metadata`) or is a compile VM
//!   recorded in a CompiledPackage's `worker`; at most one VM is tagged per
//!   instance; and a tagged VM is the one its Instance records (`vm_cid`).
//! - **I2** every CPI disk is named (`status.cid`) by exactly one Disk
//!   object, which is either orphaned or belongs to an Instance that
//!   exists; and every Disk object's cid exists in the CPI (else data was
//!   lost).
//! - **I3** no CPI disk is listed by two VMs; the CPI's own two records of
//!   an attachment (the disk's `attached_to`, the VM's `disks`) agree; and
//!   a Disk object that says `Attached` to a VM names the VM the CPI has it
//!   attached to.
//! - **I4** every mutating call in the audit log was made after etcd
//!   recorded its intent: at the etcd revision the call was admitted at
//!   (`etcd_revision`, see [`crate::world::cpi::local::audit`]), etcd held
//!   - `create_vm(request R, agent A)`: an Instance whose status has
//!     `pendingCreate = R`, `agentId = A` and no `vmCid` (the intent, not
//!     yet the result), or a CompiledPackage whose `worker` has request id
//!     R and agent id A;
//!   - `create_disk(request R)`: the Disk object whose uid R names
//!     (`disk-<uid>`), without a cid or with the one the call returned;
//!   - `delete_vm`, `set_vm_metadata`, `reboot_vm` of VM V: an Instance
//!     recording V (`vmCid`, or `pendingCreate` = V's request id) or a
//!     compile worker recording V (its cid or request id); for
//!     `delete_vm` also a Deployment recording V as orphaned (the
//!     periodic scan's `orphanedVms`, or an open cloud-check problem);
//!   - `attach_disk(V, D)`: a Disk object with cid D and an Instance with
//!     `vmCid` V, the Disk's instance;
//!   - `detach_disk(V, D)`: a Disk object with cid D recorded as attached
//!     to V;
//!   - `delete_disk`, `resize_disk`, `snapshot_disk` of D: a Disk object
//!     with cid D.
//!
//!   Stemcell calls and `delete_snapshot` are not checked (no status
//!   records their intent), nor calls the CPI refused at admission (a
//!   stale fencing token: they had no effect). A call without a recorded revision (a CPI not
//!   given a store) is reported as unverifiable.
//! - **I5** per election key, the fencing tokens of the calls the CPI let
//!   through (result ok) never decrease in admission order; and no call
//!   was let through with a token whose successor's term had begun when it
//!   was admitted (its `etcd_revision` is at or past a newer token of the
//!   same election named anywhere in the log): a deposed leader's call
//!   admitted before its successor made any call of its own.
//! - **I6** every Instance, Deployment, Disk and CompiledPackage has
//!   `status.observedRevision` and every condition's `observedRevision` at
//!   most its `metadata.generation` (the spec's mod_revision).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use bosh_api::objects::{CompiledPackageSpec, DeploymentSpec, DiskPhase, DiskSpec, InstanceSpec};
use bosh_api::store::Store;
use bosh_api::{Condition, Kind, Object};

use crate::world::cpi::local::audit::{self, AuditEntry};
use crate::world::cpi::local::{Inventory, LocalCpi};

/// One of the matrix's invariants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Invariant {
    /// At most one VM per instance, none untagged.
    I1,
    /// Every CPI disk is one instance's active disk or an orphan.
    I2,
    /// A disk is attached to at most one VM.
    I3,
    /// Intent is recorded before every mutating CPI call.
    I4,
    /// Fencing tokens never go back.
    I5,
    /// observedRevision ≤ generation.
    I6,
}

/// One broken promise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Which invariant.
    pub invariant: Invariant,
    /// What exactly, naming the objects and cids.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.invariant, self.detail)
    }
}

/// The objects the checks read, as etcd held them at one revision.
#[derive(Debug, Clone, Default)]
pub struct Records {
    /// Instances.
    pub instances: Vec<Object<InstanceSpec>>,
    /// Disk objects.
    pub disks: Vec<Object<DiskSpec>>,
    /// Deployments (their orphaned VMs, and I6).
    pub deployments: Vec<Object<DeploymentSpec>>,
    /// CompiledPackages (their compile workers).
    pub compiled: Vec<Object<CompiledPackageSpec>>,
}

/// Everything the checker looks at.
#[derive(Debug, Clone, Default)]
pub struct World {
    /// etcd now.
    pub now: Records,
    /// The CPI's records.
    pub inventory: Inventory,
    /// The CPI's audit log, in admission order.
    pub audit: Vec<AuditEntry>,
    /// etcd at each revision an audited call was admitted at.
    pub past: BTreeMap<i64, Records>,
}

/// Reads etcd and the local CPI under `cpi_root`.
pub async fn gather(store: &Store, cpi_root: &Path) -> anyhow::Result<World> {
    gather_with_past(store, cpi_root, BTreeMap::new()).await
}

/// Like [`gather`], taking etcd's past states from `known` where it holds
/// them: a scenario that must compact etcd's history (FAULT-MATRIX B6)
/// gathers just before it compacts and passes the `past` it read here, so
/// that calls admitted before the compaction are still checked (I4).
pub async fn gather_with_past(
    store: &Store,
    cpi_root: &Path,
    known: BTreeMap<i64, Records>,
) -> anyhow::Result<World> {
    let now = Records {
        instances: store.list::<InstanceSpec>("").await?.items,
        disks: store.list::<DiskSpec>("").await?.items,
        deployments: store.list::<DeploymentSpec>("").await?.items,
        compiled: store.list::<CompiledPackageSpec>("").await?.items,
    };
    let inventory = LocalCpi::inventory(cpi_root)?;
    let audit = audit::read(cpi_root)?;
    let mut past = known;
    for rev in audit.iter().filter(|e| checked(&e.method)).filter_map(|e| e.etcd_revision) {
        if past.contains_key(&rev) {
            continue;
        }
        let at = Records {
            instances: store.list_at::<InstanceSpec>("", rev).await?.items,
            disks: store.list_at::<DiskSpec>("", rev).await?.items,
            deployments: store.list_at::<DeploymentSpec>("", rev).await?.items,
            compiled: store.list_at::<CompiledPackageSpec>("", rev).await?.items,
        };
        past.insert(rev, at);
    }
    Ok(World { now, inventory, audit, past })
}

/// Every violation of I1–I6 in etcd and the local CPI under `cpi_root`.
pub async fn check(store: &Store, cpi_root: &Path) -> anyhow::Result<Vec<Violation>> {
    Ok(check_world(&gather(store, cpi_root).await?))
}

/// Every violation of I1–I6 in `w`.
pub fn check_world(w: &World) -> Vec<Violation> {
    let mut out = Vec::new();
    i1(w, &mut out);
    i2(w, &mut out);
    i3(w, &mut out);
    i4(w, &mut out);
    i5(w, &mut out);
    i6(w, &mut out);
    out
}

fn violation(out: &mut Vec<Violation>, invariant: Invariant, detail: String) {
    out.push(Violation { invariant, detail });
}

fn deployment_of<S: Kind>(o: &Object<S>) -> &str {
    o.metadata.deployment.as_deref().unwrap_or_default()
}

fn i1(w: &World, out: &mut Vec<Violation>) {
    let compile_agents: BTreeSet<&str> = w
        .now
        .compiled
        .iter()
        .filter_map(|c| c.status.worker.as_ref())
        .map(|wk| wk.agent_id.as_str())
        .collect();
    let mut by_instance: BTreeMap<(&str, &str), Vec<&str>> = BTreeMap::new();
    for (cid, vm) in &w.inventory.vms {
        match (vm.metadata.get("deployment"), vm.metadata.get("id")) {
            (Some(dep), Some(id)) => {
                by_instance.entry((dep.as_str(), id.as_str())).or_default().push(cid)
            }
            _ if compile_agents.contains(vm.agent_id.as_str()) => {}
            _ => violation(
                out,
                Invariant::I1,
                format!(
                    "VM {cid} (agent {}, request {}) carries no instance tags and is no \
                     recorded compile VM",
                    vm.agent_id, vm.request_id
                ),
            ),
        }
    }
    for ((dep, id), cids) in by_instance {
        if cids.len() > 1 {
            violation(
                out,
                Invariant::I1,
                format!("instance {dep}/{id} has {} VMs: {cids:?}", cids.len()),
            );
        }
        let inst = w.now.instances.iter().find(|i| deployment_of(i) == dep && i.spec.id == id);
        for cid in cids {
            let recorded = inst.and_then(|i| i.status.vm_cid.as_deref());
            if recorded != Some(cid) {
                violation(
                    out,
                    Invariant::I1,
                    format!(
                        "VM {cid} is tagged for instance {dep}/{id}, which records {}",
                        match (inst, recorded) {
                            (None, _) => "nothing (no such instance)".to_string(),
                            (Some(_), None) => "no VM".to_string(),
                            (Some(_), Some(other)) => format!("VM {other}"),
                        }
                    ),
                );
            }
        }
    }
}

fn i2(w: &World, out: &mut Vec<Violation>) {
    for cid in w.inventory.disks.keys() {
        let owners: Vec<&Object<DiskSpec>> =
            w.now.disks.iter().filter(|d| d.status.cid.as_deref() == Some(cid)).collect();
        match owners.as_slice() {
            [] => {
                violation(out, Invariant::I2, format!("CPI disk {cid} is named by no Disk object"))
            }
            [d] if d.status.phase != DiskPhase::Orphaned => {
                let owner = w.now.instances.iter().any(|i| {
                    deployment_of(i) == deployment_of(*d) && i.metadata.name == d.spec.instance
                });
                if !owner {
                    violation(
                        out,
                        Invariant::I2,
                        format!(
                            "CPI disk {cid} is the active disk of Disk {}/{} whose instance {} \
                             does not exist, and it is not orphaned",
                            deployment_of(*d),
                            d.metadata.name,
                            d.spec.instance
                        ),
                    );
                }
            }
            [_] => {}
            many => violation(
                out,
                Invariant::I2,
                format!(
                    "CPI disk {cid} is named by {} Disk objects: {:?}",
                    many.len(),
                    many.iter().map(|d| d.key_name()).collect::<Vec<_>>()
                ),
            ),
        }
    }
    for d in &w.now.disks {
        if let Some(cid) = &d.status.cid
            && !w.inventory.disks.contains_key(cid)
        {
            violation(
                out,
                Invariant::I2,
                format!("Disk {} records disk {cid}, which the CPI does not have", d.key_name()),
            );
        }
    }
}

fn i3(w: &World, out: &mut Vec<Violation>) {
    for (cid, disk) in &w.inventory.disks {
        let listing: Vec<&str> = w
            .inventory
            .vms
            .iter()
            .filter(|(_, vm)| vm.disks.iter().any(|d| d == cid))
            .map(|(v, _)| v.as_str())
            .collect();
        if listing.len() > 1 {
            violation(out, Invariant::I3, format!("disk {cid} is attached to VMs {listing:?}"));
        }
        let claimed = disk.attached_to.as_deref();
        if claimed.map(|v| vec![v]).unwrap_or_default() != listing && listing.len() <= 1 {
            violation(
                out,
                Invariant::I3,
                format!(
                    "disk {cid} says it is attached to {claimed:?}, but VMs {listing:?} list it"
                ),
            );
        }
        for d in w.now.disks.iter().filter(|d| d.status.cid.as_deref() == Some(cid)) {
            if d.status.phase == DiskPhase::Attached && d.status.attached_to.as_deref() != claimed {
                violation(
                    out,
                    Invariant::I3,
                    format!(
                        "Disk {} says {cid} is attached to {:?}, the CPI says {claimed:?}",
                        d.key_name(),
                        d.status.attached_to
                    ),
                );
            }
        }
    }
}

/// Whether I4 checks calls of `method`.
fn checked(method: &str) -> bool {
    matches!(
        method,
        "create_vm"
            | "delete_vm"
            | "set_vm_metadata"
            | "reboot_vm"
            | "create_disk"
            | "attach_disk"
            | "detach_disk"
            | "delete_disk"
            | "resize_disk"
            | "snapshot_disk"
    )
}

fn i4(w: &World, out: &mut Vec<Violation>) {
    // Request ids of VMs, from the creates that returned them and the CPI's records.
    let mut requests: BTreeMap<&str, &str> = w
        .audit
        .iter()
        .filter(|e| e.method == "create_vm")
        .filter_map(|e| Some((e.cid.as_deref()?, e.request_id.as_deref()?)))
        .collect();
    for (cid, vm) in &w.inventory.vms {
        requests.insert(cid, &vm.request_id);
    }
    for e in w.audit.iter().filter(|e| checked(&e.method) && !e.refused) {
        let what = describe(e);
        let Some(rev) = e.etcd_revision else {
            violation(
                out,
                Invariant::I4,
                format!("{what}: no etcd revision recorded; unverifiable"),
            );
            continue;
        };
        let Some(at) = w.past.get(&rev) else {
            violation(out, Invariant::I4, format!("{what}: etcd at revision {rev} was not read"));
            continue;
        };
        let vm = e.vm_cid.as_deref().unwrap_or_default();
        let disk = e.disk_cid.as_deref().unwrap_or_default();
        let request = e.request_id.as_deref().unwrap_or_default();
        let vm_recorded = |vm: &str| {
            let req = requests.get(vm).copied();
            at.instances.iter().any(|i| {
                i.status.vm_cid.as_deref() == Some(vm)
                    || (req.is_some() && i.status.pending_create.as_deref() == req)
            }) || at
                .compiled
                .iter()
                .filter_map(|c| c.status.worker.as_ref())
                .any(|wk| wk.vm_cid == vm || Some(wk.request_id.as_str()) == req)
        };
        // A VM a Deployment records as orphaned: by the periodic scan, or
        // as an open cloud-check problem an operator resolves.
        let orphan_recorded = |vm: &str| {
            let problem = crate::reconcilers::deployment::problems::orphan_id(vm);
            at.deployments.iter().any(|d| {
                d.status.orphaned_vms.iter().any(|o| o.vm_cid == vm)
                    || d.status.cloud_check.problems.iter().any(|p| p.id == problem)
            })
        };
        let disk_object =
            |cid: &str| at.disks.iter().find(|d| d.status.cid.as_deref() == Some(cid));
        let intent = match e.method.as_str() {
            "create_vm" => {
                let agent = e.agent_id.as_deref().unwrap_or_default();
                at.instances.iter().any(|i| {
                    i.status.pending_create.as_deref() == Some(request)
                        && i.status.agent_id.as_deref() == Some(agent)
                        && i.status.vm_cid.is_none()
                }) || at
                    .compiled
                    .iter()
                    .filter_map(|c| c.status.worker.as_ref())
                    .any(|wk| wk.request_id == request && wk.agent_id == agent)
            }
            "create_disk" => at.disks.iter().any(|d| {
                format!("disk-{}", d.metadata.uid) == request
                    && (d.status.cid.is_none() || d.status.cid == e.cid)
            }),
            "delete_vm" => vm_recorded(vm) || orphan_recorded(vm),
            "set_vm_metadata" | "reboot_vm" => vm_recorded(vm),
            "attach_disk" => disk_object(disk).is_some_and(|d| {
                at.instances.iter().any(|i| {
                    i.status.vm_cid.as_deref() == Some(vm)
                        && i.metadata.name == d.spec.instance
                        && deployment_of(i) == deployment_of(d)
                })
            }),
            "detach_disk" => {
                disk_object(disk).is_some_and(|d| d.status.attached_to.as_deref() == Some(vm))
            }
            _ => disk_object(disk).is_some(),
        };
        if !intent {
            violation(
                out,
                Invariant::I4,
                format!("{what}: etcd recorded no intent for it at revision {rev}"),
            );
        }
    }
}

fn describe(e: &AuditEntry) -> String {
    let mut s = format!("audit #{} (pid {}) {}(", e.seq, e.pid, e.method);
    let args: Vec<String> = [
        ("request", &e.request_id),
        ("agent", &e.agent_id),
        ("vm", &e.vm_cid),
        ("disk", &e.disk_cid),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k} {v}")))
    .collect();
    s.push_str(&args.join(", "));
    s.push(')');
    s
}

fn i5(w: &World, out: &mut Vec<Violation>) {
    // Every fence the log names: each is a leader key's create revision,
    // so at any etcd revision at or past it the older terms of that
    // election had ended (the key is created only when absent).
    let mut terms: BTreeMap<&str, BTreeSet<i64>> = BTreeMap::new();
    for f in w.audit.iter().filter_map(|e| e.fence.as_ref()) {
        terms.entry(f.key.as_str()).or_default().insert(f.revision);
    }
    let mut newest: BTreeMap<&str, (i64, &AuditEntry)> = BTreeMap::new();
    for e in w.audit.iter().filter(|e| e.ok()) {
        let Some(f) = &e.fence else { continue };
        // A call admitted once its successor's term had begun: the etcd
        // revision read before its admission is at or past a newer fence
        // of the same election, whether or not the successor had yet made a
        // call this CPI saw.
        let successor = e
            .etcd_revision
            .filter(|rev| *rev > f.revision)
            .and_then(|rev| terms.get(f.key.as_str())?.range(f.revision + 1..=rev).next().copied());
        match newest.get(f.key.as_str()) {
            Some((seen, by)) if f.revision < *seen => violation(
                out,
                Invariant::I5,
                format!(
                    "{} was let through with fence {}@{} after {} had {}@{seen}",
                    describe(e),
                    f.key,
                    f.revision,
                    describe(by),
                    f.key
                ),
            ),
            _ if successor.is_some() => violation(
                out,
                Invariant::I5,
                format!(
                    "{} was let through with fence {}@{} at etcd revision {}, after term {}@{} \
                     had begun",
                    describe(e),
                    f.key,
                    f.revision,
                    e.etcd_revision.unwrap_or_default(),
                    f.key,
                    successor.unwrap_or_default()
                ),
            ),
            Some((seen, _)) if f.revision == *seen => {}
            _ => {
                newest.insert(&f.key, (f.revision, e));
            }
        }
    }
}

fn i6(w: &World, out: &mut Vec<Violation>) {
    fn one<S: Kind>(
        o: &Object<S>,
        observed: i64,
        conditions: &[Condition],
        out: &mut Vec<Violation>,
    ) {
        let generation = o.metadata.generation;
        if observed > generation {
            violation(
                out,
                Invariant::I6,
                format!(
                    "{} {}: status.observedRevision {observed} > generation {generation}",
                    S::KIND,
                    o.key_name()
                ),
            );
        }
        for c in conditions.iter().filter(|c| c.observed_revision > generation) {
            violation(
                out,
                Invariant::I6,
                format!(
                    "{} {}: condition {} observedRevision {} > generation {generation}",
                    S::KIND,
                    o.key_name(),
                    c.type_,
                    c.observed_revision
                ),
            );
        }
    }
    for o in &w.now.instances {
        one(o, o.status.observed_revision, &o.status.conditions, out);
    }
    for o in &w.now.deployments {
        one(o, o.status.observed_revision, &o.status.conditions, out);
    }
    for o in &w.now.disks {
        one(o, o.status.observed_revision, &o.status.conditions, out);
    }
    for o in &w.now.compiled {
        one(o, o.status.observed_revision, &o.status.conditions, out);
    }
}

#[cfg(test)]
#[path = "invariants_tests.rs"]
mod tests;
