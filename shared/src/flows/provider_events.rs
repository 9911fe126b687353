//! Provider webhooks whose senders never retry (Twilio status callbacks,
//! ElevenLabs post-call webhooks): the route verifies the signature, makes
//! the event durable (an SQS message, its body in DynamoDB parts when too
//! large for one) and answers 200; the provider-events worker applies it
//! here with SQS's retries. Each event applies once per (call, status) or
//! (conversation, kind), so redelivery is harmless.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tracing::info;

use crate::api::ApiError;
use crate::queue::jobs::{EventBody, JobQueue, ProviderEvent};
use crate::store::event_bodies::EventBodyStore;
use crate::store::outbound_calls::TranscriptLine;

// The worker's side ends sessions through LiveKit; the routes' side only
// queues.
#[cfg(feature = "livekit")]
mod processor;
#[cfg(feature = "livekit")]
pub use processor::{Applied, ProviderEventProcessor};

/// SQS takes 256 KiB per message; a body whose message would be larger is stored.
pub const MAX_INLINE_MESSAGE_BYTES: usize = 240 * 1024;

/// The ElevenLabs event kinds we apply; every other kind (`post_call_audio`
/// among them) is acknowledged and ignored.
pub const APPLIED_ELEVENLABS_KINDS: [&str; 2] =
    ["post_call_transcription", "call_initiation_failure"];

/// An ElevenLabs post-call webhook, as much of it as we use.
#[derive(Debug, Deserialize)]
pub struct ElevenLabsEvent {
    #[serde(rename = "type")]
    pub kind: String,
    pub data: EventData,
}

#[derive(Debug, Deserialize)]
pub struct EventData {
    pub conversation_id: String,
    #[serde(default)]
    pub transcript: Vec<TranscriptLine>,
    #[serde(default)]
    pub metadata: Option<serde_json::Value>,
    #[serde(default)]
    pub failure_reason: Option<String>,
    #[serde(default)]
    pub conversation_initiation_client_data: Option<serde_json::Value>,
}

/// The route side: makes a verified event durable before the 200.
pub struct ProviderEventIntake {
    pub bodies: Arc<dyn EventBodyStore>,
    pub queue: Arc<dyn JobQueue>,
}

impl ProviderEventIntake {
    /// Queues the event; an ElevenLabs body too large for the message is
    /// stored first and the message refers to it. An error means nothing
    /// was acknowledged (503).
    pub async fn accept(&self, event: ProviderEvent) -> Result<(), ApiError> {
        let mut message = serde_json::to_string(&event).map_err(crate::api::unavailable)?;
        if message.len() > MAX_INLINE_MESSAGE_BYTES {
            let ProviderEvent::Elevenlabs {
                body: EventBody::Inline(body),
                reconciled,
            } = &event
            else {
                return Err(crate::api::unavailable("provider event too large to queue"));
            };
            let stored = self
                .bodies
                .put(body.as_bytes())
                .await
                .map_err(crate::api::unavailable)?;
            info!(sha256 = %stored.sha256, parts = stored.parts, bytes = stored.bytes, "webhook body stored in parts");
            message = serde_json::to_string(&ProviderEvent::Elevenlabs {
                body: EventBody::Stored(stored),
                reconciled: *reconciled,
            })
            .map_err(crate::api::unavailable)?;
        }
        self.queue
            .send_raw(message, Duration::ZERO)
            .await
            .map_err(crate::api::unavailable)
    }
}
