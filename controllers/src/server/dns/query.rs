//! What a name under the BOSH domain asks for, parsed without looking at
//! any record (pure, so every form BOSH hands out is a table test).
//!
//! The forms are the director's and bosh-dns's:
//!
//! - long: `<first>.<group>.<network>.<deployment>.<domain>`, where
//!   `<first>` is an instance's UUID, its index (the per-network record
//!   BOSH puts in a job's `spec.networks.*.dns_record_name`), or a group
//!   query `q-<criteria>`;
//! - short (`features.use_short_dns_addresses`): `q-<criteria>.q-g<group
//!   number>.<domain>`, e.g. `q-m3n1s0.q-g7.bosh` for one instance on one
//!   network, `q-n1s0.q-g7.bosh` for a group on one network, `q-s0.q-g7`
//!   for a group on all its networks.
//!
//! Criteria are a letter and a number each, in any order and repeated
//! for alternatives: `a` AZ number, `i` instance index, `s` health
//! strategy (0 smart, 1 unhealthy, 3 healthy, 4 all), `m` instance
//! number, `n` network number, `g` group number, `y` synchronous health
//! check (accepted, nothing to wait for here). The numbers are the
//! director's (`DnsNumbers`).

/// The health strategy of a group query (`s` criterion).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// `s0` (and no `s`): the healthy and the not yet checked; every
    /// instance when there are none, so a name never empties by health alone.
    Smart,
    /// `s1`: only the unhealthy.
    Unhealthy,
    /// `s3`: only the healthy.
    Healthy,
    /// `s4`: all.
    All,
}

/// The filters of a `q-` query; an empty list matches anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Criteria {
    /// Health strategy (the first `s` given).
    pub health: Health,
    /// `a`: AZ numbers, any of.
    pub azs: Vec<u32>,
    /// `i`: instance indexes, any of.
    pub indexes: Vec<u32>,
    /// `m`: instance numbers, any of.
    pub instances: Vec<u32>,
    /// `n`: network numbers, any of.
    pub networks: Vec<u32>,
    /// `g`: group numbers, any of.
    pub groups: Vec<u32>,
}

impl Criteria {
    /// No filter, smart health.
    pub fn any() -> Criteria {
        Criteria {
            health: Health::Smart,
            azs: vec![],
            indexes: vec![],
            instances: vec![],
            networks: vec![],
            groups: vec![],
        }
    }
}

/// Which instances of a group a name selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// `<uuid>.…`
    Id(String),
    /// `<index>.…`
    Index(u32),
    /// `q-<criteria>.…`
    Query(Criteria),
}

/// Where a name looks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The long form's (group, network, deployment), canonical.
    Named {
        /// Instance group.
        group: String,
        /// Network.
        network: String,
        /// Deployment.
        deployment: String,
    },
    /// The short form: groups by number (the query's `g` criteria).
    Numbered,
}

/// A parsed name under the BOSH domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// Which instances.
    pub selector: Selector,
    /// Where.
    pub scope: Scope,
}

/// Why a name under the domain asks for nothing that can exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadName {
    /// Neither `<first>.<group>.<network>.<deployment>` nor
    /// `q-<criteria>.q-g<n>`.
    #[error("expected 4 labels, or 2 for a short name, before the domain, found {0}")]
    Labels(usize),
    /// `q-` without a single `<letter><number>` criterion.
    #[error("query {0:?} has no criteria")]
    Criteria(String),
    /// A short name whose second label names no group.
    #[error("short name label {0:?} is not q-g<group number>")]
    Group(String),
}

/// Splits `labels` (the name without the domain, lower case) into a
/// [`Question`].
pub fn parse(labels: &[&str]) -> Result<Question, BadName> {
    match labels {
        [first, group] => short(first, group),
        [first, group, network, deployment] => {
            let selector = if let Some(q) = first.strip_prefix("q-") {
                Selector::Query(criteria(q).ok_or_else(|| BadName::Criteria(first.to_string()))?)
            } else if let Ok(i) = first.parse::<u32>() {
                Selector::Index(i)
            } else {
                Selector::Id(first.to_string())
            };
            let scope = Scope::Named {
                group: group.to_string(),
                network: network.to_string(),
                deployment: deployment.to_string(),
            };
            Ok(Question { selector, scope })
        }
        _ => Err(BadName::Labels(labels.len())),
    }
}

/// `q-<criteria>.q-g<n>`: the criteria of both labels, which must name a
/// group (bosh-dns reads them as one query).
fn short(first: &str, group: &str) -> Result<Question, BadName> {
    let q = first.strip_prefix("q-").ok_or(BadName::Labels(2))?;
    let mut c = criteria(q).ok_or_else(|| BadName::Criteria(first.to_string()))?;
    let g = group
        .strip_prefix("q-")
        .and_then(criteria)
        .filter(|g| !g.groups.is_empty())
        .ok_or_else(|| BadName::Group(group.to_string()))?;
    c.groups.extend(g.groups);
    c.azs.extend(g.azs);
    c.indexes.extend(g.indexes);
    c.instances.extend(g.instances);
    c.networks.extend(g.networks);
    Ok(Question { selector: Selector::Query(c), scope: Scope::Numbered })
}

