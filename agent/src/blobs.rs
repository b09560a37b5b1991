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
    /// The store's addresses, the settings' `url` first, then its mirrors.
    clients: Vec<bosh_blobstore::Client>,
    paths: Paths,
}

impl Blobs {
    /// A client for `url` (then each of `mirrors`) with bearer `token`.
    pub fn new(url: &str, mirrors: &[String], token: &str, paths: Paths) -> Blobs {
        let clients = std::iter::once(url)
            .chain(mirrors.iter().map(String::as_str))
            .map(|u| bosh_blobstore::Client::new(u, token))
            .collect();
        Blobs { clients, paths }
    }

    /// Runs `op` against each address in turn until one is reachable: a
    /// replica that is gone is skipped, any other answer (a digest
    /// mismatch, a 404) is final.
    async fn each<T, F, Fut>(&self, op: F) -> bosh_blobstore::Result<T>
    where
        F: Fn(bosh_blobstore::Client) -> Fut,
        Fut: std::future::Future<Output = bosh_blobstore::Result<T>>,
    {
        let mut last = None;
        for c in &self.clients {
            match op(c.clone()).await {
                Err(e) if e.is_unreachable() => {
                    tracing::warn!(error = %e, "blobstore unreachable, trying the next address");
                    last = Some(e);
                }
                r => return r,
            }
        }
        Err(last.expect("settings name at least one blobstore address"))
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
        // Blobs include rendered templates, which hold credentials.
        tokio::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .await
            .map_err(Error::io("create", &dir))?;
        let tmp = self.paths.tmp().join(format!("{}.{}", blob.sha256, uuid::Uuid::new_v4()));
        tokio::fs::create_dir_all(self.paths.tmp())
            .await
            .map_err(Error::io("create", self.paths.tmp()))?;
        let (sha, dest) = (blob.sha256.as_str(), tmp.as_path());
        let res = self.each(|c| async move { c.get_to_file(sha, dest).await }).await;
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
        self.each(|c| async move { c.put_file(path).await }).await.map_err(|e| Error::Blob {
            sha256: "upload".into(),
            what: what.into(),
            source: Box::new(e),
        })
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// A blobstore served on loopback until the returned sender drops.
    async fn serve(dir: &Path) -> (String, tokio::sync::oneshot::Sender<()>) {
        let storage = Arc::new(bosh_blobstore::LocalStorage::new(dir));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(bosh_blobstore::server::serve(listener, storage, "t".into(), async {
            let _ = rx.await;
        }));
        (url, tx)
    }

    /// The settings' address is gone (its replica died): fetch and upload
    /// go to the mirror; a refusal by a reachable store is not retried
    /// elsewhere.
    #[tokio::test]
    async fn an_unreachable_address_falls_back_to_the_mirror() {
        let dir = tempfile::tempdir().unwrap();
        let (mirror, _stop) = serve(&dir.path().join("store")).await;
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", l.local_addr().unwrap())
        };
        let blobs = Blobs::new(
            &dead,
            std::slice::from_ref(&mirror),
            "t",
            Paths::new(dir.path().join("vm")),
        );
        let file = dir.path().join("f");
        std::fs::write(&file, b"payload").unwrap();
        let blob = blobs.upload(&file, "test file").await.unwrap();
        let got = blobs.fetch(&blob, "test file").await.unwrap();
        assert_eq!(std::fs::read(got).unwrap(), b"payload");

        let missing = BlobRef { sha256: "0".repeat(64), size: 1 };
        let only_dead = Blobs::new(&dead, &[], "t", Paths::new(dir.path().join("vm2")));
        let e = only_dead.fetch(&missing, "x").await.unwrap_err();
        assert!(format!("{e:?}").contains("Transport"), "{e:?}");
        // The mirror answers 404: final, reported as such.
        let e = blobs.fetch(&missing, "x").await.unwrap_err();
        assert!(!format!("{e:?}").contains("Transport"), "{e:?}");
    }
}
