//! Fake ElevenLabs Conversational AI: Twilio outbound call and conversation
//! polling, plus builders for signed post-call webhooks.

use std::collections::HashMap;
use std::future::ready;
use std::sync::{Arc, Mutex};

use hmac::{Hmac, Mac};
use http::StatusCode;
use serde_json::{json, Value};
use sha2::Sha256;

use super::twilio::new_call_sid;
use super::{json_response, lock, Recorded, Response, Server};

const OUTBOUND_PATH: &str = "/v1/convai/twilio/outbound-call";
const CONVERSATIONS_PREFIX: &str = "/v1/convai/conversations/";
/// Agent reported for conversations registered with [`FakeElevenLabs::add_conversation`].
const UNKNOWN_AGENT: &str = "agent_fake";

/// How every conversation of a [`FakeElevenLabs`] behaves when polled.
#[derive(Debug, Clone)]
pub enum ConversationScript {
    /// "initiated" on the first poll, then "in-progress", for
    /// `polls_before_done` polls; then "done" with this transcript.
    Finishes {
        polls_before_done: u32,
        /// `(role, message)`; role is "agent" | "user".
        transcript: Vec<(String, String)>,
        duration_secs: u64,
    },
    /// "failed" on every poll, with `metadata.termination_reason` = `reason`.
    Fails { reason: String },
    /// "initiated", then "in-progress" forever.
    NeverFinishes,
}

impl Default for ConversationScript {
    /// A short two-line call that is done on the first poll.
    fn default() -> Self {
        Self::Finishes {
            polls_before_done: 0,
            transcript: vec![
                ("agent".into(), "Hi, this is Sarah from TechCorp.".into()),
                ("user".into(), "Hello, yes I have a minute.".into()),
            ],
            duration_secs: 42,
        }
    }
}

struct Conversation {
    agent_id: String,
    call_sid: String,
    start_time_unix_secs: i64,
    polls: u32,
    /// This conversation's own script, over the fake's.
    script: Option<ConversationScript>,
    /// `conversation_initiation_client_data` of the outbound call.
    client_data: Value,
}

impl Conversation {
    fn new(agent_id: String, call_sid: String) -> Self {
        Self {
            agent_id,
            call_sid,
            start_time_unix_secs: chrono::Utc::now().timestamp(),
            polls: 0,
            script: None,
            client_data: Value::Null,
        }
    }
}

/// A scripted answer for the next `remaining` outbound-call requests.
struct Failure {
    remaining: u32,
    status: StatusCode,
    body: Value,
}

#[derive(Default)]
struct State {
    api_key: String,
    script: Mutex<ConversationScript>,
    conversations: Mutex<HashMap<String, Conversation>>,
    outbound: Mutex<Vec<Value>>,
    failure: Mutex<Option<Failure>>,
    /// Scripted answers to the next conversation reads, with `Retry-After`.
    read_failure: Mutex<Option<(Failure, Option<u64>)>>,
}

/// Fake ElevenLabs server; stops when dropped.
pub struct FakeElevenLabs {
    server: Server,
    state: Arc<State>,
}

impl FakeElevenLabs {
    /// Starts the fake; every request must send `xi-api-key: <api_key>`.
    pub fn start(api_key: &str) -> Self {
        let state = Arc::new(State {
            api_key: api_key.to_owned(),
            ..State::default()
        });
        let handler_state = Arc::clone(&state);
        let server = Server::start("127.0.0.1:0", move |req| ready(handler_state.handle(&req)));
        Self { server, state }
    }

    /// Stands in for `https://api.elevenlabs.io`.
    pub fn base_url(&self) -> &str {
        &self.server.base_url
    }

    /// Sets the script for all conversations, including already-created ones.
    pub fn set_conversation_script(&self, script: ConversationScript) {
        *lock(&self.state.script) = script;
    }

