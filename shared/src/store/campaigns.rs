//! Outbound calling campaigns (issue 23), in their own table: one item per
//! campaign (`item` = `campaign`) beside one per recipient (`item` =
//! `r#<row>`, the row zero-padded so the sort key keeps the list's order).
//!
//! - `by_org` (sparse: campaigns only) lists an organisation's campaigns,
//!   newest first, without a Scan.
//! - `by_state` (`recipient_state` = `<campaign>#<state>`) lists a
//!   campaign's recipients in one state, in row order.
//!
//! A campaign is written `creating`, then its recipients, then flipped to
//! `active` by a conditional update: a crash part-way leaves a campaign
//! that never dials, and the same `Idempotency-Key` finishes it.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, ReturnValue, WriteRequest};
use aws_sdk_dynamodb::Client;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use aws_sdk_dynamodb::types::{TransactWriteItem, Update};

use super::directory::call_slots;
use super::transactions::{self, Verdict};
use super::{s, StoreError};
use crate::base::calling_window::CallingWindow;

/// The campaign's own item.
pub const CAMPAIGN_ITEM: &str = "campaign";

/// Where a campaign is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CampaignState {
    /// Recipients are still being written; never dialled.
    Creating,
    /// Dialled inside its window from `start_at`.
    Active,
    /// Held, with `paused_reason` (`user` or `budget`).
    Paused,
    /// Stopped by the organisation; its pending recipients are not called.
    Cancelled,
    /// Every recipient reached a final state.
    Finished,
}

impl CampaignState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Creating => "creating",
            Self::Active => "active",
            Self::Paused => "paused",
            Self::Cancelled => "cancelled",
            Self::Finished => "finished",
        }
    }
}

/// Where a recipient is: `pending` until a final state says why it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecipientState {
    Pending,
    Dialling,
    Completed,
    Failed,
    Skipped,
    Expired,
    Cancelled,
}

impl RecipientState {
    pub const ALL: [Self; 7] = [
        Self::Pending,
        Self::Dialling,
        Self::Completed,
        Self::Failed,
        Self::Skipped,
        Self::Expired,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Dialling => "dialling",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
            Self::Expired => "expired",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == text)
    }
}

/// How one outcome class is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryRule {
    /// Attempts in all (1 = never retried) while calls end this way.
    pub max_attempts: u32,
    /// Time between an attempt's end and the next.
    pub spacing_minutes: u32,
}

/// Retries by the outcome of the last attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    pub no_answer: RetryRule,
    pub busy: RetryRule,
    pub failed: RetryRule,
    pub voicemail: RetryRule,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            no_answer: RetryRule {
                max_attempts: 3,
                spacing_minutes: 60,
            },
            busy: RetryRule {
                max_attempts: 3,
                spacing_minutes: 15,
            },
            failed: RetryRule {
                max_attempts: 2,
                spacing_minutes: 30,
            },
            voicemail: RetryRule {
                max_attempts: 2,
                spacing_minutes: 240,
            },
        }
    }
}

/// A campaign as stored and answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Campaign {
    pub campaign_id: String,
    pub org_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub assistant_id: u64,
    /// The agenda of rows that give none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agenda: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub welcome_message: Option<String>,
    /// RFC 3339: no dial before it.
    pub start_at: String,
    /// RFC 3339: recipients still pending then end `expired`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_at: Option<String>,
    pub window: CallingWindow,
    pub max_concurrency: u32,
    pub retry: RetryPolicy,
    pub state: CampaignState,
    /// Why a paused campaign is paused: `user` or `budget`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_reason: Option<String>,
    /// Recipients stored (rows accepted).
    pub recipients: u32,
    /// Rows refused at creation under `skip_invalid`.
    #[serde(default)]
    pub skipped_rows: u32,
    /// Recipients by state.
    #[serde(default)]
    pub counts: BTreeMap<String, u32>,
    /// Calls of this campaign placed or being placed and not yet settled:
    /// each holds one of `max_concurrency`'s slots.
    #[serde(default)]
    pub in_flight: u32,
    pub created_at: String,
    pub updated_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// SHA-256 of the request that created it: the same `Idempotency-Key`
    /// with another request is refused, never answered with this one.
    #[serde(default, skip_serializing)]
    pub request_hash: String,
}

/// One attempt's call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptCall {
    pub attempt: u32,
    pub call_ref: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_secs: Option<u64>,
}

