//! Issue 9: every delivery survives faults. Claims belong to their owner,
//! completions are retried before a part could be sent twice, and failing
//! channels back off.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use devstack::fakes::ScriptedResponse;
use shared::api::Route;
use shared::flows::notify::{self, Delivery, Message, NotificationChannel};
use shared::queue::jobs::{JobQueue, QueueError};
use shared::store::dedup::{Claim, DedupStore, Found, Owner, Settled};
use shared::store::StoreError;

use crate::support::*;

#[tokio::test]
async fn a_taken_over_claim_cannot_overwrite_or_release_the_new_owners_record() {
    let stack = Stack::start().await;
    let dedup = stack.dedup();
    // The first claimant's lease is over at once, as if it had stalled.
    let Claim::Acquired(stale) = dedup.claim("k#takeover", Duration::ZERO).await.unwrap() else {
        panic!("first claim not acquired");
    };
    tokio::time::sleep(Duration::from_millis(5)).await;
    let Claim::Acquired(current) = dedup
        .claim("k#takeover", Duration::from_secs(60))
        .await
        .unwrap()
    else {
        panic!("an expired lease must be claimable");
    };
    assert_ne!(stale, current);

    let stale_answer = serde_json::json!({"by": "stale"});
    assert_eq!(
        dedup
            .complete("k#takeover", &stale, &stale_answer)
            .await
            .unwrap(),
        Settled::Lost
    );
    assert_eq!(
        dedup.release("k#takeover", &stale).await.unwrap(),
        Settled::Lost
    );
    assert_eq!(dedup.peek("k#takeover").await.unwrap(), Found::InProgress);

    let answer = serde_json::json!({"by": "current"});
    assert_eq!(
        dedup
            .complete("k#takeover", &current, &answer)
            .await
            .unwrap(),
        Settled::Done
    );
    // A late stale completion still changes nothing.
    assert_eq!(
        dedup
            .complete("k#takeover", &stale, &stale_answer)
            .await
            .unwrap(),
        Settled::Lost
    );
    assert_eq!(
        dedup
            .claim("k#takeover", Duration::from_secs(60))
            .await
            .unwrap(),
        Claim::Completed(answer)
    );
}

/// The idempotency table, with the first `failures` completions failing
/// the way a throttled or timed-out DynamoDB call does.
struct FlakyComplete {
    inner: Arc<dyn DedupStore>,
    failures: AtomicUsize,
}

#[async_trait]
impl DedupStore for FlakyComplete {
    async fn claim(&self, key: &str, lease: Duration) -> Result<Claim, StoreError> {
        self.inner.claim(key, lease).await
    }

    async fn peek(&self, key: &str) -> Result<Found, StoreError> {
        self.inner.peek(key).await
    }

    async fn complete(
        &self,
        key: &str,
        owner: &Owner,
        response: &serde_json::Value,
    ) -> Result<Settled, StoreError> {
        let left = self.failures.load(Ordering::SeqCst);
        if left > 0 {
            self.failures.store(left - 1, Ordering::SeqCst);
            return Err(StoreError::Dynamo("ProvisionedThroughputExceeded".into()));
        }
        self.inner.complete(key, owner, response).await
    }

    async fn release(&self, key: &str, owner: &Owner) -> Result<Settled, StoreError> {
        self.inner.release(key, owner).await
    }
}

#[tokio::test]
async fn a_sent_part_whose_record_failed_transiently_is_recorded_and_never_resent() {
    let stack = Stack::start().await;
    let dedup = FlakyComplete {
        inner: stack.dedup(),
        failures: AtomicUsize::new(2),
    };
    let channels = vec![stack.slack_webhook()];
    let message = Message::new("Subject", "a call ended");
    let deliver = || {
        notify::deliver(
            &dedup,
            &channels,
            "n-flaky",
            &message,
            notify::DEFAULT_PART_LEASE,
        )
    };
    assert!(matches!(
        deliver().await.unwrap(),
        Delivery::Sent { slack: true, .. }
    ));
    assert_eq!(dedup.failures.load(Ordering::SeqCst), 0);
    // SQS redelivers the same job: the part is already recorded as sent.
    assert!(matches!(
        deliver().await.unwrap(),
        Delivery::Sent { slack: true, .. }
    ));
    assert_eq!(stack.slack.posts().len(), 1);
}

