//! Resurrection as a reconcile, on real local VMs: the health monitor turns
//! missing heartbeats into `unresponsive`, the instance controller recreates
//! the VM with its disk; a short pause is not a death; a meltdown pauses
//! resurrection until enough instances are healthy again.

use std::time::{Duration, Instant};

use bosh_api::meta::find_condition;
use bosh_api::objects::{ConditionType, InstanceHealth, InstancePhase};
use bosh_api::objects::{DeploymentSpec, InstanceSpec, TaskSpec, TaskState};
use bosh_api::{ConditionStatus, Object};
use bosh_controllers::reconcilers::health::HealthConfig;
use bosh_controllers::testing::{CpiPath, Harness, HarnessOptions};
use bosh_controllers::world::cpi::local::{LocalCpi, audit};
use bosh_test_utils::eventually;

use super::compile::example_release;
use super::deploy::{DeployHarness, manifest};

const AGENT_TIMEOUT: Duration = Duration::from_secs(5);

async fn world() -> Harness {
    world_through(CpiPath::InProcess).await
}

/// A world whose director reaches the CPI by `cpi_path`.
async fn world_through(cpi_path: CpiPath) -> Harness {
    let health = HealthConfig {
        agent_timeout: AGENT_TIMEOUT,
        check_interval: Duration::from_millis(250),
        resurrection_delay: Duration::from_secs(2),
        ..HealthConfig::default()
    };
    let h = Harness::start(HarnessOptions { health, cpi_path, ..HarnessOptions::containers() })
        .await
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    h.upload_release(&example_release(tmp.path())).await.unwrap();
    h.upload_stemcell().await.unwrap();
    h
}

/// A stock BOSH CPI through `bosh-local-cpi`: no lookup by request id.
/// (It can still list VMs, which cloud check's orphan scan needs.)
pub(super) fn stock_cpi() -> CpiPath {
    let disabled = ["find_vm_by_request", "find_disk_by_request"];
    CpiPath::External { disabled: disabled.iter().map(|m| m.to_string()).collect() }
}

/// Sends `SIG<signal>` to every process of VM `cid` (a container: all in
/// its PID namespace), as a crash or a hang of the machine would.
fn signal_vm(h: &Harness, cid: &str, signal: &str) {
    let n = LocalCpi::signal_vm(&h.cpi_root(), cid, &format!("SIG{signal}")).unwrap();
    assert!(n > 0, "SIG{signal} found no process of {cid}");
}

async fn deployed(h: &Harness, name: &str, n: u32, disk_mb: u64) -> Vec<Object<InstanceSpec>> {
    let t = h.apply(name, manifest(name, n, "alive", disk_mb)).await;
    let (state, result) = h.task_end(t).await;
    assert_eq!(state, TaskState::Done, "{result}");
    h.instances(name).await
}

fn creates(h: &Harness) -> usize {
    h.cpi.created.lock().unwrap().len()
}

/// SIGKILL of a VM: it is running again on a new VM within agent_timeout +
/// 15 s, its disk's marker survives, with exactly one delete_vm (of the
/// dead VM) and one create_vm, under a "scan and fix" task; the CPI then
/// holds one VM for the instance and one disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_vm_is_resurrected_with_its_disk() {
    killed_vm_resurrected(CpiPath::InProcess).await;
}

/// [`a_killed_vm_is_resurrected_with_its_disk`] through `bosh-local-cpi`
/// as a stock CPI (issue 16).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_vm_is_resurrected_with_its_disk_through_bosh_local_cpi() {
    killed_vm_resurrected(stock_cpi()).await;
}

