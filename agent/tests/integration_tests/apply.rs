//! apply: packages and jobs installed, supervised, and bad blobs refused.

use bosh_api::agent::{Alert, Heartbeat, JobState};
use bosh_test_utils::{eventually, free_port};
use flate2::Compression;
use flate2::write::GzEncoder;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{DEADLINE, Env, job_spec, tgz};

const MONIT: &str = r#"check process http
  with pidfile /var/vcap/sys/run/web/http.pid
  start program "/var/vcap/jobs/web/bin/ctl start" with timeout 20 seconds
  stop program "/var/vcap/jobs/web/bin/ctl stop"
  group vcap
"#;

fn ctl(port: u16) -> String {
    format!(
        r#"#!/bin/sh
RUN=/var/vcap/sys/run/web
case $1 in
  start)
    mkdir -p $RUN
    cd /var/vcap/packages/site
    python3 -m http.server {port} --bind 127.0.0.1 >> /var/vcap/sys/log/web/http.log 2>&1 &
    echo $! > $RUN/http.pid
    ;;
  stop)
    kill $(cat $RUN/http.pid)
    ;;
esac
"#
    )
}

async fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes()).await.ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.ok()?;
    Some(buf)
}

fn state(v: &Value) -> (String, Option<u64>, u64) {
    let p = &v["processes"][0];
    (
        v["job_state"].as_str().unwrap().to_string(),
        p["pid"].as_u64(),
        p["restarts"].as_u64().unwrap(),
    )
}

/// An applied job's process serves HTTP; killed, it is reported failing, restarted and reported running.
#[tokio::test]
async fn applied_http_job_serves_and_is_restarted_after_a_kill() {
    let env = Env::start(1).await;
    let mut beats = env.director.subscribe("hm.agent.heartbeat.agent-0").await.unwrap();
    let mut alerts = env.director.subscribe("hm.agent.alert.agent-0").await.unwrap();
    let a = env.spawn(0).await;
    a.wait_ready().await;
    let port = free_port();
    let site = env.upload(tgz(&[("index.html", "hello from bosh-rs\n", 0o644)])).await;
    let packages =
        json!({"site": {"name": "site", "version": "1", "sha256": site.sha256, "size": site.size}});
    let ctl = ctl(port);
    let spec =
        job_spec(&env, "web", &[("monit", MONIT, 0o644), ("bin/ctl", &ctl, 0o644)], packages).await;
    assert_eq!(a.long("apply", json!([spec])).await.unwrap(), "applied");
    assert!(a.vcap("packages/site/index.html").is_file());
    assert!(a.vcap("jobs/web/bin/ctl").is_file());
    assert!(a.vcap("store").is_dir() && a.vcap("sys/log").is_dir());
    assert_eq!(a.value("get_state", json!([])).await["job_state"], "stopped");

    assert_eq!(a.long("start", json!([])).await.unwrap(), "started");
    let body = eventually(DEADLINE, "the job to serve HTTP", || http_get(port, "/index.html"))
        .await
        .unwrap();
    assert!(body.contains("hello from bosh-rs"), "{body}");
    let (_, pid, _) = eventually(DEADLINE, "running", || async {
        let s = state(&a.value("get_state", json!([])).await);
        (s.0 == "running" && s.1.is_some()).then_some(s)
    })
    .await
    .unwrap();

    // SAFETY: kill(2) on the job process the agent reported.
    unsafe { libc::kill(pid.unwrap() as i32, libc::SIGKILL) };
    let alert = tokio::time::timeout(DEADLINE, alerts.next()).await.unwrap().unwrap();
    let alert: Alert = serde_json::from_slice(&alert.payload).unwrap();
    assert!(alert.title.contains("http (web)"), "{}", alert.title);
    eventually(DEADLINE, "get_state to report failing", || async {
        (a.value("get_state", json!([])).await["job_state"] == "failing").then_some(())
    })
    .await
    .unwrap();
    // Failing first (the heartbeat sent at the failure), then running again.
    let mut seen_failing = false;
    loop {
        let msg = tokio::time::timeout(DEADLINE, beats.next()).await.unwrap().unwrap();
        let hb: Heartbeat = serde_json::from_slice(&msg.payload).unwrap();
        match hb.job_state {
            JobState::Failing => seen_failing = true,
            JobState::Running if seen_failing => break,
            _ => {}
        }
    }
    let (job_state, pid2, restarts) = state(&a.value("get_state", json!(["full"])).await);
    assert_eq!((job_state.as_str(), restarts), ("running", 1));
    assert_ne!(pid2, pid);
    eventually(DEADLINE, "the restarted job to serve HTTP", || http_get(port, "/index.html"))
        .await
        .unwrap();

    assert_eq!(a.long("stop", json!([])).await.unwrap(), "stopped");
    assert!(http_get(port, "/").await.is_none(), "stopped job still serves");
    assert_eq!(a.value("get_state", json!([])).await["job_state"], "stopped");

    // Re-applying a new package version replaces the old one and leaves no old content behind.
    let site2 = env.upload(tgz(&[("index.html", "v2\n", 0o644)])).await;
    let packages = json!({"site": {"name": "site", "version": "2", "sha256": site2.sha256, "size": site2.size}});
    let spec =
        job_spec(&env, "web", &[("monit", MONIT, 0o644), ("bin/ctl", &ctl, 0o644)], packages).await;
    a.long("apply", json!([spec])).await.unwrap();
    assert_eq!(std::fs::read_to_string(a.vcap("packages/site/index.html")).unwrap(), "v2\n");
    let versions = |d: &str| std::fs::read_dir(a.vcap(d)).unwrap().count();
    assert_eq!((versions("data/packages/site"), versions("data/jobs/web")), (1, 1));
    assert!(!a.vcap("data/blobs").exists());
}

