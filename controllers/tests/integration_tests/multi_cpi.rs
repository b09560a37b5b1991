//! Several CPIs at once, as BOSH's CPI config has them: one deployment
//! spread over two AZs, `z1` served by the director's default CPI (the
//! embedded local CPI) and `z2` by a CPI of the CPI config
//! (`bosh-local-cpi`, an external executable, over another data dir).
//! Each instance's VM and disk exist in its AZ's CPI only, compile VMs in
//! the compilation AZ's; the stemcell is imported into both; a move of an
//! instance with a disk across CPIs, or into an AZ naming a CPI nobody
//! defines, is refused before anything changes;
//! deleting the deployment and the stemcell leaves no VM and no stemcell
//! in either CPI.

use std::path::Path;
use std::time::Duration;

use bosh_api::objects::{
    ConfigSpec, ConfigType, DeploymentSpec, DiskPhase, DiskSpec, StemcellSpec, TaskState,
};
use bosh_api::{Object, ObjectMeta};
use bosh_controllers::libs::tasks::create_task;
use bosh_controllers::testing::{Harness, HarnessOptions};
use bosh_controllers::world::cpi::local::{LocalCpi, audit};
use bosh_test_utils::eventually;
use serde_json::json;

use super::compile::example_release;
use super::deploy::{DeployHarness, manifest};

/// The cloud config: `z1` names no CPI (the default), `z2` names
/// `second`, or (`z1_cpi`) `z1` names one too; compile VMs in `z2`.
fn cloud(h: &Harness, z1_cpi: Option<&str>) -> serde_json::Value {
    let s = &h.subnet;
    let mut z1 = json!({"name": "z1"});
    if let Some(cpi) = z1_cpi {
        z1["cpi"] = json!(cpi);
    }
    json!({
        "azs": [z1, {"name": "z2", "cpi": "second"}],
        "vm_types": [{"name": "small", "cloud_properties": {"flavor": "compile"}}],
        "networks": [{"name": "default", "type": "manual", "subnets": [{
            "range": s.range(),
            "gateway": s.ip(1).to_string(),
            "azs": ["z1", "z2"],
            "reserved": [format!("{} - {}", s.ip(2), s.ip(9))],
            "static": [format!("{} - {}", s.ip(10), s.ip(20))],
        }]}],
        "compilation": {"workers": 2, "az": "z2", "vm_type": "small", "network": "default"},
    })
}

async fn put_config(h: &Harness, name: &str, type_: ConfigType, content: serde_json::Value) {
    let spec = ConfigSpec { type_, content };
    match h.store.try_get::<ConfigSpec>(None, name).await.unwrap() {
        Some(mut c) => {
            c.spec = spec;
            h.store.update_spec(&c).await.unwrap();
        }
        None => {
            h.store.create(&Object::new(ObjectMeta::named(name), spec)).await.unwrap();
        }
    }
}

/// Stops whatever VMs the second CPI still runs when the test ends (the
/// harness stops its own CPI's).
struct KillAll(std::path::PathBuf);

impl Drop for KillAll {
    fn drop(&mut self) {
        LocalCpi::kill_all(&self.0);
    }
}

