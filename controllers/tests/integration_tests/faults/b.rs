//! B. etcd faults: a leader killed mid-deploy (B1), a compaction storm
//! (B2), a watch that drops every event (B3), every member stopped (B4),
//! lost replies of committed writes (B5), the NOSPACE alarm (B6).
//!
//! B1 and B6 run the director on an etcd of their own
//! ([`bosh_test_utils::EtcdCluster`], 3 members and 1 member with a small
//! quota); the others on the harness's single member. B2, B3 and B5 use the
//! store's failpoints (`bosh_api::store::failpoints`): etcd's traffic is TLS
//! gRPC multiplexed on one HTTP/2 connection, so a TCP proxy could cut the
//! connection but not drop only the watch events in it, nor only the reply
//! of one committed transaction.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bosh_api::meta::find_condition;
use bosh_api::objects::ConditionType;
use bosh_api::objects::{
    CompiledPackageSpec, ConfigSpec, ConfigType, DeploymentSpec, DiskPhase, DiskSpec, InstanceSpec,
    TaskSpec,
};
use bosh_api::store::failpoints::{self as sfp, for_kind};
use bosh_api::store::{Store, WatchStats};
use bosh_api::{Kind, Object, ObjectMeta};
use bosh_controllers::failpoints::hits;
use bosh_controllers::reconcilers::validate::{self, DeploymentLimits};
use bosh_controllers::runtime::{
    Cache, Config, Controller, ElectionConfig, Stats, Trigger, default_error_policy,
};
use bosh_controllers::server::api::healthz::Health;
use bosh_controllers::testing::invariants::{self, Invariant};
use bosh_controllers::testing::{CpiFaults, Harness, HarnessOptions};
use bosh_controllers::world::cpi::local::{LocalCpi, audit};
use bosh_test_utils::{EtcdCluster, TestEnv, eventually};
use rand::{Rng, SeedableRng};
use tokio_util::sync::CancellationToken;

use super::super::deploy::DeployHarness;
use super::{
    CONVERGE, INSTANCES, assert_invariants, converged, iterations, manifest, recreate, report,
    seed, world, world_with,
};

/// Whether the full (matrix) figures run (`FAULTS_FULL=1`).
#[allow(dead_code)]
fn full() -> bool {
    iterations(0, 1) == 1
}

static PANICS: AtomicU64 = AtomicU64::new(0);

/// Counts every panic of the process from now on (a controller's caught
/// panic included), passing each to the previous hook.
fn count_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        previous(info);
    }));
}

fn panics() -> u64 {
    PANICS.load(Ordering::SeqCst)
}

