//! Notification delivery: retries, rate limits, permanent failures, and
//! never posting the same thing twice.

use devstack::fakes::{ScriptedResponse, TranscriptOutcome};
use shared::api::Route;
use shared::queue::jobs::{NotificationJob, NotificationKind};
use shared::store::calls::{CallStatus, CallStore};
use shared::store::stats::StatsStore;

use crate::support::*;

/// Ingests and transcribes one call, leaving its notification job queued.
async fn transcribed_call(stack: &Stack, call_id: &str) {
    let body = seed_payload(stack, call_id).to_string();
    let response = stack
        .zapier()
        .handle(zapier_request(
            body.as_bytes(),
            Some(&bearer(WEBHOOK_TOKEN)),
        ))
        .await;
    assert_eq!(response.status(), 202);
    stack.run_transcriptions().await;
    assert_eq!(stack.depth("NotificationQueue").await, 1);
}

#[tokio::test]
async fn slack_429_then_success_posts_exactly_once() {
    let stack = Stack::start().await;
    transcribed_call(&stack, "RATE1").await;
    stack.slack.push_response(ScriptedResponse::RateLimited {
        retry_after_secs: 1,
    });
    let notifier = stack.notify_worker(vec![stack.slack_webhook()]);
    let reports = stack.run_notifications(&notifier).await;
    assert_eq!(stack.slack.attempts(), 2);
    assert_eq!(stack.slack.posts().len(), 1);
    // The rate-limited job came back as a new message carrying its attempt count.
    let bodies: Vec<&String> = reports.iter().flat_map(|r| &r.bodies).collect();
    assert_eq!(bodies.len(), 2);
    assert!(bodies[1].contains("\"attempt\":1"));
    assert_eq!(stack.depth("NotificationDLQ").await, 0);
    assert!(
        stack
            .calls()
            .get("RATE1")
            .await
            .unwrap()
            .unwrap()
            .slack_posted
    );
}

#[tokio::test]
async fn server_errors_are_retried_until_they_succeed() {
    let stack = Stack::start().await;
    transcribed_call(&stack, "RETRY5XX").await;
    stack.slack.push_response(ScriptedResponse::ServerError);
    stack.slack.push_response(ScriptedResponse::ServerError);
    let notifier = stack.notify_worker(vec![stack.slack_bot()]);
    let reports = stack.run_notifications(&notifier).await;
    // Re-sent with a delay twice (never an SQS failure), then delivered.
    assert_eq!(reports.iter().map(|r| r.failed.len()).sum::<usize>(), 0);
    let bodies: Vec<&String> = reports.iter().flat_map(|r| &r.bodies).collect();
    assert_eq!(bodies.len(), 3);
    assert!(bodies[2].contains("\"attempt\":2"));
    assert_eq!(stack.slack.posts().len(), 1);
}

#[tokio::test]
async fn a_redelivered_job_never_posts_twice() {
    let stack = Stack::start().await;
    transcribed_call(&stack, "REDELIVER1").await;
    let notifier = stack.notify_worker(vec![stack.slack_webhook()]);
    stack.run_notifications(&notifier).await;
    assert_eq!(stack.slack.posts().len(), 1);
    // SQS delivers at least once: the same job again must not post again.
    let job = NotificationJob::for_call("REDELIVER1", NotificationKind::CallSummary);
    for _ in 0..2 {
        shared::queue::jobs::send(
            &shared::queue::jobs::SqsJobQueue::new(
                stack.sqs.clone(),
                stack.resources.queue("NotificationQueue"),
            ),
            &job,
            std::time::Duration::ZERO,
        )
        .await
        .unwrap();
    }
    stack.run_notifications(&notifier).await;
    assert_eq!(stack.slack.posts().len(), 1);
    assert_eq!(stack.stats().read().await.unwrap().successfully_posted, 1);
}

