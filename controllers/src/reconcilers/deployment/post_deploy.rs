//! BOSH's `post-deploy`: once every instance of a deploy converged, each
//! running instance runs its jobs' `bin/post-deploy`, once per generation
//! of the deployment (recorded in `status.postDeployRevision`).
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

/// Runs post-deploy on every running instance unless this generation's
/// already ran; `Ok(Some(message))` names the instances whose script
/// failed (the deploy then fails, as BOSH's does).
pub async fn run(
    ctx: &Ctx<Deployer>,
    obj: &Object<DeploymentSpec>,
    instances: &[Object<InstanceSpec>],
) -> Result<Option<String>, Error> {
    let generation = obj.metadata.generation;
    if obj.status.post_deploy_revision == generation {
        return Ok(None);
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
    let results: Vec<(String, Result<(), String>)> = futures::stream::iter(calls)
        .map(|(what, agent)| async move {
            let r = agent.run_script("post-deploy", &Default::default()).await;
            (what, r.map(|_| ()).map_err(|e| e.to_string()))
        })
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    let mut failed = vec![];
    for (what, r) in &results {
        let (state, error) = match r {
            Ok(()) => (EventState::Finished, ""),
            Err(e) => {
                warn!(deployment = name, instance = %what, error = %e, "post-deploy failed");
                failed.push(format!("{what}: {e}"));
                (EventState::Failed, e.as_str())
            }
        };
        event(store, obj.spec.task, "Running post-deploy scripts", what, state, error).await;
    }
    if !failed.is_empty() {
        return Ok(Some(format!("post-deploy failed on {}", failed.join("; "))));
    }
    let mut cur = obj.clone();
    crate::runtime::status::patch(store, &mut cur, |s| s.post_deploy_revision = generation).await?;
    info!(deployment = name, instances = results.len(), generation, "post-deploy ran");
    Ok(None)
}
