//! Reading a release directory into fingerprinted resources, and building
//! their tarballs (reusing dev and final builds whose fingerprint is unchanged).
//!
//! Job tarballs hold `job.MF` (the spec), `monit` and `templates/`; package
//! tarballs hold `packaging` and the matched files, after `pre_packaging`
//! has run in a staging copy and been removed; `license.tgz` holds the
//! `LICENSE*`/`NOTICE*` files. Built tarballs are kept in a cache directory
//! named by digest, like bosh-cli's `~/.bosh/cache`.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use super::{
    Error, Result,
    blobs::{LazyBlobstore, OpenBlobstore},
    fingerprint::{self, FpFile},
    index::{BuildEntry, BuildIndex, build_index_path},
    io,
    manifest::find_cycle,
    spec::{JobSpec, PackageSpec},
    tgz::{TgzWriter, pack_dir},
};

/// What kind of resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A job.
    Job,
    /// A source package.
    Package,
    /// The license.
    License,
}

impl Kind {
    /// The directory name used in build indexes (`jobs`, `packages`, `license`).
    pub fn dir(self) -> &'static str {
        match self {
            Kind::Job => "jobs",
            Kind::Package => "packages",
            Kind::License => "license",
        }
    }
}

/// A job, package or license of a release directory, fingerprinted.
#[derive(Debug, Clone)]
pub struct Resource {
    /// Which kind.
    pub kind: Kind,
    /// Its name (`license` for the license).
    pub name: String,
    /// Its fingerprint.
    pub fingerprint: String,
    /// Its directory (the release dir for the license).
    pub dir: PathBuf,
    /// A job's packages or a package's dependencies, in spec order.
    pub refs: Vec<String>,
    /// Whether a `spec.lock` pinned it (it must already be a final build).
    pub locked: bool,
}

/// Everything in a release directory, fingerprinted and checked for consistency.
#[derive(Debug, Clone)]
pub struct DirRelease {
    /// Jobs, sorted by name.
    pub jobs: Vec<Resource>,
    /// Packages, sorted by name.
    pub packages: Vec<Resource>,
    /// The license, if there are license files.
    pub license: Option<Resource>,
}

fn subdirs(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io(dir))? {
        let p = e.map_err(io(dir))?.path();
        if p.is_dir() {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// Reads and fingerprints every job, package and the license of a release
/// directory, then checks that jobs name existing packages, that
/// dependencies exist, and that dependencies form no cycle.
pub fn read_dir_release(release_dir: &Path) -> Result<DirRelease> {
    let mut packages = Vec::new();
    for dir in subdirs(&release_dir.join("packages"))? {
        let locked = dir.join("spec.lock").exists();
        let (spec, fp) = fingerprint::package_fingerprint(release_dir, &dir)?;
        packages.push(Resource {
            kind: Kind::Package,
            name: spec.name,
            fingerprint: fp,
            dir,
            refs: spec.dependencies,
            locked,
        });
    }
    let mut jobs = Vec::new();
    for dir in subdirs(&release_dir.join("jobs"))? {
        let (spec, fp) = fingerprint::job_fingerprint(&dir)?;
        jobs.push(Resource {
            kind: Kind::Job,
            name: spec.name,
            fingerprint: fp,
            dir,
            refs: spec.packages,
            locked: false,
        });
    }
    let license = fingerprint::license_fingerprint(release_dir)?.map(|fp| Resource {
        kind: Kind::License,
        name: "license".into(),
        fingerprint: fp,
        dir: release_dir.to_path_buf(),
        refs: Vec::new(),
        locked: false,
    });
    let names: BTreeSet<&str> = packages.iter().map(|p| p.name.as_str()).collect();
    for j in &jobs {
        for p in &j.refs {
            if !names.contains(p.as_str()) {
                return Err(Error::entry(
                    format!("jobs/{}/spec", j.name),
                    "packages",
                    format!("package '{p}' is not in the release (no packages/{p})"),
                ));
            }
        }
    }
    for p in &packages {
        for d in &p.refs {
            if !names.contains(d.as_str()) {
                return Err(Error::entry(
                    format!("packages/{}/spec", p.name),
                    "dependencies",
                    format!("package '{d}' is not in the release (no packages/{d})"),
                ));
            }
        }
    }
    let deps = packages.iter().map(|p| (p.name.as_str(), p.refs.as_slice())).collect();
    if let Some(cycle) = find_cycle(&deps) {
        return Err(Error::entry(
            format!("packages/{}/spec", cycle[0]),
            "dependencies",
            format!("dependency cycle: {}", cycle.join(" -> ")),
        ));
    }
    Ok(DirRelease { jobs, packages, license })
}

/// A built resource tarball.
#[derive(Debug, Clone)]
pub struct Built {
    /// The resource.
    pub resource: Resource,
    /// The tarball, in the cache directory.
    pub path: PathBuf,
    /// Its digest (`sha256:<hex>`, or what a final index recorded).
    pub sha1: String,
}

/// Parent directories of `/`-separated relative paths, as tar entries.
fn parents(rels: &[String]) -> BTreeSet<String> {
    let mut dirs = BTreeSet::new();
    for r in rels {
        let mut p = Path::new(r).parent();
        while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(d.to_string_lossy().into_owned());
            p = d.parent();
        }
    }
    dirs
}

/// Writes a job tarball (symlinked templates are followed, as bosh-cli does).
fn write_job(res: &Resource, dest: &Path) -> Result<()> {
    let spec = JobSpec::read(&res.dir.join("spec"), &format!("jobs/{}/spec", res.name))?;
    let files = fingerprint::job_files(&res.dir, &spec)?;
    let mut w = TgzWriter::default();
    let rels: Vec<String> = files.iter().map(|f| f.rel.clone()).collect();
    for d in parents(&rels) {
        w.dir(&d);
    }
    for f in &files {
        w.file(&f.rel, &f.path)?;
    }
    Ok(w.write_to_path(dest)?)
}

fn add_unfollowed(w: &mut TgzWriter, f: &FpFile) -> Result<()> {
    let meta = std::fs::symlink_metadata(&f.path).map_err(io(&f.path))?;
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(&f.path).map_err(io(&f.path))?;
        w.symlink(&f.rel, &target.to_string_lossy());
    } else {
        w.file(&f.rel, &f.path)?;
    }
    Ok(())
}

