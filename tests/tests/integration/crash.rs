//! Crashes between two writes: a handler or worker killed right after any
//! one of its DynamoDB or SQS requests was applied (the proxies of
//! `Stack::start_crashable` hold the answer back and the test aborts the
//! task, as a Lambda dying mid-invocation would). The retry — the sender's,
//! or SQS's redelivery — completes the work, and nothing is done twice.

use shared::api::Route;
use shared::queue::sqs_batch::Worker;
use shared::store::sessions::SessionStore;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};

use crate::support::*;

/// Runs `work` in its own task; if the crash switch fires first the task is
/// aborted (`None`), otherwise its output is returned.
pub(crate) async fn run_or_crash<T: Send + 'static>(
    stack: &Stack,
    work: impl Future<Output = T> + Send + 'static,
) -> Option<T> {
    let mut task = tokio::spawn(work);
    tokio::select! {
        out = &mut task => Some(out.expect("handler task")),
        _ = stack.crash.reached() => {
            task.abort();
            None
        }
    }
}

/// Retries a delivery as Zapier would until it is answered 2xx.
async fn retry_until_accepted(zapier: &zapier_webhook::ZapierWebhook, body: &[u8]) {
    for _ in 0..100 {
        let response = zapier
            .handle(zapier_request(body, Some(&bearer(WEBHOOK_TOKEN))))
            .await;
        match response.status().as_u16() {
            200 | 202 => return,
            409 | 503 => tokio::time::sleep(Duration::from_millis(100)).await,
            other => panic!("unexpected {other}: {:?}", json_body(&response)),
        }
    }
    panic!("never accepted");
}

fn zapier(stack: &Stack) -> Arc<zapier_webhook::ZapierWebhook> {
    Arc::new(stack.zapier())
}

#[tokio::test]
async fn an_intake_killed_after_its_write_is_answered_by_the_retry_and_done_once() {
    let stack = Stack::start_crashable().await;
    let zapier = zapier(&stack);
    // A clean delivery first, counting its writes.
    stack.crash.count();
    let clean = seed_payload(&stack, "CRASH00").to_string().into_bytes();
    retry_until_accepted(&zapier, &clean).await;
    let writes = stack.crash.seen();
    assert_eq!(writes, 1, "an intake makes one write: its record");

    for k in 1..=writes {
        let call_id = format!("CRASH{k:02}");
        let body = seed_payload(&stack, &call_id).to_string().into_bytes();
        stack.crash.arm(k);
        let handler = Arc::clone(&zapier);
        let killed_body = body.clone();
        let outcome = run_or_crash(&stack, async move {
            handler
                .handle(zapier_request(&killed_body, Some(&bearer(WEBHOOK_TOKEN))))
                .await
                .status()
        })
        .await;
        assert!(
            outcome.is_none(),
            "the delivery was not killed after write {k}"
        );
        stack.crash.count();
        retry_until_accepted(&zapier, &body).await;
    }

    stack.run_transcriptions().await;
    let notifier = stack.notify_worker(vec![stack.slack_webhook()]);
    stack.run_notifications(&notifier).await;
    let posts = stack.posts_per_call();
    for k in 0..=writes {
        assert_eq!(
            posts.get(&format!("CRASH{k:02}")),
            Some(&1),
            "CRASH{k:02}: {posts:?}"
        );
    }
    assert_eq!(posts.len() as u64, writes + 1);
    let stats = shared::store::stats::StatsStore::read(&stack.stats())
        .await
        .unwrap();
    assert_eq!(stats.total_processed, writes + 1);
}

