//! Stemcell tarballs: `stemcell.MF`, `image` and optionally `stemcell_dpkg_l.txt`.
//!
//! The local CPI's stemcell is built from the agent binary by another
//! command; this module only knows the format. Writing is deterministic
//! like release tarballs; reading goes through the same path-safe, capped
//! unpacking and checks the image against the manifest's `sha1`.

use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use super::{
    Error, Result, io,
    tgz::{Limits, TgzWriter, unpack},
};

/// Accepts a YAML string or number (`version: 621.74`, `bosh_protocol: 1`) as a string.
fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        Value::Null => Ok(String::new()),
        other => Err(serde::de::Error::custom(format!("expected a string, found {other}"))),
    }
}

/// `stemcell.MF`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StemcellManifest {
    /// e.g. `bosh-local-ubuntu-jammy-go_agent`.
    pub name: String,
    /// e.g. `1.0` (read from a string or a number).
    #[serde(deserialize_with = "string_or_number")]
    pub version: String,
    /// e.g. `ubuntu-jammy`.
    pub operating_system: String,
    /// Digest of `image`: bare sha1 hex (as real stemcells) or `sha256:<hex>`.
    #[serde(default)]
    pub sha1: String,
    /// Agent protocol version (read from a string or a number).
    #[serde(default, deserialize_with = "string_or_number")]
    pub bosh_protocol: String,
    /// Stemcell API version (what the agent supports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<u32>,
    /// Formats a CPI may accept, e.g. `[local-tgz]`.
    #[serde(default)]
    pub stemcell_formats: Vec<String>,
    /// Passed to the CPI's `create_stemcell`.
    #[serde(default)]
    pub cloud_properties: IndexMap<String, Value>,
}

/// Writes a stemcell tarball at `dest`: `stemcell.MF` (with `sha1` set to the
/// image's sha1), `image`, and `stemcell_dpkg_l.txt` when given.
pub fn write_stemcell(
    dest: &Path,
    manifest: &StemcellManifest,
    image_path: &Path,
    dpkg_l: Option<&Path>,
) -> Result<StemcellManifest> {
    let mut m = manifest.clone();
    m.sha1 = super::hash_file::<sha1::Sha1>(image_path)?;
    let mut w = TgzWriter::default();
    w.bytes("stemcell.MF", crate::yaml::to_string(&m)?.into_bytes(), false);
    w.file("image", image_path)?;
    if let Some(p) = dpkg_l {
        w.file("stemcell_dpkg_l.txt", p)?;
    }
    w.write_to_path(dest)?;
    Ok(m)
}

/// Unpacks a stemcell tarball into `unpack_dir` (created if missing), checks
/// the image's digest, and returns the manifest and the image's path.
/// A light stemcell (empty image, cloud properties naming a pre-uploaded
/// image) is accepted when its `sha1` is the digest of the empty file.
pub fn read_stemcell(tarball: &Path, unpack_dir: &Path) -> Result<(StemcellManifest, PathBuf)> {
    read_stemcell_with(tarball, unpack_dir, &Limits::default())
}

/// [`read_stemcell`] with explicit unpacking caps.
pub fn read_stemcell_with(
    tarball: &Path,
    unpack_dir: &Path,
    limits: &Limits,
) -> Result<(StemcellManifest, PathBuf)> {
    let file = tarball.file_name().unwrap_or_default().to_string_lossy().into_owned();
    std::fs::create_dir_all(unpack_dir).map_err(io(unpack_dir))?;
    let result = (|| {
        unpack(tarball, unpack_dir, &file, limits)?;
        let mf = unpack_dir.join("stemcell.MF");
        if !mf.is_file() {
            return Err(Error::entry(&file, "stemcell.MF", "missing"));
        }
        let src = std::fs::read_to_string(&mf).map_err(io(&mf))?;
        let m: StemcellManifest = crate::yaml::from_str(&src, &format!("{file}:stemcell.MF"))?;
        for (key, val) in
            [("name", &m.name), ("version", &m.version), ("operating_system", &m.operating_system)]
        {
            if val.is_empty() {
                return Err(Error::entry(format!("{file}:stemcell.MF"), key, "is required"));
            }
            // Name and version make the Stemcell's key and CPI arguments.
            let checked = match key {
                "version" => crate::names::check_version(val),
                _ => crate::names::check_name(val),
            };
            if let Err(e) = checked {
                return Err(Error::entry(format!("{file}:stemcell.MF"), key, e.to_string()));
            }
        }
        let image = unpack_dir.join("image");
        if !image.is_file() {
            return Err(Error::entry(&file, "image", "missing"));
        }
        if !m.sha1.is_empty()
            && let Err(msg) = super::verify_digest(&image, &m.sha1)?
        {
            return Err(Error::entry(&file, "image", format!("digest mismatch: {msg}")));
        }
        Ok((m, image))
    })();
    if result.is_err() {
        // Nothing half-unpacked is left for a caller to pick up.
        let _ = std::fs::remove_dir_all(unpack_dir);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> StemcellManifest {
        StemcellManifest {
            name: "bosh-local-debian".into(),
            version: "1.5".into(),
            operating_system: "debian-bookworm".into(),
            bosh_protocol: "1".into(),
            api_version: Some(3),
            stemcell_formats: vec!["local-tgz".into()],
            ..Default::default()
        }
    }

    /// A written stemcell reads back with its manifest and image, byte-identically twice.
    #[test]
    fn stemcell_round_trips_deterministically() {
        let d = tempfile::tempdir().unwrap();
        let image = d.path().join("img");
        std::fs::write(&image, b"agent image").unwrap();
        let (a, b) = (d.path().join("a.tgz"), d.path().join("b.tgz"));
        let written = write_stemcell(&a, &manifest(), &image, None).unwrap();
        write_stemcell(&b, &manifest(), &image, None).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        let (m, img) = read_stemcell(&a, &d.path().join("out")).unwrap();
        assert_eq!(m, written);
        assert_eq!(std::fs::read(img).unwrap(), b"agent image");
    }

    /// A stemcell whose image does not match stemcell.MF's sha1 is refused and not left unpacked.
    #[test]
    fn stemcell_with_wrong_image_digest_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let mut w = TgzWriter::default();
        let mut m = manifest();
        m.sha1 = "0000000000000000000000000000000000000000".into();
        w.bytes("stemcell.MF", crate::yaml::to_string(&m).unwrap().into_bytes(), false);
        w.bytes("image", b"x".to_vec(), false);
        let t = d.path().join("s.tgz");
        w.write_to_path(&t).unwrap();
        let out = d.path().join("out");
        let err = read_stemcell(&t, &out).unwrap_err().to_string();
        assert!(err.contains("s.tgz: image: digest mismatch"), "{err}");
        assert!(!out.exists());
    }

    /// Real stemcell.MF files write version and bosh_protocol as numbers.
    #[test]
    fn numeric_version_and_protocol_are_read_as_strings() {
        let m: StemcellManifest = crate::yaml::from_str(
            "name: s\nversion: 621.74\noperating_system: ubuntu\nbosh_protocol: 1\nsha1: abc\n",
            "stemcell.MF",
        )
        .unwrap();
        assert_eq!((m.version.as_str(), m.bosh_protocol.as_str()), ("621.74", "1"));
    }
}