/// `GET /healthz`: the status code and the body.
async fn healthz(api_url: &str) -> Option<(u16, Health)> {
    let r = reqwest::Client::new()
        .get(format!("{api_url}/healthz"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .ok()?;
    let code = r.status().as_u16();
    Some((code, r.json().await.ok()?))
}

/// The newest status revision among objects of kind `S`.
async fn newest<S: Kind>(store: &Store) -> Option<i64> {
    let items = store.list::<S>("").await.ok()?.items;
    Some(items.iter().map(|o| o.metadata.status_revision).max().unwrap_or(0))
}

/// The etcd revision of the director's newest status write (deployments,
/// instances, disks, compiled packages, tasks); `None` when etcd cannot be
/// read.
async fn newest_status_write(store: &Store) -> Option<i64> {
    let revs = [
        newest::<DeploymentSpec>(store).await?,
        newest::<InstanceSpec>(store).await?,
        newest::<DiskSpec>(store).await?,
        newest::<CompiledPackageSpec>(store).await?,
        newest::<TaskSpec>(store).await?,
    ];
    revs.into_iter().max()
}

/// Waits (up to `deadline`) for the director's first status write after
/// etcd revision `after`; returns how long it took.
async fn first_status_write_after(h: &Harness, after: i64, deadline: Duration) -> Duration {
    let started = Instant::now();
    let store = h.store.clone();
    eventually(deadline, &format!("a status write after revision {after}"), || {
        let store = store.clone();
        async move { (newest_status_write(&store).await? > after).then_some(()) }
    })
    .await
    .unwrap();
    started.elapsed()
}

/// The current etcd revision, retried while etcd (or a member) is away.
async fn revision(store: &Store) -> i64 {
    eventually(Duration::from_secs(30), "an etcd revision", || async {
        store.revision().await.ok()
    })
    .await
    .unwrap()
}

/// Mutating CPI calls of `methods` admitted between `from` and `to`.
fn cpi_calls(
    h: &Harness,
    methods: &[&str],
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
) -> Vec<audit::AuditEntry> {
    audit::read(&h.cpi_root())
        .unwrap()
        .into_iter()
        .filter(|e| methods.contains(&e.method.as_str()))
        .filter(|e| e.at.is_some_and(|at| at >= from && at <= to))
        .collect()
}

/// The real config validator (as boshd runs it), with `resync`.
fn config_validator(
    store: &Store,
    resync: Option<Duration>,
) -> Controller<ConfigSpec, DeploymentLimits, validate::Error> {
    Controller::new(
        "config-validator",
        store.clone(),
        Arc::new(DeploymentLimits::default()),
        Config {
            workers: 2,
            resync,
            trigger: Trigger::Generation,
            election: ElectionConfig { ttl: Duration::from_secs(5), ..Default::default() },
            ..Config::default()
        },
        validate::reconcile_config,
        default_error_policy,
    )
}

/// A cloud config whose content carries `n`.
fn cloud(name: &str, n: u64) -> Object<ConfigSpec> {
    Object::new(
        ObjectMeta::named(format!("cloud/{name}")),
        ConfigSpec {
            type_: ConfigType::Cloud,
            content: serde_json::json!({ "azs": [{ "name": format!("z{n}") }] }),
        },
    )
}

/// Whether the validator has judged `o` at its current generation.
fn validated(o: &Object<ConfigSpec>) -> bool {
    find_condition(&o.status.conditions, ConditionType::Invalid)
        .is_some_and(|c| c.observed_revision == o.metadata.generation)
}

/// Waits until `cache` equals etcd and every config is validated at its
/// generation; returns how long that took.
async fn cache_matches_etcd(store: &Store, cache: &Arc<Cache<ConfigSpec>>) -> Duration {
    let started = Instant::now();
    eventually(CONVERGE, "the cache to equal etcd, every config validated", || async {
        let truth = store.list::<ConfigSpec>("").await.ok()?.items;
        if !truth.iter().all(validated) {
            return None;
        }
        let cached: Vec<Object<ConfigSpec>> = cache.list().iter().map(|o| (**o).clone()).collect();
        (cached == truth).then_some(())
    })
    .await
    .unwrap();
    started.elapsed()
}

/// A running config validator over a fresh etcd, its handles, and the
/// configs `cloud/<prefix>-0..n`, validated.
struct Validator {
    _env: TestEnv,
    store: Store,
    cache: Arc<Cache<ConfigSpec>>,
    watch: Arc<WatchStats>,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
    run: tokio::task::JoinHandle<()>,
}

impl Validator {
    async fn start(resync: Option<Duration>, prefix: &str, n: u64) -> Validator {
        let env = TestEnv::etcd_only().await.unwrap();
        let store = Store::connect(&env.store_config(), "/bosh").await.unwrap();
        for i in 0..n {
            store.create(&cloud(&format!("{prefix}-{i}"), i)).await.unwrap();
        }
        let ctl = config_validator(&store, resync);
        let (cache, watch, stats) = (ctl.cache(), ctl.watch_stats(), ctl.stats());
        let shutdown = CancellationToken::new();
        let run = tokio::spawn(ctl.run(shutdown.clone()));
        let v = Validator { _env: env, store, cache, watch, stats, shutdown, run };
        cache_matches_etcd(&v.store, &v.cache).await;
        v
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.run.await.unwrap();
    }
}

/// B2: while configs are created, updated and deleted (about 100 writes a
/// second) etcd is compacted to its head revision every second, and the
/// controller's watch connection is cut at seeded moments (so that it
/// resumes from a revision the storm has compacted away). Every
/// `ErrCompacted` is answered by exactly one relist (relists = 1 initial +
/// compactions seen), no deletion is missed (the cache equals etcd at the
/// end) and every config is validated at its last generation. The storm
/// lasts 8 s in CI and 120 s with `FAULTS_FULL=1`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_b2_a_compaction_storm_misses_no_deletion() {
    let seed = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let scenario = fail::FailScenario::setup();
    // No periodic resync: compaction handling alone must get it right.
    let v = Validator::start(None, "b2", 20).await;
    let store = v.store.clone();
    let storm = Duration::from_secs(iterations(8, 120) as u64);
    let cut = for_kind(sfp::WATCH_BREAK, ConfigSpec::PLURAL);

    let stop = CancellationToken::new();
    let compactor = tokio::spawn({
        let (store, stop) = (store.clone(), stop.clone());
        async move {
            let mut done = 0u64;
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return done,
                    _ = tick.tick() => {}
                }
                if let Ok(rev) = store.revision().await
                    && store.compact(rev).await.is_ok()
                {
                    done += 1;
                }
            }
        }
    });
    let cuts: Vec<u64> = (0..1000).map(|_| rng.random_range(200..800)).collect();
    let cutter = tokio::spawn({
        let (stop, cut) = (stop.clone(), cut.clone());
        async move {
            let mut armed = 0u64;
            for ms in cuts {
                tokio::select! {
                    _ = stop.cancelled() => return armed,
                    _ = tokio::time::sleep(Duration::from_millis(ms)) => {}
                }
                fail::cfg(&cut, "1*return").unwrap();
                armed += 1;
            }
            armed
        }
    });

    let mut live: Vec<String> = (0..20).map(|i| format!("cloud/b2-{i}")).collect();
    let mut deleted: BTreeSet<String> = BTreeSet::new();
    let (mut next, mut creates, mut updates) = (20u64, 0u64, 0u64);
    let started = Instant::now();
    while started.elapsed() < storm {
        let op = rng.random_range(0..10);
        if op < 4 || live.len() < 5 {
            let name = format!("b2-{next}");
            next += 1;
            store.create(&cloud(&name, next)).await.unwrap();
            live.push(format!("cloud/{name}"));
            creates += 1;
        } else if op < 7 {
            let key = live.swap_remove(rng.random_range(0..live.len()));
            store.delete::<ConfigSpec>(None, &key, None).await.unwrap();
            deleted.insert(key);
        } else {
            let key = &live[rng.random_range(0..live.len())];
            let mut o: Object<ConfigSpec> = store.get(None, key).await.unwrap();
            o.spec.content = cloud("x", rng.random_range(0..1000)).spec.content;
            store.update_spec(&o).await.unwrap();
            updates += 1;
        }
        // About 100 writes a second: the load, not a wait for anything.
        tokio::time::sleep(Duration::from_millis(rng.random_range(2..15))).await;
    }
    stop.cancel();
    let compactions = compactor.await.unwrap();
    let cuts = cutter.await.unwrap();
    fail::remove(&cut);

    let settle = cache_matches_etcd(&store, &v.cache).await;
    let missed = deleted.iter().filter(|k| v.cache.get(k).is_some()).count();
    let compacted = v.watch.compacted();
    let relists = v.cache.relists();
    let terms = v.stats.terms.load(Ordering::Relaxed);
    eprintln!(
        "B2: {storm:?} storm: {creates} creates, {updates} updates, {} deletes, {compactions} \
         compactions, {cuts} cuts ({} broken sessions); {compacted} ErrCompacted, {relists} \
         relists; {terms} term(s); settled {settle:?} after",
        deleted.len(),
        v.watch.broken(),
    );
    assert_eq!(terms, 1, "one leadership term (every relist is then the watch's)");
    assert!(compacted > 0, "the storm never made the watch resume from a compacted revision");
    assert_eq!(relists, 1 + compacted, "relists = the initial list + one per ErrCompacted");
    assert_eq!(v.watch.requested(), 0, "no relist was asked for (no resync)");
    assert_eq!(missed, 0, "deleted configs still in the cache");
    assert_eq!(v.cache.len(), live.len());
    report(
        "B2",
        1,
        seed,
        &format!(
            "{storm:.0?} storm, compaction to head every 1 s ({compactions}×), {} writes; \
             {compacted} ErrCompacted = {} relists after the first; 0 missed of {} deletions; \
             cache = etcd, all validated {settle:.1?} after",
            creates + updates + deleted.len() as u64,
            relists - 1,
            deleted.len()
        ),
    );
    scenario.teardown();
    v.stop().await;
}

