//! WhatsApp conversations (`WHATSAPP_TABLE`): one partition per
//! conversation, `conversation = {org}#{waId}`, holding
//!
//! - messages, `item = msg#{RFC 3339 millis}#{MessageSid}`: sorted oldest
//!   first, so a Query is the conversation in order;
//! - reply records, `item = reply#{inbound MessageSid}`: the reply worker's
//!   durable memory of one answer (its text before it is sent, then the sent
//!   message's sid);
//!
//! plus one pointer partition per message, `(sid#{MessageSid}, "pointer")`,
//! naming the message's conversation and item, so a status callback (which
//! carries only the sid) finds its message with one GetItem. A message and its
//! pointer are written in one transaction conditioned on the pointer being
//! new: the pointer is what makes "record this message" idempotent. Every item
//! carries `expires_at` (epoch seconds; the table's TTL attribute).
//!
//! A status callback can beat the reply worker's record of the sid (Twilio
//! posts `sent` while our `finish_send` is in flight): it is kept as
//! `(sid#{MessageSid}, "early")` for a day and applied when the message is
//! recorded. Incoming messages also get an entry in the `replies#watch`
//! partition (sort key `<due:012>#<sid>`, the ledger format), written with the
//! message, so the stuck sweep re-queues a reply whose job never got queued.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{
    AttributeValue, CancellationReason, Put, ReturnValue, TransactWriteItem, Update,
};
use aws_sdk_dynamodb::Client;

use super::transactions::{busy, codes, transact, Verdict};
use super::{applied, s, StoreError};

/// Twilio's message statuses in the order a message moves through them.
/// `failed`, `undelivered` and `canceled` are final: nothing moves past them.
/// Unknown statuses rank `None` and are ignored.
pub fn status_rank(status: &str) -> Option<u32> {
    Some(match status {
        "accepted" | "scheduled" | "queued" => 1,
        "sending" => 2,
        "sent" => 3,
        "delivered" => 4,
        "read" => 5,
        "failed" | "undelivered" | "canceled" => 6,
        // Inbound messages are stored as received.
        "receiving" | "received" => 1,
        _ => return None,
    })
}

/// Direction of a stored message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
        }
    }
}

/// The conversation key of an organisation's chat with `wa_id` (digits).
pub fn conversation_key(org_id: &str, wa_id: &str) -> String {
    format!("{org_id}#{wa_id}")
}

/// One message as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredMessage {
    pub conversation: String,
    pub sid: String,
    pub direction: Direction,
    pub body: String,
    pub status: String,
    pub error_code: Option<String>,
    pub num_media: u32,
    pub profile_name: Option<String>,
    /// Set on template sends.
    pub content_sid: Option<String>,
    /// RFC 3339 with milliseconds (the sort key's timestamp).
    pub created_at: String,
    pub updated_at: String,
}

impl StoredMessage {
    /// A message created now.
    pub fn new(
        conversation: impl Into<String>,
        sid: impl Into<String>,
        direction: Direction,
        body: impl Into<String>,
        status: impl Into<String>,
    ) -> Self {
        let now = now_millis();
        Self {
            conversation: conversation.into(),
            sid: sid.into(),
            direction,
            body: body.into(),
            status: status.into(),
            error_code: None,
            num_media: 0,
            profile_name: None,
            content_sid: None,
            created_at: now.clone(),
            updated_at: now,
        }
    }

    fn item_key(&self) -> String {
        format!("msg#{}#{}", self.created_at, self.sid)
    }
}

/// What the reply worker stored for one inbound message.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReplyRecord {
    /// The text to send, stored before the first send.
    pub text: Option<String>,
    /// The sent message's sid once Twilio accepted it.
    pub reply_sid: Option<String>,
    /// Twilio's status when it accepted the reply, or `failed`/`none`.
    pub state: Option<String>,
    /// Send attempts begun (a value above 1 means a send's outcome was unknown).
    pub attempts: u32,
    /// Parts of a long reply already accepted by Twilio, in order.
    pub sent_parts: u32,
}

