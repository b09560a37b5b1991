//! Deployments end to end on real local VMs: the deployment and instance
//! controllers place instances, roll changes out canary-first, scale, keep
//! persistent disks across stop/start/recreate, and delete.

use std::collections::BTreeMap;
use std::time::Duration;

use bosh_api::agent::Method;
use bosh_api::meta::find_condition;
use bosh_api::objects::{ConditionType, InstanceHealth, InstancePhase, Reason};
use bosh_api::objects::{
    DeploymentSpec, DesiredState, DiskPhase, DiskSpec, EventSpec, EventState, InstanceOverride,
    InstanceSpec, TaskChange, TaskSpec, TaskState,
};
use bosh_api::{ConditionStatus, Object, ObjectMeta};
use bosh_controllers::libs::tasks::{create_change_task, create_task, task_name};
use bosh_test_utils::eventually;

use bosh_controllers::testing::{Harness, HarnessOptions, WebManifest};

use super::compile::example_release;

/// Compiling, then creating VMs and starting jobs on a loaded machine.
const DEPLOY_DEADLINE: Duration = Duration::from_secs(180);

/// `instances` of the example `hello` job greeting with `greeting`, with a
/// persistent disk of `disk_mb` MiB (0: none).
pub(super) fn manifest(
    name: &str,
    instances: u32,
    greeting: &str,
    disk_mb: u64,
) -> serde_json::Value {
    WebManifest {
        persistent_disk_mb: disk_mb,
        properties: serde_json::json!({"port": 8080, "greeting": greeting}),
        ..WebManifest::hello(name, instances)
    }
    .value()
}

/// `m` declaring a generated password `secret_greeting`.
fn with_password_variable(mut m: serde_json::Value) -> serde_json::Value {
    m["variables"] = serde_json::json!([{"name": "secret_greeting", "type": "password"}]);
    m
}

/// What the deploy tests do with a harness.
pub(super) trait DeployHarness {
    async fn apply(&self, name: &str, manifest: serde_json::Value) -> u64;
    async fn apply_with(&self, name: &str, edit: impl Fn(&mut DeploymentSpec)) -> u64;
    async fn change_with(
        &self,
        name: &str,
        change: TaskChange,
        edit: impl Fn(&mut DeploymentSpec),
    ) -> u64;
    async fn task_end(&self, id: u64) -> (TaskState, String);
    async fn instances(&self, name: &str) -> Vec<Object<InstanceSpec>>;
    async fn events(&self, task: u64) -> Vec<EventSpec>;
    fn applies(&self) -> u64;
}

/// A world with every controller and a short resync, whose VMs are
/// containers.
pub(super) async fn world() -> Harness {
    Harness::start(HarnessOptions::containers()).await.unwrap()
}

impl DeployHarness for Harness {
    /// Writes (or updates) the deployment with a new task, as `apply` does.
    async fn apply(&self, name: &str, manifest: serde_json::Value) -> u64 {
        self.apply_with(name, |s| s.manifest = manifest.clone()).await
    }

    async fn apply_with(&self, name: &str, edit: impl Fn(&mut DeploymentSpec)) -> u64 {
        self.change_with(name, TaskChange::Update, edit).await
    }

    /// Makes a task for `change` of `name` and writes the change through
    /// the store, as the API (or a GitOps tool) does.
    async fn change_with(
        &self,
        name: &str,
        change: TaskChange,
        edit: impl Fn(&mut DeploymentSpec),
    ) -> u64 {
        let task = create_change_task(&self.store, "change deployment", name, "test", change)
            .await
            .unwrap();
        let id = task.spec.id;
        // As a client does on a 409: re-read and apply the edit again (a
        // controller may have just written the object, e.g. its finalizer).
        loop {
            let written = match self.store.try_get::<DeploymentSpec>(None, name).await.unwrap() {
                Some(mut d) => {
                    edit(&mut d.spec);
                    d.spec.task = Some(id);
                    self.store.update_spec(&d).await.map(drop)
                }
                None => {
                    let mut spec = DeploymentSpec::default();
                    edit(&mut spec);
                    spec.task = Some(id);
                    self.store.create(&Object::new(ObjectMeta::named(name), spec)).await.map(drop)
                }
            };
            match written {
                Ok(()) => return id,
                Err(e) if e.is_conflict() => continue,
                Err(e) => panic!("writing deployment {name}: {e}"),
            }
        }
    }

