//! `POST /calls/initiate` (seed 003): an assistant phones someone with an
//! agenda. Validation runs in the seed's order and words, and nothing is
//! sent to a provider unless every check passed.

use http::StatusCode;
use lambda_http::Request;
use serde::{Deserialize, Serialize};
use shared::api::{self, ApiError, Route};
use shared::flows::outbound::{Placed, Placement, CALL_REF_VARIABLE};
use shared::store::directory::{Assistant, Organisation, Provider};

use shared::store::outbound_calls::{new_call_ref, OutboundCall};

use shared::providers::twilio::NewCall;
use shared::wiring::Wiring;
use tracing::{info, warn};

/// Seed 003's words for any provider's refusal or outage.
const PROVIDER: &str = "The telephony provider";

pub const AGENDA_MAX_CHARS: usize = 2000;
pub const WELCOME_MAX_CHARS: usize = 200;

pub struct CallsInitiate {
    pub placement: Placement,
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

impl CallsInitiate {
    pub async fn from_env() -> Result<Self, lambda_http::Error> {
        let placement = Wiring::load().await.placement()?;
        Ok(Self { placement })
    }
}

impl Route for CallsInitiate {
    type Body = Initiated;

    async fn process(&self, request: Request) -> Result<(StatusCode, Initiated), ApiError> {
        let placing = &self.placement;
        let tenant = placing.access.admit(request.headers()).await?;
        let body: InitiateBody =
            api::parse_json(api::body_bytes(request.body())?, "a valid JSON object")?;
        let valid = body.validate()?;
        // A listed number is never dialled: checked before anything is reserved.
        placing.check_not_listed(&tenant.org_id, &valid.to).await?;
        // Another organisation's assistant is answered exactly like a missing one.
        let assistant = placing
            .directory
            .get_assistant(valid.assistant_id)
            .await
            .map_err(api::unavailable)?
            .filter(|a| a.is_active && a.org_id == tenant.org_id)
            .ok_or_else(|| ApiError::NotFound("Assistant not found".into()))?;
        let org = placing
            .directory
            .get_organisation(&assistant.org_id)
            .await
            .map_err(api::unavailable)?
            .ok_or_else(|| {
                warn!(
                    assistant_id = assistant.assistant_id,
                    "assistant's organisation is missing"
                );
                ApiError::NotFound("Assistant not found".into())
            })?;
        let welcome = valid
            .welcome_message
            .clone()
            .or_else(|| assistant.default_welcome_message.clone());
        info!(
            assistant_id = assistant.assistant_id,
            to = %shared::base::mask::phone(&valid.to),
            api_key = %tenant.key_id,
            "placing outbound call"
        );
        let call = Call {
            assistant: &assistant,
            org: &org,
            valid: &valid,
            welcome,
        };
        match assistant.provider {
            Provider::Twilio => self.via_twilio(call).await,
            Provider::Elevenlabs => self.via_elevenlabs(call).await,
        }
    }
}

/// What placing one call needs, once every check passed.
struct Call<'a> {
    assistant: &'a Assistant,
    org: &'a Organisation,
    valid: &'a ValidRequest,
    welcome: Option<String>,
}

impl CallsInitiate {
    /// The call's record before it is placed (status `initiating`).
    fn record(call: &Call<'_>, from: Option<String>) -> OutboundCall {
        OutboundCall {
            assistant_id: Some(call.assistant.assistant_id),
            from_number: from,
            agenda: Some(call.valid.agenda.clone()),
            welcome_message: call.welcome.clone(),
            status: "initiating".into(),
            status_rank: 0,
            ..OutboundCall::initiated(&new_call_ref(), call.assistant.provider, &call.valid.to)
        }
    }

