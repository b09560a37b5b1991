//! Links: which job's `link("name")` reaches which provider, and what it sees.
//!
//! Resolution runs on every pass, after planning and before rendering,
//! because what a consumer sees (the provider's instances, their ids and
//! addresses, its properties) comes from the plan. It is a pure function
//! of the manifest, the job specs and the planned instances; its output
//! goes into each job's render request, so a change to a provider (scale,
//! an address, a property) changes its consumers' render keys and rolls
//! them, and nothing else.
//!
//! Semantics follow the BOSH director (`links_manager.rb`): a consumer's
//! `from` names a provider by its `as` (or its link name); without `from`
//! the one provider of the link's type in the deployment is taken; an
//! optional link with no provider, and a link set to `nil`, are absent; a
//! manual link (`instances`/`properties`/`address`) is used as written.
//! Every error is found before any VM changes and names the instance
//! group, the job, the link and its type.

use std::collections::BTreeMap;
use std::sync::Arc;

use bosh_api::manifest::links::{self as manifest_links, ConsumeRef, ProvideRef};
use bosh_api::manifest::{InstanceGroup, Job, Manifest, NetworkDefault};
use bosh_api::objects::LinkStatus;
use bosh_api::release::JobSpec;
use serde_json::{Map, Value};

use bosh_api::objects::{DnsNumbersSpec, GroupType};

use super::numbers::{Addressing, dns_address, long_address, short_in_group};
use super::plan::Desired;
use crate::libs::render::{JobTemplates, Link, LinkInstance};

/// Consumed links by (instance group, job), then by link name.
pub type ByJob = BTreeMap<(String, String), BTreeMap<String, Link>>;

/// The links of a deployment: what each job renders, and the summary the
/// Deployment's status shows.
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    /// What each job's templates receive.
    pub by_job: ByJob,
    /// One entry per consumed link, in manifest order.
    pub summary: Vec<LinkStatus>,
}

/// The DNS root domain links' addresses use (BOSH's default).
const DOMAIN: &str = "bosh";

/// One link some job of the deployment provides.
#[derive(Debug, Clone)]
struct Provider<'a> {
    /// The providing group.
    group: &'a InstanceGroup,
    /// The providing job.
    job: &'a Job,
    /// The link's name in the job's spec.
    link: String,
    /// The name consumers' `from` uses: the manifest's `as`, else `link`.
    alias: String,
    /// The link's type.
    type_: String,
    /// The job properties it exposes.
    properties: Vec<String>,
    /// The provider's spec, for property defaults (none for a custom provider).
    spec: Option<&'a JobSpec>,
    /// Whether other deployments may consume it.
    shared: bool,
}

impl Provider<'_> {
    /// `group.job.link`, as errors list candidates.
    fn describe(&self) -> String {
        format!(
            "{}.{}.{} (as {}, type {})",
            self.group.name, self.job.name, self.link, self.alias, self.type_
        )
    }
}

/// The manifest's `consumes`/`provides` entry at `path`, its problems
/// added to `errors` as `path: message` (the validator reports the same
/// ones at the door; a store write that skipped it meets them here).
fn consume_at(v: &Value, path: &str, errors: &mut Vec<String>) -> ConsumeRef {
    let mut found = Vec::new();
    let c = manifest_links::parse_consume(v, path, &mut found);
    errors.extend(found.into_iter().map(|(p, m)| format!("{p}: {m}")));
    c
}

/// See [`consume_at`].
fn provide_at(v: &Value, path: &str, errors: &mut Vec<String>) -> Option<ProvideRef> {
    let mut found = Vec::new();
    let p = manifest_links::parse_provide(v, path, &mut found);
    errors.extend(found.into_iter().map(|(p, m)| format!("{p}: {m}")));
    p
}