    /// Makes `id` pollable without an outbound call (e.g. a conversation a test
    /// announces through a webhook); its agent is "agent_fake". Re-adding resets it.
    pub fn add_conversation(&self, id: &str) {
        let conversation = Conversation::new(UNKNOWN_AGENT.to_owned(), new_call_sid());
        lock(&self.state.conversations).insert(id.to_owned(), conversation);
    }

    /// Sets how one conversation behaves when read, over the fake's script.
    pub fn set_script_of(&self, id: &str, script: ConversationScript) {
        if let Some(conversation) = lock(&self.state.conversations).get_mut(id) {
            conversation.script = Some(script);
        }
    }

    /// The next `n` conversation reads answer `status` (a 5xx outage or a
    /// 429) with ElevenLabs' error JSON and, when given, `Retry-After`.
    pub fn fail_conversation_reads(&self, n: u32, status: u16, retry_after_secs: Option<u64>) {
        let status = StatusCode::from_u16(status).expect("valid HTTP status");
        let body =
            json!({"detail": {"status": "error", "message": "Fake ElevenLabs: scripted failure"}});
        *lock(&self.state.read_failure) = Some((
            Failure {
                remaining: n,
                status,
                body,
            },
            retry_after_secs,
        ));
    }

    /// Ids of the conversations the outbound calls started, in no order.
    pub fn conversation_ids(&self) -> Vec<String> {
        lock(&self.state.conversations).keys().cloned().collect()
    }

    /// The next `n` authenticated outbound-call requests answer `status` with `body`.
    pub fn fail_next_outbound_calls(&self, n: u32, status: u16, body: Value) {
        let status = StatusCode::from_u16(status).expect("valid HTTP status");
        *lock(&self.state.failure) = Some(Failure {
            remaining: n,
            status,
            body,
        });
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.server.requests()
    }

    /// JSON bodies of accepted (200) outbound-call requests, in order.
    pub fn outbound_requests(&self) -> Vec<Value> {
        lock(&self.state.outbound).clone()
    }

    /// Authenticated GETs of conversation `id` so far (0 if unknown).
    pub fn polls(&self, id: &str) -> u32 {
        lock(&self.state.conversations)
            .get(id)
            .map_or(0, |c| c.polls)
    }
}

impl State {
    fn handle(&self, req: &Recorded) -> Response {
        if req.header("xi-api-key").as_deref() != Some(self.api_key.as_str()) {
            return json_response(
                StatusCode::UNAUTHORIZED,
                json!({ "detail": { "status": "invalid_api_key", "message": "Invalid API key" } }),
            );
        }
        match (req.method.as_str(), req.path.as_str()) {
            ("POST", OUTBOUND_PATH) => self.outbound_call(req),
            ("GET", path) => match path.strip_prefix(CONVERSATIONS_PREFIX) {
                Some(id) if !id.is_empty() && !id.contains('/') => self.poll(id),
                _ => route_not_found(),
            },
            _ => route_not_found(),
        }
    }

    fn outbound_call(&self, req: &Recorded) -> Response {
        {
            let mut slot = lock(&self.failure);
            if let Some(failure) = slot.as_mut().filter(|f| f.remaining > 0) {
                failure.remaining -= 1;
                return json_response(failure.status, failure.body.clone());
            }
        }
        let Ok(body) = serde_json::from_slice::<Value>(&req.body) else {
            return unprocessable(vec![field_error(&[], "JSON decode error", "json_invalid")]);
        };
        let errors = validate_outbound(&body);
        if !errors.is_empty() {
            return unprocessable(errors);
        }
        let agent_id = body["agent_id"].as_str().unwrap_or_default().to_owned();
        let conversation_id = new_conversation_id();
        let call_sid = new_call_sid();
        let mut conversation = Conversation::new(agent_id, call_sid.clone());
        conversation.client_data = body
            .get("conversation_initiation_client_data")
            .cloned()
            .unwrap_or(Value::Null);
        lock(&self.conversations).insert(conversation_id.clone(), conversation);
        lock(&self.outbound).push(body);
        json_response(
            StatusCode::OK,
            json!({
                "success": true,
                "message": "Success",
                "conversation_id": conversation_id,
                "callSid": call_sid,
            }),
        )
    }

