//! `GET /call/{call_id}`: one call with its transcript and status history.
//! Transcripts are personal data, so this route needs `API_TOKEN` (every
//! call of the deployment's own token; `?org_id=` reads one an organisation's
//! token delivered) or an organisation's API key (its own calls only;
//! another organisation's is 404, like a call that does not exist).

use std::sync::Arc;

use http::StatusCode;
use lambda_http::{Request, RequestExt};
use serde::Serialize;
use shared::api::access::{self, Tenant};
use shared::api::{self, ApiError, Route};
use shared::base::config::{self, Secret};
use shared::flows::ingest::{validate_call_id, CallOwner};
use shared::store::api_keys::ApiKeyStore;
use shared::store::calls::{AgentInfo, CallStatus, CallStore, Direction, StatusChange, Utterance};
use shared::wiring::Wiring;

pub struct CallGet {
    pub api_token: Secret,
    /// Organisations' API keys.
    pub api_keys: Arc<dyn ApiKeyStore>,
    /// `INBOUND_ORG_ID`: whose calls keep their bare ids.
    pub default_org: Option<String>,
    pub calls: Arc<dyn CallStore>,
}

/// Who is reading.
enum Reader {
    /// `API_TOKEN`: the deployment's calls, or one organisation's (`?org_id=`).
    Deployment {
        org_id: Option<String>,
    },
    Organisation(Tenant),
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
            api_keys: aws.api_keys()?,
            default_org: config::optional("INBOUND_ORG_ID"),
            calls: aws.calls()?,
        })
    }
}

impl CallGet {
    /// `API_TOKEN` as a bearer token, else an organisation's API key.
    async fn reader(&self, request: &Request) -> Result<Reader, ApiError> {
        let bearer = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if bearer.is_some_and(|token| api::credential_matches(token.trim(), &self.api_token)) {
            let org_id = request
                .query_string_parameters()
                .first("org_id")
                .map(|org| {
                    access::valid_org_id(org)
                        .then(|| org.to_string())
                        .ok_or_else(|| {
                            ApiError::unprocessable(
                                "invalid_org_id",
                                "org_id must be 1-64 letters, digits, '-' or '_'",
                            )
                        })
                })
                .transpose()?;
            return Ok(Reader::Deployment { org_id });
        }
        Ok(Reader::Organisation(
            access::authenticate_tenant(self.api_keys.as_ref(), request.headers()).await?,
        ))
    }
}

impl Route for CallGet {
    type Body = CallDetails;

    async fn process(&self, request: Request) -> Result<(StatusCode, CallDetails), ApiError> {
        let reader = self.reader(&request).await?;
        let params = request.path_parameters();
        let call_id = validate_call_id(params.first("call_id"), "call_id")?;
        let unavailable = |err: shared::store::StoreError| {
            tracing::error!(error = %err, "call store unavailable");
            ApiError::Unavailable
        };
        let (key, org) = match &reader {
            Reader::Deployment { org_id: None } => (call_id.clone(), None),
            Reader::Deployment { org_id: Some(org) } => (
                CallOwner::organisation(org, self.default_org.as_deref()).record_key(&call_id),
                Some(org.as_str()),
            ),
            Reader::Organisation(tenant) => (
                CallOwner::organisation(&tenant.org_id, self.default_org.as_deref())
                    .record_key(&call_id),
                Some(tenant.org_id.as_str()),
            ),
        };
        let record = self
            .calls
            .get(&key)
            .await
            .map_err(unavailable)?
            // Another organisation's call is as absent as a missing one.
            .filter(|record| org.is_none() || record.org_id.as_deref() == org)
            .ok_or_else(|| ApiError::NotFound(format!("Call {call_id} not found")))?;
        let transcript = if record.transcript_parts > 0 {
            self.calls
                .load_transcript(&record.call_id)
                .await
                .map_err(unavailable)?
        } else {
            None
        };
        Ok((
            StatusCode::OK,
            CallDetails {
                call_id: record.reported_call_id().to_string(),
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
