//! Server-side request forgery targets in URL-valued parameters.
//!
//! URLs are parsed with the `url` crate, which implements the WHATWG URL
//! standard — the parser behind Node's `URL`, `fetch` and undici — so a host
//! is judged as the service would resolve it: `http://2130706433/`,
//! `http://0177.0.0.1/`, `http://0x7f.1/` and `http://127.1/` are all
//! 127.0.0.1 here too. Names are judged without DNS (no I/O): `localhost`
//! names, private-use names (`.internal`, `.local`), cloud metadata names,
//! and wildcard-DNS services that answer with the address a name embeds
//! (`10.0.0.1.nip.io`, `127-0-0-1.sslip.io`, `*.localtest.me`). A name that
//! resolves to an internal address by other means (the attacker's own DNS)
//! cannot be seen here: the service's egress policy must still refuse it.

use std::net::{Ipv4Addr, Ipv6Addr};

use url::{Host, Url};

use crate::{Finding, Rule};

/// What a URL points at that a public API's client should never name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Loopback,
    Unspecified,
    Private,
    SharedAddressSpace,
    LinkLocal,
    CloudMetadata,
    Reserved,
    LocalName,
    WildcardDns,
    /// A scheme only an SSRF wants (`file:`, `gopher:`, `dict:`, ...).
    Scheme,
}

impl Target {
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Loopback => "loopback address",
            Target::Unspecified => "unspecified address",
            Target::Private => "private address",
            Target::SharedAddressSpace => "shared (CGNAT) address",
            Target::LinkLocal => "link-local address",
            Target::CloudMetadata => "cloud metadata service",
            Target::Reserved => "reserved or multicast address",
            Target::LocalName => "local host name",
            Target::WildcardDns => "wildcard-DNS name of an internal address",
            Target::Scheme => "scheme used for SSRF",
        }
    }
}

/// The schemes WHATWG parses with an authority however many slashes follow.
const SPECIAL_SCHEMES: &[&str] = &["http", "https", "ws", "wss", "ftp"];

const SSRF_SCHEMES: &[&str] = &[
    "file", "gopher", "dict", "ldap", "ldaps", "tftp", "jar", "netdoc", "phar", "expect",
];

/// Names of parameters that carry a URL or a host even without a scheme
/// (`url`, `imageUrl`, `callback_url`, `webhooks`, ...).
pub(crate) fn url_named(name: &str) -> bool {
    // ASCII case-insensitive, a plural `s` ignored, on the last 16 bytes
    // lowercased on the stack: it runs for every key of every body
    let b = name.as_bytes();
    let b = match b.last() {
        Some(b's' | b'S') => &b[..b.len() - 1],
        _ => b,
    };
    let take = b.len().min(16);
    let mut buf = [0u8; 16];
    for (d, s) in buf.iter_mut().zip(&b[b.len() - take..]) {
        *d = s.to_ascii_lowercase();
    }
    let tail = &buf[..take];
    if b.len() <= 16
        && matches!(
            tail,
            b"src"
                | b"link"
                | b"redirect"
                | b"return"
                | b"next"
                | b"dest"
                | b"destination"
                | b"target"
                | b"proxy"
                | b"domain"
                | b"feed"
                | b"image"
                | b"avatar"
                | b"server"
        )
    {
        return true;
    }
    [
        &b"url"[..],
        b"uri",
        b"href",
        b"host",
        b"hostname",
        b"endpoint",
        b"callback",
        b"webhook",
    ]
    .iter()
    .any(|s| tail.ends_with(s))
}

/// A scheme-less value that names a host: its first part (up to `/`, `?`,
/// `#` or whitespace) has a `.` or `:` or is a bracketed IPv6 literal, and
/// is not a plain number (`next=20`, `image=5` are not addresses).
fn looks_like_host(v: &str) -> bool {
    let head = v
        .split(|c: char| c == '/' || c == '?' || c == '#' || c == '\\' || c.is_whitespace())
        .next()
        .unwrap_or_default();
    if head.is_empty() || head.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    head.starts_with('[')
        || head.contains('.')
        || head.contains(':')
        || classify_name(head).is_some()
}

/// The part of a URL-valued string that decides where it goes: WHATWG's
/// trimming (leading and trailing C0 controls and spaces; tabs and newlines
/// anywhere), cut before the query or fragment (where the authority ends
/// at the latest), so padding after it cannot push a value past the check.
/// Never cut by length: padding in the userinfo would take the host with
/// it (the url crate parses in linear time).
fn significant(value: &str) -> String {
    let v = value.trim_matches(|c: char| c <= ' ');
    let v: String = v
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
        .collect();
    let cut = v.find(['?', '#']).unwrap_or(v.len());
    v[..cut].to_owned()
}

