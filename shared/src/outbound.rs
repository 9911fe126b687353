//! Outbound calls with an agenda (seeds 003 and 004): assistants, the
//! organisations whose monthly usage limits them, and the calls they place.
//!
//! Assistants live in the assistants table (numeric ids, as seed 003's
//! clients send them); organisations in the organisations table, with this
//! month's usage as an atomic counter attribute `usage#YYYY-MM` on the same
//! item; outbound calls beside call records in the calls table
//! (`(call_ref, "outbound")`).

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, TransactWriteItem, Update};
use aws_sdk_dynamodb::Client;
use serde::{Deserialize, Serialize};

use crate::store::StoreError;

const OUTBOUND_ITEM: &str = "outbound";
/// Item of the stats table that hands out assistant ids.
const ASSISTANT_SEQUENCE: &str = "sequence#assistant";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    Twilio,
    Elevenlabs,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assistant {
    pub assistant_id: u64,
    pub org_id: String,
    pub name: String,
    pub provider: Provider,
    /// Caller id for Twilio calls (E.164).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elevenlabs_agent_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elevenlabs_phone_number_id: Option<String>,
    /// `wss://` URL Twilio streams the call's media to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_stream_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_welcome_message: Option<String>,
    pub is_active: bool,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Organisation {
    pub org_id: String,
    pub name: String,
    /// Call seconds included per calendar month (UTC).
    pub monthly_limit_seconds: u64,
    /// Extra seconds bought on top of the plan.
    #[serde(default)]
    pub topup_seconds: u64,
    pub created_at: String,
    pub updated_at: String,
    /// Seconds used in the current month (read-only; filled on read).
    #[serde(default, skip_deserializing)]
    pub usage_this_month_seconds: u64,
}

impl Organisation {
    /// Seed 003: calls are refused once usage reaches the plan plus top-ups.
    pub fn over_limit(&self) -> bool {
        self.usage_this_month_seconds
            >= self
                .monthly_limit_seconds
                .saturating_add(self.topup_seconds)
    }
}

/// One line of a call transcript.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TranscriptLine {
    /// `agent` or `user`.
    pub role: String,
    pub message: String,
    #[serde(default)]
    pub time_in_call_secs: Option<u64>,
}

