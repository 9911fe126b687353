//! The messages that flow through the queues, and the queue they go through.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::store::calls::CallSource;

/// SQS refuses delays above 15 minutes.
pub const MAX_DELAY: Duration = Duration::from_secs(900);

/// Transcribe one call's recording. The same job comes back with a
/// `transcript_id` to re-check the transcript until it is done or `deadline`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TranscriptionJob {
    pub call_id: String,
    pub recording_url: String,
    pub source: CallSource,
    #[serde(default)]
    pub transcript_id: Option<String>,
    /// How many re-checks happened; drives the backoff.
    #[serde(default)]
    pub checks: u32,
    /// Epoch seconds after which the transcription counts as failed.
    pub deadline: i64,
    /// Epoch seconds when the delivery was accepted (for TranscriptionSeconds).
    #[serde(default)]
    pub accepted_at: Option<i64>,
    /// The call's organisation, whose counters its outcome moves too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    /// The transcript is stored: post the seed's call summary.
    CallSummary,
    /// Transcription failed: say so, with the reason.
    TranscriptionFailed,
    /// Someone started a call with a voice agent (seed 000).
    CallStarted,
    /// An outbound call ended (or failed to start): status, duration, transcript.
    OutboundCallSummary,
    /// Something the organisation must act on, told in `notice` (a webhook
    /// endpoint callops disabled).
    Notice,
}

/// The words of a [`NotificationKind::Notice`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    pub subject: String,
    pub text: String,
}

/// What a call-start notification says; carried in the job because no call
/// record exists yet when the call starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallStart {
    pub room_name: String,
    #[serde(default)]
    pub user_email: Option<String>,
    /// RFC 3339.
    pub started_at: String,
    /// Participant or agent metadata; routing rules read it.
    #[serde(default)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotificationJob {
    /// Stable across redeliveries and re-sends: deliveries are recorded under it.
    pub notification_id: String,
    pub call_id: String,
    pub kind: NotificationKind,
    /// Rate-limit re-sends so far; bounded so a permanently limited channel ends in the DLQ.
    #[serde(default)]
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_start: Option<CallStart>,
    /// The recorded call's organisation, whose counters its outcome moves too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice: Option<Notice>,
}

impl NotificationJob {
    /// A notice for `org_id`, identified by `key` (one notice per key).
    pub fn notice(key: &str, org_id: &str, notice: Notice) -> Self {
        Self {
            notification_id: format!("notice#{key}"),
            call_id: key.to_string(),
            kind: NotificationKind::Notice,
            attempt: 0,
            call_start: None,
            org_id: Some(org_id.to_string()),
            notice: Some(notice),
        }
    }

    pub fn for_call(call_id: &str, kind: NotificationKind) -> Self {
        let kind_name = match kind {
            NotificationKind::CallSummary => "summary",
            NotificationKind::TranscriptionFailed => "transcription-failed",
            NotificationKind::CallStarted => "started",
            NotificationKind::OutboundCallSummary => "outbound",
            NotificationKind::Notice => "notice",
        };
        Self {
            notification_id: format!("{call_id}#{kind_name}"),
            call_id: call_id.to_string(),
            kind,
            attempt: 0,
            call_start: None,
            org_id: None,
            notice: None,
        }
    }

    /// The same notification, counted for the recorded call's organisation.
    pub fn of_org(mut self, org_id: Option<&str>) -> Self {
        self.org_id = org_id.map(str::to_string);
        self
    }

    /// A call-start notification, identified by the event that reported it.
    pub fn call_started(event_key: &str, details: CallStart) -> Self {
        Self {
            notification_id: format!("start#{event_key}"),
            call_id: details.room_name.clone(),
            kind: NotificationKind::CallStarted,
            attempt: 0,
            call_start: Some(details),
            org_id: None,
            notice: None,
        }
    }
}

/// Re-check an ElevenLabs conversation until it is final or `deadline`
/// (seed 004's monitoring, without a Lambda waiting).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MonitorJob {
    /// The outbound call (its ref is the conversation id).
    pub call_ref: String,
    pub conversation_id: String,
    #[serde(default)]
    pub checks: u32,
    /// Epoch seconds.
    pub deadline: i64,
}