    fn poll(&self, id: &str) -> Response {
        {
            let mut slot = lock(&self.read_failure);
            if let Some((failure, retry_after)) = slot.as_mut().filter(|(f, _)| f.remaining > 0) {
                failure.remaining -= 1;
                let mut response = json_response(failure.status, failure.body.clone());
                if let Some(secs) = retry_after {
                    response.headers_mut().insert(
                        http::header::RETRY_AFTER,
                        http::HeaderValue::from_str(&secs.to_string()).expect("digits"),
                    );
                }
                return response;
            }
        }
        let mut conversations = lock(&self.conversations);
        let Some(conversation) = conversations.get_mut(id) else {
            return json_response(
                StatusCode::NOT_FOUND,
                json!({ "detail": {
                    "status": "conversation_not_found",
                    "message": "Conversation not found",
                } }),
            );
        };
        conversation.polls += 1;
        let poll = conversation.polls;
        let pending = if poll == 1 {
            "initiated"
        } else {
            "in-progress"
        };
        let shared = lock(&self.script).clone();
        let script = conversation.script.clone().unwrap_or(shared);
        let body = match &script {
            ConversationScript::NeverFinishes => {
                conversation_json(id, conversation, pending, Vec::new(), 0, "")
            }
            ConversationScript::Finishes {
                polls_before_done, ..
            } if poll <= *polls_before_done => {
                conversation_json(id, conversation, pending, Vec::new(), 0, "")
            }
            ConversationScript::Finishes {
                transcript,
                duration_secs,
                ..
            } => conversation_json(
                id,
                conversation,
                "done",
                transcript_json(transcript, *duration_secs),
                *duration_secs,
                "Call ended by user",
            ),
            ConversationScript::Fails { reason } => {
                conversation_json(id, conversation, "failed", Vec::new(), 0, reason)
            }
        };
        json_response(StatusCode::OK, body)
    }
}

/// FastAPI/pydantic-style errors for the outbound-call body, all at once as
/// FastAPI reports them.
fn validate_outbound(body: &Value) -> Vec<Value> {
    if !body.is_object() {
        return vec![field_error(
            &[],
            "Input should be a valid dictionary",
            "dict_type",
        )];
    }
    let mut errors = Vec::new();
    for field in ["agent_id", "agent_phone_number_id", "to_number"] {
        match body.get(field) {
            None => errors.push(field_error(&[field], "Field required", "missing")),
            Some(Value::String(_)) => {}
            Some(_) => errors.push(field_error(
                &[field],
                "Input should be a valid string",
                "string_type",
            )),
        }
    }
    let client_data = "conversation_initiation_client_data";
    match body.get(client_data) {
        None | Some(Value::Null) => {}
        Some(Value::Object(data)) => match data.get("dynamic_variables") {
            None | Some(Value::Null | Value::Object(_)) => {}
            Some(_) => errors.push(field_error(
                &[client_data, "dynamic_variables"],
                "Input should be a valid dictionary",
                "dict_type",
            )),
        },
        Some(_) => errors.push(field_error(
            &[client_data],
            "Input should be a valid dictionary",
            "dict_type",
        )),
    }
    errors
}

/// One `detail[]` entry; `loc` is prefixed with "body" like FastAPI's.
fn field_error(path: &[&str], msg: &str, kind: &str) -> Value {
    let loc: Vec<&str> = std::iter::once("body")
        .chain(path.iter().copied())
        .collect();
    json!({ "loc": loc, "msg": msg, "type": kind })
}

fn unprocessable(errors: Vec<Value>) -> Response {
    json_response(
        StatusCode::UNPROCESSABLE_ENTITY,
        json!({ "detail": errors }),
    )
}

