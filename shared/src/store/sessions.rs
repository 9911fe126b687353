//! Voice-agent sessions (LiveKit rooms): when the call started and ended, who
//! called, and the Slack thread its call-start message opened, so the
//! transcript that arrives later can be posted as a reply.
//!
//! Stored beside call records in the calls table: key `(room_name, "session")`.

use std::collections::HashMap;

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
/// The item holding which organisation a room name belongs to.
const OWNER_ITEM: &str = "owner";
pub const STATUS_ACTIVE: &str = "active";
pub const STATUS_ENDED: &str = "ended";

/// How long an ended session stays listed under `?status=ended`.
const ENDED_RETENTION_SECS: i64 = 30 * 24 * 3600;

/// A typed session as it opens (seed 002): who owns it and what it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewSession {
    pub session_id: String,
    pub session_type: String,
    pub room: String,
    pub org_id: String,
    pub started_at: String,
    pub agent_active: bool,
    pub dispatch_id: Option<String>,
    pub call_sid: Option<String>,
    pub direction: Option<String>,
    pub from_number: Option<String>,
    pub to_number: Option<String>,
    pub host_identity: Option<String>,
    /// An ended session of the same organisation in this room may start
    /// again (chat launchers reuse one room per user or channel).
    pub reopen: bool,
    /// A fresh id for this conversation: every ender carries the one it
    /// was for, so it never ends the room's next conversation.
    pub conversation: String,
    /// LiveKit's sid of the room this conversation runs in, when known.
    pub room_sid: Option<String>,
}

/// What opening a session found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// Recorded (or it was already open for the same organisation).
    Active,
    /// The session had ended and a new one started in its room (`reopen`).
    Reopened,
    /// The session ended before and may not be reopened.
    AlreadyEnded,
    /// The room belongs to another organisation's session.
    OwnedElsewhere,
}

/// How a session ends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ending {
    pub ended_at: String,
    pub duration_secs: Option<u64>,
    /// Why, when it is not LiveKit's `room_finished`: `completed`,
    /// `no-answer`, `ended by API`, `stale`...
    pub reason: Option<String>,
    /// The conversation this ender was for; `None` ends whichever is open
    /// (only for kinds whose room never hosts a second conversation).
    pub conversation: Option<String>,
    /// The LiveKit room sid this ender saw end: a room that is gone ends
    /// only the conversation that ran in it.
    pub room_sid: Option<String>,
}

/// One change to an open session; refused (false) once it has ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionChange {
    CallStatus(String),
    Agent {
        active: bool,
        dispatch_id: Option<String>,
    },
    Recording {
        active: bool,
        egress_id: String,
        location: Option<String>,
    },
    Participant(String),
    /// Gives the conversation its invite key if it has none yet (of two
    /// concurrent first links, one key wins; both read it back).
    InviteKey(String),
    /// Replaces the invite key: every invite issued so far is refused.
    RevokeInvites(String),
}

/// A switch of an open session that one request at a time may change: the
/// holder of its lease reads LiveKit, acts, and writes the result with the
/// release ([`SessionStore::finish_switch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    Agent,
    Recording,
}

impl Switch {
    fn lease_attributes(self) -> (&'static str, &'static str) {
        match self {
            Self::Agent => ("agent_switch_until", "agent_switch_owner"),
            Self::Recording => ("recording_switch_until", "recording_switch_owner"),
        }
    }
}

/// What a switch's holder found true at LiveKit, written as it lets go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwitchResult {
    Agent {
        active: bool,
        dispatch_id: Option<String>,
    },
    Recording {
        active: bool,
        /// The egress running now (on) or the last one stopped (off).
        egress_id: Option<String>,
        location: Option<String>,
    },
}

