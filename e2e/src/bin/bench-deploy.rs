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
//!    A second baseline, the gapless wall, replays the measured durations
//!    on `M` slots with no delay between an instance's end and the next
//!    one's start: what is left above it is the director's alone.
//!    Alongside: the etcd read requests the director sent during the
//!    rollout (the store's counter), and how many of them were listings
//!    of Instances and CompiledPackages.
//! 2. Steady state for `--steady-secs` (default 300) with the N instances
//!    running: etcd writes (revision delta), CPI calls and agent requests
//!    by method, with the controllers resyncing every 2 s. Target: 0.
//!    Also the reads and Instance listings over the window.
//!
//! ```sh
//! CARGO_TARGET_DIR=/work/target-bench cargo build --release -p bosh-agent -p bosh-e2e --bin bench-deploy
//! /work/target-bench/release/bench-deploy --instances 100 --max-in-flight 10 --steady-secs 300
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use bosh_api::agent::Method;
use bosh_api::objects::{
    CompiledPackageSpec, EventSpec, EventState, InstanceHealth, InstanceSpec, TaskSpec, TaskState,
};
use bosh_api::store::Store;
use bosh_api::{Kind, Object};
use bosh_controllers::libs::tasks::task_name;
use bosh_controllers::testing::{Harness, HarnessOptions, WebManifest, example_release};
use bosh_test_utils::{SubnetLease, eventually};
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
    /// Deploy onto container VMs (a bridged /24: up to about 230
    /// instances) instead of process VMs on a loopback /16.
    #[arg(long)]
    containers: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    // `RUST_LOG` (e.g. `warn,bosh_controllers::reconcilers::deployment=debug`) shows where a
    // rollout spends its time.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(run(args))
}

fn manifest(name: &str, instances: u32, max_in_flight: u32) -> Result<serde_json::Value> {
    let watch_time = "0-60000".into();
    Ok(WebManifest { max_in_flight, watch_time, ..WebManifest::hello(name, instances) }.value())
}

/// One instance's update, from its task events.
struct Update {
    object: String,
    started: chrono::DateTime<chrono::Utc>,
    took: Duration,
}

/// Each instance's update, from its task events, in start order.
async fn update_times(h: &Harness, task: u64) -> Result<Vec<Update>> {
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
                    let took = (e.time - s).to_std().unwrap_or_default();
                    out.push(Update { object: e.object.clone(), started: s, took });
                }
            }
            _ => {}
        }
    }
    out.sort_by_key(|u| u.started);
    Ok(out)
}

/// How long each instance after the canary waited for the director once a
/// rollout slot was free for it: the first `m` from the canary's end, each
/// later one from the `k - m`-th finish. Mean, max, and the sum over `m`
/// slots (what the director added to the wall time).
fn refill_delays(times: &[Update], m: usize) -> (Duration, Duration, Duration) {
    let end = |u: &Update| u.started + u.took;
    let canary_end = end(&times[0]);
    let mut ends: Vec<_> = times[1..].iter().map(end).collect();
    ends.sort();
    let delays: Vec<Duration> = times[1..]
        .iter()
        .enumerate()
        .map(|(k, u)| {
            let free = if k < m { canary_end } else { ends[k - m] };
            (u.started - free).to_std().unwrap_or_default()
        })
        .collect();
    let sum: Duration = delays.iter().sum();
    let n = delays.len().max(1) as u32;
    (sum / n, delays.iter().copied().max().unwrap_or_default(), sum / m.max(1) as u32)
}

/// The wall time of a director that adds nothing: the canary alone, then
/// each later instance, in the order they started, on the first of `m`
/// slots to come free, at once. Unlike `canary + rest / m` it keeps the
/// measured durations' lumps (a slow instance in the last round makes its
/// slot finish late for any director), so `wall / gapless` is the
/// director's own share.
fn gapless(times: &[Update], m: usize) -> Duration {
    let canary = times[0].took;
    let mut slots = vec![canary; m.max(1)];
    for u in &times[1..] {
        let first = slots.iter_mut().min().expect("at least one slot");
        *first += u.took;
    }
    slots.into_iter().max().unwrap_or(canary)
}

