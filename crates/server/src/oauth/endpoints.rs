//! The provider's public endpoints (no Vault token): discovery, JWKS, the
//! token endpoint (RFC 6749 client credentials, RFC 8693 token exchange),
//! introspection (RFC 7662) and revocation (RFC 7009).
//!
//! Requests are form-encoded (`application/x-www-form-urlencoded`, a
//! parameter given twice → `invalid_request`, RFC 6749 §3.2); answers are
//! OAuth's JSON, errors `{"error", "error_description"}` (RFC 6749 §5.2).
//! A client authenticates with exactly one method (RFC 6749 §2.3), the one
//! it is registered with: HTTP Basic, `client_id`+`client_secret` in the
//! form, or a `private_key_jwt` assertion (RFC 7523; `iss` = `sub` =
//! client_id, `aud` the token endpoint or the issuer, `jti` never seen
//! before, at most 5 minutes of life). An unknown client and a wrong
//! secret get the same 401 `invalid_client`.

use std::sync::Arc;

use base64::Engine as _;
use serde_json::{Map, Value, json};

use super::{Client, Provider};
use crate::core::Core;
use crate::logical::{ApiError, Response};

const FORM: &str = "application/x-www-form-urlencoded";
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
/// Longest life of a client assertion.
const MAX_ASSERTION_LIFE: i64 = 300;
/// Largest form accepted.
pub const MAX_FORM_BYTES: usize = 64 * 1024;

/// Which public endpoint a path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Discovery,
    Keys,
    Token,
    Introspect,
    Revoke,
}

/// `identity/oidc/provider/<name>/<endpoint>` (canonical, without `/v1/`).
pub fn parse(path: &str) -> Option<(&str, Endpoint)> {
    let rest = path.strip_prefix("identity/oidc/provider/")?;
    let (name, ep) = rest.split_once('/')?;
    let ep = match ep {
        ".well-known/openid-configuration" => Endpoint::Discovery,
        ".well-known/keys" => Endpoint::Keys,
        "token" => Endpoint::Token,
        "introspect" => Endpoint::Introspect,
        "revoke" => Endpoint::Revoke,
        _ => return None,
    };
    Some((name, ep))
}

/// What an endpoint answered, and for the audit record: the client that
/// authenticated, or why authentication failed.
pub struct Outcome {
    pub response: Response,
    pub client_id: Option<String>,
    pub client_name: Option<String>,
    pub failure: Option<&'static str>,
}

impl From<Response> for Outcome {
    fn from(response: Response) -> Self {
        Outcome {
            response,
            client_id: None,
            client_name: None,
            failure: None,
        }
    }
}

/// A failed client authentication: the answer and the audited reason.
type AuthFailure = (Response, &'static str);

/// What the HTTP edge hands over.
pub struct Call<'a> {
    pub get: bool,
    pub content_type: Option<&'a str>,
    pub authorization: Option<&'a str>,
    pub body: &'a [u8],
}

fn oauth_error(status: u16, error: &str, description: &str) -> Response {
    let mut r = Response::raw(
        status,
        json!({"error": error, "error_description": description}),
    );
    if status == 401 {
        r.extra_headers
            .push(("www-authenticate", "Basic realm=\"palisade\""));
    }
    r
}

fn invalid_client() -> Response {
    oauth_error(401, "invalid_client", "client authentication failed")
}

