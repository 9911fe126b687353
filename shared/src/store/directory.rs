//! Assistants and the organisations whose monthly budget limits them
//! (seeds 003 and 004).
//!
//! Assistants live in the assistants table (numeric ids, as seed 003's
//! clients send them); organisations in the organisations table, with this
//! month's usage as an atomic counter attribute `usage#YYYY-MM` on the same
//! item.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use aws_sdk_dynamodb::Client;
use serde::{Deserialize, Serialize};

use super::{condition_failed, patch_update, s, StoreError};

/// Item of the stats table that hands out assistant ids.
const ASSISTANT_SEQUENCE: &str = "sequence#assistant";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    Twilio,
    Elevenlabs,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assistant {
    pub assistant_id: u64,
    pub org_id: String,
    pub name: String,
    pub provider: Provider,
    /// Caller id for Twilio calls (E.164).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elevenlabs_agent_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elevenlabs_phone_number_id: Option<String>,
    /// `wss://` URL Twilio streams the call's media to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_stream_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_welcome_message: Option<String>,
    /// The longest call this assistant may make: what a call reserves on the
    /// organisation's budget, and Twilio's `TimeLimit`.
    #[serde(default = "default_max_call_seconds")]
    pub max_call_seconds: u64,
    pub is_active: bool,
    pub created_at: String,
    pub updated_at: String,
}

pub const DEFAULT_MAX_CALL_SECONDS: u64 = 600;

