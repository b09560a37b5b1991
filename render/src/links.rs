//! The links a job consumes, as its templates receive them.
//!
//! Why typed: `boshctl render --links` reads them from a file a person
//! writes, and the director will build them from its link resolution; both
//! hand the renderer this one shape, and a misspelt key is refused where it
//! is read rather than being a silent `nil` in a template.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One consumed link: the provider's instances and properties, and where
/// its address comes from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    /// The provider's instances.
    #[serde(default)]
    pub instances: Vec<LinkInstance>,
    /// The provider's properties (those its spec lists for the link).
    #[serde(default)]
    pub properties: Value,
    /// A manual link's address: `link(..).address` returns it as is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The providing instance group: with [`Link::default_network`] and
    /// [`Link::deployment_name`], `link(..).address` is the BOSH DNS group
    /// query `q-s0.<group>.<network>.<deployment>.<domain>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_group: Option<String>,
    /// The provider's network the address is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_network: Option<String>,
    /// The provider's deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_name: Option<String>,
    /// The DNS root domain (`bosh` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// The director's AZ numbers (its `az_hash`), by which
    /// `link(..).address(azs: [...])` filters (`a<number>`); an AZ not in
    /// it is an error, as in BOSH.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub az_numbers: BTreeMap<String, u32>,
    /// `features.use_short_dns_addresses`: `link(..).address` is the short
    /// form `q-<filters>.q-g<group_number>.<domain>`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub use_short_dns_addresses: bool,
    /// The providing group's number (short addresses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_number: Option<u32>,
    /// The default network's number (short addresses: `n<number>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_number: Option<u32>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// One instance of a link's provider.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkInstance {
    /// Its instance group.
    #[serde(default)]
    pub name: Option<String>,
    /// Its index.
    #[serde(default)]
    pub index: Option<u32>,
    /// Its UUID.
    #[serde(default)]
    pub id: Option<String>,
    /// Its AZ.
    #[serde(default)]
    pub az: Option<String>,
    /// Its address (IP or DNS name).
    #[serde(default)]
    pub address: Option<String>,
    /// Whether it is its group's bootstrap instance.
    #[serde(default)]
    pub bootstrap: bool,
}
