//! Downloads of release and stemcell tarballs from URLs, as `bosh
//! upload-release URL --sha1 ...` does: HTTPS through rustls, trusting the
//! system's CA bundle plus `--ca-cert`; a redirect may not leave HTTPS;
//! the digest is checked as the bytes arrive, and a file whose digest
//! differs is deleted before anything is uploaded.
//!
//! Why hyper and tokio-rustls rather than reqwest's TLS: reqwest's rustls
//! features are unified across the workspace, and would make every other
//! reqwest client (the agent's, boshd's) demand a process-wide crypto
//! provider; this module keeps TLS to itself, with ring like the rest.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha1::Digest as _;

/// How long connecting may take, and how long the server may stay silent.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The `--sha1` value is neither 40 hex digits nor `sha256:<64 hex>`.
    #[error("--sha1 {0:?}: expected 40 hex digits (sha1) or sha256:<64 hex digits>")]
    BadDigest(String),
    /// `--ca-cert` could not be read or holds no certificate.
    #[error("--ca-cert {path}: {message}")]
    CaCert {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The request failed (TLS, connection, timeout, redirect).
    #[error("downloading {url}: {message}")]
    Request {
        /// The URL.
        url: String,
        /// reqwest's error chain.
        message: String,
    },
    /// The server answered with an error status.
    #[error("downloading {url}: HTTP {status}")]
    Status {
        /// The URL.
        url: String,
        /// What it answered.
        status: reqwest::StatusCode,
    },
    /// The bytes are not what `--sha1` says.
    #[error("{url}: digest {got} does not match --sha1 {want}; nothing was uploaded")]
    Mismatch {
        /// The URL.
        url: String,
        /// The expected digest, as given.
        want: String,
        /// The digest of what was served, in the same algorithm.
        got: String,
    },
    /// Writing the file failed.
    #[error("writing {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// An expected digest, as `--sha1` takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// 40 hex digits.
    Sha1(String),
    /// `sha256:` and 64 hex digits.
    Sha256(String),
}

impl Expected {
    /// Parses `--sha1`'s value.
    pub fn parse(s: &str) -> Result<Expected, FetchError> {
        let hex = |h: &str, n: usize| h.len() == n && h.bytes().all(|b| b.is_ascii_hexdigit());
        let lower = s.trim().to_ascii_lowercase();
        match lower.strip_prefix("sha256:") {
            Some(h) if hex(h, 64) => Ok(Expected::Sha256(h.to_string())),
            None if hex(&lower, 40) => Ok(Expected::Sha1(lower)),
            _ => Err(FetchError::BadDigest(s.to_string())),
        }
    }
}

/// A URL argument: `http://` or `https://`.
pub fn is_url(arg: &str) -> bool {
    arg.starts_with("https://") || arg.starts_with("http://")
}

