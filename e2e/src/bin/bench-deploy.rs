//! Deployment benchmarks (issue 6), each figure next to a baseline from the
//! same run.
//!
//! 1. Converge time of N instances (default 100) of the example `hello`
//!    job on the local CPI, `canaries: 1`, `max_in_flight: M` (default 10),
//!    from the deployment write to its task done, against the ideal wall
//!    time given the instances' own update times (each instance's
//!    "Updating instance" started → finished: VM create, agent answer,
//!    apply, pre-start, start, watch): canary + (sum of the rest) / M. The
//!    ratio is the director's overhead. Packages are compiled beforehand
//!    by a one-instance deployment, so compilation is not in the figure.
//! 2. Steady state for `--steady-secs` (default 300) with the N instances
//!    running: etcd writes (revision delta), CPI calls and agent requests
//!    by method, with the controllers resyncing every 2 s. Target: 0.
//!
//! ```sh
//! CARGO_TARGET_DIR=/work/target-bench cargo build --release -p bosh-agent -p bosh-e2e --bin bench-deploy
//! /work/target-bench/release/bench-deploy --instances 100 --max-in-flight 10 --steady-secs 300
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use bosh_api::agent::Method;
use bosh_api::objects::InstanceHealth;
use bosh_api::objects::{EventSpec, EventState, InstanceSpec};
use bosh_controllers::tasks::task_name;
use bosh_controllers::testing::{
    Harness, HarnessOptions, NetworkSize, WebManifest, example_release,
};
use bosh_test_utils::eventually;
use clap::Parser;

#[derive(Debug, Parser)]
struct Args {
    /// Instances of the deployment.
    #[arg(long, default_value_t = 100)]
    instances: u32,
    /// `update.max_in_flight`.
    #[arg(long, default_value_t = 10)]
    max_in_flight: u32,
    /// How long to watch the converged deployment.
    #[arg(long, default_value_t = 300)]
    steady_secs: u64,
    /// How long the rollout may take before the run fails, printing what
    /// holds it.
    #[arg(long, default_value_t = 1800)]
    deadline_secs: u64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt().with_env_filter("warn").with_writer(std::io::stderr).init();
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(run(args))
}

fn manifest(name: &str, instances: u32, max_in_flight: u32) -> Result<serde_json::Value> {
    let watch_time = "0-60000".into();
    Ok(WebManifest { max_in_flight, watch_time, ..WebManifest::hello(name, instances) }.value())
}

/// Each instance's update duration, from its task events, in start order.
async fn update_times(h: &Harness, task: u64) -> Result<Vec<(String, Duration)>> {
    let events = h.store.list::<EventSpec>(&format!("{}/", task_name(task))).await?.items;
    let mut started = BTreeMap::new();
    let mut out = Vec::new();
    for e in events.iter().map(|e| &e.spec).filter(|e| e.stage == "Updating instance") {
        match e.state {
            EventState::Started => {
                started.insert(e.object.clone(), e.time);
            }
            EventState::Finished => {
                if let Some(s) = started.get(&e.object).copied() {
                    out.push((s, e.object.clone(), (e.time - s).to_std().unwrap_or_default()));
                }
            }
            _ => {}
        }
    }
    out.sort_by_key(|(s, _, _)| *s);
    Ok(out.into_iter().map(|(_, o, d)| (o, d)).collect())
}

