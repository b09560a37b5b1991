//! The agent's shared state: settings, layout, blobstore, supervisor,
//! tasks, and the applied spec.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bosh_api::agent::{ApplySpec, Settings};
use tokio::sync::mpsc;

use crate::blobs::Blobs;
use crate::error::{Error, Result};
use crate::settings::Paths;
use crate::supervise::{Failure, Supervisor};
use crate::tasks::{Dedup, Tasks};
use crate::vitals::Sampler;

/// Everything a method handler needs.
pub struct Agent {
    /// Where the settings came from (re-read when disks change).
    pub settings_path: PathBuf,
    /// The settings read at boot.
    pub settings: Settings,
    /// The `/var/vcap` layout.
    pub paths: Paths,
    /// The blobstore.
    pub blobs: Blobs,
    /// Job processes.
    pub supervisor: Supervisor,
    /// Long operations.
    pub tasks: Tasks,
    /// Replies by request id.
    pub dedup: Dedup,
    /// Serializes operations that change the jobs (apply, start, stop,
    /// scripts, drain, disks), as BOSH's director never overlaps them.
    pub lifecycle: tokio::sync::Mutex<()>,
    /// Serializes compilations, which share `/var/vcap/packages`.
    pub compile: tokio::sync::Mutex<()>,
    /// The last applied spec.
    pub spec: Mutex<Option<ApplySpec>>,
    /// CPU sampling state for vitals.
    pub vitals: Mutex<Sampler>,
}

impl Agent {
    /// Builds the agent from its settings; returns the receiver of process
    /// failures (for alerts).
    pub fn new(
        settings_path: PathBuf,
        settings: Settings,
    ) -> Result<(Arc<Agent>, mpsc::UnboundedReceiver<Failure>)> {
        let paths = Paths::new("/");
        paths.create_layout()?;
        let (tx, rx) = mpsc::unbounded_channel();
        let blobs = Blobs::new(
            &settings.blobstore.url,
            &settings.blobstore.mirrors,
            &settings.blobstore.token,
            paths.clone(),
        );
        let spec = match std::fs::read(paths.spec_file()) {
            Ok(b) => serde_json::from_slice(&b).ok(),
            Err(_) => None,
        };
        let agent = Agent {
            settings_path,
            settings,
            supervisor: Supervisor::new(paths.clone(), tx),
            paths,
            blobs,
            tasks: Tasks::default(),
            dedup: Dedup::default(),
            lifecycle: tokio::sync::Mutex::new(()),
            compile: tokio::sync::Mutex::new(()),
            spec: Mutex::new(spec),
            vitals: Mutex::new(Sampler::default()),
        };
        Ok((Arc::new(agent), rx))
    }

    /// Resumes supervision after an agent restart: the applied jobs are
    /// loaded and, if they were started, supervised again (live processes
    /// are adopted from their pidfiles).
    pub async fn resume(&self) -> Result<()> {
        let jobs = self.job_names();
        self.supervisor.load(&jobs).await?;
        let desired = std::fs::read_to_string(self.paths.desired_state_file()).unwrap_or_default();
        if desired.trim() == "running" {
            self.supervisor.start().await?;
        }
        Ok(())
    }

    /// Records whether jobs should run, for [`Agent::resume`].
    pub fn set_desired(&self, running: bool) -> Result<()> {
        let p = self.paths.desired_state_file();
        std::fs::write(&p, if running { "running" } else { "stopped" })
            .map_err(Error::io("write", &p))
    }

    /// The applied spec's job names, in order.
    pub fn job_names(&self) -> Vec<String> {
        let spec = self.spec.lock().expect("lock");
        spec.as_ref().map(|s| s.jobs.iter().map(|j| j.name.clone()).collect()).unwrap_or_default()
    }

    /// The settings as on disk now (the CPI rewrites them when disks are
    /// attached); falls back to the boot settings.
    pub fn current_settings(&self) -> Settings {
        crate::settings::load(&self.settings_path).unwrap_or_else(|_| self.settings.clone())
    }
}
