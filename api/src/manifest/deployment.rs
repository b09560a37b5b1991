//! The deployment manifest v2 (BOSH-REFERENCE.md §2), as typed structs,
//! addons included (a runtime config is made of the same parts).
//!
//! Every struct denies unknown keys: a typo like `vm_tpye` must be an error,
//! not a silently ignored key that leaves the VM on a default type.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    Properties,
    scalars::{Count, Version, WatchTime},
};

/// A deployment manifest (v2).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The deployment's name, unique per director.
    pub name: String,
    /// Accepted and ignored: BOSH v1 manifests named the director they targeted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub director_uuid: Option<String>,
    /// The releases whose jobs the instance groups use.
    pub releases: Vec<Release>,
    /// Stemcells, referred to by alias from instance groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stemcells: Vec<Stemcell>,
    /// How updates roll out (instance groups may override parts of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<Update>,
    /// The instance groups, deployed in this order.
    #[serde(default)]
    pub instance_groups: Vec<InstanceGroup>,
    /// Credentials and certificates the config server generates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variables: Vec<Variable>,
    /// Opt-in director behaviours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<Features>,
    /// Labels copied onto every VM the deployment creates.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, serde_json::Value>,
    /// Addons scoped to this deployment (same shape as runtime-config addons).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addons: Vec<Addon>,
    /// Legacy global properties, merged under every job's properties.
    #[serde(default, skip_serializing_if = "Properties::is_empty")]
    pub properties: Properties,
}

/// A release used by a deployment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Release {
    /// The release's name.
    pub name: String,
    /// A version or `latest`.
    pub version: Version,
    /// Where to fetch it from if the director lacks it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Digest of the tarball at `url` (`sha256:...` or bare sha1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha1: Option<String>,
    /// For compiled releases: the stemcell they were compiled against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stemcell: Option<ReleaseStemcell>,
}

/// The stemcell a compiled release was built for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseStemcell {
    /// Operating system, e.g. `ubuntu-jammy`.
    pub os: String,
    /// Stemcell version.
    pub version: Version,
}

/// A stemcell, chosen by `os` (preferred) or exact `name`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Stemcell {
    /// The name instance groups use to refer to it.
    pub alias: String,
    /// Operating system, e.g. `ubuntu-jammy` (one of `os` / `name` is required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    /// Full stemcell name (one of `os` / `name` is required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A version or `latest`.
    pub version: Version,
}

/// Rollout policy; every key is optional so instance groups can override parts.
/// The top-level block must set `canaries`, `max_in_flight` and both watch times.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Update {
    /// Instances updated first, alone, before the rest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canaries: Option<Count>,
    /// Instances updated at once after the canaries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<Count>,
    /// How long to wait for a canary's jobs to run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_watch_time: Option<WatchTime>,
    /// How long to wait for other instances' jobs to run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_watch_time: Option<WatchTime>,
    /// Update instance groups one after another (BOSH default: true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<bool>,
    /// Whether a replaced VM is deleted before or after its successor exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_strategy: Option<VmStrategy>,
    /// On a group's first deploy, roll out AZ by AZ or all at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_deploy_az_update_strategy: Option<AzUpdateStrategy>,
}

/// How a VM is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum VmStrategy {
    /// Delete the old VM, then create the new one (BOSH default).
    DeleteCreate,
    /// Create the new VM first, then orphan the old one.
    CreateSwapDelete,
}

/// How a first deploy spreads over AZs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AzUpdateStrategy {
    /// One AZ after another.
    Serial,
    /// All AZs at once.
    Parallel,
}

/// A group of identical instances.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InstanceGroup {
    /// The group's name, unique in the deployment.
    pub name: String,
    /// Jobs colocated on every instance.
    pub jobs: Vec<Job>,
    /// AZs the instances are spread over (names from the cloud config).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub azs: Vec<String>,
    /// How many instances to run.
    pub instances: u32,
    /// VM type from the cloud config (or give `vm_resources`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_type: Option<String>,
    /// Sizing the CPI turns into a VM type (instead of `vm_type`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_resources: Option<VmResources>,
    /// VM extensions from the cloud config, merged into the VM's cloud properties.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vm_extensions: Vec<String>,
    /// Alias of a stemcell in `stemcells`.
    pub stemcell: String,
    /// Networks the instances join.
    pub networks: Vec<NetworkRef>,
    /// Persistent disk size in MB (or give `persistent_disk_type`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_disk: Option<u64>,
    /// Disk type from the cloud config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_disk_type: Option<String>,
    /// Several named persistent disks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub persistent_disks: Vec<PersistentDisk>,
    /// Agent and VM settings (`bosh: {password, ...}`, `persistent_disk_fs`, ...).
    #[serde(default, skip_serializing_if = "Properties::is_empty")]
    pub env: Properties,
    /// Per-group overrides of the top-level `update`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<Update>,
    /// Long-running service (default) or an errand run on demand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<Lifecycle>,
    /// Groups whose instances this group takes over (renames, AZ migration).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub migrated_from: Vec<MigratedFrom>,
    /// Legacy group-level properties, merged under the jobs' properties.
    #[serde(default, skip_serializing_if = "Properties::is_empty")]
    pub properties: Properties,
}

