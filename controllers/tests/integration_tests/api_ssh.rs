//! `POST /v1/deployments/<name>/ssh` against a real etcd and a real agent
//! on a process VM: the token, refusals naming their field, and the
//! per-instance answers with their task and events.

use std::sync::Arc;

use bosh_api::objects::{DeploymentSpec, EventSpec, InstanceSpec, TaskSpec, TaskState};
use bosh_api::{Object, ObjectMeta};
use bosh_controllers::libs::tasks::task_name;
use bosh_controllers::server::api::{self, ApiState};
use bosh_controllers::testing::LocalWorld;
use bosh_test_utils::SubnetLease;
use serde_json::{Value, json};

const TOKEN: &str = "ssh-token";

fn setup_body(target: Value) -> Value {
    json!({
        "command": "setup",
        "target": target,
        "params": {"user": "bosh_0a1b2c", "public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB boshctl"},
    })
}

/// Without the token the route answers 401 and makes no task; a bad target is a 404 and bad params a 422, each naming its field; on a process VM (whose agent shares the host's accounts) setup answers a failure per instance with the agent's refusal, under a failed task with an event per instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_route_checks_its_input_and_answers_per_instance() {
    let w = LocalWorld::start().await.unwrap();
    let subnet = SubnetLease::acquire();
    let ip = subnet.ip(40).to_string();
    w.create_vm("agent-ssh-0", &ip).await.unwrap();
    let a = w.agents.for_agent("agent-ssh-0");
    bosh_test_utils::eventually(super::DEADLINE, "the agent to answer ping", || {
        let a = a.clone();
        async move { a.ping().await.ok() }
    })
    .await
    .unwrap();
    let (director, _rest) = w.director();
    let store = director.store.clone();
    store
        .create(&Object::new(
            ObjectMeta::named("d"),
            DeploymentSpec { manifest: json!({"name": "d"}), ..Default::default() },
        ))
        .await
        .unwrap();
    for (id, index, agent) in [("aaa", 0, Some("agent-ssh-0")), ("bbb", 1, None)] {
        let spec = InstanceSpec {
            group: "web".into(),
            id: id.into(),
            index,
            networks: vec![bosh_api::objects::InstanceNetwork {
                name: "default".into(),
                ip: ip.clone(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut i = store
            .create(&Object::new(ObjectMeta::scoped("d", format!("web/{id}")), spec))
            .await
            .unwrap();
        i.status.agent_id = agent.map(str::to_string);
        store.update_status(&i).await.unwrap();
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let state = ApiState::new(store.clone(), TOKEN).with_director(director);
    tokio::spawn(api::serve(listener, api::router(Arc::new(state)), std::future::pending()));
    let http = reqwest::Client::new();
    let post = |token: &'static str, body: Value| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let r = http
                .post(format!("{url}/v1/deployments/d/ssh"))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };

    let (status, _) = post("wrong", setup_body(json!({"job": "web"}))).await;
    assert_eq!(status, 401);
    assert!(
        store.list::<TaskSpec>("").await.unwrap().items.is_empty(),
        "no task without the token"
    );

    let (status, body) = post(TOKEN, setup_body(json!({"job": "api"}))).await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"].as_str().unwrap().starts_with("target.job: "), "{body}");
    let (status, body) =
        post(TOKEN, setup_body(json!({"job": "web", "indexes": ["7"], "ids": ["7"]}))).await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"].as_str().unwrap().starts_with("target.indexes/target.ids: "), "{body}");
    let mut bad_user = setup_body(json!({"job": "web"}));
    bad_user["params"]["user"] = json!("root");
    let (status, body) = post(TOKEN, bad_user).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["details"][0].as_str().unwrap().starts_with("params.user: "), "{body}");
    let (status, body) =
        post(TOKEN, json!({"command": "cleanup", "target": {}, "params": {"user_regex": ".*"}}))
            .await;
    assert_eq!(status, 422, "{body}");
    assert!(body["details"][0].as_str().unwrap().starts_with("params.user_regex: "), "{body}");
    assert!(store.list::<TaskSpec>("").await.unwrap().items.is_empty(), "refusals make no task");

    let (status, body) = post(TOKEN, setup_body(json!({"job": "web"}))).await;
    assert_eq!(status, 200, "{body}");
    let entries = body.as_array().unwrap();
    assert_eq!(entries.len(), 2, "{body}");
    assert_eq!((entries[0]["id"].as_str(), entries[0]["index"].as_u64()), (Some("aaa"), Some(0)));
    assert_eq!(entries[0]["status"], "failure", "{body}");
    assert!(
        entries[0]["error"].as_str().unwrap().contains("shares the host's root filesystem"),
        "the agent refused: {body}"
    );
    assert_eq!(entries[1]["status"], "failure");
    assert!(entries[1]["error"].as_str().unwrap().contains("no VM"), "{body}");
    let tasks = store.list::<TaskSpec>("").await.unwrap().items;
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].spec.description, "ssh: setup");
    assert_eq!(tasks[0].status.state, TaskState::Error);
    let events =
        store.list::<EventSpec>(&format!("{}/", task_name(tasks[0].spec.id))).await.unwrap();
    let objects: Vec<&str> = events.items.iter().map(|e| e.spec.object.as_str()).collect();
    assert_eq!(objects.len(), 2, "{objects:?}");
    assert!(objects.contains(&"web/aaa (0)") && objects.contains(&"web/bbb (1)"), "{objects:?}");
    assert!(events.items.iter().all(|e| e.spec.stage == "ssh setup" && !e.spec.error.is_empty()));

    let host = std::fs::read_to_string("/etc/passwd").unwrap();
    assert!(!host.contains("bosh_0a1b2c"), "the host got no user");
}
