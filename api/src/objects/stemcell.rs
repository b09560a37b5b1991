//! Stemcell: one uploaded stemcell version and where each CPI holds it.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::condition::{ConditionType, Reason};
use super::{BlobRef, Kind};
use crate::meta::Condition;

/// Spec of a Stemcell; `metadata.name` is `<name>/<version>`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StemcellSpec {
    /// Stemcell name from `stemcell.MF`.
    pub name: String,
    /// Stemcell version.
    pub version: String,
    /// e.g. `ubuntu-jammy`.
    pub operating_system: String,
    /// Stemcell API version (agent capabilities).
    #[serde(default)]
    pub api_version: u32,
    /// Digest of the image, as recorded in `stemcell.MF`.
    #[serde(default)]
    pub sha1: String,
    /// CPI-specific properties from `stemcell.MF`.
    #[serde(default)]
    pub cloud_properties: serde_json::Value,
    /// The image in the blobstore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<BlobRef>,
}

/// Status of a Stemcell.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StemcellStatus {
    /// `Ready`, its one condition: True (`Imported`) once this director's
    /// CPI holds the image, False (`ImportFailed`) with the CPI's error.
    /// Written by the stemcell controller, read by `boshctl stemcells`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The spec generation this status describes.
    #[serde(default)]
    pub observed_revision: i64,
    /// The stemcell's id in each CPI that has it, keyed by CPI name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cids: BTreeMap<String, String>,
}

impl StemcellStatus {
    /// What the last import attempt said, when it failed and no CPI holds
    /// the stemcell yet.
    pub fn import_error(&self) -> Option<&str> {
        crate::meta::find_condition(&self.conditions, ConditionType::Ready)
            .filter(|c| c.reason == Reason::ImportFailed)
            .map(|c| c.message.as_str())
    }
}

impl Kind for StemcellSpec {
    const KIND: &'static str = "Stemcell";
    const PLURAL: &'static str = "stemcells";
    type Status = StemcellStatus;
}
