//! `POST /room/{roomName}/invites/revoke` (API key of the room's
//! organisation; 404 otherwise): every invite issued so far for the room's
//! conversation stops opening `/room/join`, and the answer carries a fresh
//! invite for the people who should still come in. Tokens already minted
//! keep working until they expire (`ROOM_TOKEN_TTL_SECONDS`).

use http::StatusCode;
use lambda_http::{Request, RequestExt};
use serde::Serialize;
use shared::api::access::KeyedAccess;
use shared::api::invites::RoomInvites;
use shared::api::{ApiError, Route};
use shared::flows::sessions::{validate_room_name, SessionLifecycle};
use shared::wiring::Wiring;

pub struct RoomInvitesRevoke {
    pub access: KeyedAccess,
    pub lifecycle: SessionLifecycle,
    pub invites: RoomInvites,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Revoked {
    room_name: String,
    /// A new invite to the same conversation.
    invite: String,
}

impl RoomInvitesRevoke {
    pub async fn from_env() -> Result<Self, lambda_http::Error> {
        let aws = Wiring::load().await;
        Ok(Self {
            access: aws.keyed_access()?,
            lifecycle: aws.session_lifecycle(false)?,
            invites: RoomInvites::from_env()?,
        })
    }
}

impl Route for RoomInvitesRevoke {
    type Body = Revoked;

    async fn process(&self, request: Request) -> Result<(StatusCode, Revoked), ApiError> {
        let tenant = self.access.admit(request.headers()).await?;
        let room = request
            .path_parameters()
            .first("roomName")
            .unwrap_or_default()
            .to_string();
        validate_room_name(&room).map_err(|_| ApiError::NotFound("Room not found".into()))?;
        // Only the owner may revoke: another organisation's room is a 404.
        let session = self.lifecycle.owned(&room, &tenant.org_id).await?;
        let conversation = self.lifecycle.revoke_invites(&session.room_name).await?;
        let invite = self
            .invites
            .issue(&session.room_name, &tenant.org_id, &conversation);
        Ok((
            StatusCode::OK,
            Revoked {
                room_name: session.room_name,
                invite,
            },
        ))
    }
}