#[tokio::test]
async fn permanent_slack_errors_go_to_the_dlq_at_once() {
    let stack = Stack::start().await;
    transcribed_call(&stack, "PERM1").await;
    stack
        .slack
        .set_always(Some(ScriptedResponse::BotError("not_in_channel".into())));
    let notifier = stack.notify_worker(vec![stack.slack_bot()]);
    stack.run_notifications(&notifier).await;
    assert_eq!(
        stack.slack.attempts(),
        1,
        "a permanent error must not be retried"
    );
    assert!(stack.slack.posts().is_empty());
    let dead = stack.peek("NotificationDLQ").await;
    assert_eq!(dead.len(), 1);
    assert!(dead[0].contains("PERM1"));
    let record = stack.calls().get("PERM1").await.unwrap().unwrap();
    assert!(!record.slack_posted);
    assert_eq!(stack.stats().read().await.unwrap().failed, 1);
}

#[tokio::test]
async fn webhook_channel_errors_are_permanent_too() {
    let stack = Stack::start().await;
    transcribed_call(&stack, "PERM2").await;
    stack
        .slack
        .set_always(Some(ScriptedResponse::BotError("channel_not_found".into())));
    let notifier = stack.notify_worker(vec![stack.slack_webhook()]);
    stack.run_notifications(&notifier).await;
    assert_eq!(stack.slack.attempts(), 1);
    assert_eq!(stack.peek("NotificationDLQ").await.len(), 1);
}

