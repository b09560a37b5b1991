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

use crate::libs::ipam::{Allocator, Pools};

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

/// Places one group's instances (ids, indexes, AZs, bootstrap); addresses
/// come later. Linear in the number of instances: per-AZ counts and lists
/// are kept as instances come and go, and fresh indexes come from one
/// forward scan (a manifest asking for 100,000 instances must be answered
/// in moments, not planned for half an hour).
fn place(
    g: &InstanceGroup,
    running_errands: &BTreeSet<String>,
    existing: &[Existing],
    delete: &mut Vec<String>,
    new_id: &mut dyn FnMut(&str, u32) -> String,
) -> Vec<Desired> {
    let azs: Vec<Option<String>> =
        if g.azs.is_empty() { vec![None] } else { g.azs.iter().cloned().map(Some).collect() };
    let mut kept: Vec<Desired> = Vec::new();
    // Positions in `kept` by AZ position, each list sorted by index.
    let mut by_az: Vec<Vec<usize>> = vec![Vec::new(); azs.len()];
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
        let Some(slot) = azs.iter().position(|a| *a == az) else {
            delete.push(e.id.clone());
            continue;
        };
        // Indexes are unique per group; a migrated instance whose index
        // collides gets a fresh one below.
        let index = if taken_index.insert(e.index) { e.index } else { u32::MAX };
        by_az[slot].push(kept.len());
        kept.push(Desired {
            id: e.id.clone(),
            group: g.name.clone(),
            index,
            az,
            bootstrap: e.bootstrap && e.group == g.name,
            ips: e.ips.iter().map(|(n, ip)| (n.clone(), Some(*ip))).collect(),
            existing: true,
        });
    }
    for list in &mut by_az {
        list.sort_by_key(|k| kept[*k].index);
    }
    let mut counts: Vec<usize> = by_az.iter().map(Vec::len).collect();
    // An errand group has instances only while one of its runs needs them
    // (running, or finished with `keep_alive`).
    let want = if g.lifecycle() == Lifecycle::Errand && !running_errands.contains(&g.name) {
        0
    } else {
        g.instances as usize
    };
    let mut total = kept.len();
    let mut removed = vec![false; kept.len()];
    // Scale down: the highest index of the most-loaded AZ (the last such AZ
    // in the group's order) goes first.
    while total > want {
        let max = counts.iter().copied().max().unwrap_or(0);
        let slot = (0..azs.len()).rev().find(|s| counts[*s] == max).unwrap_or(0);
        let victim = by_az[slot].pop().expect("the most-loaded AZ has an instance");
        removed[victim] = true;
        delete.push(kept[victim].id.clone());
        counts[slot] -= 1;
        total -= 1;
    }
    if removed.iter().any(|r| *r) {
        let mut flags = removed.into_iter();
        kept.retain(|_| !flags.next().unwrap_or(false));
    }
    // Scale up: the least-loaded AZ (the first such in the group's order).
    while total < want {
        let min = counts.iter().copied().min().unwrap_or(0);
        let slot = (0..azs.len()).find(|s| counts[*s] == min).unwrap_or(0);
        kept.push(Desired {
            id: String::new(),
            group: g.name.clone(),
            index: u32::MAX,
            az: azs[slot].clone(),
            bootstrap: false,
            ips: BTreeMap::new(),
            existing: false,
        });
        counts[slot] += 1;
        total += 1;
    }
    // Fresh indexes for new (and colliding migrated) instances: lowest free
    // first, in one scan, in the order the instances were placed.
    let used: BTreeSet<u32> = kept.iter().map(|d| d.index).filter(|i| *i != u32::MAX).collect();
    let mut free = (0u32..).filter(|i| !used.contains(i));
    for d in kept.iter_mut().filter(|d| d.index == u32::MAX) {
        d.index = free.next().expect("a free index exists");
        if d.id.is_empty() {
            d.id = new_id(&g.name, d.index);
        }
    }
    kept.sort_by_key(|d| d.index);
    if !kept.iter().any(|d| d.bootstrap)
        && let Some(first) = kept.first_mut()
    {
        first.bootstrap = true;
    }
    kept
}

