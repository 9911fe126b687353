//! `POST /whatsapp/message`: Twilio's "a message comes in" webhook for our
//! WhatsApp sender. Checks `X-Twilio-Signature` on the raw form (400
//! without one, 403 if wrong: nothing stored), then, once per `MessageSid`,
//! stores the message in the sender's conversation of the organisation
//! owning the number written to (`To`, in the number registry; else
//! `INBOUND_ORG_ID`) and queues its reply job (`shared::flows::whatsapp::WhatsAppIntake`). Only
//! then is Twilio answered, with empty TwiML: the reply goes out later
//! through the Messages API, sent by `whatsapp-reply-worker` from that
//! number. A message to a number nobody owns, with no `INBOUND_ORG_ID`,
//! gets the same empty TwiML and keeps only its dedup record (metric
//! `InboundUnowned`). A store or queue failure answers 503 (JSON) and keeps
//! nothing claimed.

use std::time::Duration;

use http::StatusCode;
use lambda_http::{Body, Request, Response};
use shared::api::{self, ApiError};
use shared::base::config;
use shared::flows::whatsapp::{Inbound, WhatsAppIntake};
use shared::providers::twilio::{TwilioWebhookAuth, EMPTY_TWIML};
use shared::wiring::{self, Wiring};

pub struct WhatsAppMessage {
    pub twilio_auth: TwilioWebhookAuth,
    pub intake: WhatsAppIntake,
    pub lease: Duration,
}

impl WhatsAppMessage {
    pub async fn from_env() -> Result<Self, lambda_http::Error> {
        let aws = Wiring::load().await;
        Ok(Self {
            twilio_auth: aws.twilio_webhook_auth()?,
            intake: WhatsAppIntake {
                dedup: aws.dedup()?,
                store: aws.whatsapp()?,
                reply_queue: aws.whatsapp_reply_queue()?,
                tenancy: aws.tenancy()?,
                inbound_org: config::optional("INBOUND_ORG_ID"),
            },
            lease: wiring::dedup_lease()?,
        })
    }

    pub async fn handle(&self, request: Request) -> Response<Body> {
        match self.process(&request).await {
            Ok(()) => Response::builder()
                .status(StatusCode::OK)
                .header(http::header::CONTENT_TYPE, "text/xml")
                .body(Body::Text(EMPTY_TWIML.to_string()))
                .expect("static response parts are valid"),
            Err(err) => err.into_response(),
        }
    }

    async fn process(&self, request: &Request) -> Result<(), ApiError> {
        let verified = self.twilio_auth.verify_account(request).await?;
        let inbound = Inbound {
            signed_by: verified.org_id,
            ..Inbound::from_form(&verified.params)?
        };
        let lease = api::remaining_time(request).unwrap_or(self.lease);
        self.intake.accept(&inbound, lease).await.map(|_| ())
    }
}