/// Judge a parameter's value; `named`: the parameter's name (its last
/// token that is not an array index) is one that carries URLs or hosts;
/// `variable` names it for a finding.
pub(crate) fn check(
    named: bool,
    value: &str,
    findings: &mut Vec<Finding>,
    variable: &dyn Fn() -> String,
) {
    // most values cannot be a URL or a host at all: no `:`, no slash or
    // backslash, under a name that carries none (checked before anything
    // is allocated or parsed)
    if !named && !value.bytes().any(|b| matches!(b, b':' | b'/' | b'\\')) {
        return;
    }
    let value = significant(value);
    if value.is_empty() {
        return;
    }
    // An absolute URL as Node's URL parser reads it: a special scheme
    // (http(s), ws(s), ftp: also `http:/127.0.0.1`, `http:127.0.0.1`,
    // `http:\\127.0.0.1`), an SSRF scheme, or any `scheme://` (redis://,
    // postgres://, ...: their host is opaque to WHATWG, judged by name).
    let absolute = Url::parse(&value).ok().filter(|u| {
        SPECIAL_SCHEMES.contains(&u.scheme())
            || SSRF_SCHEMES.contains(&u.scheme())
            || value.contains("://")
    });
    let url = match absolute {
        Some(u) => u,
        None => {
            // relative references a service resolves against its own base:
            // `//host`, and `\\host`, `\/host`, `/\\host` (backslashes are
            // slashes in special URLs)
            let b = value.as_bytes();
            let candidate =
                if b.len() >= 2 && matches!(b[0], b'/' | b'\\') && matches!(b[1], b'/' | b'\\') {
                    format!("http://{}", &value[2..])
                } else if named && looks_like_host(&value) {
                    format!("http://{value}")
                } else {
                    return;
                };
            let Ok(url) = Url::parse(&candidate) else {
                return;
            };
            url
        }
    };
    if let Some(t) = classify_url(&url) {
        findings.push(Finding {
            rule: Rule::SsrfTarget,
            variable: variable(),
            reason: format!("URL names a {}", t.as_str()),
        });
    }
}

/// What `url` points at, when it is somewhere a client should not send a
/// server.
pub fn classify_url(url: &Url) -> Option<Target> {
    if SSRF_SCHEMES.contains(&url.scheme()) {
        return Some(Target::Scheme);
    }
    match url.host()? {
        Host::Ipv4(a) => classify_v4(a),
        Host::Ipv6(a) => classify_v6(a),
        Host::Domain(d) => classify_name(d),
    }
}

fn classify_v4(a: Ipv4Addr) -> Option<Target> {
    let [o0, o1, o2, _] = a.octets();
    Some(match (o0, o1) {
        _ if a == Ipv4Addr::new(169, 254, 169, 254)
            || a == Ipv4Addr::new(169, 254, 170, 2)
            || a == Ipv4Addr::new(100, 100, 100, 200)
            || a == Ipv4Addr::new(192, 0, 0, 192) =>
        {
            Target::CloudMetadata
        }
        (127, _) => Target::Loopback,
        (0, _) => Target::Unspecified,
        (10, _) | (192, 168) => Target::Private,
        (172, b) if (16..32).contains(&b) => Target::Private,
        (198, b) if b == 18 || b == 19 => Target::Private,
        (100, b) if (64..128).contains(&b) => Target::SharedAddressSpace,
        (169, 254) => Target::LinkLocal,
        (192, 0) if o2 == 0 => Target::Reserved,
        (b, _) if b >= 224 => Target::Reserved,
        _ => return None,
    })
}

fn classify_v6(a: Ipv6Addr) -> Option<Target> {
    let s = a.segments();
    if a.is_loopback() {
        return Some(Target::Loopback);
    }
    if a.is_unspecified() {
        return Some(Target::Unspecified);
    }
    // an IPv4 address inside: mapped (::ffff:a.b.c.d), compatible
    // (::a.b.c.d), NAT64 (64:ff9b::/96) and 6to4 (2002:AABB:CCDD::/48)
    let v4 = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    if s[..5] == [0; 5] && (s[5] == 0xffff || s[5] == 0) {
        return classify_v4(v4(s[6], s[7]));
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return classify_v4(v4(s[6], s[7]));
    }
    if s[0] == 0x2002 {
        return classify_v4(v4(s[1], s[2]));
    }
    if a == Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x254) {
        return Some(Target::CloudMetadata);
    }
    Some(match s[0] {
        x if x & 0xfe00 == 0xfc00 => Target::Private,
        x if x & 0xffc0 == 0xfe80 => Target::LinkLocal,
        x if x & 0xffc0 == 0xfec0 => Target::Private,
        x if x & 0xff00 == 0xff00 => Target::Reserved,
        _ => return None,
    })
}

