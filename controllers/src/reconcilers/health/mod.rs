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
//! change and reconciles (the instance controller's `resurrect`). Only the end of a meltdown
//! is seen here: when an instance answers again and the deployment's
//! unresponsive instances no longer make a meltdown, its `Meltdown`
//! condition is cleared (nothing else would notice).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bosh_api::Object;
use bosh_api::agent::{Alert, Heartbeat, JobState};
use bosh_api::objects::{InstanceHealth, InstanceSpec};
use bosh_api::store;
use chrono::Utc;
use futures::StreamExt;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::runtime::{Action, Ctx, Trigger, Wiring, Workers};

pub mod alerts;
pub mod meltdown;

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
    pub fn health(&self, agent_id: &str, timeout: Duration) -> Option<InstanceHealth> {
        let mut agents = self.agents.lock().expect("heartbeats");
        // First sight without a heartbeat starts its grace period.
        let seen = agents
            .entry(agent_id.to_string())
            .or_insert_with(|| Seen { at: Instant::now(), job_state: None });
        if seen.at.elapsed() > timeout {
            return Some(InstanceHealth::Unresponsive);
        }
        match seen.job_state? {
            JobState::Failing => Some(InstanceHealth::Failing),
            JobState::Stopped => Some(InstanceHealth::Stopped),
            JobState::Running | JobState::Starting => Some(InstanceHealth::Running),
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

/// Why a message on an agent's subject was dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Dropped {
    /// Not a message of the expected shape (bad JSON, another protocol's
    /// shape, truncated): what the decoder said, escaped and cut short.
    Malformed(String),
    /// Well-formed, but its body names another agent than the subject does.
    Impersonation {
        /// The agent the body claims to be.
        claimed: String,
    },
}

/// Most characters of a decoding error logged: its text quotes what the
/// agent sent, which must not flood or forge lines of boshd's log.
const MAX_LOGGED_ERROR_CHARS: usize = 200;

/// Decodes a heartbeat or alert an agent published on `subject`
/// (`<prefix><agent-id>`). The subject is the only identity the bus vouches
/// for (each agent may publish on its own subjects only, see
/// [`crate::world::bus`]); the agent id in the body is the sender's word, so a
/// body naming another agent is refused: otherwise any one compromised VM
/// could keep a dead instance looking alive (no resurrection), or make a
/// healthy one look failing.
fn decode_from<T: serde::de::DeserializeOwned>(
    subject: &str,
    prefix: &str,
    payload: &[u8],
    agent_of: fn(&T) -> &str,
) -> Result<T, Dropped> {
    let msg: T = serde_json::from_slice(payload).map_err(|e| {
        let text: String = e.to_string().escape_debug().take(MAX_LOGGED_ERROR_CHARS).collect();
        Dropped::Malformed(text)
    })?;
    let sender = subject.strip_prefix(prefix).unwrap_or_default();
    if agent_of(&msg) != sender {
        let claimed = agent_of(&msg).escape_debug().take(MAX_LOGGED_ERROR_CHARS).collect();
        return Err(Dropped::Impersonation { claimed });
    }
    Ok(msg)
}

/// Alerts one agent may raise per minute; the rest are dropped (with one
/// log line per agent and minute). Every alert is an etcd event (and a
/// webhook call): without a cap, one agent flooding its alert subject
/// would turn into a flood of etcd writes. Real agents raise an alert
/// when a process fails, a few a minute at most.
pub const ALERTS_PER_MINUTE: u32 = 20;

/// Counts each agent's alerts in the current minute.
#[derive(Debug, Default)]
struct AlertBudget {
    agents: HashMap<String, (Instant, u32)>,
}

impl AlertBudget {
    /// Whether `agent` may raise one more alert now; `Err(true)` for the
    /// first alert refused in its minute (the one to log).
    fn take(&mut self, agent: &str) -> Result<(), bool> {
        let now = Instant::now();
        let (start, n) = self.agents.entry(agent.to_string()).or_insert((now, 0));
        if now.duration_since(*start) >= Duration::from_secs(60) {
            (*start, *n) = (now, 0);
        }
        *n += 1;
        match *n {
            n if n <= ALERTS_PER_MINUTE => Ok(()),
            n => Err(n == ALERTS_PER_MINUTE + 1),
        }
    }

    /// Forgets minutes that are over.
    fn prune(&mut self) {
        self.agents.retain(|_, (start, _)| start.elapsed() < Duration::from_secs(60));
    }
}

/// Subscribes to heartbeats and alerts until the connection closes;
/// forgets agents silent for `retain` (checked every minute). A message
/// that does not decode, or whose body names another agent than its
/// subject, is dropped with a log line; alerts beyond
/// [`ALERTS_PER_MINUTE`] per agent are dropped too.
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
    let mut budget = AlertBudget::default();
    loop {
        tokio::select! {
            _ = prune.tick() => {
                let n = heartbeats.prune(retain);
                if n > 0 {
                    debug!(forgotten = n, "forgot agents not heard for {retain:?}");
                }
                budget.prune();
            }
            m = hb.next() => {
                let Some(m) = m else { return };
                let agent_of: fn(&Heartbeat) -> &str = |h| &h.agent_id;
                match decode_from(&m.subject, "hm.agent.heartbeat.", &m.payload, agent_of) {
                    Ok(h) => heartbeats.heard(&h),
                    Err(why) => dropped(&m.subject, m.payload.len(), &why, "heartbeat"),
                }
            }
            m = alerts.next() => {
                let Some(m) = m else { return };
                let agent_of: fn(&Alert) -> &str = |a| &a.agent_id;
                let a = match decode_from(&m.subject, "hm.agent.alert.", &m.payload, agent_of) {
                    Ok(a) => a,
                    Err(why) => {
                        dropped(&m.subject, m.payload.len(), &why, "alert");
                        continue;
                    }
                };
                if let Err(first) = budget.take(&a.agent_id) {
                    if first {
                        warn!(subject = %m.subject, limit = ALERTS_PER_MINUTE, "alert dropped: over the agent's alerts per minute (logged once a minute)");
                    }
                    continue;
                }
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

/// Logs one dropped message (its subject names the agent; the payload
/// itself is never logged).
fn dropped(subject: &str, bytes: usize, why: &Dropped, what: &str) {
    match why {
        Dropped::Malformed(error) => {
            warn!(%subject, bytes, %error, "malformed {what} dropped")
        }
        Dropped::Impersonation { claimed } => {
            warn!(%subject, %claimed, "{what} naming another agent dropped")
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

/// The health monitor's controller: it hears every change of an Instance
/// (a new VM, a new agent, a stop) to judge it against its heartbeats.
pub const WIRING: Wiring =
    Wiring { name: "health-monitor", trigger: Trigger::Any, workers: Workers::Shared };

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
    if health.is_none() || health == obj.status.health {
        return Ok(Action::requeue(every));
    }
    let mut cur = (*obj).clone();
    let timeout = ctx.data.config.agent_timeout;
    let hb = ctx.data.heartbeats.clone();
    crate::runtime::status::patch(&ctx.store, &mut cur, |s| {
        // Judged against the agent the status names now: a resurrected
        // instance's new agent starts afresh.
        if let Some(a) = &s.agent_id {
            let h = hb.health(a, timeout);
            if h.is_some() && h != s.health {
                s.health = h;
                s.last_health_change = Some(Utc::now());
            }
        }
    })
    .await?;
    let said =
        |h: &Option<InstanceHealth>| h.as_ref().map_or("", InstanceHealth::as_str).to_string();
    info!(instance = %obj.metadata.name, from = %said(&obj.status.health), to = %said(&cur.status.health), "instance health changed");
    if obj.status.is_unresponsive()
        && !cur.status.is_unresponsive()
        && let Some(dep) = &obj.metadata.deployment
        && meltdown::clear_meltdown_if_over(&ctx.store, dep, &ctx.data.config).await?
    {
        info!(deployment = %dep, "meltdown over: enough instances answer again");
    }
    let (severity, title) = match cur.status.health {
        Some(InstanceHealth::Failing) => (2, "job is failing"),
        Some(InstanceHealth::Unresponsive) => (1, "agent is unresponsive"),
        _ => (0, ""),
    };
    if severity > 0 && cur.status.health != obj.status.health {
        let source =
            format!("{}/{}", obj.metadata.deployment.as_deref().unwrap_or(""), obj.metadata.name);
        let summary = format!(
            "{source} ({}) went from {:?} to {:?}",
            obj.spec.index,
            said(&obj.status.health),
            said(&cur.status.health)
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

    /// F3: a heartbeat is taken only from its own agent's subject; bad
    /// JSON and other shapes are dropped with an escaped, bounded reason.
    #[test]
    fn heartbeats_are_taken_only_from_their_own_subject() {
        let agent_of: fn(&Heartbeat) -> &str = |h| &h.agent_id;
        let beat = |id: &str| {
            serde_json::to_vec(&Heartbeat {
                agent_id: id.into(),
                job_state: JobState::Running,
                ..Default::default()
            })
            .unwrap()
        };
        let p = "hm.agent.heartbeat.";
        assert!(decode_from("hm.agent.heartbeat.a", p, &beat("a"), agent_of).is_ok());
        assert_eq!(
            decode_from("hm.agent.heartbeat.a", p, &beat("b"), agent_of).unwrap_err(),
            Dropped::Impersonation { claimed: "b".into() }
        );
        let forged = beat("b\n2026-01-01 INFO all is well");
        match decode_from("hm.agent.heartbeat.a", p, &forged, agent_of).unwrap_err() {
            Dropped::Impersonation { claimed } => assert!(!claimed.contains('\n'), "{claimed}"),
            other => panic!("{other:?}"),
        }
        let old = br#"{"job":"web","index":0,"job_state":"running","vitals":{"load":["0.1"]}}"#;
        let long = format!("{{\"agent_id\": \"{}\n", "x".repeat(10_000));
        for bad in [&b"{"[..], b"", b"\xff\xfe", old, long.as_bytes()] {
            match decode_from("hm.agent.heartbeat.a", p, bad, agent_of).unwrap_err() {
                Dropped::Malformed(e) => {
                    assert!(e.chars().count() <= MAX_LOGGED_ERROR_CHARS && !e.contains('\n'))
                }
                other => panic!("{other:?}"),
            }
        }
    }

    /// F3: each agent raises at most ALERTS_PER_MINUTE alerts a minute;
    /// the first refusal is the one logged; a new minute starts afresh.
    #[tokio::test(start_paused = true)]
    async fn alerts_are_capped_per_agent_and_minute() {
        let mut b = AlertBudget::default();
        for _ in 0..ALERTS_PER_MINUTE {
            assert_eq!(b.take("a"), Ok(()));
        }
        assert_eq!(b.take("a"), Err(true));
        assert_eq!(b.take("a"), Err(false));
        assert_eq!(b.take("b"), Ok(()), "another agent has its own budget");
        tokio::time::advance(Duration::from_secs(61)).await;
        b.prune();
        assert!(b.agents.is_empty());
        assert_eq!(b.take("a"), Ok(()));
    }

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
        assert_eq!(hb.health("b", Duration::from_secs(60)), Some(InstanceHealth::Running));
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
            if h == Some(InstanceHealth::Unresponsive) {
                break;
            }
            assert_eq!(h, Some(InstanceHealth::Running));
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
        assert_eq!(hb.health("new", timeout), None, "nothing to say yet");
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(hb.health("new", timeout), None);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(hb.health("new", timeout), Some(InstanceHealth::Unresponsive));
    }
}
