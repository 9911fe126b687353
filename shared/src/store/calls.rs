//! The call record: what every flow stores about a call, and the store that
//! keeps it. Field names follow the seed's `processed_calls` table.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use serde::{Deserialize, Serialize};

use super::ledger::Ledger;
use crate::store::StoreError;

mod intake;
pub use intake::{saved_answer, Intake, IntakeStore};

/// Sort key of the call record itself; transcript parts sit beside it.
const RECORD_ITEM: &str = "call";
const TRANSCRIPT_ITEM_PREFIX: &str = "transcript#";
/// Comfortably under DynamoDB's 400 KB item limit, leaving room for keys.
const TRANSCRIPT_PART_BYTES: usize = 350 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallStatus {
    Received,
    Queued,
    Transcribing,
    Transcribed,
    Notified,
    /// Stored but not transcribed: the call did not complete or has no recording.
    Skipped,
    Failed,
}

impl CallStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Received => "received",
            Self::Queued => "queued",
            Self::Transcribing => "transcribing",
            Self::Transcribed => "transcribed",
            Self::Notified => "notified",
            Self::Skipped => "skipped",
            Self::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallSource {
    Zapier,
    Exotel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Incoming,
    Outgoing,
}

impl Direction {
    /// Seed rule: outgoing when `from_number` contains the support number.
    pub fn of(from_number: &str, support_number: Option<&str>) -> Self {
        match support_number {
            Some(support) if crate::base::phone::contains_number(from_number, support) => {
                Self::Outgoing
            }
            _ => Self::Incoming,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusChange {
    pub status: CallStatus,
    pub at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Who handled the call, as Zapier relays it (all optional).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_slack_handle: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_segment: Option<String>,
}

/// The key of a call delivered under an organisation's own webhook token:
/// the sender's id inside the organisation's space, so two organisations
/// using the same call id never meet (nor its record, answer or job). Calls
/// of the default organisation (`WEBHOOK_TOKEN`) keep the bare id. Neither
/// organisation ids nor call ids contain `#`, so the two spaces are apart.
pub fn scoped_call_id(org_id: &str, call_id: &str) -> String {
    format!("{ORG_SCOPE}{org_id}#{call_id}")
}

const ORG_SCOPE: &str = "org#";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallRecord {
    /// The record's key: the sender's call id, or [`scoped_call_id`].
    pub call_id: String,
    /// The organisation whose token delivered the call (`INBOUND_ORG_ID` for
    /// `WEBHOOK_TOKEN`); none for calls without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_id: Option<String>,
    pub source: CallSource,
    pub from_number: String,
    pub to_number: String,
    /// Seconds, as the provider reported them.
    #[serde(default)]
    pub duration: Option<u64>,
    #[serde(default)]
    pub recording_url: Option<String>,
    /// When the call happened (RFC 3339, UTC).
    pub timestamp: String,
    /// When the pipeline finished with the call.
    #[serde(default)]
    pub processed_at: Option<String>,
    #[serde(default)]
    pub slack_posted: bool,
    pub status: CallStatus,
    /// The provider's own status (`completed`, `busy`, ...).
    #[serde(default)]
    pub call_status: Option<String>,
    /// Decided once at ingestion from `SUPPORT_NUMBER`.
    pub direction: Direction,
    #[serde(default)]
    pub failure_reason: Option<String>,
    #[serde(flatten)]
    pub agent: AgentInfo,
    #[serde(default)]
    pub transcript_id: Option<String>,
    #[serde(default)]
    pub transcript_parts: u32,
    /// The voice-agent session (LiveKit room) this call belongs to, when the
    /// caller says; its call-start Slack thread receives the transcript.
    #[serde(default)]
    pub room_name: Option<String>,
    #[serde(default)]
    pub status_history: Vec<StatusChange>,
    pub received_at: String,
}

impl CallRecord {
    /// The call id as its sender reported it (the record's key without its
    /// organisation's scope).
    pub fn reported_call_id(&self) -> &str {
        match self.call_id.strip_prefix(ORG_SCOPE) {
            Some(scoped) => scoped
                .split_once('#')
                .map_or(self.call_id.as_str(), |(_, id)| id),
            None => &self.call_id,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Utterance {
    pub speaker: String,
    pub text: String,
    #[serde(default)]
    pub start: u64,
    #[serde(default)]
    pub end: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Tone {
    Positive,
    Neutral,
    Negative,
}

impl Tone {
    pub fn label(self) -> &'static str {
        match self {
            Self::Positive => "Positive",
            Self::Neutral => "Neutral",
            Self::Negative => "Negative",
        }
    }
}

/// A finished transcription, stored in full however long it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transcript {
    pub text: String,
    pub utterances: Vec<Utterance>,
    pub tone: Tone,
    #[serde(default)]
    pub audio_duration: Option<f64>,
}

impl Transcript {
    /// Speaker-labelled lines, or the plain text when there are no utterances.
    pub fn labelled_text(&self) -> String {
        if self.utterances.is_empty() {
            return self.text.clone();
        }
        self.utterances
            .iter()
            .map(|u| format!("Speaker {}: {}", u.speaker, u.text))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Result of creating a call record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// New record, or a retry of one that never got past `received`.
    Stored,
    /// The call is already further along: this delivery is a late duplicate.
    AlreadyProcessing,
}

#[async_trait]
pub trait CallStore: Send + Sync {
    async fn create(&self, record: &CallRecord) -> Result<Created, StoreError>;
    async fn get(&self, call_id: &str) -> Result<Option<CallRecord>, StoreError>;
    /// Moves the call to `to` if it is in one of `from`; returns whether it moved.
    async fn transition(
        &self,
        call_id: &str,
        from: &[CallStatus],
        to: CallStatus,
        reason: Option<&str>,
    ) -> Result<bool, StoreError>;
    async fn set_transcript_id(&self, call_id: &str, transcript_id: &str)
        -> Result<(), StoreError>;
    /// Stores the transcript in as many parts as it needs, then moves the call
    /// to `transcribed`.
    async fn save_transcript(
        &self,
        call_id: &str,
        transcript: &Transcript,
    ) -> Result<(), StoreError>;
    async fn load_transcript(&self, call_id: &str) -> Result<Option<Transcript>, StoreError>;
    /// Records the first completed notification and moves the call to
    /// `status_after`; true only for the first one.
    async fn mark_notified(
        &self,
        call_id: &str,
        slack_posted: bool,
        status_after: CallStatus,
    ) -> Result<bool, StoreError>;
    /// Watch entries due at `now` (epoch seconds), oldest first.
    async fn due_watches(&self, now: i64, limit: i32) -> Result<Vec<Watch>, StoreError>;
    /// Moves a watch entry to `at` (a re-driven call gets one more chance).
    async fn reschedule_watch(&self, watch: &Watch, at: i64) -> Result<(), StoreError>;
    /// Drops a watch entry (the call reached a final state).
    async fn drop_watch(&self, watch: &Watch) -> Result<(), StoreError>;
    /// Marks the call re-driven once; false if it already was.
    async fn mark_redriven(&self, call_id: &str) -> Result<bool, StoreError>;
}

pub struct DynamoCallStore {
    client: Client,
    table: String,
    /// How long after it was received a call that has not reached a final
    /// state counts as stuck (its watch entry becomes due for the sweep).
    watch_after: std::time::Duration,
}

/// The transcription deadline (1 h by default) plus re-check backoff and
/// notification: a call still moving after this is stuck.
pub const DEFAULT_WATCH_AFTER: std::time::Duration = std::time::Duration::from_secs(2 * 3600);

/// The calls to look at again, as records written before the intake's one
/// write kept them (`store::ledger`). Still read, so a deployment's older
/// calls are swept; nothing new is written to it.
const LEGACY_WATCH: Ledger = Ledger {
    partition: "calls#watch",
    id_attribute: "watched_call",
};

/// The sparse index of records the sweep should look at: a record carries
/// `watch_ledger` and `watch_due` from the write that creates it, so no call
/// escapes the sweep, and loses them in the write that makes it final (or,
/// for one that got there otherwise, when the sweep finds it final).
pub const WATCH_INDEX: &str = "CallWatch";
pub(crate) const WATCH_LEDGER: &str = "watch_ledger";
pub(crate) const WATCH_DUE: &str = "watch_due";
/// The one partition of the index (as the ledgers are one partition each).
const WATCH_PARTITION: &str = "calls";
/// Appended to the update that makes a call final: it leaves the index.
const LEAVE_WATCH: &str = " REMOVE watch_ledger, watch_due";

/// The attributes that put a record in the `CallWatch` index, due at `due`.
pub(crate) fn watch_attributes(due: i64) -> [(String, AttributeValue); 2] {
    watch_attributes_in(WATCH_PARTITION, due)
}

/// The same in another partition of the index (call starts use `starts`).
pub(crate) fn watch_attributes_in(partition: &str, due: i64) -> [(String, AttributeValue); 2] {
    [
        (
            WATCH_LEDGER.to_string(),
            AttributeValue::S(partition.into()),
        ),
        (WATCH_DUE.to_string(), AttributeValue::N(due.to_string())),
    ]
}

/// A call the sweep should look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watch {
    /// `None`: the record's own place in `CallWatch`; `Some`: an entry of the
    /// legacy ledger.
    pub entry: Option<String>,
    pub call_id: String,
}

impl DynamoCallStore {
    /// Sets or removes a record's `CallWatch` keys; a record that is gone
    /// has nothing left to watch, so that is no error.
    async fn update_watch_keys<const N: usize>(
        &self,
        call_id: &str,
        expression: &str,
        values: [(&str, AttributeValue); N],
    ) -> Result<(), StoreError> {
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("call_id", AttributeValue::S(call_id.to_string()))
            .key("item", AttributeValue::S(RECORD_ITEM.into()))
            .update_expression(expression)
            .condition_expression("attribute_exists(call_id)")
            .expression_attribute_names("#ledger", WATCH_LEDGER)
            .expression_attribute_names("#due", WATCH_DUE);
        for (name, value) in values {
            update = update.expression_attribute_values(name, value);
        }
        super::applied(update.send().await)?;
        Ok(())
    }

    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            watch_after: DEFAULT_WATCH_AFTER,
        }
    }

    pub fn watching_after(mut self, watch_after: std::time::Duration) -> Self {
        self.watch_after = watch_after;
        self
    }

    fn history_entry(to: CallStatus, reason: Option<&str>) -> Result<AttributeValue, StoreError> {
        let entry = StatusChange {
            status: to,
            at: crate::base::time::now_rfc3339(),
            reason: reason.map(str::to_string),
        };
        Ok(AttributeValue::L(vec![serde_dynamo::to_attribute_value(
            entry,
        )?]))
    }
}

/// Splits serialized text into parts on character boundaries.
pub fn split_parts(text: &str, max_bytes: usize) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut end = rest.len().min(max_bytes);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (head, tail) = rest.split_at(end);
        parts.push(head);
        rest = tail;
    }
    parts
}

#[async_trait]
impl CallStore for DynamoCallStore {
    async fn create(&self, record: &CallRecord) -> Result<Created, StoreError> {
        let mut item: std::collections::HashMap<String, AttributeValue> =
            serde_dynamo::to_item(record)?;
        item.insert("item".into(), AttributeValue::S(RECORD_ITEM.into()));
        if let Some(org) = &record.org_id {
            item.extend(super::call_log::log_attributes(
                org,
                &record.received_at,
                &record.call_id,
            ));
        }
        let due = crate::base::time::epoch_secs()
            + i64::try_from(self.watch_after.as_secs()).unwrap_or(i64::MAX / 2);
        item.extend(watch_attributes(due));
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(call_id) OR #status = :received")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(
                ":received",
                AttributeValue::S(CallStatus::Received.as_str().into()),
            )
            .send()
            .await;
        Ok(if super::applied(result)? {
            Created::Stored
        } else {
            Created::AlreadyProcessing
        })
    }

