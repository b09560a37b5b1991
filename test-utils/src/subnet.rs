//! Loopback subnets for test worlds, leased so that concurrent tests never
//! share one.
//!
//! A local VM's jobs bind its own loopback address, so two worlds running
//! at once (nextest runs every test in its own process, several at a time)
//! must hand out addresses from different subnets, or a job of one would
//! fail to bind, or answer the other's health checks, without either test
//! saying why. Picking subnets by hand made such a collision silent; a
//! lease makes it impossible.
//!
//! # How a lease is held
//!
//! Leasing subnet N binds a UDP socket at the subnet's broadcast address on
//! [`LEASE_PORT`] (`127.77.N.255` for a /24, `127.N.255.255` for a /16) and
//! keeps it. A second bind of the same address and port fails with
//! `AddrInUse`, in this process or any other, so the acquirer moves on to
//! the next N. The kernel closes the socket when the lease is dropped or
//! the process dies, however it dies: there is no file to clean up and no
//! stale lease after a crash.
//!
//! - The broadcast address is never an instance's: IPAM hands out neither
//!   a subnet's network nor its broadcast address.
//! - UDP, because nothing in the tests speaks UDP, so no server of a test
//!   can hold the lock address by chance; a UDP bind also needs no listen.
//! - [`LEASE_PORT`] is below the kernel's ephemeral range (32768–60999 by
//!   default), so no socket bound to port 0 on the wildcard address, which
//!   would block this port at every address, gets it.
//!
//! # The address space
//!
//! - /24 leases ([`SubnetSize::Slash24`]) are `127.77.N.0/24` for N in
//!   10–249, all inside `127.77.0.0/16`. The rest of 127.77 is left to a
//!   developer's local environment, whose example cloud config
//!   (`examples/manifests/cloud-config.yml`) uses `127.77.1`–`3` and
//!   `127.77.250` (a test must not fail because `boshctl up` runs beside
//!   it), and to in-memory unit tests (IPAM, plans) that bind nothing and
//!   use `127.77.0.x` freely.
//! - /16 leases ([`SubnetSize::Slash16`]) are `127.N.0.0/16` for N in 1–254
//!   but not 77, so none overlaps a /24 lease; N is not 0 because
//!   `127.0.0.0/16` holds `127.0.0.1`, where every test's etcd, nats-server
//!   and API listen (and `127.0.0.53`, a resolver), nor 255, which holds the
//!   loopback broadcast address.
//!
//! Every lease's lock address is inside its own subnet and no other lease's,
//! so two leases of either size are never held on overlapping subnets.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};

/// The UDP port every lease's lock socket binds (see the module docs for
/// why this one).
pub const LEASE_PORT: u16 = 17_707;

/// The second octet of every /24 lease.
const SLASH24_OCTET: u8 = 77;

/// The second octet of the loopback addresses that hold bridged leases.
const BRIDGED_LOCK_OCTET: u8 = 78;

/// The first two octets of every bridged lease's subnet.
const BRIDGED_PREFIX: [u8; 2] = [10, 245];

/// How large a leased subnet is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubnetSize {
    /// `127.77.N.0/24`: 254 addresses, about 230 instances besides a
    /// world's reserved and static ones: enough for tests.
    Slash24,
    /// `127.N.0.0/16`: about 65,000 addresses, for benchmarks of 1,000
    /// instances. The whole of 127.0.0.0/8 is loopback, so local VMs bind
    /// these as they do 127.77.x.y.
    Slash16,
    /// `10.245.N.0/24`: a private subnet for container VMs, which the
    /// local CPI puts on a bridge of its own (the host's route to it is
    /// the bridge's). Its lock is `127.78.N.255`, since the lock must be
    /// an address the host has before any bridge exists.
    Bridged24,
}

impl SubnetSize {
    /// The N a lease of this size may take, in order (see the module docs
    /// for why these).
    fn candidates(self) -> Vec<u8> {
        match self {
            SubnetSize::Slash24 | SubnetSize::Bridged24 => (10..=249).collect(),
            SubnetSize::Slash16 => {
                (1..=254).filter(|n| ![SLASH24_OCTET, BRIDGED_LOCK_OCTET].contains(n)).collect()
            }
        }
    }
}

