//! Starting and stopping a process VM: the agent and its jobs as a process
//! tree on the host, with its own PID and mount namespaces and nothing else
//! of its own. The local CPI's VMs are containers; process VMs are what the
//! scale tests use where a thousand containers on one machine would measure
//! the machine rather than the director.
//!
//! The VM is `unshare --pid --fork --kill-child --mount-proc`: killing the
//! `unshare` process kills the namespace's init, and the kernel kills every
//! process inside, including job processes that outlived a killed agent. A
//! VM that is deleted therefore leaves nothing behind to hold its
//! address:port. In its private mount namespace the VM directory's
//! `var/vcap` is bound onto `/var/vcap`, so the agent and every job see
//! BOSH's plain paths, as on any stemcell, and two VMs never share a file.
//!
//! Inside, the VM's init is a shell loop that runs the agent and starts it
//! again a second after it exits, as runit does on a stemcell: an agent
//! that crashes (or is `kill -9`ed) comes back on the same VM, its job
//! processes still running (the init reaps the orphans), rather than
//! taking the whole VM with it (FAULT-MATRIX C5).

use std::path::Path;
use std::process::Stdio;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

/// A process identified robustly: pid plus kernel start time, so a reused
/// pid is never mistaken for the VM's process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProcId {
    /// Host pid of the VM's outermost process.
    pub pid: i32,
    /// `/proc/<pid>/stat` field 22 (start time in clock ticks since boot).
    pub start_time: u64,
}

/// Reads a process's state letter and start time from `/proc`.
fn stat(pid: i32) -> Option<(char, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces.
    let rest = &s[s.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let start_time = fields.get(19)?.parse().ok()?;
    Some((state, start_time))
}

impl ProcId {
    /// Identifies a running pid.
    pub fn of(pid: i32) -> Option<ProcId> {
        stat(pid).map(|(_, start_time)| ProcId { pid, start_time })
    }

    /// Whether the process still runs (not gone, not a zombie, not reused).
    pub fn is_alive(&self) -> bool {
        matches!(stat(self.pid), Some((state, st)) if st == self.start_time && state != 'Z' && state != 'X')
    }

    /// Kills the process and its whole tree (namespace or process group).
    pub fn kill_tree(&self) {
        if !self.is_alive() {
            return;
        }
        let pid = Pid::from_raw(self.pid);
        let _ = killpg(pid, Signal::SIGKILL);
        let _ = kill(pid, Signal::SIGKILL);
    }
}

/// Where every VM's own `/var/vcap` is bound in its mount namespace. The
/// host keeps an empty directory here as the mount point.
pub const VCAP: &str = "/var/vcap";

/// The VM's init: binds its `/var/vcap` (`$0`), then runs the agent (`"$@"`)
/// and restarts it after it exits.
const INIT: &str = r#"mount --bind "$0" /var/vcap || exit 111; while :; do "$@"; sleep 1; done"#;

/// Starts `agent --settings settings` as a VM whose `/var/vcap` is `vcap`,
/// under an init that restarts it, logging to `log`. A task reaps the
/// process when it exits, so a dead VM never lingers as a zombie. Needs
/// root (namespaces and a bind mount), as container VMs do.
pub fn spawn_vm(agent: &Path, vcap: &Path, settings: &Path, log: &Path) -> std::io::Result<ProcId> {
    std::fs::create_dir_all(VCAP)?;
    std::fs::create_dir_all(vcap)?;
    let out = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    let mut cmd = tokio::process::Command::new("unshare");
    cmd.args(["--pid", "--fork", "--kill-child", "--mount-proc", "--propagation", "private"])
        .args(["--", "/bin/sh", "-c", INIT])
        .arg(vcap)
        .arg(agent)
        .arg("--settings")
        .arg(settings)
        .envs(super::agent_log().map(|f| ("RUST_LOG", f)))
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .process_group(0)
        .kill_on_drop(false);
    let mut child = cmd.spawn()?;
    let pid = child.id().ok_or_else(|| std::io::Error::other("VM process exited at once"))? as i32;
    tokio::spawn(async move {
        let _ = child.wait().await;
    });
    ProcId::of(pid).ok_or_else(|| std::io::Error::other("VM process exited at once"))
}

/// The pid of the agent (not its init) of the VM whose settings file is
/// `settings`, if it runs: a process whose program is the agent binary and
/// whose arguments name that file. For tests that kill or pause an agent
/// alone, as a crash or a stall would.
pub fn agent_pid(settings: &Path) -> Option<i32> {
    let settings = settings.to_string_lossy();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        let mut args = cmdline.split(|b| *b == 0).map(String::from_utf8_lossy);
        let program = args.next()?;
        let is_agent = Path::new(program.as_ref())
            .file_name()
            .is_some_and(|n| n == bosh_api::local_stemcell::AGENT_BINARY);
        let ours = args.any(|a| a == settings);
        (is_agent && ours && ProcId::of(pid).is_some_and(|p| p.is_alive())).then_some(pid)
    })
}

/// Every host pid in the PID namespace whose init (as seen from the host)
/// is `init`, the init included.
pub fn in_pid_namespace_of(init: i32) -> Vec<i32> {
    let Ok(ns) = std::fs::read_link(format!("/proc/{init}/ns/pid")) else { return Vec::new() };
    host_pids()
        .filter(|pid| std::fs::read_link(format!("/proc/{pid}/ns/pid")).is_ok_and(|n| n == ns))
        .collect()
}

/// Every pid whose process group is `pgid`.
pub fn in_process_group(pgid: i32) -> Vec<i32> {
    host_pids()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|s| {
                let rest = &s[s.rfind(')')? + 2..];
                rest.split_whitespace().nth(2)?.parse::<i32>().ok()
            }) == Some(pgid)
        })
        .collect()
}

fn host_pids() -> impl Iterator<Item = i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
}

/// The pid of the agent running in the PID namespace whose init (as seen
/// from the host) is `init`: a process whose program is the agent binary
/// and whose `/proc/<pid>/ns/pid` is the init's. A container VM's agent
/// has the same command line as every other VM's, so only its namespace
/// tells it apart.
pub fn agent_in_pid_namespace_of(init: i32) -> Option<i32> {
    let ns = std::fs::read_link(format!("/proc/{init}/ns/pid")).ok()?;
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        if pid == init || std::fs::read_link(e.path().join("ns/pid")).ok()? != ns {
            return None;
        }
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        let program = cmdline.split(|b| *b == 0).next()?;
        let is_agent = Path::new(&*String::from_utf8_lossy(program))
            .file_name()
            .is_some_and(|n| n == bosh_api::local_stemcell::AGENT_BINARY);
        (is_agent && ProcId::of(pid).is_some_and(|p| p.is_alive())).then_some(pid)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Our own process is alive; a made-up start time is not the same process.
    #[test]
    fn proc_id_detects_pid_reuse() {
        let me = ProcId::of(std::process::id() as i32).unwrap();
        assert!(me.is_alive());
        let other = ProcId { start_time: me.start_time + 1, ..me };
        assert!(!other.is_alive());
    }
}
