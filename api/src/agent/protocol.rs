//! The director↔agent message protocol on NATS (BOSH's protocol 3, with
//! typed arguments and results).
//!
//! A request is published on `agent.<agent-id>` with a NATS reply subject;
//! the agent answers `{"value": ...}` or `{"exception": {"message": ...}}`.
//! Long operations answer at once with a [`TaskHandle`] and are polled with
//! `get_task` until they yield their result, exactly as BOSH's director does.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The protocol version carried by every request.
pub const PROTOCOL_VERSION: u32 = 3;

/// The largest request the agent reads; larger ones get an exception.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// One request from the director.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Always [`PROTOCOL_VERSION`].
    pub protocol: u32,
    /// The method name, e.g. `apply` (see [`Method`]).
    pub method: String,
    /// Positional arguments; their shapes depend on the method.
    #[serde(default)]
    pub arguments: Vec<Value>,
    /// Where to reply when the NATS message carries no reply subject
    /// (BOSH's director sets this; NATS request/reply makes it redundant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// De-duplication key: a request retried with the same id is answered
    /// from the first one's reply (or task) instead of running again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl Request {
    /// A request for `method` with `arguments` and a request id.
    pub fn new(method: Method, arguments: Vec<Value>, request_id: impl Into<String>) -> Request {
        Request {
            protocol: PROTOCOL_VERSION,
            method: method.as_str().to_string(),
            arguments,
            reply_to: None,
            request_id: Some(request_id.into()),
        }
    }
}

/// The agent's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reply {
    /// Success, with the method's result (or a [`TaskHandle`]).
    Value(Value),
    /// Failure.
    Exception(Exception),
}

impl Reply {
    /// An exception reply with `message`.
    pub fn exception(message: impl Into<String>) -> Reply {
        Reply::Exception(Exception { message: message.into() })
    }
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exception {
    /// Human-readable reason, naming the job, script and exit code where
    /// there is one.
    pub message: String,
}

/// What a long operation answers at once, and what `get_task` answers
/// while it still runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskHandle {
    /// The agent-local task id to pass to `get_task` / `cancel_task`.
    pub agent_task_id: String,
    /// Always `running` (finished tasks answer with their result instead).
    pub state: String,
}

impl TaskHandle {
    /// The handle of a running task.
    pub fn running(id: impl Into<String>) -> TaskHandle {
        TaskHandle { agent_task_id: id.into(), state: "running".into() }
    }

    /// Reads a reply value as a running task's handle, if it is one.
    pub fn from_value(v: &Value) -> Option<TaskHandle> {
        let h: TaskHandle = serde_json::from_value(v.clone()).ok()?;
        (h.state == "running").then_some(h)
    }
}

/// Every method the agent serves. Arguments and results, in order:
///
/// | method | arguments | result |
/// |---|---|---|
/// | `ping` | — | `"pong"` |
/// | `info` | — | `{"api_version": 1, "protocol": 3}` |
/// | `get_state` | `["full"]` optional: include vitals | [`StateReport`] |
/// | `prepare` | [`ApplySpec`] | long → `"prepared"` |
/// | `apply` | [`ApplySpec`] | long → `"applied"` |
/// | `start` / `stop` | — | long → `"started"` / `"stopped"` |
/// | `drain` | `"update", ApplySpec` or `"shutdown"` | long → seconds waited |
/// | `run_script` | name, `{"env": {..}}` | long → [`RunScriptResult`] |
/// | `compile_package` | [`CompilePackage`] | long → [`BlobRef`] |
/// | `fetch_logs` | — | long → [`BlobRef`] of a tgz of `sys/log` |
/// | `run_errand` | `{"name": job}` optional | long → [`ErrandResult`] |
/// | `exec` | [`ExecCommand`] | long → [`ExecResult`] |
/// | `ssh` | `"setup"` or `"cleanup"`, [`SshParams`] | [`SshResult`] |
/// | `mount_disk` / `unmount_disk` | disk cid | `"mounted"` / `"unmounted"` |
/// | `list_disk` | — | `[cid]` mounted |
/// | `migrate_disk` | old cid, new cid | long → `"migrated"` |
/// | `get_task` | task id | the result, or a [`TaskHandle`] while running |
/// | `cancel_task` | task id | `"canceled"` |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum Method {
    Ping,
    Info,
    GetState,
    Prepare,
    Apply,
    Start,
    Stop,
    Drain,
    RunScript,
    CompilePackage,
    FetchLogs,
    RunErrand,
    Exec,
    Ssh,
    MountDisk,
    UnmountDisk,
    ListDisk,
    MigrateDisk,
    GetTask,
    CancelTask,
}

