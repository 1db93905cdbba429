//! Address ranges, as the gateway's `trusted_proxies` and the server's
//! token `bound_cidrs` name them.

use std::net::IpAddr;

/// An address range (`10.0.0.0/8`, `2001:db8::/32`, or one address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    bits: u8,
}

impl Cidr {
    /// `addr` or `addr/bits` (decimal digits only). An IPv4-mapped IPv6
    /// range (`::ffff:10.0.0.0/104`) is the IPv4 range it maps.
    pub fn parse(s: &str) -> Option<Cidr> {
        let (addr, bits) = match s.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (s, None),
        };
        let net: IpAddr = addr.trim().parse().ok()?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => max,
            Some(b) => {
                let b = b.trim();
                if b.is_empty() || b.len() > 3 || !b.bytes().all(|c| c.is_ascii_digit()) {
                    return None;
                }
                b.parse::<u8>().ok().filter(|&b| b <= max)?
            }
        };
        if let IpAddr::V6(v6) = net
            && let Some(v4) = v6.to_ipv4_mapped()
            && bits >= 96
        {
            return Some(Cidr {
                net: IpAddr::V4(v4),
                bits: bits - 96,
            });
        }
        Some(Cidr { net, bits })
    }

    /// Whether every address of `other` is in this range.
    pub fn covers(&self, other: &Cidr) -> bool {
        self.bits <= other.bits && self.contains(other.net)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip.to_canonical()) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.bits)).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.bits))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Cidr {
    /// The range's network address and prefix length: `10.0.0.0/8` (the
    /// host bits of `10.1.2.3/8` cleared), `192.0.2.7/32` for one address.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let net = match self.net {
            IpAddr::V4(n) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.bits)).unwrap_or(0);
                IpAddr::V4((u32::from(n) & mask).into())
            }
            IpAddr::V6(n) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.bits))
                    .unwrap_or(0);
                IpAddr::V6((u128::from(n) & mask).into())
            }
        };
        write!(f, "{net}/{}", self.bits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_print_canonically_and_contain_their_addresses() {
        let c = |s: &str| Cidr::parse(s).unwrap();
        assert_eq!(c("10.1.2.3/8").to_string(), "10.0.0.0/8");
        assert_eq!(c("192.0.2.7").to_string(), "192.0.2.7/32");
        assert_eq!(c("2001:db8::1/32").to_string(), "2001:db8::/32");
        assert_eq!(c("0.0.0.0/0").to_string(), "0.0.0.0/0");
        assert!(c("10.0.0.0/8").contains("10.9.9.9".parse().unwrap()));
        assert!(!c("10.0.0.0/8").contains("11.0.0.1".parse().unwrap()));
        // an IPv4-mapped IPv6 peer is its IPv4 address
        assert!(c("127.0.0.0/8").contains("::ffff:127.0.0.1".parse().unwrap()));
        // the IPv4 range an IPv4-mapped IPv6 range names
        assert_eq!(c("::ffff:127.0.0.1/128").to_string(), "127.0.0.1/32");
        assert!(c("::ffff:10.0.0.0/104").contains("10.1.2.3".parse().unwrap()));
        for bad in [
            "10.0.0.0/33",
            "x",
            "10.0.0.0/",
            "::/129",
            "",
            "127.0.0.1/+8",
            "1.2.3.4/ 8x",
            "1.2.3.4/0008",
        ] {
            assert!(Cidr::parse(bad).is_none(), "{bad}");
        }
    }
}
