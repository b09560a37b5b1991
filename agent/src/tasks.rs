//! Long operations as agent tasks, and request de-duplication.
//!
//! A long operation answers at once with a task id and keeps running in the
//! background; `get_task` reads its outcome, `cancel_task` aborts it (its
//! child processes are killed with it). Finished tasks and replies to
//! recent request ids are kept for a bounded number of entries, enough for
//! a director to poll and to retry.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};

use bosh_api::agent::{Reply, TaskHandle};
use futures::FutureExt;
use serde_json::Value;
use tokio::sync::OnceCell;
use tokio::task::AbortHandle;

use crate::error::{Error, Result};

/// How many finished tasks and request ids are remembered.
const REMEMBERED: usize = 1024;

enum Entry {
    Running(AbortHandle),
    Done(Result<Value, String>),
}

#[derive(Default)]
struct Inner {
    tasks: HashMap<String, Entry>,
    finished: VecDeque<String>,
}

/// The agent's tasks.
#[derive(Clone, Default)]
pub struct Tasks {
    inner: Arc<Mutex<Inner>>,
}

impl Tasks {
    /// Runs `fut` as a new task and returns its handle.
    pub fn spawn<F>(&self, method: &'static str, fut: F) -> TaskHandle
    where
        F: Future<Output = Result<Value>> + Send + 'static,
    {
        let id = uuid::Uuid::new_v4().to_string();
        let inner = self.inner.clone();
        // Hold the lock across spawn so the task cannot finish before it is registered.
        let mut guard = self.inner.lock().expect("lock");
        let task_id = id.clone();
        let handle = tokio::spawn(async move {
            // A bug in one method must not leave its task "running" forever.
            let out = match std::panic::AssertUnwindSafe(fut).catch_unwind().await {
                Ok(r) => r.map_err(|e| e.chain()),
                Err(_) => Err(format!("{method} panicked (an agent bug; see its log)")),
            };
            if let Err(message) = &out {
                tracing::warn!(task = %task_id, method, %message, "task failed");
            } else {
                tracing::info!(task = %task_id, method, "task done");
            }
            finish(&inner, &task_id, out);
        });
        guard.tasks.insert(id.clone(), Entry::Running(handle.abort_handle()));
        TaskHandle::running(id)
    }

    /// The reply `get_task` gives for `id`.
    pub fn get(&self, id: &str) -> Reply {
        match self.inner.lock().expect("lock").tasks.get(id) {
            None => Reply::exception(Error::TaskNotFound(id.into()).to_string()),
            Some(Entry::Running(_)) => {
                Reply::Value(serde_json::to_value(TaskHandle::running(id)).expect("serializable"))
            }
            Some(Entry::Done(Ok(v))) => Reply::Value(v.clone()),
            Some(Entry::Done(Err(m))) => Reply::exception(m.clone()),
        }
    }

    /// Aborts a running task; a finished one is left as it is.
    pub fn cancel(&self, id: &str) -> Result<()> {
        let abort = match self.inner.lock().expect("lock").tasks.get(id) {
            None => return Err(Error::TaskNotFound(id.into())),
            Some(Entry::Running(a)) => a.clone(),
            Some(Entry::Done(_)) => return Ok(()),
        };
        abort.abort();
        finish(&self.inner, id, Err(Error::Cancelled(id.into()).to_string()));
        Ok(())
    }
}

fn finish(inner: &Mutex<Inner>, id: &str, out: Result<Value, String>) {
    let mut g = inner.lock().expect("lock");
    if matches!(g.tasks.get(id), Some(Entry::Done(_))) {
        return; // cancelled first
    }
    g.tasks.insert(id.to_string(), Entry::Done(out));
    g.finished.push_back(id.to_string());
    while g.finished.len() > REMEMBERED {
        if let Some(old) = g.finished.pop_front() {
            g.tasks.remove(&old);
        }
    }
}

/// The reply to one request id, filled once.
type ReplyCell = Arc<OnceCell<Reply>>;

/// Reply cells by request id, and the ids oldest first (for eviction).
type Recent = (HashMap<String, ReplyCell>, VecDeque<String>);

/// Replies by request id: a retried request gets the first one's reply
/// (for a long operation, the same task id) and never runs twice, even
/// while the first is still being answered.
#[derive(Clone, Default)]
pub struct Dedup {
    inner: Arc<Mutex<Recent>>,
}

impl Dedup {
    /// The cell holding the reply to `request_id`, created if new.
    pub fn cell(&self, request_id: &str) -> Arc<OnceCell<Reply>> {
        let mut g = self.inner.lock().expect("lock");
        let (map, order) = &mut *g;
        if let Some(c) = map.get(request_id) {
            return c.clone();
        }
        let c = Arc::new(OnceCell::new());
        map.insert(request_id.to_string(), c.clone());
        order.push_back(request_id.to_string());
        while order.len() > REMEMBERED {
            if let Some(old) = order.pop_front() {
                map.remove(&old);
            }
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A task reports running, then its result; unknown ids are an exception.
    #[tokio::test]
    async fn task_reports_running_then_result() {
        let tasks = Tasks::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let h = tasks.spawn("test", async move {
            let _ = rx.await;
            Ok(Value::from("done"))
        });
        assert!(
            matches!(tasks.get(&h.agent_task_id), Reply::Value(v) if TaskHandle::from_value(&v).is_some())
        );
        tx.send(()).unwrap();
        let got =
            bosh_test_utils::eventually(std::time::Duration::from_secs(5), "task done", || {
                let r = tasks.get(&h.agent_task_id);
                async move { (r == Reply::Value("done".into())).then_some(()) }
            })
            .await;
        got.unwrap();
        assert!(matches!(tasks.get("nope"), Reply::Exception(_)));
    }

    /// A cancelled task answers with a cancellation exception.
    #[tokio::test]
    async fn cancelled_task_reports_cancellation() {
        let tasks = Tasks::default();
        let h = tasks.spawn("test", futures::future::pending());
        tasks.cancel(&h.agent_task_id).unwrap();
        match tasks.get(&h.agent_task_id) {
            Reply::Exception(e) => assert!(e.message.contains("cancelled"), "{}", e.message),
            r => panic!("unexpected {r:?}"),
        }
    }
}
