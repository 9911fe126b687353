//! `POST /calls/initiate` (seed 003): an assistant phones someone with an
//! agenda. Validation runs in the seed's order and words, and nothing is
//! sent to a provider unless every check passed.

use std::sync::Arc;

use http::StatusCode;
use lambda_http::Request;
use serde::{Deserialize, Serialize};
use shared::api::{self, ApiError, Route};
use shared::store::directory::{Assistant, DirectoryStore, Provider};

use shared::store::outbound_calls::{OutboundCall, OutboundCallStore};

use shared::api::access::KeyedAccess;
use shared::flows::outbound::Providers;
use shared::providers::twilio::{NewCall, ProviderError};
use shared::wiring::{self, Wiring};
use tracing::{info, warn};

pub const AGENDA_MAX_CHARS: usize = 2000;
pub const WELCOME_MAX_CHARS: usize = 200;
const USAGE_EXCEEDED: &str =
    "Monthly usage limit exceeded. Please upgrade your plan or add top-up credits.";

pub struct CallsInitiate {
    /// API key and per-key rate limit.
    pub access: KeyedAccess,
    pub directory: Arc<dyn DirectoryStore>,
    pub calls: Arc<dyn OutboundCallStore>,
    pub providers: Providers,
}

#[derive(Debug, Deserialize)]
struct InitiateBody {
    assistant_id: Option<serde_json::Value>,
    to_phone_number: Option<String>,
    welcome_message: Option<String>,
    agenda: Option<String>,
}

/// Seed 003's success response.
#[derive(Debug, Serialize)]
pub struct Initiated {
    pub success: bool,
    pub call_sid: String,
    pub message: &'static str,
    pub assistant_id: u64,
    pub to_phone_number: String,
    pub from_phone_number: Option<String>,
    /// Set for ElevenLabs calls: the id for `/conversations/{id}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<String>,
}

struct ValidRequest {
    assistant_id: u64,
    to: String,
    welcome_message: Option<String>,
    agenda: String,
}

impl InitiateBody {
    /// Field checks in seed 003's order: number, agenda, welcome message.
    fn validate(self) -> Result<ValidRequest, ApiError> {
        let field = |detail: &str, code: &'static str| ApiError::bad_request(code, detail);
        let to = shared::base::phone::e164(self.to_phone_number.as_deref().unwrap_or(""))
            .map_err(|err| ApiError::bad_request(err.code(), err.detail()))?;
        let agenda = self
            .agenda
            .map(|a| a.trim().to_string())
            .filter(|a| !a.is_empty())
            .ok_or_else(|| field("agenda is required", "missing_field"))?;
        if agenda.chars().count() > AGENDA_MAX_CHARS {
            return Err(field(
                "agenda must be at most 2000 characters",
                "agenda_too_long",
            ));
        }
        let welcome_message = self
            .welcome_message
            .map(|w| w.trim().to_string())
            .filter(|w| !w.is_empty());
        if welcome_message
            .as_ref()
            .is_some_and(|w| w.chars().count() > WELCOME_MAX_CHARS)
        {
            return Err(field(
                "welcome_message must be at most 200 characters",
                "welcome_message_too_long",
            ));
        }
        let assistant_id = self
            .assistant_id
            .as_ref()
            .and_then(|v| {
                v.as_u64()
                    .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
            })
            .ok_or_else(|| {
                field(
                    "assistant_id is required and must be an integer",
                    "invalid_assistant_id",
                )
            })?;
        Ok(ValidRequest {
            assistant_id,
            to,
            welcome_message,
            agenda,
        })
    }
}

fn unavailable(err: shared::store::StoreError) -> ApiError {
    warn!(error = %err, "store unavailable");
    ApiError::Unavailable
}

fn provider_failure(err: ProviderError) -> ApiError {
    shared::flows::outbound::call_not_placed(err, "The telephony provider")
}

impl CallsInitiate {
    pub async fn from_env() -> Result<Self, lambda_http::Error> {
        let aws = Wiring::load().await;
        Ok(Self {
            access: aws.keyed_access()?,
            directory: aws.directory()?,
            calls: aws.outbound_calls()?,
            providers: wiring::providers()?,
        })
    }
}

impl Route for CallsInitiate {
    type Body = Initiated;

