//! `boshctl render`: a job of a release directory rendered as the director
//! renders it at deploy time, with no director.
//!
//! Why it calls `bosh-render` and nothing of its own: the director renders
//! through the same library ([`bosh_render::render_batch`] archives what
//! [`bosh_render::render_batch_files`] returns here), so a release author
//! sees the bytes an instance will get. This module only reads the inputs
//! (properties as a manifest gives them, the instance, links) and writes the
//! files; every rendering rule (property binding, the derived `spec`, link
//! addresses, error wording) lives in the library.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use bosh_render::{
    InstanceContext, JobTemplates, Limits, Link, ReleaseRef, RenderJob, RenderRequest,
};
use serde_json::{Map, Value, json};

/// The version `spec.release.version` reads when `--spec` gives none: a
/// dev release's first version, as `create-release` numbers them.
const DEV_VERSION: &str = "0+dev.1";

/// Flags of `boshctl render`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The release directory (holding `jobs/<JOB>/spec`, `monit`, `templates/`).
    pub release_dir: PathBuf,
    /// The job to render.
    pub job: String,
    /// The job's properties, as under `jobs[].properties` in a manifest.
    #[arg(long, value_name = "FILE")]
    pub properties: PathBuf,
    /// The instance: `deployment`, `name`, `index`, `id`, `az`, `bootstrap`,
    /// `address`, `networks` (each `ip`, `netmask`, `gateway`, `default`,
    /// `dns`, `type`), `job`, `dns_domain_name`, `persistent_disk`,
    /// `release: {name, version}`. Unset keys default to instance 0 of a
    /// group named after the job, in deployment `deployment`, on one manual
    /// network `default` at 10.0.0.2.
    #[arg(long, value_name = "FILE")]
    pub spec: Option<PathBuf>,
    /// The links the job consumes, by name: `{instances: [...], properties:
    /// {...}}` plus either `address` or `instance_group`, `default_network`,
    /// `deployment_name` (and `domain`); optionally `az_numbers` (AZ name
    /// to number, for `address(azs: [...])`) and, for short DNS addresses,
    /// `use_short_dns_addresses`, `group_number`, `network_number`.
    #[arg(long, value_name = "FILE")]
    pub links: Option<PathBuf>,
    /// Where to write `monit` and each template's destination (created if
    /// missing; nothing else is written).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// The user's input is wrong: exit code 2, as other bad input.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// A file could not be read.
    #[error("cannot read {file}")]
    Read {
        /// The file.
        file: String,
        /// What reading reported.
        #[source]
        source: std::io::Error,
    },
    /// A file is not the YAML expected.
    #[error("{file}: {path}: {message}")]
    Invalid {
        /// The file.
        file: String,
        /// The path inside it (`.` for the document).
        path: String,
        /// What was expected.
        message: String,
    },
    /// The release directory's job cannot be read.
    #[error("cannot read job {job} of release directory {dir}")]
    Job {
        /// The job.
        job: String,
        /// The release directory.
        dir: String,
        /// What reading it reported.
        #[source]
        source: bosh_render::Error,
    },
}

/// Whether an error is the user's input being wrong (exit code 2).
pub fn is_bad_input(err: &anyhow::Error) -> bool {
    err.chain().any(|e| e.is::<InputError>() || e.is::<bosh_api::yaml::YamlError>())
}

/// Runs `boshctl render`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let job_dir = args.release_dir.join("jobs").join(&args.job);
    let job = JobTemplates::from_dir(&job_dir).map_err(|source| InputError::Job {
        job: args.job.clone(),
        dir: args.release_dir.display().to_string(),
        source,
    })?;
    // As create-release requires: the job is the one the directory names.
    if job.name != args.job {
        let message =
            format!("expected the job's directory name {:?}, got {:?}", args.job, job.name);
        return Err(invalid(&job_dir.join("spec"), "name", message).into());
    }
    let properties = read_properties(&args.properties)?;
    let (instance, release) = match &args.spec {
        Some(file) => read_spec(file, &args.job)?,
        None => (default_instance(&args.job), None),
    };
    let release = match release {
        Some(r) => r,
        None => ReleaseRef { name: release_name(&args.release_dir)?, version: DEV_VERSION.into() },
    };
    let links = match &args.links {
        Some(file) => read_links(file, &job)?,
        None => Default::default(),
    };
    let request = RenderRequest {
        instance,
        jobs: vec![RenderJob { job: Arc::new(job), properties, links, release: Some(release) }],
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut results = runtime
        .block_on(bosh_render::render_batch_files(
            std::slice::from_ref(&request),
            &Limits::default(),
        ))
        .context("rendering failed")?;
    let jobs = results.remove(0)?;
    for rendered in jobs {
        for (destination, content) in rendered.files {
            write_file(&args.out, &destination, &content)?;
        }
    }
    Ok(())
}

