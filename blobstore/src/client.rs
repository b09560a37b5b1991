//! The blobstore client agents and `boshctl` use.
//!
//! Every download is hashed before it is handed over: [`Client::get_to_file`]
//! writes to a temp file beside the destination and renames it into place
//! only once its sha256 matches, so the destination is either the right
//! content or untouched. Every upload is hashed while it streams and checked
//! against the name the server gave it.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt as _};
use reqwest::{Method, Response, StatusCode};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt as _;
use tokio_util::io::ReaderStream;

use crate::wire::ErrorBody;
use crate::{BlobRef, Error, Result, check_sha256};

/// A handle on one blobstore (base URL plus bearer token). Cheap to clone;
/// clones share one connection pool.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    /// A client for the blobstore at `url` (e.g. `http://127.0.0.1:25250`,
    /// the prefix under which `/blobs` is served).
    pub fn new(url: &str, token: &str) -> Client {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .expect("a reqwest client without TLS always builds");
        Client { http, base: url.trim_end_matches('/').to_owned(), token: token.to_owned() }
    }

    fn url(&self, sha256: Option<&str>) -> String {
        match sha256 {
            Some(sha) => format!("{}/blobs/{sha}", self.base),
            None => format!("{}/blobs", self.base),
        }
    }

    async fn send(
        &self,
        method: Method,
        url: &str,
        body: Option<reqwest::Body>,
    ) -> Result<Response> {
        let mut req = self.http.request(method.clone(), url).bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.body(body);
        }
        req.send().await.map_err(|source| transport(&method, url, source))
    }

    /// Uploads the file at `path`, streaming it.
    pub async fn put_file(&self, path: &Path) -> Result<BlobRef> {
        self.put_file_with_progress(path, |_| {}).await
    }

    /// Uploads the file at `path`, calling `progress` with the number of
    /// bytes sent so far as each chunk goes out (for a progress bar).
    pub async fn put_file_with_progress(
        &self,
        path: &Path,
        progress: impl Fn(u64) + Send + Sync + 'static,
    ) -> Result<BlobRef> {
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|source| Error::Io { path: path.to_owned(), source })?;
        let sent = AtomicU64::new(0);
        let stream = ReaderStream::with_capacity(file, 64 * 1024).inspect(move |chunk| {
            if let Ok(chunk) = chunk {
                progress(
                    sent.fetch_add(chunk.len() as u64, Ordering::Relaxed) + chunk.len() as u64,
                );
            }
        });
        self.put_stream(stream, None).await
    }

    /// Uploads `bytes`, naming the expected digest so the server checks it.
    pub async fn put_bytes(&self, bytes: Vec<u8>) -> Result<BlobRef> {
        let sha256 = crate::sha256_hex(&bytes);
        let url = self.url(Some(&sha256));
        let resp = self.send(Method::PUT, &url, Some(bytes.into())).await?;
        self.blob_ref_from(resp, "PUT", &url, Some(&sha256)).await
    }

    /// Uploads a stream. With `expected`, the server refuses (and stores
    /// nothing) unless the content hashes to it; either way the content is
    /// hashed here too and must match the name the server stored it under.
    pub async fn put_stream<S>(&self, stream: S, expected: Option<&str>) -> Result<BlobRef>
    where
        S: Stream<Item = io::Result<Bytes>> + Send + 'static,
    {
        if let Some(expected) = expected {
            check_sha256(expected)?;
        }
        let hasher = Arc::new(Mutex::new(Sha256::new()));
        let h = hasher.clone();
        let stream = stream.inspect(move |chunk| {
            if let Ok(chunk) = chunk {
                h.lock().expect("hasher lock").update(chunk);
            }
        });
        let url = self.url(expected);
        let resp = self.send(Method::PUT, &url, Some(reqwest::Body::wrap_stream(stream))).await?;
        let blob = self.blob_ref_from(resp, "PUT", &url, expected).await?;
        let sent =
            hex::encode(std::mem::take(&mut *hasher.lock().expect("hasher lock")).finalize());
        if sent != blob.sha256 {
            // What arrived is not what we sent; it is stored under its own
            // (true) name, which nobody will reference.
            return Err(Error::Digest { expected: sent, actual: blob.sha256 });
        }
        Ok(blob)
    }

    async fn blob_ref_from(
        &self,
        resp: Response,
        method: &'static str,
        url: &str,
        sha256: Option<&str>,
    ) -> Result<BlobRef> {
        let resp = check(resp, method, url, sha256).await?;
        resp.json::<BlobRef>().await.map_err(|source| Error::Transport {
            method,
            url: url.to_owned(),
            source,
        })
    }

    /// Downloads a blob into `dest`, verified. The body goes to a temp file
    /// beside `dest`, which is renamed over `dest` only when its sha256
    /// matches; on any failure `dest` is untouched and the temp file removed.
    /// Returns the size.
    pub async fn get_to_file(&self, sha256: &str, dest: &Path) -> Result<u64> {
        check_sha256(sha256)?;
        let url = self.url(Some(sha256));
        let resp = self.send(Method::GET, &url, None).await?;
        let resp = check(resp, "GET", &url, Some(sha256)).await?;

        let tmp = temp_beside(dest);
        let mut guard = RemoveOnDrop(Some(tmp.clone()));
        let io_err = |source| Error::Io { path: tmp.clone(), source };
        // Owner-only: a blob may be rendered templates with credentials.
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .await
            .map_err(io_err)?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|source| transport(&Method::GET, &url, source))?;
            hasher.update(&chunk);
            size += chunk.len() as u64;
            file.write_all(&chunk).await.map_err(io_err)?;
        }
        file.flush().await.map_err(io_err)?;
        file.sync_all().await.map_err(io_err)?;
        drop(file);
        let actual = hex::encode(hasher.finalize());
        if actual != sha256 {
            return Err(Error::Digest { expected: sha256.to_owned(), actual });
        }
        tokio::fs::rename(&tmp, dest)
            .await
            .map_err(|source| Error::Io { path: dest.to_owned(), source })?;
        guard.0 = None;
        Ok(size)
    }

    /// Downloads a blob into memory, verified. For small blobs (templates,
    /// manifests); use [`Client::get_to_file`] for anything large.
    pub async fn get_bytes(&self, sha256: &str) -> Result<Vec<u8>> {
        check_sha256(sha256)?;
        let url = self.url(Some(sha256));
        let resp = self.send(Method::GET, &url, None).await?;
        let resp = check(resp, "GET", &url, Some(sha256)).await?;
        let bytes = resp.bytes().await.map_err(|source| transport(&Method::GET, &url, source))?;
        let actual = crate::sha256_hex(&bytes);
        if actual != sha256 {
            return Err(Error::Digest { expected: sha256.to_owned(), actual });
        }
        Ok(bytes.into())
    }

    /// Whether the blob is stored.
    pub async fn exists(&self, sha256: &str) -> Result<bool> {
        check_sha256(sha256)?;
        let url = self.url(Some(sha256));
        let resp = self.send(Method::HEAD, &url, None).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(false);
        }
        check(resp, "HEAD", &url, Some(sha256)).await.map(|_| true)
    }

    /// Deletes the blob. Deleting an absent blob succeeds (the outcome the
    /// caller wanted already holds).
    pub async fn delete(&self, sha256: &str) -> Result<()> {
        check_sha256(sha256)?;
        let url = self.url(Some(sha256));
        let resp = self.send(Method::DELETE, &url, None).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(());
        }
        check(resp, "DELETE", &url, Some(sha256)).await.map(|_| ())
    }

    /// Every stored blob, sorted by name.
    pub async fn list(&self) -> Result<Vec<BlobRef>> {
        let url = self.url(None);
        let resp = self.send(Method::GET, &url, None).await?;
        let resp = check(resp, "GET", &url, None).await?;
        resp.json().await.map_err(|source| transport(&Method::GET, &url, source))
    }
}

