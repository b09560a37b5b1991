//! `POST /v1/task-cancellations/<id>`: asks for a task's cancellation by setting
//! its `spec.cancel` (desired state, as `boshctl cancel-task` or a GitOps
//! write would); the task controller ends it and the deployment controller
//! starts nothing further for it. An errand run's task can be cancelled
//! too: the errand controller stops the run and ends the task.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use bosh_api::Object;
use bosh_api::objects::{ErrandRunSpec, TaskChange, TaskSpec};
use bosh_api::wire::TaskCancellation;

use super::{ApiError, ApiState};
use crate::libs::tasks::task_name;

/// How often the compare-and-swap is retried after losing a race.
const CAS_ATTEMPTS: usize = 10;

/// Whether `t` reports an errand run (the run is named after its task).
async fn errand_run_of(st: &ApiState, t: &Object<TaskSpec>) -> Result<bool, ApiError> {
    let Some(dep) = t.spec.deployment.as_deref() else { return Ok(false) };
    let run = st.store.try_get::<ErrandRunSpec>(Some(dep), &t.metadata.name).await?;
    Ok(run.is_some())
}

/// `POST /v1/task-cancellations/<id>`.
pub(super) async fn cancel(
    State(st): State<Arc<ApiState>>,
    Path(id): Path<u64>,
) -> Result<Json<TaskCancellation>, ApiError> {
    for _ in 0..CAS_ATTEMPTS {
        let mut t = st.store.get::<TaskSpec>(None, &task_name(id)).await?;
        if t.status.state.is_finished() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("task {id} has already ended ({:?})", t.status.state).to_lowercase(),
            ));
        }
        match t.spec.change {
            // An errand run's task: the errand controller stops the run.
            None if errand_run_of(&st, &t).await? => {}
            None => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    format!(
                        "task {id} ({}) is run by the director and cannot be cancelled",
                        t.spec.description
                    ),
                ));
            }
            Some(TaskChange::Delete) => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    format!("task {id} deletes a deployment; a deletion cannot be cancelled"),
                ));
            }
            Some(TaskChange::Update) => {}
        }
        if t.spec.cancel {
            return Ok(Json(TaskCancellation { task: id, cancel: true }));
        }
        t.spec.cancel = true;
        match st.store.update_spec(&t).await {
            Ok(_) => return Ok(Json(TaskCancellation { task: id, cancel: true })),
            Err(e) if e.is_conflict() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::new(StatusCode::CONFLICT, format!("task {id} kept changing; try again")))
}