/// What it takes to queue an incoming message's reply again.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingReply {
    pub message_sid: String,
    pub conversation: String,
    /// `whatsapp:+E164` of the sender.
    pub reply_to: String,
    /// `whatsapp:+E164` of our number it was sent to, when known.
    pub reply_from: Option<String>,
    pub body: String,
    pub num_media: u32,
}

/// A `replies#watch` entry that is due.
#[derive(Debug, Clone, PartialEq)]
pub struct DueReply {
    pub entry: String,
    pub pending: PendingReply,
    /// Times the sweep re-queued it already.
    pub redrives: u32,
}

/// The partition of the replies' watch entries; an INSERT here with
/// `redrives = 0` is a new incoming message (template.yaml's filter).
pub const WATCH_PARTITION: &str = "replies#watch";

/// Messages we sent whose status has not reached its end yet, sorted by
/// when to look again (`<epoch:012>#<sid>`): a lost status callback is
/// found and the status asked of Twilio (`flows::whatsapp::StatusCheck`).
const STATUS_WATCH_PARTITION: &str = "statuses#watch";

/// How long after a send its status is first looked at.
pub const STATUS_FIRST_CHECK_SECS: i64 = 10 * 60;

/// A `statuses#watch` entry that is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueStatusCheck {
    pub entry: String,
    pub sid: String,
    /// When the message was sent (epoch seconds).
    pub sent_at: i64,
    /// Asks of Twilio in a row that got no answer.
    pub attempts: u32,
}

/// What a status callback did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusApplied {
    /// The message moved to the new status.
    Applied,
    /// The message is already at this or a later (or final) status.
    Stale,
    /// No message with that sid is stored (not ours, or expired).
    Unknown,
    /// No message with that sid is stored yet: kept, and applied when it is.
    Kept,
    /// A status this code does not rank; nothing changed.
    Ignored,
}

