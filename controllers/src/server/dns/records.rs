//! The answer table: every Instance's addresses, indexed by
//! (deployment, group, network), rebuilt whole from the Instance cache on
//! change and read lock-free of etcd on every query.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;

use bosh_api::Object;
use bosh_api::objects::{DesiredState, InstanceHealth, InstancePhase, InstanceSpec};
use bosh_render::canonical;

use super::query::{Criteria, Health, Question, Selector};

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
    /// Its index in the group.
    pub index: u32,
    /// Its AZ's number (`a` criterion), if it has an AZ.
    pub az: Option<u32>,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its health.
    pub state: State,
}

/// (deployment, group, network), canonical.
type GroupKey = (String, String, String);

/// Every answerable address, grouped as names ask for them.
#[derive(Debug, Default)]
pub struct Table {
    groups: HashMap<GroupKey, Vec<Entry>>,
}

impl Table {
    /// Builds the table from every Instance.
    ///
    /// AZs are numbered from 1 in name order over the AZs the instances
    /// use: every replica numbers them alike, but adding an AZ that sorts
    /// before another renumbers it (the director's numbers are a database
    /// sequence; bosh-rs hands out no `a` filter yet).
    pub fn build<'a>(instances: impl IntoIterator<Item = &'a Object<InstanceSpec>>) -> Table {
        let instances: Vec<&Object<InstanceSpec>> = instances.into_iter().collect();
        let azs: BTreeSet<&str> = instances.iter().filter_map(|i| i.spec.az.as_deref()).collect();
        let az_number = |az: &str| azs.iter().position(|a| *a == az).map(|p| p as u32 + 1);
        let mut groups: HashMap<GroupKey, Vec<Entry>> = HashMap::new();
        for i in instances {
            let Some(deployment) = i.metadata.deployment.as_deref() else { continue };
            let state = state_of(i);
            for n in &i.spec.networks {
                let Ok(ip) = n.ip.parse::<Ipv4Addr>() else { continue };
                groups
                    .entry((canonical(deployment), canonical(&i.spec.group), canonical(&n.name)))
                    .or_default()
                    .push(Entry {
                        id: i.spec.id.to_ascii_lowercase(),
                        index: i.spec.index,
                        az: i.spec.az.as_deref().and_then(az_number),
                        ip,
                        state,
                    });
            }
        }
        for entries in groups.values_mut() {
            entries.sort_by_key(|e| e.index);
        }
        Table { groups }
    }

    /// The addresses `q` names, in index order (empty: none).
    pub fn answer(&self, q: &Question) -> Vec<Ipv4Addr> {
        let key = (q.deployment.clone(), q.group.clone(), q.network.clone());
        let Some(entries) = self.groups.get(&key) else { return vec![] };
        match &q.selector {
            Selector::Id(id) => entries.iter().filter(|e| &e.id == id).map(|e| e.ip).collect(),
            Selector::Index(i) => entries.iter().filter(|e| e.index == *i).map(|e| e.ip).collect(),
            Selector::Query(c) => select(entries, c),
        }
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

/// bosh-dns's health filter over the entries the other criteria keep.
fn select(entries: &[Entry], c: &Criteria) -> Vec<Ipv4Addr> {
    if c.unnumbered {
        return vec![];
    }
    let matching: Vec<&Entry> = entries
        .iter()
        .filter(|e| c.azs.is_empty() || e.az.is_some_and(|a| c.azs.contains(&a)))
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
    use bosh_api::objects::InstanceNetwork;

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

    fn ask(t: &Table, name: &str) -> Vec<String> {
        let labels: Vec<&str> = name.split('.').collect();
        t.answer(&parse(&labels).unwrap()).iter().map(|ip| ip.to_string()).collect()
    }

    /// Each selector and health strategy keeps the instances bosh-dns would.
    #[test]
    fn answers_follow_bosh_dns_filters() {
        let t = Table::build(&[
            instance(0, "z1", "10.0.0.10", Some(InstanceHealth::Running)),
            instance(1, "z2", "10.0.0.11", Some(InstanceHealth::Failing)),
            instance(2, "z2", "10.0.0.12", None),
        ]);
        let all = ["10.0.0.10", "10.0.0.11", "10.0.0.12"];
        assert_eq!(ask(&t, "q-s0.web-1.default.hello"), ["10.0.0.10", "10.0.0.12"]);
        assert_eq!(ask(&t, "q-s3.web-1.default.hello"), ["10.0.0.10"]);
        assert_eq!(ask(&t, "q-s1.web-1.default.hello"), ["10.0.0.11"]);
        assert_eq!(ask(&t, "q-s4.web-1.default.hello"), all);
        assert_eq!(ask(&t, "q-a2s4.web-1.default.hello"), ["10.0.0.11", "10.0.0.12"]);
        assert_eq!(ask(&t, "q-i0i2s4.web-1.default.hello"), ["10.0.0.10", "10.0.0.12"]);
        assert_eq!(ask(&t, "q-m1s0.web-1.default.hello"), Vec::<String>::new());
        assert_eq!(ask(&t, "1.web-1.default.hello"), ["10.0.0.11"]);
        assert_eq!(ask(&t, "id-2.web-1.default.hello"), ["10.0.0.12"]);
        assert_eq!(ask(&t, "q-s0.web-1.other.hello"), Vec::<String>::new());
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
}
