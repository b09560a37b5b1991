//! Pure planning of a deployment's instances: which instances should exist,
//! with stable ids and indexes, in which AZ, with which addresses, and
//! which existing ones go away.
//!
//! The rules are BOSH's: an instance keeps its id, index, AZ and addresses
//! for as long as the manifest allows; new instances fill the least-loaded
//! AZ first and take the lowest free index; scaling down removes the
//! highest index from the most-loaded AZ; an AZ removed from the group
//! takes its instances with it; `migrated_from` hands a renamed group's
//! instances over unchanged; static IPs stay with the instances that had
//! them; dynamic IPs come from the lowest free address of a subnet serving
//! the instance's AZ, never one in use anywhere else.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use bosh_api::manifest::ip::parse_ip;
use bosh_api::manifest::{CloudConfig, InstanceGroup, Lifecycle, Manifest, NetworkType};

use crate::ipam::Pools;

/// An instance as it exists now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Existing {
    /// Its UUID.
    pub id: String,
    /// The group it belongs to now.
    pub group: String,
    /// Its index in that group.
    pub index: u32,
    /// Its AZ.
    pub az: Option<String>,
    /// Whether it is the group's bootstrap instance.
    pub bootstrap: bool,
    /// Its address on each network.
    pub ips: BTreeMap<String, Ipv4Addr>,
}

/// An instance as it should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// Its UUID (kept, or new).
    pub id: String,
    /// Its group.
    pub group: String,
    /// Its index.
    pub index: u32,
    /// Its AZ.
    pub az: Option<String>,
    /// Whether it is the bootstrap instance.
    pub bootstrap: bool,
    /// Its address on each network (`None`: dynamic network, learnt from the agent).
    pub ips: BTreeMap<String, Option<Ipv4Addr>>,
    /// Whether it exists already.
    pub existing: bool,
}

/// What should change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Every instance that should exist, by group (manifest order), then index.
    pub instances: Vec<Desired>,
    /// Ids of existing instances that should go.
    pub delete: Vec<String>,
}

fn count_by_az(kept: &[Desired]) -> BTreeMap<Option<String>, usize> {
    let mut m = BTreeMap::new();
    for d in kept {
        *m.entry(d.az.clone()).or_insert(0) += 1;
    }
    m
}

/// Places one group's instances (ids, indexes, AZs, bootstrap); addresses come later.
fn place(
    g: &InstanceGroup,
    existing: &[Existing],
    delete: &mut Vec<String>,
    new_id: &mut dyn FnMut() -> String,
) -> Vec<Desired> {
    let azs: Vec<Option<String>> =
        if g.azs.is_empty() { vec![None] } else { g.azs.iter().cloned().map(Some).collect() };
    let mut kept: Vec<Desired> = Vec::new();
    let mut mine: Vec<&Existing> = existing
        .iter()
        .filter(|e| e.group == g.name || g.migrated_from.iter().any(|m| m.name == e.group))
        .collect();
    mine.sort_by_key(|e| (e.group != g.name, e.index));
    let mut taken_index = BTreeSet::new();
    for e in mine {
        // An instance migrated from a pre-AZ group takes the AZ the
        // manifest names for it.
        let az = e.az.clone().or_else(|| {
            g.migrated_from.iter().find(|m| m.name == e.group).and_then(|m| m.az.clone())
        });
        if !azs.contains(&az) {
            delete.push(e.id.clone());
            continue;
        }
        // Indexes are unique per group; a migrated instance whose index
        // collides gets a fresh one below.
        let index = if taken_index.insert(e.index) { Some(e.index) } else { None };
        kept.push(Desired {
            id: e.id.clone(),
            group: g.name.clone(),
            index: index.unwrap_or(u32::MAX),
            az,
            bootstrap: e.bootstrap && e.group == g.name,
            ips: e.ips.iter().map(|(n, ip)| (n.clone(), Some(*ip))).collect(),
            existing: true,
        });
    }
    let want = if g.lifecycle() == Lifecycle::Errand { 0 } else { g.instances as usize };
    // Scale down: the highest index of the most-loaded AZ (the last such AZ
    // in the group's order) goes first.
    while kept.len() > want {
        let counts = count_by_az(&kept);
        let max = counts.values().copied().max().unwrap_or(0);
        let az = azs.iter().rev().find(|a| counts.get(*a).copied().unwrap_or(0) == max).cloned();
        let victim = kept
            .iter()
            .enumerate()
            .filter(|(_, d)| d.az == az.clone().flatten() || az.is_none())
            .max_by_key(|(_, d)| d.index)
            .map(|(i, _)| i)
            .unwrap_or(kept.len() - 1);
        delete.push(kept.remove(victim).id);
    }
    // Scale up: the least-loaded AZ (the first such in the group's order).
    while kept.len() < want {
        let counts = count_by_az(&kept);
        let az = azs.iter().min_by_key(|a| counts.get(*a).copied().unwrap_or(0)).cloned().flatten();
        kept.push(Desired {
            id: new_id(),
            group: g.name.clone(),
            index: u32::MAX,
            az,
            bootstrap: false,
            ips: BTreeMap::new(),
            existing: false,
        });
    }
    // Fresh indexes for new (and colliding migrated) instances: lowest free first.
    let mut used: BTreeSet<u32> = kept.iter().map(|d| d.index).filter(|i| *i != u32::MAX).collect();
    for d in kept.iter_mut().filter(|d| d.index == u32::MAX) {
        let i = (0..).find(|i| !used.contains(i)).expect("a free index exists");
        used.insert(i);
        d.index = i;
    }
    kept.sort_by_key(|d| d.index);
    if !kept.iter().any(|d| d.bootstrap)
        && let Some(first) = kept.first_mut()
    {
        first.bootstrap = true;
    }
    kept
}