/// The parsed form, or why it is refused. Every parameter once.
pub fn form(call: &Call<'_>) -> Result<Vec<(String, String)>, Box<Response>> {
    let ct = call
        .content_type
        .and_then(|c| c.split(';').next())
        .map(str::trim)
        .unwrap_or("");
    if !ct.eq_ignore_ascii_case(FORM) {
        return Err(Box::new(oauth_error(
            400,
            "invalid_request",
            "the request must be application/x-www-form-urlencoded",
        )));
    }
    if call.body.len() > MAX_FORM_BYTES {
        return Err(Box::new(oauth_error(
            400,
            "invalid_request",
            "request too large",
        )));
    }
    let mut out: Vec<(String, String)> = Vec::new();
    for (k, v) in url::form_urlencoded::parse(call.body) {
        if out.iter().any(|(x, _)| *x == k) {
            return Err(Box::new(oauth_error(
                400,
                "invalid_request",
                "a parameter is given more than once",
            )));
        }
        if out.len() >= 32 {
            return Err(Box::new(oauth_error(
                400,
                "invalid_request",
                "too many parameters",
            )));
        }
        out.push((k.into_owned(), v.into_owned()));
    }
    Ok(out)
}

fn param<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// Serve `ep` of provider `name`. The form (for the audit record) and the
/// answer; OAuth errors are answers, not `ApiError`s.
pub async fn serve(
    core: &Arc<Core>,
    name: &str,
    ep: Endpoint,
    call: &Call<'_>,
    form: &[(String, String)],
) -> Result<Outcome, ApiError> {
    let Some(p) = super::provider(core, name).await? else {
        return Err(ApiError::not_found());
    };
    let issuer = p.issuer_url(name);
    match ep {
        Endpoint::Discovery => {
            let (ring, _) = super::signing_key(core, &p.key).await?;
            let alg = ring.algorithm.as_str();
            Ok(Outcome::from(Response::raw(
                200,
                json!({
                    "issuer": issuer,
                    "jwks_uri": format!("{issuer}/.well-known/keys"),
                    "token_endpoint": format!("{issuer}/token"),
                    "introspection_endpoint": format!("{issuer}/introspect"),
                    "revocation_endpoint": format!("{issuer}/revoke"),
                    "grant_types_supported": ["client_credentials", TOKEN_EXCHANGE],
                    "response_types_supported": ["token"],
                    "subject_types_supported": ["public"],
                    "id_token_signing_alg_values_supported": [alg],
                    "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt"],
                    "token_endpoint_auth_signing_alg_values_supported": ["RS256", "ES256", "EdDSA"],
                    "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt"],
                    "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt"],
                    "scopes_supported": p.scopes_supported,
                }),
            )))
        }
        Endpoint::Keys => {
            let (ring, _) = super::signing_key(core, &p.key).await?;
            Ok(Outcome::from(Response::raw(
                200,
                json!({ "keys": ring.jwks(core.tokens.now()) }),
            )))
        }
        Endpoint::Token | Endpoint::Introspect | Endpoint::Revoke => {
            if call.get {
                return Ok(oauth_error(400, "invalid_request", "use POST").into());
            }
            let client = match authenticate(core, &issuer, call, form).await? {
                Ok(c) => c,
                Err((response, why)) => {
                    return Ok(Outcome {
                        response,
                        client_id: None,
                        client_name: None,
                        failure: Some(why),
                    });
                }
            };
            let response = if !p.allows(&client.client_id) || client.key != p.key {
                oauth_error(
                    400,
                    "unauthorized_client",
                    "the client is not allowed on this provider",
                )
            } else {
                match ep {
                    Endpoint::Token => token(core, &p, &issuer, &client, form).await?,
                    Endpoint::Introspect => introspect(core, name, &p, form).await?,
                    _ => revoke(core, name, &p, &client, form).await?,
                }
            };
            Ok(Outcome {
                response,
                client_id: Some(client.client_id.clone()),
                client_name: Some(client.name.clone()),
                failure: None,
            })
        }
    }
}

