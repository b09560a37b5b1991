//! A deployment's instances: lifecycle actions, listing (with live process
//! state), logs, and the names of its variables.
//!
//! Targets are resolved against the Instance objects the deployment
//! controller wrote: `GROUP` (every instance of the group), `GROUP/ID` or
//! `GROUP/INDEX`. Actions only change desired state in the Deployment's
//! `spec.instances`; the controllers carry them out under the new Task.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bosh_api::Object;
use bosh_api::objects::{DeploymentSpec, DesiredState, InstanceOverride, InstanceSpec, TaskChange};
use bosh_api::wire::{
    ActionRequest, AgentReport, AgentState, InstanceAction, InstanceEntry, InstancesQuery,
    LogsRequest, TaskRef, Variable,
};
use futures::StreamExt;

use super::{internal, update_deployment, with_task};
use crate::server::api::{ApiError, ApiState};

/// How long one agent may take to report its processes.
const AGENT_TIMEOUT: Duration = Duration::from_secs(5);

/// The verb of `action` in task descriptions.
fn verb(action: InstanceAction) -> &'static str {
    match action {
        InstanceAction::Start => "start",
        InstanceAction::Stop => "stop",
        InstanceAction::StopHard => "stop --hard",
        InstanceAction::Restart => "restart",
        InstanceAction::Recreate => "recreate",
    }
}

/// Records `action` in an override: a lifecycle state, or a bumped
/// restart or recreate counter.
pub fn apply_to(action: InstanceAction, o: &mut InstanceOverride) {
    match action {
        InstanceAction::Start => o.state = Some(DesiredState::Started),
        InstanceAction::Stop => o.state = Some(DesiredState::Stopped),
        InstanceAction::StopHard => o.state = Some(DesiredState::Detached),
        InstanceAction::Restart => o.restart += 1,
        InstanceAction::Recreate => {
            o.recreate += 1;
            o.state = Some(DesiredState::Started);
        }
    }
}

/// What a target picked.
#[derive(Debug)]
struct Selection<'a> {
    /// The override keys the target names: instance ids, or group names.
    keys: BTreeSet<String>,
    /// The instances it matches.
    instances: Vec<&'a Object<InstanceSpec>>,
}

/// The instance's id: `spec.id`, or the part of its name after the group.
pub(super) fn instance_id(i: &Object<InstanceSpec>) -> &str {
    if i.spec.id.is_empty() {
        i.metadata.name.split_once('/').map(|(_, id)| id).unwrap_or(&i.metadata.name)
    } else {
        &i.spec.id
    }
}

/// Resolves `target` (`None`: every group) against a deployment's
/// instances; an empty match is a 404.
fn select<'a>(
    deployment: &str,
    instances: &'a [Object<InstanceSpec>],
    target: Option<&str>,
) -> Result<Selection<'a>, ApiError> {
    let (keys, matched): (BTreeSet<String>, Vec<_>) = match target {
        None => {
            (instances.iter().map(|i| i.spec.group.clone()).collect(), instances.iter().collect())
        }
        Some(t) => match t.split_once('/') {
            None => (
                BTreeSet::from([t.to_string()]),
                instances.iter().filter(|i| i.spec.group == t).collect(),
            ),
            Some((group, which)) => {
                let matched: Vec<_> = instances
                    .iter()
                    .filter(|i| {
                        i.spec.group == group
                            && (instance_id(i) == which || i.spec.index.to_string() == which)
                    })
                    .collect();
                (matched.iter().map(|i| instance_id(i).to_string()).collect(), matched)
            }
        },
    };
    if matched.is_empty() {
        let what = target.map(|t| format!("instance {t}")).unwrap_or("any instance".into());
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "deployment {deployment} has no {what} (see `boshctl instances -d {deployment}`)"
            ),
        ));
    }
    Ok(Selection { keys, instances: matched })
}

pub(super) async fn instances_of(
    st: &ApiState,
    deployment: &str,
) -> Result<Vec<Object<InstanceSpec>>, ApiError> {
    Ok(st.store.list::<InstanceSpec>(&format!("{deployment}/")).await?.items)
}

