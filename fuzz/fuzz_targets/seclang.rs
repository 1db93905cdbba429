//! The SecLang loader on arbitrary configuration text: an error or a rule
//! set, never a panic; a rule set that loads has every rule in its phase.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_waf::RuleSet;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(set) = RuleSet::from_text(text, "fuzz.conf", std::path::Path::new("/nonexistent")) {
        for r in set.rules() {
            assert!((1..=5).contains(&r.phase));
            assert!(!r.links.is_empty());
        }
    }
});
