//! An organisation's recording-webhook tokens: records of the API keys table
//! with `purpose = webhook` (`store::api_keys`: only the hash is stored, under
//! the token's id), plus two attributes on the organisation's item that keep
//! them countable without a scan:
//!
//! - `webhook_tokens`: a string set of the organisation's token ids, what
//!   the listing reads (revoked ones stay until room is needed);
//! - `webhook_tokens_live`: how many are not revoked.
//!
//! Creating a token and revoking one each change the record and the
//! organisation's item in one transaction, conditional on the bounds, so
//! two concurrent creations can never pass the limit together.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{
    AttributeValue, CancellationReason, KeysAndAttributes, Put,
    ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};
use aws_sdk_dynamodb::Client;

use super::api_keys::{ApiKeyRecord, KeyPurpose};
use super::transactions::{self, Verdict};
use super::{s, StoreError};

/// Token ids listed on the organisation's item.
const IDS: &str = "webhook_tokens";
/// Tokens not revoked.
const LIVE: &str = "webhook_tokens_live";

/// Live tokens an organisation may hold at once (one per sender, and one
/// more while rotating).
pub const MAX_LIVE_TOKENS: u32 = 10;
/// Tokens (live and revoked) an organisation's listing keeps; revoked ones
/// beyond it are dropped from the listing when a new token needs the room.
pub const MAX_LISTED_TOKENS: u32 = 50;

/// What creating a token came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    Created,
    NoOrganisation,
    /// The organisation already holds `MAX_LIVE_TOKENS` live tokens.
    LimitReached,
}

/// What revoking a token came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    Revoked,
    /// Revoked before: nothing changed.
    AlreadyRevoked,
    /// No such token of this organisation (another organisation's is the same).
    NotFound,
}

#[async_trait]
pub trait WebhookTokenStore: Send + Sync {
    /// Stores `record` (a webhook token of `record.org_id`) within the bounds.
    async fn create(&self, record: &ApiKeyRecord) -> Result<Created, StoreError>;
    /// The organisation's listed tokens, oldest first; `None` when there is
    /// no such organisation.
    async fn list(&self, org_id: &str) -> Result<Option<Vec<ApiKeyRecord>>, StoreError>;
    async fn revoke(&self, org_id: &str, token_id: &str) -> Result<Revoked, StoreError>;
}

pub struct DynamoWebhookTokenStore {
    pub client: Client,
    pub api_keys_table: String,
    pub organisations_table: String,
}

