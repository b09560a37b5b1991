//! Job template rendering (placeholder: being written; see the contract below).
//!
//! Contract used by the deployment controller:
//!
//! - [`JobTemplates::from_job_tgz`] reads a release's job tarball.
//! - [`render_batch`] renders many instances' jobs in one Ruby process.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// A job's templates, read from its release tarball.
#[derive(Debug, Clone)]
pub struct JobTemplates {
    /// Job name.
    pub name: String,
    /// The parsed `job.MF`.
    pub spec: bosh_api::release::JobSpec,
    /// The `monit` file's content.
    pub monit: String,
    /// Template source path (relative to `templates/`) to its content.
    pub templates: BTreeMap<String, String>,
}

impl JobTemplates {
    /// Reads a job tarball (`job.MF`, `monit`, `templates/...`).
    pub fn from_job_tgz(_bytes: &[u8]) -> Result<JobTemplates, Error> {
        todo!()
    }
}

/// What templates see as `spec`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct InstanceContext {
    /// Deployment name.
    pub deployment: String,
    /// Instance group name.
    pub name: String,
    /// Index.
    pub index: u32,
    /// UUID.
    pub id: String,
    /// AZ.
    pub az: Option<String>,
    /// Default network's IP (or DNS address).
    pub address: String,
    /// Default network's IP.
    pub ip: Option<String>,
    /// `{name: {ip, netmask, gateway, default, dns}}`.
    pub networks: serde_json::Value,
    /// Whether this is the bootstrap instance.
    pub bootstrap: bool,
}

/// One job to render on one instance.
#[derive(Debug, Clone)]
pub struct RenderJob {
    /// The job's templates.
    pub job: Arc<JobTemplates>,
    /// The properties the manifest gives this job (job level, else
    /// instance group level, else deployment level), before defaults.
    pub properties: serde_json::Value,
    /// Links by name (room for links; empty for now).
    pub links: serde_json::Value,
}

/// One instance's jobs.
#[derive(Debug, Clone)]
pub struct RenderRequest {
    /// `spec` in templates.
    pub instance: InstanceContext,
    /// Its jobs, in order.
    pub jobs: Vec<RenderJob>,
}

/// One instance's rendered jobs.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// Deterministic tgz: `<job>/monit`, `<job>/<destination>` per template.
    pub archive: Vec<u8>,
    /// sha256 hex of `archive`.
    pub sha256: String,
}

/// Limits on one Ruby process.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Killed after this long.
    pub timeout: Duration,
    /// Killed once output exceeds this many bytes.
    pub max_output: usize,
}

/// Errors of rendering.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Placeholder.
    #[error("not yet implemented")]
    Todo,
}

/// Renders every request in one Ruby process; each result in request order.
pub async fn render_batch(
    _reqs: &[RenderRequest],
    _limits: &Limits,
) -> Result<Vec<Result<Rendered, Error>>, Error> {
    todo!()
}
