//! Release blobs and final builds in a `gcs` blobstore, against a real
//! GCS-compatible server (gcp-storage-emulator, started per test), driven
//! through `boshctl` as a release author would: add-blob, upload-blobs,
//! sync-blobs on a fresh checkout, create-release (`--final` too).
//!
//! boshctl reaches the emulator through `STORAGE_EMULATOR_HOST`, as
//! Google's client libraries do, and then sends no token; the
//! service-account token exchange is covered by the unit tests of
//! `release::gcs::auth` (the JWT and its signature) and here by a token
//! endpoint that refuses (the emulator's port, which has no such endpoint).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bosh_api::release::{config::read_blobs, read_release_tarball, sha256_digest};
use bosh_test_utils::gcs::GcsEmulator;
use common::{failed, final_build, fresh_copy, leftovers, ok};

mod common;

const BLOB: &str = "app/blob.bin";
const BUCKET: &str = "bosh-blobs";
const EMAIL: &str = "releaser@bosh-rs.iam.gserviceaccount.com";

/// `boshctl` with `STORAGE_EMULATOR_HOST` set to `emulator` (unset
/// without), and no Application Default Credentials in reach.
fn boshctl(home: &Path, dir: &Path, args: &[&str], emulator: Option<&str>) -> Output {
    boshctl_adc(home, dir, args, emulator, None)
}

/// [`boshctl`] with `GOOGLE_APPLICATION_CREDENTIALS` set to `adc`.
fn boshctl_adc(
    home: &Path,
    dir: &Path,
    args: &[&str],
    emulator: Option<&str>,
    adc: Option<&Path>,
) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_boshctl"));
    cmd.args(args).arg("--dir").arg(dir).current_dir(dir).env("HOME", home);
    cmd.env_remove("CLOUDSDK_CONFIG");
    match adc {
        Some(p) => cmd.env("GOOGLE_APPLICATION_CREDENTIALS", p),
        None => cmd.env_remove("GOOGLE_APPLICATION_CREDENTIALS"),
    };
    match emulator {
        Some(h) => cmd.env("STORAGE_EMULATOR_HOST", h),
        None => cmd.env_remove("STORAGE_EMULATOR_HOST"),
    };
    cmd.output().unwrap()
}

/// A service account's JSON key with a fresh RSA key, its token endpoint
/// `token_uri`; returns the key's JSON text and its private key PEM.
fn json_key(token_uri: &str) -> (String, String) {
    use rsa::pkcs8::EncodePrivateKey as _;
    let key = rsa::PrivateKey::new(&mut getrandom::SysRng, 2048).unwrap();
    let pem = key.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF).unwrap().to_string();
    let json = serde_json::json!({
        "type": "service_account",
        "project_id": "bosh-rs",
        "private_key_id": "0123abcd",
        "private_key": pem,
        "client_email": EMAIL,
        "token_uri": token_uri,
    });
    (json.to_string(), pem)
}

/// `config/private.yml` with static credentials (the key as a block string).
fn private_yml(dir: &Path, key_json: &str) {
    std::fs::write(
        dir.join("config/private.yml"),
        format!(
            "---\nblobstore:\n  options:\n    credentials_source: static\n    json_key: |\n      {key_json}\n"
        ),
    )
    .unwrap();
}

/// A release with one package whose only file is the blob, and a gcs
/// blobstore with `extra` options (lines under `options:`).
fn release(home: &Path, bucket: &str, extra: &str) -> PathBuf {
    let dir = home.join("release");
    std::fs::create_dir_all(&dir).unwrap();
    ok(&boshctl(home, &dir, &["init-release"], None));
    ok(&boshctl(home, &dir, &["generate-package", "app"], None));
    std::fs::write(
        dir.join("packages/app/spec"),
        format!("---\nname: app\ndependencies: []\nfiles: [{BLOB}]\n"),
    )
    .unwrap();
    std::fs::write(
        dir.join("config/final.yml"),
        format!(
            "---\nname: gcsrel\nblobstore:\n  provider: gcs\n  options:\n    bucket_name: {bucket}\n{extra}"
        ),
    )
    .unwrap();
    dir
}

fn object_id(dir: &Path, blob: &str) -> Option<String> {
    read_blobs(dir).unwrap()[blob].object_id.clone()
}

/// Bytes no text mangling leaves alone: every byte value, CRLFs and a
/// multipart-looking boundary line among them.
fn awkward_bytes() -> Vec<u8> {
    let mut v: Vec<u8> = (0..150_000u32).map(|i| (i * 7 % 251) as u8).collect();
    v.extend_from_slice(b"\r\n--bosh-boundary\r\n\r\n");
    v.extend(0..=255u8);
    v
}

