//! An etcd cluster of several members on loopback, for the fault matrix's
//! etcd scenarios (FAULT-MATRIX B1, B6): the same client and peer TLS as
//! [`crate::Etcd`] (one [`EtcdPki`], client certificates required), free
//! ports, data under one temp dir (`/dev/shm` where available), every member
//! killed when the cluster is dropped or the test process dies. Members can
//! be killed (SIGKILL) and started again on the same ports and data, and the
//! current raft leader can be found.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bosh_api::store::{EtcdPki, StoreConfig};

use crate::{eventually, free_port, scratch_root, spawn_tied};

/// One member's fixed identity.
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Member {
    fn client_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.client_port)
    }

    fn peer_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.peer_port)
    }

    fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A cluster of etcd members (all started together; see [`EtcdCluster::start`]).
pub struct EtcdCluster {
    members: Vec<Member>,
    pki: EtcdPki,
    initial_cluster: String,
    token: String,
    extra_args: Vec<OsString>,
    dir: Option<tempfile::TempDir>,
}

impl EtcdCluster {
    /// Starts `n` members with `extra_args` added to each member's command
    /// line (e.g. `--quota-backend-bytes`), and waits until the cluster
    /// has a leader and answers a linearizable read.
    ///
    /// Ports come from [`free_port`], which another process may take
    /// before a member binds it; a member that exits at start is found (a
    /// cluster of 3 with a quorum of 2 would otherwise look ready, and the
    /// test's first kill would leave it without one), and the whole start
    /// is tried again on new ports, up to three times.
    pub async fn start(n: usize, extra_args: &[&str]) -> Result<EtcdCluster> {
        if n == 0 {
            bail!("an etcd cluster needs at least one member");
        }
        let mut attempt = 1;
        loop {
            match Self::start_once(n, extra_args).await {
                Err(e) if attempt < 3 && format!("{e:#}").contains("address already in use") => {
                    eprintln!("etcd cluster start {attempt} lost a port race, trying again: {e:#}");
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn start_once(n: usize, extra_args: &[&str]) -> Result<EtcdCluster> {
        let dir =
            tempfile::Builder::new().prefix("bosh-rs-etcd-cluster-").tempdir_in(scratch_root())?;
        let pki = EtcdPki::ensure(&dir.path().join("etcd-tls"))?;
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                data_dir: dir.path().join(format!("m{i}")),
                log: dir.path().join(format!("m{i}.log")),
                child: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        let token = dir
            .path()
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| "bosh-rs-test".into());
        let mut cluster = EtcdCluster {
            members,
            pki,
            initial_cluster,
            token,
            extra_args: extra_args.iter().map(OsString::from).collect(),
            dir: Some(dir),
        };
        for i in 0..n {
            cluster.spawn(i)?;
        }
        cluster.wait_ready(Duration::from_secs(60)).await?;
        cluster.wait_every_member(Duration::from_secs(60)).await?;
        Ok(cluster)
    }

    /// Waits until every member runs and knows a leader; fails at once,
    /// with the end of its log, when a member has exited.
    async fn wait_every_member(&mut self, timeout: Duration) -> Result<()> {
        let deadline = std::time::Instant::now() + timeout;
        for i in 0..self.members.len() {
            loop {
                let m = &mut self.members[i];
                if let Some(child) = m.child.as_mut()
                    && let Some(status) = child.try_wait()?
                {
                    let log = std::fs::read_to_string(&m.log).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(3).collect();
                    bail!(
                        "etcd member {} exited at start ({status}): {}",
                        m.name,
                        tail.join(" | ")
                    );
                }
                if member_status(&self.member_config(i)).await.is_some_and(|(_, l)| l != 0) {
                    break;
                }
                if std::time::Instant::now() > deadline {
                    bail!("etcd member m{i} did not join within {timeout:?}");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    /// How many members the cluster has (running or not).
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the cluster has no members (never: see [`EtcdCluster::start`]).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    fn spawn(&mut self, i: usize) -> Result<()> {
        let m = &self.members[i];
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&m.log)?;
        let (client, peer) = (m.client_url(), m.peer_url());
        let mut cmd = Command::new("etcd");
        cmd.args(["--name", &m.name, "--data-dir"])
            .arg(&m.data_dir)
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-token", &self.token, "--initial-cluster-state", "new"])
            .args(["--logger", "zap", "--log-level", "warn"])
            .args(self.pki.etcd_args())
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = spawn_tied(cmd)
            .context("starting etcd (is etcd-server installed? run hack/install-deps.sh)")?;
        self.members[i].child = Some(child);
        Ok(())
    }

    /// Every member's client endpoint (`host:port`), running or not.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::endpoint).collect()
    }

    /// How to connect to the whole cluster (every endpoint) with the client
    /// certificate; no secrets key.
    pub fn config(&self) -> StoreConfig {
        StoreConfig { endpoints: self.endpoints(), tls: Some(self.pki.client()), secrets_key: None }
    }

    /// How to connect to member `i` alone.
    pub fn member_config(&self, i: usize) -> StoreConfig {
        StoreConfig {
            endpoints: vec![self.members[i].endpoint()],
            tls: Some(self.pki.client()),
            secrets_key: None,
        }
    }

    /// The certificates the members and their clients use.
    pub fn pki(&self) -> &EtcdPki {
        &self.pki
    }

    /// An `etcdctl` command with every endpoint and the client certificate set.
    pub fn etcdctl(&self) -> Command {
        let mut cmd = Command::new("etcdctl");
        let endpoints: Vec<String> = self.members.iter().map(Member::client_url).collect();
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", endpoints.join(",")))
            .args(self.pki.etcdctl_args());
        cmd
    }

    /// Whether member `i` is running (as far as this handle knows: it was
    /// started and not killed).
    pub fn is_running(&self, i: usize) -> bool {
        self.members[i].child.is_some()
    }

    /// Kills member `i` (SIGKILL).
    pub fn kill(&mut self, i: usize) {
        self.members[i].kill();
    }

    /// Kills every member.
    pub fn kill_all(&mut self) {
        for m in &mut self.members {
            m.kill();
        }
    }

    /// Starts member `i` again on its ports and data (it rejoins the
    /// cluster) and waits until it answers as a member with a leader.
    pub async fn restart(&mut self, i: usize) -> Result<()> {
        self.members[i].kill();
        self.spawn(i)?;
        let config = self.member_config(i);
        let log = self.members[i].log.clone();
        eventually(Duration::from_secs(60), &format!("member m{i} to rejoin"), || {
            let config = config.clone();
            async move {
                let mut c = config.client().await.ok()?;
                let s = c.status().await.ok()?;
                (s.leader() != 0 && s.raft_index() > 0).then_some(())
            }
        })
        .await
        .with_context(|| format!("etcd log: {}", log.display()))
    }

    /// The index of the member that is the raft leader now, asking each
    /// running member (`None`: no running member knows a leader).
    pub async fn leader(&self) -> Option<usize> {
        for (i, m) in self.members.iter().enumerate() {
            if m.child.is_none() {
                continue;
            }
            let Some(status) = member_status(&self.member_config(i)).await else { continue };
            let (me, leader) = status;
            if leader != 0 && me == leader {
                return Some(i);
            }
        }
        None
    }

    /// Waits (up to `timeout`) until a running member other than `old` is
    /// the leader and the cluster answers a linearizable read; returns it.
    pub async fn wait_new_leader(&self, old: usize, timeout: Duration) -> Result<usize> {
        eventually(timeout, "a new etcd leader", || async {
            let l = self.leader().await?;
            (l != old).then_some(l)
        })
        .await
    }

    /// Waits until the cluster (every endpoint) answers a linearizable read.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let config = self.config();
        let logs = self.dir().display().to_string();
        eventually(timeout, "the etcd cluster to answer a linearizable read", || {
            let config = config.clone();
            async move {
                let mut c = config.client().await.ok()?;
                let read = c.get("/health-probe", None);
                tokio::time::timeout(Duration::from_secs(2), read).await.ok()?.ok().map(drop)
            }
        })
        .await
        .with_context(|| format!("etcd logs in {logs}"))
    }

    /// The temp dir holding every member's data and log.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("dir is present until drop").path()
    }
}

/// (this member's id, its leader's id), from member `config`'s status.
async fn member_status(config: &StoreConfig) -> Option<(u64, u64)> {
    let mut c = config.client().await.ok()?;
    let s = tokio::time::timeout(Duration::from_secs(2), c.status()).await.ok()?.ok()?;
    Some((s.header()?.member_id(), s.leader()))
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        self.kill_all();
        if std::thread::panicking()
            && let Some(dir) = self.dir.take()
        {
            crate::keep_failed(dir, "etcd cluster");
        }
    }
}
