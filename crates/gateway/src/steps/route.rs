//! The route table (pipeline step 7): the most specific prefix for the
//! canonical host, path and method.

use std::sync::Arc;

use crate::config::RouteConfig;
use crate::error::GatewayError;
use crate::steps::authz::Protected;
use crate::steps::inspect;
use crate::steps::upstream::{Pool, Target};

/// A configured route and the pool its requests go to, bound once when
/// the gateway is built: a permit for a route forwards to this pool only.
#[derive(Debug)]
pub struct Route {
    pub config: RouteConfig,
    pool: Arc<Pool>,
}

impl Route {
    pub fn new(config: RouteConfig, pool: Arc<Pool>) -> Self {
        Self { config, pool }
    }

    /// The name of the upstream its requests go to.
    pub fn pool_name(&self) -> &str {
        &self.pool.name
    }
}

impl std::ops::Deref for Route {
    type Target = RouteConfig;
    fn deref(&self) -> &RouteConfig {
        &self.config
    }
}

impl Protected for Route {
    fn name(&self) -> &str {
        &self.config.name
    }
}

impl Target for Route {
    fn config(&self) -> &RouteConfig {
        &self.config
    }
    fn pool(&self) -> &Pool {
        &self.pool
    }
}

/// Every route, most specific prefix first (declaration order breaks ties).
pub struct Routes(Vec<Arc<Route>>);

impl Routes {
    pub fn new(mut routes: Vec<Route>) -> Self {
        routes.sort_by_key(|r| std::cmp::Reverse(r.path_prefix.trim_end_matches('/').len()));
        Self(routes.into_iter().map(Arc::new).collect())
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.0.iter()
    }
}

fn host_matches(route: &RouteConfig, host: &str) -> bool {
    route.hosts.is_empty()
        || route.hosts.iter().any(|h| match h.strip_prefix("*.") {
            Some(suffix) => host.strip_suffix(suffix).is_some_and(|l| {
                l.ends_with('.') && l.len() > 1 && !l[..l.len() - 1].contains('.')
            }),
            None => h == host,
        })
}

/// The route for (host, path, method): most specific prefix first.
/// `preflight` says the request is a CORS preflight (`OPTIONS` with
/// `Access-Control-Request-Method`): only that is answered on a CORS route
/// whose `methods` do not list `OPTIONS`.
pub fn select<'a>(
    routes: &'a Routes,
    host: &str,
    path: &str,
    method: &str,
    preflight: bool,
) -> Result<&'a Arc<Route>, GatewayError> {
    // TRACE, CONNECT and extension methods never reach a route or a policy
    if !matches!(
        method,
        "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS"
    ) {
        return Err(GatewayError::MethodNotAllowed);
    }
    // Routes are sorted by prefix length, longest first. The longest prefix
    // that matches decides: among routes with exactly that prefix, the one
    // listing the method wins; if none does, 405. A request never falls
    // through to a shorter, possibly weaker route because of its method.
    let mut matched_len: Option<usize> = None;
    for r in routes.iter() {
        let len = r.path_prefix.trim_end_matches('/').len();
        if matched_len.is_some_and(|m| len < m) {
            break;
        }
        if host_matches(r, host) && inspect::under_prefix(path, &r.path_prefix) {
            matched_len = Some(len);
            let preflight = preflight && r.cors.is_some();
            if r.methods.is_empty() || preflight || r.methods.iter().any(|m| m == method) {
                return Ok(r);
            }
        }
    }
    Err(if matched_len.is_some() {
        GatewayError::MethodNotAllowed
    } else {
        GatewayError::NoRoute
    })
}

/// The path the route's service receives for `path` (the canonical path):
/// less the route's prefix with `strip_prefix`.
pub(crate) fn upstream_path<'a>(route: &crate::config::RouteConfig, path: &'a str) -> &'a str {
    if !route.strip_prefix {
        return path;
    }
    match path.strip_prefix(route.path_prefix.trim_end_matches('/')) {
        Some("") => "/",
        Some(rest) => rest,
        None => path,
    }
}
