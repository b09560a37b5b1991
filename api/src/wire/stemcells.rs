//! Stemcell uploads. A stemcell is stored as an `Object<StemcellSpec>`
//! named `NAME/VERSION`; listing, reading and deleting it go through the
//! object routes. Uploads take [`UploadQuery`](super::UploadQuery).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::UploadStatus;
use crate::Object;
use crate::objects::StemcellSpec;

/// Answer to `POST /v1/uploads/stemcells` (the body is the tarball).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum StemcellUpload {
    /// 200: nothing was stored (without `fix`).
    Existing {
        /// `NAME/VERSION`.
        stemcell: String,
        /// Why.
        status: UploadStatus,
    },
    /// 201: the stemcell as stored, its image in the blobstore; each CPI
    /// imports it next (`status.cids`).
    Created(Box<Object<StemcellSpec>>),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ObjectMeta;
    use crate::wire::testing::round_trip;

    /// Both answers keep their shape and are told apart when read.
    #[test]
    fn stemcell_uploads_round_trip() {
        round_trip(
            &StemcellUpload::Existing {
                stemcell: "bosh-local/1".into(),
                status: UploadStatus::AlreadyUploaded,
            },
            r#"{"stemcell":"bosh-local/1","status":"already uploaded"}"#,
        );
        let s = Object::new(
            ObjectMeta::named("bosh-local/1"),
            StemcellSpec { name: "bosh-local".into(), version: "1".into(), ..Default::default() },
        );
        let obj = serde_json::to_string(&s).unwrap();
        round_trip(&StemcellUpload::Created(Box::new(s)), &obj);
    }
}
