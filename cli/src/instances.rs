//! Instance verbs: `instances`, `start`, `stop [--hard]`, `restart`,
//! `recreate` and `logs`, as the bosh CLI has them.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use bosh_api::Object;
use bosh_api::objects::{InstanceHealth, InstancePhase, InstanceSpec};
use bosh_api::wire::{
    ActionRequest, InstanceAction, InstanceEntry, InstancesQuery, LogsRequest, TaskRef,
};
use comfy_table::{Table, presets::NOTHING};

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

async fn list(d: &Director, deployment: &str, ps: bool) -> Result<Vec<InstanceEntry>> {
    d.get_with(&format!("/v1/deployments/{deployment}/instances"), &InstancesQuery { ps }).await
}

fn ips(instance: &Object<InstanceSpec>) -> Vec<String> {
    instance.spec.networks.iter().map(|n| n.ip.clone()).filter(|ip| !ip.is_empty()).collect()
}

/// The PROCESS STATE column of one entry: the agent's live answer with
/// `--ps`; otherwise, once the instance's jobs run, trouble the monitor
/// knows of (`unresponsive agent`, `failing`), so an instance whose agent
/// died is not shown `running` until it is replaced; else the phase the
/// instance controller is in (`running`, `creating`, `updating`, ...). A
/// `stopped` health right after a deploy is the last heartbeat from before
/// the jobs started (heartbeats come every 30 s), not news: the phase says
/// more then.
fn process_state(entry: &InstanceEntry) -> String {
    if let Some(agent) = &entry.agent {
        return agent.state.to_string();
    }
    let status = &entry.instance.status;
    match (&status.phase, &status.health) {
        (Some(InstancePhase::Running), Some(InstanceHealth::Unresponsive)) => {
            "unresponsive agent".into()
        }
        (Some(InstancePhase::Running), Some(InstanceHealth::Failing)) => "failing".into(),
        (None, _) => "-".into(),
        (Some(p), _) => p.to_string(),
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
        let i = &e.instance;
        let mut row = vec![
            format!("{}/{}", i.spec.group, i.spec.id),
            process_state(e),
            i.spec.az.clone().unwrap_or_default(),
            ips(i).join("\n"),
        ];
        if args.details {
            row.extend([
                i.status.vm_cid.clone().unwrap_or_default(),
                i.status.agent_id.clone().unwrap_or_default(),
                i.spec.index.to_string(),
                i.spec.bootstrap.to_string(),
                i.status.disk_cid.clone().unwrap_or_default(),
            ]);
        }
        t.add_row(row);
        for p in e.agent.iter().flat_map(|a| &a.processes) {
            let mut row = vec![format!("~ {}", p.name), p.state.as_str().to_string()];
            row.resize(if args.details { 9 } else { 4 }, String::new());
            t.add_row(row);
        }
    }
    println!("{t}");
    Ok(())
}

/// Runs `start`, `stop`, `restart` or `recreate`.
pub async fn act(args: ActionArgs, action: InstanceAction) -> Result<()> {
    let d = Director::resolve(&args.director)?;
    let name = &args.deployment.deployment;
    let body = ActionRequest { action, target: args.target.clone() };
    let reply: TaskRef =
        d.post(&format!("/v1/deployments/{name}/instances/actions"), &body).await?;
    println!("Using deployment '{name}'");
    follow(&args.director, reply.task, args.no_follow).await
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
        .map(|e| &e.instance.spec)
        .find(|s| s.group == group && (s.id == which || s.index.to_string() == which))
        .map(|s| s.index)
        .with_context(|| format!("deployment {name} has no instance {}", args.target))?;
    let file =
        format!("{name}.{group}.{index}-{}.tgz", chrono::Local::now().format("%Y%m%d-%H%M%S"));
    let dest = args.dir.join(file);
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let body = LogsRequest { target: args.target.clone() };
    let size = d.post_to_file(&format!("/v1/deployments/{name}/logs"), &body, &dest).await?;
    println!("Downloaded logs of {} ({size} bytes) to {}", args.target, dest.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use bosh_api::ObjectMeta;
    use bosh_api::wire::{AgentReport, AgentState};

    use super::*;

    fn entry(phase: &str, health: &str) -> InstanceEntry {
        let mut instance = Object::new(ObjectMeta::scoped("d", "web/a"), InstanceSpec::default());
        instance.status.phase = Some(phase).filter(|p| !p.is_empty()).map(InstancePhase::from);
        instance.status.health = Some(health).filter(|h| !h.is_empty()).map(InstanceHealth::from);
        InstanceEntry { instance, agent: None }
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
        let live = InstanceEntry {
            agent: Some(AgentReport { state: AgentState::Stopped, processes: vec![] }),
            ..entry("running", "running")
        };
        assert_eq!(process_state(&live), "stopped");
    }
}
