//! Webhooks out: an organisation's endpoints, the events (messages) sent to
//! them, one delivery per (message, endpoint), one record per attempt, and
//! the ledger of retries due later than SQS can delay. All in one table:
//!
//! | pk              | sk                          | what                          |
//! |-----------------|-----------------------------|-------------------------------|
//! | `org#{org}`     | `endpoint#{id}`             | an endpoint                   |
//! | `org#{org}`     | `endpoints`                 | the organisation's count      |
//! | `msg#{id}`      | `message`                   | the event, its body as sent   |
//! | `msg#{id}`      | `delivery#{endpoint}`       | its delivery to one endpoint  |
//! | `msg#{id}`      | `attempt#{endpoint}#{n}`    | one attempt (index ByEndpoint)|
//! | `retries`       | `{due:012}#{endpoint}#{msg}`| a retry due later             |
//!
//! A delivery moves `pending` → `sending` (claimed for one attempt number,
//! under a lease) → `succeeded`, `failed` or back to `pending` for the next
//! attempt; every move is one conditional write on the attempt number, so a
//! redelivered job for an attempt already made changes nothing.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{
    AttributeValue, CancellationReason, Delete, Put, ReturnValue, TransactWriteItem, Update,
};
use aws_sdk_dynamodb::Client;
use serde::{Deserialize, Serialize};

use super::transactions::{self, Verdict};
use super::{applied, s, StoreError};

/// Records (messages, deliveries, attempts, ledger entries) expire after 30 days.
pub const RECORD_DAYS: i64 = 30;
const RETRIES_PARTITION: &str = "retries";
/// The per-endpoint attempts index.
pub const BY_ENDPOINT_INDEX: &str = "ByEndpoint";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Endpoint {
    pub endpoint_id: String,
    pub org_id: String,
    pub url: String,
    /// Empty: every event type.
    #[serde(default)]
    pub event_types: Vec<String>,
    /// Not stored when empty (DynamoDB Local refuses empty strings).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_at: Option<String>,
    /// `whsec_…`: signs every delivery.
    pub secret: String,
    /// The secret before the last rotation, still signing until `previous_until`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_until: Option<i64>,
    pub created_at: String,
    pub updated_at: String,
    /// Epoch seconds of the first failed attempt since the last success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<i64>,
    /// Until then its first attempts go to the slow lane (it was slow to answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_until: Option<i64>,
}

impl Endpoint {
    pub fn wants(&self, event_type: &str) -> bool {
        self.event_types.is_empty() || self.event_types.iter().any(|t| t == event_type)
    }

    /// The secrets that sign at `now`: the current one, and the previous one
    /// during its overlap.
    pub fn signing_secrets(&self, now: i64) -> Vec<&str> {
        let mut secrets = vec![self.secret.as_str()];
        if let (Some(previous), Some(until)) = (&self.previous_secret, self.previous_until) {
            if now < until {
                secrets.push(previous);
            }
        }
        secrets
    }
}

/// What an update may change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EndpointPatch {
    pub url: Option<String>,
    pub event_types: Option<Vec<String>>,
    pub description: Option<String>,
    /// `Some(true)` enables (and forgets the failure streak), `Some(false)` disables.
    pub enabled: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredMessage {
    pub message_id: String,
    pub org_id: String,
    pub event_type: String,
    /// RFC 3339, as in the envelope.
    pub timestamp: String,
    /// The envelope exactly as signed and sent.
    pub body: String,
    pub expires_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    Pending,
    Sending,
    Succeeded,
    Failed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sending => "sending",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub message_id: String,
    pub endpoint_id: String,
    pub org_id: String,
    pub state: DeliveryState,
    /// The attempt being made or due next (0-based).
    pub attempt: u32,
    /// The attempt that started the current series (0, or a replay's):
    /// the retry schedule counts from it.
    #[serde(default)]
    pub series_start: u32,
    /// While `sending`: until when the claim holds (epoch seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<i64>,
    /// When the attempt is due (epoch seconds).
    pub next_at: i64,
    /// The retry ledger entry that stands for the due attempt, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger_entry: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub expires_at: i64,
}

impl Delivery {
    /// A delivery whose first attempt (number 0) is due at `now`.
    pub fn first(message_id: &str, endpoint_id: &str, org_id: &str, now: i64) -> Self {
        Self {
            message_id: message_id.to_string(),
            endpoint_id: endpoint_id.to_string(),
            org_id: org_id.to_string(),
            state: DeliveryState::Pending,
            attempt: 0,
            series_start: 0,
            lease_until: None,
            next_at: now,
            ledger_entry: None,
            last_status: None,
            last_error: None,
            expires_at: expires_at(now),
        }
    }
}

