//! Reading a job's templates: from a release's job tarball (`job.MF`,
//! `monit`, `templates/...`) or from a release directory's `jobs/<job>/`
//! (`spec` in place of `job.MF`), through the same checks.

use std::collections::{BTreeMap, HashSet};
use std::path::{Component, Path};

use bosh_api::archive::{Limits, unpack_tgz};
use bosh_api::release::JobSpec;

use super::{Error, JobTemplates};

/// Caps for a job tarball: templates are text, a few KiB each.
const JOB_LIMITS: Limits =
    Limits { max_total_bytes: 64 << 20, max_entry_bytes: 16 << 20, max_entries: 10_000 };

impl JobTemplates {
    /// Reads a job tarball (`job.MF`, `monit`, `templates/...`). Unpacking
    /// refuses entries that escape the tarball (see [`bosh_api::archive`]);
    /// every template the spec lists must be present and UTF-8.
    pub fn from_job_tgz(bytes: &[u8]) -> Result<JobTemplates, Error> {
        let scratch = tempfile::tempdir().map_err(|source| Error::Io { source })?;
        let root = scratch.path().join("job");
        unpack_tgz(bytes, &root, &JOB_LIMITS, "job tarball")
            .map_err(|source| Error::JobArchive { source })?;
        Self::read(&root, "job.MF", "job tarball")
    }

    /// Reads a release directory's job folder (`spec`, `monit`,
    /// `templates/...`), as `boshctl render` does: the same checks as a
    /// tarball's, so what renders here renders from the built release.
    pub fn from_dir(dir: &Path) -> Result<JobTemplates, Error> {
        let job = dir.file_name().map(|n| n.to_string_lossy().into_owned());
        Self::read(dir, "spec", job.as_deref().unwrap_or("job directory"))
    }

    /// Reads a job from `root`, whose spec is the file `manifest`; `origin`
    /// names the job in errors until its spec is read.
    fn read(root: &Path, manifest: &str, origin: &str) -> Result<JobTemplates, Error> {
        let text = read_text(root, origin, manifest)?;
        let spec = JobSpec::parse(&text, manifest).map_err(|source| Error::JobSpec { source })?;
        let monit = read_text(root, &spec.name, "monit")?;
        let mut templates = BTreeMap::new();
        let mut destinations = HashSet::from(["monit".to_owned()]);
        for (src, dst) in &spec.templates {
            let text = read_text(root, &spec.name, &format!("templates/{src}"))?;
            templates.insert(src.clone(), text);
            if !destinations.insert(normalize(dst)) {
                return Err(Error::DuplicateDestination {
                    job: spec.name.clone(),
                    destination: dst.clone(),
                });
            }
        }
        Ok(JobTemplates { name: spec.name.clone(), spec, monit, templates })
    }
}

/// A relative path without `.` components (`./bin/ctl` → `bin/ctl`); the
/// spec parser already refused absolute paths and `..`.
pub(super) fn normalize(path: &str) -> String {
    Path::new(path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn read_text(root: &Path, job: &str, file: &str) -> Result<String, Error> {
    let err = |source| Error::JobFile { job: job.to_owned(), file: file.to_owned(), source };
    let path = root.join(file);
    // Symlinks were checked by the unpacker to stay inside the tarball.
    let meta = std::fs::metadata(&path).map_err(err)?;
    if !meta.is_file() {
        return Err(err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file")));
    }
    let bytes = std::fs::read(&path).map_err(err)?;
    String::from_utf8(bytes)
        .map_err(|_| err(std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8")))
}
