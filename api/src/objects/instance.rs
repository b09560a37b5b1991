//! Instance: one member of an instance group (`web/<uuid>`), written by the
//! deployment controller and driven onto a VM by the instance controller.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Kind;
use crate::meta::Condition;

/// The lifecycle state an operator asks for (`start`, `stop`, `stop --hard`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DesiredState {
    /// VM exists and jobs run.
    #[default]
    Started,
    /// VM exists, jobs stopped.
    Stopped,
    /// VM deleted, persistent disk kept (`stop --hard`).
    Detached,
}

/// A network an instance is placed on, with its allocated address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InstanceNetwork {
    /// Network name from the cloud config.
    pub name: String,
    /// The allocated IP (empty for dynamic networks until the agent reports).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ip: String,
    /// Whether this network provides the default dns/gateway.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub default: Vec<String>,
}

/// A job placed on the instance, traced to its release.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InstanceJob {
    /// Job name.
    pub name: String,
    /// `release/version` the job comes from.
    pub release: String,
    /// The job's fingerprint in that release.
    #[serde(default)]
    pub fingerprint: String,
}

/// Spec of an Instance; `metadata.name` is `<group>/<uuid>`, scoped to its deployment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InstanceSpec {
    /// Instance group name.
    pub group: String,
    /// Stable index within the group.
    pub index: u32,
    /// Availability zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub az: Option<String>,
    /// Whether this is the group's bootstrap instance.
    #[serde(default)]
    pub bootstrap: bool,
    /// What the operator asked for.
    #[serde(default)]
    pub desired_state: DesiredState,
    /// `name/version` of the stemcell.
    #[serde(default)]
    pub stemcell: String,
    /// VM type name from the cloud config.
    #[serde(default)]
    pub vm_type: String,
    /// Networks and addresses.
    #[serde(default)]
    pub networks: Vec<InstanceNetwork>,
    /// Jobs to run.
    #[serde(default)]
    pub jobs: Vec<InstanceJob>,
    /// Persistent disk size in MiB (0 = none).
    #[serde(default)]
    pub persistent_disk_mb: u64,
    /// Bumped to ask for a VM recreate (`boshctl recreate`).
    #[serde(default)]
    pub recreate_token: u64,
    /// Digest of everything the instance should run; differs ⇒ update.
    #[serde(default)]
    pub config_hash: String,
}

/// Status of an Instance.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStatus {
    /// `Ready`, `AgentUnresponsive`, ...
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The spec generation this status describes.
    #[serde(default)]
    pub observed_revision: i64,
    /// The VM's id in the CPI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_cid: Option<String>,
    /// The agent id given to the VM; recorded before create_vm so a lost
    /// reply is adopted rather than repeated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// Request id of a create_vm in flight (intent before side effect).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_create: Option<String>,
    /// The `config_hash` last applied by the agent.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub applied_hash: String,
    /// Process states last reported, by job.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub processes: BTreeMap<String, String>,
    /// When the agent last changed health.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_health_change: Option<DateTime<Utc>>,
}

impl Kind for InstanceSpec {
    const KIND: &'static str = "Instance";
    const PLURAL: &'static str = "instances";
    const SCOPED: bool = true;
    type Status = InstanceStatus;
}