fn default_max_call_seconds() -> u64 {
    DEFAULT_MAX_CALL_SECONDS
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Organisation {
    pub org_id: String,
    pub name: String,
    /// Call seconds included per calendar month (UTC).
    pub monthly_limit_seconds: u64,
    /// Extra seconds bought on top of the plan.
    #[serde(default)]
    pub topup_seconds: u64,
    /// Most calls of this organisation in flight at once: its single calls
    /// and all its campaigns' together. A campaign's `max_concurrency` is
    /// bounded by it.
    #[serde(default = "default_max_concurrent_calls")]
    pub max_concurrent_calls: u32,
    /// `/outbound-calls` defaults for this organisation's ElevenLabs calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elevenlabs_agent_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elevenlabs_phone_number_id: Option<String>,
    /// Caller ids (E.164) this organisation owns: `/phone/call` and
    /// `/whatsapp/call` place calls from no other number.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phone_numbers: Vec<String>,
    pub created_at: String,
    pub updated_at: String,
    /// Seconds of calls that ended this month (read-only; filled on read).
    #[serde(default, skip_deserializing)]
    pub usage_this_month_seconds: u64,
    /// Seconds held for calls placed this month that have not ended yet
    /// (read-only; filled on read).
    #[serde(default, skip_deserializing)]
    pub reserved_seconds: u64,
    /// What a new call may still reserve this month (read-only; filled on read).
    #[serde(default, skip_deserializing)]
    pub remaining_seconds: u64,
}

/// An organisation's concurrency cap until an admin sets another.
pub const DEFAULT_MAX_CONCURRENT_CALLS: u32 = 10;
/// The highest cap an admin may set.
pub const MAX_CONCURRENT_CALLS_LIMIT: u32 = 1000;

pub fn default_max_concurrent_calls() -> u32 {
    DEFAULT_MAX_CONCURRENT_CALLS
}

/// The organisation item's count of its calls in flight (single and
/// campaign calls alike), bounded by `max_concurrent_calls`. A slot is
/// taken in the transaction that records a call (or claims a campaign
/// attempt) and given back in the one that settles it, so it is released
/// exactly once.
pub mod call_slots {
    /// Taken: add to an update expression's SET clause, with `:slot_one`,
    /// `:slot_zero` and `:slot_cap` (see [`values`]).
    pub const TAKE: &str =
        "calls_in_flight = if_not_exists(calls_in_flight, :slot_zero) + :slot_one";
    /// The condition under which a slot may be taken; an organisation
    /// written before caps existed has the default cap.
    pub const FREE: &str = "(attribute_not_exists(calls_in_flight) \
         OR calls_in_flight < max_concurrent_calls \
         OR (attribute_not_exists(max_concurrent_calls) AND calls_in_flight < :slot_cap))";
    /// A slot is held: the guard of a release that must never go below zero.
    pub const HELD: &str = "calls_in_flight > :slot_zero";
    /// Given back: add to an update expression's SET clause, with `:slot_one`.
    pub const RELEASE: &str =
        "calls_in_flight = if_not_exists(calls_in_flight, :slot_one) - :slot_one";

    /// The values of the placeholders that `expressions` use (DynamoDB
    /// refuses values an expression does not use).
    pub fn values_in(
        expressions: &[&str],
    ) -> Vec<(String, aws_sdk_dynamodb::types::AttributeValue)> {
        use aws_sdk_dynamodb::types::AttributeValue::N;
        [
            (":slot_one", 1),
            (":slot_zero", 0),
            (":slot_cap", super::DEFAULT_MAX_CONCURRENT_CALLS),
        ]
        .into_iter()
        .filter(|(name, _)| expressions.iter().any(|e| e.contains(name)))
        .map(|(name, value)| (name.to_string(), N(value.to_string())))
        .collect()
    }

    /// Whether an organisation item (as a failed condition returned it)
    /// has every slot taken.
    pub fn full(
        item: &std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>,
    ) -> bool {
        let number = |name: &str| {
            item.get(name)
                .and_then(|v| v.as_n().ok())
                .and_then(|v| v.parse::<u64>().ok())
        };
        let cap = number("max_concurrent_calls")
            .unwrap_or(u64::from(super::DEFAULT_MAX_CONCURRENT_CALLS));
        number("calls_in_flight").is_some_and(|n| n >= cap)
    }
}

impl Organisation {
    /// Seconds a month may hold: the plan plus top-ups.
    pub fn allowance(&self) -> u64 {
        self.monthly_limit_seconds
            .saturating_add(self.topup_seconds)
    }
}

/// The month (UTC) a call placed at `at` is counted in, as `YYYY-MM`.
pub fn usage_month(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y-%m").to_string()
}

/// Per-month counters on the organisation item: seconds of ended calls,
/// seconds reserved by calls still running, and their sum (what a new
/// reservation is checked against, since a condition cannot add).
pub fn usage_attribute(month: &str) -> String {
    format!("usage#{month}")
}
pub fn reserved_attribute(month: &str) -> String {
    format!("reserved#{month}")
}
pub fn held_attribute(month: &str) -> String {
    format!("held#{month}")
}

/// Fields an admin may change on an assistant; absent means unchanged.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssistantPatch {
    pub name: Option<String>,
    pub provider: Option<Provider>,
    pub caller_number: Option<String>,
    pub elevenlabs_agent_id: Option<String>,
    pub elevenlabs_phone_number_id: Option<String>,
    pub agent_stream_url: Option<String>,
    pub default_welcome_message: Option<String>,
    pub max_call_seconds: Option<u64>,
    pub is_active: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrganisationPatch {
    pub name: Option<String>,
    pub monthly_limit_seconds: Option<u64>,
    pub topup_seconds: Option<u64>,
    pub max_concurrent_calls: Option<u32>,
    pub elevenlabs_agent_id: Option<String>,
    pub elevenlabs_phone_number_id: Option<String>,
    /// Replaces the whole list.
    pub phone_numbers: Option<Vec<String>>,
}

#[async_trait]
pub trait DirectoryStore: Send + Sync {
    /// Stores a new assistant under the next id, which it returns.
    async fn create_assistant(&self, assistant: Assistant) -> Result<Assistant, StoreError>;
    async fn get_assistant(&self, assistant_id: u64) -> Result<Option<Assistant>, StoreError>;
    async fn update_assistant(
        &self,
        assistant_id: u64,
        patch: &AssistantPatch,
    ) -> Result<Option<Assistant>, StoreError>;
    /// False when the id is taken.
    async fn create_organisation(&self, org: &Organisation) -> Result<bool, StoreError>;
    /// With this month's usage filled in.
    async fn get_organisation(&self, org_id: &str) -> Result<Option<Organisation>, StoreError>;
    async fn update_organisation(
        &self,
        org_id: &str,
        patch: &OrganisationPatch,
    ) -> Result<Option<Organisation>, StoreError>;
}

pub struct DynamoDirectoryStore {
    pub client: Client,
    pub assistants_table: String,
    pub organisations_table: String,
    /// Holds the assistant id sequence.
    pub stats_table: String,
}

#[async_trait]
impl DirectoryStore for DynamoDirectoryStore {
    async fn create_assistant(&self, mut assistant: Assistant) -> Result<Assistant, StoreError> {
        let sequence = self
            .client
            .update_item()
            .table_name(&self.stats_table)
            .key("pk", s(ASSISTANT_SEQUENCE))
            .update_expression("ADD next_id :one")
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await?;
        assistant.assistant_id = sequence
            .attributes
            .and_then(|a| {
                a.get("next_id")
                    .and_then(|v| v.as_n().ok())
                    .and_then(|n| n.parse().ok())
            })
            .ok_or_else(|| StoreError::Malformed("assistant sequence".into()))?;
        self.client
            .put_item()
            .table_name(&self.assistants_table)
            .set_item(Some(serde_dynamo::to_item(&assistant)?))
            .condition_expression("attribute_not_exists(assistant_id)")
            .send()
            .await?;
        Ok(assistant)
    }

    async fn get_assistant(&self, assistant_id: u64) -> Result<Option<Assistant>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.assistants_table)
            .key("assistant_id", AttributeValue::N(assistant_id.to_string()))
            .consistent_read(true)
            .send()
            .await?;
        out.item
            .map(|i| serde_dynamo::from_item(i).map_err(Into::into))
            .transpose()
    }

    async fn update_assistant(
        &self,
        assistant_id: u64,
        patch: &AssistantPatch,
    ) -> Result<Option<Assistant>, StoreError> {
        let mut fields: Vec<(&'static str, AttributeValue)> = Vec::new();
        let text = |name: &'static str,
                    value: &Option<String>,
                    fields: &mut Vec<(&'static str, AttributeValue)>| {
            if let Some(v) = value {
                fields.push((name, s(v)));
            }
        };
        text("name", &patch.name, &mut fields);
        text("caller_number", &patch.caller_number, &mut fields);
        text(
            "elevenlabs_agent_id",
            &patch.elevenlabs_agent_id,
            &mut fields,
        );
        text(
            "elevenlabs_phone_number_id",
            &patch.elevenlabs_phone_number_id,
            &mut fields,
        );
        text("agent_stream_url", &patch.agent_stream_url, &mut fields);
        text(
            "default_welcome_message",
            &patch.default_welcome_message,
            &mut fields,
        );
        if let Some(provider) = patch.provider {
            fields.push(("provider", serde_dynamo::to_attribute_value(provider)?));
        }
        if let Some(max) = patch.max_call_seconds {
            fields.push(("max_call_seconds", AttributeValue::N(max.to_string())));
        }
        if let Some(active) = patch.is_active {
            fields.push(("is_active", AttributeValue::Bool(active)));
        }
        let (expression, names, values) = patch_update(fields);
        let result = self
            .client
            .update_item()
            .table_name(&self.assistants_table)
            .key("assistant_id", AttributeValue::N(assistant_id.to_string()))
            .update_expression(expression)
            .condition_expression("attribute_exists(assistant_id)")
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(out) => out
                .attributes
                .map(|i| serde_dynamo::from_item(i).map_err(Into::into))
                .transpose(),
            Err(err) if err.as_service_error().is_some_and(condition_failed) => Ok(None),
            Err(err) => Err(err.into()),
        }
    }

    async fn create_organisation(&self, org: &Organisation) -> Result<bool, StoreError> {
        let mut item: HashMap<String, AttributeValue> = serde_dynamo::to_item(org)?;
        for derived in [
            "usage_this_month_seconds",
            "reserved_seconds",
            "remaining_seconds",
        ] {
            item.remove(derived);
        }
        let result = self
            .client
            .put_item()
            .table_name(&self.organisations_table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(org_id)")
            .send()
            .await;
        super::applied(result)
    }

    async fn get_organisation(&self, org_id: &str) -> Result<Option<Organisation>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.organisations_table)
            .key("org_id", s(org_id))
            .consistent_read(true)
            .send()
            .await?;
        let Some(item) = out.item else {
            return Ok(None);
        };
        let month = usage_month(crate::base::time::now());
        let counter = |name: String| -> i64 {
            item.get(&name)
                .and_then(|v| v.as_n().ok())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        let usage = counter(usage_attribute(&month));
        let reserved = counter(reserved_attribute(&month));
        let held = counter(held_attribute(&month));
        let mut org: Organisation = serde_dynamo::from_item(item)?;
        org.usage_this_month_seconds = u64::try_from(usage).unwrap_or(0);
        org.reserved_seconds = u64::try_from(reserved).unwrap_or(0);
        org.remaining_seconds = org
            .allowance()
            .saturating_sub(u64::try_from(held).unwrap_or(0));
        Ok(Some(org))
    }

    async fn update_organisation(
        &self,
        org_id: &str,
        patch: &OrganisationPatch,
    ) -> Result<Option<Organisation>, StoreError> {
        let mut fields: Vec<(&'static str, AttributeValue)> = Vec::new();
        if let Some(name) = &patch.name {
            fields.push(("name", s(name)));
        }
        if let Some(limit) = patch.monthly_limit_seconds {
            fields.push((
                "monthly_limit_seconds",
                AttributeValue::N(limit.to_string()),
            ));
        }
        if let Some(topup) = patch.topup_seconds {
            fields.push(("topup_seconds", AttributeValue::N(topup.to_string())));
        }
        if let Some(cap) = patch.max_concurrent_calls {
            fields.push(("max_concurrent_calls", AttributeValue::N(cap.to_string())));
        }
        if let Some(agent) = &patch.elevenlabs_agent_id {
            fields.push(("elevenlabs_agent_id", s(agent)));
        }
        if let Some(number) = &patch.elevenlabs_phone_number_id {
            fields.push(("elevenlabs_phone_number_id", s(number)));
        }
        if let Some(numbers) = &patch.phone_numbers {
            let list = numbers.iter().map(|n| s(n)).collect();
            fields.push(("phone_numbers", AttributeValue::L(list)));
        }
        let (expression, names, values) = patch_update(fields);
        let result = self
            .client
            .update_item()
            .table_name(&self.organisations_table)
            .key("org_id", s(org_id))
            .update_expression(expression)
            .condition_expression("attribute_exists(org_id)")
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .send()
            .await;
        match result {
            Ok(_) => self.get_organisation(org_id).await,
            Err(err) if err.as_service_error().is_some_and(condition_failed) => Ok(None),
            Err(err) => Err(err.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_slot_expressions_carry_only_the_values_they_use() {
        let names = |exprs: &[&str]| -> Vec<String> {
            call_slots::values_in(exprs)
                .into_iter()
                .map(|(k, _)| k)
                .collect()
        };
        assert_eq!(
            names(&[call_slots::TAKE, call_slots::FREE]),
            [":slot_one", ":slot_zero", ":slot_cap"]
        );
        assert_eq!(names(&[call_slots::RELEASE]), [":slot_one"]);
        assert_eq!(
            names(&[call_slots::RELEASE, call_slots::HELD]),
            [":slot_one", ":slot_zero"]
        );
        assert!(names(&["ADD #held :s"]).is_empty());
    }

    #[test]
    fn an_organisation_is_full_at_its_cap_or_the_default_one() {
        let item = |fields: &[(&str, &str)]| -> HashMap<String, AttributeValue> {
            fields
                .iter()
                .map(|(k, v)| (k.to_string(), AttributeValue::N(v.to_string())))
                .collect()
        };
        assert!(!call_slots::full(&item(&[])));
        assert!(!call_slots::full(&item(&[
            ("calls_in_flight", "2"),
            ("max_concurrent_calls", "3")
        ])));
        assert!(call_slots::full(&item(&[
            ("calls_in_flight", "3"),
            ("max_concurrent_calls", "3")
        ])));
        assert!(!call_slots::full(&item(&[("calls_in_flight", "9")])));
        assert!(call_slots::full(&item(&[("calls_in_flight", "10")])));
    }

    #[test]
    fn allowance_is_plan_plus_topups_and_months_are_utc() {
        let org = Organisation {
            org_id: "o".into(),
            name: "O".into(),
            monthly_limit_seconds: 100,
            topup_seconds: 50,
            max_concurrent_calls: DEFAULT_MAX_CONCURRENT_CALLS,
            elevenlabs_agent_id: None,
            elevenlabs_phone_number_id: None,
            phone_numbers: Vec::new(),
            created_at: String::new(),
            updated_at: String::new(),
            usage_this_month_seconds: 0,
            reserved_seconds: 0,
            remaining_seconds: 0,
        };
        assert_eq!(org.allowance(), 150);
        let last_second = chrono::DateTime::parse_from_rfc3339("2026-01-31T23:59:59Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(usage_month(last_second), "2026-01");
        assert_eq!(held_attribute("2026-01"), "held#2026-01");
    }
}
