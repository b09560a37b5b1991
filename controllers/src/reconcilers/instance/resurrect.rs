//! Resurrection: an instance converged on its spec whose agent the health
//! monitor finds unresponsive is recreated — the old VM deleted by its CID,
//! a new one made with the same persistent disk, the jobs applied and
//! started — under a "scan and fix" task, unless resurrection is off for it
//! (resurrection configs), its deployment is in meltdown, or its agent
//! answers a ping after all (the verdict lags a healed partition).

use std::time::Duration;

use bosh_api::meta::set_condition;
use bosh_api::objects::{ConfigSpec, EventState, InstanceSpec, ProblemType, Reason, TaskState};
use bosh_api::store::Store;
use bosh_api::{Condition, Object};
use chrono::Utc;
use serde_json::Value;
use tracing::{info, warn};

use super::{Error, Instances, Options, display, drive, event, patch};
use crate::libs::tasks::{create_task, set_task_state};
use crate::reconcilers::health::meltdown::{is_meltdown, set_meltdown};
use crate::runtime::{Action, Ctx};

/// How soon a paused resurrection looks again.
const PAUSED: Duration = Duration::from_secs(2);

/// How long the agent of an instance about to be resurrected is given to
/// answer a ping first.
const RECHECK: Duration = Duration::from_secs(1);

/// Whether a resurrection config rule matches `deployment`/`group`.
fn matches(filter: &Value, deployment: &str, group: &str) -> bool {
    let has = |k: &str, v: &str| {
        filter[k].as_array().is_none_or(|a| a.iter().any(|x| x.as_str() == Some(v)))
    };
    has("deployments", deployment) && has("instance_groups", group)
}

/// Whether resurrection is on for `deployment`/`group`: BOSH's resurrection
/// config (`rules: [{enabled, include, exclude}]`). Of the rules that match,
/// the most specific (naming the group, then the deployment) decides, and
/// among equals `enabled: false` wins. On when no rule matches.
pub fn enabled_by(configs: &[Value], deployment: &str, group: &str) -> bool {
    let mut best: Option<(u8, bool)> = None;
    for c in configs {
        for rule in c["rules"].as_array().into_iter().flatten() {
            let included = rule.get("include").is_none_or(|f| matches(f, deployment, group));
            let excluded = rule.get("exclude").is_some_and(|f| matches(f, deployment, group));
            if !included || excluded {
                continue;
            }
            let inc = rule.get("include");
            let rank = 2 * u8::from(inc.is_some_and(|f| f["instance_groups"].is_array()))
                + u8::from(inc.is_some_and(|f| f["deployments"].is_array()));
            let on = rule["enabled"].as_bool().unwrap_or(true);
            best = match best {
                Some((r, b)) if r > rank || (r == rank && !b) => Some((r, b)),
                _ => Some((rank, on)),
            };
        }
    }
    best.is_none_or(|(_, on)| on)
}

async fn enabled(store: &Store, deployment: &str, group: &str) -> Result<bool, Error> {
    let configs = store.list::<ConfigSpec>("resurrection/").await?.items;
    let contents: Vec<Value> = configs.into_iter().map(|c| c.spec.content).collect();
    Ok(enabled_by(&contents, deployment, group))
}