/// Issue 12 item 6: rendered templates (which hold credentials) are
/// installed 0750 (directories, `bin/*`) and 0640 (other files), whatever
/// the archive says, as bosh-agent installs them.
#[tokio::test]
async fn rendered_templates_are_not_world_readable() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::start(1).await;
    let a = env.spawn(0).await;
    a.wait_ready().await;
    let files = [
        ("monit", "", 0o644),
        ("bin/ctl", "#!/bin/sh\n", 0o777),
        ("config/app.yml", "password: hunter2\n", 0o666),
    ];
    let spec = job_spec(&env, "web", &files, json!({})).await;
    assert_eq!(a.long("apply", json!([spec])).await.unwrap(), "applied");
    let mode = |rel: &str| std::fs::metadata(a.vcap(rel)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("jobs/web"), 0o750);
    assert_eq!(mode("jobs/web/config"), 0o750);
    assert_eq!(mode("jobs/web/bin"), 0o750);
    assert_eq!(mode("jobs/web/bin/ctl"), 0o750);
    assert_eq!(mode("jobs/web/config/app.yml"), 0o640);
    assert_eq!(mode("jobs/web/monit"), 0o640);
}

/// A blob whose content no longer matches its sha256 is refused and nothing is installed.
#[tokio::test]
async fn tampered_blob_is_refused() {
    let env = Env::start(1).await;
    let a = env.spawn(0).await;
    a.wait_ready().await;
    let pkg = env.upload(tgz(&[("file", "genuine", 0o644)])).await;
    let stored = bosh_blobstore::LocalStorage::new(&env.blob_root).blob_path(&pkg.sha256);
    std::fs::write(&stored, tgz(&[("file", "evil!!!", 0o644)])).unwrap();
    let packages =
        json!({"p": {"name": "p", "version": "1", "sha256": pkg.sha256, "size": pkg.size}});
    let spec = job_spec(&env, "j", &[("monit", "", 0o644)], packages).await;
    let err = a.long("apply", json!([spec])).await.unwrap_err();
    assert!(err.contains(&pkg.sha256) && err.contains("package p"), "{err}");
    assert!(!a.vcap("packages/p").exists());
    assert_eq!(a.call("ping", json!([])).await, bosh_api::agent::Reply::Value("pong".into()));
}

/// Packages with `..` entries or escaping symlinks are refused and write nothing outside.
#[tokio::test]
async fn hostile_tarballs_are_refused() {
    let env = Env::start(1).await;
    let a = env.spawn(0).await;
    a.wait_ready().await;
    // An entry named ../../../escape.txt (written by hand: tar refuses to build it).
    let mut b = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    let mut h = tar::Header::new_old();
    let name = b"../../../../escape.txt";
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_size(4);
    h.set_mode(0o644);
    h.set_cksum();
    b.append(&h, &b"evil"[..]).unwrap();
    let dotdot = b.into_inner().unwrap().finish().unwrap();
    // A symlink pointing out of the package, then a file written through it.
    let mut b = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    b.append_link(&mut h, "out", "../../../../..").unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_size(4);
    h.set_mode(0o644);
    b.append_data(&mut h, "out/escape2.txt", &b"evil"[..]).unwrap();
    let symlink = b.into_inner().unwrap().finish().unwrap();

    for (name, bytes) in [("dotdot", dotdot), ("symlink", symlink)] {
        let blob = env.upload(bytes).await;
        let packages =
            json!({name: {"name": name, "version": "1", "sha256": blob.sha256, "size": blob.size}});
        let spec = job_spec(&env, "j", &[("monit", "", 0o644)], packages).await;
        let err = a.long("apply", json!([spec])).await.unwrap_err();
        assert!(err.contains("escapes"), "{name}: {err}");
    }
    for f in ["escape.txt", "escape2.txt"] {
        assert!(!env.dir.path().join(f).exists() && !a.root.join(f).exists());
        assert!(!a.root.join("var").join(f).exists() && !a.vcap(f).exists());
    }
}

/// The pid of the first process once the job runs.
async fn running_pid(a: &super::TestAgent) -> Option<u64> {
    let v = a.value("get_state", json!([])).await;
    (v["job_state"] == "running").then(|| v["processes"][0]["pid"].as_u64()).flatten()
}

/// A restarted agent adopts its job's live process from the pidfile instead of starting a second one.
#[tokio::test]
async fn restarted_agent_adopts_running_job_processes() {
    let env = Env::start(1).await;
    let mut a = env.spawn(0).await;
    a.wait_ready().await;
    let monit = "check process sleeper\n  with pidfile /var/vcap/sys/run/s/s.pid\n  \
                 start program \"/bin/sh -c 'sleep 600 & echo $! > /var/vcap/sys/run/s/s.pid'\"\n";
    let spec = job_spec(&env, "s", &[("monit", monit, 0o644)], json!({})).await;
    a.long("apply", json!([spec])).await.unwrap();
    a.long("start", json!([])).await.unwrap();
    let pid = eventually(DEADLINE, "running", || running_pid(&a)).await.unwrap();
    a.process.kill();
    let b = env.spawn(0).await;
    b.wait_ready().await;
    let adopted = eventually(DEADLINE, "running after restart", || running_pid(&b)).await.unwrap();
    assert_eq!(adopted, pid, "the live process is adopted, not started twice");
    let v = b.value("get_state", json!([])).await;
    assert_eq!(v["processes"][0]["restarts"], 0);
    b.long("stop", json!([])).await.unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(stat.is_empty() || stat.contains(") Z "), "still alive: {stat}");
}
