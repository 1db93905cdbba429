//! Evaluating rules on requests: what matches, what is excluded, what
//! blocks, and CRS end to end (an attack blocked, ordinary traffic not).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed setup step is a failed test"
)]

use std::path::{Path, PathBuf};

use palisade_waf::RuleSet;
use palisade_waf::action::Disruptive;
use palisade_waf::tx::{Interruption, Request, Transaction};

fn rules(text: &str) -> RuleSet {
    RuleSet::from_text(text, "t.conf", Path::new(".")).unwrap_or_else(|e| panic!("{e}"))
}

fn get(uri: &str) -> Request {
    Request {
        method: "GET".into(),
        uri: uri.into(),
        protocol: "HTTP/1.1".into(),
        headers: vec![
            ("Host".into(), b"example.com".to_vec()),
            (
                "User-Agent".into(),
                b"Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0".to_vec(),
            ),
            ("Accept".into(), b"text/html,application/json".to_vec()),
        ],
        remote_addr: "192.0.2.10".into(),
        body: Vec::new(),
        id: "req-1".into(),
    }
}

fn post(uri: &str, content_type: &str, body: &str) -> Request {
    let mut r = get(uri);
    r.method = "POST".into();
    r.headers
        .push(("Content-Type".into(), content_type.as_bytes().to_vec()));
    r.headers
        .push(("Content-Length".into(), body.len().to_string().into_bytes()));
    r.body = body.as_bytes().to_vec();
    r
}

fn run(set: &RuleSet, req: Request) -> (Option<Interruption>, Vec<u32>) {
    let mut tx = Transaction::new(set, req);
    let i = tx.process_request().cloned();
    (i, tx.matches.iter().map(|m| m.id).collect())
}

#[test]
fn a_match_denies_in_on_mode_and_only_logs_in_detection_only() {
    let text = r#"SecRule ARGS "@rx (?i)<script" "id:10,phase:2,deny,status:406,msg:'xss',t:urlDecodeUni""#;
    let set = rules(text);
    let (i, ids) = run(&set, get("/?q=%3CScRiPt%3E"));
    assert_eq!(
        i,
        Some(Interruption {
            rule_id: 10,
            status: 406,
            action: Disruptive::Deny
        })
    );
    assert_eq!(ids, vec![10]);
    // the same request without the payload: nothing
    assert_eq!(run(&set, get("/?q=script")), (None, vec![]));
    let set = rules(&format!("SecRuleEngine DetectionOnly\n{text}"));
    assert_eq!(run(&set, get("/?q=%3Cscript")), (None, vec![10]));
}

#[test]
fn exclusions_chains_markers_and_removals() {
    let set = rules(
        r#"
SecRule ARGS|!ARGS:safe "@rx evil" "id:1,phase:2,pass,msg:'one'"
SecRule REQUEST_METHOD "@streq POST" "id:2,phase:2,pass,chain"
    SecRule ARGS_NAMES "@rx ^cmd$" "chain"
        SecRule MATCHED_VARS "@rx ^cmd$" "setvar:tx.hit=1"
SecRule ARGS:skipme "@rx ." "id:3,phase:2,pass,nolog,skipAfter:END"
SecRule ARGS "@rx evil" "id:4,phase:2,pass"
SecMarker END
SecRule REQUEST_HEADERS:X-Off "@rx ." "id:5,phase:1,pass,nolog,ctl:ruleRemoveById=1"
SecRule &ARGS "@ge 3" "id:6,phase:2,pass"
SecRule REQUEST_HEADERS:X-Skip-Id "@rx ." "id:7,phase:1,pass,nolog,ctl:ruleRemoveTargetById=8;ARGS:note"
SecRule REQUEST_HEADERS:X-Skip-Tag "@rx ." "id:9,phase:1,pass,nolog,ctl:ruleRemoveTargetByTag=quiet;ARGS:note"
SecRule ARGS|REQUEST_HEADERS:X-Probe "@rx oops" "id:8,phase:2,pass,tag:'loud',tag:'quiet'"
"#,
    );
    // ctl removes one target of one rule, by id or by tag, for this request:
    // that argument only, the rule's other targets still evaluated
    let with = |uri: &str, header: &str| {
        let mut r = get(uri);
        r.headers.push((header.into(), b"1".to_vec()));
        r
    };
    assert_eq!(run(&set, get("/?note=oops")).1, vec![8]);
    assert_eq!(
        run(&set, with("/?note=oops", "X-Skip-Id")).1,
        Vec::<u32>::new()
    );
    assert_eq!(
        run(&set, with("/?note=oops", "X-Skip-Tag")).1,
        Vec::<u32>::new()
    );
    assert_eq!(run(&set, with("/?other=oops", "X-Skip-Id")).1, vec![8]);
    assert_eq!(run(&set, with("/?other=oops", "X-Skip-Tag")).1, vec![8]);
    let mut r = with("/?note=oops", "X-Skip-Tag");
    r.headers.push(("X-Probe".into(), b"oops".to_vec()));
    assert_eq!(run(&set, r).1, vec![8]);
    // rule 1 excludes ARGS:safe, rule 4 does not
    assert_eq!(run(&set, get("/?safe=evil")).1, vec![4]);
    assert_eq!(run(&set, get("/?a=evil")).1, vec![1, 4]);
    // skipAfter: rule 4 is skipped, 3 does not log
    assert_eq!(run(&set, get("/?a=evil&skipme=1")).1, vec![1]);
    assert_eq!(run(&set, get("/?a=evil&b=2&c=3")).1, vec![1, 4, 6]);
    // the chain needs all three links
    let mut tx = Transaction::new(
        &set,
        post("/", "application/x-www-form-urlencoded", "cmd=ls"),
    );
    tx.process_request();
    assert_eq!(tx.matches.iter().map(|m| m.id).collect::<Vec<_>>(), vec![2]);
    assert_eq!(tx.tx("hit"), Some(&b"1"[..]));
    assert_eq!(run(&set, get("/?cmd=ls")).1, Vec::<u32>::new());
    // ctl in phase 1 removes rule 1 for this request only
    let mut r = get("/?a=evil");
    r.headers.push(("X-Off".into(), b"1".to_vec()));
    assert_eq!(run(&set, r).1, vec![4]);
}