async fn killed_vm_resurrected(cpi_path: CpiPath) {
    let h = world_through(cpi_path).await;
    let inst = deployed(&h, "res", 1, 16).await.remove(0);
    let agent = h.director.agents.for_agent(inst.status.agent_id.clone().unwrap());
    let write = vec!["sh".into(), "-c".into(), "echo kept > /var/vcap/store/marker".into()];
    assert_eq!(agent.exec(&write, Some(10)).await.unwrap().exit_code, 0);
    let old = inst.status.vm_cid.clone().unwrap();
    let before = creates(&h);

    let deleted_before = h.cpi.deleted.lock().unwrap().len();
    let killed = Instant::now();
    signal_vm(&h, &old, "KILL");
    let store = h.store.clone();
    let name = inst.metadata.name.clone();
    let new =
        eventually(AGENT_TIMEOUT + Duration::from_secs(15), "the instance on a new VM", || {
            let (store, old, name) = (store.clone(), old.clone(), name.clone());
            async move {
                let i: Object<InstanceSpec> = store.get(Some("res"), &name).await.ok()?;
                let c = find_condition(&i.status.conditions, ConditionType::Ready)?;
                (c.status == ConditionStatus::True && i.status.vm_cid.as_deref() != Some(&old))
                    .then_some(i)
            }
        })
        .await
        .unwrap();
    println!("resurrected in {:?} (agent timeout {AGENT_TIMEOUT:?})", killed.elapsed());
    let agent = h.director.agents.for_agent(new.status.agent_id.clone().unwrap());
    let read = vec!["sh".into(), "-c".into(), "cat /var/vcap/store/marker".into()];
    assert_eq!(agent.exec(&read, Some(10)).await.unwrap().stdout.trim(), "kept");
    assert_eq!(creates(&h), before + 1, "exactly one create_vm");
    // (Compile VMs' records are cleaned up too; only instance VMs count.)
    let deleted = h.cpi.deleted.lock().unwrap()[deleted_before..].to_vec();
    let of_old = deleted.iter().filter(|c| **c == old).count();
    assert_eq!(of_old, 1, "one delete_vm of the dead VM: {deleted:?}");
    assert!(!deleted.contains(new.status.vm_cid.as_ref().unwrap()));
    let tasks = h.store.list::<TaskSpec>("").await.unwrap().items;
    let fix: Vec<_> = tasks.iter().filter(|t| t.spec.description == "scan and fix").collect();
    assert_eq!(fix.len(), 1);
    assert_eq!(fix[0].status.state, TaskState::Done);
    // What the CPI holds: the dead VM gone, one VM and one disk; its
    // audit log has two create_vm calls for the instance (the first VM's
    // and the resurrection's).
    super::external_cpi::assert_one_vm_and_one_disk_each(&h, "res").await;
    let agents = [&inst, &new].map(|i| i.status.agent_id.clone());
    let log = audit::read(&h.cpi_root()).unwrap();
    let made = log.iter().filter(|e| e.method == "create_vm" && agents.contains(&e.agent_id));
    assert_eq!(made.count(), 2, "two create_vm for the instance in all");
    h.stop().await.unwrap();
}

/// An agent paused for half the timeout and resumed is not resurrected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_pause_is_not_a_death() {
    let h = world().await;
    let inst = deployed(&h, "pause", 1, 0).await.remove(0);
    let cid = inst.status.vm_cid.clone().unwrap();
    let before = creates(&h);
    signal_vm(&h, &cid, "STOP");
    tokio::time::sleep(AGENT_TIMEOUT / 2).await; // the pause under test
    signal_vm(&h, &cid, "CONT");
    tokio::time::sleep(AGENT_TIMEOUT * 2).await; // an observation window
    assert_eq!(creates(&h), before, "no resurrection");
    let i: Object<InstanceSpec> = h.store.get(Some("pause"), &inst.metadata.name).await.unwrap();
    assert_eq!(i.status.vm_cid.as_deref(), Some(cid.as_str()));
    assert_ne!(i.status.health, Some(InstanceHealth::Unresponsive));
    h.stop().await.unwrap();
}