    /// Waits for task `id` to end; returns its state and result.
    async fn task_end(&self, id: u64) -> (TaskState, String) {
        let store = self.store.clone();
        eventually(DEPLOY_DEADLINE, &format!("task {id} to end"), || {
            let store = store.clone();
            async move {
                let t: Object<TaskSpec> = store.get(None, &task_name(id)).await.ok()?;
                t.status.state.is_finished().then_some((t.status.state, t.status.result))
            }
        })
        .await
        .unwrap()
    }

    async fn instances(&self, name: &str) -> Vec<Object<InstanceSpec>> {
        self.store.list::<InstanceSpec>(&format!("{name}/")).await.unwrap().items
    }

    async fn events(&self, task: u64) -> Vec<EventSpec> {
        let prefix = format!("{}/", task_name(task));
        self.store
            .list::<EventSpec>(&prefix)
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|e| e.spec)
            .collect()
    }

    fn applies(&self) -> u64 {
        self.director.agents.calls().get(Method::Apply)
    }
}

/// GET / of an instance's hello server.
pub(super) async fn greeting(ip: &str) -> Option<String> {
    let r = reqwest::Client::new()
        .get(format!("http://{ip}:8080/"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    r.text().await.ok()
}

fn ip(i: &Object<InstanceSpec>) -> String {
    i.spec.networks[0].ip.clone()
}

/// The order instances were updated in a task: (object, state) pairs.
fn updates(events: &[EventSpec]) -> Vec<(String, EventState)> {
    events
        .iter()
        .filter(|e| e.stage == "Updating instance")
        .map(|e| (e.object.clone(), e.state))
        .collect()
}

/// Three instances deploy and serve; a property change goes to a canary
/// first, then two at once; a converged deployment then makes no CPI call,
/// no agent apply and no etcd write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_three_roll_a_property_canary_first_then_steady_state_is_silent() {
    let h = world().await;
    let tmp = tempfile::tempdir().unwrap();
    h.upload_release(&example_release(tmp.path())).await.unwrap();
    h.upload_stemcell().await.unwrap();

    let t1 = h.apply("hello", manifest("hello", 3, "hi one", 0)).await;
    let (state, result) = h.task_end(t1).await;
    assert_eq!(state, TaskState::Done, "{result}");
    let instances = h.instances("hello").await;
    assert_eq!(instances.len(), 3);
    let mut indexes: Vec<u32> = instances.iter().map(|i| i.spec.index).collect();
    indexes.sort();
    assert_eq!(indexes, [0, 1, 2]);
    assert_eq!(instances.iter().filter(|i| i.spec.bootstrap).count(), 1);
    for i in &instances {
        let body = greeting(&ip(i)).await.unwrap_or_default();
        assert!(body.contains("hi one"), "{} answered {body:?}", ip(i));
    }
    assert_eq!(h.applies(), 3, "one apply per instance");
    let vms_after_deploy = h.cpi.created.lock().unwrap().len();

    // A property change: canary first, alone; then the other two together.
    let t2 = h.apply("hello", manifest("hello", 3, "hi two", 0)).await;
    let (state, result) = h.task_end(t2).await;
    assert_eq!(state, TaskState::Done, "{result}");
    assert_eq!(h.applies(), 6, "each instance applied once more");
    let u = updates(&h.events(t2).await);
    assert_eq!(u.len(), 6, "{u:?}");
    assert_eq!(u[0].1, EventState::Started);
    assert_eq!(
        (u[1].0.as_str(), u[1].1),
        (u[0].0.as_str(), EventState::Finished),
        "the canary finishes before anything else starts: {u:?}"
    );
    assert_eq!(
        (u[2].1, u[3].1),
        (EventState::Started, EventState::Started),
        "then two in flight: {u:?}"
    );
    for i in &h.instances("hello").await {
        let body = greeting(&ip(i)).await.unwrap_or_default();
        assert!(body.contains("hi two"), "{} answered {body:?}", ip(i));
    }
    let vms = h.cpi.created.lock().unwrap().len();
    assert_eq!(vms, vms_after_deploy, "a property change recreates no VM");

    // Steady state, once the health monitor has seen every agent running:
    // several resyncs pass without a write, a CPI call or an apply.
    let store = h.store.clone();
    eventually(DEPLOY_DEADLINE, "every instance observed running", || {
        let store = store.clone();
        async move {
            let all = store.list::<InstanceSpec>("hello/").await.ok()?.items;
            all.iter().all(|i| i.status.health == Some(InstanceHealth::Running)).then_some(())
        }
    })
    .await
    .unwrap();
    let rev = h.store.revision().await.unwrap();
    let calls = h.cpi.calls();
    let applies = h.applies();
    tokio::time::sleep(Duration::from_secs(5)).await; // an observation window, not a wait for readiness
    assert_eq!(h.store.revision().await.unwrap(), rev, "no etcd write at steady state");
    assert_eq!(h.cpi.calls(), calls, "no CPI call at steady state");
    assert_eq!(h.applies(), applies, "no agent apply at steady state");
    h.stop().await.unwrap();
}

/// A canary that cannot start fails the task, and the instances after it
/// keep their old spec and are not touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_halts_the_rollout() {
    let h = world().await;
    let tmp = tempfile::tempdir().unwrap();
    h.upload_release(&example_release(tmp.path())).await.unwrap();
    h.upload_stemcell().await.unwrap();
    let t1 = h.apply("hello", manifest("hello", 3, "fine", 0)).await;
    assert_eq!(h.task_end(t1).await.0, TaskState::Done);
    let before: BTreeMap<String, String> = h
        .instances("hello")
        .await
        .iter()
        .map(|i| (i.metadata.name.clone(), i.spec.config_hash.clone()))
        .collect();
    let applies = h.applies();

    // A port the job refuses: its pre-start fails on the canary.
    let bad = manifest("hello", 3, "fine", 0).to_string().replace("8080", "\"not-a-port\"");
    let t2 = h.apply("hello", serde_json::from_str(&bad).unwrap()).await;
    let (state, result) = h.task_end(t2).await;
    assert_eq!(state, TaskState::Error);
    assert!(result.contains("pre-start"), "{result}");
    let after = h.instances("hello").await;
    let changed: Vec<&Object<InstanceSpec>> =
        after.iter().filter(|i| before[&i.metadata.name] != i.spec.config_hash).collect();
    assert_eq!(changed.len(), 1, "only the canary took the new spec");
    let c = find_condition(&changed[0].status.conditions, ConditionType::Ready).unwrap();
    assert_eq!((c.status, &c.reason), (ConditionStatus::False, &Reason::UpdateFailed));
    // Only the canary was applied (once: its retries only start it again).
    assert_eq!(h.applies(), applies + 1);
    for i in after.iter().filter(|i| before[&i.metadata.name] == i.spec.config_hash) {
        assert!(
            bosh_controllers::reconcilers::instance::is_converged(i),
            "{} untouched and ready",
            i.metadata.name
        );
    }
    h.stop().await.unwrap();
}

