//! Release and stemcell uploads through the API: verified, stored as blobs,
//! pointed to by objects, and protected from deletion while in use.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bosh_api::objects::{DeploymentSpec, ReleaseSpec, StemcellSpec};
use bosh_api::release::stemcell::{StemcellManifest, write_stemcell};
use bosh_api::release::{CreateOptions, create_release};
use bosh_api::{Object, ObjectMeta};
use bosh_blobstore::Storage;
use bosh_controllers::server::api::{self, ApiState, UploadLimits};
use serde_json::{Value, json};

use super::setup;

const TOKEN: &str = "t";

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// A minimal release directory: one job using one package.
pub(super) fn release_dir(root: &Path) -> PathBuf {
    let dir = root.join("app-release");
    write(&dir, "config/final.yml", "name: app\n");
    write(
        &dir,
        "jobs/web/spec",
        "---\nname: web\ntemplates: {ctl.erb: bin/ctl}\npackages: [app]\nproperties: {}\n",
    );
    write(&dir, "jobs/web/monit", "check process web\n");
    write(&dir, "jobs/web/templates/ctl.erb", "#!/bin/sh\nexec /var/vcap/packages/app/bin/app\n");
    write(&dir, "packages/app/spec", "---\nname: app\nfiles: [app/**/*]\n");
    write(&dir, "packages/app/packaging", "cp -a app/* ${BOSH_INSTALL_TARGET}/\n");
    write(&dir, "src/app/bin/app", "#!/bin/sh\necho hi\n");
    dir
}

async fn start(
    root: &Path,
) -> (bosh_test_utils::TestEnv, bosh_api::store::Store, String, Arc<dyn Storage>) {
    start_with(root, UploadLimits::default()).await
}

/// etcd and the API alone (no controllers), with a blobstore under
/// `root/blobs`, upload scratch under `root/scratch` and upload caps `limits`.
pub(super) async fn start_with(
    root: &Path,
    limits: UploadLimits,
) -> (bosh_test_utils::TestEnv, bosh_api::store::Store, String, Arc<dyn Storage>) {
    let (env, store) = setup().await;
    let storage: Arc<dyn Storage> = Arc::new(bosh_blobstore::LocalStorage::new(root.join("blobs")));
    let state = ApiState::new(store.clone(), TOKEN)
        .with_blobstore(storage.clone(), root.join("scratch"))
        .with_upload_limits(limits);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(api::serve(listener, api::router(Arc::new(state)), std::future::pending()));
    (env, store, url, storage)
}

/// POSTs the file at `path` to `url` with the API token.
pub(super) async fn post_file(url: &str, path: &Path) -> reqwest::Response {
    reqwest::Client::new()
        .post(url)
        .bearer_auth(TOKEN)
        .body(std::fs::read(path).unwrap())
        .send()
        .await
        .unwrap()
}

/// Upload, inspect and delete a release; a garbage tarball stores nothing; a used release cannot be deleted.
#[tokio::test]
async fn release_upload_inspect_delete_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let (_env, store, url, storage) = start(tmp.path()).await;
    let dir = release_dir(tmp.path());
    let tarball = tmp.path().join("app.tgz");
    let created = create_release(
        &dir,
        &CreateOptions {
            tarball: Some(tarball.clone()),
            force: true,
            cache_dir: tmp.path().join("cache"),
            ..Default::default()
        },
    )
    .unwrap();
    let version = created.manifest.version.clone();
    let name = format!("app/{version}");

    let garbage = tmp.path().join("garbage.tgz");
    std::fs::write(&garbage, b"not a tarball").unwrap();
    let r = post_file(&format!("{url}/v1/uploads/releases"), &garbage).await;
    assert_eq!(r.status(), 422);
    assert!(
        store.list::<ReleaseSpec>("").await.unwrap().items.is_empty(),
        "a refused upload stores nothing"
    );

    let r = post_file(&format!("{url}/v1/uploads/releases"), &tarball).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let rel: Object<ReleaseSpec> = store.get(None, &name).await.unwrap();
    assert_eq!(rel.spec.jobs.len(), 1);
    assert_eq!(rel.spec.jobs[0].fingerprint, created.manifest.jobs[0].fingerprint);
    assert_eq!(rel.spec.packages[0].name, "app");
    for blob in
        rel.spec.jobs.iter().map(|j| &j.blob).chain(rel.spec.packages.iter().map(|p| &p.blob))
    {
        let b = blob.as_ref().unwrap();
        assert!(storage.exists(&b.sha256).await.unwrap(), "blob {} must be stored", b.sha256);
    }
    let r = post_file(&format!("{url}/v1/uploads/releases"), &tarball).await;
    assert_eq!(r.status(), 200, "a second upload is a no-op");

    // In use by a deployment: refused, naming it.
    let manifest = json!({"name": "web", "releases": [{"name": "app", "version": "latest"}]});
    store
        .create(&Object::new(
            ObjectMeta::named("web"),
            DeploymentSpec { manifest, ..Default::default() },
        ))
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let r =
        http.delete(format!("{url}/v1/releases/{name}")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 409);
    let body: Value = r.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("web"), "{body}");
    store.delete::<DeploymentSpec>(None, "web", None).await.unwrap();
    let r =
        http.delete(format!("{url}/v1/releases/{name}")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(store.try_get::<ReleaseSpec>(None, &name).await.unwrap().is_none());
}

