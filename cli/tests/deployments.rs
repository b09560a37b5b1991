//! `boshctl deploy` and the deployment verbs against a real API server and
//! etcd (no controllers: the tests finish tasks themselves).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bosh_api::objects::{DeploymentSpec, TaskState};
use bosh_controllers::server::api::{self, ApiState};
use bosh_test_utils::{TestEnv, eventually};

const TOKEN: &str = "cli-deploy-token";

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

    // The stored manifest prints as `interpolate` printed what was sent
    // (bosh's layout: sorted keys).
    let o = boshctl(&d, &["manifest", "-d", "hello"]).await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.lines().any(|l| l == "name: hello"), "{}", o.stdout);
    let int = boshctl(&d, &["interpolate", &hello]).await;
    assert_eq!(o.stdout, int.stdout);

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
    bosh_controllers::libs::tasks::set_task_state(
        &d.store,
        task,
        TaskState::Error,
        "canary failed",
    )
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

/// Finishes the task the deployment's spec names (as the controllers would)
/// once `ready` says the request reached the spec; returns that spec.
async fn finish_task(
    d: &Director,
    ready: impl Fn(&DeploymentSpec) -> bool,
    then: impl FnOnce(&mut bosh_api::Object<DeploymentSpec>),
) -> DeploymentSpec {
    let mut dep = eventually(Duration::from_secs(20), "the request in the spec", || async {
        let dep = d.store.try_get::<DeploymentSpec>(None, "hello").await.ok().flatten()?;
        ready(&dep.spec).then_some(dep)
    })
    .await
    .unwrap();
    then(&mut dep);
    d.store.update_status(&dep).await.unwrap();
    let task = dep.spec.task.unwrap();
    bosh_controllers::libs::tasks::set_task_state(&d.store, task, TaskState::Done, "ok")
        .await
        .unwrap();
    dep.spec
}

/// `cck --report` starts a scan, waits for its task, prints the problems
/// as a table and exits 1 when there are any; `--resolution TYPE=RES`
/// writes the choice for every problem of that type into the Deployment.
#[tokio::test]
async fn cck_reports_problems_and_records_chosen_resolutions() {
    use bosh_api::objects::{Problem, ProblemType, Resolution};

    let d = director().await;
    boshctl(&d, &["update-cloud-config", &example("cloud-config.yml")]).await;
    let deploy = command(&d, &["deploy", "-d", "hello", &example("hello.yml")]).output();
    let (_, spec) = tokio::join!(deploy, finish_task(&d, |s| s.task.is_some(), |_| {}));
    let deploy_task = spec.task;

    let problem = Problem::new(
        Problem::instance_id("web/abc", ProblemType::MissingVm),
        ProblemType::MissingVm,
        "VM vm-1 of web/abc (0) is missing".into(),
    );
    let scanned = |p: Problem| {
        move |dep: &mut bosh_api::Object<DeploymentSpec>| {
            dep.status.cloud_check.scanned = dep.spec.cloud_check.scan;
            dep.status.cloud_check.problems = vec![p];
        }
    };
    let report = command(&d, &["cck", "-d", "hello", "--report"]).output();
    let (out, _) = tokio::join!(
        report,
        finish_task(&d, |s| s.cloud_check.scan == 1, scanned(problem.clone()))
    );
    let out = out.unwrap();
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("web/abc/missing_vm") && stdout.contains("recreate_vm"), "{stdout}");
    assert!(stdout.contains("1 problems"), "{stdout}");
    assert!(stderr.contains("1 problems found in deployment hello"), "{stderr}");

    // A resolution the problem does not offer: refused, nothing written.
    let before = d.store.get::<DeploymentSpec>(None, "hello").await.unwrap();
    let bad =
        command(&d, &["cck", "-d", "hello", "--resolution", "missing_vm=reattach_disk"]).output();
    let (out, _) =
        tokio::join!(bad, finish_task(&d, |s| s.cloud_check.scan == 2, scanned(problem.clone())));
    let out = out.unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("web/abc/missing_vm"));
    let after = d.store.get::<DeploymentSpec>(None, "hello").await.unwrap();
    assert!(after.spec.cloud_check.resolutions.is_empty());
    assert_eq!(after.spec.cloud_check.scan, before.spec.cloud_check.scan + 1, "only the scan");

    let fix =
        command(&d, &["cck", "-d", "hello", "--resolution", "missing_vm=recreate_vm"]).output();
    let fixed = async {
        finish_task(&d, |s| s.cloud_check.scan == 3, scanned(problem.clone())).await;
        finish_task(
            &d,
            |s| !s.cloud_check.resolutions.is_empty(),
            |dep| {
                dep.status.cloud_check.problems.clear();
            },
        )
        .await
    };
    let (out, spec) = tokio::join!(fix, fixed);
    let out = out.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let chosen = &spec.cloud_check.resolutions["web/abc/missing_vm"];
    assert_eq!(chosen.resolution, Resolution::RecreateVm);
    assert_ne!(spec.task, deploy_task, "the resolution runs under a task of its own");
}
