//! Fake LiveKit server API: the Twirp (JSON over HTTP POST) services
//! `livekit.RoomService`, `livekit.AgentDispatchService` and `livekit.Egress`,
//! the methods callops calls, with rooms, participants, agent dispatches and
//! egresses kept in memory.
//!
//! It is stricter than LiveKit where strictness finds our bugs: every call
//! must carry an HS256 token signed with the API secret, issued by the API
//! key, unexpired, and holding the grant that call needs (room-scoped where
//! LiveKit scopes it); and a request field the protocol does not define is
//! refused as `malformed`, where LiveKit would silently ignore a misspelt one.
//! Field names are accepted in protobuf (snake_case) and JSON (lowerCamelCase)
//! form, as protojson accepts both; answers use protobuf names, Twirp's
//! default, with 64-bit integers as strings, as protojson writes them.

use std::collections::BTreeMap;
use std::future::ready;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use http::StatusCode;
use serde_json::{json, Map, Value};

use super::{json_response, lock, Recorded, Response, Server};

/// A participant in a fake room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeParticipant {
    pub sid: String,
    pub identity: String,
    pub name: String,
    /// `ParticipantInfo.Kind` by name: `STANDARD`, `AGENT`, `SIP`, ...
    pub kind: String,
}

/// An explicit agent dispatch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeDispatch {
    pub id: String,
    pub agent_name: String,
    pub room: String,
    pub metadata: String,
}

/// A room-composite egress and where its file would go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeEgress {
    pub id: String,
    pub room: String,
    /// `EgressStatus` by name.
    pub status: String,
    pub audio_only: bool,
    /// `EncodedFileType` by name.
    pub file_type: String,
    pub filepath: String,
    pub s3_bucket: String,
    pub s3_region: String,
    pub assume_role_arn: String,
    pub assume_role_external_id: String,
}

struct Room {
    sid: String,
    metadata: String,
    empty_timeout: u64,
    max_participants: u64,
    created_ms: i64,
    participants: Vec<(FakeParticipant, i64)>,
}

#[derive(Default)]
struct World {
    rooms: BTreeMap<String, Room>,
    /// In creation order.
    dispatches: Vec<(FakeDispatch, i64)>,
    /// In creation order, with start and end (ms).
    egresses: Vec<(FakeEgress, i64, i64)>,
}

struct State {
    api_key: String,
    api_secret: String,
    world: Mutex<World>,
    /// Scripted errors: how many are left, and which HTTP status they carry.
    failures: Mutex<(u32, StatusCode)>,
    /// Scripted one-shot errors of one method: (method, after acting, status).
    method_failures: Mutex<Vec<(String, bool, StatusCode)>>,
    agent_joins: AtomicBool,
}

/// Fake LiveKit server; stops when dropped.
pub struct FakeLiveKit {
    server: Server,
    state: Arc<State>,
}

impl FakeLiveKit {
    /// Starts the fake on a random local port; calls need tokens made with
    /// this key and secret.
    pub fn start(api_key: &str, api_secret: &str) -> Self {
        let state = Arc::new(State {
            api_key: api_key.to_owned(),
            api_secret: api_secret.to_owned(),
            world: Mutex::default(),
            failures: Mutex::new((0, StatusCode::SERVICE_UNAVAILABLE)),
            method_failures: Mutex::default(),
            agent_joins: AtomicBool::new(true),
        });
        let handler_state = Arc::clone(&state);
        let server = Server::start("127.0.0.1:0", move |req| ready(handler_state.handle(&req)));
        Self { server, state }
    }

    /// Stands in for the `https://` form of `LIVEKIT_URL`.
    pub fn url(&self) -> &str {
        &self.server.base_url
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.server.requests()
    }

    /// The next `count` calls (to a real route) answer `status` with the Twirp
    /// error code that goes with it (`unavailable` for 503, `internal` for
    /// other 5xx, `permission_denied` for 403, ...), before any other check.
    pub fn fail_next(&self, count: u32, status: StatusCode) {
        *lock(&self.state.failures) = (count, status);
    }

    /// The next call of `method` (e.g. `StopEgress`) answers `status`
    /// without acting; with `after_acting`, it acts first and then answers
    /// `status`, as a call whose answer was lost (a timeout) looks.
    pub fn fail_method(&self, method: &str, after_acting: bool, status: StatusCode) {
        lock(&self.state.method_failures).push((method.to_owned(), after_acting, status));
    }