#[tokio::test]
async fn a_stream_consumer_killed_after_any_write_is_finished_by_the_streams_retry() {
    let stack = Stack::start_crashable().await;
    let zapier = zapier(&stack);
    let consumer = Arc::new(stack.calls_stream());
    // A clean batch first, counting the consumer's writes.
    retry_until_accepted(
        &zapier,
        &seed_payload(&stack, "SCRASH00").to_string().into_bytes(),
    )
    .await;
    stack.crash.count();
    stack.run_calls_stream().await;
    let writes = stack.crash.seen();
    assert!(writes >= 2, "the job batch and the counter: {writes}");

    for k in 1..=writes {
        let call_id = format!("SCRASH{k:02}");
        retry_until_accepted(
            &zapier,
            &seed_payload(&stack, &call_id).to_string().into_bytes(),
        )
        .await;
        stack.crash.arm(k);
        // Lambda sees a killed invocation as a failed batch and retries it.
        let report = run_calls_stream_or_crash(&stack, &consumer).await;
        assert!(
            !report.failed.is_empty(),
            "killed after write {k}: {report:?}"
        );
        stack.crash.count();
    }
    assert_eq!(stack.raw_depth("CallsStreamDLQ").await, 0);
    stack.run_transcriptions().await;
    let notifier = stack.notify_worker(vec![stack.slack_webhook()]);
    stack.run_notifications(&notifier).await;
    let posts = stack.posts_per_call();
    for k in 0..=writes {
        assert_eq!(
            posts.get(&format!("SCRASH{k:02}")),
            Some(&1),
            "SCRASH{k:02}: {posts:?}"
        );
    }
}

/// Reads the calls stream into `consumer` with the stack's crash switch
/// armed: a killed invocation answers every record of its batch failed, as
/// Lambda sees a function that died, and the stream retries it.
async fn run_calls_stream_or_crash(
    stack: &Stack,
    consumer: &Arc<calls_stream::CallsStream>,
) -> devstack::streams::StreamPollReport {
    stack
        .run_calls_stream_by(|event| {
            let consumer = Arc::clone(consumer);
            async move {
                let all: Vec<String> = event
                    .records
                    .iter()
                    .filter_map(|r| r.change.sequence_number.clone())
                    .collect();
                match run_or_crash(stack, async move { consumer.handle(event).await }).await {
                    Some(response) => response,
                    None => {
                        stack.crash.count();
                        calls_stream::failed_records(all)
                    }
                }
            }
        })
        .await
}

