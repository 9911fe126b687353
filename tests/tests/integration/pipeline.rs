//! The recording pipeline end to end, and exactly-once under duplicates.

use shared::api::Route;
use std::sync::Arc;

use futures_util::future::join_all;
use shared::store::calls::{CallStatus, CallStore};

use crate::support::*;

const EXPECTED_SLACK_TEXT: &str = "📞 Support Number:\n09631084471\n\n📱 Candidate/Customer Number:\n+919876543210\n\n❗ Concern:\nCall inquiry: Thank you for calling, how can I help? I would ... (Tone: Neutral)\n\n👤 CS Agent:\n@prateek.raj <09631084471>\n\n🏢 Department:\nCustomer Success\n\n⏰ Timestamp:\n2025-10-09 17:58:27 UTC\n\n📋 Call Metadata:\n• Call ID: `CALLFLOW1`\n• Duration: 125s\n• Status: Completed\n• Agent: Prateek Raj\n• Customer Segment: General\n\n📝 Full Transcription:\n```\nSpeaker A: Thank you for calling, how can I help?\nSpeaker B: I would like to check my order status.\n```\n\n🎧 Recording/Voice Note:\nRecording processed and transcribed above (as per no-audio requirement)";

#[tokio::test]
async fn zapier_call_is_transcribed_stored_and_posted_in_the_seed_format() {
    let stack = Stack::start().await;
    let body = seed_payload(&stack, "CALLFLOW1").to_string();

    let response = stack
        .zapier()
        .handle(zapier_request(
            body.as_bytes(),
            Some(&bearer(WEBHOOK_TOKEN)),
        ))
        .await;
    assert_eq!(response.status(), 202);
    let ack = json_body(&response);
    assert_eq!(ack["success"], true);
    assert_eq!(ack["message"], "Call queued for processing");
    assert_eq!(ack["call_id"], "CALLFLOW1");
    assert!(ack.get("duplicate").is_none());
    assert_eq!(
        stack
            .calls()
            .get("CALLFLOW1")
            .await
            .unwrap()
            .unwrap()
            .status,
        CallStatus::Queued
    );

    stack.run_transcriptions().await;
    // The recording was fetched with Exotel's Basic auth and streamed whole to AssemblyAI.
    let download = &stack.exotel.requests()[0];
    assert!(download
        .header("authorization")
        .unwrap()
        .starts_with("Basic "));
    assert_eq!(stack.assemblyai.upload_sizes(), vec![64 * 1024]);
    let submitted = &stack.assemblyai.transcript_requests()[0];
    assert_eq!(submitted["speaker_labels"], true);
    assert_eq!(submitted["sentiment_analysis"], true);
    assert_eq!(
        stack
            .calls()
            .get("CALLFLOW1")
            .await
            .unwrap()
            .unwrap()
            .status,
        CallStatus::Transcribed
    );

    let notifier = stack.notify_worker(vec![stack.slack_webhook()]);
    stack.run_notifications(&notifier).await;
    let posts = stack.slack.posts();
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0]["text"], EXPECTED_SLACK_TEXT);
    assert_eq!(posts[0]["blocks"][0]["text"]["text"], EXPECTED_SLACK_TEXT);

    let record = stack.calls().get("CALLFLOW1").await.unwrap().unwrap();
    assert_eq!(record.status, CallStatus::Notified);
    assert!(record.slack_posted);
    let history: Vec<CallStatus> = record.status_history.iter().map(|h| h.status).collect();
    assert_eq!(
        history,
        vec![
            CallStatus::Received,
            CallStatus::Queued,
            CallStatus::Transcribing,
            CallStatus::Transcribed,
            CallStatus::Notified
        ]
    );
    let stats = shared::store::stats::StatsStore::read(&stack.stats())
        .await
        .unwrap();
    assert_eq!(
        (
            stats.total_processed,
            stats.successfully_posted,
            stats.failed
        ),
        (1, 1, 0)
    );
}

