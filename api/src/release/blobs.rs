//! Release blobs (`blobs/` tracked by `config/blobs.yml`) and the `local`
//! blobstore provider (`blobstore: {provider: local, options: {blobstore_path}}`).
//!
//! Only the local provider is implemented: it is what examples and tests
//! use, and it needs no credentials. Other providers are refused with a
//! clear error rather than silently skipped, because a create-release that
//! cannot fetch a blob would otherwise build a release missing files.

use std::path::{Path, PathBuf};

use super::{
    Error, Result,
    config::{BlobEntry, BlobsIndex, FinalConfig, read_blobs, write_blobs},
    io,
};

/// A blobstore in a local directory: object id → file.
#[derive(Debug, Clone)]
pub struct LocalBlobstore {
    /// The directory holding the objects.
    pub path: PathBuf,
}

impl LocalBlobstore {
    /// The release's blobstore from `config/final.yml` (+ `private.yml`); only `local` is supported.
    pub fn from_release(release_dir: &Path) -> Result<Self> {
        let bs = FinalConfig::read(release_dir)?.blobstore(release_dir)?;
        if bs.provider != "local" {
            return Err(Error::entry(
                "config/final.yml",
                "blobstore.provider",
                format!("provider '{}' is not supported (only 'local')", bs.provider),
            ));
        }
        let Some(path) = bs.options.get("blobstore_path").and_then(|v| v.as_str()) else {
            return Err(Error::entry(
                "config/final.yml",
                "blobstore.options.blobstore_path",
                "is required",
            ));
        };
        let path = PathBuf::from(path);
        Ok(LocalBlobstore { path: if path.is_absolute() { path } else { release_dir.join(path) } })
    }

    /// Copies object `id` to `dest` if present and its digest matches `sha`.
    /// Returns false if the object is absent; a digest mismatch is an error.
    pub fn get(&self, id: &str, sha: &str, dest: &Path) -> Result<bool> {
        if !super::tgz::is_safe_relative(id) || id.contains('/') {
            return Err(Error::entry("blobstore", id, "object id is not a plain name"));
        }
        let src = self.path.join(id);
        if !src.exists() {
            return Ok(false);
        }
        if let Err(m) = super::verify_digest(&src, sha)? {
            return Err(Error::entry(self.path.display().to_string(), id, m));
        }
        let tmp = dest.with_extension("part");
        std::fs::copy(&src, &tmp).map_err(io(&src))?;
        std::fs::rename(&tmp, dest).map_err(io(dest))?;
        Ok(true)
    }

    /// Stores a file under a fresh id and returns the id.
    pub fn put(&self, src: &Path) -> Result<String> {
        std::fs::create_dir_all(&self.path).map_err(io(&self.path))?;
        let id = uuid::Uuid::new_v4().to_string();
        let dest = self.path.join(&id);
        let tmp = self.path.join(format!(".{id}.part"));
        std::fs::copy(src, &tmp).map_err(io(src))?;
        std::fs::rename(&tmp, &dest).map_err(io(&dest))?;
        Ok(id)
    }
}

/// `add-blob`: copies `src` to `blobs/<blob_path>` and records it in `config/blobs.yml`.
pub fn add_blob(release_dir: &Path, src: &Path, blob_path: &str) -> Result<BlobEntry> {
    if !super::tgz::is_safe_relative(blob_path) {
        return Err(Error::entry(
            "config/blobs.yml",
            blob_path,
            "blob path must stay inside blobs/",
        ));
    }
    let mut index = read_blobs(release_dir)?;
    let dest = release_dir.join("blobs").join(blob_path);
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let tmp = dest.with_file_name(format!(
        ".{}.part",
        dest.file_name().unwrap_or_default().to_string_lossy()
    ));
    std::fs::copy(src, &tmp).map_err(io(src))?;
    let sha = super::file_digest(&tmp)?;
    let size = std::fs::metadata(&tmp).map_err(io(&tmp))?.len();
    std::fs::rename(&tmp, &dest).map_err(io(&dest))?;
    let entry = BlobEntry { size, object_id: None, sha };
    index.insert(blob_path.to_string(), entry.clone());
    write_blobs(release_dir, &index)?;
    Ok(entry)
}

/// Where a blob is (or should be) on disk.
pub fn blob_file(release_dir: &Path, blob_path: &str) -> PathBuf {
    release_dir.join("blobs").join(blob_path)
}

/// Makes `blobs/` match `config/blobs.yml` before a build: every entry
/// present with its digest (fetched from the local blobstore if it has an
/// object id), and files not in the index removed (bosh-cli does the same,
/// so a stray file cannot slip into a package's `files` glob).
///
/// A missing blob with no way to fetch it is an error naming the entry.
pub fn sync_blobs(release_dir: &Path) -> Result<BlobsIndex> {
    let index = read_blobs(release_dir)?;
    let mut store = None;
    for (path, entry) in &index {
        let file = blob_file(release_dir, path);
        if file.exists() {
            match super::verify_digest(&file, &entry.sha)? {
                Ok(()) => continue,
                Err(m) if entry.object_id.is_none() => {
                    return Err(Error::entry(
                        "config/blobs.yml",
                        path,
                        format!("blobs/{path}: {m}"),
                    ));
                }
                Err(_) => {}
            }
        }
        let Some(id) = &entry.object_id else {
            return Err(Error::entry(
                "config/blobs.yml",
                path,
                format!("blobs/{path} is missing and the blob was never uploaded (no object_id)"),
            ));
        };
        if store.is_none() {
            store = Some(LocalBlobstore::from_release(release_dir)?);
        }
        let s = store.as_ref().expect("set above");
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        if !s.get(id, &entry.sha, &file)? {
            return Err(Error::entry(
                "config/blobs.yml",
                path,
                format!("blobs/{path} is missing and object '{id}' is not in the blobstore"),
            ));
        }
    }
    remove_unknown(release_dir, &index)?;
    Ok(index)
}

fn remove_unknown(release_dir: &Path, index: &BlobsIndex) -> Result<()> {
    let blobs = release_dir.join("blobs");
    if !blobs.exists() {
        return Ok(());
    }
    for e in walkdir::WalkDir::new(&blobs).min_depth(1) {
        let Ok(e) = e else { continue };
        if e.file_type().is_dir() {
            continue;
        }
        let rel = e.path().strip_prefix(&blobs).expect("under blobs").to_string_lossy();
        if !index.contains_key(rel.as_ref()) {
            std::fs::remove_file(e.path()).map_err(io(e.path()))?;
        }
    }
    Ok(())
}

/// `upload-blobs`: puts every blob without an object id into the local
/// blobstore and records the id. Returns how many were uploaded.
pub fn upload_blobs(release_dir: &Path) -> Result<usize> {
    let mut index = read_blobs(release_dir)?;
    let store = LocalBlobstore::from_release(release_dir)?;
    let mut n = 0;
    for (path, entry) in index.iter_mut() {
        if entry.object_id.is_some() {
            continue;
        }
        let file = blob_file(release_dir, path);
        if let Err(m) = super::verify_digest(&file, &entry.sha)? {
            return Err(Error::entry("config/blobs.yml", path.as_str(), m));
        }
        entry.object_id = Some(store.put(&file)?);
        n += 1;
    }
    write_blobs(release_dir, &index)?;
    Ok(n)
}
