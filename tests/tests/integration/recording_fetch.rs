//! The recording fetch cannot be turned inward: redirects, resolved
//! addresses, ports and size are all checked before anything is sent on.

use shared::api::Route;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use devstack::fakes::{fake_mp3, serve};
use http::{header, HeaderValue, StatusCode};
use shared::providers::recording::{HostAllowList, DEFAULT_MAX_RECORDING_BYTES};
use shared::store::calls::{CallRecord, CallStatus, CallStore};

use crate::support::*;

/// Sends `call_id` through the Zapier webhook with `recording_url`, accepted
/// under `hosts`.
async fn ingest(stack: &Stack, call_id: &str, recording_url: &str, hosts: &HostAllowList) -> u16 {
    let mut payload = seed_payload(stack, call_id);
    payload["recording_url"] = recording_url.into();
    let mut zapier = stack.zapier();
    zapier.recording_hosts = hosts.clone();
    zapier
        .handle(zapier_request(
            payload.to_string().as_bytes(),
            Some(&bearer(WEBHOOK_TOKEN)),
        ))
        .await
        .status()
        .as_u16()
}

async fn record(stack: &Stack, call_id: &str) -> CallRecord {
    stack.calls().get(call_id).await.unwrap().unwrap()
}

fn uploads(stack: &Stack) -> usize {
    stack
        .assemblyai
        .requests()
        .iter()
        .filter(|r| r.path == "/v2/upload")
        .count()
}

#[tokio::test]
async fn a_redirect_to_a_host_off_the_list_is_not_followed() {
    let stack = Stack::start().await;
    // The target would serve a perfectly good recording, so only the
    // redirect check can stop it being fetched.
    let target_hits = Arc::new(AtomicUsize::new(0));
    let hits = Arc::clone(&target_hits);
    let (target, _target_task) = serve(move |_| {
        hits.fetch_add(1, Ordering::SeqCst);
        async { http::Response::new(http_body_util::Full::new(fake_mp3(1024))) }
    });
    let location = format!("{target}/recordings/elsewhere.mp3");
    let (redirector, _redirector_task) = serve(move |_| {
        let location = location.clone();
        async move {
            let mut response = http::Response::new(http_body_util::Full::default());
            *response.status_mut() = StatusCode::FOUND;
            response
                .headers_mut()
                .insert(header::LOCATION, HeaderValue::from_str(&location).unwrap());
            response
        }
    });
    let hosts = HostAllowList::parse(redirector.trim_start_matches("http://")).with_loopback(true);
    let url = format!("{redirector}/recordings/REDIR1.mp3");
    assert_eq!(ingest(&stack, "REDIR1", &url, &hosts).await, 202);

    stack
        .run_transcriptions_with(stack.transcribe_worker_with(hosts, DEFAULT_MAX_RECORDING_BYTES))
        .await;

    assert_eq!(
        target_hits.load(Ordering::SeqCst),
        0,
        "redirect was followed"
    );
    let record = record(&stack, "REDIR1").await;
    assert_eq!(record.status, CallStatus::Failed);
    let reason = record.failure_reason.unwrap();
    assert!(reason.contains("redirect"), "{reason}");
    assert_eq!(uploads(&stack), 0);
}

#[tokio::test]
async fn in_lambda_a_name_resolving_to_loopback_is_refused_before_connecting() {
    let stack = Stack::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&connections);
    let accept = tokio::spawn(async move {
        while listener.accept().await.is_ok() {
            seen.fetch_add(1, Ordering::SeqCst);
        }
    });
    // Lambda rules (no loopback); the name itself is on the list, so only
    // the resolved address can refuse it.
    let hosts = HostAllowList::parse(&format!("localhost:{port}"));
    let url = format!("https://localhost:{port}/recordings/REBIND1.mp3");
    assert_eq!(ingest(&stack, "REBIND1", &url, &hosts).await, 202);

    stack
        .run_transcriptions_with(stack.transcribe_worker_with(hosts, DEFAULT_MAX_RECORDING_BYTES))
        .await;

    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "connected to loopback"
    );
    let record = record(&stack, "REBIND1").await;
    assert_eq!(record.status, CallStatus::Failed);
    let reason = record.failure_reason.unwrap();
    assert!(reason.contains("localhost"), "{reason}");
    assert_eq!(uploads(&stack), 0);
    accept.abort();
}

#[tokio::test]
async fn in_lambda_loopback_and_metadata_urls_are_refused_at_the_webhook() {
    let stack = Stack::start().await;
    let hosts = HostAllowList::parse("127.0.0.1:3100,169.254.169.254");
    for (call_id, url) in [
        ("LOOP1", "http://127.0.0.1:3100/recordings/LOOP1.mp3"),
        ("META1", "https://169.254.169.254/latest/meta-data/iam"),
    ] {
        assert_eq!(ingest(&stack, call_id, url, &hosts).await, 422, "{url}");
    }
}

#[tokio::test]
async fn a_port_not_on_the_list_is_refused() {
    let stack = Stack::start().await;
    // `127.0.0.1` without a port means port 80 only; the fake listens elsewhere.
    let portless = HostAllowList::parse("127.0.0.1").with_loopback(true);
    let url = stack.recording_url("PORT1");
    assert_eq!(ingest(&stack, "PORT1", &url, &portless).await, 422);

    // A job accepted under a wider list is refused by the worker's own list.
    assert_eq!(
        ingest(
            &stack,
            "PORT2",
            &stack.recording_url("PORT2"),
            &stack.recording_hosts()
        )
        .await,
        202
    );
    stack
        .run_transcriptions_with(
            stack.transcribe_worker_with(portless, DEFAULT_MAX_RECORDING_BYTES),
        )
        .await;
    let record = record(&stack, "PORT2").await;
    assert_eq!(record.status, CallStatus::Failed);
    assert!(stack.exotel.requests().is_empty());
    assert_eq!(uploads(&stack), 0);
}

#[tokio::test]
async fn an_oversized_recording_fails_the_call_and_uploads_nothing() {
    let stack = Stack::start().await;
    stack.exotel.set_recording_size(64 * 1024);
    let url = stack.recording_url("BIGREC1");
    assert_eq!(
        ingest(&stack, "BIGREC1", &url, &stack.recording_hosts()).await,
        202
    );

    let reports = stack
        .run_transcriptions_with(stack.transcribe_worker_with(stack.recording_hosts(), 16 * 1024))
        .await;

    // Failed once, permanently: no retry of the same message.
    assert!(reports.iter().all(|r| r.failed.is_empty()), "{reports:?}");
    let record = record(&stack, "BIGREC1").await;
    assert_eq!(record.status, CallStatus::Failed);
    let reason = record.failure_reason.unwrap();
    assert!(reason.contains("MAX_RECORDING_BYTES"), "{reason}");
    assert_eq!(uploads(&stack), 0);
    assert_eq!(stack.depth("NotificationQueue").await, 1);
}
