//! Cloud check (`cck`): problems the controllers found when asked to scan,
//! and the resolutions an operator chose — BOSH's `problem_handlers`, as
//! desired state (a scan token, resolutions by problem id) in the
//! Deployment's spec and findings in the statuses.
//!
//! Scanning costs CPI and agent calls, so it happens only when the scan
//! token moves; a steady deployment is never scanned behind anyone's back.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What is wrong (BOSH's problem types, plus `orphaned_vm`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ProblemType {
    /// The VM exists but its agent does not answer (or the health monitor
    /// found it unresponsive).
    UnresponsiveAgent,
    /// The instance records a VM the CPI does not have (or not running).
    MissingVm,
    /// The instance's Disk records a cid the CPI does not have.
    MissingDisk,
    /// The disk exists but is not attached to the instance's VM.
    InactiveDisk,
    /// The disk is attached, but the agent does not report it mounted.
    MountInfoMismatch,
    /// A VM tagged with this deployment that no instance owns.
    OrphanedVm,
}

impl ProblemType {
    /// Every type, in a stable order.
    pub const ALL: [ProblemType; 6] = [
        ProblemType::UnresponsiveAgent,
        ProblemType::MissingVm,
        ProblemType::MissingDisk,
        ProblemType::InactiveDisk,
        ProblemType::MountInfoMismatch,
        ProblemType::OrphanedVm,
    ];

    /// The name in problem ids and on the CLI (`missing_vm`).
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemType::UnresponsiveAgent => "unresponsive_agent",
            ProblemType::MissingVm => "missing_vm",
            ProblemType::MissingDisk => "missing_disk",
            ProblemType::InactiveDisk => "inactive_disk",
            ProblemType::MountInfoMismatch => "mount_info_mismatch",
            ProblemType::OrphanedVm => "orphaned_vm",
        }
    }

    /// The type named `s`.
    pub fn parse(s: &str) -> Option<ProblemType> {
        ProblemType::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// The resolutions an operator may choose (BOSH-REFERENCE §9).
    pub fn resolutions(self) -> &'static [Resolution] {
        use Resolution::*;
        match self {
            ProblemType::MissingVm => {
                &[Ignore, RecreateVmWithoutWait, RecreateVm, DeleteVmReference]
            }
            ProblemType::UnresponsiveAgent => {
                &[Ignore, RebootVm, RecreateVmWithoutWait, RecreateVm, DeleteVm, DeleteVmReference]
            }
            ProblemType::MissingDisk => &[Ignore, DeleteDiskReference],
            ProblemType::InactiveDisk => &[Ignore, DeleteDisk, ActivateDisk],
            ProblemType::MountInfoMismatch => &[Ignore, ReattachDisk, ReattachDiskAndReboot],
            ProblemType::OrphanedVm => &[Ignore, DeleteVm],
        }
    }

    /// What `cck --auto` applies: BOSH's choice, and `ignore` for an
    /// orphaned VM, which may be someone's on purpose.
    pub fn auto_resolution(self) -> Resolution {
        match self {
            ProblemType::MissingVm => Resolution::RecreateVmWithoutWait,
            _ => Resolution::Ignore,
        }
    }
}

impl std::fmt::Display for ProblemType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a problem is to be fixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Resolution {
    /// Leave it; a later scan finds it again.
    Ignore,
    /// Delete the VM (if any) and create a new one, jobs started.
    RecreateVm,
    /// Same as `recreate_vm` here (jobs are always watched).
    RecreateVmWithoutWait,
    /// Reboot the VM through the CPI, wait for the agent, start the jobs.
    RebootVm,
    /// Delete the VM. For an instance whose desired state is `started` the
    /// instance controller then creates a new one; for an orphaned VM that
    /// is the end of it.
    DeleteVm,
    /// Forget the recorded VM cid without calling the CPI; a new VM follows.
    DeleteVmReference,
    /// Forget the recorded disk cid; a new, empty disk follows.
    DeleteDiskReference,
    /// Delete the inactive disk; a new, empty disk follows.
    DeleteDisk,
    /// Attach and mount the inactive disk.
    ActivateDisk,
    /// Detach, attach and mount the disk again.
    ReattachDisk,
    /// `reattach_disk`, then reboot the VM.
    ReattachDiskAndReboot,
}

impl Resolution {
    /// Every resolution, in a stable order.
    pub const ALL: [Resolution; 11] = [
        Resolution::Ignore,
        Resolution::RecreateVm,
        Resolution::RecreateVmWithoutWait,
        Resolution::RebootVm,
        Resolution::DeleteVm,
        Resolution::DeleteVmReference,
        Resolution::DeleteDiskReference,
        Resolution::DeleteDisk,
        Resolution::ActivateDisk,
        Resolution::ReattachDisk,
        Resolution::ReattachDiskAndReboot,
    ];