    async fn get(&self, call_id: &str) -> Result<Option<CallRecord>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("call_id", AttributeValue::S(call_id.to_string()))
            .key("item", AttributeValue::S(RECORD_ITEM.into()))
            .consistent_read(true)
            .send()
            .await?;
        out.item
            .map(|item| serde_dynamo::from_item(item).map_err(Into::into))
            .transpose()
    }

    async fn transition(
        &self,
        call_id: &str,
        from: &[CallStatus],
        to: CallStatus,
        reason: Option<&str>,
    ) -> Result<bool, StoreError> {
        let placeholders: Vec<String> = (0..from.len()).map(|i| format!(":from{i}")).collect();
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("call_id", AttributeValue::S(call_id.to_string()))
            .key("item", AttributeValue::S(RECORD_ITEM.into()))
            .condition_expression(format!("#status IN ({})", placeholders.join(", ")))
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#history", "status_history")
            .expression_attribute_values(":to", AttributeValue::S(to.as_str().into()))
            .expression_attribute_values(":entry", Self::history_entry(to, reason)?)
            .expression_attribute_values(":empty", AttributeValue::L(vec![]));
        for (placeholder, status) in placeholders.iter().zip(from) {
            update = update.expression_attribute_values(
                placeholder,
                AttributeValue::S(status.as_str().into()),
            );
        }
        let mut expression =
            "SET #status = :to, #history = list_append(if_not_exists(#history, :empty), :entry)"
                .to_string();
        if let Some(reason) = reason.filter(|_| to == CallStatus::Failed) {
            expression.push_str(", failure_reason = :reason");
            update = update
                .expression_attribute_values(":reason", AttributeValue::S(reason.to_string()));
        }
        if matches!(
            to,
            CallStatus::Failed | CallStatus::Skipped | CallStatus::Transcribed
        ) {
            expression.push_str(", processed_at = :now");
            update = update.expression_attribute_values(
                ":now",
                AttributeValue::S(crate::base::time::now_rfc3339()),
            );
        }
        if to.is_final() {
            expression.push_str(LEAVE_WATCH);
        }
        super::applied(update.update_expression(expression).send().await)
    }

    async fn set_transcript_id(
        &self,
        call_id: &str,
        transcript_id: &str,
    ) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("call_id", AttributeValue::S(call_id.to_string()))
            .key("item", AttributeValue::S(RECORD_ITEM.into()))
            .update_expression("SET transcript_id = :id")
            .expression_attribute_values(":id", AttributeValue::S(transcript_id.to_string()))
            .send()
            .await?;
        Ok(())
    }

    async fn save_transcript(
        &self,
        call_id: &str,
        transcript: &Transcript,
    ) -> Result<(), StoreError> {
        let serialized =
            serde_json::to_string(transcript).map_err(|e| StoreError::Malformed(e.to_string()))?;
        let parts = split_parts(&serialized, TRANSCRIPT_PART_BYTES);
        for (index, part) in parts.iter().enumerate() {
            self.client
                .put_item()
                .table_name(&self.table)
                .item("call_id", AttributeValue::S(call_id.to_string()))
                .item(
                    "item",
                    AttributeValue::S(format!("{TRANSCRIPT_ITEM_PREFIX}{index:05}")),
                )
                .item("chunk", AttributeValue::S(part.to_string()))
                .send()
                .await?;
        }
        // Parts first, count last: a reader never sees a count without its parts.
        self.client
            .update_item()
            .table_name(&self.table)
            .key("call_id", AttributeValue::S(call_id.to_string()))
            .key("item", AttributeValue::S(RECORD_ITEM.into()))
            .update_expression("SET transcript_parts = :n")
            .expression_attribute_values(":n", AttributeValue::N(parts.len().to_string()))
            .send()
            .await?;
        Ok(())
    }

    async fn load_transcript(&self, call_id: &str) -> Result<Option<Transcript>, StoreError> {
        let mut chunks: Vec<(String, String)> = Vec::new();
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("call_id = :id AND begins_with(#item, :prefix)")
            .expression_attribute_names("#item", "item")
            .expression_attribute_values(":id", AttributeValue::S(call_id.to_string()))
            .expression_attribute_values(
                ":prefix",
                AttributeValue::S(TRANSCRIPT_ITEM_PREFIX.into()),
            )
            .consistent_read(true)
            .into_paginator()
            .items()
            .send();
        while let Some(item) = pages.next().await {
            let item = item?;
            let key = item
                .get("item")
                .and_then(|v| v.as_s().ok())
                .cloned()
                .unwrap_or_default();
            let chunk = item
                .get("chunk")
                .and_then(|v| v.as_s().ok())
                .cloned()
                .ok_or_else(|| {
                    StoreError::Malformed(format!("transcript part {key} has no chunk"))
                })?;
            chunks.push((key, chunk));
        }
        if chunks.is_empty() {
            return Ok(None);
        }
        chunks.sort();
        let serialized: String = chunks.into_iter().map(|(_, c)| c).collect();
        serde_json::from_str(&serialized)
            .map(Some)
            .map_err(|e| StoreError::Malformed(format!("transcript: {e}")))
    }

    async fn mark_notified(
        &self,
        call_id: &str,
        slack_posted: bool,
        status_after: CallStatus,
    ) -> Result<bool, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("call_id", AttributeValue::S(call_id.to_string()))
            .key("item", AttributeValue::S(RECORD_ITEM.into()))
            // Notified or failed, the call leaves the sweep's index in the
            // same write (not in a later one of the sweep's).
            .update_expression(format!(
                "SET slack_posted = :posted, notified_at = :now, processed_at = :now, \
                 #status = :after, \
                 #history = list_append(if_not_exists(#history, :empty), :entry){}",
                if status_after.is_final() {
                    LEAVE_WATCH
                } else {
                    ""
                }
            ))
            .condition_expression("attribute_exists(call_id) AND attribute_not_exists(notified_at)")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#history", "status_history")
            .expression_attribute_values(":posted", AttributeValue::Bool(slack_posted))
            .expression_attribute_values(
                ":now",
                AttributeValue::S(crate::base::time::now_rfc3339()),
            )
            .expression_attribute_values(":after", AttributeValue::S(status_after.as_str().into()))
            .expression_attribute_values(":empty", AttributeValue::L(vec![]))
            .expression_attribute_values(
                ":entry",
                Self::history_entry(status_after, Some("notification sent"))?,
            )
            .send()
            .await;
        super::applied(result)
    }

    async fn due_watches(&self, now: i64, limit: i32) -> Result<Vec<Watch>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(WATCH_INDEX)
            .key_condition_expression("#ledger = :calls AND #due <= :now")
            .expression_attribute_names("#ledger", WATCH_LEDGER)
            .expression_attribute_names("#due", WATCH_DUE)
            .expression_attribute_values(":calls", AttributeValue::S(WATCH_PARTITION.into()))
            .expression_attribute_values(":now", AttributeValue::N(now.to_string()))
            .limit(limit)
            .send()
            .await?;
        let mut due: Vec<Watch> = out
            .items
            .unwrap_or_default()
            .iter()
            .filter(|item| {
                item.get("item")
                    .and_then(|v| v.as_s().ok())
                    .map(String::as_str)
                    == Some(RECORD_ITEM)
            })
            .filter_map(|item| {
                Some(Watch {
                    entry: None,
                    call_id: item.get("call_id")?.as_s().ok()?.clone(),
                })
            })
            .collect();
        let room = limit - i32::try_from(due.len()).unwrap_or(limit);
        if room > 0 {
            due.extend(
                LEGACY_WATCH
                    .due(&self.client, &self.table, now, room)
                    .await?
                    .into_iter()
                    .map(|entry| Watch {
                        entry: Some(entry.entry),
                        call_id: entry.id,
                    }),
            );
        }
        Ok(due)
    }

    async fn reschedule_watch(&self, watch: &Watch, at: i64) -> Result<(), StoreError> {
        let Some(entry) = &watch.entry else {
            let values = [
                (":calls", AttributeValue::S(WATCH_PARTITION.into())),
                (":at", AttributeValue::N(at.to_string())),
            ];
            return self
                .update_watch_keys(&watch.call_id, "SET #ledger = :calls, #due = :at", values)
                .await;
        };
        use aws_sdk_dynamodb::types::{Delete, Put, TransactWriteItem};
        // A legacy entry moves within its ledger.
        let delete = Delete::builder()
            .table_name(&self.table)
            .set_key(Some(LEGACY_WATCH.key(entry)))
            .build()
            .map_err(|e| StoreError::Dynamo(e.to_string()))?;
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(LEGACY_WATCH.item(&watch.call_id, at)))
            .build()
            .map_err(|e| StoreError::Dynamo(e.to_string()))?;
        let items = vec![
            TransactWriteItem::builder().delete(delete).build(),
            TransactWriteItem::builder().put(put).build(),
        ];
        super::transactions::transact(&self.client, items, "watch entry", (), |reasons| {
            if super::transactions::busy(reasons) {
                super::transactions::Verdict::Retry(super::transactions::codes(reasons))
            } else {
                super::transactions::Verdict::Fail(super::transactions::codes(reasons))
            }
        })
        .await
    }

    async fn drop_watch(&self, watch: &Watch) -> Result<(), StoreError> {
        let Some(entry) = &watch.entry else {
            return self
                .update_watch_keys(&watch.call_id, "REMOVE #ledger, #due", [])
                .await;
        };
        LEGACY_WATCH.remove(&self.client, &self.table, entry).await
    }

    async fn mark_redriven(&self, call_id: &str) -> Result<bool, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("call_id", AttributeValue::S(call_id.to_string()))
            .key("item", AttributeValue::S(RECORD_ITEM.into()))
            .update_expression("SET redriven_at = :now")
            .condition_expression("attribute_exists(call_id) AND attribute_not_exists(redriven_at)")
            .expression_attribute_values(
                ":now",
                AttributeValue::S(crate::base::time::now_rfc3339()),
            )
            .send()
            .await;
        super::applied(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scoped_ids_report_the_senders_id() {
        let scoped = scoped_call_id("acme", "CA1.x-y_z");
        assert_eq!(scoped, "org#acme#CA1.x-y_z");
        let mut record: CallRecord = serde_json::from_value(serde_json::json!({
            "call_id": scoped, "source": "zapier", "from_number": "", "to_number": "",
            "timestamp": "2025-10-09T17:58:27Z", "status": "received", "direction": "incoming",
            "received_at": "2025-10-09T17:58:27Z"
        }))
        .unwrap();
        assert_eq!(record.reported_call_id(), "CA1.x-y_z");
        record.call_id = "CA1".into();
        assert_eq!(record.reported_call_id(), "CA1");
    }

    #[test]
    fn direction_follows_the_support_number() {
        assert_eq!(
            Direction::of("09631084471", Some("09631084471")),
            Direction::Outgoing
        );
        assert_eq!(
            Direction::of("+919876543210", Some("09631084471")),
            Direction::Incoming
        );
        assert_eq!(Direction::of("+919876543210", None), Direction::Incoming);
    }

    #[test]
    fn split_parts_keeps_every_character() {
        let text = "héllo wörld ".repeat(1000);
        let parts = split_parts(&text, 7);
        assert!(parts.iter().all(|p| p.len() <= 7));
        assert_eq!(parts.concat(), text);
        assert!(split_parts("", 10).is_empty());
    }

    #[test]
    fn labelled_text_uses_speakers() {
        let t = Transcript {
            text: "hi there".into(),
            utterances: vec![
                Utterance {
                    speaker: "A".into(),
                    text: "hi".into(),
                    start: 0,
                    end: 1,
                },
                Utterance {
                    speaker: "B".into(),
                    text: "there".into(),
                    start: 1,
                    end: 2,
                },
            ],
            tone: Tone::Neutral,
            audio_duration: None,
        };
        assert_eq!(t.labelled_text(), "Speaker A: hi\nSpeaker B: there");
    }
}
