//! `boshctl vms` and `boshctl exec`: the VMs the director made, and a
//! command run on one of them through its agent.

use anyhow::{Result, bail};
use bosh_api::wire::{ExecRequest, ExecResult, VmEntry, VmQuery};
use comfy_table::{Table, presets::NOTHING};

use crate::director::{Director, DirectorArgs};

/// Flags of `vms`.
#[derive(Debug, clap::Args)]
pub struct VmsArgs {
    /// Only this deployment's VMs.
    #[arg(short, long)]
    pub deployment: Option<String>,
    /// Ask each agent for load, CPU, memory and disk use.
    #[arg(long)]
    pub vitals: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub director: DirectorArgs,
}

/// Flags of `exec`.
#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// Only look in this deployment.
    #[arg(short, long)]
    pub deployment: Option<String>,
    /// `GROUP/ID` of an instance, or an agent id.
    pub target: String,
    /// Seconds before the command is killed.
    #[arg(long)]
    pub timeout: Option<u64>,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
    #[command(flatten)]
    pub director: DirectorArgs,
}

async fn list(d: &Director, deployment: Option<&str>, vitals: bool) -> Result<Vec<VmEntry>> {
    d.get_with("/v1/vms", &VmQuery { deployment: deployment.map(str::to_string), vitals }).await
}

/// A number as JSON writes it (`1.0`, not `1`), as the VITALS columns show them.
fn number(x: f64) -> String {
    serde_json::to_string(&x).unwrap_or_default()
}

/// Runs `vms`.
pub async fn vms(args: VmsArgs) -> Result<()> {
    let d = Director::resolve(&args.director)?;
    let vms = list(&d, args.deployment.as_deref(), args.vitals).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&vms)?);
        return Ok(());
    }
    let mut t = Table::new();
    t.load_style(NOTHING);
    let mut header = vec!["DEPLOYMENT", "INSTANCE", "STATE", "AZ", "IPS", "VM CID", "AGENT"];
    if args.vitals {
        header.extend(["LOAD", "CPU USER", "MEM"]);
    }
    t.set_header(header);
    for v in vms {
        let mut row = vec![
            v.deployment,
            v.instance,
            v.state.to_string(),
            v.az,
            v.ips.join(","),
            v.vm_cid,
            v.agent_id,
        ];
        if args.vitals {
            match &v.vitals {
                Some(vt) => {
                    let load: Vec<String> = vt.load.iter().copied().map(number).collect();
                    row.extend([load.join(" "), number(vt.cpu.user), number(vt.mem.percent)]);
                }
                // The agent did not answer.
                None => row.extend(["-".to_string(), "-".to_string(), "-".to_string()]),
            }
        }
        t.add_row(row);
    }
    println!("{t}");
    Ok(())
}

/// Runs `exec`; exits with the command's exit code.
pub async fn exec(args: ExecArgs) -> Result<()> {
    let d = Director::resolve(&args.director)?;
    let vms = list(&d, args.deployment.as_deref(), false).await?;
    let matching: Vec<&VmEntry> =
        vms.iter().filter(|v| v.agent_id == args.target || v.instance == args.target).collect();
    let agent = match matching.as_slice() {
        [one] => one.agent_id.clone(),
        [] => bail!("no VM for {:?} (see `boshctl vms`)", args.target),
        _ => bail!(
            "{:?} matches {} VMs; pass -d DEPLOYMENT or an agent id",
            args.target,
            matching.len()
        ),
    };
    let body = ExecRequest { command: args.command, timeout_secs: args.timeout };
    let r: ExecResult = d.post(&format!("/v1/vms/{agent}/exec"), &body).await?;
    print!("{}", r.stdout);
    eprint!("{}", r.stderr);
    if r.exit_code != 0 {
        std::process::exit(r.exit_code);
    }
    Ok(())
}