/// A manual link as its consumer's templates see it.
fn manual_link(m: Map<String, Value>, path: &str, errors: &mut Vec<String>) -> Option<Link> {
    match serde_json::from_value::<Link>(Value::Object(m)) {
        Ok(mut l) => {
            if l.properties.is_null() {
                l.properties = Value::Object(Map::new());
            }
            Some(l)
        }
        Err(e) => {
            errors.push(format!("{path}: not a manual link: {e}"));
            None
        }
    }
}

/// Job templates by (release, job).
pub type Specs = BTreeMap<(String, String), Arc<JobTemplates>>;

/// Another deployment a consumer names with `deployment:`, as far as its
/// shared links need it: its manifest (variables interpolated), its job
/// specs and its instances.
#[derive(Debug, Clone)]
pub struct Foreign {
    /// Its manifest.
    pub manifest: Manifest,
    /// Its job templates.
    pub specs: Specs,
    /// Its instances, as planned instances.
    pub planned: Vec<Desired>,
}

/// The deployments a manifest's consumers name with `deployment:`, other
/// than `own`.
pub fn foreign_deployments(manifest: &Manifest, own: &str) -> Vec<String> {
    let mut names: Vec<String> = manifest
        .instance_groups
        .iter()
        .flat_map(|g| &g.jobs)
        .flat_map(|j| j.consumes.values())
        .filter_map(|v| v.get("deployment").and_then(Value::as_str))
        .filter(|d| *d != own)
        .map(str::to_string)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Every link `manifest`'s jobs provide (not those opted out with `nil`),
/// with the manifest errors of their `provides` in `errors`.
fn providers_of<'a>(
    manifest: &'a Manifest,
    specs: &'a Specs,
    errors: &mut Vec<String>,
) -> Vec<Provider<'a>> {
    let mut providers = Vec::new();
    for (gi, g) in manifest.instance_groups.iter().enumerate() {
        for (ji, j) in g.jobs.iter().enumerate() {
            let base = format!("instance_groups[{gi}].jobs[{ji}]");
            let spec = specs.get(&(j.release.clone(), j.name.clone())).map(|t| &t.spec);
            let declared: Vec<(String, String, Vec<String>, Option<&JobSpec>)> = spec
                .into_iter()
                .flat_map(|s| {
                    s.provides.iter().map(move |p| {
                        (p.name.clone(), p.link_type.clone(), p.properties.clone(), Some(s))
                    })
                })
                .chain(
                    j.custom_provider_definitions
                        .iter()
                        .map(|c| (c.name.clone(), c.type_.clone(), c.properties.clone(), None)),
                )
                .collect();
            for name in j.provides.keys() {
                if !declared.iter().any(|d| &d.0 == name) && spec.is_some() {
                    errors.push(format!(
                        "{base}.provides.{name}: job {} does not provide a link {name:?} \
                         (its spec provides {})",
                        j.name,
                        list(declared.iter().map(|d| d.0.clone()))
                    ));
                }
            }
            for (link, type_, properties, spec) in declared {
                let path = format!("{base}.provides.{link}");
                let said = match j.provides.get(&link) {
                    None => Some(ProvideRef::default()),
                    Some(v) => provide_at(v, &path, errors),
                };
                let Some(ProvideRef { alias, shared }) = said else { continue };
                providers.push(Provider {
                    group: g,
                    job: j,
                    alias: alias.unwrap_or_else(|| link.clone()),
                    link,
                    type_,
                    properties,
                    spec,
                    shared,
                });
            }
        }
    }
    providers
}

/// Resolves every consumed link of `manifest`'s deployment `deployment`.
///
/// `specs` are the job templates by (release, job); `planned` the planned
/// instances; `foreign` the other deployments consumers name (a
/// `deployment:` not among them does not exist). Errors (all of them, one
/// a line) name the manifest path for a malformed `consumes`/`provides`,
/// and the group, job, link and type for a link that cannot be resolved.
pub fn resolve(
    deployment: &str,
    manifest: &Manifest,
    specs: &Specs,
    planned: &[Desired],
    foreign: &BTreeMap<String, Foreign>,
) -> Result<Resolved, Vec<String>> {
    resolve_with(deployment, manifest, specs, planned, foreign, &DnsNumbersSpec::default())
}

