//! Release tarballs: writing them deterministically, and reading them back
//! with every digest, path and reference checked before anything is kept.
//!
//! Layout (bosh-cli `release/archive_writer.go`): `release.MF`,
//! `jobs/<name>.tgz`, `packages/<name>.tgz` (or `compiled_packages/`),
//! `license.tgz` and the license files unpacked beside it.

use std::path::{Path, PathBuf};

use super::{
    Error, Result,
    build::Built,
    io,
    manifest::{JobRef, PackageRef, ReleaseManifest},
    spec::JobSpec,
    tgz::{Budget, Limits, TgzWriter, read_member, unpack},
};

/// Writes a release tarball from built resources. `manifest` must list exactly them.
pub fn write_release_tarball(
    dest: &Path,
    manifest: &ReleaseManifest,
    jobs: &[Built],
    packages: &[Built],
    license: Option<&Built>,
) -> Result<()> {
    let mut w = TgzWriter::default();
    w.bytes("release.MF", manifest.to_yaml()?.into_bytes(), false);
    if !jobs.is_empty() {
        w.dir("jobs");
    }
    for j in jobs {
        w.file(&format!("jobs/{}.tgz", j.resource.name), &j.path)?;
    }
    if !packages.is_empty() {
        w.dir("packages");
    }
    for p in packages {
        w.file(&format!("packages/{}.tgz", p.resource.name), &p.path)?;
    }
    let scratch = tempfile::tempdir().map_err(io(Path::new("temp dir")))?;
    if let Some(l) = license {
        w.file("license.tgz", &l.path)?;
        // bosh-cli also puts the license files at the top of the tarball.
        for name in unpack(&l.path, scratch.path(), "license.tgz", &Limits::default())? {
            if name.starts_with("LICENSE") || name.starts_with("NOTICE") {
                w.file(&name, &scratch.path().join(&name))?;
            }
        }
    }
    Ok(w.write_to_path(dest)?)
}

/// A job of a release tarball, verified.
#[derive(Debug, Clone)]
pub struct ArchiveJob {
    /// Its entry in `release.MF`.
    pub entry: JobRef,
    /// Its `job.MF`.
    pub spec: JobSpec,
    /// The job tarball, inside the unpacked release.
    pub tgz: PathBuf,
}

/// A package of a release tarball, verified.
#[derive(Debug, Clone)]
pub struct ArchivePackage {
    /// Its entry in `release.MF`.
    pub entry: PackageRef,
    /// `<os>/<version>` for a compiled package, `None` for a source package.
    pub stemcell: Option<String>,
    /// The package tarball, inside the unpacked release.
    pub tgz: PathBuf,
}

/// A release tarball unpacked and verified.
#[derive(Debug, Clone)]
pub struct ReleaseArchive {
    /// `release.MF`.
    pub manifest: ReleaseManifest,
    /// Where it was unpacked.
    pub dir: PathBuf,
    /// Its jobs, in `release.MF` order.
    pub jobs: Vec<ArchiveJob>,
    /// Its packages (source, then compiled), in `release.MF` order.
    pub packages: Vec<ArchivePackage>,
    /// `license.tgz`, if the release has a license.
    pub license: Option<PathBuf>,
}

/// Unpacks `tarball` into `dest` (which must not exist) and verifies it:
/// safe paths and sizes, every job/package/license digest
/// against `release.MF`, every nested tarball's paths, each `job.MF`, jobs
/// naming only packages in the release, no dependency cycle. On any error
/// nothing is left at `dest`.
///
/// `limits` caps the whole upload: the bytes and entries of the tarball and
/// of every job, package and license tarball checked inside it count
/// against the same allowance, so nesting cannot multiply it.
pub fn read_release_tarball(
    tarball: &Path,
    dest: &Path,
    limits: &Limits,
) -> Result<ReleaseArchive> {
    if dest.exists() {
        return Err(Error::Io {
            path: dest.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::AlreadyExists, "already exists"),
        });
    }
    let parent = dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let tmp =
        tempfile::Builder::new().prefix(".release-").tempdir_in(parent).map_err(io(parent))?;
    let file = tarball.file_name().unwrap_or_default().to_string_lossy().into_owned();
    let mut archive = verify(tarball, tmp.path(), &file, limits)?;
    let tmp = tmp.keep();
    std::fs::rename(&tmp, dest).map_err(io(dest))?;
    archive.dir = dest.to_path_buf();
    let rebase = |p: &mut PathBuf| *p = dest.join(p.strip_prefix(&tmp).expect("inside"));
    archive.jobs.iter_mut().for_each(|j| rebase(&mut j.tgz));
    archive.packages.iter_mut().for_each(|p| rebase(&mut p.tgz));
    archive.license.iter_mut().for_each(rebase);
    Ok(archive)
}

