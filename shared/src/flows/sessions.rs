//! Seed 002's sessions: every conversation, whichever interface it came
//! from, is a LiveKit room with the agent dispatched to it and a session
//! record. This flow opens, changes and ends them; the routes only parse,
//! authorise and answer.
//!
//! Naming is the seed's: a phone call `CA1` is session `phone-CA1` in room
//! `twilio-CA1`; a web room `demo` is session `web-demo`. The session id
//! maps back to its room (see [`room_of`]), so `GET /sessions/{id}` needs no
//! second index; web rooms may therefore not use another kind's room prefix.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tracing::{info, warn};

use crate::api::ApiError;
use crate::base::metrics;
use crate::flows::call_start::CallStartIntake;
use crate::providers::livekit::{
    AccessTokens, JoinGrant, LiveKitError, LiveKitRooms, RecordingTarget,
};
use crate::queue::jobs::CallStart;
use crate::store::dedup::{run_once, DedupStore, Once, OnceError};
use crate::store::sessions::{
    Ending, NewSession, Opened, SessionChange, SessionRecord, SessionStore,
};

/// What kind of interface a session came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    Phone,
    Whatsapp,
    Web,
    /// A web room started from a chat launcher (seed 002's "Custom Integrations").
    Slack,
    Discord,
    Teams,
}

/// Every kind, in the order `/sessions` counts them.
pub const SESSION_KINDS: [SessionKind; 6] = [
    SessionKind::Phone,
    SessionKind::Whatsapp,
    SessionKind::Web,
    SessionKind::Slack,
    SessionKind::Discord,
    SessionKind::Teams,
];

impl SessionKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Phone => "phone",
            Self::Whatsapp => "whatsapp",
            Self::Web => "web",
            Self::Slack => "slack",
            Self::Discord => "discord",
            Self::Teams => "teams",
        }
    }

    /// The session id of the conversation `key` (a call sid, a room name,
    /// or the launcher's user/channel/conversation id).
    pub fn session_id(self, key: &str) -> String {
        format!("{}-{key}", self.name())
    }

    /// The LiveKit room of the conversation `key`: for every kind but phone
    /// and web, the same as its session id.
    pub fn room(self, key: &str) -> String {
        match self {
            Self::Phone => format!("twilio-{key}"),
            Self::Web => key.to_string(),
            other => other.session_id(key),
        }
    }

    fn parse(name: &str) -> Option<Self> {
        SESSION_KINDS.into_iter().find(|k| k.name() == name)
    }
}

/// Room-name prefixes that belong to a kind other than `web`: a web room
/// named like them would map to another session's id.
pub const RESERVED_ROOM_PREFIXES: [&str; 5] =
    ["twilio-", "whatsapp-", "slack-", "discord-", "teams-"];

/// The room of a session id, if the id is well formed.
pub fn room_of(session_id: &str) -> Option<String> {
    let (kind, key) = session_id.split_once('-')?;
    if key.is_empty() {
        return None;
    }
    Some(SessionKind::parse(kind)?.room(key))
}

/// LiveKit's room names: we allow what every client and URL carries
/// unescaped (letters, digits, `-`, `_`, `.`), at most 128 characters.
pub fn validate_room_name(name: &str) -> Result<(), ApiError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty() || name.len() > 128 || !name.chars().all(allowed) {
        return Err(ApiError::unprocessable(
            "invalid_room_name",
            "roomName must be 1-128 characters: letters, digits, '-', '_' or '.'",
        ));
    }
    Ok(())
}

/// A Twilio call sid as it reaches a room name: letters and digits only.
pub fn validate_call_sid(call_sid: &str) -> Result<(), ApiError> {
    if call_sid.len() < 2
        || call_sid.len() > 64
        || !call_sid.chars().all(|c| c.is_ascii_alphanumeric())
    {
        return Err(ApiError::unprocessable(
            "invalid_call_sid",
            "CallSid must be 2-64 letters and digits",
        ));
    }
    Ok(())
}