/// A verified provider webhook, acknowledged to its sender and waiting for
/// the provider-events worker to apply it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "provider", rename_all = "snake_case")]
pub enum ProviderEvent {
    /// A Twilio status callback for the outbound call `call_ref`.
    TwilioStatus {
        call_ref: String,
        call_sid: String,
        status: String,
        #[serde(default)]
        duration_secs: Option<u64>,
        /// Our side of the call (`From` of a call we placed, `To` of an
        /// inbound one): the callback may only move a record of the
        /// organisation owning it. Absent when Twilio sent no `Direction`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        our_number: Option<String>,
        /// The callback's `SipResponseCode`: tells a busy line from a
        /// failed route when `CallStatus` is `failed`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sip_response_code: Option<u16>,
        /// Built by the sweep from Twilio's Call resource (the callback
        /// never came), not received.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        reconciled: bool,
    },
    /// A status callback for a session's call (`/twilio/voice` or
    /// `/phone/call`): no outbound-call ref, the call sid names the session.
    TwilioSessionStatus {
        call_sid: String,
        status: String,
        #[serde(default)]
        duration_secs: Option<u64>,
        /// `whatsapp` for WhatsApp calls (`?session=whatsapp`); absent: phone.
        #[serde(default)]
        session_kind: Option<String>,
        /// The outbound-call ref of a call `/phone/call` or `/whatsapp/call`
        /// placed (`?placed=`): its final status settles that reservation.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        placed: Option<String>,
        /// As for `TwilioStatus`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        our_number: Option<String>,
        /// As for `TwilioStatus`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sip_response_code: Option<u16>,
        /// As for `TwilioStatus`.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        reconciled: bool,
    },
    /// An ElevenLabs post-call webhook, exactly as signed, or the same
    /// document built by the sweep from the conversation (`reconciled`).
    Elevenlabs {
        body: EventBody,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        reconciled: bool,
    },
}

/// Dial one claimed campaign attempt (queued by the campaign tick after
/// its claim). Redeliveries are harmless: the call ref is derived from
/// (campaign, row, attempt) and a call is placed only by the one request
/// whose reservation created its record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignDialJob {
    pub campaign_id: String,
    pub row: u32,
    pub attempt: u32,
    pub call_ref: String,
}

/// Answer one incoming WhatsApp message (queued by `/whatsapp/message`
/// after the message was stored). Redeliveries are harmless: the reply
/// worker sends at most one reply per `message_sid`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WhatsAppReplyJob {
    pub message_sid: String,
    /// `{org}#{waId}`.
    pub conversation: String,
    /// The sender's address, `whatsapp:+E164`: where the reply goes.
    pub reply_to: String,
    /// Our number the message was sent to (`whatsapp:+E164`): the reply
    /// comes from it. Absent in jobs queued before numbers had owners: the
    /// deployment's `TWILIO_WHATSAPP_NUMBER`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_from: Option<String>,
    #[serde(default)]
    pub body: String,
    #[serde(default)]
    pub num_media: u32,
}

/// A webhook body: in the message when it fits, else stored in parts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventBody {
    Inline(String),
    Stored(crate::store::event_bodies::StoredBody),
}

#[derive(Debug, thiserror::Error)]
#[error("queue send failed: {0}")]
pub struct QueueError(pub String);

#[async_trait]
pub trait JobQueue: Send + Sync {
    async fn send_raw(&self, body: String, delay: Duration) -> Result<(), QueueError>;
    /// Sends several bodies with no delay; one result per body, in order.
    /// SQS sends ten per request; other queues one by one.
    async fn send_many_raw(&self, bodies: Vec<String>) -> Vec<Result<(), QueueError>> {
        let mut results = Vec::with_capacity(bodies.len());
        for body in bodies {
            results.push(self.send_raw(body, Duration::ZERO).await);
        }
        results
    }
}

