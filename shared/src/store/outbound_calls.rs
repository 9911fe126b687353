//! Outbound call records (seeds 003 and 004), kept beside call records in
//! the calls table as `(call_id, "outbound")`.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, TransactWriteItem, Update};
use aws_sdk_dynamodb::Client;
use serde::{Deserialize, Serialize};

use super::directory::{usage_attribute, Provider};
use super::{condition_failed, patch_update, s, StoreError};

const OUTBOUND_ITEM: &str = "outbound";

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
    /// A call just placed (status `initiated`), with nothing else known yet.
    pub fn initiated(call_ref: &str, provider: Provider, to_number: &str) -> Self {
        Self {
            call_ref: call_ref.to_string(),
            provider,
            assistant_id: None,
            org_id: None,
            to_number: to_number.to_string(),
            from_number: None,
            agenda: None,
            welcome_message: None,
            agent_variables: serde_json::Map::new(),
            call_sid: None,
            conversation_id: None,
            status: "initiated".into(),
            status_rank: status_rank("initiated"),
            duration_secs: None,
            failure_reason: None,
            transcript: Vec::new(),
            status_history: Vec::new(),
            created_at: crate::base::time::now_rfc3339(),
        }
    }

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

/// Result of recording a call's final duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageRecorded {
    Counted,
    AlreadyCounted,
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

impl DynamoOutboundCallStore {
    pub fn from_env(sdk: &aws_config::SdkConfig) -> Result<Self, crate::base::config::ConfigError> {
        Ok(Self {
            client: Client::new(sdk),
            calls_table: crate::base::config::required("CALLS_TABLE")?,
            organisations_table: crate::base::config::optional("ORGANISATIONS_TABLE")
                .unwrap_or_default(),
        })
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
            at: crate::base::time::now_rfc3339(),
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
                .expression_attribute_names("#usage", usage_attribute(crate::base::time::now()))
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
