//! Job lifecycle scripts (`run_script`: pre-start, post-start, post-deploy,
//! pre-stop, ...), errands (`run_errand`: `bin/run`) and operators'
//! commands (`exec`).
//!
//! A script runs for every job that has `bin/<script>`, in parallel across
//! jobs, as BOSH does; any non-zero exit fails the call with the job, the
//! exit code and the output's tail.

use std::collections::BTreeMap;
use std::sync::Arc;

use std::time::Duration;

use bosh_api::agent::{ErrandResult, ExecCommand, ExecResult, RunScriptResult};
use serde::Deserialize;

use crate::apply::check_name;
use crate::context::Agent;
use crate::error::{Error, Result};
use crate::exec::Exec;

/// `run_script`'s options.
#[derive(Debug, Default, Deserialize)]
pub struct Options {
    /// Extra environment, e.g. `BOSH_VM_NEXT_STATE` for pre-stop.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// `run_errand`'s options.
#[derive(Debug, Default, Deserialize)]
pub struct ErrandOptions {
    /// The job whose `bin/run` runs (default: the first job that has one).
    #[serde(default)]
    pub name: Option<String>,
}

/// Runs `bin/<name>` of every job that has it.
pub async fn run_script(agent: &Arc<Agent>, name: &str, opts: &Options) -> Result<RunScriptResult> {
    check_name("script", name)?;
    let _l = agent.lifecycle.lock().await;
    let jobs: Vec<String> = agent
        .job_names()
        .into_iter()
        .filter(|j| agent.paths.job(j).join("bin").join(name).is_file())
        .collect();
    let extra: Vec<(String, String)> =
        opts.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let runs = jobs.iter().map(|job| {
        let script = agent.paths.job(job).join("bin").join(name);
        let extra = extra.clone();
        async move {
            let out = Exec::new(&script, &agent.paths.job_env())
                .envs(&extra)
                .envs(&[("BOSH_JOB_NAME".into(), job.clone())])
                .cwd(agent.paths.job(job))
                .log_to(agent.paths.sys_log().join(job).join(name))
                .run()
                .await?;
            if out.code != 0 {
                return Err(Error::Script {
                    job: format!("job {job}"),
                    script: format!("bin/{name}"),
                    code: out.code,
                    tail: out.tail(),
                });
            }
            Ok(())
        }
    });
    let results = futures::future::join_all(runs).await;
    let errors: Vec<String> =
        results.into_iter().filter_map(|r| r.err()).map(|e| e.chain()).collect();
    if !errors.is_empty() {
        return Err(Error::ScriptProtocol {
            job: "jobs".into(),
            script: name.into(),
            message: errors.join("; "),
        });
    }
    Ok(RunScriptResult { ran: jobs })
}

/// Runs an errand's `bin/run` and reports its exit code and output (a
/// non-zero exit is a result, not an error, as in BOSH).
pub async fn run_errand(agent: &Arc<Agent>, name: Option<&str>) -> Result<ErrandResult> {
    let jobs = agent.job_names();
    let job = match name {
        Some(n) => jobs.iter().find(|j| *j == n).cloned(),
        None => jobs.iter().find(|j| agent.paths.job(j).join("bin/run").is_file()).cloned(),
    }
    .ok_or_else(|| Error::Arguments {
        method: "run_errand",
        message: format!("no job {} with bin/run", name.unwrap_or("")),
    })?;
    let script = agent.paths.job(&job).join("bin/run");
    let out = Exec::new(&script, &agent.paths.job_env())
        .envs(&[("BOSH_JOB_NAME".into(), job.clone())])
        .cwd(agent.paths.job(&job))
        .log_to(agent.paths.sys_log().join(&job).join("errand"))
        .run()
        .await?;
    Ok(ErrandResult { job, exit_code: out.code, stdout: out.stdout, stderr: out.stderr })
}

/// Runs an operator's command (`boshctl exec`) in the jobs' environment,
/// from the VM's root, killed after its timeout.
pub async fn exec(agent: &Arc<Agent>, cmd: ExecCommand) -> Result<ExecResult> {
    let (program, args) = cmd
        .command
        .split_first()
        .ok_or_else(|| Error::Arguments { method: "exec", message: "command is empty".into() })?;
    let timeout = Duration::from_secs(cmd.timeout_secs.unwrap_or(300));
    let run = Exec::new(program, &agent.paths.job_env())
        .args(args)
        .cwd(&agent.paths.root)
        .log_to(agent.paths.sys_log().join("exec"))
        .run();
    tracing::info!(program = %program, "exec");
    match tokio::time::timeout(timeout, run).await {
        Ok(out) => {
            let out = out?;
            Ok(ExecResult { exit_code: out.code, stdout: out.stdout, stderr: out.stderr })
        }
        Err(_) => Ok(ExecResult {
            exit_code: -1,
            stdout: String::new(),
            stderr: format!("killed after {timeout:?}"),
        }),
    }
}
