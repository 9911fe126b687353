//! Per-key request limits: a fixed one-minute window counted with an atomic
//! `ADD` in the idempotency table (expiring with its TTL), so limits hold
//! across every concurrent Lambda instance.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use aws_sdk_dynamodb::Client;

use crate::api::ApiError;
use crate::store::StoreError;

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
        let now = crate::time::epoch_secs();
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

/// Refuses the request once `key` has made more than `per_minute` this minute.
pub async fn enforce(
    limiter: &dyn RateLimiter,
    key: &str,
    per_minute: u64,
) -> Result<(), ApiError> {
    let hits = limiter.hit(key).await.map_err(|err| {
        tracing::error!(error = %err, "rate limiter unavailable");
        ApiError::Unavailable
    })?;
    if hits > per_minute {
        return Err(ApiError::TooManyRequests {
            code: "rate_limited",
            detail: format!(
                "Rate limit exceeded: at most {per_minute} requests per minute for this API key"
            ),
        });
    }
    Ok(())
}

/// API-key access with a per-key request limit, as the outbound-call routes use it.
pub struct KeyedAccess {
    pub api_keys: std::sync::Arc<dyn crate::api_keys::ApiKeyStore>,
    pub rate_limiter: std::sync::Arc<dyn RateLimiter>,
    /// Requests per window per key (`CALLS_RATE_LIMIT_PER_MINUTE`).
    pub per_window: u64,
}

impl KeyedAccess {
    pub fn from_env(client: Client) -> Result<Self, crate::config::ConfigError> {
        use crate::config::{parsed_or, required};
        Ok(Self {
            api_keys: std::sync::Arc::new(crate::api_keys::DynamoApiKeyStore::new(
                client.clone(),
                required("API_KEYS_TABLE")?,
            )),
            rate_limiter: std::sync::Arc::new(DynamoRateLimiter {
                client,
                table: required("IDEMPOTENCY_TABLE")?,
                window_secs: 60,
            }),
            per_window: parsed_or("CALLS_RATE_LIMIT_PER_MINUTE", 30)?,
        })
    }

    /// The caller's key, once it is valid and within its limit.
    pub async fn admit(
        &self,
        headers: &http::HeaderMap,
    ) -> Result<crate::api_keys::ApiKeyRecord, ApiError> {
        let key = crate::api_keys::authenticate(self.api_keys.as_ref(), headers).await?;
        enforce(self.rate_limiter.as_ref(), &key.key_id, self.per_window).await?;
        Ok(key)
    }
}
