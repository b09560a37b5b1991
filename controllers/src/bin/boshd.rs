//! boshd: the bosh-rs director. Runs the controllers against etcd.

use std::time::Duration;

use anyhow::Context;
use bosh_api::store::Store;
use bosh_controllers::daemon::{self, Options};
use bosh_controllers::runtime::ElectionConfig;
use clap::Parser;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// The bosh-rs director.
#[derive(Debug, Parser)]
#[command(name = "boshd", version, about)]
struct Args {
    /// etcd endpoints, comma-separated (`host:port`).
    #[arg(long, env = "BOSH_ETCD", value_delimiter = ',', required = true)]
    etcd: Vec<String>,
    /// Key prefix of every object in etcd.
    #[arg(long, env = "BOSH_ROOT", default_value = "/bosh")]
    root: String,
    /// NATS URL for the agents' bus (used once agents land).
    #[arg(long, env = "BOSH_NATS")]
    nats: Option<String>,
    /// This replica's name in leader election (default: random).
    #[arg(long, env = "BOSH_REPLICA")]
    replica: Option<String>,
    /// Leader lease TTL in seconds: a dead replica is replaced within this.
    #[arg(long, default_value_t = 15)]
    lease_ttl_secs: u64,
    /// Concurrent reconciles per controller.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Seconds between full resyncs of every object.
    #[arg(long, default_value_t = 300)]
    resync_secs: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let store = Store::connect(&args.etcd, &args.root)
        .await
        .with_context(|| format!("connecting to etcd at {}", args.etcd.join(",")))?;
    let mut election = ElectionConfig {
        ttl: Duration::from_secs(args.lease_ttl_secs),
        ..ElectionConfig::default()
    };
    if let Some(r) = args.replica {
        election.holder = r;
    }
    info!(etcd = %args.etcd.join(","), root = %args.root, replica = %election.holder, "boshd starting");
    let shutdown = CancellationToken::new();
    let signals = shutdown.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        info!("shutting down");
        signals.cancel();
    });
    let opts =
        Options { workers: args.workers, resync: Duration::from_secs(args.resync_secs), election };
    daemon::run(store, opts, shutdown).await;
    info!("boshd stopped");
    Ok(())
}
