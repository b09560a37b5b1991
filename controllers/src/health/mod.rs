//! The health monitor: agents' heartbeats and alerts, turned into each
//! Instance's observed health.
//!
//! Every replica of boshd subscribes to `hm.agent.heartbeat.*` and
//! `hm.agent.alert.*` and keeps, in memory only, when each agent was last
//! heard and what it reported ([`Heartbeats`]). The writing is a controller
//! like the others (leader-elected, fenced): it looks at each Instance every
//! `check_interval` and writes `status.health` only when it changes —
//! `running`, `failing`, `stopped`, `unresponsive` — never once per
//! heartbeat. An agent not heard for `agent_timeout` (BOSH: 60 s) is
//! unresponsive; an agent never heard is given `agent_timeout` from the
//! moment the monitor first saw it in an Instance. A process turning
//! `failing` raises an alert: a log line, and an event in the task of the
//! deployment if it has one.
//!
//! Resurrection is not here: the instance controller hears the status
//! change and reconciles ([`crate::instance`]). Only the end of a meltdown
//! is seen here: when an instance answers again and the deployment's
//! unresponsive instances no longer make a meltdown, its `Meltdown`
//! condition is cleared (nothing else would notice).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bosh_api::Object;
use bosh_api::agent::{Alert, Heartbeat, JobState};
use bosh_api::objects::InstanceSpec;
use bosh_api::store;
use chrono::Utc;
use futures::StreamExt;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::runtime::{Action, Ctx};

pub mod alerts;

/// The health monitor's tuning.
#[derive(Debug, Clone)]
pub struct HealthConfig {
    /// An agent not heard for this long is unresponsive (BOSH: 60 s).
    pub agent_timeout: Duration,
    /// How often each instance's health is looked at.
    pub check_interval: Duration,
    /// Resurrection pauses when at least this many instances of a
    /// deployment are unresponsive at once (BOSH: 5) ...
    pub meltdown_min_down: usize,
    /// ... and they are more than this fraction of it (BOSH: 0.2).
    pub meltdown_fraction: f64,
    /// Where alerts are POSTed (with retries), besides the log and the
    /// alert event stream.
    pub webhook: Option<String>,
    /// How long an instance stays unresponsive before it is resurrected:
    /// agents that die together (a rack, a network) are seen over a few
    /// heartbeat phases, and the meltdown guard must count them all.
    pub resurrection_delay: Duration,
}

impl Default for HealthConfig {
    fn default() -> HealthConfig {
        HealthConfig {
            agent_timeout: Duration::from_secs(60),
            check_interval: Duration::from_secs(1),
            meltdown_min_down: 5,
            meltdown_fraction: 0.2,
            resurrection_delay: Duration::from_secs(10),
            webhook: None,
        }
    }
}

/// What one agent last said, and when (tokio's clock, so the verdicts can
/// be tested on a paused one).
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    job_state: Option<JobState>,
}

/// Heartbeats by agent id, in memory.
#[derive(Default)]
pub struct Heartbeats {
    agents: Mutex<HashMap<String, Seen>>,
    /// Heartbeats received (for benchmarks).
    pub received: std::sync::atomic::AtomicU64,
}

impl Heartbeats {
    /// Records a heartbeat.
    pub fn heard(&self, hb: &Heartbeat) {
        self.heard_at(hb, Instant::now());
    }

    /// Records a heartbeat as heard at `at`.
    fn heard_at(&self, hb: &Heartbeat, at: Instant) {
        self.received.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let seen = Seen { at, job_state: Some(hb.job_state) };
        self.agents.lock().expect("heartbeats").insert(hb.agent_id.clone(), seen);
    }

