//! The local CPI's VM networks: Linux bridges, veth pairs and named
//! network namespaces, made and removed with iproute2's `ip`.
//!
//! - Each manual network subnet is a bridge owned by the CPI, with the
//!   subnet's gateway address on it: the host is the gateway, so it
//!   reaches every VM at its IP without forwarding or NAT.
//! - Each VM gets a named netns (`ip netns add`, so the OCI config can point
//!   at `/var/run/netns/<name>` and an operator sees it in `ip netns`) and,
//!   per network, a veth pair: the host end on the bridge, the VM end
//!   `eth<i>` in the netns with the address the director allocated.
//! - Every name starts with the environment's prefix, derived from the
//!   CPI's data dir, so two environments on one host (the tests and a
//!   running quickstart) never touch each other's interfaces, and
//!   [`delete_all`] / [`leftovers`] can find everything one environment
//!   made without any record of it.
//!
//! `ip` rather than netlink from Rust: it is what an operator debugging a
//! VM's network uses anyway, its `-j` output is stable JSON, and it keeps
//! this crate free of a netlink stack.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// Where `ip netns add` puts the namespaces it names (iproute2's
/// `NETNS_RUN_DIR`).
const NETNS_DIR: &str = "/var/run/netns";

/// Linux's limit on interface names (IFNAMSIZ - 1).
const IFNAME_MAX: usize = 15;

/// The first characters of every environment prefix: marks the names as
/// bosh-rs's in `ip link`, and lets an error say that a conflicting bridge
/// belongs to another bosh-rs environment.
const PREFIX_MARK: &str = "bx";

/// The alphabet of the hashes in names: lowercase letters and digits only,
/// valid in interface and netns names, denser than hex.
const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// Why a network operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A field of the VM's network is not usable.
    #[error("{field}: {value:?} {reason}")]
    Invalid {
        /// Where it is, e.g. `networks.default.netmask`.
        field: String,
        /// What it holds.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The subnet overlaps a route or address of the host that is not this
    /// environment's bridge of the same subnet.
    #[error(
        "networks.{network}: subnet {subnet} overlaps the host's {conflict}; choose a subnet no \
         other network of this host uses"
    )]
    Overlap {
        /// The network's name.
        network: String,
        /// The network's subnet.
        subnet: String,
        /// What it overlaps: `route 192.0.2.0/24 on device eth0`, with
        /// whose the device is when it is a bosh-rs bridge.
        conflict: String,
    },
    /// A name derived for this VM is already used by another VM (a hash
    /// collision, vanishingly rare): refused rather than stolen.
    #[error("interface {name} needed by VM {vm} belongs to {owner}")]
    NameTaken {
        /// The interface.
        name: String,
        /// The VM that wanted it.
        vm: String,
        /// Its owner's netns name, from the interface's alias.
        owner: String,
    },
    /// An `ip` command failed.
    #[error("`{cmd}` failed: {stderr}")]
    Command {
        /// The command line.
        cmd: String,
        /// Its stderr (or why it could not run).
        stderr: String,
    },
}

/// One environment's network names, derived from the CPI's absolute data
/// dir so two data dirs never share a bridge, veth or netns name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetEnv {
    prefix: String,
    /// The CPI data dir: locked while a bridge is made (see
    /// [`ensure_bridge`]).
    root: PathBuf,
}

impl NetEnv {
    /// The names of the environment whose CPI data dir is `root`. The path
    /// is made absolute (not canonical: `down` may run after the dir is
    /// gone) so `./data` and `/abs/data` are the same environment.
    pub fn for_root(root: &Path) -> NetEnv {
        let abs = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
        let prefix = format!("{PREFIX_MARK}{}", hash32(abs.as_os_str().as_encoded_bytes(), 5));
        NetEnv { prefix, root: abs }
    }

    /// The first characters of every name this environment makes.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The bridge of `subnet` (network address and prefix length): one per
    /// subnet, so all VMs of a network share it.
    pub fn bridge_name(&self, network: Ipv4Addr, prefix_len: u8) -> String {
        let name =
            format!("{}b{}", self.prefix, hash32(format!("{network}/{prefix_len}").as_bytes(), 7));
        debug_assert!(name.len() <= IFNAME_MAX);
        name
    }

