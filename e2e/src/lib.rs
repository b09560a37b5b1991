//! Benchmarks of bosh-rs against real etcd, NATS, agents and boshd. Each
//! binary in `src/bin/` measures one area and prints every figure next to a
//! baseline measured in the same run; `BENCHMARKS.md` records the runs and
//! the commands that repeat them.
//!
//! The library holds only what several benchmarks share; the crate holds
//! no tests. End-to-end tests live
//! beside what they test: `controllers/tests/` runs the director against
//! real etcd, NATS and agents (the fault scenarios included), and
//! `cli/tests/` runs `boshctl` against a real API server.
//!
//! # Layout
//!
//! - `bench-foundation`: the store and the controller runtime.
//! - `bench-agents`: agent round trips, bootstrap and idle load (issue 4).
//! - `bench-releases`: `create-release`, upload and compile fan-out (issue 5).
//! - `bench-deploy`: converge time and steady state of a deployment (issue 6).
//! - `bench-resurrect`: resurrection latency and the health monitor (issue 7).
//! - `bench-api-latency`: API latency while a large deployment is planned
//!   (issue 12).
//! - `bench-validate`: manifest validation on fuzzed input (fault scenario F1).
//! - `bench-links`: re-render cost of a link change (issue 15).
//! - `bench-dns`: BOSH DNS answered from memory (issue 15).
//! - `bench-cpi`: the external CPI path against the in-process one (issue 16).

use std::time::Duration;

use bosh_api::objects::{TaskSpec, TaskState};
use bosh_api::store::Store;
use bosh_controllers::libs::tasks::task_name;

/// Logs to stderr at `RUST_LOG`'s levels (default `warn`), so that figures
/// on stdout stay clean.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

/// Waits up to `deadline` for task `id` to end; an end other than done is
/// an error carrying the task's result.
pub async fn task_done(store: &Store, id: u64, deadline: Duration) -> anyhow::Result<()> {
    let (state, result) =
        bosh_test_utils::eventually(deadline, &format!("task {id} to end"), || async move {
            let t: bosh_api::Object<TaskSpec> = store.get(None, &task_name(id)).await.ok()?;
            t.status.state.is_finished().then_some((t.status.state, t.status.result))
        })
        .await?;
    if state != TaskState::Done {
        anyhow::bail!("task {id} ended {state:?}: {result}");
    }
    Ok(())
}
