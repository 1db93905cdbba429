//! JWT parsing and verification on arbitrary tokens (an HS256 issuer, no
//! network): never panics, and nothing but a token signed with the key
//! verifies.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use palisade_core::Secret;
use palisade_jwt::{Alg, IssuerConfig, KeySource, Verifier};

fn setup() -> &'static (tokio::runtime::Runtime, Arc<Verifier>) {
    static V: OnceLock<(tokio::runtime::Runtime, Arc<Verifier>)> = OnceLock::new();
    V.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let cfg = IssuerConfig::new(
            "https://id.example",
            vec!["api".into()],
            vec![Alg::HS256],
            KeySource::Hs256Secret(Secret::new(
                b"a fuzzing secret of 32 bytes or more".to_vec(),
            )),
        );
        let v = rt
            .block_on(Verifier::new(vec![cfg], reqwest::Client::new()))
            .expect("verifier");
        (rt, v)
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let (rt, v) = setup();
    // a random input that verifies would be a forged token
    assert!(rt.block_on(v.verify(token)).is_err(), "{token:?}");
});
