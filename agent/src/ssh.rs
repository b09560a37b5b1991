//! BOSH's `ssh` method: `setup` makes a short-lived user (`bosh_...`, home
//! under `/var/vcap/bosh_ssh`, in `bosh_sudoers` for password-less sudo)
//! who may log in with the operator's public key, starts sshd if it is not
//! running, and answers the VM's address and host key; `cleanup` removes
//! the users a `^bosh_...` prefix names.
//!
//! It changes the machine's accounts, so it runs only on an agent that
//! owns its machine: one whose root is `/` (a container or real VM). A
//! process VM's agent runs on the host with a VM directory as its root,
//! and there the method refuses rather than add users to the host.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use bosh_api::agent::{Settings, SshParams, SshResult, cleanup_prefix, is_ssh_user};

use crate::error::{Error, Result};
use crate::exec::Exec;

/// Where the users' homes are made, as BOSH's agent does.
pub const HOME_BASE: &str = "/var/vcap/bosh_ssh";

/// The groups a user is added to when the machine has them: BOSH's
/// `vcap`, `admin` and `bosh_sudoers`, and `bosh_sshers`.
pub const GROUPS: &[&str] = &["vcap", "admin", "bosh_sudoers", "bosh_sshers"];

/// Host public keys, the preferred first (BOSH answers the RSA one; any
/// type the client's `known_hosts` holds works).
const HOST_KEYS: &[&str] = &[
    "/etc/ssh/ssh_host_ed25519_key.pub",
    "/etc/ssh/ssh_host_ecdsa_key.pub",
    "/etc/ssh/ssh_host_rsa_key.pub",
];

/// sshd's pidfile, and the privilege separation directory it needs.
const SSHD_PID: &str = "/run/sshd.pid";
const SSHD_RUN_DIR: &str = "/run/sshd";

/// The environment the account tools run with.
fn env() -> Vec<(String, String)> {
    vec![("PATH".into(), "/usr/sbin:/usr/bin:/sbin:/bin".into())]
}

fn refused(command: &str, message: impl Into<String>) -> Error {
    Error::Ssh { command: command.to_string(), message: message.into() }
}

/// Runs `ssh <command> <params>`.
pub async fn ssh(settings: &Settings, command: &str, params: &SshParams) -> Result<SshResult> {
    check_params(command, params)?;
    check_own_root(command, settings.shares_host)?;
    match command {
        "setup" => setup(settings, params).await,
        _ => cleanup(params).await,
    }
}

/// Refuses anything but a well-formed setup or cleanup, before anything
/// is touched.
pub fn check_params(command: &str, p: &SshParams) -> Result<()> {
    match command {
        "setup" => {
            if !is_ssh_user(&p.user) {
                return Err(refused(
                    command,
                    format!(
                        "user {:?} is not bosh_ followed by 1-27 of [a-z0-9_] (only such users are made)",
                        p.user
                    ),
                ));
            }
            let key = p.public_key.trim();
            if key.is_empty() || key.contains('\n') || key.split_whitespace().count() < 2 {
                return Err(refused(command, "public_key is not one OpenSSH public key line"));
            }
            Ok(())
        }
        "cleanup" => match cleanup_prefix(&p.user_regex) {
            Some(_) => Ok(()),
            None => Err(refused(
                command,
                format!("user_regex {:?} is not ^bosh_ followed by [a-z0-9_]", p.user_regex),
            )),
        },
        other => Err(Error::Arguments {
            method: "ssh",
            message: format!("unknown command {other:?} (setup or cleanup)"),
        }),
    }
}

/// Refuses on a VM that shares the host's root filesystem: a user made
/// there would be a user of the host.
pub fn check_own_root(command: &str, shares_host: bool) -> Result<()> {
    if !shares_host {
        return Ok(());
    }
    Err(refused(
        command,
        "this VM shares the host's root filesystem and accounts (a process VM): ssh users are only made on VMs with their own root filesystem (container VMs)",
    ))
}

