//! The local CPI's stemcell: a BOSH stemcell tarball (`stemcell.MF` +
//! `image`) whose image is a gzipped tar holding the `bosh-agent` binary.
//! Both `boshctl build-local-stemcell` and the local CPI use these
//! definitions, so the format is written down once.

pub mod rootfs;

use std::path::Path;

use crate::archive::{ArchiveError, TgzWriter};

/// The stemcell format the local CPI accepts.
pub const FORMAT: &str = "bosh-rs-local";

/// The agent binary's name inside the image.
pub const AGENT_BINARY: &str = "bosh-agent";

/// Writes a local stemcell image holding `agent_binary`.
pub fn build_image(agent_binary: &Path, dest: &Path) -> Result<(), ArchiveError> {
    let mut w = TgzWriter::new();
    w.file(AGENT_BINARY, agent_binary)?;
    w.write_to_path(dest)
}