    /// Whether a dispatched agent joins its room (on by default): it then
    /// appears as participant `agent-<dispatch id>` of kind `AGENT`.
    pub fn set_agent_joins(&self, joins: bool) {
        self.state.agent_joins.store(joins, Ordering::SeqCst);
    }

    /// Someone joins `room` (created if need be, as a join does); an identity
    /// already there is replaced, as LiveKit replaces a duplicate.
    pub fn add_participant(&self, room: &str, identity: &str, kind: &str) {
        let mut world = lock(&self.state.world);
        let room = world.room_or_create(room, "", 300);
        room.participants.retain(|(p, _)| p.identity != identity);
        room.participants.push((
            FakeParticipant {
                sid: new_id("PA_"),
                identity: identity.to_owned(),
                name: identity.to_owned(),
                kind: kind.to_owned(),
            },
            now_ms(),
        ));
    }

    /// Names of the open rooms, sorted.
    pub fn rooms(&self) -> Vec<String> {
        lock(&self.state.world).rooms.keys().cloned().collect()
    }

    /// The sid of the room `name` as it exists now.
    pub fn room_sid(&self, name: &str) -> Option<String> {
        lock(&self.state.world)
            .rooms
            .get(name)
            .map(|r| r.sid.clone())
    }

    /// The room ends on its own, as LiveKit ends a room everyone left
    /// (after its `empty_timeout`): it is gone, with its egresses ended.
    /// No webhook is sent, as when `room_finished` is lost.
    pub fn finish_room(&self, name: &str) {
        let mut world = lock(&self.state.world);
        world.rooms.remove(name);
        world.dispatches.retain(|(d, _)| d.room != name);
        let now = now_ms();
        for (egress, _, ended) in &mut world.egresses {
            if egress.room == name && !EGRESS_ENDED.contains(&egress.status.as_str()) {
                egress.status = "EGRESS_COMPLETE".into();
                *ended = now;
            }
        }
    }

    /// The egress ends on its own (its upload finished or failed), as
    /// LiveKit reports with `egress_ended`; no webhook is sent.
    pub fn end_egress(&self, egress_id: &str) {
        let mut world = lock(&self.state.world);
        let now = now_ms();
        for (egress, _, ended) in &mut world.egresses {
            if egress.id == egress_id && !EGRESS_ENDED.contains(&egress.status.as_str()) {
                egress.status = "EGRESS_COMPLETE".into();
                *ended = now;
            }
        }
    }

    pub fn room_exists(&self, name: &str) -> bool {
        lock(&self.state.world).rooms.contains_key(name)
    }

    /// Participants of `room` in joining order; none if there is no such room.
    pub fn participants(&self, room: &str) -> Vec<FakeParticipant> {
        lock(&self.state.world)
            .rooms
            .get(room)
            .map(|r| r.participants.iter().map(|(p, _)| p.clone()).collect())
            .unwrap_or_default()
    }

    /// Live dispatches to `room`, oldest first.
    pub fn dispatches(&self, room: &str) -> Vec<FakeDispatch> {
        lock(&self.state.world)
            .dispatches
            .iter()
            .filter(|(d, _)| d.room == room)
            .map(|(d, _)| d.clone())
            .collect()
    }

    /// Every egress ever started, oldest first, with its current status.
    pub fn egresses(&self) -> Vec<FakeEgress> {
        lock(&self.state.world)
            .egresses
            .iter()
            .map(|(e, _, _)| e.clone())
            .collect()
    }

    /// Checks a participant (join) token the way LiveKit does before letting
    /// its holder in: HS256 with the secret, issued by the API key, unexpired,
    /// an identity (`sub`), `video.roomJoin` and a `video.room`. Returns the
    /// claims.
    pub fn verify_join_token(&self, token: &str) -> Result<Value, String> {
        let claims = self.state.verify(token)?;
        if claims["sub"].as_str().is_none_or(str::is_empty) {
            return Err("token has no identity (sub)".into());
        }
        if claims["video"]["roomJoin"] != Value::Bool(true) {
            return Err("token does not grant roomJoin".into());
        }
        if claims["video"]["room"].as_str().is_none_or(str::is_empty) {
            return Err("token names no room".into());
        }
        Ok(claims)
    }
}

