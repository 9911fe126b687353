//! `POST /webhook/elevenlabs`: ElevenLabs' post-call webhook, signed with
//! `ElevenLabs-Signature` (HMAC-SHA256 over `t.body`, 30-minute tolerance).
//! ElevenLabs does not retry by default and disables a failing webhook, so
//! the route only verifies, checks the body parses, makes it durable (queued,
//! or stored in parts when several MB) and answers 200; the provider-events
//! worker applies it (`shared::flows::provider_events`). Kinds we do not use,
//! `post_call_audio` among them, are acknowledged and ignored.

use http::StatusCode;
use lambda_http::Request;
use shared::api::{self, ApiError, Route};
use shared::base::config::{self, Secret};
use shared::flows::provider_events::{
    ElevenLabsEvent, ProviderEventIntake, APPLIED_ELEVENLABS_KINDS,
};
use shared::providers::elevenlabs::verify_signature;
use shared::queue::jobs::{EventBody, ProviderEvent};
use shared::wiring::Wiring;
use tracing::{info, warn};

pub struct ElevenLabsWebhook {
    pub secret: Secret,
    pub intake: ProviderEventIntake,
}

/// Only the kind: unused kinds are acknowledged without reading their data.
#[derive(serde::Deserialize)]
struct Kind {
    #[serde(rename = "type")]
    kind: String,
}

impl ElevenLabsWebhook {
    pub async fn from_env() -> Result<Self, lambda_http::Error> {
        let aws = Wiring::load().await;
        Ok(Self {
            secret: config::required_secret("ELEVENLABS_WEBHOOK_SECRET")?,
            intake: aws.provider_event_intake()?,
        })
    }
}

impl Route for ElevenLabsWebhook {
    type Body = serde_json::Value;

    async fn process(&self, request: Request) -> Result<(StatusCode, serde_json::Value), ApiError> {
        let body = api::body_bytes_within(request.body(), api::ELEVENLABS_MAX_BODY_BYTES)?;
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
        let Kind { kind } = api::parse_json(body, "an ElevenLabs webhook event")?;
        if !APPLIED_ELEVENLABS_KINDS.contains(&kind.as_str()) {
            return Ok((
                StatusCode::OK,
                serde_json::json!({"success": true, "ignored": kind}),
            ));
        }
        // Parsed in full now so a malformed event is the sender's 400, not a poison message.
        let event: ElevenLabsEvent = api::parse_json(body, "an ElevenLabs webhook event")?;
        let text = String::from_utf8(body.to_vec())
            .map_err(|_| ApiError::bad_request("invalid_json", "Body is not UTF-8 JSON"))?;
        self.intake
            .accept(ProviderEvent::Elevenlabs {
                body: EventBody::Inline(text),
                reconciled: false,
            })
            .await?;
        info!(conversation_id = %event.data.conversation_id, %kind, bytes = body.len(), "post-call webhook queued");
        Ok((
            StatusCode::OK,
            serde_json::json!({"success": true, "conversation_id": event.data.conversation_id, "queued": kind}),
        ))
    }
}