pub fn transcript_text(lines: &[TranscriptLine]) -> String {
    lines
        .iter()
        .map(|l| {
            let mut role = l.role.clone();
            if let Some(first) = role.get_mut(0..1) {
                first.make_ascii_uppercase();
            }
            format!("{role}: {}", l.message)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusEntry {
    pub status: String,
    pub at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboundCall {
    /// Our id: `oc_...` for Twilio calls (known before Twilio calls back),
    /// the conversation id for ElevenLabs calls.
    #[serde(rename = "call_id")]
    pub call_ref: String,
    pub provider: Provider,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assistant_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_id: Option<String>,
    pub to_number: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agenda: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub welcome_message: Option<String>,
    #[serde(default)]
    pub agent_variables: serde_json::Map<String, serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_sid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<String>,
    /// Provider status (`queued`, `ringing`, `in-progress`, `completed`, `done`, `failed`, ...).
    pub status: String,
    #[serde(default)]
    pub status_rank: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    #[serde(default)]
    pub transcript: Vec<TranscriptLine>,
    #[serde(default)]
    pub status_history: Vec<StatusEntry>,
    pub created_at: String,
}

impl OutboundCall {
    /// The voice-agent session this call belongs to, when the caller passed
    /// `room_name` among the agent variables: its Slack thread gets the summary.
    pub fn room_name(&self) -> Option<&str> {
        self.agent_variables
            .get("room_name")
            .and_then(|v| v.as_str())
    }
}

/// Twilio delivers status callbacks out of order; a status never moves back.
pub fn status_rank(status: &str) -> u32 {
    match status {
        "queued" => 1,
        "initiated" => 2,
        "ringing" => 3,
        "in-progress" | "answered" | "processing" => 4,
        "completed" | "busy" | "failed" | "no-answer" | "canceled" | "done" => 5,
        _ => 0,
    }
}

/// Fields an admin may change on an assistant; absent means unchanged.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssistantPatch {
    pub name: Option<String>,
    pub provider: Option<Provider>,
    pub caller_number: Option<String>,
    pub elevenlabs_agent_id: Option<String>,
    pub elevenlabs_phone_number_id: Option<String>,
    pub agent_stream_url: Option<String>,
    pub default_welcome_message: Option<String>,
    pub is_active: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrganisationPatch {
    pub name: Option<String>,
    pub monthly_limit_seconds: Option<u64>,
    pub topup_seconds: Option<u64>,
}

/// Result of recording a call's final duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageRecorded {
    Counted,
    AlreadyCounted,
}

#[async_trait]
pub trait DirectoryStore: Send + Sync {
    /// Stores a new assistant under the next id, which it returns.
    async fn create_assistant(&self, assistant: Assistant) -> Result<Assistant, StoreError>;
    async fn get_assistant(&self, assistant_id: u64) -> Result<Option<Assistant>, StoreError>;
    async fn update_assistant(
        &self,
        assistant_id: u64,
        patch: &AssistantPatch,
    ) -> Result<Option<Assistant>, StoreError>;
    /// False when the id is taken.
    async fn create_organisation(&self, org: &Organisation) -> Result<bool, StoreError>;
    /// With this month's usage filled in.
    async fn get_organisation(&self, org_id: &str) -> Result<Option<Organisation>, StoreError>;
    async fn update_organisation(
        &self,
        org_id: &str,
        patch: &OrganisationPatch,
    ) -> Result<Option<Organisation>, StoreError>;
}

#[async_trait]
pub trait OutboundCallStore: Send + Sync {
    async fn put(&self, call: &OutboundCall) -> Result<(), StoreError>;
    async fn get(&self, call_ref: &str) -> Result<Option<OutboundCall>, StoreError>;
    /// Moves the status forward only (by rank); returns whether it moved.
    async fn advance_status(
        &self,
        call_ref: &str,
        status: &str,
        reason: Option<&str>,
    ) -> Result<bool, StoreError>;
    async fn set_provider_ids(
        &self,
        call_ref: &str,
        call_sid: Option<&str>,
        conversation_id: Option<&str>,
    ) -> Result<(), StoreError>;
    async fn set_transcript(
        &self,
        call_ref: &str,
        transcript: &[TranscriptLine],
    ) -> Result<(), StoreError>;
    /// Stores the duration and adds it to the organisation's usage, both in
    /// one transaction and only the first time for this call.
    async fn record_duration(
        &self,
        call_ref: &str,
        org_id: Option<&str>,
        seconds: u64,
    ) -> Result<UsageRecorded, StoreError>;
}

pub fn usage_attribute(at: chrono::DateTime<chrono::Utc>) -> String {
    format!("usage#{}", at.format("%Y-%m"))
}

pub struct DynamoDirectoryStore {
    pub client: Client,
    pub assistants_table: String,
    pub organisations_table: String,
    /// Holds the assistant id sequence.
    pub stats_table: String,
}

impl DynamoDirectoryStore {
    pub fn from_env(sdk: &aws_config::SdkConfig) -> Result<Self, crate::config::ConfigError> {
        Ok(Self {
            client: Client::new(sdk),
            assistants_table: crate::config::required("ASSISTANTS_TABLE")?,
            organisations_table: crate::config::required("ORGANISATIONS_TABLE")?,
            stats_table: crate::config::required("STATS_TABLE")?,
        })
    }
}

impl DynamoOutboundCallStore {
    pub fn from_env(sdk: &aws_config::SdkConfig) -> Result<Self, crate::config::ConfigError> {
        Ok(Self {
            client: Client::new(sdk),
            calls_table: crate::config::required("CALLS_TABLE")?,
            organisations_table: crate::config::optional("ORGANISATIONS_TABLE").unwrap_or_default(),
        })
    }
}

fn condition_failed<E: aws_sdk_dynamodb::error::ProvideErrorMetadata>(err: &E) -> bool {
    err.code() == Some("ConditionalCheckFailedException")
}

/// `SET #name = :value` for each present field, plus `updated_at`.
fn patch_update(
    fields: Vec<(&'static str, AttributeValue)>,
) -> (
    String,
    HashMap<String, String>,
    HashMap<String, AttributeValue>,
) {
    let mut names = HashMap::new();
    let mut values = HashMap::new();
    let mut sets = Vec::new();
    for (index, (name, value)) in fields
        .into_iter()
        .chain([("updated_at", AttributeValue::S(crate::time::now_rfc3339()))])
        .enumerate()
    {
        names.insert(format!("#f{index}"), name.to_string());
        values.insert(format!(":v{index}"), value);
        sets.push(format!("#f{index} = :v{index}"));
    }
    (format!("SET {}", sets.join(", ")), names, values)
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_string())
}

#[async_trait]
impl DirectoryStore for DynamoDirectoryStore {
    async fn create_assistant(&self, mut assistant: Assistant) -> Result<Assistant, StoreError> {
        let sequence = self
            .client
            .update_item()
            .table_name(&self.stats_table)
            .key("pk", s(ASSISTANT_SEQUENCE))
            .update_expression("ADD next_id :one")
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await?;
        assistant.assistant_id = sequence
            .attributes
            .and_then(|a| {
                a.get("next_id")
                    .and_then(|v| v.as_n().ok())
                    .and_then(|n| n.parse().ok())
            })
            .ok_or_else(|| StoreError::Malformed("assistant sequence".into()))?;
        self.client
            .put_item()
            .table_name(&self.assistants_table)
            .set_item(Some(serde_dynamo::to_item(&assistant)?))
            .condition_expression("attribute_not_exists(assistant_id)")
            .send()
            .await?;
        Ok(assistant)
    }

    async fn get_assistant(&self, assistant_id: u64) -> Result<Option<Assistant>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.assistants_table)
            .key("assistant_id", AttributeValue::N(assistant_id.to_string()))
            .consistent_read(true)
            .send()
            .await?;
        out.item
            .map(|i| serde_dynamo::from_item(i).map_err(Into::into))
            .transpose()
    }

    async fn update_assistant(
        &self,
        assistant_id: u64,
        patch: &AssistantPatch,
    ) -> Result<Option<Assistant>, StoreError> {
        let mut fields: Vec<(&'static str, AttributeValue)> = Vec::new();
        let text = |name: &'static str,
                    value: &Option<String>,
                    fields: &mut Vec<(&'static str, AttributeValue)>| {
            if let Some(v) = value {
                fields.push((name, s(v)));
            }
        };
        text("name", &patch.name, &mut fields);
        text("caller_number", &patch.caller_number, &mut fields);
        text(
            "elevenlabs_agent_id",
            &patch.elevenlabs_agent_id,
            &mut fields,
        );
        text(
            "elevenlabs_phone_number_id",
            &patch.elevenlabs_phone_number_id,
            &mut fields,
        );
        text("agent_stream_url", &patch.agent_stream_url, &mut fields);
        text(
            "default_welcome_message",
            &patch.default_welcome_message,
            &mut fields,
        );
        if let Some(provider) = patch.provider {
            fields.push(("provider", serde_dynamo::to_attribute_value(provider)?));
        }
        if let Some(active) = patch.is_active {
            fields.push(("is_active", AttributeValue::Bool(active)));
        }
        let (expression, names, values) = patch_update(fields);
        let result = self
            .client
            .update_item()
            .table_name(&self.assistants_table)
            .key("assistant_id", AttributeValue::N(assistant_id.to_string()))
            .update_expression(expression)
            .condition_expression("attribute_exists(assistant_id)")
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(out) => out
                .attributes
                .map(|i| serde_dynamo::from_item(i).map_err(Into::into))
                .transpose(),
            Err(err) if err.as_service_error().is_some_and(condition_failed) => Ok(None),
            Err(err) => Err(err.into()),
        }
    }

    async fn create_organisation(&self, org: &Organisation) -> Result<bool, StoreError> {
        let mut item: HashMap<String, AttributeValue> = serde_dynamo::to_item(org)?;
        item.remove("usage_this_month_seconds");
        let result = self
            .client
            .put_item()
            .table_name(&self.organisations_table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(org_id)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(err) if err.as_service_error().is_some_and(condition_failed) => Ok(false),
            Err(err) => Err(err.into()),
        }
    }

    async fn get_organisation(&self, org_id: &str) -> Result<Option<Organisation>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.organisations_table)
            .key("org_id", s(org_id))
            .consistent_read(true)
            .send()
            .await?;
        let Some(item) = out.item else {
            return Ok(None);
        };
        let usage = item
            .get(&usage_attribute(crate::time::now()))
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let mut org: Organisation = serde_dynamo::from_item(item)?;
        org.usage_this_month_seconds = usage;
        Ok(Some(org))
    }

    async fn update_organisation(
        &self,
        org_id: &str,
        patch: &OrganisationPatch,
    ) -> Result<Option<Organisation>, StoreError> {
        let mut fields: Vec<(&'static str, AttributeValue)> = Vec::new();
        if let Some(name) = &patch.name {
            fields.push(("name", s(name)));
        }
        if let Some(limit) = patch.monthly_limit_seconds {
            fields.push((
                "monthly_limit_seconds",
                AttributeValue::N(limit.to_string()),
            ));
        }
        if let Some(topup) = patch.topup_seconds {
            fields.push(("topup_seconds", AttributeValue::N(topup.to_string())));
        }
        let (expression, names, values) = patch_update(fields);
        let result = self
            .client
            .update_item()
            .table_name(&self.organisations_table)
            .key("org_id", s(org_id))
            .update_expression(expression)
            .condition_expression("attribute_exists(org_id)")
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .send()
            .await;
        match result {
            Ok(_) => self.get_organisation(org_id).await,
            Err(err) if err.as_service_error().is_some_and(condition_failed) => Ok(None),
            Err(err) => Err(err.into()),
        }
    }
}

