//! The Ruby process: what it is sent, how it is run and bounded, what it answers.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::process::ExitStatusExt as _;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};

use super::{
    Error, JobTemplates, Limits, Link, MAX_MEMORY, ReleaseRef, RenderRequest, properties, spec,
};

/// The driver, run with `ruby -e`.
const RENDERER: &str = include_str!("renderer.rb");

/// How much of Ruby's stderr is kept for an error message.
const MAX_STDERR: u64 = 16 << 10;

/// The document sent on Ruby's stdin (see `renderer.rb`).
#[derive(Debug, Serialize)]
pub(super) struct Input<'a> {
    max_output: usize,
    jobs: Vec<JobInput<'a>>,
    requests: Vec<RequestInput<'a>>,
}

/// A distinct job: its name and `(template, source)` pairs, `monit` first.
#[derive(Debug, Serialize)]
struct JobInput<'a> {
    name: &'a str,
    templates: Vec<(&'a str, &'a str)>,
}

#[derive(Debug, Serialize)]
struct RequestInput<'a> {
    spec: Value,
    jobs: Vec<JobRequestInput<'a>>,
}

#[derive(Debug, Serialize)]
struct JobRequestInput<'a> {
    /// Index into [`Input::jobs`].
    job: usize,
    properties: Value,
    links: &'a BTreeMap<String, Link>,
    #[serde(skip_serializing_if = "Option::is_none")]
    release: Option<&'a ReleaseRef>,
}

/// A batch ready to send.
pub(super) struct Batch<'a> {
    /// What Ruby gets.
    pub input: Input<'a>,
    /// Per request: the strings to redact from its errors, or why it is not
    /// sent (its properties do not resolve).
    pub prepared: Vec<Result<Vec<String>, Error>>,
    /// How many requests are sent.
    pub sent: usize,
}

