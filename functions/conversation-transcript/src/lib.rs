//! `GET /conversations/{conversation_id}/transcript` (seed 004's
//! `get_conversation_transcript`): the transcript as text, from what callops
//! stored or else from ElevenLabs.

use http::StatusCode;
use lambda_http::Request;
use serde::Serialize;
use shared::api::{ApiError, Route};
use shared::flows::conversations::ConversationLookup;
use shared::store::outbound_calls::{transcript_text, TranscriptLine};
use shared::wiring::Wiring;

pub struct ConversationTranscript {
    pub lookup: ConversationLookup,
}

#[derive(Serialize)]
pub struct TranscriptBody {
    conversation_id: String,
    transcript: String,
    lines: Vec<TranscriptLine>,
}

impl ConversationTranscript {
    pub async fn from_env() -> Result<Self, lambda_http::Error> {
        let lookup = Wiring::load().await.conversation_lookup()?;
        Ok(Self { lookup })
    }
}

impl Route for ConversationTranscript {
    type Body = TranscriptBody;

    async fn process(&self, request: Request) -> Result<(StatusCode, TranscriptBody), ApiError> {
        let found = self.lookup.find(&request).await?;
        let lines = match found.stored.transcript {
            stored if !stored.is_empty() => stored,
            _ => self
                .lookup
                .live(&found)
                .await?
                .map(|c| c.transcript)
                .unwrap_or_default(),
        };
        if lines.is_empty() {
            return Err(ApiError::NotFound("Transcript not available".into()));
        }
        Ok((
            StatusCode::OK,
            TranscriptBody {
                conversation_id: found.conversation_id,
                transcript: transcript_text(&lines),
                lines,
            },
        ))
    }
}
