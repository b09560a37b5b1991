//! The runtime's helpers against a real etcd: secondary watches and the
//! finalizer helper.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bosh_api::objects::{ConfigSpec, DeploymentSpec, Finalizer, InstancePhase, InstanceSpec};
use bosh_api::store::{Fence, Store};
use bosh_api::{Object, ObjectMeta};
use bosh_controllers::runtime::{
    Action, Cleanup, Config, Controller, Ctx, ElectionConfig, Predicate, Reflector, Trigger,
    default_error_policy, finalizer,
};
use bosh_controllers::server::daemon;
use bosh_controllers::testing::WebManifest;
use bosh_test_utils::eventually;
use tokio_util::sync::CancellationToken;

use super::{DEADLINE, config, setup};

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct TestError(String);

impl From<bosh_api::store::Error> for TestError {
    fn from(e: bosh_api::store::Error) -> Self {
        TestError(e.to_string())
    }
}

/// Reconciles per key.
#[derive(Default)]
struct Runs(Mutex<BTreeMap<String, usize>>);

impl Runs {
    fn of(&self, key: &str) -> usize {
        self.0.lock().unwrap().get(key).copied().unwrap_or(0)
    }
}

async fn wait_runs(runs: &Runs, key: &str, n: usize) {
    eventually(DEADLINE, &format!("{key} reconciled {n} times"), || {
        let got = runs.of(key);
        async move { (got >= n).then_some(()) }
    })
    .await
    .unwrap();
}

/// Writes a new status of instance `dep/web/0`.
async fn touch_instance(store: &Store, dep: &str, phase: InstancePhase) {
    let mut i: Object<InstanceSpec> = store.get(Some(dep), "web/0").await.unwrap();
    i.status.phase = Some(phase);
    store.update_status(&i).await.unwrap();
}

/// A change of an Instance wakes its Deployment through `owns`, and no
/// other deployment: with one worker, keys run in the order they were
/// woken, so once a change made after it has been reconciled, every wake
/// the first change caused has run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secondary_watch_wakes_exactly_the_owner_of_the_changed_child() {
    let (_env, store) = setup().await;
    for d in ["a", "b", "c"] {
        store.create(&Object::new(ObjectMeta::named(d), DeploymentSpec::default())).await.unwrap();
        let i = Object::new(ObjectMeta::scoped(d, "web/0"), InstanceSpec::default());
        store.create(&i).await.unwrap();
    }
    let runs = Arc::new(Runs::default());
    let instances = Reflector::<InstanceSpec>::new(&store);
    let ctl = Controller::new(
        "owner",
        store.clone(),
        runs.clone(),
        Config {
            workers: 1,
            resync: None,
            trigger: Trigger::Generation,
            election: ElectionConfig { ttl: Duration::from_secs(5), holder: "test".into() },
            ..Config::default()
        },
        |obj: Arc<Object<DeploymentSpec>>, ctx: Arc<Ctx<Runs>>| async move {
            *ctx.data.0.lock().unwrap().entry(obj.key_name()).or_default() += 1;
            Ok::<_, TestError>(Action::await_change())
        },
        default_error_policy,
    )
    .owns(&instances, Predicate::any(), |i| i.metadata.deployment.clone());
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(ctl.run(shutdown.clone()));
    for d in ["a", "b", "c"] {
        wait_runs(&runs, d, 1).await;
    }
    assert_eq!(instances.cache().len(), 3, "the owned kind is cached while leading");

    touch_instance(&store, "a", InstancePhase::Updating).await;
    touch_instance(&store, "c", InstancePhase::Updating).await;
    wait_runs(&runs, "c", 2).await;
    assert_eq!((runs.of("a"), runs.of("b"), runs.of("c")), (2, 1, 2));

    // A removed child wakes its owner too.
    store.delete::<InstanceSpec>(Some("b"), "web/0", None).await.unwrap();
    wait_runs(&runs, "b", 2).await;
    assert_eq!((runs.of("a"), runs.of("b"), runs.of("c")), (2, 2, 2));
    shutdown.cancel();
    run.await.unwrap();
}

/// What the finalizer test's reconcile did.
#[derive(Default)]
struct Work {
    /// `apply` runs, each noting whether etcd held the finalizer then.
    applied: Mutex<Vec<bool>>,
    /// Clean-up runs (each "deletes" the object's external resource).
    cleanups: AtomicUsize,
}

/// Any finalizer will do: the test's object is a Config, which none of
/// boshd's controllers finalizes.
const NAME: Finalizer = Finalizer::StemcellCpi;

fn ctx_on(store: Store) -> Ctx<()> {
    Ctx {
        controller: "finalizer-test",
        store,
        fence: Fence { key: "/test/finalizer".into(), revision: 0 },
        data: Arc::new(()),
    }
}

/// One reconcile through the helper, on `obj` as a cache would serve it.
async fn pass(
    ctx: &Ctx<()>,
    work: &Arc<Work>,
    obj: &Object<ConfigSpec>,
) -> Result<Action, TestError> {
    let store = ctx.store.clone();
    finalizer(
        ctx,
        Arc::new(obj.clone()),
        NAME,
        |o| async move {
            let stored: Object<ConfigSpec> = store.get(None, &o.metadata.name).await?;
            work.applied.lock().unwrap().push(stored.metadata.has_finalizer(NAME));
            Ok(Action::await_change())
        },
        |_| async move {
            work.cleanups.fetch_add(1, Ordering::SeqCst);
            Ok(Cleanup::Done)
        },
    )
    .await
}