/// The methods served, and what each needs.
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
    fn from_path(path: &str) -> Option<Self> {
        let (service, method) = path.strip_prefix("/twirp/")?.split_once('/')?;
        Some(match (service, method) {
            ("livekit.RoomService", "CreateRoom") => Rpc::CreateRoom,
            ("livekit.RoomService", "DeleteRoom") => Rpc::DeleteRoom,
            ("livekit.RoomService", "ListParticipants") => Rpc::ListParticipants,
            ("livekit.RoomService", "RemoveParticipant") => Rpc::RemoveParticipant,
            ("livekit.AgentDispatchService", "CreateDispatch") => Rpc::CreateDispatch,
            ("livekit.AgentDispatchService", "ListDispatch") => Rpc::ListDispatch,
            ("livekit.AgentDispatchService", "DeleteDispatch") => Rpc::DeleteDispatch,
            ("livekit.Egress", "StartRoomCompositeEgress") => Rpc::StartRoomCompositeEgress,
            ("livekit.Egress", "StopEgress") => Rpc::StopEgress,
            ("livekit.Egress", "ListEgress") => Rpc::ListEgress,
            _ => return None,
        })
    }

    /// The request message's fields, by protobuf name (livekit/protocol).
    fn fields(self) -> &'static [&'static str] {
        match self {
            Rpc::CreateRoom => &[
                "name",
                "room_preset",
                "empty_timeout",
                "departure_timeout",
                "max_participants",
                "node_id",
                "metadata",
                "tags",
                "egress",
                "min_playout_delay",
                "max_playout_delay",
                "sync_streams",
                "replay_enabled",
                "agents",
            ],
            Rpc::DeleteRoom | Rpc::ListParticipants => &["room"],
            Rpc::RemoveParticipant => &["room", "identity", "revoke_token_ts"],
            Rpc::CreateDispatch => &[
                "agent_name",
                "room",
                "metadata",
                "restart_policy",
                "deployment",
                "attributes",
            ],
            Rpc::ListDispatch | Rpc::DeleteDispatch => &["dispatch_id", "room"],
            Rpc::StartRoomCompositeEgress => &[
                "room_name",
                "layout",
                "audio_only",
                "audio_mixing",
                "video_only",
                "custom_base_url",
                "file",
                "stream",
                "segments",
                "preset",
                "advanced",
                "file_outputs",
                "stream_outputs",
                "segment_outputs",
                "image_outputs",
                "webhooks",
            ],
            Rpc::StopEgress => &["egress_id"],
            Rpc::ListEgress => &["room_name", "egress_id", "active"],
        }
    }

    /// The grant LiveKit checks for this call about `room`.
    fn needs(self, room: &str) -> Grant<'_> {
        match self {
            Rpc::CreateRoom | Rpc::DeleteRoom => Grant::Global("roomCreate"),
            Rpc::StartRoomCompositeEgress | Rpc::StopEgress | Rpc::ListEgress => {
                Grant::Global("roomRecord")
            }
            Rpc::ListParticipants
            | Rpc::RemoveParticipant
            | Rpc::CreateDispatch
            | Rpc::ListDispatch
            | Rpc::DeleteDispatch => Grant::AdminOf(room),
        }
    }

    /// The field naming what the call acts on: a room (which room-scoped
    /// grants must name) or, for StopEgress, the egress.
    fn subject_field(self) -> &'static str {
        match self {
            Rpc::CreateRoom => "name",
            Rpc::StartRoomCompositeEgress | Rpc::ListEgress => "room_name",
            Rpc::StopEgress => "egress_id",
            _ => "room",
        }
    }
}

