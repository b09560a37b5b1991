//! The agent side of an instance: pre-stop, drain, stop and post-stop the
//! old jobs, apply the new ones, run pre-start, start, watch them reach
//! `running`, post-start — BOSH's order. Post-deploy runs once the whole
//! deployment converged (the deployment controller's `post_deploy`).

use std::time::Duration;

use bosh_api::Object;
use bosh_api::agent::{ApplySpec, JobRef, JobState, NetworkSettings, PackageRef};
use bosh_api::objects::{DesiredState, InstancePhase, InstanceSpec};
use tokio::time::Instant;
use tracing::info;

use super::{Error, Instances, Options, patch};
use crate::runtime::Ctx;
use crate::world::agent_client::Agent;

fn agent_err(step: &'static str) -> impl FnOnce(crate::world::agent_client::AgentError) -> Error {
    move |source| Error::Agent { step, source }
}

/// What the agent is told to run.
pub fn apply_spec(obj: &Object<InstanceSpec>) -> ApplySpec {
    let s = &obj.spec;
    let networks: serde_json::Map<String, serde_json::Value> = s
        .networks
        .iter()
        .map(|n| {
            let settings = serde_json::to_value(NetworkSettings::from(n));
            (n.name.clone(), settings.expect("network settings serialize"))
        })
        .collect();
    ApplySpec {
        deployment: obj.metadata.deployment.clone().unwrap_or_default(),
        name: s.group.clone(),
        index: s.index,
        id: s.id.clone(),
        az: s.az.clone().unwrap_or_default(),
        jobs: s
            .jobs
            .iter()
            .map(|j| JobRef { name: j.name.clone(), version: j.fingerprint.clone() })
            .collect(),
        packages: s
            .packages
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    PackageRef {
                        name: p.name.clone(),
                        version: p.version.clone(),
                        blob: p.blob.clone(),
                    },
                )
            })
            .collect(),
        rendered_templates_archive: s.rendered_templates.clone(),
        configuration_hash: s.config_hash.clone(),
        networks: serde_json::Value::Object(networks),
    }
}

/// Where an instance is headed when its jobs stop, as BOSH tells a job's
/// `pre-stop` script (`BOSH_VM_NEXT_STATE`, `BOSH_INSTANCE_NEXT_STATE`,
/// `BOSH_DEPLOYMENT_NEXT_STATE`, each `keep` or `delete`): a script that
/// hands data over before its node goes for good needs to tell an update
/// from a scale-in or a deployment's deletion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NextState {
    /// The VM is deleted after the stop (recreate, resurrection, deletion).
    pub vm_deleted: bool,
    /// The instance goes and is not replaced.
    pub instance_deleted: bool,
    /// The deployment goes.
    pub deployment_deleted: bool,
}

impl NextState {
    /// Jobs stop and start again on the same VM (an update, a stop).
    pub const KEEP: NextState =
        NextState { vm_deleted: false, instance_deleted: false, deployment_deleted: false };
    /// The VM is replaced; the instance stays.
    pub const VM_DELETED: NextState =
        NextState { vm_deleted: true, instance_deleted: false, deployment_deleted: false };

    /// The instance goes (and its VM), with its deployment when `deployment`.
    pub fn instance_deleted(deployment: bool) -> NextState {
        NextState { vm_deleted: true, instance_deleted: true, deployment_deleted: deployment }
    }