/// Authenticate the client by the one method the request uses.
async fn authenticate(
    core: &Core,
    issuer: &str,
    call: &Call<'_>,
    form: &[(String, String)],
) -> Result<Result<Arc<Client>, AuthFailure>, ApiError> {
    // the scheme name is case-insensitive (RFC 7235 §2.1)
    let basic = call.authorization.and_then(|a| {
        let (scheme, rest) = a.split_once(' ')?;
        scheme.eq_ignore_ascii_case("basic").then_some(rest)
    });
    let post = param(form, "client_secret");
    let assertion = param(form, "client_assertion");
    let methods = [basic.is_some(), post.is_some(), assertion.is_some()];
    if methods.iter().filter(|m| **m).count() != 1 {
        let several = methods.iter().any(|m| *m);
        return Ok(Err(if several {
            (
                oauth_error(
                    400,
                    "invalid_request",
                    "use exactly one client authentication method",
                ),
                "invalid_request: more than one client authentication method",
            )
        } else {
            (
                oauth_error(
                    401,
                    "invalid_client",
                    "use exactly one client authentication method",
                ),
                "invalid_client: no client authentication",
            )
        }));
    }
    let salt = super::salt(core).await?;
    let (client_id, secret, method) = if let Some(b) = basic {
        let Some((id, secret)) = base64::engine::general_purpose::STANDARD
            .decode(b.trim())
            .ok()
            .and_then(|d| String::from_utf8(d).ok())
            .and_then(|s| {
                let (i, sec) = s.split_once(':')?;
                // RFC 6749 §2.3.1: both form-urlencoded inside Basic; each
                // decoded whole (a `&` is a character, not a separator)
                let dec = |x: &str| {
                    crate::canonical::percent_decode(x, true)
                        .ok()
                        .and_then(|b| String::from_utf8(b).ok())
                };
                Some((dec(i)?, dec(sec)?))
            })
        else {
            return Ok(Err((
                invalid_client(),
                "invalid_client: malformed Basic credentials",
            )));
        };
        if param(form, "client_id").is_some_and(|c| c != id) {
            return Ok(Err((
                oauth_error(400, "invalid_request", "client_id does not match"),
                "invalid_request: client_id does not match",
            )));
        }
        (id, secret, "client_secret_basic")
    } else if let Some(s) = post {
        let Some(id) = param(form, "client_id") else {
            return Ok(Err((invalid_client(), "invalid_client: no client_id")));
        };
        (id.to_string(), s.to_string(), "client_secret_post")
    } else {
        if param(form, "client_assertion_type") != Some(JWT_BEARER) {
            return Ok(Err((
                oauth_error(
                    400,
                    "invalid_request",
                    "client_assertion_type must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                "invalid_request: client_assertion_type",
            )));
        }
        return Ok(private_key_jwt(core, issuer, assertion.unwrap_or_default(), form).await);
    };
    let client = super::client_by_id(core, &client_id).await?;
    // the HMAC is computed whether or not the client exists
    let presented = salt.sign_hex(secret.as_bytes());
    let why = match &client {
        None => "invalid_client: unknown client",
        Some(c) if c.token_endpoint_auth_method != method => {
            "invalid_client: not the client's authentication method"
        }
        Some(c)
            if c.secret_hash.is_empty()
                || !palisade_crypto::mac::ct_eq(c.secret_hash.as_bytes(), presented.as_bytes()) =>
        {
            "invalid_client: wrong secret"
        }
        Some(_) => "",
    };
    match client {
        Some(c) if why.is_empty() => Ok(Ok(c)),
        _ => Ok(Err((invalid_client(), why))),
    }
}

async fn private_key_jwt(
    core: &Core,
    issuer: &str,
    assertion: &str,
    form: &[(String, String)],
) -> Result<Arc<Client>, AuthFailure> {
    let bad = |why: &'static str| (invalid_client(), why);
    // the unverified iss only names the client whose keys verify it
    let unverified_iss = assertion
        .split('.')
        .nth(1)
        .and_then(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .ok()
        })
        .and_then(|b| serde_json::from_slice::<Map<String, Value>>(&b).ok())
        .and_then(|m| m.get("iss").and_then(Value::as_str).map(str::to_string))
        .ok_or_else(|| bad("invalid_client: malformed assertion"))?;
    if param(form, "client_id").is_some_and(|c| c != unverified_iss) {
        return Err((
            oauth_error(400, "invalid_request", "client_id does not match"),
            "invalid_request: client_id does not match",
        ));
    }
    let client = super::client_by_id(core, &unverified_iss)
        .await
        .map_err(|_| bad("invalid_client: client lookup failed"))?
        .filter(|c| c.token_endpoint_auth_method == "private_key_jwt" && !c.jwks.is_empty())
        .ok_or_else(|| bad("invalid_client: unknown client"))?;
    let mut cfg = palisade_jwt::IssuerConfig::new(
        client.client_id.clone(),
        Vec::new(),
        vec![
            palisade_jwt::Alg::RS256,
            palisade_jwt::Alg::ES256,
            palisade_jwt::Alg::EdDSA,
        ],
        palisade_jwt::KeySource::Jwks(client.jwks.clone()),
    );
    cfg.caller_checks_audience = true;
    let v = palisade_jwt::Verifier::new(vec![cfg], reqwest::Client::new())
        .await
        .map_err(|_| bad("invalid_client: the client's keys are unusable"))?;
    let claims = v
        .verify_at_wall(assertion, core.clock_wall())
        .await
        .map_err(|_| bad("invalid_client: assertion signature or claims"))?;
    let token_endpoint = format!("{issuer}/token");
    let now = core.tokens.now();
    // expired is expired: no leeway for an assertion (its jti record must
    // outlive every moment it could be accepted)
    let ok = claims.sub.as_deref() == Some(client.client_id.as_str())
        && claims
            .aud
            .iter()
            .any(|a| *a == token_endpoint || a == issuer)
        && claims.exp > now
        && claims.exp - now <= MAX_ASSERTION_LIFE;
    let jti = claims
        .get("jti")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !ok || jti.is_empty() || jti.len() > 256 {
        return Err(bad("invalid_client: assertion sub, aud, exp or jti"));
    }
    // a jti is accepted once (RFC 7523 §3): recorded past the assertion's
    // expiry by the verifier's largest leeway
    let key = format!(
        "{}{}",
        super::ASSERTION_PREFIX,
        palisade_crypto::mac::sha256_hex(format!("{}\n{jti}", client.client_id).as_bytes())
    );
    let _g = core.oauth.writes.lock().await;
    match core.barrier.get(&key).await {
        Ok(None) => {}
        _ => return Err(bad("invalid_client: assertion replayed")),
    }
    let keep_until = claims
        .exp
        .saturating_add(palisade_jwt::MAX_LEEWAY.as_secs() as i64);
    core.barrier
        .put(&key, keep_until.to_string().as_bytes())
        .await
        .map_err(|_| bad("invalid_client: assertion could not be recorded"))?;
    Ok(client)
}

