//! Where blobs live: the [`Storage`] trait and the local-directory backend.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::{Stream, StreamExt as _};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncRead, AsyncWriteExt as _};

use crate::{BlobRef, Error, Result, check_sha256, is_sha256};

/// A boxed, sendable future; what [`Storage`] methods return so the trait
/// stays object-safe (boshd holds an `Arc<dyn Storage>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A body being uploaded.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// A stored blob being read.
pub type BlobReader = Pin<Box<dyn AsyncRead + Send>>;

/// A content-addressed store. Implementations must make [`Storage::put_stream`]
/// atomic (a blob is either absent or complete under its name) and must never
/// hold a whole body in memory.
///
/// Digest checking on read is the caller's job (the server does it while
/// streaming), because only the caller knows when the last byte went out.
pub trait Storage: Send + Sync + 'static {
    /// Stores `body` under its sha256. When `expected` is given and the
    /// content hashes to something else, fails with [`Error::Digest`] and
    /// stores nothing. Storing content that is already present is not an
    /// error.
    fn put_stream<'a>(
        &'a self,
        body: ByteStream,
        expected: Option<&'a str>,
    ) -> BoxFuture<'a, Result<BlobRef>>;

    /// Opens a blob for reading, with its size; [`Error::NotFound`] when absent.
    fn get<'a>(&'a self, sha256: &'a str) -> BoxFuture<'a, Result<(BlobReader, u64)>>;

    /// The size of a blob, or `None` when absent.
    fn stat<'a>(&'a self, sha256: &'a str) -> BoxFuture<'a, Result<Option<u64>>>;

    /// Whether a blob is present.
    fn exists<'a>(&'a self, sha256: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move { Ok(self.stat(sha256).await?.is_some()) })
    }

    /// Removes a blob; returns whether it was there.
    fn delete<'a>(&'a self, sha256: &'a str) -> BoxFuture<'a, Result<bool>>;

    /// Every stored blob, sorted by name.
    fn list(&self) -> BoxFuture<'_, Result<Vec<BlobRef>>>;
}

/// Blobs as files: `<root>/<sha[0..2]>/<sha>`, with uploads staged in
/// `<root>/tmp/` (same filesystem, so the final rename is atomic).
/// Directories are created 0700 and blobs 0600: rendered job templates
/// hold credentials, and the server (not the file system) decides who
/// reads a blob.
#[derive(Debug, Clone)]
pub struct LocalStorage {
    root: PathBuf,
}

impl LocalStorage {
    /// A store rooted at `root`; directories are created on first write.
    pub fn new(root: impl Into<PathBuf>) -> LocalStorage {
        LocalStorage { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob named `sha256` lives (whether or not it exists).
    /// `sha256` must already have been checked with [`check_sha256`], which
    /// is what keeps a name from escaping the root.
    pub fn blob_path(&self, sha256: &str) -> PathBuf {
        self.root.join(&sha256[..2]).join(sha256)
    }

    /// The staging directory for uploads in progress.
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    fn temp_path(&self) -> PathBuf {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        self.tmp_dir().join(format!("upload-{}-{nanos}-{seq}", std::process::id()))
    }

    async fn put_impl(&self, mut body: ByteStream, expected: Option<&str>) -> Result<BlobRef> {
        if let Some(expected) = expected {
            check_sha256(expected)?;
        }
        let tmp_dir = self.tmp_dir();
        private_dir(&tmp_dir).await?;
        let tmp = self.temp_path();
        let mut guard = RemoveOnDrop(Some(tmp.clone()));
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .await
            .map_err(|source| io_err(&tmp, source))?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|source| Error::Upload { source })?;
            hasher.update(&chunk);
            size += chunk.len() as u64;
            file.write_all(&chunk).await.map_err(|source| io_err(&tmp, source))?;
        }
        file.flush().await.map_err(|source| io_err(&tmp, source))?;
        // Durable before it becomes visible under its name.
        file.sync_all().await.map_err(|source| io_err(&tmp, source))?;
        drop(file);
        let actual = hex::encode(hasher.finalize());
        if let Some(expected) = expected
            && expected != actual
        {
            return Err(Error::Digest { expected: expected.to_owned(), actual });
        }
        let dest = self.blob_path(&actual);
        let dir = dest.parent().expect("blob path has a parent");
        private_dir(dir).await?;
        // Always replace: the content is identical when the old copy is good,
        // and a re-upload repairs a copy that rotted on disk.
        tokio::fs::rename(&tmp, &dest).await.map_err(|source| io_err(&dest, source))?;
        guard.0 = None;
        tracing::debug!(sha256 = %actual, size, "blob stored");
        Ok(BlobRef { sha256: actual, size })
    }
}

