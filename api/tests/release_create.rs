//! create-release, finalize-release and blobs on real release directories:
//! byte-identical tarballs, BOSH's dev/final version counting, reuse of
//! builds, pre_packaging, and the local blobstore provider.

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use bosh_api::release::{
    CreateOptions,
    blobs::{add_blob, sync_blobs, upload_blobs},
    config::read_blobs,
    create_release, finalize_release,
    index::{BuildIndex, ReleaseIndex},
    read_release_tarball,
};

fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/release")
}

/// Copies a release directory, skipping build output, and stamps every file with `mtime`.
fn copy_release(from: &Path, to: &Path, mtime: SystemTime) {
    for e in walkdir::WalkDir::new(from) {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(from).unwrap();
        let first = rel.components().next().map(|c| c.as_os_str().to_string_lossy().into_owned());
        if matches!(first.as_deref(), Some(".dev_builds" | "dev_releases" | ".blobstore" | "blobs"))
        {
            continue;
        }
        let dst = to.join(rel);
        if e.file_type().is_dir() {
            std::fs::create_dir_all(&dst).unwrap();
        } else {
            std::fs::copy(e.path(), &dst).unwrap();
            std::fs::File::options().write(true).open(&dst).unwrap().set_modified(mtime).unwrap();
        }
    }
}

fn opts(tmp: &Path, tarball: Option<&str>) -> CreateOptions {
    CreateOptions {
        force: true,
        cache_dir: tmp.join("cache"),
        tarball: tarball.map(|t| tmp.join(t)),
        ..Default::default()
    }
}

/// Two copies of the same sources with different mtimes give byte-identical tarballs.
#[test]
fn same_sources_give_byte_identical_tarballs() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a/hello"), tmp.path().join("b/hello"));
    copy_release(&example(), &a, SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000));
    copy_release(&example(), &b, SystemTime::now());
    // Separate caches too, so nothing is shared but the sources.
    let ra = create_release(&a, &opts(&tmp.path().join("a"), Some("a.tgz"))).unwrap();
    let rb = create_release(&b, &opts(&tmp.path().join("b"), Some("b.tgz"))).unwrap();
    assert_eq!(ra.manifest, rb.manifest);
    let (ta, tb) = (
        std::fs::read(tmp.path().join("a/a.tgz")).unwrap(),
        std::fs::read(tmp.path().join("b/b.tgz")).unwrap(),
    );
    assert!(ta == tb, "tarballs differ");
}

/// Creating twice in one directory counts 0+dev.1, 0+dev.2 and reuses every build.
#[test]
fn second_create_counts_up_and_reuses_builds() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hello");
    copy_release(&example(), &dir, SystemTime::now());
    let first = create_release(&dir, &opts(tmp.path(), Some("1.tgz"))).unwrap();
    let second = create_release(&dir, &opts(tmp.path(), Some("2.tgz"))).unwrap();
    assert_eq!(
        (first.manifest.version.as_str(), second.manifest.version.as_str()),
        ("0+dev.1", "0+dev.2")
    );
    assert_eq!(first.manifest.jobs, second.manifest.jobs);
    assert_eq!(first.manifest.packages, second.manifest.packages);
    let index = BuildIndex::read(&dir, &dir.join(".dev_builds/packages/hello/index.yml")).unwrap();
    assert_eq!(index.builds.len(), 1);
    let dev = ReleaseIndex::read(&dir, false, "hello").unwrap();
    let mut versions: Vec<_> = dev.builds.values().map(|e| e.version.clone()).collect();
    versions.sort();
    assert_eq!(versions, ["0+dev.1", "0+dev.2"]);
    assert!(dir.join("dev_releases/hello/hello-0+dev.2.yml").is_file());
}

/// --final makes version 1 with final builds in the blobstore; the next dev is 1+dev.1, then 2.
#[test]
fn final_release_counts_and_records_final_builds() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hello");
    copy_release(&example(), &dir, SystemTime::now());
    create_release(&dir, &opts(tmp.path(), None)).unwrap();
    let fin =
        create_release(&dir, &CreateOptions { final_release: true, ..opts(tmp.path(), None) })
            .unwrap();
    assert_eq!(fin.manifest.version, "1");
    assert!(dir.join("releases/hello/hello-1.yml").is_file());
    let job_fp = &fin.manifest.jobs[0].fingerprint;
    let index = BuildIndex::read(&dir, &dir.join(".final_builds/jobs/hello/index.yml")).unwrap();
    let entry = index.find(job_fp).unwrap();
    let id = entry.blobstore_id.as_ref().expect("final builds carry a blobstore id");
    assert!(dir.join(".blobstore").join(id).is_file());
    let lic = BuildIndex::read(&dir, &dir.join(".final_builds/license/index.yml")).unwrap();
    assert_eq!(lic.builds.len(), 1);

    let dev = create_release(&dir, &opts(tmp.path(), None)).unwrap();
    assert_eq!(dev.manifest.version, "1+dev.1");
    let fin2 =
        create_release(&dir, &CreateOptions { final_release: true, ..opts(tmp.path(), None) })
            .unwrap();
    assert_eq!(fin2.manifest.version, "2");
    // Unchanged jobs are not stored twice.
    let index = BuildIndex::read(&dir, &dir.join(".final_builds/jobs/hello/index.yml")).unwrap();
    assert_eq!(index.builds.len(), 1);
    // An explicit version that exists is refused.
    let again =
        CreateOptions { final_release: true, version: Some("2".into()), ..opts(tmp.path(), None) };
    let err = create_release(&dir, &again).unwrap_err().to_string();
    assert!(err.contains("already exists"), "{err}");
}