/// When a record written at `now` expires.
pub fn expires_at(now: i64) -> i64 {
    now + RECORD_DAYS * 86_400
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    Succeeded,
    Failed,
    /// The worker stopped before it recorded what happened; retried with the same id.
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub message_id: String,
    pub endpoint_id: String,
    pub org_id: String,
    pub event_type: String,
    pub attempt: u32,
    /// RFC 3339.
    pub at: String,
    pub at_ms: i64,
    pub outcome: AttemptOutcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    pub latency_ms: u64,
    /// The first 1 KB of the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `scheduled`, `replay`, `recover` or `test`.
    pub trigger: String,
    pub expires_at: i64,
}

/// A retry due later: the sweep queues it when it is within SQS's reach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryEntry {
    pub entry: String,
    pub org_id: String,
    pub endpoint_id: String,
    pub message_id: String,
    pub attempt: u32,
    pub due: i64,
    /// A job for it is on the queue already.
    #[serde(default)]
    pub queued: bool,
}

/// `sk` of a retry entry.
pub fn retry_entry(due: i64, endpoint_id: &str, message_id: &str) -> String {
    format!("{due:012}#{endpoint_id}#{message_id}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointCreated {
    Created,
    LimitReached,
}

/// The answer to a claim of one attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// Ours to send, as this delivery (attempt number may have moved on
    /// past an attempt whose outcome is unknown: see `unknown`).
    Claimed {
        delivery: Delivery,
        /// The attempt before this one was claimed and never settled.
        unknown: Option<u32>,
    },
    /// Another worker holds it under a live lease.
    Busy,
    /// The attempt was made already (or the delivery is gone): nothing to do.
    Stale(Option<Delivery>),
}

/// How an attempt ended, for the delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum Settle {
    Succeeded {
        status: u16,
    },
    /// No more attempts (schedule done, 410, endpoint disabled).
    Failed {
        status: Option<u16>,
        error: String,
    },
    /// Another attempt at `next_at`; `queued`: a job for it goes to SQS now.
    Retry {
        status: Option<u16>,
        error: String,
        next_at: i64,
        queued: bool,
        /// The attempt ended without an outcome of its own (moved to the
        /// slow lane): the next one takes its place in the schedule.
        free: bool,
    },
}

/// One page of an endpoint's attempts, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptPage {
    pub attempts: Vec<AttemptRecord>,
    /// Where the next (older) page starts.
    pub next: Option<HashMap<String, String>>,
}

#[async_trait]
pub trait WebhookStore: Send + Sync {
    async fn create_endpoint(
        &self,
        endpoint: &Endpoint,
        max_per_org: u32,
    ) -> Result<EndpointCreated, StoreError>;
    async fn endpoint(&self, org_id: &str, id: &str) -> Result<Option<Endpoint>, StoreError>;
    async fn endpoints(&self, org_id: &str) -> Result<Vec<Endpoint>, StoreError>;
    async fn update_endpoint(
        &self,
        org_id: &str,
        id: &str,
        patch: &EndpointPatch,
    ) -> Result<Option<Endpoint>, StoreError>;
    async fn delete_endpoint(&self, org_id: &str, id: &str) -> Result<bool, StoreError>;
    /// New current secret; the old one signs beside it until `previous_until`.
    async fn rotate_secret(
        &self,
        org_id: &str,
        id: &str,
        secret: &str,
        previous_until: i64,
    ) -> Result<Option<Endpoint>, StoreError>;
    /// Its first attempts go to the slow lane until `until`.
    async fn mark_slow(&self, org_id: &str, id: &str, until: i64) -> Result<(), StoreError>;
    /// A success: the failure streak and the slow mark end.
    async fn mark_healthy(&self, org_id: &str, id: &str) -> Result<(), StoreError>;
    /// A failure: starts the streak if none runs; returns when it started.
    async fn note_failure(&self, org_id: &str, id: &str, now: i64) -> Result<i64, StoreError>;
    /// Disables an enabled endpoint: `true` only for the one call that did.
    async fn disable(&self, org_id: &str, id: &str, reason: &str) -> Result<bool, StoreError>;

    /// Stores the event once: `false` when it was stored already.
    async fn put_message(&self, message: &StoredMessage) -> Result<bool, StoreError>;
    async fn message(&self, message_id: &str) -> Result<Option<StoredMessage>, StoreError>;

