//! Errands end to end on container VMs: an errand group gets VMs only for
//! its run (or after it, with `keepAlive`), a colocated errand runs on the
//! service instances that have it, results and exit codes are recorded,
//! `whenChanged` skips an unchanged run, `downloadLogs` records each
//! instance's job logs, and a run stops at its task's cancel or its
//! timeout.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bosh_api::objects::{
    DeploymentSpec, ErrandInstanceResult, ErrandPhase, ErrandRunSpec, TaskState,
};
use bosh_api::wire::{ErrandEntry, ErrandRunRef, RunErrandRequest};
use bosh_api::{Object, ObjectMeta};
use bosh_controllers::libs::tasks::{create_task, task_name};
use bosh_controllers::testing::{Harness, TOKEN};
use bosh_test_utils::eventually;
use serde_json::json;

use super::compile::write;
use super::deploy::{DeployHarness, world};

/// Creating, starting and deleting container VMs on a loaded machine.
const DEADLINE: Duration = Duration::from_secs(180);

/// A release with one job, `smoke`: no process, a `bin/run` that writes
/// `<message> was here` to `/var/vcap/sys/log/smoke/errand-run.log`,
/// prints `message` to stdout and `to-stderr` to stderr and exits with
/// `exit_code` — or, with `hang`, never exits.
pub(super) fn errand_release(root: &Path) -> PathBuf {
    let dir = root.join("errands-release");
    write(&dir, "config/final.yml", "name: errands\n");
    write(
        &dir,
        "jobs/smoke/spec",
        "---\nname: smoke\ntemplates: {run.erb: bin/run}\npackages: []\nproperties:\n  message: {default: hi}\n  exit_code: {default: 0}\n  hang: {default: false}\n",
    );
    write(&dir, "jobs/smoke/monit", "");
    write(
        &dir,
        "jobs/smoke/templates/run.erb",
        concat!(
            "#!/bin/bash\n",
            "mkdir -p /var/vcap/sys/log/smoke\n",
            "echo \"<%= p('message') %> was here\" > /var/vcap/sys/log/smoke/errand-run.log\n",
            "echo <%= p('message') %>\necho to-stderr >&2\n",
            "<% if p('hang') %>exec sleep 100000<% end %>\n",
            "exit <%= p('exit_code') %>\n",
        ),
    );
    dir
}

/// `svc` (a service group with `smoke` colocated) and `tests` (an errand
/// group running `smoke` with exit code `code`).
fn manifest(code: u32) -> serde_json::Value {
    manifest_with(
        json!({"message": "colocated"}),
        json!({"message": "from-errand-group", "exit_code": code}),
    )
}

/// `svc` and `tests` with these `smoke` properties.
pub(super) fn manifest_with(svc: serde_json::Value, tests: serde_json::Value) -> serde_json::Value {
    let group = |name: &str, props: serde_json::Value| {
        json!({"name": name, "instances": 1, "azs": ["z1"], "vm_type": "small",
               "stemcell": "default", "networks": [{"name": "default"}],
               "jobs": [{"name": "smoke", "release": "errands", "properties": props}]})
    };
    let mut tests = group("tests", tests);
    tests["lifecycle"] = json!("errand");
    json!({
        "name": "e",
        "releases": [{"name": "errands", "version": "latest"}],
        "stemcells": [{"alias": "default", "os": "local", "version": "latest"}],
        "update": {"canaries": 1, "max_in_flight": 2,
                   "canary_watch_time": "300-20000", "update_watch_time": "300-20000"},
        "instance_groups": [group("svc", svc), tests],
    })
}

/// Asks for a run through the API, as `boshctl run-errand` does.
async fn run(h: &Harness, errand: &str, req: RunErrandRequest) -> ErrandRunRef {
    let r = reqwest::Client::new()
        .post(format!("{}/v1/deployments/e/errands/{errand}/runs", h.api_url))
        .bearer_auth(TOKEN)
        .json(&req)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    r.json().await.unwrap()
}

/// The run after its task ended.
async fn finished(h: &Harness, r: &ErrandRunRef) -> (TaskState, Object<ErrandRunSpec>) {
    let (state, _) = h.task_end(r.task).await;
    (state, h.store.get(Some("e"), &r.run).await.unwrap())
}

/// VMs the CPI holds for group `group` of deployment `e`.
async fn vms_of(h: &Harness, group: &str) -> usize {
    let vms = h.director.cpi.list_vms().await.unwrap();
    vms.iter()
        .filter(|v| v.metadata.get("deployment").map(String::as_str) == Some("e"))
        .filter(|v| v.metadata.get("instance_group").map(String::as_str) == Some(group))
        .count()
}