/// The TLS configuration: ring, the system's roots, and `ca_cert`'s.
pub(crate) fn tls(ca_cert: Option<&Path>) -> Result<rustls::ClientConfig, FetchError> {
    let mut roots = rustls::RootCertStore::empty();
    // A machine without a CA bundle still reaches a server of `--ca-cert`.
    let system = rustls_native_certs::load_native_certs();
    let (added, _) = roots.add_parsable_certificates(system.certs);
    tracing::debug!(added, "system CA certificates");
    if let Some(path) = ca_cert {
        use rustls::pki_types::pem::PemObject as _;
        let err = |message: String| FetchError::CaCert { path: path.to_path_buf(), message };
        let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<_, _>>()
            .map_err(|e| err(format!("not PEM certificates: {e}")))?;
        if certs.is_empty() {
            return Err(err("no certificate in the file".into()));
        }
        for c in certs {
            roots.add(c).map_err(|e| err(e.to_string()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// An error and its sources, `: `-separated.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// What a connection is: TCP, or TLS over it.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// A request body: empty, or a file streamed from disk.
pub(crate) type Body = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, std::io::Error>;

/// An empty [`Body`].
pub(crate) fn empty() -> Body {
    use http_body_util::BodyExt;
    http_body_util::Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// One GET of `u` on a connection of its own.
async fn get(
    tls: &tokio_rustls::TlsConnector,
    u: &reqwest::Url,
) -> Result<hyper::Response<hyper::body::Incoming>, String> {
    send(tls, u, hyper::Request::get(u.as_str()), empty(), READ_TIMEOUT).await
}

/// Sends `request` (its method and headers; the target and `Host` are set
/// from `u`) with `body` to `u` on a connection of its own, over TLS for
/// `https`; the answer's head must come within `answer_within` of the
/// request starting (for an upload: the whole body sent, and answered).
/// Shared by downloads and the `s3` blobstore.
pub(crate) async fn send(
    tls: &tokio_rustls::TlsConnector,
    u: &reqwest::Url,
    request: hyper::http::request::Builder,
    body: Body,
    answer_within: Duration,
) -> Result<hyper::Response<hyper::body::Incoming>, String> {
    let host = u.host_str().ok_or("no host")?.to_string();
    let port = u.port_or_known_default().ok_or("no port")?;
    let connect = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port));
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| format!("no connection within {} s", CONNECT_TIMEOUT.as_secs()))?
        .map_err(|e| chain(&e))?;
    let io: Box<dyn Io> = match u.scheme() {
        "https" => {
            let name = rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']))
                .map_err(|e| chain(&e))?
                .to_owned();
            Box::new(tls.connect(name, tcp).await.map_err(|e| chain(&e))?)
        }
        "http" => Box::new(tcp),
        other => return Err(format!("unsupported scheme {other}")),
    };
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
            .await
            .map_err(|e| chain(&e))?;
    // Ends when the body is read and `sender` dropped.
    tokio::spawn(conn);
    let target = match u.query() {
        Some(q) => format!("{}?{q}", u.path()),
        None => u.path().to_string(),
    };
    let authority = match u.port() {
        Some(p) => format!("{host}:{p}"),
        None => host,
    };
    let request = request
        .uri(target)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::USER_AGENT, "boshctl")
        .body(body)
        .map_err(|e| chain(&e))?;
    tokio::time::timeout(answer_within, sender.send_request(request))
        .await
        .map_err(|_| format!("no answer within {} s", answer_within.as_secs()))?
        .map_err(|e| chain(&e))
}

/// Downloads `url` to `dest` with `progress` told of each chunk, checking
/// `want` (if any) as the bytes arrive; a mismatch deletes `dest`. Follows
/// up to 10 redirects, never from https to another scheme.
pub async fn download(
    url: &str,
    dest: &Path,
    want: Option<&Expected>,
    ca_cert: Option<&Path>,
    progress: impl Fn(Option<u64>, u64),
) -> Result<(), FetchError> {
    use http_body_util::BodyExt;
    let request = |message: String| FetchError::Request { url: url.to_string(), message };
    let io = |source| FetchError::Io { path: dest.to_path_buf(), source };
    let tls = tokio_rustls::TlsConnector::from(Arc::new(tls(ca_cert)?));
    let mut at = reqwest::Url::parse(url).map_err(|e| request(e.to_string()))?;
    let mut hops = 0;
    let resp = loop {
        let resp = get(&tls, &at).await.map_err(request)?;
        if !resp.status().is_redirection() {
            break resp;
        }
        let location = resp
            .headers()
            .get(hyper::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .ok_or_else(|| request(format!("HTTP {} without a location", resp.status())))?;
        let next = at.join(location).map_err(|e| request(format!("redirect: {e}")))?;
        if at.scheme() == "https" && next.scheme() != "https" {
            return Err(request(format!("a redirect from https to {next} is refused")));
        }
        hops += 1;
        if hops > 10 {
            return Err(request("more than 10 redirects".into()));
        }
        at = next;
    };
    if !resp.status().is_success() {
        return Err(FetchError::Status { url: url.to_string(), status: resp.status() });
    }
    let total = resp
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let mut body = resp.into_body();
    let mut out = tokio::fs::File::create(dest).await.map_err(io)?;
    let (mut sha1, mut sha256) = (sha1::Sha1::new(), sha2::Sha256::new());
    loop {
        let frame = tokio::time::timeout(READ_TIMEOUT, body.frame()).await.map_err(|_| {
            request(format!("the server sent nothing for {} s", READ_TIMEOUT.as_secs()))
        })?;
        let Some(frame) = frame else { break };
        let frame = frame.map_err(|e| request(chain(&e)))?;
        let Ok(chunk) = frame.into_data() else { continue };
        tokio::io::AsyncWriteExt::write_all(&mut out, &chunk).await.map_err(io)?;
        sha1.update(&chunk);
        sha2::Digest::update(&mut sha256, &chunk);
        progress(total, chunk.len() as u64);
    }
    tokio::io::AsyncWriteExt::flush(&mut out).await.map_err(io)?;
    let got = match want {
        None => return Ok(()),
        Some(Expected::Sha1(w)) => (hex::encode(sha1.finalize()), w),
        Some(Expected::Sha256(w)) => (hex::encode(sha2::Digest::finalize(sha256)), w),
    };
    if got.0 != *got.1 {
        drop(out);
        let _ = std::fs::remove_file(dest);
        let prefix = if matches!(want, Some(Expected::Sha256(_))) { "sha256:" } else { "" };
        return Err(FetchError::Mismatch {
            url: url.to_string(),
            want: format!("{prefix}{}", got.1),
            got: format!("{prefix}{}", got.0),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--sha1` takes sha1 hex or `sha256:` hex, any case; anything else is
    /// refused before a byte is fetched.
    #[test]
    fn digests_parse_as_bosh_writes_them() {
        let sha1 = "DA39A3EE5E6B4B0D3255BFEF95601890AFD80709";
        assert_eq!(Expected::parse(sha1).unwrap(), Expected::Sha1(sha1.to_lowercase()));
        let h = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(Expected::parse(&format!("sha256:{h}")).unwrap(), Expected::Sha256(h.into()));
        for bad in ["", "abc", "sha256:abc", &format!("sha1:{sha1}"), h] {
            assert!(matches!(Expected::parse(bad), Err(FetchError::BadDigest(_))), "{bad}");
        }
    }
}
