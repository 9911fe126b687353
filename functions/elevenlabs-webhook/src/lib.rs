//! `POST /webhook/elevenlabs`: ElevenLabs' post-call webhook, signed with
//! `ElevenLabs-Signature` (HMAC-SHA256 over `t.body`, 30-minute tolerance).
//! A transcription stores the transcript and duration, counts usage and
//! notifies; an initiation failure marks the call failed and notifies.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use lambda_http::Request;
use serde::Deserialize;
use shared::api::{self, ApiError, Route};
use shared::base::config::{self, Secret};
use shared::flows::outbound::{finish_call, CallEnding};
use shared::providers::elevenlabs::{verify_signature, ConversationMetadata};
use shared::queue::jobs::JobQueue;
use shared::store::dedup::{run_once, DedupStore};

use shared::store::outbound_calls::{OutboundCall, OutboundCallStore, TranscriptLine};

use shared::flows::outbound::CALL_REF_VARIABLE;
use shared::store::directory::Provider;
use shared::wiring::{self, Wiring};
use tracing::{info, warn};

pub struct ElevenLabsWebhook {
    pub secret: Secret,
    pub calls: Arc<dyn OutboundCallStore>,
    pub dedup: Arc<dyn DedupStore>,
    pub notification_queue: Arc<dyn JobQueue>,
    pub lease: Duration,
}

#[derive(Deserialize)]
struct WebhookEvent {
    #[serde(rename = "type")]
    kind: String,
    data: EventData,
}

#[derive(Deserialize)]
struct EventData {
    conversation_id: String,
    #[serde(default)]
    transcript: Vec<TranscriptLine>,
    #[serde(default)]
    metadata: Option<serde_json::Value>,
    #[serde(default)]
    failure_reason: Option<String>,
    #[serde(default)]
    conversation_initiation_client_data: Option<serde_json::Value>,
}

impl EventData {
    /// Our call ref, passed to ElevenLabs as a dynamic variable when we placed the call.
    fn call_ref(&self) -> Option<&str> {
        self.conversation_initiation_client_data
            .as_ref()?
            .get("dynamic_variables")?
            .get(CALL_REF_VARIABLE)?
            .as_str()
    }
}

fn unavailable(err: impl std::fmt::Display) -> ApiError {
    warn!(error = %err, "dependency unavailable");
    ApiError::Unavailable
}

impl ElevenLabsWebhook {
    pub async fn from_env() -> Result<Self, lambda_http::Error> {
        let aws = Wiring::load().await;
        Ok(Self {
            secret: config::required_secret("ELEVENLABS_WEBHOOK_SECRET")?,
            calls: aws.outbound_calls()?,
            dedup: aws.dedup()?,
            notification_queue: aws.notification_queue()?,
            lease: wiring::dedup_lease()?,
        })
    }
}

impl Route for ElevenLabsWebhook {
    type Body = serde_json::Value;

    async fn process(&self, request: Request) -> Result<(StatusCode, serde_json::Value), ApiError> {
        let body = api::body_bytes(request.body())?;
        let header = request
            .headers()
            .get("elevenlabs-signature")
            .and_then(|v| v.to_str().ok());
        if let Err(reason) =
            verify_signature(header, body, &self.secret, shared::base::time::epoch_secs())
        {
            warn!(%reason, "ElevenLabs webhook signature rejected");
            return Err(ApiError::Unauthorized);
        }
        let event: WebhookEvent = api::parse_json(body, "an ElevenLabs webhook event")?;
        if !matches!(
            event.kind.as_str(),
            "post_call_transcription" | "call_initiation_failure"
        ) {
            return Ok((
                StatusCode::OK,
                serde_json::json!({"success": true, "ignored": event.kind}),
            ));
        }
        let key = format!("elevenlabs#{}#{}", event.data.conversation_id, event.kind);
        let lease = api::remaining_time(&request).unwrap_or(self.lease);
        let work = || self.apply(&event);
        api::once_response(
            run_once(self.dedup.as_ref(), &key, lease, work).await,
            StatusCode::OK,
        )
    }
}

impl ElevenLabsWebhook {
    /// The call this event is about: by conversation id, else by the call
    /// ref we passed as a dynamic variable (the conversation id may never
    /// have been stored if the placing function stopped right after the
    /// call), else a record of a call placed outside callops, created only
    /// if nobody else created it first.
    async fn find_or_record(&self, data: &EventData) -> Result<OutboundCall, ApiError> {
        if let Some(call) = self
            .calls
            .get(&data.conversation_id)
            .await
            .map_err(unavailable)?
        {
            return Ok(call);
        }
        if let Some(call_ref) = data.call_ref() {
            if let Some(call) = self.calls.get(call_ref).await.map_err(unavailable)? {
                return Ok(call);
            }
        }
        let call = unknown_call(&data.conversation_id, data.metadata.as_ref());
        if self.calls.create(&call).await.map_err(unavailable)? {
            return Ok(call);
        }
        self.calls
            .get(&data.conversation_id)
            .await
            .map_err(unavailable)?
            .ok_or(ApiError::Unavailable)
    }

    async fn apply(&self, event: &WebhookEvent) -> Result<serde_json::Value, ApiError> {
        let data = &event.data;
        let call = self.find_or_record(data).await?;
        let metadata: Option<ConversationMetadata> = data
            .metadata
            .as_ref()
            .and_then(|m| serde_json::from_value(m.clone()).ok());
        let failed = event.kind == "call_initiation_failure";
        let reason = failed.then(|| {
            data.failure_reason
                .clone()
                .unwrap_or_else(|| "call initiation failed".into())
        });
        info!(conversation_id = %data.conversation_id, kind = %event.kind, "post-call webhook");
        finish_call(
            self.calls.as_ref(),
            self.notification_queue.as_ref(),
            &call,
            CallEnding {
                status: if failed { "failed" } else { "done" },
                failure_reason: reason.as_deref(),
                transcript: &data.transcript,
                duration_secs: if failed {
                    None
                } else {
                    metadata.and_then(|m| m.call_duration_secs)
                },
            },
        )
        .await
        .map_err(unavailable)?;
        Ok(
            serde_json::json!({"success": true, "conversation_id": data.conversation_id, "recorded": event.kind}),
        )
    }
}

fn unknown_call(conversation_id: &str, metadata: Option<&serde_json::Value>) -> OutboundCall {
    let phone = metadata.and_then(|m| m.get("phone_call"));
    let text = |field: &str| {
        phone
            .and_then(|p| p.get(field))
            .and_then(|n| n.as_str())
            .map(str::to_string)
    };
    let to = text("external_number").unwrap_or_else(|| "unknown".into());
    OutboundCall {
        from_number: text("agent_number"),
        call_sid: text("call_sid"),
        conversation_id: Some(conversation_id.to_string()),
        ..OutboundCall::initiated(conversation_id, Provider::Elevenlabs, &to)
    }
}
