//! `boshctl up` and `boshctl down`: a local environment — etcd, and boshd
//! with the local CPI and the nats-server it runs — as background
//! processes with pid files and logs in one data directory.
//!
//! etcd holds every credential of the director, and on a shared host any
//! local user can reach a loopback port: `up` therefore makes a CA and
//! certificates (`etcd-tls/`, private) and runs etcd with client-certificate
//! authentication on https URLs, client and peer; boshd connects with the
//! client certificate, and encrypts secrets with a key in its own data dir.
//!
//! `up` returns once boshd's API answers with the token boshd wrote (or
//! fails with the end of the log of whatever died), and does nothing for
//! processes that already run. It waits for etcd by asking etcd's own
//! `/health` over TLS with the client certificate ([`EtcdProbe`]): boshctl
//! talks to etcd in no other way and does not link the etcd client. `down` sends SIGTERM, escalates to SIGKILL
//! of the process group after a deadline, and is idempotent. Both wait by
//! polling a condition under a deadline.

use std::ffi::OsString;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bosh_api::pki::{EtcdPki, TlsFiles};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// How often conditions are polled.
const POLL: Duration = Duration::from_millis(100);

/// Flags of `up`.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Where data, pid files and logs live.
    #[arg(long, default_value = ".bosh-rs")]
    pub data_dir: PathBuf,
    /// The boshd binary (default: `boshd` next to this boshctl).
    #[arg(long)]
    pub boshd: Option<PathBuf>,
    /// The etcd binary.
    #[arg(long, default_value = "etcd")]
    pub etcd: String,
    /// The API's address (default: a free loopback port).
    #[arg(long)]
    pub listen: Option<String>,
    /// Seconds to wait for etcd and for boshd's API.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    /// Where boshd serves BOSH DNS (repeatable): the addresses the cloud
    /// config's subnets give VMs as `dns:` (their gateways; bound before
    /// the bridges exist) and one for the operator. Default: none.
    #[arg(long = "dns-listen", value_name = "ADDR:PORT")]
    pub dns_listen: Vec<String>,
}

/// Flags of `down`.
#[derive(Debug, clap::Args)]
pub struct DownArgs {
    /// The data directory `up` used.
    #[arg(long, default_value = ".bosh-rs")]
    pub data_dir: PathBuf,
    /// Seconds to wait after SIGTERM before SIGKILL.
    #[arg(long, default_value_t = 20)]
    pub timeout: u64,
    /// Leave the local CPI's VMs running (they outlive boshd, as real VMs
    /// outlive a director). By default a local environment going down
    /// takes its VMs along: containers, their mounts, network namespaces,
    /// veths and bridges; `up` later finds their agents silent and
    /// resurrects them.
    #[arg(long)]
    pub keep_vms: bool,
}

/// The processes `up` starts, in start order (`down` stops them reversed).
const PROCESSES: [&str; 2] = ["etcd", "boshd"];

fn pid_file(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.pid"))
}

/// The recorded pid of `name`, if that process still runs the program it was started as.
fn running(dir: &Path, name: &str) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(pid_file(dir, name)).ok()?.trim().parse().ok()?;
    kill(Pid::from_raw(pid), None).ok()?;
    // A recycled pid belongs to some other program: leave it alone.
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
    String::from_utf8_lossy(argv0).ends_with(name).then_some(pid)
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The last lines of a log, to explain why a process died.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Starts `cmd` in its own process group with output appended to `log`,
/// recording its pid.
fn spawn(mut cmd: Command, dir: &Path, name: &str) -> Result<Child> {
    use std::os::unix::process::CommandExt;
    let log = dir.join(format!("{name}.log"));
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .with_context(|| format!("opening {}", log.display()))?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {name} ({:?})", cmd.get_program()))?;
    std::fs::write(pid_file(dir, name), format!("{}\n", child.id()))?;
    Ok(child)
}

