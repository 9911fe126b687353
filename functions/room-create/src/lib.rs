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
use shared::api::invites::RoomInvites;
use shared::api::{self, ApiError, Route};
use shared::base::config;
use shared::flows::sessions::{
    validate_identity, validate_room_name, JoinTokens, Opening, SessionKind, SessionLifecycle,
    RESERVED_ROOM_PREFIXES,
};
use shared::wiring::{self, Wiring};

/// LiveKit Meet joins any server with a URL and a token.
pub const DEFAULT_ROOM_URL_TEMPLATE: &str =
    "https://meet.livekit.io/custom?liveKitUrl={url}&token={token}";

pub struct RoomCreate {
    pub access: KeyedAccess,
    pub lifecycle: SessionLifecycle,
    pub tokens: JoinTokens,
    pub invites: RoomInvites,
    /// Browsers connect here (`LIVEKIT_URL` as ws(s)).
    pub client_url: String,
    /// `ROOM_URL_TEMPLATE`: `{url}`, `{token}`, `{room}`, `{invite}` are replaced (URL-encoded).
    pub room_url_template: String,
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
            tokens: wiring::join_tokens()?,
            invites: RoomInvites::from_env()?,
            client_url: wiring::livekit()?.client_url(),
            room_url_template: config::optional("ROOM_URL_TEMPLATE")
                .unwrap_or_else(|| DEFAULT_ROOM_URL_TEMPLATE.into()),
            lease: wiring::dedup_lease()?,
        })
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The join page's URL from the template.
pub fn room_url(template: &str, url: &str, token: &str, room: &str, invite: &str) -> String {
    template
        .replace("{url}", &encode(url))
        .replace("{token}", &encode(token))
        .replace("{room}", &encode(room))
        .replace("{invite}", &encode(invite))
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
        validate_identity(&host_identity, "hostIdentity")?;
        let host_name = body.host_name.unwrap_or_else(|| host_identity.clone());
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
        };
        let lease = api::remaining_time(&request).unwrap_or(self.lease);
        let opened = self.lifecycle.open(&opening, lease).await?;
        let token = self
            .tokens
            .issue(&opened.room, &host_identity, &host_name)?;
        let invite = self.invites.issue(&opened.room, &tenant.org_id);
        Ok((
            StatusCode::CREATED,
            Created {
                room_url: room_url(
                    &self.room_url_template,
                    &self.client_url,
                    &token,
                    &opened.room,
                    &invite,
                ),
                room_name: opened.room,
                token,
                url: self.client_url.clone(),
                session_id: opened.session_id,
                invite,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_room_url_is_livekit_meet_with_encoded_values() {
        let url = room_url(
            DEFAULT_ROOM_URL_TEMPLATE,
            "wss://lk.example.com",
            "a.b+c",
            "demo",
            "v1.x",
        );
        assert_eq!(
            url,
            "https://meet.livekit.io/custom?liveKitUrl=wss%3A%2F%2Flk.example.com&token=a.b%2Bc"
        );
        let own = room_url(
            "https://app.example.com/call/{room}?invite={invite}",
            "u",
            "t",
            "my room",
            "v1.a=",
        );
        assert_eq!(own, "https://app.example.com/call/my%20room?invite=v1.a%3D");
    }
}
