//! `boshctl build-local-stemcell` builds a real Debian rootfs with
//! debootstrap. It runs wherever debootstrap is installed and we are root
//! (hack/install-deps.sh installs it); elsewhere it says why it did nothing.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Whether this machine can run debootstrap.
fn can_debootstrap() -> Result<(), String> {
    let found =
        ["/usr/sbin/debootstrap", "/usr/bin/debootstrap"].iter().any(|p| Path::new(p).exists());
    if !found {
        return Err("debootstrap is not installed (hack/install-deps.sh installs it)".into());
    }
    if !nix::unistd::geteuid().is_root() {
        return Err("debootstrap needs root".into());
    }
    Ok(())
}

/// Runs `build-local-stemcell` (the default: a rootfs image) and returns how long it took and its stderr.
fn build(agent: &Path, cache: &Path, out: &Path) -> (Duration, String) {
    let started = Instant::now();
    let o = Command::new(env!("CARGO_BIN_EXE_boshctl"))
        .args(["build-local-stemcell", "--agent"])
        .arg(agent)
        .arg("--cache-dir")
        .arg(cache)
        .arg("--output")
        .arg(out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "boshctl failed: {stderr}\n{}", String::from_utf8_lossy(&o.stdout));
    (started.elapsed(), stderr)
}

/// The members of the tar.gz bytes `data`; only the bodies of `keep` are read.
fn members(data: &[u8], keep: &[&str]) -> Vec<(PathBuf, tar::EntryType, Vec<u8>)> {
    let mut a = tar::Archive::new(flate2::read::GzDecoder::new(data));
    let mut out = Vec::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().components().collect::<PathBuf>();
        let kind = e.header().entry_type();
        let mut body = Vec::new();
        if keep.iter().any(|k| path == Path::new(k)) {
            e.read_to_end(&mut body).unwrap();
        }
        out.push((path, kind, body));
    }
    out
}

#[test]
fn rootfs_stemcell_is_a_debian_image_and_cached() {
    if let Err(why) = can_debootstrap() {
        eprintln!("skipped: {why}");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let agent = tmp.path().join("bosh-agent");
    std::fs::write(&agent, "#!/bin/sh\necho fake agent\n").unwrap();
    let cache = tmp.path().join("cache");
    let first = tmp.path().join("first.tgz");
    let second = tmp.path().join("second.tgz");

    let (t1, err1) = build(&agent, &cache, &first);
    assert!(err1.contains("debootstrap"), "a first build says what it does: {err1}");
    let (t2, err2) = build(&agent, &cache, &second);
    eprintln!("first build {t1:.1?}, second build (cache hit) {t2:.1?}");
    assert!(!err2.contains("debootstrap"), "a second build is a cache hit: {err2}");
    assert!(t2 < t1, "the cache hit ({t2:?}) is faster than the build ({t1:?})");

    let outer = members(&std::fs::read(&first).unwrap(), &["stemcell.MF", "image"]);
    let mf = &outer.iter().find(|(p, ..)| p == Path::new("stemcell.MF")).expect("stemcell.MF").2;
    let mf: serde_json::Value = serde_json::to_value(
        bosh_api::yaml::from_str::<bosh_api::release::stemcell::StemcellManifest>(
            std::str::from_utf8(mf).unwrap(),
            "stemcell.MF",
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(mf["name"], "bosh-local-debian-bookworm");
    assert_eq!(mf["operating_system"], "debian-bookworm");
    assert_eq!(mf["version"], "1");
    assert_eq!(mf["stemcell_formats"][0], "bosh-rs-local-rootfs");
    let image = &outer.iter().find(|(p, ..)| p == Path::new("image")).expect("image").2;
    let sha1 = {
        use sha1::Digest;
        hex::encode(sha1::Sha1::digest(image))
    };
    assert_eq!(mf["sha1"], sha1, "stemcell.MF's sha1 is the image's");
    assert!(
        mf["cloud_properties"]["rootfs_key"].as_str().is_some_and(|k| k.starts_with("bookworm-"))
    );

    let files = members(image, &["var/vcap/bosh/bin/bosh-agent", "etc/passwd"]);
    let find = |p: &str| files.iter().find(|(q, ..)| q == Path::new(p));
    let (_, _, agent_body) =
        find("var/vcap/bosh/bin/bosh-agent").expect("the agent is in the image");
    assert_eq!(agent_body, &std::fs::read(&agent).unwrap());
    assert!(find("usr/bin/python3").is_some(), "python3 is installed");
    for d in [
        "var/vcap/data",
        "var/vcap/store",
        "var/vcap/jobs",
        "var/vcap/packages",
        "var/vcap/sys/log",
        "var/vcap/sys/run",
    ] {
        assert!(find(d).is_some_and(|(_, k, _)| k.is_dir()), "{d} is a directory");
    }
    let passwd = String::from_utf8(find("etc/passwd").expect("/etc/passwd").2.clone()).unwrap();
    assert!(passwd.lines().any(|l| l.starts_with("vcap:x:1000:")), "{passwd}");
}
