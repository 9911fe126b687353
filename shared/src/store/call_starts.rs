//! Call-start records: one item per announcement of a room, in the calls
//! table beside the room's session (`call_id` = room, `item` =
//! `start#<key>`), written once. The write is the whole intake of a start
//! report: the table's stream hands each new one to `calls-stream`
//! (`flows::call_start::CarryOut`), which records the caller on the session
//! and queues the notification.
//!
//! - [`CallStartStore::store`] is one conditional `PutItem` (or, when an
//!   organisation reports the start, one transaction with its claim on the
//!   room name): only if the start was not stored, or its record expired.
//! - A refused write returns the record as it was (`ALL_OLD`), so a
//!   duplicate is answered from its saved answer at once.
//! - The delivery's random token stays on the record, so an SDK retry of a
//!   write that went through recognises its own record.
//!
//! Records are write-once but for their watch: a new record carries the
//! `CallWatch` index keys (partition `starts`), which its stream consumer
//! removes once the start is carried out, so the stuck sweep finds a start
//! whose stream event was lost when it falls due. The stream filter passes
//! an INSERT, and a MODIFY only while the record is still watched: the re-put
//! of an expired record is a new start; the watch's removal is not one.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, CancellationReason, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem,
};
use aws_sdk_dynamodb::Client;

use super::dedup::Owner;
use super::transactions::{busy, codes, transact, Verdict};
use super::StoreError;
use crate::base::time::epoch_secs;
use crate::queue::jobs::CallStart;

/// Sort keys of start records begin with this (the template's filter too).
pub const START_ITEM_PREFIX: &str = "start#";

/// The `CallWatch` partition of starts not yet carried out.
const WATCH_PARTITION: &str = "starts";

/// When the sweep first looks at a start the stream has not carried out:
/// well after the stream's retries (seconds to minutes) have run.
pub const START_WATCH_AFTER: Duration = Duration::from_secs(600);

/// Who saw the start, which says what carrying it out involves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartSource {
    /// LiveKit's `participant_joined`: the caller joins the session.
    LiveKit,
    /// An organisation's agent (`/calls/started`): the caller joins the
    /// session, which is marked as reported by that organisation.
    Agent,
    /// One of our routes opened the session: only the notification.
    Opened,
}

impl StartSource {
    fn name(self) -> &'static str {
        match self {
            Self::LiveKit => "livekit",
            Self::Agent => "agent",
            Self::Opened => "opened",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "livekit" => Self::LiveKit,
            "agent" => Self::Agent,
            "opened" => Self::Opened,
            _ => return None,
        })
    }
}

/// One stored start: everything its stream consumer needs.
#[derive(Debug, Clone, PartialEq)]
pub struct StartRecord {
    /// The announcement's key (`call-start#<room>`, or with `@<epoch>` for
    /// a reopened room): the notification is identified by it.
    pub key: String,
    pub start: CallStart,
    pub source: StartSource,
    /// The organisation that reported or opened it; `None` for LiveKit's
    /// own report (the notify-worker reads it from the session).
    pub org_id: Option<String>,
    pub participant_identity: Option<String>,
}

/// What storing a start found.
#[derive(Debug, Clone, PartialEq)]
pub enum StartWrite {
    /// This delivery stored it: the stream carries it out.
    Stored,
    /// It was stored before: the answer its delivery saved.
    Duplicate(serde_json::Value),
    /// Another organisation holds the room's name: nothing written.
    RoomTaken,
}

#[async_trait]
pub trait CallStartStore: Send + Sync {
    /// Stores `record` with `answer` unless its start was stored; with
    /// `claim_for`, in one transaction with that organisation's claim on
    /// the room name. One AWS call.
    async fn store(
        &self,
        record: &StartRecord,
        answer: &serde_json::Value,
        claim_for: Option<&str>,
    ) -> Result<StartWrite, StoreError>;
    /// Starts still watched and due at `now` (epoch seconds), at most `limit`.
    async fn due(&self, now: i64, limit: i32) -> Result<Vec<StartRecord>, StoreError>;
    /// Takes a carried-out start out of the watch.
    async fn settle(&self, record: &StartRecord) -> Result<(), StoreError>;
}

pub struct DynamoCallStartStore {
    pub client: Client,
    /// `CALLS_TABLE`.
    pub table: String,
    /// How long a start keeps later reports of it duplicates
    /// (`DEDUP_RETENTION_SECONDS`, as the claims it replaced).
    pub retention: Duration,
}

const OWNER: &str = "start_owner";
const ANSWER: &str = "start_answer";

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_string())
}

fn text(item: &HashMap<String, AttributeValue>, name: &str) -> Option<String> {
    item.get(name).and_then(|v| v.as_s().ok()).cloned()
}