/// A participant identity or name as LiveKit tokens carry it.
pub fn validate_identity(value: &str, field: &str) -> Result<(), ApiError> {
    if value.trim().is_empty() || value.len() > 128 || value.chars().any(char::is_control) {
        return Err(ApiError::unprocessable(
            "invalid_identity",
            format!("{field} must be 1-128 printable characters"),
        ));
    }
    Ok(())
}

/// `POST /room/{roomName}/<toggle>` `{"enable": bool}`: the room (404 if its
/// name cannot be one) and what to switch it to.
pub fn room_toggle(request: &lambda_http::Request) -> Result<(String, bool), ApiError> {
    use lambda_http::RequestExt;

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Toggle {
        enable: Option<bool>,
    }
    let room = request
        .path_parameters()
        .first("roomName")
        .unwrap_or_default()
        .to_string();
    validate_room_name(&room).map_err(|_| ApiError::NotFound("Room not found".into()))?;
    let toggle: Toggle = crate::api::parse_json(
        crate::api::body_bytes(request.body())?,
        "{\"enable\": bool}",
    )?;
    let enable = toggle
        .enable
        .ok_or_else(|| ApiError::unprocessable("missing_field", "enable is required"))?;
    Ok((room, enable))
}

/// A session as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionView {
    pub session_id: String,
    #[serde(rename = "type")]
    pub session_type: String,
    pub room_name: String,
    pub status: String,
    pub agent_active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_sid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room_sid: Option<String>,
    pub participants: Vec<String>,
    pub recording: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recording_location: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    /// Seconds, once ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<String>,
}

impl SessionView {
    pub fn of(record: &SessionRecord) -> Self {
        let duration = record.duration_secs.or_else(|| {
            let start = chrono::DateTime::parse_from_rfc3339(record.started_at.as_deref()?).ok()?;
            let end = chrono::DateTime::parse_from_rfc3339(record.ended_at.as_deref()?).ok()?;
            u64::try_from((end - start).num_seconds()).ok()
        });
        Self {
            session_id: record.session_id.clone().unwrap_or_default(),
            session_type: record.session_type.clone().unwrap_or_default(),
            room_name: record.room_name.clone(),
            status: if record.ended() { "ended" } else { "active" }.into(),
            agent_active: record.agent_active.unwrap_or(false),
            call_sid: record.call_sid.clone(),
            call_status: record.call_status.clone(),
            direction: record.direction.clone(),
            from: record.from_number.clone(),
            to: record.to_number.clone(),
            room_sid: record.room_sid.clone(),
            participants: record.participants.clone(),
            recording: record.recording.unwrap_or(false),
            egress_id: record.egress_id.clone(),
            recording_location: record.recording_location.clone(),
            started_at: record.started_at.clone(),
            ended_at: record.ended_at.clone(),
            duration: record.ended().then_some(duration).flatten(),
            end_reason: record.end_reason.clone(),
        }
    }
}

/// LiveKit failing: `detail` for the caller, the cause in the log.
pub fn livekit_failed(action: &str, err: &LiveKitError) -> ApiError {
    warn!(action, error = %err, "LiveKit call failed");
    metrics::count(metrics::Metric::LiveKitFailed);
    match err {
        LiveKitError::NotFound(_) => ApiError::NotFound("Room not found".into()),
        _ => ApiError::BadGateway {
            code: "livekit_unavailable",
            detail: format!("LiveKit could not {action}; try again"),
        },
    }
}

fn session_ended(session_id: &str) -> ApiError {
    ApiError::Conflict {
        code: "session_ended",
        detail: format!("session {session_id} has ended; use a new room name"),
    }
}

/// Another organisation's room: say nothing more about it.
fn room_taken() -> ApiError {
    ApiError::Conflict {
        code: "room_taken",
        detail: "this room name is taken; choose another".into(),
    }
}

/// A conversation to open: its kind, its key and what is known about it.
pub struct Opening {
    pub kind: SessionKind,
    /// Call sid for phone and WhatsApp, room name for web.
    pub key: String,
    pub org_id: String,
    pub call_sid: Option<String>,
    pub direction: Option<String>,
    pub from_number: Option<String>,
    pub to_number: Option<String>,
    pub host_identity: Option<String>,
    /// Who the call-start notification names (masked in logs).
    pub caller: Option<String>,
    /// Start a new conversation in the room if its last one ended (chat
    /// launchers: one room per user or channel); otherwise 409.
    pub reopen: bool,
}

