//! `POST|GET /organisations/{org_id}/webhook-tokens` and
//! `DELETE /organisations/{org_id}/webhook-tokens/{token_id}`: an
//! organisation's own tokens for `/webhook/zapier` and `/webhook/exotel`
//! (one function serves the three). A token is generated here, shown once
//! in the creating answer and stored only as its hash
//! (`store::webhook_tokens`).

use http::{Method, StatusCode};
use lambda_http::{Body, Request, RequestExt, Response};
use serde::{Deserialize, Serialize};

use super::{json_body, org_id, path_param, unavailable};
use crate::api::{self, ApiError};
use crate::base::config::Secret;
use crate::store::api_keys::{self, ApiKeyRecord, KeyPurpose};
use crate::store::webhook_tokens::{
    Created, Revoked, WebhookTokenStore, MAX_LISTED_TOKENS, MAX_LIVE_TOKENS,
};

/// Longest label a token may carry.
const MAX_NAME_CHARS: usize = 64;
/// Token ids are 12 letters and digits (`store::api_keys`).
const MAX_TOKEN_ID_CHARS: usize = 12;

pub struct WebhookTokenAdmin {
    pub token: Secret,
    pub store: Box<dyn WebhookTokenStore>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NewToken {
    /// A label for people ("zapier", "exotel-mumbai"); `webhook` when absent.
    name: Option<String>,
}

/// The creating answer: the only time the token is shown.
#[derive(Serialize)]
pub struct CreatedToken {
    pub token_id: String,
    pub token: String,
    pub name: String,
    pub created_at: String,
}

/// A token as listed: never the token or its hash.
#[derive(Serialize)]
pub struct ListedToken {
    pub token_id: String,
    pub name: String,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

#[derive(Serialize)]
pub struct TokenList {
    pub org_id: String,
    pub webhook_tokens: Vec<ListedToken>,
}

#[derive(Serialize)]
pub struct RevokedToken {
    pub token_id: String,
    pub revoked: bool,
}

impl From<ApiKeyRecord> for ListedToken {
    fn from(record: ApiKeyRecord) -> Self {
        Self {
            token_id: record.key_id,
            name: record.name,
            created_at: record.created_at,
            revoked_at: record.revoked_at,
        }
    }
}

fn organisation_not_found() -> ApiError {
    ApiError::NotFound("Organisation not found".into())
}

fn token_not_found() -> ApiError {
    ApiError::NotFound("Webhook token not found".into())
}

impl WebhookTokenAdmin {
    /// One function, three methods; the admin token before anything else.
    pub async fn handle(&self, request: Request) -> Response<Body> {
        if let Err(err) = api::require_bearer(request.headers(), &self.token) {
            return err.into_response();
        }
        let has_token_id = request.path_parameters().first("token_id").is_some();
        match (request.method().clone(), has_token_id) {
            (Method::POST, false) => api::respond(self.create(&request).await),
            (Method::GET, false) => api::respond(self.list(&request).await),
            (Method::DELETE, true) => api::respond(self.revoke(&request).await),
            _ => ApiError::NotFound("No such route".into()).into_response(),
        }
    }

    async fn create(&self, request: &Request) -> Result<(StatusCode, CreatedToken), ApiError> {
        let org_id = org_id(request)?;
        let new: NewToken = if api::body_bytes(request.body())?.is_empty() {
            NewToken::default()
        } else {
            json_body(request)?
        };
        let name = match new.name.map(|n| n.trim().to_string()) {
            None => "webhook".to_string(),
            Some(n) if !n.is_empty() && n.chars().count() <= MAX_NAME_CHARS => n,
            Some(_) => {
                return Err(ApiError::unprocessable(
                    "invalid_name",
                    format!("name must be 1-{MAX_NAME_CHARS} characters"),
                ))
            }
        };
        let (token, record) = api_keys::generate_for(KeyPurpose::Webhook, &name, &org_id);
        match self.store.create(&record).await.map_err(unavailable)? {
            Created::Created => {
                tracing::info!(%org_id, token_id = %record.key_id, "webhook token created");
                Ok((
                    StatusCode::CREATED,
                    CreatedToken {
                        token_id: record.key_id,
                        token,
                        name: record.name,
                        created_at: record.created_at,
                    },
                ))
            }
            Created::NoOrganisation => Err(organisation_not_found()),
            Created::LimitReached => Err(ApiError::Conflict {
                code: "webhook_token_limit",
                detail: format!(
                    "Organisation {org_id} already has {MAX_LIVE_TOKENS} live webhook tokens; \
                     revoke one (DELETE /organisations/{org_id}/webhook-tokens/{{token_id}}) first"
                ),
            }),
        }
    }

    async fn list(&self, request: &Request) -> Result<(StatusCode, TokenList), ApiError> {
        let org_id = org_id(request)?;
        let records = self
            .store
            .list(&org_id)
            .await
            .map_err(unavailable)?
            .ok_or_else(organisation_not_found)?;
        debug_assert!(records.len() <= MAX_LISTED_TOKENS as usize);
        Ok((
            StatusCode::OK,
            TokenList {
                org_id,
                webhook_tokens: records.into_iter().map(ListedToken::from).collect(),
            },
        ))
    }

    async fn revoke(&self, request: &Request) -> Result<(StatusCode, RevokedToken), ApiError> {
        let org_id = org_id(request)?;
        let token_id = path_param(request, "token_id")?;
        if token_id.len() > MAX_TOKEN_ID_CHARS
            || !token_id.chars().all(|c| c.is_ascii_alphanumeric())
        {
            return Err(token_not_found());
        }
        match self
            .store
            .revoke(&org_id, &token_id)
            .await
            .map_err(unavailable)?
        {
            Revoked::Revoked | Revoked::AlreadyRevoked => {
                tracing::info!(%org_id, %token_id, "webhook token revoked");
                Ok((
                    StatusCode::OK,
                    RevokedToken {
                        token_id,
                        revoked: true,
                    },
                ))
            }
            Revoked::NotFound => Err(token_not_found()),
        }
    }
}