/// Sends any job as JSON.
pub async fn send<T: Serialize + Sync>(
    queue: &dyn JobQueue,
    job: &T,
    delay: Duration,
) -> Result<(), QueueError> {
    let body = serde_json::to_string(job).map_err(|e| QueueError(e.to_string()))?;
    queue.send_raw(body, delay.min(MAX_DELAY)).await
}

pub struct SqsJobQueue {
    client: aws_sdk_sqs::Client,
    url: String,
}

impl SqsJobQueue {
    pub fn new(client: aws_sdk_sqs::Client, url: impl Into<String>) -> Self {
        Self {
            client,
            url: url.into(),
        }
    }

    /// One `SendMessageBatch` of at most [`SQS_BATCH`] bodies: a result per
    /// body, in order (SQS names the entries it refused by id).
    async fn send_batch(&self, chunk: &[String]) -> Vec<Result<(), QueueError>> {
        use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
        let entries: Result<Vec<_>, _> = chunk
            .iter()
            .enumerate()
            .map(|(i, body)| {
                SendMessageBatchRequestEntry::builder()
                    .id(format!("m{i}"))
                    .message_body(body)
                    .build()
            })
            .collect();
        let sent = match entries {
            Ok(entries) => self
                .client
                .send_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(e).to_string()),
            Err(e) => Err(e.to_string()),
        };
        match sent {
            Ok(out) => {
                let mut results: Vec<Result<(), QueueError>> =
                    chunk.iter().map(|_| Ok(())).collect();
                for failed in out.failed {
                    if let Some(slot) = failed
                        .id
                        .strip_prefix('m')
                        .and_then(|i| i.parse::<usize>().ok())
                        .and_then(|i| results.get_mut(i))
                    {
                        *slot = Err(QueueError(format!(
                            "{}: {}",
                            failed.code,
                            failed.message.unwrap_or_default()
                        )));
                    }
                }
                results
            }
            Err(err) => chunk.iter().map(|_| Err(QueueError(err.clone()))).collect(),
        }
    }
}

#[async_trait]
impl JobQueue for SqsJobQueue {
    async fn send_raw(&self, body: String, delay: Duration) -> Result<(), QueueError> {
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .delay_seconds(delay.as_secs() as i32)
            .send()
            .await
            .map_err(|e| QueueError(aws_sdk_sqs::error::DisplayErrorContext(e).to_string()))?;
        Ok(())
    }

    async fn send_many_raw(&self, bodies: Vec<String>) -> Vec<Result<(), QueueError>> {
        // The batches go out side by side: a stream batch of 100 records
        // waits for one round trip, not ten.
        let sends = bodies.chunks(SQS_BATCH).map(|chunk| self.send_batch(chunk));
        futures_util::future::join_all(sends)
            .await
            .into_iter()
            .flatten()
            .collect()
    }
}

/// SQS takes at most ten messages per `SendMessageBatch`.
const SQS_BATCH: usize = 10;

/// Exponential backoff for re-checks: base, 2x base, ... capped at `cap`.
pub fn backoff(base: Duration, checks: u32, cap: Duration) -> Duration {
    base.saturating_mul(2u32.saturating_pow(checks.min(16)))
        .min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let base = Duration::from_secs(10);
        let cap = Duration::from_secs(300);
        assert_eq!(backoff(base, 0, cap), Duration::from_secs(10));
        assert_eq!(backoff(base, 1, cap), Duration::from_secs(20));
        assert_eq!(backoff(base, 4, cap), Duration::from_secs(160));
        assert_eq!(backoff(base, 5, cap), cap);
        assert_eq!(backoff(base, 40, cap), cap);
    }

    #[test]
    fn notification_ids_are_stable_per_call_and_kind() {
        let a = NotificationJob::for_call("CA1", NotificationKind::CallSummary);
        let b = NotificationJob::for_call("CA1", NotificationKind::CallSummary);
        assert_eq!(a.notification_id, b.notification_id);
        let c = NotificationJob::for_call("CA1", NotificationKind::TranscriptionFailed);
        assert_ne!(a.notification_id, c.notification_id);
    }
}
