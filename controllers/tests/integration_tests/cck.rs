//! Cloud check on real local VMs: a scan only when asked, problems in
//! status naming exactly what is wrong, and resolutions carried out as
//! changes of desired state under a task.

use std::time::Duration;

use bosh_api::meta::find_condition;
use bosh_api::objects::{ConditionType, InstancePhase};
use bosh_api::objects::{
    ConfigSpec, ConfigType, DeploymentSpec, EventState, InstanceSpec, StemcellSpec, TaskState,
};
use bosh_api::{ConditionStatus, Object, ObjectMeta};
use bosh_controllers::reconcilers::health::HealthConfig;
use bosh_controllers::testing::{CpiPath, Harness, HarnessOptions, TOKEN};
use bosh_controllers::world::cpi::CreateVm;
use bosh_controllers::world::cpi::local::LocalCpi;
use bosh_test_utils::eventually;
use serde_json::{Value, json};

use super::compile::example_release;
use super::deploy::{DeployHarness, manifest};
use super::external_cpi::assert_one_vm_and_one_disk_each;
use super::resurrect::stock_cpi;

/// A world whose director reaches the CPI by `cpi_path`.
async fn world(cpi_path: CpiPath) -> Harness {
    let health = HealthConfig {
        agent_timeout: Duration::from_secs(5),
        check_interval: Duration::from_millis(250),
        ..HealthConfig::default()
    };
    let h = Harness::start(HarnessOptions { health, cpi_path, ..HarnessOptions::containers() })
        .await
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    h.upload_release(&example_release(tmp.path())).await.unwrap();
    h.upload_stemcell().await.unwrap();
    h
}

async fn deployed(h: &Harness, name: &str, n: u32, disk_mb: u64) -> Vec<Object<InstanceSpec>> {
    let t = h.apply(name, manifest(name, n, "alive", disk_mb)).await;
    let (state, result) = h.task_end(t).await;
    assert_eq!(state, TaskState::Done, "{result}");
    h.instances(name).await
}

async fn api(h: &Harness, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let c = reqwest::Client::new();
    let url = format!("{}{path}", h.api_url);
    let req = match method {
        "GET" => c.get(url),
        _ => c.post(url).json(&body.unwrap_or(json!({}))),
    };
    let r = req.bearer_auth(TOKEN).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Scans `dep` through the API, waits for the task, and returns the report.
async fn scan(h: &Harness, dep: &str) -> Value {
    let (status, reply) = api(h, "POST", &format!("/v1/deployments/{dep}/cloud-check"), None).await;
    assert_eq!(status, 200, "{reply}");
    let (state, result) = h.task_end(reply["task"].as_u64().unwrap()).await;
    assert_eq!(state, TaskState::Done, "{result}");
    let (status, report) = api(h, "GET", &format!("/v1/deployments/{dep}/cloud-check"), None).await;
    assert_eq!(status, 200);
    assert_eq!(report["complete"], true, "{report}");
    report
}

/// Applies `resolutions` and waits for the task; returns its id.
async fn resolve(h: &Harness, dep: &str, resolutions: Value) -> u64 {
    let body = json!({ "resolutions": resolutions });
    let path = format!("/v1/deployments/{dep}/cloud-check/resolutions");
    let (status, reply) = api(h, "POST", &path, Some(body)).await;
    assert_eq!(status, 200, "{reply}");
    let task = reply["task"].as_u64().unwrap();
    let (state, result) = h.task_end(task).await;
    assert_eq!(state, TaskState::Done, "{result}");
    task
}

fn problems(report: &Value) -> Vec<(String, String)> {
    report["problems"]
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|p| (p["id"].as_str().unwrap().to_string(), p["type"].as_str().unwrap().to_string()))
        .collect()
}

fn creates(h: &Harness) -> usize {
    h.cpi.created.lock().unwrap().len()
}

