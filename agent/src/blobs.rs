//! Fetching verified blobs from boshd's blobstore and uploading results.
//!
//! Downloads land in `data/tmp` and are verified by sha256 before use; a
//! mismatch is refused and the file discarded. `prepare` fills a cache of
//! verified blobs named by digest so that `apply` need not download again.

use std::path::{Path, PathBuf};

use bosh_api::agent::BlobRef;

use crate::error::{Error, Result};
use crate::settings::Paths;

/// The blobstore, as the agent uses it.
#[derive(Clone)]
pub struct Blobs {
    client: bosh_blobstore::Client,
    paths: Paths,
}

impl Blobs {
    /// A client for `url` with bearer `token`.
    pub fn new(url: &str, token: &str, paths: Paths) -> Blobs {
        Blobs { client: bosh_blobstore::Client::new(url, token), paths }
    }

    /// Returns a local, verified copy of `blob` (from the cache when
    /// `prepare` already fetched it). `what` names it in errors.
    pub async fn fetch(&self, blob: &BlobRef, what: &str) -> Result<PathBuf> {
        if !bosh_blobstore::is_sha256(&blob.sha256) {
            return Err(Error::Blob {
                sha256: blob.sha256.clone(),
                what: what.to_string(),
                source: "not a sha256".into(),
            });
        }
        let cached = self.paths.blob_cache().join(&blob.sha256);
        if cached.is_file() && sha256_file(&cached).await.ok().as_deref() == Some(&*blob.sha256) {
            return Ok(cached);
        }
        let dir = self.paths.blob_cache();
        tokio::fs::create_dir_all(&dir).await.map_err(Error::io("create", &dir))?;
        let tmp = self.paths.tmp().join(format!("{}.{}", blob.sha256, uuid::Uuid::new_v4()));
        tokio::fs::create_dir_all(self.paths.tmp())
            .await
            .map_err(Error::io("create", self.paths.tmp()))?;
        let res = self.client.get_to_file(&blob.sha256, &tmp).await;
        if let Err(e) = res {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(Error::Blob {
                sha256: blob.sha256.clone(),
                what: what.into(),
                source: Box::new(e),
            });
        }
        tokio::fs::rename(&tmp, &cached).await.map_err(Error::io("rename", &tmp))?;
        Ok(cached)
    }

    /// Uploads the file at `path`; `what` names it in errors.
    pub async fn upload(&self, path: &Path, what: &str) -> Result<BlobRef> {
        let r = self.client.put_file(path).await.map_err(|e| Error::Blob {
            sha256: "upload".into(),
            what: what.into(),
            source: Box::new(e),
        })?;
        Ok(BlobRef { sha256: r.sha256, size: r.size })
    }
}

/// The hex sha256 of a file's content.
pub async fn sha256_file(path: &Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    use tokio::io::AsyncReadExt;
    let mut f = tokio::fs::File::open(path).await?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}
