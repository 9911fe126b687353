//! Voice-agent sessions (LiveKit rooms): when the call started and ended, who
//! called, and the Slack thread its call-start message opened, so the
//! transcript that arrives later can be posted as a reply.
//!
//! Stored beside call records in the calls table: key `(room_name, "session")`.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use serde::{Deserialize, Serialize};

use super::ledger::Ledger;
use crate::store::StoreError;

/// Where a Slack message landed, so later messages can reply to it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SlackThread {
    pub channel: String,
    pub ts: String,
}

const SESSION_ITEM: &str = "session";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    #[serde(rename = "call_id")]
    pub room_name: String,
    #[serde(default)]
    pub room_sid: Option<String>,
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub ended_at: Option<String>,
    /// Why the session was ended by the sweep rather than by `room_finished`.
    #[serde(default)]
    pub end_reason: Option<String>,
    #[serde(default)]
    pub duration_secs: Option<u64>,
    #[serde(default)]
    pub user_email: Option<String>,
    #[serde(default)]
    pub participant_identity: Option<String>,
    #[serde(default)]
    pub thread_channel: Option<String>,
    #[serde(default)]
    pub thread_ts: Option<String>,
}

impl SessionRecord {
    pub fn thread(&self) -> Option<SlackThread> {
        Some(SlackThread {
            channel: self.thread_channel.clone()?,
            ts: self.thread_ts.clone()?,
        })
    }
}

#[async_trait]
pub trait SessionStore: Send + Sync {
    async fn room_started(
        &self,
        room: &str,
        room_sid: Option<&str>,
        started_at: &str,
    ) -> Result<(), StoreError>;
    async fn room_finished(
        &self,
        room: &str,
        ended_at: &str,
        duration_secs: Option<u64>,
    ) -> Result<(), StoreError>;
    async fn participant_joined(
        &self,
        room: &str,
        user_email: Option<&str>,
        identity: Option<&str>,
    ) -> Result<(), StoreError>;
    /// Keeps the first thread: a later call-start message never replaces it.
    async fn set_thread(&self, room: &str, thread: &SlackThread) -> Result<(), StoreError>;
    async fn get(&self, room: &str) -> Result<Option<SessionRecord>, StoreError>;
    /// Watch entries of sessions due at `now` (epoch seconds), oldest first.
    async fn due_watches(&self, now: i64, limit: i32) -> Result<Vec<SessionWatch>, StoreError>;
    async fn drop_watch(&self, watch: &SessionWatch) -> Result<(), StoreError>;
    /// Ends a session that never reported its end; false if it had ended.
    async fn end_stale(&self, room: &str, ended_at: &str, reason: &str)
        -> Result<bool, StoreError>;
}

/// A session the sweep should look at: its entry in the watch ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionWatch {
    pub entry: String,
    pub room: String,
}

/// The partition of the calls table listing sessions to look at again,
/// sorted by when (`<epoch:012>#<room>`); each event that opens a session
/// adds one, so a session whose `room_finished` never comes is found.
const WATCH: Ledger = Ledger {
    partition: "sessions#watch",
    id_attribute: "watched_room",
};

/// How long a session may stay open before the sweep ends it.
pub const DEFAULT_SESSION_MAX: std::time::Duration = std::time::Duration::from_secs(6 * 3600);

pub struct DynamoSessionStore {
    client: Client,
    table: String,
    /// When a newly seen session is due for the sweep.
    max_open: std::time::Duration,
}