/// 3 → 5 → 2: new instances take the lowest free indexes, scaling down
/// removes the highest, and their VMs go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_three_five_two() {
    let h = world().await;
    let tmp = tempfile::tempdir().unwrap();
    h.upload_release(&example_release(tmp.path())).await.unwrap();
    h.upload_stemcell().await.unwrap();
    for (n, expect) in [(3u32, vec![0, 1, 2]), (5, vec![0, 1, 2, 3, 4]), (2, vec![0, 1])] {
        let t = h.apply("hello", manifest("hello", n, "scaling", 0)).await;
        let (state, result) = h.task_end(t).await;
        assert_eq!(state, TaskState::Done, "{result}");
        let mut got: Vec<u32> = h.instances("hello").await.iter().map(|i| i.spec.index).collect();
        got.sort();
        assert_eq!(got, expect);
    }
    // Compile VMs are in the count too; they are all gone.
    let created = h.cpi.created.lock().unwrap().clone();
    let mut alive = 0;
    for cid in &created {
        if h.cpi.inner.has_vm(cid).await.unwrap() {
            alive += 1;
        }
    }
    assert_eq!(alive, 2, "scaled-down VMs are deleted");
    h.stop().await.unwrap();
}

/// A marker file on the persistent disk survives stop, start and recreate;
/// deleting the deployment leaves no VM and orphans the disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_disk_survives_stop_start_recreate_and_is_orphaned_on_delete() {
    let h = world().await;
    let tmp = tempfile::tempdir().unwrap();
    h.upload_release(&example_release(tmp.path())).await.unwrap();
    h.upload_stemcell().await.unwrap();
    let t = h.apply("db", manifest("db", 1, "disk", 64)).await;
    assert_eq!(h.task_end(t).await.0, TaskState::Done);
    let first_vms = h.cpi.created.lock().unwrap().len();
    let inst = h.instances("db").await.remove(0);
    let agent = h.director.agents.for_agent(inst.status.agent_id.clone().unwrap());
    let write = vec!["sh".into(), "-c".into(), "echo kept > /var/vcap/store/marker".into()];
    let r = agent.exec(&write, Some(10)).await.unwrap();
    assert_eq!(r.exit_code, 0, "{}", r.stderr);

    let steps: [(&str, InstanceOverride); 3] = [
        ("stop", InstanceOverride { state: Some(DesiredState::Stopped), ..Default::default() }),
        ("start", InstanceOverride { state: Some(DesiredState::Started), ..Default::default() }),
        (
            "recreate",
            InstanceOverride {
                state: Some(DesiredState::Started),
                recreate: 1,
                ..Default::default()
            },
        ),
    ];
    for (what, ov) in steps {
        let t = h
            .apply_with("db", |s| {
                s.instances.insert("web".into(), ov.clone());
            })
            .await;
        let (state, result) = h.task_end(t).await;
        assert_eq!(state, TaskState::Done, "{what}: {result}");
        let inst = h.instances("db").await.remove(0);
        let phase = if what == "stop" { InstancePhase::Stopped } else { InstancePhase::Running };
        assert_eq!(inst.status.phase, Some(phase), "{what}");
        let agent = h.director.agents.for_agent(inst.status.agent_id.clone().unwrap());
        let read = vec!["sh".into(), "-c".into(), "cat /var/vcap/store/marker".into()];
        let r = agent.exec(&read, Some(10)).await.unwrap();
        assert_eq!(r.stdout.trim(), "kept", "{what}: {}", r.stderr);
    }
    let made = h.cpi.created.lock().unwrap().len();
    assert_eq!(made, first_vms + 1, "only recreate made a new VM");

    // Delete: no VM left, the disk orphaned (kept).
    let task = create_task(&h.store, "delete deployment", Some("db"), "test").await.unwrap();
    let mut d: Object<DeploymentSpec> = h.store.get(None, "db").await.unwrap();
    d.spec.task = Some(task.spec.id);
    h.store.update_spec(&d).await.unwrap();
    h.store.delete::<DeploymentSpec>(None, "db", None).await.unwrap();
    assert_eq!(h.task_end(task.spec.id).await.0, TaskState::Done);
    assert!(h.store.try_get::<DeploymentSpec>(None, "db").await.unwrap().is_none());
    assert!(h.instances("db").await.is_empty());
    let created = h.cpi.created.lock().unwrap().clone();
    for cid in created {
        assert!(!h.cpi.inner.has_vm(&cid).await.unwrap(), "VM {cid} deleted");
    }
    let disks = h.store.list::<DiskSpec>("db/").await.unwrap().items;
    assert_eq!(disks.len(), 1);
    assert_eq!(disks[0].status.phase, DiskPhase::Orphaned);
    let cid = disks[0].status.cid.clone().unwrap();
    assert!(h.cpi.inner.has_disk(&cid).await.unwrap(), "an orphaned disk still exists");
    h.stop().await.unwrap();
}

