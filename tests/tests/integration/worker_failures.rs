//! What happens when transcription goes wrong.

use shared::api::Route;
use shared::queue::sqs_batch::Worker;
use std::sync::Arc;
use std::time::Duration;

use devstack::fakes::TranscriptOutcome;
use shared::store::calls::{CallStatus, CallStore};
use shared::store::stats::StatsStore;

use crate::support::*;

#[tokio::test]
async fn assemblyai_error_fails_the_call_and_still_notifies() {
    let stack = Stack::start().await;
    stack.assemblyai.set_outcome(TranscriptOutcome::Error {
        message: "Audio file is corrupt".into(),
    });
    let body = seed_payload(&stack, "AAIERR").to_string();
    let response = stack
        .zapier()
        .handle(zapier_request(
            body.as_bytes(),
            Some(&bearer(WEBHOOK_TOKEN)),
        ))
        .await;
    assert_eq!(response.status(), 202);
    stack.run_transcriptions().await;
    let record = stack.calls().get("AAIERR").await.unwrap().unwrap();
    assert_eq!(record.status, CallStatus::Failed);
    assert_eq!(
        record.failure_reason.as_deref(),
        Some("AssemblyAI error: Audio file is corrupt")
    );

    let notifier = stack.notify_worker(vec![stack.slack_webhook()]);
    stack.run_notifications(&notifier).await;
    let posts = stack.slack.posts();
    assert_eq!(posts.len(), 1);
    let text = posts[0]["text"].as_str().unwrap();
    assert!(
        text.contains("❗ Concern:\nTranscription failed: AssemblyAI error: Audio file is corrupt"),
        "{text}"
    );
    let record = stack.calls().get("AAIERR").await.unwrap().unwrap();
    assert_eq!(
        record.status,
        CallStatus::Failed,
        "a failed call stays failed after its notice"
    );
    assert!(record.slack_posted);
    let stats = stack.stats().read().await.unwrap();
    assert_eq!((stats.failed, stats.successfully_posted), (1, 0));
}

#[tokio::test]
async fn a_failed_message_mid_batch_is_the_only_one_redelivered() {
    let stack = Stack::start().await;
    let zapier = stack.zapier();
    for call_id in ["BATCH1", "BATCH2", "BATCH3"] {
        let mut payload = seed_payload(&stack, call_id);
        if call_id == "BATCH2" {
            // Allowed host, but nothing listens: the download fails temporarily.
            payload["recording_url"] =
                format!("http://{}/recordings/BATCH2.mp3", stack.dead_host).into();
        }
        let response = zapier
            .handle(zapier_request(
                payload.to_string().as_bytes(),
                Some(&bearer(WEBHOOK_TOKEN)),
            ))
            .await;
        assert_eq!(response.status(), 202);
    }
    // The jobs come from the calls stream, as Lambda would run it.
    stack.run_calls_stream().await;
    let worker = stack.transcribe_worker();
    let poller = stack.poller("TranscriptionQueue");
    let mut seen = devstack::poller::PollReport::default();
    let first_attempts_seen = |report: &devstack::poller::PollReport| {
        report
            .bodies
            .iter()
            .filter(|b| b.contains("\"transcript_id\":null"))
            .count()
    };
    // moto may split the three first jobs over more than one receive.
    while first_attempts_seen(&seen) < 3 {
        let report = poller
            .poll_once(|event| {
                let worker = Arc::clone(&worker);
                async move { worker.handle(event).await }
            })
            .await
            .unwrap();
        seen.received += report.received;
        seen.deleted += report.deleted;
        seen.failed.extend(report.failed);
        seen.bodies.extend(report.bodies);
    }
    assert_eq!(seen.failed.len(), 1, "{seen:?}");
    assert_eq!(seen.deleted, seen.received - 1);
    // Only BATCH2's job is back on the queue (the other two left re-check jobs).
    let waiting: Vec<serde_json::Value> = stack
        .peek("TranscriptionQueue")
        .await
        .iter()
        .map(|b| serde_json::from_str(b).unwrap())
        .collect();
    let first_attempts: Vec<&str> = waiting
        .iter()
        .filter(|job| job["transcript_id"].is_null())
        .map(|job| job["call_id"].as_str().unwrap())
        .collect();
    assert_eq!(first_attempts, vec!["BATCH2"]);
    // The failed submission handed its claim back, so the retry submits at once.
    let batch2 = stack.calls().get("BATCH2").await.unwrap().unwrap();
    assert_eq!(batch2.status, CallStatus::Queued);
    let history: Vec<CallStatus> = batch2.status_history.iter().map(|h| h.status).collect();
    assert_eq!(
        history,
        vec![
            CallStatus::Received,
            CallStatus::Queued,
            CallStatus::Transcribing,
            CallStatus::Queued
        ]
    );
}

