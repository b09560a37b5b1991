//! Release: one uploaded release version (`name/version`) and its blobs.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ConditionsOnly, Kind};

// The one blob reference of bosh-rs, `{"sha256", "size"}`: objects store
// it, agent messages carry it (`bosh_api::agent::BlobRef`), and the
// blobstore's storage and client return it (`bosh_blobstore::BlobRef`), so a
// blob passes between them without conversion. (A plain comment: the doc
// comment below is the schemas' description, which stays as it was.)
/// A content-addressed blob in boshd's blobstore.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BlobRef {
    /// Hex sha256 of the content; also its blobstore id.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

/// A job as listed in `release.MF`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReleaseJob {
    /// Job name.
    pub name: String,
    /// BOSH uses the fingerprint as the version.
    pub version: String,
    /// Fingerprint computed as the bosh CLI does.
    pub fingerprint: String,
    /// Digest of the job's `.tgz` as recorded in `release.MF`.
    pub sha1: String,
    /// Packages the job needs.
    #[serde(default)]
    pub packages: Vec<String>,
    /// Where the job tarball is stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob: Option<BlobRef>,
}

/// A package as listed in `release.MF`: a source package, or a compiled
/// one of a compiled release (no `blob`, and the stemcells it was uploaded
/// compiled for in `compiledFor`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReleasePackage {
    /// Package name.
    pub name: String,
    /// BOSH uses the fingerprint as the version.
    pub version: String,
    /// Fingerprint computed as the bosh CLI does.
    pub fingerprint: String,
    /// Digest of the package's `.tgz` as recorded in `release.MF`.
    pub sha1: String,
    /// Names of packages it depends on.
    #[serde(default)]
    pub dependencies: Vec<String>,
    /// Where the source package tarball is stored; none for a package that
    /// came only compiled (a compiled release), which then deploys only on
    /// the stemcells of `compiled_for`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob: Option<BlobRef>,
    /// Stemcells (`os/version`) a compiled release brought this package
    /// compiled for; its CompiledPackage objects hold the blobs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compiled_for: Vec<String>,
}

/// Spec of a Release; `metadata.name` is `<name>/<version>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReleaseSpec {
    /// Release name.
    pub name: String,
    /// Release version, e.g. `1.2.0` or `0+dev.3`.
    pub version: String,
    /// Git commit the release was built from.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub commit_hash: String,
    /// Whether the release dir had uncommitted changes.
    #[serde(default)]
    pub uncommitted_changes: bool,
    /// Jobs in the release.
    #[serde(default)]
    pub jobs: Vec<ReleaseJob>,
    /// Packages in the release.
    #[serde(default)]
    pub packages: Vec<ReleasePackage>,
    /// The uploaded tarball.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tarball: Option<BlobRef>,
}

/// Status of a Release.
pub type ReleaseStatus = ConditionsOnly;

impl ReleaseSpec {
    /// The stemcells (`os/version`) every package of the release was
    /// uploaded compiled for, when some package has no source: the only
    /// stemcells a compiled release deploys on. Empty for a source release.
    pub fn compiled_only_for(&self) -> Vec<String> {
        if self.packages.iter().all(|p| p.blob.is_some()) {
            return Vec::new();
        }
        let mut all: Option<std::collections::BTreeSet<&String>> = None;
        for p in self.packages.iter().filter(|p| p.blob.is_none()) {
            let these: std::collections::BTreeSet<&String> = p.compiled_for.iter().collect();
            all = Some(match all {
                Some(a) => a.intersection(&these).copied().collect(),
                None => these,
            });
        }
        all.unwrap_or_default().into_iter().cloned().collect()
    }
}

impl Kind for ReleaseSpec {
    const KIND: &'static str = "Release";
    const PLURAL: &'static str = "releases";
    type Status = ReleaseStatus;
}