/// What opening did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedSession {
    pub session_id: String,
    pub room: String,
    pub agent_active: bool,
}

/// Opens, changes and ends sessions: the LiveKit side and the record.
pub struct SessionLifecycle {
    pub sessions: Arc<dyn SessionStore>,
    pub livekit: Arc<dyn LiveKitRooms>,
    /// Explicit dispatch target (`LIVEKIT_AGENT_NAME`).
    pub agent_name: String,
    /// Identities of the agent's participants start with this.
    pub agent_identity_prefix: String,
    /// Queues the one call-start notification per session.
    pub announcer: Option<Arc<CallStartIntake>>,
    /// Runs each conversation's opening once.
    pub dedup: Arc<dyn DedupStore>,
}

impl SessionLifecycle {
    /// Creates the room, dispatches the agent (once), records the session and
    /// announces it once. Safe to repeat: a retry finds the room and the
    /// dispatch in place and the session already open.
    pub async fn open(
        &self,
        opening: &Opening,
        lease: Duration,
    ) -> Result<OpenedSession, ApiError> {
        let session_id = opening.kind.session_id(&opening.key);
        let room = opening.kind.room(&opening.key);
        let metadata = serde_json::json!({
            "session_id": session_id,
            "type": opening.kind.name(),
            "org_id": opening.org_id,
        })
        .to_string();
        // Refuse early what the store would refuse, so an ended or foreign
        // room is not recreated in LiveKit first (the store still decides).
        let existing = self
            .sessions
            .get(&room)
            .await
            .map_err(crate::api::unavailable)?;
        if let Some(existing) = &existing {
            if existing.ended() && !opening.reopen {
                return Err(session_ended(&session_id));
            }
            if existing
                .org_id
                .as_deref()
                .is_some_and(|org| org != opening.org_id)
            {
                return Err(room_taken());
            }
        }
        // Opens of one conversation run once: without this, two at once
        // (a double-clicked /room/create, /phone/call meeting its own
        // /twilio/voice) would each find no dispatch and each send an agent.
        // A conversation is named by when its room's last one ended.
        let generation = existing
            .as_ref()
            .and_then(|r| r.ended_at.clone())
            .unwrap_or_else(|| "first".into());
        let key = format!("session-open#{room}#{generation}");
        let opened = OpenedSession {
            session_id: session_id.clone(),
            room: room.clone(),
            agent_active: true,
        };
        let work = || async {
            self.open_once(opening, &metadata, lease).await?;
            Ok::<_, ApiError>(serde_json::json!({"session_id": session_id}))
        };
        match run_once(self.dedup.as_ref(), &key, lease, work).await {
            Ok(Once::Done(_)) => {}
            Ok(Once::Duplicate(_)) => info!(%session_id, "session already opened"),
            // The other open finishes the same work; its caller hears if it fails.
            Ok(Once::InProgress) => info!(%session_id, "session being opened by another request"),
            Err(OnceError::Store(err)) => return Err(crate::api::unavailable(err)),
            Err(OnceError::Work(err)) => return Err(err),
        }
        Ok(opened)
    }

