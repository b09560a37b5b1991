//! `drain`: BOSH's drain protocol.
//!
//! `bin/drain` of every job runs (in parallel across jobs) with
//! `job_changed|job_unchanged|job_shutdown`, `hash_changed|hash_unchanged`
//! and the names of changed packages, and prints an integer: `N >= 0`
//! means "wait N seconds, then I am drained"; `N < 0` means "poll me
//! again in |N| seconds", and the script is re-run with `job_check_status`
//! until it prints `N >= 0`.

use std::sync::Arc;
use std::time::Duration;

use bosh_api::agent::ApplySpec;

use crate::context::Agent;
use crate::error::{Error, Result};
use crate::exec::Exec;

/// The drain arguments for one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainArgs {
    /// `job_changed`, `job_unchanged` or `job_shutdown`.
    pub job: &'static str,
    /// `hash_changed` or `hash_unchanged`.
    pub hash: &'static str,
    /// Packages whose version changed or that are new.
    pub packages: Vec<String>,
}

/// Works out the drain arguments of `job` going from `current` to `next`
/// (`None` = shutdown).
pub fn args_for(job: &str, current: Option<&ApplySpec>, next: Option<&ApplySpec>) -> DrainArgs {
    let Some(next) = next else {
        return DrainArgs { job: "job_shutdown", hash: "hash_unchanged", packages: Vec::new() };
    };
    let version = |s: Option<&ApplySpec>| {
        s.and_then(|s| s.jobs.iter().find(|j| j.name == job)).map(|j| j.version.clone())
    };
    let job_changed = version(current) != version(Some(next));
    let hash_changed =
        current.map(|c| c.configuration_hash.as_str()) != Some(&next.configuration_hash);
    let packages = next
        .packages
        .values()
        .filter(|p| current.and_then(|c| c.packages.get(&p.name)) != Some(*p))
        .map(|p| p.name.clone())
        .collect();
    DrainArgs {
        job: if job_changed { "job_changed" } else { "job_unchanged" },
        hash: if hash_changed { "hash_changed" } else { "hash_unchanged" },
        packages,
    }
}

/// Drains every job; `kind` is `update` (with the next spec) or `shutdown`.
/// Returns the most seconds any job asked to wait in total.
pub async fn drain(agent: &Arc<Agent>, kind: &str, next: Option<&ApplySpec>) -> Result<u64> {
    let next = match kind {
        "shutdown" => None,
        "update" => Some(next.ok_or_else(|| Error::Arguments {
            method: "drain",
            message: "update needs the next spec as argument 1".into(),
        })?),
        other => {
            return Err(Error::Arguments {
                method: "drain",
                message: format!("unknown drain type {other:?} (update|shutdown)"),
            });
        }
    };
    let _l = agent.lifecycle.lock().await;
    let current = agent.spec.lock().expect("lock").clone();
    let jobs: Vec<String> = agent
        .job_names()
        .into_iter()
        .filter(|j| agent.paths.job(j).join("bin/drain").is_file())
        .collect();
    // BOSH_JOB_STATE / BOSH_JOB_NEXT_STATE: the applied and the next spec, as JSON.
    let json = |s: Option<&ApplySpec>| s.map(|s| serde_json::to_string(s).expect("serializes"));
    let env = vec![
        ("BOSH_JOB_STATE".to_string(), json(current.as_ref()).unwrap_or_else(|| "{}".into())),
        ("BOSH_JOB_NEXT_STATE".to_string(), json(next).unwrap_or_else(|| "{}".into())),
    ];
    let runs = jobs.iter().map(|job| {
        let args = args_for(job, current.as_ref(), next);
        drain_job(agent, job, args, &env)
    });
    let waited = futures::future::try_join_all(runs).await?;
    Ok(waited.into_iter().max().unwrap_or(0))
}

async fn drain_job(
    agent: &Agent,
    job: &str,
    args: DrainArgs,
    env: &[(String, String)],
) -> Result<u64> {
    let script = agent.paths.job(job).join("bin/drain");
    let mut first = args.job;
    let mut waited = 0u64;
    loop {
        let out = Exec::new(&script, &agent.paths.job_env())
            .args([first, args.hash])
            .args(&args.packages)
            .envs(env)
            .envs(&[("BOSH_JOB_NAME".into(), job.to_string())])
            .cwd(agent.paths.job(job))
            .log_to(agent.paths.sys_log().join(job).join("drain"))
            .run()
            .await?;
        if out.code != 0 {
            return Err(Error::Script {
                job: format!("job {job}"),
                script: "bin/drain".into(),
                code: out.code,
                tail: out.tail(),
            });
        }
        let n = parse_output(&out.stdout).ok_or_else(|| Error::ScriptProtocol {
            job: format!("job {job}"),
            script: "bin/drain".into(),
            message: format!("printed {:?}, not an integer", out.stdout.trim()),
        })?;
        let secs = n.unsigned_abs();
        tracing::info!(job, value = n, "drain script answered");
        tokio::time::sleep(Duration::from_secs(secs)).await;
        waited += secs;
        if n >= 0 {
            return Ok(waited);
        }
        first = "job_check_status";
    }
}

/// The integer a drain script printed (its last non-empty line).
pub fn parse_output(stdout: &str) -> Option<i64> {
    stdout.lines().rev().find(|l| !l.trim().is_empty())?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bosh_api::agent::{BlobRef, JobRef, PackageRef};

    fn spec(job_version: &str, hash: &str, pkg_sha: &str) -> ApplySpec {
        let pkg = PackageRef {
            name: "p".into(),
            version: pkg_sha.into(),
            blob: BlobRef { sha256: pkg_sha.into(), size: 1 },
        };
        ApplySpec {
            jobs: vec![JobRef { name: "web".into(), version: job_version.into() }],
            packages: [("p".to_string(), pkg)].into(),
            configuration_hash: hash.into(),
            ..Default::default()
        }
    }

    /// Drain arguments say what changed between the applied and the next spec.
    #[test]
    fn drain_args_reflect_what_changed() {
        let a = spec("v1", "h1", "s1");
        let same = args_for("web", Some(&a), Some(&a));
        assert_eq!(
            same,
            DrainArgs { job: "job_unchanged", hash: "hash_unchanged", packages: vec![] }
        );
        let b = spec("v2", "h2", "s2");
        let changed = args_for("web", Some(&a), Some(&b));
        assert_eq!(
            changed,
            DrainArgs { job: "job_changed", hash: "hash_changed", packages: vec!["p".into()] }
        );
        assert_eq!(args_for("web", Some(&a), None).job, "job_shutdown");
    }

    /// The last non-empty line of a drain script's output is its answer.
    #[test]
    fn drain_output_is_the_last_integer_line() {
        assert_eq!(parse_output("draining...\n-5\n\n"), Some(-5));
        assert_eq!(parse_output("0"), Some(0));
        assert_eq!(parse_output("soon"), None);
    }
}
