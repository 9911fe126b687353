//! `GET /conversations/{conversation_id}` (seed 004's
//! `get_conversation_details`): ElevenLabs' conversation document, plus what
//! callops recorded about the call.

use http::StatusCode;
use lambda_http::Request;
use shared::api::{ApiError, Route};
use shared::flows::conversations::ConversationLookup;
use shared::wiring::Wiring;

pub struct ConversationGet {
    pub lookup: ConversationLookup,
}

impl ConversationGet {
    pub async fn from_env() -> Result<Self, lambda_http::Error> {
        let lookup = Wiring::load().await.conversation_lookup()?;
        Ok(Self { lookup })
    }
}

impl Route for ConversationGet {
    type Body = serde_json::Value;

    async fn process(&self, request: Request) -> Result<(StatusCode, serde_json::Value), ApiError> {
        let found = self.lookup.find(&request).await?;
        let live = self.lookup.live(&found).await?;
        let mut details = live
            .map(|c| c.raw)
            .unwrap_or_else(|| serde_json::json!({"conversation_id": found.conversation_id}));
        details["callops"] = serde_json::to_value(found.stored).unwrap_or_default();
        Ok((StatusCode::OK, details))
    }
}
