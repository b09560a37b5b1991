//! BOSH's lifecycle order on container VMs (issue 15 item 3): `pre-stop`
//! (told where the instance is headed) before drain and `post-stop` after
//! stop; `post-deploy` once per deploy, after every instance converged.
//! A job's scripts log to its persistent disk, which outlives the VM.

use std::path::{Path, PathBuf};

use bosh_api::Object;
use bosh_api::objects::{DesiredState, InstanceOverride, InstanceSpec, TaskState};
use bosh_controllers::testing::Harness;
use serde_json::json;

use super::compile::write;
use super::deploy::{DeployHarness, world};

/// A release with job `life`: a sleeping process and every lifecycle
/// script appending `<script> <ns since epoch> <next states>` to the disk.
fn life_release(root: &Path) -> PathBuf {
    let dir = root.join("life-release");
    write(&dir, "config/final.yml", "name: life\n");
    let scripts = ["pre-start", "post-start", "post-deploy", "pre-stop", "drain", "post-stop"];
    let templates: String = scripts.iter().map(|s| format!("  {s}.erb: bin/{s}\n")).collect();
    write(
        &dir,
        "jobs/life/spec",
        &format!("---\nname: life\ntemplates:\n  ctl.erb: bin/ctl\n{templates}packages: []\n"),
    );
    write(
        &dir,
        "jobs/life/monit",
        "check process life\n  with pidfile /var/vcap/sys/run/life/life.pid\n  start program \"/var/vcap/jobs/life/bin/ctl start\"\n  stop program \"/var/vcap/jobs/life/bin/ctl stop\"\n  group vcap\n",
    );
    write(
        &dir,
        "jobs/life/templates/ctl.erb",
        "#!/bin/bash\nset -eu\nP=/var/vcap/sys/run/life/life.pid\ncase $1 in\n  start) mkdir -p /var/vcap/sys/run/life; nohup sleep 100000 >/dev/null 2>&1 & echo $! > $P ;;\n  stop) kill $(cat $P) 2>/dev/null || true; rm -f $P ;;\nesac\n",
    );
    for s in scripts {
        // drain prints the seconds to wait (0), as its contract asks.
        let out = if s == "drain" { "echo 0\n" } else { "" };
        write(
            &dir,
            &format!("jobs/life/templates/{s}.erb"),
            &format!(
                "#!/bin/bash\necho \"{s} $(date +%s%N) vm=${{BOSH_VM_NEXT_STATE:-}} instance=${{BOSH_INSTANCE_NEXT_STATE:-}} deployment=${{BOSH_DEPLOYMENT_NEXT_STATE:-}}\" >> /var/vcap/store/life.log\n{out}"
            ),
        );
    }
    dir
}

fn manifest(instances: u32) -> serde_json::Value {
    json!({
        "name": "life",
        "releases": [{"name": "life", "version": "latest"}],
        "stemcells": [{"alias": "default", "os": "local", "version": "latest"}],
        "update": {"canaries": 1, "max_in_flight": 1,
                   "canary_watch_time": "300-20000", "update_watch_time": "300-20000"},
        "instance_groups": [{"name": "life", "instances": instances, "azs": ["z1"],
            "vm_type": "small", "stemcell": "default", "persistent_disk": 16,
            "networks": [{"name": "default"}],
            "jobs": [{"name": "life", "release": "life"}]}],
    })
}

/// One logged script run.
#[derive(Debug)]
struct Run {
    script: String,
    at: u128,
    next: String,
}

async fn log_of(h: &Harness, i: &Object<InstanceSpec>) -> Vec<Run> {
    let agent = h.director.agents.for_agent(i.status.agent_id.clone().unwrap());
    let read = vec!["cat".into(), "/var/vcap/store/life.log".into()];
    let r = agent.exec(&read, Some(10)).await.unwrap();
    assert_eq!(r.exit_code, 0, "{}", r.stderr);
    r.stdout
        .lines()
        .map(|l| {
            let mut w = l.splitn(3, ' ');
            let (script, at, next) = (w.next().unwrap(), w.next().unwrap(), w.next().unwrap());
            Run { script: script.into(), at: at.parse().unwrap(), next: next.into() }
        })
        .collect()
}

fn runs<'a>(log: &'a [Run], script: &str) -> Vec<&'a Run> {
    log.iter().filter(|r| r.script == script).collect()
}

/// Post-deploy runs once per instance, after the last instance started
/// (the rollout is one at a time, so per-instance post-deploy would come
/// before the next instance's post-start); a recreate runs pre-stop told
/// the VM goes, then drain, stop and post-stop, and post-deploy again; a
/// stop runs pre-stop told everything stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pre_stop_and_post_deploy_follow_boshs_order() {
    let h = world().await;
    let tmp = tempfile::tempdir().unwrap();
    h.upload_stemcell().await.unwrap();
    h.upload_release(&life_release(tmp.path())).await.unwrap();
    let t = h.apply("life", manifest(2)).await;
    assert_eq!(h.task_end(t).await, (TaskState::Done, "/deployments/life".into()));
    let instances = h.instances("life").await;
    assert_eq!(instances.len(), 2);
    let mut logs = vec![];
    for i in &instances {
        logs.push(log_of(&h, i).await);
    }
    let last_start = logs.iter().flat_map(|l| runs(l, "post-start")).map(|r| r.at).max().unwrap();
    for log in &logs {
        let deploys = runs(log, "post-deploy");
        assert_eq!(deploys.len(), 1, "post-deploy once per instance: {log:?}");
        assert!(deploys[0].at > last_start, "post-deploy after every instance started: {logs:?}");
        assert!(runs(log, "pre-stop").is_empty(), "nothing stopped yet: {log:?}");
    }

    // Recreate (the VM goes), then stop (the VM, the instance and the
    // deployment stay).
    let recreate = InstanceOverride { recreate: 1, ..Default::default() };
    let stop = InstanceOverride { state: Some(DesiredState::Stopped), recreate: 1, restart: 0 };
    for ov in [recreate, stop] {
        let t = h
            .apply_with("life", |s| {
                s.instances.insert("life".into(), ov.clone());
            })
            .await;
        assert_eq!(h.task_end(t).await.0, TaskState::Done, "{ov:?}");
    }
    for i in h.instances("life").await {
        let log = log_of(&h, &i).await;
        let order: Vec<&str> = log
            .iter()
            .map(|r| r.script.as_str())
            .filter(|s| ["pre-stop", "drain", "post-stop"].contains(s))
            .collect();
        assert_eq!(
            order,
            ["pre-stop", "drain", "post-stop", "pre-stop", "drain", "post-stop"],
            "{log:?}"
        );
        let nexts: Vec<&str> = runs(&log, "pre-stop").iter().map(|r| r.next.as_str()).collect();
        assert_eq!(
            nexts,
            ["vm=delete instance=keep deployment=keep", "vm=keep instance=keep deployment=keep"],
            "a recreate deletes the VM; a stop keeps it"
        );
        // The recreate's generation ran post-deploy once more; the stop's
        // on no instance (none runs).
        assert_eq!(runs(&log, "post-deploy").len(), 2, "{log:?}");
    }
    h.stop().await.unwrap();
}