async fn setup(settings: &Settings, p: &SshParams) -> Result<SshResult> {
    let user = p.user.as_str();
    if !user_exists(user)? {
        let groups = existing_groups(GROUPS)?;
        let mut args = vec![
            "--create-home".to_string(),
            "--base-dir".into(),
            HOME_BASE.into(),
            "--shell".into(),
            "/bin/bash".into(),
            // Not locked (sshd refuses locked accounts without PAM), and
            // no password works either.
            "--password".into(),
            "*".into(),
        ];
        if !groups.is_empty() {
            args.extend(["--groups".into(), groups.join(",")]);
        }
        args.push(user.to_string());
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(HOME_BASE)
            .map_err(Error::io("create", HOME_BASE))?;
        run("setup", "useradd", &args).await?;
    }
    let account = nix::unistd::User::from_name(user)
        .ok()
        .flatten()
        .ok_or_else(|| refused("setup", format!("user {user} was not created")))?;
    write_authorized_keys(&account.dir, &p.public_key, account.uid.as_raw(), account.gid.as_raw())?;
    ensure_sshd().await?;
    Ok(SshResult {
        command: "setup".into(),
        status: "success".into(),
        ip: default_ip(settings),
        host_public_key: host_public_key(HOST_KEYS)?,
    })
}

async fn cleanup(p: &SshParams) -> Result<SshResult> {
    let prefix = cleanup_prefix(&p.user_regex).expect("checked");
    let passwd = fs::read_to_string("/etc/passwd").map_err(Error::io("read", "/etc/passwd"))?;
    for user in users_with_prefix(&passwd, prefix) {
        // A logged-in user's processes would keep userdel from removing it.
        let _ = Exec::new("/usr/bin/pkill", &env()).args(["-KILL", "-u", &user]).run().await;
        run("cleanup", "userdel", &["--remove".to_string(), user]).await?;
    }
    Ok(SshResult { command: "cleanup".into(), status: "success".into(), ..Default::default() })
}

/// Runs an account tool; a non-zero exit is an error with its output.
async fn run(command: &str, program: &str, args: &[String]) -> Result<()> {
    let out = Exec::new(format!("/usr/sbin/{program}"), &env()).args(args).run().await?;
    if out.code != 0 {
        return Err(refused(
            command,
            format!("{program} exited with code {}: {}", out.code, out.tail()),
        ));
    }
    Ok(())
}

fn user_exists(user: &str) -> Result<bool> {
    let passwd = fs::read_to_string("/etc/passwd").map_err(Error::io("read", "/etc/passwd"))?;
    Ok(passwd.lines().any(|l| l.split(':').next() == Some(user)))
}

/// Those of `wanted` that `/etc/group` has.
fn existing_groups(wanted: &[&str]) -> Result<Vec<String>> {
    let group = fs::read_to_string("/etc/group").map_err(Error::io("read", "/etc/group"))?;
    Ok(present(&group, wanted))
}

/// Those of `wanted` named in a `group`/`passwd`-format file.
pub fn present(file: &str, wanted: &[&str]) -> Vec<String> {
    let names: Vec<&str> = file.lines().filter_map(|l| l.split(':').next()).collect();
    wanted.iter().filter(|w| names.contains(w)).map(|w| w.to_string()).collect()
}