/// The link groups of a deployment's providers, as the director names
/// them (`<as or link name>-<type>`), each with its instance group; the
/// first provider of a name wins (a second is an error link resolution
/// reports).
pub fn link_groups(manifest: &Manifest, specs: &Specs) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for p in providers_of(manifest, specs, &mut Vec::new()) {
        let name = format!("{}-{}", p.alias, p.type_);
        if !out.iter().any(|(n, _)| *n == name) {
            out.push((name, p.group.name.clone()));
        }
    }
    out
}

/// [`resolve`], with the director's DNS numbers: links carry its AZ
/// numbers (for `address(azs: …)`), and with
/// `features.use_short_dns_addresses` their addresses are short names.
pub fn resolve_with(
    deployment: &str,
    manifest: &Manifest,
    specs: &Specs,
    planned: &[Desired],
    foreign: &BTreeMap<String, Foreign>,
    numbers: &DnsNumbersSpec,
) -> Result<Resolved, Vec<String>> {
    let addressing = Addressing::of(manifest);
    let own = deployment;
    let mut errors = Vec::new();
    let spec_of = |j: &Job| specs.get(&(j.release.clone(), j.name.clone())).map(|t| &t.spec);
    let providers = providers_of(manifest, specs, &mut errors);
    // Another deployment's links: only those it shares. Its own manifest
    // errors are its own deploy's to report.
    let foreign_providers: BTreeMap<&str, (Vec<Provider>, &Foreign)> = foreign
        .iter()
        .map(|(name, f)| {
            let shared = providers_of(&f.manifest, &f.specs, &mut Vec::new())
                .into_iter()
                .filter(|p| p.shared)
                .collect();
            (name.as_str(), (shared, f))
        })
        .collect();

    let use_dns = addressing.dns;
    let mut out = Resolved::default();
    for (gi, g) in manifest.instance_groups.iter().enumerate() {
        for (ji, j) in g.jobs.iter().enumerate() {
            let base = format!("instance_groups[{gi}].jobs[{ji}]");
            let Some(spec) = spec_of(j) else { continue };
            for name in j.consumes.keys() {
                if !spec.consumes.iter().any(|c| &c.name == name) {
                    errors.push(format!(
                        "{base}.consumes.{name}: job {} does not consume a link {name:?} \
                         (its spec consumes {})",
                        j.name,
                        list(spec.consumes.iter().map(|c| c.name.clone()))
                    ));
                }
            }
            let mut links = BTreeMap::new();
            for c in &spec.consumes {
                let path = format!("{base}.consumes.{}", c.name);
                let said = j
                    .consumes
                    .get(&c.name)
                    .map(|v| consume_at(v, &path, &mut errors))
                    .unwrap_or_default();
                let who = format!(
                    "instance group {}, job {}: link {} (type {})",
                    g.name, j.name, c.name, c.link_type
                );
                if said.blocked {
                    continue;
                }
                let status =
                    |provider: Option<String>, network: Option<String>, l: &Link| LinkStatus {
                        instance_group: g.name.clone(),
                        job: j.name.clone(),
                        name: c.name.clone(),
                        type_: c.link_type.clone(),
                        provider,
                        network,
                        deployment: None,
                        instances: l.instances.len() as u32,
                    };
                if let Some(m) = said.manual {
                    if let Some(l) = manual_link(m, &path, &mut errors) {
                        out.summary.push(status(None, None, &l));
                        links.insert(c.name.clone(), l);
                    }
                    continue;
                }
                // Whose providers, instances and manifest the link comes from.
                let (providers, planned, manifest, deployment) =
                    match said.deployment.as_deref().filter(|d| *d != deployment) {
                        None => (&providers, planned, manifest, deployment),
                        Some(d) => match foreign_providers.get(d) {
                            Some((shared, f)) => (shared, &f.planned[..], &f.manifest, d),
                            None => {
                                errors.push(format!(
                                    "{who}: no deployment {d:?} ({path}.deployment)"
                                ));
                                continue;
                            }
                        },
                    };
                let chosen = match &said.from {
                    Some(from) => {
                        let named: Vec<&Provider> =
                            providers.iter().filter(|p| &p.alias == from).collect();
                        let typed: Vec<&Provider> =
                            named.iter().copied().filter(|p| p.type_ == c.link_type).collect();
                        match (named.len(), typed.len()) {
                            (0, _) => {
                                let shared = if said.deployment.is_some() { "shared " } else { "" };
                                errors.push(format!(
                                    "{who}: no {shared}provider named {from:?} in deployment \
                                     {deployment} ({path}.from)"
                                ));
                                continue;
                            }
                            (_, 0) => {
                                errors.push(format!(
                                    "{who}: provider {from:?} has type {}, not {}",
                                    list(named.iter().map(|p| p.type_.clone())),
                                    c.link_type
                                ));
                                continue;
                            }
                            (_, 1) => typed[0],
                            _ => {
                                errors.push(format!(
                                    "{who}: {} providers named {from:?}: {}",
                                    typed.len(),
                                    list(typed.iter().map(|p| p.describe()))
                                ));
                                continue;
                            }
                        }
                    }
                    None => {
                        let typed: Vec<&Provider> =
                            providers.iter().filter(|p| p.type_ == c.link_type).collect();
                        match typed.len() {
                            0 if c.optional => continue,
                            0 => {
                                let shared = if said.deployment.is_some() { "shared " } else { "" };
                                errors.push(format!(
                                    "{who}: no {shared}provider of type {} in deployment {deployment}",
                                    c.link_type
                                ));
                                continue;
                            }
                            1 => typed[0],
                            n => {
                                errors.push(format!(
                                    "{who}: {n} providers of type {} (name one with {path}.from): {}",
                                    c.link_type,
                                    list(typed.iter().map(|p| p.describe()))
                                ));
                                continue;
                            }
                        }
                    }
                };
                let network = match &said.network {
                    Some(n) if chosen.group.networks.iter().any(|x| &x.name == n) => n.clone(),
                    Some(n) => {
                        errors.push(format!(
                            "{who}: provider group {} has no network {n:?} ({path}.network)",
                            chosen.group.name
                        ));
                        continue;
                    }
                    None => default_network(chosen.group),
                };
                let dns = use_dns && said.ip_addresses != Some(true);
                let how = Encoding {
                    numbers,
                    short: addressing.short,
                    link_names: addressing.link_names,
                };
                let l = link_of(deployment, manifest, chosen, &network, dns, planned, how);
                let provider = format!("{}/{}/{}", chosen.group.name, chosen.job.name, chosen.link);
                let mut shown = status(Some(provider), Some(network), &l);
                shown.deployment = (deployment != own).then(|| deployment.to_string());
                out.summary.push(shown);
                links.insert(c.name.clone(), l);
            }
            out.by_job.insert((g.name.clone(), j.name.clone()), links);
        }
    }
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}

