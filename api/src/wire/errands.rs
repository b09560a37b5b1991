//! Errands (`boshctl errands`, `boshctl run-errand`): a run is an
//! ErrandRun object with a task; its results are in the object's status.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Body of `POST /v1/deployments/<name>/errands/<errand>/runs`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunErrandRequest {
    /// Keep an errand group's VMs after the run.
    #[serde(default)]
    pub keep_alive: bool,
    /// Skip the run when nothing changed since the last successful one.
    #[serde(default)]
    pub when_changed: bool,
    /// Instance selectors (`group`, `group/id`, `group/index`).
    #[serde(default)]
    pub instances: Vec<String>,
    /// Fetch each instance's job logs after its `bin/run`
    /// (`GET /v1/deployments/<name>/errand-runs/<run>/logs/<sha256>`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub download_logs: bool,
    /// The run's bound in seconds (default: boshd's `--errand-timeout-secs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
}

/// Answer to `POST /v1/deployments/<name>/errands/<errand>/runs`: the task
/// and the ErrandRun (`GET /v1/errand-runs/<deployment>/<run>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrandRunRef {
    /// The task's number.
    pub task: u64,
    /// The ErrandRun's name within its deployment.
    pub run: String,
}

/// One errand a deployment offers (`GET /v1/deployments/<name>/errands`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrandEntry {
    /// The name `run-errand` takes.
    pub name: String,
    /// A job with `bin/run` on service groups (else a `lifecycle: errand` group).
    pub colocated: bool,
    /// The groups it runs on.
    pub groups: Vec<String>,
}
