//! The agent's use of [`bosh_api::archive`]: unpacking packages, rendered
//! templates and sources (refusing hostile entries and bombs, all or
//! nothing), and deterministic packing of compile results and log bundles,
//! so compiling the same package twice uploads the same blob.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

pub use bosh_api::archive::Limits;

use crate::error::{Error, Result};

/// Unpacks the tgz at `src` into `dest` (which must not exist yet).
/// `name` says what the archive is, for errors.
pub fn unpack_tgz(src: &Path, dest: &Path, limits: &Limits, name: &str) -> Result<()> {
    bosh_api::archive::unpack_tgz_file(src, dest, limits, name)
        .map(|_| ())
        .map_err(|e| Error::Archive { name: name.to_string(), source: Box::new(e) })
}

/// Packs the contents of `dir` into a deterministic tgz at `out`.
pub fn pack_dir(dir: &Path, out: &Path) -> Result<()> {
    let f = File::create(out).map_err(Error::io("create", out))?;
    let w = bosh_api::archive::write_tgz_from_dir(dir, BufWriter::new(f))
        .map_err(|e| Error::Archive { name: out.display().to_string(), source: Box::new(e) })?;
    let f = w.into_inner().map_err(|e| Error::io("write", out)(e.into_error()))?;
    f.sync_all().map_err(Error::io("sync", out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

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
        let read = |n: &str| std::fs::read(d.path().join(n)).unwrap();
        assert_eq!(read("1.tgz"), read("2.tgz"));
        let out = d.path().join("out");
        unpack_tgz(&d.path().join("1.tgz"), &out, &Limits::default(), "t").unwrap();
        assert_eq!(std::fs::read_to_string(out.join("bin/run")).unwrap(), "#!/bin/sh\n");
    }

    /// A refusal keeps the archive's name and the reason in the message.
    #[test]
    fn refusal_names_the_archive_and_reason() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.tgz");
        let f = flate2::write::GzEncoder::new(File::create(&p).unwrap(), Default::default());
        let mut b = tar::Builder::new(f);
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "evil", "../../etc").unwrap();
        b.into_inner().unwrap().finish().unwrap().flush().unwrap();
        let err =
            unpack_tgz(&p, &d.path().join("out"), &Limits::default(), "package x").unwrap_err();
        let msg = err.chain();
        assert!(msg.contains("package x") && msg.contains("escapes"), "{msg}");
        assert!(!d.path().join("out").exists());
    }
}
