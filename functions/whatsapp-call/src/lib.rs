//! `POST /whatsapp/call` `{"to"}` (API key): an outbound WhatsApp call as
//! Twilio documents it (the Voice API with `whatsapp:` addresses, from
//! `TWILIO_WHATSAPP_NUMBER`), connected like an inbound one; session
//! `whatsapp-{CallSid}`. Twilio's WhatsApp calling is in private beta, so
//! the route answers 403 unless `WHATSAPP_CALLING_ENABLED=true`.

use http::StatusCode;
use lambda_http::Request;
use shared::api::{ApiError, Route};
use shared::base::config;
use shared::flows::sessions::SessionKind;
use shared::flows::voice::{CallPlacer, Placed};
use shared::wiring::Wiring;

pub struct WhatsAppCall {
    /// `None` while WhatsApp calling is not enabled for this deployment.
    pub placer: Option<CallPlacer>,
}

impl WhatsAppCall {
    pub async fn from_env() -> Result<Self, lambda_http::Error> {
        if !config::parsed_or("WHATSAPP_CALLING_ENABLED", false)? {
            return Ok(Self { placer: None });
        }
        let aws = Wiring::load().await;
        Ok(Self {
            placer: Some(aws.call_placer(SessionKind::Whatsapp)?),
        })
    }
}

impl Route for WhatsAppCall {
    type Body = Placed;

    async fn process(&self, request: Request) -> Result<(StatusCode, Placed), ApiError> {
        match &self.placer {
            Some(placer) => placer.process(request).await,
            None => Err(ApiError::NotPermitted {
                code: "whatsapp_calling_disabled",
                detail: "WhatsApp calling is not enabled for this deployment (Twilio's \
                         WhatsApp calling is in private beta); set WHATSAPP_CALLING_ENABLED=true \
                         once Twilio has enabled it on your sender"
                    .into(),
            }),
        }
    }
}
