//! `GET /conversations/{conversation_id}` (seed 004's
//! `get_conversation_details`): ElevenLabs' conversation document, plus what
//! callops recorded about the call.

use std::sync::Arc;

use http::StatusCode;
use lambda_http::{Request, RequestExt};
use shared::api::{ApiError, Route};
use shared::providers::elevenlabs::ElevenLabsClient;
use shared::store::api_keys::ApiKeyStore;
use shared::store::outbound_calls::OutboundCallStore;

use shared::wiring::{self, Wiring};

pub struct ConversationGet {
    pub api_keys: Arc<dyn ApiKeyStore>,
    pub calls: Arc<dyn OutboundCallStore>,
    pub elevenlabs: Option<ElevenLabsClient>,
}

/// Conversation ids are ElevenLabs' (`conv_...`): letters, digits, `_`, `-`.
pub fn conversation_id(request: &Request) -> Result<String, ApiError> {
    let id = request
        .path_parameters()
        .first("conversation_id")
        .map(str::to_string)
        .unwrap_or_default();
    if id.is_empty()
        || id.len() > 128
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(ApiError::NotFound("Conversation not found".into()));
    }
    Ok(id)
}

impl ConversationGet {
    pub async fn from_env() -> Result<Self, lambda_http::Error> {
        let aws = Wiring::load().await;
        Ok(Self {
            api_keys: aws.api_keys()?,
            calls: aws.outbound_calls()?,
            elevenlabs: wiring::elevenlabs()?,
        })
    }
}

impl Route for ConversationGet {
    type Body = serde_json::Value;

    async fn process(&self, request: Request) -> Result<(StatusCode, serde_json::Value), ApiError> {
        shared::api::access::authenticate(self.api_keys.as_ref(), request.headers()).await?;
        let id = conversation_id(&request)?;
        let stored = self.calls.get(&id).await.map_err(|err| {
            tracing::error!(error = %err, "store unavailable");
            ApiError::Unavailable
        })?;
        let live = match &self.elevenlabs {
            Some(client) => client.conversation(&id).await.map_err(|err| {
                tracing::warn!(error = %err, "ElevenLabs conversation not readable");
                ApiError::Provider {
                    detail: "ElevenLabs did not return the conversation; retry shortly".into(),
                }
            })?,
            None => None,
        };
        if live.is_none() && stored.is_none() {
            return Err(ApiError::NotFound("Conversation not found".into()));
        }
        let mut details = live
            .map(|c| c.raw)
            .unwrap_or_else(|| serde_json::json!({"conversation_id": id}));
        if let Some(call) = stored {
            details["callops"] = serde_json::to_value(call).unwrap_or_default();
        }
        Ok((StatusCode::OK, details))
    }
}
