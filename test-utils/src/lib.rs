//! Test harness: a private etcd and nats-server per test, on free loopback
//! ports with temp data dirs, stopped when dropped (also when the test
//! panics) and killed with the test process if it dies (`PR_SET_PDEATHSIG`).
//!
//! On failure the data dir is kept and its path printed, so the servers'
//! logs can be read after the fact.
//!
//! # Layout
//!
//! - [`Etcd`]: one etcd member, requiring client certificates as a real
//!   environment's does; can be stopped and started again on the same
//!   ports and data, to test reconnects.
//! - [`EtcdCluster`]: several etcd members with the same TLS, whose
//!   members can be killed and restarted and whose leader can be found
//!   (`etcd_cluster.rs`).
//! - [`Nats`]: one nats-server, whose port it picks itself.
//! - [`TestEnv`]: both, under one temp dir.
//! - [`eventually`]: poll a condition with a deadline instead of sleeping.
//! - [`agent`]: real `bosh-agent` processes.
//! - [`SubnetLease`]: a loopback subnet for a world's VMs that no other
//!   live test process holds (`subnet.rs`).
//! - [`moto`]: moto's S3-compatible server, for release blobstore tests.
//! - [`gcs`]: gcp-storage-emulator, a GCS-compatible server, for the same.
//! - [`mounts_under`]: what is mounted under a directory.
//! - [`proxy`]: a TCP proxy that drops, blackholes, delays or loses
//!   responses on command, for fault tests.

pub mod agent;
mod etcd_cluster;
pub mod gcs;
pub mod moto;
pub mod proxy;
mod subnet;

pub use etcd_cluster::EtcdCluster;
pub use subnet::{LEASE_PORT, SubnetLease, SubnetSize};

use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bosh_api::store::{EtcdPki, SecretsKey, StoreConfig};

/// Mount points at or under `dir` (from `/proc/self/mountinfo`): what a
/// test of VMs that mount things checks is empty once they are gone.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let dir = dir.to_string_lossy();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(dir.as_ref()))
        .map(str::to_string)
        .collect()
}

/// Picks a free loopback port (the OS chooses; the listener is dropped).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap()
}

/// The directory temp dirs go in: `/dev/shm` where available, because etcd
/// 3.4 cannot turn fsync off and tests should not wait on a disk.
fn scratch_root() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() }
}

/// Spawns `cmd` so that it dies with the test process.
fn spawn_tied(mut cmd: Command) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd.spawn()
}

/// Copies a directory tree (files and directories), e.g. an example release
/// into a temp dir so a test never writes into the repository.
pub fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let dest = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &dest)?;
        } else {
            std::fs::copy(e.path(), dest)?;
        }
    }
    Ok(())
}

/// Files a failed test keeps for diagnosis are at most this large; bigger
/// ones (etcd's preallocated WAL segments, VM images) are listed instead.
const KEEP_MAX_FILE: u64 = 4 << 20;

/// Keeps what a failed test's servers left in `dir` (logs, configs, the
/// CPI's records) for diagnosis, and removes `dir`. Scratch dirs live in
/// `/dev/shm`, which is memory: kept whole, the etcd data of every failed
/// try (120 MB each) stayed in RAM until the next reboot. So the small
/// files are copied under the system temp dir and the rest is listed in
/// `LEFT-OUT`.
fn keep_failed(dir: tempfile::TempDir, what: &str) {
    let name = dir.path().file_name().unwrap_or_default().to_owned();
    let dest = std::env::temp_dir().join("bosh-rs-failed").join(name);
    let mut left_out = Vec::new();
    match copy_small(dir.path(), &dest, &mut left_out) {
        Ok(()) => {
            let list: String = left_out.iter().map(|p| format!("{}\n", p.display())).collect();
            let _ = std::fs::write(dest.join("LEFT-OUT"), list);
            eprintln!(
                "test failed: {what} logs kept in {} ({} large file(s) left out)",
                dest.display(),
                left_out.len()
            );
        }
        Err(e) => eprintln!("test failed: keeping {what} logs in {}: {e}", dest.display()),
    }
}

/// Copies the regular files of `from` no larger than [`KEEP_MAX_FILE`] to
/// `to`, recording the others in `left_out`.
fn copy_small(from: &Path, to: &Path, left_out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let (kind, dest) = (e.file_type()?, to.join(e.file_name()));
        if kind.is_dir() {
            copy_small(&e.path(), &dest, left_out)?;
        } else if kind.is_file() && e.metadata()?.len() <= KEEP_MAX_FILE {
            std::fs::copy(e.path(), dest)?;
        } else if kind.is_file() {
            left_out.push(e.path());
        }
    }
    Ok(())
}

