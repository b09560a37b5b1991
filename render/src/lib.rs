//! Job template rendering with Ruby's own ERB, one Ruby process per batch.
//!
//! BOSH job templates are ERB, and ERB is Ruby: a template may call any
//! Ruby method, `require 'json'`, define helpers or constants. Re-implementing
//! ERB would only ever be close, so rendering runs the real `ruby` with a
//! small driver ([`renderer.rb`](./renderer.rb)) that provides BOSH's
//! template API (bosh-template's `EvaluationContext`: `p`, `if_p`, `spec`,
//! `link`, `if_link`, ...).
//!
//! Why one process per *batch*: starting Ruby costs tens of milliseconds and
//! a deploy renders every instance before touching a VM, so the deployment
//! controller hands over all instances at once. Every distinct job is sent
//! once, however many instances use it; each instance comes back as one JSON
//! line, so a batch streams and its size is checked as it arrives.
//!
//! Why limits kill the process rather than the template: a template is code.
//! The process gets a memory cap (`RLIMIT_AS`, [`MAX_MEMORY`]), a wall-clock
//! [`Limits::timeout`] and a cap on what it writes ([`Limits::max_output`]),
//! and it runs in its own process group, killed whole on any failure or when
//! the caller drops the future. Inside Ruby each template's output buffer is
//! bounded too, so a template that writes without end fails alone.
//!
//! Why errors carry no values: rendering errors end up in task events and
//! logs, while properties hold passwords. Ruby's `NameError` messages embed
//! the receiver's `inspect`, so the driver rebuilds them from the method
//! name and the receiver's class; here, `#<...>` inspect output is cut and
//! every string the manifest gave the job is replaced by `<redacted>`.
//!
//! Properties are resolved as the director does before rendering
//! (`properties.rs`): a job sees only the properties its spec declares, each
//! the manifest's value or else the spec's default.
//!
//! Why a crate of its own: the director (`bosh-controllers`, as
//! `libs::render`) and `boshctl render` must render the same bytes from the
//! same inputs, so both call this one implementation; `boshctl` must not
//! link the director (nor its etcd client) to get it.
//!
//! # Layout
//!
//! - `lib.rs`: the request and result types, errors, [`render_batch`].
//! - `job.rs`: a job's templates, from a tarball or a release directory.
//! - `properties.rs`: a job's properties bound as the director binds them.
//! - `spec.rs`: the `spec` templates see, derived from the instance.
//! - `links.rs`: the consumed links a job's templates receive.
//! - `ruby.rs` and `renderer.rb`: the Ruby process and its driver.
//! - `archive.rs`: the rendered-templates archive the agent installs.
//! - `redact.rs`: property values kept out of error messages.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bosh_api::archive::ArchiveError;

mod archive;
mod job;
mod links;
mod properties;
mod redact;
mod ruby;
mod spec;

pub use links::{Link, LinkInstance};
pub use spec::{InstanceContext, NetworkContext, ReleaseRef, canonical, template_spec};

#[cfg(test)]
mod tests;

/// Most memory (address space, bytes) a Ruby render process may map.
pub const MAX_MEMORY: u64 = 1 << 30;

/// A job's templates, read from its release tarball.
#[derive(Debug, Clone)]
pub struct JobTemplates {
    /// Job name.
    pub name: String,
    /// The parsed `job.MF`.
    pub spec: bosh_api::release::JobSpec,
    /// The `monit` file's content (an ERB template too, as in BOSH).
    pub monit: String,
    /// Template source path (relative to `templates/`) to its content; one
    /// entry per template the spec lists.
    pub templates: BTreeMap<String, String>,
}

/// One job to render on one instance.
#[derive(Debug, Clone)]
pub struct RenderJob {
    /// The job's templates.
    pub job: Arc<JobTemplates>,
    /// The properties the manifest gives this job (job level, else
    /// instance group level, else deployment level), before defaults.
    pub properties: serde_json::Value,
    /// Consumed links by name (the director resolves them each pass;
    /// `boshctl render` reads them from `--links`).
    pub links: BTreeMap<String, Link>,
    /// `spec.release`: the job's release, when known.
    pub release: Option<ReleaseRef>,
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
    /// Deterministic tgz: `<job>/monit`, `<job>/<destination>` per template;
    /// files under `<job>/bin/` are 0755, others 0644.
    pub archive: Vec<u8>,
    /// sha256 hex of `archive`.
    pub sha256: String,
}

/// One job's rendered files, as the agent installs them under
/// `/var/vcap/jobs/<job>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedJob {
    /// The job.
    pub name: String,
    /// `(destination, content)`: `monit` first, then each template's
    /// destination (normalised, `./` dropped) in the spec's order.
    pub files: Vec<(String, Vec<u8>)>,
}

