//! The body of every refusal.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What boshd answers with any error status (4xx, 5xx): one line saying
/// what went wrong and, when there are several problems (a manifest with
/// three mistakes), one detail each, naming its path
/// (`instance_groups[0].vm_type: ...`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    /// What went wrong, e.g. `deployment hello is invalid`.
    pub error: String,
    /// Every problem, when there are several; absent when there is one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testing::round_trip;

    /// An error keeps its shape, with and without details.
    #[test]
    fn errors_round_trip() {
        round_trip(
            &ErrorBody { error: "a valid bearer token is required".into(), details: vec![] },
            r#"{"error":"a valid bearer token is required"}"#,
        );
        round_trip(
            &ErrorBody {
                error: "deployment d is invalid".into(),
                details: vec!["instance_groups[0].vm_type: no vm_type \"huge\"".into()],
            },
            r#"{"error":"deployment d is invalid","details":["instance_groups[0].vm_type: no vm_type \"huge\""]}"#,
        );
    }
}
