//! The webhook half of the recording pipeline, shared by the Zapier and the
//! Exotel webhooks: one conditional write stores the call record with the
//! answer duplicates get, and the delivery is acknowledged. The record is
//! the job: the calls table's stream hands it to `calls-stream`
//! (`flows::call_stream`), which queues the transcription and counts it.
//! A duplicate's refused write returns the first record, and the duplicate
//! is answered from it at once.

use std::sync::Arc;

use http::StatusCode;
use serde::Serialize;
use tracing::{info, warn};

use crate::api::ApiError;
use crate::base::mask;
use crate::base::metrics::{self, Metric};
use crate::base::time;
use crate::store::api_keys::{self, ApiKeyStore, KeyPurpose};
use crate::store::calls::{
    self, AgentInfo, CallRecord, CallSource, CallStatus, Direction, Intake, IntakeStore,
    StatusChange,
};
use crate::store::stats::{self, Counter, StatsStore};

/// A call as a webhook reported it, already validated.
#[derive(Debug, Clone, PartialEq)]
pub struct IncomingCall {
    pub call_id: String,
    pub source: CallSource,
    pub from_number: String,
    pub to_number: String,
    pub duration: Option<u64>,
    /// Present and allowed, or absent.
    pub recording_url: Option<url::Url>,
    pub timestamp: chrono::DateTime<chrono::Utc>,
    /// The provider's status (`completed`, `busy`, ...).
    pub call_status: String,
    pub agent: AgentInfo,
    /// The voice-agent session this call belongs to, if the sender knows it.
    pub room_name: Option<String>,
}

impl IncomingCall {
    /// Only completed calls with a recording are worth transcribing.
    pub fn skip_reason(&self) -> Option<String> {
        if !self.call_status.eq_ignore_ascii_case("completed") {
            Some(format!(
                "call status is {}; nothing to transcribe",
                self.call_status
            ))
        } else if self.recording_url.is_none() {
            Some("call has no recording".to_string())
        } else {
            None
        }
    }
}

/// Whose call a delivery is, from the token that delivered it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallOwner {
    /// The organisation the call belongs to; none for a deployment token
    /// without a default organisation (`INBOUND_ORG_ID`).
    pub org_id: Option<String>,
    /// Keyed in the organisation's own space ([`calls::scoped_call_id`]): an
    /// organisation's own token. The default organisation keeps bare call ids.
    pub scoped: bool,
}

impl CallOwner {
    /// The deployment's token: the default organisation, bare call ids.
    pub fn default_org(default_org: Option<&str>) -> Self {
        Self {
            org_id: default_org.map(str::to_string),
            scoped: false,
        }
    }

    /// An organisation's own token. The default organisation's token keeps
    /// the bare ids, so its calls dedup with those `WEBHOOK_TOKEN` delivers.
    pub fn organisation(org_id: &str, default_org: Option<&str>) -> Self {
        Self {
            org_id: Some(org_id.to_string()),
            scoped: default_org != Some(org_id),
        }
    }

    /// The key of `call_id`'s record for this owner.
    pub fn record_key(&self, call_id: &str) -> String {
        match (&self.org_id, self.scoped) {
            (Some(org), true) => calls::scoped_call_id(org, call_id),
            _ => call_id.to_string(),
        }
    }
}

/// The seed's acknowledgement, plus `duplicate` on replays.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Acknowledgement {
    pub success: bool,
    pub message: String,
    pub call_id: String,
    pub timestamp: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
}

#[derive(Debug, Clone)]
pub struct IngestSettings {
    /// `SUPPORT_NUMBER`: decides each call's direction.
    pub support_number: Option<String>,
}

pub struct Ingestor {
    /// The call records (`store::calls::IntakeStore`).
    pub calls: Arc<dyn IntakeStore>,
    /// Only duplicates are counted here; new calls are counted by the
    /// stream's consumer, once per new record.
    pub stats: Arc<dyn StatsStore>,
    pub settings: IngestSettings,
}

