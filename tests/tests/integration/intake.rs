//! Issue 22: the recording intake is one conditional write, and the record
//! is the job. These tests hold it to every guarantee the leased intake
//! gave: one record and one job under concurrent duplicates, the first
//! answer replayed (now at once, with no waiting), the sweep's watch on the
//! record itself, counters counted once (now by the stream's consumer), and
//! a first delivery that waits for exactly one AWS call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use aws_sdk_dynamodb::types::AttributeValue;
use futures_util::future::join_all;
use shared::api::Route;
use shared::queue::jobs::{JobQueue, QueueError};
use shared::store::calls::{CallRecord, CallStatus, CallStore};
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

async fn deliver(zapier: &zapier_webhook::ZapierWebhook, body: &str) -> (u16, serde_json::Value) {
    let response = zapier
        .handle(zapier_request(
            body.as_bytes(),
            Some(&bearer(WEBHOOK_TOKEN)),
        ))
        .await;
    (response.status().as_u16(), json_body(&response))
}

/// A record as an earlier intake wrote it, before answers were saved.
fn earlier_record(call_id: &str) -> CallRecord {
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
    // Nothing is queued by the webhook; the stream queues the one job.
    assert_eq!(stack.raw_depth("TranscriptionQueue").await, 0);
    let report = stack.run_calls_stream().await;
    assert_eq!(report.delivered, 1, "{report:?}");
    assert_eq!(stack.peek("TranscriptionQueue").await.len(), 1, "one job");

    // One record, stored queued with its answer and its place in the sweep's index.
    let item = record_item(&stack, "INTAKE10").await;
    assert_eq!(item["status"].as_s().unwrap(), "queued");
    let saved: serde_json::Value =
        serde_json::from_str(item["intake_answer"].as_s().unwrap()).unwrap();
    assert_eq!(saved["timestamp"], first["timestamp"]);
    assert_eq!(item["watch_ledger"].as_s().unwrap(), "calls");
    assert!(item["watch_due"].as_n().is_ok());
    assert_eq!(stack.item_count("IdempotencyTable").await, 0);
    let stats = stack.stats().read().await.unwrap();
    assert_eq!((stats.total_processed, stats.duplicates), (1, 9));

    // The record reads as before for everyone else.
    let record = stack.calls().get("INTAKE10").await.unwrap().unwrap();
    let history: Vec<CallStatus> = record.status_history.iter().map(|h| h.status).collect();
    assert_eq!(history, vec![CallStatus::Received, CallStatus::Queued]);
}

#[tokio::test]
async fn a_duplicate_is_answered_from_the_stored_record_before_and_after_the_work() {
    let stack = Stack::start().await;
    let zapier = stack.zapier();
    let body = seed_payload(&stack, "INTAKEDUP").to_string();
    let (status, first) = deliver(&zapier, &body).await;
    assert_eq!(status, 202);
    // Before the stream has run: the record answers.
    let (status, again) = deliver(&zapier, &body).await;
    assert_eq!(status, 200);
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["timestamp"], first["timestamp"]);
    assert_eq!(again["message"], first["message"]);
    // The worker moving the call on does not change the answer.
    stack.run_transcriptions().await;
    let record = stack.calls().get("INTAKEDUP").await.unwrap().unwrap();
    assert_eq!(record.status, CallStatus::Transcribed);
    let (status, later) = deliver(&zapier, &body).await;
    assert_eq!((status, &later["timestamp"]), (200, &first["timestamp"]));
    let stats = stack.stats().read().await.unwrap();
    assert_eq!((stats.total_processed, stats.duplicates), (1, 2));
    // The status changes were MODIFYs: the stream queued nothing more.
    assert_eq!(stack.run_calls_stream().await.delivered, 0);
    assert_eq!(stack.raw_depth("TranscriptionQueue").await, 0);
    // Still watched until it is final; the write that makes it final takes
    // it out of the sweep's index.
    assert!(record_item(&stack, "INTAKEDUP")
        .await
        .contains_key("watch_due"));
    let notifier = stack.notify_worker(vec![stack.slack_webhook()]);
    stack.run_notifications(&notifier).await;
    let item = record_item(&stack, "INTAKEDUP").await;
    assert_eq!(item["status"].as_s().unwrap(), "notified");
    assert!(!item.contains_key("watch_ledger") && !item.contains_key("watch_due"));
}