/// A stemcell upload stores the image as a blob and a Stemcell object; a tampered one is refused.
#[tokio::test]
async fn stemcell_upload_and_tamper_refusal() {
    let tmp = tempfile::tempdir().unwrap();
    let (_env, store, url, storage) = start(tmp.path()).await;
    let image = tmp.path().join("image");
    std::fs::write(&image, b"an image").unwrap();
    let mf = StemcellManifest {
        name: "bosh-local".into(),
        version: "1.5".into(),
        operating_system: "ubuntu-jammy".into(),
        api_version: Some(3),
        ..Default::default()
    };
    let tarball = tmp.path().join("stemcell.tgz");
    write_stemcell(&tarball, &mf, &image, None).unwrap();
    let r = post_file(&format!("{url}/v1/uploads/stemcells"), &tarball).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let sc: Object<StemcellSpec> = store.get(None, "bosh-local/1.5").await.unwrap();
    assert_eq!(sc.spec.operating_system, "ubuntu-jammy");
    assert!(storage.exists(&sc.spec.image.unwrap().sha256).await.unwrap());

    // The manifest's image digest no longer matches: refused, nothing stored.
    let mut bad = mf.clone();
    bad.version = "2".into();
    let bad_tar = tmp.path().join("bad.tgz");
    write_stemcell(&bad_tar, &bad, &image, None).unwrap();
    let unpacked = tmp.path().join("bad-unpacked");
    std::fs::create_dir_all(&unpacked).unwrap();
    bosh_api::archive::unpack_tgz_file(&bad_tar, &unpacked.join("x"), &Default::default(), "bad")
        .unwrap();
    std::fs::write(unpacked.join("x/image"), b"another image").unwrap();
    let mut w = bosh_api::archive::TgzWriter::new();
    w.add_dir_contents(&unpacked.join("x")).unwrap();
    w.write_to_path(&bad_tar).unwrap();
    let r = post_file(&format!("{url}/v1/uploads/stemcells"), &bad_tar).await;
    assert_eq!(r.status(), 422, "{}", r.text().await.unwrap());
    assert!(store.try_get::<StemcellSpec>(None, "bosh-local/2").await.unwrap().is_none());
}

/// A small gzip that expands past the (lowered) unpacked-bytes cap is
/// refused with the cap, its value and the flag, and its expansion is not
/// left on disk (issue 12, item 8).
#[tokio::test]
async fn a_gzip_bomb_is_refused_at_the_unpacked_bytes_cap() {
    let tmp = tempfile::tempdir().unwrap();
    let limits = UploadLimits { max_unpacked_bytes: 1 << 20, ..UploadLimits::default() };
    let (_env, store, url, _) = start_with(tmp.path(), limits).await;
    let image = tmp.path().join("image");
    std::fs::write(&image, vec![0u8; 16 << 20]).unwrap();
    let mf = StemcellManifest {
        name: "bomb".into(),
        version: "1".into(),
        operating_system: "ubuntu-jammy".into(),
        ..Default::default()
    };
    let tarball = tmp.path().join("bomb.tgz");
    write_stemcell(&tarball, &mf, &image, None).unwrap();
    assert!(std::fs::metadata(&tarball).unwrap().len() < 100 << 10, "compresses like a bomb");

    let r = post_file(&format!("{url}/v1/uploads/stemcells"), &tarball).await;
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.unwrap();
    let details = body["details"].to_string();
    assert!(details.contains("1048576 bytes"), "{body}");
    assert!(details.contains("--max-upload-unpacked-bytes"), "{body}");
    assert!(store.try_get::<StemcellSpec>(None, "bomb/1").await.unwrap().is_none());
    let left = files_under(&tmp.path().join("scratch"));
    assert!(left.is_empty(), "nothing of the upload is left in scratch: {left:?}");
}

/// Beyond the concurrency cap an upload is answered 503 naming the cap and
/// its flag, before its body is read; once the slot frees, uploads go on.
#[tokio::test]
async fn uploads_beyond_the_concurrency_cap_are_turned_away() {
    let tmp = tempfile::tempdir().unwrap();
    let limits = UploadLimits { max_concurrent: 1, ..UploadLimits::default() };
    let (_env, _store, url, _) = start_with(tmp.path(), limits).await;
    let uploads = format!("{url}/v1/uploads/releases");

    // An upload whose body stays open holds the only slot.
    let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Vec<u8>, std::io::Error>>();
    tx.unbounded_send(Ok(b"not yet a tarball".to_vec())).unwrap();
    let slow = tokio::spawn(
        reqwest::Client::new()
            .post(&uploads)
            .bearer_auth(TOKEN)
            .body(reqwest::Body::wrap_stream(rx))
            .send(),
    );
    let garbage = tmp.path().join("garbage.tgz");
    std::fs::write(&garbage, b"not a tarball").unwrap();
    let busy = bosh_test_utils::eventually(super::DEADLINE, "an upload to be turned away", || {
        let (uploads, garbage) = (uploads.clone(), garbage.clone());
        async move {
            let r = post_file(&uploads, &garbage).await;
            (r.status() == 503).then_some(r)
        }
    })
    .await
    .unwrap();
    let body: Value = busy.json().await.unwrap();
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("at most 1") && error.contains("--max-concurrent-uploads"), "{body}");

    drop(tx);
    assert_eq!(slow.await.unwrap().unwrap().status(), 422, "the slow upload is verified");
    let r = post_file(&uploads, &garbage).await;
    assert_eq!(r.status(), 422, "the slot is free again");
}

/// Every file under `dir` (none if it does not exist).
pub(super) fn files_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out = Vec::new();
    for e in entries.map(|e| e.unwrap()) {
        if e.file_type().unwrap().is_dir() {
            out.extend(files_under(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}