    /// Creates the delivery, or returns the one that exists.
    async fn create_delivery(&self, delivery: &Delivery) -> Result<Option<Delivery>, StoreError>;
    async fn delivery(
        &self,
        message_id: &str,
        endpoint_id: &str,
    ) -> Result<Option<Delivery>, StoreError>;
    /// Claims attempt `attempt` until `lease_until`.
    async fn claim(
        &self,
        message_id: &str,
        endpoint_id: &str,
        attempt: u32,
        now: i64,
        lease_until: i64,
    ) -> Result<Claim, StoreError>;
    /// Ends the claimed attempt of `delivery` (as `claim` returned it) and
    /// records it, in one transaction: `false` when it was no longer ours.
    async fn settle(
        &self,
        delivery: &Delivery,
        settle: &Settle,
        record: &AttemptRecord,
    ) -> Result<bool, StoreError>;
    /// Makes a settled or waiting delivery due again now, as a new series;
    /// the attempt number to send, or `None` when it is being sent.
    async fn reopen(
        &self,
        message_id: &str,
        endpoint_id: &str,
        now: i64,
    ) -> Result<Option<u32>, StoreError>;

    /// Records an attempt settled elsewhere (an unknown outcome); the first
    /// record of an attempt number stands.
    async fn record_attempt(&self, attempt: &AttemptRecord) -> Result<(), StoreError>;
    /// An endpoint's attempts, newest first, from `since_ms` on.
    async fn endpoint_attempts(
        &self,
        endpoint_id: &str,
        since_ms: i64,
        outcome: Option<AttemptOutcome>,
        limit: i32,
        after: Option<&HashMap<String, String>>,
    ) -> Result<AttemptPage, StoreError>;
    async fn message_attempts(&self, message_id: &str) -> Result<Vec<AttemptRecord>, StoreError>;

    /// Retry entries due by `until`, oldest first.
    async fn due_retries(&self, until: i64, limit: i32) -> Result<Vec<RetryEntry>, StoreError>;
    /// Notes that a job for the entry is on the queue.
    async fn mark_queued(&self, entry: &str) -> Result<(), StoreError>;
    /// Drops an entry no delivery stands behind any more.
    async fn drop_retry(&self, entry: &str) -> Result<(), StoreError>;
}

pub struct DynamoWebhookStore {
    pub client: Client,
    pub table: String,
}

type Item = HashMap<String, AttributeValue>;

fn key(pk: &str, sk: &str) -> Item {
    HashMap::from([("pk".to_string(), s(pk)), ("sk".to_string(), s(sk))])
}

fn org_pk(org_id: &str) -> String {
    format!("org#{org_id}")
}

fn endpoint_sk(id: &str) -> String {
    format!("endpoint#{id}")
}

fn msg_pk(message_id: &str) -> String {
    format!("msg#{message_id}")
}

fn delivery_sk(endpoint_id: &str) -> String {
    format!("delivery#{endpoint_id}")
}

fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn with_key<T: Serialize>(value: &T, pk: &str, sk: &str) -> Result<Item, StoreError> {
    let mut item: Item = serde_dynamo::to_item(value)?;
    item.extend(key(pk, sk));
    Ok(item)
}

fn dynamo_err(err: impl std::fmt::Display) -> StoreError {
    StoreError::Dynamo(err.to_string())
}

impl DynamoWebhookStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    async fn get(&self, pk: &str, sk: &str) -> Result<Option<Item>, StoreError> {
        Ok(self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(pk, sk)))
            .consistent_read(true)
            .send()
            .await?
            .item)
    }

    fn delete_entry(&self, entry: &str) -> Result<TransactWriteItem, StoreError> {
        Ok(TransactWriteItem::builder()
            .delete(
                Delete::builder()
                    .table_name(&self.table)
                    .set_key(Some(key(RETRIES_PARTITION, entry)))
                    .build()
                    .map_err(dynamo_err)?,
            )
            .build())
    }
}

/// Where a scan of an endpoint's attempts resumes after `attempt` (its
/// table and index keys, as `ExclusiveStartKey` takes them).
pub fn attempt_cursor(attempt: &AttemptRecord) -> HashMap<String, String> {
    HashMap::from([
        ("pk".to_string(), msg_pk(&attempt.message_id)),
        (
            "sk".to_string(),
            format!("attempt#{}#{:04}", attempt.endpoint_id, attempt.attempt),
        ),
        ("ep_key".to_string(), format!("ep#{}", attempt.endpoint_id)),
        (
            "ep_at".to_string(),
            format!(
                "{:013}#{}#{:04}",
                attempt.at_ms, attempt.message_id, attempt.attempt
            ),
        ),
    ])
}