impl InstanceGroup {
    /// The group's lifecycle, `service` unless it says otherwise.
    pub fn lifecycle(&self) -> Lifecycle {
        self.lifecycle.unwrap_or(Lifecycle::Service)
    }
}

/// Whether a group runs all the time or on demand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Lifecycle {
    /// Always running; updated by deploys.
    Service,
    /// Gets VMs only while `run-errand` runs.
    Errand,
}

/// A job from a release, placed on a group's instances.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Job {
    /// The job's name in its release.
    pub name: String,
    /// The release that ships the job.
    pub release: String,
    /// The job's properties.
    #[serde(default, skip_serializing_if = "Properties::is_empty")]
    pub properties: Properties,
    /// Links consumed, by link name (`{from: ..., deployment: ...}` or `nil`).
    #[serde(default, skip_serializing_if = "Properties::is_empty")]
    pub consumes: Properties,
    /// Links provided, by link name (`{as: ..., shared: true}`).
    #[serde(default, skip_serializing_if = "Properties::is_empty")]
    pub provides: Properties,
    /// Links provided that the job's spec does not declare.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub custom_provider_definitions: Vec<CustomProvider>,
}

/// A link a job provides without declaring it in its spec.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomProvider {
    /// The link's name.
    pub name: String,
    /// The link's type.
    #[serde(rename = "type")]
    pub type_: String,
    /// Property names exposed through the link.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub properties: Vec<String>,
}

/// CPU, RAM and disk an instance needs, for CPIs that size VMs themselves.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VmResources {
    /// Number of CPUs.
    pub cpu: u32,
    /// RAM in MB.
    pub ram: u64,
    /// Ephemeral disk in MB.
    pub ephemeral_disk_size: u64,
}

/// A network an instance group joins.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkRef {
    /// Network name from the cloud config.
    pub name: String,
    /// Fixed IPs, one per instance, from the subnets' `static` ranges.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub static_ips: Vec<String>,
    /// Which of the VM's settings (DNS, gateway) come from this network.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub default: Vec<NetworkDefault>,
}

/// A VM setting one network provides when a VM has several.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NetworkDefault {
    /// DNS servers.
    Dns,
    /// The default route.
    Gateway,
    /// The address other instances use to reach this one.
    Addressable,
}

/// One of several named persistent disks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PersistentDisk {
    /// The disk's name, unique in the group.
    pub name: String,
    /// Disk type from the cloud config.
    #[serde(rename = "type")]
    pub type_: String,
}

/// An instance group this one takes instances over from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MigratedFrom {
    /// The old group's name.
    pub name: String,
    /// The AZ the old group's instances were in (for pre-AZ manifests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub az: Option<String>,
}

/// A variable the config server generates (or `interpolate` is given).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Variable {
    /// The name `((placeholders))` use.
    pub name: String,
    /// What to generate.
    #[serde(rename = "type")]
    pub type_: VariableType,
    /// Generation options (`length`, `is_ca`, `common_name`, ...).
    #[serde(default, skip_serializing_if = "Properties::is_empty")]
    pub options: Properties,
    /// Links whose addresses become certificate SANs.
    #[serde(default, skip_serializing_if = "Properties::is_empty")]
    pub consumes: Properties,
    /// Regenerate when options change (`converge`) or never (`no-overwrite`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_mode: Option<UpdateMode>,
}

/// Kinds of generated variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum VariableType {
    /// A random password.
    Password,
    /// An X.509 certificate (`.certificate`, `.private_key`, `.ca`).
    Certificate,
    /// An SSH key pair.
    Ssh,
    /// An RSA key pair.
    Rsa,
    /// A username and password (CredHub).
    User,
    /// An opaque value set by hand (CredHub).
    Value,
    /// A JSON document set by hand (CredHub).
    Json,
}

/// When a variable is regenerated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateMode {
    /// Keep the existing value (BOSH default).
    NoOverwrite,
    /// Regenerate when the options change.
    Converge,
}

/// Opt-in director behaviours.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Features {
    /// Hand out DNS names instead of IPs in links and `spec.address`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_dns_addresses: Option<bool>,
    /// Use short (`q-...`) DNS names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_short_dns_addresses: Option<bool>,
    /// Use link-specific DNS names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_link_dns_names: Option<bool>,
    /// Place new instances in random AZs rather than round-robin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub randomize_az_placement: Option<bool>,
    /// Regenerate variables whose options changed on every deploy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub converge_variables: Option<bool>,
    /// Keep rendered templates on tmpfs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_tmpfs_config: Option<bool>,
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