    /// The netns of VM `vm_cid`: readable in `ip netns` when the cid is a
    /// plain name, else a hash of it (a netns name is a file name).
    pub fn netns_name(&self, vm_cid: &str) -> String {
        let plain = !vm_cid.is_empty()
            && vm_cid.len() <= 200
            && !vm_cid.starts_with('.')
            && vm_cid.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if plain {
            format!("{}-{vm_cid}", self.prefix)
        } else {
            format!("{}-{}", self.prefix, hash32(vm_cid.as_bytes(), 12))
        }
    }

    /// The host end of VM `vm_cid`'s `index`th veth (the VM end is
    /// `eth<index>`). The VM's hash is 30 bits: ample for the VMs of one
    /// environment, and a collision is refused, not shared.
    pub fn veth_name(&self, vm_cid: &str, index: usize) -> String {
        format!("{}{}", self.veth_stem(vm_cid), ALPHABET[index % 32] as char)
    }

    /// What all host veths of VM `vm_cid` start with.
    fn veth_stem(&self, vm_cid: &str) -> String {
        format!("{}v{}", self.prefix, hash32(vm_cid.as_bytes(), 6))
    }
}

/// The first `n` (at most 12) base-32 characters of `data`'s SHA-256.
fn hash32(data: &[u8], n: usize) -> String {
    let digest = Sha256::digest(data);
    let mut bits = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
    (0..n.min(12))
        .map(|_| {
            let c = ALPHABET[(bits >> 59) as usize] as char;
            bits <<= 5;
            c
        })
        .collect()
}

/// A VM's interface, parsed from a `VmNetwork` (ip, netmask, gateway).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    /// The network's name in the cloud config.
    pub name: String,
    /// The VM's address.
    pub ip: Ipv4Addr,
    /// The subnet's prefix length (from the netmask).
    pub prefix_len: u8,
    /// The subnet's gateway: the bridge's address on the host.
    pub gateway: Ipv4Addr,
    /// Whether the VM's default route goes via this network's gateway.
    pub default_route: bool,
}

impl Nic {
    /// Parses network `name`, refusing what cannot be wired: every error
    /// names the field (`networks.<name>.netmask`) so an operator knows
    /// which line of the cloud config to fix.
    pub fn from_vm_network(
        name: &str,
        n: &crate::VmNetwork,
        default_route: bool,
    ) -> Result<Nic, NetError> {
        let invalid = |field: &str, value: &str, reason: &str| NetError::Invalid {
            field: format!("networks.{name}.{field}"),
            value: value.to_string(),
            reason: reason.to_string(),
        };
        let addr = |field: &str, value: &str| {
            value
                .trim()
                .parse::<Ipv4Addr>()
                .map_err(|_| invalid(field, value, "is not an IPv4 address"))
        };
        let ip = addr("ip", &n.ip)?;
        let mask = addr("netmask", &n.netmask)
            .map_err(|_| invalid("netmask", &n.netmask, "is not a netmask"))?;
        let bits = u32::from(mask);
        if bits.leading_ones() + bits.trailing_zeros() != 32 {
            return Err(invalid("netmask", &n.netmask, "is not a netmask"));
        }
        let prefix_len = bits.leading_ones() as u8;
        if prefix_len == 0 || prefix_len > 30 {
            return Err(invalid("netmask", &n.netmask, "leaves no room for a gateway and a VM"));
        }
        if n.gateway.trim().is_empty() {
            return Err(invalid("gateway", &n.gateway, "is required: it is the bridge's address"));
        }
        let gateway = addr("gateway", &n.gateway)?;
        let nic = Nic { name: name.to_string(), ip, prefix_len, gateway, default_route };
        let (net, bcast) = (nic.network(), nic.broadcast());
        let inside = |a: Ipv4Addr| a != net && a != bcast && nic.contains(a);
        if !inside(gateway) {
            return Err(invalid(
                "gateway",
                &n.gateway,
                &format!("is not a host address of the subnet {}", nic.subnet()),
            ));
        }
        if !inside(ip) {
            return Err(invalid(
                "ip",
                &n.ip,
                &format!("is not a host address of the subnet {}", nic.subnet()),
            ));
        }
        if ip == gateway {
            return Err(invalid("ip", &n.ip, "is the gateway's address"));
        }
        Ok(nic)
    }

