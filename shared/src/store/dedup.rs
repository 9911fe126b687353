//! Exactly-once processing of deliveries, after Powertools' idempotency design:
//! one conditional write claims a key with an in-progress lease that expires;
//! a completed record answers later duplicates with the first response; a
//! failed attempt releases its claim so a retry can run. Records expire by
//! timestamp (TTL deletes lazily, so expiry is part of the condition).

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
use aws_sdk_dynamodb::Client;

use crate::base::time::{epoch_millis, epoch_secs};
use crate::store::StoreError;

const STATUS_IN_PROGRESS: &str = "INPROGRESS";
const STATUS_COMPLETED: &str = "COMPLETED";

/// What a claim found.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// This caller owns the key and must `complete` or `release` it.
    Acquired,
    /// Processed before; here is the response saved then.
    Completed(serde_json::Value),
    /// Another caller holds a live lease.
    InProgress,
}

#[async_trait]
pub trait DedupStore: Send + Sync {
    /// Claims `key` for `lease`; the lease should not outlive the caller's deadline.
    async fn claim(&self, key: &str, lease: Duration) -> Result<Claim, StoreError>;
    /// Marks `key` done and saves the response that duplicates will receive.
    async fn complete(&self, key: &str, response: &serde_json::Value) -> Result<(), StoreError>;
    /// Gives the key up after a failure so a retry can claim it.
    async fn release(&self, key: &str) -> Result<(), StoreError>;
}

pub struct DynamoDedupStore {
    client: Client,
    table: String,
    /// How long a completed record answers duplicates.
    retention: Duration,
}

impl DynamoDedupStore {
    pub fn new(client: Client, table: impl Into<String>, retention: Duration) -> Self {
        Self {
            client,
            table: table.into(),
            retention,
        }
    }

    /// `IDEMPOTENCY_TABLE`, keeping records `DEDUP_RETENTION_SECONDS` (default 7 days).
    pub fn from_env(sdk: &aws_config::SdkConfig) -> Result<Self, crate::base::config::ConfigError> {
        Ok(Self::new(
            Client::new(sdk),
            crate::base::config::required("IDEMPOTENCY_TABLE")?,
            Duration::from_secs(crate::base::config::parsed_or(
                "DEDUP_RETENTION_SECONDS",
                7 * 24 * 3600,
            )?),
        ))
    }

    /// Reads the record that beat us; used only when DynamoDB did not return
    /// it with the failed condition (DynamoDB Local omits it).
    async fn read_existing(
        &self,
        key: &str,
    ) -> Result<Option<HashMap<String, AttributeValue>>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("id", AttributeValue::S(key.to_string()))
            .consistent_read(true)
            .send()
            .await?;
        Ok(out.item)
    }
}

/// Turns the record that failed our condition into a claim result. The
/// condition already proved the record is live, so only its status matters.
pub fn classify_existing(item: &HashMap<String, AttributeValue>) -> Result<Claim, StoreError> {
    match item
        .get("status")
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
    {
        Some(STATUS_COMPLETED) => {
            let data = item
                .get("data")
                .and_then(|v| v.as_s().ok())
                .map(|s| serde_json::from_str(s))
                .transpose()
                .map_err(|e| StoreError::Malformed(format!("dedup data: {e}")))?
                .unwrap_or(serde_json::Value::Null);
            Ok(Claim::Completed(data))
        }
        Some(STATUS_IN_PROGRESS) => Ok(Claim::InProgress),
        other => Err(StoreError::Malformed(format!("dedup status {other:?}"))),
    }
}

