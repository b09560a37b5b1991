//! Glue between the release code and [`crate::archive`], which owns safe
//! unpacking and deterministic `.tgz` writing: error conversion, a
//! whole-directory packer, and the per-upload budget that a tarball and the
//! tarballs checked inside it share.

use std::path::{Component, Path};

use crate::archive::{ArchiveError, Refusal, read_tgz_member, unpack_tgz_file};
pub use crate::archive::{Limits, TgzWriter};

use super::{Error, Result, io};

/// Packs everything under `dir` (not `dir` itself) into `dest`, deterministically.
pub(crate) fn pack_dir(dir: &Path, dest: &Path) -> Result<()> {
    let mut w = TgzWriter::new();
    w.add_dir_contents(dir)?;
    Ok(w.write_to_path(dest)?)
}

/// Unpacks `tgz` into `dest` (absent or an empty directory), refusing
/// unsafe entries; `file` names the archive in errors. Returns the member names.
pub(crate) fn unpack(tgz: &Path, dest: &Path, file: &str, limits: &Limits) -> Result<Vec<String>> {
    let names = unpack_tgz_file(tgz, dest, limits, file)?;
    Ok(names.into_iter().map(|p| p.to_string_lossy().into_owned()).collect())
}

/// One upload's caps, spent across the outer tarball and every tarball
/// checked inside it. Without this each nested job or package tarball would
/// get the whole allowance again, and a small release holding many small
/// bombs would decompress many times the cap.
pub(crate) struct Budget {
    /// The caps for the whole upload, as configured.
    limits: Limits,
    /// Bytes unpacked so far.
    bytes: u64,
    /// Entries unpacked so far.
    entries: u64,
}

impl Budget {
    /// A fresh budget of `limits`.
    pub(crate) fn new(limits: &Limits) -> Budget {
        Budget { limits: *limits, bytes: 0, entries: 0 }
    }

    /// What is left, as caps for the next archive.
    fn remaining(&self) -> Limits {
        Limits {
            max_total_bytes: self.limits.max_total_bytes.saturating_sub(self.bytes),
            max_entry_bytes: self.limits.max_entry_bytes,
            max_entries: self.limits.max_entries.saturating_sub(self.entries),
        }
    }

    /// [`unpack`] within what is left, then counts what it wrote.
    pub(crate) fn unpack(&mut self, tgz: &Path, dest: &Path, file: &str) -> Result<Vec<String>> {
        let names = unpack(tgz, dest, file, &self.remaining()).map_err(|e| self.restate(e))?;
        self.entries += names.len() as u64;
        for n in &names {
            let meta = std::fs::symlink_metadata(dest.join(n)).map_err(io(&dest.join(n)))?;
            if meta.is_file() {
                self.bytes += meta.len();
            }
        }
        Ok(names)
    }

    /// Checks every entry of a nested tarball as [`unpack`] would, within
    /// what is left, keeping nothing but the count.
    pub(crate) fn scan(&mut self, tgz: &Path, file: &str) -> Result<()> {
        let scratch = tempfile::tempdir().map_err(io(Path::new("temp dir")))?;
        self.unpack(tgz, &scratch.path().join("x"), file)?;
        Ok(())
    }

    /// A cap tripped by what was left is reported as the configured cap,
    /// which is the number the user can change.
    fn restate(&self, e: Error) -> Error {
        match e {
            Error::Archive(ArchiveError::Refused { archive, entry, reason }) => {
                let reason = match reason {
                    Refusal::TotalTooLarge { .. } => {
                        Refusal::TotalTooLarge { limit: self.limits.max_total_bytes }
                    }
                    Refusal::TooManyEntries { .. } => {
                        Refusal::TooManyEntries { limit: self.limits.max_entries }
                    }
                    other => other,
                };
                Error::Archive(ArchiveError::Refused { archive, entry, reason })
            }
            other => other,
        }
    }
}

/// Reads one member's contents (at most `max` bytes) without unpacking the rest.
pub(crate) fn read_member(
    tgz: &Path,
    member: &str,
    max: u64,
    file: &str,
) -> Result<Option<Vec<u8>>> {
    let f = std::fs::File::open(tgz).map_err(io(tgz))?;
    Ok(read_tgz_member(f, member, max, file)?)
}

/// Whether a `/`-separated relative path stays inside its root: not empty,
/// not absolute, no `..` (a leading `./` is fine).
pub(crate) fn is_safe_relative(p: &str) -> bool {
    let path = Path::new(p);
    !p.is_empty()
        && path.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        && path.components().any(|c| matches!(c, Component::Normal(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Relative paths may not climb out or start at the root.
    #[test]
    fn safe_relative_paths_stay_inside() {
        assert!(is_safe_relative("./a/b"));
        assert!(!is_safe_relative("a/../../b"));
        assert!(!is_safe_relative("/a"));
        assert!(!is_safe_relative("."));
    }
}
