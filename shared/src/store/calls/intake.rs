//! The call record as its own delivery claim. The recording intake used to
//! claim `call#<id>` in the idempotency table, then create the record, then
//! move it, then complete the claim: four DynamoDB round trips around one
//! SQS send. Here the record carries the claim itself:
//!
//! - [`IntakeStore::claim`] is one conditional write: the record (status
//!   `received`, a random owner token, a lease in epoch ms) and its watch
//!   entry, in one transaction, only if there is no record yet, or it is
//!   still `received`, has no saved answer and no live lease (an earlier
//!   delivery failed or crashed before queueing). A call that needs no job
//!   is written in its final state with its answer instead, without a lease
//!   or watch entry (nothing about it can get stuck).
//! - A refused write returns the record as it was (`ALL_OLD`), so a
//!   duplicate learns without another read whether the call was handled
//!   (and the answer to replay), is in progress, or is free to take.
//! - [`IntakeStore::complete`] is one update: `received -> queued`, the
//!   answer duplicates get, the lease dropped, conditional on the owner.
//! - [`IntakeStore::release`] drops the lease after a failure, so the
//!   sender's retry takes the call at once.
//!
//! The owner token stays on the record after completion, so a completion
//! the SDK retried after a lost answer succeeds again instead of reporting
//! the claim lost.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{
    AttributeValue, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem,
};

use super::{CallRecord, CallStatus, DynamoCallStore, RECORD_ITEM, WATCH};
use crate::base::time::{epoch_millis, epoch_secs};
use crate::store::dedup::{Owner, Settled};
use crate::store::transactions::{self, Verdict};
use crate::store::{applied, StoreError};

const OWNER: &str = "intake_owner";
/// Epoch milliseconds until which the owner holds the call.
const LEASE: &str = "intake_lease_until";
/// The JSON answer duplicates receive.
const ANSWER: &str = "intake_answer";

/// The write's condition: no record, or one no delivery finished and none holds.
const FREE: &str = "attribute_not_exists(call_id) OR (#status = :received \
     AND attribute_not_exists(#answer) \
     AND (attribute_not_exists(#lease) OR #lease < :now_ms))";

/// How a delivery takes a call.
#[derive(Debug, Clone, Copy)]
pub enum Take<'a> {
    /// Hold it for `Duration` while its job is queued; `complete` or `release` follows.
    Lease(Duration),
    /// Nothing to queue: the record is already final; store it with this answer.
    Final(&'a serde_json::Value),
}

/// What taking a call found.
#[derive(Debug, Clone, PartialEq)]
pub enum Claimed {
    /// This delivery holds the call (`Take::Lease`).
    Acquired(Owner),
    /// The final record and its answer are stored (`Take::Final`).
    Stored,
    /// Handled before: the saved answer, or `None` for a call that is past
    /// `received` without one (its delivery died after queueing, or it
    /// predates answers on the record).
    Handled(Option<serde_json::Value>),
    /// Another delivery holds a live lease.
    InProgress,
}

/// The record as a reader sees it, for a waiting duplicate.
#[derive(Debug, Clone, PartialEq)]
pub enum Found {
    /// No record, or one free to take (see [`FREE`]).
    Free,
    InProgress,
    Handled(Option<serde_json::Value>),
}

/// Reads a record (or its absence) as the claim's condition would, at
/// `now_ms`. The saved answer wins; then a live lease; then a `received`
/// record is free to take, and anything further along was handled.
pub fn classify(
    item: Option<&HashMap<String, AttributeValue>>,
    now_ms: i64,
) -> Result<Found, StoreError> {
    let Some(item) = item else {
        return Ok(Found::Free);
    };
    if let Some(answer) = item.get(ANSWER) {
        let text = answer
            .as_s()
            .map_err(|_| StoreError::Malformed("intake answer is not a string".into()))?;
        let value = serde_json::from_str(text)
            .map_err(|e| StoreError::Malformed(format!("intake answer: {e}")))?;
        return Ok(Found::Handled(Some(value)));
    }
    let lease = item
        .get(LEASE)
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse::<i64>().ok());
    if lease.is_some_and(|until| until >= now_ms) {
        return Ok(Found::InProgress);
    }
    match item
        .get("status")
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
    {
        Some(status) if status == CallStatus::Received.as_str() => Ok(Found::Free),
        Some(_) => Ok(Found::Handled(None)),
        None => Err(StoreError::Malformed("call record without status".into())),
    }
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
    /// Takes the call for this delivery (see the module doc).
    async fn claim(&self, record: &CallRecord, take: Take<'_>) -> Result<Claimed, StoreError>;
    /// Reads the record consistently, without taking it.
    async fn peek(&self, call_id: &str) -> Result<Found, StoreError>;
    /// The job is queued: moves the record to `queued` (unless the worker
    /// already moved it on), saves `answer` for duplicates and ends the lease.
    async fn complete(
        &self,
        call_id: &str,
        owner: &Owner,
        answer: &serde_json::Value,
    ) -> Result<Settled, StoreError>;
    /// Gives the call up after a failure before queueing, so a retry takes it.
    async fn release(&self, call_id: &str, owner: &Owner) -> Result<Settled, StoreError>;
}