    /// The subnet's network address.
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.gateway) & mask(self.prefix_len))
    }

    /// The subnet, e.g. `10.250.3.0/24`.
    pub fn subnet(&self) -> String {
        format!("{}/{}", self.network(), self.prefix_len)
    }

    fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network()) | !mask(self.prefix_len))
    }

    fn contains(&self, a: Ipv4Addr) -> bool {
        u32::from(a) & mask(self.prefix_len) == u32::from(self.network())
    }
}

fn mask(prefix_len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix_len)).unwrap_or(0)
}

/// Whether two CIDRs share an address: one contains the other's start.
fn overlaps(a: (Ipv4Addr, u8), b: (Ipv4Addr, u8)) -> bool {
    let m = mask(a.1.min(b.1));
    u32::from(a.0) & m == u32::from(b.0) & m
}

/// Parses `10.0.0.0/24` or `10.0.0.5` (a /32) as in `ip -j` output.
fn parse_cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
    match s.split_once('/') {
        Some((a, p)) => Some((a.parse().ok()?, p.parse().ok().filter(|p| *p <= 32)?)),
        None => Some((s.parse().ok()?, 32)),
    }
}

/// Runs `ip args`, returning its stdout.
fn ip(args: &[&str]) -> Result<String, NetError> {
    let cmd = || format!("ip {}", args.join(" "));
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| NetError::Command { cmd: cmd(), stderr: e.to_string() })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(NetError::Command {
            cmd: cmd(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Runs `ip -j args` and parses its JSON array (empty output is `[]`:
/// some iproute2 versions print nothing for an empty list).
fn ip_json(args: &[&str]) -> Result<Vec<serde_json::Value>, NetError> {
    let mut all = vec!["-j"];
    all.extend_from_slice(args);
    let out = ip(&all)?;
    if out.trim().is_empty() {
        return Ok(vec![]);
    }
    serde_json::from_str(&out).map_err(|e| NetError::Command {
        cmd: format!("ip {}", all.join(" ")),
        stderr: format!("unparsable output ({e}): {out}"),
    })
}

/// Whether a failed command failed because its object already exists (a
/// concurrent creator won) or is already gone (a concurrent deleter won).
fn is_err_containing(e: &NetError, what: &[&str]) -> bool {
    matches!(e, NetError::Command { stderr, .. } if what.iter().any(|w| stderr.contains(w)))
}

const EXISTS: &[&str] = &["File exists"];
const ABSENT: &[&str] = &["Cannot find device", "No such file", "does not exist"];

/// The host's links, as (name, alias).
fn links() -> Result<Vec<(String, Option<String>)>, NetError> {
    Ok(ip_json(&["link", "show"])?
        .iter()
        .filter_map(|l| {
            let name = l["ifname"].as_str()?.to_string();
            Some((name, l["ifalias"].as_str().map(str::to_string)))
        })
        .collect())
}

/// Deletes link `name`; absent is fine.
fn delete_link(name: &str) -> Result<(), NetError> {
    match ip(&["link", "del", "dev", name]) {
        Err(e) if !is_err_containing(&e, ABSENT) => Err(e),
        _ => Ok(()),
    }
}

/// Refuses `nic`'s subnet if any route of the host's main table or any
/// address of the host overlaps it, unless it is on `bridge` (this
/// environment's bridge of that very subnet, made earlier). The default
/// route is not a conflict: a more specific bridge route wins over it.
fn check_overlap(env: &NetEnv, nic: &Nic, bridge: &str) -> Result<(), NetError> {
    let subnet = (nic.network(), nic.prefix_len);
    let conflict = |what: &str, conflict: String, dev: &str| {
        let owner = if dev.starts_with(env.prefix()) {
            " (another network of this environment)"
        } else if dev.starts_with(PREFIX_MARK) && dev.len() == IFNAME_MAX {
            " (a bridge of another bosh-rs environment)"
        } else {
            ""
        };
        NetError::Overlap {
            network: nic.name.clone(),
            subnet: nic.subnet(),
            conflict: format!("{what} {conflict} on device {dev}{owner}"),
        }
    };
    for r in ip_json(&["-4", "route", "show", "table", "main"])? {
        let (Some(dst), dev) = (r["dst"].as_str(), r["dev"].as_str().unwrap_or("?")) else {
            continue;
        };
        if dev == bridge {
            continue;
        }
        if let Some(cidr) = parse_cidr(dst).filter(|_| dst != "default")
            && overlaps(cidr, subnet)
        {
            return Err(conflict("route", dst.to_string(), dev));
        }
    }
    for l in ip_json(&["-4", "addr", "show"])? {
        let dev = l["ifname"].as_str().unwrap_or("?");
        if dev == bridge {
            continue;
        }
        for a in l["addr_info"].as_array().into_iter().flatten() {
            let (Some(local), Some(p)) = (a["local"].as_str(), a["prefixlen"].as_u64()) else {
                continue;
            };
            let Ok(local) = local.parse::<Ipv4Addr>() else { continue };
            // The address itself, or the subnet it implies, inside ours.
            if overlaps((local, p.min(32) as u8), subnet) {
                return Err(conflict("address", format!("{local}/{p}"), dev));
            }
        }
    }
    Ok(())
}

/// The fixed address of the bridge whose gateway is `gateway`: locally
/// administered (`02:`), unique per gateway as bridges are per subnet.
pub fn bridge_mac(gateway: Ipv4Addr) -> String {
    let [a, b, c, d] = gateway.octets();
    format!("02:62:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

/// Creates (idempotently) the bridge of `nic`'s subnet with the gateway
/// address on it, up. First checks that the subnet overlaps no host route
/// or address but this environment's bridge of the same subnet (the
/// host's LAN, another environment's bridge): refused before anything is
/// made. Concurrent callers for one subnet are fine: "File exists" means
/// another won, and the state is re-checked. Returns the bridge name.
pub fn ensure_bridge(env: &NetEnv, nic: &Nic) -> Result<String, NetError> {
    // One bridge maker at a time per environment, across threads and
    // processes (replicas sharing the data dir): unlocked, two makers of
    // one bridge race between `link add` and `addr add`, and the loser's
    // clean-up deletes the bridge the winner is configuring. The lock is
    // flock(2) on the data dir itself, so nothing is left behind.
    let _lock = lock_dir(&env.root)?;
    let bridge = env.bridge_name(nic.network(), nic.prefix_len);
    check_overlap(env, nic, &bridge)?;
    let created = match ip(&["link", "add", "name", &bridge, "type", "bridge"]) {
        Ok(_) => true,
        Err(e) if is_err_containing(&e, EXISTS) => false,
        Err(e) => return Err(e),
    };
    let configure = || -> Result<(), NetError> {
        let want = format!("{}/{}", nic.gateway, nic.prefix_len);
        let have = bridge_addrs(&bridge)?;
        if have.is_empty() {
            match ip(&["addr", "add", &want, "dev", &bridge]) {
                Err(e) if !is_err_containing(&e, EXISTS) => return Err(e),
                _ => {}
            }
        }
        // Re-read: a concurrent caller may have added it, or, for a
        // different gateway in the same subnet, something else.
        let have = bridge_addrs(&bridge)?;
        if have != [want.clone()] {
            return Err(NetError::Invalid {
                field: format!("networks.{}.gateway", nic.name),
                value: nic.gateway.to_string(),
                reason: format!(
                    "differs from the gateway {} already on bridge {bridge} of subnet {}",
                    have.join(", "),
                    nic.subnet()
                ),
            });
        }
        // A bridge whose address was never set takes the lowest address of
        // its ports, so it changes as VMs come and go; every other VM's ARP
        // entry for the gateway (where NATS and the blobstore are) then
        // points nowhere until it expires, and their agents fall silent
        // for seconds. A set address stays.
        ip(&["link", "set", "dev", &bridge, "address", &bridge_mac(nic.gateway)])?;
        ip(&["link", "set", "dev", &bridge, "up"])?;
        Ok(())
    };
    configure().inspect_err(|_| {
        if created {
            let _ = delete_link(&bridge);
        }
    })?;
    Ok(bridge)
}

/// An exclusive flock on directory `dir` (made if missing), held until
/// the returned file is dropped.
fn lock_dir(dir: &Path) -> Result<std::fs::File, NetError> {
    let fail = |e: std::io::Error| NetError::Command {
        cmd: format!("flock {}", dir.display()),
        stderr: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(fail)?;
    let f = std::fs::File::open(dir).map_err(fail)?;
    f.lock().map_err(fail)?;
    Ok(f)
}

/// The IPv4 addresses (`a.b.c.d/p`) on `bridge`.
fn bridge_addrs(bridge: &str) -> Result<Vec<String>, NetError> {
    Ok(ip_json(&["-4", "addr", "show", "dev", bridge])?
        .iter()
        .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| Some(format!("{}/{}", a["local"].as_str()?, a["prefixlen"].as_u64()?)))
        .collect())
}

/// The path of VM `vm_cid`'s netns, for the OCI config's network
/// namespace.
pub fn netns_path(env: &NetEnv, vm_cid: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(env.netns_name(vm_cid))
}

/// Creates VM `vm_cid`'s named netns with `lo` up and, for each nic, a
/// veth pair: the host end on the nic's bridge (made if missing), the VM
/// end `eth<i>` in the netns with the nic's address, up, and the default
/// route via the gateway of the nic with `default_route`. A netns left by
/// a crashed earlier call is deleted and made anew. On failure everything
/// made is removed. Returns the netns name.
pub fn create_vm_netns(env: &NetEnv, vm_cid: &str, nics: &[Nic]) -> Result<String, NetError> {
    let ns = env.netns_name(vm_cid);
    if nics.len() > ALPHABET.len() {
        return Err(NetError::Invalid {
            field: "networks".into(),
            value: format!("{} networks", nics.len()),
            reason: format!("are more than the {} a VM can have", ALPHABET.len()),
        });
    }
    // Bridges first: they are shared and outlive the VM, and their
    // overlap check must refuse before anything of the VM is made.
    let bridges = nics.iter().map(|n| ensure_bridge(env, n)).collect::<Result<Vec<_>, _>>()?;
    let existing = links()?;
    for i in 0..nics.len() {
        let name = env.veth_name(vm_cid, i);
        if let Some((_, alias)) = existing.iter().find(|(n, _)| *n == name)
            && let Some(owner) = alias.as_ref().filter(|a| **a != ns)
        {
            return Err(NetError::NameTaken { name, vm: vm_cid.into(), owner: owner.clone() });
        }
    }
    delete_vm_netns(env, vm_cid)?;
    let made = (|| {
        ip(&["netns", "add", &ns])?;
        ip(&["-n", &ns, "link", "set", "dev", "lo", "up"])?;
        for (i, (nic, bridge)) in nics.iter().zip(&bridges).enumerate() {
            let host = env.veth_name(vm_cid, i);
            let vm_end = format!("eth{i}");
            ip(&[
                "link", "add", "name", &host, "type", "veth", "peer", "name", &vm_end, "netns", &ns,
            ])?;
            // The alias says whose it is in `ip link`, and lets a
            // colliding name be told apart from this VM's own.
            ip(&["link", "set", "dev", &host, "alias", &ns])?;
            ip(&["link", "set", "dev", &host, "master", bridge, "up"])?;
            let addr = format!("{}/{}", nic.ip, nic.prefix_len);
            ip(&["-n", &ns, "addr", "add", &addr, "dev", &vm_end])?;
            ip(&["-n", &ns, "link", "set", "dev", &vm_end, "up"])?;
            if nic.default_route {
                let gw = nic.gateway.to_string();
                ip(&["-n", &ns, "route", "add", "default", "via", &gw, "dev", &vm_end])?;
            }
        }
        Ok(ns.clone())
    })();
    if made.is_err() {
        let _ = delete_vm_netns(env, vm_cid);
    }
    made
}

/// Removes VM `vm_cid`'s host veths and its netns; absent is fine. The
/// veths go explicitly: a netns still held by a process (a container not
/// yet dead) outlives `ip netns del`, and its veths with it.
pub fn delete_vm_netns(env: &NetEnv, vm_cid: &str) -> Result<(), NetError> {
    let ns = env.netns_name(vm_cid);
    let stem = env.veth_stem(vm_cid);
    for (name, alias) in links()? {
        let mine = alias.as_deref().is_none_or(|a| a == ns);
        if name.starts_with(&stem) && name.len() == stem.len() + 1 && mine {
            delete_link(&name)?;
        }
    }
    delete_netns(&ns)
}

fn delete_netns(ns: &str) -> Result<(), NetError> {
    if !Path::new(NETNS_DIR).join(ns).exists() {
        return Ok(());
    }
    match ip(&["netns", "del", ns]) {
        Err(e) if !is_err_containing(&e, ABSENT) => Err(e),
        _ => Ok(()),
    }
}

/// This environment's netns names.
fn env_netns(env: &NetEnv) -> Vec<String> {
    let start = format!("{}-", env.prefix);
    let Ok(dir) = std::fs::read_dir(NETNS_DIR) else { return vec![] };
    dir.filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(&start))
        .collect()
}

/// This environment's links (bridges and host veths).
fn env_links(env: &NetEnv) -> Result<Vec<String>, NetError> {
    Ok(links()?
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| n.starts_with(&env.prefix) && n.len() == IFNAME_MAX)
        .collect())
}

/// Removes every bridge, veth and netns of this environment, veths before
/// bridges (for `down` and test teardown; idempotent).
pub fn delete_all(env: &NetEnv) -> Result<(), NetError> {
    let mut links = env_links(env)?;
    // Veths (`<prefix>v…`) sort after bridges (`<prefix>b…`).
    links.sort_by(|a, b| b.cmp(a));
    for l in links {
        delete_link(&l)?;
    }
    for ns in env_netns(env) {
        delete_netns(&ns)?;
    }
    Ok(())
}

/// This environment's bridges, host veths and netns names still on the
/// host: empty after [`delete_all`] (for tests and for `down` to prove it
/// left nothing).
pub fn leftovers(env: &NetEnv) -> Result<Vec<String>, NetError> {
    let mut all = env_links(env)?;
    all.extend(env_netns(env).into_iter().map(|n| format!("netns {n}")));
    all.sort();
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(ip: &str, netmask: &str, gateway: &str) -> crate::VmNetwork {
        crate::VmNetwork {
            type_: "manual".into(),
            ip: ip.into(),
            netmask: netmask.into(),
            gateway: gateway.into(),
            ..Default::default()
        }
    }

    #[test]
    fn names_fit_linux_limits_and_carry_the_prefix() {
        let env = NetEnv::for_root(Path::new("/var/data/one"));
        assert_eq!(env.prefix().len(), 7);
        assert!(env.prefix().starts_with(PREFIX_MARK));
        let b = env.bridge_name(Ipv4Addr::new(10, 250, 3, 0), 24);
        let v = env.veth_name("vm-1234", 0);
        for n in [&b, &v] {
            assert_eq!(n.len(), IFNAME_MAX, "{n}");
            assert!(n.starts_with(env.prefix()), "{n}");
            assert!(n.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()), "{n}");
        }
        assert_eq!(env.netns_name("vm-1234"), format!("{}-vm-1234", env.prefix()));
        let odd = env.netns_name("../x y");
        assert!(!odd.contains('/') && !odd.contains(' ') && odd.starts_with(env.prefix()), "{odd}");
    }

    #[test]
    fn names_are_deterministic_and_distinct() {
        let a = NetEnv::for_root(Path::new("/var/data/one"));
        let b = NetEnv::for_root(Path::new("/var/data/two"));
        assert_eq!(a, NetEnv::for_root(Path::new("/var/data/one")));
        assert_ne!(a.prefix(), b.prefix());
        let s = Ipv4Addr::new(10, 250, 3, 0);
        assert_eq!(a.bridge_name(s, 24), a.bridge_name(s, 24));
        assert_ne!(a.bridge_name(s, 24), a.bridge_name(s, 25));
        assert_ne!(a.bridge_name(s, 24), b.bridge_name(s, 24));
        assert_ne!(a.veth_name("vm-1", 0), a.veth_name("vm-2", 0));
        assert_ne!(a.veth_name("vm-1", 0), a.veth_name("vm-1", 1));
        assert_ne!(a.netns_name("vm-1"), b.netns_name("vm-1"));
    }

    #[test]
    fn relative_and_absolute_roots_are_one_environment() {
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(NetEnv::for_root(Path::new("data")), NetEnv::for_root(&cwd.join("data")));
    }

    #[test]
    fn parses_a_manual_network() {
        let nic = Nic::from_vm_network(
            "default",
            &net("10.250.3.5", "255.255.255.0", "10.250.3.1"),
            true,
        )
        .unwrap();
        assert_eq!(
            nic,
            Nic {
                name: "default".into(),
                ip: Ipv4Addr::new(10, 250, 3, 5),
                prefix_len: 24,
                gateway: Ipv4Addr::new(10, 250, 3, 1),
                default_route: true,
            }
        );
        assert_eq!(nic.subnet(), "10.250.3.0/24");
    }

    #[test]
    fn bad_fields_are_named() {
        let cases = [
            (
                net("10.250.3.5", "255.0.255.0", "10.250.3.1"),
                "networks.default.netmask: \"255.0.255.0\" is not a netmask",
            ),
            (
                net("10.250.3.5", "bogus", "10.250.3.1"),
                "networks.default.netmask: \"bogus\" is not a netmask",
            ),
            (
                net("10.250.3.5", "255.255.255.255", "10.250.3.1"),
                "networks.default.netmask: \"255.255.255.255\"",
            ),
            (
                net("10.250.3", "255.255.255.0", "10.250.3.1"),
                "networks.default.ip: \"10.250.3\" is not an IPv4 address",
            ),
            (
                net("10.250.4.5", "255.255.255.0", "10.250.3.1"),
                "networks.default.ip: \"10.250.4.5\" is not a host address of the subnet 10.250.3.0/24",
            ),
            (
                net("10.250.3.255", "255.255.255.0", "10.250.3.1"),
                "networks.default.ip: \"10.250.3.255\"",
            ),
            (
                net("10.250.3.1", "255.255.255.0", "10.250.3.1"),
                "networks.default.ip: \"10.250.3.1\" is the gateway's address",
            ),
            (net("10.250.3.5", "255.255.255.0", ""), "networks.default.gateway: \"\" is required"),
            (
                net("10.250.3.5", "255.255.255.0", "10.250.3.0"),
                "networks.default.gateway: \"10.250.3.0\" is not a host address",
            ),
        ];
        for (n, want) in cases {
            let e = Nic::from_vm_network("default", &n, true).unwrap_err().to_string();
            assert!(e.starts_with(want), "{e:?} does not start with {want:?}");
        }
    }

    #[test]
    fn overlap_arithmetic() {
        let c = |s: &str| parse_cidr(s).unwrap();
        assert!(overlaps(c("10.0.0.0/8"), c("10.250.3.0/24")));
        assert!(overlaps(c("10.250.3.0/24"), c("10.0.0.0/8")));
        assert!(overlaps(c("10.250.3.7"), c("10.250.3.0/24")));
        assert!(!overlaps(c("10.250.4.0/24"), c("10.250.3.0/24")));
        assert!(!overlaps(c("192.0.2.0/24"), c("10.250.3.0/24")));
        assert_eq!(parse_cidr("default"), None);
        assert_eq!(parse_cidr("10.0.0.0/33"), None);
    }
}
