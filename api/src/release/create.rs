//! `create-release` and `finalize-release` on a release directory, as bosh-cli does them.
//!
//! create-release: check git (refuse a dirty tree unless forced), sync
//! `blobs/` with `config/blobs.yml`, fingerprint everything, reuse or build
//! each tarball (recording new builds in `.dev_builds`), pick the next dev
//! version (`0+dev.1`, then `0+dev.2`; after final `3`, `3+dev.1`), record
//! it in `dev_releases/<name>/`, and with `--final` also finalize it. A
//! finalized resource is stored in the release blobstore and recorded in
//! `.final_builds` with its blobstore id; the release in `releases/<name>/`.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use super::{
    Error, Result,
    archive::{ReleaseArchive, read_release_tarball, write_release_tarball},
    blobs::{LazyBlobstore, OpenBlobstore, open_local, sync_blobs_with},
    build::{BuildContext, Built, Kind, Resource, build_label, read_dir_release},
    config::FinalConfig,
    index::{BuildEntry, BuildIndex, ReleaseIndex, build_index_path, releases_dir},
    io,
    manifest::{JobRef, LicenseRef, PackageRef, ReleaseManifest},
    tgz::Limits,
    version::Version,
};

/// Flags of `create-release`.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// `--name`: overrides `config/final.yml`.
    pub name: Option<String>,
    /// `--version`: overrides the next dev (or final) version.
    pub version: Option<String>,
    /// `--final`: also finalize the release.
    pub final_release: bool,
    /// `--tarball`: write the release tarball here (`((name))`/`((version))` are substituted).
    pub tarball: Option<PathBuf>,
    /// `--force`: build even if the git tree is dirty.
    pub force: bool,
    /// `--timestamp-version`: the dev version's post-release is `dev.<unix time>`.
    pub timestamp_version: bool,
    /// Where built tarballs are cached (bosh-cli: `~/.bosh/cache`).
    pub cache_dir: PathBuf,
}

/// What create-release or finalize-release produced.
#[derive(Debug, Clone)]
pub struct CreatedRelease {
    /// The release manifest (also `release.MF` of the tarball).
    pub manifest: ReleaseManifest,
    /// `dev_releases/<n>/<n>-<v>.yml` or `releases/<n>/<n>-<v>.yml`.
    pub manifest_path: PathBuf,
    /// The tarball, if one was written.
    pub tarball: Option<PathBuf>,
}

/// Runs git in `dir`; `None` if `dir` is not in a git work tree (or git is absent).
fn git(dir: &Path, args: &[&str]) -> Option<std::process::Output> {
    let inside = Command::new("git").arg("-C").arg(dir).args(["rev-parse", "--git-dir"]).output();
    if !inside.is_ok_and(|o| o.status.success()) {
        return None;
    }
    Command::new("git").arg("-C").arg(dir).args(args).output().ok()
}

