//! How big a request body may be: capped while it streams, refused with
//! `413` naming the limit, the size and the boshd flag that sets it.
//!
//! The cap is a middleware rather than a per-handler check so that no
//! route can forget it: a body over the limit is refused from its
//! `content-length` before a byte is read, and a body without one (chunked)
//! is cut off at the first chunk past the limit. In that case the handler
//! sees a failed body read and answers some error; the middleware then
//! replaces that answer with the `413`, so every route gives the same one.
//! Nothing is held in memory beyond what the handler itself buffers, and
//! the JSON routes buffer at most the limit.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

use super::ApiError;

/// Default cap of a JSON or YAML request body (a manifest, a config, an
/// action): far above any real manifest, far below what hurts the director.
pub const DEFAULT_MAX_REQUEST_BYTES: u64 = 8 * 1024 * 1024;

/// Default cap of an uploaded release or stemcell tarball, streamed to disk.
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 20 * 1024 * 1024 * 1024;

/// The API's body limits (boshd `--max-request-bytes`, `--max-upload-bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Cap of a JSON or YAML request body.
    pub max_request_bytes: u64,
    /// Cap of an upload body (release and stemcell tarballs).
    pub max_upload_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_upload_bytes: DEFAULT_MAX_UPLOAD_BYTES,
        }
    }
}

/// One cap on a group of routes, and how to name it in the refusal.
#[derive(Debug, Clone, Copy)]
pub(super) struct BodyCap {
    /// Most bytes accepted.
    limit: u64,
    /// What the body is, for the message ("request body", "upload").
    what: &'static str,
    /// The boshd flag that sets `limit`.
    flag: &'static str,
}

impl BodyCap {
    /// The cap of JSON and YAML routes.
    pub(super) fn request(limits: Limits) -> BodyCap {
        BodyCap {
            limit: limits.max_request_bytes,
            what: "request body",
            flag: "--max-request-bytes",
        }
    }

    /// The cap of upload routes.
    pub(super) fn upload(limits: Limits) -> BodyCap {
        BodyCap { limit: limits.max_upload_bytes, what: "upload", flag: "--max-upload-bytes" }
    }

    /// The `413`; `size` is the body's length when it was announced.
    fn refuse(&self, size: Option<u64>) -> Response {
        let (limit, what, flag) = (self.limit, self.what, self.flag);
        let size = match size {
            Some(n) => format!("of {n} bytes "),
            None => String::new(),
        };
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{what} {size}is larger than the director's limit of {limit} bytes \
                 (set with boshd {flag})"
            ),
        )
        .into_response()
    }
}

/// How much of a refused body is still read (and discarded) before the
/// `413` goes out, and for how long. A server that answers and closes
/// while the client is still sending makes the client's kernel see a reset,
/// and the client then reports a broken connection instead of the `413`;
/// reading the rest first (as nginx's lingering close does) lets the
/// answer arrive. Bodies announced as larger are refused at once.
const DRAIN_MAX_BYTES: u64 = 64 * 1024 * 1024;
const DRAIN_MAX_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads and discards what is left of `body`, within the drain bounds.
async fn drain<S>(mut body: S)
where
    S: futures::Stream<Item = Result<bytes::Bytes, axum::Error>> + Unpin,
{
    let read = async {
        let mut n = 0u64;
        while let Some(Ok(chunk)) = body.next().await {
            n += chunk.len() as u64;
            if n > DRAIN_MAX_BYTES {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_MAX_TIME, read).await;
}

/// The middleware: refuses or cuts off a body larger than the cap.
pub(super) async fn cap_body(State(cap): State<BodyCap>, req: Request, next: Next) -> Response {
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = announced
        && n > cap.limit
    {
        if n <= DRAIN_MAX_BYTES {
            drain(req.into_body().into_data_stream()).await;
        }
        return cap.refuse(Some(n));
    }
    let exceeded = Arc::new(AtomicBool::new(false));
    let (parts, body) = req.into_parts();
    let flag = exceeded.clone();
    // Passes chunks on until the cap; past it, drains the rest and ends
    // with an error, which fails the handler's read.
    let capped = futures::stream::unfold(
        (body.into_data_stream(), 0u64, false),
        move |(mut inner, seen, over)| {
            let flag = flag.clone();
            async move {
                if over {
                    return None;
                }
                let chunk = match inner.next().await? {
                    Ok(chunk) => chunk,
                    Err(e) => return Some((Err(std::io::Error::other(e)), (inner, seen, true))),
                };
                let seen = seen + chunk.len() as u64;
                if seen <= cap.limit {
                    return Some((Ok(chunk), (inner, seen, false)));
                }
                flag.store(true, Ordering::Release);
                drain(&mut inner).await;
                let e = std::io::Error::other(format!(
                    "{} is larger than {} bytes",
                    cap.what, cap.limit
                ));
                Some((Err(e), (inner, seen, true)))
            }
        },
    );
    let resp = next.run(Request::from_parts(parts, Body::from_stream(capped))).await;
    if exceeded.load(Ordering::Acquire) { cap.refuse(None) } else { resp }
}
