//! `GET /whatsapp/conversations/{waId}` (API key): the caller's
//! organisation's conversation with that WhatsApp id, oldest message first.
//! None, or another organisation's, is 404: conversation keys start with
//! the organisation, so another's is never read.

use std::sync::Arc;

use http::StatusCode;
use lambda_http::{Request, RequestExt};
use serde::Serialize;
use shared::api::access::KeyedAccess;
use shared::api::{self, ApiError, Route};
use shared::flows::whatsapp::wa_id;
use shared::store::whatsapp::{conversation_key, Direction, StoredMessage, WhatsAppStore};
use shared::wiring::Wiring;

/// Most messages answered; the table keeps `WHATSAPP_RETENTION_DAYS` anyway.
pub const MAX_MESSAGES: usize = 500;

pub struct WhatsAppConversations {
    pub access: KeyedAccess,
    pub store: Arc<dyn WhatsAppStore>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageView {
    direction: Direction,
    body: String,
    message_sid: String,
    status: String,
    error_code: Option<String>,
    num_media: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    profile_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_sid: Option<String>,
    created_at: String,
    updated_at: String,
}

impl From<StoredMessage> for MessageView {
    fn from(m: StoredMessage) -> Self {
        Self {
            direction: m.direction,
            body: m.body,
            message_sid: m.sid,
            status: m.status,
            error_code: m.error_code,
            num_media: m.num_media,
            profile_name: m.profile_name,
            content_sid: m.content_sid,
            created_at: m.created_at,
            updated_at: m.updated_at,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConversationView {
    wa_id: String,
    messages: Vec<MessageView>,
}

impl WhatsAppConversations {
    pub async fn from_env() -> Result<Self, lambda_http::Error> {
        let aws = Wiring::load().await;
        Ok(Self {
            access: aws.keyed_access()?,
            store: aws.whatsapp()?,
        })
    }
}

impl Route for WhatsAppConversations {
    type Body = ConversationView;

    async fn process(&self, request: Request) -> Result<(StatusCode, ConversationView), ApiError> {
        let tenant = self.access.admit(request.headers()).await?;
        let raw = request
            .path_parameters()
            .first("waId")
            .unwrap_or_default()
            .to_string();
        let not_found = || ApiError::NotFound(format!("Conversation {raw} not found"));
        let id = wa_id(&raw).ok_or_else(not_found)?;
        let messages = self
            .store
            .messages(&conversation_key(&tenant.org_id, &id), MAX_MESSAGES)
            .await
            .map_err(api::unavailable)?;
        if messages.is_empty() {
            return Err(not_found());
        }
        Ok((
            StatusCode::OK,
            ConversationView {
                wa_id: id,
                messages: messages.into_iter().map(MessageView::from).collect(),
            },
        ))
    }
}
