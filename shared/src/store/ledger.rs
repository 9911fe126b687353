//! Time-sorted ledgers kept in the calls table: one partition per ledger,
//! one item per entry, sort key `<due:012>#<id>`, so "what is due by now"
//! is a single range query and no table scan or index is needed. The open
//! reservations, the calls to watch and the sessions to watch are ledgers.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;

use super::{s, StoreError};

/// One ledger: its partition and the attribute that names the entry's subject.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ledger {
    pub partition: &'static str,
    pub id_attribute: &'static str,
}

/// An entry that is due: its sort key (to remove it) and its subject's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DueEntry {
    pub entry: String,
    pub id: String,
    /// What the writer noted beside the id (attribute `detail`), if anything.
    pub detail: Option<String>,
}

/// The attribute an entry may carry beside its id.
pub(crate) const DETAIL_ATTRIBUTE: &str = "detail";

/// The sort key of `id`'s entry due at `due` (epoch seconds).
pub(crate) fn entry(id: &str, due: i64) -> String {
    format!("{due:012}#{id}")
}

impl Ledger {
    /// The entry's primary key in the calls table.
    pub fn key(&self, entry: &str) -> HashMap<String, AttributeValue> {
        HashMap::from([
            ("call_id".to_string(), s(self.partition)),
            ("item".to_string(), s(entry)),
        ])
    }

    /// The whole entry item for `id`, due at `due`.
    pub fn item(&self, id: &str, due: i64) -> HashMap<String, AttributeValue> {
        let mut item = self.key(&entry(id, due));
        item.insert(self.id_attribute.to_string(), s(id));
        item
    }

    pub async fn put(
        &self,
        client: &Client,
        table: &str,
        id: &str,
        due: i64,
    ) -> Result<(), StoreError> {
        client
            .put_item()
            .table_name(table)
            .set_item(Some(self.item(id, due)))
            .send()
            .await?;
        Ok(())
    }

    /// Entries due at `now` (epoch seconds), oldest first.
    pub async fn due(
        &self,
        client: &Client,
        table: &str,
        now: i64,
        limit: i32,
    ) -> Result<Vec<DueEntry>, StoreError> {
        let out = client
            .query()
            .table_name(table)
            .key_condition_expression("call_id = :ledger AND #entry <= :due")
            .expression_attribute_names("#entry", "item")
            .expression_attribute_values(":ledger", s(self.partition))
            // Entries sort by their time; "~" sorts after every "#<id>".
            .expression_attribute_values(":due", s(&format!("{now:012}~")))
            .consistent_read(true)
            .limit(limit)
            .send()
            .await?;
        Ok(out
            .items
            .unwrap_or_default()
            .iter()
            .filter_map(|item| {
                Some(DueEntry {
                    entry: item.get("item")?.as_s().ok()?.clone(),
                    id: item.get(self.id_attribute)?.as_s().ok()?.clone(),
                    detail: item
                        .get(DETAIL_ATTRIBUTE)
                        .and_then(|v| v.as_s().ok())
                        .cloned(),
                })
            })
            .collect())
    }

    pub async fn remove(
        &self,
        client: &Client,
        table: &str,
        entry: &str,
    ) -> Result<(), StoreError> {
        client
            .delete_item()
            .table_name(table)
            .set_key(Some(self.key(entry)))
            .send()
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_sort_by_due_time_and_a_range_ends_after_its_second() {
        assert!(entry("oc_b", 99) < entry("oc_a", 100));
        assert!(entry("oc_a", 100) < format!("{:012}~", 100));
        assert!(entry("oc_a", 101) > format!("{:012}~", 100));
        let ledger = Ledger {
            partition: "x#open",
            id_attribute: "subject",
        };
        let item = ledger.item("a", 5);
        assert_eq!(item["item"].as_s().unwrap(), "000000000005#a");
        assert_eq!(item["subject"].as_s().unwrap(), "a");
    }
}