#[tokio::test]
async fn a_call_handled_before_answers_lived_on_the_record_is_answered_already_processed() {
    let stack = Stack::start().await;
    // A record written by the earlier intake: past `received`, no answer.
    let mut record = earlier_record("INTAKEOLD");
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
    // A `received` record is not what the stream's filter passes.
    assert_eq!(stack.run_calls_stream().await.delivered, 0);
    assert_eq!(stack.raw_depth("TranscriptionQueue").await, 0);
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
    let item = record_item(&stack, "SKIP10").await;
    assert!(!item.contains_key("watch_ledger") && !item.contains_key("watch_due"));
    // The stream counts it, and queues nothing for it.
    let report = stack.run_calls_stream().await;
    assert_eq!(report.delivered, 1, "{report:?}");
    assert_eq!(stack.raw_depth("TranscriptionQueue").await, 0);
    let stats = stack.stats().read().await.unwrap();
    assert_eq!((stats.total_processed, stats.duplicates), (1, 9));
}

/// The transcription queue, refusing one call's job for the first `refusals` batches.
struct RefusingOnce {
    inner: Arc<shared::queue::jobs::SqsJobQueue>,
    refused_call: &'static str,
    refusals: AtomicUsize,
}

#[async_trait]
impl JobQueue for RefusingOnce {
    async fn send_raw(&self, body: String, delay: Duration) -> Result<(), QueueError> {
        self.inner.send_raw(body, delay).await
    }

    async fn send_many_raw(&self, bodies: Vec<String>) -> Vec<Result<(), QueueError>> {
        let refuse = self
            .refusals
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let mut results = Vec::new();
        for body in bodies {
            if refuse && body.contains(self.refused_call) {
                results.push(Err(QueueError("throttled".into())));
            } else {
                results.push(self.inner.send_raw(body, Duration::ZERO).await);
            }
        }
        results
    }
}

#[tokio::test]
async fn a_job_the_stream_could_not_queue_is_queued_on_the_streams_retry_and_counted_once() {
    let stack = Stack::start().await;
    let zapier = stack.zapier();
    for id in ["RETRY1", "RETRY2", "RETRY3"] {
        let (status, _) = deliver(&zapier, &seed_payload(&stack, id).to_string()).await;
        assert_eq!(status, 202);
    }
    let consumer = shared::flows::call_stream::NewCallRecords {
        transcription_queue: Arc::new(RefusingOnce {
            inner: stack.queue("TranscriptionQueue"),
            refused_call: "\"RETRY2\"",
            refusals: AtomicUsize::new(1),
        }),
        ..stack.new_call_records()
    };
    let report = stack.run_calls_stream_with(consumer).await;
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert_eq!(stack.raw_depth("CallsStreamDLQ").await, 0);
    let mut ids: Vec<String> = stack
        .peek_all("TranscriptionQueue")
        .await
        .iter()
        .map(|body| {
            let job: serde_json::Value = serde_json::from_str(body).unwrap();
            job["call_id"].as_str().unwrap().to_string()
        })
        .collect();
    ids.sort();
    // RETRY3 came again with RETRY2: its job may be there twice, which the
    // transcription worker's claim makes harmless.
    ids.dedup();
    assert_eq!(ids, ["RETRY1", "RETRY2", "RETRY3"]);
    let stats = stack.stats().read().await.unwrap();
    assert_eq!(stats.total_processed, 3, "each new record counted once");
}

#[tokio::test]
async fn a_first_delivery_waits_for_one_aws_call() {
    let mut stack = Stack::start().await;
    let meter =
        devstack::bench_cost::Meter::start(local().dynamodb_endpoint(), local().moto_endpoint());
    stack.dynamo = local().dynamodb_at(meter.dynamodb_url()).await;
    stack.sqs = local().sqs_at(meter.moto_url()).await;
    let zapier = stack.zapier();
    let exotel = stack.exotel_webhook();

    meter.begin_invocation();
    let (status, _) = deliver(&zapier, &seed_payload(&stack, "INTAKE1").to_string()).await;
    assert_eq!(status, 202);
    meter.begin_invocation();
    let (status, _) = deliver(&zapier, &seed_payload(&stack, "INTAKE1").to_string()).await;
    assert_eq!(status, 200);
    meter.begin_invocation();
    let response = exotel
        .handle(exotel_request(
            "CallSid=INTAKE1B&Status=busy&From=09876543210&To=09631084471",
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
    assert_eq!(operations(&runs[0]), ["PutItem"]);
    assert_eq!(first.sequential_calls, 1.0);
    assert_eq!(first.sqs_requests, 0.0);
    // A duplicate: the refused write, which on DynamoDB returns the record,
    // and its counter. DynamoDB Local leaves the record out of the refusal,
    // so here the store reads it once (a GetItem AWS never sees).
    assert_eq!(operations(&runs[1]), ["PutItem", "GetItem", "UpdateItem"]);
    // A skipped call: its final record, nothing else.
    assert_eq!(operations(&runs[2]), ["PutItem"]);
}
