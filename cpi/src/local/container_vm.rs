//! The local CPI's container VMs: what `create_vm`, `delete_vm`,
//! `reboot_vm` and the disk calls do for a VM booted from an operating
//! system image (see [`super::image`]). [`super::container`] runs the
//! container; [`super::network`] gives it its interfaces; this module puts
//! them together in the order a VM needs and undoes them in reverse.

use std::path::{Path, PathBuf};

use bosh_api::agent::Settings;

use super::container::{self, DISKS_IN_VM, Runc, SETTINGS_IN_VM, Spec};
use super::network::{self, NetEnv, Nic};
use super::{CpiError, CpiResult, CreateVm, io};

/// What a container VM's record keeps beyond the common fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ContainerVm {
    /// Its network namespace, when it has networks.
    #[serde(default)]
    pub netns: Option<String>,
    /// The gateway its loopback URLs were rewritten to.
    #[serde(default)]
    pub gateway: Option<String>,
}

/// The container VMs of one CPI data dir: a cheap handle (paths and
/// names) that the CPI's async methods move onto the blocking pool, since
/// every step here is a mount, a runc or an `ip` command: run on the
/// runtime's own threads they would stall the director's lease keepalives
/// while many VMs start at once.
#[derive(Debug, Clone)]
pub(super) struct Machines {
    root: PathBuf,
    pub(super) runc: Runc,
    pub(super) net: NetEnv,
}

/// Runs blocking `f` on the blocking pool.
pub(super) async fn blocking<T: Send + 'static>(
    method: &'static str,
    f: impl FnOnce() -> CpiResult<T> + Send + 'static,
) -> CpiResult<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| CpiError::permanent(method, e))?
}

impl Machines {
    /// The container VMs under CPI data dir `root`.
    pub(super) fn new(root: &Path) -> Machines {
        Machines {
            root: root.to_path_buf(),
            runc: Runc::new(&root.join("runc")),
            net: NetEnv::for_root(root),
        }
    }

    fn vm_dir(&self, cid: &str) -> PathBuf {
        self.root.join("vms").join(cid)
    }

    fn disk_dir(&self, cid: &str) -> PathBuf {
        self.root.join("disks").join(cid)
    }

    /// The unpacked rootfs a container stemcell points at, or none for an
    /// agent-only stemcell.
    pub(super) fn stemcell_rootfs(&self, stemcell_cid: &str) -> Option<PathBuf> {
        let link = self.root.join("stemcells").join(stemcell_cid).join("rootfs");
        std::fs::read_link(&link).ok().or_else(|| link.is_dir().then_some(link))
    }

    /// Creates and starts the container VM `cid` of `req` from `lower`.
    /// On failure everything made is undone before the error returns.
    pub(super) fn create(&self, cid: &str, req: &CreateVm, lower: &Path) -> CpiResult<ContainerVm> {
        const M: &str = "create_vm";
        let (memory_mb, cpus) = limits(&req.cloud_properties)?;
        let nics = nics(req)?;
        let made = (move || {
            let mut vm = ContainerVm::default();
            if !nics.is_empty() {
                for nic in &nics {
                    network::ensure_bridge(&self.net, nic)
                        .map_err(|e| CpiError::permanent(M, e))?;
                }
                vm.netns = Some(
                    network::create_vm_netns(&self.net, cid, &nics)
                        .map_err(|e| CpiError::permanent(M, e))?,
                );
                vm.gateway = nics.iter().find(|n| n.default_route).map(|n| n.gateway.to_string());
            }
            let spec = Spec {
                id: cid.to_string(),
                hostname: req.agent_id.clone(),
                lower: lower.to_path_buf(),
                netns: vm.netns.as_ref().map(|_| network::netns_path(&self.net, cid)),
                memory_mb,
                cpus,
                agent_log: super::agent_log(),
            };
            let dir = self.vm_dir(cid);
            let rootfs = self.runc.prepare(&dir, &spec).map_err(|e| CpiError::permanent(M, e))?;
            write_identity(&rootfs, &req.agent_id, &req.networks).map_err(io(M))?;
            self.write_settings(cid, &vm, req.settings.clone(), &[])?;
            self.runc.start(&dir, cid).map_err(|e| CpiError::permanent(M, e))?;
            Ok(vm)
        })();
        if made.is_err() {
            self.destroy(cid);
        }
        made
    }

    /// Kills the container VM `cid` and removes its mounts, network and
    /// directory; what is already gone is skipped.
    pub(super) fn destroy(&self, cid: &str) {
        if let Err(e) = self.runc.destroy(&self.vm_dir(cid), cid) {
            tracing::warn!(vm = %cid, error = %e, "could not remove the VM's container");
        }
        if let Err(e) = network::delete_vm_netns(&self.net, cid) {
            tracing::warn!(vm = %cid, error = %e, "could not remove the VM's network");
        }
    }

