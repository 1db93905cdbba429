//! palisade-waf on arbitrary requests: OWASP CRS v4.28.0 (from ../crs, PL2,
//! blocking) on a request whose first line is the target, the second the
//! Content-Type, the rest the body. Never panics, whatever the bytes (the
//! body processors, transformations and operators see them all); a request
//! it interrupts names a rule that is loaded.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use palisade_waf::RuleSet;
use palisade_waf::tx::{Request, Transaction};

static CRS: LazyLock<RuleSet> = LazyLock::new(|| {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../crs");
    let opts = palisade_waf::crs::CrsOptions {
        paranoia: 2,
        ..Default::default()
    };
    palisade_waf::crs::load(&dir, &opts).expect("CRS loads")
});

fuzz_target!(|data: &[u8]| {
    let mut lines = data.splitn(3, |b| *b == b'\n');
    let target = String::from_utf8_lossy(lines.next().unwrap_or_default()).into_owned();
    let ct = lines.next().unwrap_or_default().to_vec();
    let body = lines.next().unwrap_or_default().to_vec();
    let req = Request {
        method: if body.is_empty() { "GET" } else { "POST" }.into(),
        uri: target,
        protocol: "HTTP/1.1".into(),
        headers: vec![
            ("Host".into(), b"example.com".to_vec()),
            ("User-Agent".into(), b"fuzz".to_vec()),
            ("Accept".into(), b"*/*".to_vec()),
            ("Content-Type".into(), ct),
            ("Content-Length".into(), body.len().to_string().into_bytes()),
        ],
        remote_addr: "192.0.2.1".into(),
        body,
        id: "fuzz".into(),
    };
    let mut tx = Transaction::new(&CRS, req);
    if let Some(i) = tx.process_request() {
        assert!(CRS.rule(i.rule_id).is_some(), "{}", i.rule_id);
    }
});
