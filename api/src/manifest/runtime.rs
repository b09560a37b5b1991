//! The runtime config: director-wide addons, releases and variables, merged
//! into every deployment an addon's `include`/`exclude` rules select. Its
//! parts are the deployment manifest's own types ([`super::deployment`]).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::deployment::{Addon, Release, Variable};

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
    /// BOSH DNS aliases by alias domain (bosh-dns's alias format): each
    /// name answers what its targets' groups answer.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub aliases: BTreeMap<String, DnsAlias>,
}

/// One alias domain and the groups it stands for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DnsAlias {
    /// The groups the alias answers, together.
    pub targets: Vec<AliasTarget>,
}

/// One group an alias answers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AliasTarget {
    /// `*`: the alias itself answers the group's healthy instances (as
    /// `q-s0`); `_`: `<instance uuid>.<alias>` answers that instance.
    pub query: String,
    /// The instance group.
    pub instance_group: String,
    /// Its deployment.
    pub deployment: String,
    /// The network whose addresses are answered.
    pub network: String,
    /// The BOSH DNS root domain the group is under (`bosh`).
    #[serde(default = "default_domain")]
    pub domain: String,
}

fn default_domain() -> String {
    "bosh".into()
}

/// The alias queries bosh-rs answers.
pub const ALIAS_QUERIES: [&str; 2] = ["*", "_"];
