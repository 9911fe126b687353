//! Fake AssemblyAI v2 API: upload, create transcript, poll transcript.

use std::collections::HashMap;
use std::future::ready;
use std::sync::{Arc, Mutex};

use http::StatusCode;
use serde_json::{json, Value};

use super::{json_response, lock, Recorded, Response, Server};

/// How every transcript created by a [`FakeAssemblyAi`] ends when polled.
#[derive(Debug, Clone)]
pub enum TranscriptOutcome {
    /// Answers "queued"/"processing" for `polls_before_done` polls, then "completed".
    Completed {
        polls_before_done: u32,
        /// `(speaker, text)`, e.g. `("A", "Hello")`.
        utterances: Vec<(String, String)>,
        /// `(text, sentiment, speaker)`; sentiment is "POSITIVE" | "NEUTRAL" | "NEGATIVE".
        sentiment: Vec<(String, String, String)>,
        /// Seconds.
        audio_duration: u64,
    },
    /// Fails on the first poll with `{"status": "error", "error": message}`.
    Error { message: String },
    /// Stays "processing" forever.
    NeverFinishes,
}

impl Default for TranscriptOutcome {
    /// A short two-speaker call that completes on the first poll.
    fn default() -> Self {
        let pair = |a: &str, b: &str| (a.to_owned(), b.to_owned());
        Self::Completed {
            polls_before_done: 0,
            utterances: vec![
                pair("A", "Thank you for calling, how can I help?"),
                pair("B", "I would like to check my order status."),
            ],
            sentiment: vec![
                (
                    "Thank you for calling, how can I help?".into(),
                    "POSITIVE".into(),
                    "A".into(),
                ),
                (
                    "I would like to check my order status.".into(),
                    "NEUTRAL".into(),
                    "B".into(),
                ),
            ],
            audio_duration: 12,
        }
    }
}

const AUTH_ERROR: &str = "Authentication error, API token missing/invalid";

#[derive(Default)]
struct State {
    api_key: String,
    outcome: Mutex<TranscriptOutcome>,
    /// Transcript id -> (audio_url, polls so far).
    transcripts: Mutex<HashMap<String, (Value, u32)>>,
    failing_uploads: Mutex<u32>,
    upload_sizes: Mutex<Vec<usize>>,
}

/// Fake AssemblyAI server; stops when dropped.
pub struct FakeAssemblyAi {
    server: Server,
    state: Arc<State>,
}

impl FakeAssemblyAi {
    /// Starts the fake; every request must send `authorization: <api_key>` verbatim.
    pub fn start(api_key: &str) -> Self {
        let state = Arc::new(State {
            api_key: api_key.to_owned(),
            ..State::default()
        });
        let handler_state = Arc::clone(&state);
        let server = Server::start("127.0.0.1:0", move |req| ready(handler_state.handle(&req)));
        Self { server, state }
    }

    pub fn base_url(&self) -> &str {
        &self.server.base_url
    }

    /// Sets the outcome for all transcripts, including already-created ones.
    pub fn set_outcome(&self, outcome: TranscriptOutcome) {
        *lock(&self.state.outcome) = outcome;
    }

    /// The next `n` authenticated uploads answer 500.
    pub fn fail_next_uploads(&self, n: u32) {
        *lock(&self.state.failing_uploads) = n;
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.server.requests()
    }

    /// JSON bodies of all `POST /v2/transcript` requests (accepted or not).
    pub fn transcript_requests(&self) -> Vec<Value> {
        self.requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path == "/v2/transcript")
            .map(|r| serde_json::from_slice(&r.body).unwrap_or(Value::Null))
            .collect()
    }

    /// Body sizes of successful (200) uploads, in order.
    pub fn upload_sizes(&self) -> Vec<usize> {
        lock(&self.state.upload_sizes).clone()
    }
}

impl State {
    fn handle(&self, req: &Recorded) -> Response {
        if req.header("authorization").as_deref() != Some(self.api_key.as_str()) {
            return error(StatusCode::UNAUTHORIZED, AUTH_ERROR);
        }
        match (req.method.as_str(), req.path.as_str()) {
            ("POST", "/v2/upload") => self.upload(req),
            ("POST", "/v2/transcript") => self.create(req),
            ("GET", path) => match path.strip_prefix("/v2/transcript/") {
                Some(id) => self.poll(id),
                None => error(StatusCode::NOT_FOUND, "Not found"),
            },
            _ => error(StatusCode::NOT_FOUND, "Not found"),
        }
    }