/// Limits on one Ruby process (memory is capped at [`MAX_MEMORY`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Killed after this long (boshd `--render-timeout-secs`).
    pub timeout: Duration,
    /// Killed once output exceeds this many bytes; a single template's
    /// output is held to it as well (boshd `--render-max-output-bytes`).
    pub max_output: usize,
}

impl Default for Limits {
    /// 60 s and 64 MiB for one batch.
    fn default() -> Self {
        Limits { timeout: Duration::from_secs(60), max_output: 64 << 20 }
    }
}

/// How many Ruby render processes this process has started: rendering is
/// the director's most expensive step, and tests and `/metrics` check that
/// a steady or failed deployment does not repeat it.
static RUBY_RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many Ruby render processes have been started so far.
pub fn ruby_runs() -> u64 {
    RUBY_RUNS.load(std::sync::atomic::Ordering::Relaxed)
}

/// One template that failed to render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateFailure {
    /// The job.
    pub job: String,
    /// The template's source path (`config.json.erb`, or `monit`).
    pub template: String,
    /// The template line, when Ruby's backtrace names one.
    pub line: Option<u32>,
    /// The exception's message, without property values.
    pub message: String,
}

impl std::fmt::Display for TemplateFailure {
    /// BOSH's wording: `Error filling in template 'a.erb' (line 3: ...)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let line = self.line.map_or_else(|| "unknown".to_owned(), |l| l.to_string());
        write!(f, "Error filling in template '{}' (line {line}: {})", self.template, self.message)
    }
}

/// Errors of rendering.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A job tarball is unreadable or holds unsafe entries.
    #[error("job tarball is unreadable or unsafe")]
    JobArchive {
        /// What unpacking reported.
        #[source]
        source: ArchiveError,
    },
    /// A job's spec (`job.MF` in a tarball, `spec` in a release
    /// directory) is not a valid job spec.
    #[error("invalid job spec")]
    JobSpec {
        /// What parsing reported.
        #[source]
        source: bosh_api::release::Error,
    },
    /// A file the job tarball must hold is missing or not UTF-8.
    #[error("job {job}: cannot read {file}")]
    JobFile {
        /// The job (`job tarball` before `job.MF` is read).
        job: String,
        /// The file inside the tarball.
        file: String,
        /// What reading reported.
        #[source]
        source: std::io::Error,
    },
    /// Two templates of a job render to the same path.
    #[error("job {job}: more than one template renders to {destination}")]
    DuplicateDestination {
        /// The job.
        job: String,
        /// The path inside the job directory.
        destination: String,
    },
    /// `ruby` could not be started.
    #[error("cannot start ruby to render templates")]
    Spawn {
        /// What spawning reported.
        #[source]
        source: std::io::Error,
    },
    /// Local I/O failed: a scratch directory, or the pipes to Ruby.
    #[error("I/O error while rendering templates")]
    Io {
        /// What the pipe reported.
        #[source]
        source: std::io::Error,
    },
    /// The Ruby process ran past [`Limits::timeout`] and was killed.
    #[error("rendering templates{} took longer than {timeout:?}; ruby was killed", of(instance))]
    Timeout {
        /// The limit.
        timeout: Duration,
        /// `<instance group>/<index>` whose templates Ruby was rendering.
        instance: Option<String>,
    },
    /// The Ruby process wrote more than [`Limits::max_output`] and was killed.
    #[error("rendered templates exceed {limit} bytes{}; ruby was killed", at(instance))]
    OutputTooLarge {
        /// The limit.
        limit: usize,
        /// `<instance group>/<index>` whose templates Ruby was rendering.
        instance: Option<String>,
    },
    /// The Ruby process failed or answered with something unexpected.
    #[error("ruby render process failed ({status}): {message}")]
    Ruby {
        /// How it exited.
        status: String,
        /// What went wrong, from its stderr or our reading of its output.
        message: String,
    },
    /// A job's manifest properties do not fit its spec (a scalar where a
    /// declared dotted property needs a hash).
    #[error("Unable to render templates for job '{job}': {message}")]
    Properties {
        /// The job.
        job: String,
        /// BOSH's wording, e.g. `Property 'a.b' expects a hash, but received 'String'`.
        message: String,
    },
    /// Templates of an instance failed; every failure is listed.
    #[error("{}", templates_message(instance, failures))]
    Templates {
        /// `<instance group>/<index>`.
        instance: String,
        /// Each failing template, in job and template order.
        failures: Vec<TemplateFailure>,
    },
    /// The rendered files could not be archived.
    #[error("cannot archive rendered templates of {instance}")]
    Archive {
        /// `<instance group>/<index>`.
        instance: String,
        /// What the writer reported.
        #[source]
        source: ArchiveError,
    },
}

