//! The local CPI's VM networks with real bridges, veth pairs and network
//! namespaces (run as root). Each test uses its own temp data dir (so its
//! own name prefix) and a subnet no host route or address overlaps, and
//! removes everything it made even when it fails.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bosh_cpi::VmNetwork;
use bosh_cpi::local::network::{self, NetEnv, NetError, Nic};

/// One environment: a temp data dir and its network names; everything of
/// it is removed on drop.
struct Env {
    net: NetEnv,
    _root: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let root = tempfile::tempdir().unwrap();
        Env { net: NetEnv::for_root(root.path()), _root: root }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = network::delete_all(&self.net);
    }
}

/// A process started in a VM's netns, killed on drop.
struct Listener(Child);

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts, in netns `ns`, a TCP server on 0.0.0.0:8080 that answers every
/// connection with `reply`.
fn listen_in(ns: &str, reply: &str) -> Listener {
    const SERVER: &str = "import socket,sys\n\
        s=socket.socket()\n\
        s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
        s.bind(('0.0.0.0',8080))\n\
        s.listen()\n\
        while True:\n    c,_=s.accept(); c.sendall(sys.argv[1].encode()); c.close()\n";
    Listener(
        Command::new("ip")
            .args(["netns", "exec", ns, "python3", "-c", SERVER, reply])
            .stdin(Stdio::null())
            .spawn()
            .expect("ip netns exec python3"),
    )
}

/// What a server at `ip:8080` answers, if it does.
fn ask(ip: Ipv4Addr) -> Option<String> {
    let addr = SocketAddr::from((ip, 8080));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    (!out.is_empty()).then_some(out)
}

/// `ip -j args` parsed.
fn ip_json(args: &[&str]) -> serde_json::Value {
    let out = Command::new("ip").arg("-j").args(args).output().unwrap();
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    if out.stdout.iter().all(u8::is_ascii_whitespace) {
        return serde_json::json!([]);
    }
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The host's IPv4 routes and addresses as (network, prefix length).
fn host_cidrs() -> Vec<(u32, u8)> {
    let mut all = vec![];
    for r in ip_json(&["-4", "route", "show", "table", "main"]).as_array().unwrap() {
        let dst = r["dst"].as_str().unwrap_or("default");
        if dst == "default" {
            continue;
        }
        let (a, p) = dst.split_once('/').unwrap_or((dst, "32"));
        all.push((u32::from(a.parse::<Ipv4Addr>().unwrap()), p.parse().unwrap()));
    }
    for l in ip_json(&["-4", "addr", "show"]).as_array().unwrap() {
        for a in l["addr_info"].as_array().into_iter().flatten() {
            let ip: Ipv4Addr = a["local"].as_str().unwrap().parse().unwrap();
            all.push((u32::from(ip), a["prefixlen"].as_u64().unwrap() as u8));
        }
    }
    all
}

/// A /24 in `10.<second>.0.0/16` that nothing on the host overlaps now,
/// starting from one derived from the pid so concurrent test processes
/// tend to pick different ones.
fn free_subnet(second: u8) -> [u8; 3] {
    let taken = host_cidrs();
    let start = std::process::id() as usize % 250;
    (0..250)
        .map(|i| ((start + i) % 250 + 1) as u8)
        .map(|third| [10, second, third])
        .find(|s| {
            let net = u32::from(Ipv4Addr::new(s[0], s[1], s[2], 0));
            taken.iter().all(|(a, p)| {
                let m = u32::MAX.checked_shl(32 - u32::from((*p).min(24))).unwrap_or(0);
                a & m != net & m
            })
        })
        .expect("a free /24 in 10.{second}.0.0/16")
}

/// The nic of host `host` in subnet `s` (gateway `.1`).
fn nic(name: &str, s: [u8; 3], host: u8, netmask: &str) -> Nic {
    let n = VmNetwork {
        type_: "manual".into(),
        ip: format!("{}.{}.{}.{host}", s[0], s[1], s[2]),
        netmask: netmask.into(),
        gateway: format!("{}.{}.{}.1", s[0], s[1], s[2]),
        ..Default::default()
    };
    Nic::from_vm_network(name, &n, true).unwrap()
}

/// Names of host links and netns that contain `prefix`, as `ip` shows
/// them (independent of the module's own listing).
fn host_names_with(prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = ip_json(&["link", "show"])
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["ifname"].as_str().map(str::to_string))
        .collect();
    names.extend(
        ip_json(&["netns", "list"])
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|n| n["name"].as_str().map(str::to_string)),
    );
    names.retain(|n| n.contains(prefix));
    names
}