/// One row of a campaign.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recipient {
    pub campaign_id: String,
    /// 1-based, as in the request.
    pub row: u32,
    /// E.164.
    pub phone_number: String,
    /// Every zone the recipient may be in; the window must hold in all.
    pub zones: Vec<String>,
    /// Whether `zones` came from the row (`row`) or the number (`number`).
    pub zone_source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agenda: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub welcome_message: Option<String>,
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub agent_variables: serde_json::Map<String, serde_json::Value>,
    pub state: RecipientState,
    /// Why it ended (or was skipped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub calls: Vec<AttemptCall>,
    pub updated_at: String,
    /// When the engine next looks at it (unix seconds): a pending
    /// recipient's next dial, a dialling one's check that its call exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_at: Option<i64>,
    /// The call ref of the attempt being dialled (server-derived from the
    /// campaign, row and attempt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dial_call_ref: Option<String>,
}

/// The first write of a campaign.
#[derive(Debug, Clone, PartialEq)]
pub enum Begun {
    Created,
    /// A campaign of this id exists (the same `Idempotency-Key`).
    Exists(Box<Campaign>),
}

/// A state change's outcome.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    Applied(Box<Campaign>),
    /// The campaign is in a state the change does not start from.
    Refused(Box<Campaign>),
    Missing,
}

/// A page and the cursor of the next, if any.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// A claim's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    Claimed,
    /// The campaign holds `max_concurrency` calls, or is no longer active.
    CampaignFull,
    /// The organisation holds its `max_concurrent_calls`.
    OrganisationFull,
    /// The recipient is not as read (another tick claimed it).
    Stale,
}

/// Where an attempt leaves its recipient.
#[derive(Debug, Clone, PartialEq)]
pub struct Settlement {
    pub state: RecipientState,
    pub reason: Option<String>,
    /// Attempts made, as the recipient keeps them (one less for a claim
    /// given back unplaced).
    pub attempts: u32,
    /// A pending recipient's next dial.
    pub due_at: Option<i64>,
    /// The call the attempt made, if one was placed.
    pub call: Option<AttemptCall>,
}

/// The one partition of the `ticking` index.
const TICKING: &str = "1";

#[async_trait]
pub trait CampaignStore: Send + Sync {
    /// Writes `campaign` (state `creating`) unless its id exists.
    async fn begin(&self, campaign: &Campaign) -> Result<Begun, StoreError>;
    /// Writes the recipients of a campaign still `creating` (again, on a
    /// retry: the same rows overwrite themselves).
    async fn put_recipients(&self, recipients: &[Recipient]) -> Result<(), StoreError>;
    /// `creating` → `active`, with the counts its recipients start with.
    async fn activate(
        &self,
        campaign_id: &str,
        counts: &BTreeMap<String, u32>,
    ) -> Result<Transition, StoreError>;
    async fn get(&self, campaign_id: &str) -> Result<Option<Campaign>, StoreError>;
    /// `org_id`'s campaigns, newest first.
    async fn list(
        &self,
        org_id: &str,
        limit: i32,
        after: Option<&str>,
    ) -> Result<Page<Campaign>, StoreError>;
    /// A campaign's recipients in row order, all or in one state, after row `after`.
    async fn recipients(
        &self,
        campaign_id: &str,
        state: Option<RecipientState>,
        limit: i32,
        after: Option<u32>,
    ) -> Result<Page<Recipient>, StoreError>;
    /// Moves the campaign from one of `from` to `to` (with `reason` for a
    /// pause), in one conditional write.
    async fn transition(
        &self,
        campaign_id: &str,
        from: &[CampaignState],
        to: CampaignState,
        reason: Option<&str>,
    ) -> Result<Transition, StoreError>;

    // The engine's (`flows::campaigns::engine`).

    /// Campaigns with work for the tick (active ones, and cancelled ones
    /// whose pending rows are still to be closed), at most `limit`, from a
    /// random place so every campaign gets its turn.
    async fn ticking(&self, limit: i32) -> Result<Vec<Campaign>, StoreError>;
    /// A campaign's recipients due at `now`, earliest first: pending ones
    /// to dial, dialling ones whose call is to be checked.
    async fn due(
        &self,
        campaign_id: &str,
        now: i64,
        limit: i32,
    ) -> Result<Vec<Recipient>, StoreError>;
    async fn recipient(&self, campaign_id: &str, row: u32)
        -> Result<Option<Recipient>, StoreError>;
    /// Takes one of the campaign's slots and one of its organisation's and
    /// marks the recipient `dialling` its next attempt as `call_ref` (due
    /// for a check at `check_at`), in one transaction.
    async fn claim(
        &self,
        campaign: &Campaign,
        recipient: &Recipient,
        call_ref: &str,
        check_at: i64,
    ) -> Result<Claim, StoreError>;
    /// Moves a recipient's due time, if it is still as read.
    async fn reschedule(&self, recipient: &Recipient, due_at: i64) -> Result<bool, StoreError>;
    /// Ends the attempt `call_ref`: the recipient leaves `dialling` for
    /// `to` and both slots are given back, in one transaction, once (false
    /// when it was settled before).
    async fn settle(
        &self,
        campaign: &Campaign,
        recipient: &Recipient,
        call_ref: &str,
        to: &Settlement,
    ) -> Result<bool, StoreError>;
    /// A pending recipient ends without a dial (`expired`, `cancelled`).
    async fn close_pending(
        &self,
        recipient: &Recipient,
        to: RecipientState,
        reason: &str,
    ) -> Result<bool, StoreError>;
    /// An active campaign with nothing pending or dialling is finished; a
    /// cancelled one leaves the tick.
    async fn wind_up(&self, campaign: &Campaign) -> Result<bool, StoreError>;
    /// Notes the first placed call.
    async fn mark_started(&self, campaign_id: &str) -> Result<(), StoreError>;
}

