//! The admin listener (loopback by default): `/healthz` (the process is up),
//! `/readyz` (every upstream has a healthy endpoint), `/metrics` (Prometheus).

use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::server::Shared;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Upper bounds (seconds) of the request duration histogram's buckets:
/// Prometheus' defaults from 5 ms up, with finer ones below, where a
/// gateway's own share of a request lies.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Install the global Prometheus recorder once per process.
///
/// Durations are a histogram with buckets (as Envoy's and Kong's are): it
/// aggregates across gateway instances, which a summary's quantiles do not,
/// and it costs a bucket search per sample instead of a sketch update.
/// The recorder keeps every sample until it is folded into its buckets;
/// without a scrape nothing would fold them, and memory would grow with
/// every request. A background thread folds them every 5 s.
pub fn metrics_handle() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            match PrometheusBuilder::new()
                .set_buckets(&DURATION_BUCKETS)
                .and_then(|b| b.install_recorder())
            {
                Ok(h) => {
                    let upkeep = h.clone();
                    let spawned = std::thread::Builder::new()
                        .name("palisade-metrics".into())
                        .spawn(move || {
                            loop {
                                std::thread::sleep(std::time::Duration::from_secs(5));
                                upkeep.run_upkeep();
                            }
                        });
                    if let Err(e) = spawned {
                        tracing::warn!(error = %e, "metrics upkeep thread not started");
                    }
                    Some(h)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not installed");
                    None
                }
            }
        })
        .clone()
}

async fn metrics(State(_): State<Arc<Shared>>) -> impl IntoResponse {
    match metrics_handle() {
        Some(h) => (
            StatusCode::OK,
            [("content-type", "text/plain; version=0.0.4")],
            h.render(),
        )
            .into_response(),
        None => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

async fn readyz(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let gw = shared.current();
    let unhealthy: Vec<String> = gw
        .pools
        .values()
        .filter(|p| p.healthy() == 0)
        .map(|p| p.name.clone())
        .collect();
    if unhealthy.is_empty() {
        (StatusCode::OK, "ready\n".to_string())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("no healthy endpoint: {}\n", unhealthy.join(", ")),
        )
    }
}

pub fn router(shared: Arc<Shared>) -> axum::Router {
    axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(shared)
}
