//! A local VM as a runc container: an OCI bundle whose root filesystem is
//! an overlay of the stemcell's unpacked rootfs (shared, read-only) and the
//! VM's own upper directory, run with its own PID, mount, UTS, IPC and
//! network namespaces.
//!
//! Layout of a VM directory (`vms/<cid>/`):
//!
//! - `upper/`, `work/`: the overlay's writable layer: everything the VM
//!   changes (installed jobs, `/etc/issue`, new users) lands here and
//!   nowhere else.
//! - `rootfs/`: the overlay mount, the container's `/`.
//! - `disks/`: a shared mount point, bound into the container at
//!   [`DISKS_IN_VM`] as a slave: a persistent disk bind-mounted under it
//!   on the host appears inside the running container, which is how a disk
//!   is attached to a VM that is already running.
//! - `config.json`: the OCI runtime spec; `console.log`: the VM's console
//!   (the init's and agent's output).
//!
//! Containers live in a runc state directory of this CPI's own (`--root`),
//! so two environments never see each other's containers, and they are not
//! children of boshd: `runc run --detach` leaves the container's init
//! parented to the host's init, so VMs outlive a director restart as real
//! VMs do.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::mount::{MntFlags, MsFlags};

/// Where a persistent disk attached to the VM is visible inside it (the
/// agent's `mount_disk` then makes it `/var/vcap/store`).
pub const DISKS_IN_VM: &str = "/var/vcap/bosh/disks";

/// The settings file inside the VM (the registry role: the agent reads its
/// bootstrap settings from the VM's own disk, as on a real stemcell).
pub const SETTINGS_IN_VM: &str = "var/vcap/bosh/settings.json";

/// The VM's init: the agent, restarted a second after it exits (as runit
/// does on a stemcell), so an agent that crashes comes back on the same VM
/// with its jobs still running; as pid 1 the shell also reaps orphans.
const INIT: &str = "while :; do /var/vcap/bosh/bin/bosh-agent --settings /var/vcap/bosh/settings.json; sleep 1; done";

/// A failed container operation, naming the step and the command.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// A file or mount operation failed.
    #[error("{step}: {path}: {source}")]
    Io {
        /// What was being done.
        step: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// runc failed.
    #[error("runc {args}: {message}")]
    Runc {
        /// Its arguments.
        args: String,
        /// Its stderr, or why it could not start.
        message: String,
    },
}

fn io(step: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ContainerError + use<> {
    let path = path.to_path_buf();
    move |source| ContainerError::Io { step, path, source }
}

fn errno(step: &'static str, path: &Path) -> impl FnOnce(nix::Error) -> ContainerError + use<> {
    let path = path.to_path_buf();
    move |e| ContainerError::Io { step, path, source: std::io::Error::from(e) }
}

/// What a container is made from.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The container id (the VM cid).
    pub id: String,
    /// The hostname (the agent id, as BOSH names VMs).
    pub hostname: String,
    /// The stemcell's unpacked rootfs: the overlay's lower layer.
    pub lower: PathBuf,
    /// The VM's network namespace (`/var/run/netns/<name>`), or none for a
    /// VM with no network of its own.
    pub netns: Option<PathBuf>,
    /// A memory limit, from the `ram` cloud property (MiB).
    pub memory_mb: Option<u64>,
    /// A CPU share, from the `cpu` cloud property (cores).
    pub cpus: Option<f64>,
    /// The agent's log filter (`RUST_LOG` inside the VM), from the CPI's
    /// `BOSH_AGENT_LOG`: a container does not inherit boshd's environment.
    pub agent_log: Option<String>,
}

/// A container's state as runc reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Running, with its init's host pid.
    Running(i32),
    /// Created or stopped: exists but runs nothing.
    Stopped,
    /// Unknown to runc.
    Missing,
}

/// The runc of one CPI: its state directory.
#[derive(Debug, Clone)]
pub struct Runc {
    root: PathBuf,
}

impl Runc {
    /// The runc whose containers are recorded under `state_dir`.
    pub fn new(state_dir: &Path) -> Runc {
        Runc { root: state_dir.to_path_buf() }
    }

    fn command(&self) -> Command {
        let mut c = Command::new("runc");
        c.arg("--root").arg(&self.root);
        c
    }

