//! Content-addressed blobstore: release jobs and packages, compiled packages,
//! rendered templates and stemcell images, each named by the sha256 of its
//! content.
//!
//! Naming a blob by its digest makes every write idempotent (two uploads of
//! the same bytes land on the same name, so concurrent or retried uploads are
//! harmless) and makes every read checkable: whoever holds a name can tell a
//! wrong body from the right one. So nothing trusts the disk or the wire. The
//! storage hashes while it writes and refuses a body that does not match the
//! digest the uploader expected; the server hashes again while it serves, and
//! cuts off a blob that rotted on disk; the client hashes a third time before
//! it renames a download into place. A corrupt blob is never delivered as if
//! it were good.
//!
//! Bodies are streamed end to end (a temp file on each side, renamed into
//! place when complete and verified), so a multi-gigabyte stemcell costs no
//! more memory than a template.
//!
//! # Layout
//!
//! - [`storage`]: the [`Storage`] trait and [`LocalStorage`], the default
//!   backend (`<root>/<sha[0..2]>/<sha>`).
//! - [`server`]: the HTTP API boshd serves to agents and the CLI
//!   (`PUT/GET/HEAD/DELETE /blobs/<sha256>`, bearer-token auth).
//! - [`client`]: [`Client`], used by agents and `boshctl`.

pub mod client;
pub mod server;
pub mod storage;
mod wire;

use std::path::PathBuf;

use sha2::{Digest as _, Sha256};

pub use client::Client;
pub use storage::{BlobReader, BoxFuture, ByteStream, LocalStorage, Storage};

/// The name and size of a stored blob; what a release or instance spec
/// keeps. It is bosh-api's, so what the store returns goes into objects and
/// agent messages as it is.
pub use bosh_api::objects::BlobRef;

/// Everything that can go wrong storing, serving or fetching a blob.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No blob has this name.
    #[error("blob {sha256} not found")]
    NotFound {
        /// The name asked for.
        sha256: String,
    },
    /// Content did not hash to the name it was stored, uploaded or served
    /// under; nothing was stored or delivered.
    #[error("blob digest mismatch: expected sha256 {expected}, got {actual}")]
    Digest {
        /// The name the content was supposed to have.
        expected: String,
        /// What the content actually hashes to.
        actual: String,
    },
    /// A string that should name a blob is not 64 lowercase hex digits; it
    /// is refused before it can become part of a path.
    #[error("invalid blob name {value:?}: expected 64 lowercase hex digits (a sha256)")]
    InvalidDigest {
        /// The offending string.
        value: String,
    },
    /// The server refused the bearer token.
    #[error("blobstore refused the token (401 Unauthorized)")]
    Unauthorized,
    /// The server answered with a status the client did not expect.
    #[error("blobstore {method} {url} failed with HTTP {status}: {message}")]
    Http {
        /// Request method.
        method: &'static str,
        /// Request URL.
        url: String,
        /// HTTP status code.
        status: u16,
        /// The server's error message, if it sent one.
        message: String,
    },
    /// The request could not be sent or its response could not be read,
    /// including a download the server cut short because the blob failed
    /// its digest check while streaming.
    #[error("blobstore {method} {url} failed")]
    Transport {
        /// Request method.
        method: &'static str,
        /// Request URL.
        url: String,
        /// What the HTTP client reported.
        #[source]
        source: reqwest::Error,
    },
    /// The body being uploaded failed before it ended (the client went away,
    /// or the local file could not be read).
    #[error("upload stream failed")]
    Upload {
        /// What the stream reported.
        #[source]
        source: std::io::Error,
    },
    /// A local file operation failed.
    #[error("I/O error on {path}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// What the OS reported.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Whether the store could not be reached at all (nothing was said by
    /// it): another address of the same store may answer.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Error::Transport { source, .. } if source.is_connect())
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Whether `s` is a well-formed blob name: exactly 64 lowercase hex digits.
///
/// Only one spelling is accepted so that a blob has one name (and one path).
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Returns `Ok(())` for a well-formed blob name, [`Error::InvalidDigest`]
/// otherwise.
pub fn check_sha256(s: &str) -> Result<()> {
    if is_sha256(s) { Ok(()) } else { Err(Error::InvalidDigest { value: s.to_owned() }) }
}

/// The lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The empty-content digest is a valid name; anything else malformed is not.
    #[test]
    fn only_lowercase_64_hex_digits_are_blob_names() {
        let empty = sha256_hex(b"");
        assert_eq!(empty, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert!(is_sha256(&empty));
        assert!(!is_sha256(&empty.to_uppercase()));
        assert!(!is_sha256(&empty[1..]));
        assert!(!is_sha256("../../../../../../../../../../../../../../../../../etc/passwd00"));
        assert!(matches!(check_sha256("x"), Err(Error::InvalidDigest { .. })));
    }

    /// BlobRef is stored in specs as `{"sha256","size"}`.
    #[test]
    fn blob_ref_serializes_as_sha256_and_size() {
        let r = BlobRef { sha256: "ab".into(), size: 3 };
        assert_eq!(serde_json::to_string(&r).unwrap(), r#"{"sha256":"ab","size":3}"#);
    }
}
