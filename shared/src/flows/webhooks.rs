//! Webhooks out: every call, session, WhatsApp and usage event an
//! organisation subscribes to, signed (Standard Webhooks), delivered to each
//! of its endpoints exactly once per (endpoint, event) on our side, retried
//! for about a day, every attempt recorded, replayable.
//!
//! Producers (workers and the sweep, never an intake's hot path) call
//! [`publish`]: one SQS message on the webhook queue. The webhook worker
//! stores the event once (its id is derived from what happened, so a
//! producer's retry is the same event), fans it out to one delivery per
//! subscribed endpoint and makes the attempts ([`dispatch`]). The API for
//! endpoints, attempts, replay and recovery is [`admin`].

pub mod admin;
pub mod dispatch;
pub mod events;
pub mod sender;
pub mod signing;
pub mod sweep;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::queue::jobs::{self, JobQueue, QueueError};

/// Every event type an endpoint can subscribe to.
pub const EVENT_TYPES: [&str; 11] = [
    "call.started",
    "call.ended",
    "call.transcript.ready",
    "call.transcript.failed",
    "session.started",
    "session.ended",
    "whatsapp.message.received",
    "whatsapp.reply.sent",
    "usage.threshold",
    "webhook.endpoint.disabled",
    "webhook.test",
];

/// Transcripts longer than this are linked, not carried (bytes).
pub const INLINE_TRANSCRIPT_MAX: usize = 64 * 1024;

/// One event, as produced: the envelope's parts and where it goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookEvent {
    /// Stable: the `webhook-id` of every attempt, and the envelope's `id`.
    pub id: String,
    pub org_id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    /// RFC 3339: when it happened.
    pub timestamp: String,
    pub data: Value,
}

impl WebhookEvent {
    /// An event whose id is derived from its organisation, type and
    /// `source` (what happened: a call id, a message sid), so the same
    /// happening published twice is one event.
    pub fn new(
        org_id: &str,
        event_type: &str,
        source: &str,
        timestamp: impl Into<String>,
        data: Value,
    ) -> Self {
        debug_assert!(EVENT_TYPES.contains(&event_type), "{event_type}");
        Self {
            id: event_id(org_id, event_type, source),
            org_id: org_id.to_string(),
            event_type: event_type.to_string(),
            timestamp: timestamp.into(),
            data,
        }
    }

    /// The body every endpoint receives: `{"id","type","timestamp","data"}`.
    pub fn envelope(&self) -> String {
        serde_json::json!({
            "id": self.id,
            "type": self.event_type,
            "timestamp": self.timestamp,
            "data": self.data,
        })
        .to_string()
    }
}

/// `msg_` and 24 hex digits of SHA-256 over what identifies the event.
pub fn event_id(org_id: &str, event_type: &str, source: &str) -> String {
    let digest = Sha256::digest(format!("{org_id}\n{event_type}\n{source}").as_bytes());
    format!("msg_{}", &hex::encode(digest)[..24])
}

