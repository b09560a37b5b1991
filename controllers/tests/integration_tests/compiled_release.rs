//! Compiled releases, as BOSH has them: `upload-release` of a tarball with
//! `compiled_packages` stores them in the compile cache under the
//! compiler's keys, so a deployment on that stemcell compiles nothing,
//! while one on another stemcell is refused before any VM; bad tarballs
//! are refused before anything is written; and the whole round trip
//! (deploy, export, delete everything, upload the export, deploy) creates
//! no compile VM the second time.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use bosh_api::objects::{
    CompiledPackageSpec, DeploymentSpec, ReleaseSpec, TaskChange, TaskState, compile_key,
};
use bosh_api::release::manifest::CompiledPackageRef;
use bosh_api::release::{CreateOptions, ReleaseManifest, create_release, file_digest};
use bosh_api::store::Store;
use bosh_api::{Object, archive::TgzWriter};
use bosh_controllers::server::api::UploadLimits;
use bosh_test_utils::eventually;

use super::compile::example_release;
use super::deploy::{DeployHarness, greeting, manifest, world};
use super::uploads::{post_file, start_with};

/// Builds the example release (`hello`, needing `hello-lib`) into a
/// source tarball.
fn source_tarball(root: &Path) -> PathBuf {
    let dir = example_release(root);
    let tarball = root.join("hello.tgz");
    let opts = CreateOptions {
        tarball: Some(tarball.clone()),
        force: true,
        cache_dir: root.join("cache"),
        ..Default::default()
    };
    create_release(&dir, &opts).unwrap();
    tarball
}

/// A compiled release made from a source tarball: its packages' tarballs
/// become `compiled_packages` for `stemcell` (uploads do not look inside
/// them), after `edit` has changed the manifest.
fn compiled_from(
    source: &Path,
    stemcell: &str,
    dest: &Path,
    edit: impl FnOnce(&mut ReleaseManifest),
) -> ReleaseManifest {
    let unpacked = dest.with_extension("unpacked");
    bosh_api::archive::unpack_tgz_file(source, &unpacked, &Default::default(), "source").unwrap();
    let text = std::fs::read_to_string(unpacked.join("release.MF")).unwrap();
    let mut m = ReleaseManifest::parse(&text, "release.MF").unwrap();
    let mut w = TgzWriter::new();
    for j in &m.jobs {
        let name = format!("jobs/{}.tgz", j.name);
        w.file(&name, &unpacked.join(&name)).unwrap();
    }
    for (i, p) in std::mem::take(&mut m.packages).into_iter().enumerate() {
        let tgz = unpacked.join(format!("packages/{}.tgz", p.name));
        w.file(&format!("compiled_packages/{}.tgz", p.name), &tgz).unwrap();
        // Both digest forms BOSH accepts: bare sha1 hex (older CLIs), then
        // `sha256:<hex>`.
        let sha1 = match i {
            0 => bosh_api::release::file_digest_hex::<sha1::Sha1>(&tgz).unwrap(),
            _ => file_digest(&tgz).unwrap(),
        };
        m.compiled_packages.push(CompiledPackageRef {
            name: p.name,
            version: p.version,
            fingerprint: p.fingerprint,
            sha1,
            stemcell: stemcell.into(),
            dependencies: p.dependencies,
        });
    }
    m.license = None;
    edit(&mut m);
    w.bytes("release.MF", m.to_yaml().unwrap().into_bytes(), false);
    w.write_to_path(dest).unwrap();
    m
}

/// The compiled packages in the store, by key.
async fn cache(store: &Store) -> BTreeMap<String, CompiledPackageSpec> {
    let items = store.list::<CompiledPackageSpec>("").await.unwrap().items;
    items.into_iter().map(|o| (o.metadata.name, o.spec)).collect()
}