/// Polls `ready` until it holds, `child` dies, or `deadline` passes.
async fn wait_ready<F, Fut>(
    name: &str,
    log: &Path,
    child: &mut Option<Child>,
    deadline: Instant,
    mut ready: F,
) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    loop {
        if ready().await {
            return Ok(());
        }
        if let Some(c) = child
            && let Some(status) = c.try_wait()?
        {
            bail!("{name} exited ({status}); the end of {}:\n{}", log.display(), tail(log));
        }
        if Instant::now() > deadline {
            bail!("{name} was not ready in time; the end of {}:\n{}", log.display(), tail(log));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// What `up` records about the environment (`env.json`).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct EnvFile {
    /// etcd's client endpoint, `host:port`.
    etcd: String,
    /// The directory of etcd's certificates (the client's are `ca.crt`,
    /// `client.crt` and `client.key`); absent in an environment from before
    /// etcd required them, whose etcd is restarted with TLS.
    #[serde(default)]
    etcd_tls: Option<PathBuf>,
    /// boshd's API URL.
    director: String,
}

/// Runs `up`.
pub async fn up(args: UpArgs) -> Result<()> {
    let dir = std::path::absolute(&args.data_dir)?;
    // etcd's data, boshd's tokens and key, and the logs live here.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let tls_dir = dir.join("etcd-tls");
    let pki = EtcdPki::ensure(&tls_dir)?;
    let env_path = dir.join("env.json");
    let previous: Option<EnvFile> =
        std::fs::read(&env_path).ok().and_then(|b| serde_json::from_slice(&b).ok());
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;

    // etcd
    let etcd = match (running(&dir, "etcd"), &previous) {
        (Some(pid), Some(prev)) if prev.etcd_tls.as_ref() == Some(&tls_dir) => {
            println!("etcd already running (pid {pid}, {})", prev.etcd);
            prev.etcd.clone()
        }
        (running_pid, _) => {
            if let Some(pid) = running_pid {
                // Running, but where it listens was lost (or it runs
                // without client certificates): start afresh.
                stop(&dir, "etcd", pid, Duration::from_secs(args.timeout)).await?;
            }
            let (client, peer) = (free_port()?, free_port()?);
            let mut cmd = Command::new(&args.etcd);
            cmd.args(["--name", "boshrs", "--data-dir"])
                .arg(dir.join("etcd"))
                .args(["--listen-client-urls", &format!("https://127.0.0.1:{client}")])
                .args(["--advertise-client-urls", &format!("https://127.0.0.1:{client}")])
                .args(["--listen-peer-urls", &format!("https://127.0.0.1:{peer}")])
                .args(["--initial-advertise-peer-urls", &format!("https://127.0.0.1:{peer}")])
                .args(["--initial-cluster", &format!("boshrs=https://127.0.0.1:{peer}")])
                .args(["--logger", "zap", "--log-level", "warn"])
                .args(pki.etcd_args());
            let mut child = Some(spawn(cmd, &dir, "etcd")?);
            let probe = EtcdProbe::new(format!("127.0.0.1:{client}"), &pki.client())?;
            wait_ready("etcd", &dir.join("etcd.log"), &mut child, deadline, || probe.healthy())
                .await?;
            println!("etcd started (127.0.0.1:{client}, log {})", dir.join("etcd.log").display());
            // A boshd left from before talks to an etcd that is gone.
            if let Some(pid) = running(&dir, "boshd") {
                stop(&dir, "boshd", pid, Duration::from_secs(args.timeout)).await?;
            }
            format!("127.0.0.1:{client}")
        }
    };

    // boshd
    let boshd_dir = dir.join("boshd");
    let token_file = boshd_dir.join("api-token");
    let answers = |url: String| {
        let http = http.clone();
        let token_file = token_file.clone();
        async move {
            let Ok(token) = std::fs::read_to_string(&token_file) else { return false };
            let r = http.get(format!("{url}/v1/info")).bearer_auth(token.trim()).send().await;
            r.is_ok_and(|r| r.status().is_success())
        }
    };
    let director = match (running(&dir, "boshd"), &previous) {
        (Some(pid), Some(prev)) if prev.etcd == etcd && answers(prev.director.clone()).await => {
            println!("boshd already running (pid {pid}, {})", prev.director);
            prev.director.clone()
        }
        (running_pid, _) => {
            if let Some(pid) = running_pid {
                stop(&dir, "boshd", pid, Duration::from_secs(args.timeout)).await?;
            }
            let listen = match &args.listen {
                Some(l) => l.clone(),
                None => format!("127.0.0.1:{}", free_port()?),
            };
            let boshd = match &args.boshd {
                Some(b) => b.clone(),
                None => std::env::current_exe()?.with_file_name("boshd"),
            };
            let recursors = if args.dns_listen.is_empty() { vec![] } else { host_recursors() };
            let mut cmd = Command::new(&boshd);
            cmd.args(boshd_etcd_args(&etcd, &pki.client()))
                .args(["--listen", &listen])
                // Container VMs reach nats-server and the blobstore at
                // their gateway (their loopback is their own): those two
                // listen on every address, authenticated; the API and etcd
                // stay on loopback.
                .args(["--nats-listen", &format!("0.0.0.0:{}", free_port()?)])
                .args(["--vm-listen", &format!("0.0.0.0:{}", free_port()?)])
                .args(args.dns_listen.iter().flat_map(|a| ["--dns-listen", a.as_str()]))
                .args(recursors.iter().flat_map(|a| ["--dns-recursor", a.as_str()]))
                .arg("--data-dir")
                .arg(&boshd_dir);
            let mut child = Some(spawn(cmd, &dir, "boshd")?);
            let url = format!("http://{listen}");
            wait_ready("boshd", &dir.join("boshd.log"), &mut child, deadline, || {
                answers(url.clone())
            })
            .await?;
            println!("boshd started ({url}, log {})", dir.join("boshd.log").display());
            url
        }
    };
    let env = EnvFile { etcd, etcd_tls: Some(tls_dir), director };
    std::fs::write(&env_path, serde_json::to_vec_pretty(&env)?)?;
    println!("bosh-rs is up: director {} (token in {})", env.director, token_file.display());
    println!(
        "etcd requires a client certificate: etcdctl --endpoints=https://{} {}",
        env.etcd,
        pki.etcdctl_args().iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ")
    );
    Ok(())
}

/// The host's resolvers (`nameserver` lines of `/etc/resolv.conf`, port
/// 53), where boshd's DNS forwards names outside `bosh`: a VM whose only
/// resolver is the director still resolves the rest of the world.
fn host_recursors() -> Vec<String> {
    let conf = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    conf.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|ip| ip.trim().parse::<std::net::IpAddr>().ok())
        .map(|ip| std::net::SocketAddr::new(ip, 53).to_string())
        .collect()
}