impl Ingestor {
    /// One AWS call for a new call: the conditional write of its record.
    /// A duplicate adds its counter.
    pub async fn ingest(
        &self,
        call: IncomingCall,
        owner: &CallOwner,
    ) -> Result<(StatusCode, Acknowledgement), ApiError> {
        info!(
            call_id = %call.call_id,
            org_id = owner.org_id.as_deref().unwrap_or("-"),
            from = %mask::phone(&call.from_number),
            to = %mask::phone(&call.to_number),
            status = %call.call_status,
            "call delivery received"
        );
        metrics::count(Metric::Received);
        let (record, ack) = match call.skip_reason() {
            Some(reason) => (
                self.record(&call, owner, CallStatus::Skipped, Some(&reason)),
                self.acknowledgement(&call.call_id, "Call recorded; not transcribed"),
            ),
            None => (
                self.record(&call, owner, CallStatus::Queued, None),
                self.acknowledgement(&call.call_id, "Call queued for processing"),
            ),
        };
        let answer = serde_json::to_value(&ack).unwrap_or_default();
        match self
            .calls
            .store(&record, &answer)
            .await
            .map_err(unavailable)?
        {
            Intake::Stored => {
                info!(call_id = %call.call_id, status = record.status.as_str(), "call stored");
                Ok((StatusCode::ACCEPTED, ack))
            }
            Intake::Duplicate(saved) => Ok(self
                .duplicate(&call.call_id, owner.org_id.as_deref(), saved)
                .await),
        }
    }

    /// The record as this delivery reports the call, already in the state
    /// the intake leaves it: `queued` (the stream starts its transcription)
    /// or `skipped` with the reason.
    fn record(
        &self,
        call: &IncomingCall,
        owner: &CallOwner,
        status: CallStatus,
        reason: Option<&str>,
    ) -> CallRecord {
        let now = time::now_rfc3339();
        let received = StatusChange {
            status: CallStatus::Received,
            at: now.clone(),
            reason: None,
        };
        let next = StatusChange {
            status,
            at: now.clone(),
            reason: reason.map(str::to_string),
        };
        CallRecord {
            call_id: owner.record_key(&call.call_id),
            org_id: owner.org_id.clone(),
            source: call.source,
            from_number: call.from_number.clone(),
            to_number: call.to_number.clone(),
            duration: call.duration,
            recording_url: call.recording_url.as_ref().map(url::Url::to_string),
            timestamp: time::rfc3339(call.timestamp),
            processed_at: (status == CallStatus::Skipped).then(|| now.clone()),
            slack_posted: false,
            status,
            call_status: Some(call.call_status.clone()),
            direction: Direction::of(&call.from_number, self.settings.support_number.as_deref()),
            failure_reason: None,
            agent: call.agent.clone(),
            transcript_id: None,
            transcript_parts: 0,
            room_name: call.room_name.clone(),
            status_history: vec![received, next],
            received_at: now,
        }
    }

    fn acknowledgement(&self, call_id: &str, message: &str) -> Acknowledgement {
        Acknowledgement {
            success: true,
            message: message.to_string(),
            call_id: call_id.to_string(),
            timestamp: time::now_rfc3339(),
            duplicate: false,
        }
    }

    /// The first delivery's answer, marked duplicate; a call stored
    /// without a saved answer is "already processed".
    async fn duplicate(
        &self,
        call_id: &str,
        org: Option<&str>,
        saved: Option<serde_json::Value>,
    ) -> (StatusCode, Acknowledgement) {
        info!(call_id = %call_id, "duplicate delivery answered from the first one");
        metrics::count(Metric::Duplicate);
        stats::count(self.stats.as_ref(), Counter::Duplicates, org).await;
        let mut ack: Acknowledgement = saved
            .and_then(|saved| serde_json::from_value(saved).ok())
            .unwrap_or_else(|| self.acknowledgement(call_id, "Call already processed"));
        ack.duplicate = true;
        (StatusCode::OK, ack)
    }
}

