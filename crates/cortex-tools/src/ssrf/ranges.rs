//! IP networks (CIDRs) and the table of address ranges the SSRF guard refuses (SPEC §17.4).
//!
//! Addresses are judged after canonicalisation: IPv4-mapped IPv6 (`::ffff:a.b.c.d`) is treated as the IPv4
//! address it carries, and IPv6 forms that embed an IPv4 address (IPv4-compatible `::a.b.c.d`, NAT64
//! `64:ff9b::/96`, 6to4 `2002::/16`) are judged by the embedded address as well.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IP network such as `10.0.0.0/8` or `::1/128`; used by allow rules and by the blocked-range table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// The network of `addr` with `prefix` leading bits; host bits are cleared.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Self, String> {
        let max = max_prefix(addr);
        if prefix > max {
            return Err(format!("prefix /{prefix} is longer than /{max}"));
        }
        let network = match addr {
            IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from_bits(v4.to_bits() & mask_v4(prefix))),
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & mask_v6(prefix))),
        };
        Ok(Self { network, prefix })
    }

    /// Whether `ip` lies in this network (an IPv4 network never contains an IPv6 address and vice versa).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => ip.to_bits() & mask_v4(self.prefix) == net.to_bits(),
            (IpAddr::V6(net), IpAddr::V6(ip)) => ip.to_bits() & mask_v6(self.prefix) == net.to_bits(),
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    /// `addr/prefix`, or a bare address meaning a single host (`/32` or `/128`).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| format!("`{addr}` is not an IP address"))?;
        let prefix = match prefix {
            Some(prefix) => prefix.parse().map_err(|_| format!("`{prefix}` is not a prefix length"))?,
            None => max_prefix(addr),
        };
        Self::new(addr, prefix)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

fn mask_v4(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask_v6(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Cidr {
    Cidr { network: IpAddr::V4(Ipv4Addr::new(a, b, c, d)), prefix }
}

const fn v6(segments: [u16; 8], prefix: u8) -> Cidr {
    let [a, b, c, d, e, f, g, h] = segments;
    Cidr { network: IpAddr::V6(Ipv6Addr::new(a, b, c, d, e, f, g, h)), prefix }
}

/// Refused IPv4 ranges, most specific first so the reason is the most precise one.
const BLOCKED_V4: &[(Cidr, &str)] = &[
    (v4(0, 0, 0, 0, 8), "an unspecified (\"this network\") address"),
    (v4(10, 0, 0, 0, 8), "a private address"),
    (v4(100, 64, 0, 0, 10), "a carrier-grade NAT address"),
    (v4(127, 0, 0, 0, 8), "a loopback address"),
    (v4(169, 254, 169, 254, 32), "the cloud metadata endpoint (link-local)"),
    (v4(169, 254, 0, 0, 16), "a link-local address"),
    (v4(172, 16, 0, 0, 12), "a private address"),
    (v4(192, 0, 0, 0, 24), "an IETF protocol assignment address"),
    (v4(192, 0, 2, 0, 24), "a documentation address"),
    (v4(192, 88, 99, 0, 24), "a 6to4 relay anycast address"),
    (v4(192, 168, 0, 0, 16), "a private address"),
    (v4(198, 18, 0, 0, 15), "a benchmarking address"),
    (v4(198, 51, 100, 0, 24), "a documentation address"),
    (v4(203, 0, 113, 0, 24), "a documentation address"),
    (v4(224, 0, 0, 0, 4), "a multicast address"),
    (v4(255, 255, 255, 255, 32), "the broadcast address"),
    (v4(240, 0, 0, 0, 4), "a reserved address"),
];

/// Refused IPv6 ranges (forms embedding IPv4 are handled by [`embedded_v4`]).
const BLOCKED_V6: &[(Cidr, &str)] = &[
    (v6([0, 0, 0, 0, 0, 0, 0, 0], 128), "an unspecified address"),
    (v6([0, 0, 0, 0, 0, 0, 0, 1], 128), "a loopback address"),
    (v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48), "a local-use NAT64 address"),
    (v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64), "a discard-only address"),
    (v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32), "a documentation address"),
    (v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23), "an IETF protocol assignment address"),
    (v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7), "a unique-local (private) address"),
    (v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), "a link-local address"),
    (v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10), "a site-local address"),
    (v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), "a multicast address"),
];

const IPV4_COMPATIBLE: Cidr = v6([0, 0, 0, 0, 0, 0, 0, 0], 96);
const NAT64: Cidr = v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96);
const SIX_TO_FOUR: Cidr = v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16);

/// Why `ip` must not be contacted, as a sentence naming the rule ("127.0.0.1 is a loopback address"),
/// or `None` for a public address.
pub(crate) fn blocked_reason(ip: IpAddr) -> Option<String> {
    let canonical = ip.to_canonical();
    if let Some(kind) = blocked_kind(canonical) {
        return Some(if canonical == ip {
            format!("{ip} is {kind}")
        } else {
            format!("{ip} is IPv4-mapped {canonical}, {kind}")
        });
    }
    let IpAddr::V6(v6) = canonical else {
        return None;
    };
    let embedded = embedded_v4(v6)?;
    blocked_kind(IpAddr::V4(embedded)).map(|kind| format!("{ip} embeds {embedded}, {kind}"))
}

fn blocked_kind(ip: IpAddr) -> Option<&'static str> {
    let table = if ip.is_ipv4() { BLOCKED_V4 } else { BLOCKED_V6 };
    table.iter().find(|(cidr, _)| cidr.contains(ip)).map(|(_, kind)| *kind)
}

/// The IPv4 address carried by an IPv4-compatible, NAT64 or 6to4 IPv6 address.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = ip.to_bits();
    if IPV4_COMPATIBLE.contains(IpAddr::V6(ip)) || NAT64.contains(IpAddr::V6(ip)) {
        return Some(Ipv4Addr::from_bits(bits as u32));
    }
    if SIX_TO_FOUR.contains(IpAddr::V6(ip)) {
        return Some(Ipv4Addr::from_bits((bits >> 80) as u32));
    }
    None
}
