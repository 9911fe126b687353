//! Per-key request counters: a fixed window counted with an atomic `ADD` in
//! the idempotency table (expiring with its TTL), so limits hold across every
//! concurrent Lambda instance.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use aws_sdk_dynamodb::Client;

use super::StoreError;

#[async_trait]
pub trait RateLimiter: Send + Sync {
    /// Counts one request for `key`; returns the count in the current window.
    async fn hit(&self, key: &str) -> Result<u64, StoreError>;
}

pub struct DynamoRateLimiter {
    pub client: Client,
    pub table: String,
    /// Length of the counting window; one minute in production.
    pub window_secs: i64,
}

#[async_trait]
impl RateLimiter for DynamoRateLimiter {
    async fn hit(&self, key: &str) -> Result<u64, StoreError> {
        let now = crate::base::time::epoch_secs();
        let window = now / self.window_secs;
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("id", AttributeValue::S(format!("rate#{key}#{window}")))
            .update_expression("ADD hits :one SET expiration = if_not_exists(expiration, :exp)")
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .expression_attribute_values(
                ":exp",
                AttributeValue::N(((window + 2) * self.window_secs).to_string()),
            )
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await?;
        out.attributes
            .and_then(|a| {
                a.get("hits")
                    .and_then(|v| v.as_n().ok())
                    .and_then(|n| n.parse().ok())
            })
            .ok_or_else(|| StoreError::Malformed("rate counter".into()))
    }
}
