//! The admin listener (loopback by default): `/healthz` (the process is up),
//! `/readyz` (every upstream has a healthy endpoint), `/metrics` (Prometheus).

use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::gateway::Shared;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Install the global Prometheus recorder once per process.
///
/// It holds counters and gauges only. Request durations are a histogram
/// kept by [`crate::ops::durations`]: the recorder's histograms keep every sample
/// until an upkeep pass folds them into buckets, a burst of work on a core a
/// worker may need. No code records a histogram through the recorder
/// (`metrics::histogram!`): with no upkeep pass its samples would pile up
/// until a scrape; add new histograms to [`crate::ops::durations`]'s kind.
pub fn metrics_handle() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| match PrometheusBuilder::new().install_recorder() {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::warn!(error = %e, "metrics recorder not installed");
                None
            }
        })
        .clone()
}

async fn metrics(State(_): State<Arc<Shared>>) -> impl IntoResponse {
    match metrics_handle() {
        Some(h) => (
            StatusCode::OK,
            [("content-type", "text/plain; version=0.0.4")],
            {
                let mut body = h.render();
                crate::ops::durations::render(&mut body);
                body
            },
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
    if gw.log.stuck() {
        // requests are served, but their security records are not written
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "security log stuck: its reader is not taking records\n".to_string(),
        )
    } else if unhealthy.is_empty() {
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
