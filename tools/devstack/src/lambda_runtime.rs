//! Lambda's Runtime API on 127.0.0.1, so a function's real binary runs as it
//! does in AWS: it polls `invocation/next`, answers `invocation/<id>/response`
//! or `/error`, and its cold start is everything before the first poll. The
//! benchmark times it; tests use it to run a binary's whole cold start
//! (configuration and secrets included), which in-process tests skip.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::sync::{mpsc, Mutex};

/// How an invocation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The body the function posted to `invocation/<id>/response`.
    Response(Bytes),
    /// The body it posted to `invocation/<id>/error`.
    Error(Bytes),
}

struct Shared {
    pending: Mutex<mpsc::Receiver<(String, String)>>,
    first_poll: Mutex<Option<Instant>>,
    outcomes: mpsc::Sender<(String, Outcome)>,
}

/// One function's Runtime API. Invocations are served one at a time, as
/// Lambda serves one execution environment.
pub struct RuntimeApi {
    address: SocketAddr,
    shared: Arc<Shared>,
    invocations: mpsc::Sender<(String, String)>,
    outcomes: Mutex<mpsc::Receiver<(String, Outcome)>>,
    sent: Mutex<u64>,
    server: tokio::task::JoinHandle<()>,
}

impl RuntimeApi {
    pub async fn start() -> std::io::Result<Self> {
        let (invocations, pending) = mpsc::channel(1);
        let (outcomes_tx, outcomes) = mpsc::channel(1);
        let shared = Arc::new(Shared {
            pending: Mutex::new(pending),
            first_poll: Mutex::new(None),
            outcomes: outcomes_tx,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let served = Arc::clone(&shared);
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let shared = Arc::clone(&served);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let shared = Arc::clone(&shared);
                        async move { Ok::<_, Infallible>(serve(&shared, request).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self {
            address,
            shared,
            invocations,
            outcomes: Mutex::new(outcomes),
            sent: Mutex::new(0),
            server,
        })
    }

    /// The variables Lambda gives a function's process, pointing at this API.
    pub fn lambda_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_LAMBDA_RUNTIME_API", self.address.to_string()),
            ("AWS_LAMBDA_FUNCTION_NAME", "local".into()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128".into()),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into()),
            ("AWS_LAMBDA_LOG_STREAM_NAME", "local".into()),
            ("AWS_LAMBDA_LOG_GROUP_NAME", "local".into()),
        ]
    }

    /// Starts `binary` against this API with `env`, quietly (warnings only,
    /// no stdout), as the benchmark runs release binaries; killed when dropped.
    pub fn spawn_quiet(
        &self,
        binary: &std::path::Path,
        env: &[(String, String)],
    ) -> std::io::Result<tokio::process::Child> {
        tokio::process::Command::new(binary)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(self.lambda_env())
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
    }

    /// When the function first asked for work: the end of its cold start.
    pub async fn first_poll(&self) -> Option<Instant> {
        *self.shared.first_poll.lock().await
    }

    /// Hands `event` to the function and waits for its answer.
    pub async fn invoke(&self, event: String) -> Result<Outcome, String> {
        let id = {
            let mut sent = self.sent.lock().await;
            *sent += 1;
            format!("req-{sent}")
        };
        self.invocations
            .send((id.clone(), event))
            .await
            .map_err(|_| "runtime API stopped".to_string())?;
        let mut outcomes = self.outcomes.lock().await;
        loop {
            let (answered, outcome) = outcomes
                .recv()
                .await
                .ok_or_else(|| "runtime API stopped".to_string())?;
            if answered == id {
                return Ok(outcome);
            }
        }
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn serve(
    shared: &Shared,
    request: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let path = request.uri().path().to_string();
    if path.ends_with("/invocation/next") {
        shared
            .first_poll
            .lock()
            .await
            .get_or_insert_with(Instant::now);
        let Some((id, event)) = shared.pending.lock().await.recv().await else {
            return reply(410, Bytes::new());
        };
        let deadline = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            + Duration::from_secs(10);
        return hyper::Response::builder()
            .status(200)
            .header("lambda-runtime-aws-request-id", id)
            .header(
                "lambda-runtime-deadline-ms",
                deadline.as_millis().to_string(),
            )
            .header(
                "lambda-runtime-invoked-function-arn",
                "arn:aws:lambda:us-east-1:000000000000:function:local",
            )
            .header(
                "lambda-runtime-trace-id",
                "Root=1-00000000-000000000000000000000000",
            )
            .body(Full::new(Bytes::from(event)))
            .expect("static response");
    }
    // `/2018-06-01/runtime/invocation/<id>/response` or `/error`.
    let id = path.split('/').nth(4).unwrap_or_default().to_string();
    let failed = path.ends_with("/error");
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let outcome = if failed {
        Outcome::Error(body)
    } else {
        Outcome::Response(body)
    };
    let _ = shared.outcomes.send((id, outcome)).await;
    reply(202, Bytes::new())
}

fn reply(status: u16, body: Bytes) -> hyper::Response<Full<Bytes>> {
    hyper::Response::builder()
        .status(status)
        .body(Full::new(body))
        .expect("static response")
}

/// An API Gateway HTTP API (payload 2.0) event, as JSON text, for a request
/// to `path` matched by `route`.
pub fn api_gateway_event(
    method: &str,
    route: &str,
    path: &str,
    query: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> String {
    let query_parameters = if query.is_empty() {
        serde_json::Value::Null
    } else {
        url::form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), serde_json::Value::from(v.into_owned())))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    let header_map: serde_json::Map<String, serde_json::Value> = headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), serde_json::Value::from(*v)))
        .collect();
    serde_json::json!({
        "version": "2.0",
        "routeKey": format!("{method} {route}"),
        "rawPath": path,
        "rawQueryString": query,
        "headers": header_map,
        "queryStringParameters": query_parameters,
        "pathParameters": crate::server::match_path(route, path).filter(|p| !p.is_empty()),
        "requestContext": {
            "accountId": "000000000000", "apiId": "local", "domainName": "local",
            "domainPrefix": "local",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1",
                     "sourceIp": "127.0.0.1", "userAgent": "callops-local"},
            "requestId": "local", "routeKey": format!("{method} {route}"),
            "stage": "$default", "time": "", "timeEpoch": 0
        },
        "body": body,
        "isBase64Encoded": false
    })
    .to_string()
}
