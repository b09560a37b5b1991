//! The task controller: every task that carries a change of a deployment
//! ends, even when no controller will ever act on it again.
//!
//! A deployment carries out one change at a time, the one its `spec.task`
//! names; the deployment controller finishes that task. Everything else
//! would stay `queued` or `processing` forever (and `boshctl deploy` would
//! follow it forever), so this controller ends it:
//!
//! - a later task took the deployment's `spec.task` (a concurrent write by
//!   a GitOps tool, a deletion): `cancelled`, "superseded by task N";
//! - the deployment is gone: a deletion task is `done`, any other
//!   `cancelled`, "deployment deleted";
//! - a user asked to cancel it (`spec.cancel`): `cancelled`. The deployment
//!   controller sees its current task cancelled and starts no further
//!   instance; instances already given their new spec finish, as BOSH
//!   finishes the step under way before it honours a cancel;
//! - the task's change was never written (the API crashed between making
//!   the task and writing the deployment): `error` after [`ABANDONED`].
//!
//! Tasks that carry no change (resurrection's "scan and fix") are finished
//! by the controller that made them and are left alone here.

use std::sync::Arc;
use std::time::Duration;

use bosh_api::Object;
use bosh_api::objects::{DeploymentSpec, TaskChange, TaskSpec, TaskState};
use bosh_api::store;
use chrono::Utc;
use tracing::info;

use crate::libs::tasks::set_task_state;
use crate::runtime::{Action, Ctx, Trigger, Wiring, Workers};

/// The task controller: woken by task spec changes (a new task, a cancel)
/// only; it writes the status itself.
pub const WIRING: Wiring =
    Wiring { name: NAME, trigger: Trigger::Generation, workers: Workers::Shared };

/// The controller's name (its election and log name).
pub const NAME: &str = "task";

/// How long a task may wait for the write of its change before it is
/// declared abandoned. The API writes the change right after making the
/// task, so anything this old was lost to a crash.
pub const ABANDONED: Duration = Duration::from_secs(60);

/// How soon an unfinished task is looked at again: a deployment's
/// `spec.task` can move on without the task itself changing.
const POLL: Duration = Duration::from_secs(1);

/// Errors of the task controller.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing the store failed.
    #[error("store: {0}")]
    Store(#[from] store::Error),
}

/// What should become of an unfinished task, given its deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Leave it: its controller will finish it (or it is not yet due).
    Keep,
    /// End it in this state with this result.
    End(TaskState, String),
}

/// Decides an unfinished task's fate from the task and its deployment
/// (`None`: gone). `age` is how long ago the task was made.
pub fn verdict(
    task: &TaskSpec,
    state: TaskState,
    deployment: Option<&DeploymentSpec>,
    age: Duration,
) -> Verdict {
    let Some(change) = task.change else { return Verdict::Keep };
    let Some(d) = deployment else {
        return match change {
            TaskChange::Delete => Verdict::End(TaskState::Done, "deleted".into()),
            // Started: the deployment existed, and is gone.
            TaskChange::Update if state == TaskState::Processing => {
                Verdict::End(TaskState::Cancelled, "deployment deleted".into())
            }
            // A new deployment's task is made before the deployment is
            // written: give the write its time.
            TaskChange::Update if age < ABANDONED && !task.cancel => Verdict::Keep,
            TaskChange::Update => Verdict::End(
                TaskState::Cancelled,
                "deployment deleted (or its change was never written)".into(),
            ),
        };
    };
    match d.task {
        Some(current) if current > task.id => {
            Verdict::End(TaskState::Cancelled, format!("superseded by task {current}"))
        }
        // Current: the deployment controller finishes it, unless the user
        // cancels it (a deletion, once started, is not undone).
        Some(current) if current == task.id => {
            if task.cancel && change == TaskChange::Update {
                Verdict::End(TaskState::Cancelled, "cancelled by user".into())
            } else {
                Verdict::Keep
            }
        }
        // Its change is not written yet (or never will be).
        _ if task.cancel => Verdict::End(TaskState::Cancelled, "cancelled by user".into()),
        _ if age >= ABANDONED => Verdict::End(
            TaskState::Error,
            "abandoned: its change was never written to the deployment".into(),
        ),
        _ => Verdict::Keep,
    }
}

