//! Release blobs (`blobs/` tracked by `config/blobs.yml`), the
//! [`Blobstore`] a provider implements, and the `local` provider
//! (`blobstore: {provider: local, options: {blobstore_path}}`).
//!
//! Network providers (`s3`) live in the CLI, which owns an async HTTP
//! client with TLS; this crate keeps what every provider must do the same
//! way: which blobs to fetch, checking each download against
//! `config/blobs.yml`'s digest before it enters `blobs/`, and recording an
//! object id only once its upload succeeded. Final builds (`.final_builds`)
//! go through the same [`Blobstore`] with the same rules (see
//! `build::BuildContext` and `create`). A provider the caller cannot
//! open is refused with a clear error rather than skipped, because a
//! create-release that cannot fetch a blob would otherwise build a release
//! missing files.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use super::{
    Error, Result,
    config::{BlobEntry, BlobsIndex, BlobstoreConfig, FinalConfig, read_blobs, write_blobs},
    io,
};

/// What a provider's failure carries (it names its bucket and object id;
/// the caller adds the blob path).
pub type BlobstoreError = Box<dyn std::error::Error + Send + Sync>;

/// A release blobstore: objects under ids it chooses.
pub trait Blobstore: Send + Sync {
    /// Writes object `id` to `dest` (a scratch file outside `blobs/`);
    /// `Ok(false)` if the store has no such object. The caller checks the
    /// digest, so a provider need not.
    fn download(&self, id: &str, dest: &Path) -> Result<bool, BlobstoreError>;
    /// Stores `src` under a fresh id and returns it, only once stored.
    fn upload(&self, src: &Path) -> Result<String, BlobstoreError>;
}

/// Opens the release's blobstore (from `config/final.yml` + `private.yml`),
/// called only when a blob or final build has to be fetched or uploaded,
/// so a release whose blobs and builds are all present needs no blobstore
/// configuration or network. `Sync` because builds run on several threads
/// that may each need the store.
pub type OpenBlobstore<'a> = &'a (dyn Fn(&Path) -> Result<Box<dyn Blobstore>> + Sync);

/// A release's blobstore opened on first use (see [`OpenBlobstore`]) and
/// then shared, so the threads of one build open it at most once.
pub struct LazyBlobstore<'a> {
    release_dir: PathBuf,
    open: OpenBlobstore<'a>,
    store: Mutex<Option<Arc<dyn Blobstore>>>,
}

impl std::fmt::Debug for LazyBlobstore<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyBlobstore").field("release_dir", &self.release_dir).finish()
    }
}

impl<'a> LazyBlobstore<'a> {
    /// The blobstore of `release_dir`, not opened yet.
    pub fn new(release_dir: &Path, open: OpenBlobstore<'a>) -> Self {
        LazyBlobstore { release_dir: release_dir.to_path_buf(), open, store: Mutex::new(None) }
    }

    /// The store, opening it on the first call. A failed open is not
    /// remembered: the next call tries again (and fails the same way).
    pub fn get(&self) -> Result<Arc<dyn Blobstore>> {
        let mut slot = self.store.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = slot.as_ref() {
            return Ok(Arc::clone(s));
        }
        let s: Arc<dyn Blobstore> = Arc::from((self.open)(&self.release_dir)?);
        *slot = Some(Arc::clone(&s));
        Ok(s)
    }
}