impl Method {
    /// All methods.
    pub const ALL: [Method; 20] = [
        Method::Ping,
        Method::Info,
        Method::GetState,
        Method::Prepare,
        Method::Apply,
        Method::Start,
        Method::Stop,
        Method::Drain,
        Method::RunScript,
        Method::CompilePackage,
        Method::FetchLogs,
        Method::RunErrand,
        Method::Exec,
        Method::Ssh,
        Method::MountDisk,
        Method::UnmountDisk,
        Method::ListDisk,
        Method::MigrateDisk,
        Method::GetTask,
        Method::CancelTask,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Ping => "ping",
            Method::Info => "info",
            Method::GetState => "get_state",
            Method::Prepare => "prepare",
            Method::Apply => "apply",
            Method::Start => "start",
            Method::Stop => "stop",
            Method::Drain => "drain",
            Method::RunScript => "run_script",
            Method::CompilePackage => "compile_package",
            Method::FetchLogs => "fetch_logs",
            Method::RunErrand => "run_errand",
            Method::Exec => "exec",
            Method::Ssh => "ssh",
            Method::MountDisk => "mount_disk",
            Method::UnmountDisk => "unmount_disk",
            Method::ListDisk => "list_disk",
            Method::MigrateDisk => "migrate_disk",
            Method::GetTask => "get_task",
            Method::CancelTask => "cancel_task",
        }
    }

    /// Parses a wire name.
    pub fn parse(name: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.as_str() == name)
    }

    /// Whether the agent answers with a [`TaskHandle`] and runs it in the
    /// background (anything that may outlast a NATS request timeout).
    pub fn is_long(self) -> bool {
        matches!(
            self,
            Method::Prepare
                | Method::Apply
                | Method::Start
                | Method::Stop
                | Method::Drain
                | Method::RunScript
                | Method::CompilePackage
                | Method::FetchLogs
                | Method::RunErrand
                | Method::Exec
                | Method::MigrateDisk
        )
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A blob in the blobstore: content address and size. The same type as
/// the objects' (`{"sha256", "size"}`), so the director hands the agent
/// what it stored and stores what the agent returns as they are.
pub use crate::objects::BlobRef;

/// A (compiled) package to install.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageRef {
    /// Package name: installed at `/var/vcap/packages/<name>`.
    pub name: String,
    /// Version (the fingerprint).
    #[serde(default)]
    pub version: String,
    /// The package's tgz.
    #[serde(flatten)]
    pub blob: BlobRef,
}

/// A job on the instance (its files come in the rendered templates archive).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRef {
    /// Job name: installed at `/var/vcap/jobs/<name>`.
    pub name: String,
    /// Version (the fingerprint); a change means `job_changed` for drain.
    #[serde(default)]
    pub version: String,
}

/// What an instance should run: the argument of `apply` and `prepare`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ApplySpec {
    /// Deployment name.
    #[serde(default)]
    pub deployment: String,
    /// Instance group name (BOSH's `job.name` in the spec).
    #[serde(default)]
    pub name: String,
    /// Instance index.
    #[serde(default)]
    pub index: u32,
    /// Instance id (UUID).
    #[serde(default)]
    pub id: String,
    /// Availability zone.
    #[serde(default)]
    pub az: String,
    /// Jobs, in order.
    #[serde(default)]
    pub jobs: Vec<JobRef>,
    /// Packages by name.
    #[serde(default)]
    pub packages: BTreeMap<String, PackageRef>,
    /// A tgz with one top-level directory per job (`<job>/monit`,
    /// `<job>/bin/...`, `<job>/config/...`), rendered by the director.
    #[serde(default)]
    pub rendered_templates_archive: Option<BlobRef>,
    /// Digest of the rendered configuration; a change means `hash_changed`.
    #[serde(default)]
    pub configuration_hash: String,
    /// Networks as the director resolved them.
    #[serde(default)]
    pub networks: Value,
}

/// The argument of `compile_package`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompilePackage {
    /// Package name (`BOSH_PACKAGE_NAME`).
    pub name: String,
    /// Package version (`BOSH_PACKAGE_VERSION`).
    pub version: String,
    /// The source package tgz (`packaging` plus files).
    pub source: BlobRef,
    /// Compiled dependencies, unpacked under `/var/vcap/packages/<name>`
    /// before `packaging` runs.
    #[serde(default)]
    pub dependencies: BTreeMap<String, PackageRef>,
}

/// The result of `run_script`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunScriptResult {
    /// Jobs that had the script, each of which ran it successfully.
    pub ran: Vec<String>,
}