fn agent_calls(h: &Harness) -> BTreeMap<&'static str, u64> {
    Method::ALL
        .iter()
        .map(|m| (m.as_str(), h.director.agents.calls().get(*m)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// Prints what holds a rollout that did not finish: the deployment's Ready
/// condition and every instance not ready at its generation.
async fn diagnose(h: &Harness, name: &str) {
    use bosh_api::meta::find_condition;
    use bosh_api::objects::ConditionType;
    if let Ok(d) = h.store.get::<bosh_api::objects::DeploymentSpec>(None, name).await {
        let ready = find_condition(&d.status.conditions, ConditionType::Ready);
        println!(
            "deployment {name}: generation {}, ready {:?}",
            d.metadata.generation,
            ready.map(|c| (&c.status, &c.reason, &c.message, c.observed_revision))
        );
    }
    let all = h.store.list::<InstanceSpec>(&format!("{name}/")).await.map(|l| l.items);
    for i in all.unwrap_or_default() {
        let ready = find_condition(&i.status.conditions, ConditionType::Ready);
        let settled = ready.is_some_and(|c| {
            c.status == bosh_api::ConditionStatus::True
                && c.observed_revision == i.metadata.generation
        });
        if !settled {
            println!(
                "  not ready: {} generation {} phase {:?} health {:?} ready {:?}",
                i.metadata.name,
                i.metadata.generation,
                i.status.phase,
                i.status.health,
                ready.map(|c| (&c.status, &c.reason, &c.message, c.observed_revision))
            );
        }
    }
}

async fn run(args: Args) -> Result<()> {
    // A /16: past one /24's ~230 instances, up to 1,000 and more.
    let net = HarnessOptions { network: NetworkSize::Slash16, ..HarnessOptions::new(170) };
    let h = Harness::start(net).await?;
    let tmp = tempfile::tempdir()?;
    h.upload_release(&example_release(tmp.path())?).await?;
    h.upload_stemcell().await?;

    // Packages compile once, for a one-instance deployment (not timed).
    let warm = h.create_deployment("warmup", manifest("warmup", 1, 1)?).await?;
    h.task_done(warm, Duration::from_secs(1800)).await?;

    let (n, m) = (args.instances, args.max_in_flight);
    println!("== converge: {n} instances, canaries 1, max_in_flight {m} ==");
    let t = Instant::now();
    let task = h.create_deployment("bench", manifest("bench", n, m)?).await?;
    if let Err(e) = h.task_done(task, Duration::from_secs(args.deadline_secs)).await {
        diagnose(&h, "bench").await;
        return Err(e);
    }
    let wall = t.elapsed();
    let times = update_times(&h, task).await?;
    if times.len() != n as usize {
        bail!("{} instance updates recorded, expected {n}", times.len());
    }
    let canary = times[0].1;
    let rest: Duration = times[1..].iter().map(|(_, d)| *d).sum();
    let sum = canary + rest;
    let ideal = canary + rest / m;
    let mut sorted: Vec<Duration> = times.iter().map(|(_, d)| *d).collect();
    sorted.sort();
    println!(
        "wall {:.2} s; instance update times: sum {:.2} s, min {:.2} s, median {:.2} s, max {:.2} s",
        wall.as_secs_f64(),
        sum.as_secs_f64(),
        sorted[0].as_secs_f64(),
        sorted[sorted.len() / 2].as_secs_f64(),
        sorted[sorted.len() - 1].as_secs_f64()
    );
    println!(
        "ideal wall (canary + rest / {m}) {:.2} s; wall / ideal = {:.2}x (director overhead)",
        ideal.as_secs_f64(),
        wall.as_secs_f64() / ideal.as_secs_f64()
    );
    println!("agent requests during the converge: {:?}", agent_calls(&h));

    // Steady state starts once the health monitor has seen every agent
    // running (its last transition writes).
    let store = h.store.clone();
    eventually(Duration::from_secs(120), "every instance observed running", || {
        let store = store.clone();
        async move {
            let all = store.list::<InstanceSpec>("").await.ok()?.items;
            all.iter().all(|i| i.status.health == Some(InstanceHealth::Running)).then_some(())
        }
    })
    .await?;
    println!("== steady state: {} s ==", args.steady_secs);
    let (rev, cpi, agents) = (h.store.revision().await?, h.cpi.calls(), agent_calls(&h));
    tokio::time::sleep(Duration::from_secs(args.steady_secs)).await;
    let after = agent_calls(&h);
    let delta: BTreeMap<&str, u64> = after
        .iter()
        .map(|(k, v)| (*k, v - agents.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect();
    println!(
        "etcd writes {}, CPI calls {}, agent applies {}, agent requests {:?}",
        h.store.revision().await? - rev,
        h.cpi.calls() - cpi,
        delta.get("apply").copied().unwrap_or(0),
        delta
    );
    h.stop().await
}
