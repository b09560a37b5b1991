//! Release blobs and final builds in an `s3` blobstore, against a real
//! S3-compatible server (moto, started per test), driven through `boshctl`
//! as a release author would: add-blob, upload-blobs, sync-blobs,
//! create-release (`--final` too) and finalize-release.
//!
//! moto checks SigV4 signatures and IAM policies while its authentication
//! is on; the tests turn it off only to set a bucket up or to alter an
//! object behind boshctl's back.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bosh_api::release::{
    ReleaseManifest,
    config::{BlobsIndex, read_blobs},
    index::BuildIndex,
    read_release_tarball, sha256_digest,
};
use bosh_test_utils::moto::Moto;
use common::{failed, final_build, fresh_copy, leftovers, ok};

mod common;

const BLOB: &str = "app/blob.bin";
const BUCKET: &str = "bosh-blobs";

fn boshctl(home: &Path, dir: &Path, args: &[&str]) -> Output {
    boshctl_env(home, dir, args, None)
}

/// `boshctl` with `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` set to `keys`
/// (and unset without).
fn boshctl_env(home: &Path, dir: &Path, args: &[&str], keys: Option<(&str, &str)>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_boshctl"));
    cmd.args(args).arg("--dir").arg(dir).current_dir(dir).env("HOME", home);
    match keys {
        Some((k, s)) => cmd.env("AWS_ACCESS_KEY_ID", k).env("AWS_SECRET_ACCESS_KEY", s),
        None => cmd.env_remove("AWS_ACCESS_KEY_ID").env_remove("AWS_SECRET_ACCESS_KEY"),
    };
    cmd.env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SHARED_CREDENTIALS_FILE")
        .output()
        .unwrap()
}

/// A moto server with the test bucket and a user allowed `s3:*`, checking
/// every request's signature from then on: returns it with the user's keys.
async fn signed_moto() -> (Moto, String, String) {
    let moto = Moto::start().await.unwrap();
    moto.create_bucket(BUCKET).await.unwrap();
    let (key, secret) = moto.s3_user("releaser").await.unwrap();
    moto.require_auth(true).await.unwrap();
    (moto, key, secret)
}

/// A release with one package whose only file is the blob, and an s3
/// blobstore on `moto`'s port (path style, plain HTTP).
fn release(home: &Path, port: u16, bucket: &str) -> PathBuf {
    let dir = home.join("release");
    std::fs::create_dir_all(&dir).unwrap();
    ok(&boshctl(home, &dir, &["init-release"]));
    ok(&boshctl(home, &dir, &["generate-package", "app"]));
    std::fs::write(
        dir.join("packages/app/spec"),
        format!("---\nname: app\ndependencies: []\nfiles: [{BLOB}]\n"),
    )
    .unwrap();
    std::fs::write(
        dir.join("config/final.yml"),
        format!(
            "---\nname: s3rel\nblobstore:\n  provider: s3\n  options:\n    bucket_name: {bucket}\n    \
             host: 127.0.0.1\n    port: {port}\n    use_ssl: false\n    s3_force_path_style: true\n    \
             region: us-east-1\n"
        ),
    )
    .unwrap();
    dir
}

fn private_yml(dir: &Path, key: &str, secret: &str) {
    std::fs::write(
        dir.join("config/private.yml"),
        format!(
            "---\nblobstore:\n  options:\n    credentials_source: static\n    \
             access_key_id: {key}\n    secret_access_key: {secret}\n"
        ),
    )
    .unwrap();
}

/// `config/blobs.yml` as boshctl wrote it.
fn blobs_yml(dir: &Path) -> BlobsIndex {
    read_blobs(dir).unwrap()
}

fn object_id(dir: &Path, blob: &str) -> Option<String> {
    blobs_yml(dir)[blob].object_id.clone()
}

