//! A nats-server that boshd runs itself (the default for a local
//! environment): started with the configuration the bus renders, so that
//! agents' users and permissions are boshd's to manage, and stopped with
//! boshd. Deployments with several boshd replicas run nats-server
//! themselves and point boshd at its configuration and pid file instead.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Errors starting nats-server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The process could not be spawned.
    #[error("starting nats-server ({bin}): {source} (is the nats-server package installed?)")]
    Spawn {
        /// The binary.
        bin: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It did not accept connections in time.
    #[error("nats-server did not accept connections on {listen} within {secs} s; see {log}")]
    NotReady {
        /// Its address.
        listen: String,
        /// How long we waited.
        secs: u64,
        /// Its log file.
        log: String,
    },
}

/// A running nats-server, killed when dropped.
pub struct ManagedNats {
    _child: tokio::process::Child,
}

/// Stops a nats-server left running by a boshd that died before it
/// (its pid file names a live nats-server): a new one could not bind its
/// port, and the old one holds users of a configuration no longer current.
async fn stop_orphan(pid_file: &Path) {
    let Some(pid) =
        std::fs::read_to_string(pid_file).ok().and_then(|p| p.trim().parse::<i32>().ok())
    else {
        return;
    };
    let alive = || {
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|c| c.trim().starts_with("nats-server"))
    };
    if !alive() {
        return;
    }
    tracing::warn!(pid, "stopping a nats-server left running by a previous boshd");
    // SAFETY: plain signals to a process we checked is a nats-server.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if alive() {
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

impl ManagedNats {
    /// Starts `bin -c config -P pid_file`, logging to `log`, and waits until
    /// `listen` accepts connections.
    pub async fn start(
        bin: &str,
        config: &Path,
        pid_file: &Path,
        log: &Path,
        listen: &str,
    ) -> Result<ManagedNats, Error> {
        let spawn_err = |source| Error::Spawn { bin: bin.to_string(), source };
        stop_orphan(pid_file).await;
        let out =
            std::fs::OpenOptions::new().create(true).append(true).open(log).map_err(spawn_err)?;
        let mut child = tokio::process::Command::new(bin);
        child
            .arg("-c")
            .arg(config)
            .arg("-P")
            .arg(pid_file)
            .stdin(Stdio::null())
            .stdout(out.try_clone().map_err(spawn_err)?)
            .stderr(out)
            .kill_on_drop(true);
        // nats-server goes when boshd goes, even when boshd is killed
        // (boshd's main thread spawns it and lives as long as boshd).
        // SAFETY: prctl is async-signal-safe and touches no shared state.
        unsafe {
            child.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = child.spawn().map_err(spawn_err)?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if tokio::net::TcpStream::connect(listen).await.is_ok() {
                return Ok(ManagedNats { _child: child });
            }
            if Instant::now() > deadline {
                return Err(Error::NotReady {
                    listen: listen.to_string(),
                    secs: 20,
                    log: log.display().to_string(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
