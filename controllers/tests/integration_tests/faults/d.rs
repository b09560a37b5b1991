//! D. CPI and IaaS faults.

use bosh_controllers::failpoints::{self as fp, hits};
use rand::{Rng, SeedableRng};

use super::super::deploy::DeployHarness;
use super::{
    INSTANCES, arm, assert_invariants, converged, manifest, recreate, report, seed, world,
};

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
    let runs = super::iterations(3, 100) as u64;
    for n in 1..=runs {
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
    let took = started.elapsed();
    eprintln!("D1: {runs} iterations took {took:?}");
    report(
        "D1",
        runs as usize,
        seed,
        &format!("0 leaked VMs; one create_vm per instance per run; {took:.0?}"),
    );
    scenario.teardown();
    h.stop().await.unwrap();
}
