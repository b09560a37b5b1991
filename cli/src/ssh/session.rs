//! One `ssh`/`scp` session: a throwaway key pair and user, set up on the
//! targeted instances through the director, the `known_hosts` their
//! answers make, and the cleanup that always follows.
//!
//! The private key never leaves the session's directory (0700, removed
//! when the session is dropped; the key 0600, as ssh-keygen writes it) and
//! is never printed or logged: the director only ever sees the public key.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use bosh_api::agent::SshParams;
use bosh_api::wire::{SshCommand, SshEntry, SshRequest, SshStatus, SshTarget};

use crate::director::Director;

/// Where a program comes from: the openssh-client package (see
/// `hack/install-deps.sh`).
pub const SSH: &str = "ssh";
/// See [`SSH`].
pub const SCP: &str = "scp";
const SSH_KEYGEN: &str = "ssh-keygen";

/// A host to connect to.
#[derive(Debug, Clone)]
pub struct Host {
    /// `GROUP/ID`, for messages and output prefixes.
    pub name: String,
    /// Its address.
    pub ip: String,
}

/// A set-up session; [`cleanup`] removes its user again.
pub struct Session {
    dir: tempfile::TempDir,
    /// The user made on the instances.
    pub user: String,
    /// The instances set up, in the director's order.
    pub hosts: Vec<Host>,
}

async fn call(
    d: &Director,
    deployment: &str,
    target: &SshTarget,
    command: SshCommand,
    params: SshParams,
) -> Result<Vec<SshEntry>> {
    let req = SshRequest { command, target: target.clone(), params };
    d.post(&format!("/v1/deployments/{deployment}/ssh"), &req).await
}

/// Removes `user` from `target`'s instances; a failure is reported, not
/// returned, since the session's own result matters more.
pub async fn cleanup(d: &Director, deployment: &str, target: &SshTarget, user: &str) {
    let params = SshParams { user_regex: format!("^{user}"), ..Default::default() };
    match call(d, deployment, target, SshCommand::Cleanup, params).await {
        Ok(entries) => {
            for e in entries.iter().filter(|e| e.status != SshStatus::Success) {
                eprintln!("warning: ssh cleanup on {}/{}: {}", e.job, e.id, e.error);
            }
        }
        Err(e) => eprintln!("warning: ssh cleanup of {user} failed: {e:#}"),
    }
}

/// A fresh `bosh_<16 hex>` user name, as the bosh CLI makes them.
pub fn new_user() -> Result<String> {
    let mut bytes = [0u8; 8];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .context("reading /dev/urandom")?;
    Ok(format!("bosh_{}", hex::encode(bytes)))
}

/// A `known_hosts` line per host: `<ip> <type> <base64>`.
pub fn known_hosts(entries: &[SshEntry]) -> String {
    entries.iter().map(|e| format!("{} {}\n", e.ip, e.host_public_key)).collect()
}

impl Session {
    /// Makes the key pair, then `user` on `target`'s instances. Fails
    /// unless every instance answered `success` with an address and a host
    /// key; the caller cleans up in every case ([`cleanup`]), since the
    /// director may have made the user on some instances before it failed.
    pub async fn open(
        d: &Director,
        deployment: &str,
        target: SshTarget,
        user: String,
    ) -> Result<Session> {
        let dir = tempfile::Builder::new().prefix("boshctl-ssh-").tempdir()?;
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700))?;
        let key = dir.path().join("id_ed25519");
        let out = tokio::process::Command::new(SSH_KEYGEN)
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "boshctl", "-f"])
            .arg(&key)
            .output()
            .await
            .with_context(|| format!("running {SSH_KEYGEN} (install openssh-client)"))?;
        if !out.status.success() {
            bail!("{SSH_KEYGEN} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        let public_key = fs::read_to_string(key.with_extension("pub"))?.trim().to_string();
        let params = SshParams { user: user.clone(), public_key, user_regex: String::new() };
        let entries = call(d, deployment, &target, SshCommand::Setup, params).await?;
        let failed: Vec<String> = entries
            .iter()
            .filter(|e| {
                e.status != SshStatus::Success || e.ip.is_empty() || e.host_public_key.is_empty()
            })
            .map(|e| {
                let why = if e.error.is_empty() { "no address or host key" } else { &e.error };
                format!("{}/{}: {why}", e.job, e.id)
            })
            .collect();
        if entries.is_empty() {
            bail!("the director set up no instance");
        }
        if !failed.is_empty() {
            bail!("ssh setup failed on {}", failed.join("; "));
        }
        let session = Session {
            hosts: entries
                .iter()
                .map(|e| Host { name: format!("{}/{}", e.job, e.id), ip: e.ip.clone() })
                .collect(),
            dir,
            user,
        };
        let kh = session.known_hosts_file();
        let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&kh)?;
        f.write_all(known_hosts(&entries).as_bytes())?;
        Ok(session)
    }

    fn key_file(&self) -> PathBuf {
        self.dir.path().join("id_ed25519")
    }

    fn known_hosts_file(&self) -> PathBuf {
        self.dir.path().join("known_hosts")
    }

    /// `-o` options every ssh and scp of the session takes: only its key,
    /// only its hosts' keys, never a prompt.
    pub fn options(&self) -> Vec<String> {
        options(&self.key_file(), &self.known_hosts_file())
    }
}

/// See [`Session::options`].
pub fn options(key: &Path, known_hosts: &Path) -> Vec<String> {
    [
        format!("IdentityFile={}", key.display()),
        "IdentitiesOnly=yes".to_string(),
        format!("UserKnownHostsFile={}", known_hosts.display()),
        "GlobalKnownHostsFile=/dev/null".to_string(),
        "StrictHostKeyChecking=yes".to_string(),
        "BatchMode=yes".to_string(),
        "ServerAliveInterval=30".to_string(),
    ]
    .into_iter()
    .flat_map(|o| ["-o".to_string(), o])
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Users are bosh_ names the director accepts, and differ each time.
    #[test]
    fn new_users_are_fresh_bosh_names() {
        let (a, b) = (new_user().unwrap(), new_user().unwrap());
        assert!(bosh_api::agent::is_ssh_user(&a), "{a}");
        assert_ne!(a, b);
    }

    /// known_hosts pins each host's address to its key; the options make ssh check it strictly.
    #[test]
    fn known_hosts_and_options_pin_the_host_keys() {
        let e = SshEntry {
            command: SshCommand::Setup,
            status: SshStatus::Success,
            job: "web".into(),
            index: 0,
            id: "a".into(),
            ip: "10.245.3.5".into(),
            host_public_key: "ssh-ed25519 AAAAkey".into(),
            error: String::new(),
        };
        assert_eq!(known_hosts(&[e]), "10.245.3.5 ssh-ed25519 AAAAkey\n");
        let o = options(Path::new("/s/k"), Path::new("/s/kh")).join(" ");
        for want in [
            "-o IdentityFile=/s/k",
            "-o UserKnownHostsFile=/s/kh",
            "-o StrictHostKeyChecking=yes",
            "-o IdentitiesOnly=yes",
        ] {
            assert!(o.contains(want), "{o}");
        }
    }
}
