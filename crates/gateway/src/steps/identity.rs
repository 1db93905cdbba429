//! The identity headers a route forwards, from the permitted principal.

use hyper::header::{HeaderName, HeaderValue};

use crate::config::RouteConfig;
use crate::error::GatewayError;
use crate::steps::principal::Principal;

/// The route's `forward_identity` headers for principal `p` (a header whose
/// claim the principal lacks is not set).
pub fn headers(
    route: &RouteConfig,
    p: &Principal,
) -> Result<Vec<(HeaderName, HeaderValue)>, GatewayError> {
    let mut out = Vec::with_capacity(route.forward_identity.len());
    for (name, claim) in &route.forward_identity {
        if let Some(v) = identity_value(p, claim)? {
            // a value that is not a header value is refused, not dropped: a
            // missing x-user must never be the service's reading of a caller
            let v = HeaderValue::from_str(&v).map_err(|_| GatewayError::Forbidden {
                reason: "identity_not_forwardable".into(),
            })?;
            out.push((name.clone(), v));
        }
    }
    Ok(out)
}

/// The value of an identity header, or `None` when the principal has none.
/// Lists are joined with `,`: an element that itself holds a `,` (a role
/// `"viewer,orders-admin"`) would read as two to a service that splits the
/// header while Cedar saw one, so it is refused; so is an element that is
/// empty or has surrounding whitespace (a service that splits and trims
/// reads `" orders-admin"` as a role Cedar never saw), and a single value
/// with surrounding whitespace. A certificate's URIs and DNS names are
/// forwarded all of them, as Cedar sees them (`cert_uris`, `cert_dns`).
fn identity_value(p: &Principal, claim: &str) -> Result<Option<String>, GatewayError> {
    let ambiguous = || GatewayError::Forbidden {
        reason: "identity_not_forwardable".into(),
    };
    let untrimmed = |x: &str| x.trim() != x;
    let joined = |v: &[String]| {
        if v.iter()
            .any(|x| x.contains(',') || x.is_empty() || untrimmed(x))
        {
            return Err(ambiguous());
        }
        Ok(if v.is_empty() {
            None
        } else {
            Some(v.join(","))
        })
    };
    let value = match claim {
        "sub" | "subject" => Some(p.subject.to_string()).filter(|s| !s.is_empty()),
        "iss" | "issuer" => Some(p.issuer.to_string()).filter(|s| !s.is_empty()),
        "scopes" => joined(&p.scopes)?,
        "roles" => joined(&p.roles)?,
        "consumer" => p.consumer.clone(),
        "auth_method" => Some(p.method.as_str().to_string()),
        "cert_uri" => match &p.peer {
            Some(c) => joined(&c.uris)?,
            None => None,
        },
        "cert_dns" => match &p.peer {
            Some(c) => joined(&c.dns_names)?,
            None => None,
        },
        "cert_subject" => p.peer.as_ref().map(|c| c.subject.clone()),
        other => match p.claims.get(other) {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Array(a)) => {
                let items: Vec<String> = a
                    .iter()
                    .filter_map(|x| x.as_str())
                    .map(str::to_owned)
                    .collect();
                joined(&items)?
            }
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            Some(serde_json::Value::Bool(b)) => Some(b.to_string()),
            _ => None,
        },
    };
    if value.as_deref().is_some_and(untrimmed) {
        return Err(ambiguous());
    }
    Ok(value)
}
