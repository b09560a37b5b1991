//! The HTTP API against a real etcd: token, validation before write, CAS, watch.

use std::sync::Arc;

use bosh_api::objects::{ConfigSpec, ConfigType, DeploymentSpec};
use bosh_api::{Object, ObjectMeta};
use bosh_controllers::server::api::{self, ApiState};
use futures::StreamExt;
use serde_json::{Value, json};

use super::{DEADLINE, setup};

const TOKEN: &str = "test-token";

async fn start() -> (bosh_test_utils::TestEnv, bosh_api::store::Store, String) {
    let (env, store) = setup().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let router = api::router(Arc::new(ApiState::new(store.clone(), TOKEN)));
    tokio::spawn(api::serve(listener, router, std::future::pending()));
    (env, store, url)
}

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

fn cloud_config(name: &str, content: Value) -> Object<ConfigSpec> {
    Object::new(ObjectMeta::named(name), ConfigSpec { type_: ConfigType::Cloud, content })
}

/// Without the token nothing is served.
#[tokio::test]
async fn requests_without_the_token_are_refused() {
    let (_env, _store, url) = start().await;
    let r = http().get(format!("{url}/v1/deployments")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = http().get(format!("{url}/v1/info")).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = http().get(format!("{url}/v1/info")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

/// An invalid config is rejected with every error's path and nothing is written; a valid one is created, then CAS-updated.
#[tokio::test]
async fn put_validates_before_writing_and_uses_compare_and_swap() {
    let (_env, store, url) = start().await;
    let bad = cloud_config("cloud/default", json!({"azs": [{"name": 1}], "vm_tpyes": []}));
    let r = http()
        .put(format!("{url}/v1/configs/cloud/default"))
        .bearer_auth(TOKEN)
        .json(&bad)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.unwrap();
    let details = body["details"].as_array().unwrap();
    assert!(details.iter().any(|d| d.as_str().unwrap().contains("azs[0].name")), "{body}");
    assert!(details.iter().any(|d| d.as_str().unwrap().contains("vm_tpyes")), "{body}");
    assert!(store.try_get::<ConfigSpec>(None, "cloud/default").await.unwrap().is_none());

    let good = cloud_config("cloud/default", json!({"azs": [{"name": "z1"}]}));
    let r = http()
        .put(format!("{url}/v1/configs/cloud/default"))
        .bearer_auth(TOKEN)
        .json(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let created: Object<ConfigSpec> = r.json().await.unwrap();
    assert!(created.metadata.resource_version > 0);

    // Creating again is a conflict; updating with the read revision works once.
    let r = http()
        .put(format!("{url}/v1/configs/cloud/default"))
        .bearer_auth(TOKEN)
        .json(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let mut update = created.clone();
    update.spec.content = json!({"azs": [{"name": "z1"}, {"name": "z2"}]});
    let r = http()
        .put(format!("{url}/v1/configs/cloud/default"))
        .bearer_auth(TOKEN)
        .json(&update)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http()
        .put(format!("{url}/v1/configs/cloud/default"))
        .bearer_auth(TOKEN)
        .json(&update)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409, "a stale resourceVersion must conflict");

    let got: Object<ConfigSpec> = http()
        .get(format!("{url}/v1/configs/cloud/default"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got.spec.content["azs"].as_array().unwrap().len(), 2);
    let r =
        http().get(format!("{url}/v1/configs/cloud/nope")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

/// A deployment naming a missing vm_type is rejected with the manifest path; read-only kinds refuse writes.
#[tokio::test]
async fn deployments_are_checked_against_the_cloud_config() {
    let (_env, store, url) = start().await;
    let subnet = bosh_test_utils::SubnetLease::acquire();
    store
        .create(&cloud_config(
            "cloud/default",
            json!({"azs": [{"name": "z1"}], "vm_types": [{"name": "small"}],
                   "networks": [{"name": "n", "type": "manual", "subnets": [{"range": subnet.range(), "gateway": subnet.ip(1).to_string(), "azs": ["z1"]}]}]}),
        ))
        .await
        .unwrap();
    let manifest = json!({
        "name": "d",
        "releases": [{"name": "r", "version": "1"}],
        "stemcells": [{"alias": "default", "os": "ubuntu-jammy", "version": "1"}],
        "update": {"canaries": 1, "max_in_flight": 1, "canary_watch_time": 1000, "update_watch_time": 1000},
        "instance_groups": [{"name": "web", "instances": 1, "azs": ["z1"], "vm_type": "huge",
            "stemcell": "default", "networks": [{"name": "n"}], "jobs": [{"name": "j", "release": "r"}]}]
    });
    let d = Object::new(ObjectMeta::named("d"), DeploymentSpec { manifest, ..Default::default() });
    let r = http()
        .put(format!("{url}/v1/deployments/d"))
        .bearer_auth(TOKEN)
        .json(&d)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.unwrap();
    assert!(body.to_string().contains("instance_groups[0].vm_type"), "{body}");
    assert!(store.try_get::<DeploymentSpec>(None, "d").await.unwrap().is_none());

    let r = http()
        .put(format!("{url}/v1/releases/x/1"))
        .bearer_auth(TOKEN)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405, "releases are written by uploads, not PUT");
}

/// The watch endpoint streams a relist, then changes, as JSON lines.
#[tokio::test]
async fn watch_streams_changes_as_json_lines() {
    let (_env, store, url) = start().await;
    store.create(&cloud_config("cloud/a", json!({}))).await.unwrap();
    let r = http().get(format!("{url}/v1/watch/configs")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let mut body = r.bytes_stream();
    let mut buf = Vec::new();
    let mut lines: Vec<Value> = Vec::new();
    let mut created = false;
    while lines.len() < 2 {
        let chunk = tokio::time::timeout(DEADLINE, body.next()).await.unwrap().unwrap().unwrap();
        buf.extend_from_slice(&chunk);
        while let Some(i) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=i).collect();
            lines.push(serde_json::from_slice(&line).unwrap());
        }
        if !created && !lines.is_empty() {
            store.create(&cloud_config("cloud/b", json!({}))).await.unwrap();
            created = true;
        }
    }
    assert_eq!(lines[0]["type"], "RELISTED");
    assert_eq!(lines[0]["objects"][0]["metadata"]["name"], "cloud/a");
    assert_eq!(lines[1]["type"], "APPLIED");
    assert_eq!(lines[1]["object"]["metadata"]["name"], "cloud/b");
}

/// `/healthz` needs no token, answers ok while etcd serves, degraded
/// (`EtcdUnreachable`, 503) while etcd is stopped, and ok again once it is
/// back (FAULT-MATRIX B4).
#[tokio::test]
async fn healthz_reports_degraded_while_etcd_is_down() {
    use bosh_controllers::server::api::healthz::Health;
    let (mut env, _store, url) = start().await;
    let get = || async {
        let r = http().get(format!("{url}/healthz")).send().await.unwrap();
        let code = r.status().as_u16();
        (code, r.json::<Health>().await.unwrap())
    };
    let (code, h) = get().await;
    assert_eq!((code, h.status.as_str()), (200, "ok"), "{h:?}");
    assert!(h.etcd_revision.is_some_and(|r| r > 0), "{h:?}");

    env.etcd.stop();
    let (code, h) = get().await;
    assert_eq!((code, h.status.as_str()), (503, "degraded"), "{h:?}");
    assert_eq!(h.reason.as_deref(), Some("EtcdUnreachable"), "{h:?}");

    env.etcd.start_again().await.unwrap();
    let h = bosh_test_utils::eventually(DEADLINE, "healthz ok again", || async {
        let (code, h) = get().await;
        (code == 200).then_some(h)
    })
    .await
    .unwrap();
    assert!(h.is_ok(), "{h:?}");
}
