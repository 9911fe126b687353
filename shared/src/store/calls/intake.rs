//! The recording intake's one write. A delivery is acknowledged once its
//! call record is stored, and storing it is the whole decision:
//!
//! - [`IntakeStore::store`] is one conditional `PutItem`: the record in the
//!   state the delivery leaves it (`queued`, or `skipped` when there is
//!   nothing to transcribe), the answer duplicates replay, the call-log keys
//!   and, for a queued call, its place in the `CallWatch` index (the stuck
//!   sweep's view). Only if no record exists.
//! - The transcription job is not sent here: the table's stream hands each
//!   new queued record to `calls-stream` (`flows::call_stream`), which
//!   queues it and counts it.
//! - A refused write returns the record as it was (`ALL_OLD`), so a
//!   duplicate is answered from its saved answer at once: no lease, no
//!   waiting for another delivery, no 409.
//!
//! The delivery's random token stays on the record, so an SDK retry of a
//! write that was applied but whose answer was lost recognises its own record
//! and reports it stored rather than duplicate.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};

use super::{CallRecord, CallStatus, DynamoCallStore, RECORD_ITEM};
use crate::base::time::epoch_secs;
use crate::store::dedup::Owner;
use crate::store::StoreError;

const OWNER: &str = "intake_owner";
/// The JSON answer duplicates receive.
const ANSWER: &str = "intake_answer";

/// What storing a delivery's record found.
#[derive(Debug, Clone, PartialEq)]
pub enum Intake {
    /// This delivery's record is stored: it is the call's first.
    Stored,
    /// A record was there: the answer its delivery saved, or `None` for a
    /// record written without one (before answers were saved on records).
    Duplicate(Option<serde_json::Value>),
}

/// Reads the answer saved on a refusing record (`ALL_OLD`).
pub fn saved_answer(
    item: &HashMap<String, AttributeValue>,
) -> Result<Option<serde_json::Value>, StoreError> {
    let Some(answer) = item.get(ANSWER) else {
        return Ok(None);
    };
    let text = answer
        .as_s()
        .map_err(|_| StoreError::Malformed("intake answer is not a string".into()))?;
    serde_json::from_str(text)
        .map(Some)
        .map_err(|e| StoreError::Malformed(format!("intake answer: {e}")))
}

/// True when `item` is the write of `owner` itself: an SDK retry of a
/// write that was applied but whose answer was lost fails its condition on it.
fn written_by(item: &HashMap<String, AttributeValue>, owner: &Owner) -> bool {
    item.get(OWNER)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
        == Some(owner.token())
}

#[async_trait]
pub trait IntakeStore: Send + Sync {
    /// Stores `record` with `answer` unless the call has a record already
    /// (see the module doc). One AWS call.
    async fn store(
        &self,
        record: &CallRecord,
        answer: &serde_json::Value,
    ) -> Result<Intake, StoreError>;
}

impl DynamoCallStore {
    /// The record's item as the intake writes it.
    fn intake_item(
        &self,
        record: &CallRecord,
        answer: &serde_json::Value,
        owner: &Owner,
    ) -> Result<HashMap<String, AttributeValue>, StoreError> {
        let mut item: HashMap<String, AttributeValue> = serde_dynamo::to_item(record)?;
        item.insert("item".into(), AttributeValue::S(RECORD_ITEM.into()));
        item.insert(OWNER.into(), AttributeValue::S(owner.token().to_string()));
        item.insert(ANSWER.into(), AttributeValue::S(answer.to_string()));
        if let Some(org) = &record.org_id {
            item.extend(crate::store::call_log::log_attributes(
                org,
                &record.received_at,
                &record.call_id,
            ));
        }
        // Only a call with work ahead can get stuck; a final one is not watched.
        if !record.status.is_final() {
            let due = epoch_secs() + i64::try_from(self.watch_after.as_secs()).unwrap_or(0);
            item.extend(super::watch_attributes(due));
        }
        Ok(item)
    }
}

