//! Release and compilation benchmarks (issue 5), each figure next to a
//! baseline measured in the same run.
//!
//! 1. `create-release` of a release holding a 200 MB package file of
//!    pseudo-random (incompressible) data, then its upload to an in-process
//!    API (`POST /v1/uploads/releases`, streamed from disk), both as
//!    throughput against `tar czf` + `sha256sum` of the same file.
//! 2. Compile fan-out: a 10-package dependency graph (three levels)
//!    compiled on local compile VMs with `compilation.workers: 1` and then
//!    `workers: 4`, each on a fresh director world.
//!
//! ```sh
//! CARGO_TARGET_DIR=/work/target-bench2 cargo build --release -p bosh-agent -p bosh-e2e --bin bench-releases
//! /work/target-bench2/release/bench-releases --mb 200 --work cpu --work sleep
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bosh_api::objects::DeploymentSpec;
use bosh_api::release::{CreateOptions, create_release};
use bosh_api::store::Store;
use bosh_api::{ConditionStatus, Object, ObjectMeta};
use bosh_blobstore::Storage;
use bosh_controllers::server::api::{self, ApiState};
use bosh_controllers::testing::{Harness, HarnessOptions, TOKEN, WebManifest};
use bosh_controllers::world::cpi::Cpi;
use bosh_test_utils::eventually;
use clap::{Parser, ValueEnum};

const MIB: usize = 1 << 20;
/// Compiling ten packages one at a time on fresh VMs takes a while on a
/// loaded machine.
const COMPILE_DEADLINE: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Work {
    /// Each packaging script burns about `--cpu-secs` of CPU (sha256 chain in python3).
    Cpu,
    /// Each packaging script sleeps `--cpu-secs` (no CPU contention).
    Sleep,
}

#[derive(Debug, Parser)]
struct Args {
    /// Size of the release's package file, in MiB.
    #[arg(long, default_value_t = 200)]
    mb: usize,
    /// Packaging-script workloads to measure the fan-out with (repeatable).
    #[arg(long, value_enum, default_values_t = [Work::Cpu, Work::Sleep])]
    work: Vec<Work>,
    /// Seconds of work per packaging script.
    #[arg(long, default_value_t = 1.0)]
    cpu_secs: f64,
    /// Skip the release throughput figure.
    #[arg(long)]
    skip_upload: bool,
    /// Skip the compile fan-out figure.
    #[arg(long)]
    skip_compile: bool,
}

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
    if !args.skip_upload {
        release_throughput(args.mb).await?;
    }
    if !args.skip_compile {
        for work in &args.work {
            compile_fan_out(*work, args.cpu_secs).await?;
        }
    }
    Ok(())
}

fn write(dir: &Path, rel: &str, text: &str) -> Result<()> {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().context("no parent")?)?;
    std::fs::write(&p, text).with_context(|| p.display().to_string())
}

/// Writes `mb` MiB of xorshift64 output, 1 MiB at a time: incompressible,
/// so gzip is not flattered.
fn write_random(path: &Path, mb: usize) -> Result<()> {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut chunk = vec![0u8; MIB];
    for _ in 0..mb {
        for word in chunk.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            word.copy_from_slice(&x.to_le_bytes());
        }
        f.write_all(&chunk)?;
    }
    f.flush()?;
    f.get_ref().sync_all()?;
    Ok(())
}

fn mbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

