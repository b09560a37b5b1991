//! A. Controller crashes and stale views.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bosh_api::agent::Method;
use bosh_api::objects::{ConditionType, InstanceHealth, InstancePhase};
use bosh_api::objects::{
    ConfigSpec, ConfigType, DeploymentSpec, DiskPhase, DiskSpec, InstanceSpec,
};
use bosh_api::store::Fence;
use bosh_api::{Object, ObjectMeta};
use bosh_controllers::failpoints::{self as fp, hits};
use bosh_controllers::reconcilers::{compile, deployment, instance};
use bosh_controllers::runtime::Ctx;
use bosh_controllers::testing::{Harness, WebManifest};
use bosh_controllers::world::cpi::local::LocalCpi;
use bosh_test_utils::eventually;
use rand::{Rng, SeedableRng};

use super::super::deploy::DeployHarness;
use super::{CONVERGE, arm, assert_invariants, converged, manifest, recreate, report, seed, world};

/// A2: a panic right after each mutating CPI call of the instance controller
/// and the compile VMs, one failpoint after another, and before the n-th
/// Instance and Disk status write (n from the seed), never leaves a
/// duplicate VM, a leaked disk or a call without recorded intent, and the
/// deployment converges each time; every failpoint is reached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_a2_a_panic_after_every_cpi_call_and_before_status_writes_breaks_no_invariant() {
    let seed = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let scenario = fail::FailScenario::setup();
    let started = std::time::Instant::now();
    // Each run is a fresh world: the compile VMs' failpoints are reached
    // only by a first deploy.
    let runs = super::iterations(1, 3);
    for run in 1..=runs {
        eprintln!("A2 run {run} of {runs}");
        a2_run(&mut rng).await;
    }
    let took = started.elapsed();
    eprintln!("A2 scenarios took {took:?}");
    report(
        "A2",
        runs,
        seed,
        &format!(
            "8 CPI failpoints + 3 status-write runs per run, each reached; 0 violations; {took:.0?}"
        ),
    );
    scenario.teardown();
}

/// One A2 run in a world of its own.
async fn a2_run(rng: &mut rand::rngs::StdRng) {
    let (h, _tmp) = world().await;

    // The first deploy compiles (compile VMs are made and deleted) and
    // creates the disks.
    let first = [
        fp::CPI_AFTER_CREATE_COMPILE_VM,
        fp::CPI_AFTER_DELETE_COMPILE_VM,
        fp::CPI_AFTER_CREATE_DISK,
    ];
    let before: Vec<u64> = first.iter().map(|f| arm(f, "1*panic")).collect();
    h.apply("a2", manifest("a2")).await;
    converged(&h, "a2", "first deploy").await;
    for (f, b) in first.iter().zip(before) {
        assert!(hits(f) > b, "failpoint {f} was never reached");
        fail::remove(f);
    }
    assert_invariants(&h, "after the first deploy").await;

    // A recreate passes through every VM call and the disk's detach and attach.
    let mut n = 0;
    for f in [
        fp::CPI_AFTER_DETACH_DISK,
        fp::CPI_AFTER_DELETE_VM,
        fp::CPI_AFTER_CREATE_VM,
        fp::CPI_AFTER_SET_VM_METADATA,
        fp::CPI_AFTER_ATTACH_DISK,
    ] {
        let b = arm(f, "1*panic");
        n += 1;
        recreate(&h, "a2", n).await;
        converged(&h, "a2", f).await;
        assert!(hits(f) > b, "failpoint {f} was never reached");
        fail::remove(f);
        assert_invariants(&h, &format!("after a panic at {f}")).await;
    }

    // A panic before the k-th status write of a recreate, for a few k.
    for run in 0..3 {
        let k = rng.random_range(0..8u64);
        let j = rng.random_range(0..2u64);
        eprintln!("run {run}: panic before instance status write {k} and disk status write {j}");
        let bi = arm(fp::INSTANCE_BEFORE_STATUS_WRITE, &format!("{k}*off->1*panic->off"));
        let bd = arm(fp::DISK_BEFORE_STATUS_WRITE, &format!("{j}*off->1*panic->off"));
        n += 1;
        recreate(&h, "a2", n).await;
        converged(&h, "a2", "status writes").await;
        assert!(hits(fp::INSTANCE_BEFORE_STATUS_WRITE) > bi + k, "instance write {k} not reached");
        assert!(hits(fp::DISK_BEFORE_STATUS_WRITE) > bd + j, "disk write {j} not reached");
        fail::remove(fp::INSTANCE_BEFORE_STATUS_WRITE);
        fail::remove(fp::DISK_BEFORE_STATUS_WRITE);
        assert_invariants(&h, &format!("after status-write run {run}")).await;
    }
    h.stop().await.unwrap();
}

/// Requests sent to agents so far, of every method.
fn agent_requests(h: &Harness) -> u64 {
    Method::ALL.iter().map(|m| h.director.agents.calls().get(*m)).sum()
}

fn ctx<C>(h: &Harness, controller: &'static str, data: C) -> Arc<Ctx<C>> {
    Arc::new(Ctx {
        controller,
        store: h.store.clone(),
        fence: Fence { key: format!("/test/{controller}"), revision: 0 },
        data: Arc::new(data),
    })
}