/// Final builds evicted from the cache are fetched back from the local blobstore.
#[test]
fn final_builds_come_back_from_the_blobstore() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hello");
    copy_release(&example(), &dir, SystemTime::now());
    let fin =
        create_release(&dir, &CreateOptions { final_release: true, ..opts(tmp.path(), None) })
            .unwrap();
    std::fs::remove_dir_all(tmp.path().join("cache")).unwrap();
    std::fs::remove_dir_all(dir.join(".dev_builds")).unwrap();
    let next = create_release(&dir, &opts(tmp.path(), Some("r.tgz"))).unwrap();
    assert_eq!(next.manifest.jobs, fin.manifest.jobs);
}

/// finalize-release turns a dev tarball into final version 1 of the directory.
#[test]
fn finalize_release_from_a_tarball() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hello");
    copy_release(&example(), &dir, SystemTime::now());
    let dev = create_release(&dir, &opts(tmp.path(), Some("dev.tgz"))).unwrap();
    let fin = finalize_release(&dir, &tmp.path().join("dev.tgz"), None, None, true).unwrap();
    assert_eq!(fin.manifest.version, "1");
    assert_eq!(fin.manifest.packages, dev.manifest.packages);
    assert!(dir.join("releases/hello/hello-1.yml").is_file());
    let err =
        finalize_release(&dir, &tmp.path().join("dev.tgz"), None, Some("1"), true).unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
}

/// pre_packaging runs in the staging copy (with BUILD_DIR) and is not shipped.
#[test]
fn pre_packaging_runs_at_build_time_and_is_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hello");
    copy_release(&example(), &dir, SystemTime::now());
    std::fs::write(
        dir.join("packages/hello-lib/pre_packaging"),
        "set -e\necho generated > \"$BUILD_DIR/hello-lib/GENERATED\"\n",
    )
    .unwrap();
    create_release(&dir, &opts(tmp.path(), Some("r.tgz"))).unwrap();
    let ar =
        read_release_tarball(&tmp.path().join("r.tgz"), &tmp.path().join("r"), &Default::default())
            .unwrap();
    let pkg = ar.packages.iter().find(|p| p.entry.name == "hello-lib").unwrap();
    let out = tmp.path().join("pkg");
    std::fs::create_dir(&out).unwrap();
    let f = std::fs::File::open(&pkg.tgz).unwrap();
    tar::Archive::new(flate2::read::GzDecoder::new(f)).unpack(&out).unwrap();
    assert_eq!(std::fs::read_to_string(out.join("hello-lib/GENERATED")).unwrap(), "generated\n");
    assert!(!out.join("pre_packaging").exists());
    assert!(out.join("packaging").exists());
}

/// add-blob, upload-blobs and sync-blobs round-trip a blob through the local blobstore.
#[test]
fn blobs_round_trip_through_the_local_blobstore() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hello");
    copy_release(&example(), &dir, SystemTime::now());
    let src = tmp.path().join("data.bin");
    std::fs::write(&src, vec![7u8; 100_000]).unwrap();
    let e = add_blob(&dir, &src, "hello-lib/data.bin").unwrap();
    assert_eq!(e.size, 100_000);
    assert!(e.sha.starts_with("sha256:"));
    std::fs::write(
        dir.join("packages/hello-lib/spec"),
        "name: hello-lib\nfiles: [hello-lib/**/*]\n",
    )
    .unwrap();
    assert_eq!(upload_blobs(&dir).unwrap(), 1);
    let id = read_blobs(&dir).unwrap()["hello-lib/data.bin"].object_id.clone().unwrap();
    assert!(dir.join(".blobstore").join(&id).is_file());

    std::fs::remove_dir_all(dir.join("blobs")).unwrap();
    std::fs::create_dir_all(dir.join("blobs")).unwrap();
    std::fs::write(dir.join("blobs/stray"), "not tracked").unwrap();
    sync_blobs(&dir).unwrap();
    assert_eq!(std::fs::read(dir.join("blobs/hello-lib/data.bin")).unwrap(), vec![7u8; 100_000]);
    assert!(!dir.join("blobs/stray").exists(), "untracked files are removed, as bosh-cli does");
    let r = create_release(&dir, &opts(tmp.path(), None)).unwrap();
    assert_eq!(r.manifest.packages.len(), 2);
}

