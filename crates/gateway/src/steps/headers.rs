//! Header hygiene shared by the steps: what never crosses the gateway
//! (hop-by-hop headers, client copies of forwarding and meaning-changing
//! headers, `_` spellings) and how HTTP/2 cookie crumbs become one line.

use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};

// Header names as constants: a `&str` name is parsed on every use.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Headers that belong to one connection and are never forwarded (RFC 9110
/// §7.6.1): `Connection`, `Keep-Alive`, `Proxy-Connection`,
/// `Proxy-Authenticate`, `Proxy-Authorization`, `TE`, `Trailer`,
/// `Transfer-Encoding` and `Upgrade`.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Headers a client may not set: forwarding headers (the gateway is the
/// edge; X-Forwarded-For/-Proto are replaced), and headers that change a
/// request's meaning in common frameworks (Express's method-override, IIS
/// and Symfony's `X-Original-URL` / `X-Rewrite-URL`, prefix and port
/// rewriting): a GET authorised on one route must not become a DELETE or
/// another path behind the gateway. Also the other spellings frameworks
/// read the client address, scheme or host from (`X-Client-IP`, which
/// npm's request-ip reads before X-Forwarded-For; `X-Forwarded-Ssl` in
/// Rack; `X-Host`), identities that authenticating proxies set
/// (oauth2-proxy's `X-Forwarded-User` / `X-Auth-Request-*`, `Remote-User`),
/// `Proxy` (httpoxy: CGI turns it into `HTTP_PROXY`) and
/// `X-Middleware-Subrequest` (Next.js middleware bypass, CVE-2025-29927).
/// A route's own `forward_identity` headers are set after this removal.
pub fn untrusted_forwarding(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "forwarded"
            | "x-real-ip"
            | "x-forwarded-host"
            | "x-forwarded-server"
            | "x-forwarded-prefix"
            | "x-forwarded-port"
            | "x-forwarded-uri"
            | "x-forwarded-path"
            | "x-http-method-override"
            | "x-http-method"
            | "x-method-override"
            | "x-original-method"
            | "x-original-url"
            | "x-rewrite-url"
            | "x-original-uri"
            | "proxy"
            | "x-middleware-subrequest"
            | "x-client-ip"
            | "true-client-ip"
            | "cf-connecting-ip"
            | "fastly-client-ip"
            | "x-cluster-client-ip"
            | "forwarded-for"
            | "x-forwarded"
            | "x-originating-ip"
            | "x-remote-ip"
            | "x-remote-addr"
            | "client-ip"
            | "x-forwarded-ssl"
            | "x-forwarded-scheme"
            | "x-forwarded-protocol"
            | "x-url-scheme"
            | "x-scheme"
            | "front-end-https"
            | "x-host"
            | "x-original-host"
            | "remote-user"
            | "x-remote-user"
            | "x-forwarded-user"
            | "x-forwarded-email"
            | "x-forwarded-preferred-username"
            | "x-forwarded-groups"
            | "x-auth-request-user"
            | "x-auth-request-email"
            | "x-auth-request-preferred-username"
            | "x-auth-request-groups"
            | "x-webauth-user"
            | "x-authenticated-user"
    )
}

/// HTTP/2 clients may split `cookie` into several fields (RFC 9113
/// §8.2.3); an HTTP/1.1 service expects one, joined with `"; "`.
pub fn join_cookies(h: &mut HeaderMap) {
    let mut crumbs = h.get_all(header::COOKIE).iter();
    let (Some(_), Some(_)) = (crumbs.next(), crumbs.next()) else {
        return;
    };
    let joined: Vec<&[u8]> = h
        .get_all(header::COOKIE)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    if let Ok(v) = HeaderValue::from_bytes(&joined.join(&b"; "[..])) {
        h.insert(header::COOKIE, v);
    }
}

/// Header names with `_`: CGI, WSGI, Rack and PHP map `x_user` and `x-user`
/// to one variable, so an `_` spelling would slip past the removal of
/// `x-user`. Dropped, as nginx does by default (`underscores_in_headers off`).
pub fn underscored(name: &HeaderName) -> bool {
    name.as_str().contains('_')
}

