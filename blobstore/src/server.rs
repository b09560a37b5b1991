//! The blobstore's HTTP API, served by boshd to agents and the CLI.
//!
//! | route | answer |
//! | --- | --- |
//! | `PUT /blobs` | store the body; expected digest optional (`x-blob-sha256` header or `?sha256=`); `201 {"sha256","size"}` |
//! | `PUT /blobs/<sha256>` | store the body, refused with `400` (nothing stored) unless it hashes to `<sha256>` |
//! | `GET /blobs/<sha256>` | the body, checked against its name while it streams |
//! | `HEAD /blobs/<sha256>` | `200` with `content-length`, or `404` |
//! | `DELETE /blobs/<sha256>` | `204`, or `404` |
//! | `GET /blobs` | `[{"sha256","size"}, ...]` |
//!
//! Every route needs `Authorization: Bearer <token>` (the scheme in any
//! case), or HTTP Basic with the token as the password (any user name), as
//! a BOSH `dav` blobstore client sends its `user` and `password` options;
//! the token is compared in constant time. Errors carry a JSON body (`{"code","error",...}`) that the
//! [`crate::Client`] maps back to [`crate::Error`].
//!
//! # Reading is checked
//!
//! A blob that rotted on disk must never reach an agent as if it were good.
//! Blobs up to [`VERIFY_UPFRONT_MAX`] bytes are read and hashed before the
//! first byte goes out, so a corrupt one gets a clean `500` with code
//! `digest`. Larger blobs are hashed while they stream, and the last chunk
//! is held back until the hash is known: on a mismatch the response is
//! aborted short of its `content-length`, so the client sees a broken
//! download rather than a complete wrong one. (The client re-hashes anyway.)

use std::future::Future;
use std::io;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::put;
use bytes::Bytes;
use futures::StreamExt as _;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncReadExt as _;
use tokio_util::io::ReaderStream;

use crate::wire::{EXPECTED_SHA256_HEADER, ErrorBody};
use crate::{BlobReader, Error, Storage, check_sha256};

/// Blobs up to this size are verified before serving (and held in memory
/// for that moment); larger ones are verified while streaming.
pub const VERIFY_UPFRONT_MAX: u64 = 1024 * 1024;

#[derive(Clone)]
struct AppState {
    storage: Arc<dyn Storage>,
    /// sha256 of the configured token; comparing digests keeps the compare
    /// constant-time regardless of the presented token's length.
    token_digest: Option<[u8; 32]>,
}

/// The blobstore routes, ready to be served or nested into boshd's router.
///
/// An empty `token` locks every route (fail closed) rather than opening them.
pub fn router(storage: Arc<dyn Storage>, token: String) -> Router {
    let token_digest = (!token.is_empty()).then(|| Sha256::digest(token.as_bytes()).into());
    let state = AppState { storage, token_digest };
    Router::new()
        .route("/blobs", put(put_blob).get(list_blobs))
        .route(
            "/blobs/{sha256}",
            put(put_named_blob).get(get_blob).head(head_blob).delete(delete_blob),
        )
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        // Bodies are streamed to disk, never buffered, so no size cap here.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// Serves [`router`] on `listener` until `shutdown` resolves, then finishes
/// in-flight requests and returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    storage: Arc<dyn Storage>,
    token: String,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    axum::serve(listener, router(storage, token)).with_graceful_shutdown(shutdown).await
}

/// The token an `Authorization` header presents: `Bearer <token>`, or
/// `Basic base64(<user>:<token>)` (what a BOSH `dav` blobstore client
/// sends; the user name is not checked). Schemes are case-insensitive
/// (RFC 9110 §11.1), so `bearer` and `BASIC` are accepted.
fn presented_token(headers: &HeaderMap) -> Option<String> {
    use base64::Engine as _;
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, credentials) = value.trim().split_once(' ')?;
    let credentials = credentials.trim_start();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(credentials.to_string());
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(credentials).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    decoded.split_once(':').map(|(_, password)| password.to_string())
}

async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let presented = presented_token(req.headers());
    let ok = match (presented, state.token_digest) {
        (Some(presented), Some(want)) => {
            let got: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
            got.iter().zip(want.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
        }
        _ => false,
    };
    if ok { next.run(req).await } else { ApiError(Error::Unauthorized).into_response() }
}

#[derive(Deserialize)]
struct PutQuery {
    sha256: Option<String>,
}

async fn put_blob(
    State(state): State<AppState>,
    Query(query): Query<PutQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let from_header = headers.get(EXPECTED_SHA256_HEADER).map(|v| {
        v.to_str().map(str::to_owned).map_err(|_| Error::InvalidDigest { value: format!("{v:?}") })
    });
    let expected = match (from_header.transpose()?, query.sha256) {
        (Some(h), Some(q)) if h != q => {
            return Err(ApiError(Error::Digest { expected: h, actual: q }));
        }
        (h, q) => h.or(q),
    };
    store(&state, body, expected.as_deref()).await
}

async fn put_named_blob(
    State(state): State<AppState>,
    Path(sha256): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    store(&state, body, Some(&sha256)).await
}