/// Tries of a claim whose refusing record turned out free by the time it was
/// read (its holder released it in between).
const CLAIM_ATTEMPTS: u32 = 3;

impl DynamoCallStore {
    fn record_item(
        &self,
        record: &CallRecord,
    ) -> Result<HashMap<String, AttributeValue>, StoreError> {
        let mut item: HashMap<String, AttributeValue> = serde_dynamo::to_item(record)?;
        item.insert("item".into(), AttributeValue::S(RECORD_ITEM.into()));
        Ok(item)
    }

    fn record_key(&self, call_id: &str) -> HashMap<String, AttributeValue> {
        HashMap::from([
            (
                "call_id".to_string(),
                AttributeValue::S(call_id.to_string()),
            ),
            ("item".to_string(), AttributeValue::S(RECORD_ITEM.into())),
        ])
    }

    async fn read_record(
        &self,
        call_id: &str,
    ) -> Result<Option<HashMap<String, AttributeValue>>, StoreError> {
        Ok(self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(self.record_key(call_id)))
            .consistent_read(true)
            .send()
            .await?
            .item)
    }

    /// Record + watch entry in one transaction. `Ok(None)`: written;
    /// `Ok(Some(old))`: refused, with the record as it was (if returned).
    async fn put_leased(
        &self,
        mut item: HashMap<String, AttributeValue>,
        call_id: &str,
        owner: &Owner,
        lease: Duration,
        now_ms: i64,
    ) -> Result<Option<Option<HashMap<String, AttributeValue>>>, StoreError> {
        item.insert(OWNER.into(), AttributeValue::S(owner.token().to_string()));
        let until = now_ms.saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2));
        item.insert(LEASE.into(), AttributeValue::N(until.to_string()));
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(FREE)
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#answer", ANSWER)
            .expression_attribute_names("#lease", LEASE)
            .expression_attribute_values(
                ":received",
                AttributeValue::S(CallStatus::Received.as_str().into()),
            )
            .expression_attribute_values(":now_ms", AttributeValue::N(now_ms.to_string()))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(|e| StoreError::Dynamo(e.to_string()))?;
        let due = epoch_secs() + i64::try_from(self.watch_after.as_secs()).unwrap_or(i64::MAX / 2);
        let watch = Put::builder()
            .table_name(&self.table)
            .set_item(Some(WATCH.item(call_id, due)))
            .build()
            .map_err(|e| StoreError::Dynamo(e.to_string()))?;
        let items = vec![
            TransactWriteItem::builder().put(put).build(),
            TransactWriteItem::builder().put(watch).build(),
        ];
        // A refused condition is an answer; contention and throttling are
        // retried by `transact`; any other reason is an error, never "duplicate".
        transactions::transact(
            &self.client,
            items,
            "call intake",
            None,
            |reasons| match reasons.first() {
                Some(record) if record.code() == Some("ConditionalCheckFailed") => {
                    Verdict::Done(Some(record.item().cloned()))
                }
                _ if transactions::busy(reasons) => Verdict::Retry(transactions::codes(reasons)),
                _ => Verdict::Fail(format!("call record: [{}]", transactions::codes(reasons))),
            },
        )
        .await
    }

    /// The final record with its answer, in one conditional put.
    async fn put_final(
        &self,
        mut item: HashMap<String, AttributeValue>,
        owner: &Owner,
        answer: &serde_json::Value,
        now_ms: i64,
    ) -> Result<Option<Option<HashMap<String, AttributeValue>>>, StoreError> {
        item.insert(OWNER.into(), AttributeValue::S(owner.token().to_string()));
        item.insert(ANSWER.into(), AttributeValue::S(answer.to_string()));
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(FREE)
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#answer", ANSWER)
            .expression_attribute_names("#lease", LEASE)
            .expression_attribute_values(
                ":received",
                AttributeValue::S(CallStatus::Received.as_str().into()),
            )
            .expression_attribute_values(":now_ms", AttributeValue::N(now_ms.to_string()))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(None),
            Err(err) => match err.as_service_error() {
                Some(
                    aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(
                        refused,
                    ),
                ) => Ok(Some(refused.item().cloned())),
                _ => Err(err.into()),
            },
        }
    }
}

