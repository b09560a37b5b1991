//! Semantic rules for cloud configs: names that follow [`crate::names`]
//! and are unique, subnets that make sense
//! (gateway, reserved and static inside the range, static not reserved),
//! and references to azs, networks and vm types inside the document.

use serde_json::Value;

use super::{
    ip::{self, IpRange},
    validate::{
        Report, check_ref, has_placeholder, key_path, list, named_list, names, str_of, strs,
    },
};

/// Checks a cloud config.
pub(crate) fn check(cc: &Value, report: &mut Report) {
    // References (subnet azs, compilation) are checked against these
    // names, so they follow the rule too.
    named_list(cc, "", "azs", "az", report);
    named_list(cc, "", "vm_types", "vm type", report);
    named_list(cc, "", "vm_extensions", "vm extension", report);
    named_list(cc, "", "disk_types", "disk type", report);
    named_list(cc, "", "networks", "network", report);

    let azs = names(cc, "azs");
    for (np, net) in list(cc, "", "networks") {
        let kind = str_of(net, "type").unwrap_or("manual");
        if kind == "manual" && net.get("subnets").is_none() {
            report.push(&np, r#"required key "subnets" is missing (manual networks need one)"#);
        }
        let mut ranges: Vec<(String, IpRange)> = Vec::new();
        for (sp, subnet) in list(net, &np, "subnets") {
            check_subnet_azs(subnet, &sp, &azs, report);
            if kind == "manual"
                && let Some(r) = check_manual_subnet(subnet, &sp, report)
            {
                if let Some((other, _)) = ranges.iter().find(|(_, o)| o.overlaps(&r)) {
                    report.push(
                        key_path(&sp, "range"),
                        format!("range overlaps the range of {other}"),
                    );
                }
                ranges.push((sp.clone(), r));
            }
        }
    }
    check_compilation(cc, &azs, report);
}

fn check_subnet_azs(subnet: &Value, sp: &str, azs: &[&str], report: &mut Report) {
    if subnet.get("az").is_some() && subnet.get("azs").is_some() {
        report.push(sp, r#"give only one of "az" and "azs""#);
    }
    if let Some(az) = str_of(subnet, "az") {
        check_ref(report, key_path(sp, "az"), az, azs, "az", "azs");
    }
    for (ap, az) in strs(subnet, sp, "azs") {
        check_ref(report, ap, az, azs, "az", "azs");
    }
}

/// Checks a manual subnet and returns its range when that parsed.
fn check_manual_subnet(subnet: &Value, sp: &str, report: &mut Report) -> Option<IpRange> {
    for k in ["range", "gateway"] {
        if subnet.get(k).is_none() {
            report.push(sp, format!("required key {k:?} is missing (manual networks need it)"));
        }
    }
    let range_str = str_of(subnet, "range").filter(|s| !has_placeholder(s))?;
    let range = match ip::parse_range(range_str) {
        Ok(r) => r,
        Err(e) => {
            report.push(key_path(sp, "range"), e);
            return None;
        }
    };
    if let Some(gw) = str_of(subnet, "gateway").filter(|s| !has_placeholder(s)) {
        match ip::parse_ip(gw) {
            Ok(g) if !range.contains(g) => report.push(
                key_path(sp, "gateway"),
                format!("gateway {g} is outside the subnet range {range_str}"),
            ),
            Ok(_) => {}
            Err(e) => report.push(key_path(sp, "gateway"), e),
        }
    }
    for (dp, dns) in strs(subnet, sp, "dns") {
        if !has_placeholder(dns)
            && let Err(e) = ip::parse_ip(dns)
        {
            report.push(dp, e);
        }
    }
    let reserved = ranges_in(subnet, sp, "reserved", range, range_str, report);
    let statics = ranges_in(subnet, sp, "static", range, range_str, report);
    for (p, s) in &statics {
        if let Some((_, r)) = reserved.iter().find(|(_, r)| r.overlaps(s)) {
            report.push(p, format!("static range {s} overlaps reserved range {r}"));
        }
    }
    Some(range)
}

/// Parses a list of ranges, each of which must lie inside the subnet.
fn ranges_in(
    subnet: &Value,
    sp: &str,
    key: &str,
    subnet_range: IpRange,
    range_str: &str,
    report: &mut Report,
) -> Vec<(String, IpRange)> {
    let mut out = Vec::new();
    for (p, s) in strs(subnet, sp, key) {
        if has_placeholder(s) {
            continue;
        }
        match ip::parse_range(s) {
            Ok(r) if !subnet_range.covers(&r) => {
                report.push(p, format!("{key} range {r} is outside the subnet range {range_str}"))
            }
            Ok(r) => out.push((p, r)),
            Err(e) => report.push(p, e),
        }
    }
    out
}

fn check_compilation(cc: &Value, azs: &[&str], report: &mut Report) {
    let Some(c) = cc.get("compilation").filter(|c| c.is_object()) else { return };
    let p = "compilation";
    if let Some(net) = str_of(c, "network") {
        check_ref(
            report,
            key_path(p, "network"),
            net,
            &names(cc, "networks"),
            "network",
            "networks",
        );
    }
    match str_of(c, "az") {
        Some(az) => check_ref(report, key_path(p, "az"), az, azs, "az", "azs"),
        None if !azs.is_empty() => {
            report.push(p, r#"required key "az" is missing (the cloud config defines azs)"#)
        }
        None => {}
    }
    if let Some(t) = str_of(c, "vm_type") {
        check_ref(report, key_path(p, "vm_type"), t, &names(cc, "vm_types"), "vm type", "vm_types");
    }
    let sizing = ["vm_type", "vm_resources", "cloud_properties"];
    match sizing.iter().filter(|k| c.get(**k).is_some()).count() {
        0 => report.push(p, r#"required key "vm_type" is missing (or give "vm_resources")"#),
        1 => {}
        _ => report.push(p, r#"give only one of "vm_type", "vm_resources" and "cloud_properties""#),
    }
    if c.get("workers").and_then(Value::as_u64) == Some(0) {
        report.push(key_path(p, "workers"), "expected at least 1 worker, found 0");
    }
}