/// The rank of a call status (Twilio's names): a session's `call_status`
/// only moves to a higher one, whatever order the callbacks arrive in.
pub fn call_status_rank(status: &str) -> u32 {
    crate::store::outbound_calls::status_rank(status)
}

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
    /// `end_reason` in the set every provider maps to, set as it ends.
    #[serde(default)]
    pub end_code: Option<crate::base::end_reason::EndReason>,
    /// Its end came from asking LiveKit: `room_finished` never arrived.
    #[serde(default)]
    pub reconciled: bool,
    /// Asks of LiveKit in a row that got no answer.
    #[serde(default)]
    pub reconcile_attempts: u32,
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
    // Seed 002's typed sessions; a LiveKit-only (seed 000) session has none.
    /// `phone-{CallSid}`, `web-{roomName}`, ...
    #[serde(default)]
    pub session_id: Option<String>,
    /// `phone`, `whatsapp`, `web`, ...
    #[serde(default)]
    pub session_type: Option<String>,
    /// The organisation that owns it: only its API keys see or change it.
    #[serde(default)]
    pub org_id: Option<String>,
    /// `active` until ended, then `ended`.
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub agent_active: Option<bool>,
    #[serde(default)]
    pub dispatch_id: Option<String>,
    #[serde(default)]
    pub call_sid: Option<String>,
    /// The provider's last call status (`ringing`, `in-progress`, ...).
    #[serde(default)]
    pub call_status: Option<String>,
    #[serde(default)]
    pub direction: Option<String>,
    #[serde(default)]
    pub from_number: Option<String>,
    #[serde(default)]
    pub to_number: Option<String>,
    #[serde(default)]
    pub host_identity: Option<String>,
    /// Identities that joined (a string set: adding one twice is harmless).
    #[serde(default)]
    pub participants: Vec<String>,
    #[serde(default)]
    pub recording: Option<bool>,
    #[serde(default)]
    pub egress_id: Option<String>,
    /// `s3://bucket/key` of the room's recording.
    #[serde(default)]
    pub recording_location: Option<String>,
    /// The id of the conversation now in the room (new on every reopen).
    #[serde(default)]
    pub conversation: Option<String>,
    /// The start came from an agent's `/calls/started`, not from LiveKit:
    /// its end may never be reported, so the sweep ends it without paging.
    #[serde(default)]
    pub reported_by: Option<String>,
    /// The current conversation's invite key: invites carry it, and a
    /// reopen (removed) or a revocation (replaced) voids the old ones.
    #[serde(default)]
    pub invite_key: Option<String>,
}

impl Ending {
    /// Its reason in the set every provider maps to.
    pub fn code(&self) -> crate::base::end_reason::EndReason {
        crate::base::end_reason::EndReason::from_session_end(self.reason.as_deref())
    }

    /// Whether this ender was for the conversation `record` holds now.
    pub fn is_for(&self, record: &SessionRecord) -> bool {
        let same_conversation = self
            .conversation
            .as_ref()
            .is_none_or(|c| record.conversation.as_ref() == Some(c));
        let same_room = match (&self.room_sid, &record.room_sid) {
            (Some(seen), Some(now)) => seen == now,
            _ => true,
        };
        same_conversation && same_room
    }
}

impl SessionRecord {
    /// Ended, whether by status, `ended_at` or both.
    pub fn ended(&self) -> bool {
        self.ended_at.is_some() || self.status.as_deref() == Some(STATUS_ENDED)
    }

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
    /// LiveKit's `room_finished` of the room with sid `room_sid`: ends only
    /// the conversation that ran in that room.
    async fn room_finished(
        &self,
        room: &str,
        ended_at: &str,
        duration_secs: Option<u64>,
        room_sid: Option<&str>,
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
    /// Sessions ended since their `session.ended` event was last published, oldest first.
    async fn ended_unannounced(&self, limit: i32) -> Result<Vec<SessionWatch>, StoreError>;
    async fn mark_announced(&self, ended: &SessionWatch) -> Result<(), StoreError>;
    /// Moves a watch entry to `to` (epoch seconds), keeping its
    /// conversation, and notes the unanswered asks of LiveKit so far.
    async fn reschedule_watch(
        &self,
        watch: &SessionWatch,
        to: i64,
        attempts: u32,
    ) -> Result<(), StoreError>;
    /// Marks a session whose end came from asking LiveKit.
    async fn mark_reconciled(&self, room: &str) -> Result<(), StoreError>;
    /// Ends a session that never reported its end; false if it had ended
    /// (or, given `conversation`, if the room now holds another one).
    async fn end_stale(
        &self,
        room: &str,
        ended_at: &str,
        reason: &str,
        conversation: Option<&str>,
    ) -> Result<bool, StoreError>;
    /// Claims the room name for `org_id` before anything is created for it:
    /// false if another organisation holds it. A name, once claimed, stays
    /// its organisation's (LiveKit has one room namespace per project).
    async fn claim_room(&self, room: &str, org_id: &str) -> Result<bool, StoreError>;
    /// Marks a seed-000 session as started by `org_id`'s report.
    async fn mark_reported(&self, room: &str, org_id: &str) -> Result<(), StoreError>;
    /// Takes `switch` of the open session in `room` for `owner` until
    /// `until` (epoch seconds); false while another holds an unexpired lease
    /// or the session is missing or ended.
    async fn claim_switch(
        &self,
        room: &str,
        switch: Switch,
        owner: &str,
        now: i64,
        until: i64,
    ) -> Result<bool, StoreError>;
    /// Writes what the holder found (if anything) and lets the lease go, in
    /// one write conditioned on `owner` still holding it.
    async fn finish_switch(
        &self,
        room: &str,
        switch: Switch,
        owner: &str,
        result: Option<&SwitchResult>,
    ) -> Result<bool, StoreError>;
    /// Opens a typed session: the record, its entry among its organisation's
    /// active sessions and its watch entry, in one transaction.
    async fn open(&self, session: &NewSession) -> Result<Opened, StoreError>;
    /// Ends a session exactly once; the record as it was when this call
    /// ended it, `None` if it had ended already or never existed.
    async fn end(&self, room: &str, ending: &Ending) -> Result<Option<SessionRecord>, StoreError>;
    /// Applies `change` to an open session; false if it is missing or ended.
    async fn update(&self, room: &str, change: &SessionChange) -> Result<bool, StoreError>;
    /// The organisation's active sessions (one query on its index partition, then one batch read).
    async fn list_active(&self, org_id: &str) -> Result<Vec<SessionRecord>, StoreError>;
    /// The organisation's most recently ended sessions, newest first.
    async fn list_ended(&self, org_id: &str, limit: i32) -> Result<Vec<SessionRecord>, StoreError>;
}

/// The partition listing an organisation's active sessions (sort key: session id).
fn active_partition(org_id: &str) -> String {
    format!("sessions#active#{org_id}")
}

/// The partition listing an organisation's ended sessions (sort key:
/// `<ended_at>#<session id>`, so the newest come first in reverse).
fn ended_partition(org_id: &str) -> String {
    format!("sessions#ended#{org_id}")
}

/// A session the sweep should look at: its entry in the watch ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionWatch {
    pub entry: String,
    pub room: String,
    /// The conversation the entry was written for (`None` for a seed-000
    /// room, which has one).
    pub conversation: Option<String>,
}

