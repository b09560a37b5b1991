//! `boshctl` against a real API server and etcd: config verbs, get, and exit codes.

use std::path::PathBuf;
use std::sync::Arc;

use bosh_controllers::api::{self, ApiState};
use bosh_test_utils::TestEnv;

const TOKEN: &str = "cli-test-token";

struct Director {
    _env: TestEnv,
    url: String,
    store: bosh_api::store::Store,
}

async fn director() -> Director {
    let env = TestEnv::etcd_only().await.unwrap();
    let store = bosh_api::store::Store::connect(&env.store_config(), "/bosh").await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let storage = Arc::new(bosh_blobstore::LocalStorage::new(env.dir().join("blobs")));
    let state =
        ApiState::new(store.clone(), TOKEN).with_blobstore(storage, env.dir().join("scratch"));
    tokio::spawn(api::serve(listener, api::router(Arc::new(state)), std::future::pending()));
    Director { _env: env, url, store }
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn boshctl(d: &Director, token: &str, args: &[&str]) -> Out {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_boshctl"))
        .args(args)
        .env("BOSH_DIRECTOR", &d.url)
        .env("BOSH_TOKEN", token)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .await
        .unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn example(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/manifests")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// A bad cloud config exits 2 naming the path and stores nothing; a good one is stored once and printed back.
#[tokio::test]
async fn cloud_config_round_trip_with_exit_codes() {
    let d = director().await;
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yml");
    std::fs::write(&bad, "azs:\n- name: z1\n  clod_properties: {}\n").unwrap();
    let o = boshctl(&d, TOKEN, &["update-cloud-config", bad.to_str().unwrap()]).await;
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(o.stderr.contains("azs[0]") && o.stderr.contains("clod_properties"), "{}", o.stderr);
    let o = boshctl(&d, TOKEN, &["configs"]).await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(!o.stdout.contains("default"), "nothing may be stored: {}", o.stdout);

    let cc = example("cloud-config.yml");
    let o = boshctl(&d, TOKEN, &["update-cloud-config", &cc]).await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains("Updated cloud/default"), "{}", o.stdout);
    let o = boshctl(&d, TOKEN, &["update-cloud-config", &cc]).await;
    assert!(o.stdout.contains("No changes"), "{}", o.stdout);
    // An ops file changes it again.
    let ops = dir.path().join("ops.yml");
    std::fs::write(
        &ops,
        "- type: replace\n  path: /azs/name=z1/cloud_properties?/zone\n  value: ((zone))\n",
    )
    .unwrap();
    let o = boshctl(
        &d,
        TOKEN,
        &["update-cloud-config", &cc, "-o", ops.to_str().unwrap(), "-v", "zone=east"],
    )
    .await;
    assert!(o.stdout.contains("Updated cloud/default"), "{} {}", o.stdout, o.stderr);

    let o = boshctl(&d, TOKEN, &["cloud-config"]).await;
    assert_eq!(o.code, 0);
    assert!(o.stdout.contains("zone: east"), "{}", o.stdout);
    let o = boshctl(&d, TOKEN, &["get", "config", "cloud/default", "-o", "json"]).await;
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["kind"], "Config");
    assert!(v["metadata"]["generation"].as_i64().unwrap() > 0);

    let o = boshctl(&d, TOKEN, &["get", "configs", "cloud/nope"]).await;
    assert_eq!(o.code, 3, "not found: {}", o.stderr);
    let o = boshctl(&d, "wrong-token", &["configs"]).await;
    assert_eq!(o.code, 5, "unauthorized: {}", o.stderr);
    let o = boshctl(&d, TOKEN, &["get", "gadgets"]).await;
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("unknown kind"), "{}", o.stderr);
}

