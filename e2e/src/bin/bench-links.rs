//! Re-render cost of a link change (issue 15): a deployment of one
//! provider and N consumers (default 100) on process VMs. Each step is
//! timed from the manifest write to (a) every consumer holding its new
//! spec (the director's resolve, render and plan, rollout limits aside:
//! `max_in_flight` is N) and (b) the task done, and counts the Ruby
//! processes the director started.
//!
//! 1. Baseline: a property of the consumers themselves changes (N
//!    instances re-rendered because their own inputs changed).
//! 2. The provider's link property changes (`port`): N consumers
//!    re-rendered through the link, plus the provider itself.
//! 3. The provider scales 1 → 2: the link's instances change.
//!
//! ```sh
//! CARGO_TARGET_DIR=/work/target-bench cargo build --release -p bosh-agent -p bosh-e2e --bin bench-links
//! /work/target-bench/release/bench-links --consumers 100
//! ```

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Result;
use bosh_api::objects::InstanceSpec;
use bosh_api::store::Store;
use bosh_controllers::libs::render::ruby_runs;
use bosh_controllers::testing::{Harness, HarnessOptions, WebManifest};
use bosh_e2e::task_done;
use bosh_test_utils::{SubnetLease, eventually};
use clap::Parser;
use serde_json::{Value, json};

#[derive(Debug, Parser)]
struct Args {
    /// Consumer instances.
    #[arg(long, default_value_t = 100)]
    consumers: u32,
    /// How long one step may take.
    #[arg(long, default_value_t = 1800)]
    deadline_secs: u64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    bosh_e2e::init_tracing();
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(run(args))
}

fn write(dir: &Path, rel: &str, text: &str) -> Result<()> {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().expect("a file in a dir"))?;
    std::fs::write(p, text)?;
    Ok(())
}

/// `server` provides `conn` (type `srv`, property `port`); `client`
/// consumes it into `config/peers` and has a `note` of its own. Neither
/// runs a process: the figures are the director's, not the jobs'.
fn release(root: &Path) -> Result<PathBuf> {
    let dir = root.join("linked");
    write(&dir, "config/final.yml", "name: linked\n")?;
    write(
        &dir,
        "jobs/server/spec",
        "---\nname: server\ntemplates: {conf.erb: config/conf}\n\
         provides: [{name: conn, type: srv, properties: [port]}]\n\
         properties: {port: {default: 1}}\n",
    )?;
    write(&dir, "jobs/server/monit", "")?;
    write(&dir, "jobs/server/templates/conf.erb", "port <%= p('port') %>\n")?;
    write(
        &dir,
        "jobs/client/spec",
        "---\nname: client\ntemplates: {peers.erb: config/peers}\n\
         consumes: [{name: conn, type: srv}]\nproperties: {note: {default: a}}\n",
    )?;
    write(&dir, "jobs/client/monit", "")?;
    write(
        &dir,
        "jobs/client/templates/peers.erb",
        "<%= link('conn').instances.map(&:address).join(',') %> \
         port=<%= link('conn').p('port') %> note=<%= p('note') %>\n",
    )?;
    Ok(dir)
}

fn manifest(consumers: u32, servers: u32, port: u32, note: &str) -> Value {
    let mut m = WebManifest {
        max_in_flight: consumers.max(1),
        watch_time: "0-60000".into(),
        ..WebManifest::job("links", "linked", "server")
    }
    .value();
    let mut srv = m["instance_groups"][0].clone();
    srv["name"] = "srv".into();
    srv["instances"] = servers.into();
    srv["jobs"][0]["properties"] = json!({"port": port});
    let mut cli = m["instance_groups"][0].clone();
    cli["name"] = "cli".into();
    cli["instances"] = consumers.into();
    cli["jobs"] = json!([{"name": "client", "release": "linked", "properties": {"note": note}}]);
    m["instance_groups"] = json!([srv, cli]);
    m
}

/// The consumers' config hashes.
async fn consumer_hashes(store: &Store) -> Result<Vec<String>> {
    let all = store.list::<InstanceSpec>("links/").await?.items;
    Ok(all.into_iter().filter(|i| i.spec.group == "cli").map(|i| i.spec.config_hash).collect())
}

/// One step: write `m`, wait for every consumer to hold a new spec, then
/// for the task. Returns (time to specs, time to done, Ruby processes).
async fn step(
    h: &Harness,
    observer: &Store,
    m: Value,
    deadline: Duration,
) -> Result<(Duration, Duration, u64)> {
    let before = consumer_hashes(observer).await?;
    let ruby = ruby_runs();
    let t = Instant::now();
    let task = h.update_deployment("links", m).await?;
    eventually(deadline, "every consumer to hold its new spec", || async {
        let now = consumer_hashes(observer).await.ok()?;
        let changed = now.len() == before.len() && now.iter().all(|h| !before.contains(h));
        changed.then_some(())
    })
    .await?;
    let specs = t.elapsed();
    task_done(observer, task, deadline).await?;
    Ok((specs, t.elapsed(), ruby_runs() - ruby))
}

async fn run(args: Args) -> Result<()> {
    let h = Harness::start(HarnessOptions::with_subnet(SubnetLease::acquire_slash16())).await?;
    let tmp = tempfile::tempdir()?;
    h.upload_release(&release(tmp.path())?).await?;
    h.upload_stemcell().await?;
    let observer = Store::connect(&h.rest.env.store_config(), "/bosh").await?;
    let (n, deadline) = (args.consumers, Duration::from_secs(args.deadline_secs));
    let t = Instant::now();
    let first = h.create_deployment("links", manifest(n, 1, 7000, "a")).await?;
    task_done(&observer, first, deadline).await?;
    println!("deployed 1 provider + {n} consumers in {:.1} s", t.elapsed().as_secs_f64());

    let steps = [
        ("consumers' own property (baseline)", manifest(n, 1, 7000, "b")),
        ("provider's link property", manifest(n, 1, 7001, "b")),
        ("provider scaled 1 -> 2", manifest(n, 2, 7001, "b")),
    ];
    let mut base = None;
    println!("| change | consumers' specs written | task done | Ruby processes | ratio (specs) |");
    println!("| --- | --- | --- | --- | --- |");
    for (what, m) in steps {
        let (specs, done, ruby) = step(&h, &observer, m, deadline).await?;
        let b = *base.get_or_insert(specs);
        println!(
            "| {what} | {:.2} s | {:.2} s | {ruby} | {:.2}x |",
            specs.as_secs_f64(),
            done.as_secs_f64(),
            specs.as_secs_f64() / b.as_secs_f64()
        );
    }
    h.stop().await
}
