//! Release blobs in an `s3` blobstore, against a real S3-compatible
//! server (moto, started per test), driven through `boshctl` as a
//! release author would: add-blob, upload-blobs, sync-blobs, create-release.
//!
//! moto checks SigV4 signatures and IAM policies while its authentication
//! is on; the tests turn it off only to set a bucket up or to alter an
//! object behind boshctl's back.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bosh_api::release::config::{BlobsIndex, read_blobs};
use bosh_test_utils::moto::Moto;

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
    cmd.env_remove("AWS_SESSION_TOKEN").output().unwrap()
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

fn failed(out: &Output) -> String {
    assert!(!out.status.success(), "succeeded: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
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

/// Files under `blobs/`, and scratch dirs a sync may have left in the release.
fn leftovers(dir: &Path) -> Vec<PathBuf> {
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

/// add-blob → upload-blobs (object id recorded, object in the bucket) →
/// blobs/ deleted → sync-blobs (same bytes back) → create-release fetching
/// again; then an object altered in the bucket is refused naming the blob
/// and both digests, leaving nothing in blobs/. Every signed request passes
/// moto's signature check.
#[tokio::test]
async fn blobs_round_trip_through_s3_and_altered_objects_are_refused() {
    let moto = Moto::start().await.unwrap();
    moto.create_bucket(BUCKET).await.unwrap();
    let (key, secret) = moto.s3_user("releaser").await.unwrap();
    moto.require_auth(true).await.unwrap();
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
    private_yml(&dir, &key, &secret);

    std::fs::remove_dir_all(dir.join("blobs")).unwrap();
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
    let moto = Moto::start().await.unwrap();
    moto.create_bucket(BUCKET).await.unwrap();
    let (key, secret) = moto.s3_user("releaser").await.unwrap();
    moto.require_auth(true).await.unwrap();
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
fn gcs_is_refused_naming_the_option() {
    let home = tempfile::tempdir().unwrap();
    let dir = release(home.path(), 1, BUCKET);
    let final_yml = std::fs::read_to_string(dir.join("config/final.yml")).unwrap();
    std::fs::write(
        dir.join("config/final.yml"),
        final_yml.replace("provider: s3", "provider: gcs"),
    )
    .unwrap();
    std::fs::write(
        dir.join("config/blobs.yml"),
        format!("{BLOB}:\n  size: 10\n  object_id: some-id\n  sha: sha256:00\n"),
    )
    .unwrap();
    let err = failed(&boshctl(home.path(), &dir, &["sync-blobs"]));
    assert!(err.contains("config/final.yml: blobstore.provider: provider 'gcs'"), "{err}");
}
