//! The answer table: every Instance's addresses, indexed by
//! (deployment, group, network) and by group number, with the director's
//! numbers (`DnsNumbers`) and the runtime configs' aliases; rebuilt whole
//! on change and read lock-free of etcd on every query.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;

use bosh_api::Object;
use bosh_api::manifest::{AliasTarget, DnsAlias};
use bosh_api::objects::{
    ConfigSpec, ConfigType, DesiredState, DnsNumbersSpec, GroupType, InstanceHealth, InstancePhase,
    InstanceSpec,
};
use bosh_render::canonical;

use super::query::{Criteria, Health, Question, Scope, Selector};

/// What the health monitor last said of an instance, as bosh-dns's
/// health filter sorts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Heartbeats say its jobs run.
    Healthy,
    /// Failing, stopped, unresponsive, or no VM on purpose.
    Unhealthy,
    /// Not yet observed.
    Unchecked,
}

/// One instance's address on one network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its UUID, lower case.
    pub id: String,
    /// Its number (`m` criterion), once the director gave it one.
    pub number: Option<u32>,
    /// Its index in the group.
    pub index: u32,
    /// Its AZ's number (`a` criterion), if it has an AZ with a number.
    pub az: Option<u32>,
    /// The network's number (`n` criterion).
    pub network: Option<u32>,
    /// The numbers of its group and of the link groups it provides
    /// (`g` criterion).
    pub groups: Vec<u32>,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its health.
    pub state: State,
}

/// (deployment, group, network), canonical.
type GroupKey = (String, String, String);

/// Alias domains (lower case, no final dot) and the groups each answers.
pub type Aliases = BTreeMap<String, Vec<AliasTarget>>;

/// The aliases of every runtime config, in name order; a domain several
/// configs alias answers all their targets. A config whose `aliases:` does
/// not read is skipped (its validator reports it; the others still answer).
pub fn aliases_of<'a>(configs: impl IntoIterator<Item = &'a Object<ConfigSpec>>) -> Aliases {
    let mut configs: Vec<&Object<ConfigSpec>> =
        configs.into_iter().filter(|c| c.spec.type_ == ConfigType::Runtime).collect();
    configs.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut out = Aliases::new();
    for c in configs {
        let Some(v) = c.spec.content.get("aliases") else { continue };
        match serde_json::from_value::<BTreeMap<String, DnsAlias>>(v.clone()) {
            Ok(aliases) => {
                for (domain, a) in aliases {
                    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
                    out.entry(domain).or_default().extend(a.targets);
                }
            }
            Err(error) => {
                tracing::warn!(config = %c.metadata.name, %error, "DNS aliases skipped")
            }
        }
    }
    out
}

/// Every answerable address, grouped as names ask for them.
#[derive(Debug, Default)]
pub struct Table {
    groups: HashMap<GroupKey, Vec<Entry>>,
    numbered: HashMap<u32, Vec<GroupKey>>,
    aliases: Aliases,
}