/// boshd's flags to reach etcd at `endpoint` with the client identity
/// `tls` (boshd adds its own secrets key).
fn boshd_etcd_args(endpoint: &str, tls: &TlsFiles) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["--etcd".into(), endpoint.into()];
    args.extend(tls.boshd_args());
    args
}

/// Asks etcd whether it is ready: `GET /health` on its client port, over
/// TLS with the client certificate etcd requires. etcd answers
/// `{"health":"true"}` once it has a leader and can serve a read, the same
/// readiness a store connection would need.
struct EtcdProbe {
    /// `host:port` of etcd's client URL.
    endpoint: String,
    /// TLS trusting etcd's CA only, presenting the client certificate.
    tls: tokio_rustls::TlsConnector,
}

/// How long one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

impl EtcdProbe {
    /// A probe of etcd at `endpoint`, identified by `tls`.
    fn new(endpoint: String, tls: &TlsFiles) -> Result<EtcdProbe> {
        let pem = |path: &Path| format!("reading {}", path.display());
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&tls.ca).with_context(|| pem(&tls.ca))? {
            roots.add(cert.with_context(|| pem(&tls.ca))?)?;
        }
        let certs = CertificateDer::pem_file_iter(&tls.cert)
            .and_then(Iterator::collect)
            .with_context(|| pem(&tls.cert))?;
        let key = PrivateKeyDer::from_pem_file(&tls.key).with_context(|| pem(&tls.key))?;
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)?;
        Ok(EtcdProbe { endpoint, tls: tokio_rustls::TlsConnector::from(Arc::new(config)) })
    }

    /// Whether etcd answered healthy within [`PROBE_TIMEOUT`].
    async fn healthy(&self) -> bool {
        matches!(tokio::time::timeout(PROBE_TIMEOUT, self.ask()).await, Ok(Ok(true)))
    }

    async fn ask(&self) -> Result<bool> {
        use http_body_util::BodyExt;
        let host = self.endpoint.rsplit_once(':').map_or(self.endpoint.as_str(), |(h, _)| h);
        let tcp = tokio::net::TcpStream::connect(&self.endpoint).await?;
        let tls = self.tls.connect(ServerName::try_from(host.to_string())?, tcp).await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
        // Ends when the answer is read and `sender` dropped.
        tokio::spawn(conn);
        let request = hyper::Request::get("/health")
            .header(hyper::header::HOST, &self.endpoint)
            .body(http_body_util::Empty::<bytes::Bytes>::new())?;
        let answer = sender.send_request(request).await?;
        let ok = answer.status().is_success();
        let body = answer.into_body().collect().await?.to_bytes();
        /// etcd's answer to `/health`.
        #[derive(serde::Deserialize)]
        struct Health {
            /// `"true"` or `"false"`.
            health: String,
        }
        Ok(ok && serde_json::from_slice::<Health>(&body).is_ok_and(|h| h.health == "true"))
    }
}

