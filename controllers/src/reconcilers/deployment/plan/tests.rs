//! Planning tests: placement, indexes, scaling, renames and addresses.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use bosh_api::manifest::{CloudConfig, Manifest};

use super::{Existing, Plan, plan, plan_with_errands};

const CLOUD: &str = "
azs: [{name: z1}, {name: z2}, {name: z3}]
vm_types: [{name: small}]
networks:
- name: default
  type: manual
  subnets:
  - {range: 127.77.1.0/24, gateway: 127.77.1.1, azs: [z1], reserved: [127.77.1.2 - 127.77.1.9], static: [127.77.1.10 - 127.77.1.19]}
  - {range: 127.77.2.0/24, gateway: 127.77.2.1, azs: [z2], reserved: [127.77.2.2 - 127.77.2.9], static: [127.77.2.10 - 127.77.2.19]}
  - {range: 127.77.3.0/24, gateway: 127.77.3.1, azs: [z3], reserved: [127.77.3.2 - 127.77.3.9]}
compilation: {workers: 1, az: z1, vm_type: small, network: default}
";

fn cloud() -> CloudConfig {
    CloudConfig::parse(CLOUD, "cloud.yml").unwrap()
}

fn manifest(groups: &str) -> Manifest {
    let src = format!(
        "
name: d
releases: [{{name: r, version: '1'}}]
stemcells: [{{alias: default, os: ubuntu-jammy, version: '1'}}]
update: {{canaries: 1, max_in_flight: 1, canary_watch_time: 1000, update_watch_time: 1000}}
instance_groups:
{groups}"
    );
    Manifest::parse(&src, "manifest.yml").unwrap()
}

fn group(name: &str, instances: u32, azs: &str, extra: &str) -> String {
    format!(
        "- name: {name}
  instances: {instances}
  azs: [{azs}]
  vm_type: small
  stemcell: default
  jobs: [{{name: j, release: r}}]
{extra}"
    )
}

fn ids() -> impl FnMut(&str, u32) -> String {
    let mut n = 0;
    move |_, _| {
        n += 1;
        format!("id-{n}")
    }
}

/// `group/index az ip bootstrap` lines: a compact, readable snapshot.
fn render(p: &Plan) -> Vec<String> {
    p.instances
        .iter()
        .map(|d| {
            let ips: Vec<String> = d
                .ips
                .values()
                .map(|ip| ip.map(|i| i.to_string()).unwrap_or_else(|| "-".into()))
                .collect();
            format!(
                "{}/{} {} {} {}{}",
                d.group,
                d.index,
                d.az.as_deref().unwrap_or("-"),
                ips.join(","),
                d.id,
                if d.bootstrap { " bootstrap" } else { "" }
            )
        })
        .collect()
}

fn existing(p: &Plan) -> Vec<Existing> {
    p.instances
        .iter()
        .map(|d| Existing {
            id: d.id.clone(),
            group: d.group.clone(),
            index: d.index,
            az: d.az.clone(),
            bootstrap: d.bootstrap,
            ips: d.ips.iter().filter_map(|(n, ip)| ip.map(|ip| (n.clone(), ip))).collect(),
        })
        .collect()
}

const NET: &str = "  networks: [{name: default}]\n";

/// A fresh group spreads over its AZs in order, with indexes from 0, the lowest free dynamic IPs and index 0 as bootstrap.
#[test]
fn fresh_group_is_spread_over_azs_with_lowest_free_addresses() {
    let m = manifest(&group("web", 4, "z1, z2", NET));
    let p = plan(&m, &cloud(), &[], &BTreeSet::new(), &mut ids()).unwrap();
    assert_eq!(
        render(&p),
        [
            "web/0 z1 127.77.1.20 id-1 bootstrap",
            "web/1 z2 127.77.2.20 id-2",
            "web/2 z1 127.77.1.21 id-3",
            "web/3 z2 127.77.2.21 id-4",
        ]
    );
    assert!(p.delete.is_empty());
}