/// add-blob → upload-blobs (object id recorded, the bucket holds the bytes)
/// → sync-blobs on a fresh checkout (same bytes) → an object replaced in
/// the bucket is refused naming the blob, object and both digests, with
/// nothing left in `blobs/`. With `credentials_source: none` the same
/// objects are read anonymously, and uploads are refused naming the option.
#[tokio::test]
async fn blobs_round_trip_through_gcs_and_altered_objects_are_refused() {
    let gcs = GcsEmulator::start().await.unwrap();
    gcs.create_bucket(BUCKET).await.unwrap();
    let host = gcs.host();
    let emu = Some(host.as_str());
    let home = tempfile::tempdir().unwrap();
    let dir = release(home.path(), BUCKET, "");
    let (key, pem) = json_key("https://oauth2.googleapis.com/token");
    private_yml(&dir, &key);

    let content = awkward_bytes();
    let src = home.path().join("blob.bin");
    std::fs::write(&src, &content).unwrap();
    ok(&boshctl(home.path(), &dir, &["add-blob", src.to_str().unwrap(), BLOB], None));
    let out = ok(&boshctl(home.path(), &dir, &["upload-blobs"], emu));
    assert!(out.contains("Uploaded 1 blob(s)"), "{out}");
    let id = object_id(&dir, BLOB).expect("object_id recorded");
    assert_eq!(id.len(), 36, "a uuid: {id}");
    let stored = gcs.object(BUCKET, &id).await.unwrap().expect("the object is in the bucket");
    assert!(stored == content, "the bucket holds the blob's bytes");

    // A fresh checkout syncs the blob from the bucket.
    let home2 = tempfile::tempdir().unwrap();
    let clone = home2.path().join("release");
    fresh_copy(&dir, &clone);
    assert!(!clone.join("blobs").exists());
    let out = ok(&boshctl(home2.path(), &clone, &["sync-blobs"], emu));
    assert!(out.contains("Synced 1 blob(s)"), "{out}");
    assert!(std::fs::read(clone.join("blobs").join(BLOB)).unwrap() == content);
    let out = ok(&boshctl(home2.path(), &clone, &["create-release", "--force"], emu));
    assert!(out.contains("gcsrel"), "{out}");

    // Anonymous reads of the same objects; uploads refused.
    let home3 = tempfile::tempdir().unwrap();
    let anon = home3.path().join("release");
    fresh_copy(&dir, &anon);
    std::fs::write(
        anon.join("config/private.yml"),
        "---\nblobstore:\n  options:\n    credentials_source: none\n",
    )
    .unwrap();
    ok(&boshctl(home3.path(), &anon, &["sync-blobs"], emu));
    assert!(std::fs::read(anon.join("blobs").join(BLOB)).unwrap() == content);
    let other = home3.path().join("other.bin");
    std::fs::write(&other, b"more").unwrap();
    ok(&boshctl(
        home3.path(),
        &anon,
        &["add-blob", other.to_str().unwrap(), "app/other.bin"],
        None,
    ));
    let err = failed(&boshctl(home3.path(), &anon, &["upload-blobs"], emu));
    assert!(
        err.contains("config/final.yml: blobstore.options.credentials_source: is none"),
        "{err}"
    );
    assert!(err.contains("json_key"), "says what would work: {err}");
    assert_eq!(object_id(&anon, "app/other.bin"), None, "nothing recorded");

    // Someone replaces the object in the bucket.
    gcs.put_object(BUCKET, &id, b"not the blob").await.unwrap();
    std::fs::remove_dir_all(clone.join("blobs")).unwrap();
    let err = failed(&boshctl(home2.path(), &clone, &["sync-blobs"], emu));
    let sha = read_blobs(&clone).unwrap()[BLOB].sha.clone();
    assert!(err.contains(&format!("blobs/{BLOB}")), "{err}");
    assert!(err.contains(&id), "{err}");
    assert!(err.contains(&sha), "names the expected digest: {err}");
    assert!(err.contains(&format!("found {}", sha256_digest(b"not the blob"))), "{err}");
    assert_eq!(leftovers(&clone), Vec::<PathBuf>::new(), "nothing is left behind");
    let pem_line = pem.lines().nth(1).unwrap();
    assert!(!err.contains(pem_line), "no key in errors: {err}");
}

/// Job and package digests of a release tarball, by name.
fn digests(tarball: &Path) -> Vec<(String, String)> {
    let scratch = tempfile::tempdir().unwrap();
    let ar = read_release_tarball(tarball, &scratch.path().join("r"), &Default::default()).unwrap();
    let m = &ar.manifest;
    let jobs = m.jobs.iter().map(|j| (format!("jobs/{}", j.name), j.sha1.clone()));
    jobs.chain(m.packages.iter().map(|p| (format!("packages/{}", p.name), p.sha1.clone())))
        .collect()
}

