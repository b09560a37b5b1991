//! Agent benchmarks (issue 4) against a private director world: real
//! nats-server with per-agent users, real `bosh-agent` processes as local
//! VMs, each figure next to a baseline measured in the same run.
//!
//! 1. `ping` round trips through an agent vs. a raw NATS request/reply to a
//!    trivial responder on the same nats-server, same payload sizes.
//! 2. Time to create N local VMs that all answer `ping`.
//! 3. Agents' RSS and idle CPU over a window with 1 s heartbeats.
//!
//! ```sh
//! CARGO_TARGET_DIR=/work/target-bench cargo build --release -p bosh-e2e --bin bench-agents -p bosh-agent
//! /work/target-bench/release/bench-agents --pings 2000 --vms 100 --concurrency 8 --idle-secs 30
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bosh_api::agent::{Method, Reply, Request};
use bosh_controllers::testing::LocalWorld;
use bosh_controllers::world::agent_client::AgentClient;
use bosh_controllers::world::cpi::Cpi;
use bosh_test_utils::{SubnetLease, eventually};
use clap::Parser;
use futures::StreamExt;

#[derive(Debug, Parser)]
struct Args {
    /// Sequential calls in each round-trip measurement (agent and raw).
    #[arg(long, default_value_t = 2000)]
    pings: usize,
    /// Local VMs to create.
    #[arg(long, default_value_t = 100)]
    vms: usize,
    /// VMs created (and waited for) at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Seconds of the idle CPU window.
    #[arg(long, default_value_t = 30)]
    idle_secs: u64,
}

/// How long one VM may take to answer its first ping.
const BOOT_DEADLINE: Duration = Duration::from_secs(120);

fn main() -> Result<()> {
    let args = Args::parse();
    // `agent_binary()` finds the agent beside this binary and rebuilds it
    // when stale (`BOSH_AGENT_BIN` overrides it).
    println!("agent binary: {}", bosh_test_utils::agent::agent_binary()?.display());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    let t = Instant::now();
    let world = LocalWorld::start().await?;
    println!("world up in {:.2} s", t.elapsed().as_secs_f64());
    let director = director_connection(&world).await?;
    // A /16: past one /24's addresses for the VMs of step 2.
    let subnet = SubnetLease::acquire_slash16();

    // 1. Round trips.
    let ping_vm = world.create_vm("bench-ping", &subnet.ip(2).to_string()).await?;
    ping_until_up(&world.agents, "bench-ping").await?;
    round_trips(&world, &director, args.pings).await?;
    world.cpi.delete_vm(None, &ping_vm).await?;
    world.bus.revoke(&world.store, "bench-ping").await?;

    // 2. Creating VMs.
    let vms = create_vms(&world, &subnet, args.vms, args.concurrency).await?;

    // 3. RSS and idle CPU.
    let mut agents = Vec::new();
    for (_, cid) in &vms {
        agents.push(agent_pids(&world, cid).await?);
    }
    resources(&world, &director, &agents, args.idle_secs).await?;

    // Clean up.
    let t = Instant::now();
    for (id, cid) in &vms {
        world.cpi.delete_vm(None, cid).await?;
        world.bus.revoke(&world.store, id).await?;
    }
    println!(
        "deleted {} VMs and revoked their credentials in {:.2} s",
        vms.len(),
        t.elapsed().as_secs_f64()
    );
    for (id, cid) in &vms {
        if world.cpi.has_vm(cid).await? {
            bail!("{cid} still exists after delete_vm");
        }
        if world.agents.for_agent(id.as_str()).ping().await.is_ok() {
            bail!("{id} answered after its VM was deleted");
        }
    }
    Ok(())
}

