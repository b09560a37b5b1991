//! Bad release input is refused with the file and entry named, and nothing
//! is kept: hostile tarballs, digest mismatches, missing packages, cycles
//! and missing blobs.

use std::path::{Path, PathBuf};

use bosh_api::release::{CreateOptions, Limits, create_release, file_digest, read_release_tarball};
use tar::{EntryType, Header};

fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/release")
}

fn copy_example(to: &Path) {
    for e in walkdir::WalkDir::new(example()) {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(example()).unwrap();
        let first = rel.components().next().map(|c| c.as_os_str().to_string_lossy().into_owned());
        if matches!(first.as_deref(), Some(".dev_builds" | "dev_releases" | ".blobstore" | "blobs"))
        {
            continue;
        }
        if e.file_type().is_dir() {
            std::fs::create_dir_all(to.join(rel)).unwrap();
        } else {
            std::fs::copy(e.path(), to.join(rel)).unwrap();
        }
    }
}

/// A raw entry: name (written verbatim, unchecked), type, data, link target.
struct Raw<'a>(&'a str, EntryType, Vec<u8>, Option<&'a str>);

/// Writes a tgz with names the `tar` builder would refuse to write.
fn raw_tgz(path: &Path, entries: Vec<Raw<'_>>) {
    let f = std::fs::File::create(path).unwrap();
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(f, flate2::Compression::fast()));
    for Raw(name, kind, data, link) in entries {
        let mut h = Header::new_old();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(l) = link {
            h.as_old_mut().linkname[..l.len()].copy_from_slice(l.as_bytes());
        }
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, data.as_slice()).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap();
}

fn file<'a>(name: &'a str, data: &[u8]) -> Raw<'a> {
    Raw(name, EntryType::Regular, data.to_vec(), None)
}

/// Reads a tarball that must be refused; returns the error and checks nothing was kept.
fn refused(tarball: &Path, limits: &Limits) -> String {
    let dest = tarball.with_extension("unpacked");
    let err = read_release_tarball(tarball, &dest, limits).unwrap_err().to_string();
    assert!(!dest.exists(), "nothing may be kept after: {err}");
    let parent = dest.parent().unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(parent)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".release-"))
        .collect();
    assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");
    err
}

/// `..`, absolute paths, escaping symlinks and duplicate entries are refused by name.
#[test]
fn hostile_tarball_entries_are_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, Vec<Raw<'_>>, &str)> = vec![
        ("dotdot", vec![file("release.MF", b"x"), file("../evil", b"x")], "../evil"),
        ("absolute", vec![file("/tmp/evil", b"x")], "/tmp/evil"),
        (
            "symlink",
            vec![Raw("jobs/link", EntryType::Symlink, Vec::new(), Some("../../etc"))],
            "jobs/link",
        ),
        ("duplicate", vec![file("release.MF", b"a"), file("./release.MF", b"b")], "duplicate"),
        ("device", vec![Raw("dev", EntryType::Char, Vec::new(), None)], "dev"),
    ];
    for (name, entries, want) in cases {
        let t = tmp.path().join(format!("{name}.tgz"));
        raw_tgz(&t, entries);
        let err = refused(&t, &Limits::default());
        assert!(err.contains(&format!("{name}.tgz")) && err.contains(want), "{name}: {err}");
    }
    assert!(!tmp.path().join("evil").exists());
}

/// A tarball that unpacks past the byte or entry caps stops there.
#[test]
fn decompression_bombs_stop_at_the_caps() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().join("bomb.tgz");
    raw_tgz(&t, vec![file("release.MF", b"name: x\n"), file("zeros", &vec![0u8; 8 << 20])]);
    assert!(std::fs::metadata(&t).unwrap().len() < 100_000, "compresses well, like a bomb");
    let small = Limits { max_total_bytes: 1 << 20, ..Limits::default() };
    let err = refused(&t, &small);
    assert!(err.contains("bomb.tgz") && err.contains("zeros"), "{err}");
    let few = Limits { max_entries: 1, ..Limits::default() };
    let err = refused(&t, &few);
    assert!(err.contains("entries"), "{err}");
}

