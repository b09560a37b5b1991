//! Health monitor and resurrection benchmarks (issue 7).
//!
//! 1. Resurrection latency: one instance with a persistent disk on the
//!    local CPI; its VM's process tree is SIGKILLed `--kills` times; each
//!    time, the clock runs from the kill until the instance is Ready on a
//!    new VM and its job answers HTTP. Reported against `agent_timeout`
//!    (the floor: nothing can be declared dead sooner) plus the
//!    resurrection delay.
//! 2. Health monitor load: `--agents` Instance objects whose agents are
//!    simulated by publishing their heartbeats on NATS, each once a second
//!    (1,000/s for 1,000 agents) for `--secs`; the process's CPU time is
//!    compared with the same publishing with no monitor running, and etcd
//!    writes with the number of health transitions (one per agent: unknown
//!    → running).
//!
//! ```sh
//! CARGO_TARGET_DIR=/work/target-bench cargo build --release -p bosh-agent -p bosh-e2e --bin bench-resurrect
//! /work/target-bench/release/bench-resurrect --kills 20 --agents 1000 --secs 60
//! ```

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use bosh_api::agent::{Heartbeat, JobState};
use bosh_api::objects::{DeploymentSpec, InstanceSpec, TaskSpec, TaskState};
use bosh_api::objects::{InstanceHealth, InstancePhase};
use bosh_api::{Object, ObjectMeta};
use bosh_controllers::libs::tasks::{create_task, task_name};
use bosh_controllers::reconcilers::health::HealthConfig;
use bosh_controllers::testing::{Harness, HarnessOptions, WebManifest, example_release};
use bosh_test_utils::eventually;
use clap::Parser;

#[derive(Debug, Parser)]
struct Args {
    /// VM kills for the latency figure.
    #[arg(long, default_value_t = 20)]
    kills: usize,
    /// The monitor's agent timeout, in seconds.
    #[arg(long, default_value_t = 5)]
    agent_timeout_secs: u64,
    /// Simulated agents for the load figure.
    #[arg(long, default_value_t = 1000)]
    agents: usize,
    /// Length of the load figure's window.
    #[arg(long, default_value_t = 60)]
    secs: u64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt().with_env_filter("error").with_writer(std::io::stderr).init();
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(run(args))
}

