//! `boshctl run-errand` against a real API server and etcd (no
//! controllers: the test finishes the run as the errand controller would).

use std::sync::Arc;
use std::time::Duration;

use bosh_api::objects::{
    DeploymentSpec, ErrandInstanceResult, ErrandPhase, ErrandRunSpec, TaskState,
};
use bosh_api::{Object, ObjectMeta};
use bosh_controllers::server::api::{self, ApiState};
use bosh_test_utils::{TestEnv, eventually};
use serde_json::json;

const TOKEN: &str = "cli-errand-token";

/// The flags reach the ErrandRun; the CLI prints each instance's output
/// and exits with the errand's exit code; an unknown errand is refused.
#[tokio::test]
async fn run_errand_prints_results_and_exits_with_the_errand_code() {
    let env = TestEnv::etcd_only().await.unwrap();
    let store = bosh_api::store::Store::connect(&env.store_config(), "/bosh").await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let state = ApiState::new(store.clone(), TOKEN);
    tokio::spawn(api::serve(listener, api::router(Arc::new(state)), std::future::pending()));
    let manifest = json!({"name": "d", "instance_groups": [
        {"name": "tests", "instances": 1, "lifecycle": "errand", "jobs": [{"name": "t"}]}]});
    let spec = DeploymentSpec { manifest, ..Default::default() };
    store.create(&Object::new(ObjectMeta::named("d"), spec)).await.unwrap();

    let boshctl = |args: &[&str]| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_boshctl"));
        cmd.args(args).env("BOSH_DIRECTOR", &url).env("BOSH_TOKEN", TOKEN);
        cmd.env_remove("BOSH_DEPLOYMENT").output()
    };
    let cli = boshctl(&["run-errand", "tests", "-d", "d", "--keep-alive", "--instance", "tests/0"]);
    let controller = async {
        let mut run = eventually(Duration::from_secs(20), "the ErrandRun", || async {
            store.list::<ErrandRunSpec>("d/").await.ok()?.items.into_iter().next()
        })
        .await
        .unwrap();
        assert!(run.spec.keep_alive && !run.spec.when_changed, "{run:?}");
        assert_eq!(run.spec.instances, ["tests/0"]);
        run.status.phase = ErrandPhase::Failed;
        run.status.results = vec![ErrandInstanceResult {
            instance: "tests/abc".into(),
            job: "t".into(),
            exit_code: Some(7),
            stdout: "ran the tests\n".into(),
            stderr: "one failed\n".into(),
            error: None,
            ..Default::default()
        }];
        store.update_status(&run).await.unwrap();
        bosh_controllers::libs::tasks::set_task_state(&store, run.spec.task, TaskState::Error, "")
            .await
            .unwrap();
    };
    let (out, ()) = tokio::join!(cli, controller);
    let out = out.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(7), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    for want in ["Instance   tests/abc", "Exit Code  7", "Stdout     ran the tests", "one failed"] {
        assert!(stdout.contains(want), "{want:?} in {stdout}");
    }

    let out = boshctl(&["run-errand", "nope", "-d", "d"]).await.unwrap();
    assert_eq!(out.status.code(), Some(3), "not found");
    assert!(String::from_utf8_lossy(&out.stderr).contains("errand groups are [tests]"));
    assert_eq!(store.list::<ErrandRunSpec>("d/").await.unwrap().items.len(), 1);
}
