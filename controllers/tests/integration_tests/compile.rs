//! Stemcell import and package compilation on real local compile VMs: the
//! example release's `hello` (which depends on `hello-lib`) compiles, the
//! compile VMs go away, a second deployment hits the cache, and a failing
//! packaging script is reported with its exit code.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bosh_api::agent::NetworkSettings;
use bosh_api::meta::find_condition;
use bosh_api::objects::{
    CompileWorker, CompiledPackageSpec, DeploymentSpec, EventState, ReleaseSpec, StemcellSpec,
};
use bosh_api::objects::{ConditionType, Finalizer, Reason};
use bosh_api::{Condition, ConditionStatus, Object, ObjectMeta};
use bosh_controllers::testing::{Harness, HarnessOptions, TOKEN, WebManifest};
use bosh_controllers::world::cpi::{Cpi, CreateVm, VmNetwork};
use bosh_test_utils::eventually;

/// Compiling on fresh VMs takes seconds; give it room on a loaded machine.
const COMPILE_DEADLINE: Duration = Duration::from_secs(120);

/// A world with the stemcell and compilation controllers only.
async fn world(reuse: bool) -> Harness {
    let o = HarnessOptions {
        reuse_compile_vms: reuse,
        deploy: false,
        resync: Duration::from_secs(60),
        ..HarnessOptions::new()
    };
    Harness::start(o).await.unwrap()
}

/// What the compile tests do with a harness.
trait CompileHarness {
    async fn assert_compiled_contents(&self, scratch: &Path);
    async fn export(&self, release: &str, stemcell: &str) -> (u16, Vec<u8>);
    async fn deploy(&self, name: &str, release: &str, job: &str);
    async fn deploy_for_task(&self, name: &str, release: &str, job: &str, task: Option<u64>);
    async fn compiled_condition(&self, name: &str) -> Condition;
    async fn no_vm_left(&self);
}

impl CompileHarness for Harness {
    /// Every compiled package holds what its packaging script installed:
    /// hello a `bin/hello`, hello-lib a `lib/python` tree.
    async fn assert_compiled_contents(&self, scratch: &Path) {
        let compiled = self.store.list::<CompiledPackageSpec>("").await.unwrap().items;
        for o in compiled {
            let expect = if o.spec.package == "hello" { "bin/hello" } else { "lib/python" };
            let blob = o.spec.blob.as_ref().expect("compiled");
            let (mut r, _) = self.director.blobs.get(&blob.sha256).await.unwrap();
            let mut bytes = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut r, &mut bytes).await.unwrap();
            let dest = scratch.join(format!("unpacked-{}", o.metadata.name));
            let files =
                bosh_api::archive::unpack_tgz(&bytes[..], &dest, &Default::default(), "compiled")
                    .unwrap();
            assert!(
                files.iter().any(|f| f.to_string_lossy().starts_with(expect)),
                "{} compiled to {files:?}",
                o.spec.package
            );
        }
    }

    /// Asks the API for a compiled release; returns the status and body.
    async fn export(&self, release: &str, stemcell: &str) -> (u16, Vec<u8>) {
        let r = reqwest::Client::new()
            .post(format!("{}/v1/exports/releases", self.api_url))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({"release": release, "stemcell": stemcell}))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
    }

    async fn deploy(&self, name: &str, release: &str, job: &str) {
        self.deploy_for_task(name, release, job, None).await
    }

    /// Writes a deployment whose compiles are recorded in `task`'s events.
    async fn deploy_for_task(&self, name: &str, release: &str, job: &str, task: Option<u64>) {
        let mut m = WebManifest::job(name, release, job);
        (m.max_in_flight, m.watch_time) = (1, 1000.into());
        let d = Object::new(
            ObjectMeta::named(name),
            DeploymentSpec { manifest: m.value(), task, ..Default::default() },
        );
        self.store.create(&d).await.unwrap();
    }

    async fn compiled_condition(&self, name: &str) -> Condition {
        self.packages_compiled(name, COMPILE_DEADLINE).await.unwrap()
    }

    async fn no_vm_left(&self) {
        let created = self.cpi.created.lock().unwrap().clone();
        for cid in created {
            let cpi = self.cpi.clone();
            eventually(super::DEADLINE, &format!("compile VM {cid} to be deleted"), || {
                let (cpi, cid) = (cpi.clone(), cid.clone());
                async move { (!cpi.has_vm(&cid).await.unwrap()).then_some(()) }
            })
            .await
            .unwrap();
        }
    }
}

pub(super) fn example_release(root: &Path) -> PathBuf {
    bosh_controllers::testing::example_release(root).unwrap()
}

