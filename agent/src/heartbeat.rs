//! Heartbeats and alerts for the health monitor.
//!
//! A heartbeat goes out every `heartbeat_interval_secs`, and at once after
//! a process failure, so the monitor sees `failing` without waiting a
//! whole interval; the failure itself goes out as an alert.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bosh_api::agent::{Alert, Heartbeat, alert_subject, heartbeat_subject};
use tokio::sync::mpsc;

use crate::context::Agent;
use crate::supervise::Failure;

/// The heartbeat `agent` publishes now.
pub fn heartbeat(agent: &Agent) -> Heartbeat {
    let (job_state, processes) = agent.supervisor.status();
    let vitals = agent.vitals.lock().expect("lock").sample(&agent.paths);
    let spec = agent.spec.lock().expect("lock").clone().unwrap_or_default();
    Heartbeat {
        agent_id: agent.settings.agent_id.clone(),
        deployment: spec.deployment,
        job: spec.name,
        index: spec.index,
        id: spec.id,
        job_state,
        number_of_processes: processes.len(),
        processes,
        vitals,
    }
}

fn alert(agent: &Agent, f: &Failure) -> Alert {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    Alert {
        id: uuid::Uuid::new_v4().to_string(),
        agent_id: agent.settings.agent_id.clone(),
        severity: 1,
        title: format!("{} ({}) - Does not exist - restart", f.process, f.job),
        summary: f.message.clone(),
        created_at: now,
    }
}

/// Publishes heartbeats and alerts until `shutdown` resolves.
pub async fn run(
    agent: Arc<Agent>,
    nats: async_nats::Client,
    mut failures: mpsc::UnboundedReceiver<Failure>,
    shutdown: impl Future<Output = ()>,
) {
    let id = agent.settings.agent_id.clone();
    let (hb_subject, alert_subject) = (heartbeat_subject(&id), alert_subject(&id));
    let every = Duration::from_secs(agent.settings.heartbeat_interval_secs.max(1));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            Some(f) = failures.recv() => {
                let body = serde_json::to_vec(&alert(&agent, &f)).expect("alerts serialize");
                if let Err(e) = nats.publish(alert_subject.clone(), body.into()).await {
                    tracing::warn!(error = %e, "failed to publish alert");
                }
            }
            _ = &mut shutdown => return,
        }
        let body = serde_json::to_vec(&heartbeat(&agent)).expect("heartbeats serialize");
        if let Err(e) = nats.publish(hb_subject.clone(), body.into()).await {
            tracing::warn!(error = %e, "failed to publish heartbeat");
        }
    }
}