/// Services that answer every name under them with the address the name
/// spells (nip.io: `10.0.0.1.nip.io`, `app-10-0-0-1.nip.io`,
/// `0a000001.nip.io`), and those that answer 127.0.0.1 for every name.
const EMBEDDING_DNS: &[&str] = &[
    "nip.io",
    "sslip.io",
    "xip.io",
    "xip.name",
    "nip.direct",
    "traefik.me",
];
const LOOPBACK_DNS: &[&str] = &[
    "localtest.me",
    "lvh.me",
    "vcap.me",
    "lacolhost.com",
    "localh.st",
];

fn under(name: &str, zone: &str) -> bool {
    name == zone
        || name
            .strip_suffix(zone)
            .is_some_and(|rest| rest.ends_with('.'))
}

fn classify_name(d: &str) -> Option<Target> {
    let name = d.trim_end_matches('.').to_ascii_lowercase();
    // the opaque host of a non-special URL (redis://127.0.0.1) is not
    // parsed as an address by WHATWG: the client library will
    if let Ok(a) = name.parse::<Ipv4Addr>() {
        return classify_v4(a);
    }
    if let Some(a) = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .and_then(|n| n.parse::<Ipv6Addr>().ok())
    {
        return classify_v6(a);
    }
    if matches!(
        name.as_str(),
        "metadata" | "metadata.google.internal" | "metadata.goog" | "instance-data"
    ) || name == "instance-data.ec2.internal"
    {
        return Some(Target::CloudMetadata);
    }
    // names under the private-use zones (the zone itself is no host name)
    if ["localhost", "localdomain", "ip6-localhost", "ip6-loopback"].contains(&name.as_str())
        || ["localhost", "internal", "local", "localdomain", "home.arpa"]
            .iter()
            .any(|z| name.len() > z.len() && under(&name, z))
    {
        return Some(Target::LocalName);
    }
    if LOOPBACK_DNS.iter().any(|z| under(&name, z)) {
        return Some(Target::WildcardDns);
    }
    if let Some(zone) = EMBEDDING_DNS.iter().find(|z| under(&name, z)) {
        let prefix = name[..name.len() - zone.len()].trim_end_matches('.');
        if embedded_v4(prefix).is_some_and(|a| classify_v4(a).is_some())
            || embedded_v6(prefix).is_some_and(|a| classify_v6(a).is_some())
        {
            return Some(Target::WildcardDns);
        }
    }
    None
}

/// The IPv4 address a wildcard-DNS name spells: the last four labels
/// (`x.10.0.0.1`), a dashed label (`x-10-0-0-1`, `10-0-0-1`), or eight hex
/// digits (`0a000001`).
fn embedded_v4(prefix: &str) -> Option<Ipv4Addr> {
    let labels: Vec<&str> = prefix.split('.').collect();
    if labels.len() >= 4 {
        let tail = labels[labels.len() - 4..].join(".");
        if let Ok(a) = tail.parse::<Ipv4Addr>() {
            return Some(a);
        }
    }
    let last = labels.last()?;
    let dashed: Vec<&str> = last.split('-').collect();
    if dashed.len() >= 4 {
        let tail = dashed[dashed.len() - 4..].join(".");
        if let Ok(a) = tail.parse::<Ipv4Addr>() {
            return Some(a);
        }
    }
    let hex = last.rsplit('-').next()?;
    if hex.len() == 8 {
        return u32::from_str_radix(hex, 16).ok().map(Ipv4Addr::from);
    }
    None
}

/// The IPv6 address a wildcard-DNS name spells in its last label, with `-`
/// for `:` (sslip.io: `--1` is `::1`, `fe80--1` is `fe80::1`).
fn embedded_v6(prefix: &str) -> Option<Ipv6Addr> {
    let last = prefix.rsplit('.').next()?;
    if !last.contains("--") && last.matches('-').count() < 7 {
        return None;
    }
    last.replace('-', ":").parse().ok()
}
