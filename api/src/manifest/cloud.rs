//! The cloud config: everything IaaS-shaped that manifests refer to by name.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Properties, deployment::VmResources};

/// A cloud config document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CloudConfig {
    /// Availability zones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub azs: Vec<Az>,
    /// VM types instance groups choose by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vm_types: Vec<NamedCloudProperties>,
    /// Extra cloud properties merged into a VM's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vm_extensions: Vec<NamedCloudProperties>,
    /// Persistent disk types.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disk_types: Vec<DiskType>,
    /// Networks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<Network>,
    /// Where and how packages are compiled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compilation: Option<Compilation>,
}

/// An availability zone.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Az {
    /// The AZ's name.
    pub name: String,
    /// The CPI (from the CPI config) that serves this AZ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpi: Option<String>,
    /// IaaS-specific placement.
    #[serde(default, skip_serializing_if = "Properties::is_empty")]
    pub cloud_properties: Properties,
}

/// A VM type or VM extension: a name for a bag of IaaS-specific properties.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NamedCloudProperties {
    /// The name manifests refer to.
    pub name: String,
    /// IaaS-specific properties.
    #[serde(default, skip_serializing_if = "Properties::is_empty")]
    pub cloud_properties: Properties,
}

/// A persistent disk type.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DiskType {
    /// The name manifests refer to.
    pub name: String,
    /// Size in MB.
    pub disk_size: u64,
    /// IaaS-specific properties.
    #[serde(default, skip_serializing_if = "Properties::is_empty")]
    pub cloud_properties: Properties,
}

/// Who hands out a network's addresses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NetworkType {
    /// BOSH allocates IPs from the subnets (the default).
    #[default]
    Manual,
    /// The IaaS assigns IPs (DHCP); BOSH learns them from the agent.
    Dynamic,
    /// Public/elastic IPs, given as `static_ips` in the manifest.
    Vip,
}

/// A network. One struct for all types, as in BOSH: `type` decides which keys matter.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// The name manifests refer to.
    pub name: String,
    /// `manual` (default), `dynamic` or `vip`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<NetworkType>,
    /// Subnets (required for manual networks).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subnets: Vec<Subnet>,
    /// DNS servers (dynamic networks without subnets).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    /// IaaS-specific properties (dynamic and vip networks).
    #[serde(default, skip_serializing_if = "Properties::is_empty")]
    pub cloud_properties: Properties,
}

impl Network {
    /// The network's type, `manual` unless it says otherwise.
    pub fn network_type(&self) -> NetworkType {
        self.type_.unwrap_or_default()
    }
}

/// A subnet of a network.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Subnet {
    /// CIDR, e.g. `10.0.0.0/24` (required on manual networks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<String>,
    /// The default gateway (required on manual networks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// DNS servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    /// IPs BOSH must never hand out (`a.b.c.d`, `a - b` or CIDR each).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reserved: Vec<String>,
    /// IPs kept for manifests' `static_ips`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub r#static: Vec<String>,
    /// The one AZ this subnet is in (or give `azs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub az: Option<String>,
    /// The AZs this subnet spans.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub azs: Vec<String>,
    /// IaaS-specific properties (e.g. the IaaS network name).
    #[serde(default, skip_serializing_if = "Properties::is_empty")]
    pub cloud_properties: Properties,
}

impl Subnet {
    /// The AZs this subnet is in, whichever of `az` / `azs` gave them.
    pub fn az_names(&self) -> Vec<&str> {
        self.az.iter().map(String::as_str).chain(self.azs.iter().map(String::as_str)).collect()
    }
}

/// Where packages are compiled.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Compilation {
    /// How many compile VMs run at once.
    pub workers: u32,
    /// The AZ compile VMs go in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub az: Option<String>,
    /// VM type of compile VMs (or give `vm_resources`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_type: Option<String>,
    /// Sizing of compile VMs (instead of `vm_type`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_resources: Option<VmResources>,
    /// The network compile VMs join.
    pub network: String,
    /// Keep compile VMs between packages instead of one VM per package.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reuse_compilation_vms: Option<bool>,
    /// Orphan compile VMs instead of deleting them (for debugging).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orphan_workers: Option<bool>,
    /// Agent and VM settings of compile VMs.
    #[serde(default, skip_serializing_if = "Properties::is_empty")]
    pub env: Properties,
    /// Legacy IaaS-specific properties (pre vm_type).
    #[serde(default, skip_serializing_if = "Properties::is_empty")]
    pub cloud_properties: Properties,
}