enum Grant<'a> {
    /// A room-independent grant, by claim name (`roomCreate`, `roomRecord`).
    Global(&'static str),
    /// `roomAdmin` with `room` naming this room.
    AdminOf(&'a str),
}

const ENCODED_FILE_OUTPUT_FIELDS: &[&str] = &[
    "file_type",
    "filepath",
    "disable_manifest",
    "s3",
    "gcp",
    "azure",
    "aliOSS",
];

const S3_UPLOAD_FIELDS: &[&str] = &[
    "access_key",
    "secret",
    "session_token",
    "assume_role_arn",
    "assume_role_external_id",
    "region",
    "endpoint",
    "bucket",
    "force_path_style",
    "metadata",
    "tagging",
    "content_disposition",
    "proxy",
];

const ENCODED_FILE_TYPES: [&str; 4] = ["DEFAULT_FILETYPE", "MP4", "OGG", "MP3"];
const EGRESS_ENDED: [&str; 4] = [
    "EGRESS_COMPLETE",
    "EGRESS_FAILED",
    "EGRESS_ABORTED",
    "EGRESS_LIMIT_REACHED",
];

/// A request message: its fields checked against the protocol, read by
/// either JSON name.
struct Message<'a>(&'a Map<String, Value>);

impl<'a> Message<'a> {
    fn parse(value: &'a Value, known: &[&str], what: &str) -> Result<Self, Fault> {
        let Some(map) = value.as_object() else {
            return Err(twirp(
                "malformed",
                format!("{what}: expected a JSON object"),
            ));
        };
        for key in map.keys() {
            if !known.iter().any(|k| *k == key || camel(k) == *key) {
                return Err(twirp(
                    "malformed",
                    format!("{what}: unknown field \"{key}\""),
                ));
            }
        }
        Ok(Self(map))
    }

    fn get(&self, name: &str) -> Option<&'a Value> {
        self.0
            .get(name)
            .or_else(|| self.0.get(&camel(name)))
            .filter(|v| !v.is_null())
    }

    fn string(&self, name: &str) -> Result<String, Fault> {
        match self.get(name) {
            None => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(twirp(
                "malformed",
                format!("{name}: expected a string, got {other}"),
            )),
        }
    }

    fn boolean(&self, name: &str) -> Result<bool, Fault> {
        match self.get(name) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(twirp(
                "malformed",
                format!("{name}: expected a boolean, got {other}"),
            )),
        }
    }

    /// A uint32 (protojson also accepts it quoted).
    fn number(&self, name: &str) -> Result<u64, Fault> {
        let parsed = match self.get(name) {
            None => return Ok(0),
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) => s.parse().ok(),
            Some(_) => None,
        };
        parsed
            .filter(|n| *n <= u64::from(u32::MAX))
            .ok_or_else(|| twirp("malformed", format!("{name}: expected a uint32")))
    }
}

