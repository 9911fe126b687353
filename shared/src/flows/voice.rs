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

use std::sync::Arc;
use std::time::Duration;

use lambda_http::{Body, Request, RequestExt, Response};
use tracing::{info, warn};

use crate::api::{self, ApiError};
use crate::base::{mask, metrics};
use crate::flows::phone::{CallContext, CallFlow};
use crate::flows::sessions::{validate_call_sid, Opening, SessionKind, SessionLifecycle};
use crate::flows::tenancy::{inbound_org, signer_may_act_for, Channel};
use crate::providers::twilio::{self, TwilioWebhookAuth};
use crate::store::tenancy::TenancyStore;

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
    /// Owner of calls to a number the registry does not know
    /// (`INBOUND_ORG_ID`); calls we placed carry their organisation in the
    /// signed URL instead.
    pub inbound_org: Option<String>,
    /// The number registry: the organisation of the number called (`To`).
    pub tenancy: Arc<dyn TenancyStore>,
    pub lease: Duration,
}

impl VoiceWebhook {
    /// The registry kind of the number called: WhatsApp calls reach a
    /// WhatsApp sender.
    fn channel(&self) -> Channel {
        match self.kind {
            SessionKind::Whatsapp => Channel::WhatsApp,
            _ => Channel::Voice,
        }
    }

    fn route(&self) -> &'static str {
        match self.kind {
            SessionKind::Whatsapp => "/whatsapp/voice",
            _ => "/twilio/voice",
        }
    }

    pub async fn handle(&self, request: Request) -> Response<Body> {
        twilio::twiml_response(self.process(&request).await)
    }

    /// Errors only before the call is known to be Twilio's (signature,
    /// missing `CallSid`); after that, always TwiML.
    async fn process(&self, request: &Request) -> Result<String, ApiError> {
        let verified = self.twilio_auth.verify_account(request).await?;
        let params = verified.params;
        let call_sid = twilio::field(&params, "CallSid")
            .ok_or_else(|| ApiError::unprocessable("missing_field", "CallSid is required"))?;
        validate_call_sid(call_sid)?;
        let kind = self.kind;
        let context = CallContext { kind, call_sid };
        let to = twilio::field(&params, "To").unwrap_or_default();
        let placed_for = request
            .query_string_parameters()
            .first("org")
            .map(str::to_string);
        let org = match placed_for {
            Some(org) => Some(org),
            None => match inbound_org(
                self.tenancy.as_ref(),
                self.channel(),
                to,
                self.inbound_org.as_deref(),
            )
            .await
            {
                Ok(org) => org,
                Err(err) => {
                    warn!(%call_sid, error = %err, "number registry unavailable; caller told to try again");
                    metrics::count(metrics::Metric::Failed);
                    return Ok(self.flow.try_again());
                }
            },
        };
        // An organisation's own account speaks only for its own numbers.
        let org = org.filter(|org| signer_may_act_for(verified.org_id.as_deref(), org));
        let Some(org_id) = org else {
            info!(%call_sid, to = %mask::phone(to), "call to a number no organisation owns");
            metrics::count_by(metrics::Metric::InboundUnowned, "Route", self.route());
            return Ok(self.flow.not_in_service());
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
