//! Config: a typed, named document (cloud, runtime, cpi, resurrection).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ConditionsOnly, Kind};

/// Which kind of config a document is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ConfigType {
    /// IaaS specifics: azs, networks, vm/disk types, compilation.
    #[default]
    Cloud,
    /// Director-wide addons, releases and variables.
    Runtime,
    /// Named CPIs.
    Cpi,
    /// Resurrection on/off per deployment and instance group.
    Resurrection,
}

impl ConfigType {
    /// The lowercase name used in keys and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            ConfigType::Cloud => "cloud",
            ConfigType::Runtime => "runtime",
            ConfigType::Cpi => "cpi",
            ConfigType::Resurrection => "resurrection",
        }
    }
}

/// Spec of a Config; `metadata.name` is `<type>/<name>` (e.g. `cloud/default`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigSpec {
    /// The config's type.
    #[serde(rename = "type")]
    pub type_: ConfigType,
    /// The document, as parsed from YAML. Kept loosely typed so that a bad
    /// document written straight into etcd can be stored and then reported
    /// through an `Invalid` condition instead of being lost.
    pub content: serde_json::Value,
}

/// Status of a Config.
pub type ConfigStatus = ConditionsOnly;

impl Kind for ConfigSpec {
    const KIND: &'static str = "Config";
    const PLURAL: &'static str = "configs";
    type Status = ConfigStatus;
}