/// A4: on a converged deployment, running every reconcile (deployment,
/// compilation, each instance) twice in a row makes no CPI call, no agent
/// request and no etcd write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_a4_a_converged_deployment_reconciled_twice_is_silent() {
    let (h, _tmp) = world().await;
    h.apply("a4", manifest("a4")).await;
    converged(&h, "a4", "deploy").await;
    // The health monitor's first verdicts are writes; wait for them.
    let store = h.store.clone();
    eventually(CONVERGE, "every instance observed running", || {
        let store = store.clone();
        async move {
            let all = store.list::<InstanceSpec>("a4/").await.ok()?.items;
            all.iter().all(|i| i.status.health == Some(InstanceHealth::Running)).then_some(())
        }
    })
    .await
    .unwrap();
    assert_invariants(&h, "converged").await;

    let d = h.director.clone();
    let deployments = ctx(&h, "deployment", deployment::Deployer::new(d.clone()));
    let compiler = ctx(&h, "compilation", compile::Compiler::new(d.clone()));
    let instances = ctx(&h, "instance", instance::Instances::new(d));
    let (rev, calls, requests) =
        (h.store.revision().await.unwrap(), h.cpi.calls(), agent_requests(&h));
    let started = std::time::Instant::now();
    for round in 1..=2 {
        let dep = Arc::new(h.store.get::<DeploymentSpec>(None, "a4").await.unwrap());
        compile::reconcile(dep.clone(), compiler.clone()).await.unwrap();
        deployment::reconcile(dep, deployments.clone()).await.unwrap();
        for i in h.instances("a4").await {
            instance::reconcile(Arc::new(i), instances.clone()).await.unwrap();
        }
        assert_eq!(h.store.revision().await.unwrap(), rev, "etcd writes in round {round}");
        assert_eq!(h.cpi.calls(), calls, "CPI calls in round {round}");
        assert_eq!(agent_requests(&h), requests, "agent requests in round {round}");
    }
    let took = started.elapsed();
    eprintln!("A4: two rounds of reconciles took {took:?}");
    report("A4", 2, 0, &format!("0 CPI calls, 0 agent requests, 0 etcd writes; {took:.0?}"));
    h.stop().await.unwrap();
}

/// Writes `n` revisions to etcd (a resurrection config rewritten), so that
/// a snapshot taken before is that many revisions behind.
async fn pad_revisions(h: &Harness, n: usize) {
    let name = "resurrection/pad";
    let content = |i: usize| serde_json::json!({"rules": [], "pad": i});
    let mut o = match h.store.try_get::<ConfigSpec>(None, name).await.unwrap() {
        Some(o) => o,
        None => {
            let spec = ConfigSpec { type_: ConfigType::Resurrection, content: content(0) };
            h.store.create(&Object::new(ObjectMeta::named(name), spec)).await.unwrap()
        }
    };
    for i in 1..n {
        o.spec.content = content(i);
        o = h.store.update_spec(&o).await.unwrap();
    }
}

