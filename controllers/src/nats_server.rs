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
        let out =
            std::fs::OpenOptions::new().create(true).append(true).open(log).map_err(spawn_err)?;
        let child = tokio::process::Command::new(bin)
            .arg("-c")
            .arg(config)
            .arg("-P")
            .arg(pid_file)
            .stdin(Stdio::null())
            .stdout(out.try_clone().map_err(spawn_err)?)
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .map_err(spawn_err)?;
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