/// Builds the example release and returns its unpacked tarball directory.
fn built_release(tmp: &Path) -> PathBuf {
    let dir = tmp.join("hello");
    copy_example(&dir);
    let opts = CreateOptions {
        force: true,
        cache_dir: tmp.join("cache"),
        tarball: Some(tmp.join("good.tgz")),
        ..Default::default()
    };
    create_release(&dir, &opts).unwrap();
    let out = tmp.join("good");
    std::fs::create_dir(&out).unwrap();
    let f = std::fs::File::open(tmp.join("good.tgz")).unwrap();
    tar::Archive::new(flate2::read::GzDecoder::new(f)).unpack(&out).unwrap();
    out
}

/// Packs a directory as a tgz with the `tar` crate.
fn repack(dir: &Path, dest: &Path) {
    let f = std::fs::File::create(dest).unwrap();
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(f, flate2::Compression::fast()));
    b.append_dir_all(".", dir).unwrap();
    b.into_inner().unwrap().finish().unwrap();
}

fn edit_manifest(dir: &Path, from: &str, to: &str) {
    let p = dir.join("release.MF");
    let text = std::fs::read_to_string(&p).unwrap();
    assert!(text.contains(from), "{from} not in release.MF");
    std::fs::write(&p, text.replacen(from, to, 1)).unwrap();
}

/// A job tarball whose digest differs from release.MF's is refused, naming the member.
#[test]
fn digest_mismatch_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = built_release(tmp.path());
    let sha = file_digest(&dir.join("jobs/hello.tgz")).unwrap();
    edit_manifest(
        &dir,
        &sha,
        "sha256:0000000000000000000000000000000000000000000000000000000000000000",
    );
    let t = tmp.path().join("tampered.tgz");
    repack(&dir, &t);
    let err = refused(&t, &Limits::default());
    assert!(err.contains("tampered.tgz: jobs/hello.tgz: digest mismatch"), "{err}");
}

/// A job naming a package the release does not hold is refused, naming the job.
#[test]
fn job_naming_a_missing_package_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = built_release(tmp.path());
    edit_manifest(&dir, "  packages:\n  - hello\n", "  packages:\n  - ghost\n  - hello\n");
    let t = tmp.path().join("ghost.tgz");
    repack(&dir, &t);
    let err = refused(&t, &Limits::default());
    assert!(err.contains("jobs[hello].packages: package 'ghost' is not in the release"), "{err}");
}

/// A dependency cycle in release.MF is refused, naming the cycle.
#[test]
fn dependency_cycle_in_a_tarball_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = built_release(tmp.path());
    let p = dir.join("release.MF");
    let text = std::fs::read_to_string(&p).unwrap();
    // hello-lib has `dependencies: []`; make it depend on hello.
    std::fs::write(&p, text.replacen("dependencies: []", "dependencies:\n  - hello", 1)).unwrap();
    let t = tmp.path().join("cycle.tgz");
    repack(&dir, &t);
    let err = refused(&t, &Limits::default());
    assert!(err.contains("dependency cycle: hello -> hello-lib -> hello"), "{err}");
}

/// A job tarball with a `..` entry inside a valid release is refused, naming both.
#[test]
fn hostile_entry_inside_a_job_tarball_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = built_release(tmp.path());
    let job = dir.join("jobs/hello.tgz");
    let old = file_digest(&job).unwrap();
    raw_tgz(&job, vec![file("job.MF", b"name: hello\n"), file("../../escape", b"x")]);
    edit_manifest(&dir, &old, &file_digest(&job).unwrap());
    let t = tmp.path().join("nested.tgz");
    repack(&dir, &t);
    let err = refused(&t, &Limits::default());
    assert!(err.contains("jobs/hello.tgz") && err.contains("../../escape"), "{err}");
}