/// Resurrects `cur` (or pauses: off, or meltdown).
pub async fn run(
    ctx: &Ctx<Instances>,
    mut cur: Object<InstanceSpec>,
    mut o: Options,
) -> Result<Action, Error> {
    let store = &ctx.store;
    let dep = cur.metadata.deployment.clone().unwrap_or_default();
    let since =
        cur.status.last_health_change.map(|t| (Utc::now() - t).to_std().unwrap_or_default());
    let delay = ctx.data.health.resurrection_delay;
    if let Some(since) = since.filter(|s| *s < delay) {
        return Ok(Action::requeue(delay - since));
    }
    if !enabled(store, &dep, &cur.spec.group).await? {
        return Ok(Action::await_change());
    }
    let all = store.list::<InstanceSpec>(&format!("{dep}/")).await?.items;
    let down = all.iter().filter(|i| i.status.is_unresponsive()).count();
    let h = &ctx.data.health;
    if is_meltdown(down, all.len(), h.meltdown_min_down, h.meltdown_fraction) {
        let msg = format!(
            "{down} of {} instances unresponsive (at least {} and over {:.0}%): resurrection paused",
            all.len(),
            h.meltdown_min_down,
            h.meltdown_fraction * 100.0
        );
        if set_meltdown(store, &dep, true, msg.clone()).await? {
            warn!(deployment = %dep, "{msg}");
        }
        return Ok(Action::requeue(PAUSED));
    }
    if set_meltdown(store, &dep, false, format!("{down} of {} instances unresponsive", all.len()))
        .await?
    {
        info!(deployment = %dep, "meltdown over: resurrection resumes");
    }

    // The verdict is as old as the monitor's last look (a check interval or
    // so): an agent back from a partition is still `unresponsive` until its
    // next one. Deleting a VM is not undone, so the agent itself is asked
    // first; one that answers is left alone and the monitor will hear it
    // (FAULT-MATRIX C4: as a meltdown ends, the instances still marked
    // down must not be recreated while their agents are back).
    if let Some(agent) = cur.status.agent_id.as_deref()
        && super::vm::responsive(ctx, agent, RECHECK).await
    {
        let what = display(&cur);
        info!(deployment = %dep, instance = %what, "agent answers again: not resurrected");
        return Ok(Action::requeue(PAUSED));
    }

    let task = create_task(store, "scan and fix", Some(&dep), "health monitor").await?;
    let id = task.spec.id;
    set_task_state(store, id, TaskState::Processing, "").await?;
    o.task = Some(id);
    let what = display(&cur);
    let stage = "Applying problem resolutions";
    // No heartbeat has two causes the CPI tells apart: the VM is gone
    // (deleted behind the director's back: BOSH's missing_vm) or its agent
    // does not answer (unresponsive_agent). Either way the VM is recreated
    // with the instance's disk; the event and the condition say which
    // (FAULT-MATRIX D5).
    let problem = match &cur.status.vm_cid {
        Some(cid) => match ctx.data.director.cpi_named(cur.status.cpi.as_deref()).await {
            Ok(cpi) => match cpi.has_vm(cid).await {
                Ok(false) => ProblemType::MissingVm,
                _ => ProblemType::UnresponsiveAgent,
            },
            _ => ProblemType::UnresponsiveAgent,
        },
        None => ProblemType::MissingVm,
    };
    let object = format!("{problem}: recreate VM of {what}");
    event(&o, stage, &object, EventState::Started, "", store).await;
    info!(deployment = %dep, instance = %what, task = id, "resurrecting");
    let generation = cur.metadata.generation;
    patch(store, &mut cur, |s| {
        set_condition(
            &mut s.conditions,
            Condition::ready(
                false,
                Reason::Resurrecting,
                format!("task {id}: {problem}"),
                generation,
            ),
        );
    })
    .await?;
    match crate::world::cpi::call_log::in_task(o.task, drive(ctx, &mut cur, &o)).await {
        Ok(()) => {
            patch(store, &mut cur, |s| {
                set_condition(
                    &mut s.conditions,
                    Condition::ready(true, Reason::Resurrected, format!("task {id}"), generation),
                );
                s.health = None;
            })
            .await?;
            event(&o, stage, &object, EventState::Finished, "", store).await;
            set_task_state(store, id, TaskState::Done, &format!("recreated {what}")).await?;
            Ok(Action::await_change())
        }
        Err(e) => {
            let msg = e.chain();
            let _ = patch(store, &mut cur, |s| {
                set_condition(
                    &mut s.conditions,
                    Condition::ready(false, Reason::UpdateFailed, msg.clone(), generation),
                );
            })
            .await;
            event(&o, stage, &object, EventState::Failed, &msg, store).await;
            set_task_state(store, id, TaskState::Error, &msg).await?;
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    /// Rules turn resurrection off for what they include and do not exclude.
    #[test]
    fn resurrection_rules() {
        let off_web = json!({"rules": [{"enabled": false, "include": {"deployments": ["d"], "instance_groups": ["web"]}}]});
        assert!(!super::enabled_by(std::slice::from_ref(&off_web), "d", "web"));
        assert!(super::enabled_by(std::slice::from_ref(&off_web), "d", "db"));
        assert!(super::enabled_by(std::slice::from_ref(&off_web), "other", "web"));
        let off_all_but =
            json!({"rules": [{"enabled": false, "exclude": {"deployments": ["keep"]}}]});
        assert!(!super::enabled_by(std::slice::from_ref(&off_all_but), "d", "web"));
        assert!(super::enabled_by(std::slice::from_ref(&off_all_but), "keep", "web"));
        assert!(super::enabled_by(&[], "d", "web"));
        // The most specific rule decides: off everywhere but on for d/web.
        let layered = [
            json!({"rules": [{"enabled": false}]}),
            json!({"rules": [{"enabled": true, "include": {"deployments": ["d"], "instance_groups": ["web"]}}]}),
        ];
        assert!(super::enabled_by(&layered, "d", "web"));
        assert!(!super::enabled_by(&layered, "d", "db"));
    }
}
