//! BOSH DNS from memory: queries/s and latency of boshd's DNS server on
//! one core, against a trivial UDP echo server under the same load.
//!
//! The server (hickory with boshd's handler over a table of `--instances`
//! Instances, as `dns::follow` builds it) runs on a single-threaded tokio
//! runtime pinned to CPU 0; the load generator runs on another pinned to
//! CPU 1, with `--concurrency` sockets each keeping one query in flight
//! (closed loop). The same generator then drives a UDP echo server on the
//! same kind of runtime: the ratio between the two is what the DNS work
//! costs over the kernel's UDP path.
//!
//! Goal (issue 15): 50,000 queries/s with p99 ≤ 1 ms.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use bosh_api::objects::{InstanceHealth, InstanceNetwork, InstanceSpec};
use bosh_api::{Object, ObjectMeta};
use bosh_controllers::server::dns::{self, DnsConfig, Records, Table};
use clap::Parser;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
struct Args {
    /// Queries kept in flight (one socket each).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seconds of measurement per server (after 1 s of warm-up).
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// Instances in the table (groups of 10, 3 per answer asked).
    #[arg(long, default_value_t = 1000)]
    instances: u32,
}

/// Pins the calling thread to `cpu` (best effort: a machine with one CPU
/// runs both on it).
fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET and
    // sched_setaffinity only read and write that set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn table(instances: u32) -> Table {
    let objects: Vec<Object<InstanceSpec>> = (0..instances)
        .map(|n| {
            let (group, index) = (n / 10, n % 10);
            let id = format!("{n:08x}-0000-4000-8000-000000000000");
            let mut o = Object::new(
                ObjectMeta::scoped("hello", format!("web{group}/{id}")),
                InstanceSpec {
                    group: format!("web{group}"),
                    id,
                    index,
                    az: Some(format!("z{}", index % 3)),
                    networks: vec![InstanceNetwork {
                        name: "default".into(),
                        ip: format!("10.{}.{}.{}", n >> 16 & 255, n >> 8 & 255, n & 255),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            );
            // 3 of each 10 unhealthy: the health filter has work to do.
            o.status.health =
                Some(if index < 7 { InstanceHealth::Running } else { InstanceHealth::Failing });
            o
        })
        .collect();
    Table::build(&objects)
}

/// A query for `name` (type A, RD) with id 0; the id is set per send.
fn query(name: &str) -> Vec<u8> {
    let mut q = vec![0, 0, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

struct Run {
    queries: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
    errors: u64,
}

/// Drives `server` for warm-up + `secs` with `concurrency` closed loops.
fn load(server: SocketAddr, packets: Vec<Vec<u8>>, concurrency: usize, secs: u64) -> Run {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        let warm = Instant::now() + Duration::from_secs(1);
        let end = warm + Duration::from_secs(secs);
        let mut tasks = Vec::new();
        for c in 0..concurrency {
            let packets = packets.clone();
            tasks.push(tokio::spawn(async move {
                let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
                s.connect(server).await.unwrap();
                let mut buf = [0u8; 2048];
                let (mut lat, mut n, mut errors) = (Vec::new(), 0u64, 0u64);
                let mut id = c as u16;
                loop {
                    let now = Instant::now();
                    if now >= end {
                        break;
                    }
                    id = id.wrapping_add(concurrency as u16);
                    let mut p = packets[id as usize % packets.len()].clone();
                    p[..2].copy_from_slice(&id.to_be_bytes());
                    s.send(&p).await.unwrap();
                    let ok = match tokio::time::timeout(Duration::from_secs(1), s.recv(&mut buf))
                        .await
                    {
                        Ok(Ok(len)) => len >= 12 && buf[..2] == id.to_be_bytes(),
                        _ => false,
                    };
                    if now >= warm {
                        if ok {
                            n += 1;
                            lat.push(now.elapsed());
                        } else {
                            errors += 1;
                        }
                    }
                }
                (n, lat, errors)
            }));
        }
        let mut run =
            Run { queries: 0, elapsed: Duration::from_secs(secs), latencies: vec![], errors: 0 };
        for t in tasks {
            let (n, lat, e) = t.await.unwrap();
            run.queries += n;
            run.latencies.extend(lat);
            run.errors += e;
        }
        run.latencies.sort();
        run
    })
}

fn report(what: &str, r: &Run) -> f64 {
    let pct = |p: f64| {
        r.latencies
            .get(((r.latencies.len() as f64 * p) as usize).min(r.latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    let qps = r.queries as f64 / r.elapsed.as_secs_f64();
    println!(
        "{what}: {qps:.0} queries/s, p50 {:?}, p99 {:?}, max {:?}, lost {}",
        pct(0.50),
        pct(0.99),
        r.latencies.last().copied().unwrap_or_default(),
        r.errors
    );
    qps
}

/// Runs `serve` on its own single-threaded runtime pinned to CPU 0 and
/// returns its address.
fn spawn_server<F, Fut>(serve: F) -> anyhow::Result<SocketAddr>
where
    F: FnOnce(UdpSocket) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        pin(0);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            tx.send(s.local_addr().unwrap()).unwrap();
            serve(s).await
        })
    });
    rx.recv().context("server thread")
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let groups = args.instances.div_ceil(10);
    let names: Vec<String> = (0..groups.min(64))
        .flat_map(|g| {
            [
                format!("q-s0.web{g}.default.hello.bosh"),
                format!("q-s3.web{g}.default.hello.bosh"),
                format!("{}.web{g}.default.hello.bosh", g % 10),
            ]
        })
        .collect();
    let packets: Vec<Vec<u8>> = names.iter().map(|n| query(n)).collect();

    let t = Instant::now();
    let table = table(args.instances);
    println!("table of {} instances built in {:?}", args.instances, t.elapsed());
    let dns_addr = spawn_server(move |socket| async move {
        let records = Records::default();
        records.set(table);
        let stop = CancellationToken::new();
        dns::serve(records, DnsConfig::default(), vec![socket], vec![], stop).await.unwrap();
    })?;
    let echo_addr = spawn_server(|socket| async move {
        let mut buf = [0u8; 2048];
        loop {
            let (n, from) = socket.recv_from(&mut buf).await.unwrap();
            socket.send_to(&buf[..n], from).await.unwrap();
        }
    })?;

    pin(1);
    println!(
        "{} names, concurrency {}, {} s each (server on CPU 0, load on CPU 1)",
        names.len(),
        args.concurrency,
        args.secs
    );
    let echo = load(echo_addr, packets.clone(), args.concurrency, args.secs);
    let echo_qps = report("baseline UDP echo", &echo);
    let dns = load(dns_addr, packets, args.concurrency, args.secs);
    let dns_qps = report("BOSH DNS (hickory, from memory)", &dns);
    println!("ratio DNS / echo: {:.2}", dns_qps / echo_qps);
    Ok(())
}
