//! Task numbers, as the routes that start work answer them, and
//! cancellation.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Answer of a route that started a task (an instance action, a
/// cloud-check scan): follow it with `GET /v1/tasks/<number, 10 digits>`
/// and the task's events, or `boshctl task N --follow`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TaskRef {
    /// The task's number.
    pub task: u64,
}

/// Answer to `POST /v1/task-cancellations/<id>`: the cancellation is
/// recorded; the task ends once the controllers get to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TaskCancellation {
    /// The task's number.
    pub task: u64,
    /// Always `true`: the task is being cancelled.
    pub cancel: bool,
}

/// The body of a `POST` that takes no parameters (`{}`), e.g. starting a
/// cloud-check scan or cancelling a task.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EmptyRequest {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testing::round_trip;

    /// Each keeps the shape boshd answered with `json!`.
    #[test]
    fn task_bodies_round_trip() {
        round_trip(&TaskRef { task: 3 }, r#"{"task":3}"#);
        round_trip(&TaskCancellation { task: 3, cancel: true }, r#"{"task":3,"cancel":true}"#);
        round_trip(&EmptyRequest {}, "{}");
    }
}
