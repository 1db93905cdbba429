//! The OWASP CRS v4.28.0 rule files (the repository's unmodified copy in
//! `crs/`) load whole: every rule, chain, marker and data file.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed setup step is a failed test"
)]

use std::path::{Path, PathBuf};

use palisade_waf::RuleSet;
use palisade_waf::ruleset::Entry;

fn crs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crs")
}

/// The setup template, then `rules/*.conf` in name order (how CRS is included).
fn crs_files() -> Vec<PathBuf> {
    let mut rules: Vec<PathBuf> = std::fs::read_dir(crs().join("rules"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "conf"))
        .collect();
    rules.sort();
    assert_eq!(rules.len(), 27);
    let mut files = vec![crs().join("crs-setup.conf.example")];
    files.extend(rules);
    files
}

#[test]
fn crs_4_28_loads_unmodified() {
    let set = RuleSet::load(&crs_files()).unwrap_or_else(|e| panic!("{e}"));
    // 702 directives: 629 rules with ids (+ crs-setup's 900990) and 73 chained links
    let rules: Vec<_> = set.rules().collect();
    let links: usize = rules.iter().map(|r| r.links.len() - 1).sum();
    assert_eq!(rules.len(), 630, "629 CRS rules and crs-setup's 900990");
    assert_eq!(links, 73);
    let per_phase: Vec<usize> = set
        .phases
        .iter()
        .map(|p| p.iter().filter(|e| matches!(e, Entry::Rule(_))).count())
        .collect();
    assert_eq!(per_phase, vec![173, 292, 43, 109, 13]);
    assert_eq!(set.component_signatures, vec!["OWASP_CRS/4.28.0"]);
    // the exclusions of 999-COMMON-EXCEPTIONS-AFTER reached their rules
    let r = set.rule(932240).unwrap();
    assert!(r.links[0].targets.iter().any(|t| t.exclude));
}

#[test]
fn a_broken_rule_file_names_its_file_and_line() {
    let dir = tempdir();
    let bad = dir.join("bad.conf");
    std::fs::write(
        &bad,
        "SecRule ARGS \"@rx ok\" \"id:1,phase:2,pass\"\n\nSecRule ARGS \"@rx (\" \"id:2,phase:2,pass\"\n",
    )
    .unwrap();
    let e = RuleSet::load(std::slice::from_ref(&bad)).unwrap_err();
    assert_eq!(e.file.as_deref(), Some(bad.display().to_string().as_str()));
    assert_eq!(e.line, 3);
    assert!(e.message.starts_with("@rx pattern does not compile"), "{e}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// The engine's mode is the caller's: `SecRuleEngine` in a rule file
/// around CRS (where `DetectionOnly` would silently stop a blocking route
/// from blocking) is a load error naming the file and line; a rule's own
/// `ctl:ruleEngine`, scoped to the requests it matches, loads.
#[test]
fn rule_files_cannot_set_the_engine_mode() {
    for (before, after) in [
        ("# tuning\nSecRuleEngine DetectionOnly\n", ""),
        ("", "SecRuleRemoveById 920350\nsecruleengine Off\n"),
    ] {
        let opts = palisade_waf::crs::CrsOptions {
            before_rules: vec![("before.conf".into(), before.into())],
            after_rules: vec![("after.conf".into(), after.into())],
            ..Default::default()
        };
        let e = palisade_waf::crs::load(&crs(), &opts).unwrap_err();
        let file = if before.is_empty() {
            "after.conf"
        } else {
            "before.conf"
        };
        assert_eq!(e.file.as_deref(), Some(file), "{e}");
        assert_eq!(e.line, 2, "{e}");
        assert!(e.message.starts_with("SecRuleEngine: "), "{e}");
    }
    let opts = palisade_waf::crs::CrsOptions {
        before_rules: vec![(
            "before.conf".into(),
            "SecRule REQUEST_FILENAME \"@streq /health\" \"id:1001,phase:1,pass,nolog,ctl:ruleEngine=Off\"\n"
                .into(),
        )],
        ..Default::default()
    };
    let set = palisade_waf::crs::load(&crs(), &opts).unwrap_or_else(|e| panic!("{e}"));
    // the route's mode stands: an attack elsewhere is interrupted
    let req = palisade_waf::tx::Request {
        method: "GET".into(),
        uri: "/products?id=1%27%20OR%20%271%27%3D%271".into(),
        protocol: "HTTP/1.1".into(),
        headers: vec![
            ("Host".into(), b"example.com".to_vec()),
            ("User-Agent".into(), b"test".to_vec()),
            ("Accept".into(), b"*/*".to_vec()),
        ],
        body: Vec::new(),
        remote_addr: "192.0.2.1".into(),
        id: "t".into(),
    };
    let mut tx = palisade_waf::tx::Transaction::new(&set, req);
    assert!(tx.process_request().is_some(), "{:?}", tx.matches);
}

fn tempdir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("waf-test-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
