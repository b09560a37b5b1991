//! Deployment: a manifest plus the options it was applied with.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Kind;
use super::cloud_check::{CloudCheckSpec, CloudCheckStatus};
use super::instance::DesiredState;
use crate::meta::Condition;

/// An operator's request about some instances (`start`, `stop`, `restart`,
/// `recreate`): a change of desired state kept in the Deployment, so a
/// GitOps write achieves the same as the CLI.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InstanceOverride {
    /// The lifecycle state wanted (absent: `started`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<DesiredState>,
    /// Bumped to ask for a restart of the jobs (stop, then start).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub restart: u64,
    /// Bumped to ask for a new VM.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub recreate: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// How an `apply` asked the change to be carried out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeploymentOptions {
    /// Recreate every VM even if nothing changed (`--recreate`). A record
    /// of the flag: the API carries it out by bumping every recreate
    /// counter in `instances`, so it happens once, not at every apply.
    #[serde(default)]
    pub recreate: bool,
    /// Skip pre-stop and drain (`--skip-drain`).
    #[serde(default)]
    pub skip_drain: bool,
    /// Recreate unresponsive instances as part of the apply (`--fix`).
    #[serde(default)]
    pub fix: bool,
}

/// Spec of a Deployment; `metadata.name` is the manifest's `name`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeploymentSpec {
    /// The interpolated manifest. Loosely typed on purpose: a GitOps tool
    /// may write anything here, and the deployment controller answers a bad
    /// manifest with an `Invalid` condition naming each error's path.
    pub manifest: serde_json::Value,
    /// Names of the cloud configs this deployment uses (default: `default`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cloud_configs: Vec<String>,
    /// How the last apply asked the change to be made.
    #[serde(default)]
    pub options: DeploymentOptions,
    /// Operator requests by instance group name or instance id (the id
    /// wins when both match).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub instances: BTreeMap<String, InstanceOverride>,
    /// The task that carries out the current generation, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<u64>,
    /// Cloud-check requests: scan token and chosen resolutions (`cck`).
    #[serde(default, skip_serializing_if = "CloudCheckSpec::is_empty")]
    pub cloud_check: CloudCheckSpec,
}

/// Status of a Deployment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentStatus {
    /// `Ready` (the summary), `Invalid` (the validator),
    /// `PackagesCompiled` (the compiler), `Meltdown` (the resurrector),
    /// `OrphanedVms` (the orphaned-VM scan); see [`super::ConditionType`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The spec generation this status describes.
    #[serde(default)]
    pub observed_revision: i64,
    /// Instances per instance group that run the current generation.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ready_instances: BTreeMap<String, u32>,
    /// What the last cloud-check scan found, and what was resolved.
    #[serde(default, skip_serializing_if = "is_default")]
    pub cloud_check: CloudCheckStatus,
    /// VMs tagged with this deployment that no instance owns, as the
    /// periodic orphaned-VM scan last found them; each is deleted once its
    /// grace period is over (and dropped from here).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub orphaned_vms: Vec<OrphanedVm>,
    /// The links the current manifest resolves to, one per consumed link
    /// (`boshctl links`): what the instances of the current plan render.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<LinkStatus>,
    /// The digest of the deploy (manifest and instance requests) whose
    /// `post-deploy` scripts ran: BOSH runs them once per deploy, after
    /// every instance converged, and not for a cloud-check scan or a
    /// resurrection, which change neither.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub post_deploy_inputs: String,
}

/// One consumed link and the provider it resolved to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LinkStatus {
    /// The consuming instance group.
    pub instance_group: String,
    /// The consuming job.
    pub job: String,
    /// The link's name in the consumer's spec.
    pub name: String,
    /// The link's type.
    #[serde(rename = "type")]
    pub type_: String,
    /// `group/job/link` of the provider; absent for a manual link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The provider's network the addresses are on (absent for a manual link).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// The provider's deployment when it is another one (a shared link):
    /// what wakes this deployment when that one's instances change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    /// How many provider instances the consumer sees.
    pub instances: u32,
}

/// A VM carrying a deployment's tag that no instance owns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrphanedVm {
    /// The VM's id in the CPI.
    pub vm_cid: String,
    /// For people: what its tags claim it is.
    pub description: String,
    /// When a scan first found it owned by no instance.
    pub since: DateTime<Utc>,
    /// When it is deleted, if still owned by no instance then.
    pub delete_after: DateTime<Utc>,
}

fn is_default(s: &CloudCheckStatus) -> bool {
    *s == CloudCheckStatus::default()
}

impl Kind for DeploymentSpec {
    const KIND: &'static str = "Deployment";
    const PLURAL: &'static str = "deployments";
    type Status = DeploymentStatus;
}
