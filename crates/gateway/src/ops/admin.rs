//! The admin listener (loopback by default): `/healthz` (the process is up),
//! `/readyz` (every upstream has a healthy endpoint), `/metrics` (Prometheus),
//! `/bans` (the intrusion detection's bans: list, add, lift; what
//! `palisade gateway bans` calls). It has no authentication of its own:
//! keep it on loopback or a management network.

use std::sync::{Arc, OnceLock};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use bytes::Bytes;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::{Value, json};

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

/// An admin error: `{"error":{"code","message"}}`.
fn admin_error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        axum::Json(json!({"error": {"code": code, "message": message.into()}})),
    )
        .into_response()
}

fn ban_json(b: &palisade_ids::Ban) -> Value {
    json!({
        "subject": b.subject.to_string(),
        "remaining_s": b.remaining.as_secs(),
        "strikes": b.strikes,
        "reason": b.reason,
        "shared": b.shared,
    })
}

fn ids_disabled() -> Response {
    admin_error(
        StatusCode::CONFLICT,
        "ids_disabled",
        "intrusion detection is off: the configuration has no [ids] section",
    )
}

fn subject(s: &str) -> Result<palisade_ids::Subject, Box<Response>> {
    palisade_ids::Subject::parse(s).ok_or_else(|| {
        Box::new(admin_error(
            StatusCode::BAD_REQUEST,
            "invalid_subject",
            "a subject is ip:<address> (an IPv6 address stands for its /64) or principal:<label>",
        ))
    })
}

/// Characters that can make text read differently from what it holds: C0
/// and C1 controls, bidirectional and zero-width format characters, line
/// and paragraph separators, the byte-order mark.
fn invisible(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}')
}

async fn bans_list(State(shared): State<Arc<Shared>>) -> Response {
    let gw = shared.current();
    if gw.ids_policy.is_none() {
        return ids_disabled();
    }
    let bans: Vec<Value> = gw.ids.list().iter().map(ban_json).collect();
    axum::Json(json!({"bans": bans, "shared_store": gw.ids.is_shared()})).into_response()
}

/// `POST /bans` `{"subject", "duration_s", "reason"}`.
async fn bans_add(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Req {
        subject: String,
        duration_s: u64,
        #[serde(default)]
        reason: String,
    }
    let gw = shared.current();
    let Some(policy) = &gw.ids_policy else {
        return ids_disabled();
    };
    let req: Req = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(_) => {
            return admin_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "expected {\"subject\": string, \"duration_s\": integer, \"reason\": string}",
            );
        }
    };
    let s = match subject(&req.subject) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    if req.reason.chars().count() > 256 || req.reason.chars().any(invisible) {
        return admin_error(
            StatusCode::BAD_REQUEST,
            "invalid_reason",
            "reason: at most 256 characters, no control, format or separator characters",
        );
    }
    let duration = std::time::Duration::from_secs(req.duration_s);
    match gw.ids.ban(policy, s.clone(), duration, &req.reason).await {
        Ok(b) => {
            crate::steps::ids::log_manual(&gw, "ban", &s, Some(duration), &b.reason);
            (StatusCode::CREATED, axum::Json(ban_json(&b))).into_response()
        }
        Err(e @ palisade_ids::IdsError::AllowListed(_)) => {
            admin_error(StatusCode::CONFLICT, "allow_listed", e.to_string())
        }
        Err(e @ palisade_ids::IdsError::Duration) => {
            admin_error(StatusCode::BAD_REQUEST, "invalid_duration", e.to_string())
        }
        Err(e @ palisade_ids::IdsError::Store(_)) => admin_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            e.to_string(),
        ),
        Err(e @ palisade_ids::IdsError::Full) => admin_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "ban_table_full",
            e.to_string(),
        ),
    }
}

/// `DELETE /bans/<subject>`: lift a ban, forget the subject's score and strikes.
async fn bans_remove(State(shared): State<Arc<Shared>>, Path(raw): Path<String>) -> Response {
    let gw = shared.current();
    if gw.ids_policy.is_none() {
        return ids_disabled();
    }
    let s = match subject(&raw) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    match gw.ids.unban(&s).await {
        Ok(removed) => {
            if removed {
                crate::steps::ids::log_manual(&gw, "unban", &s, None, "manual");
            }
            axum::Json(json!({"subject": s.to_string(), "removed": removed})).into_response()
        }
        // lifted here; the shared ban stays until the store answers again
        Err(e) => {
            crate::steps::ids::log_manual(&gw, "unban", &s, None, "manual, this gateway only");
            admin_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                format!("lifted on this gateway only; {e}"),
            )
        }
    }
}

pub fn router(shared: Arc<Shared>) -> axum::Router {
    axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/bans", get(bans_list).post(bans_add))
        .route("/bans/{*subject}", delete(bans_remove))
        .with_state(shared)
}