/// A5: the instance and deployment controllers are served objects 100+
/// revisions old, as a lagging cache would serve them — an Instance from
/// the middle of a recreate that has since finished (on its old VM), and a
/// Deployment from before a scale-up (one instance fewer). Reconciling
/// them deletes nothing: no VM, no Instance, no disk; every destructive
/// decision is taken on a linearizable read (the reconciles re-read their
/// object), and the invariants hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_a5_a_cache_100_revisions_behind_decides_no_deletion() {
    let (h, _tmp) = world().await;
    h.apply("a5", manifest("a5")).await;
    converged(&h, "a5", "deploy").await;
    let old_vms: BTreeSet<String> =
        h.instances("a5").await.iter().filter_map(|i| i.status.vm_cid.clone()).collect();
    let r0 = h.store.revision().await.unwrap();
    recreate(&h, "a5", 1).await;
    converged(&h, "a5", "recreate").await;
    let r1 = h.store.revision().await.unwrap();
    // The first revision at which an instance had its new spec but still
    // its old VM: the view a lagging cache could serve.
    let mut stale_instance = None;
    for r in r0..=r1 {
        let at = h.store.list_at::<InstanceSpec>("a5/", r).await.unwrap().items;
        if let Some(i) = at.into_iter().find(|i| {
            !instance::is_converged(i)
                && i.status.vm_cid.as_ref().is_some_and(|v| old_vms.contains(v))
        }) {
            stale_instance = Some((r, i));
            break;
        }
    }
    let (r_inst, stale_instance) = stale_instance.expect("a revision mid-recreate");
    let stale_deployment = h.store.get::<DeploymentSpec>(None, "a5").await.unwrap();
    let r_dep = h.store.revision().await.unwrap();
    // Scale up to 3: the stale Deployment wants one instance fewer.
    let three = WebManifest { persistent_disk_mb: 64, ..WebManifest::hello("a5", 3) }.value();
    h.apply("a5", three).await;
    let store = h.store.clone();
    eventually(CONVERGE, "a5 at 3 instances", || {
        let store = store.clone();
        async move {
            let all = store.list::<InstanceSpec>("a5/").await.ok()?.items;
            (all.len() == 3
                && all.iter().all(|i| {
                    instance::is_converged(i) && i.status.phase == Some(InstancePhase::Running)
                }))
            .then_some(())
        }
    })
    .await
    .unwrap();
    let now = h.store.revision().await.unwrap();
    if now < r_dep + 100 {
        pad_revisions(&h, (r_dep + 100 - now) as usize).await;
    }
    let now = h.store.revision().await.unwrap();
    let (behind_i, behind_d) = (now - r_inst, now - r_dep);
    eprintln!("stale instance {behind_i} revisions behind, stale deployment {behind_d}");
    assert!(behind_i >= 100 && behind_d >= 100);
    assert_invariants(&h, "before the stale reconciles").await;

    let before: Vec<String> =
        h.instances("a5").await.iter().map(|i| i.metadata.name.clone()).collect();
    let (deletes, creates) =
        (h.cpi.deleted.lock().unwrap().len(), h.cpi.created.lock().unwrap().len());
    let d = h.director.clone();
    let instances = ctx(&h, "instance", instance::Instances::new(d.clone()));
    let deployments = ctx(&h, "deployment", deployment::Deployer::new(d));
    let started = Instant::now();
    let a = instance::reconcile(Arc::new(stale_instance.clone()), instances).await;
    eprintln!("stale instance reconcile: {a:?}");
    let b = deployment::reconcile(Arc::new(stale_deployment), deployments).await;
    eprintln!("stale deployment reconcile: {b:?}");
    let took = started.elapsed();

    let after = h.instances("a5").await;
    assert_eq!(after.len(), 3, "no instance deleted");
    assert!(after.iter().all(|i| !i.metadata.is_deleting()), "no instance being deleted");
    assert_eq!(h.cpi.deleted.lock().unwrap().len(), deletes, "no delete_vm");
    assert_eq!(h.cpi.created.lock().unwrap().len(), creates, "no create_vm");
    let names: Vec<String> = after.iter().map(|i| i.metadata.name.clone()).collect();
    assert_eq!(names, before);
    let disks = h.store.list::<DiskSpec>("a5/").await.unwrap().items;
    assert!(disks.iter().all(|d| d.status.phase == DiskPhase::Attached), "no disk let go");
    let audit = bosh_controllers::world::cpi::local::audit::read(&h.cpi_root()).unwrap();
    let destructive = audit
        .iter()
        .filter(|e| e.fence.as_ref().is_some_and(|f| f.key.starts_with("/test/")))
        .filter(|e| matches!(e.method.as_str(), "delete_vm" | "delete_disk" | "detach_disk"))
        .count();
    assert_eq!(destructive, 0, "no destructive CPI call from the stale reconciles");
    assert_invariants(&h, "after the stale reconciles").await;
    report(
        "A5",
        1,
        0,
        &format!(
            "Instance {behind_i} and Deployment {behind_d} revisions behind: 0 delete_vm, \
             0 instance deletions, 0 disk detaches; decided on a linearizable re-read; {took:.0?}"
        ),
    );
    h.stop().await.unwrap();
}

/// A6: deployments created and deleted again within a few milliseconds
/// (a seeded 0–9 ms apart), one after another, before or while the
/// controllers see them. Every one goes: no Deployment or Instance is
/// left (their finalizers were removed), no VM (compile VMs included),
/// and every CPI disk is an orphan's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_a6_create_then_delete_within_10ms_leaves_nothing_behind() {
    let seed = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (h, _tmp) = world().await;
    let runs = super::iterations(5, 100);
    let mut gaps = Vec::new();
    let started = Instant::now();
    for n in 1..=runs {
        let name = format!("a6-{n}");
        let pause = Duration::from_millis(rng.random_range(0..10));
        h.create_deployment(&name, manifest(&name)).await.unwrap();
        let t = Instant::now();
        tokio::time::sleep(pause).await;
        // A user's delete: retried when it loses a race with the
        // controller adding its finalizer (a conflict, as the API answers 409).
        loop {
            match h.store.delete::<DeploymentSpec>(None, &name, None).await {
                Ok(_) => break,
                Err(e) if e.is_conflict() => continue,
                Err(e) => panic!("delete {name}: {e}"),
            }
        }
        gaps.push(t.elapsed());
    }
    let root = h.cpi_root();
    let store = h.store.clone();
    eventually(CONVERGE, "every a6 deployment, instance and VM gone", || {
        let (store, root) = (store.clone(), root.clone());
        async move {
            let deps = store.list::<DeploymentSpec>("").await.ok()?.items;
            let insts = store.list::<InstanceSpec>("").await.ok()?.items;
            let inv = LocalCpi::inventory(&root).ok()?;
            (deps.is_empty() && insts.is_empty() && inv.vms.is_empty()).then_some(())
        }
    })
    .await
    .unwrap();
    let took = started.elapsed();
    let disks = h.store.list::<DiskSpec>("").await.unwrap().items;
    assert!(
        disks.iter().all(|d| d.status.phase == DiskPhase::Orphaned),
        "only orphaned disks: {:?}",
        disks.iter().map(|d| (d.key_name(), d.status.phase)).collect::<Vec<_>>()
    );
    let inv = LocalCpi::inventory(&root).unwrap();
    assert_invariants(&h, "after every create-and-delete").await;
    let max = gaps.iter().max().copied().unwrap_or_default();
    report(
        "A6",
        runs,
        seed,
        &format!(
            "created and deleted {max:.1?} apart at most: 0 VMs, 0 instances, 0 deployments \
             (finalizers removed), {} disk(s), all orphans; settled in {took:.0?}",
            inv.disks.len()
        ),
    );
    h.stop().await.unwrap();
}