/// CPU time (user + system) of this process.
fn cpu() -> Duration {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct it is given.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

async fn run(args: Args) -> Result<()> {
    latency(&args).await?;
    load(&args).await
}

async fn latency(args: &Args) -> Result<()> {
    let timeout = Duration::from_secs(args.agent_timeout_secs);
    let delay = Duration::from_secs(1);
    let health = HealthConfig {
        agent_timeout: timeout,
        check_interval: Duration::from_millis(250),
        resurrection_delay: delay,
        ..HealthConfig::default()
    };
    let h = Harness::start(HarnessOptions { health, ..HarnessOptions::new() }).await?;
    let tmp = tempfile::tempdir()?;
    h.upload_release(&example_release(tmp.path())?).await?;
    h.upload_stemcell().await?;
    let mut m = WebManifest::hello("res", 1);
    (m.max_in_flight, m.watch_time, m.persistent_disk_mb) = (1, "0-30000".into(), 16);
    let task = create_task(&h.store, "create deployment", Some("res"), "bench").await?;
    let spec =
        DeploymentSpec { manifest: m.value(), task: Some(task.spec.id), ..Default::default() };
    h.store.create(&Object::new(ObjectMeta::named("res"), spec)).await?;
    let store = h.store.clone();
    eventually(Duration::from_secs(300), "the deployment", || {
        let store = store.clone();
        async move {
            let t: Object<TaskSpec> = store.get(None, &task_name(task.spec.id)).await.ok()?;
            (t.status.state == TaskState::Done).then_some(())
        }
    })
    .await?;

    println!(
        "== resurrection latency: {} kills, agent_timeout {timeout:?}, delay {delay:?} ==",
        args.kills
    );
    let mut times = Vec::new();
    for k in 0..args.kills {
        let inst = h.store.list::<InstanceSpec>("res/").await?.items.remove(0);
        let old = inst.status.vm_cid.clone().unwrap_or_default();
        let ip = inst.spec.networks[0].ip.clone();
        let killed = Instant::now();
        let out = std::process::Command::new("pkill")
            .args(["-KILL", "-f", &format!("vms/{old}/settings.json")])
            .output()?;
        if !out.status.success() {
            bail!("kill {k}: no process for {old}");
        }
        let store = h.store.clone();
        let name = inst.metadata.name.clone();
        eventually(Duration::from_secs(120), "the instance back on a new VM", || {
            let (store, name, old, ip) = (store.clone(), name.clone(), old.clone(), ip.clone());
            async move {
                let i: Object<InstanceSpec> = store.get(Some("res"), &name).await.ok()?;
                if i.status.vm_cid.as_deref() == Some(&old)
                    || i.status.phase != Some(InstancePhase::Running)
                {
                    return None;
                }
                let r = reqwest::Client::new()
                    .get(format!("http://{ip}:8080/"))
                    .timeout(Duration::from_secs(1))
                    .send()
                    .await
                    .ok()?;
                r.status().is_success().then_some(())
            }
        })
        .await?;
        times.push(killed.elapsed());
    }
    times.sort();
    let secs = |d: Duration| d.as_secs_f64();
    println!(
        "kill -> serving again: min {:.2} s, median {:.2} s, max {:.2} s; median / (agent_timeout + delay) = {:.2}",
        secs(times[0]),
        secs(times[times.len() / 2]),
        secs(times[times.len() - 1]),
        secs(times[times.len() / 2]) / secs(timeout + delay)
    );
    let creates = h.cpi.creates.load(std::sync::atomic::Ordering::SeqCst);
    println!("create_vm calls: {creates} (2 compile VMs, the first VM, one per kill)");
    h.stop().await
}

/// Publishes one heartbeat per agent per second for `secs`.
async fn publish(nats: &async_nats::Client, agents: &[String], secs: u64) -> Result<u64> {
    let mut sent = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    for _ in 0..secs {
        tick.tick().await;
        for a in agents {
            let hb = Heartbeat {
                agent_id: a.clone(),
                job_state: JobState::Running,
                ..Default::default()
            };
            nats.publish(format!("hm.agent.heartbeat.{a}"), serde_json::to_vec(&hb)?.into())
                .await?;
            sent += 1;
        }
        nats.flush().await?;
    }
    Ok(sent)
}

async fn load(args: &Args) -> Result<()> {
    let n = args.agents;
    println!("== health monitor: {n} agents, 1 heartbeat/s each, {} s ==", args.secs);
    // Baseline: the same publishing, no monitor.
    let h = Harness::start(HarnessOptions { deploy: false, ..HarnessOptions::new() }).await?;
    let agents: Vec<String> = (0..n).map(|i| format!("sim-{i:05}")).collect();
    let nats = h.director.agents.nats();
    let c0 = cpu();
    let sent = publish(&nats, &agents, args.secs).await?;
    let base = cpu() - c0;
    h.stop().await?;

    // The monitor alone (no instance controller to act on its verdicts).
    let h = Harness::start(HarnessOptions { deploy: false, ..HarnessOptions::new() }).await?;
    let stop = tokio_util::sync::CancellationToken::new();
    let opts = bosh_controllers::server::daemon::Options {
        workers: 2,
        resync: Duration::from_secs(300),
        election: Default::default(),
        health: HealthConfig::default(),
        limits: Default::default(),
        render: Default::default(),
        orphan_vms: None,
        errand_timeout: std::time::Duration::from_secs(
            bosh_api::objects::DEFAULT_ERRAND_TIMEOUT_SECS,
        ),
        reflectors: Default::default(),
    };
    let monitor = tokio::spawn({
        let (d, s) = (h.director.clone(), stop.clone());
        async move { bosh_controllers::server::daemon::run_health(d, &opts, s).await }
    });
    for (i, a) in agents.iter().enumerate() {
        let o = Object::new(
            ObjectMeta::scoped("sim", format!("web/{a}")),
            InstanceSpec {
                group: "web".into(),
                id: a.clone(),
                index: i as u32,
                ..Default::default()
            },
        );
        // Set-up instances whose agents only heartbeat.
        let mut o = o;
        o.status.vm_cid = Some(format!("vm-{a}"));
        o.status.agent_id = Some(a.clone());
        o.status.applied_hash = "sim".into();
        h.store.create(&o).await?;
    }
    let nats = h.director.agents.nats();
    let rev = h.store.revision().await?;
    let c0 = cpu();
    let sent2 = publish(&nats, &agents, args.secs).await?;
    let with = cpu() - c0;
    let writes = h.store.revision().await? - rev;
    let running = h
        .store
        .list::<InstanceSpec>("sim/")
        .await?
        .items
        .iter()
        .filter(|i| i.status.health == Some(InstanceHealth::Running))
        .count();
    println!(
        "CPU: publishing alone {:.2} s; publishing + monitor {:.2} s; monitor {:.2} s over {} s = {:.1} % of a core at {:.0} heartbeats/s",
        base.as_secs_f64(),
        with.as_secs_f64(),
        (with.saturating_sub(base)).as_secs_f64(),
        args.secs,
        100.0 * with.saturating_sub(base).as_secs_f64() / args.secs as f64,
        sent2 as f64 / args.secs as f64
    );
    println!(
        "etcd writes {writes} for {running} health transitions (unknown -> running); {sent} + {sent2} heartbeats sent"
    );
    stop.cancel();
    monitor.await?;
    h.stop().await
}