/// The scopes a client may get at a provider: its own, limited to the
/// provider's `scopes_supported` when the provider lists any.
fn allowed_scopes(p: &Provider, client: &Client) -> Vec<String> {
    client
        .allowed_scopes
        .iter()
        .filter(|s| p.scopes_supported.is_empty() || p.scopes_supported.contains(s))
        .cloned()
        .collect()
}

/// Space-separated values of a parameter.
fn words(v: Option<&str>) -> Vec<String> {
    v.map(|s| {
        s.split(' ')
            .filter(|x| !x.is_empty())
            .map(str::to_string)
            .collect()
    })
    .unwrap_or_default()
}

async fn token(
    core: &Core,
    p: &Provider,
    issuer: &str,
    client: &Client,
    form: &[(String, String)],
) -> Result<Response, ApiError> {
    let now = core.tokens.now();
    let grant = param(form, "grant_type").unwrap_or_default();
    // the audiences asked for (`audience`, RFC 8693; `resource`, RFC 8707),
    // each one the client may address; none: all of them
    let mut aud = words(param(form, "audience"));
    aud.extend(words(param(form, "resource")));
    if aud.is_empty() {
        aud = client.allowed_audiences.clone();
    }
    if aud.iter().any(|a| !client.allowed_audiences.contains(a)) {
        return Ok(oauth_error(
            400,
            "invalid_target",
            "the client may not ask for this audience",
        ));
    }
    let (sub, scope, exp, act) = match grant {
        "client_credentials" => {
            let Some(scope) = super::scopes(param(form, "scope"), &allowed_scopes(p, client))
            else {
                return Ok(oauth_error(
                    400,
                    "invalid_scope",
                    "the client may not ask for this scope",
                ));
            };
            (
                client.client_id.clone(),
                scope,
                now + client.access_token_ttl,
                None,
            )
        }
        TOKEN_EXCHANGE => {
            match param(form, "subject_token_type") {
                Some(ACCESS_TOKEN_TYPE) | Some(JWT_TOKEN_TYPE) => {}
                _ => {
                    return Ok(oauth_error(
                        400,
                        "invalid_request",
                        "subject_token_type must be an access token or a JWT",
                    ));
                }
            }
            if param(form, "requested_token_type").is_some_and(|t| t != ACCESS_TOKEN_TYPE) {
                return Ok(oauth_error(
                    400,
                    "invalid_request",
                    "only access tokens are issued",
                ));
            }
            if param(form, "actor_token").is_some() {
                return Ok(oauth_error(
                    400,
                    "invalid_request",
                    "actor_token is not supported",
                ));
            }
            let Some(subject) = param(form, "subject_token") else {
                return Ok(oauth_error(400, "invalid_request", "missing subject_token"));
            };
            let name = issuer.rsplit('/').next().unwrap_or_default();
            let Some(claims) = live_claims(core, name, p, subject).await? else {
                return Ok(oauth_error(
                    400,
                    "invalid_grant",
                    "the subject token is not valid",
                ));
            };
            // the subject token must have been issued for the client that
            // trades it (Keycloak's rule): a token for B cannot be traded by A
            if !claims.aud.contains(&client.client_id) {
                return Ok(oauth_error(
                    400,
                    "invalid_grant",
                    "the subject token was not issued for this client",
                ));
            }
            let held = words(claims.get("scope").and_then(Value::as_str));
            let mine = allowed_scopes(p, client);
            let allowed: Vec<String> = held.into_iter().filter(|s| mine.contains(s)).collect();
            let Some(scope) = super::scopes(param(form, "scope"), &allowed) else {
                return Ok(oauth_error(
                    400,
                    "invalid_scope",
                    "a downscoped token holds at most the subject's scopes",
                ));
            };
            let mut act = json!({ "sub": client.client_id });
            if let Some(prior) = claims.get("act") {
                act["act"] = prior.clone();
            }
            let sub = claims.sub.clone().unwrap_or_default();
            (
                sub,
                scope,
                (now + client.access_token_ttl).min(claims.exp),
                Some(act),
            )
        }
        "" => return Ok(oauth_error(400, "invalid_request", "missing grant_type")),
        _ => {
            return Ok(oauth_error(
                400,
                "unsupported_grant_type",
                "grant types: client_credentials, token exchange",
            ));
        }
    };
    let (_, signer) = super::signing_key(core, &p.key).await?;
    let jti = palisade_core::uuid_v4();
    let mut claims = json!({
        "iss": issuer,
        "sub": sub,
        "aud": if aud.len() == 1 { json!(aud[0]) } else { json!(aud) },
        "exp": exp,
        "iat": now,
        "nbf": now,
        "jti": jti,
        "client_id": client.client_id,
        "scope": scope.join(" "),
    });
    if let Some(a) = act {
        claims["act"] = a;
    }
    let at = signer.sign("at+jwt", &claims)?;
    let mut body = json!({
        "access_token": at,
        "token_type": "Bearer",
        "expires_in": exp - now,
        "scope": scope.join(" "),
    });
    if grant == TOKEN_EXCHANGE {
        body["issued_token_type"] = json!(ACCESS_TOKEN_TYPE);
    }
    let mut r = Response::raw(200, body);
    r.extra_headers.push(("pragma", "no-cache"));
    Ok(r)
}