/// The result of `run_errand`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrandResult {
    /// The job whose `bin/run` ran.
    pub job: String,
    /// Its exit code (-1 when killed by a signal).
    pub exit_code: i32,
    /// The tail of its stdout.
    pub stdout: String,
    /// The tail of its stderr.
    pub stderr: String,
}

/// The argument of `exec`: a command run on the VM for an operator
/// (`boshctl exec`), with the jobs' environment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecCommand {
    /// Program and arguments (no shell unless the program is one).
    pub command: Vec<String>,
    /// Seconds before the command is killed (default 300).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

/// The result of `exec`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ExecResult {
    /// Exit code (-1 when killed by a signal or the timeout).
    pub exit_code: i32,
    /// The tail of its stdout.
    pub stdout: String,
    /// The tail of its stderr.
    pub stderr: String,
}

/// The second argument of `ssh` (BOSH's `SSHParams`): `user` and
/// `public_key` for `setup`, `user_regex` for `cleanup`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SshParams {
    /// The user to create, e.g. `bosh_1f3a...` (setup).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// One OpenSSH public key line for the user's `authorized_keys` (setup).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub public_key: String,
    /// `^<prefix>`: the users to remove (cleanup); the bosh CLI sends
    /// `^` followed by the user it set up.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user_regex: String,
}

/// Whether `user` is a name the ssh route makes and removes: `bosh_`
/// followed by 1 to 27 lowercase letters, digits or `_`, so that no
/// existing account (`root`, `vcap`) can be targeted and the name is a
/// valid Linux user name (at most 32 characters).
pub fn is_ssh_user(user: &str) -> bool {
    user.strip_prefix("bosh_").is_some_and(|rest| {
        (1..=27).contains(&rest.len())
            && rest.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    })
}

/// The user-name prefix a cleanup's `user_regex` stands for. Only the
/// form the bosh CLI sends is understood: `^` and a literal prefix that
/// starts with `bosh_` (no other regex syntax), so that a cleanup can
/// never remove an account the ssh route did not make.
pub fn cleanup_prefix(user_regex: &str) -> Option<&str> {
    let prefix = user_regex.strip_prefix('^')?;
    let rest = prefix.strip_prefix("bosh_")?;
    let ok = prefix.len() <= 32
        && rest.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    ok.then_some(prefix)
}

/// The result of `ssh` (BOSH's `SSHResult`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SshResult {
    /// `setup` or `cleanup`.
    pub command: String,
    /// `success`.
    pub status: String,
    /// The VM's default address (setup).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ip: String,
    /// The VM's SSH host key, `<type> <base64>` (setup), for the client's
    /// `known_hosts`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host_public_key: String,
}

/// How a job (or the whole instance) is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Every process runs.
    Running,
    /// Processes are being started and none has failed.
    Starting,
    /// A process crashed or could not be started; it is being restarted.
    Failing,
    /// Nothing should run.
    #[default]
    Stopped,
}

/// How one supervised process is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProcessState {
    /// Alive (its pidfile names a live process).
    Running,
    /// Its start program runs or its pidfile has not appeared yet.
    Starting,
    /// It died or failed to start; a restart is pending with backoff.
    Failing,
    /// Stopped on purpose.
    #[default]
    Stopped,
}

impl ProcessState {
    /// The word on the wire and in `boshctl instances --ps`: `running`,
    /// `starting`, `failing`, `stopped`.
    pub fn as_str(self) -> &'static str {
        match self {
            ProcessState::Running => "running",
            ProcessState::Starting => "starting",
            ProcessState::Failing => "failing",
            ProcessState::Stopped => "stopped",
        }
    }
}

/// One supervised process.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ProcessStatus {
    /// The `check process` name.
    pub name: String,
    /// The job whose monit file declares it.
    pub job: String,
    /// Its state.
    pub state: ProcessState,
    /// How often it was restarted after dying.
    #[serde(default)]
    pub restarts: u32,
    /// Its pid, when running.
    #[serde(default)]
    pub pid: Option<u32>,
}

/// Machine vitals, as in BOSH's heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Vitals {
    /// 1, 5 and 15 minute load averages.
    pub load: [f64; 3],
    /// CPU use in percent since the previous sample.
    pub cpu: CpuVitals,
    /// Memory in use.
    pub mem: MemVitals,
    /// Swap in use.
    pub swap: MemVitals,
    /// Disk use of the system, ephemeral and persistent disks.
    pub disk: DiskVitals,
}

/// CPU use in percent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[allow(missing_docs)]
pub struct CpuVitals {
    pub user: f64,
    pub sys: f64,
    pub wait: f64,
}

/// Memory (or swap) in use.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MemVitals {
    /// KiB in use.
    pub kb: u64,
    /// Percent of the total in use.
    pub percent: f64,
}

