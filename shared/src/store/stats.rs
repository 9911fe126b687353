//! Processing counters kept as atomic DynamoDB `ADD`s on one item, so
//! `/stats` and `/health` read one item instead of scanning calls.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use serde::Serialize;

use crate::store::StoreError;

const STATS_KEY: &str = "calls";

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
    async fn increment(&self, counter: Counter) -> Result<(), StoreError>;
    async fn read(&self) -> Result<Stats, StoreError>;
}

/// Counters are bookkeeping: a failed increment is logged, never allowed to
/// fail the delivery it describes.
pub async fn count(stats: &dyn StatsStore, counter: Counter) {
    if let Err(err) = stats.increment(counter).await {
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

#[async_trait]
impl StatsStore for DynamoStatsStore {
    async fn increment(&self, counter: Counter) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(STATS_KEY.into()))
            .update_expression("ADD #c :one")
            .expression_attribute_names("#c", counter.attribute())
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .send()
            .await?;
        Ok(())
    }

    async fn read(&self) -> Result<Stats, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(STATS_KEY.into()))
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
