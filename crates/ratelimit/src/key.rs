//! Rate-limit keys. Every variable part is length-prefixed (`<len>:<bytes>`), so no value a
//! client controls (a route, a subject) can make two different keys equal.

use std::net::IpAddr;

/// Builders for the keys the gateway limits by.
///
/// Keys are stored verbatim (in memory, and in Redis under `palisade:rl:`), so they must never
/// contain a secret: pass an API key's *identifier*, never the key itself.
#[derive(Debug)]
pub struct Key;

impl Key {
    /// Per client address (gateway step 6). IPv4-mapped IPv6 addresses count as their IPv4
    /// address, and IPv6 addresses are limited per /64, the smallest prefix a single subscriber
    /// is normally given — otherwise one client could rotate through 2^64 keys.
    pub fn peer(ip: IpAddr) -> String {
        // dotted quad written directly: `format!` costs more than the rest of
        // a local rate-limit check
        let v4 = |a: std::net::Ipv4Addr| {
            let mut out = String::with_capacity(20);
            out.push_str("peer:");
            for (i, o) in a.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                crate::push_u64(&mut out, u64::from(o));
            }
            out
        };
        match ip {
            IpAddr::V4(a) => v4(a),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(a) => v4(a),
                None => {
                    let prefix =
                        std::net::Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX));
                    format!("peer:{prefix}/64")
                }
            },
        }
    }

    /// Per authenticated subject on a route (gateway step 9).
    pub fn principal(route: &str, subject: &str) -> String {
        compose("principal", &[route, subject])
    }

    /// Per API key (by its public identifier) on a route (gateway step 9).
    pub fn api_key(route: &str, id: &str) -> String {
        compose("apikey", &[route, id])
    }

    /// Per route, all consumers together.
    pub fn route(route: &str) -> String {
        compose("route", &[route])
    }
}

fn compose(kind: &str, parts: &[&str]) -> String {
    let mut out =
        String::with_capacity(kind.len() + parts.iter().map(|p| p.len() + 8).sum::<usize>());
    out.push_str(kind);
    for part in parts {
        out.push(':');
        crate::push_u64(&mut out, part.len() as u64);
        out.push(':');
        out.push_str(part);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(
            Key::peer("203.0.113.7".parse().unwrap()),
            "peer:203.0.113.7"
        );
        assert_eq!(
            Key::peer("::ffff:203.0.113.7".parse().unwrap()),
            "peer:203.0.113.7"
        );
        assert_eq!(
            Key::peer("2001:db8:1:2:aaaa:bbbb:cccc:dddd".parse().unwrap()),
            "peer:2001:db8:1:2::/64"
        );
        assert_eq!(
            Key::peer("2001:db8:1:2::1".parse().unwrap()),
            Key::peer("2001:db8:1:2:ffff::9".parse().unwrap())
        );
        assert_ne!(
            Key::peer("2001:db8:1:2::1".parse().unwrap()),
            Key::peer("2001:db8:1:3::1".parse().unwrap())
        );
        assert_eq!(
            Key::principal("/orders", "alice"),
            "principal:7:/orders:5:alice"
        );
        assert_eq!(Key::api_key("/orders", "ak_1"), "apikey:7:/orders:4:ak_1");
        assert_eq!(Key::route("/orders"), "route:7:/orders");
        // the hand-written dotted quad is the standard text form
        for a in [
            "0.0.0.0",
            "255.255.255.255",
            "10.0.0.1",
            "192.168.100.9",
            "1.22.3.200",
        ] {
            assert_eq!(Key::peer(a.parse().unwrap()), format!("peer:{a}"));
        }
    }

    #[test]
    fn separators_in_values_cannot_collide() {
        // Without length prefixes these would both be "principal:/a:b:c".
        assert_ne!(Key::principal("/a:b", "c"), Key::principal("/a", "b:c"));
        assert_ne!(Key::principal("/a:1:b", "c"), Key::principal("/a", "b:1:c"));
        assert_ne!(Key::api_key("r", "x"), Key::principal("r", "x"));
        assert_ne!(Key::route("5:alice"), Key::principal("", "alice"));
    }
}
