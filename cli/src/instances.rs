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

/// The PROCESS STATE column of one entry: the agent's live answer with
/// `--ps`; otherwise, once the instance's jobs run, trouble the monitor
/// knows of (`unresponsive agent`, `failing`), so an instance whose agent
/// died is not shown `running` until it is replaced; else the phase the
/// instance controller is in (`running`, `creating`, `updating`, ...). A
/// `stopped` health right after a deploy is the last heartbeat from before
/// the jobs started (heartbeats come every 30 s), not news: the phase says
/// more then.
fn process_state(entry: &Value) -> String {
    if let Some(live) = entry["agent"]["state"].as_str() {
        return live.to_string();
    }
    let status = &entry["instance"]["status"];
    let phase = status["phase"].as_str().unwrap_or_default();
    let health = status["health"].as_str().unwrap_or_default();
    match (phase, health) {
        ("running", "unresponsive") => "unresponsive agent".into(),
        ("running", "failing") => "failing".into(),
        ("", _) => "-".into(),
        (p, _) => p.into(),
    }
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
        let state = process_state(e);
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::process_state;

    fn entry(phase: &str, health: &str) -> serde_json::Value {
        json!({"instance": {"status": {"phase": phase, "health": health}}})
    }

    /// Issue 12: an instance whose agent died shows the monitor's verdict, not a stale `running`.
    #[test]
    fn process_state_shows_the_health_the_monitor_knows() {
        assert_eq!(process_state(&entry("running", "unresponsive")), "unresponsive agent");
        assert_eq!(process_state(&entry("running", "failing")), "failing");
        assert_eq!(process_state(&entry("running", "running")), "running");
        assert_eq!(process_state(&entry("running", "stopped")), "running", "a stale heartbeat");
        assert_eq!(process_state(&entry("running", "")), "running", "not yet observed");
        // While the controller works on it (a resurrection too), its phase.
        assert_eq!(process_state(&entry("creating", "unresponsive")), "creating");
        assert_eq!(process_state(&entry("", "")), "-");
        // With --ps, the agent's live answer.
        let live = json!({"agent": {"state": "stopped"}, "instance": entry("running", "running")["instance"]});
        assert_eq!(process_state(&live), "stopped");
    }
}
