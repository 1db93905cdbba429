//! `sys/metrics` (Vault's endpoint): this node's seal and HA state and the
//! HA counters (issue #19: leadership changes, lease renewals, forwarded
//! requests), as Prometheus text (`format=prometheus`) or as the JSON of
//! Vault's in-memory sink. A token with `read` on `sys/metrics` is needed,
//! as in Vault. Each node answers with its own numbers: a standby asks the
//! active node first (which decides on the token) and then answers for
//! itself, so its forwarding counters are visible too.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::{Value, json};

use crate::core::Core;
use crate::logical::{ApiError, Request, Response};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Gauge,
    Counter,
}

/// One metric: its Prometheus name (`palisade_...`), help and value. The
/// JSON name is the same with dots (`palisade.ha.forwarded_requests`), as
/// go-metrics names Vault's.
struct Metric {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    value: u64,
}

fn collect(core: &Core) -> Vec<Metric> {
    let unsealed = core.is_unsealed_node();
    let active = unsealed && !core.relays() && core.is_serving();
    let mut out = vec![
        Metric {
            name: "palisade_core_unsealed",
            help: "1 when this node is unsealed",
            kind: Kind::Gauge,
            value: u64::from(unsealed),
        },
        Metric {
            name: "palisade_core_active",
            help: "1 when this node serves requests itself (no HA, or the active node)",
            kind: Kind::Gauge,
            value: u64::from(active),
        },
    ];
    if let Some(ha) = core.ha() {
        let m = &ha.metrics;
        let c = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        for (name, help, value) in [
            (
                "palisade_ha_leadership_gained_total",
                "times this node became the active node",
                c(&m.leadership_gained),
            ),
            (
                "palisade_ha_leadership_lost_total",
                "times this node stopped being the active node",
                c(&m.leadership_lost),
            ),
            (
                "palisade_ha_lease_renewals_total",
                "leadership lease renewals made by this node",
                ha.renewals(),
            ),
            (
                "palisade_ha_forwarded_requests_total",
                "requests this node forwarded to the active node",
                c(&m.forwarded),
            ),
            (
                "palisade_ha_redirected_requests_total",
                "requests this node redirected to the active node",
                c(&m.redirected),
            ),
            (
                "palisade_ha_forward_errors_total",
                "requests this node could not forward to the active node",
                c(&m.forward_errors),
            ),
        ] {
            out.push(Metric {
                name,
                help,
                kind: Kind::Counter,
                value,
            });
        }
    }
    out
}

fn prometheus(metrics: &[Metric]) -> String {
    let mut s = String::new();
    for m in metrics {
        let kind = match m.kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        };
        let _ = write!(
            s,
            "# HELP {0} {1}\n# TYPE {0} {kind}\n{0} {2}\n",
            m.name, m.help, m.value
        );
    }
    s
}

/// go-metrics' dotted name: `palisade_ha_forwarded_requests_total` →
/// `palisade.ha.forwarded_requests` (the first two underscores are the
/// namespace's dots; a counter's `_total` is Prometheus's suffix).
fn dotted(name: &str) -> String {
    let base = name.strip_suffix("_total").unwrap_or(name);
    base.splitn(3, '_').collect::<Vec<_>>().join(".")
}

fn vault_json(metrics: &[Metric]) -> Value {
    let mut gauges = Vec::new();
    let mut counters = Vec::new();
    for m in metrics {
        let name = dotted(m.name);
        match m.kind {
            Kind::Gauge => gauges.push(json!({"Name": name, "Value": m.value, "Labels": {}})),
            Kind::Counter => counters.push(json!({
                "Name": name, "Count": m.value, "Sum": m.value, "Labels": {},
            })),
        }
    }
    json!({
        "Timestamp": palisade_core::rfc3339(palisade_core::now_nanos()),
        "Gauges": gauges,
        "Counters": counters,
        "Points": [],
        "Samples": [],
    })
}

/// `GET sys/metrics[?format=prometheus]` (the token and ACL were checked).
pub fn handle(core: &Arc<Core>, req: &Request) -> Result<Response, ApiError> {
    answer(core, &req.query)
}

/// This node's metrics in the format `query` asks for. On a standby, after
/// the active node allowed the same request (`http::handle`).
pub fn answer(core: &Core, query: &[(String, String)]) -> Result<Response, ApiError> {
    let format = query
        .iter()
        .find(|(k, _)| k == "format")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    let metrics = collect(core);
    match format {
        "" => Ok(Response::raw(200, vault_json(&metrics))),
        "prometheus" => Ok(Response::bytes(
            "text/plain; version=0.0.4",
            prometheus(&metrics).into_bytes(),
        )),
        // Vault's answer to a format it does not know
        _ => Err(ApiError::bad_request(format!(
            "metric response format {format:?} unknown"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_prometheus_and_go_metrics_alike() {
        assert_eq!(
            dotted("palisade_ha_forwarded_requests_total"),
            "palisade.ha.forwarded_requests"
        );
        assert_eq!(dotted("palisade_core_unsealed"), "palisade.core.unsealed");
        let text = prometheus(&[Metric {
            name: "palisade_ha_forwarded_requests_total",
            help: "requests this node forwarded to the active node",
            kind: Kind::Counter,
            value: 7,
        }]);
        assert_eq!(
            text,
            "# HELP palisade_ha_forwarded_requests_total requests this node forwarded to the active node\n# TYPE palisade_ha_forwarded_requests_total counter\npalisade_ha_forwarded_requests_total 7\n"
        );
    }
}
