//! API keys for callers that are people's systems rather than providers
//! (agents reporting calls, CRMs placing them). A key reads
//! `cok_<key_id>_<secret>`; only the SHA-256 of the whole key is stored, under
//! its id, so a leaked table does not leak keys and a key can be revoked by id.
//!
//! An organisation's recording-webhook tokens (`cwt_<id>_<secret>`) are kept
//! the same way in the same table, with `purpose = webhook`: a key is only
//! ever accepted for its own purpose (`store::webhook_tokens`).

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::store::StoreError;

/// Length of a generated key id.
const KEY_ID_CHARS: usize = 12;
/// Generated keys are 81 characters; anything far longer is not one of ours
/// and is refused before any lookup.
pub const MAX_API_KEY_CHARS: usize = 200;

/// What a key may be used for; one key never serves both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyPurpose {
    /// An API key (`cok_...`): the organisation's routes. Keys stored before
    /// purposes existed are these.
    #[default]
    Api,
    /// A recording-webhook token (`cwt_...`): `/webhook/zapier` and `/webhook/exotel`.
    Webhook,
}

impl KeyPurpose {
    /// The prefix every key of this purpose starts with.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Api => "cok_",
            Self::Webhook => "cwt_",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Webhook => "webhook",
        }
    }
}

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
    #[serde(default)]
    pub purpose: KeyPurpose,
}

fn hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A new key of `org_id` and the record that stores it. The key is shown
/// once, never stored.
pub fn generate(name: &str, org_id: &str) -> (String, ApiKeyRecord) {
    generate_for(KeyPurpose::Api, name, org_id)
}

/// A new key of `purpose` for `org_id`, and its record.
pub fn generate_for(purpose: KeyPurpose, name: &str, org_id: &str) -> (String, ApiKeyRecord) {
    let key_id = uuid::Uuid::new_v4().simple().to_string()[..KEY_ID_CHARS].to_string();
    let secret = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let key = format!("{}{key_id}_{secret}", purpose.prefix());
    let record = ApiKeyRecord {
        key_id,
        key_hash: hash(&key),
        name: name.to_string(),
        org_id: Some(org_id.to_string()),
        created_at: crate::base::time::now_rfc3339(),
        revoked_at: None,
        purpose,
    };
    (key, record)
}

/// The id part of a presented API key, if it has the right shape and size.
pub fn key_id(presented: &str) -> Option<&str> {
    id_of(KeyPurpose::Api, presented)
}

/// The id part of a presented key of `purpose`, if it has that purpose's
/// prefix and the right shape and size.
pub fn id_of(purpose: KeyPurpose, presented: &str) -> Option<&str> {
    if presented.len() > MAX_API_KEY_CHARS {
        return None;
    }
    let rest = presented.strip_prefix(purpose.prefix())?;
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
    /// Returns false when no such API key exists (webhook tokens are not API keys).
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

/// Whether `presented` is this record's live key of `purpose`: the hash
/// compared in constant time, then the purpose and the revocation.
pub fn accepts(record: &ApiKeyRecord, presented: &str, purpose: KeyPurpose) -> bool {
    key_matches(record, presented) && record.purpose == purpose && record.revoked_at.is_none()
}

/// `revoke` and `assign` touch API keys only (webhook tokens have their own store).
const API_KEYS_ONLY: &str =
    "attribute_exists(key_id) AND (attribute_not_exists(purpose) OR purpose = :api)";

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
            // Webhook tokens are revoked through their organisation, which counts them.
            .condition_expression(API_KEYS_ONLY)
            .expression_attribute_values(
                ":now",
                AttributeValue::S(crate::base::time::now_rfc3339()),
            )
            .expression_attribute_values(":api", AttributeValue::S(KeyPurpose::Api.as_str().into()))
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
            .condition_expression(API_KEYS_ONLY)
            .expression_attribute_values(":org", AttributeValue::S(org_id.to_string()))
            .expression_attribute_values(":api", AttributeValue::S(KeyPurpose::Api.as_str().into()))
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
    fn a_key_is_accepted_only_for_its_purpose() {
        let (token, record) = generate_for(KeyPurpose::Webhook, "zapier", "acme");
        assert!(token.starts_with("cwt_"));
        assert_eq!(
            id_of(KeyPurpose::Webhook, &token),
            Some(record.key_id.as_str())
        );
        // A webhook token has no API-key id, and the reverse.
        assert_eq!(key_id(&token), None);
        let (key, api_record) = generate("agent", "acme");
        assert_eq!(id_of(KeyPurpose::Webhook, &key), None);
        assert!(accepts(&record, &token, KeyPurpose::Webhook));
        assert!(!accepts(&record, &token, KeyPurpose::Api));
        assert!(accepts(&api_record, &key, KeyPurpose::Api));
        assert!(!accepts(&api_record, &key, KeyPurpose::Webhook));
        // The same id under the other prefix is a different key.
        let swapped = token.replacen("cwt_", "cok_", 1);
        assert!(!key_matches(&record, &swapped));
        let mut revoked = record.clone();
        revoked.revoked_at = Some("2026-01-01T00:00:00Z".into());
        assert!(!accepts(&revoked, &token, KeyPurpose::Webhook));
    }

    #[test]
    fn records_stored_before_purposes_are_api_keys() {
        let record: ApiKeyRecord = serde_json::from_value(serde_json::json!({
            "key_id": "abc", "key_hash": "00", "name": "old", "created_at": "2025-01-01T00:00:00Z"
        }))
        .unwrap();
        assert_eq!(record.purpose, KeyPurpose::Api);
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
