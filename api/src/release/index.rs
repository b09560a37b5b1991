//! Build indexes (`.dev_builds`, `.final_builds`) and release indexes
//! (`dev_releases`, `releases`), in bosh-cli's file formats.
//!
//! A build index maps a fingerprint to the build's digest (and, for final
//! builds, its blobstore id): `builds: {<fp>: {version: <fp>, blobstore_id,
//! sha1}}`, `format-version: "2"`, keys sorted. Jobs and packages have one
//! index per name (`.dev_builds/jobs/<name>/index.yml`); the license has one
//! for all (`.dev_builds/license/index.yml`). The built tarballs themselves
//! live in a cache directory keyed by digest (bosh-cli: `~/.bosh/cache`).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::{Error, Result, io, version::Version};

/// One build in a build index.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildEntry {
    /// The fingerprint (BOSH calls it version).
    pub version: String,
    /// The blob's id in the release blobstore (final builds only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blobstore_id: Option<String>,
    /// Digest of the build's tarball.
    pub sha1: String,
}

/// A build index file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildIndex {
    /// Builds keyed by fingerprint.
    #[serde(default)]
    pub builds: BTreeMap<String, BuildEntry>,
    /// Always `"2"`.
    #[serde(rename = "format-version", default = "format_version")]
    pub format_version: String,
}

fn format_version() -> String {
    "2".to_string()
}

/// Where a build index lives: `<release>/<.dev_builds|.final_builds>/<kind>/[<name>/]index.yml`.
pub fn build_index_path(release_dir: &Path, final_builds: bool, kind: &str, name: &str) -> PathBuf {
    let base = release_dir.join(if final_builds { ".final_builds" } else { ".dev_builds" });
    if kind == "license" {
        base.join("license/index.yml")
    } else {
        base.join(kind).join(name).join("index.yml")
    }
}

fn rel_name(release_dir: &Path, path: &Path) -> String {
    path.strip_prefix(release_dir).unwrap_or(path).to_string_lossy().into_owned()
}

impl BuildIndex {
    /// Reads an index; a missing file is empty. Ruby's `!binary` tags are accepted.
    pub fn read(release_dir: &Path, path: &Path) -> Result<Self> {
        if !path.exists() {
            return Ok(BuildIndex { builds: BTreeMap::new(), format_version: format_version() });
        }
        let src = std::fs::read_to_string(path).map_err(io(path))?;
        let src = src.replace(" !binary ", " !!binary ");
        if src.trim().is_empty() || src.trim() == "---" {
            return Ok(BuildIndex { builds: BTreeMap::new(), format_version: format_version() });
        }
        Ok(crate::yaml::from_str(&src, &rel_name(release_dir, path))?)
    }

    /// Writes the index, creating its directory.
    pub fn write(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        let mut out = self.clone();
        out.format_version = format_version();
        std::fs::write(path, crate::yaml::to_string(&out)?).map_err(io(path))
    }

    /// The entry for a fingerprint.
    pub fn find(&self, fingerprint: &str) -> Option<&BuildEntry> {
        self.builds.values().find(|e| e.version == fingerprint)
    }
}

/// One release in a release index.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseIndexEntry {
    /// The release version.
    pub version: String,
}

/// `dev_releases/<name>/index.yml` or `releases/<name>/index.yml`: uuid → version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseIndex {
    /// Releases keyed by a random uuid.
    #[serde(default)]
    pub builds: BTreeMap<String, ReleaseIndexEntry>,
    /// Always `"2"`.
    #[serde(rename = "format-version", default = "format_version")]
    pub format_version: String,
}

/// `dev_releases` or `releases` directory of a release.
pub fn releases_dir(release_dir: &Path, final_release: bool) -> PathBuf {
    release_dir.join(if final_release { "releases" } else { "dev_releases" })
}

impl ReleaseIndex {
    /// Reads `<dir>/<name>/index.yml`; missing is empty.
    pub fn read(release_dir: &Path, final_release: bool, name: &str) -> Result<Self> {
        let path = releases_dir(release_dir, final_release).join(name).join("index.yml");
        let empty = ReleaseIndex { builds: BTreeMap::new(), format_version: format_version() };
        if !path.exists() {
            return Ok(empty);
        }
        let src = std::fs::read_to_string(&path).map_err(io(&path))?;
        if src.trim().is_empty() || src.trim() == "---" {
            return Ok(empty);
        }
        Ok(crate::yaml::from_str(&src, &rel_name(release_dir, &path))?)
    }

    /// The highest version recorded, if any.
    pub fn last_version(&self, file: &str) -> Result<Option<Version>> {
        let mut best: Option<Version> = None;
        for (key, e) in &self.builds {
            let v = Version::parse(&e.version)
                .map_err(|m| Error::entry(file, format!("builds.{key}.version"), m))?;
            if best.as_ref().is_none_or(|b| v > *b) {
                best = Some(v);
            }
        }
        Ok(best)
    }

    /// Whether `version` is recorded.
    pub fn contains(&self, version: &str) -> bool {
        self.builds.values().any(|e| e.version == version)
    }

    /// Records a version under a fresh uuid and writes the index; refuses a duplicate.
    pub fn add(
        &mut self,
        release_dir: &Path,
        final_release: bool,
        name: &str,
        version: &str,
    ) -> Result<()> {
        let path = releases_dir(release_dir, final_release).join(name).join("index.yml");
        if self.contains(version) {
            return Err(Error::entry(
                rel_name(release_dir, &path),
                version,
                format!("release version '{version}' already exists"),
            ));
        }
        self.builds.insert(
            uuid::Uuid::new_v4().to_string(),
            ReleaseIndexEntry { version: version.to_string() },
        );
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        self.format_version = format_version();
        std::fs::write(&path, crate::yaml::to_string(self)?).map_err(io(&path))
    }
}
