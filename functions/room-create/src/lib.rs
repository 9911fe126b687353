//! `POST /room/create` `{"roomName", "hostIdentity", "hostName"}` (API key):
//! creates the LiveKit room, dispatches the agent, records session
//! `web-{roomName}` and answers the host's token, the server URL, an invite
//! for `/room/join` and a `roomUrl` a person can open to join with a
//! microphone (by default LiveKit Meet's custom-server page, so it works
//! with no frontend of ours).

use std::time::Duration;

use http::StatusCode;
use lambda_http::Request;
use serde::{Deserialize, Serialize};
use shared::api::access::KeyedAccess;
use shared::api::{self, ApiError, Route};
use shared::flows::sessions::{
    validate_host_identity, validate_identity, validate_room_name, Opening, RoomAccess,
    SessionKind, SessionLifecycle, RESERVED_ROOM_PREFIXES,
};
use shared::wiring::{self, Wiring};

pub struct RoomCreate {
    pub access: KeyedAccess,
    pub lifecycle: SessionLifecycle,
    pub access_links: RoomAccess,
    pub lease: Duration,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateRequest {
    room_name: Option<String>,
    #[serde(default)]
    host_identity: Option<String>,
    #[serde(default)]
    host_name: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Created {
    room_name: String,
    room_url: String,
    token: String,
    url: String,
    session_id: String,
    /// For `/room/join` without an API key (body field `invite`).
    invite: String,
}

impl RoomCreate {
    pub async fn from_env() -> Result<Self, lambda_http::Error> {
        let aws = Wiring::load().await;
        Ok(Self {
            access: aws.keyed_access()?,
            lifecycle: aws.session_lifecycle(true)?,
            access_links: wiring::room_access()?,
            lease: wiring::dedup_lease()?,
        })
    }
}

impl Route for RoomCreate {
    type Body = Created;

    async fn process(&self, request: Request) -> Result<(StatusCode, Created), ApiError> {
        let tenant = self.access.admit(request.headers()).await?;
        let body: CreateRequest = api::parse_json(
            api::body_bytes(request.body())?,
            "{\"roomName\", \"hostIdentity\", \"hostName\"}",
        )?;
        let room = body
            .room_name
            .ok_or_else(|| ApiError::unprocessable("missing_field", "roomName is required"))?;
        validate_room_name(&room)?;
        if let Some(prefix) = RESERVED_ROOM_PREFIXES
            .iter()
            .find(|p| room.starts_with(**p))
        {
            return Err(ApiError::unprocessable(
                "reserved_room_name",
                format!("roomName may not start with `{prefix}`: those rooms belong to calls"),
            ));
        }
        let host_identity = body.host_identity.unwrap_or_else(|| "host".into());
        // Guests' (`guest-`) and the agent's identities are not the host's to take.
        validate_host_identity(&host_identity, &self.lifecycle.agent_identity_prefix)?;
        let host_name = body.host_name.unwrap_or_else(|| host_identity.clone());
        validate_identity(&host_name, "hostName")?;
        let opening = Opening {
            kind: SessionKind::Web,
            key: room.clone(),
            org_id: tenant.org_id.clone(),
            call_sid: None,
            direction: None,
            from_number: None,
            to_number: None,
            host_identity: Some(host_identity.clone()),
            caller: Some(host_name.clone()),
            reopen: false,
        };
        let lease = api::remaining_time(&request).unwrap_or(self.lease);
        let opened = self.lifecycle.open(&opening, lease).await?;
        let conversation = self.lifecycle.invite_key(&opened.room).await?;
        let links = self.access_links.links(
            &opened.room,
            &tenant.org_id,
            &conversation,
            &host_identity,
            &host_name,
        )?;
        Ok((
            StatusCode::CREATED,
            Created {
                room_name: opened.room,
                room_url: links.room_url,
                token: links.token,
                url: links.url,
                session_id: opened.session_id,
                invite: links.invite,
            },
        ))
    }
}