/// Scaling 3 → 5 → 2 keeps ids, indexes and addresses; scale-down removes the highest index of the most-loaded AZ.
#[test]
fn scaling_keeps_identities_and_removes_from_the_most_loaded_az() {
    let c = cloud();
    let mut next = ids();
    let p3 =
        plan(&manifest(&group("web", 3, "z1, z2, z3", NET)), &c, &[], &BTreeSet::new(), &mut next)
            .unwrap();
    let p5 = plan(
        &manifest(&group("web", 5, "z1, z2, z3", NET)),
        &c,
        &existing(&p3),
        &BTreeSet::new(),
        &mut next,
    )
    .unwrap();
    assert_eq!(
        render(&p5),
        [
            "web/0 z1 127.77.1.20 id-1 bootstrap",
            "web/1 z2 127.77.2.20 id-2",
            "web/2 z3 127.77.3.10 id-3",
            "web/3 z1 127.77.1.21 id-4",
            "web/4 z2 127.77.2.21 id-5",
        ]
    );
    assert!(p5.instances[..3].iter().all(|d| d.existing) && !p5.instances[3].existing);
    let p2 = plan(
        &manifest(&group("web", 2, "z1, z2, z3", NET)),
        &c,
        &existing(&p5),
        &BTreeSet::new(),
        &mut next,
    )
    .unwrap();
    assert_eq!(render(&p2), ["web/0 z1 127.77.1.20 id-1 bootstrap", "web/1 z2 127.77.2.20 id-2"]);
    assert_eq!(p2.delete, ["id-3", "id-4", "id-5"]);
}

/// Static IPs stay with the instances that had them, and new instances take the remaining ones.
#[test]
fn static_ips_stay_with_their_instances() {
    let c = cloud();
    let mut next = ids();
    let net = "  networks: [{name: default, static_ips: [127.77.1.12, 127.77.1.11]}]\n";
    let p1 =
        plan(&manifest(&group("db", 2, "z1", net)), &c, &[], &BTreeSet::new(), &mut next).unwrap();
    assert_eq!(render(&p1), ["db/0 z1 127.77.1.12 id-1 bootstrap", "db/1 z1 127.77.1.11 id-2"]);
    // A third static IP and a third instance: the first two keep theirs.
    let net3 =
        "  networks: [{name: default, static_ips: [127.77.1.10, 127.77.1.11, 127.77.1.12]}]\n";
    let p2 = plan(
        &manifest(&group("db", 3, "z1", net3)),
        &c,
        &existing(&p1),
        &BTreeSet::new(),
        &mut next,
    )
    .unwrap();
    assert_eq!(
        render(&p2),
        [
            "db/0 z1 127.77.1.12 id-1 bootstrap",
            "db/1 z1 127.77.1.11 id-2",
            "db/2 z1 127.77.1.10 id-3"
        ]
    );
}

/// F8: a static IP held outside the deployment is not taken, and the
/// error names it.
#[test]
fn a_static_ip_held_elsewhere_is_refused_by_name() {
    let net = "  networks: [{name: default, static_ips: [127.77.1.12]}]\n";
    let outside: BTreeSet<Ipv4Addr> = ["127.77.1.12".parse().unwrap()].into();
    let err = plan(&manifest(&group("db", 1, "z1", net)), &cloud(), &[], &outside, &mut ids())
        .unwrap_err();
    assert_eq!(
        err,
        [
            "instance_groups[0] (db): instance group db in az z1 needs 1 new addresses on network \"default\"; its static_ips had 0 free; in use outside this deployment (another deployment or a compile VM): 127.77.1.12"
        ]
    );
}

/// No address is handed out twice: not across groups, and not one used outside the deployment.
#[test]
fn addresses_are_never_shared() {
    let m = manifest(&(group("a", 3, "z1", NET) + &group("b", 3, "z1", NET)));
    let outside: BTreeSet<Ipv4Addr> =
        ["127.77.1.20", "127.77.1.22"].iter().map(|s| s.parse().unwrap()).collect();
    let p = plan(&m, &cloud(), &[], &outside, &mut ids()).unwrap();
    let all: Vec<Ipv4Addr> = p.instances.iter().map(|d| d.ips["default"].unwrap()).collect();
    let unique: BTreeSet<Ipv4Addr> = all.iter().copied().collect();
    assert_eq!(unique.len(), 6, "{all:?}");
    assert!(unique.is_disjoint(&outside));
    assert_eq!(all[0].to_string(), "127.77.1.21", "the lowest address not used elsewhere");
}