    /// The `pre-stop` environment.
    pub fn env(&self) -> std::collections::BTreeMap<String, String> {
        let v = |deleted: bool| if deleted { "delete" } else { "keep" }.to_string();
        [
            ("BOSH_VM_NEXT_STATE", v(self.vm_deleted)),
            ("BOSH_INSTANCE_NEXT_STATE", v(self.instance_deleted)),
            ("BOSH_DEPLOYMENT_NEXT_STATE", v(self.deployment_deleted)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

fn agent_of(ctx: &Ctx<Instances>, cur: &Object<InstanceSpec>) -> Agent {
    ctx.data.director.agents.for_agent(cur.status.agent_id.clone().unwrap_or_default())
}

/// Runs pre-stop and drain (unless skipped), stops the jobs and runs
/// post-stop on a VM that runs some, before the VM goes (`going`).
/// An unresponsive agent is passed over: the VM is about to go.
pub async fn quiesce(
    ctx: &Ctx<Instances>,
    cur: &mut Object<InstanceSpec>,
    o: &Options,
    going: NextState,
) -> Result<(), Error> {
    if cur.status.applied_hash.is_empty()
        || cur.status.agent_id.is_none()
        || cur.status.is_unresponsive()
        || cur.status.phase == Some(InstancePhase::Stopped)
    {
        // Nothing runs (never applied, or stopped already: its pre-stop,
        // drain and post-stop ran then), or nothing would answer: the VM
        // goes as it is.
        return Ok(());
    }
    let agent_id = cur.status.agent_id.clone().unwrap_or_default();
    if !super::vm::responsive(ctx, &agent_id, ctx.data.agent_grace).await {
        tracing::warn!(instance = %cur.metadata.name, "agent unresponsive; skipping drain and stop");
        return Ok(());
    }
    let r = stop_jobs(ctx, cur, o, None, going).await;
    match r {
        Err(e) if o.force => {
            tracing::warn!(instance = %cur.metadata.name, error = %e.chain(), "ignored (forced)");
            Ok(())
        }
        r => r,
    }
}

/// BOSH's stop: pre-stop and drain (both skipped by `--skip-drain`), stop,
/// post-stop.
async fn stop_jobs(
    ctx: &Ctx<Instances>,
    cur: &mut Object<InstanceSpec>,
    o: &Options,
    next: Option<&ApplySpec>,
    going: NextState,
) -> Result<(), Error> {
    let agent = agent_of(ctx, cur);
    if !o.skip_drain {
        agent.run_script("pre-stop", &going.env()).await.map_err(agent_err("pre-stop"))?;
        let waited = agent.drain(next).await.map_err(agent_err("drain"))?;
        info!(instance = %cur.metadata.name, waited, "drained");
    }
    agent.stop().await.map_err(agent_err("stop"))?;
    agent.run_script("post-stop", &Default::default()).await.map_err(agent_err("post-stop"))?;
    patch(&ctx.store, cur, |s| s.phase = Some(InstancePhase::Stopped)).await
}

/// Brings the jobs to the spec's state on a VM whose agent answers.
pub async fn converge(
    ctx: &Ctx<Instances>,
    cur: &mut Object<InstanceSpec>,
    o: &Options,
) -> Result<(), Error> {
    let spec = cur.spec.clone();
    let next = apply_spec(cur);
    let need_apply = cur.status.applied_hash != spec.config_hash;
    let need_restart = cur.status.restart_token != spec.restart_token;
    let running = cur.status.phase == Some(InstancePhase::Running);
    let agent = agent_of(ctx, cur);
    if running && (need_apply || need_restart || spec.desired_state != DesiredState::Started) {
        stop_jobs(ctx, cur, o, need_apply.then_some(&next), NextState::KEEP).await?;
    }
    if need_apply {
        patch(&ctx.store, cur, |s| s.phase = Some(InstancePhase::Updating)).await?;
        agent.apply(&next).await.map_err(agent_err("apply"))?;
        let h = spec.config_hash.clone();
        patch(&ctx.store, cur, |s| {
            s.applied_hash = h.clone();
            s.phase = Some(InstancePhase::Stopped);
        })
        .await?;
    }
    if spec.desired_state == DesiredState::Stopped {
        let token = spec.restart_token;
        return patch(&ctx.store, cur, |s| {
            s.phase = Some(InstancePhase::Stopped);
            s.restart_token = token;
        })
        .await;
    }
    if cur.status.phase != Some(InstancePhase::Running) {
        agent.run_script("pre-start", &Default::default()).await.map_err(agent_err("pre-start"))?;
        agent.start().await.map_err(agent_err("start"))?;
        watch(ctx, cur, &agent, spec.watch_min_ms, spec.watch_time_ms).await?;
        agent
            .run_script("post-start", &Default::default())
            .await
            .map_err(agent_err("post-start"))?;
    }
    let token = spec.restart_token;
    patch(&ctx.store, cur, |s| {
        s.phase = Some(InstancePhase::Running);
        s.restart_token = token;
    })
    .await
}

/// Polls the agent until every process runs, from `min_ms` after start on,
/// giving up at `max_ms`; records the processes' states. A `get_state`
/// that goes unanswered is retried (the client's policy) until the watch
/// ends: a slow answer under load is not a failed deploy.
async fn watch(
    ctx: &Ctx<Instances>,
    cur: &mut Object<InstanceSpec>,
    agent: &Agent,
    min_ms: u64,
    max_ms: u64,
) -> Result<(), Error> {
    let start = Instant::now();
    let max = Duration::from_millis(max_ms.max(1000));
    let min = Duration::from_millis(min_ms).min(max);
    loop {
        let state = agent.get_state_by(false, start + max).await.map_err(agent_err("get_state"))?;
        let last = state
            .processes
            .iter()
            .map(|p| format!("{}: {:?}", p.name, p.state).to_lowercase())
            .collect::<Vec<_>>()
            .join(", ");
        if state.job_state == JobState::Running && start.elapsed() >= min {
            let procs: std::collections::BTreeMap<String, String> = state
                .processes
                .iter()
                .map(|p| (p.name.clone(), format!("{:?}", p.state).to_lowercase()))
                .collect();
            return patch(&ctx.store, cur, |s| s.processes = procs.clone()).await;
        }
        if start.elapsed() >= max {
            return Err(Error::NotRunning {
                waited_ms: max.as_millis() as u64,
                detail: if last.is_empty() {
                    format!("job state {:?}", state.job_state).to_lowercase()
                } else {
                    last
                },
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use bosh_api::ObjectMeta;
    use bosh_api::objects::InstanceNetwork;

    use super::*;

    /// The apply spec's `networks` are the agent's settings entries, in the
    /// shape (and key order) the agent has always been sent.
    #[test]
    fn apply_spec_networks_keep_their_wire_shape() {
        let net = InstanceNetwork {
            name: "default".into(),
            type_: "manual".into(),
            ip: "10.0.0.5".into(),
            netmask: "255.255.255.0".into(),
            gateway: "10.0.0.1".into(),
            dns: vec!["8.8.8.8".into()],
            default: vec!["dns".into(), "gateway".into()],
            cloud_properties: serde_json::json!({"subnet": "s-1"}),
        };
        let spec = InstanceSpec { networks: vec![net], ..Default::default() };
        let a = apply_spec(&Object::new(ObjectMeta::named("web/1"), spec));
        assert_eq!(
            serde_json::to_string(&a.networks).unwrap(),
            r#"{"default":{"type":"manual","ip":"10.0.0.5","netmask":"255.255.255.0","gateway":"10.0.0.1","dns":["8.8.8.8"],"default":["dns","gateway"]}}"#
        );
    }
}
