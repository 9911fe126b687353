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
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

use crate::base::config::{self, ConfigError, Secret};

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
    #[serde(default, deserialize_with = "enum_text")]
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
    #[serde(default, alias = "agentName")]
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
    #[serde(default, alias = "egressId")]
    pub egress_id: String,
    #[serde(default, alias = "roomName")]
    pub room_name: String,
    /// e.g. `EGRESS_STARTING`, `EGRESS_ACTIVE`, `EGRESS_ENDING`, `EGRESS_COMPLETE`.
    #[serde(default, deserialize_with = "egress_status")]
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
    /// The room's egresses that are starting or active:
    /// what is really recording, whatever our record says.
    async fn list_active_egress(&self, room: &str) -> Result<Vec<EgressInfo>, LiveKitError>;
}

/// Mints access tokens signed with the project's API key and secret.
#[derive(Clone)]
pub struct AccessTokens {
    pub api_key: String,
    pub api_secret: Secret,
}

/// How long a server token (one API call) stays valid.
const SERVER_TOKEN_TTL: Duration = Duration::from_secs(60);

/// Every call gives up after this long, so a hung LiveKit cannot eat the
/// Lambda's deadline; it answers in milliseconds when healthy.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// `LIVEKIT_EMPTY_TIMEOUT_SECONDS` when unset: how long an empty room lives.
pub const DEFAULT_EMPTY_TIMEOUT_SECS: u32 = 300;

/// The `video` claim of an access token, with LiveKit's camelCase claim names
/// (`auth.VideoGrant` in livekit/protocol). Unset permissions are left out of
/// the token, as LiveKit's own SDKs do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VideoGrant {
    #[serde(default, skip_serializing_if = "is_false")]
    pub room_create: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub room_list: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub room_record: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub room_admin: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub room_join: bool,
    /// The one room `room_admin` / `room_join` apply to.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub room: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_publish: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_subscribe: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_publish_data: Option<bool>,
}

fn is_false(value: &bool) -> bool {
    !*value
}

impl VideoGrant {
    /// Create and delete rooms.
    pub fn room_create() -> Self {
        Self {
            room_create: true,
            ..Self::default()
        }
    }

    /// List rooms.
    pub fn room_list() -> Self {
        Self {
            room_list: true,
            ..Self::default()
        }
    }

    /// Start and stop egress.
    pub fn room_record() -> Self {
        Self {
            room_record: true,
            ..Self::default()
        }
    }

    /// Manage one room: its participants and agent dispatches.
    pub fn room_admin(room: &str) -> Self {
        Self {
            room_admin: true,
            room: room.to_owned(),
            ..Self::default()
        }
    }

    /// Join one room, publishing and subscribing (audio, video and data).
    pub fn room_join(room: &str) -> Self {
        Self {
            room_join: true,
            room: room.to_owned(),
            can_publish: Some(true),
            can_subscribe: Some(true),
            can_publish_data: Some(true),
            ..Self::default()
        }
    }
}

/// An access token's claims: registered claims plus LiveKit's grants.
#[derive(Debug, Serialize, Deserialize)]
struct TokenClaims {
    /// The API key.
    iss: String,
    /// The participant identity; absent in server tokens.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    sub: String,
    /// The participant's display name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    name: String,
    nbf: i64,
    exp: i64,
    video: VideoGrant,
}

