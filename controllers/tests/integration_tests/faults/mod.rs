//! The fault matrix as a suite (docs/fault-matrix.md, issue 12): one
//! file per group of scenarios (`a.rs` controller crashes and stale views,
//! `d.rs` CPI faults, ...), each test named `faults_<id>_...`. Compiled only
//! with the `failpoints` feature; CI runs every scenario once with
//! `cargo nextest run -p bosh-controllers --features failpoints -E 'test(/^integration_tests::faults::/)'`,
//! and `hack/faults.sh` runs them with the matrix's iteration counts
//! (`FAULTS_FULL=1`) and collects their [`report`] lines.
//!
//! Each scenario ends (and most check after every step) with the invariant
//! checker, `bosh_controllers::testing::invariants`. Randomness comes from
//! one seed, logged (`seed N`) and taken from `FAULTS_SEED` when set, so a
//! failure can be replayed.

mod a;
mod b;
mod c;
mod d;
mod f7;
mod fg;

use std::time::Duration;

use bosh_api::meta::find_condition;
use bosh_api::objects::{ConditionType, InstancePhase};
use bosh_api::objects::{DeploymentSpec, DesiredState, InstanceOverride, InstanceSpec};
use bosh_api::{ConditionStatus, Object};
use bosh_controllers::failpoints::hits;
use bosh_controllers::reconcilers::instance;
use bosh_controllers::testing::{Harness, HarnessOptions, WebManifest};
use bosh_test_utils::eventually;

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
async fn world() -> (Harness, tempfile::TempDir) {
    world_with(HarnessOptions::new()).await
}

/// [`world`] with harness options of the scenario's own.
async fn world_with(options: HarnessOptions) -> (Harness, tempfile::TempDir) {
    let h = Harness::start(options).await.unwrap();
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
            let ready = find_condition(&d.status.conditions, ConditionType::Ready)?;
            let dep_ready = ready.status == ConditionStatus::True
                && ready.observed_revision == d.metadata.generation;
            let all = store.list::<InstanceSpec>(&format!("{name}/")).await.ok()?.items;
            let done = all.len() == INSTANCES
                && all.iter().all(|i| {
                    instance::is_converged(i) && i.status.phase == Some(InstancePhase::Running)
                });
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

/// How many iterations a scenario runs: `ci` normally (CI runs every
/// scenario at least once), the matrix's `full` count when `FAULTS_FULL=1`
/// (set by `hack/faults.sh`).
pub fn iterations(ci: usize, full: usize) -> usize {
    if std::env::var("FAULTS_FULL").is_ok_and(|v| v == "1") { full } else { ci }
}

/// Prints the line `hack/faults.sh` turns into a row of
/// `docs/faults-report.md`: the scenario id (`A2`), the iterations run, the
/// seed and the figures measured against the matrix's pass figure. Call it
/// once, after the scenario's assertions held (a failing test prints none,
/// and the script records the failure).
pub fn report(id: &str, iterations: usize, seed: u64, figures: &str) {
    println!("FAULT-REPORT|{id}|{iterations}|{seed}|{figures}");
}
