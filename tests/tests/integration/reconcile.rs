//! Calls whose end never arrived are asked of their provider (issue 20):
//! every status callback and post-call webhook is lost, the sweep runs on
//! a simulated clock, and each call reaches its provider's end with the
//! provider's duration and end reason, through the webhook's own path.

use shared::base::end_reason::EndReason;
use shared::flows::reconcile::ReconcileReport;
use shared::store::outbound_calls::OutboundCall;

use super::*;

impl Outbound {
    /// Places a Twilio call for `assistant`; its ref and Twilio's sid.
    async fn place_call(&self, assistant: u64) -> (String, String) {
        let response = self
            .initiate(100_000)
            .handle(self.initiate_request(&seed_call(assistant)))
            .await;
        assert_eq!(response.status(), 200, "{:?}", json_body(&response));
        let sid = json_body(&response)["call_sid"]
            .as_str()
            .unwrap()
            .to_string();
        let created = self.twilio.created_calls();
        (call_ref_of(created.last().unwrap()), sid)
    }

    async fn record(&self, id: &str) -> OutboundCall {
        self.stack.outbound_calls().get(id).await.unwrap().unwrap()
    }

    /// When the sweep first asks about the first and the last of `ids`,
    /// and the seconds each holds.
    async fn asks(&self, ids: &[String]) -> (i64, i64, u64) {
        let (mut first, mut last, mut held) = (i64::MAX, 0, 0);
        for id in ids {
            let reservation = self.record(id).await.reservation.unwrap();
            first = first.min(reservation.release_after);
            last = last.max(reservation.release_after);
            held = reservation.seconds;
        }
        (first, last, held)
    }
}

/// 50 Twilio calls, every status callback lost: 45 completed with their
/// own durations, 2 busy, 1 no-answer, 1 failed, 1 still talking. The
/// sweep asks Twilio; the answers settle through the status callback's
/// path; late callbacks change nothing; the call still talking is asked
/// again later and settled then.
#[tokio::test]
async fn fifty_calls_whose_status_callbacks_were_all_lost_settle_with_twilios_durations() {
    let t = Outbound::start().await;
    t.create_org("acme", 10_000_000, 0).await;
    t.set_max_concurrent_calls("acme", 100).await;
    let assistant = t.twilio_assistant("acme").await;
    let durations: Vec<u64> = (0..50).map(|i| 31 + i * 7).collect();
    t.twilio.simulate_call_durations(&durations);
    t.twilio.drop_status_callbacks(100);
    let mut placed = Vec::new();
    for _ in 0..50 {
        placed.push(t.place_call(assistant).await);
    }
    // Not every call connected: Twilio says so.
    let unconnected = [
        (45, "busy", EndReason::Busy),
        (46, "busy", EndReason::Busy),
        (47, "no-answer", EndReason::NoAnswer),
        (48, "failed", EndReason::Failed),
    ];
    for (index, status, _) in unconnected {
        t.twilio.advance_call(&placed[index].1, status, None);
    }
    let talking = placed[49].clone();
    t.twilio.advance_call(&talking.1, "in-progress", None);
    let refs: Vec<String> = placed.iter().map(|(r, _)| r.clone()).collect();
    let (first, due, held) = t.asks(&refs).await;
    assert_eq!(t.org("acme").await.reserved_seconds, 50 * held);

    let sweep = t.sweep();
    // Before the first ask is due nothing is asked.
    assert_eq!(
        sweep.run_at(first - 1).await.unwrap().calls,
        ReconcileReport::default()
    );
    let report = sweep.run_at(due).await.unwrap().calls;
    assert_eq!(report.reconciled.len(), 49, "{report:?}");
    assert_eq!(report.still_open, vec![talking.0.clone()]);
    assert!(report.unanswered.is_empty() && report.released.is_empty());
    assert_eq!(t.twilio.call_reads(), 50);
    t.stack.run_provider_events().await;

    let mut expected_usage = 0;
    for (index, (call_ref, _)) in placed.iter().enumerate().take(49) {
        let call = t.record(call_ref).await;
        assert!(call.usage_counted, "{call_ref} settled");
        assert!(call.reconciled, "{call_ref} marked reconciled");
        match unconnected.iter().find(|(i, _, _)| *i == index) {
            Some((_, status, reason)) => {
                assert_eq!(call.status, *status);
                assert_eq!(call.end_reason, Some(*reason));
                assert_eq!(call.duration_secs, Some(0));
            }
            None => {
                assert_eq!(call.status, "completed");
                assert_eq!(call.end_reason, Some(EndReason::Completed));
                assert_eq!(call.duration_secs, Some(durations[index]));
                assert!(call.duration_secs.unwrap() > 0, "no connected call at 0");
                expected_usage += durations[index];
            }
        }
    }
    let org = t.org("acme").await;
    assert_eq!(org.usage_this_month_seconds, expected_usage);
    assert_eq!(
        org.reserved_seconds, held,
        "only the call still talking holds"
    );
    // One summary per settled call, as the callbacks would have queued.
    assert_eq!(t.stack.depth("NotificationQueue").await, 49);

    // The lost callbacks arrive after all, with other durations: nothing moves.
    let status = t.status();
    for (call_ref, sid) in &placed[..45] {
        let response = status.handle(t.completed(call_ref, sid, 999)).await;
        assert_eq!(response.status(), 200);
    }
    t.stack.run_provider_events().await;
    assert_eq!(t.org("acme").await.usage_this_month_seconds, expected_usage);
    assert_eq!(
        t.record(&placed[0].0).await.duration_secs,
        Some(durations[0])
    );
    assert_eq!(t.stack.depth("NotificationQueue").await, 49);

    // The call still talking is asked again 15 minutes later, then ends.
    let talking_due = t
        .record(&talking.0)
        .await
        .reservation
        .unwrap()
        .release_after;
    assert_eq!(talking_due, due + 15 * 60);
    t.twilio.advance_call(&talking.1, "completed", Some(1_234));
    let later = sweep.run_at(talking_due).await.unwrap().calls;
    assert_eq!(later.reconciled, vec![talking.0.clone()]);
    t.stack.run_provider_events().await;
    let call = t.record(&talking.0).await;
    assert_eq!(call.duration_secs, Some(1_234));
    assert_eq!(call.end_reason, Some(EndReason::Completed));
    let org = t.org("acme").await;
    assert_eq!(org.usage_this_month_seconds, expected_usage + 1_234);
    assert_eq!(org.reserved_seconds, 0);
    // Every entry went with its settlement: nothing is left to ask.
    assert_eq!(
        sweep.run_at(talking_due + 86_400).await.unwrap().calls,
        ReconcileReport::default()
    );
}