/// `empty_timeout` -> `emptyTimeout`, protojson's JSON name.
fn camel(snake: &str) -> String {
    let mut out = String::with_capacity(snake.len());
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

impl World {
    fn room_or_create(&mut self, name: &str, metadata: &str, empty_timeout: u64) -> &mut Room {
        self.rooms.entry(name.to_owned()).or_insert_with(|| Room {
            sid: new_id("RM_"),
            metadata: metadata.to_owned(),
            empty_timeout,
            max_participants: 0,
            created_ms: now_ms(),
            participants: Vec::new(),
        })
    }
}

impl State {
    fn handle(&self, req: &Recorded) -> Response {
        let method = req.path.rsplit('/').next().unwrap_or_default();
        let scripted = {
            let mut failures = lock(&self.method_failures);
            failures
                .iter()
                .position(|(m, _, _)| m == method)
                .map(|i| failures.remove(i))
        };
        let fault = |status: StatusCode| Fault {
            status,
            code: code_for(status),
            msg: format!("scripted failure of {method} ({})", status.as_u16()),
        };
        match scripted {
            Some((_, false, status)) => return fault(status).response(),
            Some((_, true, status)) => {
                // Acts, then the answer is lost.
                let _ = self.answer(req);
                return fault(status).response();
            }
            None => {}
        }
        match self.answer(req) {
            Ok(body) => json_response(StatusCode::OK, body),
            Err(fault) => fault.response(),
        }
    }

    fn answer(&self, req: &Recorded) -> Result<Value, Fault> {
        let Some(rpc) = Rpc::from_path(&req.path) else {
            return Err(twirp(
                "bad_route",
                format!("no handler for path \"{}\"", req.path),
            ));
        };
        if req.method != "POST" {
            return Err(twirp(
                "bad_route",
                format!("unsupported method {} (only POST is allowed)", req.method),
            ));
        }
        let content_type = req.header("content-type").unwrap_or_default();
        if !content_type
            .split(';')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
        {
            return Err(twirp(
                "bad_route",
                format!("unexpected Content-Type: \"{content_type}\""),
            ));
        }
        if let Some(fault) = self.scripted_failure() {
            return Err(fault);
        }
        let claims = match req
            .header("authorization")
            .and_then(|v| v.strip_prefix("Bearer ").map(|t| t.trim().to_owned()))
            .filter(|t| !t.is_empty())
        {
            None => return Err(twirp("unauthenticated", "no authorization token".into())),
            Some(token) => match self.verify(&token) {
                Ok(claims) => claims,
                Err(reason) => return Err(twirp("unauthenticated", reason)),
            },
        };
        let body: Value = match serde_json::from_slice(&req.body) {
            Ok(body) => body,
            Err(e) => return Err(twirp("malformed", format!("the body is not JSON: {e}"))),
        };
        let message = Message::parse(&body, rpc.fields(), "request")?;
        let subject = message.string(rpc.subject_field())?;
        let allowed = match rpc.needs(&subject) {
            Grant::Global(name) => claims["video"][name] == Value::Bool(true),
            Grant::AdminOf(room) => {
                claims["video"]["roomAdmin"] == Value::Bool(true)
                    && claims["video"]["room"].as_str() == Some(room)
            }
        };
        if !allowed {
            return Err(twirp(
                "permission_denied",
                format!("the token lacks the permission {rpc:?} needs"),
            ));
        }
        match rpc {
            Rpc::CreateRoom => self.create_room(&message),
            Rpc::DeleteRoom => self.delete_room(&subject),
            Rpc::ListParticipants => self.list_participants(&subject),
            Rpc::RemoveParticipant => self.remove_participant(&subject, &message),
            Rpc::CreateDispatch => self.create_dispatch(&subject, &message),
            Rpc::ListDispatch => self.list_dispatch(&subject, &message),
            Rpc::DeleteDispatch => self.delete_dispatch(&subject, &message),
            Rpc::StartRoomCompositeEgress => self.start_egress(&subject, &message),
            Rpc::StopEgress => self.stop_egress(&subject),
            Rpc::ListEgress => self.list_egress(&subject, &message),
        }
    }

    /// Decodes and checks a token as LiveKit's verifier does (one minute of
    /// leeway); returns its claims.
    fn verify(&self, token: &str) -> Result<Value, String> {
        use jsonwebtoken::{Algorithm, DecodingKey, Validation};
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[&self.api_key]);
        validation.set_required_spec_claims(&["exp", "iss"]);
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.leeway = 60;
        jsonwebtoken::decode::<Value>(
            token,
            &DecodingKey::from_secret(self.api_secret.as_bytes()),
            &validation,
        )
        .map(|data| data.claims)
        .map_err(|e| format!("invalid token: {e}"))
    }

    fn scripted_failure(&self) -> Option<Fault> {
        let mut failures = lock(&self.failures);
        if failures.0 == 0 {
            return None;
        }
        failures.0 -= 1;
        let status = failures.1;
        Some(Fault {
            status,
            code: code_for(status),
            msg: format!("scripted failure ({})", status.as_u16()),
        })
    }

    fn create_room(&self, message: &Message<'_>) -> Result<Value, Fault> {
        let name = message.string("name")?;
        if name.is_empty() {
            return Err(twirp("invalid_argument", "room name is required".into()));
        }
        let metadata = message.string("metadata")?;
        let empty_timeout = message.number("empty_timeout")?;
        let max_participants = message.number("max_participants")?;
        let mut world = lock(&self.world);
        let existed = world.rooms.contains_key(&name);
        let room = world.room_or_create(&name, &metadata, empty_timeout);
        if !existed {
            room.max_participants = max_participants;
        }
        Ok(room_json(&name, room))
    }

    fn delete_room(&self, name: &str) -> Result<Value, Fault> {
        let mut world = lock(&self.world);
        if world.rooms.remove(name).is_none() {
            return Err(room_not_found());
        }
        world.dispatches.retain(|(d, _)| d.room != name);
        // The room's end ends its recordings.
        let now = now_ms();
        for (egress, _, ended) in world.egresses.iter_mut() {
            if egress.room == name && !EGRESS_ENDED.contains(&egress.status.as_str()) {
                egress.status = "EGRESS_COMPLETE".into();
                *ended = now;
            }
        }
        Ok(json!({}))
    }

    fn list_participants(&self, room: &str) -> Result<Value, Fault> {
        let world = lock(&self.world);
        let room = world.rooms.get(room).ok_or_else(room_not_found)?;
        let participants: Vec<Value> = room
            .participants
            .iter()
            .map(|(p, joined)| participant_json(p, *joined))
            .collect();
        Ok(json!({ "participants": participants }))
    }

    fn remove_participant(&self, room: &str, message: &Message<'_>) -> Result<Value, Fault> {
        let identity = message.string("identity")?;
        let mut world = lock(&self.world);
        let room = world.rooms.get_mut(room).ok_or_else(room_not_found)?;
        let before = room.participants.len();
        room.participants.retain(|(p, _)| p.identity != identity);
        if room.participants.len() == before {
            return Err(twirp("not_found", "participant not found".into()));
        }
        Ok(json!({}))
    }

    fn create_dispatch(&self, room: &str, message: &Message<'_>) -> Result<Value, Fault> {
        let agent_name = message.string("agent_name")?;
        let metadata = message.string("metadata")?;
        if room.is_empty() {
            return Err(twirp("invalid_argument", "room is required".into()));
        }
        let dispatch = FakeDispatch {
            id: new_id("AD_"),
            agent_name,
            room: room.to_owned(),
            metadata,
        };
        let created = now_ms();
        let mut world = lock(&self.world);
        // Explicit dispatch to a room that does not exist yet creates it.
        let open = world.room_or_create(room, "", 300);
        if self.agent_joins.load(Ordering::SeqCst) {
            open.participants.push((
                FakeParticipant {
                    sid: new_id("PA_"),
                    identity: agent_identity(&dispatch.id),
                    name: dispatch.agent_name.clone(),
                    kind: "AGENT".into(),
                },
                created,
            ));
        }
        world.dispatches.push((dispatch.clone(), created));
        Ok(dispatch_json(&dispatch, created, 0))
    }

    fn list_dispatch(&self, room: &str, message: &Message<'_>) -> Result<Value, Fault> {
        let dispatch_id = message.string("dispatch_id")?;
        let world = lock(&self.world);
        if !world.rooms.contains_key(room) {
            return Err(room_not_found());
        }
        let dispatches: Vec<Value> = world
            .dispatches
            .iter()
            .filter(|(d, _)| d.room == room && (dispatch_id.is_empty() || d.id == dispatch_id))
            .map(|(d, created)| dispatch_json(d, *created, 0))
            .collect();
        Ok(json!({ "agent_dispatches": dispatches }))
    }

    fn delete_dispatch(&self, room: &str, message: &Message<'_>) -> Result<Value, Fault> {
        let dispatch_id = message.string("dispatch_id")?;
        let mut world = lock(&self.world);
        let Some(index) = world
            .dispatches
            .iter()
            .position(|(d, _)| d.id == dispatch_id && d.room == room)
        else {
            return Err(twirp("not_found", "dispatch not found".into()));
        };
        let (dispatch, created) = world.dispatches.remove(index);
        if let Some(open) = world.rooms.get_mut(room) {
            let agent = agent_identity(&dispatch.id);
            open.participants.retain(|(p, _)| p.identity != agent);
        }
        Ok(dispatch_json(&dispatch, created, now_ms()))
    }

    fn start_egress(&self, room: &str, message: &Message<'_>) -> Result<Value, Fault> {
        let audio_only = message.boolean("audio_only")?;
        let outputs = match message.get("file_outputs") {
            None => Vec::new(),
            Some(Value::Array(outputs)) => outputs.iter().collect(),
            Some(_) => return Err(twirp("malformed", "file_outputs: expected a list".into())),
        };
        for field in [
            "file",
            "stream",
            "segments",
            "stream_outputs",
            "segment_outputs",
            "image_outputs",
        ] {
            if message
                .get(field)
                .is_some_and(|v| v.as_array().is_none_or(|a| !a.is_empty()))
            {
                return Err(twirp(
                    "unimplemented",
                    format!("fake LiveKit records to file_outputs only, not {field}"),
                ));
            }
        }
        let [output] = outputs.as_slice() else {
            return Err(twirp(
                "invalid_argument",
                "fake LiveKit needs exactly one of file_outputs".into(),
            ));
        };
        let file = Message::parse(output, ENCODED_FILE_OUTPUT_FIELDS, "file_outputs[0]")?;
        let file_type = match file.get("file_type") {
            None => ENCODED_FILE_TYPES[0].to_owned(),
            Some(Value::String(name)) if ENCODED_FILE_TYPES.contains(&name.as_str()) => {
                name.clone()
            }
            Some(Value::Number(n)) => n
                .as_u64()
                .and_then(|i| ENCODED_FILE_TYPES.get(usize::try_from(i).ok()?))
                .map(|name| (*name).to_owned())
                .ok_or_else(|| twirp("malformed", format!("file_type: invalid value {n}")))?,
            Some(other) => {
                return Err(twirp(
                    "malformed",
                    format!("file_type: invalid value {other}"),
                ))
            }
        };
        let Some(s3) = file.get("s3") else {
            return Err(twirp(
                "unimplemented",
                "fake LiveKit uploads to s3 only".into(),
            ));
        };
        let s3 = Message::parse(s3, S3_UPLOAD_FIELDS, "file_outputs[0].s3")?;
        let egress = FakeEgress {
            id: new_id("EG_"),
            room: room.to_owned(),
            status: "EGRESS_STARTING".into(),
            audio_only,
            file_type,
            filepath: file.string("filepath")?,
            s3_bucket: s3.string("bucket")?,
            s3_region: s3.string("region")?,
            assume_role_arn: s3.string("assume_role_arn")?,
            assume_role_external_id: s3.string("assume_role_external_id")?,
        };
        if egress.s3_bucket.is_empty() {
            return Err(twirp("invalid_argument", "s3: bucket is required".into()));
        }
        let mut world = lock(&self.world);
        let room_sid = world
            .rooms
            .get(room)
            .ok_or_else(room_not_found)?
            .sid
            .clone();
        let started = now_ms();
        world.egresses.push((egress.clone(), started, 0));
        Ok(egress_json(&egress, &room_sid, started, 0))
    }

    /// `ListEgress`: by room (and id), only unfinished ones when `active`.
    fn list_egress(&self, room: &str, message: &Message<'_>) -> Result<Value, Fault> {
        let egress_id = message.string("egress_id")?;
        let active = message.boolean("active")?;
        let world = lock(&self.world);
        let items: Vec<Value> = world
            .egresses
            .iter()
            .filter(|(e, _, _)| room.is_empty() || e.room == room)
            .filter(|(e, _, _)| egress_id.is_empty() || e.id == egress_id)
            .filter(|(e, _, _)| !active || !EGRESS_ENDED.contains(&e.status.as_str()))
            .map(|(e, started, ended)| {
                let room_sid = world
                    .rooms
                    .get(&e.room)
                    .map(|r| r.sid.clone())
                    .unwrap_or_default();
                egress_json(e, &room_sid, *started, *ended)
            })
            .collect();
        Ok(json!({ "items": items }))
    }

    fn stop_egress(&self, egress_id: &str) -> Result<Value, Fault> {
        let mut world = lock(&self.world);
        let World {
            rooms, egresses, ..
        } = &mut *world;
        let Some((egress, started, ended)) =
            egresses.iter_mut().find(|(e, _, _)| e.id == egress_id)
        else {
            return Err(twirp("not_found", "egress not found".into()));
        };
        if EGRESS_ENDED.contains(&egress.status.as_str()) {
            return Err(twirp(
                "failed_precondition",
                format!("egress {egress_id} is not active ({})", egress.status),
            ));
        }
        egress.status = "EGRESS_COMPLETE".into();
        *ended = now_ms();
        let room_sid = rooms
            .get(&egress.room)
            .map(|r| r.sid.clone())
            .unwrap_or_default();
        Ok(egress_json(egress, &room_sid, *started, *ended))
    }
}

