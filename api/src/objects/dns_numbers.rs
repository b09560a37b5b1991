//! DnsNumbers: the numbers BOSH DNS names encode, assigned once and never
//! reused (the director's `local_dns_encoded_azs`, `_networks`, `_groups`
//! tables and each instance's numeric id).
//!
//! Why numbers at all: a short name (`q-m3n1s0.q-g7.bosh`) or an AZ
//! filter (`q-a2s0.…`) carries numbers, not names, and a name handed to a
//! template must mean the same instances for as long as it is rendered
//! there. So a number, once given, keeps its meaning: it is never handed
//! to another AZ, network, group or instance, even after the first one is
//! gone (the `last` high-water marks).
//!
//! One object, [`DNS_NUMBERS_NAME`], holds every table; the deployment
//! controller adds what a plan names before rendering, with the store's
//! compare-and-swap (two replicas never both assign a number), and every
//! replica's DNS server reads it from a watch.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ConditionsOnly, Kind};

/// The name of the one DnsNumbers object.
pub const DNS_NUMBERS_NAME: &str = "default";

/// What a group number names (BOSH's `LocalDnsEncodedGroup` types).
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum GroupType {
    /// An instance group.
    #[default]
    InstanceGroup,
    /// A link provider (`<link name>-<link type>`, `use_link_dns_names`).
    Link,
}

/// One numbered group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GroupNumber {
    /// The deployment.
    pub deployment: String,
    /// The instance group's (or link group's) name, as in the manifest.
    pub name: String,
    /// What the name names.
    #[serde(default, rename = "type")]
    pub type_: GroupType,
    /// Its number (`g` criterion, `q-g<n>` label).
    pub number: u32,
    /// For a link group: the instance group that provides the link now
    /// (its instances answer the link group's names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_group: Option<String>,
}

/// The highest number ever given, per table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LastNumbers {
    /// AZs.
    #[serde(default)]
    pub az: u32,
    /// Networks.
    #[serde(default)]
    pub network: u32,
    /// Groups.
    #[serde(default)]
    pub group: u32,
    /// Instances.
    #[serde(default)]
    pub instance: u32,
}

/// Spec of DnsNumbers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DnsNumbersSpec {
    /// AZ name → number (`a` criterion).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub azs: BTreeMap<String, u32>,
    /// Network name → number (`n` criterion).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub networks: BTreeMap<String, u32>,
    /// (deployment, group) → number (`g` criterion).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<GroupNumber>,
    /// Instance UUID → number (`m` criterion).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub instances: BTreeMap<String, u32>,
    /// High-water marks: the next number of a table is one above.
    #[serde(default)]
    pub last: LastNumbers,
}

/// What a plan needs numbered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wanted {
    /// AZ names.
    pub azs: Vec<String>,
    /// Network names.
    pub networks: Vec<String>,
    /// (deployment, name, type) of groups.
    pub groups: Vec<(String, String, GroupType)>,
    /// Instance UUIDs.
    pub instances: Vec<String>,
    /// (deployment, `<link name>-<link type>`, providing instance group)
    /// of link providers (`use_link_dns_names`).
    pub links: Vec<(String, String, String)>,
}

impl DnsNumbersSpec {
    /// The number of group `name` of `deployment`.
    pub fn group(&self, deployment: &str, name: &str, type_: GroupType) -> Option<u32> {
        self.groups
            .iter()
            .find(|g| g.deployment == deployment && g.name == name && g.type_ == type_)
            .map(|g| g.number)
    }

    /// Whether everything in `w` has a number.
    pub fn covers(&self, w: &Wanted) -> bool {
        w.azs.iter().all(|a| self.azs.contains_key(a))
            && w.networks.iter().all(|n| self.networks.contains_key(n))
            && w.groups.iter().all(|(d, n, t)| self.group(d, n, *t).is_some())
            && w.instances.iter().all(|i| self.instances.contains_key(i))
            && w.links.iter().all(|(d, n, ig)| self.link_provider(d, n) == Some(ig))
    }

    /// The instance group providing link group `name` of `deployment`.
    pub fn link_provider(&self, deployment: &str, name: &str) -> Option<&String> {
        self.groups
            .iter()
            .find(|g| g.deployment == deployment && g.name == name && g.type_ == GroupType::Link)
            .and_then(|g| g.instance_group.as_ref())
    }

