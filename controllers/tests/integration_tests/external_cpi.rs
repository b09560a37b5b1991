//! The director's external CPI path end to end (issue 16 item 1): the
//! same container VMs as the local CPI, but every CPI call is a
//! `bosh-local-cpi` process speaking BOSH's protocol (JSON on stdin and
//! stdout). A deploy with a persistent disk, a recreate that keeps what
//! was written on the disk, and a delete that leaves no VM; exactly one VM
//! per instance and one disk per disk intent throughout. And a CPI without
//! bosh-rs's lookups (as every stock BOSH CPI): a `create_vm` whose reply
//! is lost is retried and adopts the VM through its agent, never making a
//! second one.

use std::time::Duration;

use bosh_api::Object;
use bosh_api::objects::{
    DeploymentSpec, DiskPhase, DiskSpec, InstanceOverride, InstancePhase, InstanceSpec, TaskState,
};
use bosh_controllers::libs::tasks::create_task;
use bosh_controllers::testing::CpiFaults;
use bosh_controllers::testing::{CpiPath, Harness, HarnessOptions};
use bosh_controllers::world::cpi::Cpi as _;
use bosh_controllers::world::cpi::local::LocalCpi;

use super::compile::example_release;
use super::deploy::{DeployHarness, manifest};

/// VMs the CPI lists for deployment `name` (through the external path).
async fn vms_of(h: &Harness, name: &str) -> Vec<String> {
    let all = h.director.cpi.list_vms().await.unwrap();
    all.into_iter()
        .filter(|v| v.metadata.get("deployment").map(String::as_str) == Some(name))
        .map(|v| v.cid)
        .collect()
}