/// add-blob → upload-blobs (object id recorded, object in the bucket) →
/// blobs/ deleted → sync-blobs (same bytes back) → create-release fetching
/// again; then an object altered in the bucket is refused naming the blob
/// and both digests, leaving nothing in blobs/. Every signed request passes
/// moto's signature check.
#[tokio::test]
async fn blobs_round_trip_through_s3_and_altered_objects_are_refused() {
    let (moto, key, secret) = signed_moto().await;
    let home = tempfile::tempdir().unwrap();
    let dir = release(home.path(), moto.port(), BUCKET);
    private_yml(&dir, &key, &secret);

    let content: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let src = home.path().join("blob.bin");
    std::fs::write(&src, &content).unwrap();
    ok(&boshctl(home.path(), &dir, &["add-blob", src.to_str().unwrap(), BLOB]));
    assert_eq!(object_id(&dir, BLOB), None, "not uploaded yet");
    let out = ok(&boshctl(home.path(), &dir, &["upload-blobs"]));
    assert!(out.contains("Uploaded 1 blob(s)"), "{out}");
    let id = object_id(&dir, BLOB).expect("object_id recorded");
    assert_eq!(id.len(), 36, "a uuid: {id}");

    moto.require_auth(false).await.unwrap();
    let (status, stored) = moto.s3("GET", &format!("/{BUCKET}/{id}"), b"").await.unwrap();
    assert_eq!(status, 200);
    assert!(stored == content, "the bucket holds the blob's bytes");
    moto.require_auth(true).await.unwrap();

    std::fs::remove_dir_all(dir.join("blobs")).unwrap();
    let out = ok(&boshctl(home.path(), &dir, &["sync-blobs"]));
    assert!(out.contains("Synced 1 blob(s)"), "{out}");
    assert!(std::fs::read(dir.join("blobs").join(BLOB)).unwrap() == content);
    assert!(leftovers(&dir).iter().all(|p| p.ends_with(BLOB)), "{:?}", leftovers(&dir));

    // credentials_source: env_or_profile signs with the environment's keys.
    std::fs::write(
        dir.join("config/private.yml"),
        "---\nblobstore:\n  options:\n    credentials_source: env_or_profile\n",
    )
    .unwrap();
    std::fs::remove_dir_all(dir.join("blobs")).unwrap();
    let err = failed(&boshctl(home.path(), &dir, &["sync-blobs"]));
    assert!(err.contains("AWS_ACCESS_KEY_ID"), "{err}");
    ok(&boshctl_env(home.path(), &dir, &["sync-blobs"], Some((&key, &secret))));
    assert!(std::fs::read(dir.join("blobs").join(BLOB)).unwrap() == content);
    // ... else with a profile of AWS's shared credentials file: `default`
    // in ~/.aws/credentials, or the one AWS_PROFILE names.
    std::fs::create_dir_all(home.path().join(".aws")).unwrap();
    std::fs::write(
        home.path().join(".aws/credentials"),
        format!(
            "[default]\naws_access_key_id = AKIAEXAMPLEDEFAULT01\naws_secret_access_key = default-profile-secret\n\n\
             [releaser]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\n"
        ),
    )
    .unwrap();
    let with_profile = |profile: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_boshctl"));
        cmd.args(["sync-blobs", "--dir"]).arg(&dir).current_dir(&dir).env("HOME", home.path());
        for k in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"] {
            cmd.env_remove(k);
        }
        cmd.env_remove("AWS_SHARED_CREDENTIALS_FILE");
        match profile {
            Some(p) => cmd.env("AWS_PROFILE", p),
            None => cmd.env_remove("AWS_PROFILE"),
        };
        cmd.output().unwrap()
    };
    std::fs::remove_dir_all(dir.join("blobs")).unwrap();
    // `default`'s keys are read and signed with; moto does not know them.
    let err = failed(&with_profile(None));
    assert!(err.contains("InvalidAccessKeyId"), "the profile's keys were sent: {err}");
    assert!(!err.contains("default-profile-secret"), "no secret in errors: {err}");
    ok(&with_profile(Some("releaser")));
    assert!(std::fs::read(dir.join("blobs").join(BLOB)).unwrap() == content);
    std::fs::remove_dir_all(dir.join("blobs")).unwrap();
    let err = failed(&with_profile(Some("nobody")));
    assert!(err.contains("profile [nobody]") && err.contains(".aws/credentials"), "{err}");
    assert!(!dir.join("blobs").join(BLOB).exists());
    private_yml(&dir, &key, &secret);

    let out = ok(&boshctl(home.path(), &dir, &["create-release", "--force"]));
    assert!(out.contains("s3rel"), "{out}");
    assert!(std::fs::read(dir.join("blobs").join(BLOB)).unwrap() == content);

    // Someone replaces the object in the bucket.
    moto.require_auth(false).await.unwrap();
    let (status, _) = moto.s3("PUT", &format!("/{BUCKET}/{id}"), b"not the blob").await.unwrap();
    assert_eq!(status, 200);
    moto.require_auth(true).await.unwrap();
    std::fs::remove_dir_all(dir.join("blobs")).unwrap();
    let err = failed(&boshctl(home.path(), &dir, &["sync-blobs"]));
    let sha = blobs_yml(&dir)[BLOB].sha.clone();
    assert!(err.contains(&format!("blobs/{BLOB}")), "{err}");
    assert!(err.contains(&id), "{err}");
    assert!(err.contains(&sha), "names the expected digest: {err}");
    assert!(err.contains("found sha256:"), "names the digest found: {err}");
    assert_eq!(leftovers(&dir), Vec::<PathBuf>::new(), "nothing is left behind");
    let err = failed(&boshctl(home.path(), &dir, &["create-release", "--force"]));
    assert!(err.contains(&format!("blobs/{BLOB}")), "{err}");
    assert!(!err.contains(&secret), "no secret in errors: {err}");
}