/// An errand group's VM exists only for its run (or, kept alive, after
/// it); results, exit codes and task states follow the errand; a
/// colocated errand runs on its service instance; `whenChanged` skips.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errands_run_on_their_own_vms_or_colocated_and_report_exit_codes() {
    let h = world().await;
    let tmp = tempfile::tempdir().unwrap();
    h.upload_stemcell().await.unwrap();
    h.upload_release(&errand_release(tmp.path())).await.unwrap();
    let deployed = h.apply("e", manifest(3)).await;
    assert_eq!(h.task_end(deployed).await.0, TaskState::Done);
    assert_eq!(vms_of(&h, "tests").await, 0, "an errand group has no VM between runs");
    assert_eq!(vms_of(&h, "svc").await, 1);

    let listed: Vec<ErrandEntry> = reqwest::Client::new()
        .get(format!("{}/v1/deployments/e/errands", h.api_url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<(&str, bool)> = listed.iter().map(|e| (e.name.as_str(), e.colocated)).collect();
    assert_eq!(names, [("smoke", true), ("tests", false)]);

    // The errand group: a VM is made, the errand fails with its code, the VM goes.
    let started = std::time::Instant::now();
    let r = run(&h, "tests", RunErrandRequest::default()).await;
    let (state, done) = finished(&h, &r).await;
    println!("errand group run (VM created, applied, run): {:?}", started.elapsed());
    assert_eq!(state, TaskState::Error, "{done:?}");
    assert_eq!(done.status.phase, ErrandPhase::Failed);
    let [res] = &done.status.results[..] else { panic!("{:?}", done.status) };
    assert_eq!((res.exit_code, res.job.as_str()), (Some(3), "smoke"));
    assert_eq!(res.stdout.trim(), "from-errand-group");
    assert_eq!(res.stderr.trim(), "to-stderr");
    assert!(res.instance.starts_with("tests/"), "{res:?}");
    eventually(DEADLINE, "the errand VM to be deleted", || async {
        (vms_of(&h, "tests").await == 0 && h.instances("e").await.len() == 1).then_some(())
    })
    .await
    .unwrap();

    // A colocated errand runs on the service instance; its VM stays.
    let started = std::time::Instant::now();
    let r = run(&h, "smoke", RunErrandRequest::default()).await;
    let (state, done) = finished(&h, &r).await;
    println!("colocated errand run: {:?}", started.elapsed());
    assert_eq!(state, TaskState::Done, "{done:?}");
    let [res] = &done.status.results[..] else { panic!("{:?}", done.status) };
    assert_eq!((res.exit_code, res.stdout.trim()), (Some(0), "colocated"));
    assert!(res.instance.starts_with("svc/"), "{res:?}");
    assert_eq!(vms_of(&h, "svc").await, 1);

    // Nothing changed since that success: skipped, nothing run.
    let when_changed = RunErrandRequest { when_changed: true, ..Default::default() };
    let r2 = run(&h, "smoke", when_changed.clone()).await;
    let (state, skipped) = finished(&h, &r2).await;
    assert_eq!((state, skipped.status.phase), (TaskState::Done, ErrandPhase::Skipped));
    assert!(skipped.status.results.is_empty());
    assert!(skipped.status.message.contains(&format!("task {}", r.task)), "{skipped:?}");

    // Kept alive: the VM outlives the run, and a later run reuses it.
    let keep = RunErrandRequest { keep_alive: true, ..Default::default() };
    let r = run(&h, "tests", keep).await;
    let (_, done) = finished(&h, &r).await;
    assert_eq!(done.status.results[0].exit_code, Some(3));
    let kept = &done.status.results[0].instance;
    assert_eq!(vms_of(&h, "tests").await, 1, "keepAlive keeps the VM");
    let r = run(&h, "tests", RunErrandRequest::default()).await;
    let (_, done) = finished(&h, &r).await;
    assert_eq!(&done.status.results[0].instance, kept, "the kept instance ran it again");
    eventually(DEADLINE, "the errand VM to be deleted after a run without keepAlive", || async {
        (vms_of(&h, "tests").await == 0).then_some(())
    })
    .await
    .unwrap();

    // A run written straight to the store (a GitOps tool) and found
    // half done (as a director restarted mid-run finds it): the recorded
    // result stands and is not run again; the run and its task finish.
    let svc = h.instances("e").await.into_iter().find(|i| i.spec.group == "svc").unwrap();
    let task = create_task(&h.store, "run errand smoke", Some("e"), "gitops").await.unwrap();
    let spec = ErrandRunSpec { errand: "smoke".into(), task: task.spec.id, ..Default::default() };
    let mut half = Object::new(ObjectMeta::scoped("e", task_name(task.spec.id)), spec);
    half.status.phase = ErrandPhase::Running;
    half.status.results = vec![ErrandInstanceResult {
        instance: svc.metadata.name.clone(),
        job: "smoke".into(),
        exit_code: Some(0),
        stdout: "recorded before the crash".into(),
        ..Default::default()
    }];
    h.store.create(&half).await.unwrap();
    let r = ErrandRunRef { task: task.spec.id, run: task_name(task.spec.id) };
    let (state, done) = finished(&h, &r).await;
    assert_eq!((state, done.status.phase), (TaskState::Done, ErrandPhase::Succeeded));
    assert_eq!(done.status.results, half.status.results, "nothing was run again");

    // An unknown errand is refused and writes nothing.
    let r = reqwest::Client::new()
        .post(format!("{}/v1/deployments/e/errands/nope/runs", h.api_url))
        .bearer_auth(TOKEN)
        .json(&RunErrandRequest::default())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains("errand groups are [tests]"));

    // The deployment's deletion takes its runs (and so any kept-alive
    // errand group) with it.
    assert!(!h.store.list::<ErrandRunSpec>("e/").await.unwrap().items.is_empty());
    let task = create_task(&h.store, "delete deployment", Some("e"), "test").await.unwrap();
    let mut d: Object<DeploymentSpec> = h.store.get(None, "e").await.unwrap();
    d.spec.task = Some(task.spec.id);
    h.store.update_spec(&d).await.unwrap();
    h.store.delete::<DeploymentSpec>(None, "e", None).await.unwrap();
    assert_eq!(h.task_end(task.spec.id).await.0, TaskState::Done);
    assert!(h.store.list::<ErrandRunSpec>("e/").await.unwrap().items.is_empty());
    h.stop().await.unwrap();
}

