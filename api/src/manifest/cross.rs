//! What a manifest takes from a cloud config: vm types and extensions, azs,
//! networks (with subnets in the group's azs and static IPs inside their
//! `static` ranges) and disk types. Errors name the manifest's paths, since
//! that is the document the user is about to change.

use super::{
    CloudConfig, Manifest, NetworkType, ValidationErrors,
    ip::{self, IpRange},
    validate::{Report, check_ref, has_placeholder},
};

/// Checks every name the manifest takes from `cloud`; `file` names the manifest in errors.
pub fn validate_against_cloud_config(
    manifest: &Manifest,
    cloud: &CloudConfig,
    file: &str,
) -> Result<(), ValidationErrors> {
    let mut report = Report::default();
    let vm_types: Vec<&str> = cloud.vm_types.iter().map(|t| t.name.as_str()).collect();
    let extensions: Vec<&str> = cloud.vm_extensions.iter().map(|t| t.name.as_str()).collect();
    let azs: Vec<&str> = cloud.azs.iter().map(|a| a.name.as_str()).collect();
    let networks: Vec<&str> = cloud.networks.iter().map(|n| n.name.as_str()).collect();
    let disks: Vec<&str> = cloud.disk_types.iter().map(|d| d.name.as_str()).collect();
    let cc = "the cloud config";

    for (i, ig) in manifest.instance_groups.iter().enumerate() {
        let p = format!("instance_groups[{i}]");
        if let Some(t) = &ig.vm_type {
            check_ref(&mut report, format!("{p}.vm_type"), t, &vm_types, "vm type", cc);
        }
        for (j, e) in ig.vm_extensions.iter().enumerate() {
            let path = format!("{p}.vm_extensions[{j}]");
            check_ref(&mut report, path, e, &extensions, "vm extension", cc);
        }
        if ig.azs.is_empty() && !azs.is_empty() {
            report.push(&p, r#"required key "azs" is missing (the cloud config defines azs)"#);
        }
        for (j, az) in ig.azs.iter().enumerate() {
            check_ref(&mut report, format!("{p}.azs[{j}]"), az, &azs, "az", cc);
        }
        for (j, m) in ig.migrated_from.iter().enumerate() {
            if let Some(az) = &m.az {
                check_ref(&mut report, format!("{p}.migrated_from[{j}].az"), az, &azs, "az", cc);
            }
        }
        if let Some(t) = &ig.persistent_disk_type {
            let path = format!("{p}.persistent_disk_type");
            check_ref(&mut report, path, t, &disks, "disk type", cc);
        }
        for (j, d) in ig.persistent_disks.iter().enumerate() {
            let path = format!("{p}.persistent_disks[{j}].type");
            check_ref(&mut report, path, &d.type_, &disks, "disk type", cc);
        }
        for (j, net_ref) in ig.networks.iter().enumerate() {
            let np = format!("{p}.networks[{j}]");
            let Some(net) = cloud.networks.iter().find(|n| n.name == net_ref.name) else {
                check_ref(
                    &mut report,
                    format!("{np}.name"),
                    &net_ref.name,
                    &networks,
                    "network",
                    cc,
                );
                continue;
            };
            // Subnets usable by this group: those in one of its azs (all if none say).
            let usable: Vec<&super::Subnet> = net
                .subnets
                .iter()
                .filter(|s| {
                    let s_azs = s.az_names();
                    s_azs.is_empty()
                        || ig.azs.is_empty()
                        || s_azs.iter().any(|a| ig.azs.contains(&a.to_string()))
                })
                .collect();
            if net.network_type() != NetworkType::Vip && !net.subnets.is_empty() {
                for az in &ig.azs {
                    let covered = net.subnets.iter().any(|s| {
                        let s_azs = s.az_names();
                        s_azs.is_empty() || s_azs.contains(&az.as_str())
                    });
                    if !covered && !has_placeholder(az) {
                        report.push(
                            format!("{np}.name"),
                            format!("network {:?} has no subnet in az {az:?}", net.name),
                        );
                    }
                }
            }
            match net.network_type() {
                NetworkType::Vip => {}
                NetworkType::Dynamic if !net_ref.static_ips.is_empty() => report.push(
                    format!("{np}.static_ips"),
                    format!("network {:?} is dynamic and cannot have static IPs", net.name),
                ),
                NetworkType::Dynamic => {}
                NetworkType::Manual => {
                    let statics: Vec<IpRange> = usable
                        .iter()
                        .flat_map(|s| s.r#static.iter())
                        .filter_map(|r| ip::parse_range(r).ok())
                        .collect();
                    for (k, entry) in net_ref.static_ips.iter().enumerate() {
                        let Ok(r) = ip::parse_range(entry) else { continue };
                        if !statics.iter().any(|s| s.covers(&r)) {
                            report.push(
                                format!("{np}.static_ips[{k}]"),
                                format!(
                                    "static IP {r} is not in the static ranges of network {:?}{}",
                                    net.name,
                                    if ig.azs.is_empty() {
                                        String::new()
                                    } else {
                                        format!(" in azs {:?}", ig.azs)
                                    }
                                ),
                            );
                        }
                    }
                }
            }
        }
    }
    if report.errors.is_empty() {
        Ok(())
    } else {
        Err(ValidationErrors { file: file.to_string(), errors: report.errors })
    }
}
