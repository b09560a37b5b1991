//! Table tests of addon placement.

use serde_json::{Value, json};

use super::*;
use crate::manifest::Version;

/// A deployment `d` with groups `web` (service, ubuntu-jammy, net `private`,
/// az z1, job nginx/web-rel), `db` (service, ubuntu-noble, nets `private`
/// and `data`, az z2, job pg/db-rel) and `smoke` (errand, ubuntu-jammy).
fn manifest() -> Manifest {
    serde_json::from_value(json!({
        "name": "d",
        "releases": [{"name": "web-rel", "version": "1"}, {"name": "db-rel", "version": "2"}],
        "stemcells": [
            {"alias": "jammy", "os": "ubuntu-jammy", "version": "1.1"},
            {"alias": "noble", "os": "ubuntu-noble", "version": "2.2"},
        ],
        "instance_groups": [
            {"name": "web", "instances": 1, "stemcell": "jammy", "azs": ["z1"],
             "networks": [{"name": "private"}], "jobs": [{"name": "nginx", "release": "web-rel"}]},
            {"name": "db", "instances": 1, "stemcell": "noble", "azs": ["z2"],
             "networks": [{"name": "private"}, {"name": "data"}], "jobs": [{"name": "pg", "release": "db-rel"}]},
            {"name": "smoke", "instances": 1, "stemcell": "jammy", "lifecycle": "errand",
             "networks": [{"name": "private"}], "jobs": [{"name": "tests", "release": "web-rel"}]},
        ],
    }))
    .unwrap()
}

/// A runtime config with one addon `a` (job `agent` of `os-conf` 3) and the
/// given include/exclude.
fn runtime(include: Value, exclude: Value) -> RuntimeConfig {
    let mut addon = json!({"name": "a", "jobs": [{"name": "agent", "release": "os-conf"}]});
    if !include.is_null() {
        addon["include"] = include;
    }
    if !exclude.is_null() {
        addon["exclude"] = exclude;
    }
    serde_json::from_value(json!({
        "releases": [{"name": "os-conf", "version": "3"}],
        "addons": [addon],
    }))
    .unwrap()
}

/// Groups that got the `agent` job.
fn with_agent(m: &Manifest) -> Vec<&str> {
    m.instance_groups
        .iter()
        .filter(|g| g.jobs.iter().any(|j| j.name == "agent"))
        .map(|g| g.name.as_str())
        .collect()
}

/// Each filter combination selects the groups BOSH's `Filter#applies?` does.
#[test]
fn filters_select_the_groups_bosh_selects() {
    let cases: Vec<(&str, Value, Value, Vec<&str>)> = vec![
        (
            "no filter = every group, errands too",
            Value::Null,
            Value::Null,
            vec!["web", "db", "smoke"],
        ),
        ("empty include = every group", json!({}), json!({}), vec!["web", "db", "smoke"]),
        (
            "include deployment",
            json!({"deployments": ["d"]}),
            Value::Null,
            vec!["web", "db", "smoke"],
        ),
        ("include other deployment", json!({"deployments": ["x"]}), Value::Null, vec![]),
        ("include instance group", json!({"instance_groups": ["db"]}), Value::Null, vec!["db"]),
        (
            "include job by name and release",
            json!({"jobs": [{"name": "nginx", "release": "web-rel"}]}),
            Value::Null,
            vec!["web"],
        ),
        (
            "job with another release does not match",
            json!({"jobs": [{"name": "nginx", "release": "db-rel"}]}),
            Value::Null,
            vec![],
        ),
        (
            "include stemcell os",
            json!({"stemcell": [{"os": "ubuntu-jammy"}]}),
            Value::Null,
            vec!["web", "smoke"],
        ),
        ("include network", json!({"networks": ["data"]}), Value::Null, vec!["db"]),
        ("include az", json!({"azs": ["z1"]}), Value::Null, vec!["web"]),
        (
            "include lifecycle service",
            json!({"lifecycle": "service"}),
            Value::Null,
            vec!["web", "db"],
        ),
        ("include lifecycle errand", json!({"lifecycle": "errand"}), Value::Null, vec!["smoke"]),
        ("include team the deployment lacks", json!({"teams": ["ops"]}), Value::Null, vec![]),
        (
            "every include criterion must match",
            json!({"deployments": ["d"], "instance_groups": ["web", "db"], "stemcell": [{"os": "ubuntu-noble"}]}),
            Value::Null,
            vec!["db"],
        ),
        (
            "exclude instance group",
            Value::Null,
            json!({"instance_groups": ["db"]}),
            vec!["web", "smoke"],
        ),
        (
            "exclude lifecycle errand",
            Value::Null,
            json!({"lifecycle": "errand"}),
            vec!["web", "db"],
        ),
        ("exclude network", Value::Null, json!({"networks": ["data"]}), vec!["web", "smoke"]),
        ("exclude deployment", Value::Null, json!({"deployments": ["d"]}), vec![]),
        (
            "exclude needs every criterion to match",
            Value::Null,
            json!({"instance_groups": ["web", "db"], "stemcell": [{"os": "ubuntu-noble"}]}),
            vec!["web", "smoke"],
        ),
        (
            "include and exclude together",
            json!({"stemcell": [{"os": "ubuntu-jammy"}]}),
            json!({"jobs": [{"name": "tests", "release": "web-rel"}]}),
            vec!["web"],
        ),
        (
            "exclude team the deployment lacks excludes nothing",
            Value::Null,
            json!({"teams": ["ops"]}),
            vec!["web", "db", "smoke"],
        ),
    ];
    for (what, include, exclude, want) in cases {
        let mut m = manifest();
        apply_addons(&mut m, &[("rc".into(), runtime(include, exclude))]).unwrap();
        assert_eq!(with_agent(&m), want, "{what}");
        let releases: Vec<&str> = m.releases.iter().map(|r| r.name.as_str()).collect();
        if want.is_empty() {
            assert_eq!(releases, ["web-rel", "db-rel"], "{what}: unused release not added");
        } else {
            assert_eq!(releases, ["web-rel", "db-rel", "os-conf"], "{what}: release added");
        }
    }
}