/// `create-release --final` with gcs (and a storage class) stores each job
/// and package build in the bucket under a fresh id recorded in
/// `.final_builds`, with the storage class; a fresh checkout with an empty
/// cache writes that final version's tarball from the bucket, byte for
/// byte; a replaced build object is refused naming the build.
#[tokio::test]
async fn final_builds_go_through_gcs_and_come_back_on_a_fresh_checkout() {
    let gcs = GcsEmulator::start().await.unwrap();
    gcs.create_bucket(BUCKET).await.unwrap();
    let host = gcs.host();
    let emu = Some(host.as_str());
    let home = tempfile::tempdir().unwrap();
    let dir = release(home.path(), BUCKET, "    storage_class: NEARLINE\n");
    let (key, _) = json_key("https://oauth2.googleapis.com/token");
    private_yml(&dir, &key);
    ok(&boshctl(home.path(), &dir, &["generate-job", "web"], None));
    std::fs::write(
        dir.join("jobs/web/spec"),
        "---\nname: web\ntemplates: {ctl.erb: bin/ctl}\npackages: [app]\nproperties: {}\n",
    )
    .unwrap();
    std::fs::write(dir.join("jobs/web/templates/ctl.erb"), "#!/bin/bash\nexec app\n").unwrap();
    let src = home.path().join("blob.bin");
    std::fs::write(&src, awkward_bytes()).unwrap();
    ok(&boshctl(home.path(), &dir, &["add-blob", src.to_str().unwrap(), BLOB], None));
    ok(&boshctl(home.path(), &dir, &["upload-blobs"], emu));
    let blob_id = object_id(&dir, BLOB).unwrap();
    let meta = gcs.metadata(BUCKET, &blob_id).await.unwrap();
    assert_eq!(meta["storageClass"], "NEARLINE", "multipart upload carries the class: {meta}");
    assert!(gcs.object(BUCKET, &blob_id).await.unwrap().unwrap() == awkward_bytes());

    let first = home.path().join("first.tgz");
    let out = ok(&boshctl(
        home.path(),
        &dir,
        &["create-release", "--final", "--force", "--tarball", first.to_str().unwrap()],
        emu,
    ));
    assert!(out.contains("gcsrel"), "{out}");
    let first_digests = digests(&first);
    assert_eq!(first_digests.len(), 2, "{first_digests:?}");
    for (build, sha) in &first_digests {
        let entry = final_build(&dir, build);
        assert_eq!(&entry.sha1, sha, "{build}: the index records the tarball's digest");
        let id = entry.blobstore_id.unwrap_or_else(|| panic!("{build}: no blobstore_id"));
        let stored = gcs.object(BUCKET, &id).await.unwrap().expect("in the bucket");
        assert_eq!(&sha256_digest(&stored), sha, "{build}: the bucket holds the build");
    }

    let home2 = tempfile::tempdir().unwrap();
    let clone = home2.path().join("release");
    fresh_copy(&dir, &clone);
    let again = home2.path().join("again.tgz");
    let recorded = clone.join("releases/gcsrel/gcsrel-1.yml");
    ok(&boshctl(
        home2.path(),
        &clone,
        &["create-release", recorded.to_str().unwrap(), "--tarball", again.to_str().unwrap()],
        emu,
    ));
    assert_eq!(digests(&again), first_digests, "the same builds, byte for byte");

    let pkg = final_build(&dir, "packages/app");
    let pkg_id = pkg.blobstore_id.clone().unwrap();
    gcs.put_object(BUCKET, &pkg_id, b"not the package").await.unwrap();
    let home3 = tempfile::tempdir().unwrap();
    let clone3 = home3.path().join("release");
    fresh_copy(&dir, &clone3);
    let err = failed(&boshctl(home3.path(), &clone3, &["create-release", "--force"], emu));
    assert!(err.contains(".final_builds/packages/app"), "names the build: {err}");
    assert!(err.contains(&pkg_id), "names the object: {err}");
    assert!(err.contains(&pkg.sha1), "names the expected digest: {err}");
}

