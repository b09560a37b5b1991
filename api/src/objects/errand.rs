//! ErrandRun: one requested run of an errand (`boshctl run-errand`), as
//! desired state with a numbered task, like a Kubernetes Job. The errand
//! controller carries it out; while it runs (or after it, with
//! `keepAlive`) the deployment controller gives a `lifecycle: errand`
//! group its instances.
//!
//! A run is an object rather than an API call that talks to agents, so a
//! GitOps write can request one and a director restarted mid-run finishes
//! or reports it.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{BlobRef, Kind};

/// Spec of an ErrandRun; `metadata.name` is its task's object name
/// (the zero-padded task number), scoped to its deployment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ErrandRunSpec {
    /// The errand: a `lifecycle: errand` group's name, or the name of a
    /// job with `bin/run` colocated on service groups.
    pub errand: String,
    /// The task that reports the run.
    pub task: u64,
    /// Keep an errand group's VMs after the run (until a later run of the
    /// same errand without it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_alive: bool,
    /// Skip the run when its inputs equal those of the errand's last
    /// successful run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub when_changed: bool,
    /// Instance selectors (`group`, `group/id` or `group/index`); empty:
    /// every instance that has the errand.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<String>,
    /// Fetch each instance's job logs (`/var/vcap/sys/log`) once its
    /// `bin/run` has run, before an errand group's VM goes; each result
    /// then names the tarball's blob (`boshctl run-errand --download-logs`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub download_logs: bool,
    /// How long the run may take, in seconds, from when it starts running
    /// (preparing its instances included) to its last `bin/run`'s end;
    /// past it the run fails, naming what it waited for, and running
    /// `bin/run`s are cancelled. Unset: boshd's `--errand-timeout-secs`
    /// (default [`DEFAULT_ERRAND_TIMEOUT_SECS`]). A bound, so that a VM
    /// whose agent never comes or a `bin/run` that never exits cannot
    /// hold a run (and its task) forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
}

/// A run's bound when neither it nor boshd sets one: an hour, what the
/// director already gives one agent's `run_errand` call.
pub const DEFAULT_ERRAND_TIMEOUT_SECS: u64 = 3600;

/// Where a run is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ErrandPhase {
    /// Accepted; not yet looked at.
    #[default]
    Pending,
    /// Its instances are being prepared or its `bin/run`s are running.
    Running,
    /// Every instance's `bin/run` exited 0.
    Succeeded,
    /// Some instance's `bin/run` exited non-zero or could not run, or the
    /// errand could not be run at all (see `message`).
    Failed,
    /// `whenChanged` and nothing changed since the last successful run.
    Skipped,
    /// Its task was cancelled (`boshctl cancel-task`): running `bin/run`s
    /// were cancelled and nothing more was run.
    Cancelled,
}

impl ErrandPhase {
    /// Whether the run has ended.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            ErrandPhase::Succeeded
                | ErrandPhase::Failed
                | ErrandPhase::Skipped
                | ErrandPhase::Cancelled
        )
    }
}

/// What one instance's `bin/run` did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrandInstanceResult {
    /// `group/id`.
    pub instance: String,
    /// The job whose `bin/run` ran.
    pub job: String,
    /// Its exit code (`None`: it could not be run; see `error`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Its standard output (the agent caps it).
    #[serde(default)]
    pub stdout: String,
    /// Its standard error (the agent caps it).
    #[serde(default)]
    pub stderr: String,
    /// Why it could not be run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// With `downloadLogs`: the tarball of its job logs in the blobstore
    /// (its sha256 is its blob id), never the content itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<BlobRef>,
    /// With `downloadLogs`: why its logs could not be fetched (the errand's
    /// own outcome stands).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs_error: Option<String>,
}

impl ErrandInstanceResult {
    /// Whether this instance's run succeeded.
    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0) && self.error.is_none()
    }
}

/// Status of an ErrandRun.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrandRunStatus {
    /// Where the run is.
    #[serde(default)]
    pub phase: ErrandPhase,
    /// Digest of what the run depends on (for `whenChanged`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub inputs: String,
    /// One result per instance run, recorded as each finishes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub results: Vec<ErrandInstanceResult>,
    /// Why it failed or was skipped, or what it waits for.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// When it started running: its timeout counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
}

impl Kind for ErrandRunSpec {
    const KIND: &'static str = "ErrandRun";
    const PLURAL: &'static str = "errand-runs";
    const SCOPED: bool = true;
    type Status = ErrandRunStatus;
}
