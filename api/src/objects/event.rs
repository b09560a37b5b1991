//! Event: one step a controller took for a task (BOSH's event log lines).

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Kind;

/// The stage of the events that carry what an external CPI logged during
/// a task (its stderr and its responses' `log`, redacted): BOSH's per-task
/// `cpi` log, which `bosh task N --cpi` shows. State `info`, object
/// `<method> (<CPI request id>)`, the text in `error`.
pub const CPI_LOG_STAGE: &str = "CPI log";

/// The state an event reports, as in BOSH's event log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EventState {
    /// A step began.
    #[default]
    Started,
    /// A step finished.
    Finished,
    /// A step failed.
    Failed,
    /// Something worth noting, not a step.
    Info,
}

/// Spec of an Event; `metadata.name` is `<task>/<seq>`, both zero-padded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventSpec {
    /// The task this belongs to.
    pub task: u64,
    /// Order within the task.
    pub seq: u64,
    /// When it happened.
    pub time: DateTime<Utc>,
    /// e.g. `Updating instance`, `Compiling packages`.
    pub stage: String,
    /// What it acted on, e.g. `web/4a1b (0)`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub object: String,
    /// Started, finished, failed.
    pub state: EventState,
    /// Error text when failed (never carries secret values).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
}

/// Events are immutable records; they have no status of their own.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EventStatus {}

impl Kind for EventSpec {
    const KIND: &'static str = "Event";
    const PLURAL: &'static str = "events";
    type Status = EventStatus;
}