/// One SQS message as Lambda hands it to a worker; redelivery hands the
/// same message again.
/// Hands `message` to `worker` again and again, as SQS redelivers a
/// message whose receive failed, until it succeeds (a killed worker's claim
/// must lapse first). Panics if it never does.
pub(crate) async fn redeliver_until_settled<W: Worker>(worker: &Arc<W>, message: &str, what: &str) {
    for receive in 2..40 {
        if worker
            .handle(event_of(message.to_string(), receive))
            .await
            .batch_item_failures
            .is_empty()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{what}: redelivery never succeeded");
}

pub(crate) fn event_of(body: String, receive_count: u32) -> SqsEvent {
    let mut message = SqsMessage::default();
    message.message_id = Some(format!("m-{}", body.len()));
    message.body = Some(body);
    message
        .attributes
        .insert("ApproximateReceiveCount".into(), receive_count.to_string());
    let mut event = SqsEvent::default();
    event.records = vec![message];
    event
}

#[tokio::test]
async fn workers_killed_after_any_write_finish_on_redelivery_and_post_once() {
    let stack = Stack::start_crashable().await;
    let zapier = zapier(&stack);
    let transcriber = stack.transcribe_worker();
    // A short part lease, so a killed worker's claim frees within the test
    // (in Lambda it outlives the queue's visibility timeout).
    let mut notifier = Arc::try_unwrap(stack.notify_worker(vec![stack.slack_webhook()]))
        .ok()
        .expect("a fresh worker");
    notifier.send_lease = Duration::from_secs(1);
    let notifier = Arc::new(notifier);

    // Count a clean run of each worker on its own call.
    let clean = seed_payload(&stack, "WORK00").to_string().into_bytes();
    retry_until_accepted(&zapier, &clean).await;
    let job = stack.peek("TranscriptionQueue").await.remove(0);
    stack.crash.count();
    stack.run_transcriptions().await;
    let transcribe_writes = stack.crash.seen();
    stack.crash.count();
    stack.run_notifications(&notifier).await;
    let notify_writes = stack.crash.seen();
    assert!(transcribe_writes >= 2 && notify_writes >= 2);
    println!("crash: transcribe-worker makes {transcribe_writes} requests, notify-worker {notify_writes}");
    drop(job);

    // Each crash point gets its own call: killed once, then redelivered.
    for (worker, writes) in [("transcribe", transcribe_writes), ("notify", notify_writes)] {
        for k in 1..=writes {
            let call_id = format!("W{}{k:02}", &worker[..1].to_uppercase());
            let body = seed_payload(&stack, &call_id).to_string().into_bytes();
            retry_until_accepted(&zapier, &body).await;
            if worker == "notify" {
                stack.run_transcriptions().await;
            }
            let queue = if worker == "notify" {
                "NotificationQueue"
            } else {
                "TranscriptionQueue"
            };
            let message = stack.peek(queue).await.remove(0);
            stack.discard_queued(queue).await;
            stack.crash.arm(k);
            let killed = {
                let event = event_of(message.clone(), 1);
                let transcriber = Arc::clone(&transcriber);
                let notifier = Arc::clone(&notifier);
                run_or_crash(&stack, async move {
                    if worker == "notify" {
                        notifier.handle(event).await
                    } else {
                        transcriber.handle(event).await
                    }
                })
                .await
            };
            stack.crash.count();
            // Killed, or (past the last write of this path) finished: either
            // way SQS hands the same message over again after the lease.
            let _ = killed;
            let what = format!("{worker} {call_id}");
            if worker == "notify" {
                redeliver_until_settled(&notifier, &message, &what).await;
            } else {
                redeliver_until_settled(&transcriber, &message, &what).await;
            }
            // Whatever the worker queued next runs to the end.
            stack.run_transcriptions().await;
            stack.run_notifications(&notifier).await;
        }
    }
    let posts = stack.posts_per_call();
    assert!(
        posts.values().all(|n| *n == 1),
        "a call posted twice: {posts:?}"
    );
    for k in 1..=transcribe_writes {
        assert_eq!(
            posts.get(&format!("WT{k:02}")),
            Some(&1),
            "WT{k:02}: {posts:?}"
        );
    }
    for k in 1..=notify_writes {
        assert_eq!(
            posts.get(&format!("WN{k:02}")),
            Some(&1),
            "WN{k:02}: {posts:?}"
        );
    }
}

#[tokio::test]
async fn a_stream_consumer_killed_after_any_write_of_a_call_start_is_finished_by_the_retry() {
    let stack = Stack::start_crashable().await;
    let intake = stack.call_start_intake();
    let consumer = Arc::new(stack.calls_stream());
    let report_start = |k: u64| {
        let intake = &intake;
        async move {
            let start = shared::queue::jobs::CallStart {
                room_name: format!("crash-start-{k:02}"),
                user_email: Some(format!("caller{k:02}@example.com")),
                started_at: shared::base::time::now_rfc3339(),
                metadata: serde_json::Map::new(),
            };
            let report = shared::flows::call_start::CallStartReport {
                start,
                participant_identity: Some("caller"),
                response: serde_json::json!({"success": true}),
                reported_by: None,
            };
            let (status, _) = intake.record(report, http::StatusCode::OK).await.unwrap();
            assert_eq!(status, 200);
        }
    };
    // A clean start first, counting the consumer's writes.
    report_start(0).await;
    stack.crash.count();
    stack.run_calls_stream().await;
    let writes = stack.crash.seen();
    assert!(writes >= 3, "the session's writes and the job: {writes}");

    for k in 1..=writes {
        report_start(k).await;
        stack.crash.arm(k);
        let report = run_calls_stream_or_crash(&stack, &consumer).await;
        assert!(
            !report.failed.is_empty(),
            "killed after write {k}: {report:?}"
        );
        stack.crash.count();
    }
    assert_eq!(stack.raw_depth("CallsStreamDLQ").await, 0);
    let notifier = stack.notify_worker(vec![stack.slack_webhook()]);
    stack.run_notifications(&notifier).await;
    let posts = stack.slack.posts();
    let sessions = stack.sessions();
    for k in 0..=writes {
        let caller = format!("caller{k:02}@example.com");
        let count = posts
            .iter()
            .filter(|p| p["text"].as_str().unwrap_or_default().contains(&caller))
            .count();
        assert_eq!(count, 1, "{caller}: {posts:?}");
        let session = sessions
            .get(&format!("crash-start-{k:02}"))
            .await
            .unwrap()
            .expect("the session records its caller");
        assert_eq!(session.user_email.as_deref(), Some(caller.as_str()));
    }
}