impl AccessTokens {
    /// `LIVEKIT_API_KEY` and `LIVEKIT_API_SECRET`.
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            api_key: config::required("LIVEKIT_API_KEY")?,
            api_secret: config::required_secret("LIVEKIT_API_SECRET")?,
        })
    }

    /// A participant token: join `grant.room` as `grant.identity`, publish
    /// and subscribe, valid from now for `grant.ttl`. A token without a room,
    /// an identity or a lifetime would only be turned away when used, so it
    /// is refused here (`invalid_argument`).
    pub fn join_token(&self, grant: &JoinGrant<'_>) -> Result<String, LiveKitError> {
        let invalid = |message: &str| LiveKitError::Refused {
            code: "invalid_argument".into(),
            message: message.into(),
        };
        if grant.room.trim().is_empty() {
            return Err(invalid("a join token needs a room"));
        }
        if grant.identity.trim().is_empty() {
            return Err(invalid("a join token needs an identity"));
        }
        if grant.ttl.as_secs() == 0 {
            return Err(invalid(
                "a join token needs a lifetime of at least one second",
            ));
        }
        self.sign(
            grant.identity,
            grant.name,
            grant.ttl,
            VideoGrant::room_join(grant.room),
        )
    }

    /// A token for one server API call: the given grant, valid for a minute.
    pub(crate) fn server_token(&self, video: VideoGrant) -> Result<String, LiveKitError> {
        self.sign("", "", SERVER_TOKEN_TTL, video)
    }

    fn sign(
        &self,
        identity: &str,
        name: &str,
        ttl: Duration,
        video: VideoGrant,
    ) -> Result<String, LiveKitError> {
        let now = chrono::Utc::now().timestamp();
        let ttl = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2);
        let claims = TokenClaims {
            iss: self.api_key.clone(),
            sub: identity.to_owned(),
            name: name.to_owned(),
            nbf: now,
            exp: now.saturating_add(ttl),
            video,
        };
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(self.api_secret.expose().as_bytes()),
        )
        .map_err(|e| LiveKitError::Unavailable(format!("could not sign a LiveKit token: {e}")))
    }
}

/// The server API's HTTP base from `LIVEKIT_URL`, which may be given as the
/// `wss://`/`ws://` URL browsers use or as `https://`/`http://`.
fn api_url_from(livekit_url: &str) -> Result<String, String> {
    let raw = livekit_url.trim();
    let parsed = url::Url::parse(raw).map_err(|e| e.to_string())?;
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host".into());
    }
    let rest = &raw[parsed.scheme().len()..];
    let scheme = match parsed.scheme() {
        "wss" | "https" => "https",
        "ws" | "http" => "http",
        other => return Err(format!("expected wss, ws, https or http, not {other}")),
    };
    Ok(format!("{scheme}{rest}").trim_end_matches('/').to_owned())
}

/// The `wss://`/`ws://` form of an API URL, for browsers and agents.
fn ws_url_from(api_url: &str) -> String {
    if let Some(rest) = api_url.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = api_url.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        api_url.to_owned()
    }
}

/// A protobuf enum the way protojson may write it: its name or its number.
#[derive(Deserialize)]
#[serde(untagged)]
enum EnumValue {
    Name(String),
    Number(i64),
}

/// An enum field as text: the name as given, or the number as digits.
fn enum_text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    Ok(match Option::<EnumValue>::deserialize(deserializer)? {
        None => String::new(),
        Some(EnumValue::Name(name)) => name,
        Some(EnumValue::Number(number)) => number.to_string(),
    })
}

/// `livekit.EgressStatus`, in enum-number order.
const EGRESS_STATUSES: [&str; 7] = [
    "EGRESS_STARTING",
    "EGRESS_ACTIVE",
    "EGRESS_ENDING",
    "EGRESS_COMPLETE",
    "EGRESS_FAILED",
    "EGRESS_ABORTED",
    "EGRESS_LIMIT_REACHED",
];

/// Statuses of an egress that is stopping or stopped: not "recording".
const EGRESS_ENDED: [&str; 5] = [
    "EGRESS_ENDING",
    "EGRESS_COMPLETE",
    "EGRESS_FAILED",
    "EGRESS_ABORTED",
    "EGRESS_LIMIT_REACHED",
];

/// `EgressInfo.status` by name; a number is turned into its name.
fn egress_status<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    Ok(match Option::<EnumValue>::deserialize(deserializer)? {
        None => String::new(),
        Some(EnumValue::Name(name)) => name,
        Some(EnumValue::Number(number)) => usize::try_from(number)
            .ok()
            .and_then(|i| EGRESS_STATUSES.get(i))
            .map_or_else(|| number.to_string(), |name| (*name).to_owned()),
    })
}

/// Twirp's error body.
#[derive(Debug, Default, Deserialize)]
struct TwirpError {
    #[serde(default)]
    code: String,
    #[serde(default)]
    msg: String,
}