    async fn process(&self, request: Request) -> Result<(StatusCode, Initiated), ApiError> {
        let key = self.access.admit(request.headers()).await?;
        let body: InitiateBody =
            api::parse_json(api::body_bytes(request.body())?, "a valid JSON object")?;
        let valid = body.validate()?;
        let assistant = self
            .directory
            .get_assistant(valid.assistant_id)
            .await
            .map_err(unavailable)?
            .filter(|a| a.is_active)
            .ok_or_else(|| ApiError::NotFound("Assistant not found".into()))?;
        let org = self
            .directory
            .get_organisation(&assistant.org_id)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| {
                warn!(
                    assistant_id = assistant.assistant_id,
                    "assistant's organisation is missing"
                );
                ApiError::NotFound("Assistant not found".into())
            })?;
        if org.over_limit() {
            return Err(ApiError::TooManyRequests {
                code: "usage_limit_exceeded",
                detail: USAGE_EXCEEDED.into(),
            });
        }
        let welcome = valid
            .welcome_message
            .clone()
            .or_else(|| assistant.default_welcome_message.clone());
        info!(
            assistant_id = assistant.assistant_id,
            to = %shared::base::mask::phone(&valid.to),
            api_key = %key.key_id,
            "placing outbound call"
        );
        match assistant.provider {
            Provider::Twilio => self.via_twilio(&assistant, &valid, welcome).await,
            Provider::Elevenlabs => self.via_elevenlabs(&assistant, &valid, welcome).await,
        }
    }
}

impl CallsInitiate {
    fn record(
        &self,
        call_ref: String,
        assistant: &Assistant,
        valid: &ValidRequest,
        from: Option<String>,
        welcome: Option<String>,
    ) -> OutboundCall {
        OutboundCall {
            assistant_id: Some(assistant.assistant_id),
            org_id: Some(assistant.org_id.clone()),
            from_number: from,
            agenda: Some(valid.agenda.clone()),
            welcome_message: welcome,
            status: "initiating".into(),
            status_rank: 0,
            ..OutboundCall::initiated(&call_ref, assistant.provider, &valid.to)
        }
    }

    /// Twilio fetches TwiML from `/twiml?call=<ref>` when the call connects;
    /// the agenda is stored under that ref, never put in the URL.
    async fn via_twilio(
        &self,
        assistant: &Assistant,
        valid: &ValidRequest,
        welcome: Option<String>,
    ) -> Result<(StatusCode, Initiated), ApiError> {
        let (Some(twilio), Some(base)) = (&self.providers.twilio, &self.providers.public_base_url)
        else {
            warn!("Twilio credentials or PUBLIC_BASE_URL missing");
            return Err(ApiError::Provider {
                detail: "Twilio is not configured for this deployment".into(),
            });
        };
        let from = assistant
            .caller_number
            .clone()
            .or_else(|| self.providers.twilio_phone_number.clone())
            .ok_or_else(|| {
                ApiError::unprocessable(
                    "missing_caller_number",
                    "The assistant has no caller number",
                )
            })?;
        let call_ref = format!("oc_{}", uuid::Uuid::new_v4().simple());
        let record = self.record(
            call_ref.clone(),
            assistant,
            valid,
            Some(from.clone()),
            welcome,
        );
        self.calls.put(&record).await.map_err(unavailable)?;
        let placed = twilio
            .create_call(&NewCall {
                to: &valid.to,
                from: &from,
                twiml_url: &format!("{base}/twiml?call={call_ref}"),
                status_callback: &format!("{base}/twilio/status?call={call_ref}"),
            })
            .await;
        let sid = match placed {
            Ok(sid) => sid,
            Err(err) => {
                let _ = self
                    .calls
                    .advance_status(&call_ref, "failed", Some(&err.to_string()))
                    .await;
                return Err(provider_failure(err));
            }
        };
        // The call is placed: bookkeeping failures are logged, never reported as a failed call.
        if let Err(err) = self
            .calls
            .set_provider_ids(&call_ref, Some(&sid), None)
            .await
        {
            warn!(error = %err, "call sid not stored");
        }
        let _ = self.calls.advance_status(&call_ref, "queued", None).await;
        Ok((
            StatusCode::OK,
            Initiated {
                success: true,
                call_sid: sid,
                message: "Outbound call initiated successfully",
                assistant_id: assistant.assistant_id,
                to_phone_number: valid.to.clone(),
                from_phone_number: Some(from),
                conversation_id: None,
            },
        ))
    }