async fn store(state: &AppState, body: Body, expected: Option<&str>) -> Result<Response, ApiError> {
    if let Some(expected) = expected {
        check_sha256(expected)?;
    }
    let stream = body.into_data_stream().map(|r| r.map_err(io::Error::other));
    let blob = state.storage.put_stream(Box::pin(stream), expected).await?;
    Ok((StatusCode::CREATED, axum::Json(blob)).into_response())
}

async fn get_blob(
    State(state): State<AppState>,
    Path(sha256): Path<String>,
) -> Result<Response, ApiError> {
    check_sha256(&sha256)?;
    let (mut reader, size) = state.storage.get(&sha256).await?;
    let body = if size <= VERIFY_UPFRONT_MAX {
        let mut buf = Vec::with_capacity(size as usize);
        reader
            .read_to_end(&mut buf)
            .await
            .map_err(|source| Error::Io { path: format!("blob {sha256}").into(), source })?;
        let actual = hex::encode(Sha256::digest(&buf));
        if actual != sha256 {
            tracing::error!(sha256, actual, "stored blob is corrupt; refusing to serve it");
            return Ok(corrupt_blob(sha256, actual));
        }
        Body::from(buf)
    } else {
        Body::from_stream(verifying_stream(reader, sha256))
    };
    Ok(([(header::CONTENT_LENGTH, size.to_string())], body).into_response())
}

/// Streams `reader`, hashing as it goes and holding the latest chunk back
/// until the next one (or the end) arrives, so the final chunk is only
/// released once the whole content is known to hash to `sha256`.
fn verifying_stream(
    reader: BlobReader,
    sha256: String,
) -> impl futures::Stream<Item = io::Result<Bytes>> + Send {
    struct St {
        inner: ReaderStream<BlobReader>,
        hasher: Sha256,
        held: Option<Bytes>,
        sha256: String,
        done: bool,
    }
    let st = St {
        inner: ReaderStream::with_capacity(reader, 64 * 1024),
        hasher: Sha256::new(),
        held: None,
        sha256,
        done: false,
    };
    futures::stream::unfold(st, |mut st| async move {
        if st.done {
            return None;
        }
        loop {
            match st.inner.next().await {
                Some(Ok(chunk)) => {
                    st.hasher.update(&chunk);
                    if let Some(prev) = st.held.replace(chunk) {
                        return Some((Ok(prev), st));
                    }
                }
                Some(Err(e)) => {
                    st.done = true;
                    return Some((Err(e), st));
                }
                None => {
                    st.done = true;
                    let actual = hex::encode(std::mem::take(&mut st.hasher).finalize());
                    if actual != st.sha256 {
                        tracing::error!(
                            sha256 = %st.sha256, actual, "stored blob is corrupt; aborting download"
                        );
                        let msg = format!("blob {} is corrupt (hashes to {actual})", st.sha256);
                        return Some((Err(io::Error::other(msg)), st));
                    }
                    return st.held.take().map(|last| (Ok(last), st));
                }
            }
        }
    })
}

async fn head_blob(
    State(state): State<AppState>,
    Path(sha256): Path<String>,
) -> Result<Response, ApiError> {
    match state.storage.stat(&sha256).await? {
        Some(size) => Ok(([(header::CONTENT_LENGTH, size.to_string())], ()).into_response()),
        None => Err(ApiError(Error::NotFound { sha256 })),
    }
}

async fn delete_blob(
    State(state): State<AppState>,
    Path(sha256): Path<String>,
) -> Result<Response, ApiError> {
    if state.storage.delete(&sha256).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError(Error::NotFound { sha256 }))
    }
}

async fn list_blobs(State(state): State<AppState>) -> Result<Response, ApiError> {
    Ok(axum::Json(state.storage.list().await?).into_response())
}

/// An [`Error`] on its way out as an HTTP answer.
struct ApiError(Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

/// A stored blob that fails its digest check: the server's fault, so `500`
/// (an upload that fails it is the caller's, `400`); both carry code `digest`.
fn corrupt_blob(expected: String, actual: String) -> Response {
    let mut resp = ApiError(Error::Digest { expected, actual }).into_response();
    *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    resp
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self.0 {
            Error::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
            Error::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Error::InvalidDigest { .. } => (StatusCode::BAD_REQUEST, "invalid_digest"),
            Error::Upload { .. } => (StatusCode::BAD_REQUEST, "upload"),
            Error::Digest { .. } => (StatusCode::BAD_REQUEST, "digest"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "storage"),
        };
        let (expected, actual) = match &self.0 {
            Error::Digest { expected, actual } => (Some(expected.clone()), Some(actual.clone())),
            _ => (None, None),
        };
        let error = match &self.0 {
            // Keep server paths out of answers; the log has the detail.
            Error::Io { .. } => {
                tracing::error!(error = ?self.0, "blobstore storage error");
                "storage error".to_owned()
            }
            e => e.to_string(),
        };
        let body = ErrorBody { code: code.to_owned(), error, expected, actual };
        (status, axum::Json(body)).into_response()
    }
}
