//! Durable state: every DynamoDB read and write lives here, behind one small
//! trait per store. Stores import only `base`.
//!
//! `StoreError` is the error every store trait returns. Store failures are
//! always worth a retry from the caller's point of view; the detail is for
//! logs only.

pub mod api_keys;
pub mod call_log;
pub mod call_starts;
pub mod calls;
pub mod campaigns;
pub mod dedup;
pub mod directory;
pub mod dnc;
pub mod event_bodies;
pub(crate) mod ledger;
pub mod org_secrets;
pub mod outbound_calls;
pub mod rate_limits;
pub mod sessions;
pub mod stats;
pub mod tenancy;
pub mod transactions;
pub mod webhook_tokens;
pub mod webhooks;
pub mod whatsapp;

use std::collections::HashMap;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::AttributeValue;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("dynamodb: {0}")]
    Dynamo(String),
    #[error("stored item is malformed: {0}")]
    Malformed(String),
}

impl<E, R> From<SdkError<E, R>> for StoreError
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    fn from(err: SdkError<E, R>) -> Self {
        // DisplayErrorContext walks the source chain; plain Display says only "service error".
        Self::Dynamo(aws_sdk_dynamodb::error::DisplayErrorContext(err).to_string())
    }
}

impl From<serde_dynamo::Error> for StoreError {
    fn from(err: serde_dynamo::Error) -> Self {
        Self::Malformed(err.to_string())
    }
}

/// Every item of `keys` that exists, by BatchGetItem (100 keys a request),
/// unprocessed keys retried with backoff for up to 6 rounds; in no order.
pub(crate) async fn batch_get(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    keys: Vec<HashMap<String, AttributeValue>>,
    consistent: bool,
) -> Result<Vec<HashMap<String, AttributeValue>>, StoreError> {
    let mut items = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(100) {
        let mut pending = chunk.to_vec();
        let mut rounds = 0;
        while !pending.is_empty() {
            rounds += 1;
            let request = aws_sdk_dynamodb::types::KeysAndAttributes::builder()
                .set_keys(Some(pending))
                .consistent_read(consistent)
                .build()
                .map_err(|e| StoreError::Dynamo(e.to_string()))?;
            let out = client
                .batch_get_item()
                .request_items(table, request)
                .send()
                .await?;
            items.extend(
                out.responses
                    .and_then(|mut r| r.remove(table))
                    .unwrap_or_default(),
            );
            pending = out
                .unprocessed_keys
                .and_then(|mut u| u.remove(table))
                .map(|k| k.keys)
                .unwrap_or_default();
            if !pending.is_empty() {
                if rounds >= 6 {
                    return Err(StoreError::Dynamo(format!(
                        "batch read of {table} still throttled after 6 rounds"
                    )));
                }
                tokio::time::sleep(transactions::backoff(rounds)).await;
            }
        }
    }
    Ok(items)
}

/// One `BatchWriteItem` of at most 25 `requests`, unprocessed ones sent
/// again with backoff for up to 8 rounds; `what` names them in the error.
pub(crate) async fn batch_write(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    mut pending: Vec<aws_sdk_dynamodb::types::WriteRequest>,
    what: &str,
) -> Result<(), StoreError> {
    let mut round = 0;
    while !pending.is_empty() {
        round += 1;
        if round > 8 {
            return Err(StoreError::Dynamo(format!(
                "{what}: {} still unprocessed",
                pending.len()
            )));
        }
        if round > 1 {
            tokio::time::sleep(transactions::backoff(round)).await;
        }
        let out = client
            .batch_write_item()
            .request_items(table, pending)
            .send()
            .await?;
        pending = out
            .unprocessed_items
            .and_then(|mut items| items.remove(table))
            .unwrap_or_default();
    }
    Ok(())
}

pub(crate) fn condition_failed<E: aws_sdk_dynamodb::error::ProvideErrorMetadata>(err: &E) -> bool {
    err.code() == Some("ConditionalCheckFailedException")
}

/// `SET #name = :value` for each present field, plus `updated_at`.
pub(crate) fn patch_update(
    fields: Vec<(&'static str, AttributeValue)>,
) -> (
    String,
    HashMap<String, String>,
    HashMap<String, AttributeValue>,
) {
    let mut names = HashMap::new();
    let mut values = HashMap::new();
    let mut sets = Vec::new();
    for (index, (name, value)) in fields
        .into_iter()
        .chain([(
            "updated_at",
            AttributeValue::S(crate::base::time::now_rfc3339()),
        )])
        .enumerate()
    {
        names.insert(format!("#f{index}"), name.to_string());
        values.insert(format!(":v{index}"), value);
        sets.push(format!("#f{index} = :v{index}"));
    }
    (format!("SET {}", sets.join(", ")), names, values)
}

/// A conditional write's outcome: applied (`true`), its condition failed
/// (`false`), or an error.
pub(crate) fn applied<T, E, R>(result: Result<T, SdkError<E, R>>) -> Result<bool, StoreError>
where
    E: std::error::Error + aws_sdk_dynamodb::error::ProvideErrorMetadata + 'static,
    R: std::fmt::Debug,
{
    match result {
        Ok(_) => Ok(true),
        Err(err) if err.as_service_error().is_some_and(condition_failed) => Ok(false),
        Err(err) => Err(err.into()),
    }
}

pub(crate) fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_string())
}
