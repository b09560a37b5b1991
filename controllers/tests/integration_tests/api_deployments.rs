//! The operator's deployment routes against a real etcd: apply (and its
//! dry run), delete, instance actions and listings, each with its Task.

use std::sync::Arc;

use bosh_api::objects::{
    ConfigSpec, ConfigType, DeploymentSpec, DesiredState, InstanceOverride, InstanceSpec, TaskSpec,
    TaskState,
};
use bosh_api::store::Store;
use bosh_api::{Object, ObjectMeta};
use bosh_controllers::libs::tasks::task_name;
use bosh_controllers::server::api::{self, ApiState};
use bosh_test_utils::SubnetLease;
use serde_json::{Value, json};

use super::setup;

const TOKEN: &str = "test-token";

/// Writes a valid `default` cloud config: one AZ, one vm_type, one manual
/// network on `subnet`.
pub(super) async fn write_cloud_config(store: &Store, subnet: &SubnetLease) {
    let cloud = json!({
        "azs": [{"name": "z1"}],
        "vm_types": [{"name": "small"}],
        "networks": [{"name": "default", "type": "manual", "subnets": [
            {"range": subnet.range(), "gateway": subnet.ip(1).to_string(), "azs": ["z1"]}]}],
    });
    store
        .create(&Object::new(
            ObjectMeta::named("cloud/default"),
            ConfigSpec { type_: ConfigType::Cloud, content: cloud },
        ))
        .await
        .unwrap();
}

/// A private etcd with a valid cloud config, and the API on a free port;
/// the cloud config's subnet is leased for as long as the lease is kept.
async fn start() -> (bosh_test_utils::TestEnv, Store, String, SubnetLease) {
    let (env, store) = setup().await;
    let subnet = SubnetLease::acquire();
    write_cloud_config(&store, &subnet).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let router = api::router(Arc::new(ApiState::new(store.clone(), TOKEN)));
    tokio::spawn(api::serve(listener, router, std::future::pending()));
    (env, store, url, subnet)
}

/// A manifest for deployment `name` with `instances` web instances on `vm_type`.
fn manifest(name: &str, instances: u32, vm_type: &str) -> String {
    format!(
        "name: {name}
releases: [{{name: r, version: '1'}}]
stemcells: [{{alias: default, os: ubuntu-jammy, version: '1'}}]
update: {{canaries: 1, max_in_flight: 1, canary_watch_time: 1000, update_watch_time: 1000}}
instance_groups:
- name: web
  instances: {instances}
  azs: [z1]
  vm_type: {vm_type}
  stemcell: default
  networks: [{{name: default}}]
  jobs: [{{name: j, release: r, properties: {{password: ((web_password))}}}}]
"
    )
}

async fn post(url: &str, path: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{url}{path}"))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn apply(url: &str, name: &str, manifest: &str, dry_run: bool) -> (u16, Value) {
    let body = json!({ "manifest": manifest, "options": {"recreate": false}, "dryRun": dry_run });
    post(url, &format!("/v1/deployments/{name}/apply"), body).await
}

async fn tasks(store: &Store) -> Vec<Object<TaskSpec>> {
    store.list::<TaskSpec>("").await.unwrap().items
}

async fn task(store: &Store, id: &Value) -> Object<TaskSpec> {
    store.get(None, &task_name(id.as_u64().expect("a task number"))).await.unwrap()
}

async fn deployment(store: &Store, name: &str) -> Object<DeploymentSpec> {
    store.get(None, name).await.unwrap()
}

/// An instance of `web` with an id and index, scoped to deployment `d`.
async fn instance(store: &Store, d: &str, id: &str, index: u32) {
    let spec = InstanceSpec { group: "web".into(), id: id.into(), index, ..Default::default() };
    store.create(&Object::new(ObjectMeta::scoped(d, format!("web/{id}")), spec)).await.unwrap();
}