/// The claims of a token this provider issued that is live now: signature
/// by a published key, this issuer, not expired (by the server's clock,
/// without leeway), not before its `nbf`, not revoked.
async fn live_claims(
    core: &Core,
    name: &str,
    p: &Provider,
    token: &str,
) -> Result<Option<Arc<palisade_jwt::Claims>>, ApiError> {
    let v = super::own_verifier(core, name, p).await?;
    let Ok(claims) = v.verify_at_wall(token, core.clock_wall()).await else {
        return Ok(None);
    };
    let now = core.tokens.now();
    let nbf = claims.get("nbf").and_then(Value::as_i64).unwrap_or(0);
    let jti = claims
        .get("jti")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if claims.exp <= now || nbf > now || jti.is_empty() || super::is_revoked(core, jti).await? {
        return Ok(None);
    }
    // a deleted client's tokens die with it
    let cid = claims
        .get("client_id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if super::client_by_id(core, cid).await?.is_none() {
        return Ok(None);
    }
    Ok(Some(claims))
}

async fn introspect(
    core: &Core,
    name: &str,
    p: &Provider,
    form: &[(String, String)],
) -> Result<Response, ApiError> {
    let Some(token) = param(form, "token") else {
        return Ok(oauth_error(400, "invalid_request", "missing token"));
    };
    let Some(c) = live_claims(core, name, p, token).await? else {
        return Ok(Response::raw(200, json!({"active": false})));
    };
    let mut out = Map::new();
    out.insert("active".into(), Value::Bool(true));
    for k in [
        "scope",
        "client_id",
        "sub",
        "aud",
        "iss",
        "exp",
        "iat",
        "nbf",
        "jti",
        "act",
    ] {
        if let Some(v) = c.get(k) {
            out.insert(k.into(), v.clone());
        }
    }
    out.insert("token_type".into(), json!("Bearer"));
    Ok(Response::raw(200, Value::Object(out)))
}

