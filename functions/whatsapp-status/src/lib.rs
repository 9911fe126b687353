//! `POST /whatsapp/status`: Twilio's status callbacks for the WhatsApp
//! messages we send (`MessageSid`, `MessageStatus`, `ErrorCode`). Twilio
//! never retries one, so the durable record is the one conditional write
//! that moves the message's status forward (`WhatsAppStore::apply_status`:
//! a late `sent` never overwrites `read`; `failed` and `undelivered` are
//! final and keep their `ErrorCode`), made before the 200. A status for a sid
//! not recorded yet (the callback beat the reply worker's record) is kept
//! for a day and applied when the message is recorded (`kept`). Unknown
//! statuses are answered 200 and logged; a store failure is 503. A status
//! whose sender (`From`) is not a number of the message's organisation
//! (number registry, else `INBOUND_ORG_ID`) moves nothing: 200 `ignored`,
//! metric `StatusIgnored`.

use std::sync::Arc;

use http::StatusCode;
use lambda_http::Request;
use shared::api::{self, ApiError, Route};
use shared::base::config;
use shared::base::mask;
use shared::base::metrics::{self, Metric};
use shared::flows::tenancy::{inbound_org, Channel};
use shared::flows::whatsapp::valid_sid;
use shared::providers::twilio::{self, TwilioWebhookAuth};
use shared::store::tenancy::TenancyStore;
use shared::store::whatsapp::{StatusApplied, WhatsAppStore};
use shared::wiring::Wiring;
use tracing::{info, warn};

pub struct WhatsAppStatus {
    pub twilio_auth: TwilioWebhookAuth,
    pub store: Arc<dyn WhatsAppStore>,
    /// The number registry and `INBOUND_ORG_ID`: a status moves only a
    /// message of the organisation owning its sender (`From`).
    pub tenancy: Arc<dyn TenancyStore>,
    pub default_org: Option<String>,
}

impl WhatsAppStatus {
    pub async fn from_env() -> Result<Self, lambda_http::Error> {
        let aws = Wiring::load().await;
        Ok(Self {
            twilio_auth: aws.twilio_webhook_auth()?,
            store: aws.whatsapp()?,
            tenancy: aws.tenancy()?,
            default_org: config::optional("INBOUND_ORG_ID"),
        })
    }
}

impl WhatsAppStatus {
    /// Whether the sender (`From`, our number) belongs to the organisation
    /// of the message `sid`. A status without a sender, or for a message
    /// not recorded yet (kept for when it is), is not held to it.
    async fn sender_is_the_messages(
        &self,
        sid: &str,
        from: Option<&str>,
    ) -> Result<bool, ApiError> {
        let Some(from) = from else {
            return Ok(true);
        };
        let conversation = self
            .store
            .conversation_of(sid)
            .await
            .map_err(api::unavailable)?;
        let Some((org, _)) = conversation.as_deref().and_then(|c| c.split_once('#')) else {
            return Ok(true);
        };
        let owner = inbound_org(
            self.tenancy.as_ref(),
            Channel::WhatsApp,
            from,
            self.default_org.as_deref(),
        )
        .await
        .map_err(api::unavailable)?;
        if owner.as_deref() == Some(org) {
            return Ok(true);
        }
        warn!(message_sid = %sid, from = %mask::phone(from), "WhatsApp status from a sender not the message's organisation's; ignored");
        metrics::count_by(Metric::StatusIgnored, "Route", "/whatsapp/status");
        Ok(false)
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
        if !self
            .sender_is_the_messages(sid, twilio::field(&params, "From"))
            .await?
        {
            return Ok((
                StatusCode::OK,
                serde_json::json!({"success": true, "status": status, "outcome": "ignored"}),
            ));
        }
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
