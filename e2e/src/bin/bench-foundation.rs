//! Foundation benchmarks: the store and the controller runtime against a
//! private etcd (data on /dev/shm), each figure next to a baseline measured
//! in the same run.
//!
//! `cargo run --release -p bosh-e2e --bin bench-foundation -- --objects 10000 --steady-secs 60`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use bosh_api::objects::{ConfigSpec, ConfigType, DeploymentSpec};
use bosh_api::store::{Store, WatchEvent};
use bosh_api::{Object, ObjectMeta};
use bosh_controllers::runtime::{Action, Config, Controller, Ctx, ElectionConfig, Trigger};
use bosh_controllers::server::daemon;
use bosh_test_utils::{TestEnv, eventually};
use clap::Parser;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
struct Args {
    /// Objects for the reconcile and relist benchmarks.
    #[arg(long, default_value_t = 10_000)]
    objects: usize,
    /// Seconds of each throughput run.
    #[arg(long, default_value_t = 5)]
    secs: u64,
    /// Concurrent writers in the throughput runs.
    #[arg(long, default_value_t = 32)]
    writers: usize,
    /// Seconds of steady state to count etcd writes over.
    #[arg(long, default_value_t = 60)]
    steady_secs: u64,
    /// Times to run the no-op reconcile benchmark (each a new controller
    /// and term); the median is reported, so that one noisy run on a
    /// shared machine does not decide the figure.
    #[arg(long, default_value_t = 1)]
    noop_runs: usize,
}

fn cloud_config(name: &str, n: usize) -> Object<ConfigSpec> {
    let content = serde_json::json!({
        "azs": [{"name": "z1"}, {"name": "z2"}],
        "vm_types": [{"name": "small", "cloud_properties": {"cpu": 1, "ram": 1024, "n": n}}],
        "networks": [{"name": "default", "type": "manual", "subnets": [{
            "range": "127.77.0.0/24", "gateway": "127.77.0.1", "azs": ["z1", "z2"],
            "reserved": ["127.77.0.2 - 127.77.0.9"], "static": ["127.77.0.10 - 127.77.0.20"]
        }]}],
        "compilation": {"workers": 2, "az": "z1", "vm_type": "small", "network": "default"}
    });
    Object::new(ObjectMeta::named(name), ConfigSpec { type_: ConfigType::Cloud, content })
}