    /// The work of [`open`](Self::open), run once per conversation.
    async fn open_once(
        &self,
        opening: &Opening,
        metadata: &str,
        lease: Duration,
    ) -> Result<(), ApiError> {
        let session_id = opening.kind.session_id(&opening.key);
        let room = opening.kind.room(&opening.key);
        let metadata = metadata.to_string();
        self.livekit
            .create_room(&room, &metadata)
            .await
            .map_err(|e| livekit_failed("create the room", &e))?;
        let dispatch_id = self.ensure_dispatch(&room, &metadata).await?;
        let opened = self
            .sessions
            .open(&NewSession {
                session_id: session_id.clone(),
                session_type: opening.kind.name().into(),
                room: room.clone(),
                org_id: opening.org_id.clone(),
                started_at: crate::base::time::now_rfc3339(),
                agent_active: true,
                dispatch_id: Some(dispatch_id),
                call_sid: opening.call_sid.clone(),
                direction: opening.direction.clone(),
                from_number: opening.from_number.clone(),
                to_number: opening.to_number.clone(),
                host_identity: opening.host_identity.clone(),
                reopen: opening.reopen,
            })
            .await
            .map_err(crate::api::unavailable)?;
        // A reopened room's last conversation used the room's key: this one
        // is announced under its own.
        let announce_key = match opened {
            Opened::Active => crate::flows::call_start::dedup_key(&room),
            Opened::Reopened => format!(
                "{}@{}",
                crate::flows::call_start::dedup_key(&room),
                crate::base::time::epoch_secs()
            ),
            Opened::AlreadyEnded => return Err(session_ended(&session_id)),
            Opened::OwnedElsewhere => return Err(room_taken()),
        };
        if let Some(announcer) = &self.announcer {
            let start = CallStart {
                room_name: room.clone(),
                user_email: None,
                started_at: crate::base::time::now_rfc3339(),
                metadata: serde_json::Map::from_iter([
                    ("session_id".to_string(), session_id.clone().into()),
                    ("type".to_string(), opening.kind.name().into()),
                    (
                        "caller".to_string(),
                        opening.caller.clone().unwrap_or_default().into(),
                    ),
                ]),
            };
            announcer.announce(&announce_key, start, lease).await?;
        }
        metrics::count(metrics::Metric::SessionsOpened);
        info!(%session_id, %room, "session open");
        Ok(())
    }

    /// The agent's dispatch in `room`: the existing one, or a new one.
    async fn ensure_dispatch(&self, room: &str, metadata: &str) -> Result<String, ApiError> {
        let existing = self
            .livekit
            .list_dispatches(room)
            .await
            .map_err(|e| livekit_failed("list the room's agents", &e))?;
        if let Some(dispatch) = existing
            .into_iter()
            .find(|d| d.agent_name == self.agent_name)
        {
            return Ok(dispatch.id);
        }
        let dispatch = self
            .livekit
            .create_dispatch(room, &self.agent_name, metadata)
            .await
            .map_err(|e| livekit_failed("dispatch the agent", &e))?;
        Ok(dispatch.id)
    }

    /// The tenant's open session in `room`, or 404 (also for another
    /// tenant's room, which is not theirs to learn about).
    pub async fn owned(&self, room: &str, org_id: &str) -> Result<SessionRecord, ApiError> {
        let record = self
            .sessions
            .get(room)
            .await
            .map_err(crate::api::unavailable)?
            .filter(|r| r.org_id.as_deref() == Some(org_id))
            .ok_or_else(|| ApiError::NotFound("Room not found".into()))?;
        if record.ended() {
            return Err(ApiError::NotFound("Room not found".into()));
        }
        Ok(record)
    }

    /// Ends the session in `room` once and deletes its LiveKit room; true if
    /// this call ended it. Deleting the room is best effort: LiveKit closes
    /// an empty room on its own after its empty timeout.
    pub async fn end(&self, room: &str, ending: &Ending) -> Result<bool, crate::store::StoreError> {
        let Some(record) = self.sessions.end(room, ending).await? else {
            return Ok(false);
        };
        info!(
            session_id = record.session_id.as_deref().unwrap_or(room),
            reason = ending.reason.as_deref().unwrap_or("room finished"),
            "session ended"
        );
        if let Err(err) = self.livekit.delete_room(room).await {
            warn!(%room, error = %err, "room not deleted; LiveKit's empty timeout will close it");
            metrics::count(metrics::Metric::LiveKitFailed);
        }
        Ok(true)
    }