/// Team filters match when the deployment's teams are given.
#[test]
fn team_filters_match_the_deployments_teams() {
    let mut m = manifest();
    let rc = runtime(json!({"teams": ["ops", "dev"]}), Value::Null);
    apply_addons_for_teams(&mut m, &["dev".into()], &[("rc".into(), rc)]).unwrap();
    assert_eq!(with_agent(&m), ["web", "db", "smoke"]);
}

/// Addon jobs are appended with their own properties, else the addon's.
#[test]
fn addon_jobs_are_appended_with_job_or_addon_properties() {
    let rc: RuntimeConfig = serde_json::from_value(json!({
        "releases": [{"name": "os-conf", "version": "3"}],
        "addons": [{
            "name": "a",
            "properties": {"shared": 1},
            "jobs": [
                {"name": "own", "release": "os-conf", "properties": {"mine": true}, "consumes": {"l": null}},
                {"name": "inherits", "release": "os-conf"},
            ],
            "include": {"instance_groups": ["web"]},
        }],
    }))
    .unwrap();
    let mut m = manifest();
    apply_addons(&mut m, &[("rc".into(), rc)]).unwrap();
    let web = m.instance_group("web").unwrap();
    let names: Vec<&str> = web.jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(names, ["nginx", "own", "inherits"]);
    assert_eq!(serde_json::to_value(&web.jobs[1].properties).unwrap(), json!({"mine": true}));
    assert_eq!(serde_json::to_value(&web.jobs[1].consumes).unwrap(), json!({"l": null}));
    assert_eq!(serde_json::to_value(&web.jobs[2].properties).unwrap(), json!({"shared": 1}));
}

/// A runtime release whose name the manifest uses with another version is an
/// error naming both versions; the same version is fine.
#[test]
fn release_version_conflicts_are_errors_naming_both_versions() {
    let mut rc = runtime(Value::Null, Value::Null);
    rc.releases[0].name = "web-rel".into();
    rc.addons[0].jobs[0].release = "web-rel".into();
    let mut m = manifest();
    let errs = apply_addons(&mut m, &[("dns".into(), rc.clone())]).unwrap_err();
    assert_eq!(
        errs,
        [
            "runtime config 'dns': release 'web-rel' version '3' conflicts with version '1' in the deployment manifest"
        ]
    );
    assert_eq!(m, manifest(), "unchanged on error");

    rc.releases[0].version = Version("1".into());
    apply_addons(&mut m, &[("dns".into(), rc)]).unwrap();
    assert_eq!(m.releases.len(), 2);
}

