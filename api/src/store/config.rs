//! How to reach etcd, in one type every client of ours connects through:
//! the endpoints, the client certificate etcd requires (made by
//! [`crate::pki::EtcdPki`]), and the key that secrets are encrypted with
//! before they reach etcd.

use std::ffi::OsString;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

use super::secrets::SecretsKey;
use super::{Error, Result};
use crate::pki::TlsFiles;

/// Everything a store (or a raw etcd client) needs to connect: kept in one
/// type so that no connection can forget the client certificate or the
/// secrets key.
#[derive(Clone, Default)]
pub struct StoreConfig {
    /// etcd endpoints, `host:port` (`https://` is implied with `tls`).
    pub endpoints: Vec<String>,
    /// The client certificate etcd requires; `None` only for an etcd
    /// without client-certificate authentication.
    pub tls: Option<TlsFiles>,
    /// The key secrets are encrypted with at rest; without one, secrets
    /// are written as plaintext and encrypted ones cannot be read.
    pub secrets_key: Option<SecretsKey>,
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreConfig")
            .field("endpoints", &self.endpoints)
            .field("tls", &self.tls)
            .field("secrets_key", &self.secrets_key.as_ref().map(SecretsKey::id))
            .finish()
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })
}

impl StoreConfig {
    /// A connection to `endpoints` with neither TLS nor a secrets key.
    pub fn plain(endpoints: Vec<String>) -> StoreConfig {
        StoreConfig { endpoints, tls: None, secrets_key: None }
    }

    /// A raw etcd client for these endpoints and this identity. Only the
    /// store writes through it (`clippy.toml`); benchmarks use it to
    /// measure etcd itself.
    pub async fn client(&self) -> Result<Client> {
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5))
            .with_keep_alive_while_idle(true);
        if let Some(tls) = &self.tls {
            opts = opts.with_tls(
                TlsOptions::new()
                    .ca_certificate(Certificate::from_pem(read(&tls.ca)?))
                    .identity(Identity::from_pem(read(&tls.cert)?, read(&tls.key)?)),
            );
        }
        Client::connect(&self.endpoints, Some(opts)).await.map_err(Error::etcd("connect"))
    }

    /// The `boshd` flags that reproduce this configuration (`--etcd`,
    /// `--etcd-ca`, `--etcd-cert`, `--etcd-key`; the secrets key is passed
    /// separately as `--encryption-key-file`, being a file of its own).
    pub fn boshd_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec!["--etcd".into(), self.endpoints.join(",").into()];
        if let Some(tls) = &self.tls {
            args.extend(tls.boshd_args());
        }
        args
    }
}
