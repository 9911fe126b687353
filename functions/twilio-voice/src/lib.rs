//! `POST /twilio/voice`: a phone call arrives (or an outbound `/phone/call`
//! is answered). Creates room `twilio-{CallSid}`, dispatches the agent,
//! records session `phone-{CallSid}`, queues the call-start notification and
//! answers TwiML that connects the caller (seed 002); see
//! `shared::flows::voice::VoiceWebhook`.

use lambda_http::{Body, Request, Response};
use shared::flows::sessions::SessionKind;
use shared::flows::voice::VoiceWebhook;
use shared::wiring::Wiring;

pub struct TwilioVoice {
    pub webhook: VoiceWebhook,
}

impl TwilioVoice {
    pub async fn from_env() -> Result<Self, lambda_http::Error> {
        let aws = Wiring::load().await;
        Ok(Self {
            webhook: aws.voice_webhook(SessionKind::Phone)?,
        })
    }

    pub async fn handle(&self, request: Request) -> Response<Body> {
        self.webhook.handle(request).await
    }
}