/// A loopback subnet no other live lease holds, in this process or any
/// other, until this is dropped.
pub struct SubnetLease {
    size: SubnetSize,
    n: u8,
    /// Held for the lease's life: its bound address is the lock.
    _lock: UdpSocket,
}

impl SubnetLease {
    /// Leases a free `127.77.N.0/24`.
    ///
    /// # Panics
    ///
    /// When all 240 are held, or binding fails for another reason than
    /// `AddrInUse`: a test cannot run without a subnet.
    pub fn acquire() -> SubnetLease {
        Self::try_acquire(SubnetSize::Slash24).expect("leasing a loopback /24")
    }

    /// Leases a free `10.245.N.0/24` for container VMs, first removing any
    /// interface left holding an address in it (a bridge of a test that
    /// died before its world could clean up: no live process holds the
    /// lease, so nothing uses it).
    ///
    /// # Panics
    ///
    /// As [`SubnetLease::acquire`].
    pub fn acquire_bridged() -> SubnetLease {
        let lease = Self::try_acquire(SubnetSize::Bridged24).expect("leasing a bridged /24");
        remove_stale_interfaces(&lease);
        lease
    }

    /// Leases a free `127.N.0.0/16`.
    ///
    /// # Panics
    ///
    /// As [`SubnetLease::acquire`].
    pub fn acquire_slash16() -> SubnetLease {
        Self::try_acquire(SubnetSize::Slash16).expect("leasing a loopback /16")
    }

    /// Leases a free subnet of `size`: tries every N once, starting at a
    /// random one (so concurrent acquirers rarely probe the same N first),
    /// and takes the first whose lock address binds.
    pub fn try_acquire(size: SubnetSize) -> io::Result<SubnetLease> {
        let candidates = size.candidates();
        let start = RandomState::new().hash_one(std::process::id()) as usize % candidates.len();
        for i in 0..candidates.len() {
            let n = candidates[(start + i) % candidates.len()];
            match Self::try_lease(size, n) {
                Ok(lease) => return Ok(lease),
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("every loopback {size:?} subnet is leased by a live process"),
        ))
    }

    /// Leases subnet `n` of `size` exactly, for a test that needs a given
    /// layout; `AddrInUse` when another lease holds it.
    ///
    /// # Panics
    ///
    /// When `n` is not one a lease of `size` may take (see the module docs).
    pub fn try_lease(size: SubnetSize, n: u8) -> io::Result<SubnetLease> {
        assert!(size.candidates().contains(&n), "{size:?} subnet {n} is never leased");
        let lock = UdpSocket::bind(SocketAddrV4::new(lock_ip(size, n), LEASE_PORT))?;
        Ok(SubnetLease { size, n, _lock: lock })
    }

    /// The subnet's size.
    pub fn size(&self) -> SubnetSize {
        self.size
    }

    /// Which subnet of its size this is: `127.77.N.0/24` or `127.N.0.0/16`.
    pub fn n(&self) -> u8 {
        self.n
    }

    /// The subnet in CIDR notation, as a cloud config's `range`.
    pub fn range(&self) -> String {
        range(self.size, self.n)
    }

    /// The subnet's netmask (`255.255.255.0` or `255.255.0.0`), as a
    /// VM's network settings carry it.
    pub fn netmask(&self) -> String {
        match self.size {
            SubnetSize::Slash24 | SubnetSize::Bridged24 => "255.255.255.0".into(),
            SubnetSize::Slash16 => "255.255.0.0".into(),
        }
    }

    /// The subnet's `host`th address: `ip(0)` is the network address,
    /// `ip(1)` the usual gateway. For a /16, `host` counts on across the
    /// third octet (`ip(256)` is `127.N.1.0`).
    ///
    /// # Panics
    ///
    /// When `host` is outside the subnet (above 255 for a /24, 65,535 for a
    /// /16).
    pub fn ip(&self, host: u32) -> Ipv4Addr {
        ip(self.size, self.n, host)
    }
}

