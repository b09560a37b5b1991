//! The director side of the agent protocol: a typed client for every agent
//! method over NATS request/reply.
//!
//! Quick methods are one request with a timeout. Long methods answer with an
//! agent task id at once; the client then polls `get_task` until the task
//! yields its result, for at most the method's own deadline. The first
//! request of a long method carries a request id and is retried with that
//! same id when it times out, so a lost reply can never run an apply twice:
//! the agent answers the retry with the task it already started.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bosh_api::agent::{
    ApplySpec, BlobRef, CompilePackage, ErrandResult, ExecCommand, ExecResult, Method, Reply,
    Request, RunScriptResult, StateReport, TaskHandle, request_subject,
};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// What talking to an agent can fail with.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The agent did not answer in time (or nobody listens on its subject).
    #[error("timed out waiting for agent {agent} to answer {method}")]
    Timeout {
        /// The agent id.
        agent: String,
        /// The method.
        method: &'static str,
    },
    /// The agent answered with an exception.
    #[error("agent {agent} failed {method}: {message}")]
    Exception {
        /// The agent id.
        agent: String,
        /// The method.
        method: &'static str,
        /// The agent's message.
        message: String,
    },
    /// NATS failed (not connected, payload too large, ...).
    #[error("NATS request to agent {agent} for {method} failed")]
    Nats {
        /// The agent id.
        agent: String,
        /// The method.
        method: &'static str,
        /// The NATS error.
        #[source]
        source: async_nats::RequestError,
    },
    /// The answer did not have the expected shape.
    #[error("agent {agent} answered {method} with an unexpected shape")]
    Decode {
        /// The agent id.
        agent: String,
        /// The method.
        method: &'static str,
        /// The decoding error.
        #[source]
        source: serde_json::Error,
    },
}

/// Client result.
pub type Result<T, E = AgentError> = std::result::Result<T, E>;

/// Deadlines and polling of agent calls.
#[derive(Debug, Clone)]
pub struct Timeouts {
    /// One request/reply (BOSH's director waits 45 s for a quick method).
    pub request: Duration,
    /// Between `get_task` polls (BOSH polls every second).
    pub poll_interval: Duration,
    /// `apply`, `prepare`, `start`, `stop`, `fetch_logs`, `migrate_disk`.
    pub lifecycle: Duration,
    /// `compile_package`.
    pub compile: Duration,
    /// `drain`, `run_script`, `run_errand`: their scripts decide how long
    /// they take, so the default is generous.
    pub scripts: Duration,
    /// How often the first request of a long method is sent (same request
    /// id each time) before giving up.
    pub long_attempts: u32,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            request: Duration::from_secs(45),
            poll_interval: Duration::from_millis(500),
            lifecycle: Duration::from_secs(600),
            compile: Duration::from_secs(3600),
            scripts: Duration::from_secs(3600),
            long_attempts: 3,
        }
    }
}

/// Talks to agents over one NATS connection.
#[derive(Clone)]
pub struct AgentClient {
    nats: async_nats::Client,
    timeouts: Timeouts,
    calls: Arc<CallCounts>,
}

/// Requests sent, by method: what benchmarks and tests count (e.g. zero
/// `apply` at steady state). Polls (`get_task`) are not counted.
#[derive(Default)]
pub struct CallCounts(std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>);

impl CallCounts {
    fn bump(&self, method: Method) {
        *self.0.lock().expect("call counts").entry(method.as_str()).or_default() += 1;
    }

    /// Requests of `method` sent so far.
    pub fn get(&self, method: Method) -> u64 {
        self.0.lock().expect("call counts").get(method.as_str()).copied().unwrap_or(0)
    }
}

impl AgentClient {
    /// A client with default timeouts.
    pub fn new(nats: async_nats::Client) -> AgentClient {
        AgentClient { nats, timeouts: Timeouts::default(), calls: Arc::default() }
    }

    /// Replaces the timeouts.
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> AgentClient {
        self.timeouts = timeouts;
        self
    }

    /// The NATS connection (the health monitor subscribes on it).
    pub fn nats(&self) -> async_nats::Client {
        self.nats.clone()
    }

    /// Requests sent through this client (and its clones), by method.
    pub fn calls(&self) -> &CallCounts {
        &self.calls
    }

    /// A handle on one agent.
    pub fn for_agent(&self, agent_id: impl Into<String>) -> Agent {
        let agent_id = agent_id.into();
        Agent {
            calls: self.calls.clone(),
            nats: self.nats.clone(),
            subject: request_subject(&agent_id),
            agent_id,
            timeouts: self.timeouts.clone(),
        }
    }
}

