//! IP address management for manual networks, as BOSH does it: a subnet's
//! `range` minus its network and broadcast addresses, its gateway and its
//! `reserved` ranges is the pool; `static` ranges are handed out only as
//! manifests' `static_ips`; everything else is dynamic. Compile VMs and
//! instances draw from the same pools, so callers pass every address in use.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use bosh_api::manifest::Subnet;
use bosh_api::manifest::ip::{IpRange, parse_ip, parse_range};

/// A subnet's pools, parsed once.
#[derive(Debug, Clone)]
pub struct Pools {
    range: IpRange,
    gateway: Option<Ipv4Addr>,
    reserved: Vec<IpRange>,
    statics: Vec<IpRange>,
}

impl Pools {
    /// Parses a subnet (errors name what did not parse).
    pub fn of(subnet: &Subnet) -> Result<Pools, String> {
        let range = parse_range(subnet.range.as_deref().ok_or("the subnet has no range")?)?;
        let parse_all =
            |v: &[String]| v.iter().map(|r| parse_range(r)).collect::<Result<Vec<_>, _>>();
        Ok(Pools {
            range,
            gateway: subnet.gateway.as_deref().map(parse_ip).transpose()?,
            reserved: parse_all(&subnet.reserved)?,
            statics: parse_all(&subnet.r#static)?,
        })
    }

    fn usable(&self, ip: Ipv4Addr) -> bool {
        self.range.contains(ip)
            && ip != self.range.first
            && (ip != self.range.last || self.range.len() == 1)
            && Some(ip) != self.gateway
            && !self.reserved.iter().any(|r| r.contains(ip))
    }

    /// Whether `ip` may be given out dynamically from this subnet.
    pub fn is_dynamic(&self, ip: Ipv4Addr) -> bool {
        self.usable(ip) && !self.statics.iter().any(|r| r.contains(ip))
    }

    /// Whether `ip` is one of this subnet's static addresses.
    pub fn is_static(&self, ip: Ipv4Addr) -> bool {
        self.usable(ip) && self.statics.iter().any(|r| r.contains(ip))
    }

    /// The lowest dynamic address not in `in_use`.
    pub fn next_dynamic(&self, in_use: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
        self.range.iter().find(|ip| self.is_dynamic(*ip) && !in_use.contains(ip))
    }

    /// How many dynamic addresses the subnet has, counting no further than
    /// `limit` (a /8 has 16 million; a check only needs to know "enough").
    pub fn dynamic_count(&self, limit: u64) -> u64 {
        self.range.iter().filter(|ip| self.is_dynamic(*ip)).take(limit as usize).count() as u64
    }
}

/// Hands out a subnet's dynamic addresses lowest first, in one pass over
/// the range for a whole plan: the cursor only moves forward because the
/// addresses in use only grow while a plan is made. (Searching from the
/// start for every instance made planning quadratic in the instance count.)
#[derive(Debug, Clone)]
pub struct Allocator {
    pools: Pools,
    next: u64,
}

impl Allocator {
    /// An allocator over `pools`, starting at the lowest address.
    pub fn new(pools: Pools) -> Allocator {
        let next = u64::from(u32::from(pools.range.first));
        Allocator { pools, next }
    }

    /// The lowest dynamic address at or after the cursor that is not in
    /// `in_use`; the caller adds it to `in_use`.
    pub fn next(&mut self, in_use: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
        let last = u64::from(u32::from(self.pools.range.last));
        while self.next <= last {
            let ip = Ipv4Addr::from(self.next as u32);
            self.next += 1;
            if self.pools.is_dynamic(ip) && !in_use.contains(&ip) {
                return Some(ip);
            }
        }
        None
    }
}

/// Addresses planned by a holder (a deployment) that may not be written to
/// the store yet. A deployment plans its addresses under this book's lock,
/// records them, and lets go before rendering its templates (slow, and
/// possibly stuck until a timeout); the next planner, and every compile VM
/// claim, treats them as taken. A holder's entry is replaced by its next
/// plan and removed when the deployment is deleted.
#[derive(Debug, Default)]
pub struct AddressBook {
    reserved: tokio::sync::Mutex<Reservations>,
}

/// Planned addresses by holder.
#[derive(Debug, Default)]
pub struct Reservations(BTreeMap<String, BTreeSet<Ipv4Addr>>);

impl Reservations {
    /// Every address reserved by a holder other than `holder`.
    pub fn others(&self, holder: &str) -> impl Iterator<Item = Ipv4Addr> + '_ {
        let holder = holder.to_string();
        self.0.iter().filter(move |(h, _)| **h != holder).flat_map(|(_, ips)| ips.iter().copied())
    }