/// Raw etcd puts/s with `writers` concurrent clients, each on its own key.
async fn raw_put_rate(env: &TestEnv, writers: usize, secs: u64) -> Result<f64> {
    let client = env.store_config().client().await?;
    let value = serde_json::to_vec(&cloud_config("cloud/x", 0))?;
    let count = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (mut c, v, count) = (client.clone(), value.clone(), count.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                // The baseline is etcd itself, so it writes around the store on purpose.
                #[allow(clippy::disallowed_methods)]
                c.put(format!("/raw/{w}"), v.clone(), None).await.unwrap();
                count.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    Ok(count.load(Ordering::Relaxed) as f64 / secs as f64)
}

/// Raw etcd compare-and-swap transactions/s (compare mod_revision, put),
/// to tell etcd's cost of a transaction apart from the store's own.
async fn raw_txn_rate(env: &TestEnv, writers: usize, secs: u64) -> Result<f64> {
    use etcd_client::{Compare, CompareOp, Txn, TxnOp};
    let client = env.store_config().client().await?;
    let value = serde_json::to_vec(&cloud_config("cloud/x", 0))?;
    let count = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (mut c, v, count) = (client.clone(), value.clone(), count.clone());
        tasks.push(tokio::spawn(async move {
            let key = format!("/rawtxn/{w}");
            let mut rev = 0;
            while Instant::now() < deadline {
                let txn = Txn::new()
                    .when([Compare::mod_revision(key.clone(), CompareOp::Equal, rev)])
                    .and_then([TxnOp::put(key.clone(), v.clone(), None)]);
                let resp = c.txn(txn).await.unwrap();
                assert!(resp.succeeded());
                rev = resp.header().unwrap().revision();
                count.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    Ok(count.load(Ordering::Relaxed) as f64 / secs as f64)
}

/// Store compare-and-swap updates/s with `writers` concurrent writers, each on its own object.
async fn cas_rate(store: &Store, writers: usize, secs: u64) -> Result<f64> {
    let count = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for w in 0..writers {
        let mut obj = store.create(&cloud_config(&format!("cloud/cas-{w}"), 0)).await?;
        let (store, count) = (store.clone(), count.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            while Instant::now() < deadline {
                n += 1;
                obj.spec.content["vm_types"][0]["cloud_properties"]["n"] = n.into();
                obj = store.update_spec(&obj).await.unwrap();
                count.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    Ok(count.load(Ordering::Relaxed) as f64 / secs as f64)
}

#[derive(Default)]
struct Counter(AtomicU64);

/// Seconds for an empty reconcile to run once over every object.
async fn noop_reconcile_secs(store: &Store, objects: usize) -> Result<f64> {
    let counter = Arc::new(Counter::default());
    let ctl = Controller::new(
        "bench-noop",
        store.clone(),
        counter.clone(),
        Config {
            workers: 4,
            resync: None,
            trigger: Trigger::Any,
            election: ElectionConfig { ttl: Duration::from_secs(10), holder: "bench".into() },
            ..Config::default()
        },
        |_o: Arc<Object<DeploymentSpec>>, ctx: Arc<Ctx<Counter>>| async move {
            ctx.data.0.fetch_add(1, Ordering::Relaxed);
            Ok::<_, std::io::Error>(Action::await_change())
        },
        |_, _, _| Action::backoff(),
    );
    let shutdown = CancellationToken::new();
    let start = Instant::now();
    let task = tokio::spawn(ctl.run(shutdown.clone()));
    eventually(Duration::from_secs(600), "every object reconciled", || {
        let n = counter.0.load(Ordering::Relaxed) as usize;
        async move { (n >= objects).then_some(()) }
    })
    .await?;
    let secs = start.elapsed().as_secs_f64();
    shutdown.cancel();
    task.await?;
    Ok(secs)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let env = TestEnv::etcd_only().await?;
    let store = Store::connect(&env.store_config(), "/bosh").await?;
    println!(
        "bench-foundation: {} objects, {} writers, {} s runs",
        args.objects, args.writers, args.secs
    );

    let raw = raw_put_rate(&env, args.writers, args.secs).await?;
    let raw_txn = raw_txn_rate(&env, args.writers, args.secs).await?;
    let cas = cas_rate(&store, args.writers, args.secs).await?;
    println!("raw etcd put/s            {raw:>10.0}");
    println!("raw etcd CAS txn/s        {raw_txn:>10.0}   ratio {:.2}", raw_txn / raw);
    println!("store CAS update/s        {cas:>10.0}   ratio {:.2}", cas / raw);

    // Deployments with valid manifests, for the reconcile and relist runs.
    let t = Instant::now();
    let mut creates = Vec::new();
    let sem = Arc::new(tokio::sync::Semaphore::new(args.writers));
    for i in 0..args.objects {
        let (store, sem) = (store.clone(), sem.clone());
        creates.push(tokio::spawn(async move {
            let _p = sem.acquire().await.unwrap();
            let name = format!("dep-{i:05}");
            let manifest = serde_json::json!({
                "name": name,
                "releases": [{"name": "app", "version": "1"}],
                "stemcells": [{"alias": "default", "os": "ubuntu-jammy", "version": "1"}],
                "update": {"canaries": 1, "max_in_flight": 2, "canary_watch_time": 1000, "update_watch_time": 1000},
                "instance_groups": [{"name": "web", "instances": 1, "azs": ["z1"], "vm_type": "small",
                    "stemcell": "default", "networks": [{"name": "default"}],
                    "jobs": [{"name": "web", "release": "app"}]}]
            });
            let d = Object::new(ObjectMeta::named(name), DeploymentSpec { manifest, ..Default::default() });
            store.create(&d).await.unwrap();
        }));
    }
    for c in creates {
        c.await?;
    }
    println!("created {} deployments in {:.2} s", args.objects, t.elapsed().as_secs_f64());

    let t = Instant::now();
    let list = store.list::<DeploymentSpec>("").await?;
    let list_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut w = store.watch::<DeploymentSpec>(None);
    let relist_secs = match w.next().await {
        Some(WatchEvent::Relisted { objects, .. }) if objects.len() == list.items.len() => {
            t.elapsed().as_secs_f64()
        }
        other => anyhow::bail!("expected a relist of {} objects, got {other:?}", list.items.len()),
    };
    drop(w);
    println!("list of {} objects        {list_secs:>8.3} s", list.items.len());
    println!("watch relist of {} objects {relist_secs:>7.3} s", list.items.len());

    let mut runs = Vec::new();
    for _ in 0..args.noop_runs.max(1) {
        runs.push(noop_reconcile_secs(&store, args.objects).await?);
    }
    let all: Vec<String> = runs.iter().map(|s| format!("{s:.3}")).collect();
    runs.sort_by(f64::total_cmp);
    let secs = runs[runs.len() / 2];
    println!(
        "no-op reconciles/s        {:>10.0}   ({} objects in {secs:.2} s, including election and relist; median of {} runs: {} s)",
        args.objects as f64 / secs,
        args.objects,
        runs.len(),
        all.join(", ")
    );

    // Steady state: the real validators over everything, resyncing every 5 s.
    store.create(&cloud_config("cloud/default", 0)).await?;
    let shutdown = CancellationToken::new();
    let opts = daemon::Options {
        workers: 4,
        resync: Duration::from_secs(5),
        election: ElectionConfig { ttl: Duration::from_secs(10), holder: "bench".into() },
        health: Default::default(),
        limits: Default::default(),
        render: Default::default(),
        orphan_vms: None,
        errand_timeout: std::time::Duration::from_secs(
            bosh_api::objects::DEFAULT_ERRAND_TIMEOUT_SECS,
        ),
        reflectors: Default::default(),
    };
    let t = Instant::now();
    let run = tokio::spawn(daemon::run(store.clone(), opts, shutdown.clone()));
    // Poll once a second: listing 10,000 objects continuously would itself
    // load etcd and slow down what is being measured.
    loop {
        let l = store.list::<DeploymentSpec>("").await?;
        if l.items.iter().filter(|d| d.status.observed_revision > 0).count() >= args.objects {
            break;
        }
        anyhow::ensure!(t.elapsed() < Duration::from_secs(900), "validation did not finish");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    println!(
        "validated {} deployments in {:.2} s (status written once each)",
        args.objects,
        t.elapsed().as_secs_f64()
    );
    let before = store.revision().await?;
    tokio::time::sleep(Duration::from_secs(args.steady_secs)).await;
    let after = store.revision().await?;
    println!(
        "etcd writes in {} s of steady state (resync every 5 s, {} objects): {}",
        args.steady_secs,
        args.objects + 1,
        after - before
    );
    shutdown.cancel();
    run.await?;
    Ok(())
}