/// Creates `dir` and missing parents with mode 0700.
async fn private_dir(dir: &Path) -> Result<()> {
    tokio::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .await
        .map_err(|source| io_err(dir, source))
}

impl Storage for LocalStorage {
    fn put_stream<'a>(
        &'a self,
        body: ByteStream,
        expected: Option<&'a str>,
    ) -> BoxFuture<'a, Result<BlobRef>> {
        Box::pin(self.put_impl(body, expected))
    }

    fn get<'a>(&'a self, sha256: &'a str) -> BoxFuture<'a, Result<(BlobReader, u64)>> {
        Box::pin(async move {
            check_sha256(sha256)?;
            let path = self.blob_path(sha256);
            let file = match tokio::fs::File::open(&path).await {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(Error::NotFound { sha256: sha256.to_owned() });
                }
                Err(source) => return Err(io_err(&path, source)),
            };
            let size = file.metadata().await.map_err(|source| io_err(&path, source))?.len();
            Ok((Box::pin(file) as BlobReader, size))
        })
    }

    fn stat<'a>(&'a self, sha256: &'a str) -> BoxFuture<'a, Result<Option<u64>>> {
        Box::pin(async move {
            check_sha256(sha256)?;
            let path = self.blob_path(sha256);
            match tokio::fs::metadata(&path).await {
                Ok(m) => Ok(Some(m.len())),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(source) => Err(io_err(&path, source)),
            }
        })
    }

    fn delete<'a>(&'a self, sha256: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            check_sha256(sha256)?;
            let path = self.blob_path(sha256);
            match tokio::fs::remove_file(&path).await {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
                Err(source) => Err(io_err(&path, source)),
            }
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<BlobRef>>> {
        Box::pin(async move {
            let mut out = Vec::new();
            let mut dirs = match tokio::fs::read_dir(&self.root).await {
                Ok(d) => d,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
                Err(source) => return Err(io_err(&self.root, source)),
            };
            while let Some(dir) = dirs.next_entry().await.map_err(|s| io_err(&self.root, s))? {
                let name = dir.file_name();
                let Some(prefix) = name.to_str() else { continue };
                // Only the two-hex-digit shard directories hold blobs.
                if prefix.len() != 2 || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
                    continue;
                }
                let dir_path = dir.path();
                let mut files =
                    tokio::fs::read_dir(&dir_path).await.map_err(|s| io_err(&dir_path, s))?;
                while let Some(f) = files.next_entry().await.map_err(|s| io_err(&dir_path, s))? {
                    let name = f.file_name();
                    let Some(name) = name.to_str() else { continue };
                    if !is_sha256(name) || !name.starts_with(prefix) {
                        continue;
                    }
                    let meta = f.metadata().await.map_err(|s| io_err(&f.path(), s))?;
                    if meta.is_file() {
                        out.push(BlobRef { sha256: name.to_owned(), size: meta.len() });
                    }
                }
            }
            out.sort_by(|a, b| a.sha256.cmp(&b.sha256));
            Ok(out)
        })
    }
}