#[async_trait]
pub trait WhatsAppStore: Send + Sync {
    /// Stores `message` and its pointer, once: `false` if its sid was recorded before.
    async fn record_message(&self, message: &StoredMessage) -> Result<bool, StoreError>;
    /// An incoming message, its pointer and its reply's watch entry (due at
    /// `due`, epoch seconds), once: `false` if its sid was recorded before.
    async fn record_inbound(
        &self,
        message: &StoredMessage,
        pending: &PendingReply,
        due: i64,
    ) -> Result<bool, StoreError>;
    /// Watch entries due at `now`, oldest first.
    async fn due_replies(&self, now: i64, limit: i32) -> Result<Vec<DueReply>, StoreError>;
    /// Moves a due entry to `at`, counting one more re-drive.
    async fn reschedule_reply(&self, due: &DueReply, at: i64) -> Result<(), StoreError>;
    async fn drop_reply_watch(&self, due: &DueReply) -> Result<(), StoreError>;
    /// The conversation's messages, oldest first (at most `limit`, the newest ones).
    async fn messages(
        &self,
        conversation: &str,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError>;
    /// The conversation (`{org}#{waId}`) of the message `sid`, from its
    /// pointer; `None` when it is not recorded (yet).
    async fn conversation_of(&self, sid: &str) -> Result<Option<String>, StoreError>;
    /// Sent messages whose status is due for a look at `now`, oldest first.
    async fn due_status_checks(
        &self,
        now: i64,
        limit: i32,
    ) -> Result<Vec<DueStatusCheck>, StoreError>;
    /// Moves a due entry to `at` with its unanswered asks so far.
    async fn reschedule_status_check(
        &self,
        due: &DueStatusCheck,
        at: i64,
        attempts: u32,
    ) -> Result<(), StoreError>;
    async fn drop_status_check(&self, due: &DueStatusCheck) -> Result<(), StoreError>;
    /// The stored status of the message `sid`, and its conversation.
    async fn message_status(&self, sid: &str) -> Result<Option<(String, String)>, StoreError>;
    /// Moves a message's status forward, in rank order, with its error code.
    async fn apply_status(
        &self,
        sid: &str,
        status: &str,
        error_code: Option<&str>,
    ) -> Result<StatusApplied, StoreError>;
    /// The reply record of `inbound_sid` (consistent read).
    async fn reply(
        &self,
        conversation: &str,
        inbound_sid: &str,
    ) -> Result<Option<ReplyRecord>, StoreError>;
    /// Before a send: stores `text` unless a text is stored already, and
    /// counts the attempt. Returns the record as it is now: its `text` is
    /// the one to send; a `reply_sid` means the reply went out already.
    async fn begin_send(
        &self,
        conversation: &str,
        inbound_sid: &str,
        text: &str,
    ) -> Result<ReplyRecord, StoreError>;
    /// After Twilio accepted part `part` (of `parts`) of the reply: the part
    /// as a message of the conversation and `sent_parts` on the reply
    /// record, plus, for the last part, its sid and status, in one
    /// transaction.
    async fn finish_send(
        &self,
        inbound_sid: &str,
        part: u32,
        parts: u32,
        reply: &StoredMessage,
    ) -> Result<(), StoreError>;
    /// A reply that will not be sent (`none`: nothing to say; `failed`:
    /// Twilio refused it for good), so redeliveries stop.
    async fn settle_unsent(
        &self,
        conversation: &str,
        inbound_sid: &str,
        state: &str,
        reason: Option<&str>,
    ) -> Result<(), StoreError>;
}

pub struct DynamoWhatsAppStore {
    pub client: Client,
    pub table: String,
    /// How long messages are kept (`WHATSAPP_RETENTION_DAYS`, default 30).
    pub retention: Duration,
}

const MAX_PAGES: usize = 20;

/// How long a status that beat its message's record is kept.
const EARLY_STATUS_SECS: i64 = 86_400;

fn now_millis() -> String {
    crate::base::time::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn pointer_key(sid: &str) -> String {
    format!("sid#{sid}")
}

fn reply_key(inbound_sid: &str) -> String {
    format!("reply#{inbound_sid}")
}

fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn text(item: &HashMap<String, AttributeValue>, name: &str) -> Option<String> {
    item.get(name).and_then(|v| v.as_s().ok()).cloned()
}

fn number(item: &HashMap<String, AttributeValue>, name: &str) -> Option<u64> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

fn message_of(item: &HashMap<String, AttributeValue>) -> Result<StoredMessage, StoreError> {
    let field = |name: &str| {
        text(item, name).ok_or_else(|| StoreError::Malformed(format!("whatsapp message: {name}")))
    };
    let direction = match field("direction")?.as_str() {
        "inbound" => Direction::Inbound,
        "outbound" => Direction::Outbound,
        other => {
            return Err(StoreError::Malformed(format!(
                "whatsapp message direction {other}"
            )))
        }
    };
    Ok(StoredMessage {
        conversation: field("conversation")?,
        sid: field("sid")?,
        direction,
        body: text(item, "body").unwrap_or_default(),
        status: field("status")?,
        error_code: text(item, "error_code"),
        num_media: number(item, "num_media").unwrap_or(0) as u32,
        profile_name: text(item, "profile_name"),
        content_sid: text(item, "content_sid"),
        created_at: field("created_at")?,
        updated_at: text(item, "updated_at").unwrap_or_default(),
    })
}

fn reply_of(item: &HashMap<String, AttributeValue>) -> ReplyRecord {
    ReplyRecord {
        text: text(item, "text"),
        reply_sid: text(item, "reply_sid"),
        state: text(item, "state"),
        attempts: number(item, "attempts").unwrap_or(0) as u32,
        sent_parts: number(item, "sent_parts").unwrap_or(0) as u32,
    }
}

fn due_reply_of(item: &HashMap<String, AttributeValue>) -> Option<DueReply> {
    Some(DueReply {
        entry: text(item, "item")?,
        pending: PendingReply {
            message_sid: text(item, "sid")?,
            conversation: text(item, "target_conversation")?,
            reply_to: text(item, "reply_to")?,
            reply_from: text(item, "reply_from"),
            body: text(item, "body").unwrap_or_default(),
            num_media: number(item, "num_media").unwrap_or(0) as u32,
        },
        redrives: number(item, "redrives").unwrap_or(0) as u32,
    })
}

/// A reply's watch entry as the table's stream shows it: `None` for any
/// other item (messages, pointers, status checks).
pub fn reply_watch_of(item: &HashMap<String, AttributeValue>) -> Option<DueReply> {
    (text(item, "conversation").as_deref() == Some(WATCH_PARTITION))
        .then(|| due_reply_of(item))
        .flatten()
}

/// The pointer's condition failed: the message was recorded before.
fn already_recorded(reasons: &[CancellationReason]) -> Verdict<bool> {
    if busy(reasons) {
        return Verdict::Retry(codes(reasons));
    }
    match reasons.first().and_then(|r| r.code()) {
        Some("ConditionalCheckFailed") => Verdict::Done(false),
        _ => Verdict::Fail(codes(reasons)),
    }
}

impl DynamoWhatsAppStore {
    fn expires_at(&self) -> i64 {
        crate::base::time::epoch_secs() + self.retention.as_secs() as i64
    }

    fn watch_item(&self, due: &DueReply, at: i64) -> HashMap<String, AttributeValue> {
        let p = &due.pending;
        let mut item = HashMap::from([
            ("conversation".to_string(), s(WATCH_PARTITION)),
            (
                "item".to_string(),
                s(&super::ledger::entry(&p.message_sid, at)),
            ),
            ("sid".to_string(), s(&p.message_sid)),
            ("target_conversation".to_string(), s(&p.conversation)),
            ("reply_to".to_string(), s(&p.reply_to)),
            ("num_media".to_string(), n(p.num_media)),
            ("redrives".to_string(), n(due.redrives)),
            ("expires_at".to_string(), n(self.expires_at())),
        ]);
        if !p.body.is_empty() {
            item.insert("body".to_string(), s(&p.body));
        }
        if let Some(from) = &p.reply_from {
            item.insert("reply_from".to_string(), s(from));
        }
        item
    }

    /// A status kept before its message was recorded, applied now that it is.
    async fn apply_early(&self, sid: &str) -> Result<(), StoreError> {
        let early = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("conversation", s(&pointer_key(sid)))
            .key("item", s("early"))
            .consistent_read(true)
            .send()
            .await?;
        if let Some(item) = early.item {
            if let (Some(status), Some(rank)) = (
                text(&item, "status"),
                number(&item, "status_rank").map(|r| r as u32),
            ) {
                let code = text(&item, "error_code");
                self.apply_to_pointer(sid, &status, rank, code.as_deref())
                    .await?;
            }
        }
        Ok(())
    }

    /// Keeps a status whose message is not recorded (yet); a higher rank wins.
    async fn keep_early(
        &self,
        sid: &str,
        status: &str,
        rank: u32,
        error_code: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("conversation", s(&pointer_key(sid)))
            .item("item", s("early"))
            .item("status", s(status))
            .item("status_rank", n(rank))
            .item(
                "expires_at",
                n(crate::base::time::epoch_secs() + EARLY_STATUS_SECS),
            )
            .condition_expression("attribute_not_exists(#pk) OR #rank < :rank")
            .expression_attribute_names("#pk", "conversation")
            .expression_attribute_names("#rank", "status_rank")
            .expression_attribute_values(":rank", n(rank));
        if let Some(code) = error_code.filter(|c| !c.is_empty()) {
            put = put.item("error_code", s(code));
        }
        applied(put.send().await).map(|_| ())
    }

    /// Moves the message the pointer names; `None` without a pointer.
    /// The key (conversation, item) of the message `sid`, from its pointer.
    async fn message_key(&self, sid: &str) -> Result<Option<(String, String)>, StoreError> {
        let pointer = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("conversation", s(&pointer_key(sid)))
            .key("item", s("pointer"))
            .consistent_read(true)
            .send()
            .await?;
        let Some(pointer) = pointer.item else {
            return Ok(None);
        };
        match (
            text(&pointer, "target_conversation"),
            text(&pointer, "target_item"),
        ) {
            (Some(conversation), Some(item)) => Ok(Some((conversation, item))),
            _ => Err(StoreError::Malformed(format!("whatsapp pointer of {sid}"))),
        }
    }

    async fn apply_to_pointer(
        &self,
        sid: &str,
        status: &str,
        rank: u32,
        error_code: Option<&str>,
    ) -> Result<Option<StatusApplied>, StoreError> {
        let Some((conversation, item)) = self.message_key(sid).await? else {
            return Ok(None);
        };
        // One conditional write: only a higher rank moves the status, so
        // callbacks arriving out of order cannot move it back, and a final
        // status (the highest rank) is never left.
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("conversation", s(&conversation))
            .key("item", s(&item))
            .condition_expression("attribute_exists(#pk) AND #rank < :rank")
            .expression_attribute_names("#pk", "conversation")
            .expression_attribute_names("#rank", "status_rank")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#updated", "updated_at")
            .expression_attribute_values(":rank", n(rank))
            .expression_attribute_values(":status", s(status))
            .expression_attribute_values(":now", s(&now_millis()));
        let mut sets = "#status = :status, #rank = :rank, #updated = :now".to_string();
        if let Some(code) = error_code.filter(|c| !c.is_empty()) {
            sets.push_str(", #error = :error");
            update = update
                .expression_attribute_names("#error", "error_code")
                .expression_attribute_values(":error", s(code));
        }
        let result = update.update_expression(format!("SET {sets}")).send().await;
        Ok(Some(if applied(result)? {
            StatusApplied::Applied
        } else {
            StatusApplied::Stale
        }))
    }

    /// The pointer (conditioned on being new) and the message, as transaction items.
    fn message_puts(&self, message: &StoredMessage) -> Result<Vec<TransactWriteItem>, StoreError> {
        let item_key = message.item_key();
        let expires = n(self.expires_at());
        let pointer = Put::builder()
            .table_name(&self.table)
            .item("conversation", s(&pointer_key(&message.sid)))
            .item("item", s("pointer"))
            .item("target_conversation", s(&message.conversation))
            .item("target_item", s(&item_key))
            .item("expires_at", expires.clone())
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", "conversation")
            .build()
            .map_err(|e| StoreError::Dynamo(e.to_string()))?;
        let mut put = Put::builder()
            .table_name(&self.table)
            .item("conversation", s(&message.conversation))
            .item("item", s(&item_key))
            .item("sid", s(&message.sid))
            .item("direction", s(message.direction.as_str()))
            .item("status", s(&message.status))
            .item("status_rank", n(status_rank(&message.status).unwrap_or(0)))
            .item("num_media", n(message.num_media))
            .item("created_at", s(&message.created_at))
            .item("updated_at", s(&message.updated_at))
            .item("expires_at", expires);
        // Empty strings are left out (media-only messages, templates).
        let body = Some(message.body.clone()).filter(|b| !b.is_empty());
        for (name, value) in [
            ("body", &body),
            ("error_code", &message.error_code),
            ("profile_name", &message.profile_name),
            ("content_sid", &message.content_sid),
        ] {
            if let Some(value) = value {
                put = put.item(name, s(value));
            }
        }
        let put = put.build().map_err(|e| StoreError::Dynamo(e.to_string()))?;
        let mut items = vec![
            TransactWriteItem::builder().put(pointer).build(),
            TransactWriteItem::builder().put(put).build(),
        ];
        if message.direction == Direction::Outbound {
            // Its status callbacks may be lost (Twilio never retries them).
            let sent_at = crate::base::time::epoch_secs();
            let check = DueStatusCheck {
                entry: String::new(),
                sid: message.sid.clone(),
                sent_at,
                attempts: 0,
            };
            let watch = Put::builder()
                .table_name(&self.table)
                .set_item(Some(
                    self.status_watch_item(&check, sent_at + STATUS_FIRST_CHECK_SECS),
                ))
                .build()
                .map_err(|e| StoreError::Dynamo(e.to_string()))?;
            items.push(TransactWriteItem::builder().put(watch).build());
        }
        Ok(items)
    }

    fn status_watch_item(
        &self,
        check: &DueStatusCheck,
        at: i64,
    ) -> HashMap<String, AttributeValue> {
        HashMap::from([
            ("conversation".to_string(), s(STATUS_WATCH_PARTITION)),
            ("item".to_string(), s(&format!("{at:012}#{}", check.sid))),
            ("sid".to_string(), s(&check.sid)),
            ("sent_at".to_string(), n(check.sent_at)),
            ("attempts".to_string(), n(check.attempts)),
            ("expires_at".to_string(), n(self.expires_at())),
        ])
    }
}

#[async_trait]
impl WhatsAppStore for DynamoWhatsAppStore {
    async fn record_message(&self, message: &StoredMessage) -> Result<bool, StoreError> {
        let items = self.message_puts(message)?;
        let recorded = transact(
            &self.client,
            items,
            "record whatsapp message",
            true,
            already_recorded,
        )
        .await?;
        if message.direction == Direction::Outbound {
            self.apply_early(&message.sid).await?;
        }
        Ok(recorded)
    }

    async fn record_inbound(
        &self,
        message: &StoredMessage,
        pending: &PendingReply,
        due: i64,
    ) -> Result<bool, StoreError> {
        let mut items = self.message_puts(message)?;
        let watch = DueReply {
            entry: String::new(),
            pending: pending.clone(),
            redrives: 0,
        };
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(self.watch_item(&watch, due)))
            .build()
            .map_err(|e| StoreError::Dynamo(e.to_string()))?;
        items.push(TransactWriteItem::builder().put(put).build());
        transact(
            &self.client,
            items,
            "record whatsapp message",
            true,
            already_recorded,
        )
        .await
    }

    async fn due_replies(&self, now: i64, limit: i32) -> Result<Vec<DueReply>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :watch AND #sk <= :due")
            .expression_attribute_names("#pk", "conversation")
            .expression_attribute_names("#sk", "item")
            .expression_attribute_values(":watch", s(WATCH_PARTITION))
            // Entries sort by their time; "~" sorts after every "#<id>".
            .expression_attribute_values(":due", s(&format!("{now:012}~")))
            .consistent_read(true)
            .limit(limit)
            .send()
            .await?;
        Ok(out.items().iter().filter_map(due_reply_of).collect())
    }