async fn revoke(
    core: &Core,
    name: &str,
    p: &Provider,
    client: &Client,
    form: &[(String, String)],
) -> Result<Response, ApiError> {
    let Some(token) = param(form, "token") else {
        return Ok(oauth_error(400, "invalid_request", "missing token"));
    };
    // RFC 7009 §2.2: an invalid or unknown token is answered 200 too
    let Some(c) = live_claims(core, name, p, token).await? else {
        return Ok(Response::raw(200, json!({})));
    };
    if c.get("client_id").and_then(Value::as_str) != Some(client.client_id.as_str()) {
        return Ok(oauth_error(
            400,
            "unauthorized_client",
            "the token was issued to another client",
        ));
    }
    let jti = c.get("jti").and_then(Value::as_str).unwrap_or_default();
    super::revoke_jti(core, jti, c.exp).await?;
    Ok(Response::raw(200, json!({})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        assert_eq!(
            parse("identity/oidc/provider/default/token"),
            Some(("default", Endpoint::Token))
        );
        assert_eq!(
            parse("identity/oidc/provider/p/.well-known/keys"),
            Some(("p", Endpoint::Keys))
        );
        assert_eq!(parse("identity/oidc/provider/p"), None);
        assert_eq!(parse("identity/oidc/provider/p/authorize"), None);
    }

    #[test]
    fn forms_refuse_duplicates_and_other_content_types() {
        let call = |ct: &'static str, body: &'static [u8]| Call {
            get: false,
            content_type: Some(ct),
            authorization: None,
            body,
        };
        assert!(form(&call(FORM, b"a=1&b=2")).is_ok());
        assert!(
            form(&call(
                "application/x-www-form-urlencoded; charset=UTF-8",
                b"a=1"
            ))
            .is_ok()
        );
        assert!(form(&call(FORM, b"a=1&a=2")).is_err());
        assert!(form(&call("application/json", b"{}")).is_err());
    }
}
