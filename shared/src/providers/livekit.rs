//! LiveKit's server API over its documented Twirp HTTP interface: rooms,
//! explicit agent dispatch, room-composite egress, and the access tokens
//! (HS256 JWTs with video grants) that both authorise those calls and let a
//! participant join one room.
//!
//! Twirp + `jsonwebtoken` rather than the `livekit-api` crate: the handful of
//! JSON calls below need no generated protobuf code, the binary stays small,
//! and `jsonwebtoken` is already here for webhook verification.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::base::config::Secret;

/// Why a LiveKit call did not succeed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LiveKitError {
    /// The room, dispatch or egress does not exist (Twirp `not_found`).
    #[error("not found: {0}")]
    NotFound(String),
    /// LiveKit refused the request (a Twirp 4xx code other than not_found);
    /// `code` is Twirp's error code, e.g. `permission_denied`.
    #[error("LiveKit refused the request ({code}): {message}")]
    Refused { code: String, message: String },
    /// Network trouble, a timeout, 5xx or an unreadable answer.
    #[error("LiveKit unavailable: {0}")]
    Unavailable(String),
}

/// `livekit.Room`, the fields we use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomInfo {
    #[serde(default)]
    pub sid: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub metadata: String,
}

/// `livekit.ParticipantInfo`, the fields we use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantInfo {
    #[serde(default)]
    pub sid: String,
    #[serde(default)]
    pub identity: String,
    #[serde(default)]
    pub name: String,
    /// `ParticipantInfo.Kind` as LiveKit's JSON gives it ("AGENT", "SIP", ...
    /// or the enum number as text); empty when absent (STANDARD).
    #[serde(default)]
    pub kind: String,
}

impl ParticipantInfo {
    /// The agent: LiveKit's AGENT kind (4), or an identity with the agent prefix.
    pub fn is_agent(&self, identity_prefix: &str) -> bool {
        self.kind.eq_ignore_ascii_case("AGENT")
            || self.kind == "4"
            || (!identity_prefix.is_empty() && self.identity.starts_with(identity_prefix))
    }
}

/// `livekit.AgentDispatch`, the fields we use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentDispatch {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub agent_name: String,
    #[serde(default)]
    pub room: String,
    #[serde(default)]
    pub metadata: String,
}

/// Where a room-composite recording goes: an S3 object LiveKit's egress
/// writes, with the role it assumes to do so (no keys of ours leave AWS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingTarget {
    pub bucket: String,
    pub region: String,
    /// Object key, e.g. `recordings/web-demo/2026-11-21T10-00-00Z.mp4`.
    pub key: String,
    /// Role in our account that LiveKit's egress assumes to write the object.
    pub assume_role_arn: Option<String>,
    /// External id the role's trust policy requires (confused-deputy guard).
    pub assume_role_external_id: Option<String>,
}

/// `livekit.EgressInfo`, the fields we use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressInfo {
    #[serde(default)]
    pub egress_id: String,
    #[serde(default)]
    pub room_name: String,
    /// e.g. `EGRESS_STARTING`, `EGRESS_ACTIVE`, `EGRESS_ENDING`, `EGRESS_COMPLETE`.
    #[serde(default)]
    pub status: String,
}

/// What a participant token lets its holder do: join `room` as `identity`,
/// publish and subscribe, until `ttl` has passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinGrant<'a> {
    pub room: &'a str,
    pub identity: &'a str,
    pub name: &'a str,
    pub ttl: Duration,
}

/// LiveKit's server API as the session flows use it. Every method is safe to
/// repeat: creating an existing room returns it, deleting a missing room or
/// dispatch is `Ok`.
#[async_trait]
pub trait LiveKitRooms: Send + Sync {
    /// `RoomService/CreateRoom` (returns the existing room if there is one).
    async fn create_room(&self, name: &str, metadata: &str) -> Result<RoomInfo, LiveKitError>;
    /// `RoomService/DeleteRoom`; a room that does not exist is `Ok`.
    async fn delete_room(&self, name: &str) -> Result<(), LiveKitError>;
    /// `RoomService/ListParticipants`; `NotFound` if the room does not exist.
    async fn list_participants(&self, room: &str) -> Result<Vec<ParticipantInfo>, LiveKitError>;
    /// `RoomService/RemoveParticipant`; a participant already gone is `Ok`.
    async fn remove_participant(&self, room: &str, identity: &str) -> Result<(), LiveKitError>;
    /// `AgentDispatchService/CreateDispatch` (explicit dispatch by agent name).
    async fn create_dispatch(
        &self,
        room: &str,
        agent_name: &str,
        metadata: &str,
    ) -> Result<AgentDispatch, LiveKitError>;
    /// `AgentDispatchService/ListDispatch` for one room.
    async fn list_dispatches(&self, room: &str) -> Result<Vec<AgentDispatch>, LiveKitError>;
    /// `AgentDispatchService/DeleteDispatch`; a dispatch already gone is `Ok`.
    async fn delete_dispatch(&self, room: &str, dispatch_id: &str) -> Result<(), LiveKitError>;
    /// `Egress/StartRoomCompositeEgress` to one MP4 file in S3.
    async fn start_recording(
        &self,
        room: &str,
        target: &RecordingTarget,
    ) -> Result<EgressInfo, LiveKitError>;
    /// `Egress/StopEgress`; an egress already finished is `Ok` with its info.
    async fn stop_recording(&self, egress_id: &str) -> Result<EgressInfo, LiveKitError>;
}

/// Mints access tokens signed with the project's API key and secret.
#[derive(Clone)]
pub struct AccessTokens {
    pub api_key: String,
    pub api_secret: Secret,
}