fn verify(tarball: &Path, dir: &Path, file: &str, limits: &Limits) -> Result<ReleaseArchive> {
    let mut budget = Budget::new(limits);
    budget.unpack(tarball, dir, file)?;
    let mf_path = dir.join("release.MF");
    if !mf_path.is_file() {
        return Err(Error::entry(file, "release.MF", "missing"));
    }
    let mf_file = format!("{file}:release.MF");
    let src = std::fs::read_to_string(&mf_path).map_err(io(&mf_path))?;
    let manifest = ReleaseManifest::parse(&src, &mf_file)?;
    manifest.check_consistency(&mf_file)?;
    // `field` is the digest's path inside release.MF (`jobs[0].sha1`).
    let mut check = |member: &str, field: String, sha: &str| -> Result<PathBuf> {
        let path = dir.join(member);
        if !path.is_file() {
            return Err(Error::entry(file, member, "listed in release.MF but missing"));
        }
        if let Err(m) = super::verify_digest(&path, sha)? {
            return Err(Error::entry(
                file,
                member,
                format!("digest mismatch against release.MF: {field}: {m}"),
            ));
        }
        budget.scan(&path, &format!("{file}:{member}"))?;
        Ok(path)
    };
    let mut jobs = Vec::new();
    for (i, j) in manifest.jobs.iter().enumerate() {
        let member = format!("jobs/{}.tgz", j.name);
        let tgz = check(&member, format!("jobs[{i}].sha1"), &j.sha1)?;
        let Some(mf) = read_member(&tgz, "job.MF", 4 << 20, &format!("{file}:{member}"))? else {
            return Err(Error::entry(file, &member, "job.MF is missing"));
        };
        let spec =
            JobSpec::parse(&String::from_utf8_lossy(&mf), &format!("{file}:{member}:job.MF"))?;
        if spec.name != j.name {
            return Err(Error::entry(
                file,
                &member,
                format!("job.MF names job '{}', release.MF '{}'", spec.name, j.name),
            ));
        }
        jobs.push(ArchiveJob { entry: j.clone(), spec, tgz });
    }
    let mut packages = Vec::new();
    for (i, p) in manifest.packages.iter().enumerate() {
        let tgz =
            check(&format!("packages/{}.tgz", p.name), format!("packages[{i}].sha1"), &p.sha1)?;
        packages.push(ArchivePackage { entry: p.clone(), stemcell: None, tgz });
    }
    for (i, p) in manifest.compiled_packages.iter().enumerate() {
        let member = format!("compiled_packages/{}.tgz", p.name);
        let tgz = check(&member, format!("compiled_packages[{i}].sha1"), &p.sha1)?;
        let entry = PackageRef {
            name: p.name.clone(),
            version: p.version.clone(),
            fingerprint: p.fingerprint.clone(),
            sha1: p.sha1.clone(),
            dependencies: p.dependencies.clone(),
        };
        packages.push(ArchivePackage { entry, stemcell: Some(p.stemcell.clone()), tgz });
    }
    let license = match &manifest.license {
        Some(l) => Some(check("license.tgz", "license.sha1".into(), &l.sha1)?),
        None => None,
    };
    Ok(ReleaseArchive { manifest, dir: dir.to_path_buf(), jobs, packages, license })
}