/// The short HEAD commit (`non-git` outside git, `empty` before the first commit).
pub fn commit_hash(dir: &Path) -> String {
    match git(dir, &["rev-parse", "--short", "HEAD"]) {
        None => "non-git".into(),
        Some(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        Some(_) => "empty".into(),
    }
}

/// Whether the git tree is dirty; dirty without `force` is an error listing the changes.
pub fn check_dirty(dir: &Path, force: bool) -> Result<bool> {
    let Some(o) = git(dir, &["status", "--porcelain=1"]) else { return Ok(false) };
    let changes = String::from_utf8_lossy(&o.stdout).trim().to_string();
    if changes.is_empty() {
        return Ok(false);
    }
    if force {
        return Ok(true);
    }
    Err(Error::Command {
        command: "git status".into(),
        status: "dirty".into(),
        output: format!("git repository has local modifications (use --force):\n{changes}"),
    })
}

fn last_version(dir: &Path, final_release: bool, name: &str) -> Result<Option<Version>> {
    let file =
        format!("{}/{name}/index.yml", if final_release { "releases" } else { "dev_releases" });
    ReleaseIndex::read(dir, final_release, name)?.last_version(&file)
}

/// The next dev version: the newer of the last dev and last final version, post-release incremented.
pub fn next_dev_version(dir: &Path, name: &str, timestamp: Option<u64>) -> Result<Version> {
    let dev = last_version(dir, false, name)?;
    let fin = last_version(dir, true, name)?;
    let last = match (dev, fin) {
        (Some(d), Some(f)) => {
            if f > d {
                f
            } else {
                d
            }
        }
        (Some(v), None) | (None, Some(v)) => v,
        (None, None) => Version::default_dev(),
    };
    let next = last
        .increment_post_release()
        .map_err(|m| Error::entry("dev_releases", name, format!("cannot increment: {m}")))?;
    Ok(match timestamp {
        Some(ts) => next.with_timestamp(ts),
        None => next,
    })
}

/// The next final version: `1`, or the last final version's release segment plus one.
pub fn next_final_version(dir: &Path, name: &str) -> Result<Version> {
    match last_version(dir, true, name)? {
        None => Ok(Version::default_final()),
        Some(v) => v
            .increment_release()
            .map_err(|m| Error::entry("releases", name, format!("cannot increment: {m}"))),
    }
}

fn manifest_of(
    name: &str,
    version: &str,
    jobs: &[Built],
    pkgs: &[Built],
    lic: Option<&Built>,
) -> ReleaseManifest {
    ReleaseManifest {
        name: name.into(),
        version: version.into(),
        jobs: jobs
            .iter()
            .map(|b| JobRef {
                name: b.resource.name.clone(),
                version: b.resource.fingerprint.clone(),
                fingerprint: b.resource.fingerprint.clone(),
                sha1: b.sha1.clone(),
                packages: b.resource.refs.clone(),
            })
            .collect(),
        packages: pkgs
            .iter()
            .map(|b| PackageRef {
                name: b.resource.name.clone(),
                version: b.resource.fingerprint.clone(),
                fingerprint: b.resource.fingerprint.clone(),
                sha1: b.sha1.clone(),
                dependencies: b.resource.refs.clone(),
            })
            .collect(),
        license: lic.map(|b| LicenseRef {
            version: b.resource.fingerprint.clone(),
            fingerprint: b.resource.fingerprint.clone(),
            sha1: b.sha1.clone(),
        }),
        ..Default::default()
    }
}

fn save_release(dir: &Path, final_release: bool, m: &ReleaseManifest) -> Result<PathBuf> {
    let mut index = ReleaseIndex::read(dir, final_release, &m.name)?;
    let path = releases_dir(dir, final_release)
        .join(&m.name)
        .join(format!("{}-{}.yml", m.name, m.version));
    if index.contains(&m.version) {
        let which = if final_release { "releases" } else { "dev_releases" };
        return Err(Error::entry(
            format!("{which}/{}/index.yml", m.name),
            &m.version,
            format!("release '{}' version '{}' already exists", m.name, m.version),
        ));
    }
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(io(d))?;
    }
    std::fs::write(&path, m.to_yaml()?).map_err(io(&path))?;
    index.add(dir, final_release, &m.name, &m.version)?;
    Ok(path)
}

/// Stores each resource not yet in `.final_builds` in the release blobstore
/// (opened only if one is new) under a fresh object id, and records it.
/// Each index is written right after its upload succeeded, so an id is
/// recorded only for a stored object and a failure later on loses none.
fn finalize_builds(dir: &Path, built: &[&Built], open: OpenBlobstore) -> Result<()> {
    let store = LazyBlobstore::new(dir, open);
    for b in built {
        let path = build_index_path(dir, true, b.resource.kind.dir(), &b.resource.name);
        let mut index = BuildIndex::read(dir, &path)?;
        if index.find(&b.resource.fingerprint).is_some() {
            continue;
        }
        let id = store.get()?.upload(&b.path).map_err(|error| Error::Blobstore {
            blob: format!(
                "final build .final_builds/{} ({})",
                build_label(&b.resource),
                b.resource.fingerprint
            ),
            error,
        })?;
        index.builds.insert(
            b.resource.fingerprint.clone(),
            BuildEntry {
                version: b.resource.fingerprint.clone(),
                blobstore_id: Some(id),
                sha1: b.sha1.clone(),
            },
        );
        index.write(&path)?;
    }
    Ok(())
}

fn finalize(
    dir: &Path,
    m: &mut ReleaseManifest,
    version: Option<&str>,
    built: &[&Built],
    open: OpenBlobstore,
) -> Result<PathBuf> {
    m.version = match version {
        Some(v) => v.to_string(),
        None => next_final_version(dir, &m.name)?.to_string(),
    };
    refuse_existing_final(dir, &m.name, &m.version)?;
    finalize_builds(dir, built, open)?;
    save_release(dir, true, m)
}

