//! Loading the bootstrap settings and the paths they root.

use std::path::{Path, PathBuf};

use bosh_api::agent::Settings;

use crate::error::{Error, Result};

/// Reads and parses the settings file.
pub fn load(path: &Path) -> Result<Settings> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Settings { path: path.to_path_buf(), source: Box::new(e) })?;
    let settings: Settings = serde_json::from_str(&text)
        .map_err(|e| Error::Settings { path: path.to_path_buf(), source: Box::new(e) })?;
    check_agent_id(&settings.agent_id)
        .map_err(|m| Error::Settings { path: path.to_path_buf(), source: m.into() })?;
    Ok(settings)
}

/// The agent id becomes one NATS subject token: a `*`, `>`, `.` or space in
/// it would subscribe the agent to other agents' requests.
fn check_agent_id(id: &str) -> std::result::Result<(), String> {
    let ok = !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || "-_".contains(c));
    if ok { Ok(()) } else { Err(format!("agent_id {id:?} must be letters, digits, '-' or '_'")) }
}

/// BOSH's `/var/vcap` layout under the VM's root directory.
#[derive(Debug, Clone)]
pub struct Paths {
    /// `/` for the agent (every VM, container or process, has its own
    /// `/var/vcap`); a temporary directory in unit tests.
    pub root: PathBuf,
}

impl Paths {
    /// The layout under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Paths {
        Paths { root: root.into() }
    }

    /// `<root>/var/vcap`.
    pub fn vcap(&self) -> PathBuf {
        self.root.join("var/vcap")
    }

    /// `<root>/var/vcap/jobs`.
    pub fn jobs(&self) -> PathBuf {
        self.vcap().join("jobs")
    }

    /// `<root>/var/vcap/jobs/<job>`.
    pub fn job(&self, job: &str) -> PathBuf {
        self.jobs().join(job)
    }

    /// `<root>/var/vcap/packages`.
    pub fn packages(&self) -> PathBuf {
        self.vcap().join("packages")
    }

    /// `<root>/var/vcap/data`.
    pub fn data(&self) -> PathBuf {
        self.vcap().join("data")
    }

    /// `<root>/var/vcap/data/tmp`: scratch space for downloads and TMPDIR.
    pub fn tmp(&self) -> PathBuf {
        self.data().join("tmp")
    }

    /// `<root>/var/vcap/data/blobs`: verified blobs fetched by `prepare`.
    pub fn blob_cache(&self) -> PathBuf {
        self.data().join("blobs")
    }

    /// `<root>/var/vcap/data/compile`: compile targets.
    pub fn compile(&self) -> PathBuf {
        self.data().join("compile")
    }

    /// `<root>/var/vcap/sys/log`.
    pub fn sys_log(&self) -> PathBuf {
        self.vcap().join("sys/log")
    }

    /// `<root>/var/vcap/sys/run`.
    pub fn sys_run(&self) -> PathBuf {
        self.vcap().join("sys/run")
    }

    /// `<root>/var/vcap/store`: where the persistent disk is visible.
    pub fn store(&self) -> PathBuf {
        self.vcap().join("store")
    }

    /// `<root>/var/vcap/bosh`: the agent's own state.
    pub fn bosh(&self) -> PathBuf {
        self.vcap().join("bosh")
    }

    /// `<root>/var/vcap/bosh/spec.json`: the applied spec, kept across
    /// agent restarts.
    pub fn spec_file(&self) -> PathBuf {
        self.bosh().join("spec.json")
    }

    /// `<root>/var/vcap/bosh/job-state.json`: whether jobs should run.
    pub fn desired_state_file(&self) -> PathBuf {
        self.bosh().join("desired-state.json")
    }

    /// Creates BOSH's directories (`data`, `sys/log`, `sys/run`, `store`,
    /// `jobs`, `packages`, `bosh`).
    pub fn create_layout(&self) -> Result<()> {
        for d in [
            self.jobs(),
            self.packages(),
            self.data(),
            self.tmp(),
            self.sys_log(),
            self.sys_run(),
            self.bosh(),
        ] {
            std::fs::create_dir_all(&d).map_err(Error::io("create", &d))?;
        }
        // The store may be a symlink to a mounted disk: leave it alone then.
        let store = self.store();
        if std::fs::symlink_metadata(&store).is_err() {
            std::fs::create_dir_all(&store).map_err(Error::io("create", &store))?;
        }
        Ok(())
    }

    /// The environment every job script and process sees, as on a BOSH
    /// stemcell: the usual system PATH, HOME and TMPDIR under `/var/vcap/data`.
    pub fn job_env(&self) -> Vec<(String, String)> {
        vec![
            ("PATH".into(), "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()),
            ("HOME".into(), self.data().display().to_string()),
            ("TMPDIR".into(), self.tmp().display().to_string()),
            ("LANG".into(), "C.UTF-8".into()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Agent ids that are not one plain NATS subject token are refused.
    #[test]
    fn wildcard_agent_ids_are_refused() {
        for bad in ["", "*", ">", "a.b", "a b", "agent-1.>"] {
            assert!(check_agent_id(bad).is_err(), "{bad:?}");
        }
        check_agent_id("a1b2-c3_d4").unwrap();
    }
}
