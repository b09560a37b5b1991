//! Releases a deployment manifest names by `url` (and `sha1`), uploaded
//! by `deploy` before the manifest when the director lacks them, as the
//! bosh CLI does, so that one command rolls a manifest out on a fresh
//! director (`--skip-upload-releases` leaves them to the operator).

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use bosh_api::objects::ReleaseSpec;
use bosh_api::wire::ReleaseUpload;
use serde_json::Value;

use crate::director::Director;

/// One release entry with a URL.
#[derive(Debug, PartialEq, Eq)]
pub struct Wanted {
    /// `releases[i]`, for messages.
    pub path: String,
    /// `name/version`.
    pub name: String,
    /// Where it is.
    pub url: String,
    /// Its digest (`sha1`).
    pub sha1: Option<String>,
}

/// The entries of `releases` that carry a `url`, checked: a name, an
/// exact version (not `latest`: a URL names one tarball) and, for a
/// remote URL, a `sha1`, each error naming its path in `file`.
pub fn wanted(manifest: &Value, file: &str) -> Result<Vec<Wanted>> {
    let mut out = vec![];
    let mut errors = vec![];
    let releases = manifest.get("releases").and_then(Value::as_array).cloned().unwrap_or_default();
    for (i, r) in releases.iter().enumerate() {
        let Some(url) = r.get("url").and_then(Value::as_str) else { continue };
        let path = format!("releases[{i}]");
        let text = |k: &str| {
            r.get(k).and_then(|v| {
                v.as_str().map(str::to_string).or_else(|| v.as_f64().map(|f| f.to_string()))
            })
        };
        let name = text("name");
        let version = text("version").filter(|v| v != "latest");
        let sha1 = text("sha1");
        if name.is_none() {
            errors.push(format!("{file}: {path}.name: expected the release's name"));
        }
        if version.is_none() {
            errors.push(format!(
                "{file}: {path}.version: expected the exact version the url serves (not latest)"
            ));
        }
        let remote = crate::fetch::is_url(url);
        if !remote && !url.starts_with("file://") {
            errors.push(format!("{file}: {path}.url: expected http(s):// or file://, got {url:?}"));
        }
        if remote && sha1.is_none() {
            errors.push(format!("{file}: {path}.sha1: expected the digest of {url}"));
        }
        if let (Some(n), Some(v)) = (name, version) {
            out.push(Wanted { path, name: format!("{n}/{v}"), url: url.to_string(), sha1 });
        }
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("\n"));
    }
    Ok(out)
}

/// Uploads each of `wanted` the director lacks; returns what it uploaded.
pub async fn upload_missing(
    d: &Director,
    wanted: &[Wanted],
    ca_cert: Option<&Path>,
) -> Result<Vec<String>> {
    let mut uploaded = vec![];
    for w in wanted {
        if d.try_object::<ReleaseSpec>(&w.name).await?.is_some() {
            continue;
        }
        let scratch = tempfile::tempdir()?;
        let tarball = match w.url.strip_prefix("file://") {
            Some(p) => PathBuf::from(p),
            None => {
                let sha1 = w.sha1.as_deref();
                crate::uploads::download(&w.url, scratch.path(), sha1, ca_cert).await?
            }
        };
        let what = format!("Uploading release {}", w.name);
        let answer: ReleaseUpload =
            crate::uploads::upload(d, "/v1/uploads/releases", false, &tarball, &what).await?;
        match answer {
            ReleaseUpload::Existing { release, status } => println!("Release {release}: {status}"),
            ReleaseUpload::Created(r) => println!("Uploaded release {}", r.metadata.name),
        }
        uploaded.push(w.name.clone());
    }
    Ok(uploaded)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Entries without a url are the director's business; one with a url
    /// needs a name, an exact version and (remote) a sha1, each error
    /// naming its path.
    #[test]
    fn url_entries_are_checked_with_their_paths() {
        let m = json!({"releases": [
            {"name": "a", "version": "latest"},
            {"name": "b", "version": 3, "url": "https://x/b.tgz", "sha1": "s"},
            {"name": "c", "version": "1", "url": "file:///tmp/c.tgz"},
        ]});
        let w = wanted(&m, "m.yml").unwrap();
        let names: Vec<_> = w.iter().map(|w| (w.path.as_str(), w.name.as_str())).collect();
        assert_eq!(names, [("releases[1]", "b/3"), ("releases[2]", "c/1")]);
        let bad = json!({"releases": [
            {"name": "a", "version": "latest", "url": "https://x/a.tgz", "sha1": "s"},
            {"version": "1", "url": "ftp://x"},
            {"name": "d", "version": "1", "url": "https://x/d.tgz"},
        ]});
        let e = wanted(&bad, "m.yml").unwrap_err().to_string();
        for want in [
            "m.yml: releases[0].version",
            "m.yml: releases[1].name",
            "m.yml: releases[1].url",
            "m.yml: releases[2].sha1",
        ] {
            assert!(e.contains(want), "{want} in {e}");
        }
    }
}