#[test]
fn scores_captures_and_macros() {
    let set = rules(
        r#"
SecAction "id:100,phase:1,pass,nolog,setvar:tx.threshold=5"
SecRule ARGS "@rx (\d+)-(\d+)" "id:101,phase:2,pass,capture,setvar:tx.score=+3,logdata:'got %{TX.2} in %{MATCHED_VAR_NAME}'"
SecRule ARGS_NAMES "@pm admin root" "id:102,phase:2,pass,capture,setvar:tx.score=+3,logdata:'name %{tx.0}'"
SecRule TX:score "@ge %{tx.threshold}" "id:199,phase:2,deny,msg:'score %{tx.score}'"
"#,
    );
    let mut tx = Transaction::new(&set, get("/?range=10-20&ROOTx=1"));
    let i = tx.process_request().cloned();
    assert_eq!(i.map(|i| (i.rule_id, i.status)), Some((199, 403)));
    let m: Vec<(u32, &str, &str)> = tx
        .matches
        .iter()
        .map(|m| (m.id, m.msg.as_str(), m.data.as_str()))
        .collect();
    assert_eq!(
        m,
        vec![
            (101, "", "got 20 in ARGS:range"),
            (102, "", "name ROOT"),
            (199, "score 6", "")
        ]
    );
    // one hit stays under the threshold
    assert_eq!(run(&set, get("/?range=1-2")).0, None);
}

#[test]
fn multi_match_tries_the_value_before_and_after_each_transformation() {
    // `%27X` is `'X` after urlDecodeUni and `'x` after lowercase: only the
    // middle form matches 1, only the raw form matches 2
    let set = rules(
        r#"
SecRule ARGS:a "@rx ^'X$" "id:1,phase:2,pass,t:none,t:urlDecodeUni,t:lowercase,multiMatch,logdata:'%{MATCHED_VAR}'"
SecRule ARGS:b "@rx %27" "id:2,phase:2,pass,t:none,t:urlDecodeUni,multiMatch,logdata:'%{MATCHED_VAR}'"
SecRule ARGS:a "@rx ^'X$" "id:3,phase:2,pass,t:none,t:urlDecodeUni,t:lowercase,logdata:'%{MATCHED_VAR}'"
SecRule ARGS:b "@rx %27" "id:4,phase:2,pass,t:none,t:urlDecodeUni,logdata:'%{MATCHED_VAR}'"
"#,
    );
    // the query's own decoding gives ARGS:a = `%27X` from `%2527X`
    let hits = |uri: &str| -> Vec<(u32, String)> {
        let mut tx = Transaction::new(&set, get(uri));
        tx.process_request();
        tx.matches.iter().map(|m| (m.id, m.data.clone())).collect()
    };
    assert_eq!(
        hits("/?a=%2527X&b=%2527"),
        vec![(1, "'X".to_string()), (2, "%27".to_string())]
    );
    // a value no transformation changes is tried (once) as it is
    assert_eq!(hits("/?a=%27X"), vec![(1, "'X".to_string())]);
    assert_eq!(hits("/?b=%2527%2527"), vec![(2, "%27%27".to_string())]);
    // matching at no step: nothing
    assert_eq!(hits("/?a=%2527Y&b=%252"), vec![]);
    assert_eq!(hits("/?a=%2527x"), vec![]);
}

