//! A real GCS-compatible server for blobstore tests: `gcp-storage-emulator`
//! (PyPI, pure Python), on a free loopback port with its data and log in a
//! temp dir, stopped when dropped.
//!
//! The program is `$BOSH_RS_GCS_EMULATOR`, else the venv
//! `hack/install-deps.sh` makes at
//! `${XDG_CACHE_HOME:-$HOME/.cache}/bosh-rs/gcs-emulator/bin/gcp-storage-emulator`.
//!
//! The emulator serves the JSON API (media and multipart uploads, media
//! downloads) and checks no credentials: a client points at it with
//! `STORAGE_EMULATOR_HOST` and sends no token, as Google's libraries do.
//! The helpers here set buckets up and read or replace objects behind the
//! client's back, over plain HTTP/1.1.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::moto::http;
use crate::{eventually, free_port, keep_failed, scratch_root, spawn_tied};

/// The `gcp-storage-emulator` program the tests run.
pub fn gcs_emulator_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("BOSH_RS_GCS_EMULATOR") {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    cache.join("bosh-rs/gcs-emulator/bin/gcp-storage-emulator")
}

/// One emulator on loopback.
pub struct GcsEmulator {
    child: Option<Child>,
    port: u16,
    dir: Option<tempfile::TempDir>,
}

impl GcsEmulator {
    /// Starts the emulator (data on disk in its temp dir) and waits until
    /// it answers HTTP.
    pub async fn start() -> Result<GcsEmulator> {
        let dir = tempfile::Builder::new().prefix("bosh-rs-gcs-").tempdir_in(scratch_root())?;
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("gcs.log"))?;
        let bin = gcs_emulator_binary();
        let mut cmd = Command::new(&bin);
        cmd.arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["start", "--host", "127.0.0.1", "--port", &port.to_string()])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = spawn_tied(cmd).with_context(|| {
            format!(
                "starting {} (run hack/install-deps.sh, or set BOSH_RS_GCS_EMULATOR)",
                bin.display()
            )
        })?;
        let gcs = GcsEmulator { child: Some(child), port, dir: Some(dir) };
        eventually(Duration::from_secs(60), "gcp-storage-emulator to answer HTTP", || async move {
            let (status, _) = http(port, "GET", "/", &[], b"").await.ok()?;
            (status == 200).then_some(())
        })
        .await
        .with_context(|| format!("emulator log: {}", gcs.log().display()))?;
        Ok(gcs)
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`, as `STORAGE_EMULATOR_HOST` takes it.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Its log file.
    pub fn log(&self) -> PathBuf {
        self.dir.as_ref().map(|d| d.path().join("gcs.log")).unwrap_or_default()
    }

    /// One request; returns the status and body.
    pub async fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(u16, Vec<u8>)> {
        http(self.port, method, path, headers, body).await
    }

    /// Creates a bucket.
    pub async fn create_bucket(&self, bucket: &str) -> Result<()> {
        let body = serde_json::json!({ "name": bucket }).to_string();
        let (status, out) = self
            .http(
                "POST",
                "/storage/v1/b?project=bosh-rs",
                &[("Content-Type", "application/json")],
                body.as_bytes(),
            )
            .await?;
        if status != 200 {
            bail!("creating bucket {bucket}: HTTP {status}: {}", String::from_utf8_lossy(&out));
        }
        Ok(())
    }

    /// An object's bytes, `None` if there is no such object.
    pub async fn object(&self, bucket: &str, name: &str) -> Result<Option<Vec<u8>>> {
        let path = format!("/storage/v1/b/{bucket}/o/{name}?alt=media");
        match self.http("GET", &path, &[], b"").await? {
            (200, body) => Ok(Some(body)),
            (404, _) => Ok(None),
            (status, body) => {
                bail!("GET {path}: HTTP {status}: {}", String::from_utf8_lossy(&body))
            }
        }
    }

    /// An object's resource (size, storageClass, ...).
    pub async fn metadata(&self, bucket: &str, name: &str) -> Result<serde_json::Value> {
        let path = format!("/storage/v1/b/{bucket}/o/{name}");
        let (status, body) = self.http("GET", &path, &[], b"").await?;
        if status != 200 {
            bail!("GET {path}: HTTP {status}: {}", String::from_utf8_lossy(&body));
        }
        Ok(serde_json::from_slice(&body)?)
    }

    /// Stores `bytes` as object `name`, replacing what is there.
    pub async fn put_object(&self, bucket: &str, name: &str, bytes: &[u8]) -> Result<()> {
        let path = format!("/upload/storage/v1/b/{bucket}/o?uploadType=media&name={name}");
        let headers = [("Content-Type", "application/octet-stream")];
        let (status, body) = self.http("POST", &path, &headers, bytes).await?;
        if status != 200 {
            bail!("POST {path}: HTTP {status}: {}", String::from_utf8_lossy(&body));
        }
        Ok(())
    }

    /// Stops the server.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for GcsEmulator {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking()
            && let Some(dir) = self.dir.take()
        {
            keep_failed(dir, "the GCS emulator's");
        }
    }
}
