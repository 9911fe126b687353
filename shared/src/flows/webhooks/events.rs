//! The events' payloads, built from the records the producing flows already
//! hold. Each shape here is documented in the OpenAPI document's `webhooks`
//! section, and a test checks each against it.

use serde_json::{json, Value};

use super::{transcript_data, WebhookEvent};
use crate::queue::jobs::CallStart;
use crate::store::calls::CallRecord;
use crate::store::outbound_calls::OutboundCall;
use crate::store::sessions::SessionRecord;

fn now() -> String {
    crate::base::time::now_rfc3339()
}

/// `call.started`: someone started a call with a voice agent (seed 000).
pub fn call_started(org_id: &str, source: &str, start: &CallStart) -> WebhookEvent {
    WebhookEvent::new(
        org_id,
        "call.started",
        source,
        start.started_at.clone(),
        json!({
            "call_id": start.room_name,
            "room": start.room_name,
            "user_email": start.user_email,
            "started_at": start.started_at,
            "metadata": start.metadata,
        }),
    )
}

fn session_data(session: &SessionRecord) -> Value {
    json!({
        "session_id": session.session_id.as_deref().unwrap_or(&session.room_name),
        "room": session.room_name,
        "kind": session.session_type,
        "direction": session.direction,
        "from": session.from_number,
        "to": session.to_number,
        "started_at": session.started_at,
        "ended_at": session.ended_at,
        "duration_secs": session.duration_secs,
        "end_reason": session.end_code,
    })
}

/// `session.started`: a voice-agent session (a LiveKit room) opened.
pub fn session_started(org_id: &str, session: &SessionRecord) -> WebhookEvent {
    WebhookEvent::new(
        org_id,
        "session.started",
        &session.room_name,
        session.started_at.clone().unwrap_or_else(now),
        session_data(session),
    )
}

/// `session.ended`: the session's room finished (reported or reconciled).
pub fn session_ended(org_id: &str, session: &SessionRecord) -> WebhookEvent {
    WebhookEvent::new(
        org_id,
        "session.ended",
        &session.room_name,
        session.ended_at.clone().unwrap_or_else(now),
        session_data(session),
    )
}

/// `call.ended` (and `call.transcript.ready` when it has one) for an outbound call.
pub fn outbound_ended(org_id: &str, call: &OutboundCall) -> Vec<WebhookEvent> {
    let ended_at = call
        .status_history
        .last()
        .map(|entry| entry.at.clone())
        .unwrap_or_else(now);
    let mut events = vec![WebhookEvent::new(
        org_id,
        "call.ended",
        &call.call_ref,
        ended_at.clone(),
        json!({
            "call_id": call.call_ref,
            "kind": "outbound",
            "direction": "outbound",
            "provider": call.provider,
            "provider_call_id": call.call_sid.as_ref().or(call.conversation_id.as_ref()),
            "from": call.from_number,
            "to": call.to_number,
            "assistant_id": call.assistant_id,
            "status": call.status,
            "end_reason": call.end_reason,
            "duration_secs": call.duration_secs.unwrap_or(0),
            "recording_url": null,
            "reconciled": call.reconciled,
            "started_at": call.created_at,
            "ended_at": ended_at,
        }),
    )];
    if !call.transcript.is_empty() {
        let text = crate::store::outbound_calls::transcript_text(&call.transcript);
        let link = format!(
            "/conversations/{}/transcript",
            crate::flows::sessions::url_encode(&call.call_ref)
        );
        let mut data = transcript_data(&link, &text);
        data["call_id"] = json!(call.call_ref);
        data["kind"] = json!("outbound");
        events.push(WebhookEvent::new(
            org_id,
            "call.transcript.ready",
            &call.call_ref,
            ended_at,
            data,
        ));
    }
    events
}

fn recorded_data(record: &CallRecord) -> Value {
    let direction = match record.direction {
        crate::store::calls::Direction::Incoming => "inbound",
        crate::store::calls::Direction::Outgoing => "outbound",
    };
    json!({
        // The sender's own id (the record's key carries the organisation).
        "call_id": record.reported_call_id(),
        "kind": "recording",
        "direction": direction,
        "source": record.source,
        "from": record.from_number,
        "to": record.to_number,
        "duration_secs": record.duration,
        "recording_url": record.recording_url,
        "started_at": record.timestamp,
    })
}