/// Passes a 2xx response through; turns anything else into the matching
/// [`Error`], using the server's JSON error body where there is one.
async fn check(
    resp: Response,
    method: &'static str,
    url: &str,
    sha256: Option<&str>,
) -> Result<Response> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    if status == StatusCode::UNAUTHORIZED {
        return Err(Error::Unauthorized);
    }
    let text = resp.text().await.unwrap_or_default();
    let body: Option<ErrorBody> = serde_json::from_str(&text).ok();
    match (status, body) {
        (StatusCode::NOT_FOUND, _) if sha256.is_some() => {
            Err(Error::NotFound { sha256: sha256.unwrap_or_default().to_owned() })
        }
        (_, Some(ErrorBody { code, expected: Some(expected), actual: Some(actual), .. }))
            if code == "digest" =>
        {
            Err(Error::Digest { expected, actual })
        }
        (_, Some(body)) => Err(Error::Http {
            method,
            url: url.to_owned(),
            status: status.as_u16(),
            message: body.error,
        }),
        (_, None) => {
            Err(Error::Http { method, url: url.to_owned(), status: status.as_u16(), message: text })
        }
    }
}

fn transport(method: &Method, url: &str, source: reqwest::Error) -> Error {
    let method = match *method {
        Method::GET => "GET",
        Method::PUT => "PUT",
        Method::HEAD => "HEAD",
        Method::DELETE => "DELETE",
        _ => "request",
    };
    Error::Transport { method, url: url.to_owned(), source }
}

/// A fresh temp path in `dest`'s directory (same filesystem, so the final
/// rename is atomic), hidden and tagged so a crash leaves an obvious leftover.
fn temp_beside(dest: &Path) -> PathBuf {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let tmp = format!(".{name}.part-{}-{seq}", std::process::id());
    match dest.parent() {
        Some(parent) => parent.join(tmp),
        None => PathBuf::from(tmp),
    }
}

/// Removes a partial download on any early return.
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}