/// An attempt's item, with the keys of the per-endpoint index.
fn attempt_item(attempt: &AttemptRecord) -> Result<Item, StoreError> {
    let mut item = with_key(
        attempt,
        &msg_pk(&attempt.message_id),
        &format!("attempt#{}#{:04}", attempt.endpoint_id, attempt.attempt),
    )?;
    item.insert("ep_key".into(), s(&format!("ep#{}", attempt.endpoint_id)));
    item.insert(
        "ep_at".into(),
        s(&format!(
            "{:013}#{}#{:04}",
            attempt.at_ms, attempt.message_id, attempt.attempt
        )),
    );
    Ok(item)
}

/// An update's new item, or `None` when its condition (the item exists) failed.
fn updated<E, R>(
    result: Result<
        aws_sdk_dynamodb::operation::update_item::UpdateItemOutput,
        aws_sdk_dynamodb::error::SdkError<E, R>,
    >,
) -> Result<Option<Endpoint>, StoreError>
where
    E: std::error::Error + aws_sdk_dynamodb::error::ProvideErrorMetadata + 'static,
    R: std::fmt::Debug,
{
    match result {
        Ok(out) => out
            .attributes
            .map(|item| serde_dynamo::from_item(item).map_err(Into::into))
            .transpose(),
        Err(err) if err.as_service_error().is_some_and(super::condition_failed) => Ok(None),
        Err(err) => Err(err.into()),
    }
}

fn cancelled_on_condition<T>(reasons: &[CancellationReason], refused: T) -> Verdict<T> {
    if transactions::busy(reasons) {
        Verdict::Retry("busy".into())
    } else if reasons
        .iter()
        .any(|r| r.code() == Some("ConditionalCheckFailed"))
    {
        Verdict::Done(refused)
    } else {
        Verdict::Fail(
            reasons
                .iter()
                .filter_map(|r| r.code())
                .collect::<Vec<_>>()
                .join(","),
        )
    }
}