/// A Twirp error answer as a [`LiveKitError`]: `not_found` (or a bare 404)
/// is `NotFound`; 5xx, 429 and 408 (`unavailable`, `internal`,
/// `resource_exhausted`, `deadline_exceeded`...) are `Unavailable`; any other
/// code is `Refused`, including `bad_route` (a wrong `LIVEKIT_URL` must not
/// pass for a missing room).
fn twirp_error(status: u16, body: &[u8]) -> LiveKitError {
    let error: TwirpError = serde_json::from_slice(body).unwrap_or_default();
    let message = if error.msg.is_empty() {
        format!("HTTP {status}")
    } else {
        error.msg
    };
    if status >= 500 || status == 429 || status == 408 {
        let code = if error.code.is_empty() {
            String::new()
        } else {
            format!(" ({})", error.code)
        };
        return LiveKitError::Unavailable(format!(
            "LiveKit answered HTTP {status}{code}: {message}"
        ));
    }
    if error.code == "not_found" || (error.code.is_empty() && status == 404) {
        return LiveKitError::NotFound(message);
    }
    LiveKitError::Refused {
        code: if error.code.is_empty() {
            format!("http_{status}")
        } else {
            error.code
        },
        message,
    }
}

/// The server API calls we make: each one's Twirp route and the grant it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rpc {
    CreateRoom,
    DeleteRoom,
    ListParticipants,
    RemoveParticipant,
    CreateDispatch,
    ListDispatch,
    DeleteDispatch,
    StartRoomCompositeEgress,
    StopEgress,
    ListEgress,
}

impl Rpc {
    fn service(self) -> &'static str {
        match self {
            Rpc::CreateRoom | Rpc::DeleteRoom | Rpc::ListParticipants | Rpc::RemoveParticipant => {
                "livekit.RoomService"
            }
            Rpc::CreateDispatch | Rpc::ListDispatch | Rpc::DeleteDispatch => {
                "livekit.AgentDispatchService"
            }
            Rpc::StartRoomCompositeEgress | Rpc::StopEgress | Rpc::ListEgress => "livekit.Egress",
        }
    }

    fn method(self) -> &'static str {
        match self {
            Rpc::CreateRoom => "CreateRoom",
            Rpc::DeleteRoom => "DeleteRoom",
            Rpc::ListParticipants => "ListParticipants",
            Rpc::RemoveParticipant => "RemoveParticipant",
            Rpc::CreateDispatch => "CreateDispatch",
            Rpc::ListDispatch => "ListDispatch",
            Rpc::DeleteDispatch => "DeleteDispatch",
            Rpc::StartRoomCompositeEgress => "StartRoomCompositeEgress",
            Rpc::StopEgress => "StopEgress",
            Rpc::ListEgress => "ListEgress",
        }
    }

    /// The least LiveKit accepts for this call; `room` scopes the admin grant.
    fn grant(self, room: &str) -> VideoGrant {
        match self {
            Rpc::CreateRoom | Rpc::DeleteRoom => VideoGrant::room_create(),
            Rpc::ListParticipants
            | Rpc::RemoveParticipant
            | Rpc::CreateDispatch
            | Rpc::ListDispatch
            | Rpc::DeleteDispatch => VideoGrant::room_admin(room),
            Rpc::StartRoomCompositeEgress | Rpc::StopEgress | Rpc::ListEgress => {
                VideoGrant::room_record()
            }
        }
    }
}

// Request bodies, with protobuf field names (protojson accepts them always).

#[derive(Serialize)]
struct CreateRoomRequest<'a> {
    name: &'a str,
    empty_timeout: u32,
    metadata: &'a str,
}

/// `DeleteRoomRequest`, `ListParticipantsRequest` and
/// `ListAgentDispatchRequest` (all dispatches of the room) alike.
#[derive(Serialize)]
struct RoomRequest<'a> {
    room: &'a str,
}

#[derive(Serialize)]
struct RoomParticipantIdentity<'a> {
    room: &'a str,
    identity: &'a str,
}

#[derive(Serialize)]
struct CreateAgentDispatchRequest<'a> {
    agent_name: &'a str,
    room: &'a str,
    metadata: &'a str,
}

#[derive(Serialize)]
struct DeleteAgentDispatchRequest<'a> {
    dispatch_id: &'a str,
    room: &'a str,
}

