//! `boshctl` release verbs end to end: init, generate, add-blob, blobs,
//! create-release, inspect-local-release and finalize-release.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

fn boshctl(home: &Path, cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_boshctl"))
        .args(args)
        .current_dir(cwd)
        .env("HOME", home)
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/release")
}

fn copy_example(to: &Path) {
    for e in walkdir_like(&example()) {
        let rel = e.strip_prefix(example()).unwrap();
        let first = rel.components().next().map(|c| c.as_os_str().to_string_lossy().into_owned());
        if matches!(first.as_deref(), Some(".dev_builds" | "dev_releases" | ".blobstore" | "blobs"))
        {
            continue;
        }
        if e.is_dir() {
            std::fs::create_dir_all(to.join(rel)).unwrap();
        } else {
            std::fs::copy(&e, to.join(rel)).unwrap();
        }
    }
}

/// Every path under `dir`, parents before children.
fn walkdir_like(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if out[i].is_dir() {
            let mut kids: Vec<_> =
                std::fs::read_dir(&out[i]).unwrap().map(|e| e.unwrap().path()).collect();
            kids.sort();
            out.extend(kids);
        }
        i += 1;
    }
    out
}

/// create-release of the example writes a tarball that inspect-local-release lists, job and packages.
#[test]
fn create_release_of_the_example_is_listed_by_inspect() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hello");
    copy_example(&dir);
    let out = ok(&boshctl(
        tmp.path(),
        tmp.path(),
        &["create-release", "--dir", "hello", "--force", "--tarball", "r.tgz"],
    ));
    assert!(out.contains("0+dev.1"), "{out}");
    let table = ok(&boshctl(tmp.path(), tmp.path(), &["inspect-local-release", "r.tgz"]));
    for want in ["hello", "hello-lib", "1 jobs", "2 packages", "sha256:", "license"] {
        assert!(table.contains(want), "{want} not in {table}");
    }
    let json = ok(&boshctl(tmp.path(), tmp.path(), &["inspect-local-release", "r.tgz", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["name"], "hello");
    assert_eq!(v["jobs"][0]["templates"]["ctl.erb"], "bin/ctl");
    assert_eq!(v["packages"][0]["dependencies"][0], "hello-lib");
    assert_eq!(v["packages"][0]["fingerprint"].as_str().unwrap().len(), 64);

    let manifest = "hello/dev_releases/hello/hello-0+dev.1.yml";
    let args = ["create-release", manifest, "--dir", "hello", "--tarball", "again.tgz"];
    ok(&boshctl(tmp.path(), tmp.path(), &args));
    let (first, again) = (tmp.path().join("r.tgz"), tmp.path().join("again.tgz"));
    assert!(std::fs::read(first).unwrap() == std::fs::read(again).unwrap());

    let again = ok(&boshctl(tmp.path(), &dir, &["create-release", "--force"]));
    assert!(again.contains("0+dev.2"), "{again}");
    let fin = ok(&boshctl(
        tmp.path(),
        tmp.path(),
        &["finalize-release", "r.tgz", "--dir", "hello", "--force"],
    ));
    assert!(fin.contains("Version") && fin.contains(" 1 "), "{fin}");
    assert!(dir.join("releases/hello/hello-1.yml").is_file());
}

/// init-release, generate-job, generate-package, add-blob and blobs build a directory bosh-style.
#[test]
fn skeleton_commands_build_a_release_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo-release");
    std::fs::create_dir(&dir).unwrap();
    ok(&boshctl(tmp.path(), &dir, &["init-release"]));
    let final_yml = std::fs::read_to_string(dir.join("config/final.yml")).unwrap();
    assert!(final_yml.contains("name: demo"), "{final_yml}");
    ok(&boshctl(tmp.path(), &dir, &["generate-job", "web"]));
    ok(&boshctl(tmp.path(), &dir, &["generate-package", "app"]));
    assert!(dir.join("jobs/web/spec").is_file() && dir.join("jobs/web/templates").is_dir());
    assert!(dir.join("packages/app/packaging").is_file());
    let again = boshctl(tmp.path(), &dir, &["generate-job", "web"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("job 'web' already exists"));

    std::fs::write(tmp.path().join("blob.bin"), "blob content").unwrap();
    ok(&boshctl(tmp.path(), &dir, &["add-blob", "../blob.bin", "app/blob.bin"]));
    let blobs = ok(&boshctl(tmp.path(), &dir, &["blobs"]));
    assert!(
        blobs.contains("app/blob.bin") && blobs.contains("(local)") && blobs.contains("1 blobs"),
        "{blobs}"
    );

    std::fs::write(dir.join("packages/app/spec"), "name: app\nfiles: [app/*]\n").unwrap();
    let created =
        ok(&boshctl(tmp.path(), &dir, &["create-release", "--force", "--tarball", "out.tgz"]));
    assert!(
        created.contains("demo") && created.contains("web") && created.contains("app"),
        "{created}"
    );
}

/// A bad release directory fails with the file and entry named.
#[test]
fn bad_input_names_the_file_and_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hello");
    copy_example(&dir);
    std::fs::write(dir.join("config/blobs.yml"), "x/y.tgz: {size: 1, sha: 'sha256:00'}\n").unwrap();
    let out = boshctl(tmp.path(), &dir, &["create-release", "--force"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("config/blobs.yml: x/y.tgz: blobs/x/y.tgz is missing"), "{err}");
}

/// In a git repository, create-release refuses local modifications unless
/// --force, and records the commit it was built from.
#[test]
fn create_release_checks_git_state() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("g-release");
    std::fs::create_dir(&dir).unwrap();
    ok(&boshctl(tmp.path(), &dir, &["init-release", "--git"]));
    assert!(std::fs::read_to_string(dir.join(".gitignore")).unwrap().contains(".dev_builds"));
    ok(&boshctl(tmp.path(), &dir, &["generate-job", "web"]));
    let dirty = boshctl(tmp.path(), &dir, &["create-release"]);
    assert!(!dirty.status.success());
    assert!(String::from_utf8_lossy(&dirty.stderr).contains("local modifications"));
    let git = |args: &[&str]| {
        let st = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .current_dir(&dir)
            .status()
            .unwrap();
        assert!(st.success(), "git {args:?}");
    };
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "init"]);
    let out = ok(&boshctl(tmp.path(), &dir, &["create-release"]));
    let head = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(&dir)
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&head.stdout).trim().to_string();
    assert!(out.contains(&head), "{head} not in {out}");
}