/// B3: every event of the controller's watch is dropped (the connection
/// stays open; the store's `store-watch-drop-events` failpoint) for the
/// outage, while configs are created, changed and deleted at seeded
/// moments. Each change reaches the controller within one resync period
/// plus one reconcile, because the periodic resync relists before it
/// re-runs every key (without that relist a resync would re-run keys on
/// the stale cache and never see a new object). CI: a 2 s resync and a
/// 12 s outage; `FAULTS_FULL=1`: a 30 s resync and the matrix's 5 min.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_b3_the_periodic_resync_repairs_a_watch_that_drops_every_event() {
    let seed = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let scenario = fail::FailScenario::setup();
    let period = Duration::from_secs(iterations(2, 30) as u64);
    let outage = Duration::from_secs(iterations(12, 300) as u64);
    // A relist and a reconcile, on a loaded CI host.
    let one_reconcile = Duration::from_millis(1500);
    let v = Validator::start(Some(period), "b3", 6).await;
    let store = v.store.clone();

    // With events flowing: how long a change takes to be validated.
    let t = Instant::now();
    store.create(&cloud("b3-baseline", 0)).await.unwrap();
    eventually(CONVERGE, "the baseline config validated", || async {
        let o: Object<ConfigSpec> = store.get(None, "cloud/b3-baseline").await.ok()?;
        validated(&o).then_some(())
    })
    .await
    .unwrap();
    let baseline = t.elapsed();

    let drop = for_kind(sfp::WATCH_DROP_EVENTS, ConfigSpec::PLURAL);
    let (dropped_before, relists_before) = (hits(&drop), v.watch.requested());
    fail::cfg(&drop, "return").unwrap();
    let fault = Instant::now();
    let mut live: Vec<String> = (0..6).map(|i| format!("cloud/b3-{i}")).collect();
    let mut seen: Vec<(String, Duration)> = Vec::new();
    let mut n = 0u64;
    while fault.elapsed() + period + one_reconcile < outage {
        // A seeded moment within the resync cycle.
        let wait = rng.random_range(period.as_millis() as u64 / 4..period.as_millis() as u64);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let what;
        let t = Instant::now();
        match n % 3 {
            0 => {
                let key = format!("cloud/b3-new-{n}");
                store.create(&cloud(&format!("b3-new-{n}"), n)).await.unwrap();
                what = format!("create {key}");
                let store = store.clone();
                eventually(period * 3, &what, || {
                    let (store, key) = (store.clone(), key.clone());
                    async move {
                        let o: Object<ConfigSpec> = store.get(None, &key).await.ok()?;
                        validated(&o).then_some(())
                    }
                })
                .await
                .unwrap();
                live.push(key);
            }
            1 => {
                let key = live[rng.random_range(0..live.len())].clone();
                let mut o: Object<ConfigSpec> = store.get(None, &key).await.unwrap();
                o.spec.content = cloud("x", 1000 + n).spec.content;
                store.update_spec(&o).await.unwrap();
                what = format!("change {key}");
                let store = store.clone();
                eventually(period * 3, &what, || {
                    let (store, key) = (store.clone(), key.clone());
                    async move {
                        let o: Object<ConfigSpec> = store.get(None, &key).await.ok()?;
                        validated(&o).then_some(())
                    }
                })
                .await
                .unwrap();
            }
            _ => {
                let key = live.swap_remove(rng.random_range(0..live.len()));
                store.delete::<ConfigSpec>(None, &key, None).await.unwrap();
                what = format!("delete {key}");
                let cache = v.cache.clone();
                eventually(period * 3, &what, || {
                    let gone = cache.get(&key).is_none();
                    async move { gone.then_some(()) }
                })
                .await
                .unwrap();
            }
        }
        let took = t.elapsed();
        eprintln!("B3: {what} reached the controller after {took:?}");
        seen.push((what, took));
        n += 1;
    }
    // The rest of the outage, then the watch delivers again.
    tokio::time::sleep(outage.saturating_sub(fault.elapsed())).await;
    let dropped = hits(&drop) - dropped_before;
    fail::remove(&drop);
    let relists = v.watch.requested() - relists_before;
    let settle = cache_matches_etcd(&store, &v.cache).await;

    let worst = seen.iter().map(|(_, d)| *d).max().unwrap_or_default();
    let late = seen.iter().filter(|(_, d)| *d > baseline + Duration::from_millis(300)).count();
    eprintln!(
        "B3: {} changes in a {outage:?} outage, {dropped} watch responses dropped, {relists} \
         resync relists; worst {worst:?} (period {period:?}, baseline {baseline:?})",
        seen.len()
    );
    assert!(seen.len() >= 3, "too few changes to say anything");
    assert!(dropped > 0, "no watch response was dropped: the fault did not happen");
    assert!(late > 0, "every change was seen at once: the watch was not really blind");
    assert!(relists > 0, "no resync relisted");
    for (what, took) in &seen {
        assert!(
            *took <= period + one_reconcile,
            "{what} took {took:?}, more than one resync period ({period:?}) plus one reconcile"
        );
    }
    report(
        "B3",
        1,
        seed,
        &format!(
            "{outage:.0?} of dropped watch events ({dropped} responses), resync {period:.0?}: \
             {} changes each seen within {worst:.1?} ≤ period + {one_reconcile:.1?} (baseline \
             reconcile {baseline:.2?}); cache = etcd {settle:.1?} after",
            seen.len()
        ),
    );
    scenario.teardown();
    v.stop().await;
}

