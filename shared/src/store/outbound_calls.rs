//! Outbound call records (seeds 003 and 004) and the budget they hold,
//! kept beside call records in the calls table as `(call_id, "outbound")`.
//!
//! A call is recorded before any provider is asked to place it, in one
//! transaction with its reservation on the organisation's monthly budget
//! (`held#YYYY-MM + seconds <= plan + top-ups`) and an entry in the open
//! reservations ledger. When the call ends, one transaction settles the
//! reservation to the real duration, exactly once (`usage_counted`), and
//! removes the ledger entry; a sweep asks the provider about what never
//! reports an end (`flows::reconcile`).

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{
    AttributeValue, CancellationReason, Delete, Put, ReturnValuesOnConditionCheckFailure,
    TransactWriteItem, Update,
};
use aws_sdk_dynamodb::Client;
use serde::{Deserialize, Serialize};

use crate::base::end_reason::EndReason;

use super::directory::{call_slots, held_attribute, reserved_attribute, usage_attribute, Provider};
use super::ledger::{self, Ledger};
use super::transactions::{self, busy, codes, Verdict};
use super::{s, StoreError};

const OUTBOUND_ITEM: &str = "outbound";
/// `(conversation_id, "conversation")` -> the call ref, for ElevenLabs calls
/// whose conversation id is only known once the call is placed.
const CONVERSATION_ITEM: &str = "conversation";
/// Open reservations (`store::ledger`), due when the sweep may release them.
const OPEN_RESERVATIONS: Ledger = Ledger {
    partition: "reservations#open",
    id_attribute: "call_ref",
};

/// A hold on an organisation's monthly budget for one call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub org_id: String,
    /// The assistant's `max_call_seconds` when the call was placed.
    pub seconds: u64,
    /// `YYYY-MM` (UTC) of placement: the month the call is counted in, even
    /// when it ends in the next one.
    pub month: String,
    /// Epoch seconds when the sweep next asks the call's provider how it
    /// ended, if no end was reported by then; names the call's entry in the
    /// open reservations ledger.
    pub release_after: i64,
    /// The call holds one of the organisation's `max_concurrent_calls`
    /// slots until it is settled. A campaign's call holds its slot through
    /// its campaign attempt instead, so this is false for it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub call_slot: bool,
}

/// The organisation's limits a reservation was checked against; the
/// reservation fails if they changed meanwhile, and is checked again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub monthly_limit_seconds: u64,
    pub topup_seconds: u64,
}

impl Budget {
    pub fn allowance(&self) -> u64 {
        self.monthly_limit_seconds
            .saturating_add(self.topup_seconds)
    }
}

/// What reserving a call's seconds came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reserve {
    /// Recorded and reserved.
    Reserved,
    /// The month's budget cannot hold it: nothing was written.
    OverBudget,
    /// The organisation's limits changed since they were read: read again.
    BudgetChanged,
    /// No such organisation.
    NoOrganisation,
    /// All of the organisation's `max_concurrent_calls` slots are taken:
    /// nothing was written.
    AtCapacity,
}

/// One line of a call transcript.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TranscriptLine {
    /// `agent` or `user`.
    pub role: String,
    pub message: String,
    #[serde(default)]
    pub time_in_call_secs: Option<u64>,
}

