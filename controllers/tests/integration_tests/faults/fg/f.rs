//! F. Bad input: garbage in etcd (F2), a hostile agent (F3), hostile
//! release tarballs (F4), a flipped blob byte (F5), a contested static IP
//! (F8).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bosh_api::meta::find_condition;
use bosh_api::objects::*;
use bosh_api::store::{Store, WatchEvent};
use bosh_api::{ConditionStatus, Kind, Object};
use bosh_controllers::testing::{Harness, WebManifest};
use bosh_controllers::validate::INVALID;
use bosh_test_utils::eventually;
use futures::StreamExt;
use rand::{Rng, SeedableRng};

use super::super::super::deploy::DeployHarness;
use super::super::{CONVERGE, assert_invariants, iterations, report, seed, world};
use super::{Logs, Panics, leader_terms, raw_etcd};

/// One kind garbage is written under: its key segment, its `kind`, whether
/// its names are scoped to a deployment, and a valid spec to start from.
struct KindInfo {
    plural: &'static str,
    kind: &'static str,
    scoped: bool,
    spec: serde_json::Value,
    /// Whether a controller of the harness watches the kind (and so logs
    /// what it quarantines).
    watched: bool,
}

fn info<S: Kind + Default>(watched: bool) -> KindInfo {
    KindInfo {
        plural: S::PLURAL,
        kind: S::KIND,
        scoped: S::SCOPED,
        spec: serde_json::to_value(S::default()).unwrap(),
        watched,
    }
}

/// Every kind the director stores.
fn kinds() -> Vec<KindInfo> {
    vec![
        info::<DeploymentSpec>(true),
        info::<ConfigSpec>(false),
        info::<ReleaseSpec>(false),
        info::<StemcellSpec>(true),
        info::<InstanceSpec>(true),
        info::<DiskSpec>(false),
        info::<TaskSpec>(true),
        info::<EventSpec>(false),
        info::<CompiledPackageSpec>(false),
    ]
}

/// What the director must make of a garbage write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Left out of listings and caches, reported as quarantined.
    Quarantined,
    /// A Deployment that decodes, with an `Invalid` condition.
    Invalid,
}

/// One malformed object, written straight to etcd.
struct Garbage {
    kind: usize,
    /// Its key name (relative to the kind's spec/status prefix).
    name: String,
    /// A printable part of the name, to find it in logs.
    tag: String,
    spec: Vec<u8>,
    status: Option<Vec<u8>>,
    what: &'static str,
    expect: Expect,
}

/// A valid stored record of kind `k` under key name `name`.
fn record(k: &KindInfo, name: &str) -> serde_json::Value {
    let mut meta = serde_json::json!({ "name": name, "uid": "f2" });
    if k.scoped {
        let (d, n) = name.split_once('/').unwrap();
        meta = serde_json::json!({ "name": n, "deployment": d, "uid": "f2" });
    }
    serde_json::json!({
        "apiVersion": API_VERSION,
        "kind": k.kind,
        "metadata": meta,
        "spec": k.spec,
    })
}

/// Random printable junk of `len` characters, JSON punctuation included.
fn junk(rng: &mut impl Rng, len: usize) -> String {
    const CHARS: &[u8] = b"{}[]:,\"\\ abc019-_\t\n";
    (0..len).map(|_| CHARS[rng.random_range(0..CHARS.len())] as char).collect()
}

