//! `GET|POST /twiml?call=<ref>`: the TwiML Twilio fetches when an outbound
//! call connects. The agenda and welcome message come from the stored call,
//! not the URL, and reach the agent as `<Parameter>`s of the media stream.

use std::sync::Arc;

use lambda_http::{Body, Request, RequestExt, Response};
use shared::api::ApiError;
use shared::store::directory::DirectoryStore;

use shared::providers::twilio::{self, TwilioWebhookAuth};
use shared::store::outbound_calls::OutboundCallStore;
use shared::wiring::Wiring;

pub struct Twiml {
    pub twilio_auth: TwilioWebhookAuth,
    pub calls: Arc<dyn OutboundCallStore>,
    pub directory: Arc<dyn DirectoryStore>,
}

impl Twiml {
    pub async fn from_env() -> Result<Self, lambda_http::Error> {
        let aws = Wiring::load().await;
        Ok(Self {
            twilio_auth: aws.twilio_webhook_auth()?,
            calls: aws.outbound_calls()?,
            directory: aws.directory()?,
        })
    }

    pub async fn handle(&self, request: Request) -> Response<Body> {
        twilio::twiml_response(self.process(request).await)
    }

    async fn process(&self, request: Request) -> Result<String, ApiError> {
        self.twilio_auth.verify(&request).await?;
        let unavailable = |err: shared::store::StoreError| {
            tracing::error!(error = %err, "store unavailable");
            ApiError::Unavailable
        };
        let call_ref = request
            .query_string_parameters()
            .first("call")
            .map(str::to_string);
        let Some(call) = (match call_ref {
            Some(call_ref) => self.calls.get(&call_ref).await.map_err(unavailable)?,
            None => None,
        }) else {
            tracing::warn!("TwiML requested for an unknown call");
            return Ok(twilio::hangup_twiml(
                "Sorry, this call cannot be connected. Goodbye.",
            ));
        };
        let assistant = match call.assistant_id {
            Some(id) => self
                .directory
                .get_assistant(id)
                .await
                .map_err(unavailable)?,
            None => None,
        };
        let Some(stream_url) = assistant.as_ref().and_then(|a| a.agent_stream_url.clone()) else {
            tracing::error!(call_ref = %call.call_ref, "assistant has no agent stream URL");
            return Ok(twilio::hangup_twiml(
                "Sorry, this call cannot be connected. Goodbye.",
            ));
        };
        let assistant_id = call.assistant_id.map(|a| a.to_string()).unwrap_or_default();
        let mut parameters = vec![
            ("call_ref", call.call_ref.as_str()),
            ("assistant_id", assistant_id.as_str()),
            ("direction", "outbound"),
        ];
        if let Some(agenda) = &call.agenda {
            parameters.push(("agenda", agenda));
        }
        if let Some(welcome) = &call.welcome_message {
            parameters.push(("welcome_message", welcome));
        }
        Ok(twilio::connect_stream_twiml(&stream_url, &parameters))
    }
}
