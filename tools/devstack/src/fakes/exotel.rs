//! Fake Exotel: recording downloads and the v1 call-details API.

use std::future::ready;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use http::{header, HeaderValue, StatusCode};
use http_body_util::Full;
use serde_json::json;

use super::{json_response, Recorded, Response, Server};

const DEFAULT_RECORDING_SIZE: usize = 64 * 1024;

struct State {
    /// Known only once the server is bound; needed for `RecordingUrl`.
    base_url: OnceLock<String>,
    /// Expected `user:password` for HTTP Basic auth.
    credentials: String,
    recording_size: AtomicUsize,
}

/// Fake Exotel server; stops when dropped.
pub struct FakeExotel {
    server: Server,
    state: Arc<State>,
}

impl FakeExotel {
    /// Starts the fake; every request needs HTTP Basic `api_key:api_token`.
    pub fn start(api_key: &str, api_token: &str) -> Self {
        Self::start_at("127.0.0.1:0", api_key, api_token)
    }

    /// Starts the fake on a fixed address (the local dev stack's sample recordings).
    pub fn start_at(addr: &str, api_key: &str, api_token: &str) -> Self {
        let state = Arc::new(State {
            base_url: OnceLock::new(),
            credentials: format!("{api_key}:{api_token}"),
            recording_size: AtomicUsize::new(DEFAULT_RECORDING_SIZE),
        });
        let handler_state = Arc::clone(&state);
        let server = Server::start(addr, move |req| ready(handler_state.handle(&req)));
        // Set before `start` returns, so before any test can send a request.
        let _ = state.base_url.set(server.base_url.clone());
        Self { server, state }
    }

    pub fn base_url(&self) -> &str {
        &self.server.base_url
    }

    /// Size in bytes of every recording served from now on (default 64 KiB).
    pub fn set_recording_size(&self, bytes: usize) {
        self.state.recording_size.store(bytes, Ordering::Relaxed);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.server.requests()
    }
}

/// The deterministic bytes served for a recording of `len` bytes: an ID3v2
/// header, an MP3 frame sync, then a repeating pattern.
pub fn fake_mp3(len: usize) -> Bytes {
    const HEADER: &[u8] = b"ID3\x04\x00\x00\x00\x00\x00\x00\xff\xfb\x90\x64";
    let pattern = (0..).map(|i: usize| (i % 251) as u8);
    HEADER.iter().copied().chain(pattern).take(len).collect()
}

impl State {
    fn handle(&self, req: &Recorded) -> Response {
        if !self.authorized(req) {
            return rest_exception(
                StatusCode::UNAUTHORIZED,
                "Authentication is required to view this page.",
            );
        }
        if req.method != "GET" {
            return rest_exception(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed");
        }
        if req.path.starts_with("/recordings/") {
            return recording(self.recording_size.load(Ordering::Relaxed));
        }
        // /v1/Accounts/{sid}/Calls/{CallSid}.json
        let segments: Vec<&str> = req.path.trim_start_matches('/').split('/').collect();
        match segments.as_slice() {
            ["v1", "Accounts", sid, "Calls", file] => match file.strip_suffix(".json") {
                Some(call_sid) => self.call_details(sid, call_sid),
                None => rest_exception(StatusCode::NOT_FOUND, "Not Found"),
            },
            _ => rest_exception(StatusCode::NOT_FOUND, "Not Found"),
        }
    }

    fn base_url(&self) -> &str {
        self.base_url.get().expect("set by FakeExotel::start")
    }

    fn authorized(&self, req: &Recorded) -> bool {
        let Some(value) = req.header("authorization") else {
            return false;
        };
        let Some((scheme, encoded)) = value.split_once(' ') else {
            return false;
        };
        scheme.eq_ignore_ascii_case("basic")
            && STANDARD.decode(encoded.trim()).ok().as_deref() == Some(self.credentials.as_bytes())
    }

    /// Exotel's call-details shape with fixed timestamps (local "YYYY-MM-DD HH:mm:ss").
    fn call_details(&self, account_sid: &str, call_sid: &str) -> Response {
        json_response(
            StatusCode::OK,
            json!({ "Call": {
                "Sid": call_sid,
                "ParentCallSid": null,
                "DateCreated": "2024-05-01 10:00:00",
                "DateUpdated": "2024-05-01 10:01:40",
                "AccountSid": account_sid,
                "To": "0XXXXXX4890",
                "From": "0XXXXX30240",
                "PhoneNumberSid": "0XXXXXX4890",
                "Status": "completed",
                "StartTime": "2024-05-01 10:00:00",
                "EndTime": "2024-05-01 10:01:35",
                "Duration": 95,
                "Price": "1.500",
                "Direction": "inbound",
                "AnsweredBy": null,
                "ForwardedFrom": null,
                "CallerName": null,
                "Uri": format!("/v1/Accounts/{account_sid}/Calls/{call_sid}.json"),
                "RecordingUrl": format!("{}/recordings/{call_sid}.mp3", self.base_url()),
            }}),
        )
    }
}

fn recording(size: usize) -> Response {
    let mut response = Response::new(Full::new(fake_mp3(size)));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("audio/mpeg"));
    response
}

fn rest_exception(status: StatusCode, message: &str) -> Response {
    json_response(
        status,
        json!({ "RestException": { "Status": status.as_u16(), "Message": message, "Code": null } }),
    )
}