    /// Claims a switch (`AgentSwitch`, `RecordingSwitch`): `None` when this
    /// request holds it, else the open session as the other request left it
    /// (404 once it has ended).
    async fn claim_switch(
        &self,
        room: &str,
        switch: &SessionChange,
    ) -> Result<Option<SessionRecord>, ApiError> {
        let claimed = self
            .sessions
            .update(room, switch)
            .await
            .map_err(crate::api::unavailable)?;
        if claimed {
            return Ok(None);
        }
        self.sessions
            .get(room)
            .await
            .map_err(crate::api::unavailable)?
            .filter(|r| !r.ended())
            .map(Some)
            .ok_or_else(|| ApiError::NotFound("Room not found".into()))
    }

    /// Dispatches the agent to, or removes it from, the tenant's room.
    pub async fn set_agent(&self, record: &SessionRecord, enable: bool) -> Result<bool, ApiError> {
        let room = &record.room_name;
        // Claim the switch first: of two concurrent toggles one acts, the
        // other finds it done (and a failed dispatch gives the claim back).
        if let Some(now) = self
            .claim_switch(room, &SessionChange::AgentSwitch { to: enable })
            .await?
        {
            if now.agent_active.unwrap_or(false) == enable {
                return Ok(enable);
            }
            return Err(ApiError::NotFound("Room not found".into()));
        }
        let switched = self.switch_agent(record, enable).await;
        if switched.is_err() {
            let back = SessionChange::AgentSwitch { to: !enable };
            if let Err(err) = self.sessions.update(room, &back).await {
                warn!(%room, error = %err, "agent switch not given back after a LiveKit failure");
            }
        }
        switched
    }

    /// The LiveKit side of [`set_agent`](Self::set_agent), once claimed.
    async fn switch_agent(&self, record: &SessionRecord, enable: bool) -> Result<bool, ApiError> {
        let room = &record.room_name;
        let dispatch_id = if enable {
            let metadata = serde_json::json!({
                "session_id": record.session_id,
                "type": record.session_type,
                "org_id": record.org_id,
            })
            .to_string();
            Some(self.ensure_dispatch(room, &metadata).await?)
        } else {
            let dispatches = self
                .livekit
                .list_dispatches(room)
                .await
                .map_err(|e| livekit_failed("list the room's agents", &e))?;
            for dispatch in dispatches
                .iter()
                .filter(|d| d.agent_name == self.agent_name)
            {
                self.livekit
                    .delete_dispatch(room, &dispatch.id)
                    .await
                    .map_err(|e| livekit_failed("remove the agent", &e))?;
            }
            // A dispatched job may already have joined: remove its participant too.
            let participants = match self.livekit.list_participants(room).await {
                Ok(participants) => participants,
                Err(LiveKitError::NotFound(_)) => Vec::new(),
                Err(err) => return Err(livekit_failed("list the room's participants", &err)),
            };
            for agent in participants
                .iter()
                .filter(|p| p.is_agent(&self.agent_identity_prefix))
            {
                self.livekit
                    .remove_participant(room, &agent.identity)
                    .await
                    .map_err(|e| livekit_failed("remove the agent", &e))?;
            }
            None
        };
        let changed = self
            .sessions
            .update(
                room,
                &SessionChange::Agent {
                    active: enable,
                    dispatch_id,
                },
            )
            .await
            .map_err(crate::api::unavailable)?;
        if !changed {
            return Err(ApiError::NotFound("Room not found".into()));
        }
        Ok(enable)
    }

    /// Whether an agent participant is in the room now.
    pub async fn agent_present(&self, room: &str) -> Result<bool, ApiError> {
        match self.livekit.list_participants(room).await {
            Ok(participants) => Ok(participants
                .iter()
                .any(|p| p.is_agent(&self.agent_identity_prefix))),
            Err(LiveKitError::NotFound(_)) => Ok(false),
            Err(err) => Err(livekit_failed("list the room's participants", &err)),
        }
    }
}

/// Where recordings go and how LiveKit may write there.
#[derive(Debug, Clone)]
pub struct RecordingStorage {
    pub bucket: String,
    pub region: String,
    pub role_arn: Option<String>,
    pub external_id: Option<String>,
}