/// Runs create-release expecting an error; checks no dev release was recorded.
fn create_fails(dir: &Path, tmp: &Path) -> String {
    let opts = CreateOptions { force: true, cache_dir: tmp.join("cache"), ..Default::default() };
    let err = create_release(dir, &opts).unwrap_err().to_string();
    assert!(!dir.join("dev_releases").exists(), "nothing recorded after: {err}");
    assert!(!dir.join(".dev_builds").exists(), "nothing built after: {err}");
    err
}

/// At create time, a job spec naming a missing package is refused, naming the spec.
#[test]
fn create_refuses_a_job_naming_a_missing_package() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hello");
    copy_example(&dir);
    let spec = dir.join("jobs/hello/spec");
    let text = std::fs::read_to_string(&spec).unwrap();
    std::fs::write(&spec, text.replace("- hello-lib\n", "- hello-lib\n- ghost\n")).unwrap();
    let err = create_fails(&dir, tmp.path());
    assert!(
        err.contains("jobs/hello/spec: packages: package 'ghost' is not in the release"),
        "{err}"
    );
}

/// At create time, a package dependency cycle is refused, naming the cycle.
#[test]
fn create_refuses_a_dependency_cycle() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hello");
    copy_example(&dir);
    std::fs::write(
        dir.join("packages/hello-lib/spec"),
        "name: hello-lib\ndependencies: [hello]\nfiles: [hello-lib/**/*.py]\n",
    )
    .unwrap();
    let err = create_fails(&dir, tmp.path());
    assert!(
        err.contains(
            "packages/hello/spec: dependencies: dependency cycle: hello -> hello-lib -> hello"
        ),
        "{err}"
    );
}

/// At create time, a blobs.yml entry whose file is missing is refused, naming the entry.
#[test]
fn create_refuses_a_missing_blob() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hello");
    copy_example(&dir);
    std::fs::write(
        dir.join("config/blobs.yml"),
        "hello-lib/data.tgz:\n  size: 3\n  sha: sha256:abc\n",
    )
    .unwrap();
    let err = create_fails(&dir, tmp.path());
    assert!(
        err.contains("config/blobs.yml: hello-lib/data.tgz: blobs/hello-lib/data.tgz is missing"),
        "{err}"
    );
}

/// At create time, a blob whose content does not match blobs.yml is refused.
#[test]
fn create_refuses_a_blob_with_the_wrong_digest() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hello");
    copy_example(&dir);
    std::fs::create_dir_all(dir.join("blobs/hello-lib")).unwrap();
    std::fs::write(dir.join("blobs/hello-lib/data.tgz"), "abc").unwrap();
    std::fs::write(
        dir.join("config/blobs.yml"),
        "hello-lib/data.tgz:\n  size: 3\n  sha: sha256:abc\n",
    )
    .unwrap();
    let err = create_fails(&dir, tmp.path());
    assert!(
        err.contains("config/blobs.yml: hello-lib/data.tgz:") && err.contains("expected digest"),
        "{err}"
    );
}

/// A blob path that climbs out of blobs/ is refused.
#[test]
fn blob_paths_must_stay_inside_blobs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hello");
    copy_example(&dir);
    std::fs::write(
        dir.join("config/blobs.yml"),
        "../../etc/passwd:\n  size: 3\n  sha: sha256:abc\n",
    )
    .unwrap();
    let err = create_fails(&dir, tmp.path());
    assert!(
        err.contains("config/blobs.yml: ../../etc/passwd: blob path must stay inside blobs/"),
        "{err}"
    );
}

/// A job spec with a wrong shape is refused with every error and its path.
#[test]
fn create_refuses_a_malformed_job_spec() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hello");
    copy_example(&dir);
    std::fs::write(
        dir.join("jobs/hello/spec"),
        "name: hello\ntemplates: [ctl.erb]\npackages: {a: b}\n",
    )
    .unwrap();
    let err = create_fails(&dir, tmp.path());
    assert!(err.contains("jobs/hello/spec: templates: expected a map, found a list"), "{err}");
    assert!(err.contains("jobs/hello/spec: packages: expected a list, found a map"), "{err}");
}

