//! Deployment verbs: `apply` (`deploy`), `deployments`, `manifest`,
//! `delete-deployment`, `variables` and `links`, with the bosh CLI's flags.
//!
//! Ops files and variables are applied here, as `boshctl interpolate` does;
//! `((placeholders))` without a value are left for the director, which
//! generates the manifest's declared variables. A change is followed until
//! its task finishes, and a failed task makes the command fail.

use anyhow::Result;
use bosh_api::Object;
use bosh_api::objects::{DeploymentOptions, DeploymentSpec, LinkStatus, TaskSpec};
use bosh_api::wire::{
    Applied, ApplyDiff, ApplyRequest, DeleteDeploymentQuery, DeploymentDeleted, List, Variable,
};
use comfy_table::{Table, presets::NOTHING};
use serde::{Deserialize, Serialize};
use serde_json::Value;

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
    /// Do not upload the releases the manifest names by `url` that the
    /// director lacks (by default they are uploaded first).
    #[arg(long)]
    pub skip_upload_releases: bool,
    /// A PEM file of CA certificates trusted for release URLs, besides the
    /// system's.
    #[arg(long)]
    pub ca_cert: Option<std::path::PathBuf>,
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
    tasks::task(tasks::TaskArgs {
        id,
        follow: true,
        debug: false,
        cpi: false,
        director: director.clone(),
    })
    .await
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
    // Checked before anything is fetched or written.
    let urls = crate::manifest_releases::wanted(&manifest, &args.manifest)?;
    if !args.dry_run && !args.skip_upload_releases {
        crate::manifest_releases::upload_missing(&d, &urls, args.ca_cert.as_deref()).await?;
    }
    let body = ApplyRequest {
        manifest: bosh_api::yaml::to_bosh_string(&manifest),
        cloud_configs: None,
        options: DeploymentOptions {
            recreate: args.recreate,
            skip_drain: args.skip_drain,
            fix: args.fix,
        },
        dry_run: args.dry_run,
    };
    let path = format!("/v1/deployments/{name}/apply");
    if args.dry_run {
        let reply: ApplyDiff = d.post(&path, &body).await?;
        if reply.changes || !reply.diff.is_empty() {
            println!("Deployment {name}: changes (dry run, nothing was applied)\n");
            for line in reply.diff {
                println!("{line}");
            }
        } else {
            println!("Deployment {name}: no changes");
        }
        return Ok(());
    }
    let reply: Applied = d.post(&path, &body).await?;
    println!("Using deployment '{name}'");
    follow(&args.director, reply.task, args.no_follow).await
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

/// What `deployments` shows of a stored manifest. The manifest is
/// free-form (`spec.manifest`: a GitOps write may hold anything, and the
/// controllers report what is wrong with it), so every part may be
/// missing; one that does not fit is shown as nothing.
#[derive(Debug, Default, Deserialize)]
struct ManifestSummary {
    /// `releases:`.
    #[serde(default)]
    releases: Vec<NameVersion>,
    /// `stemcells:`.
    #[serde(default)]
    stemcells: Vec<NameVersion>,
    /// `instance_groups:`.
    #[serde(default)]
    instance_groups: Vec<GroupSize>,
}

/// A release or stemcell of a manifest.
#[derive(Debug, Deserialize)]
struct NameVersion {
    /// A release's or stemcell's name.
    #[serde(default)]
    name: Option<String>,
    /// A stemcell's operating system (what `deployments` shows for one).
    #[serde(default)]
    os: Option<String>,
    /// A version (string or number), or `latest`.
    #[serde(default)]
    version: Value,
}

impl NameVersion {
    /// `name/version` (`os/version` for a stemcell named by its OS), `?`
    /// for what is missing.
    fn shown(&self) -> String {
        let n = self.os.as_deref().or(self.name.as_deref()).unwrap_or("?");
        let v = match &self.version {
            Value::String(s) => s.clone(),
            Value::Null => "?".into(),
            other => other.to_string(),
        };
        format!("{n}/{v}")
    }
}

/// An instance group of a manifest, for its size.
#[derive(Debug, Deserialize)]
struct GroupSize {
    /// How many instances; not a number (a placeholder) counts as 0.
    #[serde(default)]
    instances: Value,
}

fn row(d: &Object<DeploymentSpec>) -> Row {
    let m: ManifestSummary = serde_json::from_value(d.spec.manifest.clone()).unwrap_or_default();
    Row {
        name: d.metadata.name.clone(),
        releases: m.releases.iter().map(NameVersion::shown).collect(),
        stemcells: m.stemcells.iter().map(NameVersion::shown).collect(),
        ready: d.status.ready_instances.values().map(|n| u64::from(*n)).sum(),
        instances: m.instance_groups.iter().map(|g| g.instances.as_u64().unwrap_or(0)).sum(),
        last_task: d.spec.task,
        last_task_state: None,
        deleting: d.metadata.is_deleting(),
    }
}