pub(super) fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// A release whose one package's packaging script fails with exit code 3.
fn broken_release(root: &Path) -> PathBuf {
    let dir = root.join("broken-release");
    write(&dir, "config/final.yml", "name: broken\n");
    write(&dir, "jobs/bad/spec", "---\nname: bad\ntemplates: {}\npackages: [broken]\n");
    write(&dir, "jobs/bad/monit", "");
    write(&dir, "packages/broken/spec", "---\nname: broken\nfiles: [broken/**/*]\n");
    write(&dir, "packages/broken/packaging", "echo boom from packaging\nexit 3\n");
    write(&dir, "src/broken/README", "nothing to build\n");
    dir
}

/// hello and hello-lib compile on local compile VMs (the dependency first), the VMs are deleted, and a second deployment on the same stemcell creates no VM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packages_compile_on_compile_vms_and_a_second_deployment_hits_the_cache() {
    let h = world(false).await;
    let tmp = tempfile::tempdir().unwrap();
    h.upload_release(&example_release(tmp.path())).await.unwrap();
    h.upload_stemcell().await.unwrap();
    let release = h.store.list::<bosh_api::objects::ReleaseSpec>("hello/").await.unwrap().items;
    let release = release[0].metadata.name.clone();
    let (code, _) = h.export(&release, "local/1").await;
    assert_eq!(code, 409, "nothing is compiled yet, so nothing can be exported");
    let start = Instant::now();
    h.deploy("first", "hello", "hello").await;
    let c = h.compiled_condition("first").await;
    assert_eq!(c.status, ConditionStatus::True, "{c:?}");
    println!("2 packages compiled on fresh compile VMs in {:?}", start.elapsed());

    let stemcell: Object<StemcellSpec> = h.store.get(None, "bosh-local-agent/1").await.unwrap();
    assert!(stemcell.status.cids.contains_key(h.director.cpi.name()), "{stemcell:?}");
    assert!(stemcell.metadata.has_finalizer(Finalizer::StemcellCpi));

    let compiled = h.store.list::<CompiledPackageSpec>("").await.unwrap().items;
    let by_name: BTreeMap<&str, &Object<CompiledPackageSpec>> =
        compiled.iter().map(|o| (o.spec.package.as_str(), o)).collect();
    assert_eq!(by_name.keys().copied().collect::<Vec<_>>(), ["hello", "hello-lib"]);
    let (hello, lib) = (by_name["hello"], by_name["hello-lib"]);
    for o in [hello, lib] {
        let blob = o.spec.blob.as_ref().expect("compiled");
        assert!(h.director.blobs.exists(&blob.sha256).await.unwrap(), "{o:?}");
        assert_eq!((o.spec.stemcell_os.as_str(), o.spec.stemcell_version.as_str()), ("local", "1"));
        assert!(o.spec.release.starts_with("hello/"), "{o:?}");
        assert!(o.status.worker.is_none(), "the compile VM record is cleared: {o:?}");
        let deps: Vec<&str> = o.spec.dependencies.values().map(String::as_str).collect();
        assert_eq!(
            o.metadata.name,
            bosh_api::objects::compile_key(&o.spec.fingerprint, "local", "1", &deps),
            "named by the compile key of its recorded inputs"
        );
    }
    assert_eq!(hello.spec.dependencies["hello-lib"], lib.metadata.name);
    // The compiled blobs hold what the packaging scripts installed.
    h.assert_compiled_contents(tmp.path()).await;
    assert!(
        lib.metadata.resource_version < hello.metadata.resource_version,
        "hello-lib's result was recorded before hello's"
    );
    assert_eq!(h.cpi.creates.load(Ordering::SeqCst), 2, "one compile VM per package");
    h.no_vm_left().await;

    // export-release: the compiled release reads back as a valid release
    // whose compiled packages are the cached blobs.
    let (code, body) = h.export(&release, "local/1").await;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let tarball = tmp.path().join("compiled.tgz");
    std::fs::write(&tarball, &body).unwrap();
    let archive = bosh_api::release::read_release_tarball(
        &tarball,
        &tmp.path().join("compiled"),
        &Default::default(),
    )
    .unwrap();
    let cps = &archive.manifest.compiled_packages;
    assert_eq!(cps.len(), 2, "{:?}", archive.manifest);
    assert!(cps.iter().all(|c| c.stemcell == "local/1"));
    let hello_ref = cps.iter().find(|c| c.name == "hello").unwrap();
    assert_eq!(hello_ref.sha1, format!("sha256:{}", hello.spec.blob.as_ref().unwrap().sha256));
    assert_eq!(archive.manifest.jobs.len(), 1);

    let start = Instant::now();
    h.deploy("second", "hello", "hello").await;
    let c = h.compiled_condition("second").await;
    assert_eq!(c.status, ConditionStatus::True, "{c:?}");
    println!("second deployment served from the cache in {:?}", start.elapsed());
    assert_eq!(h.cpi.creates.load(Ordering::SeqCst), 2, "a cache hit creates no compile VM");
    let after: BTreeSet<String> = h
        .store
        .list::<CompiledPackageSpec>("")
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|o| o.metadata.name)
        .collect();
    assert_eq!(after.len(), 2);
    h.stop().await.unwrap();
}

