//! The checker on hand-built states: a sound world passes, and each broken
//! promise is caught under its own invariant and no other.

use std::collections::BTreeMap;

use bosh_api::objects::{
    CompileWorker, CompiledPackageSpec, DiskPhase, DiskSpec, InstanceSpec, Reason,
};
use bosh_api::{Condition, Object, ObjectMeta};

use super::{Invariant, Records, World, check_world};
use crate::world::cpi::local::audit::{AuditEntry, AuditFence, AuditResult};
use crate::world::cpi::local::{DiskRecord, VmRecord};

const GEN: i64 = 10;

fn instance(
    id: &str,
    vm: Option<&str>,
    agent: &str,
    pending: Option<&str>,
) -> Object<InstanceSpec> {
    let mut o = Object::new(
        ObjectMeta::scoped("d", format!("web/{id}")),
        InstanceSpec { group: "web".into(), id: id.into(), ..Default::default() },
    );
    o.metadata.generation = GEN;
    o.status.vm_cid = vm.map(Into::into);
    o.status.agent_id = Some(agent.into());
    o.status.pending_create = pending.map(Into::into);
    o
}

fn vm(agent: &str, request: &str, tagged_for: Option<&str>, disks: &[&str]) -> VmRecord {
    let mut metadata = BTreeMap::new();
    if let Some(id) = tagged_for {
        metadata.insert("deployment".to_string(), "d".to_string());
        metadata.insert("id".to_string(), id.to_string());
    }
    VmRecord {
        agent_id: agent.into(),
        request_id: request.into(),
        stemcell_cid: "sc-1".into(),
        proc: None,
        disks: disks.iter().map(|d| d.to_string()).collect(),
        metadata,
        container: None,
    }
}

fn disk_record(attached_to: Option<&str>) -> DiskRecord {
    DiskRecord {
        size_mb: 10,
        request_id: "disk-u1".into(),
        attached_to: attached_to.map(Into::into),
    }
}

fn disk(
    instance: &str,
    uid: &str,
    cid: Option<&str>,
    phase: DiskPhase,
    attached_to: Option<&str>,
) -> Object<DiskSpec> {
    let mut o = Object::new(
        ObjectMeta::scoped("d", instance),
        DiskSpec { instance: instance.into(), size_mb: 10, ..Default::default() },
    );
    o.metadata.uid = uid.into();
    o.metadata.generation = GEN;
    o.status.cid = cid.map(Into::into);
    o.status.phase = phase;
    o.status.attached_to = attached_to.map(Into::into);
    o
}

fn call(seq: u64, method: &str, rev: i64, fence: i64) -> AuditEntry {
    AuditEntry {
        seq,
        pid: 1,
        etcd_revision: Some(rev),
        fence: Some(AuditFence { key: "/bosh/leader/instance".into(), revision: fence }),
        result: Some(AuditResult::Ok),
        ..AuditEntry::call(method)
    }
}

/// One instance `web/a` on VM `vm-1` with disk `disk-1` attached, and the
/// audit log of how it got there, each call preceded by its intent.
fn sound() -> World {
    let mut w = World::default();
    w.now.instances.push(instance("a", Some("vm-1"), "ag-1", None));
    w.now.disks.push(disk("web/a", "u1", Some("disk-1"), DiskPhase::Attached, Some("vm-1")));
    w.inventory.vms.insert("vm-1".into(), vm("ag-1", "r1", Some("a"), &["disk-1"]));
    w.inventory.disks.insert("disk-1".into(), disk_record(Some("vm-1")));
    let created = AuditEntry { cid: Some("vm-1".into()), ..call(1, "create_vm", 5, 3) };
    w.audit = vec![
        created.request("r1").agent("ag-1"),
        call(2, "set_vm_metadata", 6, 3).vm("vm-1"),
        AuditEntry { cid: Some("disk-1".into()), ..call(3, "create_disk", 7, 3) }
            .request("disk-u1"),
        call(4, "attach_disk", 8, 8).vm("vm-1").disk("disk-1"),
    ];
    let at = |instance: Object<InstanceSpec>, d: Option<Object<DiskSpec>>| Records {
        instances: vec![instance],
        disks: d.into_iter().collect(),
        ..Records::default()
    };
    w.past.insert(5, at(instance("a", None, "ag-1", Some("r1")), None));
    w.past.insert(6, at(instance("a", Some("vm-1"), "ag-1", None), None));
    let pending = disk("web/a", "u1", None, DiskPhase::Pending, None);
    w.past.insert(7, at(instance("a", Some("vm-1"), "ag-1", None), Some(pending)));
    let created = disk("web/a", "u1", Some("disk-1"), DiskPhase::Detached, None);
    w.past.insert(8, at(instance("a", Some("vm-1"), "ag-1", None), Some(created)));
    w
}