/// `create_vm` calls a CPI's audit log records.
fn creates(root: &Path) -> usize {
    audit::read(root).unwrap().iter().filter(|e| e.method == "create_vm").count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_deployment_over_two_cpis() {
    let h = Harness::start(HarnessOptions::processes()).await.unwrap();
    let (first, second) = (h.cpi_root(), h.rest.env.dir().join("cpi-second"));
    let _kill = KillAll(second.clone());
    let exe = bosh_test_utils::agent::local_cpi_binary().unwrap();
    let cpi_config = json!({"cpis": [{
        "name": "second",
        "type": "local-protocol",
        "exec_path": exe,
        "properties": {"data_dir": second},
    }]});
    put_config(&h, "cpi/default", ConfigType::Cpi, cpi_config).await;
    put_config(&h, "cloud/default", ConfigType::Cloud, cloud(&h, None)).await;
    let tmp = tempfile::tempdir().unwrap();
    h.upload_release(&example_release(tmp.path())).await.unwrap();
    h.upload_stemcell().await.unwrap();
    let stemcell = eventually(Duration::from_secs(120), "the stemcell in both CPIs", || async {
        let s: Object<StemcellSpec> = h.store.get(None, "bosh-local-agent/1").await.ok()?;
        (s.status.cids.len() == 2).then_some(s)
    })
    .await
    .unwrap();
    assert_eq!(stemcell.status.cids.keys().collect::<Vec<_>>(), ["local", "second"]);
    let in_first = LocalCpi::inventory(&first).unwrap();
    let in_second = LocalCpi::inventory(&second).unwrap();
    assert!(in_first.stemcells.contains_key(&stemcell.status.cids["local"]));
    assert!(in_second.stemcells.contains_key(&stemcell.status.cids["second"]));

    // Two instances, one per AZ, each with a disk.
    let mut m = manifest("multi", 2, "two clouds", 64);
    m["instance_groups"][0]["azs"] = json!(["z1", "z2"]);
    // Process VMs share the host's network: each binds its own IP.
    m["instance_groups"][0]["jobs"][0]["properties"]["listen_on_instance_ip"] = json!(true);
    let t = h.apply("multi", m.clone()).await;
    let (state, result) = h.task_end(t).await;
    assert_eq!(state, TaskState::Done, "{result}");
    let instances = h.instances("multi").await;
    assert_eq!(instances.len(), 2);
    let in_first = LocalCpi::inventory(&first).unwrap();
    let in_second = LocalCpi::inventory(&second).unwrap();
    let disks = h.store.list::<DiskSpec>("multi/").await.unwrap().items;
    for i in &instances {
        let vm = i.status.vm_cid.clone().unwrap();
        let disk = disks.iter().find(|d| d.metadata.name == i.metadata.name).unwrap();
        let disk_cid = disk.status.cid.clone().unwrap();
        let (mine, other) = match i.spec.az.as_deref() {
            Some("z1") => (&in_first, &in_second),
            Some("z2") => (&in_second, &in_first),
            az => panic!("instance in az {az:?}"),
        };
        let want = (i.spec.az.as_deref() == Some("z2")).then(|| "second".to_string());
        assert_eq!(i.spec.cpi, want, "{}", i.metadata.name);
        assert_eq!(i.status.cpi, want, "the VM's CPI is recorded");
        assert_eq!(disk.status.cpi, want, "the disk's CPI is recorded");
        assert!(mine.vms.contains_key(&vm) && !other.vms.contains_key(&vm), "{vm}");
        assert!(mine.disks.contains_key(&disk_cid) && !other.disks.contains_key(&disk_cid));
        assert_eq!(mine.disks[&disk_cid].attached_to.as_deref(), Some(vm.as_str()));
        let greeting = super::deploy::greeting(&i.spec.networks[0].ip).await;
        assert!(greeting.is_some_and(|g| g.contains("two clouds")));
    }
    assert_eq!(in_first.vms.len() + in_second.vms.len(), 2, "compile VMs are gone");
    // Compile VMs were the compilation AZ's CPI's: the default CPI made
    // its one instance's VM and nothing else.
    let (made_first, made_second) = (creates(&first), creates(&second));
    assert_eq!(made_first, 1, "the default CPI made the z1 VM only");
    assert!(made_second > 1, "z2's CPI made the z2 VM and the compile VMs: {made_second}");

    // z1 now served by `second`: the z1 instance's disk would have to
    // move across CPIs. Refused, naming it, before anything changes.
    put_config(&h, "cloud/default", ConfigType::Cloud, cloud(&h, Some("second"))).await;
    let t = h.apply("multi", m.clone()).await;
    let (state, result) = h.task_end(t).await;
    assert_eq!(state, TaskState::Error, "{result}");
    let z1 = instances.iter().find(|i| i.spec.az.as_deref() == Some("z1")).unwrap();
    let name = format!("{}/{}", z1.spec.group, z1.spec.id);
    for part in [name.as_str(), "from az z1 (CPI local) to az z1 (CPI second)", "across CPIs"] {
        assert!(result.contains(part), "{part:?} not in {result}");
    }
    let after = h.instances("multi").await;
    for i in &instances {
        let now = after.iter().find(|a| a.metadata.name == i.metadata.name).unwrap();
        assert_eq!(now.spec, i.spec, "{} unchanged", i.metadata.name);
        assert_eq!(now.status.vm_cid, i.status.vm_cid);
    }
    assert_eq!((creates(&first), creates(&second)), (made_first, made_second));

    // z1 naming a CPI no CPI config defines: refused, naming it.
    put_config(&h, "cloud/default", ConfigType::Cloud, cloud(&h, Some("nope"))).await;
    let t = h.apply("multi", m.clone()).await;
    let (state, result) = h.task_end(t).await;
    assert_eq!(state, TaskState::Error, "{result}");
    for part in ["cloud config az z1 names CPI \"nope\"", "no CPI config defines", "second"] {
        assert!(result.contains(part), "{part:?} not in {result}");
    }
    assert_eq!((creates(&first), creates(&second)), (made_first, made_second));

    // Back as it was; then the deployment goes, from both CPIs.
    put_config(&h, "cloud/default", ConfigType::Cloud, cloud(&h, None)).await;
    let t = h.apply("multi", m).await;
    assert_eq!(h.task_end(t).await.0, TaskState::Done);
    let task = create_task(&h.store, "delete deployment", Some("multi"), "test").await.unwrap();
    let mut d: Object<DeploymentSpec> = h.store.get(None, "multi").await.unwrap();
    d.spec.task = Some(task.spec.id);
    h.store.update_spec(&d).await.unwrap();
    h.store.delete::<DeploymentSpec>(None, "multi", None).await.unwrap();
    eventually(Duration::from_secs(180), "the deployment to be gone", || async {
        h.store.try_get::<DeploymentSpec>(None, "multi").await.ok()?.is_none().then_some(())
    })
    .await
    .unwrap();
    let in_first = LocalCpi::inventory(&first).unwrap();
    let in_second = LocalCpi::inventory(&second).unwrap();
    assert!(in_first.vms.is_empty() && in_second.vms.is_empty(), "no VM left in either CPI");
    // Disks are orphaned, not deleted (as BOSH's), each in its own CPI.
    let disks = h.store.list::<DiskSpec>("multi/").await.unwrap().items;
    assert_eq!(disks.len(), 2);
    for d in &disks {
        assert_eq!(d.status.phase, DiskPhase::Orphaned);
        let root = if d.status.cpi.is_some() { &in_second } else { &in_first };
        assert!(root.disks.contains_key(d.status.cid.as_ref().unwrap()), "{d:?}");
        assert_eq!(root.disks[d.status.cid.as_ref().unwrap()].attached_to, None);
    }
    // The stemcell goes from both.
    h.store.delete::<StemcellSpec>(None, "bosh-local-agent/1", None).await.unwrap();
    eventually(Duration::from_secs(60), "the stemcell to be gone", || async {
        h.store
            .try_get::<StemcellSpec>(None, "bosh-local-agent/1")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await
    .unwrap();
    let cids = &stemcell.status.cids;
    assert!(!LocalCpi::inventory(&first).unwrap().stemcells.contains_key(&cids["local"]));
    assert!(LocalCpi::inventory(&second).unwrap().stemcells.is_empty());
    h.stop().await.unwrap();
}
