//! Manifests, cloud configs, runtime configs and ops files: the sample
//! documents parse, and malformed ones are rejected with exact paths.
//!
//! Malformed cases are written as ops on a small valid base document, so
//! each case shows only what it breaks.

use std::path::PathBuf;

use bosh_api::{
    interpolate::{self, InterpolateOptions, Ops, Pointer, Vars},
    manifest::{
        CloudConfig, Count, Manifest, Placeholders, RuntimeConfig, ValidationErrors, WatchTime,
        validate_against_cloud_config,
    },
    yaml,
};
use serde_json::{Value, json};

fn read(rel: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn base(name: &str) -> Value {
    yaml::parse_value(&read(&format!("tests/testdata/{name}")), name).unwrap()
}

/// Applies an inline ops file to a base document.
fn patched(base_doc: &str, ops: &str) -> Value {
    let ops = Ops::parse(ops, "case-ops.yml").unwrap();
    ops.apply(base(base_doc)).unwrap()
}

/// Asserts one error sits exactly at `path` and its message contains `part`,
/// and that the printed form is `FILE: PATH: MESSAGE`.
fn assert_has(errs: &ValidationErrors, path: &str, part: &str) {
    let found = errs.errors.iter().find(|e| e.path == path && e.message.contains(part));
    assert!(found.is_some(), "no error at {path:?} containing {part:?}; got:\n{errs}");
    let line = match path {
        "" => format!("{}: ", errs.file),
        p => format!("{}: {p}: ", errs.file),
    };
    assert!(errs.to_string().lines().any(|l| l.starts_with(&line) && l.contains(part)), "{errs}");
}

fn examples() -> (Manifest, CloudConfig) {
    let doc = yaml::parse_value(&read("../examples/manifests/deployment.yml"), "deployment.yml");
    let ops =
        Ops::parse(&read("../examples/manifests/ops/scale-web.yml"), "scale-web.yml").unwrap();
    let mut vars = Vars::new();
    vars.push_layer(
        interpolate::parse_vars_file(&read("../examples/manifests/vars.yml"), "vars.yml").unwrap(),
    );
    let doc =
        interpolate::evaluate(doc.unwrap(), &[ops], &vars, InterpolateOptions::default(), None)
            .unwrap();
    let manifest = Manifest::from_value(&doc, "deployment.yml").unwrap_or_else(|e| panic!("{e}"));
    let cloud =
        CloudConfig::parse(&read("../examples/manifests/cloud-config.yml"), "cloud-config.yml")
            .unwrap_or_else(|e| panic!("{e}"));
    (manifest, cloud)
}

/// The sample manifest with its ops file and vars parses, and fits the sample cloud config.
#[test]
fn sample_manifest_with_ops_parses_and_fits_the_sample_cloud_config() {
    let (m, cloud) = examples();
    let names: Vec<&str> = m.instance_groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["web", "worker", "db", "smoke-tests"]);
    let web = m.instance_group("web").unwrap();
    assert_eq!((web.instances, web.azs.len(), web.networks[0].static_ips.len()), (3, 3, 3));
    assert_eq!(web.env["bosh"]["remove_dev_tools"], json!(true), "YAML 1.1 `yes` is true");
    let db = m.instance_group("db").unwrap();
    assert_eq!(db.env["persistent_disk_fs"], json!("xfs"), "merge key overrides");
    assert_eq!(db.env["bosh"]["remove_dev_tools"], json!(true), "merge key brings the rest");
    let worker = m.instance_group("worker").unwrap();
    assert_eq!(worker.jobs[0].properties["queue_mode"], json!(0o640), "legacy octal");
    assert_eq!(worker.jobs[0].properties["concurrency"], json!(4), "typed var substitution");
    let update = m.update.as_ref().unwrap();
    assert_eq!(update.max_in_flight, Some(Count::Percent(20)));
    assert_eq!(update.canary_watch_time, Some(WatchTime { min_ms: 1000, max_ms: 30000 }));
    assert_eq!(m.releases[1].version.0, "22.2.1");
    assert_eq!(m.tags["environment"], json!("local"));
    validate_against_cloud_config(&m, &cloud, "deployment.yml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cloud.networks[0].subnets[0].range.as_deref(), Some("10.244.1.0/24"));
}

/// The sample runtime config parses.
#[test]
fn sample_runtime_config_parses() {
    let rc = RuntimeConfig::parse(&read("../examples/manifests/runtime-config.yml"), "runtime.yml")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rc.addons[0].exclude.as_ref().unwrap().jobs[0].release, "fixture");
}