/// Disk use by disk.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DiskVitals {
    /// The file system holding the VM's root.
    pub system: DiskUsage,
    /// `/var/vcap/data`.
    pub ephemeral: DiskUsage,
    /// `/var/vcap/store`, when a persistent disk is mounted.
    #[serde(default)]
    pub persistent: Option<DiskUsage>,
}

/// Use of one file system.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DiskUsage {
    /// Percent of blocks in use.
    pub percent: f64,
    /// Percent of inodes in use.
    pub inode_percent: f64,
}

/// The result of `get_state`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StateReport {
    /// The agent's id.
    pub agent_id: String,
    /// The VM's CID.
    #[serde(default)]
    pub vm_cid: String,
    /// Summary over all processes.
    pub job_state: JobState,
    /// Every supervised process.
    pub processes: Vec<ProcessStatus>,
    /// Vitals (only when asked for with `"full"`).
    #[serde(default)]
    pub vitals: Option<Vitals>,
    /// The last applied spec.
    #[serde(default)]
    pub spec: Option<ApplySpec>,
}

/// Published on `hm.agent.heartbeat.<agent-id>` every heartbeat interval.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The agent's id.
    pub agent_id: String,
    /// Deployment of the applied spec.
    #[serde(default)]
    pub deployment: String,
    /// Instance group of the applied spec.
    #[serde(default)]
    pub job: String,
    /// Instance index.
    #[serde(default)]
    pub index: u32,
    /// Instance id.
    #[serde(default)]
    pub id: String,
    /// Summary over all processes.
    pub job_state: JobState,
    /// Every supervised process.
    pub processes: Vec<ProcessStatus>,
    /// How many processes are supervised.
    pub number_of_processes: usize,
    /// Vitals.
    pub vitals: Vitals,
}

/// Published on `hm.agent.alert.<agent-id>` when a process fails.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// Unique id of this alert.
    pub id: String,
    /// The agent's id.
    pub agent_id: String,
    /// BOSH's severities: 1 alert, 2 critical, 3 error, 4 warning.
    pub severity: u8,
    /// Short title, e.g. `web (web) - Does not exist - restart`.
    pub title: String,
    /// What happened.
    pub summary: String,
    /// Unix seconds.
    pub created_at: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replies serialize to BOSH's `{"value"}` / `{"exception": {"message"}}` shapes.
    #[test]
    fn replies_have_bosh_wire_shape() {
        let v = serde_json::to_value(Reply::Value("pong".into())).unwrap();
        assert_eq!(v, serde_json::json!({"value": "pong"}));
        let e = serde_json::to_value(Reply::exception("boom")).unwrap();
        assert_eq!(e, serde_json::json!({"exception": {"message": "boom"}}));
    }

    /// Every method name round-trips through its wire name.
    #[test]
    fn method_names_round_trip() {
        for m in Method::ALL {
            assert_eq!(Method::parse(m.as_str()), Some(m));
            assert_eq!(serde_json::to_value(m).unwrap(), m.as_str());
        }
        assert_eq!(Method::parse("rm_rf"), None);
    }

    /// A running task handle is told apart from a finished task's result.
    #[test]
    fn task_handle_is_recognised_only_while_running() {
        let h = serde_json::to_value(TaskHandle::running("t1")).unwrap();
        assert_eq!(TaskHandle::from_value(&h).unwrap().agent_task_id, "t1");
        assert!(TaskHandle::from_value(&serde_json::json!("applied")).is_none());
    }

    /// Blobs travel as `{"sha256", "size"}`, inline in a package reference
    /// and nested in a compile request, and read back to the same values.
    #[test]
    fn blob_refs_keep_their_wire_shape_in_messages() {
        let blob = BlobRef { sha256: "ab".repeat(32), size: 7 };
        let pkg = PackageRef { name: "p".into(), version: "1".into(), blob: blob.clone() };
        let want =
            serde_json::json!({"name": "p", "version": "1", "sha256": "ab".repeat(32), "size": 7});
        assert_eq!(serde_json::to_value(&pkg).unwrap(), want);
        assert_eq!(serde_json::from_value::<PackageRef>(want).unwrap(), pkg);
        let req = CompilePackage {
            name: "p".into(),
            version: "1".into(),
            source: blob.clone(),
            dependencies: BTreeMap::from([("q".to_string(), pkg.clone())]),
        };
        let v = serde_json::to_value(&req).unwrap();
        assert_eq!(v["source"], serde_json::json!({"sha256": "ab".repeat(32), "size": 7}));
        assert_eq!(serde_json::from_value::<CompilePackage>(v).unwrap(), req);
    }
}