/// FastAPI's answer for a route that does not exist.
fn route_not_found() -> Response {
    json_response(StatusCode::NOT_FOUND, json!({ "detail": "Not Found" }))
}

/// `conv_` + 26 random lowercase characters, the length of the real (ULID) ids.
fn new_conversation_id() -> String {
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("conv_{}", &random[..26])
}

/// GET-conversation shape for any status; pending and failed ones have an
/// empty transcript and zero duration.
fn conversation_json(
    id: &str,
    conversation: &Conversation,
    status: &str,
    transcript: Vec<Value>,
    duration_secs: u64,
    termination_reason: &str,
) -> Value {
    json!({
        "agent_id": conversation.agent_id,
        "conversation_id": id,
        "conversation_initiation_client_data": conversation.client_data,
        "status": status,
        "transcript": transcript,
        "metadata": {
            "start_time_unix_secs": conversation.start_time_unix_secs,
            "call_duration_secs": duration_secs,
            "termination_reason": termination_reason,
            "phone_call": {
                "call_sid": conversation.call_sid,
                "direction": "outbound",
                "type": "twilio",
            },
        },
    })
}

/// Turns spread evenly over the call so `time_in_call_secs` is plausible and monotonic.
fn transcript_json<R: AsRef<str>, M: AsRef<str>>(
    transcript: &[(R, M)],
    duration_secs: u64,
) -> Vec<Value> {
    let slot = duration_secs / transcript.len().max(1) as u64;
    transcript
        .iter()
        .enumerate()
        .map(|(i, (role, message))| {
            json!({
                "role": role.as_ref(),
                "message": message.as_ref(),
                "time_in_call_secs": i as u64 * slot,
            })
        })
        .collect()
}

/// The `ElevenLabs-Signature` header value for a webhook `body` sent at
/// `timestamp` (unix seconds): `t=<timestamp>,v0=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.
pub fn elevenlabs_signature(secret: &str, timestamp: i64, body: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts any key length");
    mac.update(format!("{timestamp}.{body}").as_bytes());
    format!(
        "t={timestamp},v0={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// A `post_call_transcription` webhook body for a finished outbound Twilio
/// call that ended just now; `transcript` is `(role, message)` pairs.
pub fn post_call_transcription_body(
    agent_id: &str,
    conversation_id: &str,
    call_sid: &str,
    transcript: &[(&str, &str)],
    duration_secs: u64,
) -> String {
    let now = chrono::Utc::now().timestamp();
    let start = now.saturating_sub(i64::try_from(duration_secs).unwrap_or(i64::MAX));
    json!({
        "type": "post_call_transcription",
        "event_timestamp": now,
        "data": {
            "agent_id": agent_id,
            "conversation_id": conversation_id,
            "status": "done",
            "transcript": transcript_json(transcript, duration_secs),
            "metadata": {
                "start_time_unix_secs": start,
                "call_duration_secs": duration_secs,
                "termination_reason": "Call ended by user",
                "phone_call": {
                    "call_sid": call_sid,
                    "direction": "outbound",
                    "type": "twilio",
                },
            },
            "analysis": {
                "call_successful": "success",
                "transcript_summary": format!(
                    "The agent and the user exchanged {} messages over {duration_secs} seconds.",
                    transcript.len()
                ),
            },
        },
    })
    .to_string()
}

/// A `call_initiation_failure` webhook body (e.g. `reason` "busy" or "no-answer").
pub fn call_initiation_failure_body(agent_id: &str, conversation_id: &str, reason: &str) -> String {
    json!({
        "type": "call_initiation_failure",
        "event_timestamp": chrono::Utc::now().timestamp(),
        "data": {
            "agent_id": agent_id,
            "conversation_id": conversation_id,
            "failure_reason": reason,
            "metadata": {},
        },
    })
    .to_string()
}
