//! Placing and ending outbound calls (seeds 003 and 004): the telephony
//! providers a deployment has, and the one way every source ends a call.

use crate::api::ApiError;
use crate::providers::elevenlabs::ElevenLabsClient;
use crate::providers::twilio::{ProviderError, TwilioClient};
use crate::queue::jobs::{self, JobQueue, NotificationJob, NotificationKind};
use crate::store::outbound_calls::{OutboundCall, OutboundCallStore, TranscriptLine};

/// The telephony providers a deployment has credentials for.
pub struct Providers {
    pub twilio: Option<TwilioClient>,
    /// `TWILIO_PHONE_NUMBER`: caller id when an assistant has none.
    pub twilio_phone_number: Option<String>,
    pub elevenlabs: Option<ElevenLabsClient>,
    /// Public URL of this API (Twilio calls `/twiml` and `/twilio/status` there).
    pub public_base_url: Option<String>,
}

impl Providers {
    pub fn from_env(http: reqwest::Client) -> Result<Self, crate::base::config::ConfigError> {
        use crate::base::config::{base_url_or, optional, optional_secret};
        let twilio = match (
            optional("TWILIO_ACCOUNT_SID"),
            optional_secret("TWILIO_AUTH_TOKEN"),
        ) {
            (Some(account_sid), Some(auth_token)) => Some(TwilioClient {
                http: http.clone(),
                base_url: base_url_or("TWILIO_API_BASE_URL", "https://api.twilio.com")?,
                account_sid,
                auth_token,
            }),
            _ => None,
        };
        let elevenlabs = optional_secret("ELEVENLABS_API_KEY")
            .map(|api_key| {
                Ok::<_, crate::base::config::ConfigError>(ElevenLabsClient {
                    http: http.clone(),
                    base_url: base_url_or("ELEVENLABS_BASE_URL", "https://api.elevenlabs.io")?,
                    api_key,
                })
            })
            .transpose()?;
        Ok(Self {
            twilio,
            twilio_phone_number: optional("TWILIO_PHONE_NUMBER"),
            elevenlabs,
            public_base_url: optional("PUBLIC_BASE_URL")
                .map(|u| u.trim_end_matches('/').to_string()),
        })
    }
}

/// A provider HTTP client with the timeouts every provider call uses.
pub fn provider_http() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(3))
        .timeout(std::time::Duration::from_secs(8))
        .build()
}

/// A provider's answer to placing a call: its own refusal text is passed on;
/// an outage is logged and answered with `who` and a hint to retry.
pub fn call_not_placed(err: ProviderError, who: &str) -> ApiError {
    match err {
        ProviderError::Refused(detail) => ApiError::Provider { detail },
        ProviderError::Unavailable(reason) => {
            tracing::warn!(%reason, provider = who, "provider unavailable");
            ApiError::Provider {
                detail: format!("{who} is unavailable; the call was not placed. Retry shortly."),
            }
        }
    }
}

/// How an outbound call ended, from whichever source learned it first
/// (status callback, monitor, post-call webhook).
pub struct CallEnding<'a> {
    pub status: &'a str,
    pub failure_reason: Option<&'a str>,
    pub transcript: &'a [TranscriptLine],
    pub duration_secs: Option<u64>,
}

/// Stores the ending (each part idempotent), counts usage once and queues
/// the summary notification (delivered once per call whatever the source).
pub async fn finish_call(
    calls: &dyn OutboundCallStore,
    notifications: &dyn JobQueue,
    call: &OutboundCall,
    ending: CallEnding<'_>,
) -> Result<(), String> {
    if !ending.transcript.is_empty() {
        calls
            .set_transcript(&call.call_ref, ending.transcript)
            .await
            .map_err(|e| e.to_string())?;
    }
    calls
        .advance_status(&call.call_ref, ending.status, ending.failure_reason)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(seconds) = ending.duration_secs {
        calls
            .record_duration(&call.call_ref, call.org_id.as_deref(), seconds)
            .await
            .map_err(|e| e.to_string())?;
    }
    let job = NotificationJob::for_call(&call.call_ref, NotificationKind::OutboundCallSummary);
    jobs::send(notifications, &job, std::time::Duration::ZERO)
        .await
        .map_err(|e| e.to_string())
}
