//! Cloud check (`boshctl cck`): a scan is a task, its findings a report,
//! and the operator's choices a second task.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::objects::CloudCheckStatus;

/// Answer to `GET /v1/deployments/<name>/cloud-check`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CloudCheckReport {
    /// The scan last asked for (each `POST .../cloud-check` asks for a new one).
    pub scan: u64,
    /// Whether the findings answer that scan; until then they are an older
    /// scan's, and resolutions are refused.
    pub complete: bool,
    /// The findings: `scanned`, `problems` (each with its id, type,
    /// description, allowed resolutions and `autoResolution`), `notes`
    /// (checks that could not run) and `resolved`.
    #[serde(flatten)]
    pub status: CloudCheckStatus,
}

/// Body of `POST /v1/deployments/<name>/cloud-check/resolutions`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResolveRequest {
    /// Problem id → resolution name (`recreate_vm`, `delete_vm`, ...); each
    /// must name an open problem and one of its resolutions, or nothing is
    /// recorded.
    #[serde(default)]
    pub resolutions: BTreeMap<String, String>,
    /// Every other open problem gets its auto resolution (`boshctl cck --auto`).
    #[serde(default)]
    pub auto: bool,
}

/// Answer to a set of resolutions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ResolutionsRecorded {
    /// The task that carries them out; `null` when there was nothing to resolve.
    pub task: Option<u64>,
    /// How many problems got a resolution.
    pub resolutions: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::{Problem, ProblemType};
    use crate::wire::testing::round_trip;

    /// A report keeps its flattened shape; the resolution bodies keep theirs.
    #[test]
    fn cloud_check_bodies_round_trip() {
        let mut p =
            Problem::new("orphaned_vm/vm-9".into(), ProblemType::OrphanedVm, "VM left".into());
        p.vm_cid = Some("vm-9".into());
        let report = CloudCheckReport {
            scan: 2,
            complete: true,
            status: CloudCheckStatus {
                scanned: 2,
                problems: vec![p],
                notes: vec!["the CPI cannot list VMs".into()],
                resolved: BTreeMap::new(),
            },
        };
        round_trip(
            &report,
            r#"{"scan":2,"complete":true,"scanned":2,"problems":[{"id":"orphaned_vm/vm-9","type":"orphaned_vm","vmCid":"vm-9","description":"VM left","resolutions":["ignore","delete_vm"],"autoResolution":"ignore"}],"notes":["the CPI cannot list VMs"]}"#,
        );
        round_trip(
            &ResolveRequest {
                resolutions: BTreeMap::from([("web/a/missing_vm".into(), "recreate_vm".into())]),
                auto: true,
            },
            r#"{"resolutions":{"web/a/missing_vm":"recreate_vm"},"auto":true}"#,
        );
        round_trip(
            &ResolutionsRecorded { task: Some(7), resolutions: 2 },
            r#"{"task":7,"resolutions":2}"#,
        );
        round_trip(
            &ResolutionsRecorded { task: None, resolutions: 0 },
            r#"{"task":null,"resolutions":0}"#,
        );
    }
}
