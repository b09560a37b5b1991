//! Instance: one member of an instance group (`web/<uuid>`), written by the
//! deployment controller and driven onto a VM by the instance controller.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::cloud_check::{InstanceCloudCheck, InstanceCloudCheckStatus};
use super::vocab::vocabulary;
use super::{BlobRef, Kind};
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

vocabulary! {
    /// Where the instance controller is with an instance (`status.phase`).
    pub enum InstancePhase {
        /// A VM is being created (its agent and request ids are recorded).
        Creating = "creating",
        /// The VM exists; its agent has not been given the spec yet.
        Created = "created",
        /// The spec is being applied to the agent.
        Updating = "updating",
        /// The jobs run.
        Running = "running",
        /// The jobs are stopped: asked for, drained for an update, or
        /// applied and not started yet.
        Stopped = "stopped",
        /// No VM: `stop --hard`, or its VM was deleted and no new one is
        /// made yet.
        Detached = "detached",
        /// The VM is being deleted.
        Deleting = "deleting",
    }
}

vocabulary! {
    /// What the health monitor last made of an instance's agent
    /// (`status.health`).
    pub enum InstanceHealth {
        /// Heartbeats say the jobs run (or are starting).
        Running = "running",
        /// Heartbeats say a job is failing; raises an alert.
        Failing = "failing",
        /// Heartbeats say the jobs are stopped.
        Stopped = "stopped",
        /// No heartbeat for the agent timeout; raises an alert, and the
        /// instance controller resurrects the instance.
        Unresponsive = "unresponsive",
    }
}

/// A network an instance is placed on, with its allocated address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InstanceNetwork {
    /// Network name from the cloud config.
    pub name: String,
    /// `manual`, `dynamic` or `vip`.
    #[serde(default, rename = "type")]
    pub type_: String,
    /// The allocated IP (empty for dynamic networks until the agent reports).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ip: String,
    /// Netmask of the subnet the address is in.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub netmask: String,
    /// Gateway of that subnet.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub gateway: String,
    /// DNS servers of that subnet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    /// Which defaults (`dns`, `gateway`) this network provides.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub default: Vec<String>,
    /// The subnet's cloud properties.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub cloud_properties: serde_json::Value,
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

/// A compiled package the instance installs, traced to its compile key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InstancePackage {
    /// Package name.
    pub name: String,
    /// The package's fingerprint (BOSH's version).
    pub version: String,
    /// The CompiledPackage object it comes from.
    #[serde(default)]
    pub compile_key: String,
    /// The compiled tgz in the blobstore.
    pub blob: BlobRef,
}

/// Spec of an Instance; `metadata.name` is `<group>/<uuid>`, scoped to its
/// deployment. Written by the deployment controller: everything the
/// instance controller needs is here, so it never reads releases.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InstanceSpec {
    /// Instance group name.
    pub group: String,
    /// The instance's UUID.
    #[serde(default)]
    pub id: String,
    /// Stable index within the group.
    pub index: u32,
    /// Availability zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub az: Option<String>,
    /// The CPI that serves the AZ (the cloud config's `azs[].cpi`, a CPI
    /// of the CPI config); absent: boshd's default CPI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpi: Option<String>,
    /// Whether this is the group's bootstrap instance.
    #[serde(default)]
    pub bootstrap: bool,
    /// What the operator asked for.
    #[serde(default)]
    pub desired_state: DesiredState,
    /// `name/version` of the stemcell.
    #[serde(default)]
    pub stemcell: String,
    /// VM type name from the cloud config (empty with `vm_resources`).
    #[serde(default)]
    pub vm_type: String,
    /// vm_type, vm_extensions and AZ cloud properties, merged.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub cloud_properties: serde_json::Value,
    /// The instance group's `env`.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub env: serde_json::Value,
    /// Networks and addresses.
    #[serde(default)]
    pub networks: Vec<InstanceNetwork>,
    /// Jobs to run.
    #[serde(default)]
    pub jobs: Vec<InstanceJob>,
    /// Compiled packages to install, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<InstancePackage>,
    /// The rendered job templates (one directory per job).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rendered_templates: Option<BlobRef>,
    /// Persistent disk size in MiB (0 = none).
    #[serde(default)]
    pub persistent_disk_mb: u64,
    /// Disk type name from the cloud config, if one was used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_disk_type: Option<String>,
    /// The disk type's cloud properties.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub persistent_disk_cloud_properties: serde_json::Value,
    /// Bumped to ask for a VM recreate (`boshctl recreate`, `--recreate`).
    #[serde(default)]
    pub recreate_token: u64,
    /// Bumped to ask for a restart of the jobs (`boshctl restart`).
    #[serde(default)]
    pub restart_token: u64,
    /// From when on, after start, the jobs must be running (ms; BOSH's
    /// watch time minimum).
    #[serde(default)]
    pub watch_min_ms: u64,
    /// Longest time a job may take to be running after start (ms).
    #[serde(default)]
    pub watch_time_ms: u64,
    /// Digest of what the agent applies (jobs, packages, templates,
    /// networks); differs from `status.appliedHash` ⇒ update.
    #[serde(default)]
    pub config_hash: String,
    /// Digest of what the VM is made from (stemcell, cloud properties,
    /// networks, env); differs from `status.vmHash` ⇒ recreate.
    #[serde(default)]
    pub vm_hash: String,
    /// The deployment's cloud-check requests that concern this instance.
    /// Not part of what the instance converges on: a change here scans or
    /// resolves, and does not roll the instance out.
    #[serde(default, skip_serializing_if = "InstanceCloudCheck::is_empty")]
    pub cloud_check: InstanceCloudCheck,
}

