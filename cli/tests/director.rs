//! `boshctl` against a real API server and etcd: config verbs, get, and exit codes.

use std::path::PathBuf;
use std::sync::Arc;

use bosh_controllers::server::api::{self, ApiState};
use bosh_test_utils::TestEnv;

const TOKEN: &str = "cli-test-token";

struct Director {
    _env: TestEnv,
    url: String,
    store: bosh_api::store::Store,
}

async fn director() -> Director {
    director_with(Default::default()).await
}

async fn director_with(limits: bosh_controllers::server::api::limits::Limits) -> Director {
    let env = TestEnv::etcd_only().await.unwrap();
    let store = bosh_api::store::Store::connect(&env.store_config(), "/bosh").await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let storage = Arc::new(bosh_blobstore::LocalStorage::new(env.dir().join("blobs")));
    let state =
        ApiState::new(store.clone(), TOKEN).with_blobstore(storage, env.dir().join("scratch"));
    let state = state.with_limits(limits);
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
            "--agent-only",
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
    // This director runs no stemcell controller (no CPI): nothing would
    // import the stemcell, so the command is not asked to wait for it.
    let o = boshctl(&d, TOKEN, &["upload-stemcell", sc.to_str().unwrap(), "--no-wait"]).await;
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

/// A compiled release (packages without sources, compiled for a
/// stemcell) says so in `releases` and `inspect-release`; a source
/// release's column stays empty.
#[tokio::test]
async fn releases_and_inspect_release_show_what_a_release_is_compiled_for() {
    use bosh_api::objects::{BlobRef, ReleasePackage, ReleaseSpec};
    use bosh_api::{Object, ObjectMeta};
    let d = director().await;
    let pkg = |name: &str, source: bool| ReleasePackage {
        name: name.into(),
        version: format!("fp-{name}"),
        fingerprint: format!("fp-{name}"),
        sha1: "sha256:aa".into(),
        blob: source.then(|| BlobRef { sha256: "b".repeat(64), size: 1 }),
        compiled_for: if source { vec![] } else { vec!["ubuntu-jammy/1.5".into()] },
        ..Default::default()
    };
    for (name, source) in [("compiled", false), ("sourced", true)] {
        let spec = ReleaseSpec {
            name: name.into(),
            version: "1".into(),
            packages: vec![pkg("lib", source), pkg("app", source)],
            ..Default::default()
        };
        let obj = Object::new(ObjectMeta::named(format!("{name}/1")), spec);
        d.store.create(&obj).await.unwrap();
    }
    let o = boshctl(&d, TOKEN, &["releases"]).await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains("COMPILED FOR"), "{}", o.stdout);
    let line = |name: &str| o.stdout.lines().find(|l| l.contains(name)).unwrap().to_string();
    assert!(line("compiled").contains("ubuntu-jammy/1.5"), "{}", o.stdout);
    assert!(!line("sourced").contains("ubuntu-jammy"), "{}", o.stdout);
    let o = boshctl(&d, TOKEN, &["inspect-release", "compiled/1"]).await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    let lib = o.stdout.lines().find(|l| l.contains("fp-lib")).unwrap();
    assert!(lib.contains("(no source)") && lib.contains("ubuntu-jammy/1.5"), "{}", o.stdout);
}

/// Tasks list, a task prints its events like the bosh CLI, and a failed task exits non-zero.
#[tokio::test]
async fn tasks_and_events_print_like_bosh() {
    use bosh_api::objects::{EventState, TaskState};
    use bosh_controllers::libs::tasks::{EventLog, create_task, set_task_state};
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

/// Runs `boshctl` against `url` (which may not be a director at all); returns its output and how long it ran.
async fn boshctl_at(url: &str, args: &[&str]) -> (Out, std::time::Duration) {
    let started = std::time::Instant::now();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_boshctl"))
        .args(args)
        .env("BOSH_DIRECTOR", url)
        .env("BOSH_TOKEN", TOKEN)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let out = Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    (out, started.elapsed())
}

/// Accepts connections and reads their requests but never answers; keeps them open while it lives.
async fn silent_director() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
        }
    });
    url
}

/// A director that accepts and never answers: the CLI gives up after `--request-timeout`, naming the director and the wait (issue 12, "Robustness").
#[tokio::test]
async fn silent_director_times_out_naming_the_director_and_the_wait() {
    let url = silent_director().await;
    let (o, took) = boshctl_at(&url, &["deployments", "--request-timeout", "1s"]).await;
    assert_eq!(o.code, 1, "{}", o.stderr);
    let want = format!(
        "director {url} did not answer within 1 s (request timeout; set --request-timeout)"
    );
    assert!(o.stderr.contains(&want), "{}", o.stderr);
    assert!(took < std::time::Duration::from_secs(20), "took {took:?}");
    // The environment sets it as well.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_boshctl"))
        .arg("configs")
        .env("BOSH_DIRECTOR", &url)
        .env("BOSH_TOKEN", TOKEN)
        .env("BOSH_REQUEST_TIMEOUT", "500ms")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("did not answer within 500 ms (request timeout"), "{stderr}");
}

/// A director whose accept queue is full never completes a connection: the CLI gives up after `--connect-timeout`.
#[tokio::test]
async fn unconnectable_director_times_out_on_connect() {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    // Fill the accept queue (never accepting) until a connection attempt
    // goes unanswered: from then on the kernel drops new SYNs.
    let mut queued = Vec::new();
    loop {
        match std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(300)) {
            Ok(s) => queued.push(s),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => break,
            Err(e) => panic!("connecting to fill the queue: {e}"),
        }
        assert!(queued.len() < 64, "the accept queue never filled");
    }
    let url = format!("http://{addr}");
    let (o, took) = boshctl_at(&url, &["configs", "--connect-timeout", "1s"]).await;
    assert_eq!(o.code, 1, "{}", o.stderr);
    let want = format!(
        "director {url} did not answer within 1 s (connect timeout; set --connect-timeout)"
    );
    assert!(o.stderr.contains(&want), "{}", o.stderr);
    assert!(took < std::time::Duration::from_secs(20), "took {took:?}");
    drop(listener);
}