impl<'a> Batch<'a> {
    /// Resolves every request's properties and collects each distinct job once.
    pub fn build(reqs: &'a [RenderRequest], max_output: usize) -> Batch<'a> {
        let mut jobs: Vec<&'a Arc<JobTemplates>> = Vec::new();
        let mut by_ptr: HashMap<*const JobTemplates, usize> = HashMap::new();
        let mut requests = Vec::new();
        let mut prepared = Vec::with_capacity(reqs.len());
        for req in reqs {
            let mut job_inputs = Vec::with_capacity(req.jobs.len());
            let mut secrets = Vec::new();
            let mut failed = None;
            for rj in &req.jobs {
                let job = *by_ptr.entry(Arc::as_ptr(&rj.job)).or_insert_with(|| {
                    // Different `Arc`s may still hold the same job.
                    jobs.iter().position(|j| same_job(j, &rj.job)).unwrap_or_else(|| {
                        jobs.push(&rj.job);
                        jobs.len() - 1
                    })
                });
                match properties::of_job(&rj.job.spec, &rj.properties) {
                    Ok(props) => {
                        secrets.extend(props.secrets);
                        let links = serde_json::to_value(&rj.links).expect("links serialize");
                        properties::collect_strings(&links, &mut secrets);
                        job_inputs.push(JobRequestInput {
                            job,
                            properties: props.value,
                            links: &rj.links,
                            release: rj.release.as_ref(),
                        });
                    }
                    Err(message) => {
                        failed = Some(Error::Properties { job: rj.job.name.clone(), message });
                        break;
                    }
                }
            }
            match failed {
                Some(e) => prepared.push(Err(e)),
                None => {
                    requests.push(RequestInput {
                        spec: spec::template_spec(&req.instance),
                        jobs: job_inputs,
                    });
                    prepared.push(Ok(properties::redaction_list(secrets)));
                }
            }
        }
        let sent = requests.len();
        let jobs = jobs
            .into_iter()
            .map(|j| JobInput {
                name: &j.name,
                templates: std::iter::once(("monit", j.monit.as_str()))
                    .chain(
                        j.spec
                            .templates
                            .keys()
                            .map(|src| (src.as_str(), j.templates[src].as_str())),
                    )
                    .collect(),
            })
            .collect();
        Batch { input: Input { max_output, jobs, requests }, prepared, sent }
    }

    /// Whether there is nothing to send to Ruby.
    pub fn is_empty(&self) -> bool {
        self.sent == 0
    }
}

fn same_job(a: &JobTemplates, b: &JobTemplates) -> bool {
    a.name == b.name && a.monit == b.monit && a.templates == b.templates && a.spec == b.spec
}

/// One request's answer: files per job (`monit` first, then the spec's
/// templates in order), or the failures.
pub(super) type Output = Result<Vec<Vec<Vec<u8>>>, Vec<RawFailure>>;

/// A failure as Ruby reports it, before redaction.
#[derive(Debug, Deserialize)]
pub(super) struct RawFailure {
    pub job: String,
    pub template: String,
    pub line: Option<u32>,
    pub message: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    #[serde(default)]
    jobs: Option<Vec<Vec<File>>>,
    #[serde(default)]
    errors: Option<Vec<RawFailure>>,
}

#[derive(Debug, Deserialize)]
enum File {
    #[serde(rename = "text")]
    Text(String),
    #[serde(rename = "bytes")]
    Bytes(Vec<u8>),
}

/// Splits Ruby's stdout into `expected` answers.
pub(super) fn parse_output(stdout: &[u8], expected: usize) -> Result<Vec<Output>, Error> {
    let protocol = |message: String| Error::Ruby { status: "exit 0".into(), message };
    let lines: Vec<&[u8]> = stdout.split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect();
    if lines.len() != expected {
        return Err(protocol(format!("{} answers for {expected} requests", lines.len())));
    }
    lines
        .into_iter()
        .map(|l| {
            let line: Line = serde_json::from_slice(l)
                .map_err(|e| protocol(format!("unreadable answer: {e}")))?;
            match (line.jobs, line.errors) {
                (Some(jobs), None) => Ok(Ok(jobs
                    .into_iter()
                    .map(|files| {
                        files
                            .into_iter()
                            .map(|f| match f {
                                File::Text(s) => s.into_bytes(),
                                File::Bytes(b) => b,
                            })
                            .collect()
                    })
                    .collect())),
                (None, Some(errors)) => Ok(Err(errors)),
                _ => Err(protocol("an answer with neither jobs nor errors".into())),
            }
        })
        .collect()
}

/// Kills the process group on drop unless disarmed: on every failure, and
/// when the caller drops the render future.
struct Group(Option<Pid>);

impl Group {
    fn kill(&mut self) {
        if let Some(pid) = self.0.take() {
            let _ = killpg(pid, Signal::SIGKILL);
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs the driver on `input` and returns its stdout once it exited 0.
/// `answered` counts the answers (lines) Ruby has written so far.
pub(super) async fn run(
    input: &[u8],
    limits: &Limits,
    answered: &AtomicUsize,
) -> Result<Vec<u8>, Error> {
    let mut cmd = tokio::process::Command::new("ruby");
    cmd.arg("-EUTF-8")
        .arg("-e")
        .arg(RENDERER)
        .env_clear()
        .env("LANG", "C.UTF-8")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    // SAFETY: the closure runs in the child between fork and exec and only
    // calls setrlimit, which is async-signal-safe; it allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            let memory = libc::rlimit { rlim_cur: MAX_MEMORY, rlim_max: MAX_MEMORY };
            let no_core = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            if libc::setrlimit(libc::RLIMIT_AS, &memory) != 0
                || libc::setrlimit(libc::RLIMIT_CORE, &no_core) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|source| Error::Spawn { source })?;
    let mut group = Group(child.id().map(|id| Pid::from_raw(id as i32)));
    let stdin = child.stdin.take().expect("stdin is piped");
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");

    let exchange = async {
        let write = async move {
            let mut stdin = stdin;
            // Ruby reads everything before answering; if it dies first, its
            // exit status says why, not the broken pipe.
            let _ = stdin.write_all(input).await;
            drop(stdin);
            Ok::<_, Error>(())
        };
        let (_, out, err) = tokio::try_join!(
            write,
            read_capped(stdout, limits.max_output, answered),
            read_stderr(stderr)
        )?;
        let status = child.wait().await.map_err(|source| Error::Io { source })?;
        Ok::<_, Error>((status, out, err))
    };
    let result = tokio::time::timeout(limits.timeout, exchange).await;
    let (status, out, err) = match result {
        Ok(Ok(done)) => done,
        Ok(Err(e)) => {
            group.kill();
            let _ = child.wait().await;
            return Err(e);
        }
        Err(_elapsed) => {
            group.kill();
            let _ = child.wait().await;
            return Err(Error::Timeout { timeout: limits.timeout, instance: None });
        }
    };
    // Exited and reaped: its pid may be reused, so never signal it again.
    group.0 = None;
    if !status.success() {
        let status = match (status.code(), status.signal()) {
            (Some(code), _) => format!("exit {code}"),
            (None, Some(sig)) => format!("signal {sig}"),
            _ => status.to_string(),
        };
        let message = String::from_utf8_lossy(&err).trim().to_owned();
        let message = if message.is_empty() { "no message".to_owned() } else { message };
        return Err(Error::Ruby { status, message });
    }
    Ok(out)
}

/// Reads all of `r`, failing once it passes `max` bytes, and counts its
/// lines into `lines` as they arrive.
async fn read_capped(
    mut r: impl AsyncRead + Unpin,
    max: usize,
    lines: &AtomicUsize,
) -> Result<Vec<u8>, Error> {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = r.read(&mut chunk).await.map_err(|source| Error::Io { source })?;
        if n == 0 {
            return Ok(buf);
        }
        let newlines = chunk[..n].iter().filter(|b| **b == b'\n').count();
        lines.fetch_add(newlines, Ordering::Relaxed);
        if buf.len() + n > max {
            return Err(Error::OutputTooLarge { limit: max, instance: None });
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Keeps the start of stderr and drains the rest, so Ruby never blocks on it.
async fn read_stderr(mut r: impl AsyncRead + Unpin) -> Result<Vec<u8>, Error> {
    let mut buf = Vec::new();
    let io = |source| Error::Io { source };
    (&mut r).take(MAX_STDERR).read_to_end(&mut buf).await.map_err(io)?;
    tokio::io::copy(&mut r, &mut tokio::io::sink()).await.map_err(io)?;
    Ok(buf)
}
