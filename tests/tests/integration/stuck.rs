//! The sweep for work that got stuck: a recording-pipeline call whose job
//! (or whose stream event) was lost is re-driven once, then failed with a notice; a finished call's
//! watch entry is dropped.

use shared::api::Route;
use std::sync::Arc;
use std::time::Duration;

use shared::flows::stuck::StuckCalls;
use shared::store::calls::{CallStatus, CallStore, DEFAULT_WATCH_AFTER};
use stuck_sweep::StuckSweep;

use crate::support::*;

impl Stack {
    fn stuck_sweep(&self) -> StuckSweep {
        StuckSweep {
            // No provider: these tests have no outbound calls.
            reconcile: shared::flows::reconcile::Reconciler {
                calls: Arc::new(self.outbound_calls()),
                events: self.provider_event_intake(),
                notifications: self.queue("NotificationQueue"),
                twilio: None,
                elevenlabs: None,
                org_accounts: None,
                reads_per_provider: 100,
            },
            pipeline: StuckCalls {
                calls: Arc::new(self.calls()),
                transcription_queue: self.queue("TranscriptionQueue"),
                notification_queue: self.queue("NotificationQueue"),
                redrive_grace: Duration::from_secs(1800),
                transcription_deadline: Duration::from_secs(3600),
            },
            starts: self.stuck_starts(),
            sessions: shared::flows::stuck::StuckSessions {
                sessions: Arc::new(self.sessions()),
                livekit: None,
            },
            replies: None,
            statuses: None,
            webhooks: None,
            batch: 100,
        }
    }

    async fn deliver(&self, call_id: &str) {
        let body = seed_payload(self, call_id).to_string();
        let response = self
            .zapier()
            .handle(zapier_request(
                body.as_bytes(),
                Some(&bearer(WEBHOOK_TOKEN)),
            ))
            .await;
        assert_eq!(response.status(), 202, "{:?}", json_body(&response));
    }
}

/// Seconds since the epoch once a call received now has become due.
fn when_due() -> i64 {
    shared::base::time::epoch_secs() + DEFAULT_WATCH_AFTER.as_secs() as i64 + 1
}

#[tokio::test]
async fn a_call_whose_job_was_lost_is_redriven_once_then_failed_with_a_notice() {
    let stack = Stack::start().await;
    stack.deliver("LOST1").await;
    // Its stream event is lost (the stream keeps records for 24 hours; a
    // consumer down longer, or a batch sent to CallsStreamDLQ, loses them):
    // only the record's place in CallWatch is left.
    stack.lose_calls_stream_events().await;
    assert_eq!(stack.depth("TranscriptionQueue").await, 0);
    let sweep = stack.stuck_sweep();

    // Not yet due: nothing happens.
    let early = sweep.run().await.unwrap();
    assert!(early.pipeline.redriven.is_empty() && early.pipeline.failed.is_empty());

    let due = when_due();
    let first = sweep.run_at(due).await.unwrap();
    assert_eq!(first.pipeline.redriven, vec!["LOST1".to_string()]);
    assert_eq!(
        stack.depth("TranscriptionQueue").await,
        1,
        "its job was sent again"
    );
    // The same run again changes nothing: the entry moved on by the grace.
    let again = sweep.run_at(due).await.unwrap();
    assert!(again.pipeline.redriven.is_empty() && again.pipeline.failed.is_empty());

    // Lost again: after the grace the call is ended, with a notice.
    stack.discard_queued("TranscriptionQueue").await;
    let second = sweep.run_at(due + 1801).await.unwrap();
    assert_eq!(second.pipeline.failed, vec!["LOST1".to_string()]);
    let record = stack.calls().get("LOST1").await.unwrap().unwrap();
    assert_eq!(record.status, CallStatus::Failed);
    assert!(
        record
            .failure_reason
            .as_deref()
            .unwrap()
            .contains("stuck in queued past its deadline"),
        "{:?}",
        record.failure_reason
    );
    assert_eq!(stack.depth("NotificationQueue").await, 1);
    let notifier = stack.notify_worker(vec![stack.slack_webhook()]);
    stack.run_notifications(&notifier).await;
    assert_eq!(stack.slack.posts().len(), 1, "one failure notice");
    // Nothing is left to sweep.
    let last = sweep.run_at(due + 100_000).await.unwrap();
    assert_eq!(last, stuck_sweep::SweepReport::default());
}

