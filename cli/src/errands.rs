//! `errands` and `run-errand`: list a deployment's errands, and run one as
//! `bosh run-errand` does — a task to follow, then each instance's exit
//! code, stdout and stderr; the command exits with the errand's code.

use anyhow::{Result, bail};
use bosh_api::objects::{ErrandPhase, ErrandRunSpec};
use bosh_api::wire::{ErrandEntry, ErrandRunRef, RunErrandRequest};
use bosh_api::{Kind, Object};
use comfy_table::{Table, presets::NOTHING};

use crate::deployments::{DeploymentArg, follow};
use crate::director::{Director, DirectorArgs};

/// Flags of `errands`.
#[derive(Debug, clap::Args)]
pub struct ErrandsArgs {
    #[command(flatten)]
    pub deployment: DeploymentArg,
    #[command(flatten)]
    pub director: DirectorArgs,
}

/// Flags of `run-errand`.
#[derive(Debug, clap::Args)]
pub struct RunErrandArgs {
    /// The errand: an errand group, or a job with `bin/run` colocated on service groups.
    pub name: String,
    #[command(flatten)]
    pub deployment: DeploymentArg,
    /// Keep the errand group's VMs after the run.
    #[arg(long)]
    pub keep_alive: bool,
    /// Skip the run if nothing changed since the errand's last successful run.
    #[arg(long)]
    pub when_changed: bool,
    /// Run only on these instances (`GROUP`, `GROUP/ID` or `GROUP/INDEX`); repeatable.
    #[arg(long = "instance", value_name = "GROUP[/ID]")]
    pub instances: Vec<String>,
    #[command(flatten)]
    pub director: DirectorArgs,
}

/// Runs `errands`.
pub async fn errands(args: ErrandsArgs) -> Result<()> {
    let d = Director::resolve(&args.director)?;
    let name = &args.deployment.deployment;
    let list: Vec<ErrandEntry> = d.get(&format!("/v1/deployments/{name}/errands")).await?;
    let mut t = Table::new();
    t.load_style(NOTHING);
    t.set_header(["NAME", "KIND", "GROUPS"]);
    for e in &list {
        let kind = if e.colocated { "colocated" } else { "errand group" };
        t.add_row([e.name.clone(), kind.to_string(), e.groups.join(", ")]);
    }
    println!("{t}\n\n{} errands", list.len());
    Ok(())
}

/// The code `run-errand` exits with: the first non-zero exit code of an
/// instance (in instance order), 1 if an instance could not run, else 0.
pub fn exit_code_of(run: &Object<ErrandRunSpec>) -> i32 {
    if let Some(code) = run.status.results.iter().filter_map(|r| r.exit_code).find(|c| *c != 0) {
        return code;
    }
    let broken = run.status.results.iter().any(|r| r.error.is_some());
    if broken || run.status.phase == ErrandPhase::Failed { 1 } else { 0 }
}

/// What `run-errand` prints for a finished run, as `bosh run-errand` does.
pub fn summary(run: &Object<ErrandRunSpec>) -> String {
    let mut out = String::new();
    if run.status.phase == ErrandPhase::Skipped {
        out.push_str(&format!("Errand {} {}\n", run.spec.errand, run.status.message));
        return out;
    }
    for r in &run.status.results {
        out.push_str(&format!("Instance   {}\n", r.instance));
        out.push_str(&format!("Job        {}\n", r.job));
        match (r.exit_code, &r.error) {
            (_, Some(e)) => out.push_str(&format!("Error      {e}\n")),
            (Some(c), None) => out.push_str(&format!("Exit Code  {c}\n")),
            (None, None) => {}
        }
        out.push_str(&format!("Stdout     {}\n", r.stdout.trim_end()));
        out.push_str(&format!("Stderr     {}\n\n", r.stderr.trim_end()));
    }
    out.push_str(&format!("{} errand(s): {}\n", run.status.results.len(), run.status.message));
    out
}

/// Runs `run-errand`; exits with the errand's code when it is not 0.
pub async fn run_errand(args: RunErrandArgs) -> Result<()> {
    let d = Director::resolve(&args.director)?;
    let dep = &args.deployment.deployment;
    let body = RunErrandRequest {
        keep_alive: args.keep_alive,
        when_changed: args.when_changed,
        instances: args.instances.clone(),
    };
    let path = format!("/v1/deployments/{dep}/errands/{}/runs", args.name);
    let started: ErrandRunRef = d.post(&path, &body).await?;
    // A failed errand fails its task; the run's own record says how.
    let followed = follow(&args.director, started.task, false).await;
    let run: Object<ErrandRunSpec> =
        d.get(&format!("/v1/{}/{dep}/{}", ErrandRunSpec::PLURAL, started.run)).await?;
    if !run.status.phase.is_finished() {
        followed?;
        bail!("errand run {} is still {:?}", started.run, run.status.phase);
    }
    println!();
    print!("{}", summary(&run));
    if run.status.results.is_empty() && run.status.phase == ErrandPhase::Failed {
        bail!("errand {} failed: {}", args.name, run.status.message);
    }
    let code = exit_code_of(&run);
    if code != 0 {
        std::process::exit(code);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use bosh_api::ObjectMeta;
    use bosh_api::objects::ErrandInstanceResult;

    use super::*;

    fn run(results: Vec<ErrandInstanceResult>, phase: ErrandPhase) -> Object<ErrandRunSpec> {
        let mut o = Object::new(ObjectMeta::scoped("d", "0000000001"), ErrandRunSpec::default());
        o.status.results = results;
        o.status.phase = phase;
        o
    }

    fn result(instance: &str, code: Option<i32>, error: Option<&str>) -> ErrandInstanceResult {
        ErrandInstanceResult {
            instance: instance.into(),
            job: "smoke".into(),
            exit_code: code,
            stdout: "out\n".into(),
            stderr: String::new(),
            error: error.map(str::to_string),
        }
    }

    /// The CLI exits with the first non-zero exit code; an instance that
    /// could not run makes it 1; all zero is 0.
    #[test]
    fn exit_code_follows_the_errand() {
        let ok = run(vec![result("a", Some(0), None)], ErrandPhase::Succeeded);
        assert_eq!(exit_code_of(&ok), 0);
        let bad = run(
            vec![
                result("a", Some(0), None),
                result("b", Some(3), None),
                result("c", Some(4), None),
            ],
            ErrandPhase::Failed,
        );
        assert_eq!(exit_code_of(&bad), 3);
        let broken = run(vec![result("a", None, Some("no bin/run"))], ErrandPhase::Failed);
        assert_eq!(exit_code_of(&broken), 1);
        assert!(summary(&broken).contains("Error      no bin/run"), "{}", summary(&broken));
        assert!(summary(&bad).contains("Exit Code  3"), "{}", summary(&bad));
    }
}