/// The invariants `w` breaks, each once, sorted.
fn broken(w: &World) -> Vec<Invariant> {
    let mut v: Vec<Invariant> = check_world(w).iter().map(|v| v.invariant).collect();
    v.sort();
    v.dedup();
    v
}

/// A world where every call followed its intent and records agree passes.
#[test]
fn a_sound_world_has_no_violations() {
    assert_eq!(check_world(&sound()), []);
}

/// I1: a second VM tagged for one instance (a leaked duplicate) is caught.
#[test]
fn i1_catches_two_vms_for_one_instance() {
    let mut w = sound();
    w.inventory.vms.insert("vm-2".into(), vm("ag-2", "r2", Some("a"), &[]));
    assert_eq!(broken(&w), [Invariant::I1]);
    let details: Vec<String> = check_world(&w).iter().map(|v| v.detail.clone()).collect();
    assert!(details.iter().any(|d| d.contains("has 2 VMs")), "{details:?}");
}

/// I1: an untagged VM nobody records (a create whose reply was lost and
/// that was never adopted) is caught; a recorded compile VM is not.
#[test]
fn i1_catches_an_untagged_vm_but_not_a_recorded_compile_vm() {
    let mut w = sound();
    w.inventory.vms.insert("vm-9".into(), vm("ag-9", "r9", None, &[]));
    assert_eq!(broken(&w), [Invariant::I1]);

    let mut w = sound();
    w.inventory.vms.insert("vm-c".into(), vm("compile-1", "compile-1", None, &[]));
    let mut pkg = Object::new(ObjectMeta::named("pkg"), CompiledPackageSpec::default());
    pkg.status.worker = Some(CompileWorker {
        deployment: "d".into(),
        agent_id: "compile-1".into(),
        request_id: "compile-1".into(),
        ip: "127.0.0.1".into(),
        vm_cid: "vm-c".into(),
        cpi: None,
    });
    w.now.compiled.push(pkg);
    assert_eq!(check_world(&w), []);
}

/// I1: a tagged VM its instance does not record (a leak after recreate) is caught.
#[test]
fn i1_catches_a_tagged_vm_the_instance_does_not_record() {
    let mut w = sound();
    w.now.instances[0].status.vm_cid = None;
    w.now.disks[0].status.attached_to = None;
    w.now.disks[0].status.phase = DiskPhase::Detached;
    w.inventory.vms.get_mut("vm-1").unwrap().disks.clear();
    w.inventory.disks.get_mut("disk-1").unwrap().attached_to = None;
    assert_eq!(broken(&w), [Invariant::I1]);
}

/// I2: a CPI disk no Disk object names (leaked), one named twice, one
/// whose instance is gone without being orphaned, and a Disk object naming
/// a disk the CPI lost are all caught; an orphaned disk is fine.
#[test]
fn i2_catches_leaked_shared_ownerless_and_lost_disks() {
    let mut w = sound();
    w.inventory.disks.insert("disk-9".into(), disk_record(None));
    assert_eq!(broken(&w), [Invariant::I2], "leaked");

    let mut w = sound();
    w.now.disks.push(disk("web/b", "u2", Some("disk-1"), DiskPhase::Detached, None));
    assert_eq!(broken(&w), [Invariant::I2], "two owners");

    let mut w = sound();
    w.now.disks.push(disk("web/gone", "u3", Some("disk-3"), DiskPhase::Detached, None));
    w.inventory.disks.insert("disk-3".into(), disk_record(None));
    assert_eq!(broken(&w), [Invariant::I2], "instance gone, not orphaned");
    w.now.disks.last_mut().unwrap().status.phase = DiskPhase::Orphaned;
    assert_eq!(check_world(&w), [], "orphaned");

    let mut w = sound();
    w.now.disks.push(disk("web/b", "u2", Some("disk-lost"), DiskPhase::Detached, None));
    w.now.instances.push(instance("b", None, "ag-b", None));
    assert_eq!(broken(&w), [Invariant::I2], "lost");
}

/// I3: a disk two VMs list, and etcd and the CPI disagreeing on where a
/// disk is attached, are caught.
#[test]
fn i3_catches_double_attachment_and_disagreement() {
    let mut w = sound();
    w.inventory.vms.insert("vm-x".into(), vm("ag-x", "rx", None, &["disk-1"]));
    w.now.compiled.push({
        let mut p = Object::new(ObjectMeta::named("p"), CompiledPackageSpec::default());
        p.status.worker = Some(CompileWorker { agent_id: "ag-x".into(), ..Default::default() });
        p
    });
    assert_eq!(broken(&w), [Invariant::I3]);

    let mut w = sound();
    w.now.disks[0].status.attached_to = Some("vm-other".into());
    assert_eq!(broken(&w), [Invariant::I3]);
}

