//! The checks behind each fuzz target, as plain functions of the input bytes.
//!
//! Each `fuzz_targets/<name>.rs` is a one-line libFuzzer wrapper around the
//! function of the same name here, so a crashing input can also be replayed
//! from a unit test or a debugger without libFuzzer. Every function must
//! return normally for every input: errors are the expected answer to bad
//! input, a panic is a bug. Beyond "no panic", each one checks a property the
//! library documents (an invalid document always says why, a refused
//! tarball leaves nothing behind).
//!
//! # Layout
//!
//! - [`manifest`]: YAML or JSON → deployment manifest validation, then the
//!   cross-check against a cloud config and runtime-config addons.
//! - [`configs`]: the same bytes as a cloud config and as a runtime config.
//! - [`ops`]: go-patch ops (and vars) applied to a document.
//! - [`release_tarball`]: release tarball unpacking and verification.
//! - [`agent_message`]: NATS payloads between director and agent, and the
//!   agent's bootstrap settings.

use std::{io::Write, path::Path, sync::LazyLock};

use bosh_api::{
    agent::{
        Alert, ApplySpec, BlobRef, CompilePackage, ExecCommand, Heartbeat, Method, Reply, Request,
        Settings, StateReport, TaskHandle,
    },
    archive::read_tgz_member,
    interpolate::{self, InterpolateOptions, Ops, Pointer, Vars},
    manifest::{
        CloudConfig, Manifest, Placeholders, RuntimeConfig, ValidationErrors, addons,
        validate_against_cloud_config,
    },
    release::{Limits, read_release_tarball},
    yaml,
};
use serde_json::Value;

/// The example cloud config, for cross-checking fuzzed manifests.
static CLOUD: LazyLock<CloudConfig> = LazyLock::new(|| {
    CloudConfig::parse(include_str!("../../examples/manifests/cloud-config.yml"), "cloud.yml")
        .expect("example cloud config is valid")
});

/// The example runtime config, whose addons are applied to fuzzed manifests.
static RUNTIME: LazyLock<Vec<(String, RuntimeConfig)>> = LazyLock::new(|| {
    let rc =
        RuntimeConfig::parse(include_str!("../../examples/manifests/runtime-config.yml"), "rc.yml")
            .expect("example runtime config is valid");
    vec![("default".to_string(), rc)]
});

/// The example deployment, before interpolation, as ops and configs see it.
static DEPLOYMENT: LazyLock<Value> = LazyLock::new(|| {
    yaml::parse_value(include_str!("../../examples/manifests/deployment.yml"), "deployment.yml")
        .expect("example deployment is valid YAML")
});

/// A manifest free of placeholders that validates, for configs to act on.
static HELLO: LazyLock<Manifest> = LazyLock::new(|| {
    Manifest::parse(include_str!("../../examples/manifests/hello.yml"), "hello.yml")
        .expect("hello.yml is a valid manifest")
});