/// Writes a package tarball; with a `pre_packaging` script, in a staging
/// copy where the script runs (`bash -x`, `BUILD_DIR`, `RELEASE_DIR`) and is then removed.
fn write_package(release_dir: &Path, res: &Resource, dest: &Path) -> Result<()> {
    let spec = PackageSpec::read(&res.dir.join("spec"), &format!("packages/{}/spec", res.name))?;
    let pf = fingerprint::package_files(release_dir, &res.dir, &spec)?;
    let Some(pre) = pf.pre_packaging else {
        let mut w = TgzWriter::default();
        let rels: Vec<String> = pf.files.iter().map(|f| f.rel.clone()).collect();
        for d in parents(&rels) {
            w.dir(&d);
        }
        for f in &pf.files {
            add_unfollowed(&mut w, f)?;
        }
        return Ok(w.write_to_path(dest)?);
    };
    let staging = tempfile::tempdir().map_err(io(Path::new("staging dir")))?;
    for f in &pf.files {
        let to = staging.path().join(&f.rel);
        if let Some(dir) = to.parent() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        let meta = std::fs::symlink_metadata(&f.path).map_err(io(&f.path))?;
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&f.path).map_err(io(&f.path))?;
            std::os::unix::fs::symlink(target, &to).map_err(io(&to))?;
        } else {
            std::fs::copy(&f.path, &to).map_err(io(&f.path))?;
        }
    }
    let out = std::process::Command::new("bash")
        .arg("-x")
        .arg(&pre.path)
        .current_dir(staging.path())
        .env("BUILD_DIR", staging.path())
        .env("RELEASE_DIR", release_dir)
        .output()
        .map_err(io(&pre.path))?;
    if !out.status.success() {
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        return Err(Error::Command {
            command: format!("packages/{}/pre_packaging", res.name),
            status: out.status.to_string(),
            output: text.trim().to_string(),
        });
    }
    let pre_copy = staging.path().join("pre_packaging");
    std::fs::remove_file(&pre_copy).map_err(io(&pre_copy))?;
    pack_dir(staging.path(), dest)
}

fn write_license(release_dir: &Path, dest: &Path) -> Result<()> {
    let mut w = TgzWriter::default();
    for f in fingerprint::license_files(release_dir)? {
        w.file(&f.rel, &f.path)?;
    }
    Ok(w.write_to_path(dest)?)
}

/// Where built tarballs and indexes are kept while building, and the
/// release blobstore final builds are fetched from.
#[derive(Debug)]
pub struct BuildContext<'a> {
    /// The release directory.
    pub release_dir: PathBuf,
    /// The cache of built tarballs, named by digest.
    pub cache_dir: PathBuf,
    /// The release blobstore, opened only if a final build must be fetched.
    store: LazyBlobstore<'a>,
}

impl<'a> BuildContext<'a> {
    /// A context fetching final builds from the blobstore `open` gives.
    pub fn new(release_dir: &Path, cache_dir: &Path, open: OpenBlobstore<'a>) -> Self {
        BuildContext {
            release_dir: release_dir.to_path_buf(),
            cache_dir: cache_dir.to_path_buf(),
            store: LazyBlobstore::new(release_dir, open),
        }
    }

    fn cached(&self, sha: &str) -> PathBuf {
        self.cache_dir.join(sha)
    }

    /// Finds an existing build of the resource: recorded in the dev index,
    /// then the final index, and present in the cache (or, for a final
    /// build, fetched from the release blobstore into it).
    pub fn find(&self, res: &Resource) -> Result<Option<Built>> {
        let dir = &self.release_dir;
        for final_builds in [false, true] {
            let path = build_index_path(dir, final_builds, res.kind.dir(), &res.name);
            let index = BuildIndex::read(dir, &path)?;
            if let Some(e) = index.find(&res.fingerprint) {
                let cached = self.cached(&e.sha1);
                if cached.exists() && super::verify_digest(&cached, &e.sha1)?.is_ok() {
                    return Ok(Some(Built {
                        resource: res.clone(),
                        path: cached,
                        sha1: e.sha1.clone(),
                    }));
                }
                if let Some(b) = self.fetch_final(res, e)? {
                    return Ok(Some(b));
                }
            }
        }
        Ok(None)
    }