/// A release directory and a local stemcell go up, are listed and inspected, and come down.
#[tokio::test]
async fn release_and_stemcell_upload_list_inspect_delete() {
    let d = director().await;
    let tmp = tempfile::tempdir().unwrap();
    let rel = tmp.path().join("release");
    bosh_test_utils::copy_dir(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/release"),
        &rel,
    )
    .unwrap();
    let o = boshctl(&d, TOKEN, &["upload-release", rel.to_str().unwrap()]).await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains("Uploaded release"), "{}", o.stdout);
    let o = boshctl(&d, TOKEN, &["releases", "--json"]).await;
    let list: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    let name = list[0]["metadata"]["name"].as_str().unwrap().to_string();
    let o = boshctl(&d, TOKEN, &["inspect-release", &name]).await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    for job in list[0]["spec"]["jobs"].as_array().unwrap() {
        assert!(o.stdout.contains(job["fingerprint"].as_str().unwrap()), "{}", o.stdout);
    }

    let fake_agent = tmp.path().join("bosh-agent");
    std::fs::write(&fake_agent, "#!/bin/sh\n").unwrap();
    let sc = tmp.path().join("sc.tgz");
    let o = boshctl(
        &d,
        TOKEN,
        &[
            "build-local-stemcell",
            "--agent",
            fake_agent.to_str().unwrap(),
            "--out",
            sc.to_str().unwrap(),
            "--version",
            "7",
        ],
    )
    .await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    let o = boshctl(&d, TOKEN, &["upload-stemcell", sc.to_str().unwrap()]).await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    let o = boshctl(&d, TOKEN, &["stemcells"]).await;
    assert!(o.stdout.contains("ubuntu-jammy") && o.stdout.contains('7'), "{}", o.stdout);

    let o = boshctl(&d, TOKEN, &["delete-release", &name]).await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    let o = boshctl(&d, TOKEN, &["inspect-release", &name]).await;
    assert_eq!(o.code, 3, "a deleted release is not found: {}", o.stderr);
    let o = boshctl(&d, TOKEN, &["delete-stemcell", "bosh-local-ubuntu-jammy-go_agent/7"]).await;
    assert_eq!(o.code, 0, "{}", o.stderr);
}

/// Tasks list, a task prints its events like the bosh CLI, and a failed task exits non-zero.
#[tokio::test]
async fn tasks_and_events_print_like_bosh() {
    use bosh_api::objects::{EventState, TaskState};
    use bosh_controllers::tasks::{EventLog, create_task, set_task_state};
    let d = director().await;
    let ok = create_task(&d.store, "create deployment", Some("web"), "admin").await.unwrap();
    let log = EventLog::new(d.store.clone(), ok.spec.id);
    log.record("Updating instance", "web/0", EventState::Started, "").await.unwrap();
    log.record("Updating instance", "web/0", EventState::Finished, "").await.unwrap();
    set_task_state(&d.store, ok.spec.id, TaskState::Done, "updated web").await.unwrap();
    let bad = create_task(&d.store, "create deployment", Some("db"), "admin").await.unwrap();
    EventLog::new(d.store.clone(), bad.spec.id)
        .record("Compiling packages", "pg/1", EventState::Failed, "exit 2")
        .await
        .unwrap();
    set_task_state(&d.store, bad.spec.id, TaskState::Error, "compiling pg failed").await.unwrap();

    let o = boshctl(&d, TOKEN, &["tasks"]).await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stdout.contains("updated web") && o.stdout.contains("compiling pg failed"),
        "{}",
        o.stdout
    );
    let o = boshctl(&d, TOKEN, &["task", &ok.spec.id.to_string(), "--follow"]).await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stdout.contains("Task 1 |") && o.stdout.contains("Updating instance: web/0 (00:00:00)"),
        "{}",
        o.stdout
    );
    assert!(o.stdout.contains("Task 1 done: updated web"), "{}", o.stdout);
    let o = boshctl(&d, TOKEN, &["task", &bad.spec.id.to_string()]).await;
    assert_eq!(o.code, 1, "a failed task exits non-zero: {}", o.stdout);
    assert!(o.stdout.contains("Failed: exit 2"), "{}", o.stdout);
    let o = boshctl(&d, TOKEN, &["events", "--task", &bad.spec.id.to_string(), "--json"]).await;
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
}
