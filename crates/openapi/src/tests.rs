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
