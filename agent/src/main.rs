//! `bosh-agent --settings PATH`: runs on every VM, obeys boshd over NATS,
//! supervises jobs.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

/// The bosh-rs agent.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// The bootstrap settings file (written by the CPI).
    #[arg(long, env = "BOSH_AGENT_SETTINGS")]
    settings: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    // One thread is plenty for an agent and keeps a machine of local VMs light.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let shutdown = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            tracing::info!("shutting down");
        };
        bosh_agent::run(&args.settings, shutdown)
            .await
            .map_err(|e| anyhow::anyhow!(e.chain()))
            .with_context(|| format!("agent with settings {}", args.settings.display()))
    })
}