/// Plans every group of `manifest` over `cloud`. `outside` holds addresses
/// used outside this deployment (other deployments, compile VMs).
pub fn plan(
    manifest: &Manifest,
    cloud: &CloudConfig,
    existing: &[Existing],
    outside: &BTreeSet<Ipv4Addr>,
    new_id: &mut dyn FnMut() -> String,
) -> Result<Plan, Vec<String>> {
    let mut plan = Plan::default();
    let mut groups: Vec<Vec<Desired>> = Vec::new();
    for g in &manifest.instance_groups {
        groups.push(place(g, existing, &mut plan.delete, new_id));
    }
    // Existing instances of groups no longer in the manifest (and not
    // migrated into one) go.
    for e in existing {
        let claimed = manifest
            .instance_groups
            .iter()
            .any(|g| g.name == e.group || g.migrated_from.iter().any(|m| m.name == e.group));
        if !claimed {
            plan.delete.push(e.id.clone());
        }
    }
    let errors = assign_ips(manifest, cloud, &mut groups, outside);
    if !errors.is_empty() {
        return Err(errors);
    }
    plan.instances = groups.into_iter().flatten().collect();
    plan.delete.sort();
    plan.delete.dedup();
    Ok(plan)
}

/// Gives every instance its addresses, keeping valid ones; returns errors.
fn assign_ips(
    manifest: &Manifest,
    cloud: &CloudConfig,
    groups: &mut [Vec<Desired>],
    outside: &BTreeSet<Ipv4Addr>,
) -> Vec<String> {
    let mut errors = Vec::new();
    let mut in_use: BTreeSet<Ipv4Addr> = outside.clone();
    // Pass 1: keep every address that is still valid, so pass 2 never hands
    // a kept address to someone else.
    for (gi, g) in manifest.instance_groups.iter().enumerate() {
        for nref in &g.networks {
            let Some(net) = cloud.networks.iter().find(|n| n.name == nref.name) else { continue };
            let statics: BTreeSet<Ipv4Addr> =
                nref.static_ips.iter().filter_map(|s| parse_ip(s).ok()).collect();
            for d in groups[gi].iter_mut() {
                let keep = match d.ips.get(&nref.name).copied().flatten() {
                    Some(ip) if net.network_type() == NetworkType::Manual => {
                        let ok = if statics.is_empty() {
                            serves(net, d.az.as_deref()).any(|p| p.is_dynamic(ip))
                        } else {
                            statics.contains(&ip)
                        };
                        (ok && in_use.insert(ip)).then_some(ip)
                    }
                    _ => None,
                };
                d.ips.retain(|n, _| g.networks.iter().any(|r| &r.name == n));
                d.ips.insert(nref.name.clone(), keep);
            }
        }
    }
    // Pass 2: fill the gaps.
    for (gi, g) in manifest.instance_groups.iter().enumerate() {
        for nref in &g.networks {
            let Some(net) = cloud.networks.iter().find(|n| n.name == nref.name) else {
                errors.push(format!("instance_groups[{gi}].networks: no network {:?}", nref.name));
                continue;
            };
            if net.network_type() != NetworkType::Manual {
                continue;
            }
            // Kept static addresses are in use since pass 1; the rest are free.
            let free: Vec<Ipv4Addr> = nref
                .static_ips
                .iter()
                .filter_map(|s| parse_ip(s).ok())
                .filter(|ip| !in_use.contains(ip))
                .collect();
            let mut free_statics = free.into_iter();
            for d in groups[gi].iter_mut() {
                if d.ips.get(&nref.name).copied().flatten().is_some() {
                    continue;
                }
                let ip = if nref.static_ips.is_empty() {
                    serves(net, d.az.as_deref()).find_map(|p| p.next_dynamic(&in_use))
                } else {
                    free_statics.next()
                };
                match ip {
                    Some(ip) => {
                        in_use.insert(ip);
                        d.ips.insert(nref.name.clone(), Some(ip));
                    }
                    None => errors.push(format!(
                        "instance_groups[{gi}] ({}/{}): no free address on network {:?} in az {}",
                        g.name,
                        d.index,
                        nref.name,
                        d.az.as_deref().unwrap_or("(none)")
                    )),
                }
            }
        }
    }
    errors
}

/// The pools of a network's subnets that serve `az` (all, when no AZ).
fn serves<'a>(
    net: &'a bosh_api::manifest::Network,
    az: Option<&'a str>,
) -> impl Iterator<Item = Pools> + 'a {
    net.subnets
        .iter()
        .filter(move |s| {
            az.is_none() || s.az_names().is_empty() || s.az_names().contains(&az.unwrap_or(""))
        })
        .filter_map(|s| Pools::of(s).ok())
}

#[cfg(test)]
mod tests;