fn agent_calls(h: &Harness) -> BTreeMap<&'static str, u64> {
    Method::ALL
        .iter()
        .map(|m| (m.as_str(), h.director.agents.calls().get(*m)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// Waits (up to `deadline`) for task `id` to end done, reading through
/// `store`.
async fn task_done(store: &Store, id: u64, deadline: Duration) -> Result<()> {
    let (state, result) = eventually(deadline, &format!("task {id} to end"), || async move {
        let t: Object<TaskSpec> = store.get(None, &task_name(id)).await.ok()?;
        t.status.state.is_finished().then_some((t.status.state, t.status.result))
    })
    .await?;
    if state != TaskState::Done {
        bail!("task {id} ended {state:?}: {result}");
    }
    Ok(())
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
    // Process VMs on a /16: past one /24's ~230 instances, up to 1,000
    // and more. Container VMs on a bridged /24.
    let net = if args.containers {
        HarnessOptions::containers()
    } else {
        HarnessOptions::with_subnet(SubnetLease::acquire_slash16())
    };
    let h = Harness::start(net).await?;
    let tmp = tempfile::tempdir()?;
    h.upload_release(&example_release(tmp.path())?).await?;
    h.upload_stemcell().await?;

    // Packages compile once, for a one-instance deployment (not timed).
    let warm = h.create_deployment("warmup", manifest("warmup", 1, 1)?).await?;
    h.task_done(warm, Duration::from_secs(1800)).await?;

    let (n, m) = (args.instances, args.max_in_flight);
    println!("== converge: {n} instances, canaries 1, max_in_flight {m} ==");
    // The benchmark watches through its own connection, so that the
    // store's read counter counts the director's reads only.
    let observer = Store::connect(&h.rest.env.store_config(), "/bosh").await?;
    let reads = Reads::now(&h);
    let t = Instant::now();
    let written = chrono::Utc::now();
    let task = h.create_deployment("bench", manifest("bench", n, m)?).await?;
    if let Err(e) = task_done(&observer, task, Duration::from_secs(args.deadline_secs)).await {
        diagnose(&h, "bench").await;
        return Err(e);
    }
    let wall = t.elapsed();
    let rollout_reads = reads.since(&h);
    let times = update_times(&h, task).await?;
    if times.len() != n as usize {
        bail!("{} instance updates recorded, expected {n}", times.len());
    }
    let canary = times[0].took;
    let rest: Duration = times[1..].iter().map(|u| u.took).sum();
    let sum = canary + rest;
    let ideal = canary + rest / m;
    let mut sorted: Vec<Duration> = times.iter().map(|u| u.took).collect();
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
    let floor = gapless(&times, m as usize);
    println!(
        "gapless wall (these durations, no director delay) {:.2} s; wall / gapless = {:.2}x",
        floor.as_secs_f64(),
        wall.as_secs_f64() / floor.as_secs_f64()
    );
    // Where the wall time beyond the instances' own work went: before the
    // canary started, and after the last instance finished.
    let first = (times[0].started - written).to_std().unwrap_or_default();
    let last = times.iter().map(|u| u.started + u.took).max().unwrap_or(written);
    let tail = (written + wall - last).to_std().unwrap_or_default();
    println!(
        "write → canary started {:.2} s ({}); last instance finished → task done {:.2} s",
        first.as_secs_f64(),
        times[0].object,
        tail.as_secs_f64()
    );
    let (mean, max, per_slot) = refill_delays(&times, m as usize);
    println!(
        "slot refill delay (a free slot → its next instance started): mean {:.0} ms, max {:.0} ms; \
         {:.2} s per slot in all",
        mean.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3,
        per_slot.as_secs_f64()
    );
    println!("agent requests during the converge: {:?}", agent_calls(&h));
    println!("etcd reads during the converge: {rollout_reads}");

    // Steady state starts once the health monitor has seen every agent
    // running (its last transition writes).
    let store = observer.clone();
    eventually(Duration::from_secs(120), "every instance observed running", || {
        let store = store.clone();
        async move {
            let all = store.list::<InstanceSpec>("").await.ok()?.items;
            all.iter().all(|i| i.status.health == Some(InstanceHealth::Running)).then_some(())
        }
    })
    .await?;
    println!("== steady state: {} s ==", args.steady_secs);
    let (rev, cpi, agents) = (observer.revision().await?, h.cpi.calls(), agent_calls(&h));
    let reads = Reads::now(&h);
    tokio::time::sleep(Duration::from_secs(args.steady_secs)).await;
    let steady_reads = reads.since(&h);
    let after = agent_calls(&h);
    let delta: BTreeMap<&str, u64> = after
        .iter()
        .map(|(k, v)| (*k, v - agents.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect();
    println!(
        "etcd writes {}, CPI calls {}, agent applies {}, agent requests {:?}",
        observer.revision().await? - rev,
        h.cpi.calls() - cpi,
        delta.get("apply").copied().unwrap_or(0),
        delta
    );
    println!("etcd reads in steady state: {steady_reads}");
    h.stop().await
}

/// The store's read counters at one moment.
struct Reads {
    reads: u64,
    instance_lists: u64,
    all_instance_lists: u64,
    package_lists: u64,
}

impl Reads {
    fn now(h: &Harness) -> Reads {
        let s = h.store.stats();
        Reads {
            reads: s.reads(),
            instance_lists: s.lists(InstanceSpec::PLURAL),
            all_instance_lists: s.whole_lists(InstanceSpec::PLURAL),
            package_lists: s.lists(CompiledPackageSpec::PLURAL),
        }
    }

    /// What was read since `self`, as one line.
    fn since(&self, h: &Harness) -> String {
        let now = Reads::now(h);
        format!(
            "{} read requests, {} Instance listings ({} of every Instance), {} CompiledPackage \
             listings",
            now.reads - self.reads,
            now.instance_lists - self.instance_lists,
            now.all_instance_lists - self.all_instance_lists,
            now.package_lists - self.package_lists
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gapless_wall_keeps_a_slow_last_instance() {
        let u = |secs: u64| Update {
            object: String::new(),
            started: chrono::Utc::now(),
            took: Duration::from_secs(secs),
        };
        // Canary 2 s, then 1, 1, 1, 5 on two slots: 2+1+1 and 2+1+5.
        let times = [u(2), u(1), u(1), u(1), u(5)];
        assert_eq!(gapless(&times, 2), Duration::from_secs(8));
        // `canary + rest / m` would say 6 s.
        assert_eq!(gapless(&times, 1), Duration::from_secs(10));
    }
}
