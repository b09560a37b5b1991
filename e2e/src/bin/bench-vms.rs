//! Container VMs against process VMs (issue 14), measured in one run on
//! one machine: each kind gets its own private director world (etcd,
//! nats-server with per-agent users, blobstore, local CPI), and the same
//! steps run on both.
//!
//! 1. N VMs created and all answering `ping` (the baseline: process VMs).
//! 2. Per-VM memory: the resident set of every process of the VM (its
//!    init, agent, and for a container nothing else), summed; and per-VM
//!    disk: what the VM wrote (a container's overlay upper dir, a process
//!    VM's directory) after boot.
//! 3. With `--stemcell-build`: the rootfs stemcell built into an empty
//!    cache (debootstrap) against the same build from the warm cache.
//!
//! ```sh
//! cargo build --release -p bosh-e2e --bin bench-vms -p bosh-agent
//! target/release/bench-vms --vms 100 --concurrency 8 --stemcell-build
//! ```

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bosh_controllers::testing::{LocalWorld, VmKind};
use bosh_controllers::world::cpi::{Cpi, VmNetwork};
use bosh_test_utils::{SubnetLease, eventually};
use clap::Parser;
use futures::StreamExt;

#[derive(Debug, Parser)]
struct Args {
    /// VMs of each kind.
    #[arg(long, default_value_t = 100)]
    vms: usize,
    /// VMs created (and waited for) at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Also time the rootfs stemcell build, cold and cached.
    #[arg(long)]
    stemcell_build: bool,
}

/// What one kind measured.
struct Figures {
    boot: Duration,
    rss_kb: Vec<u64>,
    disk_kb: Vec<u64>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    println!("agent binary: {}", bosh_test_utils::agent::agent_binary()?.display());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    let process = measure(VmKind::Process, &args).await?;
    let container = measure(VmKind::Container, &args).await?;
    let n = args.vms;
    println!();
    println!(
        "| {n} VMs, {} at a time | process VMs (baseline) | container VMs | ratio |",
        args.concurrency
    );
    println!("|---|---|---|---|");
    let (p, c) = (process.boot.as_secs_f64(), container.boot.as_secs_f64());
    println!("| created and answering ping | {p:.2} s | {c:.2} s | {:.2}× |", c / p);
    let (p, c) = (median(&process.rss_kb), median(&container.rss_kb));
    println!(
        "| memory per VM (RSS, median) | {:.1} MiB | {:.1} MiB | {:.2}× |",
        p as f64 / 1024.0,
        c as f64 / 1024.0,
        c as f64 / p as f64
    );
    let (p, c) = (median(&process.disk_kb), median(&container.disk_kb));
    println!(
        "| disk written per VM after boot (median) | {p} KiB | {c} KiB | {:.2}× |",
        c as f64 / p.max(1) as f64
    );
    if args.stemcell_build {
        stemcell_build()?;
    }
    Ok(())
}

async fn measure(kind: VmKind, args: &Args) -> Result<Figures> {
    let world = LocalWorld::start_with(None, kind).await?;
    let subnet = match kind {
        VmKind::Process => SubnetLease::acquire(),
        VmKind::Container => SubnetLease::acquire_bridged(),
    };
    let start = Instant::now();
    let results: Vec<Result<(String, String)>> = futures::stream::iter(0..args.vms)
        .map(|i| {
            let (world, subnet) = (&world, &subnet);
            async move {
                let id = format!("bench-{i:03}");
                let net = VmNetwork {
                    type_: "manual".into(),
                    ip: subnet.ip(u32::try_from(10 + i)?).to_string(),
                    netmask: subnet.netmask(),
                    gateway: subnet.ip(1).to_string(),
                    ..Default::default()
                };
                let cid = world.create_vm_on(&id, net).await?;
                let agent = world.agents.for_agent(id.as_str());
                eventually(Duration::from_secs(120), &format!("{id} to answer ping"), || {
                    let a = agent.clone();
                    async move { a.ping().await.ok() }
                })
                .await?;
                Ok((id, cid))
            }
        })
        .buffer_unordered(args.concurrency.max(1))
        .collect()
        .await;
    let boot = start.elapsed();
    let vms: Vec<(String, String)> = results.into_iter().collect::<Result<_>>()?;
    println!("{kind:?}: {} VMs answering ping in {:.2} s", vms.len(), boot.as_secs_f64());
    let (mut rss_kb, mut disk_kb) = (Vec::new(), Vec::new());
    for (_, cid) in &vms {
        let init = world.cpi.vm_process(cid).await.context("VM has no process")?.pid;
        rss_kb.push(vm_pids(kind, init).iter().map(|p| rss(*p)).sum());
        let written = match kind {
            VmKind::Process => world.cpi.vm_dir(cid),
            VmKind::Container => world.cpi.vm_dir(cid).join("upper"),
        };
        disk_kb.push(du_kb(&written));
    }
    for (id, cid) in &vms {
        world.cpi.delete_vm(None, cid).await?;
        world.bus.revoke(&world.store, id).await?;
    }
    Ok(Figures { boot, rss_kb, disk_kb })
}

/// Every host pid of the VM whose outermost process is `init`: for a
/// container, the processes in its PID namespace; for a process VM, its
/// process group (the VM starts as a group of its own).
fn vm_pids(kind: VmKind, init: i32) -> Vec<i32> {
    use bosh_controllers::world::cpi::local::process;
    match kind {
        VmKind::Container => process::in_pid_namespace_of(init),
        VmKind::Process => process::in_process_group(init),
    }
}

/// VmRSS in kB (0 for a process gone meanwhile).
fn rss(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn du_kb(path: &Path) -> u64 {
    std::process::Command::new("du")
        .args(["-sk", "-x"])
        .arg(path)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn median(v: &[u64]) -> u64 {
    let mut v = v.to_vec();
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

/// The rootfs stemcell built into an empty cache, then again from it.
fn stemcell_build() -> Result<()> {
    use bosh_api::local_stemcell::rootfs;
    let agent = bosh_test_utils::agent::agent_binary()?;
    let tmp = tempfile::tempdir()?;
    let cache = tmp.path().join("cache");
    let mut times = Vec::new();
    for round in ["first build (empty cache)", "cached build"] {
        let out = tmp.path().join("stemcell.tgz");
        let t = Instant::now();
        rootfs::write_stemcell(&agent, &cache, &out, &Default::default(), |l| eprintln!("{l}"))?;
        times.push((round, t.elapsed()));
        std::fs::remove_file(&out)?;
    }
    let base = times[0].1.as_secs_f64();
    println!();
    println!("| rootfs stemcell | time | ratio to the first build |");
    println!("|---|---|---|");
    for (round, t) in times {
        println!("| {round} | {:.1} s | {:.2}× |", t.as_secs_f64(), t.as_secs_f64() / base);
    }
    Ok(())
}
