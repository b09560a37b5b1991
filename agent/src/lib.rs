//! The agent that runs on every VM: it obeys boshd over NATS (BOSH's agent
//! protocol), installs packages and jobs, runs lifecycle scripts and drain,
//! compiles packages, supervises job processes the way monit does, and
//! reports heartbeats and alerts.
//!
//! Every path is BOSH's plain `/var/vcap/...`: the local CPI gives each VM
//! its own `/var/vcap` (a container's root filesystem, or a process VM's
//! private mount), so jobs and monit files of real releases run unchanged.
//!
//! # Layout
//!
//! - [`bus`]: NATS connection, request parsing, reply publishing.
//! - [`dispatch`]: method → handler, long methods as [`tasks`].
//! - [`apply`], [`compile`], [`scripts`], [`drain`], [`disks`], [`logs`]: the methods.
//! - [`ssh`]: users for `boshctl ssh` (only on VMs with their own root).
//! - [`supervise`]: monit-file parsing and process supervision.
//! - [`heartbeat`], [`vitals`]: what the health monitor hears.
//! - [`blobs`], [`archive`], [`exec`]: verified downloads, safe unpacking, running scripts.
//! - [`context`]: the agent's shared state; [`settings`]: settings and paths.

pub mod apply;
pub mod archive;
pub mod blobs;
pub mod bus;
pub mod compile;
pub mod context;
pub mod disks;
pub mod dispatch;
pub mod drain;
pub mod error;
pub mod exec;
pub mod heartbeat;
pub mod logs;
pub mod scripts;
pub mod settings;
pub mod ssh;
pub mod supervise;
pub mod tasks;
pub mod vitals;

use std::future::Future;
use std::path::Path;

pub use context::Agent;
pub use error::{Error, Result};

/// Runs the agent from its settings file until `shutdown` resolves. Job
/// processes are left running on shutdown: a restarted agent adopts them.
pub async fn run(settings_path: &Path, shutdown: impl Future<Output = ()>) -> Result<()> {
    let settings = settings::load(settings_path)?;
    tracing::info!(agent_id = %settings.agent_id, shares_host = settings.shares_host, "agent starting");
    let (agent, failures) = Agent::new(settings_path.to_path_buf(), settings)?;
    if let Err(e) = agent.resume().await {
        tracing::warn!(error = %e.chain(), "could not resume supervision");
    }
    let nats = bus::connect(&agent.settings).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let hb = tokio::spawn(heartbeat::run(agent.clone(), nats.clone(), failures, {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.changed().await;
        }
    }));
    let served = bus::serve(agent, nats.clone(), shutdown).await;
    let _ = stop_tx.send(true);
    let _ = hb.await;
    let _ = nats.flush().await;
    served
}
