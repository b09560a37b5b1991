//! Fingerprints of jobs, packages and licenses, computed exactly as bosh-cli v7 does.
//!
//! The algorithm (bosh-cli `release/resource/fingerprint.go`): sort the
//! resource's files by relative path; start from the string `"v2"`; for each
//! file append its name (the relative path, or the basename for licenses),
//! its digest (`sha256:<hex>` of the contents; of the link target string for
//! a symlink that is not followed) and, unless excluded, a git-like mode
//! (`40755` directory, `symlink`, `100755` if any exec bit, else `100644`);
//! then append the sorted extra chunks (a package's dependency names) joined
//! by `,`. The fingerprint is the hex sha256 of the whole string.
//!
//! Which files belong to a resource is in `release/{job,pkg,license}/dir_reader.go`
//! and mirrored by [`job_files`], [`package_files`] and [`license_files`].

use std::{
    collections::BTreeMap,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use super::{
    Error, Result, io,
    spec::{JobSpec, PackageLock, PackageSpec},
};

/// One file that enters a fingerprint (bosh-cli's `resource.File`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FpFile {
    /// Where it is on disk.
    pub path: PathBuf,
    /// Its path inside the resource's tarball (`templates/ctl.erb`, `app/main.py`).
    pub rel: String,
    /// Hash the basename instead of `rel` (licenses).
    pub use_basename: bool,
    /// Leave the mode out (`packaging`, `pre_packaging`, licenses).
    pub exclude_mode: bool,
}

impl FpFile {
    fn new(path: PathBuf, rel: impl Into<String>) -> Self {
        FpFile { path, rel: rel.into(), use_basename: false, exclude_mode: false }
    }
}

/// Computes a fingerprint. `follow_symlinks` is true for jobs and false for
/// packages and licenses, as in bosh-cli.
pub fn fingerprint(files: &[FpFile], chunks: &[String], follow_symlinks: bool) -> Result<String> {
    use sha2::Digest;
    let mut sorted: Vec<&FpFile> = files.iter().collect();
    sorted.sort_by(|a, b| a.rel.cmp(&b.rel));
    let mut s = String::from("v2");
    for f in sorted {
        if f.use_basename {
            s.push_str(&f.path.file_name().unwrap_or_default().to_string_lossy());
        } else {
            s.push_str(&f.rel);
        }
        let meta = std::fs::symlink_metadata(&f.path).map_err(io(&f.path))?;
        let is_link = meta.file_type().is_symlink();
        if is_link && !follow_symlinks {
            let target = std::fs::read_link(&f.path).map_err(io(&f.path))?;
            s.push_str(&super::sha256_digest(target.as_os_str().as_encoded_bytes()));
        } else {
            s.push_str(&super::file_digest(&f.path)?);
        }
        if !f.exclude_mode {
            // The mode comes from lstat even when the link is followed, so a
            // symlinked job template (lstat mode 0777) hashes as 100755.
            s.push_str(if meta.is_dir() {
                "40755"
            } else if is_link && !follow_symlinks {
                "symlink"
            } else if meta.permissions().mode() & 0o111 != 0 {
                "100755"
            } else {
                "100644"
            });
        }
    }
    if !chunks.is_empty() {
        let mut c = chunks.to_vec();
        c.sort();
        s.push_str(&c.join(","));
    }
    Ok(hex::encode(sha2::Sha256::digest(s.as_bytes())))
}

/// The files of a job directory: `spec` (as `job.MF`), `monit` and
/// `properties_schema.json` if present, and each template the spec lists.
pub fn job_files(job_dir: &Path, spec: &JobSpec) -> Result<Vec<FpFile>> {
    let name = dir_name(job_dir);
    if name != spec.name {
        return Err(Error::entry(
            format!("jobs/{name}/spec"),
            "name",
            format!("job directory '{name}' does not match job name '{}' in spec", spec.name),
        ));
    }
    let mut files = vec![FpFile::new(job_dir.join("spec"), "job.MF")];
    for extra in ["monit", "properties_schema.json"] {
        if job_dir.join(extra).exists() {
            files.push(FpFile::new(job_dir.join(extra), extra));
        }
    }
    for src in spec.templates.keys() {
        let path = job_dir.join("templates").join(src);
        if std::fs::symlink_metadata(&path).is_err() {
            return Err(Error::entry(
                format!("jobs/{name}/spec"),
                format!("templates.{src}"),
                format!("template file jobs/{name}/templates/{src} does not exist"),
            ));
        }
        files.push(FpFile::new(path, format!("templates/{src}")));
    }
    Ok(files)
}

/// What a package directory contributes: its files (packaging first), the
/// `pre_packaging` script if any, and the dependency names.
#[derive(Debug, Clone)]
pub struct PackageFiles {
    /// Every file, `packaging` and `pre_packaging` included.
    pub files: Vec<FpFile>,
    /// `pre_packaging`, which runs at build time and is then removed.
    pub pre_packaging: Option<FpFile>,
}