pub struct DynamoCampaignStore {
    pub client: Client,
    /// `CAMPAIGNS_TABLE`.
    pub table: String,
    /// `ORGANISATIONS_TABLE`: each organisation's count of campaign calls
    /// in flight, bounded by its `max_concurrent_calls`.
    pub organisations_table: String,
}

/// The sort key of a recipient's row.
pub fn recipient_item(row: u32) -> String {
    format!("r#{row:06}")
}

/// The call ref of (campaign, row, attempt): the same for every delivery
/// and tick, so one attempt can only ever be one call.
pub fn attempt_call_ref(campaign_id: &str, row: u32, attempt: u32) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{campaign_id}#{row}#{attempt}").as_bytes());
    format!("oc_{}", &hex::encode(digest)[..32])
}

fn recipient_state_key(campaign_id: &str, state: RecipientState) -> String {
    format!("{campaign_id}#{}", state.as_str())
}

/// `by_org`'s sort key: creation time, then id, so equal times stay apart.
fn created_key(campaign: &Campaign) -> String {
    format!("{}#{}", campaign.created_at, campaign.campaign_id)
}

fn campaign_item(campaign: &Campaign) -> Result<HashMap<String, AttributeValue>, StoreError> {
    let mut item: HashMap<String, AttributeValue> = serde_dynamo::to_item(campaign)?;
    // Kept on the item (not serialised to clients): the idempotency check.
    item.insert("request_hash".into(), s(&campaign.request_hash));
    item.insert("item".into(), s(CAMPAIGN_ITEM));
    item.insert("org_campaigns".into(), s(&campaign.org_id));
    item.insert("created_key".into(), s(&created_key(campaign)));
    Ok(item)
}

fn campaign_of(item: HashMap<String, AttributeValue>) -> Result<Campaign, StoreError> {
    let hash = item
        .get("request_hash")
        .and_then(|v| v.as_s().ok())
        .cloned()
        .unwrap_or_default();
    let mut campaign: Campaign = serde_dynamo::from_item(item)?;
    campaign.request_hash = hash;
    Ok(campaign)
}

fn recipient_item_of(recipient: &Recipient) -> Result<HashMap<String, AttributeValue>, StoreError> {
    let mut item: HashMap<String, AttributeValue> = serde_dynamo::to_item(recipient)?;
    item.insert("item".into(), s(&recipient_item(recipient.row)));
    item.insert(
        "recipient_state".into(),
        s(&recipient_state_key(
            &recipient.campaign_id,
            recipient.state,
        )),
    );
    if recipient.due_at.is_some() {
        item.insert("due_campaign".into(), s(&recipient.campaign_id));
    }
    Ok(item)
}

fn num(value: i64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// A transaction item built, its missing parts an error rather than a panic.
fn built<T, E: std::fmt::Display>(result: Result<T, E>) -> Result<T, StoreError> {
    result.map_err(|e| StoreError::Dynamo(e.to_string()))
}

/// BatchWriteItem takes 25 requests; a few go out at once so 10,000 rows
/// are written in seconds (`super::batch_write` sends unprocessed ones again).
const BATCH: usize = 25;
const BATCHES_AT_ONCE: usize = 8;

impl DynamoCampaignStore {
    async fn read_campaign(&self, campaign_id: &str) -> Result<Option<Campaign>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("campaign_id", s(campaign_id))
            .key("item", s(CAMPAIGN_ITEM))
            .consistent_read(true)
            .send()
            .await?;
        out.item.map(campaign_of).transpose()
    }

    /// A refused conditional write's outcome, from the item it returned
    /// (DynamoDB Local returns none: read it).
    async fn refused(
        &self,
        campaign_id: &str,
        old: Option<HashMap<String, AttributeValue>>,
    ) -> Result<Transition, StoreError> {
        let current = match old {
            Some(item) => Some(campaign_of(item)?),
            None => self.read_campaign(campaign_id).await?,
        };
        Ok(match current {
            Some(campaign) => Transition::Refused(Box::new(campaign)),
            None => Transition::Missing,
        })
    }
}