/// A blobstore provider other than local is refused by name.
#[test]
fn other_blobstore_providers_are_not_supported() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hello");
    copy_release(&example(), &dir, SystemTime::now());
    std::fs::write(
        dir.join("config/final.yml"),
        "name: hello\nblobstore: {provider: s3, options: {bucket_name: b}}\n",
    )
    .unwrap();
    let err =
        create_release(&dir, &CreateOptions { final_release: true, ..opts(tmp.path(), None) })
            .unwrap_err();
    assert!(err.to_string().contains("provider 's3' is not supported"), "{err}");
}

/// --timestamp-version puts the time in the dev version; --name and --version override.
#[test]
fn version_and_name_flags_override_the_defaults() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hello");
    copy_release(&example(), &dir, SystemTime::now());
    let ts =
        create_release(&dir, &CreateOptions { timestamp_version: true, ..opts(tmp.path(), None) })
            .unwrap();
    let post = ts.manifest.version.strip_prefix("0+dev.").unwrap();
    assert!(post.parse::<u64>().unwrap() > 1_700_000_000, "{}", ts.manifest.version);
    let named = CreateOptions {
        name: Some("other".into()),
        version: Some("3.1-rc.1".into()),
        ..opts(tmp.path(), Some("((name))-((version)).tgz"))
    };
    let r = create_release(&dir, &named).unwrap();
    assert_eq!((r.manifest.name.as_str(), r.manifest.version.as_str()), ("other", "3.1-rc.1"));
    assert!(tmp.path().join("other-3.1-rc.1.tgz").is_file());
    let bad = CreateOptions { version: Some("not a version".into()), ..opts(tmp.path(), None) };
    assert!(create_release(&dir, &bad).is_err());
}

/// A tarball laid out as bosh-cli and the Ruby CLI write it (`./` entries,
/// bare sha1 digests) reads back and verifies.
#[test]
fn tarballs_in_older_cli_layouts_are_read() {
    use sha1::Digest;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hello");
    copy_release(&example(), &dir, SystemTime::now());
    create_release(&dir, &opts(tmp.path(), Some("r.tgz"))).unwrap();
    let out = tmp.path().join("x");
    std::fs::create_dir(&out).unwrap();
    let f = std::fs::File::open(tmp.path().join("r.tgz")).unwrap();
    tar::Archive::new(flate2::read::GzDecoder::new(f)).unpack(&out).unwrap();
    let mf = out.join("release.MF");
    let mut text = std::fs::read_to_string(&mf).unwrap();
    for member in ["jobs/hello.tgz", "packages/hello.tgz", "packages/hello-lib.tgz", "license.tgz"]
    {
        let data = std::fs::read(out.join(member)).unwrap();
        let sha256 = bosh_api::release::sha256_digest(&data);
        text = text.replace(&sha256, &hex::encode(sha1::Sha1::digest(&data)));
    }
    assert!(!text.contains("sha256:"), "{text}");
    std::fs::write(&mf, text).unwrap();
    let old = tmp.path().join("old.tgz");
    let status = std::process::Command::new("tar")
        .arg("czf")
        .arg(&old)
        .arg("-C")
        .arg(&out)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    let ar = read_release_tarball(&old, &tmp.path().join("read"), &Default::default()).unwrap();
    assert_eq!(ar.jobs.len(), 1);
    assert_eq!(ar.packages.len(), 2);
    assert!(ar.license.is_some());
}

/// A recorded dev release is re-packed from its cached builds into the same bytes.
#[test]
fn recorded_release_repacks_into_the_same_tarball() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hello");
    copy_release(&example(), &dir, SystemTime::now());
    create_release(&dir, &opts(tmp.path(), Some("first.tgz"))).unwrap();
    let manifest = dir.join("dev_releases/hello/hello-0+dev.1.yml");
    let again = tmp.path().join("again.tgz");
    bosh_api::release::create::write_recorded_release(
        &dir,
        &manifest,
        &tmp.path().join("cache"),
        &again,
    )
    .unwrap();
    assert!(std::fs::read(tmp.path().join("first.tgz")).unwrap() == std::fs::read(&again).unwrap());
    std::fs::remove_dir_all(tmp.path().join("cache")).unwrap();
    let err = bosh_api::release::create::write_recorded_release(
        &dir,
        &manifest,
        &tmp.path().join("cache"),
        &again,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("jobs[hello]: no build of fingerprint"), "{err}");
}