/// Refuses a final version that `releases/<name>/index.yml` already records.
fn refuse_existing_final(dir: &Path, name: &str, version: &str) -> Result<()> {
    if ReleaseIndex::read(dir, true, name)?.contains(version) {
        return Err(Error::entry(
            format!("releases/{name}/index.yml"),
            version,
            format!("release '{name}' version '{version}' already exists"),
        ));
    }
    Ok(())
}

fn check_version(v: &str) -> Result<()> {
    Version::parse(v).map(|_| ()).map_err(|m| Error::entry("--version", v, m))
}

/// `create-release` on the release directory `dir`, fetching missing blobs
/// and final builds from (and storing final builds in) the local provider.
pub fn create_release(dir: &Path, opts: &CreateOptions) -> Result<CreatedRelease> {
    create_release_with(dir, opts, &open_local)
}

/// `create-release` on the release directory `dir`, fetching missing blobs
/// and final builds from the blobstore `open` gives (a caller's network
/// providers), and with `--final` storing new final builds in it.
pub fn create_release_with(
    dir: &Path,
    opts: &CreateOptions,
    open: OpenBlobstore,
) -> Result<CreatedRelease> {
    let dir = &std::path::absolute(dir).map_err(io(dir))?;
    if let Some(v) = &opts.version {
        check_version(v)?;
    }
    let dirty = check_dirty(dir, opts.force)?;
    let commit = commit_hash(dir);
    sync_blobs_with(dir, open)?;
    let rel = read_dir_release(dir)?;
    let name = match &opts.name {
        Some(n) => n.clone(),
        None => FinalConfig::read(dir)?.release_name()?,
    };
    if let (true, Some(v)) = (opts.final_release, &opts.version) {
        refuse_existing_final(dir, &name, v)?;
    }
    let version = match &opts.version {
        Some(v) => v.clone(),
        None => {
            let ts = opts.timestamp_version.then(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0)
            });
            next_dev_version(dir, &name, ts)?.to_string()
        }
    };
    let ctx = BuildContext::new(dir, &opts.cache_dir, open);
    let jobs = ctx.build_all(&rel.jobs)?;
    let pkgs = ctx.build_all(&rel.packages)?;
    let lic = rel.license.as_ref().map(|r| ctx.build(r)).transpose()?;
    let mut m = manifest_of(&name, &version, &jobs, &pkgs, lic.as_ref());
    m.commit_hash = commit;
    m.uncommitted_changes = dirty;
    let mut manifest_path = save_release(dir, false, &m)?;
    if opts.final_release {
        let all: Vec<&Built> = jobs.iter().chain(&pkgs).chain(lic.as_ref()).collect();
        manifest_path = finalize(dir, &mut m, opts.version.as_deref(), &all, open)?;
    }
    let tarball = match &opts.tarball {
        Some(t) => {
            let t =
                t.to_string_lossy().replace("((name))", &m.name).replace("((version))", &m.version);
            let t = PathBuf::from(t);
            write_release_tarball(&t, &m, &jobs, &pkgs, lic.as_ref())?;
            Some(t)
        }
        None => None,
    };
    Ok(CreatedRelease { manifest: m, manifest_path, tarball })
}

/// `finalize-release TARBALL` with the local provider; see [`finalize_release_with`].
pub fn finalize_release(
    dir: &Path,
    tarball: &Path,
    name: Option<&str>,
    version: Option<&str>,
    force: bool,
) -> Result<CreatedRelease> {
    finalize_release_with(dir, tarball, name, version, force, &open_local)
}