/// Garbage object `i`: a random kind and a random way of being wrong.
fn garbage(rng: &mut impl Rng, kinds: &[KindInfo], i: usize) -> Garbage {
    let kind = rng.random_range(0..kinds.len());
    let k = &kinds[kind];
    let scope = |n: String| if k.scoped { format!("f2-junk/{n}") } else { n };
    let tag = format!("f2g-{i}x");
    let mut name = scope(tag.clone());
    let mut status = None;
    let mut expect = Expect::Quarantined;
    let valid = serde_json::to_vec(&record(k, &name)).unwrap();
    // Deployments that decode but are invalid are the validator's case:
    // a good share of the Deployments.
    let pick = if k.kind == DeploymentSpec::KIND && rng.random_bool(0.4) {
        10
    } else {
        rng.random_range(0..10)
    };
    let (what, spec) = match pick {
        0 => ("bad JSON", format!("{{\"apiVersion\": {}", junk(rng, 40)).into_bytes()),
        1 => {
            let mut r = record(k, &name);
            r["apiVersion"] = "bosh.io/v0alpha0".into();
            ("old apiVersion", serde_json::to_vec(&r).unwrap())
        }
        2 => {
            let mut r = record(k, &name);
            let other = &kinds[(kind + 1) % kinds.len()];
            r["kind"] = other.kind.into();
            ("wrong kind", serde_json::to_vec(&r).unwrap())
        }
        3 => ("truncated", valid[..rng.random_range(1..valid.len())].to_vec()),
        4 => {
            // ~1.4 MiB: just under etcd's 1.5 MiB request limit.
            let big = "A".repeat(1_450_000);
            let mut r = record(k, &name);
            r["spec"] = big.into();
            let mut v = serde_json::to_vec(&r).unwrap();
            if rng.random_bool(0.5) {
                v.truncate(v.len() - 3);
                ("1.4 MiB, unterminated", v)
            } else {
                ("1.4 MiB, spec of the wrong type", v)
            }
        }
        5 => {
            let mut b: Vec<u8> = (0..rng.random_range(1..4096)).map(|_| rng.random()).collect();
            b[0] = 0xff;
            ("binary", b)
        }
        6 => {
            let mut r = record(k, &name);
            r["metadata"]["name"] = "someone-else".into();
            ("metadata names another key", serde_json::to_vec(&r).unwrap())
        }
        7 => {
            status = Some(format!("{{\"phase\": {}", junk(rng, 30)).into_bytes());
            ("garbage status", valid)
        }
        8 => {
            name = scope(format!("{tag};rm -rf $(touch /tmp/f2)\n../x"));
            ("hostile key name", serde_json::to_vec(&record(k, &name)).unwrap())
        }
        9 => ("empty", Vec::new()),
        _ if k.kind == DeploymentSpec::KIND => {
            expect = Expect::Invalid;
            let mut r = record(k, &name);
            r["spec"]["manifest"] =
                serde_json::json!({"name": 7, "instance_groups": junk(rng, 20)});
            ("manifest of the wrong shape", serde_json::to_vec(&r).unwrap())
        }
        _ => ("bad JSON", junk(rng, 64).into_bytes()),
    };
    Garbage { kind, name, tag, spec, status, what, expect }
}

/// Names `list` reports quarantined for the kind whose key segment is `plural`.
async fn quarantined(store: &Store, plural: &str) -> BTreeSet<String> {
    async fn names<S: Kind>(store: &Store) -> BTreeSet<String> {
        let l = store.list::<S>("").await.unwrap();
        l.quarantined.into_iter().map(|q| q.name).collect()
    }
    match plural {
        "deployments" => names::<DeploymentSpec>(store).await,
        "configs" => names::<ConfigSpec>(store).await,
        "releases" => names::<ReleaseSpec>(store).await,
        "stemcells" => names::<StemcellSpec>(store).await,
        "instances" => names::<InstanceSpec>(store).await,
        "disks" => names::<DiskSpec>(store).await,
        "tasks" => names::<TaskSpec>(store).await,
        "events" => names::<EventSpec>(store).await,
        "compiledpackages" => names::<CompiledPackageSpec>(store).await,
        other => panic!("unknown kind {other}"),
    }
}

