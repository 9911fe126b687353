//! `POST /room/join` `{"roomName", "participantIdentity", "participantName"}`:
//! a short-lived token for that one room, and whether the agent is there.
//! Callers with an API key may join their organisation's rooms; a browser
//! holding only the invite `/room/create` returned (body `invite` or header
//! `X-Room-Invite`) may join that room's current conversation and no other
//! (a reopened room or revoked invites refuse it). Browsers call this
//! from the page, so the HTTP API answers CORS for `ALLOWED_ORIGINS`.
//!
//! The token's identity is `guest-<participantIdentity>` (answered as
//! `participantIdentity`): a join never takes the host's, a launcher user's
//! or the agent's identity.

use http::StatusCode;
use lambda_http::Request;
use serde::{Deserialize, Serialize};
use shared::api::access::{presented_key, KeyedAccess};
use shared::api::invites::RoomInvites;
use shared::api::{self, ApiError, Route};
use shared::flows::sessions::{
    guest_identity, validate_identity, validate_room_name, JoinTokens, SessionLifecycle,
};
use shared::wiring::{self, Wiring};

pub struct RoomJoin {
    pub access: KeyedAccess,
    pub lifecycle: SessionLifecycle,
    pub tokens: JoinTokens,
    pub invites: RoomInvites,
    pub client_url: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct JoinRequest {
    room_name: Option<String>,
    participant_identity: Option<String>,
    #[serde(default)]
    participant_name: Option<String>,
    #[serde(default)]
    invite: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Joined {
    token: String,
    agent_present: bool,
    url: String,
    room_name: String,
    /// The identity the token carries (`guest-` + the one asked for).
    participant_identity: String,
}

impl RoomJoin {
    pub async fn from_env() -> Result<Self, lambda_http::Error> {
        let aws = Wiring::load().await;
        let lifecycle = aws.session_lifecycle(false)?;
        Ok(Self {
            access: aws.keyed_access()?,
            lifecycle,
            tokens: wiring::join_tokens()?,
            invites: RoomInvites::from_env()?,
            client_url: wiring::livekit()?.client_url(),
        })
    }
}

impl Route for RoomJoin {
    type Body = Joined;

    async fn process(&self, request: Request) -> Result<(StatusCode, Joined), ApiError> {
        let body: JoinRequest = api::parse_json(
            api::body_bytes(request.body())?,
            "{\"roomName\", \"participantIdentity\", \"participantName\"}",
        )?;
        let room = body
            .room_name
            .ok_or_else(|| ApiError::unprocessable("missing_field", "roomName is required"))?;
        validate_room_name(&room)?;
        let identity = body.participant_identity.ok_or_else(|| {
            ApiError::unprocessable("missing_field", "participantIdentity is required")
        })?;
        validate_identity(&identity, "participantIdentity")?;
        let name = body.participant_name.unwrap_or_else(|| identity.clone());
        validate_identity(&name, "participantName")?;
        let header_invite = request
            .headers()
            .get("x-room-invite")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        // A presented API key decides; an invite is for browsers without one.
        let session = if presented_key(request.headers()).is_some() {
            let org_id = self.access.admit(request.headers()).await?.org_id;
            self.lifecycle.owned(&room, &org_id).await?
        } else {
            let invite = body
                .invite
                .or(header_invite)
                .ok_or(ApiError::Unauthorized)?;
            self.lifecycle
                .invited(&self.invites, &invite, &room)
                .await?
        };
        let identity = guest_identity(&identity);
        let token = self.tokens.issue(&session.room_name, &identity, &name)?;
        let agent_present = self.lifecycle.agent_present(&session.room_name).await?;
        Ok((
            StatusCode::OK,
            Joined {
                token,
                agent_present,
                url: self.client_url.clone(),
                room_name: session.room_name,
                participant_identity: identity,
            },
        ))
    }
}
