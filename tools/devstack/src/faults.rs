//! A fault-injecting HTTP proxy for the soak and crash tests. It sits
//! between the functions and a dependency (DynamoDB Local, the SQS
//! emulator, a fake provider) and, for a configured share of requests,
//! answers with the dependency's own throttling error or a 500, drops the
//! connection before forwarding (nothing happened) or after (it happened,
//! but the caller never hears so), or adds latency. Which requests fail is
//! decided by a seed and the request's number, so a run can be repeated.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use tokio::task::JoinHandle;

use crate::fakes::{serve, Recorded, Response};

/// One kind of failure the proxy can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The dependency's throttling answer (retryable by the SDK or sender).
    Throttle,
    /// A 500 from the dependency.
    ServerError,
    /// The connection closes before the request reaches the dependency.
    DropBefore,
    /// The request is applied, then the connection closes without an answer.
    DropAfter,
    /// The answer comes this much later.
    Delay(Duration),
}

/// Whose error format a throttle or 500 takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// AWS JSON protocol (DynamoDB, and SQS's JSON protocol).
    AwsJson,
    /// A plain HTTP provider (Slack, AssemblyAI): 429 with `Retry-After`, 500.
    Http,
}

/// How often and how requests fail.
#[derive(Debug, Clone)]
pub struct FaultPlan {
    /// Requests out of 1000 that get a fault.
    pub per_mille: u64,
    pub faults: Vec<Fault>,
    pub seed: u64,
}

impl FaultPlan {
    /// No faults: everything is forwarded.
    pub fn none() -> Self {
        Self {
            per_mille: 0,
            faults: Vec::new(),
            seed: 0,
        }
    }

    /// Every kind of fault, `per_mille` of the time.
    pub fn all(per_mille: u64, seed: u64) -> Self {
        Self {
            per_mille,
            faults: vec![
                Fault::Throttle,
                Fault::ServerError,
                Fault::DropBefore,
                Fault::DropAfter,
                Fault::Delay(Duration::from_millis(200)),
            ],
            seed,
        }
    }

    /// The fault for request number `n`, if any.
    pub fn decide(&self, n: u64) -> Option<Fault> {
        if self.faults.is_empty() || self.per_mille == 0 {
            return None;
        }
        let roll = mix(self.seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        (roll % 1000 < self.per_mille)
            .then(|| self.faults[(mix(roll) % self.faults.len() as u64) as usize])
    }
}

/// SplitMix64's finaliser: a well-spread 64-bit hash of `x`.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// What the proxy did, for the test's figures.
#[derive(Debug, Default)]
pub struct FaultCounts {
    pub requests: AtomicU64,
    pub throttled: AtomicU64,
    pub server_errors: AtomicU64,
    pub dropped_before: AtomicU64,
    pub dropped_after: AtomicU64,
    pub delayed: AtomicU64,
    /// The AWS operation of each request (`X-Amz-Target`), in order: what a
    /// test counts to prove a route's cost (one Query per page, no Scan).
    pub operations: Mutex<Vec<String>>,
}

impl FaultCounts {
    /// Faults injected so far.
    pub fn injected(&self) -> u64 {
        [
            &self.throttled,
            &self.server_errors,
            &self.dropped_before,
            &self.dropped_after,
            &self.delayed,
        ]
        .iter()
        .map(|c| c.load(Ordering::SeqCst))
        .sum()
    }

    pub fn summary(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::SeqCst);
        format!(
            "{} requests: {} throttled, {} 500s, {} dropped before, {} dropped after, {} delayed",
            get(&self.requests),
            get(&self.throttled),
            get(&self.server_errors),
            get(&self.dropped_before),
            get(&self.dropped_after),
            get(&self.delayed)
        )
    }
}

/// Kills the caller right after its `k`-th request through any proxy that
/// shares the switch has been applied: that request is forwarded, and its
/// answer never comes (the test then aborts the handler, as a crash would
/// between two writes). Off unless armed.
#[derive(Debug)]
pub struct CrashSwitch {
    armed_at: AtomicU64,
    seen: AtomicU64,
    reached: tokio::sync::Notify,
}

