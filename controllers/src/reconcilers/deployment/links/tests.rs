//! Link resolution as a table: what each consumer sees, and every error.

use std::collections::BTreeMap;
use std::sync::Arc;

use bosh_api::manifest::Manifest;
use bosh_api::release::JobSpec;
use serde_json::{Value, json};

use super::*;

/// Job specs of a small release `r`: `db` provides `conn` (type
/// `postgres`, exposing `port` and `tls.enabled`), `db2` provides another
/// `postgres`, `web` consumes `db` (postgres) and optionally `cache`.
fn specs() -> BTreeMap<(String, String), Arc<JobTemplates>> {
    let job = |yaml: &str| {
        let spec = JobSpec::parse(yaml, "spec").unwrap();
        let t = JobTemplates {
            name: spec.name.clone(),
            spec,
            monit: String::new(),
            templates: BTreeMap::new(),
        };
        (("r".to_string(), t.name.clone()), Arc::new(t))
    };
    [
        job(
            "name: db\nprovides: [{name: conn, type: postgres, properties: [port, tls.enabled]}]\n\
             properties: {port: {default: 5432}, tls.enabled: {default: false}}\n",
        ),
        job("name: db2\nprovides: [{name: conn2, type: postgres}]\n"),
        job("name: web\nconsumes: [{name: db, type: postgres}, \
             {name: cache, type: redis, optional: true}]\n"),
    ]
    .into_iter()
    .collect()
}

/// A manifest from its instance groups (each `{name, jobs, instances}`),
/// on network `n1`.
fn manifest(groups: Value, features: Value) -> Manifest {
    let groups: Vec<Value> = groups
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            let mut g = g.clone();
            g["stemcell"] = json!("default");
            if g.get("networks").is_none() {
                g["networks"] = json!([{"name": "n1"}]);
            }
            g
        })
        .collect();
    serde_json::from_value(json!({
        "name": "dep",
        "releases": [{"name": "r", "version": "1"}],
        "instance_groups": groups,
        "features": features,
    }))
    .unwrap()
}

/// `n` planned instances of `group`, at 10.0.0.<base + index> on `n1`.
fn planned(group: &str, n: u32, base: u8) -> Vec<Desired> {
    (0..n)
        .map(|i| Desired {
            id: format!("{group}-id-{i}"),
            group: group.into(),
            index: i,
            az: Some("z1".into()),
            bootstrap: i == 0,
            ips: [("n1".to_string(), Some(std::net::Ipv4Addr::new(10, 0, 0, base + i as u8)))]
                .into(),
            existing: false,
        })
        .collect()
}

fn job(name: &str, extra: Value) -> Value {
    let mut j = json!({"name": name, "release": "r"});
    if let (Some(j), Some(e)) = (j.as_object_mut(), extra.as_object()) {
        j.extend(e.clone());
    }
    j
}

fn run(groups: Value, planned: &[Desired]) -> Result<Resolved, Vec<String>> {
    resolve("dep", &manifest(groups, Value::Null), &specs(), planned, &BTreeMap::new())
}

fn web_links(r: &Resolved) -> &BTreeMap<String, Link> {
    &r.by_job[&("web".to_string(), "web".to_string())]
}

/// An implicit link (one provider of the type) gives the consumer the
/// provider's instances with their IPs, its properties as bound for it
/// (defaults filled in, nested by dotted name) and the group query's parts.
#[test]
fn implicit_link_carries_instances_properties_and_address_parts() {
    let mut p = planned("pg", 2, 10);
    p.extend(planned("web", 1, 20));
    let r = run(
        json!([
            {"name": "pg", "instances": 2, "jobs": [job("db", json!({"properties": {"port": 6000}}))]},
            {"name": "web", "instances": 1, "jobs": [job("web", json!({}))]},
        ]),
        &p,
    )
    .unwrap();
    let l = &web_links(&r)["db"];
    let addrs: Vec<_> = l.instances.iter().map(|i| i.address.clone().unwrap()).collect();
    assert_eq!(addrs, ["10.0.0.10", "10.0.0.11"]);
    assert_eq!(l.instances[0].id.as_deref(), Some("pg-id-0"));
    assert!(l.instances[0].bootstrap && !l.instances[1].bootstrap);
    assert_eq!(l.instances[1].index, Some(1));
    assert_eq!(l.instances[1].name.as_deref(), Some("pg"));
    assert_eq!(l.instances[1].az.as_deref(), Some("z1"));
    assert_eq!(l.properties, json!({"port": 6000, "tls": {"enabled": false}}));
    assert_eq!(l.instance_group.as_deref(), Some("pg"));
    assert_eq!(l.default_network.as_deref(), Some("n1"));
    assert_eq!(l.deployment_name.as_deref(), Some("dep"));
    // The optional link with no provider is absent.
    assert!(!web_links(&r).contains_key("cache"));
}

