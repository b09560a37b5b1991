//! The cost of the external CPI path (issue 16), measured in one run on
//! one machine against the in-process CPI as the baseline:
//!
//! 1. A deployment of N instances (default 100, process VMs, a job that
//!    runs nothing, `max_in_flight` N) converged through the in-process
//!    local CPI, then through `bosh-local-cpi` (BOSH's external CPI
//!    protocol, one process per call, over the same kind of data dir):
//!    time from the manifest write to the task done, and the CPI calls it
//!    took.
//! 2. Per-call overhead: `has_vm` of one VM called M times through each
//!    (a read: no fence, no side effect), so the difference is the
//!    protocol's process start, JSON and pipes.
//!
//! ```sh
//! cargo build --release -p bosh-agent -p bosh-cpi --bin bosh-local-cpi -p bosh-e2e --bin bench-cpi
//! target/release/bench-cpi --instances 100 --calls 200
//! ```

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use bosh_api::objects::InstanceSpec;
use bosh_api::store::Store;
use bosh_controllers::testing::{CpiPath, Harness, HarnessOptions, WebManifest};
use bosh_controllers::world::cpi::local::audit;
use bosh_e2e::task_done;
use bosh_test_utils::SubnetLease;
use clap::Parser;
use serde_json::{Value, json};

#[derive(Debug, Parser)]
struct Args {
    /// Instances deployed through each CPI path.
    #[arg(long, default_value_t = 100)]
    instances: u32,
    /// `has_vm` calls timed through each path.
    #[arg(long, default_value_t = 200)]
    calls: u32,
    /// How long one deploy may take.
    #[arg(long, default_value_t = 1800)]
    deadline_secs: u64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    bosh_e2e::init_tracing();
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(run(args))
}

/// A release whose one job runs no process: the figures are the
/// director's and the CPI's, not a job's.
fn release(root: &Path) -> Result<PathBuf> {
    let dir = root.join("idle");
    let write = |rel: &str, text: &str| -> Result<()> {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().expect("a file in a dir"))?;
        std::fs::write(p, text)?;
        Ok(())
    };
    write("config/final.yml", "name: idle\n")?;
    write("jobs/idle/spec", "---\nname: idle\ntemplates: {conf.erb: config/conf}\n")?;
    write("jobs/idle/monit", "")?;
    write("jobs/idle/templates/conf.erb", "index <%= spec.index %>\n")?;
    Ok(dir)
}

fn manifest(instances: u32) -> Value {
    let mut m = WebManifest {
        max_in_flight: instances.max(1),
        watch_time: "0-60000".into(),
        ..WebManifest::job("cpibench", "idle", "idle")
    }
    .value();
    m["instance_groups"][0]["instances"] = instances.into();
    m["instance_groups"][0]["persistent_disk"] = json!(0);
    m
}

/// What one path measured.
struct Figures {
    deploy: Duration,
    cpi_calls: usize,
    per_call: Duration,
}

async fn measure(path: CpiPath, args: &Args) -> Result<Figures> {
    let options = HarnessOptions {
        cpi_path: path.clone(),
        ..HarnessOptions::with_subnet(SubnetLease::acquire_slash16())
    };
    let h = Harness::start(options).await?;
    let tmp = tempfile::tempdir()?;
    h.upload_release(&release(tmp.path())?).await?;
    h.upload_stemcell().await?;
    let observer = Store::connect(&h.rest.env.store_config(), "/bosh").await?;
    let t = Instant::now();
    let task = h.create_deployment("cpibench", manifest(args.instances)).await?;
    task_done(&observer, task, Duration::from_secs(args.deadline_secs)).await?;
    let deploy = t.elapsed();
    let cpi_calls = audit::read(&h.cpi_root())?.len();

    let instances = observer.list::<InstanceSpec>("cpibench/").await?.items;
    let Some(cid) = instances.iter().find_map(|i| i.status.vm_cid.clone()) else {
        bail!("no instance has a VM");
    };
    let cpi = h.director.cpi.clone();
    let t = Instant::now();
    for _ in 0..args.calls {
        if !cpi.has_vm(&cid).await? {
            bail!("has_vm({cid}) answered false");
        }
    }
    let per_call = t.elapsed() / args.calls.max(1);
    h.stop().await?;
    Ok(Figures { deploy, cpi_calls, per_call })
}

async fn run(args: Args) -> Result<()> {
    let inproc = measure(CpiPath::InProcess, &args).await?;
    let external = measure(CpiPath::External { disabled: Vec::new() }, &args).await?;
    let n = args.instances;
    println!("| path | {n} instances deployed | CPI calls | has_vm per call | ratio (deploy) |");
    println!("| --- | --- | --- | --- | --- |");
    for (what, f) in [("in-process (baseline)", &inproc), ("bosh-local-cpi (external)", &external)]
    {
        println!(
            "| {what} | {:.2} s | {} | {:.2} ms | {:.2}x |",
            f.deploy.as_secs_f64(),
            f.cpi_calls,
            f.per_call.as_secs_f64() * 1e3,
            f.deploy.as_secs_f64() / inproc.deploy.as_secs_f64()
        );
    }
    let overhead = external.per_call.saturating_sub(inproc.per_call);
    println!("external call overhead: {:.2} ms per call", overhead.as_secs_f64() * 1e3);
    Ok(())
}
