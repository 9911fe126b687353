//! Admin routes connecting chat workspaces to organisations:
//! `POST /organisations/{org_id}/chat-workspaces` (`{"platform", "id"}`),
//! `GET` the same path, `DELETE .../chat-workspaces/{platform}/{id}`. All
//! need `Authorization: Bearer $ADMIN_API_TOKEN`. A workspace belongs to at
//! most one organisation: connecting is one conditional write in the
//! tenancy store, and a workspace another organisation holds is 409 without
//! saying whose it is.

use http::{Method, StatusCode};
use lambda_http::{Body, Request, Response};
use serde::{Deserialize, Serialize};

use crate::api::{self, ApiError};
use crate::base::config::Secret;
use crate::flows::admin::{json_body, org_id, path_param, unavailable};
use crate::store::directory::DirectoryStore;
use crate::store::tenancy::{Claim, Kind, TenancyStore};

/// Longest workspace id accepted: Slack team ids are about 11 characters,
/// Discord guild ids 20 digits, Teams tenant ids 36 (a GUID).
const MAX_ID_CHARS: usize = 64;

/// A chat platform callops launches calls from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Slack,
    Discord,
    Teams,
}

impl Platform {
    const ALL: [Platform; 3] = [Platform::Slack, Platform::Discord, Platform::Teams];

    fn kind(self) -> Kind {
        match self {
            Platform::Slack => Kind::Slack,
            Platform::Discord => Kind::Discord,
            Platform::Teams => Kind::Teams,
        }
    }

    fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.kind().prefix().trim_end_matches('#') == name)
    }
}

/// One connected workspace, as the routes show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workspace {
    pub platform: Platform,
    pub id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewWorkspace {
    platform: Platform,
    id: String,
}

#[derive(Serialize)]
pub struct WorkspaceList {
    org_id: String,
    workspaces: Vec<Workspace>,
}

/// The shape each platform gives its workspace ids: letters, digits, `-`
/// (Teams GUIDs), at most 64 characters. Anything else cannot be a key.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_CHARS
        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

fn invalid_id() -> ApiError {
    ApiError::unprocessable(
        "invalid_workspace_id",
        format!("id must be 1-{MAX_ID_CHARS} letters, digits or '-'"),
    )
}

/// What the route function builds once per cold start (wiring reads it).
pub struct ChatWorkspacesConfig {
    pub token: Secret,
    pub directory: crate::store::directory::DynamoDirectoryStore,
    pub tenancy: std::sync::Arc<dyn TenancyStore>,
}

impl ChatWorkspacesConfig {
    pub fn routes(&self) -> ChatWorkspaces<'_> {
        ChatWorkspaces {
            token: &self.token,
            directory: &self.directory,
            tenancy: self.tenancy.as_ref(),
        }
    }
}

/// `ADMIN_API_TOKEN`, the organisations table and the tenancy store.
pub struct ChatWorkspaces<'a> {
    pub token: &'a Secret,
    pub directory: &'a dyn DirectoryStore,
    pub tenancy: &'a dyn TenancyStore,
}

impl ChatWorkspaces<'_> {
    /// The three routes, told apart by method.
    pub async fn handle(&self, request: Request) -> Response<Body> {
        if let Err(err) = api::require_bearer(request.headers(), self.token) {
            return err.into_response();
        }
        match *request.method() {
            Method::POST => api::respond(self.connect(&request).await),
            Method::GET => api::respond(self.list(&request).await),
            Method::DELETE => api::respond(self.disconnect(&request).await),
            _ => ApiError::NotFound("No such route".into()).into_response(),
        }
    }

    /// 404 unless the organisation exists: a workspace must not be
    /// connected to a typo.
    async fn existing_org(&self, request: &Request) -> Result<String, ApiError> {
        let org_id = org_id(request)?;
        self.directory
            .get_organisation(&org_id)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| ApiError::NotFound("Organisation not found".into()))?;
        Ok(org_id)
    }

    async fn connect(&self, request: &Request) -> Result<(StatusCode, Workspace), ApiError> {
        let new: NewWorkspace = json_body(request)?;
        let id = new.id.trim().to_string();
        if !valid_id(&id) {
            return Err(invalid_id());
        }
        let org_id = self.existing_org(request).await?;
        let key = new.platform.kind().key(&id);
        let status = match self
            .tenancy
            .claim(&key, &org_id)
            .await
            .map_err(unavailable)?
        {
            Claim::Claimed => StatusCode::CREATED,
            Claim::AlreadyOurs => StatusCode::OK,
            Claim::TakenBy => {
                return Err(ApiError::Conflict {
                    code: "workspace_taken",
                    detail: "This workspace is connected to another organisation".into(),
                })
            }
        };
        tracing::info!(org_id = %org_id, platform = ?new.platform, "chat workspace connected");
        Ok((
            status,
            Workspace {
                platform: new.platform,
                id,
            },
        ))
    }

    async fn list(&self, request: &Request) -> Result<(StatusCode, WorkspaceList), ApiError> {
        let org_id = self.existing_org(request).await?;
        let mut workspaces = Vec::new();
        for platform in Platform::ALL {
            let kind = platform.kind();
            let keys = self
                .tenancy
                .list(&org_id, kind.prefix())
                .await
                .map_err(unavailable)?;
            workspaces.extend(keys.iter().filter_map(|key| {
                kind.id_of(key).map(|id| Workspace {
                    platform,
                    id: id.to_string(),
                })
            }));
        }
        Ok((StatusCode::OK, WorkspaceList { org_id, workspaces }))
    }

    /// Answers the workspace it disconnected, as DELETE of an assistant does.
    async fn disconnect(&self, request: &Request) -> Result<(StatusCode, Workspace), ApiError> {
        let org_id = org_id(request)?;
        let not_found =
            || ApiError::NotFound("Workspace not connected to this organisation".into());
        let platform = Platform::parse(&path_param(request, "platform")?).ok_or_else(not_found)?;
        let id = path_param(request, "id")?;
        if !valid_id(&id) {
            return Err(not_found());
        }
        // Conditional on the owner: another organisation's workspace is
        // left alone and answered as absent.
        if self
            .tenancy
            .release(&platform.kind().key(&id), &org_id)
            .await
            .map_err(unavailable)?
        {
            tracing::info!(org_id = %org_id, platform = ?platform, "chat workspace disconnected");
            Ok((StatusCode::OK, Workspace { platform, id }))
        } else {
            Err(not_found())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_parse_from_their_path_names_only() {
        assert_eq!(Platform::parse("slack"), Some(Platform::Slack));
        assert_eq!(Platform::parse("discord"), Some(Platform::Discord));
        assert_eq!(Platform::parse("teams"), Some(Platform::Teams));
        assert_eq!(Platform::parse("Slack"), None);
        assert_eq!(Platform::parse("voice"), None);
        assert_eq!(Platform::parse("webhook-token"), None);
    }

    #[test]
    fn workspace_ids_are_bounded_keys() {
        assert!(valid_id("T0123ABCDEF"));
        assert!(valid_id("123456789012345678"));
        assert!(valid_id("72f988bf-86f1-41af-91ab-2d7cd011db47"));
        assert!(!valid_id(""));
        assert!(!valid_id("T01#voice"));
        assert!(!valid_id("T01 23"));
        assert!(!valid_id(&"x".repeat(MAX_ID_CHARS + 1)));
    }
}