/// Remove, in one pass over the names present, the hop-by-hop headers,
/// the headers named in `Connection`, and every header `also` picks.
/// Only the few names found are removed (each removal hashes a name; a
/// request usually has none of them but its credential).
pub fn strip_headers(h: &mut HeaderMap, also: impl Fn(&HeaderName) -> bool) {
    let mut doomed: Vec<HeaderName> = h
        .keys()
        .filter(|n| hop_by_hop(n) || also(n))
        .cloned()
        .collect();
    if doomed.contains(&header::CONNECTION) {
        doomed.extend(
            h.get_all(header::CONNECTION)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok()),
        );
    }
    for n in doomed {
        h.remove(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_crumbs_are_joined() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1"));
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        h.append(header::COOKIE, HeaderValue::from_static("c=3"));
        join_cookies(&mut h);
        assert_eq!(h.get_all(header::COOKIE).iter().count(), 1);
        assert_eq!(h[header::COOKIE], "a=1; b=2; c=3");
        let mut one = HeaderMap::new();
        one.insert(header::COOKIE, HeaderValue::from_static("a=1"));
        join_cookies(&mut one);
        assert_eq!(one[header::COOKIE], "a=1");
    }

    #[test]
    fn meaning_changing_and_underscored_headers_are_chosen_for_removal() {
        for n in [
            "x-http-method-override",
            "x-original-url",
            "x-forwarded-prefix",
            "forwarded",
            // httpoxy (CGI maps it to HTTP_PROXY)
            "proxy",
            // Next.js middleware bypass (CVE-2025-29927)
            "x-middleware-subrequest",
            // client addresses frameworks read before X-Forwarded-For
            "x-client-ip",
            "true-client-ip",
            "cf-connecting-ip",
            "fastly-client-ip",
            "x-cluster-client-ip",
            "forwarded-for",
            "x-forwarded",
            "x-originating-ip",
            "x-remote-ip",
            "x-remote-addr",
            "client-ip",
            // the scheme (Rack, Django, Spring read these)
            "x-forwarded-ssl",
            "x-forwarded-scheme",
            "x-forwarded-protocol",
            "x-url-scheme",
            "x-scheme",
            "front-end-https",
            // the host
            "x-host",
            "x-original-host",
            // identities set by authenticating proxies
            "remote-user",
            "x-remote-user",
            "x-forwarded-user",
            "x-forwarded-email",
            "x-forwarded-preferred-username",
            "x-forwarded-groups",
            "x-auth-request-user",
            "x-auth-request-email",
            "x-auth-request-preferred-username",
            "x-auth-request-groups",
            "x-webauth-user",
            "x-authenticated-user",
        ] {
            assert!(untrusted_forwarding(&HeaderName::from_static(n)), "{n}");
        }
        assert!(!untrusted_forwarding(&HeaderName::from_static("x-trace")));
        assert!(underscored(&HeaderName::from_static("x_user")));
        assert!(!underscored(&HeaderName::from_static("x-user")));
    }

    #[test]
    fn strips_hop_by_hop_connection_named_and_chosen_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("upgrade", HeaderValue::from_static("h2c"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_headers(&mut h, |_| false);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-keep"));
        // each one alone is found too (the pass that skips the removals)
        for name in [
            "connection",
            "Keep-Alive",
            "proxy-connection",
            "proxy-authenticate",
            "Proxy-Authorization",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
        ] {
            let mut h = HeaderMap::new();
            h.insert("x-keep", HeaderValue::from_static("1"));
            h.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static("x"),
            );
            strip_headers(&mut h, |_| false);
            assert_eq!(h.len(), 1, "{name} was not removed");
        }
        // nothing to remove: nothing changes
        let mut h = HeaderMap::new();
        h.insert("x-keep", HeaderValue::from_static("1"));
        h.insert("accept", HeaderValue::from_static("*/*"));
        strip_headers(&mut h, |_| false);
        assert_eq!(h.len(), 2);
        // what the caller adds goes in the same pass, hop-by-hop ones still do
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Bearer x"));
        h.insert("x-real-ip", HeaderValue::from_static("1.2.3.4"));
        h.insert("forwarded", HeaderValue::from_static("for=1.2.3.4"));
        h.insert("x-forwarded-host", HeaderValue::from_static("evil"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_headers(&mut h, |n| {
            untrusted_forwarding(n) || n == hyper::header::AUTHORIZATION
        });
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-keep"]);
    }
}