/// The partition of the calls table listing sessions to look at again,
/// sorted by when (`<epoch:012>#<room>`); each event that opens a session
/// adds one, so a session whose `room_finished` never comes is found.
const WATCH: Ledger = Ledger {
    partition: "sessions#watch",
    id_attribute: "watched_room",
};

/// Ended sessions whose `session.ended` webhook event the sweep publishes:
/// written in the transaction that ends the session, so an intake that ends
/// one makes no extra call, and no end is missed.
const ENDED_EVENTS: Ledger = Ledger {
    partition: "sessions#ended-events",
    id_attribute: "ended_room",
};

/// How long a session may stay open before the sweep ends it without
/// asking LiveKit (a sweep without LiveKit credentials, or a call reported
/// through `/calls/started`, whose end nothing reports).
pub const DEFAULT_SESSION_MAX: std::time::Duration = std::time::Duration::from_secs(6 * 3600);

/// When a newly seen session is first looked at by the sweep (and asked of
/// LiveKit): long enough for most calls to have ended and reported it.
pub const SESSION_FIRST_CHECK: std::time::Duration = std::time::Duration::from_secs(30 * 60);

pub struct DynamoSessionStore {
    client: Client,
    table: String,
    /// When a newly seen session is due for the sweep.
    watch_after: std::time::Duration,
}

impl DynamoSessionStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            watch_after: SESSION_FIRST_CHECK,
        }
    }

    /// Sessions it opens are due for the sweep `watch_after` later.
    pub fn with_watch_after(mut self, watch_after: std::time::Duration) -> Self {
        self.watch_after = watch_after;
        self
    }

    /// Puts the session in the watch ledger (idempotent enough: a session
    /// with several entries is looked at once per entry, cheaply).
    async fn watch(&self, room: &str) -> Result<(), StoreError> {
        let due = crate::base::time::epoch_secs()
            + i64::try_from(self.watch_after.as_secs()).unwrap_or(i64::MAX / 2);
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

fn key(partition: &str, item: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("call_id".to_string(), s(partition)),
        ("item".to_string(), s(item)),
    ])
}

/// The claim of `room`'s name for `org_id` as a transaction's update: the
/// same condition as [`SessionStore::claim_room`].
pub(crate) fn room_claim(
    table: &str,
    room: &str,
    org_id: &str,
) -> Result<aws_sdk_dynamodb::types::Update, StoreError> {
    aws_sdk_dynamodb::types::Update::builder()
        .table_name(table)
        .set_key(Some(key(room, OWNER_ITEM)))
        .update_expression(ROOM_CLAIM)
        .condition_expression(ROOM_CLAIM_CONDITION)
        .expression_attribute_values(":org", s(org_id))
        .build()
        .map_err(|e| StoreError::Dynamo(e.to_string()))
}