impl Table {
    /// The table of `instances` with no numbers and no aliases (long names
    /// without `a`, `m`, `n`, `g` filters only).
    pub fn build<'a>(instances: impl IntoIterator<Item = &'a Object<InstanceSpec>>) -> Table {
        Table::build_with(instances, &DnsNumbersSpec::default(), Aliases::new())
    }

    /// Builds the table from every Instance, the director's numbers and
    /// the aliases. An instance, AZ, network or group the director has not
    /// numbered yet is still answered by long names; filters by number
    /// just do not match it.
    pub fn build_with<'a>(
        instances: impl IntoIterator<Item = &'a Object<InstanceSpec>>,
        numbers: &DnsNumbersSpec,
        aliases: Aliases,
    ) -> Table {
        let mut groups: HashMap<GroupKey, Vec<Entry>> = HashMap::new();
        let mut numbered: HashMap<u32, Vec<GroupKey>> = HashMap::new();
        // Link groups (`use_link_dns_names`) by their providing group.
        let mut links: HashMap<(&str, &str), Vec<u32>> = HashMap::new();
        for g in numbers.groups.iter().filter(|g| g.type_ == GroupType::Link) {
            if let Some(ig) = &g.instance_group {
                links.entry((g.deployment.as_str(), ig.as_str())).or_default().push(g.number);
            }
        }
        for i in instances {
            let Some(deployment) = i.metadata.deployment.as_deref() else { continue };
            let state = state_of(i);
            let own = numbers.group(deployment, &i.spec.group, GroupType::InstanceGroup);
            let in_groups: Vec<u32> = own
                .into_iter()
                .chain(
                    links.get(&(deployment, i.spec.group.as_str())).into_iter().flatten().copied(),
                )
                .collect();
            for n in &i.spec.networks {
                let Ok(ip) = n.ip.parse::<Ipv4Addr>() else { continue };
                let key = (canonical(deployment), canonical(&i.spec.group), canonical(&n.name));
                for g in &in_groups {
                    let keys = numbered.entry(*g).or_default();
                    if !keys.contains(&key) {
                        keys.push(key.clone());
                    }
                }
                groups.entry(key).or_default().push(Entry {
                    id: i.spec.id.to_ascii_lowercase(),
                    number: numbers.instances.get(&i.spec.id).copied(),
                    index: i.spec.index,
                    az: i.spec.az.as_ref().and_then(|az| numbers.azs.get(az)).copied(),
                    network: numbers.networks.get(&n.name).copied(),
                    groups: in_groups.clone(),
                    ip,
                    state,
                });
            }
        }
        for entries in groups.values_mut() {
            entries.sort_by_key(|e| e.index);
        }
        for keys in numbered.values_mut() {
            keys.sort();
        }
        Table { groups, numbered, aliases }
    }

    /// The addresses `q` names, in index order (empty: none).
    pub fn answer(&self, q: &Question) -> Vec<Ipv4Addr> {
        let entries: Vec<&Entry> = match &q.scope {
            Scope::Named { group, network, deployment } => {
                let key = (deployment.clone(), group.clone(), network.clone());
                self.groups.get(&key).into_iter().flatten().collect()
            }
            Scope::Numbered => {
                let Selector::Query(c) = &q.selector else { return vec![] };
                // Several numbers may name one group (its own and a link
                // group's): each group once.
                let keys: std::collections::BTreeSet<&GroupKey> = c
                    .groups
                    .iter()
                    .flat_map(|g| self.numbered.get(g).into_iter().flatten())
                    .collect();
                keys.into_iter().flat_map(|k| self.groups.get(k).into_iter().flatten()).collect()
            }
        };
        match &q.selector {
            Selector::Id(id) => entries.iter().filter(|e| &e.id == id).map(|e| e.ip).collect(),
            Selector::Index(i) => entries.iter().filter(|e| e.index == *i).map(|e| e.ip).collect(),
            Selector::Query(c) => select(&entries, c),
        }
    }

    /// What an alias name answers: `None` when `name` (lower case, no
    /// final dot) is no alias; else the healthy set of its `*` targets'
    /// groups, or for `<uuid>.<alias>` that instance in its `_` targets'
    /// groups.
    pub fn alias(&self, name: &str) -> Option<Vec<Ipv4Addr>> {
        let group = |t: &AliasTarget| {
            let key =
                (canonical(&t.deployment), canonical(&t.instance_group), canonical(&t.network));
            self.groups.get(&key).into_iter().flatten()
        };
        if let Some(targets) = self.aliases.get(name) {
            let entries: Vec<&Entry> =
                targets.iter().filter(|t| t.query == "*").flat_map(group).collect();
            return Some(select(&entries, &Criteria::any()));
        }
        let (first, rest) = name.split_once('.')?;
        let targets = self.aliases.get(rest)?;
        let underscore: Vec<&AliasTarget> = targets.iter().filter(|t| t.query == "_").collect();
        if underscore.is_empty() {
            return None;
        }
        Some(
            underscore
                .into_iter()
                .flat_map(group)
                .filter(|e| e.id == first)
                .map(|e| e.ip)
                .collect(),
        )
    }

    /// Number of (deployment, group, network) groups.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    /// Whether no instance has an address.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}

/// Whether a numbered attribute passes a filter (empty: any).
fn passes(filter: &[u32], value: Option<u32>) -> bool {
    filter.is_empty() || value.is_some_and(|v| filter.contains(&v))
}

/// bosh-dns's health filter over the entries the other criteria keep.
fn select(entries: &[&Entry], c: &Criteria) -> Vec<Ipv4Addr> {
    let matching: Vec<&Entry> = entries
        .iter()
        .copied()
        .filter(|e| passes(&c.azs, e.az))
        .filter(|e| passes(&c.instances, e.number))
        .filter(|e| passes(&c.networks, e.network))
        .filter(|e| c.groups.is_empty() || e.groups.iter().any(|g| c.groups.contains(g)))
        .filter(|e| c.indexes.is_empty() || c.indexes.contains(&e.index))
        .collect();
    let keep = |want: &dyn Fn(State) -> bool| -> Vec<Ipv4Addr> {
        matching.iter().filter(|e| want(e.state)).map(|e| e.ip).collect()
    };
    match c.health {
        Health::All => keep(&|_| true),
        Health::Healthy => keep(&|s| s == State::Healthy),
        Health::Unhealthy => keep(&|s| s == State::Unhealthy),
        Health::Smart => {
            let maybe = keep(&|s| s != State::Unhealthy);
            if maybe.is_empty() { keep(&|_| true) } else { maybe }
        }
    }
}