/// 20 ElevenLabs conversations whose post-call webhooks never came: the
/// sweep reads each conversation and applies it as the webhook; 2 that
/// failed before talking are settled at zero; a late webhook is a
/// duplicate.
#[tokio::test]
async fn twenty_conversations_whose_post_call_webhooks_were_lost_settle_with_their_durations() {
    let t = Outbound::start().await;
    t.create_org("acme", 10_000_000, 0).await;
    t.set_max_concurrent_calls("acme", 100).await;
    let route = t.outbound_calls();
    let mut conversations = Vec::new();
    for i in 0..20u64 {
        let response = route
            .handle(outbound_request(
                &t.key,
                serde_json::json!({"destination_number": format!("1347358{:04}", 10 + i)}),
            ))
            .await;
        assert_eq!(response.status(), 200, "{:?}", json_body(&response));
        let id = json_body(&response)["conversation_id"]
            .as_str()
            .unwrap()
            .to_string();
        let script = if i >= 18 {
            ConversationScript::Fails {
                reason: "Line busy".into(),
            }
        } else {
            ConversationScript::Finishes {
                polls_before_done: 0,
                transcript: vec![
                    ("agent".into(), "Hello.".into()),
                    ("user".into(), "Bye.".into()),
                ],
                duration_secs: 20 + i,
            }
        };
        t.eleven.set_script_of(&id, script);
        conversations.push(id);
    }
    let sweep = t.sweep();
    let (_, due, _) = t.asks(&conversations).await;
    let report = sweep.run_at(due).await.unwrap().calls;
    assert_eq!(report.reconciled.len(), 20, "{report:?}");
    t.stack.run_provider_events().await;

    let mut expected_usage = 0;
    for (i, id) in conversations.iter().enumerate() {
        let call = t.record(id).await;
        assert!(call.usage_counted && call.reconciled, "{id}");
        if i >= 18 {
            assert_eq!(call.status, "failed");
            assert_eq!(call.end_reason, Some(EndReason::Busy));
            assert_eq!(call.duration_secs, Some(0));
        } else {
            assert_eq!(call.status, "done");
            assert_eq!(call.end_reason, Some(EndReason::CallerHangup));
            assert_eq!(call.duration_secs, Some(20 + i as u64));
            assert_eq!(call.transcript.len(), 2);
            expected_usage += 20 + i as u64;
        }
    }
    let org = t.org("acme").await;
    assert_eq!(org.usage_this_month_seconds, expected_usage);
    assert_eq!(org.reserved_seconds, 0);
    assert_eq!(t.stack.depth("NotificationQueue").await, 20);

    // The webhook comes after all, saying something else: a duplicate.
    let response = t
        .webhook()
        .handle(t.post_call(&conversations[0], 999))
        .await;
    assert_eq!(response.status(), 200);
    t.stack.run_provider_events().await;
    assert_eq!(t.record(&conversations[0]).await.duration_secs, Some(20));
    assert_eq!(t.org("acme").await.usage_this_month_seconds, expected_usage);
    assert_eq!(t.stack.depth("NotificationQueue").await, 20);
}

