//! Soak: 1,000 Zapier deliveries (100 calls x 10, shuffled) at 32-way
//! concurrency with 5% of requests to DynamoDB, SQS, Slack and AssemblyAI
//! failing (throttled, 500, dropped before or after being applied, slow),
//! then the workers drained with the faults still on. Every delivery is
//! answered 2xx or a retryable status the test retries as Zapier would;
//! every call is notified exactly once; nothing is left in a DLQ.
//! Bounded: a fixed number of deliveries and retries, and of drain rounds.

use shared::api::Route;
use shared::queue::sqs_batch::Worker;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use devstack::faults::FaultPlan;
use futures_util::StreamExt;

use crate::support::*;

const CALLS: usize = 100;
const DELIVERIES_PER_CALL: usize = 10;
const CONCURRENCY: usize = 32;
/// Zapier retries a failed task; the test gives each delivery this many tries.
const MAX_ATTEMPTS: u32 = 40;

/// How one delivery ended: the tries it took and its last status.
struct Delivered {
    attempts: u32,
    status: u16,
    duplicate: bool,
}

async fn deliver(zapier: &zapier_webhook::ZapierWebhook, body: &[u8]) -> Delivered {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let response = zapier
            .handle(zapier_request(body, Some(&bearer(WEBHOOK_TOKEN))))
            .await;
        let status = response.status().as_u16();
        let retryable = matches!(status, 409 | 429 | 500 | 502 | 503 | 504);
        if !retryable || attempts == MAX_ATTEMPTS {
            let duplicate = status == 200 && json_body(&response)["duplicate"] == true;
            return Delivered {
                attempts,
                status,
                duplicate,
            };
        }
        // Zapier backs off between tries; a short, growing pause stands in for it.
        tokio::time::sleep(Duration::from_millis(25 * u64::from(attempts.min(8)))).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_deliveries_through_injected_faults_notify_every_call_once() {
    let stack = Stack::start_faulty(FaultPlan::all(50, 2026)).await;
    let zapier = Arc::new(stack.zapier());
    let mut deliveries: Vec<(usize, Vec<u8>)> = (0..CALLS)
        .flat_map(|call| {
            let body = seed_payload(&stack, &format!("SOAK{call:03}"))
                .to_string()
                .into_bytes();
            (0..DELIVERIES_PER_CALL)
                .map(move |copy| (call * DELIVERIES_PER_CALL + copy, body.clone()))
        })
        .collect();
    // A fixed shuffle: the same run every time.
    deliveries.sort_by_key(|(n, _)| {
        (*n as u64)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(17)
    });
    let results: Vec<Delivered> = futures_util::stream::iter(deliveries)
        .map(|(_, body)| {
            let zapier = Arc::clone(&zapier);
            async move { deliver(&zapier, &body).await }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;

    // Drain the workers, faults still on: a failed message comes back.
    let transcriber = stack.transcribe_worker();
    let notifier = stack.notify_worker(vec![stack.slack_webhook()]);
    for _ in 0..20 {
        stack
            .drain("TranscriptionQueue", |event| {
                let worker = Arc::clone(&transcriber);
                async move { worker.handle(event).await }
            })
            .await;
        stack.run_notifications(&notifier).await;
        if stack.depth("TranscriptionQueue").await == 0
            && stack.depth("NotificationQueue").await == 0
        {
            break;
        }
    }

    let answered = results
        .iter()
        .filter(|d| matches!(d.status, 200 | 202))
        .count();
    let retries: u32 = results.iter().map(|d| d.attempts - 1).sum();
    let duplicates = results.iter().filter(|d| d.duplicate).count();
    let posts_per_call = stack.posts_per_call();
    let notified_once = (0..CALLS)
        .filter(|call| posts_per_call.get(&format!("SOAK{call:03}")) == Some(&1))
        .count();
    let dlq = stack.depth("TranscriptionDLQ").await
        + stack.depth("NotificationDLQ").await
        + stack.raw_depth("CallsStreamDLQ").await;
    let faults: Vec<String> = stack.faults.iter().map(|p| p.counts().summary()).collect();
    let checks = [
        ("every delivery answered 2xx", answered == results.len()),
        ("every call notified exactly once", notified_once == CALLS),
        (
            "no post for a call beyond one",
            posts_per_call.values().all(|n| *n == 1),
        ),
        ("nothing in a DLQ", dlq == 0),
    ];
    let failed: Vec<&str> = checks
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(name, _)| *name)
        .collect();
    println!(
        "soak: {} deliveries, {answered} answered 2xx ({duplicates} as duplicates), {retries} retries; \
         {} posts for {} calls ({notified_once} notified exactly once); {dlq} in DLQs\n\
         faults (DynamoDB, SQS, Slack, AssemblyAI):\n  {}",
        results.len(),
        stack.slack.posts().len(),
        posts_per_call.len(),
        faults.join("\n  ")
    );
    let mut unanswered: HashMap<u16, usize> = HashMap::new();
    for d in results.iter().filter(|d| !matches!(d.status, 200 | 202)) {
        *unanswered.entry(d.status).or_default() += 1;
    }
    if !unanswered.is_empty() {
        println!("soak: deliveries not answered 2xx, by last status: {unanswered:?}");
    }
    for queue in ["TranscriptionDLQ", "NotificationDLQ", "CallsStreamDLQ"] {
        for body in stack.peek(queue).await {
            println!("soak: left in {queue}: {body}");
        }
    }
    for call in 0..CALLS {
        let id = format!("SOAK{call:03}");
        if posts_per_call.get(&id) != Some(&1) {
            use shared::store::calls::CallStore;
            let record = stack.calls().get(&id).await.ok().flatten();
            println!(
                "soak: {id} not notified once: status {:?}, reason {:?}, history {:?}",
                record.as_ref().map(|r| r.status),
                record.as_ref().and_then(|r| r.failure_reason.clone()),
                record.map(|r| r.status_history)
            );
        }
    }
    println!(
        "soak: {} passed, {} failed",
        checks.len() - failed.len(),
        failed.len()
    );
    assert!(failed.is_empty(), "soak checks failed: {failed:?}");
}
