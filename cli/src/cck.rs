//! `cck` (cloud-check): scan a deployment for problems, list them like
//! `bosh cck --report`, and apply chosen or automatic resolutions.
//!
//! Every step is a change of desired state through the API (a scan token,
//! then resolutions by problem id), each followed as a task.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use comfy_table::{Table, presets::NOTHING};
use serde_json::{Value, json};

use crate::deployments::{DeploymentArg, follow};
use crate::director::{Director, DirectorArgs};

/// Flags of `cck`.
#[derive(Debug, clap::Args)]
pub struct CckArgs {
    #[command(flatten)]
    pub deployment: DeploymentArg,
    /// List problems only; exit non-zero when there are any.
    #[arg(long)]
    pub report: bool,
    /// Apply each problem's auto resolution.
    #[arg(long)]
    pub auto: bool,
    /// `TYPE=RESOLUTION` (every problem of that type) or `PROBLEM_ID=RESOLUTION`; repeatable.
    #[arg(long = "resolution", value_name = "TYPE=RES")]
    pub resolutions: Vec<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub director: DirectorArgs,
}

/// Parses `KEY=RES` flags.
fn parse_choices(flags: &[String]) -> Result<Vec<(String, String)>> {
    flags
        .iter()
        .map(|f| {
            let (k, v) = f
                .split_once('=')
                .with_context(|| format!("--resolution {f:?}: expected TYPE=RESOLUTION"))?;
            Ok((k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

/// Turns `KEY=RES` choices into problem id → resolution: a key naming a
/// problem type stands for every open problem of that type.
pub fn expand(problems: &[Value], choices: &[(String, String)]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (key, res) in choices {
        let of_type: Vec<&str> = problems
            .iter()
            .filter(|p| p["type"] == key.as_str())
            .filter_map(|p| p["id"].as_str())
            .collect();
        if of_type.is_empty() {
            out.insert(key.clone(), res.clone());
        } else {
            for id in of_type {
                out.insert(id.to_string(), res.clone());
            }
        }
    }
    out
}

fn table(problems: &[Value]) -> Table {
    let mut t = Table::new();
    t.load_style(NOTHING);
    t.set_header(["#", "ID", "TYPE", "DESCRIPTION", "RESOLUTIONS"]);
    for (i, p) in problems.iter().enumerate() {
        let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
        let auto = s(&p["autoResolution"]);
        let res: Vec<String> = p["resolutions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|r| if r == auto { format!("{r} (auto)") } else { r.to_string() })
            .collect();
        t.add_row([
            (i + 1).to_string(),
            s(&p["id"]),
            s(&p["type"]),
            s(&p["description"]),
            res.join("\n"),
        ]);
    }
    t
}

async fn scan(d: &Director, args: &CckArgs, name: &str) -> Result<Value> {
    let reply = d.post_json(&format!("/v1/deployments/{name}/cloud-check"), &json!({})).await?;
    let id = reply["task"].as_u64().context("the director answered without a task")?;
    if !args.json {
        println!("Using deployment '{name}'\nScanning for problems");
    }
    follow_quietly(args, id).await?;
    d.get(&format!("/v1/deployments/{name}/cloud-check")).await
}

/// Follows a task, its events printed unless the output is JSON.
async fn follow_quietly(args: &CckArgs, id: u64) -> Result<()> {
    if args.json {
        let d = Director::resolve(&args.director)?;
        loop {
            let t: Value = d.get(&format!("/v1/tasks/{}", crate::tasks::task_name(id))).await?;
            match t["status"]["state"].as_str() {
                Some("done") => return Ok(()),
                Some("error") | Some("cancelled") => {
                    bail!("task {id} failed: {}", t["status"]["result"].as_str().unwrap_or(""))
                }
                _ => tokio::time::sleep(std::time::Duration::from_millis(250)).await,
            }
        }
    }
    follow(&args.director, id, false).await
}

fn problems_of(report: &Value) -> Vec<Value> {
    report["problems"].as_array().cloned().unwrap_or_default()
}

fn print(args: &CckArgs, report: &Value) -> Result<()> {
    let problems = problems_of(report);
    if args.json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    for n in report["notes"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        println!("Note: {n}");
    }
    if problems.is_empty() {
        println!("\n0 problems");
    } else {
        println!("\n{}\n\n{} problems", table(&problems), problems.len());
    }
    Ok(())
}

/// Runs `cck`.
pub async fn run(args: CckArgs) -> Result<()> {
    let d = Director::resolve(&args.director)?;
    let name = args.deployment.deployment.clone();
    let choices = parse_choices(&args.resolutions)?;
    let report = scan(&d, &args, &name).await?;
    print(&args, &report)?;
    let problems = problems_of(&report);
    if args.report {
        if !problems.is_empty() {
            bail!("{} problems found in deployment {name}", problems.len());
        }
        return Ok(());
    }
    if problems.is_empty() || (choices.is_empty() && !args.auto) {
        if !problems.is_empty() && !args.json {
            println!("Choose resolutions with --resolution TYPE=RES (or --auto).");
        }
        return Ok(());
    }
    let body = json!({ "resolutions": expand(&problems, &choices), "auto": args.auto });
    let reply =
        d.post_json(&format!("/v1/deployments/{name}/cloud-check/resolutions"), &body).await?;
    let Some(id) = reply["task"].as_u64() else {
        println!("Nothing to resolve");
        return Ok(());
    };
    if !args.json {
        println!("\nApplying problem resolutions");
    }
    follow_quietly(&args, id).await?;
    let after: Value = d.get(&format!("/v1/deployments/{name}/cloud-check")).await?;
    print(&args, &after)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A type key stands for each problem of that type; an id key for itself.
    #[test]
    fn type_keys_expand_to_each_problem_of_the_type() {
        let problems = vec![
            json!({"id": "web/a/missing_vm", "type": "missing_vm"}),
            json!({"id": "web/b/missing_vm", "type": "missing_vm"}),
            json!({"id": "orphaned_vm/vm-1", "type": "orphaned_vm"}),
        ];
        let choices =
            parse_choices(&["missing_vm=recreate_vm".into(), "orphaned_vm/vm-1=delete_vm".into()])
                .unwrap();
        let out = expand(&problems, &choices);
        assert_eq!(out.len(), 3);
        assert_eq!(out["web/b/missing_vm"], "recreate_vm");
        assert_eq!(out["orphaned_vm/vm-1"], "delete_vm");
        assert!(parse_choices(&["nope".into()]).is_err());
    }
}
