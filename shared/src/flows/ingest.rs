//! The webhook half of the recording pipeline, shared by the Zapier and the
//! Exotel webhooks: store the call (its record is the delivery's claim),
//! queue its transcription, and only then acknowledge; then complete the
//! record and count, side by side. Three AWS calls one after another.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use serde::Serialize;
use tracing::{info, warn};

use crate::api::ApiError;
use crate::base::mask;
use crate::base::metrics::{self, Metric};
use crate::base::time;
use crate::queue::jobs::{self, JobQueue, TranscriptionJob};
use crate::store::api_keys::{self, ApiKeyStore, KeyPurpose};
use crate::store::calls::{
    self, AgentInfo, CallRecord, CallSource, CallStatus, Claimed, Direction, IntakeStore,
    StatusChange, Take,
};
use crate::store::dedup::{self, Settled};
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
    /// How long one delivery may hold the call id when the Lambda deadline is unknown.
    pub default_lease: Duration,
    /// `SUPPORT_NUMBER`: decides each call's direction.
    pub support_number: Option<String>,
    /// How long transcription may take before the call counts as failed.
    pub transcription_deadline: Duration,
    /// How long a delivery that finds the call in progress waits for the
    /// first one's answer (`DEDUP_WAIT_SECONDS`), within its own deadline.
    pub duplicate_wait: Duration,
}

pub struct Ingestor {
    /// The call records, each its own delivery claim (`store::calls::IntakeStore`).
    pub calls: Arc<dyn IntakeStore>,
    pub stats: Arc<dyn StatsStore>,
    pub transcription_queue: Arc<dyn JobQueue>,
    pub settings: IngestSettings,
}

/// Local tries of the completing update: the job is queued, so losing the
/// answer would make a duplicate within the lease wait, and one after it
/// queue the job again.
const COMPLETE_ATTEMPTS: u32 = 4;

impl Ingestor {
    /// `lease` is how long this delivery may hold the call id: the invocation's remaining time.
    ///
    /// At most three AWS calls one after another: the conditional write that
    /// stores the record and claims the call, the job, and the update that
    /// completes it (with the counter alongside).
    pub async fn ingest(
        &self,
        call: IncomingCall,
        owner: &CallOwner,
        lease: Option<Duration>,
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
        let lease = lease.unwrap_or(self.settings.default_lease);
        let budget = dedup::wait_budget(self.settings.duplicate_wait, lease);
        let record = self.record(&call, owner);
        let org = owner.org_id.as_deref();
        if let Some(reason) = call.skip_reason() {
            return self.record_skipped(&call, record, &reason, budget).await;
        }
        let holder = match calls::claim_or_wait(
            self.calls.as_ref(),
            &record,
            Take::Lease(lease),
            budget,
        )
        .await
        .map_err(unavailable)?
        {
            Claimed::Acquired(holder) => holder,
            Claimed::Handled(saved) => return Ok(self.duplicate(&call.call_id, org, saved).await),
            Claimed::InProgress => {
                info!(call_id = %call.call_id, "concurrent delivery still in progress after waiting");
                return Err(ApiError::InProgress);
            }
            Claimed::Stored => {
                return Err(unavailable(crate::store::StoreError::Dynamo(
                    "a leased claim answered Stored".into(),
                )))
            }
        };
        if let Err(err) = self.queue(&call, &record).await {
            match self.calls.release(&record.call_id, &holder).await {
                Ok(Settled::Done) => {}
                Ok(Settled::Lost) => {
                    warn!(call_id = %call.call_id, "intake lease was taken over before release")
                }
                Err(release_err) => {
                    warn!(call_id = %call.call_id, error = %release_err, "intake lease not released; it expires")
                }
            }
            return Err(err);
        }
        // The job is durable: from here nothing un-acknowledges the delivery.
        let ack = self.acknowledgement(&call.call_id, "Call queued for processing");
        tokio::join!(
            self.complete(&record.call_id, &holder, &ack),
            stats::count(self.stats.as_ref(), Counter::TotalProcessed, org),
        );
        Ok((StatusCode::ACCEPTED, ack))
    }

    /// A call with nothing to transcribe is stored in its final state with
    /// its answer, in one conditional write.
    async fn record_skipped(
        &self,
        call: &IncomingCall,
        mut record: CallRecord,
        reason: &str,
        budget: Duration,
    ) -> Result<(StatusCode, Acknowledgement), ApiError> {
        let now = time::now_rfc3339();
        record.status = CallStatus::Skipped;
        record.processed_at = Some(now.clone());
        record.status_history.push(StatusChange {
            status: CallStatus::Skipped,
            at: now,
            reason: Some(reason.to_string()),
        });
        let ack = self.acknowledgement(&call.call_id, "Call recorded; not transcribed");
        let answer = serde_json::to_value(&ack).unwrap_or_default();
        let org = record.org_id.clone();
        let org = org.as_deref();
        match calls::claim_or_wait(self.calls.as_ref(), &record, Take::Final(&answer), budget)
            .await
            .map_err(unavailable)?
        {
            Claimed::Stored => {
                info!(call_id = %call.call_id, %reason, "call stored without transcription");
                stats::count(self.stats.as_ref(), Counter::TotalProcessed, org).await;
                Ok((StatusCode::ACCEPTED, ack))
            }
            Claimed::Handled(saved) => Ok(self.duplicate(&call.call_id, org, saved).await),
            Claimed::InProgress => {
                info!(call_id = %call.call_id, "concurrent delivery still in progress after waiting");
                Err(ApiError::InProgress)
            }
            Claimed::Acquired(_) => Err(unavailable(crate::store::StoreError::Dynamo(
                "a final record answered Acquired".into(),
            ))),
        }
    }