/// Twilio's API is down: nothing is settled, the reservations stay held,
/// each call is asked again with backoff, and after three unanswered asks
/// in a row it counts as unreconciled (`CallsUnreconciled`). A 429 pauses
/// the provider for its `Retry-After`. Once Twilio answers, the calls
/// settle with their real durations.
#[tokio::test]
async fn with_twilio_down_reservations_stay_held_and_calls_count_as_unreconciled() {
    let t = Outbound::start().await;
    t.create_org("acme", 10_000_000, 0).await;
    let assistant = t.twilio_assistant("acme").await;
    t.twilio.simulate_call_durations(&[40, 50]);
    t.twilio.drop_status_callbacks(100);
    let placed = [t.place_call(assistant).await, t.place_call(assistant).await];
    let mut refs: Vec<String> = placed.iter().map(|(r, _)| r.clone()).collect();
    refs.sort();
    let sweep = t.sweep();
    let (_, mut now, held) = t.asks(&refs).await;

    t.twilio.fail_call_reads(100, 503, None);
    for (attempt, wait) in [(1, 300), (2, 600), (3, 1200)] {
        let mut report = sweep.run_at(now).await.unwrap().calls;
        report.unanswered.sort();
        report.unreconciled.sort();
        assert_eq!(report.unanswered, refs, "ask {attempt}");
        let counted = if attempt >= 3 {
            refs.clone()
        } else {
            Vec::new()
        };
        assert_eq!(report.unreconciled, counted, "ask {attempt}");
        for call_ref in &refs {
            let call = t.record(call_ref).await;
            assert!(!call.usage_counted);
            assert_eq!(call.reconcile_attempts, attempt);
            assert_eq!(call.reservation.unwrap().release_after, now + wait);
        }
        assert_eq!(t.org("acme").await.reserved_seconds, 2 * held, "still held");
        // Not due again before the backoff.
        assert_eq!(
            sweep.run_at(now + wait - 1).await.unwrap().calls,
            ReconcileReport::default()
        );
        now += wait;
    }
    assert_eq!(t.stack.depth("ProviderEventsQueue").await, 0);

    // Rate limited: the first read gets a 429 with an hour's Retry-After;
    // the other call is left for a later run instead of asked.
    t.twilio.fail_call_reads(1, 429, Some(3600));
    let limited = sweep.run_at(now).await.unwrap().calls;
    assert_eq!(limited.unanswered.len(), 1, "{limited:?}");
    assert_eq!(limited.deferred, 1);
    let asked = t.record(&limited.unanswered[0]).await;
    assert_eq!(asked.reservation.unwrap().release_after, now + 3600);

    // Twilio answers again: both settle with their durations, attempts reset.
    let reads = t.twilio.call_reads();
    let back = sweep.run_at(now + 3600).await.unwrap().calls;
    assert_eq!(back.reconciled.len(), 2, "{back:?}");
    assert_eq!(t.twilio.call_reads(), reads + 2);
    t.stack.run_provider_events().await;
    for ((call_ref, _), seconds) in placed.iter().zip([40, 50]) {
        let call = t.record(call_ref).await;
        assert_eq!(call.duration_secs, Some(seconds));
        assert!(call.reconciled);
    }
    let org = t.org("acme").await;
    assert_eq!(
        (org.usage_this_month_seconds, org.reserved_seconds),
        (90, 0)
    );
}

/// A call its Twilio account knows nothing of (a wrong sid, another
/// account) is never settled on a guess: held, and asked again.
#[tokio::test]
async fn a_call_unknown_to_twilio_stays_held_and_is_asked_again() {
    let t = Outbound::start().await;
    t.create_org("acme", 10_000_000, 0).await;
    let assistant = t.twilio_assistant("acme").await;
    let (call_ref, _) = t.place_call(assistant).await;
    // The record names a sid this account never placed.
    t.stack
        .dynamo
        .update_item()
        .table_name(t.stack.resources.table("CallsTable"))
        .key(
            "call_id",
            aws_sdk_dynamodb::types::AttributeValue::S(call_ref.clone()),
        )
        .key(
            "item",
            aws_sdk_dynamodb::types::AttributeValue::S("outbound".into()),
        )
        .update_expression("SET call_sid = :sid")
        .expression_attribute_values(
            ":sid",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("CA{}", "0".repeat(32))),
        )
        .send()
        .await
        .unwrap();
    let (_, due, held) = t.asks(std::slice::from_ref(&call_ref)).await;
    let report = t.sweep().run_at(due).await.unwrap().calls;
    assert_eq!(report.unanswered, vec![call_ref.clone()]);
    let call = t.record(&call_ref).await;
    assert!(!call.usage_counted);
    assert_eq!(call.status, "queued");
    assert_eq!(call.reservation.unwrap().release_after, due + 300);
    assert_eq!(t.org("acme").await.reserved_seconds, held);
}