/// Wrong options are named by file and option before any request; a
/// missing bucket and a missing object say so; a token endpoint that
/// refuses names itself and the account, never the key.
#[tokio::test]
async fn bad_options_missing_objects_and_refused_tokens_are_named() {
    let gcs = GcsEmulator::start().await.unwrap();
    gcs.create_bucket(BUCKET).await.unwrap();
    let host = gcs.host();
    let emu = Some(host.as_str());
    let home = tempfile::tempdir().unwrap();
    let dir = release(home.path(), BUCKET, "");
    let src = home.path().join("blob.bin");
    std::fs::write(&src, b"some bytes").unwrap();
    ok(&boshctl(home.path(), &dir, &["add-blob", src.to_str().unwrap(), BLOB], None));

    // No bucket_name.
    std::fs::write(
        dir.join("config/final.yml"),
        "---\nname: gcsrel\nblobstore:\n  provider: gcs\n  options: {}\n",
    )
    .unwrap();
    let err = failed(&boshctl(home.path(), &dir, &["upload-blobs"], emu));
    assert!(
        err.contains(
            "config/final.yml: blobstore.options.bucket_name: is required for provider gcs"
        ),
        "{err}"
    );

    // static without json_key; json_key that is not JSON; an unknown source;
    // a short encryption key; ADC with none to be found.
    std::fs::write(
        dir.join("config/final.yml"),
        format!("---\nname: gcsrel\nblobstore:\n  provider: gcs\n  options:\n    bucket_name: {BUCKET}\n"),
    )
    .unwrap();
    let cases = [
        (
            "credentials_source: static\n",
            "config/private.yml: blobstore.options.json_key: is required with credentials_source: static",
        ),
        (
            "json_key: \"{not json\"\n",
            "config/private.yml: blobstore.options.json_key: expected a service account's JSON key, not valid JSON",
        ),
        (
            "credentials_source: iam\n",
            "config/final.yml: blobstore.options.credentials_source: 'iam' is not one of static, none, application_default",
        ),
        (
            "encryption_key: c2hvcnQ=\n",
            "config/private.yml: blobstore.options.encryption_key: expected base64 of a 32-byte AES-256 key, got 5 bytes",
        ),
        (
            "credentials_source: application_default\n",
            "application_default: GOOGLE_APPLICATION_CREDENTIALS is not set",
        ),
    ];
    for (opt, want) in cases {
        std::fs::write(
            dir.join("config/private.yml"),
            format!("---\nblobstore:\n  options:\n    {opt}"),
        )
        .unwrap();
        let err = failed(&boshctl(home.path(), &dir, &["upload-blobs"], emu));
        assert!(err.contains(want), "{opt}: {err}");
        assert_eq!(object_id(&dir, BLOB), None, "nothing recorded");
    }

    // A bucket that does not exist: the upload is refused, nothing recorded.
    let (key, _) = json_key("https://oauth2.googleapis.com/token");
    let missing = release(&home.path().join("missing"), "no-such-bucket", "");
    private_yml(&missing, &key);
    ok(&boshctl(home.path(), &missing, &["add-blob", src.to_str().unwrap(), BLOB], None));
    let err = failed(&boshctl(home.path(), &missing, &["upload-blobs"], emu));
    assert!(err.contains("gcs bucket 'no-such-bucket'") && err.contains("HTTP 404"), "{err}");
    assert_eq!(object_id(&missing, BLOB), None);

    // An object id the bucket does not have.
    std::fs::write(
        dir.join("config/blobs.yml"),
        format!("{BLOB}:\n  size: 10\n  object_id: 0f0e-id\n  sha: sha256:00\n"),
    )
    .unwrap();
    std::fs::remove_file(dir.join("config/private.yml")).unwrap();
    std::fs::remove_dir_all(dir.join("blobs")).unwrap();
    let err = failed(&boshctl(home.path(), &dir, &["sync-blobs"], emu));
    assert!(err.contains("object '0f0e-id' is not in the blobstore"), "{err}");

    // A token endpoint that refuses (the emulator has none): no request
    // leaves loopback, since the token comes first.
    let (key, pem) = json_key(&format!("http://{host}/token"));
    private_yml(&dir, &key);
    let err = failed(&boshctl(home.path(), &dir, &["sync-blobs"], None));
    assert!(
        err.contains(&format!(
            "gcs: getting an access token for service account {EMAIL} from http://{host}/token: HTTP "
        )),
        "{err}"
    );
    let pem_line = pem.lines().nth(1).unwrap();
    assert!(!err.contains(pem_line) && !err.contains("PRIVATE KEY"), "no key in errors: {err}");

    // application_default reads GOOGLE_APPLICATION_CREDENTIALS's key file
    // and asks that key's token endpoint.
    let adc = home.path().join("adc.json");
    std::fs::write(&adc, &key).unwrap();
    std::fs::write(
        dir.join("config/private.yml"),
        "---\nblobstore:\n  options:\n    credentials_source: application_default\n",
    )
    .unwrap();
    let err = failed(&boshctl_adc(home.path(), &dir, &["sync-blobs"], None, Some(&adc)));
    assert!(
        err.contains(&format!("service account {EMAIL} from http://{host}/token: HTTP ")),
        "{err}"
    );
    std::fs::write(&adc, "{\"type\": \"external_account\"}").unwrap();
    let err = failed(&boshctl_adc(home.path(), &dir, &["sync-blobs"], None, Some(&adc)));
    assert!(
        err.contains(&format!(
            "config/final.yml: blobstore.options.credentials_source: application_default: \
             GOOGLE_APPLICATION_CREDENTIALS file {}: type 'external_account' is not supported",
            adc.display()
        )),
        "{err}"
    );
}