/// Template paths and file globs that climb out of the release are refused.
#[test]
fn paths_leaving_the_release_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hello");
    copy_example(&dir);
    std::fs::write(
        dir.join("jobs/hello/spec"),
        "name: hello\ntemplates: {../../../etc/passwd: bin/x, ctl.erb: ../../x}\n",
    )
    .unwrap();
    let err = create_fails(&dir, tmp.path());
    assert!(
        err.contains("jobs/hello/spec: templates.../../../etc/passwd: template source"),
        "{err}"
    );
    assert!(err.contains("jobs/hello/spec: templates.ctl.erb: template destination"), "{err}");

    copy_example(&dir);
    std::fs::write(dir.join("packages/hello/spec"), "name: hello\nfiles: [hello/*, ../../*]\n")
        .unwrap();
    let err = create_fails(&dir, tmp.path());
    assert!(
        err.contains("packages/hello/spec: files[1]: pattern '../../*' must stay inside"),
        "{err}"
    );
}

/// Jobs named `..`, `a/b` or `x y;rm -rf` are refused when the tarball is
/// read, naming the field and the rule, instead of failing on a VM (issue 12,
/// item 7).
#[test]
fn job_names_that_are_not_names_are_refused_at_read() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = built_release(tmp.path());
    let mf = std::fs::read_to_string(dir.join("release.MF")).unwrap();
    for (i, bad) in ["..", "a/b", "x y;rm -rf"].into_iter().enumerate() {
        std::fs::write(
            dir.join("release.MF"),
            mf.replacen("jobs:\n- name: hello\n", &format!("jobs:\n- name: '{bad}'\n"), 1),
        )
        .unwrap();
        let t = tmp.path().join(format!("bad-job-{i}.tgz"));
        repack(&dir, &t);
        let err = refused(&t, &Limits::default());
        let want = format!(
            "bad-job-{i}.tgz:release.MF: jobs[0].name: {bad:?} is not a valid name: {}",
            bosh_api::names::NAME_RULE
        );
        assert!(err.contains(&want), "{bad}: {err}");
    }
}

/// A release version with a path separator is refused at read.
#[test]
fn release_versions_with_a_slash_are_refused_at_read() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = built_release(tmp.path());
    let mf = std::fs::read_to_string(dir.join("release.MF")).unwrap();
    let version = mf.lines().find_map(|l| l.strip_prefix("version: ")).unwrap().to_string();
    edit_manifest(&dir, &format!("\nversion: {version}\n"), "\nversion: 1/../2\n");
    let t = tmp.path().join("bad-version.tgz");
    repack(&dir, &t);
    let err = refused(&t, &Limits::default());
    assert!(err.contains(r#"version: "1/../2" is not a valid version"#), "{err}");
}

/// The caps are for the whole upload: package tarballs that each fit under
/// the byte cap but together exceed it are refused, with the configured cap
/// in the message, and nothing is kept (issue 12, item 8).
#[test]
fn nested_tarballs_share_the_upload_caps() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = built_release(tmp.path());
    for pkg in ["hello", "hello-lib"] {
        let p = dir.join(format!("packages/{pkg}.tgz"));
        let old = file_digest(&p).unwrap();
        raw_tgz(&p, vec![file("zeros", &vec![0u8; 700 << 10])]);
        edit_manifest(&dir, &old, &file_digest(&p).unwrap());
    }
    let t = tmp.path().join("two-bombs.tgz");
    repack(&dir, &t);
    assert!(std::fs::metadata(&t).unwrap().len() < 200 << 10, "compresses well, like a bomb");
    let cap = Limits { max_total_bytes: 1 << 20, ..Limits::default() };
    let err = refused(&t, &cap);
    assert!(err.contains("more than the limit of 1048576 bytes"), "{err}");
    assert!(err.contains("packages/hello-lib.tgz") || err.contains("packages/hello.tgz"), "{err}");

    let roomy = Limits { max_total_bytes: 4 << 20, ..Limits::default() };
    read_release_tarball(&t, &tmp.path().join("fits"), &roomy).unwrap();
}
