//! Task: a numbered record of one accepted change, as BOSH's task queue
//! kept; controllers append Events to it as they act.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Kind;

/// Where a task is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    /// Accepted, nothing done yet.
    #[default]
    Queued,
    /// Controllers are acting on it.
    Processing,
    /// Finished successfully.
    Done,
    /// Finished with an error.
    Error,
    /// Cancelled by a user.
    Cancelled,
}

/// Spec of a Task; `metadata.name` is its number, zero-padded so keys sort.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskSpec {
    /// The task number users see.
    pub id: u64,
    /// e.g. `create deployment`, `scan and fix`.
    pub description: String,
    /// The deployment it concerns, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    /// Who asked.
    #[serde(default)]
    pub user: String,
}

/// Status of a Task.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskStatus {
    /// Where the task is.
    #[serde(default)]
    pub state: TaskState,
    /// When processing started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// The result line, or the error message.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub result: String,
}

impl Kind for TaskSpec {
    const KIND: &'static str = "Task";
    const PLURAL: &'static str = "tasks";
    type Status = TaskStatus;
}