/// Exact deny rules behind the transformations that skip unchanged values
/// (`apply_if_changes`): every spelling the transformation folds is
/// refused, and near misses it does not fold pass.
#[test]
fn exact_deny_rules_see_the_transformed_value_in_every_spelling() {
    let set = rules(
        r#"
SecRule ARGS:p "@streq /admin" "id:1,phase:2,deny,status:403,t:none,t:normalizePathWin"
SecRule ARGS:w "@streq drop table" "id:2,phase:2,deny,status:403,t:none,t:compressWhitespace"
SecRule ARGS:c "@streq droptable" "id:3,phase:2,deny,status:403,t:none,t:removeCommentsChar"
"#,
    );
    let verdict = |q: &str| {
        run(&set, get(&format!("/?{q}")))
            .0
            .map(|i| (i.rule_id, i.status))
    };
    for (q, id) in [
        ("p=/admin", 1),
        ("p=/./admin", 1),
        ("p=//admin", 1),
        ("p=/x/../admin", 1),
        ("p=%5Cadmin", 1),
        ("p=%5Cx%5C..%5Cadmin", 1),
        ("w=drop%20table", 2),
        ("w=drop%20%20table", 2),
        ("w=drop%09table", 2),
        ("w=drop%0A%0D%20table", 2),
        ("w=drop%A0table", 2),
        ("c=droptable", 3),
        ("c=drop/**/table", 3),
        ("c=drop--table", 3),
        ("c=drop%23table", 3),
        ("c=drop%3C!--table", 3),
    ] {
        assert_eq!(verdict(q), Some((id, 403)), "{q}");
    }
    for q in [
        "p=admin",
        "p=/admins",
        "p=/ADMIN",
        "p=/admin/.",
        "p=.",
        "w=droptable",
        "w=drop_table",
        "c=drop-table",
        "c=drop/table",
    ] {
        assert_eq!(verdict(q), None, "{q}");
    }
}

#[test]
fn bodies_by_processor() {
    let set = rules(
        r#"
SecRule REQUEST_HEADERS:Content-Type "@rx ^application/json" "id:200001,phase:1,pass,nolog,ctl:requestBodyProcessor=JSON"
SecRule REQBODY_ERROR "!@eq 0" "id:200002,phase:2,deny,status:400,msg:'Failed to parse request body.',logdata:'%{reqbody_error_msg}'"
SecRule ARGS:json.user.name "@streq root" "id:300,phase:2,pass"
SecRule ARGS:json.tags.1 "@streq b" "id:301,phase:2,pass"
SecRule ARGS_POST:note "@contains drop table" "id:302,phase:2,pass,t:lowercase"
SecRule REQUEST_BODY "@contains note=" "id:303,phase:2,pass"
"#,
    );
    let json = r#"{"user":{"name":"root"},"tags":["a","b"]}"#;
    assert_eq!(
        run(&set, post("/", "application/json", json)).1,
        vec![300, 301]
    );
    let (i, ids) = run(&set, post("/", "application/json", "{\"user\":"));
    assert_eq!(i.map(|i| i.status), Some(400));
    assert_eq!(ids, vec![200002]);
    assert_eq!(
        run(
            &set,
            post(
                "/",
                "application/x-www-form-urlencoded",
                "note=DROP+TABLE+x"
            )
        )
        .1,
        vec![302, 303]
    );
    // a body processor not built yet fails closed through REQBODY_ERROR
    let (i, _) = run(
        &set,
        post("/", "multipart/form-data; boundary=x", "--x\r\n"),
    );
    assert_eq!(i.map(|i| i.rule_id), Some(200002));
}

// ------------------------------------------------------------ CRS

fn crs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crs")
}

