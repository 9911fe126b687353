//! Exactly-once processing of deliveries, after Powertools' idempotency design:
//! one conditional write claims a key with an in-progress lease that expires;
//! a completed record answers later duplicates with the first response; a
//! failed attempt releases its claim so a retry can run. Records expire by
//! timestamp (TTL deletes lazily, so expiry is part of the condition).
//!
//! Every claim carries a random owner token, and `complete`/`release` are
//! conditional on it: a claimant whose lease expired and was taken over can
//! no longer overwrite or delete the new owner's record.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
use aws_sdk_dynamodb::Client;

use crate::base::time::{epoch_millis, epoch_secs, jitter};
use crate::store::StoreError;

const STATUS_IN_PROGRESS: &str = "INPROGRESS";
const STATUS_COMPLETED: &str = "COMPLETED";

/// Proof of a claim: the random token written with it. Only its holder can
/// complete or release the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner(String);

impl Owner {
    pub fn new() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }

    pub fn token(&self) -> &str {
        &self.0
    }
}

impl Default for Owner {
    fn default() -> Self {
        Self::new()
    }
}

/// What a claim found.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// This caller owns the key and must `complete` or `release` it.
    Acquired(Owner),
    /// Processed before; here is the response saved then.
    Completed(serde_json::Value),
    /// Another caller holds a live lease.
    InProgress,
}

/// A key's record as a consistent read sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Found {
    /// No live record: absent, expired, released, or its lease lapsed.
    Free,
    InProgress,
    Completed(serde_json::Value),
}

/// What `complete` or `release` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Settled {
    Done,
    /// The claim is no longer ours (taken over after our lease expired, or
    /// gone); nothing was changed.
    Lost,
}

#[async_trait]
pub trait DedupStore: Send + Sync {
    /// Claims `key` for `lease`; the lease should not outlive the caller's deadline.
    async fn claim(&self, key: &str, lease: Duration) -> Result<Claim, StoreError>;
    /// Reads `key` consistently, without claiming it.
    async fn peek(&self, key: &str) -> Result<Found, StoreError>;
    /// Marks `key` done and saves the response that duplicates will receive,
    /// if `owner` still holds it.
    async fn complete(
        &self,
        key: &str,
        owner: &Owner,
        response: &serde_json::Value,
    ) -> Result<Settled, StoreError>;
    /// Gives the key up after a failure so a retry can claim it, if `owner`
    /// still holds it.
    async fn release(&self, key: &str, owner: &Owner) -> Result<Settled, StoreError>;
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