fn unavailable(err: crate::store::StoreError) -> ApiError {
    warn!(error = %err, "store unavailable");
    ApiError::Unavailable
}

/// Validates a call id: the dedup key and the `/call/{id}` path segment.
pub fn validate_call_id(raw: Option<&str>, field: &str) -> Result<String, ApiError> {
    let id = raw
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::unprocessable("missing_field", format!("{field} is required")))?;
    let valid = id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !valid {
        return Err(ApiError::unprocessable(
            "invalid_call_id",
            format!("{field} must be 1-128 letters, digits, '-', '_' or '.'"),
        ));
    }
    Ok(id.to_string())
}

/// Validates a phone number field, which may be required or optional.
pub fn validate_phone(raw: Option<&str>, field: &str, required: bool) -> Result<String, ApiError> {
    match raw.map(str::trim).filter(|s| !s.is_empty()) {
        None if required => Err(ApiError::unprocessable(
            "missing_field",
            format!("{field} is required"),
        )),
        None => Ok(String::new()),
        Some(number) if crate::base::phone::is_plausible(number) => Ok(number.to_string()),
        Some(_) => Err(ApiError::unprocessable(
            "invalid_phone_number",
            format!("{field} is not a valid phone number"),
        )),
    }
}

/// Who may deliver calls: the deployment's `WEBHOOK_TOKEN` (the default
/// organisation's, `INBOUND_ORG_ID`) or an organisation's own token
/// (`store::webhook_tokens`), each compared in constant time.
pub struct WebhookAccess {
    pub deployment_token: crate::base::config::Secret,
    /// Where organisations' tokens are kept (the API keys table).
    pub tokens: Arc<dyn ApiKeyStore>,
    /// `INBOUND_ORG_ID`.
    pub default_org: Option<String>,
}

impl WebhookAccess {
    /// The owner of the calls `presented` delivers; 401 for anything but a
    /// live webhook token (an API key is not one).
    pub async fn owner(&self, presented: &str) -> Result<CallOwner, ApiError> {
        let presented = presented.trim();
        if crate::api::credential_matches(presented, &self.deployment_token) {
            return Ok(CallOwner::default_org(self.default_org.as_deref()));
        }
        let id = api_keys::id_of(KeyPurpose::Webhook, presented).ok_or(ApiError::Unauthorized)?;
        let record = self
            .tokens
            .find(id)
            .await
            .map_err(|err| {
                warn!(error = %err, "webhook token store unavailable");
                ApiError::Unavailable
            })?
            .ok_or(ApiError::Unauthorized)?;
        if !api_keys::accepts(&record, presented, KeyPurpose::Webhook) {
            return Err(ApiError::Unauthorized);
        }
        let org_id = record.org_id.as_deref().ok_or(ApiError::Unauthorized)?;
        Ok(CallOwner::organisation(org_id, self.default_org.as_deref()))
    }
}

/// Configuration both webhooks share.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// `WEBHOOK_TOKEN`: Zapier sends it as a bearer token, Exotel in `?token=`.
    pub webhook_token: crate::base::config::Secret,
    /// `INBOUND_ORG_ID`: the organisation `WEBHOOK_TOKEN`'s calls belong to.
    pub default_org: Option<String>,
    /// `API_KEYS_TABLE`: organisations' webhook tokens.
    pub api_keys_table: String,
    pub recording_hosts: crate::providers::recording::HostAllowList,
    pub calls_table: String,
    pub stats_table: String,
    pub settings: IngestSettings,
}

/// Exotel's own hosts; others (a bucket's own host, the local fakes) are set per deployment.
pub use crate::providers::recording::DEFAULT_RECORDING_HOSTS;

impl IngestSettings {
    /// `SUPPORT_NUMBER` (tables are read in `wiring`).
    pub fn from_env() -> Result<Self, crate::base::config::ConfigError> {
        Ok(Self {
            support_number: crate::base::config::optional("SUPPORT_NUMBER"),
        })
    }
}

