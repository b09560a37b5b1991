//! Agent tests against a real nats-server (with per-agent users confined to
//! their own subjects), a real blobstore server and real agent processes.

mod apply;
mod bus;
mod compile;
mod lifecycle;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bosh_api::agent::{BlobRef, Reply, Request, TaskHandle};
use bosh_test_utils::agent::AgentProcess;
use bosh_test_utils::{Nats, eventually};
use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::{Value, json};

/// Generous deadline for things that normally take milliseconds.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// nats-server, blobstore and a director connection for one test.
pub struct Env {
    /// Scratch space (VM directories, disks, server data).
    pub dir: tempfile::TempDir,
    _nats: Nats,
    /// The director's NATS connection (may publish anywhere).
    pub director: async_nats::Client,
    /// A blobstore client.
    pub blobs: bosh_blobstore::Client,
    /// The blobstore's storage root (to tamper with blobs).
    pub blob_root: PathBuf,
    blob_url: String,
    agents: usize,
    _blob_shutdown: tokio::sync::oneshot::Sender<()>,
}

/// The password of agent `i` (generated per test in real use).
fn password(i: usize) -> String {
    format!("secret-{i}")
}

/// The id of agent `i`.
pub fn agent_id(i: usize) -> String {
    format!("agent-{i}")
}

impl Env {
    /// Starts nats-server with users for `agents` agents, and a blobstore.
    pub async fn start(agents: usize) -> Env {
        let dir = tempfile::Builder::new().prefix("bosh-agent-test-").tempdir().unwrap();
        let mut users = vec![
            r#"{user: director, password: director-pw, permissions: {publish: ">", subscribe: ">"}}"#
                .to_string(),
        ];
        for i in 0..agents {
            let id = agent_id(i);
            users.push(format!(
                r#"{{user: "{id}", password: "{}", permissions: {{publish: {{allow: ["hm.agent.heartbeat.{id}", "hm.agent.alert.{id}"]}}, subscribe: {{allow: ["agent.{id}"]}}, allow_responses: true}}}}"#,
                password(i)
            ));
        }
        let conf = format!(
            "max_payload: 4194304\nauthorization {{\n  users = [\n    {}\n  ]\n}}\n",
            users.join("\n    ")
        );
        let conf_path = dir.path().join("nats.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let nats = Nats::start_in(dir.path(), &["-c", conf_path.to_str().unwrap()]).await.unwrap();
        let director = async_nats::ConnectOptions::new()
            .user_and_password("director".into(), "director-pw".into())
            .connect(nats.url())
            .await
            .unwrap();

        let blob_root = dir.path().join("blobstore");
        let storage = Arc::new(bosh_blobstore::LocalStorage::new(&blob_root));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let blob_url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(bosh_blobstore::server::serve(
            listener,
            storage,
            "blob-token".into(),
            async {
                let _ = rx.await;
            },
        ));
        let blobs = bosh_blobstore::Client::new(&blob_url, "blob-token");
        Env { dir, _nats: nats, director, blobs, blob_root, blob_url, agents, _blob_shutdown: tx }
    }

    fn nats_url(&self) -> String {
        self._nats.url()
    }

    /// Writes agent `i`'s settings (VM directory `vm-i`, heartbeat every
    /// second, persistent disks `disk-a` and `disk-b`) and starts it.
    pub async fn spawn(&self, i: usize) -> TestAgent {
        assert!(i < self.agents, "no NATS user for agent {i}");
        let id = agent_id(i);
        let vm = self.dir.path().join(format!("vm-{i}"));
        std::fs::create_dir_all(&vm).unwrap();
        let disks: serde_json::Map<String, Value> = ["disk-a", "disk-b"]
            .iter()
            .map(|d| (d.to_string(), json!(self.dir.path().join(format!("{d}-{i}")))))
            .collect();
        let settings = json!({
            "agent_id": id,
            "vm_cid": format!("vm-cid-{i}"),
            "mbus": {"url": self.nats_url(), "user": id, "password": password(i)},
            "blobstore": {"url": self.blob_url, "token": "blob-token"},
            "disks": {"persistent": disks},
            "heartbeat_interval_secs": 1,
        });
        let settings_path = vm.join("settings.json");
        std::fs::write(&settings_path, serde_json::to_vec_pretty(&settings).unwrap()).unwrap();
        let process = AgentProcess::spawn(
            Path::new(env!("CARGO_BIN_EXE_bosh-agent")),
            &settings_path,
            &vm.join("agent.log"),
        )
        .unwrap();
        TestAgent { id, root: vm, process, nats: self.director.clone() }
    }

    /// Uploads `bytes` and returns its reference.
    pub async fn upload(&self, bytes: Vec<u8>) -> BlobRef {
        self.blobs.put_bytes(bytes).await.unwrap()
    }
}

/// A running agent and a way to talk to it.
pub struct TestAgent {
    /// Its id.
    pub id: String,
    /// Its VM directory (the root of its `/var/vcap`).
    pub root: PathBuf,
    /// The process.
    pub process: AgentProcess,
    nats: async_nats::Client,
}

impl TestAgent {
    /// Sends a raw payload and returns the parsed reply.
    pub async fn raw(&self, payload: Vec<u8>) -> Reply {
        let msg = self
            .nats
            .send_request(
                format!("agent.{}", self.id),
                async_nats::Request::new().payload(payload.into()).timeout(Some(DEADLINE)),
            )
            .await
            .unwrap_or_else(|e| {
                panic!("request to {}: {e}\nlog:\n{}", self.id, self.process.log())
            });
        serde_json::from_slice(&msg.payload).unwrap()
    }