#[tokio::test]
async fn fifty_concurrent_identical_deliveries_make_one_job_and_one_post() {
    let stack = Stack::start().await;
    let zapier = Arc::new(stack.zapier());
    let body = seed_payload(&stack, "CALLCONCURRENT").to_string();
    let deliveries = (0..60).map(|_| {
        let zapier = Arc::clone(&zapier);
        let body = body.clone();
        tokio::spawn(async move {
            zapier
                .handle(zapier_request(
                    body.as_bytes(),
                    Some(&bearer(WEBHOOK_TOKEN)),
                ))
                .await
                .status()
                .as_u16()
        })
    });
    let statuses: Vec<u16> = join_all(deliveries)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 202).count(),
        1,
        "{statuses:?}"
    );
    // The rest wait for the first and are told "duplicate" (200): never a second job.
    assert!(
        statuses.iter().all(|s| matches!(s, 200 | 202)),
        "{statuses:?}"
    );
    assert_eq!(stack.peek("TranscriptionQueue").await.len(), 1);

    // A later retry gets the first answer back, marked duplicate.
    let again = zapier
        .handle(zapier_request(
            body.as_bytes(),
            Some(&bearer(WEBHOOK_TOKEN)),
        ))
        .await;
    assert_eq!(again.status(), 200);
    let replay = json_body(&again);
    assert_eq!(replay["duplicate"], true);
    assert_eq!(replay["message"], "Call queued for processing");

    stack.run_transcriptions().await;
    let notifier = stack.notify_worker(vec![stack.slack_webhook()]);
    stack.run_notifications(&notifier).await;
    assert_eq!(stack.assemblyai.transcript_requests().len(), 1);
    assert_eq!(stack.slack.posts().len(), 1);
    let stats = shared::store::stats::StatsStore::read(&stack.stats())
        .await
        .unwrap();
    assert_eq!((stats.total_processed, stats.duplicates), (1, 60));
}

#[tokio::test]
async fn twenty_calls_delivered_ten_times_each_all_get_2xx_and_one_post_each() {
    let stack = Stack::start().await;
    let zapier = Arc::new(stack.zapier());
    let ids: Vec<String> = (0..20).map(|n| format!("CALLBURST{n:02}")).collect();
    let mut deliveries: Vec<String> = ids
        .iter()
        .flat_map(|id| std::iter::repeat_n(seed_payload(&stack, id).to_string(), 10))
        .collect();
    // A fixed shuffle (Fisher-Yates with an LCG): duplicates interleave, reproducibly.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in (1..deliveries.len()).rev() {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        deliveries.swap(i, (seed >> 33) as usize % (i + 1));
    }
    let limit = Arc::new(tokio::sync::Semaphore::new(32));
    let tasks = deliveries.into_iter().map(|body| {
        let (zapier, limit) = (Arc::clone(&zapier), Arc::clone(&limit));
        tokio::spawn(async move {
            let _slot = limit.acquire_owned().await.unwrap();
            let response = zapier
                .handle(zapier_request(
                    body.as_bytes(),
                    Some(&bearer(WEBHOOK_TOKEN)),
                ))
                .await;
            (response.status().as_u16(), json_body(&response))
        })
    });
    let answers: Vec<(u16, serde_json::Value)> = join_all(tasks)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let not_2xx: Vec<_> = answers
        .iter()
        .filter(|(status, _)| !(200..300).contains(status))
        .collect();
    assert!(not_2xx.is_empty(), "{} not 2xx: {not_2xx:?}", not_2xx.len());
    assert_eq!(answers.iter().filter(|(s, _)| *s == 202).count(), 20);
    for (status, body) in &answers {
        if *status == 200 {
            assert_eq!(body["duplicate"], true);
            assert_eq!(body["message"], "Call queued for processing");
        }
    }

    stack.run_transcriptions().await;
    let notifier = stack.notify_worker(vec![stack.slack_webhook()]);
    stack.run_notifications(&notifier).await;
    assert_eq!(stack.assemblyai.transcript_requests().len(), 20);
    let posts = stack.slack.posts();
    assert_eq!(posts.len(), 20);
    for id in &ids {
        let marker = format!("• Call ID: `{id}`");
        let count = posts
            .iter()
            .filter(|p| p["text"].as_str().unwrap().contains(&marker))
            .count();
        assert_eq!(count, 1, "{id} posted {count} times");
    }
    let stats = shared::store::stats::StatsStore::read(&stack.stats())
        .await
        .unwrap();
    assert_eq!((stats.total_processed, stats.duplicates), (20, 180));
}