/// Writes one rendered file; `bin/*` executable, as the agent installs it.
fn write_file(out: &Path, destination: &str, content: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = out.join(destination);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::write(&path, content).with_context(|| format!("cannot write {}", path.display()))?;
    let mode = if destination.starts_with("bin/") { 0o755 } else { 0o644 };
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", path.display()))?;
    Ok(())
}

fn read_yaml(file: &Path) -> anyhow::Result<Value> {
    let name = file.display().to_string();
    let text = std::fs::read_to_string(file)
        .map_err(|source| InputError::Read { file: name.clone(), source })?;
    // As the director reads a manifest (YAML 1.1 keys, `.inf`), since these
    // stand for parts of one.
    Ok(bosh_api::yaml::parse_value(&text, &name)?)
}

fn invalid(file: &Path, path: impl ToString, message: impl ToString) -> InputError {
    InputError::Invalid {
        file: file.display().to_string(),
        path: path.to_string(),
        message: message.to_string(),
    }
}

/// A document that must be a hash (or empty).
fn read_hash(file: &Path, what: &str) -> anyhow::Result<Map<String, Value>> {
    match read_yaml(file)? {
        Value::Null => Ok(Map::new()),
        Value::Object(m) => Ok(m),
        other => Err(invalid(file, ".", format!("expected {what}, got {}", kind(&other))).into()),
    }
}

/// `--properties`: a hash, as under `jobs[].properties`.
fn read_properties(file: &Path) -> anyhow::Result<Value> {
    Ok(Value::Object(read_hash(file, "a hash of properties (as under jobs[].properties)")?))
}

/// `--spec`: the instance, unset keys taken from [`default_instance`].
fn read_spec(file: &Path, job: &str) -> anyhow::Result<(InstanceContext, Option<ReleaseRef>)> {
    let mut given = read_hash(file, "a hash describing the instance")?;
    let release = match given.remove("release") {
        None | Some(Value::Null) => None,
        Some(v) => Some(typed::<ReleaseRef>(file, "release", v)?),
    };
    let mut merged = serde_json::to_value(default_instance(job)).expect("an instance serializes");
    let m = merged.as_object_mut().expect("an instance is a hash");
    m.extend(given);
    Ok((typed(file, "", merged)?, release))
}

/// `--links`: consumed links by name; each must be one the job's spec consumes.
fn read_links(
    file: &Path,
    job: &JobTemplates,
) -> anyhow::Result<std::collections::BTreeMap<String, Link>> {
    let links: std::collections::BTreeMap<String, Link> =
        typed(file, "", Value::Object(read_hash(file, "a hash of links by name")?))?;
    for name in links.keys() {
        if !job.spec.consumes.iter().any(|c| &c.name == name) {
            let consumed: Vec<&str> = job.spec.consumes.iter().map(|c| c.name.as_str()).collect();
            return Err(invalid(
                file,
                name,
                format!("job {} consumes no link {name:?} (it consumes {consumed:?})", job.name),
            )
            .into());
        }
    }
    Ok(links)
}

/// Deserializes `value` (found at `prefix` of `file`), naming the path of
/// the first mismatch.
fn typed<T: serde::de::DeserializeOwned>(
    file: &Path,
    prefix: &str,
    value: Value,
) -> anyhow::Result<T> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        let path = match (prefix, inner.as_str()) {
            ("", ".") => ".".to_owned(),
            ("", p) => p.to_owned(),
            (pre, ".") => pre.to_owned(),
            (pre, p) => format!("{pre}.{p}"),
        };
        invalid(file, path, e.into_inner()).into()
    })
}

/// The instance rendered when `--spec` does not say otherwise.
fn default_instance(job: &str) -> InstanceContext {
    serde_json::from_value(json!({
        "deployment": "deployment",
        "name": job,
        "index": 0,
        "id": "00000000-0000-0000-0000-000000000000",
        "bootstrap": true,
        "networks": {"default": {
            "type": "manual", "ip": "10.0.0.2", "netmask": "255.255.255.0",
            "gateway": "10.0.0.1", "default": ["dns", "gateway"], "dns": [],
        }},
    }))
    .expect("the default instance is valid")
}

/// The release's name: `config/final.yml`'s `name`, else the directory's.
fn release_name(dir: &Path) -> anyhow::Result<String> {
    let final_yml = dir.join("config/final.yml");
    if final_yml.is_file()
        && let Some(name) = read_yaml(&final_yml)?.get("name").and_then(Value::as_str)
    {
        return Ok(name.to_owned());
    }
    let abs = std::fs::canonicalize(dir)
        .map_err(|source| InputError::Read { file: dir.display().to_string(), source })?;
    Ok(abs.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default())
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a hash",
    }
}