/// The sample manifest is valid before interpolation when placeholders are allowed.
#[test]
fn uninterpolated_sample_passes_when_placeholders_are_allowed() {
    let doc = yaml::parse_value(&read("../examples/manifests/deployment.yml"), "d.yml").unwrap();
    let mut doc = doc;
    doc["instance_groups"][0]["instances"] = json!("((web_instances))");
    assert_eq!(Manifest::check(&doc, Placeholders::Allow), vec![]);
    let errs = Manifest::check(&doc, Placeholders::Reject);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].path, "instance_groups[0].instances");
}

/// The base documents the malformed cases start from are themselves valid.
#[test]
fn base_documents_are_valid() {
    let m = Manifest::from_value(&base("base-manifest.yml"), "dep.yml")
        .unwrap_or_else(|e| panic!("{e}"));
    let c = CloudConfig::from_value(&base("base-cloud-config.yml"), "cc.yml")
        .unwrap_or_else(|e| panic!("{e}"));
    RuntimeConfig::from_value(&base("base-runtime-config.yml"), "rc.yml")
        .unwrap_or_else(|e| panic!("{e}"));
    validate_against_cloud_config(&m, &c, "dep.yml").unwrap_or_else(|e| panic!("{e}"));
}

/// (what it breaks, ops on the base document, expected path, part of the message)
type Case = (&'static str, &'static str, &'static str, &'static str);

const MANIFEST_CASES: &[Case] = &[
    (
        "unknown key",
        "- {type: replace, path: /instance_groups/0/vm_tpye?, value: small}",
        "instance_groups[0]",
        r#"unknown key "vm_tpye" (did you mean "vm_type"?)"#,
    ),
    (
        "wrong type",
        "- {type: replace, path: /name, value: 3}",
        "name",
        "expected a string, found a number",
    ),
    (
        "missing required",
        "- {type: remove, path: /instance_groups/0/name}",
        "instance_groups[0]",
        r#"required key "name" is missing"#,
    ),
    (
        "duplicate group",
        "- {type: replace, path: /instance_groups/1/name, value: web}",
        "instance_groups[1].name",
        r#"duplicate instance group name "web" (first at instance_groups[0])"#,
    ),
    (
        "job release not in releases",
        "- {type: replace, path: /instance_groups/0/jobs/0/release, value: nginx}",
        "instance_groups[0].jobs[0].release",
        r#"release "nginx" is not defined in releases"#,
    ),
    (
        "bad max_in_flight",
        "- {type: replace, path: /update/max_in_flight, value: twenty}",
        "update.max_in_flight",
        r#"expected an integer or a percentage like "20%", found "twenty""#,
    ),
    (
        "percentage over 100",
        "- {type: replace, path: /update/canaries, value: 120%}",
        "update.canaries",
        r#"found "120%""#,
    ),
    (
        "bad watch time range",
        "- {type: replace, path: /update/canary_watch_time, value: 30000-1000}",
        "update.canary_watch_time",
        r#"a range of milliseconds like "30000-180000", found "30000-1000""#,
    ),
    (
        "negative instances",
        "- {type: replace, path: /instance_groups/1/instances, value: -1}",
        "instance_groups[1].instances",
        "expected an integer >= 0, found -1",
    ),
    (
        "bad lifecycle",
        "- {type: replace, path: /instance_groups/0/lifecycle?, value: daemon}",
        "instance_groups[0].lifecycle",
        r#"expected "service" or "errand", found "daemon""#,
    ),
    (
        "too few static IPs",
        "- {type: replace, path: /instance_groups/0/instances, value: 3}",
        "instance_groups[0].networks[0].static_ips",
        r#"3 instances need 3 static IPs on network "private", found 2"#,
    ),
    (
        "static IP not an IP",
        "- {type: replace, path: /instance_groups/0/networks/0/static_ips/1, value: 10.0.0.x}",
        "instance_groups[0].networks[0].static_ips[1]",
        r#"expected an IP"#,
    ),
    (
        "static IP used twice",
        "- {type: replace, path: /instance_groups/1/networks/0/static_ips?, value: [10.0.0.11]}",
        "instance_groups[1].networks[0].static_ips[0]",
        "static IP 10.0.0.11 is already used by instance_groups[0].networks[0].static_ips[1]",
    ),
    (
        "stemcell alias missing",
        "- {type: replace, path: /instance_groups/0/stemcell, value: jammy}",
        "instance_groups[0].stemcell",
        r#"stemcell alias "jammy" is not defined in stemcells"#,
    ),
    (
        "unresolved variable for a number",
        "- {type: replace, path: /instance_groups/0/instances, value: ((web_instances))}",
        "instance_groups[0].instances",
        r#"expected an integer, found unresolved variable "((web_instances))""#,
    ),
    (
        "vm_type and vm_resources",
        "- {type: replace, path: /instance_groups/0/vm_resources?, value: {cpu: 1, ram: 1, ephemeral_disk_size: 1}}",
        "instance_groups[0]",
        r#"give only one of "vm_type" and "vm_resources""#,
    ),
    (
        "duplicate release",
        "- {type: replace, path: /releases/1/name, value: app}",
        "releases[1].name",
        r#"duplicate release name "app""#,
    ),
    (
        "update without canaries",
        "- {type: remove, path: /update/canaries}",
        "update",
        r#"required key "canaries" is missing"#,
    ),
    (
        "two networks, no default",
        "- {type: replace, path: /instance_groups/1/networks/-, value: {name: public}}",
        "instance_groups[1].networks",
        r#"one must list "dns" in its "default""#,
    ),
    (
        "unknown variable type",
        "- {type: replace, path: /variables/0/type, value: secret}",
        "variables[0].type",
        r#"expected "password", "certificate", "ssh", "rsa", "user", "value" or "json", found "secret""#,
    ),
    (
        "certificate signed by an unknown CA",
        "- {type: replace, path: /variables/1/options/ca, value: root_ca}",
        "variables[1].options.ca",
        r#"certificate variable "root_ca" is not defined in variables"#,
    ),
    (
        "jobs is not a list",
        "- {type: replace, path: /instance_groups/0/jobs, value: {name: nginx}}",
        "instance_groups[0].jobs",
        "expected a list, found a map",
    ),
    (
        "network entry without name",
        "- {type: remove, path: /instance_groups/0/networks/0/name}",
        "instance_groups[0].networks[0]",
        r#"required key "name" is missing"#,
    ),
];