/// One agent's methods.
#[derive(Clone)]
pub struct Agent {
    calls: Arc<CallCounts>,
    nats: async_nats::Client,
    agent_id: String,
    subject: String,
    timeouts: Timeouts,
}

impl Agent {
    /// The agent id.
    pub fn id(&self) -> &str {
        &self.agent_id
    }

    /// `ping`: whether the agent answers.
    pub async fn ping(&self) -> Result<()> {
        self.call::<String>(Method::Ping, vec![]).await.map(|_| ())
    }

    /// `get_state`, with vitals when `full`.
    pub async fn get_state(&self, full: bool) -> Result<StateReport> {
        let args = if full { vec![json!("full")] } else { vec![] };
        self.call(Method::GetState, args).await
    }

    /// `prepare`: pre-fetch the spec's blobs.
    pub async fn prepare(&self, spec: &ApplySpec) -> Result<()> {
        self.long::<String>(Method::Prepare, vec![to_json(spec)], self.timeouts.lifecycle).await?;
        Ok(())
    }

    /// `apply`: install the spec's packages and jobs.
    pub async fn apply(&self, spec: &ApplySpec) -> Result<()> {
        self.long::<String>(Method::Apply, vec![to_json(spec)], self.timeouts.lifecycle).await?;
        Ok(())
    }

    /// `start`: start every job process.
    pub async fn start(&self) -> Result<()> {
        self.long::<String>(Method::Start, vec![], self.timeouts.lifecycle).await?;
        Ok(())
    }

    /// `stop`: stop every job process and wait until they are gone.
    pub async fn stop(&self) -> Result<()> {
        self.long::<String>(Method::Stop, vec![], self.timeouts.lifecycle).await?;
        Ok(())
    }

    /// `drain` before an update to `next`, or before shutdown when `None`;
    /// returns the seconds the drain scripts made the agent wait.
    pub async fn drain(&self, next: Option<&ApplySpec>) -> Result<u64> {
        let args = match next {
            Some(s) => vec![json!("update"), to_json(s)],
            None => vec![json!("shutdown")],
        };
        self.long(Method::Drain, args, self.timeouts.scripts).await
    }

    /// `run_script`: run `bin/<name>` of every job that has it, with `env`.
    pub async fn run_script(
        &self,
        name: &str,
        env: &BTreeMap<String, String>,
    ) -> Result<RunScriptResult> {
        let args = vec![json!(name), json!({ "env": env })];
        self.long(Method::RunScript, args, self.timeouts.scripts).await
    }

    /// `compile_package`: compile and upload; returns the compiled blob.
    pub async fn compile_package(&self, pkg: &CompilePackage) -> Result<BlobRef> {
        self.long(Method::CompilePackage, vec![to_json(pkg)], self.timeouts.compile).await
    }

    /// `fetch_logs`: a tgz of the job logs, uploaded to the blobstore.
    pub async fn fetch_logs(&self) -> Result<BlobRef> {
        self.long(Method::FetchLogs, vec![], self.timeouts.lifecycle).await
    }

    /// `run_errand`: run `bin/run` of `job` (or of the first job with one).
    pub async fn run_errand(&self, job: Option<&str>) -> Result<ErrandResult> {
        let args = match job {
            Some(j) => vec![json!({ "name": j })],
            None => vec![],
        };
        self.long(Method::RunErrand, args, self.timeouts.scripts).await
    }

    /// `exec`: run `command` on the VM (for `boshctl exec`), killed after
    /// `timeout_secs` (agent default 300).
    pub async fn exec(&self, command: &[String], timeout_secs: Option<u64>) -> Result<ExecResult> {
        let arg = ExecCommand { command: command.to_vec(), timeout_secs };
        self.long(Method::Exec, vec![to_json(&arg)], self.timeouts.scripts).await
    }

    /// `mount_disk`: make the persistent disk visible at `/var/vcap/store`.
    pub async fn mount_disk(&self, cid: &str) -> Result<()> {
        self.call::<String>(Method::MountDisk, vec![json!(cid)]).await.map(|_| ())
    }

    /// `unmount_disk`.
    pub async fn unmount_disk(&self, cid: &str) -> Result<()> {
        self.call::<String>(Method::UnmountDisk, vec![json!(cid)]).await.map(|_| ())
    }

    /// `list_disk`: the mounted disks' CIDs.
    pub async fn list_disk(&self) -> Result<Vec<String>> {
        self.call(Method::ListDisk, vec![]).await
    }

    /// `migrate_disk`: copy `old`'s data onto `new` and mount `new`.
    pub async fn migrate_disk(&self, old: &str, new: &str) -> Result<()> {
        let args = vec![json!(old), json!(new)];
        self.long::<String>(Method::MigrateDisk, args, self.timeouts.lifecycle).await?;
        Ok(())
    }

