//! Release and stemcell uploads through the API: verified, stored as blobs,
//! pointed to by objects, and protected from deletion while in use.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bosh_api::objects::{DeploymentSpec, ReleaseSpec, StemcellSpec};
use bosh_api::release::stemcell::{StemcellManifest, write_stemcell};
use bosh_api::release::{CreateOptions, create_release};
use bosh_api::{Object, ObjectMeta};
use bosh_blobstore::Storage;
use bosh_controllers::api::{self, ApiState};
use serde_json::{Value, json};

use super::setup;

const TOKEN: &str = "t";

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// A minimal release directory: one job using one package.
fn release_dir(root: &Path) -> PathBuf {
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
    let (env, store) = setup().await;
    let storage: Arc<dyn Storage> = Arc::new(bosh_blobstore::LocalStorage::new(root.join("blobs")));
    let state =
        ApiState::new(store.clone(), TOKEN).with_blobstore(storage.clone(), root.join("scratch"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(api::serve(listener, api::router(Arc::new(state)), std::future::pending()));
    (env, store, url, storage)
}

async fn post_file(url: &str, path: &Path) -> reqwest::Response {
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
