use super::*;

const SHOP: &str = include_str!("../tests/data/shop-3.0.yaml");
const ORDERS: &str = include_str!("../tests/data/orders-3.1.json");

fn shop() -> Spec {
    Spec::parse(SHOP).unwrap()
}

fn orders() -> Spec {
    Spec::parse(ORDERS).unwrap()
}

const TENANT: (&str, &str) = ("x-tenant", "6f1c2a3e-9a7b-4c1d-8e2f-0a1b2c3d4e5f");

fn req<'a>(
    method: &'a str,
    path: &'a str,
    query: Option<&'a str>,
    headers: &'a [(&'a str, &'a str)],
    ct: Option<&'a str>,
    body: &'a str,
) -> Request<'a> {
    Request {
        method,
        path,
        query,
        headers,
        content_type: ct,
        body: body.as_bytes(),
    }
}

fn get<'a>(path: &'a str, query: Option<&'a str>) -> Request<'a> {
    req("GET", path, query, &[], None, "")
}

#[track_caller]
fn refused(spec: &Spec, r: Request<'_>, pointer: &str, rule: &str) {
    assert_eq!(
        spec.validate(&r),
        Err(Violation {
            pointer: pointer.into(),
            rule: rule.into()
        }),
        "{r:?}"
    );
}

#[test]
fn described_requests_pass() {
    let s = shop();
    assert_eq!(s.version, Version::V30);
    for (path, query) in [
        ("/api/v1/products", None),
        ("/api/v1/products", Some("limit=20&sort=-price")),
        ("/api/v1/products", Some("tag=red&tag=blue&limit=1")),
        (
            "/api/v1/products",
            Some("filter[status]=active&filter[minPrice]=2.5"),
        ),
        ("/api/v1/products/42", None),
        ("/api/v1/products/search", Some("q=lamp+shade")),
        ("/api/v1/files/price-list.json", None),
    ] {
        assert_eq!(s.validate(&get(path, query)), Ok(()), "{path} {query:?}");
    }
    assert_eq!(
        s.validate(&req("HEAD", "/api/v1/products/7", None, &[], None, "")),
        Ok(())
    );
    assert_eq!(
        s.validate(&req("DELETE", "/api/v1/products/7", None, &[], None, "")),
        Ok(())
    );
    let json = r#"{"name":"Lamp","price":19.5,"description":null,"tags":["home"],"image":"aGVsbG8=","stock":3}"#;
    assert_eq!(
        s.validate(&req(
            "POST",
            "/api/v1/products",
            None,
            &[TENANT],
            Some("application/json; charset=utf-8"),
            json
        )),
        Ok(())
    );
    let form = "name=Desk+lamp&price=12&tags=a&tags=b&stock=4";
    assert_eq!(
        s.validate(&req(
            "POST",
            "/api/v1/products",
            None,
            &[TENANT],
            Some("application/x-www-form-urlencoded"),
            form
        )),
        Ok(())
    );
}

#[test]
fn unknown_paths_methods_and_parameters_are_refused() {
    let s = shop();
    refused(&s, get("/api/v1/users", None), "/path", "no_matching_path");
    refused(
        &s,
        get("/api/v2/products", None),
        "/path",
        "no_matching_path",
    );
    refused(&s, get("/products", None), "/path", "no_matching_path");
    refused(
        &s,
        get("/api/v1/products/1/extra", None),
        "/path",
        "no_matching_path",
    );
    refused(
        &s,
        get("/api/v1/files/x.json.bak", None),
        "/path",
        "no_matching_path",
    );
    refused(
        &s,
        req("PUT", "/api/v1/products/7", None, &[], None, ""),
        "/method",
        "method_not_allowed",
    );
    refused(
        &s,
        get("/api/v1/products", Some("limit=5&debug=1")),
        "/query/debug",
        "unknown_parameter",
    );
    refused(
        &s,
        get("/api/v1/products", Some("filter[owner]=me")),
        "/query/filter",
        "additionalProperties",
    );
    refused(
        &s,
        get("/api/v1/products/search", None),
        "/query/q",
        "required",
    );
    refused(
        &s,
        req(
            "POST",
            "/api/v1/products",
            None,
            &[],
            Some("application/json"),
            r#"{"name":"a","price":1}"#,
        ),
        "/header/x-tenant",
        "required",
    );
}