/// Plans every group of `manifest` over `cloud`, errand groups without
/// instances. `outside` holds addresses used outside this deployment
/// (other deployments, compile VMs); `new_id(group, index)` names a new
/// instance.
pub fn plan(
    manifest: &Manifest,
    cloud: &CloudConfig,
    existing: &[Existing],
    outside: &BTreeSet<Ipv4Addr>,
    new_id: &mut dyn FnMut(&str, u32) -> String,
) -> Result<Plan, Vec<String>> {
    plan_with_errands(manifest, cloud, &BTreeSet::new(), existing, outside, new_id)
}

/// [`plan`], with the errand groups named in `running_errands` given their
/// instances (see [`crate::reconcilers::errand::groups_wanting_instances`]).
pub fn plan_with_errands(
    manifest: &Manifest,
    cloud: &CloudConfig,
    running_errands: &BTreeSet<String>,
    existing: &[Existing],
    outside: &BTreeSet<Ipv4Addr>,
    new_id: &mut dyn FnMut(&str, u32) -> String,
) -> Result<Plan, Vec<String>> {
    let mut plan = Plan::default();
    let mut groups: Vec<Vec<Desired>> = Vec::new();
    for g in &manifest.instance_groups {
        groups.push(place(g, running_errands, existing, &mut plan.delete, new_id));
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
            let pools: Vec<(Vec<String>, Pools)> = net
                .subnets
                .iter()
                .filter_map(|s| {
                    let azs = s.az_names().into_iter().map(str::to_string).collect();
                    Pools::of(s).ok().map(|p| (azs, p))
                })
                .collect();
            for d in groups[gi].iter_mut() {
                let keep = match d.ips.get(&nref.name).copied().flatten() {
                    Some(ip) if net.network_type() == NetworkType::Manual => {
                        let ok = if statics.is_empty() {
                            pools
                                .iter()
                                .filter(|(azs, _)| serves_az(azs, d.az.as_deref()))
                                .any(|(_, p)| p.is_dynamic(ip))
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
    // Pass 2: fill the gaps. One allocator per subnet for the whole plan;
    // a group that runs out is reported once per network and AZ with what
    // it needs and what was free, not once per instance.
    let mut allocators: BTreeMap<String, Vec<Subnet>> = BTreeMap::new();
    for (gi, g) in manifest.instance_groups.iter().enumerate() {
        for nref in &g.networks {
            let Some(net) = cloud.networks.iter().find(|n| n.name == nref.name) else {
                errors.push(format!("instance_groups[{gi}].networks: no network {:?}", nref.name));
                continue;
            };
            if net.network_type() != NetworkType::Manual {
                continue;
            }
            let subnets = allocators.entry(net.name.clone()).or_insert_with(|| {
                net.subnets
                    .iter()
                    .filter_map(|s| {
                        Some(Subnet {
                            azs: s.az_names().into_iter().map(str::to_string).collect(),
                            range: s.range.clone().unwrap_or_default(),
                            allocator: Allocator::new(Pools::of(s).ok()?),
                        })
                    })
                    .collect()
            });
            // Kept static addresses are in use since pass 1; the rest are free.
            let free: Vec<Ipv4Addr> = nref
                .static_ips
                .iter()
                .filter_map(|s| parse_ip(s).ok())
                .filter(|ip| !in_use.contains(ip))
                .collect();
            let mut free_statics = free.into_iter();
            // (az) → (given, short)
            let mut tally: BTreeMap<Option<String>, (u64, u64)> = BTreeMap::new();
            for d in groups[gi].iter_mut() {
                if d.ips.get(&nref.name).copied().flatten().is_some() {
                    continue;
                }
                let ip = if nref.static_ips.is_empty() {
                    subnets
                        .iter_mut()
                        .filter(|s| serves_az(&s.azs, d.az.as_deref()))
                        .find_map(|s| s.allocator.next(&in_use))
                } else {
                    free_statics.next()
                };
                let t = tally.entry(d.az.clone()).or_default();
                match ip {
                    Some(ip) => {
                        in_use.insert(ip);
                        d.ips.insert(nref.name.clone(), Some(ip));
                        t.0 += 1;
                    }
                    None => t.1 += 1,
                }
            }
            for (az, (given, short)) in tally.into_iter().filter(|(_, (_, short))| *short > 0) {
                let az_text = az.as_deref().unwrap_or("(none)");
                let what = if nref.static_ips.is_empty() {
                    let ranges: Vec<String> = subnets
                        .iter()
                        .filter(|s| serves_az(&s.azs, az.as_deref()))
                        .map(|s| s.range.clone())
                        .collect();
                    if ranges.is_empty() {
                        format!("no subnet of network {:?} serves az {az_text}", nref.name)
                    } else {
                        format!("subnet {} had {given} free", ranges.join(", "))
                    }
                } else {
                    // Name the addresses someone else holds: the usual reason
                    // (another deployment claims the same static IP).
                    let taken: Vec<String> = nref
                        .static_ips
                        .iter()
                        .filter_map(|s| parse_ip(s).ok())
                        .filter(|ip| outside.contains(ip))
                        .map(|ip| ip.to_string())
                        .collect();
                    if taken.is_empty() {
                        format!("its static_ips had {given} free")
                    } else {
                        format!(
                            "its static_ips had {given} free; in use outside this deployment \
                             (another deployment or a compile VM): {}",
                            taken.join(", ")
                        )
                    }
                };
                errors.push(format!(
                    "instance_groups[{gi}] ({}): instance group {} in az {az_text} needs {} new addresses on network {:?}; {what}",
                    g.name,
                    g.name,
                    given + short,
                    nref.name,
                ));
            }
        }
    }
    errors
}

/// A subnet being allocated from in one plan.
struct Subnet {
    /// The AZs it serves (none: all).
    azs: Vec<String>,
    /// Its range as the cloud config writes it.
    range: String,
    /// Its next free address.
    allocator: Allocator,
}

/// Groups that can never get their addresses, whatever else holds some:
/// checked before anything is written (and by `--dry-run`), so a manifest
/// asking 100,000 instances of a /24 is refused at once with one line per
/// group, network and AZ.
pub fn capacity_errors(manifest: &Manifest, cloud: &CloudConfig) -> Vec<String> {
    let mut errors = Vec::new();
    for (gi, g) in manifest.instance_groups.iter().enumerate() {
        if g.lifecycle() == Lifecycle::Errand {
            continue;
        }
        let azs: Vec<Option<&str>> = if g.azs.is_empty() {
            vec![None]
        } else {
            g.azs.iter().map(|a| Some(a.as_str())).collect()
        };
        let n = azs.len() as u64;
        let instances = u64::from(g.instances);
        for nref in g.networks.iter().filter(|r| r.static_ips.is_empty()) {
            let Some(net) = cloud.networks.iter().find(|n| n.name == nref.name) else { continue };
            if net.network_type() != NetworkType::Manual {
                continue;
            }
            for (i, az) in azs.iter().enumerate() {
                // Placement spreads instances evenly, earlier AZs first.
                let need = instances / n + u64::from((i as u64) < instances % n);
                let serving: Vec<&bosh_api::manifest::Subnet> = net
                    .subnets
                    .iter()
                    .filter(|s| {
                        let names: Vec<String> =
                            s.az_names().into_iter().map(str::to_string).collect();
                        serves_az(&names, *az)
                    })
                    .collect();
                let have: u64 = serving
                    .iter()
                    .filter_map(|s| Pools::of(s).ok())
                    .map(|p| p.dynamic_count(need))
                    .sum();
                if need > have {
                    let ranges: Vec<&str> =
                        serving.iter().filter_map(|s| s.range.as_deref()).collect();
                    let az_text = az.unwrap_or("(none)");
                    let subnets = if ranges.is_empty() {
                        "no subnet serves it".to_string()
                    } else {
                        format!("subnet {} has {have} dynamic addresses", ranges.join(", "))
                    };
                    errors.push(format!(
                        "instance_groups[{gi}].instances: instance group {} in az {az_text} needs {need} addresses on network {:?}; {subnets}",
                        g.name, nref.name
                    ));
                }
            }
        }
    }
    errors
}

/// Whether a subnet with these AZ names serves `az` (all, when no AZ).
fn serves_az(azs: &[String], az: Option<&str>) -> bool {
    az.is_none() || azs.is_empty() || azs.iter().any(|a| Some(a.as_str()) == az)
}

#[cfg(test)]
mod tests;
