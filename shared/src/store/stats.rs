//! Processing counters kept as atomic DynamoDB `ADD`s on one item, so
//! `/stats` and `/health` read one item instead of scanning calls. A call
//! of an organisation moves its organisation's item (`calls#org#<org_id>`)
//! too, in the same transaction, so an organisation's `/stats` is one read.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, TransactWriteItem, Update};
use aws_sdk_dynamodb::Client;
use serde::Serialize;

use crate::store::transactions::{self, Verdict};
use crate::store::StoreError;

const STATS_KEY: &str = "calls";

/// The item of one organisation's counters.
pub fn org_key(org_id: &str) -> String {
    format!("{STATS_KEY}#org#{org_id}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    TotalProcessed,
    SuccessfullyPosted,
    Failed,
    Duplicates,
}

impl Counter {
    pub fn attribute(self) -> &'static str {
        match self {
            Self::TotalProcessed => "total_processed",
            Self::SuccessfullyPosted => "successfully_posted",
            Self::Failed => "failed",
            Self::Duplicates => "duplicates",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    pub total_processed: u64,
    pub successfully_posted: u64,
    pub failed: u64,
    pub duplicates: u64,
}

#[async_trait]
pub trait StatsStore: Send + Sync {
    /// Counts one on the deployment's counters and, for a call of an
    /// organisation, on that organisation's, together.
    async fn increment(&self, counter: Counter, org_id: Option<&str>) -> Result<(), StoreError> {
        self.add(counter, org_id, 1).await
    }
    /// Counts `n` at once (a stream batch's new records of one organisation).
    async fn add(&self, counter: Counter, org_id: Option<&str>, n: u64) -> Result<(), StoreError>;
    /// The deployment's counters.
    async fn read(&self) -> Result<Stats, StoreError>;
    /// One organisation's counters.
    async fn read_org(&self, org_id: &str) -> Result<Stats, StoreError>;
}

/// Counters are bookkeeping: a failed increment is logged, never allowed to
/// fail the delivery it describes.
pub async fn count(stats: &dyn StatsStore, counter: Counter, org_id: Option<&str>) {
    if let Err(err) = stats.increment(counter, org_id).await {
        tracing::warn!(counter = counter.attribute(), error = %err, "stats counter not updated");
    }
}

pub struct DynamoStatsStore {
    client: Client,
    table: String,
}

impl DynamoStatsStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }
}

impl DynamoStatsStore {
    fn add_n(&self, pk: String, counter: Counter, n: u64) -> Result<Update, StoreError> {
        Update::builder()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(pk))
            .update_expression("ADD #c :n")
            .expression_attribute_names("#c", counter.attribute())
            .expression_attribute_values(":n", AttributeValue::N(n.to_string()))
            .build()
            .map_err(|e| StoreError::Dynamo(e.to_string()))
    }

    async fn read_item(&self, pk: String) -> Result<Stats, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(pk))
            .send()
            .await?;
        let item = out.item.unwrap_or_default();
        let get = |counter: Counter| -> u64 {
            item.get(counter.attribute())
                .and_then(|v| v.as_n().ok())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        Ok(Stats {
            total_processed: get(Counter::TotalProcessed),
            successfully_posted: get(Counter::SuccessfullyPosted),
            failed: get(Counter::Failed),
            duplicates: get(Counter::Duplicates),
        })
    }
}

#[async_trait]
impl StatsStore for DynamoStatsStore {
    async fn add(&self, counter: Counter, org_id: Option<&str>, n: u64) -> Result<(), StoreError> {
        let Some(org_id) = org_id else {
            self.client
                .update_item()
                .table_name(&self.table)
                .key("pk", AttributeValue::S(STATS_KEY.into()))
                .update_expression("ADD #c :n")
                .expression_attribute_names("#c", counter.attribute())
                .expression_attribute_values(":n", AttributeValue::N(n.to_string()))
                .send()
                .await?;
            return Ok(());
        };
        // Both or neither: an organisation's counts never run ahead of or
        // behind the deployment's.
        let items = vec![
            TransactWriteItem::builder()
                .update(self.add_n(STATS_KEY.into(), counter, n)?)
                .build(),
            TransactWriteItem::builder()
                .update(self.add_n(org_key(org_id), counter, n)?)
                .build(),
        ];
        transactions::transact(&self.client, items, "stats counter", (), |reasons| {
            if transactions::busy(reasons) {
                Verdict::Retry(transactions::codes(reasons))
            } else {
                Verdict::Fail(transactions::codes(reasons))
            }
        })
        .await
    }

    async fn read(&self) -> Result<Stats, StoreError> {
        self.read_item(STATS_KEY.into()).await
    }

    async fn read_org(&self, org_id: &str) -> Result<Stats, StoreError> {
        self.read_item(org_key(org_id)).await
    }
}