    /// `get_task`: `Ok(None)` while the task runs, its result when done.
    pub async fn get_task(&self, task_id: &str) -> Result<Option<Value>> {
        let v: Value = self.call(Method::GetTask, vec![json!(task_id)]).await?;
        Ok(if TaskHandle::from_value(&v).is_some() { None } else { Some(v) })
    }

    /// `cancel_task`.
    pub async fn cancel_task(&self, task_id: &str) -> Result<()> {
        self.call::<String>(Method::CancelTask, vec![json!(task_id)]).await.map(|_| ())
    }

    /// One request with a fresh request id, decoded as `T`.
    pub async fn call<T: DeserializeOwned>(&self, method: Method, args: Vec<Value>) -> Result<T> {
        let id = uuid::Uuid::new_v4().to_string();
        self.calls.bump(method);
        let v = self.request(method, args, &id, self.timeouts.request).await?;
        self.decode(method, v)
    }

    /// A long method: start it (retrying the start with the same request
    /// id), then poll `get_task` until it finishes or `deadline` passes.
    pub async fn long<T: DeserializeOwned>(
        &self,
        method: Method,
        args: Vec<Value>,
        deadline: Duration,
    ) -> Result<T> {
        let until = Instant::now() + deadline;
        let id = uuid::Uuid::new_v4().to_string();
        self.calls.bump(method);
        let mut attempt = 0;
        let first = loop {
            attempt += 1;
            match self.request(method, args.clone(), &id, self.timeouts.request).await {
                Err(AgentError::Timeout { .. }) if attempt < self.timeouts.long_attempts => {
                    continue;
                }
                r => break r?,
            }
        };
        let Some(handle) = TaskHandle::from_value(&first) else {
            return self.decode(method, first); // answered synchronously
        };
        loop {
            if Instant::now() >= until {
                let _ = self.cancel_task(&handle.agent_task_id).await;
                return Err(self.timeout(method));
            }
            tokio::time::sleep(self.timeouts.poll_interval).await;
            let poll_id = uuid::Uuid::new_v4().to_string();
            let args = vec![json!(handle.agent_task_id)];
            let v = match self.request(Method::GetTask, args, &poll_id, self.timeouts.request).await
            {
                Ok(v) => v,
                // A poll lost on the wire is retried by the next poll.
                Err(AgentError::Timeout { .. }) => continue,
                Err(AgentError::Exception { message, .. }) => {
                    return Err(AgentError::Exception {
                        agent: self.agent_id.clone(),
                        method: method.as_str(),
                        message,
                    });
                }
                Err(e) => return Err(e),
            };
            if TaskHandle::from_value(&v).is_none() {
                return self.decode(method, v);
            }
        }
    }

    /// Sends one request and returns the reply's value.
    async fn request(
        &self,
        method: Method,
        args: Vec<Value>,
        request_id: &str,
        timeout: Duration,
    ) -> Result<Value> {
        let req = Request::new(method, args, request_id);
        let body = serde_json::to_vec(&req).expect("requests serialize");
        let nats_req = async_nats::Request::new().payload(body.into()).timeout(Some(timeout));
        let msg = match self.nats.send_request(self.subject.clone(), nats_req).await {
            Ok(m) => m,
            Err(e)
                if matches!(
                    e.kind(),
                    async_nats::RequestErrorKind::TimedOut
                        | async_nats::RequestErrorKind::NoResponders
                ) =>
            {
                return Err(self.timeout(method));
            }
            Err(source) => {
                return Err(AgentError::Nats {
                    agent: self.agent_id.clone(),
                    method: method.as_str(),
                    source,
                });
            }
        };
        let reply: Reply = serde_json::from_slice(&msg.payload).map_err(|source| {
            AgentError::Decode { agent: self.agent_id.clone(), method: method.as_str(), source }
        })?;
        match reply {
            Reply::Value(v) => Ok(v),
            Reply::Exception(e) => Err(AgentError::Exception {
                agent: self.agent_id.clone(),
                method: method.as_str(),
                message: e.message,
            }),
        }
    }

    fn decode<T: DeserializeOwned>(&self, method: Method, v: Value) -> Result<T> {
        serde_json::from_value(v).map_err(|source| AgentError::Decode {
            agent: self.agent_id.clone(),
            method: method.as_str(),
            source,
        })
    }

    fn timeout(&self, method: Method) -> AgentError {
        AgentError::Timeout { agent: self.agent_id.clone(), method: method.as_str() }
    }
}

fn to_json(v: &impl serde::Serialize) -> Value {
    serde_json::to_value(v).expect("protocol types serialize")
}