/// The creating CPI calls, whose intent must be recorded first.
const CREATES: [&str; 2] = ["create_vm", "create_disk"];

/// B4: etcd (every member of it) is stopped in the middle of a deploy,
/// after the instances were written, for 10 s in CI and the matrix's
/// 2 min with `FAULTS_FULL=1`. While it is away no CPI create is made (no
/// intent can be recorded), nothing panics, the controllers keep running
/// and `/healthz` answers degraded (`EtcdUnreachable`); once it is back
/// the director is healthy and writes status again within 30 s (target),
/// and the deploy converges without breaking an invariant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_b4_with_etcd_down_nothing_is_created_healthz_degrades_and_it_recovers() {
    let seed = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    count_panics();
    let (mut h, _tmp) = world().await;
    let outage = Duration::from_secs(iterations(10, 120) as u64);
    h.apply("b4", manifest("b4")).await;
    let store = h.store.clone();
    eventually(CONVERGE, "the deployment controller to write the instances", || {
        let store = store.clone();
        async move {
            let n = store.list::<InstanceSpec>("b4/").await.ok()?.items.len();
            (n == INSTANCES).then_some(())
        }
    })
    .await
    .unwrap();
    let delay = Duration::from_millis(rng.random_range(0..2000));
    eprintln!("B4: stopping etcd {delay:?} after the instances were written");
    tokio::time::sleep(delay).await;
    let pending = h
        .instances("b4")
        .await
        .iter()
        .filter(|i| !bosh_controllers::reconcilers::instance::is_converged(i))
        .count();

    let stopped_at = chrono::Utc::now();
    let stopped = Instant::now();
    h.rest.env.etcd.stop();
    let (mut degraded, mut not_degraded) = (0u32, Vec::new());
    while stopped.elapsed() < outage {
        match healthz(&h.api_url).await {
            Some((503, health)) if health.reason.as_deref() == Some("EtcdUnreachable") => {
                degraded += 1;
            }
            other => not_degraded.push(format!("{other:?}")),
        }
        assert!(h.running(), "a controller task ended while etcd was away");
        // The outage itself: look again in a second.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let back_at = chrono::Utc::now();
    h.rest.env.etcd.start_again().await.unwrap();
    let back = Instant::now();
    let rev = revision(&h.store).await;
    let api = h.api_url.clone();
    eventually(Duration::from_secs(60), "healthz ok again", || {
        let api = api.clone();
        async move { healthz(&api).await.filter(|(code, _)| *code == 200).map(drop) }
    })
    .await
    .unwrap();
    let healthy = back.elapsed();
    first_status_write_after(&h, rev, Duration::from_secs(60)).await;
    let resumed = back.elapsed();
    converged(&h, "b4", "after the outage").await;
    let converge = back.elapsed();

    let creates = cpi_calls(&h, &CREATES, stopped_at, back_at);
    let mutations = cpi_calls(
        &h,
        &["create_vm", "delete_vm", "create_disk", "attach_disk", "detach_disk", "delete_disk"],
        stopped_at,
        back_at,
    );
    eprintln!(
        "B4: {outage:?} outage with {pending} instance(s) pending; healthz degraded {degraded}×, \
         otherwise {not_degraded:?}; {} creates, {} mutating calls while away; healthy \
         {healthy:?}, status written {resumed:?}, converged {converge:?} after etcd returned; \
         {} panics",
        creates.len(),
        mutations.len(),
        panics()
    );
    assert!(pending > 0, "the deploy had finished before etcd stopped: nothing was in flight");
    assert!(creates.is_empty(), "CPI creates while etcd was away: {creates:?}");
    assert_eq!(panics(), 0, "panics");
    assert!(degraded > 0 && not_degraded.is_empty(), "healthz while away: {not_degraded:?}");
    assert!(h.running(), "a controller task ended");
    let recovered = healthy.max(resumed);
    assert!(
        recovered <= Duration::from_secs(30),
        "recovered {recovered:?} after etcd returned (target 30 s)"
    );
    assert_invariants(&h, "after the outage").await;
    report(
        "B4",
        1,
        seed,
        &format!(
            "{outage:.0?} without etcd mid-deploy: 0 CPI creates ({} mutating calls) while away, \
             0 panics, /healthz degraded (EtcdUnreachable) {degraded}/{degraded}; healthy \
             {healthy:.1?} and writing status {resumed:.1?} after etcd returned (target 30 s), \
             converged {converge:.0?} after; I1–I6 hold",
            mutations.len()
        ),
    );
    h.stop().await.unwrap();
}