fn agent_identity(dispatch_id: &str) -> String {
    format!("agent-{dispatch_id}")
}

fn room_json(name: &str, room: &Room) -> Value {
    json!({
        "sid": room.sid,
        "name": name,
        "empty_timeout": room.empty_timeout,
        "departure_timeout": 20,
        "max_participants": room.max_participants,
        "creation_time": (room.created_ms / 1000).to_string(),
        "creation_time_ms": room.created_ms.to_string(),
        "turn_password": "",
        "enabled_codecs": [],
        "metadata": room.metadata,
        "num_participants": room.participants.len(),
        "num_publishers": 0,
        "active_recording": false,
    })
}

fn participant_json(participant: &FakeParticipant, joined_ms: i64) -> Value {
    json!({
        "sid": participant.sid,
        "identity": participant.identity,
        "state": "ACTIVE",
        "tracks": [],
        "metadata": "",
        "joined_at": (joined_ms / 1000).to_string(),
        "joined_at_ms": joined_ms.to_string(),
        "name": participant.name,
        "version": 1,
        "region": "",
        "is_publisher": false,
        "kind": participant.kind,
        "attributes": {},
    })
}

/// Times in `AgentDispatchState` and `EgressInfo` are Unix nanoseconds.
fn dispatch_json(dispatch: &FakeDispatch, created_ms: i64, deleted_ms: i64) -> Value {
    json!({
        "id": dispatch.id,
        "agent_name": dispatch.agent_name,
        "room": dispatch.room,
        "metadata": dispatch.metadata,
        "state": {
            "jobs": [],
            "created_at": (created_ms * 1_000_000).to_string(),
            "deleted_at": (deleted_ms * 1_000_000).to_string(),
        },
    })
}