/// `a, b, c` (or `none`).
fn list(items: impl Iterator<Item = String>) -> String {
    let v: Vec<String> = items.collect();
    if v.is_empty() { "none".into() } else { v.join(", ") }
}

/// The network a group's links hand out addresses on: the one that gives
/// its VMs their default route (the first unless one says `gateway`).
fn default_network(g: &InstanceGroup) -> String {
    g.networks
        .iter()
        .find(|n| n.default.contains(&NetworkDefault::Gateway))
        .or(g.networks.first())
        .map(|n| n.name.clone())
        .unwrap_or_default()
}

/// How a link's DNS names are written: the director's numbers, and
/// whether the consumer's deployment uses short names.
#[derive(Clone, Copy)]
struct Encoding<'a> {
    numbers: &'a DnsNumbersSpec,
    short: bool,
    /// `use_link_dns_names`: names use the link group (always short).
    link_names: bool,
}

/// The link a consumer of `p` sees.
fn link_of(
    deployment: &str,
    m: &Manifest,
    p: &Provider,
    network: &str,
    dns: bool,
    planned: &[Desired],
    how: Encoding,
) -> Link {
    let mut instances: Vec<&Desired> = planned.iter().filter(|d| d.group == p.group.name).collect();
    instances.sort_by_key(|d| d.index);
    let addressing = Addressing { dns: true, short: how.short, link_names: how.link_names };
    // With link DNS names the link group's number, as BOSH's
    // `encode_link` (forcing short names); else the instance group's.
    let link_group = how
        .link_names
        .then(|| {
            how.numbers.group(deployment, &format!("{}-{}", p.alias, p.type_), GroupType::Link)
        })
        .flatten();
    let dns_name = |d: &Desired| match link_group {
        Some(g) => short_in_group(how.numbers, &d.id, network, g, DOMAIN)
            .unwrap_or_else(|| long_address(&d.id, &p.group.name, network, deployment, DOMAIN)),
        None => {
            dns_address(addressing, how.numbers, &d.id, &p.group.name, network, deployment, DOMAIN)
        }
    };
    let group_number = link_group.or_else(|| {
        how.numbers.group(deployment, &p.group.name, GroupType::InstanceGroup).filter(|_| how.short)
    });
    let instances = instances
        .into_iter()
        .map(|d| {
            // A dynamic network's IP is known only once the VM runs; its
            // DNS name stands for it.
            let ip = d.ips.get(network).copied().flatten();
            let address = match ip {
                Some(ip) if !dns => ip.to_string(),
                _ => dns_name(d),
            };
            LinkInstance {
                name: Some(p.group.name.clone()),
                index: Some(d.index),
                id: Some(d.id.clone()),
                az: d.az.clone(),
                address: Some(address),
                bootstrap: d.bootstrap,
            }
        })
        .collect();
    Link {
        instances,
        properties: properties_of(m, p),
        address: None,
        instance_group: Some(p.group.name.clone()),
        default_network: Some(network.to_string()),
        deployment_name: Some(deployment.to_string()),
        domain: Some(DOMAIN.to_string()),
        az_numbers: how.numbers.azs.clone(),
        use_short_dns_addresses: group_number.is_some(),
        group_number,
        network_number: group_number.and_then(|_| how.numbers.networks.get(network).copied()),
    }
}