/// A packaging script that exits 3 sets PackagesCompiled=False naming the package, the exit code and the output, and its VM is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_packaging_script_is_reported_with_its_exit_code() {
    let h = world(false).await;
    let tmp = tempfile::tempdir().unwrap();
    h.upload_release(&broken_release(tmp.path())).await.unwrap();
    h.upload_stemcell().await.unwrap();
    let task = bosh_controllers::libs::tasks::create_task(
        &h.store,
        "create deployment",
        Some("broken"),
        "admin",
    )
    .await
    .unwrap();
    h.deploy_for_task("broken", "broken", "bad", Some(task.spec.id)).await;
    let c = h.compiled_condition("broken").await;
    assert_eq!(c.status, ConditionStatus::False, "{c:?}");
    assert_eq!(c.reason, Reason::PackageCompileFailed, "{c:?}");
    for want in ["package broken", "exited with code 3", "boom from packaging"] {
        assert!(c.message.contains(want), "{want:?} not in {:?}", c.message);
    }
    let compiled = h.store.list::<CompiledPackageSpec>("").await.unwrap().items;
    assert_eq!(compiled.len(), 1);
    assert!(compiled[0].spec.blob.is_none());
    let failed = find_condition(&compiled[0].status.conditions, ConditionType::Failed).unwrap();
    assert!(failed.message.contains("exited with code 3"), "{failed:?}");
    // The task's event log has the compile's start and its failure with the
    // exit code and output.
    let prefix = format!("{}/", bosh_controllers::libs::tasks::task_name(task.spec.id));
    let events = h.store.list::<bosh_api::objects::EventSpec>(&prefix).await.unwrap().items;
    let states: Vec<_> = events.iter().map(|e| e.spec.state).collect();
    assert!(states.starts_with(&[EventState::Started, EventState::Failed]), "{events:?}");
    assert_eq!(events[0].spec.stage, "Compiling packages");
    assert!(events[1].spec.object.starts_with("broken/"), "{events:?}");
    for want in ["exited with code 3", "boom from packaging"] {
        assert!(events[1].spec.error.contains(want), "{want:?} not in {:?}", events[1].spec.error);
    }
    assert!(
        !c.message.contains("compile-"),
        "the message names no compile VM, so a retry that fails alike writes no status: {c:?}"
    );
    h.no_vm_left().await;

    // The stemcell's finalizer deletes the CPI's copy before the object goes.
    h.store.delete::<StemcellSpec>(None, "bosh-local-agent/1", None).await.unwrap();
    let store = h.store.clone();
    eventually(super::DEADLINE, "the stemcell to be gone", || {
        let store = store.clone();
        async move {
            store
                .try_get::<StemcellSpec>(None, "bosh-local-agent/1")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        }
    })
    .await
    .unwrap();
    assert_eq!(h.cpi.stemcell_deletes.load(Ordering::SeqCst), 1);
    h.stop().await.unwrap();
}

/// With reuse_compilation_vms one compile VM builds both packages and is deleted when compilation is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reused_compile_vm_builds_every_package_and_is_deleted_at_the_end() {
    let h = world(true).await;
    let tmp = tempfile::tempdir().unwrap();
    h.upload_release(&example_release(tmp.path())).await.unwrap();
    h.upload_stemcell().await.unwrap();
    h.deploy("reuse", "hello", "hello").await;
    let c = h.compiled_condition("reuse").await;
    assert_eq!(c.status, ConditionStatus::True, "{c:?}");
    assert_eq!(h.cpi.creates.load(Ordering::SeqCst), 1, "one VM, reused");
    let compiled = h.store.list::<CompiledPackageSpec>("").await.unwrap().items;
    assert_eq!(compiled.len(), 2);
    assert!(compiled.iter().all(|o| o.spec.blob.is_some() && o.status.worker.is_none()));
    h.assert_compiled_contents(tmp.path()).await;
    h.no_vm_left().await;
    h.stop().await.unwrap();
}