/// A7: 8 writers race on one Instance — 4 edit its spec (read, edit,
/// compare-and-swap; on a conflict read again and redo), 4 write its
/// status through the controllers' `runtime::status::patch` — for `iterations(500,
/// 10_000)` updates in all, each adding its own key. No update is lost
/// (every key is there at the end and etcd counted exactly one write per
/// update), and every conflict was retried after a re-read: the retried
/// edit saw a newer object than the attempt that failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_a7_spec_edits_racing_status_writes_lose_no_update() {
    let seed = seed();
    let (_env, store) = super::super::setup().await;
    let total = super::iterations(500, 10_000);
    let writers = 4;
    let per = total / (2 * writers);
    let obj = Object::new(
        ObjectMeta::scoped("a7", "web/0"),
        InstanceSpec { group: "web".into(), id: "0".into(), ..Default::default() },
    );
    store.create(&obj).await.unwrap();
    let rev0 = store.revision().await.unwrap();
    let spec_conflicts = Arc::new(AtomicUsize::new(0));
    let status_attempts = Arc::new(AtomicUsize::new(0));
    let stale_retries = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (store, conflicts) = (store.clone(), spec_conflicts.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..per {
                let mut o = store.get::<InstanceSpec>(Some("a7"), "web/0").await.unwrap();
                loop {
                    let tried = o.metadata.resource_version;
                    o.spec.env[format!("spec-{w}-{i}")] = true.into();
                    match store.update_spec(&o).await {
                        Ok(_) => break,
                        Err(e) if e.is_conflict() => {
                            conflicts.fetch_add(1, Ordering::Relaxed);
                            o = store.get::<InstanceSpec>(Some("a7"), "web/0").await.unwrap();
                            assert!(o.metadata.resource_version > tried, "re-read a newer spec");
                        }
                        Err(e) => panic!("spec write: {e}"),
                    }
                }
            }
        }));
    }
    for w in 0..writers {
        let (store, attempts, stale) =
            (store.clone(), status_attempts.clone(), stale_retries.clone());
        tasks.push(tokio::spawn(async move {
            let mut o = store.get::<InstanceSpec>(Some("a7"), "web/0").await.unwrap();
            for i in 0..per {
                // The sizes each attempt of this write saw: a retry must
                // see more (it re-read a status others had added to).
                let seen = Mutex::new(Vec::new());
                let key = format!("status-{w}-{i}");
                bosh_controllers::runtime::status::patch(&store, &mut o, |s| {
                    attempts.fetch_add(1, Ordering::Relaxed);
                    seen.lock().unwrap().push(s.processes.len());
                    s.processes.insert(key.clone(), "x".into());
                })
                .await
                .unwrap();
                let seen = seen.into_inner().unwrap();
                if seen.windows(2).any(|p| p[1] <= p[0]) {
                    stale.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let took = started.elapsed();
    let o = store.get::<InstanceSpec>(Some("a7"), "web/0").await.unwrap();
    let spec_keys = o.spec.env.as_object().map_or(0, |m| m.len());
    let status_keys = o.status.processes.len();
    let writes = (store.revision().await.unwrap() - rev0) as usize;
    let updates = 2 * writers * per;
    let status_conflicts = status_attempts.load(Ordering::Relaxed) - writers * per;
    let spec_conflicts = spec_conflicts.load(Ordering::Relaxed);
    eprintln!(
        "{updates} updates: {spec_keys} spec keys, {status_keys} status keys, {writes} etcd \
         writes; {spec_conflicts} spec and {status_conflicts} status conflicts in {took:?}"
    );
    assert_eq!(spec_keys, writers * per, "lost spec updates");
    assert_eq!(status_keys, writers * per, "lost status updates");
    assert_eq!(writes, updates, "exactly one etcd write per update");
    assert_eq!(stale_retries.load(Ordering::Relaxed), 0, "a retry did not re-read");
    assert!(spec_conflicts + status_conflicts > 0, "the writers did race");
    report(
        "A7",
        1,
        seed,
        &format!(
            "{} CAS attempts for {updates} updates: 0 lost; {spec_conflicts} spec + \
             {status_conflicts} status conflicts, each retried after a re-read; {took:.0?}",
            updates + spec_conflicts + status_conflicts
        ),
    );
}

/// Deployment `name` is Ready at its generation with `n` instances each
/// converged and running (of boshd run as a process).
async fn ready_with(store: &bosh_api::store::Store, name: &str, n: usize) -> Option<()> {
    let d: Object<DeploymentSpec> = store.get(None, name).await.ok()?;
    let c = bosh_api::meta::find_condition(&d.status.conditions, ConditionType::Ready)?;
    if c.status != bosh_api::ConditionStatus::True || c.observed_revision != d.metadata.generation {
        return None;
    }
    let all = store.list::<InstanceSpec>(&format!("{name}/")).await.ok()?.items;
    (all.len() == n
        && all
            .iter()
            .all(|i| instance::is_converged(i) && i.status.phase == Some(InstancePhase::Running)))
    .then_some(())
}

/// A1: boshd, run as a process, is `kill -9`ed at a seeded random moment
/// of a deploy of `iterations(3, 20)` instances with persistent disks and
/// started again, `iterations(1, 50)` times (a new deployment each time,
/// deleted after). Every time it converges with no duplicate VM and no
/// leaked disk — the invariant checker over etcd, the CPI's records and
/// its audit log (which boshd's local CPI writes with etcd revisions)
/// finds nothing — within the fault-free deploy time plus 60 s. The
/// fault-free time is measured first, on a deployment of the same size,
/// from its packages being compiled to Ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_a1_boshd_killed_at_a_random_point_of_a_deploy_converges_without_duplicates() {
    use super::super::boshd_deploy::{
        Boshd, VmReaper, api, cloud_config, kill, spawn_boshd_with, upload_stemcell_and_release,
    };
    let seed = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (env, store) = super::super::setup().await;
    let dir = env.dir().to_path_buf();
    let cpi_dir = dir.join("boshd/cpi");
    let _reaper = VmReaper(cpi_dir.clone());
    let subnet = bosh_test_utils::SubnetLease::acquire();
    let cloud = Object::new(
        ObjectMeta::named("cloud/default"),
        ConfigSpec { type_: ConfigType::Cloud, content: cloud_config(&subnet) },
    );
    store.create(&cloud).await.unwrap();
    let (api_port, nats) = (bosh_test_utils::free_port(), bosh_test_utils::free_port());
    let nats = format!("127.0.0.1:{nats}");
    let etcd = env.boshd_args();
    let spawn =
        || Boshd(spawn_boshd_with(&dir.join("boshd"), &etcd, api_port, &["--nats-listen", &nats]));
    let mut boshd = spawn();
    let (url, token) = api(&dir.join("boshd")).await;
    upload_stemcell_and_release(&dir, &url, &token).await;

    let n = super::iterations(3, 20);
    let runs = super::iterations(1, 50);
    let manifest = |name: &str| {
        WebManifest {
            max_in_flight: n as u32,
            persistent_disk_mb: 16,
            properties: serde_json::json!({"port": 8080, "listen_on_instance_ip": true, "greeting": "a1"}),
            ..WebManifest::hello(name, n as u32)
        }
        .value()
    };
    let deploy = |name: &str| {
        let spec = DeploymentSpec { manifest: manifest(name), ..Default::default() };
        Object::new(ObjectMeta::named(name), spec)
    };
    let gone = |name: String| {
        let store = store.clone();
        async move {
            store.delete::<DeploymentSpec>(None, &name, None).await.unwrap();
            eventually(CONVERGE, &format!("{name} deleted"), || {
                let (store, name) = (store.clone(), name.clone());
                async move {
                    let d = store.try_get::<DeploymentSpec>(None, &name).await.ok()?;
                    let i = store.list::<InstanceSpec>(&format!("{name}/")).await.ok()?.items;
                    (d.is_none() && i.is_empty()).then_some(())
                }
            })
            .await
            .unwrap();
        }
    };

    // The fault-free deploy: compiling, then the deploy proper.
    store.create(&deploy("a1-ref")).await.unwrap();
    let compiled = eventually(CONVERGE, "a1-ref compiled", || {
        let store = store.clone();
        async move {
            let d: Object<DeploymentSpec> = store.get(None, "a1-ref").await.ok()?;
            let c = bosh_api::meta::find_condition(
                &d.status.conditions,
                ConditionType::PackagesCompiled,
            )?;
            (c.status == bosh_api::ConditionStatus::True).then(Instant::now)
        }
    })
    .await
    .unwrap();
    eventually(CONVERGE, "a1-ref deployed", || ready_with(&store, "a1-ref", n)).await.unwrap();
    let deploy_time = compiled.elapsed();
    eprintln!("fault-free deploy of {n} instances: {deploy_time:?} after compiling");
    assert!(no_violations(&store, &cpi_dir).await, "the fault-free deploy");
    gone("a1-ref".into()).await;

    let mut worst = Duration::ZERO;
    let mut kills = Vec::new();
    for run in 1..=runs {
        let name = format!("a1-{run}");
        let at = deploy_time.mul_f64(rng.random_range(0.0..1.0));
        store.create(&deploy(&name)).await.unwrap();
        let t0 = Instant::now();
        // The fault's timing, not a readiness wait.
        tokio::time::sleep(at).await;
        let vms = LocalCpi::inventory(&cpi_dir).map(|i| i.vms.len()).unwrap_or_default();
        kill(&mut boshd.0, libc::SIGKILL);
        eprintln!("run {run}: boshd killed {at:?} into the deploy ({vms} VMs existed)");
        kills.push(format!("{:.1}s/{vms}vms", at.as_secs_f64()));
        boshd = spawn();
        let bound = deploy_time + Duration::from_secs(60);
        eventually(bound.max(CONVERGE), &format!("{name} deployed"), || {
            ready_with(&store, &name, n)
        })
        .await
        .unwrap();
        let took = t0.elapsed();
        worst = worst.max(took);
        eprintln!("run {run}: converged {took:?} after the apply (bound {bound:?})");
        assert!(took <= bound, "run {run}: converged in {took:?} > deploy time + 60 s ({bound:?})");
        let v = bosh_controllers::testing::invariants::check(&store, &cpi_dir).await.unwrap();
        let list: Vec<String> = v.iter().map(ToString::to_string).collect();
        assert!(v.is_empty(), "run {run}: {} violation(s):\n{}", v.len(), list.join("\n"));
        let inv = LocalCpi::inventory(&cpi_dir).unwrap();
        let instances = store.list::<InstanceSpec>(&format!("{name}/")).await.unwrap().items;
        let owned: BTreeSet<String> =
            instances.iter().filter_map(|i| i.status.vm_cid.clone()).collect();
        let vms: BTreeSet<String> = inv.vms.keys().cloned().collect();
        assert_eq!(vms, owned, "run {run}: exactly one VM per instance");
        if run < runs {
            gone(name).await;
        }
    }
    kill(&mut boshd.0, libc::SIGTERM);
    report(
        "A1",
        runs,
        seed,
        &format!(
            "{n} instances with disks, kill -9 at {}: 0 duplicate VMs, 0 leaked disks, \
             0 violations (I1-I6); slowest convergence {worst:.0?} vs fault-free deploy \
             {deploy_time:.0?} + 60 s",
            kills.join(", ")
        ),
    );
}

/// Whether the invariant checker finds nothing (printing what it finds).
pub(super) async fn no_violations(store: &bosh_api::store::Store, cpi: &std::path::Path) -> bool {
    let v = bosh_controllers::testing::invariants::check(store, cpi).await.unwrap();
    for x in &v {
        eprintln!("{x}");
    }
    v.is_empty()
}

/// A3, the window made deterministic: a leader checks its fence (as every
/// controller does right before a CPI call), is paused, loses its lease
/// and is replaced, then resumes and makes the call — before its successor
/// has made any call of its own, so the local CPI's memory of fences has
/// nothing newer to refuse it with. The CPI re-checks the fence against
/// etcd when it admits the call and refuses it: nothing is made, and I5
/// over the audit log finds no call let through from the old term after
/// the new one began.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_a3_b_a_cpi_call_checked_before_the_lease_was_lost_is_refused() {
    use bosh_controllers::world::cpi::Cpi;
    let (env, store) = super::super::setup().await;
    let root = env.dir().join("cpi");
    let cpi = LocalCpi::open(&root).unwrap().with_audit_store(store.clone());
    let election = "a3-window";
    let none = serde_json::json!({});

    let old_lease = store.grant_lease(60).await.unwrap();
    let old = store.try_acquire(election, "zombie", old_lease).await.unwrap().expect("leads");
    let zombie = store.with_fence(old.clone());
    // The controller's check, right before its CPI call: it still leads.
    zombie.check_fence().await.unwrap();
    // Paused here past its lease; another replica is elected.
    store.revoke_lease(old_lease).await.unwrap();
    let new_lease = store.grant_lease(60).await.unwrap();
    let new = store.try_acquire(election, "successor", new_lease).await.unwrap().expect("leads");
    assert!(new.revision > old.revision);
    // It resumes and makes the call it had checked for.
    let late = cpi.create_disk(Some(&old), "a3-zombie", 1, &none, None).await;
    // The successor acts.
    let disk = cpi.create_disk(Some(&new), "a3-successor", 1, &none, None).await;
    let disk = disk.unwrap();

    let inv = LocalCpi::inventory(&root).unwrap();
    let made: Vec<&String> = inv.disks.keys().collect();
    let v = bosh_controllers::testing::invariants::check(&store, &root).await.unwrap();
    let i5: Vec<String> = v
        .iter()
        .filter(|v| v.invariant == bosh_controllers::testing::invariants::Invariant::I5)
        .map(ToString::to_string)
        .collect();
    assert!(i5.is_empty(), "I5:\n{}", i5.join("\n"));
    let e = late.expect_err("the deposed leader's call is refused");
    eprintln!("refused: {e}");
    assert_eq!(made, [&disk], "only the successor's disk exists");
    assert!(zombie.check_fence().await.is_err(), "the old fence is gone");
}

/// The ok mutating CPI calls process `pid` made since `since`.
fn calls_since(cpi: &std::path::Path, pid: u32, since: chrono::DateTime<chrono::Utc>) -> usize {
    let log = bosh_controllers::world::cpi::local::audit::read(cpi).unwrap_or_default();
    log.iter().filter(|e| e.pid == pid && e.ok() && e.at.is_some_and(|at| at >= since)).count()
}

/// One line `write committed` of a replica's log (`bosh_api::store=debug`):
/// the etcd revision of a write etcd accepted and the fence it carried.
fn committed_writes(log: &str) -> Vec<(i64, Option<(String, i64)>)> {
    let field = |l: &str, name: &str| {
        l.split_whitespace().find_map(|w| w.strip_prefix(name)).map(str::to_string)
    };
    log.lines()
        .filter(|l| l.contains("write committed"))
        .filter_map(|l| {
            let rev = field(l, "revision=")?.parse().ok()?;
            let fence = field(l, "fence=").and_then(|f| {
                let (key, r) = f.rsplit_once('@')?;
                Some((key.to_string(), r.parse().ok()?))
            });
            Some((rev, fence))
        })
        .collect()
}

/// A3: two boshd replicas (processes) share etcd, nats-server and the CPI;
/// a deployment of two instances with disks is rolled out one instance at
/// a time. Each of `iterations(1, 5)` runs: (1) the replica that leads is
/// SIGKILLed at a seeded point of the rollout (after its k-th CPI
/// mutation) and started again once the other leads everything; (2) at a
/// seeded point of the next rollout (a recreate) the new leader is
/// SIGSTOPped for 2× the lease TTL (3 s, so 6 s), until the other has
/// taken every election over, and SIGCONTinued — a zombie that resumes in
/// the middle of its work. Every rollout completes; the invariants
/// (I1–I6, I5 over the CPI audit log) hold; and, from the zombie's own
/// records, **no** CPI mutation was admitted for it (audit log, its pid)
/// and **no** etcd write was accepted for it (its `write committed` log
/// lines, each with the fence it carried) under an old term at or after
/// the etcd revision at which that election's new term began. The figures
/// report what the zombie tried after resuming and was refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_a3_a_killed_and_paused_leaders_get_nothing_accepted_after_their_term() {
    use super::super::boshd_deploy::{api, cloud_config, kill, upload_stemcell_and_release};
    use super::super::ha::{ELECTIONS, LogsOnFailure, Shared, holder, leads_all};
    let seed = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (env, store) = super::super::setup().await;
    let dir = env.dir().to_path_buf();
    let cpi_dir = dir.join("cpi");
    let _reaper = super::super::boshd_deploy::VmReaper(cpi_dir.clone());
    let _logs = LogsOnFailure(dir.clone());
    let subnet = bosh_test_utils::SubnetLease::acquire();
    let cloud = Object::new(
        ObjectMeta::named("cloud/default"),
        ConfigSpec { type_: ConfigType::Cloud, content: cloud_config(&subnet) },
    );
    store.create(&cloud).await.unwrap();
    let shared = Shared {
        dir: dir.clone(),
        etcd: env.boshd_args(),
        nats: format!("127.0.0.1:{}", bosh_test_utils::free_port()),
        monitor: format!("127.0.0.1:{}", bosh_test_utils::free_port()),
        api_ports: [bosh_test_utils::free_port(), bosh_test_utils::free_port()],
        vm_ports: None,
        vars: vec![("RUST_LOG".into(), "info,bosh_api::store=debug".into())],
    };
    let mut replicas = [Some(shared.spawn(0)), None];
    let _nats = shared.start_nats().await;
    replicas[1] = Some(shared.spawn(1));
    let (url, token) = api(&shared.data(0)).await;
    api(&shared.data(1)).await;
    upload_stemcell_and_release(&dir, &url, &token).await;
    // The lease TTL boshd runs with in these tests (`--lease-ttl-secs 3`).
    let ttl = Duration::from_secs(3);
    let n = super::INSTANCES;
    let name = "a3";
    let manifest = WebManifest {
        max_in_flight: 1,
        persistent_disk_mb: 16,
        properties: serde_json::json!({"port": 8080, "listen_on_instance_ip": true, "greeting": "a3"}),
        ..WebManifest::hello(name, n as u32)
    }
    .value();
    let leader_of = |store: bosh_api::store::Store| async move {
        let h = holder(&store, "instance").await.expect("the instance controller has a leader");
        if h == "r0" { 0 } else { 1 }
    };
    // Recreates every instance (a rollout of CPI mutations).
    let recreate = |token: u64| {
        let store = store.clone();
        async move {
            loop {
                let mut d = store.get::<DeploymentSpec>(None, "a3").await.unwrap();
                let ov = bosh_api::objects::InstanceOverride {
                    state: Some(bosh_api::objects::DesiredState::Started),
                    recreate: token,
                    ..Default::default()
                };
                d.spec.instances.insert("web".into(), ov);
                match store.update_spec(&d).await {
                    Ok(_) => return,
                    Err(e) if e.is_conflict() => continue,
                    Err(e) => panic!("recreate: {e}"),
                }
            }
        }
    };

    let runs = super::iterations(1, 5);
    let (mut takeovers, mut pauses) = (Vec::new(), Vec::new());
    let (mut refused_writes, mut refused_calls, mut points) = (0, 0, Vec::new());
    let mut refused_by_term = 0;
    let started = Instant::now();
    for run in 1..=runs {
        // 1. SIGKILL the leader at its k-th CPI mutation of the rollout.
        let leader = leader_of(store.clone()).await;
        leads_all(&store, &format!("r{leader}")).await;
        let pid = replicas[leader].as_ref().unwrap().0.id();
        let k = rng.random_range(1..=6);
        let t0 = chrono::Utc::now();
        if run == 1 {
            let spec = DeploymentSpec { manifest: manifest.clone(), ..Default::default() };
            store.create(&Object::new(ObjectMeta::named(name), spec)).await.unwrap();
        } else {
            recreate(2 * run as u64 - 1).await;
        }
        eventually(CONVERGE, &format!("r{leader}'s CPI mutation {k}"), || async {
            (calls_since(&cpi_dir, pid, t0) >= k).then_some(())
        })
        .await
        .unwrap();
        let killed_at = Instant::now();
        kill(&mut replicas[leader].take().unwrap().0, libc::SIGKILL);
        assert!(ready_with(&store, name, n).await.is_none(), "run {run}: killed mid-rollout");
        let survivor = 1 - leader;
        leads_all(&store, &format!("r{survivor}")).await;
        takeovers.push(killed_at.elapsed());
        eprintln!("run {run}: r{leader} killed after CPI mutation {k}; r{survivor} leads");
        points.push(format!("kill@{k}"));
        replicas[leader] = Some(shared.spawn(leader));
        eventually(super::super::ha::DEPLOY_DEADLINE, &format!("run {run}: rollout 1"), || {
            ready_with(&store, name, n)
        })
        .await
        .unwrap();
        assert!(no_violations(&store, &cpi_dir).await, "run {run}: after the kill");

        // 2. SIGSTOP the new leader at its k-th CPI mutation for 2× TTL.
        let (zombie, successor) = (survivor, leader);
        api(&shared.data(successor)).await;
        let pid = replicas[zombie].as_ref().unwrap().0.id();
        let k = rng.random_range(1..=8);
        let t0 = chrono::Utc::now();
        recreate(2 * run as u64).await;
        eventually(CONVERGE, &format!("r{zombie}'s CPI mutation {k}"), || async {
            (calls_since(&cpi_dir, pid, t0) >= k).then_some(())
        })
        .await
        .unwrap();
        let log_path = shared.data(zombie).with_extension("log");
        // SAFETY: signalling a child we spawned and have not reaped.
        unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
        let stopped = Instant::now();
        points.push(format!("stop@{k}"));
        leads_all(&store, &format!("r{successor}")).await;
        takeovers.push(stopped.elapsed());
        let mut new_terms = BTreeMap::new();
        for e in ELECTIONS {
            let l = store.leader(e).await.unwrap().expect("a leader");
            new_terms.insert(l.fence.key, l.fence.revision);
        }
        // The fault's duration: 2× the lease TTL (longer if the takeover was slower).
        tokio::time::sleep((2 * ttl).saturating_sub(stopped.elapsed())).await;
        let resumed_from = std::fs::metadata(&log_path).unwrap().len() as usize;
        // SAFETY: as above.
        unsafe { libc::kill(pid as i32, libc::SIGCONT) };
        pauses.push(stopped.elapsed());
        eprintln!("run {run}: r{zombie} paused {:?} after CPI mutation {k}", stopped.elapsed());
        eventually(super::super::ha::DEPLOY_DEADLINE, &format!("run {run}: rollout 2"), || {
            ready_with(&store, name, n)
        })
        .await
        .unwrap();
        // The zombie noticed (its term's work is over, or refused).
        eventually(Duration::from_secs(30), "the zombie to notice it lost", || {
            let log_path = log_path.clone();
            async move {
                let text = std::fs::read_to_string(&log_path).ok()?;
                text[resumed_from..].contains("leadership lost").then_some(())
            }
        })
        .await
        .unwrap();
        assert!(no_violations(&store, &cpi_dir).await, "run {run}: after the pause");

        // What the zombie got accepted after its successor's term began: nothing.
        let text = std::fs::read_to_string(&log_path).unwrap();
        let writes = committed_writes(&text);
        let fenced = writes.iter().filter(|(_, f)| f.is_some()).count();
        assert!(fenced > 0, "run {run}: the zombie's log records the writes it made while it led");
        let late_writes: Vec<String> = writes
            .into_iter()
            .filter_map(|(rev, fence)| {
                let (key, old) = fence?;
                let new = *new_terms.get(&key)?;
                (old < new && rev >= new).then(|| format!("{key}@{old} at revision {rev}"))
            })
            .collect();
        assert!(late_writes.is_empty(), "run {run}: etcd writes from an old term: {late_writes:?}");
        let audit = bosh_controllers::world::cpi::local::audit::read(&cpi_dir).unwrap();
        let mine: Vec<_> = audit.iter().filter(|e| e.pid == pid).collect();
        let late_calls: Vec<String> = mine
            .iter()
            .filter(|e| e.ok())
            .filter(|e| {
                let Some(f) = &e.fence else { return false };
                let new = new_terms.get(&f.key).copied().unwrap_or(i64::MAX);
                f.revision < new && e.etcd_revision.is_none_or(|rev| rev >= new)
            })
            .map(|e| format!("{} {:?}", e.method, e.vm_cid.as_ref().or(e.disk_cid.as_ref())))
            .collect();
        assert!(late_calls.is_empty(), "run {run}: CPI calls from an old term: {late_calls:?}");
        let tried = text[resumed_from..].matches("write refused: leadership").count();
        let refused: Vec<&str> = mine
            .iter()
            .filter(|e| e.at.is_some_and(|at| at >= t0))
            .filter_map(|e| e.error.as_deref())
            .filter(|m| m.contains("another director leads"))
            .collect();
        // Refused by the term check at admission (not the memory of fences).
        let by_term = refused.iter().filter(|m| m.contains("has ended")).count();
        eprintln!(
            "run {run}: after resuming, r{zombie} logged {tried} fenced-out etcd operation(s) \
             and was refused {} CPI call(s), {by_term} by the term check",
            refused.len()
        );
        refused_writes += tried;
        refused_calls += refused.len();
        refused_by_term += by_term;
    }
    let took = started.elapsed();
    let max = |v: &[Duration]| v.iter().max().copied().unwrap_or_default();
    for r in replicas.iter_mut().flatten() {
        kill(&mut r.0, libc::SIGTERM);
    }
    report(
        "A3",
        runs,
        seed,
        &format!(
            "2 replicas, {n} instances with disks, rollouts completed; SIGKILL/SIGSTOP at CPI \
             mutation {}; takeover ≤ {:.1?}, pauses ≤ {:.1?} (TTL 3 s); 0 CPI mutations and 0 \
             etcd writes accepted from an old term after the new one began (I5 and the zombie's \
             own records); after resuming the zombie logged {refused_writes} fenced-out etcd \
             operation(s) and was refused {refused_calls} CPI call(s) ({refused_by_term} by the \
             term check at admission); 0 violations (I1-I6); {took:.0?}",
            points.join(", "),
            max(&takeovers),
            max(&pauses),
        ),
    );
}