#[async_trait]
impl CampaignStore for DynamoCampaignStore {
    async fn begin(&self, campaign: &Campaign) -> Result<Begun, StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(campaign_item(campaign)?))
            .condition_expression("attribute_not_exists(campaign_id)")
            .return_values_on_condition_check_failure(
                aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure::AllOld,
            )
            .send()
            .await;
        match result {
            Ok(_) => Ok(Begun::Created),
            Err(err) => {
                let old = match err.as_service_error() {
                    Some(
                        aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(
                            failed,
                        ),
                    ) => failed.item.clone(),
                    _ => return Err(err.into()),
                };
                match self.refused(&campaign.campaign_id, old).await? {
                    Transition::Refused(existing) | Transition::Applied(existing) => {
                        Ok(Begun::Exists(existing))
                    }
                    Transition::Missing => Err(StoreError::Dynamo(
                        "campaign write refused but no campaign found".into(),
                    )),
                }
            }
        }
    }

    async fn put_recipients(&self, recipients: &[Recipient]) -> Result<(), StoreError> {
        let mut batches = Vec::with_capacity(recipients.len().div_ceil(BATCH));
        for chunk in recipients.chunks(BATCH) {
            let mut requests = Vec::with_capacity(chunk.len());
            for recipient in chunk {
                let put = PutRequest::builder()
                    .set_item(Some(recipient_item_of(recipient)?))
                    .build()
                    .map_err(|e| StoreError::Dynamo(e.to_string()))?;
                requests.push(WriteRequest::builder().put_request(put).build());
            }
            batches.push(requests);
        }
        stream::iter(batches)
            .map(|batch| {
                super::batch_write(&self.client, &self.table, batch, "campaign recipients")
            })
            .buffer_unordered(BATCHES_AT_ONCE)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    async fn activate(
        &self,
        campaign_id: &str,
        counts: &BTreeMap<String, u32>,
    ) -> Result<Transition, StoreError> {
        let counts: AttributeValue = serde_dynamo::to_attribute_value(counts)?;
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("campaign_id", s(campaign_id))
            .key("item", s(CAMPAIGN_ITEM))
            .update_expression(
                "SET #state = :active, #counts = :counts, updated_at = :now, ticking = :ticking",
            )
            .expression_attribute_values(":ticking", s(TICKING))
            .condition_expression("#state = :creating")
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#counts", "counts")
            .expression_attribute_values(":active", s(CampaignState::Active.as_str()))
            .expression_attribute_values(":creating", s(CampaignState::Creating.as_str()))
            .expression_attribute_values(":counts", counts)
            .expression_attribute_values(":now", s(&crate::base::time::now_rfc3339()))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(
                aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure::AllOld,
            )
            .send()
            .await;
        settle_update(self, campaign_id, result).await
    }

    async fn get(&self, campaign_id: &str) -> Result<Option<Campaign>, StoreError> {
        self.read_campaign(campaign_id).await
    }

    async fn ticking(&self, limit: i32) -> Result<Vec<Campaign>, StoreError> {
        // From a random id onwards, then from the start: every campaign is
        // reached however many there are.
        let pivot = format!("cmp_{}", uuid::Uuid::new_v4().simple());
        let mut campaigns = Vec::new();
        for from in [Some(pivot.as_str()), None] {
            let mut query = self
                .client
                .query()
                .table_name(&self.table)
                .index_name("ticking")
                .key_condition_expression("ticking = :t")
                .expression_attribute_values(":t", s(TICKING))
                .limit(limit - i32::try_from(campaigns.len()).unwrap_or(limit));
            query = match from {
                Some(pivot) => query
                    .key_condition_expression("ticking = :t AND campaign_id > :pivot")
                    .expression_attribute_values(":pivot", s(pivot)),
                None => query
                    .key_condition_expression("ticking = :t AND campaign_id <= :pivot")
                    .expression_attribute_values(":pivot", s(&pivot)),
            };
            let out = query.send().await?;
            for item in out.items.unwrap_or_default() {
                campaigns.push(campaign_of(item)?);
            }
            if campaigns.len() >= usize::try_from(limit).unwrap_or(0) {
                break;
            }
        }
        Ok(campaigns)
    }

    async fn due(
        &self,
        campaign_id: &str,
        now: i64,
        limit: i32,
    ) -> Result<Vec<Recipient>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name("due")
            .key_condition_expression("due_campaign = :c AND due_at <= :now")
            .expression_attribute_values(":c", s(campaign_id))
            .expression_attribute_values(":now", AttributeValue::N(now.to_string()))
            .limit(limit)
            .send()
            .await?;
        out.items
            .unwrap_or_default()
            .into_iter()
            .map(|item| serde_dynamo::from_item(item).map_err(StoreError::from))
            .collect()
    }

    async fn recipient(
        &self,
        campaign_id: &str,
        row: u32,
    ) -> Result<Option<Recipient>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("campaign_id", s(campaign_id))
            .key("item", s(&recipient_item(row)))
            .consistent_read(true)
            .send()
            .await?;
        out.item
            .map(|item| serde_dynamo::from_item(item).map_err(StoreError::from))
            .transpose()
    }

    async fn claim(
        &self,
        campaign: &Campaign,
        recipient: &Recipient,
        call_ref: &str,
        check_at: i64,
    ) -> Result<Claim, StoreError> {
        let now = crate::base::time::now_rfc3339();
        let slot = built(
            Update::builder()
                .table_name(&self.table)
                .key("campaign_id", s(&campaign.campaign_id))
                .key("item", s(CAMPAIGN_ITEM))
                .update_expression(
                    "SET in_flight = if_not_exists(in_flight, :zero) + :one, \
                     #counts.pending = #counts.pending - :one, \
                     #counts.dialling = if_not_exists(#counts.dialling, :zero) + :one, \
                     updated_at = :now",
                )
                .condition_expression(
                    "#state = :active AND (attribute_not_exists(in_flight) \
                     OR in_flight < max_concurrency)",
                )
                .expression_attribute_names("#counts", "counts")
                .expression_attribute_names("#state", "state")
                .expression_attribute_values(":zero", num(0))
                .expression_attribute_values(":one", num(1))
                .expression_attribute_values(":active", s(CampaignState::Active.as_str()))
                .expression_attribute_values(":now", s(&now))
                .build(),
        )?;
        let org_slot = built(
            Update::builder()
                .table_name(&self.organisations_table)
                .key("org_id", s(&campaign.org_id))
                .update_expression(format!("SET {}", call_slots::TAKE))
                .condition_expression(format!("attribute_exists(org_id) AND {}", call_slots::FREE))
                .set_expression_attribute_values(Some(
                    call_slots::values_in(&[call_slots::TAKE, call_slots::FREE])
                        .into_iter()
                        .collect(),
                ))
                .build(),
        )?;
        let state = RecipientState::Dialling;
        let dial = built(
            Update::builder()
                .table_name(&self.table)
                .key("campaign_id", s(&campaign.campaign_id))
                .key("item", s(&recipient_item(recipient.row)))
                .update_expression(
                    "SET #state = :dialling, recipient_state = :rs, attempts = :next, \
                     dial_call_ref = :ref, due_at = :check, due_campaign = :c, updated_at = :now",
                )
                .condition_expression("#state = :pending AND attempts = :attempts")
                .expression_attribute_names("#state", "state")
                .expression_attribute_values(":dialling", s(state.as_str()))
                .expression_attribute_values(
                    ":rs",
                    s(&recipient_state_key(&campaign.campaign_id, state)),
                )
                .expression_attribute_values(":next", num(i64::from(recipient.attempts) + 1))
                .expression_attribute_values(":attempts", num(i64::from(recipient.attempts)))
                .expression_attribute_values(":ref", s(call_ref))
                .expression_attribute_values(":check", num(check_at))
                .expression_attribute_values(":c", s(&campaign.campaign_id))
                .expression_attribute_values(":now", s(&now))
                .expression_attribute_values(":pending", s(RecipientState::Pending.as_str()))
                .build(),
        )?;
        let items = vec![
            TransactWriteItem::builder().update(slot).build(),
            TransactWriteItem::builder().update(org_slot).build(),
            TransactWriteItem::builder().update(dial).build(),
        ];
        transactions::transact(
            &self.client,
            items,
            "campaign claim",
            Claim::Claimed,
            |reasons| {
                if transactions::busy(reasons) {
                    return Verdict::Retry(transactions::codes(reasons));
                }
                let failed = |i: usize| {
                    reasons
                        .get(i)
                        .is_some_and(|r| r.code() == Some("ConditionalCheckFailed"))
                };
                if failed(2) {
                    Verdict::Done(Claim::Stale)
                } else if failed(0) {
                    Verdict::Done(Claim::CampaignFull)
                } else if failed(1) {
                    Verdict::Done(Claim::OrganisationFull)
                } else {
                    Verdict::Fail(transactions::codes(reasons))
                }
            },
        )
        .await
    }

    async fn reschedule(&self, recipient: &Recipient, due_at: i64) -> Result<bool, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("campaign_id", s(&recipient.campaign_id))
            .key("item", s(&recipient_item(recipient.row)))
            .update_expression("SET due_at = :due, due_campaign = :c")
            .condition_expression("#state = :state AND attempts = :attempts")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":due", num(due_at))
            .expression_attribute_values(":c", s(&recipient.campaign_id))
            .expression_attribute_values(":state", s(recipient.state.as_str()))
            .expression_attribute_values(":attempts", num(i64::from(recipient.attempts)))
            .send()
            .await;
        super::applied(result)
    }

    async fn settle(
        &self,
        campaign: &Campaign,
        recipient: &Recipient,
        call_ref: &str,
        to: &Settlement,
    ) -> Result<bool, StoreError> {
        let now = crate::base::time::now_rfc3339();
        let mut sets = vec![
            "#state = :to",
            "recipient_state = :rs",
            "attempts = :attempts",
            "updated_at = :now",
        ];
        let mut removes = vec!["dial_call_ref"];
        let mut update = Update::builder()
            .table_name(&self.table)
            .key("campaign_id", s(&campaign.campaign_id))
            .key("item", s(&recipient_item(recipient.row)))
            .condition_expression("#state = :dialling AND dial_call_ref = :ref")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":to", s(to.state.as_str()))
            .expression_attribute_values(
                ":rs",
                s(&recipient_state_key(&campaign.campaign_id, to.state)),
            )
            .expression_attribute_values(":attempts", num(i64::from(to.attempts)))
            .expression_attribute_values(":now", s(&now))
            .expression_attribute_values(":dialling", s(RecipientState::Dialling.as_str()))
            .expression_attribute_values(":ref", s(call_ref));
        match &to.reason {
            Some(reason) => {
                sets.push("reason = :reason");
                update = update.expression_attribute_values(":reason", s(reason));
            }
            None => removes.push("reason"),
        }
        match to.due_at {
            Some(due) => {
                sets.push("due_at = :due");
                sets.push("due_campaign = :c");
                update = update
                    .expression_attribute_values(":due", num(due))
                    .expression_attribute_values(":c", s(&campaign.campaign_id));
            }
            None => {
                removes.push("due_at");
                removes.push("due_campaign");
            }
        }
        if let Some(call) = &to.call {
            sets.push("calls = list_append(if_not_exists(calls, :empty), :call)");
            update = update
                .expression_attribute_values(":empty", AttributeValue::L(Vec::new()))
                .expression_attribute_values(
                    ":call",
                    AttributeValue::L(vec![serde_dynamo::to_attribute_value(call)?]),
                );
        }
        let recipient_update = built(
            update
                .update_expression(format!(
                    "SET {} REMOVE {}",
                    sets.join(", "),
                    removes.join(", ")
                ))
                .build(),
        )?;
        let slot = built(
            Update::builder()
                .table_name(&self.table)
                .key("campaign_id", s(&campaign.campaign_id))
                .key("item", s(CAMPAIGN_ITEM))
                .update_expression(
                    "SET in_flight = in_flight - :one, #counts.dialling = #counts.dialling - :one, \
                     #counts.#to = if_not_exists(#counts.#to, :zero) + :one, updated_at = :now",
                )
                .condition_expression("attribute_exists(campaign_id)")
                .expression_attribute_names("#counts", "counts")
                .expression_attribute_names("#to", to.state.as_str())
                .expression_attribute_values(":zero", num(0))
                .expression_attribute_values(":one", num(1))
                .expression_attribute_values(":now", s(&now))
                .build(),
        )?;
        let org_slot = built(
            Update::builder()
                .table_name(&self.organisations_table)
                .key("org_id", s(&campaign.org_id))
                .update_expression(format!("SET {}", call_slots::RELEASE))
                .condition_expression(call_slots::HELD)
                .set_expression_attribute_values(Some(
                    call_slots::values_in(&[call_slots::RELEASE, call_slots::HELD])
                        .into_iter()
                        .collect(),
                ))
                .build(),
        )?;
        let items = vec![
            TransactWriteItem::builder()
                .update(recipient_update)
                .build(),
            TransactWriteItem::builder().update(slot).build(),
            TransactWriteItem::builder().update(org_slot).build(),
        ];
        transactions::transact(&self.client, items, "campaign settle", true, |reasons| {
            if transactions::busy(reasons) {
                return Verdict::Retry(transactions::codes(reasons));
            }
            match reasons.first().and_then(|r| r.code()) {
                // Settled before (a redelivery, or the other source of its end).
                Some("ConditionalCheckFailed") => Verdict::Done(false),
                _ => Verdict::Fail(transactions::codes(reasons)),
            }
        })
        .await
    }

    async fn close_pending(
        &self,
        recipient: &Recipient,
        to: RecipientState,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let now = crate::base::time::now_rfc3339();
        let close = built(
            Update::builder()
                .table_name(&self.table)
                .key("campaign_id", s(&recipient.campaign_id))
                .key("item", s(&recipient_item(recipient.row)))
                .update_expression(
                    "SET #state = :to, recipient_state = :rs, reason = :reason, updated_at = :now \
                     REMOVE due_at, due_campaign",
                )
                .condition_expression("#state = :pending AND attempts = :attempts")
                .expression_attribute_names("#state", "state")
                .expression_attribute_values(":to", s(to.as_str()))
                .expression_attribute_values(
                    ":rs",
                    s(&recipient_state_key(&recipient.campaign_id, to)),
                )
                .expression_attribute_values(":reason", s(reason))
                .expression_attribute_values(":now", s(&now))
                .expression_attribute_values(":pending", s(RecipientState::Pending.as_str()))
                .expression_attribute_values(":attempts", num(i64::from(recipient.attempts)))
                .build(),
        )?;
        let count = built(
            Update::builder()
                .table_name(&self.table)
                .key("campaign_id", s(&recipient.campaign_id))
                .key("item", s(CAMPAIGN_ITEM))
                .update_expression(
                    "SET #counts.pending = #counts.pending - :one, \
                     #counts.#to = if_not_exists(#counts.#to, :zero) + :one, updated_at = :now",
                )
                .expression_attribute_names("#counts", "counts")
                .expression_attribute_names("#to", to.as_str())
                .expression_attribute_values(":zero", num(0))
                .expression_attribute_values(":one", num(1))
                .expression_attribute_values(":now", s(&now))
                .build(),
        )?;
        let items = vec![
            TransactWriteItem::builder().update(close).build(),
            TransactWriteItem::builder().update(count).build(),
        ];
        transactions::transact(&self.client, items, "campaign close", true, |reasons| {
            if transactions::busy(reasons) {
                return Verdict::Retry(transactions::codes(reasons));
            }
            match reasons.first().and_then(|r| r.code()) {
                Some("ConditionalCheckFailed") => Verdict::Done(false),
                _ => Verdict::Fail(transactions::codes(reasons)),
            }
        })
        .await
    }

    async fn wind_up(&self, campaign: &Campaign) -> Result<bool, StoreError> {
        let idle = "#counts.pending = :zero AND (attribute_not_exists(#counts.dialling) \
                    OR #counts.dialling = :zero)";
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("campaign_id", s(&campaign.campaign_id))
            .key("item", s(CAMPAIGN_ITEM))
            .expression_attribute_names("#counts", "counts")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":zero", num(0))
            .expression_attribute_values(":state", s(campaign.state.as_str()));
        let update = match campaign.state {
            CampaignState::Active => update
                .update_expression(
                    "SET #state = :finished, finished_at = :now, updated_at = :now REMOVE ticking",
                )
                .expression_attribute_values(":finished", s(CampaignState::Finished.as_str()))
                .expression_attribute_values(":now", s(&crate::base::time::now_rfc3339())),
            _ => update.update_expression("REMOVE ticking"),
        };
        let result = update
            .condition_expression(format!("#state = :state AND {idle}"))
            .send()
            .await;
        super::applied(result)
    }

    async fn mark_started(&self, campaign_id: &str) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("campaign_id", s(campaign_id))
            .key("item", s(CAMPAIGN_ITEM))
            .update_expression("SET started_at = if_not_exists(started_at, :now)")
            .condition_expression("attribute_exists(campaign_id)")
            .expression_attribute_values(":now", s(&crate::base::time::now_rfc3339()))
            .send()
            .await?;
        Ok(())
    }

    async fn list(
        &self,
        org_id: &str,
        limit: i32,
        after: Option<&str>,
    ) -> Result<Page<Campaign>, StoreError> {
        let mut query = self
            .client
            .query()
            .table_name(&self.table)
            .index_name("by_org")
            .key_condition_expression("org_campaigns = :org")
            .expression_attribute_values(":org", s(org_id))
            .scan_index_forward(false)
            .limit(limit);
        if let Some(after) = after {
            // The cursor is the last campaign's `created_key`, which ends with its id.
            let campaign_id = after.rsplit('#').next().unwrap_or_default();
            query = query.set_exclusive_start_key(Some(HashMap::from([
                ("org_campaigns".to_string(), s(org_id)),
                ("created_key".to_string(), s(after)),
                ("campaign_id".to_string(), s(campaign_id)),
                ("item".to_string(), s(CAMPAIGN_ITEM)),
            ])));
        }
        let out = query.send().await?;
        let more = out.last_evaluated_key.is_some();
        let items = out
            .items
            .unwrap_or_default()
            .into_iter()
            .map(campaign_of)
            .collect::<Result<Vec<_>, _>>()?;
        let next = if more {
            items.last().map(created_key)
        } else {
            None
        };
        Ok(Page { items, next })
    }

    async fn recipients(
        &self,
        campaign_id: &str,
        state: Option<RecipientState>,
        limit: i32,
        after: Option<u32>,
    ) -> Result<Page<Recipient>, StoreError> {
        let mut query = self.client.query().table_name(&self.table).limit(limit);
        let mut start = HashMap::new();
        if let Some(row) = after {
            start.insert("campaign_id".to_string(), s(campaign_id));
            start.insert("item".to_string(), s(&recipient_item(row)));
        }
        query = match state {
            Some(state) => {
                let key = recipient_state_key(campaign_id, state);
                if after.is_some() {
                    start.insert("recipient_state".to_string(), s(&key));
                }
                query
                    .index_name("by_state")
                    .key_condition_expression("recipient_state = :state")
                    .expression_attribute_values(":state", s(&key))
            }
            None => query
                .key_condition_expression("campaign_id = :id AND begins_with(#item, :rows)")
                .expression_attribute_names("#item", "item")
                .expression_attribute_values(":id", s(campaign_id))
                .expression_attribute_values(":rows", s("r#")),
        };
        if !start.is_empty() {
            query = query.set_exclusive_start_key(Some(start));
        }
        let out = query.send().await?;
        let more = out.last_evaluated_key.is_some();
        let items = out
            .items
            .unwrap_or_default()
            .into_iter()
            .map(|item| serde_dynamo::from_item(item).map_err(StoreError::from))
            .collect::<Result<Vec<Recipient>, _>>()?;
        let next = if more {
            items.last().map(|r| r.row.to_string())
        } else {
            None
        };
        Ok(Page { items, next })
    }

    async fn transition(
        &self,
        campaign_id: &str,
        from: &[CampaignState],
        to: CampaignState,
        reason: Option<&str>,
    ) -> Result<Transition, StoreError> {
        let now = crate::base::time::now_rfc3339();
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("campaign_id", s(campaign_id))
            .key("item", s(CAMPAIGN_ITEM))
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":to", s(to.as_str()))
            .expression_attribute_values(":now", s(&now));
        let mut allowed = Vec::with_capacity(from.len());
        for (i, state) in from.iter().enumerate() {
            let name = format!(":from{i}");
            update = update.expression_attribute_values(&name, s(state.as_str()));
            allowed.push(name);
        }
        let mut set = "SET #state = :to, updated_at = :now".to_string();
        let mut remove = Vec::new();
        match reason {
            Some(reason) => {
                set.push_str(", paused_reason = :reason");
                update = update.expression_attribute_values(":reason", s(reason));
            }
            None => remove.push("paused_reason"),
        }
        if matches!(to, CampaignState::Cancelled | CampaignState::Finished) {
            set.push_str(", finished_at = :now");
        }
        // The tick looks at active campaigns, and at cancelled ones until
        // their pending rows are closed.
        if matches!(to, CampaignState::Active | CampaignState::Cancelled) {
            set.push_str(", ticking = :ticking");
            update = update.expression_attribute_values(":ticking", s(TICKING));
        } else {
            remove.push("ticking");
        }
        let expression = if remove.is_empty() {
            set
        } else {
            format!("{set} REMOVE {}", remove.join(", "))
        };
        let result = update
            .update_expression(expression)
            .condition_expression(format!(
                "attribute_exists(campaign_id) AND #state IN ({})",
                allowed.join(", ")
            ))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(
                aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure::AllOld,
            )
            .send()
            .await;
        settle_update(self, campaign_id, result).await
    }
}

