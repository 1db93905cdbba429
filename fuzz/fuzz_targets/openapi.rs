//! palisade-openapi on arbitrary requests against the test documents (an
//! OpenAPI 3.0 YAML and a 3.1 JSON): the first byte picks the document and
//! the method, then lines give the path, the query, a header `name: value`
//! and the content type; the rest is the body. Never panics; a violation's
//! pointer is capped and always starts with one of the request's parts.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use palisade_openapi::{Request, Spec};

static SPECS: LazyLock<[Spec; 2]> = LazyLock::new(|| {
    [
        Spec::parse(include_str!("../../crates/openapi/tests/data/shop-3.0.yaml")).expect("shop"),
        Spec::parse(include_str!("../../crates/openapi/tests/data/orders-3.1.json")).expect("orders"),
    ]
});

const METHODS: [&str; 6] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let mut lines = rest.splitn(5, |b| *b == b'\n');
    let mut text = || std::str::from_utf8(lines.next().unwrap_or_default()).ok();
    let (Some(path), Some(query), Some(header), Some(ct)) = (text(), text(), text(), text()) else {
        return;
    };
    let body = lines.next().unwrap_or_default();
    let headers: Vec<(&str, &str)> = header
        .split_once(": ")
        .map(|(n, v)| vec![(n, v)])
        .unwrap_or_default();
    let spec = &SPECS[usize::from(pick & 1)];
    let req = Request {
        method: METHODS[usize::from(pick >> 1) % METHODS.len()],
        path,
        query: (!query.is_empty()).then_some(query),
        headers: &headers,
        content_type: (!ct.is_empty()).then_some(ct),
        body,
    };
    if let Err(v) = spec.validate(&req) {
        assert!(v.pointer.len() <= 256 + '…'.len_utf8(), "{}", v.pointer.len());
        assert!(
            ["/path", "/method", "/query", "/header", "/cookie", "/body"]
                .iter()
                .any(|p| v.pointer.starts_with(p)),
            "{v}"
        );
    }
});