/// The properties `p` exposes, as bound for its job (job level, else the
/// group's, else the deployment's, as rendering binds them), with its
/// spec's defaults, nested by their dotted names.
fn properties_of(m: &Manifest, p: &Provider) -> Value {
    let bound = if !p.job.properties.is_empty() {
        &p.job.properties
    } else if !p.group.properties.is_empty() {
        &p.group.properties
    } else {
        &m.properties
    };
    let bound = Value::Object(bound.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
    let mut out = Value::Object(Map::new());
    for name in &p.properties {
        let given = name.split('.').try_fold(&bound, |v, k| v.get(k)).filter(|v| !v.is_null());
        let default = p.spec.and_then(|s| s.properties.get(name)).and_then(|d| d.default.as_ref());
        let value = given.or(default).cloned().unwrap_or(Value::Null);
        set_dotted(&mut out, name, value);
    }
    out
}

/// Sets `a.b.c` in `v` to `value`, making maps on the way.
fn set_dotted(v: &mut Value, name: &str, value: Value) {
    let mut at = v;
    let parts: Vec<&str> = name.split('.').collect();
    for k in &parts[..parts.len() - 1] {
        if !at.get(*k).is_some_and(Value::is_object) {
            at[*k] = Value::Object(Map::new());
        }
        at = &mut at[*k];
    }
    at[parts[parts.len() - 1]] = value;
}

#[cfg(test)]
mod tests;
