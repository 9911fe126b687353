//! `GET /sessions` (API key): the organisation's active sessions with counts
//! by type, read from its index partition (no table scan).
//! `?status=ended` lists the most recently ended instead (`limit`, default
//! 50, at most 200).

use std::collections::BTreeMap;
use std::sync::Arc;

use http::StatusCode;
use lambda_http::{Request, RequestExt};
use serde::Serialize;
use shared::api::access::KeyedAccess;
use shared::api::{self, ApiError, Route};
use shared::flows::sessions::{SessionView, SESSION_KINDS};
use shared::store::sessions::SessionStore;
use shared::wiring::Wiring;

pub struct SessionsList {
    pub access: KeyedAccess,
    pub sessions: Arc<dyn SessionStore>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Listing {
    sessions: Vec<SessionView>,
    total: usize,
    by_type: BTreeMap<String, usize>,
}

const MAX_ENDED: i32 = 200;

impl SessionsList {
    pub async fn from_env() -> Result<Self, lambda_http::Error> {
        let aws = Wiring::load().await;
        Ok(Self {
            access: aws.keyed_access()?,
            sessions: aws.sessions()?,
        })
    }
}

/// Counts per type; every kind appears, with 0 when it has none.
pub fn by_type(sessions: &[SessionView]) -> BTreeMap<String, usize> {
    let mut counts: BTreeMap<String, usize> = SESSION_KINDS
        .iter()
        .map(|k| (k.name().to_string(), 0))
        .collect();
    for session in sessions {
        *counts.entry(session.session_type.clone()).or_default() += 1;
    }
    counts
}

impl Route for SessionsList {
    type Body = Listing;

    async fn process(&self, request: Request) -> Result<(StatusCode, Listing), ApiError> {
        let tenant = self.access.admit(request.headers()).await?;
        let query = request.query_string_parameters();
        let records = match query.first("status") {
            None | Some("active") => self.sessions.list_active(&tenant.org_id).await,
            Some("ended") => {
                let limit = match query.first("limit") {
                    None => 50,
                    Some(text) => text
                        .parse::<i32>()
                        .ok()
                        .filter(|l| (1..=MAX_ENDED).contains(l))
                        .ok_or_else(|| {
                            ApiError::bad_request(
                                "invalid_limit",
                                format!("limit must be 1-{MAX_ENDED}"),
                            )
                        })?,
                };
                self.sessions.list_ended(&tenant.org_id, limit).await
            }
            Some(_) => {
                return Err(ApiError::bad_request(
                    "invalid_status",
                    "status must be `active` or `ended`",
                ))
            }
        }
        .map_err(api::unavailable)?;
        let sessions: Vec<SessionView> = records.iter().map(SessionView::of).collect();
        Ok((
            StatusCode::OK,
            Listing {
                total: sessions.len(),
                by_type: by_type(&sessions),
                sessions,
            },
        ))
    }
}
