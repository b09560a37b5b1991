//! `boshctl run-errand` against a real API server and etcd (no
//! controllers: the test finishes the run as the errand controller would),
//! and `--download-logs` end to end against the whole director with
//! container VMs.

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

/// Writes `content` to `root/rel`, making its directories.
fn write(root: &std::path::Path, rel: &str, content: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

/// `run-errand --download-logs --logs-dir DIR`: the errand group's VM runs
/// a `bin/run` that writes into `/var/vcap/sys/log/smoke/`; the tarball
/// lands in DIR named `<deployment>.<errand>.<instance-id>.<stamp>.tgz`,
/// its digest checked, and holds that file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_errand_downloads_each_instances_logs() {
    use bosh_controllers::testing::{Harness, HarnessOptions};
    let h = Harness::start(HarnessOptions::containers()).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let rel = tmp.path().join("errands-release");
    write(&rel, "config/final.yml", "name: errands\n");
    write(
        &rel,
        "jobs/smoke/spec",
        "---\nname: smoke\ntemplates: {run.erb: bin/run}\npackages: []\nproperties: {}\n",
    );
    write(&rel, "jobs/smoke/monit", "");
    write(
        &rel,
        "jobs/smoke/templates/run.erb",
        "#!/bin/bash\nmkdir -p /var/vcap/sys/log/smoke\necho tested > /var/vcap/sys/log/smoke/run.log\necho ran\n",
    );
    h.upload_stemcell().await.unwrap();
    h.upload_release(&rel).await.unwrap();
    let manifest = json!({
        "name": "e",
        "releases": [{"name": "errands", "version": "latest"}],
        "stemcells": [{"alias": "default", "os": "local", "version": "latest"}],
        "update": {"canaries": 1, "max_in_flight": 1,
                   "canary_watch_time": "300-20000", "update_watch_time": "300-20000"},
        "instance_groups": [{"name": "tests", "lifecycle": "errand", "instances": 1,
            "azs": ["z1"], "vm_type": "small", "stemcell": "default",
            "networks": [{"name": "default"}],
            "jobs": [{"name": "smoke", "release": "errands"}]}],
    });
    let task = h.create_deployment("e", manifest).await.unwrap();
    h.task_done(task, Duration::from_secs(600)).await.unwrap();

    let dir = tmp.path().join("logs");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_boshctl"))
        .args(["run-errand", "tests", "-d", "e", "--download-logs", "--logs-dir"])
        .arg(&dir)
        .env("BOSH_DIRECTOR", &h.api_url)
        .env("BOSH_TOKEN", bosh_controllers::testing::TOKEN)
        .env_remove("BOSH_DEPLOYMENT")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("Stdout     ran"), "{stdout}");
    let files: Vec<std::path::PathBuf> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    let [tgz] = &files[..] else { panic!("{files:?}") };
    let name = tgz.file_name().unwrap().to_string_lossy().into_owned();
    let run: Object<ErrandRunSpec> = {
        let runs = h.store.list::<ErrandRunSpec>("e/").await.unwrap().items;
        runs.into_iter().next().unwrap()
    };
    let id = run.status.results[0].instance.rsplit('/').next().unwrap().to_string();
    assert!(name.starts_with(&format!("e.tests.{id}.")) && name.ends_with(".tgz"), "{name}");
    assert!(stdout.contains(&format!("Downloaded logs of tests/{id}")), "{stdout}");
    let bytes = std::fs::read(tgz).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
    let mut found = None;
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().trim_start_matches("./").to_string();
        if path == "smoke/run.log" {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut entry, &mut text).unwrap();
            found = Some(text);
        }
    }
    assert_eq!(found.as_deref(), Some("tested\n"));
    h.stop().await.unwrap();
}
