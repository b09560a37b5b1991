//! The operator's deployment routes, as the bosh CLI's verbs need them.
//!
//! - `POST /v1/deployments/<name>/apply` `{manifest, cloudConfigs?, options, dryRun}`:
//!   validate a YAML manifest, then write it with a new Task (`deploy`);
//!   with `dryRun`, answer the diff against the stored manifest instead;
//! - `DELETE /v1/deployments/<name>[?force=true]`: a Task, then deletion
//!   (the deployment controller's finalizer finishes both);
//! - `POST /v1/deployments/<name>/instances/actions` `{action, target?}`:
//!   start, stop, stop --hard, restart, recreate ([`instances`]);
//! - `GET /v1/deployments/<name>/instances[?ps=true]`, `POST .../logs`,
//!   `GET .../variables` ([`instances`]);
//! - `POST|GET /v1/deployments/<name>/cloud-check`, `POST .../cloud-check/resolutions`:
//!   scan for problems and choose their resolutions ([`cloud_check`]);
//! - `GET /v1/deployments/<name>/errands`, `POST .../errands/<errand>/runs`:
//!   list errands and request a run ([`errands`]);
//! - `POST /v1/deployments/<name>/ssh` `{command, target, params}`: users for
//!   `boshctl ssh` and `scp` on the targeted instances ([`ssh`]).
//!
//! Every write is a change of the Deployment's spec (compare-and-swap,
//! retried on conflict) plus the number of the Task that carries it out
//! in `spec.task`: the API never acts on VMs itself, so a GitOps write of
//! the same spec achieves the same. Validation runs before anything is
//! written, so a bad manifest leaves neither a Task nor a Deployment behind.
//! Manifests hold `((placeholders))`, never variable values: nothing here
//! resolves variables.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bosh_api::objects::{DeploymentSpec, TaskChange, TaskSpec, TaskState};
use bosh_api::store::Store;
use bosh_api::wire::{Applied, ApplyDiff, ApplyRequest, DeleteDeploymentQuery, DeploymentDeleted};
use bosh_api::{Object, ObjectMeta};
use serde_json::Value;

use super::{ApiError, ApiState};
use crate::libs::tasks;
use crate::reconcilers::validate;

pub(super) mod cloud_check;
pub(super) mod errands;
pub(super) mod instances;
pub(super) mod ssh;

/// The user tasks are recorded for (the API has one token, hence one user).
const USER: &str = "admin";

use crate::reconcilers::instance::FORCE_DELETE as FORCE_DELETE_ANNOTATION;

/// How often a compare-and-swap is retried after losing a race.
const CAS_ATTEMPTS: usize = 10;

pub(super) fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// 422 for a deployment name in the URL that breaks the one name rule
/// ([`bosh_api::names`]), naming the rule, before anything is read or written.
pub(super) fn check_deployment_name(name: &str) -> Result<(), ApiError> {
    bosh_api::names::check_name(name).map_err(|e| {
        ApiError::invalid("invalid deployment name", vec![format!("deployment name: {e}")])
    })
}

fn deleting(name: &str) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, format!("deployment {name} is being deleted"))
}

/// A diff of two manifests as bosh prints it: YAML lines prefixed with
/// `+ `, `- ` or two spaces, three lines of context around each change,
/// and `...` between distant changes. `Null` stands for "no manifest".
/// Both sides print as `bosh interpolate` prints them (sorted keys, the
/// manifest text the bosh CLI sends), so `.inf` reads `.inf`.
pub fn manifest_diff(old: &Value, new: &Value) -> Result<Vec<String>, bosh_api::yaml::YamlError> {
    let yaml = |v: &Value| -> Result<String, bosh_api::yaml::YamlError> {
        Ok(if v.is_null() { String::new() } else { bosh_api::yaml::to_bosh_string(v) })
    };
    let (old, new) = (yaml(old)?, yaml(new)?);
    let diff = similar::TextDiff::from_lines(&old, &new);
    let mut out = Vec::new();
    for (i, group) in diff.grouped_ops(3).iter().enumerate() {
        if i > 0 {
            out.push("...".to_string());
        }
        for op in group {
            for change in diff.iter_changes(op) {
                let sign = match change.tag() {
                    similar::ChangeTag::Delete => "- ",
                    similar::ChangeTag::Insert => "+ ",
                    similar::ChangeTag::Equal => "  ",
                };
                out.push(format!("{sign}{}", change.value().trim_end_matches('\n')));
            }
        }
    }
    Ok(out)
}