/// The record of a start item, as the stream shows it; `None` for any
/// other item, `Err` for a start item that cannot be read.
pub fn start_of(item: &HashMap<String, AttributeValue>) -> Result<Option<StartRecord>, StoreError> {
    let Some(key) =
        text(item, "item").and_then(|i| i.strip_prefix(START_ITEM_PREFIX).map(str::to_string))
    else {
        return Ok(None);
    };
    let malformed = |what: &str| StoreError::Malformed(format!("call start {key}: {what}"));
    let start = text(item, "start").ok_or_else(|| malformed("no start"))?;
    let start: CallStart =
        serde_json::from_str(&start).map_err(|e| malformed(&format!("start: {e}")))?;
    let source = text(item, "source")
        .as_deref()
        .and_then(StartSource::parse)
        .ok_or_else(|| malformed("no known source"))?;
    Ok(Some(StartRecord {
        key: key.clone(),
        start,
        source,
        org_id: text(item, "org_id"),
        participant_identity: text(item, "participant_identity"),
    }))
}

impl DynamoCallStartStore {
    fn item(
        &self,
        record: &StartRecord,
        answer: &serde_json::Value,
        owner: &Owner,
    ) -> Result<HashMap<String, AttributeValue>, StoreError> {
        let start = serde_json::to_string(&record.start)
            .map_err(|e| StoreError::Malformed(format!("call start: {e}")))?;
        let expires_at = epoch_secs() + i64::try_from(self.retention.as_secs()).unwrap_or(0);
        let mut item = HashMap::from([
            ("call_id".to_string(), s(&record.start.room_name)),
            (
                "item".to_string(),
                s(&format!("{START_ITEM_PREFIX}{}", record.key)),
            ),
            ("start".to_string(), s(&start)),
            ("source".to_string(), s(record.source.name())),
            (OWNER.to_string(), s(owner.token())),
            (ANSWER.to_string(), s(&answer.to_string())),
            (
                "expires_at".to_string(),
                AttributeValue::N(expires_at.to_string()),
            ),
        ]);
        let due = epoch_secs() + START_WATCH_AFTER.as_secs() as i64;
        item.extend(super::calls::watch_attributes_in(WATCH_PARTITION, due));
        for (name, value) in [
            ("org_id", &record.org_id),
            ("participant_identity", &record.participant_identity),
        ] {
            if let Some(value) = value {
                item.insert(name.to_string(), s(value));
            }
        }
        Ok(item)
    }

    /// What a refusing record means: this delivery's own write (an SDK
    /// retry), or another's with the answer to replay.
    async fn refused_by(
        &self,
        record: &StartRecord,
        old: Option<HashMap<String, AttributeValue>>,
        owner: &Owner,
    ) -> Result<StartWrite, StoreError> {
        // DynamoDB returns the refusing record; an emulator may not.
        let old = match old {
            Some(old) => Some(old),
            None => self.read(record).await?,
        };
        let Some(old) = old else {
            return Err(StoreError::Dynamo(format!(
                "call start {} was refused by a record that is gone",
                record.key
            )));
        };
        if text(&old, OWNER).as_deref() == Some(owner.token()) {
            return Ok(StartWrite::Stored);
        }
        let answer = text(&old, ANSWER)
            .and_then(|a| serde_json::from_str(&a).ok())
            .unwrap_or_else(|| serde_json::json!({"success": true}));
        Ok(StartWrite::Duplicate(answer))
    }

    async fn read(
        &self,
        record: &StartRecord,
    ) -> Result<Option<HashMap<String, AttributeValue>>, StoreError> {
        Ok(self
            .client
            .get_item()
            .table_name(&self.table)
            .key("call_id", s(&record.start.room_name))
            .key("item", s(&format!("{START_ITEM_PREFIX}{}", record.key)))
            .consistent_read(true)
            .send()
            .await?
            .item)
    }
}

/// Stored once, or again over a record past its retention (which TTL
/// deletes within a day or two).
const NEW_START: &str = "attribute_not_exists(call_id) OR expires_at < :now";