/// I4: a create_vm with no intent recorded, one whose intent was written
/// together with its result (after the fact), and a call without a
/// recorded revision are caught; a call refused at admission is not.
#[test]
fn i4_catches_calls_without_prior_intent() {
    let mut w = sound();
    w.past.get_mut(&5).unwrap().instances[0].status.pending_create = None;
    assert_eq!(broken(&w), [Invariant::I4], "no intent");

    let mut w = sound();
    w.past.get_mut(&5).unwrap().instances[0].status.vm_cid = Some("vm-1".into());
    assert_eq!(broken(&w), [Invariant::I4], "intent only with the result");

    let mut w = sound();
    w.past.get_mut(&8).unwrap().disks.clear();
    assert_eq!(broken(&w), [Invariant::I4], "attach of an unrecorded disk");

    let mut w = sound();
    w.audit[1].etcd_revision = None;
    assert_eq!(broken(&w), [Invariant::I4], "unverifiable");

    // A deposed leader's late delete, refused at admission: no effect, so
    // nothing for an intent to precede.
    let mut w = sound();
    let mut late = call(5, "delete_vm", 8, 3).vm("vm-gone");
    late.result = Some(AuditResult::Error);
    w.audit.push(late.clone());
    assert_eq!(broken(&w), [Invariant::I4], "a failed call is still a call");
    late.refused = true;
    w.audit.pop();
    w.audit.push(late);
    assert_eq!(check_world(&w), [], "a refused one is not");
}

/// I4: the delete of a VM no instance owns has its intent in the
/// Deployment that records it as orphaned (the periodic scan's
/// `orphanedVms`, or an open cloud-check problem), and only there.
#[test]
fn i4_takes_a_deployments_orphan_record_as_the_intent_of_its_delete() {
    use bosh_api::objects::{DeploymentSpec, OrphanedVm, Problem, ProblemType};
    let orphan_delete = || {
        let mut w = sound();
        w.audit.push(call(5, "delete_vm", 9, 8).vm("vm-7"));
        w.past.insert(9, w.past[&8].clone());
        w
    };
    assert_eq!(broken(&orphan_delete()), [Invariant::I4], "no record of vm-7");

    let mut dep = Object::new(ObjectMeta::named("d"), DeploymentSpec::default());
    let now = chrono::Utc::now();
    dep.status.orphaned_vms.push(OrphanedVm {
        vm_cid: "vm-7".into(),
        description: "web/x".into(),
        since: now,
        delete_after: now,
    });
    let mut w = orphan_delete();
    w.past.get_mut(&9).unwrap().deployments.push(dep);
    assert_eq!(check_world(&w), [], "recorded by the scan");

    let mut dep = Object::new(ObjectMeta::named("d"), DeploymentSpec::default());
    let id = crate::reconcilers::deployment::problems::orphan_id("vm-7");
    dep.status.cloud_check.problems.push(Problem::new(id, ProblemType::OrphanedVm, "x".into()));
    let mut w = orphan_delete();
    w.past.get_mut(&9).unwrap().deployments.push(dep);
    assert_eq!(check_world(&w), [], "an open cloud-check problem");
}

/// I5: a call let through with an older fence than one before it is
/// caught; one refused by the fence check is not a violation.
#[test]
fn i5_catches_a_decreasing_fence_among_accepted_calls() {
    let mut w = sound();
    let mut late = call(5, "set_vm_metadata", 8, 3).vm("vm-1");
    late.result = Some(AuditResult::Error);
    w.audit.push(late.clone());
    assert_eq!(check_world(&w), []);
    late.result = Some(AuditResult::Ok);
    w.audit.push(late);
    assert_eq!(broken(&w), [Invariant::I5]);
}

/// I5: a call of the old term admitted after the new term began is
/// caught even when it comes before any call of the new term.
#[test]
fn i5_catches_an_old_term_call_admitted_after_its_successor_was_elected() {
    let mut w = sound();
    // Term 3's call admitted at revision 9, when term 8 (elected at
    // revision 8) had begun, though logged before term 8's next call.
    let zombie = call(5, "set_vm_metadata", 9, 3).vm("vm-1");
    let at8 = w.past[&8].clone();
    w.past.insert(9, at8);
    w.audit.insert(3, zombie.clone());
    assert_eq!(broken(&w), [Invariant::I5]);
    // Admitted at revision 7, before term 8: the old term still held.
    let mut w = sound();
    w.audit.insert(3, AuditEntry { etcd_revision: Some(7), ..zombie });
    assert_eq!(check_world(&w), []);
}

/// I6: an observed revision (status or condition) beyond the generation is caught.
#[test]
fn i6_catches_observed_revision_beyond_generation() {
    let mut w = sound();
    w.now.instances[0].status.observed_revision = GEN + 1;
    assert_eq!(broken(&w), [Invariant::I6]);

    let mut w = sound();
    w.now.disks[0].status.conditions.push(Condition::ready(true, Reason::Converged, "", GEN + 5));
    assert_eq!(broken(&w), [Invariant::I6]);
}