    fn run(&self, args: &[&str], stdio: Option<&Path>) -> Result<String, ContainerError> {
        let mut c = self.command();
        c.args(args).stdin(Stdio::null());
        let shown = args.join(" ");
        let out = match stdio {
            // Detached with pass-through stdio: the container's init keeps
            // the log file as its stdout and stderr, and runc's own stdout
            // (nothing) and stderr go to our pipe... which the init would
            // also hold. So runc's stderr goes to the log as well, and an
            // error is read back from there.
            Some(log) => {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(log)
                    .map_err(io("opening the console log", log))?;
                let before = f.metadata().map(|m| m.len()).unwrap_or(0);
                let status = c
                    .stdout(f.try_clone().map_err(io("opening the console log", log))?)
                    .stderr(f)
                    .status()
                    .map_err(|e| ContainerError::Runc {
                        args: shown.clone(),
                        message: e.to_string(),
                    })?;
                if status.success() {
                    return Ok(String::new());
                }
                let text = std::fs::read(log).unwrap_or_default();
                let tail = String::from_utf8_lossy(&text[(before as usize).min(text.len())..]);
                return Err(ContainerError::Runc {
                    args: shown,
                    message: format!("{status}: {}", tail.trim()),
                });
            }
            None => c.output().map_err(|e| ContainerError::Runc {
                args: shown.clone(),
                message: e.to_string(),
            })?,
        };
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(ContainerError::Runc {
                args: shown,
                message: format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()),
            })
        }
    }

    /// The container's state.
    pub fn state(&self, id: &str) -> Result<State, ContainerError> {
        match self.run(&["state", id], None) {
            Ok(json) => {
                let v: serde_json::Value = serde_json::from_str(&json).map_err(|e| {
                    ContainerError::Runc { args: format!("state {id}"), message: e.to_string() }
                })?;
                let pid = v["pid"].as_i64().unwrap_or(0) as i32;
                Ok(match v["status"].as_str() {
                    Some("running") if pid > 0 && pid_alive(pid) => State::Running(pid),
                    _ => State::Stopped,
                })
            }
            Err(ContainerError::Runc { message, .. }) if message.contains("does not exist") => {
                Ok(State::Missing)
            }
            Err(e) => Err(e),
        }
    }

    /// Makes the bundle in `dir` for `spec` (overlay mounted, disks mount
    /// point shared, `config.json` written) without starting it. Repeating
    /// it is harmless: a mount already there is kept.
    pub fn prepare(&self, dir: &Path, spec: &Spec) -> Result<PathBuf, ContainerError> {
        for d in ["upper", "work", "rootfs", "disks"] {
            let p = dir.join(d);
            std::fs::create_dir_all(&p).map_err(io("creating the VM directory", &p))?;
        }
        let rootfs = dir.join("rootfs");
        if !is_mount_point(&rootfs) {
            let opts = format!(
                "lowerdir={},upperdir={},workdir={}",
                spec.lower.display(),
                dir.join("upper").display(),
                dir.join("work").display()
            );
            nix::mount::mount(
                Some("overlay"),
                &rootfs,
                Some("overlay"),
                MsFlags::empty(),
                Some(opts.as_str()),
            )
            .map_err(errno("mounting the VM's overlay root", &rootfs))?;
        }
        let disks = dir.join("disks");
        if !is_mount_point(&disks) {
            nix::mount::mount(Some(&disks), &disks, None::<&str>, MsFlags::MS_BIND, None::<&str>)
                .map_err(errno("binding the VM's disks mount point", &disks))?;
            nix::mount::mount(None::<&str>, &disks, None::<&str>, MsFlags::MS_SHARED, None::<&str>)
                .map_err(errno("sharing the VM's disks mount point", &disks))?;
        }
        let config = config(spec, &rootfs, &disks);
        let path = dir.join("config.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&config).expect("json"))
            .map_err(io("writing the OCI config", &path))?;
        Ok(rootfs)
    }

    /// Starts the prepared bundle in `dir`; returns the init's host pid.
    /// A stopped container of the same id (a rebooted or crashed VM) is
    /// removed first.
    pub fn start(&self, dir: &Path, id: &str) -> Result<i32, ContainerError> {
        if self.state(id)? != State::Missing {
            self.kill(id)?;
        }
        let bundle = dir.to_string_lossy().into_owned();
        self.run(&["run", "--detach", "--bundle", &bundle, id], Some(&dir.join("console.log")))?;
        match self.state(id)? {
            State::Running(pid) => Ok(pid),
            other => Err(ContainerError::Runc {
                args: format!("run {id}"),
                message: format!(
                    "the container is {other:?} right after starting; see {}",
                    dir.join("console.log").display()
                ),
            }),
        }
    }

    /// Kills the container and everything in it and forgets it (the
    /// bundle and its mounts stay). Absent is fine.
    pub fn kill(&self, id: &str) -> Result<(), ContainerError> {
        if self.state(id)? == State::Missing {
            return Ok(());
        }
        // `delete --force` SIGKILLs the init (the PID namespace takes every
        // other process with it) and waits for it before deleting.
        match self.run(&["delete", "--force", id], None) {
            Ok(_) => Ok(()),
            Err(_) if self.state(id)? == State::Missing => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Kills the container, unmounts its disks, its disks mount point and
    /// its root, and removes `dir`. Absent parts are fine.
    pub fn destroy(&self, dir: &Path, id: &str) -> Result<(), ContainerError> {
        self.kill(id)?;
        let disks = dir.join("disks");
        if let Ok(rd) = std::fs::read_dir(&disks) {
            for e in rd.flatten() {
                unmount(&e.path())?;
            }
        }
        unmount(&disks)?;
        unmount(&dir.join("rootfs"))?;
        match std::fs::remove_dir_all(dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("removing the VM directory", dir)(e)),
        }
    }

    /// The containers runc knows in this state directory.
    pub fn list(&self) -> Result<Vec<String>, ContainerError> {
        if !self.root.is_dir() {
            return Ok(Vec::new());
        }
        let json = self.run(&["list", "--format", "json"], None)?;
        let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap_or_default();
        Ok(v.as_array()
            .map(|a| a.iter().filter_map(|c| c["id"].as_str().map(String::from)).collect())
            .unwrap_or_default())
    }
}

/// Makes persistent disk directory `disk` visible in the VM of `dir` at
/// `DISKS_IN_VM/<cid>` (a bind mount under the shared disks mount point,
/// which propagates into the running container). Repeating it is harmless.
pub fn attach_disk(dir: &Path, cid: &str, disk: &Path) -> Result<(), ContainerError> {
    let target = dir.join("disks").join(cid);
    std::fs::create_dir_all(&target).map_err(io("creating the disk's mount point", &target))?;
    if is_mount_point(&target) {
        return Ok(());
    }
    nix::mount::mount(Some(disk), &target, None::<&str>, MsFlags::MS_BIND, None::<&str>)
        .map_err(errno("attaching the disk", &target))
}

/// Reverses [`attach_disk`]. Absent is fine.
pub fn detach_disk(dir: &Path, cid: &str) -> Result<(), ContainerError> {
    let target = dir.join("disks").join(cid);
    unmount(&target)?;
    let _ = std::fs::remove_dir(&target);
    Ok(())
}

/// Unmounts `path` if it is a mount point (lazily: a process still inside
/// cannot keep it from going).
fn unmount(path: &Path) -> Result<(), ContainerError> {
    while is_mount_point(path) {
        nix::mount::umount2(path, MntFlags::MNT_DETACH).map_err(errno("unmounting", path))?;
    }
    Ok(())
}

/// Whether `path` is a mount point in this mount namespace.
pub fn is_mount_point(path: &Path) -> bool {
    let Ok(path) = std::path::absolute(path) else { return false };
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else { return false };
    text.lines().any(|l| l.split(' ').nth(4).is_some_and(|m| Path::new(&unescape(m)) == path))
}

/// mountinfo escapes spaces, tabs, newlines and backslashes as octal.
fn unescape(s: &str) -> String {
    s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
}

fn pid_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').and_then(|i| s[i + 2..].chars().next()))
        .is_some_and(|state| state != 'Z' && state != 'X')
}