    /// ElevenLabs places the call through its Twilio integration; the
    /// agenda and welcome message become dynamic variables.
    async fn via_elevenlabs(
        &self,
        assistant: &Assistant,
        valid: &ValidRequest,
        welcome: Option<String>,
    ) -> Result<(StatusCode, Initiated), ApiError> {
        let Some(elevenlabs) = &self.providers.elevenlabs else {
            return Err(ApiError::Provider {
                detail: "ElevenLabs is not configured for this deployment".into(),
            });
        };
        let (Some(agent_id), Some(phone_number_id)) = (
            &assistant.elevenlabs_agent_id,
            &assistant.elevenlabs_phone_number_id,
        ) else {
            return Err(ApiError::unprocessable(
                "assistant_incomplete",
                "The assistant has no ElevenLabs agent or phone number",
            ));
        };
        let mut variables = serde_json::Map::new();
        variables.insert("agenda".into(), valid.agenda.clone().into());
        if let Some(welcome) = &welcome {
            variables.insert("welcome_message".into(), welcome.clone().into());
        }
        let started = elevenlabs
            .outbound_call(agent_id, phone_number_id, &valid.to, &variables)
            .await
            .map_err(provider_failure)?;
        let from = assistant
            .caller_number
            .clone()
            .or_else(|| self.providers.twilio_phone_number.clone());
        let mut record = self.record(
            started.conversation_id.clone(),
            assistant,
            valid,
            from.clone(),
            welcome,
        );
        record.conversation_id = Some(started.conversation_id.clone());
        record.call_sid = started.call_sid.clone();
        record.agent_variables = variables;
        record.status = "initiated".into();
        record.status_rank = shared::store::outbound_calls::status_rank("initiated");
        if let Err(err) = self.calls.put(&record).await {
            warn!(error = %err, "placed call not recorded");
        }
        Ok((
            StatusCode::OK,
            Initiated {
                success: true,
                call_sid: started
                    .call_sid
                    .unwrap_or_else(|| started.conversation_id.clone()),
                message: "Outbound call initiated successfully",
                assistant_id: assistant.assistant_id,
                to_phone_number: valid.to.clone(),
                from_phone_number: from,
                conversation_id: Some(started.conversation_id),
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: serde_json::Value) -> Result<ValidRequest, String> {
        serde_json::from_value::<InitiateBody>(json)
            .unwrap()
            .validate()
            .map_err(|e| e.detail())
    }

    #[test]
    fn validation_follows_the_seed_order_and_words() {
        let long_agenda = "a".repeat(2001);
        let long_welcome = "w".repeat(201);
        assert_eq!(
            body(serde_json::json!({"assistant_id": 1, "to_phone_number": "1234567890", "agenda": ""})).err().unwrap(),
            "Invalid phone number format. Use E.164 format (e.g., +1234567890)"
        );
        assert_eq!(
            body(serde_json::json!({"assistant_id": 1, "to_phone_number": "+1234567890", "agenda": ""})).err().unwrap(),
            "Phone number +1234567890 is not a valid number in any country; check the country code and number"
        );
        assert_eq!(
            body(serde_json::json!({"assistant_id": 1, "to_phone_number": "+14155552671"}))
                .err()
                .unwrap(),
            "agenda is required"
        );
        assert_eq!(
            body(serde_json::json!({"assistant_id": 1, "to_phone_number": "+14155552671", "agenda": long_agenda})).err().unwrap(),
            "agenda must be at most 2000 characters"
        );
        assert_eq!(
            body(serde_json::json!({"assistant_id": 1, "to_phone_number": "+14155552671", "agenda": "x", "welcome_message": long_welcome}))
                .err()
                .unwrap(),
            "welcome_message must be at most 200 characters"
        );
        assert_eq!(
            body(serde_json::json!({"to_phone_number": "+14155552671", "agenda": "x"}))
                .err()
                .unwrap(),
            "assistant_id is required and must be an integer"
        );
        let ok = body(serde_json::json!({"assistant_id": 7, "to_phone_number": "+14155552671", "agenda": "x".repeat(2000), "welcome_message": "w".repeat(200)})).unwrap();
        assert_eq!(ok.assistant_id, 7);
    }
}