/// Polls `check` every 20 ms until it returns `Some`, or fails after
/// `timeout` with `what` in the message.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One etcd member on loopback, with TLS and client-certificate
/// authentication on its client and peer ports (certificates in
/// `<dir>/etcd-tls`), so that every test connects the way boshd does.
pub struct Etcd {
    child: Option<Child>,
    data_dir: PathBuf,
    log: PathBuf,
    pki: EtcdPki,
    client_port: u16,
    peer_port: u16,
}

impl Etcd {
    /// Starts etcd with its data under `dir` and waits until it is healthy.
    pub async fn start_in(dir: &Path) -> Result<Etcd> {
        let mut etcd = Etcd {
            child: None,
            data_dir: dir.join("etcd"),
            log: dir.join("etcd.log"),
            pki: EtcdPki::ensure(&dir.join("etcd-tls"))?,
            client_port: free_port(),
            peer_port: free_port(),
        };
        etcd.start_again().await?;
        Ok(etcd)
    }

    /// `host:port` for clients.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// How to connect with the client certificate (no secrets key; see
    /// [`TestEnv::store_config`]).
    pub fn config(&self) -> StoreConfig {
        StoreConfig {
            endpoints: vec![self.endpoint()],
            tls: Some(self.pki.client()),
            secrets_key: None,
        }
    }

    /// The certificates etcd and its clients use.
    pub fn pki(&self) -> &EtcdPki {
        &self.pki
    }

    /// An `etcdctl` command with the endpoint and client certificate set.
    pub fn etcdctl(&self) -> Command {
        let mut cmd = Command::new("etcdctl");
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints=https://{}", self.endpoint()))
            .args(self.pki.etcdctl_args());
        cmd
    }

    /// Stops the process (SIGKILL: the harshest case for clients).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts (again) on the same ports and data dir; waits until healthy.
    pub async fn start_again(&mut self) -> Result<()> {
        self.stop();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let client = format!("https://127.0.0.1:{}", self.client_port);
        let peer = format!("https://127.0.0.1:{}", self.peer_port);
        let mut cmd = Command::new("etcd");
        cmd.args(["--name", "test", "--data-dir"])
            .arg(&self.data_dir)
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("test={peer}")])
            .args(["--logger", "zap", "--log-level", "warn"])
            .args(self.pki.etcd_args())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = spawn_tied(cmd)
            .context("starting etcd (is etcd-server installed? run hack/install-deps.sh)")?;
        self.child = Some(child);
        let config = self.config();
        eventually(Duration::from_secs(30), "etcd to report healthy", || etcd_healthy(&config))
            .await
            .with_context(|| format!("etcd log: {}", self.log.display()))?;
        Ok(())
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether etcd answers a status call over TLS with our client certificate.
async fn etcd_healthy(config: &StoreConfig) -> Option<()> {
    let mut client = config.client().await.ok()?;
    client.status().await.ok().map(drop)
}

/// One nats-server on loopback; can be killed and started again on the
/// same port (fault tests: a NATS crash).
pub struct Nats {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    args: Vec<String>,
}

impl Nats {
    /// Starts nats-server with the extra `args` (e.g. `["-c", conf]`),
    /// letting it pick its port and reading the port back from its ports file.
    pub async fn start_in(dir: &Path, args: &[&str]) -> Result<Nats> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let child = Nats::spawn(dir, "-1", &args, false)?;
        let ports_file = dir.join("nats-ports").join(format!("nats-server_{}.ports", child.id()));
        let mut nats = Nats { child: Some(child), port: 0, dir: dir.to_path_buf(), args };
        nats.port = eventually(Duration::from_secs(20), "nats-server's ports file", || {
            let f = ports_file.clone();
            async move { read_nats_port(&f) }
        })
        .await?;
        nats.accepting().await?;
        Ok(nats)
    }

    fn spawn(dir: &Path, port: &str, args: &[String], append: bool) -> Result<Child> {
        let ports_dir = dir.join("nats-ports");
        std::fs::create_dir_all(&ports_dir)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(append)
            .write(true)
            .truncate(!append)
            .open(dir.join("nats.log"))?;
        let mut cmd = Command::new("nats-server");
        cmd.args(["-a", "127.0.0.1", "-p", port, "--ports_file_dir"])
            .arg(&ports_dir)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        spawn_tied(cmd).context("starting nats-server (run hack/install-deps.sh)")
    }

    async fn accepting(&self) -> Result<()> {
        let port = self.port;
        eventually(Duration::from_secs(20), "nats-server to accept connections", || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok().map(|_| ())
        })
        .await
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The server's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server (SIGKILL, no goodbye to clients) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again (killing it first if it runs) with the same
    /// arguments on the same port; waits until it accepts connections.
    pub async fn restart(&mut self) -> Result<()> {
        self.kill();
        let child = Nats::spawn(&self.dir, &self.port.to_string(), &self.args, true)?;
        self.child = Some(child);
        self.accepting().await
    }
}

