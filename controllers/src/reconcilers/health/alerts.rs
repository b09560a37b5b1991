//! Alert sinks: every alert becomes a log line, an Event in the alert
//! stream (task 0: `boshctl events` shows it), and, when configured, a
//! webhook POST retried with backoff — delivered in the background, so a
//! slow receiver never holds the monitor up.
//!
//! Every replica hears every agent alert, but only the health monitor's
//! leader records and posts it: events are written through the leader's
//! fenced store ([`Sinks::lead`]), and the webhook is called only once the
//! event is recorded — so two replicas never deliver one alert twice, and
//! a deposed leader that resumes delivers nothing.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use bosh_api::objects::EventState;
use bosh_api::store::Store;
use serde::Serialize;
use tracing::{debug, warn};

use crate::libs::tasks::EventLog;

/// The task number alert events are recorded under.
pub const ALERT_TASK: u64 = 0;

/// One alert.
#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    /// `deployment/group/uuid`, or the agent id when no instance is known.
    pub source: String,
    /// 1 (critical) to 4 (warning), as BOSH's severities.
    pub severity: u8,
    /// Short title, e.g. `process is not running`.
    pub title: String,
    /// What happened (names processes and instances, never values).
    pub summary: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// Where alerts go.
#[derive(Clone)]
pub struct Sinks {
    /// The health monitor's fenced store while this replica leads it.
    writer: Arc<Mutex<Option<Store>>>,
    webhook: Option<String>,
    client: reqwest::Client,
    attempts: usize,
}

impl Sinks {
    /// Sinks that, once leading, write events and, with `webhook`, POST there.
    pub fn new(webhook: Option<String>) -> Sinks {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("an HTTP client builds");
        Sinks { writer: Arc::default(), webhook, client, attempts: 5 }
    }

    /// Records that this replica leads the health monitor with `store`
    /// (its fenced store) — called by each of the monitor's reconciles.
    pub fn lead(&self, store: &Store) {
        let mut w = self.writer.lock().expect("sinks writer");
        if w.as_ref().map(Store::fence) != Some(store.fence()) {
            *w = Some(store.clone());
        }
    }

    /// Sends `alert` to every sink (the webhook in the background).
    pub async fn send(&self, alert: Alert) {
        let Some(store) = self.writer.lock().expect("sinks writer").clone() else {
            debug!(source = %alert.source, title = %alert.title, "alert left to the leading replica");
            return;
        };
        let log = EventLog::new(store, ALERT_TASK);
        let object = format!("{}: {}", alert.source, alert.title);
        if let Err(e) = log.record("Alert", &object, EventState::Info, &alert.summary).await {
            // Fenced: another replica leads now and delivers it.
            debug!(error = %e, source = %alert.source, "alert not recorded here");
            return;
        }
        // Debug-formatted: agents write titles and summaries, and a newline
        // in them must not pass for a line of boshd's log.
        warn!(source = ?alert.source, severity = alert.severity, title = ?alert.title, summary = ?alert.summary, "alert");
        let Some(url) = self.webhook.clone() else { return };
        let (client, attempts) = (self.client.clone(), self.attempts);
        tokio::spawn(async move {
            let post = || async {
                client.post(&url).json(&alert).send().await?.error_for_status().map(drop)
            };
            let backoff = ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(200))
                .with_max_delay(Duration::from_secs(10))
                .with_max_times(attempts.saturating_sub(1));
            if let Err(e) = post.retry(backoff).await {
                warn!(url = %url, error = %e, "alert webhook failed after {attempts} attempts");
            }
        });
    }
}