/// A new watch of the kind whose key segment is `plural`, from `from`
/// (`None`: a relist), must report every name of `want` as quarantined
/// within a minute, without ever ending. Returns how long it took.
async fn watch_reports(
    store: &Store,
    plural: &str,
    from: Option<i64>,
    want: &BTreeSet<String>,
) -> Duration {
    async fn run<S: Kind>(store: &Store, from: Option<i64>, want: &BTreeSet<String>) -> Duration {
        let started = Instant::now();
        let mut w = store.watch::<S>(from);
        let mut seen = BTreeSet::new();
        while !want.is_subset(&seen) {
            let ev = tokio::time::timeout(Duration::from_secs(60), w.next()).await;
            let missing: Vec<_> = want.difference(&seen).take(3).collect();
            match ev.unwrap_or_else(|_| panic!("{}: watch stalled; missing {missing:?}", S::KIND)) {
                Some(WatchEvent::Relisted { quarantined, .. }) => {
                    seen.extend(quarantined.into_iter().map(|q| q.name))
                }
                Some(WatchEvent::Quarantined(q)) => {
                    seen.insert(q.name);
                }
                Some(_) => {}
                None => panic!("{}: the watch ended", S::KIND),
            }
        }
        started.elapsed()
    }
    match plural {
        "deployments" => run::<DeploymentSpec>(store, from, want).await,
        "configs" => run::<ConfigSpec>(store, from, want).await,
        "releases" => run::<ReleaseSpec>(store, from, want).await,
        "stemcells" => run::<StemcellSpec>(store, from, want).await,
        "instances" => run::<InstanceSpec>(store, from, want).await,
        "disks" => run::<DiskSpec>(store, from, want).await,
        "tasks" => run::<TaskSpec>(store, from, want).await,
        "events" => run::<EventSpec>(store, from, want).await,
        "compiledpackages" => run::<CompiledPackageSpec>(store, from, want).await,
        other => panic!("unknown kind {other}"),
    }
}

/// A stream of simple reconciles: `n` deletion tasks of a deployment that
/// does not exist, which the task controller ends at once. Returns the
/// time from the first write to the last task's end (as stamped by the
/// controller).
async fn probe_round(h: &Harness, round: &str, n: usize) -> Duration {
    let started = chrono::Utc::now();
    let mut ids = Vec::new();
    for _ in 0..n {
        let t = bosh_controllers::tasks::create_change_task(
            &h.store,
            round,
            "f2-nowhere",
            "f2",
            TaskChange::Delete,
        )
        .await
        .unwrap();
        ids.push(t.spec.id);
    }
    let store = h.store.clone();
    let last = eventually(Duration::from_secs(120), &format!("{round}: probes to end"), || {
        let (store, ids) = (store.clone(), ids.clone());
        async move {
            let mut last = started;
            for id in ids {
                let t: Object<TaskSpec> =
                    store.get(None, &bosh_controllers::tasks::task_name(id)).await.ok()?;
                last = last.max(t.status.finished_at?);
            }
            Some(last)
        }
    })
    .await
    .unwrap();
    let took = (last - started).to_std().unwrap();
    eprintln!("{round}: {n} probe reconciles in {took:?}");
    took
}