/// Calls are voice only: the recording is the room's mixed audio, so no
/// `layout` (a video setting) is sent.
#[derive(Serialize)]
struct RoomCompositeEgressRequest<'a> {
    room_name: &'a str,
    audio_only: bool,
    file_outputs: [EncodedFileOutput<'a>; 1],
}

#[derive(Serialize)]
struct EncodedFileOutput<'a> {
    /// `EncodedFileType` by name.
    file_type: &'static str,
    filepath: &'a str,
    s3: S3Upload<'a>,
}

#[derive(Serialize)]
struct S3Upload<'a> {
    bucket: &'a str,
    region: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    assume_role_arn: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    assume_role_external_id: Option<&'a str>,
}

#[derive(Serialize)]
struct StopEgressRequest<'a> {
    egress_id: &'a str,
}

// Response bodies that wrap what we return.

#[derive(Deserialize)]
struct ListParticipantsResponse {
    #[serde(default)]
    participants: Vec<ParticipantInfo>,
}

#[derive(Deserialize)]
struct ListAgentDispatchResponse {
    #[serde(default, alias = "agentDispatches")]
    agent_dispatches: Vec<AgentDispatch>,
}

/// The body of an answer; an empty body reads as `{}` (the empty messages).
fn parse_answer<R: DeserializeOwned>(body: &[u8]) -> Result<R, serde_json::Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        serde_json::from_slice(b"{}")
    } else {
        serde_json::from_slice(body)
    }
}

/// Proto3 leaves the zero enum out of JSON that skips defaults: no status
/// is `EGRESS_STARTING`.
fn with_default_status(mut info: EgressInfo) -> EgressInfo {
    if info.status.is_empty() {
        info.status = EGRESS_STATUSES[0].to_owned();
    }
    info
}

/// A transport error as text, without the URL, with its causes.
fn transport_error(rpc: Rpc, error: reqwest::Error) -> LiveKitError {
    if error.is_timeout() {
        return LiveKitError::Unavailable(format!(
            "LiveKit {} timed out after {} ms",
            rpc.method(),
            REQUEST_TIMEOUT.as_millis()
        ));
    }
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    LiveKitError::Unavailable(format!("LiveKit {}: {text}", rpc.method()))
}

/// LiveKit's server API over Twirp (JSON), one short-lived token per call.
#[derive(Clone)]
pub struct LiveKitClient {
    pub http: reqwest::Client,
    /// `https://...` (or `http://` locally), no trailing slash.
    pub api_url: String,
    pub tokens: AccessTokens,
    /// A room nobody joins (or everybody left) closes after this many seconds.
    pub empty_timeout_secs: u32,
}

impl LiveKitClient {
    /// `LIVEKIT_URL` (`wss://`, `ws://`, `https://` or `http://`), the API
    /// key and secret (see [`AccessTokens::from_env`]) and
    /// `LIVEKIT_EMPTY_TIMEOUT_SECONDS` (default 300).
    pub fn from_env(http: reqwest::Client) -> Result<Self, ConfigError> {
        let api_url = api_url_from(&config::required("LIVEKIT_URL")?).map_err(|reason| {
            ConfigError::Invalid {
                name: "LIVEKIT_URL",
                reason,
            }
        })?;
        Ok(Self {
            http,
            api_url,
            tokens: AccessTokens::from_env()?,
            empty_timeout_secs: config::parsed_or(
                "LIVEKIT_EMPTY_TIMEOUT_SECONDS",
                DEFAULT_EMPTY_TIMEOUT_SECS,
            )?,
        })
    }

    /// The `wss://` (or `ws://`) URL browsers and agents connect to.
    pub fn client_url(&self) -> String {
        ws_url_from(&self.api_url)
    }

    /// One Twirp call: POST JSON with a token carrying the call's grant.
    async fn call<B: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        rpc: Rpc,
        room: &str,
        body: &B,
    ) -> Result<R, LiveKitError> {
        let token = self.tokens.server_token(rpc.grant(room))?;
        let response = self
            .http
            .post(format!(
                "{}/twirp/{}/{}",
                self.api_url,
                rpc.service(),
                rpc.method()
            ))
            .timeout(REQUEST_TIMEOUT)
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .map_err(|e| transport_error(rpc, e))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| transport_error(rpc, e))?;
        if !status.is_success() {
            let error = twirp_error(status.as_u16(), &bytes);
            if matches!(error, LiveKitError::Unavailable(_)) {
                tracing::warn!(call = rpc.method(), error = %error, "LiveKit unavailable");
            }
            return Err(error);
        }
        parse_answer(&bytes).map_err(|e| {
            LiveKitError::Unavailable(format!("unreadable LiveKit {} answer: {e}", rpc.method()))
        })
    }
}

