//! VMs as the director knows them, and commands run on them through their
//! agents.
//!
//! - `GET /v1/vms[?deployment=D][&vitals=true]`: every VM recorded in an
//!   Instance's status (and compile VMs in use), with its agent's state
//!   (and vitals) asked live over NATS;
//! - `POST /v1/vms/<agent-id>/exec` `{"command": [...], "timeout_secs"}`:
//!   runs a command through the agent (`boshctl exec`).
//!
//! Agents are addressed by the agent id recorded in etcd, never by what a
//! client claims, so the API cannot be used to reach a VM boshd did not make.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use bosh_api::objects::{CompiledPackageSpec, InstanceSpec};
use bosh_api::wire::{AgentState, ExecRequest, ExecResult, VmEntry, VmQuery};

use super::{ApiError, ApiState};

fn director(st: &ApiState) -> Result<&crate::world::director::Director, ApiError> {
    st.director.as_ref().ok_or_else(|| {
        ApiError::new(StatusCode::NOT_IMPLEMENTED, "this API has no director attached")
    })
}

/// Every VM recorded in etcd, optionally for one deployment, each
/// `unresponsive agent` until its agent is asked.
async fn recorded(st: &ApiState, deployment: Option<&str>) -> Result<Vec<VmEntry>, ApiError> {
    let prefix = deployment.map(|d| format!("{d}/")).unwrap_or_default();
    let mut out = Vec::new();
    for i in st.store.list::<InstanceSpec>(&prefix).await?.items {
        let (Some(vm), Some(agent)) = (i.status.vm_cid.clone(), i.status.agent_id.clone()) else {
            continue;
        };
        out.push(VmEntry {
            deployment: i.metadata.deployment.clone().unwrap_or_default(),
            instance: i.metadata.name.clone(),
            vm_cid: vm,
            agent_id: agent,
            ips: i.spec.networks.iter().map(|n| n.ip.clone()).filter(|ip| !ip.is_empty()).collect(),
            az: i.spec.az.clone().unwrap_or_default(),
            state: AgentState::Unresponsive,
            vitals: None,
        });
    }
    for c in st.store.list::<CompiledPackageSpec>("").await?.items {
        let Some(w) = c.status.worker.clone() else { continue };
        if deployment.is_some_and(|d| d != w.deployment) {
            continue;
        }
        if w.vm_cid.is_empty() {
            continue;
        }
        out.push(VmEntry {
            deployment: w.deployment.clone(),
            instance: format!("compilation/{}", c.spec.package),
            vm_cid: w.vm_cid.clone(),
            agent_id: w.agent_id.clone(),
            ips: vec![w.ip.clone()],
            az: String::new(),
            state: AgentState::Unresponsive,
            vitals: None,
        });
    }
    Ok(out)
}

/// `GET /v1/vms`.
pub(super) async fn list(
    State(st): State<Arc<ApiState>>,
    Query(q): Query<VmQuery>,
) -> Result<Json<Vec<VmEntry>>, ApiError> {
    let d = director(&st)?;
    let mut vms = recorded(&st, q.deployment.as_deref()).await?;
    let states = vms.iter().map(|v| {
        let agent = d.agents.for_agent(v.agent_id.clone());
        let full = q.vitals;
        async move {
            tokio::time::timeout(Duration::from_secs(5), agent.get_state(full)).await.ok()?.ok()
        }
    });
    let states = futures::future::join_all(states).await;
    for (vm, state) in vms.iter_mut().zip(states) {
        if let Some(s) = state {
            vm.state = s.job_state.into();
            vm.vitals = s.vitals;
        }
    }
    Ok(Json(vms))
}

/// `POST /v1/vms/<agent-id>/exec`.
pub(super) async fn exec(
    State(st): State<Arc<ApiState>>,
    Path(agent_id): Path<String>,
    Json(body): Json<ExecRequest>,
) -> Result<Json<ExecResult>, ApiError> {
    let d = director(&st)?;
    if body.command.is_empty() {
        return Err(ApiError::invalid(
            "nothing to run",
            vec!["command: expected at least one word".into()],
        ));
    }
    if !recorded(&st, None).await?.iter().any(|v| v.agent_id == agent_id) {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("no VM with agent {agent_id}")));
    }
    let result = d
        .agents
        .for_agent(agent_id)
        .exec(&body.command, body.timeout_secs)
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, e.to_string()))?;
    Ok(Json(result))
}