/// 6 of 10 agents stop at once: a Meltdown condition and no resurrection;
/// 2 come back (4 down, under the floor of 5): resurrection resumes and
/// recreates the 4.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meltdown_pauses_resurrection_until_enough_are_healthy() {
    let h = world().await;
    let instances = deployed(&h, "melt", 10, 0).await;
    let cids: Vec<String> = instances.iter().map(|i| i.status.vm_cid.clone().unwrap()).collect();
    let before = creates(&h);
    let deleted_before = h.cpi.deleted.lock().unwrap().len();
    for cid in &cids[..6] {
        signal_vm(&h, cid, "STOP");
    }
    let store = h.store.clone();
    let cond = eventually(AGENT_TIMEOUT + Duration::from_secs(15), "a Meltdown condition", || {
        let store = store.clone();
        async move {
            let d: Object<DeploymentSpec> = store.get(None, "melt").await.ok()?;
            find_condition(&d.status.conditions, ConditionType::Meltdown)
                .filter(|c| c.status == ConditionStatus::True)
                .cloned()
        }
    })
    .await
    .unwrap();
    assert!(cond.message.contains("of 10 instances unresponsive"), "{}", cond.message);
    tokio::time::sleep(Duration::from_secs(3)).await; // an observation window
    assert_eq!(creates(&h), before, "no resurrection during a meltdown");

    for cid in &cids[..2] {
        signal_vm(&h, cid, "CONT");
    }
    let h2 = &h;
    let recreated =
        eventually(Duration::from_secs(120), "the 4 still down to be recreated", || async move {
            (creates(h2) == before + 4).then_some(())
        })
        .await;
    if let Err(e) = recreated {
        // What each instance looked like when the wait gave up: which one
        // was left, and what the director thought of it.
        let states: Vec<String> = h
            .instances("melt")
            .await
            .iter()
            .map(|i| {
                let ready = find_condition(&i.status.conditions, ConditionType::Ready);
                format!(
                    "{} vm={:?} health={:?} phase={:?} ready={:?}",
                    i.spec.id,
                    i.status.vm_cid,
                    i.status.health,
                    i.status.phase,
                    ready.map(|c| (c.status, c.reason.clone(), c.message.clone()))
                )
            })
            .collect();
        panic!("{e}: {} of 4 recreated; instances:\n{}", creates(&h) - before, states.join("\n"));
    }
    let d: Object<DeploymentSpec> = h.store.get(None, "melt").await.unwrap();
    let c = find_condition(&d.status.conditions, ConditionType::Meltdown).unwrap();
    assert_eq!(c.status, ConditionStatus::False);
    let deleted = h.cpi.deleted.lock().unwrap()[deleted_before..].to_vec();
    for (i, cid) in cids.iter().enumerate() {
        let n = deleted.iter().filter(|c| *c == cid).count();
        assert_eq!(n, usize::from((2..6).contains(&i)), "VM {i} deleted {n} times");
    }
    h.stop().await.unwrap();
}

/// With resurrection off for its instance group, a dead VM stays dead (the
/// health says so); turned back on, it is resurrected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resurrection_off_for_a_group_leaves_it_alone_until_turned_on() {
    use bosh_api::ObjectMeta;
    use bosh_api::objects::{ConfigSpec, ConfigType};

    let h = world().await;
    let inst = deployed(&h, "quiet", 1, 0).await.remove(0);
    let rule = |on: bool| ConfigSpec {
        type_: ConfigType::Resurrection,
        content: serde_json::json!({"rules": [{"enabled": on, "include": {"deployments": ["quiet"], "instance_groups": ["web"]}}]}),
    };
    let cfg = h
        .store
        .create(&Object::new(ObjectMeta::named("resurrection/quiet-web"), rule(false)))
        .await
        .unwrap();
    let before = creates(&h);
    let killed = std::time::Instant::now();
    signal_vm(&h, inst.status.vm_cid.as_ref().unwrap(), "KILL");
    let store = h.store.clone();
    let name = inst.metadata.name.clone();
    eventually(AGENT_TIMEOUT + Duration::from_secs(15), "the instance seen unresponsive", || {
        let (store, name) = (store.clone(), name.clone());
        async move {
            let i: Object<InstanceSpec> = store.get(Some("quiet"), &name).await.ok()?;
            (i.status.health == Some(InstanceHealth::Unresponsive)).then_some(())
        }
    })
    .await
    .unwrap();
    // The verdict's bound (issue 12: a killed agent was once judged after
    // 109 s with a 60 s timeout) is the timeout plus one check interval,
    // with a second's slack for the status write and this poll.
    let took = killed.elapsed();
    println!("unresponsive {took:?} after the kill (timeout {AGENT_TIMEOUT:?}, check 250 ms)");
    assert!(
        took <= AGENT_TIMEOUT + Duration::from_millis(250) + Duration::from_secs(1),
        "a dead agent was judged unresponsive only after {took:?}"
    );
    tokio::time::sleep(Duration::from_secs(4)).await; // an observation window past the delay
    assert_eq!(creates(&h), before, "resurrection is off for quiet/web");

    let mut cfg = cfg;
    cfg.spec = rule(true);
    h.store.update_spec(&cfg).await.unwrap();
    // Configs do not wake instances; the next resync (2 s) does.
    let h2 = &h;
    eventually(Duration::from_secs(30), "resurrection once turned on", || async move {
        (creates(h2) == before + 1).then_some(())
    })
    .await
    .unwrap();

    // `stop --hard`: the VM goes, and with it the health it showed.
    let seen = |want: fn(&Object<InstanceSpec>) -> bool| {
        let (store, name) = (store.clone(), name.clone());
        async move {
            let i: Object<InstanceSpec> = store.get(Some("quiet"), &name).await.ok()?;
            want(&i).then_some(())
        }
    };
    eventually(AGENT_TIMEOUT + Duration::from_secs(15), "the new VM seen running", || {
        seen(|i| i.status.health == Some(InstanceHealth::Running))
    })
    .await
    .unwrap();
    let mut d: Object<bosh_api::objects::DeploymentSpec> =
        h.store.get(None, "quiet").await.unwrap();
    d.spec.instances.insert(
        "web".into(),
        bosh_api::objects::InstanceOverride {
            state: Some(bosh_api::objects::DesiredState::Detached),
            ..Default::default()
        },
    );
    h.store.update_spec(&d).await.unwrap();
    eventually(Duration::from_secs(60), "the instance detached, showing no health", || {
        seen(|i| {
            i.status.phase == Some(InstancePhase::Detached)
                && i.status.vm_cid.is_none()
                && i.status.health.is_none()
        })
    })
    .await
    .unwrap();
    h.stop().await.unwrap();
}