fn read_nats_port(path: &Path) -> Option<u16> {
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let url = v["nats"].as_array()?.first()?.as_str()?;
    url.rsplit(':').next()?.parse().ok()
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A private etcd (and optionally nats-server) for one test, with a
/// secrets encryption key shared by every store and boshd of the test.
pub struct TestEnv {
    /// The etcd member.
    pub etcd: Etcd,
    /// The nats-server, when started with [`TestEnv::start`].
    pub nats: Option<Nats>,
    secrets_key: SecretsKey,
    dir: Option<tempfile::TempDir>,
}

impl TestEnv {
    /// etcd and nats-server.
    pub async fn start() -> Result<TestEnv> {
        let mut env = TestEnv::etcd_only().await?;
        env.nats = Some(Nats::start_in(env.dir(), &[]).await?);
        Ok(env)
    }

    /// etcd only, for store and runtime tests.
    pub async fn etcd_only() -> Result<TestEnv> {
        let dir = tempfile::Builder::new().prefix("bosh-rs-test-").tempdir_in(scratch_root())?;
        let etcd = Etcd::start_in(dir.path()).await?;
        let secrets_key = SecretsKey::load_or_create(&dir.path().join("encryption-key"))?;
        Ok(TestEnv { etcd, nats: None, secrets_key, dir: Some(dir) })
    }

    /// How stores connect: the endpoint, the client certificate and the
    /// test's secrets key.
    pub fn store_config(&self) -> StoreConfig {
        StoreConfig { secrets_key: Some(self.secrets_key.clone()), ..self.etcd.config() }
    }

    /// The `boshd` flags for this etcd and secrets key (`--etcd`, its
    /// certificate flags and `--encryption-key-file`).
    pub fn boshd_args(&self) -> Vec<std::ffi::OsString> {
        let mut args = self.etcd.config().boshd_args();
        args.push("--encryption-key-file".into());
        args.push(self.encryption_key_file().into());
        args
    }

    /// The file holding the test's secrets key (what boshd is given).
    pub fn encryption_key_file(&self) -> PathBuf {
        self.dir().join("encryption-key")
    }

    /// The temp dir holding data and logs.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("dir is present until drop").path()
    }

    /// Stops everything and removes the temp dir.
    pub fn terminate(self) {}
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        self.etcd.stop();
        self.nats.take();
        if std::thread::panicking()
            && let Some(dir) = self.dir.take()
        {
            keep_failed(dir, "servers'");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failed test's scratch dir leaves memory: small files are copied
    /// to disk, large ones listed, the dir removed.
    #[test]
    fn a_failed_tests_dir_is_kept_small_and_leaves_dev_shm() {
        let dir =
            tempfile::Builder::new().prefix("bosh-rs-keep-").tempdir_in(scratch_root()).unwrap();
        let src = dir.path().to_path_buf();
        std::fs::create_dir_all(src.join("etcd/member")).unwrap();
        std::fs::write(src.join("etcd.log"), "the log").unwrap();
        let wal = std::fs::File::create(src.join("etcd/member/0.wal")).unwrap();
        wal.set_len(KEEP_MAX_FILE + 1).unwrap();
        keep_failed(dir, "test");
        let dest = std::env::temp_dir().join("bosh-rs-failed").join(src.file_name().unwrap());
        assert!(!src.exists(), "the scratch dir was removed");
        assert_eq!(std::fs::read_to_string(dest.join("etcd.log")).unwrap(), "the log");
        assert!(!dest.join("etcd/member/0.wal").exists());
        let left_out = std::fs::read_to_string(dest.join("LEFT-OUT")).unwrap();
        assert!(left_out.contains("0.wal"), "{left_out}");
        std::fs::remove_dir_all(dest).unwrap();
    }
    use tokio::io::AsyncBufReadExt;

    /// The first line nats-server sends a new client (`INFO {...}`).
    async fn greeting(addr: std::net::SocketAddr) -> String {
        let s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut line = String::new();
        tokio::io::BufReader::new(s).read_line(&mut line).await.unwrap();
        line
    }

    /// A killed nats-server refuses connections; restarted, it serves on the same port.
    #[tokio::test]
    async fn nats_killed_and_restarted_keeps_its_port() {
        let dir = tempfile::tempdir().unwrap();
        let mut nats = Nats::start_in(dir.path(), &[]).await.unwrap();
        let (addr, pid) = (nats.addr(), nats.pid());
        assert!(greeting(addr).await.starts_with("INFO "));
        nats.kill();
        assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "nothing listens");
        nats.restart().await.unwrap();
        assert_eq!(nats.addr(), addr);
        assert_ne!(nats.pid(), pid, "a new process");
        assert!(greeting(addr).await.starts_with("INFO "));
    }
}