/// A seeded `fail` action list that lets `k` passes through and then
/// fires once, `times` times (`k` drawn from `0..gap`), then stays off;
/// returns it with the passes at which it fires.
fn lose_every_few(rng: &mut impl Rng, gap: u64, times: usize) -> (String, Vec<u64>) {
    let (mut actions, mut at, mut pos) = (Vec::new(), Vec::new(), 0u64);
    for _ in 0..times {
        let k = rng.random_range(0..gap);
        if k > 0 {
            actions.push(format!("{k}*off"));
        }
        actions.push("1*return".to_string());
        pos += k;
        at.push(pos);
        pos += 1;
    }
    actions.push("off".into());
    (actions.join("->"), at)
}

/// B5: replies of committed writes are lost (the store's
/// `store-reply-lost` failpoint: the transaction commits, the caller gets
/// an etcd error) for a seeded choice of the writes of Instances (status
/// and creation), Disks, CompiledPackages and Deployments, while the
/// instance controller's watch drops every event (so its cache lags its
/// own writes, lost or not, until a resync relists). A controller that
/// decided from its cache after a lost reply would record a second intent
/// and create a second VM; each deploy (and, with `FAULTS_FULL=1`, each of
/// 10 recreates) makes exactly one VM per instance, one Instance and one
/// Disk object each, and breaks no invariant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_b5_lost_replies_of_committed_writes_make_no_duplicate() {
    let seed = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let scenario = fail::FailScenario::setup();
    let (h, _tmp) = world().await;
    let runs = iterations(1, 11);
    let sites = [
        ("instances/status", 4),
        ("instances/create", 2),
        ("disks/create", 2),
        ("disks/status", 2),
        ("compiledpackages/status", 3),
        ("deployments/status", 3),
    ];
    let blind = for_kind(sfp::WATCH_DROP_EVENTS, InstanceSpec::PLURAL);
    let started = Instant::now();
    let mut lost_total = 0u64;
    for run in 0..runs {
        let mut armed = Vec::new();
        for (site, gap) in sites {
            let name = format!("{}/{site}", sfp::REPLY_LOST);
            let (actions, at) = lose_every_few(&mut rng, gap, 6);
            let before = hits(&name);
            fail::cfg(&name, &actions).unwrap();
            armed.push((name, at, before));
        }
        fail::cfg(&blind, "return").unwrap();
        let since = chrono::Utc::now();
        if run == 0 {
            h.apply("b5", manifest("b5")).await;
        } else {
            recreate(&h, "b5", run as u64).await;
        }
        converged(&h, "b5", &format!("run {run}")).await;
        let mut lost = Vec::new();
        for (name, at, before) in &armed {
            fail::remove(name);
            let passes = hits(name) - before;
            let fired = at.iter().filter(|p| **p < passes).count();
            lost.push(format!("{name}: {fired}"));
            lost_total += fired as u64;
        }
        fail::remove(&blind);
        eprintln!("B5 run {run}: lost replies {lost:?}");

        // Instance VMs only (compile VMs come and go, one per claim).
        let vm_creates: Vec<audit::AuditEntry> =
            cpi_calls(&h, &["create_vm"], since, chrono::Utc::now())
                .into_iter()
                .filter(|e| e.ok() && e.request_id.as_deref().is_some_and(|r| r.starts_with("vm-")))
                .collect();
        assert_eq!(
            vm_creates.len(),
            INSTANCES,
            "run {run}: instance create_vm calls {vm_creates:?}"
        );
        let requests: BTreeSet<&str> =
            vm_creates.iter().filter_map(|e| e.request_id.as_deref()).collect();
        assert_eq!(requests.len(), INSTANCES, "run {run}: one create per intent");
        let inv = LocalCpi::inventory(&h.cpi_root()).unwrap();
        assert_eq!(inv.vms.len(), INSTANCES, "run {run}: VMs {:?}", inv.vms.keys());
        let instances = h.store.list::<InstanceSpec>("b5/").await.unwrap().items;
        assert_eq!(instances.len(), INSTANCES, "run {run}: Instance objects");
        let disks = h.store.list::<DiskSpec>("b5/").await.unwrap().items;
        let active = disks.iter().filter(|d| d.status.phase != DiskPhase::Orphaned).count();
        assert_eq!((disks.len(), active), (INSTANCES, INSTANCES), "run {run}: Disk objects");
        assert_eq!(inv.disks.len(), INSTANCES, "run {run}: CPI disks");
        assert_invariants(&h, &format!("run {run}")).await;
    }
    let took = started.elapsed();
    assert!(lost_total > 0, "no reply was lost: the fault did not happen");
    report(
        "B5",
        runs,
        seed,
        &format!(
            "{lost_total} replies of committed writes lost (instances, disks, compiled packages, \
             deployments) with the instance controller's watch blind; 0 duplicate VMs, \
             Instances or Disks; I1–I6 hold; {took:.0?}"
        ),
    );
    scenario.teardown();
    h.stop().await.unwrap();
}

