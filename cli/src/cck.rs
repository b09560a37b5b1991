//! `cck` (cloud-check): scan a deployment for problems, list them like
//! `bosh cck --report`, and apply chosen or automatic resolutions.
//!
//! Every step is a change of desired state through the API (a scan token,
//! then resolutions by problem id), each followed as a task.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use bosh_api::Object;
use bosh_api::objects::{Problem, TaskSpec, TaskState};
use bosh_api::wire::{
    CloudCheckReport, EmptyRequest, ResolutionsRecorded, ResolveRequest, TaskRef,
};
use comfy_table::{Table, presets::NOTHING};

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
pub fn expand(problems: &[Problem], choices: &[(String, String)]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (key, res) in choices {
        let of_type: Vec<&str> = problems
            .iter()
            .filter(|p| p.type_.as_str() == key.as_str())
            .map(|p| p.id.as_str())
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

fn table(problems: &[Problem]) -> Table {
    let mut t = Table::new();
    t.load_style(NOTHING);
    t.set_header(["#", "ID", "TYPE", "DESCRIPTION", "RESOLUTIONS"]);
    for (i, p) in problems.iter().enumerate() {
        let res: Vec<String> = p
            .resolutions
            .iter()
            .map(|r| if *r == p.auto_resolution { format!("{r} (auto)") } else { r.to_string() })
            .collect();
        t.add_row([
            (i + 1).to_string(),
            p.id.clone(),
            p.type_.to_string(),
            p.description.clone(),
            res.join("\n"),
        ]);
    }
    t
}

async fn scan(d: &Director, args: &CckArgs, name: &str) -> Result<CloudCheckReport> {
    let path = format!("/v1/deployments/{name}/cloud-check");
    let reply: TaskRef = d.post(&path, &EmptyRequest {}).await?;
    if !args.json {
        println!("Using deployment '{name}'\nScanning for problems");
    }
    follow_quietly(args, reply.task).await?;
    d.get(&path).await
}

/// Follows a task, its events printed unless the output is JSON.
async fn follow_quietly(args: &CckArgs, id: u64) -> Result<()> {
    if args.json {
        let d = Director::resolve(&args.director)?;
        loop {
            let t: Object<TaskSpec> =
                d.get(&format!("/v1/tasks/{}", crate::tasks::task_name(id))).await?;
            match t.status.state {
                TaskState::Done => return Ok(()),
                TaskState::Error | TaskState::Cancelled => {
                    bail!("task {id} failed: {}", t.status.result)
                }
                TaskState::Queued | TaskState::Processing => {
                    tokio::time::sleep(std::time::Duration::from_millis(250)).await
                }
            }
        }
    }
    follow(&args.director, id, false).await
}

fn print(args: &CckArgs, report: &CloudCheckReport) -> Result<()> {
    let problems = &report.status.problems;
    if args.json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    for n in &report.status.notes {
        println!("Note: {n}");
    }
    if problems.is_empty() {
        println!("\n0 problems");
    } else {
        println!("\n{}\n\n{} problems", table(problems), problems.len());
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
    let problems = &report.status.problems;
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
    let body = ResolveRequest { resolutions: expand(problems, &choices), auto: args.auto };
    let reply: ResolutionsRecorded =
        d.post(&format!("/v1/deployments/{name}/cloud-check/resolutions"), &body).await?;
    let Some(id) = reply.task else {
        println!("Nothing to resolve");
        return Ok(());
    };
    if !args.json {
        println!("\nApplying problem resolutions");
    }
    follow_quietly(&args, id).await?;
    let after: CloudCheckReport = d.get(&format!("/v1/deployments/{name}/cloud-check")).await?;
    print(&args, &after)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A type key stands for each problem of that type; an id key for itself.
    #[test]
    fn type_keys_expand_to_each_problem_of_the_type() {
        use bosh_api::objects::ProblemType::{MissingVm, OrphanedVm};
        let problems = vec![
            Problem::new("web/a/missing_vm".into(), MissingVm, String::new()),
            Problem::new("web/b/missing_vm".into(), MissingVm, String::new()),
            Problem::new("orphaned_vm/vm-1".into(), OrphanedVm, String::new()),
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
