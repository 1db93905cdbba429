//! The client's address when the gateway runs behind proxies it trusts
//! (`trusted_proxies`, as nginx's `set_real_ip_from` with
//! `real_ip_recursive on`, Envoy's trusted hops or Kong's `trusted_ips`).
//!
//! The TCP peer is the client unless it is a trusted proxy. Then
//! `X-Forwarded-For` is read from the right: each address was appended by
//! the hop to its right, so it is believed only while that hop is trusted.
//! The first untrusted address is the client; an entry that is not an IP
//! address stops the walk (the last believed address stands). A client
//! that writes its own `X-Forwarded-For` can only add entries to the left
//! of what a trusted proxy appended, and those are never reached.

use std::net::IpAddr;

use hyper::HeaderMap;

use crate::steps::headers::X_FORWARDED_FOR;

pub use palisade_core::net::Cidr;

/// The client address of a request that arrived from `peer`.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    let peer = peer.to_canonical();
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if trusted.is_empty() || !is_trusted(peer) {
        return peer;
    }
    let mut client = peer;
    // the last header line holds the entries appended last
    for value in headers.get_all(X_FORWARDED_FOR).iter().rev() {
        let Ok(v) = value.to_str() else {
            return client;
        };
        for entry in v.rsplit(',') {
            match entry.trim().parse::<IpAddr>() {
                Ok(ip) => client = ip.to_canonical(),
                Err(_) => return client,
            }
            if !is_trusted(client) {
                return client;
            }
        }
    }
    client
}

/// The address as text, as `Display` writes it; IPv4 without the
/// formatting machinery (this runs for every request: the log's `client_ip`,
/// the upstream's `X-Forwarded-For`).
pub fn ip_text(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let mut s = String::with_capacity(15);
            let mut digits = itoa::Buffer::new();
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    s.push('.');
                }
                s.push_str(digits.format(octet));
            }
            s
        }
        IpAddr::V6(_) => ip.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(X_FORWARDED_FOR, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn ranges() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains(ip("10.255.0.1")));
        assert!(!c.contains(ip("11.0.0.1")));
        // an IPv4-mapped IPv6 peer is the IPv4 address
        assert!(c.contains(ip("::ffff:10.1.2.3")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        let one = Cidr::parse("192.0.2.7").unwrap();
        assert!(one.contains(ip("192.0.2.7")) && !one.contains(ip("192.0.2.8")));
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains(ip("2001:db8:1::5")) && !v6.contains(ip("2001:db9::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "example.com",
            "",
            "10.0.0.0/x",
        ] {
            assert_eq!(Cidr::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_client_is_the_first_untrusted_address_from_the_right() {
        let lb = [Cidr::parse("10.0.0.0/8").unwrap()];
        let peer = ip("10.0.0.2");
        // allow: the trusted balancer's entry is the client
        assert_eq!(
            client_ip(peer, &xff(&["203.0.113.9"]), &lb),
            ip("203.0.113.9")
        );
        // a client-written entry to the left of it is never reached
        assert_eq!(
            client_ip(peer, &xff(&["198.51.100.1, 203.0.113.9"]), &lb),
            ip("203.0.113.9")
        );
        // trusted hops are skipped, across header lines
        assert_eq!(
            client_ip(peer, &xff(&["203.0.113.9", "10.1.1.1 , 10.2.2.2"]), &lb),
            ip("203.0.113.9")
        );
        // every entry trusted: the leftmost
        assert_eq!(client_ip(peer, &xff(&["10.9.9.9"]), &lb), ip("10.9.9.9"));
        // no header, or a first entry that is no address: the peer
        assert_eq!(client_ip(peer, &HeaderMap::new(), &lb), peer);
        assert_eq!(client_ip(peer, &xff(&["unknown"]), &lb), peer);
        assert_eq!(client_ip(peer, &xff(&["1.2.3.4:80"]), &lb), peer);
        // garbage further left stops at the last believed address
        assert_eq!(
            client_ip(peer, &xff(&["evil, 10.3.3.3"]), &lb),
            ip("10.3.3.3")
        );
        // deny: a peer that is not trusted is the client whatever it sends
        let outsider = ip("192.0.2.50");
        assert_eq!(client_ip(outsider, &xff(&["203.0.113.9"]), &lb), outsider);
        // and nothing is trusted by default
        assert_eq!(client_ip(peer, &xff(&["203.0.113.9"]), &[]), peer);
    }

    #[test]
    fn ip_text_is_what_display_writes() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.200.30.4",
            "255.255.255.255",
            "::1",
            "::ffff:192.0.2.1",
            "2001:db8::8:800:200c:417a",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_text(ip), ip.to_string());
        }
    }
}
