//! Each organisation's do-not-call list, in the tenancy table: one item per
//! listed number (`key` = `dnc#<org>#<E.164>`, `org_id` for the `by_org`
//! index), so the check before a dial is one `GetItem` and the list one
//! query of the organisation's index partition.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, ReturnValue, WriteRequest};
use aws_sdk_dynamodb::Client;

use super::{s, StoreError};

/// One listed number.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DncEntry {
    /// E.164.
    pub number: String,
    /// RFC 3339: when it was (last) added.
    pub added_at: String,
    pub reason: Option<String>,
}

/// A page of an organisation's list, in number order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DncPage {
    pub entries: Vec<DncEntry>,
    /// The last number of this page when more may follow.
    pub next: Option<String>,
}

#[async_trait]
pub trait DoNotCallStore: Send + Sync {
    /// Whether `number` (E.164) is on `org_id`'s list.
    async fn listed(&self, org_id: &str, number: &str) -> Result<bool, StoreError>;
    /// Adds every entry (a listed number is listed again, with this time).
    async fn add(&self, org_id: &str, entries: &[DncEntry]) -> Result<(), StoreError>;
    /// Takes `number` off the list; false if it was not on it.
    async fn remove(&self, org_id: &str, number: &str) -> Result<bool, StoreError>;
    /// At most `limit` entries after the number `after`.
    async fn list(
        &self,
        org_id: &str,
        limit: i32,
        after: Option<&str>,
    ) -> Result<DncPage, StoreError>;
}

pub struct DynamoDncStore {
    pub client: Client,
    /// `TENANCY_TABLE`.
    pub table: String,
}

fn prefix(org_id: &str) -> String {
    format!("dnc#{org_id}#")
}

fn key(org_id: &str, number: &str) -> String {
    format!("{}{number}", prefix(org_id))
}

/// BatchWriteItem takes 25 requests; unprocessed ones are sent again.
const BATCH: usize = 25;

#[async_trait]
impl DoNotCallStore for DynamoDncStore {
    async fn listed(&self, org_id: &str, number: &str) -> Result<bool, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("key", s(&key(org_id, number)))
            .projection_expression("#k")
            .expression_attribute_names("#k", "key")
            .send()
            .await?;
        Ok(out.item.is_some())
    }

    async fn add(&self, org_id: &str, entries: &[DncEntry]) -> Result<(), StoreError> {
        for chunk in entries.chunks(BATCH) {
            let mut pending: Vec<WriteRequest> = Vec::with_capacity(chunk.len());
            for entry in chunk {
                let mut item = HashMap::from([
                    ("key".to_string(), s(&key(org_id, &entry.number))),
                    ("org_id".to_string(), s(org_id)),
                    ("number".to_string(), s(&entry.number)),
                    ("added_at".to_string(), s(&entry.added_at)),
                ]);
                if let Some(reason) = &entry.reason {
                    item.insert("reason".to_string(), s(reason));
                }
                let put = PutRequest::builder()
                    .set_item(Some(item))
                    .build()
                    .map_err(|e| StoreError::Dynamo(e.to_string()))?;
                pending.push(WriteRequest::builder().put_request(put).build());
            }
            super::batch_write(
                &self.client,
                &self.table,
                pending,
                "do-not-call list numbers",
            )
            .await?;
        }
        Ok(())
    }

    async fn remove(&self, org_id: &str, number: &str) -> Result<bool, StoreError> {
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("key", s(&key(org_id, number)))
            .return_values(ReturnValue::AllOld)
            .send()
            .await?;
        Ok(out.attributes.is_some())
    }

    async fn list(
        &self,
        org_id: &str,
        limit: i32,
        after: Option<&str>,
    ) -> Result<DncPage, StoreError> {
        let mut query = self
            .client
            .query()
            .table_name(&self.table)
            .index_name("by_org")
            .key_condition_expression("org_id = :org AND begins_with(#k, :prefix)")
            .expression_attribute_names("#k", "key")
            .expression_attribute_values(":org", s(org_id))
            .expression_attribute_values(":prefix", s(&prefix(org_id)))
            .limit(limit);
        if let Some(after) = after {
            query = query.set_exclusive_start_key(Some(HashMap::from([
                ("key".to_string(), s(&key(org_id, after))),
                ("org_id".to_string(), s(org_id)),
            ])));
        }
        let out = query.send().await?;
        let more = out.last_evaluated_key.is_some();
        // The index keeps keys only: the entries themselves, read by key.
        let keys: Vec<HashMap<String, AttributeValue>> = out
            .items
            .unwrap_or_default()
            .into_iter()
            .filter_map(|item| {
                Some(HashMap::from([(
                    "key".to_string(),
                    item.get("key")?.clone(),
                )]))
            })
            .collect();
        let text = |item: &HashMap<String, AttributeValue>, name: &str| {
            item.get(name).and_then(|v| v.as_s().ok()).cloned()
        };
        let mut entries: Vec<DncEntry> = super::batch_get(&self.client, &self.table, keys, false)
            .await?
            .iter()
            .filter_map(|item| {
                Some(DncEntry {
                    number: text(item, "number")?,
                    added_at: text(item, "added_at").unwrap_or_default(),
                    reason: text(item, "reason"),
                })
            })
            .collect();
        entries.sort_by(|a, b| a.number.cmp(&b.number));
        let next = if more {
            entries.last().map(|e| e.number.clone())
        } else {
            None
        };
        Ok(DncPage { entries, next })
    }
}
