//! Fake OpenAI-compatible LLM: `POST /chat/completions` with `Authorization:
//! Bearer <key>`. Answers from a script (texts, HTTP failures, unreadable
//! bodies, delays), else a canned reply naming the last user message;
//! records every request.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::StatusCode;
use serde_json::{json, Value};

use super::{json_response, lock, text_response, Recorded, Response, Server};

/// One scripted answer to the next completion request.
#[derive(Debug, Clone)]
pub enum LlmScript {
    /// `choices[0].message.content` is this text.
    Answer(String),
    /// An error status with OpenAI's error JSON.
    Fail(u16),
    /// 200 with a body that has no `choices`.
    Unreadable,
    /// Waits this long, then answers with the text.
    Slow(Duration, String),
}

struct State {
    api_key: String,
    script: Mutex<VecDeque<LlmScript>>,
}

/// Fake chat-completions server; stops when dropped.
pub struct FakeLlm {
    server: Server,
    state: Arc<State>,
}

impl FakeLlm {
    pub fn start(api_key: &str) -> Self {
        Self::start_at("127.0.0.1:0", api_key)
    }

    /// On a chosen address (`make dev`).
    pub fn start_at(addr: &str, api_key: &str) -> Self {
        let state = Arc::new(State {
            api_key: api_key.to_owned(),
            script: Mutex::default(),
        });
        let handler_state = Arc::clone(&state);
        let server = Server::start(addr, move |req| {
            let state = Arc::clone(&handler_state);
            async move { state.handle(req).await }
        });
        Self { server, state }
    }

    /// The `AGENT_LLM_BASE_URL` to configure (`{base}/chat/completions` is served).
    pub fn base_url(&self) -> &str {
        &self.server.base_url
    }

    /// Queues answers for the next requests, in order.
    pub fn script(&self, answers: impl IntoIterator<Item = LlmScript>) {
        lock(&self.state.script).extend(answers);
    }

    /// Every request, authorised or not.
    pub fn requests(&self) -> Vec<Recorded> {
        self.server.requests()
    }

    /// The JSON bodies of the completion requests that were answered (authorised).
    pub fn completions(&self) -> Vec<Value> {
        self.requests()
            .iter()
            .filter(|r| r.path.ends_with("/chat/completions") && self.state.authorised(r))
            .map(Recorded::json)
            .collect()
    }
}

impl State {
    fn authorised(&self, req: &Recorded) -> bool {
        req.header("authorization").as_deref() == Some(&format!("Bearer {}", self.api_key))
    }

    async fn handle(&self, req: Recorded) -> Response {
        if req.method != "POST" || !req.path.ends_with("/chat/completions") {
            return openai_error(StatusCode::NOT_FOUND, "Unknown request URL");
        }
        if !self.authorised(&req) {
            return openai_error(StatusCode::UNAUTHORIZED, "Incorrect API key provided");
        }
        let Ok(body) = serde_json::from_slice::<Value>(&req.body) else {
            return openai_error(StatusCode::BAD_REQUEST, "We could not parse the JSON body");
        };
        if body["model"].as_str().is_none() || !body["messages"].is_array() {
            return openai_error(StatusCode::BAD_REQUEST, "model and messages are required");
        }
        let next = lock(&self.script).pop_front();
        match next {
            Some(LlmScript::Answer(text)) => completion(&text),
            Some(LlmScript::Fail(status)) => openai_error(
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                "The server had an error while processing your request",
            ),
            Some(LlmScript::Unreadable) => json_response(StatusCode::OK, json!({"id": "x"})),
            Some(LlmScript::Slow(delay, text)) => {
                tokio::time::sleep(delay).await;
                completion(&text)
            }
            None => {
                let last = body["messages"]
                    .as_array()
                    .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
                    .and_then(|m| m["content"].as_str())
                    .unwrap_or_default()
                    .to_string();
                completion(&format!("(fake agent) You said: {last}"))
            }
        }
    }
}

fn completion(text: &str) -> Response {
    json_response(
        StatusCode::OK,
        json!({
            "id": format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
            "object": "chat.completion",
            "created": chrono::Utc::now().timestamp(),
            "model": "fake-model",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": null},
                "logprobs": null,
                "finish_reason": "stop"
            }],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        }),
    )
}

fn openai_error(status: StatusCode, message: &str) -> Response {
    if status == StatusCode::NOT_FOUND {
        return text_response(status, message.to_owned());
    }
    json_response(
        status,
        json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": null}}),
    )
}
