//! Unpacking and packing the tgz archives the agent handles (packages,
//! rendered templates, compile results, log bundles).
//!
//! Every archive comes from the network, so unpacking refuses absolute
//! paths, `..`, links that point outside the target and archives over the
//! size and entry caps, before anything is written. Packing is
//! deterministic (sorted entries, zero mtimes and owners), so compiling the
//! same package twice uploads the same blob.
// TODO: switch to bosh_api::archive once it lands; keep this interface.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Component, Path, PathBuf};

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;

use crate::error::{BoxError, Error, Result};

/// Caps against decompression bombs.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most bytes all entries may unpack to.
    pub max_bytes: u64,
    /// Most entries.
    pub max_entries: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_bytes: 8 << 30, max_entries: 200_000 }
    }
}

fn refuse(name: &str, msg: String) -> Error {
    Error::Archive { name: name.to_string(), source: msg.into() }
}

/// Whether `p` is relative and stays inside its root lexically.
fn stays_inside(base: &Path, p: &Path) -> bool {
    let mut depth: i64 = base.components().count() as i64;
    for c in p.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

/// Unpacks the tgz at `src` into `dest` (created if missing), refusing
/// hostile entries. `name` says what the archive is, for errors.
pub fn unpack_tgz(src: &Path, dest: &Path, limits: &Limits, name: &str) -> Result<()> {
    std::fs::create_dir_all(dest).map_err(Error::io("create", dest))?;
    let f = File::open(src).map_err(Error::io("open", src))?;
    let mut ar = tar::Archive::new(GzDecoder::new(BufReader::new(f)));
    ar.set_preserve_permissions(true);
    ar.set_overwrite(true);
    let (mut bytes, mut count) = (0u64, 0u64);
    let entries =
        ar.entries().map_err(|e| Error::Archive { name: name.into(), source: e.into() })?;
    for entry in entries {
        let mut entry =
            entry.map_err(|e| Error::Archive { name: name.into(), source: e.into() })?;
        count += 1;
        if count > limits.max_entries {
            return Err(refuse(name, format!("more than {} entries", limits.max_entries)));
        }
        bytes = bytes.saturating_add(entry.header().size().unwrap_or(u64::MAX));
        if bytes > limits.max_bytes {
            return Err(refuse(name, format!("unpacks to more than {} bytes", limits.max_bytes)));
        }
        let path: PathBuf = entry
            .path()
            .map_err(|e| Error::Archive { name: name.into(), source: e.into() })?
            .into_owned();
        if !stays_inside(Path::new(""), &path) {
            return Err(refuse(name, format!("entry {} escapes the target", path.display())));
        }
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            let target = entry
                .link_name()
                .map_err(|e| Error::Archive { name: name.into(), source: e.into() })?
                .ok_or_else(|| refuse(name, format!("link {} has no target", path.display())))?
                .into_owned();
            let base = if kind.is_symlink() {
                path.parent().unwrap_or(Path::new("")).to_path_buf()
            } else {
                PathBuf::new()
            };
            if !stays_inside(&base, &target) {
                return Err(refuse(
                    name,
                    format!("link {} -> {} escapes the target", path.display(), target.display()),
                ));
            }
        }
        if !(kind.is_file() || kind.is_dir() || kind.is_symlink() || kind.is_hard_link()) {
            continue; // devices, fifos, pax headers: never created
        }
        let ok = entry
            .unpack_in(dest)
            .map_err(|e| Error::Archive { name: name.into(), source: e.into() })?;
        if !ok {
            return Err(refuse(name, format!("entry {} escapes the target", path.display())));
        }
    }
    Ok(())
}

/// Packs the contents of `dir` into a gzipped tar at `out`, with entries
/// sorted and times and owners zeroed so equal trees give equal bytes.
pub fn pack_dir(dir: &Path, out: &Path) -> Result<()> {
    let f = File::create(out).map_err(Error::io("create", out))?;
    let enc = GzEncoder::new(BufWriter::new(f), Compression::default());
    let mut b = tar::Builder::new(enc);
    b.mode(tar::HeaderMode::Deterministic);
    b.follow_symlinks(false);
    let wrap =
        |e: std::io::Error| Error::Archive { name: out.display().to_string(), source: e.into() };
    add_dir(&mut b, dir, Path::new("")).map_err(wrap)?;
    let enc = b.into_inner().map_err(wrap)?;
    let w = enc.finish().map_err(wrap)?;
    w.into_inner().map_err(|e| wrap(e.into_error()))?.sync_all().map_err(wrap)?;
    Ok(())
}

fn add_dir<W: std::io::Write>(
    b: &mut tar::Builder<W>,
    abs: &Path,
    rel: &Path,
) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(abs)?.collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let (a, r) = (e.path(), rel.join(e.file_name()));
        let ft = e.file_type()?;
        b.append_path_with_name(&a, &r)?;
        if ft.is_dir() {
            add_dir(b, &a, &r)?;
        }
    }
    Ok(())
}

/// Wraps any error as a [`BoxError`].
pub fn boxed(e: impl std::error::Error + Send + Sync + 'static) -> BoxError {
    Box::new(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tgz_with(dir: &Path, build: impl FnOnce(&mut tar::Builder<GzEncoder<File>>)) -> PathBuf {
        let p = dir.join("x.tgz");
        let mut b =
            tar::Builder::new(GzEncoder::new(File::create(&p).unwrap(), Compression::fast()));
        build(&mut b);
        b.into_inner().unwrap().finish().unwrap();
        p
    }

    /// Packing the same tree twice gives identical bytes, and it unpacks to the same files.
    #[test]
    fn packing_is_deterministic_and_round_trips() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::create_dir_all(src.join("bin")).unwrap();
        std::fs::write(src.join("bin/run"), "#!/bin/sh\n").unwrap();
        std::fs::write(src.join("a.txt"), "a").unwrap();
        pack_dir(&src, &d.path().join("1.tgz")).unwrap();
        pack_dir(&src, &d.path().join("2.tgz")).unwrap();
        let (a, b) = (
            std::fs::read(d.path().join("1.tgz")).unwrap(),
            std::fs::read(d.path().join("2.tgz")).unwrap(),
        );
        assert_eq!(a, b);
        unpack_tgz(&d.path().join("1.tgz"), &d.path().join("out"), &Limits::default(), "t")
            .unwrap();
        assert_eq!(std::fs::read_to_string(d.path().join("out/bin/run")).unwrap(), "#!/bin/sh\n");
    }

    /// A symlink pointing out of the target is refused and nothing is created through it.
    #[test]
    fn escaping_symlink_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = tgz_with(d.path(), |b| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, "evil", "../../etc").unwrap();
        });
        let err = unpack_tgz(&p, &d.path().join("out"), &Limits::default(), "t").unwrap_err();
        assert!(err.chain().contains("escapes"), "{}", err.chain());
    }

    /// An archive bigger than the byte cap is refused.
    #[test]
    fn bomb_over_the_byte_cap_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = tgz_with(d.path(), |b| {
            let data = vec![0u8; 4096];
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, "big", &data[..]).unwrap();
        });
        let limits = Limits { max_bytes: 1024, max_entries: 10 };
        let err = unpack_tgz(&p, &d.path().join("out"), &limits, "t").unwrap_err();
        assert!(err.chain().contains("more than 1024 bytes"), "{}", err.chain());
    }
}
