//! Release uploads and exports. A release is stored as an
//! `Object<ReleaseSpec>` named `NAME/VERSION`; listing, reading and
//! deleting it go through the object routes.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Object;
use crate::objects::ReleaseSpec;

/// Query of `POST /v1/uploads/releases` and `POST /v1/uploads/stemcells`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct UploadQuery {
    /// Store the pieces again even if the director has this version
    /// (`--fix`: repairs a blobstore that lost them).
    #[serde(default)]
    pub fix: bool,
}

/// Why an upload stored nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum UploadStatus {
    /// The director has this version already, with the same contents.
    #[serde(rename = "already uploaded")]
    AlreadyUploaded,
}

impl std::fmt::Display for UploadStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UploadStatus::AlreadyUploaded => f.write_str("already uploaded"),
        }
    }
}

/// Answer to `POST /v1/uploads/releases` (the body is the tarball).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ReleaseUpload {
    /// 200: nothing was stored (without `fix`).
    Existing {
        /// `NAME/VERSION`.
        release: String,
        /// Why.
        status: UploadStatus,
    },
    /// 201: the release as stored, its jobs and packages in the blobstore.
    Created(Box<Object<ReleaseSpec>>),
}

/// Body of `POST /v1/exports/releases`; the answer is a compiled release
/// tarball, or 409 naming the packages not yet compiled for the stemcell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ExportRequest {
    /// `NAME/VERSION` of an uploaded release.
    pub release: String,
    /// `OS/VERSION` of the stemcell to export the compiled packages of.
    pub stemcell: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ObjectMeta;
    use crate::wire::testing::round_trip;

    /// Both answers keep their shape and are told apart when read.
    #[test]
    fn release_bodies_round_trip() {
        round_trip(
            &ReleaseUpload::Existing {
                release: "nginx/1.0".into(),
                status: UploadStatus::AlreadyUploaded,
            },
            r#"{"release":"nginx/1.0","status":"already uploaded"}"#,
        );
        let r = Object::new(
            ObjectMeta::named("nginx/1.0"),
            ReleaseSpec { name: "nginx".into(), version: "1.0".into(), ..Default::default() },
        );
        let obj = serde_json::to_string(&r).unwrap();
        round_trip(&ReleaseUpload::Created(Box::new(r)), &obj);
        round_trip(
            &ExportRequest { release: "nginx/1.0".into(), stemcell: "ubuntu-jammy/1".into() },
            r#"{"release":"nginx/1.0","stemcell":"ubuntu-jammy/1"}"#,
        );
    }
}