#[test]
fn wrong_types_and_values_are_refused_at_their_pointer() {
    let s = shop();
    refused(
        &s,
        get("/api/v1/products", Some("limit=abc")),
        "/query/limit",
        "type",
    );
    refused(
        &s,
        get("/api/v1/products", Some("limit=0")),
        "/query/limit",
        "minimum",
    );
    refused(
        &s,
        get("/api/v1/products", Some("limit=3000000000")),
        "/query/limit",
        "maximum",
    );
    refused(
        &s,
        get("/api/v1/products", Some("sort=random")),
        "/query/sort",
        "enum",
    );
    // one value declared, two sent: frameworks read it as an array or either value
    refused(
        &s,
        get("/api/v1/products", Some("sort=name&sort=price")),
        "/query/sort",
        "repeated_parameter",
    );
    refused(
        &s,
        get("/api/v1/products", Some("limit=%zz")),
        "/query",
        "malformed_encoding",
    );
    refused(
        &s,
        get("/api/v1/products/0", None),
        "/path/productId",
        "minimum",
    );
    refused(
        &s,
        get("/api/v1/products/seven", None),
        "/path/productId",
        "type",
    );
    refused(
        &s,
        get("/api/v1/files/Price_List.json", None),
        "/path/name",
        "pattern",
    );
    let bad_tenant = [("x-tenant", "not-a-uuid")];
    refused(
        &s,
        req(
            "POST",
            "/api/v1/products",
            None,
            &bad_tenant,
            Some("application/json"),
            r#"{"name":"a","price":1}"#,
        ),
        "/header/x-tenant",
        "format",
    );
    let post = |ct: &'static str, body: &'static str| {
        req("POST", "/api/v1/products", None, &[TENANT], Some(ct), body)
    };
    refused(
        &s,
        post("application/json", r#"{"name":"a","price":0}"#),
        "/body/price",
        "exclusiveMinimum",
    );
    refused(
        &s,
        post("application/json", r#"{"name":"a","price":1,"admin":true}"#),
        "/body",
        "additionalProperties",
    );
    refused(
        &s,
        post("application/json", r#"{"price":1}"#),
        "/body",
        "required",
    );
    refused(
        &s,
        post(
            "application/json",
            r#"{"name":"a","price":1,"image":"not base64!"}"#,
        ),
        "/body/image",
        "format",
    );
    refused(
        &s,
        post(
            "application/json",
            r#"{"name":"a","price":1,"stock":4294967296}"#,
        ),
        "/body/stock",
        "maximum",
    );
    refused(
        &s,
        post("application/json", r#"{"name":"a","price":1,"tags":"x"}"#),
        "/body/tags",
        "type",
    );
    refused(
        &s,
        post("application/json", r#"{"name":"a","#),
        "/body",
        "malformed_json",
    );
    refused(
        &s,
        post("text/plain", "hello"),
        "/header/content-type",
        "media_type_not_allowed",
    );
    refused(
        &s,
        post("application/x-www-form-urlencoded", "name=a&price=1&name=b"),
        "/body/name",
        "repeated_parameter",
    );
    refused(
        &s,
        post("application/x-www-form-urlencoded", "name=a&price=free"),
        "/body/price",
        "type",
    );
    refused(
        &s,
        req(
            "POST",
            "/api/v1/products",
            None,
            &[TENANT],
            Some("application/json"),
            "",
        ),
        "/body",
        "required",
    );
    refused(
        &s,
        req(
            "DELETE",
            "/api/v1/products/3",
            None,
            &[],
            Some("application/json"),
            "{}",
        ),
        "/body",
        "body_not_allowed",
    );
}

#[test]
fn openapi_3_1_with_all_of_one_of_formats_and_closed_objects() {
    let s = orders();
    assert_eq!(s.version, Version::V31);
    let order = r#"{"customerEmail":"ana@example.com","placedAt":"2026-12-05T10:00:00Z","note":null,
        "items":[{"sku":"LMP-1","quantity":2,"unitPrice":{"amount":"19.90","currency":"EUR"}}],
        "payment":{"method":"card","token":"tok_123"}}"#;
    let post =
        |body: &'static str| req("POST", "/orders", None, &[], Some("application/json"), body);
    assert_eq!(s.validate(&post(order)), Ok(()));
    let transfer = r#"{"customerEmail":"ana@example.com","items":[{"sku":"LMP-1","quantity":1}],
        "payment":{"method":"transfer","iban":"DE89370400440532013000"}}"#;
    assert_eq!(s.validate(&post(transfer)), Ok(()));
    // oneOf: neither (a card without its token), allOf's unevaluatedProperties
    refused(
        &s,
        post(
            r#"{"customerEmail":"a@b.co","items":[{"sku":"abc","quantity":1}],"payment":{"method":"card"}}"#,
        ),
        "/body/payment",
        "oneOf",
    );
    refused(
        &s,
        post(
            r#"{"customerEmail":"a@b.co","items":[{"sku":"abc","quantity":1}],"payment":{"method":"card","token":"t"},"isAdmin":true}"#,
        ),
        "/body",
        "unevaluatedProperties",
    );
    refused(
        &s,
        post(
            r#"{"customerEmail":"not an email","items":[{"sku":"abc","quantity":1}],"payment":{"method":"card","token":"t"}}"#,
        ),
        "/body/customerEmail",
        "format",
    );
    refused(
        &s,
        post(
            r#"{"customerEmail":"a@b.co","items":[{"sku":"abc","quantity":1,"unitPrice":{"amount":"1.999","currency":"EUR"}}],"payment":{"method":"card","token":"t"}}"#,
        ),
        "/body/items/0/unitPrice/amount",
        "pattern",
    );
    refused(
        &s,
        post(r#"{"customerEmail":"a@b.co","items":[],"payment":{"method":"card","token":"t"}}"#),
        "/body/items",
        "minItems",
    );
    let id = "/orders/2b0d7c8e-1f3a-4d5b-9c6e-7f8a9b0c1d2e";
    assert_eq!(s.validate(&get(id, Some("include=items,customer"))), Ok(()));
    refused(
        &s,
        get(id, Some("include=items,secrets")),
        "/query/include/1",
        "enum",
    );
    refused(&s, get("/orders/42", None), "/path/orderId", "format");
    let patch = |ct: &'static str, body: &'static str| req("PATCH", id, None, &[], Some(ct), body);
    assert_eq!(
        s.validate(&patch(
            "application/merge-patch+json",
            r#"{"note":"leave at door"}"#
        )),
        Ok(())
    );
    refused(
        &s,
        patch("application/merge-patch+json", "{}"),
        "/body",
        "minProperties",
    );
    refused(
        &s,
        patch("application/json", r#"{"note":"x"}"#),
        "/header/content-type",
        "media_type_not_allowed",
    );
}

#[test]
fn documents_that_cannot_be_trusted_or_read_do_not_load() {
    let e = |doc: &str| Spec::parse(doc).unwrap_err().0;
    assert_eq!(
        e(r#"{"swagger":"2.0","paths":{}}"#),
        "openapi: missing (not an OpenAPI 3 document)"
    );
    assert_eq!(
        e(r#"{"openapi":"4.0.0","paths":{}}"#),
        "openapi: \"4.0.0\" is not 3.0.x or 3.1.x"
    );
    // nothing outside the document is ever fetched
    let remote = r#"{"openapi":"3.1.0","paths":{"/a":{"get":{"parameters":[{"$ref":"https://evil.example/p.json"}]}}}}"#;
    assert!(
        e(remote).contains("only references inside the document"),
        "{}",
        e(remote)
    );
    let file = r#"{"openapi":"3.0.3","paths":{"/a":{"post":{"requestBody":{"content":{"application/json":{"schema":{"$ref":"schemas.json#/X"}}}}}}}}"#;
    assert!(
        e(file).contains("only references inside the document"),
        "{}",
        e(file)
    );
    let dangling = r##"{"openapi":"3.0.3","paths":{"/a":{"get":{"parameters":[{"$ref":"#/components/parameters/Nope"}]}}}}"##;
    assert!(
        e(dangling).contains("names nothing in the document"),
        "{}",
        e(dangling)
    );
    let cycle = r##"{"openapi":"3.0.3","paths":{"/a":{"$ref":"#/paths/~1b"},"/b":{"$ref":"#/paths/~1a"}}}"##;
    assert!(e(cycle).contains("a cycle"), "{}", e(cycle));
    let undeclared = r#"{"openapi":"3.0.3","paths":{"/a/{id}":{"get":{}}}}"#;
    assert!(
        e(undeclared).contains("path parameter \"id\" is not declared"),
        "{}",
        e(undeclared)
    );
    assert!(e("openapi: [").starts_with("not YAML"));
}

#[test]
fn a_recursive_schema_loads_and_validates() {
    let doc = r##"{"openapi":"3.1.0","paths":{"/tree":{"post":{"requestBody":{"required":true,"content":{"application/json":{"schema":{"$ref":"#/components/schemas/Node"}}}}}}},
      "components":{"schemas":{"Node":{"type":"object","additionalProperties":false,"properties":{"name":{"type":"string"},"children":{"type":"array","items":{"$ref":"#/components/schemas/Node"}}}}}}}"##;
    let s = Spec::parse(doc).unwrap();
    let post = |b: &'static str| req("POST", "/tree", None, &[], Some("application/json"), b);
    assert_eq!(
        s.validate(&post(
            r#"{"name":"a","children":[{"name":"b","children":[]}]}"#
        )),
        Ok(())
    );
    refused(
        &s,
        post(r#"{"name":"a","children":[{"name":"b","x":1}]}"#),
        "/body/children/0",
        "additionalProperties",
    );
}

/// A query parameter described by `content: application/json` is parsed
/// and checked against its schema (a JSON filter cannot carry `$where`).
#[test]
fn json_encoded_query_parameters_are_checked() {
    let doc = r#"{"openapi":"3.1.0","paths":{"/customers":{"get":{"parameters":[{"name":"filter","in":"query",
      "content":{"application/json":{"schema":{"type":"object","additionalProperties":false,
      "properties":{"limit":{"type":"integer","maximum":100},"name":{"type":"string"}}}}}}]}}}}"#;
    let s = Spec::parse(doc).unwrap();
    assert_eq!(
        s.validate(&get("/customers", Some("filter=%7B%22limit%22%3A10%7D"))),
        Ok(())
    );
    refused(
        &s,
        get(
            "/customers",
            Some("filter=%7B%22%24where%22%3A%22sleep(5000)%22%7D"),
        ),
        "/query/filter",
        "additionalProperties",
    );
    refused(
        &s,
        get("/customers", Some("filter=%7B%22limit%22%3A%22all%22%7D")),
        "/query/filter/limit",
        "type",
    );
    refused(
        &s,
        get("/customers", Some("filter=%7Bnot%20json")),
        "/query/filter",
        "malformed_json",
    );
}

// ---- attack review findings (each failed before its fix) ----

fn doc(paths_and_components: &str) -> Spec {
    Spec::parse(&format!(r#"{{"openapi":"3.1.0",{paths_and_components}}}"#)).unwrap()
}

/// Express's extended form parser (qs) reads `[role]=admin` and
/// `role[]=admin` as the property `role`: such names are refused, never
/// checked as keys of their own past the property's schema.
#[test]
fn bracketed_form_keys_are_refused() {
    let s = doc(
        r#""paths":{"/profile":{"post":{"requestBody":{"content":{"application/x-www-form-urlencoded":{"schema":
        {"type":"object","required":["name"],"properties":{"name":{"type":"string"},"role":{"enum":["user"]}}}}}}}}}"#,
    );
    let post = |b: &'static str| {
        req(
            "POST",
            "/profile",
            None,
            &[],
            Some("application/x-www-form-urlencoded"),
            b,
        )
    };
    assert_eq!(s.validate(&post("name=bob&role=user")), Ok(()));
    refused(
        &s,
        post("name=bob&[role]=admin"),
        "/body/[role]",
        "nested_form_key",
    );
    refused(
        &s,
        post("name=bob&%5Brole%5D=admin"),
        "/body/[role]",
        "nested_form_key",
    );
    refused(
        &s,
        post("name=bob&role[]=admin"),
        "/body/role[]",
        "nested_form_key",
    );
    refused(
        &s,
        post("name=bob&role[0]=admin"),
        "/body/role[0]",
        "nested_form_key",
    );
}