impl WebhookAccess {
    /// The deployment's token and the API keys table, from the webhooks' configuration.
    pub fn from_config(sdk: &aws_config::SdkConfig, config: &WebhookConfig) -> Self {
        Self {
            deployment_token: config.webhook_token.clone(),
            tokens: Arc::new(crate::store::api_keys::DynamoApiKeyStore::new(
                aws_sdk_dynamodb::Client::new(sdk),
                &config.api_keys_table,
            )),
            default_org: config.default_org.clone(),
        }
    }
}

impl Ingestor {
    /// The production wiring: the DynamoDB call and stats stores.
    pub fn from_config(sdk: &aws_config::SdkConfig, config: &WebhookConfig) -> Self {
        let dynamo = aws_sdk_dynamodb::Client::new(sdk);
        Self {
            calls: Arc::new(crate::store::calls::DynamoCallStore::new(
                dynamo.clone(),
                &config.calls_table,
            )),
            stats: Arc::new(crate::store::stats::DynamoStatsStore::new(
                dynamo,
                &config.stats_table,
            )),
            settings: config.settings.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_other_organisations_tokens_scope_the_key() {
        let deployment = CallOwner::default_org(Some("main"));
        assert_eq!(deployment.org_id.as_deref(), Some("main"));
        assert_eq!(deployment.record_key("CA1"), "CA1");
        assert_eq!(CallOwner::default_org(None).record_key("CA1"), "CA1");
        // The default organisation's own token shares the deployment's keys.
        assert_eq!(
            CallOwner::organisation("main", Some("main")).record_key("CA1"),
            "CA1"
        );
        let other = CallOwner::organisation("acme", Some("main"));
        assert_eq!(other.record_key("CA1"), "org#acme#CA1");
        assert_eq!(
            CallOwner::organisation("acme", None).record_key("CA1"),
            "org#acme#CA1"
        );
    }

    #[test]
    fn call_ids_are_validated() {
        assert_eq!(
            validate_call_id(Some(" CA12_a-b.c "), "call_id").unwrap(),
            "CA12_a-b.c"
        );
        assert_eq!(
            validate_call_id(None, "call_id").unwrap_err().code(),
            "missing_field"
        );
        assert_eq!(
            validate_call_id(Some("  "), "call_id").unwrap_err().code(),
            "missing_field"
        );
        assert_eq!(
            validate_call_id(Some("a/b"), "call_id").unwrap_err().code(),
            "invalid_call_id"
        );
        assert_eq!(
            validate_call_id(Some(&"x".repeat(129)), "call_id")
                .unwrap_err()
                .code(),
            "invalid_call_id"
        );
    }

    #[test]
    fn phones_are_validated() {
        assert_eq!(
            validate_phone(Some("+919876543210"), "from_number", true).unwrap(),
            "+919876543210"
        );
        assert_eq!(validate_phone(None, "From", false).unwrap(), "");
        assert_eq!(
            validate_phone(None, "from_number", true)
                .unwrap_err()
                .code(),
            "missing_field"
        );
        assert_eq!(
            validate_phone(Some("call me"), "from_number", true)
                .unwrap_err()
                .code(),
            "invalid_phone_number"
        );
    }

    #[test]
    fn only_completed_calls_with_recordings_are_transcribed() {
        let mut call = IncomingCall {
            call_id: "c".into(),
            source: CallSource::Exotel,
            from_number: String::new(),
            to_number: String::new(),
            duration: None,
            recording_url: Some(url::Url::parse("https://api.exotel.com/r.mp3").unwrap()),
            timestamp: chrono::Utc::now(),
            call_status: "completed".into(),
            agent: AgentInfo::default(),
            room_name: None,
        };
        assert_eq!(call.skip_reason(), None);
        call.call_status = "busy".into();
        assert!(call.skip_reason().unwrap().contains("busy"));
        call.call_status = "completed".into();
        call.recording_url = None;
        assert_eq!(call.skip_reason().unwrap(), "call has no recording");
    }
}