/// The notification queue, remembering each re-send's delay and passing
/// the job on at once so the test does not wait for it.
struct RecordingQueue {
    inner: Arc<dyn JobQueue>,
    delays: Mutex<Vec<Duration>>,
}

#[async_trait]
impl JobQueue for RecordingQueue {
    async fn send_raw(&self, body: String, delay: Duration) -> Result<(), QueueError> {
        self.delays.lock().unwrap().push(delay);
        self.inner.send_raw(body, Duration::ZERO).await
    }
}

#[tokio::test]
async fn slack_server_errors_back_off_with_growing_delays_then_post_once() {
    let stack = Stack::start().await;
    let body = seed_payload(&stack, "BACKOFF1").to_string();
    let response = stack
        .zapier()
        .handle(zapier_request(
            body.as_bytes(),
            Some(&bearer(WEBHOOK_TOKEN)),
        ))
        .await;
    assert_eq!(response.status(), 202);
    stack.run_transcriptions().await;
    for _ in 0..3 {
        stack.slack.push_response(ScriptedResponse::ServerError);
    }
    let queue = Arc::new(RecordingQueue {
        inner: stack.queue("NotificationQueue"),
        delays: Mutex::new(Vec::new()),
    });
    let mut worker = stack.notify_worker_owned(vec![stack.slack_bot()]);
    worker.notification_queue = queue.clone();
    worker.resend_base = notify::DEFAULT_RESEND_BASE;
    let worker = Arc::new(worker);
    let reports = stack.run_notifications(&worker).await;

    assert_eq!(stack.slack.attempts(), 4);
    assert_eq!(stack.slack.posts().len(), 1);
    // Re-sent with a delay each time, never left to SQS's fixed visibility timeout.
    assert!(reports.iter().all(|r| r.failed.is_empty()), "{reports:?}");
    let delays = queue.delays.lock().unwrap().clone();
    assert_eq!(delays.len(), 3, "{delays:?}");
    assert!(delays.windows(2).all(|w| w[0] <= w[1]), "{delays:?}");
    assert!(delays[2] > delays[0], "{delays:?}");
    assert!(delays[0] >= notify::DEFAULT_RESEND_BASE / 2, "{delays:?}");
    assert_eq!(stack.depth("NotificationDLQ").await, 0);
}

#[test]
fn a_parts_claim_outlives_the_notification_queues_visibility_timeout() {
    let template = devstack::template::Template::load(&devstack::repo_root().join("template.yaml"))
        .expect("template.yaml");
    let visibility = template
        .queues
        .iter()
        .find(|q| q.logical_id == "NotificationQueue")
        .and_then(|q| q.visibility_timeout)
        .expect("NotificationQueue VisibilityTimeout");
    assert!(
        notify::DEFAULT_PART_LEASE.as_secs() > visibility as u64,
        "part lease {:?} must outlive the visibility timeout {visibility}s",
        notify::DEFAULT_PART_LEASE
    );
}

/// Counts sends, so a test can tell a re-send from a replay.
struct Counting(AtomicUsize);

#[async_trait]
impl NotificationChannel for Counting {
    fn name(&self) -> &'static str {
        "counting"
    }

    fn kind(&self) -> notify::ChannelKind {
        notify::ChannelKind::Console
    }

    async fn send(&self, _part: &notify::Part) -> Result<notify::Sent, notify::SendError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(notify::Sent::default())
    }
}

#[tokio::test]
async fn concurrent_workers_on_one_notification_send_each_part_once() {
    let stack = Stack::start().await;
    let dedup = stack.dedup();
    let counting = Arc::new(Counting(AtomicUsize::new(0)));
    let channels: Vec<Arc<dyn NotificationChannel>> = vec![counting.clone()];
    let message = Arc::new(Message::new("Subject", "hello"));
    let runs = (0..8).map(|_| {
        let (dedup, channels, message) = (dedup.clone(), channels.clone(), message.clone());
        tokio::spawn(async move {
            notify::deliver(
                dedup.as_ref(),
                &channels,
                "n-race",
                &message,
                notify::DEFAULT_PART_LEASE,
            )
            .await
            .unwrap()
        })
    });
    for outcome in futures_util::future::join_all(runs).await {
        assert!(matches!(
            outcome.unwrap(),
            Delivery::Sent { .. } | Delivery::Retry(_)
        ));
    }
    assert_eq!(counting.0.load(Ordering::SeqCst), 1);
}