/// A renamed group takes its instances over through migrated_from; a removed AZ takes its instances with it.
#[test]
fn renames_keep_instances_and_removed_azs_drop_theirs() {
    let c = cloud();
    let mut next = ids();
    let p1 = plan(&manifest(&group("old", 2, "z1, z2", NET)), &c, &[], &BTreeSet::new(), &mut next)
        .unwrap();
    let renamed = group("new", 2, "z1, z2", &format!("{NET}  migrated_from: [{{name: old}}]\n"));
    let p2 = plan(&manifest(&renamed), &c, &existing(&p1), &BTreeSet::new(), &mut next).unwrap();
    assert_eq!(render(&p2), ["new/0 z1 127.77.1.20 id-1 bootstrap", "new/1 z2 127.77.2.20 id-2"]);
    assert!(p2.delete.is_empty(), "{:?}", p2.delete);

    let only_z2 = group("new", 2, "z2", NET);
    let p3 = plan(&manifest(&only_z2), &c, &existing(&p2), &BTreeSet::new(), &mut next).unwrap();
    assert_eq!(p3.delete, ["id-1"], "the z1 instance goes with its AZ");
    assert_eq!(render(&p3), ["new/0 z2 127.77.2.21 id-3 bootstrap", "new/1 z2 127.77.2.20 id-2"]);
}

/// A group removed from the manifest loses its instances; errand groups get none.
#[test]
fn removed_groups_and_errands_have_no_instances() {
    let c = cloud();
    let mut next = ids();
    let p1 = plan(
        &manifest(&(group("a", 1, "z1", NET) + &group("b", 1, "z1", NET))),
        &c,
        &[],
        &BTreeSet::new(),
        &mut next,
    )
    .unwrap();
    let errand = group("b", 1, "z1", &format!("{NET}  lifecycle: errand\n"));
    let p2 = plan(
        &manifest(&(group("a", 1, "z1", NET) + &errand)),
        &c,
        &existing(&p1),
        &BTreeSet::new(),
        &mut next,
    )
    .unwrap();
    assert_eq!(render(&p2), ["a/0 z1 127.77.1.20 id-1 bootstrap"]);
    assert_eq!(p2.delete, ["id-2"]);
    let p3 =
        plan(&manifest(&group("a", 1, "z1", NET)), &c, &existing(&p2), &BTreeSet::new(), &mut next)
            .unwrap();
    assert!(p3.delete.is_empty());
}

/// An errand group gets its instances while a run wants them, and loses
/// them once none does.
#[test]
fn errand_groups_have_instances_only_while_a_run_wants_them() {
    let c = cloud();
    let mut next = ids();
    let m = manifest(
        &(group("a", 1, "z1", NET) + &group("e", 2, "z1", &format!("{NET}  lifecycle: errand\n"))),
    );
    let running: BTreeSet<String> = ["e".to_string()].into();
    let p1 = plan_with_errands(&m, &c, &running, &[], &BTreeSet::new(), &mut next).unwrap();
    assert_eq!(
        render(&p1),
        [
            "a/0 z1 127.77.1.20 id-1 bootstrap",
            "e/0 z1 127.77.1.21 id-2 bootstrap",
            "e/1 z1 127.77.1.22 id-3"
        ]
    );
    let p2 = plan(&m, &c, &existing(&p1), &BTreeSet::new(), &mut next).unwrap();
    assert_eq!(render(&p2), ["a/0 z1 127.77.1.20 id-1 bootstrap"]);
    let mut gone = p2.delete.clone();
    gone.sort();
    assert_eq!(gone, ["id-2", "id-3"]);
}

/// A full subnet is one error per group, network and AZ naming what is
/// needed and what was free (not one line per instance).
#[test]
fn a_full_subnet_is_reported() {
    // z3's subnet shrunk to a /29: only 127.77.3.6 is left for instances.
    let tiny = CLOUD.replace(
        "{range: 127.77.3.0/24, gateway: 127.77.3.1, azs: [z3], reserved: [127.77.3.2 - 127.77.3.9]}",
        "{range: 127.77.3.0/29, gateway: 127.77.3.1, azs: [z3], reserved: [127.77.3.2 - 127.77.3.5]}",
    );
    let c = CloudConfig::parse(&tiny, "cloud.yml").unwrap();
    let m = manifest(&group("web", 3, "z3", NET));
    let err = plan(&m, &c, &[], &BTreeSet::new(), &mut ids()).unwrap_err();
    assert_eq!(
        err,
        [
            "instance_groups[0] (web): instance group web in az z3 needs 3 new addresses on network \"default\"; subnet 127.77.3.0/29 had 1 free"
        ]
    );
}

