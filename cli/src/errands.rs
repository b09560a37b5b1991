//! `errands` and `run-errand`: list a deployment's errands, and run one as
//! `bosh run-errand` does — a task to follow, then each instance's exit
//! code, stdout and stderr; the command exits with the errand's code.
//! With `--download-logs`, each instance's job logs (fetched by the
//! director right after its `bin/run`) are downloaded into `--logs-dir`
//! and checked against the sha256 the run recorded.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
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
    /// Download each instance's job logs after the run.
    #[arg(long)]
    pub download_logs: bool,
    /// Where `--download-logs` writes the tarballs.
    #[arg(long, default_value = ".", requires = "download_logs")]
    pub logs_dir: PathBuf,
    /// Fail the run after this many seconds (default: the director's).
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u64>,
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
    let ended_badly = matches!(run.status.phase, ErrandPhase::Failed | ErrandPhase::Cancelled);
    if broken || ended_badly { 1 } else { 0 }
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
        download_logs: args.download_logs,
        timeout_seconds: args.timeout,
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
    if run.status.phase == ErrandPhase::Cancelled {
        bail!("errand {} was cancelled: {}", args.name, run.status.message);
    }
    if args.download_logs {
        download_logs(&d, &run, &args.logs_dir).await?;
    }
    let code = exit_code_of(&run);
    if code != 0 {
        std::process::exit(code);
    }
    Ok(())
}

/// The file an instance's errand logs go to, as bosh names them:
/// `<deployment>.<errand>.<instance-id>.<YYYYmmdd-HHMMSS>.tgz`.
pub fn logs_file_name(deployment: &str, errand: &str, instance: &str, stamp: &str) -> String {
    let id = instance.rsplit('/').next().unwrap_or(instance);
    format!("{deployment}.{errand}.{id}.{stamp}.tgz")
}

/// Downloads every instance's recorded logs into `dir`, each checked
/// against its recorded sha256 (a mismatched file is removed). Instances
/// whose logs could not be fetched are reported; any of them fails it.
async fn download_logs(d: &Director, run: &Object<ErrandRunSpec>, dir: &Path) -> Result<()> {
    let dep = run.metadata.deployment.clone().unwrap_or_default();
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let stamp = chrono::Local::now().format("%Y%m%d-%H%M%S").to_string();
    let mut missing = Vec::new();
    for r in &run.status.results {
        let Some(blob) = &r.logs else {
            let why = r.logs_error.as_deref().unwrap_or("the director fetched none");
            missing.push(format!("{}: {why}", r.instance));
            continue;
        };
        let dest = dir.join(logs_file_name(&dep, &run.spec.errand, &r.instance, &stamp));
        let path =
            format!("/v1/deployments/{dep}/errand-runs/{}/logs/{}", run.metadata.name, blob.sha256);
        let (size, sha256) = d.get_to_file(&path, &dest).await?;
        if sha256 != blob.sha256 {
            let _ = std::fs::remove_file(&dest);
            bail!(
                "logs of {} do not match their digest: got sha256 {sha256}, the run recorded {}",
                r.instance,
                blob.sha256
            );
        }
        println!("Downloaded logs of {} ({size} bytes) to {}", r.instance, dest.display());
    }
    if !missing.is_empty() {
        bail!("no logs for {}", missing.join("; "));
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
            ..Default::default()
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
        let cancelled = run(vec![result("a", Some(0), None)], ErrandPhase::Cancelled);
        assert_eq!(exit_code_of(&cancelled), 1);
    }

    /// Log tarballs are named after the deployment, the errand and the
    /// instance's id (not its group), as bosh names them.
    #[test]
    fn logs_files_are_named_like_bosh() {
        let name = logs_file_name("d", "smoke", "web/5f2c", "20260101-120000");
        assert_eq!(name, "d.smoke.5f2c.20260101-120000.tgz");
    }
}