/// Reads `<letter><digits>` pairs as bosh-dns does: each known letter
/// followed by digits is a criterion, anything else between them is
/// skipped; none at all is an illegal query.
fn criteria(s: &str) -> Option<Criteria> {
    let mut c = Criteria::any();
    let mut seen_health = false;
    let mut found = false;
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let letter = b[i];
        let start = i + 1;
        let mut end = start;
        while end < b.len() && b[end].is_ascii_digit() {
            end += 1;
        }
        if !matches!(letter, b'a' | b'i' | b's' | b'm' | b'n' | b'g' | b'y') || end == start {
            i += 1;
            continue;
        }
        found = true;
        // Digits beyond u32 name nothing that exists: no match.
        let n = s[start..end].parse::<u32>().unwrap_or(u32::MAX);
        match letter {
            b'a' => c.azs.push(n),
            b'i' => c.indexes.push(n),
            b'm' => c.instances.push(n),
            b'n' => c.networks.push(n),
            b'g' => c.groups.push(n),
            b's' if !seen_health => {
                seen_health = true;
                c.health = match n {
                    1 => Health::Unhealthy,
                    3 => Health::Healthy,
                    4 => Health::All,
                    _ => Health::Smart,
                };
            }
            _ => {}
        }
        i = end;
    }
    found.then_some(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(name: &str) -> Result<Question, BadName> {
        parse(&name.split('.').collect::<Vec<_>>())
    }

    fn crit(
        health: Health,
        azs: &[u32],
        indexes: &[u32],
        instances: &[u32],
        networks: &[u32],
        groups: &[u32],
    ) -> Selector {
        Selector::Query(Criteria {
            health,
            azs: azs.to_vec(),
            indexes: indexes.to_vec(),
            instances: instances.to_vec(),
            networks: networks.to_vec(),
            groups: groups.to_vec(),
        })
    }

    /// The long forms the director and the renderer hand out parse to what they mean.
    #[test]
    fn parses_the_forms_bosh_hands_out() {
        let cases: &[(&str, Selector)] = &[
            ("q-s0.web.default.hello", crit(Health::Smart, &[], &[], &[], &[], &[])),
            ("q-s3.web.default.hello", crit(Health::Healthy, &[], &[], &[], &[], &[])),
            ("q-a1a2i0s4.web.default.hello", crit(Health::All, &[1, 2], &[0], &[], &[], &[])),
            ("q-m3s0.web.default.hello", crit(Health::Smart, &[], &[], &[3], &[], &[])),
            ("q-s0y1.web.default.hello", crit(Health::Smart, &[], &[], &[], &[], &[])),
            ("2.web.default.hello", Selector::Index(2)),
            (
                "0b8a4c1e-aaaa-bbbb-cccc-000000000001.web.default.hello",
                Selector::Id("0b8a4c1e-aaaa-bbbb-cccc-000000000001".into()),
            ),
        ];
        let named = Scope::Named {
            group: "web".into(),
            network: "default".into(),
            deployment: "hello".into(),
        };
        for (name, want) in cases {
            let got = q(name).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(&got.selector, want, "{name}");
            assert_eq!(got.scope, named, "{name}");
        }
    }

    /// The short forms (`use_short_dns_addresses`) parse to numbered
    /// criteria: instance, network, group, and AZ filters.
    #[test]
    fn parses_short_names() {
        let cases: &[(&str, Selector)] = &[
            ("q-m3n1s0.q-g7", crit(Health::Smart, &[], &[], &[3], &[1], &[7])),
            ("q-n1s0.q-g7", crit(Health::Smart, &[], &[], &[], &[1], &[7])),
            ("q-s0.q-g12", crit(Health::Smart, &[], &[], &[], &[], &[12])),
            ("q-a2n1s3.q-g7", crit(Health::Healthy, &[2], &[], &[], &[1], &[7])),
        ];
        for (name, want) in cases {
            let got = q(name).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(&got.selector, want, "{name}");
            assert_eq!(got.scope, Scope::Numbered, "{name}");
        }
    }

    /// Names with the wrong shape or a query without criteria are refused with the reason.
    #[test]
    fn refuses_names_that_cannot_name_instances() {
        assert_eq!(q("web.default.hello"), Err(BadName::Labels(3)));
        assert_eq!(q("x.q-s0.web.default.hello"), Err(BadName::Labels(5)));
        assert_eq!(q("q-.web.default.hello"), Err(BadName::Criteria("q-".into())));
        assert_eq!(q("q-zz.web.default.hello"), Err(BadName::Criteria("q-zz".into())));
        assert_eq!(q("web.q-g1"), Err(BadName::Labels(2)));
        assert_eq!(q("q-s0.web"), Err(BadName::Group("web".into())));
        assert_eq!(q("q-s0.q-s1"), Err(BadName::Group("q-s1".into())));
    }
}
