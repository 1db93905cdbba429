//! Intrusion detection and prevention (`[ids]`, crate `palisade-ids`):
//! banned and deny-listed addresses are refused right after accept, before
//! any TLS work, and again on every request (a keep-alive connection opened
//! before the ban, or a client behind a trusted proxy); a banned principal
//! is refused right after authentication. Every refused or suspicious
//! request is reported as an event against its address (and principal)
//! once it is answered, off the request's path.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use palisade_ids::{Event, NewBan, Subject, Verdict};

use crate::error::{BanSubject, GatewayError};
use crate::gateway::{Gateway, Shared};
use crate::ops::log::{BanEvent, LogFormat};
use crate::pipeline::RequestCtx;
use crate::steps::principal::Method as AuthMethod;

/// Step 0b, at accept: true if the connection from `peer` is to be closed
/// at once (deny list, or a ban in block mode). Counted, never logged per
/// connection: a banned scanner would flood the log.
pub(crate) fn refuse_connection(shared: &Shared, peer: IpAddr) -> bool {
    let gw = shared.current();
    let Some(policy) = &gw.ids_policy else {
        return false;
    };
    // a trusted proxy carries other clients' requests: they are judged
    // one by one by their forwarded address, never all at once here
    if gw.trusted_proxies.iter().any(|c| c.contains(peer)) {
        return false;
    }
    let refuse = match gw.ids.check_addr(policy, peer) {
        Verdict::Denied => Some("deny_list"),
        Verdict::Banned { enforced: true, .. } => Some("banned"),
        _ => None,
    };
    if let Some(reason) = refuse {
        metrics::counter!("palisade_gateway_ids_refused_connections_total", "reason" => reason)
            .increment(1);
    }
    refuse.is_some()
}

/// Step 6a: the client (the TCP peer, or behind a trusted proxy the
/// address it forwarded).
pub(crate) fn check_client(gw: &Gateway, ctx: &mut RequestCtx) -> Result<(), GatewayError> {
    let Some(policy) = &gw.ids_policy else {
        return Ok(());
    };
    verdict(
        gw.ids.check_addr(policy, ctx.client),
        BanSubject::Address,
        ctx,
    )
}

/// Step 8b: the principal authentication found.
pub(crate) fn check_principal(
    gw: &Gateway,
    label: &str,
    ctx: &mut RequestCtx,
) -> Result<(), GatewayError> {
    let Some(policy) = &gw.ids_policy else {
        return Ok(());
    };
    // every anonymous caller shares one label: never a subject; and a ban
    // never locks out the allow list
    let anonymous = matches!(&ctx.principal, Some((_, m)) if *m == AuthMethod::Anonymous);
    if anonymous || policy.allows(ctx.client) {
        return Ok(());
    }
    verdict(
        gw.ids.check_principal(policy, label),
        BanSubject::Principal,
        ctx,
    )
}

fn verdict(v: Verdict, subject: BanSubject, ctx: &mut RequestCtx) -> Result<(), GatewayError> {
    match v {
        Verdict::Clear => Ok(()),
        Verdict::Denied => Err(GatewayError::Banned {
            subject: BanSubject::DenyList,
            retry_after: None,
        }),
        Verdict::Banned {
            remaining,
            enforced: true,
        } => Err(GatewayError::Banned {
            subject,
            retry_after: Some(remaining),
        }),
        Verdict::Banned {
            enforced: false, ..
        } => {
            let note = match subject {
                BanSubject::Principal => "ids: principal banned (detect mode)",
                _ => "ids: address banned (detect mode)",
            };
            ctx.inspection = Some(match ctx.inspection.take() {
                Some(prev) => format!("{prev}; {note}"),
                None => note.to_string(),
            });
            Ok(())
        }
    }
}

/// What an answered request counts as. A ban's own refusals count as
/// nothing (they would only lengthen it).
pub(crate) fn event(error: Option<&GatewayError>, status: u16) -> Option<Event> {
    let Some(e) = error else {
        // the service's own answers: its login refusing a password, its
        // authorization refusing a caller, scanning behind a catch-all route
        return match status {
            401 => Some(Event::AuthenticationFailure),
            403 => Some(Event::AccessDenied),
            404 => Some(Event::NotFound),
            _ => None,
        };
    };
    Some(match e {
        GatewayError::Unauthenticated { .. } => Event::AuthenticationFailure,
        GatewayError::Forbidden { .. } => Event::AccessDenied,
        GatewayError::RateLimited { .. } | GatewayError::TooManyConcurrent => Event::RateLimited,
        GatewayError::BadRequest(_)
        | GatewayError::BadPath(_)
        | GatewayError::InvalidHost(_)
        | GatewayError::HeadersTooLarge
        | GatewayError::PayloadTooLarge
        | GatewayError::NotDescribed { .. }
        | GatewayError::Blocked {
            malformed: true, ..
        } => Event::MalformedRequest,
        // a response withheld for a leak: what probing for SQL errors and
        // stack traces makes the service say
        GatewayError::Blocked { .. } | GatewayError::ResponseBlocked { .. } => Event::Inspection,
        GatewayError::NoRoute | GatewayError::MethodNotAllowed => Event::NotFound,
        // a body that broke off is as often a client that went away as an
        // attack; timeouts and upstream failures are not the client's doing
        GatewayError::Banned { .. }
        | GatewayError::InvalidBody
        | GatewayError::RequestTimeout
        | GatewayError::BadGateway { .. }
        | GatewayError::GatewayTimeout
        | GatewayError::AuthUnavailable { .. }
        | GatewayError::Internal => return None,
    })
}

