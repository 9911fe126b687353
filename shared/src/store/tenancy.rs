//! Who owns an outside identity (`TENANCY_TABLE`): a phone number, a Twilio
//! account, a Slack team... One item per identity, keyed `<kind>#<id>`
//! (`voice#+14155550100`, `whatsapp#+14155550100`, `twilio#AC...`), holding
//! the owning `org_id`. An identity has at most one owner because the only
//! way to take one is a conditional write; the `by_org` index lists what an
//! organisation owns without a Scan.
//!
//! `Claim::TakenBy` says nothing about the other owner: an organisation must
//! not learn who holds a number it tried to take.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use aws_sdk_dynamodb::Client;

use super::{condition_failed, s, StoreError};

/// The index listing an organisation's keys (hash `org_id`, range `key`).
const BY_ORG_INDEX: &str = "by_org";
/// Longest key accepted; anything longer is refused before DynamoDB sees it
/// (its own limit on a hash key is 2,048 bytes).
pub const MAX_KEY_CHARS: usize = 512;
/// Longest organisation id accepted by the store.
pub const MAX_ORG_ID_CHARS: usize = 128;
/// Most keys of one kind `list` returns: an organisation's numbers or
/// accounts are a handful, and an answer must stay one bounded response.
pub const MAX_LISTED: usize = 1_000;

/// The kinds of identity the table holds; each key starts with its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A number calls are placed from and answered on (E.164).
    Voice,
    /// A WhatsApp sender (E.164, without `whatsapp:`).
    WhatsApp,
    /// A Twilio account (`AccountSid`).
    Twilio,
    /// A Slack workspace (`team_id`).
    Slack,
    /// A Discord server (`guild_id`).
    Discord,
    /// A Microsoft Teams tenant (`tenant_id`).
    Teams,
    /// A webhook token, by its id.
    WebhookToken,
}

impl Kind {
    /// The key prefix, `voice#` and so on: what `list` takes.
    pub fn prefix(self) -> &'static str {
        match self {
            Kind::Voice => "voice#",
            Kind::WhatsApp => "whatsapp#",
            Kind::Twilio => "twilio#",
            Kind::Slack => "slack#",
            Kind::Discord => "discord#",
            Kind::Teams => "teams#",
            Kind::WebhookToken => "webhook-token#",
        }
    }

    /// The table key of identity `id` of this kind.
    pub fn key(self, id: &str) -> String {
        format!("{}{id}", self.prefix())
    }

    /// The identity part of `key` when it is of this kind.
    pub fn id_of(self, key: &str) -> Option<&str> {
        key.strip_prefix(self.prefix())
    }
}

/// What a claim found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The key was free and now belongs to the claimant.
    Claimed,
    /// The claimant already owned it; nothing changed.
    AlreadyOurs,
    /// Another organisation owns it (which one is deliberately not said).
    TakenBy,
}

#[async_trait]
pub trait TenancyStore: Send + Sync {
    /// One conditional write: `attribute_not_exists(key) OR org_id = :org`.
    /// A repeated claim keeps the first `created_at` and any other attributes.
    async fn claim(&self, key: &str, org_id: &str) -> Result<Claim, StoreError>;
    /// The organisation owning `key` (a strongly consistent read), if any.
    async fn owner(&self, key: &str) -> Result<Option<String>, StoreError>;
    /// Conditional delete on `org_id = :org`; false when absent or owned by another.
    async fn release(&self, key: &str, org_id: &str) -> Result<bool, StoreError>;
    /// Keys of one kind (a prefix like `"voice#"`) owned by `org_id`, sorted,
    /// at most `MAX_LISTED`. Read from the `by_org` index, which follows
    /// writes within moments (not in the same instant as `owner`).
    async fn list(&self, org_id: &str, prefix: &str) -> Result<Vec<String>, StoreError>;
}

pub struct DynamoTenancyStore {
    client: Client,
    table: String,
}

impl DynamoTenancyStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }
}

/// Refuses a key or organisation id the table must never see: empty, too
/// long, or with control characters.
fn bounded(what: &str, value: &str, max: usize) -> Result<(), StoreError> {
    if value.is_empty() || value.chars().count() > max || value.chars().any(char::is_control) {
        return Err(StoreError::Malformed(format!(
            "{what} is empty, longer than {max} characters or has control characters"
        )));
    }
    Ok(())
}

fn check(key: &str, org_id: &str) -> Result<(), StoreError> {
    bounded("tenancy key", key, MAX_KEY_CHARS)?;
    bounded("organisation id", org_id, MAX_ORG_ID_CHARS)
}

/// A key fit for a log line: its kind, and a number's last digits only.
pub fn masked(key: &str) -> String {
    match key.split_once('#') {
        Some((kind, id)) if kind == "voice" || kind == "whatsapp" => {
            format!("{kind}#{}", crate::base::mask::phone(id))
        }
        Some((kind, _)) => format!("{kind}#***"),
        None => "***".to_string(),
    }
}