#[async_trait]
impl DedupStore for DynamoDedupStore {
    async fn claim(&self, key: &str, lease: Duration) -> Result<Claim, StoreError> {
        // A record deleted between our failed put and the read means its owner
        // released it: try again, a bounded number of times.
        for _ in 0..3 {
            let now_s = epoch_secs();
            let now_ms = epoch_millis();
            let result = self
                .client
                .put_item()
                .table_name(&self.table)
                .item("id", AttributeValue::S(key.to_string()))
                .item("status", AttributeValue::S(STATUS_IN_PROGRESS.into()))
                .item(
                    "expiration",
                    AttributeValue::N((now_s + self.retention.as_secs() as i64).to_string()),
                )
                .item(
                    "in_progress_expiration",
                    AttributeValue::N((now_ms + lease.as_millis() as i64).to_string()),
                )
                .condition_expression(
                    "attribute_not_exists(#id) OR #expiry < :now OR \
                     (#status = :inprogress AND attribute_exists(#lease) AND #lease < :now_ms)",
                )
                .expression_attribute_names("#id", "id")
                .expression_attribute_names("#expiry", "expiration")
                .expression_attribute_names("#status", "status")
                .expression_attribute_names("#lease", "in_progress_expiration")
                .expression_attribute_values(":now", AttributeValue::N(now_s.to_string()))
                .expression_attribute_values(":now_ms", AttributeValue::N(now_ms.to_string()))
                .expression_attribute_values(
                    ":inprogress",
                    AttributeValue::S(STATUS_IN_PROGRESS.into()),
                )
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .send()
                .await;
            let err = match result {
                Ok(_) => return Ok(Claim::Acquired),
                Err(err) => err,
            };
            let returned = match err.as_service_error() {
                Some(service) if service.is_conditional_check_failed_exception() => {
                    match service {
                        aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(e) => {
                            e.item().cloned()
                        }
                        _ => None,
                    }
                }
                _ => return Err(err.into()),
            };
            let existing = match returned {
                Some(item) => Some(item),
                None => self.read_existing(key).await?,
            };
            if let Some(item) = existing {
                return classify_existing(&item);
            }
        }
        Err(StoreError::Dynamo(format!(
            "could not claim {key}: record keeps changing"
        )))
    }

    async fn complete(&self, key: &str, response: &serde_json::Value) -> Result<(), StoreError> {
        let expiration = epoch_secs() + self.retention.as_secs() as i64;
        self.client
            .update_item()
            .table_name(&self.table)
            .key("id", AttributeValue::S(key.to_string()))
            .update_expression("SET #status = :done, #data = :data, #expiry = :exp REMOVE #lease")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#data", "data")
            .expression_attribute_names("#expiry", "expiration")
            .expression_attribute_names("#lease", "in_progress_expiration")
            .expression_attribute_values(":done", AttributeValue::S(STATUS_COMPLETED.into()))
            .expression_attribute_values(":data", AttributeValue::S(response.to_string()))
            .expression_attribute_values(":exp", AttributeValue::N(expiration.to_string()))
            .send()
            .await?;
        Ok(())
    }

    async fn release(&self, key: &str) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("id", AttributeValue::S(key.to_string()))
            .send()
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(pairs: &[(&str, &str)]) -> HashMap<String, AttributeValue> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), AttributeValue::S(v.to_string())))
            .collect()
    }

    #[test]
    fn completed_record_replays_saved_response() {
        let found =
            classify_existing(&item(&[("status", "COMPLETED"), ("data", r#"{"ok":1}"#)])).unwrap();
        assert_eq!(found, Claim::Completed(serde_json::json!({"ok": 1})));
    }

    #[test]
    fn live_in_progress_record_is_reported() {
        assert_eq!(
            classify_existing(&item(&[("status", "INPROGRESS")])).unwrap(),
            Claim::InProgress
        );
    }

    #[test]
    fn unknown_status_is_malformed() {
        assert!(classify_existing(&item(&[("status", "WEIRD")])).is_err());
    }
}

/// What [`run_once`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Once {
    /// This call did the work; here is the response it saved.
    Done(serde_json::Value),
    /// The work was done before; here is the response saved then.
    Duplicate(serde_json::Value),
    /// Another caller is doing it right now.
    InProgress,
}

#[derive(Debug)]
pub enum OnceError<E> {
    Store(StoreError),
    Work(E),
}

/// Runs `work` at most once per `key`: claims the key, runs the work, saves
/// its response for duplicates; on failure releases the key so a retry can run.
pub async fn run_once<F, Fut, E>(
    store: &dyn DedupStore,
    key: &str,
    lease: Duration,
    work: F,
) -> Result<Once, OnceError<E>>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<serde_json::Value, E>>,
{
    match store.claim(key, lease).await.map_err(OnceError::Store)? {
        Claim::Completed(saved) => return Ok(Once::Duplicate(saved)),
        Claim::InProgress => return Ok(Once::InProgress),
        Claim::Acquired => {}
    }
    match work().await {
        Ok(response) => {
            if let Err(err) = store.complete(key, &response).await {
                // The work is done; a duplicate within the lease gets 409, after it a rerun.
                tracing::warn!(%key, error = %err, "dedup record not completed");
            }
            Ok(Once::Done(response))
        }
        Err(err) => {
            if let Err(release_err) = store.release(key).await {
                tracing::warn!(%key, error = %release_err, "dedup claim not released; it expires with its lease");
            }
            Err(OnceError::Work(err))
        }
    }
}
