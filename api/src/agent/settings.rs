//! Bootstrap settings: everything a new VM's agent needs before it can
//! reach boshd. The local CPI writes them as `settings.json` into the VM
//! directory; an external CPI builds them from `create_vm`'s BOSH-shaped
//! `env` (see [`super::bosh_env`]); boshd also serves them at
//! `/registry/<vm-cid>`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::objects::InstanceNetwork;

/// The agent's bootstrap settings (BOSH's `settings.json`, trimmed to what
/// bosh-rs uses).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The agent's identity; its NATS subjects derive from it.
    pub agent_id: String,
    /// The VM's id in the CPI.
    #[serde(default)]
    pub vm_cid: String,
    /// How to reach NATS, with this agent's own credentials.
    pub mbus: MbusSettings,
    /// Where packages and templates are downloaded from.
    pub blobstore: BlobstoreSettings,
    /// Networks by name.
    #[serde(default)]
    pub networks: BTreeMap<String, NetworkSettings>,
    /// Disks.
    #[serde(default)]
    pub disks: DiskSettings,
    /// The instance group's `env` from the manifest.
    #[serde(default)]
    pub env: serde_json::Value,
    /// Seconds between heartbeats (BOSH: 30).
    #[serde(default = "default_heartbeat")]
    pub heartbeat_interval_secs: u64,
    /// The VM shares the host's root filesystem, accounts and network, and
    /// has only its own `/var/vcap` (the local CPI's process VMs, kept for
    /// scale tests): the agent refuses what would change the host, such as
    /// making ssh users. False on every real VM and container VM.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shares_host: bool,
}

/// BOSH's heartbeat interval, seconds.
pub(super) fn default_heartbeat() -> u64 {
    30
}

/// NATS connection settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MbusSettings {
    /// `nats://host:port`.
    pub url: String,
    /// This agent's NATS user.
    pub user: String,
    /// This agent's NATS password (a generated secret: never logged).
    pub password: String,
}

/// Blobstore settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlobstoreSettings {
    /// `http://host:port` of boshd's blobstore.
    pub url: String,
    /// Bearer token (a generated secret: never logged).
    pub token: String,
    /// Other addresses of the same store (the other boshd replicas, which
    /// share it), tried in order when `url` cannot be reached: a VM keeps
    /// its settings for life, and must outlive the replica that made it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<String>,
}

/// One network's settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSettings {
    /// `manual`, `dynamic` or `vip`.
    #[serde(default, rename = "type")]
    pub type_: String,
    /// The address (for the local CPI, a loopback address the VM binds).
    #[serde(default)]
    pub ip: String,
    /// Netmask.
    #[serde(default)]
    pub netmask: String,
    /// Gateway.
    #[serde(default)]
    pub gateway: String,
    /// DNS servers.
    #[serde(default)]
    pub dns: Vec<String>,
    /// Which defaults (`dns`, `gateway`) this network provides.
    #[serde(default)]
    pub default: Vec<String>,
}

impl From<&InstanceNetwork> for NetworkSettings {
    /// The agent's view of a resolved network: everything but its name
    /// (the key of `networks`) and its cloud properties (the CPI's only).
    fn from(n: &InstanceNetwork) -> NetworkSettings {
        NetworkSettings {
            type_: n.type_.clone(),
            ip: n.ip.clone(),
            netmask: n.netmask.clone(),
            gateway: n.gateway.clone(),
            dns: n.dns.clone(),
            default: n.default.clone(),
        }
    }
}

/// Disks attached to the VM.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskSettings {
    /// Persistent disks: disk cid → where the disk's contents are visible
    /// (the local CPI: a directory outside the VM directory).
    #[serde(default)]
    pub persistent: BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A resolved network becomes the agent's settings entry, field for field.
    #[test]
    fn a_resolved_network_becomes_the_agents_settings_json() {
        let n = InstanceNetwork {
            name: "default".into(),
            type_: "manual".into(),
            ip: "10.0.0.5".into(),
            netmask: "255.255.255.0".into(),
            gateway: "10.0.0.1".into(),
            dns: vec!["8.8.8.8".into()],
            default: vec!["dns".into(), "gateway".into()],
            cloud_properties: serde_json::json!({"subnet": "s-1"}),
        };
        assert_eq!(
            serde_json::to_string(&NetworkSettings::from(&n)).unwrap(),
            r#"{"type":"manual","ip":"10.0.0.5","netmask":"255.255.255.0","gateway":"10.0.0.1","dns":["8.8.8.8"],"default":["dns","gateway"]}"#
        );
        let dynamic =
            InstanceNetwork { name: "d".into(), type_: "dynamic".into(), ..Default::default() };
        assert_eq!(
            serde_json::to_string(&NetworkSettings::from(&dynamic)).unwrap(),
            r#"{"type":"dynamic","ip":"","netmask":"","gateway":"","dns":[],"default":[]}"#
        );
    }
}