    /// Reads a key's record consistently: for `peek`, and for a claim whose
    /// failed condition did not return the record (DynamoDB Local omits it).
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
            let owner = Owner::new();
            let result = self
                .client
                .put_item()
                .table_name(&self.table)
                .item("id", AttributeValue::S(key.to_string()))
                .item("status", AttributeValue::S(STATUS_IN_PROGRESS.into()))
                .item("owner", AttributeValue::S(owner.token().to_string()))
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
                Ok(_) => return Ok(Claim::Acquired(owner)),
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
                // Our own put was applied but its answer lost; the SDK's
                // retry of the same request then fails its condition on it.
                let ours = item.get("owner").and_then(|v| v.as_s().ok())
                    == Some(&owner.token().to_string())
                    && item.get("status").and_then(|v| v.as_s().ok())
                        == Some(&STATUS_IN_PROGRESS.to_string());
                if ours {
                    return Ok(Claim::Acquired(owner));
                }
                return classify_existing(&item);
            }
        }
        Err(StoreError::Dynamo(format!(
            "could not claim {key}: record keeps changing"
        )))
    }

    async fn peek(&self, key: &str) -> Result<Found, StoreError> {
        let Some(item) = self.read_existing(key).await? else {
            return Ok(Found::Free);
        };
        let number = |name: &str| {
            item.get(name)
                .and_then(|v| v.as_n().ok())
                .and_then(|n| n.parse::<i64>().ok())
        };
        // The same liveness rules as the claim's condition.
        if number("expiration").is_some_and(|exp| exp < epoch_secs()) {
            return Ok(Found::Free);
        }
        Ok(match classify_existing(&item)? {
            Claim::Completed(saved) => Found::Completed(saved),
            _ if number("in_progress_expiration").is_some_and(|lease| lease < epoch_millis()) => {
                Found::Free
            }
            _ => Found::InProgress,
        })
    }

    async fn complete(
        &self,
        key: &str,
        owner: &Owner,
        response: &serde_json::Value,
    ) -> Result<Settled, StoreError> {
        let expiration = epoch_secs() + self.retention.as_secs() as i64;
        // Only the owner's condition, not the status: a retried complete
        // whose first attempt landed must succeed again, not report Lost.
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("id", AttributeValue::S(key.to_string()))
            .update_expression("SET #status = :done, #data = :data, #expiry = :exp REMOVE #lease")
            .condition_expression("#owner = :me")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#data", "data")
            .expression_attribute_names("#expiry", "expiration")
            .expression_attribute_names("#lease", "in_progress_expiration")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":done", AttributeValue::S(STATUS_COMPLETED.into()))
            .expression_attribute_values(":data", AttributeValue::S(response.to_string()))
            .expression_attribute_values(":exp", AttributeValue::N(expiration.to_string()))
            .expression_attribute_values(":me", AttributeValue::S(owner.token().to_string()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(Settled::Done),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                tracing::warn!(%key, "dedup claim was taken over; completion not recorded");
                Ok(Settled::Lost)
            }
            Err(err) => Err(err.into()),
        }
    }

    async fn release(&self, key: &str, owner: &Owner) -> Result<Settled, StoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("id", AttributeValue::S(key.to_string()))
            .condition_expression("#owner = :me AND #status = :inprogress")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":me", AttributeValue::S(owner.token().to_string()))
            .expression_attribute_values(
                ":inprogress",
                AttributeValue::S(STATUS_IN_PROGRESS.into()),
            )
            .send()
            .await;
        match result {
            Ok(_) => Ok(Settled::Done),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                tracing::warn!(%key, "dedup claim was taken over; not released");
                Ok(Settled::Lost)
            }
            Err(err) => Err(err.into()),
        }
    }
}

/// How long a delivery that finds its key in progress waits for the first
/// one to finish: senders mark a delivery failed on a 409, so waiting a
/// little beats answering "retry".
pub const DEFAULT_WAIT: Duration = Duration::from_secs(5);

/// Left of a lease when waiting stops, so the waiter can still answer (or do
/// the work) before its own deadline.
const WAIT_MARGIN: Duration = Duration::from_secs(1);

/// The wait bound for a caller with `lease` left (its remaining time).
pub fn wait_budget(max_wait: Duration, lease: Duration) -> Duration {
    max_wait.min(lease.saturating_sub(WAIT_MARGIN))
}

/// 50 ms doubling to 400 ms, jittered into [half, whole] so waiters that
/// arrived together do not read together.
pub(crate) fn wait_step(attempt: u32) -> Duration {
    jitter(Duration::from_millis((50u64 << attempt.min(3)).min(400)))
}

/// Claims `key`; if another caller holds it, waits up to `budget` (consistent
/// reads, short backoff) for that caller to finish. A completed record is
/// returned as `Completed`; a released or lapsed one is claimed by us. Only a
/// claim still held after the wait is `InProgress`.
pub async fn claim_or_wait(
    store: &dyn DedupStore,
    key: &str,
    lease: Duration,
    budget: Duration,
) -> Result<Claim, StoreError> {
    let first = store.claim(key, lease).await?;
    if first != Claim::InProgress || budget.is_zero() {
        return Ok(first);
    }
    let answer = wait_for_holder(budget, |waited| async move {
        Ok(match store.peek(key).await? {
            Found::InProgress => None,
            Found::Completed(saved) => Some(Claim::Completed(saved)),
            // The first one failed and let go: this delivery does the work,
            // with what is left of its own lease.
            Found::Free => match store.claim(key, lease.saturating_sub(waited)).await? {
                Claim::InProgress => None,
                other => Some(other),
            },
        })
    })
    .await?;
    Ok(answer.unwrap_or(Claim::InProgress))
}