#[async_trait]
impl IntakeStore for DynamoCallStore {
    async fn claim(&self, record: &CallRecord, take: Take<'_>) -> Result<Claimed, StoreError> {
        for _ in 0..CLAIM_ATTEMPTS {
            let now_ms = epoch_millis();
            let item = self.record_item(record)?;
            let owner = Owner::new();
            let refused = match take {
                Take::Lease(lease) => {
                    self.put_leased(item, &record.call_id, &owner, lease, now_ms)
                        .await?
                }
                Take::Final(answer) => self.put_final(item, &owner, answer, now_ms).await?,
            };
            let returned = match refused {
                None if matches!(take, Take::Lease(_)) => return Ok(Claimed::Acquired(owner)),
                None => return Ok(Claimed::Stored),
                Some(returned) => returned,
            };
            // DynamoDB returns the refusing record; an emulator may not.
            let old = match returned {
                Some(old) => Some(old),
                None => self.read_record(&record.call_id).await?,
            };
            if old.as_ref().is_some_and(|old| written_by(old, &owner)) {
                return Ok(match take {
                    Take::Lease(_) => Claimed::Acquired(owner),
                    Take::Final(_) => Claimed::Stored,
                });
            }
            match classify(old.as_ref(), epoch_millis())? {
                Found::Handled(answer) => return Ok(Claimed::Handled(answer)),
                Found::InProgress => return Ok(Claimed::InProgress),
                // Released, or its lease ran out, between the write and now.
                Found::Free => {}
            }
        }
        Err(StoreError::Dynamo(format!(
            "could not take call {}: record keeps changing",
            record.call_id
        )))
    }

    async fn peek(&self, call_id: &str) -> Result<Found, StoreError> {
        let item = self.read_record(call_id).await?;
        classify(item.as_ref(), epoch_millis())
    }

    async fn complete(
        &self,
        call_id: &str,
        owner: &Owner,
        answer: &serde_json::Value,
    ) -> Result<Settled, StoreError> {
        let queued = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.record_key(call_id)))
            .update_expression(
                "SET #status = :queued, #answer = :answer, \
                 #history = list_append(if_not_exists(#history, :empty), :entry) REMOVE #lease",
            )
            .condition_expression("#owner = :me AND #status = :received")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#answer", ANSWER)
            .expression_attribute_names("#history", "status_history")
            .expression_attribute_names("#lease", LEASE)
            .expression_attribute_names("#owner", OWNER)
            .expression_attribute_values(
                ":queued",
                AttributeValue::S(CallStatus::Queued.as_str().into()),
            )
            .expression_attribute_values(
                ":received",
                AttributeValue::S(CallStatus::Received.as_str().into()),
            )
            .expression_attribute_values(":answer", AttributeValue::S(answer.to_string()))
            .expression_attribute_values(":empty", AttributeValue::L(vec![]))
            .expression_attribute_values(":entry", Self::history_entry(CallStatus::Queued, None)?)
            .expression_attribute_values(":me", AttributeValue::S(owner.token().to_string()))
            .send()
            .await;
        if applied(queued)? {
            return Ok(Settled::Done);
        }
        // The worker already moved the call on (or this is a retry of a
        // completion that landed): save the answer, leave the status alone.
        let answered = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.record_key(call_id)))
            .update_expression("SET #answer = :answer REMOVE #lease")
            .condition_expression("#owner = :me")
            .expression_attribute_names("#answer", ANSWER)
            .expression_attribute_names("#lease", LEASE)
            .expression_attribute_names("#owner", OWNER)
            .expression_attribute_values(":answer", AttributeValue::S(answer.to_string()))
            .expression_attribute_values(":me", AttributeValue::S(owner.token().to_string()))
            .send()
            .await;
        Ok(if applied(answered)? {
            Settled::Done
        } else {
            tracing::warn!(%call_id, "intake lease was taken over; answer not saved");
            Settled::Lost
        })
    }

    async fn release(&self, call_id: &str, owner: &Owner) -> Result<Settled, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.record_key(call_id)))
            .update_expression("REMOVE #lease, #owner")
            .condition_expression(
                "#owner = :me AND #status = :received AND attribute_not_exists(#answer)",
            )
            .expression_attribute_names("#lease", LEASE)
            .expression_attribute_names("#owner", OWNER)
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#answer", ANSWER)
            .expression_attribute_values(":me", AttributeValue::S(owner.token().to_string()))
            .expression_attribute_values(
                ":received",
                AttributeValue::S(CallStatus::Received.as_str().into()),
            )
            .send()
            .await;
        Ok(if applied(result)? {
            Settled::Done
        } else {
            Settled::Lost
        })
    }
}