fn egress_json(egress: &FakeEgress, room_sid: &str, started_ms: i64, ended_ms: i64) -> Value {
    let mut s3 = json!({
        "bucket": egress.s3_bucket,
        "region": egress.s3_region,
    });
    if !egress.assume_role_arn.is_empty() {
        s3["assume_role_arn"] = json!(egress.assume_role_arn);
    }
    json!({
        "egress_id": egress.id,
        "room_id": room_sid,
        "room_name": egress.room,
        "source_type": "EGRESS_SOURCE_TYPE_WEB",
        "status": egress.status,
        "started_at": (started_ms * 1_000_000).to_string(),
        "ended_at": (ended_ms * 1_000_000).to_string(),
        "updated_at": (ended_ms.max(started_ms) * 1_000_000).to_string(),
        "room_composite": {
            "room_name": egress.room,
            "audio_only": egress.audio_only,
            "file_outputs": [{
                "file_type": egress.file_type,
                "filepath": egress.filepath,
                "s3": s3,
            }],
        },
        "file_results": [],
        "error": "",
    })
}

fn room_not_found() -> Fault {
    twirp("not_found", "requested room does not exist".into())
}

/// A Twirp error: its code, message and HTTP status.
struct Fault {
    status: StatusCode,
    code: &'static str,
    msg: String,
}