/// Stops one process: SIGTERM, then SIGKILL of its process group after `grace`.
async fn stop(dir: &Path, name: &str, pid: i32, grace: Duration) -> Result<()> {
    let pid = Pid::from_raw(pid);
    let gone = || kill(pid, None).is_err() || zombie(pid);
    if kill(pid, Signal::SIGTERM).is_ok() {
        let deadline = Instant::now() + grace;
        while !gone() && Instant::now() < deadline {
            tokio::time::sleep(POLL).await;
        }
        if !gone() {
            eprintln!("{name} did not stop within {grace:?}; killing it");
            // boshd's children (nats-server) share its process group.
            let _ = killpg(pid, Signal::SIGKILL);
            let deadline = Instant::now() + Duration::from_secs(5);
            while !gone() && Instant::now() < deadline {
                tokio::time::sleep(POLL).await;
            }
        }
    }
    std::fs::remove_file(pid_file(dir, name)).ok();
    println!("stopped {name}");
    Ok(())
}

/// Whether `pid` exited but was not reaped (its parent is gone or busy).
fn zombie(pid: Pid) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.starts_with('Z')))
        .unwrap_or(false)
}

/// Runs `down`: stops boshd, then etcd; nothing running is not an error.
pub async fn down(args: DownArgs) -> Result<()> {
    let dir = std::path::absolute(&args.data_dir)?;
    let grace = Duration::from_secs(args.timeout);
    let mut stopped = false;
    for name in PROCESSES.iter().rev() {
        match running(&dir, name) {
            Some(pid) => {
                stop(&dir, name, pid, grace).await?;
                stopped = true;
            }
            None => {
                std::fs::remove_file(pid_file(&dir, name)).ok();
            }
        }
    }
    let cpi = dir.join("boshd/cpi");
    if !args.keep_vms && cpi.is_dir() {
        bosh_cpi::local::LocalCpi::kill_all(&cpi);
        println!("stopped the local VMs of {}", cpi.display());
        stopped = true;
    }
    if !stopped {
        println!("nothing running in {}", dir.display());
    }
    Ok(())
}