    /// Twilio fetches TwiML from `/twiml?call=<ref>` when the call connects;
    /// the agenda is stored under that ref, never put in the URL.
    async fn via_twilio(&self, call: Call<'_>) -> Result<(StatusCode, Initiated), ApiError> {
        let providers = &self.placement.providers;
        let base = providers.public_base_url.current();
        let twilio = providers.twilio_for(&call.org.org_id).await?;
        let (Some(twilio), Some(base)) = (&twilio, base) else {
            warn!("Twilio credentials or PUBLIC_BASE_URL missing");
            return Err(ApiError::Provider {
                detail: "Twilio is not configured for this deployment".into(),
            });
        };
        let from = call
            .assistant
            .caller_number
            .clone()
            .or_else(|| providers.twilio_phone_number.clone())
            .ok_or_else(|| {
                ApiError::unprocessable(
                    "missing_caller_number",
                    "The assistant has no caller number",
                )
            })?;
        // Checked at call time: the number may have changed hands since the
        // assistant was saved.
        self.placement
            .check_caller_id(&call.org.org_id, &from)
            .await?;
        let record = Self::record(&call, Some(from.clone()));
        let time_limit_secs = call.assistant.max_call_seconds;
        let caller = from.as_str();
        let (_, placed) = self
            .placement
            .place(
                record,
                call.org,
                time_limit_secs,
                PROVIDER,
                |call_ref| async move {
                    let sid = twilio
                        .create_call(&NewCall {
                            to: &call.valid.to,
                            from: caller,
                            twiml_url: &format!("{base}/twiml?call={call_ref}"),
                            status_callback: &format!("{base}/twilio/status?call={call_ref}"),
                            time_limit_secs,
                            amd_callback: None,
                        })
                        .await?;
                    Ok(Placed {
                        call_sid: Some(sid),
                        conversation_id: None,
                    })
                },
            )
            .await?;
        Ok((
            StatusCode::OK,
            Initiated {
                success: true,
                call_sid: placed.call_sid.unwrap_or_default(),
                message: "Outbound call initiated successfully",
                assistant_id: call.assistant.assistant_id,
                to_phone_number: call.valid.to.clone(),
                from_phone_number: Some(from),
                conversation_id: None,
            },
        ))
    }

    /// ElevenLabs places the call through its Twilio integration; the
    /// agenda and welcome message become dynamic variables, with the call's
    /// ref so the post-call webhook finds the record whatever happens.
    async fn via_elevenlabs(&self, call: Call<'_>) -> Result<(StatusCode, Initiated), ApiError> {
        let providers = &self.placement.providers;
        let elevenlabs = providers.elevenlabs_for(&call.org.org_id).await?;
        let Some(elevenlabs) = &elevenlabs else {
            return Err(ApiError::Provider {
                detail: "ElevenLabs is not configured for this deployment".into(),
            });
        };
        let (Some(agent_id), Some(phone_number_id)) = (
            &call.assistant.elevenlabs_agent_id,
            &call.assistant.elevenlabs_phone_number_id,
        ) else {
            return Err(ApiError::unprocessable(
                "assistant_incomplete",
                "The assistant has no ElevenLabs agent or phone number",
            ));
        };
        let from = call
            .assistant
            .caller_number
            .clone()
            .or_else(|| providers.twilio_phone_number.clone());
        let record = Self::record(&call, from.clone());
        let mut variables = serde_json::Map::new();
        variables.insert("agenda".into(), call.valid.agenda.clone().into());
        if let Some(welcome) = &call.welcome {
            variables.insert("welcome_message".into(), welcome.clone().into());
        }
        let (_, placed) = self
            .placement
            .place(
                record,
                call.org,
                call.assistant.max_call_seconds,
                PROVIDER,
                |call_ref| async move {
                    variables.insert(CALL_REF_VARIABLE.into(), call_ref.into());
                    let started = elevenlabs
                        .outbound_call(agent_id, phone_number_id, &call.valid.to, &variables)
                        .await?;
                    Ok(Placed {
                        call_sid: started.call_sid,
                        conversation_id: Some(started.conversation_id),
                    })
                },
            )
            .await?;
        let conversation_id = placed.conversation_id.unwrap_or_default();
        Ok((
            StatusCode::OK,
            Initiated {
                success: true,
                call_sid: placed.call_sid.unwrap_or_else(|| conversation_id.clone()),
                message: "Outbound call initiated successfully",
                assistant_id: call.assistant.assistant_id,
                to_phone_number: call.valid.to.clone(),
                from_phone_number: from,
                conversation_id: Some(conversation_id),
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