/// The compile keys a release's packages have on `os`/`version`, as the
/// compiler names them: `hello-lib` alone, `hello` with `hello-lib`'s key.
fn expected_keys(release: &ReleaseSpec, os: &str, version: &str) -> BTreeMap<String, String> {
    let fp = |n: &str| release.packages.iter().find(|p| p.name == n).unwrap().fingerprint.clone();
    let lib = compile_key(&fp("hello-lib"), os, version, &[]);
    let hello = compile_key(&fp("hello"), os, version, &[&lib]);
    BTreeMap::from([("hello".to_string(), hello), ("hello-lib".to_string(), lib)])
}

/// A compiled release uploads to a Release without sources, compiled for
/// its stemcell, and to CompiledPackage objects under the compiler's keys
/// whose blobs are the tarball's; the same tarball again writes nothing;
/// one for a second stemcell adds its packages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compiled_release_uploads_to_the_compile_cache_and_merges_per_stemcell() {
    let tmp = tempfile::tempdir().unwrap();
    let (_env, store, url, storage) = start_with(tmp.path(), UploadLimits::default()).await;
    let source = source_tarball(tmp.path());
    let t1 = tmp.path().join("hello-u1.tgz");
    let mf = compiled_from(&source, "ubuntu-jammy/1.5", &t1, |_| {});
    let uploads = format!("{url}/v1/uploads/releases");
    let r = post_file(&uploads, &t1).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let name = format!("hello/{}", mf.version);
    let rel: Object<ReleaseSpec> = store.get(None, &name).await.unwrap();
    assert_eq!(rel.spec.packages.len(), 2);
    for p in &rel.spec.packages {
        assert!(p.blob.is_none(), "a compiled release has no sources: {p:?}");
        assert_eq!(p.compiled_for, ["ubuntu-jammy/1.5"]);
    }
    assert_eq!(rel.spec.compiled_only_for(), ["ubuntu-jammy/1.5"]);
    assert!(rel.spec.jobs.iter().all(|j| j.blob.is_some()), "jobs are stored");

    let keys = expected_keys(&rel.spec, "ubuntu-jammy", "1.5");
    let cached = cache(&store).await;
    assert_eq!(cached.keys().collect::<BTreeSet<_>>(), keys.values().collect::<BTreeSet<_>>());
    for cp in &mf.compiled_packages {
        let c = &cached[&keys[&cp.name]];
        assert_eq!(
            (c.package.as_str(), c.fingerprint.as_str()),
            (cp.name.as_str(), cp.fingerprint.as_str())
        );
        assert_eq!(c.release, name, "traces to the release version");
        assert_eq!((c.stemcell_os.as_str(), c.stemcell_version.as_str()), ("ubuntu-jammy", "1.5"));
        let blob = c.blob.as_ref().expect("the uploaded blob");
        let tgz = t1.with_extension("unpacked").join(format!("packages/{}.tgz", cp.name));
        let digest = format!("sha256:{}", blob.sha256);
        assert_eq!(digest, file_digest(&tgz).unwrap(), "the tarball's bytes ({})", cp.sha1);
        assert!(storage.exists(&blob.sha256).await.unwrap());
    }
    assert_eq!(
        cached[&keys["hello"]].dependencies,
        BTreeMap::from([("hello-lib".into(), keys["hello-lib"].clone())])
    );

    // The same tarball again: answered "already uploaded", nothing written.
    let rev = store.revision().await.unwrap();
    let r = post_file(&uploads, &t1).await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("already"));
    assert_eq!(store.revision().await.unwrap(), rev, "a re-upload writes nothing");

    // The same version compiled for another stemcell adds its packages.
    let t2 = tmp.path().join("hello-u2.tgz");
    compiled_from(&source, "ubuntu-jammy/2.0", &t2, |_| {});
    let r = post_file(&uploads, &t2).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let rel: Object<ReleaseSpec> = store.get(None, &name).await.unwrap();
    assert!(
        rel.spec
            .packages
            .iter()
            .all(|p| p.compiled_for == ["ubuntu-jammy/1.5", "ubuntu-jammy/2.0"])
    );
    let cached = cache(&store).await;
    assert_eq!(cached.len(), 4);
    for k in expected_keys(&rel.spec, "ubuntu-jammy", "2.0").values() {
        assert_eq!(cached[k].stemcell_version, "2.0");
    }

    // The sources fill in what the compiled tarballs lacked.
    let r = post_file(&uploads, &source).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let rel: Object<ReleaseSpec> = store.get(None, &name).await.unwrap();
    assert!(rel.spec.packages.iter().all(|p| p.blob.is_some()), "{:?}", rel.spec.packages);
    assert!(rel.spec.compiled_only_for().is_empty());
}

