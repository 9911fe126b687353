//! `GET /calls/{id}` (API key): one call of the organisation, any kind, with
//! its whole timeline (intake, statuses, reconciliation, transcript,
//! notifications, recording) in order. `?kind=` (as the log's links carry
//! it) says where to look; without it the call is looked for as an outbound
//! call, then a session, then a recording-pipeline call. Another
//! organisation's call is 404, like one that does not exist.

use std::sync::Arc;

use http::StatusCode;
use lambda_http::{Request, RequestExt};
use shared::api::access::KeyedAccess;
use shared::api::{self, ApiError, Route};
use shared::base::config;
use shared::flows::call_log::{self, CallTimeline, KINDS};
use shared::flows::ingest::CallOwner;
use shared::flows::sessions::room_of;
use shared::store::call_log::LoggedRecord;
use shared::store::calls::CallStore;
use shared::store::outbound_calls::OutboundCallStore;
use shared::store::sessions::SessionStore;
use shared::store::StoreError;
use shared::wiring::Wiring;

pub struct CallTimelineRoute {
    pub access: KeyedAccess,
    pub calls: Arc<dyn CallStore>,
    pub outbound: Arc<dyn OutboundCallStore>,
    pub sessions: Arc<dyn SessionStore>,
    /// `INBOUND_ORG_ID`: whose recording-pipeline calls keep their bare ids.
    pub default_org: Option<String>,
}

/// Longest id any kind of call has (room names are at most 128).
const MAX_ID: usize = 256;

impl CallTimelineRoute {
    pub async fn from_env() -> Result<Self, lambda_http::Error> {
        let aws = Wiring::load().await;
        Ok(Self {
            access: aws.keyed_access()?,
            calls: aws.calls()?,
            outbound: aws.outbound_calls()?,
            sessions: aws.sessions()?,
            default_org: config::optional("INBOUND_ORG_ID"),
        })
    }

    async fn outbound(&self, org: &str, id: &str) -> Result<Option<LoggedRecord>, StoreError> {
        Ok(self
            .outbound
            .get(id)
            .await?
            .filter(|call| call.org_id.as_deref() == Some(org))
            .map(LoggedRecord::Outbound))
    }

    async fn session(&self, org: &str, id: &str) -> Result<Option<LoggedRecord>, StoreError> {
        let Some(room) = room_of(id) else {
            return Ok(None);
        };
        Ok(self
            .sessions
            .get(&room)
            .await?
            .filter(|s| s.org_id.as_deref() == Some(org) && s.session_id.as_deref() == Some(id))
            .map(LoggedRecord::Session))
    }

    async fn recording(&self, org: &str, id: &str) -> Result<Option<LoggedRecord>, StoreError> {
        let key = CallOwner::organisation(org, self.default_org.as_deref()).record_key(id);
        Ok(self
            .calls
            .get(&key)
            .await?
            .filter(|record| record.org_id.as_deref() == Some(org))
            .map(LoggedRecord::Recording))
    }
}

impl Route for CallTimelineRoute {
    type Body = CallTimeline;

    async fn process(&self, request: Request) -> Result<(StatusCode, CallTimeline), ApiError> {
        let tenant = self.access.admit(request.headers()).await?;
        let id = request
            .path_parameters()
            .first("id")
            .unwrap_or_default()
            .to_string();
        let not_found = || ApiError::NotFound(format!("Call {id} not found"));
        let kind = request
            .query_string_parameters()
            .first("kind")
            .map(str::to_string);
        if let Some(kind) = &kind {
            if !KINDS.contains(&kind.as_str()) {
                return Err(ApiError::bad_request(
                    "invalid_kind",
                    format!("kind must be one of {}", KINDS.join(", ")),
                ));
            }
        }
        // Bounded before any store call: no kind of call has such an id.
        if id.is_empty() || id.len() > MAX_ID || id.chars().any(char::is_control) {
            return Err(not_found());
        }
        let org = tenant.org_id.as_str();
        let found = match kind.as_deref() {
            Some("outbound") => self.outbound(org, &id).await,
            Some("recording") => self.recording(org, &id).await,
            Some(_) => self.session(org, &id).await,
            None => match self.outbound(org, &id).await {
                Ok(None) => match self.session(org, &id).await {
                    Ok(None) => self.recording(org, &id).await,
                    other => other,
                },
                other => other,
            },
        }
        .map_err(api::unavailable)?
        .ok_or_else(not_found)?;
        Ok((StatusCode::OK, call_log::timeline(&found)))
    }
}