/// Runs `edit` on the current Deployment and writes it back by
/// compare-and-swap, re-reading and re-running `edit` after a lost race.
/// `None` from the read is passed to `edit` as well, which may create.
async fn write_deployment(
    store: &Store,
    name: &str,
    mut edit: impl FnMut(Option<Object<DeploymentSpec>>) -> Result<Object<DeploymentSpec>, ApiError>,
) -> Result<Object<DeploymentSpec>, ApiError> {
    for _ in 0..CAS_ATTEMPTS {
        let current = store.try_get::<DeploymentSpec>(None, name).await?;
        let create = current.is_none();
        let next = edit(current)?;
        let written =
            if create { store.create(&next).await } else { store.update_spec(&next).await };
        match written {
            Ok(saved) => return Ok(saved),
            Err(e @ bosh_api::store::Error::AlreadyExists { .. })
            | Err(e @ bosh_api::store::Error::Conflict { .. }) => {
                tracing::debug!(deployment = name, error = %e, "lost a race, retrying");
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::new(StatusCode::CONFLICT, format!("deployment {name} kept changing; try again")))
}

/// Changes an existing Deployment's spec with `edit` (compare-and-swap,
/// retried). 404 when it does not exist, 409 while it is being deleted.
pub(super) async fn update_deployment(
    store: &Store,
    name: &str,
    mut edit: impl FnMut(&mut Object<DeploymentSpec>) -> Result<(), ApiError>,
) -> Result<Object<DeploymentSpec>, ApiError> {
    write_deployment(store, name, |current| {
        let Some(mut d) = current else {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("deployment {name} not found"),
            ));
        };
        if d.metadata.is_deleting() {
            return Err(deleting(name));
        }
        edit(&mut d)?;
        Ok(d)
    })
    .await
}

/// The right to write a change of a deployment under a task, handed by
/// [`with_task`] to the write. One change at a time: an update is refused
/// while another task's change of the same deployment is in progress (the
/// operator waits for it, or cancels it); a deletion supersedes whatever
/// is in progress.
#[derive(Debug, Clone, Copy)]
pub(super) struct Claim {
    /// The new task's number.
    pub task: u64,
    /// The deployment's `spec.task` when the task was made; an update whose
    /// deployment names another task by the time it is written lost a race
    /// with a concurrent change.
    seen: Option<u64>,
    change: TaskChange,
}

impl Claim {
    /// Makes the task current on `d`, unless a concurrent change got there
    /// first (409, naming it).
    pub fn claim(&self, d: &mut Object<DeploymentSpec>) -> Result<(), ApiError> {
        if self.change == TaskChange::Update
            && d.spec.task != self.seen
            && let Some(other) = d.spec.task
        {
            return Err(busy(&d.metadata.name, other, "a concurrent change"));
        }
        d.spec.task = Some(self.task);
        Ok(())
    }
}

fn busy(name: &str, task: u64, what: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        format!(
            "deployment {name} is busy with task {task} ({what}); wait for it (`boshctl task {task} --follow`) or cancel it (`boshctl cancel-task {task}`)"
        ),
    )
}