/// Apply creates the Deployment with a "create deployment" task in spec.task; a second apply makes an "update deployment" task and keeps operator overrides.
#[tokio::test]
async fn apply_creates_the_deployment_with_a_task_and_keeps_overrides() {
    let (_env, store, url, _subnet) = start().await;
    let (status, body) = apply(&url, "d", &manifest("d", 1, "small"), false).await;
    assert_eq!(status, 201, "{body}");
    let d = deployment(&store, "d").await;
    assert_eq!(d.spec.task, body["task"].as_u64());
    assert_eq!(body["deployment"]["metadata"]["name"], "d");
    // The placeholder is stored as written: variables are the director's business.
    assert_eq!(
        d.spec.manifest["instance_groups"][0]["jobs"][0]["properties"]["password"],
        "((web_password))"
    );
    let t = task(&store, &body["task"]).await;
    assert_eq!(t.spec.description, "create deployment");
    assert_eq!(t.spec.deployment.as_deref(), Some("d"));
    assert_eq!(t.status.state, TaskState::Queued);

    let mut with_override = d.clone();
    with_override.spec.instances.insert(
        "web".into(),
        InstanceOverride { state: Some(DesiredState::Stopped), ..Default::default() },
    );
    store.update_spec(&with_override).await.unwrap();
    finish_current(&store, "d").await;

    // The same manifest again still makes a task (the controller finishes it at once).
    let (status, again) = apply(&url, "d", &manifest("d", 1, "small"), false).await;
    assert_eq!(status, 200, "{again}");
    assert_ne!(again["task"], body["task"]);
    let d = deployment(&store, "d").await;
    assert_eq!(d.spec.task, again["task"].as_u64());
    assert_eq!(d.spec.instances["web"].state, Some(DesiredState::Stopped));
    assert_eq!(task(&store, &again["task"]).await.spec.description, "update deployment");
}

/// A manifest that fails validation, names another deployment or is not YAML is refused with 422 and its paths, and neither a task nor a deployment is written.
#[tokio::test]
async fn apply_refuses_a_bad_manifest_and_writes_nothing() {
    let (_env, store, url, _subnet) = start().await;
    let (status, body) = apply(&url, "d", &manifest("d", 1, "huge"), false).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["details"].to_string().contains("instance_groups[0].vm_type"), "{body}");

    let (status, body) = apply(&url, "d", &manifest("other", 1, "small"), false).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["details"].to_string().contains("name"), "{body}");

    let (status, body) = apply(&url, "d", "name: d\nreleases: [\n", false).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["details"][0].as_str().unwrap().starts_with("manifest:"), "{body}");

    let (status, _) = apply(&url, "d", &manifest("d", 1, "huge"), true).await;
    assert_eq!(status, 422, "a dry run validates too");

    assert!(store.try_get::<DeploymentSpec>(None, "d").await.unwrap().is_none());
    assert!(tasks(&store).await.is_empty());
}

