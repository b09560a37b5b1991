//! F7: an ERB template that loops forever, prints without end or raises.

use std::time::{Duration, Instant};

use bosh_api::objects::{TaskChange, TaskState};
use bosh_controllers::testing::{Harness, HarnessOptions};

use super::super::compile::{example_release, write};
use super::super::deploy::{DeployHarness, manifest};
use super::{iterations, report};

/// F7: three deployments of one release whose template misbehaves on a
/// greeting — `spin` loops, `flood` prints without end, `raise` raises —
/// beside one that greets normally. The loop is killed at the render
/// timeout, the flood at the output cap long before it, the raise at
/// once; each fails its own task with an error naming the instance and
/// the limit or the template's line, and the normal deployment deploys
/// meanwhile. The timeout is 10 s here (boshd's default is 60 s; the
/// matrix's target is 30 s); under `FAULTS_FULL=1` it is the target, 30 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_f7_a_template_that_loops_floods_or_raises_fails_its_own_task_at_its_limit() {
    let timeout = Duration::from_secs(if iterations(0, 1) == 1 { 30 } else { 10 });
    let max_output = 16 << 20;
    let h = Harness::start(HarnessOptions {
        render: bosh_controllers::libs::render::Limits { timeout, max_output },
        ..HarnessOptions::new()
    })
    .await
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let release = example_release(tmp.path());
    let erb =
        std::fs::read_to_string(release.join("jobs/hello/templates/config.json.erb")).unwrap();
    write(
        &release,
        "jobs/hello/templates/config.json.erb",
        &format!(
            "<% g = p(\"greeting\") -%>\n\
             <% loop {{}} if g == \"spin\" -%>\n\
             <% if g == \"flood\" then loop {{ %>xxxxxxxxxxxxxxxx<% }} end -%>\n\
             <% raise \"no greeting for #{{g}}\" if g == \"raise\" -%>\n{erb}"
        ),
    );
    h.upload_release(&release).await.unwrap();
    h.upload_stemcell().await.unwrap();

    let started = Instant::now();
    let mut tasks = Vec::new();
    for bad in ["spin", "flood", "raise", "fine"] {
        let name = format!("f7-{bad}");
        let m = manifest(&name, 1, bad, 0);
        tasks.push((
            bad,
            h.change_with(&name, TaskChange::Update, |s| s.manifest = m.clone()).await,
        ));
    }
    // Each task's end is timed on its own, all waited for at once.
    let ends = futures::future::join_all(tasks.iter().map(|(bad, task)| {
        let h = &h;
        async move {
            let (state, result) = h.task_end(*task).await;
            (*bad, state, result, started.elapsed())
        }
    }))
    .await;
    let mut figures = Vec::new();
    for (bad, state, result, took) in ends {
        figures.push(format!("{bad}: {state:?} after {took:.1?}"));
        if bad == "fine" {
            assert_eq!(state, TaskState::Done, "{result}");
            continue;
        }
        assert_eq!(state, TaskState::Error, "{bad}: {result}");
        // The error says which instance's template failed, and why.
        assert!(result.contains("web/"), "{bad}: the instance is named: {result}");
        match bad {
            "spin" => {
                assert!(result.contains("of instance 'web/0' took longer than"), "{result}");
                assert!(took >= timeout, "killed before its timeout, after {took:?}");
                assert!(
                    took < timeout + Duration::from_secs(20),
                    "killed {took:?} after the start, timeout {timeout:?}"
                );
            }
            "flood" => {
                assert!(result.contains(&format!("exceeds {max_output} bytes")), "{result}");
                assert!(took < timeout, "the flood was stopped by its cap, not the timeout");
            }
            // Property values are redacted from template errors.
            _ => assert!(result.contains("(line 4: no greeting for <redacted>)"), "{result}"),
        }
    }
    // The failures are their deployments' own: the normal one runs.
    assert_eq!(h.instances("f7-fine").await.len(), 1);
    for bad in ["spin", "flood", "raise"] {
        assert!(h.instances(&format!("f7-{bad}")).await.iter().all(|i| i.status.vm_cid.is_none()));
    }
    report(
        "F7",
        1,
        0,
        &format!(
            "render timeout {timeout:?}, output cap {max_output} B; {}; the normal deployment done",
            figures.join("; ")
        ),
    );
    h.stop().await.unwrap();
}