/// A wrong secret or key is refused by the server with a clear error
/// naming the bucket and blob; no object id is recorded and no secret is
/// printed. An unreachable server and a missing bucket name themselves too.
#[tokio::test]
async fn wrong_credentials_and_missing_buckets_are_clear_and_record_nothing() {
    let (moto, key, secret) = signed_moto().await;
    let home = tempfile::tempdir().unwrap();
    let dir = release(home.path(), moto.port(), BUCKET);
    let src = home.path().join("blob.bin");
    std::fs::write(&src, b"some bytes").unwrap();
    ok(&boshctl(home.path(), &dir, &["add-blob", src.to_str().unwrap(), BLOB]));

    let wrong_secret = "wrongSecretWrongSecretWrongSecret0123456";
    private_yml(&dir, &key, wrong_secret);
    let err = failed(&boshctl(home.path(), &dir, &["upload-blobs"]));
    assert!(err.contains(&format!("s3 bucket '{BUCKET}'")), "{err}");
    assert!(err.contains(&format!("blobs/{BLOB}")), "{err}");
    assert!(err.contains("HTTP 403") && err.contains("SignatureDoesNotMatch"), "{err}");
    assert!(!err.contains(wrong_secret) && !err.contains(&secret), "{err}");
    assert_eq!(object_id(&dir, BLOB), None, "nothing recorded");

    private_yml(&dir, "AKIAUNKNOWNUNKNOWN00", &secret);
    let err = failed(&boshctl(home.path(), &dir, &["upload-blobs"]));
    assert!(err.contains("InvalidAccessKeyId"), "{err}");
    assert!(!err.contains(&secret), "{err}");
    assert_eq!(object_id(&dir, BLOB), None, "nothing recorded");

    // Uploads need credentials: without private.yml it says where they go.
    std::fs::remove_file(dir.join("config/private.yml")).unwrap();
    let err = failed(&boshctl(home.path(), &dir, &["upload-blobs"]));
    assert!(err.contains("config/private.yml") && err.contains("access_key_id"), "{err}");

    // A bucket that does not exist.
    let other = release(&home.path().join("other"), moto.port(), "no-such-bucket");
    private_yml(&other, &key, &secret);
    ok(&boshctl(home.path(), &other, &["add-blob", src.to_str().unwrap(), BLOB]));
    let err = failed(&boshctl(home.path(), &other, &["upload-blobs"]));
    assert!(err.contains("s3 bucket 'no-such-bucket'") && err.contains("NoSuchBucket"), "{err}");
    assert_eq!(object_id(&other, BLOB), None);

    // Nothing listening: the error names the endpoint, bucket and object.
    let port = bosh_test_utils::free_port();
    let gone = release(&home.path().join("gone"), port, BUCKET);
    std::fs::write(
        gone.join("config/blobs.yml"),
        format!("{BLOB}:\n  size: 10\n  object_id: 0f0e-id\n  sha: sha256:00\n"),
    )
    .unwrap();
    let err = failed(&boshctl(home.path(), &gone, &["sync-blobs"]));
    assert!(err.contains(&format!("127.0.0.1:{port}")) && err.contains("0f0e-id"), "{err}");
    assert!(err.contains(&format!("s3 bucket '{BUCKET}'")), "{err}");
    assert!(err.to_lowercase().contains("refused"), "{err}");
}

