//! Issue 12: the recording intake in three sequential AWS calls. The call
//! record is its own delivery claim; these tests hold it to every guarantee
//! the separate claim gave: one job and one record under concurrent
//! duplicates, the first answer replayed, a crashed delivery redone after
//! its lease, a failed one released at once, the watch entry written with
//! the record, counters still counted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use futures_util::future::join_all;
use shared::api::Route;
use shared::queue::jobs::{JobQueue, QueueError};
use shared::store::calls::{CallRecord, CallStatus, CallStore, Claimed, Found, IntakeStore, Take};
use shared::store::dedup::Settled;
use shared::store::stats::StatsStore;

use crate::support::*;

/// The call record's raw item: what the intake keeps beside the record.
async fn record_item(stack: &Stack, call_id: &str) -> HashMap<String, AttributeValue> {
    stack
        .harness_dynamo
        .get_item()
        .table_name(stack.resources.table("CallsTable"))
        .key("call_id", AttributeValue::S(call_id.into()))
        .key("item", AttributeValue::S("call".into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .unwrap_or_else(|| panic!("no record for {call_id}"))
}

/// The stuck sweep's watch entries for `call_id`.
async fn watch_entries(stack: &Stack, call_id: &str) -> usize {
    stack
        .harness_dynamo
        .query()
        .table_name(stack.resources.table("CallsTable"))
        .key_condition_expression("call_id = :ledger")
        .expression_attribute_values(":ledger", AttributeValue::S("calls#watch".into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .items
        .unwrap_or_default()
        .iter()
        .filter(|item| {
            item.get("watched_call").and_then(|v| v.as_s().ok()) == Some(&call_id.to_string())
        })
        .count()
}

async fn deliver(zapier: &zapier_webhook::ZapierWebhook, body: &str) -> (u16, serde_json::Value) {
    let response = zapier
        .handle(zapier_request(
            body.as_bytes(),
            Some(&bearer(WEBHOOK_TOKEN)),
        ))
        .await;
    (response.status().as_u16(), json_body(&response))
}

/// A record as a delivery of `call_id` writes it.
fn received_record(call_id: &str) -> CallRecord {
    let now = shared::base::time::now_rfc3339();
    CallRecord {
        call_id: call_id.into(),
        org_id: None,
        source: shared::store::calls::CallSource::Zapier,
        from_number: "+919876543210".into(),
        to_number: "09631084471".into(),
        duration: Some(10),
        recording_url: None,
        timestamp: now.clone(),
        processed_at: None,
        slack_posted: false,
        status: CallStatus::Received,
        call_status: Some("completed".into()),
        direction: shared::store::calls::Direction::Incoming,
        failure_reason: None,
        agent: Default::default(),
        transcript_id: None,
        transcript_parts: 0,
        room_name: None,
        status_history: vec![],
        received_at: now,
    }
}

#[tokio::test]
async fn ten_concurrent_duplicates_make_one_record_one_job_and_one_answer() {
    let stack = Stack::start().await;
    let zapier = Arc::new(stack.zapier());
    let body = seed_payload(&stack, "INTAKE10").to_string();
    let answers: Vec<(u16, serde_json::Value)> = join_all((0..10).map(|_| {
        let (zapier, body) = (Arc::clone(&zapier), body.clone());
        tokio::spawn(async move { deliver(&zapier, &body).await })
    }))
    .await
    .into_iter()
    .map(Result::unwrap)
    .collect();
    let first: Vec<_> = answers.iter().filter(|(s, _)| *s == 202).collect();
    assert_eq!(first.len(), 1, "{answers:?}");
    let first = &first[0].1;
    for (status, answer) in &answers {
        if *status == 200 {
            // The duplicates replay the first answer, timestamp included.
            assert_eq!(answer["duplicate"], true);
            assert_eq!(answer["timestamp"], first["timestamp"]);
            assert_eq!(answer["message"], "Call queued for processing");
        } else {
            assert_eq!(*status, 202, "{answers:?}");
        }
    }
    assert_eq!(stack.peek("TranscriptionQueue").await.len(), 1, "one job");

    // One record, carrying the claim and the answer; one watch entry; no
    // `call#` item in the idempotency table any more.
    let item = record_item(&stack, "INTAKE10").await;
    assert_eq!(item["status"].as_s().unwrap(), "queued");
    let saved: serde_json::Value =
        serde_json::from_str(item["intake_answer"].as_s().unwrap()).unwrap();
    assert_eq!(saved["timestamp"], first["timestamp"]);
    assert!(!item.contains_key("intake_lease_until"), "lease ended");
    assert_eq!(watch_entries(&stack, "INTAKE10").await, 1);
    assert_eq!(stack.item_count("IdempotencyTable").await, 0);
    let stats = stack.stats().read().await.unwrap();
    assert_eq!((stats.total_processed, stats.duplicates), (1, 9));

    // The record reads as before for everyone else.
    let record = stack.calls().get("INTAKE10").await.unwrap().unwrap();
    let history: Vec<CallStatus> = record.status_history.iter().map(|h| h.status).collect();
    assert_eq!(history, vec![CallStatus::Received, CallStatus::Queued]);
}

#[tokio::test]
async fn a_duplicate_after_completion_gets_the_saved_answer_without_waiting() {
    let stack = Stack::start().await;
    let zapier = stack.zapier();
    let body = seed_payload(&stack, "INTAKEDUP").to_string();
    let (status, first) = deliver(&zapier, &body).await;
    assert_eq!(status, 202);
    let started = Instant::now();
    let (status, again) = deliver(&zapier, &body).await;
    assert_eq!(status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a finished call is not waited for"
    );
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["timestamp"], first["timestamp"]);
    assert_eq!(again["message"], first["message"]);
    assert_eq!(stack.peek("TranscriptionQueue").await.len(), 1);
    // The worker moving the call on does not change the answer.
    stack.run_transcriptions().await;
    let (status, later) = deliver(&zapier, &body).await;
    assert_eq!((status, &later["timestamp"]), (200, &first["timestamp"]));
    let stats = stack.stats().read().await.unwrap();
    assert_eq!((stats.total_processed, stats.duplicates), (1, 2));
}

#[tokio::test]
async fn a_delivery_that_crashed_after_its_claim_is_redone_once_its_lease_expires() {
    let stack = Stack::start().await;
    let body = seed_payload(&stack, "INTAKECRASH").to_string();
    // A first delivery took the call and died before queueing: its record
    // is `received` with a lease that will run out.
    let mut crashed = received_record("INTAKECRASH");
    crashed.recording_url = Some(stack.recording_url("INTAKECRASH"));
    let Claimed::Acquired(_) = stack
        .calls()
        .claim(&crashed, Take::Lease(Duration::from_millis(600)))
        .await
        .unwrap()
    else {
        panic!("the crashed delivery's claim");
    };
    assert_eq!(
        stack.calls().peek("INTAKECRASH").await.unwrap(),
        Found::InProgress
    );

    // The sender's retry waits for the lease, then does the work.
    let started = Instant::now();
    let (status, ack) = deliver(&stack.zapier(), &body).await;
    assert_eq!(status, 202, "{ack}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(ack.get("duplicate").is_none());
    assert_eq!(stack.peek("TranscriptionQueue").await.len(), 1);
    assert_eq!(
        stack
            .calls()
            .get("INTAKECRASH")
            .await
            .unwrap()
            .unwrap()
            .status,
        CallStatus::Queued
    );

    // With a short wait, the retry answers 409 while the lease is live.
    let mut impatient = stack.zapier();
    impatient.ingestor.settings.duplicate_wait = Duration::from_millis(100);
    let mut held = received_record("INTAKEHELD");
    held.recording_url = Some(stack.recording_url("INTAKEHELD"));
    let Claimed::Acquired(_) = stack
        .calls()
        .claim(&held, Take::Lease(Duration::from_secs(60)))
        .await
        .unwrap()
    else {
        panic!("held claim");
    };
    let response = impatient
        .handle(zapier_request(
            seed_payload(&stack, "INTAKEHELD").to_string().as_bytes(),
            Some(&bearer(WEBHOOK_TOKEN)),
        ))
        .await;
    assert_eq!(response.status(), 409);
    assert!(response.headers().contains_key("retry-after"));
}

/// SQS refusing the first `failures` sends.
struct RefusingQueue {
    inner: Arc<dyn JobQueue>,
    failures: AtomicUsize,
}

#[async_trait]
impl JobQueue for RefusingQueue {
    async fn send_raw(&self, body: String, delay: Duration) -> Result<(), QueueError> {
        if self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(QueueError("ServiceUnavailable".into()));
        }
        self.inner.send_raw(body, delay).await
    }
}

#[tokio::test]
async fn a_delivery_whose_job_was_not_queued_is_released_and_the_retry_succeeds_at_once() {
    let stack = Stack::start().await;
    let mut zapier = stack.zapier();
    zapier.ingestor.transcription_queue = Arc::new(RefusingQueue {
        inner: stack.queue("TranscriptionQueue"),
        failures: AtomicUsize::new(1),
    });
    let body = seed_payload(&stack, "INTAKESQS").to_string();
    let (status, error) = deliver(&zapier, &body).await;
    assert_eq!(
        status, 503,
        "nothing acknowledged before the job is queued: {error}"
    );
    // The record stays, `received`, its lease released: the sweep can see
    // it, and the retry need not wait.
    let item = record_item(&stack, "INTAKESQS").await;
    assert_eq!(item["status"].as_s().unwrap(), "received");
    assert!(!item.contains_key("intake_lease_until"));
    assert!(!item.contains_key("intake_answer"));
    assert_eq!(watch_entries(&stack, "INTAKESQS").await, 1);
    assert_eq!(stack.calls().peek("INTAKESQS").await.unwrap(), Found::Free);
    assert_eq!(stack.depth("TranscriptionQueue").await, 0);

    let started = Instant::now();
    let (status, ack) = deliver(&zapier, &body).await;
    assert_eq!(status, 202, "{ack}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "no lease to wait out"
    );
    assert_eq!(stack.peek("TranscriptionQueue").await.len(), 1);
    let stats = stack.stats().read().await.unwrap();
    assert_eq!((stats.total_processed, stats.duplicates), (1, 0));
}

#[tokio::test]
async fn a_taken_over_lease_can_neither_complete_nor_release_and_a_moved_call_keeps_its_status() {
    let stack = Stack::start().await;
    let calls = stack.calls();
    let record = received_record("INTAKEOWN");
    let Claimed::Acquired(stale) = calls
        .claim(&record, Take::Lease(Duration::ZERO))
        .await
        .unwrap()
    else {
        panic!("first claim");
    };
    tokio::time::sleep(Duration::from_millis(5)).await;
    let Claimed::Acquired(current) = calls
        .claim(&record, Take::Lease(Duration::from_secs(60)))
        .await
        .unwrap()
    else {
        panic!("an expired lease must be retakeable");
    };
    let stale_answer = serde_json::json!({"by": "stale"});
    assert_eq!(
        calls
            .complete("INTAKEOWN", &stale, &stale_answer)
            .await
            .unwrap(),
        Settled::Lost
    );
    assert_eq!(
        calls.release("INTAKEOWN", &stale).await.unwrap(),
        Settled::Lost
    );
    assert_eq!(calls.peek("INTAKEOWN").await.unwrap(), Found::InProgress);

    // The worker took the job before the completion landed.
    assert!(calls
        .transition(
            "INTAKEOWN",
            &[CallStatus::Received, CallStatus::Queued],
            CallStatus::Transcribing,
            None
        )
        .await
        .unwrap());
    let answer = serde_json::json!({"by": "current"});
    assert_eq!(
        calls
            .complete("INTAKEOWN", &current, &answer)
            .await
            .unwrap(),
        Settled::Done
    );
    // A retried completion (its first answer lost) succeeds again.
    assert_eq!(
        calls
            .complete("INTAKEOWN", &current, &answer)
            .await
            .unwrap(),
        Settled::Done
    );
    assert_eq!(
        calls.get("INTAKEOWN").await.unwrap().unwrap().status,
        CallStatus::Transcribing
    );
    assert_eq!(
        calls.peek("INTAKEOWN").await.unwrap(),
        Found::Handled(Some(answer.clone()))
    );
    assert_eq!(
        calls
            .claim(&record, Take::Lease(Duration::from_secs(60)))
            .await
            .unwrap(),
        Claimed::Handled(Some(answer))
    );
    // Releasing after completion changes nothing.
    assert_eq!(
        calls.release("INTAKEOWN", &current).await.unwrap(),
        Settled::Lost
    );
}

#[tokio::test]
async fn a_call_handled_before_answers_lived_on_the_record_is_answered_already_processed() {
    let stack = Stack::start().await;
    // A record written by the earlier intake: past `received`, no answer.
    let mut record = received_record("INTAKEOLD");
    record.recording_url = Some(stack.recording_url("INTAKEOLD"));
    assert_eq!(
        stack.calls().create(&record).await.unwrap(),
        shared::store::calls::Created::Stored
    );
    assert!(stack
        .calls()
        .transition(
            "INTAKEOLD",
            &[CallStatus::Received],
            CallStatus::Notified,
            None
        )
        .await
        .unwrap());
    let (status, answer) = deliver(
        &stack.zapier(),
        &seed_payload(&stack, "INTAKEOLD").to_string(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(answer["duplicate"], true);
    assert_eq!(answer["message"], "Call already processed");
    assert_eq!(stack.depth("TranscriptionQueue").await, 0);
}

#[tokio::test]
async fn concurrent_deliveries_of_a_skipped_call_store_it_once_and_count_it_once() {
    let stack = Stack::start().await;
    let exotel = Arc::new(stack.exotel_webhook());
    let query = format!("token={WEBHOOK_TOKEN}");
    let statuses: Vec<(u16, serde_json::Value)> = join_all((0..10).map(|_| {
        let (exotel, query) = (Arc::clone(&exotel), query.clone());
        tokio::spawn(async move {
            let response = exotel
                .handle(exotel_request(
                    "CallSid=SKIP10&Status=no-answer&From=09876543210&To=09631084471",
                    &query,
                    "application/x-www-form-urlencoded",
                ))
                .await;
            (response.status().as_u16(), json_body(&response))
        })
    }))
    .await
    .into_iter()
    .map(Result::unwrap)
    .collect();
    assert_eq!(
        statuses.iter().filter(|(s, _)| *s == 202).count(),
        1,
        "{statuses:?}"
    );
    assert!(statuses.iter().all(|(s, a)| *s == 202
        || (*s == 200
            && a["duplicate"] == true
            && a["message"] == "Call recorded; not transcribed")));
    let record = stack.calls().get("SKIP10").await.unwrap().unwrap();
    assert_eq!(record.status, CallStatus::Skipped);
    assert!(record.processed_at.is_some());
    let history: Vec<CallStatus> = record.status_history.iter().map(|h| h.status).collect();
    assert_eq!(history, vec![CallStatus::Received, CallStatus::Skipped]);
    assert!(record.status_history[1]
        .reason
        .as_deref()
        .unwrap()
        .contains("no-answer"));
    // Final at once: nothing for the stuck sweep to watch.
    assert_eq!(watch_entries(&stack, "SKIP10").await, 0);
    assert_eq!(stack.depth("TranscriptionQueue").await, 0);
    let stats = stack.stats().read().await.unwrap();
    assert_eq!((stats.total_processed, stats.duplicates), (1, 9));
}

#[tokio::test]
async fn a_first_delivery_waits_for_at_most_three_aws_calls_in_a_row() {
    let mut stack = Stack::start().await;
    let meter =
        devstack::bench_cost::Meter::start(local().dynamodb_endpoint(), local().moto_endpoint());
    stack.dynamo = local().dynamodb_at(meter.dynamodb_url()).await;
    stack.sqs = local().sqs_at(meter.moto_url()).await;
    let zapier = stack.zapier();
    let exotel = stack.exotel_webhook();

    meter.begin_invocation();
    let (status, _) = deliver(&zapier, &seed_payload(&stack, "INTAKE3").to_string()).await;
    assert_eq!(status, 202);
    meter.begin_invocation();
    let (status, _) = deliver(&zapier, &seed_payload(&stack, "INTAKE3").to_string()).await;
    assert_eq!(status, 200);
    meter.begin_invocation();
    let response = exotel
        .handle(exotel_request(
            "CallSid=INTAKE3B&Status=busy&From=09876543210&To=09631084471",
            &format!("token={WEBHOOK_TOKEN}"),
            "application/x-www-form-urlencoded",
        ))
        .await;
    assert_eq!(response.status(), 202);

    let runs = meter.per_invocation();
    let operations = |calls: &[devstack::bench_cost::Call]| {
        calls
            .iter()
            .map(|c| c.operation.clone())
            .collect::<Vec<_>>()
    };
    let first = devstack::bench_cost::Usage::of(&runs[0]);
    assert_eq!(first.sequential_calls, 3.0, "{:?}", operations(&runs[0]));
    assert_eq!(first.aws_calls, 4.0, "{:?}", operations(&runs[0]));
    assert_eq!(first.sqs_requests, 1.0);
    let mut sorted = operations(&runs[0]);
    sorted.sort();
    assert_eq!(
        sorted,
        [
            "SendMessage",
            "TransactWriteItems",
            "UpdateItem",
            "UpdateItem"
        ]
    );
    // A duplicate: the refused write (it returns the record) and its counter.
    let duplicate = devstack::bench_cost::Usage::of(&runs[1]);
    assert!(
        duplicate.sequential_calls <= 3.0,
        "{:?}",
        operations(&runs[1])
    );
    assert_eq!(duplicate.sqs_requests, 0.0);
    // A skipped call: its final record, then its counter.
    let skipped = devstack::bench_cost::Usage::of(&runs[2]);
    assert_eq!(skipped.sequential_calls, 2.0, "{:?}", operations(&runs[2]));
}