/// `POST /v1/deployments/<name>/instances/actions`.
pub(in crate::server::api) async fn action(
    State(st): State<Arc<ApiState>>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<TaskRef>, ApiError> {
    let req: ActionRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::invalid(
            "request body is not an instance action",
            vec![format!("{e} (action: start, stop, stop-hard, restart or recreate)")],
        )
    })?;
    let target = req.target.as_deref().filter(|t| !t.is_empty());
    st.store.get::<DeploymentSpec>(None, &name).await?;
    let instances = instances_of(&st, &name).await?;
    let sel = select(&name, &instances, target)?;
    let description = match target {
        None => format!("{} deployment {name}", verb(req.action)),
        Some(t) if !t.contains('/') => format!("{} instance group {t}", verb(req.action)),
        Some(t) => format!("{} instance {t}", verb(req.action)),
    };
    // Ids of matched instances that carry an override of their own: the id
    // wins over its group, so a group action must change it as well.
    let ids: BTreeSet<String> = sel.instances.iter().map(|i| instance_id(i).to_string()).collect();
    let (task, _) = with_task(&st.store, &description, &name, TaskChange::Update, async |c| {
        update_deployment(&st.store, &name, |d| {
            let own: Vec<String> =
                d.spec.instances.keys().filter(|k| ids.contains(*k)).cloned().collect();
            for key in sel.keys.iter().chain(own.iter()) {
                apply_to(req.action, d.spec.instances.entry(key.clone()).or_default());
            }
            c.claim(d)
        })
        .await
    })
    .await?;
    Ok(Json(TaskRef { task }))
}

/// `GET /v1/deployments/<name>/instances[?ps=true]`.
pub(in crate::server::api) async fn list(
    State(st): State<Arc<ApiState>>,
    Path(name): Path<String>,
    Query(q): Query<InstancesQuery>,
) -> Result<Json<Vec<InstanceEntry>>, ApiError> {
    st.store.get::<DeploymentSpec>(None, &name).await?;
    let instances = instances_of(&st, &name).await?;
    let reports: Vec<Option<AgentReport>> = match (&st.director, q.ps) {
        (Some(d), true) => {
            let asks = instances.iter().map(|i| {
                let agent = i.status.agent_id.clone().map(|a| d.agents.for_agent(a));
                async move {
                    let agent = agent?;
                    let report = match tokio::time::timeout(AGENT_TIMEOUT, agent.get_state(false))
                        .await
                    {
                        Ok(Ok(s)) => {
                            AgentReport { state: s.job_state.into(), processes: s.processes }
                        }
                        _ => AgentReport { state: AgentState::Unresponsive, processes: Vec::new() },
                    };
                    Some(report)
                }
            });
            futures::future::join_all(asks).await
        }
        (None, true) => {
            return Err(ApiError::new(
                StatusCode::NOT_IMPLEMENTED,
                "this API has no director attached (ps needs agents)",
            ));
        }
        (_, false) => vec![None; instances.len()],
    };
    Ok(Json(
        instances
            .into_iter()
            .zip(reports)
            .map(|(instance, agent)| InstanceEntry { instance, agent })
            .collect(),
    ))
}

/// `POST /v1/deployments/<name>/logs`: the instance's agent packs its logs
/// into the blobstore; the tarball is streamed back and then removed.
pub(in crate::server::api) async fn logs(
    State(st): State<Arc<ApiState>>,
    Path(name): Path<String>,
    Json(req): Json<LogsRequest>,
) -> Result<Response, ApiError> {
    let Some(director) = &st.director else {
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "this API has no director attached",
        ));
    };
    st.store.get::<DeploymentSpec>(None, &name).await?;
    let instances = instances_of(&st, &name).await?;
    let sel = select(&name, &instances, Some(&req.target))?;
    let [instance] = sel.instances.as_slice() else {
        return Err(ApiError::invalid(
            format!("{} matches {} instances", req.target, sel.instances.len()),
            vec!["target: expected one instance, GROUP/INDEX or GROUP/ID".into()],
        ));
    };
    let Some(agent_id) = instance.status.agent_id.clone() else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("instance {} has no VM", instance.metadata.name),
        ));
    };
    let blob = director
        .agents
        .for_agent(agent_id)
        .fetch_logs()
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, e.to_string()))?;
    let (reader, size) = director.blobs.get(&blob.sha256).await.map_err(internal)?;
    // The tarball is only for this download: removed once the body is
    // dropped (sent, or the client went away).
    let guard = RemoveBlob { blobs: director.blobs.clone(), sha256: blob.sha256.clone() };
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(reader).map(move |chunk| {
        let _keep = &guard;
        chunk
    }));
    Ok((
        [("content-type", "application/gzip".to_string()), ("content-length", size.to_string())],
        body,
    )
        .into_response())
}

