//! HCL policy parsing and the formatter behind `palisade policy fmt`: never
//! panic; a policy that parses answers capability lookups; formatting is
//! idempotent and keeps a valid policy valid.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_policy::{Acl, Policy, format_hcl};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = Policy::parse("fuzz", text);
    if let Ok(p) = &parsed {
        let acl = Acl::new(&[p]);
        for path in ["secret/data/x", "sys/policies/acl/x", "", "a/b/c/"] {
            let _ = acl.capabilities(path, false);
            let _ = acl.capabilities(path, true);
        }
    }
    if let Ok(formatted) = format_hcl(text) {
        assert_eq!(format_hcl(&formatted).as_ref(), Ok(&formatted), "{text:?}");
        if parsed.is_ok() {
            assert!(
                Policy::parse("fuzz", &formatted).is_ok(),
                "{text:?} -> {formatted:?}"
            );
        }
    }
});