/// B5, the store's half: a write whose transaction committed but whose
/// reply was lost is read back before anyone decides on it, so the caller
/// sees the write succeed at the revision it committed at (not an error it
/// would retry or undo) — creates, spec and status updates and deletes
/// alike. A write that really conflicted still fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_b5_a_committed_write_whose_reply_is_lost_reads_back_as_done() {
    let scenario = fail::FailScenario::setup();
    let env = TestEnv::etcd_only().await.unwrap();
    let store = Store::connect(&env.store_config(), "/bosh").await.unwrap();
    let lose = |op: &str| {
        let name = format!("{}/{}/{op}", sfp::REPLY_LOST, ConfigSpec::PLURAL);
        fail::cfg(&name, "1*return").unwrap();
        name
    };
    // Each site is armed to fire at its first pass ("1*return"), so one
    // pass means the reply was lost.
    let lost_once = |name: &str| assert_eq!(hits(name), 1, "{name}: the fault did not happen");

    let name = lose("create");
    let created = store.create(&cloud("b5-read-back", 1)).await.unwrap();
    lost_once(&name);
    let stored: Object<ConfigSpec> = store.get(None, "cloud/b5-read-back").await.unwrap();
    assert_eq!(created.metadata.resource_version, stored.metadata.resource_version);
    assert_eq!(created.metadata.uid, stored.metadata.uid);

    let name = lose("spec");
    let mut edited = stored.clone();
    edited.spec.content = cloud("x", 2).spec.content;
    let updated = store.update_spec(&edited).await.unwrap();
    lost_once(&name);
    let stored: Object<ConfigSpec> = store.get(None, "cloud/b5-read-back").await.unwrap();
    assert_eq!(updated.metadata.resource_version, stored.metadata.resource_version);
    assert_eq!(stored.spec.content, edited.spec.content);
    // A stale write that really conflicts is still refused.
    let err = store.update_spec(&edited).await.unwrap_err();
    assert!(err.is_conflict(), "{err}");

    let name = lose("status");
    let mut judged = stored.clone();
    judged.status.conditions.push(bosh_api::meta::Condition::ready(
        true,
        bosh_api::objects::Reason::Converged,
        "read back",
        stored.metadata.generation,
    ));
    let written = store.update_status(&judged).await.unwrap();
    lost_once(&name);
    let stored: Object<ConfigSpec> = store.get(None, "cloud/b5-read-back").await.unwrap();
    assert_eq!(written.metadata.status_revision, stored.metadata.status_revision);
    assert_eq!(stored.status, judged.status);

    let name = lose("delete");
    let gone = store.delete::<ConfigSpec>(None, "cloud/b5-read-back", None).await.unwrap();
    lost_once(&name);
    assert!(gone);
    assert!(store.list::<ConfigSpec>("").await.unwrap().items.is_empty());
    scenario.teardown();
}

/// etcd's quota in B6: room for the deploy, quickly filled.
const QUOTA_BYTES: u64 = 64 * 1024 * 1024;