async fn ready_on_new_vm(h: &Harness, dep: &str, name: &str, old: &str) -> Object<InstanceSpec> {
    let i: Object<InstanceSpec> = h.store.get(Some(dep), name).await.unwrap();
    let c = find_condition(&i.status.conditions, ConditionType::Ready).unwrap();
    assert_eq!(c.status, ConditionStatus::True, "{c:?}");
    assert_ne!(i.status.vm_cid.as_deref(), Some(old));
    assert_eq!(i.status.phase, Some(InstancePhase::Running));
    i
}

/// A dead VM (resurrection off) is the only problem a scan reports; a
/// rescan at rest costs no CPI call; a bad choice is refused with the
/// allowed resolutions and writes nothing; `recreate_vm` makes exactly one
/// VM; an orphaned VM is listed and `delete_vm` deletes exactly it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cck_finds_a_dead_vm_and_an_orphan_and_fixes_exactly_them() {
    dead_vm_and_orphan(CpiPath::InProcess).await;
}

/// [`cck_finds_a_dead_vm_and_an_orphan_and_fixes_exactly_them`] through
/// `bosh-local-cpi` as a stock CPI that can list VMs (issue 16).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cck_finds_a_dead_vm_and_an_orphan_and_fixes_exactly_them_through_bosh_local_cpi() {
    dead_vm_and_orphan(stock_cpi()).await;
}

async fn dead_vm_and_orphan(cpi_path: CpiPath) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("bosh_controllers=info")
        .with_test_writer()
        .try_init();
    let h = world(cpi_path).await;
    let quiet = ConfigSpec {
        type_: ConfigType::Resurrection,
        content: json!({"rules": [{"enabled": false, "include": {"deployments": ["cck"]}}]}),
    };
    h.store.create(&Object::new(ObjectMeta::named("resurrection/cck"), quiet)).await.unwrap();
    let instances = deployed(&h, "cck", 2, 0).await;
    let report = scan(&h, "cck").await;
    assert_eq!(problems(&report), [], "a healthy deployment: {report}");

    // (d) At rest after a scan: resyncs (2 s) make no CPI call.
    let calls = h.cpi.calls();
    tokio::time::sleep(Duration::from_secs(5)).await; // an observation window of two resyncs
    assert_eq!(h.cpi.calls(), calls, "no CPI call at rest after a scan");

    // (a) Kill one VM's process tree.
    let victim = instances.iter().find(|i| i.spec.index == 0).unwrap();
    let bystander = instances.iter().find(|i| i.spec.index == 1).unwrap();
    let old = victim.status.vm_cid.clone().unwrap();
    assert!(LocalCpi::signal_vm(&h.cpi_root(), &old, "SIGKILL").unwrap() > 0);
    let h2 = &h;
    let old2 = old.clone();
    eventually(Duration::from_secs(20), "the VM to be gone", || {
        let old = old2.clone();
        async move { (!h2.director.cpi.has_vm(&old).await.ok()?).then_some(()) }
    })
    .await
    .unwrap();
    let report = scan(&h, "cck").await;
    let id = format!("{}/missing_vm", victim.metadata.name);
    assert_eq!(problems(&report), [(id.clone(), "missing_vm".to_string())], "{report}");
    let p = &report["problems"][0];
    assert!(p["description"].as_str().unwrap().contains(&old), "{p}");
    assert!(p["description"].as_str().unwrap().contains(" (0)"), "{p}");
    assert_eq!(p["autoResolution"], "recreate_vm_without_wait");

    // (e) A resolution the problem does not allow: 422, nothing written.
    let before: Object<DeploymentSpec> = h.store.get(None, "cck").await.unwrap();
    let path = "/v1/deployments/cck/cloud-check/resolutions";
    let bad = json!({"resolutions": {id.clone(): "reattach_disk"}});
    let (status, err) = api(&h, "POST", path, Some(bad)).await;
    assert_eq!(status, 422, "{err}");
    let text = err.to_string();
    assert!(text.contains(&id) && text.contains("recreate_vm, delete_vm_reference"), "{text}");
    let after: Object<DeploymentSpec> = h.store.get(None, "cck").await.unwrap();
    assert_eq!(after.metadata.resource_version, before.metadata.resource_version);

    let made = creates(&h);
    let task = resolve(&h, "cck", json!({ id.clone(): "recreate_vm" })).await;
    assert_eq!(creates(&h), made + 1, "exactly one create_vm");
    ready_on_new_vm(&h, "cck", &victim.metadata.name, &old).await;
    let other: Object<InstanceSpec> =
        h.store.get(Some("cck"), &bystander.metadata.name).await.unwrap();
    assert_eq!(other.status.vm_cid, bystander.status.vm_cid, "the other VM is untouched");
    let events = h.events(task).await;
    assert!(
        events.iter().any(|e| e.stage == "Applying problem resolutions"
            && e.state == EventState::Finished
            && e.object.contains("missing_vm")),
        "{events:?}"
    );
    let (_, report) = api(&h, "GET", "/v1/deployments/cck/cloud-check", None).await;
    assert_eq!(problems(&report), [], "the problem is gone: {report}");

    // (c) An orphaned VM tagged with the deployment.
    let sc: Object<StemcellSpec> = h.store.get(None, "bosh-local-agent/1").await.unwrap();
    let stemcell = sc.status.cids.values().next().unwrap().clone();
    let cpi = &h.director.cpi;
    let req = CreateVm {
        request_id: "orphan-1".into(),
        agent_id: "orphan-agent".into(),
        stemcell_cid: stemcell,
        ..Default::default()
    };
    let orphan = cpi.create_vm(None, &req).await.unwrap();
    let tags = [("deployment", "cck"), ("name", "web/gone"), ("index", "7")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    cpi.set_vm_metadata(None, &orphan, &tags).await.unwrap();
    let report = scan(&h, "cck").await;
    let oid = format!("orphaned_vm/{orphan}");
    assert_eq!(problems(&report), [(oid.clone(), "orphaned_vm".to_string())], "{report}");
    let deleted = h.cpi.deleted.lock().unwrap().len();
    let made = creates(&h);
    resolve(&h, "cck", json!({ oid: "delete_vm" })).await;
    let now = h.cpi.deleted.lock().unwrap()[deleted..].to_vec();
    assert_eq!(now, std::slice::from_ref(&orphan), "delete_vm deletes exactly the orphan");
    assert_eq!(creates(&h), made, "no VM created");
    let (_, report) = api(&h, "GET", "/v1/deployments/cck/cloud-check", None).await;
    assert_eq!(problems(&report), [], "{report}");
    assert_one_vm_and_one_disk_each(&h, "cck").await;
    h.stop().await.unwrap();
}

