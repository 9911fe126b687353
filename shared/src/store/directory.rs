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
    pub is_active: bool,
    pub created_at: String,
    pub updated_at: String,
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
    pub created_at: String,
    pub updated_at: String,
    /// Seconds used in the current month (read-only; filled on read).
    #[serde(default, skip_deserializing)]
    pub usage_this_month_seconds: u64,
}

impl Organisation {
    /// Seed 003: calls are refused once usage reaches the plan plus top-ups.
    pub fn over_limit(&self) -> bool {
        self.usage_this_month_seconds
            >= self
                .monthly_limit_seconds
                .saturating_add(self.topup_seconds)
    }
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
    pub is_active: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrganisationPatch {
    pub name: Option<String>,
    pub monthly_limit_seconds: Option<u64>,
    pub topup_seconds: Option<u64>,
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

pub fn usage_attribute(at: chrono::DateTime<chrono::Utc>) -> String {
    format!("usage#{}", at.format("%Y-%m"))
}

pub struct DynamoDirectoryStore {
    pub client: Client,
    pub assistants_table: String,
    pub organisations_table: String,
    /// Holds the assistant id sequence.
    pub stats_table: String,
}

impl DynamoDirectoryStore {
    pub fn from_env(sdk: &aws_config::SdkConfig) -> Result<Self, crate::base::config::ConfigError> {
        Ok(Self {
            client: Client::new(sdk),
            assistants_table: crate::base::config::required("ASSISTANTS_TABLE")?,
            organisations_table: crate::base::config::required("ORGANISATIONS_TABLE")?,
            stats_table: crate::base::config::required("STATS_TABLE")?,
        })
    }
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
        item.remove("usage_this_month_seconds");
        let result = self
            .client
            .put_item()
            .table_name(&self.organisations_table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(org_id)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(err) if err.as_service_error().is_some_and(condition_failed) => Ok(false),
            Err(err) => Err(err.into()),
        }
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
        let usage = item
            .get(&usage_attribute(crate::base::time::now()))
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let mut org: Organisation = serde_dynamo::from_item(item)?;
        org.usage_this_month_seconds = usage;
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
    fn usage_limit_includes_topups() {
        let mut org = Organisation {
            org_id: "o".into(),
            name: "O".into(),
            monthly_limit_seconds: 100,
            topup_seconds: 50,
            created_at: String::new(),
            updated_at: String::new(),
            usage_this_month_seconds: 149,
        };
        assert!(!org.over_limit());
        org.usage_this_month_seconds = 150;
        assert!(org.over_limit());
    }
}
