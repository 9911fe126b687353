//! Seed 002's sessions: every conversation, whichever interface it came
//! from, is a LiveKit room with the agent dispatched to it and a session
//! record. This flow opens, changes and ends them; the routes only parse,
//! authorise and answer.
//!
//! Naming is the seed's: a phone call `CA1` is session `phone-CA1` in room
//! `twilio-CA1`; a web room `demo` is session `web-demo`. The session id
//! maps back to its room (see [`room_of`]), so `GET /sessions/{id}` needs no
//! second index; web rooms may therefore not use another kind's room prefix.

use serde::Serialize;

use crate::api::ApiError;
use crate::store::sessions::SessionRecord;

// Opening, changing and ending sessions drives LiveKit; routes that only
// name, validate or show sessions build without it.
#[cfg(feature = "livekit")]
mod lifecycle;
#[cfg(feature = "livekit")]
pub use lifecycle::{
    livekit_failed, JoinTokens, OpenedSession, Opening, RecordingStorage, RoomAccess, RoomLinks,
    SessionLifecycle,
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

/// The room of a session id, if the id is well formed. A room that could
/// never have been opened (over 128 characters, say) is `None` before any
/// store call: DynamoDB refuses over-long keys with an error, not a miss.
pub fn room_of(session_id: &str) -> Option<String> {
    let (kind, key) = session_id.split_once('-')?;
    if key.is_empty() {
        return None;
    }
    let room = SessionKind::parse(kind)?.room(key);
    validate_room_name(&room).ok()?;
    Some(room)
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

/// Every identity `/room/join` grants is `guest-<the identity asked for>`:
/// a join can then never take an identity the server assigns (the room's
/// host, a launcher's user, the agent), which LiveKit would disconnect or
/// `agentPresent` would count as the agent.
pub const GUEST_IDENTITY_PREFIX: &str = "guest-";

/// The identity `/room/join` grants for `asked`.
pub fn guest_identity(asked: &str) -> String {
    format!("{GUEST_IDENTITY_PREFIX}{asked}")
}

/// A fresh guest identity (`guest-` + 8 random hex digits) for a visitor
/// who asked for none: `/room/{roomName}/join` mints one per request, so
/// two people opening the same shared link never share an identity.
pub fn new_guest_identity() -> String {
    let random = uuid::Uuid::new_v4().simple().to_string();
    guest_identity(&random[..8])
}

/// Whether guests' identities could look like the agent's (`prefix` being
/// `LIVEKIT_AGENT_IDENTITY_PREFIX`): then the namespaces are not apart.
pub fn guests_look_like_agents(agent_prefix: &str) -> bool {
    !agent_prefix.is_empty()
        && (GUEST_IDENTITY_PREFIX.starts_with(agent_prefix)
            || agent_prefix.starts_with(GUEST_IDENTITY_PREFIX))
}

/// A host identity chosen at `/room/create`: a valid identity outside the
/// guests' and the agent's namespaces.
pub fn validate_host_identity(value: &str, agent_prefix: &str) -> Result<(), ApiError> {
    validate_identity(value, "hostIdentity")?;
    let agent_like = !agent_prefix.is_empty() && value.starts_with(agent_prefix);
    if value.starts_with(GUEST_IDENTITY_PREFIX) || agent_like {
        return Err(ApiError::unprocessable(
            "reserved_identity",
            format!(
                "hostIdentity may not start with `{GUEST_IDENTITY_PREFIX}` (guests) or \
                 `{agent_prefix}` (the agent)"
            ),
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
    /// `end_reason` in the set every provider maps to (docs/reconciliation.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_code: Option<crate::base::end_reason::EndReason>,
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
            end_code: record.ended().then(|| {
                record.end_code.unwrap_or_else(|| {
                    crate::base::end_reason::EndReason::from_session_end(
                        record.end_reason.as_deref(),
                    )
                })
            }),
        }
    }
}

/// LiveKit Meet joins any server with a URL and a token: a join page that
/// needs no frontend of ours.
pub const DEFAULT_ROOM_URL_TEMPLATE: &str =
    "https://meet.livekit.io/custom?liveKitUrl={url}&token={token}";

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

/// `{public_base_url}/room/{room}/join?invite=...`: a link with no token in
/// it that anyone holding it may open; each visit mints its own guest token
/// and is redirected to the join page (`functions/room-join-link`).
pub fn join_link(public_base_url: &str, room: &str, invite: &str) -> String {
    format!(
        "{}/room/{}/join?invite={}",
        public_base_url.trim_end_matches('/'),
        url_encode(room),
        url_encode(invite)
    )
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
        let longest = "r".repeat(128);
        assert_eq!(room_of(&format!("web-{longest}")), Some(longest.clone()));
        assert_eq!(room_of(&format!("web-{longest}r")), None);
        assert_eq!(room_of(&format!("web-{}", "r".repeat(3000))), None);
        assert_eq!(room_of("web-a b"), None);
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
        // The base may end in `/`; the invite's `=` and `+` would not survive a query unencoded.
        assert_eq!(
            join_link("https://api.example.com/", "teams-19_a", "v2.a+b="),
            "https://api.example.com/room/teams-19_a/join?invite=v2.a%2Bb%3D"
        );
    }

    #[test]
    fn guests_hosts_and_agents_stay_apart() {
        assert_eq!(guest_identity("host"), "guest-host");
        let (one, two) = (new_guest_identity(), new_guest_identity());
        assert_ne!(one, two);
        for fresh in [one, two] {
            let random = fresh.strip_prefix(GUEST_IDENTITY_PREFIX).unwrap();
            assert_eq!(random.len(), 8, "{fresh}");
            assert!(random.chars().all(|c| c.is_ascii_hexdigit()), "{fresh}");
        }
        assert!(validate_host_identity("host-1", "agent-").is_ok());
        for taken in ["guest-1", "agent-x"] {
            assert!(validate_host_identity(taken, "agent-").is_err(), "{taken}");
        }
        assert!(validate_host_identity("a\u{7}b", "agent-").is_err());
        for overlapping in ["g", "guest-", "guest-agent-"] {
            assert!(guests_look_like_agents(overlapping), "{overlapping}");
        }
        for apart in ["", "agent-", "guests"] {
            assert!(!guests_look_like_agents(apart), "{apart}");
        }
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