/// A Deployment written straight into the store with a manifest that names
/// a missing vm_type gets `Invalid`, its task fails, and nothing is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_deployment_written_to_the_store_changes_nothing() {
    let h = world().await;
    let tmp = tempfile::tempdir().unwrap();
    h.upload_release(&example_release(tmp.path())).await.unwrap();
    h.upload_stemcell().await.unwrap();
    let bad = manifest("bad", 2, "x", 0).to_string().replace("\"small\"", "\"huge\"");
    let t = h.apply("bad", serde_json::from_str(&bad).unwrap()).await;
    let (state, result) = h.task_end(t).await;
    assert_eq!(state, TaskState::Error);
    assert!(result.contains("instance_groups[0].vm_type"), "{result}");
    let d: Object<DeploymentSpec> = h.store.get(None, "bad").await.unwrap();
    let c = find_condition(&d.status.conditions, ConditionType::Invalid).unwrap();
    assert_eq!(c.status, ConditionStatus::True);
    assert!(h.instances("bad").await.is_empty());
    assert_eq!(
        h.cpi.creates.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no VM, not even to compile"
    );
    h.stop().await.unwrap();
}

/// A `((variable))` declared in `variables:` is generated once, reaches the
/// job's template, and appears neither in the stored Deployment nor in the
/// task's events; a second deploy reuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_variables_reach_templates_and_stay_out_of_objects() {
    let h = world().await;
    let tmp = tempfile::tempdir().unwrap();
    h.upload_release(&example_release(tmp.path())).await.unwrap();
    h.upload_stemcell().await.unwrap();
    let m = with_password_variable(manifest("vars", 1, "((secret_greeting))", 0));
    let t = h.apply("vars", m.clone()).await;
    let (state, result) = h.task_end(t).await;
    assert_eq!(state, TaskState::Done, "{result}");
    let inst = h.instances("vars").await.remove(0);
    let body = greeting(&ip(&inst)).await.unwrap();
    let secret = body.split_whitespace().next().unwrap().to_string();
    assert_eq!(secret.len(), 20, "a generated password answers: {body:?}");
    assert!(!body.contains("((secret_greeting))"));

    let d: Object<DeploymentSpec> = h.store.get(None, "vars").await.unwrap();
    let stored = serde_json::to_string(&d).unwrap();
    assert!(stored.contains("((secret_greeting))") && !stored.contains(&secret));
    let events = serde_json::to_string(&h.events(t).await).unwrap();
    assert!(!events.contains(&secret), "no value in events");
    let instances = serde_json::to_string(&h.instances("vars").await).unwrap();
    assert!(!instances.contains(&secret), "no value in Instance objects");

    // A second deploy (a new property) keeps the generated value.
    let m2 = with_password_variable(manifest("vars", 1, "((secret_greeting))!", 0));
    let t2 = h.apply_with("vars", |s| s.manifest = m2.clone()).await;
    assert_eq!(h.task_end(t2).await.0, TaskState::Done);
    let inst = h.instances("vars").await.remove(0);
    let body = greeting(&ip(&inst)).await.unwrap();
    assert!(body.starts_with(&format!("{secret}!")), "{body:?}");
    h.stop().await.unwrap();
}