/// `Ok(())` when the thing to remove is already gone.
fn gone_is_ok(result: Result<serde::de::IgnoredAny, LiveKitError>) -> Result<(), LiveKitError> {
    match result {
        Ok(_) | Err(LiveKitError::NotFound(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

#[async_trait]
impl LiveKitRooms for LiveKitClient {
    async fn create_room(&self, name: &str, metadata: &str) -> Result<RoomInfo, LiveKitError> {
        let request = CreateRoomRequest {
            name,
            empty_timeout: self.empty_timeout_secs,
            metadata,
        };
        self.call(Rpc::CreateRoom, name, &request).await
    }

    async fn delete_room(&self, name: &str) -> Result<(), LiveKitError> {
        gone_is_ok(
            self.call(Rpc::DeleteRoom, name, &RoomRequest { room: name })
                .await,
        )
    }

    async fn list_participants(&self, room: &str) -> Result<Vec<ParticipantInfo>, LiveKitError> {
        let answer: ListParticipantsResponse = self
            .call(Rpc::ListParticipants, room, &RoomRequest { room })
            .await?;
        Ok(answer.participants)
    }

    async fn remove_participant(&self, room: &str, identity: &str) -> Result<(), LiveKitError> {
        let request = RoomParticipantIdentity { room, identity };
        gone_is_ok(self.call(Rpc::RemoveParticipant, room, &request).await)
    }

    async fn create_dispatch(
        &self,
        room: &str,
        agent_name: &str,
        metadata: &str,
    ) -> Result<AgentDispatch, LiveKitError> {
        let request = CreateAgentDispatchRequest {
            agent_name,
            room,
            metadata,
        };
        self.call(Rpc::CreateDispatch, room, &request).await
    }

    /// A room that does not exist has no dispatches.
    async fn list_dispatches(&self, room: &str) -> Result<Vec<AgentDispatch>, LiveKitError> {
        match self
            .call::<_, ListAgentDispatchResponse>(Rpc::ListDispatch, room, &RoomRequest { room })
            .await
        {
            Ok(answer) => Ok(answer.agent_dispatches),
            Err(LiveKitError::NotFound(_)) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    async fn delete_dispatch(&self, room: &str, dispatch_id: &str) -> Result<(), LiveKitError> {
        let request = DeleteAgentDispatchRequest { dispatch_id, room };
        gone_is_ok(self.call(Rpc::DeleteDispatch, room, &request).await)
    }

    async fn start_recording(
        &self,
        room: &str,
        target: &RecordingTarget,
    ) -> Result<EgressInfo, LiveKitError> {
        let request = RoomCompositeEgressRequest {
            room_name: room,
            audio_only: true,
            file_outputs: [EncodedFileOutput {
                file_type: "MP4",
                filepath: &target.key,
                s3: S3Upload {
                    bucket: &target.bucket,
                    region: &target.region,
                    assume_role_arn: target.assume_role_arn.as_deref(),
                    assume_role_external_id: target.assume_role_external_id.as_deref(),
                },
            }],
        };
        let mut info: EgressInfo = self
            .call(Rpc::StartRoomCompositeEgress, room, &request)
            .await?;
        if info.room_name.is_empty() {
            info.room_name = room.to_owned();
        }
        Ok(with_default_status(info))
    }

    /// An egress that already ended (`failed_precondition`) or is no longer
    /// known (`not_found`) is reported complete.
    async fn stop_recording(&self, egress_id: &str) -> Result<EgressInfo, LiveKitError> {
        match self
            .call::<_, EgressInfo>(Rpc::StopEgress, "", &StopEgressRequest { egress_id })
            .await
        {
            Ok(info) => Ok(with_default_status(info)),
            Err(LiveKitError::NotFound(_)) => Ok(ended(egress_id)),
            Err(LiveKitError::Refused { code, .. }) if code == "failed_precondition" => {
                Ok(ended(egress_id))
            }
            Err(e) => Err(e),
        }
    }

    async fn list_active_egress(&self, room: &str) -> Result<Vec<EgressInfo>, LiveKitError> {
        let request = ListEgressRequest {
            room_name: room,
            active: true,
        };
        let answer: ListEgressResponse = self.call(Rpc::ListEgress, room, &request).await?;
        Ok(answer
            .items
            .into_iter()
            .map(with_default_status)
            .filter(|e| !EGRESS_ENDED.contains(&e.status.as_str()))
            .collect())
    }
}

#[derive(Serialize)]
struct ListEgressRequest<'a> {
    room_name: &'a str,
    active: bool,
}

#[derive(Deserialize)]
struct ListEgressResponse {
    #[serde(default)]
    items: Vec<EgressInfo>,
}

fn ended(egress_id: &str) -> EgressInfo {
    EgressInfo {
        egress_id: egress_id.to_owned(),
        room_name: String::new(),
        status: "EGRESS_COMPLETE".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "APIkey123";
    const SECRET: &str = "a-secret-long-enough-for-hs256-0123456789";

    fn tokens() -> AccessTokens {
        AccessTokens {
            api_key: KEY.into(),
            api_secret: Secret::new(SECRET),
        }
    }

    fn decode(token: &str, secret: &str) -> Result<serde_json::Value, jsonwebtoken::errors::Error> {
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.set_issuer(&[KEY]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss"]);
        validation.validate_nbf = true;
        jsonwebtoken::decode::<serde_json::Value>(
            token,
            &jsonwebtoken::DecodingKey::from_secret(secret.as_bytes()),
            &validation,
        )
        .map(|data| data.claims)
    }

    #[test]
    fn join_token_carries_identity_room_and_publish_grants() {
        let token = tokens()
            .join_token(&JoinGrant {
                room: "web-demo-42",
                identity: "caller-7",
                name: "Ada Lovelace",
                ttl: Duration::from_secs(900),
            })
            .unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, jsonwebtoken::Algorithm::HS256);
        let claims = decode(&token, SECRET).unwrap();
        assert_eq!(claims["iss"], KEY);
        assert_eq!(claims["sub"], "caller-7");
        assert_eq!(claims["name"], "Ada Lovelace");
        let nbf = claims["nbf"].as_i64().unwrap();
        assert_eq!(claims["exp"].as_i64().unwrap() - nbf, 900);
        assert!((nbf - chrono::Utc::now().timestamp()).abs() <= 5);
        assert_eq!(
            claims["video"],
            serde_json::json!({
                "roomJoin": true,
                "room": "web-demo-42",
                "canPublish": true,
                "canSubscribe": true,
                "canPublishData": true,
            })
        );
        assert!(decode(&token, "some-other-secret").is_err());
    }

    #[test]
    fn join_token_needs_room_identity_and_lifetime() {
        let grant = JoinGrant {
            room: "r",
            identity: "i",
            name: "",
            ttl: Duration::from_secs(60),
        };
        for bad in [
            JoinGrant {
                room: " ",
                ..grant.clone()
            },
            JoinGrant {
                identity: "",
                ..grant.clone()
            },
            JoinGrant {
                ttl: Duration::from_millis(500),
                ..grant.clone()
            },
        ] {
            assert!(matches!(
                tokens().join_token(&bad),
                Err(LiveKitError::Refused { code, .. }) if code == "invalid_argument"
            ));
        }
        let claims = decode(&tokens().join_token(&grant).unwrap(), SECRET).unwrap();
        assert!(claims.get("name").is_none(), "an empty name is left out");
    }

    #[test]
    fn each_call_asks_for_the_least_grant_it_needs() {
        use serde_json::json;
        let cases = [
            (
                Rpc::CreateRoom,
                "livekit.RoomService",
                json!({"roomCreate": true}),
            ),
            (
                Rpc::DeleteRoom,
                "livekit.RoomService",
                json!({"roomCreate": true}),
            ),
            (
                Rpc::ListParticipants,
                "livekit.RoomService",
                json!({"roomAdmin": true, "room": "r1"}),
            ),
            (
                Rpc::RemoveParticipant,
                "livekit.RoomService",
                json!({"roomAdmin": true, "room": "r1"}),
            ),
            (
                Rpc::CreateDispatch,
                "livekit.AgentDispatchService",
                json!({"roomAdmin": true, "room": "r1"}),
            ),
            (
                Rpc::ListDispatch,
                "livekit.AgentDispatchService",
                json!({"roomAdmin": true, "room": "r1"}),
            ),
            (
                Rpc::DeleteDispatch,
                "livekit.AgentDispatchService",
                json!({"roomAdmin": true, "room": "r1"}),
            ),
            (
                Rpc::StartRoomCompositeEgress,
                "livekit.Egress",
                json!({"roomRecord": true}),
            ),
            (
                Rpc::StopEgress,
                "livekit.Egress",
                json!({"roomRecord": true}),
            ),
        ];
        for (rpc, service, video) in cases {
            assert_eq!(rpc.service(), service, "{rpc:?}");
            assert_eq!(format!("{:?}", rpc), rpc.method());
            let token = tokens().server_token(rpc.grant("r1")).unwrap();
            let claims = decode(&token, SECRET).unwrap();
            assert_eq!(claims["video"], video, "{rpc:?}");
            assert_eq!(claims["iss"], KEY);
            assert!(
                claims.get("sub").is_none(),
                "server tokens name no participant"
            );
            let lifetime = claims["exp"].as_i64().unwrap() - claims["nbf"].as_i64().unwrap();
            assert_eq!(lifetime, 60, "server tokens are short-lived");
        }
        assert_eq!(
            serde_json::to_value(VideoGrant::room_list()).unwrap(),
            json!({"roomList": true})
        );
    }

    #[test]
    fn livekit_url_in_any_scheme_gives_the_http_api_and_the_ws_client_url() {
        let cases = [
            (
                "wss://callops.livekit.cloud",
                "https://callops.livekit.cloud",
                "wss://callops.livekit.cloud",
            ),
            (
                "wss://callops.livekit.cloud/",
                "https://callops.livekit.cloud",
                "wss://callops.livekit.cloud",
            ),
            (
                "https://lk.example.com/",
                "https://lk.example.com",
                "wss://lk.example.com",
            ),
            (
                "ws://127.0.0.1:7880",
                "http://127.0.0.1:7880",
                "ws://127.0.0.1:7880",
            ),
            (
                "http://127.0.0.1:7880//",
                "http://127.0.0.1:7880",
                "ws://127.0.0.1:7880",
            ),
            (
                "https://proxy.example.com/livekit/",
                "https://proxy.example.com/livekit",
                "wss://proxy.example.com/livekit",
            ),
        ];
        for (given, api, client) in cases {
            let api_url = api_url_from(given).unwrap();
            assert_eq!(api_url, api, "{given}");
            assert_eq!(ws_url_from(&api_url), client, "{given}");
        }
        assert!(api_url_from("ftp://lk.example.com").is_err());
        assert!(api_url_from("lk.example.com").is_err());
        assert!(api_url_from("").is_err());
    }

    #[test]
    fn twirp_errors_map_to_not_found_refused_or_unavailable() {
        let body =
            |code: &str, msg: &str| serde_json::json!({"code": code, "msg": msg}).to_string();
        assert_eq!(
            twirp_error(
                404,
                body("not_found", "requested room does not exist").as_bytes()
            ),
            LiveKitError::NotFound("requested room does not exist".into())
        );
        assert_eq!(
            twirp_error(404, b""),
            LiveKitError::NotFound("HTTP 404".into())
        );
        assert_eq!(
            twirp_error(
                403,
                body("permission_denied", "no permissions to access the room").as_bytes()
            ),
            LiveKitError::Refused {
                code: "permission_denied".into(),
                message: "no permissions to access the room".into()
            }
        );
        assert_eq!(
            twirp_error(
                412,
                body("failed_precondition", "egress not active").as_bytes()
            ),
            LiveKitError::Refused {
                code: "failed_precondition".into(),
                message: "egress not active".into()
            }
        );
        // A wrong path is a configuration error, not a missing room.
        assert!(matches!(
            twirp_error(404, body("bad_route", "no handler for path").as_bytes()),
            LiveKitError::Refused { code, .. } if code == "bad_route"
        ));
        assert!(matches!(
            twirp_error(401, b"<html>nope</html>"),
            LiveKitError::Refused { code, .. } if code == "http_401"
        ));
        for (status, code) in [
            (503, "unavailable"),
            (500, "internal"),
            (429, "resource_exhausted"),
            (408, "deadline_exceeded"),
        ] {
            let error = twirp_error(status, body(code, "busy").as_bytes());
            assert!(
                matches!(&error, LiveKitError::Unavailable(text) if text.contains(code)),
                "{status}: {error:?}"
            );
        }
        assert!(matches!(
            twirp_error(502, b"bad gateway"),
            LiveKitError::Unavailable(_)
        ));
    }

    #[test]
    fn answers_are_read_in_snake_or_camel_case_with_enums_as_names_or_numbers() {
        let snake: ListParticipantsResponse = parse_answer(
            br#"{"participants":[{"sid":"PA_1","identity":"agent-AD_1","name":"","kind":"AGENT","joined_at":"1"},
                                 {"sid":"PA_2","identity":"caller","kind":0}]}"#,
        )
        .unwrap();
        assert_eq!(snake.participants[0].kind, "AGENT");
        assert!(snake.participants[0].is_agent(""));
        assert_eq!(snake.participants[1].kind, "0");
        assert!(!snake.participants[1].is_agent("agent-"));
        let numeric: ListParticipantsResponse =
            parse_answer(br#"{"participants":[{"identity":"a","kind":4},{"identity":"b"}]}"#)
                .unwrap();
        assert!(numeric.participants[0].is_agent(""));
        assert_eq!(numeric.participants[1].kind, "");

        let camel: ListAgentDispatchResponse = parse_answer(
            br#"{"agentDispatches":[{"id":"AD_1","agentName":"callops-agent","room":"r","metadata":"{}"}]}"#,
        )
        .unwrap();
        let snake: ListAgentDispatchResponse = parse_answer(
            br#"{"agent_dispatches":[{"id":"AD_1","agent_name":"callops-agent","room":"r","metadata":"{}"}]}"#,
        )
        .unwrap();
        assert_eq!(camel.agent_dispatches, snake.agent_dispatches);
        assert_eq!(camel.agent_dispatches[0].agent_name, "callops-agent");

        let egress: EgressInfo =
            parse_answer(br#"{"egressId":"EG_1","roomName":"r","status":3}"#).unwrap();
        assert_eq!(egress.egress_id, "EG_1");
        assert_eq!(egress.room_name, "r");
        assert_eq!(egress.status, "EGRESS_COMPLETE");
        let egress: EgressInfo = parse_answer(br#"{"egress_id":"EG_2","room_id":"RM_1"}"#).unwrap();
        assert_eq!(with_default_status(egress).status, "EGRESS_STARTING");

        let _: serde::de::IgnoredAny = parse_answer(b"").unwrap();
        let _: serde::de::IgnoredAny = parse_answer(b"{}").unwrap();
    }

    #[test]
    fn request_bodies_use_protobuf_field_names() {
        let body = RoomCompositeEgressRequest {
            room_name: "r",
            audio_only: true,
            file_outputs: [EncodedFileOutput {
                file_type: "MP4",
                filepath: "recordings/r.mp4",
                s3: S3Upload {
                    bucket: "b",
                    region: "eu-west-1",
                    assume_role_arn: Some("arn:aws:iam::1:role/egress"),
                    assume_role_external_id: None,
                },
            }],
        };
        assert_eq!(
            serde_json::to_value(body).unwrap(),
            serde_json::json!({
                "room_name": "r",
                "audio_only": true,
                "file_outputs": [{
                    "file_type": "MP4",
                    "filepath": "recordings/r.mp4",
                    "s3": {"bucket": "b", "region": "eu-west-1", "assume_role_arn": "arn:aws:iam::1:role/egress"}
                }]
            })
        );
        assert_eq!(
            serde_json::to_value(DeleteAgentDispatchRequest {
                dispatch_id: "AD_1",
                room: "r"
            })
            .unwrap(),
            serde_json::json!({"dispatch_id": "AD_1", "room": "r"})
        );
    }
}
