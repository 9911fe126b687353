//! Reading a conversation (seed 004's `get_conversation_details` and
//! `get_conversation_transcript`): the caller's key, the id from the path,
//! what callops stored, and ElevenLabs' own document when it is needed.

use std::sync::Arc;

use lambda_http::{Request, RequestExt};

use crate::api::{self, access, ApiError};
use crate::providers::elevenlabs::{Conversation, ElevenLabsClient};
use crate::store::api_keys::ApiKeyStore;
use crate::store::outbound_calls::{OutboundCall, OutboundCallStore};

pub struct ConversationLookup {
    pub api_keys: Arc<dyn ApiKeyStore>,
    pub calls: Arc<dyn OutboundCallStore>,
    /// The deployment's key: conversations of organisations without their own.
    pub elevenlabs: Option<ElevenLabsClient>,
    /// Organisations' own ElevenLabs keys: their conversations are read with them.
    pub org_accounts: Option<std::sync::Arc<crate::providers::org_accounts::OrgAccounts>>,
}

/// A conversation the caller may read, with what callops stored about it.
pub struct Found {
    pub conversation_id: String,
    pub stored: OutboundCall,
}

fn not_found() -> ApiError {
    ApiError::NotFound("Conversation not found".into())
}

/// Conversation ids are ElevenLabs' (`conv_...`): letters, digits, `_`, `-`.
pub fn conversation_id(request: &Request) -> Result<String, ApiError> {
    request
        .path_parameters()
        .first("conversation_id")
        .filter(|id| {
            !id.is_empty()
                && id.len() <= 128
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        })
        .map(str::to_string)
        .ok_or_else(not_found)
}

impl ConversationLookup {
    /// Checks the key, then finds the conversation the path names. Only a
    /// conversation placed by the key's organisation is found: another
    /// organisation's, or one callops never placed, is answered 404 alike.
    pub async fn find(&self, request: &Request) -> Result<Found, ApiError> {
        let tenant = access::authenticate_tenant(self.api_keys.as_ref(), request.headers()).await?;
        let conversation_id = conversation_id(request)?;
        let stored = self
            .calls
            .get(&conversation_id)
            .await
            .map_err(api::unavailable)?
            .filter(|call| call.org_id.as_deref() == Some(tenant.org_id.as_str()))
            .ok_or_else(not_found)?;
        Ok(Found {
            conversation_id,
            stored,
        })
    }

    /// ElevenLabs' document for the conversation, read with the key of the
    /// organisation that placed it (its own, else the deployment's); `None`
    /// when ElevenLabs is not configured or does not know it.
    pub async fn live(&self, found: &Found) -> Result<Option<Conversation>, ApiError> {
        let client = crate::providers::org_accounts::elevenlabs_for(
            self.org_accounts.as_deref(),
            self.elevenlabs.as_ref(),
            found.stored.org_id.as_deref(),
        )
        .await?;
        let Some(client) = client else {
            return Ok(None);
        };
        client
            .conversation(&found.conversation_id)
            .await
            .map_err(|err| {
                tracing::warn!(error = %err, "ElevenLabs conversation not readable");
                ApiError::Provider {
                    detail: "ElevenLabs did not return the conversation; retry shortly".into(),
                }
            })
    }
}