impl RecordingStorage {
    pub fn from_env() -> Result<Self, crate::base::config::ConfigError> {
        use crate::base::config::{optional, required};
        Ok(Self {
            bucket: required("RECORDINGS_BUCKET")?,
            region: optional("AWS_REGION").unwrap_or_else(|| "us-east-1".into()),
            role_arn: optional("RECORDINGS_ROLE_ARN"),
            external_id: optional("RECORDINGS_EXTERNAL_ID"),
        })
    }

    /// The object a recording of `session_id` started now goes to.
    pub fn target(&self, session_id: &str) -> RecordingTarget {
        let stamp = chrono::Utc::now().format("%Y-%m-%dT%H-%M-%SZ");
        RecordingTarget {
            bucket: self.bucket.clone(),
            region: self.region.clone(),
            key: format!("recordings/{session_id}/{stamp}.mp4"),
            assume_role_arn: self.role_arn.clone(),
            assume_role_external_id: self.external_id.clone(),
        }
    }
}

impl SessionLifecycle {
    /// Starts or stops the room's composite recording; the egress id and
    /// `s3://` location are kept on the session.
    pub async fn set_recording(
        &self,
        record: &SessionRecord,
        enable: bool,
        storage: &RecordingStorage,
    ) -> Result<(bool, String), ApiError> {
        let room = &record.room_name;
        // Claim the switch first: two "start"s at once must not start two
        // egresses (nor two "stop"s stop one twice).
        if let Some(now) = self
            .claim_switch(room, &SessionChange::RecordingSwitch { to: enable })
            .await?
        {
            return match (enable, now.recording.unwrap_or(false), now.egress_id) {
                (true, true, Some(egress)) => Ok((true, egress)),
                (false, false, _) => Err(ApiError::Conflict {
                    code: "not_recording",
                    detail: "this room is not being recorded".into(),
                }),
                // Another request is switching it and has not finished.
                _ => Err(ApiError::InProgress),
            };
        }
        let result = if enable {
            self.start_recording(record, storage).await
        } else {
            self.stop_recording(record).await
        };
        if result.is_err() {
            let back = SessionChange::RecordingSwitch { to: !enable };
            if let Err(err) = self.sessions.update(room, &back).await {
                warn!(%room, error = %err, "recording switch not given back after a LiveKit failure");
            }
        }
        result.map(|egress_id| (enable, egress_id))
    }

    async fn start_recording(
        &self,
        record: &SessionRecord,
        storage: &RecordingStorage,
    ) -> Result<String, ApiError> {
        let room = &record.room_name;
        let session_id = record.session_id.clone().unwrap_or_else(|| room.clone());
        let target = storage.target(&session_id);
        let egress = self
            .livekit
            .start_recording(room, &target)
            .await
            .map_err(|e| livekit_failed("start recording", &e))?;
        let change = SessionChange::Recording {
            active: true,
            egress_id: egress.egress_id.clone(),
            location: Some(format!("s3://{}/{}", target.bucket, target.key)),
        };
        self.record_change(room, &change).await?;
        Ok(egress.egress_id)
    }

    async fn stop_recording(&self, record: &SessionRecord) -> Result<String, ApiError> {
        let room = &record.room_name;
        // The egress id as it is now, not as the caller read it before the claim.
        let egress_id = self
            .sessions
            .get(room)
            .await
            .map_err(crate::api::unavailable)?
            .and_then(|r| r.egress_id)
            .ok_or(ApiError::InProgress)?;
        self.livekit
            .stop_recording(&egress_id)
            .await
            .map_err(|e| livekit_failed("stop recording", &e))?;
        let change = SessionChange::Recording {
            active: false,
            egress_id: egress_id.clone(),
            location: None,
        };
        self.record_change(room, &change).await?;
        Ok(egress_id)
    }

    async fn record_change(&self, room: &str, change: &SessionChange) -> Result<(), ApiError> {
        let changed = self
            .sessions
            .update(room, change)
            .await
            .map_err(crate::api::unavailable)?;
        if changed {
            Ok(())
        } else {
            Err(ApiError::NotFound("Room not found".into()))
        }
    }
}

/// LiveKit Meet joins any server with a URL and a token: a join page that
/// needs no frontend of ours.
pub const DEFAULT_ROOM_URL_TEMPLATE: &str =
    "https://meet.livekit.io/custom?liveKitUrl={url}&token={token}";