#[tokio::test]
async fn vms_on_one_bridge_are_reachable_from_the_host_at_their_ips() {
    let env = Env::new();
    let s = free_subnet(241);
    let vms = [("vm-a", 11u8), ("vm-b", 12u8)];
    // Both VMs at once, as concurrent create_vm calls do: each ensures the
    // shared bridge, racing the other.
    let made: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = vms
            .iter()
            .map(|(cid, host)| {
                let net = &env.net;
                scope.spawn(move || {
                    let nic = nic("default", s, *host, "255.255.255.0");
                    network::ensure_bridge(net, &nic).unwrap();
                    network::create_vm_netns(net, cid, &[nic]).unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for ((cid, host), ns) in vms.iter().zip(&made) {
        assert_eq!(
            network::netns_path(&env.net, cid),
            std::path::Path::new("/var/run/netns").join(ns)
        );
        assert!(network::netns_path(&env.net, cid).exists());
        // Inside: eth0 with the director's address, default via gateway.
        let addrs = ip_json(&["-n", ns, "-4", "addr", "show", "dev", "eth0"]);
        assert_eq!(addrs[0]["addr_info"][0]["local"], format!("10.241.{}.{host}", s[2]));
        assert_eq!(addrs[0]["addr_info"][0]["prefixlen"], 24);
        let routes = ip_json(&["-n", ns, "-4", "route", "show", "default"]);
        assert_eq!(routes[0]["gateway"], format!("10.241.{}.1", s[2]), "{routes}");
        let lo = ip_json(&["-n", ns, "link", "show", "dev", "lo"]);
        assert!(lo[0]["flags"].as_array().unwrap().iter().any(|f| f == "UP"), "{lo}");
    }
    // Both bind 0.0.0.0:8080: separate namespaces, no clash.
    let _listeners: Vec<Listener> =
        vms.iter().zip(&made).map(|((cid, _), ns)| listen_in(ns, cid)).collect();
    for (cid, host) in vms {
        let ip = Ipv4Addr::new(10, 241, s[2], host);
        let got = bosh_test_utils::eventually(
            Duration::from_secs(20),
            "the VM's listener",
            || async move { ask(ip) },
        )
        .await
        .unwrap();
        assert_eq!(got, cid, "{ip} answered as another VM");
    }
}

#[tokio::test]
async fn deleting_vms_and_the_environment_leaves_nothing() {
    let env = Env::new();
    let s = free_subnet(242);
    let (a, b) = (nic("default", s, 11, "255.255.255.0"), nic("default", s, 12, "255.255.255.0"));
    let bridge = network::ensure_bridge(&env.net, &a).unwrap();
    assert_eq!(network::ensure_bridge(&env.net, &b).unwrap(), bridge, "one bridge per subnet");
    let ns_a = network::create_vm_netns(&env.net, "vm-a", std::slice::from_ref(&a)).unwrap();
    // A second create (a retried call after a crash) remakes it.
    assert_eq!(network::create_vm_netns(&env.net, "vm-a", std::slice::from_ref(&a)).unwrap(), ns_a);
    let ns_b = network::create_vm_netns(&env.net, "vm-b", std::slice::from_ref(&b)).unwrap();
    let veth_a = env.net.veth_name("vm-a", 0);
    let veth_b = env.net.veth_name("vm-b", 0);
    let left = network::leftovers(&env.net).unwrap();
    for want in [&bridge, &veth_a, &veth_b, &format!("netns {ns_a}"), &format!("netns {ns_b}")] {
        assert!(left.contains(want), "{want} not in {left:?}");
    }
    let master = ip_json(&["link", "show", "dev", &veth_a]);
    assert_eq!(master[0]["master"], bridge.as_str());

    // The bridge keeps its own address as ports come and go (an unset one
    // follows the lowest port's, leaving other VMs' ARP entries stale).
    let mac = |dev: &str| ip_json(&["link", "show", "dev", dev])[0]["address"].clone();
    assert_eq!(mac(&bridge), network::bridge_mac(a.gateway).as_str());

    network::delete_vm_netns(&env.net, "vm-a").unwrap();
    network::delete_vm_netns(&env.net, "vm-a").unwrap(); // absent is fine
    assert_eq!(mac(&bridge), network::bridge_mac(a.gateway).as_str(), "unchanged by a VM's going");
    let left = network::leftovers(&env.net).unwrap();
    assert!(!left.iter().any(|l| *l == veth_a || l.ends_with(&ns_a)), "{left:?}");
    assert!(left.contains(&veth_b) && left.contains(&bridge), "{left:?}");
    assert!(!network::netns_path(&env.net, "vm-a").exists());

    network::delete_all(&env.net).unwrap();
    assert_eq!(network::leftovers(&env.net).unwrap(), Vec::<String>::new());
    assert_eq!(host_names_with(env.net.prefix()), Vec::<String>::new());
    network::delete_all(&env.net).unwrap(); // idempotent
}

#[tokio::test]
async fn a_subnet_overlapping_a_host_route_is_refused_before_anything_is_made() {
    let env = Env::new();
    // A route of the host's own (e.g. its LAN), wide enough for a gateway
    // and a VM.
    let routes = ip_json(&["-4", "route", "show", "table", "main"]);
    let (dst, dev) = routes
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| Some((r["dst"].as_str()?, r["dev"].as_str()?)))
        .find(|(d, _)| {
            d.split_once('/').is_some_and(|(_, p)| p.parse::<u8>().is_ok_and(|p| p <= 24))
        })
        .expect("the host has a route of /24 or wider");
    let net: Ipv4Addr = dst.split_once('/').unwrap().0.parse().unwrap();
    let o = net.octets();
    // A /24 inside that route (or that route itself).
    let lan = nic("lan", [o[0], o[1], o[2]], 200, "255.255.255.0");
    let e = network::ensure_bridge(&env.net, &lan).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, NetError::Overlap { .. }), "{msg}");
    for want in ["networks.lan", &lan.subnet(), dst, dev] {
        assert!(msg.contains(want), "{msg:?} does not name {want:?}");
    }
    let e = network::create_vm_netns(&env.net, "vm-lan", &[lan]).unwrap_err();
    assert!(matches!(e, NetError::Overlap { .. }), "{e}");
    assert_eq!(network::leftovers(&env.net).unwrap(), Vec::<String>::new());
}

#[tokio::test]
async fn a_subnet_bridged_by_another_environment_is_refused() {
    let (first, second) = (Env::new(), Env::new());
    let s = free_subnet(243);
    let bridge =
        network::ensure_bridge(&first.net, &nic("default", s, 11, "255.255.255.0")).unwrap();
    // The same subnet, and a wider one containing it.
    for (netmask, subnet) in [
        ("255.255.255.0", format!("10.243.{}.0/24", s[2])),
        ("255.255.0.0", "10.243.0.0/16".into()),
    ] {
        let theirs = nic("default", s, 12, netmask);
        let e = network::ensure_bridge(&second.net, &theirs).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, NetError::Overlap { .. }), "{msg}");
        for want in ["networks.default", &subnet, &bridge, "another bosh-rs environment"] {
            assert!(msg.contains(want), "{msg:?} does not name {want:?}");
        }
        let e = network::create_vm_netns(&second.net, "vm-1", &[theirs]).unwrap_err();
        assert!(matches!(e, NetError::Overlap { .. }), "{e}");
        assert_eq!(network::leftovers(&second.net).unwrap(), Vec::<String>::new());
    }
    // The first environment's bridge is untouched.
    assert_eq!(network::leftovers(&first.net).unwrap(), vec![bridge]);
}

#[tokio::test]
async fn two_environments_use_different_names_and_delete_only_their_own() {
    let (first, second) = (Env::new(), Env::new());
    assert_ne!(first.net.prefix(), second.net.prefix());
    let (s1, s2) = (free_subnet(244), free_subnet(245));
    let n1 = nic("default", s1, 11, "255.255.255.0");
    let n2 = nic("default", s2, 11, "255.255.255.0");
    // The same VM cid in both.
    let ns1 = network::create_vm_netns(&first.net, "vm-1", &[n1]).unwrap();
    let ns2 = network::create_vm_netns(&second.net, "vm-1", &[n2]).unwrap();
    assert_ne!(ns1, ns2);
    let (l1, l2) =
        (network::leftovers(&first.net).unwrap(), network::leftovers(&second.net).unwrap());
    assert_eq!(l1.len(), 3, "{l1:?}"); // bridge, veth, netns
    assert!(l1.iter().all(|n| !l2.contains(n)), "{l1:?} vs {l2:?}");
    network::delete_all(&first.net).unwrap();
    assert_eq!(network::leftovers(&first.net).unwrap(), Vec::<String>::new());
    assert_eq!(network::leftovers(&second.net).unwrap(), l2);
}