    /// Finds the resource's build (see [`BuildContext::find`]); otherwise
    /// builds it and records it in the dev index.
    pub fn build(&self, res: &Resource) -> Result<Built> {
        let dir = &self.release_dir;
        let dev_path = build_index_path(dir, false, res.kind.dir(), &res.name);
        if let Some(b) = self.find(res)? {
            return Ok(b);
        }
        if res.locked {
            return Err(Error::entry(
                format!("packages/{}/spec.lock", res.name),
                &res.fingerprint,
                "vendored package has no final build in .final_builds",
            ));
        }
        std::fs::create_dir_all(&self.cache_dir).map_err(io(&self.cache_dir))?;
        let tmp = tempfile::NamedTempFile::new_in(&self.cache_dir).map_err(io(&self.cache_dir))?;
        match res.kind {
            Kind::Job => write_job(res, tmp.path())?,
            Kind::Package => write_package(dir, res, tmp.path())?,
            Kind::License => write_license(dir, tmp.path())?,
        }
        let sha = super::file_digest(tmp.path())?;
        let cached = self.cached(&sha);
        tmp.persist(&cached).map_err(|e| Error::Io { path: cached.clone(), source: e.error })?;
        let mut index = BuildIndex::read(dir, &dev_path)?;
        index.builds.insert(
            res.fingerprint.clone(),
            BuildEntry { version: res.fingerprint.clone(), blobstore_id: None, sha1: sha.clone() },
        );
        index.write(&dev_path)?;
        Ok(Built { resource: res.clone(), path: cached, sha1: sha })
    }

    /// Builds resources of one kind on up to 4 threads (each has its own
    /// index file, so builds do not contend), keeping their order; the
    /// first error in that order wins.
    pub fn build_all(&self, resources: &[Resource]) -> Result<Vec<Built>> {
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 4);
        let next = std::sync::atomic::AtomicUsize::new(0);
        let results: Vec<std::sync::Mutex<Option<Result<Built>>>> =
            resources.iter().map(|_| std::sync::Mutex::new(None)).collect();
        std::thread::scope(|s| {
            for _ in 0..workers.min(resources.len()) {
                s.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(res) = resources.get(i) else { break };
                        let built = self.build(res);
                        *results[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(built);
                    }
                });
            }
        });
        results
            .into_iter()
            .map(|m| m.into_inner().unwrap_or_else(|p| p.into_inner()).expect("every index built"))
            .collect()
    }

    /// Fetches a final build from the release blobstore into the cache.
    ///
    /// The object lands in a scratch file in the cache dir and is named by
    /// its digest only once it matches the index's, so an altered object
    /// is refused (naming the build and both digests) and nothing of it is
    /// cached. A final build whose object cannot be fetched is an error, as
    /// in bosh-cli: rebuilding it from source would give a tarball whose
    /// digest differs from the one the final release recorded.
    fn fetch_final(&self, res: &Resource, e: &BuildEntry) -> Result<Option<Built>> {
        let Some(id) = &e.blobstore_id else { return Ok(None) };
        let index = format!(".final_builds/{}", build_label(res));
        let build = format!("final build {index} ({})", res.fingerprint);
        let store = self.store.get()?;
        std::fs::create_dir_all(&self.cache_dir).map_err(io(&self.cache_dir))?;
        let tmp = tempfile::Builder::new()
            .prefix(".fetch-")
            .tempfile_in(&self.cache_dir)
            .map_err(io(&self.cache_dir))?;
        let found = store
            .download(id, tmp.path())
            .map_err(|error| Error::Blobstore { blob: build.clone(), error })?;
        if !found {
            return Err(Error::entry(
                format!("{index}/index.yml"),
                &res.fingerprint,
                format!("{build}: object '{id}' is not in the blobstore"),
            ));
        }
        if let Err(m) = super::verify_digest(tmp.path(), &e.sha1)? {
            return Err(Error::entry(
                format!("{index}/index.yml"),
                &res.fingerprint,
                format!("{build}: object '{id}' was refused and not cached: {m}"),
            ));
        }
        let cached = self.cached(&e.sha1);
        tmp.persist(&cached).map_err(|e| Error::Io { path: cached.clone(), source: e.error })?;
        Ok(Some(Built { resource: res.clone(), path: cached, sha1: e.sha1.clone() }))
    }
}

/// `jobs/<name>`, `packages/<name>` or `license`: where a resource's build
/// index lives under `.dev_builds`/`.final_builds`, naming it in errors.
pub(crate) fn build_label(res: &Resource) -> String {
    match res.kind {
        Kind::License => "license".to_string(),
        k => format!("{}/{}", k.dir(), res.name),
    }
}
