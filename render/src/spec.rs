//! The `spec` templates see, derived from an instance as the director
//! derives it: the address from the default network, a DNS record name per
//! network, placeholders for a dynamic network's unknown address.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// What a dynamic network's address, netmask and gateway read as before
/// the IaaS assigned them (BOSH's placeholder).
const DYNAMIC_PLACEHOLDER: &str = "127.0.0.1";

/// One network of an instance, as its templates see it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkContext {
    /// The instance's IP on it; unknown (`None`, or empty) for a dynamic
    /// network before the IaaS assigned one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// Netmask.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netmask: Option<String>,
    /// Gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Which defaults this network is (`dns`, `gateway`, `addressable`).
    #[serde(default)]
    pub default: Vec<String>,
    /// DNS servers.
    #[serde(default)]
    pub dns: Vec<String>,
    /// `manual`, `dynamic` or `vip`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
}

/// An instance, from which its templates' `spec` is derived (see
/// [`template_spec`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceContext {
    /// Deployment name.
    pub deployment: String,
    /// Instance group name.
    pub name: String,
    /// Index.
    pub index: u32,
    /// UUID.
    pub id: String,
    /// AZ.
    #[serde(default)]
    pub az: Option<String>,
    /// Whether this is the bootstrap instance.
    #[serde(default)]
    pub bootstrap: bool,
    /// The instance's address; when absent, the default network's IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Networks by name, in the manifest's order.
    #[serde(default)]
    pub networks: IndexMap<String, NetworkContext>,
    /// `spec.job`; `{name: <instance group>}` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<Value>,
    /// The root of BOSH DNS names.
    #[serde(default = "default_domain")]
    pub dns_domain_name: String,
    /// Persistent disk size, MB (0: none).
    #[serde(default)]
    pub persistent_disk: u64,
}

impl Default for InstanceContext {
    fn default() -> Self {
        InstanceContext {
            deployment: String::new(),
            name: String::new(),
            index: 0,
            id: String::new(),
            az: None,
            bootstrap: false,
            address: None,
            networks: IndexMap::new(),
            job: None,
            dns_domain_name: default_domain(),
            persistent_disk: 0,
        }
    }
}

fn default_domain() -> String {
    "bosh".to_owned()
}

/// A job's release, as templates see it in `spec.release`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRef {
    /// Release name.
    pub name: String,
    /// Release version.
    pub version: String,
}

impl InstanceContext {
    /// The network whose address is the instance's: the one whose
    /// `default` has `addressable`, else the one with `gateway`, else the
    /// first (BOSH's `network_address`).
    pub fn default_network(&self) -> Option<(&String, &NetworkContext)> {
        let with = |d: &str| self.networks.iter().find(|(_, n)| n.default.iter().any(|x| x == d));
        with("addressable").or_else(|| with("gateway")).or_else(|| self.networks.first())
    }

    /// The default network's IP, with a dynamic network's placeholder.
    pub fn ip(&self) -> Option<String> {
        self.default_network().and_then(|(_, n)| effective(n).ip)
    }
}

/// A network as templates see it: a dynamic network without an address
/// reads `127.0.0.1` for its IP, netmask and gateway; empty strings are
/// unset.
fn effective(n: &NetworkContext) -> NetworkContext {
    let set = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    let mut out = NetworkContext {
        ip: set(&n.ip),
        netmask: set(&n.netmask),
        gateway: set(&n.gateway),
        ..n.clone()
    };
    if out.ip.is_none() && n.type_.as_deref() == Some("dynamic") {
        out.ip = Some(DYNAMIC_PLACEHOLDER.into());
        out.netmask = Some(DYNAMIC_PLACEHOLDER.into());
        out.gateway = Some(DYNAMIC_PLACEHOLDER.into());
    }
    out
}

/// A name as BOSH DNS spells it: lower case, `_` as `-`, only `a-z`, `0-9`
/// and `-` kept (the director's `Canonicalizer`).
pub fn canonical(name: &str) -> String {
    name.to_lowercase()
        .replace('_', "-")
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')
        .collect()
}

