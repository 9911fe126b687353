//! `GET /room/{roomName}/join?invite=<invite>[&name=<display name>]`: the
//! link a chat launcher posts where the whole channel sees it (Teams). The
//! link carries no token, only the room's invite; every visit mints a token
//! for a new guest identity (`guest-<8 random hex>`) and is redirected
//! (302) to the join page of `ROOM_URL_TEMPLATE` with that token, so no two
//! people share a token or an identity, and a revoked or reopened room's
//! link stops working (401).
//!
//! The invite is checked exactly as `/room/join` checks a browser's: its
//! signature, room and expiry, then the room's open session of the invite's
//! organisation (404 otherwise) and its conversation's `invite_key`.
//! Every input is bounded before the one store read.

use http::StatusCode;
use lambda_http::{Body, Request, RequestExt, Response};
use shared::api::ApiError;
use shared::flows::sessions::{
    new_guest_identity, room_url, validate_identity, validate_room_name, RoomAccess,
    SessionLifecycle,
};
use shared::wiring::{self, Wiring};

/// An invite is about 300 characters for the longest room name; anything
/// far longer is refused before it is parsed or hashed.
pub const MAX_INVITE_CHARS: usize = 1024;

/// The display name a visitor gets without `?name=`.
pub const DEFAULT_GUEST_NAME: &str = "Guest";

pub struct RoomJoinLink {
    pub lifecycle: SessionLifecycle,
    /// Tokens, invites, the client URL and `ROOM_URL_TEMPLATE`.
    pub access: RoomAccess,
}

impl RoomJoinLink {
    pub async fn from_env() -> Result<Self, lambda_http::Error> {
        let aws = Wiring::load().await;
        let lifecycle = aws.session_lifecycle(false)?;
        Ok(Self {
            lifecycle,
            access: wiring::room_access()?,
        })
    }

    /// A 302 to the join page, or the error as `{"detail", "code"}`.
    pub async fn handle(&self, request: Request) -> Response<Body> {
        match self.process(&request).await {
            Ok(location) => redirect(&location),
            Err(err) => err.into_response(),
        }
    }

    /// The join page for a new guest of the invite's conversation.
    async fn process(&self, request: &Request) -> Result<String, ApiError> {
        let room = request
            .path_parameters()
            .first("roomName")
            .unwrap_or_default()
            .to_string();
        validate_room_name(&room)?;
        let query = request.query_string_parameters();
        let name = query.first("name").unwrap_or(DEFAULT_GUEST_NAME);
        validate_identity(name, "name")?;
        let invite = query
            .first("invite")
            .filter(|invite| invite.len() <= MAX_INVITE_CHARS)
            .ok_or(ApiError::Unauthorized)?;
        let session = self
            .lifecycle
            .invited(&self.access.invites, invite, &room)
            .await?;
        let token = self
            .access
            .tokens
            .issue(&session.room_name, &new_guest_identity(), name)?;
        Ok(room_url(
            &self.access.room_url_template,
            &self.access.client_url,
            &token,
            &session.room_name,
            invite,
        ))
    }
}

/// `302 Found` to `location`, which holds a token: never stored by a cache,
/// and the join page is not told the link (with its invite) it came from.
fn redirect(location: &str) -> Response<Body> {
    Response::builder()
        .status(StatusCode::FOUND)
        .header(http::header::LOCATION, location)
        .header(http::header::CACHE_CONTROL, "no-store")
        .header(http::header::REFERRER_POLICY, "no-referrer")
        .body(Body::Empty)
        .unwrap_or_else(|err| {
            // Only a template producing a character a header cannot carry.
            tracing::error!(error = %err, "join page URL is not a valid Location");
            ApiError::Unavailable.into_response()
        })
}