pub fn transcript_text(lines: &[TranscriptLine]) -> String {
    lines
        .iter()
        .map(|l| {
            let mut role = l.role.clone();
            if let Some(first) = role.get_mut(0..1) {
                first.make_ascii_uppercase();
            }
            format!("{role}: {}", l.message)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusEntry {
    pub status: String,
    pub at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboundCall {
    /// Our id: `oc_...` for Twilio calls (known before Twilio calls back),
    /// the conversation id for ElevenLabs calls.
    #[serde(rename = "call_id")]
    pub call_ref: String,
    pub provider: Provider,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assistant_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_id: Option<String>,
    pub to_number: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agenda: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub welcome_message: Option<String>,
    #[serde(default)]
    pub agent_variables: serde_json::Map<String, serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_sid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<String>,
    /// Provider status (`queued`, `ringing`, `in-progress`, `completed`, `done`, `failed`, ...).
    pub status: String,
    #[serde(default)]
    pub status_rank: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    #[serde(default)]
    pub transcript: Vec<TranscriptLine>,
    #[serde(default)]
    pub status_history: Vec<StatusEntry>,
    pub created_at: String,
    /// The budget this call holds until it is settled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservation: Option<Reservation>,
    /// Set once, by the transaction that settled the call's usage.
    #[serde(default)]
    pub usage_counted: bool,
    /// Why it ended, in the vocabulary every provider maps to; set once,
    /// by the first final status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<EndReason>,
    /// Its end was learned by asking the provider: the webhook never came.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reconciled: bool,
    /// `phone` or `whatsapp` for a call a session placer placed
    /// (`/phone/call`, `/whatsapp/call`): its statuses are a session's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_kind: Option<String>,
    /// Asks of its provider that got no answer in a row (reconciliation).
    #[serde(default)]
    pub reconcile_attempts: u32,
    /// When its end was applied from the provider's answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconciled_at: Option<String>,
    /// When its summary was first delivered, and through which channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notified_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notified_via: Option<String>,
    /// A campaign's call: which campaign, row and attempt it dialled. Its
    /// settled end (`usage_counted`) settles the attempt, from the stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign_row: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign_attempt: Option<u32>,
    /// Twilio's answering-machine detection (`human`, `machine_start`,
    /// `machine_end_beep`, `fax`, `unknown`...), for calls placed with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_by: Option<String>,
}

/// A fresh call ref (`oc_...`): known before any provider is called, so it
/// can go into Twilio's callback URLs and ElevenLabs' dynamic variables.
pub fn new_call_ref() -> String {
    format!("oc_{}", uuid::Uuid::new_v4().simple())
}

impl OutboundCall {
    /// A call just placed (status `initiated`), with nothing else known yet.
    pub fn initiated(call_ref: &str, provider: Provider, to_number: &str) -> Self {
        Self {
            call_ref: call_ref.to_string(),
            provider,
            assistant_id: None,
            org_id: None,
            to_number: to_number.to_string(),
            from_number: None,
            agenda: None,
            welcome_message: None,
            agent_variables: serde_json::Map::new(),
            call_sid: None,
            conversation_id: None,
            status: "initiated".into(),
            status_rank: status_rank("initiated"),
            duration_secs: None,
            failure_reason: None,
            transcript: Vec::new(),
            status_history: Vec::new(),
            created_at: crate::base::time::now_rfc3339(),
            reservation: None,
            usage_counted: false,
            end_reason: None,
            reconciled: false,
            session_kind: None,
            reconcile_attempts: 0,
            reconciled_at: None,
            notified_at: None,
            notified_via: None,
            campaign_id: None,
            campaign_row: None,
            campaign_attempt: None,
            answered_by: None,
        }
    }

    /// The voice-agent session this call belongs to, when the caller passed
    /// `room_name` among the agent variables: its Slack thread gets the summary.
    pub fn room_name(&self) -> Option<&str> {
        self.agent_variables
            .get("room_name")
            .and_then(|v| v.as_str())
    }
}

/// Twilio delivers status callbacks out of order; a status never moves back.
pub fn status_rank(status: &str) -> u32 {
    match status {
        "queued" => 1,
        "initiated" => 2,
        "ringing" => 3,
        "in-progress" | "answered" | "processing" => 4,
        "completed" | "busy" | "failed" | "no-answer" | "canceled" | "done" => 5,
        _ => 0,
    }
}

/// Result of recording a call's final duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageRecorded {
    Counted,
    AlreadyCounted,
}

#[async_trait]
pub trait OutboundCallStore: Send + Sync {
    /// Records a call that reserves nothing (placed outside callops); false
    /// when a record with this ref exists already (it is left as it is).
    async fn create(&self, call: &OutboundCall) -> Result<bool, StoreError>;
    /// Records the call and reserves `call.reservation` on its organisation
    /// in one transaction, checked against `budget`.
    async fn create_reserved(
        &self,
        call: &OutboundCall,
        budget: Budget,
    ) -> Result<Reserve, StoreError>;
    /// By call ref, or by ElevenLabs conversation id.
    async fn get(&self, id: &str) -> Result<Option<OutboundCall>, StoreError>;
    /// Moves the status forward only (by rank); returns whether it moved.
    async fn advance_status(
        &self,
        call_ref: &str,
        status: &str,
        reason: Option<&str>,
    ) -> Result<bool, StoreError>;
    /// Stores the provider's ids on a call still `initiating` and moves it to
    /// `status`; a conversation id becomes findable by `get`. False when the
    /// call had moved on (a later writer got there first).
    async fn attach_provider_ids(
        &self,
        call_ref: &str,
        call_sid: Option<&str>,
        conversation_id: Option<&str>,
        status: &str,
    ) -> Result<bool, StoreError>;
    async fn set_transcript(
        &self,
        call_ref: &str,
        transcript: &[TranscriptLine],
    ) -> Result<(), StoreError>;
    /// Settles the call: stores its duration, turns its reservation into
    /// usage of the reservation's month (or adds to this month's usage for a
    /// call that reserved nothing), and closes the ledger entry, in one
    /// transaction and only the first time.
    async fn record_duration(
        &self,
        call: &OutboundCall,
        seconds: u64,
    ) -> Result<UsageRecorded, StoreError>;
    /// Stores Twilio's answering-machine verdict on the call whose sid is
    /// `call_sid` (the first verdict stays); false when no such call.
    async fn set_answered_by(
        &self,
        call_ref: &str,
        call_sid: &str,
        answered_by: &str,
    ) -> Result<bool, StoreError>;
    /// Stores why the call ended (only the first reason stays) and whether
    /// its provider had to be asked for it.
    async fn set_end(
        &self,
        call_ref: &str,
        reason: EndReason,
        reconciled: bool,
    ) -> Result<(), StoreError>;
    /// Calls whose reservations are still open and due at `now` (epoch
    /// seconds), oldest first.
    async fn due_reservations(
        &self,
        now: i64,
        limit: i32,
    ) -> Result<Vec<DueReservation>, StoreError>;
    /// Moves `call`'s open reservation entry from `from` to `to` and notes
    /// the unanswered asks so far, in one transaction; false (nothing moved)
    /// when the call was settled meanwhile or its entry had already moved.
    async fn reschedule_reservation(
        &self,
        call: &OutboundCall,
        from: i64,
        to: i64,
        attempts: u32,
    ) -> Result<bool, StoreError>;
    /// Removes an entry left behind by a settlement that raced a reschedule.
    async fn drop_reservation_entry(&self, call_ref: &str, due: i64) -> Result<(), StoreError>;
    /// Notes the first delivery of the call's summary (`slack` or `email`).
    async fn mark_notified(&self, call_ref: &str, channel: &str) -> Result<(), StoreError>;
}

/// An open reservation's ledger entry that is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueReservation {
    pub call_ref: String,
    /// When the entry was due (epoch seconds): names the entry.
    pub due: i64,
}

pub struct DynamoOutboundCallStore {
    pub client: Client,
    pub calls_table: String,
    pub organisations_table: String,
}

fn key(id: &str, item: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("call_id".to_string(), s(id)),
        ("item".to_string(), s(item)),
    ])
}