/// With `use_dns_addresses` instances are addressed by DNS name, unless the
/// consumer asks for `ip_addresses`.
#[test]
fn dns_addresses_unless_the_consumer_wants_ips() {
    let groups = |consumes: Value| {
        json!([
            {"name": "pg_Main", "instances": 1, "jobs": [job("db", json!({}))]},
            {"name": "web", "instances": 1, "jobs": [job("web", json!({"consumes": consumes}))]},
        ])
    };
    let p = planned("pg_Main", 1, 10);
    let dns = json!({"use_dns_addresses": true});
    let r =
        resolve("Dep", &manifest(groups(json!({})), dns.clone()), &specs(), &p, &BTreeMap::new())
            .unwrap();
    assert_eq!(
        web_links(&r)["db"].instances[0].address.as_deref(),
        Some("pg_Main-id-0.pg-main.n1.dep.bosh")
    );
    let r = resolve(
        "Dep",
        &manifest(groups(json!({"db": {"ip_addresses": true}})), dns),
        &specs(),
        &p,
        &BTreeMap::new(),
    )
    .unwrap();
    assert_eq!(web_links(&r)["db"].instances[0].address.as_deref(), Some("10.0.0.10"));
}

/// With `use_short_dns_addresses` instances are addressed by their short
/// names and the link carries the group and network numbers and the
/// director's AZ numbers; without, the AZ numbers only.
#[test]
fn short_dns_addresses_carry_the_directors_numbers() {
    use bosh_api::objects::Wanted;

    let groups = json!([
        {"name": "pg_Main", "instances": 2, "jobs": [job("db", json!({}))]},
        {"name": "web", "instances": 1, "jobs": [job("web", json!({}))]},
    ]);
    let p = planned("pg_Main", 2, 10);
    let mut numbers = DnsNumbersSpec::default();
    numbers.assign(&Wanted {
        azs: vec!["z1".into()],
        networks: vec!["n0".into(), "n1".into()],
        groups: vec![
            ("Dep".into(), "web".into(), GroupType::InstanceGroup),
            ("Dep".into(), "pg_Main".into(), GroupType::InstanceGroup),
        ],
        instances: vec!["pg_Main-id-1".into(), "pg_Main-id-0".into()],
        links: vec![],
    });
    let features = json!({"use_dns_addresses": true, "use_short_dns_addresses": true});
    let m = manifest(groups.clone(), features);
    let r = resolve_with("Dep", &m, &specs(), &p, &BTreeMap::new(), &numbers).unwrap();
    let l = &web_links(&r)["db"];
    let addresses: Vec<_> = l.instances.iter().map(|i| i.address.clone().unwrap()).collect();
    assert_eq!(addresses, ["q-m2n2s0.q-g2.bosh", "q-m1n2s0.q-g2.bosh"]);
    assert_eq!(
        (l.use_short_dns_addresses, l.group_number, l.network_number),
        (true, Some(2), Some(2))
    );
    assert_eq!(l.az_numbers.get("z1"), Some(&1));

    let m = manifest(groups, json!({"use_dns_addresses": true}));
    let r = resolve_with("Dep", &m, &specs(), &p, &BTreeMap::new(), &numbers).unwrap();
    let l = &web_links(&r)["db"];
    assert_eq!(l.instances[0].address.as_deref(), Some("pg_Main-id-0.pg-main.n1.dep.bosh"));
    assert_eq!((l.use_short_dns_addresses, l.group_number), (false, None));
    assert_eq!(l.az_numbers.get("z1"), Some(&1));
}

/// With `use_link_dns_names` (which turns on DNS and short addresses)
/// names use the link group's number (`<as>-<type>`), as BOSH's
/// `encode_link`; the link groups are what `link_groups` lists.
#[test]
fn link_dns_names_use_the_link_groups_number() {
    use bosh_api::objects::Wanted;

    let groups = json!([
        {"name": "pg", "instances": 1,
         "jobs": [job("db", json!({"provides": {"conn": {"as": "main"}}}))]},
        {"name": "web", "instances": 1, "jobs": [job("web", json!({}))]},
    ]);
    let m = manifest(groups, json!({"use_link_dns_names": true}));
    let link_groups = link_groups(&m, &specs());
    assert_eq!(link_groups, [("main-postgres".to_string(), "pg".to_string())]);
    let p = planned("pg", 1, 10);
    let mut numbers = DnsNumbersSpec::default();
    numbers.assign(&Wanted {
        networks: vec!["n1".into()],
        groups: vec![("dep".into(), "pg".into(), GroupType::InstanceGroup)],
        instances: vec!["pg-id-0".into()],
        links: vec![("dep".into(), "main-postgres".into(), "pg".into())],
        ..Default::default()
    });
    let r = resolve_with("dep", &m, &specs(), &p, &BTreeMap::new(), &numbers).unwrap();
    let l = &web_links(&r)["db"];
    assert_eq!(l.instances[0].address.as_deref(), Some("q-m1n1s0.q-g2.bosh"));
    assert_eq!(
        (l.use_short_dns_addresses, l.group_number, l.network_number),
        (true, Some(2), Some(1))
    );
}