/// Subnet `n` of `size` in CIDR notation.
fn range(size: SubnetSize, n: u8) -> String {
    match size {
        SubnetSize::Slash24 | SubnetSize::Bridged24 => format!("{}/24", ip(size, n, 0)),
        SubnetSize::Slash16 => format!("{}/16", ip(size, n, 0)),
    }
}

/// Deletes every link holding an address in `lease`'s subnet (see
/// [`SubnetLease::acquire_bridged`]).
fn remove_stale_interfaces(lease: &SubnetLease) {
    let Ok(out) = std::process::Command::new("ip").args(["-j", "-4", "addr", "show"]).output()
    else {
        return;
    };
    let links: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let prefix = format!(
        "{}.",
        lease.ip(0).octets()[..3].iter().map(u8::to_string).collect::<Vec<_>>().join(".")
    );
    for link in links.as_array().into_iter().flatten() {
        let holds = link["addr_info"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|a| a["local"].as_str().is_some_and(|ip| ip.starts_with(&prefix)));
        if let (true, Some(name)) = (holds, link["ifname"].as_str()) {
            let _ = std::process::Command::new("ip").args(["link", "del", name]).status();
        }
    }
}

/// The `host`th address of subnet `n` of `size`.
fn ip(size: SubnetSize, n: u8, host: u32) -> Ipv4Addr {
    let (base, last) = match size {
        SubnetSize::Slash24 => ([127, SLASH24_OCTET, n, 0], 0xff),
        SubnetSize::Bridged24 => ([BRIDGED_PREFIX[0], BRIDGED_PREFIX[1], n, 0], 0xff),
        SubnetSize::Slash16 => ([127, n, 0, 0], 0xffff),
    };
    assert!(host <= last, "host {host} is outside {size:?} subnet {n}");
    Ipv4Addr::from(u32::from(Ipv4Addr::from(base)) | host)
}

/// Where the lease of subnet `n` of `size` is held: the subnet's
/// broadcast address.
fn lock_ip(size: SubnetSize, n: u8) -> Ipv4Addr {
    match size {
        SubnetSize::Slash24 => ip(size, n, 0xff),
        SubnetSize::Bridged24 => Ipv4Addr::new(127, BRIDGED_LOCK_OCTET, n, 0xff),
        SubnetSize::Slash16 => ip(size, n, 0xffff),
    }
}