#[async_trait]
impl CallStartStore for DynamoCallStartStore {
    async fn store(
        &self,
        record: &StartRecord,
        answer: &serde_json::Value,
        claim_for: Option<&str>,
    ) -> Result<StartWrite, StoreError> {
        let owner = Owner::new();
        let item = self.item(record, answer, &owner)?;
        let now = AttributeValue::N(epoch_secs().to_string());
        let Some(org_id) = claim_for else {
            let result = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression(NEW_START)
                .expression_attribute_values(":now", now)
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .send()
                .await;
            return match result {
                Ok(_) => Ok(StartWrite::Stored),
                Err(err) => match err.as_service_error() {
                    Some(PutItemError::ConditionalCheckFailedException(refused)) => {
                        self.refused_by(record, refused.item().cloned(), &owner)
                            .await
                    }
                    _ => Err(err.into()),
                },
            };
        };
        let claim = super::sessions::room_claim(&self.table, &record.start.room_name, org_id)?;
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(NEW_START)
            .expression_attribute_values(":now", now)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(|e| StoreError::Dynamo(e.to_string()))?;
        let outcome = transact(
            &self.client,
            vec![
                TransactWriteItem::builder().update(claim).build(),
                TransactWriteItem::builder().put(put).build(),
            ],
            "store call start",
            Refusal::None,
            read_refusal,
        )
        .await?;
        match outcome {
            Refusal::None => Ok(StartWrite::Stored),
            Refusal::RoomTaken => Ok(StartWrite::RoomTaken),
            Refusal::Stored(old) => self.refused_by(record, old, &owner).await,
        }
    }

    async fn due(&self, now: i64, limit: i32) -> Result<Vec<StartRecord>, StoreError> {
        use super::calls::{WATCH_DUE, WATCH_INDEX, WATCH_LEDGER};
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(WATCH_INDEX)
            .key_condition_expression("#ledger = :starts AND #due <= :now")
            .expression_attribute_names("#ledger", WATCH_LEDGER)
            .expression_attribute_names("#due", WATCH_DUE)
            .expression_attribute_values(":starts", s(WATCH_PARTITION))
            .expression_attribute_values(":now", AttributeValue::N(now.to_string()))
            .limit(limit)
            .send()
            .await?;
        // The index holds keys only: the records themselves, read by key.
        let keys = out
            .items
            .unwrap_or_default()
            .into_iter()
            .filter_map(|item| {
                Some(HashMap::from([
                    ("call_id".to_string(), item.get("call_id")?.clone()),
                    ("item".to_string(), item.get("item")?.clone()),
                ]))
            })
            .collect();
        let mut due = Vec::new();
        for item in super::batch_get(&self.client, &self.table, keys, true).await? {
            match start_of(&item) {
                Ok(Some(record)) => due.push(record),
                Ok(None) => {}
                // Left watched: an error in every run's log until looked at.
                Err(err) => tracing::error!(error = %err, "unreadable call start in the watch"),
            }
        }
        Ok(due)
    }

    async fn settle(&self, record: &StartRecord) -> Result<(), StoreError> {
        use super::calls::{WATCH_DUE, WATCH_LEDGER};
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("call_id", s(&record.start.room_name))
            .key("item", s(&format!("{START_ITEM_PREFIX}{}", record.key)))
            .update_expression("REMOVE #ledger, #due")
            .condition_expression("attribute_exists(#ledger)")
            .expression_attribute_names("#ledger", WATCH_LEDGER)
            .expression_attribute_names("#due", WATCH_DUE)
            .send()
            .await;
        // Settled already (the stream and the sweep both did it): done.
        super::applied(result).map(drop)
    }
}

/// Which condition of the claim-and-store transaction failed.
enum Refusal {
    None,
    RoomTaken,
    Stored(Option<HashMap<String, AttributeValue>>),
}

fn read_refusal(reasons: &[CancellationReason]) -> Verdict<Refusal> {
    if busy(reasons) {
        return Verdict::Retry(codes(reasons));
    }
    let failed = |i: usize| {
        reasons
            .get(i)
            .and_then(|r| r.code())
            .is_some_and(|c| c == "ConditionalCheckFailed")
    };
    if failed(0) {
        Verdict::Done(Refusal::RoomTaken)
    } else if failed(1) {
        Verdict::Done(Refusal::Stored(reasons[1].item().cloned()))
    } else {
        Verdict::Fail(codes(reasons))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_item_reads_back_as_its_record() {
        let store = DynamoCallStartStore {
            client: Client::from_conf(
                aws_sdk_dynamodb::Config::builder()
                    .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
                    .build(),
            ),
            table: "calls".into(),
            retention: Duration::from_secs(60),
        };
        let record = StartRecord {
            key: "call-start#room-1@1760000000".into(),
            start: CallStart {
                room_name: "room-1".into(),
                user_email: Some("a@b.co".into()),
                started_at: "2026-12-06T10:00:00Z".into(),
                metadata: serde_json::Map::new(),
            },
            source: StartSource::Agent,
            org_id: Some("acme".into()),
            participant_identity: None,
        };
        let item = store
            .item(
                &record,
                &serde_json::json!({"success": true}),
                &Owner::new(),
            )
            .unwrap();
        assert_eq!(start_of(&item).unwrap(), Some(record));
        let mut session = item.clone();
        session.insert("item".into(), s("session"));
        assert_eq!(start_of(&session).unwrap(), None);
        let mut broken = item;
        broken.remove("source");
        assert!(start_of(&broken).is_err());
    }
}
