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
    let mut tx = palisade_waf::tx::Transaction::new(&set, sqli_get("/products"));
    assert!(tx.process_request().is_some(), "{:?}", tx.matches);
}

/// A SQL injection in a query string, to `path`.
fn sqli_get(path: &str) -> palisade_waf::tx::Request {
    palisade_waf::tx::Request {
        method: "GET".into(),
        uri: format!("{path}?id=1%27%20OR%20%271%27%3D%271"),
        protocol: "HTTP/1.1".into(),
        headers: vec![
            ("Host".into(), b"example.com".to_vec()),
            ("User-Agent".into(), b"test".to_vec()),
            ("Accept".into(), b"*/*".to_vec()),
        ],
        body: Vec::new(),
        remote_addr: "192.0.2.1".into(),
        id: "t".into(),
    }
}

/// An operator's tuning file sets nothing for every request of every
/// route: `SecRuleEngine`, `SecDefaultAction` (CRS's own "audit log only"
/// example would silence every finding) and `ctl:ruleEngine` in a
/// `SecAction` are refused with their line; exclusions, removals and a
/// `SecRule`'s own `ctl:ruleEngine` pass. (review of the tuning files)
#[test]
fn tuning_files_set_nothing_for_every_request() {
    for (text, why) in [
        ("# x\nSecRuleEngine DetectionOnly\n", "SecRuleEngine: "),
        (
            "# x\nSecDefaultAction \"phase:2,nolog,auditlog,pass\"\n",
            "SecDefaultAction: ",
        ),
        (
            "# x\nSecAction \"id:1000,phase:1,pass,nolog,ctl:ruleEngine=DetectionOnly\"\n",
            "SecAction with ctl:ruleEngine: ",
        ),
        (
            "# x\nSecAction \"id:1000,phase:1,pass,nolog,ctl:'ruleEngine=DetectionOnly'\"\n",
            "SecAction with ctl:ruleEngine: ",
        ),
        (
            "# x\nSecAction \\\n  \"id:1000,phase:1,pass,nolog,ctl: ruleEngine=Off\"\n",
            "SecAction with ctl:ruleEngine: ",
        ),
    ] {
        let e = palisade_waf::crs::check_tuning("t.conf", text).unwrap_err();
        assert_eq!((e.file.as_deref(), e.line), (Some("t.conf"), 2), "{e}");
        assert!(e.message.starts_with(why), "{e}");
    }
    palisade_waf::crs::check_tuning(
        "t.conf",
        "SecRule REQUEST_FILENAME \"@streq /health\" \"id:1001,phase:1,pass,nolog,ctl:ruleEngine=Off\"\n\
         SecRuleRemoveById 920350\n\
         SecRuleUpdateTargetById 942100 \"!ARGS:json.body\"\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
}

/// Through the loader: a default action of `allow` (every CRS `block`
/// would pass the request) and a `skipAfter` naming a rule (a skip ends
/// only at a marker, as in libmodsecurity: it would skip the rest of the
/// phase, anomaly evaluation included) are load errors. (review of the
/// tuning files)
#[test]
fn what_would_silently_skip_crs_does_not_load() {
    let load = |before: &str, after: &str| {
        let opts = palisade_waf::crs::CrsOptions {
            before_rules: vec![("before.conf".into(), before.into())],
            after_rules: vec![("after.conf".into(), after.into())],
            ..Default::default()
        };
        palisade_waf::crs::load(&crs(), &opts)
    };
    let e = load("", "SecDefaultAction \"phase:2,log,auditlog,allow\"\n").unwrap_err();
    assert_eq!((e.file.as_deref(), e.line), (Some("after.conf"), 1), "{e}");
    assert!(e.message.starts_with("SecDefaultAction: allow"), "{e}");
    let e = load(
        "SecRule REQUEST_FILENAME \"@beginsWith /forum\" \"id:1001,phase:2,pass,nolog,skipAfter:1002\"\n\
         SecRule ARGS:coupon \"@streq FREE-FOREVER\" \"id:1002,phase:2,deny,status:403\"\n",
        "",
    )
    .unwrap_err();
    assert_eq!((e.file.as_deref(), e.line), (Some("before.conf"), 1), "{e}");
    assert!(e.message.starts_with("skipAfter:1002: no SecMarker"), "{e}");
    // a marker before the rule never ends its skip (review)
    let e = load(
        "SecMarker END-COUPON\n\
         SecRule REQUEST_FILENAME \"@beginsWith /forum\" \"id:1001,phase:2,pass,nolog,skipAfter:END-COUPON\"\n",
        "",
    )
    .unwrap_err();
    assert_eq!((e.file.as_deref(), e.line), (Some("before.conf"), 2), "{e}");
    assert!(
        e.message.starts_with("skipAfter:END-COUPON: no SecMarker"),
        "{e}"
    );
    // a rule id CRS also uses names where it was first defined
    let e = load(
        "SecRule ARGS:q \"@streq x\" \"id:942100,phase:2,deny\"\n",
        "",
    )
    .unwrap_err();
    assert!(
        e.message
            .ends_with("duplicate rule id 942100 (first at before.conf:1)"),
        "{e}"
    );
    // the same tuning, with a marker, loads and CRS still blocks
    let set = load(
        "SecRule REQUEST_FILENAME \"@beginsWith /forum\" \"id:1001,phase:2,pass,nolog,skipAfter:END-COUPON\"\n\
         SecRule ARGS:coupon \"@streq FREE-FOREVER\" \"id:1002,phase:2,deny,status:403\"\n\
         SecMarker END-COUPON\n",
        "SecDefaultAction \"phase:2,log,auditlog,pass\"\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut tx = palisade_waf::tx::Transaction::new(&set, sqli_get("/forum/posts"));
    let stop = tx.process_request().cloned();
    assert_eq!(stop.map(|i| i.rule_id), Some(949110), "{:?}", tx.matches);
}

fn tempdir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("waf-test-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