    /// Calls `method` with `args` and a fresh request id.
    pub async fn call(&self, method: &str, args: Value) -> Reply {
        self.call_with_id(method, args, &uuid::Uuid::new_v4().to_string()).await
    }

    /// Calls `method` with `args` and the given request id.
    pub async fn call_with_id(&self, method: &str, args: Value, request_id: &str) -> Reply {
        let req = Request {
            protocol: 3,
            method: method.into(),
            arguments: args.as_array().cloned().unwrap_or_default(),
            reply_to: None,
            request_id: Some(request_id.into()),
        };
        self.raw(serde_json::to_vec(&req).unwrap()).await
    }

    /// Calls a quick method and returns its value, panicking on an exception.
    pub async fn value(&self, method: &str, args: Value) -> Value {
        match self.call(method, args).await {
            Reply::Value(v) => v,
            Reply::Exception(e) => {
                panic!("{method} failed: {}\nlog:\n{}", e.message, self.process.log())
            }
        }
    }

    /// Runs a long method to its end: its result or its exception message.
    pub async fn long(&self, method: &str, args: Value) -> Result<Value, String> {
        let first = match self.call(method, args).await {
            Reply::Value(v) => v,
            Reply::Exception(e) => return Err(e.message),
        };
        let handle = TaskHandle::from_value(&first).expect("long methods answer with a task");
        self.wait_task(&handle.agent_task_id).await
    }

    /// Polls `get_task` until the task finishes.
    pub async fn wait_task(&self, task_id: &str) -> Result<Value, String> {
        eventually(Duration::from_secs(60), "task to finish", || async {
            match self.call("get_task", json!([task_id])).await {
                Reply::Value(v) if TaskHandle::from_value(&v).is_some() => None,
                Reply::Value(v) => Some(Ok(v)),
                Reply::Exception(e) => Some(Err(e.message)),
            }
        })
        .await
        .unwrap()
    }

    /// Waits until the agent answers ping.
    pub async fn wait_ready(&self) {
        let subject = format!("agent.{}", self.id);
        let ping =
            serde_json::to_vec(&json!({"protocol": 3, "method": "ping", "arguments": []})).unwrap();
        eventually(DEADLINE, "agent to answer ping", || async {
            let req = async_nats::Request::new()
                .payload(ping.clone().into())
                .timeout(Some(Duration::from_millis(500)));
            let msg = self.nats.send_request(subject.clone(), req).await.ok()?;
            let reply: Reply = serde_json::from_slice(&msg.payload).ok()?;
            (reply == Reply::Value("pong".into())).then_some(())
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\nlog:\n{}", self.process.log()));
    }

    /// A path under the VM's `/var/vcap`, as the host sees it. The agent
    /// links `jobs/<job>` and `packages/<name>` to absolute `/var/vcap/...`
    /// targets, which mean the VM's own `/var/vcap`: such links are
    /// followed here into the VM directory, component by component.
    pub fn vcap(&self, rel: &str) -> PathBuf {
        let vcap = self.root.join("var/vcap");
        let mut path = vcap.clone();
        for part in Path::new(rel).components() {
            path.push(part);
            for _ in 0..16 {
                let Ok(target) = std::fs::read_link(&path) else { break };
                path = match target.strip_prefix("/var/vcap") {
                    Ok(inside) => vcap.join(inside),
                    Err(_) => path.parent().unwrap().join(target),
                };
            }
        }
        path
    }
}

/// A gzipped tar of `(path, content, mode)` files.
pub fn tgz(files: &[(&str, &str, u32)]) -> Vec<u8> {
    let mut b = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    for (path, content, mode) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(*mode);
        h.set_cksum();
        b.append_data(&mut h, path, content.as_bytes()).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

/// An apply spec for one job `job` whose rendered files are `files` (paths
/// relative to the job directory), with `packages`.
pub async fn job_spec(env: &Env, job: &str, files: &[(&str, &str, u32)], packages: Value) -> Value {
    let prefixed: Vec<(String, &str, u32)> =
        files.iter().map(|(p, c, m)| (format!("{job}/{p}"), *c, *m)).collect();
    let refs: Vec<(&str, &str, u32)> =
        prefixed.iter().map(|(p, c, m)| (p.as_str(), *c, *m)).collect();
    let archive = env.upload(tgz(&refs)).await;
    json!({
        "deployment": "dep",
        "name": "web",
        "index": 0,
        "id": "uuid-0",
        "jobs": [{"name": job, "version": "v1"}],
        "packages": packages,
        "rendered_templates_archive": archive,
        "configuration_hash": format!("h{}", &archive.sha256[..12]),
    })
}