pub struct DynamoOutboundCallStore {
    pub client: Client,
    pub calls_table: String,
    pub organisations_table: String,
}

impl DynamoOutboundCallStore {
    fn key(&self, call_ref: &str) -> HashMap<String, AttributeValue> {
        HashMap::from([
            ("call_id".to_string(), s(call_ref)),
            ("item".to_string(), s(OUTBOUND_ITEM)),
        ])
    }
}

#[async_trait]
impl OutboundCallStore for DynamoOutboundCallStore {
    async fn put(&self, call: &OutboundCall) -> Result<(), StoreError> {
        let mut item: HashMap<String, AttributeValue> = serde_dynamo::to_item(call)?;
        item.insert("item".into(), s(OUTBOUND_ITEM));
        self.client
            .put_item()
            .table_name(&self.calls_table)
            .set_item(Some(item))
            .send()
            .await?;
        Ok(())
    }

    async fn get(&self, call_ref: &str) -> Result<Option<OutboundCall>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.calls_table)
            .set_key(Some(self.key(call_ref)))
            .consistent_read(true)
            .send()
            .await?;
        out.item
            .map(|i| serde_dynamo::from_item(i).map_err(Into::into))
            .transpose()
    }

    async fn advance_status(
        &self,
        call_ref: &str,
        status: &str,
        reason: Option<&str>,
    ) -> Result<bool, StoreError> {
        let entry = serde_dynamo::to_attribute_value(StatusEntry {
            status: status.to_string(),
            at: crate::time::now_rfc3339(),
        })?;
        let mut expression = "SET #status = :status, status_rank = :rank, \
             status_history = list_append(if_not_exists(status_history, :empty), :entry)"
            .to_string();
        let mut update = self
            .client
            .update_item()
            .table_name(&self.calls_table)
            .set_key(Some(self.key(call_ref)))
            .condition_expression("attribute_exists(call_id) AND status_rank < :rank")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":status", s(status))
            .expression_attribute_values(
                ":rank",
                AttributeValue::N(status_rank(status).to_string()),
            )
            .expression_attribute_values(":empty", AttributeValue::L(vec![]))
            .expression_attribute_values(":entry", AttributeValue::L(vec![entry]));
        if let Some(reason) = reason {
            expression.push_str(", failure_reason = :reason");
            update = update.expression_attribute_values(":reason", s(reason));
        }
        match update.update_expression(expression).send().await {
            Ok(_) => Ok(true),
            Err(err) if err.as_service_error().is_some_and(condition_failed) => Ok(false),
            Err(err) => Err(err.into()),
        }
    }

    async fn set_provider_ids(
        &self,
        call_ref: &str,
        call_sid: Option<&str>,
        conversation_id: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut fields = Vec::new();
        if let Some(sid) = call_sid {
            fields.push(("call_sid", s(sid)));
        }
        if let Some(id) = conversation_id {
            fields.push(("conversation_id", s(id)));
        }
        let (expression, names, values) = patch_update(fields);
        self.client
            .update_item()
            .table_name(&self.calls_table)
            .set_key(Some(self.key(call_ref)))
            .update_expression(expression)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .send()
            .await?;
        Ok(())
    }

    async fn set_transcript(
        &self,
        call_ref: &str,
        transcript: &[TranscriptLine],
    ) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.calls_table)
            .set_key(Some(self.key(call_ref)))
            .update_expression("SET transcript = :t")
            .condition_expression("attribute_exists(call_id)")
            .expression_attribute_values(":t", serde_dynamo::to_attribute_value(transcript)?)
            .send()
            .await?;
        Ok(())
    }

    async fn record_duration(
        &self,
        call_ref: &str,
        org_id: Option<&str>,
        seconds: u64,
    ) -> Result<UsageRecorded, StoreError> {
        let mark = Update::builder()
            .table_name(&self.calls_table)
            .set_key(Some(self.key(call_ref)))
            .update_expression("SET duration_secs = :d, usage_counted = :yes")
            .condition_expression(
                "attribute_exists(call_id) AND attribute_not_exists(usage_counted)",
            )
            .expression_attribute_values(":d", AttributeValue::N(seconds.to_string()))
            .expression_attribute_values(":yes", AttributeValue::Bool(true))
            .build()
            .map_err(|e| StoreError::Dynamo(e.to_string()))?;
        let mut items = vec![TransactWriteItem::builder().update(mark).build()];
        if let Some(org_id) = org_id {
            let usage = Update::builder()
                .table_name(&self.organisations_table)
                .key("org_id", s(org_id))
                .update_expression("ADD #usage :d")
                .expression_attribute_names("#usage", usage_attribute(crate::time::now()))
                .expression_attribute_values(":d", AttributeValue::N(seconds.to_string()))
                .build()
                .map_err(|e| StoreError::Dynamo(e.to_string()))?;
            items.push(TransactWriteItem::builder().update(usage).build());
        }
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
        {
            Ok(_) => Ok(UsageRecorded::Counted),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_transaction_canceled_exception()) =>
            {
                Ok(UsageRecorded::AlreadyCounted)
            }
            Err(err) => Err(err.into()),
        }
    }
}