/// Why the organisation's half of a creation was refused, from its old item.
fn refusal(item: Option<&HashMap<String, AttributeValue>>) -> Refusal {
    let Some(item) = item else {
        return Refusal::NoOrganisation;
    };
    let live = item
        .get(LIVE)
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or(0);
    if live >= MAX_LIVE_TOKENS {
        Refusal::LimitReached
    } else {
        Refusal::ListFull
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    NoOrganisation,
    LimitReached,
    ListFull,
}

fn refused(reason: &CancellationReason) -> bool {
    reason.code() == Some("ConditionalCheckFailed")
}

impl DynamoWebhookTokenStore {
    fn org_key(org_id: &str) -> HashMap<String, AttributeValue> {
        HashMap::from([("org_id".to_string(), s(org_id))])
    }

    async fn try_create(
        &self,
        record: &ApiKeyRecord,
        org_id: &str,
    ) -> Result<Option<Refusal>, StoreError> {
        let claim = Update::builder()
            .table_name(&self.organisations_table)
            .set_key(Some(Self::org_key(org_id)))
            .update_expression("SET #live = if_not_exists(#live, :zero) + :one ADD #ids :id")
            .condition_expression(
                "attribute_exists(org_id) \
                 AND (attribute_not_exists(#live) OR #live < :max_live) \
                 AND (attribute_not_exists(#ids) OR size(#ids) < :max_listed)",
            )
            .expression_attribute_names("#live", LIVE)
            .expression_attribute_names("#ids", IDS)
            .expression_attribute_values(":zero", AttributeValue::N("0".into()))
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .expression_attribute_values(":id", AttributeValue::Ss(vec![record.key_id.clone()]))
            .expression_attribute_values(
                ":max_live",
                AttributeValue::N(MAX_LIVE_TOKENS.to_string()),
            )
            .expression_attribute_values(
                ":max_listed",
                AttributeValue::N(MAX_LISTED_TOKENS.to_string()),
            )
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(|e| StoreError::Dynamo(e.to_string()))?;
        let put = Put::builder()
            .table_name(&self.api_keys_table)
            .set_item(Some(serde_dynamo::to_item(record)?))
            .condition_expression("attribute_not_exists(key_id)")
            .build()
            .map_err(|e| StoreError::Dynamo(e.to_string()))?;
        let items = vec![
            TransactWriteItem::builder().update(claim).build(),
            TransactWriteItem::builder().put(put).build(),
        ];
        transactions::transact(
            &self.client,
            items,
            "webhook token creation",
            None,
            |reasons| {
                match reasons {
                    [org, _] if refused(org) => Verdict::Done(Some(refusal(org.item()))),
                    _ if transactions::busy(reasons) => {
                        Verdict::Retry(transactions::codes(reasons))
                    }
                    // A generated id already taken, or anything else: an error.
                    _ => Verdict::Fail(transactions::codes(reasons)),
                }
            },
        )
        .await
    }

    /// Drops revoked tokens from the organisation's listing. Only revoked ids
    /// are removed and a revoked token never comes back, so this is safe
    /// against any concurrent creation or revocation.
    async fn prune_revoked(&self, org_id: &str) -> Result<(), StoreError> {
        let Some(records) = self.list(org_id).await? else {
            return Ok(());
        };
        let revoked: Vec<String> = records
            .into_iter()
            .filter(|r| r.revoked_at.is_some())
            .map(|r| r.key_id)
            .collect();
        if revoked.is_empty() {
            return Ok(());
        }
        self.client
            .update_item()
            .table_name(&self.organisations_table)
            .set_key(Some(Self::org_key(org_id)))
            .update_expression("DELETE #ids :revoked")
            .condition_expression("attribute_exists(org_id)")
            .expression_attribute_names("#ids", IDS)
            .expression_attribute_values(":revoked", AttributeValue::Ss(revoked))
            .send()
            .await?;
        Ok(())
    }

    /// The listed ids of an organisation; `None` without an organisation.
    async fn listed_ids(&self, org_id: &str) -> Result<Option<Vec<String>>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.organisations_table)
            .set_key(Some(Self::org_key(org_id)))
            .projection_expression("org_id, #ids")
            .expression_attribute_names("#ids", IDS)
            .consistent_read(true)
            .send()
            .await?;
        Ok(out.item.map(|item| {
            item.get(IDS)
                .and_then(|v| v.as_ss().ok())
                .cloned()
                .unwrap_or_default()
        }))
    }
}

#[async_trait]
impl WebhookTokenStore for DynamoWebhookTokenStore {
    async fn create(&self, record: &ApiKeyRecord) -> Result<Created, StoreError> {
        let org_id = record
            .org_id
            .as_deref()
            .filter(|_| record.purpose == KeyPurpose::Webhook)
            .ok_or_else(|| {
                StoreError::Malformed("a webhook token needs its organisation".into())
            })?;
        for attempt in 0..2 {
            match self.try_create(record, org_id).await? {
                None => return Ok(Created::Created),
                Some(Refusal::NoOrganisation) => return Ok(Created::NoOrganisation),
                Some(Refusal::LimitReached) => return Ok(Created::LimitReached),
                Some(Refusal::ListFull) if attempt == 0 => self.prune_revoked(org_id).await?,
                Some(Refusal::ListFull) => break,
            }
        }
        Err(StoreError::Dynamo(format!(
            "webhook tokens of {org_id}: the listing stays full after dropping revoked tokens"
        )))
    }

