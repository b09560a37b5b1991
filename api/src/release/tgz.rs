//! Glue between the release code and [`crate::archive`], which owns safe
//! unpacking and deterministic `.tgz` writing: error conversion, a
//! whole-directory packer, and a check-only pass over nested tarballs.

use std::path::{Component, Path};

pub use crate::archive::{Limits, TgzWriter};
use crate::archive::{read_tgz_member, unpack_tgz_file};

use super::{Result, io};

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

/// Checks every entry of a nested tarball as [`unpack`] would, keeping nothing.
pub(crate) fn scan(tgz: &Path, file: &str, limits: &Limits) -> Result<()> {
    let scratch = tempfile::tempdir().map_err(io(Path::new("temp dir")))?;
    unpack(tgz, &scratch.path().join("x"), file, limits)?;
    Ok(())
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
