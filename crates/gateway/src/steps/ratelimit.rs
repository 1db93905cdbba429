//! Rate limits (pipeline steps 6 and 9) on `palisade-ratelimit`.

use std::net::IpAddr;

use palisade_ratelimit::{Decision, Key, Limiter, Quota};

use crate::config::{LimitKey, RouteConfig};
use crate::error::GatewayError;
use crate::steps::principal::{Method, Principal};

/// Headers an admitted response reports (the route's or consumer's limit).
pub type LimitHeaders = Vec<(&'static str, String)>;

/// Step 6: the per-IP shield, before routing, authentication or any
/// cryptographic work. Its headers go out only on a refusal.
pub async fn peer(
    limiter: &Limiter,
    quota: Option<&Quota>,
    client: IpAddr,
) -> Result<(), GatewayError> {
    if let Some(q) = quota {
        let d = limiter.check(&Key::peer(client), q).await;
        if matches!(d, Decision::Deny { .. }) {
            limit_err(d, q, "peer")?;
        }
    }
    Ok(())
}

/// Step 9: the consumer's limit on the route, else the route's limit keyed
/// as configured. As Kong's `limit_by`: a caller without the identity the
/// limit is keyed by (anonymous for `principal`, no key for `apikey`) is
/// limited by its IP, not in one bucket shared by all such callers.
pub async fn principal(
    limiter: &Limiter,
    route: &RouteConfig,
    principal: &Principal,
    label: &str,
    client_ip: &str,
) -> Result<LimitHeaders, GatewayError> {
    let consumer_quota = principal
        .consumer
        .as_ref()
        .and_then(|c| route.consumer_limits.get(c));
    if let Some(q) = consumer_quota {
        let quota = Quota::new(q.limit, q.period, q.burst).map_err(|_| GatewayError::Internal)?;
        let key = Key::principal(&route.name, label);
        return limit_err(limiter.check(&key, &quota).await, &quota, "consumer");
    }
    let Some((q, per)) = &route.ratelimit else {
        return Ok(Vec::new());
    };
    let quota = Quota::new(q.limit, q.period, q.burst).map_err(|_| GatewayError::Internal)?;
    let by_ip = || Key::principal(&route.name, client_ip);
    let key = match per {
        LimitKey::Principal if principal.method == Method::Anonymous => by_ip(),
        LimitKey::Principal => Key::principal(&route.name, label),
        LimitKey::Ip => by_ip(),
        LimitKey::Route => Key::route(&route.name),
        LimitKey::ApiKey => match principal.key_id.as_deref() {
            Some(id) => Key::api_key(&route.name, id),
            None => by_ip(),
        },
    };
    limit_err(limiter.check(&key, &quota).await, &quota, "route")
}

fn limit_err(
    d: Decision,
    q: &Quota,
    name: &'static str,
) -> Result<Vec<(&'static str, String)>, GatewayError> {
    let headers = palisade_ratelimit::headers(&d, q, name);
    match d {
        Decision::Allow { .. } => Ok(headers),
        Decision::Deny { retry_after, .. } => Err(GatewayError::RateLimited {
            retry_after,
            headers,
            limit: name,
        }),
    }
}
