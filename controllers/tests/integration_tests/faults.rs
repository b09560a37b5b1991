//! The fault matrix as a suite (FAULT-MATRIX.md, issue 12), first slice:
//! A2 (a panic after every CPI call and before status writes), A4 (a
//! converged system reconciled twice is silent) and D1 (a lost `create_vm`
//! reply is adopted by request id). Compiled only with the `failpoints`
//! feature; CI runs them with
//! `cargo nextest run -p bosh-controllers --features failpoints -E 'test(/^integration_tests::faults::/)'`.
//!
//! Each scenario ends (and A2 and D1 check after every step) with the
//! invariant checker, `bosh_controllers::testing::invariants`. Randomness
//! comes from one seed, logged (`seed N`) and taken from `FAULTS_SEED` when
//! set, so a failure can be replayed.

use std::sync::Arc;
use std::time::Duration;

use bosh_api::agent::Method;
use bosh_api::meta::find_condition;
use bosh_api::objects::{DeploymentSpec, DesiredState, InstanceOverride, InstanceSpec};
use bosh_api::store::Fence;
use bosh_api::{ConditionStatus, Object};
use bosh_controllers::deployment::READY;
use bosh_controllers::failpoints::{self as fp, hits};
use bosh_controllers::runtime::Ctx;
use bosh_controllers::testing::{Harness, HarnessOptions, WebManifest};
use bosh_controllers::{compile, deployment, instance};
use bosh_test_utils::eventually;
use rand::{Rng, SeedableRng};

use super::compile::example_release;
use super::deploy::DeployHarness;

/// Compiling, creating VMs and starting jobs on a loaded machine.
const CONVERGE: Duration = Duration::from_secs(180);

/// Two instances with a 64 MiB persistent disk, which every scenario deploys.
const INSTANCES: usize = 2;

fn manifest(name: &str) -> serde_json::Value {
    WebManifest { persistent_disk_mb: 64, ..WebManifest::hello(name, INSTANCES as u32) }.value()
}

/// The scenario's seed: `FAULTS_SEED`, or a random one; logged either way.
fn seed() -> u64 {
    let seed = std::env::var("FAULTS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("seed {seed}");
    seed
}

/// A world with the example release and the agent stemcell uploaded.
async fn world(subnet: u8) -> (Harness, tempfile::TempDir) {
    let h = Harness::start(HarnessOptions::new(subnet)).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    h.upload_release(&example_release(tmp.path())).await.unwrap();
    h.upload_stemcell().await.unwrap();
    (h, tmp)
}

/// Waits until deployment `name` is Ready at its generation and each of its
/// instances is converged on its spec and running. Task outcomes are not
/// looked at: an injected failure may fail a task whose retry then succeeds.
async fn converged(h: &Harness, name: &str, what: &str) {
    let store = h.store.clone();
    eventually(CONVERGE, &format!("{name} to converge ({what})"), || {
        let store = store.clone();
        async move {
            let d: Object<DeploymentSpec> = store.get(None, name).await.ok()?;
            let ready = find_condition(&d.status.conditions, READY)?;
            let dep_ready = ready.status == ConditionStatus::True
                && ready.observed_revision == d.metadata.generation;
            let all = store.list::<InstanceSpec>(&format!("{name}/")).await.ok()?.items;
            let done = all.len() == INSTANCES
                && all.iter().all(|i| instance::is_converged(i) && i.status.phase == "running");
            (dep_ready && done).then_some(())
        }
    })
    .await
    .unwrap();
}

/// Fails the test with every invariant violation, if any.
async fn assert_invariants(h: &Harness, when: &str) {
    let v = h.violations().await.unwrap();
    let list: Vec<String> = v.iter().map(ToString::to_string).collect();
    assert!(v.is_empty(), "{when}: {} violation(s):\n{}", v.len(), list.join("\n"));
}

/// Recreates every instance of `name` (`recreate` must grow each time).
async fn recreate(h: &Harness, name: &str, recreate: u64) {
    h.apply_with(name, |s| {
        let ov =
            InstanceOverride { state: Some(DesiredState::Started), recreate, ..Default::default() };
        s.instances.insert("web".into(), ov);
    })
    .await;
}

/// Arms `name` with `actions` and returns its hit count so far.
fn arm(name: &str, actions: &str) -> u64 {
    fail::cfg(name, actions).unwrap();
    hits(name)
}

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
    let (h, _tmp) = world(90).await;
    let started = std::time::Instant::now();

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
    eprintln!("A2 scenarios took {:?}", started.elapsed());
    scenario.teardown();
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
    let (h, _tmp) = world(91).await;
    h.apply("a4", manifest("a4")).await;
    converged(&h, "a4", "deploy").await;
    // The health monitor's first verdicts are writes; wait for them.
    let store = h.store.clone();
    eventually(CONVERGE, "every instance observed running", || {
        let store = store.clone();
        async move {
            let all = store.list::<InstanceSpec>("a4/").await.ok()?.items;
            all.iter().all(|i| i.status.health == "running").then_some(())
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
    eprintln!("A4: two rounds of reconciles took {:?}", started.elapsed());
    h.stop().await.unwrap();
}

/// D1: `create_vm` takes effect but its reply is lost (a failpoint returns
/// an error right after the call); the next reconcile adopts the VM by its
/// request id instead of making another, so each recreate makes exactly
/// one VM per instance and none leaks (I1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_d1_a_lost_create_vm_reply_is_adopted_by_request_id() {
    let seed = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let scenario = fail::FailScenario::setup();
    let (h, _tmp) = world(92).await;
    h.apply("d1", manifest("d1")).await;
    converged(&h, "d1", "deploy").await;
    let started = std::time::Instant::now();
    for n in 1..=3u64 {
        // Which of this recreate's creates loses its reply.
        let k = rng.random_range(0..INSTANCES as u64);
        eprintln!("iteration {n}: create {k} loses its reply");
        let b = arm(fp::CPI_AFTER_CREATE_VM, &format!("{k}*off->1*return->off"));
        let made = h.cpi.created.lock().unwrap().len();
        recreate(&h, "d1", n).await;
        converged(&h, "d1", &format!("iteration {n}")).await;
        assert!(hits(fp::CPI_AFTER_CREATE_VM) > b + k, "create {k} was never reached");
        fail::remove(fp::CPI_AFTER_CREATE_VM);
        let creates = h.cpi.created.lock().unwrap().len() - made;
        assert_eq!(
            creates, INSTANCES,
            "iteration {n}: one create_vm per instance (adopted, not redone)"
        );
        let inv = bosh_controllers::cpi::local::LocalCpi::inventory(&h.cpi_root()).unwrap();
        assert_eq!(inv.vms.len(), INSTANCES, "iteration {n}: VMs {:?}", inv.vms.keys());
        assert_invariants(&h, &format!("iteration {n}")).await;
    }
    eprintln!("D1: 3 iterations took {:?}", started.elapsed());
    scenario.teardown();
    h.stop().await.unwrap();
}