#[tokio::test]
async fn a_redriven_call_finishes_normally_and_a_finished_call_is_dropped() {
    let stack = Stack::start().await;
    stack.deliver("REDRIVE1").await;
    stack.discard_queued("TranscriptionQueue").await;
    stack.deliver("FINE1").await;
    stack.deliver("OLDFINE1").await;
    stack.run_transcriptions().await;
    let notifier = stack.notify_worker(vec![stack.slack_webhook()]);
    stack.run_notifications(&notifier).await;
    assert_eq!(
        stack.calls().get("FINE1").await.unwrap().unwrap().status,
        CallStatus::Notified
    );
    // OLDFINE1 finished under a version whose final write left the call in
    // the index: the sweep drops it. FINE1 left in its final write.
    stack
        .harness_dynamo
        .update_item()
        .table_name(stack.resources.table("CallsTable"))
        .key(
            "call_id",
            aws_sdk_dynamodb::types::AttributeValue::S("OLDFINE1".into()),
        )
        .key(
            "item",
            aws_sdk_dynamodb::types::AttributeValue::S("call".into()),
        )
        .update_expression("SET watch_ledger = :calls, watch_due = :due")
        .expression_attribute_values(
            ":calls",
            aws_sdk_dynamodb::types::AttributeValue::S("calls".into()),
        )
        .expression_attribute_values(
            ":due",
            aws_sdk_dynamodb::types::AttributeValue::N("0".into()),
        )
        .send()
        .await
        .unwrap();

    let sweep = stack.stuck_sweep();
    let report = sweep.run_at(when_due()).await.unwrap();
    assert_eq!(report.pipeline.redriven, vec!["REDRIVE1".to_string()]);
    assert_eq!(report.pipeline.finished, 1, "only OLDFINE1's entry dropped");
    stack.run_transcriptions().await;
    stack.run_notifications(&notifier).await;
    let record = stack.calls().get("REDRIVE1").await.unwrap().unwrap();
    assert_eq!(record.status, CallStatus::Notified);
    assert_eq!(stack.slack.posts().len(), 3, "one summary per call");
    // REDRIVE1 left the index when it was notified: nothing is left to sweep.
    let later = sweep.run_at(when_due() + 1801).await.unwrap();
    assert_eq!(later, stuck_sweep::SweepReport::default());
}

#[tokio::test]
async fn a_session_whose_room_never_finished_is_ended_and_a_finished_one_dropped() {
    use shared::flows::stuck::SESSION_NEVER_FINISHED;
    use shared::store::sessions::{SessionStore, DEFAULT_SESSION_MAX};
    let stack = Stack::start().await;
    let sessions = stack.sessions();
    sessions
        .room_started("room-open", Some("RM_open"), "2026-11-21T10:00:00Z")
        .await
        .unwrap();
    sessions
        .participant_joined("room-open", Some("a@example.com"), Some("caller"))
        .await
        .unwrap();
    sessions
        .room_started("room-done", Some("RM_done"), "2026-11-21T10:00:00Z")
        .await
        .unwrap();
    sessions
        .room_finished("room-done", "2026-11-21T10:05:00Z", Some(300), None)
        .await
        .unwrap();
    let sweep = stack.stuck_sweep();
    assert!(
        sweep.run().await.unwrap().sessions.ended.is_empty(),
        "not due yet"
    );

    let due = shared::base::time::epoch_secs() + DEFAULT_SESSION_MAX.as_secs() as i64 + 1;
    let report = sweep.run_at(due).await.unwrap();
    assert_eq!(report.sessions.ended, vec!["room-open".to_string()]);
    // room-done's entry is dropped, and so is room-open's second entry when
    // its two events fell in different seconds (one entry per second).
    assert!(
        (1..=2).contains(&report.sessions.finished),
        "{:?}",
        report.sessions
    );
    let open = sessions.get("room-open").await.unwrap().unwrap();
    assert!(open.ended_at.is_some());
    assert_eq!(open.end_reason.as_deref(), Some(SESSION_NEVER_FINISHED));
    let done = sessions.get("room-done").await.unwrap().unwrap();
    assert_eq!(done.ended_at.as_deref(), Some("2026-11-21T10:05:00Z"));
    assert_eq!(done.end_reason, None);
    assert_eq!(
        sweep.run_at(due + 10).await.unwrap().sessions,
        shared::flows::stuck::StuckSessionsReport::default()
    );
}
