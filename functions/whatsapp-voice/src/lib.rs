//! `POST /whatsapp/voice`: a WhatsApp call arrives through Twilio (or an
//! outbound `/whatsapp/call` is answered): handled like `/twilio/voice`, with
//! room and session `whatsapp-{CallSid}`. Twilio's WhatsApp calling is in
//! private beta; this route only does anything once Twilio sends it calls.

use lambda_http::{Body, Request, Response};
use shared::flows::sessions::SessionKind;
use shared::flows::voice::VoiceWebhook;
use shared::wiring::Wiring;

pub struct WhatsAppVoice {
    pub webhook: VoiceWebhook,
}

impl WhatsAppVoice {
    pub async fn from_env() -> Result<Self, lambda_http::Error> {
        let aws = Wiring::load().await;
        Ok(Self {
            webhook: aws.voice_webhook(SessionKind::Whatsapp)?,
        })
    }

    pub async fn handle(&self, request: Request) -> Response<Body> {
        self.webhook.handle(request).await
    }
}