/// A job whose process dies raises alerts: an Event in the alert stream
/// (task 0) and a webhook POST, retried after the receiver's first 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_job_raises_alerts_to_events_and_a_retried_webhook() {
    use std::sync::{Arc, Mutex};

    use bosh_api::objects::EventSpec;

    // A receiver that refuses its first request.
    let got: Arc<Mutex<Vec<(u16, serde_json::Value)>>> = Arc::default();
    let got2 = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(v): axum::Json<serde_json::Value>| {
            let got = got2.clone();
            async move {
                let mut g = got.lock().unwrap();
                let status = if g.is_empty() { 500 } else { 200 };
                g.push((status, v));
                axum::http::StatusCode::from_u16(status).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let health = HealthConfig {
        agent_timeout: AGENT_TIMEOUT,
        check_interval: Duration::from_millis(250),
        webhook: Some(url),
        ..HealthConfig::default()
    };
    let h =
        Harness::start(HarnessOptions { health, ..HarnessOptions::containers() }).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    h.upload_release(&example_release(tmp.path())).await.unwrap();
    h.upload_stemcell().await.unwrap();
    let inst = deployed(&h, "alerting", 1, 0).await.remove(0);
    let agent = h.director.agents.for_agent(inst.status.agent_id.clone().unwrap());
    let kill = vec![
        "sh".into(),
        "-c".into(),
        "kill -9 \"$(cat /var/vcap/sys/run/hello/hello.pid)\"".into(),
    ];
    let r = agent.exec(&kill, Some(10)).await.unwrap();
    assert_eq!(r.exit_code, 0, "{}", r.stderr);

    // The first POST is refused; that same alert arrives again and is
    // accepted. (The agent's own alert and the monitor's may interleave.)
    let got3 = got.clone();
    eventually(Duration::from_secs(30), "the refused alert delivered on retry", || {
        let got = got3.clone();
        async move {
            let g = got.lock().unwrap();
            let (first, rest) = g.split_first()?;
            (first.0 == 500 && rest.iter().any(|(s, v)| *s == 200 && *v == first.1)).then_some(())
        }
    })
    .await
    .unwrap();
    let events = h.store.list::<EventSpec>("0000000000/").await.unwrap().items;
    assert!(events.iter().any(|e| e.spec.stage == "Alert"), "{events:?}");
    h.stop().await.unwrap();
}
