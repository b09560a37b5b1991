//! The director's agent client against a real nats-server and a real agent process.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bosh_api::agent::{ApplySpec, CompilePackage, JobState, Method};
use bosh_controllers::world::agent_client::{AgentClient, AgentError, Timeouts};
use bosh_test_utils::agent::{AgentProcess, agent_binary};
use bosh_test_utils::{Nats, eventually};
use futures::StreamExt;
use serde_json::json;

/// A nats-server, one agent process (`a1`) and a client.
struct Setup {
    dir: tempfile::TempDir,
    _nats: Nats,
    nats: async_nats::Client,
    client: AgentClient,
    agent: AgentProcess,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start_in(dir.path(), &[]).await.unwrap();
    let vm = dir.path().join("vm");
    std::fs::create_dir_all(&vm).unwrap();
    let settings = json!({
        "agent_id": "a1",
        "vm_cid": "vm-1",
        "mbus": {"url": nats.url(), "user": "", "password": ""},
        // Nothing listens here: blob downloads fail, which one test wants.
        "blobstore": {"url": "http://127.0.0.1:9", "token": "t"},
        "disks": {"persistent": {"d1": dir.path().join("d1")}},
        "heartbeat_interval_secs": 1,
    });
    let settings_path = vm.join("settings.json");
    std::fs::write(&settings_path, settings.to_string()).unwrap();
    let agent =
        AgentProcess::spawn(&agent_binary().unwrap(), &settings_path, &vm.join("agent.log"))
            .unwrap();
    let conn = async_nats::connect(nats.url()).await.unwrap();
    let timeouts = Timeouts {
        request: Duration::from_secs(5),
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        poll_interval: Duration::from_millis(20),
        ..Timeouts::default()
    };
    let client = AgentClient::new(conn.clone()).with_timeouts(timeouts);
    let a1 = client.for_agent("a1");
    eventually(Duration::from_secs(30), "agent to answer ping", || async { a1.ping().await.ok() })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    Setup { dir, _nats: nats, nats: conn, client, agent }
}

/// Quick and long methods round-trip with typed results; ping latency is measured against raw NATS.
#[tokio::test]
async fn typed_methods_round_trip_through_a_real_agent() {
    let s = setup().await;
    let a1 = s.client.for_agent("a1");
    let state = a1.get_state(true).await.unwrap();
    assert_eq!((state.agent_id.as_str(), state.vm_cid.as_str()), ("a1", "vm-1"));
    assert!(state.vitals.unwrap().mem.kb > 0);
    let spec = ApplySpec { deployment: "d".into(), name: "web".into(), ..Default::default() };
    a1.prepare(&spec).await.unwrap();
    a1.apply(&spec).await.unwrap();
    assert_eq!(a1.get_state(false).await.unwrap().spec.unwrap().deployment, "d");
    a1.start().await.unwrap();
    assert_eq!(a1.get_state(false).await.unwrap().job_state, JobState::Running);
    assert_eq!(a1.drain(None).await.unwrap(), 0);
    assert!(a1.run_script("pre-stop", &BTreeMap::new()).await.unwrap().ran.is_empty());
    a1.stop().await.unwrap();
    assert_eq!(a1.get_state(false).await.unwrap().job_state, JobState::Stopped);
    a1.mount_disk("d1").await.unwrap();
    assert_eq!(a1.list_disk().await.unwrap(), ["d1"]);
    a1.unmount_disk("d1").await.unwrap();
    assert!(a1.list_disk().await.unwrap().is_empty());
    assert!(s.dir.path().join("vm/var/vcap/store").is_dir());
    // The command sees BOSH's plain /var/vcap, which is this VM's own.
    let script = "echo hi > /var/vcap/data/from-exec; echo out; exit 4";
    let cmd: Vec<String> = ["/bin/sh", "-c", script].map(String::from).into();
    let out = a1.exec(&cmd, None).await.unwrap();
    assert_eq!(out.exit_code, 4);
    assert_eq!(out.stdout.trim(), "out");
    let written = std::fs::read_to_string(s.dir.path().join("vm/var/vcap/data/from-exec"));
    assert_eq!(written.unwrap().trim(), "hi");

    // Latency: agent ping vs a raw NATS echo responder, same connection.
    let mut echo = s.nats.subscribe("echo").await.unwrap();
    let responder = s.nats.clone();
    tokio::spawn(async move {
        while let Some(m) = echo.next().await {
            let _ = responder.publish(m.reply.unwrap(), "pong".into()).await;
        }
    });
    let n = 200;
    let t = Instant::now();
    for _ in 0..n {
        s.nats.request("echo", "ping".into()).await.unwrap();
    }
    let raw = t.elapsed() / n;
    let t = Instant::now();
    for _ in 0..n {
        a1.ping().await.unwrap();
    }
    let agent = t.elapsed() / n;
    eprintln!(
        "ping round trip: agent {agent:?}, raw NATS {raw:?}, ratio {:.2}",
        agent.as_secs_f64() / raw.as_secs_f64()
    );
}

