//! Voice calls that become sessions (seed 002), shared by the phone and
//! WhatsApp routes: the signed voice webhook that opens the session and
//! answers TwiML ([`VoiceWebhook`], `/twilio/voice` and `/whatsapp/voice`),
//! and placing a call whose answer is connected like an inbound one
//! ([`CallPlacer`], `/phone/call` and `/whatsapp/call`).
//!
//! Twilio plays "an application error has occurred" for any non-TwiML
//! answer, so once the signature is good every outcome of the webhook is
//! TwiML: LiveKit or the store failing gives a spoken "try again" and a
//! hang-up, logged and counted. Duplicate deliveries open nothing twice
//! (the session's open runs once per conversation).

use std::time::Duration;

use lambda_http::{Body, Request, RequestExt, Response};
use tracing::{error, info, warn};

use crate::api::{self, ApiError};
use crate::base::{mask, metrics};
use crate::flows::phone::{CallContext, CallFlow};
use crate::flows::sessions::{validate_call_sid, Opening, SessionKind, SessionLifecycle};
use crate::providers::twilio::{self, TwilioWebhookAuth};

// Placing calls checks the number to dial with libphonenumber; the voice
// webhooks never do.
#[cfg(feature = "phone")]
mod placer;
#[cfg(feature = "phone")]
pub use placer::{CallPlacer, Placed, DEFAULT_TIME_LIMIT_SECS};

/// A voice webhook of one kind (phone or WhatsApp).
pub struct VoiceWebhook {
    pub kind: SessionKind,
    pub twilio_auth: TwilioWebhookAuth,
    pub flow: CallFlow,
    pub lifecycle: SessionLifecycle,
    /// Owner of calls to our number (`INBOUND_ORG_ID`); calls we placed
    /// carry their organisation in the signed URL instead.
    pub inbound_org: Option<String>,
    pub lease: Duration,
}

impl VoiceWebhook {
    pub async fn handle(&self, request: Request) -> Response<Body> {
        twilio::twiml_response(self.process(&request).await)
    }

    /// Errors only before the call is known to be Twilio's (signature,
    /// missing `CallSid`); after that, always TwiML.
    async fn process(&self, request: &Request) -> Result<String, ApiError> {
        let params = self.twilio_auth.verify(request).await?;
        let call_sid = twilio::field(&params, "CallSid")
            .ok_or_else(|| ApiError::unprocessable("missing_field", "CallSid is required"))?;
        validate_call_sid(call_sid)?;
        let kind = self.kind;
        let context = CallContext { kind, call_sid };
        let org = request
            .query_string_parameters()
            .first("org")
            .map(str::to_string)
            .or_else(|| self.inbound_org.clone());
        let Some(org_id) = org else {
            error!("inbound call but INBOUND_ORG_ID is not set; the caller is told to try again");
            metrics::count(metrics::Metric::Failed);
            return Ok(self.flow.try_again());
        };
        let from = twilio::field(&params, "From").map(str::to_string);
        info!(
            %call_sid,
            from = %from.as_deref().map(mask::phone).unwrap_or_default(),
            "incoming call"
        );
        let opening = Opening {
            kind,
            key: call_sid.to_string(),
            org_id,
            call_sid: Some(call_sid.to_string()),
            direction: twilio::field(&params, "Direction").map(str::to_string),
            from_number: from.clone(),
            to_number: twilio::field(&params, "To").map(str::to_string),
            host_identity: None,
            caller: from,
            reopen: false,
        };
        let lease = api::remaining_time(request).unwrap_or(self.lease);
        // Duplicate deliveries are absorbed by the open itself, which runs
        // once per conversation; every delivery gets the same TwiML.
        if let Err(err) = self.lifecycle.open(&opening, lease).await {
            warn!(%call_sid, error = %err, "session not opened; caller told to try again");
            metrics::count(metrics::Metric::Failed);
            return Ok(self.flow.try_again());
        }
        Ok(self.flow.answer(&context))
    }
}