/// Cookies as cookie-parser reads them: names trimmed (`role =admin`),
/// values percent-decoded and `j:` JSON; a name sent twice is refused.
#[test]
fn cookies_are_read_as_cookie_parser_reads_them() {
    let s = doc(r#""paths":{"/search":{"get":{"parameters":[
          {"name":"role","in":"cookie","schema":{"enum":["user"]}},
          {"name":"session","in":"cookie","schema":{"type":"string","pattern":"^[A-Za-z0-9%]*$"}}]}}}"#);
    let with = |c: &'static str| {
        let h: &'static [(&'static str, &'static str)] = Box::leak(Box::new([("cookie", c)]));
        req("GET", "/search", None, h, None, "")
    };
    assert_eq!(s.validate(&with("role=user; session=abc123")), Ok(()));
    refused(
        &s,
        with("role =admin; role=user"),
        "/cookie/role",
        "repeated_parameter",
    );
    refused(
        &s,
        with("role=user; session=%27%20OR%201%3D1%20%23"),
        "/cookie/session",
        "pattern",
    );
    refused(
        &s,
        with("session=j%3A%7B%22%24ne%22%3A1%7D"),
        "/cookie/session",
        "type",
    );
}

/// Express routes case-insensitively: `/items/EXPORT` would reach the
/// handler of `/items/export`, so it is not taken for `/items/{id}`.
#[test]
fn a_literal_path_in_another_case_is_refused() {
    let s = doc(
        r#""paths":{"/items/export":{"get":{"parameters":[{"name":"x-confirm","in":"header","required":true,"schema":{"const":"yes"}}]}},
        "/items/{id}":{"get":{"parameters":[{"name":"id","in":"path","required":true,"schema":{"type":"string","pattern":"^[A-Za-z0-9]+$"}}]}}}"#,
    );
    assert_eq!(s.validate(&get("/items/abc", None)), Ok(()));
    refused(
        &s,
        get("/items/export", None),
        "/header/x-confirm",
        "required",
    );
    refused(
        &s,
        get("/items/EXPORT", None),
        "/path",
        "path_case_mismatch",
    );
    refused(
        &s,
        get("/items/Export", None),
        "/path",
        "path_case_mismatch",
    );
}

