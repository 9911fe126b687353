//! `POST /twilio/voice`: a phone call arrives (or an outbound `/phone/call`
//! is answered). Creates room `twilio-{CallSid}`, dispatches the agent,
//! records session `phone-{CallSid}`, queues the call-start notification and
//! answers TwiML that connects the caller (seed 002).
//!
//! Twilio plays "an application error has occurred" for any non-TwiML
//! answer, so once the signature is good every outcome is TwiML: LiveKit or
//! the store failing gives a spoken "try again" and a hang-up, logged and
//! counted. Duplicate deliveries open nothing twice (dedup on the call sid).

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use lambda_http::{Body, Request, RequestExt, Response};
use shared::api::{self, ApiError};
use shared::base::{config, mask, metrics};
use shared::flows::phone::{CallContext, CallFlow};
use shared::flows::sessions::{validate_call_sid, Opening, SessionKind, SessionLifecycle};
use shared::providers::twilio::{self, TwilioWebhookAuth};
use shared::store::dedup::{run_once, DedupStore, Once, OnceError};
use shared::wiring::{self, Wiring};
use tracing::{error, info, warn};

pub struct TwilioVoice {
    pub twilio_auth: TwilioWebhookAuth,
    pub flow: CallFlow,
    pub lifecycle: SessionLifecycle,
    pub dedup: Arc<dyn DedupStore>,
    /// Owner of calls to our number (`INBOUND_ORG_ID`); calls placed by
    /// `/phone/call` carry their organisation in the signed URL instead.
    pub inbound_org: Option<String>,
    pub lease: Duration,
}

fn xml(body: String) -> Response<Body> {
    Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "text/xml; charset=utf-8")
        .body(Body::Text(body))
        .expect("static response parts are valid")
}

/// The dedup key of one call's voice webhook.
pub fn dedup_key(call_sid: &str) -> String {
    format!("twilio-voice#{call_sid}")
}

impl TwilioVoice {
    pub async fn from_env() -> Result<Self, lambda_http::Error> {
        let aws = Wiring::load().await;
        Ok(Self {
            twilio_auth: TwilioWebhookAuth::from_env()?,
            flow: CallFlow::from_env()?,
            lifecycle: aws.session_lifecycle(true)?,
            dedup: aws.dedup()?,
            inbound_org: config::optional("INBOUND_ORG_ID"),
            lease: wiring::dedup_lease()?,
        })
    }

    pub async fn handle(&self, request: Request) -> Response<Body> {
        match self.process(&request).await {
            Ok(twiml) => xml(twiml),
            Err(err) => err.into_response(),
        }
    }

    /// Errors only before the call is known to be Twilio's (signature,
    /// missing `CallSid`); after that, always TwiML.
    async fn process(&self, request: &Request) -> Result<String, ApiError> {
        let params = self.twilio_auth.verify(request)?;
        let call_sid = twilio::field(&params, "CallSid")
            .ok_or_else(|| ApiError::unprocessable("missing_field", "CallSid is required"))?;
        validate_call_sid(call_sid)?;
        let kind = SessionKind::Phone;
        let context = CallContext {
            call_sid,
            room: &kind.room(call_sid),
            session_id: &kind.session_id(call_sid),
        };
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
        let work = || async {
            let opened = self.lifecycle.open(&opening, lease).await?;
            Ok::<_, ApiError>(serde_json::json!({"session_id": opened.session_id}))
        };
        match run_once(self.dedup.as_ref(), &dedup_key(call_sid), lease, work).await {
            Ok(Once::Done(_)) => {}
            Ok(Once::Duplicate(_)) => info!(%call_sid, "duplicate voice webhook; same answer"),
            // The first delivery is still opening the session; the TwiML is the same.
            Ok(Once::InProgress) => info!(%call_sid, "voice webhook in progress elsewhere"),
            Err(OnceError::Work(err)) => {
                warn!(%call_sid, error = %err, "session not opened; caller told to try again");
                metrics::count(metrics::Metric::Failed);
                return Ok(self.flow.try_again());
            }
            Err(OnceError::Store(err)) => {
                warn!(%call_sid, error = %err, "dedup store unavailable; caller told to try again");
                metrics::count(metrics::Metric::Failed);
                return Ok(self.flow.try_again());
            }
        }
        Ok(self.flow.answer(&context))
    }
}
