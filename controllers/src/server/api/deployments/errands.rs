//! Errands as changes of desired state.
//!
//! - `GET /v1/deployments/<name>/errands`: the `lifecycle: errand` groups
//!   and the service groups' jobs that have a `bin/run` template;
//! - `POST /v1/deployments/<name>/errands/<errand>/runs`
//!   [`RunErrandRequest`]: a Task `run errand <errand>` and an ErrandRun
//!   named after it; the errand controller runs it and finishes the task;
//! - `GET /v1/deployments/<name>/errand-runs/<run>/logs/<sha256>`: the
//!   job logs an instance of a `downloadLogs` run left in the blobstore,
//!   as a `.tgz` (only blobs the run's results name are served).
//!
//! The API runs nothing itself, so an ErrandRun written by a GitOps tool
//! runs the same way.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bosh_api::objects::{DeploymentSpec, ErrandRunSpec};
use bosh_api::wire::{ErrandEntry, ErrandRunRef, RunErrandRequest};
use bosh_api::{Object, ObjectMeta};

use super::USER;
use crate::libs::lookup::Failure;
use crate::libs::tasks;
use crate::reconcilers::errand;
use crate::server::api::{ApiError, ApiState};

/// `POST /v1/deployments/<name>/errands/<errand>/runs`.
pub(in crate::server::api) async fn run(
    State(st): State<Arc<ApiState>>,
    Path((name, errand_name)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Json<ErrandRunRef>, ApiError> {
    let req: RunErrandRequest = if body.is_empty() {
        RunErrandRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::invalid(
                "request body is not an errand run",
                vec![format!(
                    "{e} (expected {{\"keepAlive\": BOOL, \"whenChanged\": BOOL, \"instances\": [GROUP[/ID]]}})"
                )],
            )
        })?
    };
    let d = st.store.get::<DeploymentSpec>(None, &name).await?;
    // Refused before anything is written: a run of an unknown errand
    // leaves no task behind.
    errand::target(&d.spec.manifest, &errand_name)
        .map_err(|e| ApiError::new(StatusCode::NOT_FOUND, format!("deployment {name}: {e}")))?;
    let task =
        tasks::create_task(&st.store, &format!("run errand {errand_name}"), Some(&name), USER)
            .await?;
    let id = task.spec.id;
    let run = tasks::task_name(id);
    let spec = ErrandRunSpec {
        errand: errand_name,
        task: id,
        keep_alive: req.keep_alive,
        when_changed: req.when_changed,
        instances: req.instances,
        download_logs: req.download_logs,
        timeout_seconds: req.timeout_seconds,
    };
    st.store.create(&Object::new(ObjectMeta::scoped(&name, run.clone()), spec)).await?;
    Ok(Json(ErrandRunRef { task: id, run }))
}

/// `GET /v1/deployments/<name>/errand-runs/<run>/logs/<sha256>`: a log
/// tarball the run recorded. The blob stays (a second download works);
/// the run's results are what make it reachable.
pub(in crate::server::api) async fn logs(
    State(st): State<Arc<ApiState>>,
    Path((name, run, sha256)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let run = st.store.get::<ErrandRunSpec>(Some(&name), &run).await?;
    let named =
        run.status.results.iter().any(|r| r.logs.as_ref().is_some_and(|l| l.sha256 == sha256));
    if !named {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("errand run {name}/{} recorded no logs {sha256}", run.metadata.name),
        ));
    }
    let Some(blobs) = &st.blobstore else {
        return Err(ApiError::new(StatusCode::NOT_IMPLEMENTED, "this API has no blobstore"));
    };
    let (reader, size) = blobs
        .get(&sha256)
        .await
        .map_err(|e| ApiError::new(StatusCode::NOT_FOUND, format!("logs {sha256}: {e}")))?;
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(reader));
    Ok((
        [("content-type", "application/gzip".to_string()), ("content-length", size.to_string())],
        body,
    )
        .into_response())
}

/// `GET /v1/deployments/<name>/errands`.
pub(in crate::server::api) async fn list(
    State(st): State<Arc<ApiState>>,
    Path(name): Path<String>,
) -> Result<Json<Vec<ErrandEntry>>, ApiError> {
    let d = st.store.get::<DeploymentSpec>(None, &name).await?;
    let blocked = |e: Failure| match e {
        Failure::Store(e) => ApiError::from(e),
        Failure::Blocked(b) => ApiError::new(StatusCode::CONFLICT, b.message),
    };
    let raw = crate::libs::variables::interpolate(&st.store, &name, &d.spec.manifest)
        .await
        .map_err(|e| ApiError::new(StatusCode::CONFLICT, e.to_string()))?;
    let dep = crate::libs::resolve::resolve(&st.store, &d, &raw, &format!("deployment {name}"))
        .await
        .map_err(blocked)?;
    let blobs = st.blobstore.clone();
    let mut out: Vec<ErrandEntry> = Vec::new();
    for g in &dep.manifest.instance_groups {
        if g.lifecycle() == bosh_api::manifest::Lifecycle::Errand {
            out.push(ErrandEntry { name: g.name.clone(), colocated: false, groups: vec![] });
            continue;
        }
        for j in &g.jobs {
            let Some(rel) = dep.releases.get(&j.release) else { continue };
            let Some(blob) =
                rel.spec.jobs.iter().find(|x| x.name == j.name).and_then(|x| x.blob.clone())
            else {
                continue;
            };
            let Some(blobs) = &blobs else { continue };
            let bytes = crate::world::blobs::read(blobs, &blob.sha256)
                .await
                .map_err(|e| ApiError::new(StatusCode::CONFLICT, format!("job {}: {e}", j.name)))?;
            let t = tokio::task::spawn_blocking(move || {
                crate::libs::render::JobTemplates::from_job_tgz(&bytes)
            })
            .await
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
            .map_err(|e| ApiError::new(StatusCode::CONFLICT, format!("job {}: {e}", j.name)))?;
            if !t.spec.templates.values().any(|dest| dest == "bin/run") {
                continue;
            }
            match out.iter_mut().find(|e| e.colocated && e.name == j.name) {
                Some(e) => e.groups.push(g.name.clone()),
                None => out.push(ErrandEntry {
                    name: j.name.clone(),
                    colocated: true,
                    groups: vec![g.name.clone()],
                }),
            }
        }
    }
    for e in out.iter_mut().filter(|e| !e.colocated) {
        e.groups = vec![e.name.clone()];
    }
    Ok(Json(out))
}