    /// The name on the CLI and in the API (`recreate_vm`).
    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::Ignore => "ignore",
            Resolution::RecreateVm => "recreate_vm",
            Resolution::RecreateVmWithoutWait => "recreate_vm_without_wait",
            Resolution::RebootVm => "reboot_vm",
            Resolution::DeleteVm => "delete_vm",
            Resolution::DeleteVmReference => "delete_vm_reference",
            Resolution::DeleteDiskReference => "delete_disk_reference",
            Resolution::DeleteDisk => "delete_disk",
            Resolution::ActivateDisk => "activate_disk",
            Resolution::ReattachDisk => "reattach_disk",
            Resolution::ReattachDiskAndReboot => "reattach_disk_and_reboot",
        }
    }

    /// The resolution named `s`.
    pub fn parse(s: &str) -> Option<Resolution> {
        Resolution::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for Resolution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem a scan found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    /// Stable id: `<group>/<uuid>/<type>` for an instance's problem,
    /// `orphaned_vm/<vm cid>` for an orphaned VM.
    pub id: String,
    /// What is wrong.
    #[serde(rename = "type")]
    pub type_: ProblemType,
    /// The instance (`group/uuid`), for instance problems.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// The VM concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_cid: Option<String>,
    /// The disk concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_cid: Option<String>,
    /// For people: names the instance (`web/<uuid> (0)`) and the cids.
    pub description: String,
    /// What may be done about it.
    pub resolutions: Vec<Resolution>,
    /// What `--auto` does about it.
    pub auto_resolution: Resolution,
}

impl Problem {
    /// A problem of `type_` with its resolutions filled in.
    pub fn new(id: String, type_: ProblemType, description: String) -> Problem {
        Problem {
            id,
            type_,
            instance: None,
            vm_cid: None,
            disk_cid: None,
            description,
            resolutions: type_.resolutions().to_vec(),
            auto_resolution: type_.auto_resolution(),
        }
    }

    /// The id of instance `instance`'s problem of `type_`.
    pub fn instance_id(instance: &str, type_: ProblemType) -> String {
        format!("{instance}/{type_}")
    }
}

/// A chosen resolution, stamped with the apply it came with, so that the
/// same choice made again later (the problem came back) runs again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResolutionRequest {
    /// What to do.
    pub resolution: Resolution,
    /// The `applyToken` it was chosen under.
    pub token: u64,
}

/// The Deployment's cloud-check requests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CloudCheckSpec {
    /// Bumped to ask for a scan of every instance (and for orphaned VMs).
    #[serde(default)]
    pub scan: u64,
    /// Bumped by each set of resolutions; stamps them.
    #[serde(default)]
    pub apply_token: u64,
    /// Chosen resolutions by problem id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resolutions: BTreeMap<String, ResolutionRequest>,
}

impl CloudCheckSpec {
    /// Whether nothing was ever asked.
    pub fn is_empty(&self) -> bool {
        *self == CloudCheckSpec::default()
    }
}

/// What the deployment controller found and did (deployment level).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CloudCheckStatus {
    /// The `scan` token the problems below answer.
    #[serde(default)]
    pub scanned: u64,
    /// Every open problem: the instances' and orphaned VMs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<Problem>,
    /// Checks that could not run, and why (a CPI that cannot list VMs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Deployment-level resolutions carried out: problem id → token.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resolved: BTreeMap<String, u64>,
}

/// An Instance's share of the requests: the scan token and the resolutions
/// of its own problems, by type.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InstanceCloudCheck {
    /// Differs from `status.cloudCheck.scanned` ⇒ scan this instance.
    #[serde(default)]
    pub scan: u64,
    /// Chosen resolutions of this instance's problems.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resolutions: BTreeMap<ProblemType, ResolutionRequest>,
}

impl InstanceCloudCheck {
    /// Whether nothing was ever asked.
    pub fn is_empty(&self) -> bool {
        *self == InstanceCloudCheck::default()
    }
}

/// What the instance controller found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceCloudCheckStatus {
    /// The scan token last carried out.
    #[serde(default)]
    pub scanned: u64,
    /// Problems found then (and still open).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<Problem>,
    /// Resolutions carried out: problem type → token.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resolved: BTreeMap<ProblemType, u64>,
}

impl InstanceCloudCheckStatus {
    /// Whether nothing was ever done.
    pub fn is_empty(&self) -> bool {
        *self == InstanceCloudCheckStatus::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each type offers its auto resolution, and names round-trip.
    #[test]
    fn every_auto_resolution_is_allowed_and_names_round_trip() {
        for t in ProblemType::ALL {
            assert!(t.resolutions().contains(&t.auto_resolution()), "{t}");
            assert_eq!(ProblemType::parse(t.as_str()), Some(t));
            let json = serde_json::to_value(t).unwrap();
            assert_eq!(json, t.as_str());
        }
        for r in Resolution::ALL {
            assert_eq!(Resolution::parse(r.as_str()), Some(r));
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
        assert_eq!(ProblemType::MissingVm.auto_resolution(), Resolution::RecreateVmWithoutWait);
        assert!(!ProblemType::MissingDisk.resolutions().contains(&Resolution::RecreateVm));
    }
}
