//! `boshctl deploy` and the deployment verbs against a real API server and
//! etcd (no controllers: the tests finish tasks themselves).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bosh_api::objects::{DeploymentSpec, TaskState};
use bosh_controllers::api::{self, ApiState};
use bosh_test_utils::{TestEnv, eventually};

const TOKEN: &str = "cli-deploy-token";

struct Director {
    _env: TestEnv,
    url: String,
    store: bosh_api::store::Store,
}

async fn director() -> Director {
    let env = TestEnv::etcd_only().await.unwrap();
    let store = bosh_api::store::Store::connect(&env.etcd_endpoints(), "/bosh").await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let state = ApiState::new(store.clone(), TOKEN);
    tokio::spawn(api::serve(listener, api::router(Arc::new(state)), std::future::pending()));
    Director { _env: env, url, store }
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn command(d: &Director, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_boshctl"));
    cmd.args(args)
        .env("BOSH_DIRECTOR", &d.url)
        .env("BOSH_TOKEN", TOKEN)
        .env_remove("BOSH_DEPLOYMENT")
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    cmd
}

async fn boshctl(d: &Director, args: &[&str]) -> Out {
    let out = command(d, args).output().await.unwrap();
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

/// Dry run prints the diff and writes nothing; deploy writes the manifest with a task; listings, manifest and delete work; bad input and unknown instances get their exit codes.
#[tokio::test]
async fn deploy_dry_run_list_manifest_and_delete() {
    let d = director().await;
    let o = boshctl(&d, &["update-cloud-config", &example("cloud-config.yml")]).await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    let hello = example("hello.yml");

    let o = boshctl(&d, &["deploy", "-d", "hello", &hello, "--dry-run"]).await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains("+ name: hello"), "{}", o.stdout);
    assert!(d.store.try_get::<DeploymentSpec>(None, "hello").await.unwrap().is_none());

    let o = boshctl(&d, &["deploy", "-d", "hello", &hello, "--no-follow"]).await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains("Task 1"), "{}", o.stdout);
    let dep = d.store.get::<DeploymentSpec>(None, "hello").await.unwrap();
    assert_eq!(dep.spec.task, Some(1));

    let dir = tempfile::tempdir().unwrap();
    let ops = dir.path().join("scale.yml");
    std::fs::write(
        &ops,
        "- type: replace\n  path: /instance_groups/name=web/instances\n  value: 4\n",
    )
    .unwrap();
    let o =
        boshctl(&d, &["deploy", "-d", "hello", &hello, "-o", ops.to_str().unwrap(), "--dry-run"])
            .await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains("-   instances: 3\n+   instances: 4"), "{}", o.stdout);

    let o = boshctl(&d, &["deployments", "--json"]).await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    let rows: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(rows[0]["name"], "hello");
    assert_eq!(rows[0]["instances"], 3);
    assert_eq!(rows[0]["last_task"], 1);
    let o = boshctl(&d, &["deployments"]).await;
    assert!(o.stdout.contains("0/3") && o.stdout.contains("1 (queued)"), "{}", o.stdout);

    let o = boshctl(&d, &["manifest", "-d", "hello"]).await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.starts_with("name: hello"), "{}", o.stdout);

    // No instance objects yet: nothing to stop.
    let o = boshctl(&d, &["stop", "-d", "hello", "web/0", "--no-follow"]).await;
    assert_eq!(o.code, 3, "{}", o.stderr);
    let bad = dir.path().join("bad.yml");
    std::fs::write(&bad, "name: other\n").unwrap();
    let o = boshctl(&d, &["deploy", "-d", "hello", bad.to_str().unwrap()]).await;
    assert_eq!(o.code, 2, "{}", o.stderr);

    // Without a controller there is no finalizer: the deployment goes at once.
    let o = boshctl(&d, &["delete-deployment", "-d", "hello"]).await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains("Deleted deployment 'hello'"), "{}", o.stdout);
    assert!(d.store.try_get::<DeploymentSpec>(None, "hello").await.unwrap().is_none());
}

/// deploy follows its task and exits 1 when the task fails.
#[tokio::test]
async fn deploy_follows_the_task_and_fails_with_it() {
    let d = director().await;
    boshctl(&d, &["update-cloud-config", &example("cloud-config.yml")]).await;
    let child = command(&d, &["deploy", "-d", "hello", &example("hello.yml")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let task = eventually(Duration::from_secs(20), "the deployment to be written", || async {
        d.store.try_get::<DeploymentSpec>(None, "hello").await.ok().flatten()?.spec.task
    })
    .await
    .unwrap();
    bosh_controllers::tasks::set_task_state(&d.store, task, TaskState::Error, "canary failed")
        .await
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("deploy returns once its task finished")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("canary failed"), "{stderr}");
}
