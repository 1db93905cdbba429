//! The gateway's header handling on arbitrary header lines (`name: value`
//! per line, the first line the request target): never panics; a host it
//! accepts is canonical (lowercase, no trailing dot, no port) and parses to
//! itself; header stripping leaves no hop-by-hop header and no name it was
//! asked to remove; cookie crumbs become one line.
#![no_main]

use hyper::header::{HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use palisade_gateway::config::Limits;
use palisade_gateway::steps::headers::{
    join_cookies, strip_headers, underscored, untrusted_forwarding,
};
use palisade_gateway::steps::host::canonical_host;
use palisade_gateway::steps::limits::{check_framing, check_headers};

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|b| *b == b'\n');
    let target = lines.next().unwrap_or_default();
    let Ok(target) = std::str::from_utf8(target) else {
        return;
    };
    let mut b = hyper::Request::builder().uri(target);
    for line in lines {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        b = b.header(n, v);
    }
    let Ok(req) = b.body(()) else {
        return;
    };
    let _ = check_framing(req.headers());
    let _ = check_headers(req.headers(), &Limits::default());
    if let Ok(h) = canonical_host(&req) {
        assert_eq!(h.host, h.host.to_ascii_lowercase());
        assert!(!h.host.ends_with('.'), "{:?}", h.host);
        assert!(h.authority.starts_with(&h.host), "{h:?}");
        if !h.host.is_empty() {
            let again = hyper::Request::builder()
                .uri("/")
                .header("host", h.authority.as_str())
                .body(())
                .expect("a canonical authority is a header value");
            assert_eq!(canonical_host(&again).as_ref(), Ok(&h));
        }
    }
    let mut headers = req.headers().clone();
    strip_headers(&mut headers, |n| untrusted_forwarding(n) || underscored(n));
    for (n, _) in &headers {
        assert!(!untrusted_forwarding(n) && !underscored(n), "{n}");
        assert!(
            !matches!(
                n.as_str(),
                "connection" | "keep-alive" | "te" | "trailer" | "transfer-encoding" | "upgrade"
            ),
            "{n}"
        );
    }
    join_cookies(&mut headers);
    assert!(headers.get_all("cookie").iter().count() <= 1);
});
