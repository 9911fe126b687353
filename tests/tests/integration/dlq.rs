//! `callops-admin dlq`: dead letters are listed masked, replayed to their
//! source queue, and a replayed message does nothing twice.

use admin::dlq;
use shared::queue::jobs::{CallStart, NotificationJob};

use crate::support::*;

/// The stack's queue-name prefix, read off a queue URL.
fn stack_prefix(stack: &Stack) -> String {
    let url = stack.resources.queue("NotificationDLQ");
    let name = url.rsplit('/').next().unwrap();
    name.strip_suffix("-NotificationDLQ").unwrap().to_string()
}

async fn dead_letter(stack: &Stack, body: &str) {
    stack
        .harness_sqs
        .send_message()
        .queue_url(stack.resources.queue("NotificationDLQ"))
        .message_body(body)
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn a_replayed_notification_is_posted_once_however_often_it_returns() {
    let stack = Stack::start().await;
    let job = NotificationJob::call_started(
        "call-start#dlq-room",
        CallStart {
            room_name: "dlq-room".into(),
            user_email: Some("alice@company.com".into()),
            started_at: "2026-11-21T14:15:00Z".into(),
            metadata: serde_json::Map::from_iter([("caller".to_string(), "+14155550100".into())]),
        },
    );
    let body = serde_json::to_string(&job).unwrap();
    dead_letter(&stack, &body).await;

    let sqs = stack.harness_sqs.clone();
    let queue = dlq::find(&sqs, &stack_prefix(&stack), "notification")
        .await
        .unwrap();
    assert_eq!(queue.name, "NotificationDLQ");
    assert_eq!(
        queue.source_url.as_deref(),
        Some(stack.resources.queue("NotificationQueue").as_str())
    );
    let letters = dlq::read_all(&sqs, &queue, std::time::Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(letters.len(), 1);
    // What an operator reads has no email or phone number in it.
    assert!(!letters[0].body.contains("alice@"), "{}", letters[0].body);
    assert!(
        !letters[0].body.contains("4155550100"),
        "{}",
        letters[0].body
    );
    assert!(letters[0].body.contains("dlq-room"));

    assert_eq!(dlq::replay(&sqs, &queue, &letters).await.unwrap(), 1);
    assert_eq!(stack.depth("NotificationDLQ").await, 0);
    let notifier = stack.notify_worker(vec![stack.slack_bot()]);
    stack.run_notifications(&notifier).await;
    assert_eq!(stack.slack.posts().len(), 1);

    // The same message dead-lettered again (say its delete was lost) and
    // replayed again: the worker's claim on it is done, nothing is re-posted.
    dead_letter(&stack, &body).await;
    let again = dlq::read_all(&sqs, &queue, std::time::Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(dlq::replay(&sqs, &queue, &again).await.unwrap(), 1);
    stack.run_notifications(&notifier).await;
    assert_eq!(stack.slack.posts().len(), 1, "a replay posts nothing twice");

    // Purge empties the DLQ.
    dead_letter(&stack, "{\"junk\":true}").await;
    dlq::purge(&sqs, &queue).await.unwrap();
    assert!(
        dlq::read_all(&sqs, &queue, std::time::Duration::from_secs(1))
            .await
            .unwrap()
            .is_empty()
    );
}
