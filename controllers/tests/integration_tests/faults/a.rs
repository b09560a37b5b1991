//! A. Controller crashes and stale views.

use std::sync::Arc;

use bosh_api::agent::Method;
use bosh_api::objects::{DeploymentSpec, InstanceSpec};
use bosh_api::store::Fence;
use bosh_controllers::failpoints::{self as fp, hits};
use bosh_controllers::runtime::Ctx;
use bosh_controllers::testing::Harness;
use bosh_controllers::{compile, deployment, instance};
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
    let took = started.elapsed();
    eprintln!("A2 scenarios took {took:?}");
    report(
        "A2",
        1,
        seed,
        &format!("8 CPI failpoints + 3 status-write runs, each reached; 0 violations; {took:.0?}"),
    );
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
    let took = started.elapsed();
    eprintln!("A4: two rounds of reconciles took {took:?}");
    report("A4", 2, 0, &format!("0 CPI calls, 0 agent requests, 0 etcd writes; {took:.0?}"));
    h.stop().await.unwrap();
}
