//! `GET /call/{call_id}`: one call with its transcript and status history.
//! Transcripts are personal data, so this route needs `API_TOKEN`.

use std::sync::Arc;

use http::StatusCode;
use lambda_http::{Request, RequestExt};
use serde::Serialize;
use shared::api::{self, ApiError, Route};
use shared::base::config::{self, Secret};
use shared::flows::ingest::validate_call_id;
use shared::store::calls::{AgentInfo, CallStatus, CallStore, Direction, StatusChange, Utterance};
use shared::wiring::Wiring;

pub struct CallGet {
    pub api_token: Secret,
    pub calls: Arc<dyn CallStore>,
}

/// Seed 001's `processed_calls` columns plus what the pipeline learned.
#[derive(Serialize)]
pub struct CallDetails {
    call_id: String,
    from_number: String,
    to_number: String,
    duration: Option<u64>,
    timestamp: String,
    processed_at: Option<String>,
    transcription_text: Option<String>,
    slack_posted: bool,
    status: CallStatus,
    direction: Direction,
    call_status: Option<String>,
    failure_reason: Option<String>,
    recording_url: Option<String>,
    #[serde(flatten)]
    agent: AgentInfo,
    tone: Option<&'static str>,
    utterances: Vec<Utterance>,
    status_history: Vec<StatusChange>,
}

impl CallGet {
    pub async fn from_env() -> Result<Self, lambda_http::Error> {
        let aws = Wiring::load().await;
        Ok(Self {
            api_token: config::required_secret("API_TOKEN")?,
            calls: aws.calls()?,
        })
    }
}

impl Route for CallGet {
    type Body = CallDetails;

    async fn process(&self, request: Request) -> Result<(StatusCode, CallDetails), ApiError> {
        api::require_bearer(request.headers(), &self.api_token)?;
        let params = request.path_parameters();
        let call_id = validate_call_id(params.first("call_id"), "call_id")?;
        let unavailable = |err: shared::store::StoreError| {
            tracing::error!(error = %err, "call store unavailable");
            ApiError::Unavailable
        };
        let record = self
            .calls
            .get(&call_id)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| ApiError::NotFound(format!("Call {call_id} not found")))?;
        let transcript = if record.transcript_parts > 0 {
            self.calls
                .load_transcript(&call_id)
                .await
                .map_err(unavailable)?
        } else {
            None
        };
        Ok((
            StatusCode::OK,
            CallDetails {
                call_id: record.call_id,
                from_number: record.from_number,
                to_number: record.to_number,
                duration: record.duration,
                timestamp: record.timestamp,
                processed_at: record.processed_at,
                transcription_text: transcript.as_ref().map(|t| t.text.clone()),
                slack_posted: record.slack_posted,
                status: record.status,
                direction: record.direction,
                call_status: record.call_status,
                failure_reason: record.failure_reason,
                recording_url: record.recording_url,
                agent: record.agent,
                tone: transcript.as_ref().map(|t| t.tone.label()),
                utterances: transcript.map(|t| t.utterances).unwrap_or_default(),
                status_history: record.status_history,
            },
        ))
    }
}