/// The waiting half of a claim that found another holder: until `budget`
/// is spent, sleeps a [`wait_step`] and calls `retry` with the time waited so
/// far (a consistent read and, if free, a new claim); its first answer wins.
/// `None` means the other holder still had it after the wait.
pub async fn wait_for_holder<T, F, Fut>(
    budget: Duration,
    mut retry: F,
) -> Result<Option<T>, StoreError>
where
    F: FnMut(Duration) -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, StoreError>>,
{
    let started = tokio::time::Instant::now();
    let mut attempt = 0;
    loop {
        let left = budget.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Ok(None);
        }
        tokio::time::sleep(wait_step(attempt).min(left)).await;
        attempt += 1;
        if let Some(answer) = retry(started.elapsed()).await? {
            return Ok(Some(answer));
        }
    }
}

/// Local tries of `complete`: the work is done, so losing its record would
/// make a retry either wait out the lease or redo it.
const COMPLETE_ATTEMPTS: u32 = 4;

/// `complete`, retried with backoff on store errors (never on `Lost`).
pub async fn complete_retrying(
    store: &dyn DedupStore,
    key: &str,
    owner: &Owner,
    response: &serde_json::Value,
) -> Result<Settled, StoreError> {
    let mut attempt = 0;
    loop {
        match store.complete(key, owner, response).await {
            Ok(settled) => return Ok(settled),
            Err(err) if attempt + 1 < COMPLETE_ATTEMPTS => {
                tracing::warn!(%key, error = %err, attempt, "dedup complete failed; retrying");
                tokio::time::sleep(jitter(Duration::from_millis(50 << attempt))).await;
                attempt += 1;
            }
            Err(err) => return Err(err),
        }
    }
}

/// What [`run_once`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Once {
    /// This call did the work; here is the response it saved.
    Done(serde_json::Value),
    /// The work was done before; here is the response saved then.
    Duplicate(serde_json::Value),
    /// Another caller is still doing it after the wait.
    InProgress,
}

#[derive(Debug)]
pub enum OnceError<E> {
    Store(StoreError),
    Work(E),
}

/// Runs `work` at most once per `key`: claims the key (waiting up to
/// [`DEFAULT_WAIT`], within `lease`, for a concurrent delivery), runs the
/// work, saves its response for duplicates; on failure releases the key so a
/// retry can run.
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
    let budget = wait_budget(DEFAULT_WAIT, lease);
    let owner = match claim_or_wait(store, key, lease, budget)
        .await
        .map_err(OnceError::Store)?
    {
        Claim::Completed(saved) => return Ok(Once::Duplicate(saved)),
        Claim::InProgress => return Ok(Once::InProgress),
        Claim::Acquired(owner) => owner,
    };
    match work().await {
        Ok(response) => {
            match complete_retrying(store, key, &owner, &response).await {
                Ok(Settled::Done) => {}
                // Our lease ran out and another delivery took over: it did (or
                // does) the work again; nothing of ours may overwrite its record.
                Ok(Settled::Lost) => tracing::warn!(%key, "dedup claim lost before completion"),
                // The work is done; a duplicate within the lease waits, after it reruns.
                Err(err) => tracing::warn!(%key, error = %err, "dedup record not completed"),
            }
            Ok(Once::Done(response))
        }
        Err(err) => {
            if let Err(release_err) = store.release(key, &owner).await {
                tracing::warn!(%key, error = %release_err, "dedup claim not released; it expires with its lease");
            }
            Err(OnceError::Work(err))
        }
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
    fn waiting_stops_before_the_callers_own_deadline() {
        let wait = Duration::from_secs(5);
        assert_eq!(wait_budget(wait, Duration::from_secs(30)), wait);
        assert_eq!(
            wait_budget(wait, Duration::from_secs(3)),
            Duration::from_secs(2)
        );
        assert_eq!(
            wait_budget(wait, Duration::from_millis(500)),
            Duration::ZERO
        );
    }

    #[test]
    fn wait_steps_double_to_400ms_with_jitter() {
        for (attempt, ceiling) in [(0, 50), (1, 100), (2, 200), (3, 400), (9, 400)] {
            let step = wait_step(attempt).as_millis() as u64;
            assert!(step >= ceiling / 2 && step <= ceiling, "{attempt}: {step}");
        }
    }

    #[test]
    fn unknown_status_is_malformed() {
        assert!(classify_existing(&item(&[("status", "WEIRD")])).is_err());
    }
}
