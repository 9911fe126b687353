//! DynamoDB transactions whose cancellations are read, never guessed. One
//! `TransactionCanceledException` covers a failed condition, a conflict with
//! another transaction on the same item, throttling and more; the caller
//! says what its failed conditions mean, and contention is retried here.

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{CancellationReason, TransactWriteItem};
use aws_sdk_dynamodb::Client;

use super::StoreError;

/// What a cancelled transaction's reasons mean to its caller.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict<T> {
    /// A known outcome, such as "already counted" or "over budget".
    Done(T),
    /// Contention or throttling: nothing was written; the same transaction may succeed.
    Retry(String),
    /// Anything else, such as a missing item: an error, never a guess.
    Fail(String),
}

/// Tries before the caller's own retry (SQS, the sender) takes over; every
/// transaction here is conditional, so each try is idempotent.
const ATTEMPTS: u32 = 6;

/// Exponential from 20 ms, capped at 500 ms, with full jitter so writers of
/// one item that collided do not collide again in step.
pub(crate) fn backoff(attempt: u32) -> std::time::Duration {
    let ceiling = (20u64 << attempt.saturating_sub(1).min(10)).min(500);
    let jitter = (uuid::Uuid::new_v4().as_u128() % u128::from(ceiling + 1)) as u64;
    std::time::Duration::from_millis(jitter.max(1))
}

/// Error and reason codes that say "busy, try again", not "no".
pub(crate) fn retryable_code(code: &str) -> bool {
    matches!(
        code,
        "TransactionConflict"
            | "TransactionConflictException"
            | "TransactionInProgressException"
            | "ThrottlingError"
            | "ThrottlingException"
            | "ProvisionedThroughputExceeded"
            | "ProvisionedThroughputExceededException"
            | "RequestLimitExceeded"
    )
}

/// The codes of a cancellation, for logs and errors.
pub(crate) fn codes(reasons: &[CancellationReason]) -> String {
    reasons
        .iter()
        .map(|r| r.code().unwrap_or("None"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Any busy reason among them: retry the whole transaction.
pub(crate) fn busy(reasons: &[CancellationReason]) -> bool {
    reasons.iter().any(|r| r.code().is_some_and(retryable_code))
}

/// Runs `items` as one transaction: `committed` when it commits, the
/// caller's reading of a cancellation otherwise, with contention and
/// throttling retried (bounded, jittered) before giving up with an error.
pub(crate) async fn transact<T>(
    client: &Client,
    items: Vec<TransactWriteItem>,
    what: &str,
    committed: T,
    read_cancellation: impl Fn(&[CancellationReason]) -> Verdict<T>,
) -> Result<T, StoreError> {
    let mut committed = Some(committed);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let verdict = match client
            .transact_write_items()
            .set_transact_items(Some(items.clone()))
            .send()
            .await
        {
            Ok(_) => {
                return committed
                    .take()
                    .ok_or_else(|| StoreError::Dynamo(format!("{what}: committed twice")))
            }
            Err(err) => match err.as_service_error() {
                Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) => {
                    read_cancellation(cancelled.cancellation_reasons())
                }
                Some(other) if other.code().is_some_and(retryable_code) => {
                    Verdict::Retry(other.code().unwrap_or_default().to_string())
                }
                _ => return Err(err.into()),
            },
        };
        match verdict {
            Verdict::Done(outcome) => return Ok(outcome),
            Verdict::Fail(reason) => return Err(StoreError::Dynamo(format!("{what}: {reason}"))),
            Verdict::Retry(reason) if attempt >= ATTEMPTS => {
                return Err(StoreError::Dynamo(format!(
                    "{what}: still cancelled after {attempt} attempts: {reason}"
                )))
            }
            Verdict::Retry(reason) => {
                tracing::info!(what, attempt, %reason, "transaction cancelled; retrying");
                tokio::time::sleep(backoff(attempt)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_a_cap() {
        for attempt in 1..=10 {
            let ceiling = (20u64 << (attempt - 1)).min(500);
            for _ in 0..50 {
                let wait = backoff(attempt).as_millis() as u64;
                assert!((1..=ceiling).contains(&wait), "{attempt}: {wait}");
            }
        }
    }

    #[test]
    fn busy_reasons_are_told_from_refusals() {
        let reason = |code: &str| CancellationReason::builder().code(code).build();
        assert!(busy(&[reason("None"), reason("TransactionConflict")]));
        assert!(busy(&[reason("ThrottlingError")]));
        assert!(!busy(&[reason("ConditionalCheckFailed"), reason("None")]));
        assert_eq!(codes(&[reason("None"), reason("X")]), "None,X");
    }
}
