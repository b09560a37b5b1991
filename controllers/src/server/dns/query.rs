//! What a name under the BOSH domain asks for, parsed without looking at
//! any record (pure, so every form BOSH hands out is a table test).
//!
//! The forms are the director's and bosh-dns's long form:
//! `<first>.<group>.<network>.<deployment>.<domain>`, where `<first>` is an
//! instance's UUID, its index (the per-network record BOSH puts in a job's
//! `spec.networks.*.dns_record_name`), or a group query `q-<criteria>`.
//! Criteria are a letter and a number each, in any order and repeated
//! for alternatives: `a` AZ number, `i` instance index, `s` health
//! strategy (0 smart, 1 unhealthy, 3 healthy, 4 all), `m` numeric
//! instance id, `n` network number, `y` synchronous health check.

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
    /// `m`/`n`: numeric instance or network ids. bosh-rs numbers neither,
    /// so a query naming one matches nothing rather than everything.
    pub unnumbered: bool,
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

/// A parsed name under the BOSH domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// Which instances.
    pub selector: Selector,
    /// Instance group, canonical.
    pub group: String,
    /// Network, canonical.
    pub network: String,
    /// Deployment, canonical.
    pub deployment: String,
}

/// Why a name under the domain asks for nothing that can exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadName {
    /// Not `<first>.<group>.<network>.<deployment>`.
    #[error("expected 4 labels before the domain, found {0}")]
    Labels(usize),
    /// `q-` without a single `<letter><number>` criterion.
    #[error("query {0:?} has no criteria")]
    Criteria(String),
}

/// Splits `labels` (the name without the domain, lower case) into a
/// [`Question`].
pub fn parse(labels: &[&str]) -> Result<Question, BadName> {
    let [first, group, network, deployment] = labels else {
        return Err(BadName::Labels(labels.len()));
    };
    let selector = if let Some(q) = first.strip_prefix("q-") {
        Selector::Query(criteria(q).ok_or_else(|| BadName::Criteria(first.to_string()))?)
    } else if let Ok(i) = first.parse::<u32>() {
        Selector::Index(i)
    } else {
        Selector::Id(first.to_string())
    };
    Ok(Question {
        selector,
        group: group.to_string(),
        network: network.to_string(),
        deployment: deployment.to_string(),
    })
}

/// Reads `<letter><digits>` pairs as bosh-dns does: each known letter
/// followed by digits is a criterion, anything else between them is
/// skipped; none at all is an illegal query.
fn criteria(s: &str) -> Option<Criteria> {
    let mut c = Criteria { health: Health::Smart, azs: vec![], indexes: vec![], unnumbered: false };
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
        if !matches!(letter, b'a' | b'i' | b's' | b'm' | b'n' | b'y') || end == start {
            i += 1;
            continue;
        }
        found = true;
        // Digits beyond u32 name nothing that exists: no match.
        let n = s[start..end].parse::<u32>().unwrap_or(u32::MAX);
        match letter {
            b'a' => c.azs.push(n),
            b'i' => c.indexes.push(n),
            b's' if !seen_health => {
                seen_health = true;
                c.health = match n {
                    1 => Health::Unhealthy,
                    3 => Health::Healthy,
                    4 => Health::All,
                    _ => Health::Smart,
                };
            }
            b'm' | b'n' => c.unnumbered = true,
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

    /// The forms the director and the renderer hand out parse to what they mean.
    #[test]
    fn parses_the_forms_bosh_hands_out() {
        let cases: &[(&str, Selector)] = &[
            (
                "q-s0.web.default.hello",
                Selector::Query(Criteria {
                    health: Health::Smart,
                    azs: vec![],
                    indexes: vec![],
                    unnumbered: false,
                }),
            ),
            (
                "q-s3.web.default.hello",
                Selector::Query(Criteria {
                    health: Health::Healthy,
                    azs: vec![],
                    indexes: vec![],
                    unnumbered: false,
                }),
            ),
            (
                "q-a1a2i0s4.web.default.hello",
                Selector::Query(Criteria {
                    health: Health::All,
                    azs: vec![1, 2],
                    indexes: vec![0],
                    unnumbered: false,
                }),
            ),
            (
                "q-m3s0.web.default.hello",
                Selector::Query(Criteria {
                    health: Health::Smart,
                    azs: vec![],
                    indexes: vec![],
                    unnumbered: true,
                }),
            ),
            ("2.web.default.hello", Selector::Index(2)),
            (
                "0b8a4c1e-aaaa-bbbb-cccc-000000000001.web.default.hello",
                Selector::Id("0b8a4c1e-aaaa-bbbb-cccc-000000000001".into()),
            ),
        ];
        for (name, want) in cases {
            let got = q(name).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(&got.selector, want, "{name}");
            assert_eq!((got.group.as_str(), got.network.as_str()), ("web", "default"), "{name}");
            assert_eq!(got.deployment, "hello", "{name}");
        }
    }

    /// Names with the wrong shape or a query without criteria are refused with the reason.
    #[test]
    fn refuses_names_that_cannot_name_instances() {
        assert_eq!(q("web.default.hello"), Err(BadName::Labels(3)));
        assert_eq!(q("x.q-s0.web.default.hello"), Err(BadName::Labels(5)));
        assert_eq!(q("q-.web.default.hello"), Err(BadName::Criteria("q-".into())));
        assert_eq!(q("q-zz.web.default.hello"), Err(BadName::Criteria("q-zz".into())));
    }
}
