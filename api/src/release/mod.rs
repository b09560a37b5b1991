//! BOSH release engineering formats: the release directory, fingerprints,
//! job/package/license tarballs, `release.MF` and release tarballs.
//!
//! Everything here must agree byte-for-byte or digit-for-digit with what the
//! bosh CLI (v7) produces, because real release directories carry
//! `.final_builds` index files written by it: a fingerprint computed any
//! other way would make every existing final build look new. The algorithms
//! follow bosh-cli's `release/` and `releasedir/` packages; where the CLI's
//! behaviour is a quirk (a symlinked job template hashes with mode `100755`)
//! the quirk is kept and commented.
//!
//! Tarballs, unlike fingerprints, are ours: they are written
//! deterministically (sorted entries, zero mtimes and owners, normalized
//! modes), so the same sources give the same bytes and the same digests.
//!
//! # Layout
//!
//! - [`spec`]: job `spec`, package `spec` and `spec.lock`, validated with paths.
//! - [`fingerprint`]: which files enter a job's, package's or license's
//!   fingerprint, and the fingerprint itself.
//! - [`version`]: BOSH's semi-semantic versions (`0+dev.3`, `1.2-rc.1`).
//! - [`config`]: `config/final.yml`, `config/private.yml`, `config/blobs.yml`.
//! - [`index`]: `.dev_builds`/`.final_builds` and `dev_releases`/`releases` indexes.
//! - [`manifest`]: the `release.MF` format.
//! - [`build`]: building job, package and license tarballs from a directory.
//! - [`create`]: `create-release` and `finalize-release` on a release directory.
//! - [`archive`]: writing and reading (verifying) release tarballs.
//! - [`blobs`]: `add-blob`, `sync-blobs`, `upload-blobs`, the provider
//!   interface and the local blobstore provider.
//! - [`generate`]: `init-release`, `generate-job`, `generate-package`.
//! - [`stemcell`]: `stemcell.MF` and stemcell tarballs.

use std::path::{Path, PathBuf};

pub mod archive;
pub mod blobs;
pub mod build;
pub mod config;
pub mod create;
pub mod fingerprint;
pub mod generate;
pub mod index;
pub mod manifest;
pub mod spec;
pub mod stemcell;
mod tgz;
pub mod version;

pub use archive::{ReleaseArchive, read_release_tarball, write_release_tarball};
pub use create::{
    CreateOptions, CreatedRelease, create_release, create_release_with, finalize_release,
    finalize_release_with,
};
pub use manifest::ReleaseManifest;
pub use spec::{JobSpec, PackageSpec};
pub use tgz::Limits;

use crate::{manifest::ValidationErrors, yaml::YamlError};

/// A release directory, tarball or stemcell could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A YAML document is malformed.
    #[error(transparent)]
    Yaml(#[from] YamlError),
    /// A YAML document is well-formed but wrong; every problem is listed.
    #[error(transparent)]
    Invalid(#[from] ValidationErrors),
    /// One entry of a file is wrong: a digest mismatch, a missing package,
    /// a dependency cycle, a missing blob, an unsafe tarball entry.
    #[error("{file}: {entry}: {message}")]
    Entry {
        /// The file (release dir relative path, or tarball member).
        file: String,
        /// The entry within it (`jobs[web]`, `packages/app.tgz`, `../etc/passwd`).
        entry: String,
        /// What is wrong.
        message: String,
    },
    /// A tarball could not be unpacked (hostile or broken entry, caps) or written.
    #[error(transparent)]
    Archive(#[from] crate::archive::ArchiveError),
    /// The blobstore failed to store or fetch a blob (the source names the
    /// bucket or directory and the object id). Shown in the message, not
    /// as a source, so an error chain does not print it twice.
    #[error("{blob}: {error}")]
    Blobstore {
        /// The blob (`blobs/<path>`).
        blob: String,
        /// The provider's error.
        error: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A command run while building (`pre_packaging`, `git`) failed.
    #[error("{command} failed ({status}): {output}")]
    Command {
        /// What was run.
        command: String,
        /// Its exit status.
        status: String,
        /// Its combined output, trimmed.
        output: String,
    },
}

/// Results of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether the input (a release directory, tarball or flag) is at fault
    /// rather than the machine: what a CLI maps to its bad-input exit code.
    pub fn is_bad_input(&self) -> bool {
        match self {
            Error::Yaml(_) | Error::Invalid(_) | Error::Entry { .. } => true,
            Error::Archive(e) => e.refusal().is_some(),
            Error::Io { .. } | Error::Command { .. } | Error::Blobstore { .. } => false,
        }
    }

    /// An [`Error::Entry`].
    pub fn entry(
        file: impl Into<String>,
        entry: impl Into<String>,
        msg: impl Into<String>,
    ) -> Self {
        Error::Entry { file: file.into(), entry: entry.into(), message: msg.into() }
    }
}

/// Attaches a path to an I/O error.
pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

/// `sha256:<hex>` of a byte string: the digest format bosh-cli >= 5.5 writes.
pub fn sha256_digest(data: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// Hex digest of a file's contents, read in 1 MiB chunks.
pub(crate) fn hash_file<D: sha2::Digest>(path: &Path) -> Result<String> {
    file_digest_hex::<D>(path).map_err(io(path))
}

/// Hex digest (`D`: sha1, sha256, ...) of a file's contents, read in 1 MiB
/// chunks; for callers with error types of their own (stemcell images).
pub fn file_digest_hex<D: sha2::Digest>(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = D::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// `sha256:<hex>` of a file's contents, streamed.
pub fn file_digest(path: &Path) -> Result<String> {
    Ok(format!("sha256:{}", hash_file::<sha2::Sha256>(path)?))
}

/// Checks a file against a recorded digest: `sha256:<hex>`, or bare hex
/// sha1 as written by the Ruby CLI and bosh-cli < 5.5. Several digests
/// separated by `;` (bosh-utils' multiple digest) are checked by the strongest.
pub fn verify_digest(path: &Path, expected: &str) -> Result<Result<(), String>> {
    let pick = expected
        .split(';')
        .map(str::trim)
        .max_by_key(|d| if d.starts_with("sha256:") { 1 } else { 0 })
        .unwrap_or("");
    let actual = if pick.starts_with("sha256:") {
        file_digest(path)?
    } else {
        hash_file::<sha1::Sha1>(path)?
    };
    Ok(if actual == pick { Ok(()) } else { Err(format!("expected digest {pick}, found {actual}")) })
}
