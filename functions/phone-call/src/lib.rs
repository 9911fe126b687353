//! `POST /phone/call` `{"to", "from"?}` (API key): places a Twilio call whose
//! answer is connected like an inbound one and opens its session
//! `phone-{CallSid}` at once; see `shared::flows::voice::CallPlacer`.

use http::StatusCode;
use lambda_http::Request;
use shared::api::{ApiError, Route};
use shared::flows::sessions::SessionKind;
use shared::flows::voice::{CallPlacer, Placed};
use shared::wiring::Wiring;

pub struct PhoneCall {
    pub placer: CallPlacer,
}

impl PhoneCall {
    pub async fn from_env() -> Result<Self, lambda_http::Error> {
        let aws = Wiring::load().await;
        Ok(Self {
            placer: aws.call_placer(SessionKind::Phone)?,
        })
    }
}

impl Route for PhoneCall {
    type Body = Placed;

    async fn process(&self, request: Request) -> Result<(StatusCode, Placed), ApiError> {
        self.placer.process(request).await
    }
}