const ROOM_CLAIM: &str = "SET org_id = :org";
const ROOM_CLAIM_CONDITION: &str = "attribute_not_exists(org_id) OR org_id = :org";

impl DynamoSessionStore {
    /// The session if it is a typed (seed 002) one, owned by an organisation.
    async fn typed(&self, room: &str) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self.get(room).await?.filter(|r| r.org_id.is_some()))
    }

    async fn read_many(&self, mut rooms: Vec<String>) -> Result<Vec<SessionRecord>, StoreError> {
        // BatchGetItem refuses a request naming one key twice (a room
        // reopened and ended again has two ended entries).
        let mut seen = std::collections::HashSet::new();
        rooms.retain(|room| seen.insert(room.clone()));
        let keys = rooms.iter().map(|room| key(room, SESSION_ITEM)).collect();
        let records = super::batch_get(&self.client, &self.table, keys, true)
            .await?
            .into_iter()
            .map(|item| serde_dynamo::from_item(item).map_err(StoreError::from))
            .collect::<Result<Vec<SessionRecord>, StoreError>>()?;
        Ok(records)
    }

    /// One attempt to open (or, `reopening`, to reopen an ended session of
    /// the same organisation): record, active entry and watch entry in one
    /// transaction. True if the record's condition refused it.
    async fn open_once(&self, session: &NewSession, reopening: bool) -> Result<bool, StoreError> {
        use aws_sdk_dynamodb::types::{Put, TransactWriteItem, Update};
        let mut values: Vec<(&str, AttributeValue)> = vec![
            ("session_id", s(&session.session_id)),
            ("session_type", s(&session.session_type)),
            ("status", s(STATUS_ACTIVE)),
            ("agent_active", AttributeValue::Bool(session.agent_active)),
        ];
        let optional = [
            ("dispatch_id", &session.dispatch_id),
            ("call_sid", &session.call_sid),
            ("direction", &session.direction),
            ("from_number", &session.from_number),
            ("to_number", &session.to_number),
            ("host_identity", &session.host_identity),
        ];
        values.extend(
            optional
                .into_iter()
                .filter_map(|(name, value)| value.as_deref().map(|v| (name, s(v)))),
        );
        let mut names = HashMap::new();
        let mut attribute_values = HashMap::new();
        let mut sets = Vec::new();
        for (index, (name, value)) in values.into_iter().enumerate() {
            names.insert(format!("#f{index}"), name.to_string());
            attribute_values.insert(format!(":v{index}"), value);
            sets.push(format!("#f{index} = :v{index}"));
        }
        attribute_values.insert(":started".into(), s(&session.started_at));
        attribute_values.insert(":org".into(), s(&session.org_id));
        attribute_values.insert(
            ":log_at".into(),
            s(&super::call_log::log_at(&session.started_at, &session.room)),
        );
        attribute_values.insert(":conv".into(), s(&session.conversation));
        let mut removed = Vec::new();
        if let Some(sid) = &session.room_sid {
            attribute_values.insert(":sid".into(), s(sid));
        }
        let (expression, condition) = if reopening {
            // A new conversation in the same room: nothing of the last one stays.
            sets.push("started_at = :started".into());
            sets.push("conversation = :conv".into());
            // The log lists the room's latest conversation, at its start.
            sets.push("log_org = :org".into());
            sets.push("log_at = :log_at".into());
            match &session.room_sid {
                Some(_) => sets.push("room_sid = :sid".into()),
                None => removed.push("room_sid"),
            }
            removed.extend([
                "ended_at",
                "end_reason",
                "end_code",
                "reconciled",
                "reconcile_attempts",
                "duration_secs",
                "recording",
                "egress_id",
                "recording_location",
                "participants",
                "call_status",
                "call_status_rank",
                "invite_key",
            ]);
            (
                format!("SET {} REMOVE {}", sets.join(", "), removed.join(", ")),
                "attribute_exists(ended_at) AND org_id = :org",
            )
        } else {
            // The first opener's start time, owner and conversation stay.
            sets.push("started_at = if_not_exists(started_at, :started)".into());
            sets.push("org_id = if_not_exists(org_id, :org)".into());
            sets.push("conversation = if_not_exists(conversation, :conv)".into());
            sets.push("log_org = if_not_exists(log_org, :org)".into());
            sets.push("log_at = if_not_exists(log_at, :log_at)".into());
            if session.room_sid.is_some() {
                sets.push("room_sid = if_not_exists(room_sid, :sid)".into());
            }
            (
                format!("SET {}", sets.join(", ")),
                "attribute_not_exists(ended_at) AND (attribute_not_exists(org_id) OR org_id = :org)",
            )
        };
        let record = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(&session.room, SESSION_ITEM)))
            .update_expression(expression)
            .condition_expression(condition)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(attribute_values))
            .build()
            .map_err(|e| StoreError::Dynamo(e.to_string()))?;
        let mut listed = key(&active_partition(&session.org_id), &session.session_id);
        listed.insert("room_name".into(), s(&session.room));
        listed.insert("session_type".into(), s(&session.session_type));
        let listed = Put::builder()
            .table_name(&self.table)
            .set_item(Some(listed))
            .build()
            .map_err(|e| StoreError::Dynamo(e.to_string()))?;
        let due = crate::base::time::epoch_secs()
            + i64::try_from(self.watch_after.as_secs()).unwrap_or(i64::MAX / 2);
        let mut watch = WATCH.item(&session.room, due);
        watch.insert(
            super::ledger::DETAIL_ATTRIBUTE.into(),
            s(&session.conversation),
        );
        let watched = Put::builder()
            .table_name(&self.table)
            .set_item(Some(watch))
            .build()
            .map_err(|e| StoreError::Dynamo(e.to_string()))?;
        let items = vec![
            TransactWriteItem::builder().update(record).build(),
            TransactWriteItem::builder().put(listed).build(),
            TransactWriteItem::builder().put(watched).build(),
        ];
        super::transactions::transact(&self.client, items, "open session", false, |reasons| {
            if reasons.first().and_then(|r| r.code()) == Some("ConditionalCheckFailed") {
                super::transactions::Verdict::Done(true)
            } else if super::transactions::busy(reasons) {
                super::transactions::Verdict::Retry(super::transactions::codes(reasons))
            } else {
                super::transactions::Verdict::Fail(super::transactions::codes(reasons))
            }
        })
        .await
    }

    /// Sort keys (and their rooms) of one index partition.
    async fn index(
        &self,
        partition: &str,
        newest_first: bool,
        limit: Option<i32>,
    ) -> Result<Vec<String>, StoreError> {
        let mut rooms = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("call_id = :p")
                .expression_attribute_values(":p", s(partition))
                .scan_index_forward(!newest_first)
                .set_limit(limit)
                .set_exclusive_start_key(start)
                .consistent_read(true)
                .send()
                .await?;
            rooms.extend(
                out.items()
                    .iter()
                    .filter_map(|item| match item.get("room_name") {
                        Some(AttributeValue::S(room)) => Some(room.clone()),
                        _ => None,
                    }),
            );
            start = out.last_evaluated_key;
            let full = limit.is_some_and(|l| rooms.len() >= usize::try_from(l).unwrap_or(0));
            if start.is_none() || full {
                return Ok(rooms);
            }
        }
    }
}