/// A compiled package whose tgz does not match its digest, a dependency
/// not in the release, a stemcell that is not `os/version`: each is
/// refused (422) naming the file and the path inside release.MF, and
/// nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_compiled_releases_are_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let (_env, store, url, storage) = start_with(tmp.path(), UploadLimits::default()).await;
    let source = source_tarball(tmp.path());
    let uploads = format!("{url}/v1/uploads/releases");
    let rev = store.revision().await.unwrap();
    let blobs = storage.list().await.unwrap();
    type Edit = fn(&mut ReleaseManifest);
    let cases: [(&str, Edit, &[&str]); 3] = [
        (
            "digest",
            |m| m.compiled_packages[1].sha1 = format!("sha256:{}", "0".repeat(64)),
            &[
                "compiled_packages/hello-lib.tgz: digest mismatch",
                "release.MF: compiled_packages[1].sha1",
            ],
        ),
        (
            "dependency",
            |m| m.compiled_packages[0].dependencies.push("ghost".into()),
            &[
                "release.MF: compiled_packages[0].dependencies[1]",
                "package 'ghost' is not in the release",
            ],
        ),
        (
            "stemcell",
            |m| m.compiled_packages[0].stemcell = "ubuntu-jammy".into(),
            &["release.MF: compiled_packages[0].stemcell", "expected OS/VERSION"],
        ),
    ];
    for (name, edit, wants) in cases {
        let t = tmp.path().join(format!("{name}.tgz"));
        let m = compiled_from(&source, "ubuntu-jammy/1.5", &t, edit);
        assert_eq!(m.compiled_packages.len(), 2);
        let r = post_file(&uploads, &t).await;
        assert_eq!(r.status(), 422, "{name}");
        let body = r.text().await.unwrap();
        for want in wants {
            assert!(body.contains(want), "{name}: {want:?} not in {body}");
        }
    }
    assert_eq!(store.revision().await.unwrap(), rev, "no object was written");
    assert_eq!(storage.list().await.unwrap(), blobs, "no blob was stored");
}

