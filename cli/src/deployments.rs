//! Deployment verbs: `apply` (`deploy`), `deployments`, `manifest`,
//! `delete-deployment` and `variables`, with the bosh CLI's flags.
//!
//! Ops files and variables are applied here, as `boshctl interpolate` does;
//! `((placeholders))` without a value are left for the director, which
//! generates the manifest's declared variables. A change is followed until
//! its task finishes, and a failed task makes the command fail.

use anyhow::{Context, Result};
use bosh_api::Object;
use bosh_api::objects::{DeploymentSpec, TaskSpec};
use comfy_table::{Table, presets::NOTHING};
use serde::Serialize;
use serde_json::{Value, json};

use crate::director::{Director, DirectorArgs};
use crate::interpolate::{self, Sources};
use crate::tasks;

/// The `-d NAME` flag.
#[derive(Debug, Clone, clap::Args)]
pub struct DeploymentArg {
    /// The deployment's name.
    #[arg(short, long = "deployment", env = "BOSH_DEPLOYMENT")]
    pub deployment: String,
}

/// Flags of `apply` (`deploy`).
#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    /// The deployment's name (default: the manifest's `name`).
    #[arg(short, long = "deployment", env = "BOSH_DEPLOYMENT")]
    pub deployment: Option<String>,
    /// The manifest (`-` for stdin).
    pub manifest: String,
    #[command(flatten)]
    pub sources: Sources,
    /// Show what would change, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Recreate every VM, even those that would not change.
    #[arg(long)]
    pub recreate: bool,
    /// Skip drain and pre-stop scripts.
    #[arg(long)]
    pub skip_drain: bool,
    /// Recreate unresponsive instances as part of the apply.
    #[arg(long)]
    pub fix: bool,
    /// Print the task number and return without waiting for it.
    #[arg(long)]
    pub no_follow: bool,
    #[command(flatten)]
    pub director: DirectorArgs,
}

/// Flags of `manifest`.
#[derive(Debug, clap::Args)]
pub struct ManifestArgs {
    #[command(flatten)]
    pub deployment: DeploymentArg,
    #[command(flatten)]
    pub director: DirectorArgs,
}

/// Flags of `delete-deployment`.
#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    pub deployment: DeploymentArg,
    /// Delete even when drain, VM or disk deletion fails.
    #[arg(long)]
    pub force: bool,
    /// Print the task number and return without waiting for it.
    #[arg(long)]
    pub no_follow: bool,
    #[command(flatten)]
    pub director: DirectorArgs,
}

/// Flags of `variables`.
#[derive(Debug, clap::Args)]
pub struct VariablesArgs {
    #[command(flatten)]
    pub deployment: DeploymentArg,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub director: DirectorArgs,
}

/// Waits for task `id` and prints its events, unless `no_follow`; fails
/// when the task fails.
pub async fn follow(director: &DirectorArgs, id: u64, no_follow: bool) -> Result<()> {
    if no_follow {
        println!("Task {id} (follow with `boshctl task {id} --follow`)");
        return Ok(());
    }
    println!("Task {id}\n");
    tasks::task(tasks::TaskArgs { id, follow: true, debug: false, director: director.clone() })
        .await
}

fn task_id(reply: &Value) -> Result<u64> {
    reply["task"].as_u64().with_context(|| format!("the director answered without a task: {reply}"))
}

/// Runs `apply`.
pub async fn apply(args: ApplyArgs) -> Result<()> {
    let manifest = interpolate::load(&args.manifest, &args.sources, None)?;
    let name = match (&args.deployment, manifest["name"].as_str()) {
        (Some(d), _) => d.clone(),
        (None, Some(n)) => n.to_string(),
        (None, None) => anyhow::bail!("the manifest has no name; pass -d NAME"),
    };
    let d = Director::resolve(&args.director)?;
    let body = json!({
        "manifest": bosh_api::yaml::to_bosh_string(&manifest),
        "options": {"recreate": args.recreate, "skipDrain": args.skip_drain, "fix": args.fix},
        "dryRun": args.dry_run,
    });
    let reply = d.post_json(&format!("/v1/deployments/{name}/apply"), &body).await?;
    if args.dry_run {
        let diff: Vec<&str> =
            reply["diff"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        if reply["changes"] == true || !diff.is_empty() {
            println!("Deployment {name}: changes (dry run, nothing was applied)\n");
            for line in diff {
                println!("{line}");
            }
        } else {
            println!("Deployment {name}: no changes");
        }
        return Ok(());
    }
    println!("Using deployment '{name}'");
    follow(&args.director, task_id(&reply)?, args.no_follow).await
}

/// One row of `deployments`.
#[derive(Debug, Serialize)]
struct Row {
    name: String,
    releases: Vec<String>,
    stemcells: Vec<String>,
    ready: u64,
    instances: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_task: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_task_state: Option<String>,
    deleting: bool,
}

/// `name/version` of each entry of a manifest list (`releases`, `stemcells`).
fn name_versions(list: &Value, name_key: &str) -> Vec<String> {
    list.as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let n = r[name_key].as_str().or_else(|| r["name"].as_str()).unwrap_or("?");
            let v = match &r["version"] {
                Value::String(s) => s.clone(),
                Value::Null => "?".into(),
                other => other.to_string(),
            };
            format!("{n}/{v}")
        })
        .collect()
}

