//! `config/final.yml`, `config/private.yml` and `config/blobs.yml` of a release directory.

use std::{collections::BTreeMap, path::Path};

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Error, Result, io};

/// Where final builds and blobs are uploaded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BlobstoreConfig {
    /// `local`, `s3`, `gcs`, ...
    #[serde(default)]
    pub provider: String,
    /// Provider options; `private.yml`'s override `final.yml`'s key by key.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub options: IndexMap<String, Value>,
}

/// `config/final.yml`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FinalConfig {
    /// The release's name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The older spelling of `name`; exactly one of them may be set.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub final_name: String,
    /// Where final builds go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blobstore: Option<BlobstoreConfig>,
}

#[derive(Debug, Default, Deserialize)]
struct PrivateConfig {
    #[serde(default)]
    blobstore: Option<BlobstoreConfig>,
}

impl FinalConfig {
    /// Reads `config/final.yml` (a missing file is an empty config).
    pub fn read(release_dir: &Path) -> Result<Self> {
        let path = release_dir.join("config/final.yml");
        if !path.exists() {
            return Ok(Self::default());
        }
        let src = std::fs::read_to_string(&path).map_err(io(&path))?;
        if src.trim().is_empty() {
            return Ok(Self::default());
        }
        Ok(crate::yaml::from_str(&src, "config/final.yml")?)
    }

    /// The release name: `name`, else `final_name`; both or neither is an error.
    pub fn release_name(&self) -> Result<String> {
        match (self.name.is_empty(), self.final_name.is_empty()) {
            (false, true) => Ok(self.name.clone()),
            (true, false) => Ok(self.final_name.clone()),
            (true, true) => Err(Error::entry("config/final.yml", "name", "is required")),
            (false, false) => Err(Error::entry(
                "config/final.yml",
                "name",
                "expected 'name' or 'final_name' but not both",
            )),
        }
    }

    /// The blobstore with `config/private.yml`'s options merged over the public ones.
    pub fn blobstore(&self, release_dir: &Path) -> Result<BlobstoreConfig> {
        let mut bs = self.blobstore.clone().unwrap_or_default();
        if bs.provider.is_empty() {
            return Err(Error::entry("config/final.yml", "blobstore.provider", "is required"));
        }
        let private = release_dir.join("config/private.yml");
        if private.exists() {
            let src = std::fs::read_to_string(&private).map_err(io(&private))?;
            if !src.trim().is_empty() {
                let p: PrivateConfig = crate::yaml::from_str(&src, "config/private.yml")?;
                for (k, v) in p.blobstore.map(|b| b.options).unwrap_or_default() {
                    bs.options.insert(k, v);
                }
            }
        }
        Ok(bs)
    }

    /// Writes `config/final.yml`.
    pub fn write(&self, release_dir: &Path) -> Result<()> {
        let path = release_dir.join("config/final.yml");
        let text = crate::yaml::to_string(self)?;
        std::fs::write(&path, format!("---\n{text}")).map_err(io(&path))
    }
}

/// One entry of `config/blobs.yml`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BlobEntry {
    /// Size in bytes.
    pub size: u64,
    /// The blob's id in the release's blobstore; absent until uploaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_id: Option<String>,
    /// Its digest: `sha256:<hex>` (or bare sha1 hex from older CLIs).
    pub sha: String,
}

/// `config/blobs.yml`: blob path (under `blobs/`) to entry, sorted by path.
pub type BlobsIndex = BTreeMap<String, BlobEntry>;

/// Reads `config/blobs.yml`; a missing or empty file is an empty index.
/// Paths that could escape `blobs/` are refused.
pub fn read_blobs(release_dir: &Path) -> Result<BlobsIndex> {
    let path = release_dir.join("config/blobs.yml");
    if !path.exists() {
        return Ok(BlobsIndex::new());
    }
    let src = std::fs::read_to_string(&path).map_err(io(&path))?;
    let v = crate::yaml::parse_value_keys_as_written(&src, "config/blobs.yml")?;
    if v.is_null() {
        return Ok(BlobsIndex::new());
    }
    let index: BlobsIndex = serde_json::from_value(v)
        .map_err(|e| Error::entry("config/blobs.yml", "", e.to_string()))?;
    for key in index.keys() {
        if !super::tgz::is_safe_relative(key) {
            return Err(Error::entry("config/blobs.yml", key, "blob path must stay inside blobs/"));
        }
    }
    Ok(index)
}

/// Writes `config/blobs.yml` (`--- {}` when empty, as bosh-cli's init does).
pub fn write_blobs(release_dir: &Path, index: &BlobsIndex) -> Result<()> {
    let path = release_dir.join("config/blobs.yml");
    let text =
        if index.is_empty() { "--- {}\n".to_string() } else { crate::yaml::to_string(index)? };
    std::fs::write(&path, text).map_err(io(&path))
}