    /// Restarts the container VM `cid` on the same root filesystem, disks
    /// and network.
    pub(super) fn reboot(&self, cid: &str, lower: &Path) -> CpiResult<()> {
        const M: &str = "reboot_vm";
        let dir = self.vm_dir(cid);
        let config: serde_json::Value = std::fs::read(dir.join("config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| CpiError::permanent(M, format!("VM {cid} has no bundle")))?;
        self.runc.kill(cid).map_err(|e| CpiError::permanent(M, e))?;
        // The overlay may be gone (a host reboot): mount it again as it was.
        let spec = Spec {
            id: cid.to_string(),
            hostname: config["hostname"].as_str().unwrap_or(cid).to_string(),
            lower: lower.to_path_buf(),
            netns: config["linux"]["namespaces"]
                .as_array()
                .and_then(|ns| ns.iter().find(|n| n["type"] == "network"))
                .and_then(|n| n["path"].as_str())
                .map(PathBuf::from),
            memory_mb: config["linux"]["resources"]["memory"]["limit"]
                .as_u64()
                .map(|b| b / 1024 / 1024),
            cpus: config["linux"]["resources"]["cpu"]["quota"].as_f64().map(|q| q / 100_000.0),
            agent_log: super::agent_log(),
        };
        self.runc.prepare(&dir, &spec).map_err(|e| CpiError::permanent(M, e))?;
        self.runc.start(&dir, cid).map_err(|e| CpiError::permanent(M, e))?;
        Ok(())
    }

    /// Writes the settings of container VM `cid` into the VM, as the agent
    /// sees them: root `/`, disks under [`DISKS_IN_VM`], and the director's
    /// loopback addresses replaced by the VM's gateway (the host's address
    /// on the VM's bridge: the VM's own loopback is not the host's).
    pub(super) fn write_settings(
        &self,
        cid: &str,
        vm: &ContainerVm,
        mut settings: Settings,
        disks: &[String],
    ) -> CpiResult<()> {
        settings.vm_cid = cid.to_string();
        settings.disks.persistent =
            disks.iter().map(|d| (d.clone(), format!("{DISKS_IN_VM}/{d}"))).collect();
        if let Some(gw) = &vm.gateway {
            settings.mbus.url = via_gateway(&settings.mbus.url, gw);
            settings.blobstore.url = via_gateway(&settings.blobstore.url, gw);
            for m in &mut settings.blobstore.mirrors {
                *m = via_gateway(m, gw);
            }
        }
        let path = self.vm_dir(cid).join("rootfs").join(SETTINGS_IN_VM);
        let bytes = serde_json::to_vec_pretty(&settings).expect("settings serialize");
        bosh_api::secret_file::write(&path, &bytes).map_err(io("write settings"))
    }

    /// The settings of container VM `cid` as last written.
    pub(super) fn read_settings(&self, cid: &str) -> CpiResult<Settings> {
        let path = self.vm_dir(cid).join("rootfs").join(SETTINGS_IN_VM);
        let bytes = std::fs::read(&path).map_err(io("read settings"))?;
        serde_json::from_slice(&bytes).map_err(|e| CpiError::permanent("read settings", e))
    }

    /// Makes disk `disk_cid` visible inside the running container VM.
    pub(super) fn attach(&self, vm_cid: &str, disk_cid: &str) -> CpiResult<()> {
        container::attach_disk(&self.vm_dir(vm_cid), disk_cid, &self.disk_dir(disk_cid))
            .map_err(|e| CpiError::permanent("attach_disk", e))
    }

    /// Reverses [`Self::attach`].
    pub(super) fn detach(&self, vm_cid: &str, disk_cid: &str) -> CpiResult<()> {
        container::detach_disk(&self.vm_dir(vm_cid), disk_cid)
            .map_err(|e| CpiError::permanent("detach_disk", e))
    }

    /// The host pid of container VM `cid`'s init, while it runs.
    pub(super) fn init(&self, cid: &str) -> Option<i32> {
        match self.runc.state(cid) {
            Ok(container::State::Running(pid)) => Some(pid),
            _ => None,
        }
    }
}

/// Refuses a request a container VM cannot be made from (bad `ram` or
/// `cpu`, a network without a usable address), before anything is made.
pub(super) fn check(req: &CreateVm) -> CpiResult<()> {
    limits(&req.cloud_properties)?;
    nics(req).map(drop)
}

/// `url` with a loopback host replaced by `gateway`.
fn via_gateway(url: &str, gateway: &str) -> String {
    for lo in ["127.0.0.1", "localhost", "0.0.0.0"] {
        for scheme in ["nats://", "http://", "https://"] {
            if let Some(rest) = url.strip_prefix(&format!("{scheme}{lo}")) {
                return format!("{scheme}{gateway}{rest}");
            }
        }
    }
    url.to_string()
}

/// The VM's interfaces: one per network with an address (the director
/// allocates them), the default route on the network that carries the
/// `gateway` default (or the only one).
fn nics(req: &CreateVm) -> CpiResult<Vec<Nic>> {
    let with_ip: Vec<_> = req.networks.iter().filter(|(_, n)| !n.ip.is_empty()).collect();
    let default =
        with_ip.iter().position(|(_, n)| n.default.iter().any(|d| d == "gateway")).unwrap_or(0);
    with_ip
        .iter()
        .enumerate()
        .map(|(i, (name, n))| {
            Nic::from_vm_network(name, n, i == default)
                .map_err(|e| CpiError::permanent("create_vm", e))
        })
        .collect()
}

/// The container's memory (MiB) and CPU limits from the `ram` and `cpu`
/// cloud properties. Unknown keys are ignored, as an IaaS would; memory
/// beyond the host's is refused before anything is made.
fn limits(cp: &serde_json::Value) -> CpiResult<(Option<u64>, Option<f64>)> {
    const M: &str = "create_vm";
    let ram = match cp.get("ram") {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => Some(v.as_u64().filter(|r| *r > 0).ok_or_else(|| {
            CpiError::permanent(
                M,
                format!("cloud_properties.ram: expected a positive number of MB, got {v}"),
            )
        })?),
    };
    if let (Some(ram), Some(host)) = (ram, host_memory_mb())
        && ram > host
    {
        return Err(CpiError::permanent(
            M,
            format!("cloud_properties.ram: {ram} MB is more than this host's {host} MB"),
        ));
    }
    let cpu = match cp.get("cpu") {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => Some(v.as_f64().filter(|c| *c > 0.0).ok_or_else(|| {
            CpiError::permanent(
                M,
                format!("cloud_properties.cpu: expected a positive number, got {v}"),
            )
        })?),
    };
    Ok((ram, cpu))
}

/// The host's memory in MiB, from `/proc/meminfo`.
fn host_memory_mb() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb / 1024)
}

