//! `GET /sessions/{id}` (API key): one session of the caller's organisation.
//! An ended session answers 404, as seed 002's own test expects, unless
//! asked for with `?status=ended`; another organisation's is 404 too.

use std::sync::Arc;

use http::StatusCode;
use lambda_http::{Request, RequestExt};
use shared::api::access::KeyedAccess;
use shared::api::{self, ApiError, Route};
use shared::flows::sessions::{room_of, SessionView};
use shared::store::sessions::SessionStore;
use shared::wiring::Wiring;

pub struct SessionGet {
    pub access: KeyedAccess,
    pub sessions: Arc<dyn SessionStore>,
}

impl SessionGet {
    pub async fn from_env() -> Result<Self, lambda_http::Error> {
        let aws = Wiring::load().await;
        Ok(Self {
            access: aws.keyed_access()?,
            sessions: aws.sessions()?,
        })
    }
}

impl Route for SessionGet {
    type Body = SessionView;

    async fn process(&self, request: Request) -> Result<(StatusCode, SessionView), ApiError> {
        let tenant = self.access.admit(request.headers()).await?;
        let id = request
            .path_parameters()
            .first("id")
            .unwrap_or_default()
            .to_string();
        let not_found = || ApiError::NotFound(format!("Session {id} not found"));
        let include_ended = match request.query_string_parameters().first("status") {
            None | Some("active") => false,
            Some("ended") => true,
            Some(_) => {
                return Err(ApiError::bad_request(
                    "invalid_status",
                    "status must be `active` or `ended`",
                ))
            }
        };
        let room = room_of(&id).ok_or_else(not_found)?;
        let record = self
            .sessions
            .get(&room)
            .await
            .map_err(api::unavailable)?
            .filter(|r| {
                r.org_id.as_deref() == Some(tenant.org_id.as_str())
                    && r.session_id.as_deref() == Some(id.as_str())
            })
            .ok_or_else(not_found)?;
        if record.ended() && !include_ended {
            return Err(not_found());
        }
        Ok((StatusCode::OK, SessionView::of(&record)))
    }
}