/// Recursive schemas with many recursive properties load at once (each
/// reference shaped once; the document compiled once).
#[test]
fn many_recursive_references_load_quickly() {
    let props: Vec<String> = (0..12)
        .map(|i| format!(r##""p{i}":{{"$ref":"#/components/schemas/Node"}}"##))
        .collect();
    let ops: Vec<String> = (0..200)
        .map(|i| format!(r##""/n{i}":{{"post":{{"requestBody":{{"content":{{"application/json":{{"schema":{{"$ref":"#/components/schemas/Node"}}}}}}}}}}}}"##))
        .collect();
    let s = doc(&format!(
        r#""paths":{{{}}},"components":{{"schemas":{{"Node":{{"type":"object","additionalProperties":false,"properties":{{{}}}}}}}}}"#,
        ops.join(","),
        props.join(",")
    ));
    let post = |b: &'static str| req("POST", "/n7", None, &[], Some("application/json"), b);
    assert_eq!(s.validate(&post(r#"{"p0":{"p11":{}}}"#)), Ok(()));
    refused(
        &s,
        post(r#"{"p0":{"x":1}}"#),
        "/body/p0",
        "additionalProperties",
    );
}

/// YAML merge keys are applied (left in, `<<` was an unknown keyword and
/// the merged schema was lost: everything passed).
#[test]
fn yaml_merge_keys_are_applied() {
    let yaml = "openapi: 3.1.0\nx-base: &base {type: object, additionalProperties: false, properties: {role: {enum: [user]}}}\n\
paths:\n  /m:\n    post:\n      requestBody:\n        content:\n          application/json:\n            schema:\n              <<: *base\n              required: [role]\n";
    let s = Spec::parse(yaml).unwrap();
    let post = |b: &'static str| req("POST", "/m", None, &[], Some("application/json"), b);
    assert_eq!(s.validate(&post(r#"{"role":"user"}"#)), Ok(()));
    refused(&s, post(r#"{"role":"admin"}"#), "/body/role", "enum");
    refused(
        &s,
        post(r#"{"role":"user","x":1}"#),
        "/body",
        "additionalProperties",
    );
}

#[test]
fn what_node_reads_differently_is_refused() {
    let s = doc(r#""servers":[{"url":"/"},{"url":"/v1"}],"paths":{
        "/users/{id}":{"get":{"parameters":[{"name":"id","in":"path","required":true,"schema":{"type":"integer","maximum":9007199254740993}},
          {"name":"tag","in":"query","schema":{"type":"array","items":{"type":"string"}}}]}},
        "/files/{id}":{"get":{"parameters":[{"name":"id","in":"path","required":true,"schema":{"type":"string","pattern":"^[a-z]+$"}}]}},
        "/files/{name}.json":{"get":{"parameters":[{"name":"name","in":"path","required":true,"schema":{"type":"string"}}]}},
        "/n":{"post":{"requestBody":{"content":{"application/json":{"schema":{"type":"object"}}}}}}}"#);
    // more pairs than Node's parsers read
    let many: &'static str = Box::leak(
        std::iter::repeat_n("tag=a", 1001)
            .collect::<Vec<_>>()
            .join("&")
            .into_boxed_str(),
    );
    refused(
        &s,
        get("/users/5", Some(many)),
        "/query",
        "too_many_parameters",
    );
    // an integer JavaScript reads as another number
    refused(&s, get("/users/9007199254740993", None), "/path/id", "type");
    let post = |b: &'static str| req("POST", "/n", None, &[], Some("application/json"), b);
    refused(
        &s,
        post(r#"{"a":{"b":[9007199254740993]}}"#),
        "/body/a/b/0",
        "unsafe_integer",
    );
    assert_eq!(s.validate(&post(r#"{"a":9007199254740991}"#)), Ok(()));
    // every server's base: /v1 is tried before /
    assert_eq!(s.validate(&get("/v1/users/5", None)), Ok(()));
    assert_eq!(s.validate(&get("/users/5", None)), Ok(()));
    // literal characters rank a template first
    assert_eq!(s.validate(&get("/files/abc.json", None)), Ok(()));
    refused(&s, get("/files/ABC", None), "/path/id", "pattern");
}

#[test]
fn pure_reference_cycles_do_not_load() {
    let e = Spec::parse(
        r##"{"openapi":"3.1.0","paths":{"/a":{"post":{"requestBody":{"content":{"application/json":{"schema":
        {"type":"object","properties":{"x":{"$ref":"#/components/schemas/A"}}}}}}}}},
        "components":{"schemas":{"A":{"$ref":"#/components/schemas/B"},"B":{"$ref":"#/components/schemas/A"}}}}"##,
    )
    .unwrap_err()
    .0;
    assert!(e.contains("a cycle"), "{e}");
}

/// An unknown parameter's name is capped in the pointer (it is the
/// request's own text).
#[test]
fn unknown_names_are_capped_in_the_log() {
    let s = shop();
    let long: &'static str = Box::leak(format!("{}=1", "x".repeat(300)).into_boxed_str());
    let v = s
        .validate(&get("/api/v1/products", Some(long)))
        .unwrap_err();
    assert_eq!(v.rule, "unknown_parameter");
    assert!(
        v.pointer.len() <= "/query/".len() + 64 + '…'.len_utf8(),
        "{}",
        v.pointer
    );
}
