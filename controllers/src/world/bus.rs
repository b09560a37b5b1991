//! Bus security: every agent authenticates to nats-server with credentials
//! of its own and may only use its own subjects.
//!
//! boshd owns the nats-server configuration file. Each agent gets a user
//! that may subscribe only to `agent.<id>` and publish only to
//! `hm.agent.{heartbeat,alert,shutdown}.<id>` and to the reply subjects of
//! requests it received (`allow_responses`). Passwords are generated once,
//! kept as secrets in etcd (never in an object, a log or an event) and the
//! configuration is re-rendered from them and nats-server reloaded
//! (SIGHUP) whenever an agent is added or revoked; nats-server then closes
//! connections whose user no longer exists, so a deleted VM's credentials
//! stop working at once.

use std::fmt::Write as _;
use std::path::PathBuf;

use bosh_api::store::{self, Store};
use rand::distr::{Alphanumeric, SampleString};
use tokio::sync::Mutex;
use tracing::info;

/// Where secrets of agents live.
const SECRET_PREFIX: &str = "nats/agents/";

/// Errors of the bus.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing the secrets failed.
    #[error("bus credentials: {0}")]
    Store(#[from] store::Error),
    /// Writing the nats-server configuration failed.
    #[error("writing {path}: {source}")]
    Config {
        /// The configuration file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// nats-server could not be told to reload.
    #[error("reloading nats-server (pid file {path}): {message}")]
    Reload {
        /// The pid file.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

/// A NATS user and password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub user: String,
    /// The password (a generated secret).
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// How boshd reaches and manages nats-server.
#[derive(Debug, Clone)]
pub struct BusConfig {
    /// The configuration file nats-server runs with (`-c`).
    pub config_path: PathBuf,
    /// nats-server's pid file (`-P`), for reloads.
    pub pid_file: PathBuf,
    /// `host:port` nats-server listens on.
    pub listen: String,
    /// boshd's own credentials (full access).
    pub director: Credentials,
    /// nats-server's monitoring address (`host:port`); boshd reads
    /// `/varz` there to know when a reload has been applied.
    pub monitor: Option<String>,
}

/// Issues and revokes agents' NATS credentials.
pub struct Bus {
    store: Store,
    cfg: BusConfig,
    /// Serializes render-and-reload so two changes never interleave.
    lock: Mutex<()>,
}

fn generate_password() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), 32)
}

impl Bus {
    /// A bus over `store`'s secrets and the nats-server described by `cfg`.
    pub fn new(store: Store, cfg: BusConfig) -> Bus {
        Bus { store, cfg, lock: Mutex::new(()) }
    }

    /// The NATS URL agents connect to.
    pub fn url(&self) -> String {
        format!("nats://{}", self.cfg.listen)
    }

    /// Credentials for `agent_id`, created on first use through `writer`
    /// (a controller's fenced store: a deposed leader creates nothing); the
    /// configuration is re-rendered and nats-server reloaded when they are new.
    pub async fn issue(&self, writer: &Store, agent_id: &str) -> Result<Credentials, Error> {
        let name = format!("{SECRET_PREFIX}{agent_id}");
        let existing = self.store.get_secret(&name).await?;
        let password = match existing {
            Some(p) => String::from_utf8_lossy(&p).into_owned(),
            None => {
                let p = writer.create_secret(&name, generate_password().as_bytes()).await?;
                self.sync().await?;
                String::from_utf8_lossy(&p).into_owned()
            }
        };
        Ok(Credentials { user: user_for(agent_id), password })
    }

    /// Removes `agent_id`'s credentials through `writer` (see [`Bus::issue`]);
    /// its connections are closed by the reload.
    pub async fn revoke(&self, writer: &Store, agent_id: &str) -> Result<(), Error> {
        writer.delete_secret(&format!("{SECRET_PREFIX}{agent_id}")).await?;
        self.sync().await?;
        info!(agent = agent_id, "revoked NATS credentials");
        Ok(())
    }