impl Fault {
    fn response(self) -> Response {
        json_response(self.status, json!({ "code": self.code, "msg": self.msg }))
    }
}

/// A Twirp error with the HTTP status Twirp gives its code.
fn twirp(code: &'static str, msg: String) -> Fault {
    let status = match code {
        "bad_route" | "not_found" => StatusCode::NOT_FOUND,
        "unauthenticated" => StatusCode::UNAUTHORIZED,
        "permission_denied" => StatusCode::FORBIDDEN,
        "malformed" | "invalid_argument" | "out_of_range" => StatusCode::BAD_REQUEST,
        "failed_precondition" => StatusCode::PRECONDITION_FAILED,
        "already_exists" | "aborted" => StatusCode::CONFLICT,
        "resource_exhausted" => StatusCode::TOO_MANY_REQUESTS,
        "unimplemented" => StatusCode::NOT_IMPLEMENTED,
        "unavailable" => StatusCode::SERVICE_UNAVAILABLE,
        "deadline_exceeded" | "canceled" => StatusCode::REQUEST_TIMEOUT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    Fault { status, code, msg }
}

/// The Twirp code a scripted failure of this status carries.
fn code_for(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "invalid_argument",
        401 => "unauthenticated",
        403 => "permission_denied",
        404 => "not_found",
        408 => "deadline_exceeded",
        409 => "already_exists",
        412 => "failed_precondition",
        429 => "resource_exhausted",
        501 => "unimplemented",
        503 => "unavailable",
        _ => "internal",
    }
}

/// `RM_`, `PA_`, `AD_` or `EG_` and 12 characters, like LiveKit's ids.
fn new_id(prefix: &str) -> String {
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}{}", &random[..12])
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