/// Runs `etcdctl` with `args` against `cluster`; fails the test unless it
/// succeeds.
async fn etcdctl(cluster: &EtcdCluster, args: &[&str]) -> String {
    let mut cmd = cluster.etcdctl();
    cmd.args(args);
    let out = tokio::task::spawn_blocking(move || cmd.output()).await.unwrap().unwrap();
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "etcdctl {args:?}: {text}");
    text
}

/// B6: etcd runs with a 64 MiB `--quota-backend-bytes`; while a recreate
/// is in flight (its `create_vm` held until then, so it surely is)
/// another tenant fills it until etcd raises its NOSPACE
/// alarm. The director says so clearly (`/healthz`: 503, `EtcdNoSpace`,
/// with the repair to make), keeps running without a panic for the window
/// (8 s in CI, 60 s with `FAULTS_FULL=1`), and once an operator deletes
/// the filler, compacts, defragments and disarms the alarm (`etcdctl`), it
/// is healthy again and the recreate completes without breaking an
/// invariant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_b6_a_full_etcd_is_reported_degraded_and_recovers_after_compact_and_defrag() {
    let seed = seed();
    count_panics();
    let quota = QUOTA_BYTES.to_string();
    let cluster = EtcdCluster::start(1, &["--quota-backend-bytes", &quota]).await.unwrap();
    let options = HarnessOptions { store: Some(cluster.config()), ..HarnessOptions::new() };
    let (h, _tmp) = world_with(options).await;
    let window = Duration::from_secs(iterations(8, 60) as u64);
    h.apply("b6", manifest("b6")).await;
    converged(&h, "b6", "deploy").await;
    assert_invariants(&h, "deployed").await;

    // The recreate's create_vm waits until etcd is full, so the change is
    // in flight whatever the speed of the filling.
    let (hold, held) = tokio::sync::watch::channel(true);
    h.faults.set(CpiFaults { hold_creates: Some(held), ..Default::default() });
    let before_recreate = h.faults.count();
    recreate(&h, "b6", 1).await;
    let faults = h.faults.clone();
    eventually(Duration::from_secs(60), "the recreate's create_vm", || {
        let calls = faults.calls();
        async move {
            calls[before_recreate..].iter().any(|c| c.method == "create_vm").then_some(())
        }
    })
    .await
    .unwrap();
    let filler = Store::connect(&cluster.config(), "/filler").await.unwrap();
    let blob = "x".repeat(900 * 1024);
    let mut names = Vec::new();
    let full_at = chrono::Utc::now();
    let full = loop {
        let name = format!("cpi/filler-{}", names.len());
        let o = Object::new(
            ObjectMeta::named(&name),
            ConfigSpec { type_: ConfigType::Cpi, content: serde_json::json!({ "blob": blob }) },
        );
        match filler.create(&o).await {
            Ok(_) => names.push(name),
            Err(e) if e.to_string().contains("database space exceeded") => break Instant::now(),
            Err(e) => panic!("filling etcd: {e}"),
        }
        assert!(names.len() < 500, "etcd never refused a write");
    };
    let pending = h
        .instances("b6")
        .await
        .iter()
        .filter(|i| !bosh_controllers::reconcilers::instance::is_converged(i))
        .count();
    eprintln!(
        "B6: etcd full after {} filler objects of 900 KiB, {pending} instance(s) pending",
        names.len()
    );
    assert!(pending > 0, "the recreate had finished before etcd filled: nothing was in flight");
    // Its create_vm returns into a full etcd.
    hold.send_replace(false);

    // What an operator sees.
    let api = h.api_url.clone();
    let health = eventually(Duration::from_secs(30), "healthz to report NOSPACE", || {
        let api = api.clone();
        async move {
            healthz(&api)
                .await
                .filter(|(code, h)| *code == 503 && h.reason.as_deref() == Some("EtcdNoSpace"))
        }
    })
    .await
    .unwrap()
    .1;
    let reported = full.elapsed();
    eprintln!("B6: healthz after {reported:?}: {health:?}");
    // The window: the director waits, it does not fall over.
    let mut checks = 0u32;
    while full.elapsed() < window {
        assert!(h.running(), "a controller task ended while etcd was full");
        let (code, now) = healthz(&h.api_url).await.expect("healthz answers");
        assert_eq!((code, now.reason.as_deref()), (503, Some("EtcdNoSpace")), "{now:?}");
        checks += 1;
        // The fault's duration: look again in a second.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let repair_at = chrono::Utc::now();
    let creates = cpi_calls(&h, &CREATES, full_at, repair_at).len();

    // The operator's repair.
    for name in &names {
        filler.delete::<ConfigSpec>(None, name, None).await.unwrap();
    }
    // The compaction erases the history the invariant checker reads (I4
    // looks at etcd as it was when each CPI call was admitted): read it
    // now, and check what only history can tell.
    let before = invariants::gather(&h.store, &h.cpi_root()).await.unwrap();
    let history: Vec<String> = invariants::check_world(&before)
        .iter()
        .filter(|v| matches!(v.invariant, Invariant::I4 | Invariant::I5 | Invariant::I6))
        .map(ToString::to_string)
        .collect();
    assert!(history.is_empty(), "while etcd was full: {history:?}");
    let rev = filler.revision().await.unwrap().to_string();
    etcdctl(&cluster, &["compact", &rev]).await;
    etcdctl(&cluster, &["defrag"]).await;
    etcdctl(&cluster, &["alarm", "disarm"]).await;
    let repaired = Instant::now();
    let rev = revision(&h.store).await;
    let api = h.api_url.clone();
    eventually(Duration::from_secs(60), "healthz ok after the repair", || {
        let api = api.clone();
        async move { healthz(&api).await.filter(|(code, _)| *code == 200).map(drop) }
    })
    .await
    .unwrap();
    let healthy = repaired.elapsed();
    first_status_write_after(&h, rev, Duration::from_secs(60)).await;
    let resumed = repaired.elapsed();
    converged(&h, "b6", "after the repair").await;
    let converge = repaired.elapsed();
    eprintln!(
        "B6: degraded {reported:?} after etcd filled ({checks} checks); {creates} CPI creates \
         while full; healthy {healthy:?}, status written {resumed:?}, converged {converge:?} \
         after the repair; {} panics",
        panics()
    );
    assert_eq!(panics(), 0, "panics");
    assert!(h.running(), "a controller task ended");
    assert!(health.message.as_deref().is_some_and(|m| m.contains("alarm disarm")), "{health:?}");
    let after = invariants::gather_with_past(&h.store, &h.cpi_root(), before.past).await.unwrap();
    let v: Vec<String> = invariants::check_world(&after).iter().map(ToString::to_string).collect();
    assert!(v.is_empty(), "after the repair: {} violation(s):\n{}", v.len(), v.join("\n"));
    report(
        "B6",
        1,
        seed,
        &format!(
            "NOSPACE at a 64 MiB quota mid-recreate: /healthz 503 EtcdNoSpace (with the repair) \
             {reported:.1?} after, {checks}/{checks} checks over {window:.0?}; 0 panics, \
             controllers running; after delete+compact+defrag+disarm: healthy {healthy:.1?}, \
             writing {resumed:.1?}, recreate converged {converge:.0?}; I1–I6 hold"
        ),
    );
    h.stop().await.unwrap();
}