    /// Re-renders the configuration from the stored secrets and reloads
    /// nats-server if it is running (at boshd start, and after changes).
    ///
    /// Replicas sharing one nats-server render into one file. Each render
    /// names the store revision its secrets were read at, and a render
    /// never replaces a newer one; a short file lock keeps the check and
    /// the write together — but is given up on after a while, so a replica
    /// paused while holding it blocks nobody (the revision check remains).
    pub async fn sync(&self) -> Result<(), Error> {
        let _guard = self.lock.lock().await;
        // A replica paused between reading the secrets and writing the file
        // (SIGSTOP, a long GC-like stall) writes an old render when it
        // resumes, which would lock out agents made meanwhile. So the
        // revision check sits right before the write, and after writing,
        // the secrets are read again: if they moved on, render again.
        for _ in 0..5 {
            let file_lock = self.lock_config().await?;
            let loaded_before = self.config_load_time().await;
            let (secrets, revision) = self.store.list_secrets_at(SECRET_PREFIX).await?;
            if rendered_revision(&self.cfg.config_path, &self.cfg.director) > revision {
                break;
            }
            let agents = agents_of(secrets);
            let text = render(&self.cfg, &agents, revision);
            crate::libs::secret_file::write(&self.cfg.config_path, text.as_bytes())
                .map_err(|source| Error::Config { path: self.cfg.config_path.clone(), source })?;
            let reloaded = self.reload()?;
            drop(file_lock);
            if reloaded {
                self.confirm_reload(loaded_before).await;
            }
            let (now, _) = self.store.list_secrets_at(SECRET_PREFIX).await?;
            if agents_of(now) == agents {
                break;
            }
        }
        Ok(())
    }

    /// Waits (bounded) until nats-server's `/varz` reports a load time
    /// other than `before`: it applies a reload asynchronously, and an
    /// agent started before it has would be refused once and wait out a
    /// reconnect delay.
    async fn confirm_reload(&self, before: Option<String>) {
        let Some(before) = before else { return };
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while tokio::time::Instant::now() < deadline {
            match self.config_load_time().await {
                Some(now) if now != before => return,
                _ => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        }
        tracing::warn!("nats-server did not confirm the reload within 10 s");
    }

    /// Locks `<config>.lock` across processes until the returned file
    /// drops; `None` when another process has held it for over 2 s.
    async fn lock_config(&self) -> Result<Option<std::fs::File>, Error> {
        let path = self.cfg.config_path.with_extension("lock");
        let err = |source| Error::Config { path: path.clone(), source };
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(err)?;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            match f.try_lock() {
                Ok(()) => return Ok(Some(f)),
                Err(std::fs::TryLockError::WouldBlock)
                    if tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    tracing::warn!(path = %path.display(), "nats-server configuration lock held for 2 s; rendering without it");
                    return Ok(None);
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(err(e)),
            }
        }
    }

    /// `config_load_time` from nats-server's `/varz`, if it is reachable.
    async fn config_load_time(&self) -> Option<String> {
        let m = self.cfg.monitor.as_ref()?;
        let v: serde_json::Value =
            reqwest::get(format!("http://{m}/varz")).await.ok()?.json().await.ok()?;
        v["config_load_time"].as_str().map(str::to_string)
    }

    /// Signals nats-server to reload; false when it is not running yet.
    fn reload(&self) -> Result<bool, Error> {
        let err = |message: String| Error::Reload { path: self.cfg.pid_file.clone(), message };
        let pid = match std::fs::read_to_string(&self.cfg.pid_file) {
            Ok(p) => p.trim().parse::<i32>().map_err(|e| err(e.to_string()))?,
            // Not started yet: it will read the file when it starts.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(err(e.to_string())),
        };
        // A pid file left by a nats-server that is gone (a crashed or
        // killed environment) names no process, or someone else's: that is
        // "not running", and nothing is signalled.
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if !comm.trim().starts_with("nats-server") {
            return Ok(false);
        }
        match nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGHUP,
        ) {
            Ok(()) => Ok(true),
            Err(nix::errno::Errno::ESRCH) => Ok(false),
            Err(e) => Err(err(e.to_string())),
        }
    }
}

/// The NATS user of an agent.
pub fn user_for(agent_id: &str) -> String {
    format!("agent-{agent_id}")
}

/// Quotes a string for the nats-server configuration format.
fn quote(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}

