//! The API's limits and door (issue 12, item 8 and "Limits"): body caps
//! answered `413` naming the limit and its flag, objects too large for
//! etcd refused before anything changes, the bearer scheme in any case,
//! `404` for unknown routes, and keep-alives on idle watches.

use std::sync::Arc;
use std::time::Duration;

use bosh_api::objects::{ConfigSpec, ConfigType, DeploymentSpec, TaskSpec};
use bosh_api::store::{self, Store};
use bosh_api::{Object, ObjectMeta};
use bosh_controllers::server::api::limits::Limits;
use bosh_controllers::server::api::{self, ApiState};
use bosh_test_utils::SubnetLease;
use futures::StreamExt;
use serde_json::{Value, json};

use super::{DEADLINE, setup};

const TOKEN: &str = "limits-token";
const BLOB_TOKEN: &str = "blob-token";

/// The API as boshd serves it (merged with the blobstore's routes), on a
/// free port, with a valid cloud config and `limits`.
async fn start(
    limits: Limits,
    store_max: Option<usize>,
) -> (bosh_test_utils::TestEnv, Store, String, SubnetLease) {
    let (env, store) = setup().await;
    let store = match store_max {
        Some(n) => store.with_max_write_bytes(n),
        None => store,
    };
    let subnet = SubnetLease::acquire();
    super::api_deployments::write_cloud_config(&store, &subnet).await;
    let storage: Arc<dyn bosh_blobstore::Storage> =
        Arc::new(bosh_blobstore::LocalStorage::new(env.dir().join("blobs")));
    let state = ApiState::new(store.clone(), TOKEN)
        .with_blobstore(storage.clone(), env.dir().join("scratch"))
        .with_limits(limits)
        .with_watch_keepalive(Duration::from_millis(100));
    let router = api::router(Arc::new(state))
        .merge(bosh_blobstore::server::router(storage, BLOB_TOKEN.into()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(api::serve(listener, router, std::future::pending()));
    (env, store, url, subnet)
}

/// A valid manifest for deployment `d` whose job properties carry `extra`
/// (YAML flow mapping entries, e.g. anchors and aliases).
fn manifest(extra: &str) -> String {
    format!(
        "name: d
releases: [{{name: r, version: '1'}}]
stemcells: [{{alias: default, os: ubuntu-jammy, version: '1'}}]
update: {{canaries: 1, max_in_flight: 1, canary_watch_time: 1000, update_watch_time: 1000}}
instance_groups:
- name: web
  instances: 1
  azs: [z1]
  vm_type: small
  stemcell: default
  networks: [{{name: default}}]
  jobs: [{{name: j, release: r, properties: {{{extra}}}}}]
"
    )
}

async fn apply_body(url: &str, body: reqwest::Body) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{url}/v1/deployments/d/apply"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn apply_json(manifest: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({ "manifest": manifest })).unwrap()
}

async fn nothing_written(store: &Store) {
    assert!(store.list::<TaskSpec>("").await.unwrap().items.is_empty(), "a task was written");
    assert!(store.try_get::<DeploymentSpec>(None, "d").await.unwrap().is_none());
}

/// A body past `--max-request-bytes` is refused with 413 naming the limit and the flag, announced (content-length) or streamed (chunked), and nothing is written.
#[tokio::test]
async fn apply_body_over_the_request_limit_is_refused_with_413_naming_the_flag() {
    let limits = Limits { max_request_bytes: 64 * 1024, ..Limits::default() };
    let (_env, store, url, _subnet) = start(limits, None).await;
    let body = apply_json(&manifest(&format!("pad: {}", "x".repeat(100 * 1024))));
    let size = body.len();

    let (status, reply) = apply_body(&url, body.clone().into()).await;
    assert_eq!(status, 413, "{reply}");
    let msg = reply["error"].as_str().unwrap();
    assert!(msg.contains("65536 bytes") && msg.contains("--max-request-bytes"), "{msg}");
    assert!(msg.contains(&format!("{size} bytes")), "names the size: {msg}");

    // Chunked: no length up front, cut off at the limit.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        body.chunks(8 * 1024).map(|c| Ok(c.to_vec())).collect();
    let (status, reply) =
        apply_body(&url, reqwest::Body::wrap_stream(futures::stream::iter(chunks))).await;
    assert_eq!(status, 413, "{reply}");
    assert!(reply["error"].as_str().unwrap().contains("--max-request-bytes"), "{reply}");
    nothing_written(&store).await;

    // Under the limit, the same route works.
    let (status, reply) = apply_body(&url, apply_json(&manifest("pad: small")).into()).await;
    assert_eq!(status, 201, "{reply}");
}

/// An upload past `--max-upload-bytes` is refused with 413 naming that flag, even streamed without a length.
#[tokio::test]
async fn upload_over_the_upload_limit_is_refused_with_413_naming_the_flag() {
    let limits = Limits { max_upload_bytes: 4096, ..Limits::default() };
    let (_env, _store, url, _subnet) = start(limits, None).await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..8).map(|_| Ok(vec![7u8; 1024])).collect();
    let r = reqwest::Client::new()
        .post(format!("{url}/v1/uploads/releases"))
        .bearer_auth(TOKEN)
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let reply: Value = r.json().await.unwrap();
    let msg = reply["error"].as_str().unwrap();
    assert!(msg.contains("4096 bytes") && msg.contains("--max-upload-bytes"), "{msg}");
}