/// `<index>.<group>.<network>.<deployment>.<domain>`, BOSH's per-network
/// instance record.
fn dns_record_name(i: &InstanceContext, network: &str) -> String {
    format!(
        "{}.{}.{}.{}.{}",
        i.index,
        canonical(&i.name),
        canonical(network),
        canonical(&i.deployment),
        i.dns_domain_name
    )
}

/// The director's template `spec` of an instance, less what is per job
/// (`properties`, `links`, `release`).
pub fn template_spec(i: &InstanceContext) -> Value {
    let ip = i.ip();
    let networks: Map<String, Value> = i
        .networks
        .iter()
        .map(|(name, n)| {
            let n = effective(n);
            let mut v = serde_json::to_value(&n).expect("a network serializes");
            let m = v.as_object_mut().expect("a network is an object");
            for key in ["ip", "netmask", "gateway"] {
                m.entry(key).or_insert(Value::Null);
            }
            m.insert("dns_record_name".into(), Value::String(dns_record_name(i, name)));
            (name.clone(), v)
        })
        .collect();
    json!({
        "deployment": i.deployment,
        "name": i.name,
        "index": i.index,
        "id": i.id,
        "az": i.az,
        "bootstrap": i.bootstrap,
        "address": i.address.clone().or_else(|| ip.clone()).unwrap_or_default(),
        "ip": ip,
        "networks": networks,
        "job": i.job.clone().unwrap_or_else(|| json!({ "name": i.name })),
        "dns_domain_name": i.dns_domain_name,
        "persistent_disk": i.persistent_disk,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(default: &[&str], type_: &str, ip: Option<&str>) -> NetworkContext {
        NetworkContext {
            ip: ip.map(Into::into),
            netmask: ip.map(|_| "255.255.255.0".into()),
            gateway: ip.map(|_| "10.0.0.1".into()),
            default: default.iter().map(|s| s.to_string()).collect(),
            dns: vec![],
            type_: Some(type_.into()),
        }
    }

    fn instance(networks: &[(&str, NetworkContext)]) -> InstanceContext {
        InstanceContext {
            deployment: "My_Dep".into(),
            name: "Web_Group".into(),
            index: 2,
            id: "uuid".into(),
            networks: networks.iter().map(|(n, c)| (n.to_string(), c.clone())).collect(),
            ..Default::default()
        }
    }

    /// The address comes from the `addressable` network over the `gateway` one.
    #[test]
    fn address_prefers_the_addressable_network_over_the_gateway_one() {
        let i = instance(&[
            ("a", net(&["dns", "gateway"], "manual", Some("10.0.0.5"))),
            ("b", net(&["addressable"], "manual", Some("10.1.0.5"))),
        ]);
        let s = template_spec(&i);
        assert_eq!(s["ip"], "10.1.0.5");
        assert_eq!(s["address"], "10.1.0.5");
        let i = instance(&[
            ("a", net(&[], "manual", Some("10.0.0.5"))),
            ("b", net(&["gateway"], "manual", Some("10.1.0.6"))),
        ]);
        assert_eq!(template_spec(&i)["ip"], "10.1.0.6");
        // An address given is the address; `ip` stays the network's.
        let i = InstanceContext { address: Some("web.example".into()), ..i };
        assert_eq!(
            (&template_spec(&i)["address"], &template_spec(&i)["ip"]),
            (&json!("web.example"), &json!("10.1.0.6"))
        );
    }

    /// Each network gains its record name, canonicalised; a dynamic one
    /// without an address reads the placeholder for ip, netmask and gateway.
    #[test]
    fn networks_gain_record_names_and_dynamic_placeholders() {
        let i = instance(&[("Net_1", net(&["gateway"], "dynamic", None))]);
        let s = template_spec(&i);
        let n = &s["networks"]["Net_1"];
        assert_eq!(n["dns_record_name"], "2.web-group.net-1.my-dep.bosh");
        assert_eq!(
            (&n["ip"], &n["netmask"], &n["gateway"]),
            (&json!("127.0.0.1"), &json!("127.0.0.1"), &json!("127.0.0.1"))
        );
        assert_eq!(s["ip"], "127.0.0.1");
        assert_eq!(s["job"], json!({"name": "Web_Group"}));
        assert_eq!(s["persistent_disk"], 0);
        assert_eq!(s["dns_domain_name"], "bosh");
    }
}