/// Regression (issue 12): 100,000 instances on a /24 used to plan for half
/// an hour (placement was quadratic) and fail with 99,800 messages; now
/// placement is linear and the failure is one line.
#[test]
fn a_huge_group_fails_at_once_with_one_error() {
    let c = cloud();
    let m = manifest(&group("web", 100_000, "z1", NET));
    let err = plan(&m, &c, &[], &BTreeSet::new(), &mut ids()).unwrap_err();
    assert_eq!(err.len(), 1, "{err:?}");
    assert!(err[0].contains("needs 100000 new addresses"), "{err:?}");
    assert!(err[0].contains("subnet 127.77.1.0/24 had 235 free"), "{err:?}");
}

/// The up-front check names the group, AZ, need and the subnet's size,
/// and passes a group that fits.
#[test]
fn capacity_is_checked_before_planning() {
    let c = cloud();
    let m = manifest(&group("web", 100_000, "z1, z2", NET));
    let errs = super::capacity_errors(&m, &c);
    assert_eq!(
        errs,
        [
            "instance_groups[0].instances: instance group web in az z1 needs 50000 addresses on network \"default\"; subnet 127.77.1.0/24 has 235 dynamic addresses",
            "instance_groups[0].instances: instance group web in az z2 needs 50000 addresses on network \"default\"; subnet 127.77.2.0/24 has 235 dynamic addresses",
        ]
    );
    assert!(
        super::capacity_errors(&manifest(&group("web", 705, "z1, z2, z3", NET)), &c).is_empty()
    );
    // z3 has no static range: 245 dynamic addresses; 706 puts 236 in z1.
    assert_eq!(
        super::capacity_errors(&manifest(&group("web", 706, "z1, z2, z3", NET)), &c).len(),
        1
    );
}

/// 30,000 instances over three AZs on a /16 each: balanced, indexes
/// 0..30000, addresses all distinct; scaling down to 3 keeps indexes 0-2.
#[test]
fn large_groups_plan_balanced_with_distinct_addresses() {
    let big = "
azs: [{name: z1}, {name: z2}, {name: z3}]
vm_types: [{name: small}]
networks:
- name: default
  type: manual
  subnets:
  - {range: 10.1.0.0/16, gateway: 10.1.0.1, azs: [z1]}
  - {range: 10.2.0.0/16, gateway: 10.2.0.1, azs: [z2]}
  - {range: 10.3.0.0/16, gateway: 10.3.0.1, azs: [z3]}
";
    let c = CloudConfig::parse(big, "cloud.yml").unwrap();
    let m = manifest(&group("web", 30_000, "z1, z2, z3", NET));
    let mut next = ids();
    let p = plan(&m, &c, &[], &BTreeSet::new(), &mut next).unwrap();
    assert_eq!(p.instances.len(), 30_000);
    let indexes: Vec<u32> = p.instances.iter().map(|d| d.index).collect();
    assert_eq!(indexes, (0..30_000).collect::<Vec<u32>>());
    let ips: BTreeSet<Ipv4Addr> =
        p.instances.iter().filter_map(|d| d.ips.get("default").copied().flatten()).collect();
    assert_eq!(ips.len(), 30_000);
    for az in ["z1", "z2", "z3"] {
        let n = p.instances.iter().filter(|d| d.az.as_deref() == Some(az)).count();
        assert_eq!(n, 10_000, "{az}");
    }
    let m3 = manifest(&group("web", 3, "z1, z2, z3", NET));
    let p3 = plan(&m3, &c, &existing(&p), &BTreeSet::new(), &mut next).unwrap();
    assert_eq!(p3.delete.len(), 29_997);
    let left: Vec<(u32, Option<&str>)> =
        p3.instances.iter().map(|d| (d.index, d.az.as_deref())).collect();
    assert_eq!(left, [(0, Some("z1")), (1, Some("z2")), (2, Some("z3"))]);
}