    /// Saves the answer duplicates get and moves the call to `queued`. The
    /// job is queued and the worker is idempotent, so a failure here does
    /// not un-accept the delivery.
    async fn complete(&self, call_id: &str, owner: &dedup::Owner, ack: &Acknowledgement) {
        let answer = serde_json::to_value(ack).unwrap_or_default();
        let mut attempt = 0;
        loop {
            match self.calls.complete(call_id, owner, &answer).await {
                Ok(Settled::Done) => return,
                Ok(Settled::Lost) => {
                    return warn!(%call_id, "intake lease was taken over before completion")
                }
                Err(err) if attempt + 1 < COMPLETE_ATTEMPTS => {
                    warn!(%call_id, error = %err, attempt, "intake completion failed; retrying");
                    tokio::time::sleep(time::jitter(Duration::from_millis(50 << attempt))).await;
                    attempt += 1;
                }
                Err(err) => return warn!(%call_id, error = %err, "intake answer not saved"),
            }
        }
    }

    /// The record as this delivery reports the call, status `received`.
    fn record(&self, call: &IncomingCall, owner: &CallOwner) -> CallRecord {
        let now = time::now_rfc3339();
        CallRecord {
            call_id: owner.record_key(&call.call_id),
            org_id: owner.org_id.clone(),
            source: call.source,
            from_number: call.from_number.clone(),
            to_number: call.to_number.clone(),
            duration: call.duration,
            recording_url: call.recording_url.as_ref().map(url::Url::to_string),
            timestamp: time::rfc3339(call.timestamp),
            processed_at: None,
            slack_posted: false,
            status: CallStatus::Received,
            call_status: Some(call.call_status.clone()),
            direction: Direction::of(&call.from_number, self.settings.support_number.as_deref()),
            failure_reason: None,
            agent: call.agent.clone(),
            transcript_id: None,
            transcript_parts: 0,
            room_name: call.room_name.clone(),
            status_history: vec![StatusChange {
                status: CallStatus::Received,
                at: now.clone(),
                reason: None,
            }],
            received_at: now,
        }
    }

    /// Queues the call's transcription (of the record's key).
    async fn queue(&self, call: &IncomingCall, record: &CallRecord) -> Result<(), ApiError> {
        let job = TranscriptionJob {
            call_id: record.call_id.clone(),
            org_id: record.org_id.clone(),
            recording_url: call
                .recording_url
                .as_ref()
                .map(url::Url::to_string)
                .unwrap_or_default(),
            source: call.source,
            transcript_id: None,
            checks: 0,
            deadline: time::epoch_secs() + self.settings.transcription_deadline.as_secs() as i64,
            accepted_at: Some(time::epoch_secs()),
        };
        jobs::send(self.transcription_queue.as_ref(), &job, Duration::ZERO)
            .await
            .map_err(|err| {
                warn!(call_id = %call.call_id, error = %err, "transcription job not queued");
                ApiError::Unavailable
            })?;
        metrics::count(Metric::Queued);
        Ok(())
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

    /// The first delivery's answer, marked duplicate; a call handled
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
    pub transcription_queue_url: String,
    pub settings: IngestSettings,
}

/// Exotel's own hosts; others (a bucket's own host, the local fakes) are set per deployment.
pub use crate::providers::recording::DEFAULT_RECORDING_HOSTS;

impl IngestSettings {
    /// `DEDUP_LEASE_SECONDS`, `SUPPORT_NUMBER`, `TRANSCRIPTION_DEADLINE_SECONDS`,
    /// `DEDUP_WAIT_SECONDS` (tables and queues are read in `wiring`).
    pub fn from_env() -> Result<Self, crate::base::config::ConfigError> {
        use crate::base::config::{optional, parsed_or};
        Ok(Self {
            default_lease: Duration::from_secs(parsed_or("DEDUP_LEASE_SECONDS", 30)?),
            support_number: optional("SUPPORT_NUMBER"),
            transcription_deadline: Duration::from_secs(parsed_or(
                "TRANSCRIPTION_DEADLINE_SECONDS",
                3600,
            )?),
            duplicate_wait: Duration::from_secs(parsed_or(
                "DEDUP_WAIT_SECONDS",
                crate::store::dedup::DEFAULT_WAIT.as_secs(),
            )?),
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
    /// The production wiring: DynamoDB stores and the SQS transcription queue.
    pub fn from_config(sdk: &aws_config::SdkConfig, config: &WebhookConfig) -> Self {
        let dynamo = aws_sdk_dynamodb::Client::new(sdk);
        let sqs = aws_sdk_sqs::Client::new(sdk);
        Self {
            calls: Arc::new(crate::store::calls::DynamoCallStore::new(
                dynamo.clone(),
                &config.calls_table,
            )),
            stats: Arc::new(crate::store::stats::DynamoStatsStore::new(
                dynamo,
                &config.stats_table,
            )),
            transcription_queue: Arc::new(crate::queue::jobs::SqsJobQueue::new(
                sqs,
                &config.transcription_queue_url,
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