/// `from` picks a provider by its `as` among several of the same type;
/// `network` picks the provider's network.
#[test]
fn explicit_link_by_alias_and_network() {
    let mut p = planned("pg", 1, 10);
    p[0].ips.insert("n2".into(), Some(std::net::Ipv4Addr::new(10, 1, 0, 9)));
    let r = run(
        json!([
            {"name": "pg", "instances": 1, "networks": [{"name": "n1"}, {"name": "n2"}],
             "jobs": [job("db", json!({"provides": {"conn": {"as": "main"}}})), job("db2", json!({}))]},
            {"name": "web", "instances": 1,
             "jobs": [job("web", json!({"consumes": {"db": {"from": "main", "network": "n2"}}}))]},
        ]),
        &p,
    )
    .unwrap();
    let l = &web_links(&r)["db"];
    assert_eq!(l.instances[0].address.as_deref(), Some("10.1.0.9"));
    assert_eq!(l.default_network.as_deref(), Some("n2"));
    assert_eq!(l.properties["port"], 5432);
}

/// `nil` opts a required link out; a manual link is passed as written.
#[test]
fn nil_and_manual_links() {
    let r = run(
        json!([{"name": "web", "instances": 1, "jobs": [job("web", json!({"consumes": {
            "db": "nil",
            "cache": {"address": "cache.example.com", "properties": {"a": 1},
                      "instances": [{"address": "10.9.9.9"}]},
        }}))]}]),
        &[],
    )
    .unwrap();
    let links = web_links(&r);
    assert!(!links.contains_key("db"));
    assert_eq!(links["cache"].address.as_deref(), Some("cache.example.com"));
    assert_eq!(links["cache"].properties, json!({"a": 1}));
    assert_eq!(links["cache"].instances[0].address.as_deref(), Some("10.9.9.9"));
}

/// A provider opted out with `nil` provides nothing.
#[test]
fn opted_out_provider_is_not_a_candidate() {
    let r = run(
        json!([
            {"name": "pg", "instances": 1,
             "jobs": [job("db", json!({"provides": {"conn": "nil"}})), job("db2", json!({}))]},
            {"name": "web", "instances": 1, "jobs": [job("web", json!({}))]},
        ]),
        &planned("pg", 1, 10),
    )
    .unwrap();
    assert_eq!(web_links(&r)["db"].properties, json!({}), "db2's link exposes no property");
}