/// Removes a blob when dropped.
struct RemoveBlob {
    blobs: Arc<dyn bosh_blobstore::Storage>,
    sha256: String,
}

impl Drop for RemoveBlob {
    fn drop(&mut self) {
        let (blobs, sha) = (self.blobs.clone(), std::mem::take(&mut self.sha256));
        tokio::spawn(async move {
            if let Err(e) = blobs.delete(&sha).await {
                tracing::warn!(blob = %sha, error = %e, "could not remove a log tarball");
            }
        });
    }
}

/// `GET /v1/deployments/<name>/variables`: names, types and ids, never values.
pub(in crate::server::api) async fn variables(
    State(st): State<Arc<ApiState>>,
    Path(name): Path<String>,
) -> Result<Json<Vec<Variable>>, ApiError> {
    st.store.get::<DeploymentSpec>(None, &name).await?;
    Ok(Json(crate::libs::variables::list(&st.store, &name).await.map_err(internal)?))
}

#[cfg(test)]
mod tests {
    use bosh_api::ObjectMeta;

    use super::*;

    fn inst(group: &str, id: &str, index: u32) -> Object<InstanceSpec> {
        Object::new(
            ObjectMeta::scoped("d", format!("{group}/{id}")),
            InstanceSpec { group: group.into(), id: id.into(), index, ..Default::default() },
        )
    }

    /// A target names a group, an instance by id or by index; nothing matching is a 404.
    #[test]
    fn targets_resolve_to_groups_ids_and_indexes() {
        let all = [inst("web", "aaa", 0), inst("web", "bbb", 1), inst("db", "ccc", 0)];
        let s = select("d", &all, Some("web")).unwrap();
        assert_eq!(s.keys, BTreeSet::from(["web".to_string()]));
        assert_eq!(s.instances.len(), 2);
        let s = select("d", &all, Some("web/1")).unwrap();
        assert_eq!(s.keys, BTreeSet::from(["bbb".to_string()]));
        let s = select("d", &all, Some("db/ccc")).unwrap();
        assert_eq!(s.keys, BTreeSet::from(["ccc".to_string()]));
        let s = select("d", &all, None).unwrap();
        assert_eq!(s.keys, BTreeSet::from(["db".to_string(), "web".to_string()]));
        for bad in ["api", "web/2", "db/aaa"] {
            let e = select("d", &all, Some(bad)).unwrap_err();
            assert_eq!(e.status, StatusCode::NOT_FOUND, "{bad}");
        }
        assert_eq!(select("d", &[], None).unwrap_err().status, StatusCode::NOT_FOUND);
    }

    /// Actions set the lifecycle state or bump the restart and recreate counters.
    #[test]
    fn actions_change_the_override() {
        let mut o = InstanceOverride::default();
        apply_to(InstanceAction::Stop, &mut o);
        assert_eq!(o.state, Some(DesiredState::Stopped));
        apply_to(InstanceAction::StopHard, &mut o);
        assert_eq!(o.state, Some(DesiredState::Detached));
        apply_to(InstanceAction::Restart, &mut o);
        apply_to(InstanceAction::Restart, &mut o);
        assert_eq!(o.restart, 2);
        apply_to(InstanceAction::Recreate, &mut o);
        assert_eq!((o.recreate, o.state), (1, Some(DesiredState::Started)));
        let a: InstanceAction = serde_json::from_str("\"stop-hard\"").unwrap();
        assert_eq!(a, InstanceAction::StopHard);
    }
}