/// A manifest whose aliases expand past what one etcd write holds gets 413 naming the limit, not etcd's gRPC error, and no Task (issue 12: "a manifest expanding past etcd's value limit").
#[tokio::test]
async fn manifest_expanding_past_the_etcd_limit_is_refused_before_anything_is_written() {
    let (_env, store, url, _subnet) = start(Limits::default(), None).await;
    // ~200 KiB on the wire, ~2 MiB once its aliases are expanded.
    let aliases: Vec<String> = (0..10).map(|i| format!("a{i}: *big")).collect();
    let m = manifest(&format!("big: &big {}, {}", "y".repeat(200 * 1024), aliases.join(", ")));
    let (status, reply) = apply_body(&url, apply_json(&m).into()).await;
    assert_eq!(status, 413, "{reply}");
    let msg = reply["error"].as_str().unwrap();
    let limit = store::DEFAULT_MAX_WRITE_BYTES.to_string();
    assert!(msg.contains(&limit) && msg.contains("--max-object-bytes"), "{msg}");
    nothing_written(&store).await;
}

/// Any write through the store, a controller's included, past the limit is `TooLarge` naming the object; etcd itself refuses such a write and accepts one just under the limit, so the default matches etcd's.
#[tokio::test]
async fn store_writes_past_the_limit_are_too_large_and_just_under_it_succeed() {
    let (_env, store) = setup().await;
    let config = |name: &str, pad: usize| {
        Object::new(
            ObjectMeta::named(name),
            ConfigSpec { type_: ConfigType::Cloud, content: json!({ "pad": "z".repeat(pad) }) },
        )
    };
    let limit = store::DEFAULT_MAX_WRITE_BYTES;
    match store.create(&config("cloud/big", limit)).await {
        Err(store::Error::TooLarge { kind, name, size, limit: l }) => {
            assert_eq!((kind, name.as_str(), l), ("Config", "cloud/big", limit));
            assert!(size > limit);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert!(store.try_get::<ConfigSpec>(None, "cloud/big").await.unwrap().is_none());
    // Without the check, etcd itself refuses, with an error naming neither.
    let unchecked = store.with_max_write_bytes(usize::MAX);
    assert!(matches!(
        unchecked.create(&config("cloud/big", limit)).await,
        Err(store::Error::Etcd { .. })
    ));

    let fits = store.create(&config("cloud/fits", limit - 8 * 1024)).await.unwrap();
    let mut grown = fits.clone();
    grown.spec.content = json!({ "pad": "z".repeat(limit) });
    assert!(matches!(store.update_spec(&grown).await, Err(store::Error::TooLarge { .. })));
}

/// The bearer scheme is case-insensitive; an unknown route answers 404 to a good token and 401 to a bad one, also with the blobstore's routes merged in (issue 12, item 8).
#[tokio::test]
async fn lower_case_bearer_works_and_unknown_routes_are_404_behind_the_token() {
    let (_env, _store, url, _subnet) = start(Limits::default(), None).await;
    let http = reqwest::Client::new();
    let get = |path: &str, auth: String| {
        http.get(format!("{url}{path}")).header("authorization", auth).send()
    };
    for scheme in ["bearer", "BEARER", "Bearer"] {
        assert_eq!(get("/v1/info", format!("{scheme} {TOKEN}")).await.unwrap().status(), 200);
    }
    let r = get("/v1/no-such-route", format!("bearer {TOKEN}")).await.unwrap();
    assert_eq!(r.status(), 404);
    let reply: Value = r.json().await.unwrap();
    assert!(reply["error"].as_str().unwrap().contains("/v1/no-such-route"), "{reply}");
    assert_eq!(get("/v1/no-such-route", "Bearer wrong".into()).await.unwrap().status(), 401);
    assert_eq!(get("/v1/info", "Bearer wrong".into()).await.unwrap().status(), 401);
    // The blobstore's routes still take the blobstore's token.
    assert_eq!(get("/blobs", format!("bearer {BLOB_TOKEN}")).await.unwrap().status(), 200);
}

/// An idle watch carries keep-alive lines, so a client can tell a quiet director from a gone one.
#[tokio::test]
async fn idle_watch_stream_sends_keepalive_lines() {
    let (_env, _store, url, _subnet) = start(Limits::default(), None).await;
    let r = reqwest::Client::new()
        .get(format!("{url}/v1/watch/configs"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut body = r.bytes_stream();
    let (mut buf, mut types) = (Vec::new(), Vec::<String>::new());
    while types.len() < 3 {
        let chunk = tokio::time::timeout(DEADLINE, body.next()).await.unwrap().unwrap().unwrap();
        buf.extend_from_slice(&chunk);
        while let Some(i) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=i).collect();
            let v: Value = serde_json::from_slice(&line).unwrap();
            types.push(v["type"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(types[..3], ["RELISTED", "KEEPALIVE", "KEEPALIVE"]);
}
