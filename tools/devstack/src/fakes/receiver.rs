//! A customer's webhook receiver: records every delivery callops makes,
//! checks its Standard Webhooks signature against the endpoint's secret, and
//! answers as scripted (accept, fail, hang, redirect, 410 Gone). Tests use
//! it as the far end of webhooks out; `make dev`'s walk-through runs it as
//! `cargo run -p devstack --bin webhook-receiver`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{header, HeaderValue, StatusCode};
use serde_json::Value;

use super::{lock, text_response, Recorded, Response, Server};

/// How the receiver answers one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 200 `ok`.
    Accept,
    /// This status (500, 503, 400 …) with a short body.
    Fail(u16),
    /// Waits, then answers 200 (a receiver slower than callops waits for).
    Hang(Duration),
    /// 302 to this URL (callops must not follow it).
    Redirect(String),
    /// 410 Gone: the endpoint is no more.
    Gone,
}

/// One delivery as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: String,
    pub timestamp: i64,
    pub signature: String,
    pub body: String,
    /// The signature checked out against one of the receiver's secrets.
    pub verified: bool,
    pub answered: u16,
}

impl Delivery {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

#[derive(Default)]
struct State {
    script: Mutex<VecDeque<Answer>>,
    always: Mutex<Option<Answer>>,
    secrets: Mutex<Vec<String>>,
    deliveries: Mutex<Vec<Delivery>>,
    /// Requests answered (a hanging one counts when it finally answers).
    completed: AtomicUsize,
    echo: AtomicBool,
}

pub struct FakeReceiver {
    server: Server,
    state: Arc<State>,
}

impl FakeReceiver {
    pub fn start() -> Self {
        Self::start_at("127.0.0.1:0")
    }

    pub fn start_at(addr: &str) -> Self {
        let state = Arc::new(State::default());
        let handler_state = Arc::clone(&state);
        let server = Server::start(addr, move |req| {
            let state = Arc::clone(&handler_state);
            async move { state.handle(req).await }
        });
        Self { server, state }
    }

    /// Where deliveries go: `<base>/hooks`.
    pub fn url(&self) -> String {
        format!("{}/hooks", self.server.base_url)
    }

    pub fn base_url(&self) -> &str {
        &self.server.base_url
    }

    /// Secrets a signature may be made with (the current and, during a
    /// rotation, the previous one).
    pub fn set_secrets(&self, secrets: &[&str]) {
        *lock(&self.state.secrets) = secrets.iter().map(|s| s.to_string()).collect();
    }

    /// The next answers, in order, before `always`.
    pub fn push(&self, answer: Answer, times: usize) {
        let mut script = lock(&self.state.script);
        for _ in 0..times {
            script.push_back(answer.clone());
        }
    }

    /// The answer once the script is used up (default: accept).
    pub fn set_always(&self, answer: Answer) {
        *lock(&self.state.always) = Some(answer);
    }

    /// Prints each delivery (the dev walk-through).
    pub fn echo(&self) {
        self.state.echo.store(true, Ordering::Relaxed);
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        lock(&self.state.deliveries).clone()
    }

    /// Deliveries with this `webhook-id`.
    pub fn of(&self, id: &str) -> Vec<Delivery> {
        self.deliveries()
            .into_iter()
            .filter(|d| d.id == id)
            .collect()
    }

    pub fn completed(&self) -> usize {
        self.state.completed.load(Ordering::SeqCst)
    }

    /// Every request, including ones that were not deliveries.
    pub fn requests(&self) -> Vec<Recorded> {
        self.server.requests()
    }
}

impl State {
    async fn handle(&self, req: Recorded) -> Response {
        let answer = {
            let next = lock(&self.script).pop_front();
            next.or_else(|| lock(&self.always).clone())
                .unwrap_or(Answer::Accept)
        };
        let id = req.header("webhook-id").unwrap_or_default();
        let timestamp = req
            .header("webhook-timestamp")
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        let signature = req.header("webhook-signature").unwrap_or_default();
        let verified = lock(&self.secrets).iter().any(|secret| {
            shared::flows::webhooks::signing::verify(secret, &id, timestamp, &req.body, &signature)
        });
        let answered = match &answer {
            Answer::Accept | Answer::Hang(_) => 200,
            Answer::Fail(status) => *status,
            Answer::Redirect(_) => 302,
            Answer::Gone => 410,
        };
        let delivery = Delivery {
            id,
            timestamp,
            signature,
            body: String::from_utf8_lossy(&req.body).into_owned(),
            verified,
            answered,
        };
        if self.echo.load(Ordering::Relaxed) {
            println!(
                "----- webhook {} ({}) signature {} -----\n{}",
                delivery.id,
                delivery.json()["type"].as_str().unwrap_or("?"),
                if verified { "verified" } else { "NOT verified" },
                delivery.body
            );
        }
        lock(&self.deliveries).push(delivery);
        if let Answer::Hang(wait) = &answer {
            tokio::time::sleep(*wait).await;
        }
        let mut response = match &answer {
            Answer::Accept | Answer::Hang(_) => text_response(StatusCode::OK, "ok"),
            Answer::Fail(status) => text_response(
                StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                format!("receiver failed with {status}"),
            ),
            Answer::Redirect(_) => text_response(StatusCode::FOUND, ""),
            Answer::Gone => text_response(StatusCode::GONE, "gone"),
        };
        if let Answer::Redirect(to) = &answer {
            if let Ok(value) = HeaderValue::from_str(to) {
                response.headers_mut().insert(header::LOCATION, value);
            }
        }
        self.completed.fetch_add(1, Ordering::SeqCst);
        response
    }
}