/// An update's outcome: the new campaign, or the one that refused it.
async fn settle_update<R: std::fmt::Debug>(
    store: &DynamoCampaignStore,
    campaign_id: &str,
    result: Result<
        aws_sdk_dynamodb::operation::update_item::UpdateItemOutput,
        aws_sdk_dynamodb::error::SdkError<
            aws_sdk_dynamodb::operation::update_item::UpdateItemError,
            R,
        >,
    >,
) -> Result<Transition, StoreError> {
    match result {
        Ok(out) => match out.attributes {
            Some(item) => Ok(Transition::Applied(Box::new(campaign_of(item)?))),
            None => Err(StoreError::Malformed("update returned no campaign".into())),
        },
        Err(err) => {
            let old = match err.as_service_error() {
                Some(
                    aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(
                        failed,
                    ),
                ) => failed.item.clone(),
                _ => return Err(err.into()),
            };
            store.refused(campaign_id, old).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_sort_in_request_order() {
        assert!(recipient_item(9) < recipient_item(10));
        assert!(recipient_item(999) < recipient_item(10_000));
        assert_eq!(recipient_item(42), "r#000042");
    }

    #[test]
    fn recipient_states_round_trip_their_names() {
        for state in RecipientState::ALL {
            assert_eq!(RecipientState::parse(state.as_str()), Some(state));
        }
        assert_eq!(RecipientState::parse("Pending"), None);
    }
}