/// Two runtime configs asking for different versions of a release conflict.
#[test]
fn runtime_configs_with_different_versions_of_a_release_conflict() {
    let a = runtime(Value::Null, Value::Null);
    let mut b = runtime(Value::Null, Value::Null);
    b.releases[0].version = Version("4".into());
    b.addons[0].jobs[0].name = "other".into();
    let errs = apply_addons(&mut manifest(), &[("a".into(), a), ("b".into(), b)]).unwrap_err();
    assert_eq!(
        errs,
        [
            "runtime config 'b': release 'os-conf' version '4' conflicts with version '3' in the deployment manifest"
        ]
    );
}

/// Invalid runtime configs report every problem with its path.
#[test]
fn invalid_runtime_configs_report_every_problem_with_its_path() {
    let mut rc = runtime(json!({"jobs": [{"name": "", "release": "x"}]}), Value::Null);
    rc.releases[0].version = Version("latest".into());
    rc.addons[0].jobs.push(AddonJob {
        name: "stray".into(),
        release: "unlisted".into(),
        ..AddonJob::default()
    });
    let errs = apply_addons(&mut manifest(), &[("rc".into(), rc)]).unwrap_err();
    assert_eq!(
        errs,
        [
            "runtime config 'rc': releases[0] (os-conf): version 'latest' must be an actual version",
            "runtime config 'rc': addons[0] (a).jobs[1] (stray): release 'unlisted' is not listed in the runtime config releases",
            "runtime config 'rc': addons[0] (a).include.jobs[0]: must have both name and release",
        ]
    );
}

/// A job an addon adds twice to one group is an error, as in BOSH.
#[test]
fn colocating_a_job_twice_is_an_error() {
    let a = runtime(Value::Null, Value::Null);
    let errs =
        apply_addons(&mut manifest(), &[("a".into(), a.clone()), ("b".into(), a)]).unwrap_err();
    assert_eq!(errs.len(), 3, "{errs:?}");
    assert_eq!(
        errs[0],
        "runtime config 'b': addons[0] (a): colocated job 'agent' is already added to the instance group 'web'"
    );
}

/// Variables are appended (duplicates are errors) and tags merge under the
/// manifest's own.
#[test]
fn variables_and_tags_merge_into_the_manifest() {
    let mut m = manifest();
    m.variables = serde_json::from_value(json!([{"name": "pw", "type": "password"}])).unwrap();
    m.tags.insert("team".into(), json!("web"));
    let rc: RuntimeConfig = serde_json::from_value(json!({
        "variables": [{"name": "dns_ca", "type": "certificate", "options": {"is_ca": true}}],
        "tags": {"team": "rc", "env": "prod"},
    }))
    .unwrap();
    apply_addons(&mut m, &[("rc".into(), rc)]).unwrap();
    let names: Vec<&str> = m.variables.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["pw", "dns_ca"]);
    assert_eq!(m.tags.get("team"), Some(&json!("web")));
    assert_eq!(m.tags.get("env"), Some(&json!("prod")));

    let dup: RuntimeConfig =
        serde_json::from_value(json!({"variables": [{"name": "pw", "type": "password"}]})).unwrap();
    let errs = apply_addons(&mut m, &[("dup".into(), dup)]).unwrap_err();
    assert_eq!(errs, ["runtime config 'dup': variables[0]: duplicate variable name 'pw'"]);
}

/// The manifest's own addons apply (and are consumed); they may not filter
/// on deployments, and their jobs' releases must be the manifest's.
#[test]
fn deployment_addons_apply_once_and_reject_deployment_filters() {
    let mut m = manifest();
    m.addons = serde_json::from_value(json!([{
        "name": "own",
        "jobs": [{"name": "agent", "release": "web-rel"}],
        "include": {"lifecycle": "service"},
    }]))
    .unwrap();
    apply_addons(&mut m, &[]).unwrap();
    assert_eq!(with_agent(&m), ["web", "db"]);
    assert!(m.addons.is_empty(), "consumed");
    apply_addons(&mut m, &[]).unwrap();
    assert_eq!(with_agent(&m), ["web", "db"], "a second call adds nothing");

    let mut m = manifest();
    m.addons = serde_json::from_value(json!([{
        "name": "bad",
        "jobs": [{"name": "agent", "release": "os-conf"}],
        "include": {"deployments": ["d"]},
    }]))
    .unwrap();
    let errs = apply_addons(&mut m, &[]).unwrap_err();
    assert_eq!(
        errs,
        [
            "deployment manifest: addons[0] (bad).include.deployments: deployment filters are not allowed in a deployment's own addons",
            "deployment manifest: addons[0] (bad).jobs[0] (agent): release 'os-conf' is not listed in the deployment releases",
        ]
    );
}
