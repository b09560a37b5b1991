//! API latency while the deployment controller plans a large deployment
//! (issue 12), against an idle director in the same run.
//!
//! 1. Baseline: `--requests` (default 2,000) sequential `GET /v1/deployments`
//!    and as many `GET /v1/info`, alternating, on one keep-alive connection,
//!    against an idle director (one converged one-instance deployment).
//! 2. Load: a deployment of `--instances` (default 10,000) in one group,
//!    `canaries: 1`, `max_in_flight: 1`, is written, and the same GETs run
//!    until `--window-secs` (default 30) have passed *and* the first plan
//!    pass is over. The first pass plans, builds and renders every instance
//!    before it writes the canary's Instance; afterwards the controller
//!    re-plans all of them every 250 ms while the canary (then one instance
//!    at a time) rolls, so only a few VMs are ever created.
//!
//! Prints p50 / p99 / max of each phase and their ratio to the baseline,
//! split into "first pass" (write → first Instance) and "re-planning"
//! (after it), how long the first pass took (or how it failed), and how
//! many Ruby render processes ran in each part.
//!
//! ```sh
//! export CARGO_TARGET_DIR=/work/target-bench-rel
//! cargo build --release -p bosh-e2e --bin bench-api-latency
//! cargo build --release -p bosh-agent --bin bosh-agent
//! $CARGO_TARGET_DIR/release/bench-api-latency --instances 10000 --requests 2000 --window-secs 45
//! ```

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use bosh_api::ConditionStatus;
use bosh_api::objects::{ConditionType, Reason};
use bosh_api::objects::{DeploymentSpec, InstanceSpec};
use bosh_controllers::libs::render::ruby_runs;
use bosh_controllers::testing::{Harness, HarnessOptions, TOKEN, WebManifest, example_release};
use bosh_test_utils::SubnetLease;
use clap::Parser;

#[derive(Debug, Parser)]
struct Args {
    /// Instances of the planned deployment.
    #[arg(long, default_value_t = 10_000)]
    instances: u32,
    /// Baseline GETs of each route.
    #[arg(long, default_value_t = 2000)]
    requests: usize,
    /// Least time to measure under load (the first plan pass is always
    /// measured whole, up to `--max-secs`).
    #[arg(long, default_value_t = 30)]
    window_secs: u64,
    /// Give up on the first plan pass after this long.
    #[arg(long, default_value_t = 600)]
    max_secs: u64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt().with_env_filter("warn").with_writer(std::io::stderr).init();
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(run(args))
}

/// Latency summary of one phase.
struct Stats {
    n: usize,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

impl Stats {
    fn of(mut v: Vec<Duration>) -> Option<Stats> {
        if v.is_empty() {
            return None;
        }
        v.sort();
        let n = v.len();
        let pct = |p: f64| v[((p * n as f64).ceil() as usize).clamp(1, n) - 1];
        Some(Stats { n, p50: pct(0.50), p99: pct(0.99), max: v[n - 1] })
    }

