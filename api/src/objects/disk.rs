//! Disk: a persistent disk, which outlives VMs and is orphaned, not
//! destroyed, when its instance goes away.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Kind;
use crate::meta::Condition;

/// Where a disk is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DiskPhase {
    /// Not yet created in the IaaS.
    #[default]
    Pending,
    /// Exists, not attached.
    Detached,
    /// Attached to the instance's VM.
    Attached,
    /// Its instance is gone; kept for recovery until cleaned up.
    Orphaned,
}

/// Spec of a Disk; `metadata.name` is the disk's name, scoped to its deployment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DiskSpec {
    /// `group/uuid` of the owning instance.
    pub instance: String,
    /// Size in MiB.
    pub size_mb: u64,
    /// Disk type name from the cloud config, if one was used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_type: Option<String>,
    /// CPI-specific properties.
    #[serde(default)]
    pub cloud_properties: serde_json::Value,
}

/// Status of a Disk.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DiskStatus {
    /// Observations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The spec generation this status describes.
    #[serde(default)]
    pub observed_revision: i64,
    /// The disk's id in the CPI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cid: Option<String>,
    /// The CPI the disk was created in, by its CPI config name; absent:
    /// boshd's default CPI. A disk is attached, detached and deleted only
    /// through it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpi: Option<String>,
    /// Where the disk is in its life.
    #[serde(default)]
    pub phase: DiskPhase,
    /// The VM it is attached to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attached_to: Option<String>,
}

impl Kind for DiskSpec {
    const KIND: &'static str = "Disk";
    const PLURAL: &'static str = "disks";
    const SCOPED: bool = true;
    type Status = DiskStatus;
}
