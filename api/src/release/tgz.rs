//! Deterministic `.tgz` writing and capped, path-safe unpacking.
//!
//! Private stand-in until the shared `crate::archive` module lands; the
//! release code only calls [`TgzWriter`], [`pack_dir`], [`unpack`] and
//! [`read_member`], so switching is local to this file.
//!
//! Determinism: entries sorted by path, mtime 0, uid/gid 0, no user names,
//! modes normalized (0755 for directories and executables, 0644 otherwise),
//! gzip header mtime 0. Safety: no absolute paths, no `..`, no duplicate
//! entries, no links that leave the tree, no devices, and caps on entries
//! and unpacked bytes so a decompression bomb stops early.

use std::{
    collections::BTreeSet,
    io::{Read, Write},
    os::unix::fs::PermissionsExt,
    path::{Component, Path, PathBuf},
};

use super::{Error, Result, io};

/// Caps applied while unpacking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes all entries together may unpack to.
    pub max_total_bytes: u64,
    /// Most bytes a single entry may unpack to.
    pub max_entry_bytes: u64,
    /// Most entries.
    pub max_entries: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_total_bytes: 8 << 30, max_entry_bytes: 8 << 30, max_entries: 100_000 }
    }
}

enum Source {
    Dir,
    File(PathBuf),
    Bytes(Vec<u8>),
    Symlink(PathBuf),
}

/// Collects entries, then writes them sorted by path.
#[derive(Default)]
pub struct TgzWriter {
    entries: Vec<(String, Source, u32)>,
}

impl TgzWriter {
    /// Adds a directory.
    pub fn dir(&mut self, name: &str) {
        self.entries.push((name.trim_end_matches('/').to_string(), Source::Dir, 0o755));
    }

    /// Adds a file copied from `src`, executable if `src`'s owner-exec bit is set.
    pub fn file(&mut self, name: &str, src: &Path) -> Result<()> {
        let meta = std::fs::metadata(src).map_err(io(src))?;
        let mode = if meta.permissions().mode() & 0o100 != 0 { 0o755 } else { 0o644 };
        self.entries.push((name.to_string(), Source::File(src.to_path_buf()), mode));
        Ok(())
    }

    /// Adds a file with the given contents.
    pub fn bytes(&mut self, name: &str, data: Vec<u8>, executable: bool) {
        let mode = if executable { 0o755 } else { 0o644 };
        self.entries.push((name.to_string(), Source::Bytes(data), mode));
    }

    /// Adds a symbolic link.
    pub fn symlink(&mut self, name: &str, target: &Path) {
        self.entries.push((name.to_string(), Source::Symlink(target.to_path_buf()), 0o777));
    }

    /// Writes the archive to `dest`.
    pub fn write(mut self, dest: &Path) -> Result<()> {
        self.entries.sort_by(|a, b| a.0.cmp(&b.0));
        let out = std::fs::File::create(dest).map_err(io(dest))?;
        let gz = flate2::GzBuilder::new()
            .mtime(0)
            .operating_system(255)
            .write(std::io::BufWriter::new(out), flate2::Compression::default());
        let mut tar = tar::Builder::new(gz);
        tar.mode(tar::HeaderMode::Deterministic);
        for (name, source, mode) in self.entries {
            let mut h = tar::Header::new_gnu();
            h.set_mtime(0);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mode(mode);
            let res = match source {
                Source::Dir => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    tar.append_data(&mut h, format!("{name}/"), std::io::empty())
                }
                Source::Bytes(data) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(data.len() as u64);
                    tar.append_data(&mut h, &name, data.as_slice())
                }
                Source::File(src) => {
                    let f = std::fs::File::open(&src).map_err(io(&src))?;
                    let len = f.metadata().map_err(io(&src))?.len();
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(len);
                    tar.append_data(&mut h, &name, f.take(len))
                }
                Source::Symlink(target) => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    tar.append_link(&mut h, &name, &target)
                }
            };
            res.map_err(io(dest))?;
        }
        let gz = tar.into_inner().map_err(io(dest))?;
        let mut w = gz.finish().map_err(io(dest))?;
        w.flush().map_err(io(dest))
    }
}

/// Packs everything under `dir` (not `dir` itself) into `dest`, deterministically.
pub fn pack_dir(dir: &Path, dest: &Path) -> Result<()> {
    let mut w = TgzWriter::default();
    for entry in walkdir::WalkDir::new(dir).min_depth(1).sort_by_file_name() {
        let entry = entry.map_err(|e| Error::Io {
            path: e.path().unwrap_or(dir).to_path_buf(),
            source: e.into_io_error().unwrap_or_else(|| std::io::Error::other("walk failed")),
        })?;
        let rel = entry.path().strip_prefix(dir).expect("under dir").to_string_lossy().into_owned();
        let ft = entry.file_type();
        if ft.is_symlink() {
            let target = std::fs::read_link(entry.path()).map_err(io(entry.path()))?;
            w.symlink(&rel, &target);
        } else if ft.is_dir() {
            w.dir(&rel);
        } else {
            w.file(&rel, entry.path())?;
        }
    }
    w.write(dest)
}

/// Whether a `/`-separated relative path stays inside its root: not empty,
/// not absolute, no `..` (a leading `./` is fine).
pub fn is_safe_relative(p: &str) -> bool {
    let path = Path::new(p);
    !p.is_empty()
        && path.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        && path.components().any(|c| matches!(c, Component::Normal(_)))
}