#[async_trait]
impl WebhookStore for DynamoWebhookStore {
    async fn create_endpoint(
        &self,
        endpoint: &Endpoint,
        max_per_org: u32,
    ) -> Result<EndpointCreated, StoreError> {
        let pk = org_pk(&endpoint.org_id);
        // The count and the endpoint in one transaction: no check-then-act.
        let count = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(&pk, "endpoints")))
            .update_expression("ADD #count :one")
            .condition_expression("attribute_not_exists(#count) OR #count < :max")
            .expression_attribute_names("#count", "count")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":max", n(max_per_org))
            .build()
            .map_err(dynamo_err)?;
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(with_key(
                endpoint,
                &pk,
                &endpoint_sk(&endpoint.endpoint_id),
            )?))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(dynamo_err)?;
        transactions::transact(
            &self.client,
            vec![
                TransactWriteItem::builder().update(count).build(),
                TransactWriteItem::builder().put(put).build(),
            ],
            "create webhook endpoint",
            EndpointCreated::Created,
            |reasons| cancelled_on_condition(reasons, EndpointCreated::LimitReached),
        )
        .await
    }

    async fn endpoint(&self, org_id: &str, id: &str) -> Result<Option<Endpoint>, StoreError> {
        self.get(&org_pk(org_id), &endpoint_sk(id))
            .await?
            .map(|item| serde_dynamo::from_item(item).map_err(Into::into))
            .transpose()
    }

    async fn endpoints(&self, org_id: &str) -> Result<Vec<Endpoint>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
            .expression_attribute_values(":pk", s(&org_pk(org_id)))
            .expression_attribute_values(":prefix", s("endpoint#"))
            .consistent_read(true)
            .send()
            .await?;
        out.items
            .unwrap_or_default()
            .into_iter()
            .map(|item| serde_dynamo::from_item(item).map_err(Into::into))
            .collect()
    }

    async fn update_endpoint(
        &self,
        org_id: &str,
        id: &str,
        patch: &EndpointPatch,
    ) -> Result<Option<Endpoint>, StoreError> {
        let mut fields: Vec<(&'static str, AttributeValue)> = Vec::new();
        if let Some(url) = &patch.url {
            fields.push(("url", s(url)));
        }
        if let Some(types) = &patch.event_types {
            fields.push(("event_types", serde_dynamo::to_attribute_value(types)?));
        }
        if let Some(description) = &patch.description {
            fields.push(("description", s(description)));
        }
        let mut removes = Vec::new();
        match patch.enabled {
            Some(true) => {
                fields.push(("enabled", AttributeValue::Bool(true)));
                removes.extend(["disabled_reason", "disabled_at", "failing_since"]);
            }
            Some(false) => {
                fields.push(("enabled", AttributeValue::Bool(false)));
                fields.push(("disabled_reason", s("disabled by the organisation")));
                fields.push(("disabled_at", s(&crate::base::time::now_rfc3339())));
            }
            None => {}
        }
        let (mut expression, mut names, values) = super::patch_update(fields);
        if !removes.is_empty() {
            let mut parts = Vec::new();
            for (i, name) in removes.iter().enumerate() {
                names.insert(format!("#r{i}"), name.to_string());
                parts.push(format!("#r{i}"));
            }
            expression.push_str(&format!(" REMOVE {}", parts.join(", ")));
        }
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(&org_pk(org_id), &endpoint_sk(id))))
            .update_expression(expression)
            .condition_expression("attribute_exists(pk)")
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        updated(result)
    }

    async fn delete_endpoint(&self, org_id: &str, id: &str) -> Result<bool, StoreError> {
        let pk = org_pk(org_id);
        let delete = Delete::builder()
            .table_name(&self.table)
            .set_key(Some(key(&pk, &endpoint_sk(id))))
            .condition_expression("attribute_exists(pk)")
            .build()
            .map_err(dynamo_err)?;
        let count = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(&pk, "endpoints")))
            .update_expression("ADD #count :minus")
            .expression_attribute_names("#count", "count")
            .expression_attribute_values(":minus", n(-1))
            .build()
            .map_err(dynamo_err)?;
        transactions::transact(
            &self.client,
            vec![
                TransactWriteItem::builder().delete(delete).build(),
                TransactWriteItem::builder().update(count).build(),
            ],
            "delete webhook endpoint",
            true,
            |reasons| cancelled_on_condition(reasons, false),
        )
        .await
    }

    async fn rotate_secret(
        &self,
        org_id: &str,
        id: &str,
        secret: &str,
        previous_until: i64,
    ) -> Result<Option<Endpoint>, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(&org_pk(org_id), &endpoint_sk(id))))
            .update_expression(
                "SET previous_secret = secret, previous_until = :until, secret = :new, updated_at = :now",
            )
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":until", n(previous_until))
            .expression_attribute_values(":new", s(secret))
            .expression_attribute_values(":now", s(&crate::base::time::now_rfc3339()))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        updated(result)
    }

    async fn mark_slow(&self, org_id: &str, id: &str, until: i64) -> Result<(), StoreError> {
        applied(
            self.client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key(&org_pk(org_id), &endpoint_sk(id))))
                .update_expression("SET slow_until = :until")
                .condition_expression("attribute_exists(pk)")
                .expression_attribute_values(":until", n(until))
                .send()
                .await,
        )?;
        Ok(())
    }

    async fn mark_healthy(&self, org_id: &str, id: &str) -> Result<(), StoreError> {
        applied(
            self.client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key(&org_pk(org_id), &endpoint_sk(id))))
                .update_expression("REMOVE failing_since, slow_until")
                .condition_expression("attribute_exists(pk)")
                .send()
                .await,
        )?;
        Ok(())
    }

    async fn note_failure(&self, org_id: &str, id: &str, now: i64) -> Result<i64, StoreError> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(&org_pk(org_id), &endpoint_sk(id))))
            .update_expression("SET failing_since = if_not_exists(failing_since, :now)")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":now", n(now))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await;
        match out {
            Ok(out) => Ok(out
                .attributes
                .and_then(|a| a.get("failing_since").cloned())
                .and_then(|v| v.as_n().ok().and_then(|n| n.parse().ok()))
                .unwrap_or(now)),
            // Deleted meanwhile: nothing streaks.
            Err(err) if err.as_service_error().is_some_and(super::condition_failed) => Ok(now),
            Err(err) => Err(err.into()),
        }
    }

    async fn disable(&self, org_id: &str, id: &str, reason: &str) -> Result<bool, StoreError> {
        applied(
            self.client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key(&org_pk(org_id), &endpoint_sk(id))))
                .update_expression(
                    "SET enabled = :no, disabled_reason = :reason, disabled_at = :now, updated_at = :now",
                )
                .condition_expression("attribute_exists(pk) AND enabled = :yes")
                .expression_attribute_values(":no", AttributeValue::Bool(false))
                .expression_attribute_values(":yes", AttributeValue::Bool(true))
                .expression_attribute_values(":reason", s(reason))
                .expression_attribute_values(":now", s(&crate::base::time::now_rfc3339()))
                .send()
                .await,
        )
    }

    async fn put_message(&self, message: &StoredMessage) -> Result<bool, StoreError> {
        applied(
            self.client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(with_key(
                    message,
                    &msg_pk(&message.message_id),
                    "message",
                )?))
                .condition_expression("attribute_not_exists(pk)")
                .send()
                .await,
        )
    }

    async fn message(&self, message_id: &str) -> Result<Option<StoredMessage>, StoreError> {
        self.get(&msg_pk(message_id), "message")
            .await?
            .map(|item| serde_dynamo::from_item(item).map_err(Into::into))
            .transpose()
    }

    async fn create_delivery(&self, delivery: &Delivery) -> Result<Option<Delivery>, StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(with_key(
                delivery,
                &msg_pk(&delivery.message_id),
                &delivery_sk(&delivery.endpoint_id),
            )?))
            .condition_expression("attribute_not_exists(pk)")
            .return_values_on_condition_check_failure(
                aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure::AllOld,
            )
            .send()
            .await;
        match result {
            Ok(_) => Ok(None),
            Err(err) => match err.as_service_error() {
                Some(
                    aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(
                        failed,
                    ),
                ) => match failed.item() {
                    Some(item) => Ok(Some(serde_dynamo::from_item(item.clone())?)),
                    // An emulator that returns no item: read it.
                    None => self.delivery(&delivery.message_id, &delivery.endpoint_id).await,
                },
                _ => Err(err.into()),
            },
        }
    }

    async fn delivery(
        &self,
        message_id: &str,
        endpoint_id: &str,
    ) -> Result<Option<Delivery>, StoreError> {
        self.get(&msg_pk(message_id), &delivery_sk(endpoint_id))
            .await?
            .map(|item| serde_dynamo::from_item(item).map_err(Into::into))
            .transpose()
    }

    async fn claim(
        &self,
        message_id: &str,
        endpoint_id: &str,
        attempt: u32,
        now: i64,
        lease_until: i64,
    ) -> Result<Claim, StoreError> {
        let pk = msg_pk(message_id);
        let sk = delivery_sk(endpoint_id);
        let first = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(&pk, &sk)))
            .update_expression("SET #state = :sending, lease_until = :lease")
            .condition_expression("#state = :pending AND attempt = :n")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":sending", s("sending"))
            .expression_attribute_values(":pending", s("pending"))
            .expression_attribute_values(":lease", n(lease_until))
            .expression_attribute_values(":n", n(attempt))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match first {
            Ok(out) => {
                let delivery = serde_dynamo::from_item(out.attributes.unwrap_or_default())?;
                return Ok(Claim::Claimed {
                    delivery,
                    unknown: None,
                });
            }
            Err(err) if err.as_service_error().is_some_and(super::condition_failed) => {}
            Err(err) => return Err(err.into()),
        }
        let Some(current) = self.delivery(message_id, endpoint_id).await? else {
            return Ok(Claim::Stale(None));
        };
        if current.state != DeliveryState::Sending || current.attempt != attempt {
            return Ok(Claim::Stale(Some(current)));
        }
        if current.lease_until.unwrap_or(0) > now {
            return Ok(Claim::Busy);
        }
        // The holder stopped without settling: its outcome is unknown. The
        // next attempt number takes over, with the same webhook-id.
        let taken = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(&pk, &sk)))
            .update_expression("SET lease_until = :lease, attempt = :next")
            .condition_expression("#state = :sending AND attempt = :n AND lease_until = :old")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":sending", s("sending"))
            .expression_attribute_values(":lease", n(lease_until))
            .expression_attribute_values(":n", n(attempt))
            .expression_attribute_values(":next", n(attempt + 1))
            .expression_attribute_values(":old", n(current.lease_until.unwrap_or(0)))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match taken {
            Ok(out) => Ok(Claim::Claimed {
                delivery: serde_dynamo::from_item(out.attributes.unwrap_or_default())?,
                unknown: Some(attempt),
            }),
            Err(err) if err.as_service_error().is_some_and(super::condition_failed) => {
                Ok(Claim::Busy)
            }
            Err(err) => Err(err.into()),
        }
    }

    async fn settle(
        &self,
        delivery: &Delivery,
        settle: &Settle,
        record: &AttemptRecord,
    ) -> Result<bool, StoreError> {
        let pk = msg_pk(&delivery.message_id);
        let sk = delivery_sk(&delivery.endpoint_id);
        let mut update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(&pk, &sk)))
            .condition_expression("#state = :sending AND attempt = :n")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":sending", s("sending"))
            .expression_attribute_values(":n", n(delivery.attempt));
        let mut items = Vec::new();
        let (status, error) = match settle {
            Settle::Succeeded { status } => (Some(*status), None),
            Settle::Failed { status, error } | Settle::Retry { status, error, .. } => {
                (*status, Some(error.clone()))
            }
        };
        let mut sets = vec!["#state = :to".to_string()];
        let mut removes = vec!["lease_until".to_string(), "ledger_entry".to_string()];
        match status {
            Some(code) => {
                sets.push("last_status = :status".into());
                update = update.expression_attribute_values(":status", n(code));
            }
            None => removes.push("last_status".into()),
        }
        match &error {
            Some(error) => {
                sets.push("last_error = :error".into());
                update = update.expression_attribute_values(":error", s(error));
            }
            None => removes.push("last_error".into()),
        }
        match settle {
            Settle::Succeeded { .. } => {
                update = update.expression_attribute_values(":to", s("succeeded"));
            }
            Settle::Failed { .. } => {
                update = update.expression_attribute_values(":to", s("failed"));
            }
            Settle::Retry {
                next_at,
                queued,
                free,
                ..
            } => {
                let entry = retry_entry(*next_at, &delivery.endpoint_id, &delivery.message_id);
                if *free {
                    sets.push("series_start = :series".into());
                    update =
                        update.expression_attribute_values(":series", n(delivery.series_start + 1));
                }
                sets.push("attempt = :next".into());
                sets.push("next_at = :at".into());
                sets.push("ledger_entry = :entry".into());
                removes.retain(|r| r != "ledger_entry");
                update = update
                    .expression_attribute_values(":to", s("pending"))
                    .expression_attribute_values(":next", n(delivery.attempt + 1))
                    .expression_attribute_values(":at", n(*next_at))
                    .expression_attribute_values(":entry", s(&entry));
                let ledger = RetryEntry {
                    entry: entry.clone(),
                    org_id: delivery.org_id.clone(),
                    endpoint_id: delivery.endpoint_id.clone(),
                    message_id: delivery.message_id.clone(),
                    attempt: delivery.attempt + 1,
                    due: *next_at,
                    queued: *queued,
                };
                let mut item = with_key(&ledger, RETRIES_PARTITION, &entry)?;
                item.insert("expires_at".into(), n(delivery.expires_at));
                items.push(
                    TransactWriteItem::builder()
                        .put(
                            Put::builder()
                                .table_name(&self.table)
                                .set_item(Some(item))
                                .build()
                                .map_err(dynamo_err)?,
                        )
                        .build(),
                );
            }
        }
        let update = update
            .update_expression(format!(
                "SET {} REMOVE {}",
                sets.join(", "),
                removes.join(", ")
            ))
            .build()
            .map_err(dynamo_err)?;
        items.insert(0, TransactWriteItem::builder().update(update).build());
        if let Some(old) = &delivery.ledger_entry {
            items.push(self.delete_entry(old)?);
        }
        items.push(
            TransactWriteItem::builder()
                .put(
                    Put::builder()
                        .table_name(&self.table)
                        .set_item(Some(attempt_item(record)?))
                        .build()
                        .map_err(dynamo_err)?,
                )
                .build(),
        );
        transactions::transact(&self.client, items, "settle webhook attempt", true, |r| {
            cancelled_on_condition(r, false)
        })
        .await
    }

    async fn reopen(
        &self,
        message_id: &str,
        endpoint_id: &str,
        now: i64,
    ) -> Result<Option<u32>, StoreError> {
        for _ in 0..3 {
            let Some(current) = self.delivery(message_id, endpoint_id).await? else {
                return Ok(None);
            };
            if current.state == DeliveryState::Sending && current.lease_until.unwrap_or(0) > now {
                return Ok(None);
            }
            // A waiting delivery is made due now at the same attempt; a
            // settled (or abandoned) one starts a new series.
            let attempt = if current.state == DeliveryState::Pending {
                current.attempt
            } else {
                current.attempt + 1
            };
            let done = applied(
                self.client
                    .update_item()
                    .table_name(&self.table)
                    .set_key(Some(key(&msg_pk(message_id), &delivery_sk(endpoint_id))))
                    .update_expression(
                        "SET #state = :pending, attempt = :next, series_start = :next, next_at = :now REMOVE lease_until",
                    )
                    .condition_expression("#state = :was AND attempt = :n")
                    .expression_attribute_names("#state", "state")
                    .expression_attribute_values(":pending", s("pending"))
                    .expression_attribute_values(":was", s(current.state.as_str()))
                    .expression_attribute_values(":n", n(current.attempt))
                    .expression_attribute_values(":next", n(attempt))
                    .expression_attribute_values(":now", n(now))
                    .send()
                    .await,
            )?;
            if done {
                return Ok(Some(attempt));
            }
        }
        Ok(None)
    }

    async fn record_attempt(&self, attempt: &AttemptRecord) -> Result<(), StoreError> {
        applied(
            self.client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(attempt_item(attempt)?))
                .condition_expression("attribute_not_exists(pk)")
                .send()
                .await,
        )?;
        Ok(())
    }

    async fn endpoint_attempts(
        &self,
        endpoint_id: &str,
        since_ms: i64,
        outcome: Option<AttemptOutcome>,
        limit: i32,
        after: Option<&HashMap<String, String>>,
    ) -> Result<AttemptPage, StoreError> {
        let mut query = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(BY_ENDPOINT_INDEX)
            .key_condition_expression("ep_key = :ep AND ep_at >= :since")
            .expression_attribute_values(":ep", s(&format!("ep#{endpoint_id}")))
            .expression_attribute_values(":since", s(&format!("{since_ms:013}")))
            .scan_index_forward(false)
            .limit(limit);
        if let Some(outcome) = outcome {
            query = query
                .filter_expression("outcome = :outcome")
                .expression_attribute_values(
                    ":outcome",
                    serde_dynamo::to_attribute_value(outcome)?,
                );
        }
        if let Some(after) = after {
            query = query.set_exclusive_start_key(Some(
                after.iter().map(|(k, v)| (k.clone(), s(v))).collect(),
            ));
        }
        let out = query.send().await?;
        let attempts = out
            .items
            .unwrap_or_default()
            .into_iter()
            .map(|item| serde_dynamo::from_item(item).map_err(Into::into))
            .collect::<Result<Vec<AttemptRecord>, StoreError>>()?;
        let next = out.last_evaluated_key.map(|key| {
            key.into_iter()
                .filter_map(|(k, v)| Some((k, v.as_s().ok()?.clone())))
                .collect()
        });
        Ok(AttemptPage { attempts, next })
    }

    async fn message_attempts(&self, message_id: &str) -> Result<Vec<AttemptRecord>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
            .expression_attribute_values(":pk", s(&msg_pk(message_id)))
            .expression_attribute_values(":prefix", s("attempt#"))
            .send()
            .await?;
        out.items
            .unwrap_or_default()
            .into_iter()
            .map(|item| serde_dynamo::from_item(item).map_err(Into::into))
            .collect()
    }

    async fn due_retries(&self, until: i64, limit: i32) -> Result<Vec<RetryEntry>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND sk <= :until")
            .expression_attribute_values(":pk", s(RETRIES_PARTITION))
            .expression_attribute_values(":until", s(&format!("{until:012}~")))
            .consistent_read(true)
            .limit(limit)
            .send()
            .await?;
        out.items
            .unwrap_or_default()
            .into_iter()
            .map(|item| serde_dynamo::from_item(item).map_err(Into::into))
            .collect()
    }

    async fn mark_queued(&self, entry: &str) -> Result<(), StoreError> {
        applied(
            self.client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key(RETRIES_PARTITION, entry)))
                .update_expression("SET queued = :yes")
                .condition_expression("attribute_exists(pk)")
                .expression_attribute_values(":yes", AttributeValue::Bool(true))
                .send()
                .await,
        )?;
        Ok(())
    }

    async fn drop_retry(&self, entry: &str) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(RETRIES_PARTITION, entry)))
            .send()
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint() -> Endpoint {
        Endpoint {
            endpoint_id: "ep_1".into(),
            org_id: "acme".into(),
            url: "https://example.com/hook".into(),
            event_types: vec![],
            description: String::new(),
            enabled: true,
            disabled_reason: None,
            disabled_at: None,
            secret: "whsec_new".into(),
            previous_secret: Some("whsec_old".into()),
            previous_until: Some(1_000),
            created_at: "2026-01-01T00:00:00Z".into(),
            updated_at: "2026-01-01T00:00:00Z".into(),
            failing_since: None,
            slow_until: None,
        }
    }

    #[test]
    fn the_previous_secret_signs_only_during_its_overlap() {
        let endpoint = endpoint();
        assert_eq!(endpoint.signing_secrets(999), ["whsec_new", "whsec_old"]);
        assert_eq!(endpoint.signing_secrets(1_000), ["whsec_new"]);
    }

    #[test]
    fn an_endpoint_without_types_wants_every_event() {
        let mut endpoint = endpoint();
        assert!(endpoint.wants("call.ended"));
        endpoint.event_types = vec!["call.started".into()];
        assert!(!endpoint.wants("call.ended"));
        assert!(endpoint.wants("call.started"));
    }

    #[test]
    fn retry_entries_sort_by_due_time() {
        assert!(retry_entry(99, "ep_b", "m") < retry_entry(100, "ep_a", "m"));
        assert!(retry_entry(100, "ep_z", "m") < format!("{:012}~", 100));
    }
}
