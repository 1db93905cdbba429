use super::*;

fn json(body: &str) -> Inspection {
    inspect(
        &RequestParts {
            query: None,
            body: Some((BodyKind::Json, body.as_bytes())),
        },
        &Limits::default(),
    )
}

fn query(q: &str) -> Inspection {
    inspect(
        &RequestParts {
            query: Some(q),
            body: None,
        },
        &Limits::default(),
    )
}

fn form(body: &str) -> Inspection {
    inspect(
        &RequestParts {
            query: None,
            body: Some((BodyKind::Form, body.as_bytes())),
        },
        &Limits::default(),
    )
}

/// (rule, variable) of every finding.
fn hits(i: &Inspection) -> Vec<(Rule, String)> {
    i.findings
        .iter()
        .map(|f| (f.rule, f.variable.clone()))
        .collect()
}

fn one(rule: Rule, variable: &str) -> Vec<(Rule, String)> {
    vec![(rule, variable.to_owned())]
}

#[test]
fn content_types() {
    assert_eq!(
        BodyKind::of_content_type("application/json"),
        Some(BodyKind::Json)
    );
    assert_eq!(
        BodyKind::of_content_type("Application/JSON; charset=utf-8"),
        Some(BodyKind::Json)
    );
    assert_eq!(
        BodyKind::of_content_type("application/merge-patch+json"),
        Some(BodyKind::Json)
    );
    assert_eq!(
        BodyKind::of_content_type("application/x-www-form-urlencoded"),
        Some(BodyKind::Form)
    );
    assert_eq!(BodyKind::of_content_type("text/plain"), None);
    assert_eq!(
        BodyKind::of_content_type("multipart/form-data; boundary=x"),
        None
    );
}