/// Takes the call; if another delivery holds it, waits up to `budget`
/// (consistent reads, short jittered backoff) for that one's answer. A call
/// released or whose lease lapsed meanwhile is taken by this delivery; only
/// one still held after the wait is `InProgress`.
pub async fn claim_or_wait(
    store: &dyn IntakeStore,
    record: &CallRecord,
    take: Take<'_>,
    budget: Duration,
) -> Result<Claimed, StoreError> {
    let first = store.claim(record, take).await?;
    if first != Claimed::InProgress || budget.is_zero() {
        return Ok(first);
    }
    let answer = crate::store::dedup::wait_for_holder(budget, |waited| async move {
        Ok(match store.peek(&record.call_id).await? {
            Found::InProgress => None,
            Found::Handled(answer) => Some(Claimed::Handled(answer)),
            Found::Free => {
                let take = match take {
                    Take::Lease(lease) => Take::Lease(lease.saturating_sub(waited)),
                    other => other,
                };
                match store.claim(record, take).await? {
                    Claimed::InProgress => None,
                    other => Some(other),
                }
            }
        })
    })
    .await?;
    Ok(answer.unwrap_or(Claimed::InProgress))
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

    fn n(v: i64) -> AttributeValue {
        AttributeValue::N(v.to_string())
    }

    const NOW: i64 = 1_700_000_000_000;

    #[test]
    fn no_record_is_free() {
        assert_eq!(classify(None, NOW).unwrap(), Found::Free);
    }

    #[test]
    fn a_saved_answer_is_replayed_whatever_the_status() {
        for status in ["queued", "transcribing", "notified", "skipped", "received"] {
            let record = item(&[
                ("status", s(status)),
                (ANSWER, s(r#"{"message":"Call queued for processing"}"#)),
                (LEASE, n(NOW + 10_000)),
            ]);
            assert_eq!(
                classify(Some(&record), NOW).unwrap(),
                Found::Handled(Some(
                    serde_json::json!({"message": "Call queued for processing"})
                )),
                "{status}"
            );
        }
    }

    #[test]
    fn a_live_lease_is_in_progress_even_once_the_worker_moved_the_call() {
        for status in ["received", "transcribing"] {
            let record = item(&[("status", s(status)), (LEASE, n(NOW + 1))]);
            assert_eq!(
                classify(Some(&record), NOW).unwrap(),
                Found::InProgress,
                "{status}"
            );
        }
        let at_the_edge = item(&[("status", s("received")), (LEASE, n(NOW))]);
        assert_eq!(
            classify(Some(&at_the_edge), NOW).unwrap(),
            Found::InProgress
        );
    }

    #[test]
    fn a_received_record_without_a_live_lease_is_free_to_retake() {
        let expired = item(&[("status", s("received")), (LEASE, n(NOW - 1))]);
        assert_eq!(classify(Some(&expired), NOW).unwrap(), Found::Free);
        // Released, or written before records carried leases.
        let released = item(&[("status", s("received"))]);
        assert_eq!(classify(Some(&released), NOW).unwrap(), Found::Free);
    }

    #[test]
    fn a_call_past_received_without_an_answer_was_handled() {
        let moved_on = item(&[("status", s("transcribing")), (LEASE, n(NOW - 1))]);
        assert_eq!(
            classify(Some(&moved_on), NOW).unwrap(),
            Found::Handled(None)
        );
        let older = item(&[("status", s("notified"))]);
        assert_eq!(classify(Some(&older), NOW).unwrap(), Found::Handled(None));
    }

    #[test]
    fn malformed_records_are_errors_not_guesses() {
        assert!(classify(Some(&item(&[(ANSWER, s("{not json"))])), NOW).is_err());
        assert!(classify(Some(&item(&[(ANSWER, n(1))])), NOW).is_err());
        assert!(classify(Some(&item(&[])), NOW).is_err());
    }

    #[test]
    fn only_our_own_unanswered_write_counts_as_ours() {
        let owner = Owner::new();
        let ours = item(&[("status", s("received")), (OWNER, s(owner.token()))]);
        assert!(written_by(&ours, &owner));
        let other = item(&[("status", s("received")), (OWNER, s("someone-else"))]);
        assert!(!written_by(&other, &owner));
        assert!(!written_by(&item(&[("status", s("received"))]), &owner));
    }
}
