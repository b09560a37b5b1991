//! Starting and stopping a local VM's process tree.
//!
//! The agent starts in a new session and, where the kernel allows, as pid 1
//! of its own PID namespace (`unshare --pid --fork --kill-child
//! --mount-proc`): killing the `unshare` process then kills the namespace's
//! init, and the kernel kills every process inside, including job processes
//! that outlived a killed agent. A VM that is deleted therefore leaves
//! nothing behind to hold its address:port. Without namespaces (no
//! privilege), the session's process group is killed instead.
//!
//! Inside, the VM's init is a shell loop that runs the agent and starts it
//! again a second after it exits, as runit does on a stemcell: an agent
//! that crashes (or is `kill -9`ed) comes back on the same VM, its job
//! processes still running (the init reaps the orphans), rather than
//! taking the whole VM with it (FAULT-MATRIX C5).

use std::path::Path;
use std::process::Stdio;
use std::sync::OnceLock;

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

/// Whether `unshare --pid` works here (checked once).
fn pid_namespaces() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        std::process::Command::new("unshare")
            .args(["--pid", "--fork", "--kill-child", "--mount-proc", "true"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    })
}

/// The VM's init: runs the agent (`"$@"`) and restarts it after it exits.
const INIT: &str = r#"while :; do "$@"; sleep 1; done"#;

/// Starts `agent --settings settings` as a VM, under an init that restarts
/// it, logging to `log`. A task reaps the process when it exits, so a dead
/// VM never lingers as a zombie.
pub fn spawn_vm(agent: &Path, settings: &Path, log: &Path) -> std::io::Result<ProcId> {
    let out = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    let mut cmd = if pid_namespaces() {
        let mut c = tokio::process::Command::new("unshare");
        c.args(["--pid", "--fork", "--kill-child", "--mount-proc", "--", "/bin/sh"]);
        c
    } else {
        tokio::process::Command::new("/bin/sh")
    };
    cmd.args(["-c", INIT, "vm-init"])
        .arg(agent)
        .arg("--settings")
        .arg(settings)
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
