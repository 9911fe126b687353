//! API keys for callers that are people's systems rather than providers
//! (agents reporting calls, CRMs placing them). A key reads
//! `cok_<key_id>_<secret>`; only the SHA-256 of the whole key is stored, under
//! its id, so a leaked table does not leak keys and a key can be revoked by id.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::store::StoreError;

const PREFIX: &str = "cok_";
/// Length of a generated key id.
const KEY_ID_CHARS: usize = 12;
/// Generated keys are 81 characters; anything far longer is not one of ours
/// and is refused before any lookup.
pub const MAX_API_KEY_CHARS: usize = 200;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    pub key_id: String,
    /// Hex SHA-256 of the full key.
    pub key_hash: String,
    pub name: String,
    /// The organisation whose calls, usage and conversations this key may
    /// reach. Keys made before organisations owned keys have none and are
    /// refused until one is assigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_id: Option<String>,
    pub created_at: String,
    /// Absent (not NULL) until revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

fn hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A new key of `org_id` and the record that stores it. The key is shown
/// once, never stored.
pub fn generate(name: &str, org_id: &str) -> (String, ApiKeyRecord) {
    let key_id = uuid::Uuid::new_v4().simple().to_string()[..KEY_ID_CHARS].to_string();
    let secret = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let key = format!("{PREFIX}{key_id}_{secret}");
    let record = ApiKeyRecord {
        key_id,
        key_hash: hash(&key),
        name: name.to_string(),
        org_id: Some(org_id.to_string()),
        created_at: crate::base::time::now_rfc3339(),
        revoked_at: None,
    };
    (key, record)
}

/// The id part of a presented key, if it has the right shape and size.
pub fn key_id(presented: &str) -> Option<&str> {
    if presented.len() > MAX_API_KEY_CHARS {
        return None;
    }
    let rest = presented.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    (!id.is_empty()
        && id.len() <= KEY_ID_CHARS
        && !secret.is_empty()
        && id.chars().all(|c| c.is_ascii_alphanumeric()))
    .then_some(id)
}

#[async_trait]
pub trait ApiKeyStore: Send + Sync {
    async fn find(&self, key_id: &str) -> Result<Option<ApiKeyRecord>, StoreError>;
    async fn insert(&self, record: &ApiKeyRecord) -> Result<(), StoreError>;
    /// Returns false when no such key exists.
    async fn revoke(&self, key_id: &str) -> Result<bool, StoreError>;
    /// Gives the key to an organisation; false when no such key exists.
    async fn assign(&self, key_id: &str, org_id: &str) -> Result<bool, StoreError>;
    async fn list(&self) -> Result<Vec<ApiKeyRecord>, StoreError>;
}

/// Whether `presented` is this record's key, compared in constant time.
pub fn key_matches(record: &ApiKeyRecord, presented: &str) -> bool {
    hash(presented)
        .as_bytes()
        .ct_eq(record.key_hash.as_bytes())
        .into()
}

pub struct DynamoApiKeyStore {
    client: Client,
    table: String,
}

impl DynamoApiKeyStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }
}

#[async_trait]
impl ApiKeyStore for DynamoApiKeyStore {
    async fn find(&self, key_id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("key_id", AttributeValue::S(key_id.to_string()))
            // A revocation must take effect on the very next request.
            .consistent_read(true)
            .send()
            .await?;
        out.item
            .map(|item| serde_dynamo::from_item(item).map_err(Into::into))
            .transpose()
    }

    async fn insert(&self, record: &ApiKeyRecord) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(serde_dynamo::to_item(record)?))
            .condition_expression("attribute_not_exists(key_id)")
            .send()
            .await?;
        Ok(())
    }

    async fn revoke(&self, key_id: &str) -> Result<bool, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("key_id", AttributeValue::S(key_id.to_string()))
            .update_expression("SET revoked_at = :now")
            .condition_expression("attribute_exists(key_id)")
            .expression_attribute_values(
                ":now",
                AttributeValue::S(crate::base::time::now_rfc3339()),
            )
            .send()
            .await;
        super::applied(result)
    }

    async fn assign(&self, key_id: &str, org_id: &str) -> Result<bool, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("key_id", AttributeValue::S(key_id.to_string()))
            .update_expression("SET org_id = :org")
            .condition_expression("attribute_exists(key_id)")
            .expression_attribute_values(":org", AttributeValue::S(org_id.to_string()))
            .send()
            .await;
        super::applied(result)
    }

    async fn list(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        // An admin listing of a handful of keys; never on a request path.
        let mut records = Vec::new();
        let mut pages = self
            .client
            .scan()
            .table_name(&self.table)
            .into_paginator()
            .items()
            .send();
        while let Some(item) = pages.next().await {
            records.push(serde_dynamo::from_item(item?)?);
        }
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_hash() {
        let (key, record) = generate("agent", "acme");
        assert_eq!(record.org_id.as_deref(), Some("acme"));
        assert!(key.starts_with("cok_"));
        assert_eq!(key_id(&key), Some(record.key_id.as_str()));
        assert_eq!(hash(&key), record.key_hash);
        assert!(!record.key_hash.contains(&key));
    }

    #[test]
    fn malformed_keys_have_no_id() {
        assert_eq!(key_id("nope"), None);
        assert_eq!(key_id("cok_"), None);
        assert_eq!(key_id("cok_abc"), None);
        assert_eq!(key_id("cok_a-b_secret"), None);
        // Longer than any generated key or key id: no lookup.
        assert_eq!(key_id(&format!("cok_abc_{}", "s".repeat(200))), None);
        assert_eq!(key_id(&format!("cok_{}_secret", "a".repeat(13))), None);
    }
}