/// Reads `data` as YAML, and as JSON when it is JSON (the director's API takes JSON).
fn documents(data: &[u8]) -> Vec<Value> {
    let mut out = Vec::new();
    if let Ok(v) = serde_json::from_slice::<Value>(data) {
        out.push(v);
    }
    if let Ok(src) = std::str::from_utf8(data) {
        match yaml::parse_value(src, "fuzz.yml") {
            Ok(v) => out.push(v),
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
    out
}

/// An invalid document must say what is wrong, and the cheap check must
/// agree with the full read (a disagreement is a gap in the shape check,
/// which surfaces as a serde error without a path).
fn assert_consistent<T>(
    kind: &str,
    checked: &[impl std::fmt::Debug],
    read: &Result<T, ValidationErrors>,
) {
    match read {
        Ok(_) => assert!(checked.is_empty(), "{kind}: check found {checked:?} but the read passed"),
        Err(e) => {
            assert!(!e.errors.is_empty(), "{kind}: rejected without an error");
            assert!(!checked.is_empty(), "{kind}: check passed but the read failed: {e}");
            assert!(!e.to_string().is_empty());
        }
    }
}

/// A deployment manifest, validated as `boshctl` and the director do.
pub fn manifest(data: &[u8]) {
    for v in documents(data) {
        let _ = Manifest::check(&v, Placeholders::Allow);
        let read = Manifest::from_value(&v, "fuzz.yml");
        assert_consistent("manifest", &Manifest::check(&v, Placeholders::Reject), &read);
        if let Ok(mut m) = read {
            let _ = validate_against_cloud_config(&m, &CLOUD, "fuzz.yml");
            let _ = addons::apply_addons(&mut m, &RUNTIME);
        }
    }
}

/// The same bytes as a cloud config and as a runtime config.
pub fn configs(data: &[u8]) {
    for v in documents(data) {
        let _ = CloudConfig::check(&v, Placeholders::Allow);
        let read = CloudConfig::from_value(&v, "cloud.yml");
        assert_consistent("cloud config", &CloudConfig::check(&v, Placeholders::Reject), &read);
        if let Ok(cc) = read {
            let merged = CloudConfig::merged([cc.clone(), CLOUD.clone(), cc]);
            let _ = validate_against_cloud_config(&HELLO, &merged, "hello.yml");
        }

        let _ = RuntimeConfig::check(&v, Placeholders::Allow);
        let read = RuntimeConfig::from_value(&v, "runtime.yml");
        assert_consistent("runtime config", &RuntimeConfig::check(&v, Placeholders::Reject), &read);
        if let Ok(rc) = read {
            let mut m = HELLO.clone();
            let _ = addons::apply_addons(&mut m, &[("fuzz".to_string(), rc)]);
        }
    }
}

/// Go-patch ops applied to a document, then variables, then `--path`.
///
/// The input is up to four NUL-separated parts: ops file, document, vars
/// file, path. With fewer parts the example deployment is the document.
pub fn ops(data: &[u8]) {
    let Ok(src) = std::str::from_utf8(data) else { return };
    let mut parts = src.splitn(4, '\0');
    let ops_src = parts.next().unwrap_or_default();
    let doc = match parts.next() {
        Some(d) => match yaml::parse_value(d, "doc.yml") {
            Ok(v) => v,
            Err(_) => return,
        },
        None => DEPLOYMENT.clone(),
    };
    let mut vars = Vars::new();
    if let Some(Ok(layer)) = parts.next().map(|v| interpolate::parse_vars_file(v, "vars.yml")) {
        vars.push_layer(layer);
    }
    let path = parts.next().and_then(|p| Pointer::parse(p).ok());
    let Ok(ops) = Ops::parse(ops_src, "ops.yml") else { return };
    for opts in [
        InterpolateOptions::default(),
        InterpolateOptions { expect_all_keys: true, expect_all_vars_used: true },
    ] {
        let ops = std::slice::from_ref(&ops);
        if let Err(e) = interpolate::evaluate(doc.clone(), ops, &vars, opts, path.as_ref()) {
            assert!(!e.to_string().is_empty());
        }
    }
}

/// Caps small enough that a run stays fast; real defaults are larger.
const LIMITS: Limits =
    Limits { max_total_bytes: 32 << 20, max_entry_bytes: 16 << 20, max_entries: 2_000 };

/// A release tarball read and verified as `upload-release` does.
///
/// Input that is not gzip is gzipped first, so the fuzzer can mutate the tar
/// stream itself instead of compressed bytes.
pub fn release_tarball(data: &[u8]) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let tgz = tmp.path().join("release.tgz");
    let bytes = if data.starts_with(&[0x1f, 0x8b]) {
        data.to_vec()
    } else {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(data).expect("gzip to memory");
        gz.finish().expect("gzip to memory")
    };
    std::fs::write(&tgz, &bytes).expect("write tarball");

    let member = read_tgz_member(bytes.as_slice(), "release.MF", 1 << 20, "release.tgz");
    if let Ok(Some(mf)) = &member {
        assert!(mf.len() <= 1 << 20, "read_tgz_member returned more than its cap");
    }

    let dest = tmp.path().join("unpacked");
    match read_release_tarball(&tgz, &dest, &LIMITS) {
        Ok(archive) => {
            assert_eq!(archive.dir, dest);
            for j in &archive.jobs {
                assert!(j.tgz.starts_with(&dest), "{:?} outside {dest:?}", j.tgz);
            }
            for p in &archive.packages {
                assert!(p.tgz.starts_with(&dest), "{:?} outside {dest:?}", p.tgz);
            }
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
            assert!(!dest.exists(), "a refused tarball left {dest:?} behind: {e}");
        }
    }
    assert_only(tmp.path(), &["release.tgz", "unpacked"]);
}

/// Nothing but `names` sits in `dir` (no stray staging directories).
fn assert_only(dir: &Path, names: &[&str]) {
    for e in std::fs::read_dir(dir).expect("read temp dir") {
        let name = e.expect("dir entry").file_name();
        let name = name.to_string_lossy();
        assert!(names.contains(&name.as_ref()), "left behind in {dir:?}: {name}");
    }
}

/// A NATS payload decoded as each message the director and agent exchange.
pub fn agent_message(data: &[u8]) {
    if let Ok(req) = serde_json::from_slice::<Request>(data) {
        if let Some(m) = Method::parse(&req.method) {
            assert_eq!(m.as_str(), req.method);
            let _ = m.is_long();
        }
        for a in &req.arguments {
            let _ = serde_json::from_value::<ApplySpec>(a.clone());
            let _ = serde_json::from_value::<CompilePackage>(a.clone());
            let _ = serde_json::from_value::<ExecCommand>(a.clone());
            let _ = serde_json::from_value::<BlobRef>(a.clone());
        }
        serde_json::to_vec(&req).expect("a decoded request encodes");
    }
    if let Ok(reply) = serde_json::from_slice::<Reply>(data) {
        if let Reply::Value(v) = &reply {
            let _ = TaskHandle::from_value(v);
            let _ = serde_json::from_value::<StateReport>(v.clone());
        }
        serde_json::to_vec(&reply).expect("a decoded reply encodes");
    }
    if let Ok(hb) = serde_json::from_slice::<Heartbeat>(data) {
        serde_json::to_vec(&hb).expect("a decoded heartbeat encodes");
    }
    let _ = serde_json::from_slice::<Alert>(data);
    let _ = serde_json::from_slice::<Settings>(data);
}
