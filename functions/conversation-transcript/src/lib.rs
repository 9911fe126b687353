//! `GET /conversations/{conversation_id}/transcript` (seed 004's
//! `get_conversation_transcript`): the transcript as text, from what callops
//! stored or else from ElevenLabs.

use std::sync::Arc;

use http::StatusCode;
use lambda_http::{Request, RequestExt};
use serde::Serialize;
use shared::api::{ApiError, Route};
use shared::providers::elevenlabs::ElevenLabsClient;
use shared::store::api_keys::ApiKeyStore;
use shared::store::outbound_calls::{transcript_text, OutboundCallStore, TranscriptLine};

use shared::wiring::{self, Wiring};

pub struct ConversationTranscript {
    pub api_keys: Arc<dyn ApiKeyStore>,
    pub calls: Arc<dyn OutboundCallStore>,
    pub elevenlabs: Option<ElevenLabsClient>,
}

#[derive(Serialize)]
pub struct TranscriptBody {
    conversation_id: String,
    transcript: String,
    lines: Vec<TranscriptLine>,
}

impl ConversationTranscript {
    pub async fn from_env() -> Result<Self, lambda_http::Error> {
        let aws = Wiring::load().await;
        Ok(Self {
            api_keys: aws.api_keys()?,
            calls: aws.outbound_calls()?,
            elevenlabs: wiring::elevenlabs()?,
        })
    }
}

impl Route for ConversationTranscript {
    type Body = TranscriptBody;

    async fn process(&self, request: Request) -> Result<(StatusCode, TranscriptBody), ApiError> {
        shared::api::access::authenticate(self.api_keys.as_ref(), request.headers()).await?;
        let id = request
            .path_parameters()
            .first("conversation_id")
            .map(str::to_string)
            .filter(|id| {
                !id.is_empty()
                    && id.len() <= 128
                    && id
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            })
            .ok_or_else(|| ApiError::NotFound("Conversation not found".into()))?;
        let stored = self
            .calls
            .get(&id)
            .await
            .map_err(|err| {
                tracing::error!(error = %err, "store unavailable");
                ApiError::Unavailable
            })?
            .map(|c| c.transcript)
            .filter(|t| !t.is_empty());
        let lines = match (stored, &self.elevenlabs) {
            (Some(lines), _) => lines,
            (None, Some(client)) => client
                .conversation(&id)
                .await
                .map_err(|err| {
                    tracing::warn!(error = %err, "ElevenLabs conversation not readable");
                    ApiError::Provider {
                        detail: "ElevenLabs did not return the conversation; retry shortly".into(),
                    }
                })?
                .map(|c| c.transcript)
                .unwrap_or_default(),
            (None, None) => Vec::new(),
        };
        if lines.is_empty() {
            return Err(ApiError::NotFound("Transcript not available".into()));
        }
        Ok((
            StatusCode::OK,
            TranscriptBody {
                conversation_id: id,
                transcript: transcript_text(&lines),
                lines,
            },
        ))
    }
}