/// A second director connection: the generated nats-server configuration
/// holds the director's credentials (the first user).
async fn director_connection(world: &LocalWorld) -> Result<async_nats::Client> {
    let conf = std::fs::read_to_string(world.env.dir().join("nats.conf"))?;
    let line = conf
        .lines()
        .find(|l| l.contains(r#"user: "director""#))
        .context("no director user in nats.conf")?;
    let at = line.find("password: ").context("director has no password")? + "password: ".len();
    let mut de = serde_json::Deserializer::from_str(&line[at..]).into_iter::<String>();
    let password = de.next().context("director password")??;
    Ok(async_nats::ConnectOptions::with_user_and_password("director".into(), password)
        .connect(world.nats.url())
        .await?)
}

async fn ping_until_up(agents: &AgentClient, agent_id: &str) -> Result<()> {
    let a = agents.for_agent(agent_id);
    eventually(BOOT_DEADLINE, &format!("{agent_id} to answer ping"), || {
        let a = a.clone();
        async move { a.ping().await.ok() }
    })
    .await
}

struct Stats {
    n: usize,
    total: Duration,
    mean: Duration,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

impl Stats {
    fn of(mut v: Vec<Duration>) -> Stats {
        v.sort();
        let n = v.len();
        let total: Duration = v.iter().sum();
        let pct = |p: f64| v[((p * n as f64).ceil() as usize).clamp(1, n) - 1];
        Stats { n, total, mean: total / n as u32, p50: pct(0.50), p99: pct(0.99), max: v[n - 1] }
    }

    fn rate(&self) -> f64 {
        self.n as f64 / self.total.as_secs_f64()
    }

    fn print(&self, what: &str) {
        println!(
            "{what}: n={} mean={:.1} µs p50={:.1} µs p99={:.1} µs max={:.1} µs → {:.0} calls/s",
            self.n,
            us(self.mean),
            us(self.p50),
            us(self.p99),
            us(self.max),
            self.rate()
        );
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Sequential `ping`s through the agent vs. raw request/reply, interleaved
/// in blocks so background load hits both alike.
async fn round_trips(world: &LocalWorld, director: &async_nats::Client, n: usize) -> Result<()> {
    // The raw responder answers what the agent answers, with the request the
    // agent gets (a uuid request id has the same length as this one).
    let request = serde_json::to_vec(&Request::new(
        Method::Ping,
        vec![],
        "00000000-0000-0000-0000-000000000000",
    ))?;
    let reply = serde_json::to_vec(&Reply::Value("pong".into()))?;
    println!("payloads: request {} B, reply {} B", request.len(), reply.len());
    let responder = director_connection(world).await?;
    let mut sub = responder.subscribe("bench.raw").await?;
    responder.flush().await?;
    let answer = reply.clone();
    let serve = tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            if let Some(to) = m.reply {
                let _ = responder.publish(to, answer.clone().into()).await;
            }
        }
    });

    let agent = AgentClient::new(director.clone()).for_agent("bench-ping");
    // Warm up both paths.
    for _ in 0..200 {
        agent.ping().await?;
        raw_once(director, &request, &reply).await?;
    }
    let blocks = 10;
    let per_block = n.div_ceil(blocks);
    let (mut agent_lat, mut raw_lat) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..blocks {
        for _ in 0..per_block {
            let t = Instant::now();
            raw_once(director, &request, &reply).await?;
            raw_lat.push(t.elapsed());
        }
        for _ in 0..per_block {
            let t = Instant::now();
            agent.ping().await?;
            agent_lat.push(t.elapsed());
        }
    }
    serve.abort();
    let (raw, agent) = (Stats::of(raw_lat), Stats::of(agent_lat));
    raw.print("raw NATS request/reply");
    agent.print("agent ping (AgentClient)");
    let ratio = |a: Duration, r: Duration| a.as_secs_f64() / r.as_secs_f64();
    println!(
        "agent / raw: mean {:.2}×, p50 {:.2}×, p99 {:.2}×, calls/s {:.2}×",
        ratio(agent.mean, raw.mean),
        ratio(agent.p50, raw.p50),
        ratio(agent.p99, raw.p99),
        agent.rate() / raw.rate()
    );
    Ok(())
}

/// One raw request/reply, checked.
async fn raw_once(director: &async_nats::Client, request: &[u8], reply: &[u8]) -> Result<()> {
    let m = director.request("bench.raw", request.to_vec().into()).await?;
    anyhow::ensure!(m.payload.as_ref() == reply, "raw reply differs");
    Ok(())
}

/// Creates `n` VMs, `concurrency` at a time, each counted done when its
/// agent answers ping. Returns `(agent id, vm cid)`s.
async fn create_vms(
    world: &LocalWorld,
    subnet: &SubnetLease,
    n: usize,
    concurrency: usize,
) -> Result<Vec<(String, String)>> {
    let nats_log = world.env.dir().join("nats.log");
    let violations = || {
        std::fs::read_to_string(&nats_log)
            .map(|log| {
                log.lines()
                    .filter(|l| {
                        l.contains("Authorization Violation") || l.contains("authentication error")
                    })
                    .count()
            })
            .unwrap_or(0)
    };
    let violations_before = violations();
    let start = Instant::now();
    let results: Vec<Result<(String, String, Duration, Duration)>> = futures::stream::iter(0..n)
        .map(|i| async move {
            let id = format!("bench-{i:03}");
            let host = 256 * (1 + i / 200) + 10 + i % 200;
            let ip = subnet.ip(u32::try_from(host)?).to_string();
            let t = Instant::now();
            let cid = world.create_vm(&id, &ip).await?;
            let created = t.elapsed();
            ping_until_up(&world.agents, &id).await?;
            Ok::<_, anyhow::Error>((id, cid, created, t.elapsed()))
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let total = start.elapsed();
    let mut vms = Vec::new();
    let (mut create_lat, mut ready_lat) = (Vec::new(), Vec::new());
    for r in results {
        let (id, cid, created, ready) = r?;
        vms.push((id, cid));
        create_lat.push(created);
        ready_lat.push(ready);
    }
    vms.sort();
    println!(
        "{n} VMs created and answering ping in {:.2} s ({concurrency} at a time): {:.1} ms per VM, {:.1} VMs/s",
        total.as_secs_f64(),
        total.as_secs_f64() * 1e3 / n as f64,
        n as f64 / total.as_secs_f64()
    );
    let slow = ready_lat.iter().filter(|d| **d > Duration::from_secs(1)).count();
    let (c, r) = (Stats::of(create_lat), Stats::of(ready_lat));
    println!(
        "  per VM, create_vm call (credentials + nats reload + spawn): mean {:.1} ms, p50 {:.1} ms, max {:.1} ms",
        ms(c.mean),
        ms(c.p50),
        ms(c.max)
    );
    println!(
        "  per VM, create_vm start → first pong: mean {:.1} ms, p50 {:.1} ms, max {:.1} ms",
        ms(r.mean),
        ms(r.p50),
        ms(r.max)
    );
    println!(
        "  {slow} of {n} VMs took over 1 s to answer; nats-server logged {} authentication failures meanwhile",
        violations() - violations_before
    );
    Ok(vms)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A VM's processes: the agent, and the `unshare` wrapper around it when
/// PID namespaces are used.
struct VmPids {
    agent: i32,
    wrapper: Option<i32>,
}

/// Finds the agent of VM `cid` (not the VM's init that restarts it, whose
/// command line names the agent too) and the VM's outer process.
async fn agent_pids(world: &LocalWorld, cid: &str) -> Result<VmPids> {
    let settings = world.cpi.vm_dir(cid).join("settings.json");
    let outer = world.cpi.vm_process(cid).await.context("VM has no process")?.pid;
    let agent = bosh_controllers::world::cpi::local::process::agent_pid(&settings)
        .with_context(|| format!("no agent process found for {cid}"))?;
    let wrapped =
        std::fs::read(format!("/proc/{outer}/cmdline")).is_ok_and(|c| c.starts_with(b"unshare"));
    Ok(VmPids { agent, wrapper: wrapped.then_some(outer) })
}

/// A field of /proc/<pid>/status in kB (or a plain count).
fn status_field(pid: i32, field: &str) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = s
        .lines()
        .find(|l| l.starts_with(field))
        .with_context(|| format!("no {field} for {pid}"))?;
    Ok(line[field.len()..].split_whitespace().next().context("empty field")?.parse()?)
}

/// utime + stime of a process (all its threads), in clock ticks.
fn cpu_ticks(pid: &str) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = &s[s.rfind(')').context("bad stat")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat; `rest` starts at field 3.
    Ok(f[11].parse::<u64>()? + f[12].parse::<u64>()?)
}

fn clock_ticks_per_sec() -> Result<u64> {
    let out = std::process::Command::new("getconf").arg("CLK_TCK").output()?;
    Ok(String::from_utf8(out.stdout)?.trim().parse()?)
}

fn spread(mut v: Vec<u64>) -> (u64, u64, u64) {
    v.sort_unstable();
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

fn print_rss(what: &str, pids: &[i32]) -> Result<()> {
    let rss = pids.iter().map(|p| status_field(*p, "VmRSS:")).collect::<Result<Vec<_>>>()?;
    let sum: u64 = rss.iter().sum();
    let (min, med, max) = spread(rss);
    println!(
        "{what} RSS over {}: min {:.1} MiB, median {:.1} MiB, max {:.1} MiB, total {:.1} MiB",
        pids.len(),
        min as f64 / 1024.0,
        med as f64 / 1024.0,
        max as f64 / 1024.0,
        sum as f64 / 1024.0
    );
    Ok(())
}

/// RSS before and after an idle window, and CPU over it.
async fn resources(
    world: &LocalWorld,
    director: &async_nats::Client,
    vms: &[VmPids],
    idle_secs: u64,
) -> Result<()> {
    let agents: Vec<i32> = vms.iter().map(|v| v.agent).collect();
    let wrappers: Vec<i32> = vms.iter().filter_map(|v| v.wrapper).collect();
    print_rss("agent (after boot)", &agents)?;
    if !wrappers.is_empty() {
        print_rss("unshare wrapper", &wrappers)?;
    }
    let threads = agents.iter().map(|p| status_field(*p, "Threads:")).collect::<Result<_>>()?;
    let (tmin, tmed, tmax) = spread(threads);
    println!("agent threads: min {tmin}, median {tmed}, max {tmax}");

    // Count heartbeats during the window, to show the agents did beat.
    let beats = Arc::new(AtomicU64::new(0));
    let mut sub = director.subscribe("hm.agent.heartbeat.*").await?;
    director.flush().await?;
    let counter = beats.clone();
    let count = tokio::spawn(async move {
        while sub.next().await.is_some() {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });

    let nats_pid = std::fs::read_to_string(world.env.dir().join("nats.pid"))?.trim().to_string();
    let hz = clock_ticks_per_sec()? as f64;
    let sample = || -> Result<(Vec<u64>, u64, u64)> {
        let a = agents.iter().map(|p| cpu_ticks(&p.to_string())).collect::<Result<_>>()?;
        Ok((a, cpu_ticks(&nats_pid)?, cpu_ticks("self")?))
    };
    let (a0, n0, s0) = sample()?;
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(idle_secs)).await; // the measurement window
    let (a1, n1, s1) = sample()?;
    let secs = t0.elapsed().as_secs_f64();
    count.abort();
    let pct = |ticks: u64| ticks as f64 / hz / secs * 100.0;
    let per: Vec<f64> = a0.iter().zip(&a1).map(|(x, y)| pct(y - x)).collect();
    let total: f64 = per.iter().sum();
    let max = per.iter().cloned().fold(0.0, f64::max);
    println!(
        "idle CPU over {secs:.1} s ({} heartbeats received, {:.2}/agent/s; tick = {:.0} ms): agent mean {:.3} %, max {:.3} %, all {} agents {:.2} % of one core; nats-server {:.2} %; bench process {:.2} %",
        beats.load(Ordering::Relaxed),
        beats.load(Ordering::Relaxed) as f64 / agents.len() as f64 / secs,
        1000.0 / hz,
        total / per.len() as f64,
        max,
        per.len(),
        total,
        pct(n1 - n0),
        pct(s1 - s0),
    );
    print_rss("agent (after idle window)", &agents)?;
    Ok(())
}