/// Runs `deployments`.
pub async fn list(args: crate::uploads::ListArgs) -> Result<()> {
    let d = Director::resolve(&args.director)?;
    let list: List<Object<DeploymentSpec>> = d.get("/v1/deployments").await?;
    let mut rows: Vec<Row> = list.items.iter().map(row).collect();
    for r in &mut rows {
        if let Some(id) = r.last_task {
            let t: Option<Object<TaskSpec>> = d.try_object(&format!("{id:010}")).await?;
            r.last_task_state = t.map(|t| tasks::state_word(t.status.state).to_string());
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
    let query = DeleteDeploymentQuery { force: args.force };
    let reply: DeploymentDeleted = d.delete(&format!("/v1/deployments/{name}"), &query).await?;
    if reply.deleted {
        println!("Deleted deployment '{name}' (task {})", reply.task);
        return Ok(());
    }
    println!("Deleting deployment '{name}'");
    follow(&args.director, reply.task, args.no_follow).await
}

/// Runs `variables`: names, types and ids; values never leave the director.
pub async fn variables(args: VariablesArgs) -> Result<()> {
    let d = Director::resolve(&args.director)?;
    let name = &args.deployment.deployment;
    let vars: Vec<Variable> = d.get(&format!("/v1/deployments/{name}/variables")).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&vars)?);
        return Ok(());
    }
    let mut t = Table::new();
    t.load_style(NOTHING);
    t.set_header(["NAME", "TYPE", "ID"]);
    for v in vars {
        t.add_row([v.name, v.type_, v.id]);
    }
    println!("{t}");
    Ok(())
}

/// Runs `links`: each consumed link and the provider it resolved to, as
/// the deployment's status holds them for its current manifest.
pub async fn links(args: VariablesArgs) -> Result<()> {
    let d = Director::resolve(&args.director)?;
    let name = &args.deployment.deployment;
    let dep: Object<DeploymentSpec> = d.get(&format!("/v1/deployments/{name}")).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&dep.status.links)?);
        return Ok(());
    }
    println!("{}", links_table(&dep.status.links));
    Ok(())
}

/// The `links` table: consumer, link, type, provider (or `manual`;
/// `deployment:group/job/link` for another deployment's shared link),
/// network and instance count.
fn links_table(links: &[LinkStatus]) -> Table {
    let mut t = Table::new();
    t.load_style(NOTHING);
    t.set_header(["CONSUMER", "LINK", "TYPE", "PROVIDER", "NETWORK", "INSTANCES"]);
    for l in links {
        t.add_row([
            format!("{}/{}", l.instance_group, l.job),
            l.name.clone(),
            l.type_.clone(),
            match (&l.deployment, &l.provider) {
                (Some(d), Some(p)) => format!("{d}:{p}"),
                (None, Some(p)) => p.clone(),
                (_, None) => "manual".into(),
            },
            l.network.clone().unwrap_or_default(),
            l.instances.to_string(),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use bosh_api::ObjectMeta;
    use serde_json::json;

    use super::*;

    fn deployment(manifest: Value) -> Object<DeploymentSpec> {
        Object::new(ObjectMeta::named("hello"), DeploymentSpec { manifest, ..Default::default() })
    }

    /// A row names releases and stemcells (a stemcell by its OS) and sums the groups' instances; placeholders and nonsense are no error.
    #[test]
    fn rows_summarise_free_form_manifests() {
        let r = row(&deployment(json!({
            "releases": [{"name": "hello", "version": "0+dev.1"}, {"name": "bpm", "version": 1.0}],
            "stemcells": [{"alias": "default", "os": "ubuntu-jammy", "version": "latest"}, {"alias": "x"}],
            "instance_groups": [{"name": "web", "instances": 2}, {"name": "db", "instances": "((n))"}],
        })));
        assert_eq!(r.releases, ["hello/0+dev.1", "bpm/1.0"]);
        assert_eq!(r.stemcells, ["ubuntu-jammy/latest", "?/?"]);
        assert_eq!(r.instances, 2);
        let r = row(&deployment(json!({"releases": "nonsense"})));
        assert!(r.releases.is_empty() && r.stemcells.is_empty() && r.instances == 0);
    }

    /// `links` shows each consumer with its provider (another deployment's
    /// prefixed with its name), and `manual` for a manual link.
    #[test]
    fn links_table_names_consumer_and_provider() {
        let links = [
            LinkStatus {
                instance_group: "cli".into(),
                job: "client".into(),
                name: "conn".into(),
                type_: "srv".into(),
                provider: Some("srv/server/conn".into()),
                network: Some("default".into()),
                deployment: None,
                instances: 2,
            },
            LinkStatus {
                instance_group: "cli".into(),
                job: "client".into(),
                name: "db".into(),
                type_: "pg".into(),
                provider: Some("pg/postgres/db".into()),
                network: Some("default".into()),
                deployment: Some("data".into()),
                instances: 1,
            },
            LinkStatus {
                instance_group: "cli".into(),
                job: "client".into(),
                name: "cache".into(),
                type_: "redis".into(),
                ..Default::default()
            },
        ];
        let out = super::links_table(&links).to_string();
        let rows: Vec<Vec<&str>> = out.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(rows[0], ["CONSUMER", "LINK", "TYPE", "PROVIDER", "NETWORK", "INSTANCES"]);
        assert_eq!(rows[1], ["cli/client", "conn", "srv", "srv/server/conn", "default", "2"]);
        assert_eq!(rows[2], ["cli/client", "db", "pg", "data:pg/postgres/db", "default", "1"]);
        assert_eq!(rows[3], ["cli/client", "cache", "redis", "manual", "0"]);
    }
}