/// Cancels a task through the API, as `boshctl cancel-task` does.
async fn cancel(h: &Harness, task: u64) {
    let r = reqwest::Client::new()
        .post(format!("{}/v1/task-cancellations/{task}", h.api_url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
}

/// `downloadLogs` records each instance's log tarball (a blob, by digest)
/// and the API serves it; a run stops at its timeout, both while its VM is
/// being prepared and while `bin/run` hangs, naming what it waited for;
/// a run cancelled before its VM is ready runs nothing; a cancelled run's
/// hanging `bin/run` is not waited for; either way the run and its task
/// end cancelled and the errand VM goes; deleting the deployment removes
/// the log tarballs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errand_runs_fetch_logs_and_stop_at_cancel_or_timeout() {
    let h = world().await;
    let tmp = tempfile::tempdir().unwrap();
    h.upload_stemcell().await.unwrap();
    h.upload_release(&errand_release(tmp.path())).await.unwrap();
    let m = manifest_with(
        json!({"message": "colocated", "hang": true}),
        json!({"message": "from-errand-group", "hang": true}),
    );
    assert_eq!(h.task_end(h.apply("e", m).await).await.0, TaskState::Done);

    // A bound shorter than making a VM: the run fails waiting for it.
    let short = RunErrandRequest { timeout_seconds: Some(1), ..Default::default() };
    let r = run(&h, "tests", short).await;
    let (state, done) = finished(&h, &r).await;
    assert_eq!((state, done.status.phase), (TaskState::Error, ErrandPhase::Failed));
    let msg = &done.status.message;
    assert!(msg.contains("timed out after 1 s waiting for instances to be ready"), "{msg}");
    assert!(done.status.results.is_empty(), "{done:?}");
    eventually(DEADLINE, "the errand VM of the timed-out run to go", || async {
        (vms_of(&h, "tests").await == 0 && h.instances("e").await.len() == 1).then_some(())
    })
    .await
    .unwrap();

    // Cancelled before its VM is ready: nothing runs, the task and the
    // run end cancelled, the VM goes.
    let r = run(&h, "tests", RunErrandRequest::default()).await;
    cancel(&h, r.task).await;
    let (state, done) = finished(&h, &r).await;
    assert_eq!((state, done.status.phase), (TaskState::Cancelled, ErrandPhase::Cancelled));
    assert!(done.status.results.is_empty(), "{done:?}");
    eventually(DEADLINE, "the errand VM of the run cancelled early to go", || async {
        (vms_of(&h, "tests").await == 0 && h.instances("e").await.len() == 1).then_some(())
    })
    .await
    .unwrap();

    // A hanging colocated bin/run: stopped at the bound, named, no logs.
    let started = std::time::Instant::now();
    let hang =
        RunErrandRequest { timeout_seconds: Some(8), download_logs: true, ..Default::default() };
    let r = run(&h, "smoke", hang).await;
    let (state, done) = finished(&h, &r).await;
    let took = started.elapsed();
    println!("hanging colocated errand stopped after {took:?}");
    assert_eq!((state, done.status.phase), (TaskState::Error, ErrandPhase::Failed), "{done:?}");
    let [res] = &done.status.results[..] else { panic!("{:?}", done.status) };
    assert!(res.instance.starts_with("svc/"), "{res:?}");
    let msg = &done.status.message;
    assert!(
        msg.contains(&format!("timed out after 8 s waiting for bin/run on {}", res.instance)),
        "{msg}"
    );
    assert!(res.error.as_deref().is_some_and(|e| e.contains("timeout of 8 s")), "{res:?}");
    assert!(res.logs.is_none(), "a stopped bin/run fetches no logs: {res:?}");
    assert!(took < Duration::from_secs(90), "{took:?}");

    // Logs of an errand group's run, fetched before its VM goes.
    let m = manifest_with(
        json!({"message": "colocated", "hang": true}),
        json!({"message": "logged", "exit_code": 3}),
    );
    assert_eq!(h.task_end(h.apply("e", m).await).await.0, TaskState::Done);
    let logs = RunErrandRequest { download_logs: true, ..Default::default() };
    let r = run(&h, "tests", logs).await;
    let (_, done) = finished(&h, &r).await;
    let [res] = &done.status.results[..] else { panic!("{:?}", done.status) };
    assert_eq!(res.exit_code, Some(3), "{res:?}");
    let blob = res.logs.clone().unwrap_or_else(|| panic!("no logs: {res:?}"));
    let url = format!("{}/v1/deployments/e/errand-runs/{}/logs/{}", h.api_url, r.run, blob.sha256);
    let got = reqwest::Client::new().get(&url).bearer_auth(TOKEN).send().await.unwrap();
    assert!(got.status().is_success(), "{}", got.status());
    let tgz = got.bytes().await.unwrap();
    use sha2::Digest;
    let digest: String = sha2::Sha256::digest(&tgz).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(digest, blob.sha256);
    assert_eq!(tgz.len() as u64, blob.size);
    let mut files = std::collections::BTreeMap::new();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&tgz[..]));
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut entry, &mut text);
        files.insert(path.trim_start_matches("./").to_string(), text);
    }
    assert_eq!(
        files.get("smoke/errand-run.log").map(String::as_str),
        Some("logged was here\n"),
        "{:?}",
        files.keys()
    );
    // Only blobs a run recorded are served.
    let other =
        format!("{}/v1/deployments/e/errand-runs/{}/logs/{}", h.api_url, r.run, "0".repeat(64));
    let got = reqwest::Client::new().get(&other).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(got.status(), 404);
    eventually(DEADLINE, "the errand VM to go after the logged run", || async {
        (vms_of(&h, "tests").await == 0 && h.instances("e").await.len() == 1).then_some(())
    })
    .await
    .unwrap();

    // Cancelled while bin/run hangs: not waited for; the VM goes.
    let m = manifest_with(
        json!({"message": "colocated", "hang": true}),
        json!({"message": "from-errand-group", "hang": true}),
    );
    assert_eq!(h.task_end(h.apply("e", m).await).await.0, TaskState::Done);
    let r = run(&h, "tests", RunErrandRequest::default()).await;
    eventually(DEADLINE, "bin/run to start", || async {
        let events = h.events(r.task).await;
        events.iter().any(|e| e.state == bosh_api::objects::EventState::Started).then_some(())
    })
    .await
    .unwrap();
    let cancelled_at = std::time::Instant::now();
    cancel(&h, r.task).await;
    let (state, done) = finished(&h, &r).await;
    let took = cancelled_at.elapsed();
    println!("cancelled errand run ended {took:?} after the cancel");
    assert_eq!(
        (state, done.status.phase),
        (TaskState::Cancelled, ErrandPhase::Cancelled),
        "{done:?}"
    );
    assert!(took < Duration::from_secs(30), "the hanging bin/run was waited for: {took:?}");
    let [res] = &done.status.results[..] else { panic!("{:?}", done.status) };
    assert!(res.error.as_deref().is_some_and(|e| e.contains("cancelled")), "{res:?}");
    eventually(DEADLINE, "the cancelled run's errand VM to go", || async {
        (vms_of(&h, "tests").await == 0 && h.instances("e").await.len() == 1).then_some(())
    })
    .await
    .unwrap();

    // The deployment's deletion takes the runs' log tarballs with them.
    assert!(h.director.blobs.exists(&blob.sha256).await.unwrap());
    let task = create_task(&h.store, "delete deployment", Some("e"), "test").await.unwrap();
    let mut d: Object<DeploymentSpec> = h.store.get(None, "e").await.unwrap();
    d.spec.task = Some(task.spec.id);
    h.store.update_spec(&d).await.unwrap();
    h.store.delete::<DeploymentSpec>(None, "e", None).await.unwrap();
    assert_eq!(h.task_end(task.spec.id).await.0, TaskState::Done);
    assert!(!h.director.blobs.exists(&blob.sha256).await.unwrap(), "the logs stayed");
    h.stop().await.unwrap();
}