/// Figure 1: create-release + upload against `tar czf` + `sha256sum`.
async fn release_throughput(mb: usize) -> Result<()> {
    println!("\n== create-release + upload of a {mb} MiB package file ==");
    let tmp = tempfile::tempdir()?;
    let root = tmp.path();
    let dir = root.join("big-release");
    write(&dir, "config/final.yml", "name: big\n")?;
    write(
        &dir,
        "jobs/big/spec",
        "---\nname: big\ntemplates: {ctl.erb: bin/ctl}\npackages: [big]\nproperties: {}\n",
    )?;
    write(&dir, "jobs/big/monit", "check process big\n")?;
    write(&dir, "jobs/big/templates/ctl.erb", "#!/bin/sh\nexit 0\n")?;
    write(&dir, "packages/big/spec", "---\nname: big\nfiles: [big/**/*]\n")?;
    write(&dir, "packages/big/packaging", "cp -a big/* ${BOSH_INSTALL_TARGET}/\n")?;
    let data_dir = dir.join("src/big");
    std::fs::create_dir_all(&data_dir)?;
    let data = data_dir.join("data.bin");
    let t = Instant::now();
    write_random(&data, mb)?;
    let bytes = std::fs::metadata(&data)?.len();
    println!("wrote {bytes} bytes of xorshift data in {:.2} s", t.elapsed().as_secs_f64());

    // Baseline: tar czf + sha256sum of the same file.
    let out = root.join("baseline.tgz");
    let t = Instant::now();
    let st = std::process::Command::new("tar")
        .arg("czf")
        .arg(&out)
        .arg("-C")
        .arg(&data_dir)
        .arg("data.bin")
        .status()?;
    if !st.success() {
        bail!("tar czf failed: {st}");
    }
    let tar_time = t.elapsed();
    let t2 = Instant::now();
    let sum = std::process::Command::new("sha256sum").arg(&out).output()?;
    if !sum.status.success() {
        bail!("sha256sum failed: {}", sum.status);
    }
    let sha_time = t2.elapsed();
    let baseline = t.elapsed();
    println!(
        "baseline tar czf {:.2} s + sha256sum {:.2} s = {:.2} s -> {:.1} MB/s (tgz {} bytes)",
        tar_time.as_secs_f64(),
        sha_time.as_secs_f64(),
        baseline.as_secs_f64(),
        mbps(bytes, baseline),
        std::fs::metadata(&out)?.len()
    );
    std::fs::remove_file(&out)?;

    // In-process API on etcd with a local blobstore.
    let env = bosh_test_utils::TestEnv::etcd_only().await?;
    let store = Store::connect(&env.store_config(), "/bosh").await?;
    let storage: Arc<dyn Storage> = Arc::new(bosh_blobstore::LocalStorage::new(root.join("blobs")));
    let state = ApiState::new(store.clone(), TOKEN).with_blobstore(storage, root.join("scratch"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(api::serve(listener, api::router(Arc::new(state)), std::future::pending()));

    // create-release.
    let tarball = root.join("big.tgz");
    let opts = CreateOptions {
        tarball: Some(tarball.clone()),
        force: true,
        cache_dir: root.join("cache"),
        ..Default::default()
    };
    let t = Instant::now();
    let d = dir.clone();
    let created = tokio::task::spawn_blocking(move || create_release(&d, &opts)).await??;
    let create = t.elapsed();
    let tarball_size = std::fs::metadata(&tarball)?.len();
    println!(
        "create-release {} {:.2} s -> {:.1} MB/s (tarball {tarball_size} bytes)",
        created.manifest.version,
        create.as_secs_f64(),
        mbps(bytes, create)
    );

    // Upload, streamed from disk.
    let t = Instant::now();
    let file = tokio::fs::File::open(&tarball).await?;
    let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
    let r = reqwest::Client::new()
        .post(format!("{url}/v1/uploads/releases"))
        .bearer_auth(TOKEN)
        .header("content-length", tarball_size)
        .body(body)
        .send()
        .await?;
    let status = r.status();
    let text = r.text().await?;
    let upload = t.elapsed();
    if status.as_u16() != 201 {
        bail!("upload answered {status}: {text}");
    }
    println!(
        "upload {:.2} s -> {:.1} MB/s of package data ({:.1} MB/s of tarball)",
        upload.as_secs_f64(),
        mbps(bytes, upload),
        mbps(tarball_size, upload)
    );
    let both = create + upload;
    let base = mbps(bytes, baseline);
    println!("| figure | time | MB/s | ratio to baseline |");
    println!("| tar czf + sha256sum | {:.2} s | {:.1} | 1 |", baseline.as_secs_f64(), base);
    for (what, d) in [("create-release", create), ("upload", upload), ("create + upload", both)] {
        println!(
            "| {what} | {:.2} s | {:.1} | {:.2} |",
            d.as_secs_f64(),
            mbps(bytes, d),
            mbps(bytes, d) / base
        );
    }
    drop(env);
    Ok(())
}

/// The fan-out graph: p0..p3 independent, p4..p7 each on two of them,
/// p8 on p4+p5, p9 on p6+p7. Three levels: 4, 4, 2 packages.
const GRAPH: [(&str, &[&str]); 10] = [
    ("p0", &[]),
    ("p1", &[]),
    ("p2", &[]),
    ("p3", &[]),
    ("p4", &["p0", "p1"]),
    ("p5", &["p1", "p2"]),
    ("p6", &["p2", "p3"]),
    ("p7", &["p3", "p0"]),
    ("p8", &["p4", "p5"]),
    ("p9", &["p6", "p7"]),
];

/// Iterations of a python3 sha256 chain that take about `secs` of CPU here
/// (timed on this machine, so the packaging scripts match it).
fn calibrate_python(secs: f64) -> Result<u64> {
    let n: u64 = 500_000;
    let script = format!(
        "import hashlib,time\nt=time.process_time()\nh=b'x'\nfor _ in range({n}): h=hashlib.sha256(h).digest()\nprint(time.process_time()-t)"
    );
    let mut best = f64::MAX;
    for _ in 0..3 {
        let out = std::process::Command::new("/usr/bin/python3").arg("-c").arg(&script).output()?;
        if !out.status.success() {
            bail!("python3 failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let t: f64 = String::from_utf8_lossy(&out.stdout).trim().parse()?;
        best = best.min(t);
    }
    Ok((n as f64 * secs / best) as u64)
}

fn fan_out_release(root: &Path, work: Work, secs: f64) -> Result<PathBuf> {
    let dir = root.join("fan-release");
    write(&dir, "config/final.yml", "name: fan\n")?;
    let names: Vec<&str> = GRAPH.iter().map(|(n, _)| *n).collect();
    write(
        &dir,
        "jobs/fan/spec",
        &format!("---\nname: fan\ntemplates: {{}}\npackages: [{}]\n", names.join(", ")),
    )?;
    write(&dir, "jobs/fan/monit", "")?;
    let body = match work {
        Work::Cpu => {
            let n = calibrate_python(secs)?;
            println!("python3 sha256 chain: {n} iterations ~ {secs} s of CPU");
            format!(
                "/usr/bin/python3 -c 'import hashlib\nh=b\"x\"\nfor _ in range({n}): h=hashlib.sha256(h).digest()'\n"
            )
        }
        Work::Sleep => format!("sleep {secs}\n"),
    };
    for (name, deps) in GRAPH {
        write(
            &dir,
            &format!("packages/{name}/spec"),
            &format!(
                "---\nname: {name}\ndependencies: [{}]\nfiles: [{name}/**/*]\n",
                deps.join(", ")
            ),
        )?;
        write(
            &dir,
            &format!("packages/{name}/packaging"),
            &format!(
                "set -e\n{body}mkdir -p ${{BOSH_INSTALL_TARGET}}/share\ncp -a {name}/* ${{BOSH_INSTALL_TARGET}}/share/\n"
            ),
        )?;
        write(&dir, &format!("src/{name}/README"), &format!("package {name}\n"))?;
    }
    Ok(dir)
}

/// A world with the stemcell and compilation controllers only.
async fn world(workers: usize) -> Result<Harness> {
    Harness::start(HarnessOptions {
        compile_workers: workers,
        deploy: false,
        resync: Duration::from_secs(60),
        ..HarnessOptions::new()
    })
    .await
}

/// Writes a one-instance deployment of the fan-out release.
async fn deploy(h: &Harness, name: &str) -> Result<()> {
    let mut m = WebManifest::job(name, "fan", "fan");
    (m.max_in_flight, m.watch_time) = (1, 1000.into());
    let manifest = m.value();
    let d = Object::new(ObjectMeta::named(name), DeploymentSpec { manifest, ..Default::default() });
    h.store.create(&d).await?;
    Ok(())
}

/// Waits for `PackagesCompiled` to settle; fails unless it is True.
async fn wait_compiled(h: &Harness, name: &str) -> Result<()> {
    let c = h.packages_compiled(name, COMPILE_DEADLINE).await?;
    if c.status != ConditionStatus::True {
        bail!("{name} did not compile: {c:?}");
    }
    Ok(())
}

/// Figure 2: the fan-out graph with 1 then 4 compile workers.
async fn compile_fan_out(work: Work, secs: f64) -> Result<()> {
    println!("\n== compile fan-out, 10 packages, packaging work: {work:?} {secs} s ==");
    let mut rows = Vec::new();
    for workers in [1usize, 4] {
        let tmp = tempfile::tempdir()?;
        let t = Instant::now();
        let h = world(workers).await?;
        let release = fan_out_release(tmp.path(), work, secs)?;
        h.upload_release(&release).await?;
        h.upload_stemcell().await?;
        println!(
            "workers {workers}: world, release and stemcell ready in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        let t = Instant::now();
        deploy(&h, "fan").await?;
        wait_compiled(&h, "fan").await?;
        let wall = t.elapsed();
        let vms = h.cpi.creates.load(Ordering::SeqCst);
        println!(
            "workers {workers}: PackagesCompiled=True {:.2} s after the deployment write, {vms} compile VMs created",
            wall.as_secs_f64()
        );
        // Compile VMs go away (not timed).
        let created: Vec<String> =
            h.cpi.created.lock().unwrap().iter().take(vms).cloned().collect();
        for cid in created {
            let cpi = h.cpi.clone();
            eventually(Duration::from_secs(120), &format!("compile VM {cid} deleted"), || {
                let (cpi, cid) = (cpi.clone(), cid.clone());
                async move { (!cpi.has_vm(&cid).await.ok()?).then_some(()) }
            })
            .await?;
        }
        h.stop().await?;
        rows.push((workers, wall, vms));
    }
    let base = rows[0].1.as_secs_f64();
    println!("| workers | wall (deploy write -> PackagesCompiled=True) | compile VMs | speed-up |");
    for (w, wall, vms) in rows {
        println!(
            "| {w} | {:.2} s | {vms} | {:.2}x |",
            wall.as_secs_f64(),
            base / wall.as_secs_f64()
        );
    }
    Ok(())
}
