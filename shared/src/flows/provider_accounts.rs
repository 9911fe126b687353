//! Admin routes for organisations' own provider accounts (one function,
//! `organisation-providers`): `PUT /organisations/{org_id}/providers/{twilio,elevenlabs,notifications}`,
//! `DELETE /organisations/{org_id}/providers/{provider}` and
//! `GET /organisations/{org_id}/providers`. Bearer `ADMIN_API_TOKEN`.
//!
//! Values go into the organisation's secrets (`store::org_secrets`) and are
//! never returned: answers carry the account SID, the API key SID, the kind
//! of Slack and its channel, and when the secret last changed. A Twilio account belongs to one organisation:
//! `twilio#<AccountSid>` is claimed in the tenancy store with one conditional
//! write before the secret is written (409 when another organisation holds
//! it), and the organisation's previous claim is released after.

use std::sync::Arc;

use http::{Method, StatusCode};
use lambda_http::{Body, Request, RequestExt, Response};
use serde::Serialize;

use crate::api::{self, ApiError};
use crate::base::config::Secret;
use crate::providers::org_accounts::{ElevenLabsAccount, TwilioAccount};
use crate::providers::org_notifications::OrgNotificationRoutes;
use crate::store::directory::DirectoryStore;
use crate::store::org_secrets::{OrgSecretError, OrgSecretStore, SecretKind};
use crate::store::tenancy::{Claim, Kind, TenancyStore};

/// Largest body accepted: an account document is a few hundred bytes.
const MAX_BODY_BYTES: usize = 4096;

/// The tenancy key of a Twilio account.
fn twilio_key(account_sid: &str) -> String {
    Kind::Twilio.key(account_sid)
}

/// What the routes need (wiring builds it: `from_env`).
pub struct ProviderAccountsAdmin {
    pub token: Secret,
    pub directory: Arc<dyn DirectoryStore>,
    pub secrets: Arc<dyn OrgSecretStore>,
    pub tenancy: Arc<dyn TenancyStore>,
}

/// One provider of an organisation, as the routes show it: never a secret.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct ProviderView {
    pub provider: &'static str,
    pub configured: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_sid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_sid: Option<String>,
    /// When the secret last changed (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    /// Notification routes as shown by `OrgNotificationRoutes::view`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routes: Option<serde_json::Value>,
}

#[derive(Debug, Serialize)]
struct ProvidersView {
    org_id: String,
    providers: Vec<ProviderView>,
}

fn secret_failure(err: OrgSecretError) -> ApiError {
    // Names and codes only: no value ever reaches an OrgSecretError.
    tracing::error!(error = %err, "organisation secret not written");
    ApiError::Unavailable
}

fn tenancy_failure(err: crate::store::StoreError) -> ApiError {
    tracing::error!(error = %err, "tenancy store unavailable");
    ApiError::Unavailable
}

/// The path's provider: one the routes manage.
fn provider(request: &Request) -> Result<SecretKind, ApiError> {
    request
        .path_parameters()
        .first("provider")
        .and_then(SecretKind::parse)
        .ok_or_else(|| {
            ApiError::NotFound("Unknown provider: use twilio, elevenlabs or notifications".into())
        })
}

impl ProviderAccountsAdmin {
    /// Every method of the resource; the bearer is checked before anything else.
    pub async fn handle(&self, request: Request) -> Response<Body> {
        if let Err(err) = api::require_bearer(request.headers(), &self.token) {
            return err.into_response();
        }
        let has_provider = request.path_parameters().first("provider").is_some();
        let result = match (request.method().clone(), has_provider) {
            (Method::GET, false) => self.list(&request).await,
            (Method::PUT, true) => self.put(&request).await,
            (Method::DELETE, true) => self.delete(&request).await,
            _ => Err(ApiError::NotFound("No such route".into())),
        };
        api::respond(result)
    }

    /// The path's organisation, which must exist.
    async fn organisation(&self, request: &Request) -> Result<String, ApiError> {
        let org_id = request
            .path_parameters()
            .first("org_id")
            .map(str::to_string)
            .filter(|id| crate::api::access::valid_org_id(id))
            .ok_or_else(|| ApiError::NotFound("Organisation not found".into()))?;
        self.directory
            .get_organisation(&org_id)
            .await
            .map_err(api::unavailable)?
            .ok_or_else(|| ApiError::NotFound("Organisation not found".into()))?;
        Ok(org_id)
    }

