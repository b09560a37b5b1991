//! Helpers the blobstore tests (`s3_blobs`, `gcs_blobs`) share: each test
//! binary includes this module and uses what it needs.

use std::path::{Path, PathBuf};
use std::process::Output;

use bosh_api::release::index::{BuildEntry, BuildIndex};

pub fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

pub fn failed(out: &Output) -> String {
    assert!(!out.status.success(), "succeeded: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Files under `blobs/`, and scratch dirs a sync may have left in the release.
pub fn leftovers(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.join("blobs")];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() { stack.push(p) } else { out.push(p) }
        }
    }
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().unwrap().to_string_lossy().starts_with(".sync-blobs-") {
            out.push(p);
        }
    }
    out
}

/// Copies a release directory as a fresh checkout has it: sources, config
/// and indexes (`.final_builds`, `releases`), none of the build output,
/// dev releases or fetched blobs. With a new `HOME` nothing is cached.
pub fn fresh_copy(from: &Path, to: &Path) {
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        std::fs::create_dir_all(to.join(&rel)).unwrap();
        for e in std::fs::read_dir(from.join(&rel)).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            if rel.as_os_str().is_empty()
                && matches!(name.as_str(), ".dev_builds" | "dev_releases" | "blobs")
            {
                continue;
            }
            if e.file_type().unwrap().is_dir() {
                stack.push(rel.join(&name));
            } else {
                std::fs::copy(e.path(), to.join(&rel).join(&name)).unwrap();
            }
        }
    }
}

/// The only build of a `.final_builds` index.
pub fn final_build(dir: &Path, index: &str) -> BuildEntry {
    let path = dir.join(".final_builds").join(index).join("index.yml");
    let builds = BuildIndex::read(dir, &path).unwrap().builds;
    assert_eq!(builds.len(), 1, "{index}: {builds:?}");
    builds.into_values().next().unwrap()
}