/// Answers one watch request with a chunked `200`, then writes `lines` one every `every`, then either ends the stream or holds it open in silence.
async fn streaming_director(lines: Vec<String>, every: std::time::Duration, end: bool) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            conn.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        conn.write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\ntransfer-encoding: chunked\r\n\r\n",
        )
        .await
        .unwrap();
        let mut tick = tokio::time::interval(every);
        for line in lines {
            tick.tick().await;
            let line = format!("{line}\n");
            conn.write_all(format!("{:x}\r\n{line}\r\n", line.len()).as_bytes()).await.unwrap();
        }
        if end {
            conn.write_all(b"0\r\n\r\n").await.unwrap();
        } else {
            std::future::pending::<()>().await;
        }
    });
    url
}

/// A watch whose director goes silent ends after `--idle-timeout`, naming the director; the request timeout does not cut a stream short.
#[tokio::test]
async fn silent_watch_stream_ends_after_the_idle_timeout() {
    let relisted = r#"{"type":"RELISTED","revision":1,"objects":[]}"#.to_string();
    let url = streaming_director(vec![relisted], std::time::Duration::from_millis(10), false).await;
    let (o, _) = boshctl_at(
        &url,
        &["watch", "deployments", "--idle-timeout", "1s", "--request-timeout", "30s"],
    )
    .await;
    assert_eq!(o.code, 1, "{}", o.stderr);
    let want = format!(
        "director {url} sent nothing for 1 s (idle timeout of a stream; set --idle-timeout)"
    );
    assert!(o.stderr.contains(&want), "{}", o.stderr);
}

/// Keep-alive lines keep a quiet watch alive past the idle timeout, are not printed, and the request timeout does not apply to the stream.
#[tokio::test]
async fn keepalives_keep_a_quiet_watch_alive_past_the_idle_timeout() {
    let keepalive = r#"{"type":"KEEPALIVE"}"#.to_string();
    let mut lines = vec![keepalive; 12];
    lines.push(r#"{"type":"DELETED","name":"after-the-quiet","revision":9}"#.into());
    // 12 keep-alives 250 ms apart: 3 s of quiet, three times the idle timeout.
    let url = streaming_director(lines, std::time::Duration::from_millis(250), true).await;
    let (o, took) = boshctl_at(
        &url,
        &["watch", "deployments", "--idle-timeout", "1s", "--request-timeout", "1s"],
    )
    .await;
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(took > std::time::Duration::from_secs(2), "the stream lasted {took:?}");
    assert_eq!(o.stdout.trim(), "DELETED  after-the-quiet", "{}", o.stdout);
}

/// A manifest past the director's `--max-request-bytes` is refused: exit 2, naming the limit and the flag (issue 12, "Limits").
#[tokio::test]
async fn deploying_a_manifest_over_the_request_limit_exits_2_naming_the_flag() {
    let limits = bosh_controllers::server::api::limits::Limits {
        max_request_bytes: 256 * 1024,
        ..Default::default()
    };
    let d = director_with(limits).await;
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("big.yml");
    let pad = "x".repeat(2 * 1024 * 1024);
    std::fs::write(
        &m,
        format!("name: big\nreleases: []\nstemcells: []\ninstance_groups: []\npad: {pad}\n"),
    )
    .unwrap();
    // 2 MiB: more than the sockets buffer, so the director must read the
    // refused body for the CLI to see its answer rather than a reset.
    let o = boshctl(&d, TOKEN, &["deploy", "-d", "big", m.to_str().unwrap()]).await;
    assert!(
        o.stderr.contains("262144 bytes") && o.stderr.contains("--max-request-bytes"),
        "{}",
        o.stderr
    );
}

/// `task --follow` prints the events written while it follows and returns when the task finishes.
#[tokio::test]
async fn task_follow_prints_events_written_while_following_and_ends_with_the_task() {
    use bosh_api::objects::{EventState, TaskState};
    use bosh_controllers::libs::tasks::{EventLog, create_task, set_task_state};
    let d = director().await;
    let t = create_task(&d.store, "create deployment", Some("web"), "admin").await.unwrap();
    let log = EventLog::new(d.store.clone(), t.spec.id);
    log.record("Creating missing vms", "web/0", EventState::Started, "").await.unwrap();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_boshctl"))
        .args(["task", &t.spec.id.to_string(), "--follow", "--idle-timeout", "30s"])
        .env("BOSH_DIRECTOR", &d.url)
        .env("BOSH_TOKEN", TOKEN)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    log.record("Creating missing vms", "web/0", EventState::Finished, "").await.unwrap();
    log.record("Updating instance", "web/0", EventState::Started, "").await.unwrap();
    set_task_state(&d.store, t.spec.id, TaskState::Done, "created web").await.unwrap();
    let out = tokio::time::timeout(std::time::Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("follow returns once the task finished")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("Creating missing vms: web/0 (00:00:00)"), "{stdout}");
    assert!(stdout.contains("Updating instance: web/0"), "{stdout}");
    assert!(stdout.trim_end().ends_with("Task 1 done: created web"), "{stdout}");
    assert_eq!(stdout.matches("Updating instance").count(), 1, "each event once: {stdout}");
}
