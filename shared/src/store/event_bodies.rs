//! Verified provider webhook bodies too large for an SQS message, kept in
//! the calls table in parts until the provider-events worker has read them.
//! The parts expire on their own (`expires_at`, the table's TTL).

use async_trait::async_trait;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::StoreError;

/// Comfortably under DynamoDB's 400 KB item limit, leaving room for keys.
pub const PART_BYTES: usize = 350 * 1024;
const PARTITION_PREFIX: &str = "event-body#";
const PART_PREFIX: &str = "part#";
/// Longer than a message can live: 4 days on the queue, 14 in its DLQ, and a redrive.
const RETENTION_SECS: i64 = 21 * 24 * 3600;

/// Where a stored body is, and what must come back out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredBody {
    /// SHA-256 of the body: the same body delivered twice is stored once.
    pub sha256: String,
    pub parts: u32,
    pub bytes: usize,
}

#[async_trait]
pub trait EventBodyStore: Send + Sync {
    /// Writes every part; the body is durable once this returns.
    async fn put(&self, body: &[u8]) -> Result<StoredBody, StoreError>;
    /// The whole body, checked against its length and hash.
    async fn get(&self, stored: &StoredBody) -> Result<Vec<u8>, StoreError>;
}

pub struct DynamoEventBodyStore {
    client: Client,
    table: String,
}

impl DynamoEventBodyStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }
}

fn hash(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

#[async_trait]
impl EventBodyStore for DynamoEventBodyStore {
    async fn put(&self, body: &[u8]) -> Result<StoredBody, StoreError> {
        let stored = StoredBody {
            sha256: hash(body),
            parts: body.len().div_ceil(PART_BYTES) as u32,
            bytes: body.len(),
        };
        let expires_at = crate::base::time::epoch_secs() + RETENTION_SECS;
        let writes = body.chunks(PART_BYTES).enumerate().map(|(index, chunk)| {
            self.client
                .put_item()
                .table_name(&self.table)
                .item(
                    "call_id",
                    AttributeValue::S(format!("{PARTITION_PREFIX}{}", stored.sha256)),
                )
                .item(
                    "item",
                    AttributeValue::S(format!("{PART_PREFIX}{index:05}")),
                )
                .item("chunk", AttributeValue::B(Blob::new(chunk)))
                .item("expires_at", AttributeValue::N(expires_at.to_string()))
                .send()
        });
        // In parallel: a few MB is a dozen writes, well inside the route's timeout.
        for result in futures_util::future::join_all(writes).await {
            result?;
        }
        Ok(stored)
    }

    async fn get(&self, stored: &StoredBody) -> Result<Vec<u8>, StoreError> {
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("call_id = :id AND begins_with(#item, :prefix)")
            .expression_attribute_names("#item", "item")
            .expression_attribute_values(
                ":id",
                AttributeValue::S(format!("{PARTITION_PREFIX}{}", stored.sha256)),
            )
            .expression_attribute_values(":prefix", AttributeValue::S(PART_PREFIX.into()))
            .consistent_read(true)
            .into_paginator()
            .items()
            .send();
        let mut parts: Vec<(String, Vec<u8>)> = Vec::new();
        while let Some(item) = pages.next().await {
            let item = item?;
            let key = item
                .get("item")
                .and_then(|v| v.as_s().ok())
                .cloned()
                .unwrap_or_default();
            let chunk = item
                .get("chunk")
                .and_then(|v| v.as_b().ok())
                .ok_or_else(|| StoreError::Malformed(format!("body part {key} has no chunk")))?;
            parts.push((key, chunk.as_ref().to_vec()));
        }
        parts.sort();
        let body: Vec<u8> = parts.into_iter().flat_map(|(_, chunk)| chunk).collect();
        if body.len() != stored.bytes || hash(&body) != stored.sha256 {
            return Err(StoreError::Malformed(format!(
                "event body {} incomplete: {} of {} bytes",
                stored.sha256,
                body.len(),
                stored.bytes
            )));
        }
        Ok(body)
    }
}