/// F2: malformed objects written straight to etcd under every kind's keys
/// — bad JSON, old apiVersion, wrong kind, truncated, ~1.4 MiB, binary,
/// metadata naming another key, a garbage status, hostile key names,
/// empty values, and Deployments whose manifest has the wrong shape —
/// are each quarantined (left out of listings and caches, reported by
/// listings and watches, logged by the controllers that watch the kind) or,
/// for a Deployment that decodes, given an `Invalid` condition. No
/// controller panics or restarts; new watches (a relist, and a catch-up
/// over the garbage's revisions, which etcd batches into large responses)
/// neither fail nor stall; a deployment update goes through with the
/// garbage present; and a stream of simple reconciles loses less than 10%
/// of its throughput: a round with the garbage written against a round
/// just before, up to three tries (the host's other load only ever slows
/// single rounds; a slowdown the garbage causes fails every try). CI
/// writes 100 objects, the full run 1,000.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_f2_malformed_objects_in_etcd_are_quarantined_or_invalid() {
    let seed = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let logs = Logs::capture("info");
    let panics = Panics::count();
    let n = iterations(100, 1000);
    let probes = iterations(300, 1000);
    let (h, _tmp) = world(150).await;
    let etcd = raw_etcd(&h).await;
    let task = h.apply("f2", WebManifest::hello("f2", 1).value()).await;
    h.task_done(task, CONVERGE).await.unwrap();
    let terms = leader_terms(&etcd, &h).await;

    // The garbage.
    let kinds = kinds();
    let items: Vec<Garbage> = (0..n).map(|i| garbage(&mut rng, &kinds, i)).collect();
    let before_garbage = h.store.revision().await.unwrap();
    let root = h.store.root().to_string();
    let spec_key = |g: &Garbage| format!("{root}/{}/spec/{}", kinds[g.kind].plural, g.name);
    let status_key = |g: &Garbage| format!("{root}/{}/status/{}", kinds[g.kind].plural, g.name);
    let write_all = || async {
        for g in &items {
            // Straight to etcd on purpose: this is what the store never writes.
            #[allow(clippy::disallowed_methods)]
            {
                if let Some(s) = &g.status {
                    etcd.clone().put(status_key(g), s.clone(), None).await.unwrap();
                }
                etcd.clone().put(spec_key(g), g.spec.clone(), None).await.unwrap();
            }
        }
    };
    let delete_all = || async {
        for g in &items {
            #[allow(clippy::disallowed_methods)]
            {
                etcd.clone().delete(spec_key(g), None).await.unwrap();
                etcd.clone().delete(status_key(g), None).await.unwrap();
            }
        }
    };
    let started = Instant::now();
    write_all().await;
    let mut by_what: BTreeMap<&str, usize> = BTreeMap::new();
    for g in &items {
        *by_what.entry(g.what).or_default() += 1;
    }
    let bytes: usize = items.iter().map(|g| g.spec.len()).sum();
    eprintln!("wrote {n} objects ({bytes} bytes) in {:?}: {by_what:?}", started.elapsed());

    // Each is quarantined (listings) or Invalid.
    let mut want: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for g in items.iter().filter(|g| g.expect == Expect::Quarantined) {
        want.entry(kinds[g.kind].plural).or_default().insert(g.name.clone());
    }
    let invalid: Vec<String> =
        items.iter().filter(|g| g.expect == Expect::Invalid).map(|g| g.name.clone()).collect();
    for (plural, names) in &want {
        let got = quarantined(&h.store, plural).await;
        let missing: Vec<_> = names.difference(&got).collect();
        assert!(missing.is_empty(), "{plural}: not quarantined: {missing:?}");
    }
    let store = h.store.clone();
    eventually(Duration::from_secs(60), "invalid deployments to be marked Invalid", || {
        let (store, invalid) = (store.clone(), invalid.clone());
        async move {
            for name in &invalid {
                let d: Object<DeploymentSpec> = store.get(None, name).await.ok()?;
                let c = find_condition(&d.status.conditions, INVALID)?;
                (c.status == ConditionStatus::True).then_some(())?;
            }
            Some(())
        }
    })
    .await
    .unwrap();
    // The controllers watching a kind logged each of its quarantined objects.
    let watched: Vec<&Garbage> =
        items.iter().filter(|g| g.expect == Expect::Quarantined && kinds[g.kind].watched).collect();
    eventually(Duration::from_secs(30), "a log line for every quarantined object", || {
        let missing =
            watched.iter().find(|g| logs.lines_with(&["quarantined an object", &g.tag]).is_empty());
        async move { missing.is_none().then_some(()) }
    })
    .await
    .unwrap();

    // New watches relist and catch up through the garbage without stalling.
    let mut relist = Duration::ZERO;
    let mut catch_up = Duration::ZERO;
    for (plural, names) in &want {
        relist = relist.max(watch_reports(&h.store, plural, None, names).await);
        catch_up = catch_up.max(watch_reports(&h.store, plural, Some(before_garbage), names).await);
    }

    // Other objects keep reconciling: a deployment update, and the probes.
    let mut m = WebManifest::hello("f2", 1);
    m.properties = serde_json::json!({"port": 8080, "greeting": "still here"});
    let update = Instant::now();
    let t = h.apply("f2", m.value()).await;
    h.task_done(t, CONVERGE).await.unwrap();
    let update = update.elapsed();

    // Garbage among f2's own instances holds f2 (it might hide a VM and its
    // addresses) with a condition naming it, and touches nothing; once
    // removed, f2 goes on.
    let own = format!("{root}/instances/spec/f2/web/f2-garbage");
    #[allow(clippy::disallowed_methods)]
    etcd.clone().put(own.clone(), "{\"apiVersion\": 1", None).await.unwrap();
    let vms = h.cpi.calls();
    let vm_of = |i: &Object<InstanceSpec>| {
        let s = &i.status;
        (s.vm_cid.clone(), s.agent_id.clone(), s.applied_hash.clone(), s.phase.clone())
    };
    let before_block: Vec<_> = h.instances("f2").await.iter().map(vm_of).collect();
    m.properties["greeting"] = "held".into();
    let t = h.apply("f2", m.value()).await;
    let store = h.store.clone();
    let held =
        eventually(Duration::from_secs(60), "f2 to be held by its unreadable instance", || {
            let store = store.clone();
            async move {
                let d: Object<DeploymentSpec> = store.get(None, "f2").await.ok()?;
                let c = find_condition(&d.status.conditions, "Ready")?;
                (c.reason == "InstanceUnreadable" && c.observed_revision == d.metadata.generation)
                    .then(|| c.message.clone())
            }
        })
        .await
        .unwrap();
    assert!(held.contains("f2/web/f2-garbage"), "{held}");
    let after_block: Vec<_> = h.instances("f2").await.iter().map(vm_of).collect();
    assert_eq!(before_block, after_block, "an instance of the held deployment changed");
    assert_eq!(h.cpi.calls(), vms, "CPI calls while held");
    #[allow(clippy::disallowed_methods)]
    etcd.clone().delete(own, None).await.unwrap();
    m.properties["greeting"] = "released".into();
    let t = h.apply("f2", m.value()).await;
    h.task_done(t, CONVERGE).await.unwrap();

    // Removed, the garbage leaves nothing behind.
    delete_all().await;
    for plural in want.keys() {
        assert!(quarantined(&h.store, plural).await.is_empty(), "{plural}: still quarantined");
    }

    // Throughput of simple reconciles, without and with the garbage.
    let mut tries = Vec::new();
    for attempt in 1..=3 {
        let clean = probe_round(&h, &format!("try {attempt}: clean"), probes).await;
        write_all().await;
        let dirty = probe_round(&h, &format!("try {attempt}: garbage"), probes).await;
        delete_all().await;
        let drop = (dirty.as_secs_f64() / clean.as_secs_f64() - 1.0).max(0.0) * 100.0;
        eprintln!("try {attempt}: garbage {dirty:?} vs clean {clean:?} ({drop:.1}% slower)");
        tries.push((drop, dirty, clean));
        if drop < 10.0 {
            break;
        }
    }
    let (drop, with_garbage, baseline) = tries.last().copied().unwrap();
    assert_eq!(panics.get(), 0, "panics:\n{}", logs.text());
    assert_eq!(leader_terms(&etcd, &h).await, terms, "a controller restarted");
    assert!(logs.lines_with(&["leadership lost"]).is_empty(), "a controller lost leadership");
    assert!(drop < 10.0, "reconcile throughput dropped with the garbage in every try: {tries:?}");
    assert_invariants(&h, "after F2").await;
    report(
        "F2",
        n,
        seed,
        &format!(
            "{} quarantined, {} Invalid; 0 panics, 0 restarts; new watch relist ≤ {relist:.1?}, \
             catch-up ≤ {catch_up:.1?}; update with garbage {update:.0?}; {probes} probe \
             reconciles {with_garbage:.1?} vs {baseline:.1?} clean ({drop:.1}% slower, try {})",
            n - invalid.len(),
            invalid.len(),
            tries.len()
        ),
    );
    h.stop().await.unwrap();
}