/// Collects a package's files: `packaging` (required) and `pre_packaging`
/// (mode excluded), then each `files` glob matched in `src/` and then
/// `blobs/` (src wins on a clash), minus `excluded_files` matches.
pub fn package_files(
    release_dir: &Path,
    pkg_dir: &Path,
    spec: &PackageSpec,
) -> Result<PackageFiles> {
    let name = dir_name(pkg_dir);
    let spec_file = format!("packages/{name}/spec");
    if name != spec.name {
        return Err(Error::entry(
            &spec_file,
            "name",
            format!(
                "package directory '{name}' does not match package name '{}' in spec",
                spec.name
            ),
        ));
    }
    let src_dir = release_dir.join("src");
    let blobs_dir = release_dir.join("blobs");
    let packaging = pkg_dir.join("packaging");
    if !packaging.exists() {
        return Err(Error::entry(
            &spec_file,
            "packaging",
            format!("expected packages/{name}/packaging"),
        ));
    }
    let mut files = vec![FpFile { exclude_mode: true, ..FpFile::new(packaging, "packaging") }];
    let pre = pkg_dir.join("pre_packaging");
    let pre_packaging =
        pre.exists().then(|| FpFile { exclude_mode: true, ..FpFile::new(pre, "pre_packaging") });
    files.extend(pre_packaging.clone());

    let mut by_rel: BTreeMap<String, FpFile> = BTreeMap::new();
    let patterns = spec.files.iter().map(|p| ("files", p));
    for (i, (key, pattern)) in
        patterns.chain(spec.excluded_files.iter().map(|p| ("excluded_files", p))).enumerate()
    {
        if pattern.starts_with('/') || pattern.split('/').any(|c| c == "..") {
            let n = if key == "files" { i } else { i - spec.files.len() };
            return Err(Error::entry(
                &spec_file,
                format!("{key}[{n}]"),
                format!("pattern '{pattern}' must stay inside src/ and blobs/"),
            ));
        }
    }
    for (i, pattern) in spec.files.iter().enumerate() {
        let mut found = false;
        for base in [&src_dir, &blobs_dir] {
            for (path, rel) in glob_under(base, pattern, &spec_file)? {
                if !packageable(&src_dir, base, &path, &rel) {
                    continue;
                }
                found = true;
                by_rel.entry(rel.clone()).or_insert_with(|| FpFile::new(path, rel));
            }
        }
        if !found {
            return Err(Error::entry(
                &spec_file,
                format!("files[{i}]"),
                format!("no file in src/ or blobs/ matches '{pattern}'"),
            ));
        }
    }
    for pattern in &spec.excluded_files {
        for base in [&src_dir, &blobs_dir] {
            for (_, rel) in glob_under(base, pattern, &spec_file)? {
                by_rel.remove(&rel);
            }
        }
    }
    for special in ["packaging", "pre_packaging"] {
        if by_rel.contains_key(special) {
            return Err(Error::entry(
                &spec_file,
                "files",
                format!("special file '{special}' must not be included through 'files'"),
            ));
        }
    }
    files.extend(by_rel.into_values());
    Ok(PackageFiles { files, pre_packaging })
}

/// The license files of a release directory: `LICENSE*` and `NOTICE*` at
/// its top, hashed by basename without mode. Empty means no license.
pub fn license_files(release_dir: &Path) -> Result<Vec<FpFile>> {
    let mut files = Vec::new();
    for prefix in ["LICENSE", "NOTICE"] {
        for (path, rel) in glob_under(release_dir, &format!("{prefix}*"), "LICENSE")? {
            files.push(FpFile { use_basename: true, exclude_mode: true, ..FpFile::new(path, rel) });
        }
    }
    Ok(files)
}

/// A job's fingerprint, from its directory.
pub fn job_fingerprint(job_dir: &Path) -> Result<(JobSpec, String)> {
    let name = dir_name(job_dir);
    let spec = JobSpec::read(&job_dir.join("spec"), &format!("jobs/{name}/spec"))?;
    let files = job_files(job_dir, &spec)?;
    let fp = fingerprint(&files, &[], true)?;
    Ok((spec, fp))
}

/// A package's fingerprint, from its directory; a `spec.lock` short-circuits
/// to the fingerprint it records (a vendored package).
pub fn package_fingerprint(release_dir: &Path, pkg_dir: &Path) -> Result<(PackageSpec, String)> {
    let name = dir_name(pkg_dir);
    let lock = pkg_dir.join("spec.lock");
    if lock.exists() {
        let l = PackageLock::read(&lock, &format!("packages/{name}/spec.lock"))?;
        let spec = PackageSpec { name: l.name, dependencies: l.dependencies, ..Default::default() };
        return Ok((spec, l.fingerprint));
    }
    let spec = PackageSpec::read(&pkg_dir.join("spec"), &format!("packages/{name}/spec"))?;
    let files = package_files(release_dir, pkg_dir, &spec)?;
    let fp = fingerprint(&files.files, &spec.dependencies, false)?;
    Ok((spec, fp))
}