/// Creates a task for a change of `deployment`, then makes the change with
/// `write`. When the write fails the task is marked failed, so no task is
/// left queued forever for a change that never happened. An update is
/// refused (409, naming the holder) while another change is in progress.
pub(super) async fn with_task<T>(
    store: &Store,
    description: &str,
    deployment: &str,
    change: TaskChange,
    write: impl AsyncFnOnce(Claim) -> Result<T, ApiError>,
) -> Result<(u64, T), ApiError> {
    let seen = store.try_get::<DeploymentSpec>(None, deployment).await?.and_then(|d| d.spec.task);
    if change == TaskChange::Update
        && let Some(current) = seen
        && let Some(t) = store.try_get::<TaskSpec>(None, &tasks::task_name(current)).await?
        && !t.status.state.is_finished()
    {
        return Err(busy(deployment, current, &t.spec.description));
    }
    let task = tasks::create_change_task(store, description, deployment, USER, change).await?;
    let id = task.spec.id;
    match write(Claim { task: id, seen, change }).await {
        Ok(t) => Ok((id, t)),
        Err(e) => {
            if let Err(mark) = tasks::set_task_state(store, id, TaskState::Error, &e.error).await {
                tracing::warn!(task = id, error = %mark, "could not mark an abandoned task failed");
            }
            Err(e)
        }
    }
}

/// `POST /v1/deployments/<name>/apply`.
pub(super) async fn apply(
    State(st): State<Arc<ApiState>>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    check_deployment_name(&name)?;
    let req: ApplyRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::invalid("request body is not an apply request", vec![e.to_string()])
    })?;
    let manifest = bosh_api::yaml::parse_value(&req.manifest, "manifest")
        .map_err(|e| ApiError::invalid("the manifest is not valid YAML", vec![e.to_string()]))?;
    if !manifest.is_object() {
        return Err(ApiError::invalid(
            "the manifest is not a mapping",
            vec!["manifest: expected a mapping with name, releases, stemcells, ...".into()],
        ));
    }
    let manifest_name = manifest.get("name").and_then(Value::as_str).unwrap_or_default();
    if manifest_name != name {
        return Err(ApiError::invalid(
            "name mismatch",
            vec![format!(
                "manifest: name: expected {name:?} (the deployment named in the request), found {manifest_name:?}"
            )],
        ));
    }
    let current = st.store.try_get::<DeploymentSpec>(None, &name).await?;
    if current.as_ref().is_some_and(|c| c.metadata.is_deleting()) {
        return Err(deleting(&name));
    }
    let cloud_configs = req
        .cloud_configs
        .clone()
        .or_else(|| current.as_ref().map(|c| c.spec.cloud_configs.clone()))
        .unwrap_or_default();
    let candidate = Object::new(
        ObjectMeta::named(&name),
        DeploymentSpec {
            manifest: manifest.clone(),
            cloud_configs: cloud_configs.clone(),
            options: req.options.clone(),
            ..Default::default()
        },
    );
    let errors = validate::check_deployment(&st.store, &candidate, &st.deployment_limits).await?;
    if !errors.is_empty() {
        return Err(ApiError::invalid(format!("deployment {name} is invalid"), errors));
    }
    // Refused before the Task is created: a manifest etcd cannot hold
    // changes nothing (the store would refuse the write anyway, after).
    st.store.check_fits(&candidate)?;

    if req.dry_run {
        let old = current.as_ref().map(|c| c.spec.manifest.clone()).unwrap_or(Value::Null);
        let diff = manifest_diff(&old, &manifest).map_err(internal)?;
        let changes = current
            .as_ref()
            .is_none_or(|c| c.spec.manifest != manifest || c.spec.cloud_configs != cloud_configs);
        return Ok(Json(ApplyDiff { diff, changes }).into_response());
    }

    let description = if current.is_some() { "update deployment" } else { "create deployment" };
    let (task, saved) = with_task(&st.store, description, &name, TaskChange::Update, async |c| {
        write_deployment(&st.store, &name, |current| match current {
            None => {
                let mut d = candidate.clone();
                c.claim(&mut d)?;
                if req.options.recreate {
                    bump_recreate(&mut d.spec);
                }
                Ok(d)
            }
            Some(d) if d.metadata.is_deleting() => Err(deleting(&name)),
            Some(mut d) => {
                d.spec.manifest = manifest.clone();
                d.spec.cloud_configs = cloud_configs.clone();
                d.spec.options = req.options.clone();
                c.claim(&mut d)?;
                if req.options.recreate {
                    bump_recreate(&mut d.spec);
                }
                Ok(d)
            }
        })
        .await
    })
    .await?;
    let status = if current.is_none() { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(Applied { task, deployment: saved })).into_response())
}