    async fn put(&self, request: &Request) -> Result<(StatusCode, serde_json::Value), ApiError> {
        let kind = provider(request)?;
        let org_id = self.organisation(request).await?;
        let body = api::body_bytes_within(request.body(), MAX_BODY_BYTES)?;
        let view = match kind {
            SecretKind::Twilio => {
                let account = TwilioAccount::parse(body)
                    .map_err(|err| ApiError::unprocessable("invalid_twilio_account", err.0))?;
                self.put_twilio(&org_id, &account).await?
            }
            SecretKind::Notifications => {
                let routes = OrgNotificationRoutes::parse(body)
                    .map_err(|err| ApiError::unprocessable("invalid_notification_routes", err.0))?;
                self.secrets
                    .write(&org_id, kind, &routes.to_secret())
                    .await
                    .map_err(secret_failure)?;
                ProviderView {
                    provider: kind.as_str(),
                    configured: true,
                    account_sid: None,
                    api_key_sid: None,
                    updated_at: Some(crate::base::time::now_rfc3339()),
                    routes: Some(routes.view()),
                }
            }
            SecretKind::ElevenLabs => {
                let account = ElevenLabsAccount::parse(body)
                    .map_err(|err| ApiError::unprocessable("invalid_elevenlabs_account", err.0))?;
                self.secrets
                    .write(&org_id, kind, &account.to_secret())
                    .await
                    .map_err(secret_failure)?;
                ProviderView {
                    provider: kind.as_str(),
                    configured: true,
                    account_sid: None,
                    api_key_sid: None,
                    updated_at: Some(crate::base::time::now_rfc3339()),
                    routes: None,
                }
            }
        };
        tracing::info!(
            org_id,
            provider = kind.as_str(),
            "organisation's provider account set"
        );
        Ok((
            StatusCode::OK,
            serde_json::json!({"org_id": org_id, "provider": view}),
        ))
    }

    /// Claims the account for `org_id` (one conditional write), writes the
    /// secret, then releases the organisation's earlier account. A failed
    /// write gives back exactly the claim this request made.
    async fn put_twilio(
        &self,
        org_id: &str,
        account: &TwilioAccount,
    ) -> Result<ProviderView, ApiError> {
        let key = twilio_key(&account.account_sid);
        // Read before our claim: what this organisation held until now.
        let earlier: Vec<String> = self
            .tenancy
            .list(org_id, Kind::Twilio.prefix())
            .await
            .map_err(tenancy_failure)?
            .into_iter()
            .filter(|k| *k != key)
            .collect();
        let claim = self
            .tenancy
            .claim(&key, org_id)
            .await
            .map_err(tenancy_failure)?;
        if matches!(claim, Claim::TakenBy) {
            return Err(ApiError::Conflict {
                code: "account_in_use",
                detail: format!(
                    "Twilio account {} belongs to another organisation",
                    account.account_sid
                ),
            });
        }
        if let Err(err) = self
            .secrets
            .write(org_id, SecretKind::Twilio, &account.to_secret())
            .await
        {
            if matches!(claim, Claim::Claimed) {
                if let Err(release) = self.tenancy.release(&key, org_id).await {
                    tracing::error!(error = %release, org_id, "claim of an unwritten Twilio account not released");
                }
            }
            return Err(secret_failure(err));
        }
        for old in &earlier {
            self.tenancy
                .release(old, org_id)
                .await
                .map_err(tenancy_failure)?;
        }
        Ok(ProviderView {
            provider: SecretKind::Twilio.as_str(),
            configured: true,
            account_sid: Some(account.account_sid.clone()),
            api_key_sid: account.api_key.as_ref().map(|(sid, _)| sid.clone()),
            updated_at: Some(crate::base::time::now_rfc3339()),
            routes: None,
        })
    }

    /// Deletes the secret, then releases the organisation's Twilio claims
    /// (a retry after a failure finishes the job); 404 when there was nothing.
    async fn delete(&self, request: &Request) -> Result<(StatusCode, serde_json::Value), ApiError> {
        let kind = provider(request)?;
        let org_id = self.organisation(request).await?;
        let mut existed = self
            .secrets
            .delete(&org_id, kind)
            .await
            .map_err(secret_failure)?;
        if kind == SecretKind::Twilio {
            for key in self
                .tenancy
                .list(&org_id, Kind::Twilio.prefix())
                .await
                .map_err(tenancy_failure)?
            {
                existed |= self
                    .tenancy
                    .release(&key, &org_id)
                    .await
                    .map_err(tenancy_failure)?;
            }
        }
        if !existed {
            return Err(ApiError::NotFound(format!(
                "Organisation {org_id} has no own {}",
                kind.label()
            )));
        }
        tracing::info!(
            org_id,
            provider = kind.as_str(),
            "organisation's provider account removed"
        );
        Ok((
            StatusCode::OK,
            serde_json::json!({"org_id": org_id, "provider": {"provider": kind.as_str(), "configured": false}}),
        ))
    }

    async fn list(&self, request: &Request) -> Result<(StatusCode, serde_json::Value), ApiError> {
        let org_id = self.organisation(request).await?;
        let mut providers = Vec::new();
        for kind in SecretKind::ALL {
            let updated_at = self
                .secrets
                .changed_at(&org_id, kind)
                .await
                .map_err(secret_failure)?;
            let account_sid = match (kind, &updated_at) {
                (SecretKind::Twilio, Some(_)) => self
                    .tenancy
                    .list(&org_id, Kind::Twilio.prefix())
                    .await
                    .map_err(tenancy_failure)?
                    .into_iter()
                    .find_map(|k| Kind::Twilio.id_of(&k).map(str::to_string)),
                _ => None,
            };
            providers.push(ProviderView {
                provider: kind.as_str(),
                configured: updated_at.is_some(),
                account_sid,
                api_key_sid: None,
                updated_at,
                routes: None,
            });
        }
        let view = ProvidersView { org_id, providers };
        Ok((
            StatusCode::OK,
            serde_json::to_value(view).unwrap_or_default(),
        ))
    }
}
