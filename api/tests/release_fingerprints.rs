//! Fingerprints and dev indexes against what the real bosh CLI (v7.10.6)
//! produced for `testdata/fingerprint-release` (recorded in its EXPECTED.yml).

use std::path::{Path, PathBuf};

use bosh_api::release::{
    CreateOptions, create_release,
    fingerprint::{job_fingerprint, license_fingerprint, package_fingerprint},
    index::BuildIndex,
};
use serde_json::Value;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/testdata/fingerprint-release")
}

fn expected() -> Value {
    let src = std::fs::read_to_string(fixture().join("EXPECTED.yml")).unwrap();
    bosh_api::yaml::parse_value(&src, "EXPECTED.yml").unwrap()
}

fn list(v: &Value, key: &str) -> Vec<Value> {
    v[key].as_array().unwrap().clone()
}

/// Copies the fixture (as git would check it out: 0644/0755 by exec bit) into a temp dir.
fn copy_fixture(to: &Path) {
    for e in walkdir::WalkDir::new(fixture()) {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(fixture()).unwrap();
        let dst = to.join(rel);
        if e.file_type().is_dir() {
            std::fs::create_dir_all(&dst).unwrap();
        } else {
            std::fs::copy(e.path(), &dst).unwrap();
        }
    }
}

/// Every job fingerprint equals the bosh CLI's, and so do the packages each job names.
#[test]
fn job_fingerprints_equal_bosh_cli() {
    for job in list(&expected(), "jobs") {
        let name = job["name"].as_str().unwrap();
        let (spec, fp) = job_fingerprint(&fixture().join("jobs").join(name)).unwrap();
        assert_eq!(fp, job["fingerprint"].as_str().unwrap(), "job {name}");
        let want: Vec<&str> =
            job["packages"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
        assert_eq!(spec.packages, want, "job {name} packages");
    }
}

/// Every package fingerprint equals the bosh CLI's (globs, excluded_files, dependencies).
#[test]
fn package_fingerprints_equal_bosh_cli() {
    for pkg in list(&expected(), "packages") {
        let name = pkg["name"].as_str().unwrap();
        let (spec, fp) =
            package_fingerprint(&fixture(), &fixture().join("packages").join(name)).unwrap();
        assert_eq!(fp, pkg["fingerprint"].as_str().unwrap(), "package {name}");
        let want: Vec<&str> =
            pkg["dependencies"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
        assert_eq!(spec.dependencies, want, "package {name} dependencies");
    }
}

/// The license fingerprint (LICENSE + NOTICE, by basename, no mode) equals the bosh CLI's.
#[test]
fn license_fingerprint_equals_bosh_cli() {
    let want = expected()["license"]["fingerprint"].as_str().unwrap().to_string();
    assert_eq!(license_fingerprint(&fixture()).unwrap(), Some(want));
}

/// create-release writes the dev indexes, dev release and job tarballs the way the bosh CLI does.
#[test]
fn create_release_writes_dev_indexes_like_bosh_cli() {
    let exp = expected();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fixture");
    copy_fixture(&dir);
    let opts = CreateOptions {
        force: true,
        cache_dir: tmp.path().join("cache"),
        tarball: Some(tmp.path().join("out.tgz")),
        ..Default::default()
    };
    let created = create_release(&dir, &opts).unwrap();
    assert_eq!(created.manifest.name, exp["release"]["name"].as_str().unwrap());
    assert_eq!(created.manifest.version, exp["release"]["version"].as_str().unwrap());

    let mut resources: Vec<(String, String)> = Vec::new();
    for job in list(&exp, "jobs") {
        let name = job["name"].as_str().unwrap();
        resources.push((
            format!(".dev_builds/jobs/{name}/index.yml"),
            job["fingerprint"].as_str().unwrap().into(),
        ));
    }
    for pkg in list(&exp, "packages") {
        let name = pkg["name"].as_str().unwrap();
        resources.push((
            format!(".dev_builds/packages/{name}/index.yml"),
            pkg["fingerprint"].as_str().unwrap().into(),
        ));
    }
    resources.push((
        ".dev_builds/license/index.yml".into(),
        exp["license"]["fingerprint"].as_str().unwrap().into(),
    ));
    for (file, fp) in resources {
        let text = std::fs::read_to_string(dir.join(&file)).unwrap();
        let v = bosh_api::yaml::parse_value(&text, &file).unwrap();
        assert_eq!(v["format-version"], Value::String("2".into()), "{file}: {text}");
        let builds = v["builds"].as_object().unwrap();
        assert_eq!(builds.len(), 1, "{file}");
        let entry = &builds[&fp];
        assert_eq!(entry["version"].as_str(), Some(fp.as_str()), "{file}");
        let sha = entry["sha1"].as_str().unwrap();
        assert!(sha.starts_with("sha256:") && sha.len() == 71, "{file}: {sha}");
        assert!(entry.get("blobstore_id").is_none(), "{file}");
        let index = BuildIndex::read(&dir, &dir.join(&file)).unwrap();
        assert_eq!(index.find(&fp).unwrap().sha1, sha);
    }

    let text = std::fs::read_to_string(dir.join("dev_releases/fixture/index.yml")).unwrap();
    let v = bosh_api::yaml::parse_value(&text, "index.yml").unwrap();
    assert_eq!(v["format-version"], Value::String("2".into()));
    let builds = v["builds"].as_object().unwrap();
    assert_eq!(builds.len(), 1);
    let (key, entry) = builds.iter().next().unwrap();
    assert!(uuid::Uuid::parse_str(key).is_ok(), "{key}");
    assert_eq!(entry["version"], "0+dev.1");
    assert!(dir.join("dev_releases/fixture/fixture-0+dev.1.yml").is_file());

    // Job tarballs hold job.MF, monit and the listed templates only.
    let unpacked = tmp.path().join("unpacked");
    let ar = bosh_api::release::read_release_tarball(
        &tmp.path().join("out.tgz"),
        &unpacked,
        &Default::default(),
    )
    .unwrap();
    for (job, files) in exp["job_tarball_entries"].as_object().unwrap() {
        let j = ar.jobs.iter().find(|j| j.entry.name == *job).unwrap();
        let f = std::fs::File::open(&j.tgz).unwrap();
        let mut t = tar::Archive::new(flate2::read::GzDecoder::new(f));
        let names: Vec<String> = t
            .entries()
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.header().entry_type().is_file())
            .map(|e| e.path().unwrap().to_string_lossy().into_owned())
            .collect();
        let want: Vec<&str> =
            files.as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
        assert_eq!(names, want, "job {job}");
    }
}