/// An instance's health as the health monitor wrote it; no VM on purpose
/// (`stop --hard`, being deleted) is unhealthy whatever was last heard.
fn state_of(i: &Object<InstanceSpec>) -> State {
    let gone = i.spec.desired_state == DesiredState::Detached
        || matches!(i.status.phase, Some(InstancePhase::Detached | InstancePhase::Deleting))
        || i.metadata.deletion_timestamp.is_some();
    if gone {
        return State::Unhealthy;
    }
    match i.status.health {
        Some(InstanceHealth::Running) => State::Healthy,
        Some(_) => State::Unhealthy,
        None => State::Unchecked,
    }
}

/// The current table, swapped whole on change; readers clone the `Arc`.
#[derive(Debug, Clone, Default)]
pub struct Records(Arc<std::sync::RwLock<Arc<Table>>>);

impl Records {
    /// The table now.
    pub fn current(&self) -> Arc<Table> {
        self.0.read().unwrap().clone()
    }

    /// Replaces the table.
    pub fn set(&self, table: Table) {
        *self.0.write().unwrap() = Arc::new(table);
    }
}

#[cfg(test)]
mod tests {
    use bosh_api::meta::ObjectMeta;
    use bosh_api::objects::{GroupNumber, InstanceNetwork, Wanted};
    use serde_json::json;

    use super::*;
    use crate::server::dns::query::parse;