#[tokio::test]
async fn a_transcription_past_its_deadline_fails_the_call() {
    let stack = Stack::start().await;
    stack
        .assemblyai
        .set_outcome(TranscriptOutcome::NeverFinishes);
    let body = seed_payload(&stack, "SLOW1").to_string();
    let response = stack
        .zapier()
        .handle(zapier_request(
            body.as_bytes(),
            Some(&bearer(WEBHOOK_TOKEN)),
        ))
        .await;
    assert_eq!(response.status(), 202);
    // The stream's consumer sets the job's deadline from the call's arrival.
    let mut consumer = stack.new_call_records();
    consumer.transcription_deadline = Duration::ZERO;
    stack.run_calls_stream_with(consumer).await;
    stack.run_transcriptions().await;
    let record = stack.calls().get("SLOW1").await.unwrap().unwrap();
    assert_eq!(record.status, CallStatus::Failed);
    assert_eq!(
        record.failure_reason.as_deref(),
        Some("transcription did not finish before its deadline")
    );
    assert_eq!(stack.depth("NotificationQueue").await, 1);
}

#[tokio::test]
async fn a_redelivered_first_job_never_submits_twice() {
    let stack = Stack::start().await;
    stack.assemblyai.set_outcome(TranscriptOutcome::Completed {
        polls_before_done: 1,
        utterances: vec![("A".into(), "Hello".into())],
        sentiment: vec![],
        audio_duration: 5,
    });
    let body = seed_payload(&stack, "ONCE1").to_string();
    stack
        .zapier()
        .handle(zapier_request(
            body.as_bytes(),
            Some(&bearer(WEBHOOK_TOKEN)),
        ))
        .await;
    // Duplicate the first job as SQS at-least-once delivery may.
    let job = stack.peek("TranscriptionQueue").await.remove(0);
    stack
        .sqs
        .send_message()
        .queue_url(stack.resources.queue("TranscriptionQueue"))
        .message_body(job)
        .send()
        .await
        .unwrap();
    stack.run_transcriptions().await;
    assert_eq!(stack.assemblyai.transcript_requests().len(), 1);
    assert_eq!(
        stack.calls().get("ONCE1").await.unwrap().unwrap().status,
        CallStatus::Transcribed
    );
}

#[tokio::test]
async fn a_transient_assemblyai_failure_is_retried_on_the_next_delivery() {
    let stack = Stack::start().await;
    stack.assemblyai.fail_next_uploads(1);
    let body = seed_payload(&stack, "FLAKY1").to_string();
    let response = stack
        .zapier()
        .handle(zapier_request(
            body.as_bytes(),
            Some(&bearer(WEBHOOK_TOKEN)),
        ))
        .await;
    assert_eq!(response.status(), 202);
    let reports = stack.run_transcriptions().await;
    // One reported failure, then the very next delivery submits (no takeover wait).
    assert_eq!(reports.iter().map(|r| r.failed.len()).sum::<usize>(), 1);
    assert_eq!(stack.assemblyai.upload_sizes().len(), 1);
    assert_eq!(stack.assemblyai.transcript_requests().len(), 1);
    assert_eq!(
        stack.calls().get("FLAKY1").await.unwrap().unwrap().status,
        CallStatus::Transcribed
    );
}