/// Every malformed manifest case is rejected at its exact path.
#[test]
fn malformed_manifests_name_path_and_expectation() {
    for (what, ops, path, part) in MANIFEST_CASES {
        let doc = patched("base-manifest.yml", ops);
        let errs = Manifest::from_value(&doc, "dep.yml").expect_err(what);
        assert_has(&errs, path, part);
    }
}

const CLOUD_CASES: &[Case] = &[
    (
        "subnet az missing",
        "- {type: replace, path: /networks/0/subnets/0/az, value: z9}",
        "networks[0].subnets[0].az",
        r#"az "z9" is not defined in azs"#,
    ),
    (
        "static outside the range",
        "- {type: replace, path: /networks/0/subnets/0/static/-, value: 10.0.5.10}",
        "networks[0].subnets[0].static[1]",
        "static range 10.0.5.10 is outside the subnet range 10.0.0.0/24",
    ),
    (
        "gateway outside the range",
        "- {type: replace, path: /networks/0/subnets/1/gateway, value: 10.0.0.1}",
        "networks[0].subnets[1].gateway",
        "gateway 10.0.0.1 is outside the subnet range 10.0.1.0/24",
    ),
    (
        "static overlaps reserved",
        "- {type: replace, path: /networks/0/subnets/0/static/0, value: 10.0.0.5 - 10.0.0.20}",
        "networks[0].subnets[0].static[0]",
        "overlaps reserved range 10.0.0.2 - 10.0.0.9",
    ),
    (
        "bad CIDR",
        "- {type: replace, path: /networks/0/subnets/1/range, value: 10.0.1.0/33}",
        "networks[0].subnets[1].range",
        "expected a prefix length 0-32",
    ),
    (
        "manual network without subnets",
        "- {type: remove, path: /networks/0/subnets}",
        "networks[0]",
        r#"required key "subnets" is missing"#,
    ),
    (
        "compilation network missing",
        "- {type: replace, path: /compilation/network, value: nets}",
        "compilation.network",
        r#"network "nets" is not defined in networks"#,
    ),
    (
        "compilation vm type missing",
        "- {type: replace, path: /compilation/vm_type, value: smal}",
        "compilation.vm_type",
        r#"vm type "smal" is not defined in vm_types (did you mean "small"?)"#,
    ),
    (
        "disk size not a number",
        "- {type: replace, path: /disk_types/0/disk_size, value: big}",
        "disk_types[0].disk_size",
        "expected an integer, found a string",
    ),
    (
        "duplicate network",
        "- {type: replace, path: /networks/1/name, value: private}",
        "networks[1].name",
        r#"duplicate network name "private""#,
    ),
    (
        "unknown network type",
        "- {type: replace, path: /networks/1/type, value: overlay}",
        "networks[1].type",
        r#"expected "manual", "dynamic" or "vip", found "overlay""#,
    ),
    (
        "IPv6 range",
        "- {type: replace, path: /networks/0/subnets/1/range, value: 'fd00::/64'}",
        "networks[0].subnets[1].range",
        "IPv6 addresses are not supported yet",
    ),
];