/// CRS at PL1 in blocking mode, with the engine rules ModSecurity's
/// recommended configuration adds (body processors, body errors).
fn crs_set() -> RuleSet {
    palisade_waf::crs::load(&crs(), &palisade_waf::crs::CrsOptions::default())
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn crs_blocks_attacks_and_passes_ordinary_requests() {
    let set = crs_set();
    for (uri, expect) in [
        ("/products?id=1%27%20OR%20%271%27%3D%271", 942100),
        ("/search?q=%3Cscript%3Ealert(1)%3C/script%3E", 941100),
        ("/files?path=../../../../etc/passwd", 930100),
        ("/run?cmd=;cat%20/etc/passwd", 932160),
    ] {
        let (i, ids) = run(&set, get(uri));
        assert_eq!(
            i.as_ref().map(|i| i.rule_id),
            Some(949110),
            "{uri}: {ids:?}"
        );
        assert!(ids.contains(&expect), "{uri}: {ids:?}");
    }
    for uri in [
        "/",
        "/products?id=42&sort=price",
        "/search?q=O%27Brien%27s+pub+near+me",
        "/articles/2026/12/hello-world?utm_source=news",
    ] {
        assert_eq!(run(&set, get(uri)), (None, vec![]), "{uri}");
    }
    let body = r#"{"name":"Zoë O'Neil","comment":"Great product, 5 stars! Works with my <3 year old laptop.","qty":2}"#;
    assert_eq!(
        run(&set, post("/api/orders", "application/json", body)),
        (None, vec![])
    );
    let body = r#"{"name":"x","comment":"1' UNION SELECT password FROM users--"}"#;
    let (i, ids) = run(&set, post("/api/orders", "application/json", body));
    assert_eq!(i.map(|i| i.rule_id), Some(949110), "{ids:?}");
}

#[test]
fn xml_bodies_give_the_root_text_and_every_attribute() {
    let set = rules(
        r#"
SecRule REQUEST_HEADERS:Content-Type "@rx ^application/xml" "id:200000,phase:1,pass,nolog,t:lowercase,ctl:requestBodyProcessor=XML"
SecRule REQBODY_ERROR "!@eq 0" "id:200002,phase:2,deny,status:400,msg:'Failed to parse request body.'"
SecRule XML://@* "@rx java\.io" "id:401,phase:2,pass"
SecRule XML:/* "@rx ^onetwo<three>$" "id:402,phase:2,pass"
"#,
    );
    let xml =
        r#"<?xml version="1.0"?><a x="java.io.File"><b>one</b><c y="ok">two&lt;three&gt;</c></a>"#;
    assert_eq!(
        run(&set, post("/", "application/xml", xml)).1,
        vec![401, 402]
    );
    for bad in [
        "<a><b></a>",
        "<a></a><b/>",
        "<a>&unknown;</a>",
        "text",
        "<a>",
    ] {
        let (i, ids) = run(&set, post("/", "application/xml", bad));
        assert_eq!(i.map(|i| i.rule_id), Some(200002), "{bad}: {ids:?}");
    }
    // no entity from a DTD is ever expanded
    let xxe =
        r#"<?xml version="1.0"?><!DOCTYPE a [<!ENTITY e SYSTEM "file:///etc/passwd">]><a>&e;</a>"#;
    assert_eq!(
        run(&set, post("/", "application/xml", xxe))
            .0
            .map(|i| i.rule_id),
        Some(200002)
    );
}

#[test]
fn multipart_bodies_give_arguments_files_and_part_headers() {
    let set = rules(
        r#"
SecRule REQBODY_ERROR "!@eq 0" "id:200002,phase:2,deny,status:400"
SecRule ARGS:note "@contains drop table" "id:501,phase:2,pass,t:lowercase"
SecRule FILES "@rx \.jsp$" "id:502,phase:2,pass"
SecRule FILES_NAMES "@streq upload" "id:503,phase:2,pass"
SecRule MULTIPART_PART_HEADERS:upload "@rx ^content-type: text/x-jsp$" "id:504,phase:2,pass,t:lowercase"
SecRule FILES_COMBINED_SIZE "@eq 5" "id:505,phase:2,pass"
"#,
    );
    let body = "--XyZ\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nDROP TABLE users\r\n--XyZ\r\nContent-Disposition: form-data; name=\"upload\"; filename=\"shell.jsp\"\r\nContent-Type: text/x-jsp\r\n\r\nhello\r\n--XyZ--\r\n";
    assert_eq!(
        run(&set, post("/", "multipart/form-data; boundary=XyZ", body)).1,
        vec![501, 502, 503, 504, 505]
    );
}

// ------------------------------------------------------------ review findings (CRS attack review)

#[test]
fn a_json_body_cannot_make_megabytes_of_argument_names() {
    let set = rules(
        r#"
SecRule REQUEST_HEADERS:Content-Type "@rx ^application/json" "id:200001,phase:1,pass,nolog,ctl:requestBodyProcessor=JSON"
SecRule REQBODY_ERROR "!@eq 0" "id:200002,phase:2,deny,status:400"
SecRule ARGS_NAMES "@rx ^json\.order\.note$" "id:601,phase:2,pass"
"#,
    );
    // a 16,000-byte key over 2,000 items: 32 MB of names from a 20 KB body
    let body = format!(
        "{{\"{}\":[{}]}}",
        "k".repeat(16_000),
        vec!["0"; 2_000].join(",")
    );
    let (i, ids) = run(&set, post("/", "application/json", &body));
    assert_eq!(i.map(|i| i.rule_id), Some(200002), "{ids:?}");
    // an ordinary nested body is well inside the budget
    let body = r#"{"order":{"items":[{"sku":"a","qty":1},{"sku":"b","qty":2}],"note":"x"}}"#;
    assert_eq!(run(&set, post("/", "application/json", body)).1, vec![601]);
}

#[test]
fn a_multipart_field_is_a_file_only_with_its_own_filename_parameter() {
    let set = rules(
        r#"
SecRule REQBODY_ERROR "!@eq 0" "id:200002,phase:2,deny,status:400"
SecRule ARGS:q "@contains <script>" "id:701,phase:2,pass"
SecRule FILES_NAMES "@rx ." "id:702,phase:2,pass"
"#,
    );
    // `filename` inside another parameter's quoted value: still a field
    let body = "--XyZ\r\nContent-Disposition: form-data; name=\"q\"; x=\" filename=a \"\r\n\r\n<script>alert(1)</script>\r\n--XyZ--\r\n";
    assert_eq!(
        run(&set, post("/", "multipart/form-data; boundary=XyZ", body)).1,
        vec![701]
    );
    // RFC 5987's filename* makes a file
    let body = "--XyZ\r\nContent-Disposition: form-data; name=\"up\"; filename*=UTF-8''d%C3%A9ploy.sh\r\n\r\n#!/bin/sh\r\n--XyZ--\r\n";
    assert_eq!(
        run(&set, post("/", "multipart/form-data; boundary=XyZ", body)).1,
        vec![702]
    );
}

/// A JSON key given twice yields both values, in document order, as
/// ModSecurity's parser does: a parsed map kept only the last, so an attack
/// in the first reached a service whose parser keeps the first (and no rule
/// saw it).
#[test]
fn a_json_key_given_twice_yields_both_values() {
    let set = rules(
        r#"
SecRule REQUEST_HEADERS:Content-Type "@rx ^application/json" "id:200001,phase:1,pass,nolog,ctl:requestBodyProcessor=JSON"
SecRule REQBODY_ERROR "!@eq 0" "id:200002,phase:2,deny,status:400"
SecRule ARGS:json.q "@contains <script>" "id:801,phase:2,deny,status:403"
SecRule ARGS:json.n "@streq 7" "id:802,phase:2,pass"
"#,
    );
    let (i, ids) = run(
        &set,
        post(
            "/",
            "application/json",
            r#"{"q":"<script>alert(1)</script>","q":"hello","n":7}"#,
        ),
    );
    assert_eq!(i.map(|i| i.rule_id), Some(801), "{ids:?}");
    let (i, ids) = run(
        &set,
        post("/", "application/json", r#"{"q":"hello","q":"<script>"}"#),
    );
    assert_eq!(i.map(|i| i.rule_id), Some(801), "{ids:?}");
    let (i, ids) = run(
        &set,
        post("/", "application/json", r#"{"q":"hello","n":7.0}"#),
    );
    assert_eq!(
        (i.map(|i| i.rule_id), ids),
        (None, vec![]),
        "7.0 is written as 7.0"
    );
    assert_eq!(
        run(
            &set,
            post("/", "application/json", r#"{"q":"hello","n":7}"#)
        )
        .1,
        vec![802]
    );
    // malformed and trailing garbage are body errors
    for bad in [r#"{"q":"#, r#"{"q":"a"} x"#] {
        let (i, _) = run(&set, post("/", "application/json", bad));
        assert_eq!(i.map(|i| i.rule_id), Some(200002), "{bad}");
    }
}

fn response(status: u16, content_type: &str, body: Option<&str>) -> palisade_waf::tx::Response {
    palisade_waf::tx::Response {
        status,
        headers: vec![("Content-Type".into(), content_type.as_bytes().to_vec())],
        body: body.map(|b| b.as_bytes().to_vec()),
    }
}

#[test]
fn response_phases_see_status_headers_and_body_and_deny_a_leak() {
    let set = rules(
        r#"SecRuleEngine On
SecRule RESPONSE_STATUS "@streq 500" "id:30,phase:3,pass,log,msg:'server error'"
SecRule RESPONSE_HEADERS:Content-Type "@beginsWith text/" "id:31,phase:3,pass,log,msg:'text'"
SecRule RESPONSE_BODY "@rx (?i)you have an error in your sql syntax" "id:40,phase:4,deny,status:403,log,msg:'sql leak'"
"#,
    );
    // a leak: phase 3 saw status and header, phase 4 denies on the body
    let mut tx = Transaction::new(&set, get("/"));
    assert!(tx.process_request().is_none());
    let i = tx
        .process_response(response(
            500,
            "text/html",
            Some("You have an error in your SQL syntax near '1'"),
        ))
        .cloned()
        .unwrap();
    assert_eq!((i.rule_id, i.status, i.action), (40, 403, Disruptive::Deny));
    assert_eq!(
        tx.matches.iter().map(|m| m.id).collect::<Vec<_>>(),
        [30, 31, 40]
    );
    // an ordinary page passes
    let mut tx = Transaction::new(&set, get("/"));
    tx.process_request();
    assert!(
        tx.process_response(response(200, "text/html", Some("<p>orders</p>")))
            .is_none()
    );
    assert_eq!(tx.matches.iter().map(|m| m.id).collect::<Vec<_>>(), [31]);
    // a body not inspected (None) never reaches phase 4
    let mut tx = Transaction::new(&set, get("/"));
    tx.process_request();
    assert!(
        tx.process_response(response(200, "application/zip", None))
            .is_none()
    );
    assert!(tx.matches.is_empty());
}

#[test]
fn a_resumed_transaction_keeps_what_the_request_phases_left() {
    // phase 1 sets a score and removes rule 41 for /public; phase 4 adds
    // to the score and blocks on it
    let set = rules(
        r#"SecRuleEngine On
SecAction "id:1,phase:1,pass,nolog,setvar:tx.score=3"
SecRule REQUEST_URI "@beginsWith /public" "id:2,phase:1,pass,nolog,ctl:ruleRemoveById=41"
SecRule RESPONSE_BODY "@contains secret" "id:40,phase:4,pass,log,setvar:tx.score=+2"
SecRule RESPONSE_BODY "@contains secret" "id:41,phase:4,pass,log,setvar:tx.score=+10"
SecRule TX:score "@ge 5" "id:50,phase:4,deny,status:403,log,msg:'score %{tx.score}'"
"#,
    );
    let carried = |uri: &str| {
        let mut tx = Transaction::new(&set, get(uri));
        tx.process_request();
        tx.carry()
    };
    // /private: 3 + 2 + 10
    let mut tx = Transaction::resume(&set, get("/private"), carried("/private"));
    let i = tx
        .process_response(response(200, "text/plain", Some("a secret")))
        .cloned()
        .unwrap();
    assert_eq!(i.rule_id, 50);
    assert_eq!(tx.tx("score"), Some(&b"15"[..]));
    // /public: the ctl of phase 1 still removes 41; 3 + 2 still blocks
    let mut tx = Transaction::resume(&set, get("/public"), carried("/public"));
    let i = tx
        .process_response(response(200, "text/plain", Some("a secret")))
        .cloned()
        .unwrap();
    assert_eq!(i.rule_id, 50);
    assert_eq!(tx.tx("score"), Some(&b"5"[..]));
    assert_eq!(
        tx.matches.iter().map(|m| m.id).collect::<Vec<_>>(),
        [40, 50]
    );
    // nothing secret: 3, passes
    let mut tx = Transaction::resume(&set, get("/private"), carried("/private"));
    assert!(
        tx.process_response(response(200, "text/plain", Some("fine")))
            .is_none()
    );
}

#[test]
fn crs_refuses_a_response_that_leaks_sql_errors_and_passes_an_ordinary_one() {
    let set = crs_set();
    let mut tx = Transaction::new(&set, get("/api/orders/1"));
    assert!(tx.process_request().is_none());
    let i = tx
        .process_response(response(
            200,
            "text/html; charset=utf-8",
            Some("<b>Warning</b>: mysql_fetch_array() expects parameter 1 to be resource, boolean given in <b>/var/www/orders.php</b>"),
        ))
        .cloned()
        .unwrap();
    // the outbound anomaly score blocks at 959100
    assert_eq!(
        i.rule_id,
        959100,
        "{:?}",
        tx.matches.iter().map(|m| m.id).collect::<Vec<_>>()
    );
    let mut tx = Transaction::new(&set, get("/api/orders/1"));
    tx.process_request();
    assert!(
        tx.process_response(response(
            200,
            "application/json",
            Some(r#"{"id":1,"items":["select a size"],"note":"O'Brien's order"}"#)
        ))
        .is_none()
    );
}

#[test]
fn a_match_carries_the_masked_shape_of_what_matched() {
    use palisade_waf::tx::masked_excerpt;
    assert_eq!(masked_excerpt(b"1' OR '1'='1"), "*' ** '*'='*");
    assert_eq!(
        masked_excerpt(b"<script>alert(\"x\")</script>"),
        "<******>*****('*')</******>"
    );
    assert_eq!(masked_excerpt("pâss\\\n\t".as_bytes()), "*****/..");
    let long = masked_excerpt(&[b'a'; 40]);
    assert_eq!(long, format!("{}…", "*".repeat(32)));
    // the excerpt of a CRS match: no letter or digit of the request
    let set = crs_set();
    let mut tx = Transaction::new(
        &set,
        get("/products?id=1%27%20OR%20%27secret42%27%3D%27secret42"),
    );
    tx.process_request();
    let m = tx.matches.iter().find(|m| m.id == 942100).unwrap();
    assert_eq!(m.excerpt, "*' ** '********'='********");
    assert!(
        tx.matches
            .iter()
            .all(|m| !m.excerpt.contains("secret") && !m.excerpt.contains("42"))
    );
}

/// Review of 2026-12-06: CRS 921180's message names the argument
/// (`%{MATCHED_VAR_NAME}`), which put a request's key (a token) in the log.
#[test]
fn the_safe_message_expands_numbers_only() {
    let set = rules(
        r#"SecRuleEngine On
SecAction "id:1,phase:1,pass,nolog,setvar:tx.score=7"
SecRule ARGS_NAMES "@rx ^sk_" "id:10,phase:2,pass,log,msg:'pollution (%{MATCHED_VAR_NAME}) score %{tx.score}'"
"#,
    );
    let mut tx = Transaction::new(&set, get("/?sk_live_SECRET=1"));
    tx.process_request();
    let m = tx.matches.iter().find(|m| m.id == 10).unwrap();
    assert_eq!(m.msg, "pollution (ARGS_NAMES:sk_live_SECRET) score 7");
    assert_eq!(m.msg_safe, "pollution (%{MATCHED_VAR_NAME}) score 7");
}

fn with_header(mut r: Request, name: &str, value: &str) -> Request {
    r.headers.push((name.into(), value.as_bytes().to_vec()));
    r
}

/// The memo of negative answers (crate::memo): a header value a link did
/// not match is skipped next time, and nothing else changes. Each request
/// below is a new transaction on the same rule set.
#[test]
fn header_values_known_not_to_match_are_skipped_and_nothing_else_changes() {
    let set = rules(
        r#"
SecRule REQUEST_HEADERS:X-Probe "@rx (?i)union\s+select" "id:20,phase:1,deny,status:403,t:urlDecodeUni"
SecRule REQUEST_HEADERS:X-Probe "!@rx ^[a-z0-9 %]+$" "id:21,phase:1,pass,log"
SecAction "id:22,phase:1,pass,nolog,setvar:tx.allowed=/alpha/"
SecRule ARGS:allow "@streq beta" "id:23,phase:1,pass,nolog,setvar:tx.allowed=/beta/"
SecRule REQUEST_HEADERS:X-Probe "!@within %{tx.allowed}" "id:24,phase:1,pass,log"
SecRule REQUEST_HEADERS:X-Probe "@rx ^(\w+)" "id:25,phase:1,pass,log,capture,chain"
    SecRule TX:1 "@streq gamma" "t:none"
SecRule REQUEST_HEADERS:X-Probe "!@rx ^(a)lpha$" "id:26,phase:1,pass,nolog,capture"
SecRule TX:1 "@streq a" "id:27,phase:1,pass,log"
SecRule ARGS_NAMES "@rx ^debug$" "id:28,phase:1,deny,status:403"
"#,
    );
    // a benign value: no match but 27 (26's miss captured TX:1 = a); misses
    // kept for 20 and 21 only (24 reads TX, 25 matched, 26 writes TX when it
    // misses, 27 reads TX)
    for _ in 0..2 {
        let (i, ids) = run(&set, with_header(get("/"), "X-Probe", "alpha"));
        assert_eq!((i.map(|i| i.rule_id), ids), (None, vec![27]));
        assert_eq!(
            set.memo.len(),
            2,
            "20 and 21 missed 'alpha' and depend on it alone"
        );
    }
    // an attack in the same header is still refused, every time (a match is
    // never kept)
    for _ in 0..2 {
        let (i, ids) = run(
            &set,
            with_header(get("/"), "X-Probe", "1%20UNION%20SELECT%20pw"),
        );
        assert_eq!(i.map(|i| (i.rule_id, i.status)), Some((20, 403)));
        assert_eq!(ids, vec![20]);
    }
    // spellings of the attack (case, spaces, encodings) after the benign
    // values were kept: each is its own value, evaluated in full
    for v in [
        "1 UNION SELECT pw",
        "1%20union%20select%20pw",
        "1 UnIoN\tSeLeCt pw",
        " 1 union  select pw ",
    ] {
        for _ in 0..2 {
            let (i, _) = run(&set, with_header(get("/"), "X-Probe", v));
            assert_eq!(i.map(|i| (i.rule_id, i.status)), Some((20, 403)), "{v:?}");
        }
    }
    // a rule whose operator reads TX answers by this transaction's TX, not
    // by what an earlier one kept: 'alpha' is outside /beta/
    let (_, ids) = run(&set, with_header(get("/?allow=beta"), "X-Probe", "alpha"));
    assert_eq!(ids, vec![24, 27]);
    // a capturing link is evaluated each time: TX:1 set, the chain completes
    // (24 too: 'gamma' is outside /alpha/)
    for _ in 0..2 {
        let (_, ids) = run(&set, with_header(get("/"), "X-Probe", "gamma"));
        assert_eq!(ids, vec![24, 25]);
    }
    // argument values are never kept (they differ per request): rule 23
    // misses 'zeta' and 'eta' without an entry; the new name 'page' is kept
    // for 28 ('allow' was, by the request above)
    let before = set.memo.len();
    let _ = run(&set, get("/?allow=zeta&page=2"));
    assert_eq!(set.memo.len(), before + 1);
    let _ = run(&set, get("/?allow=eta&page=3"));
    assert_eq!(set.memo.len(), before + 1);
    for _ in 0..2 {
        let (i, _) = run(&set, get("/?allow=zeta&debug=1"));
        assert_eq!(i.map(|i| (i.rule_id, i.status)), Some((28, 403)));
    }
}

/// The memo keeps credentials under their own names (a request repeating
/// another client's token in another header must not learn by its timing
/// that the token was seen), one request cannot flood it, and a clone
/// starts empty.
#[test]
fn the_memo_keeps_credentials_apart_and_is_bounded_per_request() {
    let set = rules(
        r#"
SecRule REQUEST_HEADERS|REQUEST_COOKIES|REQUEST_COOKIES_NAMES "@rx (?i)union\s+select" "id:30,phase:1,deny,status:403,t:urlDecodeUni"
"#,
    );
    let token = "Bearer eyJhbGciOiJFUzI1NiJ9.e30.c2ln";
    let mut r = get("/");
    for (h, v) in [
        ("Authorization", token),
        ("X-API-Key", "pal_live_0123456789"),
        ("Cookie", "sid=7f3a9c; theme=dark"),
    ] {
        r = with_header(r, h, v);
    }
    let (i, _) = run(&set, r.clone());
    assert!(i.is_none());
    // Host, User-Agent, Accept, Authorization, X-API-Key, Cookie, the
    // cookies sid and theme and their names
    assert_eq!(set.memo.len(), 10);
    let (i, _) = run(&set, r);
    assert!(i.is_none());
    assert_eq!(set.memo.len(), 10);
    // the token under another header name, the session under another cookie
    // name: not known (two new entries), so not answered any faster
    let probe = with_header(get("/"), "X-Probe", token);
    let probe = with_header(probe, "X-Forwarded-Cookie", "x");
    let _ = run(&set, with_header(probe, "Cookie", "other=7f3a9c"));
    // X-Probe, X-Forwarded-Cookie ('x' under its own name), Cookie
    // ('other=7f3a9c'), the cookie 'other' and its name
    assert_eq!(set.memo.len(), 15);
    // an attack in a credential header is found, every time
    for _ in 0..2 {
        let (i, _) = run(
            &set,
            with_header(get("/"), "X-Auth-Token", "1 union select 2"),
        );
        assert_eq!(i.map(|i| i.rule_id), Some(30));
    }
    // one request with 1,200 distinct cookie names adds at most 256 entries
    let jar = (0..1200)
        .map(|i| format!("n{i}=v"))
        .collect::<Vec<_>>()
        .join("; ");
    let before = set.memo.len();
    let _ = run(&set, with_header(get("/"), "Cookie", &jar));
    assert_eq!(
        set.memo.len(),
        before + palisade_waf::memo::MAX_NEW_PER_TRANSACTION as usize
    );
    // a clone of the rule set has a memo of its own, empty
    assert!(set.clone().memo.is_empty());
}

/// The needed-byte check (crate::byteset) skips a regex only when it cannot
/// match: a multiMatch link whose raw value lacks the byte still matches the
/// decoded form (and captures), a negated skip matches, a skipped capturing
/// link leaves TX:1 as it was; values over 32 bytes take the cached path.
#[test]
fn regexes_skipped_for_missing_bytes_answer_as_if_run() {
    let set = rules(
        r#"
SecRule ARGS:a "@rx (<)scr" "id:1,phase:2,pass,capture,t:none,t:urlDecodeUni,multiMatch"
SecRule ARGS:a "!@rx ~" "id:2,phase:2,pass"
SecRule ARGS:a "@rx (z)(q)" "id:3,phase:2,pass,capture"
SecRule TX:1 "@streq <" "id:4,phase:2,pass"
SecRule ARGS:a "@rx <script" "id:5,phase:2,pass,t:none,t:urlDecodeUni"
SecRule ARGS:a "@rx <script" "id:6,phase:2,pass"
SecRule ARGS:a "!@rx <script" "id:7,phase:2,pass"
"#,
    );
    // ARGS:a = 40 x's then `%3Cscript%3E` (52 bytes, no `<`)
    let uri = format!("/?a={}%253Cscript%253E", "x".repeat(40));
    assert_eq!(run(&set, get(&uri)).1, vec![1, 2, 4, 5, 7]);
    // short values (computed, not cached) answer the same
    assert_eq!(
        run(&set, get("/?a=%253Cscript%253E")).1,
        vec![1, 2, 4, 5, 7]
    );
}