fn n(value: i128) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn built<T, E: std::fmt::Display>(result: Result<T, E>) -> Result<T, StoreError> {
    result.map_err(|e| StoreError::Dynamo(e.to_string()))
}

impl DynamoOutboundCallStore {
    fn key(&self, call_ref: &str) -> HashMap<String, AttributeValue> {
        key(call_ref, OUTBOUND_ITEM)
    }

    async fn get_record(&self, call_ref: &str) -> Result<Option<OutboundCall>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.calls_table)
            .set_key(Some(self.key(call_ref)))
            .consistent_read(true)
            .send()
            .await?;
        out.item
            .map(|i| serde_dynamo::from_item(i).map_err(Into::into))
            .transpose()
    }

    fn record_item(
        &self,
        call: &OutboundCall,
    ) -> Result<HashMap<String, AttributeValue>, StoreError> {
        let mut item: HashMap<String, AttributeValue> = serde_dynamo::to_item(call)?;
        item.insert("item".into(), s(OUTBOUND_ITEM));
        // Set only by the settling transaction, whose condition is its absence.
        item.remove("usage_counted");
        // A call a session placer placed is logged as its session.
        if let (Some(org), None) = (&call.org_id, &call.session_kind) {
            item.extend(super::call_log::log_attributes(
                org,
                &call.created_at,
                &call.call_ref,
            ));
        }
        Ok(item)
    }
}