    async fn list(&self, org_id: &str) -> Result<Option<Vec<ApiKeyRecord>>, StoreError> {
        let Some(ids) = self.listed_ids(org_id).await? else {
            return Ok(None);
        };
        let mut records = Vec::with_capacity(ids.len());
        // At most MAX_LISTED_TOKENS ids: one BatchGetItem (limit 100), plus
        // whatever it leaves unprocessed.
        let keys: Vec<HashMap<String, AttributeValue>> = ids
            .iter()
            .map(|id| HashMap::from([("key_id".to_string(), s(id))]))
            .collect();
        let mut pending = Some(
            KeysAndAttributes::builder()
                .set_keys(Some(keys))
                .consistent_read(true)
                .build()
                .map_err(|e| StoreError::Dynamo(e.to_string()))?,
        );
        let mut rounds = 0;
        while let Some(request) = pending.take() {
            if request.keys().is_empty() {
                break;
            }
            rounds += 1;
            if rounds > 1 {
                tokio::time::sleep(transactions::backoff(rounds)).await;
            }
            if rounds > 6 {
                return Err(StoreError::Dynamo(
                    "webhook tokens: keys still unprocessed after 6 rounds".into(),
                ));
            }
            let out = self
                .client
                .batch_get_item()
                .request_items(&self.api_keys_table, request)
                .send()
                .await?;
            if let Some(items) = out
                .responses
                .and_then(|mut r| r.remove(&self.api_keys_table))
            {
                for item in items {
                    records.push(serde_dynamo::from_item::<_, ApiKeyRecord>(item)?);
                }
            }
            pending = out
                .unprocessed_keys
                .and_then(|mut u| u.remove(&self.api_keys_table));
        }
        records.retain(|r| r.purpose == KeyPurpose::Webhook && r.org_id.as_deref() == Some(org_id));
        records.sort_by(|a, b| (&a.created_at, &a.key_id).cmp(&(&b.created_at, &b.key_id)));
        Ok(Some(records))
    }

    async fn revoke(&self, org_id: &str, token_id: &str) -> Result<Revoked, StoreError> {
        let token = Update::builder()
            .table_name(&self.api_keys_table)
            .key("key_id", s(token_id))
            .update_expression("SET revoked_at = :now")
            .condition_expression(
                "attribute_exists(key_id) AND org_id = :org AND purpose = :webhook \
                 AND attribute_not_exists(revoked_at)",
            )
            .expression_attribute_values(":now", s(&crate::base::time::now_rfc3339()))
            .expression_attribute_values(":org", s(org_id))
            .expression_attribute_values(":webhook", s(KeyPurpose::Webhook.as_str()))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(|e| StoreError::Dynamo(e.to_string()))?;
        let count = Update::builder()
            .table_name(&self.organisations_table)
            .set_key(Some(Self::org_key(org_id)))
            .update_expression("SET #live = if_not_exists(#live, :one) - :one")
            .condition_expression("attribute_exists(org_id)")
            .expression_attribute_names("#live", LIVE)
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .build()
            .map_err(|e| StoreError::Dynamo(e.to_string()))?;
        let items = vec![
            TransactWriteItem::builder().update(token).build(),
            TransactWriteItem::builder().update(count).build(),
        ];
        transactions::transact(
            &self.client,
            items,
            "webhook token revocation",
            Revoked::Revoked,
            |reasons| {
                match reasons {
                    [token, _] if refused(token) => {
                        let old = token.item().and_then(|item| {
                            serde_dynamo::from_item::<_, ApiKeyRecord>(item.clone()).ok()
                        });
                        Verdict::Done(match old {
                            Some(old)
                                if old.org_id.as_deref() == Some(org_id)
                                    && old.purpose == KeyPurpose::Webhook
                                    && old.revoked_at.is_some() =>
                            {
                                Revoked::AlreadyRevoked
                            }
                            _ => Revoked::NotFound,
                        })
                    }
                    // The organisation is gone: its tokens are as good as absent.
                    [_, org] if refused(org) => Verdict::Done(Revoked::NotFound),
                    _ if transactions::busy(reasons) => {
                        Verdict::Retry(transactions::codes(reasons))
                    }
                    _ => Verdict::Fail(transactions::codes(reasons)),
                }
            },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_read_from_the_organisation_as_it_was() {
        assert_eq!(refusal(None), Refusal::NoOrganisation);
        let org = |live: u32| {
            HashMap::from([
                ("org_id".to_string(), s("acme")),
                (LIVE.to_string(), AttributeValue::N(live.to_string())),
            ])
        };
        assert_eq!(refusal(Some(&org(MAX_LIVE_TOKENS))), Refusal::LimitReached);
        // Under the live limit, the listing was what was full.
        assert_eq!(refusal(Some(&org(3))), Refusal::ListFull);
    }
}