    /// The health of `agent_id`: `None` when nothing can be said yet.
    pub fn health(&self, agent_id: &str, timeout: Duration) -> &'static str {
        let mut agents = self.agents.lock().expect("heartbeats");
        // First sight without a heartbeat starts its grace period.
        let seen = agents
            .entry(agent_id.to_string())
            .or_insert_with(|| Seen { at: Instant::now(), job_state: None });
        if seen.at.elapsed() > timeout {
            return "unresponsive";
        }
        match seen.job_state {
            Some(JobState::Failing) => "failing",
            Some(JobState::Stopped) => "stopped",
            Some(JobState::Running) | Some(JobState::Starting) => "running",
            None => "",
        }
    }

    /// Forgets an agent (its VM is gone).
    pub fn forget(&self, agent_id: &str) {
        self.agents.lock().expect("heartbeats").remove(agent_id);
    }

    /// Forgets agents not heard for `older_than` — deleted VMs' agents,
    /// which would otherwise stay in memory for good. One still named by
    /// an instance just starts a new grace period and is judged
    /// unresponsive again after it, as it already was.
    pub fn prune(&self, older_than: Duration) -> usize {
        let mut agents = self.agents.lock().expect("heartbeats");
        let before = agents.len();
        agents.retain(|_, seen| seen.at.elapsed() <= older_than);
        before - agents.len()
    }

    /// Agents remembered.
    pub fn len(&self) -> usize {
        self.agents.lock().expect("heartbeats").len()
    }

    /// Whether no agent is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The health monitor's context.
pub struct Monitor {
    /// Heartbeats heard.
    pub heartbeats: Arc<Heartbeats>,
    /// Tuning.
    pub config: HealthConfig,
    /// Where alerts go.
    pub sinks: alerts::Sinks,
}

/// Subscribes to heartbeats and alerts until the connection closes;
/// forgets agents silent for `retain` (checked every minute).
pub async fn listen(
    nats: async_nats::Client,
    heartbeats: Arc<Heartbeats>,
    sinks: alerts::Sinks,
    retain: Duration,
) {
    let (mut hb, mut alerts) = match (
        nats.subscribe("hm.agent.heartbeat.*").await,
        nats.subscribe("hm.agent.alert.*").await,
    ) {
        (Ok(h), Ok(a)) => (h, a),
        (Err(e), _) | (_, Err(e)) => {
            warn!(error = %e, "health monitor cannot subscribe to heartbeats");
            return;
        }
    };
    let mut prune = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = prune.tick() => {
                let n = heartbeats.prune(retain);
                if n > 0 {
                    debug!(forgotten = n, "forgot agents not heard for {retain:?}");
                }
            }
            m = hb.next() => {
                let Some(m) = m else { return };
                match serde_json::from_slice::<Heartbeat>(&m.payload) {
                    Ok(h) => heartbeats.heard(&h),
                    Err(e) => warn!(subject = %m.subject, error = %e, "malformed heartbeat"),
                }
            }
            m = alerts.next() => {
                let Some(m) = m else { return };
                if let Ok(a) = serde_json::from_slice::<Alert>(&m.payload) {
                    // Agents' own alerts (a process died): summaries name
                    // processes, not secrets.
                    sinks
                        .send(alerts::Alert {
                            source: format!("agent {}", a.agent_id),
                            severity: a.severity,
                            title: a.title,
                            summary: a.summary,
                            created_at: a.created_at as i64,
                        })
                        .await;
                }
            }
        }
    }
}

/// Errors of the health monitor.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Writing the status failed.
    #[error("store: {0}")]
    Store(#[from] store::Error),
}

/// Back off per key on any error.
pub fn error_policy(_: Arc<Object<InstanceSpec>>, _: &Error, _: Arc<Ctx<Monitor>>) -> Action {
    Action::backoff()
}

