//! What the network blobstore providers (`s3`, `gcs`) share: reading
//! `blobstore.options`, a mistake in them named by file and option, the
//! runtime their synchronous [`Blobstore`](bosh_api::release::blobs::Blobstore)
//! calls block on, and streaming a body to or from a file through
//! [`crate::fetch::send`]'s hyper client.
//!
//! The digest check of every download is not here: bosh-api's
//! `sync_blobs_with` and final-build fetches check it before a file enters
//! `blobs/` or the cache, for every provider alike.

use std::path::Path;
use std::time::Duration;

use indexmap::IndexMap;
use serde_json::Value;

use crate::fetch;

/// Where public options live, and where secrets live.
pub(crate) const FINAL_YML: &str = "config/final.yml";
pub(crate) const PRIVATE_YML: &str = "config/private.yml";

/// How much of an error answer is read for the server's message.
const ERROR_BODY_MAX: usize = 64 << 10;

/// An option missing or wrong: `config/final.yml: blobstore.options.KEY: ...`.
#[derive(Debug, thiserror::Error)]
#[error("{file}: blobstore.options.{key}: {message}")]
pub(crate) struct BadOption {
    /// `config/final.yml` or `config/private.yml`.
    pub file: &'static str,
    /// The option.
    pub key: &'static str,
    /// What is wrong, and what was expected.
    pub message: String,
}

impl BadOption {
    pub(crate) fn new(file: &'static str, key: &'static str, message: impl Into<String>) -> Self {
        BadOption { file, key, message: message.into() }
    }
}

/// Why a body could not be streamed to a file.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// The server stopped sending, or the connection broke.
    Network(String),
    /// The file could not be written.
    Io(std::io::Error),
}

/// A string option (numbers and booleans as written); empty counts as unset.
pub(crate) fn opt_str(o: &IndexMap<String, Value>, key: &str) -> Option<String> {
    match o.get(key)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A boolean option, `true`/`false` or their strings.
pub(crate) fn opt_bool(
    o: &IndexMap<String, Value>,
    key: &'static str,
    default: bool,
) -> Result<bool, BadOption> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s == "true" || s == "false" => Ok(s == "true"),
        Some(other) => {
            Err(BadOption::new(FINAL_YML, key, format!("expected true or false, got {other}")))
        }
    }
}

/// The runtime a provider's requests run to completion on (the release
/// verbs are synchronous).
pub(crate) fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()
}

/// Writes `resp`'s body to `dest`, allowing the server [`fetch::READ_TIMEOUT`]
/// of silence between chunks; returns the bytes written.
pub(crate) async fn save_body(
    resp: hyper::Response<hyper::body::Incoming>,
    dest: &Path,
) -> Result<u64, BodyError> {
    use http_body_util::BodyExt;
    let mut out = tokio::fs::File::create(dest).await.map_err(BodyError::Io)?;
    let mut body = resp.into_body();
    let mut bytes = 0u64;
    loop {
        let frame =
            tokio::time::timeout(fetch::READ_TIMEOUT, body.frame()).await.map_err(|_| {
                BodyError::Network(format!(
                    "the server sent nothing for {} s",
                    fetch::READ_TIMEOUT.as_secs()
                ))
            })?;
        let Some(frame) = frame else { break };
        let frame = frame.map_err(|e| BodyError::Network(fetch::chain(&e)))?;
        let Ok(chunk) = frame.into_data() else { continue };
        tokio::io::AsyncWriteExt::write_all(&mut out, &chunk).await.map_err(BodyError::Io)?;
        bytes += chunk.len() as u64;
    }
    tokio::io::AsyncWriteExt::flush(&mut out).await.map_err(BodyError::Io)?;
    Ok(bytes)
}

/// An answer's body as text, at most [`ERROR_BODY_MAX`] of it and empty if
/// it does not come in time (for the message of an error status).
pub(crate) async fn error_body(resp: hyper::Response<hyper::body::Incoming>) -> String {
    use http_body_util::BodyExt;
    let limited = http_body_util::Limited::new(resp.into_body(), ERROR_BODY_MAX);
    match tokio::time::timeout(fetch::READ_TIMEOUT, limited.collect()).await {
        Ok(Ok(b)) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
        _ => String::new(),
    }
}

/// A request body of `head`, the file `src` streamed from disk, and `tail`
/// (a multipart upload's framing around the file; both empty for a plain
/// one). Returns it with its length.
pub(crate) async fn file_body(
    src: &Path,
    head: Vec<u8>,
    tail: Vec<u8>,
) -> std::io::Result<(fetch::Body, u64)> {
    use futures::{StreamExt, TryStreamExt};
    use http_body_util::BodyExt;
    let file = tokio::fs::File::open(src).await?;
    let len = file.metadata().await?.len() + (head.len() + tail.len()) as u64;
    let head = futures::stream::iter([Ok(bytes::Bytes::from(head))]);
    let tail = futures::stream::iter([Ok(bytes::Bytes::from(tail))]);
    let stream = head
        .chain(tokio_util::io::ReaderStream::new(file))
        .chain(tail)
        .try_filter(|b| std::future::ready(!b.is_empty()))
        .map_ok(hyper::body::Frame::data);
    Ok((http_body_util::StreamBody::new(stream).boxed_unsync(), len))
}

/// How long an upload of `len` bytes may take to be answered: the usual
/// silence allowance plus 1 s per MiB (the answer comes after the whole body).
pub(crate) fn upload_within(len: u64) -> Duration {
    fetch::READ_TIMEOUT + Duration::from_secs(len >> 20)
}

/// `scheme://host[:port]` of a URL, for messages (never a path or query).
pub(crate) fn origin(u: &reqwest::Url) -> String {
    u.origin().ascii_serialization()
}