/// The capabilities a VM's root has: Docker's default set, enough for
/// package scripts and jobs that add users, chown files and bind low
/// ports, without the ones that would reach the host (no SYS_ADMIN, no
/// SYS_MODULE, no NET_ADMIN).
const CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// The OCI runtime spec of a VM.
fn config(spec: &Spec, rootfs: &Path, disks: &Path) -> serde_json::Value {
    let mut namespaces = vec![
        serde_json::json!({"type": "pid"}),
        serde_json::json!({"type": "ipc"}),
        serde_json::json!({"type": "uts"}),
        serde_json::json!({"type": "mount"}),
    ];
    namespaces.push(match &spec.netns {
        Some(p) => serde_json::json!({"type": "network", "path": p}),
        None => serde_json::json!({"type": "network"}),
    });
    let mut resources = serde_json::json!({
        "devices": [{"allow": false, "access": "rwm"}],
    });
    if let Some(mb) = spec.memory_mb {
        resources["memory"] = serde_json::json!({"limit": mb * 1024 * 1024});
    }
    if let Some(cpus) = spec.cpus.filter(|c| *c > 0.0) {
        let period: u64 = 100_000;
        resources["cpu"] = serde_json::json!({"shares": (cpus * 1024.0) as u64, "quota": (cpus * period as f64) as i64, "period": period});
    }
    let mut env = vec![
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        "LANG=C.UTF-8".to_string(),
        "HOME=/root".to_string(),
    ];
    env.extend(spec.agent_log.as_ref().map(|f| format!("RUST_LOG={f}")));
    serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": ["/bin/sh", "-c", INIT],
            "env": env,
            "cwd": "/",
            "capabilities": {
                "bounding": CAPABILITIES,
                "effective": CAPABILITIES,
                "permitted": CAPABILITIES,
            },
            "noNewPrivileges": false,
        },
        "root": {"path": rootfs, "readonly": false},
        "hostname": spec.hostname,
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/run", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "nodev", "mode=755"]},
            {"destination": DISKS_IN_VM, "type": "bind", "source": disks,
             "options": ["rbind", "rslave"]},
        ],
        "linux": {
            "namespaces": namespaces,
            "resources": resources,
            "cgroupsPath": format!("/bosh-rs/{}", spec.id),
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
                "/proc/scsi",
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
            ],
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spec carries the VM's identity, limits and network namespace,
    /// and the disks mount point as a slave bind.
    #[test]
    fn config_maps_the_vm_spec() {
        let spec = Spec {
            id: "vm-1".into(),
            hostname: "agent-1".into(),
            lower: "/l".into(),
            netns: Some("/var/run/netns/bx-vm-1".into()),
            memory_mb: Some(512),
            cpus: Some(0.5),
            agent_log: Some("debug".into()),
        };
        let c = config(&spec, Path::new("/vms/vm-1/rootfs"), Path::new("/vms/vm-1/disks"));
        assert_eq!(c["hostname"], "agent-1");
        let env = c["process"]["env"].as_array().unwrap();
        assert!(env.contains(&"RUST_LOG=debug".into()), "{env:?}");
        assert_eq!(c["root"]["path"], "/vms/vm-1/rootfs");
        assert_eq!(c["linux"]["resources"]["memory"]["limit"], 512u64 * 1024 * 1024);
        assert_eq!(c["linux"]["resources"]["cpu"]["quota"], 50_000);
        let ns = c["linux"]["namespaces"].as_array().unwrap();
        assert!(ns.iter().any(|n| n["type"] == "network" && n["path"] == "/var/run/netns/bx-vm-1"));
        for t in ["pid", "ipc", "uts", "mount"] {
            assert!(ns.iter().any(|n| n["type"] == t), "{t}");
        }
        let disks =
            c["mounts"].as_array().unwrap().iter().find(|m| m["destination"] == DISKS_IN_VM);
        assert_eq!(disks.unwrap()["options"], serde_json::json!(["rbind", "rslave"]));
        let no_limits = Spec { memory_mb: None, cpus: None, ..spec };
        let c = config(&no_limits, Path::new("/r"), Path::new("/d"));
        assert!(c["linux"]["resources"].get("memory").is_none());
    }

    /// mountinfo's octal escapes are undone.
    #[test]
    fn mountinfo_paths_are_unescaped() {
        assert_eq!(unescape("/a\\040b"), "/a b");
    }
}
