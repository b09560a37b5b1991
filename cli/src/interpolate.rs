//! `boshctl interpolate`.

/// Flags of `boshctl interpolate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The YAML file to interpolate (`-` for stdin).
    pub file: String,
}

/// Runs the command.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