/// Every error, with the group, job, link and type or the manifest path.
#[test]
fn errors_name_group_job_link_type_or_path() {
    let web = |consumes: Value| json!({"name": "web", "instances": 1, "jobs": [job("web", json!({"consumes": consumes}))]});
    let pg = |jobs: Value| json!({"name": "pg", "instances": 1, "jobs": jobs});
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "missing required link",
            json!([web(json!({}))]),
            "instance group web, job web: link db (type postgres): no provider of type postgres \
             in deployment dep",
        ),
        (
            "ambiguous implicit link",
            json!([pg(json!([job("db", json!({})), job("db2", json!({}))])), web(json!({}))]),
            "instance group web, job web: link db (type postgres): 2 providers of type postgres \
             (name one with instance_groups[1].jobs[0].consumes.db.from): \
             pg.db.conn (as conn, type postgres), pg.db2.conn2 (as conn2, type postgres)",
        ),
        (
            "unknown provider",
            json!([pg(json!([job("db", json!({}))])), web(json!({"db": {"from": "nope"}}))]),
            "instance group web, job web: link db (type postgres): no provider named \"nope\" in \
             deployment dep (instance_groups[1].jobs[0].consumes.db.from)",
        ),
        (
            "type mismatch",
            json!([
                pg(json!([
                    job("db", json!({"provides": {"conn": {"as": "c"}}})),
                    job("web", json!({"consumes": {"db": "nil"}}))
                ])),
                web(json!({"cache": {"from": "c"}, "db": "nil"}))
            ]),
            "instance group web, job web: link cache (type redis): provider \"c\" has type \
             postgres, not redis",
        ),
        (
            "unknown consumes key",
            json!([web(json!({"db": {"form": "x"}}))]),
            "instance_groups[0].jobs[0].consumes.db.form: unknown key",
        ),
        (
            "from not a string",
            json!([web(json!({"db": {"from": 3}}))]),
            "instance_groups[0].jobs[0].consumes.db.from: expected a string",
        ),
        (
            "link the spec does not consume",
            json!([web(json!({"db": "nil", "queue": {"from": "q"}}))]),
            "instance_groups[0].jobs[0].consumes.queue: job web does not consume a link \"queue\" \
             (its spec consumes db, cache)",
        ),
        (
            "link the spec does not provide",
            json!([
                pg(json!([job("db", json!({"provides": {"other": {"as": "x"}}}))])),
                web(json!({}))
            ]),
            "instance_groups[0].jobs[0].provides.other: job db does not provide a link \"other\"",
        ),
        (
            "shared not a boolean",
            json!([
                pg(json!([job("db", json!({"provides": {"conn": {"shared": "yes"}}}))])),
                web(json!({}))
            ]),
            "instance_groups[0].jobs[0].provides.conn.shared: expected a boolean",
        ),
        (
            "unknown network",
            json!([pg(json!([job("db", json!({}))])), web(json!({"db": {"network": "n9"}}))]),
            "instance group web, job web: link db (type postgres): provider group pg has no \
             network \"n9\" (instance_groups[1].jobs[0].consumes.db.network)",
        ),
        (
            "another deployment",
            json!([web(json!({"db": {"from": "conn", "deployment": "other"}}))]),
            "instance group web, job web: link db (type postgres): no deployment \"other\" \
             (instance_groups[0].jobs[0].consumes.db.deployment)",
        ),
    ];
    for (what, groups, want) in cases {
        let errors = run(groups, &planned("pg", 1, 10)).expect_err(what);
        assert!(errors.iter().any(|e| e.contains(want)), "{what}: {want:?} not in {errors:#?}");
    }
}

/// A link from another deployment: only its shared providers count, and
/// the consumer sees that deployment's instances, properties and name.
#[test]
fn cross_deployment_link_takes_only_shared_providers() {
    let other = |shared: bool| Foreign {
        manifest: manifest(
            json!([{"name": "pg", "instances": 2, "jobs": [job("db", json!({
                "provides": {"conn": {"as": "main_db", "shared": shared}},
                "properties": {"port": 7},
            }))]}]),
            Value::Null,
        ),
        specs: specs(),
        planned: planned("pg", 2, 40),
    };
    let web = json!([{"name": "web", "instances": 1, "jobs": [job("web", json!({
        "consumes": {"db": {"from": "main_db", "deployment": "data"}},
    }))]}]);
    let foreign = BTreeMap::from([("data".to_string(), other(true))]);
    let r = resolve("dep", &manifest(web.clone(), Value::Null), &specs(), &[], &foreign).unwrap();
    let l = &web_links(&r)["db"];
    let addrs: Vec<_> = l.instances.iter().map(|i| i.address.clone().unwrap()).collect();
    assert_eq!(addrs, ["10.0.0.40", "10.0.0.41"]);
    assert_eq!(l.properties["port"], 7);
    assert_eq!(l.deployment_name.as_deref(), Some("data"));
    assert_eq!(r.summary[0].provider.as_deref(), Some("pg/db/conn"));

    let foreign = BTreeMap::from([("data".to_string(), other(false))]);
    let errors = resolve("dep", &manifest(web, Value::Null), &specs(), &[], &foreign).unwrap_err();
    let want = "instance group web, job web: link db (type postgres): no shared provider named \
                \"main_db\" in deployment data";
    assert!(errors.iter().any(|e| e.contains(want)), "{errors:#?}");
}

/// A provider's property change reaches its consumer's link (and so its
/// render key) and no other job's links.
#[test]
fn provider_property_change_reaches_only_its_consumers() {
    let groups = |port: u32| {
        json!([
            {"name": "pg", "instances": 1, "jobs": [job("db", json!({"properties": {"port": port}}))]},
            {"name": "web", "instances": 1, "jobs": [job("web", json!({}))]},
            {"name": "other", "instances": 1, "jobs": [job("db2", json!({"provides": {"conn2": "nil"}}))]},
        ])
    };
    let p = planned("pg", 1, 10);
    let (before, after) = (run(groups(1), &p).unwrap(), run(groups(2), &p).unwrap());
    assert_eq!(web_links(&before)["db"].properties["port"], 1);
    assert_eq!(web_links(&after)["db"].properties["port"], 2);
    for key in [("pg", "db"), ("other", "db2")] {
        let key = (key.0.to_string(), key.1.to_string());
        assert_eq!(
            before.by_job[&key], after.by_job[&key],
            "{key:?} consumes nothing that changed"
        );
    }
}