impl DynamoSessionStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            max_open: DEFAULT_SESSION_MAX,
        }
    }

    /// Puts the session in the watch ledger (idempotent enough: a session
    /// with several entries is looked at once per entry, cheaply).
    async fn watch(&self, room: &str) -> Result<(), StoreError> {
        let due = crate::base::time::epoch_secs()
            + i64::try_from(self.max_open.as_secs()).unwrap_or(i64::MAX / 2);
        WATCH.put(&self.client, &self.table, room, due).await
    }

    /// `SET` each present value; every session write is an idempotent upsert.
    async fn set(
        &self,
        room: &str,
        values: &[(&str, AttributeValue)],
        condition: Option<&str>,
    ) -> Result<bool, StoreError> {
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("call_id", AttributeValue::S(room.to_string()))
            .key("item", AttributeValue::S(SESSION_ITEM.into()));
        let mut assignments = Vec::new();
        for (index, (name, value)) in values.iter().enumerate() {
            assignments.push(format!("#f{index} = :v{index}"));
            update = update
                .expression_attribute_names(format!("#f{index}"), *name)
                .expression_attribute_values(format!(":v{index}"), value.clone());
        }
        if let Some(condition) = condition {
            update = update.condition_expression(condition);
        }
        super::applied(
            update
                .update_expression(format!("SET {}", assignments.join(", ")))
                .send()
                .await,
        )
    }
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_string())
}

#[async_trait]
impl SessionStore for DynamoSessionStore {
    async fn room_started(
        &self,
        room: &str,
        room_sid: Option<&str>,
        started_at: &str,
    ) -> Result<(), StoreError> {
        let mut values = vec![("started_at", s(started_at))];
        if let Some(sid) = room_sid {
            values.push(("room_sid", s(sid)));
        }
        // Independent writes: side by side, so watching costs no round trip.
        let (recorded, watched) = tokio::join!(self.set(room, &values, None), self.watch(room));
        recorded?;
        watched
    }

    async fn room_finished(
        &self,
        room: &str,
        ended_at: &str,
        duration_secs: Option<u64>,
    ) -> Result<(), StoreError> {
        let mut values = vec![("ended_at", s(ended_at))];
        if let Some(duration) = duration_secs {
            values.push(("duration_secs", AttributeValue::N(duration.to_string())));
        }
        self.set(room, &values, None).await.map(drop)
    }

    async fn participant_joined(
        &self,
        room: &str,
        user_email: Option<&str>,
        identity: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut values = Vec::new();
        if let Some(email) = user_email {
            values.push(("user_email", s(email)));
        }
        if let Some(identity) = identity {
            values.push(("participant_identity", s(identity)));
        }
        if values.is_empty() {
            return self.watch(room).await;
        }
        // Independent writes: side by side, so watching costs no round trip.
        let (recorded, watched) = tokio::join!(self.set(room, &values, None), self.watch(room));
        recorded?;
        watched
    }

    async fn set_thread(&self, room: &str, thread: &SlackThread) -> Result<(), StoreError> {
        self.set(
            room,
            &[
                ("thread_channel", s(&thread.channel)),
                ("thread_ts", s(&thread.ts)),
            ],
            Some("attribute_not_exists(thread_ts)"),
        )
        .await
        .map(drop)
    }

    async fn get(&self, room: &str) -> Result<Option<SessionRecord>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("call_id", s(room))
            .key("item", s(SESSION_ITEM))
            .consistent_read(true)
            .send()
            .await?;
        out.item
            .map(|item| serde_dynamo::from_item(item).map_err(Into::into))
            .transpose()
    }

    async fn due_watches(&self, now: i64, limit: i32) -> Result<Vec<SessionWatch>, StoreError> {
        Ok(WATCH
            .due(&self.client, &self.table, now, limit)
            .await?
            .into_iter()
            .map(|due| SessionWatch {
                entry: due.entry,
                room: due.id,
            })
            .collect())
    }

    async fn drop_watch(&self, watch: &SessionWatch) -> Result<(), StoreError> {
        WATCH.remove(&self.client, &self.table, &watch.entry).await
    }

    async fn end_stale(
        &self,
        room: &str,
        ended_at: &str,
        reason: &str,
    ) -> Result<bool, StoreError> {
        self.set(
            room,
            &[("ended_at", s(ended_at)), ("end_reason", s(reason))],
            Some("attribute_exists(call_id) AND attribute_not_exists(ended_at)"),
        )
        .await
    }
}
