//! The call log: an organisation's calls of every kind (recording pipeline,
//! outbound, sessions), newest first, without a Scan. Each record written
//! for an organisation carries `log_org` and `log_at` (`<RFC 3339 start>#<id>`),
//! the keys of the calls table's `CallLog` index (KEYS_ONLY). A page is one
//! Query of that index and one BatchGetItem of the records it names, so a
//! page costs the same whatever the organisation's number of calls.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use serde::{Deserialize, Serialize};

use super::calls::CallRecord;
use super::outbound_calls::OutboundCall;
use super::sessions::SessionRecord;
use super::{s, StoreError};

pub const INDEX: &str = "CallLog";
pub const ORG_ATTRIBUTE: &str = "log_org";
pub const AT_ATTRIBUTE: &str = "log_at";

/// The index's sort key: when the call started, then its id (unique).
pub fn log_at(started_at: &str, id: &str) -> String {
    format!("{started_at}#{id}")
}

/// The two attributes that put a record in `org`'s log.
pub fn log_attributes(org: &str, started_at: &str, id: &str) -> [(String, AttributeValue); 2] {
    [
        (ORG_ATTRIBUTE.to_string(), s(org)),
        (AT_ATTRIBUTE.to_string(), s(&log_at(started_at, id))),
    ]
}

/// One record of the log, as stored.
#[derive(Debug, Clone, PartialEq)]
pub enum LoggedRecord {
    Recording(CallRecord),
    Outbound(OutboundCall),
    Session(SessionRecord),
}

/// Where the next page starts: the last entry of this one. Opaque to
/// callers; it only ever addresses the reader's own organisation's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogCursor {
    #[serde(rename = "c")]
    pub call_id: String,
    #[serde(rename = "i")]
    pub item: String,
    #[serde(rename = "a")]
    pub at: String,
}

/// One page's request: `org`'s log between `from` and `to` (RFC 3339,
/// inclusive), newest first.
#[derive(Debug, Clone)]
pub struct LogQuery<'a> {
    pub org: &'a str,
    pub from: Option<&'a str>,
    pub to: Option<&'a str>,
    pub limit: i32,
    pub after: Option<&'a LogCursor>,
}

#[derive(Debug, Default)]
pub struct LogPage {
    pub records: Vec<LoggedRecord>,
    pub next: Option<LogCursor>,
}

#[async_trait]
pub trait CallLogStore: Send + Sync {
    async fn page(&self, query: &LogQuery<'_>) -> Result<LogPage, StoreError>;
}

pub struct DynamoCallLogStore {
    pub client: Client,
    pub table: String,
}

/// What a logged item of the calls table is, by its sort key.
fn parse(item: HashMap<String, AttributeValue>) -> Result<Option<LoggedRecord>, StoreError> {
    let kind = item.get("item").and_then(|v| v.as_s().ok()).cloned();
    Ok(match kind.as_deref() {
        Some("call") => Some(LoggedRecord::Recording(serde_dynamo::from_item(item)?)),
        Some("outbound") => Some(LoggedRecord::Outbound(serde_dynamo::from_item(item)?)),
        Some("session") => Some(LoggedRecord::Session(serde_dynamo::from_item(item)?)),
        _ => None,
    })
}

fn text(item: &HashMap<String, AttributeValue>, name: &str) -> Option<String> {
    item.get(name).and_then(|v| v.as_s().ok()).cloned()
}

impl DynamoCallLogStore {
    /// The records the index named, in the index's order.
    async fn records(
        &self,
        keys: Vec<HashMap<String, AttributeValue>>,
    ) -> Result<Vec<LoggedRecord>, StoreError> {
        let order: Vec<(String, String)> = keys
            .iter()
            .filter_map(|k| Some((text(k, "call_id")?, text(k, "item")?)))
            .collect();
        let mut found: HashMap<(String, String), LoggedRecord> = HashMap::new();
        for item in super::batch_get(&self.client, &self.table, keys, false).await? {
            let key = (
                text(&item, "call_id").unwrap_or_default(),
                text(&item, "item").unwrap_or_default(),
            );
            if let Some(record) = parse(item)? {
                found.insert(key, record);
            }
        }
        Ok(order
            .into_iter()
            .filter_map(|key| found.remove(&key))
            .collect())
    }
}

#[async_trait]
impl CallLogStore for DynamoCallLogStore {
    async fn page(&self, query: &LogQuery<'_>) -> Result<LogPage, StoreError> {
        // `#` sorts before every digit, `~` after every character of an id.
        let from = format!("{}#", query.from.unwrap_or("0000"));
        let to = format!("{}~", query.to.unwrap_or("9999"));
        let mut request = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(INDEX)
            .key_condition_expression("#org = :org AND #at BETWEEN :from AND :to")
            .expression_attribute_names("#org", ORG_ATTRIBUTE)
            .expression_attribute_names("#at", AT_ATTRIBUTE)
            .expression_attribute_values(":org", s(query.org))
            .expression_attribute_values(":from", s(&from))
            .expression_attribute_values(":to", s(&to))
            .scan_index_forward(false)
            .limit(query.limit);
        if let Some(after) = query.after {
            request = request.set_exclusive_start_key(Some(HashMap::from([
                ("call_id".to_string(), s(&after.call_id)),
                ("item".to_string(), s(&after.item)),
                (ORG_ATTRIBUTE.to_string(), s(query.org)),
                (AT_ATTRIBUTE.to_string(), s(&after.at)),
            ])));
        }
        let out = request.send().await?;
        let keys: Vec<HashMap<String, AttributeValue>> = out
            .items
            .unwrap_or_default()
            .into_iter()
            .filter_map(|item| {
                Some(HashMap::from([
                    ("call_id".to_string(), s(&text(&item, "call_id")?)),
                    ("item".to_string(), s(&text(&item, "item")?)),
                ]))
            })
            .collect();
        let next = out.last_evaluated_key.and_then(|last| {
            Some(LogCursor {
                call_id: text(&last, "call_id")?,
                item: text(&last, "item")?,
                at: text(&last, AT_ATTRIBUTE)?,
            })
        });
        let records = if keys.is_empty() {
            Vec::new()
        } else {
            self.records(keys).await?
        };
        Ok(LogPage { records, next })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_sort_by_start_then_id_and_a_range_covers_its_ends() {
        let early = log_at("2026-12-01T10:00:00Z", "oc_b");
        let late = log_at("2026-12-01T10:00:01Z", "oc_a");
        assert!(early < late);
        assert!(format!("{}#", "2026-12-01T10:00:00Z") < early);
        assert!(early < format!("{}~", "2026-12-01T10:00:00Z"));
        assert!(late > format!("{}~", "2026-12-01T10:00:00Z"));
    }
}