fn io_err(path: &Path, source: io::Error) -> Error {
    Error::Io { path: path.to_owned(), source }
}

/// Removes a staged upload that never made it into place (error, or the
/// request future being dropped when the client disconnects).
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt as _;

    fn body(parts: &[&'static [u8]]) -> ByteStream {
        let items: Vec<io::Result<Bytes>> =
            parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
        Box::pin(futures::stream::iter(items))
    }

    /// A blob put in pieces comes back whole, listed, and goes away on delete.
    #[tokio::test]
    async fn put_get_list_delete_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::new(dir.path());
        let r = s.put_stream(body(&[b"hello ", b"world"]), None).await.unwrap();
        assert_eq!(r, BlobRef { sha256: crate::sha256_hex(b"hello world"), size: 11 });
        assert_eq!(s.blob_path(&r.sha256), dir.path().join(&r.sha256[..2]).join(&r.sha256));

        let (mut reader, size) = s.get(&r.sha256).await.unwrap();
        let mut got = Vec::new();
        reader.read_to_end(&mut got).await.unwrap();
        assert_eq!((got.as_slice(), size), (&b"hello world"[..], 11));
        assert_eq!(s.list().await.unwrap(), vec![r.clone()]);
        assert!(s.exists(&r.sha256).await.unwrap());

        assert!(s.delete(&r.sha256).await.unwrap());
        assert!(!s.delete(&r.sha256).await.unwrap());
        assert!(matches!(s.get(&r.sha256).await, Err(Error::NotFound { .. })));
        assert!(s.list().await.unwrap().is_empty());
    }

    /// Issue 12 item 6: blobs (rendered templates hold credentials) are 0600
    /// in 0700 directories, the root included.
    #[tokio::test]
    async fn blobs_and_their_directories_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("blobstore");
        let s = LocalStorage::new(&root);
        let r = s.put_stream(body(&[b"password: hunter2"]), None).await.unwrap();
        let blob = s.blob_path(&r.sha256);
        assert_eq!(mode(&blob), 0o600);
        for d in [&root, &s.tmp_dir(), blob.parent().unwrap()] {
            assert_eq!(mode(d), 0o700, "{}", d.display());
        }
    }

    /// A body that does not hash to the expected name leaves no file behind.
    #[tokio::test]
    async fn put_with_wrong_expected_digest_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::new(dir.path());
        let wrong = crate::sha256_hex(b"something else");
        let err = s.put_stream(body(&[b"content"]), Some(&wrong)).await.unwrap_err();
        assert!(matches!(err, Error::Digest { ref expected, .. } if *expected == wrong), "{err}");
        assert!(s.list().await.unwrap().is_empty());
        assert_eq!(std::fs::read_dir(s.tmp_dir()).unwrap().count(), 0);
    }

    /// A failing upload stream leaves no staged file behind.
    #[tokio::test]
    async fn put_with_failing_stream_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::new(dir.path());
        let items: Vec<io::Result<Bytes>> =
            vec![Ok(Bytes::from_static(b"part")), Err(io::Error::other("client went away"))];
        let err = s.put_stream(Box::pin(futures::stream::iter(items)), None).await.unwrap_err();
        assert!(matches!(err, Error::Upload { .. }), "{err}");
        assert!(s.list().await.unwrap().is_empty());
        assert_eq!(std::fs::read_dir(s.tmp_dir()).unwrap().count(), 0);
    }

    /// Malformed names are refused before they can become a path.
    #[tokio::test]
    async fn malformed_names_are_refused_before_touching_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::new(dir.path());
        for name in ["../etc/passwd", "", "AB"] {
            assert!(matches!(s.get(name).await, Err(Error::InvalidDigest { .. })));
            assert!(matches!(s.delete(name).await, Err(Error::InvalidDigest { .. })));
            assert!(matches!(s.stat(name).await, Err(Error::InvalidDigest { .. })));
        }
    }
}
