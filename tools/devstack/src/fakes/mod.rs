//! Fake third-party provider servers for integration tests.
//!
//! Each fake listens on a random 127.0.0.1 port, speaks the provider's real wire
//! format, records every request and is torn down when dropped.

mod assemblyai;
mod elevenlabs;
mod exotel;
mod livekit;
mod llm;
mod receiver;
mod slack;
mod twilio;

#[cfg(test)]
mod livekit_selftest;
#[cfg(test)]
mod selftest;

pub use assemblyai::{FakeAssemblyAi, TranscriptOutcome};
pub use elevenlabs::{
    call_initiation_failure_body, elevenlabs_signature, post_call_transcription_body,
    ConversationScript, FakeElevenLabs,
};
pub use exotel::{fake_mp3, FakeExotel};
pub use livekit::{FakeDispatch, FakeEgress, FakeLiveKit, FakeParticipant};
pub use llm::{FakeLlm, LlmScript};
pub use receiver::{Answer as ReceiverAnswer, Delivery as ReceivedHook, FakeReceiver};
pub use slack::{FakeSlack, ScriptedResponse};
pub use twilio::{twilio_signature, FakeTwilio};

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// The response type every fake handler produces.
pub type Response = http::Response<Full<Bytes>>;

/// One request as received by a fake, body fully buffered.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    async fn read(req: Request<Incoming>) -> Result<Self, hyper::Error> {
        let (parts, body) = req.into_parts();
        Ok(Self {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().map(str::to_owned),
            headers: parts.headers,
            body: body.collect().await?.to_bytes(),
        })
    }

    /// The body parsed as JSON; panics (failing the test) if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} {} body is not JSON ({e}): {}",
                self.method,
                self.path,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// A header value as a string, if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<String> {
        let value = self.headers.get(name)?.to_str().ok()?;
        Some(value.to_owned())
    }
}

/// Serves `handler` on a random local port; returns the base URL and the server task.
///
/// Binds synchronously so the URL is usable immediately; must be called inside a
/// Tokio runtime. Aborting the task also closes open (keep-alive) connections,
/// because they are owned by a `JoinSet` inside it.
pub fn serve<H, Fut>(handler: H) -> (String, JoinHandle<()>)
where
    H: Fn(Recorded) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    serve_at("127.0.0.1:0", handler)
}

/// Like [`serve`] on a chosen address: the local dev stack serves sample
/// recordings at a fixed URL that `events/` files can name.
pub fn serve_at<H, Fut>(addr: &str, handler: H) -> (String, JoinHandle<()>)
where
    H: Fn(Recorded) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    let listener = std::net::TcpListener::bind(addr)
        .unwrap_or_else(|e| panic!("bind fake server on {addr}: {e}"));
    listener
        .set_nonblocking(true)
        .expect("non-blocking listener");
    let listener = TcpListener::from_std(listener).expect("fake server needs a Tokio runtime");
    let base_url = format!("http://{}", listener.local_addr().expect("local addr"));
    let handler = Arc::new(handler);

    let task = tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let handler = Arc::clone(&handler);
                    let service = service_fn(move |req| {
                        let handler = Arc::clone(&handler);
                        async move { Ok::<_, hyper::Error>(handler(Recorded::read(req).await?).await) }
                    });
                    connections.spawn(async move {
                        // Client hang-ups are expected (e.g. timeout tests); ignore them.
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
                // Reap finished connections so the set does not grow unbounded.
                Some(_) = connections.join_next() => {}
            }
        }
    });
    (base_url, task)
}

/// What every fake shares: a running server, its request log, and shutdown on drop.
struct Server {
    base_url: String,
    log: Arc<Mutex<Vec<Recorded>>>,
    task: JoinHandle<()>,
}

impl Server {
    /// Like [`serve_at`], but records each request before handing it to `handler`.
    fn start<H, Fut>(addr: &str, handler: H) -> Self
    where
        H: Fn(Recorded) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response> + Send + 'static,
    {
        let log = Arc::new(Mutex::new(Vec::new()));
        let recorder = Arc::clone(&log);
        let (base_url, task) = serve_at(addr, move |req: Recorded| {
            lock(&recorder).push(req.clone());
            handler(req)
        });
        Self {
            base_url,
            log,
            task,
        }
    }

    fn requests(&self) -> Vec<Recorded> {
        lock(&self.log).clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Locks ignoring poison: a panicking handler must not cascade into every later assertion.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response {
    with_content_type(status, body.to_string(), "application/json; charset=utf-8")
}

fn text_response(status: StatusCode, body: impl Into<Bytes>) -> Response {
    with_content_type(status, body, "text/plain; charset=utf-8")
}

fn with_content_type(
    status: StatusCode,
    body: impl Into<Bytes>,
    content_type: &'static str,
) -> Response {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