/// A compile VM recorded as intent whose create_vm reply was lost is adopted by request id, not created twice, and deleted afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compile_vm_whose_reply_was_lost_is_adopted_by_request_id() {
    let h = world(false).await;
    let tmp = tempfile::tempdir().unwrap();
    h.upload_release(&example_release(tmp.path())).await.unwrap();
    h.upload_stemcell().await.unwrap();
    let store = h.store.clone();
    let cpi_name = h.director.cpi.name().to_string();
    let stemcell_cid = eventually(super::DEADLINE, "the stemcell to be imported", || {
        let (store, cpi_name) = (store.clone(), cpi_name.clone());
        async move {
            let s: Object<StemcellSpec> = store.get(None, "bosh-local-agent/1").await.ok()?;
            s.status.cids.get(&cpi_name).cloned()
        }
    })
    .await
    .unwrap();

    // What a crashed reconcile left: the object, the recorded intent, and
    // a VM the CPI made but whose cid never reached etcd.
    let release = h.store.list::<ReleaseSpec>("hello/").await.unwrap().items.remove(0);
    let lib = release.spec.packages.iter().find(|p| p.name == "hello-lib").unwrap();
    let key = bosh_api::objects::compile_key(&lib.fingerprint, "local", "1", &[]);
    let spec = CompiledPackageSpec {
        package: lib.name.clone(),
        fingerprint: lib.fingerprint.clone(),
        release: release.metadata.name.clone(),
        stemcell_os: "local".into(),
        stemcell_version: "1".into(),
        ..Default::default()
    };
    let mut obj = h.store.create(&Object::new(ObjectMeta::named(&key), spec)).await.unwrap();
    let worker = CompileWorker {
        deployment: "first".into(),
        agent_id: "compile-adopt-me".into(),
        request_id: "compile-adopt-me".into(),
        ip: h.subnet.ip(30).to_string(),
        vm_cid: String::new(),
        cpi: None,
    };
    obj.status.worker = Some(worker.clone());
    h.store.update_status(&obj).await.unwrap();
    let creds = h.director.bus.issue(&h.store, &worker.agent_id).await.unwrap();
    let net =
        NetworkSettings { type_: "manual".into(), ip: worker.ip.clone(), ..Default::default() };
    let settings = h.director.agent_settings(
        &worker.agent_id,
        creds,
        BTreeMap::from([("default".to_string(), net)]),
        serde_json::json!({}),
    );
    let orphan = h
        .cpi
        .inner
        .create_vm(
            None,
            &CreateVm {
                request_id: worker.request_id.clone(),
                agent_id: worker.agent_id.clone(),
                stemcell_cid,
                networks: BTreeMap::from([(
                    "default".to_string(),
                    VmNetwork {
                        ip: worker.ip.clone(),
                        netmask: h.subnet.netmask(),
                        gateway: h.subnet.ip(1).to_string(),
                        ..Default::default()
                    },
                )]),
                settings,
                ..Default::default()
            },
        )
        .await
        .unwrap();

    h.deploy("first", "hello", "hello").await;
    let c = h.compiled_condition("first").await;
    assert_eq!(c.status, ConditionStatus::True, "{c:?}");
    assert_eq!(h.cpi.creates.load(Ordering::SeqCst), 1, "only hello needed a new VM");
    let adopted: Object<CompiledPackageSpec> = h.store.get(None, &key).await.unwrap();
    assert!(adopted.spec.blob.is_some(), "compiled on the adopted VM: {adopted:?}");
    assert!(adopted.status.worker.is_none());
    assert!(!h.cpi.has_vm(&orphan).await.unwrap(), "the adopted VM is deleted afterwards");
    h.no_vm_left().await;
    h.stop().await.unwrap();
}

/// A stemcell whose image the CPI cannot use gets the CPI's error in its
/// `Ready` condition (False, `ImportFailed`) instead of an empty cid and no
/// reason (issue 12, item 8).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stemcell_the_cpi_refuses_shows_the_cpi_error_in_its_status() {
    let h = world(false).await;
    let junk: &'static [u8] = b"not a stemcell image";
    let stream = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from_static(junk))]);
    let b = h.director.blobs.put_stream(Box::pin(stream), None).await.unwrap();
    let spec = StemcellSpec {
        name: "broken".into(),
        version: "1".into(),
        operating_system: "local".into(),
        image: Some(b),
        ..Default::default()
    };
    h.store.create(&Object::new(ObjectMeta::named("broken/1"), spec)).await.unwrap();
    let store = h.store.clone();
    let (status, cond) = eventually(super::DEADLINE, "the import failure in the status", || {
        let store = store.clone();
        async move {
            let s: Object<StemcellSpec> = store.get(None, "broken/1").await.ok()?;
            let c = find_condition(&s.status.conditions, ConditionType::Ready)?.clone();
            (c.reason == Reason::ImportFailed).then_some((s.status, c))
        }
    })
    .await
    .unwrap();
    assert_eq!(cond.status, ConditionStatus::False);
    assert!(cond.message.contains("create_stemcell"), "{cond:?}");
    assert!(cond.message.contains(h.director.cpi.name()), "names the CPI: {cond:?}");
    assert!(status.cids.is_empty(), "{status:?}");
    assert_eq!(status.import_error(), Some(cond.message.as_str()));
    h.stop().await.unwrap();
}