/// A public release syncs with no `config/private.yml`: unsigned GETs of a
/// bucket whose policy lets anyone read. A bucket without such a policy
/// refuses the same anonymous GET, with a hint about credentials.
#[tokio::test]
async fn anonymous_sync_reads_a_public_bucket() {
    let moto = Moto::start().await.unwrap();
    let home = tempfile::tempdir().unwrap();
    let src = home.path().join("blob.bin");
    std::fs::write(&src, b"public bytes").unwrap();
    for (name, public) in [("public-blobs", true), ("private-blobs", false)] {
        moto.create_bucket(name).await.unwrap();
        if public {
            let policy = format!(
                r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::{name}/*"}}]}}"#
            );
            let (status, body) =
                moto.s3("PUT", &format!("/{name}?policy"), policy.as_bytes()).await.unwrap();
            assert!(status < 300, "{status} {}", String::from_utf8_lossy(&body));
        }
        let dir = release(&home.path().join(name), moto.port(), name);
        // Authentication is off: moto takes any keys for the upload.
        private_yml(&dir, "AKIAANYANYANYANY0000", "any");
        ok(&boshctl(home.path(), &dir, &["add-blob", src.to_str().unwrap(), BLOB]));
        ok(&boshctl(home.path(), &dir, &["upload-blobs"]));
        std::fs::remove_file(dir.join("config/private.yml")).unwrap();
        std::fs::remove_dir_all(dir.join("blobs")).unwrap();
        let out = boshctl(home.path(), &dir, &["sync-blobs"]);
        if public {
            ok(&out);
            assert_eq!(std::fs::read(dir.join("blobs").join(BLOB)).unwrap(), b"public bytes");
        } else {
            let err = failed(&out);
            assert!(err.contains("HTTP 403") && err.contains("no credentials"), "{err}");
            assert_eq!(leftovers(&dir), Vec::<PathBuf>::new());
        }
    }
}

/// A provider boshctl does not speak is refused naming the file and option.
#[test]
fn unknown_providers_are_refused_naming_the_option() {
    let home = tempfile::tempdir().unwrap();
    let dir = release(home.path(), 1, BUCKET);
    let final_yml = std::fs::read_to_string(dir.join("config/final.yml")).unwrap();
    std::fs::write(
        dir.join("config/final.yml"),
        final_yml.replace("provider: s3", "provider: swift"),
    )
    .unwrap();
    std::fs::write(
        dir.join("config/blobs.yml"),
        format!("{BLOB}:\n  size: 10\n  object_id: some-id\n  sha: sha256:00\n"),
    )
    .unwrap();
    let err = failed(&boshctl(home.path(), &dir, &["sync-blobs"]));
    assert!(err.contains("config/final.yml: blobstore.provider: provider 'swift'"), "{err}");
    assert!(err.contains("supported: local, s3, gcs"), "{err}");
}

/// Job and package digests of a release tarball, by name.
fn digests(tarball: &Path) -> Vec<(String, String)> {
    let scratch = tempfile::tempdir().unwrap();
    let ar = read_release_tarball(tarball, &scratch.path().join("r"), &Default::default()).unwrap();
    digests_of(&ar.manifest)
}

fn digests_of(m: &ReleaseManifest) -> Vec<(String, String)> {
    let jobs = m.jobs.iter().map(|j| (format!("jobs/{}", j.name), j.sha1.clone()));
    jobs.chain(m.packages.iter().map(|p| (format!("packages/{}", p.name), p.sha1.clone())))
        .collect()
}

/// Files in a `HOME`'s build cache.
fn cached(home: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(home.join(".bosh/cache")) else { return Vec::new() };
    rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
}

/// A release with a job using the blob's package, its blob uploaded.
fn release_with_job(home: &Path, port: u16, key: &str, secret: &str) -> PathBuf {
    let dir = release(home, port, BUCKET);
    private_yml(&dir, key, secret);
    ok(&boshctl(home, &dir, &["generate-job", "web"]));
    std::fs::write(
        dir.join("jobs/web/spec"),
        "---\nname: web\ntemplates: {ctl.erb: bin/ctl}\npackages: [app]\nproperties: {}\n",
    )
    .unwrap();
    std::fs::write(dir.join("jobs/web/templates/ctl.erb"), "#!/bin/bash\nexec app\n").unwrap();
    let src = home.join("blob.bin");
    std::fs::write(&src, b"the app's bytes").unwrap();
    ok(&boshctl(home, &dir, &["add-blob", src.to_str().unwrap(), BLOB]));
    ok(&boshctl(home, &dir, &["upload-blobs"]));
    dir
}

/// `create-release --final` with s3 stores each job and package build in
/// the bucket under a fresh object id recorded in `.final_builds`; a fresh
/// checkout with an empty cache then writes the tarball of that final
/// version, and builds a dev release reusing the final builds, from the
/// bucket with the same digests. An object altered in the bucket is
/// refused naming the build and both digests, and nothing of it is cached.
#[tokio::test]
async fn final_builds_go_through_s3_and_come_back_on_a_fresh_checkout() {
    let (moto, key, secret) = signed_moto().await;
    let home = tempfile::tempdir().unwrap();
    let dir = release_with_job(home.path(), moto.port(), &key, &secret);

    let first = home.path().join("first.tgz");
    let out = ok(&boshctl(
        home.path(),
        &dir,
        &["create-release", "--final", "--force", "--tarball", first.to_str().unwrap()],
    ));
    assert!(out.contains("s3rel"), "{out}");
    let first_digests = digests(&first);
    assert_eq!(first_digests.len(), 2, "{first_digests:?}");
    moto.require_auth(false).await.unwrap();
    for (build, sha) in &first_digests {
        let entry = final_build(&dir, build);
        assert_eq!(&entry.sha1, sha, "{build}: the index records the tarball's digest");
        let id = entry.blobstore_id.unwrap_or_else(|| panic!("{build}: no blobstore_id"));
        assert_eq!(id.len(), 36, "{build}: a uuid: {id}");
        let (status, stored) = moto.s3("GET", &format!("/{BUCKET}/{id}"), b"").await.unwrap();
        assert_eq!(status, 200, "{build}: object {id} in the bucket");
        assert_eq!(&sha256_digest(&stored), sha, "{build}: the bucket holds the build");
    }
    moto.require_auth(true).await.unwrap();
    let manifest = dir.join("releases/s3rel/s3rel-1.yml");
    assert!(manifest.is_file());

    // A fresh checkout: the final version's tarball comes from the bucket.
    let home2 = tempfile::tempdir().unwrap();
    let clone = home2.path().join("release");
    fresh_copy(&dir, &clone);
    assert!(!clone.join("blobs").exists() && !clone.join(".dev_builds").exists());
    assert_eq!(cached(home2.path()), Vec::<String>::new());
    let again = home2.path().join("again.tgz");
    let recorded = clone.join("releases/s3rel/s3rel-1.yml");
    ok(&boshctl(
        home2.path(),
        &clone,
        &["create-release", recorded.to_str().unwrap(), "--tarball", again.to_str().unwrap()],
    ));
    assert_eq!(digests(&again), first_digests, "the same builds, byte for byte");
    for (build, sha) in &first_digests {
        assert!(cached(home2.path()).contains(sha), "{build} cached after the fetch");
    }

    // Another fresh checkout: a dev release reuses the final builds.
    let home3 = tempfile::tempdir().unwrap();
    let clone3 = home3.path().join("release");
    fresh_copy(&dir, &clone3);
    let dev = home3.path().join("dev.tgz");
    let out = ok(&boshctl(
        home3.path(),
        &clone3,
        &["create-release", "--force", "--tarball", dev.to_str().unwrap()],
    ));
    assert!(out.contains("1+dev.1"), "{out}");
    assert_eq!(digests(&dev), first_digests, "final builds reused, not rebuilt");
    assert!(!clone3.join(".dev_builds").exists(), "nothing was built");

    // Someone replaces the package's object in the bucket.
    let pkg = final_build(&dir, "packages/app");
    let pkg_id = pkg.blobstore_id.clone().unwrap();
    moto.require_auth(false).await.unwrap();
    let (status, _) =
        moto.s3("PUT", &format!("/{BUCKET}/{pkg_id}"), b"not the package").await.unwrap();
    assert_eq!(status, 200);
    moto.require_auth(true).await.unwrap();
    let home4 = tempfile::tempdir().unwrap();
    let clone4 = home4.path().join("release");
    fresh_copy(&dir, &clone4);
    let err = failed(&boshctl(home4.path(), &clone4, &["create-release", "--force"]));
    assert!(err.contains(".final_builds/packages/app"), "names the build: {err}");
    assert!(err.contains(&pkg_id), "names the object: {err}");
    assert!(err.contains(&pkg.sha1), "names the expected digest: {err}");
    assert!(
        err.contains(&format!("found {}", sha256_digest(b"not the package"))),
        "names the digest found: {err}"
    );
    assert!(!err.contains(&secret), "no secret in errors: {err}");
    let left = cached(home4.path());
    assert!(!left.contains(&pkg.sha1), "the altered object is not cached: {left:?}");
    assert!(left.iter().all(|f| !f.starts_with('.')), "no scratch files left: {left:?}");
    assert!(!clone4.join(".dev_builds/packages").exists(), "the package was not rebuilt");
}

/// `finalize-release` of a dev tarball with s3 uploads only the builds not
/// yet final (the changed package), records each id after its PUT, and a
/// refused upload records nothing.
#[tokio::test]
async fn finalize_release_uploads_new_builds_to_s3_only() {
    let (moto, key, secret) = signed_moto().await;
    let home = tempfile::tempdir().unwrap();
    let dir = release_with_job(home.path(), moto.port(), &key, &secret);
    ok(&boshctl(home.path(), &dir, &["create-release", "--final", "--force"]));
    let job = final_build(&dir, "jobs/web");
    let old_pkg = final_build(&dir, "packages/app");

    // A changed package: a dev tarball, then finalized.
    std::fs::write(
        dir.join("packages/app/packaging"),
        "set -e\ncp -a app/* ${BOSH_INSTALL_TARGET}\n",
    )
    .unwrap();
    let dev = home.path().join("dev.tgz");
    ok(&boshctl(
        home.path(),
        &dir,
        &["create-release", "--force", "--tarball", dev.to_str().unwrap()],
    ));
    let dev_digests = digests(&dev);

    // With a wrong secret the PUT is refused and nothing is recorded.
    private_yml(&dir, &key, "wrongSecretWrongSecretWrongSecret0123456");
    let err = failed(&boshctl(
        home.path(),
        &dir,
        &["finalize-release", dev.to_str().unwrap(), "--force"],
    ));
    assert!(err.contains("final build .final_builds/packages/app"), "{err}");
    assert!(err.contains("SignatureDoesNotMatch"), "{err}");
    let index = BuildIndex::read(&dir, &dir.join(".final_builds/packages/app/index.yml")).unwrap();
    assert_eq!(index.builds.len(), 1, "no id recorded for a refused upload");
    assert!(!dir.join("releases/s3rel/s3rel-2.yml").exists());

    private_yml(&dir, &key, &secret);
    let out =
        ok(&boshctl(home.path(), &dir, &["finalize-release", dev.to_str().unwrap(), "--force"]));
    assert!(out.contains("s3rel"), "{out}");
    assert!(dir.join("releases/s3rel/s3rel-2.yml").is_file());
    assert_eq!(final_build(&dir, "jobs/web"), job, "the unchanged job is not uploaded again");
    let index = BuildIndex::read(&dir, &dir.join(".final_builds/packages/app/index.yml")).unwrap();
    assert_eq!(index.builds.len(), 2);
    let new_pkg = index.builds.values().find(|e| e.sha1 != old_pkg.sha1).unwrap().clone();
    let sha = &dev_digests.iter().find(|(b, _)| b == "packages/app").unwrap().1;
    assert_eq!(&new_pkg.sha1, sha);
    let id = new_pkg.blobstore_id.unwrap();
    assert_ne!(Some(&id), old_pkg.blobstore_id.as_ref());
    moto.require_auth(false).await.unwrap();
    let (status, stored) = moto.s3("GET", &format!("/{BUCKET}/{id}"), b"").await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(&sha256_digest(&stored), sha, "the bucket holds the new package build");
}