/// The telephony providers a deployment has credentials for.
pub struct Providers {
    pub twilio: Option<crate::twilio::TwilioClient>,
    /// `TWILIO_PHONE_NUMBER`: caller id when an assistant has none.
    pub twilio_phone_number: Option<String>,
    pub elevenlabs: Option<crate::elevenlabs::ElevenLabsClient>,
    /// Public URL of this API (Twilio calls `/twiml` and `/twilio/status` there).
    pub public_base_url: Option<String>,
}

impl Providers {
    pub fn from_env(http: reqwest::Client) -> Result<Self, crate::config::ConfigError> {
        use crate::config::{base_url_or, optional, optional_secret};
        let twilio = match (
            optional("TWILIO_ACCOUNT_SID"),
            optional_secret("TWILIO_AUTH_TOKEN"),
        ) {
            (Some(account_sid), Some(auth_token)) => Some(crate::twilio::TwilioClient {
                http: http.clone(),
                base_url: base_url_or("TWILIO_API_BASE_URL", "https://api.twilio.com")?,
                account_sid,
                auth_token,
            }),
            _ => None,
        };
        let elevenlabs = optional_secret("ELEVENLABS_API_KEY")
            .map(|api_key| {
                Ok::<_, crate::config::ConfigError>(crate::elevenlabs::ElevenLabsClient {
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
    notifications: &dyn crate::jobs::JobQueue,
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
    let job = crate::jobs::NotificationJob::for_call(
        &call.call_ref,
        crate::jobs::NotificationKind::OutboundCallSummary,
    );
    crate::jobs::send(notifications, &job, std::time::Duration::ZERO)
        .await
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_only_move_forward() {
        assert!(status_rank("ringing") > status_rank("initiated"));
        assert!(status_rank("completed") > status_rank("in-progress"));
        assert_eq!(status_rank("completed"), status_rank("busy"));
        assert_eq!(status_rank("whatever"), 0);
    }

    #[test]
    fn usage_limit_includes_topups() {
        let mut org = Organisation {
            org_id: "o".into(),
            name: "O".into(),
            monthly_limit_seconds: 100,
            topup_seconds: 50,
            created_at: String::new(),
            updated_at: String::new(),
            usage_this_month_seconds: 149,
        };
        assert!(!org.over_limit());
        org.usage_this_month_seconds = 150;
        assert!(org.over_limit());
    }

    #[test]
    fn transcripts_read_as_role_lines() {
        let lines = vec![
            TranscriptLine {
                role: "agent".into(),
                message: "Hi".into(),
                time_in_call_secs: Some(0),
            },
            TranscriptLine {
                role: "user".into(),
                message: "Hello".into(),
                time_in_call_secs: None,
            },
        ];
        assert_eq!(transcript_text(&lines), "Agent: Hi\nUser: Hello");
    }
}