#[tokio::test]
async fn long_transcripts_are_split_across_messages_never_cut() {
    let stack = Stack::start().await;
    let utterances: Vec<(String, String)> = (0..900)
        .map(|i| {
            let speaker = if i % 2 == 0 { "A" } else { "B" };
            (
                speaker.to_string(),
                format!("Sentence number {i} of a very long support call about an order."),
            )
        })
        .collect();
    stack.assemblyai.set_outcome(TranscriptOutcome::Completed {
        polls_before_done: 2,
        utterances: utterances.clone(),
        sentiment: vec![],
        audio_duration: 3600,
    });
    transcribed_call(&stack, "LONG1").await;
    let notifier = stack.notify_worker(vec![stack.slack_bot()]);
    stack.run_notifications(&notifier).await;
    let posts = stack.slack.posts();
    assert!(
        posts.len() > 1,
        "expected several messages, got {}",
        posts.len()
    );
    let mut all_text = String::new();
    for post in &posts {
        let blocks = post["blocks"].as_array().unwrap();
        assert!(blocks.len() <= 50);
        for block in blocks {
            let text = block["text"]["text"].as_str().unwrap();
            assert!(text.chars().count() <= 3000);
            all_text.push_str(text);
            all_text.push('\n');
        }
        assert!(post["text"].as_str().unwrap().chars().count() < 40_000);
    }
    for (i, (speaker, text)) in utterances.iter().enumerate() {
        assert!(
            all_text.contains(&format!("Speaker {speaker}: {text}")),
            "utterance {i} missing"
        );
    }
    // The full transcript is stored in parts and reads back whole.
    let stored = stack
        .calls()
        .load_transcript("LONG1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.utterances.len(), 900);
    assert_eq!(
        stack.calls().get("LONG1").await.unwrap().unwrap().status,
        CallStatus::Notified
    );
}

#[tokio::test]
async fn transcripts_larger_than_a_dynamodb_item_are_stored_in_parts() {
    let stack = Stack::start().await;
    let utterances: Vec<(String, String)> = (0..6000)
        .map(|i| ("A".to_string(), format!("{i:05} {}", "word ".repeat(20))))
        .collect();
    stack.assemblyai.set_outcome(TranscriptOutcome::Completed {
        polls_before_done: 0,
        utterances,
        sentiment: vec![],
        audio_duration: 7200,
    });
    transcribed_call(&stack, "HUGE1").await;
    let record = stack.calls().get("HUGE1").await.unwrap().unwrap();
    assert!(
        record.transcript_parts > 1,
        "parts: {}",
        record.transcript_parts
    );
    let stored = stack
        .calls()
        .load_transcript("HUGE1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.utterances.len(), 6000);
    assert!(stored.text.len() > 400 * 1024);
}

#[tokio::test]
async fn email_notifications_go_through_ses() {
    let stack = Stack::start().await;
    transcribed_call(&stack, "MAIL1").await;
    let ses = local().ses().await;
    let address = format!(
        "ops-{}@example.com",
        stack.resources.table("CallsTable").to_lowercase()
    );
    ses.create_email_identity()
        .email_identity(&address)
        .send()
        .await
        .unwrap();
    let email: std::sync::Arc<dyn shared::flows::notify::NotificationChannel> =
        std::sync::Arc::new(shared::providers::ses::SesEmailChannel {
            client: ses,
            from: address.clone(),
            to: address.clone(),
        });
    let notifier = stack.notify_worker(vec![email]);
    stack.run_notifications(&notifier).await;
    let sent: Vec<_> = local()
        .sent_emails()
        .await
        .unwrap()
        .into_iter()
        .filter(|(from, _, _)| *from == address)
        .collect();
    assert_eq!(sent.len(), 1);
    let (_, subject, body) = &sent[0];
    assert_eq!(subject, "Incoming call MAIL1: call summary");
    assert!(body.starts_with("📞 Support Number:\n09631084471"));
    assert!(body.contains("Speaker B: I would like to check my order status."));
    // Email alone does not count as a Slack post.
    assert!(
        !stack
            .calls()
            .get("MAIL1")
            .await
            .unwrap()
            .unwrap()
            .slack_posted
    );
}

#[tokio::test]
async fn slack_shows_control_sequences_from_a_transcript_and_email_keeps_them_verbatim() {
    let stack = Stack::start().await;
    stack.assemblyai.set_outcome(TranscriptOutcome::Completed {
        polls_before_done: 0,
        utterances: vec![(
            "A".into(),
            "<!channel> refund me at <https://evil.example|this link> & now".into(),
        )],
        sentiment: vec![],
        audio_duration: 10,
    });
    transcribed_call(&stack, "ESCAPE1").await;
    let ses = local().ses().await;
    let address = format!(
        "ops-{}@example.com",
        stack.resources.table("CallsTable").to_lowercase()
    );
    ses.create_email_identity()
        .email_identity(&address)
        .send()
        .await
        .unwrap();
    let email: std::sync::Arc<dyn shared::flows::notify::NotificationChannel> =
        std::sync::Arc::new(shared::providers::ses::SesEmailChannel {
            client: ses,
            from: address.clone(),
            to: address.clone(),
        });
    let notifier = stack.notify_worker(vec![stack.slack_webhook(), email]);
    stack.run_notifications(&notifier).await;

    let escaped = "&lt;!channel&gt; refund me at &lt;https://evil.example|this link&gt; &amp; now";
    let posts = stack.slack.posts();
    assert_eq!(posts.len(), 1);
    let text = posts[0]["text"].as_str().unwrap();
    let block = posts[0]["blocks"][0]["text"]["text"].as_str().unwrap();
    for slack in [text, block] {
        assert!(!slack.contains("<!channel>"), "{slack}");
        assert!(!slack.contains("<https://evil"), "{slack}");
        assert!(slack.contains(&format!("Speaker A: {escaped}")), "{slack}");
        // The seed's own markup is untouched.
        assert!(
            slack.contains("👤 CS Agent:\n@prateek.raj <09631084471>"),
            "{slack}"
        );
    }

    let sent: Vec<_> = local()
        .sent_emails()
        .await
        .unwrap()
        .into_iter()
        .filter(|(from, _, _)| *from == address)
        .collect();
    assert_eq!(sent.len(), 1);
    let (_, _, body) = &sent[0];
    assert!(
        body.contains("Speaker A: <!channel> refund me at <https://evil.example|this link> & now"),
        "{body}"
    );
}
