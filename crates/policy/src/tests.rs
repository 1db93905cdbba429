//! Behaviour tests through the public API, as the server uses it.

use crate::{Acl, Capabilities, Capability, DEFAULT_POLICY, Policy, PolicyError, format_hcl};

fn acl_of(hcls: &[&str]) -> Acl {
    let policies: Vec<Policy> = hcls
        .iter()
        .enumerate()
        .map(|(i, hcl)| {
            Policy::parse(&format!("p{i}"), hcl)
                .unwrap_or_else(|e| panic!("policy p{i} should parse: {e}\n{hcl}"))
        })
        .collect();
    let refs: Vec<&Policy> = policies.iter().collect();
    Acl::new(&refs)
}

struct Case {
    name: &'static str,
    policies: &'static [&'static str],
    path: &'static str,
    list: bool,
    want: &'static [&'static str],
}

const fn case(
    name: &'static str,
    policies: &'static [&'static str],
    path: &'static str,
    list: bool,
    want: &'static [&'static str],
) -> Case {
    Case {
        name,
        policies,
        path,
        list,
        want,
    }
}

const DENY: &[&str] = &["deny"];
const READ: &[&str] = &["read"];
const UPDATE: &[&str] = &["update"];

#[rustfmt::skip]
const CASES: &[Case] = &[
    // --- exact vs glob ---
    case("exact rule beats a matching glob, no union",
        &[r#"path "secret/*" { capabilities = ["read", "list"] }
             path "secret/foo" { capabilities = ["update"] }"#],
        "secret/foo", false, UPDATE),
    case("exact rule beats a longer glob that also matches",
        &[r#"path "secret/foo" { capabilities = ["read"] }
             path "secret/foo*" { capabilities = ["update"] }"#],
        "secret/foo", false, READ),
    case("exact rule does not cover children",
        &[r#"path "secret/foo" { capabilities = ["read"] }"#],
        "secret/foo/bar", false, DENY),
    case("exact rule with no capabilities still shadows globs",
        &[r#"path "secret/*" { capabilities = ["read"] }
             path "secret/locked" { capabilities = [] }"#],
        "secret/locked", false, DENY),
    case("* prefix matches across slashes",
        &[r#"path "secret/*" { capabilities = ["read"] }"#],
        "secret/a/b/c", false, READ),
    case("* prefix matches inside a segment",
        &[r#"path "secret/fo*" { capabilities = ["read"] }"#],
        "secret/foo", false, READ),
    case("* prefix needs its whole prefix",
        &[r#"path "secret/fo*" { capabilities = ["read"] }"#],
        "secret/f", false, DENY),
    case("longest prefix glob wins",
        &[r#"path "secret/*" { capabilities = ["read"] }
             path "secret/team/*" { capabilities = ["update"] }"#],
        "secret/team/x", false, UPDATE),
    case("* is literal when not last",
        &[r#"path "secret/*/foo" { capabilities = ["read"] }"#],
        "secret/x/foo", false, DENY),
    case("* literal pattern matches itself exactly",
        &[r#"path "secret/*/foo" { capabilities = ["read"] }"#],
        "secret/*/foo", false, READ),
    case("lone * matches everything",
        &[r#"path "*" { capabilities = ["read"] }"#],
        "anything/at/all", false, READ),
    case("leading slash of a pattern is stripped",
        &[r#"path "/secret/foo" { capabilities = ["read"] }"#],
        "secret/foo", false, READ),
    case("leading slash of a request path is ignored",
        &[r#"path "secret/foo" { capabilities = ["read"] }"#],
        "/secret/foo", false, READ),
    // --- + segment wildcard ---
    case("+ matches one segment",
        &[r#"path "secret/+/teamb" { capabilities = ["read"] }"#],
        "secret/x/teamb", false, READ),
    case("+ does not match two segments",
        &[r#"path "secret/+/teamb" { capabilities = ["read"] }"#],
        "secret/a/b/teamb", false, DENY),
    case("+ needs its segment to exist",
        &[r#"path "secret/+/teamb" { capabilities = ["read"] }"#],
        "secret/teamb", false, DENY),
    // Vault's acl.go accepts any content for `+`, including "". Matching it
    // matters for denies: `secret//admin` must not slip past `secret/+/admin`.
    case("+ matches an empty segment, as in Vault",
        &[r#"path "secret/+/teamb" { capabilities = ["read"] }"#],
        "secret//teamb", false, READ),
    case("+ deny also catches an empty segment",
        &[r#"path "secret/*" { capabilities = ["read"] }
             path "secret/+/admin" { capabilities = ["deny"] }"#],
        "secret//admin", false, DENY),
    case("+ segment is not a prefix match",
        &[r#"path "secret/+/teamb" { capabilities = ["read"] }"#],
        "secret/x/teamb2", false, DENY),
    case("+ then * matches deeper paths",
        &[r#"path "secret/+/team*" { capabilities = ["read"] }"#],
        "secret/x/teamb/extra", false, READ),
    case("+ then * still checks the literal prefix",
        &[r#"path "secret/+/team*" { capabilities = ["read"] }"#],
        "secret/x/other", false, DENY),
    case("+ as first segment",
        &[r#"path "+/config" { capabilities = ["read"] }"#],
        "kv/config", false, READ),
    // --- the five priority rules (each case flips if its rule is wrong) ---
    case("rule 1: later first wildcard wins (over a non-* pattern)",
        &[r#"path "secret/+/bar" { capabilities = ["read"] }
             path "secret/foo/b*" { capabilities = ["update"] }"#],
        "secret/foo/bar", false, UPDATE),
    case("rule 2: not ending in * beats ending in * (foo/+ over foo/*)",
        &[r#"path "secret/+/x" { capabilities = ["read"] }
             path "secret/*" { capabilities = ["update"] }"#],
        "secret/a/x", false, READ),
    case("rule 3: fewer + segments win over a longer pattern",
        &[r#"path "secret/+/+/bazz*" { capabilities = ["read"] }
             path "secret/+/bar/b*" { capabilities = ["update"] }"#],
        "secret/x/bar/bazzz", false, UPDATE),
    case("rule 4: longer wins over lexicographically greater",
        &[r#"path "a/+/c/+/dd" { capabilities = ["read"] }
             path "a/+/+/xx/dd" { capabilities = ["update"] }"#],
        "a/1/c/xx/dd", false, UPDATE),
    case("rule 5: lexicographically greater wins",
        &[r#"path "a/+/+/x/d" { capabilities = ["read"] }
             path "a/+/c/+/d" { capabilities = ["update"] }"#],
        "a/1/c/x/d", false, UPDATE),
    // --- merging identical patterns ---
    case("identical patterns across policies are unioned",
        &[r#"path "secret/*" { capabilities = ["read"] }"#,
          r#"path "secret/*" { capabilities = ["list"] }"#],
        "secret/x", false, &["list", "read"]),
    case("identical patterns within one policy are unioned",
        &[r#"path "secret/+/x" { capabilities = ["read"] }
             path "secret/+/x" { capabilities = ["create"] }"#],
        "secret/a/x", false, &["create", "read"]),
    case("deny in a later policy overrides the same pattern's grants",
        &[r#"path "secret/*" { capabilities = ["read", "update"] }"#,
          r#"path "secret/*" { capabilities = ["deny"] }"#],
        "secret/x", false, DENY),
    case("deny in an earlier policy survives later grants",
        &[r#"path "secret/x" { capabilities = ["deny"] }"#,
          r#"path "secret/x" { capabilities = ["read", "sudo"] }"#],
        "secret/x", false, DENY),
    case("deny next to other capabilities in one rule is exactly deny",
        &[r#"path "secret/x" { capabilities = ["read", "deny", "list"] }"#],
        "secret/x", false, DENY),
    case("different patterns are not merged",
        &[r#"path "secret/*" { capabilities = ["read"] }"#,
          r#"path "secret/a*" { capabilities = ["list"] }"#],
        "secret/ab", false, &["list"]),
    // --- specific vs broad, deny vs allow ---
    case("more specific deny under a broader allow",
        &[r#"path "secret/*" { capabilities = ["read"] }
             path "secret/admin/*" { capabilities = ["deny"] }"#],
        "secret/admin/key", false, DENY),
    case("broader allow still applies beside the specific deny",
        &[r#"path "secret/*" { capabilities = ["read"] }
             path "secret/admin/*" { capabilities = ["deny"] }"#],
        "secret/other", false, READ),
    case("more specific allow under a broader deny",
        &[r#"path "secret/*" { capabilities = ["deny"] }"#,
          r#"path "secret/public/*" { capabilities = ["read"] }"#],
        "secret/public/doc", false, READ),
    case("broader deny applies outside the specific allow",
        &[r#"path "secret/*" { capabilities = ["deny"] }"#,
          r#"path "secret/public/*" { capabilities = ["read"] }"#],
        "secret/private", false, DENY),
    case("segment deny beats a glob allow at the same position",
        &[r#"path "secret/*" { capabilities = ["read"] }
             path "secret/+/admin" { capabilities = ["deny"] }"#],
        "secret/x/admin", false, DENY),
    // --- sudo and legacy policy values ---
    case("sudo-carrying path",
        &[r#"path "sys/auth/*" { capabilities = ["create", "read", "update", "delete", "sudo"] }"#],
        "sys/auth/approle", false, &["create", "delete", "read", "sudo", "update"]),
    case("patch is its own capability",
        &[r#"path "secret/data/*" { capabilities = ["patch"] }"#],
        "secret/data/x", false, &["patch"]),
    case("legacy policy = write",
        &[r#"path "secret/*" { policy = "write" }"#],
        "secret/x", false, &["create", "delete", "list", "read", "update"]),
    case("legacy policy = read",
        &[r#"path "secret/*" { policy = "read" }"#],
        "secret/x", false, &["list", "read"]),
    case("legacy policy = sudo",
        &[r#"path "sys/*" { policy = "sudo" }"#],
        "sys/x", false, &["create", "delete", "list", "read", "sudo", "update"]),
    case("legacy policy = deny overrides capabilities",
        &[r#"path "secret/*" {
               policy       = "deny"
               capabilities = ["read"]
             }"#],
        "secret/x", false, DENY),
    case("legacy policy adds to capabilities",
        &[r#"path "secret/*" {
               policy       = "read"
               capabilities = ["patch"]
             }"#],
        "secret/x", false, &["list", "patch", "read"]),
    // --- LIST and the trailing slash ---
    case("LIST matches an exact rule without the trailing slash",
        &[r#"path "secret/metadata" { capabilities = ["list"] }"#],
        "secret/metadata/", true, &["list"]),
    case("non-LIST does not trim the trailing slash",
        &[r#"path "secret/metadata" { capabilities = ["list"] }"#],
        "secret/metadata/", false, DENY),
    case("LIST does not add a trailing slash",
        &[r#"path "secret/metadata/" { capabilities = ["list"] }"#],
        "secret/metadata", true, DENY),
    case("LIST prefers the untrimmed exact rule",
        &[r#"path "secret/metadata" { capabilities = ["read"] }
             path "secret/metadata/" { capabilities = ["list"] }"#],
        "secret/metadata/", true, &["list"]),
    case("LIST tries globs on the trimmed path first",
        &[r#"path "secret/+" { capabilities = ["list"] }"#],
        "secret/foo/", true, &["list"]),
    case("non-LIST does not try the trimmed path",
        &[r#"path "secret/+" { capabilities = ["list"] }"#],
        "secret/foo/", false, DENY),
    // --- degenerate ACLs ---
    case("empty ACL grants nothing",
        &[], "secret/x", false, DENY),
    case("policy without path blocks grants nothing",
        &[r#"name = "nothing""#], "secret/x", false, DENY),
];

#[test]
fn capability_table() {
    let mut failures = Vec::new();
    for c in CASES {
        let got = acl_of(c.policies).capabilities(c.path, c.list).names();
        if got != c.want {
            failures.push(format!(
                "{}: {} {:?}: got {got:?}, want {:?}",
                c.name,
                if c.list { "LIST" } else { "op" },
                c.path,
                c.want
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn deny_result_contains_nothing_else() {
    let acl = acl_of(&[
        r#"path "secret/*" { capabilities = ["read", "update", "sudo"] }"#,
        r#"path "secret/*" { capabilities = ["deny"] }"#,
    ]);
    let caps = acl.capabilities("secret/x", false);
    assert!(caps.contains(Capability::Deny));
    for c in [
        Capability::Create,
        Capability::Read,
        Capability::Update,
        Capability::Patch,
        Capability::Delete,
        Capability::List,
        Capability::Sudo,
    ] {
        assert!(!caps.contains(c), "{c:?} must not survive a deny");
    }
}

#[test]
fn no_match_is_empty_not_deny() {
    let acl = acl_of(&[r#"path "secret/*" { capabilities = ["read"] }"#]);
    let caps = acl.capabilities("other/x", false);
    assert!(caps.is_empty());
    assert!(!caps.contains(Capability::Deny));
    assert_eq!(caps.names(), ["deny"]);
}

#[test]
fn root_acl_allows_everything() {
    let root = Policy::parse("root", "").expect("empty policy parses");
    let other = Policy::parse("p", r#"path "secret/*" { capabilities = ["deny"] }"#)
        .expect("policy parses");
    for acl in [Acl::new(&[&root]), Acl::new(&[&root, &other]), Acl::root()] {
        assert!(acl.is_root());
        let caps = acl.capabilities("secret/x", false);
        assert_eq!(caps, Capabilities::all());
        assert!(caps.contains(Capability::Sudo));
        assert!(!caps.contains(Capability::Deny));
        assert_eq!(acl.capabilities("sys/raw/x", true), Capabilities::all());
    }
    assert!(!Acl::new(&[&other]).is_root());
    assert!(!Acl::new(&[]).is_root());
}

#[test]
fn policy_keeps_name_and_raw_text() {
    let hcl = "name = \"ignored\"\npath \"a\" { capabilities = [\"read\"] }\n";
    let p = Policy::parse("ops", hcl).expect("parses");
    assert_eq!(p.name, "ops");
    assert_eq!(p.raw, hcl);
}

fn parse_err(hcl: &str) -> String {
    match Policy::parse("p", hcl) {
        Ok(_) => panic!("policy should be rejected:\n{hcl}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn invalid_capability_error() {
    assert_eq!(
        parse_err(r#"path "secret/*" { capabilities = ["read", "write"] }"#),
        r#"path "secret/*": invalid capability "write""#
    );
    // Case matters, as in Vault.
    assert_eq!(
        parse_err(r#"path "secret/*" { capabilities = ["Read"] }"#),
        r#"path "secret/*": invalid capability "Read""#
    );
}

#[test]
fn unsupported_keys_are_rejected() {
    for key in [
        "allowed_parameters",
        "denied_parameters",
        "required_parameters",
        "min_wrapping_ttl",
        "max_wrapping_ttl",
        "mfa_methods",
        "control_group",
        "subscribe_event_types",
    ] {
        let attr =
            format!("path \"secret/*\" {{\n  capabilities = [\"read\"]\n  {key} = {{}}\n}}\n");
        assert_eq!(
            parse_err(&attr),
            format!(r#"path "secret/*": {key} is not supported"#)
        );
        let block =
            format!("path \"secret/*\" {{\n  capabilities = [\"read\"]\n  {key} {{\n  }}\n}}\n");
        assert_eq!(
            parse_err(&block),
            format!(r#"path "secret/*": {key} is not supported"#)
        );
    }
    // Realistic shapes, not just empty objects.
    assert_eq!(
        parse_err(
            r#"path "secret/data/app" {
  capabilities       = ["create", "update"]
  allowed_parameters = { "owner" = ["alice"] }
}"#
        ),
        r#"path "secret/data/app": allowed_parameters is not supported"#
    );
    assert_eq!(
        parse_err(
            r#"path "sys/wrapping/wrap" {
  capabilities     = ["update"]
  max_wrapping_ttl = "1h"
}"#
        ),
        r#"path "sys/wrapping/wrap": max_wrapping_ttl is not supported"#
    );
}

#[test]
fn unknown_keys_are_rejected() {
    assert_eq!(
        parse_err(r#"path "secret/*" { capabilites = ["read"] }"#),
        r#"path "secret/*": invalid key "capabilites""#
    );
    assert_eq!(
        parse_err("path \"secret/*\" {\n  nested {\n  }\n}\n"),
        r#"path "secret/*": invalid key "nested""#
    );
    assert_eq!(
        parse_err(r#"paths "secret/*" {}"#),
        r#"invalid key "paths""#
    );
    assert_eq!(parse_err(r#"version = 2"#), r#"invalid key "version""#);
}

#[test]
fn other_invalid_policies_are_rejected() {
    let cases = [
        (
            r#"path "secret/*" { policy = "admin" }"#,
            r#"path "secret/*": invalid policy "admin""#,
        ),
        (
            r#"path "secret/+*" { capabilities = ["read"] }"#,
            r#"path "secret/+*": invalid use of wildcards ('+*' is forbidden)"#,
        ),
        (
            r#"path "identity/entity/id/{{identity.entity.id}}" { capabilities = ["read"] }"#,
            r#"path "identity/entity/id/{{identity.entity.id}}": templated policy paths are not supported"#,
        ),
        (
            r#"path "secret/*" { capabilities = "read" }"#,
            r#"path "secret/*": capabilities must be a list of strings"#,
        ),
        (
            r#"path "secret/*" { capabilities = [read] }"#,
            r#"path "secret/*": capabilities must be a list of strings"#,
        ),
        (
            r#"path "secret/*" { policy = ["read"] }"#,
            r#"path "secret/*": policy must be a string"#,
        ),
        (
            "path {\n}\n",
            "path block must have exactly one label (the path pattern), found 0",
        ),
        (
            "path \"a\" \"b\" {\n}\n",
            "path block must have exactly one label (the path pattern), found 2",
        ),
        (
            r#"path = "secret/*""#,
            r#"path must be a block: path "<pattern>" { capabilities = [...] }"#,
        ),
    ];
    for (hcl, want) in cases {
        assert_eq!(parse_err(hcl), want, "for policy:\n{hcl}");
    }
}

#[test]
fn broken_hcl_reports_line_and_column() {
    let hcl = "path \"secret/*\" {\n  capabilities = [\"read\"\n}\n";
    let err = Policy::parse("p", hcl).expect_err("must not parse");
    let PolicyError::Syntax { line, column, .. } = &err else {
        panic!("want a syntax error, got {err:?}");
    };
    assert_eq!(*line, 3, "{err}");
    assert!(*column >= 1);
    let msg = err.to_string();
    assert!(
        msg.starts_with("failed to parse policy: line 3, column "),
        "{msg}"
    );

    // Duplicate attributes are ambiguous; HCL 2 rejects them, and so do we.
    let dup = "path \"a\" {\n  capabilities = [\"read\"]\n  capabilities = [\"sudo\"]\n}\n";
    assert!(matches!(
        Policy::parse("p", dup),
        Err(PolicyError::Syntax { line: 3, .. })
    ));
}

#[test]
fn empty_policies_are_valid() {
    for hcl in ["", "# only a comment\n", "name = \"x\"\n"] {
        let p = Policy::parse("p", hcl).expect("valid");
        assert!(Acl::new(&[&p]).capabilities("secret/x", false).is_empty());
    }
}

// ------------------------------------------------------------ JSON policies

/// The rules of a policy, for comparing two syntaxes.
fn rules_of(text: &str) -> Vec<crate::policy::PathRule> {
    Policy::parse("p", text)
        .unwrap_or_else(|e| panic!("should parse: {e}\n{text}"))
        .rules
}

#[test]
fn json_policies_mean_what_the_same_hcl_means() {
    // (JSON as hvac and Vault's docs write it, the HCL with the same rules)
    let cases = [
        (
            r#"{"path": {"test-path": {"capabilities": ["read"]}}}"#,
            r#"path "test-path" { capabilities = ["read"] }"#,
        ),
        (
            "{\n    \"path\": {\n        \"sys/health\": {\n            \"capabilities\": [\n                \"read\",\n                \"sudo\"\n            ]\n        }\n    }\n}",
            r#"path "sys/health" { capabilities = ["read", "sudo"] }"#,
        ),
        (
            r#"  {"name": "ignored", "path": {"a": {"capabilities": ["read"], "comment": "c"}, "/b/*": {"capabilities": ["deny", "read"]}}}"#,
            "path \"a\" {\n capabilities = [\"read\"]\n comment = \"c\"\n}\npath \"/b/*\" { capabilities = [\"deny\", \"read\"] }",
        ),
        // HCL 1's repeated blocks: an array of pattern objects
        (
            r#"{"path": [{"a": {"capabilities": ["read"]}}, {"a": {"capabilities": ["update"]}, "c/+/d": {"policy": "write"}}]}"#,
            "path \"a\" { capabilities = [\"read\"] }\npath \"a\" { capabilities = [\"update\"] }\npath \"c/+/d\" { policy = \"write\" }",
        ),
        (r#"{"path": {"a": {}}}"#, r#"path "a" {}"#),
        ("{}", ""),
        (r#"{"path": {}}"#, ""),
        (r#"{"path": []}"#, ""),
        (
            r#"{"path": {"\u0061": {"capabilities": ["list"]}}}"#,
            r#"path "a" { capabilities = ["list"] }"#,
        ),
    ];
    for (json, hcl) in cases {
        assert_eq!(rules_of(json), rules_of(hcl), "{json}");
    }
    // the text is kept exactly as sent (sys/policies/acl returns it)
    let pretty = cases[1].0;
    assert_eq!(Policy::parse("p", pretty).expect("parses").raw, pretty);
}

#[test]
fn json_policies_grant_and_deny_like_hcl() {
    let acl = acl_of(&[
        r#"{"path": {"secret/*": {"capabilities": ["read", "list"]}, "secret/admin": {"capabilities": ["deny"]}}}"#,
        r#"path "secret/admin" { capabilities = ["read", "sudo"] }"#,
    ]);
    assert_eq!(
        acl.capabilities("secret/app", false).names(),
        ["list", "read"]
    );
    // a deny in a JSON policy wins over a grant in an HCL one
    assert_eq!(acl.capabilities("secret/admin", false).names(), ["deny"]);
    assert_eq!(acl.capabilities("other/x", false).names(), ["deny"]);
}

#[test]
fn invalid_json_policies_are_rejected() {
    let cases = [
        // the same refusals as HCL, from the same rules
        (
            r#"{"path": {"a": {"capabilities": ["frobnicate"]}}}"#,
            r#"path "a": invalid capability "frobnicate""#,
        ),
        (
            r#"{"path": {"a": {"capabilities": ["create"], "allowed_parameters": {"x": []}}}}"#,
            r#"path "a": allowed_parameters is not supported"#,
        ),
        (
            r#"{"path": {"a": {"capabilities": ["read"], "bogus": 1}}}"#,
            r#"path "a": invalid key "bogus""#,
        ),
        (
            r#"{"path": {"a": {"capabilities": ["read"], "bogus key": 1}}}"#,
            r#"path "a": invalid key "bogus key""#,
        ),
        (
            r#"{"path": {"a": {"b": {"capabilities": ["read"]}}}}"#,
            r#"path "a": invalid key "b""#,
        ),
        (
            r#"{"path": {"a": {"capabilities": "read"}}}"#,
            r#"path "a": capabilities must be a list of strings"#,
        ),
        (
            r#"{"path": {"a": {"capabilities": null}}}"#,
            r#"path "a": capabilities must be a list of strings"#,
        ),
        (
            r#"{"path": {"a": {"capabilities": [1]}}}"#,
            r#"path "a": capabilities must be a list of strings"#,
        ),
        (
            r#"{"path": {"a": {"policy": "bogus"}}}"#,
            r#"path "a": invalid policy "bogus""#,
        ),
        (
            r#"{"path": {"a": {"capabilities": ["read"], "comment": 5}}}"#,
            r#"path "a": comment must be a string"#,
        ),
        (
            r#"{"path": {"a/{{identity.entity.id}}": {"capabilities": ["read"]}}}"#,
            r#"path "a/{{identity.entity.id}}": templated policy paths are not supported"#,
        ),
        (
            r#"{"path": {"a/+*": {"capabilities": ["read"]}}}"#,
            r#"path "a/+*": invalid use of wildcards ('+*' is forbidden)"#,
        ),
        (r#"{"foo": {}}"#, r#"invalid key "foo""#),
        (r#"{"name": 1}"#, "name must be a string"),
        // shapes JSON can take that an HCL block cannot
        (
            r#"{"path": {"a": [{"capabilities": ["read"]}]}}"#,
            r#"path "a": rules must be an object: {"capabilities": [...]}"#,
        ),
        (
            r#"{"path": {"a": null}}"#,
            r#"path "a": rules must be an object: {"capabilities": [...]}"#,
        ),
        (
            r#"{"path": "a"}"#,
            r#"path must be an object of path patterns to rules: {"path": {"<pattern>": {"capabilities": [...]}}}"#,
        ),
        (
            r#"{"path": [["a"]]}"#,
            r#"path must be an object of path patterns to rules: {"path": {"<pattern>": {"capabilities": [...]}}}"#,
        ),
    ];
    for (json, want) in cases {
        assert_eq!(parse_err(json), want, "for policy:\n{json}");
    }
}

#[test]
fn json_policies_must_be_strict_json_without_repeated_keys() {
    // A repeated key is refused wherever it is: serde_json alone would keep
    // the last member and drop a deny; Vault keeps both.
    for (json, line, column, message) in [
        (
            r#"{"path": {"a": {"capabilities": ["deny"]}}, "path": {"a": {"capabilities": ["read"]}}}"#,
            1,
            50,
            r#"invalid JSON: duplicate key "path""#,
        ),
        (
            "{\"path\": {\n  \"a\": {\"capabilities\": [\"deny\"]},\n  \"a\": {\"capabilities\": [\"read\"]}}}",
            3,
            5,
            r#"invalid JSON: duplicate key "a""#,
        ),
        (
            r#"{"path": {"a": {"capabilities": ["deny"], "capabilities": ["read"]}}}"#,
            1,
            56,
            r#"invalid JSON: duplicate key "capabilities""#,
        ),
        // HCL 1 accepts all of these; we do not guess what was meant
        (
            r#"{"path": {"a": {"capabilities": ["read"]}}"#,
            1,
            42,
            "invalid JSON: EOF while parsing an object",
        ),
        (
            r#"{"path": {"a": {"capabilities": ["read"]}}} x"#,
            1,
            45,
            "invalid JSON: trailing characters",
        ),
        (
            r#"{"path": {"a": {"capabilities": ["read"],}}}"#,
            1,
            42,
            "invalid JSON: trailing comma",
        ),
    ] {
        let err = Policy::parse("p", json).expect_err(json);
        assert_eq!(
            err,
            PolicyError::Syntax {
                line,
                column,
                message: message.to_owned()
            },
            "{json}"
        );
        assert_eq!(
            err.to_string(),
            format!("failed to parse policy: line {line}, column {column}: {message}")
        );
    }
    // a text that does not start with `{` is HCL, whatever follows
    assert!(matches!(
        Policy::parse("p", r#"[{"path": {"a": {"capabilities": "read"}}}]"#),
        Err(PolicyError::Syntax { line: 1, .. })
    ));
}

#[test]
fn json_policies_are_not_formatted() {
    let json = r#"{"path": {"a": {"capabilities": ["read"]}}}"#;
    assert_eq!(
        format_hcl(json).expect_err("not HCL").to_string(),
        "this is a JSON policy: only HCL policies are formatted"
    );
    // invalid JSON is reported as such, not as a formatting problem
    assert!(matches!(format_hcl("{"), Err(PolicyError::Syntax { .. })));
}

#[test]
fn default_policy_grants_token_self_service_only() {
    let default = Policy::parse("default", DEFAULT_POLICY).expect("default policy parses");
    let acl = Acl::new(&[&default]);
    let caps = |path: &str| acl.capabilities(path, false).names();
    assert_eq!(caps("auth/token/renew-self"), ["update"]);
    assert_eq!(caps("auth/token/lookup-self"), ["read"]);
    assert_eq!(caps("auth/token/revoke-self"), ["update"]);
    assert_eq!(caps("sys/capabilities-self"), ["update"]);
    assert_eq!(caps("sys/internal/ui/resultant-acl"), ["read"]);
    assert_eq!(caps("sys/leases/lookup"), ["update"]);
    assert_eq!(caps("sys/wrapping/unwrap"), ["update"]);
    assert_eq!(caps("sys/tools/hash/sha2-256"), ["update"]);
    assert_eq!(caps("sys/control-group/request"), ["update"]);
    assert_eq!(
        caps("cubbyhole/mine"),
        ["create", "delete", "list", "read", "update"]
    );
    assert_eq!(
        caps("identity/oidc/provider/default/authorize"),
        ["read", "update"]
    );
    assert_eq!(caps("secret/data/x"), ["deny"]);
    assert_eq!(caps("auth/token/create"), ["deny"]);
    assert_eq!(caps("sys/policies/acl/default"), ["deny"]);
    assert_eq!(caps("auth/token/lookup-self/x"), ["deny"]);
}

#[test]
fn format_round_trip() {
    let messy = r#"
# Team A policy


name="team-a"
path "secret/data/team-a/*"   {
capabilities=["create","read",   "update"] # day-to-day
   comment = "team A secrets"
}
path /* odd spot */ "secret/metadata/team-a/*" { capabilities = ["list"] }

path "sys/auth/*" {
  capabilities = [
    "read", # inspect
    // and manage
    "sudo",
  ]
}
path "secret/empty" {}
# trailing note
"#;
    let want = r#"# Team A policy

name = "team-a"
path "secret/data/team-a/*" {
  capabilities = ["create", "read", "update"] # day-to-day
  comment      = "team A secrets"
}
/* odd spot */
path "secret/metadata/team-a/*" {
  capabilities = ["list"]
}

path "sys/auth/*" {
  capabilities = [
    "read", # inspect
    // and manage
    "sudo",
  ]
}
path "secret/empty" {}
# trailing note
"#;
    let formatted = format_hcl(messy).expect("formats");
    assert_eq!(formatted, want);
    // Idempotent, and the rules are unchanged.
    assert_eq!(format_hcl(&formatted).expect("formats"), formatted);
    let before = Policy::parse("p", messy).expect("parses");
    let after = Policy::parse("p", &formatted).expect("parses");
    assert_eq!(before.rules, after.rules);
}

#[test]
fn format_keeps_default_policy_comments() {
    let formatted = format_hcl(DEFAULT_POLICY).expect("formats");
    let comment_lines = |s: &str| {
        s.lines()
            .map(str::trim)
            .filter(|l| l.starts_with('#'))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(comment_lines(&formatted), comment_lines(DEFAULT_POLICY));
    assert!(formatted.starts_with("# Allow tokens to look up their own properties\n"));
    assert!(
        formatted.contains("path \"auth/token/lookup-self\" {\n  capabilities = [\"read\"]\n}\n")
    );
    assert_eq!(format_hcl(&formatted).expect("formats"), formatted);
}

#[test]
fn format_rejects_invalid_policies() {
    assert!(matches!(
        format_hcl("path \"a\" {\n"),
        Err(PolicyError::Syntax { .. })
    ));
    assert_eq!(
        format_hcl(r#"path "a" { capabilities = ["write"] }"#)
            .expect_err("invalid")
            .to_string(),
        r#"path "a": invalid capability "write""#
    );
    assert_eq!(format_hcl("").expect("empty is fine"), "");
}

#[test]
fn format_quotes_labels_and_escapes() {
    let formatted =
        format_hcl("path secret {\n  capabilities = [\"read\"]\n}\npath \"a\\\"b\" {}\n")
            .expect("formats");
    assert_eq!(
        formatted,
        "path \"secret\" {\n  capabilities = [\"read\"]\n}\npath \"a\\\"b\" {}\n"
    );
}

#[test]
fn format_keeps_comments_in_every_position() {
    let cases = [
        (
            "path \"a\" { # open\n  capabilities = [\"read\"]\n  # before close\n}\n",
            "path \"a\" { # open\n  capabilities = [\"read\"]\n  # before close\n}\n",
        ),
        (
            "/* multi\n   line */\npath \"a\" { capabilities = [ /* first */ \"read\" ] /* end */ }\r\n",
            "/* multi\n   line */\npath \"a\" {\n  capabilities = [\n    /* first */\n    \"read\",\n  ] /* end */\n}\n",
        ),
        (
            "path \"a\" {\n  capabilities = /* x */ [\"read\"]\n}\n\n\n# end\n\n",
            "path \"a\" {\n  /* x */\n  capabilities = [\"read\"]\n}\n\n# end\n",
        ),
    ];
    for (input, want) in cases {
        let formatted = format_hcl(input).expect("formats");
        assert_eq!(formatted, want, "for input:\n{input}");
        assert_eq!(format_hcl(&formatted).expect("formats"), formatted);
    }
}

/// The `policy_hcl` fuzz target's finding: comments after a line comment
/// (`#`, `//`) were appended to its line, so they became part of it and a
/// second `fmt` moved them again. They go on the next line.
#[test]
fn format_never_appends_after_a_line_comment() {
    let cases = [
        (
            "path \"a\" {\n  capabilities = [\"read\" # one\n  /* two */ // three\n  /* four\n*/ ]\n}\n",
            "path \"a\" {\n  capabilities = [\n    \"read\", # one\n    /* two */ // three\n    /* four\n*/\n  ]\n}\n",
        ),
        (
            "path \"a\" {\n  capabilities = [\"read\", # one\n  /* two */ \"list\" /* three */ # four\n  ]\n}\n",
            "path \"a\" {\n  capabilities = [\n    \"read\", # one\n    /* two */\n    \"list\", /* three */ # four\n  ]\n}\n",
        ),
    ];
    for (input, want) in cases {
        let formatted = format_hcl(input).expect("formats");
        assert_eq!(formatted, want, "for input:\n{input}");
        assert_eq!(format_hcl(&formatted).expect("formats"), formatted);
    }
    for fuzzed in [
        include_str!("../../../fuzz/corpus/policy_hcl/seed-comment-after-line-comment"),
        // `/*/` opens a block comment; it was taken for a whole one
        include_str!("../../../fuzz/corpus/policy_hcl/seed-slash-star-slash"),
    ] {
        let formatted = format_hcl(fuzzed).expect("formats");
        assert_eq!(format_hcl(&formatted).expect("formats"), formatted);
    }
    assert_eq!(
        format_hcl("path \"a\" {\n  capabilities = [\"read\" /*/ x */ # y\n  ]\n}\n")
            .expect("formats"),
        "path \"a\" {\n  capabilities = [\n    \"read\", /*/ x */ # y\n  ]\n}\n"
    );
}
