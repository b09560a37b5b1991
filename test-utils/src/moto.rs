//! A real S3-compatible server for blobstore tests: moto's standalone
//! server (`moto_server`, from PyPI), on a free loopback port with its
//! log in a temp dir, stopped when dropped.
//!
//! The binary is `$BOSH_RS_MOTO`, else the venv `hack/install-deps.sh`
//! makes at `${XDG_CACHE_HOME:-$HOME/.cache}/bosh-rs/moto/bin/moto_server`.
//!
//! moto checks SigV4 signatures only once IAM authentication is on
//! ([`Moto::require_auth`]); with it off it takes any request, which is
//! how a test sets a bucket up or alters an object behind the client's back.
//! The helpers here speak plain HTTP/1.1 on a socket of their own, so the
//! harness needs no HTTP client.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{eventually, free_port, keep_failed, scratch_root, spawn_tied};

/// An `Authorization` header moto routes to IAM by (its credential
/// scope); with authentication off nothing checks the signature.
const IAM_SCOPE: &str = "AWS4-HMAC-SHA256 \
    Credential=AKIAIOSFODNN7EXAMPLE/20260101/us-east-1/iam/aws4_request, \
    SignedHeaders=host, Signature=0";

/// The same for S3: what marks a request as an authenticated one to
/// moto's object ACL checks, which apply even with authentication off.
const S3_SCOPE: &str = "AWS4-HMAC-SHA256 \
    Credential=AKIAIOSFODNN7EXAMPLE/20260101/us-east-1/s3/aws4_request, \
    SignedHeaders=host, Signature=0";

/// The `moto_server` binary the tests run.
pub fn moto_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("BOSH_RS_MOTO") {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    cache.join("bosh-rs/moto/bin/moto_server")
}

/// One moto server on loopback.
pub struct Moto {
    child: Option<Child>,
    port: u16,
    dir: Option<tempfile::TempDir>,
}

impl Moto {
    /// Starts moto (authentication off) and waits until it answers HTTP.
    pub async fn start() -> Result<Moto> {
        let dir = tempfile::Builder::new().prefix("bosh-rs-moto-").tempdir_in(scratch_root())?;
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("moto.log"))?;
        let bin = moto_binary();
        let mut cmd = Command::new(&bin);
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = spawn_tied(cmd).with_context(|| {
            format!("starting {} (run hack/install-deps.sh, or set BOSH_RS_MOTO)", bin.display())
        })?;
        let moto = Moto { child: Some(child), port, dir: Some(dir) };
        eventually(Duration::from_secs(60), "moto_server to answer HTTP", || async move {
            moto_answers(port).await
        })
        .await
        .with_context(|| format!("moto log: {}", moto.log().display()))?;
        Ok(moto)
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Its log file.
    pub fn log(&self) -> PathBuf {
        self.dir.as_ref().map(|d| d.path().join("moto.log")).unwrap_or_default()
    }

    /// One request (`Connection: close`); returns the status and body.
    pub async fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(u16, Vec<u8>)> {
        http(self.port, method, path, headers, body).await
    }

    /// An S3 request as the bucket's owner (authentication must be off):
    /// for a test to read or alter objects behind the client's back.
    pub async fn s3(&self, method: &str, path: &str, body: &[u8]) -> Result<(u16, Vec<u8>)> {
        self.http(method, path, &[("Authorization", S3_SCOPE)], body).await
    }

    /// Turns moto's IAM authentication (signature and policy checks) on or off.
    pub async fn require_auth(&self, on: bool) -> Result<()> {
        let count: &[u8] = if on { b"0" } else { b"inf" };
        let (status, body) = self.http("POST", "/moto-api/reset-auth", &[], count).await?;
        if status != 200 {
            bail!("reset-auth: HTTP {status}: {}", String::from_utf8_lossy(&body));
        }
        Ok(())
    }

    /// Creates a bucket (authentication must be off).
    pub async fn create_bucket(&self, bucket: &str) -> Result<()> {
        let (status, body) = self.s3("PUT", &format!("/{bucket}"), b"").await?;
        if status != 200 {
            bail!("creating bucket {bucket}: HTTP {status}: {}", String::from_utf8_lossy(&body));
        }
        Ok(())
    }

    /// An IAM user allowed `s3:*`, returning its access key id and secret
    /// (authentication must be off).
    pub async fn s3_user(&self, name: &str) -> Result<(String, String)> {
        let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#;
        self.iam(&format!("Action=CreateUser&UserName={name}")).await?;
        let keys = self.iam(&format!("Action=CreateAccessKey&UserName={name}")).await?;
        self.iam(&format!(
            "Action=PutUserPolicy&UserName={name}&PolicyName=s3&PolicyDocument={}",
            form_encode(policy)
        ))
        .await?;
        let id = xml_text(&keys, "AccessKeyId").context("no AccessKeyId")?;
        let secret = xml_text(&keys, "SecretAccessKey").context("no SecretAccessKey")?;
        Ok((id, secret))
    }

    async fn iam(&self, form: &str) -> Result<String> {
        let headers =
            [("Authorization", IAM_SCOPE), ("Content-Type", "application/x-www-form-urlencoded")];
        let body = format!("{form}&Version=2010-05-08");
        let (status, out) = self.http("POST", "/", &headers, body.as_bytes()).await?;
        let out = String::from_utf8_lossy(&out).into_owned();
        if status != 200 {
            bail!("IAM {form}: HTTP {status}: {out}");
        }
        Ok(out)
    }

    /// Stops the server.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking()
            && let Some(dir) = self.dir.take()
        {
            keep_failed(dir, "moto's");
        }
    }
}

async fn moto_answers(port: u16) -> Option<()> {
    let (status, _) = http(port, "GET", "/moto-api/data.json", &[], b"").await.ok()?;
    (status == 200).then_some(())
}

/// `application/x-www-form-urlencoded` of a value.
fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn xml_text(doc: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = doc.find(&open)? + open.len();
    let end = doc[start..].find(&format!("</{tag}>"))? + start;
    Some(doc[start..end].trim().to_string())
}

/// A minimal HTTP/1.1 exchange: one request, `Connection: close`, the
/// answer read to its end (chunked or not). The GCS emulator's helpers use
/// it too.
pub(crate) async fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(u16, Vec<u8>)> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await?;
    s.write_all(body).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut raw))
        .await
        .context("the server did not answer within 30 s")??;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").context("no end of headers")?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut rest = raw[split + 4..].to_vec();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line: {head}"))?;
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        rest = dechunk(&rest)?;
    }
    Ok((status, rest))
}

fn dechunk(mut b: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n").context("bad chunk")?;
        let size = usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16)?;
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 4 + size..];
    }
}
