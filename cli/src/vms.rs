//! `boshctl vms` and `boshctl exec`: the VMs the director made, and a
//! command run on one of them through its agent.

use anyhow::{Result, bail};
use comfy_table::{Table, presets::NOTHING};
use serde_json::Value;

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

async fn list(d: &Director, deployment: Option<&str>, vitals: bool) -> Result<Vec<Value>> {
    let mut path = format!("/v1/vms?vitals={vitals}");
    if let Some(dep) = deployment {
        path.push_str(&format!("&deployment={dep}"));
    }
    d.get::<Vec<Value>>(&path).await
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
    for v in &vms {
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        let ips: Vec<&str> =
            v["ips"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        let mut row = vec![
            s("deployment"),
            s("instance"),
            s("state"),
            s("az"),
            ips.join(","),
            s("vm_cid"),
            s("agent_id"),
        ];
        if args.vitals {
            let vt = &v["vitals"];
            let load: Vec<String> =
                vt["load"].as_array().into_iter().flatten().map(|x| x.to_string()).collect();
            row.push(load.join(" "));
            row.push(vt["cpu"]["user"].to_string());
            row.push(vt["mem"]["percent"].to_string());
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
    let matching: Vec<&Value> = vms
        .iter()
        .filter(|v| v["agent_id"] == args.target.as_str() || v["instance"] == args.target.as_str())
        .collect();
    let agent = match matching.as_slice() {
        [one] => one["agent_id"].as_str().unwrap_or_default().to_string(),
        [] => bail!("no VM for {:?} (see `boshctl vms`)", args.target),
        _ => bail!(
            "{:?} matches {} VMs; pass -d DEPLOYMENT or an agent id",
            args.target,
            matching.len()
        ),
    };
    let body = serde_json::json!({ "command": args.command, "timeout_secs": args.timeout });
    let r = d.post_json(&format!("/v1/vms/{agent}/exec"), &body).await?;
    print!("{}", r["stdout"].as_str().unwrap_or_default());
    eprint!("{}", r["stderr"].as_str().unwrap_or_default());
    let code = r["exit_code"].as_i64().unwrap_or(1) as i32;
    if code != 0 {
        std::process::exit(code);
    }
    Ok(())
}