    fn upload(&self, req: &Recorded) -> Response {
        {
            let mut failing = lock(&self.failing_uploads);
            if *failing > 0 {
                *failing -= 1;
                return error(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error");
            }
        }
        lock(&self.upload_sizes).push(req.body.len());
        let url = format!("https://cdn.assemblyai.com/upload/{}", uuid::Uuid::new_v4());
        json_response(StatusCode::OK, json!({ "upload_url": url }))
    }

    fn create(&self, req: &Recorded) -> Response {
        let Ok(body) = serde_json::from_slice::<Value>(&req.body) else {
            return error(StatusCode::BAD_REQUEST, "Invalid JSON in request body");
        };
        let audio_url = match body.get("audio_url") {
            Some(url @ Value::String(_)) => url.clone(),
            _ => return error(StatusCode::BAD_REQUEST, "audio_url is required"),
        };
        let id = uuid::Uuid::new_v4().to_string();
        lock(&self.transcripts).insert(id.clone(), (audio_url.clone(), 0));
        let echo = |key| body.get(key).cloned().unwrap_or(Value::Null);
        json_response(
            StatusCode::OK,
            json!({
                "id": id,
                "status": "queued",
                "audio_url": audio_url,
                "speaker_labels": echo("speaker_labels"),
                "sentiment_analysis": echo("sentiment_analysis"),
            }),
        )
    }

    fn poll(&self, id: &str) -> Response {
        let (audio_url, poll) = {
            let mut transcripts = lock(&self.transcripts);
            let Some((audio_url, polls)) = transcripts.get_mut(id) else {
                return error(StatusCode::NOT_FOUND, "Transcript not found");
            };
            *polls += 1;
            (audio_url.clone(), *polls)
        };
        // Pending answers look like the real ones: the first poll may still be queued.
        let pending = || {
            let status = if poll == 1 { "queued" } else { "processing" };
            json_response(StatusCode::OK, json!({ "id": id, "status": status }))
        };
        match &*lock(&self.outcome) {
            TranscriptOutcome::NeverFinishes => pending(),
            TranscriptOutcome::Error { message } => json_response(
                StatusCode::OK,
                json!({ "id": id, "status": "error", "audio_url": audio_url, "error": message }),
            ),
            TranscriptOutcome::Completed {
                polls_before_done, ..
            } if poll <= *polls_before_done => pending(),
            TranscriptOutcome::Completed {
                utterances,
                sentiment,
                audio_duration,
                ..
            } => json_response(
                StatusCode::OK,
                completed(id, &audio_url, utterances, sentiment, *audio_duration),
            ),
        }
    }
}

/// AssemblyAI's completed-transcript shape. Segments are spread evenly over the
/// audio so timestamps (ms) are plausible and monotonic.
fn completed(
    id: &str,
    audio_url: &Value,
    utterances: &[(String, String)],
    sentiment: &[(String, String, String)],
    audio_duration: u64,
) -> Value {
    let span = |i: usize, n: usize| {
        let slot = audio_duration * 1000 / n.max(1) as u64;
        (i as u64 * slot, (i as u64 + 1) * slot)
    };
    let utterance_json: Vec<Value> = utterances
        .iter()
        .enumerate()
        .map(|(i, (speaker, text))| {
            let (start, end) = span(i, utterances.len());
            json!({
                "speaker": speaker, "text": text, "start": start, "end": end,
                "confidence": 0.93, "words": [],
            })
        })
        .collect();
    let sentiment_json: Vec<Value> = sentiment
        .iter()
        .enumerate()
        .map(|(i, (text, label, speaker))| {
            let (start, end) = span(i, sentiment.len());
            json!({
                "text": text, "start": start, "end": end, "sentiment": label,
                "confidence": 0.87, "speaker": speaker,
            })
        })
        .collect();
    let text: Vec<&str> = utterances.iter().map(|(_, t)| t.as_str()).collect();
    json!({
        "id": id,
        "status": "completed",
        "audio_url": audio_url,
        "text": text.join(" "),
        "audio_duration": audio_duration,
        "utterances": utterance_json,
        "sentiment_analysis_results": sentiment_json,
    })
}

fn error(status: StatusCode, message: &str) -> Response {
    json_response(status, json!({ "error": message }))
}