/// A deployment name that is not a name is refused with 422 naming the rule,
/// in the URL and in the manifest (issue 12, item 7), and nothing is written.
#[tokio::test]
async fn apply_refuses_names_that_are_not_names() {
    let (_env, store, url, _subnet) = start().await;
    let rule = bosh_api::names::NAME_RULE;
    let (status, body) = apply(&url, "x%20y%3Brm", &manifest("x y;rm", 1, "small"), false).await;
    assert_eq!(status, 422, "{body}");
    let details = body["details"].to_string();
    assert!(details.contains("deployment name") && details.contains(rule), "{body}");

    let bad_group = manifest("d", 1, "small").replace("- name: web", "- name: ../../x");
    let (status, body) = apply(&url, "d", &bad_group, false).await;
    assert_eq!(status, 422, "{body}");
    let details = body["details"].to_string();
    assert!(
        details.contains(r#"instance_groups[0].name: \"../../x\" is not a valid name"#),
        "{body}"
    );

    let r = reqwest::Client::new()
        .delete(format!("{url}/v1/deployments/a%2Fb"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 422);
    assert!(tasks(&store).await.is_empty());
    assert!(store.list::<DeploymentSpec>("").await.unwrap().items.is_empty());
}

/// A dry run answers the diff against the stored manifest, and writes neither the deployment nor a task.
#[tokio::test]
async fn dry_run_shows_the_diff_and_writes_nothing() {
    let (_env, store, url, _subnet) = start().await;
    let (status, body) = apply(&url, "d", &manifest("d", 1, "small"), true).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["changes"], true);
    assert!(body["diff"].as_array().unwrap().iter().all(|l| l.as_str().unwrap().starts_with("+ ")));
    assert!(store.try_get::<DeploymentSpec>(None, "d").await.unwrap().is_none());
    assert!(tasks(&store).await.is_empty());

    apply(&url, "d", &manifest("d", 1, "small"), false).await;
    let before = deployment(&store, "d").await;
    let (status, body) = apply(&url, "d", &manifest("d", 3, "small"), true).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["changes"], true);
    let diff: Vec<&str> =
        body["diff"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(diff.contains(&"-   instances: 1"), "{diff:#?}");
    assert!(diff.contains(&"+   instances: 3"), "{diff:#?}");
    assert!(diff.iter().any(|l| l.starts_with("  ")), "context lines: {diff:#?}");
    assert_eq!(deployment(&store, "d").await.metadata.generation, before.metadata.generation);
    assert_eq!(tasks(&store).await.len(), 1);

    let (_, body) = apply(&url, "d", &manifest("d", 1, "small"), true).await;
    assert_eq!(body, json!({"diff": [], "changes": false}));
}

/// Issue 17: a manifest's YAML 1.1 scalars and keys are read as bosh reads
/// them, survive the store (JSON in etcd), and the dry-run diff prints
/// them as `bosh interpolate` does (`.inf`, `true:` for `on:`).
#[tokio::test]
async fn yaml_1_1_scalars_and_keys_survive_the_store_and_print_as_bosh() {
    let (_env, store, url, _subnet) = start().await;
    let with = |limit: &str| {
        manifest("d", 1, "small").replace(
            "properties: {password: ((web_password))}",
            &format!("properties: {{limit: {limit}, flags: {{on: a, ~: b, 0x10: c}}}}"),
        )
    };
    let (status, body) = apply(&url, "d", &with(".inf"), false).await;
    assert_eq!(status, 201, "{body}");
    let stored = deployment(&store, "d").await.spec.manifest;
    let props = &stored["instance_groups"][0]["jobs"][0]["properties"];
    assert_eq!(bosh_api::yaml::as_non_finite(&props["limit"]), Some(f64::INFINITY));
    assert_eq!(props["flags"], json!({"true": "a", "null": "b", "16": "c"}));

    let (status, body) = apply(&url, "d", &with("-.inf"), true).await;
    assert_eq!(status, 200, "{body}");
    let diff: Vec<&str> =
        body["diff"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(diff.contains(&"-       limit: .inf"), "{diff:#?}");
    assert!(diff.contains(&"+       limit: -.inf"), "{diff:#?}");
    assert!(diff.contains(&"          true: a"), "{diff:#?}");
}

/// Instance actions change the deployment's spec.instances under a new task; an unknown target is a 404 that writes nothing.
#[tokio::test]
async fn instance_actions_change_spec_instances_and_make_a_task() {
    let (_env, store, url, _subnet) = start().await;
    apply(&url, "d", &manifest("d", 2, "small"), false).await;
    instance(&store, "d", "aaa", 0).await;
    instance(&store, "d", "bbb", 1).await;
    let actions = "/v1/deployments/d/instances/actions";

    // One change at a time: while the apply's task runs, an action is
    // refused at once, naming the task that holds the deployment.
    let n = tasks(&store).await.len();
    let (status, body) = post(&url, actions, json!({"action": "stop", "target": "web/0"})).await;
    assert_eq!(status, 409, "{body}");
    let holder = deployment(&store, "d").await.spec.task.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains(&format!("busy with task {holder} (create deployment)")),
        "{body}"
    );
    assert_eq!(tasks(&store).await.len(), n, "a refused change makes no task");
    finish_current(&store, "d").await;

    let (status, body) = post(&url, actions, json!({"action": "stop", "target": "web/0"})).await;
    assert_eq!(status, 200, "{body}");
    finish_current(&store, "d").await;
    let d = deployment(&store, "d").await;
    assert_eq!(d.spec.task, body["task"].as_u64());
    assert_eq!(d.spec.instances["aaa"].state, Some(DesiredState::Stopped));
    assert_eq!(task(&store, &body["task"]).await.spec.description, "stop instance web/0");

    // A group action reaches the instance's own override too (the id wins over its group).
    let (status, body) = post(&url, actions, json!({"action": "restart", "target": "web"})).await;
    assert_eq!(status, 200, "{body}");
    finish_current(&store, "d").await;
    let d = deployment(&store, "d").await;
    assert_eq!(d.spec.instances["web"].restart, 1);
    assert_eq!(d.spec.instances["aaa"].restart, 1);
    assert!(!d.spec.instances.contains_key("bbb"));

    let (_, body) = post(&url, actions, json!({"action": "stop-hard", "target": "web/bbb"})).await;
    finish_current(&store, "d").await;
    assert_eq!(
        deployment(&store, "d").await.spec.instances["bbb"].state,
        Some(DesiredState::Detached)
    );
    assert_eq!(task(&store, &body["task"]).await.spec.description, "stop --hard instance web/bbb");

    let (_, body) = post(&url, actions, json!({"action": "recreate"})).await;
    let d = deployment(&store, "d").await;
    assert_eq!(d.spec.instances["web"].recreate, 1);
    assert_eq!(d.spec.instances["bbb"].state, Some(DesiredState::Started));
    assert_eq!(task(&store, &body["task"]).await.spec.description, "recreate deployment d");

    let n = tasks(&store).await.len();
    let generation = deployment(&store, "d").await.metadata.generation;
    for target in ["web/7", "db", "web/ccc"] {
        let (status, body) =
            post(&url, actions, json!({"action": "start", "target": target})).await;
        assert_eq!(status, 404, "{target}: {body}");
    }
    let (status, _) = post(&url, actions, json!({"action": "explode"})).await;
    assert_eq!(status, 422);
    let (status, _) =
        post(&url, "/v1/deployments/nope/instances/actions", json!({"action": "start"})).await;
    assert_eq!(status, 404);
    assert_eq!(tasks(&store).await.len(), n);
    assert_eq!(deployment(&store, "d").await.metadata.generation, generation);
}

/// Marks the deployment's current task done, as the deployment controller
/// would (these tests run the API alone).
async fn finish_current(store: &Store, name: &str) {
    let id = deployment(store, name).await.spec.task.unwrap();
    bosh_controllers::libs::tasks::set_task_state(
        store,
        id,
        bosh_api::objects::TaskState::Done,
        "",
    )
    .await
    .unwrap();
}

/// The instance listing answers the deployment's Instance objects, and nothing of other deployments.
#[tokio::test]
async fn instances_lists_the_deployments_instance_objects() {
    let (_env, store, url, _subnet) = start().await;
    apply(&url, "d", &manifest("d", 2, "small"), false).await;
    apply(&url, "d2", &manifest("d2", 1, "small"), false).await;
    instance(&store, "d", "aaa", 0).await;
    instance(&store, "d", "bbb", 1).await;
    instance(&store, "d2", "ccc", 0).await;
    let list: Value = reqwest::Client::new()
        .get(format!("{url}/v1/deployments/d/instances"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["instance"]["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web/aaa", "web/bbb"]);
    assert!(list[0].get("agent").is_none());
}

/// Delete makes a "delete deployment" task in spec.task and leaves a deployment with a finalizer finalizing (with --force recorded); without a finalizer it is gone and its task done.
#[tokio::test]
async fn delete_makes_a_task_and_sets_the_deletion_timestamp() {
    let (_env, store, url, _subnet) = start().await;
    apply(&url, "d", &manifest("d", 1, "small"), false).await;
    let mut d = deployment(&store, "d").await;
    d.metadata.finalizers.push("bosh.io/deployment".into());
    store.update_spec(&d).await.unwrap();

    let http = reqwest::Client::new();
    let r = http
        .delete(format!("{url}/v1/deployments/d?force=true"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["finalizing"], true, "{body}");
    let d = deployment(&store, "d").await;
    assert!(d.metadata.deletion_timestamp.is_some());
    assert_eq!(d.metadata.annotations["bosh.io/force-delete"], "true");
    assert_eq!(d.spec.task, body["task"].as_u64());
    let t = task(&store, &body["task"]).await;
    assert_eq!(
        (t.spec.description.as_str(), t.status.state),
        ("delete deployment", TaskState::Queued)
    );

    // Applying to a deployment being deleted is a conflict.
    let (status, _) = apply(&url, "d", &manifest("d", 1, "small"), false).await;
    assert_eq!(status, 409);

    apply(&url, "e", &manifest("e", 1, "small"), false).await;
    let body: Value = http
        .delete(format!("{url}/v1/deployments/e"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["deleted"], true, "{body}");
    assert!(store.try_get::<DeploymentSpec>(None, "e").await.unwrap().is_none());
    assert_eq!(task(&store, &body["task"]).await.status.state, TaskState::Done);

    let r = http.delete(format!("{url}/v1/deployments/nope")).bearer_auth(TOKEN).send().await;
    assert_eq!(r.unwrap().status(), 404);
}

/// Every deployment route refuses a request without the token, and writes nothing.
#[tokio::test]
async fn deployment_routes_require_the_token() {
    let (_env, store, url, _subnet) = start().await;
    let http = reqwest::Client::new();
    let body = json!({"manifest": manifest("d", 1, "small")});
    let requests = [
        http.post(format!("{url}/v1/deployments/d/apply")).json(&body),
        http.delete(format!("{url}/v1/deployments/d")),
        http.post(format!("{url}/v1/deployments/d/instances/actions"))
            .json(&json!({"action": "stop"})),
        http.get(format!("{url}/v1/deployments/d/instances?ps=true")),
        http.post(format!("{url}/v1/deployments/d/logs")).json(&json!({"target": "web/0"})),
        http.get(format!("{url}/v1/deployments/d/variables")),
    ];
    for rb in requests {
        assert_eq!(rb.bearer_auth("wrong").send().await.unwrap().status(), 401);
    }
    assert!(store.try_get::<DeploymentSpec>(None, "d").await.unwrap().is_none());
    assert!(tasks(&store).await.is_empty());
}

/// With ps, a live agent reports its state and an agent that does not answer is shown as unresponsive; logs stream the agent's tarball and remove it from the blobstore.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ps_asks_agents_and_logs_stream_the_agents_tarball() {
    use bosh_controllers::testing::LocalWorld;

    let w = LocalWorld::start().await.unwrap();
    let subnet = SubnetLease::acquire();
    w.create_vm("agent-web-0", &subnet.ip(30).to_string()).await.unwrap();
    let a = w.agents.for_agent("agent-web-0");
    bosh_test_utils::eventually(super::DEADLINE, "the agent to answer ping", || {
        let a = a.clone();
        async move { a.ping().await.ok() }
    })
    .await
    .unwrap();
    let (director, _rest) = w.director();
    let store = director.store.clone();
    let blobs = director.blobs.clone();
    store
        .create(&Object::new(
            ObjectMeta::named("d"),
            DeploymentSpec { manifest: json!({"name": "d"}), ..Default::default() },
        ))
        .await
        .unwrap();
    for (id, index, agent) in [("aaa", 0, "agent-web-0"), ("bbb", 1, "agent-gone")] {
        instance(&store, "d", id, index).await;
        let mut i: Object<InstanceSpec> = store.get(Some("d"), &format!("web/{id}")).await.unwrap();
        i.status.agent_id = Some(agent.into());
        i.status.vm_cid = Some(format!("vm-{id}"));
        store.update_status(&i).await.unwrap();
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let state = ApiState::new(store.clone(), TOKEN).with_director(director);
    tokio::spawn(api::serve(listener, api::router(Arc::new(state)), std::future::pending()));
    let http = reqwest::Client::new();

    let list: Value = http
        .get(format!("{url}/v1/deployments/d/instances?ps=true"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_ne!(list[0]["agent"]["state"], "unresponsive agent", "{list}");
    assert!(list[0]["agent"]["state"].is_string(), "{list}");
    assert_eq!(list[1]["agent"]["state"], "unresponsive agent", "{list}");

    let r = http
        .post(format!("{url}/v1/deployments/d/logs"))
        .bearer_auth(TOKEN)
        .json(&json!({"target": "web/0"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let tgz = r.bytes().await.unwrap();
    assert_eq!(&tgz[..2], &[0x1f, 0x8b], "a gzip stream");
    let sha = bosh_blobstore::sha256_hex(&tgz);
    bosh_test_utils::eventually(super::DEADLINE, "the log tarball to be removed", || async {
        (!blobs.exists(&sha).await.unwrap()).then_some(())
    })
    .await
    .unwrap();

    let r = http
        .post(format!("{url}/v1/deployments/d/logs"))
        .bearer_auth(TOKEN)
        .json(&json!({"target": "web"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422, "logs need one instance");
}

/// Variables are listed by name, type and id, and their values never appear.
#[tokio::test]
async fn variables_are_listed_without_values() {
    let (_env, store, url, _subnet) = start().await;
    apply(&url, "d", &manifest("d", 1, "small"), false).await;
    let declared = json!({"name": "d", "variables": [{"name": "web_password", "type": "password"}],
        "instance_groups": [{"name": "web", "properties": {"password": "((web_password))"}}]});
    let resolved =
        bosh_controllers::libs::variables::interpolate(&store, "d", &declared).await.unwrap();
    let value = resolved["instance_groups"][0]["properties"]["password"].as_str().unwrap();
    assert_ne!(value, "((web_password))");

    let r = reqwest::Client::new()
        .get(format!("{url}/v1/deployments/d/variables"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let vars: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(vars[0]["name"], "web_password", "{vars}");
    assert_eq!(vars[0]["type"], "password", "{vars}");
    assert!(vars[0]["id"].as_str().is_some_and(|id| !id.is_empty()), "{vars}");
    assert!(!text.contains(value), "a value leaked: {text}");
}