    fn print(&self, what: &str, base: Option<&Stats>) {
        let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
        let vs = base.map_or("baseline".to_string(), |b| {
            format!(
                "p50 {:.2}x, p99 {:.2}x, max {:.2}x",
                ratio(self.p50, b.p50),
                ratio(self.p99, b.p99),
                ratio(self.max, b.max)
            )
        });
        println!(
            "{what}: n={} p50={:.2} ms p99={:.2} ms max={:.2} ms ({vs})",
            self.n,
            ms(self.p50),
            ms(self.p99),
            ms(self.max)
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The two routes measured.
const ROUTES: [&str; 2] = ["/v1/deployments", "/v1/info"];

/// One timed GET, checked.
async fn get(client: &reqwest::Client, url: &str) -> Result<Duration> {
    let t = Instant::now();
    let r = client.get(url).bearer_auth(TOKEN).send().await?;
    let status = r.status();
    let body = r.bytes().await?;
    let d = t.elapsed();
    if !status.is_success() {
        bail!("GET {url}: {status}: {}", String::from_utf8_lossy(&body));
    }
    Ok(d)
}

/// How the first plan pass of the big deployment ended, seen from outside.
#[derive(Debug, Clone)]
enum FirstPass {
    /// Its first Instance appeared this long after the write, after this
    /// many Ruby render runs.
    Instance(Duration, u64),
    /// Its `Ready` went False for a reason other than a rollout in progress.
    Failed { after: Duration, reason: Reason, message: String },
}

/// Watches deployment `name` from `start` (polling every 100 ms) and records
/// how its first plan pass ended (with the Ruby runs since `ruby`), then
/// when its canary is ready.
async fn observe(
    h: &Harness,
    name: &str,
    start: Instant,
    first: Arc<OnceLock<FirstPass>>,
    canary: Arc<OnceLock<Duration>>,
    ruby: u64,
) {
    let prefix = format!("{name}/");
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if first.get().is_none()
            && let Ok(d) = h.store.get::<DeploymentSpec>(None, name).await
            && let Some(c) =
                bosh_api::meta::find_condition(&d.status.conditions, ConditionType::Ready)
            && c.observed_revision == d.metadata.generation
            && c.status == ConditionStatus::False
            && c.reason != Reason::RollingOut
        {
            let (reason, message) = (c.reason.clone(), c.message.clone());
            let _ = first.set(FirstPass::Failed { after: start.elapsed(), reason, message });
            return;
        }
        let Ok(list) = h.store.list::<InstanceSpec>(&prefix).await else { continue };
        if !list.items.is_empty() {
            let _ = first.set(FirstPass::Instance(start.elapsed(), ruby_runs() - ruby));
        }
        let ready = list.items.iter().any(|i| {
            bosh_api::meta::find_condition(&i.status.conditions, ConditionType::Ready).is_some_and(
                |c| {
                    c.status == ConditionStatus::True
                        && c.observed_revision == i.metadata.generation
                },
            )
        });
        if ready {
            let _ = canary.set(start.elapsed());
            return;
        }
    }
}

async fn run(args: Args) -> Result<()> {
    // A /16, so that 10,000 instances have addresses.
    let net = HarnessOptions::with_subnet(SubnetLease::acquire_slash16());
    let h = Arc::new(Harness::start(net).await?);
    let tmp = tempfile::tempdir()?;
    h.upload_release(&example_release(tmp.path())?).await?;
    h.upload_stemcell().await?;

    // Packages compile once, for a one-instance deployment, so that the big
    // one plans at once; it is also the idle director's one deployment.
    let warm = h.create_deployment("warmup", WebManifest::hello("warmup", 1).value()).await?;
    h.task_done(warm, Duration::from_secs(600)).await?;

    let client = reqwest::Client::new();
    let urls = ROUTES.map(|r| format!("{}{r}", h.api_url));
    for u in &urls {
        for _ in 0..50 {
            get(&client, u).await?;
        }
    }
    println!("== idle: {} sequential GETs of each route ==", args.requests);
    let mut idle: [Vec<Duration>; 2] = Default::default();
    let t = Instant::now();
    for _ in 0..args.requests {
        for (i, u) in urls.iter().enumerate() {
            idle[i].push(get(&client, u).await?);
        }
    }
    println!("{:.2} s", t.elapsed().as_secs_f64());
    let idle = idle.map(Stats::of);

    let n = args.instances;
    println!("== planning: {n} instances, canaries 1, max_in_flight 1 ==");
    let manifest = WebManifest { max_in_flight: 1, ..WebManifest::hello("big", n) }.value();
    let (first, canary) = (Arc::new(OnceLock::new()), Arc::new(OnceLock::new()));
    let ruby = ruby_runs();
    let creates = h.cpi.creates.load(Ordering::SeqCst);
    let start = Instant::now();
    h.create_deployment("big", manifest).await?;
    let watcher = tokio::spawn({
        let (h, first, canary) = (h.clone(), first.clone(), canary.clone());
        async move { observe(&h, "big", start, first, canary, ruby).await }
    });
    // Samples: (since the write, latency) per route.
    let mut load: [Vec<(Duration, Duration)>; 2] = Default::default();
    let (window, cap) = (Duration::from_secs(args.window_secs), Duration::from_secs(args.max_secs));
    while start.elapsed() < cap && (start.elapsed() < window || first.get().is_none()) {
        for (i, u) in urls.iter().enumerate() {
            let at = start.elapsed();
            load[i].push((at, get(&client, u).await?));
        }
    }
    let measured = start.elapsed();
    watcher.abort();
    let first_pass = first.get().cloned();
    let split = match &first_pass {
        Some(FirstPass::Instance(d, _)) => *d,
        Some(FirstPass::Failed { after, .. }) => *after,
        None => measured,
    };
    match &first_pass {
        Some(FirstPass::Instance(d, runs)) => println!(
            "first plan pass: write → first Instance {:.2} s ({runs} Ruby render runs)",
            d.as_secs_f64()
        ),
        Some(FirstPass::Failed { after, reason, message }) => println!(
            "first plan pass FAILED after {:.2} s: {reason}: {message}",
            after.as_secs_f64()
        ),
        None => println!("first plan pass not over after {:.2} s", measured.as_secs_f64()),
    }
    match canary.get() {
        Some(d) => println!("canary ready {:.2} s after the write", d.as_secs_f64()),
        None => println!("canary not ready after {:.2} s", measured.as_secs_f64()),
    }
    let instances = h.store.list::<InstanceSpec>("big/").await?.items.len();
    println!(
        "measured {:.2} s; Instance objects of big: {instances}; Ruby render runs: {}; VMs \
         created: {}",
        measured.as_secs_f64(),
        ruby_runs() - ruby,
        h.cpi.creates.load(Ordering::SeqCst) - creates
    );
    for (i, route) in ROUTES.iter().enumerate() {
        let base = idle[i].as_ref().expect("requests > 0");
        let during = |keep: &dyn Fn(Duration) -> bool| {
            Stats::of(load[i].iter().filter(|(at, _)| keep(*at)).map(|(_, d)| *d).collect())
        };
        base.print(&format!("GET {route} idle"), None);
        if let Some(s) = during(&|_| true) {
            s.print(&format!("GET {route} while planning (all)"), Some(base));
        }
        if let Some(s) = during(&|at| at < split) {
            s.print(&format!("GET {route} during the first pass"), Some(base));
        }
        if let Some(s) = during(&|at| at >= split) {
            s.print(&format!("GET {route} re-planning, canary rolling"), Some(base));
        }
    }
    drop(client);
    match Arc::try_unwrap(h) {
        Ok(h) => h.stop().await,
        Err(_) => bail!("the harness is still shared"),
    }
}