/// The users of a `passwd`-format file whose names start with `prefix`.
pub fn users_with_prefix(passwd: &str, prefix: &str) -> Vec<String> {
    passwd
        .lines()
        .filter_map(|l| l.split(':').next())
        .filter(|u| u.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

/// `<home>/.ssh/authorized_keys` holding `key` alone, owned by the user,
/// as sshd's `StrictModes` wants it (0700 directory, 0600 file).
pub fn write_authorized_keys(home: &Path, key: &str, uid: u32, gid: u32) -> Result<PathBuf> {
    let dir = home.join(".ssh");
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(Error::io("create", &dir))?;
    let file = dir.join("authorized_keys");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&file)
        .map_err(Error::io("write", &file))?;
    std::io::Write::write_all(&mut f, format!("{}\n", key.trim()).as_bytes())
        .map_err(Error::io("write", &file))?;
    for p in [&dir, &file] {
        std::os::unix::fs::chown(p, Some(uid), Some(gid)).map_err(Error::io("chown", p))?;
    }
    Ok(file)
}

/// Host keys when the VM has none (the image ships none), the privilege
/// separation directory, and sshd itself unless its pidfile names a live
/// process. sshd listens before it detaches, so it accepts connections
/// once this returns.
async fn ensure_sshd() -> Result<()> {
    if HOST_KEYS.iter().all(|k| !Path::new(k).exists()) {
        let out = Exec::new("/usr/bin/ssh-keygen", &env()).args(["-A"]).run().await?;
        if out.code != 0 {
            return Err(refused("setup", format!("ssh-keygen -A failed: {}", out.tail())));
        }
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(SSHD_RUN_DIR)
        .map_err(Error::io("create", SSHD_RUN_DIR))?;
    if sshd_running() {
        return Ok(());
    }
    // Without PAM: a container may lack what pam_loginuid needs, and keys
    // are the only way in.
    let out = Exec::new("/usr/sbin/sshd", &env())
        .args(["-o", "UsePAM=no", "-o", "PasswordAuthentication=no", "-o", "PermitRootLogin=no"])
        .run()
        .await?;
    if out.code != 0 {
        return Err(refused("setup", format!("sshd did not start: {}", out.tail())));
    }
    Ok(())
}

fn sshd_running() -> bool {
    let Ok(text) = fs::read_to_string(SSHD_PID) else { return false };
    let Ok(pid) = text.trim().parse::<i32>() else { return false };
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

/// `<type> <base64>` of the first of `paths` that exists (the comment,
/// `root@host`, is dropped).
pub fn host_public_key(paths: &[&str]) -> Result<String> {
    for p in paths {
        if let Ok(text) = fs::read_to_string(p) {
            let fields: Vec<&str> = text.split_whitespace().take(2).collect();
            if fields.len() == 2 {
                return Ok(fields.join(" "));
            }
        }
    }
    Err(refused("setup", format!("no host public key in {}", paths.join(", "))))
}

/// The address of the network that provides the default gateway, else the
/// first network's (BOSH's `DefaultIP`).
pub fn default_ip(settings: &Settings) -> String {
    let nets = || settings.networks.values().filter(|n| !n.ip.is_empty());
    nets()
        .find(|n| n.default.iter().any(|d| d == "gateway"))
        .or_else(|| nets().next())
        .map(|n| n.ip.clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use bosh_api::agent::NetworkSettings;

    use super::*;

    fn setup_params(user: &str, key: &str) -> SshParams {
        SshParams { user: user.into(), public_key: key.into(), ..Default::default() }
    }

    /// Setup takes a bosh_ user and one key line; cleanup a ^bosh_ prefix; anything else is refused.
    #[test]
    fn params_are_checked_before_anything_is_touched() {
        let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA boshctl";
        check_params("setup", &setup_params("bosh_1f3a", key)).unwrap();
        for (user, key) in [
            ("root", key),
            ("vcap", key),
            ("bosh_1f3a", ""),
            ("bosh_1f3a", "AAAA"),
            ("bosh_1f3a", "ssh-ed25519 A\nssh-rsa B"),
        ] {
            let e = check_params("setup", &setup_params(user, key)).unwrap_err().chain();
            assert!(e.starts_with("ssh setup: "), "{e}");
        }
        let clean = |r: &str| SshParams { user_regex: r.into(), ..Default::default() };
        check_params("cleanup", &clean("^bosh_1f3a")).unwrap();
        let e = check_params("cleanup", &clean("^.*")).unwrap_err().chain();
        assert!(e.contains("user_regex"), "{e}");
        let e = check_params("shell", &SshParams::default()).unwrap_err().chain();
        assert!(e.contains("unknown command \"shell\""), "{e}");
    }

    /// An agent of a VM that shares the host's root refuses, saying why.
    #[tokio::test]
    async fn an_agent_sharing_the_host_root_refuses_to_make_users() {
        check_own_root("setup", false).unwrap();
        let settings = Settings { shares_host: true, ..Default::default() };
        let p = setup_params("bosh_1f3a", "ssh-ed25519 AAAA");
        let e = ssh(&settings, "setup", &p).await.unwrap_err().chain();
        assert!(e.contains("shares the host's root filesystem"), "{e}");
        let p = SshParams { user_regex: "^bosh_".into(), ..Default::default() };
        let e = ssh(&settings, "cleanup", &p).await.unwrap_err().chain();
        assert!(e.contains("shares the host's root filesystem"), "{e}");
    }

    /// Groups are the wanted ones the file has; cleanup picks users by prefix only.
    #[test]
    fn groups_and_users_are_read_from_the_account_files() {
        let group = "root:x:0:\nvcap:x:1000:\nbosh_sudoers:x:1001:\n";
        assert_eq!(present(group, GROUPS), ["vcap", "bosh_sudoers"]);
        let passwd = "root:x:0:0::/root:/bin/bash\nbosh_aa:x:1002:1002::/var/vcap/bosh_ssh/bosh_aa:/bin/bash\nbosh_ab:x:1003:1003::/h:/bin/bash\nvcap:x:1000:1000::/home/vcap:/bin/bash\n";
        assert_eq!(users_with_prefix(passwd, "bosh_aa"), ["bosh_aa"]);
        assert_eq!(users_with_prefix(passwd, "bosh_"), ["bosh_aa", "bosh_ab"]);
    }

    /// authorized_keys holds the one key, 0600 in a 0700 .ssh, owned as asked.
    #[test]
    fn authorized_keys_are_written_private_to_the_user() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let home = tempfile::tempdir().unwrap();
        let (uid, gid) = (nix::unistd::getuid().as_raw(), nix::unistd::getgid().as_raw());
        let f = write_authorized_keys(home.path(), " ssh-ed25519 AAAA c \n", uid, gid).unwrap();
        assert_eq!(fs::read_to_string(&f).unwrap(), "ssh-ed25519 AAAA c\n");
        let m = fs::metadata(&f).unwrap();
        assert_eq!((m.permissions().mode() & 0o777, m.uid()), (0o600, uid));
        let d = fs::metadata(home.path().join(".ssh")).unwrap();
        assert_eq!(d.permissions().mode() & 0o777, 0o700);
    }

    /// The host key is answered without its comment; the gateway network's address is the default.
    #[test]
    fn host_key_and_default_ip_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let k = dir.path().join("k.pub");
        fs::write(&k, "ssh-ed25519 AAAAkey root@vm\n").unwrap();
        let missing = dir.path().join("none.pub");
        let paths = [missing.to_str().unwrap(), k.to_str().unwrap()];
        assert_eq!(host_public_key(&paths).unwrap(), "ssh-ed25519 AAAAkey");
        assert!(host_public_key(&paths[..1]).is_err());
        let mut s = Settings::default();
        let net = |ip: &str, default: &[&str]| NetworkSettings {
            ip: ip.into(),
            default: default.iter().map(|d| d.to_string()).collect(),
            ..Default::default()
        };
        s.networks.insert("a".into(), net("10.0.0.5", &[]));
        assert_eq!(default_ip(&s), "10.0.0.5");
        s.networks.insert("b".into(), net("10.1.0.5", &["dns", "gateway"]));
        assert_eq!(default_ip(&s), "10.1.0.5");
    }
}