/// `--recreate` as a change of desired state: every instance group's (and
/// every instance's own) recreate counter goes up, so the controllers
/// recreate each VM once, and a later apply without the flag does not.
fn bump_recreate(d: &mut DeploymentSpec) {
    let groups: Vec<String> = d.manifest["instance_groups"]
        .as_array()
        .map(|gs| gs.iter().filter_map(|g| g["name"].as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    for g in groups {
        d.instances.entry(g).or_default();
    }
    for o in d.instances.values_mut() {
        o.recreate += 1;
    }
}

/// `DELETE /v1/deployments/<name>[?force=true]`.
pub(super) async fn delete(
    State(st): State<Arc<ApiState>>,
    Path(name): Path<String>,
    Query(q): Query<DeleteDeploymentQuery>,
) -> Result<Json<DeploymentDeleted>, ApiError> {
    check_deployment_name(&name)?;
    // 404 before a task is made for nothing.
    st.store.get::<DeploymentSpec>(None, &name).await?;
    let (task, gone) =
        with_task(&st.store, "delete deployment", &name, TaskChange::Delete, async |c| {
            write_deployment(&st.store, &name, |current| {
                let Some(mut d) = current else {
                    return Err(ApiError::new(
                        StatusCode::NOT_FOUND,
                        format!("deployment {name} not found"),
                    ));
                };
                c.claim(&mut d)?;
                if q.force {
                    d.metadata.annotations.insert(FORCE_DELETE_ANNOTATION.into(), "true".into());
                }
                Ok(d)
            })
            .await?;
            Ok(st.store.delete::<DeploymentSpec>(None, &name, None).await?)
        })
        .await?;
    if gone {
        // No finalizer: no controller held it, so nothing is left to clean
        // up and nobody else would finish the task.
        tasks::set_task_state(&st.store, task, TaskState::Done, "deleted").await?;
    }
    Ok(Json(DeploymentDeleted { task, deleted: gone, finalizing: !gone }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A changed value shows as a removed and an added line with context; distant changes are split by `...`.
    #[test]
    fn recreate_bumps_every_group_and_instance_override_once() {
        let mut d = bosh_api::objects::DeploymentSpec {
            manifest: json!({"instance_groups": [{"name": "web"}, {"name": "db"}]}),
            ..Default::default()
        };
        d.instances.insert("4f1c".into(), Default::default());
        super::bump_recreate(&mut d);
        super::bump_recreate(&mut d);
        let counts: Vec<(&str, u64)> =
            d.instances.iter().map(|(k, o)| (k.as_str(), o.recreate)).collect();
        assert_eq!(counts, [("4f1c", 2), ("db", 2), ("web", 2)]);
    }

    #[test]
    fn manifest_diff_shows_changed_lines_with_context() {
        let old = json!({"name": "d", "a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6, "g": 7, "h": 8, "i": 9});
        let mut new = old.clone();
        new["a"] = json!(10);
        new["i"] = json!("((secret))");
        let diff = manifest_diff(&old, &new).unwrap();
        assert_eq!(
            diff,
            [
                "- a: 1",
                "+ a: 10",
                "  b: 2",
                "  c: 3",
                "  d: 4",
                "...",
                "  f: 6",
                "  g: 7",
                "  h: 8",
                "- i: 9",
                "+ i: ((secret))",
                "  name: d",
            ]
        );
    }

    /// Equal manifests have an empty diff; a new deployment is all additions.
    #[test]
    fn manifest_diff_of_equal_manifests_is_empty_and_of_a_new_one_all_added() {
        let m = json!({"name": "d", "instance_groups": [{"name": "web", "instances": 1}]});
        assert!(manifest_diff(&m, &m).unwrap().is_empty());
        let added = manifest_diff(&Value::Null, &m).unwrap();
        assert!(!added.is_empty());
        assert!(added.iter().all(|l| l.starts_with("+ ")), "{added:?}");
    }
}