/// `finalize-release TARBALL` into the release directory `dir`: verifies the
/// tarball, stores its new jobs, packages and license as final builds in
/// the blobstore `open` gives, and records the release under `releases/`.
pub fn finalize_release_with(
    dir: &Path,
    tarball: &Path,
    name: Option<&str>,
    version: Option<&str>,
    force: bool,
    open: OpenBlobstore,
) -> Result<CreatedRelease> {
    let dir = &std::path::absolute(dir).map_err(io(dir))?;
    if let Some(v) = version {
        check_version(v)?;
    }
    check_dirty(dir, force)?;
    let scratch = tempfile::tempdir().map_err(io(Path::new("temp dir")))?;
    let ar: ReleaseArchive =
        read_release_tarball(tarball, &scratch.path().join("release"), &Limits::default())?;
    let mut m = ar.manifest.clone();
    if let Some(n) = name {
        m.name = n.to_string();
    }
    let res = |kind, name: &str, fp: &str, path: &Path, sha1: &str| Built {
        resource: Resource {
            kind,
            name: name.to_string(),
            fingerprint: fp.to_string(),
            dir: path.to_path_buf(),
            refs: Vec::new(),
            locked: false,
        },
        path: path.to_path_buf(),
        sha1: sha1.to_string(),
    };
    let mut built = Vec::new();
    for j in &ar.jobs {
        built.push(res(Kind::Job, &j.entry.name, &j.entry.fingerprint, &j.tgz, &j.entry.sha1));
    }
    for p in ar.packages.iter().filter(|p| p.stemcell.is_none()) {
        built.push(res(Kind::Package, &p.entry.name, &p.entry.fingerprint, &p.tgz, &p.entry.sha1));
    }
    if let (Some(l), Some(path)) = (&m.license, &ar.license) {
        built.push(res(Kind::License, "license", &l.fingerprint, path, &l.sha1));
    }
    let all: Vec<&Built> = built.iter().collect();
    let manifest_path = finalize(dir, &mut m, version, &all, open)?;
    Ok(CreatedRelease { manifest: m, manifest_path, tarball: None })
}

/// `create-release MANIFEST --tarball PATH` with the local provider; see
/// [`write_recorded_release_with`].
pub fn write_recorded_release(
    dir: &Path,
    manifest: &Path,
    cache_dir: &Path,
    tarball: &Path,
) -> Result<ReleaseManifest> {
    write_recorded_release_with(dir, manifest, cache_dir, tarball, &open_local)
}

/// `create-release MANIFEST --tarball PATH`: writes the tarball of a release
/// recorded earlier (`dev_releases/<n>/<n>-<v>.yml` or `releases/...`) from
/// the builds its manifest names, as bosh-cli does. Every build must still be
/// in the cache or, for a final build, in the blobstore `open` gives;
/// nothing is rebuilt.
pub fn write_recorded_release_with(
    dir: &Path,
    manifest: &Path,
    cache_dir: &Path,
    tarball: &Path,
    open: OpenBlobstore,
) -> Result<ReleaseManifest> {
    let dir = &std::path::absolute(dir).map_err(io(dir))?;
    let file = manifest.display().to_string();
    let src = std::fs::read_to_string(manifest).map_err(io(manifest))?;
    let m = ReleaseManifest::parse(&src, &file)?;
    m.check_consistency(&file)?;
    let ctx = BuildContext::new(dir, cache_dir, open);
    let find = |kind: Kind, name: &str, fp: &str, sha1: &str, entry: String| -> Result<Built> {
        let res = Resource {
            kind,
            name: name.to_string(),
            fingerprint: fp.to_string(),
            dir: dir.clone(),
            refs: Vec::new(),
            locked: false,
        };
        match ctx.find(&res)? {
            Some(b) if b.sha1 == sha1 => Ok(b),
            Some(b) => Err(Error::entry(
                &file,
                entry,
                format!("the build found has digest {}, the manifest {sha1}", b.sha1),
            )),
            None => Err(Error::entry(
                &file,
                entry,
                format!("no build of fingerprint {fp} in the cache or the blobstore"),
            )),
        }
    };
    let mut jobs = Vec::new();
    for j in &m.jobs {
        let mut b = find(Kind::Job, &j.name, &j.fingerprint, &j.sha1, format!("jobs[{}]", j.name))?;
        b.resource.refs = j.packages.clone();
        jobs.push(b);
    }
    let mut pkgs = Vec::new();
    for p in &m.packages {
        let entry = format!("packages[{}]", p.name);
        let mut b = find(Kind::Package, &p.name, &p.fingerprint, &p.sha1, entry)?;
        b.resource.refs = p.dependencies.clone();
        pkgs.push(b);
    }
    let lic = match &m.license {
        Some(l) => Some(find(Kind::License, "license", &l.fingerprint, &l.sha1, "license".into())?),
        None => None,
    };
    write_release_tarball(tarball, &m, &jobs, &pkgs, lic.as_ref())?;
    Ok(m)
}
