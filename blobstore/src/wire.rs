//! The JSON error body shared by the server and the client.

use serde::{Deserialize, Serialize};

/// Header an uploader may set on `PUT /blobs` to name the digest it expects.
pub(crate) const EXPECTED_SHA256_HEADER: &str = "x-blob-sha256";

/// What the server sends with every non-2xx answer, so the client can turn
/// it back into the matching [`crate::Error`] variant.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ErrorBody {
    /// Machine-readable kind: `digest`, `not_found`, `invalid_digest`,
    /// `unauthorized`, `upload` or `storage`.
    pub code: String,
    /// Human-readable message.
    pub error: String,
    /// For `digest`: the expected sha256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    /// For `digest`: the actual sha256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actual: Option<String>,
}
