//! Outbound call records (seeds 003 and 004), kept beside call records in
//! the calls table as `(call_id, "outbound")`.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, CancellationReason, ReturnValuesOnConditionCheckFailure, TransactWriteItem,
    Update,
};
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
            // The cancellation reason then carries the old item, so "already
            // counted" can be told from "no such call".
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
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
        let mut attempt = 0;
        loop {
            attempt += 1;
            let outcome = match self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .send()
                .await
            {
                Ok(_) => return Ok(UsageRecorded::Counted),
                Err(err) => match err.as_service_error() {
                    Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) => {
                        classify_cancellation(cancelled.cancellation_reasons())
                    }
                    Some(other) if other.code().is_some_and(retryable_code) => {
                        Cancelled::Retry(other.code().unwrap_or_default().to_string())
                    }
                    _ => return Err(err.into()),
                },
            };
            match outcome {
                Cancelled::AlreadyCounted => return Ok(UsageRecorded::AlreadyCounted),
                Cancelled::Fail(reason) => {
                    return Err(StoreError::Dynamo(format!(
                        "usage for call {call_ref} not recorded: {reason}"
                    )))
                }
                Cancelled::Retry(reason) if attempt >= USAGE_ATTEMPTS => {
                    return Err(StoreError::Dynamo(format!(
                        "usage for call {call_ref} not recorded after {attempt} attempts: {reason}"
                    )))
                }
                Cancelled::Retry(reason) => {
                    tracing::info!(%call_ref, attempt, %reason, "usage transaction cancelled; retrying");
                    tokio::time::sleep(usage_backoff(attempt)).await;
                }
            }
        }
    }
}

/// Tries of the usage transaction before the caller's own retry (SQS,
/// Twilio) takes over; the conditional mark makes every try idempotent.
const USAGE_ATTEMPTS: u32 = 6;

/// Exponential from 20 ms, capped at 500 ms, with full jitter so calls of
/// one organisation that collided do not collide again in step.
fn usage_backoff(attempt: u32) -> std::time::Duration {
    let ceiling = (20u64 << attempt.saturating_sub(1).min(10)).min(500);
    let jitter = (uuid::Uuid::new_v4().as_u128() % u128::from(ceiling + 1)) as u64;
    std::time::Duration::from_millis(jitter.max(1))
}

/// Error and reason codes that say "busy, try again", not "no".
fn retryable_code(code: &str) -> bool {
    matches!(
        code,
        "TransactionConflict"
            | "TransactionConflictException"
            | "ThrottlingError"
            | "ThrottlingException"
            | "ProvisionedThroughputExceeded"
            | "ProvisionedThroughputExceededException"
            | "RequestLimitExceeded"
    )
}

/// What a cancelled usage transaction's reasons say.
#[derive(Debug, PartialEq, Eq)]
enum Cancelled {
    /// The call's condition failed on an item that already has `usage_counted`.
    AlreadyCounted,
    /// Contention or throttling: nothing was written; the same transaction may succeed.
    Retry(String),
    /// Anything else, such as a missing call item: an error, never a guess.
    Fail(String),
}

/// Reads a `TransactionCanceledException`'s reasons (index 0 is the call
/// item, index 1 the organisation). The one exception covers conflicts,
/// throttling and missing items as well as "already counted".
fn classify_cancellation(reasons: &[CancellationReason]) -> Cancelled {
    let code = |r: &CancellationReason| r.code().unwrap_or("None").to_string();
    if let Some(call) = reasons.first() {
        if call.code() == Some("ConditionalCheckFailed") {
            return match call.item() {
                Some(old) if old.contains_key("usage_counted") => Cancelled::AlreadyCounted,
                Some(_) => Cancelled::Fail("call condition failed without usage_counted".into()),
                None => Cancelled::Fail("call item missing".into()),
            };
        }
    }
    let codes: Vec<String> = reasons.iter().map(code).collect();
    if codes.iter().any(|c| retryable_code(c)) {
        Cancelled::Retry(codes.join(","))
    } else {
        Cancelled::Fail(format!("transaction cancelled: [{}]", codes.join(",")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(code: &str, old: Option<&[&str]>) -> CancellationReason {
        let item = old.map(|names| {
            names
                .iter()
                .map(|n| (n.to_string(), AttributeValue::Bool(true)))
                .collect()
        });
        CancellationReason::builder()
            .code(code)
            .set_item(item)
            .build()
    }

    #[test]
    fn only_a_counted_call_item_means_already_counted() {
        let counted = Some(&["call_id", "usage_counted"][..]);
        assert_eq!(
            classify_cancellation(&[
                reason("ConditionalCheckFailed", counted),
                reason("None", None)
            ]),
            Cancelled::AlreadyCounted
        );
        assert_eq!(
            classify_cancellation(&[reason("ConditionalCheckFailed", counted)]),
            Cancelled::AlreadyCounted
        );
        // Condition failed and no old item: the call does not exist.
        assert!(matches!(
            classify_cancellation(&[reason("ConditionalCheckFailed", None), reason("None", None)]),
            Cancelled::Fail(r) if r.contains("missing")
        ));
        assert!(matches!(
            classify_cancellation(&[
                reason("ConditionalCheckFailed", Some(&["call_id"])),
                reason("None", None)
            ]),
            Cancelled::Fail(_)
        ));
    }

    #[test]
    fn conflicts_and_throttling_are_retried() {
        for busy in [
            "TransactionConflict",
            "ThrottlingError",
            "ProvisionedThroughputExceeded",
            "RequestLimitExceeded",
        ] {
            for reasons in [
                vec![reason("None", None), reason(busy, None)],
                vec![reason(busy, None), reason("None", None)],
            ] {
                assert!(
                    matches!(classify_cancellation(&reasons), Cancelled::Retry(_)),
                    "{busy}"
                );
            }
        }
    }

    #[test]
    fn anything_else_is_an_error() {
        for reasons in [
            vec![reason("None", None), reason("ValidationError", None)],
            vec![
                reason("ItemCollectionSizeLimitExceeded", None),
                reason("None", None),
            ],
            vec![reason("None", None), reason("ConditionalCheckFailed", None)],
            vec![],
        ] {
            assert!(matches!(
                classify_cancellation(&reasons),
                Cancelled::Fail(_)
            ));
        }
    }

    #[test]
    fn usage_backoff_grows_with_jitter_and_a_cap() {
        for attempt in 1..=10 {
            let ceiling = (20u64 << (attempt - 1)).min(500);
            for _ in 0..50 {
                let wait = usage_backoff(attempt).as_millis() as u64;
                assert!((1..=ceiling).contains(&wait), "{attempt}: {wait}");
            }
        }
    }

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