#[async_trait]
impl IntakeStore for DynamoCallStore {
    async fn store(
        &self,
        record: &CallRecord,
        answer: &serde_json::Value,
    ) -> Result<Intake, StoreError> {
        let owner = Owner::new();
        let item = self.intake_item(record, answer, &owner)?;
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(call_id)")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let refused = match result {
            Ok(_) => return Ok(Intake::Stored),
            Err(err) => match err.as_service_error() {
                Some(PutItemError::ConditionalCheckFailedException(refused)) => {
                    refused.item().cloned()
                }
                _ => return Err(err.into()),
            },
        };
        // DynamoDB returns the refusing record; an emulator may not.
        let old = match refused {
            Some(old) => Some(old),
            None => self.read_intake_record(&record.call_id).await?,
        };
        match old {
            Some(old) if written_by(&old, &owner) => Ok(Intake::Stored),
            Some(old) => Ok(Intake::Duplicate(saved_answer(&old)?)),
            // Refused, then gone (expired or deleted in between): a store
            // error the sender retries, never a guess.
            None => Err(StoreError::Dynamo(format!(
                "call {} was refused by a record that is gone",
                record.call_id
            ))),
        }
    }
}

impl DynamoCallStore {
    async fn read_intake_record(
        &self,
        call_id: &str,
    ) -> Result<Option<HashMap<String, AttributeValue>>, StoreError> {
        Ok(self
            .client
            .get_item()
            .table_name(&self.table)
            .key("call_id", AttributeValue::S(call_id.to_string()))
            .key("item", AttributeValue::S(RECORD_ITEM.into()))
            .consistent_read(true)
            .send()
            .await?
            .item)
    }
}

/// Whether the status leaves nothing for the pipeline to do.
impl CallStatus {
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            CallStatus::Received
                | CallStatus::Queued
                | CallStatus::Transcribing
                | CallStatus::Transcribed
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(pairs: &[(&str, AttributeValue)]) -> HashMap<String, AttributeValue> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    fn s(v: &str) -> AttributeValue {
        AttributeValue::S(v.into())
    }

    #[test]
    fn a_saved_answer_is_replayed_whatever_the_status() {
        for status in ["queued", "transcribing", "notified", "skipped", "failed"] {
            let record = item(&[
                ("status", s(status)),
                (ANSWER, s(r#"{"message":"Call queued for processing"}"#)),
            ]);
            assert_eq!(
                saved_answer(&record).unwrap(),
                Some(serde_json::json!({"message": "Call queued for processing"})),
                "{status}"
            );
        }
    }

    #[test]
    fn a_record_without_an_answer_has_none_to_replay() {
        assert_eq!(
            saved_answer(&item(&[("status", s("notified"))])).unwrap(),
            None
        );
    }

    #[test]
    fn malformed_answers_are_errors_not_guesses() {
        assert!(saved_answer(&item(&[(ANSWER, s("{not json"))])).is_err());
        assert!(saved_answer(&item(&[(ANSWER, AttributeValue::N("1".into()))])).is_err());
    }

    #[test]
    fn only_our_own_write_counts_as_ours() {
        let owner = Owner::new();
        let ours = item(&[("status", s("queued")), (OWNER, s(owner.token()))]);
        assert!(written_by(&ours, &owner));
        let other = item(&[("status", s("queued")), (OWNER, s("someone-else"))]);
        assert!(!written_by(&other, &owner));
        assert!(!written_by(&item(&[("status", s("queued"))]), &owner));
    }

    #[test]
    fn only_calls_with_work_ahead_are_not_final() {
        for status in [
            CallStatus::Received,
            CallStatus::Queued,
            CallStatus::Transcribing,
            CallStatus::Transcribed,
        ] {
            assert!(!status.is_final(), "{status:?}");
        }
        for status in [
            CallStatus::Skipped,
            CallStatus::Failed,
            CallStatus::Notified,
        ] {
            assert!(status.is_final(), "{status:?}");
        }
    }
}
