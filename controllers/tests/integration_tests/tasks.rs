//! Tasks and events against a real etcd.

use bosh_api::Object;
use bosh_api::objects::{EventSpec, EventState, TaskSpec, TaskState};
use bosh_controllers::libs::tasks::{EventLog, create_task, set_task_state, task_name};

use super::setup;

/// Concurrent task creation hands out distinct, increasing numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_numbers_are_unique_under_concurrency() {
    let (_env, store) = setup().await;
    let mut handles = Vec::new();
    for i in 0..20 {
        let s = store.clone();
        handles.push(tokio::spawn(async move {
            create_task(&s, &format!("deploy {i}"), Some("d"), "admin").await.unwrap().spec.id
        }));
    }
    let mut ids = Vec::new();
    for h in handles {
        ids.push(h.await.unwrap());
    }
    ids.sort();
    assert_eq!(ids, (1..=20).collect::<Vec<u64>>());
    let listed = store.list::<TaskSpec>("").await.unwrap().items;
    let listed_ids: Vec<u64> = listed.iter().map(|t| t.spec.id).collect();
    assert_eq!(listed_ids, ids, "zero-padded names list in number order");
}

/// Events keep their order; task state moves forward and stops at a final state.
#[tokio::test]
async fn events_are_ordered_and_task_state_is_final_once_finished() {
    let (_env, store) = setup().await;
    let t = create_task(&store, "create deployment", Some("web"), "admin").await.unwrap();
    let id = t.spec.id;
    let log = EventLog::new(store.clone(), id);
    set_task_state(&store, id, TaskState::Processing, "").await.unwrap();
    log.record("Compiling packages", "hello/abc", EventState::Started, "").await.unwrap();
    log.record("Compiling packages", "hello/abc", EventState::Failed, "exit 2").await.unwrap();
    set_task_state(&store, id, TaskState::Error, "compiling hello failed").await.unwrap();
    set_task_state(&store, id, TaskState::Done, "too late").await.unwrap();

    let events: Vec<Object<EventSpec>> =
        store.list::<EventSpec>(&format!("{}/", task_name(id))).await.unwrap().items;
    let states: Vec<EventState> = events.iter().map(|e| e.spec.state).collect();
    assert_eq!(states, [EventState::Started, EventState::Failed]);
    assert_eq!(events[1].spec.error, "exit 2");
    assert!(events[0].spec.seq < events[1].spec.seq);
    let t: Object<TaskSpec> = store.get(None, &task_name(id)).await.unwrap();
    assert_eq!(t.status.state, TaskState::Error, "a finished task stays finished");
    assert_eq!(t.status.result, "compiling hello failed");
    assert!(t.status.started_at.is_some() && t.status.finished_at.is_some());
}