impl Default for CrashSwitch {
    fn default() -> Self {
        Self {
            armed_at: AtomicU64::new(u64::MAX),
            seen: AtomicU64::new(0),
            reached: tokio::sync::Notify::new(),
        }
    }
}

impl CrashSwitch {
    /// Crash after the `k`-th request from now (1-based).
    pub fn arm(&self, k: u64) {
        self.seen.store(0, Ordering::SeqCst);
        self.armed_at.store(k, Ordering::SeqCst);
    }

    /// Counts requests from now without crashing.
    pub fn count(&self) {
        self.arm(u64::MAX);
    }

    /// Requests seen since the last `arm` or `count`.
    pub fn seen(&self) -> u64 {
        self.seen.load(Ordering::SeqCst)
    }

    /// Waits until the armed request has been applied.
    pub async fn reached(&self) {
        self.reached.notified().await;
    }

    /// True when this applied request is the one to crash after.
    fn after_applied(&self) -> bool {
        let n = self.seen.fetch_add(1, Ordering::SeqCst) + 1;
        n == self.armed_at.load(Ordering::SeqCst)
    }
}

/// A running proxy; stops when dropped.
pub struct FaultProxy {
    base_url: String,
    plan: Arc<Mutex<FaultPlan>>,
    counts: Arc<FaultCounts>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Proxies every request to `upstream` (a base URL), injecting `plan`'s faults.
    pub fn start(upstream: &str, dialect: Dialect, plan: FaultPlan) -> Self {
        Self::start_with_switch(upstream, dialect, plan, Arc::new(CrashSwitch::default()))
    }

