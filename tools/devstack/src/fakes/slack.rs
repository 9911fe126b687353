//! Fake Slack: Web API `chat.postMessage` and an incoming webhook.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{header, HeaderValue, StatusCode};
use serde_json::{json, Value};

use super::{json_response, lock, text_response, Recorded, Response, Server};

const POST_MESSAGE_PATH: &str = "/api/chat.postMessage";
const WEBHOOK_PATH: &str = "/services/T000/B000/XXXX";

/// A canned answer that replaces normal behaviour on both endpoints.
#[derive(Debug, Clone)]
pub enum ScriptedResponse {
    /// HTTP 429 with `Retry-After`.
    RateLimited { retry_after_secs: u64 },
    /// HTTP 500.
    ServerError,
    /// A Slack error code: bot API answers `200 {"ok":false,"error":..}`, the
    /// webhook answers the HTTP status Slack uses for that code.
    BotError(String),
    /// Sleeps, then answers normally; for exercising client timeouts.
    Hang(Duration),
}

#[derive(Clone, Copy)]
enum Endpoint {
    Bot,
    Webhook,
}

struct State {
    bot_token: Mutex<String>,
    script: Mutex<VecDeque<ScriptedResponse>>,
    always: Mutex<Option<ScriptedResponse>>,
    posts: Mutex<Vec<Value>>,
    /// Source of unique message timestamps.
    messages: AtomicU64,
    /// Print each accepted post (`make dev`, where the fake is someone's Slack).
    echo: AtomicBool,
}

/// Fake Slack server; stops when dropped.
pub struct FakeSlack {
    server: Server,
    state: Arc<State>,
}

impl FakeSlack {
    pub fn start() -> Self {
        let state = Arc::new(State {
            bot_token: Mutex::new("xoxb-test-token".to_owned()),
            script: Mutex::default(),
            always: Mutex::default(),
            posts: Mutex::default(),
            messages: AtomicU64::new(0),
            echo: AtomicBool::new(false),
        });
        let handler_state = Arc::clone(&state);
        let server = Server::start("127.0.0.1:0", move |req| {
            let state = Arc::clone(&handler_state);
            async move { state.handle(req).await }
        });
        Self { server, state }
    }

    /// Server root; the Web API lives under `<base_url>/api`.
    pub fn base_url(&self) -> &str {
        &self.server.base_url
    }

    pub fn webhook_url(&self) -> String {
        format!("{}{WEBHOOK_PATH}", self.server.base_url)
    }

    /// Token expected as `Authorization: Bearer <token>` (default "xoxb-test-token").
    pub fn set_bot_token(&self, token: impl Into<String>) {
        *lock(&self.state.bot_token) = token.into();
    }

    /// Queues a one-shot response; queued responses are used in order, before
    /// any [`set_always`](Self::set_always) override.
    pub fn push_response(&self, response: ScriptedResponse) {
        lock(&self.state.script).push_back(response);
    }

    /// Applies `response` to every request (after the queue drains); `None` restores normal behaviour.
    pub fn set_always(&self, response: Option<ScriptedResponse>) {
        *lock(&self.state.always) = response;
    }

    /// Prints every accepted post with its channel, for `make dev`.
    pub fn echo_posts(&self) {
        self.state.echo.store(true, Ordering::Relaxed);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.server.requests()
    }

    /// JSON bodies of messages Slack accepted, from either endpoint.
    pub fn posts(&self) -> Vec<Value> {
        lock(&self.state.posts).clone()
    }

    /// All requests to either endpoint, whatever the answer.
    pub fn attempts(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.path == POST_MESSAGE_PATH || r.path == WEBHOOK_PATH)
            .count()
    }
}

impl State {
    async fn handle(&self, req: Recorded) -> Response {
        let endpoint = match (req.method.as_str(), req.path.as_str()) {
            ("POST", POST_MESSAGE_PATH) => Endpoint::Bot,
            ("POST", WEBHOOK_PATH) => Endpoint::Webhook,
            (_, path) if path.starts_with("/api/") => {
                return json_response(StatusCode::NOT_FOUND, bot_error("unknown_method"))
            }
            _ => return text_response(StatusCode::NOT_FOUND, "no_service"),
        };
        match self.next_scripted() {
            Some(ScriptedResponse::Hang(delay)) => tokio::time::sleep(delay).await,
            Some(scripted) => return scripted_response(endpoint, scripted),
            None => {}
        }
        match endpoint {
            Endpoint::Bot => self.post_message(&req),
            Endpoint::Webhook => self.webhook(&req),
        }
    }

