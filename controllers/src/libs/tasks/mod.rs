//! Tasks and their events: BOSH's task queue and event log, as objects.
//!
//! [`crate::reconcilers::supersede`] is the controller that ends tasks
//! nobody else will: superseded, cancelled, or left by a deleted deployment.
//!
//! Every accepted change gets a numbered Task; the controllers that carry
//! it out append Events to it (stage, object, started/finished/failed, the
//! error). Task numbers and event order come from counters incremented by
//! compare-and-swap, so concurrent writers never collide. Events are bound
//! to one lease per task log, so they age out of etcd (BOSH keeps tasks 7
//! days) without a sweeper.

use std::time::Duration;

use bosh_api::objects::{CPI_LOG_STAGE, EventSpec, EventState, TaskChange, TaskSpec, TaskState};
use bosh_api::store::{self, LeaseId, Store};
use bosh_api::{Object, ObjectMeta};
use chrono::Utc;
use tokio::sync::OnceCell;

/// How long events are kept.
pub const EVENT_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The object name of task `id` (zero-padded so names sort by number).
pub fn task_name(id: u64) -> String {
    format!("{id:010}")
}

/// Creates a new queued task that a controller will finish itself.
pub async fn create_task(
    store: &Store,
    description: &str,
    deployment: Option<&str>,
    user: &str,
) -> Result<Object<TaskSpec>, store::Error> {
    create(store, description, deployment, user, None).await
}

/// Creates a new queued task carrying out `change` of `deployment`; it is
/// current once the deployment's `spec.task` names it.
pub async fn create_change_task(
    store: &Store,
    description: &str,
    deployment: &str,
    user: &str,
    change: TaskChange,
) -> Result<Object<TaskSpec>, store::Error> {
    create(store, description, Some(deployment), user, Some(change)).await
}

async fn create(
    store: &Store,
    description: &str,
    deployment: Option<&str>,
    user: &str,
    change: Option<TaskChange>,
) -> Result<Object<TaskSpec>, store::Error> {
    let id = store.next_sequence("tasks").await?;
    let spec = TaskSpec {
        id,
        description: description.to_string(),
        deployment: deployment.map(str::to_string),
        user: user.to_string(),
        change,
        cancel: false,
    };
    store.create(&Object::new(ObjectMeta::named(task_name(id)), spec)).await
}

/// Moves a task to `state` (stamping start and finish times), retrying on
/// conflicting status writes. Finished tasks are not changed again.
pub async fn set_task_state(
    store: &Store,
    id: u64,
    state: TaskState,
    result: &str,
) -> Result<(), store::Error> {
    loop {
        let mut t: Object<TaskSpec> = store.get(None, &task_name(id)).await?;
        if t.status.state.is_finished() {
            return Ok(());
        }
        let now = Utc::now();
        if t.status.started_at.is_none() {
            t.status.started_at = Some(now);
        }
        if state.is_finished() {
            t.status.finished_at = Some(now);
        }
        t.status.state = state;
        t.status.result = bosh_api::meta::bounded_message(result.to_string());
        match store.update_status(&t).await {
            Ok(_) => return Ok(()),
            Err(e) if e.is_conflict() => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Appends events to one task.
pub struct EventLog {
    store: Store,
    task: u64,
    lease: OnceCell<LeaseId>,
}

impl EventLog {
    /// The log of task `task`.
    pub fn new(store: Store, task: u64) -> EventLog {
        EventLog { store, task, lease: OnceCell::new() }
    }

    /// The task this log belongs to.
    pub fn task(&self) -> u64 {
        self.task
    }

    /// Records one event. `error` must never carry secret values.
    pub async fn record(
        &self,
        stage: &str,
        object: &str,
        state: EventState,
        error: &str,
    ) -> Result<Object<EventSpec>, store::Error> {
        let lease = *self
            .lease
            .get_or_try_init(|| self.store.grant_lease(EVENT_TTL.as_secs() as i64))
            .await?;
        let seq = self.store.next_sequence(&format!("events/{}", task_name(self.task))).await?;
        let spec = EventSpec {
            task: self.task,
            seq,
            time: Utc::now(),
            stage: stage.to_string(),
            object: object.to_string(),
            state,
            error: bosh_api::meta::bounded_message(error.to_string()),
        };
        let name = format!("{}/{seq:06}", task_name(self.task));
        self.store.create_with_lease(&Object::new(ObjectMeta::named(name), spec), lease).await
    }
}

/// Stores what external CPI calls log with the task they were made for,
/// as events of stage [`CPI_LOG_STAGE`] (`boshctl task N --cpi` shows
/// them): BOSH's per-task `cpi` log. The CPI has redacted and bounded the
/// text already.
pub struct CpiTaskLog {
    store: Store,
    /// The logs of recent tasks, so a task's CPI logs share one lease.
    logs: std::sync::Mutex<std::collections::HashMap<u64, std::sync::Arc<EventLog>>>,
}

/// Tasks whose event logs [`CpiTaskLog`] keeps (then it starts afresh).
const CPI_LOG_TASKS: usize = 64;

impl CpiTaskLog {
    /// Logs into `store`'s tasks.
    pub fn new(store: Store) -> CpiTaskLog {
        CpiTaskLog { store, logs: Default::default() }
    }

    fn log_of(&self, task: u64) -> std::sync::Arc<EventLog> {
        let mut logs = self.logs.lock().unwrap();
        if logs.len() >= CPI_LOG_TASKS && !logs.contains_key(&task) {
            logs.clear();
        }
        let log =
            logs.entry(task).or_insert_with(|| EventLog::new(self.store.clone(), task).into());
        log.clone()
    }
}

#[async_trait::async_trait]
impl crate::world::cpi::call_log::CallLogSink for CpiTaskLog {
    async fn write(&self, task: u64, log: crate::world::cpi::call_log::CallLog) {
        let object = format!("{} ({})", log.method, log.request_id);
        let events = self.log_of(task);
        if let Err(e) = events.record(CPI_LOG_STAGE, &object, EventState::Info, &log.text).await {
            tracing::warn!(task, object, error = %e, "could not store a CPI log");
        }
    }
}