/// The opener of this crate alone: the local provider.
pub fn open_local(release_dir: &Path) -> Result<Box<dyn Blobstore>> {
    Ok(Box::new(LocalBlobstore::from_release(release_dir)?))
}

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
        Self::from_config(release_dir, &bs)
    }

    /// The local provider of an already read blobstore configuration.
    pub fn from_config(release_dir: &Path, bs: &BlobstoreConfig) -> Result<Self> {
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

impl Blobstore for LocalBlobstore {
    fn download(&self, id: &str, dest: &Path) -> Result<bool, BlobstoreError> {
        if !super::tgz::is_safe_relative(id) || id.contains('/') {
            return Err(format!("object id '{id}' is not a plain name").into());
        }
        let src = self.path.join(id);
        if !src.exists() {
            return Ok(false);
        }
        std::fs::copy(&src, dest).map_err(io(&src))?;
        Ok(true)
    }

    fn upload(&self, src: &Path) -> Result<String, BlobstoreError> {
        Ok(self.put(src)?)
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

/// Makes `blobs/` match `config/blobs.yml` before a build with the local
/// provider; see [`sync_blobs_with`].
pub fn sync_blobs(release_dir: &Path) -> Result<BlobsIndex> {
    sync_blobs_with(release_dir, &open_local)
}

/// Makes `blobs/` match `config/blobs.yml` before a build: every entry
/// present with its digest (fetched from the blobstore `open` gives if it
/// has an object id), and files not in the index removed (bosh-cli does
/// the same, so a stray file cannot slip into a package's `files` glob).
///
/// A download lands in a scratch dir beside `blobs/` and is moved in only
/// once its digest matches; a mismatch is refused naming both digests and
/// leaves nothing in `blobs/`. A missing blob with no way to fetch it is an
/// error naming the entry.
pub fn sync_blobs_with(release_dir: &Path, open: OpenBlobstore) -> Result<BlobsIndex> {
    let index = read_blobs(release_dir)?;
    let mut store = None;
    let mut scratch = None;
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
            store = Some(open(release_dir)?);
        }
        let s = store.as_ref().expect("set above");
        if scratch.is_none() {
            // In the release dir, so the final rename stays on one file system.
            let dir = tempfile::Builder::new()
                .prefix(".sync-blobs-")
                .tempdir_in(release_dir)
                .map_err(io(release_dir))?;
            scratch = Some(dir);
        }
        let tmp = scratch.as_ref().expect("set above").path().join("blob");
        let fetched = s
            .download(id, &tmp)
            .map_err(|error| Error::Blobstore { blob: format!("blobs/{path}"), error })?;
        if !fetched {
            return Err(Error::entry(
                "config/blobs.yml",
                path,
                format!("blobs/{path} is missing and object '{id}' is not in the blobstore"),
            ));
        }
        if let Err(m) = super::verify_digest(&tmp, &entry.sha)? {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::entry(
                "config/blobs.yml",
                path,
                format!("blobs/{path}: object '{id}' was refused and not saved: {m}"),
            ));
        }
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        std::fs::rename(&tmp, &file).map_err(io(&file))?;
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

/// `upload-blobs` with the local provider; see [`upload_blobs_with`].
pub fn upload_blobs(release_dir: &Path) -> Result<usize> {
    upload_blobs_with(release_dir, &open_local)
}

/// `upload-blobs`: puts every blob without an object id into the blobstore
/// and records its id. `config/blobs.yml` is written after each upload, so
/// an id is recorded only for a stored object and a failure later on loses
/// none. Returns how many were uploaded.
pub fn upload_blobs_with(release_dir: &Path, open: OpenBlobstore) -> Result<usize> {
    let mut index = read_blobs(release_dir)?;
    let pending: Vec<String> =
        index.iter().filter(|(_, e)| e.object_id.is_none()).map(|(p, _)| p.clone()).collect();
    if pending.is_empty() {
        return Ok(0);
    }
    let store = open(release_dir)?;
    for path in &pending {
        let file = blob_file(release_dir, path);
        let entry = index.get_mut(path).expect("listed above");
        if let Err(m) = super::verify_digest(&file, &entry.sha)? {
            return Err(Error::entry("config/blobs.yml", path.as_str(), m));
        }
        let id = store
            .upload(&file)
            .map_err(|error| Error::Blobstore { blob: format!("blobs/{path}"), error })?;
        entry.object_id = Some(id);
        write_blobs(release_dir, &index)?;
    }
    Ok(pending.len())
}