    fn next_scripted(&self) -> Option<ScriptedResponse> {
        let queued = lock(&self.script).pop_front();
        queued.or_else(|| lock(&self.always).clone())
    }

    fn post_message(&self, req: &Recorded) -> Response {
        let expected = format!("Bearer {}", lock(&self.bot_token));
        if req.header("authorization").as_deref() != Some(expected.as_str()) {
            return json_response(StatusCode::OK, bot_error("invalid_auth"));
        }
        let Ok(body) = serde_json::from_slice::<Value>(&req.body) else {
            return json_response(StatusCode::OK, bot_error("invalid_json"));
        };
        let Some(channel) = body.get("channel").and_then(Value::as_str) else {
            return json_response(StatusCode::OK, bot_error("channel_not_found"));
        };
        if !has_content(&body) {
            return json_response(StatusCode::OK, bot_error("no_text"));
        }
        // Unique, ordered, and shaped like real `ts` values ("seconds.micros").
        let n = self.messages.fetch_add(1, Ordering::Relaxed) + 1;
        let ts = format!("{}.{:06}", 1_700_000_000 + n / 10_000, n % 10_000 * 100);
        let mut message = json!({
            "type": "message",
            "text": body.get("text").cloned().unwrap_or_else(|| json!("")),
            "ts": ts,
        });
        if let Some(thread_ts) = body.get("thread_ts") {
            message["thread_ts"] = thread_ts.clone();
        }
        let response = json!({ "ok": true, "channel": channel, "ts": ts, "message": message });
        self.echo(channel, &body);
        lock(&self.posts).push(body);
        json_response(StatusCode::OK, response)
    }

    fn webhook(&self, req: &Recorded) -> Response {
        let Ok(body) = serde_json::from_slice::<Value>(&req.body) else {
            return text_response(StatusCode::BAD_REQUEST, "invalid_payload");
        };
        if !has_content(&body) {
            return text_response(StatusCode::BAD_REQUEST, "no_text");
        }
        self.echo("incoming webhook", &body);
        lock(&self.posts).push(body);
        text_response(StatusCode::OK, "ok")
    }

    fn echo(&self, channel: &str, body: &Value) {
        if self.echo.load(Ordering::Relaxed) {
            let text = body.get("text").and_then(Value::as_str).unwrap_or_default();
            println!(
                "----- fake Slack, {channel} -----\n{text}\n{}\n-----",
                body.get("blocks").map(Value::to_string).unwrap_or_default()
            );
        }
    }
}

fn has_content(body: &Value) -> bool {
    body.get("text").is_some_and(Value::is_string)
        || body.get("blocks").is_some_and(Value::is_array)
}

fn bot_error(code: &str) -> Value {
    json!({ "ok": false, "error": code })
}

fn scripted_response(endpoint: Endpoint, scripted: ScriptedResponse) -> Response {
    let (status, code) = match (&scripted, endpoint) {
        (ScriptedResponse::RateLimited { .. }, Endpoint::Bot) => {
            (StatusCode::TOO_MANY_REQUESTS, "ratelimited")
        }
        (ScriptedResponse::RateLimited { .. }, Endpoint::Webhook) => {
            (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
        }
        (ScriptedResponse::ServerError, Endpoint::Bot) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "fatal_error")
        }
        (ScriptedResponse::ServerError, Endpoint::Webhook) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "rollup_error")
        }
        (ScriptedResponse::BotError(code), Endpoint::Bot) => (StatusCode::OK, code.as_str()),
        (ScriptedResponse::BotError(code), Endpoint::Webhook) => {
            (webhook_status(code), code.as_str())
        }
        (ScriptedResponse::Hang(_), _) => unreachable!("Hang is handled before answering"),
    };
    let mut response = match endpoint {
        Endpoint::Bot => json_response(status, bot_error(code)),
        Endpoint::Webhook => text_response(status, code.to_owned()),
    };
    if let ScriptedResponse::RateLimited { retry_after_secs } = scripted {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
    }
    response
}

/// HTTP status incoming webhooks use for a given error code.
fn webhook_status(code: &str) -> StatusCode {
    match code {
        "channel_not_found" => StatusCode::NOT_FOUND,
        "invalid_auth" | "action_prohibited" => StatusCode::FORBIDDEN,
        "channel_is_archived" => StatusCode::GONE,
        _ => StatusCode::BAD_REQUEST,
    }
}