    /// Replaces `holder`'s reservation.
    pub fn set(&mut self, holder: &str, ips: BTreeSet<Ipv4Addr>) {
        self.0.insert(holder.to_string(), ips);
    }

    /// Forgets `holder`'s reservation.
    pub fn remove(&mut self, holder: &str) {
        self.0.remove(holder);
    }
}

impl AddressBook {
    /// Locks the book; hold it only while listing, planning and recording,
    /// never across rendering, CPI or agent calls.
    pub async fn lock(&self) -> tokio::sync::MutexGuard<'_, Reservations> {
        self.reserved.lock().await
    }
}

/// A free dynamic address in `subnet`, or `None` when it is full.
pub fn pick_ip(subnet: &Subnet, in_use: &BTreeSet<Ipv4Addr>) -> Result<Option<Ipv4Addr>, String> {
    Ok(Pools::of(subnet)?.next_dynamic(in_use))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subnet() -> Subnet {
        Subnet {
            range: Some("127.77.5.0/28".into()),
            gateway: Some("127.77.5.1".into()),
            reserved: vec!["127.77.5.2 - 127.77.5.4".into()],
            r#static: vec!["127.77.5.5 - 127.77.5.6".into()],
            ..Default::default()
        }
    }

    /// Network, broadcast, gateway, reserved and static addresses are never handed out dynamically.
    #[test]
    fn dynamic_pool_skips_special_reserved_and_static_addresses() {
        let p = Pools::of(&subnet()).unwrap();
        let mut used = BTreeSet::new();
        let mut got = Vec::new();
        while let Some(ip) = p.next_dynamic(&used) {
            used.insert(ip);
            got.push(ip.to_string());
        }
        let want: Vec<String> = (7..=14).map(|i| format!("127.77.5.{i}")).collect();
        assert_eq!(got, want);
        assert!(p.is_static("127.77.5.5".parse().unwrap()));
        assert!(!p.is_dynamic("127.77.5.5".parse().unwrap()));
    }

    /// The allocator gives the same addresses as repeated lowest-free
    /// searches, skips addresses in use, and counts what is free.
    #[test]
    fn allocator_matches_lowest_free_and_counts_free() {
        let p = Pools::of(&subnet()).unwrap();
        let mut used: BTreeSet<Ipv4Addr> = ["127.77.5.8".parse().unwrap()].into();
        assert_eq!(p.dynamic_count(u64::MAX), 8);
        assert_eq!(p.dynamic_count(3), 3);
        let mut a = Allocator::new(p.clone());
        let mut got = Vec::new();
        while let Some(ip) = a.next(&used) {
            assert_eq!(Some(ip), p.next_dynamic(&used));
            used.insert(ip);
            got.push(ip.to_string());
        }
        assert_eq!(got.len(), 7);
        assert!(!got.contains(&"127.77.5.8".to_string()));
    }
}

/// The netmask of a CIDR range (`10.0.0.0/24` ⇒ `255.255.255.0`); empty
/// for other spellings.
pub fn netmask(range: &str) -> String {
    match range.split_once('/').and_then(|(_, b)| b.trim().parse::<u32>().ok()) {
        Some(bits) if bits <= 32 => {
            let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits) };
            Ipv4Addr::from(mask).to_string()
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod netmask_tests {
    /// Netmasks come from CIDR ranges; other spellings give none.
    #[test]
    fn netmask_from_cidr() {
        assert_eq!(super::netmask("127.77.5.0/24"), "255.255.255.0");
        assert_eq!(super::netmask("10.0.0.0/16"), "255.255.0.0");
        assert_eq!(super::netmask("10.0.0.1 - 10.0.0.9"), "");
    }
}