/// Reads a cancelled reservation (index 0 the call record, index 1 the
/// organisation, index 2 the ledger entry).
fn read_reserve_cancellation(
    reasons: &[CancellationReason],
    budget: Budget,
    call_slot: bool,
) -> Verdict<Reserve> {
    if busy(reasons) {
        return Verdict::Retry(codes(reasons));
    }
    match reasons.get(1) {
        Some(org) if org.code() == Some("ConditionalCheckFailed") => {
            let Some(old) = org.item() else {
                return Verdict::Done(Reserve::NoOrganisation);
            };
            let number = |name: &str| {
                old.get(name)
                    .and_then(|v| v.as_n().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            let unchanged = number("monthly_limit_seconds") == budget.monthly_limit_seconds
                && number("topup_seconds") == budget.topup_seconds;
            Verdict::Done(if !unchanged {
                Reserve::BudgetChanged
            } else if call_slot && call_slots::full(old) {
                Reserve::AtCapacity
            } else {
                Reserve::OverBudget
            })
        }
        _ => Verdict::Fail(format!("reservation cancelled: [{}]", codes(reasons))),
    }
}

/// Reads a cancelled settlement (index 0 is the call record): only a failed
/// condition on a call already counted means "already counted".
fn read_settle_cancellation(reasons: &[CancellationReason]) -> Verdict<UsageRecorded> {
    if let Some(call) = reasons.first() {
        if call.code() == Some("ConditionalCheckFailed") {
            return match call.item() {
                Some(old) if old.contains_key("usage_counted") => {
                    Verdict::Done(UsageRecorded::AlreadyCounted)
                }
                Some(_) => Verdict::Fail("call condition failed without usage_counted".into()),
                None => Verdict::Fail("call item missing".into()),
            };
        }
    }
    if busy(reasons) {
        Verdict::Retry(codes(reasons))
    } else {
        Verdict::Fail(format!("transaction cancelled: [{}]", codes(reasons)))
    }
}

#[async_trait]
impl OutboundCallStore for DynamoOutboundCallStore {
    async fn set_answered_by(
        &self,
        call_ref: &str,
        call_sid: &str,
        answered_by: &str,
    ) -> Result<bool, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.calls_table)
            .set_key(Some(self.key(call_ref)))
            .update_expression("SET answered_by = if_not_exists(answered_by, :a)")
            .condition_expression("attribute_exists(call_id) AND call_sid = :sid")
            .expression_attribute_values(":a", s(answered_by))
            .expression_attribute_values(":sid", s(call_sid))
            .send()
            .await;
        super::applied(result)
    }

    async fn create(&self, call: &OutboundCall) -> Result<bool, StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.calls_table)
            .set_item(Some(self.record_item(call)?))
            .condition_expression("attribute_not_exists(call_id)")
            .send()
            .await;
        super::applied(result)
    }

    async fn create_reserved(
        &self,
        call: &OutboundCall,
        budget: Budget,
    ) -> Result<Reserve, StoreError> {
        let reservation = call
            .reservation
            .as_ref()
            .ok_or_else(|| StoreError::Malformed("create_reserved without a reservation".into()))?;
        let Some(max_held) = budget.allowance().checked_sub(reservation.seconds) else {
            return Ok(Reserve::OverBudget);
        };
        let record = built(
            Put::builder()
                .table_name(&self.calls_table)
                .set_item(Some(self.record_item(call)?))
                .condition_expression("attribute_not_exists(call_id)")
                .build(),
        )?;
        let (mut update, mut condition) = (
            "ADD #held :s, #reserved :s".to_string(),
            "attribute_exists(org_id) AND monthly_limit_seconds = :limit \
             AND topup_seconds = :topup \
             AND (attribute_not_exists(#held) OR #held <= :max_held)"
                .to_string(),
        );
        if reservation.call_slot {
            update = format!("{update} SET {}", call_slots::TAKE);
            condition = format!("{condition} AND {}", call_slots::FREE);
        }
        let slot_values = call_slots::values_in(&[&update, &condition]);
        let hold = built(
            Update::builder()
                .table_name(&self.organisations_table)
                .key("org_id", s(&reservation.org_id))
                .update_expression(update)
                .condition_expression(condition)
                .set_expression_attribute_values(Some(slot_values.into_iter().collect()))
                .expression_attribute_names("#held", held_attribute(&reservation.month))
                .expression_attribute_names("#reserved", reserved_attribute(&reservation.month))
                .expression_attribute_values(":s", n(reservation.seconds.into()))
                .expression_attribute_values(":limit", n(budget.monthly_limit_seconds.into()))
                .expression_attribute_values(":topup", n(budget.topup_seconds.into()))
                .expression_attribute_values(":max_held", n(max_held.into()))
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .build(),
        )?;
        let mut ledger = OPEN_RESERVATIONS.item(&call.call_ref, reservation.release_after);
        ledger.insert("org_id".into(), s(&reservation.org_id));
        let ledger = built(
            Put::builder()
                .table_name(&self.calls_table)
                .set_item(Some(ledger))
                .build(),
        )?;
        let items = vec![
            TransactWriteItem::builder().put(record).build(),
            TransactWriteItem::builder().update(hold).build(),
            TransactWriteItem::builder().put(ledger).build(),
        ];
        transactions::transact(
            &self.client,
            items,
            "reservation",
            Reserve::Reserved,
            |reasons| read_reserve_cancellation(reasons, budget, reservation.call_slot),
        )
        .await
    }

    async fn get(&self, id: &str) -> Result<Option<OutboundCall>, StoreError> {
        if let Some(call) = self.get_record(id).await? {
            return Ok(Some(call));
        }
        let pointer = self
            .client
            .get_item()
            .table_name(&self.calls_table)
            .set_key(Some(key(id, CONVERSATION_ITEM)))
            .consistent_read(true)
            .send()
            .await?;
        let call_ref = pointer
            .item
            .and_then(|i| i.get("call_ref").and_then(|v| v.as_s().ok()).cloned());
        match call_ref {
            Some(call_ref) => self.get_record(&call_ref).await,
            None => Ok(None),
        }
    }

    async fn advance_status(
        &self,
        call_ref: &str,
        status: &str,
        reason: Option<&str>,
    ) -> Result<bool, StoreError> {
        let entry = serde_dynamo::to_attribute_value(StatusEntry {
            status: status.to_string(),
            at: crate::base::time::now_rfc3339(),
        })?;
        let mut expression = "SET #status = :status, status_rank = :rank, \
             status_history = list_append(if_not_exists(status_history, :empty), :entry)"
            .to_string();
        let mut update = self
            .client
            .update_item()
            .table_name(&self.calls_table)
            .set_key(Some(self.key(call_ref)))
            .condition_expression("attribute_exists(call_id) AND status_rank < :rank")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":status", s(status))
            .expression_attribute_values(
                ":rank",
                AttributeValue::N(status_rank(status).to_string()),
            )
            .expression_attribute_values(":empty", AttributeValue::L(vec![]))
            .expression_attribute_values(":entry", AttributeValue::L(vec![entry]));
        if let Some(reason) = reason {
            expression.push_str(", failure_reason = :reason");
            update = update.expression_attribute_values(":reason", s(reason));
        }
        super::applied(update.update_expression(expression).send().await)
    }

    async fn attach_provider_ids(
        &self,
        call_ref: &str,
        call_sid: Option<&str>,
        conversation_id: Option<&str>,
        status: &str,
    ) -> Result<bool, StoreError> {
        let entry = serde_dynamo::to_attribute_value(StatusEntry {
            status: status.to_string(),
            at: crate::base::time::now_rfc3339(),
        })?;
        let mut update = Update::builder()
            .table_name(&self.calls_table)
            .set_key(Some(self.key(call_ref)))
            .condition_expression("#status = :initiating")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":initiating", s("initiating"))
            .expression_attribute_values(":status", s(status))
            .expression_attribute_values(":rank", n(status_rank(status).into()))
            .expression_attribute_values(":entry", AttributeValue::L(vec![entry]));
        let mut expression = "SET #status = :status, status_rank = :rank, \
             status_history = list_append(status_history, :entry)"
            .to_string();
        if let Some(sid) = call_sid {
            expression.push_str(", call_sid = :sid");
            update = update.expression_attribute_values(":sid", s(sid));
        }
        if let Some(id) = conversation_id {
            expression.push_str(", conversation_id = :conversation");
            update = update.expression_attribute_values(":conversation", s(id));
        }
        let mut items = vec![TransactWriteItem::builder()
            .update(built(update.update_expression(expression).build())?)
            .build()];
        if let Some(id) = conversation_id {
            let mut pointer = key(id, CONVERSATION_ITEM);
            pointer.insert("call_ref".into(), s(call_ref));
            items.push(
                TransactWriteItem::builder()
                    .put(built(
                        Put::builder()
                            .table_name(&self.calls_table)
                            .set_item(Some(pointer))
                            .build(),
                    )?)
                    .build(),
            );
        }
        transactions::transact(
            &self.client,
            items,
            "provider ids",
            true,
            |reasons| match reasons.first() {
                Some(call) if call.code() == Some("ConditionalCheckFailed") => Verdict::Done(false),
                _ if busy(reasons) => Verdict::Retry(codes(reasons)),
                _ => Verdict::Fail(format!("provider ids: [{}]", codes(reasons))),
            },
        )
        .await
    }

    async fn set_transcript(
        &self,
        call_ref: &str,
        transcript: &[TranscriptLine],
    ) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.calls_table)
            .set_key(Some(self.key(call_ref)))
            .update_expression("SET transcript = :t")
            .condition_expression("attribute_exists(call_id)")
            .expression_attribute_values(":t", serde_dynamo::to_attribute_value(transcript)?)
            .send()
            .await?;
        Ok(())
    }

    async fn record_duration(
        &self,
        call: &OutboundCall,
        seconds: u64,
    ) -> Result<UsageRecorded, StoreError> {
        let mark = built(
            Update::builder()
                .table_name(&self.calls_table)
                .set_key(Some(self.key(&call.call_ref)))
                .update_expression("SET duration_secs = :d, usage_counted = :yes")
                .condition_expression(
                    "attribute_exists(call_id) AND attribute_not_exists(usage_counted)",
                )
                .expression_attribute_values(":d", n(seconds.into()))
                .expression_attribute_values(":yes", AttributeValue::Bool(true))
                // The cancellation reason then carries the old item, so "already
                // counted" can be told from "no such call".
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .build(),
        )?;
        let mut items = vec![TransactWriteItem::builder().update(mark).build()];
        let used = i128::from(seconds);
        match (&call.reservation, &call.org_id) {
            (Some(reservation), _) => {
                // The reservation becomes usage in its own month: held moves by
                // the difference, reserved drops by what was held.
                let held = i128::from(reservation.seconds);
                let mut expression =
                    "ADD #usage :used, #reserved :unreserve, #held :delta".to_string();
                if reservation.call_slot {
                    // Unguarded, unlike a campaign's release: a settlement
                    // refused here would leave the call's usage uncounted.
                    expression = format!("{expression} SET {}", call_slots::RELEASE);
                }
                let slot_values = call_slots::values_in(&[&expression]);
                let settle = Update::builder()
                    .table_name(&self.organisations_table)
                    .key("org_id", s(&reservation.org_id))
                    .set_expression_attribute_values(Some(slot_values.into_iter().collect()))
                    .update_expression(expression)
                    .expression_attribute_names("#usage", usage_attribute(&reservation.month))
                    .expression_attribute_names("#reserved", reserved_attribute(&reservation.month))
                    .expression_attribute_names("#held", held_attribute(&reservation.month))
                    .expression_attribute_values(":used", n(used))
                    .expression_attribute_values(":unreserve", n(-held))
                    .expression_attribute_values(":delta", n(used - held));
                items.push(
                    TransactWriteItem::builder()
                        .update(built(settle.build())?)
                        .build(),
                );
                let ledger = Delete::builder()
                    .table_name(&self.calls_table)
                    .set_key(Some(
                        OPEN_RESERVATIONS
                            .key(&ledger::entry(&call.call_ref, reservation.release_after)),
                    ));
                items.push(
                    TransactWriteItem::builder()
                        .delete(built(ledger.build())?)
                        .build(),
                );
            }
            (None, Some(org_id)) => {
                let month = super::directory::usage_month(crate::base::time::now());
                let usage = Update::builder()
                    .table_name(&self.organisations_table)
                    .key("org_id", s(org_id))
                    .update_expression("ADD #usage :used, #held :used")
                    .expression_attribute_names("#usage", usage_attribute(&month))
                    .expression_attribute_names("#held", held_attribute(&month))
                    .expression_attribute_values(":used", n(used));
                items.push(
                    TransactWriteItem::builder()
                        .update(built(usage.build())?)
                        .build(),
                );
            }
            (None, None) => {}
        }
        transactions::transact(
            &self.client,
            items,
            &format!("usage for call {}", call.call_ref),
            UsageRecorded::Counted,
            read_settle_cancellation,
        )
        .await
    }

    async fn set_end(
        &self,
        call_ref: &str,
        reason: EndReason,
        reconciled: bool,
    ) -> Result<(), StoreError> {
        let mut expression = "SET end_reason = if_not_exists(end_reason, :reason)".to_string();
        let mut update = self
            .client
            .update_item()
            .table_name(&self.calls_table)
            .set_key(Some(self.key(call_ref)))
            .condition_expression("attribute_exists(call_id)")
            .expression_attribute_values(":reason", s(reason.as_str()));
        if reconciled {
            expression.push_str(
                ", reconciled = :yes, reconciled_at = if_not_exists(reconciled_at, :now)",
            );
            update = update
                .expression_attribute_values(":yes", AttributeValue::Bool(true))
                .expression_attribute_values(":now", s(&crate::base::time::now_rfc3339()));
        }
        update.update_expression(expression).send().await?;
        Ok(())
    }

    async fn due_reservations(
        &self,
        now: i64,
        limit: i32,
    ) -> Result<Vec<DueReservation>, StoreError> {
        Ok(OPEN_RESERVATIONS
            .due(&self.client, &self.calls_table, now, limit)
            .await?
            .into_iter()
            .filter_map(|due| {
                let at = due.entry.split_once('#')?.0.parse().ok()?;
                Some(DueReservation {
                    call_ref: due.id,
                    due: at,
                })
            })
            .collect())
    }

    async fn reschedule_reservation(
        &self,
        call: &OutboundCall,
        from: i64,
        to: i64,
        attempts: u32,
    ) -> Result<bool, StoreError> {
        let call_ref = call.call_ref.as_str();
        // The record names its live entry (`reservation.release_after`), so
        // the settlement removes the entry it finds there.
        let record = built(
            Update::builder()
                .table_name(&self.calls_table)
                .set_key(Some(self.key(call_ref)))
                .update_expression(
                    "SET reservation.release_after = :to, reconcile_attempts = :attempts",
                )
                .condition_expression(
                    "attribute_not_exists(usage_counted) AND reservation.release_after = :from",
                )
                .expression_attribute_values(":to", n(to.into()))
                .expression_attribute_values(":from", n(from.into()))
                .expression_attribute_values(":attempts", n(attempts.into()))
                .build(),
        )?;
        let old = built(
            Delete::builder()
                .table_name(&self.calls_table)
                .set_key(Some(OPEN_RESERVATIONS.key(&ledger::entry(call_ref, from))))
                .condition_expression("attribute_exists(call_id)")
                .build(),
        )?;
        let mut entry = OPEN_RESERVATIONS.item(call_ref, to);
        if let Some(org) = &call.org_id {
            entry.insert("org_id".into(), s(org));
        }
        let new = built(
            Put::builder()
                .table_name(&self.calls_table)
                .set_item(Some(entry))
                .build(),
        )?;
        let items = vec![
            TransactWriteItem::builder().update(record).build(),
            TransactWriteItem::builder().delete(old).build(),
            TransactWriteItem::builder().put(new).build(),
        ];
        transactions::transact(
            &self.client,
            items,
            &format!("reschedule of call {call_ref}"),
            true,
            |reasons| {
                if busy(reasons) {
                    Verdict::Retry(codes(reasons))
                } else if reasons
                    .iter()
                    .any(|r| r.code() == Some("ConditionalCheckFailed"))
                {
                    Verdict::Done(false)
                } else {
                    Verdict::Fail(format!("reschedule cancelled: [{}]", codes(reasons)))
                }
            },
        )
        .await
    }

    async fn drop_reservation_entry(&self, call_ref: &str, due: i64) -> Result<(), StoreError> {
        OPEN_RESERVATIONS
            .remove(
                &self.client,
                &self.calls_table,
                &ledger::entry(call_ref, due),
            )
            .await
    }

    async fn mark_notified(&self, call_ref: &str, channel: &str) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.calls_table)
            .set_key(Some(self.key(call_ref)))
            .update_expression(
                "SET notified_at = if_not_exists(notified_at, :now), \
                 notified_via = if_not_exists(notified_via, :channel)",
            )
            .condition_expression("attribute_exists(call_id)")
            .expression_attribute_values(":now", s(&crate::base::time::now_rfc3339()))
            .expression_attribute_values(":channel", s(channel))
            .send()
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(code: &str, old: Option<&[&str]>) -> CancellationReason {
        let item = old.map(|names| {
            names
                .iter()
                .map(|n| (n.to_string(), AttributeValue::Bool(true)))
                .collect()
        });
        CancellationReason::builder()
            .code(code)
            .set_item(item)
            .build()
    }

    #[test]
    fn only_a_counted_call_item_means_already_counted() {
        let counted = Some(&["call_id", "usage_counted"][..]);
        assert_eq!(
            read_settle_cancellation(&[
                reason("ConditionalCheckFailed", counted),
                reason("None", None)
            ]),
            Verdict::Done(UsageRecorded::AlreadyCounted)
        );
        assert_eq!(
            read_settle_cancellation(&[reason("ConditionalCheckFailed", counted)]),
            Verdict::Done(UsageRecorded::AlreadyCounted)
        );
        // Condition failed and no old item: the call does not exist.
        assert!(matches!(
            read_settle_cancellation(&[reason("ConditionalCheckFailed", None), reason("None", None)]),
            Verdict::Fail(r) if r.contains("missing")
        ));
        assert!(matches!(
            read_settle_cancellation(&[
                reason("ConditionalCheckFailed", Some(&["call_id"])),
                reason("None", None)
            ]),
            Verdict::Fail(_)
        ));
    }

    #[test]
    fn conflicts_and_throttling_are_retried() {
        for busy in [
            "TransactionConflict",
            "ThrottlingError",
            "ProvisionedThroughputExceeded",
            "RequestLimitExceeded",
        ] {
            for reasons in [
                vec![reason("None", None), reason(busy, None)],
                vec![reason(busy, None), reason("None", None)],
            ] {
                assert!(
                    matches!(read_settle_cancellation(&reasons), Verdict::Retry(_)),
                    "{busy}"
                );
            }
        }
    }

    #[test]
    fn anything_else_is_an_error() {
        for reasons in [
            vec![reason("None", None), reason("ValidationError", None)],
            vec![
                reason("ItemCollectionSizeLimitExceeded", None),
                reason("None", None),
            ],
            vec![reason("None", None), reason("ConditionalCheckFailed", None)],
            vec![],
        ] {
            assert!(matches!(
                read_settle_cancellation(&reasons),
                Verdict::Fail(_)
            ));
        }
    }

    #[test]
    fn a_full_budget_is_told_from_a_changed_one() {
        let budget = Budget {
            monthly_limit_seconds: 100,
            topup_seconds: 20,
        };
        let org = |limit: &str, topup: &str| {
            let item = HashMap::from([
                (
                    "monthly_limit_seconds".to_string(),
                    AttributeValue::N(limit.into()),
                ),
                ("topup_seconds".to_string(), AttributeValue::N(topup.into())),
            ]);
            CancellationReason::builder()
                .code("ConditionalCheckFailed")
                .set_item(Some(item))
                .build()
        };
        let none = reason("None", None);
        assert_eq!(
            read_reserve_cancellation(
                &[none.clone(), org("100", "20"), none.clone()],
                budget,
                true
            ),
            Verdict::Done(Reserve::OverBudget)
        );
        assert_eq!(
            read_reserve_cancellation(
                &[none.clone(), org("100", "50"), none.clone()],
                budget,
                true
            ),
            Verdict::Done(Reserve::BudgetChanged)
        );
        assert_eq!(
            read_reserve_cancellation(
                &[
                    none.clone(),
                    reason("ConditionalCheckFailed", None),
                    none.clone()
                ],
                budget,
                true
            ),
            Verdict::Done(Reserve::NoOrganisation)
        );
        // Every slot taken, the limits unchanged: the cap, not the budget,
        // refused it (and only for a call that asked for a slot).
        let full = {
            let mut item = org("100", "20").item().cloned().unwrap();
            item.insert("max_concurrent_calls".into(), AttributeValue::N("3".into()));
            item.insert("calls_in_flight".into(), AttributeValue::N("3".into()));
            CancellationReason::builder()
                .code("ConditionalCheckFailed")
                .set_item(Some(item))
                .build()
        };
        assert_eq!(
            read_reserve_cancellation(&[none.clone(), full.clone(), none.clone()], budget, true),
            Verdict::Done(Reserve::AtCapacity)
        );
        assert_eq!(
            read_reserve_cancellation(&[none.clone(), full, none.clone()], budget, false),
            Verdict::Done(Reserve::OverBudget)
        );
        assert!(matches!(
            read_reserve_cancellation(
                &[none.clone(), reason("TransactionConflict", None)],
                budget,
                true
            ),
            Verdict::Retry(_)
        ));
        assert!(matches!(
            read_reserve_cancellation(
                &[reason("ConditionalCheckFailed", None), none],
                budget,
                true
            ),
            Verdict::Fail(_)
        ));
    }

    #[test]
    fn statuses_only_move_forward() {
        assert!(status_rank("ringing") > status_rank("initiated"));
        assert!(status_rank("completed") > status_rank("in-progress"));
        assert_eq!(status_rank("completed"), status_rank("busy"));
        assert_eq!(status_rank("whatever"), 0);
    }

    #[test]
    fn transcripts_read_as_role_lines() {
        let lines = vec![
            TranscriptLine {
                role: "agent".into(),
                message: "Hi".into(),
                time_in_call_secs: Some(0),
            },
            TranscriptLine {
                role: "user".into(),
                message: "Hello".into(),
                time_in_call_secs: None,
            },
        ];
        assert_eq!(transcript_text(&lines), "Agent: Hi\nUser: Hello");
    }
}
