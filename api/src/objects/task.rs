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

/// What change of its deployment a task carries out. A task that carries
/// one is current while the deployment's `spec.task` names it; a later task
/// supersedes it. Tasks without one (resurrection's "scan and fix") are
/// finished by the controller that made them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TaskChange {
    /// A change of the deployment's spec: apply, instance actions,
    /// cloud-check scans and resolutions.
    Update,
    /// The deployment's deletion: done once the deployment is gone.
    Delete,
}

impl TaskState {
    /// Whether the task has ended (done, error or cancelled).
    pub fn is_finished(self) -> bool {
        matches!(self, TaskState::Done | TaskState::Error | TaskState::Cancelled)
    }
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
    /// The change of its deployment it carries out, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<TaskChange>,
    /// A user asked to cancel it (`boshctl cancel-task`): desired state,
    /// which the task controller and the deployment controller act on.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancel: bool,
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
