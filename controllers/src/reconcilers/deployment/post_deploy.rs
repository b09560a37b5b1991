//! BOSH's `post-deploy`: once every instance of a deploy converged, each
//! running instance runs its jobs' `bin/post-deploy`, once per deploy: per
//! digest of the manifest and the instance requests (start, stop,
//! recreate), recorded in `status.postDeployInputs`. A cloud-check scan,
//! its resolutions and a resurrection change neither and run nothing, as
//! in BOSH, where only deploys run post-deploy.
//!
//! Why the deployment controller and not each instance: the script's
//! contract is "the whole deployment is up" (a cluster member registering
//! with its peers, a smoke check), which only the controller that watches
//! every instance knows. A crash between the scripts and the record runs
//! them again on the next pass: post-deploy scripts must be idempotent,
//! as BOSH asks of every lifecycle script.

use bosh_api::Object;
use bosh_api::objects::{DeploymentSpec, DesiredState, EventState, InstancePhase, InstanceSpec};
use futures::StreamExt;
use tracing::{info, warn};

use super::{Deployer, Error, event};
use crate::runtime::Ctx;

/// How many instances run their scripts at once.
const PARALLEL: usize = 32;

/// Whether `i` runs jobs whose scripts can be run now.
fn runs_jobs(i: &Object<InstanceSpec>) -> bool {
    i.spec.desired_state == DesiredState::Started
        && i.status.phase == Some(InstancePhase::Running)
        && i.status.agent_id.is_some()
        && !i.status.is_unresponsive()
}

/// What running post-deploy came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Had run already, for these inputs.
    Done,
    /// Ran everywhere: the caller records these inputs (with `Ready`).
    Ran(String),
    /// Some agent did not answer (a reconnecting agent, say, while
    /// nats-server reloads its users): try again shortly; an agent that
    /// stays silent turns unresponsive and is passed over then.
    Retry(String),
    /// A script failed: the deploy fails, as BOSH's does.
    Failed(String),
}

/// Runs post-deploy on every running instance unless these inputs' ran
/// already.
pub async fn run(
    ctx: &Ctx<Deployer>,
    obj: &Object<DeploymentSpec>,
    instances: &[Object<InstanceSpec>],
) -> Result<Outcome, Error> {
    let inputs = inputs_of(obj);
    if obj.status.post_deploy_inputs == inputs {
        return Ok(Outcome::Done);
    }
    let name = obj.metadata.name.as_str();
    let store = &ctx.store;
    // Owned inputs: a stream of futures borrowing from this pass would not
    // be `Send` for every lifetime, which the controller's runtime needs.
    let calls: Vec<(String, crate::world::agent_client::Agent)> = instances
        .iter()
        .filter(|i| runs_jobs(i))
        .map(|i| {
            let what = format!("{} ({})", i.metadata.name, i.spec.index);
            let agent_id = i.status.agent_id.clone().unwrap_or_default();
            (what, ctx.data.director.agents.for_agent(agent_id))
        })
        .collect();
    type Answer = Result<(), (bool, String)>;
    let results: Vec<(String, Answer)> = futures::stream::iter(calls)
        .map(|(what, agent)| async move {
            let r = agent.run_script("post-deploy", &Default::default()).await;
            let r = r.map(|_| ()).map_err(|e| {
                let silent = matches!(e, crate::world::agent_client::AgentError::Timeout { .. });
                (silent, e.to_string())
            });
            (what, r)
        })
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    let (mut failed, mut silent) = (vec![], vec![]);
    for (what, r) in &results {
        match r {
            Ok(()) => {
                let state = EventState::Finished;
                event(store, obj.spec.task, "Running post-deploy scripts", what, state, "").await;
            }
            Err((true, e)) => silent.push(format!("{what}: {e}")),
            Err((false, e)) => {
                warn!(deployment = name, instance = %what, error = %e, "post-deploy failed");
                let state = EventState::Failed;
                event(store, obj.spec.task, "Running post-deploy scripts", what, state, e).await;
                failed.push(format!("{what}: {e}"));
            }
        }
    }
    if !failed.is_empty() {
        return Ok(Outcome::Failed(format!("post-deploy failed on {}", failed.join("; "))));
    }
    if !silent.is_empty() {
        return Ok(Outcome::Retry(format!("post-deploy: waiting for {}", silent.join("; "))));
    }
    info!(deployment = name, instances = results.len(), "post-deploy ran");
    Ok(Outcome::Ran(inputs))
}

/// The digest of what a deploy asks for: the manifest and the instance
/// requests.
fn inputs_of(obj: &Object<DeploymentSpec>) -> String {
    super::desired::digest(&serde_json::json!([obj.spec.manifest, obj.spec.instances]))
}

#[cfg(test)]
mod tests {
    use bosh_api::ObjectMeta;
    use bosh_api::objects::InstanceOverride;
    use serde_json::json;

    use super::*;

    /// A new manifest or instance request is a new deploy; a cloud-check
    /// scan or a new task alone is not.
    #[test]
    fn only_deploys_change_the_inputs() {
        let spec = DeploymentSpec { manifest: json!({"name": "d"}), ..Default::default() };
        let base = Object::new(ObjectMeta::named("d"), spec);
        let mut scanned = base.clone();
        scanned.spec.task = Some(9);
        scanned.spec.cloud_check.scan = 3;
        assert_eq!(inputs_of(&base), inputs_of(&scanned));
        let mut redeployed = base.clone();
        redeployed.spec.manifest = json!({"name": "d", "update": {}});
        assert_ne!(inputs_of(&base), inputs_of(&redeployed));
        let mut stopped = base.clone();
        stopped.spec.instances.insert("web".into(), InstanceOverride::default());
        assert_ne!(inputs_of(&base), inputs_of(&stopped));
    }
}
