//! `POST /twilio/routing`: the digit a caller pressed at the `CALL_MENU`
//! prompt of `/twilio/voice`. Dials a number, plays a message or hands the
//! call to the agent (no digit or an unknown one: the agent), as seed 002's
//! "Custom Call Flow" does. A WhatsApp call's menu posts here with
//! `?kind=whatsapp` (inside the signed URL), so its caller reaches its own
//! `whatsapp-{CallSid}` room, where the agent waits.

use lambda_http::{Body, Request, RequestExt, Response};
use shared::api::ApiError;
use shared::flows::phone::{routing_kind, CallContext, CallFlow};
use shared::flows::sessions::validate_call_sid;
use shared::providers::twilio::{self, TwilioWebhookAuth};
use tracing::info;

pub struct TwilioRouting {
    pub twilio_auth: TwilioWebhookAuth,
    pub flow: CallFlow,
}

impl TwilioRouting {
    pub async fn from_env() -> Result<Self, lambda_http::Error> {
        Ok(Self {
            twilio_auth: shared::wiring::Wiring::load().await.twilio_webhook_auth()?,
            flow: CallFlow::from_env()?,
        })
    }

    pub async fn handle(&self, request: Request) -> Response<Body> {
        twilio::twiml_response(self.process(&request).await)
    }

    async fn process(&self, request: &Request) -> Result<String, ApiError> {
        let params = self.twilio_auth.verify(request).await?;
        let call_sid = twilio::field(&params, "CallSid")
            .ok_or_else(|| ApiError::unprocessable("missing_field", "CallSid is required"))?;
        validate_call_sid(call_sid)?;
        // The signature covers the query, so only our own TwiML sets the kind.
        let kind =
            routing_kind(request.query_string_parameters().first("kind")).ok_or_else(|| {
                ApiError::unprocessable("invalid_kind", "kind must be `phone` or `whatsapp`")
            })?;
        let digits = twilio::field(&params, "Digits");
        info!(%call_sid, kind = kind.name(), digits = digits.unwrap_or(""), "menu choice");
        Ok(self.flow.route(digits, &CallContext { kind, call_sid }))
    }
}
