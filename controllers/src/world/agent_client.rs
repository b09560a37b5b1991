//! The director side of the agent protocol: a typed client for every agent
//! method over NATS request/reply.
//!
//! Quick methods are one request/reply; long methods answer with an agent
//! task id at once, and the client then polls `get_task` until the task
//! yields its result, for at most the method's own deadline.
//!
//! One slow answer must not fail a deploy: on a loaded host (50 agents
//! applying at once on two cores) an agent can take seconds to answer even
//! `get_state`. So a request that goes unanswered is tried again, with
//! exponential backoff, up to [`Timeouts::tries`] times. Every try of one
//! call carries the same request id, and the agent de-duplicates by request
//! id (`agent::tasks::Dedup`): a retry never runs the method twice — a long
//! method's retry gets the task the first try started, a quick method's
//! retry waits for the first try's answer instead of queueing more work on
//! a busy agent. That makes retrying safe for every method; read-only
//! methods, the starts of long methods and `mount_disk` (a step of every
//! update of an instance with a disk, which a stalled agent must not fail)
//! are retried; `unmount_disk` and `cancel_task` are tried once, as their
//! callers treat them as best effort. When every try misses, the
//! error says what timed out after how many tries (`agent a1 did not answer
//! get_state: 3 tries over 47 s, last: timed out after 15 s`).

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use bosh_api::agent::{
    ApplySpec, BlobRef, CompilePackage, ErrandResult, ExecCommand, ExecResult, Method, Reply,
    Request, RunScriptResult, SshParams, SshResult, StateReport, TaskHandle, request_subject,
};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::time::Instant;

/// Why one try of a request got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    /// No reply within the try's timeout.
    TimedOut(Duration),
    /// Nobody listens on the agent's subject (not connected, or dead).
    NoResponders,
}

impl fmt::Display for Miss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Miss::TimedOut(d) => write!(f, "timed out after {}", Secs(*d)),
            Miss::NoResponders => f.write_str("no agent listening"),
        }
    }
}

/// A duration as people read it in an error: `15 s`, `0.3 s`.
#[derive(Debug, Clone, Copy)]
pub struct Secs(pub Duration);

impl fmt::Display for Secs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0.as_secs_f64();
        if s >= 10.0 || s.fract() == 0.0 { write!(f, "{s:.0} s") } else { write!(f, "{s:.1} s") }
    }
}

/// What talking to an agent can fail with.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Every try of a request went unanswered (timed out, or nobody
    /// listens on the agent's subject).
    #[error(
        "agent {agent} did not answer {method}: {tries} {} over {}, last: {last}",
        if *tries == 1 { "try" } else { "tries" },
        Secs(*elapsed)
    )]
    Timeout {
        /// The agent id.
        agent: String,
        /// The method.
        method: &'static str,
        /// Tries made.
        tries: u32,
        /// From the first try to giving up.
        elapsed: Duration,
        /// Why the last try went unanswered.
        last: Miss,
    },
    /// A long method's task did not finish within the method's deadline
    /// (the agent answered every poll: it still runs).
    #[error("agent {agent} did not finish {method} within {}", Secs(*waited))]
    Unfinished {
        /// The agent id.
        agent: String,
        /// The method.
        method: &'static str,
        /// The method's deadline.
        waited: Duration,
    },
    /// The caller stopped a long method before it finished (a cancelled
    /// task, a run's timeout); the agent's task was cancelled.
    #[error("agent {agent}: {method} stopped: {why}")]
    Stopped {
        /// The agent id.
        agent: String,
        /// The method.
        method: &'static str,
        /// Why the caller stopped it.
        why: String,
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

/// Deadlines, tries and polling of agent calls.
#[derive(Debug, Clone)]
pub struct Timeouts {
    /// One try of a request/reply. Default 15 s: sized for a loaded host,
    /// where an agent busy applying answers in seconds, not milliseconds;
    /// with [`Timeouts::tries`] a call gets about what BOSH's director
    /// gives a quick method (45 s) before it fails.
    pub request: Duration,
    /// Tries of a request that may be repeated (read-only methods, and the
    /// first request of a long method), each with the same request id.
    /// Default 3. At least one try is always made.
    pub tries: u32,
    /// Pause after the first missed try; doubled after each (with jitter)
    /// up to `backoff_max`. Default 1 s.
    pub backoff_min: Duration,
    /// Longest pause between tries. Default 5 s.
    pub backoff_max: Duration,
    /// Between `get_task` polls (BOSH polls every second).
    pub poll_interval: Duration,
    /// `apply`, `prepare`, `start`, `stop`, `fetch_logs`, `migrate_disk`.
    pub lifecycle: Duration,
    /// `compile_package`.
    pub compile: Duration,
    /// `drain`, `run_script`, `run_errand`: their scripts decide how long
    /// they take, so the default is generous.
    pub scripts: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            request: Duration::from_secs(15),
            tries: 3,
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(5),
            poll_interval: Duration::from_millis(500),
            lifecycle: Duration::from_secs(600),
            compile: Duration::from_secs(3600),
            scripts: Duration::from_secs(3600),
        }
    }
}