/// Reconciles one Task.
pub async fn reconcile(obj: Arc<Object<TaskSpec>>, ctx: Arc<Ctx<()>>) -> Result<Action, Error> {
    // Finished tasks never change again; tasks without a change are their
    // makers' to finish.
    if obj.status.state.is_finished() || obj.spec.change.is_none() {
        return Ok(Action::await_change());
    }
    let Some(name) = obj.spec.deployment.as_deref() else {
        return Ok(Action::await_change());
    };
    let store = &ctx.store;
    let deployment = store.try_get::<DeploymentSpec>(None, name).await?;
    let age = obj
        .metadata
        .creation_timestamp
        .and_then(|t| (Utc::now() - t).to_std().ok())
        .unwrap_or_default();
    match verdict(&obj.spec, obj.status.state, deployment.as_ref().map(|d| &d.spec), age) {
        Verdict::Keep => Ok(Action::requeue(POLL)),
        Verdict::End(state, result) => {
            info!(task = obj.spec.id, deployment = name, ?state, %result, "ending task");
            set_task_state(store, obj.spec.id, state, &result).await?;
            Ok(Action::await_change())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: u64, change: TaskChange, cancel: bool) -> TaskSpec {
        TaskSpec {
            id,
            description: "x".into(),
            deployment: Some("d".into()),
            change: Some(change),
            cancel,
            ..Default::default()
        }
    }

    fn deployment(task: Option<u64>) -> DeploymentSpec {
        DeploymentSpec { task, ..Default::default() }
    }

    const NOW: Duration = Duration::ZERO;
    const Q: TaskState = TaskState::Queued;
    const P: TaskState = TaskState::Processing;

    /// A later task supersedes an earlier one; the current one is kept.
    #[test]
    fn a_later_task_supersedes_and_the_current_one_is_kept() {
        let d = deployment(Some(7));
        assert_eq!(
            verdict(&task(5, TaskChange::Update, false), Q, Some(&d), NOW),
            Verdict::End(TaskState::Cancelled, "superseded by task 7".into())
        );
        assert_eq!(verdict(&task(7, TaskChange::Update, false), P, Some(&d), NOW), Verdict::Keep);
    }

    /// A gone deployment completes its deletion task and cancels the rest.
    #[test]
    fn a_deleted_deployment_ends_its_tasks() {
        assert_eq!(
            verdict(&task(5, TaskChange::Delete, false), P, None, NOW),
            Verdict::End(TaskState::Done, "deleted".into())
        );
        assert_eq!(
            verdict(&task(4, TaskChange::Update, false), P, None, NOW),
            Verdict::End(TaskState::Cancelled, "deployment deleted".into())
        );
        // Not started: maybe a new deployment's, about to be written.
        assert_eq!(verdict(&task(4, TaskChange::Update, false), Q, None, NOW), Verdict::Keep);
        assert!(matches!(
            verdict(&task(4, TaskChange::Update, false), Q, None, ABANDONED),
            Verdict::End(TaskState::Cancelled, _)
        ));
    }

    /// A task whose change is not written yet waits, unless cancelled or
    /// abandoned; a deletion is not cancelled once current.
    #[test]
    fn unwritten_changes_wait_then_are_abandoned_and_cancel_is_honoured() {
        let d = deployment(Some(3));
        assert_eq!(verdict(&task(9, TaskChange::Update, false), Q, Some(&d), NOW), Verdict::Keep);
        assert!(matches!(
            verdict(&task(9, TaskChange::Update, false), Q, Some(&d), ABANDONED),
            Verdict::End(TaskState::Error, _)
        ));
        assert_eq!(
            verdict(&task(9, TaskChange::Update, true), Q, Some(&d), NOW),
            Verdict::End(TaskState::Cancelled, "cancelled by user".into())
        );
        assert_eq!(
            verdict(&task(3, TaskChange::Update, true), P, Some(&d), NOW),
            Verdict::End(TaskState::Cancelled, "cancelled by user".into())
        );
        assert_eq!(verdict(&task(3, TaskChange::Delete, true), P, Some(&d), NOW), Verdict::Keep);
    }

    /// Tasks that carry no change are left to their makers.
    #[test]
    fn tasks_without_a_change_are_left_alone() {
        let t = TaskSpec { id: 1, deployment: Some("d".into()), ..Default::default() };
        assert_eq!(verdict(&t, P, None, ABANDONED), Verdict::Keep);
    }
}