#[async_trait]
impl SessionStore for DynamoSessionStore {
    async fn room_started(
        &self,
        room: &str,
        room_sid: Option<&str>,
        started_at: &str,
    ) -> Result<(), StoreError> {
        // The first start and sid stay: a late `room_started` of a room
        // since closed must not rename the conversation now in it.
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(room, SESSION_ITEM)))
            .expression_attribute_values(":s", s(started_at));
        let mut sets = vec!["started_at = if_not_exists(started_at, :s)"];
        if let Some(sid) = room_sid {
            update = update.expression_attribute_values(":sid", s(sid));
            sets.push("room_sid = if_not_exists(room_sid, :sid)");
        }
        let recording = async {
            update
                .update_expression(format!("SET {}", sets.join(", ")))
                .send()
                .await
                .map(drop)
                .map_err(StoreError::from)
        };
        // Independent writes: side by side, so watching costs no round trip.
        let (recorded, watched) = tokio::join!(recording, self.watch(room));
        recorded?;
        watched
    }

    async fn room_finished(
        &self,
        room: &str,
        ended_at: &str,
        duration_secs: Option<u64>,
        room_sid: Option<&str>,
    ) -> Result<(), StoreError> {
        let ending = Ending {
            ended_at: ended_at.to_string(),
            duration_secs,
            room_sid: room_sid.map(str::to_string),
            ..Ending::default()
        };
        if self.typed(room).await?.is_some() {
            return self.end(room, &ending).await.map(drop);
        }
        let mut values = vec![
            ("ended_at", s(ended_at)),
            (
                "end_code",
                s(crate::base::end_reason::EndReason::Completed.as_str()),
            ),
        ];
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
                conversation: due.detail,
            })
            .collect())
    }

    async fn drop_watch(&self, watch: &SessionWatch) -> Result<(), StoreError> {
        WATCH.remove(&self.client, &self.table, &watch.entry).await
    }

    async fn ended_unannounced(&self, limit: i32) -> Result<Vec<SessionWatch>, StoreError> {
        Ok(ENDED_EVENTS
            .due(&self.client, &self.table, 999_999_999_999, limit)
            .await?
            .into_iter()
            .map(|due| SessionWatch {
                entry: due.entry,
                room: due.id,
                conversation: None,
            })
            .collect())
    }

    async fn mark_announced(&self, ended: &SessionWatch) -> Result<(), StoreError> {
        ENDED_EVENTS
            .remove(&self.client, &self.table, &ended.entry)
            .await
    }

    async fn reschedule_watch(
        &self,
        watch: &SessionWatch,
        to: i64,
        attempts: u32,
    ) -> Result<(), StoreError> {
        // The new entry first: a crash in between leaves two entries, whose
        // second ask finds the same answer, never none.
        let mut entry = WATCH.item(&watch.room, to);
        if let Some(conversation) = &watch.conversation {
            entry.insert(super::ledger::DETAIL_ATTRIBUTE.into(), s(conversation));
        }
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(entry))
            .send()
            .await?;
        self.set(
            &watch.room,
            &[(
                "reconcile_attempts",
                AttributeValue::N(attempts.to_string()),
            )],
            Some("attribute_exists(call_id)"),
        )
        .await?;
        WATCH.remove(&self.client, &self.table, &watch.entry).await
    }

    async fn mark_reconciled(&self, room: &str) -> Result<(), StoreError> {
        self.set(
            room,
            &[("reconciled", AttributeValue::Bool(true))],
            Some("attribute_exists(call_id)"),
        )
        .await
        .map(drop)
    }

    async fn end_stale(
        &self,
        room: &str,
        ended_at: &str,
        reason: &str,
        conversation: Option<&str>,
    ) -> Result<bool, StoreError> {
        if self.typed(room).await?.is_some() {
            let ending = Ending {
                ended_at: ended_at.to_string(),
                reason: Some(reason.to_string()),
                conversation: conversation.map(str::to_string),
                ..Ending::default()
            };
            return Ok(self.end(room, &ending).await?.is_some());
        }
        let code = crate::base::end_reason::EndReason::from_session_end(Some(reason));
        self.set(
            room,
            &[
                ("ended_at", s(ended_at)),
                ("end_reason", s(reason)),
                ("end_code", s(code.as_str())),
            ],
            Some("attribute_exists(call_id) AND attribute_not_exists(ended_at)"),
        )
        .await
    }

    async fn claim_room(&self, room: &str, org_id: &str) -> Result<bool, StoreError> {
        super::applied(
            self.client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key(room, OWNER_ITEM)))
                .update_expression(ROOM_CLAIM)
                .condition_expression(ROOM_CLAIM_CONDITION)
                .expression_attribute_values(":org", s(org_id))
                .send()
                .await,
        )
    }

    async fn mark_reported(&self, room: &str, org_id: &str) -> Result<(), StoreError> {
        // A typed session (ours) is ended by its own enders: leave it be.
        self.set(
            room,
            &[("reported_by", s(org_id))],
            Some("attribute_not_exists(session_id)"),
        )
        .await
        .map(drop)
    }

    async fn claim_switch(
        &self,
        room: &str,
        switch: Switch,
        owner: &str,
        now: i64,
        until: i64,
    ) -> Result<bool, StoreError> {
        let (until_attribute, owner_attribute) = switch.lease_attributes();
        super::applied(
            self.client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key(room, SESSION_ITEM)))
                .update_expression("SET #until = :until, #owner = :owner")
                .condition_expression(
                    "attribute_exists(call_id) AND attribute_not_exists(ended_at) \
                     AND (attribute_not_exists(#until) OR #until < :now)",
                )
                .expression_attribute_names("#until", until_attribute)
                .expression_attribute_names("#owner", owner_attribute)
                .expression_attribute_values(":until", AttributeValue::N(until.to_string()))
                .expression_attribute_values(":now", AttributeValue::N(now.to_string()))
                .expression_attribute_values(":owner", s(owner))
                .send()
                .await,
        )
    }

    async fn finish_switch(
        &self,
        room: &str,
        switch: Switch,
        owner: &str,
        result: Option<&SwitchResult>,
    ) -> Result<bool, StoreError> {
        let (until_attribute, owner_attribute) = switch.lease_attributes();
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(room, SESSION_ITEM)))
            .condition_expression("#owner = :owner")
            .expression_attribute_names("#until", until_attribute)
            .expression_attribute_names("#owner", owner_attribute)
            .expression_attribute_values(":owner", s(owner));
        let mut sets: Vec<&str> = Vec::new();
        let mut removed = vec!["#until", "#owner"];
        match result {
            None => {}
            Some(SwitchResult::Agent {
                active,
                dispatch_id,
            }) => {
                update = update.expression_attribute_values(":a", AttributeValue::Bool(*active));
                sets.push("agent_active = :a");
                match dispatch_id {
                    Some(id) => {
                        update = update.expression_attribute_values(":d", s(id));
                        sets.push("dispatch_id = :d");
                    }
                    None => removed.push("dispatch_id"),
                }
            }
            Some(SwitchResult::Recording {
                active,
                egress_id,
                location,
            }) => {
                update = update.expression_attribute_values(":r", AttributeValue::Bool(*active));
                sets.push("recording = :r");
                // The last egress id stays until another replaces it: a
                // stop still knows what to stop, and the record what ran.
                if let Some(id) = egress_id {
                    update = update.expression_attribute_values(":e", s(id));
                    sets.push("egress_id = :e");
                }
                if let Some(location) = location {
                    update = update.expression_attribute_values(":l", s(location));
                    sets.push("recording_location = :l");
                }
            }
        }
        let mut expression = String::new();
        if !sets.is_empty() {
            expression = format!("SET {} ", sets.join(", "));
        }
        expression.push_str(&format!("REMOVE {}", removed.join(", ")));
        super::applied(update.update_expression(expression).send().await)
    }

    async fn open(&self, session: &NewSession) -> Result<Opened, StoreError> {
        if !self.open_once(session, false).await? {
            return Ok(Opened::Active);
        }
        Ok(match self.get(&session.room).await? {
            Some(existing) if existing.ended() => {
                let ours = existing.org_id.as_deref() == Some(session.org_id.as_str());
                if session.reopen && ours && !self.open_once(session, true).await? {
                    Opened::Reopened
                } else {
                    Opened::AlreadyEnded
                }
            }
            _ => Opened::OwnedElsewhere,
        })
    }

    async fn end(&self, room: &str, ending: &Ending) -> Result<Option<SessionRecord>, StoreError> {
        use aws_sdk_dynamodb::types::{Delete, Put, TransactWriteItem, Update};
        let Some(record) = self.get(room).await? else {
            return Ok(None);
        };
        if record.ended() || !ending.is_for(&record) {
            return Ok(None);
        }
        let (Some(org_id), Some(session_id)) = (&record.org_id, &record.session_id) else {
            // A seed-000 session: no index entries to move.
            let applied = self
                .set(
                    room,
                    &[
                        ("ended_at", s(&ending.ended_at)),
                        ("end_code", s(ending.code().as_str())),
                    ],
                    Some("attribute_exists(call_id) AND attribute_not_exists(ended_at)"),
                )
                .await?;
            return Ok(applied.then_some(record));
        };
        let mut values = HashMap::from([
            (":ended".to_string(), s(STATUS_ENDED)),
            (":at".to_string(), s(&ending.ended_at)),
        ]);
        let mut sets = vec!["#status = :ended", "ended_at = :at"];
        if let Some(duration) = ending.duration_secs {
            values.insert(":d".into(), AttributeValue::N(duration.to_string()));
            sets.push("duration_secs = :d");
        }
        if let Some(reason) = &ending.reason {
            values.insert(":r".into(), s(reason));
            sets.push("end_reason = :r");
        }
        values.insert(":code".into(), s(ending.code().as_str()));
        sets.push("end_code = :code");
        let mut condition = String::from("attribute_not_exists(ended_at)");
        if let Some(conversation) = &ending.conversation {
            values.insert(":conv".into(), s(conversation));
            condition.push_str(" AND conversation = :conv");
        }
        if let Some(sid) = &ending.room_sid {
            values.insert(":sid".into(), s(sid));
            condition.push_str(" AND (attribute_not_exists(room_sid) OR room_sid = :sid)");
        }
        let ended = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(room, SESSION_ITEM)))
            .update_expression(format!("SET {}", sets.join(", ")))
            .condition_expression(condition)
            .expression_attribute_names("#status", "status")
            .set_expression_attribute_values(Some(values))
            .build()
            .map_err(|e| StoreError::Dynamo(e.to_string()))?;
        let unlisted = Delete::builder()
            .table_name(&self.table)
            .set_key(Some(key(&active_partition(org_id), session_id)))
            .build()
            .map_err(|e| StoreError::Dynamo(e.to_string()))?;
        let mut history = key(
            &ended_partition(org_id),
            &format!("{}#{session_id}", ending.ended_at),
        );
        history.insert("room_name".into(), s(room));
        history.insert(
            "expires_at".into(),
            AttributeValue::N((crate::base::time::epoch_secs() + ENDED_RETENTION_SECS).to_string()),
        );
        let history = Put::builder()
            .table_name(&self.table)
            .set_item(Some(history))
            .build()
            .map_err(|e| StoreError::Dynamo(e.to_string()))?;
        let announce = Put::builder()
            .table_name(&self.table)
            .set_item(Some(
                ENDED_EVENTS.item(room, crate::base::time::epoch_secs()),
            ))
            .build()
            .map_err(|e| StoreError::Dynamo(e.to_string()))?;
        let items = vec![
            TransactWriteItem::builder().update(ended).build(),
            TransactWriteItem::builder().delete(unlisted).build(),
            TransactWriteItem::builder().put(history).build(),
            TransactWriteItem::builder().put(announce).build(),
        ];
        let ended_here =
            super::transactions::transact(&self.client, items, "end session", true, |reasons| {
                if reasons.first().and_then(|r| r.code()) == Some("ConditionalCheckFailed") {
                    // Another ender won: it moved the index entries.
                    super::transactions::Verdict::Done(false)
                } else if super::transactions::busy(reasons) {
                    super::transactions::Verdict::Retry(super::transactions::codes(reasons))
                } else {
                    super::transactions::Verdict::Fail(super::transactions::codes(reasons))
                }
            })
            .await?;
        Ok(ended_here.then_some(record))
    }

    async fn update(&self, room: &str, change: &SessionChange) -> Result<bool, StoreError> {
        const OPEN: &str = "attribute_exists(call_id) AND attribute_not_exists(ended_at)";
        let open = Some(OPEN);
        match change {
            SessionChange::CallStatus(status) => {
                // Callbacks arrive out of order: `ringing` after
                // `in-progress` must change nothing.
                let rank = AttributeValue::N(call_status_rank(status).to_string());
                super::applied(
                    self.client
                        .update_item()
                        .table_name(&self.table)
                        .set_key(Some(key(room, SESSION_ITEM)))
                        .update_expression("SET call_status = :s, call_status_rank = :r")
                        .condition_expression(format!(
                            "{OPEN} AND (attribute_not_exists(call_status_rank) OR call_status_rank < :r)"
                        ))
                        .expression_attribute_values(":s", s(status))
                        .expression_attribute_values(":r", rank)
                        .send()
                        .await,
                )
            }
            SessionChange::Agent {
                active,
                dispatch_id,
            } => {
                let mut values = vec![("agent_active", AttributeValue::Bool(*active))];
                if let Some(id) = dispatch_id {
                    values.push(("dispatch_id", s(id)));
                }
                self.set(room, &values, open).await
            }
            SessionChange::Recording {
                active,
                egress_id,
                location,
            } => {
                let mut values = vec![
                    ("recording", AttributeValue::Bool(*active)),
                    ("egress_id", s(egress_id)),
                ];
                if let Some(location) = location {
                    values.push(("recording_location", s(location)));
                }
                self.set(room, &values, open).await
            }
            SessionChange::Participant(identity) => super::applied(
                self.client
                    .update_item()
                    .table_name(&self.table)
                    .set_key(Some(key(room, SESSION_ITEM)))
                    .update_expression("ADD participants :p")
                    .condition_expression(OPEN)
                    .expression_attribute_values(":p", AttributeValue::Ss(vec![identity.clone()]))
                    .send()
                    .await,
            ),
            SessionChange::InviteKey(invite_key) => {
                let first = format!("{OPEN} AND attribute_not_exists(invite_key)");
                self.set(room, &[("invite_key", s(invite_key))], Some(&first))
                    .await
            }
            SessionChange::RevokeInvites(invite_key) => {
                self.set(room, &[("invite_key", s(invite_key))], open).await
            }
        }
    }

    async fn list_active(&self, org_id: &str) -> Result<Vec<SessionRecord>, StoreError> {
        let rooms = self.index(&active_partition(org_id), false, None).await?;
        let mut records = self.read_many(rooms).await?;
        // An entry and its record change in one transaction; this only
        // guards against reading between two of them.
        records.retain(|r| !r.ended() && r.org_id.as_deref() == Some(org_id));
        records.sort_by(|a, b| a.session_id.cmp(&b.session_id));
        Ok(records)
    }

    async fn list_ended(&self, org_id: &str, limit: i32) -> Result<Vec<SessionRecord>, StoreError> {
        let rooms = self
            .index(&ended_partition(org_id), true, Some(limit))
            .await?;
        let mut records = self.read_many(rooms).await?;
        // A reopened room's record is its new, active conversation.
        records.retain(|r| r.ended() && r.org_id.as_deref() == Some(org_id));
        records.sort_by(|a, b| b.ended_at.cmp(&a.ended_at));
        Ok(records)
    }
}