/// `call.ended` and `call.transcript.ready` for a recorded call (Exotel,
/// Zapier) once its transcript is stored.
pub fn recorded_call_transcribed(
    org_id: &str,
    record: &CallRecord,
    transcript: &str,
) -> Vec<WebhookEvent> {
    let at = record.processed_at.clone().unwrap_or_else(now);
    let mut ended = recorded_data(record);
    ended["status"] = json!(record.call_status.as_deref().unwrap_or("completed"));
    ended["end_reason"] = json!("completed");
    let link = format!(
        "/call/{}",
        crate::flows::sessions::url_encode(record.reported_call_id())
    );
    let mut ready = transcript_data(&link, transcript);
    ready["call_id"] = json!(record.reported_call_id());
    ready["kind"] = json!("recording");
    vec![
        WebhookEvent::new(
            org_id,
            "call.ended",
            &record.call_id,
            record.timestamp.clone(),
            ended,
        ),
        WebhookEvent::new(org_id, "call.transcript.ready", &record.call_id, at, ready),
    ]
}

/// `call.ended` and `call.transcript.failed` for a recorded call whose
/// transcription failed.
pub fn recorded_call_failed(org_id: &str, record: &CallRecord) -> Vec<WebhookEvent> {
    let mut ended = recorded_data(record);
    ended["status"] = json!(record.call_status.as_deref().unwrap_or("completed"));
    ended["end_reason"] = json!("completed");
    vec![
        WebhookEvent::new(
            org_id,
            "call.ended",
            &record.call_id,
            record.timestamp.clone(),
            ended,
        ),
        WebhookEvent::new(
            org_id,
            "call.transcript.failed",
            &record.call_id,
            now(),
            json!({
                "call_id": record.reported_call_id(),
                "kind": "recording",
                "reason": record.failure_reason,
            }),
        ),
    ]
}

/// `whatsapp.message.received`: a message to one of the organisation's numbers.
pub fn whatsapp_received(
    org_id: &str,
    message_sid: &str,
    from: &str,
    to: Option<&str>,
    body: &str,
    num_media: u32,
) -> WebhookEvent {
    WebhookEvent::new(
        org_id,
        "whatsapp.message.received",
        message_sid,
        now(),
        json!({
            "message_sid": message_sid,
            "from": from,
            "to": to,
            "body": body,
            "num_media": num_media,
        }),
    )
}

/// `whatsapp.reply.sent`: the assistant's reply to a message was sent.
pub fn whatsapp_reply_sent(
    org_id: &str,
    in_reply_to: &str,
    reply_sid: &str,
    to: &str,
) -> WebhookEvent {
    WebhookEvent::new(
        org_id,
        "whatsapp.reply.sent",
        in_reply_to,
        now(),
        json!({
            "message_sid": reply_sid,
            "in_reply_to": in_reply_to,
            "to": to,
        }),
    )
}

/// `usage.threshold`: the organisation's month crossed `percent` (80, 100)
/// of its limit; once per month and threshold (the id says so).
pub fn usage_threshold(
    org_id: &str,
    month: &str,
    percent: u32,
    used_seconds: u64,
    limit_seconds: u64,
) -> WebhookEvent {
    WebhookEvent::new(
        org_id,
        "usage.threshold",
        &format!("{month}#{percent}"),
        now(),
        json!({
            "month": month,
            "threshold_percent": percent,
            "used_seconds": used_seconds,
            "limit_seconds": limit_seconds,
        }),
    )
}

/// The thresholds (80, 100 percent) a month's usage has reached. Each call
/// that ends past one publishes it again; the event's id (month and
/// threshold) keeps it one event, so concurrent calls can neither skip nor
/// double it.
pub fn thresholds_reached(used: u64, limit: u64) -> Vec<u32> {
    if limit == 0 {
        return Vec::new();
    }
    [80u32, 100]
        .into_iter()
        .filter(|p| used.saturating_mul(100) >= limit.saturating_mul(u64::from(*p)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_are_reached_at_80_and_100_percent() {
        assert_eq!(thresholds_reached(79, 100), Vec::<u32>::new());
        assert_eq!(thresholds_reached(80, 100), vec![80]);
        assert_eq!(thresholds_reached(99, 100), vec![80]);
        assert_eq!(thresholds_reached(120, 100), vec![80, 100]);
        assert_eq!(thresholds_reached(10, 0), Vec::<u32>::new());
    }

    #[test]
    fn usage_events_are_one_per_month_and_threshold() {
        let a = usage_threshold("acme", "2026-12", 80, 80, 100);
        let b = usage_threshold("acme", "2026-12", 80, 95, 100);
        assert_eq!(a.id, b.id);
        assert_ne!(a.id, usage_threshold("acme", "2026-12", 100, 100, 100).id);
        assert_ne!(a.id, usage_threshold("acme", "2027-01", 80, 80, 100).id);
    }
}
