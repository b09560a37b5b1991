//! Instance verbs: `instances`, `start`, `stop [--hard]`, `restart`,
//! `recreate` and `logs`, as the bosh CLI has them.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use comfy_table::{Table, presets::NOTHING};
use serde_json::{Value, json};

use crate::deployments::{DeploymentArg, follow};
use crate::director::{Director, DirectorArgs};

/// Flags of `instances`.
#[derive(Debug, clap::Args)]
pub struct InstancesArgs {
    #[command(flatten)]
    pub deployment: DeploymentArg,
    /// Ask each agent for its processes.
    #[arg(short, long)]
    pub ps: bool,
    /// Also show VM CID, agent id, index, bootstrap and disk CID.
    #[arg(short = 'i', long)]
    pub details: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub director: DirectorArgs,
}

/// Flags of `start`, `stop`, `restart` and `recreate`.
#[derive(Debug, clap::Args)]
pub struct ActionArgs {
    #[command(flatten)]
    pub deployment: DeploymentArg,
    /// `GROUP`, `GROUP/INDEX` or `GROUP/ID` (default: every instance).
    pub target: Option<String>,
    /// Print the task number and return without waiting for it.
    #[arg(long)]
    pub no_follow: bool,
    #[command(flatten)]
    pub director: DirectorArgs,
}

/// Flags of `stop`.
#[derive(Debug, clap::Args)]
pub struct StopArgs {
    #[command(flatten)]
    pub action: ActionArgs,
    /// Delete the VM too, keeping its persistent disk.
    #[arg(long)]
    pub hard: bool,
}

/// Flags of `logs`.
#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    #[command(flatten)]
    pub deployment: DeploymentArg,
    /// `GROUP/INDEX` or `GROUP/ID`.
    pub target: String,
    /// Directory to write the tarball into.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    #[command(flatten)]
    pub director: DirectorArgs,
}

/// The actions, as the API names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `start`.
    Start,
    /// `stop`.
    Stop,
    /// `stop --hard`.
    StopHard,
    /// `restart`.
    Restart,
    /// `recreate`.
    Recreate,
}

impl Action {
    fn api_name(self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Stop => "stop",
            Action::StopHard => "stop-hard",
            Action::Restart => "restart",
            Action::Recreate => "recreate",
        }
    }
}

async fn list(d: &Director, deployment: &str, ps: bool) -> Result<Vec<Value>> {
    d.get(&format!("/v1/deployments/{deployment}/instances?ps={ps}")).await
}

fn ips(instance: &Value) -> Vec<String> {
    instance["spec"]["networks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["ip"].as_str().filter(|ip| !ip.is_empty()).map(str::to_string))
        .collect()
}

/// Runs `instances`.
pub async fn instances(args: InstancesArgs) -> Result<()> {
    let d = Director::resolve(&args.director)?;
    let entries = list(&d, &args.deployment.deployment, args.ps).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(());
    }
    let mut t = Table::new();
    t.load_style(NOTHING);
    let mut header = vec!["INSTANCE", "PROCESS STATE", "AZ", "IPS"];
    if args.details {
        header.extend(["VM CID", "AGENT ID", "INDEX", "BOOTSTRAP", "DISK CID"]);
    }
    t.set_header(header);
    for e in &entries {
        let i = &e["instance"];
        let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
        let state = match e["agent"]["state"].as_str() {
            Some(s) => s.to_string(),
            None => i["status"]["phase"].as_str().filter(|p| !p.is_empty()).unwrap_or("-").into(),
        };
        let mut row = vec![
            format!("{}/{}", s(&i["spec"]["group"]), s(&i["spec"]["id"])),
            state,
            s(&i["spec"]["az"]),
            ips(i).join("\n"),
        ];
        if args.details {
            row.extend([
                s(&i["status"]["vmCid"]),
                s(&i["status"]["agentId"]),
                i["spec"]["index"].to_string(),
                if i["spec"]["bootstrap"] == true { "true".into() } else { "false".into() },
                s(&i["status"]["diskCid"]),
            ]);
        }
        t.add_row(row);
        for p in e["agent"]["processes"].as_array().into_iter().flatten() {
            let mut row = vec![format!("~ {}", s(&p["name"])), s(&p["state"])];
            row.resize(if args.details { 9 } else { 4 }, String::new());
            t.add_row(row);
        }
    }
    println!("{t}");
    Ok(())
}

/// Runs `start`, `stop`, `restart` or `recreate`.
pub async fn act(args: ActionArgs, action: Action) -> Result<()> {
    let d = Director::resolve(&args.director)?;
    let name = &args.deployment.deployment;
    let body = json!({ "action": action.api_name(), "target": args.target });
    let reply = d.post_json(&format!("/v1/deployments/{name}/instances/actions"), &body).await?;
    let id = reply["task"].as_u64().context("the director answered without a task")?;
    println!("Using deployment '{name}'");
    follow(&args.director, id, args.no_follow).await
}

/// Runs `logs`: writes `<deployment>.<group>.<index>-<YYYYmmdd-HHMMSS>.tgz`.
pub async fn logs(args: LogsArgs) -> Result<()> {
    let d = Director::resolve(&args.director)?;
    let name = &args.deployment.deployment;
    let Some((group, which)) = args.target.split_once('/') else {
        bail!("logs needs one instance: GROUP/INDEX or GROUP/ID, found {:?}", args.target);
    };
    let entries = list(&d, name, false).await?;
    let index = entries
        .iter()
        .map(|e| &e["instance"]["spec"])
        .find(|s| {
            s["group"] == group
                && (s["id"] == which || s["index"].as_u64().is_some_and(|i| i.to_string() == which))
        })
        .map(|s| s["index"].to_string())
        .with_context(|| format!("deployment {name} has no instance {}", args.target))?;
    let file =
        format!("{name}.{group}.{index}-{}.tgz", chrono::Local::now().format("%Y%m%d-%H%M%S"));
    let dest = args.dir.join(file);
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let body = json!({ "target": args.target });
    let size = d.post_json_to_file(&format!("/v1/deployments/{name}/logs"), &body, &dest).await?;
    println!("Downloaded logs of {} ({size} bytes) to {}", args.target, dest.display());
    Ok(())
}