impl Error {
    /// Whether the same inputs would fail the same way: true of the
    /// templates and the job tarballs, and of limits they run into; false
    /// of this machine's trouble (Ruby not starting, local I/O), which is
    /// worth retrying.
    pub fn is_deterministic(&self) -> bool {
        !matches!(self, Error::Spawn { .. } | Error::Io { .. } | Error::Archive { .. })
    }
}

/// " of instance 'web/0'" for a batch-wide failure that has a culprit.
fn of(instance: &Option<String>) -> String {
    instance.as_ref().map(|i| format!(" of instance '{i}'")).unwrap_or_default()
}

/// " at instance 'web/0'", likewise.
fn at(instance: &Option<String>) -> String {
    instance.as_ref().map(|i| format!(" at instance '{i}'")).unwrap_or_default()
}

/// BOSH's nested wording: per instance, per job, per template.
fn templates_message(instance: &str, failures: &[TemplateFailure]) -> String {
    let mut out = format!("Unable to render jobs for instance '{instance}'. Errors are:");
    let mut last_job: Option<&str> = None;
    for f in failures {
        if last_job != Some(f.job.as_str()) {
            out.push_str(&format!(
                "\n  - Unable to render templates for job '{}'. Errors are:",
                f.job
            ));
            last_job = Some(&f.job);
        }
        let text = f.to_string().replace('\n', "\n      ");
        out.push_str(&format!("\n    - {text}"));
    }
    out
}

/// Renders every request in one Ruby process; each result in request order,
/// as the archive the agent installs.
///
/// The outer `Err` is the process failing (no `ruby`, a limit hit, a
/// crash): no request has a result then. An inner `Err` is that request's
/// templates or properties failing.
pub async fn render_batch(
    reqs: &[RenderRequest],
    limits: &Limits,
) -> Result<Vec<Result<Rendered, Error>>, Error> {
    let rendered = render_batch_files(reqs, limits).await?;
    let names: Vec<String> = reqs.iter().map(|r| instance_name(&r.instance)).collect();
    // Gzip is CPU work: keep it off the async workers.
    let built = tokio::task::spawn_blocking(move || {
        rendered
            .into_iter()
            .zip(names)
            .map(|(r, instance)| r.and_then(|jobs| archive::build(instance, jobs)))
            .collect::<Vec<_>>()
    })
    .await
    .expect("archiving does not panic");
    Ok(built)
}

/// Renders every request in one Ruby process, as [`render_batch`] does,
/// and returns each request's files rather than their archive: what
/// `boshctl render` writes out, and what the director archives.
pub async fn render_batch_files(
    reqs: &[RenderRequest],
    limits: &Limits,
) -> Result<Vec<Result<Vec<RenderedJob>, Error>>, Error> {
    let batch = ruby::Batch::build(reqs, limits.max_output);
    let outputs = if batch.is_empty() {
        Vec::new()
    } else {
        let input = serde_json::to_vec(&batch.input).expect("render input serializes");
        RUBY_RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Ruby answers request after request, so when the whole batch is
        // killed (a loop, a flood), the answers it gave say whose templates
        // it was on: that instance is named, not just the batch.
        let answered = std::sync::atomic::AtomicUsize::new(0);
        let culprit = || {
            let n = answered.load(std::sync::atomic::Ordering::Relaxed);
            let sent = reqs.iter().zip(&batch.prepared).filter(|(_, p)| p.is_ok());
            sent.map(|(r, _)| instance_name(&r.instance)).nth(n)
        };
        let stdout = match ruby::run(&input, limits, &answered).await {
            Ok(out) => out,
            Err(Error::Timeout { timeout, .. }) => {
                return Err(Error::Timeout { timeout, instance: culprit() });
            }
            Err(Error::OutputTooLarge { limit, .. }) => {
                return Err(Error::OutputTooLarge { limit, instance: culprit() });
            }
            Err(e) => return Err(e),
        };
        ruby::parse_output(&stdout, batch.sent)?
    };
    let mut outputs = outputs.into_iter();
    let mut results = Vec::with_capacity(reqs.len());
    for (req, prepared) in reqs.iter().zip(batch.prepared) {
        results.push(match prepared {
            Err(e) => Err(e),
            Ok(secrets) => {
                let out = outputs.next().expect("one output per request sent, checked");
                archive::files(req, out, &secrets)
            }
        });
    }
    Ok(results)
}

/// `<instance group>/<index>`, as errors name an instance.
fn instance_name(i: &InstanceContext) -> String {
    format!("{}/{}", i.name, i.index)
}