#[tokio::test]
async fn exotel_callback_runs_the_same_pipeline_and_dedups_with_zapier() {
    let stack = Stack::start().await;
    let form = format!(
        "CallSid=EXO1&Status=completed&RecordingUrl={}&From=09876543210&To=09631084471\
         &DateUpdated=2025-10-09+23%3A30%3A12&StartTime=2025-10-09+23%3A28%3A27&ConversationDuration=105",
        urlencode(&stack.recording_url("EXO1"))
    );
    let query = format!("token={WEBHOOK_TOKEN}");
    let response = stack
        .exotel_webhook()
        .handle(exotel_request(
            &form,
            &query,
            "application/x-www-form-urlencoded",
        ))
        .await;
    assert_eq!(response.status(), 202, "{:?}", json_body(&response));
    let record = stack.calls().get("EXO1").await.unwrap().unwrap();
    assert_eq!(record.timestamp, "2025-10-09T17:58:27Z");
    assert_eq!(record.duration, Some(105));

    // Zapier relaying the same call later is a duplicate.
    let mut payload = seed_payload(&stack, "EXO1");
    payload["recording_url"] = stack.recording_url("EXO1").into();
    let dup = stack
        .zapier()
        .handle(zapier_request(
            payload.to_string().as_bytes(),
            Some(&bearer(WEBHOOK_TOKEN)),
        ))
        .await;
    assert_eq!(dup.status(), 200);
    assert_eq!(json_body(&dup)["duplicate"], true);

    stack.run_transcriptions().await;
    let notifier = stack.notify_worker(vec![stack.slack_webhook()]);
    stack.run_notifications(&notifier).await;
    let posts = stack.slack.posts();
    assert_eq!(posts.len(), 1);
    let text = posts[0]["text"].as_str().unwrap();
    assert!(text.starts_with(
        "📞 Support Number:\n09631084471\n\n📱 Candidate/Customer Number:\n09876543210"
    ));
    assert!(text.contains("• Call ID: `EXO1`"));
    assert!(text.contains("⏰ Timestamp:\n2025-10-09 17:58:27 UTC"));
}

#[tokio::test]
async fn calls_that_did_not_complete_are_stored_but_not_transcribed() {
    let stack = Stack::start().await;
    let query = format!("token={WEBHOOK_TOKEN}");
    let response = stack
        .exotel_webhook()
        .handle(exotel_request(
            "CallSid=BUSY1&Status=busy&From=09876543210&To=09631084471",
            &query,
            "application/x-www-form-urlencoded",
        ))
        .await;
    assert_eq!(response.status(), 202);
    assert_eq!(
        json_body(&response)["message"],
        "Call recorded; not transcribed"
    );
    let record = stack.calls().get("BUSY1").await.unwrap().unwrap();
    assert_eq!(record.status, CallStatus::Skipped);
    assert_eq!(record.call_status.as_deref(), Some("busy"));
    assert_eq!(stack.depth("TranscriptionQueue").await, 0);
}

#[tokio::test]
async fn outgoing_calls_put_the_support_number_first() {
    let stack = Stack::start().await;
    let mut payload = seed_payload(&stack, "OUT1");
    payload["from_number"] = "+919631084471".into();
    payload["to_number"] = "+919876543210".into();
    let response = stack
        .zapier()
        .handle(zapier_request(
            payload.to_string().as_bytes(),
            Some(&bearer(WEBHOOK_TOKEN)),
        ))
        .await;
    assert_eq!(response.status(), 202);
    stack.run_transcriptions().await;
    stack
        .run_notifications(&stack.notify_worker(vec![stack.slack_webhook()]))
        .await;
    let text = stack.slack.posts()[0]["text"].as_str().unwrap().to_string();
    assert!(text.starts_with(
        "📞 Support Number:\n+919631084471\n\n📱 Candidate/Customer Number:\n+919876543210"
    ));
    assert!(text.contains("👤 CS Agent:\n@prateek.raj <+919631084471>"));
}

pub fn urlencode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