/// Agent ids and passwords from the stored secrets, in key order.
fn agents_of(secrets: Vec<(String, Vec<u8>)>) -> Vec<(String, String)> {
    secrets
        .into_iter()
        .map(|(name, pw)| {
            (name[SECRET_PREFIX.len()..].to_string(), String::from_utf8_lossy(&pw).into_owned())
        })
        .collect()
}

/// The first line of a rendered configuration names the store revision
/// its secrets were read at.
const REVISION_HEADER: &str = "# boshd revision: ";

/// The revision a rendered configuration was made from (0: none, or
/// rendered from another etcd — one whose director credentials differ,
/// e.g. an environment whose etcd was wiped — whose revisions say nothing).
fn rendered_revision(path: &std::path::Path, director: &Credentials) -> i64 {
    let Ok(text) = std::fs::read_to_string(path) else { return 0 };
    if !text.contains(&format!("password: {}", quote(&director.password))) {
        return 0;
    }
    text.lines()
        .next()
        .and_then(|l| l.strip_prefix(REVISION_HEADER)?.trim().parse().ok())
        .unwrap_or(0)
}

/// Renders the nats-server configuration from secrets read at `revision`.
pub fn render(cfg: &BusConfig, agents: &[(String, String)], revision: i64) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{REVISION_HEADER}{revision}");
    let _ = writeln!(out, "# Written by boshd; changes are overwritten.");
    let _ = writeln!(out, "listen: {}", quote(&cfg.listen));
    let _ = writeln!(out, "max_payload: 1048576");
    if let Some(m) = &cfg.monitor {
        let _ = writeln!(out, "http: {}", quote(m));
    }
    let _ = writeln!(out, "authorization {{\n  users = [");
    let _ = writeln!(
        out,
        "    {{user: {}, password: {}, permissions: {{publish: \">\", subscribe: \">\"}}}}",
        quote(&cfg.director.user),
        quote(&cfg.director.password)
    );
    for (id, password) in agents {
        let publish = ["heartbeat", "alert", "shutdown"]
            .iter()
            .map(|k| quote(&format!("hm.agent.{k}.{id}")))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            out,
            "    {{user: {}, password: {}, permissions: {{publish: {{allow: [{publish}]}}, subscribe: {{allow: [{}]}}, allow_responses: true}}}}",
            quote(&user_for(id)),
            quote(password),
            quote(&bosh_api::agent::request_subject(id)),
        );
    }
    let _ = writeln!(out, "  ]\n}}");
    out
}

/// The secret holding the director's own NATS password.
const DIRECTOR_SECRET: &str = "nats/director";

/// The director's NATS credentials, generated once and kept in etcd so
/// every boshd replica connects as the same user and renders the same
/// configuration.
pub async fn director_credentials(store: &Store) -> Result<Credentials, Error> {
    let pw = store.create_secret(DIRECTOR_SECRET, generate_password().as_bytes()).await?;
    Ok(Credentials { user: "director".into(), password: String::from_utf8_lossy(&pw).into_owned() })
}

impl BusConfig {
    /// A configuration with freshly generated director credentials.
    pub fn generate(config_path: PathBuf, pid_file: PathBuf, listen: String) -> BusConfig {
        BusConfig {
            config_path,
            pid_file,
            listen,
            director: Credentials { user: "director".into(), password: generate_password() },
            monitor: std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .ok()
                .map(|a| a.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Passwords never show in Debug output.
    #[test]
    fn credentials_debug_redacts_the_password() {
        let c = Credentials { user: "u".into(), password: "hunter2".into() };
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    /// Each agent may publish only its own hm subjects and subscribe only its own request subject.
    #[test]
    fn render_scopes_each_agent_to_its_subjects() {
        let cfg = BusConfig::generate("/x".into(), "/y".into(), "127.0.0.1:4222".into());
        let text = render(&cfg, &[("a1".into(), "pw".into())], 7);
        assert!(text.starts_with("# boshd revision: 7\n"), "{text}");
        assert!(text.contains(r#"subscribe: {allow: ["agent.a1"]}"#), "{text}");
        assert!(
            text.contains(
                r#""hm.agent.heartbeat.a1", "hm.agent.alert.a1", "hm.agent.shutdown.a1""#
            )
        );
        assert!(text.contains("allow_responses: true"));
    }
}