/// Agent exceptions, unknown agents and failed long operations come back as typed errors.
#[tokio::test]
async fn failures_are_typed_errors() {
    let s = setup().await;
    let a1 = s.client.for_agent("a1");
    match a1.mount_disk("nope").await {
        Err(AgentError::Exception { agent, method, message }) => {
            assert_eq!((agent.as_str(), method), ("a1", "mount_disk"));
            assert!(message.contains("not attached"), "{message}");
        }
        r => panic!("{r:?}"),
    }
    let pkg = CompilePackage {
        name: "p".into(),
        version: "1".into(),
        source: bosh_api::agent::BlobRef { sha256: "a".repeat(64), size: 1 },
        dependencies: BTreeMap::new(),
    };
    match a1.compile_package(&pkg).await {
        Err(AgentError::Exception { method: "compile_package", message, .. }) => {
            assert!(message.contains(&"a".repeat(64)), "{message}");
        }
        r => panic!("{r:?}"),
    }
    let t = Instant::now();
    match s.client.for_agent("nobody").ping().await {
        Err(AgentError::Timeout { agent, method: "ping", tries: 3, last, .. }) => {
            assert_eq!(agent, "nobody");
            assert_eq!(last, bosh_controllers::world::agent_client::Miss::NoResponders);
        }
        r => panic!("{r:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(5), "no responders is not waited out");
    match a1.call::<String>(Method::GetTask, vec![json!("missing")]).await {
        Err(AgentError::Exception { message, .. }) => assert!(message.contains("not found")),
        r => panic!("{r:?}"),
    }
    match a1.call::<u64>(Method::Ping, vec![]).await {
        Err(AgentError::Decode { method: "ping", .. }) => {}
        r => panic!("{r:?}"),
    }
    drop(s.agent);
}

/// A long method whose first reply is lost is re-sent with the same request id, then polled to its result.
#[tokio::test]
async fn lost_reply_to_apply_is_retried_with_the_same_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start_in(dir.path(), &[]).await.unwrap();
    let conn = async_nats::connect(nats.url()).await.unwrap();
    // A scripted agent: drops the first apply, answers the retry with a task, finishes it on the second poll.
    let mut sub = conn.subscribe("agent.scripted").await.unwrap();
    let responder = conn.clone();
    let seen = tokio::spawn(async move {
        let mut requests: Vec<bosh_api::agent::Request> = Vec::new();
        let mut polls = 0;
        while let Some(msg) = sub.next().await {
            let req: bosh_api::agent::Request = serde_json::from_slice(&msg.payload).unwrap();
            let reply = match req.method.as_str() {
                "apply" if requests.iter().all(|r| r.method != "apply") => None,
                "apply" => Some(json!({"value": {"agent_task_id": "t1", "state": "running"}})),
                "get_task" => {
                    polls += 1;
                    Some(if polls < 2 {
                        json!({"value": {"agent_task_id": "t1", "state": "running"}})
                    } else {
                        json!({"value": "applied"})
                    })
                }
                _ => Some(json!({"exception": {"message": "unexpected"}})),
            };
            let done = polls >= 2;
            requests.push(req);
            if let Some(r) = reply {
                responder.publish(msg.reply.unwrap(), r.to_string().into()).await.unwrap();
            }
            if done {
                return requests;
            }
        }
        requests
    });
    let timeouts = Timeouts {
        request: Duration::from_millis(300),
        poll_interval: Duration::from_millis(10),
        ..Timeouts::default()
    };
    let client = AgentClient::new(conn).with_timeouts(timeouts);
    client.for_agent("scripted").apply(&ApplySpec::default()).await.unwrap();
    let requests = seen.await.unwrap();
    let applies: Vec<_> = requests.iter().filter(|r| r.method == "apply").collect();
    assert_eq!(applies.len(), 2);
    assert_eq!(applies[0].request_id, applies[1].request_id);
    assert_eq!(requests.iter().filter(|r| r.method == "get_task").count(), 2);
}

/// Issue 12: a get_state whose first two tries go unanswered (an agent busy under load) succeeds on the third, every try with the same request id; an agent that never answers fails the call naming the tries.
#[tokio::test]
async fn unanswered_get_state_is_retried_with_the_same_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start_in(dir.path(), &[]).await.unwrap();
    let conn = async_nats::connect(nats.url()).await.unwrap();
    let mut sub = conn.subscribe("agent.slow").await.unwrap();
    let responder = conn.clone();
    let seen = tokio::spawn(async move {
        let mut ids = Vec::new();
        while let Some(msg) = sub.next().await {
            let req: bosh_api::agent::Request = serde_json::from_slice(&msg.payload).unwrap();
            ids.push(req.request_id);
            if ids.len() == 3 {
                let report = bosh_api::agent::StateReport {
                    agent_id: "slow".into(),
                    job_state: JobState::Running,
                    ..Default::default()
                };
                let state = json!({ "value": report });
                responder.publish(msg.reply.unwrap(), state.to_string().into()).await.unwrap();
                return ids;
            }
        }
        ids
    });
    let timeouts = Timeouts {
        request: Duration::from_millis(300),
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(50),
        ..Timeouts::default()
    };
    let client = AgentClient::new(conn).with_timeouts(timeouts);
    let state = client.for_agent("slow").get_state(false).await.unwrap();
    assert_eq!(state.job_state, JobState::Running);
    let ids = seen.await.unwrap();
    assert_eq!(ids.len(), 3);
    assert!(ids.iter().all(|id| *id == ids[0]), "one request id: {ids:?}");

    // Nobody answers: three tries of 300 ms, and the error says so.
    let mut mute = client.nats().subscribe("agent.mute").await.unwrap();
    tokio::spawn(async move { while mute.next().await.is_some() {} });
    let err = client.for_agent("mute").get_state(false).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("agent mute did not answer get_state: 3 tries over "), "{msg}");
    assert!(msg.ends_with("last: timed out after 0.3 s"), "{msg}");
}
