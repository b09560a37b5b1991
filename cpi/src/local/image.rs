//! Stemcell images as the local CPI imports them.
//!
//! Two kinds exist while the local CPI moves from process VMs to
//! containers: the older agent-only image (a tar holding `bosh-agent`,
//! run as a process tree on the host) and the operating system image (a
//! Debian root filesystem with the agent at `/var/vcap/bosh/bin/bosh-agent`,
//! run as a runc container). The image's own content says which it is.
//!
//! A rootfs is unpacked once per image digest into an image cache shared
//! by every stemcell made from it (`<cache>/<sha256>/rootfs`), read-only
//! from then on: it is the lower layer of every VM's overlay, as an IaaS
//! keeps one copy of an image however many VMs boot from it. Unpacking
//! goes to a temporary directory renamed into place when complete, so a
//! crash never leaves a half image that looks ready.

use std::path::{Path, PathBuf};

/// Where the agent lives in an operating system image.
pub const AGENT_IN_ROOTFS: &str = "var/vcap/bosh/bin/bosh-agent";

/// What an image holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `bosh-agent` alone: a process VM.
    Agent,
    /// A root filesystem: a container VM.
    Rootfs,
}

/// Why an image cannot be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Reading or unpacking failed.
    #[error("{path}: {step}: {source}")]
    Io {
        /// What was being done.
        step: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The image is neither kind, or a rootfs misses what a VM needs.
    #[error("{path}: {message}")]
    Unusable {
        /// The image.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

fn io(step: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ImageError + use<> {
    let path = path.to_path_buf();
    move |source| ImageError::Io { step, path, source }
}

fn entries(
    image: &Path,
) -> Result<tar::Archive<flate2::read::GzDecoder<std::io::BufReader<std::fs::File>>>, ImageError> {
    let f = std::fs::File::open(image).map_err(io("opening the image", image))?;
    Ok(tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(f))))
}

/// Which kind `image` is, from its first entries: a top-level `bosh-agent`
/// is an agent image, top-level `etc`/`usr`/`bin` a root filesystem.
pub fn kind(image: &Path) -> Result<Kind, ImageError> {
    let mut a = entries(image)?;
    for e in a.entries().map_err(io("reading the image", image))?.take(64) {
        let e = e.map_err(io("reading the image", image))?;
        let p = e.path().map_err(io("reading the image", image))?;
        let p: PathBuf = p.components().filter(|c| c.as_os_str() != ".").collect();
        if p == Path::new("bosh-agent") {
            return Ok(Kind::Agent);
        }
        if ["etc", "usr", "bin"].iter().any(|d| p.starts_with(d)) {
            return Ok(Kind::Rootfs);
        }
    }
    Err(ImageError::Unusable {
        path: image.to_path_buf(),
        message: "is neither a root filesystem (no etc/, usr/ or bin/ at its top) nor an agent image (no bosh-agent)".into(),
    })
}

/// The sha256 (hex) of a file.
pub fn sha256(path: &Path) -> Result<String, ImageError> {
    bosh_api::release::file_digest_hex::<sha2::Sha256>(path).map_err(io("reading the image", path))
}

/// The unpacked rootfs of `image` in `cache`, unpacking it first when
/// absent. The result has a shell and an executable agent, or the image
/// is refused (and nothing of it is kept).
pub fn rootfs(image: &Path, cache: &Path) -> Result<PathBuf, ImageError> {
    let digest = sha256(image)?;
    let entry = cache.join(&digest);
    let dest = entry.join("rootfs");
    if dest.is_dir() {
        return Ok(dest);
    }
    std::fs::create_dir_all(&entry).map_err(io("creating the image cache", &entry))?;
    // One unpack per image at a time: the others wait and find it done.
    let lock_path = entry.join("lock");
    let lock =
        std::fs::File::create(&lock_path).map_err(io("locking the image cache", &lock_path))?;
    lock.lock().map_err(io("locking the image cache", &lock_path))?;
    if dest.is_dir() {
        return Ok(dest);
    }
    let tmp = tempfile::Builder::new()
        .prefix(".unpack-")
        .tempdir_in(&entry)
        .map_err(io("creating the image cache", &entry))?;
    let root = tmp.path().join("rootfs");
    std::fs::create_dir(&root).map_err(io("creating the image cache", &root))?;
    let mut a = entries(image)?;
    a.set_preserve_permissions(true);
    a.set_preserve_ownerships(true);
    a.set_preserve_mtime(true);
    a.set_unpack_xattrs(false);
    a.set_overwrite(true);
    for e in a.entries().map_err(io("reading the image", image))? {
        let mut e = e.map_err(io("reading the image", image))?;
        // Device nodes are skipped: a VM's /dev is its own tmpfs, filled
        // by the container runtime.
        let t = e.header().entry_type();
        if t.is_character_special() || t.is_block_special() || t.is_fifo() {
            continue;
        }
        // `unpack_in` refuses entries that would land outside `root`.
        e.unpack_in(&root).map_err(|e| {
            // tar's error names the entry; its cause is one level down.
            let cause = std::error::Error::source(&e).map(|c| format!(": {c}")).unwrap_or_default();
            io("unpacking the image", image)(std::io::Error::new(e.kind(), format!("{e}{cause}")))
        })?;
    }
    check_usable(image, &root)?;
    match std::fs::rename(&root, &dest) {
        Ok(()) => {}
        Err(_) if dest.is_dir() => {} // another import of the same image won
        Err(e) => return Err(io("moving the unpacked image into place", &dest)(e)),
    }
    Ok(dest)
}

/// A VM boots from `root` only if it has a shell (the init) and an
/// executable agent.
fn check_usable(image: &Path, root: &Path) -> Result<(), ImageError> {
    use std::os::unix::fs::PermissionsExt;
    let unusable = |message: String| ImageError::Unusable { path: image.to_path_buf(), message };
    // /bin/sh is usually a symlink into /usr (merged /usr): resolve it
    // inside the rootfs, not on the host.
    let sh = ["bin/sh", "usr/bin/sh"].iter().any(|p| {
        let p = root.join(p);
        std::fs::symlink_metadata(&p).is_ok()
    });
    if !sh {
        return Err(unusable("holds no /bin/sh: not a usable root filesystem".into()));
    }
    let agent = root.join(AGENT_IN_ROOTFS);
    match std::fs::metadata(&agent) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(()),
        Ok(_) => Err(unusable(format!("/{AGENT_IN_ROOTFS} is not an executable file"))),
        Err(_) => Err(unusable(format!("holds no agent at /{AGENT_IN_ROOTFS}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tgz(dir: &Path, out: &Path) {
        let f = std::fs::File::create(out).unwrap();
        let mut t =
            tar::Builder::new(flate2::write::GzEncoder::new(f, flate2::Compression::fast()));
        t.follow_symlinks(false);
        t.append_dir_all(".", dir).unwrap();
        t.into_inner().unwrap().finish().unwrap();
    }

    /// A rootfs image unpacks once into the cache; one without an agent or
    /// a shell is refused and leaves nothing behind.
    #[test]
    fn rootfs_images_are_checked_and_cached() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir_all(src.join("usr/bin")).unwrap();
        std::fs::create_dir_all(src.join("etc")).unwrap();
        std::fs::write(src.join("usr/bin/sh"), "").unwrap();
        std::os::unix::fs::symlink("usr/bin", src.join("bin")).unwrap();
        let image = tmp.path().join("no-agent.tgz");
        tgz(&src, &image);
        assert_eq!(kind(&image).unwrap(), Kind::Rootfs);
        let cache = tmp.path().join("cache");
        let err = rootfs(&image, &cache).unwrap_err().to_string();
        assert!(err.contains("holds no agent at /var/vcap/bosh/bin/bosh-agent"), "{err}");
        let digest = sha256(&image).unwrap();
        assert!(!cache.join(&digest).join("rootfs").exists());

        let agent = src.join(AGENT_IN_ROOTFS);
        std::fs::create_dir_all(agent.parent().unwrap()).unwrap();
        std::fs::write(&agent, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).unwrap();
        let image = tmp.path().join("ok.tgz");
        tgz(&src, &image);
        let root = rootfs(&image, &cache).unwrap();
        assert!(root.join(AGENT_IN_ROOTFS).is_file());
        assert!(std::fs::symlink_metadata(root.join("bin")).unwrap().file_type().is_symlink());
        assert_eq!(rootfs(&image, &cache).unwrap(), root, "a second import reuses the cache");
    }

    /// An image of neither kind is refused by name.
    #[test]
    fn an_image_of_neither_kind_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("README"), "hi").unwrap();
        let image = tmp.path().join("x.tgz");
        tgz(&src, &image);
        let err = kind(&image).unwrap_err().to_string();
        assert!(err.contains("neither a root filesystem"), "{err}");
    }
}