/// The normalized form of a member name (`./a//b/` → `a/b`).
fn normalize(p: &Path) -> String {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Whether a link at `name` pointing to `target` stays inside the tree.
fn link_stays_inside(name: &str, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut depth: i64 = name.split('/').count() as i64 - 1;
    for c in target.components() {
        match c {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            _ => return false,
        }
        if depth < 0 {
            return false;
        }
    }
    true
}

/// Unpacks `tgz` into `dest` (which must exist), refusing unsafe entries.
/// `file` names the archive in errors. Returns the normalized member names.
pub fn unpack(tgz: &Path, dest: &Path, file: &str, limits: &Limits) -> Result<Vec<String>> {
    walk(tgz, Some(dest), file, limits)
}

/// Checks every entry of `tgz` as [`unpack`] would, writing nothing.
pub fn scan(tgz: &Path, file: &str, limits: &Limits) -> Result<Vec<String>> {
    walk(tgz, None, file, limits)
}

fn walk(tgz: &Path, dest: Option<&Path>, file: &str, limits: &Limits) -> Result<Vec<String>> {
    let f = std::fs::File::open(tgz).map_err(io(tgz))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(f)));
    let mut seen = BTreeSet::new();
    let mut names = Vec::new();
    let (mut bytes, mut count) = (0u64, 0u64);
    let bad = |entry: &str, msg: &str| Error::entry(file, entry, msg);
    for entry in archive.entries().map_err(io(tgz))? {
        let mut entry = entry.map_err(|e| bad("", &format!("not a valid tar.gz: {e}")))?;
        let raw = entry.path().map_err(io(tgz))?.to_string_lossy().into_owned();
        count += 1;
        if count > limits.max_entries {
            return Err(bad(&raw, &format!("more than {} entries", limits.max_entries)));
        }
        if !is_safe_relative(&raw) {
            let only_dot = Path::new(&raw).components().all(|c| c == Component::CurDir);
            if only_dot && entry.header().entry_type().is_dir() {
                continue; // the `./` entry `tar -C dir .` writes (bosh-cli's tarballs have it)
            }
            return Err(bad(&raw, "path is absolute or leaves the archive (..)"));
        }
        let name = normalize(Path::new(&raw));
        if !seen.insert(name.clone()) {
            return Err(bad(&raw, "duplicate entry"));
        }
        let size = entry.header().size().map_err(io(tgz))?;
        if size > limits.max_entry_bytes {
            return Err(bad(
                &raw,
                &format!("entry is larger than {} bytes", limits.max_entry_bytes),
            ));
        }
        bytes = bytes.saturating_add(size);
        if bytes > limits.max_total_bytes {
            let max = limits.max_total_bytes;
            return Err(bad(&raw, &format!("archive unpacks to more than {max} bytes")));
        }
        let out = dest.map(|d| d.join(&name));
        if let Some(parent) = out.as_ref().and_then(|o| o.parent()) {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let mode = entry.header().mode().unwrap_or(0o644) & 0o777;
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                if let Some(out) = &out {
                    std::fs::create_dir_all(out).map_err(io(out))?;
                }
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => match &out {
                Some(out) => {
                    let mut w = std::fs::File::create(out).map_err(io(out))?;
                    std::io::copy(&mut (&mut entry).take(size), &mut w).map_err(io(out))?;
                    let m = if mode & 0o100 != 0 { 0o755 } else { 0o644 };
                    std::fs::set_permissions(out, std::fs::Permissions::from_mode(m))
                        .map_err(io(out))?;
                }
                None => {
                    std::io::copy(&mut (&mut entry).take(size), &mut std::io::sink())
                        .map_err(|e| bad(&raw, &format!("not a valid tar.gz: {e}")))?;
                }
            },
            tar::EntryType::Symlink => {
                let target = entry.link_name().map_err(io(tgz))?.unwrap_or_default().into_owned();
                if !link_stays_inside(&name, &target) {
                    let t = target.display();
                    return Err(bad(&raw, &format!("symlink to '{t}' leaves the archive")));
                }
                if let Some(out) = &out {
                    std::os::unix::fs::symlink(&target, out).map_err(io(out))?;
                }
            }
            other => {
                return Err(bad(&raw, &format!("unsupported entry type {other:?}")));
            }
        }
        names.push(name);
    }
    Ok(names)
}

/// Reads one member's contents (at most `max` bytes) without unpacking the rest.
pub fn read_member(tgz: &Path, member: &str, max: u64) -> Result<Option<Vec<u8>>> {
    let f = std::fs::File::open(tgz).map_err(io(tgz))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(f)));
    for entry in archive.entries().map_err(io(tgz))? {
        let entry = entry.map_err(io(tgz))?;
        let name = normalize(&entry.path().map_err(io(tgz))?);
        if name == member {
            let mut buf = Vec::new();
            entry.take(max).read_to_end(&mut buf).map_err(io(tgz))?;
            return Ok(Some(buf));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Links may point within the tree, never out of it or to absolute paths.
    #[test]
    fn symlink_targets_must_stay_inside() {
        assert!(link_stays_inside("a/b", Path::new("../c")));
        assert!(!link_stays_inside("a/b", Path::new("../../c")));
        assert!(!link_stays_inside("a", Path::new("/etc/passwd")));
        assert!(is_safe_relative("./a/b"));
        assert!(!is_safe_relative("a/../../b"));
        assert!(!is_safe_relative("/a"));
    }
}