fn key_name() -> HashMap<String, String> {
    // `key` is a DynamoDB reserved word: always through a name placeholder.
    HashMap::from([("#k".to_string(), "key".to_string())])
}

#[async_trait]
impl TenancyStore for DynamoTenancyStore {
    async fn claim(&self, key: &str, org_id: &str) -> Result<Claim, StoreError> {
        check(key, org_id)?;
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("key", s(key))
            .update_expression("SET org_id = :org, created_at = if_not_exists(created_at, :now)")
            .condition_expression("attribute_not_exists(#k) OR org_id = :org")
            .set_expression_attribute_names(Some(key_name()))
            .expression_attribute_values(":org", s(org_id))
            .expression_attribute_values(
                ":now",
                AttributeValue::N(crate::base::time::epoch_secs().to_string()),
            )
            // The old item, if there was one: the claimant's own (the
            // condition held), so the claim was a repeat.
            .return_values(ReturnValue::AllOld)
            .send()
            .await;
        match result {
            Ok(out) if out.attributes.as_ref().is_some_and(|old| !old.is_empty()) => {
                Ok(Claim::AlreadyOurs)
            }
            Ok(_) => Ok(Claim::Claimed),
            Err(err) if err.as_service_error().is_some_and(condition_failed) => Ok(Claim::TakenBy),
            Err(err) => Err(err.into()),
        }
    }

    async fn owner(&self, key: &str) -> Result<Option<String>, StoreError> {
        bounded("tenancy key", key, MAX_KEY_CHARS)?;
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("key", s(key))
            // A number assigned a moment ago must route on the next call.
            .consistent_read(true)
            .projection_expression("org_id")
            .send()
            .await?;
        out.item
            .map(|item| match item.get("org_id") {
                Some(AttributeValue::S(org)) => Ok(org.clone()),
                _ => Err(StoreError::Malformed(format!(
                    "tenancy item {} has no org_id",
                    masked(key)
                ))),
            })
            .transpose()
    }

    async fn release(&self, key: &str, org_id: &str) -> Result<bool, StoreError> {
        check(key, org_id)?;
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("key", s(key))
            .condition_expression("org_id = :org")
            .expression_attribute_values(":org", s(org_id))
            .send()
            .await;
        super::applied(result)
    }

    async fn list(&self, org_id: &str, prefix: &str) -> Result<Vec<String>, StoreError> {
        bounded("organisation id", org_id, MAX_ORG_ID_CHARS)?;
        bounded("tenancy key prefix", prefix, MAX_KEY_CHARS)?;
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(BY_ORG_INDEX)
            .key_condition_expression("org_id = :org AND begins_with(#k, :prefix)")
            .set_expression_attribute_names(Some(key_name()))
            .expression_attribute_values(":org", s(org_id))
            .expression_attribute_values(":prefix", s(prefix))
            .into_paginator()
            .items()
            .send();
        let mut keys = Vec::new();
        while let Some(item) = pages.next().await {
            match item?.get("key") {
                Some(AttributeValue::S(key)) => keys.push(key.clone()),
                _ => {
                    return Err(StoreError::Malformed(
                        "tenancy index item without key".into(),
                    ))
                }
            }
            if keys.len() >= MAX_LISTED {
                break;
            }
        }
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_their_kind() {
        assert_eq!(Kind::Voice.key("+14155550100"), "voice#+14155550100");
        assert_eq!(Kind::WhatsApp.key("+1415"), "whatsapp#+1415");
        assert_eq!(Kind::Twilio.key("AC1"), "twilio#AC1");
        assert_eq!(Kind::WebhookToken.key("t1"), "webhook-token#t1");
        assert_eq!(Kind::Voice.id_of("voice#+1415"), Some("+1415"));
        assert_eq!(Kind::Voice.id_of("whatsapp#+1415"), None);
    }

    #[test]
    fn masked_keys_hide_the_identity() {
        assert_eq!(masked("voice#+14155550100"), "voice#+14*****0100");
        assert_eq!(masked("twilio#AC0123456789"), "twilio#***");
        assert_eq!(masked("nokind"), "***");
    }

    #[test]
    fn unbounded_input_is_refused_before_the_table() {
        assert!(check("voice#+1415", "acme").is_ok());
        assert!(check("", "acme").is_err());
        assert!(check("voice#+1415", "").is_err());
        assert!(check(&"k".repeat(MAX_KEY_CHARS + 1), "acme").is_err());
        assert!(check("voice#+1415", &"o".repeat(MAX_ORG_ID_CHARS + 1)).is_err());
        assert!(check("voice#\n+1415", "acme").is_err());
    }
}