impl fmt::Debug for SubnetLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SubnetLease").field(&self.range()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every lock address lies in its own subnet and in no other lease's,
    /// so leases of either size never overlap.
    #[test]
    fn lock_addresses_are_inside_their_own_subnet_only() {
        let all: Vec<(SubnetSize, u8)> =
            [SubnetSize::Slash24, SubnetSize::Slash16, SubnetSize::Bridged24]
                .into_iter()
                .flat_map(|s| s.candidates().into_iter().map(move |n| (s, n)))
                .collect();
        assert_eq!(all.len(), 240 + 252 + 240);
        // The loopback addresses a lease's lock may collide with.
        let contains = |(s, n): (SubnetSize, u8), ip: Ipv4Addr| {
            let o = ip.octets();
            match s {
                SubnetSize::Slash24 => o[..3] == [127, 77, n],
                SubnetSize::Slash16 => o[..2] == [127, n],
                SubnetSize::Bridged24 => o[..3] == [127, 78, n],
            }
        };
        for &(size, n) in &all {
            let lock = lock_ip(size, n);
            for &b in &all {
                assert_eq!(
                    contains(b, lock),
                    (size, n) == b,
                    "{size:?} {n}'s lock {lock} in {b:?}"
                );
            }
        }
        assert!(!SubnetSize::Slash16.candidates().contains(&77));
        for size in [SubnetSize::Slash24, SubnetSize::Slash16] {
            assert!(!size.candidates().contains(&0) && !size.candidates().contains(&255));
        }
        // The example cloud config's subnets are a developer's, not a test's.
        let examples = include_str!("../../examples/manifests/cloud-config.yml");
        for n in SubnetSize::Slash24.candidates() {
            assert!(!examples.contains(&format!("127.77.{n}.")), "127.77.{n} is the example's");
        }
    }

    #[test]
    fn two_leases_are_distinct_and_a_dropped_one_is_free_again() {
        let a = SubnetLease::acquire();
        let b = SubnetLease::acquire();
        assert_ne!(a.n(), b.n());
        assert_ne!(a.range(), b.range());
        let wide = SubnetLease::acquire_slash16();
        let other = SubnetLease::acquire_slash16();
        assert_ne!(wide.n(), other.n());
        assert_ne!(wide.n(), 77);
        let n = a.n();
        drop(a);
        let again =
            SubnetLease::try_lease(SubnetSize::Slash24, n).expect("a dropped lease is free");
        assert_eq!(again.range(), format!("127.77.{n}.0/24"));
    }

    #[test]
    fn a_held_lease_is_refused_to_another_acquirer() {
        let held = SubnetLease::acquire_slash16();
        let err = SubnetLease::try_lease(SubnetSize::Slash16, held.n()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        let narrow = SubnetLease::acquire();
        let err = SubnetLease::try_lease(SubnetSize::Slash24, narrow.n()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }

    /// The environment variable that makes [`child_binds_the_lock`] run.
    const CHILD_ENV: &str = "BOSH_SUBNET_LEASE_CHILD";

    /// A lease held by one process is refused to another: the lock is the
    /// kernel's, not this process's. The other process is this test binary
    /// again, running [`child_binds_the_lock`].
    #[test]
    fn a_lease_held_by_another_process_is_refused() {
        let held = SubnetLease::acquire();
        let run_child = |n: u8| {
            std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "subnet::tests::child_binds_the_lock",
                    "--ignored",
                    "--nocapture",
                ])
                .env(CHILD_ENV, n.to_string())
                .output()
                .unwrap()
        };
        let out = run_child(held.n());
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("1 passed"), "the child ran the probe: {stdout}");
        assert!(stdout.contains("child: refused"), "the child was refused {held:?}: {stdout}");
        let n = held.n();
        drop(held);
        let out = run_child(n);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("child: leased"),
            "the child leased subnet {n} once free: {stdout}"
        );
    }

    /// Run by [`a_lease_held_by_another_process_is_refused`] in a child
    /// process: tries to lease the /24 the parent names and says how it
    /// went. Does nothing when not run by it (`--run-ignored all`).
    #[test]
    #[ignore = "a child of a_lease_held_by_another_process_is_refused"]
    fn child_binds_the_lock() {
        let Ok(n) = std::env::var(CHILD_ENV) else { return };
        let n: u8 = n.parse().unwrap();
        match SubnetLease::try_lease(SubnetSize::Slash24, n) {
            Ok(_) => println!("child: leased"),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => println!("child: refused"),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn addresses() {
        assert_eq!(range(SubnetSize::Slash24, 30), "127.77.30.0/24");
        assert_eq!(ip(SubnetSize::Slash24, 30, 1), Ipv4Addr::new(127, 77, 30, 1));
        assert_eq!(lock_ip(SubnetSize::Slash24, 30), Ipv4Addr::new(127, 77, 30, 255));
        assert_eq!(range(SubnetSize::Slash16, 170), "127.170.0.0/16");
        assert_eq!(ip(SubnetSize::Slash16, 170, 258), Ipv4Addr::new(127, 170, 1, 2));
        assert_eq!(lock_ip(SubnetSize::Slash16, 170), Ipv4Addr::new(127, 170, 255, 255));
        let lease = SubnetLease::acquire();
        assert_eq!(lease.ip(20), ip(SubnetSize::Slash24, lease.n(), 20));
        assert_eq!(format!("{lease:?}"), format!("SubnetLease(\"127.77.{}.0/24\")", lease.n()));
    }

    #[test]
    #[should_panic(expected = "outside")]
    fn an_address_outside_the_subnet_panics() {
        ip(SubnetSize::Slash24, 3, 256);
    }
}