/// Status of an Instance.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStatus {
    /// `Ready`: True (`Converged`, `Resurrected`) once the current spec
    /// runs; False with `UpdateFailed` when it could not be made to, or
    /// `Resurrecting`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The spec generation this status describes.
    #[serde(default)]
    pub observed_revision: i64,
    /// Where the instance controller is with it (absent: not yet looked at).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<InstancePhase>,
    /// The VM's id in the CPI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_cid: Option<String>,
    /// The CPI that made the VM (or is making it: written with the
    /// intent), by its CPI config name; absent: boshd's default CPI. Later
    /// calls on the VM go to it, whatever the cloud config says by then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpi: Option<String>,
    /// The agent id given to the VM; recorded before create_vm so a lost
    /// reply is adopted rather than repeated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// Request id of a create_vm in flight (intent before side effect).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_create: Option<String>,
    /// The `vm_hash` the VM was created with.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub vm_hash: String,
    /// The `recreate_token` the VM was created under.
    #[serde(default)]
    pub recreate_token: u64,
    /// The `config_hash` last applied by the agent.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub applied_hash: String,
    /// The `restart_token` last carried out.
    #[serde(default)]
    pub restart_token: u64,
    /// The persistent disk's cid, once attached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_cid: Option<String>,
    /// Health observed from heartbeats by the health monitor (absent: not
    /// yet observed, or no VM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<InstanceHealth>,
    /// Process states last reported, by process.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub processes: BTreeMap<String, String>,
    /// When the agent last changed health.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_health_change: Option<DateTime<Utc>>,
    /// Digest of the spec (without `cloudCheck`) that `Ready` was last
    /// reached on, so a cloud-check-only spec change keeps the instance
    /// converged.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub converged_digest: String,
    /// What the last cloud-check scan found, and what was resolved.
    #[serde(default, skip_serializing_if = "InstanceCloudCheckStatus::is_empty")]
    pub cloud_check: InstanceCloudCheckStatus,
}

impl InstanceStatus {
    /// Whether the health monitor found the agent unresponsive.
    pub fn is_unresponsive(&self) -> bool {
        self.health == Some(InstanceHealth::Unresponsive)
    }
}

impl Kind for InstanceSpec {
    const KIND: &'static str = "Instance";
    const PLURAL: &'static str = "instances";
    const SCOPED: bool = true;
    type Status = InstanceStatus;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::vocab::tests::round_trips;

    /// Phases and health values are written as the strings boshd wrote before they were enums.
    #[test]
    fn phases_and_health_keep_their_strings() {
        round_trips(
            InstancePhase::KNOWN,
            &["creating", "created", "updating", "running", "stopped", "detached", "deleting"],
        );
        round_trips(InstanceHealth::KNOWN, &["running", "failing", "stopped", "unresponsive"]);
    }

    /// A status without phase or health writes neither, as before.
    #[test]
    fn absent_phase_and_health_are_left_out() {
        let json = serde_json::to_value(InstanceStatus::default()).unwrap();
        assert!(json.get("phase").is_none() && json.get("health").is_none(), "{json}");
        let s: InstanceStatus =
            serde_json::from_value(serde_json::json!({"phase": "running", "health": "failing"}))
                .unwrap();
        assert_eq!(s.phase, Some(InstancePhase::Running));
        assert_eq!(s.health, Some(InstanceHealth::Failing));
    }
}