/// Every malformed cloud config case is rejected at its exact path.
#[test]
fn malformed_cloud_configs_name_path_and_expectation() {
    for (what, ops, path, part) in CLOUD_CASES {
        let doc = patched("base-cloud-config.yml", ops);
        let errs = CloudConfig::from_value(&doc, "cc.yml").expect_err(what);
        assert_has(&errs, path, part);
    }
}

const RUNTIME_CASES: &[Case] = &[
    (
        "addon job release missing",
        "- {type: replace, path: /addons/0/jobs/0/release, value: bpm}",
        "addons[0].jobs[0].release",
        r#"release "bpm" is not defined in releases"#,
    ),
    (
        "stemcell filter is not a list",
        "- {type: replace, path: /addons/0/include/stemcell, value: ubuntu-jammy}",
        "addons[0].include.stemcell",
        "expected a list, found a string",
    ),
    (
        "unknown filter key",
        "- {type: replace, path: /addons/0/include/instance_group?, value: [web]}",
        "addons[0].include",
        r#"unknown key "instance_group" (did you mean "instance_groups"?)"#,
    ),
];

/// Every malformed runtime config case is rejected at its exact path.
#[test]
fn malformed_runtime_configs_name_path_and_expectation() {
    for (what, ops, path, part) in RUNTIME_CASES {
        let doc = patched("base-runtime-config.yml", ops);
        let errs = RuntimeConfig::from_value(&doc, "rc.yml").expect_err(what);
        assert_has(&errs, path, part);
    }
}