/// How a person gets into a room they opened (`/room/create`, a chat
/// launcher): their token, the server URL, an invite for guests and a page.
pub struct RoomAccess {
    pub tokens: JoinTokens,
    pub invites: crate::api::invites::RoomInvites,
    /// Browsers connect here (`LIVEKIT_URL` as ws(s)).
    pub client_url: String,
    /// `ROOM_URL_TEMPLATE`: `{url}`, `{token}`, `{room}`, `{invite}` are
    /// replaced, URL-encoded.
    pub room_url_template: String,
}

/// What [`RoomAccess::links`] hands out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomLinks {
    pub token: String,
    pub url: String,
    pub invite: String,
    pub room_url: String,
}

impl RoomAccess {
    /// The host's token and the room's invite and join page.
    pub fn links(
        &self,
        room: &str,
        org_id: &str,
        identity: &str,
        name: &str,
    ) -> Result<RoomLinks, ApiError> {
        let token = self.tokens.issue(room, identity, name)?;
        let invite = self.invites.issue(room, org_id);
        Ok(RoomLinks {
            room_url: room_url(
                &self.room_url_template,
                &self.client_url,
                &token,
                room,
                &invite,
            ),
            url: self.client_url.clone(),
            token,
            invite,
        })
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn url_encode(value: &str) -> String {
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
        .replace("{url}", &url_encode(url))
        .replace("{token}", &url_encode(token))
        .replace("{room}", &url_encode(room))
        .replace("{invite}", &url_encode(invite))
}

/// Short-lived participant tokens for one room.
pub struct JoinTokens {
    pub tokens: AccessTokens,
    pub ttl: Duration,
}

impl JoinTokens {
    pub fn issue(&self, room: &str, identity: &str, name: &str) -> Result<String, ApiError> {
        self.tokens
            .join_token(&JoinGrant {
                room,
                identity,
                name,
                ttl: self.ttl,
            })
            .map_err(|e| {
                warn!(error = %e, "join token not minted");
                ApiError::Unavailable
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_map_back_to_their_rooms() {
        for (kind, key) in [
            (SessionKind::Phone, "CA123"),
            (SessionKind::Whatsapp, "CA9"),
            (SessionKind::Web, "demo-room"),
            (SessionKind::Slack, "U024BE7LH"),
            (SessionKind::Discord, "123456789012345678"),
            (SessionKind::Teams, "19-abc"),
        ] {
            assert_eq!(room_of(&kind.session_id(key)), Some(kind.room(key)));
        }
        assert_eq!(
            room_of("phone-CAtest123").as_deref(),
            Some("twilio-CAtest123")
        );
        assert_eq!(room_of("web-my-meeting").as_deref(), Some("my-meeting"));
        assert_eq!(room_of("slack-U1").as_deref(), Some("slack-U1"));
        assert_eq!(room_of("fax-1"), None);
        assert_eq!(room_of("phone-"), None);
        assert_eq!(room_of("phone"), None);
    }

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

    #[test]
    fn room_names_are_checked() {
        assert!(validate_room_name("meeting-1700000000_a.b").is_ok());
        for bad in ["", "has space", "slash/es", "ünïcode", &"x".repeat(129)] {
            assert!(validate_room_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn view_reports_duration_once_ended() {
        let mut record = SessionRecord {
            room_name: "twilio-CA1".into(),
            session_id: Some("phone-CA1".into()),
            session_type: Some("phone".into()),
            status: Some("active".into()),
            started_at: Some("2026-11-21T10:00:00Z".into()),
            ..SessionRecord::default()
        };
        let view = SessionView::of(&record);
        assert_eq!((view.status.as_str(), view.duration), ("active", None));
        record.ended_at = Some("2026-11-21T10:01:30Z".into());
        record.status = Some("ended".into());
        let view = SessionView::of(&record);
        assert_eq!((view.status.as_str(), view.duration), ("ended", Some(90)));
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(json["type"], "phone");
        assert_eq!(json["session_id"], "phone-CA1");
    }
}