async fn sh(h: &Harness, i: &Object<InstanceSpec>, script: &str) -> String {
    let agent = h.director.agents.for_agent(i.status.agent_id.clone().unwrap());
    let r = agent.exec(&["sh".into(), "-c".into(), script.into()], Some(20)).await.unwrap();
    assert_eq!(r.exit_code, 0, "{script}: {}", r.stderr);
    r.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_disk_recreate_and_delete_through_bosh_local_cpi() {
    let external = CpiPath::External { disabled: vec![] };
    let h = Harness::start(HarnessOptions { cpi_path: external, ..HarnessOptions::containers() })
        .await
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    h.upload_release(&example_release(tmp.path())).await.unwrap();
    h.upload_stemcell().await.unwrap();
    let started = std::time::Instant::now();
    let t = h.apply("ext", manifest("ext", 2, "through the protocol", 64)).await;
    let (state, result) = h.task_end(t).await;
    assert_eq!(state, TaskState::Done, "{result}");
    println!("deployed 2 instances through bosh-local-cpi in {:?}", started.elapsed());
    let instances = h.instances("ext").await;
    let vms = vms_of(&h, "ext").await;
    assert_eq!(vms.len(), 2, "one VM per instance: {vms:?}");
    for i in &instances {
        assert!(vms.contains(i.status.vm_cid.as_ref().unwrap()), "{vms:?}");
        let greeting = super::deploy::greeting(&i.spec.networks[0].ip).await;
        assert!(greeting.is_some_and(|g| g.contains("through the protocol")));
    }
    let disks = h.store.list::<DiskSpec>("ext/").await.unwrap().items;
    assert_eq!(disks.len(), 2, "one disk per disk intent");
    sh(&h, &instances[0], "echo kept > /var/vcap/store/marker").await;

    let recreate = InstanceOverride { recreate: 1, ..Default::default() };
    let t = h
        .apply_with("ext", |s| {
            s.instances.insert("web".into(), recreate.clone());
        })
        .await;
    assert_eq!(h.task_end(t).await.0, TaskState::Done);
    let after = h.instances("ext").await;
    let vms = vms_of(&h, "ext").await;
    assert_eq!(vms.len(), 2, "the old VMs are gone: {vms:?}");
    let same = after.iter().find(|i| i.spec.id == instances[0].spec.id).unwrap();
    assert_ne!(same.status.vm_cid, instances[0].status.vm_cid, "a new VM");
    assert_eq!(sh(&h, same, "cat /var/vcap/store/marker").await.trim(), "kept");
    assert_eq!(h.store.list::<DiskSpec>("ext/").await.unwrap().items.len(), 2);

    let task = create_task(&h.store, "delete deployment", Some("ext"), "test").await.unwrap();
    let mut d: Object<DeploymentSpec> = h.store.get(None, "ext").await.unwrap();
    d.spec.task = Some(task.spec.id);
    h.store.update_spec(&d).await.unwrap();
    h.store.delete::<DeploymentSpec>(None, "ext", None).await.unwrap();
    let deadline = Duration::from_secs(180);
    bosh_test_utils::eventually(deadline, "the deployment to be gone", || async {
        h.store.try_get::<DeploymentSpec>(None, "ext").await.ok()?.is_none().then_some(())
    })
    .await
    .unwrap();
    assert!(vms_of(&h, "ext").await.is_empty(), "no VM left");
    let disks = h.store.list::<DiskSpec>("ext/").await.unwrap().items;
    assert!(disks.iter().all(|d| d.status.phase == DiskPhase::Orphaned), "{disks:?}");
    h.stop().await.unwrap();
}

/// A stock CPI (no `find_vm_by_request`, `find_disk_by_request` or
/// `list_vms`) whose first `create_vm` makes the VM and loses the reply:
/// the deploy fails naming the call; the instance's retry finds the VM
/// through its agent (which reports the cid its CPI gave it) and adopts
/// it; one VM in all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_create_reply_from_a_stock_cpi_is_adopted_through_the_agent() {
    let disabled = ["find_vm_by_request", "find_disk_by_request", "list_vms"];
    let stock = CpiPath::External { disabled: disabled.iter().map(|m| m.to_string()).collect() };
    let h = Harness::start(HarnessOptions { cpi_path: stock, ..HarnessOptions::containers() })
        .await
        .unwrap();
    assert!(h.director.cpi.list_vms().await.unwrap_err().to_string().contains("not supported"));
    let tmp = tempfile::tempdir().unwrap();
    h.upload_release(&example_release(tmp.path())).await.unwrap();
    h.upload_stemcell().await.unwrap();
    // Compile first (compile VMs are not the subject here).
    let t = h.apply("stock", manifest("stock", 1, "adopted", 0)).await;
    assert_eq!(h.task_end(t).await.0, TaskState::Done);
    h.faults.set(CpiFaults { lose_create_replies: 1, ..Default::default() });
    let t = h.apply("stock", manifest("stock", 2, "adopted", 0)).await;
    let (state, result) = h.task_end(t).await;
    // The deploy fails as BOSH's does on a CPI error, naming it; the
    // intent (agent id, request id) stays recorded.
    assert_eq!(state, TaskState::Error, "{result}");
    assert!(result.contains("create_vm") && result.contains("lost"), "{result}");
    // The instance controller retries (a transient error backs off): the
    // retry adopts the VM through its agent instead of making another.
    bosh_test_utils::eventually(Duration::from_secs(120), "both instances running", || async {
        let all = h.instances("stock").await;
        let running = all.iter().filter(|i| i.status.phase == Some(InstancePhase::Running));
        (all.len() == 2 && running.count() == 2).then_some(())
    })
    .await
    .unwrap();
    let lost = h.faults.calls().iter().filter(|c| c.method == "create_vm" && c.injected).count();
    assert_eq!(lost, 1, "one reply was lost");
    // What the IaaS holds, read beside the director (its CPI cannot list).
    let local = LocalCpi::open(&h.cpi_root()).unwrap();
    let vms: Vec<_> = local
        .list_vms()
        .await
        .unwrap()
        .into_iter()
        .filter(|v| v.metadata.get("deployment").map(String::as_str) == Some("stock"))
        .collect();
    let instances = h.instances("stock").await;
    assert_eq!(vms.len(), 2, "one VM per instance, none twice: {vms:?}");
    for i in &instances {
        assert!(vms.iter().any(|v| Some(&v.cid) == i.status.vm_cid.as_ref()), "{vms:?}");
        let greeting = super::deploy::greeting(&i.spec.networks[0].ip).await;
        assert!(greeting.is_some_and(|g| g.contains("adopted")));
    }
    h.stop().await.unwrap();
}