#[test]
fn arguments_are_parsed_once_with_their_names_split_as_qs_and_json_paths() {
    let i = query("a=1&b[c][]=x+y&d%5Be%5D=%C3%A9&f");
    let got: Vec<(Vec<&str>, Option<&str>)> = i
        .args
        .args
        .iter()
        .map(|a| {
            (
                a.segments.iter().map(String::as_str).collect(),
                a.value.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (vec!["a"], Some("1")),
            (vec!["b", "c", ""], Some("x y")),
            (vec!["d", "e"], Some("é")),
            (vec!["f"], Some("")),
        ]
    );
    assert!(i.findings.is_empty());
    assert_eq!(i.args.args[1].variable(), "query:b[c][]");

    // JSON members are checked as they are parsed, not kept
    let i = json(r#"{"a":{"b":[1,"x",null,{}]},"c/d":true}"#);
    assert!(i.args.args.is_empty());
    assert!(i.findings.is_empty());
}

#[test]
fn nosql_operators_as_keys_are_found_in_json_query_and_forms() {
    assert_eq!(
        hits(&json(r#"{"user":"admin","password":{"$ne":null}}"#)),
        one(Rule::NoSqlOperator, "json:/password/$ne")
    );
    assert_eq!(
        hits(&json(
            r#"{"filter":{"a":[{"b":{"$where":"sleep(1000)"}}]}}"#
        )),
        one(Rule::NoSqlOperator, "json:/filter/a/0/b/$where")
    );
    assert_eq!(
        hits(&query("user=admin&password[$ne]=x")),
        one(Rule::NoSqlOperator, "query:password[$ne]")
    );
    assert_eq!(
        hits(&query("user%5B%24gt%5D=")),
        one(Rule::NoSqlOperator, "query:user[$gt]")
    );
    assert_eq!(
        hits(&form("name[$regex]=.*")),
        one(Rule::NoSqlOperator, "form:name[$regex]")
    );
    // qs's allowDots spelling
    assert_eq!(
        hits(&query("user.$ne=1")),
        one(Rule::NoSqlOperator, "query:user.$ne")
    );
}

#[test]
fn dollar_words_that_are_not_operators_pass() {
    for body in [
        r#"{"$schema":"https://json-schema.org/draft/2020-12/schema","$id":"x","$ref":"x/a"}"#,
        r#"{"price":{"$":5,"currency":"USD"}}"#,
        r#"{"note":"use $ne and $where in mongo","q":"$gt"}"#,
        r#"{"$ Where":2,"$5":1,"$":0}"#,
    ] {
        assert_eq!(hits(&json(body)), vec![], "{body}");
    }
    assert_eq!(hits(&query("q=%24ne&sort=-price&total=$5")), vec![]);
}

#[test]
fn prototype_pollution_is_found_at_any_depth() {
    assert_eq!(
        hits(&json(r#"{"a":{"__proto__":{"isAdmin":true}}}"#)),
        one(Rule::PrototypePollution, "json:/a/__proto__")
    );
    assert_eq!(
        hits(&json(r#"{"__proto__":{}}"#)),
        one(Rule::PrototypePollution, "json:/__proto__")
    );
    assert_eq!(
        hits(&json(
            r#"{"x":[{"constructor":{"prototype":{"polluted":1}}}]}"#
        )),
        one(Rule::PrototypePollution, "json:/x/0/constructor/prototype")
    );
    // lodash.set-style paths inside one key
    assert_eq!(
        hits(&json(r#"{"path":{"__proto__.polluted":1}}"#)),
        one(Rule::PrototypePollution, "json:/path/__proto__.polluted")
    );
    assert_eq!(
        hits(&json(r#"{"constructor.prototype.polluted":1}"#)),
        one(
            Rule::PrototypePollution,
            "json:/constructor.prototype.polluted"
        )
    );
    assert_eq!(
        hits(&query("a[__proto__][admin]=1")),
        one(Rule::PrototypePollution, "query:a[__proto__][admin]")
    );
    assert_eq!(
        hits(&query("__proto__.admin=1")),
        one(Rule::PrototypePollution, "query:__proto__.admin")
    );
    assert_eq!(
        hits(&form("constructor[prototype][admin]=1")),
        one(
            Rule::PrototypePollution,
            "form:constructor[prototype][admin]"
        )
    );
    assert_eq!(
        hits(&query("a%5B__proto__%5D=1")),
        one(Rule::PrototypePollution, "query:a[__proto__]")
    );
}

#[test]
fn lookalikes_of_prototype_pollution_pass() {
    for body in [
        r#"{"constructor":"Ferrari","prototype":"v2","proto":"http"}"#,
        r#"{"car":{"constructor":{"name":"Ferrari"}},"device":{"prototype":true}}"#,
        r#"{"text":"__proto__ is a property of every object"}"#,
        r#"{"__proto":1,"proto__":2,"_proto_":3}"#,
    ] {
        assert_eq!(hits(&json(body)), vec![], "{body}");
    }
    assert_eq!(hits(&query("constructor=Ferrari&q=__proto__")), vec![]);
}

#[test]
fn ssrf_targets_are_found_in_every_spelling() {
    let cases = [
        "http://127.0.0.1/admin",
        "http://localhost:8080/",
        "http://LOCALHOST./",
        "http://api.localhost/",
        "http://2130706433/",
        "http://0177.0.0.1/",
        "http://0x7f.1/",
        "http://127.1/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:7f00:1]/",
        "http://[64:ff9b::a00:1]/",
        "http://[2002:a9fe:a9fe::]/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://100.100.100.200/",
        "http://10.0.0.5/",
        "http://172.20.1.1/",
        "http://192.168.1.1/",
        "http://0.0.0.0:6379/",
        "http://[fe80::1]/",
        "http://[fc00::1]/",
        "https://orders.internal/",
        "http://printer.local/",
        "http://127.0.0.1.nip.io/",
        "http://app.10.0.0.1.nip.io/",
        "http://app-10-0-0-1.sslip.io/",
        "http://7f000001.nip.io/",
        "http://anything.localtest.me/",
        "http://evil.example@127.0.0.1/",
        "http://127.0.0.1#@evil.example/",
        "file:///etc/passwd",
        "gopher://evil.example:70/_SET",
        "dict://127.0.0.1:11211/stats",
        "//169.254.169.254/latest",
        // spellings WHATWG (Node's URL, fetch) reads as http://127.0.0.1/
        "http:/127.0.0.1/",
        "http:127.0.0.1",
        "http:\\\\127.0.0.1\\admin",
        "HTTP://LOCALHOST/",
        "http://ⓛⓞⓒⓐⓛⓗⓞⓢⓣ/",
        "http://0/",
        "ws://[::]:9229/",
    ];
    for url in cases {
        let body = serde_json::json!({ "webhook": { "target_url": url } }).to_string();
        assert_eq!(
            hits(&json(&body)),
            one(Rule::SsrfTarget, "json:/webhook/target_url"),
            "{url}"
        );
        // values with a scheme are judged whatever their name
        if !url.starts_with("//") {
            let body = serde_json::json!({ "comment": url }).to_string();
            assert_eq!(hits(&json(&body)).len(), 1, "{url}");
        }
    }
    // scheme-less hosts in URL-named parameters
    assert_eq!(
        hits(&query("callback=169.254.169.254")),
        one(Rule::SsrfTarget, "query:callback")
    );
    assert_eq!(
        hits(&form("host=localhost%3A6379")),
        one(Rule::SsrfTarget, "form:host")
    );
    assert_eq!(
        hits(&query("imageUrl=http%3A%2F%2F127.0.0.1%2F")),
        one(Rule::SsrfTarget, "query:imageUrl")
    );
    // the finding names the address, never the rest of the value
    let f = &json(r#"{"url":"http://user:hunter2@10.1.2.3/secret?token=abc"}"#).findings[0];
    assert_eq!(f.reason, "URL names a private address");
    assert!(!f.reason.contains("hunter2") && !f.variable.contains("hunter2"));
}

#[test]
fn public_urls_and_free_text_pass() {
    for v in [
        "https://example.com/a?b=c",
        "https://api.github.com/repos/x/y",
        "http://8.8.8.8/",
        "http://[2001:4860:4860::8888]/",
        "https://10.0.0.1.example.com/",
        "https://nip.io/",
        "https://1.1.1.1.nip.io/",
        "https://2001-4860-4860--8888.sslip.io/",
        "https://internal-docs.example.com/",
        "mailto:someone@example.com",
        "data:text/plain;base64,SGVsbG8=",
        "see http://127.0.0.1/ for details",
        "localhost:8080 is where it runs",
        "note: 127.0.0.1",
        "c:\\windows\\system32",
    ] {
        let body = serde_json::json!({ "url": v, "note": v }).to_string();
        assert_eq!(hits(&json(&body)), vec![], "{v}");
    }
    // an address in free text under an ordinary name
    assert_eq!(
        hits(&json(
            r#"{"note":"the server at 127.0.0.1 is down","version":"10.0.0.1"}"#
        )),
        vec![]
    );
    assert_eq!(hits(&query("q=localhost&page=2")), vec![]);
}

#[test]
fn json_bombs_stop_at_their_limit() {
    let deep = format!("{}1{}", "[".repeat(33), "]".repeat(33));
    let i = json(&deep);
    assert_eq!(i.findings.len(), 1);
    assert_eq!(i.findings[0].rule, Rule::JsonTooDeep);
    assert_eq!(i.findings[0].reason, "nested deeper than 32");
    // 32 levels are allowed
    let ok = format!("{}1{}", "[".repeat(32), "]".repeat(32));
    assert_eq!(hits(&json(&ok)), vec![]);
    // far deeper than serde_json's own limit: still our finding
    let deeper = format!("{}1{}", "{\"a\":".repeat(5000), "}".repeat(5000));
    assert_eq!(json(&deeper).findings[0].rule, Rule::JsonTooDeep);

    let wide = format!("[{}0]", "0,".repeat(10_000));
    let i = json(&wide);
    assert_eq!(hits(&i), one(Rule::TooManyMembers, "json:/10000"));
    let ok = format!("[{}0]", "0,".repeat(9_999));
    assert_eq!(hits(&json(&ok)), vec![]);
    let keys: Vec<String> = (0..10_001).map(|k| format!("\"k{k}\":1")).collect();
    let i = json(&format!("{{{}}}", keys.join(",")));
    assert_eq!(i.findings[0].rule, Rule::TooManyMembers);

    let many = vec!["a=1"; 10_001].join("&");
    assert_eq!(hits(&query(&many)), one(Rule::TooManyMembers, "query"));
}

#[test]
fn duplicate_json_keys_are_found_at_any_depth() {
    assert_eq!(
        hits(&json(r#"{"role":"user","role":"admin"}"#)),
        one(Rule::DuplicateJsonKey, "json:/role")
    );
    assert_eq!(
        hits(&json(r#"{"a":[{"b":1,"c":2,"b":3}]}"#)),
        one(Rule::DuplicateJsonKey, "json:/a/0/b")
    );
    // the same key in sibling objects is not a duplicate
    assert_eq!(hits(&json(r#"{"a":{"b":1},"c":{"b":2}}"#)), vec![]);
    // repeated query parameters are qs arrays, not duplicates
    assert_eq!(hits(&query("tag=a&tag=b")), vec![]);
}

#[test]
fn malformed_input_is_a_finding_never_half_decoded() {
    assert_eq!(
        hits(&query("a=%zz")),
        one(Rule::MalformedEncoding, "query:a")
    );
    assert_eq!(
        hits(&query("a%2=1")),
        one(Rule::MalformedEncoding, "query:a%2")
    );
    assert_eq!(
        hits(&query("a=%ff%fe")),
        one(Rule::MalformedEncoding, "query:a")
    );
    let i = inspect(
        &RequestParts {
            query: None,
            body: Some((BodyKind::Form, b"a=\xff")),
        },
        &Limits::default(),
    );
    assert_eq!(hits(&i), one(Rule::MalformedEncoding, "form"));
    for (body, reason) in [
        (
            r#"{"a":1"#,
            "invalid JSON at line 1 column 6: EOF while parsing an object",
        ),
        (
            r#"{"a":1} x"#,
            "invalid JSON at line 1 column 9: trailing characters",
        ),
        (
            r#"{"a":"\ud800"}"#,
            "invalid JSON at line 1 column 13: unexpected end of hex escape",
        ),
        (
            r#"{"a":1e999}"#,
            "invalid JSON at line 1 column 10: number out of range",
        ),
    ] {
        let i = json(body);
        assert_eq!(hits(&i), one(Rule::MalformedJson, "json:"), "{body}");
        assert_eq!(i.findings[0].reason, reason, "{body}");
    }
    // a malformed body's finding never echoes it
    let i = json(r#"{"password":"hunter2""#);
    assert!(!i.findings[0].reason.contains("hunter2"));
}

#[test]
fn every_rule_has_a_distinct_id_and_name() {
    let all = [
        Rule::NoSqlOperator,
        Rule::PrototypePollution,
        Rule::SsrfTarget,
        Rule::JsonTooDeep,
        Rule::TooManyMembers,
        Rule::DuplicateJsonKey,
        Rule::MalformedEncoding,
        Rule::MalformedJson,
    ];
    let ids: std::collections::HashSet<u32> = all.iter().map(|r| r.id()).collect();
    let names: std::collections::HashSet<&str> = all.iter().map(|r| r.name()).collect();
    assert_eq!(ids.len(), all.len());
    assert_eq!(names.len(), all.len());
    assert!(all.iter().all(|r| r.id() < 100_000));
}

#[test]
fn long_names_are_capped_in_findings() {
    let name = format!("{}[$ne]", "a".repeat(5000));
    let i = query(&format!("{name}=1"));
    assert_eq!(i.findings[0].rule, Rule::NoSqlOperator);
    assert!(i.findings[0].variable.len() <= MAX_VARIABLE_BYTES);
    assert!(i.findings[0].variable.ends_with('…'));
}

/// Names qs nests that a split on `[`/`]` alone would miss (review of
/// 2026-12-05: 3,690 of 10,543 qs-generated `$ne` names passed).
#[test]
fn every_name_qs_nests_is_judged() {
    for (q, rule) in [
        ("user=alice&[password][$ne]=x", Rule::NoSqlOperator),
        ("filter[status]x[$ne]=closed", Rule::NoSqlOperator),
        ("a[x=y][$ne]=1", Rule::NoSqlOperator),
        ("[$where]=sleep(1)", Rule::NoSqlOperator),
        ("[$or][0][password][$regex]=.*", Rule::NoSqlOperator),
        ("%5Buser%5D%5B%24ne%5D=1", Rule::NoSqlOperator),
        ("a[b][c][d][e][f][g][$gt]=1", Rule::NoSqlOperator),
        (
            "[constructor][prototype][isAdmin]=1",
            Rule::PrototypePollution,
        ),
        ("a]x[__proto__=1", Rule::PrototypePollution),
    ] {
        let i = form(q);
        assert!(
            i.findings.iter().any(|f| f.rule == rule),
            "{q}: {:?}",
            i.findings
        );
    }
}

#[test]
fn every_dollar_letter_key_is_an_operator_but_json_schema_keywords() {
    for k in [
        "$bitsAllClear",
        "$max",
        "$mul",
        "$geoWithin",
        "$sampleRate",
        "$futureOp",
    ] {
        let body = format!(r#"{{"pin":{{"{k}":0}}}}"#);
        assert_eq!(
            hits(&json(&body)),
            one(Rule::NoSqlOperator, &format!("json:/pin/{k}")),
            "{k}"
        );
    }
    assert_eq!(
        hits(&query("pin[$bitsAllClear]=0")),
        one(Rule::NoSqlOperator, "query:pin[$bitsAllClear]")
    );
    for k in [
        "$schema", "$ref", "$id", "$defs", "$anchor", "$comment", "$5", "$",
    ] {
        let body = format!(r#"{{"{k}":"x"}}"#);
        assert_eq!(hits(&json(&body)), vec![], "{k}");
    }
}

#[test]
fn json_keys_with_bracket_and_dot_paths_are_judged() {
    assert_eq!(
        hits(&json(r#"{"__proto__[isAdmin]":true}"#)),
        one(Rule::PrototypePollution, "json:/__proto__[isAdmin]")
    );
    assert_eq!(
        hits(&json(r#"{"constructor[prototype][isAdmin]":true}"#)),
        one(
            Rule::PrototypePollution,
            "json:/constructor[prototype][isAdmin]"
        )
    );
}

/// A small body of long, deep keys and a large array: nothing is kept per
/// member (it once cost 2 GB for 220 KB).
#[test]
fn deep_long_keys_and_a_large_array_keep_nothing_per_member() {
    let key = "k".repeat(10_000);
    let mut body = String::new();
    for _ in 0..20 {
        body.push_str(&format!("{{\"{key}\":"));
    }
    body.push('[');
    body.push_str(&vec!["0"; 9_900].join(","));
    body.push(']');
    body.push_str(&"}".repeat(20));
    let i = json(&body);
    assert!(i.args.args.is_empty());
    assert_eq!(hits(&i), vec![]);
}

#[test]
fn padding_after_the_authority_does_not_hide_a_target() {
    let pad = "a".repeat(9_000);
    for v in [
        format!("http://169.254.169.254/latest/meta-data/#{pad}"),
        format!("http://127.0.0.1:6379/?{pad}"),
        format!("http://10.0.0.1/{pad}"),
    ] {
        let body = serde_json::json!({ "note": v }).to_string();
        assert_eq!(hits(&json(&body)), one(Rule::SsrfTarget, "json:/note"));
    }
}

#[test]
fn more_ssrf_spellings_are_found() {
    for (name, v) in [
        ("x", "redis://127.0.0.1:6379/"),
        ("x", "postgres://10.0.0.1/db"),
        ("x", "mongodb://[::1]:27017/"),
        ("x", "\\/169.254.169.254/x"),
        ("x", "\\\\169.254.169.254\\latest"),
        ("x", "\u{1}//169.254.169.254/x"),
        ("host", "169.254.169.254/latest/meta-data/?a= b"),
        ("host", "localhost"),
        ("webhooks", "169.254.169.254/latest"),
        ("x", "http://app.localh.st/"),
        ("x", "http://--1.sslip.io/"),
        ("x", "http://fe80--1.sslip.io/"),
        ("x", "http://fd00-ec2--254.sslip.io/latest"),
    ] {
        let body = serde_json::json!({ name: v }).to_string();
        assert_eq!(hits(&json(&body)).len(), 1, "{name}={v:?}");
    }
    assert_eq!(
        hits(&json(r#"{"webhooks":["169.254.169.254/latest"]}"#)),
        one(Rule::SsrfTarget, "json:/webhooks/0")
    );
    assert_eq!(
        hits(&query("url[]=169.254.169.254")),
        one(Rule::SsrfTarget, "query:url[]")
    );
}

#[test]
fn plain_numbers_and_bare_zone_names_in_url_named_parameters_pass() {
    assert_eq!(
        hits(&query(
            "next=20&target=1&image=5&return=1&src=12&host=local&domain=internal"
        )),
        vec![]
    );
    assert_eq!(
        hits(&json(
            r#"{"image":3,"next":10,"server":2,"endpoint":8080,"avatar":"0"}"#
        )),
        vec![]
    );
}

#[test]
fn a_byte_order_mark_and_an_empty_body_are_read_as_body_parser_reads_them() {
    let i = inspect(
        &RequestParts {
            query: None,
            body: Some((BodyKind::Json, b"\xEF\xBB\xBF{\"a\":1}")),
        },
        &Limits::default(),
    );
    assert_eq!(hits(&i), vec![]);
    assert_eq!(hits(&json("")), vec![]);
    assert_eq!(hits(&json("  \n")), vec![]);
    let i = inspect(
        &RequestParts {
            query: None,
            body: Some((BodyKind::Json, b"\xEF\xBB\xBF{\"$ne\":1}")),
        },
        &Limits::default(),
    );
    assert_eq!(hits(&i), one(Rule::NoSqlOperator, "json:/$ne"));
}

/// Every name qs 6.x nests into a `$ne` key (10,543 of them, generated by
/// qs itself: tests/data/gen-qs-names.js) is found, in a form body and in
/// the query string.
#[test]
fn every_name_qs_turns_into_an_operator_key_is_found() {
    let names = include_str!("../tests/data/qs-nested-ne-names.txt");
    let mut n = 0;
    for name in names.lines() {
        n += 1;
        let pair = format!("{name}=1");
        for i in [form(&pair), query(&pair)] {
            assert!(
                i.findings
                    .iter()
                    .any(|f| matches!(f.rule, Rule::NoSqlOperator | Rule::MalformedEncoding)),
                "{name:?}: {:?}",
                i.findings
            );
        }
    }
    assert_eq!(n, 10_543);
}

#[test]
fn keys_that_shadow_object_prototype_methods_are_found() {
    assert_eq!(
        hits(&form("hasOwnProperty=x")),
        one(Rule::PrototypePollution, "form:hasOwnProperty")
    );
    assert_eq!(
        hits(&query("a[toString]=1")),
        one(Rule::PrototypePollution, "query:a[toString]")
    );
    assert_eq!(
        hits(&json(r#"{"user":{"valueOf":1}}"#)),
        one(Rule::PrototypePollution, "json:/user/valueOf")
    );
    // as values, or as parts of longer names, they pass
    assert_eq!(
        hits(&json(r#"{"method":"toString","hasOwnPropertyCount":2}"#)),
        vec![]
    );
}

/// Review of 2026-12-05 (second pass): padding inside the authority, the
/// first-`=` reading of Node's querystring, and the findings cap on forms.
#[test]
fn userinfo_padding_and_the_querystring_reading_do_not_hide_a_target() {
    let url = format!("http://{}@169.254.169.254/latest", "a".repeat(5_000));
    let body = serde_json::json!({ "callback_url": url }).to_string();
    assert_eq!(
        hits(&json(&body)),
        one(Rule::SsrfTarget, "json:/callback_url")
    );
    // Express 5 (querystring) reads url = "http://169.254.169.254/latest]=1"
    let i = query("url=http://169.254.169.254/latest]=1");
    assert!(
        i.findings
            .iter()
            .any(|f| f.rule == Rule::SsrfTarget && f.variable == "query:url"),
        "{:?}",
        i.findings
    );
    // both readings of a pair that means the same are not judged twice
    assert_eq!(
        hits(&query("a[$ne]=1")),
        one(Rule::NoSqlOperator, "query:a[$ne]")
    );
    // many malformed pairs: at most MAX_FINDINGS findings
    let many = vec!["%zz=1"; 5_000].join("&");
    assert_eq!(form(&many).findings.len(), MAX_FINDINGS);
}

/// Found by the `inspect` fuzz target: a JSON member past the cap could
/// still add several findings (a key that is both a NoSQL operator and
/// pollutes a prototype, and a URL value): the findings stay capped.
#[test]
fn findings_stay_capped_when_one_member_adds_several() {
    let out = crate::inspect(
        &crate::RequestParts {
            query: Some(
                "x.%F&%F&np%F&;hp%F%&F&%F&;hp%F&%F&np%F&;hp%F&%F%F&%F&np%F&;hp%F&%F;hp%F&%F&nphp%F&%x`\x00F__pr\x00\x00?",
            ),
            body: Some((
                crate::BodyKind::Json,
                b"{\x22a\x22:{\x22UXx\xd2\xa0_prback=..[$gototoF&%F&;hp%F&__p%F&3\x22:0npF&;hp&;&n",
            )),
        },
        &crate::Limits {
            max_depth: 8,
            max_members: 64,
        },
    );
    assert!(
        out.findings.len() <= MAX_FINDINGS + 1,
        "{}",
        out.findings.len()
    );
}
