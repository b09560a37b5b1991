//! Lifecycle scripts, drain, errands, logs and disks.

use std::time::Instant;

use serde_json::json;

use super::{Env, job_spec};

/// Static drain waits the printed seconds; dynamic drain polls with job_check_status until it prints >= 0.
#[tokio::test]
async fn drain_static_and_dynamic() {
    let env = Env::start(1).await;
    let a = env.spawn(0).await;
    a.wait_ready().await;
    // Prints -1 twice (poll again in 1 s), then 0; logs its arguments.
    let drain = r#"#!/bin/sh
LOG=/var/vcap/data/drain.log
echo "$@" >> $LOG
case $1 in
  job_shutdown) echo 1 ;;
  *) if [ $(wc -l < $LOG) -ge 3 ]; then echo 0; else echo -1; fi ;;
esac
"#;
    let spec = job_spec(&env, "db", &[("bin/drain", drain, 0o755)], json!({})).await;
    a.long("apply", json!([spec.clone()])).await.unwrap();

    let t = Instant::now();
    assert_eq!(a.long("drain", json!(["shutdown"])).await.unwrap(), 1);
    assert!(t.elapsed().as_secs_f64() >= 1.0);
    std::fs::remove_file(a.vcap("data/drain.log")).unwrap();

    let mut next = spec.clone();
    next["jobs"][0]["version"] = json!("v2");
    let t = Instant::now();
    assert_eq!(a.long("drain", json!(["update", next])).await.unwrap(), 2);
    assert!(t.elapsed().as_secs_f64() >= 2.0);
    let calls = std::fs::read_to_string(a.vcap("data/drain.log")).unwrap();
    assert_eq!(
        calls.lines().collect::<Vec<_>>(),
        [
            "job_changed hash_unchanged",
            "job_check_status hash_unchanged",
            "job_check_status hash_unchanged"
        ]
    );
    let err = a.long("drain", json!(["sideways"])).await.unwrap_err();
    assert!(err.contains("unknown drain type"), "{err}");
}

/// Scripts run for every job that has them; a failure names the job and exit code.
#[tokio::test]
async fn run_script_reports_the_failing_job() {
    let env = Env::start(1).await;
    let a = env.spawn(0).await;
    a.wait_ready().await;
    let ok = "#!/bin/sh\necho \"$BOSH_VM_NEXT_STATE\" > /var/vcap/data/next\n";
    let spec = job_spec(
        &env,
        "good",
        &[
            ("bin/pre-stop", ok, 0o755),
            ("bin/post-start", "#!/bin/sh\necho unhealthy; exit 3\n", 0o755),
        ],
        json!({}),
    )
    .await;
    a.long("apply", json!([spec])).await.unwrap();
    let r = a
        .long("run_script", json!(["pre-stop", {"env": {"BOSH_VM_NEXT_STATE": "delete"}}]))
        .await
        .unwrap();
    assert_eq!(r, json!({"ran": ["good"]}));
    assert_eq!(std::fs::read_to_string(a.vcap("data/next")).unwrap(), "delete\n");
    let none = a.long("run_script", json!(["post-deploy", {}])).await.unwrap();
    assert_eq!(none, json!({"ran": []}));
    let err = a.long("run_script", json!(["post-start", {}])).await.unwrap_err();
    assert!(err.contains("job good: bin/post-start exited with code 3"), "{err}");
    assert!(err.contains("unhealthy"), "{err}");
    let err = a.long("run_script", json!(["../../bin/sh", {}])).await.unwrap_err();
    assert!(err.contains("invalid script name"), "{err}");
}

/// An errand's exit code and output come back as a result; its logs can be fetched.
#[tokio::test]
async fn errand_result_and_logs_are_returned() {
    let env = Env::start(1).await;
    let a = env.spawn(0).await;
    a.wait_ready().await;
    let run = "#!/bin/sh\necho smoke tests passed\necho warn >&2\nexit 2\n";
    let spec = job_spec(&env, "smoke", &[("bin/run", run, 0o755)], json!({})).await;
    a.long("apply", json!([spec])).await.unwrap();
    let r = a.long("run_errand", json!([])).await.unwrap();
    assert_eq!(
        r,
        json!({"job": "smoke", "exit_code": 2, "stdout": "smoke tests passed\n", "stderr": "warn\n"})
    );
    let logs = a.long("fetch_logs", json!([])).await.unwrap();
    let bytes = env.blobs.get_bytes(logs["sha256"].as_str().unwrap()).await.unwrap();
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
    let names: Vec<String> =
        ar.entries().unwrap().map(|e| e.unwrap().path().unwrap().display().to_string()).collect();
    assert!(names.contains(&"smoke/errand.stdout.log".to_string()), "{names:?}");
}

/// A persistent disk is mounted at /var/vcap/store, listed, migrated to a new disk and unmounted.
#[tokio::test]
async fn disks_mount_list_migrate_and_unmount() {
    let env = Env::start(1).await;
    let a = env.spawn(0).await;
    a.wait_ready().await;
    assert_eq!(a.value("list_disk", json!([])).await, json!([]));
    assert_eq!(a.value("mount_disk", json!(["disk-a"])).await, "mounted");
    assert_eq!(a.value("mount_disk", json!(["disk-a"])).await, "mounted", "mount is idempotent");
    assert_eq!(a.value("list_disk", json!([])).await, json!(["disk-a"]));
    std::fs::create_dir_all(a.vcap("store/db")).unwrap();
    std::fs::write(a.vcap("store/db/data"), "precious").unwrap();
    assert_eq!(a.long("migrate_disk", json!(["disk-a", "disk-b"])).await.unwrap(), "migrated");
    assert_eq!(a.value("list_disk", json!([])).await, json!(["disk-b"]));
    assert_eq!(std::fs::read_to_string(a.vcap("store/db/data")).unwrap(), "precious");
    assert!(env.dir.path().join("disk-b-0/db/data").is_file());
    assert_eq!(a.value("unmount_disk", json!(["disk-b"])).await, "unmounted");
    assert_eq!(a.value("list_disk", json!([])).await, json!([]));
    assert!(a.vcap("store").is_dir() && !a.vcap("store/db").exists());
    match a.call("mount_disk", json!(["disk-zzz"])).await {
        bosh_api::agent::Reply::Exception(e) => {
            assert!(e.message.contains("not attached"), "{}", e.message)
        }
        r => panic!("{r:?}"),
    }
}

/// cancel_task stops an endless dynamic drain, and the agent takes the next lifecycle call.
#[tokio::test]
async fn cancelled_drain_releases_the_agent() {
    let env = Env::start(1).await;
    let a = env.spawn(0).await;
    a.wait_ready().await;
    let drain = "#!/bin/sh\necho -1\n";
    let spec = job_spec(&env, "stuck", &[("bin/drain", drain, 0o755)], json!({})).await;
    a.long("apply", json!([spec])).await.unwrap();
    let handle = a.value("drain", json!(["shutdown"])).await;
    let id = handle["agent_task_id"].as_str().unwrap().to_string();
    assert_eq!(a.value("get_task", json!([id])).await["state"], "running");
    assert_eq!(a.value("cancel_task", json!([id])).await, "canceled");
    let err = a.wait_task(&id).await.unwrap_err();
    assert!(err.contains("cancelled"), "{err}");
    assert_eq!(a.long("stop", json!([])).await.unwrap(), "stopped");
}
