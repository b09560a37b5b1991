//! `bosh-agent`: runs on every VM, obeys boshd over NATS, supervises jobs.

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    tracing::info!("bosh-agent has no work to do until the agent issue lands");
    Ok(())
}