/// Round trip as a user: deploy (compiles on compile VMs), export-release
/// for the stemcell, delete the deployment, the release and the compile
/// cache, upload the export and deploy again: no compile VM, the instance
/// runs the job on the uploaded packages, which trace to the release
/// version and its fingerprints. A deployment on another stemcell is then
/// refused before any VM, naming the package and its stemcell.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exported_compiled_release_deploys_again_without_compiling() {
    let h = world().await;
    let tmp = tempfile::tempdir().unwrap();
    h.upload_release(&example_release(tmp.path())).await.unwrap();
    h.upload_stemcell().await.unwrap();
    let release = h.store.list::<ReleaseSpec>("hello/").await.unwrap().items.remove(0);
    let name = release.metadata.name.clone();

    let start = Instant::now();
    let t = h.apply("first", manifest("first", 1, "compiled here", 0)).await;
    let (state, result) = h.task_end(t).await;
    assert_eq!(state, TaskState::Done, "{result}");
    let first_vms = h.cpi.created.lock().unwrap().len();
    assert_eq!(first_vms, 3, "two compile VMs and the instance's");
    println!("deployed with 2 compiles in {:?}", start.elapsed());
    let compiled_here = cache(&h.store).await;
    assert_eq!(compiled_here.len(), 2);

    let export = tmp.path().join("hello-local-1.tgz");
    h.export_release(&name, "local/1", &export).await.unwrap();

    // Delete the deployment, then the release (only its object goes), then
    // the compile cache and its blobs: nothing compiled is left.
    let t = h.change_with("first", TaskChange::Delete, |_| {}).await;
    h.store.delete::<DeploymentSpec>(None, "first", None).await.unwrap();
    assert_eq!(h.task_end(t).await.0, TaskState::Done);
    let store = h.store.clone();
    eventually(super::DEADLINE, "the deployment to be gone", || {
        let store = store.clone();
        async move {
            store.try_get::<DeploymentSpec>(None, "first").await.unwrap().is_none().then_some(())
        }
    })
    .await
    .unwrap();
    h.delete_release(&name).await.unwrap();
    assert!(h.store.try_get::<ReleaseSpec>(None, &name).await.unwrap().is_none());
    assert_eq!(cache(&h.store).await.len(), 2, "delete-release keeps the compile cache");
    for (key, c) in &compiled_here {
        h.store.delete::<CompiledPackageSpec>(None, key, None).await.unwrap();
        h.director.blobs.delete(&c.blob.as_ref().unwrap().sha256).await.unwrap();
    }

    let uploaded = h.upload_release_tarball(&export).await.unwrap();
    assert!(matches!(uploaded, bosh_api::wire::ReleaseUpload::Created(_)), "{uploaded:?}");
    let rel: Object<ReleaseSpec> = h.store.get(None, &name).await.unwrap();
    assert_eq!(rel.spec.compiled_only_for(), ["local/1"]);
    let keys = expected_keys(&rel.spec, "local", "1");
    let cached = cache(&h.store).await;
    assert_eq!(
        cached.keys().collect::<BTreeSet<_>>(),
        keys.values().collect::<BTreeSet<_>>(),
        "the compiler's keys"
    );
    for (key, c) in &cached {
        let p = rel.spec.packages.iter().find(|p| p.name == c.package).unwrap();
        assert_eq!(c.fingerprint, p.fingerprint, "traces to the release's fingerprint");
        assert_eq!(c.release, name, "traces to the release version");
        let blob = c.blob.as_ref().unwrap();
        assert_eq!(blob, compiled_here[key].blob.as_ref().unwrap(), "the exported bytes");
        assert!(h.director.blobs.exists(&blob.sha256).await.unwrap());
    }

    let start = Instant::now();
    let t = h.apply("second", manifest("second", 1, "from the export", 0)).await;
    let (state, result) = h.task_end(t).await;
    assert_eq!(state, TaskState::Done, "{result}");
    println!("deployed from the compiled release in {:?}", start.elapsed());
    assert_eq!(
        h.cpi.created.lock().unwrap().len(),
        first_vms + 1,
        "the instance's VM only, no compile VM"
    );
    assert!(
        h.events(t).await.iter().all(|e| e.stage != "Compiling packages"),
        "nothing was compiled"
    );
    let instances = h.instances("second").await;
    assert_eq!(instances.len(), 1);
    let ip = instances[0].spec.networks[0].ip.clone();
    let body = greeting(&ip).await.unwrap_or_default();
    assert!(body.contains("from the export"), "{ip} answered {body:?}");
    let used: Vec<&str> =
        instances[0].spec.packages.iter().map(|p| p.compile_key.as_str()).collect();
    assert_eq!(
        used,
        keys.values().map(String::as_str).collect::<Vec<_>>(),
        "the uploaded packages run"
    );

    // Another stemcell: refused before any VM, naming package and stemcell.
    h.upload_stemcell_version("2").await.unwrap();
    let mut m = manifest("third", 1, "nowhere", 0);
    m["stemcells"][0]["version"] = "2".into();
    let t = h.apply("third", m).await;
    let (state, result) = h.task_end(t).await;
    assert_eq!(state, TaskState::Error, "{result}");
    for want in [
        format!("can't use release {name} on stemcell local/2"),
        "no source for package".into(),
        "hello-lib (compiled for local/1 only)".into(),
    ] {
        assert!(result.contains(&want), "{want:?} not in {result:?}");
    }
    assert_eq!(h.cpi.created.lock().unwrap().len(), first_vms + 1, "no VM for the refused deploy");
    h.stop().await.unwrap();
}