    async fn reschedule_reply(&self, due: &DueReply, at: i64) -> Result<(), StoreError> {
        let next = DueReply {
            redrives: due.redrives + 1,
            ..due.clone()
        };
        // New entry first: a crash in between re-queues twice (harmless: the
        // worker claims per sid), never not at all.
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(self.watch_item(&next, at)))
            .send()
            .await?;
        self.drop_reply_watch(due).await
    }

    async fn due_status_checks(
        &self,
        now: i64,
        limit: i32,
    ) -> Result<Vec<DueStatusCheck>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :watch AND #sk <= :due")
            .expression_attribute_names("#pk", "conversation")
            .expression_attribute_names("#sk", "item")
            .expression_attribute_values(":watch", s(STATUS_WATCH_PARTITION))
            .expression_attribute_values(":due", s(&format!("{now:012}~")))
            .consistent_read(true)
            .limit(limit)
            .send()
            .await?;
        let number = |item: &HashMap<String, AttributeValue>, name: &str| {
            item.get(name)
                .and_then(|v| v.as_n().ok())
                .and_then(|v| v.parse().ok())
        };
        Ok(out
            .items()
            .iter()
            .filter_map(|item| {
                Some(DueStatusCheck {
                    entry: text(item, "item")?,
                    sid: text(item, "sid")?,
                    sent_at: number(item, "sent_at").unwrap_or(0),
                    attempts: number(item, "attempts")
                        .and_then(|a: i64| u32::try_from(a).ok())
                        .unwrap_or(0),
                })
            })
            .collect())
    }

    async fn reschedule_status_check(
        &self,
        due: &DueStatusCheck,
        at: i64,
        attempts: u32,
    ) -> Result<(), StoreError> {
        let next = DueStatusCheck {
            attempts,
            ..due.clone()
        };
        // New entry first: a crash in between asks twice, never not at all.
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(self.status_watch_item(&next, at)))
            .send()
            .await?;
        self.drop_status_check(due).await
    }

    async fn drop_status_check(&self, due: &DueStatusCheck) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("conversation", s(STATUS_WATCH_PARTITION))
            .key("item", s(&due.entry))
            .send()
            .await?;
        Ok(())
    }

    async fn message_status(&self, sid: &str) -> Result<Option<(String, String)>, StoreError> {
        let Some((conversation, item)) = self.message_key(sid).await? else {
            return Ok(None);
        };
        let message = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("conversation", s(&conversation))
            .key("item", s(&item))
            .consistent_read(true)
            .send()
            .await?;
        Ok(message
            .item
            .and_then(|m| text(&m, "status"))
            .map(|status| (status, conversation)))
    }

    async fn drop_reply_watch(&self, due: &DueReply) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("conversation", s(WATCH_PARTITION))
            .key("item", s(&due.entry))
            .send()
            .await?;
        Ok(())
    }

    async fn messages(
        &self,
        conversation: &str,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        // Newest first, so `limit` keeps the latest; reversed at the end.
        let mut found = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        for _ in 0..MAX_PAGES {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("#pk = :pk AND begins_with(#sk, :msg)")
                .expression_attribute_names("#pk", "conversation")
                .expression_attribute_names("#sk", "item")
                .expression_attribute_values(":pk", s(conversation))
                .expression_attribute_values(":msg", s("msg#"))
                .scan_index_forward(false)
                .limit((limit - found.len()).min(1000) as i32)
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await?;
            for item in out.items() {
                found.push(message_of(item)?);
            }
            match out.last_evaluated_key {
                Some(key) if found.len() < limit => start = Some(key),
                _ => break,
            }
        }
        found.reverse();
        Ok(found)
    }

    async fn conversation_of(&self, sid: &str) -> Result<Option<String>, StoreError> {
        let pointer = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("conversation", s(&pointer_key(sid)))
            .key("item", s("pointer"))
            .consistent_read(true)
            .projection_expression("target_conversation")
            .send()
            .await?;
        Ok(pointer
            .item
            .and_then(|item| text(&item, "target_conversation")))
    }

    async fn apply_status(
        &self,
        sid: &str,
        status: &str,
        error_code: Option<&str>,
    ) -> Result<StatusApplied, StoreError> {
        let Some(rank) = status_rank(status) else {
            return Ok(StatusApplied::Ignored);
        };
        if let Some(applied) = self.apply_to_pointer(sid, status, rank, error_code).await? {
            return Ok(applied);
        }
        // Not recorded yet (or not ours): keep it, then look again, so either
        // this callback or the recorder sees the other's write.
        self.keep_early(sid, status, rank, error_code).await?;
        Ok(self
            .apply_to_pointer(sid, status, rank, error_code)
            .await?
            .unwrap_or(StatusApplied::Kept))
    }

    async fn reply(
        &self,
        conversation: &str,
        inbound_sid: &str,
    ) -> Result<Option<ReplyRecord>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("conversation", s(conversation))
            .key("item", s(&reply_key(inbound_sid)))
            .consistent_read(true)
            .send()
            .await?;
        Ok(out.item.as_ref().map(reply_of))
    }

    async fn begin_send(
        &self,
        conversation: &str,
        inbound_sid: &str,
        reply_text: &str,
    ) -> Result<ReplyRecord, StoreError> {
        // The first text stored wins (`if_not_exists`): every later attempt
        // sends exactly that text. ALL_NEW hands it back in the same write.
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("conversation", s(conversation))
            .key("item", s(&reply_key(inbound_sid)))
            .update_expression(
                "SET #text = if_not_exists(#text, :text), #state = if_not_exists(#state, :pending), \
                 #expires = :exp, #updated = :now ADD #attempts :one",
            )
            .expression_attribute_names("#text", "text")
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#expires", "expires_at")
            .expression_attribute_names("#updated", "updated_at")
            .expression_attribute_names("#attempts", "attempts")
            .expression_attribute_values(":text", s(reply_text))
            .expression_attribute_values(":pending", s("pending"))
            .expression_attribute_values(":exp", n(self.expires_at()))
            .expression_attribute_values(":now", s(&now_millis()))
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::AllNew)
            .send()
            .await?;
        Ok(out.attributes.as_ref().map(reply_of).unwrap_or_default())
    }

    async fn finish_send(
        &self,
        inbound_sid: &str,
        part: u32,
        parts: u32,
        reply: &StoredMessage,
    ) -> Result<(), StoreError> {
        let mut items = self.message_puts(reply)?;
        let last = part + 1 >= parts;
        let mark = Update::builder()
            .table_name(&self.table)
            .key("conversation", s(&reply.conversation))
            .key("item", s(&reply_key(inbound_sid)))
            .update_expression(if last {
                "SET #parts = :parts, #sid = :sid, #state = :state, #updated = :now"
            } else {
                "SET #parts = :parts, #updated = :now"
            })
            .expression_attribute_names("#parts", "sent_parts")
            .expression_attribute_names("#updated", "updated_at")
            .expression_attribute_values(":parts", n(part + 1))
            .expression_attribute_values(":now", s(&now_millis()));
        let mark = if last {
            mark.expression_attribute_names("#sid", "reply_sid")
                .expression_attribute_names("#state", "state")
                .expression_attribute_values(":sid", s(&reply.sid))
                .expression_attribute_values(":state", s(&reply.status))
        } else {
            mark
        }
        .build()
        .map_err(|e| StoreError::Dynamo(e.to_string()))?;
        items.push(TransactWriteItem::builder().update(mark).build());
        // A pointer that exists already means this reply was recorded before.
        transact(
            &self.client,
            items,
            "record whatsapp reply",
            true,
            already_recorded,
        )
        .await?;
        self.apply_early(&reply.sid).await
    }

    async fn settle_unsent(
        &self,
        conversation: &str,
        inbound_sid: &str,
        state: &str,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("conversation", s(conversation))
            .key("item", s(&reply_key(inbound_sid)))
            .update_expression(if reason.is_some() {
                "SET #state = :state, #expires = :exp, #updated = :now, #reason = :reason"
            } else {
                "SET #state = :state, #expires = :exp, #updated = :now"
            })
            // Never over a reply that was sent.
            .condition_expression("attribute_not_exists(#sid)")
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#expires", "expires_at")
            .expression_attribute_names("#updated", "updated_at")
            .expression_attribute_names("#sid", "reply_sid")
            .expression_attribute_values(":state", s(state))
            .expression_attribute_values(":exp", n(self.expires_at()))
            .expression_attribute_values(":now", s(&now_millis()));
        if let Some(reason) = reason {
            update = update
                .expression_attribute_names("#reason", "reason")
                .expression_attribute_values(":reason", s(reason));
        }
        applied(update.send().await).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_only_move_forward_and_final_ones_are_highest() {
        let rank = |s| status_rank(s).unwrap();
        assert!(rank("queued") < rank("sent"));
        assert!(rank("sent") < rank("delivered"));
        assert!(rank("delivered") < rank("read"));
        assert!(rank("read") < rank("failed"));
        assert_eq!(rank("failed"), rank("undelivered"));
        assert_eq!(status_rank("warp-speed"), None);
    }

    #[test]
    fn message_keys_sort_by_time_then_sid() {
        let mut a = StoredMessage::new("o#1", "SM2", Direction::Inbound, "hi", "received");
        a.created_at = "2026-01-01T10:00:00.000Z".into();
        let mut b = a.clone();
        b.created_at = "2026-01-01T10:00:00.001Z".into();
        b.sid = "SM1".into();
        assert!(a.item_key() < b.item_key());
        assert_eq!(a.item_key(), "msg#2026-01-01T10:00:00.000Z#SM2");
    }
}