fn row(d: &Object<DeploymentSpec>) -> Row {
    let m = &d.spec.manifest;
    let instances = m["instance_groups"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|g| g["instances"].as_u64().unwrap_or(0))
        .sum();
    Row {
        name: d.metadata.name.clone(),
        releases: name_versions(&m["releases"], "name"),
        stemcells: name_versions(&m["stemcells"], "os"),
        ready: d.status.ready_instances.values().map(|n| u64::from(*n)).sum(),
        instances,
        last_task: d.spec.task,
        last_task_state: None,
        deleting: d.metadata.is_deleting(),
    }
}

/// Runs `deployments`.
pub async fn list(args: crate::uploads::ListArgs) -> Result<()> {
    let d = Director::resolve(&args.director)?;
    let list: Value = d.get("/v1/deployments").await?;
    let deployments: Vec<Object<DeploymentSpec>> = serde_json::from_value(list["items"].clone())?;
    let mut rows: Vec<Row> = deployments.iter().map(row).collect();
    for r in &mut rows {
        if let Some(id) = r.last_task {
            let t: Option<Object<TaskSpec>> = d.try_object(&format!("{id:010}")).await?;
            r.last_task_state = t
                .map(|t| serde_json::to_value(t.status.state).unwrap_or_default())
                .and_then(|v| v.as_str().map(str::to_string));
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    let mut t = Table::new();
    t.load_style(NOTHING);
    t.set_header(["NAME", "RELEASES", "STEMCELLS", "INSTANCES", "LAST TASK"]);
    for r in &rows {
        let task = match (r.last_task, &r.last_task_state) {
            (Some(id), Some(s)) => format!("{id} ({s})"),
            (Some(id), None) => id.to_string(),
            (None, _) => "-".into(),
        };
        let name = if r.deleting { format!("{} (deleting)", r.name) } else { r.name.clone() };
        t.add_row([
            name,
            r.releases.join("\n"),
            r.stemcells.join("\n"),
            format!("{}/{}", r.ready, r.instances),
            task,
        ]);
    }
    println!("{t}");
    Ok(())
}

/// Runs `manifest`: the stored manifest, placeholders and all.
pub async fn manifest(args: ManifestArgs) -> Result<()> {
    let d = Director::resolve(&args.director)?;
    let name = &args.deployment.deployment;
    let dep: Object<DeploymentSpec> = d.get(&format!("/v1/deployments/{name}")).await?;
    print!("{}", bosh_api::yaml::to_bosh_string(&dep.spec.manifest));
    Ok(())
}

/// Runs `delete-deployment`.
pub async fn delete(args: DeleteArgs) -> Result<()> {
    let d = Director::resolve(&args.director)?;
    let name = &args.deployment.deployment;
    let reply = d.delete(&format!("/v1/deployments/{name}?force={}", args.force)).await?;
    if reply["deleted"] == true {
        println!("Deleted deployment '{name}' (task {})", task_id(&reply)?);
        return Ok(());
    }
    println!("Deleting deployment '{name}'");
    follow(&args.director, task_id(&reply)?, args.no_follow).await
}

/// Runs `variables`: names, types and ids; values never leave the director.
pub async fn variables(args: VariablesArgs) -> Result<()> {
    let d = Director::resolve(&args.director)?;
    let name = &args.deployment.deployment;
    let vars: Vec<Value> = d.get(&format!("/v1/deployments/{name}/variables")).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&vars)?);
        return Ok(());
    }
    let mut t = Table::new();
    t.load_style(NOTHING);
    t.set_header(["NAME", "TYPE", "ID"]);
    for v in &vars {
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        t.add_row([s("name"), s("type"), s("id")]);
    }
    println!("{t}");
    Ok(())
}
