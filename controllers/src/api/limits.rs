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
        return cap.refuse(Some(n));
    }
    let exceeded = Arc::new(AtomicBool::new(false));
    let (parts, body) = req.into_parts();
    let mut seen = 0u64;
    let flag = exceeded.clone();
    let capped = body.into_data_stream().map(move |chunk| {
        let chunk = chunk.map_err(std::io::Error::other)?;
        seen += chunk.len() as u64;
        if seen > cap.limit {
            flag.store(true, Ordering::Release);
            return Err(std::io::Error::other(format!(
                "{} is larger than {} bytes",
                cap.what, cap.limit
            )));
        }
        Ok(chunk)
    });
    let resp = next.run(Request::from_parts(parts, Body::from_stream(capped))).await;
    if exceeded.load(Ordering::Acquire) { cap.refuse(None) } else { resp }
}