    /// Numbers what `w` names and lacks a number, each from one above its
    /// table's high-water mark, and records which instance group provides
    /// each link group. Returns whether anything changed.
    pub fn assign(&mut self, w: &Wanted) -> bool {
        fn add(map: &mut BTreeMap<String, u32>, last: &mut u32, key: &str) -> bool {
            if map.contains_key(key) {
                return false;
            }
            *last += 1;
            map.insert(key.to_string(), *last);
            true
        }
        let mut added = false;
        for a in &w.azs {
            added |= add(&mut self.azs, &mut self.last.az, a);
        }
        for n in &w.networks {
            added |= add(&mut self.networks, &mut self.last.network, n);
        }
        for i in &w.instances {
            added |= add(&mut self.instances, &mut self.last.instance, i);
        }
        for (d, n, t) in &w.groups {
            if self.group(d, n, *t).is_none() {
                self.last.group += 1;
                self.groups.push(GroupNumber {
                    deployment: d.clone(),
                    name: n.clone(),
                    type_: *t,
                    number: self.last.group,
                    instance_group: None,
                });
                added = true;
            }
        }
        for (d, n, ig) in &w.links {
            let found = self
                .groups
                .iter_mut()
                .find(|g| &g.deployment == d && &g.name == n && g.type_ == GroupType::Link);
            match found {
                // The number stays; the provider may move to another group.
                Some(g) if g.instance_group.as_ref() == Some(ig) => {}
                Some(g) => {
                    g.instance_group = Some(ig.clone());
                    added = true;
                }
                None => {
                    self.last.group += 1;
                    self.groups.push(GroupNumber {
                        deployment: d.clone(),
                        name: n.clone(),
                        type_: GroupType::Link,
                        number: self.last.group,
                        instance_group: Some(ig.clone()),
                    });
                    added = true;
                }
            }
        }
        added
    }
}

/// Status of DnsNumbers (unused: the spec is the record).
pub type DnsNumbersStatus = ConditionsOnly;

impl Kind for DnsNumbersSpec {
    const KIND: &'static str = "DnsNumbers";
    const PLURAL: &'static str = "dnsnumbers";
    type Status = DnsNumbersStatus;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted(azs: &[&str], instances: &[&str]) -> Wanted {
        Wanted {
            azs: azs.iter().map(|s| s.to_string()).collect(),
            networks: vec!["default".into()],
            groups: vec![("d".into(), "web".into(), GroupType::InstanceGroup)],
            instances: instances.iter().map(|s| s.to_string()).collect(),
            links: vec![("d".into(), "conn-db".into(), "web".into())],
        }
    }

    /// Numbers start at 1, are kept, and are never handed out again after
    /// their owner is gone.
    #[test]
    fn numbers_are_stable_and_never_reused() {
        let mut n = DnsNumbersSpec::default();
        assert!(n.assign(&wanted(&["z1", "z2"], &["u1", "u2"])));
        assert_eq!((n.azs["z1"], n.azs["z2"]), (1, 2));
        assert_eq!((n.instances["u1"], n.instances["u2"]), (1, 2));
        assert_eq!(n.group("d", "web", GroupType::InstanceGroup), Some(1));
        assert_eq!(n.group("d", "conn-db", GroupType::Link), Some(2));
        assert_eq!(n.link_provider("d", "conn-db").map(String::as_str), Some("web"));
        assert_eq!(n.networks["default"], 1);
        assert!(n.covers(&wanted(&["z2"], &["u1"])));
        assert!(!n.assign(&wanted(&["z2", "z1"], &["u2"])), "nothing new: no write");
        n.instances.remove("u2");
        n.azs.remove("z2");
        assert!(n.assign(&wanted(&["z0"], &["u3"])));
        assert_eq!(n.azs["z0"], 3, "a new AZ sorting first does not renumber the others");
        assert_eq!(n.instances["u3"], 3, "u2's number is not reused");
        assert_eq!(n.azs["z1"], 1);
        assert!(!n.covers(&wanted(&["z9"], &[])));
        let mut moved = wanted(&[], &[]);
        moved.links[0].2 = "api".into();
        assert!(!n.covers(&moved));
        assert!(n.assign(&moved), "the link's provider moved");
        assert_eq!(n.group("d", "conn-db", GroupType::Link), Some(2), "its number stays");
        assert_eq!(n.link_provider("d", "conn-db").map(String::as_str), Some("api"));
    }
}