/// The helper adds the finalizer before any work (and only once, even
/// from a stale view), runs the clean-up on deletion and removes the
/// finalizer only after it; a crash between the clean-up and the removal
/// (here: the removal refused, as a deposed leader's would be) runs the
/// clean-up again and then lets the object go.
#[tokio::test]
async fn the_finalizer_is_added_before_work_and_removed_after_cleanup_across_a_crash() {
    let (_env, store) = setup().await;
    let stale = store.create(&config("cloud/fin", 1)).await.unwrap();
    let ctx = ctx_on(store.clone());
    let work = Arc::new(Work::default());

    // First pass: the finalizer goes in, no work yet.
    assert_eq!(pass(&ctx, &work, &stale).await.unwrap(), Action::await_change());
    assert!(work.applied.lock().unwrap().is_empty(), "no work before the finalizer");
    let stored: Object<ConfigSpec> = store.get(None, "cloud/fin").await.unwrap();
    assert_eq!(stored.metadata.finalizers, [NAME.as_str()]);
    // A stale view (the add's reply lost, a cache behind) adds nothing
    // twice: it works on what etcd holds.
    pass(&ctx, &work, &stale).await.unwrap();
    pass(&ctx, &work, &stored).await.unwrap();
    assert_eq!(*work.applied.lock().unwrap(), [true, true], "work only with the finalizer stored");
    let stored: Object<ConfigSpec> = store.get(None, "cloud/fin").await.unwrap();
    assert_eq!(stored.metadata.finalizers, [NAME.as_str()], "added once");

    // Deleted: the finalizer keeps the object until the clean-up is done.
    assert!(!store.delete::<ConfigSpec>(None, "cloud/fin", None).await.unwrap());
    let deleting: Object<ConfigSpec> = store.get(None, "cloud/fin").await.unwrap();
    assert!(deleting.metadata.is_deleting());
    // A crash between the clean-up and the removal: the clean-up ran, the
    // removal never reached etcd.
    let deposed = ctx_on(store.with_fence(Fence { key: "/bosh/leaders/gone".into(), revision: 1 }));
    assert!(pass(&deposed, &work, &deleting).await.is_err(), "the removal was refused");
    assert_eq!(work.cleanups.load(Ordering::SeqCst), 1);
    let still: Object<ConfigSpec> = store.get(None, "cloud/fin").await.unwrap();
    assert_eq!(
        still.metadata.finalizers,
        [NAME.as_str()],
        "kept: the clean-up may not have finished"
    );
    // The next reconcile cleans up again (idempotent) and lets it go.
    assert_eq!(pass(&ctx, &work, &deleting).await.unwrap(), Action::await_change());
    assert_eq!(work.cleanups.load(Ordering::SeqCst), 2);
    assert!(store.try_get::<ConfigSpec>(None, "cloud/fin").await.unwrap().is_none(), "gone");
    assert_eq!(work.applied.lock().unwrap().len(), 2, "no work while deleting");
}

/// The deployment validator judges a deployment against the cloud config
/// it uses, and a change of that config (not of the deployment) re-runs it:
/// a deployment invalid for want of its VM type becomes valid when the
/// cloud config gains it, with no resync to wait for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cloud_config_change_re_validates_the_deployments_that_use_it() {
    use bosh_api::meta::find_condition;
    use bosh_api::objects::{ConditionType, ConfigType};
    let (_env, store) = setup().await;
    let subnet = bosh_test_utils::SubnetLease::acquire();
    let cloud = |vm_type: &str| {
        let content = serde_json::json!({
            "azs": [{"name": "z1"}],
            "vm_types": [{"name": vm_type}],
            "networks": [{"name": "default", "type": "manual", "subnets": [{
                "range": subnet.range(), "gateway": subnet.ip(1).to_string(), "azs": ["z1"]}]}],
            "compilation": {"workers": 1, "az": "z1", "vm_type": vm_type, "network": "default"},
        });
        ConfigSpec { type_: ConfigType::Cloud, content }
    };
    let mut config =
        store.create(&Object::new(ObjectMeta::named("cloud/default"), cloud("big"))).await.unwrap();
    let spec =
        DeploymentSpec { manifest: WebManifest::hello("d", 1).value(), ..Default::default() };
    store.create(&Object::new(ObjectMeta::named("d"), spec)).await.unwrap();
    let opts = daemon::Options {
        workers: 1,
        // No resync within the test: only the config's change can wake it.
        resync: Duration::from_secs(3600),
        election: ElectionConfig { ttl: Duration::from_secs(5), holder: "test".into() },
        health: Default::default(),
        limits: Default::default(),
        render: Default::default(),
        orphan_vms: None,
        errand_timeout: std::time::Duration::from_secs(
            bosh_api::objects::DEFAULT_ERRAND_TIMEOUT_SECS,
        ),
        reflectors: Default::default(),
    };
    let validator = daemon::deployment_validator(&store, &opts);
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(validator.run(shutdown.clone()));
    let invalid = |want: bool| {
        let store = store.clone();
        async move {
            eventually(DEADLINE, &format!("deployment d invalid: {want}"), || {
                let store = store.clone();
                async move {
                    let d: Object<DeploymentSpec> = store.get(None, "d").await.ok()?;
                    let c = find_condition(&d.status.conditions, ConditionType::Invalid)?;
                    (c.status == want.into()).then(|| c.message.clone())
                }
            })
            .await
            .unwrap()
        }
    };
    let why = invalid(true).await;
    assert!(why.contains("small"), "the missing vm_type is named: {why}");
    config.spec = cloud("small");
    store.update_spec(&config).await.unwrap();
    invalid(false).await;
    shutdown.cancel();
    run.await.unwrap();
}