/// The license's fingerprint, or `None` when the release has no license files.
pub fn license_fingerprint(release_dir: &Path) -> Result<Option<String>> {
    let files = license_files(release_dir)?;
    if files.is_empty() {
        return Ok(None);
    }
    fingerprint(&files, &[], false).map(Some)
}

fn dir_name(dir: &Path) -> String {
    dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// bosh-cli's `isPackageableFile`: not a directory, and (unless it is
/// itself a symlink) not reached through a symlinked directory.
fn packageable(src_dir: &Path, base: &Path, path: &Path, rel: &str) -> bool {
    let Ok(meta) = std::fs::symlink_metadata(path) else { return false };
    if meta.is_dir() {
        return false;
    }
    if meta.file_type().is_symlink() {
        return true;
    }
    let (Ok(real_base), Ok(real_path)) = (base.canonicalize(), path.canonicalize()) else {
        return false;
    };
    // bosh-cli compares against src/ even for blobs; with no symlinked
    // top-level dirs that is the same as comparing against the base.
    let _ = src_dir;
    real_path.strip_prefix(&real_base).is_ok_and(|r| r == Path::new(rel))
}

/// Matches a doublestar-style glob (`**`, `*`, `?`, `[...]`, `{a,b}`) under
/// `base`; returns absolute paths with their `/`-separated relative paths.
fn glob_under(base: &Path, pattern: &str, file: &str) -> Result<Vec<(PathBuf, String)>> {
    // Relative bases come back from `glob` without their `./`; match on absolute paths.
    let base = &std::path::absolute(base).map_err(io(base))?;
    let mut out = Vec::new();
    for pat in expand_braces(pattern) {
        let full = format!("{}/{}", glob::Pattern::escape(&base.to_string_lossy()), pat);
        let paths = glob::glob(&full).map_err(|e| {
            Error::entry(file, "files", format!("invalid glob '{pattern}': {}", e.msg))
        })?;
        for p in paths.flatten() {
            if let Ok(rel) = p.strip_prefix(base) {
                let rel = rel.to_string_lossy().into_owned();
                if !rel.is_empty() && !out.iter().any(|(_, r)| *r == rel) {
                    out.push((p.clone(), rel));
                }
            }
        }
    }
    Ok(out)
}

/// Expands the first `{a,b}` group recursively (doublestar supports braces; the `glob` crate does not).
fn expand_braces(pattern: &str) -> Vec<String> {
    let Some(open) = pattern.find('{') else { return vec![pattern.to_string()] };
    let mut depth = 0;
    let mut close = None;
    let mut commas = Vec::new();
    for (i, ch) in pattern[open..].char_indices() {
        match ch {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    close = Some(open + i);
                    break;
                }
            }
            ',' if depth == 1 => commas.push(open + i),
            _ => {}
        }
    }
    let Some(close) = close else { return vec![pattern.to_string()] };
    let (head, tail) = (&pattern[..open], &pattern[close + 1..]);
    let mut bounds = vec![open];
    bounds.extend(commas);
    bounds.push(close);
    bounds
        .windows(2)
        .flat_map(|w| expand_braces(&format!("{head}{}{tail}", &pattern[w[0] + 1..w[1]])))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Brace groups expand like doublestar's, nested ones included.
    #[test]
    fn braces_expand_into_every_alternative() {
        assert_eq!(expand_braces("a/{b,c}/*.{h,c{,c}}").len(), 6);
        assert_eq!(expand_braces("plain/**/*"), vec!["plain/**/*"]);
    }

    /// Package symlinks hash their target string with mode `symlink`; job
    /// symlinks are followed but keep lstat's mode, so they hash as `100755`.
    #[test]
    fn symlinks_hash_like_bosh_cli() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("target"), "T").unwrap();
        std::os::unix::fs::symlink("target", d.path().join("link")).unwrap();
        let files = vec![FpFile::new(d.path().join("link"), "link")];
        let hash = |s: String| {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(s.as_bytes()))
        };
        let pkg = format!("v2link{}symlink", super::super::sha256_digest(b"target"));
        assert_eq!(fingerprint(&files, &[], false).unwrap(), hash(pkg));
        let job = format!("v2link{}100755", super::super::sha256_digest(b"T"));
        assert_eq!(fingerprint(&files, &[], true).unwrap(), hash(job));
    }

    /// The fingerprint string is "v2" + name + digest + mode per file + sorted chunks.
    #[test]
    fn fingerprint_string_follows_bosh_cli() {
        use sha2::Digest;
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("b"), "B").unwrap();
        std::fs::write(d.path().join("a"), "A").unwrap();
        let files = vec![
            FpFile::new(d.path().join("b"), "b"),
            FpFile { exclude_mode: true, ..FpFile::new(d.path().join("a"), "a") },
        ];
        let chunks = vec!["z".to_string(), "y".to_string()];
        let want = format!(
            "v2a{}b{}100644y,z",
            super::super::sha256_digest(b"A"),
            super::super::sha256_digest(b"B")
        );
        assert_eq!(
            fingerprint(&files, &chunks, false).unwrap(),
            hex::encode(sha2::Sha256::digest(want.as_bytes()))
        );
    }
}