/// What the webhook queues carry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "job", rename_all = "snake_case")]
pub enum WebhookJob {
    /// Store the event and fan it out to the organisation's endpoints
    /// (`only`: to that endpoint alone, the test event).
    Event {
        event: WebhookEvent,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        only: Option<String>,
    },
    /// Make attempt `attempt` of one delivery.
    Attempt(AttemptJob),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptJob {
    pub org_id: String,
    pub endpoint_id: String,
    pub message_id: String,
    pub attempt: u32,
    /// `scheduled`, `replay`, `recover` or `test`.
    #[serde(default = "scheduled")]
    pub trigger: String,
    /// The retry ledger entry this job was queued for, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<String>,
    /// Sent to the slow lane (the worker tells its lanes by this).
    #[serde(default)]
    pub slow: bool,
}

fn scheduled() -> String {
    "scheduled".into()
}

/// Queues `event` for the organisation's endpoints: one SQS send.
pub async fn publish(queue: &dyn JobQueue, event: WebhookEvent) -> Result<(), QueueError> {
    jobs::send(
        queue,
        &WebhookJob::Event { event, only: None },
        std::time::Duration::ZERO,
    )
    .await
}

/// Publishes when a queue is configured; a failure is returned so the
/// producer's own retry publishes again (the event id keeps it one event).
pub async fn publish_to(
    queue: Option<&std::sync::Arc<dyn JobQueue>>,
    event: WebhookEvent,
) -> Result<(), QueueError> {
    match queue {
        Some(queue) => publish(queue.as_ref(), event).await,
        None => Ok(()),
    }
}

/// A transcript in an event: whole when small, else `link` (the API path
/// that serves it, relative to the API's base URL).
pub fn transcript_data(link: &str, transcript: &str) -> Value {
    if transcript.len() <= INLINE_TRANSCRIPT_MAX {
        serde_json::json!({"transcript": transcript, "transcript_url": null})
    } else {
        serde_json::json!({
            "transcript": null,
            "transcript_bytes": transcript.len(),
            "transcript_url": link,
        })
    }
}

/// The retry schedule: the wait before each attempt after the first, about
/// a day in all.
pub const RETRY_DELAYS: [i64; 7] = [5, 300, 1_800, 7_200, 18_000, 36_000, 36_000];

/// The wait before attempt `n` of a series (0: the first, immediate);
/// `None` once the schedule is used up.
pub fn delay_before(n: u32) -> Option<i64> {
    match n {
        0 => Some(0),
        n => RETRY_DELAYS.get(n as usize - 1).copied(),
    }
}

/// An endpoint failing every attempt for this long is disabled.
pub const DISABLE_AFTER: i64 = 5 * 86_400;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_happening_is_the_same_event() {
        let a = WebhookEvent::new("acme", "call.ended", "CA1", "t", Value::Null);
        let b = WebhookEvent::new("acme", "call.ended", "CA1", "u", Value::Null);
        assert_eq!(a.id, b.id);
        assert!(a.id.starts_with("msg_") && a.id.len() == 28);
        assert_ne!(a.id, event_id("globex", "call.ended", "CA1"));
        assert_ne!(a.id, event_id("acme", "call.started", "CA1"));
    }

    #[test]
    fn the_envelope_has_type_timestamp_and_data() {
        let event = WebhookEvent::new(
            "acme",
            "call.started",
            "CA1",
            "2026-01-01T00:00:00Z",
            serde_json::json!({"call_id": "CA1"}),
        );
        let body: Value = serde_json::from_str(&event.envelope()).unwrap();
        assert_eq!(body["type"], "call.started");
        assert_eq!(body["timestamp"], "2026-01-01T00:00:00Z");
        assert_eq!(body["data"]["call_id"], "CA1");
        assert_eq!(body["id"], event.id.as_str());
    }

    #[test]
    fn the_schedule_spans_about_a_day_and_ends() {
        let total: i64 = (0..8).map(|n| delay_before(n).unwrap()).sum();
        assert!((86_400..=2 * 86_400).contains(&total), "{total}");
        assert_eq!(delay_before(1), Some(5));
        assert_eq!(delay_before(8), None);
    }

    #[test]
    fn large_transcripts_are_linked() {
        assert_eq!(transcript_data("/call/CA1", "hi")["transcript"], "hi");
        let big = "x".repeat(INLINE_TRANSCRIPT_MAX + 1);
        let data = transcript_data("/call/CA1", &big);
        assert!(data["transcript"].is_null());
        assert_eq!(data["transcript_url"], "/call/CA1");
    }

    #[test]
    fn jobs_round_trip() {
        let job = WebhookJob::Attempt(AttemptJob {
            org_id: "acme".into(),
            endpoint_id: "ep".into(),
            message_id: "msg_1".into(),
            attempt: 2,
            trigger: "replay".into(),
            entry: None,
            slow: true,
        });
        let text = serde_json::to_string(&job).unwrap();
        assert_eq!(serde_json::from_str::<WebhookJob>(&text).unwrap(), job);
    }
}