/// B1: a 3-member etcd; during a deploy (and, with `FAULTS_FULL=1`, each
/// of 19 recreates after it) the raft leader is killed (SIGKILL) at a
/// seeded moment and left dead until the deploy converges, then restarted.
/// Measured: the election, and the time from the new leader to the
/// director's next status write (target ≤ 10 s); every deploy completes on
/// the two remaining members and I1–I6 hold after each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_b1_killing_the_etcd_leader_mid_deploy_stalls_the_director_briefly() {
    let seed = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut cluster = EtcdCluster::start(3, &[]).await.unwrap();
    let options = HarnessOptions { store: Some(cluster.config()), ..HarnessOptions::new() };
    let (h, _tmp) = world_with(options).await;
    let runs = iterations(1, 20);
    let (mut elections, mut resumes, mut converges) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..runs {
        if run == 0 {
            h.apply("b1", manifest("b1")).await;
            let store = h.store.clone();
            eventually(CONVERGE, "the deployment controller to write the instances", || {
                let store = store.clone();
                async move {
                    let n = store.list::<InstanceSpec>("b1/").await.ok()?.items.len();
                    (n == INSTANCES).then_some(())
                }
            })
            .await
            .unwrap();
        } else {
            recreate(&h, "b1", run as u64).await;
        }
        let delay = Duration::from_millis(rng.random_range(0..3000));
        tokio::time::sleep(delay).await;
        let old = cluster.leader().await.expect("a leader");
        let killed = Instant::now();
        cluster.kill(old);
        let new = cluster.wait_new_leader(old, Duration::from_secs(30)).await.unwrap();
        let election = killed.elapsed();
        let elected = Instant::now();
        let rev = revision(&h.store).await;
        first_status_write_after(&h, rev, Duration::from_secs(120)).await;
        let resumed = elected.elapsed();
        converged(&h, "b1", &format!("run {run}, member m{old} dead")).await;
        let converge = killed.elapsed();
        eprintln!(
            "B1 run {run}: killed leader m{old} {delay:?} in; m{new} leads after {election:?}; \
             status written {resumed:?} after; converged {converge:?} after the kill"
        );
        cluster.restart(old).await.unwrap();
        assert_invariants(&h, &format!("run {run}")).await;
        elections.push(election);
        resumes.push(resumed);
        converges.push(converge);
    }
    let worst = |v: &[Duration]| v.iter().copied().max().unwrap_or_default();
    let target = Duration::from_secs(10);
    assert!(
        worst(&resumes) <= target,
        "the director resumed {:?} after the new leader (target {target:?}): {resumes:?}",
        worst(&resumes)
    );
    report(
        "B1",
        runs,
        seed,
        &format!(
            "leader SIGKILLed mid-deploy, left dead until converged: election ≤ {:.1?}, first \
             status write ≤ {:.1?} after the new leader (target 10 s), converged ≤ {:.0?} after \
             the kill; every deploy completed; I1–I6 hold",
            worst(&elections),
            worst(&resumes),
            worst(&converges)
        ),
    );
    h.stop().await.unwrap();
}
