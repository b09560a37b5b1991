//! IPv4 ranges as cloud configs write them: `10.0.0.0/24`, `10.0.0.10 - 10.0.0.20`, `10.0.0.5`.
//!
//! IPv6 is refused with a clear error for now: the local CPI and every
//! network bosh-rs tests against are IPv4.

use std::{fmt, net::Ipv4Addr};

/// An inclusive range of IPv4 addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpRange {
    /// First address in the range.
    pub first: Ipv4Addr,
    /// Last address in the range (inclusive).
    pub last: Ipv4Addr,
}

impl IpRange {
    /// Whether `ip` lies inside the range.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.first <= ip && ip <= self.last
    }

    /// Whether all of `other` lies inside this range.
    pub fn covers(&self, other: &IpRange) -> bool {
        self.contains(other.first) && self.contains(other.last)
    }

    /// Whether the two ranges share an address.
    pub fn overlaps(&self, other: &IpRange) -> bool {
        self.first <= other.last && other.first <= self.last
    }

    /// Number of addresses in the range.
    pub fn len(&self) -> u64 {
        u64::from(u32::from(self.last)) - u64::from(u32::from(self.first)) + 1
    }

    /// Always false: a range holds at least one address.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The addresses in order.
    pub fn iter(&self) -> impl Iterator<Item = Ipv4Addr> + use<> {
        (u32::from(self.first)..=u32::from(self.last)).map(Ipv4Addr::from)
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{} - {}", self.first, self.last)
        }
    }
}

/// Parses one IPv4 address; the error says what was expected.
pub fn parse_ip(s: &str) -> Result<Ipv4Addr, String> {
    let t = s.trim();
    if t.contains(':') {
        return Err(format!("IPv6 addresses are not supported yet, found {t:?}"));
    }
    t.parse().map_err(|_| format!("expected an IPv4 address, found {t:?}"))
}

/// Parses a CIDR (`10.0.0.0/24`), a range (`10.0.0.10 - 10.0.0.20`) or a single IP.
pub fn parse_range(s: &str) -> Result<IpRange, String> {
    let t = s.trim();
    if let Some((addr, bits)) = t.split_once('/') {
        let base = parse_ip(addr)?;
        let bits: u32 = bits
            .trim()
            .parse()
            .ok()
            .filter(|b| *b <= 32)
            .ok_or_else(|| format!("expected a prefix length 0-32 in {t:?}"))?;
        let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits) };
        let net = u32::from(base) & mask;
        if net != u32::from(base) {
            return Err(format!(
                "{t:?} has host bits set; the network is {}/{bits}",
                Ipv4Addr::from(net)
            ));
        }
        return Ok(IpRange { first: Ipv4Addr::from(net), last: Ipv4Addr::from(net | !mask) });
    }
    if let Some((a, b)) = t.split_once('-') {
        let (first, last) = (parse_ip(a)?, parse_ip(b)?);
        if first > last {
            return Err(format!("range {t:?} ends before it starts"));
        }
        return Ok(IpRange { first, last });
    }
    let ip = parse_ip(t).map_err(|_| {
        format!(r#"expected an IP, a range like "10.0.0.10 - 10.0.0.20" or a CIDR, found {t:?}"#)
    })?;
    Ok(IpRange { first: ip, last: ip })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    /// CIDRs, dash ranges and single IPs all parse to inclusive ranges.
    #[test]
    fn ranges_parse_in_all_three_spellings() {
        let cidr = parse_range("127.77.0.0/16").unwrap();
        assert_eq!((cidr.first, cidr.last), (ip("127.77.0.0"), ip("127.77.255.255")));
        let dash = parse_range("10.0.0.10 - 10.0.0.20").unwrap();
        assert_eq!(dash.len(), 11);
        assert!(dash.contains(ip("10.0.0.20")) && !dash.contains(ip("10.0.0.21")));
        let single = parse_range("10.0.0.5").unwrap();
        assert_eq!(single.to_string(), "10.0.0.5");
        assert!(cidr.covers(&parse_range("127.77.0.10-127.77.0.20").unwrap()));
    }

    /// Bad ranges are refused with a reason, IPv6 included.
    #[test]
    fn bad_ranges_are_refused_with_a_reason() {
        assert!(parse_range("10.0.0.20 - 10.0.0.10").unwrap_err().contains("ends before"));
        assert!(parse_range("10.0.0.1/24").unwrap_err().contains("host bits"));
        assert!(parse_range("10.0.0.0/33").unwrap_err().contains("prefix length"));
        assert!(parse_range("fd00::/64").unwrap_err().contains("IPv6"));
        assert!(parse_range("ten").unwrap_err().contains("expected an IP"));
    }
}