/// Names that are not names (`../../x`, `a/b`, shell metacharacters) are
/// refused at the door with their path and the rule, in manifests, cloud
/// configs and runtime configs (issue 12, item 7).
#[test]
fn names_that_are_not_names_are_refused_with_the_path_and_the_rule() {
    let rule = bosh_api::names::NAME_RULE;
    let manifest_cases: &[(&str, &str, &str)] = &[
        ("- {type: replace, path: /name, value: 'x y;rm -rf'}", "name", "x y;rm -rf"),
        (
            "- {type: replace, path: /instance_groups/1/name, value: ../../x}",
            "instance_groups[1].name",
            "../../x",
        ),
        (
            "- {type: replace, path: /instance_groups/0/name, value: a/b}",
            "instance_groups[0].name",
            "a/b",
        ),
        (
            "- {type: replace, path: /instance_groups/0/jobs/0/name, value: ..}",
            "instance_groups[0].jobs[0].name",
            "..",
        ),
        ("- {type: replace, path: /releases/0/name, value: a/b}", "releases[0].name", "a/b"),
        (
            "- {type: replace, path: /releases/0/version, value: 1/../2}",
            "releases[0].version",
            "1/../2",
        ),
        (
            "- {type: replace, path: /stemcells/0/os, value: 'ubuntu jammy'}",
            "stemcells[0].os",
            "ubuntu jammy",
        ),
        (
            "- {type: replace, path: /instance_groups/0/azs/0, value: 'z1;x'}",
            "instance_groups[0].azs[0]",
            "z1;x",
        ),
        (
            "- {type: replace, path: /instance_groups/0/vm_type, value: ../small}",
            "instance_groups[0].vm_type",
            "../small",
        ),
        (
            "- {type: replace, path: /instance_groups/0/networks/0/name, value: 'p|q'}",
            "instance_groups[0].networks[0].name",
            "p|q",
        ),
        (
            "- {type: replace, path: /instance_groups/0/jobs/0/consumes?, value: {'a/b': {from: db}}}",
            "instance_groups[0].jobs[0].consumes.a/b",
            "a/b",
        ),
    ];
    for (ops, path, value) in manifest_cases {
        let doc = patched("base-manifest.yml", ops);
        let errs = Manifest::from_value(&doc, "deployment.yml").expect_err(path);
        assert_has(&errs, path, &format!("{value:?} is not a valid"));
        assert_has(&errs, path, rule);
    }
    let errs = Manifest::from_value(
        &patched(
            "base-manifest.yml",
            "- {type: replace, path: /instance_groups/1/name, value: ../../x}",
        ),
        "deployment.yml",
    )
    .unwrap_err();
    assert!(
        errs.to_string().contains(&format!(
            r#"deployment.yml: instance_groups[1].name: "../../x" is not a valid name: {rule}"#
        )),
        "{errs}"
    );

    let errs = Manifest::from_value(
        &patched("base-manifest.yml", "- {type: replace, path: /variables/0/name, value: 'c a'}"),
        "deployment.yml",
    )
    .unwrap_err();
    assert_has(&errs, "variables[0].name", r#""c a" is not a valid variable name"#);

    let cloud_cases: &[(&str, &str)] = &[
        ("- {type: replace, path: /azs/0/name, value: 'z 1'}", "azs[0].name"),
        ("- {type: replace, path: /vm_types/0/name, value: a/b}", "vm_types[0].name"),
        ("- {type: replace, path: /disk_types/0/name, value: ..}", "disk_types[0].name"),
        ("- {type: replace, path: /networks/0/name, value: '$(id)'}", "networks[0].name"),
    ];
    for (ops, path) in cloud_cases {
        let errs = CloudConfig::from_value(&patched("base-cloud-config.yml", ops), "cc.yml")
            .expect_err(path);
        assert_has(&errs, path, "is not a valid name");
    }

    let errs = RuntimeConfig::from_value(
        &patched(
            "base-runtime-config.yml",
            "- {type: replace, path: /addons/0/jobs/0/name, value: 'x y'}",
        ),
        "rc.yml",
    )
    .unwrap_err();
    assert_has(&errs, "addons[0].jobs[0].name", r#""x y" is not a valid name"#);
}

/// Absolute config-server variable names, as real runtime configs use, pass.
#[test]
fn absolute_variable_names_pass() {
    let doc = patched(
        "base-manifest.yml",
        "- {type: replace, path: /variables/-, value: {name: /dns_healthcheck_tls_ca, type: password}}",
    );
    Manifest::from_value(&doc, "deployment.yml").unwrap_or_else(|e| panic!("{e}"));
}

const CROSS_CASES: &[Case] = &[
    (
        "vm type not in the cloud config",
        "- {type: replace, path: /instance_groups/0/vm_type, value: huge}",
        "instance_groups[0].vm_type",
        r#"vm type "huge" is not defined in the cloud config"#,
    ),
    (
        "static IP outside the static ranges",
        "- {type: replace, path: /instance_groups/0/networks/0/static_ips/0, value: 10.0.0.60}",
        "instance_groups[0].networks[0].static_ips[0]",
        r#"static IP 10.0.0.60 is not in the static ranges of network "private""#,
    ),
    (
        "disk type not in the cloud config",
        "- {type: replace, path: /instance_groups/1/persistent_disk_type, value: huge}",
        "instance_groups[1].persistent_disk_type",
        r#"disk type "huge" is not defined in the cloud config"#,
    ),
    (
        "az not in the cloud config",
        "- {type: replace, path: /instance_groups/1/azs/-, value: z3}",
        "instance_groups[1].azs[2]",
        r#"az "z3" is not defined in the cloud config"#,
    ),
    (
        "network not in the cloud config",
        "- {type: replace, path: /instance_groups/1/networks/0/name, value: privat}",
        "instance_groups[1].networks[0].name",
        r#"network "privat" is not defined in the cloud config (did you mean "private"?)"#,
    ),
    (
        "static IPs on a subnet outside the group's azs",
        "- {type: replace, path: /instance_groups/0/azs, value: [z2]}",
        "instance_groups[0].networks[0].static_ips[0]",
        "is not in the static ranges",
    ),
];

/// Every manifest that does not fit the cloud config is rejected at the manifest path.
#[test]
fn manifests_that_do_not_fit_the_cloud_config_name_the_manifest_path() {
    let cloud = CloudConfig::from_value(&base("base-cloud-config.yml"), "cc.yml").unwrap();
    for (what, ops, path, part) in CROSS_CASES {
        let doc = patched("base-manifest.yml", ops);
        let m = Manifest::from_value(&doc, "dep.yml").unwrap_or_else(|e| panic!("{what}: {e}"));
        let errs = validate_against_cloud_config(&m, &cloud, "dep.yml").expect_err(what);
        assert_has(&errs, path, part);
    }
}

/// Several problems in one manifest are all reported in one run.
#[test]
fn every_error_is_reported_at_once() {
    let doc = patched(
        "base-manifest.yml",
        "- {type: replace, path: /name, value: [x]}
- {type: replace, path: /instance_groups/0/vm_tpye?, value: small}
- {type: replace, path: /instance_groups/1/name, value: web}
- {type: replace, path: /update/max_in_flight, value: lots}
- {type: replace, path: /instance_groups/1/jobs/0/release, value: nope}",
    );
    let errs = Manifest::from_value(&doc, "dep.yml").unwrap_err();
    assert_has(&errs, "name", "expected a string, found a list");
    assert_has(&errs, "instance_groups[0]", r#"unknown key "vm_tpye""#);
    assert_has(&errs, "instance_groups[1].name", "duplicate instance group name");
    assert_has(&errs, "update.max_in_flight", "expected an integer or a percentage");
    assert_has(&errs, "instance_groups[1].jobs[0].release", r#"release "nope""#);
    assert_eq!(errs.errors.len(), 5, "{errs}");
    assert_eq!(errs.to_string().lines().count(), 5);
}

/// A document that is not a map is refused as a whole.
#[test]
fn a_list_is_not_a_manifest() {
    let errs = Manifest::from_value(&json!([1, 2]), "dep.yml").unwrap_err();
    assert_has(&errs, "", "expected a map at the top of the document, found a list");
}

/// Invalid YAML syntax is reported with its file and line.
#[test]
fn invalid_yaml_names_the_line() {
    let err =
        Manifest::parse("name: dep\nreleases: [\n  {name: a\nupdate: {}\n", "dep.yml").unwrap_err();
    let bosh_api::manifest::Error::Yaml(y) = &err else { panic!("{err}") };
    assert_eq!(y.file, "dep.yml");
    assert!(matches!(y.line, Some(3 | 4)), "{y:?}");
    assert!(err.to_string().starts_with(&format!("dep.yml:{}:", y.line.unwrap())), "{err}");
}

/// Malformed ops files and ops that cannot apply name the file, op index and path.
#[test]
fn bad_ops_name_file_index_and_path() {
    let doc = base("base-manifest.yml");
    let cases: &[(&str, &str)] = &[
        (
            "- {type: replace, path: /name, value: x}\n- {type: replace, path: /instance_groups/name=api/instances, value: 1}",
            "ops.yml: [1] replace /instance_groups/name=api/instances: Expected to find exactly one matching array item for path '/instance_groups/name=api' but found 0",
        ),
        (
            "- {type: remove, path: /nope}",
            "ops.yml: [0] remove /nope: Expected to find a map key 'nope' for path '/nope' (found map keys: 'instance_groups', 'name', 'releases', 'stemcells', 'update', 'variables')",
        ),
        (
            "- {type: replace, path: /instance_groups/5/name, value: x}",
            "ops.yml: [0] replace /instance_groups/5/name: Expected to find array index '5' but found array of length '2' for path '/instance_groups/5'",
        ),
        (
            "- {type: replace, path: /name/x, value: 1}",
            "ops.yml: [0] replace /name/x: Expected to find a map at path '/name/x' but found 'string'",
        ),
        (
            "- {type: remove, path: /}",
            "ops.yml: [0] remove /: Expected to find a map key '' for path '/' (found map keys: ",
        ),
    ];
    for (src, want) in cases {
        let ops = Ops::parse(src, "ops.yml").unwrap();
        let err = ops.apply(doc.clone()).unwrap_err().to_string();
        assert!(err.starts_with(want), "{err}");
    }
    let definitions: &[(&str, &str)] = &[
        ("- {type: add, path: /x, value: 1}", r#"ops.yml: [0] Unknown operation with type "add""#),
        ("- {type: replace, path: /x}", "ops.yml: [0] Replace operation: Missing value"),
        (
            "- {type: remove, path: /x, value: 1}",
            "ops.yml: [0] Remove operation: Cannot specify value",
        ),
        (
            "- {type: replace, path: x, value: 1}",
            "ops.yml: [0] Replace operation: Invalid path: Expected to start with '/'",
        ),
        ("type: replace", "ops.yml: expected a list of operations"),
    ];
    for (src, want) in definitions {
        let err = Ops::parse(src, "ops.yml").unwrap_err().to_string();
        assert!(err.starts_with(want), "{err}");
    }
}

fn apply(doc: Value, ops: &str) -> Value {
    Ops::parse(ops, "ops.yml").unwrap().apply(doc).unwrap_or_else(|e| panic!("{e}"))
}

/// replace and remove act on keys, indexes (negative too) and `key=value` items.
#[test]
fn replace_and_remove_follow_go_patch() {
    let doc = json!({"igs": [{"name": "a", "n": 1}, {"name": "b", "n": 2}], "k": {"x": 1, "y": 2}});
    let out = apply(
        doc.clone(),
        "- {type: replace, path: /igs/name=b/n, value: 5}\n- {type: replace, path: /igs/-1/name, value: c}",
    );
    assert_eq!(out["igs"][1], json!({"name": "c", "n": 5}));
    let out =
        apply(doc.clone(), "- {type: remove, path: /k/x}\n- {type: remove, path: /igs/name=a}");
    assert_eq!(out, json!({"igs": [{"name": "b", "n": 2}], "k": {"y": 2}}));
    let out = apply(doc.clone(), "- {type: replace, path: /igs/0, value: {name: z}}");
    assert_eq!(out["igs"][0], json!({"name": "z"}));
    let out = apply(doc, "- {type: replace, path: '', value: {whole: true}}");
    assert_eq!(out, json!({"whole": true}));
}

/// `?` creates missing maps and list items on replace and is a no-op on remove.
#[test]
fn optional_paths_create_on_replace_and_skip_on_remove() {
    let doc = json!({"igs": [{"name": "a"}]});
    let out = apply(
        doc.clone(),
        "- {type: replace, path: /igs/name=b?/jobs/name=j?/properties/port, value: 80}",
    );
    assert_eq!(
        out["igs"][1],
        json!({"name": "b", "jobs": [{"name": "j", "properties": {"port": 80}}]})
    );
    let out =
        apply(doc.clone(), "- {type: replace, path: /features?/use_dns_addresses, value: true}");
    assert_eq!(out["features"], json!({"use_dns_addresses": true}));
    let out = apply(
        doc.clone(),
        "- {type: remove, path: /igs/name=zz?}\n- {type: remove, path: /nothing?}",
    );
    assert_eq!(out, doc);
}

/// `/-` appends, `:before`/`:after` insert, and escaped keys are found.
#[test]
fn append_insert_and_escapes() {
    let doc = json!({"l": [1, 2], "a/b": {"c~d": 0}});
    let out = apply(
        doc.clone(),
        "- {type: replace, path: /l/-, value: 3}\n- {type: replace, path: /l/0:before, value: 0}\n- {type: replace, path: /l/1:after, value: 1.5}",
    );
    assert_eq!(out["l"], json!([0, 1, 1.5, 2, 3]));
    let out = apply(doc, "- {type: replace, path: /a~1b/c~0d, value: 9}");
    assert_eq!(out["a/b"], json!({"c~d": 9}));
}

/// Variables fill placeholders after ops run, and `--var-errs` lists all missing ones.
#[test]
fn variables_apply_after_ops_and_missing_ones_are_listed() {
    let doc = json!({"name": "((dep))", "n": 1});
    let ops = Ops::parse("- {type: replace, path: /n, value: ((count))}\n- {type: replace, path: /x?, value: ((other))}", "ops.yml").unwrap();
    let mut vars = Vars::new();
    vars.push_layer(
        [("dep".to_string(), json!("d")), ("count".to_string(), json!(3))].into_iter().collect(),
    );
    let out = interpolate::evaluate(
        doc.clone(),
        std::slice::from_ref(&ops),
        &vars,
        Default::default(),
        None,
    )
    .unwrap();
    assert_eq!(out, json!({"name": "d", "n": 3, "x": "((other))"}));
    let strict = InterpolateOptions { expect_all_keys: true, ..Default::default() };
    let err = interpolate::evaluate(doc, &[ops], &Vars::new(), strict, None).unwrap_err();
    assert_eq!(err.to_string(), "Expected to find variables: count, dep, other");
}

/// `--path` extracts a sub-tree, and a bad path says where it stopped.
#[test]
fn path_extracts_a_subtree() {
    let doc = base("base-manifest.yml");
    let p = Pointer::parse("/instance_groups/name=db/persistent_disk_type").unwrap();
    let out = interpolate::evaluate(doc.clone(), &[], &Vars::new(), Default::default(), Some(&p))
        .unwrap();
    assert_eq!(out, json!("ten"));
    let p = Pointer::parse("/instance_groups/name=api").unwrap();
    let err =
        interpolate::evaluate(doc, &[], &Vars::new(), Default::default(), Some(&p)).unwrap_err();
    assert!(
        err.to_string().starts_with("path /instance_groups/name=api: Expected to find exactly one"),
        "{err}"
    );
}

/// A malformed `consumes`/`provides` entry is refused with the manifest
/// validation errors, each at its path, before the director sees it.
#[test]
fn malformed_links_are_refused_at_their_paths() {
    let cases = [
        (
            "- {type: replace, path: /instance_groups/0/jobs/0/consumes?, value: {db: {from: 3}}}",
            "instance_groups[0].jobs[0].consumes.db.from",
            "expected a string",
        ),
        (
            "- {type: replace, path: /instance_groups/0/jobs/0/consumes?, value: {db: {form: x}}}",
            "instance_groups[0].jobs[0].consumes.db.form",
            "unknown key",
        ),
        (
            "- {type: replace, path: /instance_groups/0/jobs/0/provides?, value: {db: {shared: 1}}}",
            "instance_groups[0].jobs[0].provides.db.shared",
            "expected a boolean",
        ),
    ];
    for (ops, path, part) in cases {
        let doc = patched("base-manifest.yml", ops);
        let errs = Manifest::from_value(&doc, "deployment.yml").expect_err(path);
        assert_has(&errs, path, part);
    }
}

/// A runtime config's `aliases:` reads as bosh-dns's alias format, and a
/// bad one is refused with the file, the path and what was expected.
#[test]
fn runtime_config_aliases_are_read_and_checked() {
    let ok = json!({"aliases": {"db.internal": {"targets": [
        {"query": "*", "instance_group": "db", "deployment": "d", "network": "n"},
        {"query": "_", "instance_group": "db", "deployment": "d", "network": "n", "domain": "bosh"},
    ]}}});
    let rc = RuntimeConfig::from_value(&ok, "rc.yml").unwrap_or_else(|e| panic!("{e}"));
    let t = &rc.aliases["db.internal"].targets;
    assert_eq!((t[0].query.as_str(), t[0].domain.as_str()), ("*", "bosh"));
    assert_eq!(t[1].query, "_");
    let cases = [
        (
            json!({"aliases": {"db.internal": {"targets": [{"query": "q-s3", "instance_group": "db",
                "deployment": "d", "network": "n"}]}}}),
            "rc.yml: aliases.db.internal.targets[0].query: expected \"*\" (the group) or \"_\" \
             (each instance), found \"q-s3\"",
        ),
        (
            json!({"aliases": {"db..x": {"targets": [{"query": "*", "instance_group": "db",
                "deployment": "d", "network": "n"}]}}}),
            "rc.yml: aliases.db..x: alias domain \"db..x\" is not a DNS name",
        ),
        (
            json!({"aliases": {"a": {"targets": []}}}),
            "rc.yml: aliases.a.targets: expected at least one target",
        ),
        (
            json!({"aliases": {"a": {"targets": [{"query": "*", "deployment": "d", "network": "n"}]}}}),
            "rc.yml: aliases.a.targets[0]: required key \"instance_group\" is missing",
        ),
        (json!({"aliases": {"a": {"target": []}}}), "rc.yml: aliases.a: unknown key \"target\""),
    ];
    for (doc, want) in cases {
        let err = RuntimeConfig::from_value(&doc, "rc.yml").unwrap_err().to_string();
        assert!(err.contains(want), "{doc}:\n got {err}\nwant {want}");
    }
}
