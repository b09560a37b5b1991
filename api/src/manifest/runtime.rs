//! The runtime config: director-wide addons, releases and variables, merged
//! into every deployment an addon's `include`/`exclude` rules select.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    Properties,
    deployment::{Lifecycle, Release, Variable},
};

/// A runtime config document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Releases the addons' jobs come from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub releases: Vec<Release>,
    /// Jobs added to matching instance groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addons: Vec<Addon>,
    /// Variables the addons' properties refer to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variables: Vec<Variable>,
    /// Tags added to every VM of matching deployments.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, serde_json::Value>,
}

/// Jobs placed on every instance group a filter selects.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Addon {
    /// The addon's name, unique in its document.
    pub name: String,
    /// The jobs to add.
    pub jobs: Vec<AddonJob>,
    /// Only instance groups matching this (everything when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include: Option<Filter>,
    /// Never instance groups matching this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude: Option<Filter>,
    /// Properties shared by the addon's jobs.
    #[serde(default, skip_serializing_if = "Properties::is_empty")]
    pub properties: Properties,
}

/// A job an addon adds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AddonJob {
    /// The job's name in its release.
    pub name: String,
    /// The release that ships it.
    pub release: String,
    /// The job's properties.
    #[serde(default, skip_serializing_if = "Properties::is_empty")]
    pub properties: Properties,
    /// Links consumed, by link name.
    #[serde(default, skip_serializing_if = "Properties::is_empty")]
    pub consumes: Properties,
    /// Links provided, by link name.
    #[serde(default, skip_serializing_if = "Properties::is_empty")]
    pub provides: Properties,
}

/// Which instance groups an addon applies to; every given criterion must match.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// Deployment names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deployments: Vec<String>,
    /// Instance group names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instance_groups: Vec<String>,
    /// Groups that run one of these jobs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<JobSelector>,
    /// Groups on one of these stemcells.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stemcell: Vec<StemcellSelector>,
    /// Groups on one of these networks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<String>,
    /// Deployments owned by one of these teams.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub teams: Vec<String>,
    /// Groups with this lifecycle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<Lifecycle>,
    /// Groups in one of these AZs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub azs: Vec<String>,
}

/// A job, by name and release.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobSelector {
    /// The job's name.
    pub name: String,
    /// The job's release.
    pub release: String,
}

/// A stemcell, by operating system.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StemcellSelector {
    /// Operating system, e.g. `ubuntu-jammy`.
    pub os: String,
}
