//! Reading a release's job tarball (`job.MF`, `monit`, `templates/...`).

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
        let manifest = read_text(&root, "job tarball", "job.MF")?;
        let spec =
            JobSpec::parse(&manifest, "job.MF").map_err(|source| Error::JobSpec { source })?;
        let monit = read_text(&root, &spec.name, "monit")?;
        let mut templates = BTreeMap::new();
        let mut destinations = HashSet::from(["monit".to_owned()]);
        for (src, dst) in &spec.templates {
            let text = read_text(&root, &spec.name, &format!("templates/{src}"))?;
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