    /// Like [`FaultProxy::start`], sharing `crash` with other proxies.
    pub fn start_with_switch(
        upstream: &str,
        dialect: Dialect,
        plan: FaultPlan,
        crash: Arc<CrashSwitch>,
    ) -> Self {
        let plan = Arc::new(Mutex::new(plan));
        let counts = Arc::new(FaultCounts::default());
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("proxy HTTP client");
        let upstream = upstream.trim_end_matches('/').to_string();
        let (base_url, task) = {
            let plan = Arc::clone(&plan);
            let counts = Arc::clone(&counts);
            serve(move |request: Recorded| {
                let n = counts.requests.fetch_add(1, Ordering::SeqCst);
                if let Some(target) = request.header("x-amz-target") {
                    counts
                        .operations
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(target);
                }
                let fault = plan
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .decide(n);
                let counts = Arc::clone(&counts);
                let http = http.clone();
                let upstream = upstream.clone();
                let crash = Arc::clone(&crash);
                async move {
                    match fault {
                        Some(Fault::Throttle) => {
                            counts.throttled.fetch_add(1, Ordering::SeqCst);
                            return throttled(dialect);
                        }
                        Some(Fault::ServerError) => {
                            counts.server_errors.fetch_add(1, Ordering::SeqCst);
                            return server_error(dialect);
                        }
                        Some(Fault::DropBefore) => {
                            counts.dropped_before.fetch_add(1, Ordering::SeqCst);
                            drop_connection();
                        }
                        Some(Fault::Delay(by)) => {
                            counts.delayed.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(by).await;
                        }
                        Some(Fault::DropAfter) | None => {}
                    }
                    let response = forward(&http, &upstream, request).await;
                    if crash.after_applied() {
                        crash.reached.notify_one();
                        std::future::pending::<()>().await;
                    }
                    if fault == Some(Fault::DropAfter) {
                        counts.dropped_after.fetch_add(1, Ordering::SeqCst);
                        drop_connection();
                    }
                    response
                }
            })
        };
        Self {
            base_url,
            plan,
            counts,
            task,
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Replaces the plan, e.g. [`FaultPlan::none`] to drain queues cleanly.
    pub fn set_plan(&self, plan: FaultPlan) {
        *self
            .plan
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = plan;
    }

    pub fn counts(&self) -> &FaultCounts {
        &self.counts
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Ends the connection without an answer: the connection's task unwinds
/// (without running the panic hook, so nothing is printed).
fn drop_connection() -> ! {
    std::panic::resume_unwind(Box::new("fault injected: connection dropped"))
}

pub(crate) async fn forward(http: &reqwest::Client, upstream: &str, request: Recorded) -> Response {
    let url = match &request.query {
        Some(query) => format!("{upstream}{}?{query}", request.path),
        None => format!("{upstream}{}", request.path),
    };
    let method =
        reqwest::Method::from_bytes(request.method.as_bytes()).unwrap_or(reqwest::Method::GET);
    let mut outbound = http.request(method, url).body(request.body.clone());
    for (name, value) in &request.headers {
        // The client sets these for the upstream connection itself.
        if !matches!(name.as_str(), "host" | "content-length" | "connection") {
            outbound = outbound.header(name, value);
        }
    }
    let Ok(answer) = outbound.send().await else {
        return plain(StatusCode::BAD_GATEWAY, "upstream unreachable");
    };
    let status = answer.status();
    let headers = answer.headers().clone();
    let body = answer.bytes().await.unwrap_or_default();
    let mut response = Response::new(http_body_util::Full::new(body));
    *response.status_mut() =
        StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    for (name, value) in &headers {
        if !matches!(
            name.as_str(),
            "content-length" | "transfer-encoding" | "connection"
        ) {
            response.headers_mut().insert(name, value.clone());
        }
    }
    response
}

fn plain(status: StatusCode, body: &'static str) -> Response {
    let mut response = Response::new(http_body_util::Full::new(Bytes::from_static(
        body.as_bytes(),
    )));
    *response.status_mut() = status;
    response
}

fn aws_json(status: StatusCode, kind: &str, message: &str) -> Response {
    let body = serde_json::json!({"__type": kind, "message": message}).to_string();
    let mut response = Response::new(http_body_util::Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/x-amz-json-1.0"),
    );
    response.headers_mut().insert(
        "x-amzn-errortype",
        http::HeaderValue::from_str(kind).unwrap_or(http::HeaderValue::from_static("Throttling")),
    );
    response
}

fn throttled(dialect: Dialect) -> Response {
    match dialect {
        Dialect::AwsJson => aws_json(
            StatusCode::BAD_REQUEST,
            "ThrottlingException",
            "Rate of requests exceeds the allowed throughput.",
        ),
        Dialect::Http => {
            let mut response = plain(StatusCode::TOO_MANY_REQUESTS, "rate limited");
            response.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_static("1"),
            );
            response
        }
    }
}

fn server_error(dialect: Dialect) -> Response {
    match dialect {
        Dialect::AwsJson => aws_json(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            "Internal server error",
        ),
        Dialect::Http => plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_inject_about_their_rate_and_repeat_for_a_seed() {
        let plan = FaultPlan::all(50, 7);
        let hits = (0..20_000).filter(|n| plan.decide(*n).is_some()).count();
        assert!((800..1200).contains(&hits), "{hits}");
        let again: Vec<_> = (0..100).map(|n| plan.decide(n)).collect();
        assert_eq!(again, (0..100).map(|n| plan.decide(n)).collect::<Vec<_>>());
        assert!((0..1000).all(|n| FaultPlan::none().decide(n).is_none()));
    }

    #[tokio::test]
    async fn faults_reach_the_caller_and_the_rest_is_forwarded() {
        let (upstream, _task) = serve(|request: Recorded| async move {
            plain(
                StatusCode::OK,
                if request.path == "/ok" { "ok" } else { "?" },
            )
        });
        let proxy = FaultProxy::start(&upstream, Dialect::AwsJson, FaultPlan::none());
        let http = reqwest::Client::new();
        let url = format!("{}/ok", proxy.base_url());
        assert_eq!(
            http.get(&url).send().await.unwrap().text().await.unwrap(),
            "ok"
        );
        for (fault, expect) in [(Fault::Throttle, 400), (Fault::ServerError, 500)] {
            proxy.set_plan(FaultPlan {
                per_mille: 1000,
                faults: vec![fault],
                seed: 1,
            });
            let response = http.get(&url).send().await.unwrap();
            assert_eq!(response.status().as_u16(), expect, "{fault:?}");
        }
        for fault in [Fault::DropBefore, Fault::DropAfter] {
            proxy.set_plan(FaultPlan {
                per_mille: 1000,
                faults: vec![fault],
                seed: 1,
            });
            assert!(http.get(&url).send().await.is_err(), "{fault:?}");
        }
        assert_eq!(proxy.counts().injected(), 4);
    }
}
