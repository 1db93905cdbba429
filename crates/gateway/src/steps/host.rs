//! The request's host, made canonical once (pipeline step 7): routing,
//! policy, the log and the forwarded `Host` all use this one value.

use hyper::Request;
use hyper::header;

use crate::error::GatewayError;

/// The request's host, canonical: `host` for routing, policy and the log;
/// `authority` (the host and the port the client named, if any) for the
/// forwarded `Host`. A request that names no host is refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CanonicalHost {
    pub host: String,
    pub authority: String,
}

impl Authority {
    fn canonical(self) -> CanonicalHost {
        let authority = match self.port {
            Some(p) => format!("{}:{p}", self.host),
            None => self.host.clone(),
        };
        CanonicalHost {
            host: self.host,
            authority,
        }
    }
}

/// A host and port as a request names them, checked and canonical.
#[derive(Debug, PartialEq, Eq)]
struct Authority {
    /// Lowercase, without a trailing dot; IPv6 literals keep their brackets.
    host: String,
    port: Option<u16>,
}

/// `host[:port]` (a reg-name, an IPv4 address or a bracketed IPv6 literal),
/// nothing else: no userinfo, no path, no empty host.
fn parse_authority(s: &str) -> Result<Authority, GatewayError> {
    let bad = || GatewayError::InvalidHost("invalid Host");
    if s.contains('@') {
        return Err(GatewayError::InvalidHost("userinfo in the host"));
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (lit, after) = rest.split_once(']').ok_or_else(bad)?;
        if lit.is_empty()
            || !lit
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return Err(bad());
        }
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(bad)?),
        };
        (format!("[{}]", lit.to_ascii_lowercase()), port)
    } else {
        let (h, p) = match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        };
        let h = h.strip_suffix('.').unwrap_or(h);
        if h.is_empty()
            || !h
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            || h.starts_with('.')
            || h.ends_with('.')
            || h.contains("..")
        {
            return Err(bad());
        }
        (h.to_ascii_lowercase(), p)
    };
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(p.parse::<u16>().map_err(|_| bad())?)
        }
        Some(_) => return Err(bad()),
    };
    Ok(Authority { host, port })
}

/// The request's host, canonical (lowercase, no trailing dot, no port),
/// once, for routing, policy and the log. Ambiguity is refused: two `Host`
/// headers, or a target authority (absolute form, HTTP/2 `:authority`)
/// naming another host than `Host` (RFC 9112 §3.2.2 would let the target
/// win; a service behind us might not).
pub fn canonical_host<B>(req: &Request<B>) -> Result<CanonicalHost, GatewayError> {
    let mut all = req.headers().get_all(header::HOST).iter();
    let first = all.next();
    if all.next().is_some() {
        return Err(GatewayError::InvalidHost("more than one Host header"));
    }
    let from_header = match first {
        Some(v) => Some(parse_authority(
            v.to_str()
                .map_err(|_| GatewayError::InvalidHost("invalid Host"))?,
        )?),
        None => None,
    };
    let from_target = req
        .uri()
        .authority()
        .map(|a| parse_authority(a.as_str()))
        .transpose()?;
    match (from_header, from_target) {
        (Some(h), Some(t))
            if h.host != t.host || (h.port.is_some() && t.port.is_some() && h.port != t.port) =>
        {
            Err(GatewayError::InvalidHost(
                "the request target's authority differs from Host",
            ))
        }
        (Some(a), _) => Ok(a.canonical()),
        // HTTP/2 names the host in `:authority`; an HTTP/1.x request must
        // carry Host even with an absolute-form target (RFC 9112 §3.2)
        (None, Some(a)) if req.version() >= hyper::Version::HTTP_2 => Ok(a.canonical()),
        (None, Some(_)) => Err(GatewayError::InvalidHost("no Host header")),
        // nothing to route, authorise and forward on: the service would
        // see a Host (its own address) that no policy saw
        (None, None) => Err(GatewayError::InvalidHost("no Host header")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_is_canonical_and_unambiguous() {
        let host = |h: &[&str], uri: &str| {
            let mut b = Request::builder().uri(uri);
            for h in h {
                b = b.header(header::HOST, *h);
            }
            canonical_host(&b.body(()).unwrap())
        };
        let ok = |h: &[&str], uri: &str| host(h, uri).unwrap().host;
        assert_eq!(
            host(&["API.Example.:8443"], "/").unwrap().authority,
            "api.example:8443"
        );
        assert_eq!(host(&["[::1]"], "/").unwrap().authority, "[::1]");
        assert_eq!(ok(&["API.Example:8443"], "/"), "api.example");
        assert_eq!(ok(&["api.example"], "/"), "api.example");
        assert_eq!(ok(&["api.example."], "/"), "api.example");
        assert_eq!(ok(&["Api.Example.:80"], "/"), "api.example");
        assert_eq!(ok(&["[::1]:8443"], "/"), "[::1]");
        assert_eq!(ok(&["[::1]"], "/"), "[::1]");
        assert_eq!(ok(&["10.0.0.1:80"], "/"), "10.0.0.1");
        // HTTP/2 without Host: `:authority`
        let h2 = |uri: &str| {
            canonical_host(
                &Request::builder()
                    .version(hyper::Version::HTTP_2)
                    .uri(uri)
                    .body(())
                    .unwrap(),
            )
        };
        assert_eq!(
            h2("https://Orders.Example:443/x").unwrap().host,
            "orders.example"
        );
        assert_eq!(
            ok(&["orders.example"], "https://Orders.Example/x"),
            "orders.example"
        );
        // no host at all, or HTTP/1.1 with only an absolute-form target
        let missing = Err(GatewayError::InvalidHost("no Host header"));
        assert_eq!(host(&[], "/x"), missing);
        assert_eq!(host(&[], "https://orders.example/x"), missing);
        assert_eq!(h2("/x"), missing);
        let invalid = GatewayError::InvalidHost("invalid Host");
        for bad in [
            "a b",
            "evil/x",
            "",
            ".",
            "a..b",
            // two trailing dots: an empty last label (fuzzing found it
            // canonicalised to "b.", which is not canonical)
            "b..",
            "localhost..:8443",
            ".a",
            "a:",
            "a:x",
            "a:123456",
            "[zz]",
            "[::1",
            "ex%61mple",
        ] {
            assert_eq!(host(&[bad], "/"), Err(invalid.clone()), "{bad:?}");
        }
        assert_eq!(
            host(&["a@evil:1"], "/"),
            Err(GatewayError::InvalidHost("userinfo in the host"))
        );
        assert_eq!(
            host(&["a.example", "b.example"], "/"),
            Err(GatewayError::InvalidHost("more than one Host header"))
        );
        assert_eq!(
            host(&["a.example"], "http://b.example/x"),
            Err(GatewayError::InvalidHost(
                "the request target's authority differs from Host"
            ))
        );
        assert_eq!(
            host(&["a.example:1"], "http://a.example:2/x"),
            Err(GatewayError::InvalidHost(
                "the request target's authority differs from Host"
            ))
        );
    }
}