impl Timeouts {
    /// The pauses between tries: `tries - 1` of them, exponential with
    /// jitter (backon), so agents that missed together do not retry in step.
    fn pauses(&self) -> backon::ExponentialBackoff {
        ExponentialBuilder::default()
            .with_min_delay(self.backoff_min)
            .with_max_delay(self.backoff_max.max(self.backoff_min))
            .with_factor(2.0)
            .with_jitter()
            .with_max_times(self.tries.saturating_sub(1) as usize)
            .build()
    }
}

/// How a request went after its tries: answered (or failed for good), or
/// missed every time.
#[derive(Debug)]
pub enum Tried<T, E> {
    /// A try was answered, or failed in a way a retry cannot fix.
    Done(std::result::Result<T, E>),
    /// Every try was missed.
    Missed {
        /// Tries made.
        tries: u32,
        /// From the first try to giving up.
        elapsed: Duration,
        /// The last try's miss.
        last: Miss,
    },
}

/// The retry policy, apart from NATS: calls `attempt` with each try's
/// timeout until it answers (`Ok(Ok)`), fails for good (`Ok(Err)`), or has
/// missed (`Err(Miss)`) `timeouts.tries` times, pausing with backoff between
/// tries. No try starts, and no pause is taken, past `deadline`; a try that
/// starts before it gets its full timeout. At least one try is made.
pub async fn with_retries<T, E, F, Fut>(
    timeouts: &Timeouts,
    deadline: Option<Instant>,
    mut attempt: F,
) -> Tried<T, E>
where
    F: FnMut(Duration) -> Fut,
    Fut: Future<Output = std::result::Result<std::result::Result<T, E>, Miss>>,
{
    let start = Instant::now();
    let mut pauses = timeouts.pauses();
    let mut tries = 0;
    loop {
        tries += 1;
        let last = match attempt(timeouts.request).await {
            Ok(done) => return Tried::Done(done),
            Err(miss) => miss,
        };
        let give_up = Tried::Missed { tries, elapsed: start.elapsed(), last };
        let Some(pause) = pauses.next() else { return give_up };
        if deadline.is_some_and(|d| Instant::now() + pause >= d) {
            return give_up;
        }
        tokio::time::sleep(pause).await;
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
/// `apply` at steady state). Polls (`get_task`) are not counted as
/// requests; tries that went unanswered are counted apart, polls included.
#[derive(Default)]
pub struct CallCounts {
    sent: std::sync::Mutex<BTreeMap<&'static str, u64>>,
    missed: std::sync::Mutex<BTreeMap<&'static str, u64>>,
}

impl CallCounts {
    fn bump(&self, method: Method) {
        *self.sent.lock().expect("call counts").entry(method.as_str()).or_default() += 1;
    }

    fn bump_missed(&self, method: Method) {
        *self.missed.lock().expect("call counts").entry(method.as_str()).or_default() += 1;
    }

    /// Requests of `method` sent so far.
    pub fn get(&self, method: Method) -> u64 {
        self.sent.lock().expect("call counts").get(method.as_str()).copied().unwrap_or(0)
    }

    /// Tries of `method` (`get_task` polls included) that timed out or
    /// found no agent listening (FAULT-MATRIX C6: a paused agent's
    /// requests time out and are tried again).
    pub fn missed(&self, method: Method) -> u64 {
        self.missed.lock().expect("call counts").get(method.as_str()).copied().unwrap_or(0)
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

    /// `get_state`, retried no later than `deadline` (a watch's end): the
    /// watch time bounds the retries, never the other way round.
    pub async fn get_state_by(&self, full: bool, deadline: Instant) -> Result<StateReport> {
        let args = if full { vec![json!("full")] } else { vec![] };
        let v = self.send(Method::GetState, args, Some(deadline)).await?;
        self.decode(Method::GetState, v)
    }

    /// This agent with one try per request: for loops that ping until an
    /// agent answers, where the loop is the retry and a backoff would only
    /// notice a new agent later.
    pub fn once(&self) -> Agent {
        let mut a = self.clone();
        a.timeouts.tries = 1;
        a
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

    /// `fetch_logs`, given up (and its agent task cancelled) when `stop`
    /// yields first, with the reason it yields.
    pub async fn fetch_logs_until(&self, stop: impl Future<Output = String>) -> Result<BlobRef> {
        self.long_until(Method::FetchLogs, vec![], self.timeouts.lifecycle, stop).await
    }

    /// `run_errand`: run `bin/run` of `job` (or of the first job with one).
    pub async fn run_errand(&self, job: Option<&str>) -> Result<ErrandResult> {
        self.run_errand_until(job, std::future::pending()).await
    }

    /// `run_errand`, stopped when `stop` yields first (with the reason it
    /// yields): the agent's task is cancelled, which kills `bin/run`, and
    /// the call fails with [`AgentError::Stopped`] without waiting for it.
    pub async fn run_errand_until(
        &self,
        job: Option<&str>,
        stop: impl Future<Output = String>,
    ) -> Result<ErrandResult> {
        let args = match job {
            Some(j) => vec![json!({ "name": j })],
            None => vec![],
        };
        self.long_until(Method::RunErrand, args, self.timeouts.scripts, stop).await
    }

    /// `exec`: run `command` on the VM (for `boshctl exec`), killed after
    /// `timeout_secs` (agent default 300).
    pub async fn exec(&self, command: &[String], timeout_secs: Option<u64>) -> Result<ExecResult> {
        let arg = ExecCommand { command: command.to_vec(), timeout_secs };
        self.long(Method::Exec, vec![to_json(&arg)], self.timeouts.scripts).await
    }

    /// `ssh`: `setup` or `cleanup` of a `boshctl ssh` user (answered at
    /// once, as BOSH's agent does; not retried, as a setup is not
    /// de-duplicated by the agent).
    pub async fn ssh(&self, command: &str, params: &SshParams) -> Result<SshResult> {
        self.call(Method::Ssh, vec![json!(command), to_json(params)]).await
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

    /// One request, decoded as `T`; tried again when unanswered if the
    /// method is read-only (see [`retried`]).
    pub async fn call<T: DeserializeOwned>(&self, method: Method, args: Vec<Value>) -> Result<T> {
        let v = self.send(method, args, None).await?;
        self.decode(method, v)
    }

    /// Sends `method` with a fresh request id, retrying misses with that
    /// same id when the method may be retried, no later than `deadline`.
    async fn send(
        &self,
        method: Method,
        args: Vec<Value>,
        deadline: Option<Instant>,
    ) -> Result<Value> {
        let id = uuid::Uuid::new_v4().to_string();
        self.calls.bump(method);
        let mut timeouts = self.timeouts.clone();
        if !retried(method) {
            timeouts.tries = 1;
        }
        let tried = with_retries(&timeouts, deadline, |timeout| {
            self.request(method, args.clone(), &id, timeout)
        })
        .await;
        match tried {
            Tried::Done(r) => r,
            Tried::Missed { tries, elapsed, last } => Err(AgentError::Timeout {
                agent: self.agent_id.clone(),
                method: method.as_str(),
                tries,
                elapsed,
                last,
            }),
        }
    }

    /// A long method: start it (retrying the start with the same request
    /// id), then poll `get_task` until it finishes or `deadline` passes.
    /// A missed poll is made up by the next one; `tries` misses in a row
    /// mean the agent is gone, and the call fails without waiting out the
    /// method's whole deadline.
    pub async fn long<T: DeserializeOwned>(
        &self,
        method: Method,
        args: Vec<Value>,
        deadline: Duration,
    ) -> Result<T> {
        self.long_until(method, args, deadline, std::future::pending()).await
    }

    /// [`AgentClient::long`], given up when `stop` yields (with the reason)
    /// before the task finishes: the agent's task is cancelled (best
    /// effort, one try) and the call fails with [`AgentError::Stopped`].
    pub async fn long_until<T: DeserializeOwned>(
        &self,
        method: Method,
        args: Vec<Value>,
        deadline: Duration,
        stop: impl Future<Output = String>,
    ) -> Result<T> {
        let mut stop = std::pin::pin!(stop);
        let until = Instant::now() + deadline;
        let first = self.send(method, args, None).await?;
        let Some(handle) = TaskHandle::from_value(&first) else {
            return self.decode(method, first); // answered synchronously
        };
        let mut missed: Option<(u32, Instant)> = None;
        loop {
            if Instant::now() >= until {
                let _ = self.cancel_task(&handle.agent_task_id).await;
                return Err(AgentError::Unfinished {
                    agent: self.agent_id.clone(),
                    method: method.as_str(),
                    waited: deadline,
                });
            }
            tokio::select! {
                _ = tokio::time::sleep(self.timeouts.poll_interval) => {}
                why = &mut stop => {
                    let _ = self.cancel_task(&handle.agent_task_id).await;
                    return Err(AgentError::Stopped {
                        agent: self.agent_id.clone(),
                        method: method.as_str(),
                        why,
                    });
                }
            }
            let poll_id = uuid::Uuid::new_v4().to_string();
            let args = vec![json!(handle.agent_task_id)];
            let polled = self.request(Method::GetTask, args, &poll_id, self.timeouts.request).await;
            let v = match polled {
                Ok(Ok(v)) => v,
                Err(last) => {
                    let (n, since) = missed.unwrap_or((0, Instant::now()));
                    if n + 1 >= self.timeouts.tries.max(1) {
                        return Err(AgentError::Timeout {
                            agent: self.agent_id.clone(),
                            method: method.as_str(),
                            tries: n + 1,
                            elapsed: since.elapsed(),
                            last,
                        });
                    }
                    missed = Some((n + 1, since));
                    continue;
                }
                Ok(Err(AgentError::Exception { message, .. })) => {
                    return Err(AgentError::Exception {
                        agent: self.agent_id.clone(),
                        method: method.as_str(),
                        message,
                    });
                }
                Ok(Err(e)) => return Err(e),
            };
            missed = None;
            if TaskHandle::from_value(&v).is_none() {
                return self.decode(method, v);
            }
        }
    }

    /// Sends one try of a request: `Err` when it went unanswered, else the
    /// reply's value or what failed for good.
    async fn request(
        &self,
        method: Method,
        args: Vec<Value>,
        request_id: &str,
        timeout: Duration,
    ) -> std::result::Result<Result<Value>, Miss> {
        let req = Request::new(method, args, request_id);
        let body = serde_json::to_vec(&req).expect("requests serialize");
        let nats_req = async_nats::Request::new().payload(body.into()).timeout(Some(timeout));
        let msg = match self.nats.send_request(self.subject.clone(), nats_req).await {
            Ok(m) => m,
            Err(e) => {
                let missed = |miss| {
                    self.calls.bump_missed(method);
                    Err(miss)
                };
                return match e.kind() {
                    async_nats::RequestErrorKind::TimedOut => missed(Miss::TimedOut(timeout)),
                    async_nats::RequestErrorKind::NoResponders => missed(Miss::NoResponders),
                    _ => Ok(Err(AgentError::Nats {
                        agent: self.agent_id.clone(),
                        method: method.as_str(),
                        source: e,
                    })),
                };
            }
        };
        let reply: Reply = match serde_json::from_slice(&msg.payload) {
            Ok(r) => r,
            Err(source) => {
                return Ok(Err(AgentError::Decode {
                    agent: self.agent_id.clone(),
                    method: method.as_str(),
                    source,
                }));
            }
        };
        Ok(match reply {
            Reply::Value(v) => Ok(v),
            Reply::Exception(e) => Err(AgentError::Exception {
                agent: self.agent_id.clone(),
                method: method.as_str(),
                message: e.message,
            }),
        })
    }

    fn decode<T: DeserializeOwned>(&self, method: Method, v: Value) -> Result<T> {
        serde_json::from_value(v).map_err(|source| AgentError::Decode {
            agent: self.agent_id.clone(),
            method: method.as_str(),
            source,
        })
    }
}

/// Whether a request of `method` is sent again when a try goes unanswered:
/// read-only methods, long methods (whose first request only starts a
/// task, once per request id), and `mount_disk` — idempotent and
/// de-duplicated, and a step of every update of an instance with a disk:
/// tried once, an agent stalled for one request timeout failed the whole
/// update (FAULT-MATRIX C6). `unmount_disk` and `cancel_task` are not:
/// their callers treat them as best effort and go on without an answer.
pub fn retried(method: Method) -> bool {
    method.is_long()
        || matches!(
            method,
            Method::Ping
                | Method::Info
                | Method::GetState
                | Method::ListDisk
                | Method::GetTask
                | Method::MountDisk
        )
}

fn to_json(v: &impl serde::Serialize) -> Value {
    serde_json::to_value(v).expect("protocol types serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Boshd's defaults, with a fixed-size pause so times are exact.
    fn policy() -> Timeouts {
        Timeouts {
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(1),
            ..Timeouts::default()
        }
    }

    /// One try against an agent that answers after `answer_in`.
    async fn agent_answering_in(
        answer_in: Duration,
        timeout: Duration,
    ) -> std::result::Result<std::result::Result<&'static str, ()>, Miss> {
        tokio::time::timeout(timeout, async {
            tokio::time::sleep(answer_in).await;
            Ok("state")
        })
        .await
        .map_err(|_| Miss::TimedOut(timeout))
    }

    /// Issue 12: one answer slower than a try's timeout does not fail the call; the next try gets it.
    #[tokio::test(start_paused = true)]
    async fn a_slow_answer_is_retried_and_the_call_succeeds() {
        let start = Instant::now();
        let mut slow = [Duration::from_secs(20), Duration::from_secs(2)].into_iter();
        let tried =
            with_retries(&policy(), None, |t| agent_answering_in(slow.next().unwrap(), t)).await;
        assert!(matches!(tried, Tried::Done(Ok("state"))), "{tried:?}");
        // A 15 s miss, a pause of 1 to 2 s (jitter), a 2 s answer.
        let took = start.elapsed();
        assert!(took >= Duration::from_secs(18) && took <= Duration::from_secs(19), "{took:?}");
    }

    /// An agent that never answers is given `tries` tries, and the error says so.
    #[tokio::test(start_paused = true)]
    async fn every_try_missed_fails_naming_tries_time_and_last_miss() {
        let tried =
            with_retries(&policy(), None, |t| agent_answering_in(Duration::from_secs(3600), t))
                .await;
        let Tried::Missed { tries, elapsed, last } = tried else { panic!("{tried:?}") };
        assert_eq!(tries, 3);
        assert_eq!(last, Miss::TimedOut(Duration::from_secs(15)));
        // Three 15 s tries and two pauses of 1 to 2 s.
        assert!(elapsed >= Duration::from_secs(47) && elapsed <= Duration::from_secs(49));
        let err = AgentError::Timeout {
            agent: "1234".into(),
            method: "get_state",
            tries,
            elapsed: Duration::from_secs(47),
            last,
        };
        assert_eq!(
            err.to_string(),
            "agent 1234 did not answer get_state: 3 tries over 47 s, last: timed out after 15 s"
        );
    }

    /// No try starts past the caller's deadline (a watch's end), though one started before it runs its course.
    #[tokio::test(start_paused = true)]
    async fn no_try_starts_past_the_deadline() {
        let start = Instant::now();
        let deadline = start + Duration::from_secs(20);
        let tried =
            with_retries(&policy(), Some(deadline), |t| agent_answering_in(Duration::MAX, t)).await;
        let Tried::Missed { tries, .. } = tried else { panic!("{tried:?}") };
        assert_eq!(tries, 2, "the second try starts at 16 to 17 s, a third would at 32 s");
        assert!(start.elapsed() <= Duration::from_secs(32));
    }

    /// A failure a retry cannot fix (an exception) ends the call after one try.
    #[tokio::test(start_paused = true)]
    async fn an_answered_failure_is_not_retried() {
        let mut tries = 0;
        let tried = with_retries(&policy(), None, |_| {
            tries += 1;
            async { Ok::<std::result::Result<(), &str>, Miss>(Err("exception")) }
        })
        .await;
        assert!(matches!(tried, Tried::Done(Err("exception"))));
        assert_eq!(tries, 1);
    }

    /// With `tries: 1` a miss fails at once, with no pause.
    #[tokio::test(start_paused = true)]
    async fn one_try_means_no_retry() {
        let start = Instant::now();
        let once = Timeouts { tries: 1, ..policy() };
        let tried = with_retries(&once, None, |_| async {
            Err::<std::result::Result<(), ()>, Miss>(Miss::NoResponders)
        })
        .await;
        assert!(matches!(tried, Tried::Missed { tries: 1, last: Miss::NoResponders, .. }));
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    /// Read-only methods, long methods' starts and mount_disk are retried; the best-effort unmount_disk and cancel_task are not.
    #[test]
    fn reads_long_starts_and_mounts_are_retried() {
        for m in [
            Method::Ping,
            Method::GetState,
            Method::GetTask,
            Method::Apply,
            Method::Start,
            Method::MountDisk,
        ] {
            assert!(retried(m), "{m:?}");
        }
        for m in [Method::UnmountDisk, Method::CancelTask] {
            assert!(!retried(m), "{m:?}");
        }
    }
}
