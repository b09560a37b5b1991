//! Semantic rules for manifests and runtime configs that need no other
//! document: names that follow [`crate::names`] and are unique, references to releases and stemcells, static IP
//! counts, network defaults.
//!
//! They run on the loosely typed value, next to the shape check, so a
//! document with a wrong type in one place still gets its duplicate names
//! reported in the same run. Anything malformed is skipped here: the shape
//! check has reported it already.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{
    ip,
    validate::{
        Report, check_ref, has_placeholder, key_path, list, name_at, named_list, names, names_in,
        str_of, strs, unique_names,
    },
};
use crate::names::{check_name, check_variable_name, check_version};

/// Checks a manifest.
pub(crate) fn check(m: &Value, report: &mut Report) {
    name_at(m, "", "name", check_name, report);
    check_releases(m, report);
    unique_by(m, "", "stemcells", "alias", "stemcell alias", report);
    named_list(m, "", "instance_groups", "instance group", report);
    check_variables(m, report);
    named_list(m, "", "addons", "addon", report);

    let releases = names(m, "releases");
    let aliases: Vec<&str> =
        list(m, "", "stemcells").filter_map(|(_, s)| str_of(s, "alias")).collect();

    check_update(m, report);
    for (p, s) in list(m, "", "stemcells") {
        for key in ["alias", "os", "name"] {
            name_at(s, &p, key, check_name, report);
        }
        name_at(s, &p, "version", check_version, report);
        match (s.get("os"), s.get("name")) {
            (None, None) => report.push(p, r#"required key "os" is missing (or give "name")"#),
            (Some(_), Some(_)) => report.push(p, r#"give only one of "os" and "name""#),
            _ => {}
        }
    }
    check_addons(m, "", &releases, report);
    check_certificate_cas(m, report);

    let mut static_owner: BTreeMap<(String, std::net::Ipv4Addr), String> = BTreeMap::new();
    for (p, ig) in list(m, "", "instance_groups") {
        check_group_names(ig, &p, report);
        if let Some(alias) = str_of(ig, "stemcell") {
            check_ref(
                report,
                key_path(&p, "stemcell"),
                alias,
                &aliases,
                "stemcell alias",
                "stemcells",
            );
        }
        named_list(ig, &p, "jobs", "job", report);
        named_list(ig, &p, "networks", "network", report);
        named_list(ig, &p, "persistent_disks", "persistent disk", report);
        for (jp, job) in list(ig, &p, "jobs") {
            check_job_names(job, &jp, report);
            if let Some(r) = str_of(job, "release") {
                check_ref(report, key_path(&jp, "release"), r, &releases, "release", "releases");
            }
        }
        match (ig.get("vm_type"), ig.get("vm_resources")) {
            (None, None) => {
                report.push(&p, r#"required key "vm_type" is missing (or give "vm_resources")"#)
            }
            (Some(_), Some(_)) => {
                report.push(&p, r#"give only one of "vm_type" and "vm_resources""#)
            }
            _ => {}
        }
        let disks = ["persistent_disk", "persistent_disk_type", "persistent_disks"];
        let given: Vec<&str> = disks.into_iter().filter(|k| ig.get(*k).is_some()).collect();
        if given.len() > 1 {
            report.push(&p, format!("give only one of {}", quoted(&given)));
        }
        let mut seen_azs = Vec::new();
        for (ap, az) in strs(ig, &p, "azs") {
            if seen_azs.contains(&az) {
                report.push(ap, format!("duplicate az {az:?}"));
            }
            seen_azs.push(az);
        }
        check_networks(ig, &p, &mut static_owner, report);
    }
}

/// Checks a runtime config.
pub(crate) fn check_runtime(rc: &Value, report: &mut Report) {
    check_releases(rc, report);
    named_list(rc, "", "addons", "addon", report);
    check_variables(rc, report);
    check_addons(rc, "", &names(rc, "releases"), report);
    check_aliases(rc, report);
}

/// Alias domains are DNS names and targets use a query bosh-rs answers
/// (the shape check has already required every target key).
fn check_aliases(rc: &Value, report: &mut Report) {
    let Some(aliases) = rc.get("aliases").and_then(Value::as_object) else { return };
    for (domain, alias) in aliases {
        let path = key_path("aliases", domain);
        if !is_dns_name(domain) {
            report.push(
                &path,
                format!(
                    "alias domain {domain:?} is not a DNS name (dot-separated labels of letters, \
                     digits, '-' and '_', at most 63 characters each)"
                ),
            );
        }
        let targets = alias.get("targets").and_then(Value::as_array);
        if targets.is_some_and(Vec::is_empty) {
            report.push(key_path(&path, "targets"), "expected at least one target");
        }
        for (p, t) in list(alias, &path, "targets") {
            if let Some(q) = str_of(t, "query")
                && !super::runtime::ALIAS_QUERIES.contains(&q)
            {
                report.push(
                    key_path(&p, "query"),
                    format!("expected \"*\" (the group) or \"_\" (each instance), found {q:?}"),
                );
            }
        }
    }
}

/// Whether `s` is a DNS name bosh-dns could answer.
fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Release names and versions follow the name rule and names do not repeat.
fn check_releases(doc: &Value, report: &mut Report) {
    named_list(doc, "", "releases", "release", report);
    for (p, r) in list(doc, "", "releases") {
        name_at(r, &p, "version", check_version, report);
    }
}

/// Variable names (possibly absolute config-server paths) follow the rule
/// and do not repeat.
fn check_variables(doc: &Value, report: &mut Report) {
    for (p, var) in list(doc, "", "variables") {
        name_at(var, &p, "name", check_variable_name, report);
    }
    unique_names(doc, "", "variables", "variable", report);
}

/// The names an instance group refers to by name follow the name rule, so a
/// bad one is reported here with its path even before a cloud config is
/// there to look it up in.
fn check_group_names(ig: &Value, p: &str, report: &mut Report) {
    for key in ["vm_type", "persistent_disk_type", "stemcell"] {
        name_at(ig, p, key, check_name, report);
    }
    names_in(ig, p, "azs", report);
    names_in(ig, p, "vm_extensions", report);
    for (mp, from) in list(ig, p, "migrated_from") {
        name_at(from, &mp, "name", check_name, report);
        name_at(from, &mp, "az", check_name, report);
    }
}

/// A job's release and link names (the keys of `consumes`/`provides` and
/// their `from`/`as`) follow the name rule, and each `consumes`/`provides`
/// entry has its shape ([`super::links`]).
fn check_job_names(job: &Value, jp: &str, report: &mut Report) {
    name_at(job, jp, "release", check_name, report);
    for side in ["consumes", "provides"] {
        let Some(links) = job.get(side).and_then(Value::as_object) else { continue };
        let sp = key_path(jp, side);
        for (link, spec) in links {
            let lp = key_path(&sp, link);
            super::validate::check_rule(report, lp.clone(), link, check_name);
            for key in ["from", "as"] {
                name_at(spec, &lp, key, check_name, report);
            }
            let mut errors = Vec::new();
            if side == "consumes" {
                super::links::parse_consume(spec, &lp, &mut errors);
            } else {
                super::links::parse_provide(spec, &lp, &mut errors);
            }
            for (path, message) in errors {
                report.push(path, message);
            }
        }
    }
    named_list(job, jp, "custom_provider_definitions", "custom provider", report);
}

fn quoted(keys: &[&str]) -> String {
    let q: Vec<String> = keys.iter().map(|k| format!("{k:?}")).collect();
    match q.as_slice() {
        [init @ .., last] if !init.is_empty() => format!("{} and {last}", init.join(", ")),
        _ => q.join(""),
    }
}

/// Like [`unique_names`] for a key other than `name` (stemcell `alias`).
fn unique_by(v: &Value, path: &str, list_key: &str, key: &str, what: &str, report: &mut Report) {
    let mut seen: Vec<(&str, String)> = Vec::new();
    for (p, item) in list(v, path, list_key) {
        let Some(name) = str_of(item, key) else { continue };
        if let Some((_, first)) = seen.iter().find(|(n, _)| *n == name) {
            report.push(key_path(&p, key), format!("duplicate {what} {name:?} (first at {first})"));
        } else {
            seen.push((name, p));
        }
    }
}

/// The top-level `update` must say how to roll out; groups may override parts.
fn check_update(m: &Value, report: &mut Report) {
    let Some(update) = m.get("update") else {
        report.push("", r#"required key "update" is missing"#);
        return;
    };
    if !update.is_object() {
        return;
    }
    for k in ["canaries", "max_in_flight", "canary_watch_time", "update_watch_time"] {
        if update.get(k).is_none() {
            report.push("update", format!("required key {k:?} is missing"));
        }
    }
}

fn check_addons(doc: &Value, path: &str, releases: &[&str], report: &mut Report) {
    for (ap, addon) in list(doc, path, "addons") {
        named_list(addon, &ap, "jobs", "job", report);
        for (jp, job) in list(addon, &ap, "jobs") {
            check_job_names(job, &jp, report);
            if let Some(r) = str_of(job, "release") {
                check_ref(report, key_path(&jp, "release"), r, releases, "release", "releases");
            }
        }
    }
}

/// A certificate's `options.ca` must name a certificate variable of the same
/// document (absolute `/paths` live in the config server and are not checked).
fn check_certificate_cas(m: &Value, report: &mut Report) {
    let certs: Vec<&str> = list(m, "", "variables")
        .filter(|(_, v)| str_of(v, "type") == Some("certificate"))
        .filter_map(|(_, v)| str_of(v, "name"))
        .collect();
    for (p, var) in list(m, "", "variables") {
        let Some(ca) = var.get("options").and_then(|o| str_of(o, "ca")) else { continue };
        if !ca.starts_with('/') {
            let path = key_path(&key_path(&p, "options"), "ca");
            check_ref(report, path, ca, &certs, "certificate variable", "variables");
        }
    }
}

/// Static IPs parse, match the instance count and are not shared between
/// groups; with several networks, exactly one is the default for DNS and gateway.
fn check_networks(
    ig: &Value,
    p: &str,
    static_owner: &mut BTreeMap<(String, std::net::Ipv4Addr), String>,
    report: &mut Report,
) {
    let instances = ig.get("instances").and_then(Value::as_u64);
    let networks: Vec<(String, &Value)> = list(ig, p, "networks").collect();
    for (np, net) in &networks {
        let net_name = str_of(net, "name").unwrap_or_default().to_string();
        let Some(ips) = net.get("static_ips").and_then(Value::as_array) else { continue };
        let mut count: u64 = 0;
        let mut unresolved = false;
        for (i, entry) in ips.iter().enumerate() {
            let ep = format!("{np}.static_ips[{i}]");
            let Some(s) = entry.as_str() else { continue };
            if has_placeholder(s) {
                unresolved = true;
                continue;
            }
            match ip::parse_range(s) {
                Ok(r) if r.len() > 65536 => report.push(ep, format!("range {s:?} is too large")),
                Ok(r) => {
                    count += r.len();
                    for addr in r.iter() {
                        let key = (net_name.clone(), addr);
                        if let Some(first) = static_owner.get(&key) {
                            report
                                .push(&ep, format!("static IP {addr} is already used by {first}"));
                        } else {
                            static_owner.insert(key, ep.clone());
                        }
                    }
                }
                Err(e) => report.push(ep, e),
            }
        }
        if let Some(n) = instances
            && !unresolved
            && !ips.is_empty()
            && count != n
        {
            report.push(
                format!("{np}.static_ips"),
                format!("{n} instances need {n} static IPs on network {net_name:?}, found {count}"),
            );
        }
    }
    if networks.len() > 1 {
        for want in ["dns", "gateway"] {
            let claimed: Vec<&String> = networks
                .iter()
                .filter(|(_, n)| {
                    n.get("default")
                        .and_then(Value::as_array)
                        .is_some_and(|d| d.iter().any(|x| x.as_str() == Some(want)))
                })
                .map(|(np, _)| np)
                .collect();
            match claimed.as_slice() {
                [] => report.push(
                    key_path(p, "networks"),
                    format!("with several networks, one must list {want:?} in its \"default\""),
                ),
                [_] => {}
                [_, rest @ ..] => {
                    for np in rest {
                        report.push(
                            key_path(np, "default"),
                            format!("only one network can be the default for {want:?}"),
                        );
                    }
                }
            }
        }
    }
}
