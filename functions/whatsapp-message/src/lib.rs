//! `POST /whatsapp/message`: Twilio's "a message comes in" webhook for our
//! WhatsApp sender. Checks `X-Twilio-Signature` on the raw form (400
//! without one, 403 if wrong: nothing stored), then, once per `MessageSid`,
//! stores the message in the sender's conversation of the organisation
//! owning the number written to (`To`, in the number registry; else
//! `INBOUND_ORG_ID`), with its reply's watch entry, in one transaction
//! (`shared::flows::whatsapp::WhatsAppIntake`). Only then is Twilio
//! answered, with empty TwiML: the entry's stream record queues the reply
//! job (`whatsapp-stream`), and `whatsapp-reply-worker` sends it from that
//! number through the Messages API. A message to a number nobody owns, with
//! no `INBOUND_ORG_ID`, gets the same empty TwiML and stores nothing (metric
//! `InboundUnowned`). A store failure answers 503 (JSON).

use http::StatusCode;
use lambda_http::{Body, Request, Response};
use shared::api::ApiError;
use shared::base::config;
use shared::flows::whatsapp::{Inbound, WhatsAppIntake};
use shared::providers::twilio::{TwilioWebhookAuth, EMPTY_TWIML};
use shared::wiring::Wiring;

pub struct WhatsAppMessage {
    pub twilio_auth: TwilioWebhookAuth,
    pub intake: WhatsAppIntake,
}

impl WhatsAppMessage {
    pub async fn from_env() -> Result<Self, lambda_http::Error> {
        let aws = Wiring::load().await;
        Ok(Self {
            twilio_auth: aws.twilio_webhook_auth()?,
            intake: WhatsAppIntake {
                store: aws.whatsapp()?,
                tenancy: aws.tenancy()?,
                inbound_org: config::optional("INBOUND_ORG_ID"),
            },
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
        self.intake.accept(&inbound).await.map(|_| ())
    }
}
