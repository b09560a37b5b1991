//! Every task ends, and one deployment's trouble never holds up another's
//! (issue 12): overwritten, deleted-under and cancelled changes end their
//! tasks; a template that loops until the render timeout fails its task
//! once, is not rendered again for the same inputs, and does not hold the
//! address planning of another deployment.

use std::time::Duration;

use bosh_api::Object;
use bosh_api::objects::{ConditionType, Reason};
use bosh_api::objects::{DeploymentSpec, TaskChange, TaskSpec, TaskState};
use bosh_controllers::libs::tasks::task_name;
use bosh_controllers::testing::{Harness, HarnessOptions};
use bosh_test_utils::eventually;

use super::compile::{example_release, write};
use super::deploy::{DeployHarness, manifest, world};

async fn task(h: &Harness, id: u64) -> Object<TaskSpec> {
    h.store.get(None, &task_name(id)).await.unwrap()
}

/// Two writes of different manifests: the first task is cancelled as
/// superseded and the deployment ends as the second says; a change
/// deleted under way is cancelled and the deletion is done; a cancelled
/// change ends cancelled and leaves the deployment halted until the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overwritten_deleted_and_cancelled_changes_end_their_tasks() {
    let h = world().await;
    let tmp = tempfile::tempdir().unwrap();
    h.upload_release(&example_release(tmp.path())).await.unwrap();
    h.upload_stemcell().await.unwrap();

    let first = manifest("web", 1, "first", 0);
    let second = manifest("web", 2, "second", 0);
    let t1 = h.change_with("web", TaskChange::Update, |s| s.manifest = first.clone()).await;
    let t2 = h.change_with("web", TaskChange::Update, |s| s.manifest = second.clone()).await;
    let (state, result) = h.task_end(t1).await;
    assert_eq!(
        (state, result.as_str()),
        (TaskState::Cancelled, &*format!("superseded by task {t2}"))
    );
    let (state, result) = h.task_end(t2).await;
    assert_eq!(state, TaskState::Done, "{result}");
    assert_eq!(h.instances("web").await.len(), 2, "the second manifest won");

    // A change, then a deletion before it finishes.
    let third = manifest("web", 3, "third", 0);
    let t3 = h.change_with("web", TaskChange::Update, |s| s.manifest = third.clone()).await;
    let t4 = h.change_with("web", TaskChange::Delete, |_| {}).await;
    h.store.delete::<DeploymentSpec>(None, "web", None).await.unwrap();
    let (state, result) = h.task_end(t3).await;
    assert_eq!(state, TaskState::Cancelled, "{result}");
    assert!(
        result == format!("superseded by task {t4}") || result.starts_with("deployment deleted"),
        "{result}"
    );
    assert_eq!(h.task_end(t4).await.0, TaskState::Done);
    assert!(h.instances("web").await.is_empty());

    // A cancelled change: the task ends cancelled, the deployment says so.
    let t5 = h.change_with("web", TaskChange::Update, |s| s.manifest = first.clone()).await;
    let mut t = task(&h, t5).await;
    t.spec.cancel = true;
    h.store.update_spec(&t).await.unwrap();
    let (state, result) = h.task_end(t5).await;
    assert_eq!((state, result.as_str()), (TaskState::Cancelled, "cancelled by user"));
    let store = h.store.clone();
    let reason = eventually(Duration::from_secs(30), "the deployment to report the cancel", || {
        let store = store.clone();
        async move {
            let d: Object<DeploymentSpec> = store.get(None, "web").await.ok()?;
            let c = bosh_api::meta::find_condition(&d.status.conditions, ConditionType::Ready)?;
            (c.reason == Reason::Cancelled).then(|| c.message.clone())
        }
    })
    .await
    .unwrap();
    assert!(reason.contains(&format!("task {t5} was cancelled")), "{reason}");
    h.stop().await.unwrap();
}

/// A job template that loops until the render timeout: its task fails with
/// the timeout once; another deployment deploys meanwhile (its planning is
/// not held by the stuck render); and later reconciles of the failed
/// deployment run no Ruby for the same inputs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_that_loops_fails_once_and_holds_up_no_other_deployment() {
    let render_timeout = Duration::from_secs(40);
    let h = Harness::start(HarnessOptions {
        render: bosh_controllers::libs::render::Limits {
            timeout: render_timeout,
            ..Default::default()
        },
        ..HarnessOptions::new()
    })
    .await
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let release = example_release(tmp.path());
    // The same job, but a greeting of "spin" makes its template loop.
    let erb =
        std::fs::read_to_string(release.join("jobs/hello/templates/config.json.erb")).unwrap();
    write(
        &release,
        "jobs/hello/templates/config.json.erb",
        &format!("<% loop {{}} if p(\"greeting\") == \"spin\" -%>\n{erb}"),
    );
    h.upload_release(&release).await.unwrap();
    h.upload_stemcell().await.unwrap();

    let stuck = h
        .change_with("stuck", TaskChange::Update, |s| s.manifest = manifest("stuck", 1, "spin", 0))
        .await;
    let other = h
        .change_with("other", TaskChange::Update, |s| s.manifest = manifest("other", 1, "fine", 0))
        .await;
    let (state, result) = h.task_end(other).await;
    assert_eq!(state, TaskState::Done, "{result}");
    let t = task(&h, stuck).await;
    assert!(
        !t.status.state.is_finished(),
        "the other deployment finished while the stuck one still rendered: {:?}",
        t.status
    );
    let (state, result) = h.task_end(stuck).await;
    assert_eq!(state, TaskState::Error);
    assert!(result.contains("took longer than"), "{result}");

    // Later passes over "stuck" (resync every 2 s, backoff) render nothing:
    // while "other" rolls out a change (one render), Ruby runs once.
    let runs = bosh_controllers::libs::render::ruby_runs();
    let again = h
        .change_with("other", TaskChange::Update, |s| {
            s.manifest = manifest("other", 1, "changed", 0)
        })
        .await;
    let (state, result) = h.task_end(again).await;
    assert_eq!(state, TaskState::Done, "{result}");
    assert_eq!(
        bosh_controllers::libs::render::ruby_runs(),
        runs + 1,
        "only the change was rendered"
    );
    let t = task(&h, stuck).await;
    assert_eq!(t.status.state, TaskState::Error, "a failed task stays failed");
    h.stop().await.unwrap();
}