/// (b) A disk unmounted behind the director's back is a
/// `mount_info_mismatch` that `reattach_disk` fixes; one detached in the
/// CPI is an `inactive_disk` that `activate_disk` fixes; a stopped agent is
/// an `unresponsive_agent` that `ignore` leaves and `reboot_vm` fixes; the
/// disk's data survives all of it, and no VM is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cck_reattaches_an_unmounted_or_detached_disk_keeping_its_data() {
    unmounted_or_detached_disk(CpiPath::InProcess).await;
}

/// [`cck_reattaches_an_unmounted_or_detached_disk_keeping_its_data`]
/// through `bosh-local-cpi` as a stock CPI (issue 16).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cck_reattaches_an_unmounted_or_detached_disk_keeping_its_data_through_bosh_local_cpi() {
    unmounted_or_detached_disk(stock_cpi()).await;
}

async fn unmounted_or_detached_disk(cpi_path: CpiPath) {
    let h = world(cpi_path).await;
    let inst = deployed(&h, "cckd", 1, 16).await.remove(0);
    let agent = h.director.agents.for_agent(inst.status.agent_id.clone().unwrap());
    let write = vec!["sh".into(), "-c".into(), "echo kept > /var/vcap/store/marker".into()];
    assert_eq!(agent.exec(&write, Some(10)).await.unwrap().exit_code, 0);
    let read = vec!["sh".into(), "-c".into(), "cat /var/vcap/store/marker".into()];
    let disk = inst.status.disk_cid.clone().unwrap();
    let vm = inst.status.vm_cid.clone().unwrap();
    let made = creates(&h);

    agent.unmount_disk(&disk).await.unwrap();
    let report = scan(&h, "cckd").await;
    let id = format!("{}/mount_info_mismatch", inst.metadata.name);
    assert_eq!(problems(&report), [(id.clone(), "mount_info_mismatch".to_string())], "{report}");
    resolve(&h, "cckd", json!({ id: "reattach_disk" })).await;
    assert_eq!(agent.exec(&read, Some(10)).await.unwrap().stdout.trim(), "kept");
    assert_eq!(agent.list_disk().await.unwrap(), std::slice::from_ref(&disk));

    h.director.cpi.detach_disk(None, &vm, &disk).await.unwrap();
    let report = scan(&h, "cckd").await;
    let id = format!("{}/inactive_disk", inst.metadata.name);
    assert_eq!(problems(&report), [(id.clone(), "inactive_disk".to_string())], "{report}");
    resolve(&h, "cckd", json!({ id: "activate_disk" })).await;
    assert_eq!(agent.exec(&read, Some(10)).await.unwrap().stdout.trim(), "kept");
    assert_eq!(h.director.cpi.get_disks(&vm).await.unwrap(), std::slice::from_ref(&disk));
    let (_, report) = api(&h, "GET", "/v1/deployments/cckd/cloud-check", None).await;
    assert_eq!(problems(&report), [], "{report}");
    assert_eq!(creates(&h), made, "no VM created");
    let i: Object<InstanceSpec> = h.store.get(Some("cckd"), &inst.metadata.name).await.unwrap();
    assert_eq!(i.status.vm_cid.as_deref(), Some(vm.as_str()));

    // A stopped (SIGSTOP) agent is an `unresponsive_agent`; `ignore`
    // changes nothing and the problem stays; `reboot_vm` brings the same
    // VM back with its disk mounted and its jobs running.
    let quiet = ConfigSpec {
        type_: ConfigType::Resurrection,
        content: json!({"rules": [{"enabled": false, "include": {"deployments": ["cckd"]}}]}),
    };
    h.store.create(&Object::new(ObjectMeta::named("resurrection/cckd"), quiet)).await.unwrap();
    // The whole machine hangs: every process of the container stops.
    assert!(LocalCpi::signal_vm(&h.cpi_root(), &vm, "SIGSTOP").unwrap() > 0);
    let report = scan(&h, "cckd").await;
    let id = format!("{}/unresponsive_agent", inst.metadata.name);
    assert_eq!(problems(&report), [(id.clone(), "unresponsive_agent".to_string())], "{report}");
    let mutations = |h: &Harness| (creates(h), h.cpi.deleted.lock().unwrap().len());
    let before = mutations(&h);
    resolve(&h, "cckd", json!({ id.clone(): "ignore" })).await;
    assert_eq!(mutations(&h), before, "ignore changes nothing");
    let (_, report) = api(&h, "GET", "/v1/deployments/cckd/cloud-check", None).await;
    assert_eq!(problems(&report), [(id.clone(), "unresponsive_agent".to_string())], "{report}");
    resolve(&h, "cckd", json!({ id: "reboot_vm" })).await;
    assert_eq!(agent.exec(&read, Some(10)).await.unwrap().stdout.trim(), "kept");
    let (_, report) = api(&h, "GET", "/v1/deployments/cckd/cloud-check", None).await;
    assert_eq!(problems(&report), [], "{report}");
    assert_eq!(creates(&h), made, "a reboot creates no VM");
    let i: Object<InstanceSpec> = h.store.get(Some("cckd"), &inst.metadata.name).await.unwrap();
    assert_eq!(i.status.vm_cid.as_deref(), Some(vm.as_str()));
    assert_eq!(i.status.phase, Some(InstancePhase::Running));
    assert_one_vm_and_one_disk_each(&h, "cckd").await;
    h.stop().await.unwrap();
}
