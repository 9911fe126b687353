//! `POST /whatsapp/status`: Twilio's status callbacks for the WhatsApp
//! messages we send (`MessageSid`, `MessageStatus`, `ErrorCode`). Twilio
//! never retries one, so the durable record is the one conditional write
//! that moves the message's status forward (`WhatsAppStore::apply_status`:
//! a late `sent` never overwrites `read`; `failed` and `undelivered` are
//! final and keep their `ErrorCode`), made before the 200. A status for a sid
//! not recorded yet (the callback beat the reply worker's record) is kept
//! for a day and applied when the message is recorded (`kept`). Unknown
//! statuses are answered 200 and logged; a store failure is 503.

use std::sync::Arc;

use http::StatusCode;
use lambda_http::Request;
use shared::api::{self, ApiError, Route};
use shared::flows::whatsapp::valid_sid;
use shared::providers::twilio::{self, TwilioWebhookAuth};
use shared::store::whatsapp::{StatusApplied, WhatsAppStore};
use shared::wiring::Wiring;
use tracing::info;

pub struct WhatsAppStatus {
    pub twilio_auth: TwilioWebhookAuth,
    pub store: Arc<dyn WhatsAppStore>,
}

impl WhatsAppStatus {
    pub async fn from_env() -> Result<Self, lambda_http::Error> {
        let aws = Wiring::load().await;
        Ok(Self {
            twilio_auth: aws.twilio_webhook_auth()?,
            store: aws.whatsapp()?,
        })
    }
}

impl Route for WhatsAppStatus {
    type Body = serde_json::Value;

    async fn process(&self, request: Request) -> Result<(StatusCode, serde_json::Value), ApiError> {
        let params = self.twilio_auth.verify(&request).await?;
        let sid = twilio::field(&params, "MessageSid")
            .filter(|sid| valid_sid(sid))
            .ok_or_else(|| ApiError::unprocessable("missing_field", "MessageSid is required"))?;
        let status = twilio::field(&params, "MessageStatus")
            .or_else(|| twilio::field(&params, "SmsStatus"))
            .ok_or_else(|| ApiError::unprocessable("missing_field", "MessageStatus is required"))?;
        let error_code = twilio::field(&params, "ErrorCode");
        let applied = self
            .store
            .apply_status(sid, status, error_code)
            .await
            .map_err(api::unavailable)?;
        let outcome = match applied {
            StatusApplied::Applied => "applied",
            StatusApplied::Stale => "stale",
            StatusApplied::Unknown => "unknown_message",
            StatusApplied::Kept => "kept",
            StatusApplied::Ignored => "unknown_status",
        };
        info!(message_sid = %sid, %status, ?error_code, outcome, "WhatsApp status");
        Ok((
            StatusCode::OK,
            serde_json::json!({"success": true, "status": status, "outcome": outcome}),
        ))
    }
}