/// The VM's `/etc/hostname`, `/etc/hosts` and `/etc/resolv.conf` (from the
/// networks' `dns`), written into its root as an IaaS's metadata service
/// would have the stemcell do at boot.
fn write_identity(
    rootfs: &Path,
    hostname: &str,
    networks: &std::collections::BTreeMap<String, crate::VmNetwork>,
) -> std::io::Result<()> {
    std::fs::write(rootfs.join("etc/hostname"), format!("{hostname}\n"))?;
    let mut hosts = String::from("127.0.0.1 localhost\n::1 localhost\n");
    if let Some(ip) = networks.values().map(|n| n.ip.as_str()).find(|ip| !ip.is_empty()) {
        hosts.push_str(&format!("{ip} {hostname}\n"));
    } else {
        hosts.push_str(&format!("127.0.1.1 {hostname}\n"));
    }
    std::fs::write(rootfs.join("etc/hosts"), hosts)?;
    let mut dns: Vec<&str> = Vec::new();
    for n in networks.values() {
        for d in &n.dns {
            if !dns.contains(&d.as_str()) {
                dns.push(d);
            }
        }
    }
    let resolv: String = dns.iter().map(|d| format!("nameserver {d}\n")).collect();
    let path = rootfs.join("etc/resolv.conf");
    // debootstrap may leave resolv.conf a symlink to the host's resolver.
    let _ = std::fs::remove_file(&path);
    std::fs::write(path, resolv)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loopback URLs go through the gateway; others are left alone.
    #[test]
    fn loopback_urls_go_through_the_gateway() {
        assert_eq!(via_gateway("nats://127.0.0.1:4222", "10.244.0.1"), "nats://10.244.0.1:4222");
        assert_eq!(via_gateway("http://localhost:25250/b", "10.0.0.1"), "http://10.0.0.1:25250/b");
        assert_eq!(via_gateway("http://192.0.2.1:1", "10.0.0.1"), "http://192.0.2.1:1");
    }

    /// Memory beyond the host's is refused naming the field; unknown keys
    /// are ignored.
    #[test]
    fn limits_come_from_cloud_properties() {
        let ok = limits(&serde_json::json!({"ram": 256, "cpu": 2, "flavor": "x"})).unwrap();
        assert_eq!(ok, (Some(256), Some(2.0)));
        assert_eq!(limits(&serde_json::json!({})).unwrap(), (None, None));
        let e = limits(&serde_json::json!({"ram": 1u64 << 40})).unwrap_err().to_string();
        assert!(e.contains("cloud_properties.ram") && e.contains("more than this host's"), "{e}");
        let e = limits(&serde_json::json!({"cpu": "lots"})).unwrap_err().to_string();
        assert!(e.contains("cloud_properties.cpu"), "{e}");
    }
}