/// Report an answered request's event against its address and, for an
/// authenticated principal refused by authorization or a rate limit, the
/// principal. The process's own score is kept at once (a ban lands before
/// the client's next request); the shared store is told in a task of its
/// own (the response does not wait for Redis). New bans go to the log.
///
/// Not scored: an allow-listed client (any subject of its requests), a
/// trusted proxy's own address (its clients are judged by their forwarded
/// address), the anonymous principal (every anonymous caller shares it).
pub(crate) fn observe(gw: &Gateway, ctx: &RequestCtx, error: Option<&GatewayError>, status: u16) {
    let Some(policy) = gw.ids_policy.clone() else {
        return;
    };
    let Some(ev) = event(error, status) else {
        return;
    };
    if policy.weights.get(ev) == 0 || policy.allows(ctx.client) {
        return;
    }
    let mut subjects = Vec::with_capacity(2);
    if !gw.trusted_proxies.iter().any(|c| c.contains(ctx.client)) {
        subjects.push(Subject::addr(ctx.client));
    }
    if let Some((label, method)) = &ctx.principal
        && *method != AuthMethod::Anonymous
        && matches!(ev, Event::AccessDenied | Event::RateLimited)
    {
        subjects.push(Subject::principal(label));
    }
    for s in &subjects {
        if let Some(ban) = gw.ids.observe_local(&policy, s, ev) {
            log_ban(
                (&gw.log, gw.log_format),
                &ban,
                &ctx.request_id,
                policy.enforce,
            );
        }
    }
    if !gw.ids.is_shared() || !policy.enforce || subjects.is_empty() {
        return;
    }
    let ids = gw.ids.clone();
    let log = gw.log.clone();
    let format = gw.log_format;
    let request_id = ctx.request_id.clone();
    tokio::spawn(async move {
        for s in subjects {
            if let Some(ban) = ids.observe_shared(&policy, &s, ev).await {
                log_ban((&log, format), &ban, &request_id, policy.enforce);
            }
        }
    });
}

/// The security-log line of a new ban.
fn log_ban(
    gw_log: (&crate::ops::log::Sink, LogFormat),
    ban: &NewBan,
    request_id: &str,
    enforced: bool,
) {
    metrics::counter!("palisade_gateway_ids_bans_total", "event" => ban.event.as_str())
        .increment(1);
    let subject = ban.subject.to_string();
    let ev = BanEvent {
        action: "ban",
        subject: &subject,
        duration_s: Some(ban.duration.as_secs()),
        strikes: Some(ban.strikes),
        reason: ban.event.as_str(),
        shared: Some(ban.shared),
        enforced: Some(enforced),
        request_id: Some(request_id),
    };
    let (log, format) = gw_log;
    log.write_event(
        &ev.to_value(format, &palisade_core::rfc3339(palisade_core::now_nanos())),
        crate::ops::log::Event::Ban,
    );
}

/// The security-log line of a ban made or lifted by an operator.
pub(crate) fn log_manual(
    gw: &Gateway,
    action: &'static str,
    subject: &Subject,
    duration: Option<Duration>,
    reason: &str,
) {
    let subject = subject.to_string();
    let ev = BanEvent {
        action,
        subject: &subject,
        duration_s: duration.map(|d| d.as_secs()),
        strikes: None,
        reason,
        shared: None,
        enforced: None,
        request_id: None,
    };
    let event = if action == "ban" {
        crate::ops::log::Event::Ban
    } else {
        crate::ops::log::Event::Unban
    };
    gw.log.write_event(
        &ev.to_value(
            gw.log_format,
            &palisade_core::rfc3339(palisade_core::now_nanos()),
        ),
        event,
    );
}

/// Copy the shared ban list every `sync_interval` (and drop ended bans),
/// for as long as the gateway runs. A failure is retried at the next
/// interval; the first one and the recovery are logged.
pub(crate) async fn sync_loop(shared: Arc<Shared>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut failing = false;
    loop {
        let gw = shared.current();
        let every = gw.ids_sync;
        if gw.ids_policy.is_some() {
            match gw.ids.sync().await {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!(
                        category = "ids_store_available",
                        "shared ban list synchronised again"
                    );
                }
                Ok(()) => {}
                Err(e) => {
                    metrics::counter!("palisade_gateway_ids_sync_failures_total").increment(1);
                    if !failing {
                        failing = true;
                        tracing::warn!(category = "ids_store_unavailable", error = %e, "shared ban list not synchronised; bans made here stay local until it is");
                    }
                }
            }
        }
        drop(gw);
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answered_requests_map_to_their_events() {
        let unauth = GatewayError::Unauthenticated {
            reason: "x",
            challenge: "Bearer",
        };
        assert_eq!(
            event(Some(&unauth), 401),
            Some(Event::AuthenticationFailure)
        );
        assert_eq!(
            event(Some(&GatewayError::NoRoute), 404),
            Some(Event::NotFound)
        );
        assert_eq!(
            event(Some(&GatewayError::BadPath("..")), 400),
            Some(Event::MalformedRequest)
        );
        let blocked = GatewayError::Blocked {
            findings: String::new(),
            malformed: false,
        };
        assert_eq!(event(Some(&blocked), 403), Some(Event::Inspection));
        // the service's own 404 is scanning; its other answers are nothing
        assert_eq!(event(None, 404), Some(Event::NotFound));
        assert_eq!(event(None, 200), None);
        assert_eq!(event(None, 500), None);
        // a ban's refusals and the gateway's own failures count for nothing
        let banned = GatewayError::Banned {
            subject: BanSubject::Address,
            retry_after: None,
        };
        assert_eq!(event(Some(&banned), 403), None);
        assert_eq!(event(Some(&GatewayError::GatewayTimeout), 504), None);
    }
}
