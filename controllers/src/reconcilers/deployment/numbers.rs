//! BOSH DNS numbers for a plan, assigned before anything renders.
//!
//! A plan's AZs, networks, instance groups and instances must have their
//! numbers (`DnsNumbers`, see `bosh_api::objects`) before templates are
//! rendered, because short addresses and `link(..).address(azs: …)` carry
//! them. The director assigns them as it plans
//! (`LocalDnsEncoderManager.new_encoder_with_updated_index`); so does this
//! controller: what the cache already numbers costs nothing (a quiet pass
//! stays without reads and writes), and what is missing is added with the
//! store's compare-and-swap on the one object, retried on a conflict, so
//! two replicas (or two deployments' passes) never give one number twice.

use bosh_api::manifest::{CloudConfig, Manifest};
use bosh_api::objects::{DNS_NUMBERS_NAME, DnsNumbersSpec, GroupType, Wanted};
use bosh_api::store::{self, Store};
use bosh_api::{Object, ObjectMeta};

use super::plan::Desired;
use crate::runtime::Cache;

/// Conflicts tolerated before giving up (each means another writer
/// added numbers; the pass is retried later).
const ATTEMPTS: usize = 16;

/// What deployment `name`'s plan needs numbered: every AZ and network of
/// the cloud config (as the director persists the plan's), its instance
/// groups, its link providers (`(<name>-<type>, instance group)`, whether
/// or not it uses link DNS names, as the director) and its planned
/// instances.
pub fn wanted(
    name: &str,
    manifest: &Manifest,
    cloud: &CloudConfig,
    planned: &[Desired],
    link_groups: &[(String, String)],
) -> Wanted {
    Wanted {
        azs: cloud.azs.iter().map(|a| a.name.clone()).collect(),
        networks: cloud.networks.iter().map(|n| n.name.clone()).collect(),
        groups: manifest
            .instance_groups
            .iter()
            .map(|g| (name.to_string(), g.name.clone(), GroupType::InstanceGroup))
            .collect(),
        instances: planned.iter().map(|d| d.id.clone()).collect(),
        links: link_groups
            .iter()
            .map(|(link, group)| (name.to_string(), link.clone(), group.clone()))
            .collect(),
    }
}

/// The numbers, with everything in `wanted` numbered: from `cache` when it
/// already covers it, else read and, when something lacks a number,
/// written.
pub async fn ensure(
    store: &Store,
    cache: Option<&Cache<DnsNumbersSpec>>,
    wanted: &Wanted,
) -> Result<DnsNumbersSpec, store::Error> {
    if let Some(o) = cache.and_then(|c| c.get(DNS_NUMBERS_NAME))
        && o.spec.covers(wanted)
    {
        return Ok(o.spec.clone());
    }
    let mut last = None;
    for _ in 0..ATTEMPTS {
        let current = store.try_get::<DnsNumbersSpec>(None, DNS_NUMBERS_NAME).await?;
        let written = match current {
            Some(o) if o.spec.covers(wanted) => return Ok(o.spec),
            Some(mut o) => {
                o.spec.assign(wanted);
                store.update_spec(&o).await
            }
            None => {
                let mut spec = DnsNumbersSpec::default();
                spec.assign(wanted);
                store.create(&Object::new(ObjectMeta::named(DNS_NUMBERS_NAME), spec)).await
            }
        };
        match written {
            Ok(o) => return Ok(o.spec),
            Err(e @ (store::Error::Conflict { .. } | store::Error::AlreadyExists { .. })) => {
                last = Some(e)
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.expect("at least one attempt"))
}

/// How a deployment's addresses are written (`features`), as the
/// director's `DeploymentFeaturesParser` reads them: `use_link_dns_names`
/// turns DNS and short addresses on unless they are set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Addressing {
    /// `use_dns_addresses`: DNS names instead of IPs.
    pub dns: bool,
    /// `use_short_dns_addresses`: `q-….q-g<n>` names.
    pub short: bool,
    /// `use_link_dns_names`: links' names use the link group's number.
    pub link_names: bool,
}

impl Addressing {
    /// The manifest's choice.
    pub fn of(manifest: &Manifest) -> Addressing {
        let f = manifest.features.as_ref();
        let link = f.and_then(|f| f.use_link_dns_names).unwrap_or(false);
        Addressing {
            dns: f.and_then(|f| f.use_dns_addresses).unwrap_or(link),
            short: f.and_then(|f| f.use_short_dns_addresses).unwrap_or(link),
            link_names: link,
        }
    }
}

/// An instance's long DNS name: `<uuid>.<group>.<network>.<deployment>.<domain>`.
pub fn long_address(
    id: &str,
    group: &str,
    network: &str,
    deployment: &str,
    domain: &str,
) -> String {
    use crate::libs::render::canonical;
    format!("{id}.{}.{}.{}.{domain}", canonical(group), canonical(network), canonical(deployment))
}

/// An instance's short DNS name, `q-m<instance>n<network>s0.q-g<group>.<domain>`
/// (filters sorted as the director's encoder sorts them), when everything
/// in it has a number.
pub fn short_address(
    n: &DnsNumbersSpec,
    id: &str,
    group: &str,
    network: &str,
    deployment: &str,
    domain: &str,
) -> Option<String> {
    let g = n.group(deployment, group, GroupType::InstanceGroup)?;
    short_in_group(n, id, network, g, domain)
}

/// An instance's short DNS name under group number `g` (an instance
/// group's, or a link group's with `use_link_dns_names`).
pub fn short_in_group(
    n: &DnsNumbersSpec,
    id: &str,
    network: &str,
    g: u32,
    domain: &str,
) -> Option<String> {
    let m = n.instances.get(id)?;
    let net = n.networks.get(network)?;
    let mut filters = [format!("m{m}"), format!("n{net}"), "s0".to_string()];
    filters.sort();
    Some(format!("q-{}.q-g{g}.{domain}", filters.concat()))
}

/// An instance's DNS name as `addressing` writes it: short when asked and
/// numbered, else long.
pub fn dns_address(
    addressing: Addressing,
    n: &DnsNumbersSpec,
    id: &str,
    group: &str,
    network: &str,
    deployment: &str,
    domain: &str,
) -> String {
    addressing
        .short
        .then(|| short_address(n, id, group, network, deployment, domain))
        .flatten()
        .unwrap_or_else(|| long_address(id, group, network, deployment, domain))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Short names carry the instance, network and group numbers in
    /// BOSH's order; without numbers the long name stands.
    #[test]
    fn addresses_are_written_as_bosh_writes_them() {
        let mut n = DnsNumbersSpec::default();
        n.assign(&Wanted {
            networks: vec!["a".into(), "priv_net".into()],
            groups: vec![("Dep".into(), "web_1".into(), GroupType::InstanceGroup)],
            instances: vec!["u0".into(), "u1".into()],
            ..Default::default()
        });
        let short = Addressing { dns: true, short: true, link_names: false };
        let long = Addressing { dns: true, short: false, link_names: false };
        assert_eq!(
            dns_address(short, &n, "u1", "web_1", "priv_net", "Dep", "bosh"),
            "q-m2n2s0.q-g1.bosh"
        );
        assert_eq!(
            dns_address(long, &n, "u1", "web_1", "priv_net", "Dep", "bosh"),
            "u1.web-1.priv-net.dep.bosh"
        );
        assert_eq!(
            dns_address(short, &n, "u9", "web_1", "priv_net", "Dep", "bosh"),
            "u9.web-1.priv-net.dep.bosh",
            "an unnumbered instance keeps its long name"
        );
    }
}