    fn instance(
        index: u32,
        az: &str,
        ip: &str,
        health: Option<InstanceHealth>,
    ) -> Object<InstanceSpec> {
        let spec = InstanceSpec {
            group: "web_1".into(),
            id: format!("id-{index}"),
            index,
            az: Some(az.into()),
            networks: vec![InstanceNetwork {
                name: "default".into(),
                ip: ip.into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let meta = ObjectMeta {
            name: format!("web_1/id-{index}"),
            deployment: Some("Hello".into()),
            ..Default::default()
        };
        let mut o = Object::new(meta, spec);
        o.status.health = health;
        o
    }

    /// The director's numbers for the fixture: z1 1, z2 2; network
    /// `default` 1 (and `other` 2); group web_1 of Hello 7; instances
    /// id-0..id-2 numbered 10..12.
    fn numbers() -> DnsNumbersSpec {
        let mut n = DnsNumbersSpec::default();
        n.assign(&Wanted {
            azs: vec!["z1".into(), "z2".into()],
            networks: vec!["default".into(), "other".into()],
            ..Default::default()
        });
        n.groups.push(GroupNumber {
            deployment: "Hello".into(),
            name: "web_1".into(),
            type_: GroupType::InstanceGroup,
            number: 7,
            instance_group: None,
        });
        n.groups.push(GroupNumber {
            deployment: "Hello".into(),
            name: "conn-db".into(),
            type_: GroupType::Link,
            number: 9,
            instance_group: Some("web_1".into()),
        });
        for i in 0..3 {
            n.instances.insert(format!("id-{i}"), 10 + i);
        }
        n
    }

    fn ask(t: &Table, name: &str) -> Vec<String> {
        let labels: Vec<&str> = name.split('.').collect();
        t.answer(&parse(&labels).unwrap()).iter().map(|ip| ip.to_string()).collect()
    }

    fn three() -> Vec<Object<InstanceSpec>> {
        vec![
            instance(0, "z1", "10.0.0.10", Some(InstanceHealth::Running)),
            instance(1, "z2", "10.0.0.11", Some(InstanceHealth::Failing)),
            instance(2, "z2", "10.0.0.12", None),
        ]
    }

    /// Each selector and health strategy keeps the instances bosh-dns
    /// would, long and short names alike.
    #[test]
    fn answers_follow_bosh_dns_filters() {
        let t = Table::build_with(&three(), &numbers(), Aliases::new());
        let all = ["10.0.0.10", "10.0.0.11", "10.0.0.12"];
        let none = Vec::<String>::new();
        let cases: &[(&str, &[&str])] = &[
            ("q-s0.web-1.default.hello", &["10.0.0.10", "10.0.0.12"]),
            ("q-s3.web-1.default.hello", &["10.0.0.10"]),
            ("q-s1.web-1.default.hello", &["10.0.0.11"]),
            ("q-s4.web-1.default.hello", &all),
            ("q-a2s4.web-1.default.hello", &["10.0.0.11", "10.0.0.12"]),
            ("q-a1a2s4.web-1.default.hello", &all),
            ("q-a3s4.web-1.default.hello", &[]),
            ("q-i0i2s4.web-1.default.hello", &["10.0.0.10", "10.0.0.12"]),
            ("q-m11s0.web-1.default.hello", &["10.0.0.11"]),
            ("q-m1s0.web-1.default.hello", &[]),
            ("q-n1s4.web-1.default.hello", &all),
            ("q-n2s4.web-1.default.hello", &[]),
            ("q-g7s4.web-1.default.hello", &all),
            ("1.web-1.default.hello", &["10.0.0.11"]),
            ("id-2.web-1.default.hello", &["10.0.0.12"]),
            ("q-s0.web-1.other.hello", &[]),
            // Short names.
            ("q-m12n1s0.q-g7", &["10.0.0.12"]),
            ("q-m10n1s0.q-g7", &["10.0.0.10"]),
            ("q-n1s0.q-g7", &["10.0.0.10", "10.0.0.12"]),
            ("q-s0.q-g7", &["10.0.0.10", "10.0.0.12"]),
            ("q-s4.q-g7", &all),
            ("q-a2s0.q-g7", &["10.0.0.12"]),
            ("q-a2s1.q-g7", &["10.0.0.11"]),
            ("q-n2s0.q-g7", &[]),
            ("q-s0.q-g8", &[]),
            // A link group (`use_link_dns_names`) answers its provider's instances.
            ("q-m12n1s0.q-g9", &["10.0.0.12"]),
            ("q-n1s0.q-g9", &["10.0.0.10", "10.0.0.12"]),
            ("q-s4.q-g7g9", &all),
            ("q-m10n1s0.q-g8", &[]),
        ];
        for (name, want) in cases {
            assert_eq!(ask(&t, name), *want, "{name}");
        }
        // Without numbers, the numbered filters match nothing and long
        // names still answer.
        let bare = Table::build(&three());
        assert_eq!(ask(&bare, "q-a1s4.web-1.default.hello"), none);
        assert_eq!(ask(&bare, "q-s0.q-g7"), none);
        assert_eq!(ask(&bare, "q-s4.web-1.default.hello"), all);
    }

    /// The smart strategy answers every instance rather than none when none is healthy.
    #[test]
    fn smart_strategy_falls_back_to_all_when_none_is_healthy() {
        let t = Table::build(&[
            instance(0, "z1", "10.0.0.10", Some(InstanceHealth::Unresponsive)),
            instance(1, "z1", "10.0.0.11", Some(InstanceHealth::Stopped)),
        ]);
        assert_eq!(ask(&t, "q-s0.web-1.default.hello"), ["10.0.0.10", "10.0.0.11"]);
        assert_eq!(ask(&t, "q-s3.web-1.default.hello"), Vec::<String>::new());
    }

    fn runtime(name: &str, content: serde_json::Value) -> Object<ConfigSpec> {
        Object::new(
            ObjectMeta::named(format!("runtime/{name}")),
            ConfigSpec { type_: ConfigType::Runtime, content },
        )
    }

    /// Alias names answer their targets' groups (`*`: the healthy set;
    /// `_`: `<uuid>.<alias>` one instance); other names are no alias; a
    /// config whose aliases do not read is skipped, the others answer.
    #[test]
    fn aliases_answer_their_targets() {
        let target = |q: &str, net: &str| json!({"query": q, "instance_group": "web_1", "deployment": "Hello", "network": net});
        let configs = [
            runtime(
                "a",
                json!({"aliases": {"Web.Internal.": {"targets": [target("*", "default")]}}}),
            ),
            runtime(
                "b",
                json!({"aliases": {"each.internal": {"targets": [target("_", "default")]},
                                            "web.internal": {"targets": [target("*", "other")]}}}),
            ),
            runtime("c", json!({"aliases": {"bad": {"targets": "no"}}})),
            Object::new(
                ObjectMeta::named("cloud/x"),
                ConfigSpec {
                    type_: ConfigType::Cloud,
                    content: json!({"aliases": {"cloud.x": {"targets": [target("*", "default")]}}}),
                },
            ),
        ];
        let aliases = aliases_of(&configs);
        assert_eq!(aliases.keys().collect::<Vec<_>>(), ["each.internal", "web.internal"]);
        assert_eq!(aliases["web.internal"].len(), 2, "both configs' targets");
        let t = Table::build_with(&three(), &numbers(), aliases);
        let ips = |v: Option<Vec<Ipv4Addr>>| {
            v.map(|v| v.iter().map(|i| i.to_string()).collect::<Vec<_>>())
        };
        assert_eq!(
            ips(t.alias("web.internal")),
            Some(vec!["10.0.0.10".into(), "10.0.0.12".into()])
        );
        assert_eq!(ips(t.alias("id-1.each.internal")), Some(vec!["10.0.0.11".into()]));
        assert_eq!(ips(t.alias("id-9.each.internal")), Some(vec![]));
        assert_eq!(ips(t.alias("each.internal")), Some(vec![]), "the alias itself, no `*` target");
        assert_eq!(t.alias("id-1.web.internal"), None, "no `_` target");
        assert_eq!(t.alias("cloud.x"), None, "only runtime configs alias");
        assert_eq!(t.alias("other.internal"), None);
    }
}