/// Looks at one instance's health and records it when it changed.
pub async fn reconcile(
    obj: Arc<Object<InstanceSpec>>,
    ctx: Arc<Ctx<Monitor>>,
) -> Result<Action, Error> {
    let every = ctx.data.config.check_interval;
    ctx.data.sinks.lead(&ctx.store);
    if obj.metadata.is_deleting() {
        return Ok(Action::await_change());
    }
    let Some(agent) = obj.status.agent_id.clone().filter(|_| obj.status.vm_cid.is_some()) else {
        return Ok(Action::requeue(every));
    };
    // Only a VM that was set up (jobs applied) is watched; a VM being
    // created or updated is the instance controller's to judge.
    if obj.status.applied_hash.is_empty() {
        return Ok(Action::requeue(every));
    }
    let health = ctx.data.heartbeats.health(&agent, ctx.data.config.agent_timeout);
    if health.is_empty() || health == obj.status.health {
        return Ok(Action::requeue(every));
    }
    let mut cur = (*obj).clone();
    let timeout = ctx.data.config.agent_timeout;
    let hb = ctx.data.heartbeats.clone();
    crate::status::patch(&ctx.store, &mut cur, |s| {
        // Judged against the agent the status names now: a resurrected
        // instance's new agent starts afresh.
        if let Some(a) = &s.agent_id {
            let h = hb.health(a, timeout);
            if !h.is_empty() && h != s.health {
                s.health = h.to_string();
                s.last_health_change = Some(Utc::now());
            }
        }
    })
    .await?;
    info!(instance = %obj.metadata.name, from = %obj.status.health, to = %cur.status.health, "instance health changed");
    let unresponsive = crate::instance::UNRESPONSIVE;
    if obj.status.health == unresponsive
        && cur.status.health != unresponsive
        && let Some(dep) = &obj.metadata.deployment
        && crate::instance::resurrect::clear_meltdown_if_over(&ctx.store, dep, &ctx.data.config)
            .await?
    {
        info!(deployment = %dep, "meltdown over: enough instances answer again");
    }
    let (severity, title) = match cur.status.health.as_str() {
        "failing" => (2, "job is failing"),
        "unresponsive" => (1, "agent is unresponsive"),
        _ => (0, ""),
    };
    if severity > 0 && cur.status.health != obj.status.health {
        let source =
            format!("{}/{}", obj.metadata.deployment.as_deref().unwrap_or(""), obj.metadata.name);
        let summary = format!(
            "{source} ({}) went from {:?} to {:?}",
            obj.spec.index, obj.status.health, cur.status.health
        );
        let created_at = Utc::now().timestamp();
        ctx.data
            .sinks
            .send(alerts::Alert { source, severity, title: title.into(), summary, created_at })
            .await;
    }
    Ok(Action::requeue(every))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Agents silent past the retention are forgotten; the others stay.
    #[tokio::test(start_paused = true)]
    async fn prune_forgets_only_long_silent_agents() {
        let hb = Heartbeats::default();
        let beat = |a: &str| Heartbeat {
            agent_id: a.into(),
            job_state: JobState::Running,
            ..Default::default()
        };
        hb.heard_at(&beat("a"), Instant::now() - Duration::from_secs(700));
        hb.heard(&beat("b"));
        assert_eq!(hb.prune(Duration::from_secs(3600)), 0);
        assert_eq!(hb.len(), 2);
        assert_eq!(hb.prune(Duration::from_secs(600)), 1, "a was silent for longer");
        assert_eq!(hb.len(), 1);
        assert_eq!(hb.health("b", Duration::from_secs(60)), "running");
    }

    /// Issue 12: looked at every check interval, an agent heard last at t0 is judged unresponsive no sooner than t0 + timeout and no later than t0 + timeout + one interval; looking does not restart its clock.
    #[tokio::test(start_paused = true)]
    async fn a_silent_agent_is_unresponsive_within_timeout_plus_one_check() {
        let (timeout, every) = (Duration::from_secs(60), Duration::from_secs(1));
        let hb = Heartbeats::default();
        let beat =
            Heartbeat { agent_id: "a".into(), job_state: JobState::Running, ..Default::default() };
        // Heartbeats every 30 s (boshd's default) for a while, then a kill
        // between two of them.
        for _ in 0..4 {
            hb.heard(&beat);
            tokio::time::advance(Duration::from_secs(30)).await;
        }
        hb.heard(&beat);
        let last = Instant::now();
        tokio::time::advance(Duration::from_millis(12_345)).await; // killed here
        loop {
            let h = hb.health("a", timeout);
            if h == "unresponsive" {
                break;
            }
            assert_eq!(h, "running");
            tokio::time::advance(every).await;
        }
        let took = last.elapsed();
        assert!(took > timeout && took <= timeout + every, "{took:?}");
    }

    /// An agent never heard gets the timeout from the monitor's first look, once: later looks do not extend it.
    #[tokio::test(start_paused = true)]
    async fn an_agent_never_heard_gets_one_grace_period() {
        let hb = Heartbeats::default();
        let timeout = Duration::from_secs(60);
        assert_eq!(hb.health("new", timeout), "", "nothing to say yet");
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(hb.health("new", timeout), "");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(hb.health("new", timeout), "unresponsive");
    }
}
