//! `GET /conversations/{conversation_id}` (seed 004's
//! `get_conversation_details`): ElevenLabs' conversation document, plus what
//! callops recorded about the call.

use std::sync::Arc;

use http::StatusCode;
use lambda_http::{Body, Request, RequestExt, Response};
use shared::api::{self, ApiError};
use shared::base::config;
use shared::providers::elevenlabs::ElevenLabsClient;
use shared::store::api_keys::{ApiKeyStore, DynamoApiKeyStore};
use shared::store::outbound_calls::{DynamoOutboundCallStore, OutboundCallStore};

use shared::flows::outbound::Providers;

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
        let sdk = shared::base::aws::sdk_config().await;
        Ok(Self {
            api_keys: Arc::new(DynamoApiKeyStore::new(
                aws_sdk_dynamodb::Client::new(&sdk),
                config::required("API_KEYS_TABLE")?,
            )),
            calls: Arc::new(DynamoOutboundCallStore::from_env(&sdk)?),
            elevenlabs: Providers::from_env(shared::flows::outbound::provider_http()?)?.elevenlabs,
        })
    }

    pub async fn handle(&self, request: Request) -> Response<Body> {
        api::respond(self.process(request).await)
    }

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
