//! `GET /healthz`: whether this director can do its work, for load
//! balancers, monitors and operators; no token needed, no secret told.
//!
//! Everything boshd does goes through etcd, so health is etcd's health as
//! boshd sees it: a linearizable read (needs a leader and a quorum) and
//! etcd's alarms. Answers `200 {"status":"ok"}`, or `503` with
//! `"status":"degraded"`, a CamelCase `reason` and a `message` saying what
//! an operator should do:
//!
//! - `EtcdUnreachable`: etcd did not answer (all members down, no quorum,
//!   certificates refused) within [`PROBE_TIMEOUT`]. Controllers record no
//!   intent then, so they make no CPI call (FAULT-MATRIX B4).
//! - `EtcdNoSpace`: etcd raised its NOSPACE alarm (its database reached
//!   `--quota-backend-bytes`) and refuses every write until an operator
//!   compacts, defragments and disarms it (FAULT-MATRIX B6).
//! - `EtcdAlarm`: any other alarm (e.g. `CORRUPT`).
//!
//! A condition on an object could not say this: when etcd is unreachable
//! or full, no condition can be written.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::ApiState;

/// How long the etcd probe may take before etcd counts as unreachable.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The body of a `/healthz` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Health {
    /// `ok` or `degraded`.
    pub status: String,
    /// Why it is degraded (`EtcdUnreachable`, `EtcdNoSpace`, `EtcdAlarm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What is wrong and what to do, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The etcd revision read, when etcd answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_revision: Option<i64>,
}

impl Health {
    fn degraded(reason: &str, message: String, etcd_revision: Option<i64>) -> Health {
        Health {
            status: "degraded".into(),
            reason: Some(reason.into()),
            message: Some(message),
            etcd_revision,
        }
    }

    /// Whether the director is healthy.
    pub fn is_ok(&self) -> bool {
        self.status == "ok"
    }
}

/// Probes etcd through `store` and says what it found.
pub async fn check(store: &bosh_api::store::Store) -> Health {
    let probe = match tokio::time::timeout(PROBE_TIMEOUT, store.probe()).await {
        Err(_) => {
            return Health::degraded(
                "EtcdUnreachable",
                format!(
                    "etcd did not answer within {PROBE_TIMEOUT:?}; nothing can be recorded or changed until it does"
                ),
                None,
            );
        }
        Ok(Err(e)) => {
            return Health::degraded(
                "EtcdUnreachable",
                format!("{e}; nothing can be recorded or changed until etcd answers"),
                None,
            );
        }
        Ok(Ok(p)) => p,
    };
    let rev = Some(probe.revision);
    if probe.alarms.iter().any(|a| a == "NOSPACE") {
        return Health::degraded(
            "EtcdNoSpace",
            "etcd raised its NOSPACE alarm: its database reached --quota-backend-bytes and it \
             refuses every write (no deploy can progress). Free space: compact \
             (`etcdctl compact <revision>`), defragment (`etcdctl defrag`), then \
             `etcdctl alarm disarm`; or raise the quota"
                .into(),
            rev,
        );
    }
    if !probe.alarms.is_empty() {
        return Health::degraded(
            "EtcdAlarm",
            format!("etcd raised alarms: {}", probe.alarms.join(", ")),
            rev,
        );
    }
    Health { status: "ok".into(), reason: None, message: None, etcd_revision: rev }
}

/// The handler.
pub async fn healthz(State(state): State<Arc<ApiState>>) -> Response {
    let health = check(&state.store).await;
    let code = if health.is_ok() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    if !health.is_ok() {
        tracing::warn!(reason = ?health.reason, "health check: degraded");
    }
    (code, axum::Json(health)).into_response()
}
